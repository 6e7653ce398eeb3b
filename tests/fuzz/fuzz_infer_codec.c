/* fuzz_infer_codec.c — libFuzzer target for services/inference/inference_codec.c, the
 * parser of predict and Open Inference Protocol bodies.
 *
 * Each input is read as a v1 predict body (then its rows against a model with feature
 * names a, b, c, d and one without names), once with the fast path and once with jansson
 * only, which must agree (same refusal, or the same floats bit for bit), and as an OIP infer request (against the same
 * named model and a one-feature model named x, where a single input may mean a column);
 * an input with a NUL byte is also read as OIP with binary tensor data after the JSON part,
 * which then ends at the first NUL (Inference-Header-Content-Length).
 * Whatever the input, parsing must not crash, leak or allocate beyond the caps; a refusal
 * must say why; a success must give the promised row count, no infinities (NaN only as
 * missing), and responses built from it must be JSON that parses back with the same
 * shape and id. Any broken promise aborts.
 * The codec is included, not linked, because services are not in scripts/fuzz's
 * archives; it needs only buf, util and err from lib and jansson. By hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Ilib \
 *     tests/fuzz/fuzz_infer_codec.c lib/buf.c lib/util.c lib/err.c \
 *     $(pkg-config --cflags --libs jansson libcrypto) -lm -o fuzz_infer_codec
 * Seeds in tests/fuzz/corpus/fuzz_infer_codec/.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/inference/inference_codec.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *abcd[] = {"a", "b", "c", "d"};
static char *x_only[] = {"x"};
static const struct infer_meta named4 = {
    .num_features = 4, .feature_names = abcd, .n_feature_names = 4, .outputs = 1};
static const struct infer_meta anon4 = {.num_features = 4, .outputs = 1};
static const struct infer_meta named1 = {
    .num_features = 1, .feature_names = x_only, .n_feature_names = 1, .outputs = 1};
/* Small caps keep each run fast; the code paths are the same as with big ones. */
static const struct infer_caps caps = {.max_rows = 64, .max_cells = 200};

static void die(const char *what, const struct infer_err *err)
{
    fprintf(stderr, "fuzz_infer_codec: %s\n", what);
    if (err)
        fprintf(stderr, "  error: field \"%s\": %s\n", err->field, err->message);
    abort();
}

/* A refusal names no matrix and says why. */
static void check_refused(int rc, const void *x, const struct infer_err *err)
{
    if (rc != CN_EINVAL)
        die("refusal with a code other than CN_EINVAL", err);
    if (x != NULL)
        die("refusal left a matrix", err);
    if (err->message[0] == '\0')
        die("refusal without a message", err);
}

/* The matrix holds numbers a float can be, NaN only for missing. */
static void check_matrix(const float *x, size_t n, size_t f)
{
    if (n == 0 || n > caps.max_rows || n * f > caps.max_cells)
        die("row count beyond the caps", NULL);
    for (size_t i = 0; i < n * f; i++)
        if (isinf(x[i]))
            die("infinity in the matrix", NULL);
}

/* The matrix, used as predictions of f outputs, must make JSON of the right shape. */
static void check_outputs(const float *x, size_t n, size_t f, const char *id)
{
    struct cn_buf b = {0};
    json_error_t jerr;
    json_t *j;

    infer_v1_response(&b, x, n, (int)f, "m", 1, "v", "r");
    j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || json_array_size(json_object_get(j, "predictions")) != n)
        die("v1 response is not JSON of n rows", NULL);
    json_decref(j);

    cn_buf_reset(&b);
    infer_oip_response(&b, "m", 1, id, x, n, (int)f, false);
    j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        die("OIP response is not JSON", NULL);
    json_t *out = json_array_get(json_object_get(j, "outputs"), 0);
    if (json_array_size(json_object_get(out, "data")) != n * f)
        die("OIP response data is not n * outputs values", NULL);
    if (id != NULL && (!json_is_string(json_object_get(j, "id")) ||
                       strcmp(json_string_value(json_object_get(j, "id")), id) != 0))
        die("OIP response does not echo the id", NULL);
    json_decref(j);

    /* As binary tensor data: the JSON part says how many bytes follow, and they do. */
    cn_buf_reset(&b);
    size_t hlen = infer_oip_response(&b, "m", 1, id, x, n, (int)f, true);
    j = hlen <= b.len ? json_loadb(b.data, hlen, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (j == NULL)
        die("binary OIP response has no JSON part", NULL);
    out = json_array_get(json_object_get(j, "outputs"), 0);
    json_t *bs = json_object_get(json_object_get(out, "parameters"), "binary_data_size");
    if (json_object_get(out, "data") != NULL || !json_is_integer(bs) ||
        (size_t)json_integer_value(bs) != n * f * 4 || b.len - hlen != n * f * 4 ||
        memcmp(b.data + hlen, x, n * f * 4) != 0)
        die("binary OIP response is not n * outputs FP32 after the JSON", NULL);
    json_decref(j);
    cn_buf_free(&b);
}

