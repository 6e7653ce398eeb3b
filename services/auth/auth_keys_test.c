/* auth_keys_test.c — unit tests for the in-memory side of auth_keys.c: which key signs
 * and which are published across a rotation, snapshots that share keys with the one
 * before and free them only after their last user, the key file, and rotate-keys'
 * refusals. The database side (ensure, reload, rotate) is covered by the system tests
 * (tests/system/test_110_key_rotation.py). Includes the .c to reach the statics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth_keys.c"

/* --- helpers --- */

/* A stored key with a fresh Ed25519 private key and these times. */
static struct auth_db_key row(int64_t activates_ms, int64_t retired_ms)
{
    struct auth_db_key k;

    assert_int_equal(key_generate(&k), CN_OK);
    k.activates_at_ms = activates_ms;
    k.retired_at_ms = retired_ms;
    return k;
}

/* A snapshot of rows (built from scratch), with one reference. */
static struct auth_keyset *snapshot(const struct auth_db_key *rows, size_t n)
{
    struct auth_keyset *s = NULL;

    assert_int_equal(set_from_rows(rows, n, NULL, &s), CN_OK);
    assert_non_null(s);
    return s;
}

/* The kid signing at now_ms, "" if none. */
static const char *signer(const struct auth_keyset *s, int64_t now_ms)
{
    const struct auth_key *k = auth_keys_signing(s, now_ms);
    return k != NULL ? k->kid : "";
}

/* --- cases --- */

static void the_new_key_signs_from_its_activation(void **state)
{
    /* rotate-keys at 2000 with a publish time of 3000: B published from 2000, signs from
     * 5000, when A retires. As the database returns them: newest activation first. */
    struct auth_db_key rows[2] = {row(5000, 0), row(1000, 5000)};
    struct auth_keyset *s = snapshot(rows, 2);

    (void)state;
    assert_string_equal(signer(s, 999), "");
    assert_string_equal(signer(s, 1000), rows[1].kid);
    assert_string_equal(signer(s, 4999), rows[1].kid);
    assert_string_equal(signer(s, 5000), rows[0].kid);
    assert_string_equal(signer(s, 1000000), rows[0].kid);
    auth_keys_put(s);
}

static void a_second_rotation_cuts_the_pending_key_short(void **state)
{
    /* B was pending (signs from 3000) when another rotation made C (from 4000): B got
     * retired_at 4000 and signs in between only. */
    struct auth_db_key rows[3] = {row(4000, 0), row(3000, 4000), row(0, 3000)};
    struct auth_keyset *s = snapshot(rows, 3);

    (void)state;
    assert_string_equal(signer(s, 2999), rows[2].kid);
    assert_string_equal(signer(s, 3000), rows[1].kid);
    assert_string_equal(signer(s, 3999), rows[1].kid);
    assert_string_equal(signer(s, 4000), rows[0].kid);
    auth_keys_put(s);
}

static void a_retired_key_is_published_until_its_tokens_expire(void **state)
{
    struct auth_key current = {.activates_at_ms = 5000};
    struct auth_key old = {.activates_at_ms = 0, .retired_at_ms = 5000};

    (void)state;
    /* keep = access TTL + grace = 2000 ms: a token signed at 4999 expires by 6999. */
    assert_true(auth_key_published(&old, 4000, 2000));
    assert_true(auth_key_published(&old, 6999, 2000));
    assert_false(auth_key_published(&old, 7000, 2000));
    assert_true(auth_key_published(&current, 0, 2000));
    assert_true(auth_key_published(&current, INT64_MAX / 2, 2000));
}

