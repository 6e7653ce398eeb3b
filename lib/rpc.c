/* rpc.c — Call/Result over nng REQ/REP: the server (intake contexts, a bounded queue,
 * worker threads, dispatch through the protoc-c service descriptor) and the blocking
 * client. See rpc.h for the contract.
 *
 * Server shape: `nintake` nng contexts each wait for a request. A received request goes
 * on the queue if fewer than workers+queue calls are accepted, otherwise the intake
 * answers RESOURCE_EXHAUSTED itself without waking a worker. There are more intakes than
 * workers+queue, so even a saturated server keeps answering (shedding) at once instead
 * of letting requests sit unseen in nng's buffers until their deadline. A worker pops
 * an intake, runs the call, and starts the reply send on the intake's aio; the send
 * completion re-arms the receive.
 *
 * Inline calls: a call of a method the service lists in `inline_methods`, no larger than
 * `inline_max`, runs on the nng thread that received it when a worker slot is free and
 * nothing is queued, instead of being handed to a worker thread. On a VM each hand-off
 * between threads costs a wake-up of ~10 µs and more in latency; a single-row predict
 * measured 8.4 context switches per call handed off and 5.9 run inline. The handler
 * still gets a worker's state (a "slot": its arena, its Postgres handle), so the
 * number of calls running at once stays `workers`. nng has few threads for all of its
 * I/O (two per core), so at most one per core runs a call inline, and never while a
 * fault is set (an injected delay would sleep nng's thread).
 *
 * To add a per-call behaviour (e.g. tracing), touch handle_call(); to add a server
 * metric, register it in metrics_init().
 */
#include "rpc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "arena.h"
#include "cpus.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define NCODES 17
#define SHED_INTAKES 8

enum intake_state { INTAKE_RECV, INTAKE_QUEUED, INTAKE_SEND };

struct intake {
    struct cn_rpc_server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    enum intake_state state;
    nng_msg *msg;           /* received request while queued */
    int64_t recv_ms;
    int64_t recv_us;
    struct intake *next;    /* queue link */
};

/* What a running call borrows: a worker's state and arena. Slot i is made and finished
 * by worker thread i, but while free it may be lent to any thread that runs a call. */
struct slot {
    int index;
    void *state;
    struct cn_arena *arena;
    struct slot *next_free;
};

struct worker {
    struct cn_rpc_server *srv;
    pthread_t thread;
    struct slot slot;
};

struct cn_rpc_server {
    struct cn_rpc_server_opts opts;
    nng_socket sock;
    struct intake *intakes;
    int nintake;
    struct worker *workers;
    struct slot *free_slots;  /* under mtx */
    int inline_running, inline_cap;
    pthread_mutex_t mtx;
    pthread_cond_t work_cv;   /* queue non-empty or exiting */
    pthread_cond_t idle_cv;   /* a call finished (for drain) */
    struct intake *qhead, *qtail;
    int qlen, running;
    bool stopping;            /* refuse new calls */
    bool exiting;             /* workers leave */
    atomic_uint load;
    atomic_int sending;       /* replies handed to nng and not yet completed */
    /* metrics, looked up once */
    unsigned nmethods;
    struct cn_series **calls;     /* [nmethods][NCODES], filled lazily under mtx */
    struct cn_series **durations; /* [nmethods] */
    struct cn_series *shed, *expired, *inflight, *malformed;
};

static struct cn_metric *m_calls, *m_duration, *m_shed, *m_expired, *m_inflight, *m_malformed, *m_faults;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    m_calls = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_calls_total",
                            "RPC calls handled, by method and result code", "method,code", NULL, 0);
    m_duration = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_rpc_duration_seconds",
                               "Time to handle an RPC, queueing included", "method", NULL, 0);
    m_shed = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_shed_total",
                           "Calls answered RESOURCE_EXHAUSTED because the queue was full", NULL, NULL, 0);
    m_expired = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_deadline_exceeded_total",
                              "Calls dropped unstarted because their deadline had passed", NULL, NULL, 0);
    m_inflight = cn_metric_new(CN_METRIC_GAUGE, "cairn_rpc_inflight",
                               "Calls queued or running", NULL, NULL, 0);
    m_faults = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_faults_injected_total",
                             "Faults injected before the handler (admin port PUT /faults), by method and kind",
                             "method,kind", NULL, 0);
    m_malformed = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_malformed_total",
                                "Messages that were not a valid Call", NULL, NULL, 0);
}

