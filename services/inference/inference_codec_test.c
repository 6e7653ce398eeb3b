/* inference_codec_test.c — the predict and Open Inference Protocol codec: what it takes,
 * what it refuses (with the place and a message that says what to fix), and the exact
 * JSON it writes.
 *
 * The parsers are driven by tables: to cover a new body, add one row with the body, the
 * expected code and, for a refusal, the field and a fragment of the message, or for a
 * success the matrix expected (NaN written as M).
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inference_codec.c"

#define M NAN /* a missing value in expected matrices */
#define MAXV 8

/* ------------------------------------------------------------------ models */

static char *abc_names[] = {"a", "b", "c"};
static char *x_names[] = {"x"};

/* Where infer_oip_parse says whether the output is wanted as binary tensor data, for the
 * tests that are about something else. */
static bool binary_out;

/* Three features named a, b, c; binary. */
static const struct infer_meta named3 = {
    .num_features = 3, .feature_names = abc_names, .n_feature_names = 3, .outputs = 1};
/* Three features without names. */
static const struct infer_meta anon3 = {.num_features = 3, .outputs = 1};
/* One feature named x. */
static const struct infer_meta named1 = {
    .num_features = 1, .feature_names = x_names, .n_feature_names = 1, .outputs = 1};

/* A model of n features named f0, f1, ... (names freed by free_wide). */
static struct infer_meta wide(int n)
{
    struct infer_meta m = {.num_features = n, .n_feature_names = (size_t)n, .outputs = 1};
    m.feature_names = cn_calloc((size_t)n, sizeof *m.feature_names);
    for (int i = 0; i < n; i++) {
        char s[16];
        snprintf(s, sizeof s, "f%d", i);
        m.feature_names[i] = cn_strdup(s);
    }
    return m;
}

static void free_wide(struct infer_meta *m)
{
    for (size_t i = 0; i < m->n_feature_names; i++)
        free(m->feature_names[i]);
    free(m->feature_names);
}

/* ------------------------------------------------------------------ helpers */

/* A refusal must name the expected field and say (at least) the expected words. */
static void check_refusal(const char *what, size_t i, int rc, int want_rc,
                          const struct infer_err *err, const char *field, const char *msg)
{
    if (rc != want_rc || strcmp(err->field, field) != 0 || strstr(err->message, msg) == NULL) {
        print_error("%s case %zu: got rc %d field \"%s\" message \"%s\"; want rc %d field \"%s\" "
                    "message with "
                    "\"%s\"\n",
                    what, i, rc, err->field, err->message, want_rc, field, msg);
        fail();
    }
}

/* The matrix must equal want, NaN where want is NaN. */
static void check_matrix(const char *what, size_t i, const float *x, const float *want, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool same = isnan(want[k]) ? isnan(x[k]) : x[k] == want[k];
        if (!same) {
            print_error("%s case %zu: value %zu is %.9g, want %.9g\n", what, i, k, (double)x[k],
                        (double)want[k]);
            fail();
        }
    }
}

/* ------------------------------------------------------------------ v1 parse */

/* clang-format off */
static const struct v1_case {
    const char *body;
    size_t max_rows;              /* 0 = default */
    int rc;
    const char *field, *msg;      /* refusals */
    size_t nrows;                 /* successes */
    int version;
    const char *alias;
} v1_cases[] = {
    {"{\"instances\": [[1, 2, 3]]}", 0, 0, NULL, NULL, 1, 0, ""},
    {"{\"instances\": [[1, 2, 3], [4, 5, 6]], \"version\": 2}", 0, 0, NULL, NULL, 2, 2, ""},
    {"{\"alias\": \"production\", \"instances\": [{\"a\": 1}]}", 0, 0, NULL, NULL, 1, 0, "production"},
    {"{\"alias\": null, \"version\": null, \"instances\": [[1]]}", 0, 0, NULL, NULL, 1, 0, ""},
    {"{\"instances\": [[1]], \"alias\": \"latest\"}", 0, 0, NULL, NULL, 1, 0, "latest"},
    {"{\"instances\": [[1], [2]]}", 2, 0, NULL, NULL, 2, 0, ""},
    {" {\"instances\": [\"rows are checked later\"]} ", 0, 0, NULL, NULL, 1, 0, ""},

    {"", 0, CN_EINVAL, "", "empty body", 0, 0, NULL},
    {"{", 0, CN_EINVAL, "", "invalid JSON at line 1", 0, 0, NULL},
    {"[[1, 2]]", 0, CN_EINVAL, "", "expected a JSON object", 0, 0, NULL},
    {"{\"instances\": [[1]], \"instances\": [[2]]}", 0, CN_EINVAL, "", "duplicate", 0, 0, NULL},
    {"{\"instances\": [[NaN]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[Infinity]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[1e999]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[99999999999999999999]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[\"\xff\"]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[\"a\\u0000b\"]]}", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[1]]} x", 0, CN_EINVAL, "", "invalid JSON", 0, 0, NULL},
    {"{\"instances\": [[1]], \"colour\": 1}", 0, CN_EINVAL, "colour", "unknown field; expected instances", 0, 0,
     NULL},
    {"{\"version\": 1}", 0, CN_EINVAL, "instances", "missing; send the rows", 0, 0, NULL},
    {"{\"instances\": {\"a\": 1}}", 0, CN_EINVAL, "instances", "expected an array of rows", 0, 0, NULL},
    {"{\"instances\": null}", 0, CN_EINVAL, "instances", "expected an array of rows", 0, 0, NULL},
    {"{\"instances\": []}", 0, CN_EINVAL, "instances", "no rows", 0, 0, NULL},
    {"{\"instances\": [[1]], \"version\": 0}", 0, CN_EINVAL, "version", "an integer from 1", 0, 0, NULL},
    {"{\"instances\": [[1]], \"version\": 1.5}", 0, CN_EINVAL, "version", "an integer from 1", 0, 0, NULL},
    {"{\"instances\": [[1]], \"version\": \"2\"}", 0, CN_EINVAL, "version", "an integer from 1", 0, 0, NULL},
    {"{\"instances\": [[1]], \"version\": 3000000000}", 0, CN_EINVAL, "version", "an integer from 1", 0, 0,
     NULL},
    {"{\"instances\": [[1]], \"alias\": \"Prod\"}", 0, CN_EINVAL, "alias", "a lowercase letter", 0, 0, NULL},
    {"{\"instances\": [[1]], \"alias\": \"\"}", 0, CN_EINVAL, "alias", "a lowercase letter", 0, 0, NULL},
    {"{\"instances\": [[1]], \"alias\": \"a b\"}", 0, CN_EINVAL, "alias", "a lowercase letter", 0, 0, NULL},
    {"{\"instances\": [[1]], \"alias\": 7}", 0, CN_EINVAL, "alias", "a lowercase letter", 0, 0, NULL},
    {"{\"instances\": [[1]], \"alias\": "
     "\"a123456789012345678901234567890123456789012345678901234567890123\"}",
     0, CN_EINVAL, "alias", "at most 63 characters", 0, 0, NULL},
    {"{\"instances\": [[1]], \"alias\": \"a\", \"version\": 1}", 0, CN_EINVAL, "alias", "not both", 0, 0, NULL},
    {"{\"instances\": [[1], [2], [3]]}", 2, CN_EINVAL, "instances", "at most 2 rows per call", 0, 0, NULL},
};
/* clang-format on */

