/* inference_cache.c — loaded model versions in an LRU bounded by bytes, reference-counted,
 * with single-flight loading (see inference_cache.h for the contract).
 *
 * One mutex guards a chained hash keyed by (model, version) and an LRU list of the loaded
 * entries the hash holds. Nothing slow runs under it: a miss inserts a placeholder in the
 * loading state and calls the loader unlocked; gets of the same key find the placeholder,
 * take a reference and wait on the condition variable until the load has succeeded or
 * failed, so a model is read from Postgres and parsed once however many requests want it.
 * A failed placeholder leaves the hash at once (failures are not cached) and lives only
 * until its last waiter has read the error.
 *
 * An entry is freed only when nobody holds it and it has left the hash — evicted (least
 * recently used first, only unreferenced entries, while the held bytes exceed the bound:
 * after each load and at each last put) or forgotten (a version deleted, an alias moved).
 * So a booster in use is never freed under a request. Unloading (XGBoosterFree and the
 * drift reference) happens after the lock is dropped.
 * To add a metric: register it in metrics_init, update it where the state changes.
 */
#include "inference_cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

enum { LOADING, READY, FAILED };

struct infer_cache {
    pthread_mutex_t lock;
    pthread_cond_t done; /* broadcast when a load finishes */
    size_t max_bytes;
    infer_load_fn load;
    infer_unload_fn unload;
    struct infer_entry **buckets;
    size_t nbuckets;                 /* a power of two */
    size_t nmapped;                  /* entries in the hash, any state */
    size_t count, bytes;             /* loaded entries in the hash, and their bytes */
    struct infer_entry *head, *tail; /* LRU: head is the most recently used */
};

static struct {
    pthread_once_t once;
    struct cn_series *loads_ok, *loads_error, *load_seconds, *evictions, *bytes, *entries;
} m = {.once = PTHREAD_ONCE_INIT};

static void metrics_init(void)
{
    struct cn_metric *loads =
        cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_model_loads_total",
                      "Model versions loaded into the booster cache, by result", "result", NULL, 0);
    m.loads_ok = cn_metric_series(loads, (const char *[]){"ok"});
    m.loads_error = cn_metric_series(loads, (const char *[]){"error"});
    m.load_seconds = cn_metric_series(
        cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_inference_model_load_seconds",
                      "Time to load a model version (database and XGBoost)", NULL, NULL, 0),
        NULL);
    m.evictions = cn_metric_series(
        cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_model_evictions_total",
                      "Loaded versions evicted to keep the cache within its bytes", NULL, NULL, 0),
        NULL);
    m.bytes = cn_metric_series(cn_metric_new(CN_METRIC_GAUGE, "cairn_inference_cache_bytes",
                                             "Bytes of loaded model versions held by the cache",
                                             NULL, NULL, 0),
                               NULL);
    m.entries =
        cn_metric_series(cn_metric_new(CN_METRIC_GAUGE, "cairn_inference_cache_entries",
                                       "Loaded model versions held by the cache", NULL, NULL, 0),
                         NULL);
}

/* ------------------------------------------------------------------ hash and list */

static size_t hash_key(const char *model, int version)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)model; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h = (h ^ (uint32_t)version) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32));
}

static struct infer_entry **slot(struct infer_cache *c, const char *model, int version)
{
    return &c->buckets[hash_key(model, version) & (c->nbuckets - 1)];
}

static struct infer_entry *find(struct infer_cache *c, const char *model, int version)
{
    for (struct infer_entry *e = *slot(c, model, version); e != NULL; e = e->hnext)
        if (e->version == version && strcmp(e->model, model) == 0)
            return e;
    return NULL;
}

static void grow(struct infer_cache *c)
{
    size_t old_n = c->nbuckets;
    struct infer_entry **old = c->buckets;
    c->nbuckets = old_n * 2;
    c->buckets = cn_calloc(c->nbuckets, sizeof *c->buckets);
    for (size_t i = 0; i < old_n; i++)
        for (struct infer_entry *e = old[i], *next; e != NULL; e = next) {
            next = e->hnext;
            struct infer_entry **s = slot(c, e->model, e->version);
            e->hnext = *s;
            *s = e;
        }
    free(old);
}

