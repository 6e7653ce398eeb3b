/* proxy.c — one HTTP request through the gateway: request id, route match, authn,
 * body decoding (JSON or protobuf, or on a raw route the body bytes, Content-Type and
 * headers as they came) plus path and query parameters into the RPC's input message,
 * the upstream call, and the answer (JSON, protobuf, a RawResponse as is, or the error:
 * problem+json, or {"error"} on Open Inference Protocol routes), with one access-log
 * line and the request metrics. Everything per request lives in req->pool.
 *
 * A request goes through these steps, each calling the next or answering:
 *   gw_proxy_on_req   request id, probes, route match
 *   authenticate      credentials -> principal (may wait for auth to resolve an API key);
 *                     refused credentials, and an API key before it is resolved, first go
 *                     through the anonymous rate limits (rate_limit_then)
 *   step_rate_limit   the config's rate-limit policies (ratelimit.c; may wait for Redis)
 *   proceed           body and parameters decoded into the RPC's input, packed
 *   step_fault        fault injection when the config enables it (fault.c; may delay)
 *   step_call         the upstream call: deadline, instance choice, retries (upstream.c)
 * To add a per-request policy, add a step here and its own file for its state.
 */
#include "gateway.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "apikeys.h"
#include "cairn/v1/auth.pb-c.h"
#include "authn.h"
#include "config.h"
#include "credentials.h"
#include "err.h"
#include "fault.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "problem.h"
#include "ratelimit.h"
#include "retry.h"
#include "router.h"
#include "rpc.h"
#include "trace.h"
#include "util.h"

#define MAX_STATUS 600
/* An attempt needs at least this much time left to be worth starting (else 504). */
#define GW_MIN_ATTEMPT_MS 5
/* Instances a request remembers having tried (retries.max_attempts is at most 10). */
#define GW_MAX_TRIED 10

struct reqstate {
    h2o_req_t *req;
    char request_id[129];
    char remote[INET6_ADDRSTRLEN];
    const struct gw_route *route;
    size_t route_index;
    const ProtobufCMethodDescriptor *method;
    struct gw_match match;
    struct gw_principal principal;
    bool authenticated;
    struct cn_apikey key;            /* being resolved */
    struct gw_credential cred;       /* the API key to resolve once the anonymous limits allow */
    /* A refusal of the caller's credentials, sent once the anonymous limits have counted it. */
    int refuse_status;
    const char *refuse_challenge, *refuse_detail;
    void (*after_limit)(struct reqstate *st);  /* what a rate-limit decision that lets it go on runs */
    const char *held_policy, *held_limit;      /* headers of a quiet check (rate_limit_then) */
    unsigned revoke_epoch;           /* gw_apikeys_epoch() when the resolve was sent */
    struct gw_upcall *upcall;
    int64_t start_us, upstream_start_us, upstream_us;
    /* Set by proceed for the steps after it. */
    uint8_t *packed;                 /* the RPC's input message, packed */
    size_t packed_len;
    Cairn__V1__Principal principal_pb;
    char subject[128];
    int want_protobuf;
    /* Traffic policies. cfg is the policy file as it was when the request started. The
     * steps fill the rest; respond() and access_log() report them. */
    struct gw_config *cfg;           /* taken in gw_proxy_on_req, put in on_req_dispose */
    int64_t ratelimit_us;            /* spent waiting for the rate-limit decision (Redis) */
    const char *ratelimit;           /* rate-limit decision for the access log; NULL = none */
    int attempts;                    /* upstream attempts made for the route's RPC */
    char instance[96];               /* the instance the last attempt went to; "" = none */
    struct gw_trace trace;           /* the client's trace context, or a new one */
    char traceparent[GW_TRACEPARENT_LEN + 1];  /* sent to the service: our span's */
    struct gw_fault fault;           /* injected by step_fault */
    char fault_desc[40];             /* "delay=100ms", "abort=503", both, "" = none */
    struct gw_fault_timer fault_timer;
    int64_t fault_start_us, fault_us; /* the injected delay: when it began, how long */
    bool fault_capped;               /* the delay was cut to the time left: answer 504 */
    /* The upstream call's deadline and retries (step_call). */
    int64_t deadline_us;             /* start_us + budget_ms */
    int64_t budget_ms;
    bool client_budget;              /* X-Request-Timeout-Ms shortened the route's */
    bool retry_safe;                 /* idempotent route, or an Idempotency-Key */
    const struct gw_endpoint *tried[GW_MAX_TRIED];
    h2o_timeout_entry_t retry_timer; /* linked while waiting to retry */
};

static struct cn_metric *m_requests, *m_duration, *m_upstream, *m_inflight, *m_upstream_errors, *m_refused;
static struct cn_series **req_series;      /* [(nroutes + 1) * MAX_STATUS], lazily */
static struct cn_series **dur_series;      /* [nroutes + 1] */
static struct cn_series **up_series;       /* [nservices] */
static struct cn_series *inflight_series;

static void resilience_init(void);

void gw_proxy_init(void)
{
    gw_fault_init();
    m_requests = cn_metric_new(CN_METRIC_COUNTER, "cairn_http_requests_total",
                               "HTTP requests answered, by route template and status", "route,status", NULL, 0);
    m_duration = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_http_request_duration_seconds",
                               "Time from request to response, by route template", "route", NULL, 0);
    m_upstream = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_upstream_duration_seconds",
                               "Time an upstream RPC took, by service", "service", NULL, 0);
    m_inflight = cn_metric_new(CN_METRIC_GAUGE, "cairn_http_inflight", "Requests being handled", NULL, NULL, 0);
    m_upstream_errors = cn_metric_new(CN_METRIC_COUNTER, "cairn_upstream_errors_total",
                                      "Upstream calls that got no answer, by service and reason",
                                      "service,reason", NULL, 0);
    m_refused = cn_metric_new(CN_METRIC_COUNTER, "cairn_authn_refused_total",
                              "Credentials refused at the edge, by reason", "reason", NULL, 0);
    req_series = cn_calloc((gw_nroutes + 1) * MAX_STATUS, sizeof *req_series);
    dur_series = cn_calloc(gw_nroutes + 1, sizeof *dur_series);
    for (size_t i = 0; i <= gw_nroutes; i++)
        dur_series[i] = cn_metric_series(m_duration, (const char *[]){i < gw_nroutes ? gw_routes[i].path : "unmatched"});
    up_series = cn_calloc(gw_nservices, sizeof *up_series);
    for (size_t i = 0; i < gw_nservices; i++)
        up_series[i] = cn_metric_series(m_upstream, (const char *[]){gw_services[i].name});
    inflight_series = cn_metric_series(m_inflight, NULL);
    resilience_init();
}

static struct cn_series *request_series(size_t route, int status)
{
    if (status < 0 || status >= MAX_STATUS)
        status = 500;
    struct cn_series **slot = &req_series[route * MAX_STATUS + (size_t)status];
    struct cn_series *s = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (s == NULL) {
        char st[8];
        snprintf(st, sizeof st, "%d", status);
        s = cn_metric_series(m_requests, (const char *[]){route < gw_nroutes ? gw_routes[route].path : "unmatched", st});
        __atomic_store_n(slot, s, __ATOMIC_RELEASE);
    }
    return s;
}

/* ---- protobuf-c allocations from the request's pool ---- */

static void *pool_alloc(void *data, size_t size) { return h2o_mem_alloc_pool(data, size ? size : 1); }
static void pool_free(void *data, void *p) { (void)data; (void)p; }

/* ---- answering ---- */

/* A JSON string member, or "-" when v is NULL or empty. */
static void log_str(struct cn_buf *b, const char *name, const char *v)
{
    cn_buf_printf(b, ",\"%s\":", name);
    if (v == NULL || *v == '\0')
        v = "-";
    cn_buf_json_str(b, v, strlen(v));
}

