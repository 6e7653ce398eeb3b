/* auth_rpc.c — the handlers of cairn.v1.Auth (proto/cairn/v1/auth.proto), the service's
 * settings, and its start-up (init) and shutdown (fini).
 *
 * Each handler runs on an RPC worker with the worker's own Postgres handle and answers
 * through its closure exactly once. Errors follow one pattern: input problems are field
 * errors (INVALID_ARGUMENT), credentials problems one deliberately vague UNAUTHENTICATED,
 * a database that cannot be reached UNAVAILABLE "database unavailable", and anything
 * else INTERNAL with the detail logged (never a password, token or hash).
 *
 * Because the handler table is CAIRN__V1__AUTH__INIT(auth_), adding an RPC to auth.proto
 * without adding auth_<rpc> here fails the build. To add an RPC: declare it in the proto,
 * add the handler here and any SQL in auth_db.c, a route in gateway/routes.c, and a line
 * in README.md.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "arena.h"
#include "b64.h"
#include "buf.h"
#include "err.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "util.h"

#define REFRESH_RAW 32         /* 256-bit refresh tokens */
#define REFRESH_LEN 43         /* base64url of 32 bytes, unpadded */
#define HASH_WAIT_MAX_MS 10000 /* a call without a deadline still waits this at most */
#define THROTTLE_RETRY_MS 1000

struct auth_conf auth_conf;

const struct cn_conf_def auth_conf_defs[] = {
    CN_CONF(struct auth_conf, issuer, "CAIRN_AUTH_ISSUER", CN_CONF_STR, "cairn", 0, 0,
            "iss claim of access tokens (the gateway expects the same)"),
    CN_CONF(struct auth_conf, audience, "CAIRN_AUTH_AUDIENCE", CN_CONF_STR, "cairn-api", 0, 0,
            "aud claim of access tokens"),
    CN_CONF(struct auth_conf, key_file, "CAIRN_AUTH_KEY_FILE", CN_CONF_STR, "", 0, 0,
            "PEM Ed25519 private key to sign with; empty = keep a key in Postgres"),
    CN_CONF(struct auth_conf, access_ttl_s, "CAIRN_AUTH_ACCESS_TTL_S", CN_CONF_INT, "900", 1, 86400,
            "access token lifetime in seconds"),
    CN_CONF(struct auth_conf, refresh_ttl_s, "CAIRN_AUTH_REFRESH_TTL_S", CN_CONF_INT, "2592000", 1,
            31536000, "refresh token lifetime in seconds (each rotation starts a new one)"),
    CN_CONF(struct auth_conf, reuse_grace_s, "CAIRN_AUTH_REUSE_GRACE_S", CN_CONF_INT, "5", 0, 300,
            "seconds the previous refresh token still rotates instead of counting as reuse"),
    CN_CONF(struct auth_conf, hash_slots, "CAIRN_AUTH_HASH_SLOTS", CN_CONF_INT, "2", 1, 64,
            "Argon2id hashes computed at once (19 MiB each)"),
    CN_CONF(struct auth_conf, hash_waiters, "CAIRN_AUTH_HASH_WAITERS", CN_CONF_INT, "4", 0, 1024,
            "callers that may wait for a hash slot before RESOURCE_EXHAUSTED"),
};
const size_t auth_conf_ndefs = CN_ARRAY_LEN(auth_conf_defs);

static struct {
    struct cn_series *login_ok, *login_invalid, *login_throttled;
    struct cn_series *refresh_ok, *refresh_grace, *refresh_reuse, *refresh_invalid;
} counters;

/* --- helpers --- */

static struct cn_pg *pg_of(struct cn_call *call) { return cn_svc_worker_of(call)->pg; }

