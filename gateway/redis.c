/* redis.c — the gateway's per-loop-thread Redis connection (redis.h): hiredis's async
 * context attached to the h2o evloop, per-command deadlines, and the up/down state
 * machine with probing.
 *
 * States:  CONNECTING --connected--> UP --timeout/error--> DOWN --probe_ms--> PROBING
 *          PROBING --PONG--> UP,  PROBING/CONNECTING --failure--> DOWN
 * Commands are sent in CONNECTING (hiredis buffers them until the socket is up) and UP;
 * never in DOWN or PROBING. Commands on one connection are answered in order, so the
 * oldest waiting command's deadline is always the first to expire; a deadline missed
 * takes the connection down (Redis that slow is treated as gone, and answers that
 * arrive after it would be for requests that already fell back).
 *
 * To add a state, touch enum state, go_down/go_up and gw_redis_usable.
 */
#include "redis.h"

#include <hiredis/async.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

enum state { CONNECTING, UP, DOWN, PROBING };

struct gw_redis {
    h2o_loop_t *loop;
    char host[256];
    int port;
    enum state state;
    bool counted_down;            /* this connection is in down_count */
    redisAsyncContext *ac;        /* NULL while DOWN */
    h2o_timeout_t cmd_timeout;    /* per-command deadlines */
    h2o_timeout_t probe_timeout;
    h2o_timeout_entry_t probe_entry;
    gw_redis_on_connect on_connect;
    void *on_connect_data;
    char why[128];                /* last failure, for the log */
};

struct gw_redis_ticket {
    struct gw_redis *r;
    gw_redis_cb cb;               /* NULL once cancelled */
    void *data;
    h2o_timeout_entry_t timer;
};

/* Connections down across the process: the log and gauge follow it. */
static atomic_int down_count;
static struct cn_series *up_gauge;
static pthread_once_t gauge_once = PTHREAD_ONCE_INIT;

static void gauge_init(void)
{
    up_gauge = cn_metric_series(cn_metric_new(CN_METRIC_GAUGE, "cairn_gateway_redis_up",
                                              "1 while every gateway thread reaches Redis (rate limits are global), "
                                              "0 while some use the local fallback",
                                              NULL, NULL, 0),
                                NULL);
    cn_series_set(up_gauge, 1);
}

static void connect_now(struct gw_redis *r, enum state st);

/* ---- hiredis <-> h2o socket adapter ---- */

/* One per hiredis context: the h2o socket over its fd. Freed by hiredis's cleanup hook,
 * which runs whenever and however the context is freed. */
struct adapter {
    redisAsyncContext *ac;
    h2o_socket_t *sock;
};

static void on_sock_read(h2o_socket_t *sock, const char *err)
{
    (void)err;
    struct adapter *a = sock->data;
    redisAsyncHandleRead(a->ac);
}

static void on_sock_write(h2o_socket_t *sock, const char *err)
{
    (void)err;
    struct adapter *a = sock->data;
    redisAsyncHandleWrite(a->ac);
}

static void ev_add_read(void *p)
{
    struct adapter *a = p;
    h2o_socket_read_start(a->sock, on_sock_read);
}

static void ev_del_read(void *p)
{
    struct adapter *a = p;
    h2o_socket_read_stop(a->sock);
}

static void ev_add_write(void *p)
{
    struct adapter *a = p;
    /* h2o's write notification is one-shot; hiredis asks again while it has bytes left. */
    if (!h2o_socket_is_writing(a->sock))
        h2o_socket_notify_write(a->sock, on_sock_write);
}

/* hiredis is done with the fd: h2o closes it (and stops polling it), so hiredis must not
 * close it again. */
static void ev_cleanup(void *p)
{
    struct adapter *a = p;
    h2o_socket_close(a->sock);
    a->ac->c.fd = -1;
    free(a);
}