/* One access-log line for st answered with status at now, plus the request metrics. */
static void access_log(struct reqstate *st, int status, size_t bytes, int64_t now)
{
    h2o_req_t *req = st->req;
    struct cn_buf b = {0};
    char ts[40];
    struct timespec tv;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &tv);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", tv.tv_nsec / 1000000);

    cn_buf_printf(&b, "{\"ts\":\"%s\",\"type\":\"access\",\"method\":", ts);
    cn_buf_json_str(&b, req->method.base, req->method.len < 16 ? req->method.len : 16);
    cn_buf_puts(&b, ",\"route\":");
    const char *route = st->route ? st->route->path : "-";
    cn_buf_json_str(&b, route, strlen(route));
    cn_buf_puts(&b, ",\"path\":");
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    cn_buf_json_str(&b, req->path.base, plen < 256 ? plen : 256);
    cn_buf_printf(&b, ",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f,\"upstream_ms\":%.3f,\"request_id\":",
                  status, bytes, (double)(now - st->start_us) / 1000.0, (double)st->upstream_us / 1000.0);
    cn_buf_json_str(&b, st->request_id, strlen(st->request_id));
    cn_buf_puts(&b, ",\"principal\":");
    cn_buf_json_str(&b, st->subject, strlen(st->subject));
    cn_buf_puts(&b, ",\"remote\":");
    cn_buf_json_str(&b, st->remote, strlen(st->remote));
    cn_buf_printf(&b, ",\"attempts\":%d", st->attempts);
    log_str(&b, "instance", st->instance);
    log_str(&b, "ratelimit", st->ratelimit);
    log_str(&b, "fault", st->fault_desc);
    log_str(&b, "trace_id", st->trace.trace_id);
    cn_buf_printf(&b, ",\"http\":\"%d.%d\"}", req->version >> 8, req->version & 0xff);
    cn_log_line(b.data, b.len);
    cn_buf_free(&b);

    size_t ri = st->route ? st->route_index : gw_nroutes;
    cn_series_add(request_series(ri, status), 1);
    cn_series_observe(dur_series[ri], (double)(now - st->start_us) / 1e6);
}

/* Server-Timing: where the request's time went, in ms. upstream is time waiting for
 * services (every attempt), ratelimit the wait for the rate-limit decision, fault an
 * injected delay; gw is the rest, the gateway's own work. The parts add up to the whole. */
static void server_timing(struct reqstate *st, int64_t now)
{
    h2o_req_t *req = st->req;
    int64_t gw = now - st->start_us - st->upstream_us - st->ratelimit_us - st->fault_us;
    char v[160];
    int n = snprintf(v, sizeof v, "gw;dur=%.3f, upstream;dur=%.3f", (double)(gw > 0 ? gw : 0) / 1000.0,
                     (double)st->upstream_us / 1000.0);
    if (st->ratelimit_us > 0)
        n += snprintf(v + n, sizeof v - (size_t)n, ", ratelimit;dur=%.3f", (double)st->ratelimit_us / 1000.0);
    if (st->fault_us > 0)
        n += snprintf(v + n, sizeof v - (size_t)n, ", fault;dur=%.3f", (double)st->fault_us / 1000.0);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("server-timing"), 0, NULL,
                          h2o_strdup(&req->pool, v, (size_t)n).base, (size_t)n);
}

static void respond(struct reqstate *st, int status, const char *ctype, const char *body, size_t len)
{
    h2o_req_t *req = st->req;
    int64_t now = cn_mono_us();
    server_timing(st, now);
    req->res.status = status;
    req->res.reason = gw_status_reason(status);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          st->request_id, strlen(st->request_id));
    if (status == 204) {
        len = 0;
    } else if (ctype) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    }
    req->res.content_length = len;
    access_log(st, status, len, now);
    h2o_send_inline(req, len ? body : "", len);
}

/* Appends the error document for st to b and returns its Content-Type: problem+json, or
 * the Open Inference Protocol's {"error"} on the routes whose clients expect that (the
 * same status either way; the request id is still in X-Request-Id). */
static const char *error_body(const struct reqstate *st, struct cn_buf *b, int status, const char *detail,
                              Cairn__V1__FieldError *const *errors, size_t nerrors)
{
    if (st->route && (st->route->flags & GW_ROUTE_OIP_ERRORS)) {
        gw_oip_error_body(b, status, detail, errors, nerrors);
        return "application/json";
    }
    gw_problem_body(b, status, detail, st->request_id, errors, nerrors);
    return "application/problem+json";
}

/* Every error answer goes through here. */
static void respond_problem(struct reqstate *st, int status, const char *detail,
                            Cairn__V1__FieldError *const *errors, size_t nerrors)
{
    struct cn_buf *b = &gw_self->scratch;
    cn_buf_reset(b);
    const char *ctype = error_body(st, b, status, detail, errors, nerrors);
    respond(st, status, ctype, b->data, b->len);
}

static void respond_field_error(struct reqstate *st, const char *field, const char *message)
{
    Cairn__V1__FieldError fe = CAIRN__V1__FIELD_ERROR__INIT;
    fe.field = (char *)field;
    fe.message = (char *)message;
    Cairn__V1__FieldError *v[1] = {&fe};
    respond_problem(st, 400, "invalid request", v, 1);
}

static void add_retry_after(h2o_req_t *req, uint32_t ms)
{
    char v[16];
    int n = snprintf(v, sizeof v, "%u", ms ? (ms + 999) / 1000 : 1);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                   h2o_strdup(&req->pool, v, (size_t)n).base, (size_t)n);
}

/* ---- the upstream answer ---- */

/* ---- deadlines and retries (retry.h), around the upstream answer ---- */

static struct cn_metric *m_retries, *m_budget_exhausted, *m_shed;
static struct gw_retry_budget *budgets;    /* [gw_nservices] */
/* One h2o timeout per wait duration, per loop thread (h2o 2.2.5's timeouts have a fixed
 * duration each), made on first use and kept for the thread's life. */
static __thread h2o_timeout_t *retry_timeouts;

/* The config's documented defaults, for a process where none was set (unit tests). */
static const struct gw_config fallback_cfg = {
    .retry_max_attempts = 3, .retry_base_ms = 25, .retry_cap_ms = 250, .retry_budget_percent = 20,
    .retry_budget_min_per_s = 3, .outlier_failures = 5, .outlier_base_s = 30, .outlier_max_s = 300,
    .outlier_max_percent = 50, .shed_max_outstanding = 256,
};

static void resilience_init(void)
{
    m_retries = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_retries_total",
                              "Upstream attempts retried, by service and reason", "service,reason", NULL, 0);
    m_budget_exhausted = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_retry_budget_exhausted_total",
                                       "Retries not made because the service's retry budget was spent", "service",
                                       NULL, 0);
    m_shed = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_shed_total",
                           "Requests answered 503 at once because every instance was saturated", "service", NULL, 0);
    budgets = cn_calloc(gw_nservices, sizeof *budgets);
    for (size_t i = 0; i < gw_nservices; i++)
        gw_budget_init(&budgets[i]);
}

/* The config st runs under: the one taken when it started, or the current one. */
static const struct gw_config *req_config(struct reqstate *st)
{
    if (st->cfg == NULL)
        st->cfg = gw_config_get();
    return st->cfg ? st->cfg : &fallback_cfg;
}

/* Sets st's deadline from the route's timeout, shortened by a valid X-Request-Timeout-Ms.
 * Answers 400 and returns -1 when the header is not a positive integer. */
