/* ratelimit_test.c — the parts of ratelimit.c that need no Redis: which policies apply to
 * which caller, the client address behind trusted proxies, and the local GCRA fallback
 * (exact counts, limit / replicas, all-or-nothing across buckets, shadow never refuses).
 * The Redis script itself is exercised by tests/system/test_300_gateway_ratelimit.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelimit.c"
#include "routes.h"

static struct gw_config *parse(const char *text)
{
    struct gw_config *c;
    char err[512];
    if (gw_config_parse("t.yaml", text, strlen(text), &c, err, sizeof err) != CN_OK)
        fail_msg("%s", err);
    return c;
}

static size_t route_index(const char *method, const char *path)
{
    for (size_t i = 0; i < gw_nroutes; i++)
        if (strcmp(gw_routes[i].method, method) == 0 && strcmp(gw_routes[i].path, path) == 0)
            return i;
    fail_msg("no route %s %s", method, path);
    return 0;
}

static void test_selection(void **state)
{
    (void)state;
    struct gw_config *c = parse("route_groups:\n"
                                "  auth: [\"/v1/auth*\"]\n"
                                "rate_limits:\n"
                                "  - {name: anon, tiers: [anonymous], key: ip, limit: 10}\n"
                                "  - {name: users, groups: [auth], tiers: [user, admin], key: user, limit: 10}\n"
                                "  - {name: keys, tiers: [key], key: key, limit: 10}\n"
                                "  - {name: vip, tiers: [key], key: key, limit: 99, key_ids: [K1], replaces: keys}\n"
                                "  - {name: everyone, key: user, limit: 10}\n");
    struct gw_rl_caller anon = {false, "", "", "", false};
    struct gw_rl_caller user = {true, "u1", "user", "", false};
    struct gw_rl_caller admin = {true, "a1", "admin", "", false};
    struct gw_rl_caller key = {true, "u1", "user", "K2", false};
    struct gw_rl_caller vip = {true, "u1", "user", "K1", false};
    assert_int_equal(caller_tiers(&anon), GW_TIER_ANONYMOUS);
    assert_int_equal(caller_tiers(&user), GW_TIER_USER);
    assert_int_equal(caller_tiers(&admin), GW_TIER_ADMIN);
    assert_int_equal(caller_tiers(&key), GW_TIER_USER | GW_TIER_KEY);

    int auth = gw_config_route_group(c, route_index("GET", "/v1/auth/me"));
    int none = gw_config_route_group(c, route_index("GET", "/v1/admin/users"));
    assert_int_equal(auth, 0);
    assert_int_equal(none, -1);
    const struct gw_rl_policy *p = c->policies;
    assert_true(policy_applies(&p[0], none, caller_tiers(&anon), &anon));
    assert_false(policy_applies(&p[0], none, caller_tiers(&user), &user));
    assert_true(policy_applies(&p[1], auth, caller_tiers(&user), &user));
    assert_true(policy_applies(&p[1], auth, caller_tiers(&admin), &admin));
    assert_false(policy_applies(&p[1], none, caller_tiers(&user), &user));     /* not its group */
    assert_true(policy_applies(&p[1], auth, caller_tiers(&key), &key));        /* a key is its owner's tier too */
    assert_true(policy_applies(&p[2], auth, caller_tiers(&key), &key));
    assert_false(policy_applies(&p[2], auth, caller_tiers(&user), &user));
    assert_false(policy_applies(&p[3], auth, caller_tiers(&key), &key));       /* key_ids */
    assert_true(policy_applies(&p[3], auth, caller_tiers(&vip), &vip));
    assert_int_equal(p[3].replaces, 2);
    /* A bucket the caller does not have: `user` needs a caller. */
    assert_false(policy_applies(&p[4], none, caller_tiers(&anon), &anon));
    assert_true(policy_applies(&p[4], none, caller_tiers(&user), &user));
    gw_config_put(c);
}

static void xff(const struct gw_config *c, const char *header, const char *peer, const char *want)
{
    char out[INET6_ADDRSTRLEN];
    snprintf(out, sizeof out, "%s", peer);
    client_from_xff(c, header, strlen(header), out, sizeof out);
    if (strcmp(out, want) != 0)
        fail_msg("X-Forwarded-For \"%s\": got %s, want %s", header, out, want);
}

static void test_forwarded_for(void **state)
{
    (void)state;
    struct gw_config *c = parse("trusted_proxies: [10.0.0.0/8, \"fd00::/8\"]\n");
    xff(c, "1.2.3.4", "10.0.0.1", "1.2.3.4");
    xff(c, "1.2.3.4, 10.0.0.5", "10.0.0.1", "1.2.3.4");
    /* The right-most untrusted hop: a client cannot choose its address by prepending. */
    xff(c, "6.6.6.6, 1.2.3.4, 10.0.0.5", "10.0.0.1", "1.2.3.4");
    xff(c, "10.9.9.9,10.0.0.5", "10.0.0.1", "10.9.9.9");     /* all trusted: the left-most */
    xff(c, "garbage, 10.0.0.5", "10.0.0.1", "10.0.0.5");      /* garbage stops the walk */
    xff(c, " 1.2.3.4:5678 ", "10.0.0.1", "1.2.3.4");
    xff(c, "[2001:db8::1]:443, fd00::7", "10.0.0.1", "2001:db8::1");
    xff(c, "2001:db8::2", "10.0.0.1", "2001:db8::2");
    xff(c, "", "10.0.0.1", "10.0.0.1");
    gw_config_put(c);
}

