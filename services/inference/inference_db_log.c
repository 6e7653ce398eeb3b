/* inference_db_log.c — all SQL of the prediction log and of the live drift counts
 * (tables inference.predictions and inference.drift_counts, migrations/001_init.sql).
 *
 *   infer_db_log_begin/put/end   one COPY per batch of logged predictions, streamed as
 *                                they come (infer_db_log_insert: all at once)
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "buf.h"
#include "err.h"
#include "inference_codec.h"
#include "pg.h"
#include "util.h"

#define LOG_MAX_ROWS 1000 /* the writer's largest batch */

/* --- the prediction log --- */

/* Appends s to the COPY text with its backslash, tab, newline and CR escaped. */
static void copy_str(struct cn_buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '\\': cn_buf_append(b, "\\\\", 2); break;
        case '\t': cn_buf_append(b, "\\t", 2); break;
        case '\n': cn_buf_append(b, "\\n", 2); break;
        case '\r': cn_buf_append(b, "\\r", 2); break;
        default: cn_buf_putc(b, *p);
        }
    }
}

/* One COPY line per entry: parsing and planning a multi-row INSERT with ten parameters a
 * row cost the database more than the rows themselves; COPY's text format is the
 * cheapest way in. The JSON text is written here, on the log's thread. */
static void rows_text(struct cn_buf *b, struct infer_log_entry *const *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct infer_log_entry *e = rows[i];
        time_t sec = (time_t)(e->at_ms / 1000);
        struct tm tm;
        char at[48];

        gmtime_r(&sec, &tm);
        strftime(at, sizeof at, "%Y-%m-%d %H:%M:%S", &tm);
        copy_str(b, e->request_id);
        cn_buf_printf(b, "\t%s.%03d+00\t", at, (int)(e->at_ms % 1000));
        copy_str(b, e->model);
        cn_buf_printf(b, "\t%d\t", e->version);
        copy_str(b, e->variant);
        cn_buf_putc(b, '\t');
        if (e->x != NULL)
            infer_rows_text(b, e->x, e->nrows, e->ncols); /* JSON numbers: nothing to escape */
        else
            cn_buf_puts(b, "\\N");
        cn_buf_putc(b, '\t');
        if (e->pred != NULL)
            infer_preds_text(b, e->pred, e->nrows, e->outputs);
        else
            cn_buf_puts(b, "\\N");
        cn_buf_printf(b, "\t%d\t%s\t", e->latency_us, e->ok ? "ok" : "error");
        copy_str(b, e->error);
        cn_buf_putc(b, '\n');
    }
}

int infer_db_log_begin(struct cn_pg *pg)
{
    return cn_pg_copy_begin(pg, "COPY inference.predictions(request_id, at, model, version, variant, inputs, "
                                "outputs, latency_us, status, error) FROM STDIN");
}

int infer_db_log_put(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n)
{
    struct cn_buf b = {0};
    int rc;

    if (n == 0)
        return CN_OK;
    rows_text(&b, rows, n);
    rc = cn_pg_copy_put(pg, b.data, b.len);
    cn_buf_free(&b);
    return rc;
}

int infer_db_log_end(struct cn_pg *pg) { return cn_pg_copy_end(pg); }

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
