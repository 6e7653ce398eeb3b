/* inference_model.c — model files and boosters: an upload is validated by a short-lived
 * child process, converted to UBJSON and described (struct infer_meta); stored files are
 * loaded in-process as shared boosters that every worker predicts with.
 *
 * XGBoost's own docs warn that a model file it did not write can crash it, so an upload is
 * never loaded by the service itself: infer_model_validate spawns the service's binary again
 * (`<exe> __validate-model <max_features> <mem_mb> <cpu_s>`, posix_spawn, never fork: libgomp
 * hangs in a forked child) under CPU, memory and wall-clock limits, writes the file to its
 * stdin and reads back one JSON line (ok + metadata, or the error) followed by the UBJSON
 * bytes. Anything else — a crash, a signal, a hang, garbage — is the file's fault and comes
 * back as CN_EINVAL with a sentence for the user. The child (infer_model_validate_main) and
 * infer_booster_load share open_booster, so what the registry stores is exactly what
 * serving reads.
 *
 * infer_booster_predict is the hot path (~25 us of XGBoost per row): in-place prediction
 * from a dense float matrix with a constant config, the result copied out at once because
 * XGBoost's output buffer is per thread and per booster. gblinear has no in-place
 * prediction in XGBoost 1.7, so those boosters go through a DMatrix instead.
 * To read another field from a booster: a member in struct infer_meta, read it in
 * read_meta, carry it in meta_to_json/meta_from_json.
 */
#include "inference_model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <xgboost/c_api.h>

#include "err.h"
#include "util.h"

extern char **environ;

const char *infer_model_exe = "/proc/self/exe";

#define VALIDATE_ARG "__validate-model"
#define MAX_OUTPUTS 4096    /* values per row; more is not a model anyone serves */
#define STDERR_KEEP 4096    /* of the child's stderr, for the first line of an error */
#define MAX_NAME_BYTES 1024 /* per feature name or type */

/* The in-place prediction config of PLATFORM.md: cache_id and missing are required. */
static const char predict_config[] = "{\"type\":0,\"training\":false,\"iteration_begin\":0,"
                                     "\"iteration_end\":0,\"strict_shape\":false,"
                                     "\"missing\":NaN,\"cache_id\":0}";

struct infer_booster {
    BoosterHandle h;
    size_t num_features;
    size_t outputs; /* values per row */
    bool inplace;   /* false for gblinear: predict through a DMatrix */
    size_t bytes;   /* estimate of what the loaded booster holds */
};

/* ------------------------------------------------------------------ small helpers */

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (why == NULL || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* The useful part of one line of XGBoost's error text: without the "[05:09:29] " time
 * stamp and the "src/learner.cc:767: " location, which mean nothing to a user. Writes at
 * most outlen-1 characters. */
static void clean_line(const char *s, size_t n, char *out, size_t outlen)
{
    const char *end = s + n;
    const char *nl = memchr(s, '\n', n);
    if (nl != NULL)
        end = nl;
    if (s < end && *s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (close != NULL && close + 1 < end && close[1] == ' ')
            s = close + 2;
    }
    /* "path/file.cc:123: message": skip the location when the first word is one. */
    const char *sp = memchr(s, ' ', (size_t)(end - s));
    if (sp != NULL && sp - s >= 3 && sp[-1] == ':') {
        const char *d = sp - 2;
        while (d > s && *d >= '0' && *d <= '9')
            d--;
        if (d < sp - 2 && *d == ':')
            s = sp + 1;
    }
    while (end > s && (end[-1] == ' ' || end[-1] == '\r' || end[-1] == ':'))
        end--;
    snprintf(out, outlen, "%.*s", (int)(end - s), s);
}

/* XGBoost's last error on this thread, first line only (the rest is a stack trace). */
static void xgb_why(char *why, size_t whylen, const char *what)
{
    const char *e = XGBGetLastError();
    char line[256];
    clean_line(e ? e : "", e ? strlen(e) : 0, line, sizeof line);
    set_why(why, whylen, "%s: %s", what, line[0] ? line : "unknown XGBoost error");
}

static char *dup_capped(const char *s) { return cn_strndup(s, strnlen(s, MAX_NAME_BYTES)); }

/* Reports the format of an uploaded file, for the registry; XGBoost detects it again on
 * load. JSON is '{' then (after white space) '"' or '}'; XGBoost's UBJSON is '{' followed
 * at once by a length marker (i, U, I, l, L) or an optimised-container marker; anything
 * else is the old binary format (with or without its "binf" magic). */
static void detect_format(const uint8_t *p, size_t n, char out[8])
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i < n && p[i] == '{') {
        size_t j = i + 1;
        if (i == 0 && j < n && strchr("iUIlL$#", p[j]) != NULL && p[j] != '\0') {
            snprintf(out, 8, "ubjson");
            return;
        }
        while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r' || p[j] == '\n'))
            j++;
        if (j < n && (p[j] == '"' || p[j] == '}')) {
            snprintf(out, 8, "json");
            return;
        }
        snprintf(out, 8, "ubjson");
        return;
    }
    snprintf(out, 8, "binary");
}

