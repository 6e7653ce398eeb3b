/* admin.c — the admin HTTP port: /healthz, /readyz, /metrics on a libevent evhttp server
 * running on its own thread (see admin.h).
 *
 * The port must answer while the service's workers are all busy or stuck, so it has its
 * own event base and thread and shares nothing with the RPC path but the metrics registry
 * and the ready callback (which therefore runs on this thread and must be thread-safe).
 * evthread_use_pthreads() is called before the base is made so cn_admin_stop can end the
 * loop from another thread with event_base_loopexit. The thread starts with every signal
 * blocked: SIGTERM goes to the service's main thread, and a peer that hangs up mid-reply
 * gives EPIPE here rather than killing the process with SIGPIPE. Requests are small and
 * capped (headers, body, idle timeout) since anyone who can reach the port can send them.
 * /faults (only after cn_admin_allow_faults) sets the RPC server's fault injection
 * (rpc.h) from a small JSON document; it is a test facility and answers 404 otherwise.
 * To add an endpoint: add a row to routes[] and write its handler.
 */
#include "admin.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "util.h"

#define MAX_HEADERS_SIZE 8192
#define MAX_BODY_SIZE 4096
#define IDLE_TIMEOUT_S 10

struct cn_admin {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    int port;
    cn_admin_ready_fn ready;
    void *arg;
    atomic_bool faults;     /* /faults served */
};

static const char TEXT[] = "text/plain; charset=utf-8";
static const char METRICS_TEXT[] = "text/plain; version=0.0.4; charset=utf-8";

/* Sends status with body (len bytes) as content_type. Content-Length is set here because
 * evhttp adds it only for HTTP/1.1 or keep-alive, and never for HEAD. A HEAD reply gets
 * the headers of the GET without the body: libevent 2.1 would send a body it is given
 * even for HEAD. */
static void reply(struct evhttp_request *req, int status, const char *reason,
                  const char *content_type, const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char length[24];
    snprintf(length, sizeof length, "%zu", len);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Content-Length", length);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    evhttp_send_reply(req, status, reason, NULL);
}

static void on_healthz(struct cn_admin *a, struct evhttp_request *req)
{
    (void)a;
    reply(req, HTTP_OK, "OK", TEXT, "ok\n", 3);
}

static void on_readyz(struct cn_admin *a, struct evhttp_request *req)
{
    char why[256] = "";
    if (a->ready == NULL || a->ready(a->arg, why, sizeof why)) {
        reply(req, HTTP_OK, "OK", TEXT, "ready\n", 6);
        return;
    }
    why[sizeof why - 1] = '\0';
    char body[sizeof why + 16];
    int n = snprintf(body, sizeof body, "%s\n", why[0] ? why : "not ready");
    reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", TEXT, body, (size_t)n);
}

static void on_metrics(struct cn_admin *a, struct evhttp_request *req)
{
    (void)a;
    struct cn_buf b = {0};
    cn_metrics_render(&b);
    reply(req, HTTP_OK, "OK", METRICS_TEXT, b.data ? b.data : "", b.len);
    cn_buf_free(&b);
}

/* ---- /faults ---- */

static const char JSON_TEXT[] = "application/json";

static void reply_faults(struct evhttp_request *req, int status, const char *reason)
{
    struct cn_rpc_faults f;
    cn_rpc_faults_get(&f);
    json_t *methods = json_array();
    for (size_t i = 0; i < f.nmethods; i++)
        json_array_append_new(methods, json_string(f.methods[i]));
    json_t *doc = json_pack("{s:i, s:f, s:s, s:f, s:o}", "delay_ms", f.delay_ms, "delay_percent",
                            f.delay_percent, "abort_code",
                            f.abort_code == CAIRN__V1__CODE__OK ? "" : cn_code_name(f.abort_code),
                            "abort_percent", f.abort_percent, "methods", methods);
    char *text = json_dumps(doc, JSON_COMPACT);
    reply(req, status, reason, JSON_TEXT, text, strlen(text));
    free(text);
    json_decref(doc);
}

static void reply_bad_faults(struct evhttp_request *req, const char *why)
{
    json_t *doc = json_pack("{s:s}", "error", why);
    char *text = json_dumps(doc, JSON_COMPACT);
    reply(req, HTTP_BADREQUEST, "Bad Request", JSON_TEXT, text, strlen(text));
    free(text);
    json_decref(doc);
}

