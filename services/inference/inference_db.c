/* inference_db.c — every registry SQL statement of cairn-inference: models, versions
 * (the UBJSON model files), aliases, experiments, drift references, and the routing
 * snapshot serving reads. The prediction log, feedback and drift counts have their SQL
 * in inference_db_log.c and inference_db_stats.c. Tables: migrations/001_init.sql.
 *
 * Functions take a Postgres handle and return 0, CN_ENOTFOUND, CN_EEXIST, CN_EUNAVAIL
 * (database unreachable) or CN_EDB (cn_pg_sqlstate / cn_pg_errmsg say why; the caller
 * logs). Every change that serving must see moves models.generation to the next value
 * of generation_seq in the same transaction, so replicas notice it with one indexed
 * query (infer_db_changed). Arrays (feature names) leave the database as JSON text.
 * Messages for the RPC layer are filled from the caller's arena.
 *
 * To add a query: a function here, its declaration in inference.h, parameters bound
 * ($n), every PGresult cleared on every path.
 */
#include "inference.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "util.h"

#define BUMP_GENERATION \
    "UPDATE inference.models SET generation = nextval('inference.generation_seq'), updated_at = now() "

#define MODEL_COLS                                                                             \
    "m.id, m.name, m.description, m.log_sample_rate, "                                         \
    "COALESCE((SELECT max(version) FROM inference.versions v WHERE v.model_id = m.id), 0), "    \
    "(extract(epoch FROM m.created_at) * 1000)::bigint, m.created_by, "                        \
    "(extract(epoch FROM m.updated_at) * 1000)::bigint"

#define VERSION_COLS                                                                          \
    "m.name, v.version, v.sha256, v.size_bytes, v.source_format, v.num_features, "             \
    "array_to_json(v.feature_names)::text, array_to_json(v.feature_types)::text, v.objective, " \
    "v.num_classes, v.rounds, v.booster, "                                                     \
    "COALESCE((SELECT json_agg(a.alias ORDER BY a.alias)::text FROM inference.aliases a "       \
    "          WHERE a.model_id = v.model_id AND a.version = v.version), '[]'), "              \
    "v.reference_rows, v.description, (extract(epoch FROM v.created_at) * 1000)::bigint, "     \
    "v.created_by"

static int64_t col_i64(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static char *col_str(struct cn_arena *a, PGresult *res, int row, int col)
{
    return cn_arena_strdup(a, PQgetvalue(res, row, col));
}

static long cmd_rows(PGresult *res)
{
    const char *n = PQcmdTuples(res);
    return n && *n ? strtol(n, NULL, 10) : 0;
}

/* A JSON array of strings (text) into an arena array. */
static void json_strings(struct cn_arena *a, const char *text, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    json_t *j = json_loads(text, 0, NULL);
    if (!json_is_array(j)) {
        json_decref(j);
        return;
    }
    size_t len = json_array_size(j);
    if (len) {
        *out = cn_arena_alloc(a, len * sizeof **out);
        for (size_t i = 0; i < len; i++) {
            const char *s = json_string_value(json_array_get(j, i));
            (*out)[(*n)++] = cn_arena_strdup(a, s ? s : "");
        }
    }
    json_decref(j);
}

/* A string array as a JSON text for ::json -> text[] conversion in SQL. */
static char *strings_json(char *const *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(v[i] ? v[i] : ""));
    char *s = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return s;
}

#define TEXT_ARRAY(p) "ARRAY(SELECT json_array_elements_text(" p "::json))"

/* ------------------------------------------------------------------ models */

static void fill_model(struct cn_arena *a, PGresult *res, int row, Cairn__V1__Model *m)
{
    cairn__v1__model__init(m);
    m->name = col_str(a, res, row, 1);
    m->description = col_str(a, res, row, 2);
    m->log_sample_rate = strtod(PQgetvalue(res, row, 3), NULL);
    m->latest_version = (int32_t)col_i64(res, row, 4);
    m->created_at = col_i64(res, row, 5);
    m->created_by = col_str(a, res, row, 6);
    m->updated_at = col_i64(res, row, 7);
}

