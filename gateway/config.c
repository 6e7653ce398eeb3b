/* config.c — the policy file (config.h): YAML read with libyaml's document API, so every
 * node keeps the line it came from and every error says "FILE:LINE: key.path: what is
 * wrong"; and the process-wide current config, swapped under a mutex and reference
 * counted so a request keeps the config it started with.
 *
 * Parsing is one function per section over a small table of known keys (map_fields), so
 * an unknown key anywhere is an error. To add a setting: a field in struct gw_config
 * (config.h, with its default in the file comment), its default in config_defaults(),
 * its key in the section's key list and one line reading it in the section's parser.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stddef.h>
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "err.h"
#include "log.h"
#include "routes.h"
#include "util.h"

#define MAX_GROUPS 64
#define MAX_FILE_BYTES (4 << 20)

struct ctx {
    const char *name;           /* file name in messages */
    yaml_document_t *doc;
    char *err;
    size_t errlen;
    struct gw_config *c;
};

static int bad(struct ctx *x, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records "FILE:LINE: PATH: message" and returns -1. */
static int bad(struct ctx *x, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errlen, "%s:%zu: %s: %s", x->name, n ? (size_t)n->start_mark.line + 1 : (size_t)1,
             path && *path ? path : "(top level)", msg);
    return -1;
}

static yaml_node_t *node_at(struct ctx *x, int i) { return yaml_document_get_node(x->doc, i); }

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

/* A YAML null: `key:` with nothing, `~` or `null`, unquoted. */
static int is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar(n);
    return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

static void join(char *out, size_t outlen, const char *path, const char *key)
{
    snprintf(out, outlen, "%s%s%s", path, *path ? "." : "", key);
}

/* Checks that map is a mapping whose keys are all in keys[] (each at most once) and
 * fills vals[i] with the value of keys[i] or NULL. A null node counts as an empty
 * mapping (a section left empty). */
static int map_fields(struct ctx *x, yaml_node_t *map, const char *path, const char *const *keys, size_t nkeys,
                      yaml_node_t **vals)
{
    for (size_t i = 0; i < nkeys; i++)
        vals[i] = NULL;
    if (is_null(map))
        return 0;
    if (map->type != YAML_MAPPING_NODE)
        return bad(x, map, path, "expected a mapping of keys to values");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(x, p->key), *v = node_at(x, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return bad(x, k, path, "keys must be plain strings");
        size_t i = 0;
        while (i < nkeys && strcmp(keys[i], scalar(k)) != 0)
            i++;
        char sub[256];
        join(sub, sizeof sub, path, scalar(k));
        if (i == nkeys) {
            char list[512] = "";
            size_t off = 0;
            for (size_t j = 0; j < nkeys && off < sizeof list; j++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", j ? ", " : "", keys[j]);
            return bad(x, k, sub, "unknown key (expected one of: %s)", list);
        }
        if (vals[i])
            return bad(x, k, sub, "given twice");
        vals[i] = v;
    }
    return 0;
}

static int get_int(struct ctx *x, yaml_node_t *n, const char *path, int64_t min, int64_t max, int64_t *out)
{
    long long v;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
        cn_parse_int(scalar(n), LLONG_MIN, LLONG_MAX, &v) != CN_OK)
        return bad(x, n, path, "expected an integer");
    if (v < min || v > max)
        return bad(x, n, path, "%lld is out of range [%lld, %lld]", v, (long long)min, (long long)max);
    *out = v;
    return 0;
}

static int get_percent(struct ctx *x, yaml_node_t *n, const char *path, double *out)
{
    char *end;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || !*scalar(n))
        return bad(x, n, path, "expected a number");
    errno = 0;
    double v = strtod(scalar(n), &end);
    if (*end || errno || !isfinite(v))
        return bad(x, n, path, "expected a number");
    if (v < 0 || v > 100)
        return bad(x, n, path, "%g is out of range [0, 100]", v);
    *out = v;
    return 0;
}