static void test_v1_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(v1_cases); i++) {
        const struct v1_case *c = &v1_cases[i];
        struct infer_caps caps = {.max_rows = c->max_rows};
        struct infer_v1_req r;
        struct infer_err err = {{0}, {0}};
        int rc = infer_v1_parse(c->body, strlen(c->body), &caps, &r, &err);

        if (c->rc != 0) {
            check_refusal("v1", i, rc, c->rc, &err, c->field, c->msg);
            assert_null(r.root);
            assert_null(r.instances);
            continue;
        }
        if (rc != 0)
            print_error("v1 case %zu: %s: %s\n", i, err.field, err.message);
        assert_int_equal(rc, 0);
        /* jansson's tree, or the fast path's matrix */
        assert_true((r.root != NULL && json_is_array(r.instances)) || (r.x != NULL && r.ncols > 0));
        assert_int_equal(r.nrows, c->nrows);
        assert_int_equal(r.version, c->version);
        assert_string_equal(r.alias, c->alias);
        infer_v1_req_free(&r);
        assert_null(r.root);
        infer_v1_req_free(&r); /* twice is harmless */
    }
}

/* The sticky key's text: the same value gives the same text whatever its JSON form. */
static void test_v1_field_text(void **state)
{
    (void)state;
    const char *body =
        "{\"instances\": [{\"user\": \"u-17\", \"n\": 5, \"r\": 2.5, \"e\": 5.0, \"b\": true, "
        "\"z\": null, \"o\": {}}, {\"user\": \"other\"}]}";
    struct infer_v1_req r;
    struct infer_err err;
    char out[32];

    assert_int_equal(infer_v1_parse(body, strlen(body), NULL, &r, &err), 0);
    assert_int_equal(infer_v1_field_text(&r, "user", out, sizeof out), 0);
    assert_string_equal(out, "u-17");
    assert_int_equal(infer_v1_field_text(&r, "n", out, sizeof out), 0);
    assert_string_equal(out, "5");
    assert_int_equal(infer_v1_field_text(&r, "e", out, sizeof out), 0);
    assert_string_equal(out, "5");
    assert_int_equal(infer_v1_field_text(&r, "r", out, sizeof out), 0);
    assert_string_equal(out, "2.5");
    assert_int_equal(infer_v1_field_text(&r, "b", out, sizeof out), 0);
    assert_string_equal(out, "true");
    assert_int_equal(infer_v1_field_text(&r, "z", out, sizeof out), CN_ENOTFOUND);
    assert_int_equal(infer_v1_field_text(&r, "o", out, sizeof out), CN_ENOTFOUND);
    assert_int_equal(infer_v1_field_text(&r, "nope", out, sizeof out), CN_ENOTFOUND);
    assert_int_equal(infer_v1_field_text(&r, "user", out, 3), 0);
    assert_string_equal(out, "u-");
    infer_v1_req_free(&r);

    body = "{\"instances\": [[1, 2, 3]]}";
    assert_int_equal(infer_v1_parse(body, strlen(body), NULL, &r, &err), 0);
    assert_int_equal(infer_v1_field_text(&r, "user", out, sizeof out), CN_ENOTFOUND);
    infer_v1_req_free(&r);
    assert_int_equal(infer_v1_field_text(&r, "user", out, sizeof out), CN_ENOTFOUND);
}

/* ------------------------------------------------------------------ rows -> matrix */

/* clang-format off */
static const struct dense_case {
    const struct infer_meta *meta;
    const char *rows;             /* the instances value */
    size_t max_rows, max_cells;
    int rc;
    const char *field, *msg;
    size_t nrows;
    float want[MAXV];
} dense_cases[] = {
    {&named3, "[[1, 2.5, null]]", 0, 0, 0, NULL, NULL, 1, {1, 2.5f, M}},
    {&named3, "[[true, false, -0.5], [0, 1e38, -3.4e38]]", 0, 0, 0, NULL, NULL, 2, {1, 0, -0.5f, 0, 1e38f, -3.4e38f}},
    {&named3, "[{\"a\": 1, \"c\": 3}]", 0, 0, 0, NULL, NULL, 1, {1, M, 3}},
    {&named3, "[{\"c\": 3, \"b\": 2, \"a\": 1}]", 0, 0, 0, NULL, NULL, 1, {1, 2, 3}},
    {&named3, "[{}, {\"b\": null}]", 0, 0, 0, NULL, NULL, 2, {M, M, M, M, M, M}},
    {&named3, "[[1, 2, 3], {\"b\": 5}]", 0, 0, 0, NULL, NULL, 2, {1, 2, 3, M, 5, M}},
    {&anon3, "[[7, 8, 9]]", 0, 0, 0, NULL, NULL, 1, {7, 8, 9}},
    {&named3, "[[1, 2, 3], [4, 5, 6]]", 2, 6, 0, NULL, NULL, 2, {1, 2, 3, 4, 5, 6}},

    {&named3, "[[1, 2]]", 0, 0, CN_EINVAL, "instances[0]", "row has 2 values; the model takes 3 features", 0, {0}},
    {&named3, "[[1, 2, 3], [1, 2, 3, 4]]", 0, 0, CN_EINVAL, "instances[1]", "row has 4 values", 0, {0}},
    {&named3, "[[1, 2, 3], [1, \"x\", 3]]", 0, 0, CN_EINVAL, "instances[1][1]",
     "expected a number or null, got a string", 0, {0}},
    {&named3, "[[1, 2, [3]]]", 0, 0, CN_EINVAL, "instances[0][2]", "got an array", 0, {0}},
    {&named3, "[[1, 2, {}]]", 0, 0, CN_EINVAL, "instances[0][2]", "got an object", 0, {0}},
    {&named3, "[[1, 2, 3.5e38]]", 0, 0, CN_EINVAL, "instances[0][2]", "out of range for a float", 0, {0}},
    {&named3, "[[1, -1e300, 3]]", 0, 0, CN_EINVAL, "instances[0][1]", "out of range for a float", 0, {0}},
    {&named3, "[{\"colour\": 1}]", 0, 0, CN_EINVAL, "instances[0].colour",
     "unknown feature; the model's features are: a, b, c", 0, {0}},
    {&named3, "[{\"a\": 1}, {\"a\": \"1\"}]", 0, 0, CN_EINVAL, "instances[1].a", "got a string", 0, {0}},
    {&named3, "[1, 2, 3]", 0, 0, CN_EINVAL, "instances[0]",
     "expected a row (an array of 3 values or an object of features), got a number", 0, {0}},
    {&named3, "[null]", 0, 0, CN_EINVAL, "instances[0]", "got null", 0, {0}},
    {&anon3, "[{\"a\": 1}]", 0, 0, CN_EINVAL, "instances[0]", "this model has no feature names; send rows as arrays",
     0, {0}},
    {&anon3, "[\"1,2,3\"]", 0, 0, CN_EINVAL, "instances[0]", "expected a row (an array of 3 values), got a string",
     0, {0}},
    {&named3, "{\"a\": 1}", 0, 0, CN_EINVAL, "instances", "expected an array of rows", 0, {0}},
    {&named3, "[]", 0, 0, CN_EINVAL, "instances", "no rows", 0, {0}},
    {&named3, "[[1, 2, 3], [4, 5, 6], [7, 8, 9]]", 2, 0, CN_EINVAL, "instances", "at most 2 rows per call", 0, {0}},
    {&named3, "[[1, 2, 3], [4, 5, 6]]", 0, 5, CN_EINVAL, "instances",
     "2 rows of 3 features are more than the 5 values allowed", 0, {0}},
};
/* clang-format on */

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        print_error("test JSON does not parse: %s: %s\n", text, jerr.text);
    assert_non_null(j);
    return j;
}

static void test_rows_dense_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(dense_cases); i++) {
        const struct dense_case *c = &dense_cases[i];
        struct infer_caps caps = {.max_rows = c->max_rows, .max_cells = c->max_cells};
        struct infer_err err = {{0}, {0}};
        json_t *rows = load(c->rows);
        float *x = (float *)&err; /* must be overwritten */
        size_t n = 99;
        int rc = infer_rows_dense(rows, "instances", c->meta, &caps, &x, &n, &err);

        json_decref(rows);
        if (c->rc != 0) {
            check_refusal("dense", i, rc, c->rc, &err, c->field, c->msg);
            assert_null(x);
            assert_int_equal(n, 0);
            continue;
        }
        if (rc != 0)
            print_error("dense case %zu: %s: %s\n", i, err.field, err.message);
        assert_int_equal(rc, 0);
        assert_int_equal(n, c->nrows);
        check_matrix("dense", i, x, c->want, n * (size_t)c->meta->num_features);
        free(x);
    }
}