/* A percentage member: a number in [0, 100]; def when absent. Returns 0 or -1. */
static int percent_of(json_t *doc, const char *key, double def, double *out)
{
    json_t *v = json_object_get(doc, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 100)
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* Parses a PUT /faults document into f; on error writes why and returns -1. */
static int faults_parse(json_t *doc, struct cn_rpc_faults *f, char *why, size_t whylen)
{
    static const char *const keys[] = {"delay_ms", "delay_percent", "abort_code", "abort_percent", "methods"};
    const char *key;
    json_t *v;
    memset(f, 0, sizeof *f);
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "the body must be a JSON object");
        return -1;
    }
    json_object_foreach(doc, key, v) {
        size_t i = 0;
        while (i < CN_ARRAY_LEN(keys) && strcmp(key, keys[i]) != 0)
            i++;
        if (i == CN_ARRAY_LEN(keys)) {
            snprintf(why, whylen, "unknown key '%.64s'", key);
            return -1;
        }
    }
    if ((v = json_object_get(doc, "delay_ms")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > CN_RPC_FAULT_MAX_DELAY_MS) {
            snprintf(why, whylen, "delay_ms must be an integer from 0 to %d", CN_RPC_FAULT_MAX_DELAY_MS);
            return -1;
        }
        f->delay_ms = (int)json_integer_value(v);
    }
    if ((v = json_object_get(doc, "abort_code")) != NULL) {
        if (!json_is_string(v) || cn_code_parse(json_string_value(v), &f->abort_code) != CN_OK ||
            f->abort_code == CAIRN__V1__CODE__OK) {
            snprintf(why, whylen, "abort_code must be a gRPC code name other than OK, e.g. UNAVAILABLE");
            return -1;
        }
    }
    /* A fault given without its percentage applies to every call. */
    if (percent_of(doc, "delay_percent", f->delay_ms ? 100 : 0, &f->delay_percent) != 0 ||
        percent_of(doc, "abort_percent", f->abort_code ? 100 : 0, &f->abort_percent) != 0) {
        snprintf(why, whylen, "delay_percent and abort_percent must be numbers from 0 to 100");
        return -1;
    }
    if ((v = json_object_get(doc, "methods")) != NULL) {
        if (!json_is_array(v) || json_array_size(v) > CN_RPC_FAULT_MAX_METHODS) {
            snprintf(why, whylen, "methods must be an array of at most %d method names", CN_RPC_FAULT_MAX_METHODS);
            return -1;
        }
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) {
            if (!json_is_string(m) || json_string_length(m) == 0 ||
                json_string_length(m) >= sizeof f->methods[0]) {
                snprintf(why, whylen, "methods[%zu] must be a method name of 1 to %zu characters", i,
                         sizeof f->methods[0] - 1);
                return -1;
            }
            memcpy(f->methods[i], json_string_value(m), json_string_length(m) + 1);
        }
        f->nmethods = json_array_size(v);
    }
    return 0;
}

/* GET shows the faults, PUT replaces them, DELETE clears them. */
static void on_faults(struct cn_admin *a, struct evhttp_request *req)
{
    (void)a;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_DELETE) {
        cn_rpc_faults_set(NULL);
        cn_log_warn("ADMIN-FAULTS-CLEARED", "fault injection cleared");
    } else if (cmd == EVHTTP_REQ_PUT) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
        json_error_t jerr;
        json_t *doc = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
        if (doc == NULL) {
            char why[200];
            snprintf(why, sizeof why, "the body is not valid JSON: %s", jerr.text);
            reply_bad_faults(req, why);
            return;
        }
        struct cn_rpc_faults f;
        char why[160];
        int rv = faults_parse(doc, &f, why, sizeof why);
        json_decref(doc);
        if (rv != 0) {
            reply_bad_faults(req, why);
            return;
        }
        cn_rpc_faults_set(&f);
        cn_log_warn("ADMIN-FAULTS-SET", "fault injection set: delay %d ms at %.1f%%, abort %s at %.1f%%, %zu method(s)",
                    f.delay_ms, f.delay_percent, f.abort_code ? cn_code_name(f.abort_code) : "none",
                    f.abort_percent, f.nmethods);
    }
    reply_faults(req, HTTP_OK, "OK");
}

#define GET_HEAD (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)

static const struct route {
    const char *path;
    void (*handler)(struct cn_admin *a, struct evhttp_request *req);
    unsigned methods;        /* EVHTTP_REQ_* accepted */
    const char *allow;       /* the Allow header of a 405 */
    bool faults;             /* only with cn_admin_allow_faults */
} routes[] = {
    {"/healthz", on_healthz, GET_HEAD, "GET, HEAD", false},
    {"/readyz", on_readyz, GET_HEAD, "GET, HEAD", false},
    {"/metrics", on_metrics, GET_HEAD, "GET, HEAD", false},
    {"/faults", on_faults, GET_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE, "GET, HEAD, PUT, DELETE", true},
};