static int get_bool(struct ctx *x, yaml_node_t *n, const char *path, bool *out)
{
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (strcmp(scalar(n), "true") == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(scalar(n), "false") == 0) {
            *out = false;
            return 0;
        }
    }
    return bad(x, n, path, "expected true or false");
}

static int get_str(struct ctx *x, yaml_node_t *n, const char *path, const char **out)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return bad(x, n, path, "expected a string");
    *out = scalar(n);
    return 0;
}

/* One of names[] (value i); fails listing them. */
static int get_enum(struct ctx *x, yaml_node_t *n, const char *path, const char *const *names, size_t count, int *out)
{
    const char *s;
    if (get_str(x, n, path, &s) != 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    char list[256] = "";
    size_t off = 0;
    for (size_t j = 0; j < count && off < sizeof list; j++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", j ? ", " : "", names[j]);
    return bad(x, n, path, "\"%s\" is not one of: %s", s, list);
}

/* A sequence (or a null, an empty one). */
static int get_seq(struct ctx *x, yaml_node_t *n, const char *path, yaml_node_item_t **items, size_t *count)
{
    if (is_null(n)) {
        *items = NULL;
        *count = 0;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return bad(x, n, path, "expected a list");
    *items = n->data.sequence.items.start;
    *count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

/* ---- sections ---- */

static int parse_cidr(const char *s, struct gw_cidr *out)
{
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof addr)
        return -1;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, addr, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, addr, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    int max = out->family == AF_INET ? 32 : 128;
    out->prefix = max;
    if (slash) {
        long long p;
        if (cn_parse_int(slash + 1, 0, max, &p) != CN_OK)
            return -1;
        out->prefix = (int)p;
    }
    /* Host bits must be zero: 10.0.0.1/8 is more likely a typo than a network. */
    for (int bit = out->prefix; bit < max; bit++)
        if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
            return -2;
    return 0;
}

static int parse_trusted(struct ctx *x, yaml_node_t *n, const char *path)
{
    yaml_node_item_t *items;
    size_t count;
    if (get_seq(x, n, path, &items, &count) != 0)
        return -1;
    x->c->trusted = cn_calloc(count ? count : 1, sizeof *x->c->trusted);
    for (size_t i = 0; i < count; i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        yaml_node_t *it = node_at(x, items[i]);
        const char *s;
        if (get_str(x, it, sub, &s) != 0)
            return -1;
        int rv = parse_cidr(s, &x->c->trusted[i]);
        if (rv == -2)
            return bad(x, it, sub, "\"%s\" has bits set after the prefix length", s);
        if (rv != 0)
            return bad(x, it, sub, "\"%s\" is not an IPv4 or IPv6 address or CIDR (like 10.0.0.0/8)", s);
        x->c->ntrusted++;
    }
    return 0;
}

/* A section whose keys are all integers in a range, stored at an offset in the config:
 * redis, retries, outlier and shedding. Checks across keys come after, in the caller. */
struct int_field {
    const char *key;
    int64_t min, max;
    size_t off;                 /* offsetof(struct gw_config, ...) */
};

static int parse_int_section(struct ctx *x, yaml_node_t *n, const char *section, const struct int_field *f,
                             size_t count, yaml_node_t **v)
{
    const char *keys[8];
    assert(count <= sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < count; i++)
        keys[i] = f[i].key;
    if (map_fields(x, n, section, keys, count, v) != 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        char path[128];
        join(path, sizeof path, section, f[i].key);
        if (v[i] && get_int(x, v[i], path, f[i].min, f[i].max, (int64_t *)((char *)x->c + f[i].off)) != 0)
            return -1;
    }
    return 0;
}

#define FIELD(key, min, max, member) {key, min, max, offsetof(struct gw_config, member)}

static int parse_redis(struct ctx *x, yaml_node_t *n)
{
    static const struct int_field f[] = {
        FIELD("timeout_ms", 1, 10000, redis_timeout_ms),
        FIELD("probe_ms", 10, 600000, redis_probe_ms),
    };
    yaml_node_t *v[2];
    return parse_int_section(x, n, "redis", f, 2, v);
}

/* Whether route r matches a "[METHOD ]PATH" pattern (PATH a template, or a prefix
 * ending in '*'; "*" alone matches every route). */
static int pattern_matches(const char *pat, const struct gw_route *r)
{
    const char *sp = strchr(pat, ' ');
    if (sp) {
        size_t ml = (size_t)(sp - pat);
        if (strlen(r->method) != ml || strncmp(r->method, pat, ml) != 0)
            return 0;
        pat = sp + 1;
        while (*pat == ' ')
            pat++;
    }
    size_t pl = strlen(pat);
    if (pl && pat[pl - 1] == '*')
        return strncmp(r->path, pat, pl - 1) == 0;
    return strcmp(r->path, pat) == 0;
}

static int parse_route_groups(struct ctx *x, yaml_node_t *n)
{
    struct gw_config *c = x->c;
    c->route_group = cn_malloc((gw_nroutes ? gw_nroutes : 1) * sizeof *c->route_group);
    for (size_t i = 0; i < gw_nroutes; i++)
        c->route_group[i] = -1;
    if (n == NULL || is_null(n))
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return bad(x, n, "route_groups", "expected a mapping of group names to lists of routes");
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    c->group_names = cn_calloc(count ? count : 1, sizeof *c->group_names);
    for (size_t g = 0; g < count; g++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[g];
        yaml_node_t *k = node_at(x, p->key), *v = node_at(x, p->value);
        if (k->type != YAML_SCALAR_NODE || !*scalar(k))
            return bad(x, k, "route_groups", "group names must be plain strings");
        char sub[256];
        join(sub, sizeof sub, "route_groups", scalar(k));
        if (strcmp(scalar(k), "*") == 0)
            return bad(x, k, sub, "\"*\" is reserved for every route");
        if (g >= MAX_GROUPS)
            return bad(x, k, sub, "at most %d route groups", MAX_GROUPS);
        for (size_t j = 0; j < c->ngroups; j++)
            if (strcmp(c->group_names[j], scalar(k)) == 0)
                return bad(x, k, sub, "given twice");
        c->group_names[c->ngroups++] = cn_strdup(scalar(k));
        yaml_node_item_t *items;
        size_t nitems;
        if (get_seq(x, v, sub, &items, &nitems) != 0)
            return -1;
        for (size_t i = 0; i < nitems; i++) {
            char isub[300];
            snprintf(isub, sizeof isub, "%s[%zu]", sub, i);
            yaml_node_t *it = node_at(x, items[i]);
            const char *pat;
            if (get_str(x, it, isub, &pat) != 0)
                return -1;
            size_t matched = 0;
            for (size_t r = 0; r < gw_nroutes; r++) {
                if (!pattern_matches(pat, &gw_routes[r]))
                    continue;
                matched++;
                if (c->route_group[r] < 0)
                    c->route_group[r] = (int)g;
            }
            if (matched == 0)
                return bad(x, it, isub, "\"%s\" matches no route (\"[METHOD ]PATH\", PATH a route template "
                            "or a prefix ending in *)", pat);
        }
    }
    return 0;
}

/* groups: ["*"] or group names, into all/bits. */
static int parse_groups(struct ctx *x, yaml_node_t *n, const char *path, bool *all, uint64_t *bits)
{
    yaml_node_item_t *items;
    size_t count;
    if (get_seq(x, n, path, &items, &count) != 0)
        return -1;
    if (count == 0)
        return bad(x, n, path, "name at least one route group, or \"*\" for every route");
    *all = false;
    *bits = 0;
    for (size_t i = 0; i < count; i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        yaml_node_t *it = node_at(x, items[i]);
        const char *s;
        if (get_str(x, it, sub, &s) != 0)
            return -1;
        if (strcmp(s, "*") == 0) {
            *all = true;
            continue;
        }
        size_t g = 0;
        while (g < x->c->ngroups && strcmp(x->c->group_names[g], s) != 0)
            g++;
        if (g == x->c->ngroups)
            return bad(x, it, sub, "\"%s\" is not a group defined under route_groups", s);
        *bits |= (uint64_t)1 << g;
    }
    return 0;
}

static int valid_policy_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-'))
            return 0;
    return n < 64;
}

static int parse_policy(struct ctx *x, yaml_node_t *n, const char *path, struct gw_rl_policy *p,
                        const char **replaces, yaml_node_t **replaces_node)
{
    static const char *const keys[] = {"name", "groups", "tiers", "key", "limit", "window_s",
                                       "burst", "mode", "on_redis_down", "key_ids", "replaces"};
    enum { NAME, GROUPS, TIERS, KEY, LIMIT, WINDOW, BURST, MODE, DOWN, KEY_IDS, REPLACES, NKEYS };
    static const char *const tier_names[] = {"anonymous", "user", "admin", "key"};
    static const char *const key_names[] = {"ip", "user", "key", "global"};
    static const char *const mode_names[] = {"enforce", "shadow"};
    static const char *const down_names[] = {"local", "open", "closed"};
    yaml_node_t *v[NKEYS];
    char sub[256];
    if (n->type != YAML_MAPPING_NODE)
        return bad(x, n, path, "expected a mapping (a policy: name, limit, window_s, ...)");
    if (map_fields(x, n, path, keys, NKEYS, v) != 0)
        return -1;

    p->all_groups = true;
    p->tiers = GW_TIER_ANONYMOUS | GW_TIER_USER | GW_TIER_ADMIN | GW_TIER_KEY;
    p->key = GW_RL_KEY_IP;
    p->window_ms = 60000;
    p->on_down = GW_RL_DOWN_LOCAL;
    p->replaces = -1;
    *replaces = NULL;

    const char *name;
    join(sub, sizeof sub, path, "name");
    if (v[NAME] == NULL)
        return bad(x, n, sub, "missing (every policy needs a name)");
    if (get_str(x, v[NAME], sub, &name) != 0)
        return -1;
    if (!valid_policy_name(name))
        return bad(x, v[NAME], sub, "\"%s\" must match ^[a-z0-9][a-z0-9_-]*$ (at most 63 characters)", name);
    snprintf(p->name, sizeof p->name, "%s", name);

    join(sub, sizeof sub, path, "limit");
    if (v[LIMIT] == NULL)
        return bad(x, n, sub, "missing (requests per window)");
    if (get_int(x, v[LIMIT], sub, 1, 1000000000, &p->limit) != 0)
        return -1;
    int64_t ws = 60;
    join(sub, sizeof sub, path, "window_s");
    if (v[WINDOW] && get_int(x, v[WINDOW], sub, 1, 31 * 86400, &ws) != 0)
        return -1;
    p->window_ms = ws * 1000;
    if (p->window_ms * 1000 / p->limit < 1)
        return bad(x, v[LIMIT], sub, "more than one request per microsecond cannot be measured");
    p->burst = p->limit;
    join(sub, sizeof sub, path, "burst");
    if (v[BURST] && get_int(x, v[BURST], sub, 1, 1000000000, &p->burst) != 0)
        return -1;
    join(sub, sizeof sub, path, "groups");
    if (v[GROUPS] && parse_groups(x, v[GROUPS], sub, &p->all_groups, &p->groups) != 0)
        return -1;
    if (v[TIERS]) {
        yaml_node_item_t *items;
        size_t count;
        join(sub, sizeof sub, path, "tiers");
        if (get_seq(x, v[TIERS], sub, &items, &count) != 0)
            return -1;
        if (count == 0)
            return bad(x, v[TIERS], sub, "name at least one tier (anonymous, user, admin, key)");
        p->tiers = 0;
        for (size_t i = 0; i < count; i++) {
            char isub[300];
            snprintf(isub, sizeof isub, "%s[%zu]", sub, i);
            int t;
            if (get_enum(x, node_at(x, items[i]), isub, tier_names, 4, &t) != 0)
                return -1;
            p->tiers |= 1u << t;
        }
    }
    int e;
    join(sub, sizeof sub, path, "key");
    if (v[KEY]) {
        if (get_enum(x, v[KEY], sub, key_names, 4, &e) != 0)
            return -1;
        p->key = (enum gw_rl_key)e;
    }
    join(sub, sizeof sub, path, "mode");
    if (v[MODE]) {
        if (get_enum(x, v[MODE], sub, mode_names, 2, &e) != 0)
            return -1;
        p->shadow = e == 1;
    }
    join(sub, sizeof sub, path, "on_redis_down");
    if (v[DOWN]) {
        if (get_enum(x, v[DOWN], sub, down_names, 3, &e) != 0)
            return -1;
        p->on_down = (enum gw_rl_down)e;
    }
    if (v[KEY_IDS]) {
        yaml_node_item_t *items;
        size_t count;
        join(sub, sizeof sub, path, "key_ids");
        if (get_seq(x, v[KEY_IDS], sub, &items, &count) != 0)
            return -1;
        p->key_ids = cn_calloc(count ? count : 1, sizeof *p->key_ids);
        for (size_t i = 0; i < count; i++) {
            char isub[300];
            snprintf(isub, sizeof isub, "%s[%zu]", sub, i);
            const char *s;
            if (get_str(x, node_at(x, items[i]), isub, &s) != 0)
                return -1;
            p->key_ids[p->nkey_ids++] = cn_strdup(s);
        }
    }
    if (v[REPLACES] && !is_null(v[REPLACES])) {
        join(sub, sizeof sub, path, "replaces");
        if (get_str(x, v[REPLACES], sub, replaces) != 0)
            return -1;
        if (**replaces == '\0')
            *replaces = NULL;
        *replaces_node = v[REPLACES];
    }
    return 0;
}

static int parse_rate_limits(struct ctx *x, yaml_node_t *n)
{
    struct gw_config *c = x->c;
    yaml_node_item_t *items;
    size_t count;
    if (get_seq(x, n, "rate_limits", &items, &count) != 0)
        return -1;
    c->policies = cn_calloc(count ? count : 1, sizeof *c->policies);
    const char **replaces = cn_calloc(count ? count : 1, sizeof *replaces);
    yaml_node_t **rnodes = cn_calloc(count ? count : 1, sizeof *rnodes);
    int rv = -1;
    for (size_t i = 0; i < count; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "rate_limits[%zu]", i);
        yaml_node_t *it = node_at(x, items[i]);
        /* Counted before it is parsed: a policy refused half-way is freed with the config. */
        c->npolicies++;
        if (parse_policy(x, it, sub, &c->policies[i], &replaces[i], &rnodes[i]) != 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->policies[j].name, c->policies[i].name) == 0) {
                snprintf(sub, sizeof sub, "rate_limits[%zu].name", i);
                bad(x, it, sub, "\"%s\" is already the name of rate_limits[%zu]", c->policies[i].name, j);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (replaces[i] == NULL)
            continue;
        char sub[64];
        snprintf(sub, sizeof sub, "rate_limits[%zu].replaces", i);
        size_t j = 0;
        while (j < count && strcmp(c->policies[j].name, replaces[i]) != 0)
            j++;
        if (j == count) {
            bad(x, rnodes[i], sub, "\"%s\" is not the name of a policy", replaces[i]);
            goto out;
        }
        if (j == i) {
            bad(x, rnodes[i], sub, "a policy cannot replace itself");
            goto out;
        }
        c->policies[i].replaces = (int)j;
    }
    rv = 0;
out:
    free(replaces);
    free(rnodes);
    return rv;
}

/* A section's field hi must be at least its field lo (both already read): the error is
 * on hi when it was given, else on lo. */
static int at_least(struct ctx *x, const char *section, const struct int_field *f, yaml_node_t **v, int lo, int hi)
{
    int64_t a = *(const int64_t *)((const char *)x->c + f[lo].off);
    int64_t b = *(const int64_t *)((const char *)x->c + f[hi].off);
    if (b >= a)
        return 0;
    char path[128];
    int at = v[hi] ? hi : lo;
    join(path, sizeof path, section, f[at].key);
    return bad(x, v[at], path, "%s (%lld) must be at least %s (%lld)", f[hi].key, (long long)b, f[lo].key,
               (long long)a);
}

static int parse_retries(struct ctx *x, yaml_node_t *n)
{
    static const struct int_field f[] = {
        FIELD("max_attempts", 1, 10, retry_max_attempts),
        FIELD("base_ms", 1, 60000, retry_base_ms),
        FIELD("cap_ms", 1, 600000, retry_cap_ms),
        FIELD("budget_percent", 0, 100, retry_budget_percent),
        FIELD("budget_min_per_s", 0, 100000, retry_budget_min_per_s),
    };
    yaml_node_t *v[5];
    if (parse_int_section(x, n, "retries", f, 5, v) != 0)
        return -1;
    return at_least(x, "retries", f, v, 1, 2);
}

static int parse_outlier(struct ctx *x, yaml_node_t *n)
{
    static const struct int_field f[] = {
        FIELD("consecutive_failures", 1, 1000, outlier_failures),
        FIELD("base_ejection_s", 1, 3600, outlier_base_s),
        FIELD("max_ejection_s", 1, 86400, outlier_max_s),
        FIELD("max_ejected_percent", 0, 100, outlier_max_percent),
    };
    yaml_node_t *v[4];
    if (parse_int_section(x, n, "outlier", f, 4, v) != 0)
        return -1;
    return at_least(x, "outlier", f, v, 1, 2);
}

static int parse_shedding(struct ctx *x, yaml_node_t *n)
{
    static const struct int_field f[] = {FIELD("max_outstanding", 1, 1000000, shed_max_outstanding)};
    yaml_node_t *v[1];
    return parse_int_section(x, n, "shedding", f, 1, v);
}

static int parse_fault_rule(struct ctx *x, yaml_node_t *n, const char *path, struct gw_fault_rule *r)
{
    static const char *const keys[] = {"groups", "delay_ms", "delay_percent", "abort_status", "abort_percent"};
    yaml_node_t *v[5];
    char sub[256];
    if (n->type != YAML_MAPPING_NODE)
        return bad(x, n, path, "expected a mapping (a rule: groups, delay_ms, ...)");
    if (map_fields(x, n, path, keys, 5, v) != 0)
        return -1;
    r->all_groups = true;
    join(sub, sizeof sub, path, "groups");
    if (v[0] && parse_groups(x, v[0], sub, &r->all_groups, &r->groups) != 0)
        return -1;
    int64_t d = 0, st = 0;
    join(sub, sizeof sub, path, "delay_ms");
    if (v[1] && get_int(x, v[1], sub, 0, 600000, &d) != 0)
        return -1;
    r->delay_ms = (int)d;
    join(sub, sizeof sub, path, "delay_percent");
    if (v[2] && get_percent(x, v[2], sub, &r->delay_percent) != 0)
        return -1;
    join(sub, sizeof sub, path, "abort_status");
    if (v[3]) {
        if (get_int(x, v[3], sub, 0, 599, &st) != 0)
            return -1;
        if (st != 0 && st < 400)
            return bad(x, v[3], sub, "%lld is not an error status (400..599, or 0 for none)", (long long)st);
    }
    r->abort_status = (int)st;
    join(sub, sizeof sub, path, "abort_percent");
    if (v[4] && get_percent(x, v[4], sub, &r->abort_percent) != 0)
        return -1;
    return 0;
}

static int parse_faults(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"enabled", "headers", "rules"};
    struct gw_config *c = x->c;
    yaml_node_t *v[3];
    if (map_fields(x, n, "faults", keys, 3, v) != 0)
        return -1;
    if ((v[0] && get_bool(x, v[0], "faults.enabled", &c->faults_enabled) != 0) ||
        (v[1] && get_bool(x, v[1], "faults.headers", &c->fault_headers) != 0))
        return -1;
    if (v[2] == NULL)
        return 0;
    yaml_node_item_t *items;
    size_t count;
    if (get_seq(x, v[2], "faults.rules", &items, &count) != 0)
        return -1;
    c->faults = cn_calloc(count ? count : 1, sizeof *c->faults);
    for (size_t i = 0; i < count; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "faults.rules[%zu]", i);
        if (parse_fault_rule(x, node_at(x, items[i]), sub, &c->faults[i]) != 0)
            return -1;
        c->nfaults++;
    }
    return 0;
}

