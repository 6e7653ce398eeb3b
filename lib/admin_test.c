/* admin_test.c — the admin port over real sockets: each endpoint with its status, body and
 * Content-Type, readiness flipping, 404/405, HEAD, address parsing, a port already taken,
 * and stopping (also right after starting and with a client still connected). */
#include "admin.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/time.h>

#include <cmocka.h>

struct response {
    int status;
    char content_type[128];
    char allow[64];
    long content_length; /* -1 when absent */
    char *body;          /* malloc'd */
};

static void response_free(struct response *r)
{
    free(r->body);
    r->body = NULL;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0}; /* a hang fails the test instead of blocking it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

/* Copies the value of header name (case-insensitive) from the head into out. */
static void header(const char *head, const char *name, char *out, size_t len)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            snprintf(out, len, "%.*s", (int)(end - v), v);
            return;
        }
    }
}

/* Sends an HTTP/1.0 request (the server closes after answering) and parses the reply. */
static struct response request(int port, const char *method, const char *path)
{
    int fd = connect_to(port);
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: test\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);

    struct cn_buf raw = {0};
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0)
        cn_buf_append(&raw, chunk, (size_t)got);
    assert_int_equal(got, 0);
    close(fd);

    struct response r = {0};
    assert_non_null(raw.data);
    assert_int_equal(sscanf(raw.data, "HTTP/1.%*d %d", &r.status), 1);
    char *end = strstr(raw.data, "\r\n\r\n");
    assert_non_null(end);
    end[2] = '\0'; /* keep the head's last CRLF for header() */
    header(raw.data, "Content-Type", r.content_type, sizeof r.content_type);
    header(raw.data, "Allow", r.allow, sizeof r.allow);
    char cl[32];
    header(raw.data, "Content-Length", cl, sizeof cl);
    r.content_length = cl[0] ? strtol(cl, NULL, 10) : -1;
    r.body = cn_strdup(end + 4);
    cn_buf_free(&raw);
    return r;
}

/* Sends an HTTP/1.0 request with a body and parses the reply. */
static struct response request_body(int port, const char *method, const char *path, const char *body)
{
    int fd = connect_to(port);
    char req[2048];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: test\r\nContent-Length: %zu\r\n\r\n%s", method,
                     path, strlen(body), body);
    assert_int_equal(write(fd, req, (size_t)n), n);
    struct cn_buf raw = {0};
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0)
        cn_buf_append(&raw, chunk, (size_t)got);
    close(fd);
    struct response r = {0};
    assert_non_null(raw.data);
    assert_int_equal(sscanf(raw.data, "HTTP/1.%*d %d", &r.status), 1);
    char *end = strstr(raw.data, "\r\n\r\n");
    assert_non_null(end);
    end[2] = '\0';
    header(raw.data, "Content-Type", r.content_type, sizeof r.content_type);
    header(raw.data, "Allow", r.allow, sizeof r.allow);
    r.body = cn_strdup(end + 4);
    cn_buf_free(&raw);
    return r;
}

static atomic_int ready_flag;
static char ready_reason[64];

static int on_ready(void *arg, char *why, size_t whylen)
{
    /* Runs on the admin thread: no cmocka asserts here. */
    if (arg != &ready_flag) {
        snprintf(why, whylen, "wrong argument");
        return 0;
    }
    if (atomic_load(&ready_flag))
        return 1;
    snprintf(why, whylen, "%s", ready_reason);
    return 0;
}

static int quiet(void **state)
{
    (void)state;
    /* The failures provoked here log at error level; keep the test output readable. */
    cn_log_min_level = CN_LOG_ERROR + 1;
    return 0;
}

