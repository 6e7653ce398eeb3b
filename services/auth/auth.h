/* auth.h — the cairn-auth service's own cross-file names (not part of libcairn).
 *
 * main.c fills auth_svc; auth_rpc.c has the handlers, init and fini; auth_db.c holds
 * every SQL statement; auth_keys.c the Ed25519 signing keys and JWKS; auth_password.c
 * the Argon2id pool and the email/password/key-name rules; auth_scopes.c scopes and
 * roles; auth_page.c page tokens, id shapes and LIKE escaping; auth_events.c the
 * revocation publisher; auth_lastused.c the batched last_used_at and the housekeeping
 * thread; auth_admin.c the create-admin command and the bootstrap admin. Keys rotate
 * with `cairn-auth rotate-keys` (auth_keys.c), and a thread there reloads them. To add a
 * setting: a field in struct auth_conf, a row in auth_conf_defs (auth_rpc.c), a line in
 * README.md.
 */
#ifndef AUTH_H
#define AUTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "apikey.h"
#include "cairn/v1/auth.pb-c.h"
#include "conf.h"
#include "pg.h"
#include "svc.h"

/* --- settings and service (main.c, auth_rpc.c) --- */

struct auth_conf {
    const char *issuer;
    const char *audience;
    const char *key_file;
    int64_t access_ttl_s;
    int64_t refresh_ttl_s;
    int64_t reuse_grace_s;
    int64_t hash_slots;
    int64_t hash_waiters;
    const char *events;
    int64_t last_used_flush_s;
    const char *bootstrap_email;
    const char *bootstrap_password;
    int64_t throttle_after;
    int64_t throttle_base_ms;
    int64_t throttle_max_s;
    int64_t throttle_window_s;
    int64_t key_publish_s;
    int64_t key_reload_s;
    int64_t key_grace_s;
};

extern struct auth_conf auth_conf;
extern const struct cn_conf_def auth_conf_defs[];
extern const size_t auth_conf_ndefs;
extern Cairn__V1__Auth_Service auth_service;
extern struct cn_svc auth_svc;
extern const struct cn_migration auth_migrations[];
extern const unsigned auth_migrations_count;

int auth_init(void);
void auth_fini(void);

/* --- scopes and roles (auth_scopes.c) --- */

enum {
    AUTH_SCOPE_MODELS_READ = 1u << 0,
    AUTH_SCOPE_MODELS_WRITE = 1u << 1,
    AUTH_SCOPE_PREDICT = 1u << 2,
    AUTH_SCOPE_JOBS_READ = 1u << 3,
    AUTH_SCOPE_JOBS_WRITE = 1u << 4,
    AUTH_SCOPE_FEATURES_READ = 1u << 5,
    AUTH_SCOPE_FEATURES_WRITE = 1u << 6,
    AUTH_SCOPE_COSTS_READ = 1u << 7,
    AUTH_SCOPE_ADMIN = 1u << 8,
};
#define AUTH_SCOPES_ALL ((1u << 9) - 1)
#define AUTH_SCOPES_COUNT 9
#define AUTH_SCOPES_TEXT_MAX 160 /* every name, separated, framed, with a NUL */

/* The bit of one scope name, 0 if it is not a scope. */
uint32_t auth_scope_bit(const char *name);
/* true for "user" and "admin". */
bool auth_role_valid(const char *role);
/* The scopes a role grants: user = all but admin, admin = all, anything else none. */
uint32_t auth_role_scopes(const char *role);
/* Points out[0..] at the (static) names in mask, in table order; returns how many. */
size_t auth_scopes_names(uint32_t mask, const char **out, size_t cap);
/* "models:read predict ..." (the "scope" claim) into out (cap >= AUTH_SCOPES_TEXT_MAX). */
void auth_scopes_join(uint32_t mask, char *out, size_t cap);
/* "{models:read,predict}" (a text[] literal) into out (cap >= AUTH_SCOPES_TEXT_MAX). */
void auth_scopes_pg_array(uint32_t mask, char *out, size_t cap);
/* The mask of the space-separated names in s; *unknown (may be NULL) gets the number of
 * words that are not scopes (they are left out). */
uint32_t auth_scopes_parse(const char *s, uint32_t *unknown);

/* --- list helpers (auth_page.c) --- */

#define AUTH_PAGE_TOKEN_MAX 100 /* longest token accepted; ours are <= 76 characters */

