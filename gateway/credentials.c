/* credentials.c — classifying presented credentials and authorising routes
 * (credentials.h). */
#include "credentials.h"

#include <stdio.h>
#include <string.h>

#include "err.h"

static int ieq_prefix(const char *s, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    if (n < p)
        return 0;
    for (size_t i = 0; i < p; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != prefix[i])
            return 0;
    }
    return 1;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] > '~')
            return 0;
    return 1;
}

void gw_credential_parse(const char *authorization, size_t alen, const char *x_api_key, size_t klen,
                         struct gw_credential *out)
{
    memset(out, 0, sizeof *out);
    const char *tok = NULL;
    size_t len = 0;

    if (authorization) {
        trim(&authorization, &alen);
        if (!ieq_prefix(authorization, alen, "bearer ")) {
            out->kind = GW_CRED_MALFORMED;
            out->why = "the Authorization header must be 'Bearer <token>'";
            return;
        }
        tok = authorization + 7;
        len = alen - 7;
        trim(&tok, &len);
    }
    if (x_api_key) {
        trim(&x_api_key, &klen);
        if (tok && (klen != len || memcmp(tok, x_api_key, len) != 0)) {
            out->kind = GW_CRED_MALFORMED;
            out->why = "Authorization and X-API-Key carry different credentials: send one";
            return;
        }
        tok = x_api_key;
        len = klen;
        if (!cn_apikey_looks_like(tok, len)) {
            out->kind = GW_CRED_BADKEY;
            out->why = "X-API-Key must hold a cairn_ API key";
            return;
        }
    }
    if (tok == NULL)
        return;
    if (len == 0 || !printable(tok, len)) {
        out->kind = GW_CRED_MALFORMED;
        out->why = "the credential is empty or has characters no token or key has";
        return;
    }
    out->token = tok;
    out->len = len;
    if (cn_apikey_looks_like(tok, len)) {
        if (cn_apikey_parse(tok, len, &out->key) != CN_OK) {
            out->kind = GW_CRED_BADKEY;
            out->why = "invalid API key (wrong length, characters or checksum)";
            return;
        }
        out->kind = GW_CRED_APIKEY;
        return;
    }
    out->kind = GW_CRED_JWT;
}

int gw_scope_has(const char *list, const char *scope)
{
    size_t n = strlen(scope);
    for (const char *s = list; *s;) {
        while (*s == ' ')
            s++;
        const char *e = s;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - s) == n && n && memcmp(s, scope, n) == 0)
            return 1;
        s = e;
    }
    return 0;
}

int gw_authorize(const struct gw_route *r, const struct gw_principal *p, char *why, size_t whylen)
{
    if (r->auth == GW_AUTH_SESSION && p->key_id[0]) {
        snprintf(why, whylen, "this route needs a signed-in session: API keys cannot use it");
        return 403;
    }
    if (r->auth == GW_AUTH_ADMIN && strcmp(p->role, "admin") != 0) {
        snprintf(why, whylen, "this route needs the admin role");
        return 403;
    }
    if (r->scope && r->scope[0] && !gw_scope_has(p->scope, r->scope)) {
        snprintf(why, whylen, "this route needs the scope %s", r->scope);
        return 403;
    }
    return 0;
}
