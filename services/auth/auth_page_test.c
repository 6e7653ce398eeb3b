/* auth_page_test.c — unit tests for auth_page.c: id shapes, page tokens (round trips and
 * a table of forged ones that must be refused), and LIKE escaping.
 *
 * To cover another forged token, add a row to bad_tokens: the text before base64url
 * encoding, or a raw token when it is not valid base64url at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth_page.c"

#define UUID "0f8fad5b-d9cb-469f-a165-70867728950e"
#define KEY "AbC123xyz789"

/* --- helpers --- */

/* base64url of text, the way a forger would make a token (static buffer). */
static const char *forge(const char *text)
{
    static char out[256];
    cn_b64url_encode((const uint8_t *)text, strlen(text), out);
    return out;
}

static void expect_round_trip(int64_t us, const char *id, enum auth_id_kind kind)
{
    char tok[AUTH_PAGE_TOKEN_MAX + 1], back[40];
    int64_t us2 = -1;

    assert_int_equal(auth_page_encode(us, id, tok, sizeof tok), CN_OK);
    assert_true(strlen(tok) <= AUTH_PAGE_TOKEN_MAX);
    assert_int_equal(
        strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        strlen(tok)); /* safe in a URL as it is */
    assert_int_equal(auth_page_decode(tok, kind, &us2, back, sizeof back), CN_OK);
    assert_int_equal(us2, us);
    assert_string_equal(back, id);
}

static void expect_like(const char *in, const char *want)
{
    char out[64];

    assert_int_equal(auth_like_escape(in, out, sizeof out), CN_OK);
    assert_string_equal(out, want);
}

/* --- cases --- */

static void id_shapes(void **state)
{
    (void)state;
    assert_true(auth_id_valid(AUTH_ID_UUID, UUID));
    assert_true(auth_id_valid(AUTH_ID_UUID, "0F8FAD5B-D9CB-469F-A165-70867728950E"));
    assert_false(auth_id_valid(AUTH_ID_UUID, ""));
    assert_false(auth_id_valid(AUTH_ID_UUID, "0f8fad5b-d9cb-469f-a165-70867728950"));
    assert_false(auth_id_valid(AUTH_ID_UUID, "0f8fad5b-d9cb-469f-a165-70867728950e0"));
    assert_false(auth_id_valid(AUTH_ID_UUID, "0f8fad5bd-9cb-469f-a165-70867728950e"));
    assert_false(auth_id_valid(AUTH_ID_UUID, "0f8fad5b-d9cb-469f-a165-70867728950g"));
    assert_false(auth_id_valid(AUTH_ID_UUID, "0f8fad5b-d9cb-469f-a165-7086772895'e"));

    assert_true(auth_id_valid(AUTH_ID_KEY, KEY));
    assert_false(auth_id_valid(AUTH_ID_KEY, "AbC123xyz78"));
    assert_false(auth_id_valid(AUTH_ID_KEY, "AbC123xyz7890"));
    assert_false(auth_id_valid(AUTH_ID_KEY, "AbC123xyz78_"));
    assert_false(auth_id_valid(AUTH_ID_KEY, "AbC123xyz78%"));

    assert_true(auth_id_valid(AUTH_ID_SERIAL, "1"));
    assert_true(auth_id_valid(AUTH_ID_SERIAL, "9223372036854775807"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, "9223372036854775808"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, "0"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, "01"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, "-1"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, "+1"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, " 1"));
    assert_false(auth_id_valid(AUTH_ID_SERIAL, ""));
}

static void tokens_round_trip(void **state)
{
    (void)state;
    expect_round_trip(1732243200123456, UUID, AUTH_ID_UUID);
    expect_round_trip(0, UUID, AUTH_ID_UUID);
    expect_round_trip(INT64_MAX, UUID, AUTH_ID_UUID);
    expect_round_trip(1732243200000001, KEY, AUTH_ID_KEY);
    expect_round_trip(1732243200999999, "42", AUTH_ID_SERIAL);
    expect_round_trip(1, "9223372036854775807", AUTH_ID_SERIAL);
}

static void encode_refuses_a_small_buffer(void **state)
{
    char tok[16];

    (void)state;
    assert_int_equal(auth_page_encode(1732243200123456, UUID, tok, sizeof tok), CN_ETOOBIG);
}

