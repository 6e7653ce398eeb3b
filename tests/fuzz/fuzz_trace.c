/* fuzz_trace.c — libFuzzer target for the request headers the gateway reads for tracing
 * and fault injection: the whole input as a traceparent (gw_trace_parse; an accepted
 * value must format back to exactly itself), and the input split at the first NUL as
 * X-Fault-Delay-Ms and X-Fault-Abort values (gw_fault_parse_headers; accepted values must
 * be in range, a refusal must name one of the two headers). Must never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct gw_trace t;
    if (gw_trace_parse(s, size, &t) == 0) {
        char back[GW_TRACEPARENT_LEN + 1];
        gw_trace_format(t.trace_id, t.parent_id, t.flags, back);
        if (size != GW_TRACEPARENT_LEN || memcmp(back, s, size) != 0)
            abort();
    }

    const char *nul = memchr(s, '\0', size);
    const char *abort_v = nul ? nul + 1 : NULL;
    size_t dlen = nul ? (size_t)(nul - s) : size, alen = nul ? size - dlen - 1 : 0;
    int delay = -1, status = -1;
    const char *bad = NULL;
    if (gw_fault_parse_headers(s, dlen, abort_v, alen, &delay, &status, &bad) == 0) {
        if (delay < 0 || delay > GW_FAULT_MAX_DELAY_MS || (abort_v && (status < 400 || status > 599)))
            abort();
    } else if (bad == NULL || (strcmp(bad, "X-Fault-Delay-Ms") != 0 && strcmp(bad, "X-Fault-Abort") != 0)) {
        abort();
    }
    return 0;
}
