/* inference_codec.c — predict and Open Inference Protocol JSON in and out (contract in
 * inference_codec.h).
 *
 * Requests: jansson parses the whole body (duplicate keys refused; it refuses NaN and
 * Infinity literals, overflowing numbers, invalid UTF-8 and \u0000 by itself), then one
 * walk checks the shape against the model and writes a dense row-major float matrix,
 * NaN for missing values, which is what XGBoosterPredictFromDense takes. Every count that
 * comes from the body (rows, values, shape dimensions, inputs) is checked against the
 * caps before anything is allocated from it, and before XGBoost could see a wrong width
 * (which it answers with a C++ check failure, not an error).
 * Rows given as objects are matched to feature names by position first (clients send
 * keys in the model's order) and by a hash of the names, built once per call, when that
 * guess misses: a wide model with shuffled keys stays linear.
 * Responses are written straight into a cn_buf with %.9g, enough for a float to round
 * trip.
 *
 * To accept a new OIP datatype, add a row to dtypes[] (and a case to oip_cell if it is
 * not a number or a boolean). To add a v1 request field, touch infer_v1_parse and
 * struct infer_v1_req.
 */
#include "inference_codec.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"
#include "inference_model.h"
#include "util.h"

/* How many feature names an "unknown feature" message lists before "...". */
#define LIST_NAMES 8

/* ------------------------------------------------------------------ helpers */

/* The powers of ten a double holds exactly: m * or / one of them, m < 2^53, is one
 * correctly rounded operation (the fast parser and fmt_float9 rely on it). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};


static int refuse(struct infer_err *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records where and what went wrong; returns CN_EINVAL so callers can `return refuse(...)`. */
static int refuse(struct infer_err *err, const char *field, const char *fmt, ...)
{
    va_list ap;
    size_t n = strlen(field);

    /* Paths are built from the body (feature names): cut them, never overflow. */
    if (n >= sizeof err->field)
        n = sizeof err->field - 1;
    memcpy(err->field, field, n);
    err->field[n] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return CN_EINVAL;
}

static void caps_get(const struct infer_caps *caps, size_t *rows, size_t *cells)
{
    *rows = caps && caps->max_rows ? caps->max_rows : INFER_DEFAULT_MAX_ROWS;
    *cells = caps && caps->max_cells ? caps->max_cells : INFER_DEFAULT_MAX_CELLS;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "something else";
}

static bool has_names(const struct infer_meta *meta)
{
    return meta->n_feature_names > 0 && meta->n_feature_names == (size_t)meta->num_features &&
           meta->feature_names != NULL;
}

static const char *feature_name(const struct infer_meta *meta, size_t i)
{
    const char *s = meta->feature_names[i];
    return s ? s : "";
}

/* Parses a whole body that must be a JSON object; on failure err says where. */
static int load_object(const void *body, size_t len, const char *example, json_t **root,
                       struct infer_err *err)
{
    json_error_t jerr;

    *root = NULL;
    if (body == NULL || len == 0)
        return refuse(err, "", "empty body; send %s", example);
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*root == NULL)
        return refuse(err, "", "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                      jerr.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return refuse(err, "", "expected a JSON object: %s", example);
    }
    return CN_OK;
}

/* ------------------------------------------------------------------ feature names */

/* Feature name -> column, for rows sent as objects and OIP inputs named per feature. */
struct names {
    const struct infer_meta *meta;
    int32_t *slot; /* open addressing: column + 1, 0 = empty; NULL until needed */
    size_t mask;
};

static uint32_t hash_str(const char *s)
{
    /* FNV-1a: the table holds only the model's own names, so a client cannot choose
     * colliding keys to slow it down (an unknown key costs one failed probe run). */
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void names_build(struct names *n)
{
    size_t f = (size_t)n->meta->num_features, size = 16;

    while (size < 2 * f)
        size *= 2;
    n->slot = cn_calloc(size, sizeof *n->slot);
    n->mask = size - 1;
    for (size_t i = 0; i < f; i++) {
        size_t h = hash_str(feature_name(n->meta, i)) & n->mask;
        while (n->slot[h] != 0)
            h = (h + 1) & n->mask;
        n->slot[h] = (int32_t)i + 1;
    }
}

/* Returns the column of feature `key`, or -1. hint is the column expected (the one after
 * the previous key): clients usually send keys in the model's order. */
static int names_find(struct names *n, const char *key, size_t hint)
{
    size_t f = (size_t)n->meta->num_features;

    if (hint < f && strcmp(feature_name(n->meta, hint), key) == 0)
        return (int)hint;
    if (n->slot == NULL)
        names_build(n);
    for (size_t h = hash_str(key) & n->mask; n->slot[h] != 0; h = (h + 1) & n->mask) {
        size_t i = (size_t)n->slot[h] - 1;
        if (strcmp(feature_name(n->meta, i), key) == 0)
            return (int)i;
    }
    return -1;
}

static void names_fini(struct names *n)
{
    free(n->slot);
    n->slot = NULL;
}

/* "unknown feature; the model's features are: a, b, c" with at most LIST_NAMES names
 * and a bounded length, so a model with 10 000 features still gives a short answer. */
static int refuse_unknown_feature(struct infer_err *err, const char *field,
                                  const struct infer_meta *meta)
{
    char list[160];
    size_t len = 0, f = (size_t)meta->num_features, i;

    list[0] = '\0';
    for (i = 0; i < f && i < LIST_NAMES; i++) {
        const char *s = feature_name(meta, i);
        size_t n = strlen(s);
        if (len + n + 2 >= sizeof list - 24)
            break;
        if (i > 0) {
            memcpy(list + len, ", ", 2);
            len += 2;
        }
        memcpy(list + len, s, n);
        len += n;
        list[len] = '\0';
    }
    if (i < f)
        snprintf(list + len, sizeof list - len, "%s... (%zu in all)", i > 0 ? ", " : "", f);
    return refuse(err, field, "unknown feature; the model's features are: %s", list);
}

/* ------------------------------------------------------------------ rows (v1) */

/* Reads one v1 value into *out; returns NULL, or why it cannot be a model input. */
static const char *v1_cell(const json_t *v, float *out)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        *out = (float)json_integer_value(v); /* every long long is within float range */
        return NULL;
    case JSON_REAL: {
        double d = json_real_value(v);
        /* Checked before the conversion: a double beyond the float range is UB to convert
         * and would reach XGBoost as infinity. */
        if (!(fabs(d) <= FLT_MAX))
            return "number out of range for a float (beyond 3.4e38)";
        *out = (float)d;
        return NULL;
    }
    case JSON_NULL: *out = NAN; return NULL;
    case JSON_TRUE: *out = 1.0f; return NULL;
    case JSON_FALSE: *out = 0.0f; return NULL;
    case JSON_STRING: return "expected a number or null, got a string";
    case JSON_ARRAY: return "expected a number or null, got an array";
    case JSON_OBJECT: return "expected a number or null, got an object";
    }
    return "expected a number or null";
}

/* Checks the row count of n rows of f features against the caps. */
static int check_rows(size_t n, size_t f, const struct infer_caps *caps, const char *field,
                      struct infer_err *err)
{
    size_t max_rows, max_cells;

    caps_get(caps, &max_rows, &max_cells);
    if (n == 0)
        return refuse(err, field, "no rows; send at least one");
    if (n > max_rows)
        return refuse(err, field, "at most %zu rows per call", max_rows);
    if (f > 0 && n > max_cells / f)
        return refuse(err, field,
                      "%zu rows of %zu features are more than the %zu values allowed per call", n,
                      f, max_cells);
    return CN_OK;
}

