/* inference_route.c — what serving needs to know about a model, cached in memory: its
 * versions, aliases and experiment (a "route"), and the drift references of its versions.
 *
 * A route is an immutable, reference-counted snapshot built from one query
 * (infer_db_route_load) on first use. A poller thread asks every CAIRN_INFERENCE_REFRESH_MS
 * which models changed (models.generation, moved by every registry write in any replica)
 * and drops their snapshots; the replica that made a change drops it at once. A snapshot
 * loaded while a change was committing is never cached over a newer generation, so a
 * replica cannot keep a stale route after the poll that reported the change.
 *
 * Choosing a version (infer_route_choose): an experiment splits traffic by weight — by a
 * hash of the sticky key when there is one, so a key always gets the same variant while
 * the experiment stands — else the "production" alias, else the latest version.
 */
#include "inference.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define NBUCKETS 256

struct slot {
    char name[INFER_NAME_MAX + 1];
    int64_t known_gen;          /* newest generation the poller reported */
    struct infer_route *route;  /* NULL until loaded, or after a change */
    struct slot *next;
};

struct refslot {
    char model[INFER_NAME_MAX + 1];
    int version;
    struct infer_refset *ref;
    struct refslot *next;
};

static struct {
    pthread_mutex_t mu;
    struct slot *buckets[NBUCKETS];
    struct refslot *refs[NBUCKETS];
    pthread_t poller;
    bool running;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    char *dsn;
    int refresh_ms;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .stop_mu = PTHREAD_MUTEX_INITIALIZER, .stop_cv = PTHREAD_COND_INITIALIZER};

static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static unsigned bucket_of(const char *name, int version)
{
    uint64_t h = fnv1a(name, strlen(name), 1469598103934665603ull);
    h = fnv1a(&version, sizeof version, h);
    return (unsigned)(h % NBUCKETS);
}

/* ------------------------------------------------------------------ snapshots */

static void route_free(struct infer_route *r)
{
    if (r == NULL)
        return;
    free(r->versions);
    free(r->ref_gens);
    free(r->aliases);
    free(r->cand);
    free(r);
}

void infer_route_put(struct infer_route *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        route_free(r);
}

int infer_route_alias(const struct infer_route *r, const char *alias)
{
    if (strcmp(alias, "latest") == 0)
        return infer_route_latest(r);
    for (size_t i = 0; i < r->naliases; i++)
        if (strcmp(r->aliases[i].alias, alias) == 0)
            return r->aliases[i].version;
    return 0;
}

int infer_route_latest(const struct infer_route *r)
{
    return r->nversions ? r->versions[r->nversions - 1] : 0;
}

bool infer_route_has_version(const struct infer_route *r, int version)
{
    for (size_t i = 0; i < r->nversions; i++)
        if (r->versions[i] == version)
            return true;
    return false;
}

int64_t infer_route_ref_gen(const struct infer_route *r, int version)
{
    for (size_t i = 0; i < r->nversions; i++)
        if (r->versions[i] == version)
            return r->ref_gens[i];
    return 0;
}