static void test_endpoints(void **state)
{
    (void)state;
    struct cn_metric *m =
        cn_metric_new(CN_METRIC_COUNTER, "t_admin_total", "Admin test.", NULL, NULL, 0);
    cn_series_add(cn_metric_series(m, NULL), 7);

    struct cn_admin *a;
    atomic_store(&ready_flag, 1);
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", on_ready, &ready_flag), 0);
    int port = cn_admin_port(a);
    assert_true(port > 0 && port < 65536);

    struct response r = request(port, "GET", "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    response_free(&r);

    r = request(port, "GET", "/healthz?verbose=1");
    assert_int_equal(r.status, 200);
    response_free(&r);

    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    response_free(&r);

    atomic_store(&ready_flag, 0);
    snprintf(ready_reason, sizeof ready_reason, "database down");
    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "database down\n");
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    response_free(&r);

    ready_reason[0] = '\0';
    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "not ready\n");
    response_free(&r);

    atomic_store(&ready_flag, 1);
    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 200);
    response_free(&r);

    r = request(port, "GET", "/metrics");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r.body, "# TYPE t_admin_total counter\nt_admin_total 7\n"));
    assert_int_equal(r.content_length, (long)strlen(r.body));
    response_free(&r);

    cn_admin_stop(a);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    struct cn_admin *a;
    /* No ready callback: always ready. */
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
    int port = cn_admin_port(a);

    const char *missing[] = {"/", "/nope", "/healthz/", "/metricsx", "/HEALTHZ"};
    for (size_t i = 0; i < CN_ARRAY_LEN(missing); i++) {
        struct response r = request(port, "GET", missing[i]);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.content_type, "text/plain; charset=utf-8");
        assert_string_equal(r.body, "not found\n");
        response_free(&r);
    }

    const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < CN_ARRAY_LEN(methods); i++) {
        struct response r = request(port, methods[i], "/healthz");
        assert_int_equal(r.status, 405);
        assert_string_equal(r.content_type, "text/plain; charset=utf-8");
        assert_string_equal(r.allow, "GET, HEAD");
        assert_string_equal(r.body, "method not allowed\n");
        response_free(&r);
    }

    /* HEAD answers like GET without the body. */
    struct response r = request(port, "HEAD", "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    assert_int_equal(r.content_length, 3);
    assert_string_equal(r.body, "");
    response_free(&r);

    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");
    response_free(&r);

    cn_admin_stop(a);
}

/* /faults: absent until allowed; then GET/PUT/DELETE over the RPC server's faults, with
 * every malformed document refused and the faults left as they were. */
static void test_faults(void **state)
{
    (void)state;
    struct cn_admin *a;
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
    int port = cn_admin_port(a);
    struct response r = request(port, "GET", "/faults");
    assert_int_equal(r.status, 404);
    response_free(&r);
    r = request_body(port, "PUT", "/faults", "{\"abort_code\":\"UNAVAILABLE\"}");
    assert_int_equal(r.status, 404);
    response_free(&r);
    struct cn_rpc_faults f;
    cn_rpc_faults_get(&f);
    assert_int_equal(f.abort_code, CAIRN__V1__CODE__OK);

    cn_admin_allow_faults(a);
    r = request(port, "GET", "/faults");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/json");
    assert_non_null(strstr(r.body, "\"delay_ms\":0"));
    response_free(&r);

    r = request_body(port, "PUT", "/faults",
                     "{\"delay_ms\":150,\"abort_code\":\"UNAVAILABLE\",\"abort_percent\":25.5,"
                     "\"methods\":[\"Login\",\"Me\"]}");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"abort_code\":\"UNAVAILABLE\""));
    assert_non_null(strstr(r.body, "\"methods\":[\"Login\",\"Me\"]"));
    response_free(&r);
    cn_rpc_faults_get(&f);
    assert_int_equal(f.delay_ms, 150);
    assert_true(f.delay_percent == 100.0); /* defaulted: every call */
    assert_int_equal(f.abort_code, CAIRN__V1__CODE__UNAVAILABLE);
    assert_true(f.abort_percent == 25.5);
    assert_int_equal(f.nmethods, 2);
    assert_string_equal(f.methods[1], "Me");

    static const char *const bad[] = {
        "", "[]", "{\"delay_ms\":-1}", "{\"delay_ms\":600001}", "{\"delay_ms\":1.5}",
        "{\"delay_percent\":101}", "{\"abort_code\":\"OK\"}", "{\"abort_code\":\"unavailable\"}",
        "{\"abort_code\":14}", "{\"methods\":\"Login\"}", "{\"methods\":[\"\"]}", "{\"methods\":[1]}",
        "{\"delay\":5}", "{\"delay_ms\":5,\"delay_ms\":6}", "{\"abort_percent\":\"50\"}",
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        r = request_body(port, "PUT", "/faults", bad[i]);
        if (r.status != 400)
            fail_msg("PUT %s: %d", bad[i], r.status);
        assert_non_null(strstr(r.body, "\"error\""));
        response_free(&r);
    }
    cn_rpc_faults_get(&f);
    assert_int_equal(f.delay_ms, 150); /* unchanged */

    r = request(port, "POST", "/faults");
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, HEAD, PUT, DELETE");
    response_free(&r);

    r = request(port, "DELETE", "/faults");
    assert_int_equal(r.status, 200);
    response_free(&r);
    cn_rpc_faults_get(&f);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_code, CAIRN__V1__CODE__OK);
    assert_int_equal(f.nmethods, 0);
    cn_admin_stop(a);
}