static int array_row(const json_t *row, size_t i, const char *path, size_t f, float *r,
                     struct infer_err *err)
{
    char field[128];
    size_t w = json_array_size(row);

    if (w != f) {
        snprintf(field, sizeof field, "%s[%zu]", path, i);
        return refuse(err, field, "row has %zu values; the model takes %zu features", w, f);
    }
    for (size_t j = 0; j < f; j++) {
        const char *why = v1_cell(json_array_get(row, j), &r[j]);
        if (why != NULL) {
            snprintf(field, sizeof field, "%s[%zu][%zu]", path, i, j);
            return refuse(err, field, "%s", why);
        }
    }
    return CN_OK;
}

static int object_row(json_t *row, size_t i, const char *path, struct names *names, float *r,
                      struct infer_err *err)
{
    char field[128];
    const char *key;
    json_t *v;
    size_t hint = 0;

    for (size_t j = 0; j < (size_t)names->meta->num_features; j++)
        r[j] = NAN; /* a feature not given is missing */
    json_object_foreach(row, key, v) {
        int k = names_find(names, key, hint);
        if (k < 0) {
            snprintf(field, sizeof field, "%s[%zu].%s", path, i, key);
            return refuse_unknown_feature(err, field, names->meta);
        }
        const char *why = v1_cell(v, &r[k]);
        if (why != NULL) {
            snprintf(field, sizeof field, "%s[%zu].%s", path, i, key);
            return refuse(err, field, "%s", why);
        }
        hint = (size_t)k + 1;
    }
    return CN_OK;
}

int infer_rows_dense(const json_t *instances, const char *path, const struct infer_meta *meta,
                     const struct infer_caps *caps, float **x, size_t *nrows, struct infer_err *err)
{
    struct infer_err dummy;
    struct names names = {.meta = meta};
    char field[128];
    float *m = NULL;
    size_t n, f;
    int rc;

    err = err ? err : &dummy;
    *x = NULL;
    *nrows = 0;
    path = path ? path : "instances";
    if (meta == NULL || meta->num_features <= 0) {
        refuse(err, "", "the model's feature count is unknown");
        return CN_EINTERNAL;
    }
    f = (size_t)meta->num_features;
    if (!json_is_array(instances))
        return refuse(err, path,
                      "expected an array of rows, e.g. [[1.5, 0, null], [2.0, 1, 3.25]]");
    n = json_array_size(instances);
    if ((rc = check_rows(n, f, caps, path, err)) != CN_OK)
        return rc;

    m = cn_malloc(n * f * sizeof *m);
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(instances, i);
        if (json_is_array(row)) {
            rc = array_row(row, i, path, f, m + i * f, err);
        } else if (json_is_object(row) && has_names(meta)) {
            rc = object_row(row, i, path, &names, m + i * f, err);
        } else if (json_is_object(row)) {
            snprintf(field, sizeof field, "%s[%zu]", path, i);
            rc = refuse(err, field, "this model has no feature names; send rows as arrays");
        } else {
            snprintf(field, sizeof field, "%s[%zu]", path, i);
            rc = refuse(err, field, "expected a row (an array of %zu values%s), got %s", f,
                        has_names(meta) ? " or an object of features" : "", type_name(row));
        }
        if (rc != CN_OK)
            goto out;
    }
    *x = m;
    *nrows = n;
    m = NULL;
out:
    free(m);
    names_fini(&names);
    return rc;
}

/* ------------------------------------------------------------------ v1 request and response */

#define V1_EXAMPLE "{\"instances\": [[1.5, 0, null]]}"

/* Alias names as the registry takes them (^[a-z][a-z0-9_-]*$), and "latest". */
static bool alias_ok(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof((struct infer_v1_req *)0)->alias || s[0] < 'a' || s[0] > 'z')
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ v1 fast path */

/* Nearly every predict body is {"instances": [[numbers...], ...]}, and building a jansson
 * tree of it (one allocation per number) and walking it costs several times the
 * prediction. This scanner reads exactly that shape, with "version" or "alias", straight
 * into the dense matrix. It gives up (returns false, having changed nothing the caller
 * keeps) on anything else: object rows, rows of different widths, strings or escapes
 * where a number belongs, duplicate or unknown keys, a number it cannot convert exactly,
 * too many rows or values, and every error. The jansson path then parses the body and
 * words the answer, so the scanner never accepts what that path refuses, and its floats
 * are that path's bit for bit: an integer through int64 as json_integer_value, a real as
 * the correctly rounded double (Clinger's exact case, else strtod as jansson uses) then
 * (float). fuzz_infer_codec holds the two paths to the same answers. */

bool infer_v1_fast = true;

struct scan {
    const char *p, *end;
};

static void scan_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool scan_lit(struct scan *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* After a value in a list or an object: 1 at a comma (another value follows), 0 at the
 * closing character (taken), -1 at anything else. */
static int scan_after(struct scan *s, char close)
{
    scan_ws(s);
    if (scan_lit(s, ",", 1))
        return 1;
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    return -1;
}

/* One JSON number (the grammar jansson's lexer takes) as jansson would convert it. */
static bool scan_number(struct scan *s, bool *real, int64_t *ival, double *dval)
{
    const char *p = s->p, *end = s->end, *start = p;
    bool neg = false;
    uint64_t m = 0;
    int digits = 0, frac = 0, e = 0;

    *real = false;
    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= end || !is_digit(*p))
        return false;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return false; /* a leading zero */
    } else {
        while (p < end && is_digit(*p)) {
            if (digits == 19)
                return false;
            m = m * 10 + (uint64_t)(*p++ - '0');
            digits++;
        }
    }
    if (p < end && *p == '.') {
        *real = true;
        p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p)) {
            if (m == 0 && *p == '0') { /* leading zeros of the fraction are not significant */
                p++;
                frac++;
                continue;
            }
            if (digits == 19)
                return false;
            m = m * 10 + (uint64_t)(*p++ - '0');
            digits++;
            frac++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        bool eneg = false;
        *real = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p)) {
            if (e > 10000)
                return false;
            e = e * 10 + (*p++ - '0');
        }
        e = eneg ? -e : e;
    }
    s->p = p;
    if (!*real) {
        if (digits > 18)
            return false; /* near strtoll's limit: let jansson say */
        *ival = neg ? -(int64_t)m : (int64_t)m;
        return true;
    }
    int e10 = e - frac;
    if (m == 0) {
        *dval = neg ? -0.0 : 0.0;
    } else if (m <= (UINT64_C(1) << 53) && e10 >= -22 && e10 <= 22) {
        /* Both operands are exact doubles: one IEEE operation rounds correctly. */
        double d = e10 < 0 ? (double)m / pow10_exact[-e10] : (double)m * pow10_exact[e10];
        *dval = neg ? -d : d;
    } else {
        char tmp[64];
        size_t n = (size_t)(p - start);
        if (n >= sizeof tmp)
            return false;
        memcpy(tmp, start, n);
        tmp[n] = '\0';
        *dval = strtod(tmp, NULL);
        if (isinf(*dval))
            return false; /* jansson refuses the overflow */
    }
    return true;
}

