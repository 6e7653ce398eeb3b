/* jwt_test.c — the token corpus cn_jwt_verify must get right, plus signing and JWK
 * helpers against RFC 8037's vectors.
 *
 * The corpus is one table: each row is a header and payload template, how to sign, how
 * to damage the result, and the code and reason expected. Templates expand "$KID" to the
 * test key's kid and "${c*n}" to n copies of the character c (for size and depth limits).
 * To add an attack, add one row to corpus[].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/hmac.h>

#include "buf.h"
#include "jwt.c"

#define NOW 1700000000
#define ISS "https://auth.cairn"
#define AUD "cairn-api"
#define TYP "at+jwt"

/* RFC 8037 appendix A: an Ed25519 key, its thumbprint and a JWS over a fixed payload. */
#define RFC_D "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
#define RFC_X "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC_THUMB "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
#define RFC_INPUT "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
#define RFC_SIG \
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

static const struct cn_jwt_expect expect = {ISS, AUD, TYP, 30};

/* The keys every test uses: a is published under kid_a, b is a stranger, xkey is an
 * X25519 key wrongly published under "x25519" (a misconfigured JWKS). */
static struct {
    EVP_PKEY *a, *b, *xkey;
    char kid_a[44];
    char x_a[44];
} k;

static EVP_PKEY *lookup(const char *kid, void *arg)
{
    (void)arg;
    if (strcmp(kid, k.kid_a) == 0)
        return k.a;
    if (strcmp(kid, "x25519") == 0)
        return k.xkey;
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    k.a = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    k.b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    k.xkey = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    if (k.a == NULL || k.b == NULL || k.xkey == NULL)
        return -1;
    if (cn_jwk_thumbprint(k.a, k.kid_a) != 0 || cn_jwk_x(k.a, k.x_a) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(k.a);
    EVP_PKEY_free(k.b);
    EVP_PKEY_free(k.xkey);
    return 0;
}

/* Appends tpl with "$KID" and "${c*n}" expanded. */
static void expand(struct cn_buf *out, const char *tpl)
{
    for (const char *p = tpl; *p;) {
        if (strncmp(p, "$KID", 4) == 0) {
            cn_buf_puts(out, k.kid_a);
            p += 4;
        } else if (p[0] == '$' && p[1] == '{' && p[2] && p[3] == '*') {
            char *end;
            long n = strtol(p + 4, &end, 10);
            assert_true(*end == '}' && n >= 0);
            for (long i = 0; i < n; i++)
                cn_buf_putc(out, p[2]);
            p = end + 1;
        } else {
            cn_buf_putc(out, *p++);
        }
    }
}

static void put_b64url(struct cn_buf *out, const void *p, size_t n)
{
    cn_buf_reserve(out, cn_b64url_len(n));
    out->len += cn_b64url_encode(p, n, out->data + out->len);
}

enum signer {
    SIG_A,     /* the published key */
    SIG_B,     /* a key nobody published */
    SIG_HMAC,  /* HS256 keyed with the public "x": the classic alg-confusion forgery */
    SIG_EMPTY, /* no signature at all, as "alg":"none" tokens come */
};

enum damage {
    D_NONE,
    D_SIG_DROP1,   /* last signature character cut: 85 characters */
    D_SIG_DROP4,   /* four cut: decodes, but to 61 bytes */
    D_SIG_PAD,     /* "=" appended to the signature */
    D_SIG_FLIP,    /* one signature character changed */
    D_PAY_FLIP,    /* one payload character changed after signing */
    D_HDR_PLUS,    /* a '+' (standard alphabet) in the header segment */
    D_PAY_SLASH,   /* a '/' in the payload segment */
    D_HDR_PAD,     /* the header segment padded with '=' */
    D_TWO_SEG,     /* signature segment and its dot removed */
    D_FOUR_SEG,    /* a fourth segment appended */
    D_TRAILING_DOT /* "x.y.z." */
};

/* Builds a token from expanded templates, signed by s and then damaged by d. */
static char *make_token(const char *hdr_tpl, const char *pay_tpl, enum signer s, enum damage d)
{
    struct cn_buf hdr = {0}, pay = {0}, tok = {0};
    uint8_t sig[64];
    size_t siglen = 0, sig_at;

    expand(&hdr, hdr_tpl);
    expand(&pay, pay_tpl);
    put_b64url(&tok, hdr.data, hdr.len);
    cn_buf_putc(&tok, '.');
    put_b64url(&tok, pay.data, pay.len);

    if (s == SIG_A || s == SIG_B) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        siglen = sizeof sig;
        assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, s == SIG_A ? k.a : k.b), 1);
        assert_int_equal(EVP_DigestSign(md, sig, &siglen, (uint8_t *)tok.data, tok.len), 1);
        EVP_MD_CTX_free(md);
    } else if (s == SIG_HMAC) {
        unsigned int n = 0;
        assert_non_null(
            HMAC(EVP_sha256(), k.x_a, (int)strlen(k.x_a), (uint8_t *)tok.data, tok.len, sig, &n));
        siglen = n;
    }
    cn_buf_putc(&tok, '.');
    sig_at = tok.len;
    put_b64url(&tok, sig, siglen);

    switch (d) {
    case D_NONE: break;
    case D_SIG_DROP1: tok.data[--tok.len] = '\0'; break;
    case D_SIG_DROP4:
        tok.len -= 4;
        tok.data[tok.len] = '\0';
        break;
    case D_SIG_PAD: cn_buf_putc(&tok, '='); break;
    case D_SIG_FLIP: tok.data[sig_at + 10] = tok.data[sig_at + 10] == 'A' ? 'B' : 'A'; break;
    case D_PAY_FLIP: {
        char *p = strchr(tok.data, '.') + 6;
        *p = *p == 'A' ? 'B' : 'A';
        break;
    }
    case D_HDR_PLUS: tok.data[3] = '+'; break;
    case D_PAY_SLASH: strchr(tok.data, '.')[3] = '/'; break;
    case D_HDR_PAD: {
        /* Re-assemble as header + "=" + the rest. */
        struct cn_buf t = {0};
        size_t h = (size_t)(strchr(tok.data, '.') - tok.data);
        cn_buf_append(&t, tok.data, h);
        cn_buf_putc(&t, '=');
        cn_buf_puts(&t, tok.data + h);
        cn_buf_free(&tok);
        tok = t;
        break;
    }
    case D_TWO_SEG:
        tok.len = sig_at - 1;
        tok.data[tok.len] = '\0';
        break;
    case D_FOUR_SEG: cn_buf_puts(&tok, ".e30"); break;
    case D_TRAILING_DOT: cn_buf_putc(&tok, '.'); break;
    }
    cn_buf_free(&hdr);
    cn_buf_free(&pay);
    return cn_buf_steal(&tok, NULL);
}

