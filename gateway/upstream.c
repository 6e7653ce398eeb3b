/* upstream.c — instances of a service (resolved, refreshed), the choice of one (power
 * of two choices, shedding, outlier ejection), and the async REQ call (upstream.h).
 *
 * The live endpoint set is an immutable array swapped atomically: loop threads read it
 * without locks while the resolver thread builds the next one. A replaced set, and an
 * endpoint that left it, are freed only after two later refreshes (readers hold a set
 * for microseconds) and, for an endpoint, once its calls in flight are done (a call
 * counts as in flight until its loop has handled and freed it).
 *
 * Ejection state is per endpoint under the service's omtx (outcomes come from every
 * loop thread, and the "never more than max_percent" rule looks at all instances);
 * choice reads only an atomic copy of the ejection time, so it takes no lock.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "util.h"

#define MAX_TARGETS 32
#define MAX_ENDPOINTS 256
/* A reported load older than this no longer counts: an instance that is not chosen
 * reports nothing, and a stale high figure would keep it unchosen for good. */
#define LOAD_FRESH_MS 1000

struct gw_endpoint {
    struct gw_upstream *up;
    char *addr;
    nng_socket sock;
    atomic_int pipes;       /* connected pipes */
    atomic_int inflight;
    pthread_mutex_t mtx;    /* guards calls and live_pipes */
    uint32_t live_pipes[8]; /* pipes that reached ADD_POST: only those count down */
    struct gw_upcall *calls;    /* in flight, to cancel when the connection is lost */
    int retired_at;         /* refresh generation it left the set, 0 while live */
    bool closed;
    struct gw_endpoint *next_retired;
    atomic_uint load;               /* the load its last Result reported ... */
    _Atomic int64_t load_at_ms;     /* ... and when */
    _Atomic int64_t ejected_until;  /* copy of ol.until_ms for choosing without the lock */
    struct gw_outlier ol;           /* under up->omtx */
    struct cn_series *attempt_series;
};

struct epset {
    int n;
    int retired_at;
    struct epset *next_old;
    struct gw_endpoint *eps[];
};

struct target {
    char *addr;             /* as configured */
    char *host, *port;      /* for tcp:// names to resolve; NULL for fixed addresses */
};

struct gw_upstream {
    char *name;
    size_t max_msg;
    struct target targets[MAX_TARGETS];
    int ntargets;
    _Atomic(struct epset *) set;
    struct epset *old_sets;            /* replaced, waiting to be freed */
    struct gw_endpoint *retired;       /* left the set, waiting for calls to end */
    int generation;
    pthread_mutex_t omtx;              /* outlier state of every endpoint */
    struct cn_series *g_connected, *g_ejected, *c_ejections;
};

static struct cn_metric *m_ejections, *m_instances, *m_attempt;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    m_ejections = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_ejections_total",
                                "Instances ejected for consecutive failures, by service", "service", NULL, 0);
    m_instances = cn_metric_new(CN_METRIC_GAUGE, "cairn_gateway_instances",
                                "Instances by service and state (connected and taking traffic, or ejected)",
                                "service,state", NULL, 0);
    m_attempt = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_gateway_upstream_attempt_seconds",
                              "Time of one upstream attempt, by service and instance", "service,instance", NULL, 0);
}

/* ---- outlier bookkeeping (pure) ---- */

int64_t gw_outlier_fail(struct gw_outlier *o, int64_t now_ms, const struct gw_outlier_conf *c, bool may_eject)
{
    if (c->failures <= 0 || gw_outlier_ejected(o, now_ms))
        return 0;   /* disabled, or a late answer to a call sent before the ejection */
    if (o->until_ms != 0) {
        o->until_ms = 0;
        o->probing = true;
    }
    o->failures++;
    if ((!o->probing && o->failures < c->failures) || !may_eject)
        return 0;
    int64_t s = c->base_s > 0 ? c->base_s : 1;
    for (int i = 0; i < o->ejections && s < c->max_s; i++)
        s *= 2;
    if (c->max_s > 0 && s > c->max_s)
        s = c->max_s;
    o->ejections++;
    o->failures = 0;
    o->probing = false;
    o->until_ms = now_ms + s * 1000;
    return s * 1000;
}

