/* gateway.h — what the gateway's files share: its configuration, the per-thread loop
 * state, and the entry points between server.c (h2o, threads, listeners), proxy.c
 * (one request: route, authenticate, transcode, call, answer) and main.c (settings).
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "routes.h"
#include "upstream.h"

struct gw_conf {
    const char *host;
    int64_t port;
    const char *admin;
    int64_t threads;
    const char *cpus;             /* CAIRN_CPUS: the CPUs every thread runs on ("" = all) */
    int64_t max_body;
    const char *tls_cert;
    const char *tls_key;
    const char *jwt_iss;
    const char *jwt_aud;
    int64_t upstream_timeout_ms;
    int64_t jwks_refresh_s;
    int64_t drain_ms;
    int64_t resolve_s;
    const char *auth_events;
    int64_t apikey_cache_ms;
    int64_t revoke_hold_s;
    const char *log_level;
    const char *ready_services;
    const char *config_path;      /* the policy file (config.h); "" = built-in defaults */
    const char *redis_addr;       /* host:port of the Redis rate limits use */
};

extern struct gw_conf gw_conf;
/* One per gw_services[] row, same index. */
extern struct gw_upstream **gw_upstreams;
/* Per gw_services[] row: /readyz waits for a connected instance (CAIRN_READY_SERVICES). */
extern bool *gw_ready_need;

struct gw_thread {
    int index;
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    int listen_fd;
    h2o_multithread_receiver_t upstream_rx;
    int inflight;                 /* upstream calls this loop is waiting for */
    struct cn_buf scratch;        /* response building, reused */
};

/* The thread running the current loop (set per loop thread). */
extern __thread struct gw_thread *gw_self;
extern atomic_int gw_stopping;

/* proxy.c */
void gw_proxy_init(void);
int gw_proxy_on_req(h2o_handler_t *self, h2o_req_t *req);
int gw_ready(char *why, size_t whylen);

/* server.c: runs until SIGTERM/SIGINT; returns the exit code. */
int gw_server_run(void);

#endif
