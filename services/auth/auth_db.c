/* auth_db.c — every SQL statement of cairn-auth, so a schema change touches this file and
 * a migration only. Tables are in migrations/001_init.sql, 002_api_keys_admin.sql and
 * 003_throttle_rotation.sql.
 *
 * Functions take the worker's Postgres handle and return 0, CN_ENOTFOUND, CN_EEXIST,
 * CN_EFULL, CN_EUNAVAIL (database unreachable) or CN_EDB (the statement failed;
 * cn_pg_sqlstate and cn_pg_errmsg on the handle say why, and the caller logs it).
 * Parameters are always bound ($n); hashes travel as hex and are decoded in SQL; nothing
 * secret is logged. Times leave the database as unix milliseconds, or as exact unix
 * microseconds where a page token needs them (see "Times" below). Lists take an arena
 * for their rows and strings.
 *
 * To add a query: add a function here, declare it in auth.h, keep it parameterised and
 * PQclear every result on every path.
 */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>

#include "arena.h"
#include "buf.h"
#include "err.h"
#include "util.h"

/* Times: "(extract(epoch FROM t) * 1000000)::bigint" is the exact unix microseconds of a
 * timestamptz, and "to_timestamp(0) + $n::bigint * interval '1 microsecond'" turns them
 * back exactly (to_timestamp($n / 1e6) goes through a double and can be off by one).
 * Nullable times leave as milliseconds, 0 for null. */
#define USER_COLS                       \
    "id::text, email, role, disabled, " \
    "(extract(epoch FROM created_at) * 1000000)::bigint, password_hash"
/* The same for lists: no password hash leaves the database there. */
#define USER_LIST_COLS                  \
    "id::text, email, role, disabled, " \
    "(extract(epoch FROM created_at) * 1000000)::bigint, ''::text"

/* A bigint column as int64 (0 when null or not a number). */
static int64_t col_i64(PGresult *res, int row, int col)
{
    long long v = 0;

    if (PQgetisnull(res, row, col) ||
        cn_parse_int(PQgetvalue(res, row, col), INT64_MIN, INT64_MAX, &v) != CN_OK)
        return 0;
    return (int64_t)v;
}

static bool col_bool(PGresult *res, int row, int col)
{
    return PQgetvalue(res, row, col)[0] == 't';
}

/* The number of rows a command touched (PQcmdTuples), 0 if none is given. */
static long cmd_rows(PGresult *res)
{
    long long n = 0;

    if (cn_parse_int(PQcmdTuples(res), 0, INT64_MAX, &n) != CN_OK)
        return 0;
    return (long)n;
}

/* Copies one users row (columns USER_COLS) into out. */
static int fill_user(PGresult *res, int row, struct auth_user *out)
{
    if (PQgetlength(res, row, 5) >= (int)sizeof out->password_hash ||
        PQgetlength(res, row, 1) >= (int)sizeof out->email)
        return CN_EDB;
    snprintf(out->id, sizeof out->id, "%s", PQgetvalue(res, row, 0));
    snprintf(out->email, sizeof out->email, "%s", PQgetvalue(res, row, 1));
    snprintf(out->role, sizeof out->role, "%s", PQgetvalue(res, row, 2));
    out->disabled = col_bool(res, row, 3);
    out->created_at_us = col_i64(res, row, 4);
    out->created_at_ms = out->created_at_us / 1000;
    snprintf(out->password_hash, sizeof out->password_hash, "%s", PQgetvalue(res, row, 5));
    return CN_OK;
}

static int user_query(struct cn_pg *pg, const char *sql, const char *param, struct auth_user *out)
{
    const char *params[1] = {param};
    PGresult *res = NULL;
    int rc;

    rc = cn_pg_exec(pg, sql, 1, params, &res);
    if (rc != CN_OK)
        return rc;
    rc = PQntuples(res) == 1 ? fill_user(res, 0, out) : CN_ENOTFOUND;
    PQclear(res);
    return rc;
}

int auth_db_user_insert(struct cn_pg *pg, const char *email, const char *password_hash,
                        struct auth_user *out)
{
    const char *params[2] = {email, password_hash};
    PGresult *res = NULL;
    int rc;

    rc = cn_pg_exec(pg,
                    "INSERT INTO auth.users(email, password_hash) VALUES ($1, $2) "
                    "RETURNING " USER_COLS,
                    2, params, &res);
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23505") == 0)
        return CN_EEXIST;
    if (rc != CN_OK)
        return rc;
    rc = PQntuples(res) == 1 ? fill_user(res, 0, out) : CN_EDB;
    PQclear(res);
    return rc;
}

int auth_db_user_by_email(struct cn_pg *pg, const char *email, struct auth_user *out)
{
    return user_query(pg, "SELECT " USER_COLS " FROM auth.users WHERE email = $1", email, out);
}

int auth_db_user_by_id(struct cn_pg *pg, const char *id, struct auth_user *out)
{
    if (!auth_id_valid(AUTH_ID_UUID, id))
        return CN_ENOTFOUND;
    return user_query(pg, "SELECT " USER_COLS " FROM auth.users WHERE id = $1::uuid", id, out);
}

int auth_db_session_create(struct cn_pg *pg, const char *user_id, const char *token_hash_hex,
                           int64_t ttl_s)
{
    char ttl[24];
    const char *params[3] = {user_id, token_hash_hex, ttl};

    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_s);
    /* One statement, so a family never exists without its first token. */
    return cn_pg_exec(pg,
                      "WITH f AS (INSERT INTO auth.refresh_families(user_id) VALUES ($1::uuid) "
                      "RETURNING id) "
                      "INSERT INTO auth.refresh_tokens(token_hash, family_id, user_id, expires_at) "
                      "SELECT decode($2, 'hex'), f.id, $1::uuid, "
                      "now() + make_interval(secs => $3::double precision) FROM f",
                      3, params, NULL);
}

