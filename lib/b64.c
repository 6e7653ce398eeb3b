/* b64.c — exact base64 codecs: padded standard (RFC 4648 §4) and unpadded base64url
 * (§5, the JWT form). See b64.h.
 *
 * Both directions share one core parameterised by alphabet and padding. Decoding is
 * strict because tokens and keys arrive from the network: a value has exactly one
 * accepted spelling, so two different strings never decode to the same bytes (no stray
 * padding, no whitespace, no non-zero bits left over in the last character).
 * To add another variant (say padded url-safe), add an alphabet and a flag pair here.
 */
#include "b64.h"

#include "err.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t cn_b64_len(size_t n) { return (n + 2) / 3 * 4; }

size_t cn_b64url_len(size_t n)
{
    /* A trailing group of 1 byte needs 2 characters, of 2 bytes 3. */
    static const size_t tail[3] = {0, 2, 3};
    return n / 3 * 4 + tail[n % 3];
}

static size_t encode(const uint8_t *in, size_t n, char *out, const char *alpha, int pad)
{
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t cn_b64_encode(const uint8_t *in, size_t n, char *out)
{
    return encode(in, n, out, std_alphabet, 1);
}

size_t cn_b64url_encode(const uint8_t *in, size_t n, char *out)
{
    return encode(in, n, out, url_alphabet, 0);
}

/* The 6-bit value of c in the chosen alphabet, or -1. Ranges instead of a lookup table
 * keep the two alphabets obviously in step with the encoder's. */
static int sextet(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes n characters that contain no padding (already stripped and checked by the
 * caller). The structure (n % 4 != 1) and the cap are checked before any character, so
 * a CN_ETOOBIG answer says nothing about the characters themselves. */
static int decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen, int url)
{
    static const size_t tail_bytes[4] = {0, 0, 1, 2};
    size_t need, o = 0, i = 0;

    if (n % 4 == 1)
        return CN_EINVAL;
    need = n / 4 * 3 + tail_bytes[n % 4];
    if (need > cap)
        return CN_ETOOBIG;

    for (; i + 4 <= n; i += 4) {
        int a = sextet((unsigned char)in[i], url), b = sextet((unsigned char)in[i + 1], url);
        int c = sextet((unsigned char)in[i + 2], url), d = sextet((unsigned char)in[i + 3], url);
        if ((a | b | c | d) < 0)
            return CN_EINVAL;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (n - i == 2) {
        int a = sextet((unsigned char)in[i], url), b = sextet((unsigned char)in[i + 1], url);
        /* Only the top 2 bits of b carry data; the rest must be zero (canonical). */
        if ((a | b) < 0 || (b & 15) != 0)
            return CN_EINVAL;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
    } else if (n - i == 3) {
        int a = sextet((unsigned char)in[i], url), b = sextet((unsigned char)in[i + 1], url);
        int c = sextet((unsigned char)in[i + 2], url);
        /* Only the top 4 bits of c carry data. */
        if ((a | b | c) < 0 || (c & 3) != 0)
            return CN_EINVAL;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
        out[o++] = (uint8_t)((b & 15) << 4 | c >> 2);
    }
    *outlen = o;
    return CN_OK;
}

int cn_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t pad = 0;

    /* Padded base64 always comes in whole quads, with at most "==" at the very end; the
     * data characters before the padding must then form a 2- or 3-character tail. */
    if (n % 4 != 0)
        return CN_EINVAL;
    while (pad < n && pad < 3 && in[n - 1 - pad] == '=')
        pad++;
    if (pad > 2)
        return CN_EINVAL;
    /* Any '=' left among the data characters is caught by sextet(). */
    return decode(in, n - pad, out, cap, outlen, 0);
}

int cn_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    /* No padding in this form: an '=' is just a character outside the alphabet. */
    return decode(in, n, out, cap, outlen, 1);
}