/* The usual header and payload, and fragments to build variants from. */
#define H "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"$KID\"}"
#define HDR(alg) "{\"alg\":" alg ",\"typ\":\"at+jwt\",\"kid\":\"$KID\"}"
#define HDRX(extra) "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"$KID\"," extra "}"
#define HKID(kid) "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"" kid "}"
#define HTYP(typ) "{\"alg\":\"EdDSA\"" typ ",\"kid\":\"$KID\"}"
/* Payload: iss, aud, sub, role, scope, jti, iat, exp (NOW + 600). */
#define BASE_CLAIMS "\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"u-1\""
#define P                                                                                    \
    "{" BASE_CLAIMS ",\"role\":\"user\",\"scope\":\"jobs:read jobs:write\",\"jti\":\"j-1\"," \
    "\"iat\":1700000000,\"exp\":1700000600}"
/* BASE_CLAIMS plus exp, then whatever is given. */
#define PX(extra) "{" BASE_CLAIMS ",\"exp\":1700000600" extra "}"
/* Everything but the given claims is standard: iss/aud/sub written out by the row. */
#define PRAW(body) "{" body "}"

/* clang-format off */
static const struct corpus_case {
    const char *name;
    const char *hdr, *pay;
    enum signer signer;
    enum damage damage;
    int rc;
    const char *why;
} corpus[] = {
    {"good", H, P, SIG_A, D_NONE, CN_OK, "ok"},
    {"good, minimal claims", H, PX(""), SIG_A, D_NONE, CN_OK, "ok"},
    {"aud array with ours", H, PRAW("\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_OK, "ok"},
    {"aud array without ours", H, PRAW("\"iss\":\"" ISS "\",\"aud\":[\"x\",\"y\"],\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong audience"},
    {"aud array with a number", H, PRAW("\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\",1],\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong audience"},
    {"aud empty array", H, PRAW("\"iss\":\"" ISS "\",\"aud\":[],\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong audience"},
    {"exp with a fraction", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"u\",\"exp\":1700000600.5"), SIG_A, D_NONE, CN_OK, "ok"},

    /* alg pinned to EdDSA */
    {"alg none, signed", HDR("\"none\""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg none, unsigned", HDR("\"none\""), P, SIG_EMPTY, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg None", HDR("\"None\""), P, SIG_EMPTY, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg NONE", HDR("\"NONE\""), P, SIG_EMPTY, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg nOnE", HDR("\"nOnE\""), P, SIG_EMPTY, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg HS256 keyed with the public key", HDR("\"HS256\""), P, SIG_HMAC, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg ES256", HDR("\"ES256\""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg RS256", HDR("\"RS256\""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg Ed25519", HDR("\"Ed25519\""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg eddsa", HDR("\"eddsa\""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg with a trailing space", HDR("\"EdDSA \""), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg as an array", HDR("[\"EdDSA\"]"), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg null", HDR("null"), P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},
    {"alg missing", "{\"typ\":\"at+jwt\",\"kid\":\"$KID\"}", P, SIG_A, D_NONE, CN_EDENIED, "alg not allowed"},

    /* headers that would let the token choose its key, or demand unknown semantics */
    {"jku header", HDRX("\"jku\":\"https://evil/jwks\""), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},
    {"x5u header", HDRX("\"x5u\":\"https://evil/cert\""), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},
    {"x5c header", HDRX("\"x5c\":[\"MIIB\"]"), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},
    {"jwk header", HDRX("\"jwk\":{\"kty\":\"OKP\"}"), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},
    {"crit header", HDRX("\"crit\":[\"exp\"]"), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},
    {"zip header", HDRX("\"zip\":\"DEF\""), P, SIG_A, D_NONE, CN_EDENIED, "header not allowed"},

    /* typ */
    {"typ JWT", HTYP(",\"typ\":\"JWT\""), P, SIG_A, D_NONE, CN_EDENIED, "wrong typ"},
    {"typ in capitals", HTYP(",\"typ\":\"AT+JWT\""), P, SIG_A, D_NONE, CN_EDENIED, "wrong typ"},
    {"typ missing", HTYP(""), P, SIG_A, D_NONE, CN_EDENIED, "wrong typ"},

    /* kid */
    {"unknown kid", HKID(",\"kid\":\"nobody\""), P, SIG_A, D_NONE, CN_ENOTFOUND, "unknown kid"},
    {"path-like kid", HKID(",\"kid\":\"../../x\""), P, SIG_A, D_NONE, CN_ENOTFOUND, "unknown kid"},
    {"kid of 63 characters", HKID(",\"kid\":\"${k*63}\""), P, SIG_A, D_NONE, CN_ENOTFOUND, "unknown kid"},
    {"kid of 64 characters", HKID(",\"kid\":\"${k*64}\""), P, SIG_A, D_NONE, CN_EINVAL, "bad kid"},
    {"kid missing", HKID(""), P, SIG_A, D_NONE, CN_EINVAL, "bad kid"},
    {"kid empty", HKID(",\"kid\":\"\""), P, SIG_A, D_NONE, CN_EINVAL, "bad kid"},
    {"kid a number", HKID(",\"kid\":7"), P, SIG_A, D_NONE, CN_EINVAL, "bad kid"},
    {"kid names a non-Ed25519 key", HKID(",\"kid\":\"x25519\""), P, SIG_A, D_NONE, CN_EDENIED, "key not Ed25519"},

    /* signature */
    {"signature from another key", H, P, SIG_B, D_NONE, CN_EDENIED, "bad signature"},
    {"signature altered", H, P, SIG_A, D_SIG_FLIP, CN_EDENIED, "bad signature"},
    {"payload altered", H, P, SIG_A, D_PAY_FLIP, CN_EDENIED, "bad signature"},
    {"signature truncated by one", H, P, SIG_A, D_SIG_DROP1, CN_EINVAL, "bad signature encoding"},
    {"signature truncated to 61 bytes", H, P, SIG_A, D_SIG_DROP4, CN_EINVAL, "bad signature encoding"},
    {"signature padded", H, P, SIG_A, D_SIG_PAD, CN_EINVAL, "bad signature encoding"},
    {"signature missing", H, P, SIG_EMPTY, D_NONE, CN_EINVAL, "bad signature encoding"},

    /* shape and encoding */
    {"two segments", H, P, SIG_A, D_TWO_SEG, CN_EINVAL, "not three segments"},
    {"four segments", H, P, SIG_A, D_FOUR_SEG, CN_EINVAL, "not three segments"},
    {"trailing dot", H, P, SIG_A, D_TRAILING_DOT, CN_EINVAL, "not three segments"},
    {"'+' in the header", H, P, SIG_A, D_HDR_PLUS, CN_EINVAL, "bad base64url"},
    {"'/' in the payload", H, P, SIG_A, D_PAY_SLASH, CN_EINVAL, "bad base64url"},
    {"padded header", H, P, SIG_A, D_HDR_PAD, CN_EINVAL, "bad base64url"},
    {"over 8 KiB", H, PX(",\"pad\":\"${x*7000}\""), SIG_A, D_NONE, CN_EINVAL, "token too long"},

    /* JSON */
    {"duplicate alg in the header", "{\"alg\":\"EdDSA\",\"alg\":\"none\",\"typ\":\"at+jwt\",\"kid\":\"$KID\"}", P, SIG_A, D_NONE, CN_EINVAL, "bad header json"},
    {"header not an object", "[\"EdDSA\",\"at+jwt\",\"$KID\"]", P, SIG_A, D_NONE, CN_EINVAL, "bad header json"},
    {"header not JSON", "alg=EdDSA", P, SIG_A, D_NONE, CN_EINVAL, "bad header json"},
    {"duplicate sub in the payload", H, PX(",\"sub\":\"admin\""), SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload nested 16 deep", H, PX(",\"n\":${[*15}${]*15}"), SIG_A, D_NONE, CN_OK, "ok"},
    {"payload nested 17 deep", H, PX(",\"n\":${[*16}${]*16}"), SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload nesting bomb", H, PX(",\"n\":${[*2500}${]*2500}"), SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"brackets inside strings do not nest", H, PX(",\"n\":\"${[*40}\\\"${{*40}\""), SIG_A, D_NONE, CN_OK, "ok"},
    {"payload an array", H, "[{\"sub\":\"u\"}]", SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload a string", H, "\"sub\"", SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload a number", H, "42", SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload with trailing data", H, P " {}", SIG_A, D_NONE, CN_EINVAL, "bad payload json"},
    {"payload with \\u0000 in sub", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\\u0000b\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EINVAL, "bad payload json"},

    /* iss and aud */
    {"wrong issuer", H, PRAW("\"iss\":\"https://evil\",\"aud\":\"" AUD "\",\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong issuer"},
    {"issuer missing", H, PRAW("\"aud\":\"" AUD "\",\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong issuer"},
    {"issuer a prefix of ours", H, PRAW("\"iss\":\"https://auth\",\"aud\":\"" AUD "\",\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong issuer"},
    {"wrong audience", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"other\",\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong audience"},
    {"audience missing", H, PRAW("\"iss\":\"" ISS "\",\"sub\":\"u\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "wrong audience"},

    /* time (NOW = 1700000000, leeway 30 s) */
    {"exp missing", H, PRAW(BASE_CLAIMS), SIG_A, D_NONE, CN_EDENIED, "missing exp"},
    {"exp a string", H, PRAW(BASE_CLAIMS ",\"exp\":\"1700000600\""), SIG_A, D_NONE, CN_EDENIED, "bad exp"},
    {"exp out of range", H, PRAW(BASE_CLAIMS ",\"exp\":1e300"), SIG_A, D_NONE, CN_EDENIED, "bad exp"},
    {"expired beyond leeway", H, PRAW(BASE_CLAIMS ",\"exp\":1699999970"), SIG_A, D_NONE, CN_EDENIED, "expired"},
    {"expired within leeway", H, PRAW(BASE_CLAIMS ",\"exp\":1699999971"), SIG_A, D_NONE, CN_OK, "ok"},
    {"expired long ago", H, PRAW(BASE_CLAIMS ",\"exp\":0"), SIG_A, D_NONE, CN_EDENIED, "expired"},
    {"nbf in the future", H, PX(",\"nbf\":1700000031"), SIG_A, D_NONE, CN_EDENIED, "not yet valid"},
    {"nbf within leeway", H, PX(",\"nbf\":1700000030"), SIG_A, D_NONE, CN_OK, "ok"},
    {"nbf a string", H, PX(",\"nbf\":\"now\""), SIG_A, D_NONE, CN_EDENIED, "bad nbf"},
    {"iat in the future", H, PX(",\"iat\":1700000031"), SIG_A, D_NONE, CN_EDENIED, "issued in the future"},
    {"iat within leeway", H, PX(",\"iat\":1700000030"), SIG_A, D_NONE, CN_OK, "ok"},
    {"iat null", H, PX(",\"iat\":null"), SIG_A, D_NONE, CN_EDENIED, "bad iat"},

    /* claims must fit, never truncated */
    {"sub of 127 bytes", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"${s*127}\",\"exp\":1700000600"), SIG_A, D_NONE, CN_OK, "ok"},
    {"sub of 128 bytes", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"${s*128}\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "bad sub"},
    {"sub missing", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "bad sub"},
    {"sub empty", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"\",\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "bad sub"},
    {"sub a number", H, PRAW("\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":1,\"exp\":1700000600"), SIG_A, D_NONE, CN_EDENIED, "bad sub"},
    {"role of 31 bytes", H, PX(",\"role\":\"${r*31}\""), SIG_A, D_NONE, CN_OK, "ok"},
    {"role of 32 bytes", H, PX(",\"role\":\"${r*32}\""), SIG_A, D_NONE, CN_EDENIED, "bad role"},
    {"role a list", H, PX(",\"role\":[\"admin\"]"), SIG_A, D_NONE, CN_EDENIED, "bad role"},
    {"jti of 64 bytes", H, PX(",\"jti\":\"${j*64}\""), SIG_A, D_NONE, CN_EDENIED, "bad jti"},
    {"scope of 511 bytes", H, PX(",\"scope\":\"${s*511}\""), SIG_A, D_NONE, CN_OK, "ok"},
    {"scope of 512 bytes", H, PX(",\"scope\":\"${s*512}\""), SIG_A, D_NONE, CN_EDENIED, "bad scope"},
};
/* clang-format on */

static void test_corpus(void **state)
{
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < CN_ARRAY_LEN(corpus); i++) {
        const struct corpus_case *t = &corpus[i];
        char *tok = make_token(t->hdr, t->pay, t->signer, t->damage);
        struct cn_jwt_claims c;
        const char *why = NULL;
        int rc = cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why);

        if (rc != t->rc || why == NULL || strcmp(why, t->why) != 0) {
            print_error("corpus \"%s\": got %d \"%s\", want %d \"%s\"\n", t->name, rc,
                        why ? why : "(null)", t->rc, t->why);
            failures++;
        }
        free(tok);
    }
    assert_int_equal(failures, 0);
}

static void test_good_token_fills_claims(void **state)
{
    char *tok = make_token(H, P, SIG_A, D_NONE);
    struct cn_jwt_claims c;
    const char *why;
    (void)state;

    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why), 0);
    assert_string_equal(c.sub, "u-1");
    assert_string_equal(c.role, "user");
    assert_string_equal(c.scope, "jobs:read jobs:write");
    assert_string_equal(c.jti, "j-1");
    assert_string_equal(c.kid, k.kid_a);
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 600);
    assert_int_equal(c.nbf, 0);
    free(tok);
}

