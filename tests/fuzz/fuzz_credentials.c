/* fuzz_credentials.c — libFuzzer target for credential headers and revocation events:
 * the input split at the first NUL is an Authorization and an X-API-Key value (a missing
 * NUL: Authorization only), classified by gw_credential_parse; the whole input is also
 * applied as a revocation event. Must never crash, and a key it accepts must re-check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apikeys.h"
#include "credentials.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (gw_apikeys_start("", 1000, 3600) != 0)
            abort();
        ready = 1;
    }
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    struct gw_credential c;
    if (nul)
        gw_credential_parse(s, (size_t)(nul - s), nul + 1, size - (size_t)(nul - s) - 1, &c);
    else
        gw_credential_parse(s, size, NULL, 0, &c);
    if (c.kind == GW_CRED_APIKEY) {
        struct cn_apikey k;
        if (cn_apikey_parse(c.token, c.len, &k) != 0 || strcmp(k.id, c.key.id) != 0)
            abort();
    }
    if ((c.kind == GW_CRED_JWT || c.kind == GW_CRED_APIKEY) && (c.token < s || c.token + c.len > s + size))
        abort();
    gw_apikeys_apply_event(s, size);
    return 0;
}