/* Marks live_hex rotated (replaced by new_hex) and inserts new_hex as the family's live
 * token, in one statement. */
static int rotate_to(struct cn_pg *pg, const char *live_hex, const char *new_hex, int64_t ttl_s)
{
    char ttl[24];
    const char *params[3] = {live_hex, new_hex, ttl};
    PGresult *res = NULL;
    int rc;

    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_s);
    rc = cn_pg_exec(pg,
                    "WITH r AS (UPDATE auth.refresh_tokens "
                    "  SET rotated_at = clock_timestamp(), replaced_by = decode($2, 'hex') "
                    "  WHERE token_hash = decode($1, 'hex') AND rotated_at IS NULL "
                    "  RETURNING family_id, user_id) "
                    "INSERT INTO auth.refresh_tokens(token_hash, family_id, user_id, expires_at) "
                    "SELECT decode($2, 'hex'), family_id, user_id, "
                    "now() + make_interval(secs => $3::double precision) FROM r",
                    3, params, &res);
    if (rc != CN_OK)
        return rc;
    /* The family lock makes this the live token; anything else is a broken invariant. */
    rc = strcmp(PQcmdTuples(res), "1") == 0 ? CN_OK : CN_EDB;
    PQclear(res);
    return rc;
}

/* The refresh rules, in one transaction:
 *   1. lock the token's family row (FOR UPDATE) so refreshes of one family run one at a
 *      time; the next statement then sees what the previous holder committed, which a
 *      join locked in one statement would not (READ COMMITTED re-checks only the locked
 *      row);
 *   2. unknown token, revoked family, expired token, disabled user -> INVALID;
 *   3. a live token -> rotate it (OK);
 *   4. a rotated token whose successor is the live one, rotated less than grace_s ago ->
 *      rotate the live one (GRACE): two racing refreshes of one token both succeed and
 *      the family still has exactly one live token;
 *   5. any other rotated token is reuse -> revoke the family (REUSE), committed.
 */
int auth_db_refresh_rotate(struct cn_pg *pg, const char *old_hex, const char *new_hex,
                           int64_t ttl_s, int64_t grace_s, enum auth_refresh_outcome *outcome,
                           struct auth_user *user, char *family_id)
{
    char grace[24], live_hex[65];
    const char *p1[1] = {old_hex};
    const char *p2[2] = {old_hex, grace};
    PGresult *res = NULL;
    bool unexpired, rotated, in_grace, live_unexpired, prev_of_live;
    int rc;

    *outcome = AUTH_REFRESH_INVALID;
    family_id[0] = '\0';
    snprintf(grace, sizeof grace, "%lld", (long long)grace_s);

    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg,
                    "SELECT f.id::text, f.revoked_at IS NOT NULL FROM auth.refresh_families f "
                    "WHERE f.id = (SELECT family_id FROM auth.refresh_tokens "
                    "              WHERE token_hash = decode($1, 'hex')) "
                    "FOR UPDATE",
                    1, p1, &res);
    if (rc != CN_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cn_pg_rollback(pg);
        return CN_OK; /* unknown token: INVALID */
    }
    snprintf(family_id, 37, "%s", PQgetvalue(res, 0, 0));
    if (PQgetvalue(res, 0, 1)[0] == 't') {
        PQclear(res);
        cn_pg_rollback(pg);
        return CN_OK; /* revoked family: INVALID */
    }
    PQclear(res);
    res = NULL;

    rc = cn_pg_exec(pg,
                    "SELECT t.user_id::text, t.expires_at > now(), t.rotated_at IS NOT NULL, "
                    "  coalesce(t.rotated_at > clock_timestamp() - "
                    "           make_interval(secs => $2::double precision), false), "
                    "  encode(l.token_hash, 'hex'), coalesce(l.expires_at > now(), false), "
                    "  coalesce(t.replaced_by = l.token_hash, false), u.role, "
                    "  coalesce(u.disabled, true) "
                    "FROM auth.refresh_tokens t "
                    "LEFT JOIN auth.refresh_tokens l "
                    "  ON l.family_id = t.family_id AND l.rotated_at IS NULL "
                    "LEFT JOIN auth.users u ON u.id = t.user_id "
                    "WHERE t.token_hash = decode($1, 'hex')",
                    2, p2, &res);
    if (rc != CN_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cn_pg_rollback(pg);
        return CN_OK;
    }
    snprintf(user->id, sizeof user->id, "%s", PQgetvalue(res, 0, 0));
    unexpired = PQgetvalue(res, 0, 1)[0] == 't';
    rotated = PQgetvalue(res, 0, 2)[0] == 't';
    in_grace = PQgetvalue(res, 0, 3)[0] == 't';
    snprintf(live_hex, sizeof live_hex, "%s", PQgetvalue(res, 0, 4));
    live_unexpired = PQgetvalue(res, 0, 5)[0] == 't';
    prev_of_live = PQgetvalue(res, 0, 6)[0] == 't';
    snprintf(user->role, sizeof user->role, "%s", PQgetvalue(res, 0, 7));
    user->disabled = PQgetvalue(res, 0, 8)[0] == 't';
    PQclear(res);
    res = NULL;

    if (!unexpired || user->disabled) {
        cn_pg_rollback(pg);
        return CN_OK;
    }
    if (!rotated) {
        rc = rotate_to(pg, old_hex, new_hex, ttl_s);
        *outcome = AUTH_REFRESH_OK;
    } else if (prev_of_live && in_grace && live_unexpired) {
        rc = rotate_to(pg, live_hex, new_hex, ttl_s);
        *outcome = AUTH_REFRESH_GRACE;
    } else {
        const char *pf[1] = {family_id};
        rc = cn_pg_exec(pg,
                        "UPDATE auth.refresh_families SET revoked_at = now() WHERE id = $1::uuid",
                        1, pf, NULL);
        *outcome = AUTH_REFRESH_REUSE;
    }
    if (rc != CN_OK)
        goto fail;
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    *outcome = AUTH_REFRESH_INVALID;
    return rc;
}

