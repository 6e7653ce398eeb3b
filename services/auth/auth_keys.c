/* auth_keys.c — the Ed25519 keys that sign access tokens, what JWKS publishes, how keys
 * rotate while replicas run, and `cairn-auth rotate-keys`.
 *
 * Keys come from one of two places, chosen at start-up:
 *   - CAIRN_AUTH_KEY_FILE (a PEM private key): that key alone signs and is published;
 *     the operator owns rotation (rotate-keys refuses, exit 2).
 *   - Postgres (auth.signing_keys): the first replica to start makes a key; a
 *     transaction-level advisory lock makes replicas that start together agree on it
 *     (auth_db_keys_ensure). Each key has activates_at (when it may start signing) and
 *     retired_at (when it stops). The signing key is the one activated last among those
 *     activated and not retired; a key is published while it is not retired, or retired
 *     less than access TTL + CAIRN_AUTH_KEY_GRACE_S ago, i.e. until every token it
 *     signed has expired. Both are decided at the moment of signing or answering JWKS,
 *     from the times in the snapshot, so a switch happens on time and not up to one
 *     reload late.
 *
 * Rotation: rotate-keys (under the same advisory lock) stores a new key with
 * activates_at = now + CAIRN_AUTH_KEY_PUBLISH_S and sets retired_at = that same time on the
 * keys not yet retired. So the new key is in every JWKS answer from the next reload on
 * (CAIRN_AUTH_KEY_RELOAD_S), gateways fetch it within their refresh period, and only then
 * does it sign; the old key keeps verifying until its last token has expired.
 *
 * Snapshots: the keys a replica uses are one immutable struct auth_keyset, shared by
 * reference. Workers take a reference (auth_keys_get, a pointer copy under the mutex) for
 * as long as they sign or build a JWKS answer; the reload thread builds a new snapshot
 * from Postgres every CAIRN_AUTH_KEY_RELOAD_S, swaps it in under the mutex when anything
 * changed, and drops its reference to the old one. The last reference frees a snapshot and
 * its EVP_PKEYs (which a newer snapshot may share, by EVP_PKEY_up_ref), so a key is never
 * freed while a worker signs with it. The same reload deletes rows that are no longer
 * published. The kid is the RFC 7638 thumbprint.
 *
 * To add a key source: build a struct auth_keyset in auth_keys_load and leave
 * auth_keys_start a no-op for it, as for the file.
 */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "buf.h"
#include "err.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

static struct {
    pthread_mutex_t mu; /* guards cur (the pointer, not the snapshot) and stop */
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC: stop */
    struct auth_keyset *cur;
    bool from_file, stop, started;
    pthread_t thread;
    /* the reload thread's own */
    struct cn_pg *pg;
    int64_t period_ms, keep_s;
    bool failing; /* the last reload failed: log transitions, not every period */
    struct cn_series *reload_ok, *reload_failed, *published;
} ks = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* --- snapshots --- */

static struct auth_keyset *set_new(void)
{
    struct auth_keyset *s = cn_calloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    return s;
}

static void set_free(struct auth_keyset *s)
{
    for (size_t i = 0; i < s->n; i++)
        EVP_PKEY_free(s->keys[i].pkey);
    free(s);
}

struct auth_keyset *auth_keys_get(void)
{
    struct auth_keyset *s;

    pthread_mutex_lock(&ks.mu);
    s = ks.cur;
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&ks.mu);
    return s;
}

void auth_keys_put(struct auth_keyset *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        set_free(s);
}

/* Makes next the current snapshot (taking its reference) and drops the old one's. */
static void set_install(struct auth_keyset *next)
{
    struct auth_keyset *old;

    pthread_mutex_lock(&ks.mu);
    old = ks.cur;
    ks.cur = next;
    pthread_mutex_unlock(&ks.mu);
    auth_keys_put(old);
}

const struct auth_key *auth_keys_signing(const struct auth_keyset *s, int64_t now_ms)
{
    const struct auth_key *best = NULL;

    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        const struct auth_key *k = &s->keys[i];
        if (k->activates_at_ms > now_ms)
            continue; /* published, not signing yet */
        if (k->retired_at_ms != 0 && k->retired_at_ms <= now_ms)
            continue; /* its successor signs from retired_at */
        if (best == NULL || k->activates_at_ms > best->activates_at_ms)
            best = k;
    }
    return best;
}

bool auth_key_published(const struct auth_key *k, int64_t now_ms, int64_t keep_ms)
{
    return k->retired_at_ms == 0 || k->retired_at_ms + keep_ms > now_ms;
}

/* --- building keys --- */