static int deadline_init(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    int64_t route_ms = st->route->timeout_ms ? st->route->timeout_ms : gw_conf.upstream_timeout_ms;
    st->budget_ms = route_ms;
    st->client_budget = false;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-timeout-ms"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        int64_t ms = 0;
        bool ok = v.len > 0 && v.len <= 12;
        for (size_t k = 0; ok && k < v.len; k++) {
            ok = v.base[k] >= '0' && v.base[k] <= '9';
            ms = ms * 10 + (v.base[k] - '0');
        }
        if (!ok || ms <= 0) {
            respond_field_error(st, "X-Request-Timeout-Ms", "must be a positive integer (milliseconds)");
            return -1;
        }
        if (ms < route_ms) {
            st->budget_ms = ms;
            st->client_budget = true;
        }
    }
    st->deadline_us = st->start_us + st->budget_ms * 1000;
    return 0;
}

/* Which budget a 504 ran out of, for its detail. */
static const char *budget_name(const struct reqstate *st, char *buf, size_t len)
{
    if (st->client_budget)
        snprintf(buf, len, "the client's X-Request-Timeout-Ms of %lld ms", (long long)st->budget_ms);
    else
        snprintf(buf, len, "the route's %lld ms", (long long)st->budget_ms);
    return buf;
}

/* A 504 whose detail names the service (fmt's first %s) and the budget (its second). */
static void respond_deadline(struct reqstate *st, const char *service, const char *fmt)
{
    char budget[96], detail[192];
    snprintf(detail, sizeof detail, fmt, service, budget_name(st, budget, sizeof budget));
    respond_problem(st, 504, detail, NULL, 0);
}

static size_t service_index(const struct reqstate *st) { return (size_t)(st->match.service - gw_services); }

static struct gw_outlier_conf outlier_conf(const struct gw_config *cfg)
{
    return (struct gw_outlier_conf){cfg->outlier_failures, cfg->outlier_base_s, cfg->outlier_max_s,
                                    cfg->outlier_max_percent};
}

static void attempt_start(struct reqstate *st);

static void on_retry_timer(h2o_timeout_entry_t *entry)
{
    struct reqstate *st = H2O_STRUCT_FROM_MEMBER(struct reqstate, retry_timer, entry);
    attempt_start(st);
}

/* Waits wait_ms on this loop, then starts the next attempt. */
static void retry_later(struct reqstate *st, int64_t wait_ms, bool round_up)
{
    int64_t ms;
    int b = gw_delay_bucket(wait_ms, round_up, &ms);
    if (retry_timeouts == NULL)
        retry_timeouts = cn_calloc(GW_DELAY_BUCKETS, sizeof *retry_timeouts);
    h2o_timeout_t *t = &retry_timeouts[b];
    if (t->_link.next == NULL)
        h2o_timeout_init(gw_self->ctx.loop, t, (uint64_t)ms);
    st->retry_timer.cb = on_retry_timer;
    h2o_timeout_link(gw_self->ctx.loop, t, &st->retry_timer);
}

/* An attempt ended with a: schedules a retry and returns 1 when the rules, max_attempts,
 * the deadline and the service's budget all allow it; else returns 0 (the caller
 * answers with a's failure). */
static int retry_maybe(struct reqstate *st, const struct gw_attempt *a, uint32_t retry_after_ms)
{
    const struct gw_config *cfg = req_config(st);
    enum gw_retry_reason why = gw_retry_reason(a, st->retry_safe);
    if (why == GW_RETRY_NO || st->attempts >= cfg->retry_max_attempts || st->attempts >= GW_MAX_TRIED)
        return 0;
    uint64_t rnd;
    cn_random_bytes(&rnd, sizeof rnd);
    int64_t backoff = gw_backoff_ms(st->attempts - 1, cfg->retry_base_ms, cfg->retry_cap_ms, rnd);
    int64_t left = (st->deadline_us - cn_mono_us()) / 1000, wait;
    if (gw_retry_wait(backoff, retry_after_ms, left, GW_MIN_ATTEMPT_MS, &wait) != 0)
        return 0;
    size_t si = service_index(st);
    const char *service = st->route->service;
    if (!gw_budget_take(&budgets[si], cn_mono_ms(), cfg->retry_budget_percent, cfg->retry_budget_min_per_s)) {
        cn_series_add(cn_metric_series(m_budget_exhausted, (const char *[]){service}), 1);
        return 0;
    }
    cn_series_add(cn_metric_series(m_retries, (const char *[]){service, gw_retry_reason_name(why)}), 1);
    cn_log(CN_LOG_DEBUG, "GW-RETRY", st->request_id, "%s %s: attempt %d failed (%s); retrying in %lld ms", service,
           st->route->rpc, st->attempts, gw_retry_reason_name(why), (long long)wait);
    /* A service's retry_after is a minimum: round the timer up for it, down otherwise
     * (a backoff is random anyway, and down never passes the deadline). */
    retry_later(st, wait, retry_after_ms > 0 && wait == (int64_t)retry_after_ms && wait + 1 < left);
    return 1;
}

/* Bookkeeping when an upstream call of st ends. */
static void upcall_account(struct reqstate *st, const char *service)
{
    st->upcall = NULL;
    gw_self->inflight--;
    cn_series_add(inflight_series, -1);
    int64_t took = cn_mono_us() - st->upstream_start_us;
    st->upstream_us += took;
    const struct gw_service *svc = gw_service_find(service);
    cn_series_observe(up_series[svc - gw_services], (double)took / 1e6);
}

/* Answers a transport failure of c (timeout, lost or no connection). */
static void respond_transport(struct reqstate *st, struct gw_upcall *c, const char *service)
{
    const char *reason = c->rv == NNG_ETIMEDOUT                                 ? "timeout"
                         : c->rv == NNG_ECANCELED || c->rv == NNG_ECONNRESET ? "connection_lost"
                                                                             : "unavailable";
    cn_series_add(cn_metric_series(m_upstream_errors, (const char *[]){service, reason}), 1);
    char detail[160];
    if (c->rv == NNG_ETIMEDOUT) {
        if (st->deadline_us) {
            respond_deadline(st, service, "%s did not answer within %s");
            return;
        }
        snprintf(detail, sizeof detail, "%s did not answer in time", service);
        respond_problem(st, 504, detail, NULL, 0);
        return;
    }
    if (c->rv == NNG_ECANCELED || c->rv == NNG_ECONNRESET)
        snprintf(detail, sizeof detail, "lost the connection to %s", service);
    else
        snprintf(detail, sizeof detail, "%s is unavailable: %s", service, nng_strerror(c->rv));
    add_retry_after(st->req, 1000);
    respond_problem(st, 503, detail, NULL, 0);
}

/* Bookkeeping when an upstream call of st ends; answers a transport failure (timeout,
 * lost or no connection) and returns -1 then. For calls that are not retried (API key
 * resolution). */
static int upcall_finished(struct reqstate *st, struct gw_upcall *c, const char *service)
{
    upcall_account(st, service);
    if (c->rv == 0)
        return 0;
    gw_upcall_report(c, true, false, 0, NULL);
    respond_transport(st, c, service);
    return -1;
}

/* Answers a Result whose code is not OK. */
static void respond_result_error(struct reqstate *st, const Cairn__V1__Result *res, const char *service,
                                 const char *rpc)
{
    h2o_req_t *req = st->req;
    int status = gw_code_status(res->code);
    if (status == 429 || status == 503)
        add_retry_after(req, res->retry_after_ms);
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
    if (status >= 500)
        cn_log(CN_LOG_WARN, "GW-UPSTREAM-ERROR", st->request_id, "%s %s: %s %s", service, rpc,
               cn_code_name(res->code), res->message ? res->message : "");
    respond_problem(st, status, res->message, res->field_errors, res->n_field_errors);
}

