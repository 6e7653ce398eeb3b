/* inference_model.h — model files: validation of uploads in a child process, metadata, boosters.
 * (Part of cairn-inference; see inference.h for the map of files.)
 */
#ifndef INFERENCE_MODEL_H
#define INFERENCE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* What was read from a booster. Strings are malloc'd; infer_meta_free frees them. */
struct infer_meta {
    char source_format[8]; /* json | ubjson | binary (of the uploaded file) */
    int num_features;
    char **feature_names; /* n_feature_names is 0 or num_features */
    size_t n_feature_names;
    char **feature_types; /* "q", "int", "i", "float", "c" ... as XGBoost names them */
    size_t n_feature_types;
    char objective[64]; /* "binary:logistic", "" if unknown */
    int num_classes;    /* 0 unless multi-class */
    int rounds;         /* boosted rounds */
    char booster[16];   /* gbtree | dart | gblinear */
    int outputs;        /* values per row a prediction gives: 1, or num_classes (softprob) */
};
void infer_meta_free(struct infer_meta *m);

struct infer_limits {
    size_t max_bytes; /* bigger files are refused before the child starts */
    int max_features;
    int time_ms;      /* the child is killed after this */
    size_t mem_bytes; /* RLIMIT_AS of the child (not set under ASan) */
};

/* Validates an uploaded model file by loading it and predicting a row in a short-lived
 * child process (the service's own binary re-executed as `<exe> __validate-model`,
 * never fork() after XGBoost), then converts it to UBJSON. On success returns 0 with
 * *ubj (malloc'd, caller frees), *ubj_len and *meta filled (caller infer_meta_free's).
 * A file that is not a usable model, too big, too wide, or makes the child crash or
 * run out of time returns CN_EINVAL with a message for the user in why. CN_EINTERNAL
 * when the child could not be started. Thread-safe. */
int infer_model_validate(const void *file, size_t len, const struct infer_limits *lim,
                         uint8_t **ubj, size_t *ubj_len, struct infer_meta *meta, char *why,
                         size_t whylen);
/* The child's main: main() calls it when argv[1] is "__validate-model". */
int infer_model_validate_main(int argc, char **argv);
/* The program infer_model_validate runs: "/proc/self/exe" (the service itself) unless a
 * test points it elsewhere. Set it before any validation starts. */
extern const char *infer_model_exe;

/* A loaded booster with nthread=1, shared by every worker (prediction is thread-safe). */
struct infer_booster;
/* Loads UBJSON (or any format XGBoost reads) written by infer_model_validate. Returns 0 and
 * *out, or CN_EINVAL with why. meta, if not NULL, is filled from the booster. */
int infer_booster_load(const void *buf, size_t len, struct infer_booster **out,
                       struct infer_meta *meta, char *why, size_t whylen);
void infer_booster_free(struct infer_booster *b);
/* An estimate of the memory a loaded booster holds, for the cache's byte bound. */
size_t infer_booster_bytes(const struct infer_booster *b);
/* Predicts nrows rows of ncols floats (row-major, NaN = missing; ncols must equal the
 * booster's feature count). Writes nrows * outputs values to out (out_cap values room).
 * Returns 0, or CN_EINTERNAL with why (XGBoost's message, first line only). */
int infer_booster_predict(struct infer_booster *b, const float *x, size_t nrows, size_t ncols,
                          float *out, size_t out_cap, char *why, size_t whylen);

#endif