static const struct {
    const char *text; /* encoded with base64url first, unless raw */
    bool raw;
    enum auth_id_kind kind;
    const char *why;
} bad_tokens[] = {
    {"1732243200123456." KEY, false, AUTH_ID_UUID, "a key id where a user id belongs"},
    {"1732243200123456." UUID, false, AUTH_ID_KEY, "a user id where a key id belongs"},
    {"1732243200123456.0", false, AUTH_ID_SERIAL, "serial 0"},
    {"1732243200123456", false, AUTH_ID_UUID, "no id"},
    {"." UUID, false, AUTH_ID_UUID, "no time"},
    {"-5." UUID, false, AUTH_ID_UUID, "negative time"},
    {"+5." UUID, false, AUTH_ID_UUID, "signed time"},
    {" 5." UUID, false, AUTH_ID_UUID, "space before the time"},
    {"5x." UUID, false, AUTH_ID_UUID, "letters in the time"},
    {"99999999999999999999." UUID, false, AUTH_ID_UUID, "time beyond int64"},
    {"5." UUID ".", false, AUTH_ID_UUID, "trailing dot"},
    {"5.0f8fad5b-d9cb-469f-a165-70867728950e' OR '1'='1", false, AUTH_ID_UUID, "SQL"},
    {"5.%", false, AUTH_ID_KEY, "wildcard id"},
    {"", true, AUTH_ID_UUID, "empty"},
    {"!!!!", true, AUTH_ID_UUID, "not base64url"},
    {"MTIz+/8=", true, AUTH_ID_UUID, "standard base64 with padding"},
    {"A", true, AUTH_ID_UUID, "impossible length"},
    {"MTczMjI0MzIwMDEyMzQ1Ni4wZjhmYWQ1Yi1kOWNiLTQ2OWYtYTE2NS03MDg2NzcyODk1MGUx"
     "MTczMjI0MzIwMDEyMzQ1Ni4wZjhmYWQ1Yi1kOWNiLTQ2OWYtYTE2NS03MDg2NzcyODk1MGUx",
     true, AUTH_ID_UUID, "too long"},
};

static void forged_tokens_are_refused(void **state)
{
    int64_t us;
    char id[40];

    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(bad_tokens); i++) {
        const char *tok = bad_tokens[i].raw ? bad_tokens[i].text : forge(bad_tokens[i].text);
        if (auth_page_decode(tok, bad_tokens[i].kind, &us, id, sizeof id) != CN_EINVAL)
            fail_msg("token %zu (%s) accepted", i, bad_tokens[i].why);
    }
}

static void a_nul_inside_a_token_is_refused(void **state)
{
    const uint8_t text[] = "5.\0" UUID;
    char tok[128], id[40];
    int64_t us;

    (void)state;
    cn_b64url_encode(text, sizeof text - 1, tok);
    assert_int_equal(auth_page_decode(tok, AUTH_ID_UUID, &us, id, sizeof id), CN_EINVAL);
}

static void decode_respects_the_id_buffer(void **state)
{
    char tok[AUTH_PAGE_TOKEN_MAX + 1], id[36];
    int64_t us;

    (void)state;
    assert_int_equal(auth_page_encode(5, UUID, tok, sizeof tok), CN_OK);
    assert_int_equal(auth_page_decode(tok, AUTH_ID_UUID, &us, id, sizeof id), CN_EINVAL);
}

static void like_wildcards_match_themselves(void **state)
{
    char small[4];

    (void)state;
    expect_like("", "");
    expect_like("alice@example.com", "alice@example.com");
    expect_like("100%", "100\\%");
    expect_like("a_b", "a\\_b");
    expect_like("back\\slash", "back\\\\slash");
    expect_like("%_\\", "\\%\\_\\\\");
    expect_like("'; DROP TABLE users; --", "'; DROP TABLE users; --");
    /* Too small for the escaped text: refused, never cut. */
    assert_int_equal(auth_like_escape("%%", small, sizeof small), CN_ETOOBIG);
    assert_int_equal(auth_like_escape("abcd", small, sizeof small), CN_ETOOBIG);
    assert_int_equal(auth_like_escape("abc", small, sizeof small), CN_OK);
    assert_int_equal(auth_like_escape("", small, 0), CN_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(id_shapes),
        cmocka_unit_test(tokens_round_trip),
        cmocka_unit_test(encode_refuses_a_small_buffer),
        cmocka_unit_test(forged_tokens_are_refused),
        cmocka_unit_test(a_nul_inside_a_token_is_refused),
        cmocka_unit_test(decode_respects_the_id_buffer),
        cmocka_unit_test(like_wildcards_match_themselves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
