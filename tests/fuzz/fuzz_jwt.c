/* fuzz_jwt.c — libFuzzer target for cn_jwt_verify, the parser every bearer token meets.
 *
 * Each input is verified as a token against one fixed key. Random bytes almost never
 * carry a valid signature, so the claim checks behind it would stay unreached: an input
 * that starts with '{' is therefore also signed as a payload with the fixed key and the
 * result verified, which drives the payload parser and every claim check. That second
 * path has an oracle: a token we signed ourselves must never fail on its encoding, its
 * kid or its signature.
 *
 * Build and run through scripts/fuzz; seeds live in tests/fuzz/corpus/fuzz_jwt/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "err.h"
#include "jwt.h"

#define KID "fuzz-key"
#define NOW 1700000000

static EVP_PKEY *key;

static EVP_PKEY *lookup(const char *kid, void *arg)
{
    (void)arg;
    return strcmp(kid, KID) == 0 ? key : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* A fixed key, so a crash reproduces from its input alone. */
    static const uint8_t seed[32] = {
        0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
        0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
        0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
    };
    (void)argc;
    (void)argv;
    key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    if (key == NULL)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct cn_jwt_expect expect = {"https://auth.cairn", "cairn-api", "at+jwt", 30};
    struct cn_jwt_claims c;
    const char *why = NULL;
    char *payload, *tok = NULL;
    int rc;

    rc = cn_jwt_verify((const char *)data, size, lookup, NULL, &expect, NOW, &c, &why);
    if (why == NULL)
        abort();
    if (rc == 0 && (c.sub[0] == '\0' || strlen(c.scope) >= sizeof c.scope))
        abort();

    if (size == 0 || data[0] != '{')
        return 0;
    payload = malloc(size + 1);
    if (payload == NULL)
        return 0;
    memcpy(payload, data, size);
    payload[size] = '\0';
    if (cn_jwt_sign(key, KID, "at+jwt", payload, &tok) == 0) {
        rc = cn_jwt_verify(tok, strlen(tok), lookup, NULL, &expect, NOW, &c, &why);
        if (rc == CN_ENOTFOUND || strcmp(why, "bad signature") == 0 ||
            strcmp(why, "bad signature encoding") == 0 || strcmp(why, "not three segments") == 0 ||
            strcmp(why, "bad base64url") == 0 || strcmp(why, "token too long") == 0 ||
            strcmp(why, "bad header json") == 0 || strcmp(why, "bad payload json") == 0) {
            fprintf(stderr, "own token refused: %s\n", why);
            abort();
        }
        free(tok);
    }
    free(payload);
    return 0;
}
