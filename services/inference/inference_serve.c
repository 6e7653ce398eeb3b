/* inference_serve.c — serving: the cache of loaded versions and its loader, Predict
 * (Cairn's JSON), the Open Inference Protocol handlers, the mirror thread, and the
 * serving metrics.
 *
 * One call: the route snapshot of the model says which version serves it (an explicit
 * version or alias; else the experiment, sticky by a header or an instance field; else
 * the "production" alias; else the latest version), the cache hands out a referenced
 * booster (loaded from Postgres on a miss, once however many calls miss together), the
 * codec turns the body into a dense float matrix, checked against the version's width
 * and names before XGBoost sees it, and the booster predicts on this worker's thread.
 * The reply is written, the latency histograms recorded, and the reply sent
 * (cn_call_send_now) before the rest of the bookkeeping: the sampled prediction log
 * entry (a bounded queue; never waits), the drift counts (atomics) and, when the
 * experiment mirrors, a copy for the mirror thread (a bounded queue; dropped and counted
 * when full) whose answer is only logged.
 *
 * Nothing here holds a lock across XGBoost: a booster is shared by every worker (its
 * prediction is thread-safe with nthread=1) and stays alive while a call holds its cache
 * entry, however the alias moves or the cache evicts meanwhile.
 */
#include "inference.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define VARIANT_MAX 64

struct infer_cache *infer_models;

/* Loads, evictions and the cache's bytes are counted by inference_cache.c. */
static struct cn_metric *m_predict, *m_mirror, *m_failed;

/* ------------------------------------------------------------------ the cache's loader */

/* Loads (model, version) from Postgres: arg is the calling worker's handle. */
static int load_version(const char *model, int version, void *arg, struct infer_loaded *out, char *why,
                        size_t whylen)
{
    struct cn_pg *pg = arg;
    uint8_t *ubj = NULL;
    size_t len = 0;
    int rc = infer_db_version_ubj(pg, model, version, &ubj, &len);
    if (rc == CN_ENOTFOUND) {
        snprintf(why, whylen, "model %s has no version %d", model, version);
        return rc;
    }
    if (rc != CN_OK) {
        snprintf(why, whylen, "reading version %d of %s: %s %s", version, model, cn_strerror(rc),
                 cn_pg_errmsg(pg));
        return rc == CN_EUNAVAIL ? rc : CN_EINTERNAL;
    }
    int64_t t0 = cn_mono_us();
    rc = infer_booster_load(ubj, len, &out->booster, &out->meta, why, whylen);
    free(ubj);
    if (rc != CN_OK)
        return CN_EINTERNAL; /* it was validated at upload: this is our fault */
    /* Names given at upload live in the registry, not in the file. */
    if (out->meta.n_feature_names == 0) {
        struct cn_arena *a = cn_arena_new(0);
        Cairn__V1__ModelVersion v;
        rc = infer_db_version_get(pg, model, version, a, &v);
        if (rc == CN_OK && v.n_feature_names == (size_t)out->meta.num_features) {
            out->meta.feature_names = cn_calloc(v.n_feature_names, sizeof(char *));
            for (size_t i = 0; i < v.n_feature_names; i++)
                out->meta.feature_names[i] = cn_strdup(v.feature_names[i]);
            out->meta.n_feature_names = v.n_feature_names;
        }
        cn_arena_free(a);
        if (rc != CN_OK) {
            infer_booster_free(out->booster);
            infer_meta_free(&out->meta);
            memset(out, 0, sizeof *out);
            snprintf(why, whylen, "reading version %d of %s: %s", version, model, cn_strerror(rc));
            return rc == CN_ENOTFOUND || rc == CN_EUNAVAIL ? rc : CN_EINTERNAL;
        }
    }
    out->bytes = infer_booster_bytes(out->booster);
    cn_log(CN_LOG_INFO, "INFER-MODEL-LOADED", NULL, "loaded %s version %d (%zu features, %zu bytes) in %.1f ms",
           model, version, (size_t)out->meta.num_features, out->bytes, (double)(cn_mono_us() - t0) / 1000.0);
    return CN_OK;
}

static void unload_version(struct infer_loaded *v)
{
    infer_booster_free(v->booster);
    infer_meta_free(&v->meta);
}

