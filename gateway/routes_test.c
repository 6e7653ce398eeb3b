/* routes_test.c — the service table and its helpers: CAIRN_READY_SERVICES parsing, the
 * per-service reply caps, and the largest body a route accepts. (The route rows
 * themselves are checked in router_test.c, against the router.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "routes.c"

static size_t service_index(const char *name)
{
    const struct gw_service *s = gw_service_find(name);
    assert_non_null(s);
    return (size_t)(s - gw_services);
}

static void test_services_parse(void **state)
{
    (void)state;
    bool need[8];
    char err[128];
    assert_true(gw_nservices <= 8);
    size_t auth = service_index("auth"), inf = service_index("inference");

    assert_int_equal(gw_services_parse("auth", need, err, sizeof err), CN_OK);
    assert_true(need[auth]);
    assert_false(need[inf]);

    assert_int_equal(gw_services_parse(" inference , auth,", need, err, sizeof err), CN_OK);
    assert_true(need[auth]);
    assert_true(need[inf]);

    assert_int_equal(gw_services_parse("inference", need, err, sizeof err), CN_OK);
    assert_false(need[auth]);
    assert_true(need[inf]);

    /* Nothing named: ready as soon as the signing keys are in. */
    need[auth] = need[inf] = true;
    assert_int_equal(gw_services_parse("", need, err, sizeof err), CN_OK);
    assert_false(need[auth]);
    assert_false(need[inf]);
    assert_int_equal(gw_services_parse(" , ,", need, err, sizeof err), CN_OK);
    assert_false(need[auth]);

    /* A typo must fail start-up, not leave the gateway never (or always) ready. */
    assert_int_equal(gw_services_parse("auth,infernce", need, err, sizeof err), CN_EINVAL);
    assert_non_null(strstr(err, "'infernce'"));
    assert_int_equal(gw_services_parse("authx", need, err, sizeof err), CN_EINVAL);
    assert_int_equal(gw_services_parse("aut", need, err, sizeof err), CN_EINVAL);
}

static void test_service_rows(void **state)
{
    (void)state;
    const struct gw_service *inf = gw_service_find("inference");
    assert_non_null(inf);
    assert_string_equal(inf->addr_env, "CAIRN_INFERENCE_ADDR");
    assert_string_equal(inf->addr_default, "tcp://127.0.0.1:7104");
    assert_int_equal(inf->max_msg, 64u << 20);
    assert_ptr_equal(inf->descriptor, &cairn__v1__inference__descriptor);
    assert_int_equal(gw_service_find("auth")->max_msg, 0);
    assert_null(gw_service_find("nosuch"));
}

static void test_max_body(void **state)
{
    (void)state;
    int64_t biggest = 0;
    for (size_t i = 0; i < gw_nroutes; i++)
        if (gw_routes[i].max_body > biggest)
            biggest = gw_routes[i].max_body;
    assert_int_equal(biggest, 32 * MiB);
    assert_int_equal(gw_routes_max_body(1024), 32 * MiB);
    assert_int_equal(gw_routes_max_body(100 * MiB), 100 * MiB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_services_parse),
        cmocka_unit_test(test_service_rows),
        cmocka_unit_test(test_max_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