static const char *const code_names[NCODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *cn_code_name(Cairn__V1__Code code)
{
    if ((unsigned)code < NCODES)
        return code_names[code];
    return "UNKNOWN";
}

int cn_code_parse(const char *name, Cairn__V1__Code *out)
{
    for (unsigned i = 0; name && i < NCODES; i++) {
        if (strcmp(name, code_names[i]) == 0) {
            *out = (Cairn__V1__Code)i;
            return CN_OK;
        }
    }
    return CN_EINVAL;
}

/* ---- fault injection (rpc.h) ---- */

static pthread_mutex_t faults_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cn_rpc_faults faults;      /* under faults_mu */
static atomic_bool faults_on;            /* any fault set: the only cost on the hot path */

void cn_rpc_faults_set(const struct cn_rpc_faults *f)
{
    pthread_mutex_lock(&faults_mu);
    if (f)
        faults = *f;
    else
        memset(&faults, 0, sizeof faults);
    if (faults.nmethods > CN_RPC_FAULT_MAX_METHODS)
        faults.nmethods = CN_RPC_FAULT_MAX_METHODS;
    atomic_store(&faults_on, (faults.delay_ms > 0 && faults.delay_percent > 0) ||
                                 (faults.abort_code != CAIRN__V1__CODE__OK && faults.abort_percent > 0));
    pthread_mutex_unlock(&faults_mu);
}

void cn_rpc_faults_get(struct cn_rpc_faults *out)
{
    pthread_mutex_lock(&faults_mu);
    *out = faults;
    pthread_mutex_unlock(&faults_mu);
}

/* Applies the process's faults to call c before its handler: may sleep (up to the
 * deadline) and may fail c. Returns 1 when c is answered (not to be handled), else 0. */
static int apply_faults(struct cn_call *c, bool *unprocessed)
{
    if (!atomic_load_explicit(&faults_on, memory_order_relaxed))
        return 0;
    struct cn_rpc_faults f;
    cn_rpc_faults_get(&f);
    if (f.nmethods) {
        size_t i = 0;
        while (i < f.nmethods && strcmp(f.methods[i], c->method->name) != 0)
            i++;
        if (i == f.nmethods)
            return 0;
    }
    if (f.delay_ms > 0 && cn_fast_unit() * 100.0 < f.delay_percent) {
        cn_series_add(cn_metric_series(m_faults, (const char *[]){c->method->name, "delay"}), 1);
        int64_t ms = f.delay_ms, left = cn_call_time_left(c);
        if (left < ms)
            ms = left > 0 ? left : 0;
        nng_msleep((nng_duration)ms);
        if (cn_call_time_left(c) <= 0) {
            cn_call_fail(c, CAIRN__V1__CODE__DEADLINE_EXCEEDED, "deadline exceeded during an injected delay");
            return 1;
        }
    }
    if (f.abort_code != CAIRN__V1__CODE__OK && cn_fast_unit() * 100.0 < f.abort_percent) {
        cn_series_add(cn_metric_series(m_faults, (const char *[]){c->method->name, "abort"}), 1);
        cn_call_fail(c, f.abort_code, "fault injected");
        *unprocessed = f.abort_code == CAIRN__V1__CODE__UNAVAILABLE ||
                       f.abort_code == CAIRN__V1__CODE__RESOURCE_EXHAUSTED;
        return 1;
    }
    return 0;
}

/* ---- per-call helpers for handlers ---- */

void cn_call_fail(struct cn_call *c, Cairn__V1__Code code, const char *fmt, ...)
{
    if (c->code != CAIRN__V1__CODE__OK)
        return;
    c->code = code;
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    c->message = cn_arena_strdup(c->arena, tmp);
}

void cn_call_field_error(struct cn_call *c, const char *field, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);

    Cairn__V1__FieldError *fe = cn_arena_alloc(c->arena, sizeof *fe);
    cairn__v1__field_error__init(fe);
    fe->field = cn_arena_strdup(c->arena, field);
    fe->message = cn_arena_strdup(c->arena, tmp);
    Cairn__V1__FieldError **v = cn_arena_alloc(c->arena, (c->n_field_errors + 1) * sizeof *v);
    if (c->n_field_errors)
        memcpy(v, c->field_errors, c->n_field_errors * sizeof *v);
    v[c->n_field_errors++] = fe;
    c->field_errors = v;
    if (c->code == CAIRN__V1__CODE__OK) {
        c->code = CAIRN__V1__CODE__INVALID_ARGUMENT;
        c->message = cn_arena_strdup(c->arena, "invalid request");
    }
}