void infer_meta_free(struct infer_meta *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_feature_names; i++)
        free(m->feature_names[i]);
    free(m->feature_names);
    for (size_t i = 0; i < m->n_feature_types; i++)
        free(m->feature_types[i]);
    free(m->feature_types);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ boosters */

/* Reads "feature_name" or "feature_type" of h into *out and *n (0 or num_features strings). */
static int read_str_info(BoosterHandle h, const char *field, size_t num_features, char ***out,
                         size_t *n, char *why, size_t whylen)
{
    bst_ulong len = 0;
    const char **v = NULL;
    *out = NULL;
    *n = 0;
    if (XGBoosterGetStrFeatureInfo(h, field, &len, &v) != 0) {
        xgb_why(why, whylen, "the model's feature information could not be read");
        return CN_EINVAL;
    }
    if (len == 0)
        return CN_OK;
    if (len != num_features) {
        set_why(why, whylen, "the model has %llu entries of %s for %zu features",
                (unsigned long long)len, field, num_features);
        return CN_EINVAL;
    }
    /* Copied at once: the strings live in XGBoost's thread-local store. */
    char **names = cn_calloc(len, sizeof *names);
    for (bst_ulong i = 0; i < len; i++)
        names[i] = dup_capped(v[i] ? v[i] : "");
    *out = names;
    *n = len;
    return CN_OK;
}

/* A string at a path of objects in j, or "". */
static const char *json_path_str(const json_t *j, const char *const *path, size_t n)
{
    for (size_t i = 0; i < n && j != NULL; i++)
        j = json_object_get(j, path[i]);
    return json_is_string(j) ? json_string_value(j) : "";
}

/* Fills every field of m but source_format and outputs from h. */
static int read_meta(BoosterHandle h, struct infer_meta *m, int max_features, char *why,
                     size_t whylen)
{
    int rc = CN_EINVAL;
    json_t *cfg = NULL;
    bst_ulong nf = 0;
    if (XGBoosterGetNumFeature(h, &nf) != 0) {
        xgb_why(why, whylen, "the model's feature count could not be read");
        goto out;
    }
    if (nf == 0) {
        set_why(why, whylen, "the model has no features");
        goto out;
    }
    if (nf > (bst_ulong)max_features) {
        set_why(why, whylen,
                "the model has %llu features; the limit is %d (CAIRN_MODEL_MAX_FEATURES)",
                (unsigned long long)nf, max_features);
        goto out;
    }
    m->num_features = (int)nf;
    if (XGBoosterBoostedRounds(h, &m->rounds) != 0) {
        xgb_why(why, whylen, "the model's rounds could not be read");
        goto out;
    }
    bst_ulong clen = 0;
    const char *cstr = NULL;
    if (XGBoosterSaveJsonConfig(h, &clen, &cstr) != 0) {
        xgb_why(why, whylen, "the model's configuration could not be read");
        goto out;
    }
    cfg = json_loadb(cstr, clen, 0, NULL);
    if (cfg == NULL) {
        set_why(why, whylen, "the model's configuration is not JSON");
        goto out;
    }
    const char *objective = json_path_str(cfg, (const char *[]){"learner", "objective", "name"}, 3);
    if (*objective == '\0')
        objective =
            json_path_str(cfg, (const char *[]){"learner", "learner_train_param", "objective"}, 3);
    snprintf(m->objective, sizeof m->objective, "%s", objective);
    const char *booster =
        json_path_str(cfg, (const char *[]){"learner", "gradient_booster", "name"}, 3);
    if (*booster == '\0')
        booster =
            json_path_str(cfg, (const char *[]){"learner", "learner_train_param", "booster"}, 3);
    snprintf(m->booster, sizeof m->booster, "%s", booster);
    long long ncls = 0;
    const char *s =
        json_path_str(cfg, (const char *[]){"learner", "learner_model_param", "num_class"}, 3);
    if (*s != '\0' && cn_parse_int(s, 0, INT_MAX, &ncls) != 0) {
        set_why(why, whylen, "the model's num_class is not a number");
        goto out;
    }
    /* A class count no tree set could back (a doctored file) is refused by itself, not by
     * whatever the child's memory limit makes of it (no limit under ASan). */
    if (ncls > MAX_OUTPUTS) {
        set_why(why, whylen, "the model claims %lld classes; at most %d are served", ncls, MAX_OUTPUTS);
        goto out;
    }
    m->num_classes = (int)ncls;
    rc = read_str_info(h, "feature_name", nf, &m->feature_names, &m->n_feature_names, why, whylen);
    if (rc != 0)
        goto out;
    rc = read_str_info(h, "feature_type", nf, &m->feature_types, &m->n_feature_types, why, whylen);
out:
    json_decref(cfg);
    return rc;
}