/* A Content-Type a service may set: short printable ASCII, so it cannot split the
 * header block. */
static int sane_content_type(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n == 255 || s[n] < 0x20 || s[n] > 0x7e)
            return 0;
    return n > 0;
}

/* A header a service may add to a raw route's response: a lowercase token name that is
 * not one the gateway sets (framing, request id, timing, rate limits, authentication
 * challenges, Retry-After, Allow) or one of HTTP's hop-by-hop fields, and a value of
 * printable ASCII (so it cannot split the header block). */
static int sane_response_header(const char *name, const char *value)
{
    static const char *const owned[] = {
        "allow", "connection", "content-length", "content-type", "date", "keep-alive",
        "proxy-authenticate", "proxy-connection", "ratelimit", "ratelimit-policy", "retry-after",
        "server", "server-timing", "te", "trailer", "transfer-encoding", "upgrade",
        "www-authenticate", "x-request-id", NULL,
    };
    size_t n = 0;
    for (; name[n]; n++)
        if (n == 64 || !(islower((unsigned char)name[n]) || isdigit((unsigned char)name[n]) ||
                         strchr("!#$%&'*+-.^_`|~", name[n]) != NULL))
            return 0;
    for (const char *const *o = owned; n > 0 && *o; o++)
        if (strcmp(name, *o) == 0)
            return 0;
    for (size_t i = 0; value[i]; i++)
        if (i == 1024 || ((value[i] < 0x20 && value[i] != '\t') || value[i] > 0x7e))
            return 0;
    return n > 0;
}

/* Sends a raw route's RawResponse: its body as is, with its Content-Type and headers. */
static void respond_raw(struct reqstate *st, const Cairn__V1__Result *res, ProtobufCAllocator *alloc)
{
    Cairn__V1__RawResponse *rr = cairn__v1__raw_response__unpack(alloc, res->body.len, res->body.data);
    if (rr == NULL) {
        cn_log(CN_LOG_ERROR, "GW-BAD-REPLY", st->request_id, "%s sent a malformed RawResponse", st->route->service);
        respond_problem(st, 502, "the service sent a malformed reply", NULL, 0);
        return;
    }
    const char *ctype = "application/json";
    if (rr->content_type && rr->content_type[0]) {
        if (sane_content_type(rr->content_type))
            ctype = rr->content_type;
        else
            cn_log(CN_LOG_WARN, "GW-BAD-CONTENT-TYPE", st->request_id, "%s %s: unusable content_type, sent as %s",
                   st->route->service, st->route->rpc, ctype);
    }
    for (size_t i = 0; i < rr->n_headers; i++) {
        const Cairn__V1__Header *h = rr->headers[i];
        if (h == NULL || h->name == NULL || h->value == NULL || !sane_response_header(h->name, h->value)) {
            cn_log(CN_LOG_WARN, "GW-BAD-HEADER", st->request_id, "%s %s: response header %.64s dropped",
                   st->route->service, st->route->rpc, h && h->name ? h->name : "");
            continue;
        }
        /* Both strings live in req->pool (alloc), as long as the response. */
        h2o_add_header_by_str(&st->req->pool, &st->req->res.headers, h->name, strlen(h->name), 0, NULL, h->value,
                              strlen(h->value));
    }
    respond(st, st->route->status, ctype, (const char *)rr->body.data, rr->body.len);
}

static void on_upstream_done(struct gw_upcall *c)
{
    struct reqstate *st = c->data;
    h2o_req_t *req = st->req;
    const char *service = st->route->service;
    upcall_account(st, service);
    struct gw_outlier_conf oc = outlier_conf(req_config(st));
    if (c->rv != 0) {
        /* Not sent: no connection ever took the request (our own cancel when the last
         * connection dropped, or no pipe in time). */
        struct gw_attempt a = {.end = !c->sent ? GW_END_NOT_SENT
                                      : c->rv == NNG_ETIMEDOUT ? GW_END_TIMEOUT : GW_END_CONN_LOST};
        gw_upcall_report(c, gw_attempt_failed(&a, st->client_budget), false, 0, &oc);
        if (retry_maybe(st, &a, 0))
            return;
        respond_transport(st, c, service);
        return;
    }
    ProtobufCAllocator alloc = {pool_alloc, pool_free, &req->pool};
    Cairn__V1__Result *res = cn_rpc_result_decode(c->reply, &alloc);
    if (res == NULL) {
        gw_upcall_report(c, true, false, 0, &oc);
        cn_log(CN_LOG_ERROR, "GW-BAD-REPLY", st->request_id, "%s sent a malformed Result", service);
        respond_problem(st, 502, "the service sent a malformed reply", NULL, 0);
        return;
    }
    struct gw_attempt a = {.end = GW_END_RESULT, .code = res->code, .unprocessed = res->unprocessed};
    gw_upcall_report(c, gw_attempt_failed(&a, st->client_budget), true, res->load, &oc);
    if (res->code != CAIRN__V1__CODE__OK) {
        if (retry_maybe(st, &a, res->retry_after_ms))
            return;
        if (res->code == CAIRN__V1__CODE__DEADLINE_EXCEEDED) {
            respond_deadline(st, st->route->service, "%s did not finish within %s");
            return;
        }
        respond_result_error(st, res, service, st->route->rpc);
        return;
    }
    if (st->method->output == &cairn__v1__raw_response__descriptor) {
        respond_raw(st, res, &alloc);
        return;
    }
    if (st->want_protobuf) {
        respond(st, st->route->status, "application/x-protobuf", (const char *)res->body.data, res->body.len);
        return;
    }
    ProtobufCMessage *out = protobuf_c_message_unpack(st->method->output, &alloc, res->body.len, res->body.data);
    if (out == NULL) {
        cn_log(CN_LOG_ERROR, "GW-BAD-REPLY", st->request_id, "%s sent a malformed %s", st->route->service,
               st->method->output->name);
        respond_problem(st, 502, "the service sent a malformed reply", NULL, 0);
        return;
    }
    struct cn_buf *b = &gw_self->scratch;
    cn_buf_reset(b);
    cn_json_from_proto(out, b);
    respond(st, st->route->status, "application/json", b->data, b->len);
}

/* The request died (client gone, connection closed, or answered): drop the upstream
 * answer or the retry it waits for, and the config it held. */
static void on_req_dispose(void *p)
{
    struct reqstate *st = p;
    if (st->upcall) {
        gw_upcall_cancel(st->upcall);
        st->upcall = NULL;
        gw_self->inflight--;
        cn_series_add(inflight_series, -1);
    }
    if (h2o_timeout_is_linked(&st->retry_timer))
        h2o_timeout_unlink(&st->retry_timer);
    gw_fault_timer_stop(&st->fault_timer);
    gw_config_put(st->cfg);
    st->cfg = NULL;
}

/* ---- request decoding ---- */

static int header_value(h2o_req_t *req, const h2o_token_t *token, h2o_iovec_t *out)
{
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    if (i < 0)
        return 0;
    *out = req->headers.entries[i].value;
    return 1;
}

