/* b64.h — base64 (RFC 4648 §4) and base64url without padding (§5, as JWT uses).
 *
 * OpenSSL's EVP_DecodeBlock counts padding as data bytes and knows no url alphabet, so
 * these are small exact codecs. Decoders reject any character outside the alphabet,
 * bad padding and non-canonical trailing bits.
 */
#ifndef CN_B64_H
#define CN_B64_H

#include <stddef.h>
#include <stdint.h>

/* Encoded length (without NUL) for n input bytes. */
size_t cn_b64_len(size_t n);
size_t cn_b64url_len(size_t n);
/* Writes the encoding plus a NUL into out (cap >= len+1); returns its length. */
size_t cn_b64_encode(const uint8_t *in, size_t n, char *out);
size_t cn_b64url_encode(const uint8_t *in, size_t n, char *out);
/* Decodes n characters into out (cap bytes). Returns 0 and *outlen, or CN_EINVAL
 * (bad character/length/padding) or CN_ETOOBIG (cap too small). cn_b64_decode accepts
 * padded standard base64; cn_b64url_decode unpadded url-safe base64. */
int cn_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);
int cn_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

#endif
