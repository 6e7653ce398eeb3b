/* proxy_test.c — the parts of one request's path that need no running loop: a raw
 * route's input (body, Content-Type, forwarded headers: credentials dropped, names
 * lowercased, count and length caps), the error shape per route (problem+json or the
 * Open Inference Protocol's {"error"}), the Content-Type and headers a RawResponse may
 * set, and
 * readiness limited to CAIRN_READY_SERVICES against real nng connections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy.c"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "cairn/v1/inference.pb-c.h"

/* What main.c defines for the real binary. */
struct gw_conf gw_conf;
struct gw_upstream **gw_upstreams;
bool *gw_ready_need;

struct fake {
    h2o_req_t req;
    struct reqstate st;
};

static void fake_init(struct fake *f, const char *body)
{
    memset(f, 0, sizeof *f);
    h2o_mem_init_pool(&f->req.pool);
    if (body)
        f->req.entity = h2o_iovec_init(body, strlen(body));
    f->st.req = &f->req;
    snprintf(f->st.request_id, sizeof f->st.request_id, "rid-7");
}

static void add(struct fake *f, const char *name, const char *value, size_t vlen)
{
    h2o_add_header_by_str(&f->req.pool, &f->req.headers, name, strlen(name), 0, NULL, value, vlen);
}

static const char *header(const Cairn__V1__PredictRequest *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (strcmp(m->headers[i]->name, name) == 0)
            return m->headers[i]->value;
    return NULL;
}

static void test_raw_input(void **state)
{
    (void)state;
    struct fake f;
    const char *body = "{\"instances\": [[1, null, 3.5]]}";
    fake_init(&f, body);
    add(&f, "Authorization", H2O_STRLIT("Bearer secret-token"));
    add(&f, "Proxy-Authorization", H2O_STRLIT("Basic eA=="));
    add(&f, "cookie", H2O_STRLIT("session=1"));
    add(&f, "X-API-Key", H2O_STRLIT("cairn_x"));
    add(&f, "Content-Type", H2O_STRLIT("application/json; charset=utf-8"));
    add(&f, "X-User-Id", H2O_STRLIT("u-42"));
    char big[GW_RAW_MAX_HEADER_VALUE + 1];
    memset(big, 'v', sizeof big);
    add(&f, "x-too-long", big, sizeof big);                     /* skipped */
    add(&f, "x-just-fits", big, GW_RAW_MAX_HEADER_VALUE);       /* kept */

    h2o_iovec_t ct = h2o_iovec_init(H2O_STRLIT("application/json; charset=utf-8"));
    Cairn__V1__PredictRequest in = CAIRN__V1__PREDICT_REQUEST__INIT;
    in.name = "iris";
    raw_input(&f.st, &in.base, strlen(body), &ct);

    /* The body is passed by reference, not copied or parsed. */
    assert_ptr_equal(in.body.data, body);
    assert_int_equal(in.body.len, strlen(body));
    assert_string_equal(in.content_type, "application/json; charset=utf-8");
    assert_string_equal(header(&in, "x-user-id"), "u-42");
    assert_string_equal(header(&in, "content-type"), "application/json; charset=utf-8");
    assert_non_null(header(&in, "x-just-fits"));
    assert_int_equal(strlen(header(&in, "x-just-fits")), GW_RAW_MAX_HEADER_VALUE);
    assert_null(header(&in, "x-too-long"));
    assert_int_equal(in.n_headers, 3);
    for (size_t i = 0; i < in.n_headers; i++) {
        const char *n = in.headers[i]->name;
        assert_string_not_equal(n, "authorization");
        assert_string_not_equal(n, "proxy-authorization");
        assert_string_not_equal(n, "cookie");
        assert_string_not_equal(n, "x-api-key");
        for (const char *c = n; *c; c++)
            assert_false(*c >= 'A' && *c <= 'Z');
    }

    /* What the service receives: the same, after a trip through the wire format. */
    size_t n = protobuf_c_message_get_packed_size(&in.base);
    uint8_t *packed = malloc(n);
    protobuf_c_message_pack(&in.base, packed);
    Cairn__V1__PredictRequest *out = cairn__v1__predict_request__unpack(NULL, n, packed);
    assert_non_null(out);
    assert_string_equal(out->name, "iris");
    assert_int_equal(out->body.len, strlen(body));
    assert_memory_equal(out->body.data, body, strlen(body));
    assert_string_equal(out->content_type, "application/json; charset=utf-8");
    assert_int_equal(out->n_headers, 3);
    assert_string_equal(header(out, "x-user-id"), "u-42");
    cairn__v1__predict_request__free_unpacked(out, NULL);
    free(packed);
    h2o_mem_clear_pool(&f.req.pool);
}

