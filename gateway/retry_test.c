/* retry_test.c — the retry rules (what is retried, idempotent or not), full-jitter
 * backoff bounds, the wait against retry_after and the deadline, the timer durations,
 * and the retry budget's sliding window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "retry.c"

static struct gw_attempt result(int code, bool unprocessed)
{
    return (struct gw_attempt){.end = GW_END_RESULT, .code = code, .unprocessed = unprocessed};
}

static void test_never_reached_is_always_retried(void **state)
{
    (void)state;
    struct gw_attempt none = {.end = GW_END_NO_INSTANCE}, unsent = {.end = GW_END_NOT_SENT};
    struct gw_attempt shed = result(CAIRN__V1__CODE__RESOURCE_EXHAUSTED, true);
    struct gw_attempt draining = result(CAIRN__V1__CODE__UNAVAILABLE, true);
    for (int idem = 0; idem < 2; idem++) {
        assert_int_equal(gw_retry_reason(&none, idem), GW_RETRY_NO_INSTANCE);
        assert_int_equal(gw_retry_reason(&unsent, idem), GW_RETRY_NOT_SENT);
        assert_int_equal(gw_retry_reason(&shed, idem), GW_RETRY_SHED);
        assert_int_equal(gw_retry_reason(&draining, idem), GW_RETRY_UNAVAILABLE);
    }
    assert_string_equal(gw_retry_reason_name(GW_RETRY_SHED), "shed");
    assert_string_equal(gw_retry_reason_name(GW_RETRY_CONN_LOST), "connection_lost");
}

static void test_maybe_ran_only_when_idempotent(void **state)
{
    (void)state;
    struct gw_attempt lost = {.end = GW_END_CONN_LOST};
    struct gw_attempt unavailable = result(CAIRN__V1__CODE__UNAVAILABLE, false);
    assert_int_equal(gw_retry_reason(&lost, false), GW_RETRY_NO);
    assert_int_equal(gw_retry_reason(&lost, true), GW_RETRY_CONN_LOST);
    assert_int_equal(gw_retry_reason(&unavailable, false), GW_RETRY_NO);
    assert_int_equal(gw_retry_reason(&unavailable, true), GW_RETRY_UNAVAILABLE);
}

static void test_never_retried(void **state)
{
    (void)state;
    struct gw_attempt timeout = {.end = GW_END_TIMEOUT};
    /* a throttled login: RESOURCE_EXHAUSTED from a handler is the answer */
    struct gw_attempt throttled = result(CAIRN__V1__CODE__RESOURCE_EXHAUSTED, false);
    int codes[] = {CAIRN__V1__CODE__OK, CAIRN__V1__CODE__INVALID_ARGUMENT, CAIRN__V1__CODE__INTERNAL,
                   CAIRN__V1__CODE__DEADLINE_EXCEEDED, CAIRN__V1__CODE__NOT_FOUND};
    for (int idem = 0; idem < 2; idem++) {
        assert_int_equal(gw_retry_reason(&timeout, idem), GW_RETRY_NO);
        assert_int_equal(gw_retry_reason(&throttled, idem), GW_RETRY_NO);
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
            struct gw_attempt a = result(codes[i], false);
            assert_int_equal(gw_retry_reason(&a, idem), GW_RETRY_NO);
        }
    }
}

static void test_outlier_failures(void **state)
{
    (void)state;
    struct gw_attempt timeout = {.end = GW_END_TIMEOUT}, lost = {.end = GW_END_CONN_LOST};
    struct gw_attempt none = {.end = GW_END_NO_INSTANCE};
    assert_true(gw_attempt_failed(&timeout, false));
    assert_false(gw_attempt_failed(&timeout, true));   /* the client's short budget */
    assert_true(gw_attempt_failed(&lost, true));
    assert_false(gw_attempt_failed(&none, false));
    struct gw_attempt a = result(CAIRN__V1__CODE__UNAVAILABLE, false);
    assert_true(gw_attempt_failed(&a, false));
    a = result(CAIRN__V1__CODE__RESOURCE_EXHAUSTED, true);
    assert_true(gw_attempt_failed(&a, false));
    a = result(CAIRN__V1__CODE__RESOURCE_EXHAUSTED, false);
    assert_false(gw_attempt_failed(&a, false));
    a = result(CAIRN__V1__CODE__NOT_FOUND, false);
    assert_false(gw_attempt_failed(&a, false));
    a = result(CAIRN__V1__CODE__DEADLINE_EXCEEDED, false);
    assert_true(gw_attempt_failed(&a, false));
    assert_false(gw_attempt_failed(&a, true));
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    /* the ceiling doubles from base and stops at cap; every value is in [0, ceiling] */
    int64_t ceilings[] = {25, 50, 100, 200, 250, 250, 250};
    for (int n = 0; n < 7; n++) {
        assert_int_equal(gw_backoff_ms(n, 25, 250, (uint64_t)ceilings[n]), ceilings[n]);
        assert_int_equal(gw_backoff_ms(n, 25, 250, (uint64_t)ceilings[n] + 1), 0);
        for (uint64_t r = 0; r < 5000; r += 7) {
            int64_t b = gw_backoff_ms(n, 25, 250, r * 2654435761u);
            assert_true(b >= 0 && b <= ceilings[n]);
        }
    }
    assert_int_equal(gw_backoff_ms(1000, 25, 250, 250), 250);   /* no overflow */
    assert_int_equal(gw_backoff_ms(0, 0, 250, 99), 0);
}

