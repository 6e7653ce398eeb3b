/* auth_rpc.c — the handlers of cairn.v1.Auth (proto/cairn/v1/auth.proto), the service's
 * settings, and its start-up (init) and shutdown (fini).
 *
 * Each handler runs on an RPC worker with the worker's own Postgres handle and answers
 * through its closure exactly once. Errors follow one pattern: input problems are field
 * errors (INVALID_ARGUMENT), credentials problems one deliberately vague UNAUTHENTICATED,
 * a database that cannot be reached UNAVAILABLE "database unavailable", and anything
 * else INTERNAL with the detail logged (never a password, token, key or hash).
 *
 * Who may call what: the gateway sends the verified principal in the Call (subject,
 * role, scopes, key_id when the caller used an API key). Self-service RPCs act on the
 * principal's own user; ChangePassword, LogoutAll and CreateApiKey want a signed-in
 * person, not an API key. Admin RPCs check the principal's role and then the user's
 * current role in the database, so a demoted admin's unexpired token no longer works.
 * Changes worth knowing about later are written to auth.audit (audit()); a failed audit
 * write is logged and counted but never fails the call.
 *
 * Because the handler table is CAIRN__V1__AUTH__INIT(auth_), adding an RPC to auth.proto
 * without adding auth_<rpc> here fails the build. To add an RPC: declare it in the proto,
 * add the handler here and any SQL in auth_db.c, a route in gateway/routes.c, and a line
 * in README.md.
 */
#include "auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "apikey.h"
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
#define KEYS_LIVE_MAX 100 /* live API keys per user */
#define KEY_DAYS_MAX 3650
#define KEY_SCOPES_IN_MAX 64 /* entries in CreateApiKey.scopes (duplicates allowed) */
#define KEY_MINT_TRIES 3     /* a 71-bit id colliding twice is not bad luck */
#define PAGE_DEFAULT 50
#define PAGE_MAX 100
#define AUDIT_PAGE_MAX 200
#define AUDIT_ACTION_MAX 64

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
    CN_CONF(struct auth_conf, events, "CAIRN_AUTH_EVENTS", CN_CONF_STR, "tcp://127.0.0.1:7201", 0,
            0, "nng PUB address gateways subscribe to for revocations; empty = publish none"),
    CN_CONF(struct auth_conf, last_used_flush_s, "CAIRN_AUTH_LAST_USED_FLUSH_S", CN_CONF_INT, "30",
            1, 3600, "seconds between batched writes of API keys' last_used_at"),
    CN_CONF(struct auth_conf, bootstrap_email, "CAIRN_BOOTSTRAP_ADMIN_EMAIL", CN_CONF_STR, "", 0, 0,
            "with the password below: made an admin at start-up if no admin exists yet"),
    CN_CONF(struct auth_conf, bootstrap_password, "CAIRN_BOOTSTRAP_ADMIN_PASSWORD", CN_CONF_SECRET,
            "", 0, 0, "password of CAIRN_BOOTSTRAP_ADMIN_EMAIL (used only when it is created)"),
    CN_CONF(struct auth_conf, throttle_after, "CAIRN_AUTH_THROTTLE_AFTER", CN_CONF_INT, "5", 1,
            1000, "failed logins of one account before it is blocked"),
    CN_CONF(struct auth_conf, throttle_base_ms, "CAIRN_AUTH_THROTTLE_BASE_MS", CN_CONF_INT, "1000",
            1, 3600000, "first block in ms; it doubles with each further failure"),
    CN_CONF(struct auth_conf, throttle_max_s, "CAIRN_AUTH_THROTTLE_MAX_S", CN_CONF_INT, "900", 1,
            86400, "longest block in seconds"),
    CN_CONF(struct auth_conf, throttle_window_s, "CAIRN_AUTH_THROTTLE_WINDOW_S", CN_CONF_INT,
            "3600", 1, 2592000, "failed logins older than this many seconds are forgotten"),
    CN_CONF(struct auth_conf, key_publish_s, "CAIRN_AUTH_KEY_PUBLISH_S", CN_CONF_INT, "120", 1,
            86400,
            "rotate-keys: seconds a new key is published before it signs (above the "
            "gateways' JWKS refresh plus CAIRN_AUTH_KEY_RELOAD_S)"),
    CN_CONF(struct auth_conf, key_reload_s, "CAIRN_AUTH_KEY_RELOAD_S", CN_CONF_INT, "10", 1, 3600,
            "seconds between reloads of the signing keys from the database"),
    CN_CONF(struct auth_conf, key_grace_s, "CAIRN_AUTH_KEY_GRACE_S", CN_CONF_INT, "60", 0, 86400,
            "seconds a retired key stays published after its last token expired (cover the "
            "gateways' clock leeway)"),
};
const size_t auth_conf_ndefs = CN_ARRAY_LEN(auth_conf_defs);

