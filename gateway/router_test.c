/* router_test.c — route templates against the real table and a test table: literal and
 * {param} segments, suffix verbs, specificity, 404 vs 405 with Allow, percent-decoding,
 * and start-up checks that reject a bad table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router.c"

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
    struct gw_route r1 = {"GET", "/v1/jobs/{id}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""};
    struct gw_route r2 = {"POST", "/v1/jobs/{id}:cancel", "auth", "Me", GW_AUTH_USER, "", false, 0, 200, ""};
    struct gw_route r3 = {"GET", "/v1/models/{name}/versions/{v}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""};
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
        {"GET", "v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/{}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/{a", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/{a}{b}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
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
        {"FETCH", "/v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/x", "nosuch", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/x", "auth", "NoSuchRpc", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/x/{nofield}", "auth", "Me", GW_AUTH_USER, "", true, 0, 200, ""},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_USER, "", true, 0, 302, ""},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_USER, "predict:all", true, 0, 200, ""},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_PUBLIC, "predict", true, 0, 200, ""},
        {"GET", "/v1/x", "auth", "Me", GW_AUTH_ADMIN, "", true, 0, 200, ""},
    };
    const char *why[] = {"unknown method", "no service", "no RPC", "not a scalar field", "not allowed",
                         "unknown scope", "public route", "admin scope"};
    for (size_t i = 0; i < CN_ARRAY_LEN(rows); i++) {
        assert_int_equal(compile(&rows[i], &c, err, sizeof err), CN_OK);
        assert_int_equal(check(&rows[i], &c, err, sizeof err), CN_EINVAL);
        assert_non_null(strstr(err, why[i]));
    }
    struct gw_route ok = {"POST", "/v1/auth/refresh/{refresh_token}", "auth", "Refresh", GW_AUTH_PUBLIC, "", false, 0, 200, ""};
    assert_int_equal(compile(&ok, &c, err, sizeof err), CN_OK);
    assert_int_equal(check(&ok, &c, err, sizeof err), CN_OK);
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
        cmocka_unit_test(test_url_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