static int sane_request_id(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Media type without parameters, lowercased compare. */
static int media_is(h2o_iovec_t v, const char *type)
{
    size_t n = 0;
    while (n < v.len && v.base[n] != ';' && v.base[n] != ' ')
        n++;
    return h2o_lcstris(v.base, n, type, strlen(type));
}

static int media_is_json(h2o_iovec_t v)
{
    size_t n = 0;
    while (n < v.len && v.base[n] != ';' && v.base[n] != ' ')
        n++;
    if (h2o_lcstris(v.base, n, H2O_STRLIT("application/json")))
        return 1;
    return n > 5 && h2o_lcstris(v.base + n - 5, 5, H2O_STRLIT("+json"));
}

/* The Principal sent in the Call for st's authenticated caller (pool memory). */
static void principal_to_proto(struct reqstate *st, Cairn__V1__Principal *pr)
{
    h2o_mem_pool_t *pool = &st->req->pool;
    const struct gw_principal *p = &st->principal;
    pr->subject = h2o_strdup(pool, p->sub, SIZE_MAX).base;
    pr->role = h2o_strdup(pool, p->role, SIZE_MAX).base;
    pr->key_id = h2o_strdup(pool, p->key_id, SIZE_MAX).base;
    size_t ns = 0;
    for (const char *s = p->scope; *s;) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        ns++;
        while (*s && *s != ' ')
            s++;
    }
    if (ns == 0)
        return;
    pr->scopes = h2o_mem_alloc_pool(pool, ns * sizeof *pr->scopes);
    pr->n_scopes = 0;
    for (const char *s = p->scope; *s;) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != ' ')
            e++;
        pr->scopes[pr->n_scopes++] = h2o_strdup(pool, s, (size_t)(e - s)).base;
        s = e;
    }
}

/* Whom a rate-limit decision counts the request as: its caller; an anonymous caller (the
 * credentials were refused: the answer carries the headers); or an anonymous caller
 * before an API key is resolved, quietly (a good key is checked again as its owner, whose
 * headers are the ones to show). */
enum rl_as { RL_CALLER, RL_ANONYMOUS, RL_ANONYMOUS_QUIET };
static void rate_limit_then(struct reqstate *st, enum rl_as as, void (*then)(struct reqstate *));

static void send_refusal(struct reqstate *st)
{
    if (st->refuse_challenge)
        h2o_add_header(&st->req->pool, &st->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, st->refuse_challenge,
                       strlen(st->refuse_challenge));
    respond_problem(st, st->refuse_status, st->refuse_detail, NULL, 0);
}

/* Refuses the caller's credentials (401 with challenge, or 400), after counting the
 * request against the anonymous rate limits of its client address: credentials the edge
 * cannot vouch for are an anonymous caller's, so replaying bad tokens or guessing keys is
 * throttled (429) like any other anonymous traffic instead of being free. */
static void refuse_credentials(struct reqstate *st, int status, const char *challenge, const char *detail)
{
    st->refuse_status = status;
    st->refuse_challenge = challenge;
    st->refuse_detail = h2o_strdup(&st->req->pool, detail, SIZE_MAX).base;
    rate_limit_then(st, RL_ANONYMOUS, send_refusal);
}

static void respond_unauthenticated(struct reqstate *st, const char *challenge, const char *detail)
{
    refuse_credentials(st, 401, challenge, detail);
}

static void step_rate_limit(struct reqstate *st);
static void proceed(struct reqstate *st);
static void step_fault(struct reqstate *st);
static void step_call(struct reqstate *st);

/* The caller is known: check the route's role, session and scope rules, then go on. */
static void authorized_then_proceed(struct reqstate *st)
{
    char why[128];
    snprintf(st->subject, sizeof st->subject, "%s", st->principal.sub);
    st->authenticated = true;
    if (gw_authorize(st->route, &st->principal, why, sizeof why) != 0) {
        respond_problem(st, 403, why, NULL, 0);
        return;
    }
    step_rate_limit(st);
}

/* ResolveApiKey answered (or not). */
static void on_key_resolved(struct gw_upcall *c)
{
    struct reqstate *st = c->data;
    if (upcall_finished(st, c, "auth") != 0)
        return;
    ProtobufCAllocator alloc = {pool_alloc, pool_free, &st->req->pool};
    Cairn__V1__Result *res = cn_rpc_result_decode(c->reply, &alloc);
    if (res == NULL) {
        respond_problem(st, 502, "the auth service sent a malformed reply", NULL, 0);
        return;
    }
    if (res->code == CAIRN__V1__CODE__UNAUTHENTICATED) {
        cn_series_add(cn_metric_series(m_refused, (const char *[]){"refused_api_key"}), 1);
        /* Counted against the anonymous limits before the lookup: answer at once, with
         * that check's headers (held back in case the key was good). */
        gw_ratelimit_set_headers(st->req, st->held_policy, st->held_limit);
        st->refuse_status = 401;
        st->refuse_challenge = "Bearer error=\"invalid_token\"";
        st->refuse_detail = "invalid API key";
        send_refusal(st);
        return;
    }
    if (res->code != CAIRN__V1__CODE__OK) {
        respond_result_error(st, res, "auth", "ResolveApiKey");
        return;
    }
    Cairn__V1__ResolvedApiKey *k = (Cairn__V1__ResolvedApiKey *)protobuf_c_message_unpack(
        &cairn__v1__resolved_api_key__descriptor, &alloc, res->body.len, res->body.data);
    if (k == NULL) {
        respond_problem(st, 502, "the auth service sent a malformed reply", NULL, 0);
        return;
    }
    struct gw_principal *p = &st->principal;
    memset(p, 0, sizeof *p);
    snprintf(p->sub, sizeof p->sub, "%s", k->subject);
    snprintf(p->role, sizeof p->role, "%s", k->role);
    snprintf(p->key_id, sizeof p->key_id, "%s", k->key_id);
    size_t off = 0;
    for (size_t i = 0; i < k->n_scopes; i++) {
        int n = snprintf(p->scope + off, sizeof p->scope - off, "%s%s", off ? " " : "", k->scopes[i]);
        if (n < 0 || (size_t)n >= sizeof p->scope - off)
            break;
        off += (size_t)n;
    }
    p->exp = k->expires_at / 1000;
    gw_apikeys_store(&st->key, p, st->revoke_epoch);
    authorized_then_proceed(st);
}

/* Asks auth who st->cred (an API key not in the cache) stands for, within the request's
 * deadline and with its trace; answers on failure. */
static void resolve_key(struct reqstate *st)
{
    const struct gw_credential *cred = &st->cred;
    int64_t left = (st->deadline_us - cn_mono_us()) / 1000;
    if (left < GW_MIN_ATTEMPT_MS) {
        respond_deadline(st, "auth", "no time left to ask %s about the API key within %s");
        return;
    }
    st->key = cred->key;
    st->revoke_epoch = gw_apikeys_epoch();
    Cairn__V1__ResolveApiKeyRequest rq = CAIRN__V1__RESOLVE_API_KEY_REQUEST__INIT;
    rq.key = h2o_strdup(&st->req->pool, cred->token, cred->len).base;
    size_t n = protobuf_c_message_get_packed_size(&rq.base);
    uint8_t *packed = h2o_mem_alloc_pool(&st->req->pool, n ? n : 1);
    protobuf_c_message_pack(&rq.base, packed);
    nng_msg *msg;
    cn_rpc_call_encode_traced("ResolveApiKey", st->request_id, (uint32_t)left, NULL, st->remote, st->traceparent,
                              packed, n, &msg);
    size_t si = (size_t)(gw_service_find("auth") - gw_services);
    st->upstream_start_us = cn_mono_us();
    if (gw_upstream_call(gw_upstreams[si], msg, (int)left, &gw_self->upstream_rx, on_key_resolved, st,
                         &st->upcall) != CN_OK) {
        nng_msg_free(msg);
        add_retry_after(st->req, 1000);
        respond_problem(st, 503, "no auth instance is reachable to check the API key", NULL, 0);
        return;
    }
    gw_self->inflight++;
    cn_series_add(inflight_series, 1);
}

/* Works out who the caller is for a non-public route, then authorises and proceeds
 * (at once, or when auth has resolved an API key); answers on any refusal. */