/* One cell of a row: a number, null (missing), true or false, as v1_cell reads it. */
static bool scan_cell(struct scan *s, float *out)
{
    bool real;
    int64_t iv;
    double dv;

    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case 'n': *out = NAN; return scan_lit(s, "null", 4);
    case 't': *out = 1.0f; return scan_lit(s, "true", 4);
    case 'f': *out = 0.0f; return scan_lit(s, "false", 5);
    default: break;
    }
    if (!scan_number(s, &real, &iv, &dv))
        return false;
    if (!real) {
        *out = (float)iv;
        return true;
    }
    if (!(fabs(dv) <= FLT_MAX))
        return false;
    *out = (float)dv;
    return true;
}

/* "instances": [[...], ...] into r->x (rows of equal, non-zero width). */
static bool scan_instances(struct scan *s, const struct infer_caps *caps, struct infer_v1_req *r)
{
    size_t max_rows, max_cells, cap = 0, n = 0, w = 0;
    float *x = NULL;

    caps_get(caps, &max_rows, &max_cells);
    if (!scan_lit(s, "[", 1))
        return false;
    for (;;) {
        scan_ws(s);
        if (!scan_lit(s, "[", 1) || n == max_rows)
            goto fail;
        size_t j = 0;
        scan_ws(s);
        if (s->p < s->end && *s->p == ']')
            goto fail; /* an empty row */
        for (;;) {
            if (n * (w ? w : j + 1) + j >= max_cells || (w && j == w))
                goto fail;
            if (n * (w ? w : 0) + j == cap) {
                cap = cap ? cap * 2 : 64;
                x = cn_realloc(x, cap * sizeof *x);
            }
            scan_ws(s);
            if (!scan_cell(s, &x[n * (w ? w : 0) + j]))
                goto fail;
            j++;
            int more = scan_after(s, ']');
            if (more < 0)
                goto fail;
            if (more == 0)
                break;
        }
        if (n == 0)
            w = j;
        else if (j != w)
            goto fail;
        n++;
        int more = scan_after(s, ']');
        if (more < 0)
            goto fail;
        if (more == 0)
            break;
    }
    r->x = x;
    r->nrows = n;
    r->ncols = w;
    return true;
fail:
    free(x);
    return false;
}

/* A key made of lowercase letters (nothing else is a v1 field). */
static bool scan_key(struct scan *s, char *key, size_t keylen)
{
    size_t n = 0;
    if (!scan_lit(s, "\"", 1))
        return false;
    while (s->p < s->end && *s->p >= 'a' && *s->p <= 'z') {
        if (n + 1 == keylen)
            return false;
        key[n++] = *s->p++;
    }
    key[n] = '\0';
    return scan_lit(s, "\"", 1);
}

static bool v1_parse_fast(const void *body, size_t len, const struct infer_caps *caps, struct infer_v1_req *out)
{
    struct scan s = {body, (const char *)body + len};
    bool seen[3] = {false, false, false};
    char key[16];

    scan_ws(&s);
    if (!scan_lit(&s, "{", 1))
        return false;
    for (;;) {
        scan_ws(&s);
        if (!scan_key(&s, key, sizeof key))
            goto fail;
        int k = strcmp(key, "instances") == 0 ? 0 : strcmp(key, "version") == 0 ? 1 : strcmp(key, "alias") == 0 ? 2 : -1;
        if (k < 0 || seen[k])
            goto fail;
        seen[k] = true;
        scan_ws(&s);
        if (!scan_lit(&s, ":", 1))
            goto fail;
        scan_ws(&s);
        if (k == 0) {
            if (!scan_instances(&s, caps, out))
                goto fail;
        } else if (scan_lit(&s, "null", 4)) {
            /* as if not given */
        } else if (k == 1) {
            bool real;
            int64_t v;
            double d;
            if (!scan_number(&s, &real, &v, &d) || real || v < 1 || v > INT_MAX)
                goto fail;
            out->version = (int)v;
        } else {
            const char *a;
            if (!scan_lit(&s, "\"", 1))
                goto fail;
            a = s.p;
            while (s.p < s.end && *s.p != '"' && *s.p != '\\' && (unsigned char)*s.p >= 0x20 &&
                   (unsigned char)*s.p < 0x80)
                s.p++;
            if (!scan_lit(&s, "\"", 1) || !alias_ok(a, (size_t)(s.p - 1 - a)))
                goto fail;
            memcpy(out->alias, a, (size_t)(s.p - 1 - a));
            out->alias[s.p - 1 - a] = '\0';
        }
        int more = scan_after(&s, '}');
        if (more < 0)
            goto fail;
        if (more == 0)
            break;
    }
    scan_ws(&s);
    if (s.p != s.end || !seen[0] || (out->version != 0 && out->alias[0] != '\0'))
        goto fail;
    return true;
fail:
    free(out->x);
    memset(out, 0, sizeof *out);
    return false;
}

int infer_v1_parse(const void *body, size_t len, const struct infer_caps *caps,
                   struct infer_v1_req *out, struct infer_err *err)
{
    struct infer_err dummy;
    json_t *root = NULL, *v, *instances = NULL;
    const char *key;
    int rc;

    err = err ? err : &dummy;
    memset(out, 0, sizeof *out);
    if (infer_v1_fast && body != NULL && v1_parse_fast(body, len, caps, out))
        return CN_OK;
    if ((rc = load_object(body, len, V1_EXAMPLE, &root, err)) != CN_OK)
        goto out;

    json_object_foreach(root, key, v) {
        if (strcmp(key, "instances") == 0) {
            instances = v;
        } else if (strcmp(key, "version") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > INT_MAX) {
                rc = refuse(err, "version", "expected a version number (an integer from 1)");
                goto out;
            }
            out->version = (int)json_integer_value(v);
        } else if (strcmp(key, "alias") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_string(v) || !alias_ok(json_string_value(v), json_string_length(v))) {
                rc = refuse(
                    err, "alias",
                    "expected an alias such as \"production\": a lowercase letter, then lowercase "
                    "letters, digits, _ or -, at most %zu characters",
                    sizeof out->alias - 1);
                goto out;
            }
            memcpy(out->alias, json_string_value(v), json_string_length(v) + 1);
        } else {
            rc = refuse(err, key, "unknown field; expected instances, version or alias");
            goto out;
        }
    }
    if (out->version != 0 && out->alias[0] != '\0') {
        rc = refuse(err, "alias", "give version or alias, not both");
        goto out;
    }
    if (instances == NULL) {
        rc = refuse(err, "instances", "missing; send the rows to predict: " V1_EXAMPLE);
        goto out;
    }
    if (!json_is_array(instances)) {
        rc = refuse(err, "instances", "expected an array of rows: " V1_EXAMPLE);
        goto out;
    }
    /* The width is the model's business (infer_rows_dense); the count can be refused now,
     * before a model is chosen. */
    if ((rc = check_rows(json_array_size(instances), 0, caps, "instances", err)) != CN_OK)
        goto out;
    out->root = root;
    out->instances = instances;
    out->nrows = json_array_size(instances);
    root = NULL;