/* Runs the prediction of nrows x ncols floats at x; *res points into XGBoost's per-thread
 * buffer, valid until this thread's next call on b. *total is the number of values. */
static int predict_raw(struct infer_booster *b, const float *x, size_t nrows, size_t ncols,
                       const float **res, size_t *total, char *why, size_t whylen)
{
    const bst_ulong *shape = NULL;
    bst_ulong dim = 0;
    if (b->inplace) {
        /* The array interface names the caller's memory directly: no copy. */
        char iface[160];
        snprintf(iface, sizeof iface,
                 "{\"data\":[%" PRIuPTR
                 ",true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
                 (uintptr_t)x, nrows, ncols);
        if (XGBoosterPredictFromDense(b->h, iface, predict_config, NULL, &shape, &dim, res) != 0) {
            xgb_why(why, whylen, "prediction failed");
            return CN_EINTERNAL;
        }
    } else {
        DMatrixHandle dm = NULL;
        if (XGDMatrixCreateFromMat(x, nrows, ncols, NAN, &dm) != 0) {
            xgb_why(why, whylen, "prediction failed");
            return CN_EINTERNAL;
        }
        int e = XGBoosterPredictFromDMatrix(b->h, dm, predict_config, &shape, &dim, res);
        if (e != 0)
            xgb_why(why, whylen, "prediction failed");
        /* The result lives in the booster's per-thread buffer, not in the DMatrix. */
        XGDMatrixFree(dm);
        if (e != 0)
            return CN_EINTERNAL;
    }
    size_t n = dim > 0 ? 1 : 0;
    for (bst_ulong i = 0; i < dim; i++)
        n *= shape[i];
    *total = n;
    return CN_OK;
}

/* Loads buf into a booster with nthread=1, reads its metadata and predicts one row of
 * missing values to learn how many values a row gives (and to warm it). On success *out
 * and *meta (all but source_format) are filled; on failure neither is. */
static int open_booster(const void *buf, size_t len, int max_features, struct infer_booster **out,
                        struct infer_meta *meta, char *why, size_t whylen)
{
    int rc = CN_EINVAL;
    struct infer_booster *b = cn_calloc(1, sizeof *b);
    float *row = NULL;
    memset(meta, 0, sizeof *meta);
    if (len == 0) {
        set_why(why, whylen, "the model file is empty");
        goto out;
    }
    if (XGBoosterCreate(NULL, 0, &b->h) != 0) {
        xgb_why(why, whylen, "XGBoost could not create a booster");
        rc = CN_EINTERNAL;
        goto out;
    }
    /* One thread per booster: the service parallelises across requests (PLATFORM.md).
     * Set before the load too, or loading starts an OpenMP team of every core on the
     * calling thread. */
    if (XGBoosterSetParam(b->h, "nthread", "1") != 0 ||
        XGBoosterLoadModelFromBuffer(b->h, buf, (bst_ulong)len) != 0 ||
        XGBoosterSetParam(b->h, "nthread", "1") != 0) {
        xgb_why(why, whylen, "the file could not be loaded as an XGBoost model");
        goto out;
    }
    rc = read_meta(b->h, meta, max_features, why, whylen);
    if (rc != 0)
        goto out;
    rc = CN_EINVAL;
    b->num_features = (size_t)meta->num_features;
    b->inplace = strcmp(meta->booster, "gblinear") != 0;
    row = cn_malloc(b->num_features * sizeof *row);
    for (size_t i = 0; i < b->num_features; i++)
        row[i] = NAN;
    const float *res = NULL;
    size_t total = 0;
    if (predict_raw(b, row, 1, b->num_features, &res, &total, why, whylen) != 0) {
        xgb_why(why, whylen, "the model could not predict a row");
        goto out;
    }
    if (total < 1 || total > MAX_OUTPUTS) {
        set_why(why, whylen, "the model gives %zu values per row; the limit is %d", total,
                MAX_OUTPUTS);
        goto out;
    }
    b->outputs = total;
    meta->outputs = (int)total;
    /* Trees take about as much memory loaded as their UBJSON form, plus XGBoost's
     * per-booster state and per-thread buffers: a generous constant. */
    b->bytes = 2 * len + 256 * 1024;
    *out = b;
    b = NULL;
    rc = CN_OK;
out:
    if (rc != 0)
        infer_meta_free(meta);
    free(row);
    infer_booster_free(b);
    return rc;
}

