/* auth_keys.c — the Ed25519 keys that sign access tokens, and what JWKS publishes.
 *
 * Keys come from one of two places, chosen at start-up:
 *   - CAIRN_AUTH_KEY_FILE (a PEM private key): that key alone signs and is published;
 *     the operator owns rotation.
 *   - Postgres (auth.signing_keys): the newest non-retired key signs, all non-retired keys
 *     are published. The first replica to start makes one; a transaction-level advisory
 *     lock makes replicas that start together agree on it (auth_db_keys_ensure).
 * Keys are loaded once, in init, before any worker runs, and are read-only afterwards, so
 * workers share them without locks. The kid is the RFC 7638 thumbprint.
 *
 * To rotate keys at run time, add a reload here under a lock and retire keys in auth_db.c.
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "err.h"
#include "jwt.h"
#include "log.h"

#define MAX_KEYS 8

static struct {
    struct auth_key keys[MAX_KEYS];
    size_t n;
} ks;

/* Fills k (kid, x) from pkey, taking ownership of pkey on success. */
static int key_adopt(EVP_PKEY *pkey, struct auth_key *k)
{
    if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519)
        return CN_EINVAL;
    if (cn_jwk_thumbprint(pkey, k->kid) != CN_OK || cn_jwk_x(pkey, k->x) != CN_OK)
        return CN_ECRYPTO;
    k->pkey = pkey;
    return CN_OK;
}

static int load_file(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *pkey;
    int rc;

    if (f == NULL) {
        cn_log_error("AUTH-KEY-FILE", "cannot open CAIRN_AUTH_KEY_FILE %s: %s", path,
                     strerror(errno));
        return CN_EIO;
    }
    pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (pkey == NULL) {
        unsigned long e = ERR_get_error();
        cn_log_error("AUTH-KEY-FILE", "CAIRN_AUTH_KEY_FILE %s is not a PEM private key: %s", path,
                     e ? ERR_reason_error_string(e) : "no key found");
        ERR_clear_error();
        return CN_EINVAL;
    }
    rc = key_adopt(pkey, &ks.keys[0]);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY-FILE", "CAIRN_AUTH_KEY_FILE %s: %s", path,
                     rc == CN_EINVAL ? "not an Ed25519 key" : "cannot compute its JWK");
        EVP_PKEY_free(pkey);
        return rc;
    }
    ks.n = 1;
    cn_log_info("AUTH-KEY", "signing with key %s from CAIRN_AUTH_KEY_FILE", ks.keys[0].kid);
    return CN_OK;
}

/* Makes a new key as it would be stored: raw private bytes and thumbprint. */
static int key_generate(struct auth_db_key *out)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t len = sizeof out->priv;
    int rc = CN_ECRYPTO;

    if (pkey != NULL && EVP_PKEY_get_raw_private_key(pkey, out->priv, &len) == 1 &&
        len == sizeof out->priv && cn_jwk_thumbprint(pkey, out->kid) == CN_OK)
        rc = CN_OK;
    EVP_PKEY_free(pkey);
    return rc;
}

static int load_db(struct cn_pg *pg)
{
    struct auth_db_key fresh, stored[MAX_KEYS];
    size_t n = 0;
    int rc;

    rc = key_generate(&fresh);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY", "cannot generate an Ed25519 key");
        return rc;
    }
    rc = auth_db_keys_ensure(pg, &fresh, stored, MAX_KEYS, &n);
    OPENSSL_cleanse(&fresh, sizeof fresh);
    if (rc != CN_OK) {
        cn_log_error("AUTH-KEY", "cannot load signing keys from the database (%s): %s %s",
                     cn_strerror(rc), cn_pg_sqlstate(pg), cn_pg_errmsg(pg));
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, stored[i].priv,
                                                      sizeof stored[i].priv);
        if (pkey == NULL || key_adopt(pkey, &ks.keys[ks.n]) != CN_OK) {
            EVP_PKEY_free(pkey);
            cn_log_error("AUTH-KEY", "stored signing key %s is unusable", stored[i].kid);
            rc = CN_ECRYPTO;
            break;
        }
        if (strcmp(ks.keys[ks.n].kid, stored[i].kid) != 0)
            cn_log_warn("AUTH-KEY", "stored kid %s does not match its key; publishing %s",
                        stored[i].kid, ks.keys[ks.n].kid);
        ks.n++;
    }
    OPENSSL_cleanse(stored, sizeof stored);
    if (rc != CN_OK) {
        auth_keys_free();
        return rc;
    }
    cn_log_info("AUTH-KEY", "signing with key %s (%zu key(s) published)", ks.keys[0].kid, ks.n);
    return CN_OK;
}

int auth_keys_load(struct cn_pg *pg, const char *key_file)
{
    auth_keys_free();
    if (key_file != NULL && *key_file != '\0')
        return load_file(key_file);
    return load_db(pg);
}

void auth_keys_free(void)
{
    for (size_t i = 0; i < ks.n; i++)
        EVP_PKEY_free(ks.keys[i].pkey);
    memset(&ks, 0, sizeof ks);
}

const struct auth_key *auth_keys_signing(void) { return ks.n > 0 ? &ks.keys[0] : NULL; }

const struct auth_key *auth_keys_all(size_t *n)
{
    *n = ks.n;
    return ks.keys;
}