out:
    json_decref(root);
    if (rc != CN_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

void infer_v1_req_free(struct infer_v1_req *r)
{
    if (r == NULL)
        return;
    json_decref(r->root);
    free(r->x);
    memset(r, 0, sizeof *r);
}

int infer_v1_rows(struct infer_v1_req *r, const struct infer_meta *meta, const struct infer_caps *caps, float **x,
                  size_t *nrows, struct infer_err *err)
{
    struct infer_err dummy;
    int rc;

    if (r->x == NULL)
        return infer_rows_dense(r->instances, "instances", meta, caps, x, nrows, err);
    /* The checks of infer_rows_dense, in its order, with its words. */
    err = err ? err : &dummy;
    *x = NULL;
    *nrows = 0;
    if (meta == NULL || meta->num_features <= 0) {
        refuse(err, "", "the model's feature count is unknown");
        return CN_EINTERNAL;
    }
    size_t f = (size_t)meta->num_features;
    if ((rc = check_rows(r->nrows, f, caps, "instances", err)) != CN_OK)
        return rc;
    if (r->ncols != f)
        return refuse(err, "instances[0]", "row has %zu values; the model takes %zu features", r->ncols, f);
    *x = r->x;
    *nrows = r->nrows;
    r->x = NULL;
    return CN_OK;
}

int infer_v1_field_text(const struct infer_v1_req *r, const char *name, char *out, size_t outlen)
{
    const json_t *row, *v;
    size_t n;

    if (r == NULL || r->instances == NULL || name == NULL || out == NULL || outlen == 0)
        return CN_ENOTFOUND;
    out[0] = '\0';
    row = json_array_get(r->instances, 0);
    if (!json_is_object(row) || (v = json_object_get(row, name)) == NULL)
        return CN_ENOTFOUND;
    switch (json_typeof(v)) {
    case JSON_STRING:
        n = json_string_length(v);
        n = n < outlen - 1 ? n : outlen - 1;
        memcpy(out, json_string_value(v), n);
        out[n] = '\0';
        return CN_OK;
    case JSON_INTEGER:
        snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return CN_OK;
    case JSON_REAL: snprintf(out, outlen, "%.17g", json_real_value(v)); return CN_OK;
    case JSON_TRUE: snprintf(out, outlen, "true"); return CN_OK;
    case JSON_FALSE: snprintf(out, outlen, "false"); return CN_OK;
    default: return CN_ENOTFOUND;
    }
}

/* floor(log10(a)) or one less, for a finite a > 0: 2^b <= a < 2^(b+1) puts log10(a) in
 * [b log10(2), (b+1) log10(2)), and b is a's binary exponent. 1233 / 4096 is log10(2)
 * closely enough for every exponent a float has. log10() cost a quarter of writing a
 * value. */
static int dec_exp_low(double a)
{
    uint64_t u;
    memcpy(&u, &a, sizeof u);
    int b = (int)((u >> 52) & 0x7ff) - 1023;
    return (b * 1233) >> 12;
}

/* Writes f (finite) as "%.9g" would, to out (at least 32 bytes); returns the length.
 * printf's exact binary-to-decimal conversion is most of the cost of a response or a log
 * row, so the nine digits come from one multiplication instead: m = round(|f| * 10^k),
 * which is %.9g's digits unless |f| * 10^k lies within a hair of a half. Near a half, if m
 * does not read back as f (m / 10^k is exact, as in the fast parser), and outside
 * about 10^-14 .. 10^30 (where 10^k is exact), printf writes it: the text is always
 * exactly %.9g's. */
static size_t fmt_float9(char *out, float f)
{
    double a = fabs((double)f);
    if (a == 0)
        return (size_t)snprintf(out, 32, "%.9g", (double)f);
    int e = dec_exp_low(a);
    int k = 8 - e;
    if (k < -22 || k > 22 || k - 1 < -22)
        return (size_t)snprintf(out, 32, "%.9g", (double)f);
    double sc = k >= 0 ? a * pow10_exact[k] : a / pow10_exact[-k];
    double r = nearbyint(sc);
    if (r >= 1e9) { /* e was one too low, or rounding carried */
        e++;
        k--;
        sc = k >= 0 ? a * pow10_exact[k] : a / pow10_exact[-k];
        r = nearbyint(sc);
    }
    /* sc is within 6e-8 of the exact product: near a half, only printf knows which way
     * %.9g rounds. */
    if (r < 1e8 || fabs(fabs(sc - r) - 0.5) < 1e-6)
        return (size_t)snprintf(out, 32, "%.9g", (double)f);
    uint64_t m = (uint64_t)r;
    double back = k >= 0 ? (double)m / pow10_exact[k] : (double)m * pow10_exact[-k];
    if ((float)back != (float)a || m < 100000000u || m > 999999999u)
        return (size_t)snprintf(out, 32, "%.9g", (double)f);

    char d[9];
    for (int i = 8; i >= 0; i--, m /= 10)
        d[i] = (char)('0' + m % 10);
    int nd = 9;
    while (nd > 1 && d[nd - 1] == '0') /* %g drops trailing zeros */
        nd--;
    size_t n = 0;
    if (f < 0)
        out[n++] = '-';
    if (e < -4 || e >= 9) {
        out[n++] = d[0];
        if (nd > 1) {
            out[n++] = '.';
            memcpy(out + n, d + 1, (size_t)nd - 1);
            n += (size_t)nd - 1;
        }
        n += (size_t)snprintf(out + n, 8, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (e >= 0) {
        int ip = e + 1; /* digits before the point */
        memcpy(out + n, d, (size_t)ip);
        n += (size_t)ip;
        if (nd > ip) {
            out[n++] = '.';
            memcpy(out + n, d + ip, (size_t)(nd - ip));
            n += (size_t)(nd - ip);
        }
    } else {
        out[n++] = '0';
        out[n++] = '.';
        for (int z = 0; z < -e - 1; z++)
            out[n++] = '0';
        memcpy(out + n, d, (size_t)nd);
        n += (size_t)nd;
    }
    out[n] = '\0';
    return n;
}

/* Appends v so that it reads back as the same float; null when it is not finite (JSON
 * has no NaN). Written in place: this runs once per prediction value. */
static void put_float(struct cn_buf *b, float v)
{
    if (!isfinite(v)) {
        cn_buf_append(b, "null", 4);
        return;
    }
    cn_buf_reserve(b, 32);
    b->len += fmt_float9(b->data + b->len, v);
}

/* One number per row, or a list of `outputs` per row (flat = false); always flat when
 * flat is true (OIP data). */
static void put_preds(struct cn_buf *b, const float *p, size_t nrows, int outputs, bool flat)
{
    size_t k = outputs > 1 ? (size_t)outputs : 1;

    cn_buf_reserve(b, nrows * k * 12 + 2);
    cn_buf_putc(b, '[');
    for (size_t i = 0; i < nrows; i++) {
        if (i > 0)
            cn_buf_putc(b, ',');
        if (k == 1) {
            put_float(b, p[i]);
            continue;
        }
        if (!flat)
            cn_buf_putc(b, '[');
        for (size_t j = 0; j < k; j++) {
            if (j > 0)
                cn_buf_putc(b, ',');
            put_float(b, p[i * k + j]);
        }
        if (!flat)
            cn_buf_putc(b, ']');
    }
    cn_buf_putc(b, ']');
}

static void put_str(struct cn_buf *b, const char *s)
{
    s = s ? s : "";
    cn_buf_json_str(b, s, strlen(s));
}

void infer_v1_response(struct cn_buf *out, const float *pred, size_t nrows, int outputs,
                       const char *model, int version, const char *variant, const char *request_id)
{
    cn_buf_puts(out, "{\"predictions\":");
    put_preds(out, pred, nrows, outputs, false);
    cn_buf_puts(out, ",\"model\":");
    put_str(out, model);
    cn_buf_printf(out, ",\"model_version\":%d,\"variant\":", version);
    put_str(out, variant);
    cn_buf_puts(out, ",\"request_id\":");
    put_str(out, request_id);
    cn_buf_putc(out, '}');
}

/* ------------------------------------------------------------------ Open Inference Protocol */

#define OIP_EXAMPLE                                                                               \
    "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [1, F], \"datatype\": \"FP32\", \"data\": " \
    "[...]}]}"

enum dkind { D_FLOAT, D_INT, D_BOOL };

/* Integers are range-checked as doubles: lo and lim (the largest value + 1) are exact. */
static const struct dtype {
    const char *name;
    enum dkind kind;
    double lo, lim;
    const char *range;
    unsigned size;      /* bytes per value as binary tensor data */
    bool is_signed;
} dtypes[] = {
    {"FP32", D_FLOAT, 0, 0, NULL, 4, true},
    {"FP64", D_FLOAT, 0, 0, NULL, 8, true},
    {"INT8", D_INT, -128.0, 128.0, "-128 to 127", 1, true},
    {"INT16", D_INT, -32768.0, 32768.0, "-32768 to 32767", 2, true},
    {"INT32", D_INT, -2147483648.0, 2147483648.0, "-2147483648 to 2147483647", 4, true},
    {"INT64", D_INT, -0x1p63, 0x1p63, "-9223372036854775808 to 9223372036854775807", 8, true},
    {"UINT8", D_INT, 0, 256.0, "0 to 255", 1, false},
    {"UINT16", D_INT, 0, 65536.0, "0 to 65535", 2, false},
    {"UINT32", D_INT, 0, 4294967296.0, "0 to 4294967295", 4, false},
    {"UINT64", D_INT, 0, 0x1p64, "0 to 18446744073709551615", 8, false},
    {"BOOL", D_BOOL, 0, 0, NULL, 1, false},
};

static const struct dtype *dtype_find(const char *s)
{
    for (size_t i = 0; i < CN_ARRAY_LEN(dtypes); i++)
        if (strcmp(dtypes[i].name, s) == 0)
            return &dtypes[i];
    return NULL;
}

/* Reads one value of datatype dt into *out; 0, or -1 with why filled. */
static int oip_cell(const json_t *v, const struct dtype *dt, float *out, char *why, size_t whylen)
{
    double d;

    switch (dt->kind) {
    case D_BOOL:
        if (json_is_boolean(v)) {
            *out = json_is_true(v) ? 1.0f : 0.0f;
            return 0;
        }
        snprintf(why, whylen, "BOOL takes true or false, got %s", type_name(v));
        return -1;
    case D_FLOAT:
        if (json_is_null(v)) {
            *out = NAN; /* JSON has no NaN: null is the missing value */
            return 0;
        }
        if (!json_is_number(v)) {
            snprintf(why, whylen, "expected a number (or null for a missing value), got %s",
                     type_name(v));
            return -1;
        }
        d = json_number_value(v);
        if (!(fabs(d) <= FLT_MAX)) {
            snprintf(why, whylen, "number out of range for a float (beyond 3.4e38)");
            return -1;
        }
        *out = (float)d;
        return 0;
    case D_INT:
        if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            bool ok;
            /* Every json_int_t fits INT64. For the narrower types the double compare is
             * exact enough: rounding a huge value cannot bring it back within 32 bits. */
            if (dt->lim == 0x1p63)
                ok = true;
            else if (dt->lim == 0x1p64)
                ok = i >= 0;
            else
                ok = (double)i >= dt->lo && (double)i < dt->lim;
            if (ok) {
                *out = (float)i;
                return 0;
            }
            snprintf(why, whylen, "%" JSON_INTEGER_FORMAT " is out of range for %s (%s)", i,
                     dt->name, dt->range);
            return -1;
        }
        if (!json_is_real(v)) {
            snprintf(why, whylen, "%s takes whole numbers, got %s", dt->name, type_name(v));
            return -1;
        }
        d = json_real_value(v);
        if (d != floor(d)) {
            snprintf(why, whylen, "%s takes whole numbers, got %.17g", dt->name, d);
            return -1;
        }
        if (!(d >= dt->lo && d < dt->lim)) {
            snprintf(why, whylen, "%.17g is out of range for %s (%s)", d, dt->name, dt->range);
            return -1;
        }
        *out = (float)d;
        return 0;
    }
    snprintf(why, whylen, "unsupported datatype");
    return -1;
}

/* One input of the request, as read from its header. */
struct input {
    const char *name;
    const json_t *data;
    const struct dtype *dt;
    json_int_t dims[2];
    size_t rank;
    json_int_t bin_size;   /* parameters.binary_data_size, or -1: the values are in data */
    size_t bin_off;        /* where they start in the body */
};

static void shape_text(const struct input *in, char *out, size_t outlen)
{
    if (in->rank == 1)
        snprintf(out, outlen, "[%" JSON_INTEGER_FORMAT "]", in->dims[0]);
    else
        snprintf(out, outlen, "[%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT "]", in->dims[0],
                 in->dims[1]);
}

static int parse_shape(const json_t *s, const char *field, struct input *in, struct infer_err *err)
{
    size_t n = json_array_size(s);

    if (!json_is_array(s) || n == 0)
        return refuse(
            err, field,
            "expected a list of one or two dimensions: [N, F] for N rows, or [F] for one");
    if (n > 2)
        return refuse(err, field,
                      "this model takes 2-D input: use [N, F] for N rows, or [F] for one");
    for (size_t i = 0; i < n; i++) {
        const json_t *d = json_array_get(s, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return refuse(err, field,
                          "dimensions must be whole numbers from 0 (no -1 in a request)");
        in->dims[i] = json_integer_value(d);
    }
    in->rank = n;
    return CN_OK;
}

/* Reads the header of inputs[i] (every key but the data's values). binary: the request
 * has a binary part (Inference-Header-Content-Length), so binary_data_size may be used. */
static int parse_input(const json_t *obj, size_t i, bool binary, struct input *in, struct infer_err *err)
{
    char field[128];
    const json_t *shape = NULL, *dtype = NULL;
    const char *key;
    json_t *v;
    int rc;

    memset(in, 0, sizeof *in);
    in->bin_size = -1;
    snprintf(field, sizeof field, "inputs[%zu]", i);
    if (!json_is_object(obj))
        return refuse(err, field,
                      "expected an object: {\"name\", \"shape\", \"datatype\", \"data\"}");
    json_object_foreach((json_t *)obj, key, v) {
        if (strcmp(key, "name") == 0) {
            if (!json_is_string(v)) {
                snprintf(field, sizeof field, "inputs[%zu].name", i);
                return refuse(err, field, "expected a string");
            }
            in->name = json_string_value(v);
        } else if (strcmp(key, "shape") == 0) {
            shape = v;
        } else if (strcmp(key, "datatype") == 0) {
            dtype = v;
        } else if (strcmp(key, "data") == 0) {
            in->data = v;
        } else if (strcmp(key, "parameters") == 0) {
            if (!json_is_object(v) && !json_is_null(v)) {
                snprintf(field, sizeof field, "inputs[%zu].parameters", i);
                return refuse(err, field, "expected an object");
            }
            const json_t *bs = json_object_get(v, "binary_data_size");
            if (bs != NULL) {
                snprintf(field, sizeof field, "inputs[%zu].parameters.binary_data_size", i);
                if (!json_is_integer(bs) || json_integer_value(bs) < 0)
                    return refuse(err, field, "expected a whole number of bytes");
                if (!binary)
                    return refuse(err, field,
                                  "binary tensor data needs the Inference-Header-Content-Length "
                                  "header (the length of the JSON part of the body)");
                in->bin_size = json_integer_value(bs);
            }
        } else {
            snprintf(field, sizeof field, "inputs[%zu].%s", i, key);
            return refuse(err, field,
                          "unknown field; expected name, shape, datatype, parameters or data");
        }
    }
    if (in->name == NULL) {
        snprintf(field, sizeof field, "inputs[%zu].name", i);
        return refuse(err, field,
                      "missing; name the input (any name for one input of shape [N, F], "
                      "the feature's name for one input per feature)");
    }
    snprintf(field, sizeof field, "inputs[%zu].shape", i);
    if (shape == NULL)
        return refuse(err, field, "missing; give [N, F] for N rows of F features");
    if ((rc = parse_shape(shape, field, in, err)) != CN_OK)
        return rc;
    snprintf(field, sizeof field, "inputs[%zu].datatype", i);
    if (!json_is_string(dtype))
        return refuse(err, field, "%s; give one of FP32, FP64, INT8..INT64, UINT8..UINT64, BOOL",
                      dtype == NULL ? "missing" : "expected a string");
    in->dt = dtype_find(json_string_value(dtype));
    if (in->dt == NULL) {
        const char *s = json_string_value(dtype);
        if (strcmp(s, "BYTES") == 0)
            return refuse(
                err, field,
                "BYTES is not supported: the model takes numbers (FP32, FP64, INT*, UINT*, BOOL)");
        if (strcmp(s, "FP16") == 0 || strcmp(s, "BF16") == 0)
            return refuse(err, field, "%s is not supported; send FP32 or FP64", s);
        return refuse(err, field,
                      "unknown datatype; give one of FP32, FP64, INT8, INT16, INT32, INT64, UINT8, "
                      "UINT16, UINT32, UINT64, BOOL");
    }
    snprintf(field, sizeof field, "inputs[%zu].data", i);
    if (in->bin_size >= 0) {
        if (in->data != NULL)
            return refuse(err, field,
                          "give the values either in data or as binary tensor data "
                          "(parameters.binary_data_size), not both");
        return CN_OK;
    }
    if (in->data == NULL)
        return refuse(err, field,
                      "missing; send the values in data, or as binary tensor data "
                      "(parameters.binary_data_size and the Inference-Header-Content-Length header)");
    if (!json_is_array(in->data))
        return refuse(err, field, "expected an array of values, flat or nested by the shape");
    return CN_OK;
}

/* Writes the data of input i (rows x cols values, row-major by its shape) into the matrix
 * x of width f: value (r, c) goes to x[r * f + col0 + c]. data is flat (rows * cols
 * values) or, for a 2-D shape, nested (rows arrays of cols values). */
static int read_data(const struct input *in, size_t i, size_t rows, size_t cols, float *x, size_t f,
                     size_t col0, struct infer_err *err)
{
    char field[128], why[160], shape[64];
    size_t n = json_array_size(in->data);
    bool nested = in->rank == 2 && n > 0 && json_is_array(json_array_get(in->data, 0));

    shape_text(in, shape, sizeof shape);
    if (!nested) {
        if (n != rows * cols) {
            snprintf(field, sizeof field, "inputs[%zu].data", i);
            return refuse(err, field, "data has %zu values; shape %s needs %zu", n, shape,
                          rows * cols);
        }
        for (size_t k = 0; k < n; k++) {
            if (oip_cell(json_array_get(in->data, k), in->dt, &x[(k / cols) * f + col0 + k % cols],
                         why, sizeof why) != 0) {
                snprintf(field, sizeof field, "inputs[%zu].data[%zu]", i, k);
                return refuse(err, field, "%s", why);
            }
        }
        return CN_OK;
    }
    if (n != rows) {
        snprintf(field, sizeof field, "inputs[%zu].data", i);
        return refuse(err, field, "data has %zu rows; shape %s needs %zu", n, shape, rows);
    }
    for (size_t r = 0; r < rows; r++) {
        const json_t *row = json_array_get(in->data, r);
        if (!json_is_array(row) || json_array_size(row) != cols) {
            snprintf(field, sizeof field, "inputs[%zu].data[%zu]", i, r);
            return refuse(err, field, "expected an array of %zu values (shape %s), got %s%s", cols,
                          shape, json_is_array(row) ? "one of " : "",
                          json_is_array(row) ? "another length" : type_name(row));
        }
        for (size_t c = 0; c < cols; c++) {
            if (oip_cell(json_array_get(row, c), in->dt, &x[r * f + col0 + c], why, sizeof why) !=
                0) {
                snprintf(field, sizeof field, "inputs[%zu].data[%zu][%zu]", i, r, c);
                return refuse(err, field, "%s", why);
            }
        }
    }
    return CN_OK;
}

/* Value k of a binary tensor of datatype dt at p (little-endian, as the binary tensor
 * extension specifies), as a double: exact for every type but (U)INT64 beyond 2^53, which
 * a float cannot hold either. */
static double binary_value(const unsigned char *p, const struct dtype *dt)
{
    uint64_t u = 0;
    for (unsigned b = 0; b < dt->size; b++)
        u |= (uint64_t)p[b] << (8 * b);
    if (dt->kind == D_FLOAT) {
        if (dt->size == 4) {
            uint32_t w = (uint32_t)u;
            float f;
            memcpy(&f, &w, sizeof f);
            return f;
        }
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    if (!dt->is_signed)
        return (double)u;
    unsigned bits = 8 * dt->size;
    if (bits < 64 && (u >> (bits - 1)) & 1)
        u |= ~0ull << bits; /* sign-extend */
    return (double)(int64_t)u;
}

/* FP32 tensor data on a little-endian host, the common case of a batch: its bytes are
 * already the floats, so they are copied row by row. Returns false, having written
 * nothing, for any other datatype or when a value is infinite (NaN is missing, and no
 * finite float is out of range): read_binary's value-by-value loop then names the bad
 * one. Both loops are simple enough to vectorise; value by value, a 1 000 x 20 batch took
 * tens of microseconds. */
static bool fp32_copy(const struct dtype *dt, const unsigned char *p, size_t rows, size_t cols, float *x,
                      size_t f, size_t col0)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (dt->kind != D_FLOAT || dt->size != 4)
        return false;
    size_t n = rows * cols;
    uint32_t inf = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t w;
        memcpy(&w, p + 4 * k, 4);
        inf |= (w & 0x7fffffffu) == 0x7f800000u;
    }
    if (inf)
        return false;
    if (cols == f && col0 == 0) {
        memcpy(x, p, n * 4);
        return true;
    }
    for (size_t r = 0; r < rows; r++)
        memcpy(x + r * f + col0, p + r * cols * 4, cols * 4);
    return true;
#else
    (void)dt, (void)p, (void)rows, (void)cols, (void)x, (void)f, (void)col0;
    return false;
#endif
}

/* Writes the binary tensor data of input i (rows x cols values at body + bin_off) into x,
 * like read_data. NaN means missing, as null does in JSON; infinities and values beyond
 * float are refused, BOOL takes bytes 0 and 1. */
static int read_binary(const struct input *in, size_t i, const unsigned char *body, size_t rows, size_t cols,
                       float *x, size_t f, size_t col0, struct infer_err *err)
{
    char field[128], shape[64];
    size_t need = rows * cols * in->dt->size;
    const unsigned char *p = body + in->bin_off;

    if ((size_t)in->bin_size != need) {
        shape_text(in, shape, sizeof shape);
        snprintf(field, sizeof field, "inputs[%zu].parameters.binary_data_size", i);
        return refuse(err, field, "%" JSON_INTEGER_FORMAT " bytes; shape %s of %s needs %zu",
                      in->bin_size, shape, in->dt->name, need);
    }
    if (fp32_copy(in->dt, p, rows, cols, x, f, col0))
        return CN_OK;
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++, p += in->dt->size) {
            double d = binary_value(p, in->dt);
            const char *bad = NULL;
            if (in->dt->kind == D_BOOL && d != 0 && d != 1)
                bad = "BOOL takes bytes 0 and 1";
            else if (in->dt->kind == D_FLOAT && isinf(d))
                bad = "infinite; send NaN for a missing value";
            else if (in->dt->kind == D_FLOAT && !isnan(d) && !(fabs(d) <= FLT_MAX))
                bad = "out of range for a float (beyond 3.4e38)";
            if (bad) {
                snprintf(field, sizeof field, "inputs[%zu] (binary), row %zu, column %zu", i, r, c);
                return refuse(err, field, "%s", bad);
            }
            x[r * f + col0 + c] = (float)d;
        }
    }
    return CN_OK;
}