/* Verdicts for policies p[idx...] with keys "k<idx>". */
static void verdicts(const struct gw_config *c, struct verdict *v, struct verdict **vs, const size_t *idx, size_t n)
{
    static char keys[8][16];
    for (size_t i = 0; i < n; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].p = &c->policies[idx[i]];
        v[i].t_us = v[i].p->window_ms * 1000 / v[i].p->limit;
        snprintf(keys[i], sizeof keys[i], "k%zu", idx[i]);
        v[i].key = keys[i];
        v[i].keylen = strlen(keys[i]);
        vs[i] = &v[i];
    }
}

static void test_local_gcra(void **state)
{
    (void)state;
    struct gw_config *c = parse("replicas: 2\n"
                                "rate_limits:\n"
                                "  - {name: a, limit: 10, window_s: 60, burst: 4}\n"      /* local: 2 at once, one per 12 s */
                                "  - {name: b, limit: 1000, window_s: 1}\n"
                                "  - {name: s, limit: 1, window_s: 3600, mode: shadow}\n");
    struct verdict v[3];
    struct verdict *vs[3];
    size_t a[] = {0};
    for (int i = 0; i < 2; i++) {
        verdicts(c, v, vs, a, 1);
        local_decide(c, vs, 1);
        assert_true(v[0].allowed);
        assert_int_equal(v[0].outcome, FALLBACK_ALLOWED);
        assert_int_equal(v[0].remaining, 1 - i);
    }
    verdicts(c, v, vs, a, 1);
    local_decide(c, vs, 1);
    assert_false(v[0].allowed);
    assert_int_equal(v[0].outcome, FALLBACK_LIMITED);
    assert_true(v[0].retry_ms > 11900 && v[0].retry_ms <= 12000);
    assert_true(v[0].reset_ms > 23900 && v[0].reset_ms <= 24000);

    /* All or nothing: b admits, a refuses, so b's bucket does not move. */
    size_t ab[] = {1, 0};
    for (int i = 0; i < 3; i++) {
        verdicts(c, v, vs, ab, 2);
        local_decide(c, vs, 2);
        assert_true(v[0].allowed);
        assert_false(v[1].allowed);
    }
    size_t b[] = {1};
    verdicts(c, v, vs, b, 1);
    local_decide(c, vs, 1);
    assert_int_equal(v[0].remaining, 500 - 1);   /* burst 1000 / 2 replicas, one used */

    /* A shadow policy that would refuse never blocks the others. */
    size_t bs[] = {1, 2};
    for (int i = 0; i < 3; i++) {
        verdicts(c, v, vs, bs, 2);
        local_decide(c, vs, 2);
        assert_true(v[0].allowed);
        assert_int_equal(v[1].allowed, i == 0);
        assert_int_equal(v[1].outcome, i == 0 ? FALLBACK_ALLOWED : SHADOW_LIMITED);
    }
    gw_config_put(c);
}

static void test_fallback_modes(void **state)
{
    (void)state;
    struct gw_config *c = parse("redis: {probe_ms: 700}\n"
                                "rate_limits:\n"
                                "  - {name: o, limit: 1, on_redis_down: open}\n"
                                "  - {name: x, limit: 1, on_redis_down: closed}\n");
    struct verdict v[2];
    struct verdict *vs[2];
    size_t idx[] = {0, 1};
    verdicts(c, v, vs, idx, 2);
    struct pending pd = {.c = c, .v = v, .n = 2};
    fallback(&pd);
    assert_true(v[0].allowed);
    assert_int_equal(v[0].outcome, FAILED_OPEN);
    assert_false(v[1].allowed);
    assert_int_equal(v[1].outcome, FAILED_CLOSED);
    assert_int_equal(v[1].retry_ms, 700);
    gw_config_put(c);
}

static void test_redis_addr(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(gw_redis_addr_parse("127.0.0.1:6379", host, sizeof host, &port), CN_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6379);
    assert_int_equal(gw_redis_addr_parse("[::1]:7000", host, sizeof host, &port), CN_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    assert_int_equal(gw_redis_addr_parse("redis:0", host, sizeof host, &port), CN_EINVAL);
    assert_int_equal(gw_redis_addr_parse("redis", host, sizeof host, &port), CN_EINVAL);
    assert_int_equal(gw_redis_addr_parse(":6379", host, sizeof host, &port), CN_EINVAL);
}

int main(void)
{
    assert_int_equal(gw_ratelimit_init("127.0.0.1:6379"), CN_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selection),
        cmocka_unit_test(test_forwarded_for),
        cmocka_unit_test(test_local_gcra),
        cmocka_unit_test(test_fallback_modes),
        cmocka_unit_test(test_redis_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
