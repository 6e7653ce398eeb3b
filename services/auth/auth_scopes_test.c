/* auth_scopes_test.c — unit tests for auth_scopes.c: scope names to bits and back, what
 * each role grants, the three text forms (claim, list, text[] literal), and cutting a
 * key's scopes to its owner's role. Includes the .c to share its table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth_scopes.c"

#define USER_SCOPES                                                                       \
    "models:read models:write predict jobs:read jobs:write features:read features:write " \
    "costs:read"

/* --- helpers --- */

static void expect_join(uint32_t mask, const char *want)
{
    char out[AUTH_SCOPES_TEXT_MAX];

    auth_scopes_join(mask, out, sizeof out);
    assert_string_equal(out, want);
}

static void expect_parse(const char *text, uint32_t want, uint32_t want_unknown)
{
    uint32_t unknown = 99;

    if (auth_scopes_parse(text, &unknown) != want)
        fail_msg("'%s' parsed to %#x, want %#x", text, auth_scopes_parse(text, NULL), want);
    assert_int_equal(unknown, want_unknown);
}

/* --- cases --- */

static void every_scope_has_its_own_bit(void **state)
{
    uint32_t seen = 0;

    (void)state;
    assert_int_equal(CN_ARRAY_LEN(scopes), AUTH_SCOPES_COUNT);
    for (size_t i = 0; i < CN_ARRAY_LEN(scopes); i++) {
        uint32_t bit = auth_scope_bit(scopes[i].name);
        assert_int_not_equal(bit, 0);
        assert_int_equal(bit & (bit - 1), 0); /* one bit */
        assert_int_equal(seen & bit, 0);      /* not shared */
        seen |= bit;
    }
    assert_int_equal(seen, AUTH_SCOPES_ALL);
}

static void unknown_names_are_not_scopes(void **state)
{
    const char *bad[] = {"",       "Admin", "models",      "models:", "models:read ", " predict",
                         "jobs:*", "*",     "costs:write", "admin\n", "predict\t"};

    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++)
        if (auth_scope_bit(bad[i]) != 0)
            fail_msg("'%s' taken for a scope", bad[i]);
}

static void roles_grant_what_the_design_says(void **state)
{
    (void)state;
    assert_true(auth_role_valid("user"));
    assert_true(auth_role_valid("admin"));
    assert_false(auth_role_valid(""));
    assert_false(auth_role_valid("Admin"));
    assert_false(auth_role_valid("root"));
    assert_int_equal(auth_role_scopes("admin"), AUTH_SCOPES_ALL);
    assert_int_equal(auth_role_scopes("user"), AUTH_SCOPES_ALL & ~(uint32_t)AUTH_SCOPE_ADMIN);
    assert_int_equal(auth_role_scopes("root"), 0);
    assert_int_equal(auth_role_scopes(""), 0);
    expect_join(auth_role_scopes("user"), USER_SCOPES);
    expect_join(auth_role_scopes("admin"), USER_SCOPES " admin");
}

static void text_forms_are_in_table_order(void **state)
{
    const char *names[AUTH_SCOPES_COUNT];
    char arr[AUTH_SCOPES_TEXT_MAX];
    uint32_t m = AUTH_SCOPE_ADMIN | AUTH_SCOPE_PREDICT | AUTH_SCOPE_MODELS_READ;

    (void)state;
    expect_join(0, "");
    expect_join(AUTH_SCOPE_PREDICT, "predict");
    expect_join(m, "models:read predict admin");
    assert_int_equal(auth_scopes_names(m, names, AUTH_SCOPES_COUNT), 3);
    assert_string_equal(names[0], "models:read");
    assert_string_equal(names[1], "predict");
    assert_string_equal(names[2], "admin");
    assert_int_equal(auth_scopes_names(m, names, 2), 2); /* capped */
    auth_scopes_pg_array(m, arr, sizeof arr);
    assert_string_equal(arr, "{models:read,predict,admin}");
    auth_scopes_pg_array(0, arr, sizeof arr);
    assert_string_equal(arr, "{}");
    /* Everything fits in the documented size. */
    auth_scopes_pg_array(AUTH_SCOPES_ALL, arr, sizeof arr);
    assert_true(strlen(arr) < AUTH_SCOPES_TEXT_MAX - 1);
}

static void parse_reads_what_join_wrote(void **state)
{
    char out[AUTH_SCOPES_TEXT_MAX];

    (void)state;
    for (uint32_t m = 0; m <= AUTH_SCOPES_ALL; m++) {
        auth_scopes_join(m, out, sizeof out);
        assert_int_equal(auth_scopes_parse(out, NULL), m);
    }
}

static void parse_skips_unknown_words_and_extra_spaces(void **state)
{
    (void)state;
    expect_parse("", 0, 0);
    expect_parse("   ", 0, 0);
    expect_parse("  predict   jobs:read ", AUTH_SCOPE_PREDICT | AUTH_SCOPE_JOBS_READ, 0);
    expect_parse("predict predict", AUTH_SCOPE_PREDICT, 0);
    expect_parse("predict retired:scope admin", AUTH_SCOPE_PREDICT | AUTH_SCOPE_ADMIN, 1);
    expect_parse("x y z", 0, 3);
    /* A word longer than any scope is unknown, not truncated into one. */
    expect_parse("predictpredictpredictpredictpredictpredict", 0, 1);
}

static void a_key_is_cut_to_its_owners_role(void **state)
{
    uint32_t key = AUTH_SCOPE_ADMIN | AUTH_SCOPE_PREDICT;

    (void)state;
    /* The owner was an admin when the key was made and has since been demoted. */
    assert_int_equal(key & auth_role_scopes("admin"), key);
    assert_int_equal(key & auth_role_scopes("user"), AUTH_SCOPE_PREDICT);
    assert_int_equal(key & auth_role_scopes("gone"), 0);
    /* "Within the role" is a subset test. */
    assert_int_equal(key & ~auth_role_scopes("user"), AUTH_SCOPE_ADMIN);
    assert_int_equal(key & ~auth_role_scopes("admin"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_scope_has_its_own_bit),
        cmocka_unit_test(unknown_names_are_not_scopes),
        cmocka_unit_test(roles_grant_what_the_design_says),
        cmocka_unit_test(text_forms_are_in_table_order),
        cmocka_unit_test(parse_reads_what_join_wrote),
        cmocka_unit_test(parse_skips_unknown_words_and_extra_spaces),
        cmocka_unit_test(a_key_is_cut_to_its_owners_role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
