/* apikey.c — minting, parsing and hashing API keys (apikey.h). */
#include "apikey.h"

#include <string.h>

#include <openssl/sha.h>
#include <zlib.h>

#include "err.h"
#include "util.h"

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static int is_b62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* n random base62 characters, without modulo bias (rejection of bytes >= 248). */
static void random_b62(char *out, size_t n)
{
    size_t i = 0;
    unsigned char buf[64];
    while (i < n) {
        cn_random_bytes(buf, sizeof buf);
        for (size_t j = 0; j < sizeof buf && i < n; j++)
            if (buf[j] < 248)
                out[i++] = b62[buf[j] % 62];
    }
    out[n] = '\0';
}

/* The checksum of the first len characters: CRC-32 in 6 base62 digits. */
static void checksum(const char *s, size_t len, char out[CN_APIKEY_CHECK_LEN])
{
    uLong crc = crc32(0L, (const Bytef *)s, (uInt)len);
    for (int i = CN_APIKEY_CHECK_LEN - 1; i >= 0; i--) {
        out[i] = b62[crc % 62];
        crc /= 62;
    }
}

void cn_apikey_new(struct cn_apikey *k, char out[CN_APIKEY_LEN + 1])
{
    random_b62(k->id, CN_APIKEY_ID_LEN);
    random_b62(k->secret, CN_APIKEY_SECRET_LEN);
    size_t n = 0;
    memcpy(out, CN_APIKEY_PREFIX, 6);
    n += 6;
    memcpy(out + n, k->id, CN_APIKEY_ID_LEN);
    n += CN_APIKEY_ID_LEN;
    out[n++] = '_';
    memcpy(out + n, k->secret, CN_APIKEY_SECRET_LEN);
    n += CN_APIKEY_SECRET_LEN;
    checksum(out, n, out + n);
    n += CN_APIKEY_CHECK_LEN;
    out[n] = '\0';
}

int cn_apikey_looks_like(const char *s, size_t len)
{
    return len >= 6 && memcmp(s, CN_APIKEY_PREFIX, 6) == 0;
}

int cn_apikey_parse(const char *s, size_t len, struct cn_apikey *k)
{
    if (len != CN_APIKEY_LEN || !cn_apikey_looks_like(s, len) || s[6 + CN_APIKEY_ID_LEN] != '_')
        return CN_EINVAL;
    for (size_t i = 6; i < len; i++)
        if (i != 6 + CN_APIKEY_ID_LEN && !is_b62(s[i]))
            return CN_EINVAL;
    char want[CN_APIKEY_CHECK_LEN];
    size_t body = len - CN_APIKEY_CHECK_LEN;
    checksum(s, body, want);
    if (memcmp(want, s + body, CN_APIKEY_CHECK_LEN) != 0)
        return CN_EINVAL;
    memcpy(k->id, s + 6, CN_APIKEY_ID_LEN);
    k->id[CN_APIKEY_ID_LEN] = '\0';
    memcpy(k->secret, s + 7 + CN_APIKEY_ID_LEN, CN_APIKEY_SECRET_LEN);
    k->secret[CN_APIKEY_SECRET_LEN] = '\0';
    return CN_OK;
}

void cn_apikey_hash(const struct cn_apikey *k, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)k->secret, CN_APIKEY_SECRET_LEN, d);
    cn_hex(d, sizeof d, out);
}