void gw_outlier_ok(struct gw_outlier *o)
{
    o->until_ms = 0;
    o->failures = 0;
    o->ejections = 0;
    o->probing = false;
}

int gw_outlier_max_ejected(int n, int64_t max_percent)
{
    int64_t k = (int64_t)n * max_percent / 100;
    if (k > n - 1)
        k = n - 1;
    return k < 0 ? 0 : (int)k;
}

int gw_p2c(const unsigned *score, int n, uint64_t rnd)
{
    if (n <= 0)
        return -1;
    if (n == 1)
        return 0;
    int a = (int)(rnd % (uint64_t)n);
    int b = (int)((rnd / (uint64_t)n) % (uint64_t)(n - 1));
    if (b >= a)
        b++;
    return score[b] < score[a] ? b : a;
}

/* Sets the instance gauges from the current set. Any thread. */
static void gauges_update(struct gw_upstream *u)
{
    struct epset *set = atomic_load(&u->set);
    int64_t now = cn_mono_ms();
    int up = 0, out = 0;
    for (int i = 0; set && i < set->n; i++) {
        int64_t until = atomic_load(&set->eps[i]->ejected_until);
        if (until != 0 && now < until)
            out++;
        else if (atomic_load(&set->eps[i]->pipes) > 0)
            up++;
    }
    cn_series_set(u->g_connected, up);
    cn_series_set(u->g_ejected, out);
}

/* An ejection of ep ran out: it takes traffic again, on probation. Under u->omtx. */
static void returned_locked(struct gw_upstream *u, struct gw_endpoint *ep)
{
    ep->ol.until_ms = 0;
    ep->ol.probing = true;
    atomic_store(&ep->ejected_until, 0);
    cn_log(CN_LOG_INFO, "GW-UPSTREAM-RETURNED", NULL, "%s instance %s takes traffic again after its ejection",
           u->name, ep->addr);
}

/* Instances of u's current set ejected at now. Under u->omtx. */
static int ejected_locked(struct gw_upstream *u, int64_t now, bool *member, const struct gw_endpoint *ep)
{
    struct epset *set = atomic_load(&u->set);
    int n = 0;
    *member = false;
    for (int i = 0; set && i < set->n; i++) {
        n += gw_outlier_ejected(&set->eps[i]->ol, now);
        *member |= set->eps[i] == ep;
    }
    return n;
}

/* nng fires REM_POST for every pipe that saw ADD_PRE, also for one that failed before
 * ADD_POST (a peer of the wrong protocol, a pipe closed while starting): only pipes that
 * were counted up are counted down, or the count would drift below zero for good. */
static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct gw_endpoint *ep = arg;
    uint32_t id = nng_pipe_id(p);
    int counted = 0;
    pthread_mutex_lock(&ep->mtx);
    for (size_t i = 0; i < sizeof ep->live_pipes / sizeof ep->live_pipes[0]; i++) {
        if (ev == NNG_PIPE_EV_ADD_POST && ep->live_pipes[i] == 0) {
            ep->live_pipes[i] = id;
            counted = 1;
            break;
        }
        if (ev == NNG_PIPE_EV_REM_POST && ep->live_pipes[i] == id) {
            ep->live_pipes[i] = 0;
            counted = 1;
            break;
        }
    }
    pthread_mutex_unlock(&ep->mtx);
    if (!counted)
        return;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        if (atomic_fetch_add(&ep->pipes, 1) == 0) {
            cn_log(CN_LOG_INFO, "GW-UPSTREAM-UP", NULL, "%s connected at %s", ep->up->name, ep->addr);
            gauges_update(ep->up);
        }
    } else if (atomic_fetch_sub(&ep->pipes, 1) == 1) {
        gauges_update(ep->up);
        cn_log(CN_LOG_WARN, "GW-UPSTREAM-DOWN", NULL, "%s lost at %s", ep->up->name, ep->addr);
        /* nng runs pipe callbacks with no lock held, and a cancelled aio completes on
         * nng's task threads, so cancelling here cannot deadlock. */
        pthread_mutex_lock(&ep->mtx);
        for (struct gw_upcall *c = ep->calls; c; c = c->ep_next)
            nng_aio_cancel(c->aio);
        pthread_mutex_unlock(&ep->mtx);
    }
}

