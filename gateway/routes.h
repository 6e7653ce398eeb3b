/* routes.h — the shape of the gateway's route table (the table itself is routes.c) and
 * of the service table the routes point into.
 *
 * A route maps one HTTP method + path template onto one RPC of one service. Path
 * templates are literal segments and {param} segments, optionally with a literal suffix
 * such as {id}:cancel; path and query parameters fill the top-level request fields of
 * the same name. The table is checked against the protoc-c descriptors at start-up
 * (gw_router_init, router.c): a route naming a missing service, RPC or field, a raw
 * route whose messages do not have the raw shape, or two templates that could match the
 * same path with nothing to choose between them fails start-up.
 * Every non-public route names the scope it needs; a token carries its role's scopes,
 * an API key the scopes it was created with (never more than its owner's role).
 *
 * Route flags:
 *   GW_ROUTE_RAW         the body is not transcoded. The RPC input gets the body bytes in
 *                        its `bytes body` field, the Content-Type in `string content_type`
 *                        and the request headers (lowercased, credentials left out, at
 *                        most GW_RAW_MAX_HEADERS, values up to GW_RAW_MAX_HEADER_VALUE) in
 *                        `repeated cairn.v1.Header headers`, each only if the message has
 *                        the field; path and query parameters fill fields as usual. An
 *                        RPC answering cairn.v1.RawResponse has its body sent as is with
 *                        its content_type (default application/json); any other answer is
 *                        transcoded to JSON. x-protobuf in Accept or Content-Type changes
 *                        nothing on a raw route. An RPC answering RawResponse must be on a
 *                        raw route.
 *   GW_ROUTE_OIP_ERRORS  every error on the route (upstream codes, 401/403, 413, 503/504,
 *                        field errors) is {"error": "<message>"} as application/json with
 *                        the status problem+json would have had: the Open Inference
 *                        Protocol's error shape, which KServe/Triton clients parse.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#define GW_ROUTE_RAW (1u << 0)
#define GW_ROUTE_OIP_ERRORS (1u << 1)
#define GW_ROUTE_FLAGS_ALL (GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS)

/* Raw routes forward at most this many request headers, and skip a header whose name or
 * value is longer than GW_RAW_MAX_HEADER_VALUE: a service's Call stays small whatever a
 * client sends. */
#define GW_RAW_MAX_HEADERS 64
#define GW_RAW_MAX_HEADER_VALUE 4096
/* The largest per-route body cap a row may ask for (the CAIRN_MAX_BODY_BYTES maximum). */
#define GW_ROUTE_MAX_BODY_LIMIT ((int64_t)1 << 30)

enum gw_auth {
    GW_AUTH_PUBLIC,   /* no credentials needed */
    GW_AUTH_USER,     /* an access token or an API key */
    GW_AUTH_SESSION,  /* an access token only: things an API key must not do */
    GW_AUTH_ADMIN,    /* role admin (and scope admin) */
};

struct gw_service {
    const char *name;                               /* "auth" */
    const ProtobufCServiceDescriptor *descriptor;
    const char *addr_env;                           /* "CAIRN_AUTH_ADDR" */
    const char *addr_default;                       /* "tcp://127.0.0.1:7101" */
    size_t max_msg;            /* largest reply taken from it; 0 = CN_RPC_MAX_MSG_DEFAULT */
};

struct gw_route {
    const char *method;        /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *path;          /* "/v1/auth/me", "/v1/jobs/{id}:cancel" */
    const char *service;       /* a gw_services[] name */
    const char *rpc;           /* method name in the service block */
    enum gw_auth auth;
    const char *scope;         /* scope the caller needs ("" = none beyond auth) */
    bool idempotent;           /* safe to retry (GETs, PUTs, ...) */
    int timeout_ms;            /* 0 = CAIRN_UPSTREAM_TIMEOUT_MS */
    int status;                /* HTTP status on success: 200, 201, 202 or 204 */
    const char *summary;       /* one line for docs */
    unsigned flags;            /* GW_ROUTE_RAW, GW_ROUTE_OIP_ERRORS */
    int64_t max_body;          /* body cap in bytes (413 above); 0 = CAIRN_MAX_BODY_BYTES */
};

extern const struct gw_service gw_services[];
extern const size_t gw_nservices;
/* Every scope a route may name (the same list cairn-auth grants from). */
extern const char *const gw_scopes[];
extern const size_t gw_nscopes;
extern const struct gw_route gw_routes[];
extern const size_t gw_nroutes;

const struct gw_service *gw_service_find(const char *name);

/* Parses a comma-separated list of service names (spaces around names allowed, empty
 * items skipped) into need[gw_nservices]: need[i] is true when gw_services[i] is named.
 * Returns 0, or CN_EINVAL with err naming the unknown service. */
int gw_services_parse(const char *list, bool *need, char *err, size_t errlen);

/* The largest body any route accepts: the biggest per-route max_body, or default_cap
 * when that is bigger. */
int64_t gw_routes_max_body(int64_t default_cap);

#endif
