/* config_test.c — the policy file: a full valid file read field by field, the defaults
 * without a file, every kind of error with its line and key path, route groups matched
 * against the real route table, trusted-proxy CIDRs, and a reload that keeps the old
 * config when the new file is invalid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

#include "config.c"

static const char full[] =
    "replicas: 2\n"
    "trusted_proxies: [10.0.0.0/8, \"::1\"]\n"
    "redis:\n"
    "  timeout_ms: 7\n"
    "  probe_ms: 500\n"
    "route_groups:\n"
    "  auth: [\"/v1/auth*\"]\n"
    "  me: [\"GET /v1/auth/me\"]\n"                       /* already in auth: stays there */
    "  keys: [\"DELETE /v1/auth/api-keys/{id}\", \"/.well-known/jwks.json\"]\n"
    "rate_limits:\n"
    "  - name: anon-ip\n"
    "    groups: [\"*\"]\n"
    "    tiers: [anonymous]\n"
    "    key: ip\n"
    "    limit: 100\n"
    "    window_s: 60\n"
    "  - name: user-burst\n"
    "    groups: [auth, keys]\n"
    "    tiers: [user, admin, key]\n"
    "    key: user\n"
    "    limit: 10\n"
    "    window_s: 1\n"
    "    burst: 3\n"
    "    mode: shadow\n"
    "    on_redis_down: closed\n"
    "  - name: vip\n"
    "    tiers: [key]\n"
    "    key: key\n"
    "    limit: 1000\n"
    "    key_ids: [abc123, def456]\n"
    "    replaces: user-burst\n"
    "    on_redis_down: open\n"
    "retries: {max_attempts: 2, base_ms: 10, cap_ms: 100, budget_percent: 10, budget_min_per_s: 1}\n"
    "outlier: {consecutive_failures: 3, base_ejection_s: 5, max_ejection_s: 60, max_ejected_percent: 30}\n"
    "shedding: {max_outstanding: 64}\n"
    "faults:\n"
    "  enabled: true\n"
    "  headers: true\n"
    "  rules:\n"
    "    - groups: [auth]\n"
    "      delay_ms: 100\n"
    "      delay_percent: 12.5\n"
    "      abort_status: 503\n"
    "      abort_percent: 5\n";

static struct gw_config *parse_ok(const char *text)
{
    struct gw_config *c = NULL;
    char err[512] = "";
    int rv = gw_config_parse("t.yaml", text, strlen(text), &c, err, sizeof err);
    if (rv != CN_OK)
        fail_msg("unexpected error: %s", err);
    assert_non_null(c);
    return c;
}

/* Parses text, which must fail with exactly want as the message. */
static void parse_fails(const char *text, const char *want)
{
    struct gw_config *c = (struct gw_config *)1;
    char err[512] = "";
    assert_int_equal(gw_config_parse("t.yaml", text, strlen(text), &c, err, sizeof err), CN_EINVAL);
    assert_null(c);
    if (strcmp(err, want) != 0)
        fail_msg("got  \"%s\"\nwant \"%s\"", err, want);
}

static size_t route_index(const char *method, const char *path)
{
    for (size_t i = 0; i < gw_nroutes; i++)
        if (strcmp(gw_routes[i].method, method) == 0 && strcmp(gw_routes[i].path, path) == 0)
            return i;
    fail_msg("no route %s %s", method, path);
    return 0;
}