static void authenticate(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    h2o_iovec_t a = {NULL, 0}, k = {NULL, 0};
    int has_a = header_value(req, H2O_TOKEN_AUTHORIZATION, &a);
    ssize_t ki = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1);
    if (ki >= 0)
        k = req->headers.entries[ki].value;
    struct gw_credential cred;
    gw_credential_parse(has_a ? a.base : NULL, a.len, ki >= 0 ? k.base : NULL, k.len, &cred);
    const char *why = "invalid token";
    switch (cred.kind) {
    case GW_CRED_NONE:
        respond_unauthenticated(st, "Bearer",
                                "this route needs credentials: send Authorization: Bearer <token or API key>");
        return;
    case GW_CRED_MALFORMED:
        refuse_credentials(st, 400, "Bearer error=\"invalid_request\"", cred.why);
        return;
    case GW_CRED_BADKEY:
        cn_series_add(cn_metric_series(m_refused, (const char *[]){"bad_api_key"}), 1);
        respond_unauthenticated(st, "Bearer error=\"invalid_token\"", cred.why);
        return;
    case GW_CRED_APIKEY:
        if (gw_apikeys_lookup(&cred.key, &st->principal)) {
            authorized_then_proceed(st);
            return;
        }
        /* Not seen lately: one anonymous request's worth of the address's limits pays for
         * the lookup, so unknown keys cannot make auth work for free. */
        st->cred = cred;
        rate_limit_then(st, RL_ANONYMOUS_QUIET, resolve_key);
        return;
    case GW_CRED_JWT:
        break;
    }
    if (gw_authn_verify(cred.token, cred.len, &st->principal, &why) != CN_OK) {
        cn_series_add(cn_metric_series(m_refused, (const char *[]){"bad_token"}), 1);
        char detail[160];
        snprintf(detail, sizeof detail, "the access token was refused: %s", why);
        respond_unauthenticated(st, "Bearer error=\"invalid_token\"", detail);
        return;
    }
    if (gw_user_revoked(st->principal.sub, st->principal.iat)) {
        cn_series_add(cn_metric_series(m_refused, (const char *[]){"revoked_user"}), 1);
        respond_unauthenticated(st, "Bearer error=\"invalid_token\"", "the access token was refused: revoked");
        return;
    }
    authorized_then_proceed(st);
}

/* Sets path parameters, then query parameters, on msg. Answers and returns -1 on error. */
static int apply_params(struct reqstate *st, const struct gw_match *m, ProtobufCMessage *msg, ProtobufCAllocator *alloc)
{
    h2o_req_t *req = st->req;
    struct cn_json_error err;
    for (size_t i = 0; i < m->nparams; i++) {
        const struct gw_param *p = &m->params[i];
        char *name = h2o_strdup(&req->pool, p->name, p->name_len).base;
        char *val = h2o_mem_alloc_pool(&req->pool, p->value_len + 1);
        long n = gw_url_decode(p->value, p->value_len, val, 0);
        if (n < 0) {
            respond_field_error(st, name, "bad percent-encoding in the path");
            return -1;
        }
        if (cn_json_set_field(msg, name, val, (size_t)n, alloc, &err) != CN_OK) {
            respond_field_error(st, name, err.message);
            return -1;
        }
    }
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if (ke > q) {
            char *key = h2o_mem_alloc_pool(&req->pool, (size_t)(ke - q) + 1);
            const char *vs = eq ? eq + 1 : pe;
            char *val = h2o_mem_alloc_pool(&req->pool, (size_t)(pe - vs) + 1);
            long kn = gw_url_decode(q, (size_t)(ke - q), key, 1);
            long vn = gw_url_decode(vs, (size_t)(pe - vs), val, 1);
            if (kn < 0 || vn < 0) {
                respond_field_error(st, kn < 0 ? "query" : key, "bad percent-encoding in the query string");
                return -1;
            }
            for (size_t i = 0; i < m->nparams; i++) {
                if (m->params[i].name_len == (size_t)kn && memcmp(m->params[i].name, key, (size_t)kn) == 0) {
                    respond_field_error(st, key, "is a path parameter; it cannot also be given in the query");
                    return -1;
                }
            }
            /* A raw route's own fields come from the request itself, never the query. */
            int rv = (st->route->flags & GW_ROUTE_RAW) && gw_raw_field(key)
                         ? CN_ENOTFOUND
                         : cn_json_set_field(msg, key, val, (size_t)vn, alloc, &err);
            if (rv == CN_ENOTFOUND) {
                respond_field_error(st, key, "unknown query parameter");
                return -1;
            }
            if (rv != CN_OK) {
                respond_field_error(st, key, err.message);
                return -1;
            }
        }
        q = pe + 1;
    }
    return 0;
}

/* Marks field f of msg as set, where protobuf-c keeps presence (proto2 has_, oneof case). */
static void field_present(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)((char *)msg + f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
        *(protobuf_c_boolean *)((char *)msg + f->quantifier_offset) = 1;
}

/* Whether a request header may travel to a service: credentials stay at the edge. */
static int header_forwarded(const h2o_iovec_t *name)
{
    static const char *const secret[] = {"authorization", "proxy-authorization", "cookie", "x-api-key"};
    for (size_t i = 0; i < CN_ARRAY_LEN(secret); i++)
        if (h2o_lcstris(name->base, name->len, secret[i], strlen(secret[i])))
            return 0;
    return 1;
}

/* Fills a raw route's input msg with the body bytes (borrowed from the request, which
 * outlives the call), the Content-Type and the request headers, each only if the
 * message has the field (router.c checked their types at start-up). Headers: names
 * lowercased, credentials left out, at most GW_RAW_MAX_HEADERS, a name or value longer
 * than GW_RAW_MAX_HEADER_VALUE skipped. */
static void raw_input(struct reqstate *st, ProtobufCMessage *msg, size_t body_len, const h2o_iovec_t *ctype)
{
    h2o_req_t *req = st->req;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "body");
    ProtobufCBinaryData *bd = (ProtobufCBinaryData *)((char *)msg + f->offset);
    bd->data = (uint8_t *)(body_len ? req->entity.base : NULL);
    bd->len = body_len;
    field_present(msg, f);

    f = protobuf_c_message_descriptor_get_field_by_name(d, "content_type");
    if (f && ctype) {
        *(char **)((char *)msg + f->offset) = h2o_strdup(&req->pool, ctype->base, ctype->len).base;
        field_present(msg, f);
    }

    f = protobuf_c_message_descriptor_get_field_by_name(d, "headers");
    if (f == NULL)
        return;
    size_t n = 0;
    Cairn__V1__Header **v = h2o_mem_alloc_pool(&req->pool, GW_RAW_MAX_HEADERS * sizeof *v);
    for (size_t i = 0; i < req->headers.size && n < GW_RAW_MAX_HEADERS; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h->name->len == 0 || h->name->len > GW_RAW_MAX_HEADER_VALUE || h->value.len > GW_RAW_MAX_HEADER_VALUE ||
            !header_forwarded(h->name))
            continue;
        Cairn__V1__Header *hd = h2o_mem_alloc_pool(&req->pool, sizeof *hd);
        cairn__v1__header__init(hd);
        hd->name = h2o_strdup(&req->pool, h->name->base, h->name->len).base;
        h2o_strtolower(hd->name, h->name->len);
        hd->value = h2o_strdup(&req->pool, h->value.base, h->value.len).base;
        v[n++] = hd;
    }
    *(size_t *)((char *)msg + f->quantifier_offset) = n;
    *(Cairn__V1__Header ***)((char *)msg + f->offset) = v;
}