static void test_wait_within_deadline(void **state)
{
    (void)state;
    int64_t w;
    assert_int_equal(gw_retry_wait(40, 0, 1000, 5, &w), 0);
    assert_int_equal(w, 40);
    /* retry_after is a minimum */
    assert_int_equal(gw_retry_wait(40, 100, 1000, 5, &w), 0);
    assert_int_equal(w, 100);
    /* a backoff is cut to fit; a retry_after that does not fit drops the retry */
    assert_int_equal(gw_retry_wait(200, 0, 105, 5, &w), 0);
    assert_int_equal(w, 100);
    assert_int_equal(gw_retry_wait(0, 101, 105, 5, &w), -1);
    assert_int_equal(gw_retry_wait(0, 0, 4, 5, &w), -1);
}

static void test_delay_buckets(void **state)
{
    (void)state;
    int64_t ms;
    for (int64_t d = 0; d < 64; d++) {
        assert_int_equal(gw_delay_bucket(d, false, &ms), d);
        assert_int_equal(ms, d);
    }
    int64_t prev = -1;
    for (int64_t d = 0; d < 700000; d += 37) {
        int64_t down, up;
        int bd = gw_delay_bucket(d, false, &down);
        int bu = gw_delay_bucket(d, true, &up);
        assert_true(bd >= 0 && bd < GW_DELAY_BUCKETS && bu >= 0 && bu < GW_DELAY_BUCKETS);
        if (d <= 600000) {
            assert_true(down <= d && up >= d);
            assert_true(d - down <= d / 8 + 1);    /* within one step of 1/8 */
        }
        assert_true(down >= prev);
        prev = down;
    }
}

static void test_budget_window(void **state)
{
    (void)state;
    struct gw_retry_budget b;
    gw_budget_init(&b);
    int64_t t0 = 1000000;
    /* 100 requests, 20 %: 20 retries, no minimum */
    for (int i = 0; i < 100; i++)
        gw_budget_request(&b, t0);
    int taken = 0;
    for (int i = 0; i < 50; i++)
        taken += gw_budget_take(&b, t0 + 500, 20, 0);
    assert_int_equal(taken, 20);
    /* still the same window 9 s later; 10 s later those requests and retries left it */
    assert_false(gw_budget_take(&b, t0 + 9000, 20, 0));
    gw_budget_request(&b, t0 + 10000);
    assert_false(gw_budget_take(&b, t0 + 10000, 20, 0));
    for (int i = 0; i < 9; i++)
        gw_budget_request(&b, t0 + 10000);
    assert_true(gw_budget_take(&b, t0 + 10000, 20, 0));   /* 10 requests -> 2 retries */
    assert_true(gw_budget_take(&b, t0 + 10000, 20, 0));
    assert_false(gw_budget_take(&b, t0 + 10000, 20, 0));
    gw_budget_fini(&b);

    /* the minimum: 3 per second = 30 per window even with no requests */
    gw_budget_init(&b);
    taken = 0;
    for (int i = 0; i < 100; i++)
        taken += gw_budget_take(&b, t0, 20, 3);
    assert_int_equal(taken, 30);
    gw_budget_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_reached_is_always_retried),
        cmocka_unit_test(test_maybe_ran_only_when_idempotent),
        cmocka_unit_test(test_never_retried),
        cmocka_unit_test(test_outlier_failures),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_wait_within_deadline),
        cmocka_unit_test(test_delay_buckets),
        cmocka_unit_test(test_budget_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
