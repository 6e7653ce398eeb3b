/* rpc.h — Call/Result over nng REQ/REP, the only way Cairn processes talk (DESIGN §3).
 *
 * Server: N worker threads serve one protoc-c service. Requests are received on a pool
 * of nng contexts and put on a bounded queue; when the queue is full a request is
 * answered RESOURCE_EXHAUSTED at once (load shedding). A worker takes a call, drops it
 * with DEADLINE_EXCEEDED if its deadline (receive time + Call.timeout_ms) has passed,
 * otherwise unpacks the input by the method's descriptor into the call's arena and
 * invokes the handler through the generated service struct. Handlers follow protobuf-c's
 * closure convention and reach the call through closure_data:
 *
 *   static void auth_login(Cairn__V1__Auth_Service *s, const Cairn__V1__LoginRequest *in,
 *                          Cairn__V1__TokenResponse_Closure done, void *cd)
 *   {
 *       struct cn_call *call = cd;
 *       if (!*in->email) { cn_call_field_error(call, "email", "is required"); done(NULL, cd); return; }
 *       ...
 *       done(&resp, cd);
 *   }
 *
 * A handler calls done exactly once: with the response on success, or with NULL after
 * cn_call_fail/cn_call_field_error. Because the handler table is the generated
 * SERVICE__INIT(prefix_) initializer, a missing handler is a build error.
 *
 * Client: cn_rpc_client is a blocking client for tools, tests and background threads.
 * The gateway drives nng contexts asynchronously itself, using the envelope helpers here.
 * Every REQ socket made here has NNG_OPT_REQ_RESENDTIME infinite (only the gateway
 * retries), a receive size cap, and a 50 ms reconnect interval.
 */
#ifndef CN_RPC_H
#define CN_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>

#include "cairn/v1/rpc.pb-c.h"

#define CN_RPC_MAX_MSG_DEFAULT (16u << 20)

struct cn_arena;
struct cn_rpc_server;

/* One call in flight on a server worker. Borrowed by handlers for the call's duration. */
struct cn_call {
    const Cairn__V1__Call *env;      /* the envelope: method, request_id, principal, ... */
    const ProtobufCMethodDescriptor *method;
    struct cn_arena *arena;          /* freed when the call ends */
    ProtobufCAllocator *alloc;       /* allocator over arena */
    void *worker;                    /* this worker thread's state (worker_init's result) */
    int worker_index;
    int64_t deadline_ms;             /* monotonic; 0 = none */
    int64_t received_us;             /* monotonic time the request arrived (queue time = now - this) */
    /* outcome, set through cn_call_fail / cn_call_field_error */
    Cairn__V1__Code code;
    char *message;
    Cairn__V1__FieldError **field_errors;
    size_t n_field_errors;
    uint32_t retry_after_ms;
    bool done;                       /* the closure was called */
    ProtobufCBinaryData reply;       /* packed response, set by the closure */
    /* the server's, for cn_call_send_now */
    struct cn_rpc_server *srv;
    void *intake;                    /* NULL once the reply has been sent */
    unsigned method_index;
    bool unprocessed;
};

/* Records a failure (message printf-style, copied into the arena). The first failure
 * recorded wins. */