/* The path given names the place (the drift reference sample uses its own). */
static void test_rows_dense_path(void **state)
{
    (void)state;
    json_t *rows = load("[[1, 2, 3], [4, true, \"no\"]]");
    struct infer_err err;
    float *x;
    size_t n;

    assert_int_equal(infer_rows_dense(rows, "reference", &named3, NULL, &x, &n, &err), CN_EINVAL);
    assert_string_equal(err.field, "reference[1][2]");
    assert_int_equal(infer_rows_dense(rows, NULL, &named3, NULL, &x, &n, &err), CN_EINVAL);
    assert_string_equal(err.field, "instances[1][2]");
    json_decref(rows);

    /* A model whose feature count is unknown is the server's fault, not the client's. */
    struct infer_meta none = {0};
    rows = load("[[1]]");
    assert_int_equal(infer_rows_dense(rows, NULL, &none, NULL, &x, &n, &err), CN_EINTERNAL);
    assert_null(x);
    json_decref(rows);
}

/* A wide model: keys in any order find their column, and an unknown key's message lists
 * a few names, not all of them. */
static void test_rows_dense_wide(void **state)
{
    (void)state;
    struct infer_meta m = wide(200);
    struct cn_buf b = {0};
    struct infer_err err;
    float *x;
    size_t n;

    cn_buf_puts(&b, "[{");
    for (int i = 199; i >= 0; i -= 2) /* reversed, every other feature */
        cn_buf_printf(&b, "%s\"f%d\": %d", i == 199 ? "" : ", ", i, i * 10);
    cn_buf_puts(&b, "}]");
    json_t *rows = load(b.data);
    assert_int_equal(infer_rows_dense(rows, "instances", &m, NULL, &x, &n, &err), 0);
    assert_int_equal(n, 1);
    for (int i = 0; i < 200; i++) {
        if (i % 2 == 1)
            assert_true(x[i] == (float)(i * 10));
        else
            assert_true(isnan(x[i]));
    }
    free(x);
    json_decref(rows);

    rows = load("[{\"f0\": 1, \"colour\": 2}]");
    assert_int_equal(infer_rows_dense(rows, "instances", &m, NULL, &x, &n, &err), CN_EINVAL);
    assert_string_equal(err.field, "instances[0].colour");
    assert_non_null(strstr(err.message, "are: f0, f1, f2, f3, f4, f5, f6, f7, ... (200 in all)"));
    json_decref(rows);

    /* A long key is cut in the field, not overflowing it. */
    cn_buf_reset(&b);
    cn_buf_puts(&b, "[{\"");
    for (int i = 0; i < 300; i++)
        cn_buf_putc(&b, 'k');
    cn_buf_puts(&b, "\": 1}]");
    rows = load(b.data);
    assert_int_equal(infer_rows_dense(rows, "instances", &m, NULL, &x, &n, &err), CN_EINVAL);
    assert_int_equal(strlen(err.field), sizeof err.field - 1);
    assert_memory_equal(err.field, "instances[0].kkk", 16);
    json_decref(rows);
    cn_buf_free(&b);
    free_wide(&m);
}

/* ------------------------------------------------------------------ OIP parse */

