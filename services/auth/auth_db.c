/* auth_db.c — every SQL statement of cairn-auth, so a schema change touches this file and
 * a migration only. Tables are in migrations/001_init.sql.
 *
 * Functions take the worker's Postgres handle and return 0, CN_ENOTFOUND, CN_EEXIST,
 * CN_EUNAVAIL (database unreachable) or CN_EDB (the statement failed; cn_pg_sqlstate and
 * cn_pg_errmsg on the handle say why, and the caller logs it). Parameters are always
 * bound ($n); hashes travel as hex and are decoded in SQL; nothing secret is logged.
 *
 * To add a query: add a function here, declare it in auth.h, keep it parameterised and
 * PQclear every result on every path.
 */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>

#include "err.h"
#include "util.h"

#define USER_COLS                       \
    "id::text, email, role, disabled, " \
    "floor(extract(epoch FROM created_at) * 1000)::bigint, password_hash"

/* Copies one users row (columns USER_COLS) into out. */
static int fill_user(PGresult *res, int row, struct auth_user *out)
{
    long long ms = 0;

    if (PQgetlength(res, row, 5) >= (int)sizeof out->password_hash ||
        PQgetlength(res, row, 1) >= (int)sizeof out->email)
        return CN_EDB;
    snprintf(out->id, sizeof out->id, "%s", PQgetvalue(res, row, 0));
    snprintf(out->email, sizeof out->email, "%s", PQgetvalue(res, row, 1));
    snprintf(out->role, sizeof out->role, "%s", PQgetvalue(res, row, 2));
    out->disabled = PQgetvalue(res, row, 3)[0] == 't';
    if (!PQgetisnull(res, row, 4))
        cn_parse_int(PQgetvalue(res, row, 4), 0, INT64_MAX, &ms);
    out->created_at_ms = ms;
    snprintf(out->password_hash, sizeof out->password_hash, "%s", PQgetvalue(res, row, 5));
    return CN_OK;
}

/* A canonical lowercase/uppercase uuid text; anything else cannot be a user id. */
static bool uuid_text(const char *s)
{
    static const int dash[] = {8, 13, 18, 23};
    size_t d = 0;

    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (d < CN_ARRAY_LEN(dash) && (int)i == dash[d]) {
            if (c != '-')
                return false;
            d++;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
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
    if (!uuid_text(id))
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

int auth_db_keys_ensure(struct cn_pg *pg, const struct auth_db_key *fresh, struct auth_db_key *out,
                        size_t cap, size_t *n)
{
    char limit[24], priv_hex[65];
    const char *pl[1] = {limit};
    PGresult *res = NULL;
    int rc;

    *n = 0;
    snprintf(limit, sizeof limit, "%zu", cap);
    rc = cn_pg_begin(pg);
    if (rc != CN_OK)
        return rc;
    /* Two replicas starting at once: the second waits here and then finds the first's
     * key, so both sign with one key. Released at commit/rollback. */
    rc = cn_pg_exec(pg, "SELECT pg_advisory_xact_lock(hashtext('cairn.auth.signing_keys'))", 0,
                    NULL, NULL);
    if (rc != CN_OK)
        goto fail;
    rc = cn_pg_exec(pg,
                    "SELECT kid, encode(private_key, 'hex') FROM auth.signing_keys "
                    "WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT $1::int",
                    1, pl, &res);
    if (rc != CN_OK)
        goto fail;
    for (int i = 0; i < PQntuples(res) && *n < cap; i++) {
        struct auth_db_key *k = &out[*n];
        if (PQgetlength(res, i, 0) >= (int)sizeof k->kid ||
            !unhex32(PQgetvalue(res, i, 1), k->priv)) {
            rc = CN_EDB;
            goto fail;
        }
        snprintf(k->kid, sizeof k->kid, "%s", PQgetvalue(res, i, 0));
        (*n)++;
    }
    PQclear(res);
    res = NULL;

    if (*n == 0 && cap > 0) {
        const char *pi[2] = {fresh->kid, priv_hex};
        cn_hex(fresh->priv, sizeof fresh->priv, priv_hex);
        rc = cn_pg_exec(pg,
                        "INSERT INTO auth.signing_keys(kid, private_key) "
                        "VALUES ($1, decode($2, 'hex'))",
                        2, pi, NULL);
        OPENSSL_cleanse(priv_hex, sizeof priv_hex);
        if (rc != CN_OK)
            goto fail;
        out[0] = *fresh;
        *n = 1;
    }
    rc = cn_pg_commit(pg);
    if (rc != CN_OK)
        goto fail;
    return CN_OK;

fail:
    PQclear(res);
    cn_pg_rollback(pg);
    OPENSSL_cleanse(out, cap * sizeof *out);
    *n = 0;
    return rc;
}
