/* inference_rpc.c — the handlers of cairn.v1.Inference (proto/cairn/v1/inference.proto)
 * that are not serving: the registry (models, versions, drift references, aliases),
 * experiments, feedback, the stats and drift reports; and the service's settings,
 * start-up (init) and shutdown (fini). Serving (Predict, the Open Inference Protocol) is
 * in inference_serve.c.
 *
 * Each handler runs on an RPC worker with the worker's own Postgres handle and answers
 * through its closure exactly once. Input problems are field errors (INVALID_ARGUMENT)
 * naming the field to fix; something that does not exist is NOT_FOUND; a change refused
 * because something else depends on it (an alias or experiment using a version) is
 * ABORTED (409 at the gateway) saying what to change first; a database that cannot be
 * reached is UNAVAILABLE; anything else INTERNAL with the detail logged.
 *
 * Every registry write moves the model's generation (inference_db.c) and drops this
 * replica's routing snapshot at once; other replicas follow within one routing poll.
 *
 * Because the handler table is CAIRN__V1__INFERENCE__INIT(infer_), adding an RPC to the
 * proto without its handler fails the build. To add an RPC: the proto, the handler here
 * (or in inference_serve.c), any SQL in inference_db.c, a route in gateway/routes.c and
 * docs/openapi.yaml, a line in README.md.
 */
#include "inference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "arena.h"
#include "b64.h"
#include "buf.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 200
#define DESCRIPTION_MAX 4096
#define CANDIDATES_MAX 16
#define FEATURE_NAME_MAX 256

struct infer_conf infer_conf;

const struct cn_conf_def infer_conf_defs[] = {
    CN_CONF(struct infer_conf, cache_bytes, "CAIRN_MODEL_CACHE_BYTES", CN_CONF_INT, "1073741824", 1 << 20,
            INT64_C(1) << 40, "bytes of loaded boosters kept when nobody uses them (LRU beyond)"),
    CN_CONF(struct infer_conf, max_model_bytes, "CAIRN_MODEL_MAX_BYTES", CN_CONF_INT, "33554432", 1024,
            INT64_C(1) << 30,
            "largest model file accepted (the gateway's route caps uploads at 32 MiB as well)"),
    CN_CONF(struct infer_conf, max_features, "CAIRN_MODEL_MAX_FEATURES", CN_CONF_INT, "4096", 1, 1000000,
            "most features a model may have"),
    CN_CONF(struct infer_conf, validate_ms, "CAIRN_MODEL_VALIDATE_MS", CN_CONF_INT, "20000", 100, 600000,
            "time the child process validating an upload may take before it is killed"),
    CN_CONF(struct infer_conf, validate_mem_mb, "CAIRN_MODEL_VALIDATE_MEM_MB", CN_CONF_INT, "2048", 256,
            1048576, "address space of the validating child in MiB"),
    CN_CONF(struct infer_conf, max_rows, "CAIRN_PREDICT_MAX_ROWS", CN_CONF_INT, "10000", 1, 1000000,
            "rows one predict or infer call may carry"),
    CN_CONF(struct infer_conf, max_reference_rows, "CAIRN_REFERENCE_MAX_ROWS", CN_CONF_INT, "100000", 10,
            10000000, "rows a drift reference sample may have"),
    CN_CONF(struct infer_conf, refresh_ms, "CAIRN_INFERENCE_REFRESH_MS", CN_CONF_INT, "1000", 10, 600000,
            "how often each replica asks which models changed (aliases, experiments, versions)"),
    CN_CONF(struct infer_conf, log_queue, "CAIRN_PREDICTION_LOG_QUEUE", CN_CONF_INT, "100000", 1, 10000000,
            "prediction log entries waiting to be written before new ones are dropped"),
    CN_CONF(struct infer_conf, log_batch, "CAIRN_PREDICTION_LOG_BATCH", CN_CONF_INT, "100", 1, 1000,
            "prediction log rows per COPY (each streamed to the database as rows come, committed when full)"),
    CN_CONF(struct infer_conf, log_flush_ms, "CAIRN_PREDICTION_LOG_FLUSH_MS", CN_CONF_INT, "1000", 1, 600000,
            "longest a logged prediction waits for its batch to commit"),
    CN_CONF(struct infer_conf, drift_window_s, "CAIRN_DRIFT_WINDOW_S", CN_CONF_INT, "3600", 60, 31536000,
            "window of live inputs the drift report and gauges compare to the reference"),
    CN_CONF(struct infer_conf, drift_flush_s, "CAIRN_DRIFT_FLUSH_S", CN_CONF_INT, "60", 1, 3600,
            "how often live drift counts are added to Postgres and the gauges updated"),
    CN_CONF(struct infer_conf, mirror_queue, "CAIRN_MIRROR_QUEUE", CN_CONF_INT, "1000", 1, 1000000,
            "mirrored requests waiting for the mirror thread before new copies are dropped"),
};
const size_t infer_conf_ndefs = CN_ARRAY_LEN(infer_conf_defs);

/* ------------------------------------------------------------------ helpers */

static struct cn_pg *pg_of(struct cn_call *call)
{
    return cn_svc_worker_of(call)->pg;
}