int64_t cn_call_time_left(const struct cn_call *c)
{
    if (c->deadline_ms == 0)
        return INT32_MAX;
    return c->deadline_ms - cn_mono_ms();
}

const Cairn__V1__Principal *cn_call_principal(const struct cn_call *c)
{
    const Cairn__V1__Principal *p = c->env->principal;
    if (p == NULL || p->subject == NULL || p->subject[0] == '\0')
        return NULL;
    return p;
}

/* ---- envelope helpers ---- */

/* Packs msg into a new nng message. */
static nng_msg *pack_msg(const ProtobufCMessage *m)
{
    nng_msg *out;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (nng_msg_alloc(&out, n) != 0)
        abort();
    protobuf_c_message_pack(m, nng_msg_body(out));
    return out;
}

static nng_msg *result_msg(Cairn__V1__Code code, const char *message, unsigned load)
{
    Cairn__V1__Result r = CAIRN__V1__RESULT__INIT;
    r.code = code;
    r.message = (char *)message;
    r.load = load;
    /* The intake answers these two without running a handler (full queue, shutting
     * down): the gateway may then retry even a call that is not idempotent. */
    if (code == CAIRN__V1__CODE__RESOURCE_EXHAUSTED || code == CAIRN__V1__CODE__UNAVAILABLE) {
        r.retry_after_ms = 100;
        r.unprocessed = true;
    }
    return pack_msg(&r.base);
}

int cn_rpc_call_encode_traced(const char *method, const char *request_id, uint32_t timeout_ms,
                              const Cairn__V1__Principal *principal, const char *client_ip,
                              const char *traceparent, const uint8_t *body, size_t body_len,
                              nng_msg **out)
{
    if (method == NULL || *method == '\0')
        return CN_EINVAL;
    Cairn__V1__Call c = CAIRN__V1__CALL__INIT;
    c.method = (char *)method;
    c.request_id = (char *)(request_id ? request_id : "");
    c.timeout_ms = timeout_ms;
    c.principal = (Cairn__V1__Principal *)principal;
    c.client_ip = (char *)(client_ip ? client_ip : "");
    c.traceparent = (char *)(traceparent ? traceparent : "");
    c.body.data = (uint8_t *)body;
    c.body.len = body_len;
    *out = pack_msg(&c.base);
    return CN_OK;
}

int cn_rpc_call_encode_raw(const char *method, const char *request_id, uint32_t timeout_ms,
                           const Cairn__V1__Principal *principal, const char *client_ip,
                           const uint8_t *body, size_t body_len, nng_msg **out)
{
    return cn_rpc_call_encode_traced(method, request_id, timeout_ms, principal, client_ip, NULL, body,
                                     body_len, out);
}

int cn_rpc_call_encode(const char *method, const char *request_id, uint32_t timeout_ms,
                       const Cairn__V1__Principal *principal, const char *client_ip,
                       const ProtobufCMessage *req, nng_msg **out)
{
    size_t n = req ? protobuf_c_message_get_packed_size(req) : 0;
    uint8_t stackbuf[512] = {0};
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : cn_malloc(n);
    if (req)
        protobuf_c_message_pack(req, buf);
    int rv = cn_rpc_call_encode_raw(method, request_id, timeout_ms, principal, client_ip, buf, n, out);
    if (buf != stackbuf)
        free(buf);
    return rv;
}

Cairn__V1__Result *cn_rpc_result_decode(nng_msg *msg, ProtobufCAllocator *alloc)
{
    return cairn__v1__result__unpack(alloc, nng_msg_len(msg), nng_msg_body(msg));
}

static void set_req_options(nng_socket s, size_t max_msg)
{
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, max_msg ? max_msg : CN_RPC_MAX_MSG_DEFAULT);
    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 500);
}

/* Dials every comma-separated address in addrs on s without blocking. */
static int dial_all(nng_socket s, const char *addrs)
{
    int n = 0;
    const char *p = addrs;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' '))
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            char *a = cn_strndup(p, len);
            int rv = nng_dial(s, a, NULL, NNG_FLAG_NONBLOCK);
            free(a);
            if (rv != 0)
                return CN_EINVAL;
            n++;
        }
        p = comma ? comma + 1 : NULL;
    }
    return n ? CN_OK : CN_EINVAL;
}

