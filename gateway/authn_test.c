/* authn_test.c — token verification at the edge: keys installed directly for the
 * verify and cache paths, and a real cn_rpc_server serving GetJwks over inproc:// for the
 * refresher (start-up fetch, unknown-kid refresh and its rate limit, failed and empty
 * fetches). Counters are read from the metrics registry, as /metrics would show them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "authn.c"

#define ISS "https://auth.cairn"
#define AUD "cairn-api"
#define AUTH_ADDR "inproc://authn-test"

/* A signing key as auth would publish it. */
struct tkey {
    EVP_PKEY *k;
    char kid[44];
    char x[44];
};
static struct tkey ka, kb, kc;

static const struct gw_authn_conf conf = {AUTH_ADDR, ISS, AUD, 3600, 30};

/* ---- helpers ---- */

/* Up to four keys as a Jwks; points into b. */
struct jwks_buf {
    Cairn__V1__Jwk jwk[4];
    Cairn__V1__Jwk *ptrs[4];
    Cairn__V1__Jwks set;
};

static void jwks_build(struct jwks_buf *b, struct tkey *first, va_list ap)
{
    Cairn__V1__Jwks init = CAIRN__V1__JWKS__INIT;
    size_t n = 0;

    b->set = init;
    for (struct tkey *t = first; t != NULL; t = va_arg(ap, struct tkey *)) {
        Cairn__V1__Jwk j = CAIRN__V1__JWK__INIT;
        assert_true(n < 4);
        j.kty = "OKP";
        j.crv = "Ed25519";
        j.x = t->x;
        j.kid = t->kid;
        j.alg = "EdDSA";
        j.use = "sig";
        b->jwk[n] = j;
        b->ptrs[n] = &b->jwk[n];
        n++;
    }
    b->set.keys = b->ptrs;
    b->set.n_keys = n;
}

/* Installs the given keys (NULL-terminated) as if fetched. */
static void install(struct tkey *first, ...)
{
    struct jwks_buf b;
    va_list ap;

    va_start(ap, first);
    jwks_build(&b, first, ap);
    va_end(ap);
    assert_int_equal(gw_authn_set_keys_for_test(&b.set), 0);
}

/* A token signed by signer under kid, expiring at exp; caller frees. */
static char *token(const struct tkey *signer, const char *kid, int64_t exp, const char *aud)
{
    char payload[512], *tok = NULL;

    snprintf(payload, sizeof payload,
             "{\"iss\":\"" ISS "\",\"aud\":\"%s\",\"sub\":\"u-1\",\"role\":\"admin\","
             "\"scope\":\"jobs:read models:write\",\"iat\":%lld,\"exp\":%lld}",
             aud, (long long)cn_wall_s(), (long long)exp);
    assert_int_equal(cn_jwt_sign(signer->k, kid, "at+jwt", payload, &tok), 0);
    return tok;
}

static char *good_token(const struct tkey *signer)
{
    return token(signer, signer->kid, cn_wall_s() + 600, AUD);
}

static int verify(const char *tok, struct gw_principal *p, const char **why)
{
    return gw_authn_verify(tok, strlen(tok), p, why);
}

static double hits(void) { return cn_series_value(m.cache_hit); }
static double misses(void) { return cn_series_value(m.cache_miss); }
static double refreshes(struct cn_series *s) { return cn_series_value(s); }

static void key_new(struct tkey *t)
{
    t->k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(t->k);
    assert_int_equal(cn_jwk_thumbprint(t->k, t->kid), 0);
    assert_int_equal(cn_jwk_x(t->k, t->x), 0);
}

static int setup(void **state)
{
    (void)state;
    key_new(&ka);
    key_new(&kb);
    key_new(&kc);
    pthread_once(&metrics_once, metrics_init);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(ka.k);
    EVP_PKEY_free(kb.k);
    EVP_PKEY_free(kc.k);
    return 0;
}