int infer_warm(struct cn_pg *pg, const char *model, int version, char *why, size_t whylen)
{
    struct infer_entry *e;
    int rc = infer_cache_get(infer_models, model, version, pg, &e, why, whylen);
    if (rc == CN_OK)
        infer_cache_put(infer_models, e);
    return rc;
}

int infer_loaded_get(struct cn_pg *pg, const char *model, int version, struct infer_entry **out, char *why,
                     size_t whylen)
{
    int rc = infer_cache_get(infer_models, model, version, pg, out, why, whylen);
    return rc;
}

void infer_loaded_put(struct infer_entry *e)
{
    infer_cache_put(infer_models, e);
}

void infer_forget(const char *model, int version)
{
    infer_cache_forget(infer_models, model, version);
}

/* ------------------------------------------------------------------ the mirror thread */

struct mirror_job {
    char model[INFER_NAME_MAX + 1];
    int version;
    float *x;
    size_t nrows, ncols;
    char request_id[129];
    bool logged;
    struct mirror_job *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mirror_job *head, *tail;
    size_t n, cap;
    bool stop, running;
    pthread_t thread;
    struct cn_pg *pg;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void mirror_one(struct mirror_job *j)
{
    int64_t t0 = cn_mono_us();
    struct infer_entry *e = NULL;
    char why[256] = "";
    float *pred = NULL;
    int outputs = 1;
    int rc = infer_cache_get(infer_models, j->model, j->version, M.pg, &e, why, sizeof why);
    if (rc == CN_OK && (size_t)e->v.meta.num_features != j->ncols) {
        snprintf(why, sizeof why, "the mirror's version %d has %d features, the request %zu", j->version,
                 e->v.meta.num_features, j->ncols);
        rc = CN_EINVAL;
    }
    if (rc == CN_OK) {
        outputs = e->v.meta.outputs > 0 ? e->v.meta.outputs : 1;
        pred = cn_malloc(j->nrows * (size_t)outputs * sizeof *pred);
        rc = infer_booster_predict(e->v.booster, j->x, j->nrows, j->ncols, pred, j->nrows * (size_t)outputs, why,
                                   sizeof why);
    }
    cn_series_add(cn_metric_series(m_mirror, (const char *[]){rc == CN_OK ? "ok" : "error"}), 1);
    if (j->logged) {
        struct infer_log_entry *le = infer_log_entry_new();
        snprintf(le->request_id, sizeof le->request_id, "%s", j->request_id);
        snprintf(le->model, sizeof le->model, "%s", j->model);
        le->version = j->version;
        snprintf(le->variant, sizeof le->variant, "mirror");
        infer_log_entry_set(le, j->x, j->nrows, j->ncols, rc == CN_OK ? pred : NULL, outputs);
        le->latency_us = (int)(cn_mono_us() - t0);
        le->ok = rc == CN_OK;
        if (rc != CN_OK)
            snprintf(le->error, sizeof le->error, "%s", why);
        infer_log_push(le);
    }
    free(pred);
    if (e)
        infer_cache_put(infer_models, e);
}

static void *mirror_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&M.mu);
    for (;;) {
        while (M.head == NULL && !M.stop)
            pthread_cond_wait(&M.cv, &M.mu);
        if (M.head == NULL)
            break;
        struct mirror_job *j = M.head;
        M.head = j->next;
        if (M.head == NULL)
            M.tail = NULL;
        M.n--;
        pthread_mutex_unlock(&M.mu);
        if (!M.stop)
            mirror_one(j);
        free(j->x);
        free(j);
        pthread_mutex_lock(&M.mu);
    }
    pthread_mutex_unlock(&M.mu);
    return NULL;
}

/* Queues a copy of x for the mirror; never waits. */
static void mirror_push(const char *model, int version, const float *x, size_t nrows, size_t ncols,
                        const char *request_id, bool logged)
{
    pthread_mutex_lock(&M.mu);
    bool room = M.running && !M.stop && M.n < M.cap;
    if (room)
        M.n++;
    pthread_mutex_unlock(&M.mu);
    if (!room) {
        cn_series_add(cn_metric_series(m_mirror, (const char *[]){"dropped"}), 1);
        return;
    }
    struct mirror_job *j = cn_calloc(1, sizeof *j);
    snprintf(j->model, sizeof j->model, "%s", model);
    j->version = version;
    j->x = cn_malloc(nrows * ncols * sizeof *j->x);
    memcpy(j->x, x, nrows * ncols * sizeof *j->x);
    j->nrows = nrows;
    j->ncols = ncols;
    snprintf(j->request_id, sizeof j->request_id, "%s", request_id);
    j->logged = logged;
    pthread_mutex_lock(&M.mu);
    if (M.tail)
        M.tail->next = j;
    else
        M.head = j;
    M.tail = j;
    pthread_cond_signal(&M.cv);
    pthread_mutex_unlock(&M.mu);
}