static void fail_db(struct cn_call *call, int rc, const char *what)
{
    struct cn_pg *pg = pg_of(call);
    if (rc == CN_EUNAVAIL) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "database unavailable");
        call->retry_after_ms = 1000;
        return;
    }
    cn_log(CN_LOG_ERROR, "INFER-DB-ERROR", cn_call_request_id(call), "%s failed (%s, sqlstate %s): %s", what,
           cn_strerror(rc), cn_pg_sqlstate(pg), cn_pg_errmsg(pg));
    cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
}

static void no_model(struct cn_call *call, const char *name)
{
    cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "no model named %s", name);
}

/* Answers a failed model-level call: NOT_FOUND for no such model, else as fail_db. */
static void fail_model(struct cn_call *call, int rc, const char *name, const char *what)
{
    if (rc == CN_ENOTFOUND)
        no_model(call, name);
    else
        fail_db(call, rc, what);
}

/* ^[a-z0-9][a-z0-9_.-]{0,62}$ */
static bool model_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > INFER_NAME_MAX || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* ^[a-z][a-z0-9_-]*$, at most 63 characters */
static bool alias_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > INFER_NAME_MAX || s[0] < 'a' || s[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* The model name of a request; answers (404: a path that cannot name a model names none)
 * and returns false when it is malformed. */
static bool need_model(struct cn_call *call, const char *name)
{
    if (model_name_ok(name))
        return true;
    no_model(call, name);
    return false;
}

static const char *caller(struct cn_call *call)
{
    const Cairn__V1__Principal *p = cn_call_principal(call);
    return p && p->subject ? p->subject : "";
}

static bool rate_ok(double r)
{
    return isfinite(r) && r >= 0 && r <= 1;
}

static bool description_ok(struct cn_call *call, const char *d)
{
    if (strlen(d) <= DESCRIPTION_MAX)
        return true;
    cn_call_field_error(call, "description", "is longer than %d bytes", DESCRIPTION_MAX);
    return false;
}

static int page_limit(struct cn_call *call, int32_t asked)
{
    if (asked < 0 || asked > PAGE_MAX) {
        cn_call_field_error(call, "limit", "must be between 1 and %d", PAGE_MAX);
        return -1;
    }
    return asked ? asked : PAGE_DEFAULT;
}

/* ------------------------------------------------------------------ models */

static void infer_create_model(Cairn__V1__Inference_Service *service, const Cairn__V1__CreateModelRequest *in,
                               Cairn__V1__Model_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    double rate = 1.0;
    if (in->log_sample_rate_oneof_case == CAIRN__V1__CREATE_MODEL_REQUEST__LOG_SAMPLE_RATE_ONEOF_LOG_SAMPLE_RATE)
        rate = in->log_sample_rate;
    if (!model_name_ok(in->name))
        cn_call_field_error(call, "name",
                            "must be 1 to 63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit");
    if (!rate_ok(rate))
        cn_call_field_error(call, "log_sample_rate", "must be between 0 and 1");
    description_ok(call, in->description);
    if (call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    Cairn__V1__Model m;
    int rc = infer_db_model_create(pg_of(call), in->name, in->description, rate, caller(call), call->arena, &m);
    if (rc == CN_EEXIST)
        cn_call_fail(call, CAIRN__V1__CODE__ALREADY_EXISTS, "a model named %s already exists", in->name);
    else if (rc != CN_OK)
        fail_db(call, rc, "create model");
    done(rc == CN_OK ? &m : NULL, cd);
}

static void infer_get_model(Cairn__V1__Inference_Service *service, const Cairn__V1__GetModelRequest *in,
                            Cairn__V1__Model_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    Cairn__V1__Model m;
    int rc = infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL);
    if (rc != CN_OK)
        fail_model(call, rc, in->name, "get model");
    done(rc == CN_OK ? &m : NULL, cd);
}

static void infer_list_models(Cairn__V1__Inference_Service *service, const Cairn__V1__ListModelsRequest *in,
                              Cairn__V1__ModelList_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    int limit = page_limit(call, in->limit);
    /* The page token is the last name of the previous page, base64url'd (opaque). */
    char after[INFER_NAME_MAX + 1] = "";
    if (in->page_token && *in->page_token) {
        size_t n = 0;
        if (strlen(in->page_token) > 2 * INFER_NAME_MAX ||
            cn_b64url_decode(in->page_token, strlen(in->page_token), (uint8_t *)after, INFER_NAME_MAX, &n) != CN_OK ||
            (after[n] = '\0', !model_name_ok(after)))
            cn_call_field_error(call, "page_token", "is not a token this service gave out");
    }
    if (limit < 0 || call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    Cairn__V1__ModelList out = CAIRN__V1__MODEL_LIST__INIT;
    int rc = infer_db_model_list(pg_of(call), after, limit, call->arena, &out.models, &out.n_models);
    if (rc != CN_OK) {
        fail_db(call, rc, "list models");
        done(NULL, cd);
        return;
    }
    out.next_page_token = "";
    if (out.n_models == (size_t)limit) {
        const char *last = out.models[out.n_models - 1]->name;
        char *tok = cn_arena_alloc(call->arena, cn_b64url_len(strlen(last)) + 1);
        tok[cn_b64url_encode((const uint8_t *)last, strlen(last), tok)] = '\0';
        out.next_page_token = tok;
    }
    done(&out, cd);
}

static void infer_update_model(Cairn__V1__Inference_Service *service, const Cairn__V1__UpdateModelRequest *in,
                               Cairn__V1__Model_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    const char *description = NULL;
    const double *rate = NULL;
    if (in->description_oneof_case == CAIRN__V1__UPDATE_MODEL_REQUEST__DESCRIPTION_ONEOF_DESCRIPTION) {
        description = in->description;
        description_ok(call, description);
    }
    if (in->log_sample_rate_oneof_case == CAIRN__V1__UPDATE_MODEL_REQUEST__LOG_SAMPLE_RATE_ONEOF_LOG_SAMPLE_RATE) {
        rate = &in->log_sample_rate;
        if (!rate_ok(*rate))
            cn_call_field_error(call, "log_sample_rate", "must be between 0 and 1");
    }
    if (call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    int rc = CN_OK;
    if (description || rate)
        rc = infer_db_model_update(pg_of(call), in->name, description, rate);
    Cairn__V1__Model m;
    if (rc == CN_OK) {
        infer_route_invalidate(in->name);
        rc = infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL);
    }
    if (rc != CN_OK)
        fail_model(call, rc, in->name, "update model");
    done(rc == CN_OK ? &m : NULL, cd);
}

/* ------------------------------------------------------------------ versions */

/* feature_names as given: repeated, or one comma-separated value (a query parameter). */
static char **split_names(struct cn_call *call, char **given, size_t ngiven, size_t *n)
{
    *n = 0;
    size_t cap = 0;
    for (size_t i = 0; i < ngiven; i++)
        for (const char *p = given[i]; p; p = strchr(p + 1, ','))
            cap++;
    char **out = cn_arena_alloc(call->arena, (cap + 1) * sizeof *out);
    for (size_t i = 0; i < ngiven; i++) {
        const char *p = given[i];
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            out[(*n)++] = cn_arena_strndup(call->arena, p, len);
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    return out;
}

static bool names_ok(struct cn_call *call, char **names, size_t n, const struct infer_meta *meta)
{
    if (n != (size_t)meta->num_features) {
        cn_call_field_error(call, "feature_names", "names %zu features; the model has %d", n, meta->num_features);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len == 0 || len > FEATURE_NAME_MAX) {
            cn_call_field_error(call, "feature_names", "name %zu is empty or longer than %d bytes", i,
                                FEATURE_NAME_MAX);
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                cn_call_field_error(call, "feature_names", "\"%s\" is given twice", names[i]);
                return false;
            }
    }
    if (meta->n_feature_names) {
        for (size_t i = 0; i < n; i++)
            if (strcmp(names[i], meta->feature_names[i]) != 0) {
                cn_call_field_error(call, "feature_names",
                                    "the model file already names its features (feature %zu is \"%s\"); leave "
                                    "feature_names out",
                                    i, meta->feature_names[i]);
                return false;
            }
    }
    return true;
}

static void reply_version(struct cn_call *call, const char *name, int version, Cairn__V1__ModelVersion_Closure done,
                          void *cd)
{
    Cairn__V1__ModelVersion v;
    int rc = infer_db_version_get(pg_of(call), name, version, call->arena, &v);
    if (rc == CN_ENOTFOUND)
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", name, version);
    else if (rc != CN_OK)
        fail_db(call, rc, "get version");
    done(rc == CN_OK ? &v : NULL, cd);
}

static void infer_upload_version(Cairn__V1__Inference_Service *service, const Cairn__V1__UploadVersionRequest *in,
                                 Cairn__V1__ModelVersion_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name) || !description_ok(call, in->description)) {
        done(NULL, cd);
        return;
    }
    if (in->body.len == 0) {
        cn_call_field_error(call, "body", "is empty: send the XGBoost model file (JSON, UBJSON or binary) as the body");
        done(NULL, cd);
        return;
    }
    /* The model must exist before a child process is spent on its file. */
    Cairn__V1__Model m;
    int rc = infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL);
    if (rc != CN_OK) {
        fail_model(call, rc, in->name, "get model");
        done(NULL, cd);
        return;
    }
    struct infer_limits lim = {
        .max_bytes = (size_t)infer_conf.max_model_bytes,
        .max_features = (int)infer_conf.max_features,
        .time_ms = (int)infer_conf.validate_ms,
        .mem_bytes = (size_t)infer_conf.validate_mem_mb << 20,
    };
    uint8_t *ubj = NULL;
    size_t len = 0;
    struct infer_meta meta;
    memset(&meta, 0, sizeof meta);
    char why[512];
    rc = infer_model_validate(in->body.data, in->body.len, &lim, &ubj, &len, &meta, why, sizeof why);
    if (rc == CN_EINVAL) {
        cn_call_field_error(call, "body", "%s", why);
        done(NULL, cd);
        return;
    }
    if (rc != CN_OK) {
        cn_log(CN_LOG_ERROR, "INFER-VALIDATE-FAILED", cn_call_request_id(call), "%s", why);
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
        done(NULL, cd);
        return;
    }
    size_t nnames = 0;
    char **names = NULL;
    if (in->n_feature_names) {
        names = split_names(call, in->feature_names, in->n_feature_names, &nnames);
        if (!names_ok(call, names, nnames, &meta))
            goto out;
    } else {
        names = meta.feature_names;
        nnames = meta.n_feature_names;
    }
    unsigned char digest[32];
    char sha[65];
    EVP_Digest(ubj, len, digest, NULL, EVP_sha256(), NULL);
    cn_hex(digest, sizeof digest, sha);
    int version = 0;
    rc = infer_db_version_insert(pg_of(call), in->name, ubj, len, sha, &meta, names, nnames, in->description,
                                 caller(call), &version);
    if (rc == CN_ENOTFOUND) {
        no_model(call, in->name);
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "insert version");
        goto out;
    }
    infer_route_invalidate(in->name);
    cn_log(CN_LOG_INFO, "INFER-VERSION-UPLOADED", cn_call_request_id(call),
           "%s version %d: %s, %d features, %s, %zu bytes as UBJSON", in->name, version, meta.source_format,
           meta.num_features, meta.objective, len);
    free(ubj);
    infer_meta_free(&meta);
    reply_version(call, in->name, version, done, cd);
    return;