/* Each direct-install test starts configured, with key A only, and ends with no keys. */
static int with_conf(void **state)
{
    (void)state;
    assert_int_equal(conf_set(&conf), 0);
    install(&ka, NULL);
    return 0;
}

static int without_conf(void **state)
{
    struct keyset *old;
    (void)state;

    pthread_rwlock_wrlock(&g.lock);
    old = g.set;
    g.set = NULL;
    atomic_fetch_add(&g.gen, 1);
    pthread_rwlock_unlock(&g.lock);
    keyset_unref(old);
    atomic_store(&g.ready, 0);
    conf_clear();
    return 0;
}

/* ---- verification with keys installed ---- */

static void test_good_token(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok = good_token(&ka);
    (void)state;

    assert_true(gw_authn_ready());
    assert_int_equal(verify(tok, &p, &why), 0);
    assert_string_equal(why, "ok");
    assert_string_equal(p.sub, "u-1");
    assert_string_equal(p.role, "admin");
    assert_string_equal(p.scope, "jobs:read models:write");
    assert_string_equal(p.key_id, "");
    assert_true(p.exp > cn_wall_s());
    free(tok);
}

static void test_bad_tokens(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok;
    char big[CN_JWT_MAX_LEN + 2];
    (void)state;

    tok = token(&kb, ka.kid, cn_wall_s() + 600, AUD); /* B's signature under A's kid */
    assert_int_equal(verify(tok, &p, &why), CN_EDENIED);
    assert_string_equal(why, "bad signature");
    assert_string_equal(p.sub, "");
    free(tok);

    tok = token(&ka, ka.kid, cn_wall_s() + 600, "someone-else");
    assert_int_equal(verify(tok, &p, &why), CN_EDENIED);
    assert_string_equal(why, "wrong audience");
    free(tok);

    tok = token(&ka, ka.kid, cn_wall_s() - 3600, AUD);
    assert_int_equal(verify(tok, &p, &why), CN_EDENIED);
    assert_string_equal(why, "expired");
    free(tok);

    assert_int_equal(verify("not-a-token", &p, &why), CN_EINVAL);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(verify(big, &p, &why), CN_EINVAL);
    assert_string_equal(why, "token too long");
    assert_int_equal(gw_authn_verify(NULL, 0, &p, &why), CN_EINVAL);
}

static void test_unknown_kid(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok = good_token(&kb); /* B is not published */
    (void)state;

    assert_int_equal(verify(tok, &p, &why), CN_ENOTFOUND);
    assert_string_equal(why, "unknown kid");
    free(tok);
}

static void test_second_verify_is_a_cache_hit(void **state)
{
    struct gw_principal p1, p2;
    const char *why;
    char *tok = good_token(&ka);
    double h = hits(), mi = misses();
    (void)state;

    assert_int_equal(verify(tok, &p1, &why), 0);
    assert_int_equal(hits(), h);
    assert_int_equal(misses(), mi + 1);
    assert_int_equal(verify(tok, &p2, &why), 0);
    assert_int_equal(hits(), h + 1);
    assert_int_equal(misses(), mi + 1);
    assert_memory_equal(&p1, &p2, sizeof p1);
    free(tok);
}

/* Refusals are not cached: each costs a full verify, and none ever turns into a hit. */
static void test_failures_are_not_cached(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok = token(&kb, ka.kid, cn_wall_s() + 600, AUD);
    double h = hits();
    (void)state;

    for (int i = 0; i < 3; i++)
        assert_int_equal(verify(tok, &p, &why), CN_EDENIED);
    assert_int_equal(hits(), h);
    free(tok);
}