/* The caller refreshes its JWKS by the kid it is told about; it is told nothing else. */
static void test_unknown_kid_reports_kid(void **state)
{
    char *tok = make_token(HKID(",\"kid\":\"k-2027\""), P, SIG_A, D_NONE);
    struct cn_jwt_claims c;
    const char *why;
    (void)state;

    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why),
                     CN_ENOTFOUND);
    assert_string_equal(c.kid, "k-2027");
    assert_string_equal(c.sub, "");
    free(tok);
}

/* A verified signature is not enough: a denied claim leaves nothing but the kid. */
static void test_failure_leaves_no_claims(void **state)
{
    char *tok = make_token(H, PRAW(BASE_CLAIMS ",\"role\":\"admin\",\"exp\":1"), SIG_A, D_NONE);
    struct cn_jwt_claims c;
    const char *why;
    (void)state;

    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why),
                     CN_EDENIED);
    assert_string_equal(c.sub, "");
    assert_string_equal(c.role, "");
    assert_int_equal(c.exp, 0);
    free(tok);
}

/* The limit is on the token as given: the largest signable token fits, one more does not. */
static void test_size_limit_boundary(void **state)
{
    struct cn_jwt_claims c;
    const char *why;
    char *best = NULL;
    (void)state;

    for (int n = 5800; n < 6000; n++) {
        char tpl[256];
        snprintf(tpl, sizeof tpl, PX(",\"pad\":\"${x*%d}\""), n);
        char *tok = make_token(H, tpl, SIG_A, D_NONE);
        size_t len = strlen(tok);
        int rc = cn_jwt_verify(tok, len, lookup, NULL, &expect, NOW, &c, &why);
        if (len <= CN_JWT_MAX_LEN) {
            assert_int_equal(rc, CN_OK);
            free(best);
            best = tok;
        } else {
            assert_int_equal(rc, CN_EINVAL);
            assert_string_equal(why, "token too long");
            free(tok);
        }
    }
    assert_non_null(best);
    assert_true(strlen(best) > CN_JWT_MAX_LEN - 4);
    /* The same bytes with a length one past the cap are refused without being read. */
    assert_int_equal(cn_jwt_verify(best, CN_JWT_MAX_LEN + 1, lookup, NULL, &expect, NOW, &c, &why),
                     CN_EINVAL);
    assert_string_equal(why, "token too long");
    free(best);
}