int cn_rpc_req_socket(nng_socket *out, size_t max_msg)
{
    if (nng_req0_open(out) != 0)
        return CN_EIO;
    set_req_options(*out, max_msg);
    return CN_OK;
}

int cn_rpc_req_open(nng_socket *out, const char *addr, size_t max_msg)
{
    nng_socket s;
    if (cn_rpc_req_socket(&s, max_msg) != CN_OK)
        return CN_EIO;
    if (dial_all(s, addr) != CN_OK) {
        nng_close(s);
        return CN_EINVAL;
    }
    *out = s;
    return CN_OK;
}

/* ---- server ---- */

static unsigned server_load(struct cn_rpc_server *s) { return atomic_load(&s->load); }

unsigned cn_rpc_server_load(const struct cn_rpc_server *s)
{
    return atomic_load(&((struct cn_rpc_server *)s)->load);
}

static void intake_recv(struct intake *in)
{
    in->state = INTAKE_RECV;
    nng_ctx_recv(in->ctx, in->aio);
}

/* Starts sending reply on the intake; the completion re-arms its receive. */
static void intake_send(struct intake *in, nng_msg *reply)
{
    in->state = INTAKE_SEND;
    nng_aio_set_msg(in->aio, reply);
    nng_ctx_send(in->ctx, in->aio);
}

static void intake_reply(struct intake *in, nng_msg *reply)
{
    atomic_fetch_add(&in->srv->sending, 1);
    intake_send(in, reply);
}

/* The method of a packed Call without unpacking it: protobuf-c writes fields in number
 * order, so `method` (field 1, length-delimited: tag 0x0a) comes first when set. false
 * when it is not there; the call then simply takes the queue. */
static bool peek_method(const uint8_t *p, size_t n, const char **name, size_t *len)
{
    if (n < 2 || p[0] != 0x0a)
        return false;
    size_t l = 0, i = 1;
    for (unsigned shift = 0; i < n && shift < 35; i++, shift += 7) {
        l |= (size_t)(p[i] & 0x7f) << shift;
        if (!(p[i] & 0x80))
            break;
    }
    if (i >= n || (p[i] & 0x80) || l > n - i - 1)
        return false;
    *name = (const char *)p + i + 1;
    *len = l;
    return true;
}

static void run_call(struct cn_rpc_server *s, struct slot *w, struct intake *in, bool inlined);

/* Whether msg may run on the receiving thread (see the top of this file). */
static bool runs_inline(const struct cn_rpc_server *s, nng_msg *msg)
{
    const char *name;
    size_t len;
    if (s->opts.inline_methods == NULL || nng_msg_len(msg) > s->opts.inline_max ||
        atomic_load_explicit(&faults_on, memory_order_relaxed) ||
        !peek_method(nng_msg_body(msg), nng_msg_len(msg), &name, &len))
        return false;
    for (const char *const *m = s->opts.inline_methods; *m; m++)
        if (strlen(*m) == len && memcmp(*m, name, len) == 0)
            return true;
    return false;
}

static void on_intake(void *arg)
{
    struct intake *in = arg;
    struct cn_rpc_server *s = in->srv;
    int rv = nng_aio_result(in->aio);

    if (in->state == INTAKE_SEND) {
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(in->aio));
        atomic_fetch_sub(&s->sending, 1);
        if (rv == NNG_ECLOSED)
            return;
        intake_recv(in);
        return;
    }
    /* INTAKE_RECV */
    if (rv == NNG_ECLOSED)
        return;
    if (rv != 0) {
        intake_recv(in);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(in->aio);
    pthread_mutex_lock(&s->mtx);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mtx);
        nng_msg_free(msg);
        intake_reply(in, result_msg(CAIRN__V1__CODE__UNAVAILABLE, "server is shutting down",
                                    server_load(s)));
        return;
    }
    if (s->qlen + s->running >= s->opts.workers + s->opts.queue) {
        pthread_mutex_unlock(&s->mtx);
        nng_msg_free(msg);
        cn_series_add(s->shed, 1);
        intake_reply(in, result_msg(CAIRN__V1__CODE__RESOURCE_EXHAUSTED,
                                    "server busy: queue full", server_load(s)));
        return;
    }
    in->msg = msg;
    in->recv_us = cn_mono_us();
    in->recv_ms = in->recv_us / 1000;
    if (s->qhead == NULL && s->free_slots && s->inline_running < s->inline_cap && runs_inline(s, msg)) {
        struct slot *w = s->free_slots;
        s->free_slots = w->next_free;
        s->running++;
        s->inline_running++;
        atomic_fetch_add(&s->load, 1);
        cn_series_add(s->inflight, 1);
        pthread_mutex_unlock(&s->mtx);
        run_call(s, w, in, true);
        return;
    }
    in->state = INTAKE_QUEUED;
    in->next = NULL;
    if (s->qtail)
        s->qtail->next = in;
    else
        s->qhead = in;
    s->qtail = in;
    s->qlen++;
    atomic_fetch_add(&s->load, 1);
    cn_series_add(s->inflight, 1);
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mtx);
}