/* Answers a failed database call: UNAVAILABLE when unreachable, else INTERNAL (logged). */
static void fail_db(struct cn_call *call, int rc, const char *what)
{
    struct cn_pg *pg = pg_of(call);

    if (rc == CN_EUNAVAIL) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "database unavailable");
        call->retry_after_ms = THROTTLE_RETRY_MS;
        return;
    }
    cn_log(CN_LOG_ERROR, "AUTH-DB-ERROR", cn_call_request_id(call),
           "%s failed (%s, sqlstate %s): %s", what, cn_strerror(rc), cn_pg_sqlstate(pg),
           cn_pg_errmsg(pg));
    cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
}

/* Answers a password-hash failure: the pool is full or the wait ran out -> throttled. */
static void fail_hash(struct cn_call *call, int rc, const char *busy)
{
    if (rc == CN_EFULL || rc == CN_ETIMEDOUT) {
        cn_call_fail(call, CAIRN__V1__CODE__RESOURCE_EXHAUSTED, "%s", busy);
        call->retry_after_ms = THROTTLE_RETRY_MS;
        return;
    }
    cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
}

static int64_t hash_wait_ms(const struct cn_call *call)
{
    int64_t left = cn_call_time_left(call);
    return left < HASH_WAIT_MAX_MS ? left : HASH_WAIT_MAX_MS;
}

/* A refresh token is exactly 43 base64url characters; anything else is not one of ours. */
static bool refresh_format_ok(const char *t)
{
    size_t n = strlen(t);
    if (n != REFRESH_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* SHA-256 of the token text as 64 hex characters: what the database keeps. */
static void token_hash_hex(const char *token, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL) != 1 || len != 32) {
        cn_log_error("AUTH-SHA256-FAIL", "SHA-256 failed");
        abort();
    }
    cn_hex(md, 32, out);
}

/* A fresh refresh token (into the call's arena) and its hash. */
static char *refresh_new(struct cn_call *call, char hash_hex[65])
{
    uint8_t raw[REFRESH_RAW];
    char *tok = cn_arena_alloc(call->arena, REFRESH_LEN + 1);

    cn_random_bytes(raw, sizeof raw);
    cn_b64url_encode(raw, sizeof raw, tok);
    OPENSSL_cleanse(raw, sizeof raw);
    token_hash_hex(tok, hash_hex);
    return tok;
}

/* Signs an access token for sub/role into the call's arena; NULL on failure (logged). */
static char *access_token(struct cn_call *call, const char *sub, const char *role)
{
    const struct auth_key *key = auth_keys_signing();
    struct cn_buf b = {0};
    uint8_t jti_raw[16];
    char jti[33], *signed_tok = NULL, *out = NULL;
    int64_t now = cn_wall_s();

    cn_random_bytes(jti_raw, sizeof jti_raw);
    cn_hex(jti_raw, sizeof jti_raw, jti);
    cn_buf_puts(&b, "{\"iss\":");
    cn_buf_json_str(&b, auth_conf.issuer, strlen(auth_conf.issuer));
    cn_buf_puts(&b, ",\"aud\":");
    cn_buf_json_str(&b, auth_conf.audience, strlen(auth_conf.audience));
    cn_buf_puts(&b, ",\"sub\":");
    cn_buf_json_str(&b, sub, strlen(sub));
    cn_buf_puts(&b, ",\"role\":");
    cn_buf_json_str(&b, role, strlen(role));
    cn_buf_printf(&b, ",\"iat\":%lld,\"exp\":%lld,\"jti\":\"%s\"}", (long long)now,
                  (long long)(now + auth_conf.access_ttl_s), jti);

    if (key == NULL || cn_jwt_sign(key->pkey, key->kid, "at+jwt", b.data, &signed_tok) != CN_OK) {
        cn_log(CN_LOG_ERROR, "AUTH-SIGN-FAIL", cn_call_request_id(call),
               "cannot sign an access token");
    } else {
        out = cn_arena_strdup(call->arena, signed_tok);
        free(signed_tok);
    }
    cn_buf_free(&b);
    return out;
}

