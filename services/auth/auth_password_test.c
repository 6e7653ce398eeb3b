/* auth_password_test.c — unit tests for auth_password.c: email normalisation and the
 * reasons given for bad addresses, password length counted in code points, API key
 * names, Argon2id hash/verify, and the bounded hashing pool (full, timed out, waiter
 * served in turn).
 * Includes the .c to reach the pool's statics.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth_password.c"

#define GOOD_PW "correct horse battery"

/* --- helpers --- */

static void expect_email(const char *in, const char *want)
{
    char out[AUTH_EMAIL_MAX + 1];
    const char *why = NULL;

    if (auth_email_normalize(in, out, sizeof out, &why) != CN_OK)
        fail_msg("'%s' rejected: %s", in, why);
    assert_string_equal(out, want);
}

/* The address is refused, and the reason mentions `about`. */
static void expect_bad_email(const char *in, const char *about)
{
    char out[AUTH_EMAIL_MAX + 1];
    const char *why = NULL;

    if (auth_email_normalize(in, out, sizeof out, &why) != CN_EINVAL)
        fail_msg("'%s' accepted", in);
    if (strstr(why, about) == NULL)
        fail_msg("'%s': reason '%s' does not mention '%s'", in, why, about);
}

/* A new string of n copies of unit (caller frees). */
static char *repeat(const char *unit, size_t n)
{
    size_t len = strlen(unit);
    char *s = cn_malloc(len * n + 1);

    for (size_t i = 0; i < n; i++)
        memcpy(s + i * len, unit, len);
    s[len * n] = '\0';
    return s;
}

/* auth_password_check of n copies of unit; *why gets the reason. */
static int check_repeated(const char *unit, size_t n, const char **why)
{
    char *pw = repeat(unit, n);
    int rc = auth_password_check(pw, why);

    free(pw);
    return rc;
}

static void expect_password_ok(const char *unit, size_t n)
{
    const char *why = "";
    if (check_repeated(unit, n, &why) != CN_OK)
        fail_msg("%zu x '%s' rejected: %s", n, unit, why);
}

static void expect_bad_password(const char *pw, const char *about)
{
    const char *why = "";
    if (auth_password_check(pw, &why) != CN_EINVAL)
        fail_msg("password accepted, expected '%s'", about);
    if (strstr(why, about) == NULL)
        fail_msg("reason '%s' does not mention '%s'", why, about);
}

static int pool_setup(void **state)
{
    (void)state;
    return auth_password_init(1, 1) == CN_OK ? 0 : -1;
}

static int pool_teardown(void **state)
{
    (void)state;
    auth_password_fini();
    return 0;
}

struct hasher {
    int64_t wait_ms;
    int rc;
    char hash[AUTH_HASH_MAX];
};

static void *hash_in_thread(void *arg)
{
    struct hasher *h = arg;
    h->rc = auth_password_hash(GOOD_PW, h->wait_ms, h->hash, sizeof h->hash);
    return NULL;
}

static int waiting_now(void)
{
    int n;
    pthread_mutex_lock(&pool.mu);
    n = pool.waiting;
    pthread_mutex_unlock(&pool.mu);
    return n;
}

/* Polls until n callers wait for a slot (at most a second). */
static void wait_for_waiters(int n)
{
    for (int i = 0; i < 500 && waiting_now() < n; i++)
        usleep(2000);
    assert_int_equal(waiting_now(), n);
}

/* --- emails --- */

static void email_is_trimmed_and_lowercased(void **state)
{
    (void)state;
    expect_email("  Alice.Smith@Example.COM\t\n", "alice.smith@example.com");
    expect_email("O'Brien+tag@Mail.Example.co.uk", "o'brien+tag@mail.example.co.uk");
    expect_email("x@a-b.c9", "x@a-b.c9");
}