static struct {
    struct cn_series *login_ok, *login_invalid, *login_throttled;
    struct cn_series *refresh_ok, *refresh_grace, *refresh_reuse, *refresh_invalid;
    struct cn_series *resolve_ok, *resolve_refused;
    struct cn_series *audit_failed;
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

/* Signs an access token for sub/role into the call's arena; NULL on failure (logged).
 * Its "scope" claim holds the role's scopes, space-separated. The key is the one that
 * signs now, from a snapshot held for the signature (a reload may swap keys meanwhile). */
static char *access_token(struct cn_call *call, const char *sub, const char *role)
{
    struct auth_keyset *keys = auth_keys_get();
    int64_t now_ms = cn_wall_ms(), now = now_ms / 1000;
    const struct auth_key *key = auth_keys_signing(keys, now_ms);
    struct cn_buf b = {0};
    uint8_t jti_raw[16];
    char jti[33], scope[AUTH_SCOPES_TEXT_MAX], *signed_tok = NULL, *out = NULL;

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
    auth_scopes_join(auth_role_scopes(role), scope, sizeof scope);
    cn_buf_puts(&b, ",\"scope\":");
    cn_buf_json_str(&b, scope, strlen(scope));
    cn_buf_printf(&b, ",\"iat\":%lld,\"exp\":%lld,\"jti\":\"%s\"}", (long long)now,
                  (long long)(now + auth_conf.access_ttl_s), jti);

    if (key == NULL || cn_jwt_sign(key->pkey, key->kid, "at+jwt", b.data, &signed_tok) != CN_OK) {
        cn_log(CN_LOG_ERROR, "AUTH-SIGN-FAIL", cn_call_request_id(call),
               "cannot sign an access token%s", key == NULL ? ": no key may sign now" : "");
    } else {
        out = cn_arena_strdup(call->arena, signed_tok);
        free(signed_tok);
    }
    auth_keys_put(keys);
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

/* The names in mask as a repeated string field (arena memory). */
static char **scopes_to_proto(struct cn_call *call, uint32_t mask, size_t *n)
{
    const char *names[AUTH_SCOPES_COUNT];
    char **out;

    *n = auth_scopes_names(mask, names, AUTH_SCOPES_COUNT);
    out = cn_arena_alloc(call->arena, (*n + 1) * sizeof *out);
    for (size_t i = 0; i < *n; i++)
        out[i] = (char *)names[i];
    return out;
}

static const char *client_ip(const struct cn_call *call)
{
    return call->env->client_ip != NULL ? call->env->client_ip : "";
}

/* Records an audit event for this call: the actor is the principal (none when anonymous),
 * subject the user acted upon (NULL = none), detail printf-style and never a secret. A
 * failed write is logged and counted; the caller's answer does not change. */
static void audit(struct cn_call *call, const char *action, const char *subject, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));
static void audit(struct cn_call *call, const char *action, const char *subject, const char *fmt,
                  ...)
{
    const Cairn__V1__Principal *p = cn_call_principal(call);
    struct cn_pg *pg = pg_of(call);
    char detail[512];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    rc = auth_db_audit_insert(pg, action, p != NULL ? p->subject : NULL, subject, client_ip(call),
                              cn_call_request_id(call), detail);
    if (rc != CN_OK) {
        cn_series_add(counters.audit_failed, 1);
        cn_log(CN_LOG_ERROR, "AUTH-AUDIT-FAILED", cn_call_request_id(call),
               "cannot record %s (%s, sqlstate %s): %s", action, cn_strerror(rc),
               cn_pg_sqlstate(pg), cn_pg_errmsg(pg));
    }
}

static bool is_key(const Cairn__V1__Principal *p)
{
    return p->key_id != NULL && p->key_id[0] != '\0';
}

/* The verified caller, or NULL after answering UNAUTHENTICATED. */
static const Cairn__V1__Principal *need_caller(struct cn_call *call)
{
    const Cairn__V1__Principal *p = cn_call_principal(call);

    if (p == NULL)
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "authentication required");
    return p;
}

/* The caller as a person, not an API key; NULL after answering. what says what a key may
 * not do, for the message. */
static const Cairn__V1__Principal *need_session(struct cn_call *call, const char *what)
{
    const Cairn__V1__Principal *p = need_caller(call);

    if (p != NULL && is_key(p)) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "API keys cannot %s; sign in", what);
        return NULL;
    }
    return p;
}

/* Loads the caller's user row into u; false after answering (gone, disabled, database). */
static bool load_caller(struct cn_call *call, const Cairn__V1__Principal *p, struct auth_user *u)
{
    int rc = auth_db_user_by_id(pg_of(call), p->subject, u);

    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "this account no longer exists");
        return false;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "find user");
        return false;
    }
    if (u->disabled) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "this account is disabled");
        return false;
    }
    return true;
}

/* For admin RPCs: the principal says admin, and the database still does. false after
 * answering. actor gets the admin's user row. */
static bool need_admin(struct cn_call *call, struct auth_user *actor)
{
    const Cairn__V1__Principal *p = need_caller(call);

    if (p == NULL)
        return false;
    if (p->role == NULL || strcmp(p->role, "admin") != 0) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "this needs the admin role");
        return false;
    }
    if (!load_caller(call, p, actor))
        return false;
    if (strcmp(actor->role, "admin") != 0) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "this needs the admin role");
        return false;
    }
    return true;
}