/* The built-in defaults (config.h's file comment). */
static struct gw_config *config_defaults(const char *path)
{
    struct gw_config *c = cn_calloc(1, sizeof *c);
    c->path = cn_strdup(path ? path : "");
    c->replicas = 1;
    c->redis_timeout_ms = 5;
    c->redis_probe_ms = 1000;
    c->retry_max_attempts = 3;
    c->retry_base_ms = 25;
    c->retry_cap_ms = 250;
    c->retry_budget_percent = 20;
    c->retry_budget_min_per_s = 3;
    c->outlier_failures = 5;
    c->outlier_base_s = 30;
    c->outlier_max_s = 300;
    c->outlier_max_percent = 50;
    c->shed_max_outstanding = 256;
    atomic_init(&c->refs, 1);
    return c;
}

static int parse_root(struct ctx *x, yaml_node_t *root)
{
    static const char *const keys[] = {"replicas", "trusted_proxies", "redis", "route_groups",
                                       "rate_limits", "retries", "outlier", "shedding", "faults"};
    enum { REPLICAS, TRUSTED, REDIS, GROUPS, LIMITS, RETRIES, OUTLIER, SHEDDING, FAULTS, NKEYS };
    yaml_node_t *v[NKEYS];
    if (root->type != YAML_MAPPING_NODE && !is_null(root))
        return bad(x, root, "", "expected a mapping of sections (replicas, rate_limits, ...)");
    if (map_fields(x, root, "", keys, NKEYS, v) != 0)
        return -1;
    /* Groups first: policies and fault rules name them, wherever they are in the file. */
    if (parse_route_groups(x, v[GROUPS]) != 0)
        return -1;
    if (v[REPLICAS] && get_int(x, v[REPLICAS], "replicas", 1, 1000, &x->c->replicas) != 0)
        return -1;
    if (v[TRUSTED] && parse_trusted(x, v[TRUSTED], "trusted_proxies") != 0)
        return -1;
    if ((v[REDIS] && parse_redis(x, v[REDIS]) != 0) || (v[LIMITS] && parse_rate_limits(x, v[LIMITS]) != 0) ||
        (v[RETRIES] && parse_retries(x, v[RETRIES]) != 0) || (v[OUTLIER] && parse_outlier(x, v[OUTLIER]) != 0) ||
        (v[SHEDDING] && parse_shedding(x, v[SHEDDING]) != 0) || (v[FAULTS] && parse_faults(x, v[FAULTS]) != 0))
        return -1;
    return 0;
}

