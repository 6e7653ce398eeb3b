/* apikeys_test.c — the edge's key cache (hit only with the right secret, expiry, TTL),
 * revocation of keys and users (a user's older tokens refused, newer ones not), and
 * parsing of revocation events, including malformed ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "apikeys.c"

#define H2O_LIT(s) (s), (sizeof(s) - 1)

static int setup(void **state)
{
    (void)state;
    return gw_apikeys_start("", 10000, 3600) == CN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    gw_apikeys_stop();
    return 0;
}

static void test_cache(void **state)
{
    (void)state;
    struct cn_apikey k, other;
    char text[CN_APIKEY_LEN + 1];
    cn_apikey_new(&k, text);
    struct gw_principal p = {.sub = "u1", .role = "user", .scope = "predict", .key_id = "x"}, got;
    snprintf(p.key_id, sizeof p.key_id, "%s", k.id);
    assert_false(gw_apikeys_lookup(&k, &got));
    gw_apikeys_store(&k, &p, gw_apikeys_epoch());
    assert_true(gw_apikeys_lookup(&k, &got));
    assert_string_equal(got.sub, "u1");
    /* same id, another secret: a miss */
    other = k;
    other.secret[0] = other.secret[0] == 'A' ? 'B' : 'A';
    assert_false(gw_apikeys_lookup(&other, &got));
    /* revoked: gone */
    unsigned epoch = gw_apikeys_epoch();
    gw_apikeys_revoke_key(k.id);
    assert_false(gw_apikeys_lookup(&k, &got));
    /* a resolve answered before the revocation must not bring it back */
    gw_apikeys_store(&k, &p, epoch);
    assert_false(gw_apikeys_lookup(&k, &got));
    /* an expired key is not served from the cache */
    p.exp = cn_wall_s() - 1;
    gw_apikeys_store(&k, &p, gw_apikeys_epoch());
    assert_false(gw_apikeys_lookup(&k, &got));
    /* nor after the cache lifetime */
    p.exp = 0;
    cache_ttl_ms = 0;
    gw_apikeys_store(&k, &p, gw_apikeys_epoch());
    assert_false(gw_apikeys_lookup(&k, &got));
    cache_ttl_ms = 10000;
}

static void test_users(void **state)
{
    (void)state;
    struct cn_apikey k;
    char text[CN_APIKEY_LEN + 1];
    cn_apikey_new(&k, text);
    struct gw_principal p = {.sub = "u2", .role = "user"}, got;
    gw_apikeys_store(&k, &p, gw_apikeys_epoch());
    int64_t before = cn_wall_s() - 5;
    assert_false(gw_user_revoked("u2", before));
    /* The revocation is stamped with the wall second it happens in, at or after t0 (a
     * second may tick between the two reads: compare with the bounds, never "now"). */
    int64_t t0 = cn_wall_s();
    gw_apikeys_revoke_user("u2");
    int64_t t1 = cn_wall_s();
    assert_true(gw_user_revoked("u2", before));
    assert_true(gw_user_revoked("u2", t0));                 /* issued before or in that second: refused */
    assert_false(gw_user_revoked("u2", t1 + 1));            /* signed in again later */
    assert_false(gw_user_revoked("u3", before));
    assert_false(gw_apikeys_lookup(&k, &got));               /* the user's keys went too */
    gw_apikeys_revoke_user("u2");                            /* again: no second entry */
    assert_int_equal(atomic_load(&nrevoked), 1);
    gw_apikeys_enable_user("u2");
    assert_false(gw_user_revoked("u2", cn_wall_s()));
    assert_int_equal(atomic_load(&nrevoked), 0);
    /* an expired entry ahead of the user's own does not make a second one */
    gw_apikeys_revoke_user("old");
    gw_apikeys_revoke_user("u2");
    revoked[0].until_s = cn_wall_s() - 1;   /* "old" expired */
    gw_apikeys_revoke_user("u2");
    gw_apikeys_enable_user("u2");
    assert_false(gw_user_revoked("u2", 0));
}

static void test_events(void **state)
{
    (void)state;
    assert_int_equal(gw_apikeys_apply_event(H2O_LIT("revoke-key abc")), CN_OK);
    assert_int_equal(gw_apikeys_apply_event(H2O_LIT("revoke-user u9")), CN_OK);
    assert_true(gw_user_revoked("u9", 0));
    assert_int_equal(gw_apikeys_apply_event(H2O_LIT("enable-user u9")), CN_OK);
    assert_false(gw_user_revoked("u9", 0));
    const char *bad[] = {"", "revoke-key", "revoke-key ", "revoke-everything x", "revoke-key a b",
                         "revoke-key \x01", "revoke-user \xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(gw_apikeys_apply_event(bad[i], strlen(bad[i])), CN_EINVAL);
    char big[300];
    memset(big, 'a', sizeof big);
    memcpy(big, "revoke-key ", 11);
    assert_int_equal(gw_apikeys_apply_event(big, sizeof big), CN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_users),
        cmocka_unit_test(test_events),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
