/* inference_codec.h — predict and Open Inference Protocol JSON in and out (jansson).
 * (Part of cairn-inference; see inference.h for the map of files.)
 *
 * Request bodies arrive from the network: every parser here bounds rows and values by
 * struct infer_caps, refuses what XGBoost must never see (wrong widths, strings, numbers
 * that are not finite as float) and says in struct infer_err which place is wrong and how
 * to fix it. Nothing here aborts on input; out of memory aborts as everywhere.
 * Writers append to a struct cn_buf and never emit NaN or Infinity (null instead).
 */
#ifndef INFERENCE_CODEC_H
#define INFERENCE_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct cn_buf;
struct infer_meta;

/* Where an input is wrong and what to do about it. field is a path into the body
 * ("instances[3][2]", "inputs[0].shape"), "" for the document itself. */
struct infer_err {
    char field[128];
    char message[256];
};

/* Bounds of one call. A zero field (or a NULL caps) means the defaults below. */
struct infer_caps {
    size_t max_rows;  /* rows per call */
    size_t max_cells; /* rows * features per call */
};
#define INFER_DEFAULT_MAX_ROWS 10000
#define INFER_DEFAULT_MAX_CELLS (4u << 20)

/* The longest OIP request id kept (and echoed). */
#define INFER_MAX_ID 256

/* ------------------------------------------------------------------ Cairn's predict (v1) */

/* {"instances": [...], "version": n, "alias": "a"}: version and alias are optional and not
 * both; null counts as absent; unknown top-level keys are refused. */
struct infer_v1_req {
    json_t *root;            /* owns the document; NULL when the fast path read it */
    const json_t *instances; /* borrowed from root: a non-empty array of rows */
    float *x;                /* the fast path's rows: nrows x ncols floats (owned) */
    size_t ncols;
    int version;             /* 0 = not given */
    char alias[64];          /* "" = not given */
    size_t nrows;
};

/* Whether infer_v1_parse tries its fast path first (see inference_codec.c). Only tests
 * turn it off, to check that both paths give the same answers. */
extern bool infer_v1_fast;

/* Parses len bytes of body. Returns 0 with *out filled (release it with
 * infer_v1_req_free), or CN_EINVAL with err filled and *out zeroed. Rows are checked only
 * for count here (at most caps->max_rows, at least one); infer_rows_dense checks them
 * against a model. */
int infer_v1_parse(const void *body, size_t len, const struct infer_caps *caps,
                   struct infer_v1_req *out, struct infer_err *err);
/* Releases the document; r is zeroed. Safe on a zeroed or already freed struct. */
void infer_v1_req_free(struct infer_v1_req *r);

/* For sticky assignment: writes the text of field `name` of instance 0, when instances
 * are objects, to out (numbers as %.17g, integers in decimal, strings as they are,
 * booleans as true/false; truncated to outlen - 1 bytes). Returns 0, or CN_ENOTFOUND when
 * instance 0 is not an object, has no such field, or it is null, an array or an object. */
int infer_v1_field_text(const struct infer_v1_req *r, const char *name, char *out, size_t outlen);

/* Turns rows (an array of arrays of meta->num_features values, or an array of objects
 * keyed by meta's feature names, missing keys being missing values) into a dense
 * row-major float matrix. null is missing (NaN), true/false are 1/0. Refused, with
 * CN_EINVAL and the place in err (path is the prefix of field, e.g. "instances"): no rows,
 * more than caps->max_rows rows or caps->max_cells values, a row that is not an array or
 * object, a wrong row width, strings, nested arrays or objects as values, numbers beyond
 * the float range, unknown feature names, objects for a model without feature names.
 * On success returns 0 with *x (malloc'd, nrows * num_features floats; caller frees) and
 * *nrows; on failure *x is NULL and *nrows 0. Also reads drift reference samples. */
int infer_rows_dense(const json_t *instances, const char *path, const struct infer_meta *meta,
                     const struct infer_caps *caps, float **x, size_t *nrows,
                     struct infer_err *err);
/* infer_rows_dense for a parsed v1 request's instances, with the same results and errors;
 * the rows the fast path already read are handed over (r->x is taken). */