enum auth_id_kind {
    AUTH_ID_UUID,   /* users: 36-character uuid text */
    AUTH_ID_KEY,    /* API keys: CN_APIKEY_ID_LEN base62 characters */
    AUTH_ID_SERIAL, /* audit events: a positive bigint in decimal */
};

/* true if s has the shape of an id of this kind (and so is safe to cast in SQL). */
bool auth_id_valid(enum auth_id_kind kind, const char *s);
/* The token for "after (at_us, id)" into out (cap >= AUTH_PAGE_TOKEN_MAX + 1). 0 or
 * CN_ETOOBIG. */
int auth_page_encode(int64_t at_us, const char *id, char *out, size_t cap);
/* Decodes a token made by auth_page_encode for ids of kind; 0, or CN_EINVAL for
 * anything else (bad base64url, bad number, an id of another shape, too long). */
int auth_page_decode(const char *token, enum auth_id_kind kind, int64_t *at_us, char *id,
                     size_t idcap);
/* Copies in into out with LIKE's wildcards (% _ and the escape \) escaped by a
 * backslash, so they match themselves. 0, or CN_ETOOBIG (cap >= 2 * strlen(in) + 1 is
 * always enough). */
int auth_like_escape(const char *in, char *out, size_t cap);

/* --- revocation events (auth_events.c) --- */

/* Opens the PUB socket and listens on addr ("" = publish nothing). 0; CN_EINVAL for an
 * address that can never work; a listen that may work later is retried, not an error. */
int auth_events_start(const char *addr);
/* Tries to listen again if the last attempt failed (housekeeping thread). */
void auth_events_retry(void);
void auth_events_stop(void);
/* Publish "revoke-key <id>" / "revoke-user <id>" / "enable-user <id>"; never fail the
 * caller. */
void auth_events_revoke_key(const char *key_id, const char *request_id);
void auth_events_revoke_user(const char *user_id, const char *request_id);
void auth_events_enable_user(const char *user_id, const char *request_id);

/* --- last_used_at batching and housekeeping (auth_lastused.c) --- */

/* Starts the housekeeping thread (its own Postgres handle on dsn), flushing every
 * period_s and purging login throttles older than throttle_window_s. 0 or CN_EIO. */
int auth_lastused_start(const char *dsn, int64_t period_s, int64_t throttle_window_s);
/* Stops the thread and flushes what is left. Safe when never started. */
void auth_lastused_stop(void);
/* Notes that key_id was used at now_ms (unix ms). Never blocks on the database. */
void auth_lastused_record(const char *key_id, int64_t now_ms);

/* --- first admin (auth_admin.c) --- */

/* `cairn-auth create-admin --email X` and `cairn-auth rotate-keys`: svc's command hook. */
int auth_command(int argc, char **argv);
/* At init: creates CAIRN_BOOTSTRAP_ADMIN_EMAIL when no admin exists. 0, or -1 (logged). */
int auth_bootstrap_admin(struct cn_pg *pg);

/* --- passwords and emails (auth_password.c) --- */

#define AUTH_EMAIL_MAX 254
#define AUTH_PASSWORD_MIN 12 /* Unicode code points */
#define AUTH_PASSWORD_MAX 1024
#define AUTH_HASH_MAX 256 /* an encoded Argon2id string (ours are ~97 chars) */

/* Trims, lowercases and validates in; writes the normalised address into out (cap >=
 * AUTH_EMAIL_MAX + 1). Returns 0, or CN_EINVAL with *why set to a static sentence that
 * says what is wrong. */
int auth_email_normalize(const char *in, char *out, size_t cap, const char **why);
/* Checks the password rules (valid UTF-8, 12..1024 code points). 0 or CN_EINVAL + why. */
int auth_password_check(const char *pw, const char **why);

#define AUTH_KEY_NAME_MAX 100 /* code points */
/* Checks an API key name: valid UTF-8, 1..100 code points, no control characters, not
 * only spaces. 0 or CN_EINVAL + why. */
int auth_key_name_check(const char *name, const char **why);
/* true if s is valid UTF-8 of at most max code points. */
bool auth_text_ok(const char *s, long max);

/* Sets up the hashing pool (at most slots hashes at once, at most waiters callers
 * waiting) and the dummy hash used for unknown users. 0 or CN_ECRYPTO. */
int auth_password_init(int slots, int waiters);
void auth_password_fini(void);
/* Hashes pw into out (cap >= AUTH_HASH_MAX), waiting at most wait_ms for a slot.
 * Returns 0; CN_EFULL when too many callers already wait; CN_ETIMEDOUT when no slot
 * came free in time; CN_ECRYPTO if libargon2 failed. */