static void calls_add(struct gw_endpoint *ep, struct gw_upcall *c)
{
    pthread_mutex_lock(&ep->mtx);
    c->ep_prev = NULL;
    c->ep_next = ep->calls;
    if (ep->calls)
        ep->calls->ep_prev = c;
    ep->calls = c;
    pthread_mutex_unlock(&ep->mtx);
}

static void calls_remove(struct gw_endpoint *ep, struct gw_upcall *c)
{
    pthread_mutex_lock(&ep->mtx);
    if (c->ep_prev)
        c->ep_prev->ep_next = c->ep_next;
    else
        ep->calls = c->ep_next;
    if (c->ep_next)
        c->ep_next->ep_prev = c->ep_prev;
    c->ep_prev = c->ep_next = NULL;
    pthread_mutex_unlock(&ep->mtx);
}

static struct gw_endpoint *endpoint_open(struct gw_upstream *u, const char *addr)
{
    struct gw_endpoint *ep = cn_calloc(1, sizeof *ep);
    ep->up = u;
    ep->addr = cn_strdup(addr);
    pthread_mutex_init(&ep->mtx, NULL);
    ep->attempt_series = cn_metric_series(m_attempt, (const char *[]){u->name, addr});
    if (cn_rpc_req_socket(&ep->sock, u->max_msg) != CN_OK)
        abort();
    nng_pipe_notify(ep->sock, NNG_PIPE_EV_ADD_POST, on_pipe, ep);
    nng_pipe_notify(ep->sock, NNG_PIPE_EV_REM_POST, on_pipe, ep);
    if (nng_dial(ep->sock, ep->addr, NULL, NNG_FLAG_NONBLOCK) != 0) {
        cn_log(CN_LOG_ERROR, "GW-UPSTREAM-BAD-ADDR", NULL, "%s: cannot dial '%s'", u->name, addr);
        nng_close(ep->sock);
        pthread_mutex_destroy(&ep->mtx);
        free(ep->addr);
        free(ep);
        return NULL;
    }
    return ep;
}

static void endpoint_free(struct gw_endpoint *ep)
{
    if (!ep->closed)
        nng_close(ep->sock);
    pthread_mutex_destroy(&ep->mtx);
    free(ep->addr);
    free(ep);
}

/* Splits "tcp://host:port" into a name to resolve; other forms stay fixed. Returns 0,
 * or CN_EINVAL for a tcp:// address without a port. */
static int target_parse(struct target *t, const char *addr)
{
    t->addr = cn_strdup(addr);
    t->host = t->port = NULL;
    if (strncmp(addr, "tcp://", 6) != 0)
        return CN_OK;
    const char *hp = addr + 6;
    if (*hp == '[')    /* IPv6 literal: fixed */
        return strstr(hp, "]:") ? CN_OK : CN_EINVAL;
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || colon == hp || colon[1] == '\0')
        return CN_EINVAL;
    char *host = cn_strndup(hp, (size_t)(colon - hp));
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || strcmp(host, "*") == 0) {
        free(host);
        return CN_OK;   /* an IP literal: nothing to resolve */
    }
    t->host = host;
    t->port = cn_strdup(colon + 1);
    return CN_OK;
}

/* Appends the concrete addresses of t to out (deduplicated). */
static void target_resolve(struct gw_upstream *u, const struct target *t, char **out, int *n)
{
    char buf[128];
    if (t->host == NULL) {
        for (int i = 0; i < *n; i++)
            if (strcmp(out[i], t->addr) == 0)
                return;
        if (*n < MAX_ENDPOINTS)
            out[(*n)++] = cn_strdup(t->addr);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rv = getaddrinfo(t->host, t->port, &hints, &res);
    if (rv != 0) {
        cn_log(CN_LOG_WARN, "GW-UPSTREAM-RESOLVE", NULL, "%s: cannot resolve %s: %s", u->name, t->host,
               gai_strerror(rv));
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        if (ai->ai_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof ip);
            snprintf(buf, sizeof buf, "tcp://%s:%s", ip, t->port);
        } else if (ai->ai_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof ip);
            snprintf(buf, sizeof buf, "tcp://[%s]:%s", ip, t->port);
        } else {
            continue;
        }
        int dup = 0;
        for (int i = 0; i < *n; i++)
            dup |= strcmp(out[i], buf) == 0;
        if (!dup && *n < MAX_ENDPOINTS)
            out[(*n)++] = cn_strdup(buf);
    }
    freeaddrinfo(res);
}