int auth_db_family_revoke(struct cn_pg *pg, const char *token_hash_hex)
{
    const char *params[1] = {token_hash_hex};

    return cn_pg_exec(pg,
                      "UPDATE auth.refresh_families SET revoked_at = now() "
                      "WHERE id = (SELECT family_id FROM auth.refresh_tokens "
                      "            WHERE token_hash = decode($1, 'hex')) "
                      "AND revoked_at IS NULL",
                      1, params, NULL);
}

/* Decodes 64 hex characters into 32 bytes; false if malformed. */
static bool unhex32(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[2 * i + j];
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
            if (d < 0)
                return false;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* --- signing keys --- */

/* Nullable times leave as unix ms (0 for null), floored, so activates_at of a new key and
 * retired_at of the key it replaces, one timestamptz, compare equal in C. */
#define KEY_COLS                                               \
    "kid, encode(private_key, 'hex'), "                        \
    "floor(extract(epoch FROM activates_at) * 1000)::bigint, " \
    "coalesce(floor(extract(epoch FROM retired_at) * 1000)::bigint, 0)"

/* A key is published while it is not retired, or retired less than $1 seconds ago. */
#define KEY_PUBLISHED \
    "(retired_at IS NULL OR retired_at + make_interval(secs => $1::double precision) > now())"

/* The published keys, newest activation first, up to cap, into out. */
static int keys_published(struct cn_pg *pg, int64_t keep_s, struct auth_db_key *out, size_t cap,
                          size_t *n)
{
    char keep[24], limit[24];
    const char *params[2] = {keep, limit};
    PGresult *res = NULL;
    int rc;

    *n = 0;
    snprintf(keep, sizeof keep, "%lld", (long long)keep_s);
    snprintf(limit, sizeof limit, "%zu", cap);
    rc = cn_pg_exec(pg,
                    "SELECT " KEY_COLS " FROM auth.signing_keys WHERE " KEY_PUBLISHED
                    " ORDER BY activates_at DESC, created_at DESC, kid LIMIT $2::int",
                    2, params, &res);
    if (rc != CN_OK)
        return rc;
    for (int i = 0; i < PQntuples(res) && *n < cap; i++) {
        struct auth_db_key *k = &out[*n];
        if (PQgetlength(res, i, 0) >= (int)sizeof k->kid ||
            !unhex32(PQgetvalue(res, i, 1), k->priv)) {
            rc = CN_EDB;
            break;
        }
        snprintf(k->kid, sizeof k->kid, "%s", PQgetvalue(res, i, 0));
        k->activates_at_ms = col_i64(res, i, 2);
        k->retired_at_ms = col_i64(res, i, 3);
        (*n)++;
    }
    PQclear(res);
    if (rc != CN_OK) {
        OPENSSL_cleanse(out, cap * sizeof *out);
        *n = 0;
    }
    return rc;
}

/* Rotation and start-up take this transaction-level lock, so two replicas starting at
 * once make one key and a rotation never interleaves with either. */
static int keys_lock(struct cn_pg *pg)
{
    return cn_pg_exec(pg, "SELECT pg_advisory_xact_lock(hashtext('cairn.auth.signing_keys'))", 0,
                      NULL, NULL);
}

int auth_db_keys_ensure(struct cn_pg *pg, const struct auth_db_key *fresh, int64_t keep_s,
                        struct auth_db_key *out, size_t cap, size_t *n)
{
    char priv_hex[65];
    const char *pi[2] = {fresh->kid, priv_hex};
    int rc;

    *n = 0;
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = keys_lock(pg);
    if (rc != CN_OK)
        goto fail;
    /* A key that is not retired (signing, or about to) means there is nothing to make:
     * the second of two replicas starting together finds the first one's key here. */
    cn_hex(fresh->priv, sizeof fresh->priv, priv_hex);
    rc = cn_pg_exec(pg,
                    "INSERT INTO auth.signing_keys(kid, private_key) "
                    "SELECT $1, decode($2, 'hex') WHERE NOT EXISTS "
                    "  (SELECT 1 FROM auth.signing_keys WHERE retired_at IS NULL)",
                    2, pi, NULL);
    OPENSSL_cleanse(priv_hex, sizeof priv_hex);
    if (rc != CN_OK)
        goto fail;
    rc = keys_published(pg, keep_s, out, cap, n);
    if (rc != CN_OK)
        goto fail;
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    cn_pg_rollback(pg);
    OPENSSL_cleanse(out, cap * sizeof *out);
    *n = 0;
    return rc;
}

int auth_db_keys_load(struct cn_pg *pg, int64_t keep_s, struct auth_db_key *out, size_t cap,
                      size_t *n, long *deleted)
{
    char keep[24];
    const char *params[1] = {keep};
    PGresult *res = NULL;
    int rc;

    *n = 0;
    *deleted = 0;
    snprintf(keep, sizeof keep, "%lld", (long long)keep_s);
    /* Exactly the complement of KEY_PUBLISHED among retired keys: no token signed by
     * these is still valid, and no replica publishes them any more. */
    rc = cn_pg_exec(pg,
                    "DELETE FROM auth.signing_keys WHERE retired_at IS NOT NULL "
                    "AND retired_at + make_interval(secs => $1::double precision) <= now()",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    *deleted = cmd_rows(res);
    PQclear(res);
    return keys_published(pg, keep_s, out, cap, n);
}

int auth_db_keys_rotate(struct cn_pg *pg, const struct auth_db_key *fresh, int64_t publish_s,
                        struct auth_rotation *out)
{
    char priv_hex[65], publish[24];
    const char *pi[3] = {fresh->kid, priv_hex, publish};
    const char *pk[1] = {fresh->kid};
    PGresult *res = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    snprintf(publish, sizeof publish, "%lld", (long long)publish_s);
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = keys_lock(pg);
    if (rc != CN_OK)
        goto fail;
    /* With no current key there is nothing to hand over from: sign at once. */
    cn_hex(fresh->priv, sizeof fresh->priv, priv_hex);
    rc = cn_pg_exec(pg,
                    "INSERT INTO auth.signing_keys(kid, private_key, activates_at) "
                    "VALUES ($1, decode($2, 'hex'), "
                    "  CASE WHEN EXISTS (SELECT 1 FROM auth.signing_keys WHERE retired_at IS NULL) "
                    "  THEN now() + make_interval(secs => $3::double precision) ELSE now() END) "
                    "RETURNING floor(extract(epoch FROM activates_at) * 1000)::bigint, "
                    "  activates_at = now()",
                    3, pi, &res);
    OPENSSL_cleanse(priv_hex, sizeof priv_hex);
    if (rc != CN_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        rc = CN_EDB;
        goto fail;
    }
    out->activates_at_ms = col_i64(res, 0, 0);
    out->immediate = col_bool(res, 0, 1);
    PQclear(res);
    res = NULL;
    /* Every key not yet retired, a pending one from an earlier rotation too: each signs
     * at most until the new one does, and stays published for its tokens. */
    rc = cn_pg_exec(pg,
                    "UPDATE auth.signing_keys "
                    "SET retired_at = (SELECT activates_at FROM auth.signing_keys WHERE kid = $1) "
                    "WHERE retired_at IS NULL AND kid <> $1 RETURNING kid",
                    1, pk, &res);
    if (rc != CN_OK)
        goto fail;
    out->nretired = (size_t)PQntuples(res);
    for (int i = 0; i < PQntuples(res) && i < AUTH_KEYS_MAX; i++)
        snprintf(out->retired[i], sizeof out->retired[i], "%s", PQgetvalue(res, i, 0));
    PQclear(res);
    res = NULL;
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23505") == 0)
        return CN_EEXIST;
    return rc;
}

/* --- sessions and passwords --- */

int auth_db_sessions_revoke_user(struct cn_pg *pg, const char *user_id, long *n)
{
    const char *params[1] = {user_id};
    PGresult *res = NULL;
    int rc;

    if (n != NULL)
        *n = 0;
    if (!auth_id_valid(AUTH_ID_UUID, user_id))
        return CN_ENOTFOUND;
    rc = cn_pg_exec(pg,
                    "UPDATE auth.refresh_families SET revoked_at = now() "
                    "WHERE user_id = $1::uuid AND revoked_at IS NULL",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    if (n != NULL)
        *n = cmd_rows(res);
    PQclear(res);
    return CN_OK;
}

int auth_db_password_set(struct cn_pg *pg, const char *user_id, const char *password_hash,
                         long *sessions)
{
    const char *params[2] = {user_id, password_hash};
    PGresult *res = NULL;
    int rc;

    *sessions = 0;
    if (!auth_id_valid(AUTH_ID_UUID, user_id))
        return CN_ENOTFOUND;
    /* One statement: the new password and the end of the old sessions commit together. */
    rc = cn_pg_exec(pg,
                    "WITH u AS (UPDATE auth.users SET password_hash = $2 WHERE id = $1::uuid "
                    "           RETURNING id), "
                    "f AS (UPDATE auth.refresh_families SET revoked_at = now() "
                    "      WHERE user_id IN (SELECT id FROM u) AND revoked_at IS NULL "
                    "      RETURNING 1) "
                    "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM f)",
                    2, params, &res);
    if (rc != CN_OK)
        return rc;
    rc = PQntuples(res) == 1 && col_i64(res, 0, 0) == 1 ? CN_OK : CN_ENOTFOUND;
    if (rc == CN_OK)
        *sessions = (long)col_i64(res, 0, 1);
    PQclear(res);
    return rc;
}

/* --- users --- */

int auth_db_user_list(struct cn_pg *pg, struct cn_arena *a, const char *email_like,
                      const struct auth_cursor *after, int limit, struct auth_user **out, size_t *n)
{
    char us[24], lim[16];
    const char *params[4] = {email_like, NULL, NULL, lim};
    PGresult *res = NULL;
    int rc;

    *out = NULL;
    *n = 0;
    if (after != NULL) {
        snprintf(us, sizeof us, "%lld", (long long)after->at_us);
        params[1] = us;
        params[2] = after->id;
    }
    snprintf(lim, sizeof lim, "%d", limit);
    rc = cn_pg_exec(pg,
                    "SELECT " USER_LIST_COLS " FROM auth.users "
                    "WHERE ($1::text IS NULL OR email ILIKE '%' || $1 || '%' ESCAPE '\\') "
                    "AND ($2::bigint IS NULL OR (created_at, id) < "
                    "     (to_timestamp(0) + $2::bigint * interval '1 microsecond', $3::uuid)) "
                    "ORDER BY created_at DESC, id DESC LIMIT $4::int",
                    4, params, &res);
    if (rc != CN_OK)
        return rc;
    *out = cn_arena_calloc(a, ((size_t)PQntuples(res) + 1) * sizeof **out);
    for (int i = 0; i < PQntuples(res); i++) {
        rc = fill_user(res, i, &(*out)[*n]);
        if (rc != CN_OK)
            break;
        (*n)++;
    }
    PQclear(res);
    return rc;
}

/* Revokes every refresh family and API key of a user being disabled, inside the
 * caller's transaction; *keys gets the ids of the keys that were still usable. */
static int revoke_everything(struct cn_pg *pg, struct cn_arena *a, const char *id, char ***keys,
                             size_t *nkeys)
{
    const char *params[1] = {id};
    PGresult *res = NULL;
    int rc;

    rc = cn_pg_exec(pg,
                    "UPDATE auth.refresh_families SET revoked_at = now() "
                    "WHERE user_id = $1::uuid AND revoked_at IS NULL",
                    1, params, NULL);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg,
                    "UPDATE auth.api_keys SET revoked_at = now() "
                    "WHERE user_id = $1::uuid AND revoked_at IS NULL "
                    "RETURNING id, expires_at IS NULL OR expires_at > now()",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    *keys = cn_arena_calloc(a, ((size_t)PQntuples(res) + 1) * sizeof **keys);
    for (int i = 0; i < PQntuples(res); i++)
        if (col_bool(res, i, 1))
            (*keys)[(*nkeys)++] = cn_arena_strdup(a, PQgetvalue(res, i, 0));
    PQclear(res);
    return CN_OK;
}

int auth_db_user_update(struct cn_pg *pg, struct cn_arena *a, const char *id, const char *role,
                        int disabled, struct auth_user *before, struct auth_user *after,
                        char ***keys, size_t *nkeys)
{
    const char *p1[1] = {id};
    const char *p3[3] = {id, role, disabled < 0 ? NULL : disabled ? "true" : "false"};
    PGresult *res = NULL;
    int rc;

    *keys = NULL;
    *nkeys = 0;
    if (!auth_id_valid(AUTH_ID_UUID, id))
        return CN_ENOTFOUND;
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    rc = cn_pg_exec(pg, "SELECT " USER_COLS " FROM auth.users WHERE id = $1::uuid FOR UPDATE", 1,
                    p1, &res);
    if (rc != CN_OK)
        goto fail;
    rc = PQntuples(res) == 1 ? fill_user(res, 0, before) : CN_ENOTFOUND;
    PQclear(res);
    res = NULL;
    if (rc != CN_OK)
        goto fail;

    rc = cn_pg_exec(pg,
                    "UPDATE auth.users SET role = coalesce($2, role), "
                    "disabled = coalesce($3::boolean, disabled) "
                    "WHERE id = $1::uuid RETURNING " USER_COLS,
                    3, p3, &res);
    if (rc != CN_OK)
        goto fail;
    rc = PQntuples(res) == 1 ? fill_user(res, 0, after) : CN_EDB;
    PQclear(res);
    res = NULL;
    if (rc != CN_OK)
        goto fail;

    /* Whenever the request disables (even an already disabled user): idempotent, and it
     * heals anything a crash between an old disable and its revocations left behind. */
    if (disabled == 1) {
        rc = revoke_everything(pg, a, id, keys, nkeys);
        if (rc != CN_OK)
            goto fail;
    }
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    *keys = NULL;
    *nkeys = 0;
    return rc;
}

int auth_db_admin_exists(struct cn_pg *pg, bool *exists)
{
    PGresult *res = NULL;
    int rc;

    *exists = false;
    rc = cn_pg_exec(pg, "SELECT EXISTS (SELECT 1 FROM auth.users WHERE role = 'admin')", 0, NULL,
                    &res);
    if (rc != CN_OK)
        return rc;
    *exists = PQntuples(res) == 1 && col_bool(res, 0, 0);
    PQclear(res);
    return CN_OK;
}

int auth_db_admin_ensure(struct cn_pg *pg, const char *email, const char *password_hash,
                         bool only_if_none, enum auth_admin_outcome *outcome, struct auth_user *out)
{
    const char *pe[1] = {email};
    PGresult *res = NULL;
    bool found;
    int rc;

    *outcome = AUTH_ADMIN_SKIPPED;
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    /* Replicas bootstrapping together, or a command beside them: one at a time, and the
     * second sees what the first committed. Released at commit/rollback. */
    rc =
        cn_pg_exec(pg, "SELECT pg_advisory_xact_lock(hashtext('cairn.auth.admin'))", 0, NULL, NULL);
    if (rc != CN_OK)
        goto fail;
    if (only_if_none) {
        rc = cn_pg_exec(pg, "SELECT EXISTS (SELECT 1 FROM auth.users WHERE role = 'admin')", 0,
                        NULL, &res);
        if (rc != CN_OK)
            goto fail;
        found = PQntuples(res) == 1 && col_bool(res, 0, 0);
        PQclear(res);
        res = NULL;
        if (found) {
            cn_pg_rollback(pg);
            return CN_OK;
        }
    }
    rc = cn_pg_exec(pg, "SELECT " USER_COLS " FROM auth.users WHERE email = $1 FOR UPDATE", 1, pe,
                    &res);
    if (rc != CN_OK)
        goto fail;
    found = PQntuples(res) == 1;
    if (found)
        rc = fill_user(res, 0, out);
    PQclear(res);
    res = NULL;
    if (rc != CN_OK)
        goto fail;

    if (found) {
        const char *pu[2] = {out->id, password_hash};
        *outcome = strcmp(out->role, "admin") == 0 ? AUTH_ADMIN_UPDATED : AUTH_ADMIN_PROMOTED;
        rc = cn_pg_exec(pg,
                        "UPDATE auth.users SET role = 'admin', disabled = false, "
                        "password_hash = coalesce($2, password_hash) "
                        "WHERE id = $1::uuid RETURNING " USER_COLS,
                        2, pu, &res);
    } else if (password_hash == NULL) {
        rc = CN_ENOTFOUND;
        goto fail;
    } else {
        const char *pi[2] = {email, password_hash};
        *outcome = AUTH_ADMIN_CREATED;
        rc = cn_pg_exec(pg,
                        "INSERT INTO auth.users(email, password_hash, role) "
                        "VALUES ($1, $2, 'admin') RETURNING " USER_COLS,
                        2, pi, &res);
    }
    if (rc != CN_OK)
        goto fail;
    rc = PQntuples(res) == 1 ? fill_user(res, 0, out) : CN_EDB;
    PQclear(res);
    res = NULL;
    if (rc != CN_OK)
        goto fail;
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    *outcome = AUTH_ADMIN_SKIPPED;
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23505") == 0)
        return CN_EEXIST; /* signed up under that email meanwhile */
    return rc;
}

/* --- API keys --- */

int auth_db_api_key_insert(struct cn_pg *pg, const char *id, const char *user_id, const char *name,
                           uint32_t scopes, int expires_in_days, const char *secret_hash_hex,
                           int max_live, int64_t *created_at_us, int64_t *expires_at_ms)
{
    char arr[AUTH_SCOPES_TEXT_MAX], days[16];
    const char *pu[1] = {user_id};
    const char *pi[6] = {id, user_id, name, arr, secret_hash_hex, days};
    PGresult *res = NULL;
    int rc;

    *created_at_us = *expires_at_ms = 0;
    auth_scopes_pg_array(scopes, arr, sizeof arr);
    snprintf(days, sizeof days, "%d", expires_in_days);
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    /* Lock the owner first so two creations cannot both see 99 live keys. */
    rc = cn_pg_exec(pg, "SELECT 1 FROM auth.users WHERE id = $1::uuid FOR UPDATE", 1, pu, &res);
    if (rc != CN_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        rc = CN_ENOTFOUND;
        goto fail;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "SELECT count(*) FROM auth.api_keys WHERE user_id = $1::uuid "
                    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
                    1, pu, &res);
    if (rc != CN_OK)
        goto fail;
    if (col_i64(res, 0, 0) >= max_live) {
        rc = CN_EFULL;
        goto fail;
    }
    PQclear(res);
    res = NULL;
    rc = cn_pg_exec(pg,
                    "INSERT INTO auth.api_keys(id, user_id, name, scopes, secret_hash, expires_at) "
                    "VALUES ($1, $2::uuid, $3, $4::text[], $5, "
                    "  CASE WHEN $6::int > 0 THEN now() + make_interval(days => $6::int) END) "
                    "RETURNING (extract(epoch FROM created_at) * 1000000)::bigint, "
                    "  coalesce(floor(extract(epoch FROM expires_at) * 1000)::bigint, 0)",
                    6, pi, &res);
    if (rc != CN_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        rc = CN_EDB;
        goto fail;
    }
    *created_at_us = col_i64(res, 0, 0);
    *expires_at_ms = col_i64(res, 0, 1);
    PQclear(res);
    res = NULL;
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    if (rc == CN_EDB && strcmp(cn_pg_sqlstate(pg), "23505") == 0)
        return CN_EEXIST;
    return rc;
}

int auth_db_api_key_list(struct cn_pg *pg, struct cn_arena *a, const char *user_id,
                         const struct auth_cursor *after, int limit, struct auth_api_key **out,
                         size_t *n)
{
    char us[24], lim[16];
    const char *params[4] = {user_id, NULL, NULL, lim};
    PGresult *res = NULL;
    int rc;

    *out = NULL;
    *n = 0;
    if (!auth_id_valid(AUTH_ID_UUID, user_id))
        return CN_OK;
    if (after != NULL) {
        snprintf(us, sizeof us, "%lld", (long long)after->at_us);
        params[1] = us;
        params[2] = after->id;
    }
    snprintf(lim, sizeof lim, "%d", limit);
    rc = cn_pg_exec(pg,
                    "SELECT id, name, array_to_string(scopes, ' '), "
                    "  (extract(epoch FROM created_at) * 1000000)::bigint, "
                    "  coalesce(floor(extract(epoch FROM last_used_at) * 1000)::bigint, 0), "
                    "  coalesce(floor(extract(epoch FROM expires_at) * 1000)::bigint, 0) "
                    "FROM auth.api_keys WHERE user_id = $1::uuid AND revoked_at IS NULL "
                    "AND ($2::bigint IS NULL OR (created_at, id) < "
                    "     (to_timestamp(0) + $2::bigint * interval '1 microsecond', $3::text)) "
                    "ORDER BY created_at DESC, id DESC LIMIT $4::int",
                    4, params, &res);
    if (rc != CN_OK)
        return rc;
    *out = cn_arena_calloc(a, ((size_t)PQntuples(res) + 1) * sizeof **out);
    for (int i = 0; i < PQntuples(res); i++) {
        struct auth_api_key *k = &(*out)[*n];
        if (PQgetlength(res, i, 0) >= (int)sizeof k->id) {
            rc = CN_EDB;
            break;
        }
        snprintf(k->id, sizeof k->id, "%s", PQgetvalue(res, i, 0));
        k->name = cn_arena_strdup(a, PQgetvalue(res, i, 1));
        k->scopes = auth_scopes_parse(PQgetvalue(res, i, 2), NULL);
        k->created_at_us = col_i64(res, i, 3);
        k->last_used_at_ms = col_i64(res, i, 4);
        k->expires_at_ms = col_i64(res, i, 5);
        (*n)++;
    }
    PQclear(res);
    return rc;
}

int auth_db_api_key_revoke(struct cn_pg *pg, const char *user_id, const char *id)
{
    const char *params[2] = {id, user_id};
    PGresult *res = NULL;
    int rc;

    if (!auth_id_valid(AUTH_ID_KEY, id) || !auth_id_valid(AUTH_ID_UUID, user_id))
        return CN_ENOTFOUND;
    rc = cn_pg_exec(pg,
                    "UPDATE auth.api_keys SET revoked_at = now() "
                    "WHERE id = $1 AND user_id = $2::uuid AND revoked_at IS NULL",
                    2, params, &res);
    if (rc != CN_OK)
        return rc;
    rc = cmd_rows(res) == 1 ? CN_OK : CN_ENOTFOUND;
    PQclear(res);
    return rc;
}

int auth_db_api_key_lookup(struct cn_pg *pg, const char *id, struct auth_key_check *out)
{
    const char *params[1] = {id};
    PGresult *res = NULL;
    int rc;

    if (!auth_id_valid(AUTH_ID_KEY, id))
        return CN_ENOTFOUND;
    rc = cn_pg_exec(pg,
                    "SELECT k.user_id::text, u.role, array_to_string(k.scopes, ' '), "
                    "  k.secret_hash, "
                    "  coalesce(floor(extract(epoch FROM k.expires_at) * 1000)::bigint, 0), "
                    "  coalesce(k.expires_at <= now(), false), k.revoked_at IS NOT NULL, "
                    "  u.disabled "
                    "FROM auth.api_keys k JOIN auth.users u ON u.id = k.user_id "
                    "WHERE k.id = $1",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return CN_ENOTFOUND;
    }
    if (PQgetlength(res, 0, 3) >= (int)sizeof out->secret_hash ||
        PQgetlength(res, 0, 1) >= (int)sizeof out->role) {
        PQclear(res);
        return CN_EDB;
    }
    snprintf(out->user_id, sizeof out->user_id, "%s", PQgetvalue(res, 0, 0));
    snprintf(out->role, sizeof out->role, "%s", PQgetvalue(res, 0, 1));
    out->scopes = auth_scopes_parse(PQgetvalue(res, 0, 2), NULL);
    snprintf(out->secret_hash, sizeof out->secret_hash, "%s", PQgetvalue(res, 0, 3));
    out->expires_at_ms = col_i64(res, 0, 4);
    out->expired = col_bool(res, 0, 5);
    out->revoked = col_bool(res, 0, 6);
    out->disabled = col_bool(res, 0, 7);
    PQclear(res);
    return CN_OK;
}

int auth_db_api_key_touch(struct cn_pg *pg, const char *const *ids, const int64_t *ms, size_t n)
{
    struct cn_buf bid = {0}, bms = {0};
    const char *params[2];
    int rc;

    if (n == 0)
        return CN_OK;
    /* Two array literals; ids are base62 (checked), so none needs quoting. */
    cn_buf_putc(&bid, '{');
    cn_buf_putc(&bms, '{');
    for (size_t i = 0; i < n; i++) {
        if (!auth_id_valid(AUTH_ID_KEY, ids[i]))
            continue;
        if (bid.len > 1) {
            cn_buf_putc(&bid, ',');
            cn_buf_putc(&bms, ',');
        }
        cn_buf_puts(&bid, ids[i]);
        cn_buf_printf(&bms, "%lld", (long long)ms[i]);
    }
    cn_buf_putc(&bid, '}');
    cn_buf_putc(&bms, '}');
    params[0] = bid.data;
    params[1] = bms.data;
    rc = cn_pg_exec(pg,
                    "UPDATE auth.api_keys k SET last_used_at = greatest(k.last_used_at, "
                    "  to_timestamp(0) + u.ms * interval '1 millisecond') "
                    "FROM unnest($1::text[], $2::bigint[]) AS u(id, ms) WHERE k.id = u.id",
                    2, params, NULL);
    cn_buf_free(&bid);
    cn_buf_free(&bms);
    return rc;
}

/* --- audit --- */

int auth_db_audit_insert(struct cn_pg *pg, const char *action, const char *actor,
                         const char *subject, const char *ip, const char *request_id,
                         const char *detail)
{
    const char *params[6] = {
        action,
        actor != NULL && auth_id_valid(AUTH_ID_UUID, actor) ? actor : NULL,
        subject != NULL && auth_id_valid(AUTH_ID_UUID, subject) ? subject : NULL,
        ip != NULL && ip[0] != '\0' ? ip : NULL,
        request_id != NULL && request_id[0] != '\0' ? request_id : NULL,
        detail,
    };

    return cn_pg_exec(pg,
                      "INSERT INTO auth.audit(action, actor, subject, ip, request_id, detail) "
                      "VALUES ($1, $2::uuid, $3::uuid, left($4, 100), left($5, 128), $6)",
                      6, params, NULL);
}

int auth_db_audit_list(struct cn_pg *pg, struct cn_arena *a, const char *subject,
                       const char *action, const struct auth_cursor *after, int limit,
                       struct auth_audit_event **out, size_t *n)
{
    char us[24], lim[16];
    const char *params[5] = {subject, action, NULL, NULL, lim};
    PGresult *res = NULL;
    int rc;

    *out = NULL;
    *n = 0;
    if (subject != NULL && !auth_id_valid(AUTH_ID_UUID, subject))
        return CN_OK;
    if (after != NULL) {
        snprintf(us, sizeof us, "%lld", (long long)after->at_us);
        params[2] = us;
        params[3] = after->id;
    }
    snprintf(lim, sizeof lim, "%d", limit);
    rc = cn_pg_exec(pg,
                    "SELECT id::text, (extract(epoch FROM at) * 1000000)::bigint, action, "
                    "coalesce(actor::text, ''), "
                    "  coalesce(subject::text, ''), coalesce(ip, ''), coalesce(request_id, ''), "
                    "  coalesce(detail, '') "
                    "FROM auth.audit "
                    "WHERE ($1::uuid IS NULL OR subject = $1::uuid) "
                    "AND ($2::text IS NULL OR action = $2) "
                    "AND ($3::bigint IS NULL OR (at, id) < "
                    "     (to_timestamp(0) + $3::bigint * interval '1 microsecond', $4::bigint)) "
                    "ORDER BY at DESC, id DESC LIMIT $5::int",
                    5, params, &res);
    if (rc != CN_OK)
        return rc;
    *out = cn_arena_calloc(a, ((size_t)PQntuples(res) + 1) * sizeof **out);
    for (int i = 0; i < PQntuples(res); i++) {
        struct auth_audit_event *e = &(*out)[*n];
        if (PQgetlength(res, i, 0) >= (int)sizeof e->id) {
            rc = CN_EDB;
            break;
        }
        snprintf(e->id, sizeof e->id, "%s", PQgetvalue(res, i, 0));
        e->at_us = col_i64(res, i, 1);
        e->action = cn_arena_strdup(a, PQgetvalue(res, i, 2));
        e->actor = cn_arena_strdup(a, PQgetvalue(res, i, 3));
        e->subject = cn_arena_strdup(a, PQgetvalue(res, i, 4));
        e->ip = cn_arena_strdup(a, PQgetvalue(res, i, 5));
        e->request_id = cn_arena_strdup(a, PQgetvalue(res, i, 6));
        e->detail = cn_arena_strdup(a, PQgetvalue(res, i, 7));
        (*n)++;
    }
    PQclear(res);
    return rc;
}

/* --- login throttling --- */

/* The failures an attempt makes: one more, or a fresh count when the last one is older
 * than the window ($5 s). */
#define THROTTLE_NEXT                                                                  \
    "(CASE WHEN t.last_failure < now() - make_interval(secs => $5::double precision) " \
    "THEN 1 ELSE least(t.failures + 1, 1000000) END)"
/* blocked_until after n failures: none below $2; from there $3 ms doubling with each
 * failure, at most $4 s. The exponent is capped so that power() cannot overflow before
 * least() has cut the time to the maximum. */
#define THROTTLE_BLOCK(n)                                                                    \
    "(CASE WHEN " n " >= $2::int THEN now() + make_interval(secs => least("                  \
    "$3::double precision / 1000 * power(2::double precision, least(" n " - $2::int, 40)), " \
    "$4::double precision)) END)"
#define THROTTLE_BLOCK_FIRST THROTTLE_BLOCK("1")
#define THROTTLE_BLOCK_NEXT THROTTLE_BLOCK(THROTTLE_NEXT)

int auth_db_throttle_claim(struct cn_pg *pg, const char *hash_hex,
                           const struct auth_throttle_policy *p, int64_t *blocked_ms,
                           long *failures)
{
    char after[24], base[24], max[24], window[24];
    const char *params[5] = {hash_hex, after, base, max, window};
    const char *pk[1] = {hash_hex};
    PGresult *res = NULL;
    int rc;

    *blocked_ms = 0;
    *failures = 0;
    snprintf(after, sizeof after, "%lld", (long long)p->after);
    snprintf(base, sizeof base, "%lld", (long long)p->base_ms);
    snprintf(max, sizeof max, "%lld", (long long)p->max_s);
    snprintf(window, sizeof window, "%lld", (long long)p->window_s);
    /* The check and the count in one statement: the row is locked while the WHERE is
     * decided, so of any number of concurrent attempts exactly the ones before the block
     * are counted and let through. A blocked row is left alone and returns nothing. */
    rc = cn_pg_exec(pg,
                    "INSERT INTO auth.login_throttle AS t "
                    "  (email_hash, failures, last_failure, blocked_until) "
                    "VALUES (decode($1, 'hex'), 1, now(), " THROTTLE_BLOCK_FIRST ") "
                    "ON CONFLICT (email_hash) DO UPDATE SET "
                    "  failures = " THROTTLE_NEXT ", last_failure = now(), "
                    "  blocked_until = " THROTTLE_BLOCK_NEXT " "
                    "WHERE t.blocked_until IS NULL OR t.blocked_until <= now() "
                    "RETURNING failures",
                    5, params, &res);
    if (rc != CN_OK)
        return rc;
    if (PQntuples(res) == 1) {
        *failures = (long)col_i64(res, 0, 0);
        PQclear(res);
        return CN_OK;
    }
    PQclear(res);
    res = NULL;
    /* Blocked: how much longer, for Retry-After. A block that ended (or a success that
     * deleted the row) since the statement above still answers "retry in 1 ms". */
    rc = cn_pg_exec(pg,
                    "SELECT failures, greatest(ceil(extract(epoch FROM blocked_until - now()) "
                    "  * 1000), 1)::bigint "
                    "FROM auth.login_throttle WHERE email_hash = decode($1, 'hex')",
                    1, pk, &res);
    if (rc != CN_OK)
        return rc;
    *blocked_ms = 1;
    if (PQntuples(res) == 1) {
        *failures = (long)col_i64(res, 0, 0);
        *blocked_ms = col_i64(res, 0, 1);
    }
    PQclear(res);
    return CN_OK;
}

int auth_db_throttle_clear(struct cn_pg *pg, const char *hash_hex)
{
    const char *params[1] = {hash_hex};

    return cn_pg_exec(pg, "DELETE FROM auth.login_throttle WHERE email_hash = decode($1, 'hex')", 1,
                      params, NULL);
}

int auth_db_throttle_purge(struct cn_pg *pg, int64_t window_s, long *n)
{
    char window[24];
    const char *params[1] = {window};
    PGresult *res = NULL;
    int rc;

    *n = 0;
    snprintf(window, sizeof window, "%lld", (long long)window_s);
    /* Such a row changes nothing any more: the next attempt would start a fresh count
     * anyway. In batches, so a spray of addresses never makes one huge delete. */
    rc = cn_pg_exec(pg,
                    "DELETE FROM auth.login_throttle WHERE email_hash IN ("
                    "  SELECT email_hash FROM auth.login_throttle "
                    "  WHERE last_failure < now() - make_interval(secs => $1::double precision) "
                    "  AND (blocked_until IS NULL OR blocked_until <= now()) LIMIT 10000)",
                    1, params, &res);
    if (rc != CN_OK)
        return rc;
    *n = cmd_rows(res);
    PQclear(res);
    return CN_OK;
}