static void test_keep_alive(void **state)
{
    (void)state;
    struct cn_admin *a;
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
    /* Two HTTP/1.1 requests on one connection: each reply must carry exactly one
     * Content-Length, or the client could not tell where the first one ends. */
    int fd = connect_to(cn_admin_port(a));
    static const char reqs[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                               "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(fd, reqs, sizeof reqs - 1), (ssize_t)(sizeof reqs - 1));
    struct cn_buf raw = {0};
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0)
        cn_buf_append(&raw, chunk, (size_t)got);
    close(fd);
    assert_non_null(raw.data);
    int replies = 0, lengths = 0;
    for (const char *p = raw.data; (p = strstr(p, "HTTP/1.1 200")); p++)
        replies++;
    for (const char *p = raw.data; (p = strcasestr(p, "\r\nContent-Length:")); p++)
        lengths++;
    assert_int_equal(replies, 2);
    assert_int_equal(lengths, 2);
    assert_non_null(strstr(raw.data, "\r\n\r\nok\nHTTP/1.1 200"));
    assert_int_equal(strcmp(raw.data + raw.len - 10, "\r\n\r\nready\n"), 0);
    cn_buf_free(&raw);
    cn_admin_stop(a);
}

static void test_bad_addresses(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "nocolon",
                         "127.0.0.1:",
                         "127.0.0.1:65536",
                         "127.0.0.1:-1",
                         "127.0.0.1:+80",
                         "127.0.0.1: 80",
                         "127.0.0.1:8x",
                         "::1:80",
                         "[::1:80"};
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        struct cn_admin *a = (struct cn_admin *)&a;
        assert_int_equal(cn_admin_start(&a, bad[i], NULL, NULL), CN_EINVAL);
        assert_null(a);
    }
    struct cn_admin *a;
    assert_int_equal(cn_admin_start(&a, NULL, NULL, NULL), CN_EINVAL);
}

static void test_parse_hostport(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(parse_hostport("127.0.0.1:9101", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9101);
    assert_int_equal(parse_hostport(":80", host, sizeof host, &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 80);
    assert_int_equal(parse_hostport("[::1]:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(parse_hostport("localhost:65535", host, sizeof host, &port), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 65535);
    /* A host longer than the buffer is refused, not cut. */
    assert_int_equal(parse_hostport("abcdefgh:1", host, 8, &port), CN_EINVAL);
}

static void test_port_in_use(void **state)
{
    (void)state;
    struct cn_admin *a, *b = (struct cn_admin *)&b;
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cn_admin_port(a));
    assert_int_equal(cn_admin_start(&b, addr, NULL, NULL), CN_EIO);
    assert_null(b);
    /* The first server is unaffected. */
    struct response r = request(cn_admin_port(a), "GET", "/healthz");
    assert_int_equal(r.status, 200);
    response_free(&r);
    cn_admin_stop(a);
}

static void test_stop(void **state)
{
    (void)state;
    cn_admin_stop(NULL);
    /* Stopping at once, possibly before the thread has entered its loop. */
    for (int i = 0; i < 20; i++) {
        struct cn_admin *a;
        assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
        cn_admin_stop(a);
    }
    /* A client connected but silent does not hold up the stop. */
    struct cn_admin *a;
    assert_int_equal(cn_admin_start(&a, "127.0.0.1:0", NULL, NULL), 0);
    int port = cn_admin_port(a);
    int idle = connect_to(port);
    assert_int_equal(write(idle, "GET /heal", 9), 9);
    struct response r = request(port, "GET", "/healthz");
    assert_int_equal(r.status, 200);
    response_free(&r);
    cn_admin_stop(a);
    close(idle);
    /* The port is free again. */
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(cn_admin_start(&a, addr, NULL, NULL), 0);
    cn_admin_stop(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),      cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_keep_alive),     cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_parse_hostport), cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_stop),           cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, quiet, NULL);
}
