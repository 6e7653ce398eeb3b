/* auth.h — the cairn-auth service's own cross-file names (not part of libcairn).
 *
 * main.c fills auth_svc; auth_rpc.c has the handlers, init and fini; auth_db.c holds
 * every SQL statement; auth_keys.c the Ed25519 signing keys and JWKS; auth_password.c
 * the Argon2id pool and the email/password rules. To add a setting: a field in struct
 * auth_conf, a row in auth_conf_defs (auth_rpc.c), a line in README.md.
 */
#ifndef AUTH_H
#define AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

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

struct auth_key {
    char kid[44];
    char x[44]; /* base64url public key */
    EVP_PKEY *pkey;
};

/* Loads the signing key from CAIRN_AUTH_KEY_FILE when set, else from Postgres (making
 * one on first start). 0, or a CN_E* (logged). */
int auth_keys_load(struct cn_pg *pg, const char *key_file);
void auth_keys_free(void);
/* The key that signs new tokens (borrowed; valid until auth_keys_free). */
const struct auth_key *auth_keys_signing(void);
/* The published keys: *n entries, borrowed. */
const struct auth_key *auth_keys_all(size_t *n);

/* --- storage (auth_db.c): returns 0, CN_ENOTFOUND, CN_EEXIST, CN_EUNAVAIL or CN_EDB --- */

struct auth_user {
    char id[37];
    char email[AUTH_EMAIL_MAX + 1];
    char role[32];
    bool disabled;
    int64_t created_at_ms;
    char password_hash[AUTH_HASH_MAX];
};

/* A signing key as stored. */
struct auth_db_key {
    char kid[44];
    uint8_t priv[32];
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

/* Under a transaction-level advisory lock: returns the non-retired keys (newest first,
 * up to cap); if there are none, stores fresh and returns it alone. */
int auth_db_keys_ensure(struct cn_pg *pg, const struct auth_db_key *fresh, struct auth_db_key *out,
                        size_t cap, size_t *n);

#endif
