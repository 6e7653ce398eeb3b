/* inference_db_log.c — all SQL of the prediction log and of the live drift counts
 * (tables inference.predictions and inference.drift_counts, migrations/001_init.sql).
 *
 *   infer_db_log_begin/put/end   one binary COPY per batch of logged predictions, streamed
 *                                as they come (infer_db_log_insert: all at once)
 *   infer_db_drift_add    one upsert per (model, version) and flush, adding element-wise
 *   infer_db_drift_sum    a window of minutes summed per feature, for the drift report
 *
 * Every statement is parameterised or a COPY: the SQL text never carries data.
 * drift_counts keeps a pseudo-feature -1 per (model, version, minute) whose single count
 * is the number of rows observed, so the report can say how many rows it covers even
 * when features are missing in some of them. To change the schema of these tables,
 * change this file and migrations/ together.
 */
#include "inference_log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "buf.h"
#include "err.h"
#include "pg.h"
#include "util.h"

#define LOG_MAX_ROWS 1000 /* the writer's largest batch */

/* --- the prediction log --- */

/* COPY's binary format (PostgreSQL's "COPY ... (FORMAT binary)"): a header, then per row a
 * 16-bit field count and each field as a 32-bit length (-1 for NULL) and its bytes in the
 * type's binary form, network byte order; a 16-bit -1 ends the data. Why binary: a logged
 * 1 000 x 20 batch was 20 000 numbers formatted as JSON text on the log's thread and parsed
 * back by PostgreSQL. Measured per logged batch on the benchmark's stack, CPU of
 * cairn-inference (XGBoost's 1.5 ms included) / of PostgreSQL: 5.0-6.6 / 11.6-13.2 ms as
 * json text, 2.3-2.8 / 1.1-1.4 ms as binary real[] (migrations/004_predictions_values). */
static const char copy_header[] = "PGCOPY\n\377\r\n"; /* and a NUL, then two int32 0s */
#define COPY_HEADER_LEN 19
#define COPY_FIELDS 10
#define FLOAT4_OID 700
#define PG_EPOCH_MS 946684800000LL /* 2000-01-01, where timestamptz counts from */

/* Writes v at p in network byte order; returns the byte after it. */
static char *be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
    return p + 4;
}

static void put_be16(struct cn_buf *b, uint16_t v)
{
    char c[2] = {(char)(v >> 8), (char)v};

    cn_buf_append(b, c, 2);
}

static void put_be32(struct cn_buf *b, uint32_t v)
{
    char c[4];

    be32(c, v);
    cn_buf_append(b, c, 4);
}

static void field_text(struct cn_buf *b, const char *s)
{
    size_t n = strlen(s);

    put_be32(b, (uint32_t)n);
    cn_buf_append(b, s, n);
}

static void field_int4(struct cn_buf *b, int32_t v)
{
    put_be32(b, 4);
    put_be32(b, (uint32_t)v);
}

static void field_timestamptz(struct cn_buf *b, int64_t unix_ms)
{
    uint64_t us = (uint64_t)((unix_ms - PG_EPOCH_MS) * 1000);

    put_be32(b, 8);
    put_be32(b, (uint32_t)(us >> 32));
    put_be32(b, (uint32_t)us);
}

/* A real[] of rows x cols values, row-major: two dimensions, or one (rows) when cols is
 * 1 and !two_dim; NaN (missing) is a NULL element. Array binary form: ndim, has-nulls flag, element type, (length, lower
 * bound) per dimension, then each element as a field. Sized up front and written in
 * place: this loop is the whole cost of logging a batch. */
static void field_real_array(struct cn_buf *b, const float *v, size_t rows, size_t cols,
                             bool two_dim)
{
    size_t n = rows * cols, ndim = two_dim ? 2 : 1, hdr = 12 + 8 * ndim;
    bool nulls = false;
    char *p;

    for (size_t i = 0; i < n && !nulls; i++)
        nulls = isnan(v[i]);
    cn_buf_reserve(b, 4 + hdr + 8 * n);
    p = b->data + b->len;
    p = be32(p, 0); /* the field's length, known at the end */
    p = be32(p, (uint32_t)ndim);
    p = be32(p, nulls);
    p = be32(p, FLOAT4_OID);
    p = be32(p, (uint32_t)rows);
    p = be32(p, 1);
    if (two_dim) {
        p = be32(p, (uint32_t)cols);
        p = be32(p, 1);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;

        if (isnan(v[i])) {
            p = be32(p, UINT32_MAX); /* -1: NULL */
            continue;
        }
        memcpy(&bits, &v[i], 4);
        p = be32(p, 4);
        p = be32(p, bits);
    }
    be32(b->data + b->len, (uint32_t)(p - (b->data + b->len) - 4));
    b->len = (size_t)(p - b->data);
    b->data[b->len] = '\0';
}