out:
    free(ubj);
    infer_meta_free(&meta);
    done(NULL, cd);
}

static void infer_list_versions(Cairn__V1__Inference_Service *service, const Cairn__V1__ListVersionsRequest *in,
                                Cairn__V1__VersionList_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    int limit = page_limit(call, in->limit);
    long long before = INT32_MAX;
    if (in->page_token && *in->page_token && cn_parse_int(in->page_token, 2, INT32_MAX, &before) != CN_OK)
        cn_call_field_error(call, "page_token", "is not a token this service gave out");
    if (limit < 0 || call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    Cairn__V1__VersionList out = CAIRN__V1__VERSION_LIST__INIT;
    int rc = infer_db_version_list(pg_of(call), in->name, (int)before, limit, call->arena, &out.versions,
                                   &out.n_versions);
    if (rc == CN_OK && out.n_versions == 0) {
        Cairn__V1__Model m;
        rc = infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL);
    }
    if (rc != CN_OK) {
        fail_model(call, rc, in->name, "list versions");
        done(NULL, cd);
        return;
    }
    out.next_page_token = "";
    if (out.n_versions == (size_t)limit && out.versions[out.n_versions - 1]->version > 1)
        out.next_page_token = cn_arena_printf(call->arena, "%d", out.versions[out.n_versions - 1]->version);
    done(&out, cd);
}