void gw_upstream_refresh(struct gw_upstream *u)
{
    char *addrs[MAX_ENDPOINTS];
    int n = 0;
    u->generation++;
    for (int i = 0; i < u->ntargets; i++)
        target_resolve(u, &u->targets[i], addrs, &n);

    struct epset *cur = atomic_load(&u->set);
    /* A name that stopped resolving keeps its last instances rather than dropping all. */
    if (n == 0 && cur && cur->n > 0)
        goto reclaim;

    struct epset *next = cn_calloc(1, sizeof *next + (size_t)n * sizeof next->eps[0]);
    int changed = cur == NULL || cur->n != n;
    for (int i = 0; i < n; i++) {
        struct gw_endpoint *ep = NULL;
        for (int j = 0; cur && j < cur->n; j++)
            if (strcmp(cur->eps[j]->addr, addrs[i]) == 0)
                ep = cur->eps[j];
        if (ep == NULL) {
            ep = endpoint_open(u, addrs[i]);
            changed = 1;
            if (ep)
                cn_log(CN_LOG_INFO, "GW-UPSTREAM-ADDED", NULL, "%s: instance %s", u->name, addrs[i]);
        }
        if (ep)
            next->eps[next->n++] = ep;
    }
    if (!changed) {
        free(next);
        goto reclaim;
    }
    for (int j = 0; cur && j < cur->n; j++) {
        int kept = 0;
        for (int i = 0; i < next->n; i++)
            kept |= next->eps[i] == cur->eps[j];
        if (!kept) {
            cn_log(CN_LOG_INFO, "GW-UPSTREAM-REMOVED", NULL, "%s: instance %s gone", u->name, cur->eps[j]->addr);
            cur->eps[j]->retired_at = u->generation;
            cur->eps[j]->next_retired = u->retired;
            u->retired = cur->eps[j];
        }
    }
    atomic_store(&u->set, next);
    gauges_update(u);
    if (cur) {
        cur->retired_at = u->generation;
        cur->next_old = u->old_sets;
        u->old_sets = cur;
    }

reclaim:
    for (int i = 0; i < n; i++)
        free(addrs[i]);
    /* Old sets: two refreshes later nobody still reads them. */
    for (struct epset **pp = &u->old_sets; *pp;) {
        struct epset *s = *pp;
        if (u->generation - s->retired_at >= 2) {
            *pp = s->next_old;
            free(s);
        } else {
            pp = &s->next_old;
        }
    }
    /* Retired endpoints: close when idle, free two refreshes after that. */
    for (struct gw_endpoint **pp = &u->retired; *pp;) {
        struct gw_endpoint *ep = *pp;
        /* Not in the refresh that retired it: a loop thread may still have picked it
         * from the set just replaced and be opening a call on it. */
        if (!ep->closed && u->generation - ep->retired_at >= 1 && atomic_load(&ep->inflight) == 0) {
            nng_close(ep->sock);
            ep->closed = true;
            ep->retired_at = u->generation;
        }
        if (ep->closed && u->generation - ep->retired_at >= 2) {
            *pp = ep->next_retired;
            endpoint_free(ep);
        } else {
            pp = &ep->next_retired;
        }
    }
}

struct gw_upstream *gw_upstream_new(const char *service, const char *addrs, size_t max_msg)
{
    pthread_once(&metrics_once, metrics_init);
    struct gw_upstream *u = cn_calloc(1, sizeof *u);
    u->name = cn_strdup(service);
    u->max_msg = max_msg;
    pthread_mutex_init(&u->omtx, NULL);
    u->g_connected = cn_metric_series(m_instances, (const char *[]){service, "connected"});
    u->g_ejected = cn_metric_series(m_instances, (const char *[]){service, "ejected"});
    u->c_ejections = cn_metric_series(m_ejections, (const char *[]){service});

