/* apikeys.c — the shared cache of resolved API keys, the revoked-users list, and the
 * revocation subscriber (apikeys.h).
 *
 * The cache is direct-mapped (a key id hashes to one slot; a newcomer replaces the old
 * entry), bounded at CACHE_SLOTS entries, under one rwlock: lookups share it, stores and
 * revocations take it briefly. Revoked users are a small array scanned only while it is
 * non-empty; entries leave it when every token issued before the revocation has expired.
 */
#include "apikeys.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define CACHE_SLOTS 16384
#define MAX_REVOKED_USERS 4096

struct entry {
    char id[CN_APIKEY_ID_LEN + 1];   /* "" = empty slot */
    char hash[65];
    struct gw_principal p;
    int64_t cached_until_ms;         /* monotonic */
};

struct revoked_user {
    char sub[128];
    int64_t at_s;                    /* when: tokens issued at or before are refused */
    int64_t until_s;                 /* wall clock: such tokens have all expired by then */
};

static struct entry *cache;
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int64_t cache_ttl_ms = 10000;
static int64_t hold = 3600;
static struct revoked_user revoked[MAX_REVOKED_USERS];
static atomic_int nrevoked;
static atomic_uint revoke_epoch;

static nng_socket sub;
static pthread_t sub_thread;
static bool sub_running;
static struct cn_metric *m_cache, *m_events;

static uint32_t slot_of(const char *id)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % CACHE_SLOTS;
}

int gw_apikeys_lookup(const struct cn_apikey *k, struct gw_principal *p)
{
    char hash[65];
    cn_apikey_hash(k, hash);
    int hit = 0;
    pthread_rwlock_rdlock(&lock);
    struct entry *e = &cache[slot_of(k->id)];
    if (strcmp(e->id, k->id) == 0 && CRYPTO_memcmp(e->hash, hash, 64) == 0 &&
        e->cached_until_ms > cn_mono_ms() && (e->p.exp == 0 || e->p.exp > cn_wall_s())) {
        *p = e->p;
        hit = 1;
    }
    pthread_rwlock_unlock(&lock);
    cn_series_add(cn_metric_series(m_cache, (const char *[]){hit ? "hit" : "miss"}), 1);
    return hit;
}

unsigned gw_apikeys_epoch(void) { return atomic_load(&revoke_epoch); }

void gw_apikeys_store(const struct cn_apikey *k, const struct gw_principal *p, unsigned epoch)
{
    pthread_rwlock_wrlock(&lock);
    /* Checked under the lock that revocations take, so none can slip in between. */
    if (atomic_load(&revoke_epoch) != epoch) {
        pthread_rwlock_unlock(&lock);
        return;
    }
    struct entry *e = &cache[slot_of(k->id)];
    snprintf(e->id, sizeof e->id, "%s", k->id);
    cn_apikey_hash(k, e->hash);
    e->p = *p;
    e->cached_until_ms = cn_mono_ms() + cache_ttl_ms;
    pthread_rwlock_unlock(&lock);
}

void gw_apikeys_revoke_key(const char *key_id)
{
    pthread_rwlock_wrlock(&lock);
    atomic_fetch_add(&revoke_epoch, 1);
    struct entry *e = &cache[slot_of(key_id)];
    if (strcmp(e->id, key_id) == 0)
        e->id[0] = '\0';
    pthread_rwlock_unlock(&lock);
}