/* clang-format off */
static const struct oip_case {
    const struct infer_meta *meta;
    const char *body;
    size_t max_rows;
    int rc;
    const char *field, *msg;
    size_t nrows;
    float want[MAXV];
    const char *id;               /* NULL = none expected */
} oip_cases[] = {
    /* one tensor, flat and nested */
    {&named3, "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [1, 2, 3, 4, 5, 6]}]}",
     0, 0, NULL, NULL, 2, {1, 2, 3, 4, 5, 6}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [[1, 2, 3], [4, 5, 6]]}]}",
     0, 0, NULL, NULL, 2, {1, 2, 3, 4, 5, 6}, NULL},
    {&anon3, "{\"id\": \"req-1\", \"parameters\": {\"x\": 1}, \"inputs\": [{\"name\": \"t\", \"shape\": [3], "
             "\"datatype\": \"FP64\", \"parameters\": {}, \"data\": [0.5, null, -2]}], "
             "\"outputs\": [{\"name\": \"predict\", \"parameters\": {\"binary_data\": false}}]}",
     0, 0, NULL, NULL, 1, {0.5f, M, -2}, "req-1"},
    {&named3, "{\"id\": null, \"outputs\": [], \"inputs\": [{\"name\": \"i\", \"shape\": [1, 3], \"datatype\": "
              "\"INT8\", \"data\": [-128, 127, 2.0]}]}",
     0, 0, NULL, NULL, 1, {-128, 127, 2}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"UINT8\", "
              "\"data\": [0, 255, 1, 2, 3, 4]}]}",
     0, 0, NULL, NULL, 2, {0, 255, 1, 2, 3, 4}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT64\", "
              "\"data\": [-9223372036854775808, 9223372036854775807, -1e18]}]}",
     0, 0, NULL, NULL, 1, {-0x1p63f, 0x1p63f, -1e18f}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"UINT64\", "
              "\"data\": [9223372036854775807, 1.8e19, 0]}]}",
     0, 0, NULL, NULL, 1, {0x1p63f, 1.8e19f, 0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT32\", "
              "\"data\": [-2147483648, 2147483647, 0]}]}",
     0, 0, NULL, NULL, 1, {-2147483648.0f, 2147483647.0f, 0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"BOOL\", "
              "\"data\": [true, false, true]}]}",
     0, 0, NULL, NULL, 1, {1, 0, 1}, NULL},
    /* one input per feature, any order, [N] or [N, 1], flat or nested */
    {&named3, "{\"inputs\": [{\"name\": \"c\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [3, 6]}, "
              "{\"name\": \"a\", \"shape\": [2, 1], \"datatype\": \"INT32\", \"data\": [[1], [4]]}, "
              "{\"name\": \"b\", \"shape\": [2, 1], \"datatype\": \"BOOL\", \"data\": [false, true]}]}",
     0, 0, NULL, NULL, 2, {1, 0, 3, 4, 1, 6}, NULL},
    /* one feature: named like it, shape [N] is N rows; otherwise [1] is one row */
    {&named1, "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, 0, NULL, NULL, 3, {1, 2, 3}, NULL},
    {&named1, "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [7]}]}",
     0, 0, NULL, NULL, 1, {7}, NULL},
    {&named1, "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [3, 1], \"datatype\": \"FP32\", "
              "\"data\": [[1], [2], [3]]}]}",
     0, 0, NULL, NULL, 3, {1, 2, 3}, NULL},

    /* datatype ranges */
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"UINT8\", \"data\": [1, 256, 0]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "256 is out of range for UINT8 (0 to 255)", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"UINT16\", \"data\": [1, -1, 0]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "-1 is out of range for UINT16", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"UINT64\", \"data\": [1, -1, 0]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "out of range for UINT64", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT8\", \"data\": [1, 2, -129]}]}",
     0, CN_EINVAL, "inputs[0].data[2]", "out of range for INT8 (-128 to 127)", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT16\", \"data\": [1, 2, 32768.0]}]}",
     0, CN_EINVAL, "inputs[0].data[2]", "out of range for INT16", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT32\", \"data\": [1, 2, 2147483648]}]}",
     0, CN_EINVAL, "inputs[0].data[2]", "out of range for INT32", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT64\", \"data\": [1, 2, 1e19]}]}",
     0, CN_EINVAL, "inputs[0].data[2]", "out of range for INT64", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT32\", \"data\": [1, 1.5, 2]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "INT32 takes whole numbers, got 1.5", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"INT8\", \"data\": [1, null, 2]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "INT8 takes whole numbers, got null", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"BOOL\", \"data\": [true, 1, false]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "BOOL takes true or false, got a number", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, \"2\", 3]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "expected a number (or null for a missing value), got a string", 0, {0},
     NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, true, 3]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "got true", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP64\", \"data\": [1, 2, 1e39]}]}",
     0, CN_EINVAL, "inputs[0].data[2]", "out of range for a float", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [[1, 2, 3], [4, 5, 1e40]]}]}",
     0, CN_EINVAL, "inputs[0].data[1][2]", "out of range for a float", 0, {0}, NULL},
    /* datatypes */
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP16\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].datatype", "FP16 is not supported; send FP32 or FP64", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"BYTES\", \"data\": [\"a\", \"b\", "
              "\"c\"]}]}",
     0, CN_EINVAL, "inputs[0].datatype", "BYTES is not supported", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"fp32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].datatype", "unknown datatype; give one of FP32", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].datatype", "missing", 0, {0}, NULL},
    /* shapes */
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 4], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 4, "
              "5, 6, 7, 8]}]}",
     0, CN_EINVAL, "inputs[0].shape", "shape [2, 4]: the model takes 3 features, so use [N, 3]", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [4], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 4]}]}",
     0, CN_EINVAL, "inputs[0].shape", "shape [4] is one row of 4 values; the model takes 3 features", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [1, 1, 3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].shape", "2-D", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [-1, 3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].shape", "no -1", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].shape", "one or two dimensions", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": \"1,3\", \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].shape", "one or two dimensions", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [0, 3], \"datatype\": \"FP32\", \"data\": []}]}",
     0, CN_EINVAL, "inputs[0].shape", "no rows", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3, 3], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 4, "
              "5, 6, 7, 8, 9]}]}",
     2, CN_EINVAL, "inputs[0].shape", "at most 2 rows per call", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [9223372036854775807, 3], \"datatype\": \"FP32\", "
              "\"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].shape", "at most 10000 rows per call", 0, {0}, NULL},
    /* data against the shape */
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 4, "
              "5]}]}",
     0, CN_EINVAL, "inputs[0].data", "data has 5 values; shape [2, 3] needs 6", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [[1, 2, 3], [4, 5]]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "expected an array of 3 values (shape [2, 3])", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [[1, 2, 3], 4]}]}",
     0, CN_EINVAL, "inputs[0].data[1]", "got a number", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
              "\"data\": [[1, 2, 3]]}]}",
     0, CN_EINVAL, "inputs[0].data", "data has 1 rows; shape [2, 3] needs 2", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [[1, 2, 3]]}]}",
     0, CN_EINVAL, "inputs[0].data", "data has 1 values; shape [3] needs 3", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": {\"a\": 1}}]}",
     0, CN_EINVAL, "inputs[0].data", "expected an array of values", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\"}]}",
     0, CN_EINVAL, "inputs[0].data", "or as binary tensor data", 0, {0}, NULL},
    /* one input per feature */
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"colour\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"c\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     0, CN_EINVAL, "inputs[1].name", "unknown feature; the model's features are: a, b, c", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"b\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     0, CN_EINVAL, "inputs[2].name", "feature given twice (also by inputs[0])", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, 2]}, "
              "{\"name\": \"b\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"c\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, 2]}]}",
     0, CN_EINVAL, "inputs[1].shape", "shape [1] has a different row count from inputs[0] (2)", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [1, 2], \"datatype\": \"FP32\", \"data\": [1, 2]}, "
              "{\"name\": \"b\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"c\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     0, CN_EINVAL, "inputs[0].shape", "an input per feature has shape [N] or [N, 1]", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, 2]}, "
              "{\"name\": \"b\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"c\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, 2]}]}",
     0, CN_EINVAL, "inputs[1].data", "data has 1 values; shape [2] needs 2", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
              "{\"name\": \"b\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     0, CN_EINVAL, "inputs", "got 2 inputs; send one input of shape [N, 3], or one input per feature (3)", 0, {0},
     NULL},
    {&anon3, "{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
             "{\"name\": \"b\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}, "
             "{\"name\": \"c\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     0, CN_EINVAL, "inputs", "this model has no feature names; send one input of shape [N, 3]", 0, {0}, NULL},
    /* the document */
    {&named3, "", 0, CN_EINVAL, "", "empty body", 0, {0}, NULL},
    {&named3, "{\"inputs\": [}", 0, CN_EINVAL, "", "invalid JSON", 0, {0}, NULL},
    {&named3, "[]", 0, CN_EINVAL, "", "expected a JSON object", 0, {0}, NULL},
    {&named3, "{}", 0, CN_EINVAL, "inputs", "missing; send {\"inputs\"", 0, {0}, NULL},
    {&named3, "{\"inputs\": []}", 0, CN_EINVAL, "inputs", "expected a non-empty array", 0, {0}, NULL},
    {&named3, "{\"inputs\": {}}", 0, CN_EINVAL, "inputs", "expected a non-empty array", 0, {0}, NULL},
    {&named3, "{\"inputs\": [3]}", 0, CN_EINVAL, "inputs[0]", "expected an object", 0, {0}, NULL},
    {&named3, "{\"model_name\": \"m\", \"inputs\": []}", 0, CN_EINVAL, "model_name",
     "unknown field; expected id, parameters, inputs or outputs", 0, {0}, NULL},
    {&named3, "{\"parameters\": [], \"inputs\": []}", 0, CN_EINVAL, "parameters", "expected an object", 0, {0},
     NULL},
    {&named3, "{\"id\": 12, \"inputs\": []}", 0, CN_EINVAL, "id", "expected a string of at most 256 bytes", 0, {0},
     NULL},
    {&named3, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3], "
              "\"contents\": {}}]}",
     0, CN_EINVAL, "inputs[0].contents", "unknown field; expected name, shape, datatype, parameters or data", 0, {0},
     NULL},
    {&named3, "{\"inputs\": [{\"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].name", "missing; name the input", 0, {0}, NULL},
    {&named3, "{\"inputs\": [{\"name\": 1, \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "inputs[0].name", "expected a string", 0, {0}, NULL},
    {&named3, "{\"outputs\": [{\"name\": \"probabilities\"}], \"inputs\": [{\"name\": \"i\", \"shape\": [3], "
              "\"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "outputs[0].name", "unknown output; this model has one output, \"predict\"", 0, {0}, NULL},
    {&named3, "{\"outputs\": [{\"parameters\": {}}], \"inputs\": [{\"name\": \"i\", \"shape\": [3], "
              "\"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "outputs[0].name", "missing", 0, {0}, NULL},
    {&named3, "{\"outputs\": [{\"name\": \"predict\", \"shape\": [1]}], \"inputs\": [{\"name\": \"i\", "
              "\"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "outputs[0].shape", "unknown field", 0, {0}, NULL},
    {&named3, "{\"outputs\": {\"name\": \"predict\"}, \"inputs\": [{\"name\": \"i\", \"shape\": [3], "
              "\"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}",
     0, CN_EINVAL, "outputs", "expected an array", 0, {0}, NULL},
};
/* clang-format on */

static void test_oip_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(oip_cases); i++) {
        const struct oip_case *c = &oip_cases[i];
        struct infer_caps caps = {.max_rows = c->max_rows};
        struct infer_err err = {{0}, {0}};
        float *x = (float *)&err;
        char *id = (char *)&err;
        size_t n = 99;
        int rc = infer_oip_parse(c->body, strlen(c->body), -1, c->meta, &caps, &x, &n, &id, &binary_out, &err);

        if (c->rc != 0) {
            check_refusal("oip", i, rc, c->rc, &err, c->field, c->msg);
            assert_null(x);
            assert_null(id);
            assert_int_equal(n, 0);
            continue;
        }
        if (rc != 0)
            print_error("oip case %zu: %s: %s\n", i, err.field, err.message);
        assert_int_equal(rc, 0);
        assert_int_equal(n, c->nrows);
        check_matrix("oip", i, x, c->want, n * (size_t)c->meta->num_features);
        if (c->id == NULL)
            assert_null(id);
        else
            assert_string_equal(id, c->id);
        free(x);
        free(id);
    }
}