    const char *p = addrs;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            if (u->ntargets == MAX_TARGETS) {
                gw_upstream_free(u);
                return NULL;
            }
            char *a = cn_strndup(p, len);
            int rv = target_parse(&u->targets[u->ntargets++], a);
            free(a);
            if (rv != CN_OK) {
                cn_log(CN_LOG_ERROR, "GW-UPSTREAM-BAD-ADDR", NULL, "%s: malformed address in '%s'", service, addrs);
                gw_upstream_free(u);
                return NULL;
            }
        }
        p = comma ? comma + 1 : NULL;
    }
    if (u->ntargets == 0) {
        gw_upstream_free(u);
        return NULL;
    }
    gw_upstream_refresh(u);
    /* A fixed address that nng cannot dial is a configuration error. */
    struct epset *set = atomic_load(&u->set);
    int fixed = 0;
    for (int i = 0; i < u->ntargets; i++)
        fixed += u->targets[i].host == NULL;
    if (fixed && (set == NULL || set->n < fixed)) {
        gw_upstream_free(u);
        return NULL;
    }
    return u;
}

void gw_upstream_free(struct gw_upstream *u)
{
    if (u == NULL)
        return;
    struct epset *set = atomic_load(&u->set);
    for (int i = 0; set && i < set->n; i++)
        endpoint_free(set->eps[i]);
    free(set);
    while (u->old_sets) {
        struct epset *s = u->old_sets;
        u->old_sets = s->next_old;
        free(s);
    }
    while (u->retired) {
        struct gw_endpoint *ep = u->retired;
        u->retired = ep->next_retired;
        endpoint_free(ep);
    }
    for (int i = 0; i < u->ntargets; i++) {
        free(u->targets[i].addr);
        free(u->targets[i].host);
        free(u->targets[i].port);
    }
    pthread_mutex_destroy(&u->omtx);
    free(u->name);
    free(u);
}

const char *gw_upstream_name(const struct gw_upstream *u) { return u->name; }

int gw_upstream_connected(const struct gw_upstream *u)
{
    struct epset *set = atomic_load(&((struct gw_upstream *)u)->set);
    int n = 0;
    for (int i = 0; set && i < set->n; i++)
        n += atomic_load(&set->eps[i]->pipes) > 0;
    return n;
}

/* The instance for a call (see upstream.h), or NULL with *why: CN_EUNAVAIL when none is
 * connected, CN_EFULL when every eligible one is saturated. */
static struct gw_endpoint *pick(struct gw_upstream *u, const struct gw_pick *p, int *why)
{
    struct epset *set = atomic_load(&u->set);
    struct gw_endpoint *cand[MAX_ENDPOINTS];
    unsigned score[MAX_ENDPOINTS];
    int n = 0, connected = 0;
    int64_t now = cn_mono_ms();
    *why = CN_EUNAVAIL;
    for (int i = 0; set && i < set->n; i++) {
        struct gw_endpoint *ep = set->eps[i];
        if (atomic_load(&ep->pipes) <= 0)
            continue;
        connected++;
        int64_t until = atomic_load(&ep->ejected_until);
        if (until != 0) {
            if (now < until)
                continue;
            pthread_mutex_lock(&u->omtx);
            if (ep->ol.until_ms != 0 && now >= ep->ol.until_ms)
                returned_locked(u, ep);
            else if (ep->ol.until_ms == 0)
                atomic_store(&ep->ejected_until, 0);
            pthread_mutex_unlock(&u->omtx);
            gauges_update(u);
        }
        cand[n++] = ep;
    }
    /* Every connected instance ejected (the config changed under them): better any
     * instance than none (Envoy's panic mode). */
    if (n == 0) {
        for (int i = 0; set && i < set->n && connected; i++)
            if (atomic_load(&set->eps[i]->pipes) > 0)
                cand[n++] = set->eps[i];
        if (n == 0)
            return NULL;
    }
    if (p && p->max_outstanding > 0) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (atomic_load(&cand[i]->inflight) < p->max_outstanding)
                cand[k++] = cand[i];
        if (k == 0) {
            *why = CN_EFULL;
            return NULL;
        }
        n = k;
    }
    if (p && p->nexclude > 0) {
        int k = 0;
        struct gw_endpoint *kept[MAX_ENDPOINTS];
        for (int i = 0; i < n; i++) {
            bool tried = false;
            for (int j = 0; j < p->nexclude; j++)
                tried |= p->exclude[j] == cand[i];
            if (!tried)
                kept[k++] = cand[i];
        }
        if (k > 0) {
            memcpy(cand, kept, (size_t)k * sizeof cand[0]);
            n = k;
        }
    }
    for (int i = 0; i < n; i++) {
        struct gw_endpoint *ep = cand[i];
        unsigned load = now - atomic_load(&ep->load_at_ms) < LOAD_FRESH_MS ? atomic_load(&ep->load) : 0;
        score[i] = (unsigned)atomic_load(&ep->inflight) + load;
    }
    return cand[gw_p2c(score, n, cn_fast_random())];
}