/* Builds a snapshot from the database row; CN_EINVAL if the stored JSON is unusable. */
static int route_build(const char *name, const struct infer_db_route *row, struct infer_route **out)
{
    struct infer_route *r = cn_calloc(1, sizeof *r);
    atomic_init(&r->refs, 1);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->generation = row->generation;
    r->log_sample_rate = row->log_sample_rate;
    int rc = CN_EINVAL;
    json_t *vs = json_loads(row->versions_json, 0, NULL), *as = json_loads(row->aliases_json, 0, NULL);
    if (!json_is_array(vs) || !json_is_array(as))
        goto out;
    r->nversions = json_array_size(vs);
    r->versions = cn_calloc(r->nversions + 1, sizeof *r->versions);
    r->ref_gens = cn_calloc(r->nversions + 1, sizeof *r->ref_gens);
    for (size_t i = 0; i < r->nversions; i++) {
        json_t *e = json_array_get(vs, i);
        r->versions[i] = (int)json_integer_value(json_array_get(e, 0));
        r->ref_gens[i] = (int64_t)json_integer_value(json_array_get(e, 1));
    }
    r->naliases = json_array_size(as);
    r->aliases = cn_calloc(r->naliases + 1, sizeof *r->aliases);
    for (size_t i = 0; i < r->naliases; i++) {
        json_t *e = json_array_get(as, i);
        const char *a = json_string_value(json_array_get(e, 0));
        snprintf(r->aliases[i].alias, sizeof r->aliases[i].alias, "%s", a ? a : "");
        r->aliases[i].version = (int)json_integer_value(json_array_get(e, 1));
    }
    if (row->experiment_json) {
        struct cn_arena *a = cn_arena_new(0);
        Cairn__V1__Experiment *e = infer_experiment_from_json(a, name, row->experiment_json, 0);
        if (e == NULL) {
            cn_arena_free(a);
            goto out;
        }
        r->cand = cn_calloc(e->n_candidates + 1, sizeof *r->cand);
        for (size_t i = 0; i < e->n_candidates; i++) {
            const Cairn__V1__Candidate *c = e->candidates[i];
            int v = c->version ? c->version : infer_route_alias(r, c->alias);
            if (v == 0)
                continue; /* the alias went away: its share goes to the others */
            struct infer_variant *x = &r->cand[r->ncand++];
            snprintf(x->name, sizeof x->name, "%s", c->variant);
            x->version = v;
            r->total += c->weight;
            x->cum = r->total;
        }
        if (r->ncand)
            snprintf(r->control, sizeof r->control, "%s", r->cand[0].name);
        if (e->mirror) {
            r->mirror_version = e->mirror->version ? e->mirror->version : infer_route_alias(r, e->mirror->alias);
            r->mirror_percent = e->mirror->percent;
        }
        if (strncmp(e->sticky_key, "header:", 7) == 0) {
            r->sticky = INFER_STICKY_HEADER;
            snprintf(r->sticky_name, sizeof r->sticky_name, "%s", e->sticky_key + 7);
            for (char *p = r->sticky_name; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
        } else if (strncmp(e->sticky_key, "field:", 6) == 0) {
            r->sticky = INFER_STICKY_FIELD;
            snprintf(r->sticky_name, sizeof r->sticky_name, "%s", e->sticky_key + 6);
        }
        cn_arena_free(a);
    }
    rc = CN_OK;
out:
    json_decref(vs);
    json_decref(as);
    if (rc != CN_OK) {
        route_free(r);
        return rc;
    }
    *out = r;
    return CN_OK;
}

static struct slot *slot_find(const char *name, bool create)
{
    unsigned b = bucket_of(name, 0);
    for (struct slot *s = R.buckets[b]; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    if (!create)
        return NULL;
    struct slot *s = cn_calloc(1, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->next = R.buckets[b];
    R.buckets[b] = s;
    return s;
}

int infer_route_get(struct cn_pg *pg, const char *name, struct infer_route **out)
{
    pthread_mutex_lock(&R.mu);
    struct slot *s = slot_find(name, false);
    if (s && s->route) {
        atomic_fetch_add(&s->route->refs, 1);
        *out = s->route;
        pthread_mutex_unlock(&R.mu);
        return CN_OK;
    }
    pthread_mutex_unlock(&R.mu);

    struct infer_db_route row;
    int rc = infer_db_route_load(pg, name, &row);
    if (rc != CN_OK)
        return rc;
    struct infer_route *r;
    rc = route_build(name, &row, &r);
    infer_db_route_free(&row);
    if (rc != CN_OK)
        return rc;

    pthread_mutex_lock(&R.mu);
    s = slot_find(name, true);
    if (s->route == NULL && r->generation >= s->known_gen) {
        atomic_fetch_add(&r->refs, 1); /* the map's reference */
        s->route = r;
    } else if (s->route && s->route->generation < r->generation) {
        infer_route_put(s->route);
        atomic_fetch_add(&r->refs, 1);
        s->route = r;
    }
    pthread_mutex_unlock(&R.mu);
    *out = r;
    return CN_OK;
}

/* Drops a model's snapshot (a change was made here, or the poller saw one at gen). */
static void invalidate(const char *name, int64_t gen)
{
    pthread_mutex_lock(&R.mu);
    struct slot *s = slot_find(name, gen > 0);
    if (s) {
        if (gen > s->known_gen)
            s->known_gen = gen;
        if (s->route && (gen == 0 || s->route->generation < gen)) {
            infer_route_put(s->route);
            s->route = NULL;
        }
    }
    pthread_mutex_unlock(&R.mu);
}

void infer_route_invalidate(const char *name)
{
    invalidate(name, 0);
}

int infer_route_choose(const struct infer_route *r, const char *sticky, const char **variant)
{
    if (r->ncand > 0 && r->total > 0) {
        double u;
        if (sticky) {
            uint64_t h = fnv1a(r->name, strlen(r->name), 1469598103934665603ull);
            h = fnv1a("\0", 1, h);
            h = fnv1a(sticky, strlen(sticky), h);
            /* fnv's low bits are weak for short keys: mix before taking 53 bits */
            h ^= h >> 33;
            h *= 0xff51afd7ed558ccdull;
            h ^= h >> 33;
            u = (double)(h >> 11) * 0x1.0p-53;
        } else {
            u = cn_fast_unit();
        }
        double x = u * r->total;
        for (size_t i = 0; i < r->ncand; i++) {
            if (x < r->cand[i].cum || i + 1 == r->ncand) {
                *variant = r->cand[i].name;
                return r->cand[i].version;
            }
        }
    }
    *variant = "default";
    int v = infer_route_alias(r, "production");
    return v ? v : infer_route_latest(r);
}

/* ------------------------------------------------------------------ experiments as JSON */

Cairn__V1__Experiment *infer_experiment_from_json(struct cn_arena *a, const char *model, const char *json,
                                                  int64_t started_at)
{
    ProtobufCAllocator alloc;
    cn_arena_allocator(a, &alloc);
    ProtobufCMessage *m = NULL;
    struct cn_json_error err;
    if (cn_json_to_proto(json, strlen(json), &cairn__v1__experiment__descriptor, &alloc, &m, &err) != CN_OK) {
        cn_log(CN_LOG_ERROR, "INFER-BAD-EXPERIMENT", NULL, "stored experiment of %s is unreadable: %s %s", model,
               err.field, err.message);
        return NULL;
    }
    Cairn__V1__Experiment *e = (Cairn__V1__Experiment *)m;
    e->model = cn_arena_strdup(a, model);
    if (started_at)
        e->started_at = started_at;
    return e;
}

/* ------------------------------------------------------------------ drift references */

static void refset_put(struct infer_refset *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        for (size_t i = 0; i < r->nbins; i++)
            infer_bins_free(&r->bins[i]);
        free(r->bins);
        free(r);
    }
}

void infer_refset_put(struct infer_refset *r)
{
    refset_put(r);
}

int infer_refset_get(struct cn_pg *pg, const char *model, int version, int64_t gen, struct infer_refset **out)
{
    *out = NULL;
    if (gen == 0)
        return CN_ENOTFOUND;
    unsigned b = bucket_of(model, version);
    pthread_mutex_lock(&R.mu);
    for (struct refslot *s = R.refs[b]; s; s = s->next) {
        if (s->version == version && strcmp(s->model, model) == 0 && s->ref && s->ref->gen == gen) {
            atomic_fetch_add(&s->ref->refs, 1);
            *out = s->ref;
            pthread_mutex_unlock(&R.mu);
            return CN_OK;
        }
    }
    pthread_mutex_unlock(&R.mu);

    char *json = NULL;
    int64_t got_gen = 0;
    int rc = infer_db_reference_get(pg, model, version, &json, &got_gen);
    if (rc != CN_OK)
        return rc;
    json_t *j = json_loads(json, 0, NULL);
    free(json);
    struct infer_refset *r = cn_calloc(1, sizeof *r);
    atomic_init(&r->refs, 1);
    r->gen = got_gen;
    rc = infer_bins_from_json(j, &r->bins, &r->nbins);
    json_decref(j);
    if (rc != CN_OK) {
        free(r);
        return CN_EINVAL;
    }
    pthread_mutex_lock(&R.mu);
    struct refslot *s = R.refs[b];
    for (; s; s = s->next)
        if (s->version == version && strcmp(s->model, model) == 0)
            break;
    if (s == NULL) {
        s = cn_calloc(1, sizeof *s);
        snprintf(s->model, sizeof s->model, "%s", model);
        s->version = version;
        s->next = R.refs[b];
        R.refs[b] = s;
    }
    if (s->ref == NULL || s->ref->gen < r->gen) {
        refset_put(s->ref);
        atomic_fetch_add(&r->refs, 1);
        s->ref = r;
    }
    pthread_mutex_unlock(&R.mu);
    *out = r;
    return CN_OK;
}

/* ------------------------------------------------------------------ the poller */

static void on_changed(const char *name, int64_t gen, void *arg)
{
    (void)arg;
    invalidate(name, gen);
}

static void *poller_main(void *arg)
{
    (void)arg;
    struct cn_pg *pg = cn_pg_new(R.dsn);
    int64_t since = 0;
    bool have_since = false, down = false;
    pthread_mutex_lock(&R.stop_mu);
    while (R.running) {
        pthread_mutex_unlock(&R.stop_mu);
        int rc;
        if (!have_since) {
            rc = infer_db_generation_now(pg, &since);
            have_since = rc == CN_OK;
        } else {
            rc = infer_db_changed(pg, &since, on_changed, NULL);
        }
        if (rc != CN_OK && !down) {
            cn_log(CN_LOG_WARN, "INFER-REFRESH-DOWN", NULL, "cannot poll model changes: %s", cn_strerror(rc));
            down = true;
        } else if (rc == CN_OK && down) {
            cn_log(CN_LOG_INFO, "INFER-REFRESH-UP", NULL, "polling model changes again");
            down = false;
        }
        pthread_mutex_lock(&R.stop_mu);
        if (!R.running)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)R.refresh_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&R.stop_cv, &R.stop_mu, &ts);
    }
    pthread_mutex_unlock(&R.stop_mu);
    cn_pg_free(pg);
    return NULL;
}