/* ------------------------------------------------------------------ start and stop */

int infer_serve_start(const char *dsn)
{
    m_predict = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_inference_predict_seconds",
                              "predict and infer calls: time waiting for a worker (queue), in XGBoost (compute) "
                              "and from arrival to answer (total)",
                              "model,version,variant,stage", NULL, 0);
    m_mirror = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_mirror_total",
                             "mirrored copies by outcome (ok, error, dropped: the queue was full)", "outcome", NULL, 0);
    m_failed = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_predict_failed_total",
                             "predict and infer calls refused after a version was chosen, by reason", "reason", NULL,
                             0);
    infer_models = infer_cache_new((size_t)infer_conf.cache_bytes, load_version, unload_version);
    M.pg = cn_pg_new(dsn);
    M.cap = (size_t)infer_conf.mirror_queue;
    M.stop = false;
    if (pthread_create(&M.thread, NULL, mirror_main, NULL) != 0) {
        cn_pg_free(M.pg);
        M.pg = NULL;
        infer_cache_free(infer_models);
        infer_models = NULL;
        return CN_EINTERNAL;
    }
    M.running = true;
    return CN_OK;
}

void infer_serve_stop(void)
{
    if (M.running) {
        pthread_mutex_lock(&M.mu);
        M.stop = true;
        pthread_cond_broadcast(&M.cv);
        pthread_mutex_unlock(&M.mu);
        pthread_join(M.thread, NULL);
        M.running = false;
    }
    cn_pg_free(M.pg);
    M.pg = NULL;
    if (infer_models)
        infer_cache_free(infer_models);
    infer_models = NULL;
}

/* ------------------------------------------------------------------ choosing a version */

/* A served call: the route snapshot, the chosen version, its variant and loaded entry. */
struct served {
    struct infer_route *route;
    struct infer_entry *entry;
    int version;
    char variant[VARIANT_MAX];
};

static void served_release(struct served *s)
{
    if (s->entry)
        infer_cache_put(infer_models, s->entry);
    if (s->route)
        infer_route_put(s->route);
    s->entry = NULL;
    s->route = NULL;
}

static struct cn_pg *pg_of(struct cn_call *call)
{
    return cn_svc_worker_of(call)->pg;
}

/* Answers a database or load failure. */
static void fail_rc(struct cn_call *call, int rc, const char *why)
{
    switch (rc) {
    case CN_ENOTFOUND:
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "%s", why);
        return;
    case CN_EUNAVAIL:
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "database unavailable");
        call->retry_after_ms = 1000;
        return;
    case CN_EINVAL:
        cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT, "%s", why);
        return;
    default:
        cn_log(CN_LOG_ERROR, "INFER-SERVE-ERROR", cn_call_request_id(call), "%s (%s)", why, cn_strerror(rc));
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
    }
}

/* Reads a version given as text: digits are a number, anything else an alias ("latest"
 * included). Returns false when it is neither. */
