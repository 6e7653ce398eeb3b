/* proxy.c — one HTTP request through the gateway: request id, route match, authn,
 * body decoding (JSON or protobuf, or on a raw route the body bytes, Content-Type and
 * headers as they came) plus path and query parameters into the RPC's input message,
 * the upstream call, and the answer (JSON, protobuf, a RawResponse as is, or the error:
 * problem+json, or {"error"} on Open Inference Protocol routes), with one access-log
 * line and the request metrics. Everything per request lives in req->pool.
 *
 * To add a per-request policy (rate limit, retry, ...), add a step in gw_proxy_on_req
 * before the upstream call, and its own file for its state.
 */
#include "gateway.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "apikeys.h"
#include "cairn/v1/auth.pb-c.h"
#include "authn.h"
#include "credentials.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "problem.h"
#include "router.h"
#include "rpc.h"
#include "util.h"

#define MAX_STATUS 600

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
    unsigned revoke_epoch;           /* gw_apikeys_epoch() when the resolve was sent */
    struct gw_upcall *upcall;
    int64_t start_us, upstream_start_us, upstream_us;
    char subject[128];
    int want_protobuf;
};

static struct cn_metric *m_requests, *m_duration, *m_upstream, *m_inflight, *m_upstream_errors, *m_refused;
static struct cn_series **req_series;      /* [(nroutes + 1) * MAX_STATUS], lazily */
static struct cn_series **dur_series;      /* [nroutes + 1] */
static struct cn_series **up_series;       /* [nservices] */
static struct cn_series *inflight_series;

