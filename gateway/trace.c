/* trace.c — W3C traceparent parsing and generation (see trace.h). Ids are random bytes
 * from cn_random_id_bytes; hex is lowercase, as the specification requires on the wire.
 */
#include "trace.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid in version 00 */
}

/* Whether s[0..n) is lowercase hex, and not all zeros when nonzero is set. */
static bool hex_field(const char *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        int v = hexval(s[i]);
        if (v < 0)
            return false;
        any |= v != 0;
    }
    return any || !nonzero;
}

int gw_trace_parse(const char *s, size_t n, struct gw_trace *out)
{
    /* 00-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-PPPPPPPPPPPPPPPP-FF */
    if (s == NULL || n != GW_TRACEPARENT_LEN)
        return -1;
    if (s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    if (!hex_field(s + 3, 32, true) || !hex_field(s + 36, 16, true) || !hex_field(s + 53, 2, false))
        return -1;
    memcpy(out->trace_id, s + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->parent_id, s + 36, 16);
    out->parent_id[16] = '\0';
    out->flags = (uint8_t)(hexval(s[53]) << 4 | hexval(s[54]));
    return 0;
}

/* n random bytes as 2n hex characters, retried in the (2^-64 or less) case of all zeros. */
static void random_hex(char *out, size_t n)
{
    unsigned char b[16];
    for (;;) {
        cn_random_id_bytes(b, n);
        for (size_t i = 0; i < n; i++) {
            if (b[i]) {
                cn_hex(b, n, out);
                return;
            }
        }
    }
}

void gw_trace_span_new(char out[17]) { random_hex(out, 8); }

void gw_trace_new(struct gw_trace *out)
{
    random_hex(out->trace_id, 16);
    random_hex(out->parent_id, 8);
    out->flags = 0x01;
}

void gw_trace_format(const char *trace_id, const char *span_id, uint8_t flags, char out[GW_TRACEPARENT_LEN + 1])
{
    snprintf(out, GW_TRACEPARENT_LEN + 1, "00-%.32s-%.16s-%02x", trace_id, span_id, flags);
}
