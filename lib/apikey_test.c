/* apikey_test.c — minted keys parse back, and every kind of damage is refused: a changed,
 * dropped or added character anywhere, a wrong prefix, a bad separator, non-base62. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "apikey.c"

static void test_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        struct cn_apikey k, p;
        char text[CN_APIKEY_LEN + 1];
        cn_apikey_new(&k, text);
        assert_int_equal(strlen(text), CN_APIKEY_LEN);
        assert_true(cn_apikey_looks_like(text, strlen(text)));
        assert_int_equal(cn_apikey_parse(text, strlen(text), &p), CN_OK);
        assert_string_equal(p.id, k.id);
        assert_string_equal(p.secret, k.secret);
        char h1[65], h2[65];
        cn_apikey_hash(&k, h1);
        cn_apikey_hash(&p, h2);
        assert_string_equal(h1, h2);
        assert_int_equal(strlen(h1), 64);
    }
}

static void test_damage(void **state)
{
    (void)state;
    struct cn_apikey k, p;
    char text[CN_APIKEY_LEN + 1], bad[CN_APIKEY_LEN + 2];
    cn_apikey_new(&k, text);
    /* every single-character substitution is caught (CRC-32 catches all of them) */
    for (size_t i = 0; i < CN_APIKEY_LEN; i++) {
        memcpy(bad, text, sizeof text);
        bad[i] = bad[i] == 'a' ? 'b' : 'a';
        assert_int_equal(cn_apikey_parse(bad, CN_APIKEY_LEN, &p), CN_EINVAL);
    }
    /* transposition of two neighbours in the secret */
    memcpy(bad, text, sizeof text);
    for (size_t i = 19; i + 1 < CN_APIKEY_LEN; i++) {
        if (bad[i] != bad[i + 1]) {
            char t = bad[i];
            bad[i] = bad[i + 1];
            bad[i + 1] = t;
            break;
        }
    }
    assert_int_equal(cn_apikey_parse(bad, CN_APIKEY_LEN, &p), CN_EINVAL);
    assert_int_equal(cn_apikey_parse(text, CN_APIKEY_LEN - 1, &p), CN_EINVAL);
    memcpy(bad, text, sizeof text);
    bad[CN_APIKEY_LEN] = 'x';
    assert_int_equal(cn_apikey_parse(bad, CN_APIKEY_LEN + 1, &p), CN_EINVAL);
    assert_int_equal(cn_apikey_parse("", 0, &p), CN_EINVAL);
    assert_false(cn_apikey_looks_like("eyJhbGciOi", 10));
    assert_false(cn_apikey_looks_like("cairn", 5));
    memcpy(bad, text, sizeof text);
    bad[6 + CN_APIKEY_ID_LEN] = '-';
    assert_int_equal(cn_apikey_parse(bad, CN_APIKEY_LEN, &p), CN_EINVAL);
    memcpy(bad, text, sizeof text);
    memcpy(bad, "CAIRN_", 6);
    assert_int_equal(cn_apikey_parse(bad, CN_APIKEY_LEN, &p), CN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