int infer_route_start(const char *dsn, int refresh_ms)
{
    R.dsn = cn_strdup(dsn);
    R.refresh_ms = refresh_ms;
    R.running = true;
    if (pthread_create(&R.poller, NULL, poller_main, NULL) != 0) {
        R.running = false;
        return CN_EINTERNAL;
    }
    return CN_OK;
}

void infer_route_stop(void)
{
    if (R.dsn == NULL)
        return;
    pthread_mutex_lock(&R.stop_mu);
    bool was = R.running;
    R.running = false;
    pthread_cond_broadcast(&R.stop_cv);
    pthread_mutex_unlock(&R.stop_mu);
    if (was)
        pthread_join(R.poller, NULL);
    pthread_mutex_lock(&R.mu);
    for (unsigned b = 0; b < NBUCKETS; b++) {
        for (struct slot *s = R.buckets[b], *n; s; s = n) {
            n = s->next;
            infer_route_put(s->route);
            free(s);
        }
        R.buckets[b] = NULL;
        for (struct refslot *s = R.refs[b], *n; s; s = n) {
            n = s->next;
            refset_put(s->ref);
            free(s);
        }
        R.refs[b] = NULL;
    }
    pthread_mutex_unlock(&R.mu);
    free(R.dsn);
    R.dsn = NULL;
}
