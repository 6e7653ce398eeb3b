/* apikeys.h — API keys and revocations at the edge.
 *
 * A presented key is first checked for format and checksum (lib/apikey.h) so a typo
 * never costs a lookup. Resolved keys are cached in one table shared by every loop
 * thread (key id -> SHA-256 of the secret, principal, expiry) for CAIRN_APIKEY_CACHE_MS;
 * a hit needs the presented secret's hash to equal the cached one. Revocations arrive on
 * an nng SUB socket from every auth instance (CAIRN_AUTH_EVENTS_ADDR): "revoke-key <id>"
 * drops a key, "revoke-user <id>" drops the user's keys and refuses the user's access
 * tokens until they expire, "enable-user <id>" lifts that (the user may sign in again).
 * A missed event is bounded by the cache lifetime.
 */
#ifndef GW_APIKEYS_H
#define GW_APIKEYS_H

#include <stdint.h>

#include "apikey.h"
#include "authn.h"

/* Starts the revocation subscriber (events_addr "" = none). ttl_ms: cache lifetime;
 * hold_s: how long a revoked user's older tokens stay refused (>= the access-token
 * lifetime). */
int gw_apikeys_start(const char *events_addr, int64_t ttl_ms, int64_t hold_s);
void gw_apikeys_stop(void);

/* Returns 1 and fills *p if the key is cached, unexpired, and its secret matches. */
int gw_apikeys_lookup(const struct cn_apikey *k, struct gw_principal *p);
/* The revocation epoch: read it before asking auth to resolve a key. */
unsigned gw_apikeys_epoch(void);
/* Caches a resolved key, unless a revocation arrived since epoch was read (auth may
 * have answered before the revocation, and the cache must not bring the key back). */
void gw_apikeys_store(const struct cn_apikey *k, const struct gw_principal *p, unsigned epoch);

void gw_apikeys_revoke_key(const char *key_id);
void gw_apikeys_revoke_user(const char *subject);
/* The user was enabled again: the admin trusts it again, so its tokens are accepted,
 * new ones and unexpired older ones alike (the older ones cannot be renewed: disabling
 * revoked their refresh families). Needed because iat has one-second resolution: a
 * token issued in the second of the disable could not be told from one issued after. */
void gw_apikeys_enable_user(const char *subject);
/* 1 if the user was revoked after a token issued at iat (unix s): a user disabled and
 * enabled again can sign in afresh, while tokens from before stay refused. */
int gw_user_revoked(const char *subject, int64_t iat);

/* Applies one event message ("revoke-key X" / "revoke-user X"); 0 or CN_EINVAL. */
int gw_apikeys_apply_event(const char *msg, size_t len);

#endif
