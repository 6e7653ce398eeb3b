/* inference.h — the cairn-inference service's own cross-file names (not part of libcairn).
 *
 * Files, one concern each:
 *   main.c               the cn_svc table
 *   inference_rpc.c      registry, experiment, feedback, stats and drift RPCs; settings,
 *                        init/fini
 *   inference_serve.c    serving: Predict, the Open Inference Protocol, the model cache's
 *                        loader, the mirror, serving metrics
 *   inference_db.c       all registry SQL (models, versions, aliases, experiments)
 *   inference_route.c    per-model routing state (aliases, experiment) cached in memory,
 *                        refreshed by polling models.generation; variant choice
 *   inference_model.c    model files: validation in a child process, metadata, boosters
 *   inference_cache.c    loaded versions: LRU bounded by bytes, reference-counted
 *   inference_codec.c    predict / Open Inference Protocol JSON in and out (jansson)
 *   inference_stats.c    significance tests, quantiles, the stats report (GetStats)
 *   inference_db_stats.c SQL of feedback and the stats report
 *   inference_log.c      the prediction log: bounded queue, batched writer thread
 *   inference_drift.c    drift bins and PSI, live input histograms flushed per minute,
 *                        the drift report and gauges
 *   inference_db_log.c   SQL of the prediction log and drift counts
 * To add a setting: a field in struct infer_conf, a row in infer_conf_defs
 * (inference_rpc.c), a line in README.md.
 */
#ifndef INFERENCE_H
#define INFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cairn/v1/inference.pb-c.h"
#include "conf.h"
#include "pg.h"
#include "rpc.h"
#include "svc.h"

/* ------------------------------------------------------------------ settings */

struct infer_conf {
    int64_t cache_bytes;          /* CAIRN_MODEL_CACHE_BYTES */
    int64_t max_model_bytes;      /* CAIRN_MODEL_MAX_BYTES: upload cap */
    int64_t max_features;         /* CAIRN_MODEL_MAX_FEATURES */
    int64_t validate_ms;          /* CAIRN_MODEL_VALIDATE_MS: child's time limit */
    int64_t validate_mem_mb;      /* CAIRN_MODEL_VALIDATE_MEM_MB: child's address-space cap */
    int64_t max_rows;             /* CAIRN_PREDICT_MAX_ROWS: rows per predict call */
    int64_t max_reference_rows;   /* CAIRN_REFERENCE_MAX_ROWS */
    int64_t refresh_ms;           /* CAIRN_INFERENCE_REFRESH_MS: routing poll period */
    int64_t log_queue;            /* CAIRN_PREDICTION_LOG_QUEUE: entries before dropping */
    int64_t log_batch;            /* CAIRN_PREDICTION_LOG_BATCH: rows per COPY */
    int64_t log_flush_ms;         /* CAIRN_PREDICTION_LOG_FLUSH_MS */
    int64_t drift_window_s;       /* CAIRN_DRIFT_WINDOW_S: default window of GetDrift/gauge */
    int64_t drift_flush_s;        /* CAIRN_DRIFT_FLUSH_S */
    int64_t mirror_queue;         /* CAIRN_MIRROR_QUEUE: shadow calls waiting */
};

extern struct infer_conf infer_conf;
extern const struct cn_conf_def infer_conf_defs[];
extern const size_t infer_conf_ndefs;
extern Cairn__V1__Inference_Service infer_service;
extern struct cn_svc infer_svc;
extern const struct cn_migration inference_migrations[];
extern const unsigned inference_migrations_count;

#define INFER_NAME_MAX 63   /* model names: ^[a-z0-9][a-z0-9_.-]{0,62}$ */

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0.1.0" /* what GET /v2 reports */
#endif

int infer_init(void);
void infer_fini(void);

#include "inference_cache.h"
#include "inference_codec.h"
#include "inference_drift.h"
#include "inference_log.h"
#include "inference_model.h"
#include "inference_stats.h"