/* Fills k (kid, x) from pkey, taking ownership of pkey on success. */
static int key_adopt(EVP_PKEY *pkey, struct auth_key *k)
{
    if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519)
        return CN_EINVAL;
    if (cn_jwk_thumbprint(pkey, k->kid) != CN_OK || cn_jwk_x(pkey, k->x) != CN_OK)
        return CN_ECRYPTO;
    k->pkey = pkey;
    return CN_OK;
}

static int load_file(const char *path)
{
    FILE *f = fopen(path, "r");
    struct auth_keyset *s;
    EVP_PKEY *pkey;
    int rc;

    if (f == NULL) {
        cn_log_error("AUTH-KEY-FILE", "cannot open CAIRN_AUTH_KEY_FILE %s: %s", path,
                     strerror(errno));
        return CN_EIO;
    }
    pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (pkey == NULL) {
        unsigned long e = ERR_get_error();
        cn_log_error("AUTH-KEY-FILE", "CAIRN_AUTH_KEY_FILE %s is not a PEM private key: %s", path,
                     e ? ERR_reason_error_string(e) : "no key found");
        ERR_clear_error();
        return CN_EINVAL;
    }
    s = set_new();
    rc = key_adopt(pkey, &s->keys[0]);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY-FILE", "CAIRN_AUTH_KEY_FILE %s: %s", path,
                     rc == CN_EINVAL ? "not an Ed25519 key" : "cannot compute its JWK");
        EVP_PKEY_free(pkey);
        set_free(s);
        return rc;
    }
    s->n = 1; /* activates 0, retired 0: signs and is published for ever */
    set_install(s);
    ks.from_file = true;
    cn_log_info("AUTH-KEY", "signing with key %s from CAIRN_AUTH_KEY_FILE", s->keys[0].kid);
    return CN_OK;
}

/* Makes a new key as it would be stored: raw private bytes and thumbprint. */
static int key_generate(struct auth_db_key *out)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t len = sizeof out->priv;
    int rc = CN_ECRYPTO;

    memset(out, 0, sizeof *out);
    if (pkey != NULL && EVP_PKEY_get_raw_private_key(pkey, out->priv, &len) == 1 &&
        len == sizeof out->priv && cn_jwk_thumbprint(pkey, out->kid) == CN_OK)
        rc = CN_OK;
    EVP_PKEY_free(pkey);
    return rc;
}

/* The key of prev with this kid, or NULL. */
static const struct auth_key *find_kid(const struct auth_keyset *prev, const char *kid)
{
    for (size_t i = 0; prev != NULL && i < prev->n; i++)
        if (strcmp(prev->keys[i].kid, kid) == 0)
            return &prev->keys[i];
    return NULL;
}

/* Builds a snapshot of the n stored keys into *out, sharing the EVP_PKEYs of prev (may be
 * NULL) for kids it already has. 0, or CN_ECRYPTO for a stored key that is unusable
 * (logged; nothing is built). */
static int set_from_rows(const struct auth_db_key *rows, size_t n, const struct auth_keyset *prev,
                         struct auth_keyset **out)
{
    struct auth_keyset *s = set_new();

    *out = NULL;
    for (size_t i = 0; i < n && i < AUTH_KEYS_MAX; i++) {
        const struct auth_key *have = find_kid(prev, rows[i].kid);
        struct auth_key *k = &s->keys[s->n];

        if (have != NULL && EVP_PKEY_up_ref(have->pkey) == 1) {
            *k = *have;
        } else {
            EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, rows[i].priv,
                                                          sizeof rows[i].priv);
            if (pkey == NULL || key_adopt(pkey, k) != CN_OK) {
                EVP_PKEY_free(pkey);
                cn_log_error("AUTH-KEY", "stored signing key %s is unusable", rows[i].kid);
                set_free(s);
                return CN_ECRYPTO;
            }
            if (strcmp(k->kid, rows[i].kid) != 0)
                cn_log_warn("AUTH-KEY", "stored kid %s does not match its key; publishing %s",
                            rows[i].kid, k->kid);
        }
        k->activates_at_ms = rows[i].activates_at_ms;
        k->retired_at_ms = rows[i].retired_at_ms;
        s->n++;
    }
    *out = s;
    return CN_OK;
}

/* true if s holds exactly these rows (kids and times), so a reload changes nothing. */
static bool set_same(const struct auth_keyset *s, const struct auth_db_key *rows, size_t n)
{
    if (s == NULL || s->n != n)
        return false;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i].kid, rows[i].kid) != 0 ||
            s->keys[i].activates_at_ms != rows[i].activates_at_ms ||
            s->keys[i].retired_at_ms != rows[i].retired_at_ms)
            return false;
    return true;
}

