/* inference_cache.h — loaded model versions: an LRU bounded by bytes, reference-counted,
 * loading each version once however many requests ask for it at the same time.
 * (Part of cairn-inference; see inference.h for the map of files.)
 *
 *   struct infer_entry *e;
 *   if (infer_cache_get(cache, "churn", 3, ctx, &e, why, sizeof why) == 0) {
 *       infer_booster_predict(e->v.booster, ...);
 *       infer_cache_put(cache, e);
 *   }
 */
#ifndef INFERENCE_CACHE_H
#define INFERENCE_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "inference_model.h"

/* One loaded version, as the loader fills it. The cache owns it once loaded and hands it
 * to the unload callback when the last reference to an evicted or forgotten entry goes. */
struct infer_loaded {
    struct infer_booster *booster;
    struct infer_meta meta;
    void *ref;    /* the drift reference (struct infer_bins *), opaque here */
    size_t nref;  /* features in ref */
    size_t bytes; /* what it costs against the cache's bound */
};

/* Loads (model, version) into *out: 0, or CN_ENOTFOUND, CN_EUNAVAIL, CN_EINVAL ... with
 * why. Called without the cache's lock, on the thread of the first caller that missed;
 * arg is that caller's. On failure *out must hold nothing that needs unloading. */
typedef int (*infer_load_fn)(const char *model, int version, void *arg, struct infer_loaded *out,
                             char *why, size_t whylen);
/* Frees what a load filled (not v itself). Called without the cache's lock. */
typedef void (*infer_unload_fn)(struct infer_loaded *v);

/* A cached version. model, version and v are read-only for the holder of a reference;
 * the rest is the cache's. */
struct infer_entry {
    const char *model;
    int version;
    struct infer_loaded v;

    /* private to inference_cache.c */
    struct infer_entry *hnext;         /* hash chain */
    struct infer_entry *lprev, *lnext; /* LRU list of loaded, mapped entries; head = newest */
    size_t refs;                       /* holders, including waiters for a load */
    int state;                         /* loading | ready | failed */
    bool mapped;                       /* reachable through the hash (not forgotten) */
    int err;                           /* a failed load's code and message, for its waiters */
    char *why;
};

struct infer_cache;

/* A cache that keeps at most max_bytes of loaded versions that nobody uses. load and
 * unload are kept for the cache's life. Never fails. */
struct infer_cache *infer_cache_new(size_t max_bytes, infer_load_fn load, infer_unload_fn unload);
/* Unloads every entry and frees c. Every reference must have been put. */
void infer_cache_free(struct infer_cache *c);

/* Returns 0 and a referenced entry in *out, loading it on a miss with load(model, version,
 * arg, ...) outside the lock. Concurrent gets of a key being loaded wait for that one load
 * and share its result; a failed load is not cached (the next get tries again) and its
 * code and why are returned to everyone who waited for it. The caller puts the entry. */
int infer_cache_get(struct infer_cache *c, const char *model, int version, void *arg,
                    struct infer_entry **out, char *why, size_t whylen);
/* Drops the reference get gave. The last put of a forgotten entry unloads it; the last
 * put of any entry may evict unused ones while the cache is over its bound. */
void infer_cache_put(struct infer_cache *c, struct infer_entry *e);
/* Forgets (model, version), or every version of model when version is 0: the next get
 * loads again. Entries in use stay valid for their holders and are unloaded at their last
 * put; a load in flight finishes for its waiters but is not kept. */
void infer_cache_forget(struct infer_cache *c, const char *model, int version);

/* Bytes and number of loaded entries the cache holds (forgotten ones in use not counted). */
size_t infer_cache_bytes(const struct infer_cache *c);
size_t infer_cache_count(const struct infer_cache *c);

#endif