static void test_full_file(void **state)
{
    (void)state;
    struct gw_config *c = parse_ok(full);
    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(c->replicas, 2);
    assert_int_equal(c->ntrusted, 2);
    assert_int_equal(c->trusted[0].family, AF_INET);
    assert_int_equal(c->trusted[0].prefix, 8);
    assert_int_equal(c->trusted[1].family, AF_INET6);
    assert_int_equal(c->trusted[1].prefix, 128);
    assert_int_equal(c->redis_timeout_ms, 7);
    assert_int_equal(c->redis_probe_ms, 500);

    assert_int_equal(c->ngroups, 3);
    assert_string_equal(c->group_names[0], "auth");
    assert_string_equal(c->group_names[2], "keys");
    /* A route is in the first group that matches it. */
    assert_int_equal(gw_config_route_group(c, route_index("POST", "/v1/auth/login")), 0);
    assert_int_equal(gw_config_route_group(c, route_index("GET", "/v1/auth/me")), 0);
    assert_int_equal(gw_config_route_group(c, route_index("DELETE", "/v1/auth/api-keys/{id}")), 0);
    assert_int_equal(gw_config_route_group(c, route_index("GET", "/.well-known/jwks.json")), 2);
    assert_int_equal(gw_config_route_group(c, route_index("GET", "/v1/admin/users")), -1);

    assert_int_equal(c->npolicies, 3);
    const struct gw_rl_policy *p = &c->policies[0];
    assert_string_equal(p->name, "anon-ip");
    assert_true(p->all_groups);
    assert_int_equal(p->tiers, GW_TIER_ANONYMOUS);
    assert_int_equal(p->key, GW_RL_KEY_IP);
    assert_int_equal(p->limit, 100);
    assert_int_equal(p->window_ms, 60000);
    assert_int_equal(p->burst, 100);              /* defaults to the limit */
    assert_false(p->shadow);
    assert_int_equal(p->on_down, GW_RL_DOWN_LOCAL);
    assert_int_equal(p->nkey_ids, 0);
    assert_int_equal(p->replaces, -1);
    p = &c->policies[1];
    assert_false(p->all_groups);
    assert_int_equal(p->groups, (1u << 0) | (1u << 2));
    assert_int_equal(p->tiers, GW_TIER_USER | GW_TIER_ADMIN | GW_TIER_KEY);
    assert_int_equal(p->key, GW_RL_KEY_USER);
    assert_int_equal(p->window_ms, 1000);
    assert_int_equal(p->burst, 3);
    assert_true(p->shadow);
    assert_int_equal(p->on_down, GW_RL_DOWN_CLOSED);
    p = &c->policies[2];
    assert_true(p->all_groups);                   /* groups left out: every route */
    assert_int_equal(p->key, GW_RL_KEY_KEY);
    assert_int_equal(p->nkey_ids, 2);
    assert_string_equal(p->key_ids[1], "def456");
    assert_int_equal(p->replaces, 1);
    assert_int_equal(p->on_down, GW_RL_DOWN_OPEN);

    assert_int_equal(c->retry_max_attempts, 2);
    assert_int_equal(c->retry_base_ms, 10);
    assert_int_equal(c->retry_cap_ms, 100);
    assert_int_equal(c->retry_budget_percent, 10);
    assert_int_equal(c->retry_budget_min_per_s, 1);
    assert_int_equal(c->outlier_failures, 3);
    assert_int_equal(c->outlier_base_s, 5);
    assert_int_equal(c->outlier_max_s, 60);
    assert_int_equal(c->outlier_max_percent, 30);
    assert_int_equal(c->shed_max_outstanding, 64);
    assert_true(c->faults_enabled);
    assert_true(c->fault_headers);
    assert_int_equal(c->nfaults, 1);
    assert_int_equal(c->faults[0].groups, 1);
    assert_int_equal(c->faults[0].delay_ms, 100);
    assert_true(c->faults[0].delay_percent == 12.5);
    assert_int_equal(c->faults[0].abort_status, 503);
    assert_true(c->faults[0].abort_percent == 5);
    gw_config_put(c);
}