static struct cn_series *calls_series(struct cn_rpc_server *s, unsigned method, Cairn__V1__Code code)
{
    unsigned c = (unsigned)code < NCODES ? (unsigned)code : CAIRN__V1__CODE__UNKNOWN;
    struct cn_series **slot = &s->calls[method * NCODES + c];
    struct cn_series *ser = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (ser == NULL) {
        const char *labels[2] = {s->opts.service->descriptor->methods[method].name, code_names[c]};
        ser = cn_metric_series(m_calls, labels);
        __atomic_store_n(slot, ser, __ATOMIC_RELEASE);
    }
    return ser;
}

static void on_reply(const ProtobufCMessage *msg, void *data)
{
    struct cn_call *c = data;
    if (c->done) {
        cn_log(CN_LOG_ERROR, "RPC-DOUBLE-REPLY", cn_call_request_id(c),
               "handler for %s called its closure twice", c->method->name);
        return;
    }
    c->done = true;
    if (msg == NULL) {
        if (c->code == CAIRN__V1__CODE__OK)
            cn_call_fail(c, CAIRN__V1__CODE__INTERNAL, "internal error");
        return;
    }
    if (c->code != CAIRN__V1__CODE__OK)
        return;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = cn_arena_alloc(c->arena, n ? n : 1);
    protobuf_c_message_pack(msg, buf);
    c->reply.data = buf;
    c->reply.len = n;
}

static nng_msg *result_of(struct cn_call *c);

/* Runs one received request with slot w; returns the reply message, or NULL when the
 * handler sent it already (cn_call_send_now). */
static nng_msg *handle_call(struct cn_rpc_server *s, struct slot *w, struct intake *in)
{
    const ProtobufCServiceDescriptor *sd = s->opts.service->descriptor;
    ProtobufCAllocator alloc;
    cn_arena_reset(w->arena);
    cn_arena_allocator(w->arena, &alloc);

    Cairn__V1__Call *env = cairn__v1__call__unpack(&alloc, nng_msg_len(in->msg), nng_msg_body(in->msg));
    if (env == NULL || env->method == NULL) {
        cn_series_add(s->malformed, 1);
        return result_msg(CAIRN__V1__CODE__INVALID_ARGUMENT, "malformed call envelope", server_load(s));
    }
    const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(sd, env->method);
    if (md == NULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "no method %.100s on service %s", env->method, sd->name);
        return result_msg(CAIRN__V1__CODE__UNIMPLEMENTED, msg, server_load(s));
    }
    unsigned mi = (unsigned)(md - sd->methods);
    int64_t deadline = env->timeout_ms ? in->recv_ms + env->timeout_ms : 0;

    struct cn_call call = {
        .env = env,
        .method = md,
        .arena = w->arena,
        .alloc = &alloc,
        .worker = w->state,
        .worker_index = w->index,
        .deadline_ms = deadline,
        .received_us = in->recv_us,
        .code = CAIRN__V1__CODE__OK,
        .srv = s,
        .intake = in,
        .method_index = mi,
    };
    /* The trace id (of a valid W3C traceparent: 00-<32 hex>-...) ties this call to the
     * gateway's access-log line. */
    cn_log(CN_LOG_DEBUG, "RPC-CALL", cn_call_request_id(&call), "%s trace_id=%.32s", md->name,
           env->traceparent && strlen(env->traceparent) >= 35 ? env->traceparent + 3 : "-");

    if (deadline && cn_mono_ms() >= deadline) {
        cn_series_add(s->expired, 1);
        call.code = CAIRN__V1__CODE__DEADLINE_EXCEEDED;
        call.message = "deadline exceeded before the call started";
    } else if (apply_faults(&call, &call.unprocessed)) {
        /* answered by an injected fault; the handler does not run */
    } else {
        ProtobufCMessage *input = protobuf_c_message_unpack(md->input, &alloc, env->body.len, env->body.data);
        if (input == NULL) {
            call.code = CAIRN__V1__CODE__INVALID_ARGUMENT;
            call.message = "malformed request body";
        } else {
            s->opts.service->invoke(s->opts.service, mi, input, on_reply, &call);
            if (!call.done) {
                cn_log(CN_LOG_ERROR, "RPC-NO-REPLY", cn_call_request_id(&call),
                       "handler for %s returned without replying", md->name);
                call.code = CAIRN__V1__CODE__INTERNAL;
                call.message = "internal error";
            }
        }
    }
    if (call.intake == NULL)
        return NULL; /* sent already (cn_call_send_now) */
    return result_of(&call);
}

