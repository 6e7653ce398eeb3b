/* inference_db_stats.c — the SQL of feedback and of the stats report (GetStats), so a
 * change to the predictions or feedback tables (migrations/001_init.sql) touches this file
 * and a migration only. The math and the assembly of the report are in inference_stats.c.
 *
 * API (declared in inference_stats.h): infer_feedback_store() inserts one outcome;
 * infer_db_stats_read() reads, in one read-only REPEATABLE READ snapshot, the per
 * (variant, version) summary of the prediction log and then every answered prediction
 * joined to the latest feedback of its request, streaming the latter through a cursor in
 * batches so a million outcomes never sit in memory at once. Functions return 0,
 * CN_EINVAL, CN_ENOTFOUND, CN_EUNAVAIL (database unreachable), CN_ETIMEDOUT (a statement
 * ran past INFER_STATS_TIMEOUT_MS) or CN_EDB (cn_pg_sqlstate / cn_pg_errmsg say why; the
 * caller logs it).
 *
 * Times enter as unix milliseconds and become timestamptz exactly with
 * "to_timestamp(0) + $n::bigint * interval '1 millisecond'". Variants are ordered with
 * COLLATE "C" so the C side can binary-search them with strcmp.
 *
 * To add a query: add a function here, declare it in inference_stats.h, keep it
 * parameterised and PQclear every result on every path.
 */
#include "inference_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "pg.h"
#include "util.h"

#define REQUEST_ID_MAX 128
#ifndef FETCH_ROWS
#define FETCH_ROWS "10000" /* rows per FETCH of the outcomes cursor */
#endif

/* A column as int64 / double (0 when null or unparsable; the database wrote them). */
static int64_t col_i64(PGresult *res, int row, int col)
{
    long long v = 0;

    if (PQgetisnull(res, row, col) ||
        cn_parse_int(PQgetvalue(res, row, col), INT64_MIN, INT64_MAX, &v) != CN_OK)
        return 0;
    return (int64_t)v;
}

static double col_f64(PGresult *res, int row, int col)
{
    char *end;
    double v;

    if (PQgetisnull(res, row, col))
        return 0;
    v = strtod(PQgetvalue(res, row, col), &end);
    return *end == '\0' ? v : 0;
}

/* query_canceled is what statement_timeout raises. */
static int db_rc(struct cn_pg *pg, int rc)
{
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "57014") == 0)
        return CN_ETIMEDOUT;
    return rc;
}

/* Printable ASCII without spaces: request ids are ours (hex) or a client's X-Request-Id,
 * and anything else would only make the insert fail on encoding later. */
static bool request_id_valid(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++)
        if (n >= REQUEST_ID_MAX || (unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f)
            return false;
    return n > 0;
}

int infer_feedback_store(struct cn_pg *pg, const char *model, const char *request_id,
                         const double *label, const double *reward)
{
    char lbuf[32], rbuf[32];
    const char *params[4] = {model, request_id, NULL, NULL};
    PGresult *res = NULL;
    long long n = 0;
    int rc;

    if (model == NULL || request_id == NULL || !request_id_valid(request_id))
        return CN_EINVAL;
    if ((label == NULL && reward == NULL) || (label != NULL && !isfinite(*label)) ||
        (reward != NULL && !isfinite(*reward)))
        return CN_EINVAL;
    /* %.17g round-trips a double through text exactly. */
    if (label != NULL) {
        snprintf(lbuf, sizeof lbuf, "%.17g", *label);
        params[2] = lbuf;
    }
    if (reward != NULL) {
        snprintf(rbuf, sizeof rbuf, "%.17g", *reward);
        params[3] = rbuf;
    }
    /* One statement: feedback for a model that does not exist is refused, not stored. */
    rc = cn_pg_exec(pg,
                    "INSERT INTO inference.feedback(model, request_id, label, reward) "
                    "SELECT $1, $2, $3::double precision, $4::double precision "
                    "WHERE EXISTS (SELECT 1 FROM inference.models WHERE name = $1)",
                    4, params, &res);
    if (rc != CN_OK)
        return rc;
    if (cn_parse_int(PQcmdTuples(res), 0, INT64_MAX, &n) != CN_OK || n != 1)
        rc = CN_ENOTFOUND;
    PQclear(res);
    return rc;
}

