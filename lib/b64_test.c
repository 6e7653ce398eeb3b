/* b64_test.c — RFC 4648 vectors and every way a decoder must say no.
 *
 * The decode cases are one table: to cover a new input, add one row with the form, the
 * text, the expected code and (for successes) the expected bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "b64.c"
#include "util.h"

enum form { STD, URL };

/* RFC 4648 §10 vectors; the url form is the same text without padding. */
static const struct {
    const char *plain, *std, *url;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(vectors); i++) {
        const uint8_t *p = (const uint8_t *)vectors[i].plain;
        size_t n = strlen(vectors[i].plain);
        char enc[16];
        uint8_t dec[16];
        size_t len = 99;

        assert_int_equal(cn_b64_len(n), strlen(vectors[i].std));
        assert_int_equal(cn_b64_encode(p, n, enc), strlen(vectors[i].std));
        assert_string_equal(enc, vectors[i].std);
        assert_int_equal(cn_b64_decode(enc, strlen(enc), dec, sizeof dec, &len), CN_OK);
        assert_int_equal(len, n);
        assert_memory_equal(dec, p, n);

        assert_int_equal(cn_b64url_len(n), strlen(vectors[i].url));
        assert_int_equal(cn_b64url_encode(p, n, enc), strlen(vectors[i].url));
        assert_string_equal(enc, vectors[i].url);
        len = 99;
        assert_int_equal(cn_b64url_decode(enc, strlen(enc), dec, sizeof dec, &len), CN_OK);
        assert_int_equal(len, n);
        assert_memory_equal(dec, p, n);
    }
}

/* The two alphabets differ only in the last two characters. */
static void test_alphabets_differ_in_62_63(void **state)
{
    static const uint8_t in[] = {0xfb, 0xff, 0xbf};
    char enc[8];
    (void)state;

    cn_b64_encode(in, sizeof in, enc);
    assert_string_equal(enc, "+/+/");
    cn_b64url_encode(in, sizeof in, enc);
    assert_string_equal(enc, "-_-_");
    cn_b64_encode(in, 2, enc);
    assert_string_equal(enc, "+/8=");
    cn_b64url_encode(in, 2, enc);
    assert_string_equal(enc, "-_8");
}

/* Every length 0..64 of every byte value round-trips, at exactly the advertised size. */
static void test_roundtrip_all_lengths(void **state)
{
    uint8_t in[64], dec[64];
    char enc[128];
    (void)state;

    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 255 - i);
    for (size_t n = 0; n <= sizeof in; n++) {
        size_t len;
        size_t e = cn_b64_encode(in, n, enc);
        assert_int_equal(e, cn_b64_len(n));
        assert_int_equal(cn_b64_decode(enc, e, dec, n, &len), CN_OK);
        assert_int_equal(len, n);
        assert_memory_equal(dec, in, n);

        e = cn_b64url_encode(in, n, enc);
        assert_int_equal(e, cn_b64url_len(n));
        assert_int_equal(cn_b64url_decode(enc, e, dec, n, &len), CN_OK);
        assert_int_equal(len, n);
        assert_memory_equal(dec, in, n);
    }
}

/* One row per decode input: form, text (len -1 = strlen), cap, expected code and, for
 * CN_OK, the expected bytes. */
