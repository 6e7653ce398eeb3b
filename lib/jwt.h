/* jwt.h — compact JWS (RFC 7515/7519) with Ed25519 (RFC 8037), and OKP JWKs.
 *
 * The gateway verifies every access token with cn_jwt_verify(); auth signs them with
 * cn_jwt_sign(). Verification is strict: three segments of base64url without padding,
 * header exactly {alg:"EdDSA", typ, kid} (alg pinned; "none" and any other alg, and
 * jku/x5u/jwk/crit headers, are refused), duplicate JSON keys refused, the signature
 * checked before any claim is trusted, then typ, iss, aud (string or array), exp
 * (required), nbf and iat with a leeway. Tokens over CN_JWT_MAX_LEN are refused unread.
 */
#ifndef CN_JWT_H
#define CN_JWT_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#define CN_JWT_MAX_LEN 8192

struct cn_jwt_claims {
    char sub[128];
    char role[32];
    char jti[64];
    char kid[64];
    char scope[512];     /* space-separated scopes ("scope" claim), "" if absent */
    int64_t iat, exp, nbf;
};

struct cn_jwt_expect {
    const char *iss;     /* required issuer */
    const char *aud;     /* required audience (one of "aud" if it is an array) */
    const char *typ;     /* required header typ, e.g. "at+jwt" */
    int64_t leeway_s;    /* clock skew allowed on exp/nbf/iat */
};

/* Looks up the verification key for kid; returns a borrowed key or NULL if unknown. */
typedef EVP_PKEY *(*cn_jwt_key_fn)(const char *kid, void *arg);

/* Verifies token (len bytes) at time now_s. Returns 0 and fills *out; CN_EINVAL when
 * malformed; CN_ENOTFOUND when the kid is unknown (out->kid is set, so the caller may
 * refresh its JWKS); CN_EDENIED for a bad signature or failed claim check. *why gets a
 * short static reason ("bad signature", "expired", "alg not allowed", ...). */
int cn_jwt_verify(const char *token, size_t len, cn_jwt_key_fn lookup, void *arg,
                  const struct cn_jwt_expect *expect, int64_t now_s,
                  struct cn_jwt_claims *out, const char **why);

/* Signs payload_json (a JSON object text) with key under header
 * {"alg":"EdDSA","typ":typ,"kid":kid}. Returns 0 and *out (malloc'd, caller frees) or
 * CN_ECRYPTO. */
int cn_jwt_sign(EVP_PKEY *key, const char *kid, const char *typ, const char *payload_json,
                char **out);

/* The base64url public key ("x") of an Ed25519 key: 43 chars + NUL. */
int cn_jwk_x(EVP_PKEY *key, char out[44]);
/* The RFC 7638 thumbprint of an Ed25519 key, base64url: 43 chars + NUL; used as kid. */
int cn_jwk_thumbprint(EVP_PKEY *key, char out[44]);
/* Returns a new public key from a base64url "x", or NULL if it is not 32 bytes. */
EVP_PKEY *cn_jwk_key_from_x(const char *x);

#endif