static void check_defaults(const struct gw_config *c)
{
    assert_int_equal(c->replicas, 1);
    assert_int_equal(c->ntrusted, 0);
    assert_int_equal(c->redis_timeout_ms, 5);
    assert_int_equal(c->redis_probe_ms, 1000);
    assert_int_equal(c->ngroups, 0);
    assert_int_equal(c->npolicies, 0);
    assert_int_equal(gw_config_route_group(c, 0), -1);
    assert_int_equal(c->retry_max_attempts, 3);
    assert_int_equal(c->retry_base_ms, 25);
    assert_int_equal(c->retry_cap_ms, 250);
    assert_int_equal(c->retry_budget_percent, 20);
    assert_int_equal(c->retry_budget_min_per_s, 3);
    assert_int_equal(c->outlier_failures, 5);
    assert_int_equal(c->outlier_base_s, 30);
    assert_int_equal(c->outlier_max_s, 300);
    assert_int_equal(c->outlier_max_percent, 50);
    assert_int_equal(c->shed_max_outstanding, 256);
    assert_false(c->faults_enabled);
    assert_false(c->fault_headers);
    assert_int_equal(c->nfaults, 0);
}

static void test_defaults(void **state)
{
    (void)state;
    struct gw_config *c;
    char err[256];
    assert_int_equal(gw_config_load("", &c, err, sizeof err), CN_OK);
    assert_string_equal(c->path, "");
    check_defaults(c);
    gw_config_put(c);
    assert_int_equal(gw_config_load(NULL, &c, err, sizeof err), CN_OK);
    check_defaults(c);
    gw_config_put(c);
    /* An empty file, a comment-only file and empty sections are the defaults too. */
    c = parse_ok("");
    check_defaults(c);
    gw_config_put(c);
    c = parse_ok("# nothing yet\n");
    check_defaults(c);
    gw_config_put(c);
    c = parse_ok("redis:\nrate_limits: []\nfaults: {}\n");
    check_defaults(c);
    gw_config_put(c);
}