/* The Result message of call c, its metrics recorded. */
static nng_msg *result_of(struct cn_call *c)
{
    struct cn_rpc_server *s = c->srv;
    cn_series_add(calls_series(s, c->method_index, c->code), 1);
    /* From receipt, so time spent queued counts. */
    cn_series_observe(s->durations[c->method_index], (double)(cn_mono_us() - c->received_us) / 1e6);

    Cairn__V1__Result r = CAIRN__V1__RESULT__INIT;
    r.code = c->code;
    r.message = c->message ? c->message : (char *)"";
    r.field_errors = c->field_errors;
    r.n_field_errors = c->n_field_errors;
    r.retry_after_ms = c->retry_after_ms;
    r.load = server_load(s);
    r.unprocessed = c->unprocessed;
    if (c->code == CAIRN__V1__CODE__OK)
        r.body = c->reply;
    return pack_msg(&r.base);
}

/* The call is over for the load the server reports before its reply leaves: once the
 * caller has the reply, its next call may already run on another thread, and must not
 * count this one (the gateway balances on it: an inline call answered before its own
 * count went down made a replica look busy to a sequential client, which then went to
 * the other replica every time). `sending` goes up first, so a draining stop never sees
 * the reply as neither running nor sending. */
static void reply_leaves(struct cn_rpc_server *s)
{
    atomic_fetch_add(&s->sending, 1);
    atomic_fetch_sub(&s->load, 1);
    cn_series_add(s->inflight, -1);
}

void cn_call_send_now(struct cn_call *c)
{
    if (c == NULL || !c->done || c->intake == NULL || c->srv == NULL)
        return;
    struct intake *in = c->intake;
    nng_msg *reply = result_of(c);
    /* The handler's input was copied out of the request when it was unpacked. */
    nng_msg_free(in->msg);
    in->msg = NULL;
    c->intake = NULL; /* from here the intake may take the next request */
    reply_leaves(c->srv);
    intake_send(in, reply);
}

/* Runs the received call of intake in with slot w and starts its reply; then gives the
 * slot back and wakes whoever waits for it. Called unlocked. */
static void run_call(struct cn_rpc_server *s, struct slot *w, struct intake *in, bool inlined)
{
    nng_msg *reply = handle_call(s, w, in);
    if (reply != NULL) {
        nng_msg_free(in->msg);
        in->msg = NULL;
    }
    /* Keep the arena from holding on to one huge call's memory. */
    if (cn_arena_used(w->arena) > (4u << 20)) {
        cn_arena_free(w->arena);
        w->arena = cn_arena_new(64 * 1024);
    }

    /* Once sent early, the intake is no longer this call's: in may hold the next request. */
    if (reply != NULL)
        reply_leaves(s);
    pthread_mutex_lock(&s->mtx);
    w->next_free = s->free_slots;
    s->free_slots = w;
    s->running--;
    if (inlined)
        s->inline_running--;
    if (s->qhead)
        pthread_cond_signal(&s->work_cv);
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mtx);
    if (reply != NULL)
        intake_send(in, reply);
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct cn_rpc_server *s = wk->srv;
    struct slot *own = &wk->slot;

    own->arena = cn_arena_new(64 * 1024);
    if (s->opts.worker_init)
        own->state = s->opts.worker_init(own->index, s->opts.arg);

    pthread_mutex_lock(&s->mtx);
    own->next_free = s->free_slots;
    s->free_slots = own;
    if (s->qhead)
        pthread_cond_signal(&s->work_cv);
    for (;;) {
        while ((s->qhead == NULL || s->free_slots == NULL) && !s->exiting)
            pthread_cond_wait(&s->work_cv, &s->mtx);
        if (s->exiting && (s->qhead == NULL || s->free_slots == NULL))
            break;
        struct intake *in = s->qhead;
        s->qhead = in->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        s->qlen--;
        s->running++;
        struct slot *w = s->free_slots;
        s->free_slots = w->next_free;
        pthread_mutex_unlock(&s->mtx);

        run_call(s, w, in, false);

        pthread_mutex_lock(&s->mtx);
    }
    /* After a clean drain every slot is free. After a drain that ran out of time, this
     * worker's slot may still be lent to a call on another thread (inline, or another
     * worker): its state and arena then stay for that call, and the exiting process. */
    bool lent = true;
    for (struct slot *f = s->free_slots; f; f = f->next_free)
        if (f == own)
            lent = false;
    pthread_mutex_unlock(&s->mtx);

    if (lent)
        return NULL;
    if (s->opts.worker_fini)
        s->opts.worker_fini(own->state, s->opts.arg);
    cn_arena_free(own->arena);
    return NULL;
}

