/* auth_scopes.c — the scopes a caller may hold and the roles that grant them.
 *
 * A set of scopes is a bit mask (uint32_t, one bit per scope), so "within the role" is
 * a subset test and "what the key may do now" an intersection. Scopes travel as text in
 * three forms, all made here: the space-separated "scope" claim of access tokens
 * (auth_scopes_join), lists of names in messages (auth_scopes_names), and the text[] of
 * auth.api_keys (auth_scopes_pg_array; read back with array_to_string and
 * auth_scopes_parse). Names always come out in the order of the table below.
 *
 * Role "user" holds every scope but admin; role "admin" holds them all. To add a scope:
 * add a row to the table (and a bit in auth.h), decide which roles get it in
 * auth_role_scopes, and name it in README.md; gateway/routes.c says which routes need it.
 */
#include "auth.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "util.h"

static const struct {
    const char *name;
    uint32_t bit;
} scopes[] = {
    {"models:read", AUTH_SCOPE_MODELS_READ},
    {"models:write", AUTH_SCOPE_MODELS_WRITE},
    {"predict", AUTH_SCOPE_PREDICT},
    {"jobs:read", AUTH_SCOPE_JOBS_READ},
    {"jobs:write", AUTH_SCOPE_JOBS_WRITE},
    {"features:read", AUTH_SCOPE_FEATURES_READ},
    {"features:write", AUTH_SCOPE_FEATURES_WRITE},
    {"costs:read", AUTH_SCOPE_COSTS_READ},
    {"admin", AUTH_SCOPE_ADMIN},
};

uint32_t auth_scope_bit(const char *name)
{
    for (size_t i = 0; i < CN_ARRAY_LEN(scopes); i++)
        if (strcmp(scopes[i].name, name) == 0)
            return scopes[i].bit;
    return 0;
}

bool auth_role_valid(const char *role)
{
    return strcmp(role, "user") == 0 || strcmp(role, "admin") == 0;
}

uint32_t auth_role_scopes(const char *role)
{
    if (strcmp(role, "admin") == 0)
        return AUTH_SCOPES_ALL;
    if (strcmp(role, "user") == 0)
        return AUTH_SCOPES_ALL & ~(uint32_t)AUTH_SCOPE_ADMIN;
    return 0; /* a role we do not know grants nothing */
}

size_t auth_scopes_names(uint32_t mask, const char **out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < CN_ARRAY_LEN(scopes) && n < cap; i++)
        if (mask & scopes[i].bit)
            out[n++] = scopes[i].name;
    return n;
}

/* Writes open, the names in mask separated by sep, and close into out. Every name fits:
 * cap >= AUTH_SCOPES_TEXT_MAX, which is more than all names, separators and frame. */
static void render(uint32_t mask, const char *sep, const char *open, const char *close, char *out,
                   size_t cap)
{
    const char *names[CN_ARRAY_LEN(scopes)];
    size_t n = auth_scopes_names(mask, names, CN_ARRAY_LEN(names));
    size_t len;

    assert(cap >= AUTH_SCOPES_TEXT_MAX);
    len = (size_t)snprintf(out, cap, "%s", open);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i > 0 ? sep : "", names[i]);
    snprintf(out + len, cap - len, "%s", close);
}

void auth_scopes_join(uint32_t mask, char *out, size_t cap) { render(mask, " ", "", "", out, cap); }

void auth_scopes_pg_array(uint32_t mask, char *out, size_t cap)
{
    render(mask, ",", "{", "}", out, cap);
}

uint32_t auth_scopes_parse(const char *s, uint32_t *unknown)
{
    uint32_t mask = 0, bad = 0;
    char word[32];

    while (*s != '\0') {
        size_t n;

        while (*s == ' ')
            s++;
        n = strcspn(s, " ");
        if (n == 0)
            break;
        if (n < sizeof word) {
            uint32_t bit;
            memcpy(word, s, n);
            word[n] = '\0';
            bit = auth_scope_bit(word);
            mask |= bit;
            bad += bit == 0;
        } else {
            bad++;
        }
        s += n;
    }
    if (unknown != NULL)
        *unknown = bad;
    return mask;
}