/* A version given as text (number, alias or "latest") resolved in the registry; answers
 * and returns 0 when it names nothing. */
static int resolve_version(struct cn_call *call, const char *name, const char *text)
{
    int version = 0;
    const char *alias = NULL;
    if (!infer_version_text(text, &version, &alias)) {
        cn_call_field_error(call, "version", "must be a version number, an alias or \"latest\"");
        return 0;
    }
    if (version)
        return version;
    int rc = infer_db_alias_get(pg_of(call), name, alias, &version);
    if (rc == CN_ENOTFOUND) {
        Cairn__V1__Model m;
        rc = infer_db_model_get(pg_of(call), name, call->arena, &m, NULL);
        if (rc == CN_OK)
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no %s %s", name,
                         strcmp(alias, "latest") == 0 ? "versions: no" : "alias", alias);
        else if (rc == CN_ENOTFOUND)
            no_model(call, name);
        else
            fail_db(call, rc, "get model");
        return 0;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "resolve alias");
        return 0;
    }
    return version;
}

static void infer_get_version(Cairn__V1__Inference_Service *service, const Cairn__V1__GetVersionRequest *in,
                              Cairn__V1__ModelVersion_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    int version = resolve_version(call, in->name, in->version);
    if (version == 0) {
        done(NULL, cd);
        return;
    }
    reply_version(call, in->name, version, done, cd);
}

static void infer_delete_version(Cairn__V1__Inference_Service *service, const Cairn__V1__DeleteVersionRequest *in,
                                 Cairn__V1__Empty_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    char why[256] = "";
    int rc = infer_db_version_delete(pg_of(call), in->name, in->version, why, sizeof why);
    if (rc == CN_OK) {
        infer_route_invalidate(in->name);
        infer_forget(in->name, in->version);
        cn_log(CN_LOG_INFO, "INFER-VERSION-DELETED", cn_call_request_id(call), "%s version %d", in->name,
               in->version);
        Cairn__V1__Empty e = CAIRN__V1__EMPTY__INIT;
        done(&e, cd);
        return;
    }
    if (rc == CN_EEXIST)
        cn_call_fail(call, CAIRN__V1__CODE__ABORTED, "%s", why);
    else if (rc == CN_ENOTFOUND)
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", in->name, in->version);
    else
        fail_db(call, rc, "delete version");
    done(NULL, cd);
}