void gw_apikeys_revoke_user(const char *subject)
{
    int64_t now = cn_wall_s();
    pthread_rwlock_wrlock(&lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (cache[i].id[0] && strcmp(cache[i].p.sub, subject) == 0)
            cache[i].id[0] = '\0';
    atomic_fetch_add(&revoke_epoch, 1);
    /* The user's own entry if there is one; else an expired one; else append; when full,
     * the oldest goes. One entry per user, so enable-user can lift it. */
    int n = atomic_load(&nrevoked), at = -1, oldest = 0;
    for (int i = 0; i < n && at < 0; i++)
        if (strcmp(revoked[i].sub, subject) == 0)
            at = i;
    for (int i = 0; i < n && at < 0; i++) {
        if (revoked[i].until_s < now)
            at = i;
        else if (revoked[i].until_s < revoked[oldest].until_s)
            oldest = i;
    }
    if (at < 0)
        at = n < MAX_REVOKED_USERS ? n : oldest;
    snprintf(revoked[at].sub, sizeof revoked[at].sub, "%s", subject);
    revoked[at].at_s = now;
    revoked[at].until_s = now + hold;
    if (at == n)
        atomic_store(&nrevoked, n + 1);
    pthread_rwlock_unlock(&lock);
}

void gw_apikeys_enable_user(const char *subject)
{
    pthread_rwlock_wrlock(&lock);
    int n = atomic_load(&nrevoked);
    for (int i = 0; i < n; i++) {
        if (strcmp(revoked[i].sub, subject) == 0) {
            revoked[i] = revoked[n - 1];
            atomic_store(&nrevoked, n - 1);
            break;
        }
    }
    pthread_rwlock_unlock(&lock);
}

int gw_user_revoked(const char *subject, int64_t iat)
{
    if (atomic_load(&nrevoked) == 0)
        return 0;
    int64_t now = cn_wall_s();
    int found = 0;
    pthread_rwlock_rdlock(&lock);
    int n = atomic_load(&nrevoked);
    for (int i = 0; i < n && !found; i++)
        found = revoked[i].until_s >= now && iat <= revoked[i].at_s && strcmp(revoked[i].sub, subject) == 0;
    pthread_rwlock_unlock(&lock);
    return found;
}

int gw_apikeys_apply_event(const char *msg, size_t len)
{
    char buf[192];
    if (len == 0 || len >= sizeof buf)
        return CN_EINVAL;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    const char *kind, *arg;
    char *sp = strchr(buf, ' ');
    if (sp == NULL || sp[1] == '\0')
        return CN_EINVAL;
    *sp = '\0';
    kind = buf;
    arg = sp + 1;
    for (const char *c = arg; *c; c++)
        if (*c <= ' ' || *c > '~')
            return CN_EINVAL;
    if (strcmp(kind, "revoke-key") == 0)
        gw_apikeys_revoke_key(arg);
    else if (strcmp(kind, "revoke-user") == 0)
        gw_apikeys_revoke_user(arg);
    else if (strcmp(kind, "enable-user") == 0)
        gw_apikeys_enable_user(arg);
    else
        return CN_EINVAL;
    cn_series_add(cn_metric_series(m_events, (const char *[]){kind}), 1);
    cn_log(CN_LOG_INFO, "GW-REVOCATION", NULL, "%s %s", kind, arg);
    return CN_OK;
}

static void *sub_main(void *arg)
{
    (void)arg;
    for (;;) {
        char *msg = NULL;
        size_t len = 0;
        int rv = nng_recv(sub, &msg, &len, NNG_FLAG_ALLOC);
        if (rv == NNG_ECLOSED)
            return NULL;
        if (rv != 0)
            continue;
        if (gw_apikeys_apply_event(msg, len) != CN_OK)
            cn_log(CN_LOG_WARN, "GW-BAD-EVENT", NULL, "ignored a malformed revocation event (%zu bytes)", len);
        nng_free(msg, len);
    }
}

int gw_apikeys_start(const char *events_addr, int64_t ttl_ms, int64_t hold_s)
{
    cache = cn_calloc(CACHE_SLOTS, sizeof *cache);
    cache_ttl_ms = ttl_ms;
    hold = hold_s;
    m_cache = cn_metric_new(CN_METRIC_COUNTER, "cairn_apikey_cache_total",
                            "API key lookups at the gateway, by result", "result", NULL, 0);
    m_events = cn_metric_new(CN_METRIC_COUNTER, "cairn_revocation_events_total",
                             "Revocation events received from auth, by kind", "kind", NULL, 0);
    if (events_addr == NULL || *events_addr == '\0')
        return CN_OK;
    if (nng_sub0_open(&sub) != 0)
        return CN_EIO;
    nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0);
    nng_socket_set_size(sub, NNG_OPT_RECVMAXSZ, 4096);
    nng_socket_set_ms(sub, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(sub, NNG_OPT_RECONNMAXT, 1000);
    const char *p = events_addr;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n) {
            char *a = cn_strndup(p, n);
            int rv = nng_dial(sub, a, NULL, NNG_FLAG_NONBLOCK);
            free(a);
            if (rv != 0) {
                nng_close(sub);
                return CN_EINVAL;
            }
        }
        p = comma ? comma + 1 : NULL;
    }
    sub_running = true;
    pthread_create(&sub_thread, NULL, sub_main, NULL);
    return CN_OK;
}

void gw_apikeys_stop(void)
{
    if (sub_running) {
        nng_close(sub);
        pthread_join(sub_thread, NULL);
        sub_running = false;
    }
    free(cache);
    cache = NULL;
}