/* Flat and nested data of the same shape, and one input per feature, give one matrix. */
static void test_oip_forms_agree(void **state)
{
    (void)state;
    const char *bodies[] = {
        "{\"inputs\": [{\"name\": \"t\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
        "\"data\": [0.1, null, 3e10, -7, 0, 1e-30]}]}",
        "{\"inputs\": [{\"name\": \"t\", \"shape\": [2, 3], \"datatype\": \"FP64\", "
        "\"data\": [[0.1, null, 3e10], [-7, 0, 1e-30]]}]}",
        "{\"inputs\": [{\"name\": \"b\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [null, "
        "0]}, "
        "{\"name\": \"c\", \"shape\": [2, 1], \"datatype\": \"FP64\", \"data\": [[3e10], "
        "[1e-30]]}, "
        "{\"name\": \"a\", \"shape\": [2, 1], \"datatype\": \"FP32\", \"data\": [0.1, -7]}]}",
    };
    const float want[6] = {0.1f, M, 3e10f, -7, 0, 1e-30f};
    struct infer_err err;

    for (size_t i = 0; i < CN_ARRAY_LEN(bodies); i++) {
        float *x;
        char *id;
        size_t n;
        assert_int_equal(
            infer_oip_parse(bodies[i], strlen(bodies[i]), -1, &named3, NULL, &x, &n, &id, &binary_out, &err), 0);
        assert_int_equal(n, 2);
        check_matrix("forms", i, x, want, 6);
        free(x);
    }

    /* The same rows as v1 arrays and objects. */
    const char *v1 = "{\"instances\": [[0.1, null, 3e10], {\"c\": 1e-30, \"a\": -7, \"b\": 0}]}";
    struct infer_v1_req r;
    float *x;
    size_t n;
    assert_int_equal(infer_v1_parse(v1, strlen(v1), NULL, &r, &err), 0);
    assert_int_equal(infer_rows_dense(r.instances, "instances", &named3, NULL, &x, &n, &err), 0);
    check_matrix("v1 forms", 0, x, want, 6);
    free(x);
    infer_v1_req_free(&r);
}

/* Binary tensor data: a JSON part of header_len bytes, then each binary input's values,
 * little-endian and back to back. Appends a little-endian value of `size` bytes. */
static void put_le(struct cn_buf *b, uint64_t v, unsigned size)
{
    for (unsigned i = 0; i < size; i++)
        cn_buf_putc(b, (char)(v >> (8 * i)));
}
static void put_f32(struct cn_buf *b, float f)
{
    uint32_t w;
    memcpy(&w, &f, sizeof w);
    put_le(b, w, 4);
}
static void put_f64(struct cn_buf *b, double d)
{
    uint64_t w;
    memcpy(&w, &d, sizeof w);
    put_le(b, w, 8);
}

/* Parses b (JSON part of hlen bytes) against named3; returns the code, x and err filled. */
static int parse_bin(const struct cn_buf *b, long long hlen, float **x, size_t *n, struct infer_err *err)
{
    char *id = NULL;
    int rc = infer_oip_parse(b->data, b->len, hlen, &named3, NULL, x, n, &id, &binary_out, err);
    free(id);
    return rc;
}

static void expect_refusal(struct cn_buf *b, long long hlen, const char *field, const char *says)
{
    struct infer_err err;
    float *x;
    size_t n;
    assert_int_equal(parse_bin(b, hlen, &x, &n, &err), CN_EINVAL);
    assert_null(x);
    assert_string_equal(err.field, field);
    if (strstr(err.message, says) == NULL) {
        print_error("message \"%s\" lacks \"%s\"\n", err.message, says);
        fail();
    }
}

/* Starts b as a request of one input [1, 3] of dtype whose binary_data_size is size
 * (extra: more keys for the input); returns the length of this JSON part. */
static long long one_input(struct cn_buf *b, const char *dtype, int size, const char *extra)
{
    cn_buf_reset(b);
    cn_buf_printf(b,
                  "{\"inputs\": [{\"name\": \"t\", \"shape\": [1, 3], \"datatype\": \"%s\", "
                  "\"parameters\": {\"binary_data_size\": %d}%s}]}",
                  dtype, size, extra);
    return (long long)b->len;
}

