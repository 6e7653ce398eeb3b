/* fault_test.c — fault decisions: header values parsed and bounded (malformed ones named),
 * rules matched by route group with their percentages, headers honoured only when the
 * config says so and overriding the rules kind by kind, nothing at all when faults are
 * disabled; and the loop timer: never early, not much late, cancellable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fault.c"

static int hdrs(const char *d, const char *a, int *delay, int *status, const char **bad)
{
    return gw_fault_parse_headers(d, d ? strlen(d) : 0, a, a ? strlen(a) : 0, delay, status, bad);
}

static void test_headers(void **state)
{
    (void)state;
    int delay = -1, status = -1;
    const char *bad = NULL;
    assert_int_equal(hdrs("100", "503", &delay, &status, &bad), 0);
    assert_int_equal(delay, 100);
    assert_int_equal(status, 503);
    assert_int_equal(hdrs(" 0 ", NULL, &delay, &status, &bad), 0);
    assert_int_equal(delay, 0);
    assert_int_equal(hdrs("600000", "400", &delay, &status, &bad), 0);
    assert_int_equal(delay, 600000);
    assert_int_equal(status, 400);
    assert_int_equal(hdrs(NULL, "599", &delay, &status, &bad), 0);
    assert_int_equal(status, 599);

    static const char *const bad_delay[] = {"", "-1", "600001", "1e3", "10ms", "0x10", "99999999999", "1 0"};
    for (size_t i = 0; i < sizeof bad_delay / sizeof bad_delay[0]; i++) {
        bad = NULL;
        if (hdrs(bad_delay[i], NULL, &delay, &status, &bad) != -1)
            fail_msg("delay '%s' accepted", bad_delay[i]);
        assert_string_equal(bad, "X-Fault-Delay-Ms");
    }
    static const char *const bad_abort[] = {"", "200", "399", "600", "5xx", "503 "  "x", "-503"};
    for (size_t i = 0; i < sizeof bad_abort / sizeof bad_abort[0]; i++) {
        bad = NULL;
        if (hdrs("10", bad_abort[i], &delay, &status, &bad) != -1)
            fail_msg("abort '%s' accepted", bad_abort[i]);
        assert_string_equal(bad, "X-Fault-Abort");
    }
}

/* Two groups (0 predict, 1 auth) and two rules: predict delays 100 ms 10 % and aborts
 * 503 5 %; everything else aborts 500 always. */
static struct gw_fault_rule rules[] = {
    {.groups = 1u << 0, .delay_ms = 100, .delay_percent = 10, .abort_status = 503, .abort_percent = 5},
    {.all_groups = true, .abort_status = 500, .abort_percent = 100},
};

static void test_rules(void **state)
{
    (void)state;
    struct gw_config c = {.faults_enabled = true, .faults = rules, .nfaults = 2};
    struct gw_fault f;
    gw_fault_from_rules(&c, 0, 9.99, 50, &f);
    assert_int_equal(f.delay_ms, 100);
    assert_int_equal(f.abort_status, 0);
    gw_fault_from_rules(&c, 0, 10, 4.9, &f);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 503);
    gw_fault_from_rules(&c, 0, 99.9, 99.9, &f);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 0);
    /* group 1 and ungrouped routes fall to the catch-all rule */
    gw_fault_from_rules(&c, 1, 0, 99.99, &f);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 500);
    gw_fault_from_rules(&c, -1, 0, 0, &f);
    assert_int_equal(f.abort_status, 500);
    /* 0 % never applies, even on a roll of 0 */
    struct gw_fault_rule zero = {.all_groups = true, .delay_ms = 5, .abort_status = 503};
    c.faults = &zero;
    c.nfaults = 1;
    gw_fault_from_rules(&c, 3, 0, 0, &f);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 0);
}

static int decide(const struct gw_config *c, int group, const char *d, const char *a, struct gw_fault *f,
                  const char **bad)
{
    return gw_fault_decide(c, group, d, d ? strlen(d) : 0, a, a ? strlen(a) : 0, f, bad);
}

