/* jwt.c — compact JWS with Ed25519 (RFC 7515/7519/8037) and OKP JWK helpers. See jwt.h.
 *
 * cn_jwt_verify() is the one parser of bearer tokens, so it is written as a fixed ladder
 * of checks, cheapest and least trusting first:
 *   1. size cap and exactly three '.'-separated segments;
 *   2. header and payload are canonical base64url (no padding, no stray bits);
 *   3. the header is a flat JSON object with only alg/typ/kid, alg pinned to "EdDSA";
 *   4. the signature is exactly 64 bytes, the kid names a key, and the signature verifies;
 *   5. only then is the payload parsed and each claim checked.
 * JSON is parsed by jansson with duplicate keys refused (two parsers must never see two
 * different claim sets in one token) after a pre-scan that bounds nesting depth, because
 * jansson 2.14's only depth limit is the compiled-in 2048.
 *
 * Result codes: CN_EINVAL for anything malformed, CN_ENOTFOUND for an unknown kid,
 * CN_EDENIED for a policy refusal (alg, extra headers, typ), a bad signature, or any
 * failed claim. To check a new claim, add it to read_claims(); to allow a new header
 * member, add it to allowed_headers[].
 */
#include "jwt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "b64.h"
#include "err.h"
#include "util.h"

#define ED25519_SIG_LEN 64
#define ED25519_KEY_LEN 32
/* Deep enough for any claim set we issue, shallow enough that a nesting bomb costs
 * nothing. The header is flat, but the same bound keeps its scan trivial. */
#define JSON_DEPTH_MAX 16
/* The largest leeway accepted: beyond a day it is a misconfiguration, and the bound
 * keeps now +/- leeway far from int64 overflow. */
#define LEEWAY_MAX_S 86400
/* Decoded header + payload never exceed 3/4 of the token. */
#define DECODED_MAX (CN_JWT_MAX_LEN / 4 * 3 + 3)

static const char *const allowed_headers[] = {"alg", "typ", "kid"};

/* Returns 1 when the JSON text p[0..n) nests arrays/objects at most max deep. Brackets
 * inside strings do not count; validity is left to jansson, which runs next. */
static int depth_ok(const uint8_t *p, size_t n, int max)
{
    int depth = 0, in_str = 0;

    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

/* Parses p[0..n) as one JSON object with no duplicate keys and bounded depth. Returns a
 * new reference or NULL. */
static json_t *parse_object(const uint8_t *p, size_t n)
{
    json_error_t jerr;
    json_t *j;

    if (!depth_ok(p, n, JSON_DEPTH_MAX))
        return NULL;
    j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Copies the string member key of o into dst (cap bytes). Returns 0, or 1 when absent,
 * or CN_EINVAL when it is not a string or does not fit (never truncated). */
static int get_str(json_t *o, const char *key, char *dst, size_t cap)
{
    json_t *v = json_object_get(o, key);
    size_t n;

    if (v == NULL)
        return 1;
    if (!json_is_string(v))
        return CN_EINVAL;
    n = json_string_length(v);
    if (n >= cap)
        return CN_EINVAL;
    memcpy(dst, json_string_value(v), n + 1);
    return 0;
}

/* Reads a NumericDate member into *out. Returns 0, 1 when absent, CN_EINVAL when not a
 * number or out of range. Fractional seconds are allowed by RFC 7519 and truncated. */
static int get_date(json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL)
        return 1;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* Converting an out-of-range double to an integer is undefined: bound it first.
         * 2^62 s is far beyond any real date and well inside int64. */
        if (!isfinite(d) || d > 4611686018427387904.0 || d < -4611686018427387904.0)
            return CN_EINVAL;
        *out = (int64_t)d;
        return 0;
    }
    return CN_EINVAL;
}

/* Returns 1 when aud (a string, or an array of strings) contains want; 0 when it does
 * not or is malformed. */
