/* credentials.h — what a request presents (credentials.c) and whether the principal it
 * stands for may use a route. Pure functions over header values, kept apart from h2o
 * so the rules can be unit-tested and fuzzed.
 *
 * A credential is `Authorization: Bearer <token>` or `X-API-Key: <key>`. A Bearer value
 * starting with "cairn_" is an API key; anything else is taken as a JWT. Both headers
 * at once must carry the same value.
 */
#ifndef GW_CREDENTIALS_H
#define GW_CREDENTIALS_H

#include <stddef.h>

#include "apikey.h"
#include "authn.h"
#include "routes.h"

enum gw_cred_kind {
    GW_CRED_NONE,      /* nothing presented */
    GW_CRED_MALFORMED, /* a header that is not of the form: 400 */
    GW_CRED_JWT,
    GW_CRED_APIKEY,    /* the format and checksum held: key is filled */
    GW_CRED_BADKEY,    /* looked like a key but the format or checksum did not hold: 401 */
};

struct gw_credential {
    enum gw_cred_kind kind;
    const char *token;         /* the JWT or key text, inside the header value */
    size_t len;
    struct cn_apikey key;
    const char *why;           /* for MALFORMED/BADKEY: what to fix */
};

/* Classifies the credential from the two header values (NULL when absent). */
void gw_credential_parse(const char *authorization, size_t alen, const char *x_api_key, size_t klen,
                         struct gw_credential *out);

/* May principal p use route r? Returns 0, or 403 with why filled (the route needs a
 * session, the admin role, or a scope the principal lacks). */
int gw_authorize(const struct gw_route *r, const struct gw_principal *p, char *why, size_t whylen);

/* 1 if the space-separated scope list has scope. */
int gw_scope_has(const char *list, const char *scope);

#endif