int auth_password_hash(const char *pw, int64_t wait_ms, char *out, size_t cap);
/* Verifies pw against encoded (NULL = against the dummy hash, taking the same time, for
 * users that do not exist). Returns 0 on a match, CN_EDENIED on a mismatch (always for
 * the dummy), or CN_EFULL / CN_ETIMEDOUT as above. */
int auth_password_verify(const char *encoded, const char *pw, int64_t wait_ms);

/* --- signing keys (auth_keys.c) --- */

#define AUTH_KEYS_MAX 16 /* keys a snapshot holds: published ones, newest activation first */

struct auth_key {
    char kid[44];
    char x[44]; /* base64url public key */
    EVP_PKEY *pkey;
    int64_t activates_at_ms; /* unix ms it may sign from; 0 = always */
    int64_t retired_at_ms;   /* unix ms it stops signing; 0 = not retired */
};

/* An immutable snapshot of the keys, shared by reference: a reload swaps in a new one
 * and the old one is freed when its last user puts it back. */
struct auth_keyset {
    atomic_int refs;
    size_t n;
    struct auth_key keys[AUTH_KEYS_MAX];
};

/* Loads the keys from CAIRN_AUTH_KEY_FILE when set, else the published ones from Postgres
 * (making one on first start; keep_s as for auth_keys_start). Called once, in init. 0, or
 * a CN_E* (logged). */
int auth_keys_load(struct cn_pg *pg, const char *key_file, int64_t keep_s);
/* Starts the thread that reloads the keys from Postgres (own handle on dsn) every
 * reload_s, deleting rows that are no longer published (retired more than keep_s ago).
 * Does nothing when the keys came from a file. 0 or CN_EIO. */
int auth_keys_start(const char *dsn, int64_t reload_s, int64_t keep_s);
/* Stops the reload thread; safe when never started. */
void auth_keys_stop(void);
/* Drops the current snapshot (after auth_keys_stop, when no worker holds one). */
void auth_keys_free(void);
/* A reference to the current snapshot (NULL before load); give it back with
 * auth_keys_put. Never blocks on the database. */
struct auth_keyset *auth_keys_get(void);
void auth_keys_put(struct auth_keyset *ks);
/* The key of ks that signs at now_ms: of those activated and not yet retired, the one
 * activated last. Borrowed from ks; NULL if none may sign. */
const struct auth_key *auth_keys_signing(const struct auth_keyset *ks, int64_t now_ms);
/* Whether k is in JWKS at now_ms: not retired, or retired less than keep_ms ago (long
 * enough for every token it signed to expire). */
bool auth_key_published(const struct auth_key *k, int64_t now_ms, int64_t keep_ms);
/* `cairn-auth rotate-keys` on the database at dsn: publishes a new key that signs
 * publish_s from now and retires the current ones then; prints what it did. Returns the
 * exit code: 0, 1 (database), 2 (usage, or key_file set: the file is the key). */
int auth_keys_rotate_command(int argc, char **argv, const char *dsn, const char *key_file,
                             int64_t publish_s);

/* --- storage (auth_db.c): returns 0, CN_ENOTFOUND, CN_EEXIST, CN_EFULL, CN_EUNAVAIL or
 * CN_EDB --- */

struct cn_arena;

struct auth_user {
    char id[37];
    char email[AUTH_EMAIL_MAX + 1];
    char role[32];
    bool disabled;
    int64_t created_at_ms;
    int64_t created_at_us;             /* the same instant, exactly: for page tokens */
    char password_hash[AUTH_HASH_MAX]; /* "" in lists */
};

/* A signing key as stored. */
struct auth_db_key {
    char kid[44];
    uint8_t priv[32];
    int64_t activates_at_ms;
    int64_t retired_at_ms; /* 0 = null */
};

int auth_db_user_insert(struct cn_pg *pg, const char *email, const char *password_hash,
                        struct auth_user *out);
int auth_db_user_by_email(struct cn_pg *pg, const char *email, struct auth_user *out);
int auth_db_user_by_id(struct cn_pg *pg, const char *id, struct auth_user *out);

/* Starts a refresh family for user_id with its first token (SHA-256 as 64 hex). */
int auth_db_session_create(struct cn_pg *pg, const char *user_id, const char *token_hash_hex,
                           int64_t ttl_s);

enum auth_refresh_outcome {
    AUTH_REFRESH_OK,      /* rotated */
    AUTH_REFRESH_GRACE,   /* the previous token again, within the grace: rotated again */
    AUTH_REFRESH_REUSE,   /* an old token: the family is now revoked */
    AUTH_REFRESH_INVALID, /* unknown, expired, revoked family, or user disabled/gone */
};