/* ------------------------------------------------------------------ inference_serve.c */

/* The loaded versions every worker shares (inference_cache.h). */
extern struct infer_cache *infer_models;
/* Makes the cache and starts the mirror thread (own connection to dsn). */
int infer_serve_start(const char *dsn);
void infer_serve_stop(void);
/* Loads (model, version) into the cache if it is not there: 0, CN_ENOTFOUND, ... with why. */
int infer_warm(struct cn_pg *pg, const char *model, int version, char *why, size_t whylen);
/* A referenced loaded version (infer_loaded_put it), loading it on a miss. */
int infer_loaded_get(struct cn_pg *pg, const char *model, int version, struct infer_entry **out, char *why,
                     size_t whylen);
void infer_loaded_put(struct infer_entry *e);
/* Drops (model, version) from the cache (0 = every version); holders keep theirs. */
void infer_forget(const char *model, int version);
/* A version as text: digits are a number, else an alias ("latest" included). False when
 * it is neither. */
bool infer_version_text(const char *text, int *version, const char **alias);

/* The serving RPCs (the rest are in inference_rpc.c). */
void infer_predict(Cairn__V1__Inference_Service *s, const Cairn__V1__PredictRequest *in,
                   Cairn__V1__RawResponse_Closure done, void *cd);
void infer_infer(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                 Cairn__V1__RawResponse_Closure done, void *cd);
void infer_server_metadata(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                           Cairn__V1__RawResponse_Closure done, void *cd);
void infer_server_live(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                       Cairn__V1__RawResponse_Closure done, void *cd);
void infer_server_ready(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                        Cairn__V1__RawResponse_Closure done, void *cd);
void infer_model_metadata(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                          Cairn__V1__RawResponse_Closure done, void *cd);
void infer_model_ready(Cairn__V1__Inference_Service *s, const Cairn__V1__OipRequest *in,
                       Cairn__V1__RawResponse_Closure done, void *cd);

/* ------------------------------------------------------------------ inference_db.c */

struct cn_arena;

/* One model's routing row (inference_route.c parses it); strings malloc'd. */
struct infer_db_route {
    int64_t id, generation;
    double log_sample_rate;
    char *versions_json;      /* [[version, reference_gen], ...] ascending */
    char *aliases_json;       /* [[alias, version], ...] */
    char *experiment_json;    /* the Experiment message as JSON, or NULL */
};

int infer_db_model_create(struct cn_pg *pg, const char *name, const char *description, double rate,
                          const char *created_by, struct cn_arena *a, Cairn__V1__Model *out);
int infer_db_model_get(struct cn_pg *pg, const char *name, struct cn_arena *a, Cairn__V1__Model *out,
                       int64_t *id_out);
int infer_db_model_list(struct cn_pg *pg, const char *after, int limit, struct cn_arena *a,
                        Cairn__V1__Model ***out, size_t *n);
int infer_db_model_update(struct cn_pg *pg, const char *name, const char *description, const double *rate);
int infer_db_version_insert(struct cn_pg *pg, const char *name, const uint8_t *ubj, size_t len,
                            const char *sha256, const struct infer_meta *meta, char *const *names, size_t nnames,
                            const char *description, const char *created_by, int *version);
int infer_db_version_get(struct cn_pg *pg, const char *name, int version, struct cn_arena *a,
                         Cairn__V1__ModelVersion *out);
int infer_db_version_list(struct cn_pg *pg, const char *name, int before, int limit, struct cn_arena *a,
                          Cairn__V1__ModelVersion ***out, size_t *n);