static const struct {
    enum form form;
    const char *in;
    int len;
    size_t cap;
    int rc;
    const char *want;
} cases[] = {
    /* successes at the edges */
    {STD, "", -1, 0, CN_OK, ""},
    {URL, "", -1, 0, CN_OK, ""},
    {STD, "Zm9v", -1, 3, CN_OK, "foo"},
    {URL, "Zm9vYg", -1, 4, CN_OK, "foob"},
    {URL, "-_8", -1, 2, CN_OK, "\xfb\xff"},
    {STD, "+/8=", -1, 2, CN_OK, "\xfb\xff"},
    /* characters outside the alphabet */
    {STD, "Zm9-", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm9_", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm9+", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm9/", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm9 ", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm9v\nYmFy", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm\x80v", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm\0v", 4, 16, CN_EINVAL, NULL},
    {STD, ".m9v", -1, 16, CN_EINVAL, NULL},
    /* '=' never belongs in the url form */
    {URL, "Zg==", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm8=", -1, 16, CN_EINVAL, NULL},
    {URL, "Zg=", -1, 16, CN_EINVAL, NULL},
    {URL, "=", -1, 16, CN_EINVAL, NULL},
    /* padding in the standard form: required, only at the end, at most two */
    {STD, "Zg", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm8", -1, 16, CN_EINVAL, NULL},
    {STD, "Zg=", -1, 16, CN_EINVAL, NULL},
    {STD, "Zg===", -1, 16, CN_EINVAL, NULL},
    {STD, "Z===", -1, 16, CN_EINVAL, NULL},
    {STD, "====", -1, 16, CN_EINVAL, NULL},
    {STD, "=Zg=", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm=v", -1, 16, CN_EINVAL, NULL},
    {STD, "Zg==Zm9v", -1, 16, CN_EINVAL, NULL},
    {STD, "Zg==Zg==", -1, 16, CN_EINVAL, NULL},
    /* impossible lengths */
    {URL, "Z", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm9vY", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm9vY", -1, 16, CN_EINVAL, NULL},
    /* non-canonical trailing bits: another spelling of the same bytes */
    {STD, "Zh==", -1, 16, CN_EINVAL, NULL},
    {URL, "Zh", -1, 16, CN_EINVAL, NULL},
    {STD, "Zm9=", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm9", -1, 16, CN_EINVAL, NULL},
    {URL, "Zm9vYh", -1, 16, CN_EINVAL, NULL},
    /* cap too small (one byte short), for each tail length */
    {STD, "Zm9v", -1, 2, CN_ETOOBIG, NULL},
    {URL, "Zm9v", -1, 2, CN_ETOOBIG, NULL},
    {STD, "Zg==", -1, 0, CN_ETOOBIG, NULL},
    {URL, "Zg", -1, 0, CN_ETOOBIG, NULL},
    {URL, "Zm8", -1, 1, CN_ETOOBIG, NULL},
    {STD, "Zm9vYmE=", -1, 4, CN_ETOOBIG, NULL},
};

static void test_decode_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(cases); i++) {
        size_t n = cases[i].len < 0 ? strlen(cases[i].in) : (size_t)cases[i].len;
        uint8_t out[16];
        size_t outlen = 999;
        int rc;

        assert_true(cases[i].cap <= sizeof out);
        if (cases[i].form == STD)
            rc = cn_b64_decode(cases[i].in, n, out, cases[i].cap, &outlen);
        else
            rc = cn_b64url_decode(cases[i].in, n, out, cases[i].cap, &outlen);
        if (rc != cases[i].rc)
            fail_msg("case %zu (\"%s\"): got %d, want %d", i, cases[i].in, rc, cases[i].rc);
        if (rc == CN_OK) {
            assert_int_equal(outlen, strlen(cases[i].want));
            assert_memory_equal(out, cases[i].want, outlen);
        } else {
            assert_int_equal(outlen, 999); /* untouched on failure */
        }
    }
}

/* A decoder must never write past cap, even when it refuses the input. */
static void test_decode_respects_cap(void **state)
{
    uint8_t out[8];
    size_t len;
    (void)state;

    memset(out, 0xaa, sizeof out);
    assert_int_equal(cn_b64url_decode("Zm9vYmFy", 8, out, 5, &len), CN_ETOOBIG);
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 0xaa);
    assert_int_equal(cn_b64url_decode("Zm9vYmE", 7, out, 5, &len), CN_OK);
    assert_int_equal(len, 5);
    assert_int_equal(out[5], 0xaa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_alphabets_differ_in_62_63),
        cmocka_unit_test(test_roundtrip_all_lengths),
        cmocka_unit_test(test_decode_cases),
        cmocka_unit_test(test_decode_respects_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