static void email_reasons_say_what_is_wrong(void **state)
{
    (void)state;
    expect_bad_email("", "required");
    expect_bad_email(" \t ", "required");
    expect_bad_email("alice.example.com", "must contain an @");
    expect_bad_email("a@b@example.com", "exactly one @");
    expect_bad_email("@example.com", "before the @");
    expect_bad_email("alice@", "domain after the @");
    expect_bad_email("al ice@example.com", "without spaces");
    expect_bad_email("\"alice\"@example.com", "quotes");
    expect_bad_email("al\xc3\xa9@example.com", "printable ASCII");
    expect_bad_email("al\x01ice@example.com", "printable ASCII");
    expect_bad_email("alice@localhost", "must contain a dot");
    expect_bad_email("alice@example..com", "empty label");
    expect_bad_email("alice@.example.com", "empty label");
    expect_bad_email("alice@example.com.", "empty label");
    expect_bad_email("alice@-example.com", "hyphen");
    expect_bad_email("alice@example-.com", "hyphen");
    expect_bad_email("alice@exa_mple.com", "letters, digits, hyphens");
    expect_bad_email("alice@b\xc3\xbc"
                     "cher.de",
                     "letters, digits, hyphens");
}

static void email_length_limits(void **state)
{
    char *local64 = repeat("a", 64), *local65 = repeat("a", 65);
    char *label63 = repeat("b", 63), *label64 = repeat("b", 64);
    char *tail61 = repeat("c", 61), *tail62 = repeat("c", 62);
    char buf[600], padded[620];

    (void)state;
    snprintf(buf, sizeof buf, "%s@example.com", local64);
    expect_email(buf, buf);
    snprintf(buf, sizeof buf, "%s@example.com", local65);
    expect_bad_email(buf, "at most 64");
    snprintf(buf, sizeof buf, "x@%s.com", label63);
    expect_email(buf, buf);
    snprintf(buf, sizeof buf, "x@%s.com", label64);
    expect_bad_email(buf, "at most 63");
    /* 64 + 1 + (63 + 1 + 63 + 1 + 61) = 254 characters: the longest address allowed,
     * also when surrounded by spaces, which do not count. */
    snprintf(buf, sizeof buf, "%s@%s.%s.%s", local64, label63, label63, tail61);
    assert_int_equal(strlen(buf), 254);
    expect_email(buf, buf);
    snprintf(padded, sizeof padded, "  %s\t", buf);
    expect_email(padded, buf);
    snprintf(buf, sizeof buf, "%s@%s.%s.%s", local64, label63, label63, tail62);
    expect_bad_email(buf, "at most 254");
    free(local64);
    free(local65);
    free(label63);
    free(label64);
    free(tail61);
    free(tail62);
}

/* --- passwords --- */

static void password_length_counts_code_points(void **state)
{
    const char *why = "";

    (void)state;
    /* ASCII: 12..1024. */
    expect_password_ok("a", 12);
    expect_password_ok("a", 1024);
    assert_int_equal(check_repeated("a", 11, &why), CN_EINVAL);
    assert_non_null(strstr(why, "at least 12"));
    assert_int_equal(check_repeated("a", 1025, &why), CN_EINVAL);
    assert_non_null(strstr(why, "at most 1024"));
    /* 2-byte é: 11 are 22 bytes but 11 characters, too short; 12 are fine. */
    assert_int_equal(check_repeated("\xc3\xa9", 11, &why), CN_EINVAL);
    expect_password_ok("\xc3\xa9", 12);
    /* 3-byte €: 1024 of them are 3072 bytes and still allowed; 1025 are not. */
    expect_password_ok("\xe2\x82\xac", 1024);
    assert_int_equal(check_repeated("\xe2\x82\xac", 1025, &why), CN_EINVAL);
    /* 4-byte emoji. */
    expect_password_ok("\xf0\x9f\x94\x91", 12);
    assert_int_equal(check_repeated("\xf0\x9f\x94\x91", 11, &why), CN_EINVAL);
    expect_bad_password("", "required");
}

static void password_must_be_valid_utf8(void **state)
{
    (void)state;
    expect_bad_password("abcdefghijkl\xc3", "UTF-8");             /* truncated */
    expect_bad_password("abcdefghijkl\xc0\xaf", "UTF-8");         /* overlong '/' */
    expect_bad_password("abcdefghijkl\xe0\x80\xaf", "UTF-8");     /* overlong, 3 bytes */
    expect_bad_password("abcdefghijkl\xed\xa0\x80", "UTF-8");     /* surrogate D800 */
    expect_bad_password("abcdefghijkl\xf4\x90\x80\x80", "UTF-8"); /* above U+10FFFF */
    expect_bad_password("abcdefghijkl\xff", "UTF-8");
    expect_bad_password("abcdefghijkl\x80", "UTF-8"); /* lone continuation */
    expect_bad_password("abcdefghijkl\xe2\x82", "UTF-8");
}