/* The receive's completion, on an nng thread. The send has no callback: a completed
 * send would wake one of nng's task threads, which then contended with the loop for the
 * socket's lock, once per call, for nothing. The receive is started at once instead
 * (nng's REQ takes it as soon as the request is queued). A reply means the request went
 * out; any other end is settled on the loop (end_unanswered). */
static void on_aio(void *arg)
{
    struct gw_upcall *c = arg;
    c->rv = nng_aio_result(c->aio);
    if (c->rv == 0) {
        c->sent = true;
        c->reply = nng_aio_get_msg(c->aio);
        /* A send that waited for a busy pipe is finished by nng after it leaves the
         * socket's lock, and the reply can come in between: until then the aio still
         * has its cancel function, which nng_aio_free would run on the closed context.
         * The wait covers only that last step. */
        nng_aio_wait(c->send_aio);
    }
    calls_remove(c->ep, c);
    /* inflight goes down on the loop, once the call is freed (gw_upstream_on_messages). */
    h2o_multithread_send_message(c->rx, &c->super);
}

/* A call whose receive ended without a reply (timeout, cancel, lost connection) leaves
 * its send done, or queued and abandoned: nng 1.5.2 resets the request when its receive
 * is cancelled or times out, but leaves the send's aio scheduled, and cancelling that aio
 * then dereferences the freed request. Closing the context ends such a send
 * (NNG_ECLOSED) safely, after which its result says whether the request was sent.
 * The close frees nng's context at once, so it waits until no thread can still be
 * cancelling the receive: nng calls a cancel function outside the aio's lock, and that
 * function reads the context. Hence here, on the loop, after nng_aio_free(c->aio) has
 * waited for nng's expiry thread; the loop's own cancels (gw_upcall_cancel) are done,
 * and calls_remove in on_aio has shut out the lost-connection sweep. */
static void end_unanswered(struct gw_upcall *c)
{
    nng_ctx_close(c->ctx);
    c->ctx_closed = true;
    /* Brief: closing the context finishes a queued send before it returns, and a send
     * nng is finishing on another thread needs only that thread's last step. */
    nng_aio_wait(c->send_aio);
    int srv = nng_aio_result(c->send_aio);
    c->sent = srv == 0;
    if (srv != 0) {
        /* Ours again, or already freed by nng (NULL). */
        nng_msg_free(nng_aio_get_msg(c->send_aio));
        nng_aio_set_msg(c->send_aio, NULL);
        /* The receive found no request: the send's failure is the reason. */
        if (c->rv == NNG_ESTATE)
            c->rv = srv;
    }
}

int gw_upstream_call_ex(struct gw_upstream *u, nng_msg *msg, int timeout_ms, h2o_multithread_receiver_t *rx,
                        void (*on_done)(struct gw_upcall *), void *data, const struct gw_pick *p,
                        struct gw_upcall **out)
{
    int why = CN_EUNAVAIL;
    /* Twice: the resolver may close a retired endpoint between pick and open. */
    for (int attempt = 0; attempt < 2; attempt++) {
        struct gw_endpoint *ep = pick(u, p, &why);
        if (ep == NULL)
            return why;
        struct gw_upcall *c = cn_calloc(1, sizeof *c);
        atomic_fetch_add(&ep->inflight, 1);
        if (nng_ctx_open(&c->ctx, ep->sock) != 0) {
            atomic_fetch_sub(&ep->inflight, 1);
            free(c);
            why = CN_EUNAVAIL;
            continue;
        }
        c->up = u;
        c->ep = ep;
        c->on_done = on_done;
        c->data = data;
        c->rx = rx;
        c->start_us = cn_mono_us();
        if (nng_aio_alloc(&c->aio, on_aio, c) != 0 || nng_aio_alloc(&c->send_aio, NULL, NULL) != 0)
            abort();
        /* The receive's timeout bounds the call; the send never times out on its own
         * (see on_aio). */
        nng_aio_set_timeout(c->send_aio, NNG_DURATION_INFINITE);
        nng_aio_set_timeout(c->aio, timeout_ms > 0 ? timeout_ms : NNG_DURATION_DEFAULT);
        nng_aio_set_msg(c->send_aio, msg);
        calls_add(ep, c);
        nng_ctx_send(c->ctx, c->send_aio);
        nng_ctx_recv(c->ctx, c->aio);
        /* Lost the connection between pick and here: the cancel sweep may have missed us. */
        if (atomic_load(&ep->pipes) <= 0)
            nng_aio_cancel(c->aio);
        *out = c;
        return CN_OK;
    }
    return why;
}