static void test_bad_arguments(void **state)
{
    struct cn_jwt_claims c;
    const char *why;
    struct cn_jwt_expect e = expect;
    char *tok = make_token(H, P, SIG_A, D_NONE);
    (void)state;

    assert_int_equal(cn_jwt_verify(NULL, 0, lookup, NULL, &expect, NOW, &c, &why), CN_EINVAL);
    assert_int_equal(cn_jwt_verify("", 0, lookup, NULL, &expect, NOW, &c, &why), CN_EINVAL);
    assert_int_equal(cn_jwt_verify("..", 2, lookup, NULL, &expect, NOW, &c, &why), CN_EINVAL);
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, NULL, NOW, &c, &why), CN_EINVAL);
    e.iss = NULL;
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &e, NOW, &c, &why), CN_EINVAL);
    e = expect;
    e.leeway_s = -1;
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &e, NOW, &c, &why), CN_EINVAL);
    /* why may be NULL */
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, NULL), 0);
    /* A length that stops short of the NUL is honoured: the token ends where len says. */
    assert_int_equal(cn_jwt_verify(tok, strlen(tok) - 1, lookup, NULL, &expect, NOW, &c, &why),
                     CN_EINVAL);
    free(tok);
}

static void test_sign_roundtrip(void **state)
{
    char *tok = NULL;
    struct cn_jwt_claims c;
    const char *why;
    (void)state;

    assert_int_equal(cn_jwt_sign(k.a, k.kid_a, TYP, P, &tok), 0);
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why), 0);
    assert_string_equal(c.sub, "u-1");
    /* The header is exactly what the contract names, in that order. */
    {
        uint8_t hdr[256];
        size_t n;
        const char *want = "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"";
        assert_int_equal(
            cn_b64url_decode(tok, (size_t)(strchr(tok, '.') - tok), hdr, sizeof hdr - 1, &n), 0);
        hdr[n] = '\0';
        assert_memory_equal(hdr, want, strlen(want));
    }
    free(tok);

    /* Signed by a key the verifier does not know under that kid: bad signature. */
    assert_int_equal(cn_jwt_sign(k.b, k.kid_a, TYP, P, &tok), 0);
    assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why),
                     CN_EDENIED);
    free(tok);
}

