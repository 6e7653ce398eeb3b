/* upstream.c — endpoints, least-loaded choice, and the async REQ call (upstream.h). */
#include "upstream.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "rpc.h"
#include "util.h"

struct gw_endpoint {
    struct gw_upstream *up;
    char *addr;
    nng_socket sock;
    atomic_int pipes;       /* connected pipes */
    atomic_int inflight;
};

struct gw_upstream {
    char *name;
    struct gw_endpoint *eps;
    int neps;
    atomic_uint rr;         /* tie-break rotation */
};

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    struct gw_endpoint *ep = arg;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        if (atomic_fetch_add(&ep->pipes, 1) == 0)
            cn_log(CN_LOG_INFO, "GW-UPSTREAM-UP", NULL, "%s connected at %s", ep->up->name, ep->addr);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        if (atomic_fetch_sub(&ep->pipes, 1) == 1)
            cn_log(CN_LOG_WARN, "GW-UPSTREAM-DOWN", NULL, "%s lost at %s", ep->up->name, ep->addr);
    }
}

struct gw_upstream *gw_upstream_new(const char *service, const char *addrs, size_t max_msg)
{
    struct gw_upstream *u = cn_calloc(1, sizeof *u);
    u->name = cn_strdup(service);
    int cap = 1;
    for (const char *p = addrs; *p; p++)
        cap += *p == ',';
    u->eps = cn_calloc((size_t)cap, sizeof *u->eps);

    const char *p = addrs;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            struct gw_endpoint *ep = &u->eps[u->neps];
            ep->up = u;
            ep->addr = cn_strndup(p, len);
            if (cn_rpc_req_socket(&ep->sock, max_msg) != CN_OK) {
                free(ep->addr);
                gw_upstream_free(u);
                return NULL;
            }
            nng_pipe_notify(ep->sock, NNG_PIPE_EV_ADD_POST, on_pipe, ep);
            nng_pipe_notify(ep->sock, NNG_PIPE_EV_REM_POST, on_pipe, ep);
            u->neps++;
            if (nng_dial(ep->sock, ep->addr, NULL, NNG_FLAG_NONBLOCK) != 0) {
                cn_log(CN_LOG_ERROR, "GW-UPSTREAM-BAD-ADDR", NULL, "%s: cannot dial '%s'", service, ep->addr);
                gw_upstream_free(u);
                return NULL;
            }
        }
        p = comma ? comma + 1 : NULL;
    }
    if (u->neps == 0) {
        gw_upstream_free(u);
        return NULL;
    }
    return u;
}

void gw_upstream_free(struct gw_upstream *u)
{
    if (u == NULL)
        return;
    for (int i = 0; i < u->neps; i++) {
        nng_close(u->eps[i].sock);
        free(u->eps[i].addr);
    }
    free(u->eps);
    free(u->name);
    free(u);
}

const char *gw_upstream_name(const struct gw_upstream *u) { return u->name; }

int gw_upstream_connected(const struct gw_upstream *u)
{
    int n = 0;
    for (int i = 0; i < u->neps; i++)
        n += atomic_load(&((struct gw_upstream *)u)->eps[i].pipes) > 0;
    return n;
}

/* The connected endpoint with the fewest calls in flight; ties rotate. */
static struct gw_endpoint *pick(struct gw_upstream *u)
{
    struct gw_endpoint *best = NULL;
    int best_load = 0;
    unsigned start = atomic_fetch_add(&u->rr, 1);
    for (int k = 0; k < u->neps; k++) {
        struct gw_endpoint *ep = &u->eps[(start + (unsigned)k) % (unsigned)u->neps];
        if (atomic_load(&ep->pipes) <= 0)
            continue;
        int load = atomic_load(&ep->inflight);
        if (best == NULL || load < best_load) {
            best = ep;
            best_load = load;
        }
    }
    return best;
}

static void on_aio(void *arg)
{
    struct gw_upcall *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->stage == 0) {
        if (rv == 0) {
            c->sent = true;
            c->stage = 1;
            nng_ctx_recv(c->ctx, c->aio);
            return;
        }
        nng_msg_free(nng_aio_get_msg(c->aio));
    } else if (rv == 0) {
        c->reply = nng_aio_get_msg(c->aio);
    }
    c->rv = rv;
    atomic_fetch_sub(&c->ep->inflight, 1);
    h2o_multithread_send_message(c->rx, &c->super);
}

int gw_upstream_call(struct gw_upstream *u, nng_msg *msg, int timeout_ms, h2o_multithread_receiver_t *rx,
                     void (*on_done)(struct gw_upcall *), void *data, struct gw_upcall **out)
{
    struct gw_endpoint *ep = pick(u);
    if (ep == NULL)
        return CN_EUNAVAIL;
    struct gw_upcall *c = cn_calloc(1, sizeof *c);
    c->up = u;
    c->ep = ep;
    c->on_done = on_done;
    c->data = data;
    c->rx = rx;
    if (nng_ctx_open(&c->ctx, ep->sock) != 0) {
        free(c);
        return CN_EUNAVAIL;
    }
    if (nng_aio_alloc(&c->aio, on_aio, c) != 0)
        abort();
    atomic_fetch_add(&ep->inflight, 1);
    nng_aio_set_timeout(c->aio, timeout_ms > 0 ? timeout_ms : NNG_DURATION_DEFAULT);
    nng_aio_set_msg(c->aio, msg);
    nng_ctx_send(c->ctx, c->aio);
    *out = c;
    return CN_OK;
}

void gw_upcall_cancel(struct gw_upcall *call)
{
    call->cancelled = true;
    nng_aio_cancel(call->aio);
}

void gw_upstream_on_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct gw_upcall *c = H2O_STRUCT_FROM_MEMBER(struct gw_upcall, super.link, messages->next);
        h2o_linklist_unlink(&c->super.link);
        if (!c->cancelled && c->on_done)
            c->on_done(c);
        /* on_aio has returned or is returning; nng_aio_free waits for it. */
        nng_aio_free(c->aio);
        nng_ctx_close(c->ctx);
        if (c->reply)
            nng_msg_free(c->reply);
        free(c);
    }
}