static int nng_to_cn(int rv)
{
    switch (rv) {
    case 0:
        return CN_OK;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return CN_EINVAL;
    case NNG_ETIMEDOUT:
        return CN_ETIMEDOUT;
    case NNG_ECLOSED:
        return CN_ECLOSED;
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_EUNREACHABLE:
        return CN_EUNAVAIL;
    case NNG_EMSGSIZE:
        return CN_ETOOBIG;
    default:
        return CN_EIO;
    }
}

static void server_free(struct cn_rpc_server *s)
{
    if (s->intakes) {
        for (int i = 0; i < s->nintake; i++) {
            if (s->intakes[i].aio) {
                nng_aio_stop(s->intakes[i].aio);
                if (s->intakes[i].msg)
                    nng_msg_free(s->intakes[i].msg);
                nng_aio_free(s->intakes[i].aio);
            }
        }
    }
    free(s->intakes);
    free(s->workers);
    free(s->calls);
    free(s->durations);
    pthread_mutex_destroy(&s->mtx);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

int cn_rpc_server_start(struct cn_rpc_server **out, const struct cn_rpc_server_opts *opts)
{
    if (opts->service == NULL || opts->listen == NULL || opts->workers < 1 || opts->queue < 0)
        return CN_EINVAL;
    pthread_once(&metrics_once, metrics_init);

    for (const char *const *m = opts->inline_methods; m && *m; m++)
        if (protobuf_c_service_descriptor_get_method_by_name(opts->service->descriptor, *m) == NULL)
            return CN_EINVAL;

    struct cn_rpc_server *s = cn_calloc(1, sizeof *s);
    s->opts = *opts;
    if (s->opts.inline_max == 0)
        s->opts.inline_max = CN_RPC_INLINE_MAX_DEFAULT;
    s->inline_cap = cn_cpu_count();
    pthread_mutex_init(&s->mtx, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);

    const ProtobufCServiceDescriptor *sd = opts->service->descriptor;
    s->nmethods = sd->n_methods;
    s->calls = cn_calloc((size_t)s->nmethods * NCODES, sizeof *s->calls);
    s->durations = cn_calloc(s->nmethods ? s->nmethods : 1, sizeof *s->durations);
    for (unsigned i = 0; i < s->nmethods; i++)
        s->durations[i] = cn_metric_series(m_duration, (const char *[]){sd->methods[i].name});
    s->shed = cn_metric_series(m_shed, NULL);
    s->expired = cn_metric_series(m_expired, NULL);
    s->inflight = cn_metric_series(m_inflight, NULL);
    s->malformed = cn_metric_series(m_malformed, NULL);

    int rv = nng_rep0_open(&s->sock);
    if (rv != 0) {
        server_free(s);
        return CN_EIO;
    }
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, opts->max_msg ? opts->max_msg : CN_RPC_MAX_MSG_DEFAULT);
    rv = nng_listen(s->sock, opts->listen, NULL, 0);
    if (rv != 0) {
        cn_log(CN_LOG_ERROR, "RPC-LISTEN-FAILED", NULL, "cannot listen on %s: %s", opts->listen,
               nng_strerror(rv));
        nng_close(s->sock);
        server_free(s);
        return nng_to_cn(rv);
    }

    s->nintake = opts->workers + opts->queue + SHED_INTAKES;
    s->intakes = cn_calloc((size_t)s->nintake, sizeof *s->intakes);
    for (int i = 0; i < s->nintake; i++) {
        struct intake *in = &s->intakes[i];
        in->srv = s;
        if (nng_ctx_open(&in->ctx, s->sock) != 0 || nng_aio_alloc(&in->aio, on_intake, in) != 0) {
            nng_close(s->sock);
            server_free(s);
            return CN_EIO;
        }
    }

    s->workers = cn_calloc((size_t)opts->workers, sizeof *s->workers);
    for (int i = 0; i < opts->workers; i++) {
        s->workers[i].srv = s;
        s->workers[i].slot.index = i;
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0)
            abort();
    }
    for (int i = 0; i < s->nintake; i++)
        intake_recv(&s->intakes[i]);

    cn_log(CN_LOG_INFO, "RPC-LISTENING", NULL, "serving %s on %s with %d workers, queue %d",
           sd->name, opts->listen, opts->workers, opts->queue);
    *out = s;
    return CN_OK;
}