/* One COPY tuple per entry, in the column order of infer_db_log_begin's statement. */
static void rows_binary(struct cn_buf *b, struct infer_log_entry *const *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct infer_log_entry *e = rows[i];

        put_be16(b, COPY_FIELDS);
        field_text(b, e->request_id);
        field_timestamptz(b, e->at_ms);
        field_text(b, e->model);
        field_int4(b, e->version);
        field_text(b, e->variant);
        if (e->x != NULL)
            field_real_array(b, e->x, e->nrows, e->ncols, true);
        else
            put_be32(b, UINT32_MAX);
        if (e->pred != NULL)
            field_real_array(b, e->pred, e->nrows, e->outputs > 1 ? (size_t)e->outputs : 1,
                             e->outputs > 1);
        else
            put_be32(b, UINT32_MAX);
        field_int4(b, e->latency_us);
        field_text(b, e->ok ? "ok" : "error");
        field_text(b, e->error);
    }
}

/* The WHERE clause filters nothing (random() is in [0, 1)); being volatile, it makes
 * PostgreSQL insert each row as it parses it. Without it a COPY buffers its rows (up to
 * 1 000) and inserts them all at its end: at 2 000 logged predictions/s that was 100
 * rows at every commit, every 50 ms, and half or more of the requests slower than 1.5 ms
 * fell within 3 ms of a commit. Row by row, the same work follows the puts, every
 * STREAM_MS: over eleven alternating runs at that rate, a third fewer requests over 1.5 ms
 * and a median p99 of 2.50 ms instead of 2.91, for 4-7 µs more of PostgreSQL's CPU a row
 * (bench/RESULTS.md, sixth run).
 * Were PostgreSQL to batch such a COPY too, only that smoothing would be lost. */
int infer_db_log_begin(struct cn_pg *pg)
{
    char hdr[COPY_HEADER_LEN] = {0};
    int rc;

    rc = cn_pg_copy_begin(
        pg, "COPY inference.predictions(request_id, at, model, version, variant, input_values, "
            "output_values, latency_us, status, error) FROM STDIN (FORMAT binary) "
            "WHERE random() >= 0");
    if (rc != CN_OK)
        return rc;
    /* The signature's NUL, the flags and the header extension's length stay 0. */
    memcpy(hdr, copy_header, sizeof copy_header - 1);
    return cn_pg_copy_put(pg, hdr, sizeof hdr);
}

int infer_db_log_put(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n)
{
    struct cn_buf b = {0};
    int rc;

    if (n == 0)
        return CN_OK;
    rows_binary(&b, rows, n);
    rc = cn_pg_copy_put(pg, b.data, b.len);
    cn_buf_free(&b);
    return rc;
}

int infer_db_log_end(struct cn_pg *pg)
{
    static const char trailer[2] = {(char)0xff, (char)0xff}; /* int16 -1 */
    int rc = cn_pg_copy_put(pg, trailer, sizeof trailer);

    return rc == CN_OK ? cn_pg_copy_end(pg) : rc;
}

int infer_db_log_insert(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n)
{
    int rc;

    if (n == 0 || n > LOG_MAX_ROWS)
        return CN_EINVAL;
    rc = infer_db_log_begin(pg);
    if (rc == CN_OK)
        rc = infer_db_log_put(pg, rows, n);
    if (rc == CN_OK)
        rc = infer_db_log_end(pg);
    return rc;
}

/* --- live drift counts --- */