static void test_oip_binary(void **state)
{
    (void)state;
    struct cn_buf b = {0};
    struct infer_err err;
    float *x;
    size_t n;
    long long h;

    /* One FP32 input [2, 3]: the matrix of the JSON forms (NaN is the missing value). */
    const float want[6] = {0.1f, M, 3e10f, -7, 0, 1e-30f};
    cn_buf_puts(&b, "{\"inputs\": [{\"name\": \"t\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
                    "\"parameters\": {\"binary_data_size\": 24}}]}");
    h = (long long)b.len;
    for (int i = 0; i < 6; i++)
        put_f32(&b, want[i]);
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    assert_int_equal(n, 2);
    check_matrix("binary fp32", 0, x, want, 6);
    free(x);

    /* One input per feature, binary and JSON mixed, integer and BOOL types. */
    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"inputs\": ["
                    "{\"name\": \"c\", \"shape\": [2], \"datatype\": \"BOOL\", \"parameters\": {\"binary_data_size\": 2}},"
                    "{\"name\": \"b\", \"shape\": [2, 1], \"datatype\": \"FP64\", \"data\": [null, 0]},"
                    "{\"name\": \"a\", \"shape\": [2], \"datatype\": \"INT16\", \"parameters\": {\"binary_data_size\": 4}}]}");
    h = (long long)b.len;
    put_le(&b, 1, 1);
    put_le(&b, 0, 1);
    put_le(&b, 5, 2);
    put_le(&b, (uint16_t)-7, 2);
    const float want2[6] = {5, M, 1, -7, 0, 0};
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    check_matrix("binary per feature", 0, x, want2, 6);
    free(x);

    /* FP32 per feature: each column lands in its place, NaN stays missing. */
    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"inputs\": ["
                    "{\"name\": \"c\", \"shape\": [2], \"datatype\": \"FP32\", \"parameters\": {\"binary_data_size\": 8}},"
                    "{\"name\": \"a\", \"shape\": [2], \"datatype\": \"FP32\", \"parameters\": {\"binary_data_size\": 8}},"
                    "{\"name\": \"b\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [4, 5]}]}");
    h = (long long)b.len;
    put_f32(&b, 3);
    put_f32(&b, 6);
    put_f32(&b, M);
    put_f32(&b, -1e-40f);
    const float want3[6] = {M, 4, 3, -1e-40f, 5, 6};
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    check_matrix("binary fp32 per feature", 0, x, want3, 6);
    free(x);

    /* The header may also cover the whole body (no binary part). */
    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"inputs\": [{\"name\": \"t\", \"shape\": [3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}");
    assert_int_equal(parse_bin(&b, (long long)b.len, &x, &n, &err), 0);
    free(x);

    /* What is refused, and where. */
    h = one_input(&b, "FP32", 12, "");
    put_f32(&b, 1);
    put_f32(&b, 2);
    put_f32(&b, 3);
    expect_refusal(&b, (long long)b.len + 1, "Inference-Header-Content-Length", "more than the body's");
    cn_buf_putc(&b, 0);
    expect_refusal(&b, h, "inputs", "13 bytes after the JSON part, but the inputs' binary_data_size add up to 12");

    h = one_input(&b, "FP32", 16, "");
    put_f32(&b, 1);
    put_f32(&b, 2);
    put_f32(&b, 3);
    expect_refusal(&b, h, "inputs[0].parameters.binary_data_size", "only 12 of the body are left");

    h = one_input(&b, "FP32", 8, "");
    put_f32(&b, 1);
    put_f32(&b, 2);
    expect_refusal(&b, h, "inputs[0].parameters.binary_data_size", "8 bytes; shape [1, 3] of FP32 needs 12");

    h = one_input(&b, "FP32", 12, ", \"data\": [1, 2, 3]");
    put_f32(&b, 1);
    put_f32(&b, 2);
    put_f32(&b, 3);
    expect_refusal(&b, h, "inputs[0].data", "either in data or as binary tensor data");

    /* binary_data_size in a request without the header (all of it JSON) */
    one_input(&b, "FP32", 12, "");
    expect_refusal(&b, -1, "inputs[0].parameters.binary_data_size",
                   "needs the Inference-Header-Content-Length header");

    one_input(&b, "FP32", -4, "");
    expect_refusal(&b, (long long)b.len, "inputs[0].parameters.binary_data_size", "a whole number of bytes");

    h = one_input(&b, "FP32", 12, "");
    put_f32(&b, 1);
    put_f32(&b, INFINITY);
    put_f32(&b, 3);
    expect_refusal(&b, h, "inputs[0] (binary), row 0, column 1", "infinite; send NaN for a missing value");

    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"inputs\": [{\"name\": \"t\", \"shape\": [2, 3], \"datatype\": \"FP32\", "
                    "\"parameters\": {\"binary_data_size\": 24}}]}");
    h = (long long)b.len;
    for (int i = 0; i < 6; i++)
        put_f32(&b, i == 5 ? -INFINITY : (float)i);
    expect_refusal(&b, h, "inputs[0] (binary), row 1, column 2", "infinite; send NaN for a missing value");

    h = one_input(&b, "FP64", 24, "");
    put_f64(&b, 1);
    put_f64(&b, 2);
    put_f64(&b, 1e39);
    expect_refusal(&b, h, "inputs[0] (binary), row 0, column 2", "out of range for a float");

    h = one_input(&b, "BOOL", 3, "");
    put_le(&b, 0, 1);
    put_le(&b, 2, 1);
    put_le(&b, 1, 1);
    expect_refusal(&b, h, "inputs[0] (binary), row 0, column 1", "BOOL takes bytes 0 and 1");

    /* Signed and unsigned widths read exactly. */
    h = one_input(&b, "INT64", 24, "");
    put_le(&b, (uint64_t)-3, 8);
    put_le(&b, 1ull << 40, 8);
    put_le(&b, 0, 8);
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    assert_true(x[0] == -3.0f && x[1] == 0x1p40f && x[2] == 0.0f);
    free(x);
    h = one_input(&b, "UINT8", 3, "");
    put_le(&b, 255, 1);
    put_le(&b, 0, 1);
    put_le(&b, 128, 1);
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    assert_true(x[0] == 255.0f && x[1] == 0.0f && x[2] == 128.0f);
    free(x);
    h = one_input(&b, "INT8", 3, "");
    put_le(&b, 0x80, 1);
    put_le(&b, 0x7f, 1);
    put_le(&b, 0xff, 1);
    assert_int_equal(parse_bin(&b, h, &x, &n, &err), 0);
    assert_true(x[0] == -128.0f && x[1] == 127.0f && x[2] == -1.0f);
    free(x);
    cn_buf_free(&b);
}

/* The id is copied, and a long one refused rather than cut. */
static void test_oip_id(void **state)
{
    (void)state;
    struct cn_buf b = {0};
    struct infer_err err;
    float *x;
    char *id;
    size_t n;

    for (int len = INFER_MAX_ID; len <= INFER_MAX_ID + 1; len++) {
        cn_buf_reset(&b);
        cn_buf_puts(&b, "{\"id\": \"");
        for (int i = 0; i < len; i++)
            cn_buf_putc(&b, 'a' + i % 26);
        cn_buf_puts(&b,
                    "\", \"inputs\": [{\"name\": \"t\", \"shape\": [3], \"datatype\": \"FP32\", "
                    "\"data\": [1, 2, 3]}]}");
        int rc = infer_oip_parse(b.data, b.len, -1, &named3, NULL, &x, &n, &id, &binary_out, &err);
        if (len == INFER_MAX_ID) {
            assert_int_equal(rc, 0);
            assert_int_equal(strlen(id), INFER_MAX_ID);
            assert_memory_equal(id, "abcdef", 6);
            free(x);
            free(id);
        } else {
            assert_int_equal(rc, CN_EINVAL);
            assert_string_equal(err.field, "id");
            assert_null(id);
        }
    }
    cn_buf_free(&b);
}

/* The value cap counts rows times features; the default caps apply when none are given. */
static void test_caps(void **state)
{
    (void)state;
    struct infer_meta m = wide(100);
    struct infer_caps caps = {.max_rows = 1000, .max_cells = 250};
    struct cn_buf b = {0};
    struct infer_err err;
    float *x;
    char *id;
    size_t n;

    cn_buf_puts(
        &b,
        "{\"inputs\": [{\"name\": \"t\", \"shape\": [3, 100], \"datatype\": \"FP32\", \"data\": [");
    for (int i = 0; i < 300; i++)
        cn_buf_printf(&b, "%s%d", i ? "," : "", i);
    cn_buf_puts(&b, "]}]}");
    assert_int_equal(infer_oip_parse(b.data, b.len, -1, &m, &caps, &x, &n, &id, &binary_out, &err), CN_EINVAL);
    assert_string_equal(err.field, "inputs[0].shape");
    assert_non_null(strstr(err.message,
                           "3 rows of 100 features are more than the 250 values allowed per call"));
    caps.max_cells = 300;
    assert_int_equal(infer_oip_parse(b.data, b.len, -1, &m, &caps, &x, &n, &id, &binary_out, &err), 0);
    assert_int_equal(n, 3);
    assert_true(x[299] == 299.0f && x[100] == 100.0f);
    free(x);

    /* v1: INFER_DEFAULT_MAX_ROWS rows pass with NULL caps, one more does not. */
    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"instances\": [[0]");
    for (int i = 1; i < INFER_DEFAULT_MAX_ROWS; i++)
        cn_buf_puts(&b, ",[0]");
    size_t at = b.len;
    cn_buf_puts(&b, "]}");
    struct infer_v1_req r;
    assert_int_equal(infer_v1_parse(b.data, b.len, NULL, &r, &err), 0);
    assert_int_equal(r.nrows, INFER_DEFAULT_MAX_ROWS);
    infer_v1_req_free(&r);
    b.len = at;
    cn_buf_puts(&b, ",[0]]}");
    assert_int_equal(infer_v1_parse(b.data, b.len, NULL, &r, &err), CN_EINVAL);
    assert_string_equal(err.field, "instances");
    assert_non_null(strstr(err.message, "at most 10000 rows per call"));
    cn_buf_free(&b);
    free_wide(&m);
}

/* ------------------------------------------------------------------ responses */