/* No body, no Content-Type, and more headers than are forwarded. */
static void test_raw_input_caps(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, NULL);
    char names[GW_RAW_MAX_HEADERS + 10][16];
    for (int i = 0; i < GW_RAW_MAX_HEADERS + 10; i++) {
        snprintf(names[i], sizeof names[i], "X-H%d", i);
        add(&f, names[i], H2O_STRLIT("v"));
    }
    Cairn__V1__OipRequest in = CAIRN__V1__OIP_REQUEST__INIT;
    raw_input(&f.st, &in.base, 0, NULL);
    assert_int_equal(in.body.len, 0);
    assert_string_equal(in.content_type, "");
    assert_int_equal(in.n_headers, GW_RAW_MAX_HEADERS);
    assert_string_equal(in.headers[0]->name, "x-h0");
    assert_string_equal(in.headers[GW_RAW_MAX_HEADERS - 1]->name, "x-h63");

    size_t n = protobuf_c_message_get_packed_size(&in.base);
    uint8_t *packed = malloc(n);
    protobuf_c_message_pack(&in.base, packed);
    Cairn__V1__OipRequest *out = cairn__v1__oip_request__unpack(NULL, n, packed);
    assert_non_null(out);
    assert_int_equal(out->n_headers, GW_RAW_MAX_HEADERS);
    assert_int_equal(out->body.len, 0);
    cairn__v1__oip_request__free_unpacked(out, NULL);
    free(packed);
    h2o_mem_clear_pool(&f.req.pool);
}

static void test_header_forwarded(void **state)
{
    (void)state;
    h2o_iovec_t v[] = {
        h2o_iovec_init(H2O_STRLIT("authorization")), h2o_iovec_init(H2O_STRLIT("AUTHORIZATION")),
        h2o_iovec_init(H2O_STRLIT("Cookie")),        h2o_iovec_init(H2O_STRLIT("x-api-key")),
        h2o_iovec_init(H2O_STRLIT("proxy-authorization")),
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(v); i++)
        assert_false(header_forwarded(&v[i]));
    h2o_iovec_t ok[] = {
        h2o_iovec_init(H2O_STRLIT("x-api-keys")), h2o_iovec_init(H2O_STRLIT("authorizatio")),
        h2o_iovec_init(H2O_STRLIT("set-cookie")), h2o_iovec_init(H2O_STRLIT("x-sticky")),
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(ok); i++)
        assert_true(header_forwarded(&ok[i]));
}

static void test_sane_content_type(void **state)
{
    (void)state;
    assert_true(sane_content_type("application/json"));
    assert_true(sane_content_type("text/plain; charset=utf-8"));
    assert_false(sane_content_type(""));
    assert_false(sane_content_type("application/json\r\nx-evil: 1"));
    assert_false(sane_content_type("a\tb"));
    assert_false(sane_content_type("caf\xc3\xa9"));
    char long_ct[300];
    memset(long_ct, 'a', sizeof long_ct - 1);
    long_ct[sizeof long_ct - 1] = '\0';
    assert_false(sane_content_type(long_ct));
    long_ct[254] = '\0';
    assert_true(sane_content_type(long_ct));
}

/* The headers a RawResponse may add: lowercase tokens the gateway does not set itself,
 * printable values; nothing that could split the header block. */