/* A bool parameter's value into *out; refused unless true or false. */
static int bool_param(const json_t *v, const char *field, int *out, struct infer_err *err)
{
    if (!json_is_boolean(v))
        return refuse(err, field, "expected true or false");
    *out = json_is_true(v);
    return CN_OK;
}

/* The outputs asked for; *binary becomes 0 or 1 when the output says how it wants its
 * data (parameters.binary_data), else stays as it was. */
static int parse_outputs(const json_t *outputs, int *binary, struct infer_err *err)
{
    char field[128];
    const char *key;
    json_t *v;

    if (json_is_null(outputs))
        return CN_OK;
    if (!json_is_array(outputs))
        return refuse(err, "outputs", "expected an array: [{\"name\": \"predict\"}]");
    for (size_t i = 0; i < json_array_size(outputs); i++) {
        json_t *o = json_array_get(outputs, i);
        bool named = false;
        snprintf(field, sizeof field, "outputs[%zu]", i);
        if (!json_is_object(o))
            return refuse(err, field, "expected an object: {\"name\": \"predict\"}");
        json_object_foreach(o, key, v) {
            if (strcmp(key, "name") == 0) {
                snprintf(field, sizeof field, "outputs[%zu].name", i);
                if (!json_is_string(v) || strcmp(json_string_value(v), "predict") != 0)
                    return refuse(err, field,
                                  "unknown output; this model has one output, \"predict\"");
                named = true;
            } else if (strcmp(key, "parameters") == 0) {
                if (!json_is_object(v) && !json_is_null(v)) {
                    snprintf(field, sizeof field, "outputs[%zu].parameters", i);
                    return refuse(err, field, "expected an object");
                }
                const json_t *bd = json_object_get(v, "binary_data");
                snprintf(field, sizeof field, "outputs[%zu].parameters.binary_data", i);
                if (bd != NULL && bool_param(bd, field, binary, err) != CN_OK)
                    return CN_EINVAL;
            } else {
                snprintf(field, sizeof field, "outputs[%zu].%s", i, key);
                return refuse(err, field, "unknown field; expected name or parameters");
            }
        }
        if (!named) {
            snprintf(field, sizeof field, "outputs[%zu].name", i);
            return refuse(err, field, "missing; the model's one output is \"predict\"");
        }
    }
    return CN_OK;
}

