/* router.c — compiles the route templates and matches requests against them (router.h).
 * Kept free of h2o so it can be unit-tested and fuzzed on its own. The start-up checks
 * of the table live here too: every row against the service descriptors (check), and
 * every pair of templates against each other (ambiguous). */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/v1/rpc.pb-c.h"
#include "err.h"
#include "json.h"
#include "util.h"

#define MAX_SEGS 16

struct seg {
    const char *prefix;   /* literal before the param (or the whole literal) */
    size_t prefix_len;
    const char *param;    /* NULL for a literal segment */
    size_t param_len;
    const char *suffix;   /* literal after the param, e.g. ":cancel" */
    size_t suffix_len;
};

struct compiled {
    struct seg segs[MAX_SEGS];
    size_t nsegs;
    size_t literal;       /* literal characters, for specificity */
    const struct gw_service *service;
    const ProtobufCMethodDescriptor *method;
};

static struct compiled *compiled;

static int compile(const struct gw_route *r, struct compiled *c, char *err, size_t errlen)
{
    const char *p = r->path;
    if (*p != '/') {
        snprintf(err, errlen, "route %s %s: path must start with '/'", r->method, r->path);
        return CN_EINVAL;
    }
    c->nsegs = 0;
    c->literal = 0;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (c->nsegs == MAX_SEGS) {
            snprintf(err, errlen, "route %s %s: too many segments", r->method, r->path);
            return CN_EINVAL;
        }
        struct seg *s = &c->segs[c->nsegs++];
        memset(s, 0, sizeof *s);
        const char *open = memchr(p, '{', len);
        if (open == NULL) {
            s->prefix = p;
            s->prefix_len = len;
        } else {
            const char *close = memchr(open, '}', len - (size_t)(open - p));
            if (close == NULL || close == open + 1) {
                snprintf(err, errlen, "route %s %s: bad {param}", r->method, r->path);
                return CN_EINVAL;
            }
            s->prefix = p;
            s->prefix_len = (size_t)(open - p);
            s->param = open + 1;
            s->param_len = (size_t)(close - open - 1);
            s->suffix = close + 1;
            s->suffix_len = len - (size_t)(close + 1 - p);
            if (memchr(s->suffix, '{', s->suffix_len)) {
                snprintf(err, errlen, "route %s %s: one {param} per segment", r->method, r->path);
                return CN_EINVAL;
            }
        }
        c->literal += s->prefix_len + s->suffix_len;
        p += len;
    }
    return CN_OK;
}

int gw_raw_field(const char *name)
{
    return strcmp(name, "body") == 0 || strcmp(name, "content_type") == 0 || strcmp(name, "headers") == 0;
}

/* Flags, body cap and, for a raw route, the shape of its input: proxy.c fills body,
 * content_type and headers by descriptor, so a message that does not fit would only show
 * up as 500s at run time. An RPC answering cairn.v1.RawResponse must be on a raw route:
 * transcoding it would send the service's JSON as base64. */
static int check_raw(const struct gw_route *r, const struct compiled *c, char *err, size_t errlen)
{
    if (r->flags & ~GW_ROUTE_FLAGS_ALL) {
        snprintf(err, errlen, "route %s %s: unknown flags 0x%x", r->method, r->path, r->flags & ~GW_ROUTE_FLAGS_ALL);
        return CN_EINVAL;
    }
    if (r->max_body < 0 || r->max_body > GW_ROUTE_MAX_BODY_LIMIT) {
        snprintf(err, errlen, "route %s %s: max_body %lld is not in 0..%lld", r->method, r->path,
                 (long long)r->max_body, (long long)GW_ROUTE_MAX_BODY_LIMIT);
        return CN_EINVAL;
    }
    const ProtobufCMessageDescriptor *in = c->method->input, *out = c->method->output;
    int raw_out = out == &cairn__v1__raw_response__descriptor;
    if (!(r->flags & GW_ROUTE_RAW)) {
        if (raw_out) {
            snprintf(err, errlen, "route %s %s: %s answers cairn.v1.RawResponse: mark the route GW_ROUTE_RAW",
                     r->method, r->path, r->rpc);
            return CN_EINVAL;
        }
        return CN_OK;
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(in, "body");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED) {
        snprintf(err, errlen, "route %s %s: a raw route's input %s needs a field `bytes body`", r->method,
                 r->path, in->name);
        return CN_EINVAL;
    }
    f = protobuf_c_message_descriptor_get_field_by_name(in, "content_type");
    if (f && (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)) {
        snprintf(err, errlen, "route %s %s: %s.content_type must be a string", r->method, r->path, in->name);
        return CN_EINVAL;
    }
    f = protobuf_c_message_descriptor_get_field_by_name(in, "headers");
    if (f && (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED ||
              f->descriptor != &cairn__v1__header__descriptor)) {
        snprintf(err, errlen, "route %s %s: %s.headers must be repeated cairn.v1.Header", r->method, r->path,
                 in->name);
        return CN_EINVAL;
    }
    /* The output may be any message: RawResponse is sent as is, anything else is
     * transcoded to JSON (UploadVersion takes a model file and answers a ModelVersion). */
    return CN_OK;
}