/* Aliases of model id into m. */
static int model_aliases(struct cn_pg *pg, struct cn_arena *a, const char *id, Cairn__V1__Model *m)
{
    PGresult *res = NULL;
    const char *p[1] = {id};
    int rc = cn_pg_exec(pg, "SELECT alias, version FROM inference.aliases WHERE model_id = $1 ORDER BY alias", 1,
                        p, &res);
    if (rc != CN_OK)
        return rc;
    int n = PQntuples(res);
    if (n > 0) {
        m->aliases = cn_arena_alloc(a, (size_t)n * sizeof *m->aliases);
        for (int i = 0; i < n; i++) {
            Cairn__V1__AliasEntry *e = cn_arena_alloc(a, sizeof *e);
            cairn__v1__alias_entry__init(e);
            e->alias = col_str(a, res, i, 0);
            e->version = (int32_t)col_i64(res, i, 1);
            m->aliases[m->n_aliases++] = e;
        }
    }
    PQclear(res);
    return CN_OK;
}

int infer_db_model_create(struct cn_pg *pg, const char *name, const char *description, double rate,
                          const char *created_by, struct cn_arena *a, Cairn__V1__Model *out)
{
    char rate_s[32];
    snprintf(rate_s, sizeof rate_s, "%.17g", rate);
    const char *p[4] = {name, description, rate_s, created_by};
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "WITH m AS (INSERT INTO inference.models (name, description, log_sample_rate, created_by) "
                        "VALUES ($1, $2, $3::double precision, $4) RETURNING *) "
                        "SELECT " MODEL_COLS " FROM m",
                        4, p, &res);
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23505") == 0)
        return CN_EEXIST;
    if (rc != CN_OK)
        return rc;
    fill_model(a, res, 0, out);
    out->latest_version = 0;
    PQclear(res);
    return CN_OK;
}

int infer_db_model_get(struct cn_pg *pg, const char *name, struct cn_arena *a, Cairn__V1__Model *out,
                       int64_t *id_out)
{
    const char *p[1] = {name};
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg, "SELECT " MODEL_COLS " FROM inference.models m WHERE m.name = $1", 1, p, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    fill_model(a, res, 0, out);
    char *id = col_str(a, res, 0, 0);
    if (id_out)
        *id_out = col_i64(res, 0, 0);
    PQclear(res);
    rc = model_aliases(pg, a, id, out);
    if (rc != CN_OK)
        return rc;
    char *spec = NULL;
    int64_t started = 0;
    rc = infer_db_experiment_get(pg, name, a, &spec, &started);
    if (rc == CN_ENOTFOUND)
        return CN_OK;
    if (rc != CN_OK)
        return rc;
    out->experiment = infer_experiment_from_json(a, name, spec, started);
    return CN_OK;
}

int infer_db_model_list(struct cn_pg *pg, const char *after, int limit, struct cn_arena *a,
                        Cairn__V1__Model ***out, size_t *n)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[2] = {after, lim};
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT " MODEL_COLS " FROM inference.models m WHERE m.name > $1 "
                        "ORDER BY m.name LIMIT $2::int",
                        2, p, &res);
    if (rc != CN_OK)
        return rc;
    int rows = PQntuples(res);
    *n = 0;
    *out = rows ? cn_arena_alloc(a, (size_t)rows * sizeof **out) : NULL;
    for (int i = 0; i < rows; i++) {
        Cairn__V1__Model *m = cn_arena_alloc(a, sizeof *m);
        fill_model(a, res, i, m);
        char *id = col_str(a, res, i, 0);
        rc = model_aliases(pg, a, id, m);
        if (rc != CN_OK)
            break;
        (*out)[(*n)++] = m;
    }
    PQclear(res);
    return rc;
}

int infer_db_model_update(struct cn_pg *pg, const char *name, const char *description, const double *rate)
{
    char rate_s[32] = "";
    if (rate)
        snprintf(rate_s, sizeof rate_s, "%.17g", *rate);
    const char *p[3] = {name, description, rate ? rate_s : NULL};
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "UPDATE inference.models SET description = COALESCE($2, description), "
                        "log_sample_rate = COALESCE($3::double precision, log_sample_rate), updated_at = now(), "
                        "generation = nextval('inference.generation_seq') WHERE name = $1",
                        3, p, &res);
    if (rc != CN_OK)
        return rc;
    long n = cmd_rows(res);
    PQclear(res);
    return n == 1 ? CN_OK : CN_ENOTFOUND;
}

/* ------------------------------------------------------------------ versions */