/* The page size asked for: 0 = def, else 1..max; a field error otherwise. */
static int page_limit(struct cn_call *call, int32_t asked, int def, int max)
{
    if (asked == 0)
        return def;
    if (asked < 0 || asked > max) {
        cn_call_field_error(call, "limit", "must be between 1 and %d", max);
        return def;
    }
    return (int)asked;
}

/* Decodes an optional page token into cur: returns cur, NULL when there is none (or after
 * a field error). */
static const struct auth_cursor *page_after(struct cn_call *call, const char *token,
                                            enum auth_id_kind kind, struct auth_cursor *cur)
{
    if (token == NULL || token[0] == '\0')
        return NULL;
    if (auth_page_decode(token, kind, &cur->at_us, cur->id, sizeof cur->id) != CN_OK) {
        cn_call_field_error(call, "page_token", "is not a token from a previous page of this list");
        return NULL;
    }
    return cur;
}

/* The next_page_token after the row (at_us, id), into the arena. */
static char *page_next(struct cn_call *call, int64_t at_us, const char *id)
{
    char *tok = cn_arena_alloc(call->arena, AUTH_PAGE_TOKEN_MAX + 1);

    if (auth_page_encode(at_us, id, tok, AUTH_PAGE_TOKEN_MAX + 1) != CN_OK)
        return (char *)""; /* cannot happen for our ids; the list just ends */
    return tok;
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
    audit(call, "user.created", u.id, "signed up");
    user_to_proto(&u, &out);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

/* The throttle's key for an address as typed: SHA-256 of the normalised email, or of the
 * text itself when it is not a valid address (none has an account, and it is throttled
 * all the same). The database never sees the address itself. */
static void throttle_key(const char *typed, const char *normalised, char out[65])
{
    token_hash_hex(normalised != NULL ? normalised : typed, out);
}

static void auth_login(Cairn__V1__Auth_Service *s, const Cairn__V1__LoginRequest *in,
                       Cairn__V1__TokenResponse_Closure done, void *cd)
{
    const struct auth_throttle_policy policy = {
        .after = auth_conf.throttle_after,
        .base_ms = auth_conf.throttle_base_ms,
        .max_s = auth_conf.throttle_max_s,
        .window_s = auth_conf.throttle_window_s,
    };
    struct cn_call *call = cd;
    Cairn__V1__TokenResponse out = CAIRN__V1__TOKEN_RESPONSE__INIT;
    struct auth_user u;
    char email[AUTH_EMAIL_MAX + 1], refresh_hash[65], key[65];
    const char *why, *reason = NULL;
    bool valid, found = false;
    int64_t blocked_ms = 0;
    long failures = 0;
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
    valid = auth_email_normalize(in->email, email, sizeof email, &why) == CN_OK;
    if (valid) {
        rc = auth_db_user_by_email(pg_of(call), email, &u);
        if (rc == CN_OK)
            found = true;
        else if (rc != CN_ENOTFOUND) {
            fail_db(call, rc, "find user");
            goto out;
        }
    }

    /* Per-account throttling, before any password is checked, for every address alike.
     * The attempt counts from here; a success forgets the count. Without the database
     * there is no throttle, so there is no login either. */
    throttle_key(in->email, valid ? email : NULL, key);
    rc = auth_db_throttle_claim(pg_of(call), key, &policy, &blocked_ms, &failures);
    if (rc != CN_OK) {
        if (rc != CN_EUNAVAIL)
            cn_log(CN_LOG_ERROR, "AUTH-DB-ERROR", cn_call_request_id(call),
                   "login throttle failed (%s, sqlstate %s): %s", cn_strerror(rc),
                   cn_pg_sqlstate(pg_of(call)), cn_pg_errmsg(pg_of(call)));
        cn_call_fail(call, CAIRN__V1__CODE__UNAVAILABLE, "database unavailable");
        call->retry_after_ms = THROTTLE_RETRY_MS;
        goto out;
    }
    if (blocked_ms > 0) {
        int64_t secs = (blocked_ms + 999) / 1000;
        cn_series_add(counters.login_throttled, 1);
        cn_log(CN_LOG_INFO, "AUTH-LOGIN-THROTTLED", cn_call_request_id(call),
               "login refused: %ld failed attempt(s), blocked for %lld ms more%s%s", failures,
               (long long)blocked_ms, found ? " for user " : "", found ? u.id : "");
        audit(call, "login.throttled", found ? u.id : NULL,
              "%ld failed attempt(s); blocked for %lld s more", failures, (long long)secs);
        cn_call_fail(call, CAIRN__V1__CODE__RESOURCE_EXHAUSTED,
                     "too many failed logins: retry in %lld s", (long long)secs);
        call->retry_after_ms = blocked_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)blocked_ms;
        goto out;
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
        cn_log(CN_LOG_INFO, "AUTH-LOGIN-FAIL", cn_call_request_id(call),
               "login refused: %s%s%s (failure %ld)", reason, found ? " for user " : "",
               found ? u.id : "", failures);
        /* The audit names the account when there is one; the answer never does. */
        audit(call, "login.failed", found ? u.id : NULL, "%s", reason);
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "invalid email or password");
        goto out;
    }

    rc = auth_db_throttle_clear(pg_of(call), key);
    if (rc != CN_OK) {
        fail_db(call, rc, "reset login throttle");
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
    audit(call, "login.ok", u.id, "password login");
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
    /* What the caller may do: a key's scopes as the gateway resolved them; for a token the
     * scopes it carried, or the role's for a token from before scopes existed. */
    if (is_key(p) || p->n_scopes > 0) {
        out.scopes = p->scopes;
        out.n_scopes = p->n_scopes;
    } else {
        const char *role = p->role != NULL && p->role[0] != '\0' ? p->role : u.role;
        out.scopes = scopes_to_proto(call, auth_role_scopes(role), &out.n_scopes);
    }
    out.key_id = p->key_id != NULL ? p->key_id : (char *)"";
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

/* The keys published now, copied into the call's arena so the snapshot can go back at
 * once: not retired, or retired too recently for every token they signed to have
 * expired (plus the grace). */
static void auth_get_jwks(Cairn__V1__Auth_Service *s, const Cairn__V1__JwksRequest *in,
                          Cairn__V1__Jwks_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__Jwks out = CAIRN__V1__JWKS__INIT;
    struct auth_keyset *keys = auth_keys_get();
    int64_t now_ms = cn_wall_ms(),
            keep_ms = (auth_conf.access_ttl_s + auth_conf.key_grace_s) * 1000;
    size_t n = keys != NULL ? keys->n : 0;

    (void)s;
    (void)in;
    out.keys = cn_arena_alloc(call->arena, (n ? n : 1) * sizeof *out.keys);
    for (size_t i = 0; i < n; i++) {
        const struct auth_key *key = &keys->keys[i];
        Cairn__V1__Jwk *k;

        if (!auth_key_published(key, now_ms, keep_ms))
            continue;
        k = cn_arena_alloc(call->arena, sizeof *k);
        cairn__v1__jwk__init(k);
        k->kty = "OKP";
        k->crv = "Ed25519";
        k->x = cn_arena_strdup(call->arena, key->x);
        k->kid = cn_arena_strdup(call->arena, key->kid);
        k->alg = "EdDSA";
        k->use = "sig";
        out.keys[out.n_keys++] = k;
    }
    auth_keys_put(keys);
    done(&out, cd);
}

/* --- API keys --- */

static Cairn__V1__ApiKey *api_key_to_proto(struct cn_call *call, const char *id, const char *name,
                                           uint32_t scopes, int64_t created_at_ms,
                                           int64_t last_used_at_ms, int64_t expires_at_ms)
{
    Cairn__V1__ApiKey *k = cn_arena_alloc(call->arena, sizeof *k);

    cairn__v1__api_key__init(k);
    k->id = cn_arena_strdup(call->arena, id);
    k->prefix = cn_arena_printf(call->arena, CN_APIKEY_PREFIX "%s", id);
    k->name = cn_arena_strdup(call->arena, name);
    k->scopes = scopes_to_proto(call, scopes, &k->n_scopes);
    k->created_at = created_at_ms;
    k->last_used_at = last_used_at_ms;
    k->expires_at = expires_at_ms;
    return k;
}

/* The first scope name in mask (for "scope X exceeds your role"). */
static const char *first_scope(uint32_t mask)
{
    const char *name = "";
    auth_scopes_names(mask, &name, 1);
    return name;
}

static void auth_create_api_key(Cairn__V1__Auth_Service *s,
                                const Cairn__V1__CreateApiKeyRequest *in,
                                Cairn__V1__ApiKeyCreated_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p;
    Cairn__V1__ApiKeyCreated out = CAIRN__V1__API_KEY_CREATED__INIT;
    struct cn_apikey key;
    struct auth_user u;
    char text[CN_APIKEY_LEN + 1], hash[65], joined[AUTH_SCOPES_TEXT_MAX];
    uint32_t want = 0, allowed;
    int64_t created_us = 0, expires_ms = 0;
    const char *why;
    int rc = CN_EEXIST;

    (void)s;
    memset(&u, 0, sizeof u);
    memset(&key, 0, sizeof key);
    p = need_session(call, "create API keys");
    if (p == NULL)
        goto out;
    if (auth_key_name_check(in->name, &why) != CN_OK)
        cn_call_field_error(call, "name", "%s", why);
    if (in->n_scopes > KEY_SCOPES_IN_MAX) {
        cn_call_field_error(call, "scopes", "must have at most %d entries", KEY_SCOPES_IN_MAX);
    } else {
        for (size_t i = 0; i < in->n_scopes; i++) {
            uint32_t bit = auth_scope_bit(in->scopes[i]);
            char field[32];
            if (bit == 0) {
                auth_scopes_join(AUTH_SCOPES_ALL, joined, sizeof joined);
                snprintf(field, sizeof field, "scopes[%zu]", i);
                cn_call_field_error(call, field, "unknown scope; the scopes are: %s", joined);
            }
            want |= bit;
        }
    }
    if (in->expires_in_days < 0 || in->expires_in_days > KEY_DAYS_MAX)
        cn_call_field_error(call, "expires_in_days", "must be between 0 (never) and %d",
                            KEY_DAYS_MAX);
    if (call->n_field_errors > 0)
        goto out;

    if (!load_caller(call, p, &u))
        goto out;
    allowed = auth_role_scopes(u.role);
    if (in->n_scopes == 0)
        want = allowed;
    if (want & ~allowed) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "scope %s exceeds your role",
                     first_scope(want & ~allowed));
        goto out;
    }
    if (want == 0) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED, "your role grants no scopes");
        goto out;
    }

    /* A fresh id taken already means another key has it: mint another. */
    for (int i = 0; i < KEY_MINT_TRIES && rc == CN_EEXIST; i++) {
        cn_apikey_new(&key, text);
        cn_apikey_hash(&key, hash);
        rc = auth_db_api_key_insert(pg_of(call), key.id, u.id, in->name, want, in->expires_in_days,
                                    hash, KEYS_LIVE_MAX, &created_us, &expires_ms);
    }
    if (rc == CN_EFULL) {
        cn_call_fail(call, CAIRN__V1__CODE__FAILED_PRECONDITION,
                     "you already have %d live API keys; revoke one first", KEYS_LIVE_MAX);
        goto out;
    }
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "this account no longer exists");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "create API key");
        goto out;
    }
    out.secret = cn_arena_strdup(call->arena, text);
    out.key = api_key_to_proto(call, key.id, in->name, want, created_us / 1000, 0, expires_ms);
    auth_scopes_join(want, joined, sizeof joined);
    cn_log(CN_LOG_INFO, "AUTH-KEY-CREATED", cn_call_request_id(call), "user %s created API key %s",
           u.id, key.id);
    if (in->expires_in_days > 0)
        audit(call, "api_key.created", u.id, "key %s, scopes %s, expires in %d days", key.id,
              joined, (int)in->expires_in_days);
    else
        audit(call, "api_key.created", u.id, "key %s, scopes %s, never expires", key.id, joined);
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(&key, sizeof key);
    done(&out, cd);
    return;