static void user_to_proto(const struct auth_user *u, Cairn__V1__User *out)
{
    out->id = (char *)u->id;
    out->email = (char *)u->email;
    out->role = (char *)u->role;
    out->created_at = u->created_at_ms;
    out->disabled = u->disabled;
}

/* --- handlers --- */

static void auth_sign_up(Cairn__V1__Auth_Service *s, const Cairn__V1__SignUpRequest *in,
                         Cairn__V1__User_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__User out = CAIRN__V1__USER__INIT;
    struct auth_user u;
    char email[AUTH_EMAIL_MAX + 1], hash[AUTH_HASH_MAX];
    const char *why;
    bool bad = false;
    int rc;

    (void)s;
    memset(&u, 0, sizeof u);
    if (auth_email_normalize(in->email, email, sizeof email, &why) != CN_OK) {
        cn_call_field_error(call, "email", "%s", why);
        bad = true;
    }
    if (auth_password_check(in->password, &why) != CN_OK) {
        cn_call_field_error(call, "password", "%s", why);
        bad = true;
    }
    if (bad)
        goto out;

    rc = auth_password_hash(in->password, hash_wait_ms(call), hash, sizeof hash);
    if (rc != CN_OK) {
        fail_hash(call, rc, "too many sign-ups in progress");
        goto out;
    }
    rc = auth_db_user_insert(pg_of(call), email, hash, &u);
    OPENSSL_cleanse(hash, sizeof hash);
    if (rc == CN_EEXIST) {
        cn_call_fail(call, CAIRN__V1__CODE__ALREADY_EXISTS,
                     "an account with this email already exists");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "create user");
        goto out;
    }
    cn_log(CN_LOG_INFO, "AUTH-SIGNUP", cn_call_request_id(call), "user %s signed up", u.id);
    user_to_proto(&u, &out);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_login(Cairn__V1__Auth_Service *s, const Cairn__V1__LoginRequest *in,
                       Cairn__V1__TokenResponse_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__TokenResponse out = CAIRN__V1__TOKEN_RESPONSE__INIT;
    struct auth_user u;
    char email[AUTH_EMAIL_MAX + 1], refresh_hash[65];
    const char *why, *reason = NULL;
    bool found = false;
    int rc;

    (void)s;
    memset(&u, 0, sizeof u);
    if (in->email[0] == '\0')
        cn_call_field_error(call, "email", "is required");
    if (in->password[0] == '\0')
        cn_call_field_error(call, "password", "is required");
    if (in->email[0] == '\0' || in->password[0] == '\0')
        goto out;

    /* An address that cannot be valid cannot have an account: same path as unknown. */
    if (auth_email_normalize(in->email, email, sizeof email, &why) == CN_OK) {
        rc = auth_db_user_by_email(pg_of(call), email, &u);
        if (rc == CN_OK)
            found = true;
        else if (rc != CN_ENOTFOUND) {
            fail_db(call, rc, "find user");
            goto out;
        }
    }
    /* Verify even when there is no such user (against the dummy) and even when the user
     * is disabled, so the answer takes the same time whatever the reason. */
    rc = auth_password_verify(found ? u.password_hash : NULL, in->password, hash_wait_ms(call));
    if (rc == CN_EFULL || rc == CN_ETIMEDOUT) {
        cn_series_add(counters.login_throttled, 1);
        fail_hash(call, rc, "too many logins in progress");
        goto out;
    }
    if (!found)
        reason = "unknown email";
    else if (rc != CN_OK)
        reason = "wrong password";
    else if (u.disabled)
        reason = "user disabled";
    if (reason != NULL) {
        cn_series_add(counters.login_invalid, 1);
        cn_log(CN_LOG_INFO, "AUTH-LOGIN-FAIL", cn_call_request_id(call), "login refused: %s%s%s",
               reason, found ? " for user " : "", found ? u.id : "");
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "invalid email or password");
        goto out;
    }

    out.refresh_token = refresh_new(call, refresh_hash);
    rc = auth_db_session_create(pg_of(call), u.id, refresh_hash, auth_conf.refresh_ttl_s);
    if (rc != CN_OK) {
        fail_db(call, rc, "create session");
        goto out;
    }
    out.access_token = access_token(call, u.id, u.role);
    if (out.access_token == NULL) {
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
        goto out;
    }
    out.token_type = "Bearer";
    out.expires_in = auth_conf.access_ttl_s;
    out.refresh_expires_in = auth_conf.refresh_ttl_s;
    cn_series_add(counters.login_ok, 1);
    cn_log(CN_LOG_INFO, "AUTH-LOGIN", cn_call_request_id(call), "user %s logged in", u.id);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_refresh(Cairn__V1__Auth_Service *s, const Cairn__V1__RefreshRequest *in,
                         Cairn__V1__TokenResponse_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__TokenResponse out = CAIRN__V1__TOKEN_RESPONSE__INIT;
    enum auth_refresh_outcome outcome = AUTH_REFRESH_INVALID;
    struct auth_user u;
    char old_hash[65], new_hash[65], family[37];
    int rc;

    (void)s;
    memset(&u, 0, sizeof u);
    if (in->refresh_token[0] == '\0') {
        cn_call_field_error(call, "refresh_token", "is required");
        goto out;
    }
    if (!refresh_format_ok(in->refresh_token)) {
        cn_series_add(counters.refresh_invalid, 1);
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "invalid refresh token");
        goto out;
    }
    token_hash_hex(in->refresh_token, old_hash);
    out.refresh_token = refresh_new(call, new_hash);
    rc = auth_db_refresh_rotate(pg_of(call), old_hash, new_hash, auth_conf.refresh_ttl_s,
                                auth_conf.reuse_grace_s, &outcome, &u, family);
    if (rc != CN_OK) {
        fail_db(call, rc, "rotate refresh token");
        goto out;
    }
    switch (outcome) {
    case AUTH_REFRESH_INVALID:
        cn_series_add(counters.refresh_invalid, 1);
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "invalid refresh token");
        goto out;
    case AUTH_REFRESH_REUSE:
        cn_series_add(counters.refresh_reuse, 1);
        cn_log(CN_LOG_WARN, "AUTH-REFRESH-REUSE", cn_call_request_id(call),
               "an already rotated refresh token was presented: family %s of user %s revoked",
               family, u.id);
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED,
                     "refresh token already used; this session is revoked, sign in again");
        goto out;
    case AUTH_REFRESH_OK:
    case AUTH_REFRESH_GRACE: break;
    }
    out.access_token = access_token(call, u.id, u.role);
    if (out.access_token == NULL) {
        cn_call_fail(call, CAIRN__V1__CODE__INTERNAL, "internal error");
        goto out;
    }
    out.token_type = "Bearer";
    out.expires_in = auth_conf.access_ttl_s;
    out.refresh_expires_in = auth_conf.refresh_ttl_s;
    cn_series_add(outcome == AUTH_REFRESH_GRACE ? counters.refresh_grace : counters.refresh_ok, 1);
    if (outcome == AUTH_REFRESH_GRACE)
        cn_log(CN_LOG_INFO, "AUTH-REFRESH-GRACE", cn_call_request_id(call),
               "previous refresh token of family %s presented within the grace; rotated again",
               family);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_logout(Cairn__V1__Auth_Service *s, const Cairn__V1__LogoutRequest *in,
                        Cairn__V1__Empty_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__Empty out = CAIRN__V1__EMPTY__INIT;
    char hash[65];
    int rc;

    (void)s;
    /* RFC 7009: a token we do not know (or that is malformed) is not an error. */
    if (refresh_format_ok(in->refresh_token)) {
        token_hash_hex(in->refresh_token, hash);
        rc = auth_db_family_revoke(pg_of(call), hash);
        if (rc != CN_OK) {
            fail_db(call, rc, "revoke session");
            done(NULL, cd);
            return;
        }
    }
    done(&out, cd);
}