int gw_config_parse(const char *name, const char *text, size_t len, struct gw_config **out, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct gw_config *c = config_defaults(name);
    struct ctx x = {.name = name, .doc = &doc, .err = err, .errlen = errlen, .c = c};
    int rv = CN_EINVAL;
    *out = NULL;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu: %s%s%s", name, (size_t)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "invalid YAML", parser.context ? " " : "",
                 parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        gw_config_put(c);
        return CN_EINVAL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        /* An empty file: the defaults. */
        rv = parse_route_groups(&x, NULL) == 0 ? CN_OK : CN_EINVAL;
    } else if (parse_root(&x, root) == 0) {
        rv = CN_OK;
    }
    /* A second document would be ignored silently: refuse it. */
    if (rv == CN_OK) {
        yaml_document_t next;
        if (yaml_parser_load(&parser, &next)) {
            yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2) {
                bad(&x, r2, "", "a second YAML document (---) is not allowed");
                rv = CN_EINVAL;
            }
            yaml_document_delete(&next);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rv != CN_OK) {
        gw_config_put(c);
        return rv;
    }
    *out = c;
    return CN_OK;
}

int gw_config_load(const char *path, struct gw_config **out, char *err, size_t errlen)
{
    *out = NULL;
    if (path == NULL || *path == '\0')
        return gw_config_parse("", "", 0, out, err, errlen);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return CN_EIO;
    }
    char *text = cn_malloc(MAX_FILE_BYTES + 1);
    size_t n = fread(text, 1, MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rv;
    if (bad) {
        snprintf(err, errlen, "%s: cannot read", path);
        rv = CN_EIO;
    } else if (n > MAX_FILE_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, MAX_FILE_BYTES);
        rv = CN_EINVAL;
    } else {
        rv = gw_config_parse(path, text, n, out, err, errlen);
    }
    free(text);
    return rv;
}

