/* upstream.h — asynchronous RPCs from the gateway's event loops to the services.
 *
 * Each service has one endpoint per instance, each with its own nng REQ socket: nng's
 * own REQ balancing sends to whichever pipe is ready, not the least loaded, so the
 * choice is ours. Instances come from CAIRN_<SVC>_ADDR, a comma-separated list of nng
 * addresses; a tcp:// address with a host name stands for every address the name
 * resolves to (a headless Service in Kubernetes), re-resolved by gw_upstream_refresh()
 * so a new replica gets traffic within one refresh and a gone one is dropped. An
 * endpoint that leaves the set is closed once its calls in flight are done. A call goes to
 * a connected endpoint chosen by load (below). With no connected endpoint it
 * fails at once with UNAVAILABLE (a dial to a dead address never fails in nng; requests
 * would just wait out their timeout). The loop starts the send and the receive together;
 * the receive completes on nng's threads, which hand the call back to the loop that made
 * it with h2o_multithread_send_message; the loop then calls on_done and frees the call.
 * Cancelling (client went away) is a loop-side flag plus nng_aio_cancel of the receive;
 * the call is still freed by the loop when the receive completes.
 * When an endpoint loses its last connection, its calls in flight are cancelled at
 * once (rv NNG_ECANCELED): nng would otherwise hold them for a pipe that may never come
 * back, and the client would wait out the whole route timeout.
 *
 * Choice (gw_upstream_call_ex): power of two choices among the connected, non-ejected
 * instances, on calls in flight from this gateway plus the load the instance last
 * reported in a Result; a retry leaves out the instances it already tried when others
 * remain. When every such instance already has max_outstanding calls in flight the call
 * is refused (CN_EFULL) so the gateway sheds at once instead of queueing without bound.
 *
 * Outlier ejection: the caller reports each attempt's outcome (gw_upcall_report);
 * `failures` failures in a row eject an instance for base_s, doubling per consecutive
 * ejection up to max_s, never more than max_percent of the service's instances (and
 * never the last one). When the time is up the instance takes traffic again; its next
 * outcome decides: a failure ejects it again for twice as long, a success makes it
 * healthy and resets the doubling. Logged once per ejection and per return; metrics
 * cairn_gateway_ejections_total{service}, cairn_gateway_instances{service,state} and
 * cairn_gateway_upstream_attempt_seconds{service,instance}.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <nng/nng.h>
#include <stdatomic.h>
#include <stdbool.h>

struct gw_upstream;
struct gw_endpoint;

struct gw_upcall {
    h2o_multithread_message_t super;   /* must be first */
    struct gw_upstream *up;
    struct gw_endpoint *ep;
    nng_ctx ctx;
    nng_aio *send_aio;                  /* no callback: see on_aio in upstream.c */
    nng_aio *aio;                       /* the receive: its completion ends the call */
    bool ctx_closed;
    int rv;                             /* nng result: 0, NNG_ETIMEDOUT, NNG_ECANCELED, ... */
    atomic_bool cancelled;              /* nobody wants the answer (set on the loop) */
    bool sent;                          /* the request reached the socket (for retry safety) */
    nng_msg *reply;                     /* owned by the call; freed after on_done */
    void (*on_done)(struct gw_upcall *call);   /* on the loop thread, unless cancelled */
    void *data;
    h2o_multithread_receiver_t *rx;
    struct gw_upcall *ep_prev, *ep_next;  /* the endpoint's list of calls in flight */
    int64_t start_us;                   /* for the attempt latency histogram */
};

/* Outlier-ejection settings (the config's outlier section). */
struct gw_outlier_conf {
    int64_t failures;        /* in a row, to eject */
    int64_t base_s;
    int64_t max_s;
    int64_t max_percent;
};

/* One instance's ejection state. Pure bookkeeping (no clock, no lock): the caller passes
 * the time and holds the service's lock. */