static int aud_matches(json_t *aud, const char *want)
{
    size_t i;
    json_t *e;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return 0;
    json_array_foreach(aud, i, e) {
        if (!json_is_string(e))
            return 0;
    }
    json_array_foreach(aud, i, e) {
        if (strcmp(json_string_value(e), want) == 0)
            return 1;
    }
    return 0;
}

/* Checks the header object h against expect and copies its kid into kid[64]. Returns 0,
 * CN_EDENIED (policy) or CN_EINVAL (malformed); *why is set on failure. */
static int check_header(json_t *h, const struct cn_jwt_expect *expect, char kid[64],
                        const char **why)
{
    const char *key;
    json_t *v;

    json_object_foreach(h, key, v) {
        size_t i;
        for (i = 0; i < CN_ARRAY_LEN(allowed_headers); i++)
            if (strcmp(key, allowed_headers[i]) == 0)
                break;
        if (i == CN_ARRAY_LEN(allowed_headers)) {
            /* jku/x5u/jwk/x5c would let the token pick its own key, crit demands
             * extensions we do not implement, zip invites decompression bombs. */
            *why = "header not allowed";
            return CN_EDENIED;
        }
    }
    v = json_object_get(h, "alg");
    if (!json_is_string(v) || strcmp(json_string_value(v), "EdDSA") != 0) {
        *why = "alg not allowed";
        return CN_EDENIED;
    }
    v = json_object_get(h, "typ");
    if (!json_is_string(v) || strcmp(json_string_value(v), expect->typ) != 0) {
        *why = "wrong typ";
        return CN_EDENIED;
    }
    if (get_str(h, "kid", kid, 64) != 0 || kid[0] == '\0') {
        *why = "bad kid";
        return CN_EINVAL;
    }
    return CN_OK;
}

/* Reads and checks every claim of the (already authenticated) payload p into c. Returns 0
 * or CN_EDENIED with *why. */
static int read_claims(json_t *p, const struct cn_jwt_expect *expect, int64_t now_s,
                       struct cn_jwt_claims *c, const char **why)
{
    int64_t leeway = expect->leeway_s;
    json_t *v;
    int rc, has_nbf, has_iat;

    /* jansson refuses "\u0000" by default, so a C string compare sees the whole value. */
    v = json_object_get(p, "iss");
    if (!json_is_string(v) || strcmp(json_string_value(v), expect->iss) != 0) {
        *why = "wrong issuer";
        return CN_EDENIED;
    }
    v = json_object_get(p, "aud");
    if (v == NULL || !aud_matches(v, expect->aud)) {
        *why = "wrong audience";
        return CN_EDENIED;
    }
    if (get_str(p, "sub", c->sub, sizeof c->sub) != 0 || c->sub[0] == '\0') {
        *why = "bad sub";
        return CN_EDENIED;
    }
    if (get_str(p, "role", c->role, sizeof c->role) < 0) {
        *why = "bad role";
        return CN_EDENIED;
    }
    if (get_str(p, "jti", c->jti, sizeof c->jti) < 0) {
        *why = "bad jti";
        return CN_EDENIED;
    }
    if (get_str(p, "scope", c->scope, sizeof c->scope) < 0) {
        *why = "bad scope";
        return CN_EDENIED;
    }

    rc = get_date(p, "exp", &c->exp);
    if (rc != 0) {
        *why = rc > 0 ? "missing exp" : "bad exp";
        return CN_EDENIED;
    }
    has_nbf = get_date(p, "nbf", &c->nbf);
    if (has_nbf < 0) {
        *why = "bad nbf";
        return CN_EDENIED;
    }
    has_iat = get_date(p, "iat", &c->iat);
    if (has_iat < 0) {
        *why = "bad iat";
        return CN_EDENIED;
    }
    /* RFC 7519: valid while now < exp; the leeway absorbs clock skew between hosts. */
    if (c->exp <= now_s - leeway) {
        *why = "expired";
        return CN_EDENIED;
    }
    if (has_nbf == 0 && c->nbf > now_s + leeway) {
        *why = "not yet valid";
        return CN_EDENIED;
    }
    /* A token issued in the future was minted by a clock we do not trust. */
    if (has_iat == 0 && c->iat > now_s + leeway) {
        *why = "issued in the future";
        return CN_EDENIED;
    }
    return CN_OK;
}