/* Maps each of the f inputs (one per feature) to its column in col[], checking names
 * (all known, none twice) and that they agree on the row count. */
static int per_feature(const struct input *ins, size_t f, const struct infer_meta *meta,
                       size_t *col, size_t *rows, struct infer_err *err)
{
    struct names names = {.meta = meta};
    char field[128], shape[64];
    size_t *owner = cn_calloc(f, sizeof *owner); /* input index + 1 per column */
    int rc = CN_OK;

    for (size_t i = 0; i < f; i++) {
        const struct input *in = &ins[i];
        int k = names_find(&names, in->name, i);
        if (k < 0) {
            snprintf(field, sizeof field, "inputs[%zu].name", i);
            rc = refuse_unknown_feature(err, field, meta);
            goto out;
        }
        if (owner[k] != 0) {
            snprintf(field, sizeof field, "inputs[%zu].name", i);
            rc = refuse(err, field,
                        "feature given twice (also by inputs[%zu]); send each feature once",
                        owner[k] - 1);
            goto out;
        }
        owner[k] = i + 1;
        col[i] = (size_t)k;
        snprintf(field, sizeof field, "inputs[%zu].shape", i);
        shape_text(in, shape, sizeof shape);
        if (in->rank == 2 && in->dims[1] != 1) {
            rc =
                refuse(err, field, "shape %s: an input per feature has shape [N] or [N, 1]", shape);
            goto out;
        }
        if (i > 0 && in->dims[0] != ins[0].dims[0]) {
            rc = refuse(err, field,
                        "shape %s has a different row count from inputs[0] (%" JSON_INTEGER_FORMAT
                        ")",
                        shape, ins[0].dims[0]);
            goto out;
        }
    }
    *rows = (size_t)ins[0].dims[0];
out:
    free(owner);
    names_fini(&names);
    return rc;
}