int infer_booster_load(const void *buf, size_t len, struct infer_booster **out,
                       struct infer_meta *meta, char *why, size_t whylen)
{
    struct infer_meta tmp;
    *out = NULL;
    /* XGBoost's global config (verbosity) is per thread: keep its warnings off our
     * JSON log lines; errors still come back through XGBGetLastError. */
    XGBSetGlobalConfig("{\"verbosity\":0}");
    int rc = open_booster(buf, len, INT_MAX, out, &tmp, why, whylen);
    if (rc != 0)
        return rc;
    detect_format(buf, len, tmp.source_format);
    if (meta != NULL)
        *meta = tmp;
    else
        infer_meta_free(&tmp);
    return CN_OK;
}

void infer_booster_free(struct infer_booster *b)
{
    if (b == NULL)
        return;
    if (b->h != NULL)
        XGBoosterFree(b->h);
    free(b);
}

size_t infer_booster_bytes(const struct infer_booster *b) { return b->bytes; }

int infer_booster_predict(struct infer_booster *b, const float *x, size_t nrows, size_t ncols,
                          float *out, size_t out_cap, char *why, size_t whylen)
{
    /* A wrong width is a C++ check failure with a stack trace inside XGBoost: the codec
     * validates rows first, this only keeps a bug from reaching it. */
    if (ncols != b->num_features) {
        set_why(why, whylen, "rows have %zu values; the model has %zu features", ncols,
                b->num_features);
        return CN_EINVAL;
    }
    if (nrows == 0)
        return CN_OK;
    if (nrows > out_cap / b->outputs) {
        set_why(why, whylen, "%zu rows need %zu output values; room for %zu", nrows, b->outputs,
                out_cap);
        return CN_EINVAL;
    }
    const float *res = NULL;
    size_t total = 0;
    int rc = predict_raw(b, x, nrows, ncols, &res, &total, why, whylen);
    if (rc != 0)
        return rc;
    if (total != nrows * b->outputs) {
        set_why(why, whylen, "XGBoost gave %zu values for %zu rows of %zu", total, nrows,
                b->outputs);
        return CN_EINTERNAL;
    }
    memcpy(out, res, total * sizeof *out);
    return CN_OK;
}

/* ------------------------------------------------------------------ metadata as JSON */

static json_t *strings_to_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(v[i]);
        if (s == NULL) { /* not UTF-8 */
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, s);
    }
    return a;
}

/* The child's report. Returns NULL if a feature name or type is not valid UTF-8. */
static json_t *meta_to_json(const struct infer_meta *m, size_t ubj_len)
{
    json_t *names = strings_to_json(m->feature_names, m->n_feature_names);
    json_t *types = strings_to_json(m->feature_types, m->n_feature_types);
    if (names == NULL || types == NULL) {
        json_decref(names);
        json_decref(types);
        return NULL;
    }
    return json_pack("{s:b, s:i, s:o, s:o, s:s, s:i, s:i, s:s, s:i, s:I}", "ok", 1, "num_features",
                     m->num_features, "feature_names", names, "feature_types", types, "objective",
                     m->objective, "num_classes", m->num_classes, "rounds", m->rounds, "booster",
                     m->booster, "outputs", m->outputs, "ubj_bytes", (json_int_t)ubj_len);
}