static void on_request(struct evhttp_request *req, void *arg)
{
    struct cn_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const struct route *r = NULL;
    for (size_t i = 0; path && i < CN_ARRAY_LEN(routes); i++) {
        if (strcmp(path, routes[i].path) == 0 && (!routes[i].faults || atomic_load(&a->faults)))
            r = &routes[i];
    }
    if (r == NULL) {
        reply(req, HTTP_NOTFOUND, "Not Found", TEXT, "not found\n", 10);
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!(cmd & r->methods)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->allow);
        reply(req, HTTP_BADMETHOD, "Method Not Allowed", TEXT, "method not allowed\n", 19);
        return;
    }
    r->handler(a, req);
}

/* Splits "host:port", "[v6]:port" or ":port" (all interfaces). Returns 0 or CN_EINVAL. */
static int parse_hostport(const char *hostport, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL)
        return CN_EINVAL;
    const char *h = hostport;
    size_t n = (size_t)(colon - hostport);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    } else if (memchr(h, ':', n) != NULL) {
        return CN_EINVAL; /* a bare IPv6 address needs brackets */
    }
    if (n == 0) {
        h = "0.0.0.0";
        n = strlen(h);
    }
    if (n >= hostlen)
        return CN_EINVAL;
    memcpy(host, h, n);
    host[n] = '\0';
    long long p;
    if (cn_parse_int(colon + 1, 0, 65535, &p) != CN_OK || colon[1] < '0' || colon[1] > '9')
        return CN_EINVAL;
    *port = (int)p;
    return CN_OK;
}

static int bound_port(struct evhttp_bound_socket *sock)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

static void *run(void *arg)
{
    struct cn_admin *a = arg;
    event_base_dispatch(a->base);
    return NULL;
}

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static int evthread_rc;

static void evthread_init(void) { evthread_rc = evthread_use_pthreads(); }

static void admin_free(struct cn_admin *a)
{
    if (a->http)
        evhttp_free(a->http);
    if (a->base)
        event_base_free(a->base);
    free(a);
}

int cn_admin_start(struct cn_admin **out, const char *hostport, cn_admin_ready_fn ready, void *arg)
{
    char host[256];
    int port, rc;
    struct cn_admin *a = NULL;

    *out = NULL;
    if (hostport == NULL || parse_hostport(hostport, host, sizeof host, &port) != CN_OK) {
        cn_log_error("ADMIN-BAD-ADDR", "admin address '%s' is not host:port",
                     hostport ? hostport : "");
        return CN_EINVAL;
    }
    pthread_once(&evthread_once, evthread_init);
    if (evthread_rc != 0) {
        cn_log_error("ADMIN-START", "libevent has no pthreads support");
        return CN_EIO;
    }

    a = cn_calloc(1, sizeof *a);
    a->ready = ready;
    a->arg = arg;
    a->base = event_base_new();
    a->http = a->base ? evhttp_new(a->base) : NULL;
    if (a->http == NULL) {
        cn_log_error("ADMIN-START", "cannot create the admin event loop");
        rc = CN_EIO;
        goto out;
    }
    /* Every method reaches on_request so the 405 carries our headers, not evhttp's. */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(a->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(a->http, MAX_BODY_SIZE);
    evhttp_set_timeout(a->http, IDLE_TIMEOUT_S);
    evhttp_set_gencb(a->http, on_request, a);

    struct evhttp_bound_socket *sock =
        evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (sock == NULL) {
        cn_log_error("ADMIN-BIND", "cannot listen on %s", hostport);
        rc = CN_EIO;
        goto out;
    }
    a->port = bound_port(sock);
    if (a->port < 0) {
        cn_log_error("ADMIN-BIND", "cannot read the port bound for %s", hostport);
        rc = CN_EIO;
        goto out;
    }

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&a->thread, NULL, run, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        cn_log_error("ADMIN-START", "cannot start the admin thread: %s", strerror(err));
        rc = CN_EIO;
        goto out;
    }
    *out = a;
    a = NULL;
    rc = CN_OK;
out:
    if (a)
        admin_free(a);
    return rc;
}

int cn_admin_port(const struct cn_admin *a) { return a->port; }

void cn_admin_allow_faults(struct cn_admin *a) { atomic_store(&a->faults, true); }

void cn_admin_stop(struct cn_admin *a)
{
    if (a == NULL)
        return;
    /* loopexit is safe from another thread (the base has locks) and works even if the
     * thread has not entered the loop yet: it queues an event that ends the loop. */
    event_base_loopexit(a->base, NULL);
    pthread_join(a->thread, NULL);
    admin_free(a);
}