int cn_jwt_verify(const char *token, size_t len, cn_jwt_key_fn lookup, void *arg,
                  const struct cn_jwt_expect *expect, int64_t now_s, struct cn_jwt_claims *out,
                  const char **why)
{
    uint8_t dec[DECODED_MAX], sig[ED25519_SIG_LEN];
    struct cn_jwt_claims c;
    const char *dot1, *dot2, *end, *reason = "malformed";
    size_t hlen, plen, slen, hdec, pdec, sdec;
    json_t *hdr = NULL, *pay = NULL;
    EVP_MD_CTX *md = NULL;
    EVP_PKEY *key;
    int rc = CN_EINVAL;

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    if (expect == NULL || expect->iss == NULL || expect->aud == NULL || expect->typ == NULL ||
        expect->leeway_s < 0 || expect->leeway_s > LEEWAY_MAX_S || lookup == NULL) {
        reason = "bad expectations";
        goto out;
    }
    /* Refused unread: nothing below runs on an oversize token. */
    if (token == NULL || len > CN_JWT_MAX_LEN) {
        reason = "token too long";
        goto out;
    }
    end = token + len;
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL) {
        reason = "not three segments";
        goto out;
    }
    hlen = (size_t)(dot1 - token);
    plen = (size_t)(dot2 - dot1 - 1);
    slen = (size_t)(end - dot2 - 1);

    if (cn_b64url_decode(token, hlen, dec, sizeof dec, &hdec) != CN_OK ||
        cn_b64url_decode(dot1 + 1, plen, dec + hdec, sizeof dec - hdec, &pdec) != CN_OK) {
        reason = "bad base64url";
        goto out;
    }
    hdr = parse_object(dec, hdec);
    if (hdr == NULL) {
        reason = "bad header json";
        goto out;
    }
    rc = check_header(hdr, expect, c.kid, &reason);
    if (rc != CN_OK)
        goto out;
    /* Shown to the caller even when the key is unknown, so it can refresh its JWKS. */
    memcpy(out->kid, c.kid, sizeof out->kid);

    /* The signature segment of an Ed25519 JWS is always 86 characters: anything else,
     * including padding, is malformed rather than merely wrong. */
    rc = CN_EINVAL;
    if (cn_b64url_decode(dot2 + 1, slen, sig, sizeof sig, &sdec) != CN_OK ||
        sdec != ED25519_SIG_LEN) {
        reason = "bad signature encoding";
        goto out;
    }
    key = lookup(c.kid, arg);
    if (key == NULL) {
        rc = CN_ENOTFOUND;
        reason = "unknown kid";
        goto out;
    }
    rc = CN_EDENIED;
    if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
        reason = "key not Ed25519";
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) != 1 ||
        EVP_DigestVerify(md, sig, sizeof sig, (const unsigned char *)token, hlen + 1 + plen) != 1) {
        reason = "bad signature";
        goto out;
    }

    /* Authenticated from here on: the claims may be read. */
    pay = parse_object(dec + hdec, pdec);
    if (pay == NULL) {
        rc = CN_EINVAL;
        reason = "bad payload json";
        goto out;
    }
    rc = read_claims(pay, expect, now_s, &c, &reason);
    if (rc != CN_OK)
        goto out;
    *out = c;
    reason = "ok";
out:
    EVP_MD_CTX_free(md);
    json_decref(hdr);
    json_decref(pay);
    if (why != NULL)
        *why = reason;
    return rc;
}