/* Whether every service named in CAIRN_READY_SERVICES has a connected instance. Only
 * those: a gateway in front of auth alone must not wait for an inference service it will
 * never see. Routes of the others answer 503 on their own while none of their instances
 * is connected. */
static int services_ready(char *why, size_t whylen)
{
    for (size_t i = 0; i < gw_nservices; i++) {
        if (gw_ready_need[i] && gw_upstream_connected(gw_upstreams[i]) == 0) {
            snprintf(why, whylen, "no %s instance connected", gw_services[i].name);
            return 0;
        }
    }
    return 1;
}

int gw_ready(char *why, size_t whylen)
{
    if (atomic_load(&gw_stopping)) {
        snprintf(why, whylen, "shutting down");
        return 0;
    }
    if (!gw_authn_ready()) {
        snprintf(why, whylen, "signing keys not loaded from auth yet");
        return 0;
    }
    return services_ready(why, whylen);
}

/* The trace context: the client's valid traceparent or a new trace; our own span id
 * for the hop to the service (trace.h). */
static void request_trace(struct reqstate *st)
{
    ssize_t i = h2o_find_header_by_str(&st->req->headers, H2O_STRLIT("traceparent"), -1);
    if (i < 0 || gw_trace_parse(st->req->headers.entries[i].value.base, st->req->headers.entries[i].value.len,
                                &st->trace) != 0)
        gw_trace_new(&st->trace);
    char span[17];
    gw_trace_span_new(span);
    gw_trace_format(st->trace.trace_id, span, st->trace.flags, st->traceparent);
}

int gw_proxy_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    struct reqstate *st = h2o_mem_alloc_shared(&req->pool, sizeof *st, on_req_dispose);
    memset(st, 0, sizeof *st);
    st->req = req;
    st->start_us = cn_mono_us();

    ssize_t hi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (hi >= 0 && sane_request_id(req->headers.entries[hi].value.base, req->headers.entries[hi].value.len)) {
        h2o_iovec_t v = req->headers.entries[hi].value;
        memcpy(st->request_id, v.base, v.len);
        st->request_id[v.len] = '\0';
    } else {
        cn_request_id_new(st->request_id);
    }
    request_trace(st);
    /* The client's address: the peer's, or behind trusted proxies the X-Forwarded-For
     * hop they vouch for, the same one the rate limits key on. It goes to the access log
     * and to services in each Call (auth's login throttle counts per address). */
    st->cfg = gw_config_get();
    gw_ratelimit_client_ip(req, req_config(st), st->remote, sizeof st->remote);

    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *path = req->path.base;

    /* The gateway's own probes on the main port. */
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        if (h2o_memis(path, plen, H2O_STRLIT("/healthz"))) {
            respond(st, 200, "application/json", H2O_STRLIT("{\"status\":\"ok\"}"));
            return 0;
        }
        if (h2o_memis(path, plen, H2O_STRLIT("/readyz"))) {
            char why[128];
            if (gw_ready(why, sizeof why)) {
                respond(st, 200, "application/json", H2O_STRLIT("{\"status\":\"ready\"}"));
            } else {
                add_retry_after(req, 1000); /* like every other 503 (the OpenAPI promise) */
                respond_problem(st, 503, why, NULL, 0);
            }
            return 0;
        }
    }

    struct gw_match m;
    char allow[64];
    switch (gw_router_match(req->method.base, req->method.len, path, plen, &m, allow, sizeof allow)) {
    case GW_ROUTE_NOT_FOUND:
        respond_problem(st, 404, "no route for this path", NULL, 0);
        return 0;
    case GW_ROUTE_BAD_METHOD:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       h2o_strdup(&req->pool, allow, SIZE_MAX).base, strlen(allow));
        respond_problem(st, 405, "this path does not accept that method", NULL, 0);
        return 0;
    case GW_ROUTE_FOUND:
        break;
    }
    st->route = m.route;
    st->route_index = m.index;
    st->method = m.method;
    st->match = m;
    if (deadline_init(st) != 0)
        return 0;
    if (m.route->auth == GW_AUTH_PUBLIC)
        step_rate_limit(st);
    else
        authenticate(st);
    return 0;
}

/* ---- the steps after authentication ---- */

/* The rate-limit decision came (at once, or from Redis on this loop): refuse or go on. */
static void on_rate_limited(void *data, const struct gw_rl_result *res)
{
    struct reqstate *st = data;
    /* Two decisions (an API key's anonymous pre-check, then its owner's): the log keeps
     * the later one unless the earlier was more than "allowed". */
    if (res->outcome && (st->ratelimit == NULL || strcmp(st->ratelimit, "allowed") == 0))
        st->ratelimit = res->outcome;
    st->ratelimit_us += res->waited_us;
    st->held_policy = res->policy_header;
    st->held_limit = res->limit_header;
    if (res->status) {
        add_retry_after(st->req, (uint32_t)(res->retry_after_ms > 0 ? res->retry_after_ms : 1));
        respond_problem(st, res->status, res->detail, NULL, 0);
        return;
    }
    st->after_limit(st);
}

/* Rate limits: the request's policies decide (ratelimit.c), then `then` runs. The
 * decision may wait for Redis; a request disposed meanwhile is forgotten by ratelimit.c.
 * as: whom it counts the request as (enum rl_as). */
static void rate_limit_then(struct reqstate *st, enum rl_as as, void (*then)(struct reqstate *))
{
    const struct gw_config *c = st->cfg;
    if (c == NULL || c->npolicies == 0) {
        then(st);
        return;
    }
    bool who = st->authenticated && as == RL_CALLER;
    struct gw_rl_caller caller = {
        .authenticated = who,
        .subject = who ? st->principal.sub : "",
        .role = who ? st->principal.role : "",
        .key_id = who ? st->principal.key_id : "",
        .quiet = as == RL_ANONYMOUS_QUIET,
    };
    st->after_limit = then;
    gw_ratelimit_check(st->req, c, st->route_index, &caller, st->request_id, on_rate_limited, st);
}

static void step_rate_limit(struct reqstate *st) { rate_limit_then(st, RL_CALLER, proceed); }

/* Decodes the body and parameters into the RPC's input (st->packed), then step_fault. */
static void proceed(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    const struct gw_match m = st->match;
    Cairn__V1__Principal *principal = &st->principal_pb;
    cairn__v1__principal__init(principal);
    if (st->authenticated)
        principal_to_proto(st, principal);

    /* The body: JSON (transcoded), protobuf (passed through) or, on a raw route, bytes. */
    ProtobufCAllocator alloc = {pool_alloc, pool_free, &req->pool};
    h2o_iovec_t ctype = {NULL, 0};
    int have_ctype = header_value(req, H2O_TOKEN_CONTENT_TYPE, &ctype);
    int raw = (m.route->flags & GW_ROUTE_RAW) != 0;
    h2o_iovec_t accept;
    st->want_protobuf =
        !raw && ((have_ctype && media_is(ctype, "application/x-protobuf")) ||
                 (header_value(req, H2O_TOKEN_ACCEPT, &accept) &&
                  h2o_strstr(accept.base, accept.len, H2O_STRLIT("application/x-protobuf")) != SIZE_MAX));
    size_t body_len = req->entity.base ? req->entity.len : 0;
    int64_t max_body = m.route->max_body ? m.route->max_body : gw_conf.max_body;
    if ((int64_t)body_len > max_body) {
        char detail[96];
        snprintf(detail, sizeof detail, "the body is larger than %lld bytes", (long long)max_body);
        respond_problem(st, 413, detail, NULL, 0);
        return;
    }
    ProtobufCMessage *input = NULL;
    if (raw) {
        input = h2o_mem_alloc_pool(&req->pool, m.method->input->sizeof_message);
        protobuf_c_message_init(m.method->input, input);
        raw_input(st, input, body_len, have_ctype ? &ctype : NULL);
    } else if (body_len && have_ctype && media_is(ctype, "application/x-protobuf")) {
        input = protobuf_c_message_unpack(m.method->input, &alloc, body_len, (const uint8_t *)req->entity.base);
        if (input == NULL) {
            respond_problem(st, 400, "the body is not a valid protobuf message of this route's request type", NULL, 0);
            return;
        }
    } else if (body_len && have_ctype && !media_is_json(ctype)) {
        respond_problem(st, 415, "send the body as application/json or application/x-protobuf", NULL, 0);
        return;
    } else {
        struct cn_json_error err;
        if (cn_json_to_proto(req->entity.base, body_len, m.method->input, &alloc, &input, &err) != CN_OK) {
            if (err.field[0]) {
                respond_field_error(st, err.field, err.message);
            } else {
                char detail[320];
                snprintf(detail, sizeof detail, "the body is not valid JSON: %s", err.message);
                respond_problem(st, 400, detail, NULL, 0);
            }
            return;
        }
    }
    if (apply_params(st, &m, input, &alloc) != 0)
        return;

    size_t n = protobuf_c_message_get_packed_size(input);
    st->packed = h2o_mem_alloc_pool(&req->pool, n ? n : 1);
    protobuf_c_message_pack(input, st->packed);
    st->packed_len = n;
    step_fault(st);
}