/* --- hashing --- */

static void hash_and_verify_round_trip(void **state)
{
    char hash[AUTH_HASH_MAX], again[AUTH_HASH_MAX];

    (void)state;
    assert_int_equal(auth_password_hash(GOOD_PW, 1000, hash, sizeof hash), CN_OK);
    assert_non_null(strstr(hash, "$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_int_equal(auth_password_verify(hash, GOOD_PW, 1000), CN_OK);
    assert_int_equal(auth_password_verify(hash, "correct horse batterY", 1000), CN_EDENIED);
    assert_int_equal(auth_password_verify(hash, "", 1000), CN_EDENIED);
    /* A fresh salt each time. */
    assert_int_equal(auth_password_hash(GOOD_PW, 1000, again, sizeof again), CN_OK);
    assert_string_not_equal(hash, again);
    /* Unicode passwords survive the round trip byte for byte. */
    assert_int_equal(
        auth_password_hash("p\xc3\xa4ssw\xc3\xb6rd-\xf0\x9f\x94\x91-long", 1000, hash, sizeof hash),
        CN_OK);
    assert_int_equal(
        auth_password_verify(hash, "p\xc3\xa4ssw\xc3\xb6rd-\xf0\x9f\x94\x91-long", 1000), CN_OK);
    assert_int_equal(auth_password_verify(hash, "passw\xc3\xb6rd-\xf0\x9f\x94\x91-long", 1000),
                     CN_EDENIED);
}

static void dummy_verify_never_matches_and_costs_the_same(void **state)
{
    char hash[AUTH_HASH_MAX];
    int64_t t0, real_us, dummy_us;

    (void)state;
    assert_int_equal(auth_password_hash(GOOD_PW, 1000, hash, sizeof hash), CN_OK);
    t0 = cn_mono_us();
    assert_int_equal(auth_password_verify(hash, "wrong password!", 1000), CN_EDENIED);
    real_us = cn_mono_us() - t0;
    t0 = cn_mono_us();
    assert_int_equal(auth_password_verify(NULL, GOOD_PW, 1000), CN_EDENIED);
    dummy_us = cn_mono_us() - t0;
    /* Same costs: within a factor of two even on a noisy machine. */
    if (dummy_us * 2 < real_us || real_us * 2 < dummy_us)
        fail_msg("real verify %lld us, dummy %lld us", (long long)real_us, (long long)dummy_us);
}

static void corrupt_stored_hash_is_a_mismatch(void **state)
{
    (void)state;
    assert_int_equal(auth_password_verify("$argon2id$garbage", GOOD_PW, 1000), CN_EDENIED);
    assert_int_equal(auth_password_verify("", GOOD_PW, 1000), CN_EDENIED);
}

/* --- the pool (1 slot, 1 waiter) --- */

static void pool_full_turns_callers_away(void **state)
{
    struct hasher waiter = {.wait_ms = 5000};
    pthread_t th;
    char hash[AUTH_HASH_MAX];

    (void)state;
    assert_int_equal(slot_acquire(0), CN_OK); /* the only slot */
    assert_int_equal(pthread_create(&th, NULL, hash_in_thread, &waiter), 0);
    wait_for_waiters(1); /* the only waiting place */
    assert_int_equal(auth_password_hash(GOOD_PW, 5000, hash, sizeof hash), CN_EFULL);
    assert_int_equal(auth_password_verify(NULL, GOOD_PW, 5000), CN_EFULL);
    slot_release();
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(waiter.rc, CN_OK); /* the waiter got the slot */
    assert_int_equal(pool.running, 0);
    assert_int_equal(pool.waiting, 0);
}

static void pool_wait_is_bounded(void **state)
{
    char hash[AUTH_HASH_MAX];
    int64_t t0, took;

    (void)state;
    assert_int_equal(slot_acquire(0), CN_OK);
    t0 = cn_mono_ms();
    assert_int_equal(auth_password_hash(GOOD_PW, 60, hash, sizeof hash), CN_ETIMEDOUT);
    took = cn_mono_ms() - t0;
    assert_true(took >= 55 && took < 1000);
    /* No time left at all: refused without waiting. */
    assert_int_equal(auth_password_verify(NULL, GOOD_PW, 0), CN_ETIMEDOUT);
    assert_int_equal(pool.waiting, 0);
    slot_release();
    assert_int_equal(auth_password_verify(NULL, GOOD_PW, 0), CN_EDENIED);
    assert_int_equal(pool.running, 0);
}

static void pool_newcomers_queue_behind_waiters(void **state)
{
    struct hasher waiter = {.wait_ms = 5000};
    pthread_t th;

    (void)state;
    assert_int_equal(slot_acquire(0), CN_OK);
    assert_int_equal(pthread_create(&th, NULL, hash_in_thread, &waiter), 0);
    wait_for_waiters(1);
    /* Free the slot while holding the lock, as if a newcomer arrived right then: it must
     * not take the slot from under the waiter. */
    pthread_mutex_lock(&pool.mu);
    pool.running--;
    pthread_mutex_unlock(&pool.mu);
    assert_int_equal(slot_acquire(5000), CN_EFULL); /* behind the waiter: no place left */
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(waiter.rc, CN_OK);
    assert_int_equal(pool.running, 0);
}

static void key_names(void **state)
{
    const char *why = "";
    char *longest = repeat("\xc3\xa9", AUTH_KEY_NAME_MAX); /* 100 x e-acute: 200 bytes */
    char *too_long = repeat("k", AUTH_KEY_NAME_MAX + 1);

    (void)state;
    assert_int_equal(auth_key_name_check("ci deploy", &why), CN_OK);
    assert_int_equal(auth_key_name_check("x", &why), CN_OK);
    assert_int_equal(auth_key_name_check("'; DROP TABLE api_keys; --", &why), CN_OK);
    assert_int_equal(auth_key_name_check(longest, &why), CN_OK);
    assert_int_equal(auth_key_name_check(too_long, &why), CN_EINVAL);
    assert_non_null(strstr(why, "at most 100"));
    assert_int_equal(auth_key_name_check("", &why), CN_EINVAL);
    assert_non_null(strstr(why, "required"));
    assert_int_equal(auth_key_name_check("   ", &why), CN_EINVAL);
    assert_non_null(strstr(why, "blank"));
    assert_int_equal(auth_key_name_check("tab\there", &why), CN_EINVAL);
    assert_non_null(strstr(why, "control"));
    assert_int_equal(auth_key_name_check("del\x7f", &why), CN_EINVAL);
    assert_int_equal(auth_key_name_check("bad \xc3", &why), CN_EINVAL);
    assert_non_null(strstr(why, "UTF-8"));
    assert_true(auth_text_ok("", 0));
    assert_true(auth_text_ok("\xc3\xa9\xc3\xa9", 2));
    assert_false(auth_text_ok("\xc3\xa9\xc3\xa9", 1));
    assert_false(auth_text_ok("\xff", 10));
    free(longest);
    free(too_long);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(email_is_trimmed_and_lowercased),
        cmocka_unit_test(email_reasons_say_what_is_wrong),
        cmocka_unit_test(email_length_limits),
        cmocka_unit_test(password_length_counts_code_points),
        cmocka_unit_test(password_must_be_valid_utf8),
        cmocka_unit_test(key_names),
        cmocka_unit_test_setup_teardown(hash_and_verify_round_trip, pool_setup, pool_teardown),
        cmocka_unit_test_setup_teardown(dummy_verify_never_matches_and_costs_the_same, pool_setup,
                                        pool_teardown),
        cmocka_unit_test_setup_teardown(corrupt_stored_hash_is_a_mismatch, pool_setup,
                                        pool_teardown),
        cmocka_unit_test_setup_teardown(pool_full_turns_callers_away, pool_setup, pool_teardown),
        cmocka_unit_test_setup_teardown(pool_wait_is_bounded, pool_setup, pool_teardown),
        cmocka_unit_test_setup_teardown(pool_newcomers_queue_behind_waiters, pool_setup,
                                        pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