/* The model's experiment start (unix ms, 0 without an experiment) into *start_ms;
 * CN_ENOTFOUND when there is no such model. */
static int model_start(struct cn_pg *pg, const char *model, int64_t *start_ms)
{
    const char *params[1] = {model};
    PGresult *res = NULL;
    int rc;

    rc = cn_pg_exec(pg,
                    "SELECT coalesce((SELECT (extract(epoch FROM e.started_at) * 1000)::bigint "
                    "FROM inference.experiments e WHERE e.model_id = m.id), 0) "
                    "FROM inference.models m WHERE m.name = $1",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 1)
        *start_ms = col_i64(res, 0, 0);
    else
        rc = CN_ENOTFOUND;
    PQclear(res);
    return rc;
}

/* Delivers the (variant, version) summary rows, at most INFER_STATS_MAX_GROUPS. Latency
 * percentiles are of answered calls: a 400 refused in microseconds says nothing about how
 * fast a model serves. */
static int read_groups(struct cn_pg *pg, const char *model, const char *since,
                       const struct infer_db_stats_sink *sink, bool *truncated)
{
    char limit[24];
    const char *params[3] = {model, since, limit};
    PGresult *res = NULL;
    int rc, n;

    snprintf(limit, sizeof limit, "%d", INFER_STATS_MAX_GROUPS + 1);
    rc = cn_pg_exec(
        pg,
        "SELECT variant, version, count(*), count(*) FILTER (WHERE status = 'error'), "
        "coalesce(percentile_cont(0.50) WITHIN GROUP (ORDER BY latency_us) "
        "  FILTER (WHERE status = 'ok'), 0) / 1000.0, "
        "coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_us) "
        "  FILTER (WHERE status = 'ok'), 0) / 1000.0, "
        "coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_us) "
        "  FILTER (WHERE status = 'ok'), 0) / 1000.0 "
        "FROM inference.predictions "
        "WHERE model = $1 AND at >= to_timestamp(0) + $2::bigint * interval '1 millisecond' "
        "GROUP BY variant, version ORDER BY variant COLLATE \"C\", version LIMIT $3::int",
        3, params, &res);
    if (rc != CN_OK)
        return db_rc(pg, rc);
    n = PQntuples(res);
    if (n > INFER_STATS_MAX_GROUPS) {
        *truncated = true;
        n = INFER_STATS_MAX_GROUPS;
    }
    for (int i = 0; i < n && rc == CN_OK; i++) {
        struct infer_db_stats_group g = {
            .variant = PQgetvalue(res, i, 0),
            .version = (int32_t)col_i64(res, i, 1),
            .requests = col_i64(res, i, 2),
            .errors = col_i64(res, i, 3),
            .p50_ms = col_f64(res, i, 4),
            .p95_ms = col_f64(res, i, 5),
            .p99_ms = col_f64(res, i, 6),
        };
        rc = sink->on_group(sink->arg, &g);
    }
    PQclear(res);
    return rc;
}

/* Delivers answered predictions joined to the latest feedback of their request_id, at
 * most INFER_STATS_MAX_OUTCOMES, through a cursor (the caller holds the transaction).
 * Only the first instance's output leaves the database, as JSON (a number, or an array of
 * classes): feedback is about instance 0 of a call. It is in output_values (real[]), or in
 * outputs (json) for rows logged before migration 004 or by a replica of an older release. */