/* Dropping a key invalidates what it verified; adding one (rotation) keeps the cache. */
static void test_key_removal_invalidates_cache(void **state)
{
    struct gw_principal p;
    const char *why;
    char *ta = good_token(&ka), *tb = good_token(&kb);
    double h;
    (void)state;

    install(&ka, &kb, NULL);
    assert_int_equal(verify(ta, &p, &why), 0);
    assert_int_equal(verify(tb, &p, &why), 0);

    install(&ka, &kb, &kc, NULL); /* rotation adds C */
    h = hits();
    assert_int_equal(verify(ta, &p, &why), 0);
    assert_int_equal(hits(), h + 1);

    install(&kb, &kc, NULL); /* A revoked */
    h = hits();
    assert_int_equal(verify(ta, &p, &why), CN_ENOTFOUND);
    assert_int_equal(verify(tb, &p, &why), 0); /* re-verified under the new generation */
    assert_int_equal(hits(), h);
    assert_int_equal(verify(tb, &p, &why), 0);
    assert_int_equal(hits(), h + 1);
    free(ta);
    free(tb);
}

/* The same kid with a different key is a change, not an addition. */
static void test_key_replaced_under_same_kid(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok = good_token(&ka);
    struct tkey impostor = kb;
    (void)state;

    assert_int_equal(verify(tok, &p, &why), 0);
    memcpy(impostor.kid, ka.kid, sizeof impostor.kid);
    install(&impostor, NULL);
    assert_int_equal(verify(tok, &p, &why), CN_EDENIED);
    assert_string_equal(why, "bad signature");
    free(tok);
}

/* A cached token stops being served the moment it expires. */
static void test_cached_token_expires(void **state)
{
    struct gw_principal p;
    const char *why;
    char *tok = good_token(&ka);
    uint8_t hash[32];
    struct cache_entry *e;
    double h;
    (void)state;

    assert_int_equal(verify(tok, &p, &why), 0);
    EVP_Digest(tok, strlen(tok), hash, NULL, EVP_sha256(), NULL);
    e = &thread_cache()[(hash[0] | (unsigned)hash[1] << 8) & (CACHE_SLOTS - 1)];
    assert_memory_equal(e->hash, hash, sizeof hash);
    e->p.exp = cn_wall_s() - g.leeway_s; /* as if time had passed */
    h = hits();
    assert_int_equal(verify(tok, &p, &why), 0); /* the real token is still good */
    assert_int_equal(hits(), h);
    free(tok);
}

static void *verify_in_thread(void *arg)
{
    struct gw_principal p;
    const char *why;
    return (void *)(intptr_t)verify(arg, &p, &why);
}

/* Each thread has its own table: a token cached on one is a miss on another. */
static void test_cache_is_per_thread(void **state)
{
    char *tok = good_token(&ka);
    struct gw_principal p;
    const char *why;
    pthread_t t;
    void *rc;
    double h;
    (void)state;

    assert_int_equal(verify(tok, &p, &why), 0);
    h = hits();
    assert_int_equal(pthread_create(&t, NULL, verify_in_thread, tok), 0);
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_int_equal((intptr_t)rc, 0);
    assert_int_equal(hits(), h);
    free(tok);
}

