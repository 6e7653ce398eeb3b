/* main.c — cairn-gateway: settings (one table), start-up checks, and the server.
 *
 *   cairn-gateway            serve (settings from CAIRN_* environment variables)
 *   cairn-gateway --help     list the settings
 *   cairn-gateway --routes   print the route table as JSON (docs/openapi.yaml is checked
 *                            against it)
 *   cairn-gateway --check-config FILE   validate a policy file as start-up and SIGHUP do
 * Start-up fails (exit 2) on an invalid setting, an invalid policy file
 * (CAIRN_GATEWAY_CONFIG, config.h; the message says FILE:LINE: key: what is wrong) or a
 * route that does not fit the service descriptors. SIGHUP re-reads the policy file.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "apikeys.h"
#include "authn.h"
#include "buf.h"
#include "conf.h"
#include "config.h"
#include "cpus.h"
#include "err.h"
#include "gateway.h"
#include "log.h"
#include "ratelimit.h"
#include "router.h"
#include "util.h"

struct gw_conf gw_conf;
struct gw_upstream **gw_upstreams;
bool *gw_ready_need;

static const struct cn_conf_def conf_defs[] = {
    CN_CONF(struct gw_conf, host, "CAIRN_HTTP_HOST", CN_CONF_STR, "127.0.0.1", 0, 0,
            "address to serve HTTP on"),
    CN_CONF(struct gw_conf, port, "CAIRN_HTTP_PORT", CN_CONF_INT, "8080", 1, 65535, "HTTP port"),
    CN_CONF(struct gw_conf, admin, "CAIRN_GATEWAY_ADMIN", CN_CONF_STR, "127.0.0.1:9100", 0, 0,
            "admin host:port (/healthz, /readyz, /metrics)"),
    CN_CONF(struct gw_conf, threads, "CAIRN_THREADS", CN_CONF_INT, "0", 0, 256,
            "event-loop threads (0 = one per CPU it may run on)"),
    CN_CONF(struct gw_conf, cpus, "CAIRN_CPUS", CN_CONF_STR, "", 0, 0,
            "CPUs every thread runs on, as taskset -c writes them (\"0\", \"2-3\"); default: all the "
            "process may use"),
    CN_CONF(struct gw_conf, max_body, "CAIRN_MAX_BODY_BYTES", CN_CONF_INT, "1048576", 1024, 1073741824,
            "largest request body accepted (413 above)"),
    CN_CONF(struct gw_conf, tls_cert, "CAIRN_TLS_CERT", CN_CONF_STR, "", 0, 0,
            "PEM certificate chain; with CAIRN_TLS_KEY serves HTTPS (HTTP/2 via ALPN)"),
    CN_CONF(struct gw_conf, tls_key, "CAIRN_TLS_KEY", CN_CONF_STR, "", 0, 0, "PEM private key for CAIRN_TLS_CERT"),
    CN_CONF(struct gw_conf, jwt_iss, "CAIRN_JWT_ISSUER", CN_CONF_STR, "cairn", 0, 0,
            "required iss of access tokens"),
    CN_CONF(struct gw_conf, jwt_aud, "CAIRN_JWT_AUDIENCE", CN_CONF_STR, "cairn-api", 0, 0,
            "required aud of access tokens"),
    CN_CONF(struct gw_conf, upstream_timeout_ms, "CAIRN_UPSTREAM_TIMEOUT_MS", CN_CONF_INT, "5000", 10, 600000,
            "default route timeout (504 after it)"),
    CN_CONF(struct gw_conf, jwks_refresh_s, "CAIRN_JWKS_REFRESH_S", CN_CONF_INT, "60", 1, 86400,
            "how often the JWKS is fetched from auth"),
    CN_CONF(struct gw_conf, drain_ms, "CAIRN_DRAIN_MS", CN_CONF_INT, "10000", 0, 600000,
            "on SIGTERM, how long to wait for requests in flight"),
    CN_CONF(struct gw_conf, resolve_s, "CAIRN_RESOLVE_S", CN_CONF_INT, "5", 1, 3600,
            "how often service host names are re-resolved to their instances"),
    CN_CONF(struct gw_conf, auth_events, "CAIRN_AUTH_EVENTS_ADDR", CN_CONF_STR, "tcp://127.0.0.1:7201", 0, 0,
            "auth revocation events (nng PUB), comma-separated, one per auth instance; \"\" = none"),
    CN_CONF(struct gw_conf, apikey_cache_ms, "CAIRN_APIKEY_CACHE_MS", CN_CONF_INT, "10000", 0, 600000,
            "how long a resolved API key is trusted without asking auth again"),
    CN_CONF(struct gw_conf, revoke_hold_s, "CAIRN_REVOKE_HOLD_S", CN_CONF_INT, "3600", 60, 86400,
            "how long a disabled user's older access tokens stay refused (>= token lifetime)"),
    CN_CONF(struct gw_conf, log_level, "CAIRN_LOG_LEVEL", CN_CONF_STR, "info", 0, 0, "debug|info|warn|error"),
    CN_CONF(struct gw_conf, ready_services, "CAIRN_READY_SERVICES", CN_CONF_STR, "auth", 0, 0,
            "services /readyz needs a connected instance of, comma-separated (the signing keys "
            "from auth are always needed); routes of other services answer 503 while none is up"),
    CN_CONF(struct gw_conf, config_path, "CAIRN_GATEWAY_CONFIG", CN_CONF_STR, "", 0, 0,
            "policy file (YAML: rate limits, retries, outlier ejection, shedding, faults; see "
            "docs/operations.md); \"\" = built-in defaults, no rate limits; SIGHUP reloads it"),
    CN_CONF(struct gw_conf, redis_addr, "CAIRN_REDIS_ADDR", CN_CONF_STR, "127.0.0.1:6379", 0, 0,
            "Redis host:port that rate limits are counted in (shared by every gateway replica)"),
};

static void print_routes(void)
{
    static const char *const auth_names[] = {"public", "user", "session", "admin"};
    struct cn_buf b = {0};
    cn_buf_puts(&b, "[");
    for (size_t i = 0; i < gw_nroutes; i++) {
        const struct gw_route *r = &gw_routes[i];
        cn_buf_puts(&b, i ? ",\n {\"method\":" : "{\"method\":");
        cn_buf_json_str(&b, r->method, strlen(r->method));
        cn_buf_puts(&b, ",\"path\":");
        cn_buf_json_str(&b, r->path, strlen(r->path));
        cn_buf_puts(&b, ",\"service\":");
        cn_buf_json_str(&b, r->service, strlen(r->service));
        cn_buf_puts(&b, ",\"rpc\":");
        cn_buf_json_str(&b, r->rpc, strlen(r->rpc));
        cn_buf_printf(&b, ",\"auth\":\"%s\",\"scope\":\"%s\",\"idempotent\":%s,\"status\":%d,",
                      auth_names[r->auth], r->scope, r->idempotent ? "true" : "false", r->status);
        cn_buf_printf(&b, "\"timeout_ms\":%d,\"max_body\":%lld,\"raw\":%s,\"oip_errors\":%s,\"summary\":",
                      r->timeout_ms, (long long)r->max_body, (r->flags & GW_ROUTE_RAW) ? "true" : "false",
                      (r->flags & GW_ROUTE_OIP_ERRORS) ? "true" : "false");
        cn_buf_json_str(&b, r->summary, strlen(r->summary));
        cn_buf_puts(&b, "}");
    }
    cn_buf_puts(&b, "]\n");
    fwrite(b.data, 1, b.len, stdout);
    cn_buf_free(&b);
}

/* Re-resolves every service's instances periodically (see upstream.h). */
static void *resolver_main(void *arg)
{
    (void)arg;
    for (;;) {
        for (int64_t i = 0; i < gw_conf.resolve_s * 10 && !atomic_load(&gw_stopping); i++)
            usleep(100 * 1000);
        if (atomic_load(&gw_stopping))
            return NULL;
        for (size_t k = 0; k < gw_nservices; k++)
            gw_upstream_refresh(gw_upstreams[k]);
    }
}