static void test_sign_refuses(void **state)
{
    char *tok = (char *)1;
    char kid64[65];
    struct cn_buf big = {0};
    (void)state;

    memset(kid64, 'k', 64);
    kid64[64] = '\0';
    assert_int_equal(cn_jwt_sign(k.a, kid64, TYP, P, &tok), CN_EINVAL);
    assert_null(tok);
    assert_int_equal(cn_jwt_sign(k.a, "", TYP, P, &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.a, "k", TYP, "[1]", &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.a, "k", TYP, "{\"a\":1,\"a\":2}", &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.a, "k", TYP, "{\"a\":1", &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.a, "k", NULL, P, &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.a, "k\xff", TYP, P, &tok), CN_EINVAL);
    assert_int_equal(cn_jwt_sign(k.xkey, "k", TYP, P, &tok), CN_ECRYPTO);
    assert_null(tok);
    expand(&big, PX(",\"pad\":\"${x*6200}\""));
    assert_int_equal(cn_jwt_sign(k.a, "k", TYP, big.data, &tok), CN_ETOOBIG);
    assert_null(tok);
    cn_buf_free(&big);
}

/* RFC 8037 A.1-A.4: the key's "x", its thumbprint, and the deterministic signature. */
static void test_rfc8037_vectors(void **state)
{
    uint8_t d[32], sig[64];
    size_t n, siglen = sizeof sig;
    char x[44], thumb[44], sigtxt[128];
    EVP_PKEY *priv, *pub;
    EVP_MD_CTX *md;
    (void)state;

    assert_int_equal(cn_b64url_decode(RFC_D, strlen(RFC_D), d, sizeof d, &n), 0);
    assert_int_equal(n, 32);
    priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, sizeof d);
    assert_non_null(priv);
    assert_int_equal(cn_jwk_x(priv, x), 0);
    assert_string_equal(x, RFC_X);
    assert_int_equal(cn_jwk_thumbprint(priv, thumb), 0);
    assert_string_equal(thumb, RFC_THUMB);

    md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, priv), 1);
    assert_int_equal(
        EVP_DigestSign(md, sig, &siglen, (const uint8_t *)RFC_INPUT, strlen(RFC_INPUT)), 1);
    cn_b64url_encode(sig, siglen, sigtxt);
    assert_string_equal(sigtxt, RFC_SIG);
    EVP_MD_CTX_free(md);

    /* The public key rebuilt from "x" alone verifies the RFC's signature. */
    pub = cn_jwk_key_from_x(RFC_X);
    assert_non_null(pub);
    assert_int_equal(cn_jwk_thumbprint(pub, thumb), 0);
    assert_string_equal(thumb, RFC_THUMB);
    md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub), 1);
    assert_int_equal(
        EVP_DigestVerify(md, sig, siglen, (const uint8_t *)RFC_INPUT, strlen(RFC_INPUT)), 1);
    EVP_MD_CTX_free(md);

    /* The RFC's token has no typ or kid: our verifier refuses it for that alone. */
    {
        const char *tok = RFC_INPUT "." RFC_SIG;
        struct cn_jwt_claims c;
        const char *why;
        assert_int_equal(cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why),
                         CN_EDENIED);
        assert_string_equal(why, "wrong typ");
    }
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

static void test_key_from_x_refuses(void **state)
{
    char x[44];
    (void)state;

    assert_null(cn_jwk_key_from_x(NULL));
    assert_null(cn_jwk_key_from_x(""));
    assert_null(cn_jwk_key_from_x("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUR"));  /* 42 */
    assert_null(cn_jwk_key_from_x(RFC_X "A"));                                     /* 44 */
    assert_null(cn_jwk_key_from_x(RFC_X "="));                                     /* padded */
    assert_null(cn_jwk_key_from_x("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo")); /* '/' */
    assert_null(cn_jwk_key_from_x("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURp")); /* bits */
    assert_int_equal(cn_jwk_x(k.xkey, x), CN_EINVAL);
    assert_int_equal(cn_jwk_thumbprint(NULL, x), CN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_good_token_fills_claims),
        cmocka_unit_test(test_unknown_kid_reports_kid),
        cmocka_unit_test(test_failure_leaves_no_claims),
        cmocka_unit_test(test_size_limit_boundary),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_sign_roundtrip),
        cmocka_unit_test(test_sign_refuses),
        cmocka_unit_test(test_rfc8037_vectors),
        cmocka_unit_test(test_key_from_x_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