/* Only Ed25519 signing keys are used; the rest of a JWKS is ignored. */
static void test_unusable_jwks_entries_ignored(void **state)
{
    /* clang-format off */
    static const struct {
        const char *kty, *crv, *alg, *use, *x;
    } bad[] = {
        {"OKP", "Ed25519", "RS256", "sig", NULL},
        {"OKP", "Ed25519", "EdDSA", "enc", NULL},
        {"OKP", "X25519", "EdDSA", "sig", NULL},
        {"RSA", "", "RS256", "sig", NULL},
        {"OKP", "Ed25519", "EdDSA", "sig", "too-short"},
    };
    /* clang-format on */
    struct gw_principal p;
    const char *why;
    char *tok = good_token(&ka);
    (void)state;

    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        Cairn__V1__Jwk j = CAIRN__V1__JWK__INIT, *jp = &j;
        Cairn__V1__Jwks set = CAIRN__V1__JWKS__INIT;
        j.kty = (char *)bad[i].kty;
        j.crv = (char *)bad[i].crv;
        j.alg = (char *)bad[i].alg;
        j.use = (char *)bad[i].use;
        j.x = bad[i].x ? (char *)bad[i].x : ka.x;
        j.kid = ka.kid;
        set.keys = &jp;
        set.n_keys = 1;
        gw_authn_set_keys_for_test(&set);
        assert_int_equal(g.set->n, 0);
        assert_int_equal(verify(tok, &p, &why), CN_ENOTFOUND);
    }
    /* No alg and no use is fine: both are optional in a JWK. */
    {
        Cairn__V1__Jwk j = CAIRN__V1__JWK__INIT, *jp = &j;
        Cairn__V1__Jwks set = CAIRN__V1__JWKS__INIT;
        j.kty = "OKP";
        j.crv = "Ed25519";
        j.x = ka.x;
        j.kid = ka.kid;
        set.keys = &jp;
        set.n_keys = 1;
        gw_authn_set_keys_for_test(&set);
        assert_int_equal(verify(tok, &p, &why), 0);
    }
    free(tok);
}

/* Swapping key sets while other threads verify: nothing crashes, leaks or lies. */
struct hammer {
    const char *tok;
    atomic_int stop;
    atomic_int bad;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    struct gw_principal p;
    const char *why;

    while (!atomic_load(&h->stop)) {
        int rc = verify(h->tok, &p, &why);
        if (rc != 0 && rc != CN_ENOTFOUND)
            atomic_fetch_add(&h->bad, 1);
    }
    return NULL;
}

static void test_swaps_under_load(void **state)
{
    char *tok = good_token(&ka);
    struct hammer h = {.tok = tok};
    pthread_t t[4];
    (void)state;

    atomic_init(&h.stop, 0);
    atomic_init(&h.bad, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h), 0);
    for (int i = 0; i < 200; i++) {
        if (i % 2)
            install(&kb, NULL);
        else
            install(&ka, &kb, NULL);
    }
    atomic_store(&h.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&h.bad), 0);
    free(tok);
}

/* ---- the refresher, against a real server ---- */

static struct {
    pthread_mutex_t mu;
    struct jwks_buf jwks;
    int fail; /* answer UNAVAILABLE */
    int calls;
} auth = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void serve(struct tkey *first, ...)
{
    va_list ap;

    pthread_mutex_lock(&auth.mu);
    va_start(ap, first);
    jwks_build(&auth.jwks, first, ap);
    va_end(ap);
    pthread_mutex_unlock(&auth.mu);
}

static int auth_calls(void)
{
    int n;
    pthread_mutex_lock(&auth.mu);
    n = auth.calls;
    pthread_mutex_unlock(&auth.mu);
    return n;
}

static void fake_get_jwks(Cairn__V1__Auth_Service *s, const Cairn__V1__JwksRequest *in,
                          Cairn__V1__Jwks_Closure done, void *cd)
{
    (void)s;
    (void)in;
    pthread_mutex_lock(&auth.mu);
    auth.calls++;
    if (auth.fail) {
        pthread_mutex_unlock(&auth.mu);
        cn_call_fail(cd, CAIRN__V1__CODE__UNAVAILABLE, "keys are being rotated");
        done(NULL, cd);
        return;
    }
    /* The closure packs the reply before returning, so the lock covers its reads. */
    done(&auth.jwks.set, cd);
    pthread_mutex_unlock(&auth.mu);
}

/* The gateway only ever calls GetJwks; the other methods answer UNIMPLEMENTED. */
#define FAKE_UNIMPLEMENTED(name, in_t, closure_t)                                                 \
    static void fake_##name(Cairn__V1__Auth_Service *s, const in_t *in, closure_t done, void *cd) \
    {                                                                                             \
        (void)s;                                                                                  \
        (void)in;                                                                                 \
        cn_call_fail(cd, CAIRN__V1__CODE__UNIMPLEMENTED, "not in this test");                     \
        done(NULL, cd);                                                                           \
    }