static void a_reload_shares_keys_and_the_last_user_frees_them(void **state)
{
    struct auth_db_key first[1] = {row(0, 0)};
    struct auth_db_key second[2] = {row(9000, 0), first[0]};
    struct auth_keyset *held, *next = NULL;
    char *tok = NULL;

    (void)state;
    second[1].retired_at_ms = 9000;
    set_install(snapshot(first, 1));
    held = auth_keys_get(); /* a worker about to sign */
    assert_int_equal(atomic_load(&held->refs), 2);

    assert_false(set_same(held, second, 2));
    assert_int_equal(set_from_rows(second, 2, held, &next), CN_OK);
    assert_ptr_equal(next->keys[1].pkey, held->keys[0].pkey); /* shared, not rebuilt */
    assert_string_equal(next->keys[1].kid, first[0].kid);
    assert_int_equal(next->keys[1].retired_at_ms, 9000);
    assert_true(set_same(next, second, 2));
    set_install(next);
    assert_int_equal(atomic_load(&held->refs), 1); /* only the worker's now */

    /* The swapped-out snapshot still signs for the worker that holds it. */
    assert_int_equal(
        cn_jwt_sign(auth_keys_signing(held, 1)->pkey, held->keys[0].kid, "at+jwt", "{}", &tok),
        CN_OK);
    free(tok);
    auth_keys_put(held); /* frees it; the shared key lives on in next */
    assert_int_equal(cn_jwt_sign(next->keys[1].pkey, next->keys[1].kid, "at+jwt", "{}", &tok),
                     CN_OK);
    free(tok);
    auth_keys_free();
    assert_null(auth_keys_get());
}

static void a_stored_kid_that_does_not_match_is_replaced(void **state)
{
    struct auth_db_key rows[2] = {row(0, 0), row(0, 0)};
    struct auth_keyset *s = NULL;

    (void)state;
    memset(rows[1].priv, 0, sizeof rows[1].priv); /* still a valid Ed25519 seed */
    assert_int_equal(set_from_rows(rows, 2, NULL, &s), CN_OK);
    /* The stored kid no longer matches that key: it is published under its real one. */
    assert_string_not_equal(s->keys[1].kid, rows[1].kid);
    auth_keys_put(s);
}

static void the_key_file_signs_for_ever_and_is_the_only_key(void **state)
{
    char path[] = "/tmp/auth_keys_test_XXXXXX";
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    struct auth_keyset *s;
    FILE *f;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(pkey);

    assert_int_equal(auth_keys_load(NULL, path, 60), CN_OK);
    unlink(path);
    assert_true(ks.from_file);
    assert_int_equal(auth_keys_start("dsn unused", 1, 60), CN_OK); /* no reload thread */
    assert_false(ks.started);
    s = auth_keys_get();
    assert_int_equal(s->n, 1);
    assert_ptr_equal(auth_keys_signing(s, 0), &s->keys[0]);
    assert_ptr_equal(auth_keys_signing(s, INT64_MAX / 2), &s->keys[0]);
    assert_true(auth_key_published(&s->keys[0], INT64_MAX / 2, 0));
    auth_keys_put(s);
    auth_keys_stop();
    auth_keys_free();

    assert_int_equal(auth_keys_load(NULL, "/nonexistent/key.pem", 60), CN_EIO);
    assert_null(auth_keys_get());
}

static void rotate_keys_refuses_a_key_file_and_arguments(void **state)
{
    char *plain[] = {"rotate-keys", NULL};
    char *extra[] = {"rotate-keys", "--now", NULL};

    (void)state;
    /* Neither reaches the database (the DSN would not connect anywhere). */
    assert_int_equal(auth_keys_rotate_command(1, plain, "host=/nonexistent", "/k.pem", 120), 2);
    assert_int_equal(auth_keys_rotate_command(2, extra, "host=/nonexistent", "", 120), 2);
}

static void times_print_as_utc_with_milliseconds(void **state)
{
    char out[32];

    (void)state;
    format_ms(0, out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    format_ms(1700000000123, out, sizeof out);
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_new_key_signs_from_its_activation),
        cmocka_unit_test(a_second_rotation_cuts_the_pending_key_short),
        cmocka_unit_test(a_retired_key_is_published_until_its_tokens_expire),
        cmocka_unit_test(a_reload_shares_keys_and_the_last_user_frees_them),
        cmocka_unit_test(a_stored_kid_that_does_not_match_is_replaced),
        cmocka_unit_test(the_key_file_signs_for_ever_and_is_the_only_key),
        cmocka_unit_test(rotate_keys_refuses_a_key_file_and_arguments),
        cmocka_unit_test(times_print_as_utc_with_milliseconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