out:
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(&key, sizeof key);
    done(NULL, cd);
}

static void auth_list_api_keys(Cairn__V1__Auth_Service *s, const Cairn__V1__ListApiKeysRequest *in,
                               Cairn__V1__ApiKeyList_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p;
    Cairn__V1__ApiKeyList out = CAIRN__V1__API_KEY_LIST__INIT;
    const struct auth_cursor *after;
    struct auth_cursor cur;
    struct auth_api_key *rows;
    size_t n;
    int limit, rc;

    (void)s;
    p = need_caller(call);
    if (p == NULL)
        goto out;
    limit = page_limit(call, in->limit, PAGE_DEFAULT, PAGE_MAX);
    after = page_after(call, in->page_token, AUTH_ID_KEY, &cur);
    if (call->n_field_errors > 0)
        goto out;
    rc = auth_db_api_key_list(pg_of(call), call->arena, p->subject, after, limit + 1, &rows, &n);
    if (rc != CN_OK) {
        fail_db(call, rc, "list API keys");
        goto out;
    }
    if (n > (size_t)limit) {
        n = (size_t)limit;
        out.next_page_token = page_next(call, rows[n - 1].created_at_us, rows[n - 1].id);
    }
    out.keys = cn_arena_alloc(call->arena, (n + 1) * sizeof *out.keys);
    for (size_t i = 0; i < n; i++)
        out.keys[i] = api_key_to_proto(call, rows[i].id, rows[i].name, rows[i].scopes,
                                       rows[i].created_at_us / 1000, rows[i].last_used_at_ms,
                                       rows[i].expires_at_ms);
    out.n_keys = n;
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_revoke_api_key(Cairn__V1__Auth_Service *s,
                                const Cairn__V1__RevokeApiKeyRequest *in,
                                Cairn__V1__Empty_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p;
    Cairn__V1__Empty out = CAIRN__V1__EMPTY__INIT;
    int rc;

    (void)s;
    p = need_caller(call);
    if (p == NULL)
        goto out;
    if (in->id[0] == '\0') {
        cn_call_field_error(call, "id", "is required");
        goto out;
    }
    if (is_key(p) && strcmp(p->key_id, in->id) != 0) {
        cn_call_fail(call, CAIRN__V1__CODE__PERMISSION_DENIED,
                     "an API key can revoke only itself; sign in to revoke others");
        goto out;
    }
    /* Someone else's key and no key at all look the same from here. */
    rc = auth_db_api_key_revoke(pg_of(call), p->subject, in->id);
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "API key not found");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "revoke API key");
        goto out;
    }
    auth_events_revoke_key(in->id, cn_call_request_id(call));
    cn_log(CN_LOG_INFO, "AUTH-KEY-REVOKED", cn_call_request_id(call), "user %s revoked API key %s",
           p->subject, in->id);
    audit(call, "api_key.revoked", p->subject, "key %s revoked by its owner%s", in->id,
          is_key(p) ? " (with the key itself)" : "");
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