FAKE_UNIMPLEMENTED(sign_up, Cairn__V1__SignUpRequest, Cairn__V1__User_Closure)
FAKE_UNIMPLEMENTED(login, Cairn__V1__LoginRequest, Cairn__V1__TokenResponse_Closure)
FAKE_UNIMPLEMENTED(refresh, Cairn__V1__RefreshRequest, Cairn__V1__TokenResponse_Closure)
FAKE_UNIMPLEMENTED(logout, Cairn__V1__LogoutRequest, Cairn__V1__Empty_Closure)
FAKE_UNIMPLEMENTED(me, Cairn__V1__MeRequest, Cairn__V1__User_Closure)
FAKE_UNIMPLEMENTED(create_api_key, Cairn__V1__CreateApiKeyRequest, Cairn__V1__ApiKeyCreated_Closure)
FAKE_UNIMPLEMENTED(list_api_keys, Cairn__V1__ListApiKeysRequest, Cairn__V1__ApiKeyList_Closure)
FAKE_UNIMPLEMENTED(revoke_api_key, Cairn__V1__RevokeApiKeyRequest, Cairn__V1__Empty_Closure)
FAKE_UNIMPLEMENTED(resolve_api_key, Cairn__V1__ResolveApiKeyRequest, Cairn__V1__ResolvedApiKey_Closure)
FAKE_UNIMPLEMENTED(change_password, Cairn__V1__ChangePasswordRequest, Cairn__V1__Empty_Closure)
FAKE_UNIMPLEMENTED(logout_all, Cairn__V1__LogoutAllRequest, Cairn__V1__Empty_Closure)
FAKE_UNIMPLEMENTED(list_users, Cairn__V1__ListUsersRequest, Cairn__V1__UserList_Closure)
FAKE_UNIMPLEMENTED(update_user, Cairn__V1__UpdateUserRequest, Cairn__V1__User_Closure)
FAKE_UNIMPLEMENTED(list_audit, Cairn__V1__ListAuditRequest, Cairn__V1__AuditList_Closure)

static Cairn__V1__Auth_Service fake_auth = CAIRN__V1__AUTH__INIT(fake_);
static struct cn_rpc_server *server;

static int server_up(void **state)
{
    struct cn_rpc_server_opts o = {
        .listen = AUTH_ADDR,
        .service = &fake_auth.base,
        .workers = 1,
        .queue = 4,
        .name = "auth",
    };
    (void)state;
    auth.fail = 0;
    serve(&ka, NULL);
    return cn_rpc_server_start(&server, &o) == CN_OK ? 0 : -1;
}

