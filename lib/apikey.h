/* apikey.h — the format of Cairn API keys, shared by cairn-auth (which mints them) and
 * the gateway (which refuses typos before asking anyone).
 *
 *   cairn_<id>_<secret><check>
 *   id      12 base62 characters, public: names the key in lists, logs and URLs
 *   secret  32 base62 characters (~190 bits), shown once, stored only as SHA-256
 *   check   6 base62 characters: CRC-32 of everything before it
 * The fixed prefix lets secret scanners (GitHub's, trufflehog) recognise a leaked key, as
 * GitHub's ghp_ and Stripe's sk_live_ do; the checksum rejects a mistyped or truncated key
 * without a database lookup. 57 characters in all.
 */
#ifndef CN_APIKEY_H
#define CN_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define CN_APIKEY_PREFIX "cairn_"
#define CN_APIKEY_ID_LEN 12
#define CN_APIKEY_SECRET_LEN 32
#define CN_APIKEY_CHECK_LEN 6
#define CN_APIKEY_LEN (6 + CN_APIKEY_ID_LEN + 1 + CN_APIKEY_SECRET_LEN + CN_APIKEY_CHECK_LEN)

struct cn_apikey {
    char id[CN_APIKEY_ID_LEN + 1];
    char secret[CN_APIKEY_SECRET_LEN + 1];
};

/* Mints a new random key: fills k and writes the full key text + NUL into out. */
void cn_apikey_new(struct cn_apikey *k, char out[CN_APIKEY_LEN + 1]);
/* Parses a presented key (len bytes). Returns 0 and fills k, or CN_EINVAL when it is
 * not of the format or its checksum does not match. */
int cn_apikey_parse(const char *s, size_t len, struct cn_apikey *k);
/* 1 if s looks like an API key at all (starts with the prefix): a Bearer value that does
 * is treated as a key, not as a JWT. */
int cn_apikey_looks_like(const char *s, size_t len);
/* Lowercase hex SHA-256 of the secret (64 chars + NUL): what is stored and compared. */
void cn_apikey_hash(const struct cn_apikey *k, char out[65]);

#endif
