/* routes.c — THE route table: every HTTP route the gateway serves, as data.
 *
 * To add a route: add one row here (method, path template, service, RPC, auth,
 * idempotent, timeout, success status, summary, then flags and body cap — new rows name
 * their fields) and the path to docs/openapi.yaml — a test keeps the two equal. To add a
 * service: add its .proto under proto/cairn/v1/, a row to gw_services, and its routes.
 * Start-up checks every row against the generated descriptors, so a typo fails fast
 * instead of answering 500s.
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#include "cairn/v1/auth.pb-c.h"
#include "cairn/v1/inference.pb-c.h"
#include "err.h"

#define MiB ((int64_t)1 << 20)

const struct gw_service gw_services[] = {
    {"auth", &cairn__v1__auth__descriptor, "CAIRN_AUTH_ADDR", "tcp://127.0.0.1:7101", 0},
    /* Batch predictions and version lists can be large: a bigger reply cap than the
     * default, still bounded so a broken replica cannot make the gateway buffer
     * without limit. */
    {"inference", &cairn__v1__inference__descriptor, "CAIRN_INFERENCE_ADDR", "tcp://127.0.0.1:7104", 64u << 20},
};
const size_t gw_nservices = sizeof gw_services / sizeof gw_services[0];

const char *const gw_scopes[] = {
    "models:read", "models:write", "predict", "jobs:read", "jobs:write",
    "features:read", "features:write", "costs:read", "admin",
};
const size_t gw_nscopes = sizeof gw_scopes / sizeof gw_scopes[0];