struct gw_outlier {
    int failures;            /* consecutive failures since the last success or ejection */
    int ejections;           /* consecutive ejections: the next lasts base_s * 2^ejections */
    int64_t until_ms;        /* ejected until then (monotonic); 0 = not ejected */
    bool probing;            /* back from an ejection: the next outcome decides */
};

/* Records a failure at now_ms. may_eject: the service may lose one more instance.
 * Returns the ejection's length in ms when this failure ejects the instance, else 0. */
int64_t gw_outlier_fail(struct gw_outlier *o, int64_t now_ms, const struct gw_outlier_conf *c, bool may_eject);
/* Records a success (of an instance not ejected now): healthy again, doubling reset. */
void gw_outlier_ok(struct gw_outlier *o);
/* Whether o is ejected at now_ms. */
static inline bool gw_outlier_ejected(const struct gw_outlier *o, int64_t now_ms)
{
    return o->until_ms != 0 && now_ms < o->until_ms;
}
/* How many of n instances may be ejected at once: max_percent of them, rounded down,
 * and never all. */
int gw_outlier_max_ejected(int n, int64_t max_percent);

/* Power of two choices: of n candidates with score[], two picked at random by rnd (two
 * different ones when n > 1); returns the index of the lower score (the first on a tie),
 * or -1 when n is 0. */
int gw_p2c(const unsigned *score, int n, uint64_t rnd);

/* Per-call choice options for gw_upstream_call_ex. */
struct gw_pick {
    const struct gw_endpoint *const *exclude;   /* instances already tried */
    int nexclude;
    int64_t max_outstanding;                    /* saturation per instance; 0 = none */
};

/* Resolves addrs and opens an endpoint per instance. Returns NULL if an address is
 * malformed (a name that does not resolve yet is not an error: it is retried). */
struct gw_upstream *gw_upstream_new(const char *service, const char *addrs, size_t max_msg);
/* Closes and frees u. Only with no calls in flight (tests, a start that failed): it does
 * not wait for them. */
void gw_upstream_free(struct gw_upstream *u);
const char *gw_upstream_name(const struct gw_upstream *u);
/* Connected endpoints right now. */
int gw_upstream_connected(const struct gw_upstream *u);
/* Re-resolves host names, adds and retires endpoints; closes and frees retired ones
 * whose calls are done. Call from one thread only (the gateway's resolver thread). */
void gw_upstream_refresh(struct gw_upstream *u);

/* Sends msg (ownership passes on success) with timeout_ms. On success returns 0 and the
 * call; on_done(call) later runs on the loop owning rx. Returns CN_EUNAVAIL (msg not
 * taken) when no endpoint is connected. */
int gw_upstream_call(struct gw_upstream *u, nng_msg *msg, int timeout_ms, h2o_multithread_receiver_t *rx,
                     void (*on_done)(struct gw_upcall *), void *data, struct gw_upcall **out);
/* gw_upstream_call with a choice: pick's exclusions and shedding (NULL = neither).
 * Also returns CN_EFULL (msg not taken) when every eligible instance is saturated. */
int gw_upstream_call_ex(struct gw_upstream *u, nng_msg *msg, int timeout_ms, h2o_multithread_receiver_t *rx,
                        void (*on_done)(struct gw_upcall *), void *data, const struct gw_pick *pick,
                        struct gw_upcall **out);
/* The instance a call went to (its nng address), valid while the call is. */
const char *gw_upcall_instance(const struct gw_upcall *call);
/* Loop side, from on_done: the attempt's outcome for outlier ejection (failed or not) and
 * the load the instance reported (a Result's load; ignored when no Result came). */
void gw_upcall_report(struct gw_upcall *call, bool failed, bool have_load, uint32_t load,
                      const struct gw_outlier_conf *oc);
/* Loop side: the requester is gone; on_done will not be called. */
void gw_upcall_cancel(struct gw_upcall *call);

/* The receiver callback to register on each loop's queue for upstream completions. */
void gw_upstream_on_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages);

#endif