static void attach(struct gw_redis *r, redisAsyncContext *ac)
{
    struct adapter *a = cn_calloc(1, sizeof *a);
    a->ac = ac;
    a->sock = h2o_evloop_socket_create(r->loop, ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    a->sock->data = a;
    ac->ev.data = a;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.cleanup = ev_cleanup;
}

/* ---- state ---- */

static void set_counted_down(struct gw_redis *r, bool down)
{
    if (r->counted_down == down)
        return;
    r->counted_down = down;
    if (down) {
        if (atomic_fetch_add(&down_count, 1) == 0) {
            cn_series_set(up_gauge, 0);
            cn_log(CN_LOG_WARN, "GW-REDIS-DOWN", NULL,
                   "Redis at %s:%d: %s; rate limits use their on_redis_down fallback, probing it again", r->host,
                   r->port, r->why);
        }
    } else if (atomic_fetch_sub(&down_count, 1) == 1) {
        cn_series_set(up_gauge, 1);
        cn_log(CN_LOG_INFO, "GW-REDIS-UP", NULL, "Redis at %s:%d answers again; rate limits are global again",
               r->host, r->port);
    }
}

static void on_probe_timer(h2o_timeout_entry_t *e)
{
    struct gw_redis *r = (struct gw_redis *)((char *)e - offsetof(struct gw_redis, probe_entry));
    connect_now(r, PROBING);
}

/* Enters DOWN: drops the context (failing every waiting command) and arms the probe. */
static void go_down(struct gw_redis *r, const char *why)
{
    if (why)
        snprintf(r->why, sizeof r->why, "%s", why);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = DOWN;
    set_counted_down(r, true);
    if (ac) {
        ac->data = NULL;              /* its callbacks must not come back here */
        redisAsyncFree(ac);           /* calls every pending callback with NULL */
    }
    if (!h2o_timeout_is_linked(&r->probe_entry))
        h2o_timeout_link(r->loop, &r->probe_timeout, &r->probe_entry);
}

static void go_up(struct gw_redis *r)
{
    r->state = UP;
    set_counted_down(r, false);
}

static void on_connected(const redisAsyncContext *ac, int status)
{
    struct gw_redis *r = ac->data;
    if (r == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context itself after this callback. */
        char why[128];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        r->ac = NULL;
        go_down(r, why);
        return;
    }
    if (r->state == CONNECTING)
        go_up(r);
}

static void on_disconnected(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct gw_redis *r = ac->data;
    if (r == NULL || r->ac != ac)
        return;
    char why[128];
    snprintf(why, sizeof why, "connection lost: %s", ac->err ? ac->errstr : "closed by the server");
    r->ac = NULL;   /* hiredis frees it after this callback */
    go_down(r, why);
}

static int send_cmd(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen, gw_redis_cb cb,
                    void *data, struct gw_redis_ticket **ticket);

/* The probe's PING answered, failed or timed out (a connect that hangs ends here too). */
static void on_pong(void *data, const redisReply *rep)
{
    struct gw_redis *r = data;
    if (r->state != PROBING)
        return;   /* go_down already ran: this is its NULL callback */
    if (rep && rep->type == REDIS_REPLY_STATUS) {
        go_up(r);
        return;
    }
    go_down(r, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no answer to PING");
}

/* Starts a connection in state st (CONNECTING: commands may queue; PROBING: a PING
 * decides). */
static void connect_now(struct gw_redis *r, enum state st)
{
    r->state = st;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL)
        abort();
    if (ac->err) {
        char why[160];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        redisAsyncFree(ac);
        go_down(r, why);
        return;
    }
    r->ac = ac;
    ac->data = r;
    attach(r, ac);
    redisAsyncSetConnectCallback(ac, on_connected);
    redisAsyncSetDisconnectCallback(ac, on_disconnected);
    if (r->on_connect)
        r->on_connect(r, r->on_connect_data);
    if (st == PROBING) {
        const char *argv[] = {"PING"};
        size_t len[] = {4};
        if (send_cmd(r, 1, argv, len, on_pong, r, NULL) != CN_OK)
            go_down(r, "cannot send PING");
    }
}

struct gw_redis *gw_redis_new(h2o_loop_t *loop, const char *host, int port, int64_t timeout_ms, int64_t probe_ms,
                              gw_redis_on_connect on_connect, void *data)
{
    pthread_once(&gauge_once, gauge_init);
    struct gw_redis *r = cn_calloc(1, sizeof *r);
    r->loop = loop;
    snprintf(r->host, sizeof r->host, "%s", host);
    r->port = port;
    r->on_connect = on_connect;
    r->on_connect_data = data;
    h2o_timeout_init(loop, &r->cmd_timeout, (uint64_t)timeout_ms);
    h2o_timeout_init(loop, &r->probe_timeout, (uint64_t)probe_ms);
    r->probe_entry.cb = on_probe_timer;
    connect_now(r, CONNECTING);
    return r;
}

void gw_redis_free(struct gw_redis *r)
{
    if (r == NULL)
        return;
    if (h2o_timeout_is_linked(&r->probe_entry))
        h2o_timeout_unlink(&r->probe_entry);
    r->on_connect = NULL;
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    /* A connection going away is not Redis coming back: no GW-REDIS-UP for it. */
    if (r->counted_down && atomic_fetch_sub(&down_count, 1) == 1)
        cn_series_set(up_gauge, 1);
    h2o_timeout_dispose(r->loop, &r->cmd_timeout);
    h2o_timeout_dispose(r->loop, &r->probe_timeout);
    free(r);
}

void gw_redis_set_timing(struct gw_redis *r, int64_t timeout_ms, int64_t probe_ms)
{
    /* Entries are kept in the order they were linked and expire at registered_at +
     * timeout, so changing the value in place keeps the list ordered. */
    r->cmd_timeout.timeout = (uint64_t)timeout_ms;
    r->probe_timeout.timeout = (uint64_t)probe_ms;
}

bool gw_redis_usable(const struct gw_redis *r)
{
    return r->ac != NULL && (r->state == UP || r->state == CONNECTING);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct gw_redis_ticket *t = privdata;
    if (h2o_timeout_is_linked(&t->timer))
        h2o_timeout_unlink(&t->timer);
    if (t->cb)
        t->cb(t->data, reply);
    free(t);
}

static void on_cmd_timeout(h2o_timeout_entry_t *e)
{
    struct gw_redis_ticket *t = (struct gw_redis_ticket *)((char *)e - offsetof(struct gw_redis_ticket, timer));
    struct gw_redis *r = t->r;
    char why[96];
    snprintf(why, sizeof why, "no answer within %llu ms", (unsigned long long)r->cmd_timeout.timeout);
    go_down(r, why);   /* fails t and every other waiting command */
}

/* Sends a command with a deadline, whatever the state (the probe's PING goes this way). */
static int send_cmd(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen, gw_redis_cb cb,
                    void *data, struct gw_redis_ticket **ticket)
{
    if (r->ac == NULL)
        return CN_EUNAVAIL;
    struct gw_redis_ticket *t = cn_calloc(1, sizeof *t);
    t->r = r;
    t->cb = cb;
    t->data = data;
    t->timer.cb = on_cmd_timeout;
    if (redisAsyncCommandArgv(r->ac, on_reply, t, argc, argv, argvlen) != REDIS_OK) {
        free(t);
        return CN_EUNAVAIL;
    }
    h2o_timeout_link(r->loop, &r->cmd_timeout, &t->timer);
    if (ticket)
        *ticket = t;
    return CN_OK;
}

int gw_redis_command(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen, gw_redis_cb cb,
                     void *data, struct gw_redis_ticket **ticket)
{
    if (!gw_redis_usable(r))
        return CN_EUNAVAIL;
    return send_cmd(r, argc, argv, argvlen, cb, data, ticket);
}

void gw_redis_command_noreply(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen)
{
    if (r->ac)
        redisAsyncCommandArgv(r->ac, NULL, NULL, argc, argv, argvlen);
}

void gw_redis_cancel(struct gw_redis_ticket *t)
{
    if (t == NULL)
        return;
    t->cb = NULL;
    if (h2o_timeout_is_linked(&t->timer))
        h2o_timeout_unlink(&t->timer);
}

int gw_redis_addr_parse(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return CN_EINVAL;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    long long p;
    if (hl == 0 || hl >= hostlen || cn_parse_int(colon + 1, 1, 65535, &p) != CN_OK)
        return CN_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return CN_OK;
}
