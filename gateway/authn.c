/* authn.c — bearer-token verification at the edge, and the JWKS refresher behind it.
 * See authn.h for the contract.
 *
 * Keys: the refresher thread fetches the JWKS from cairn-auth (GetJwks) and builds an
 * immutable key set. Verifiers take a reference to the current set under a read lock
 * held only for the pointer copy, so an Ed25519 verify never holds the lock and a swap
 * never waits for one. The last reference frees a retired set.
 *
 * Cache: each thread has a direct-mapped table of verified tokens keyed by SHA-256 of
 * the token. An entry records the key-set generation it was verified under; a refresh
 * that drops or changes any key bumps the generation, which invalidates every cached
 * token at once (a dropped key may mean a compromised key). A refresh that only adds
 * keys, the normal rotation, keeps the generation and the cache.
 *
 * Unknown kid: a token signed by a key we have not fetched yet asks the refresher to run
 * now, at most once per UNKNOWN_KID_REFRESH_MS so forged kids cannot make us hammer auth.
 *
 * Lifecycle: gw_authn_start runs before the loop threads verify anything and
 * gw_authn_stop after they have stopped; the configuration is read without a lock in
 * between. Memory: each verifying thread's table is CACHE_SLOTS entries of about 800
 * bytes (about 3 MiB of address space, touched only as slots fill).
 *
 * To accept another key type, extend usable_jwk() and make cn_jwt_verify handle it.
 */
#include "authn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "cairn/v1/auth.pb-c.h"
#include "err.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "util.h"

#define CACHE_SLOTS 4096 /* per thread; a power of two */
#define UNKNOWN_KID_REFRESH_MS 5000
#define FETCH_TIMEOUT_MS 2000 /* also bounds how long gw_authn_stop can wait */
#define RETRY_MIN_MS 1000     /* first retry after a failed fetch, then doubling */
#define ACCESS_TOKEN_TYP "at+jwt"

struct key_entry {
    char kid[64];
    char x[44];
    EVP_PKEY *key;
};

/* An immutable set of verification keys. */
struct keyset {
    atomic_int refs;
    uint64_t gen;
    size_t n;
    struct key_entry *keys;
};

struct cache_entry {
    uint8_t hash[32];
    uint64_t gen; /* 0 = empty: generations start at 1 */
    struct gw_principal p;
};

static struct {
    pthread_rwlock_t lock; /* guards set (the pointer, not the set) */
    struct keyset *set;
    atomic_uint_fast64_t gen; /* set->gen, readable without the lock */
    atomic_int ready;

    /* configuration, owned copies */
    char *addr, *iss, *aud;
    int64_t refresh_s, leeway_s;

    /* the refresher */
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* on CLOCK_MONOTONIC */
    atomic_bool running; /* read by verifiers to decide on refresh_soon */
    bool stopping, wanted;
    pthread_t thread;
    struct cn_rpc_client *client;
    atomic_int_fast64_t last_forced_ms; /* last refresh asked for by an unknown kid */
} g = {
    .lock = PTHREAD_RWLOCK_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .leeway_s = 30,
    .last_forced_ms = INT64_MIN / 2,
};

/* ---- metrics ---- */

static struct {
    struct cn_series *refresh_ok, *refresh_error, *refresh_empty;
    struct cn_series *cache_hit, *cache_miss;
} m;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct cn_metric *r =
        cn_metric_new(CN_METRIC_COUNTER, "cairn_authn_jwks_refresh_total",
                      "JWKS fetches from cairn-auth, by result", "result", NULL, 0);
    struct cn_metric *c = cn_metric_new(CN_METRIC_COUNTER, "cairn_authn_cache_total",
                                        "Access-token cache lookups, by result", "result", NULL, 0);
    m.refresh_ok = cn_metric_series(r, (const char *[]){"ok"});
    m.refresh_error = cn_metric_series(r, (const char *[]){"error"});
    m.refresh_empty = cn_metric_series(r, (const char *[]){"empty"});
    m.cache_hit = cn_metric_series(c, (const char *[]){"hit"});
    m.cache_miss = cn_metric_series(c, (const char *[]){"miss"});
}

/* ---- key sets ---- */

static void keyset_unref(struct keyset *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++)
        EVP_PKEY_free(s->keys[i].key);
    free(s->keys);
    free(s);
}

/* Returns a reference to the current set (NULL before the first load); the caller
 * drops it with keyset_unref. */
static struct keyset *keyset_get(void)
{
    struct keyset *s;

    pthread_rwlock_rdlock(&g.lock);
    s = g.set;
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    pthread_rwlock_unlock(&g.lock);
    return s;
}