static int load_db(struct cn_pg *pg, int64_t keep_s)
{
    struct auth_db_key fresh, stored[AUTH_KEYS_MAX];
    struct auth_keyset *s = NULL;
    const struct auth_key *signing;
    size_t n = 0;
    int rc;

    rc = key_generate(&fresh);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY", "cannot generate an Ed25519 key");
        return rc;
    }
    rc = auth_db_keys_ensure(pg, &fresh, keep_s, stored, AUTH_KEYS_MAX, &n);
    OPENSSL_cleanse(&fresh, sizeof fresh);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY", "cannot load signing keys from the database (%s): %s %s",
                     cn_strerror(rc), cn_pg_sqlstate(pg), cn_pg_errmsg(pg));
        return rc;
    }
    rc = set_from_rows(stored, n, NULL, &s);
    OPENSSL_cleanse(stored, sizeof stored);
    if (rc != CN_OK)
        return rc;
    set_install(s);
    signing = auth_keys_signing(s, cn_wall_ms());
    cn_log_info("AUTH-KEY", "signing with key %s (%zu key(s) published)",
                signing != NULL ? signing->kid : "(none yet)", s->n);
    return CN_OK;
}

int auth_keys_load(struct cn_pg *pg, const char *key_file, int64_t keep_s)
{
    auth_keys_free();
    ks.from_file = false;
    if (key_file != NULL && *key_file != '\0')
        return load_file(key_file);
    return load_db(pg, keep_s);
}

void auth_keys_free(void) { set_install(NULL); }

/* --- the reload thread --- */

/* Reads the keys again and swaps in a new snapshot if anything changed. Runs on the
 * reload thread only, the one writer of ks.cur after init. */
static void reload(void)
{
    struct auth_db_key rows[AUTH_KEYS_MAX];
    struct auth_keyset *cur, *next = NULL;
    const struct auth_key *signing;
    size_t n = 0;
    long deleted = 0;
    int rc;

    rc = auth_db_keys_load(ks.pg, ks.keep_s, rows, AUTH_KEYS_MAX, &n, &deleted);
    if (rc == CN_OK && n == 0)
        rc = CN_ENOTFOUND;
    if (rc != CN_OK) {
        cn_series_add(ks.reload_failed, 1);
        if (!ks.failing && rc == CN_ENOTFOUND)
            cn_log_warn("AUTH-KEY-RELOAD-FAIL",
                        "the database holds no published signing key; keeping the ones loaded");
        else if (!ks.failing)
            cn_log_warn("AUTH-KEY-RELOAD-FAIL",
                        "cannot reload signing keys (%s: %s); keeping the ones loaded",
                        cn_strerror(rc), cn_pg_errmsg(ks.pg));
        ks.failing = true;
        OPENSSL_cleanse(rows, sizeof rows);
        return;
    }
    if (ks.failing)
        cn_log_info("AUTH-KEY-RELOAD", "signing keys reload again");
    ks.failing = false;
    cn_series_add(ks.reload_ok, 1);
    if (deleted > 0)
        cn_log_info("AUTH-KEY", "deleted %ld signing key(s) no longer published", deleted);

    cur = auth_keys_get();
    if (!set_same(cur, rows, n))
        rc = set_from_rows(rows, n, cur, &next);
    auth_keys_put(cur);
    OPENSSL_cleanse(rows, sizeof rows);
    if (rc != CN_OK) {
        cn_series_add(ks.reload_failed, 1);
        return;
    }
    if (next == NULL)
        return; /* unchanged */
    set_install(next);
    cn_series_set(ks.published, (double)next->n);
    /* next stays alive: only this thread replaces it. */
    signing = auth_keys_signing(next, cn_wall_ms());
    cn_log_info("AUTH-KEY", "signing keys reloaded: %zu published, signing now with %s", next->n,
                signing != NULL ? signing->kid : "(none)");
}

static void *run(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ks.mu);
    while (!ks.stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ks.period_ms / 1000;
        until.tv_nsec += (long)(ks.period_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!ks.stop)
            if (pthread_cond_timedwait(&ks.cv, &ks.mu, &until) != 0)
                break; /* the period is over */
        if (ks.stop)
            break;
        pthread_mutex_unlock(&ks.mu);
        reload();
        pthread_mutex_lock(&ks.mu);
    }
    pthread_mutex_unlock(&ks.mu);
    return NULL;
}