int infer_db_version_delete(struct cn_pg *pg, const char *name, int version, char *why, size_t whylen);
int infer_db_version_ubj(struct cn_pg *pg, const char *name, int version, uint8_t **ubj, size_t *len);
int infer_db_reference_set(struct cn_pg *pg, const char *name, int version, const char *ref_json, int64_t rows);
int infer_db_reference_get(struct cn_pg *pg, const char *name, int version, char **ref_json, int64_t *gen);
int infer_db_alias_set(struct cn_pg *pg, const char *name, const char *alias, int version, int *previous);
/* CN_EEXIST while the experiment routes to the alias. */
int infer_db_alias_delete(struct cn_pg *pg, const char *name, const char *alias);
int infer_db_alias_get(struct cn_pg *pg, const char *name, const char *alias, int *version);
int infer_db_experiment_set(struct cn_pg *pg, const char *name, const char *spec_json, const int *versions,
                            size_t nversions, int64_t *started_at);
int infer_db_experiment_get(struct cn_pg *pg, const char *name, struct cn_arena *a, char **spec_json,
                            int64_t *started_at);
int infer_db_experiment_delete(struct cn_pg *pg, const char *name);
int infer_db_route_load(struct cn_pg *pg, const char *name, struct infer_db_route *out);
void infer_db_route_free(struct infer_db_route *r);
int infer_db_changed(struct cn_pg *pg, int64_t *since, void (*fn)(const char *name, int64_t gen, void *arg),
                     void *arg);
int infer_db_generation_now(struct cn_pg *pg, int64_t *gen);

/* ------------------------------------------------------------------ inference_route.c */

enum { INFER_STICKY_NONE, INFER_STICKY_HEADER, INFER_STICKY_FIELD };

struct infer_variant {
    char name[INFER_NAME_MAX + 1];
    int version;
    double cum;                     /* cumulative weight up to and including this one */
};

/* An immutable snapshot of a model's routing state; reference-counted. */
struct infer_route {
    char name[INFER_NAME_MAX + 1];
    int64_t generation;
    double log_sample_rate;
    int *versions;                  /* ascending */
    int64_t *ref_gens;              /* per version: reference generation, 0 = no reference */
    size_t nversions;
    struct { char alias[INFER_NAME_MAX + 1]; int version; } *aliases;
    size_t naliases;
    struct infer_variant *cand;     /* the experiment's candidates (aliases resolved) */
    size_t ncand;
    double total;
    char control[INFER_NAME_MAX + 1];
    int mirror_version;             /* 0 = no mirror */
    double mirror_percent;
    int sticky;                     /* INFER_STICKY_* */
    char sticky_name[INFER_NAME_MAX + 1];  /* header names lowercased */
    _Atomic int refs;
};

/* A referenced snapshot of model name (loaded on a miss): 0, CN_ENOTFOUND, CN_EUNAVAIL... */
int infer_route_get(struct cn_pg *pg, const char *name, struct infer_route **out);
void infer_route_put(struct infer_route *r);
void infer_route_invalidate(const char *name);
int infer_route_latest(const struct infer_route *r);
int infer_route_alias(const struct infer_route *r, const char *alias);   /* 0 = none; "latest" works */
bool infer_route_has_version(const struct infer_route *r, int version);
int64_t infer_route_ref_gen(const struct infer_route *r, int version);
/* The version for a call without an explicit one, and its variant name (static storage of r). */
int infer_route_choose(const struct infer_route *r, const char *sticky, const char **variant);
int infer_route_start(const char *dsn, int refresh_ms);
void infer_route_stop(void);

Cairn__V1__Experiment *infer_experiment_from_json(struct cn_arena *a, const char *model, const char *json,
                                                  int64_t started_at);

/* The drift reference of one version (bins per feature), reference-counted, cached by
 * (model, version, generation). */
struct infer_refset {
    int64_t gen;
    struct infer_bins *bins;
    size_t nbins;                   /* = features */
    _Atomic int refs;
};
int infer_refset_get(struct cn_pg *pg, const char *model, int version, int64_t gen, struct infer_refset **out);
void infer_refset_put(struct infer_refset *r);


#endif