static void fill_version(struct cn_arena *a, PGresult *res, int row, Cairn__V1__ModelVersion *v)
{
    cairn__v1__model_version__init(v);
    v->model = col_str(a, res, row, 0);
    v->version = (int32_t)col_i64(res, row, 1);
    v->sha256 = col_str(a, res, row, 2);
    v->size_bytes = col_i64(res, row, 3);
    v->source_format = col_str(a, res, row, 4);
    v->num_features = (int32_t)col_i64(res, row, 5);
    json_strings(a, PQgetvalue(res, row, 6), &v->feature_names, &v->n_feature_names);
    json_strings(a, PQgetvalue(res, row, 7), &v->feature_types, &v->n_feature_types);
    v->objective = col_str(a, res, row, 8);
    v->num_classes = (int32_t)col_i64(res, row, 9);
    v->rounds = (int32_t)col_i64(res, row, 10);
    v->booster = col_str(a, res, row, 11);
    json_strings(a, PQgetvalue(res, row, 12), &v->aliases, &v->n_aliases);
    v->reference_rows = col_i64(res, row, 13);
    v->description = col_str(a, res, row, 14);
    v->created_at = col_i64(res, row, 15);
    v->created_by = col_str(a, res, row, 16);
}

int infer_db_version_insert(struct cn_pg *pg, const char *name, const uint8_t *ubj, size_t len,
                            const char *sha256, const struct infer_meta *meta, char *const *names, size_t nnames,
                            const char *description, const char *created_by, int *version)
{
    char nf[16], nc[16], rounds[16], size[24], id[24], ver[16];
    snprintf(nf, sizeof nf, "%d", meta->num_features);
    snprintf(nc, sizeof nc, "%d", meta->num_classes);
    snprintf(rounds, sizeof rounds, "%d", meta->rounds);
    snprintf(size, sizeof size, "%zu", len);
    char *names_json = strings_json(names, nnames);
    char *types_json = strings_json(meta->feature_types, meta->n_feature_types);
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        goto out;
    /* Numbering under the model row's lock: concurrent uploads get 1, 2, 3 ... */
    rc = cn_pg_exec(pg,
                    BUMP_GENERATION ", next_version = next_version + 1 WHERE name = $1 "
                                    "RETURNING id, next_version - 1",
                    1, (const char *[]){name}, &res);
    if (rc != CN_OK)
        goto rollback;
    if (PQntuples(res) == 0) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    snprintf(ver, sizeof ver, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    res = NULL;
    {
        const char *q[15] = {id,   ver, (const char *)ubj, sha256, size,   meta->source_format, nf, names_json,
                             types_json, meta->objective, nc, rounds, meta->booster, description, created_by};
        int lengths[15] = {[2] = (int)len};
        int formats[15] = {[2] = 1};
        rc = cn_pg_exec_bin(pg,
                            "INSERT INTO inference.versions (model_id, version, ubj, sha256, size_bytes, "
                            "source_format, num_features, feature_names, feature_types, objective, num_classes, "
                            "rounds, booster, description, created_by) VALUES ($1::bigint, $2::int, $3::bytea, $4, "
                            "$5::bigint, $6, $7::int, " TEXT_ARRAY("$8") ", " TEXT_ARRAY("$9") ", $10, $11::int, "
                            "$12::int, $13, $14, $15)",
                            15, q, lengths, formats, NULL);
    }
    if (rc != CN_OK)
        goto rollback;
    rc = cn_pg_commit(pg);
    if (rc == CN_OK)
        *version = (int)strtol(ver, NULL, 10);
    goto out;
rollback:
    cn_pg_rollback(pg);
out:
    PQclear(res);
    free(names_json);
    free(types_json);
    return rc;
}

int infer_db_version_get(struct cn_pg *pg, const char *name, int version, struct cn_arena *a,
                         Cairn__V1__ModelVersion *out)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT " VERSION_COLS " FROM inference.versions v JOIN inference.models m ON m.id = v.model_id "
                        "WHERE m.name = $1 AND v.version = $2::int",
                        2, (const char *[]){name, ver}, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    fill_version(a, res, 0, out);
    PQclear(res);
    return CN_OK;
}