static int check(const struct gw_route *r, struct compiled *c, char *err, size_t errlen)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    int ok = 0;
    for (size_t i = 0; i < CN_ARRAY_LEN(methods); i++)
        ok |= strcmp(r->method, methods[i]) == 0;
    if (!ok) {
        snprintf(err, errlen, "route %s %s: unknown method", r->method, r->path);
        return CN_EINVAL;
    }
    if (r->status != 200 && r->status != 201 && r->status != 202 && r->status != 204) {
        snprintf(err, errlen, "route %s %s: success status %d not allowed", r->method, r->path, r->status);
        return CN_EINVAL;
    }
    if (r->scope == NULL) {
        snprintf(err, errlen, "route %s %s: scope must be a scope or \"\"", r->method, r->path);
        return CN_EINVAL;
    }
    if (r->scope[0]) {
        int known = 0;
        for (size_t i = 0; i < gw_nscopes; i++)
            known |= strcmp(r->scope, gw_scopes[i]) == 0;
        if (!known) {
            snprintf(err, errlen, "route %s %s: unknown scope '%s'", r->method, r->path, r->scope);
            return CN_EINVAL;
        }
        if (r->auth == GW_AUTH_PUBLIC) {
            snprintf(err, errlen, "route %s %s: a public route cannot need a scope", r->method, r->path);
            return CN_EINVAL;
        }
    }
    if (r->auth == GW_AUTH_ADMIN && strcmp(r->scope, "admin") != 0) {
        snprintf(err, errlen, "route %s %s: an admin route needs the admin scope", r->method, r->path);
        return CN_EINVAL;
    }
    c->service = gw_service_find(r->service);
    if (c->service == NULL) {
        snprintf(err, errlen, "route %s %s: no service '%s'", r->method, r->path, r->service);
        return CN_EINVAL;
    }
    c->method = protobuf_c_service_descriptor_get_method_by_name(c->service->descriptor, r->rpc);
    if (c->method == NULL) {
        snprintf(err, errlen, "route %s %s: service %s has no RPC '%s'", r->method, r->path,
                 r->service, r->rpc);
        return CN_EINVAL;
    }
    for (size_t i = 0; i < c->nsegs; i++) {
        const struct seg *s = &c->segs[i];
        if (s->param == NULL)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)s->param_len, s->param);
        const ProtobufCFieldDescriptor *f = cn_json_field(c->method->input, name);
        if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED || f->type == PROTOBUF_C_TYPE_MESSAGE) {
            snprintf(err, errlen, "route %s %s: {%s} is not a scalar field of %s", r->method,
                     r->path, name, c->method->input->name);
            return CN_EINVAL;
        }
        if ((r->flags & GW_ROUTE_RAW) && gw_raw_field(name)) {
            snprintf(err, errlen, "route %s %s: {%s} is a raw route's own field", r->method, r->path, name);
            return CN_EINVAL;
        }
    }
    return check_raw(r, c, err, errlen);
}

/* Whether the literal segment l could be matched by the {param} segment p. */
static int literal_fits(const struct seg *l, const struct seg *p)
{
    return l->prefix_len >= p->prefix_len + p->suffix_len + 1 &&
           memcmp(l->prefix, p->prefix, p->prefix_len) == 0 &&
           memcmp(l->prefix + l->prefix_len - p->suffix_len, p->suffix, p->suffix_len) == 0;
}

/* Whether one path segment could match both a and b. Two {param} segments can when
 * their prefixes agree (one starts the other) and their suffixes do (one ends the
 * other): a long enough value in between fits both. */
static int segs_overlap(const struct seg *a, const struct seg *b)
{
    if (a->param == NULL && b->param == NULL)
        return a->prefix_len == b->prefix_len && memcmp(a->prefix, b->prefix, a->prefix_len) == 0;
    if (a->param == NULL)
        return literal_fits(a, b);
    if (b->param == NULL)
        return literal_fits(b, a);
    size_t pl = a->prefix_len < b->prefix_len ? a->prefix_len : b->prefix_len;
    size_t sl = a->suffix_len < b->suffix_len ? a->suffix_len : b->suffix_len;
    return memcmp(a->prefix, b->prefix, pl) == 0 &&
           memcmp(a->suffix + a->suffix_len - sl, b->suffix + b->suffix_len - sl, sl) == 0;
}