int cn_jwt_sign(EVP_PKEY *key, const char *kid, const char *typ, const char *payload_json,
                char **out)
{
    json_t *hdr = NULL, *pay = NULL;
    char *htxt = NULL, *tok = NULL;
    EVP_MD_CTX *md = NULL;
    size_t hlen, plen, tbs, siglen = ED25519_SIG_LEN;
    uint8_t sig[ED25519_SIG_LEN];
    int rc = CN_EINVAL;

    *out = NULL;
    /* Refuse to mint what cn_jwt_verify would refuse: a missing or overlong kid, a
     * payload that is not one shallow, duplicate-free JSON object. */
    if (key == NULL || kid == NULL || typ == NULL || payload_json == NULL || kid[0] == '\0' ||
        strlen(kid) >= sizeof((struct cn_jwt_claims *)0)->kid)
        goto out;
    plen = strlen(payload_json);
    pay = parse_object((const uint8_t *)payload_json, plen);
    if (pay == NULL)
        goto out;
    rc = CN_ECRYPTO;
    if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        goto out;

    hdr = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", typ, "kid", kid);
    if (hdr == NULL) {
        rc = CN_EINVAL; /* typ or kid is not valid UTF-8 */
        goto out;
    }
    htxt = json_dumps(hdr, JSON_COMPACT);
    if (htxt == NULL)
        goto out;
    hlen = strlen(htxt);
    tbs = cn_b64url_len(hlen) + 1 + cn_b64url_len(plen);
    if (tbs + 1 + cn_b64url_len(ED25519_SIG_LEN) > CN_JWT_MAX_LEN) {
        rc = CN_ETOOBIG;
        goto out;
    }
    tok = cn_malloc(CN_JWT_MAX_LEN + 1);
    cn_b64url_encode((const uint8_t *)htxt, hlen, tok);
    tok[cn_b64url_len(hlen)] = '.';
    cn_b64url_encode((const uint8_t *)payload_json, plen, tok + cn_b64url_len(hlen) + 1);

    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, NULL, NULL, key) != 1 ||
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)tok, tbs) != 1 ||
        siglen != ED25519_SIG_LEN)
        goto out;
    tok[tbs] = '.';
    cn_b64url_encode(sig, siglen, tok + tbs + 1);
    *out = tok;
    tok = NULL;
    rc = CN_OK;
out:
    EVP_MD_CTX_free(md);
    free(htxt); /* jansson's default allocator is malloc */
    json_decref(hdr);
    json_decref(pay);
    free(tok);
    return rc;
}

int cn_jwk_x(EVP_PKEY *key, char out[44])
{
    uint8_t raw[ED25519_KEY_LEN];
    size_t n = sizeof raw;

    out[0] = '\0';
    if (key == NULL || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        return CN_EINVAL;
    if (EVP_PKEY_get_raw_public_key(key, raw, &n) != 1 || n != sizeof raw)
        return CN_ECRYPTO;
    cn_b64url_encode(raw, n, out);
    return CN_OK;
}

int cn_jwk_thumbprint(EVP_PKEY *key, char out[44])
{
    char x[44], canon[96];
    uint8_t digest[32];
    unsigned int dlen = 0;
    int rc, n;

    out[0] = '\0';
    rc = cn_jwk_x(key, x);
    if (rc != CN_OK)
        return rc;
    /* RFC 7638: the required members only, in lexicographic order, no whitespace. */
    n = snprintf(canon, sizeof canon, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
    if (n < 0 || (size_t)n >= sizeof canon)
        return CN_ECRYPTO;
    if (EVP_Digest(canon, (size_t)n, digest, &dlen, EVP_sha256(), NULL) != 1 ||
        dlen != sizeof digest)
        return CN_ECRYPTO;
    cn_b64url_encode(digest, sizeof digest, out);
    return CN_OK;
}

EVP_PKEY *cn_jwk_key_from_x(const char *x)
{
    uint8_t raw[ED25519_KEY_LEN];
    size_t n;

    if (x == NULL || cn_b64url_decode(x, strlen(x), raw, sizeof raw, &n) != CN_OK ||
        n != sizeof raw)
        return NULL;
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, sizeof raw);
}