static int server_down(void **state)
{
    (void)state;
    gw_authn_stop();
    cn_rpc_server_stop(server, 1000);
    server = NULL;
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls cond for up to ms milliseconds. */
#define EVENTUALLY(cond, ms)                     \
    do {                                         \
        int64_t until_ = cn_mono_ms() + (ms);    \
        while (!(cond) && cn_mono_ms() < until_) \
            sleep_ms(10);                        \
        assert_true(cond);                       \
    } while (0)

static void test_start_rejects_bad_conf(void **state)
{
    struct gw_authn_conf c = conf;
    (void)state;

    c.auth_addr = "not an address";
    assert_int_equal(gw_authn_start(&c), CN_EINVAL);
    c = conf;
    c.iss = "";
    assert_int_equal(gw_authn_start(&c), CN_EINVAL);
    c = conf;
    c.refresh_s = 0;
    assert_int_equal(gw_authn_start(&c), CN_EINVAL);
    assert_int_equal(gw_authn_start(NULL), CN_EINVAL);
    assert_false(gw_authn_ready());
}

static void test_refresher_loads_keys_and_follows_new_kids(void **state)
{
    struct gw_principal p;
    const char *why;
    char *ta = good_token(&ka), *tc = good_token(&kc), *tb = good_token(&kb);
    double ok = refreshes(m.refresh_ok);
    int calls;
    (void)state;

    assert_int_equal(gw_authn_start(&conf), 0);
    assert_int_equal(gw_authn_start(&conf), CN_EINVAL); /* already running */
    EVENTUALLY(gw_authn_ready(), 3000);
    assert_true(refreshes(m.refresh_ok) >= ok + 1);
    assert_int_equal(verify(ta, &p, &why), 0);

    /* Auth rotates to C: the first token under C is unknown and asks for a refresh. */
    serve(&ka, &kc, NULL);
    calls = auth_calls();
    assert_int_equal(verify(tc, &p, &why), CN_ENOTFOUND);
    EVENTUALLY(verify(tc, &p, &why) == 0, 3000);
    assert_int_equal(auth_calls(), calls + 1);
    assert_int_equal(verify(ta, &p, &why), 0);

    /* Another unknown kid within 5 s does not reach auth again. */
    calls = auth_calls();
    assert_int_equal(verify(tb, &p, &why), CN_ENOTFOUND);
    sleep_ms(300);
    assert_int_equal(auth_calls(), calls);

    gw_authn_stop();
    assert_false(gw_authn_ready());
    assert_int_equal(verify(ta, &p, &why), CN_ENOTFOUND);
    free(ta);
    free(tb);
    free(tc);
}

/* A failing or empty GetJwks is counted and logged, and never costs the current keys. */
static void test_refresher_keeps_keys_on_failure(void **state)
{
    struct gw_principal p;
    const char *why;
    char *ta = good_token(&ka), *tb = good_token(&kb);
    double err, empty;
    (void)state;

    assert_int_equal(gw_authn_start(&conf), 0);
    EVENTUALLY(gw_authn_ready(), 3000);

    pthread_mutex_lock(&auth.mu);
    auth.fail = 1;
    pthread_mutex_unlock(&auth.mu);
    err = refreshes(m.refresh_error);
    atomic_store(&g.last_forced_ms, INT64_MIN / 2); /* let an unknown kid refresh now */
    assert_int_equal(verify(tb, &p, &why), CN_ENOTFOUND);
    EVENTUALLY(refreshes(m.refresh_error) >= err + 1, 3000);
    assert_int_equal(verify(ta, &p, &why), 0);

    pthread_mutex_lock(&auth.mu);
    auth.fail = 0;
    pthread_mutex_unlock(&auth.mu);
    serve(NULL);
    empty = refreshes(m.refresh_empty);
    atomic_store(&g.last_forced_ms, INT64_MIN / 2);
    assert_int_equal(verify(tb, &p, &why), CN_ENOTFOUND);
    EVENTUALLY(refreshes(m.refresh_empty) >= empty + 1, 3000);
    assert_int_equal(verify(ta, &p, &why), 0);
    free(ta);
    free(tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_token, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_bad_tokens, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_unknown_kid, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_second_verify_is_a_cache_hit, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_failures_are_not_cached, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_key_removal_invalidates_cache, with_conf,
                                        without_conf),
        cmocka_unit_test_setup_teardown(test_key_replaced_under_same_kid, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_cached_token_expires, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_cache_is_per_thread, with_conf, without_conf),
        cmocka_unit_test_setup_teardown(test_unusable_jwks_entries_ignored, with_conf,
                                        without_conf),
        cmocka_unit_test_setup_teardown(test_swaps_under_load, with_conf, without_conf),
        cmocka_unit_test(test_start_rejects_bad_conf),
        cmocka_unit_test_setup_teardown(test_refresher_loads_keys_and_follows_new_kids, server_up,
                                        server_down),
        cmocka_unit_test_setup_teardown(test_refresher_keeps_keys_on_failure, server_up,
                                        server_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