/* Rotates the token whose hash is old_hex to new_hex (see auth_rpc.c for the rules).
 * On 0, *outcome says what happened; for OK and GRACE, user has id and role; family_id
 * (37 bytes) is filled whenever the token was known. */
int auth_db_refresh_rotate(struct cn_pg *pg, const char *old_hex, const char *new_hex,
                           int64_t ttl_s, int64_t grace_s, enum auth_refresh_outcome *outcome,
                           struct auth_user *user, char *family_id);
/* Revokes the family of the token with this hash; an unknown token is fine (0). */
int auth_db_family_revoke(struct cn_pg *pg, const char *token_hash_hex);

/* Revokes every live refresh family of user_id; *n (may be NULL) gets how many. */
int auth_db_sessions_revoke_user(struct cn_pg *pg, const char *user_id, long *n);
/* Stores a new password hash and revokes every refresh family of the user, atomically.
 * CN_ENOTFOUND if there is no such user. *sessions gets the families revoked. */
int auth_db_password_set(struct cn_pg *pg, const char *user_id, const char *password_hash,
                         long *sessions);

/* Where a page starts: after the row (at_us, id) in newest-first order. */
struct auth_cursor {
    int64_t at_us;
    char id[40];
};

/* Up to limit users, newest first, after `after` (NULL = from the newest), whose email
 * matches the LIKE pattern email_like (NULL = all; already escaped). *out is in a. */
int auth_db_user_list(struct cn_pg *pg, struct cn_arena *a, const char *email_like,
                      const struct auth_cursor *after, int limit, struct auth_user **out,
                      size_t *n);

/* Changes role (NULL = unchanged) and disabled (-1 = unchanged, 0, 1) of user id in one
 * transaction; when that disables the user, also revokes all their refresh families and
 * API keys. before/after get the user either side; *keys (in a) the ids of the API keys
 * this revoked that had not expired, for publishing. CN_ENOTFOUND for no such user. */
int auth_db_user_update(struct cn_pg *pg, struct cn_arena *a, const char *id, const char *role,
                        int disabled, struct auth_user *before, struct auth_user *after,
                        char ***keys, size_t *nkeys);

/* Whether any user has role admin. */
int auth_db_admin_exists(struct cn_pg *pg, bool *exists);

enum auth_admin_outcome {
    AUTH_ADMIN_CREATED,  /* a new user with role admin */
    AUTH_ADMIN_PROMOTED, /* an existing user now has role admin */
    AUTH_ADMIN_UPDATED,  /* already an admin: password (if given) set, enabled */
    AUTH_ADMIN_SKIPPED,  /* only_if_none, and an admin exists: nothing changed */
};

/* Makes email an enabled admin, under an advisory lock so replicas and commands do not
 * race: creates it (password_hash required, else CN_ENOTFOUND) or promotes it (setting
 * the password only if password_hash is not NULL). With only_if_none, does nothing when
 * an admin exists. out gets the user (not for SKIPPED). */
int auth_db_admin_ensure(struct cn_pg *pg, const char *email, const char *password_hash,
                         bool only_if_none, enum auth_admin_outcome *outcome,
                         struct auth_user *out);

/* --- API keys (auth_db.c) --- */

/* An API key as lists show it (never its secret or hash). */
struct auth_api_key {
    char id[CN_APIKEY_ID_LEN + 1];
    const char *name; /* in the list's arena */
    uint32_t scopes;
    int64_t created_at_us;
    int64_t last_used_at_ms; /* 0 = never */
    int64_t expires_at_ms;   /* 0 = never */
};

/* What ResolveApiKey checks, in one lookup. */
struct auth_key_check {
    char user_id[37];
    char role[32];   /* the owner's current role */
    uint32_t scopes; /* as stored, not yet cut to the role */
    char secret_hash[65];
    int64_t expires_at_ms;
    bool expired, revoked, disabled;
};

/* Stores a key for user_id unless they already have max_live keys that are neither
 * revoked nor expired (CN_EFULL); the user row is locked meanwhile, so concurrent
 * creations cannot pass the limit together. expires_in_days 0 = never. CN_EEXIST when the
 * id is taken (mint another), CN_ENOTFOUND when the user is gone. *created_at_us and
 * *expires_at_ms (0 = never) get what was stored. */