void gw_proxy_init(void)
{
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

static void access_log(struct reqstate *st, int status, size_t bytes)
{
    h2o_req_t *req = st->req;
    int64_t now = cn_mono_us();
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
    cn_buf_printf(&b, ",\"http\":\"%d.%d\"}", req->version >> 8, req->version & 0xff);
    cn_log_line(b.data, b.len);
    cn_buf_free(&b);

    size_t ri = st->route ? st->route_index : gw_nroutes;
    cn_series_add(request_series(ri, status), 1);
    cn_series_observe(dur_series[ri], (double)(now - st->start_us) / 1e6);
}

static void respond(struct reqstate *st, int status, const char *ctype, const char *body, size_t len)
{
    h2o_req_t *req = st->req;
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
    access_log(st, status, len);
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

/* Bookkeeping when an upstream call of st ends; answers a transport failure (timeout,
 * lost or no connection) and returns -1 then. */
static int upcall_finished(struct reqstate *st, struct gw_upcall *c, const char *service)
{
    h2o_req_t *req = st->req;
    st->upcall = NULL;
    gw_self->inflight--;
    cn_series_add(inflight_series, -1);
    int64_t took = cn_mono_us() - st->upstream_start_us;
    st->upstream_us += took;
    const struct gw_service *svc = gw_service_find(service);
    cn_series_observe(up_series[svc - gw_services], (double)took / 1e6);
    if (c->rv == 0)
        return 0;
    {
        const char *reason = c->rv == NNG_ETIMEDOUT ? "timeout"
                             : c->rv == NNG_ECANCELED ? "connection_lost" : "unavailable";
        cn_series_add(cn_metric_series(m_upstream_errors, (const char *[]){service, reason}), 1);
        char detail[160];
        if (c->rv == NNG_ETIMEDOUT) {
            snprintf(detail, sizeof detail, "%s did not answer in time", service);
            respond_problem(st, 504, detail, NULL, 0);
        } else {
            if (c->rv == NNG_ECANCELED)
                snprintf(detail, sizeof detail, "lost the connection to %s", service);
            else
                snprintf(detail, sizeof detail, "%s is unavailable: %s", service, nng_strerror(c->rv));
            add_retry_after(req, 1000);
            respond_problem(st, 503, detail, NULL, 0);
        }
        return -1;
    }
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

/* Sends a raw route's RawResponse: its body as is, with its Content-Type. */
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
    respond(st, st->route->status, ctype, (const char *)rr->body.data, rr->body.len);
}

static void on_upstream_done(struct gw_upcall *c)
{
    struct reqstate *st = c->data;
    h2o_req_t *req = st->req;
    if (upcall_finished(st, c, st->route->service) != 0)
        return;
    ProtobufCAllocator alloc = {pool_alloc, pool_free, &req->pool};
    Cairn__V1__Result *res = cn_rpc_result_decode(c->reply, &alloc);
    if (res == NULL) {
        cn_log(CN_LOG_ERROR, "GW-BAD-REPLY", st->request_id, "%s sent a malformed Result", st->route->service);
        respond_problem(st, 502, "the service sent a malformed reply", NULL, 0);
        return;
    }
    if (res->code != CAIRN__V1__CODE__OK) {
        respond_result_error(st, res, st->route->service, st->route->rpc);
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

/* The request died (client gone, connection closed): drop the upstream answer. */
static void on_req_dispose(void *p)
{
    struct reqstate *st = p;
    if (st->upcall) {
        gw_upcall_cancel(st->upcall);
        st->upcall = NULL;
        gw_self->inflight--;
        cn_series_add(inflight_series, -1);
    }
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

static void respond_unauthenticated(struct reqstate *st, const char *challenge, const char *detail)
{
    h2o_add_header(&st->req->pool, &st->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, challenge,
                   strlen(challenge));
    respond_problem(st, 401, detail, NULL, 0);
}

static void proceed(struct reqstate *st);

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
    proceed(st);
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
        respond_unauthenticated(st, "Bearer error=\"invalid_token\"", "invalid API key");
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

/* Asks auth who an API key stands for; answers on failure. */
static void resolve_key(struct reqstate *st, const struct gw_credential *cred)
{
    st->key = cred->key;
    st->revoke_epoch = gw_apikeys_epoch();
    Cairn__V1__ResolveApiKeyRequest rq = CAIRN__V1__RESOLVE_API_KEY_REQUEST__INIT;
    rq.key = h2o_strdup(&st->req->pool, cred->token, cred->len).base;
    nng_msg *msg;
    cn_rpc_call_encode("ResolveApiKey", st->request_id, (uint32_t)gw_conf.upstream_timeout_ms, NULL, st->remote,
                       &rq.base, &msg);
    size_t si = (size_t)(gw_service_find("auth") - gw_services);
    st->upstream_start_us = cn_mono_us();
    if (gw_upstream_call(gw_upstreams[si], msg, (int)gw_conf.upstream_timeout_ms, &gw_self->upstream_rx,
                         on_key_resolved, st, &st->upcall) != CN_OK) {
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
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_request\""));
        respond_problem(st, 400, cred.why, NULL, 0);
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
        resolve_key(st, &cred);
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
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, st->remote, sizeof st->remote);
    else if (sl && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, st->remote, sizeof st->remote);

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
    if (m.route->auth == GW_AUTH_PUBLIC)
        proceed(st);
    else
        authenticate(st);
    return 0;
}

/* Decodes the body and parameters into the RPC's input and calls the service. */
static void proceed(struct reqstate *st)
{
    h2o_req_t *req = st->req;
    const struct gw_match m = st->match;
    Cairn__V1__Principal principal = CAIRN__V1__PRINCIPAL__INIT;
    if (st->authenticated)
        principal_to_proto(st, &principal);

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
    uint8_t *packed = h2o_mem_alloc_pool(&req->pool, n ? n : 1);
    protobuf_c_message_pack(input, packed);
    /* The call carries the time left, so time spent resolving an API key counts. */
    int64_t timeout = m.route->timeout_ms ? m.route->timeout_ms : gw_conf.upstream_timeout_ms;
    timeout -= (cn_mono_us() - st->start_us) / 1000;
    if (timeout < 1) {
        respond_problem(st, 504, "the route's time ran out before the call", NULL, 0);
        return;
    }
    nng_msg *call;
    cn_rpc_call_encode_raw(m.route->rpc, st->request_id, (uint32_t)timeout,
                           principal.subject ? &principal : NULL, st->remote, packed, n, &call);

    size_t si = (size_t)(m.service - gw_services);
    st->upstream_start_us = cn_mono_us();
    if (gw_upstream_call(gw_upstreams[si], call, (int)timeout, &gw_self->upstream_rx, on_upstream_done, st,
                         &st->upcall) != CN_OK) {
        nng_msg_free(call);
        cn_series_add(cn_metric_series(m_upstream_errors, (const char *[]){m.route->service, "no_instance"}), 1);
        char detail[128];
        snprintf(detail, sizeof detail, "no %s instance is reachable", m.route->service);
        add_retry_after(req, 1000);
        respond_problem(st, 503, detail, NULL, 0);
        return;
    }
    gw_self->inflight++;
    cn_series_add(inflight_series, 1);
    return;
}