/* The drift reference: bins per feature from a sample of rows, stored with the version. */
static void infer_set_reference(Cairn__V1__Inference_Service *service, const Cairn__V1__SetReferenceRequest *in,
                                Cairn__V1__ModelVersion_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    struct infer_caps caps = {.max_rows = (size_t)infer_conf.max_reference_rows,
                              .max_cells = (size_t)infer_conf.max_reference_rows * 1024};
    struct infer_v1_req req;
    struct infer_err err;
    if (infer_v1_parse(in->body.data, in->body.len, &caps, &req, &err) != CN_OK) {
        cn_call_field_error(call, err.field[0] ? err.field : "body", "%s", err.message);
        done(NULL, cd);
        return;
    }
    struct infer_entry *e = NULL;
    char why[256];
    int rc = infer_loaded_get(pg_of(call), in->name, in->version, &e, why, sizeof why);
    if (rc != CN_OK) {
        if (rc == CN_ENOTFOUND) {
            Cairn__V1__Model m;
            if (infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL) == CN_ENOTFOUND)
                no_model(call, in->name);
            else
                cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", in->name, in->version);
        } else if (rc == CN_EUNAVAIL) {
            fail_db(call, rc, "load version");
        } else {
            cn_log(CN_LOG_ERROR, "INFER-LOAD-FAILED", cn_call_request_id(call), "%s", why);
            cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
        }
        infer_v1_req_free(&req);
        done(NULL, cd);
        return;
    }
    float *x = NULL;
    size_t nrows = 0, nf = (size_t)e->v.meta.num_features;
    rc = infer_v1_rows(&req, &e->v.meta, &caps, &x, &nrows, &err);
    infer_loaded_put(e);
    infer_v1_req_free(&req);
    if (rc != CN_OK) {
        cn_call_field_error(call, err.field[0] ? err.field : "instances", "%s", err.message);
        done(NULL, cd);
        return;
    }
    struct infer_bins *bins = cn_calloc(nf ? nf : 1, sizeof *bins);
    for (size_t f = 0; f < nf; f++)
        infer_bins_build(x + f, nrows, nf, &bins[f]);
    free(x);
    json_t *j = infer_bins_to_json(bins, nf);
    infer_bins_array_free(bins, nf);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    rc = infer_db_reference_set(pg_of(call), in->name, in->version, text, (int64_t)nrows);
    free(text);
    if (rc != CN_OK) {
        if (rc == CN_ENOTFOUND)
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", in->name, in->version);
        else
            fail_db(call, rc, "set reference");
        done(NULL, cd);
        return;
    }
    infer_route_invalidate(in->name);
    reply_version(call, in->name, in->version, done, cd);
}

/* ------------------------------------------------------------------ aliases */

static void infer_set_alias(Cairn__V1__Inference_Service *service, const Cairn__V1__SetAliasRequest *in,
                            Cairn__V1__Alias_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    if (!alias_name_ok(in->alias))
        cn_call_field_error(call, "alias", "must match ^[a-z][a-z0-9_-]*$ (at most 63 characters)");
    else if (strcmp(in->alias, "latest") == 0)
        cn_call_field_error(call, "alias", "\"latest\" is implicit (the highest version) and cannot be set");
    if (in->version <= 0)
        cn_call_field_error(call, "version", "must be a version number (1, 2, ...)");
    if (call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    /* Warm before the move: the first call routed to the new version finds it loaded. */
    char why[256];
    int rc = infer_warm(pg_of(call), in->name, in->version, why, sizeof why);
    if (rc == CN_EUNAVAIL) {
        fail_db(call, rc, "load version");
        done(NULL, cd);
        return;
    }
    if (rc != CN_OK && rc != CN_ENOTFOUND)
        cn_log(CN_LOG_WARN, "INFER-WARM-FAILED", cn_call_request_id(call), "%s", why);
    int previous = 0;
    rc = infer_db_alias_set(pg_of(call), in->name, in->alias, in->version, &previous);
    if (rc != CN_OK) {
        if (rc == CN_ENOTFOUND) {
            Cairn__V1__Model m;
            if (infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL) == CN_ENOTFOUND)
                no_model(call, in->name);
            else
                cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", in->name, in->version);
        } else {
            fail_db(call, rc, "set alias");
        }
        done(NULL, cd);
        return;
    }
    infer_route_invalidate(in->name);
    cn_log(CN_LOG_INFO, "INFER-ALIAS-MOVED", cn_call_request_id(call), "%s %s: %d -> %d", in->name, in->alias,
           previous, in->version);
    Cairn__V1__Alias a = CAIRN__V1__ALIAS__INIT;
    a.model = in->name;
    a.alias = in->alias;
    a.version = in->version;
    a.previous_version = previous;
    done(&a, cd);
}

static void infer_delete_alias(Cairn__V1__Inference_Service *service, const Cairn__V1__DeleteAliasRequest *in,
                               Cairn__V1__Empty_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    int rc = infer_db_alias_delete(pg_of(call), in->name, in->alias);
    if (rc == CN_OK) {
        infer_route_invalidate(in->name);
        Cairn__V1__Empty e = CAIRN__V1__EMPTY__INIT;
        done(&e, cd);
        return;
    }
    if (rc == CN_EEXIST)
        cn_call_fail(call, CAIRN__V1__CODE__ABORTED,
                     "the model's experiment routes to alias %s: change or delete the experiment first", in->alias);
    else if (rc == CN_ENOTFOUND)
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no alias %s", in->name, in->alias);
    else
        fail_db(call, rc, "delete alias");
    done(NULL, cd);
}

/* ------------------------------------------------------------------ experiments */

/* Whether version or alias (exactly one) names something in route; field is the place. */
static bool target_ok(struct cn_call *call, const struct infer_route *r, int version, const char *alias,
                      const char *field)
{
    bool has_alias = alias && *alias;
    if ((version != 0) == has_alias) {
        cn_call_field_error(call, field, "give exactly one of version and alias");
        return false;
    }
    if (version < 0) {
        cn_call_field_error(call, field, "version must be a version number (1, 2, ...)");
        return false;
    }
    if (version && !infer_route_has_version(r, version)) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", r->name, version);
        return false;
    }
    if (has_alias && (strcmp(alias, "latest") == 0 || infer_route_alias(r, alias) == 0)) {
        if (strcmp(alias, "latest") == 0)
            cn_call_field_error(call, field, "\"latest\" moves with every upload; name a version or an alias");
        else
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no alias %s", r->name, alias);
        return false;
    }
    return true;
}