int infer_db_version_list(struct cn_pg *pg, const char *name, int before, int limit, struct cn_arena *a,
                          Cairn__V1__ModelVersion ***out, size_t *n)
{
    char b[16], lim[16];
    snprintf(b, sizeof b, "%d", before);
    snprintf(lim, sizeof lim, "%d", limit);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT " VERSION_COLS " FROM inference.versions v JOIN inference.models m ON m.id = v.model_id "
                        "WHERE m.name = $1 AND v.version < $2::int ORDER BY v.version DESC LIMIT $3::int",
                        3, (const char *[]){name, b, lim}, &res);
    if (rc != CN_OK)
        return rc;
    int rows = PQntuples(res);
    *n = 0;
    *out = rows ? cn_arena_alloc(a, (size_t)rows * sizeof **out) : NULL;
    for (int i = 0; i < rows; i++) {
        Cairn__V1__ModelVersion *v = cn_arena_alloc(a, sizeof *v);
        fill_version(a, res, i, v);
        (*out)[(*n)++] = v;
    }
    PQclear(res);
    return CN_OK;
}

/* Refuses with CN_EEXIST (why filled) while an alias or the experiment names the version. */
int infer_db_version_delete(struct cn_pg *pg, const char *name, int version, char *why, size_t whylen)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *p[2] = {name, ver};
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg, "SELECT id FROM inference.models WHERE name = $1 FOR UPDATE", 1, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (PQntuples(res) == 0) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "SELECT (SELECT string_agg(a.alias, ', ' ORDER BY a.alias) FROM inference.aliases a "
                    "        WHERE a.model_id = m.id AND a.version = $2::int), "
                    "       EXISTS (SELECT 1 FROM inference.experiment_versions e "
                    "               WHERE e.model_id = m.id AND e.version = $2::int) "
                    "FROM inference.models m WHERE m.name = $1",
                    2, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (!PQgetisnull(res, 0, 0)) {
        snprintf(why, whylen, "version %d is the target of alias %s: move or delete the alias first", version,
                 PQgetvalue(res, 0, 0));
        rc = CN_EEXIST;
        goto rollback;
    }
    if (PQgetvalue(res, 0, 1)[0] == 't') {
        snprintf(why, whylen, "version %d is part of the model's experiment: change or delete the experiment first",
                 version);
        rc = CN_EEXIST;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "DELETE FROM inference.versions v USING inference.models m "
                    "WHERE m.id = v.model_id AND m.name = $1 AND v.version = $2::int",
                    2, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (cmd_rows(res) != 1) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE name = $1", 1, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

int infer_db_version_ubj(struct cn_pg *pg, const char *name, int version, uint8_t **ubj, size_t *len)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT v.ubj FROM inference.versions v JOIN inference.models m ON m.id = v.model_id "
                        "WHERE m.name = $1 AND v.version = $2::int",
                        2, (const char *[]){name, ver}, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 0), &n);
    PQclear(res);
    if (raw == NULL)
        return CN_EDB;
    *ubj = cn_malloc(n ? n : 1);
    memcpy(*ubj, raw, n);
    *len = n;
    PQfreemem(raw);
    return CN_OK;
}

int infer_db_reference_set(struct cn_pg *pg, const char *name, int version, const char *ref_json, int64_t rows)
{
    char ver[16], r[24];
    snprintf(ver, sizeof ver, "%d", version);
    snprintf(r, sizeof r, "%lld", (long long)rows);
    const char *p[4] = {name, ver, ref_json, r};
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg,
                    "UPDATE inference.versions v SET reference = $3::jsonb, reference_rows = $4::bigint, "
                    "reference_gen = nextval('inference.generation_seq') FROM inference.models m "
                    "WHERE m.id = v.model_id AND m.name = $1 AND v.version = $2::int",
                    4, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (cmd_rows(res) != 1) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE name = $1", 1, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

int infer_db_reference_get(struct cn_pg *pg, const char *name, int version, char **ref_json, int64_t *gen)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT v.reference::text, v.reference_gen FROM inference.versions v "
                        "JOIN inference.models m ON m.id = v.model_id WHERE m.name = $1 AND v.version = $2::int",
                        2, (const char *[]){name, ver}, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    *ref_json = cn_strdup(PQgetvalue(res, 0, 0));
    *gen = col_i64(res, 0, 1);
    PQclear(res);
    return CN_OK;
}

/* ------------------------------------------------------------------ aliases */