/* ResolveApiKey answers every refusal the same way, so a caller learns nothing about
 * which part was wrong; the reason goes to the log (key id only, never the key). */
static void auth_resolve_api_key(Cairn__V1__Auth_Service *s,
                                 const Cairn__V1__ResolveApiKeyRequest *in,
                                 Cairn__V1__ResolvedApiKey_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__ResolvedApiKey out = CAIRN__V1__RESOLVED_API_KEY__INIT;
    struct auth_key_check c;
    struct cn_apikey key;
    const char *reason = NULL;
    char hash[65];
    int rc;

    (void)s;
    memset(&c, 0, sizeof c);
    memset(&key, 0, sizeof key);
    if (cn_apikey_parse(in->key, strlen(in->key), &key) != CN_OK) {
        reason = "not a well-formed key (format or checksum)";
        goto refuse;
    }
    rc = auth_db_api_key_lookup(pg_of(call), key.id, &c);
    if (rc == CN_ENOTFOUND) {
        reason = "unknown key id";
        goto refuse;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "look up API key");
        goto out;
    }
    cn_apikey_hash(&key, hash);
    /* The secret first, in constant time: its state is nobody's business without it. */
    if (strlen(c.secret_hash) != 64 || CRYPTO_memcmp(hash, c.secret_hash, 64) != 0)
        reason = "wrong secret";
    else if (c.revoked)
        reason = "revoked";
    else if (c.expired)
        reason = "expired";
    else if (c.disabled)
        reason = "owner disabled";
    if (reason != NULL)
        goto refuse;

    out.subject = cn_arena_strdup(call->arena, c.user_id);
    out.role = cn_arena_strdup(call->arena, c.role);
    out.scopes = scopes_to_proto(call, c.scopes & auth_role_scopes(c.role), &out.n_scopes);
    out.key_id = cn_arena_strdup(call->arena, key.id);
    out.expires_at = c.expires_at_ms;
    auth_lastused_record(key.id, cn_wall_ms());
    cn_series_add(counters.resolve_ok, 1);
    OPENSSL_cleanse(&key, sizeof key);
    done(&out, cd);
    return;

