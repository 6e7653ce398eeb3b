/* upstream.h — asynchronous RPCs from the gateway's event loops to the services.
 *
 * Each service has one endpoint per instance, each with its own nng REQ socket: nng's
 * own REQ balancing sends to whichever pipe is ready, not the least loaded, so the
 * choice is ours. Instances come from CAIRN_<SVC>_ADDR, a comma-separated list of nng
 * addresses; a tcp:// address with a host name stands for every address the name
 * resolves to (a headless Service in Kubernetes), re-resolved by gw_upstream_refresh()
 * so a new replica gets traffic within one refresh and a gone one is dropped. An
 * endpoint that leaves the set is closed once its calls in flight are done. A call goes to
 * the connected endpoint with the fewest calls in flight. With no connected endpoint it
 * fails at once with UNAVAILABLE (a dial to a dead address never fails in nng; requests
 * would just wait out their timeout). Completion runs on nng's threads, which hand the
 * call back to the loop that made it with h2o_multithread_send_message; the loop then
 * calls on_done and frees the call. Cancelling (client went away) is a loop-side flag
 * plus nng_aio_cancel; the call is still freed by the loop when the aio completes.
 * When an endpoint loses its last connection, its calls in flight are cancelled at
 * once (rv NNG_ECANCELED): nng would otherwise hold them for a pipe that may never come
 * back, and the client would wait out the whole route timeout.
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
    nng_aio *aio;
    int stage;                          /* 0 sending, 1 receiving */
    int rv;                             /* nng result: 0, NNG_ETIMEDOUT, NNG_ECANCELED, ... */
    atomic_bool cancelled;              /* nobody wants the answer (set on the loop) */
    bool sent;                          /* the request reached the socket (for retry safety) */
    nng_msg *reply;                     /* owned by the call; freed after on_done */
    void (*on_done)(struct gw_upcall *call);   /* on the loop thread, unless cancelled */
    void *data;
    h2o_multithread_receiver_t *rx;
    struct gw_upcall *ep_prev, *ep_next;  /* the endpoint's list of calls in flight */
};

/* Resolves addrs and opens an endpoint per instance. Returns NULL if an address is
 * malformed (a name that does not resolve yet is not an error: it is retried). */
struct gw_upstream *gw_upstream_new(const char *service, const char *addrs, size_t max_msg);
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
/* Loop side: the requester is gone; on_done will not be called. */
void gw_upcall_cancel(struct gw_upcall *call);

/* The receiver callback to register on each loop's queue for upstream completions. */
void gw_upstream_on_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages);

#endif