static const struct key_entry *keyset_find(const struct keyset *s, const char *kid)
{
    for (size_t i = 0; s != NULL && i < s->n; i++)
        if (strcmp(s->keys[i].kid, kid) == 0)
            return &s->keys[i];
    return NULL;
}

/* Returns 1 when every key of old is in new with the same public key: only then may
 * tokens cached under old stay trusted. */
static int keyset_covers(const struct keyset *new, const struct keyset *old)
{
    for (size_t i = 0; i < old->n; i++) {
        const struct key_entry *e = keyset_find(new, old->keys[i].kid);
        if (e == NULL || strcmp(e->x, old->keys[i].x) != 0)
            return 0;
    }
    return 1;
}

/* Returns 1 for a JWK this gateway verifies with: an Ed25519 signing key. Other types
 * are normal in a JWKS (published for other consumers) and skipped quietly. */
static int usable_jwk(const Cairn__V1__Jwk *k)
{
    return k->kty && strcmp(k->kty, "OKP") == 0 && k->crv && strcmp(k->crv, "Ed25519") == 0 &&
           (k->alg == NULL || k->alg[0] == '\0' || strcmp(k->alg, "EdDSA") == 0) &&
           (k->use == NULL || k->use[0] == '\0' || strcmp(k->use, "sig") == 0);
}

/* Builds a set from jwks (borrowed). Malformed Ed25519 entries are logged and skipped;
 * the set may come out empty. Returns a set with one reference. */
static struct keyset *keyset_from_jwks(const Cairn__V1__Jwks *jwks)
{
    struct keyset *s = cn_calloc(1, sizeof *s);

    atomic_init(&s->refs, 1);
    s->keys = cn_calloc(jwks->n_keys ? jwks->n_keys : 1, sizeof *s->keys);
    for (size_t i = 0; i < jwks->n_keys; i++) {
        const Cairn__V1__Jwk *k = jwks->keys[i];
        struct key_entry *e = &s->keys[s->n];
        size_t kidlen = k->kid ? strlen(k->kid) : 0;

        if (!usable_jwk(k))
            continue;
        if (kidlen == 0 || kidlen >= sizeof e->kid || k->x == NULL || strlen(k->x) >= sizeof e->x ||
            keyset_find(s, k->kid) != NULL) {
            cn_log_warn("GW-JWKS-KEY-IGNORED",
                        "JWKS key %zu: missing, long or repeated kid, or bad x", i);
            continue;
        }
        e->key = cn_jwk_key_from_x(k->x);
        if (e->key == NULL) {
            cn_log_warn("GW-JWKS-KEY-IGNORED", "JWKS key %zu: x is not a 32-byte Ed25519 key", i);
            continue;
        }
        memcpy(e->kid, k->kid, kidlen + 1);
        memcpy(e->x, k->x, strlen(k->x) + 1);
        s->n++;
    }
    return s;
}

/* Makes s (taking its reference) the current set, choosing its generation. */
static void keyset_install(struct keyset *s)
{
    struct keyset *old;

    pthread_rwlock_wrlock(&g.lock);
    old = g.set;
    /* Generations only grow, even across a stop and start, so an entry cached under
     * an earlier set can never match a later one by accident. */
    if (old != NULL && keyset_covers(s, old))
        s->gen = old->gen;
    else
        s->gen = atomic_load(&g.gen) + 1;
    g.set = s;
    atomic_store(&g.gen, s->gen);
    pthread_rwlock_unlock(&g.lock);
    atomic_store(&g.ready, 1);
    keyset_unref(old);
}

/* Installs jwks directly, as a fetch would. For tests (reached by including this file). */
int gw_authn_set_keys_for_test(const Cairn__V1__Jwks *jwks);
int gw_authn_set_keys_for_test(const Cairn__V1__Jwks *jwks)
{
    keyset_install(keyset_from_jwks(jwks));
    return CN_OK;
}

/* ---- configuration ---- */

static void conf_clear(void)
{
    free(g.addr);
    free(g.iss);
    free(g.aud);
    g.addr = g.iss = g.aud = NULL;
}

static int conf_set(const struct gw_authn_conf *c)
{
    if (c == NULL || c->auth_addr == NULL || c->iss == NULL || c->aud == NULL ||
        c->auth_addr[0] == '\0' || c->iss[0] == '\0' || c->aud[0] == '\0' || c->refresh_s < 1 ||
        c->leeway_s < 0 || c->leeway_s > 86400)
        return CN_EINVAL;
    conf_clear();
    g.addr = cn_strdup(c->auth_addr);
    g.iss = cn_strdup(c->iss);
    g.aud = cn_strdup(c->aud);
    g.refresh_s = c->refresh_s;
    g.leeway_s = c->leeway_s;
    return CN_OK;
}