static bool sticky_ok(const char *k)
{
    const char *name = NULL;
    if (k[0] == '\0')
        return true;
    if (strncmp(k, "header:", 7) == 0)
        name = k + 7;
    else if (strncmp(k, "field:", 6) == 0)
        name = k + 6;
    if (name == NULL || name[0] == '\0' || strlen(name) > INFER_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == ':')
            return false;
    return true;
}

static void reply_experiment(struct cn_call *call, const char *name, Cairn__V1__Experiment_Closure done, void *cd)
{
    char *spec = NULL;
    int64_t started = 0;
    int rc = infer_db_experiment_get(pg_of(call), name, call->arena, &spec, &started);
    Cairn__V1__Experiment *e = NULL;
    if (rc == CN_OK) {
        e = infer_experiment_from_json(call->arena, name, spec, started);
        if (e == NULL)
            cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
    } else if (rc == CN_ENOTFOUND) {
        Cairn__V1__Model m;
        rc = infer_db_model_get(pg_of(call), name, call->arena, &m, NULL);
        if (rc == CN_OK)
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no experiment", name);
        else if (rc == CN_ENOTFOUND)
            no_model(call, name);
        else
            fail_db(call, rc, "get model");
    } else {
        fail_db(call, rc, "get experiment");
    }
    done(e, cd);
}

static void infer_set_experiment(Cairn__V1__Inference_Service *service, const Cairn__V1__SetExperimentRequest *in,
                                 Cairn__V1__Experiment_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    if (in->n_candidates == 0 || in->n_candidates > CANDIDATES_MAX) {
        cn_call_field_error(call, "candidates", "give 1 to %d candidates ({version or alias, weight})",
                            CANDIDATES_MAX);
        done(NULL, cd);
        return;
    }
    struct infer_route *r = NULL;
    int rc = infer_route_get(pg_of(call), in->name, &r);
    if (rc != CN_OK) {
        fail_model(call, rc, in->name, "routing state");
        done(NULL, cd);
        return;
    }
    Cairn__V1__Experiment spec = CAIRN__V1__EXPERIMENT__INIT;
    spec.model = "";
    spec.candidates = cn_arena_alloc(call->arena, in->n_candidates * sizeof *spec.candidates);
    int *versions = cn_arena_alloc(call->arena, (in->n_candidates + 1) * sizeof *versions);
    size_t nversions = 0;
    for (size_t i = 0; i < in->n_candidates; i++) {
        const Cairn__V1__Candidate *c = in->candidates[i];
        char field[64];
        snprintf(field, sizeof field, "candidates[%zu]", i);
        if (!target_ok(call, r, c->version, c->alias, field))
            goto out;
        if (!isfinite(c->weight) || c->weight <= 0) {
            snprintf(field, sizeof field, "candidates[%zu].weight", i);
            cn_call_field_error(call, field, "must be a finite number above 0");
            goto out;
        }
        Cairn__V1__Candidate *o = cn_arena_alloc(call->arena, sizeof *o);
        cairn__v1__candidate__init(o);
        o->version = c->version;
        o->alias = c->version ? "" : c->alias;
        o->weight = c->weight;
        o->variant = c->variant && *c->variant ? c->variant
                     : c->version               ? cn_arena_printf(call->arena, "v%d", c->version)
                                                : c->alias;
        snprintf(field, sizeof field, "candidates[%zu].variant", i);
        if (!model_name_ok(o->variant) || strcmp(o->variant, "mirror") == 0 || strcmp(o->variant, "default") == 0) {
            cn_call_field_error(call, field,
                                "must match ^[a-z0-9][a-z0-9_.-]{0,62}$ and not be \"mirror\" or \"default\"");
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(spec.candidates[j]->variant, o->variant) == 0) {
                cn_call_field_error(call, field, "variant \"%s\" is named twice: give each candidate its own",
                                    o->variant);
                goto out;
            }
        spec.candidates[spec.n_candidates++] = o;
        if (c->version)
            versions[nversions++] = c->version;
    }
    if (in->mirror) {
        const Cairn__V1__Mirror *mi = in->mirror;
        if (!target_ok(call, r, mi->version, mi->alias, "mirror"))
            goto out;
        if (!isfinite(mi->percent) || mi->percent < 0 || mi->percent > 100) {
            cn_call_field_error(call, "mirror.percent", "must be between 0 and 100");
            goto out;
        }
        Cairn__V1__Mirror *o = cn_arena_alloc(call->arena, sizeof *o);
        cairn__v1__mirror__init(o);
        o->version = mi->version;
        o->alias = mi->version ? "" : mi->alias;
        o->percent = mi->percent;
        spec.mirror = o;
        if (mi->version)
            versions[nversions++] = mi->version;
    }
    if (!sticky_ok(in->sticky_key)) {
        cn_call_field_error(call, "sticky_key", "must be \"header:<name>\", \"field:<name>\" or empty");
        goto out;
    }
    spec.sticky_key = in->sticky_key;
    /* Candidates' versions load now, before traffic reaches them. */
    for (size_t i = 0; i < spec.n_candidates; i++) {
        int v = spec.candidates[i]->version ? spec.candidates[i]->version
                                            : infer_route_alias(r, spec.candidates[i]->alias);
        char why[256];
        if (v && infer_warm(pg_of(call), in->name, v, why, sizeof why) != CN_OK)
            cn_log(CN_LOG_WARN, "INFER-WARM-FAILED", cn_call_request_id(call), "%s", why);
    }
    struct cn_buf b = {0};
    cn_json_from_proto(&spec.base, &b);
    cn_buf_putc(&b, '\0');
    int64_t started = 0;
    rc = infer_db_experiment_set(pg_of(call), in->name, b.data, versions, nversions, &started);
    cn_buf_free(&b);
    if (rc != CN_OK) {
        if (rc == CN_ENOTFOUND)
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s or a version it names no longer exists",
                         in->name);
        else
            fail_db(call, rc, "set experiment");
        goto out;
    }
    infer_route_invalidate(in->name);
    infer_route_put(r);
    cn_log(CN_LOG_INFO, "INFER-EXPERIMENT-SET", cn_call_request_id(call), "%s: %zu candidates%s", in->name,
           spec.n_candidates, spec.mirror ? " and a mirror" : "");
    reply_experiment(call, in->name, done, cd);
    return;