static void auth_me(Cairn__V1__Auth_Service *s, const Cairn__V1__MeRequest *in,
                    Cairn__V1__User_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p = cn_call_principal(call);
    Cairn__V1__User out = CAIRN__V1__USER__INIT;
    struct auth_user u;
    int rc;

    (void)s;
    memset(&u, 0, sizeof u);
    (void)in;
    if (p == NULL) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "authentication required");
        goto out;
    }
    rc = auth_db_user_by_id(pg_of(call), p->subject, &u);
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "user not found");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "find user");
        goto out;
    }
    user_to_proto(&u, &out);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_get_jwks(Cairn__V1__Auth_Service *s, const Cairn__V1__JwksRequest *in,
                          Cairn__V1__Jwks_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__Jwks out = CAIRN__V1__JWKS__INIT;
    const struct auth_key *keys;
    size_t n;

    (void)s;
    (void)in;
    keys = auth_keys_all(&n);
    out.keys = cn_arena_alloc(call->arena, (n ? n : 1) * sizeof *out.keys);
    for (size_t i = 0; i < n; i++) {
        Cairn__V1__Jwk *k = cn_arena_alloc(call->arena, sizeof *k);
        cairn__v1__jwk__init(k);
        k->kty = "OKP";
        k->crv = "Ed25519";
        k->x = (char *)keys[i].x;
        k->kid = (char *)keys[i].kid;
        k->alg = "EdDSA";
        k->use = "sig";
        out.keys[i] = k;
    }
    out.n_keys = n;
    done(&out, cd);
}

