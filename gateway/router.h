/* router.h — matches a request's method and path against the route table (routes.c).
 *
 * Templates are compiled once at start-up, and checked against the service descriptors:
 * the RPC must exist and every {param} must be a top-level field of its input message.
 * Matching is a scan that prefers the template with the most literal characters, so
 * /v1/jobs/{id}:cancel wins over /v1/jobs/{id} for "/v1/jobs/7:cancel".
 */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

#include "routes.h"

#define GW_MAX_PARAMS 8

struct gw_param {
    const char *name;
    size_t name_len;
    const char *value;     /* raw (still percent-encoded), points into the request path */
    size_t value_len;
};

struct gw_match {
    const struct gw_route *route;
    size_t index;                                 /* into gw_routes */
    const struct gw_service *service;
    const ProtobufCMethodDescriptor *method;      /* the RPC */
    size_t nparams;
    struct gw_param params[GW_MAX_PARAMS];
};

enum gw_route_result { GW_ROUTE_FOUND = 0, GW_ROUTE_NOT_FOUND, GW_ROUTE_BAD_METHOD };

/* Compiles and checks the table: each row against its service's descriptors (RPC,
 * {param} fields, scope, status, flags, body cap, a raw route's message shapes), and
 * every pair of templates for ambiguity. Returns 0, or CN_EINVAL with the reason in err. */
int gw_router_init(char *err, size_t errlen);
void gw_router_fini(void);

/* Matches method + path (no query string). On GW_ROUTE_BAD_METHOD, allow gets the
 * comma-separated methods the path does accept. */
enum gw_route_result gw_router_match(const char *method, size_t mlen, const char *path, size_t plen,
                                     struct gw_match *m, char *allow, size_t allowlen);

/* Whether name is one of the fields a raw route fills itself (body, content_type,
 * headers): never from a path or query parameter. */
int gw_raw_field(const char *name);

/* Percent-decodes src into dst (capacity >= n+1). Returns the length, or -1 for a bad
 * escape or a decoded NUL. '+' is kept (it is a space only in query strings: set
 * plus_is_space for those). */
long gw_url_decode(const char *src, size_t n, char *dst, int plus_is_space);

#endif