out:
    infer_route_put(r);
    done(NULL, cd);
}

static void infer_get_experiment(Cairn__V1__Inference_Service *service, const Cairn__V1__GetExperimentRequest *in,
                                 Cairn__V1__Experiment_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    reply_experiment(call, in->name, done, cd);
}

static void infer_delete_experiment(Cairn__V1__Inference_Service *service,
                                    const Cairn__V1__DeleteExperimentRequest *in, Cairn__V1__Empty_Closure done,
                                    void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    int rc = infer_db_experiment_delete(pg_of(call), in->name);
    if (rc == CN_OK) {
        infer_route_invalidate(in->name);
        Cairn__V1__Empty e = CAIRN__V1__EMPTY__INIT;
        done(&e, cd);
        return;
    }
    if (rc == CN_ENOTFOUND)
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no experiment", in->name);
    else
        fail_db(call, rc, "delete experiment");
    done(NULL, cd);
}

/* ------------------------------------------------------------------ outcomes and reports */

static void infer_feedback(Cairn__V1__Inference_Service *service, const Cairn__V1__FeedbackRequest *in,
                           Cairn__V1__Empty_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    const double *label = NULL, *reward = NULL;
    if (in->label_oneof_case == CAIRN__V1__FEEDBACK_REQUEST__LABEL_ONEOF_LABEL)
        label = &in->label;
    if (in->reward_oneof_case == CAIRN__V1__FEEDBACK_REQUEST__REWARD_ONEOF_REWARD)
        reward = &in->reward;
    size_t rid = strlen(in->request_id);
    if (rid == 0 || rid > 128)
        cn_call_field_error(call, "request_id", "give the request_id of the predict answer (1 to 128 bytes)");
    if (!label && !reward)
        cn_call_field_error(call, "label", "give a label (the true outcome) or a reward, or both");
    if (label && !isfinite(*label))
        cn_call_field_error(call, "label", "must be a finite number");
    if (reward && !isfinite(*reward))
        cn_call_field_error(call, "reward", "must be a finite number");
    if (call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    int rc = infer_feedback_store(pg_of(call), in->name, in->request_id, label, reward);
    if (rc == CN_OK) {
        Cairn__V1__Empty e = CAIRN__V1__EMPTY__INIT;
        done(&e, cd);
        return;
    }
    if (rc == CN_ENOTFOUND)
        no_model(call, in->name);
    else if (rc == CN_EINVAL)
        cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT, "feedback refused");
    else
        fail_db(call, rc, "store feedback");
    done(NULL, cd);
}

static void infer_get_stats(Cairn__V1__Inference_Service *service, const Cairn__V1__GetStatsRequest *in,
                            Cairn__V1__ModelStats_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    if (in->since < 0)
        cn_call_field_error(call, "since", "must be unix milliseconds (or 0: since the experiment started)");
    if (!isfinite(in->alpha) || in->alpha < 0 || in->alpha >= 0.5)
        cn_call_field_error(call, "alpha", "must be above 0 and below 0.5 (0 = 0.05)");
    if (call->code != CAIRN__V1__CODE__OK) {
        done(NULL, cd);
        return;
    }
    Cairn__V1__Model m;
    int rc = infer_db_model_get(pg_of(call), in->name, call->arena, &m, NULL);
    if (rc != CN_OK) {
        fail_model(call, rc, in->name, "get model");
        done(NULL, cd);
        return;
    }
    const char *control = NULL;
    if (m.experiment && m.experiment->n_candidates)
        control = m.experiment->candidates[0]->variant;
    Cairn__V1__ModelStats out;
    char why[256] = "";
    rc = infer_stats_report(pg_of(call), in->name, in->since, in->alpha, control, m.log_sample_rate, call->alloc,
                            &out, why, sizeof why);
    switch (rc) {
    case CN_OK:
        done(&out, cd);
        return;
    case CN_EINVAL:
        cn_call_fail(call, CAIRN__V1__CODE__INVALID_ARGUMENT, "%s", why);
        break;
    case CN_ENOTFOUND:
        no_model(call, in->name);
        break;
    case CN_ETIMEDOUT:
        cn_call_fail(call, CAIRN__V1__CODE__DEADLINE_EXCEEDED, "%s", why);
        break;
    default:
        fail_db(call, rc, why);
    }
    done(NULL, cd);
}

