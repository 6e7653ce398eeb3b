/* routes.h — the shape of the gateway's route table (the table itself is routes.c) and
 * of the service table the routes point into.
 *
 * A route maps one HTTP method + path template onto one RPC of one service. Path
 * templates are literal segments and {param} segments, optionally with a literal suffix
 * such as {id}:cancel; path and query parameters fill the top-level request fields of
 * the same name. The table is checked against the protoc-c descriptors at start-up
 * (gw_routes_check): a route naming a missing service, RPC or field fails start-up.
 * Every non-public route names the scope it needs; a token carries its role's scopes,
 * an API key the scopes it was created with (never more than its owner's role).
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

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
};

extern const struct gw_service gw_services[];
extern const size_t gw_nservices;
/* Every scope a route may name (the same list cairn-auth grants from). */
extern const char *const gw_scopes[];
extern const size_t gw_nscopes;
extern const struct gw_route gw_routes[];
extern const size_t gw_nroutes;

const struct gw_service *gw_service_find(const char *name);

#endif
