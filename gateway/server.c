/* server.c — h2o set-up: one event loop per thread (CAIRN_THREADS), each with its own
 * SO_REUSEPORT listener so the kernel spreads connections; HTTP/1.1, h2c (upgrade and
 * prior knowledge) and, with CAIRN_TLS_CERT/CAIRN_TLS_KEY, HTTP/2 over TLS via ALPN.
 * SIGTERM/SIGINT close the listeners, let each loop finish the upstream calls and
 * rate-limit decisions it is waiting for (at most CAIRN_DRAIN_MS), and return 0.
 * SIGHUP re-reads the policy file (gw_config_reload) on the main thread, which waits for
 * signals with sigwait: no code runs in a signal handler.
 */
#include "gateway.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"

__thread struct gw_thread *gw_self;
atomic_int gw_stopping;

static h2o_globalconf_t globalconf;
static SSL_CTX *ssl_ctx;

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (sock == NULL)
        return;
    h2o_accept(&gw_self->accept_ctx, sock);
}

static int open_listener(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void *thread_main(void *arg)
{
    struct gw_thread *t = arg;
    gw_self = t;
    h2o_context_init(&t->ctx, h2o_evloop_create(), &globalconf);
    h2o_multithread_register_receiver(t->ctx.queue, &t->upstream_rx, gw_upstream_on_messages);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = globalconf.hosts;
    t->accept_ctx.ssl_ctx = ssl_ctx;
    t->listener = h2o_evloop_socket_create(t->ctx.loop, t->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(t->listener, on_accept);

    while (!atomic_load(&gw_stopping))
        h2o_evloop_run(t->ctx.loop, 100);

    /* Drain: no new connections; finish the answers we are waiting for. */
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    t->listener = NULL;
    int64_t deadline = cn_mono_ms() + gw_conf.drain_ms;
    while ((t->inflight > 0 || gw_ratelimit_waiting() > 0) && cn_mono_ms() < deadline)
        h2o_evloop_run(t->ctx.loop, 10);
    /* One more turn flushes responses just written. */
    h2o_evloop_run(t->ctx.loop, 0);
    gw_ratelimit_thread_fini();
    return NULL;
}

static int tls_init(void)
{
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, gw_conf.tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ssl_ctx, gw_conf.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        cn_log(CN_LOG_ERROR, "GW-TLS-CONFIG", NULL, "cannot load CAIRN_TLS_CERT/CAIRN_TLS_KEY: %s", e);
        return -1;
    }
    h2o_ssl_register_alpn_protocols(ssl_ctx, h2o_http2_alpn_protocols);
    return 0;
}

int gw_server_run(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&globalconf);
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT("cairn"));
    /* h2o reads a whole body before the handler runs and answers a plain-text 413 itself
     * above this limit, without reading the body. Between a route's cap
     * (CAIRN_MAX_BODY_BYTES unless the route sets max_body) and this limit the handler
     * answers the 413 (problem+json, request id); far larger bodies are refused by h2o up
     * front so they never cost memory. The limit is four times CAIRN_MAX_BODY_BYTES, or
     * the largest route cap plus a quarter when that is more: a route that takes big
     * bodies (model uploads) must get them through h2o, and a slightly oversize one still
     * gets the 413 that names its cap. */
    int64_t route_cap = gw_routes_max_body(gw_conf.max_body);
    int64_t h2o_cap = gw_conf.max_body * 4;
    if (route_cap > gw_conf.max_body && route_cap + route_cap / 4 > h2o_cap)
        h2o_cap = route_cap + route_cap / 4;
    globalconf.max_request_entity_size = (size_t)h2o_cap;
    h2o_hostconf_t *host = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = gw_proxy_on_req;

    if (gw_conf.tls_cert[0] || gw_conf.tls_key[0]) {
        if (!gw_conf.tls_cert[0] || !gw_conf.tls_key[0]) {
            cn_log(CN_LOG_ERROR, "GW-TLS-CONFIG", NULL, "set both CAIRN_TLS_CERT and CAIRN_TLS_KEY, or neither");
            return 2;
        }
        if (tls_init() != 0)
            return 2;
    }

    int n = (int)gw_conf.threads;
    struct gw_thread *threads = cn_calloc((size_t)n, sizeof *threads);
    for (int i = 0; i < n; i++) {
        threads[i].index = i;
        threads[i].listen_fd = open_listener(gw_conf.host, (int)gw_conf.port);
        if (threads[i].listen_fd < 0) {
            cn_log(CN_LOG_ERROR, "GW-LISTEN-FAILED", NULL, "cannot listen on %s:%lld: %s", gw_conf.host,
                   (long long)gw_conf.port, strerror(errno));
            return 1;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]);
    cn_log(CN_LOG_INFO, "GW-LISTENING", NULL, "serving http%s://%s:%lld with %d threads", ssl_ctx ? "s" : "",
           gw_conf.host, (long long)gw_conf.port, n);

    int sig = 0;
    sigwait(&set, &sig);
    while (sig == SIGHUP) {
        gw_config_reload();
        sigwait(&set, &sig);
    }
    cn_log(CN_LOG_INFO, "GW-STOPPING", NULL, "signal %d: draining for at most %lld ms", sig, (long long)gw_conf.drain_ms);
    atomic_store(&gw_stopping, 1);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i].tid, NULL);
    cn_log(CN_LOG_INFO, "GW-STOPPED", NULL, "stopped");
    return 0;
}