static int strings_from_json(const json_t *a, size_t want, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!json_is_array(a))
        return CN_EINVAL;
    size_t len = json_array_size(a);
    if (len == 0)
        return CN_OK;
    if (len != want)
        return CN_EINVAL;
    char **v = cn_calloc(len, sizeof *v);
    for (size_t i = 0; i < len; i++) {
        const json_t *s = json_array_get(a, i);
        v[i] = dup_capped(json_is_string(s) ? json_string_value(s) : "");
    }
    *out = v;
    *n = len;
    return CN_OK;
}

/* Reads the child's report into m (checked: the child is ours, but what it read came
 * from the upload) and the number of UBJSON bytes that follow. */
static int meta_from_json(json_t *j, int max_features, struct infer_meta *m, size_t *ubj_len)
{
    json_int_t nf = 0, ncls = 0, rounds = 0, outputs = 0, ubj = 0;
    const char *objective = NULL, *booster = NULL;
    json_t *names = NULL, *types = NULL;
    if (json_unpack(j, "{s:I, s:o, s:o, s:s, s:I, s:I, s:s, s:I, s:I}", "num_features", &nf,
                    "feature_names", &names, "feature_types", &types, "objective", &objective,
                    "num_classes", &ncls, "rounds", &rounds, "booster", &booster, "outputs",
                    &outputs, "ubj_bytes", &ubj) != 0)
        return CN_EINVAL;
    if (nf < 1 || nf > max_features || ncls < 0 || ncls > INT_MAX || rounds < 0 ||
        rounds > INT_MAX || outputs < 1 || outputs > MAX_OUTPUTS || ubj < 1)
        return CN_EINVAL;
    m->num_features = (int)nf;
    m->num_classes = (int)ncls;
    m->rounds = (int)rounds;
    m->outputs = (int)outputs;
    snprintf(m->objective, sizeof m->objective, "%s", objective);
    snprintf(m->booster, sizeof m->booster, "%s", booster);
    if (strings_from_json(names, (size_t)nf, &m->feature_names, &m->n_feature_names) != 0 ||
        strings_from_json(types, (size_t)nf, &m->feature_types, &m->n_feature_types) != 0)
        return CN_EINVAL;
    *ubj_len = (size_t)ubj;
    return CN_OK;
}

/* ------------------------------------------------------------------ the child */

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int report_error(int fd, const char *msg)
{
    json_t *j = json_pack("{s:b, s:s?}", "ok", 0, "error", msg);
    if (j == NULL) /* msg was not UTF-8 */
        j = json_pack("{s:b, s:s}", "ok", 0, "error",
                      "the file could not be loaded as an XGBoost model");
    char *line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    int rc = write_all(fd, line, strlen(line)) == 0 && write_all(fd, "\n", 1) == 0 ? 0 : 1;
    free(line);
    return rc;
}

/* soft, with the hard limit a little above: the soft one ends the child with a signal
 * we can name (SIGXCPU) rather than SIGKILL. */
