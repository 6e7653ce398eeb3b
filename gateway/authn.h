/* authn.h — verifies bearer access tokens at the edge.
 *
 * A background thread fetches the JWKS from cairn-auth (RPC GetJwks over a blocking
 * cn_rpc_client) at start, every CAIRN_JWKS_REFRESH_S seconds, and soon after a token
 * names an unknown kid (such refreshes at most once per 5 s, so forged kids cannot make
 * the gateway hammer auth). Keys are swapped under a rwlock; verification on the loop
 * threads never blocks on auth. Verified tokens are cached per thread (a direct-mapped
 * table keyed by the token's SHA-256, entries expiring with the token), so a repeat
 * request costs a hash instead of an Ed25519 verify.
 */
#ifndef GW_AUTHN_H
#define GW_AUTHN_H

#include <stddef.h>
#include <stdint.h>

struct gw_principal {
    char sub[128];
    char role[32];
    char scope[512];     /* space-separated */
    char key_id[64];     /* API key id, "" for a JWT */
    int64_t exp;         /* unix seconds */
    int64_t iat;         /* unix seconds the token was issued (0 for an API key) */
};

struct gw_authn_conf {
    const char *auth_addr;   /* nng address(es) of cairn-auth, comma-separated */
    const char *iss;         /* expected issuer */
    const char *aud;         /* expected audience */
    int64_t refresh_s;       /* periodic JWKS refresh */
    int64_t leeway_s;        /* clock skew allowed */
};

/* Starts the JWKS refresher. Returns 0 or CN_EINVAL (bad address). Does not wait for the
 * first fetch: gw_authn_ready() says when keys are loaded. */
int gw_authn_start(const struct gw_authn_conf *conf);
void gw_authn_stop(void);
/* 1 once a JWKS has been loaded. */
int gw_authn_ready(void);

/* Verifies a token (the part after "Bearer "). Thread-safe. Returns 0 and fills *out;
 * CN_EINVAL malformed, CN_EDENIED bad signature/claims, CN_ENOTFOUND unknown key (a
 * refresh is scheduled). *why: short static reason for logs and metrics. */
int gw_authn_verify(const char *token, size_t len, struct gw_principal *out, const char **why);

#endif