refuse:
    cn_series_add(counters.resolve_refused, 1);
    cn_log(CN_LOG_INFO, "AUTH-KEY-REFUSED", cn_call_request_id(call), "API key %s refused: %s",
           key.id[0] != '\0' ? key.id : "(unparsed)", reason);
    cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "invalid API key");
out:
    OPENSSL_cleanse(&key, sizeof key);
    done(NULL, cd);
}

/* --- self-service --- */

static void auth_change_password(Cairn__V1__Auth_Service *s,
                                 const Cairn__V1__ChangePasswordRequest *in,
                                 Cairn__V1__Empty_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p;
    Cairn__V1__Empty out = CAIRN__V1__EMPTY__INIT;
    struct auth_user u;
    char hash[AUTH_HASH_MAX];
    const char *why;
    long sessions = 0;
    int rc;

    (void)s;
    memset(&u, 0, sizeof u);
    hash[0] = '\0';
    p = need_session(call, "change passwords");
    if (p == NULL)
        goto out;
    if (in->current_password[0] == '\0')
        cn_call_field_error(call, "current_password", "is required");
    if (auth_password_check(in->new_password, &why) != CN_OK)
        cn_call_field_error(call, "new_password", "%s", why);
    if (call->n_field_errors > 0)
        goto out;
    if (!load_caller(call, p, &u))
        goto out;

    rc = auth_password_verify(u.password_hash, in->current_password, hash_wait_ms(call));
    if (rc == CN_EFULL || rc == CN_ETIMEDOUT) {
        fail_hash(call, rc, "too many password checks in progress");
        goto out;
    }
    if (rc != CN_OK) {
        cn_log(CN_LOG_INFO, "AUTH-PASSWORD-WRONG", cn_call_request_id(call),
               "password change refused for user %s: wrong current password", u.id);
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "current password is wrong");
        goto out;
    }
    rc = auth_password_hash(in->new_password, hash_wait_ms(call), hash, sizeof hash);
    if (rc != CN_OK) {
        fail_hash(call, rc, "too many password checks in progress");
        goto out;
    }
    rc = auth_db_password_set(pg_of(call), u.id, hash, &sessions);
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__UNAUTHENTICATED, "this account no longer exists");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "set password");
        goto out;
    }
    cn_log(CN_LOG_INFO, "AUTH-PASSWORD-CHANGED", cn_call_request_id(call),
           "user %s changed their password; %ld session(s) ended", u.id, sessions);
    audit(call, "password.changed", u.id, "%ld session(s) ended", sessions);
    OPENSSL_cleanse(hash, sizeof hash);
    done(&out, cd);
    return;
out:
    OPENSSL_cleanse(hash, sizeof hash);
    done(NULL, cd);
}