int infer_oip_parse(const void *body, size_t len, long long header_len, const struct infer_meta *meta,
                    const struct infer_caps *caps, float **x, size_t *nrows, char **id, bool *binary,
                    struct infer_err *err)
{
    struct infer_err dummy;
    json_t *root = NULL, *inputs = NULL, *outputs = NULL, *v;
    const char *key, *idv = NULL;
    struct input *ins = NULL;
    size_t *col = NULL, n_in, f, rows = 0;
    const char *field = "inputs[0].shape";
    char shape[64];
    float *m = NULL;
    bool by_feature;
    int rc, bin_out = 0, bin_default = 0;

    err = err ? err : &dummy;
    *x = NULL;
    *nrows = 0;
    *id = NULL;
    *binary = false;
    if (meta == NULL || meta->num_features <= 0) {
        refuse(err, "", "the model's feature count is unknown");
        return CN_EINTERNAL;
    }
    f = (size_t)meta->num_features;
    if (header_len >= 0 && (unsigned long long)header_len > len) {
        rc = refuse(err, "Inference-Header-Content-Length",
                    "%lld is more than the body's %zu bytes; give the length of the JSON part",
                    header_len, len);
        goto out;
    }
    if ((rc = load_object(body, header_len >= 0 ? (size_t)header_len : len, OIP_EXAMPLE, &root, err)) != CN_OK)
        goto out;

