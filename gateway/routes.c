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

const char *const gw_scopes[] = {
    "models:read", "models:write", "predict", "jobs:read", "jobs:write",
    "features:read", "features:write", "costs:read", "admin",
};
const size_t gw_nscopes = sizeof gw_scopes / sizeof gw_scopes[0];

const struct gw_route gw_routes[] = {
    /* method  path                      service rpc       auth            scope  idem  timeout status */
    {"POST", "/v1/auth/register",        "auth", "SignUp",  GW_AUTH_PUBLIC,  "", false, 0, 201,
     "Create a user account"},
    {"POST", "/v1/auth/login",           "auth", "Login",   GW_AUTH_PUBLIC,  "", false, 0, 200,
     "Exchange email and password for an access and a refresh token"},
    {"POST", "/v1/auth/refresh",         "auth", "Refresh", GW_AUTH_PUBLIC,  "", false, 0, 200,
     "Rotate a refresh token for a new token pair"},
    {"POST", "/v1/auth/logout",          "auth", "Logout",  GW_AUTH_PUBLIC,  "", true,  0, 204,
     "Revoke the refresh token's whole family"},
    {"GET",  "/v1/auth/me",              "auth", "Me",      GW_AUTH_USER,    "", true,  0, 200,
     "The caller: the signed-in user, or an API key's owner with the key's scopes"},
    {"GET",  "/.well-known/jwks.json",   "auth", "GetJwks", GW_AUTH_PUBLIC,  "", true,  0, 200,
     "Public keys that verify access tokens (RFC 7517)"},
    {"POST", "/v1/auth/api-keys",        "auth", "CreateApiKey", GW_AUTH_SESSION, "", false, 0, 201,
     "Create an API key; the secret is in this response only"},
    {"GET",  "/v1/auth/api-keys",        "auth", "ListApiKeys",  GW_AUTH_USER, "", true, 0, 200,
     "The caller's API keys, without secrets"},
    {"DELETE", "/v1/auth/api-keys/{id}", "auth", "RevokeApiKey", GW_AUTH_USER, "", true, 0, 204,
     "Revoke an API key; gateways drop it within seconds"},
    {"POST", "/v1/auth/password",        "auth", "ChangePassword", GW_AUTH_SESSION, "", false, 0, 204,
     "Change the password; other sessions end"},
    {"POST", "/v1/auth/logout-all",      "auth", "LogoutAll", GW_AUTH_SESSION, "", true, 0, 204,
     "End every session of the caller"},
    {"GET",  "/v1/admin/users",          "auth", "ListUsers", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "Users, newest first, filtered by email"},
    {"PATCH", "/v1/admin/users/{id}",    "auth", "UpdateUser", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "Change a user's role or disable it (revokes its sessions and keys at once)"},
    {"GET",  "/v1/admin/audit",          "auth", "ListAudit", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "The audit log, newest first"},
};
const size_t gw_nroutes = sizeof gw_routes / sizeof gw_routes[0];

const struct gw_service *gw_service_find(const char *name)
{
    for (size_t i = 0; i < gw_nservices; i++)
        if (strcmp(gw_services[i].name, name) == 0)
            return &gw_services[i];
    return NULL;
}