/* ---- the refresher ---- */

/* Fetches the JWKS once and installs it. Returns 0 or a CN_E* (logged here). */
static int fetch_jwks(void)
{
    Cairn__V1__JwksRequest req = CAIRN__V1__JWKS_REQUEST__INIT;
    Cairn__V1__Result *res = NULL;
    ProtobufCMessage *resp = NULL;
    struct keyset *s;
    int rc;

    rc = cn_rpc_client_call(g.client, "GetJwks", NULL, &req.base, &cairn__v1__jwks__descriptor,
                            FETCH_TIMEOUT_MS, &res, &resp);
    if (rc != CN_OK) {
        cn_log_warn("GW-JWKS-FETCH-FAILED", "GetJwks from %s: %s", g.addr, cn_strerror(rc));
        goto out;
    }
    if (res->code != CAIRN__V1__CODE__OK || resp == NULL) {
        cn_log_warn("GW-JWKS-FETCH-FAILED", "GetJwks from %s: %s %s", g.addr,
                    cn_code_name(res->code), res->message ? res->message : "");
        rc = CN_EUNAVAIL;
        goto out;
    }
    s = keyset_from_jwks((const Cairn__V1__Jwks *)resp);
    if (s->n == 0) {
        /* Far more likely a broken auth deployment than the revocation of every key;
         * keeping the old keys keeps the platform up. */
        cn_log_warn("GW-JWKS-EMPTY",
                    "GetJwks from %s returned no Ed25519 keys; keeping the current ones", g.addr);
        keyset_unref(s);
        cn_series_add(m.refresh_empty, 1);
        rc = CN_EPROTO;
        goto out_counted;
    }
    keyset_install(s);
out:
    cn_series_add(rc == CN_OK ? m.refresh_ok : m.refresh_error, 1);
out_counted:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (res != NULL)
        cairn__v1__result__free_unpacked(res, NULL);
    return rc;
}