static int read_outcomes(struct cn_pg *pg, const char *model, const char *since,
                         const struct infer_db_stats_sink *sink, bool *truncated)
{
    char limit[24];
    const char *params[3] = {model, since, limit};
    PGresult *res = NULL;
    int64_t seen = 0;
    int rc, n;

    snprintf(limit, sizeof limit, "%d", INFER_STATS_MAX_OUTCOMES + 1);
    rc = cn_pg_exec(
        pg,
        "DECLARE infer_stats_outcomes NO SCROLL CURSOR FOR "
        "WITH f AS (SELECT DISTINCT ON (request_id) request_id, label, reward "
        "  FROM inference.feedback WHERE model = $1 "
        "  ORDER BY request_id, at DESC, id DESC) "
        "SELECT p.variant, p.version, coalesce(v.objective, ''), "
        "  (coalesce(array_to_json(p.output_values[1:1]), p.outputs) -> 0)::text, "
        "  f.label, f.reward "
        "FROM inference.predictions p JOIN f ON f.request_id = p.request_id "
        "LEFT JOIN inference.versions v ON v.version = p.version "
        "  AND v.model_id = (SELECT id FROM inference.models WHERE name = $1) "
        "WHERE p.model = $1 AND p.status = 'ok' "
        "  AND p.at >= to_timestamp(0) + $2::bigint * interval '1 millisecond' "
        "LIMIT $3::int",
        3, params, NULL);
    if (rc != CN_OK)
        return db_rc(pg, rc);
    for (;;) {
        rc =
            cn_pg_exec(pg, "FETCH FORWARD " FETCH_ROWS " FROM infer_stats_outcomes", 0, NULL, &res);
        if (rc != CN_OK)
            return db_rc(pg, rc);
        n = PQntuples(res);
        if (n == 0)
            break;
        for (int i = 0; i < n && rc == CN_OK; i++, seen++) {
            struct infer_db_stats_outcome o = {
                .variant = PQgetvalue(res, i, 0),
                .version = (int32_t)col_i64(res, i, 1),
                .objective = PQgetvalue(res, i, 2),
                .output0 = PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
                .has_label = !PQgetisnull(res, i, 4),
                .has_reward = !PQgetisnull(res, i, 5),
                .label = col_f64(res, i, 4),
                .reward = col_f64(res, i, 5),
            };
            if (seen >= INFER_STATS_MAX_OUTCOMES) {
                *truncated = true;
                break;
            }
            rc = sink->on_outcome(sink->arg, &o);
        }
        PQclear(res);
        res = NULL;
        if (rc != CN_OK || *truncated)
            return rc;
    }
    PQclear(res);
    return CN_OK;
}

int infer_db_stats_read(struct cn_pg *pg, const char *model, int64_t since_ms,
                        const struct infer_db_stats_sink *sink, int64_t *since_used,
                        bool *truncated)
{
    char since[24], timeout[48];
    int64_t start_ms = 0;
    bool in_txn = false;
    int rc;

    *truncated = false;
    *since_used = since_ms;
    if (since_ms < 0)
        return CN_EINVAL;
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        goto out;
    in_txn = true;
    /* One snapshot: an outcome always finds its group, and the numbers add up. A bound
     * per statement so a report over a huge log cannot hold a worker for ever. */
    snprintf(timeout, sizeof timeout, "SET LOCAL statement_timeout = %d", INFER_STATS_TIMEOUT_MS);
    rc =
        cn_pg_exec(pg, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0, NULL, NULL);
    if (rc == CN_OK)
        rc = cn_pg_exec(pg, timeout, 0, NULL, NULL);
    if (rc == CN_OK)
        rc = model_start(pg, model, &start_ms);
    if (rc != CN_OK)
        goto out;
    if (since_ms == 0)
        *since_used = start_ms;
    snprintf(since, sizeof since, "%lld", (long long)*since_used);
    rc = read_groups(pg, model, since, sink, truncated);
    if (rc == CN_OK)
        rc = read_outcomes(pg, model, since, sink, truncated);
    if (rc == CN_OK) {
        /* Read-only: the commit only ends the snapshot (and closes the cursor). */
        rc = cn_pg_commit(pg);
        in_txn = rc != CN_OK;
    }
out:
    rc = db_rc(pg, rc);
    if (in_txn)
        cn_pg_rollback(pg);
    return rc;
}