static void test_errors(void **state)
{
    (void)state;
    /* Unknown keys, at every level. */
    parse_fails("replicas: 1\nrate_limit: []\n",
                "t.yaml:2: rate_limit: unknown key (expected one of: replicas, trusted_proxies, redis, "
                "route_groups, rate_limits, retries, outlier, shedding, faults)");
    parse_fails("redis:\n  timeout: 5\n",
                "t.yaml:2: redis.timeout: unknown key (expected one of: timeout_ms, probe_ms)");
    parse_fails("rate_limits:\n  - name: a\n    limit: 5\n    windows: 60\n",
                "t.yaml:4: rate_limits[0].windows: unknown key (expected one of: name, groups, tiers, key, limit, "
                "window_s, burst, mode, on_redis_down, key_ids, replaces)");
    parse_fails("redis: {probe_ms: 100, probe_ms: 200}\n", "t.yaml:1: redis.probe_ms: given twice");
    /* Types and ranges. */
    parse_fails("replicas: two\n", "t.yaml:1: replicas: expected an integer");
    parse_fails("replicas: \"2\"\n", "t.yaml:1: replicas: expected an integer");
    parse_fails("\n\nreplicas: 0\n", "t.yaml:3: replicas: 0 is out of range [1, 1000]");
    parse_fails("redis:\n  timeout_ms: 100000\n", "t.yaml:2: redis.timeout_ms: 100000 is out of range [1, 10000]");
    parse_fails("faults:\n  enabled: yes please\n", "t.yaml:2: faults.enabled: expected true or false");
    parse_fails("faults:\n  rules:\n    - abort_percent: 101\n",
                "t.yaml:3: faults.rules[0].abort_percent: 101 is out of range [0, 100]");
    parse_fails("faults:\n  rules:\n    - abort_status: 302\n",
                "t.yaml:3: faults.rules[0].abort_status: 302 is not an error status (400..599, or 0 for none)");
    parse_fails("retries: {base_ms: 300}\n", "t.yaml:1: retries.base_ms: cap_ms (250) must be at least base_ms (300)");
    parse_fails("outlier:\n  max_ejection_s: 10\n",
                "t.yaml:2: outlier.max_ejection_s: max_ejection_s (10) must be at least base_ejection_s (30)");
    parse_fails("rate_limits: {name: a}\n", "t.yaml:1: rate_limits: expected a list");
    parse_fails("- 1\n", "t.yaml:1: (top level): expected a mapping of sections (replicas, rate_limits, ...)");
    /* Policies. */
    parse_fails("rate_limits:\n  - limit: 5\n", "t.yaml:2: rate_limits[0].name: missing (every policy needs a name)");
    parse_fails("rate_limits:\n  - name: a\n", "t.yaml:2: rate_limits[0].limit: missing (requests per window)");
    parse_fails("rate_limits:\n  - name: Bad Name\n    limit: 1\n",
                "t.yaml:2: rate_limits[0].name: \"Bad Name\" must match ^[a-z0-9][a-z0-9_-]*$ (at most 63 characters)");
    parse_fails("rate_limits:\n  - {name: a, limit: 1}\n  - {name: b, limit: 1}\n  - {name: a, limit: 2}\n",
                "t.yaml:4: rate_limits[2].name: \"a\" is already the name of rate_limits[0]");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, tiers: [anonymous, robot]}\n",
                "t.yaml:2: rate_limits[0].tiers[1]: \"robot\" is not one of: anonymous, user, admin, key");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, key: session}\n",
                "t.yaml:2: rate_limits[0].key: \"session\" is not one of: ip, user, key, global");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, mode: dry-run}\n",
                "t.yaml:2: rate_limits[0].mode: \"dry-run\" is not one of: enforce, shadow");
    /* Refused after its key_ids were read: nothing of it leaks (ASan build). */
    parse_fails("rate_limits:\n  - {name: a, limit: 1, key_ids: [k1, k2], replaces: [b]}\n",
                "t.yaml:2: rate_limits[0].replaces: expected a string");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, on_redis_down: maybe}\n",
                "t.yaml:2: rate_limits[0].on_redis_down: \"maybe\" is not one of: local, open, closed");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, replaces: b}\n",
                "t.yaml:2: rate_limits[0].replaces: \"b\" is not the name of a policy");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, replaces: a}\n",
                "t.yaml:2: rate_limits[0].replaces: a policy cannot replace itself");
    parse_fails("rate_limits:\n  - name: a\n    limit: 1\n    groups: [predict]\n",
                "t.yaml:4: rate_limits[0].groups[0]: \"predict\" is not a group defined under route_groups");
    parse_fails("rate_limits:\n  - {name: a, limit: 1, groups: []}\n",
                "t.yaml:2: rate_limits[0].groups: name at least one route group, or \"*\" for every route");
    /* Route groups. */
    parse_fails("route_groups:\n  auth: [\"/v1/auht*\"]\n",
                "t.yaml:2: route_groups.auth[0]: \"/v1/auht*\" matches no route (\"[METHOD ]PATH\", PATH a route "
                "template or a prefix ending in *)");
    parse_fails("route_groups:\n  auth: [\"PUT /v1/auth/me\"]\n",
                "t.yaml:2: route_groups.auth[0]: \"PUT /v1/auth/me\" matches no route (\"[METHOD ]PATH\", PATH a "
                "route template or a prefix ending in *)");
    parse_fails("route_groups:\n  a: [\"*\"]\n  a: [\"*\"]\n", "t.yaml:3: route_groups.a: given twice");
    parse_fails("route_groups: [a]\n",
                "t.yaml:1: route_groups: expected a mapping of group names to lists of routes");
    {
        char text[4096];
        size_t off = (size_t)snprintf(text, sizeof text, "route_groups:\n");
        for (int i = 0; i <= 64; i++)
            off += (size_t)snprintf(text + off, sizeof text - off, "  g%d: [\"*\"]\n", i);
        parse_fails(text, "t.yaml:66: route_groups.g64: at most 64 route groups");
    }
    /* Trusted proxies. */
    parse_fails("trusted_proxies: [10.0.0.0/33]\n",
                "t.yaml:1: trusted_proxies[0]: \"10.0.0.0/33\" is not an IPv4 or IPv6 address or CIDR (like 10.0.0.0/8)");
    parse_fails("trusted_proxies:\n  - 10.0.0.1/8\n",
                "t.yaml:2: trusted_proxies[0]: \"10.0.0.1/8\" has bits set after the prefix length");
    parse_fails("trusted_proxies: [localhost]\n",
                "t.yaml:1: trusted_proxies[0]: \"localhost\" is not an IPv4 or IPv6 address or CIDR (like 10.0.0.0/8)");
    /* Not YAML at all, and a second document. */
    struct gw_config *c;
    char err[512];
    assert_int_equal(gw_config_parse("t.yaml", "a: [1,\n", 7, &c, err, sizeof err), CN_EINVAL);
    assert_true(strncmp(err, "t.yaml:2: ", 10) == 0);
    parse_fails("replicas: 1\n---\nreplicas: 2\n", "t.yaml:3: (top level): a second YAML document (---) is not allowed");
    /* A missing file. */
    assert_int_equal(gw_config_load("/nonexistent/gw.yaml", &c, err, sizeof err), CN_EIO);
    assert_string_equal(err, "/nonexistent/gw.yaml: cannot read: No such file or directory");
}

