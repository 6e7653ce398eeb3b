/* credentials_test.c — classifying Authorization / X-API-Key values and the route rules
 * (session-only, admin, scope). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "credentials.c"
#include "util.h"

static enum gw_cred_kind kind_of(const char *auth, const char *key)
{
    struct gw_credential c;
    gw_credential_parse(auth, auth ? strlen(auth) : 0, key, key ? strlen(key) : 0, &c);
    return c.kind;
}

static void test_parse(void **state)
{
    (void)state;
    char key[CN_APIKEY_LEN + 1], bearer[CN_APIKEY_LEN + 16], bad[CN_APIKEY_LEN + 1];
    struct cn_apikey k;
    cn_apikey_new(&k, key);
    snprintf(bearer, sizeof bearer, "Bearer %s", key);
    memcpy(bad, key, sizeof key);
    bad[20] = bad[20] == 'x' ? 'y' : 'x';

    static const struct {
        const char *auth, *key;
        enum gw_cred_kind want;
    } rows[] = {
        {NULL, NULL, GW_CRED_NONE},
        {"Bearer eyJ.a.b", NULL, GW_CRED_JWT},
        {"bearer eyJ.a.b", NULL, GW_CRED_JWT},
        {"BEARER   eyJ.a.b  ", NULL, GW_CRED_JWT},
        {"Basic dXNlcjpwdw==", NULL, GW_CRED_MALFORMED},
        {"Bearer", NULL, GW_CRED_MALFORMED},
        {"Bearer ", NULL, GW_CRED_MALFORMED},
        {"Bearer a b", NULL, GW_CRED_MALFORMED},
        {"Bearer \x01", NULL, GW_CRED_MALFORMED},
        {"eyJ.a.b", NULL, GW_CRED_MALFORMED},
        {"Bearer cairn_short", NULL, GW_CRED_BADKEY},
        {NULL, "not-a-key", GW_CRED_BADKEY},
        {NULL, "cairn_", GW_CRED_BADKEY},
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(rows); i++) {
        enum gw_cred_kind got = kind_of(rows[i].auth, rows[i].key);
        if (got != rows[i].want)
            fail_msg("row %zu: want %d got %d", i, rows[i].want, got);
    }
    assert_int_equal(kind_of(bearer, NULL), GW_CRED_APIKEY);
    assert_int_equal(kind_of(NULL, key), GW_CRED_APIKEY);
    assert_int_equal(kind_of(bearer, key), GW_CRED_APIKEY);
    assert_int_equal(kind_of(NULL, bad), GW_CRED_BADKEY);
    assert_int_equal(kind_of("Bearer eyJ.a.b", key), GW_CRED_MALFORMED);

    struct gw_credential c;
    gw_credential_parse(bearer, strlen(bearer), NULL, 0, &c);
    assert_string_equal(c.key.id, k.id);
    assert_string_equal(c.key.secret, k.secret);
    assert_int_equal(c.len, CN_APIKEY_LEN);
}

static void test_authorize(void **state)
{
    (void)state;
    struct gw_route user = {"GET", "/x", "auth", "Me", GW_AUTH_USER, "predict", true, 0, 200, "", 0, 0};
    struct gw_route session = {"POST", "/x", "auth", "Me", GW_AUTH_SESSION, "", false, 0, 200, "", 0, 0};
    struct gw_route admin = {"GET", "/x", "auth", "Me", GW_AUTH_ADMIN, "admin", true, 0, 200, "", 0, 0};
    struct gw_principal p = {.sub = "u1", .role = "user", .scope = "models:read predict"};
    char why[128];
    assert_int_equal(gw_authorize(&user, &p, why, sizeof why), 0);
    assert_int_equal(gw_authorize(&session, &p, why, sizeof why), 0);
    assert_int_equal(gw_authorize(&admin, &p, why, sizeof why), 403);
    assert_non_null(strstr(why, "admin role"));

    struct gw_principal key = {.sub = "u1", .role = "user", .scope = "models:read", .key_id = "abc"};
    assert_int_equal(gw_authorize(&user, &key, why, sizeof why), 403);
    assert_non_null(strstr(why, "scope predict"));
    assert_int_equal(gw_authorize(&session, &key, why, sizeof why), 403);
    assert_non_null(strstr(why, "session"));

    struct gw_principal adm = {.sub = "a", .role = "admin", .scope = "predict admin"};
    assert_int_equal(gw_authorize(&admin, &adm, why, sizeof why), 0);
    struct gw_principal adm_key = {.sub = "a", .role = "admin", .scope = "predict", .key_id = "k"};
    assert_int_equal(gw_authorize(&admin, &adm_key, why, sizeof why), 403);

    assert_true(gw_scope_has("a b c", "b"));
    assert_false(gw_scope_has("ab c", "a"));
    assert_false(gw_scope_has("", "a"));
    assert_false(gw_scope_has("a", ""));
    assert_true(gw_scope_has("  a  ", "a"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_authorize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