static void deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void *refresher_main(void *arg)
{
    int64_t retry_ms = RETRY_MIN_MS;
    (void)arg;

    pthread_mutex_lock(&g.mu);
    while (!g.stopping) {
        struct timespec until;
        int64_t wait_ms;
        int rc;

        g.wanted = false;
        pthread_mutex_unlock(&g.mu);
        rc = fetch_jwks();
        pthread_mutex_lock(&g.mu);

        /* After a failure retry sooner (doubling up to the period): at start-up the
         * gateway has no keys until this succeeds. */
        if (rc == CN_OK) {
            retry_ms = RETRY_MIN_MS;
            wait_ms = g.refresh_s * 1000;
        } else {
            wait_ms = retry_ms < g.refresh_s * 1000 ? retry_ms : g.refresh_s * 1000;
            retry_ms *= 2;
        }
        deadline_after(&until, wait_ms);
        while (!g.stopping && !g.wanted) {
            if (pthread_cond_timedwait(&g.cv, &g.mu, &until) != 0)
                break; /* ETIMEDOUT: the periodic refresh is due */
        }
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* Asks the refresher to fetch now, unless an unknown kid already did so recently. */
static void refresh_soon(void)
{
    int_fast64_t now = cn_mono_ms(), last = atomic_load(&g.last_forced_ms);

    /* The check and the claim are lock-free, so a flood of forged kids costs the loop
     * threads one atomic each, and exactly one of them wakes the refresher. */
    if (now - last < UNKNOWN_KID_REFRESH_MS ||
        !atomic_compare_exchange_strong(&g.last_forced_ms, &last, now))
        return;
    pthread_mutex_lock(&g.mu);
    g.wanted = true;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

int gw_authn_start(const struct gw_authn_conf *conf)
{
    pthread_condattr_t ca;
    int rc;

    pthread_once(&metrics_once, metrics_init);
    if (atomic_load(&g.running))
        return CN_EINVAL;
    rc = conf_set(conf);
    if (rc != CN_OK)
        return rc;
    rc = cn_rpc_client_open(&g.client, g.addr);
    if (rc != CN_OK) {
        conf_clear();
        return CN_EINVAL;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cv, &ca);
    pthread_condattr_destroy(&ca);
    g.stopping = false;
    g.wanted = false;
    if (pthread_create(&g.thread, NULL, refresher_main, NULL) != 0) {
        pthread_cond_destroy(&g.cv);
        cn_rpc_client_close(g.client);
        g.client = NULL;
        conf_clear();
        return CN_EINVAL;
    }
    atomic_store(&g.running, true);
    return CN_OK;
}

/* Stops the refresher (waiting out a fetch in flight, at most FETCH_TIMEOUT_MS) and
 * drops the keys: after this every token is an unknown kid until the next start. */
void gw_authn_stop(void)
{
    struct keyset *old;

    if (!atomic_load(&g.running))
        return;
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    pthread_cond_destroy(&g.cv);
    cn_rpc_client_close(g.client);
    g.client = NULL;
    atomic_store(&g.running, false);

    pthread_rwlock_wrlock(&g.lock);
    old = g.set;
    g.set = NULL;
    /* A later set must not reuse a generation that cached entries still carry. */
    atomic_fetch_add(&g.gen, 1);
    pthread_rwlock_unlock(&g.lock);
    keyset_unref(old);
    atomic_store(&g.ready, 0);
    atomic_store(&g.last_forced_ms, INT64_MIN / 2);
    conf_clear();
}

int gw_authn_ready(void) { return atomic_load(&g.ready); }

/* ---- verification ---- */

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_key_init(void)
{
    /* The destructor frees a thread's table when the thread exits; the gateway's loop
     * threads live as long as the process, so in practice it lives for the process. */
    pthread_key_create(&cache_key, free);
}

/* This thread's cache table, made on first use. */
static struct cache_entry *thread_cache(void)
{
    static _Thread_local struct cache_entry *cache;

    if (cache == NULL) {
        pthread_once(&cache_once, cache_key_init);
        /* calloc'd pages are untouched until used, so an idle thread costs little. */
        cache = cn_calloc(CACHE_SLOTS, sizeof *cache);
        pthread_setspecific(cache_key, cache);
    }
    return cache;
}

static EVP_PKEY *lookup_key(const char *kid, void *arg)
{
    const struct key_entry *e = keyset_find(arg, kid);
    return e ? e->key : NULL;
}

static void principal_from_claims(struct gw_principal *p, const struct cn_jwt_claims *c)
{
    memset(p, 0, sizeof *p);
    memcpy(p->sub, c->sub, sizeof p->sub);
    memcpy(p->role, c->role, sizeof p->role);
    memcpy(p->scope, c->scope, sizeof p->scope);
    p->exp = c->exp;
    p->iat = c->iat;
}

int gw_authn_verify(const char *token, size_t len, struct gw_principal *out, const char **why)
{
    struct cn_jwt_expect expect = {g.iss, g.aud, ACCESS_TOKEN_TYP, g.leeway_s};
    struct cn_jwt_claims claims;
    struct cache_entry *cache, *e;
    struct keyset *set;
    uint8_t hash[32];
    int64_t now = cn_wall_s();
    const char *reason = "malformed";
    int rc;

    pthread_once(&metrics_once, metrics_init);
    memset(out, 0, sizeof *out);
    /* Refused before hashing, so an oversize header costs nothing. */
    if (token == NULL || len > CN_JWT_MAX_LEN) {
        rc = CN_EINVAL;
        reason = token == NULL ? "malformed" : "token too long";
        goto out;
    }
    if (EVP_Digest(token, len, hash, NULL, EVP_sha256(), NULL) != 1) {
        rc = CN_EINVAL;
        reason = "hash failed";
        goto out;
    }
    cache = thread_cache();
    e = &cache[(hash[0] | (unsigned)hash[1] << 8) & (CACHE_SLOTS - 1)];
    if (e->gen != 0 && e->gen == atomic_load(&g.gen) && e->p.exp > now - g.leeway_s &&
        memcmp(e->hash, hash, sizeof hash) == 0) {
        cn_series_add(m.cache_hit, 1);
        *out = e->p;
        rc = CN_OK;
        reason = "ok";
        goto out;
    }
    cn_series_add(m.cache_miss, 1);

    set = keyset_get();
    if (g.iss == NULL) {
        /* Not configured (never started): nothing can be trusted. */
        rc = CN_ENOTFOUND;
        reason = "not configured";
    } else {
        rc = cn_jwt_verify(token, len, lookup_key, set, &expect, now, &claims, &reason);
    }
    if (rc == CN_OK) {
        principal_from_claims(out, &claims);
        memcpy(e->hash, hash, sizeof hash);
        e->gen = set->gen;
        e->p = *out;
    } else if (rc == CN_ENOTFOUND && atomic_load(&g.running)) {
        refresh_soon();
    }
    keyset_unref(set);
out:
    if (why != NULL)
        *why = reason;
    return rc;
}