static void test_sane_response_header(void **state)
{
    (void)state;
    assert_true(sane_response_header("inference-header-content-length", "123"));
    assert_true(sane_response_header("x-model-version", "3\tb"));
    assert_true(sane_response_header("cache-control", ""));
    assert_false(sane_response_header("", "1"));
    assert_false(sane_response_header("Inference-Header-Content-Length", "1"));
    assert_false(sane_response_header("x a", "1"));
    assert_false(sane_response_header("x:a", "1"));
    assert_false(sane_response_header("x-a", "1\r\nx-evil: 1"));
    assert_false(sane_response_header("x-a", "caf\xc3\xa9"));
    const char *owned[] = {"content-length", "content-type", "connection", "transfer-encoding", "x-request-id",
                           "server-timing", "upgrade", "keep-alive", "date", "server", "ratelimit",
                           "ratelimit-policy", "retry-after", "www-authenticate", "allow"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        assert_false(sane_response_header(owned[i], "1"));
    char name[80], value[1100];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_false(sane_response_header(name, "1"));
    name[64] = '\0';
    assert_true(sane_response_header(name, "1"));
    memset(value, 'v', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    assert_false(sane_response_header("x-a", value));
    value[1024] = '\0';
    assert_true(sane_response_header("x-a", value));
}

static json_t *parse(const struct cn_buf *b)
{
    json_error_t je;
    json_t *j = json_loadb(b->data, b->len, 0, &je);
    assert_non_null(j);
    return j;
}

/* Errors on an OIP route are {"error"}; elsewhere (and before any route matched)
 * problem+json with the request id. */
static void test_error_body(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(gw_router_init(err, sizeof err), CN_OK);
    Cairn__V1__FieldError fe = CAIRN__V1__FIELD_ERROR__INIT;
    fe.field = "inputs[0].datatype";
    fe.message = "unknown datatype FP8";
    Cairn__V1__FieldError *v[1] = {&fe};
    struct fake f;
    fake_init(&f, NULL);
    struct cn_buf b = {0};
    struct gw_match mt;
    char allow[64];

    assert_int_equal(gw_router_match(H2O_STRLIT("POST"), H2O_STRLIT("/v2/models/iris/infer"), &mt, allow, sizeof allow),
                     GW_ROUTE_FOUND);
    f.st.route = mt.route;
    assert_string_equal(error_body(&f.st, &b, 400, "invalid request", v, 1), "application/json");
    json_t *j = parse(&b);
    assert_int_equal(json_object_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "invalid request: inputs[0].datatype: unknown datatype FP8");
    json_decref(j);

    /* An auth failure on an OIP route has the same shape. */
    cn_buf_reset(&b);
    assert_string_equal(error_body(&f.st, &b, 401, "this route needs credentials", NULL, 0), "application/json");
    j = parse(&b);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "this route needs credentials");
    json_decref(j);

    /* The predict route is raw but not OIP: problem+json with errors[]. */
    assert_int_equal(
        gw_router_match(H2O_STRLIT("POST"), H2O_STRLIT("/v1/models/iris:predict"), &mt, allow, sizeof allow),
        GW_ROUTE_FOUND);
    f.st.route = mt.route;
    cn_buf_reset(&b);
    assert_string_equal(error_body(&f.st, &b, 400, "invalid request", v, 1), "application/problem+json");
    j = parse(&b);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rid-7");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "errors"), 0), "field")),
                        "inputs[0].datatype");
    json_decref(j);

    /* No route matched yet (404, 405): problem+json. */
    f.st.route = NULL;
    cn_buf_reset(&b);
    assert_string_equal(error_body(&f.st, &b, 404, "no route for this path", NULL, 0), "application/problem+json");
    cn_buf_free(&b);
    h2o_mem_clear_pool(&f.req.pool);
    gw_router_fini();
}

/* Readiness asks only for the services named: a connected auth is enough unless
 * inference is named too. */
static void test_services_ready(void **state)
{
    (void)state;
    nng_socket rep;
    assert_int_equal(nng_rep0_open(&rep), 0);
    assert_int_equal(nng_listen(rep, "inproc://proxy-test-auth", NULL, 0), 0);
    size_t auth = (size_t)(gw_service_find("auth") - gw_services);
    size_t inf = (size_t)(gw_service_find("inference") - gw_services);
    gw_upstreams = calloc(gw_nservices, sizeof *gw_upstreams);
    gw_ready_need = calloc(gw_nservices, sizeof *gw_ready_need);
    for (size_t i = 0; i < gw_nservices; i++)
        gw_upstreams[i] = gw_upstream_new(gw_services[i].name,
                                          i == auth ? "inproc://proxy-test-auth" : "inproc://proxy-test-nobody",
                                          gw_services[i].max_msg);
    for (int i = 0; i < 200 && gw_upstream_connected(gw_upstreams[auth]) == 0; i++)
        nng_msleep(10);
    assert_int_equal(gw_upstream_connected(gw_upstreams[auth]), 1);
    assert_int_equal(gw_upstream_connected(gw_upstreams[inf]), 0);

    char why[128] = "";
    char err[128];
    assert_int_equal(gw_services_parse("auth", gw_ready_need, err, sizeof err), CN_OK);
    assert_true(services_ready(why, sizeof why));
    assert_int_equal(gw_services_parse("auth,inference", gw_ready_need, err, sizeof err), CN_OK);
    assert_false(services_ready(why, sizeof why));
    assert_string_equal(why, "no inference instance connected");
    assert_int_equal(gw_services_parse("", gw_ready_need, err, sizeof err), CN_OK);
    assert_true(services_ready(why, sizeof why));

    /* The signing keys are needed whatever the list says (authn is not started here). */
    assert_false(gw_ready(why, sizeof why));
    assert_string_equal(why, "signing keys not loaded from auth yet");

    for (size_t i = 0; i < gw_nservices; i++)
        gw_upstream_free(gw_upstreams[i]);
    free(gw_upstreams);
    free(gw_ready_need);
    gw_upstreams = NULL;
    gw_ready_need = NULL;
    nng_close(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_input),
        cmocka_unit_test(test_raw_input_caps),
        cmocka_unit_test(test_header_forwarded),
        cmocka_unit_test(test_sane_content_type),
        cmocka_unit_test(test_sane_response_header),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_services_ready),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