/* Milliseconds left before st's deadline (deadline_init). */
static int64_t time_left_ms(const struct reqstate *st) { return (st->deadline_us - cn_mono_us()) / 1000; }

/* After an injected delay (if any): the injected abort, or the call. */
static void fault_abort_or_call(struct reqstate *st)
{
    int status = st->fault.abort_status;
    if (status == 0) {
        step_call(st);
        return;
    }
    gw_fault_count(st->route->path, "abort");
    if (status == 429 || status == 503)
        add_retry_after(st->req, 1000);
    respond_problem(st, status, "fault injected", NULL, 0);
}

static void on_fault_delay_done(struct gw_fault_timer *t)
{
    struct reqstate *st = (struct reqstate *)((char *)t - offsetof(struct reqstate, fault_timer));
    st->fault_us = cn_mono_us() - st->fault_start_us;
    if (st->fault_capped) {
        respond_deadline(st, st->route->service, "an injected fault delay before calling %s used all of %s");
        return;
    }
    fault_abort_or_call(st);
}

/* Fault injection (fault.c), when the config enables it: a delay waits on the loop,
 * capped at the time left (then 504, as a slow service would give); an abort answers
 * its status. Then step_call. */
static void step_fault(struct reqstate *st)
{
    const struct gw_config *c = st->cfg;
    if (c == NULL || !c->faults_enabled) {
        step_call(st);
        return;
    }
    h2o_req_t *req = st->req;
    const char *hv[2] = {NULL, NULL};
    size_t hl[2] = {0, 0};
    if (c->fault_headers) {
        static const char *const names[2] = {"x-fault-delay-ms", "x-fault-abort"};
        for (int k = 0; k < 2; k++) {
            ssize_t i = h2o_find_header_by_str(&req->headers, names[k], strlen(names[k]), -1);
            if (i >= 0) {
                hv[k] = req->headers.entries[i].value.base;
                hl[k] = req->headers.entries[i].value.len;
            }
        }
    }
    const char *bad = NULL;
    if (gw_fault_decide(c, gw_config_route_group(c, st->route_index), hv[0], hl[0], hv[1], hl[1], &st->fault,
                        &bad) != 0) {
        respond_field_error(st, bad,
                            strcmp(bad, "X-Fault-Abort") == 0 ? "must be an HTTP status from 400 to 599"
                                                              : "must be milliseconds from 0 to 600000");
        return;
    }
    int n = 0;
    if (st->fault.delay_ms > 0)
        n = snprintf(st->fault_desc, sizeof st->fault_desc, "delay=%dms", st->fault.delay_ms);
    if (st->fault.abort_status > 0)
        snprintf(st->fault_desc + n, sizeof st->fault_desc - (size_t)n, "%sabort=%d", n ? "," : "",
                 st->fault.abort_status);
    if (st->fault.delay_ms <= 0) {
        fault_abort_or_call(st);
        return;
    }
    gw_fault_count(st->route->path, "delay");
    int64_t ms = st->fault.delay_ms, left = time_left_ms(st);
    if (ms >= left) {
        ms = left > 0 ? left : 0;
        st->fault_capped = true;
    }
    st->fault_start_us = cn_mono_us();
    gw_fault_timer_start(&st->fault_timer, gw_self->ctx.loop, ms, on_fault_delay_done);
}

/* Calls the service with st->packed, retrying as retry.h allows, and answers from
 * on_upstream_done. */
static void step_call(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    st->retry_safe = st->route->idempotent ||
                     h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), -1) >= 0;
    gw_budget_request(&budgets[service_index(st)], cn_mono_ms());
    attempt_start(st);
}

/* Starts one attempt with the time left, on an instance not tried yet when there is one;
 * answers when none can start (no time: 504; saturated: 503 now; no instance: 503 unless
 * a retry is allowed). */
static void attempt_start(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    const struct gw_match m = st->match;
    const struct gw_config *cfg = req_config(st);
    const Cairn__V1__Principal *principal = &st->principal_pb;
    /* The call carries the time left, so time spent before (authentication, a rate-limit
     * decision, earlier attempts) counts. */
    int64_t left = (st->deadline_us - cn_mono_us()) / 1000;
    if (left < GW_MIN_ATTEMPT_MS) {
        respond_deadline(st, st->route->service,
                         st->attempts ? "no time left to retry %s within %s" : "no time left to call %s within %s");
        return;
    }
    nng_msg *call;
    cn_rpc_call_encode_traced(m.route->rpc, st->request_id, (uint32_t)left, principal->subject ? principal : NULL,
                              st->remote, st->traceparent, st->packed, st->packed_len, &call);

    size_t si = service_index(st);
    struct gw_pick pick = {.exclude = st->tried, .nexclude = st->attempts < GW_MAX_TRIED ? st->attempts : GW_MAX_TRIED,
                           .max_outstanding = cfg->shed_max_outstanding};
    st->upstream_start_us = cn_mono_us();
    st->attempts++;
    int rv = gw_upstream_call_ex(gw_upstreams[si], call, (int)left, &gw_self->upstream_rx, on_upstream_done, st,
                                 &pick, &st->upcall);
    if (rv == CN_OK) {
        if (st->attempts <= GW_MAX_TRIED)
            st->tried[st->attempts - 1] = st->upcall->ep;
        snprintf(st->instance, sizeof st->instance, "%s", gw_upcall_instance(st->upcall));
        gw_self->inflight++;
        cn_series_add(inflight_series, 1);
        return;
    }
    nng_msg_free(call);
    char detail[128];
    if (rv == CN_EFULL) {
        cn_series_add(cn_metric_series(m_shed, (const char *[]){m.route->service}), 1);
        snprintf(detail, sizeof detail, "every %s instance is saturated: try again shortly", m.route->service);
        add_retry_after(req, 1000);
        respond_problem(st, 503, detail, NULL, 0);
        return;
    }
    struct gw_attempt a = {.end = GW_END_NO_INSTANCE};
    if (retry_maybe(st, &a, 0))
        return;
    cn_series_add(cn_metric_series(m_upstream_errors, (const char *[]){m.route->service, "no_instance"}), 1);
    snprintf(detail, sizeof detail, "no %s instance is reachable", m.route->service);
    add_retry_after(req, 1000);
    respond_problem(st, 503, detail, NULL, 0);
}