/* Two different templates that some path matches both, with as many literal characters
 * each: the router would silently take whichever comes first in the table (and answer
 * 405 for the other's methods). A more specific template winning is by design. */
static int ambiguous(const struct compiled *a, const struct compiled *b)
{
    if (a->literal != b->literal || a->nsegs != b->nsegs)
        return 0;
    for (size_t i = 0; i < a->nsegs; i++)
        if (!segs_overlap(&a->segs[i], &b->segs[i]))
            return 0;
    return 1;
}

int gw_router_init(char *err, size_t errlen)
{
    free(compiled);
    compiled = cn_calloc(gw_nroutes ? gw_nroutes : 1, sizeof *compiled);
    for (size_t i = 0; i < gw_nroutes; i++) {
        const struct gw_route *r = &gw_routes[i];
        if (compile(r, &compiled[i], err, errlen) != CN_OK || check(r, &compiled[i], err, errlen) != CN_OK)
            return CN_EINVAL;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(gw_routes[j].method, r->method) == 0 && strcmp(gw_routes[j].path, r->path) == 0) {
                snprintf(err, errlen, "route %s %s: listed twice", r->method, r->path);
                return CN_EINVAL;
            }
            if (strcmp(gw_routes[j].path, r->path) != 0 && ambiguous(&compiled[j], &compiled[i])) {
                snprintf(err, errlen, "route %s %s: ambiguous with %s %s (a path can match both)", r->method,
                         r->path, gw_routes[j].method, gw_routes[j].path);
                return CN_EINVAL;
            }
        }
    }
    return CN_OK;
}

void gw_router_fini(void)
{
    free(compiled);
    compiled = NULL;
}

/* Matches path against one compiled template, filling params. */
static int match_one(const struct compiled *c, const char *path, size_t plen, struct gw_match *m)
{
    const char *p = path, *end = path + plen;
    m->nparams = 0;
    for (size_t i = 0; i < c->nsegs; i++) {
        if (p == end || *p != '/')
            return 0;
        p++;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *segend = slash ? slash : end;
        size_t len = (size_t)(segend - p);
        const struct seg *s = &c->segs[i];
        if (s->param == NULL) {
            if (len != s->prefix_len || memcmp(p, s->prefix, len) != 0)
                return 0;
        } else {
            if (len < s->prefix_len + s->suffix_len + 1)
                return 0;
            if (memcmp(p, s->prefix, s->prefix_len) != 0 ||
                memcmp(segend - s->suffix_len, s->suffix, s->suffix_len) != 0)
                return 0;
            if (m->nparams == GW_MAX_PARAMS)
                return 0;
            struct gw_param *gp = &m->params[m->nparams++];
            gp->name = s->param;
            gp->name_len = s->param_len;
            gp->value = p + s->prefix_len;
            gp->value_len = len - s->prefix_len - s->suffix_len;
        }
        p = segend;
    }
    return p == end;
}

enum gw_route_result gw_router_match(const char *method, size_t mlen, const char *path, size_t plen,
                                     struct gw_match *m, char *allow, size_t allowlen)
{
    long best = -1;
    const char *best_path = NULL;
    struct gw_match tmp;

    /* The most specific template that matches the path, whatever the method. */
    for (size_t i = 0; i < gw_nroutes; i++) {
        if ((long)compiled[i].literal > best && match_one(&compiled[i], path, plen, &tmp)) {
            best = (long)compiled[i].literal;
            best_path = gw_routes[i].path;
        }
    }
    if (best_path == NULL)
        return GW_ROUTE_NOT_FOUND;

    if (allowlen)
        allow[0] = '\0';
    size_t alen = 0;
    for (size_t i = 0; i < gw_nroutes; i++) {
        if (strcmp(gw_routes[i].path, best_path) != 0)
            continue;
        if (strlen(gw_routes[i].method) == mlen && memcmp(gw_routes[i].method, method, mlen) == 0) {
            match_one(&compiled[i], path, plen, m);
            m->route = &gw_routes[i];
            m->index = i;
            m->service = compiled[i].service;
            m->method = compiled[i].method;
            return GW_ROUTE_FOUND;
        }
        if (alen < allowlen) {
            int n = snprintf(allow + alen, allowlen - alen, "%s%s", alen ? ", " : "", gw_routes[i].method);
            if (n > 0)
                alen += (size_t)n;
        }
    }
    return GW_ROUTE_BAD_METHOD;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long gw_url_decode(const char *src, size_t n, char *dst, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (long)o;
}
