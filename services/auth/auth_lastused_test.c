/* auth_lastused_test.c — unit tests for the in-memory side of auth_lastused.c: a key's
 * latest use wins, the table is bounded, a full table asks for an early flush, and uses
 * recorded before start-up are ignored. The database side (the batched UPDATE) is covered
 * by running the service. Includes the .c to reach the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth_lastused.c"

/* --- helpers --- */

/* The i-th distinct key id (12 base62 characters) into out. */
static const char *nth_id(size_t i, char out[CN_APIKEY_ID_LEN + 1])
{
    snprintf(out, CN_APIKEY_ID_LEN + 1, "k%011zu", i);
    return out;
}

/* The recorded time of id in t, or -1. */
static int64_t recorded(const struct table *t, const char *id)
{
    for (size_t i = 0; i < TABLE_SLOTS; i++)
        if (strcmp(t->slots[i].id, id) == 0)
            return t->slots[i].ms;
    return -1;
}

static int setup(void **state)
{
    (void)state;
    pthread_cond_init(&lu.cv, NULL); /* auth_lastused_start's job, which these tests skip */
    table_init(&lu.cur);
    table_init(&lu.spare);
    lu.early = false;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(lu.cur.slots);
    free(lu.spare.slots);
    memset(&lu.cur, 0, sizeof lu.cur);
    memset(&lu.spare, 0, sizeof lu.spare);
    pthread_cond_destroy(&lu.cv);
    return 0;
}

/* --- cases --- */

static void the_latest_use_wins(void **state)
{
    (void)state;
    auth_lastused_record("AbC123xyz789", 1000);
    auth_lastused_record("AbC123xyz789", 3000);
    auth_lastused_record("AbC123xyz789", 2000); /* a slower worker, an older time */
    auth_lastused_record("ZZZ123xyz789", 500);
    assert_int_equal(lu.cur.n, 2);
    assert_int_equal(recorded(&lu.cur, "AbC123xyz789"), 3000);
    assert_int_equal(recorded(&lu.cur, "ZZZ123xyz789"), 500);
}

static void ids_of_another_length_are_ignored(void **state)
{
    (void)state;
    auth_lastused_record("", 1);
    auth_lastused_record("short", 1);
    auth_lastused_record("AbC123xyz7890", 1);
    assert_int_equal(lu.cur.n, 0);
}

static void a_busy_table_asks_for_an_early_flush(void **state)
{
    char id[CN_APIKEY_ID_LEN + 1];

    (void)state;
    for (size_t i = 0; i + 1 < FLUSH_EARLY; i++)
        auth_lastused_record(nth_id(i, id), 1);
    assert_false(lu.early);
    auth_lastused_record(nth_id(FLUSH_EARLY, id), 1);
    assert_true(lu.early);
    /* Uses of keys already there do not grow it. */
    auth_lastused_record(nth_id(0, id), 2);
    assert_int_equal(lu.cur.n, FLUSH_EARLY);
}

static void a_full_table_drops_new_keys_but_updates_known_ones(void **state)
{
    char id[CN_APIKEY_ID_LEN + 1];

    (void)state;
    for (size_t i = 0; i < TABLE_MAX; i++)
        assert_true(table_put(&lu.cur, nth_id(i, id), 1));
    assert_false(table_put(&lu.cur, nth_id(TABLE_MAX, id), 1));
    assert_int_equal(lu.cur.n, TABLE_MAX);
    assert_true(table_put(&lu.cur, nth_id(7, id), 99));
    assert_int_equal(recorded(&lu.cur, nth_id(7, id)), 99);
    for (size_t i = 0; i < TABLE_MAX; i++)
        assert_int_not_equal(recorded(&lu.cur, nth_id(i, id)), -1);
}

static void merging_back_keeps_the_later_time(void **state)
{
    (void)state;
    /* What a failed flush does: the snapshot goes back into a table that saw newer uses. */
    assert_true(table_put(&lu.cur, "AbC123xyz789", 5000));
    assert_true(table_put(&lu.cur, "AbC123xyz789", 4000));
    assert_true(table_put(&lu.cur, "QQQ123xyz789", 4000));
    assert_int_equal(recorded(&lu.cur, "AbC123xyz789"), 5000);
    table_clear(&lu.cur);
    assert_int_equal(lu.cur.n, 0);
    assert_int_equal(recorded(&lu.cur, "AbC123xyz789"), -1);
}

static void uses_before_start_are_ignored(void **state)
{
    (void)state;
    assert_null(lu.cur.slots);
    auth_lastused_record("AbC123xyz789", 1); /* must not crash */
    auth_lastused_stop();                    /* never started: nothing to do */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(the_latest_use_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(ids_of_another_length_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(a_busy_table_asks_for_an_early_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_table_drops_new_keys_but_updates_known_ones, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(merging_back_keeps_the_later_time, setup, teardown),
        cmocka_unit_test(uses_before_start_are_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