static void auth_logout_all(Cairn__V1__Auth_Service *s, const Cairn__V1__LogoutAllRequest *in,
                            Cairn__V1__Empty_Closure done, void *cd)
{
    struct cn_call *call = cd;
    const Cairn__V1__Principal *p;
    Cairn__V1__Empty out = CAIRN__V1__EMPTY__INIT;
    long n = 0;
    int rc;

    (void)s;
    (void)in;
    p = need_session(call, "end sessions");
    if (p == NULL)
        goto out;
    rc = auth_db_sessions_revoke_user(pg_of(call), p->subject, &n);
    if (rc != CN_OK && rc != CN_ENOTFOUND) {
        fail_db(call, rc, "revoke sessions");
        goto out;
    }
    cn_log(CN_LOG_INFO, "AUTH-LOGOUT-ALL", cn_call_request_id(call),
           "user %s ended all sessions (%ld)", p->subject, n);
    audit(call, "logout.all", p->subject, "%ld session(s) ended", n);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

/* --- administration --- */

static void auth_list_users(Cairn__V1__Auth_Service *s, const Cairn__V1__ListUsersRequest *in,
                            Cairn__V1__UserList_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__UserList out = CAIRN__V1__USER_LIST__INIT;
    const struct auth_cursor *after;
    struct auth_cursor cur;
    struct auth_user actor, *rows;
    char like[2 * AUTH_EMAIL_MAX + 1];
    size_t n;
    int limit, rc;

    (void)s;
    if (!need_admin(call, &actor))
        goto out;
    if (!auth_text_ok(in->email, AUTH_EMAIL_MAX) ||
        auth_like_escape(in->email, like, sizeof like) != CN_OK)
        cn_call_field_error(call, "email", "must be at most %d characters of valid UTF-8",
                            AUTH_EMAIL_MAX);
    limit = page_limit(call, in->limit, PAGE_DEFAULT, PAGE_MAX);
    after = page_after(call, in->page_token, AUTH_ID_UUID, &cur);
    if (call->n_field_errors > 0)
        goto out;
    rc = auth_db_user_list(pg_of(call), call->arena, in->email[0] != '\0' ? like : NULL, after,
                           limit + 1, &rows, &n);
    if (rc != CN_OK) {
        fail_db(call, rc, "list users");
        goto out;
    }
    if (n > (size_t)limit) {
        n = (size_t)limit;
        out.next_page_token = page_next(call, rows[n - 1].created_at_us, rows[n - 1].id);
    }
    out.users = cn_arena_alloc(call->arena, (n + 1) * sizeof *out.users);
    for (size_t i = 0; i < n; i++) {
        out.users[i] = cn_arena_alloc(call->arena, sizeof *out.users[i]);
        cairn__v1__user__init(out.users[i]);
        user_to_proto(&rows[i], out.users[i]);
    }
    out.n_users = n;
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

static void auth_update_user(Cairn__V1__Auth_Service *s, const Cairn__V1__UpdateUserRequest *in,
                             Cairn__V1__User_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__User out = CAIRN__V1__USER__INIT;
    struct auth_user actor, before, after;
    struct cn_buf detail = {0};
    char **keys = NULL;
    size_t nkeys = 0;
    int disabled = -1, rc;

    (void)s;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    if (!need_admin(call, &actor))
        goto out;
    if (in->role[0] != '\0' && !auth_role_valid(in->role)) {
        cn_call_field_error(call, "role", "must be \"user\" or \"admin\" (or empty to keep it)");
        goto out;
    }
    if (!auth_id_valid(AUTH_ID_UUID, in->id)) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "user not found");
        goto out;
    }
    if (in->disabled_opt_case == CAIRN__V1__UPDATE_USER_REQUEST__DISABLED_OPT_DISABLED)
        disabled = in->disabled ? 1 : 0;
    /* The last admin standing must not be able to lock everyone out by accident. */
    if (strcasecmp(in->id, actor.id) == 0 &&
        ((in->role[0] != '\0' && strcmp(in->role, "admin") != 0) || disabled == 1)) {
        cn_call_fail(call, CAIRN__V1__CODE__FAILED_PRECONDITION,
                     "you cannot remove your own admin role or disable yourself");
        goto out;
    }
    rc =
        auth_db_user_update(pg_of(call), call->arena, in->id, in->role[0] != '\0' ? in->role : NULL,
                            disabled, &before, &after, &keys, &nkeys);
    if (rc == CN_ENOTFOUND) {
        cn_call_fail(call, CAIRN__V1__CODE__NOT_FOUND, "user not found");
        goto out;
    }
    if (rc != CN_OK) {
        fail_db(call, rc, "update user");
        goto out;
    }
    /* Committed: tell the gateways, then remember. */
    if (disabled == 1) {
        auth_events_revoke_user(after.id, cn_call_request_id(call));
        for (size_t i = 0; i < nkeys; i++)
            auth_events_revoke_key(keys[i], cn_call_request_id(call));
    } else if (before.disabled && !after.disabled) {
        auth_events_enable_user(after.id, cn_call_request_id(call));
    }
    if (strcmp(before.role, after.role) != 0)
        cn_buf_printf(&detail, "role %s->%s", before.role, after.role);
    if (before.disabled != after.disabled)
        cn_buf_printf(&detail, "%sdisabled %s->%s", detail.len > 0 ? ", " : "",
                      before.disabled ? "true" : "false", after.disabled ? "true" : "false");
    if (detail.len == 0)
        cn_buf_puts(&detail, "no change");
    if (disabled == 1)
        cn_buf_printf(&detail, "; sessions and %zu live API key(s) revoked", nkeys);
    cn_log(CN_LOG_INFO, "AUTH-USER-UPDATED", cn_call_request_id(call),
           "admin %s updated user %s: %s", actor.id, after.id, detail.data);
    audit(call, "user.updated", after.id, "%s", detail.data);
    cn_buf_free(&detail);
    user_to_proto(&after, &out);
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

/* An action filter is one of our action names: lowercase letters, digits, '.', '_', '-'. */
static bool action_ok(const char *a)
{
    size_t n = strlen(a);
    return n <= AUDIT_ACTION_MAX && strspn(a, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static void auth_list_audit(Cairn__V1__Auth_Service *s, const Cairn__V1__ListAuditRequest *in,
                            Cairn__V1__AuditList_Closure done, void *cd)
{
    struct cn_call *call = cd;
    Cairn__V1__AuditList out = CAIRN__V1__AUDIT_LIST__INIT;
    const struct auth_cursor *after;
    struct auth_cursor cur;
    struct auth_audit_event *rows;
    struct auth_user actor;
    size_t n;
    int limit, rc;

    (void)s;
    if (!need_admin(call, &actor))
        goto out;
    if (in->subject[0] != '\0' && !auth_id_valid(AUTH_ID_UUID, in->subject))
        cn_call_field_error(call, "subject", "must be a user id");
    if (!action_ok(in->action))
        cn_call_field_error(call, "action", "must be an action name such as login.failed");
    limit = page_limit(call, in->limit, PAGE_DEFAULT, AUDIT_PAGE_MAX);
    after = page_after(call, in->page_token, AUTH_ID_SERIAL, &cur);
    if (call->n_field_errors > 0)
        goto out;
    rc = auth_db_audit_list(pg_of(call), call->arena, in->subject[0] != '\0' ? in->subject : NULL,
                            in->action[0] != '\0' ? in->action : NULL, after, limit + 1, &rows, &n);
    if (rc != CN_OK) {
        fail_db(call, rc, "list audit events");
        goto out;
    }
    if (n > (size_t)limit) {
        n = (size_t)limit;
        out.next_page_token = page_next(call, rows[n - 1].at_us, rows[n - 1].id);
    }
    out.events = cn_arena_alloc(call->arena, (n + 1) * sizeof *out.events);
    for (size_t i = 0; i < n; i++) {
        Cairn__V1__AuditEvent *e = cn_arena_alloc(call->arena, sizeof *e);
        cairn__v1__audit_event__init(e);
        e->id = rows[i].id;
        e->at = rows[i].at_us / 1000;
        e->action = (char *)rows[i].action;
        e->actor = (char *)rows[i].actor;
        e->subject = (char *)rows[i].subject;
        e->ip = (char *)rows[i].ip;
        e->request_id = (char *)rows[i].request_id;
        e->detail = (char *)rows[i].detail;
        out.events[i] = e;
    }
    out.n_events = n;
    done(&out, cd);
    return;
out:
    done(NULL, cd);
}

Cairn__V1__Auth_Service auth_service = CAIRN__V1__AUTH__INIT(auth_);

/* --- start-up and shutdown --- */

int auth_init(void)
{
    struct cn_metric *logins, *refreshes, *resolves, *audits;
    int64_t keep_s = auth_conf.access_ttl_s + auth_conf.key_grace_s;
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
    if (auth_conf.key_file[0] == '\0' && auth_conf.key_publish_s <= auth_conf.key_reload_s)
        cn_log_warn("AUTH-CONF",
                    "CAIRN_AUTH_KEY_PUBLISH_S (%lld) <= CAIRN_AUTH_KEY_RELOAD_S (%lld): a rotated "
                    "key may sign before every replica publishes it",
                    (long long)auth_conf.key_publish_s, (long long)auth_conf.key_reload_s);

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
    resolves = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_api_key_resolves_total",
                             "ResolveApiKey calls by result", "result", NULL, 0);
    counters.resolve_ok = cn_metric_series(resolves, (const char *[]){"ok"});
    counters.resolve_refused = cn_metric_series(resolves, (const char *[]){"refused"});
    audits = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_audit_failures_total",
                           "Audit events that could not be written", NULL, NULL, 0);
    counters.audit_failed = cn_metric_series(audits, NULL);

    rc = auth_password_init((int)auth_conf.hash_slots, (int)auth_conf.hash_waiters);
    if (rc != CN_OK) {
        cn_log_error("AUTH-HASH-FAIL", "cannot set up password hashing");
        return -1;
    }
    pg = cn_pg_new(auth_svc.common.pg_dsn);
    rc = auth_keys_load(pg, auth_conf.key_file, keep_s);
    if (rc == CN_OK && auth_bootstrap_admin(pg) != 0)
        rc = CN_EINVAL;
    cn_pg_free(pg);
    if (rc != CN_OK)
        goto fail;
    rc = auth_events_start(auth_conf.events);
    if (rc != CN_OK)
        goto fail;
    rc = auth_keys_start(auth_svc.common.pg_dsn, auth_conf.key_reload_s, keep_s);
    if (rc != CN_OK)
        goto fail;
    rc = auth_lastused_start(auth_svc.common.pg_dsn, auth_conf.last_used_flush_s,
                             auth_conf.throttle_window_s);
    if (rc != CN_OK)
        goto fail;
    return 0;

fail:
    auth_keys_stop();
    auth_events_stop();
    auth_keys_free();
    auth_password_fini();
    return -1;
}

/* After the RPC server stopped: no handler records a key use or publishes any more. */
void auth_fini(void)
{
    auth_lastused_stop();
    auth_keys_stop();
    auth_events_stop();
    auth_keys_free();
    auth_password_fini();
}