int auth_db_api_key_insert(struct cn_pg *pg, const char *id, const char *user_id, const char *name,
                           uint32_t scopes, int expires_in_days, const char *secret_hash_hex,
                           int max_live, int64_t *created_at_us, int64_t *expires_at_ms);
/* Up to limit of user_id's keys that are not revoked, newest first, after `after`. */
int auth_db_api_key_list(struct cn_pg *pg, struct cn_arena *a, const char *user_id,
                         const struct auth_cursor *after, int limit, struct auth_api_key **out,
                         size_t *n);
/* Revokes user_id's key id. CN_ENOTFOUND if it is not theirs or already revoked. */
int auth_db_api_key_revoke(struct cn_pg *pg, const char *user_id, const char *id);
/* The key id with its owner. CN_ENOTFOUND if there is no such key. */
int auth_db_api_key_lookup(struct cn_pg *pg, const char *id, struct auth_key_check *out);
/* Sets last_used_at of each ids[i] to ms[i] (unix ms) unless it is already later. */
int auth_db_api_key_touch(struct cn_pg *pg, const char *const *ids, const int64_t *ms, size_t n);

/* --- audit (auth_db.c) --- */

struct auth_audit_event {
    char id[24];
    int64_t at_us;
    const char *action, *actor, *subject, *ip, *request_id, *detail; /* in the arena; "" = null */
};

/* Appends an event. actor and subject are uuids or NULL; ip and request_id are cut to
 * 100 and 128 characters. */
int auth_db_audit_insert(struct cn_pg *pg, const char *action, const char *actor,
                         const char *subject, const char *ip, const char *request_id,
                         const char *detail);
/* Up to limit events, newest first, after `after`, optionally only about subject and/or
 * of one action (NULL = any). */
int auth_db_audit_list(struct cn_pg *pg, struct cn_arena *a, const char *subject,
                       const char *action, const struct auth_cursor *after, int limit,
                       struct auth_audit_event **out, size_t *n);

/* --- signing keys (auth_db.c) --- */

/* Under a transaction-level advisory lock: stores fresh (signing from now) unless a key
 * that is not retired exists, then returns the published keys (not retired, or retired
 * less than keep_s ago), newest activation first, up to cap. */
int auth_db_keys_ensure(struct cn_pg *pg, const struct auth_db_key *fresh, int64_t keep_s,
                        struct auth_db_key *out, size_t cap, size_t *n);
/* Deletes the keys retired at least keep_s ago (*deleted gets how many), then returns the
 * published ones as auth_db_keys_ensure does. */
int auth_db_keys_load(struct cn_pg *pg, int64_t keep_s, struct auth_db_key *out, size_t cap,
                      size_t *n, long *deleted);

/* What a rotation did. */
struct auth_rotation {
    int64_t activates_at_ms;         /* when the new key signs from */
    bool immediate;                  /* no key was current: the new one signs at once */
    char retired[AUTH_KEYS_MAX][44]; /* the keys that retire at activates_at */
    size_t nretired;                 /* how many retired (may exceed AUTH_KEYS_MAX) */
};

/* Under the same advisory lock: stores fresh with activates_at = now + publish_s (now
 * when no key is current) and sets retired_at = that time on every key not yet retired.
 * CN_EEXIST if fresh's kid is taken. */
int auth_db_keys_rotate(struct cn_pg *pg, const struct auth_db_key *fresh, int64_t publish_s,
                        struct auth_rotation *out);

/* --- login throttling (auth_db.c) --- */

struct auth_throttle_policy {
    int64_t after;    /* failures before the first block */
    int64_t base_ms;  /* the first block; doubling with each failure after */
    int64_t max_s;    /* the longest block */
    int64_t window_s; /* failures older than this are forgotten */
};

/* Counts one login attempt for the account whose normalised email hashes to hash_hex (64
 * hex characters), atomically with the check: *blocked_ms gets 0 when the attempt may go
 * on (it now counts as a failure until auth_db_throttle_clear), or the milliseconds the
 * account is still blocked for (the attempt is not counted). *failures gets the count. */
int auth_db_throttle_claim(struct cn_pg *pg, const char *hash_hex,
                           const struct auth_throttle_policy *p, int64_t *blocked_ms,
                           long *failures);
/* Forgets the account's failures (a successful login). */
int auth_db_throttle_clear(struct cn_pg *pg, const char *hash_hex);
/* Deletes up to a batch of rows that neither block nor count any more (last failure more
 * than window_s ago); *n gets how many. */
int auth_db_throttle_purge(struct cn_pg *pg, int64_t window_s, long *n);

#endif