static json_t *parse_back(const struct cn_buf *b)
{
    json_error_t jerr;
    json_t *j = json_loadb(b->data, b->len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        print_error("not JSON: %s (%s)\n", b->data, jerr.text);
    assert_non_null(j);
    return j;
}

static void test_v1_response_binary(void **state)
{
    (void)state;
    const float pred[] = {0.25f, 0.1f, NAN, 1e-7f, INFINITY};
    struct cn_buf b = {0};

    infer_v1_response(&b, pred, 5, 1, "churn", 3, "b", "0123abcd");
    assert_string_equal(
        b.data, "{\"predictions\":[0.25,0.100000001,null,1.00000001e-07,null],\"model\":\"churn\","
                "\"model_version\":3,\"variant\":\"b\",\"request_id\":\"0123abcd\"}");
    json_t *j = parse_back(&b);
    json_t *p = json_object_get(j, "predictions");
    assert_int_equal(json_array_size(p), 5);
    assert_true((float)json_real_value(json_array_get(p, 1)) == 0.1f); /* %.9g round trips */
    assert_true((float)json_real_value(json_array_get(p, 3)) == 1e-7f);
    assert_true(json_is_null(json_array_get(p, 2)));
    assert_int_equal(json_integer_value(json_object_get(j, "model_version")), 3);
    json_decref(j);

    cn_buf_reset(&b);
    infer_v1_response(&b, pred, 1, 1, "m", 1, NULL, "r");
    assert_string_equal(
        b.data, "{\"predictions\":[0.25],\"model\":\"m\",\"model_version\":1,\"variant\":\"\","
                "\"request_id\":\"r\"}");
    cn_buf_free(&b);
}

static void test_v1_response_multiclass(void **state)
{
    (void)state;
    const float pred[] = {0.7f, 0.2f, 0.1f, 0, 0.5f, 0.5f};
    struct cn_buf b = {0};

    infer_v1_response(&b, pred, 2, 3, "iris", 12, "control", "req\"1");
    assert_string_equal(b.data,
                        "{\"predictions\":[[0.699999988,0.200000003,0.100000001],[0,0.5,0.5]],"
                        "\"model\":\"iris\",\"model_version\":12,\"variant\":\"control\","
                        "\"request_id\":\"req\\\"1\"}");
    json_t *j = parse_back(&b);
    json_t *p = json_object_get(j, "predictions");
    assert_int_equal(json_array_size(p), 2);
    assert_int_equal(json_array_size(json_array_get(p, 0)), 3);
    for (size_t i = 0; i < 6; i++)
        assert_true((float)json_number_value(json_array_get(json_array_get(p, i / 3), i % 3)) ==
                    pred[i]);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "req\"1");
    json_decref(j);
    cn_buf_free(&b);
}

static void test_oip_response(void **state)
{
    (void)state;
    const float bin[] = {0.25f, 0.875f};
    const float multi[] = {0.7f, 0.2f, 0.1f, 0, 0.5f, NAN};
    struct cn_buf b = {0};

    infer_oip_response(&b, "churn", 3, "req-1", bin, 2, 1, false);
    assert_string_equal(
        b.data,
        "{\"model_name\":\"churn\",\"model_version\":\"3\",\"id\":\"req-1\",\"outputs\":"
        "[{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[0.25,0.875]}]}");
    json_t *j = parse_back(&b);
    assert_string_equal(json_string_value(json_object_get(j, "model_version")), "3");
    json_decref(j);

    cn_buf_reset(&b);
    infer_oip_response(&b, "iris", 2, NULL, multi, 2, 3, false);
    assert_string_equal(b.data,
                        "{\"model_name\":\"iris\",\"model_version\":\"2\",\"outputs\":[{\"name\":"
                        "\"predict\",\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":"
                        "[0.699999988,0.200000003,0.100000001,0,0.5,null]}]}");
    j = parse_back(&b);
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_int_equal(json_array_size(json_object_get(o, "data")), 6);
    assert_null(json_object_get(j, "id"));
    json_decref(j);
    cn_buf_free(&b);
}

/* Binary tensor data out: asked for per output or for the request, the output's word
 * first; the JSON part and then the predictions as little-endian FP32. */
static void test_oip_binary_output(void **state)
{
    (void)state;
    static const struct {
        const char *extra;
        int want;          /* 0, 1, or -1: refused */
        const char *field;
    } cases[] = {
        {"", 0, NULL},
        {", \"outputs\": [{\"name\": \"predict\", \"parameters\": {\"binary_data\": true}}]", 1, NULL},
        {", \"parameters\": {\"binary_data_output\": true}", 1, NULL},
        {", \"parameters\": {\"binary_data_output\": true}, \"outputs\": [{\"name\": \"predict\"}]", 1, NULL},
        {", \"parameters\": {\"binary_data_output\": true}, "
         "\"outputs\": [{\"name\": \"predict\", \"parameters\": {\"binary_data\": false}}]", 0, NULL},
        {", \"parameters\": {\"binary_data_output\": false}", 0, NULL},
        {", \"outputs\": [{\"name\": \"predict\", \"parameters\": {\"binary_data\": \"yes\"}}]", -1,
         "outputs[0].parameters.binary_data"},
        {", \"parameters\": {\"binary_data_output\": 1}", -1, "parameters.binary_data_output"},
    };
    struct cn_buf b = {0};
    for (size_t i = 0; i < CN_ARRAY_LEN(cases); i++) {
        struct infer_err err;
        float *x;
        size_t n;
        char *id;
        bool binary = !cases[i].want;
        cn_buf_reset(&b);
        cn_buf_printf(&b, "{\"inputs\": [{\"name\": \"i\", \"shape\": [3], \"datatype\": \"FP32\", "
                          "\"data\": [1, 2, 3]}]%s}", cases[i].extra);
        int rc = infer_oip_parse(b.data, b.len, -1, &named3, NULL, &x, &n, &id, &binary, &err);
        if (cases[i].want < 0) {
            assert_int_equal(rc, CN_EINVAL);
            assert_string_equal(err.field, cases[i].field);
            assert_non_null(strstr(err.message, "expected true or false"));
            continue;
        }
        if (rc != 0 || binary != (cases[i].want == 1))
            print_error("case %zu: rc %d, binary %d\n", i, rc, binary);
        assert_int_equal(rc, 0);
        assert_int_equal(binary, cases[i].want == 1);
        free(x);
    }

    const float multi[6] = {0.7f, 0.2f, 0.1f, 0, 0.5f, INFINITY};
    cn_buf_reset(&b);
    size_t h = infer_oip_response(&b, "iris", 2, "r1", multi, 2, 3, true);
    const char *want = "{\"model_name\":\"iris\",\"model_version\":\"2\",\"id\":\"r1\",\"outputs\":[{\"name\":"
                       "\"predict\",\"datatype\":\"FP32\",\"shape\":[2,3],"
                       "\"parameters\":{\"binary_data_size\":24}}]}";
    assert_int_equal(h, strlen(want));
    assert_memory_equal(b.data, want, h);
    assert_int_equal(b.len, h + 24);
    for (int i = 0; i < 6; i++) {
        const unsigned char *p = (const unsigned char *)b.data + h + 4 * i;
        uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &w, 4);
        assert_true(f == multi[i]);
    }
    cn_buf_free(&b);
}

static void test_metadata(void **state)
{
    (void)state;
    const struct infer_meta iris = {.num_features = 4, .num_classes = 3, .outputs = 3};
    const int versions[] = {1, 2, 10};
    struct cn_buf b = {0};

    infer_oip_model_metadata(&b, "iris", versions, 3, &iris);
    assert_string_equal(
        b.data, "{\"name\":\"iris\",\"versions\":[\"1\",\"2\",\"10\"],\"platform\":\"xgboost\","
                "\"inputs\":[{\"name\":\"input-0\",\"datatype\":\"FP32\",\"shape\":[-1,4]}],"
                "\"outputs\":[{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":[-1,3]}]}");
    json_decref(parse_back(&b));

    cn_buf_reset(&b);
    infer_oip_model_metadata(&b, "churn", versions, 1, &named3);
    assert_string_equal(
        b.data, "{\"name\":\"churn\",\"versions\":[\"1\"],\"platform\":\"xgboost\","
                "\"inputs\":[{\"name\":\"input-0\",\"datatype\":\"FP32\",\"shape\":[-1,3]}],"
                "\"outputs\":[{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":[-1]}]}");

    cn_buf_reset(&b);
    infer_oip_model_metadata(&b, "empty", NULL, 0, NULL);
    assert_string_equal(
        b.data, "{\"name\":\"empty\",\"versions\":[],\"platform\":\"xgboost\",\"inputs\":[],"
                "\"outputs\":[]}");

    cn_buf_reset(&b);
    infer_oip_server_metadata(&b, "0.4.0");
    assert_string_equal(b.data,
                        "{\"name\":\"cairn-inference\",\"version\":\"0.4.0\",\"extensions\":[\"binary_tensor_data\"]}");
    json_decref(parse_back(&b));
    cn_buf_free(&b);
}

