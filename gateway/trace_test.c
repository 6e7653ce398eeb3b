/* trace_test.c — traceparent: valid version-00 values parsed, every malformed shape
 * refused (length, version, separators, uppercase, all-zero ids), generated ids well
 * formed and distinct, and format/parse round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "trace.c"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, struct gw_trace *t) { return gw_trace_parse(s, strlen(s), t); }

static void test_parse_valid(void **state)
{
    (void)state;
    struct gw_trace t;
    assert_int_equal(parse(GOOD, &t), 0);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_int_equal(t.flags, 1);
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &t), 0);
    assert_int_equal(t.flags, 0);
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &t), 0);
    assert_int_equal(t.flags, 0xff);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00",
        GOOD "x",                                                    /* too long */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    /* short trace id */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* other version */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* uppercase */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0X",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
    };
    struct gw_trace t;
    memset(&t, 0x55, sizeof t);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &t) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    assert_int_equal(gw_trace_parse(NULL, 0, &t), -1);
    /* an embedded NUL does not end the value early */
    char withnul[] = GOOD;
    withnul[20] = '\0';
    assert_int_equal(gw_trace_parse(withnul, sizeof withnul - 1, &t), -1);
    assert_int_equal((unsigned char)t.trace_id[0], 0x55); /* untouched on failure */
}

static void test_generate(void **state)
{
    (void)state;
    struct gw_trace a, b;
    gw_trace_new(&a);
    gw_trace_new(&b);
    assert_int_equal(strlen(a.trace_id), 32);
    assert_int_equal(strlen(a.parent_id), 16);
    assert_string_not_equal(a.trace_id, b.trace_id);
    assert_int_equal(a.flags, 1);

    char span[17], tp[GW_TRACEPARENT_LEN + 1];
    gw_trace_span_new(span);
    assert_int_equal(strlen(span), 16);
    gw_trace_format(a.trace_id, span, a.flags, tp);
    assert_int_equal(strlen(tp), GW_TRACEPARENT_LEN);
    struct gw_trace back;
    assert_int_equal(parse(tp, &back), 0);
    assert_string_equal(back.trace_id, a.trace_id);
    assert_string_equal(back.parent_id, span);
    assert_int_equal(back.flags, 1);

    gw_trace_format("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0x0a, tp);
    assert_string_equal(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