int infer_db_drift_add(struct cn_pg *pg, const char *model, int version, int64_t minute_s, size_t n,
                       const int *features, const int64_t *const *counts, const size_t *lens)
{
    /* The arrays differ in length per feature, so they travel as a text[] of bigint[]
     * literals ("{\"{1,2}\",\"{3}\"}"), cast back per row. The merge adds element by
     * element (a missing element counts 0), so replicas may flush in any order. */
    static const char sql[] =
        "INSERT INTO inference.drift_counts AS d (model, version, minute, feature, counts) "
        "SELECT $1, $2::int, to_timestamp($3::bigint), u.f, u.c::bigint[] "
        "FROM unnest($4::int[], $5::text[]) AS u(f, c) "
        "ON CONFLICT (model, version, minute, feature) DO UPDATE SET counts = ("
        "SELECT array_agg(coalesce(a.x, 0) + coalesce(a.y, 0) ORDER BY a.i) "
        "FROM unnest(d.counts, EXCLUDED.counts) WITH ORDINALITY AS a(x, y, i))";
    struct cn_buf feats = {0}, arrs = {0};
    char vbuf[16], mbuf[24];
    const char *params[5];
    int rc;

    if (n == 0)
        return CN_OK;
    cn_buf_putc(&feats, '{');
    cn_buf_putc(&arrs, '{');
    for (size_t i = 0; i < n; i++) {
        cn_buf_printf(&feats, "%s%d", i ? "," : "", features[i]);
        cn_buf_puts(&arrs, i ? ",\"{" : "\"{");
        for (size_t k = 0; k < lens[i]; k++)
            cn_buf_printf(&arrs, "%s%" PRId64, k ? "," : "", counts[i][k]);
        cn_buf_puts(&arrs, "}\"");
    }
    cn_buf_putc(&feats, '}');
    cn_buf_putc(&arrs, '}');
    snprintf(vbuf, sizeof vbuf, "%d", version);
    snprintf(mbuf, sizeof mbuf, "%" PRId64, minute_s);
    params[0] = model;
    params[1] = vbuf;
    params[2] = mbuf;
    params[3] = feats.data;
    params[4] = arrs.data;
    rc = cn_pg_exec(pg, sql, 5, params, NULL);
    cn_buf_free(&feats);
    cn_buf_free(&arrs);
    return rc;
}

/* Parses a bigint[] in Postgres text form ("{1,2,3}") into out[0 .. cap). Returns the
 * number of elements, or -1 when it is malformed or longer than cap. */
static long parse_bigint_array(const char *s, int64_t *out, size_t cap)
{
    size_t n = 0;
    char *end;

    if (*s++ != '{')
        return -1;
    if (*s == '}')
        return 0;
    for (;;) {
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (end == s || errno != 0 || n >= cap)
            return -1;
        out[n++] = v;
        if (*end == '}')
            return (long)n;
        if (*end != ',')
            return -1;
        s = end + 1;
    }
}

int infer_db_drift_sum(struct cn_pg *pg, const char *model, int version, int64_t since_s,
                       size_t nfeatures, const size_t *nbins, int64_t *const *counts, int64_t *rows)
{
    /* Summed in the database: one row per feature and array length, whatever the
     * number of minutes and replicas. Arrays of another length than the reference's
     * bins (written under a reference that changed since) sum apart, and the length
     * check below leaves them out. */
    static const char sql[] =
        "SELECT feature, array_agg(s ORDER BY i)::text FROM ("
        "SELECT d.feature, cardinality(d.counts) AS len, u.i, sum(u.c)::bigint AS s "
        "FROM inference.drift_counts d, unnest(d.counts) WITH ORDINALITY AS u(c, i) "
        "WHERE d.model = $1 AND d.version = $2::int AND d.minute >= to_timestamp($3::bigint) "
        "GROUP BY d.feature, len, u.i) t GROUP BY feature, len ORDER BY feature";
    char vbuf[16], sbuf[24];
    const char *params[3] = {model, vbuf, sbuf};
    PGresult *res = NULL;
    size_t maxbins = 1;
    int64_t *tmp = NULL;
    int rc;

    *rows = 0;
    snprintf(vbuf, sizeof vbuf, "%d", version);
    snprintf(sbuf, sizeof sbuf, "%" PRId64, since_s);
    rc = cn_pg_exec(pg, sql, 3, params, &res);
    if (rc != CN_OK)
        goto out;
    for (size_t f = 0; f < nfeatures; f++)
        if (nbins[f] > maxbins)
            maxbins = nbins[f];
    tmp = cn_malloc(maxbins * sizeof *tmp);
    for (int r = 0; r < PQntuples(res); r++) {
        long long feature;
        long len;

        if (cn_parse_int(PQgetvalue(res, r, 0), -1, (long long)nfeatures - 1, &feature) != CN_OK)
            continue;
        len = parse_bigint_array(PQgetvalue(res, r, 1), tmp, maxbins);
        if (feature == -1) {
            if (len == 1)
                *rows += tmp[0];
            continue;
        }
        if (len < 0 || (size_t)len != nbins[feature])
            continue;
        for (long k = 0; k < len; k++)
            counts[feature][k] += tmp[k];
    }
out:
    free(tmp);
    PQclear(res);
    return rc;
}