const struct gw_route gw_routes[] = {
    /* method  path                      service rpc       auth            scope  idem  timeout status
     * (then summary, flags, max_body) */
    {"POST", "/v1/auth/register",        "auth", "SignUp",  GW_AUTH_PUBLIC,  "", false, 0, 201,
     "Create a user account", 0, 0},
    {"POST", "/v1/auth/login",           "auth", "Login",   GW_AUTH_PUBLIC,  "", false, 0, 200,
     "Exchange email and password for an access and a refresh token", 0, 0},
    {"POST", "/v1/auth/refresh",         "auth", "Refresh", GW_AUTH_PUBLIC,  "", false, 0, 200,
     "Rotate a refresh token for a new token pair", 0, 0},
    {"POST", "/v1/auth/logout",          "auth", "Logout",  GW_AUTH_PUBLIC,  "", true,  0, 204,
     "Revoke the refresh token's whole family", 0, 0},
    {"GET",  "/v1/auth/me",              "auth", "Me",      GW_AUTH_USER,    "", true,  0, 200,
     "The caller: the signed-in user, or an API key's owner with the key's scopes", 0, 0},
    {"GET",  "/.well-known/jwks.json",   "auth", "GetJwks", GW_AUTH_PUBLIC,  "", true,  0, 200,
     "Public keys that verify access tokens (RFC 7517)", 0, 0},
    {"POST", "/v1/auth/api-keys",        "auth", "CreateApiKey", GW_AUTH_SESSION, "", false, 0, 201,
     "Create an API key; the secret is in this response only", 0, 0},
    {"GET",  "/v1/auth/api-keys",        "auth", "ListApiKeys",  GW_AUTH_USER, "", true, 0, 200,
     "The caller's API keys, without secrets", 0, 0},
    {"DELETE", "/v1/auth/api-keys/{id}", "auth", "RevokeApiKey", GW_AUTH_USER, "", true, 0, 204,
     "Revoke an API key; gateways drop it within seconds", 0, 0},
    {"POST", "/v1/auth/password",        "auth", "ChangePassword", GW_AUTH_SESSION, "", false, 0, 204,
     "Change the password; other sessions end", 0, 0},
    {"POST", "/v1/auth/logout-all",      "auth", "LogoutAll", GW_AUTH_SESSION, "", true, 0, 204,
     "End every session of the caller", 0, 0},
    {"GET",  "/v1/admin/users",          "auth", "ListUsers", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "Users, newest first, filtered by email", 0, 0},
    {"PATCH", "/v1/admin/users/{id}",    "auth", "UpdateUser", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "Change a user's role or disable it (revokes its sessions and keys at once)", 0, 0},
    {"GET",  "/v1/admin/audit",          "auth", "ListAudit", GW_AUTH_ADMIN, "admin", true, 0, 200,
     "The audit log, newest first", 0, 0},

    /* cairn-inference: the model registry. */
    {.method = "POST", .path = "/v1/models", .service = "inference", .rpc = "CreateModel",
     .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = false, .status = 201,
     .summary = "Create a model"},
    {.method = "GET", .path = "/v1/models", .service = "inference", .rpc = "ListModels",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .status = 200,
     .summary = "Models, by name"},
    {.method = "GET", .path = "/v1/models/{name}", .service = "inference", .rpc = "GetModel",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .status = 200,
     .summary = "A model with its latest version, aliases and experiment"},
    {.method = "PATCH", .path = "/v1/models/{name}", .service = "inference", .rpc = "UpdateModel",
     .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true, .status = 200,
     .summary = "Change a model's description or prediction-log sample rate"},
    /* The model file is the body, as uploaded: validated, converted and stored by the
     * service, which takes its time (a trial load in a child process). */
    {.method = "POST", .path = "/v1/models/{name}/versions", .service = "inference", .rpc = "UploadVersion",
     .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = false, .timeout_ms = 60000, .status = 201,
     .summary = "Upload an XGBoost model file as the next version", .flags = GW_ROUTE_RAW,
     .max_body = 32 * MiB},
    {.method = "GET", .path = "/v1/models/{name}/versions", .service = "inference", .rpc = "ListVersions",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .status = 200,
     .summary = "A model's versions, newest first"},
    {.method = "GET", .path = "/v1/models/{name}/versions/{version}", .service = "inference", .rpc = "GetVersion",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .status = 200,
     .summary = "One version (by number, alias or \"latest\") and its metadata"},
    {.method = "DELETE", .path = "/v1/models/{name}/versions/{version}", .service = "inference",
     .rpc = "DeleteVersion", .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true, .status = 204,
     .summary = "Delete a version no alias or experiment points at"},
    {.method = "PUT", .path = "/v1/models/{name}/versions/{version}/reference", .service = "inference",
     .rpc = "SetReference", .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true,
     .timeout_ms = 30000, .status = 200, .summary = "Set the reference sample drift is measured against",
     .flags = GW_ROUTE_RAW, .max_body = 16 * MiB},
    /* Moving an alias or an experiment loads the versions first (warm before traffic). */
    {.method = "PUT", .path = "/v1/models/{name}/aliases/{alias}", .service = "inference", .rpc = "SetAlias",
     .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true, .timeout_ms = 30000, .status = 200,
     .summary = "Point an alias at a version (atomically, once the version is loaded)"},
    {.method = "DELETE", .path = "/v1/models/{name}/aliases/{alias}", .service = "inference",
     .rpc = "DeleteAlias", .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true, .status = 204,
     .summary = "Remove an alias"},
    {.method = "PUT", .path = "/v1/models/{name}/experiment", .service = "inference", .rpc = "SetExperiment",
     .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true, .timeout_ms = 30000, .status = 200,
     .summary = "Start or change the model's experiment (A/B split, canary, shadow mirror)"},
    {.method = "GET", .path = "/v1/models/{name}/experiment", .service = "inference", .rpc = "GetExperiment",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .status = 200,
     .summary = "The model's running experiment"},
    {.method = "DELETE", .path = "/v1/models/{name}/experiment", .service = "inference",
     .rpc = "DeleteExperiment", .auth = GW_AUTH_USER, .scope = "models:write", .idempotent = true,
     .status = 204, .summary = "End the model's experiment"},

    /* cairn-inference: serving and outcomes. */
    {.method = "POST", .path = "/v1/models/{name}:predict", .service = "inference", .rpc = "Predict",
     .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Predict rows with the version the request, experiment or aliases choose",
     .flags = GW_ROUTE_RAW},
    {.method = "POST", .path = "/v1/models/{name}/feedback", .service = "inference", .rpc = "Feedback",
     .auth = GW_AUTH_USER, .scope = "predict", .idempotent = false, .status = 204,
     .summary = "Record the true label or a reward for a logged prediction"},
    {.method = "GET", .path = "/v1/models/{name}/stats", .service = "inference", .rpc = "GetStats",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .timeout_ms = 30000, .status = 200,
     .summary = "Per-variant requests, latency and outcome, with a significance test"},
    {.method = "GET", .path = "/v1/models/{name}/drift", .service = "inference", .rpc = "GetDrift",
     .auth = GW_AUTH_USER, .scope = "models:read", .idempotent = true, .timeout_ms = 30000, .status = 200,
     .summary = "Per-feature PSI of live inputs against the version's reference sample"},

    /* cairn-inference: the Open Inference Protocol v2 (KServe, Triton). Its probes are
     * public like every server's; its errors are {"error": "..."}. {version} is a
     * number or an alias. */
    {.method = "GET", .path = "/v2", .service = "inference", .rpc = "ServerMetadata",
     .auth = GW_AUTH_PUBLIC, .scope = "", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: server metadata", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/health/live", .service = "inference", .rpc = "ServerLive",
     .auth = GW_AUTH_PUBLIC, .scope = "", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: server liveness", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/health/ready", .service = "inference", .rpc = "ServerReady",
     .auth = GW_AUTH_PUBLIC, .scope = "", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: server readiness", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/models/{model}", .service = "inference", .rpc = "ModelMetadata",
     .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: model metadata", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/models/{model}/versions/{version}", .service = "inference",
     .rpc = "ModelMetadata", .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: model version metadata", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/models/{model}/ready", .service = "inference", .rpc = "ModelReady",
     .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: model readiness", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "GET", .path = "/v2/models/{model}/versions/{version}/ready", .service = "inference",
     .rpc = "ModelReady", .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: model version readiness", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "POST", .path = "/v2/models/{model}/infer", .service = "inference", .rpc = "Infer",
     .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: inference", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
    {.method = "POST", .path = "/v2/models/{model}/versions/{version}/infer", .service = "inference",
     .rpc = "Infer", .auth = GW_AUTH_USER, .scope = "predict", .idempotent = true, .status = 200,
     .summary = "Open Inference Protocol: inference with a given version", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
};
const size_t gw_nroutes = sizeof gw_routes / sizeof gw_routes[0];

const struct gw_service *gw_service_find(const char *name)
{
    for (size_t i = 0; i < gw_nservices; i++)
        if (strcmp(gw_services[i].name, name) == 0)
            return &gw_services[i];
    return NULL;
}

int gw_services_parse(const char *list, bool *need, char *err, size_t errlen)
{
    for (size_t i = 0; i < gw_nservices; i++)
        need[i] = false;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (e == p)
            break;
        size_t len = (size_t)(e - p);
        size_t i = 0;
        while (i < gw_nservices && !(strlen(gw_services[i].name) == len && memcmp(gw_services[i].name, p, len) == 0))
            i++;
        if (i == gw_nservices) {
            snprintf(err, errlen, "unknown service '%.*s'", (int)(len < 64 ? len : 64), p);
            return CN_EINVAL;
        }
        need[i] = true;
        p = e;
    }
    return CN_OK;
}

int64_t gw_routes_max_body(int64_t default_cap)
{
    int64_t cap = default_cap;
    for (size_t i = 0; i < gw_nroutes; i++)
        if (gw_routes[i].max_body > cap)
            cap = gw_routes[i].max_body;
    return cap;
}