static void map(struct infer_cache *c, struct infer_entry *e)
{
    if (c->nmapped >= c->nbuckets)
        grow(c);
    struct infer_entry **s = slot(c, e->model, e->version);
    e->hnext = *s;
    *s = e;
    e->mapped = true;
    c->nmapped++;
}

static void lru_unlink(struct infer_cache *c, struct infer_entry *e)
{
    if (e->lprev != NULL)
        e->lprev->lnext = e->lnext;
    else
        c->head = e->lnext;
    if (e->lnext != NULL)
        e->lnext->lprev = e->lprev;
    else
        c->tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(struct infer_cache *c, struct infer_entry *e)
{
    e->lprev = NULL;
    e->lnext = c->head;
    if (c->head != NULL)
        c->head->lprev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

/* Takes e out of the hash (and, if loaded, the LRU and the accounting). */
static void unmap(struct infer_cache *c, struct infer_entry *e)
{
    struct infer_entry **p = slot(c, e->model, e->version);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    e->hnext = NULL;
    e->mapped = false;
    c->nmapped--;
    if (e->state == READY) {
        lru_unlink(c, e);
        c->count--;
        c->bytes -= e->v.bytes;
    }
}

static void publish(const struct infer_cache *c)
{
    cn_series_set(m.bytes, (double)c->bytes);
    cn_series_set(m.entries, (double)c->count);
}

/* Evicts unreferenced entries, least recently used first, while over the bound; the
 * victims are chained on *victims (through hnext) to be freed without the lock. */
static void evict(struct infer_cache *c, struct infer_entry **victims)
{
    struct infer_entry *e = c->tail;
    while (e != NULL && c->bytes > c->max_bytes) {
        struct infer_entry *prev = e->lprev;
        if (e->refs == 0) {
            cn_log_info("INFER-MODEL-EVICTED", "model %s version %d evicted (%zu bytes)", e->model,
                        e->version, e->v.bytes);
            unmap(c, e);
            e->hnext = *victims;
            *victims = e;
            cn_series_add(m.evictions, 1);
        }
        e = prev;
    }
}

/* Unloads and frees a chain of entries that nobody holds and the hash no longer has. */
static void free_entries(struct infer_cache *c, struct infer_entry *e)
{
    while (e != NULL) {
        struct infer_entry *next = e->hnext;
        if (e->state == READY)
            c->unload(&e->v);
        free((char *)e->model);
        free(e->why);
        free(e);
        e = next;
    }
}

/* ------------------------------------------------------------------ API */

struct infer_cache *infer_cache_new(size_t max_bytes, infer_load_fn load, infer_unload_fn unload)
{
    pthread_once(&m.once, metrics_init);
    struct infer_cache *c = cn_calloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->done, NULL);
    c->max_bytes = max_bytes;
    c->load = load;
    c->unload = unload;
    c->nbuckets = 64;
    c->buckets = cn_calloc(c->nbuckets, sizeof *c->buckets);
    return c;
}

void infer_cache_free(struct infer_cache *c)
{
    if (c == NULL)
        return;
    struct infer_entry *all = NULL;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (struct infer_entry *e = c->buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            e->hnext = all;
            all = e;
        }
    free_entries(c, all);
    c->count = c->bytes = 0;
    publish(c);
    free(c->buckets);
    pthread_cond_destroy(&c->done);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int infer_cache_get(struct infer_cache *c, const char *model, int version, void *arg,
                    struct infer_entry **out, char *why, size_t whylen)
{
    int rc;
    struct infer_entry *victims = NULL;
    *out = NULL;
    pthread_mutex_lock(&c->lock);
    struct infer_entry *e = find(c, model, version);
    if (e != NULL) {
        e->refs++;
        while (e->state == LOADING)
            pthread_cond_wait(&c->done, &c->lock);
        if (e->state == READY) {
            if (e->mapped) { /* most recently used */
                lru_unlink(c, e);
                lru_push(c, e);
            }
            pthread_mutex_unlock(&c->lock);
            *out = e;
            return CN_OK;
        }
        /* The load we waited for failed: its answer is ours too. */
        rc = e->err;
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s", e->why ? e->why : "");
        if (--e->refs == 0)
            victims = e;
        pthread_mutex_unlock(&c->lock);
        free_entries(c, victims);
        return rc;
    }

    e = cn_calloc(1, sizeof *e);
    e->model = cn_strdup(model);
    e->version = version;
    e->state = LOADING;
    e->refs = 1;
    map(c, e);
    pthread_mutex_unlock(&c->lock);

    char lwhy[512] = "";
    struct infer_loaded v = {0};
    int64_t t0 = cn_mono_us();
    rc = c->load(model, version, arg, &v, lwhy, sizeof lwhy);
    double secs = (double)(cn_mono_us() - t0) / 1e6;
    cn_series_observe(m.load_seconds, secs);
    cn_series_add(rc == 0 ? m.loads_ok : m.loads_error, 1);
    if (rc == 0)
        cn_log_info("INFER-MODEL-LOADED", "model %s version %d loaded in %.1f ms (%zu bytes)",
                    model, version, secs * 1e3, v.bytes);

    pthread_mutex_lock(&c->lock);
    if (rc == 0) {
        e->v = v;
        e->state = READY;
        if (e->mapped) { /* not forgotten while loading */
            lru_push(c, e);
            c->count++;
            c->bytes += v.bytes;
            evict(c, &victims);
        }
    } else {
        e->state = FAILED;
        e->err = rc;
        e->why = cn_strdup(lwhy);
        if (e->mapped)
            unmap(c, e);
        if (--e->refs == 0) {
            e->hnext = victims;
            victims = e;
        }
    }
    publish(c);
    pthread_cond_broadcast(&c->done);
    pthread_mutex_unlock(&c->lock);
    free_entries(c, victims);
    if (rc != 0) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s", lwhy);
        return rc;
    }
    *out = e;
    return CN_OK;
}

void infer_cache_put(struct infer_cache *c, struct infer_entry *e)
{
    struct infer_entry *victims = NULL;
    if (e == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    if (--e->refs == 0) {
        if (!e->mapped) /* forgotten while in use: ours was the last reference */
            victims = e;
        else if (c->bytes > c->max_bytes)
            evict(c, &victims);
        publish(c);
    }
    pthread_mutex_unlock(&c->lock);
    free_entries(c, victims);
}

void infer_cache_forget(struct infer_cache *c, const char *model, int version)
{
    struct infer_entry *victims = NULL;
    pthread_mutex_lock(&c->lock);
    /* Every version of a model means a walk of the whole table: rare (a model deleted,
     * a refresh that lost track), and the table holds what fits in memory. */
    size_t first = 0, last = c->nbuckets;
    if (version != 0) {
        first = (size_t)(slot(c, model, version) - c->buckets);
        last = first + 1;
    }
    for (size_t i = first; i < last; i++)
        for (struct infer_entry *e = c->buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            if ((version != 0 && e->version != version) || strcmp(e->model, model) != 0)
                continue;
            unmap(c, e);
            if (e->refs == 0) {
                e->hnext = victims;
                victims = e;
            }
        }
    publish(c);
    pthread_mutex_unlock(&c->lock);
    free_entries(c, victims);
}

size_t infer_cache_bytes(const struct infer_cache *c)
{
    pthread_mutex_t *lock = (pthread_mutex_t *)&c->lock;
    pthread_mutex_lock(lock);
    size_t n = c->bytes;
    pthread_mutex_unlock(lock);
    return n;
}

size_t infer_cache_count(const struct infer_cache *c)
{
    pthread_mutex_t *lock = (pthread_mutex_t *)&c->lock;
    pthread_mutex_lock(lock);
    size_t n = c->count;
    pthread_mutex_unlock(lock);
    return n;
}
