/* router_test.c — route templates against the real table and a test table: literal and
 * {param} segments, suffix verbs, specificity, 404 vs 405 with Allow, percent-decoding,
 * every row of the real table reachable by a path of its own, the inference and Open
 * Inference Protocol routes, ambiguity between templates, and start-up checks that
 * reject a bad table (raw routes, flags, body caps included). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router.c"

#include "cairn/test/echo.pb-c.h"

#define H2O_LIT_PAIR(s) (s), (sizeof(s) - 1)

static enum gw_route_result m(const char *method, const char *path, struct gw_match *out, char *allow)
{
    return gw_router_match(method, strlen(method), path, strlen(path), out, allow, 64);
}

static void test_real_table(void **state)
{
    (void)state;
    char err[256], allow[64];
    struct gw_match mt;
    assert_int_equal(gw_router_init(err, sizeof err), CN_OK);
    assert_int_equal(m("POST", "/v1/auth/login", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "Login");
    assert_string_equal(mt.method->name, "Login");
    assert_int_equal(m("GET", "/v1/auth/me", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(m("GET", "/.well-known/jwks.json", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(m("GET", "/v1/auth/login", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(m("GET", "/v1/auth/me/", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "/v1/auth", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "/", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "/v1/auth/../auth/me", &mt, allow), GW_ROUTE_NOT_FOUND);
    gw_router_fini();
}

/* Templates compiled directly, without the service checks. */
static void test_templates(void **state)
{
    (void)state;
    struct gw_route r1 = {"GET", "/v1/jobs/{id}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0};
    struct gw_route r2 = {"POST", "/v1/jobs/{id}:cancel", "auth", "Me", GW_AUTH_USER, "", false, 0, 200, "", 0, 0};
    struct gw_route r3 = {"GET", "/v1/models/{name}/versions/{v}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0};
    struct compiled c1, c2, c3;
    char err[128];
    struct gw_match mt;
    assert_int_equal(compile(&r1, &c1, err, sizeof err), CN_OK);
    assert_int_equal(compile(&r2, &c2, err, sizeof err), CN_OK);
    assert_int_equal(compile(&r3, &c3, err, sizeof err), CN_OK);
    assert_true(c2.literal > c1.literal);

    assert_true(match_one(&c1, H2O_LIT_PAIR("/v1/jobs/42"), &mt));
    assert_int_equal(mt.nparams, 1);
    assert_memory_equal(mt.params[0].value, "42", 2);
    assert_false(match_one(&c1, H2O_LIT_PAIR("/v1/jobs/"), &mt));
    assert_false(match_one(&c1, H2O_LIT_PAIR("/v1/jobs/42/x"), &mt));
    assert_true(match_one(&c2, H2O_LIT_PAIR("/v1/jobs/42:cancel"), &mt));
    assert_int_equal(mt.params[0].value_len, 2);
    assert_false(match_one(&c2, H2O_LIT_PAIR("/v1/jobs/:cancel"), &mt));
    assert_false(match_one(&c2, H2O_LIT_PAIR("/v1/jobs/42"), &mt));
    assert_true(match_one(&c3, H2O_LIT_PAIR("/v1/models/iris/versions/3"), &mt));
    assert_int_equal(mt.nparams, 2);
    assert_memory_equal(mt.params[0].name, "name", 4);
    assert_memory_equal(mt.params[1].value, "3", 1);

    struct gw_route bad[] = {
        {"GET", "v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/{}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/{a", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/{a}{b}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++)
        assert_int_equal(compile(&bad[i], &c1, err, sizeof err), CN_EINVAL);
}

static void test_checks(void **state)
{
    (void)state;
    struct compiled c;
    char err[256];
    struct gw_route rows[] = {
        {"FETCH", "/v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x", "nosuch", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x", "auth", "NoSuchRpc", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x/{nofield}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 302, "", 0, 0},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_USER, "predict:all", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_PUBLIC, "predict", true, 0, 200, "", 0, 0},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_ADMIN, "", true, 0, 200, "", 0, 0},
    };
    const char *why[] = {"unknown method", "no service", "no RPC", "not a scalar field", "not allowed",
                         "unknown scope", "public route", "admin scope"};
    for (size_t i = 0; i < CN_ARRAY_LEN(rows); i++) {
        assert_int_equal(compile(&rows[i], &c, err, sizeof err), CN_OK);
        assert_int_equal(check(&rows[i], &c, err, sizeof err), CN_EINVAL);
        assert_non_null(strstr(err, why[i]));
    }
    struct gw_route ok = {"POST", "/v1/auth/refresh/{refresh_token}", "auth", "Refresh", GW_AUTH_PUBLIC, "",
                          false, 0, 200, "", 0, 0};
    assert_int_equal(compile(&ok, &c, err, sizeof err), CN_OK);
    assert_int_equal(check(&ok, &c, err, sizeof err), CN_OK);
}

static void test_raw_checks(void **state)
{
    (void)state;
    struct compiled c;
    char err[256];
    struct gw_route rows[] = {
        /* MeRequest has no body */
        {.method = "GET", .path = "/x", .service = "auth", .rpc = "Me", .auth = GW_AUTH_USER, .scope = "",
         .status = 200, .summary = "", .flags = GW_ROUTE_RAW},
        /* Predict answers RawResponse: transcoding it would base64 the service's JSON */
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "Predict", .auth = GW_AUTH_USER,
         .scope = "predict", .status = 200, .summary = ""},
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "Predict", .auth = GW_AUTH_USER,
         .scope = "predict", .status = 200, .summary = "", .flags = GW_ROUTE_RAW | 0x80},
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "Predict", .auth = GW_AUTH_USER,
         .scope = "predict", .status = 200, .summary = "", .flags = GW_ROUTE_RAW, .max_body = -1},
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "Predict", .auth = GW_AUTH_USER,
         .scope = "predict", .status = 200, .summary = "", .flags = GW_ROUTE_RAW,
         .max_body = GW_ROUTE_MAX_BODY_LIMIT + 1},
        /* the body comes from the request, never from the path */
        {.method = "POST", .path = "/x/{name}/{content_type}", .service = "inference", .rpc = "Predict",
         .auth = GW_AUTH_USER, .scope = "predict", .status = 200, .summary = "", .flags = GW_ROUTE_RAW},
    };
    const char *why[] = {"needs a field `bytes body`", "mark the route GW_ROUTE_RAW", "unknown flags",
                         "max_body -1", "max_body", "raw route's own field"};
    for (size_t i = 0; i < CN_ARRAY_LEN(rows); i++) {
        assert_int_equal(compile(&rows[i], &c, err, sizeof err), CN_OK);
        assert_int_equal(check(&rows[i], &c, err, sizeof err), CN_EINVAL);
        if (strstr(err, why[i]) == NULL)
            fail_msg("row %zu: '%s' does not say '%s'", i, err, why[i]);
    }

    /* Raw in, transcoded out (UploadVersion answers a ModelVersion); raw both ways; OIP
     * errors on a plain route; a 1 GiB cap. */
    struct gw_route good[] = {
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "UploadVersion",
         .auth = GW_AUTH_USER, .scope = "models:write", .status = 201, .summary = "", .flags = GW_ROUTE_RAW,
         .max_body = GW_ROUTE_MAX_BODY_LIMIT},
        {.method = "POST", .path = "/x/{name}", .service = "inference", .rpc = "Predict", .auth = GW_AUTH_USER,
         .scope = "predict", .status = 200, .summary = "", .flags = GW_ROUTE_RAW | GW_ROUTE_OIP_ERRORS},
        {.method = "GET", .path = "/x/{name}", .service = "inference", .rpc = "GetModel", .auth = GW_AUTH_USER,
         .scope = "models:read", .status = 200, .summary = "", .flags = GW_ROUTE_OIP_ERRORS},
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(good); i++) {
        assert_int_equal(compile(&good[i], &c, err, sizeof err), CN_OK);
        if (check(&good[i], &c, err, sizeof err) != CN_OK)
            fail_msg("good row %zu refused: %s", i, err);
    }

    /* Shapes proxy.c relies on, on a method made up of test messages: SayRequest has no
     * body field. */
    ProtobufCMethodDescriptor md = {"Say", &cairn__test__say_request__descriptor, &cairn__v1__raw_response__descriptor};
    struct compiled fake = {.method = &md};
    struct gw_route say = {.method = "POST", .path = "/x", .rpc = "Say", .flags = GW_ROUTE_RAW};
    assert_int_equal(check_raw(&say, &fake, err, sizeof err), CN_EINVAL);
    assert_non_null(strstr(err, "cairn.test.SayRequest"));
    say.flags = 0;
    assert_int_equal(check_raw(&say, &fake, err, sizeof err), CN_EINVAL);
    md.output = &cairn__test__say_reply__descriptor;
    assert_int_equal(check_raw(&say, &fake, err, sizeof err), CN_OK);

    assert_true(gw_raw_field("body"));
    assert_true(gw_raw_field("content_type"));
    assert_true(gw_raw_field("headers"));
    assert_false(gw_raw_field("name"));
    assert_false(gw_raw_field("bodyx"));
}