int infer_v1_rows(struct infer_v1_req *r, const struct infer_meta *meta, const struct infer_caps *caps, float **x,
                  size_t *nrows, struct infer_err *err);

/* Appends {"predictions": [...], "model": m, "model_version": v, "variant": s,
 * "request_id": r}: one number per row when outputs is 1, else a list of `outputs`
 * numbers per row (pred holds nrows * outputs values). Numbers as %.9g (a float round
 * trips), NaN and infinities as null. NULL strings are written as "". */
void infer_v1_response(struct cn_buf *out, const float *pred, size_t nrows, int outputs,
                       const char *model, int version, const char *variant, const char *request_id);

/* ------------------------------------------------------------------ Open Inference Protocol v2 */

/* Parses an OIP infer request ({id, parameters, inputs: [{name, shape, datatype,
 * parameters, data}], outputs: [{name, parameters}]}) for a model described by meta.
 * Two forms of input are accepted:
 *   - one input of shape [N, F] (or [F]: one row), data flat (N*F values, row-major) or
 *     nested ([[...], ...]), whatever its name;
 *   - one input per feature, each named after a feature of meta (all of them, any order),
 *     with shape [N] or [N, 1] and the same N.
 * Datatypes FP32, FP64 (finite as float; null means missing), INT8..INT64 and
 * UINT8..UINT64 (whole numbers in range), BOOL (true/false); FP16 and BYTES are refused.
 * The only output that may be requested is "predict". Unknown keys are refused; the
 * contents of parameters are ignored but for an input's binary_data_size, the request's
 * binary_data_output and an output's binary_data (true or false, else refused).
 * Binary tensor data (the extension of Triton and KServe): header_len is the request's
 * Inference-Header-Content-Length (the JSON part is body[0 .. header_len)), or -1 when it
 * had none. An input with parameters.binary_data_size has no data; its values follow the
 * JSON part, little-endian and row-major, the binary inputs' data back to back in input
 * order, and the sizes must add up to the rest of the body exactly. NaN is a missing
 * value there; BOOL is one byte, 0 or 1. The output is asked for as binary tensor data
 * by outputs[].parameters.binary_data: true, or by parameters.binary_data_output: true
 * when the output does not say.
 * Returns 0 with *x (malloc'd, *nrows * num_features floats), *nrows, *id (a malloc'd
 * copy of the request's id, at most INFER_MAX_ID bytes, or NULL when there is none) and
 * *binary (the output as binary tensor data); or CN_EINVAL with err filled and *x, *id
 * NULL, *nrows 0. */
int infer_oip_parse(const void *body, size_t len, long long header_len, const struct infer_meta *meta,
                    const struct infer_caps *caps, float **x, size_t *nrows, char **id, bool *binary,
                    struct infer_err *err);

/* Appends {"model_name": m, "model_version": "v", "id": id (only when id is not NULL),
 * "outputs": [{"name": "predict", "datatype": "FP32", "shape": [N] or [N, outputs],
 * "data": [...]}]}, data flat, numbers as in infer_v1_response. With binary, the output
 * has "parameters": {"binary_data_size": bytes} instead of data, and the predictions
 * follow the JSON as little-endian FP32 (non-finite ones as they are). Returns the length
 * of the JSON part (the response's Inference-Header-Content-Length when binary). */
size_t infer_oip_response(struct cn_buf *out, const char *model, int version, const char *id,
                          const float *pred, size_t nrows, int outputs, bool binary);

/* Appends the model metadata: {"name": m, "versions": ["1", ...], "platform": "xgboost",
 * "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, F]}], "outputs":
 * [{"name": "predict", "datatype": "FP32", "shape": [-1] or [-1, C]}]}. With meta NULL
 * (no version to describe) inputs and outputs are empty. */
void infer_oip_model_metadata(struct cn_buf *out, const char *model, const int *versions,
                              size_t nversions, const struct infer_meta *meta);

/* Appends {"name": "cairn-inference", "version": version, "extensions": []}. */
void infer_oip_server_metadata(struct cn_buf *out, const char *version);

#endif