/* The rows against meta; returns the matrix (caller frees) or NULL, with rc and err. */
static float *rows(struct infer_v1_req *r, const struct infer_meta *meta, int *rc, size_t *n, struct infer_err *err)
{
    float *x;
    *rc = infer_v1_rows(r, meta, &caps, &x, n, err);
    if (*rc != CN_OK) {
        check_refused(*rc, x, err);
        return NULL;
    }
    if (*n != r->nrows)
        die("dense row count differs from the parse", NULL);
    check_matrix(x, *n, (size_t)meta->num_features);
    check_outputs(x, *n, (size_t)meta->num_features, NULL);
    return x;
}

/* The fast path (fast, parsed with infer_v1_fast) and jansson's (slow) must agree on the
 * rows against meta: the same refusal word for word, or the same floats bit for bit. */
static void same_rows(struct infer_v1_req *fast, struct infer_v1_req *slow, const struct infer_meta *meta)
{
    struct infer_err ef = {{0}, {0}}, es = {{0}, {0}};
    int rf, rs;
    size_t nf = 0, ns = 0;
    float *xf = rows(fast, meta, &rf, &nf, &ef), *xs = rows(slow, meta, &rs, &ns, &es);

    if (rf != rs || nf != ns)
        die("fast and jansson paths disagree on the rows", rf ? &ef : &es);
    if (rf != CN_OK && (strcmp(ef.field, es.field) != 0 || strcmp(ef.message, es.message) != 0))
        die("fast and jansson paths word a refusal differently", &ef);
    if (rf == CN_OK && memcmp(xf, xs, nf * (size_t)meta->num_features * sizeof *xf) != 0)
        die("fast and jansson paths read different floats", NULL);
    free(xf);
    free(xs);
}

static void v1(const uint8_t *data, size_t size)
{
    struct infer_v1_req r, slow, slow2;
    struct infer_err err = {{0}, {0}}, serr = {{0}, {0}};
    char key[8];
    int rc = infer_v1_parse(data, size, &caps, &r, &err);

    infer_v1_fast = false;
    int src = infer_v1_parse(data, size, &caps, &slow, &serr);
    (void)infer_v1_parse(data, size, &caps, &slow2, &serr);
    infer_v1_fast = true;
    if (rc != src)
        die("fast and jansson paths disagree on the parse", rc ? &err : &serr);
    if (rc != CN_OK) {
        check_refused(rc, r.root, &err);
        if (strcmp(err.field, serr.field) != 0 || strcmp(err.message, serr.message) != 0)
            die("a refusal differs between the paths", &err);
        return;
    }
    if (r.nrows == 0 || r.nrows > caps.max_rows || (r.version != 0 && r.alias[0] != '\0'))
        die("v1 parse broke its promises", NULL);
    if (r.version != slow.version || strcmp(r.alias, slow.alias) != 0 || r.nrows != slow.nrows)
        die("fast and jansson paths read version, alias or the row count differently", NULL);
    if (infer_v1_field_text(&r, "a", key, sizeof key) == CN_OK && strlen(key) >= sizeof key)
        die("field text overflowed", NULL);
    /* Each infer_v1_rows may take the fast path's matrix: a fresh parse for the second. */
    struct infer_v1_req r2;
    if (infer_v1_parse(data, size, &caps, &r2, &err) != CN_OK)
        die("a second parse of the same body failed", &err);
    same_rows(&r, &slow, &named4);
    same_rows(&r2, &slow2, &anon4);
    infer_v1_req_free(&r);
    infer_v1_req_free(&r2);
    infer_v1_req_free(&slow);
    infer_v1_req_free(&slow2);
}

static void oip(const uint8_t *data, size_t size, long long header_len, const struct infer_meta *meta)
{
    struct infer_err err = {{0}, {0}};
    float *x;
    char *id;
    size_t n;
    bool binary;
    int rc = infer_oip_parse(data, size, header_len, meta, &caps, &x, &n, &id, &binary, &err);

    if (rc != CN_OK) {
        check_refused(rc, x, &err);
        if (id != NULL)
            die("refusal left an id", &err);
        return;
    }
    if (id != NULL && strlen(id) > INFER_MAX_ID)
        die("id beyond its cap", NULL);
    check_matrix(x, n, (size_t)meta->num_features);
    check_outputs(x, n, (size_t)meta->num_features, id);
    free(x);
    free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    v1(data, size);
    oip(data, size, -1, &named4);
    oip(data, size, -1, &named1);
    /* With binary tensor data: the JSON part ends at the first NUL byte. */
    const uint8_t *nul = memchr(data, 0, size);
    if (nul != NULL) {
        oip(data, size, nul - data, &named4);
        oip(data, size, nul - data, &named1);
    }
    return 0;
}