int auth_keys_start(const char *dsn, int64_t reload_s, int64_t keep_s)
{
    struct cn_metric *m;
    pthread_condattr_t attr;
    struct auth_keyset *s;

    if (ks.from_file || ks.started)
        return CN_OK;
    m = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_key_reloads_total",
                      "Reloads of the signing keys from the database, by result", "result", NULL,
                      0);
    ks.reload_ok = cn_metric_series(m, (const char *[]){"ok"});
    ks.reload_failed = cn_metric_series(m, (const char *[]){"failed"});
    m = cn_metric_new(CN_METRIC_GAUGE, "cairn_auth_signing_keys",
                      "Signing keys this replica holds (published or about to be)", NULL, NULL, 0);
    ks.published = cn_metric_series(m, NULL);
    s = auth_keys_get();
    cn_series_set(ks.published, s != NULL ? (double)s->n : 0);
    auth_keys_put(s);

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ks.cv, &attr);
    pthread_condattr_destroy(&attr);
    ks.stop = false;
    ks.failing = false;
    ks.period_ms = reload_s * 1000;
    ks.keep_s = keep_s;
    ks.pg = cn_pg_new(dsn);
    if (pthread_create(&ks.thread, NULL, run, NULL) != 0) {
        cn_log_error("AUTH-KEY", "cannot start the signing-key reload thread");
        pthread_cond_destroy(&ks.cv);
        cn_pg_free(ks.pg);
        ks.pg = NULL;
        return CN_EIO;
    }
    ks.started = true;
    return CN_OK;
}

void auth_keys_stop(void)
{
    if (!ks.started)
        return;
    pthread_mutex_lock(&ks.mu);
    ks.stop = true;
    pthread_cond_signal(&ks.cv);
    pthread_mutex_unlock(&ks.mu);
    pthread_join(ks.thread, NULL);
    pthread_cond_destroy(&ks.cv);
    cn_pg_free(ks.pg);
    ks.pg = NULL;
    ks.started = false;
}

/* --- cairn-auth rotate-keys --- */

/* Unix ms as "2025-01-31T12:00:00.000Z" into out (cap >= 32). */
static void format_ms(int64_t ms, char *out, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char day[24];

    gmtime_r(&secs, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

int auth_keys_rotate_command(int argc, char **argv, const char *dsn, const char *key_file,
                             int64_t publish_s)
{
    struct auth_db_key fresh;
    struct auth_rotation r;
    struct cn_buf olds = {0};
    char when[32], detail[512];
    struct cn_pg *pg = NULL;
    int rc, code = 1;

    (void)argv;
    memset(&r, 0, sizeof r);
    if (argc != 1) {
        fprintf(stderr, "usage: cairn-auth rotate-keys\n"
                        "  publishes a new signing key now; it signs from CAIRN_AUTH_KEY_PUBLISH_S "
                        "later, when the current key retires\n");
        return 2;
    }
    if (key_file != NULL && key_file[0] != '\0') {
        fprintf(stderr,
                "cairn-auth rotate-keys: CAIRN_AUTH_KEY_FILE is set, so that file is the signing "
                "key and there is nothing in the database to rotate; replace the file and "
                "restart instead\n");
        return 2;
    }
    if (key_generate(&fresh) != CN_OK) {
        fprintf(stderr, "cairn-auth rotate-keys: cannot generate an Ed25519 key\n");
        return 1;
    }
    pg = cn_pg_new(dsn);
    rc = auth_db_keys_rotate(pg, &fresh, publish_s, &r);
    if (rc != CN_OK) {
        fprintf(stderr, "cairn-auth rotate-keys: database: %s %s\n", cn_strerror(rc),
                rc == CN_EEXIST ? "(the new key's id is taken; run it again)" : cn_pg_errmsg(pg));
        goto out;
    }
    format_ms(r.activates_at_ms, when, sizeof when);
    for (size_t i = 0; i < r.nretired && i < AUTH_KEYS_MAX; i++)
        cn_buf_printf(&olds, "%s%s", i > 0 ? ", " : "", r.retired[i]);
    if (r.nretired > AUTH_KEYS_MAX)
        cn_buf_printf(&olds, " and %zu more", r.nretired - AUTH_KEYS_MAX);

    if (r.immediate)
        snprintf(detail, sizeof detail, "key %s publishes and signs now (no key was signing)",
                 fresh.kid);
    else
        snprintf(detail, sizeof detail, "next key %s publishes now, signs from %s; %s %s %s then",
                 fresh.kid, when, r.nretired == 1 ? "key" : "keys",
                 olds.len > 0 ? olds.data : "(none)", r.nretired == 1 ? "retires" : "retire");
    printf("%s\n", detail);
    fflush(stdout);
    cn_log_info("AUTH-KEY-ROTATED", "%s", detail);
    if (auth_db_audit_insert(pg, "signing_key.rotated", NULL, NULL, NULL, NULL, detail) != CN_OK)
        cn_log_error("AUTH-AUDIT-FAILED", "cannot record signing_key.rotated: %s",
                     cn_pg_errmsg(pg));
    code = 0;
out:
    OPENSSL_cleanse(&fresh, sizeof fresh);
    cn_buf_free(&olds);
    cn_pg_free(pg);
    return code;
}