bool infer_version_text(const char *text, int *version, const char **alias)
{
    *version = 0;
    *alias = NULL;
    if (text[0] >= '0' && text[0] <= '9') {
        long long v;
        if (cn_parse_int(text, 1, INT32_MAX, &v) != CN_OK)
            return false;
        *version = (int)v;
        return true;
    }
    for (const char *p = text; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    if (text[0] < 'a' || text[0] > 'z' || strlen(text) > INFER_NAME_MAX)
        return false;
    *alias = text;
    return true;
}

/* The header of a raw request by lowercased name, or NULL. */
static const char *header_of(Cairn__V1__Header *const *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (h[i]->name && strcmp(h[i]->name, name) == 0)
            return h[i]->value;
    return NULL;
}

/* Fills s for model: version (> 0) or alias when given, else the route's choice with the
 * sticky key (NULL = none). Answers the call and returns false on failure. */
static bool choose(struct cn_call *call, const char *model, int version, const char *alias, struct served *s,
                   const char *(*sticky_of)(const struct infer_route *, void *), void *sticky_arg)
{
    memset(s, 0, sizeof *s);
    char why[256];
    int rc = infer_route_get(pg_of(call), model, &s->route);
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "no model named %s", model);
        return false;
    }
    if (rc != CN_OK) {
        snprintf(why, sizeof why, "routing state of %s", model);
        fail_rc(call, rc, why);
        return false;
    }
    snprintf(s->variant, sizeof s->variant, "default");
    if (version > 0) {
        if (!infer_route_has_version(s->route, version)) {
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", model, version);
            served_release(s);
            return false;
        }
        s->version = version;
    } else if (alias) {
        s->version = infer_route_alias(s->route, alias);
        if (s->version == 0) {
            if (strcmp(alias, "latest") == 0)
                cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no versions yet", model);
            else
                cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no alias %s", model, alias);
            served_release(s);
            return false;
        }
    } else {
        const char *variant = "default";
        const char *key = sticky_of && s->route->sticky != INFER_STICKY_NONE ? sticky_of(s->route, sticky_arg) : NULL;
        s->version = infer_route_choose(s->route, key, &variant);
        snprintf(s->variant, sizeof s->variant, "%s", variant);
        if (s->version == 0) {
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no versions yet: upload one first", model);
            served_release(s);
            return false;
        }
    }
    rc = infer_cache_get(infer_models, model, s->version, pg_of(call), &s->entry, why, sizeof why);
    if (rc != CN_OK) {
        s->entry = NULL;
        fail_rc(call, rc, why);
        served_release(s);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ after the answer */

struct outcome {
    const float *x, *pred;
    size_t nrows, ncols;
    int outputs;
    int64_t start_us, compute_us;
};

/* The queue, compute and total series of (model, version, variant), from a small
 * per-thread cache: each cn_metric_series takes the registry's one lock, and three a call
 * had the workers queueing on it. Series are never freed, so a cached pointer stays
 * valid; a name too long for the slot just misses every time. */
struct stage_series {
    char model[64];
    int version;
    char variant[64];
    struct cn_series *s[3];
};
static __thread struct stage_series stage_cache[16];

static struct cn_series *const *stage_series(const char *model, int version, const char *variant)
{
    uint32_t h = 2166136261u ^ (uint32_t)version;
    for (const char *p = model; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (const char *p = variant; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    struct stage_series *e = &stage_cache[h % 16];
    if (e->s[0] == NULL || e->version != version || strcmp(e->model, model) != 0 || strcmp(e->variant, variant) != 0) {
        static const char *const stages[3] = {"queue", "compute", "total"};
        char v[16];
        snprintf(v, sizeof v, "%d", version);
        for (int i = 0; i < 3; i++)
            e->s[i] = cn_metric_series(m_predict, (const char *[]){model, v, variant, stages[i]});
        snprintf(e->model, sizeof e->model, "%s", model);
        snprintf(e->variant, sizeof e->variant, "%s", variant);
        e->version = version;
    }
    return e->s;
}

/* Metrics, the sampled log entry, drift counts and the mirror's copy of one answered call
 * (its closure called). The reply leaves after the metrics, so a client that reads
 * /metrics once it has its answer finds its call there, and before the rest, which the
 * caller need not wait for: for a 1 000-row batch, the log entry copies 80 KB and drift
 * looks up 20 000 bins. */
static void bookkeeping(struct cn_call *call, const char *model, const struct served *s, const struct outcome *o)
{
    int64_t now = cn_mono_us();
    int64_t arrived = call->received_us ? call->received_us : o->start_us;
    struct cn_series *const *st = stage_series(model, s->version, s->variant);
    cn_series_observe(st[0], (double)(o->start_us - arrived) / 1e6);
    cn_series_observe(st[1], (double)o->compute_us / 1e6);
    cn_series_observe(st[2], (double)(now - arrived) / 1e6);
    cn_call_send_now(call);

    const struct infer_route *r = s->route;
    bool logged = r->log_sample_rate >= 1.0 || (r->log_sample_rate > 0 && cn_fast_unit() < r->log_sample_rate);
    if (logged) {
        struct infer_log_entry *e = infer_log_entry_new();
        snprintf(e->request_id, sizeof e->request_id, "%s", cn_call_request_id(call));
        snprintf(e->model, sizeof e->model, "%s", model);
        e->version = s->version;
        snprintf(e->variant, sizeof e->variant, "%s", s->variant);
        infer_log_entry_set(e, o->x, o->nrows, o->ncols, o->pred, o->outputs);
        e->latency_us = (int)(now - arrived);
        e->ok = true;
        infer_log_push(e);
    }

    int64_t gen = infer_route_ref_gen(r, s->version);
    if (gen > 0) {
        struct infer_refset *ref = NULL;
        if (infer_refset_get(pg_of(call), model, s->version, gen, &ref) == CN_OK) {
            const struct infer_meta *m = &s->entry->v.meta;
            if (ref->nbins == o->ncols)
                infer_drift_observe(model, s->version, ref->bins, ref->nbins,
                                    m->n_feature_names ? (const char *const *)m->feature_names : NULL, o->x,
                                    o->nrows);
            infer_refset_put(ref);
        }
    }

    if (r->mirror_version > 0 && r->mirror_percent > 0 &&
        (r->mirror_percent >= 100 || cn_fast_unit() * 100.0 < r->mirror_percent))
        mirror_push(model, r->mirror_version, o->x, o->nrows, o->ncols, cn_call_request_id(call), logged);
}

/* Predicts o->nrows rows of x with the served entry into a new array (*pred). */
static bool run_booster(struct cn_call *call, const struct served *s, const float *x, size_t nrows, float **pred,
                        struct outcome *o)
{
    const struct infer_meta *m = &s->entry->v.meta;
    o->outputs = m->outputs > 0 ? m->outputs : 1;
    o->x = x;
    o->nrows = nrows;
    o->ncols = (size_t)m->num_features;
    *pred = cn_malloc(nrows * (size_t)o->outputs * sizeof **pred);
    char why[256];
    int64_t t = cn_mono_us();
    int rc = infer_booster_predict(s->entry->v.booster, x, nrows, o->ncols, *pred, nrows * (size_t)o->outputs, why,
                                   sizeof why);
    o->compute_us = cn_mono_us() - t;
    o->pred = *pred;
    if (rc != CN_OK) {
        cn_series_add(cn_metric_series(m_failed, (const char *[]){"xgboost"}), 1);
        cn_log(CN_LOG_ERROR, "INFER-PREDICT-FAILED", cn_call_request_id(call), "%s version %d: %s", s->route->name,
               s->version, why);
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "the model could not predict these rows");
        return false;
    }
    return true;
}

static void input_error(struct cn_call *call, const struct infer_err *err)
{
    cn_series_add(cn_metric_series(m_failed, (const char *[]){"input"}), 1);
    cn_call_field_error(call, err->field[0] ? err->field : "body", "%s", err->message);
}

static void answer_json(struct cn_buf *b, Cairn__V1__RawResponse_Closure done, void *cd)
{
    Cairn__V1__RawResponse resp = CAIRN__V1__RAW_RESPONSE__INIT;
    resp.body.data = (uint8_t *)b->data;
    resp.body.len = b->len;
    resp.content_type = "application/json";
    done(&resp, cd);
}

/* An OIP answer with binary tensor data: json_len bytes of JSON, then the data; the
 * Inference-Header-Content-Length header tells the client where the JSON ends. */
static void answer_binary(struct cn_buf *b, size_t json_len, Cairn__V1__RawResponse_Closure done, void *cd)
{
    char len_text[24];
    snprintf(len_text, sizeof len_text, "%zu", json_len);
    Cairn__V1__Header h = CAIRN__V1__HEADER__INIT;
    h.name = "inference-header-content-length";
    h.value = len_text;
    Cairn__V1__Header *hs[1] = {&h};
    Cairn__V1__RawResponse resp = CAIRN__V1__RAW_RESPONSE__INIT;
    resp.body.data = (uint8_t *)b->data;
    resp.body.len = b->len;
    resp.content_type = "application/octet-stream";
    resp.headers = hs;
    resp.n_headers = 1;
    done(&resp, cd);
}

/* ------------------------------------------------------------------ Predict */

struct v1_sticky {
    const Cairn__V1__PredictRequest *in;
    const struct infer_v1_req *req;
    char text[256];
};

static const char *v1_sticky_of(const struct infer_route *r, void *arg)
{
    struct v1_sticky *k = arg;
    if (r->sticky == INFER_STICKY_HEADER)
        return header_of(k->in->headers, k->in->n_headers, r->sticky_name);
    if (infer_v1_field_text(k->req, r->sticky_name, k->text, sizeof k->text) == CN_OK)
        return k->text;
    return NULL;
}

void infer_predict(Cairn__V1__Inference_Service *service, const Cairn__V1__PredictRequest *in,
                   Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    int64_t start = cn_mono_us();
    struct infer_caps caps = {.max_rows = (size_t)infer_conf.max_rows};
    struct infer_v1_req req;
    struct infer_err err;
    if (infer_v1_parse(in->body.data, in->body.len, &caps, &req, &err) != CN_OK) {
        input_error(call, &err);
        done(NULL, cd);
        return;
    }
    struct served s;
    struct v1_sticky key = {.in = in, .req = &req};
    if (!choose(call, in->name, req.version, req.alias[0] ? req.alias : NULL, &s, v1_sticky_of, &key)) {
        infer_v1_req_free(&req);
        done(NULL, cd);
        return;
    }
    float *x = NULL, *pred = NULL;
    size_t nrows = 0;
    struct outcome o = {.start_us = start};
    if (infer_v1_rows(&req, &s.entry->v.meta, &caps, &x, &nrows, &err) != CN_OK) {
        input_error(call, &err);
        done(NULL, cd);
    } else if (!run_booster(call, &s, x, nrows, &pred, &o)) {
        done(NULL, cd);
    } else {
        struct cn_buf b = {0};
        infer_v1_response(&b, pred, nrows, o.outputs, in->name, s.version, s.variant, cn_call_request_id(call));
        answer_json(&b, done, cd);
        cn_buf_free(&b);
        bookkeeping(call, in->name, &s, &o);
    }
    free(x);
    free(pred);
    infer_v1_req_free(&req);
    served_release(&s);
}

/* ------------------------------------------------------------------ Open Inference Protocol */

static void oip_answer(struct cn_buf *b, Cairn__V1__RawResponse_Closure done, void *cd)
{
    answer_json(b, done, cd);
    cn_buf_free(b);
}

/* The version of an OIP path: "" = no version given. Answers and returns false when bad. */
static bool oip_version(struct cn_call *call, const char *text, int *version, const char **alias)
{
    *version = 0;
    *alias = NULL;
    if (text == NULL || text[0] == '\0')
        return true;
    if (!infer_version_text(text, version, alias)) {
        cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT,
                     "version must be a version number, an alias or \"latest\", not \"%s\"", text);
        return false;
    }
    return true;
}

static const char *oip_sticky_of(const struct infer_route *r, void *arg)
{
    const Cairn__V1__OipRequest *in = arg;
    return r->sticky == INFER_STICKY_HEADER ? header_of(in->headers, in->n_headers, r->sticky_name) : NULL;
}

void infer_infer(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                 Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    int64_t start = cn_mono_us();
    int version;
    const char *alias;
    struct served s;
    if (!oip_version(call, in->version, &version, &alias) ||
        !choose(call, in->model, version, alias, &s, oip_sticky_of, (void *)in)) {
        done(NULL, cd);
        return;
    }
    struct infer_caps caps = {.max_rows = (size_t)infer_conf.max_rows};
    struct infer_err err;
    float *x = NULL, *pred = NULL;
    size_t nrows = 0;
    char *id = NULL;
    bool binary = false;
    struct outcome o = {.start_us = start};
    /* Binary tensor data: the header says where the JSON part ends. */
    const char *hl = header_of(in->headers, in->n_headers, "inference-header-content-length");
    long long header_len = -1;
    if (hl != NULL && cn_parse_int(hl, 0, INT64_MAX, &header_len) != CN_OK) {
        cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT,
                     "Inference-Header-Content-Length: expected the length of the JSON part in bytes, got \"%.40s\"",
                     hl);
        done(NULL, cd);
        served_release(&s);
        return;
    }
    if (infer_oip_parse(in->body.data, in->body.len, header_len, &s.entry->v.meta, &caps, &x, &nrows, &id, &binary,
                        &err) !=
        CN_OK) {
        cn_series_add(cn_metric_series(m_failed, (const char *[]){"input"}), 1);
        if (err.field[0])
            cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT, "%s: %s", err.field, err.message);
        else
            cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT, "%s", err.message);
        done(NULL, cd);
    } else if (!run_booster(call, &s, x, nrows, &pred, &o)) {
        done(NULL, cd);
    } else {
        struct cn_buf b = {0};
        size_t json_len = infer_oip_response(&b, in->model, s.version, id, pred, nrows, o.outputs, binary);
        if (binary)
            answer_binary(&b, json_len, done, cd);
        else
            answer_json(&b, done, cd);
        cn_buf_free(&b);
        bookkeeping(call, in->model, &s, &o);
    }
    free(id);
    free(x);
    free(pred);
    served_release(&s);
}