    json_object_foreach(root, key, v) {
        if (strcmp(key, "id") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_string(v) || json_string_length(v) > INFER_MAX_ID) {
                rc = refuse(err, "id", "expected a string of at most %d bytes", INFER_MAX_ID);
                goto out;
            }
            idv = json_string_value(v);
        } else if (strcmp(key, "parameters") == 0) {
            if (!json_is_object(v) && !json_is_null(v)) {
                rc = refuse(err, "parameters", "expected an object");
                goto out;
            }
            const json_t *bd = json_object_get(v, "binary_data_output");
            if (bd != NULL &&
                (rc = bool_param(bd, "parameters.binary_data_output", &bin_default, err)) != CN_OK)
                goto out;
        } else if (strcmp(key, "inputs") == 0) {
            inputs = v;
        } else if (strcmp(key, "outputs") == 0) {
            outputs = v;
        } else {
            rc = refuse(err, key, "unknown field; expected id, parameters, inputs or outputs");
            goto out;
        }
    }
    if (inputs == NULL || !json_is_array(inputs) || json_array_size(inputs) == 0) {
        rc = refuse(err, "inputs", "%s; send %s",
                    inputs == NULL ? "missing" : "expected a non-empty array", OIP_EXAMPLE);
        goto out;
    }
    bin_out = -1;
    if (outputs != NULL && (rc = parse_outputs(outputs, &bin_out, err)) != CN_OK)
        goto out;

    /* The form is decided by the count, so that a hostile count is refused before it
     * sizes anything: one input is the whole matrix, F inputs are one per feature. */
    n_in = json_array_size(inputs);
    if (n_in > 1 && !has_names(meta)) {
        rc = refuse(err, "inputs",
                    "this model has no feature names; send one input of shape [N, %zu]", f);
        goto out;
    }
    if (n_in > 1 && n_in != f) {
        rc = refuse(
            err, "inputs",
            "got %zu inputs; send one input of shape [N, %zu], or one input per feature (%zu)",
            n_in, f, f);
        goto out;
    }
    ins = cn_calloc(n_in, sizeof *ins);
    for (size_t i = 0; i < n_in; i++)
        if ((rc = parse_input(json_array_get(inputs, i), i, header_len >= 0, &ins[i], err)) != CN_OK)
            goto out;
    if (header_len >= 0) {
        /* The binary part holds the binary inputs' data back to back, in input order. */
        size_t off = (size_t)header_len;
        for (size_t i = 0; i < n_in; i++) {
            if (ins[i].bin_size < 0)
                continue;
            if ((unsigned long long)ins[i].bin_size > len - off) {
                char bf[96];
                snprintf(bf, sizeof bf, "inputs[%zu].parameters.binary_data_size", i);
                rc = refuse(err, bf, "%" JSON_INTEGER_FORMAT " bytes, but only %zu of the body are left after "
                            "the JSON part and the inputs before", ins[i].bin_size, len - off);
                goto out;
            }
            ins[i].bin_off = off;
            off += (size_t)ins[i].bin_size;
        }
        if (off != len) {
            rc = refuse(err, "inputs",
                        "the body has %zu bytes after the JSON part, but the inputs' binary_data_size "
                        "add up to %zu", len - (size_t)header_len, off - (size_t)header_len);
            goto out;
        }
    }
    /* A model of one feature named like the one input: that is one input per feature. */
    by_feature =
        n_in > 1 || (f == 1 && has_names(meta) && strcmp(ins[0].name, feature_name(meta, 0)) == 0);

    col = cn_calloc(n_in, sizeof *col);
    if (by_feature) {
        if ((rc = per_feature(ins, n_in, meta, col, &rows, err)) != CN_OK)
            goto out;
    } else {
        shape_text(&ins[0], shape, sizeof shape);
        if (ins[0].rank == 1 && (size_t)ins[0].dims[0] != f) {
            rc = refuse(err, field,
                        "shape %s is one row of %" JSON_INTEGER_FORMAT
                        " values; the model takes %zu features (use [N, %zu] for N rows)",
                        shape, ins[0].dims[0], f, f);
            goto out;
        }
        if (ins[0].rank == 2 && (size_t)ins[0].dims[1] != f) {
            rc = refuse(err, field, "shape %s: the model takes %zu features, so use [N, %zu]",
                        shape, f, f);
            goto out;
        }
        rows = ins[0].rank == 1 ? 1 : (size_t)ins[0].dims[0];
    }
    if ((rc = check_rows(rows, f, caps, field, err)) != CN_OK)
        goto out;

    m = cn_malloc(rows * f * sizeof *m);
    for (size_t i = 0; i < n_in; i++) {
        size_t cols = by_feature ? 1 : f, col0 = by_feature ? col[i] : 0;
        rc = ins[i].bin_size >= 0 ? read_binary(&ins[i], i, body, rows, cols, m, f, col0, err)
                                  : read_data(&ins[i], i, rows, cols, m, f, col0, err);
        if (rc != CN_OK)
            goto out;
    }
    *x = m;
    *nrows = rows;
    *id = idv ? cn_strdup(idv) : NULL;
    *binary = bin_out >= 0 ? bin_out == 1 : bin_default == 1;
    m = NULL;
out:
    free(m);
    free(col);
    free(ins);
    json_decref(root);
    return rc;
}

size_t infer_oip_response(struct cn_buf *out, const char *model, int version, const char *id,
                          const float *pred, size_t nrows, int outputs, bool binary)
{
    size_t start = out->len, k = outputs > 1 ? (size_t)outputs : 1;
    cn_buf_puts(out, "{\"model_name\":");
    put_str(out, model);
    cn_buf_printf(out, ",\"model_version\":\"%d\"", version);
    if (id != NULL) {
        cn_buf_puts(out, ",\"id\":");
        put_str(out, id);
    }
    cn_buf_puts(out, ",\"outputs\":[{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":");
    if (outputs > 1)
        cn_buf_printf(out, "[%zu,%d]", nrows, outputs);
    else
        cn_buf_printf(out, "[%zu]", nrows);
    if (!binary) {
        cn_buf_puts(out, ",\"data\":");
        put_preds(out, pred, nrows, outputs, true);
        cn_buf_puts(out, "}]}");
        return out->len - start;
    }
    cn_buf_printf(out, ",\"parameters\":{\"binary_data_size\":%zu}}]}", nrows * k * 4);
    size_t header = out->len - start;
    cn_buf_reserve(out, nrows * k * 4 + 1);
    for (size_t i = 0; i < nrows * k; i++) {
        uint32_t w;
        memcpy(&w, &pred[i], 4);
        for (unsigned b = 0; b < 4; b++)
            out->data[out->len++] = (char)(w >> (8 * b));
    }
    out->data[out->len] = '\0';
    return header;
}

void infer_oip_model_metadata(struct cn_buf *out, const char *model, const int *versions,
                              size_t nversions, const struct infer_meta *meta)
{
    cn_buf_puts(out, "{\"name\":");
    put_str(out, model);
    cn_buf_puts(out, ",\"versions\":[");
    for (size_t i = 0; i < nversions; i++)
        cn_buf_printf(out, "%s\"%d\"", i > 0 ? "," : "", versions[i]);
    cn_buf_puts(out, "],\"platform\":\"xgboost\",\"inputs\":[");
    if (meta != NULL)
        cn_buf_printf(out, "{\"name\":\"input-0\",\"datatype\":\"FP32\",\"shape\":[-1,%d]}",
                      meta->num_features);
    cn_buf_puts(out, "],\"outputs\":[");
    if (meta != NULL && meta->outputs > 1)
        cn_buf_printf(out, "{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":[-1,%d]}",
                      meta->outputs);
    else if (meta != NULL)
        cn_buf_puts(out, "{\"name\":\"predict\",\"datatype\":\"FP32\",\"shape\":[-1]}");
    cn_buf_puts(out, "]}");
}

void infer_oip_server_metadata(struct cn_buf *out, const char *version)
{
    cn_buf_puts(out, "{\"name\":\"cairn-inference\",\"version\":");
    put_str(out, version);
    cn_buf_puts(out, ",\"extensions\":[\"binary_tensor_data\"]}");
}