int infer_db_alias_set(struct cn_pg *pg, const char *name, const char *alias, int version, int *previous)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *p[3] = {name, alias, ver};
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    /* The model row lock orders concurrent moves; previous is read under it. */
    rc = cn_pg_exec(pg,
                    "SELECT m.id, (SELECT a.version FROM inference.aliases a WHERE a.model_id = m.id AND a.alias = $2), "
                    "EXISTS (SELECT 1 FROM inference.versions v WHERE v.model_id = m.id AND v.version = $3::int) "
                    "FROM inference.models m WHERE m.name = $1 FOR UPDATE",
                    3, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (PQntuples(res) == 0 || PQgetvalue(res, 0, 2)[0] != 't') {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    *previous = (int)col_i64(res, 0, 1);
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "INSERT INTO inference.aliases (model_id, alias, version) "
                    "SELECT id, $2, $3::int FROM inference.models WHERE name = $1 "
                    "ON CONFLICT (model_id, alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
                    3, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE name = $1", 1, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

int infer_db_alias_delete(struct cn_pg *pg, const char *name, const char *alias)
{
    const char *p[2] = {name, alias};
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    /* An experiment that routes to the alias (a candidate or the mirror) keeps it. */
    rc = cn_pg_exec(pg,
                    "SELECT EXISTS (SELECT 1 FROM inference.experiments e "
                    "  WHERE e.model_id = m.id AND (e.spec->'candidates' @> jsonb_build_array(jsonb_build_object('alias', $2::text)) "
                    "                         OR e.spec->'mirror'->>'alias' = $2)) "
                    "FROM inference.models m WHERE m.name = $1 FOR UPDATE OF m",
                    2, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (PQntuples(res) == 0) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    if (PQgetvalue(res, 0, 0)[0] == 't') {
        rc = CN_EEXIST;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "DELETE FROM inference.aliases a USING inference.models m "
                    "WHERE m.id = a.model_id AND m.name = $1 AND a.alias = $2",
                    2, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (cmd_rows(res) != 1) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE name = $1", 1, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

/* The version alias names ("latest": the highest), read from the database: 0 and
 * *version, or CN_ENOTFOUND when the model or the alias does not exist. */
int infer_db_alias_get(struct cn_pg *pg, const char *name, const char *alias, int *version)
{
    PGresult *res = NULL;
    int rc = strcmp(alias, "latest") == 0
                 ? cn_pg_exec(pg,
                              "SELECT max(v.version) FROM inference.versions v JOIN inference.models m "
                              "ON m.id = v.model_id WHERE m.name = $1",
                              1, (const char *[]){name}, &res)
                 : cn_pg_exec(pg,
                              "SELECT a.version FROM inference.aliases a JOIN inference.models m "
                              "ON m.id = a.model_id WHERE m.name = $1 AND a.alias = $2",
                              2, (const char *[]){name, alias}, &res);
    if (rc != CN_OK)
        return rc;
    rc = CN_ENOTFOUND;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        *version = (int)col_i64(res, 0, 0);
        rc = CN_OK;
    }
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------------ experiments */

int infer_db_experiment_set(struct cn_pg *pg, const char *name, const char *spec_json, const int *versions,
                            size_t nversions, int64_t *started_at)
{
    const char *p[2] = {name, spec_json};
    PGresult *res = NULL;
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg, "SELECT id FROM inference.models WHERE name = $1 FOR UPDATE", 1, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (PQntuples(res) == 0) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    char id[24];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "INSERT INTO inference.experiments (model_id, spec) VALUES ($1::bigint, $2::jsonb) "
                    "ON CONFLICT (model_id) DO UPDATE SET spec = EXCLUDED.spec, started_at = now() "
                    "RETURNING (extract(epoch FROM started_at) * 1000)::bigint",
                    2, (const char *[]){id, spec_json}, &res);
    if (rc != CN_OK)
        goto rollback;
    *started_at = col_i64(res, 0, 0);
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg, "DELETE FROM inference.experiment_versions WHERE model_id = $1::bigint", 1,
                    (const char *[]){id}, NULL);
    if (rc != CN_OK)
        goto rollback;
    for (size_t i = 0; i < nversions; i++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", versions[i]);
        rc = cn_pg_exec(pg,
                        "INSERT INTO inference.experiment_versions (model_id, version) VALUES ($1::bigint, $2::int) "
                        "ON CONFLICT DO NOTHING",
                        2, (const char *[]){id, ver}, NULL);
        if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23503") == 0)
            rc = CN_ENOTFOUND; /* the version was deleted meanwhile */
        if (rc != CN_OK)
            goto rollback;
    }
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE id = $1::bigint", 1, (const char *[]){id}, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

int infer_db_experiment_get(struct cn_pg *pg, const char *name, struct cn_arena *a, char **spec_json,
                            int64_t *started_at)
{
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT e.spec::text, (extract(epoch FROM e.started_at) * 1000)::bigint "
                        "FROM inference.experiments e JOIN inference.models m ON m.id = e.model_id WHERE m.name = $1",
                        1, (const char *[]){name}, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    *spec_json = col_str(a, res, 0, 0);
    *started_at = col_i64(res, 0, 1);
    PQclear(res);
    return CN_OK;
}

int infer_db_experiment_delete(struct cn_pg *pg, const char *name)
{
    PGresult *res = NULL;
    const char *p[1] = {name};
    int rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg,
                    "DELETE FROM inference.experiments e USING inference.models m "
                    "WHERE m.id = e.model_id AND m.name = $1",
                    1, p, &res);
    if (rc != CN_OK)
        goto rollback;
    if (cmd_rows(res) != 1) {
        rc = CN_ENOTFOUND;
        goto rollback;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg, BUMP_GENERATION "WHERE name = $1", 1, p, NULL);
    if (rc != CN_OK)
        goto rollback;
    return cn_pg_commit(pg);
rollback:
    PQclear(res);
    cn_pg_rollback(pg);
    return rc;
}

/* ------------------------------------------------------------------ serving */

/* The routing state of one model (inference_route.c builds its snapshot from this):
 * model row, every version with its reference generation, aliases, experiment spec. */
int infer_db_route_load(struct cn_pg *pg, const char *name, struct infer_db_route *out)
{
    memset(out, 0, sizeof *out);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg,
                        "SELECT m.id, m.generation, m.log_sample_rate, "
                        "  COALESCE((SELECT json_agg(json_build_array(v.version, v.reference_gen) ORDER BY v.version) "
                        "            FROM inference.versions v WHERE v.model_id = m.id), '[]')::text, "
                        "  COALESCE((SELECT json_agg(json_build_array(a.alias, a.version)) "
                        "            FROM inference.aliases a WHERE a.model_id = m.id), '[]')::text, "
                        "  (SELECT e.spec::text FROM inference.experiments e WHERE e.model_id = m.id) "
                        "FROM inference.models m WHERE m.name = $1",
                        1, (const char *[]){name}, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    out->id = col_i64(res, 0, 0);
    out->generation = col_i64(res, 0, 1);
    out->log_sample_rate = strtod(PQgetvalue(res, 0, 2), NULL);
    out->versions_json = cn_strdup(PQgetvalue(res, 0, 3));
    out->aliases_json = cn_strdup(PQgetvalue(res, 0, 4));
    out->experiment_json = PQgetisnull(res, 0, 5) ? NULL : cn_strdup(PQgetvalue(res, 0, 5));
    PQclear(res);
    return CN_OK;
}

void infer_db_route_free(struct infer_db_route *r)
{
    free(r->versions_json);
    free(r->aliases_json);
    free(r->experiment_json);
    memset(r, 0, sizeof *r);
}

/* Names of models whose generation is above *since (deleted models are not reported:
 * models are never deleted). Advances *since to the highest seen. */
int infer_db_changed(struct cn_pg *pg, int64_t *since, void (*fn)(const char *name, int64_t gen, void *arg),
                     void *arg)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)*since);
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg, "SELECT name, generation FROM inference.models WHERE generation > $1::bigint", 1,
                        (const char *[]){s}, &res);
    if (rc != CN_OK)
        return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t g = col_i64(res, i, 1);
        if (g > *since)
            *since = g;
        fn(PQgetvalue(res, i, 0), g, arg);
    }
    PQclear(res);
    return CN_OK;
}

/* The current top of generation_seq, so a fresh replica starts polling from now. */
int infer_db_generation_now(struct cn_pg *pg, int64_t *gen)
{
    PGresult *res = NULL;
    int rc = cn_pg_exec(pg, "SELECT COALESCE(max(generation), 0) FROM inference.models", 0, NULL, &res);
    if (rc != CN_OK)
        return rc;
    *gen = col_i64(res, 0, 0);
    PQclear(res);
    return CN_OK;
}