static int admin_ready(void *arg, char *why, size_t whylen)
{
    (void)arg;
    return gw_ready(why, whylen);
}

int main(int argc, char **argv)
{
    char err[256];
    cn_log_init("gateway", CN_LOG_INFO);
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        cn_conf_help(stdout, "cairn-gateway", conf_defs, CN_ARRAY_LEN(conf_defs));
        printf("\nService addresses (comma-separated nng addresses, one per instance):\n");
        for (size_t i = 0; i < gw_nservices; i++)
            printf("  %-28s default %s\n", gw_services[i].addr_env, gw_services[i].addr_default);
        printf("\nOther commands:\n  cairn-gateway --routes               the route table as JSON\n"
               "  cairn-gateway --check-config FILE    validate a policy file (exit 0, or 1 with FILE:LINE: why)\n");
        return 0;
    }
    if (gw_router_init(err, sizeof err) != CN_OK) {
        fprintf(stderr, "cairn-gateway: bad route table: %s\n", err);
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "--routes") == 0) {
        print_routes();
        return 0;
    }
    /* Validates a policy file the way start-up and SIGHUP would (route groups against this
     * binary's routes), like `nginx -t`: for CI, a deploy pipeline, or before kill -HUP. */
    if (argc > 1 && strcmp(argv[1], "--check-config") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: cairn-gateway --check-config FILE\n");
            return 2;
        }
        struct gw_config *c;
        char cerr[512];
        if (gw_config_load(argv[2], &c, cerr, sizeof cerr) != CN_OK) {
            fprintf(stderr, "cairn-gateway: %s\n", cerr);
            return 1;
        }
        printf("%s: ok (%zu route groups, %zu rate-limit policies, faults %s)\n", argv[2], c->ngroups, c->npolicies,
               c->faults_enabled ? "enabled" : "off");
        gw_config_put(c);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "cairn-gateway: unknown argument '%s' (try --help)\n", argv[1]);
        return 2;
    }
    if (cn_conf_load(conf_defs, CN_ARRAY_LEN(conf_defs), &gw_conf, err, sizeof err) != CN_OK) {
        fprintf(stderr, "cairn-gateway: %s\n", err);
        return 2;
    }
    enum cn_log_level lvl;
    if (cn_log_level_parse(gw_conf.log_level, &lvl) != CN_OK) {
        fprintf(stderr, "cairn-gateway: CAIRN_LOG_LEVEL: expected debug, info, warn or error\n");
        return 2;
    }
    cn_log_init("gateway", lvl);
    /* Before any thread starts (nng's, the loops', the JWKS refresher): they inherit it. */
    if (cn_cpus_apply(gw_conf.cpus, err, sizeof err) != CN_OK) {
        fprintf(stderr, "cairn-gateway: CAIRN_CPUS: %s\n", err);
        return 2;
    }
    if (gw_conf.threads == 0)
        gw_conf.threads = cn_cpu_count();
    cn_conf_dump("cairn-gateway", conf_defs, CN_ARRAY_LEN(conf_defs), &gw_conf);
    if (gw_ratelimit_init(gw_conf.redis_addr) != CN_OK) {
        fprintf(stderr, "cairn-gateway: CAIRN_REDIS_ADDR: expected host:port, got '%s'\n", gw_conf.redis_addr);
        return 2;
    }
    struct gw_config *policies;
    char cerr[512];
    if (gw_config_load(gw_conf.config_path, &policies, cerr, sizeof cerr) != CN_OK) {
        cn_log(CN_LOG_ERROR, "GW-CONFIG-INVALID", NULL, "CAIRN_GATEWAY_CONFIG: %s", cerr);
        fprintf(stderr, "cairn-gateway: CAIRN_GATEWAY_CONFIG: %s\n", cerr);
        return 2;
    }
    cn_log(CN_LOG_INFO, "GW-CONFIG-LOADED", NULL, "%s: %zu route groups, %zu rate-limit policies, faults %s",
           policies->path[0] ? policies->path : "(built-in defaults)", policies->ngroups, policies->npolicies,
           policies->faults_enabled ? "enabled" : "off");
    gw_config_set(policies);
    /* Threads started from here on inherit this: a SIGHUP during start-up waits for the
     * server's sigwait (and reloads) instead of killing the process. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);

    gw_ready_need = cn_calloc(gw_nservices, sizeof *gw_ready_need);
    if (gw_services_parse(gw_conf.ready_services, gw_ready_need, err, sizeof err) != CN_OK) {
        fprintf(stderr, "cairn-gateway: CAIRN_READY_SERVICES: %s\n", err);
        return 2;
    }
    gw_upstreams = cn_calloc(gw_nservices, sizeof *gw_upstreams);
    const char *auth_addr = NULL;
    for (size_t i = 0; i < gw_nservices; i++) {
        const char *addr = getenv(gw_services[i].addr_env);
        if (addr == NULL || *addr == '\0')
            addr = gw_services[i].addr_default;
        gw_upstreams[i] = gw_upstream_new(gw_services[i].name, addr, gw_services[i].max_msg);
        if (gw_upstreams[i] == NULL) {
            fprintf(stderr, "cairn-gateway: %s: invalid address list '%s'\n", gw_services[i].addr_env, addr);
            return 2;
        }
        if (strcmp(gw_services[i].name, "auth") == 0)
            auth_addr = addr;
    }
    gw_proxy_init();

    struct gw_authn_conf ac = {
        .auth_addr = auth_addr,
        .iss = gw_conf.jwt_iss,
        .aud = gw_conf.jwt_aud,
        .refresh_s = gw_conf.jwks_refresh_s,
        .leeway_s = 30,
    };
    if (gw_authn_start(&ac) != CN_OK) {
        fprintf(stderr, "cairn-gateway: cannot start token verification (CAIRN_AUTH_ADDR)\n");
        return 2;
    }
    if (gw_apikeys_start(gw_conf.auth_events, gw_conf.apikey_cache_ms, gw_conf.revoke_hold_s) != CN_OK) {
        fprintf(stderr, "cairn-gateway: CAIRN_AUTH_EVENTS_ADDR: invalid address list '%s'\n", gw_conf.auth_events);
        return 2;
    }
    struct cn_admin *admin = NULL;
    if (cn_admin_start(&admin, gw_conf.admin, admin_ready, NULL) != CN_OK) {
        fprintf(stderr, "cairn-gateway: cannot serve admin port on %s\n", gw_conf.admin);
        return 2;
    }
    pthread_t resolver;
    pthread_create(&resolver, NULL, resolver_main, NULL);
    int rc = gw_server_run();
    atomic_store(&gw_stopping, 1);    /* also when the server failed to start */
    pthread_join(resolver, NULL);
    cn_admin_stop(admin);
    gw_authn_stop();
    gw_apikeys_stop();
    return rc;
}