static void limit(int resource, rlim_t v, rlim_t slack)
{
    struct rlimit r = {v, v + slack};
    setrlimit(resource, &r);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

int infer_model_validate_main(int argc, char **argv)
{
    long long max_features = 0, mem_mb = 0, cpu_s = 0;
    if (argc != 5 || strcmp(argv[1], VALIDATE_ARG) != 0 ||
        cn_parse_int(argv[2], 1, INT_MAX, &max_features) != 0 ||
        cn_parse_int(argv[3], 16, 1 << 20, &mem_mb) != 0 ||
        cn_parse_int(argv[4], 1, 3600, &cpu_s) != 0) {
        fprintf(stderr, "usage: %s " VALIDATE_ARG " <max_features> <mem_mb> <cpu_s> < model\n",
                argv[0]);
        return 2;
    }
    /* The report goes to a private copy of stdout; fd 1 becomes stderr so that anything
     * a library prints cannot corrupt it. */
    int out = dup(STDOUT_FILENO);
    if (out < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        return 2;
    limit(RLIMIT_CORE, 0, 0);
    limit(RLIMIT_CPU, (rlim_t)cpu_s, 1);
#ifndef UNDER_ASAN
    /* ASan reserves terabytes of address space: no RLIMIT_AS under it. */
    limit(RLIMIT_AS, (rlim_t)mem_mb << 20, 0);
#endif
    XGBSetGlobalConfig("{\"verbosity\":0}");

    int rc = 1;
    char why[512] = "";
    size_t cap = (size_t)mem_mb << 20, len = 0, size = 1 << 16;
    uint8_t *buf = cn_malloc(size);
    struct infer_booster *b = NULL;
    struct infer_meta meta = {0};
    json_t *report = NULL;
    char *line = NULL;
    for (;;) {
        if (len == size) {
            if (size >= cap) {
                report_error(out, "the model file is too big");
                goto out;
            }
            size = size * 2 < cap ? size * 2 : cap;
            buf = cn_realloc(buf, size);
        }
        ssize_t r = read(STDIN_FILENO, buf + len, size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            report_error(out, "the model file could not be read");
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (open_booster(buf, len, (int)max_features, &b, &meta, why, sizeof why) != 0) {
        rc = report_error(out, why);
        goto out;
    }
    bst_ulong ulen = 0;
    const char *ubj = NULL;
    if (XGBoosterSaveModelToBuffer(b->h, "{\"format\":\"ubj\"}", &ulen, &ubj) != 0 || ulen == 0) {
        xgb_why(why, sizeof why, "the model could not be converted to UBJSON");
        rc = report_error(out, why);
        goto out;
    }
    report = meta_to_json(&meta, ulen);
    if (report == NULL) {
        rc = report_error(out, "a feature name or type is not valid UTF-8");
        goto out;
    }
    line = json_dumps(report, JSON_COMPACT);
    if (write_all(out, line, strlen(line)) != 0 || write_all(out, "\n", 1) != 0 ||
        write_all(out, ubj, ulen) != 0)
        goto out;
    rc = 0;
out:
    free(line);
    json_decref(report);
    infer_meta_free(&meta);
    infer_booster_free(b);
    free(buf);
    close(out);
    return rc;
}

/* ------------------------------------------------------------------ the parent */

/* Moves fd above 2, so that the child's dup2 onto 0..2 cannot clobber another of ours
 * (only if the service runs with a standard stream closed). Keeps O_CLOEXEC. */
static int high_fd(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return h;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The most telling line of the child's stderr: the what() of an uncaught exception, or
 * the first non-empty line that is not a sanitizer's (a test build's child reports its
 * crash through ASan, not a signal). Empty when there is none. */
static void stderr_line(const char *err, size_t n, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *what = memmem(err, n, "what():", 7);
    if (what != NULL) {
        what += 7;
        while (what < err + n && *what == ' ')
            what++;
        clean_line(what, (size_t)(err + n - what), out, outlen);
        return;
    }
    const char *p = err, *end = err + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        bool sanitizer = (len >= 2 && p[0] == '=' && p[1] == '=') ||
                         (len >= 16 && memcmp(p, "AddressSanitizer", 16) == 0);
        if (len > 0 && !sanitizer) {
            clean_line(p, len, out, outlen);
            if (out[0] != '\0')
                return;
        }
        p += len + 1;
    }
}

struct child_io {
    uint8_t *out; /* the child's stdout: nout bytes in size, grown up to out_cap */
    size_t nout, size, out_cap;
    char err[STDERR_KEEP];
    size_t nerr;
};

/* Writes file to fd_in and collects fd_out/fd_err until both are closed, the output cap
 * is reached (CN_ETOOBIG) or the deadline passes (CN_ETIMEDOUT). Closes fd_in. */
static int exchange(int *fd_in, int fd_out, int fd_err, const uint8_t *file, size_t len,
                    int64_t deadline, struct child_io *io)
{
    size_t sent = 0;
    bool out_open = true, err_open = true;
    if (len == 0)
        close_fd(fd_in);
    while (out_open || err_open) {
        struct pollfd p[3];
        nfds_t n = 0;
        int i_in = -1, i_out = -1, i_err = -1;
        if (*fd_in >= 0) {
            i_in = (int)n;
            p[n++] = (struct pollfd){.fd = *fd_in, .events = POLLOUT};
        }
        if (out_open) {
            i_out = (int)n;
            p[n++] = (struct pollfd){.fd = fd_out, .events = POLLIN};
        }
        if (err_open) {
            i_err = (int)n;
            p[n++] = (struct pollfd){.fd = fd_err, .events = POLLIN};
        }
        int64_t left = deadline - cn_mono_ms();
        if (left <= 0)
            return CN_ETIMEDOUT;
        int k = poll(p, n, (int)(left > INT_MAX ? INT_MAX : left));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return CN_EINTERNAL;
        if (k == 0)
            return CN_ETIMEDOUT;
        if (i_in >= 0 && p[i_in].revents != 0) {
            /* A socket, so a child that stops reading gives EPIPE, never SIGPIPE. */
            ssize_t w = send(*fd_in, file + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) || sent == len)
                close_fd(fd_in); /* the child sees EOF, or has stopped listening */
        }
        if (i_out >= 0 && p[i_out].revents != 0) {
            if (io->nout == io->size) {
                if (io->size == io->out_cap)
                    return CN_ETOOBIG;
                io->size = io->size * 2 < io->out_cap ? io->size * 2 : io->out_cap;
                io->out = cn_realloc(io->out, io->size);
            }
            ssize_t r = read(fd_out, io->out + io->nout, io->size - io->nout);
            if (r > 0)
                io->nout += (size_t)r;
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                out_open = false;
        }
        if (i_err >= 0 && p[i_err].revents != 0) {
            char tmp[4096];
            ssize_t r = read(fd_err, tmp, sizeof tmp);
            if (r > 0) {
                size_t keep = sizeof io->err - io->nerr;
                if ((size_t)r < keep)
                    keep = (size_t)r;
                memcpy(io->err + io->nerr, tmp, keep);
                io->nerr += keep;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                err_open = false;
            }
        }
    }
    close_fd(fd_in);
    return CN_OK;
}

/* Waits for pid until the deadline, then kills it (*killed); always reaps. Returns the
 * wait status. */
static int reap(pid_t pid, int64_t deadline, bool kill_now, bool *killed)
{
    int status = 0;
    *killed = kill_now;
    if (kill_now)
        kill(pid, SIGKILL);
    for (;;) {
        pid_t r = waitpid(pid, &status, kill_now ? 0 : WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) /* ECHILD: someone reaped it (SIGCHLD ignored): no status */
            return 0;
        if (cn_mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            kill_now = *killed = true;
            continue;
        }
        poll(NULL, 0, 2); /* closed its pipes, exiting: a few ms at most */
    }
}

int infer_model_validate(const void *file, size_t len, const struct infer_limits *lim,
                         uint8_t **ubj, size_t *ubj_len, struct infer_meta *meta, char *why,
                         size_t whylen)
{
    int rc = CN_EINVAL;
    int sv[2] = {-1, -1}, po[2] = {-1, -1}, pe[2] = {-1, -1};
    bool have_fa = false, have_attr = false;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    pid_t pid = -1;
    struct child_io io = {0};
    json_t *report = NULL;
    char first[256], eb[128];
    int64_t start = cn_mono_ms();

    *ubj = NULL;
    *ubj_len = 0;
    memset(meta, 0, sizeof *meta);
    if (len > lim->max_bytes) {
        set_why(why, whylen,
                "the model file is %zu bytes; the limit is %zu (CAIRN_MODEL_MAX_BYTES)", len,
                lim->max_bytes);
        goto out;
    }
    if (len == 0) {
        set_why(why, whylen, "the model file is empty");
        goto out;
    }

    /* stdin is a socket (send with MSG_NOSIGNAL), stdout and stderr pipes; all O_CLOEXEC
     * so another thread's spawn cannot inherit them, and dup2'd into this child only. */
    rc = CN_EINTERNAL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe2(po, O_CLOEXEC) != 0 ||
        pipe2(pe, O_CLOEXEC) != 0) {
        set_why(why, whylen, "could not start the model validator: %s",
                strerror_r(errno, eb, sizeof eb));
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        sv[i] = high_fd(sv[i]);
        po[i] = high_fd(po[i]);
        pe[i] = high_fd(pe[i]);
    }
    if (sv[0] < 0 || sv[1] < 0 || po[0] < 0 || po[1] < 0 || pe[0] < 0 || pe[1] < 0) {
        set_why(why, whylen, "could not start the model validator: %s",
                strerror_r(errno, eb, sizeof eb));
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    have_fa = true;
    posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, po[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pe[1], STDERR_FILENO);
    /* Nothing else of the service (client sockets, database connections) reaches it. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&attr);
    have_attr = true;
    /* The service blocks signals in its threads and ignores SIGPIPE; the child starts
     * clean, so that RLIMIT_CPU's SIGXCPU and a broken pipe end it. */
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    const int sigs[] = {SIGPIPE, SIGXCPU, SIGXFSZ, SIGINT,  SIGTERM, SIGHUP,
                        SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD};
    for (size_t i = 0; i < CN_ARRAY_LEN(sigs); i++)
        sigaddset(&dflt, sigs[i]);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    long mem_mb = (long)(lim->mem_bytes >> 20);
    if (mem_mb < 64)
        mem_mb = 64;
    int cpu_s = lim->time_ms / 1000 + 1;
    char a_feat[24], a_mem[24], a_cpu[24];
    snprintf(a_feat, sizeof a_feat, "%d", lim->max_features > 0 ? lim->max_features : 1);
    snprintf(a_mem, sizeof a_mem, "%ld", mem_mb);
    snprintf(a_cpu, sizeof a_cpu, "%d", cpu_s);
    char *argv[] = {(char *)infer_model_exe, VALIDATE_ARG, a_feat, a_mem, a_cpu, NULL};
    int e = posix_spawn(&pid, infer_model_exe, &fa, &attr, argv, environ);
    if (e != 0) {
        pid = -1;
        set_why(why, whylen, "could not start the model validator: %s",
                strerror_r(e, eb, sizeof eb));
        goto out;
    }
    close_fd(&sv[1]);
    close_fd(&po[1]);
    close_fd(&pe[1]);
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);

    /* The report is a line of metadata (feature names come from the file) and the
     * UBJSON, which is about the size of the upload: cap at a generous multiple. */
    io.out_cap = 8 * lim->max_bytes + (1u << 20);
    io.size = 64 * 1024 < io.out_cap ? 64 * 1024 : io.out_cap;
    io.out = cn_malloc(io.size);
    int64_t deadline = start + (lim->time_ms > 0 ? lim->time_ms : 1);
    int x = exchange(&sv[0], po[0], pe[0], file, len, deadline, &io);
    bool killed = false;
    int status = reap(pid, deadline, x != 0, &killed);
    pid = -1;
    stderr_line(io.err, io.nerr, first, sizeof first);

    rc = CN_EINVAL;
    if (x == CN_ETIMEDOUT || (x == 0 && killed)) {
        set_why(why, whylen, "validating the model took longer than %d ms", lim->time_ms);
        goto out;
    }
    if (x == CN_ETOOBIG) {
        set_why(why, whylen, "the converted model is larger than %zu bytes", io.out_cap);
        goto out;
    }
    if (x != 0) {
        rc = CN_EINTERNAL;
        set_why(why, whylen, "the model validator could not be read");
        goto out;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGXCPU || sig == SIGKILL)
            set_why(why, whylen,
                    "the file could not be loaded as an XGBoost model: the loader used more than "
                    "%d s of CPU "
                    "or was killed",
                    cpu_s);
        else
            set_why(why, whylen,
                    "the file could not be loaded as an XGBoost model (it crashed the loader%s%s)",
                    first[0] ? ": " : "", first);
        goto out;
    }
    const uint8_t *nl = memchr(io.out, '\n', io.nout);
    if (nl != NULL)
        report = json_loadb((const char *)io.out, (size_t)(nl - io.out), 0, NULL);
    if (report == NULL || (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
                           !json_is_false(json_object_get(report, "ok")))) {
        set_why(why, whylen, "the file could not be loaded as an XGBoost model%s%s",
                first[0] ? ": " : "", first);
        goto out;
    }
    if (!json_is_true(json_object_get(report, "ok"))) {
        const char *msg = json_string_value(json_object_get(report, "error"));
        set_why(why, whylen, "%s", msg ? msg : "the file could not be loaded as an XGBoost model");
        goto out;
    }
    size_t n = 0;
    size_t body = io.nout - (size_t)(nl + 1 - io.out);
    if (meta_from_json(report, lim->max_features, meta, &n) != 0 || n != body) {
        infer_meta_free(meta);
        set_why(why, whylen, "the model validator gave a malformed report");
        goto out;
    }
    detect_format(file, len, meta->source_format);
    *ubj = cn_malloc(n);
    memcpy(*ubj, nl + 1, n);
    *ubj_len = n;
    rc = CN_OK;
out:
    if (pid > 0) {
        bool unused;
        reap(pid, 0, true, &unused);
    }
    json_decref(report);
    free(io.out);
    if (have_fa)
        posix_spawn_file_actions_destroy(&fa);
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        close_fd(&sv[i]);
        close_fd(&po[i]);
        close_fd(&pe[i]);
    }
    return rc;
}