int cn_rpc_server_stop(struct cn_rpc_server *s, int timeout_ms)
{
    if (s == NULL)
        return 0;
    int64_t deadline = cn_mono_ms() + timeout_ms;

    pthread_mutex_lock(&s->mtx);
    s->stopping = true;
    while (s->qlen + s->running > 0) {
        int64_t left = deadline - cn_mono_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->idle_cv, &s->mtx, &ts);
    }
    int cut = s->qlen + s->running;
    s->exiting = true;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mtx);

    if (cut > 0) {
        /* Calls are still running on workers we cannot interrupt: stop listening and
         * leave the server to the exiting process rather than free memory in use. */
        nng_close(s->sock);
        return cut;
    }
    for (int i = 0; i < s->opts.workers; i++)
        pthread_join(s->workers[i].thread, NULL);
    /* REP completes a send once the reply is queued on its pipe, not once it is written:
     * wait for the last replies to complete, then give the pipes a moment to write them
     * before closing, or a caller would see its connection drop instead of the answer. */
    while (atomic_load(&s->sending) > 0 && cn_mono_ms() < deadline)
        nng_msleep(2);
    nng_msleep(50);
    nng_close(s->sock);
    server_free(s);
    return 0;
}

/* ---- blocking client ---- */

struct cn_rpc_client {
    nng_socket sock;
};

int cn_rpc_client_open(struct cn_rpc_client **out, const char *addr)
{
    struct cn_rpc_client *c = cn_calloc(1, sizeof *c);
    int rv = cn_rpc_req_open(&c->sock, addr, 0);
    if (rv != CN_OK) {
        free(c);
        return rv;
    }
    *out = c;
    return CN_OK;
}

void cn_rpc_client_close(struct cn_rpc_client *c)
{
    if (c == NULL)
        return;
    nng_close(c->sock);
    free(c);
}

int cn_rpc_client_call(struct cn_rpc_client *c, const char *method,
                       const Cairn__V1__Principal *principal, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                       Cairn__V1__Result **res, ProtobufCMessage **resp)
{
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    int rv;
    char rid[33];

    *res = NULL;
    if (resp)
        *resp = NULL;
    cn_request_id_new(rid);
    if ((rv = cn_rpc_call_encode(method, rid, (uint32_t)timeout_ms, principal, NULL, req, &msg)) != CN_OK)
        return rv;
    if (nng_ctx_open(&ctx, c->sock) != 0) {
        nng_msg_free(msg);
        return CN_ECLOSED;
    }
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        abort();
    int64_t deadline = cn_mono_ms() + timeout_ms;
    nng_aio_set_timeout(aio, timeout_ms);
    nng_aio_set_msg(aio, msg);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(msg);
        goto out;
    }
    int64_t left = deadline - cn_mono_ms();
    nng_aio_set_timeout(aio, left > 0 ? (nng_duration)left : 1);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        goto out;
    msg = nng_aio_get_msg(aio);
    *res = cn_rpc_result_decode(msg, NULL);
    if (*res == NULL) {
        nng_msg_free(msg);
        rv = NNG_EPROTO;
        goto out;
    }
    if ((*res)->code == CAIRN__V1__CODE__OK && resp_desc && resp) {
        *resp = protobuf_c_message_unpack(resp_desc, NULL, (*res)->body.len, (*res)->body.data);
        if (*resp == NULL) {
            cairn__v1__result__free_unpacked(*res, NULL);
            *res = NULL;
            nng_msg_free(msg);
            rv = NNG_EPROTO;
            goto out;
        }
    }
    nng_msg_free(msg);
out:
    nng_aio_free(aio);
    nng_ctx_close(ctx);
    if (rv == NNG_EPROTO)
        return CN_EPROTO;
    return nng_to_cn(rv);
}