/* Every row, asked for with a path made from its own template ({param} -> "p<i>"), is
 * found as itself: no row is shadowed by another or by a sibling's method. */
static void test_every_row_reachable(void **state)
{
    (void)state;
    char err[256], allow[64];
    assert_int_equal(gw_router_init(err, sizeof err), CN_OK);
    for (size_t i = 0; i < gw_nroutes; i++) {
        char path[256];
        size_t o = 0;
        int k = 0;
        for (const char *p = gw_routes[i].path; *p && o < sizeof path - 8;) {
            if (*p == '{') {
                o += (size_t)snprintf(path + o, sizeof path - o, "p%d", k++);
                p = strchr(p, '}') + 1;
            } else {
                path[o++] = *p++;
            }
        }
        path[o] = '\0';
        struct gw_match mt;
        enum gw_route_result rv = m(gw_routes[i].method, path, &mt, allow);
        if (rv != GW_ROUTE_FOUND || mt.index != i)
            fail_msg("%s %s (as %s) does not resolve to itself", gw_routes[i].method, gw_routes[i].path, path);
        assert_int_equal(mt.nparams, (size_t)k);
    }
    gw_router_fini();
}

static void expect(const char *method, const char *path, const char *rpc)
{
    char allow[64];
    struct gw_match mt;
    if (m(method, path, &mt, allow) != GW_ROUTE_FOUND)
        fail_msg("%s %s: not found", method, path);
    if (strcmp(mt.route->rpc, rpc) != 0)
        fail_msg("%s %s: %s, expected %s", method, path, mt.route->rpc, rpc);
}

