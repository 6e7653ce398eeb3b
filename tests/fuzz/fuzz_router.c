/* fuzz_router.c — libFuzzer target for the gateway's request-line parsing: route
 * matching on arbitrary methods and paths against the real route table, and the
 * percent-decoder for path and query parameters. Input: method, a NUL, then the path. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        char err[256];
        if (gw_router_init(err, sizeof err) != 0)
            abort();
        ready = 1;
    }
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    const char *method = nul ? s : "GET";
    size_t mlen = nul ? (size_t)(nul - s) : 3;
    const char *path = nul ? nul + 1 : s;
    size_t plen = nul ? size - mlen - 1 : size;

    struct gw_match m;
    char allow[64];
    enum gw_route_result r = gw_router_match(method, mlen, path, plen, &m, allow, sizeof allow);
    if (r == GW_ROUTE_FOUND) {
        for (size_t i = 0; i < m.nparams; i++) {
            const struct gw_param *p = &m.params[i];
            if (p->value < path || p->value + p->value_len > path + plen || p->value_len == 0)
                abort();
        }
    }
    char *out = malloc(plen + 1);
    long n = gw_url_decode(path, plen, out, 1);
    if (n > (long)plen)
        abort();
    free(out);
    return 0;
}
