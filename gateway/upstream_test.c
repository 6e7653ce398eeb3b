/* upstream_test.c — instance sets: address parsing, name resolution into one endpoint
 * per address, refresh keeping an unchanged set, malformed lists refused, and a call
 * with no connected instance failing at once instead of waiting out its timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "upstream.c"

static void test_parse(void **state)
{
    (void)state;
    struct target t;
    assert_int_equal(target_parse(&t, "tcp://127.0.0.1:7101"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    assert_int_equal(target_parse(&t, "tcp://auth.cairn.svc:7101"), CN_OK);
    assert_string_equal(t.host, "auth.cairn.svc");
    assert_string_equal(t.port, "7101");
    free(t.addr), free(t.host), free(t.port);
    assert_int_equal(target_parse(&t, "tcp://[::1]:7101"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    assert_int_equal(target_parse(&t, "inproc://x"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    const char *bad[] = {"tcp://auth", "tcp://:7101", "tcp://auth:", "tcp://[::1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(target_parse(&t, bad[i]), CN_EINVAL);
        free(t.addr);
        free(t.host);
        free(t.port);
    }
}

static void test_sets(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "tcp://127.0.0.1:1, tcp://localhost:2,tcp://127.0.0.1:1", 0);
    assert_non_null(u);
    struct epset *set = atomic_load(&u->set);
    /* the duplicate is folded; localhost gives at least 127.0.0.1:2 */
    assert_true(set->n >= 2);
    int found = 0;
    for (int i = 0; i < set->n; i++)
        found += strcmp(set->eps[i]->addr, "tcp://127.0.0.1:2") == 0;
    assert_int_equal(found, 1);
    gw_upstream_refresh(u);
    assert_ptr_equal(atomic_load(&u->set), set);   /* nothing changed, nothing swapped */
    assert_int_equal(gw_upstream_connected(u), 0);

    /* nothing listens: the call fails now, not after its timeout */
    nng_msg *m;
    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    struct gw_upcall *c;
    assert_int_equal(gw_upstream_call(u, m, 5000, NULL, NULL, NULL, &c), CN_EUNAVAIL);
    nng_msg_free(m);
    gw_upstream_free(u);

    assert_null(gw_upstream_new("auth", "", 0));
    assert_null(gw_upstream_new("auth", "tcp://auth", 0));
    assert_null(gw_upstream_new("auth", "bogus://x", 0));
}

static void test_retire(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "inproc://a,inproc://b", 0);
    assert_non_null(u);
    assert_int_equal(atomic_load(&u->set)->n, 2);
    /* drop b from the targets: the next refresh retires it, later ones free it */
    free(u->targets[1].addr);
    u->ntargets = 1;
    gw_upstream_refresh(u);
    assert_int_equal(atomic_load(&u->set)->n, 1);
    assert_non_null(u->retired);
    for (int i = 0; i < 3; i++)
        gw_upstream_refresh(u);
    assert_null(u->retired);
    assert_null(u->old_sets);
    gw_upstream_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_retire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