static const char *param(const struct gw_match *mt, const char *name)
{
    static char v[64];
    for (size_t i = 0; i < mt->nparams; i++) {
        if (mt->params[i].name_len == strlen(name) && memcmp(mt->params[i].name, name, strlen(name)) == 0) {
            snprintf(v, sizeof v, "%.*s", (int)mt->params[i].value_len, mt->params[i].value);
            return v;
        }
    }
    return NULL;
}

static void test_inference_routes(void **state)
{
    (void)state;
    char err[256], allow[64];
    struct gw_match mt;
    assert_int_equal(gw_router_init(err, sizeof err), CN_OK);

    expect("POST", "/v1/models", "CreateModel");
    expect("GET", "/v1/models", "ListModels");
    expect("GET", "/v1/models/iris", "GetModel");
    expect("PATCH", "/v1/models/iris", "UpdateModel");
    expect("POST", "/v1/models/iris/versions", "UploadVersion");
    expect("GET", "/v1/models/iris/versions", "ListVersions");
    expect("GET", "/v1/models/iris/versions/latest", "GetVersion");
    expect("DELETE", "/v1/models/iris/versions/2", "DeleteVersion");
    expect("PUT", "/v1/models/iris/versions/2/reference", "SetReference");
    expect("PUT", "/v1/models/iris/aliases/production", "SetAlias");
    expect("DELETE", "/v1/models/iris/aliases/production", "DeleteAlias");
    expect("PUT", "/v1/models/iris/experiment", "SetExperiment");
    expect("GET", "/v1/models/iris/experiment", "GetExperiment");
    expect("DELETE", "/v1/models/iris/experiment", "DeleteExperiment");
    expect("POST", "/v1/models/iris/feedback", "Feedback");
    expect("GET", "/v1/models/iris/stats", "GetStats");
    expect("GET", "/v1/models/iris/drift", "GetDrift");

    /* {name} vs {name}:predict: the verb wins for its path, the plain name for others. */
    assert_int_equal(m("POST", "/v1/models/iris.v2:predict", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "Predict");
    assert_string_equal(param(&mt, "name"), "iris.v2");
    assert_int_equal(m("GET", "/v1/models/iris:predict", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    /* An empty name is no predict call: ":predict" is then the {name} of GetModel. */
    assert_int_equal(m("POST", "/v1/models/:predict", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, PATCH");
    assert_int_equal(m("GET", "/v1/models/iris", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(param(&mt, "name"), "iris");
    assert_int_equal(m("POST", "/v1/models/iris", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, PATCH");
    assert_int_equal(m("POST", "/v1/models/iris/experiment", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "PUT, GET, DELETE");
    assert_int_equal(m("GET", "/v1/models/iris/versions/2/reference", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "PUT");
    assert_int_equal(m("GET", "/v1/models/iris/versions/2/infer", &mt, allow), GW_ROUTE_NOT_FOUND);

    /* Open Inference Protocol: the probes, and {model}[/versions/{version}] with or
     * without /ready and /infer. */
    expect("GET", "/v2", "ServerMetadata");
    expect("GET", "/v2/health/live", "ServerLive");
    expect("GET", "/v2/health/ready", "ServerReady");
    assert_int_equal(m("GET", "/v2/models/iris", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelMetadata");
    assert_null(param(&mt, "version"));
    assert_int_equal(m("GET", "/v2/models/iris/ready", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelReady");
    assert_string_equal(param(&mt, "model"), "iris");
    /* A model may be called "ready": the segment count tells the routes apart. */
    assert_int_equal(m("GET", "/v2/models/ready", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelMetadata");
    assert_string_equal(param(&mt, "model"), "ready");
    assert_int_equal(m("GET", "/v2/models/iris/versions/3", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelMetadata");
    assert_string_equal(param(&mt, "version"), "3");
    assert_int_equal(m("GET", "/v2/models/iris/versions/ready", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelMetadata");
    assert_string_equal(param(&mt, "version"), "ready");
    assert_int_equal(m("GET", "/v2/models/iris/versions/production/ready", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "ModelReady");
    assert_string_equal(param(&mt, "version"), "production");
    assert_int_equal(m("POST", "/v2/models/iris/infer", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "Infer");
    assert_null(param(&mt, "version"));
    assert_int_equal(m("POST", "/v2/models/iris/versions/3/infer", &mt, allow), GW_ROUTE_FOUND);
    assert_string_equal(mt.route->rpc, "Infer");
    assert_string_equal(param(&mt, "version"), "3");
    assert_int_equal(m("GET", "/v2/models/iris/infer", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(m("POST", "/v2/models/iris/ready", &mt, allow), GW_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET");
    assert_int_equal(m("GET", "/v2/models", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "/v2/health", &mt, allow), GW_ROUTE_NOT_FOUND);
    assert_int_equal(m("GET", "/v2/models/iris/versions", &mt, allow), GW_ROUTE_NOT_FOUND);
    gw_router_fini();
}

/* The flags, caps, timeouts and auth the API table gives the inference routes. */
static void test_inference_route_rows(void **state)
{
    (void)state;
    size_t raw = 0, oip = 0, inference = 0;
    for (size_t i = 0; i < gw_nroutes; i++) {
        const struct gw_route *r = &gw_routes[i];
        if (strcmp(r->service, "inference") != 0) {
            assert_int_equal(r->flags, 0);
            assert_int_equal(r->max_body, 0);
            continue;
        }
        inference++;
        int v2 = strncmp(r->path, "/v2", 3) == 0;
        int is_raw = v2 || strcmp(r->rpc, "UploadVersion") == 0 || strcmp(r->rpc, "SetReference") == 0 ||
                     strcmp(r->rpc, "Predict") == 0;
        if (is_raw != !!(r->flags & GW_ROUTE_RAW))
            fail_msg("%s %s: raw flag %s", r->method, r->path, is_raw ? "missing" : "unexpected");
        if (v2 != !!(r->flags & GW_ROUTE_OIP_ERRORS))
            fail_msg("%s %s: OIP errors flag %s", r->method, r->path, v2 ? "missing" : "unexpected");
        raw += is_raw;
        oip += v2;
        int probe = strcmp(r->path, "/v2") == 0 || strncmp(r->path, "/v2/health/", 11) == 0;
        assert_int_equal(r->auth, probe ? GW_AUTH_PUBLIC : GW_AUTH_USER);
        if (v2 && !probe)
            assert_string_equal(r->scope, "predict");
        if (strcmp(r->method, "GET") == 0 && !v2)
            assert_string_equal(r->scope, "models:read");
        if (strcmp(r->method, "GET") != 0)
            assert_int_equal(r->idempotent, strcmp(r->method, "POST") != 0 || strcmp(r->rpc, "Predict") == 0 ||
                                                strcmp(r->rpc, "Infer") == 0);
    }
    assert_int_equal(inference, 27);
    assert_int_equal(oip, 9);
    assert_int_equal(raw, 12);

    char err[256], allow[64];
    struct gw_match mt;
    assert_int_equal(gw_router_init(err, sizeof err), CN_OK);
    assert_int_equal(m("POST", "/v1/models/x/versions", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->max_body, 32 << 20);
    assert_int_equal(mt.route->timeout_ms, 60000);
    assert_int_equal(mt.route->status, 201);
    assert_int_equal(m("PUT", "/v1/models/x/versions/1/reference", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->max_body, 16 << 20);
    assert_int_equal(mt.route->timeout_ms, 30000);
    assert_int_equal(m("PUT", "/v1/models/x/aliases/staging", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->timeout_ms, 30000);
    assert_int_equal(m("POST", "/v1/models", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->status, 201);
    assert_int_equal(m("POST", "/v1/models/x/feedback", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->status, 204);
    assert_false(mt.route->idempotent);
    assert_int_equal(m("POST", "/v1/models/x:predict", &mt, allow), GW_ROUTE_FOUND);
    assert_int_equal(mt.route->max_body, 0);
    assert_int_equal(mt.route->timeout_ms, 0);
    gw_router_fini();

    assert_int_equal(gw_routes_max_body(1 << 20), 32 << 20);
    assert_int_equal(gw_routes_max_body(64 << 20), 64 << 20);
}

static int amb(const char *a, const char *b)
{
    struct gw_route ra = {"GET", a, "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0};
    struct gw_route rb = {"GET", b, "auth", "Me", GW_AUTH_USER, "", true, 0, 200, "", 0, 0};
    struct compiled ca, cb;
    char err[128];
    assert_int_equal(compile(&ra, &ca, err, sizeof err), CN_OK);
    assert_int_equal(compile(&rb, &cb, err, sizeof err), CN_OK);
    int r = ambiguous(&ca, &cb);
    assert_int_equal(ambiguous(&cb, &ca), r);
    return r;
}

static void test_ambiguity(void **state)
{
    (void)state;
    /* Some path matches both, and neither is more specific. */
    assert_true(amb("/a/{x}/b", "/a/b/{y}"));                 /* /a/b/b */
    assert_true(amb("/v1/x/{id}", "/v1/x/{name}"));
    assert_true(amb("/a/x{p}", "/a/{q}y"));                   /* /a/xzy */
    assert_true(amb("/a/b{p}:go", "/a/{q}o:go"));             /* /a/bzo:go */
    /* No path matches both, or one is more specific. */
    assert_false(amb("/v2/models/{model}/ready", "/v2/models/{model}/infer"));
    assert_false(amb("/v1/jobs/{id}", "/v1/jobs/{id}:cancel"));
    assert_false(amb("/a/x{p}", "/a/y{q}"));
    assert_false(amb("/a/{p}:go", "/a/{q}:stop"));
    assert_false(amb("/v2/models/{m}", "/v2/models/{m}/ready"));
    assert_false(amb("/a/bc", "/a/{x}c"));                    /* literal 3 vs 2 */
    assert_false(amb("/a/b", "/a/c"));
}

static void test_url_decode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(gw_url_decode("a%20b", 5, out, 0), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(gw_url_decode("a+b", 3, out, 0), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(gw_url_decode("a+b", 3, out, 1), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(gw_url_decode("%41%6a", 6, out, 0), 2);
    assert_string_equal(out, "Aj");
    assert_int_equal(gw_url_decode("%4", 2, out, 0), -1);
    assert_int_equal(gw_url_decode("%", 1, out, 0), -1);
    assert_int_equal(gw_url_decode("%zz", 3, out, 0), -1);
    assert_int_equal(gw_url_decode("%00", 3, out, 0), -1);
    assert_int_equal(gw_url_decode("", 0, out, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_table),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_raw_checks),
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_every_row_reachable),
        cmocka_unit_test(test_inference_routes),
        cmocka_unit_test(test_inference_route_rows),
        cmocka_unit_test(test_ambiguity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