Cairn__V1__Auth_Service auth_service = CAIRN__V1__AUTH__INIT(auth_);

/* --- start-up and shutdown --- */

int auth_init(void)
{
    struct cn_metric *logins, *refreshes;
    struct cn_pg *pg;
    int rc;

    if (auth_conf.issuer[0] == '\0' || auth_conf.audience[0] == '\0') {
        cn_log_error("AUTH-CONF", "CAIRN_AUTH_ISSUER and CAIRN_AUTH_AUDIENCE must not be empty");
        return -1;
    }
    if (auth_conf.hash_slots + auth_conf.hash_waiters >= auth_svc.common.workers)
        cn_log_warn("AUTH-CONF",
                    "CAIRN_AUTH_HASH_SLOTS + CAIRN_AUTH_HASH_WAITERS (%lld) >= workers (%lld): "
                    "a login flood can occupy every worker",
                    (long long)(auth_conf.hash_slots + auth_conf.hash_waiters),
                    (long long)auth_svc.common.workers);

    logins = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_logins_total", "Login attempts by result",
                           "result", NULL, 0);
    counters.login_ok = cn_metric_series(logins, (const char *[]){"ok"});
    counters.login_invalid = cn_metric_series(logins, (const char *[]){"invalid"});
    counters.login_throttled = cn_metric_series(logins, (const char *[]){"throttled"});
    refreshes = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_refresh_total",
                              "Refresh attempts by result", "result", NULL, 0);
    counters.refresh_ok = cn_metric_series(refreshes, (const char *[]){"ok"});
    counters.refresh_grace = cn_metric_series(refreshes, (const char *[]){"grace"});
    counters.refresh_reuse = cn_metric_series(refreshes, (const char *[]){"reuse"});
    counters.refresh_invalid = cn_metric_series(refreshes, (const char *[]){"invalid"});

    rc = auth_password_init((int)auth_conf.hash_slots, (int)auth_conf.hash_waiters);
    if (rc != CN_OK) {
        cn_log_error("AUTH-HASH-FAIL", "cannot set up password hashing");
        return -1;
    }
    pg = cn_pg_new(auth_svc.common.pg_dsn);
    rc = auth_keys_load(pg, auth_conf.key_file);
    cn_pg_free(pg);
    if (rc != CN_OK) {
        auth_password_fini();
        return -1;
    }
    return 0;
}

void auth_fini(void)
{
    auth_keys_free();
    auth_password_fini();
}