static void test_v1_fast_path_agrees(void **state)
{
    (void)state;
    static const char *bodies[] = {
        "{\"instances\": [[1, -0, 0.5, 1e3]]}",
        " {\"instances\":[[1.25e-3,-2.5E+2,123456789012345678,0.1]] , \"version\" : 2 }\n",
        "{\"alias\": \"production\", \"instances\": [[3.4028235e38, null, true, false]]}",
        "{\"instances\": [[1e-50, -0.0, 0.30000000000000004, 12345678901234567890123]]}",
        "{\"instances\": [[0.000000000000000000000000123456789, 9007199254740993, 1e22, 1e23]]}",
        "{\"instances\": [[1, 2, 3, 4], [5, 6, 7, 8]], \"version\": null, \"alias\": null}",
        "{\"instances\": [[3.5e38, 0, 0, 0]]}",             /* beyond a float */
        "{\"instances\": [[1e400, 0, 0, 0]]}",              /* beyond a double */
        "{\"instances\": [[1, 2, 3], [1, 2, 3, 4]]}",       /* ragged */
        "{\"instances\": [[1, 2, 3]]}",                     /* narrow for the model */
        "{\"instances\": [[01, 2, 3, 4]]}",                 /* not JSON */
        "{\"instances\": [[1., 2, 3, 4]]}",
        "{\"instances\": [[1, 2, 3, 4]], \"instances\": [[1, 2, 3, 4]]}",
        "{\"instances\": [[1, 2, 3, 4]], \"version\": 1, \"alias\": \"a\"}",
        "{\"instances\": [[1, 2, 3, 4]], \"version\": 0}",
        "{\"instances\": [[1, 2, 3, 4]], \"alias\": \"Prod\"}",
        "{\"instances\": [[1, 2, \"3\", 4]]}",
        "{\"instances\": [{\"a\": 1}]}",
        "{\"instances\": []}",
        "{\"instances\": [[]]}",
        "{\"instances\": [[1, 2, 3, 4]]} x",
        "{\"instances\": [[1, 2, 3, 4]], \"extra\": 1}",
    };
    static char *abcd[] = {"a", "b", "c", "d"};
    const struct infer_meta meta = {.num_features = 4, .feature_names = abcd, .n_feature_names = 4, .outputs = 1};
    const struct infer_caps caps = {.max_rows = 100, .max_cells = 1000};
    size_t fast_taken = 0;

    for (size_t i = 0; i < CN_ARRAY_LEN(bodies); i++) {
        struct infer_v1_req f, s;
        struct infer_err ef = {{0}, {0}}, es = {{0}, {0}};
        int rf = infer_v1_parse(bodies[i], strlen(bodies[i]), &caps, &f, &ef);
        infer_v1_fast = false;
        int rs = infer_v1_parse(bodies[i], strlen(bodies[i]), &caps, &s, &es);
        infer_v1_fast = true;
        if (rf != rs || strcmp(ef.message, es.message) != 0)
            print_error("body %zu: fast %d %s, jansson %d %s\n", i, rf, ef.message, rs, es.message);
        assert_int_equal(rf, rs);
        assert_string_equal(ef.message, es.message);
        if (rf != CN_OK)
            continue;
        fast_taken += f.x != NULL;
        if (getenv("CODEC_TEST_VERBOSE"))
            print_message("body %zu: %s\n", i, f.x ? "fast" : "jansson");
        assert_int_equal(f.version, s.version);
        assert_string_equal(f.alias, s.alias);
        assert_int_equal(f.nrows, s.nrows);
        float *xf = NULL, *xs = NULL;
        size_t nf = 0, ns = 0;
        rf = infer_v1_rows(&f, &meta, &caps, &xf, &nf, &ef);
        rs = infer_v1_rows(&s, &meta, &caps, &xs, &ns, &es);
        if (rf != rs || strcmp(ef.message, es.message) != 0)
            print_error("body %zu rows: fast %d %s, jansson %d %s\n", i, rf, ef.message, rs, es.message);
        assert_int_equal(rf, rs);
        assert_string_equal(ef.field, es.field);
        assert_string_equal(ef.message, es.message);
        if (rf == CN_OK) {
            assert_int_equal(nf, ns);
            assert_memory_equal(xf, xs, nf * 4 * sizeof *xf);
        }
        free(xf);
        free(xs);
        infer_v1_req_free(&f);
        infer_v1_req_free(&s);
    }
    /* The common shapes took the fast path: bodies 0, 1, 4, 5 and the narrow 9 (2 holds a
     * value just beyond FLT_MAX, 3 an integer of 23 digits: jansson's path reads those). */
    assert_int_equal(fast_taken, 5);
}

/* fmt_float9 writes exactly what printf's %.9g writes: edges, the floats next to each
 * power of ten, and 300 000 pseudo-random floats: random bit patterns, decimals such as
 * clients send, and probabilities. */
static void test_float_text_is_printf(void **state)
{
    (void)state;
    static const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 0.5f, 1e-5f, 9.99999e-5f, 1e-4f, 1e-22f,
                                  1e22f, 999999999.0f, 1e9f, 123456789.0f, 3.0e-39f, FLT_MIN, FLT_MAX,
                                  -FLT_MAX, 4.50017505e-05f, 16777216.0f, 0.30000001f};
    char got[64], want[64];
    uint32_t x = 20261206;

    for (size_t i = 0; i < CN_ARRAY_LEN(edges) + 300000; i++) {
        float f;
        if (i < CN_ARRAY_LEN(edges)) {
            f = edges[i];
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (i % 3 == 1)
                f = (float)((x % 2000000) / 10000.0 - 100.0);
            else if (i % 3 == 2) /* a probability, as most predictions are */
                f = (float)(x % 16777216) / 16777216.0f;
            else
                memcpy(&f, &x, sizeof f);
            if (!isfinite(f))
                continue;
        }
        size_t n = fmt_float9(got, f);
        snprintf(want, sizeof want, "%.9g", (double)f);
        if (strcmp(got, want) != 0)
            print_error("%a: got %s, printf %s\n", (double)f, got, want);
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
    }
    /* Where the decimal exponent changes: the estimate from the binary exponent is low
     * just above a power of ten. */
    for (int p = -40; p <= 38; p++) {
        float t = (float)pow(10.0, p);
        const float near[] = {nextafterf(t, 0), t, nextafterf(t, INFINITY), -t};
        for (size_t j = 0; j < CN_ARRAY_LEN(near); j++) {
            if (!isfinite(near[j]))
                continue;
            size_t n = fmt_float9(got, near[j]);
            snprintf(want, sizeof want, "%.9g", (double)near[j]);
            assert_string_equal(got, want);
            assert_int_equal(n, strlen(want));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_parse_cases),
        cmocka_unit_test(test_v1_field_text),
        cmocka_unit_test(test_rows_dense_cases),
        cmocka_unit_test(test_rows_dense_path),
        cmocka_unit_test(test_rows_dense_wide),
        cmocka_unit_test(test_oip_parse_cases),
        cmocka_unit_test(test_oip_forms_agree),
        cmocka_unit_test(test_oip_id),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_v1_response_binary),
        cmocka_unit_test(test_v1_response_multiclass),
        cmocka_unit_test(test_oip_binary),
        cmocka_unit_test(test_oip_response),
        cmocka_unit_test(test_oip_binary_output),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_v1_fast_path_agrees),
        cmocka_unit_test(test_float_text_is_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