void infer_server_metadata(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                           Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    (void)in;
    struct cn_buf b = {0};
    infer_oip_server_metadata(&b, CAIRN_VERSION);
    oip_answer(&b, done, cd);
}

void infer_server_live(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                       Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    (void)in;
    struct cn_buf b = {0};
    cn_buf_puts(&b, "{\"live\":true}");
    oip_answer(&b, done, cd);
}

/* Ready when this replica reaches the registry: without it nothing new can load. */
void infer_server_ready(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                        Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    (void)in;
    struct cn_call *call = cd;
    if (cn_pg_exec(pg_of(call), "SELECT 1", 0, NULL, NULL) != CN_OK) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "not ready: the model registry (PostgreSQL) is unreachable");
        call->retry_after_ms = 1000;
        done(NULL, cd);
        return;
    }
    struct cn_buf b = {0};
    cn_buf_puts(&b, "{\"ready\":true}");
    oip_answer(&b, done, cd);
}

/* Metadata and readiness describe a version: the one asked for, else the one a call
 * without a version would get outside any experiment (production, else latest). */
static bool oip_describe(struct cn_call *call, const Cairn__V1__OipRequest *in, struct served *s)
{
    int version;
    const char *alias;
    if (!oip_version(call, in->version, &version, &alias))
        return false;
    if (version == 0 && alias == NULL) {
        /* production when there is one; a model without versions is described empty */
        memset(s, 0, sizeof *s);
        char why[256];
        int rc = infer_route_get(pg_of(call), in->model, &s->route);
        if (rc == CN_ENOTFOUND) {
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "no model named %s", in->model);
            return false;
        }
        if (rc != CN_OK) {
            snprintf(why, sizeof why, "routing state of %s", in->model);
            fail_rc(call, rc, why);
            return false;
        }
        version = infer_route_alias(s->route, "production");
        if (version == 0)
            version = infer_route_latest(s->route);
        infer_route_put(s->route);
        s->route = NULL;
        if (version == 0)
            return true;
    }
    return choose(call, in->model, version, alias, s, NULL, NULL);
}

void infer_model_metadata(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                          Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    struct served s;
    if (!oip_describe(call, in, &s)) {
        done(NULL, cd);
        return;
    }
    struct infer_route *r = s.route;
    if (r == NULL && infer_route_get(pg_of(call), in->model, &r) != CN_OK) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "model registry unavailable");
        done(NULL, cd);
        return;
    }
    struct cn_buf b = {0};
    infer_oip_model_metadata(&b, in->model, r->versions, r->nversions, s.entry ? &s.entry->v.meta : NULL);
    oip_answer(&b, done, cd);
    if (s.route == NULL)
        infer_route_put(r);
    served_release(&s);
}

void infer_model_ready(Cairn__V1__Inference_Service *service, const Cairn__V1__OipRequest *in,
                       Cairn__V1__RawResponse_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    struct served s;
    if (!oip_describe(call, in, &s)) {
        done(NULL, cd);
        return;
    }
    struct cn_buf b = {0};
    cn_buf_puts(&b, "{\"name\":");
    cn_buf_json_str(&b, in->model, strlen(in->model));
    cn_buf_printf(&b, ",\"ready\":%s}", s.entry ? "true" : "false");
    oip_answer(&b, done, cd);
    served_release(&s);
}