static void test_decide(void **state)
{
    (void)state;
    struct gw_fault_rule always = {.all_groups = true, .delay_ms = 7, .delay_percent = 100,
                                   .abort_status = 502, .abort_percent = 100};
    struct gw_config c = {.faults = &always, .nfaults = 1};
    struct gw_fault f;
    const char *bad = NULL;

    /* disabled: rules and headers ignored, even malformed ones */
    assert_int_equal(decide(&c, 0, "garbage", "1", &f, &bad), 0);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 0);
    assert_int_equal(decide(NULL, 0, "5", "503", &f, &bad), 0);
    assert_int_equal(f.abort_status, 0);

    /* enabled without headers: the rule only */
    c.faults_enabled = true;
    assert_int_equal(decide(&c, 0, "garbage", "503", &f, &bad), 0);
    assert_int_equal(f.delay_ms, 7);
    assert_int_equal(f.abort_status, 502);

    /* headers on: each header overrides its kind */
    c.fault_headers = true;
    assert_int_equal(decide(&c, 0, "250", NULL, &f, &bad), 0);
    assert_int_equal(f.delay_ms, 250);
    assert_int_equal(f.abort_status, 502);
    assert_int_equal(decide(&c, 0, NULL, "429", &f, &bad), 0);
    assert_int_equal(f.delay_ms, 7);
    assert_int_equal(f.abort_status, 429);
    assert_int_equal(decide(&c, 0, "0", NULL, &f, &bad), 0);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(decide(&c, 0, "x", NULL, &f, &bad), -1);
    assert_string_equal(bad, "X-Fault-Delay-Ms");

    /* headers with no rules */
    c.nfaults = 0;
    assert_int_equal(decide(&c, -1, "3", "504", &f, &bad), 0);
    assert_int_equal(f.delay_ms, 3);
    assert_int_equal(f.abort_status, 504);
    assert_int_equal(decide(&c, -1, NULL, NULL, &f, &bad), 0);
    assert_int_equal(f.delay_ms, 0);
    assert_int_equal(f.abort_status, 0);
}

static void test_roll(void **state)
{
    (void)state;
    int low = 0;
    for (int i = 0; i < 10000; i++) {
        double r = roll();
        assert_true(r >= 0 && r < 100);
        low += r < 10;
    }
    /* ~1000 expected; far outside this means the generator is broken */
    assert_in_range(low, 800, 1200);
}

static int fired;
static int64_t fired_at;
static void on_fire(struct gw_fault_timer *t)
{
    (void)t;
    fired++;
    fired_at = cn_mono_us();
}

static void test_timer(void **state)
{
    (void)state;
    h2o_loop_t *loop = h2o_evloop_create();
    struct gw_fault_timer a = {0}, b = {0}, never = {0};
    assert_false(gw_fault_timer_active(&never));
    gw_fault_timer_stop(&never); /* never started: fine */

    int64_t t0 = cn_mono_us();
    gw_fault_timer_start(&a, loop, 37, on_fire);
    gw_fault_timer_start(&b, loop, 5, on_fire);
    assert_true(gw_fault_timer_active(&a));
    gw_fault_timer_stop(&b);
    assert_false(gw_fault_timer_active(&b));
    while (fired == 0 && cn_mono_us() - t0 < 2000000)
        h2o_evloop_run(loop, 10);
    assert_int_equal(fired, 1);
    int64_t took = fired_at - t0;
    assert_true(took >= 37000);
    assert_true(took < 37000 + 500000); /* generous: loaded CI machines stall */
    assert_false(gw_fault_timer_active(&a));
    /* b was stopped: nothing more fires */
    int64_t t1 = cn_mono_us();
    while (cn_mono_us() - t1 < 20000)
        h2o_evloop_run(loop, 5);
    assert_int_equal(fired, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_roll),
        cmocka_unit_test(test_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
