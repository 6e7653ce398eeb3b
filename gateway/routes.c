/* routes.c — THE route table: every HTTP route the gateway serves, as data.
 *
 * To add a route: add one row here (method, path template, service, RPC, auth,
 * idempotent, timeout, success status, summary) and the path to docs/openapi.yaml — a
 * test keeps the two equal. To add a service: add its .proto under proto/cairn/v1/, a
 * row to gw_services, and its routes. Start-up checks every row against the generated
 * descriptors, so a typo fails fast instead of answering 500s.
 */
#include "routes.h"

#include <string.h>

#include "cairn/v1/auth.pb-c.h"

const struct gw_service gw_services[] = {
    {"auth", &cairn__v1__auth__descriptor, "CAIRN_AUTH_ADDR", "tcp://127.0.0.1:7101"},
};
const size_t gw_nservices = sizeof gw_services / sizeof gw_services[0];

const struct gw_route gw_routes[] = {
    /* method  path                      service rpc        auth             idem   timeout status */
    {"POST", "/v1/auth/register",        "auth", "SignUp",  GW_AUTH_PUBLIC,  false, 0, 201,
     "Create a user account"},
    {"POST", "/v1/auth/login",           "auth", "Login",   GW_AUTH_PUBLIC,  false, 0, 200,
     "Exchange email and password for an access and a refresh token"},
    {"POST", "/v1/auth/refresh",         "auth", "Refresh", GW_AUTH_PUBLIC,  false, 0, 200,
     "Rotate a refresh token for a new token pair"},
    {"POST", "/v1/auth/logout",          "auth", "Logout",  GW_AUTH_PUBLIC,  true,  0, 204,
     "Revoke the refresh token's whole family"},
    {"GET",  "/v1/auth/me",              "auth", "Me",      GW_AUTH_USER,    true,  0, 200,
     "The signed-in user"},
    {"GET",  "/.well-known/jwks.json",   "auth", "GetJwks", GW_AUTH_PUBLIC,  true,  0, 200,
     "Public keys that verify access tokens (RFC 7517)"},
};
const size_t gw_nroutes = sizeof gw_routes / sizeof gw_routes[0];

const struct gw_service *gw_service_find(const char *name)
{
    for (size_t i = 0; i < gw_nservices; i++)
        if (strcmp(gw_services[i].name, name) == 0)
            return &gw_services[i];
    return NULL;
}