static void test_trusted(void **state)
{
    (void)state;
    struct gw_config *c = parse_ok("trusted_proxies: [10.0.0.0/8, 192.168.1.7, \"fd00::/8\"]\n");
    unsigned char a4[4], a6[16];
    inet_pton(AF_INET, "10.200.3.4", a4);
    assert_true(gw_config_trusted(c, AF_INET, a4));
    inet_pton(AF_INET, "11.0.0.1", a4);
    assert_false(gw_config_trusted(c, AF_INET, a4));
    inet_pton(AF_INET, "192.168.1.7", a4);
    assert_true(gw_config_trusted(c, AF_INET, a4));
    inet_pton(AF_INET, "192.168.1.8", a4);
    assert_false(gw_config_trusted(c, AF_INET, a4));
    inet_pton(AF_INET6, "fd12::1", a6);
    assert_true(gw_config_trusted(c, AF_INET6, a6));
    inet_pton(AF_INET6, "fe80::1", a6);
    assert_false(gw_config_trusted(c, AF_INET6, a6));
    inet_pton(AF_INET6, "::ffff:10.1.2.3", a6);       /* v4-mapped */
    assert_true(gw_config_trusted(c, AF_INET6, a6));
    gw_config_put(c);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_reload(void **state)
{
    (void)state;
    char path[] = "/tmp/gw-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "rate_limits:\n  - {name: a, limit: 5}\n");
    struct gw_config *c;
    char err[512];
    assert_int_equal(gw_config_load(path, &c, err, sizeof err), CN_OK);
    gw_config_set(c);

    /* A request holds the config it started with across a reload. */
    struct gw_config *held = gw_config_get();
    assert_ptr_equal(held, c);
    write_file(path, "rate_limits:\n  - {name: a, limit: 7}\n");
    assert_int_equal(gw_config_reload(), CN_OK);
    struct gw_config *now = gw_config_get();
    assert_int_equal(now->policies[0].limit, 7);
    assert_int_equal(held->policies[0].limit, 5);
    gw_config_put(held);

    /* An invalid file keeps the config in force. */
    write_file(path, "rate_limits:\n  - {name: a, limit: -1}\n");
    assert_int_equal(gw_config_reload(), CN_EINVAL);
    struct gw_config *after = gw_config_get();
    assert_ptr_equal(after, now);
    assert_int_equal(after->policies[0].limit, 7);
    gw_config_put(after);
    unlink(path);
    assert_int_equal(gw_config_reload(), CN_EIO);
    after = gw_config_get();
    assert_ptr_equal(after, now);
    gw_config_put(after);
    gw_config_put(now);
    gw_config_set(NULL);
    assert_null(gw_config_get());
}

int main(void)
{
    cn_log_init("test", CN_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_trusted),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