int gw_upstream_call(struct gw_upstream *u, nng_msg *msg, int timeout_ms, h2o_multithread_receiver_t *rx,
                     void (*on_done)(struct gw_upcall *), void *data, struct gw_upcall **out)
{
    return gw_upstream_call_ex(u, msg, timeout_ms, rx, on_done, data, NULL, out);
}

const char *gw_upcall_instance(const struct gw_upcall *call) { return call->ep->addr; }

void gw_upcall_report(struct gw_upcall *call, bool failed, bool have_load, uint32_t load,
                      const struct gw_outlier_conf *oc)
{
    struct gw_endpoint *ep = call->ep;
    struct gw_upstream *u = call->up;
    int64_t now = cn_mono_ms();
    if (have_load) {
        atomic_store(&ep->load, load);
        atomic_store(&ep->load_at_ms, now);
    }
    if (oc == NULL)
        return;
    int64_t ejected_ms = 0;
    pthread_mutex_lock(&u->omtx);
    if (ep->ol.until_ms != 0 && now >= ep->ol.until_ms)
        returned_locked(u, ep);
    if (!failed) {
        if (!gw_outlier_ejected(&ep->ol, now))
            gw_outlier_ok(&ep->ol);
    } else {
        bool member;
        int out = ejected_locked(u, now, &member, ep);
        struct epset *set = atomic_load(&u->set);
        bool may = member && out < gw_outlier_max_ejected(set ? set->n : 0, oc->max_percent);
        ejected_ms = gw_outlier_fail(&ep->ol, now, oc, may);
        if (ejected_ms) {
            atomic_store(&ep->ejected_until, ep->ol.until_ms);
            cn_log(CN_LOG_WARN, "GW-UPSTREAM-EJECTED", NULL, "%s instance %s ejected for %lld s (ejection %d in a row)",
                   u->name, ep->addr, (long long)(ejected_ms / 1000), ep->ol.ejections);
        }
    }
    pthread_mutex_unlock(&u->omtx);
    if (ejected_ms) {
        cn_series_add(u->c_ejections, 1);
        gauges_update(u);
    }
}

void gw_upcall_cancel(struct gw_upcall *call)
{
    atomic_store(&call->cancelled, true);
    nng_aio_cancel(call->aio);
}

void gw_upstream_on_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct gw_upcall *c = H2O_STRUCT_FROM_MEMBER(struct gw_upcall, super.link, messages->next);
        h2o_linklist_unlink(&c->super.link);
        struct gw_endpoint *ep = c->ep;
        /* on_aio has returned or is returning; nng_aio_free waits for it, and for
         * nng's expiry thread. */
        nng_aio_free(c->aio);
        c->aio = NULL;
        if (c->rv != 0)
            end_unanswered(c);
        if (!atomic_load(&c->cancelled)) {
            cn_series_observe(ep->attempt_series, (double)(cn_mono_us() - c->start_us) / 1e6);
            if (c->on_done)
                c->on_done(c);
        }
        /* The context closes before the send's aio is freed (see end_unanswered). */
        if (!c->ctx_closed)
            nng_ctx_close(c->ctx);
        nng_aio_free(c->send_aio);
        if (c->reply)
            nng_msg_free(c->reply);
        free(c);
        /* Last: the resolver closes a retired endpoint's socket once this reaches 0. */
        atomic_fetch_sub(&ep->inflight, 1);
    }
}