static void infer_get_drift(Cairn__V1__Inference_Service *service, const Cairn__V1__GetDriftRequest *in,
                            Cairn__V1__DriftReport_Closure done, void *cd)
{
    (void)service;
    struct cn_call *call = cd;
    if (!need_model(call, in->name)) {
        done(NULL, cd);
        return;
    }
    if (in->window_s < 0 || in->window_s > 366 * 86400) {
        cn_call_field_error(call, "window_s", "must be between 60 s and a year (0 = CAIRN_DRIFT_WINDOW_S)");
        done(NULL, cd);
        return;
    }
    int version = 0;
    if (in->version && *in->version) {
        version = resolve_version(call, in->name, in->version);
    } else {
        if (infer_db_alias_get(pg_of(call), in->name, "production", &version) != CN_OK)
            version = resolve_version(call, in->name, "latest");
    }
    if (version == 0) {
        done(NULL, cd);
        return;
    }
    char *ref_json = NULL;
    int64_t gen = 0;
    int rc = infer_db_reference_get(pg_of(call), in->name, version, &ref_json, &gen);
    if (rc == CN_ENOTFOUND) {
        Cairn__V1__ModelVersion v;
        rc = infer_db_version_get(pg_of(call), in->name, version, call->arena, &v);
        if (rc == CN_OK)
            cn_call_fail(call, CAIRN__V1__CODE__ABORTED,
                         "version %d of %s has no drift reference: PUT "
                         "/v1/models/%s/versions/%d/reference with a sample of its training rows first",
                         version, in->name, in->name, version);
        else if (rc == CN_ENOTFOUND)
            cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "model %s has no version %d", in->name, version);
        else
            fail_db(call, rc, "get version");
        done(NULL, cd);
        return;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "get reference");
        done(NULL, cd);
        return;
    }
    json_t *j = json_loads(ref_json, 0, NULL);
    free(ref_json);
    struct infer_bins *bins = NULL;
    size_t nf = 0;
    rc = infer_bins_from_json(j, &bins, &nf);
    json_decref(j);
    if (rc != CN_OK) {
        cn_log(CN_LOG_ERROR, "INFER-BAD-REFERENCE", cn_call_request_id(call), "stored reference of %s %d unreadable",
               in->name, version);
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
        done(NULL, cd);
        return;
    }
    Cairn__V1__ModelVersion v;
    const char *const *names = NULL;
    if (infer_db_version_get(pg_of(call), in->name, version, call->arena, &v) == CN_OK && v.n_feature_names == nf)
        names = (const char *const *)v.feature_names;
    Cairn__V1__DriftReport out;
    char why[256] = "";
    int64_t window = in->window_s ? in->window_s : infer_conf.drift_window_s;
    rc = infer_drift_report(pg_of(call), in->name, version, bins, nf, names, window, call->alloc, &out, why,
                            sizeof why);
    infer_bins_array_free(bins, nf);
    switch (rc) {
    case CN_OK:
        done(&out, cd);
        return;
    case CN_ENOTFOUND:
        cn_call_fail(call, CAIRN__V1__CODE__ABORTED, "version %d of %s has no drift reference", version, in->name);
        break;
    case CN_EINVAL:
        cn_call_field_error(call, "window_s", "%s", why);
        break;
    default:
        fail_db(call, rc, why);
    }
    done(NULL, cd);
}

/* ------------------------------------------------------------------ the service */

Cairn__V1__Inference_Service infer_service = CAIRN__V1__INFERENCE__INIT(infer_);

int infer_init(void)
{
    const char *dsn = infer_svc.common.pg_dsn;
    int rc = infer_serve_start(dsn);
    if (rc != CN_OK) {
        cn_log(CN_LOG_ERROR, "INFER-START-FAILED", NULL, "model cache and mirror: %s", cn_strerror(rc));
        return -1;
    }
    rc = infer_route_start(dsn, (int)infer_conf.refresh_ms);
    if (rc == CN_OK)
        rc = infer_log_start(dsn, (size_t)infer_conf.log_queue, (size_t)infer_conf.log_batch,
                             (int)infer_conf.log_flush_ms);
    if (rc == CN_OK)
        rc = infer_drift_start(dsn, (int)infer_conf.drift_flush_s,
                               (int)(infer_conf.drift_window_s > infer_conf.drift_flush_s ? infer_conf.drift_window_s
                                                                                          : infer_conf.drift_flush_s));
    if (rc != CN_OK) {
        cn_log(CN_LOG_ERROR, "INFER-START-FAILED", NULL, "background threads: %s", cn_strerror(rc));
        infer_fini();
        return -1;
    }
    return 0;
}

/* After the workers stopped: nothing predicts any more. */
void infer_fini(void)
{
    infer_serve_stop(); /* the mirror first: it writes to the log */
    infer_log_stop(2000);
    infer_drift_stop();
    infer_route_stop();
}