void gw_config_put(struct gw_config *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    free(c->path);
    free(c->trusted);
    for (size_t i = 0; i < c->ngroups; i++)
        free(c->group_names[i]);
    free(c->group_names);
    free(c->route_group);
    for (size_t i = 0; i < c->npolicies; i++) {
        for (size_t k = 0; k < c->policies[i].nkey_ids; k++)
            free(c->policies[i].key_ids[k]);
        free(c->policies[i].key_ids);
        free(c->policies[i].stats);
    }
    free(c->policies);
    free(c->faults);
    free(c);
}

/* ---- the current config ---- */

static pthread_mutex_t current_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gw_config *current;

void gw_config_set(struct gw_config *c)
{
    pthread_mutex_lock(&current_mu);
    struct gw_config *old = current;
    current = c;
    pthread_mutex_unlock(&current_mu);
    gw_config_put(old);
}

struct gw_config *gw_config_get(void)
{
    /* The lock makes "read the pointer, take a reference" one step: without it a reload
     * could free the config between the two. */
    pthread_mutex_lock(&current_mu);
    struct gw_config *c = current;
    if (c)
        atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&current_mu);
    return c;
}

int gw_config_reload(void)
{
    struct gw_config *cur = gw_config_get();
    char path[4096];
    snprintf(path, sizeof path, "%s", cur ? cur->path : "");
    gw_config_put(cur);
    if (path[0] == '\0') {
        cn_log(CN_LOG_INFO, "GW-CONFIG-RELOADED", NULL, "no policy file (CAIRN_GATEWAY_CONFIG is empty): nothing to reload");
        return CN_OK;
    }
    char err[512];
    struct gw_config *c;
    int rv = gw_config_load(path, &c, err, sizeof err);
    if (rv != CN_OK) {
        cn_log(CN_LOG_ERROR, "GW-CONFIG-REJECTED", NULL, "%s (the previous config stays in force)", err);
        return rv;
    }
    gw_config_set(c);
    cn_log(CN_LOG_INFO, "GW-CONFIG-RELOADED", NULL, "%s: %zu route groups, %zu rate-limit policies, faults %s", path,
           c->ngroups, c->npolicies, c->faults_enabled ? "enabled" : "off");
    return CN_OK;
}

bool gw_config_trusted(const struct gw_config *c, int family, const void *addr)
{
    const unsigned char *a = addr;
    unsigned char v4[4];
    /* An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d. */
    if (family == AF_INET6 && memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memcpy(v4, a + 12, 4);
        a = v4;
        family = AF_INET;
    }
    for (size_t i = 0; i < c->ntrusted; i++) {
        const struct gw_cidr *n = &c->trusted[i];
        if (n->family != family)
            continue;
        int bits = n->prefix, full = bits / 8, rest = bits % 8;
        if (memcmp(n->addr, a, (size_t)full) != 0)
            continue;
        if (rest && ((n->addr[full] ^ a[full]) & (0xff << (8 - rest)) & 0xff))
            continue;
        return true;
    }
    return false;
}