void cn_call_fail(struct cn_call *c, Cairn__V1__Code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a field error and sets INVALID_ARGUMENT (message "invalid request" unless set). */
void cn_call_field_error(struct cn_call *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Milliseconds left until the deadline (INT32_MAX if none; <= 0 if passed). */
int64_t cn_call_time_left(const struct cn_call *c);
/* The timeout for a call this handler makes to another service: the time c has left,
 * at most cap_ms (0 = no cap). Give it as cn_rpc_client_call's timeout_ms, which travels
 * as the nested Call's timeout_ms, so the whole chain keeps the one deadline the gateway
 * set (DESIGN §3) instead of each hop starting a fresh timeout. A result <= 0 means the
 * deadline has passed: answer DEADLINE_EXCEEDED rather than call. */
static inline int64_t cn_call_callee_timeout(const struct cn_call *c, int64_t cap_ms)
{
    int64_t left = cn_call_time_left(c);
    return cap_ms > 0 && left > cap_ms ? cap_ms : left;
}
static inline const char *cn_call_request_id(const struct cn_call *c)
{
    return c->env->request_id ? c->env->request_id : "";
}
/* The principal the gateway verified, or NULL when anonymous. */
const Cairn__V1__Principal *cn_call_principal(const struct cn_call *c);
/* Sends the reply the handler gave its closure now, instead of when the handler returns,
 * so the caller does not wait for work that is not part of the answer (a prediction's
 * log entry, its drift counts). The call stops counting in the load the server reports,
 * but keeps its worker until the handler returns. Only after the closure was called;
 * nothing happens otherwise, or the second time. Work after it must not be anything the
 * caller's next call may need to see (a write that call would read), nor anything that
 * can fail the call: cn_call_fail and cn_call_field_error after it change nothing the
 * caller or the calls metric sees. */
void cn_call_send_now(struct cn_call *c);

struct cn_rpc_server_opts {
    const char *listen;              /* "tcp://0.0.0.0:7101" or "inproc://x" */
    ProtobufCService *service;       /* generated service struct with handlers */
    int workers;                     /* worker threads, >= 1 */
    int queue;                       /* calls that may wait beyond those running, >= 0 */
    size_t max_msg;                  /* receive cap in bytes; 0 = CN_RPC_MAX_MSG_DEFAULT */
    /* Per-worker state (e.g. a Postgres handle), made on the worker's thread. */
    void *(*worker_init)(int index, void *arg);
    void (*worker_fini)(void *worker, void *arg);
    void *arg;
    const char *name;                /* for metrics labels and logs, e.g. "auth" */
    /* Methods (NULL-terminated names, each must exist) whose calls of at most inline_max
     * bytes (0 = CN_RPC_INLINE_MAX_DEFAULT) run on the nng thread that received them when
     * a worker is free, saving two thread hand-offs. Only for short CPU-bound handlers:
     * one that waits (on a database, another service) holds up nng's I/O meanwhile. */
    const char *const *inline_methods;
    size_t inline_max;
};

#define CN_RPC_INLINE_MAX_DEFAULT (64u * 1024)

/* Starts listening and the workers. Returns 0 or a CN_E* (address in use, bad address). */
int cn_rpc_server_start(struct cn_rpc_server **out, const struct cn_rpc_server_opts *opts);
/* Stops taking new calls (they get UNAVAILABLE), waits up to timeout_ms for calls in
 * flight to finish, then stops the workers and frees. Returns the number of calls that
 * were still running when time ran out (0 on a clean drain). */
int cn_rpc_server_stop(struct cn_rpc_server *s, int timeout_ms);
/* Calls queued or running right now. */
unsigned cn_rpc_server_load(const struct cn_rpc_server *s);

/* Opens a REQ socket with Cairn's options (resend off, recv cap, fast reconnect),
 * not dialed yet (so the caller can register pipe notifications first). */
int cn_rpc_req_socket(nng_socket *out, size_t max_msg);
/* cn_rpc_req_socket, then dials every comma-separated address in addr without blocking
 * (a dead address does not fail here; a malformed one does: CN_EINVAL). */
int cn_rpc_req_open(nng_socket *out, const char *addr, size_t max_msg);

/* Packs an envelope for method with body req into a new nng message. */
int cn_rpc_call_encode(const char *method, const char *request_id, uint32_t timeout_ms,
                       const Cairn__V1__Principal *principal, const char *client_ip,
                       const ProtobufCMessage *req, nng_msg **out);
/* Same with an already packed body. */
int cn_rpc_call_encode_raw(const char *method, const char *request_id, uint32_t timeout_ms,
                           const Cairn__V1__Principal *principal, const char *client_ip,
                           const uint8_t *body, size_t body_len, nng_msg **out);
/* cn_rpc_call_encode_raw with a W3C traceparent for Call.traceparent (NULL or "" =
 * none): the gateway passes its hop's trace context to the service. */
int cn_rpc_call_encode_traced(const char *method, const char *request_id, uint32_t timeout_ms,
                              const Cairn__V1__Principal *principal, const char *client_ip,
                              const char *traceparent, const uint8_t *body, size_t body_len,
                              nng_msg **out);
/* Unpacks a Result from msg (msg not freed). NULL if malformed. Allocates from alloc
 * (NULL = default allocator; free with cairn__v1__result__free_unpacked). */
Cairn__V1__Result *cn_rpc_result_decode(nng_msg *msg, ProtobufCAllocator *alloc);

struct cn_rpc_client;
/* A blocking client for addr. Returns 0 or CN_EINVAL for a bad address. */
int cn_rpc_client_open(struct cn_rpc_client **out, const char *addr);
void cn_rpc_client_close(struct cn_rpc_client *c);
/* Calls method and waits up to timeout_ms. On return 0, *res is the Result (caller frees
 * with cairn__v1__result__free_unpacked) and, if res->code is OK and resp_desc is given,
 * *resp is the unpacked response (caller frees with protobuf_c_message_free_unpacked).
 * CN_ETIMEDOUT, CN_EUNAVAIL or CN_EPROTO on transport failure. */
int cn_rpc_client_call(struct cn_rpc_client *c, const char *method,
                       const Cairn__V1__Principal *principal, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                       Cairn__V1__Result **res, ProtobufCMessage **resp);

/* The gRPC canonical name of a code ("INVALID_ARGUMENT"). */
const char *cn_code_name(Cairn__V1__Code code);
/* The code called name (exact, upper case). Returns 0 or CN_EINVAL. */
int cn_code_parse(const char *name, Cairn__V1__Code *out);

/* Fault injection, for tests that need one instance slow or failing (set from the admin
 * port's PUT /faults when CAIRN_ADMIN_FAULTS=1; admin.h). Process-wide: every RPC server
 * of the process applies them to a call after its deadline check and before its
 * handler. A delay sleeps the worker thread (a test facility: it takes a worker as a
 * slow handler would), at most until the call's deadline, which then answers
 * DEADLINE_EXCEEDED; an abort answers abort_code with the message "fault injected"
 * without running the handler (UNAVAILABLE and RESOURCE_EXHAUSTED are marked
 * unprocessed, as the server's own refusals are). Counted in
 * cairn_rpc_faults_injected_total{method,kind}. */
#define CN_RPC_FAULT_MAX_METHODS 16
#define CN_RPC_FAULT_MAX_DELAY_MS 600000
struct cn_rpc_faults {
    int delay_ms;                 /* 0 = no delay */
    double delay_percent;         /* 0..100 */
    Cairn__V1__Code abort_code;   /* OK = no abort */
    double abort_percent;         /* 0..100 */
    char methods[CN_RPC_FAULT_MAX_METHODS][64]; /* only these methods; none = every one */
    size_t nmethods;
};
/* Replaces the process's faults with a copy of f (NULL = none). */
void cn_rpc_faults_set(const struct cn_rpc_faults *f);
/* Copies the current faults into out (all zero when none). */
void cn_rpc_faults_get(struct cn_rpc_faults *out);

#endif
