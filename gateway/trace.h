/* trace.h — W3C Trace Context (`traceparent`) at the edge.
 *
 * A client may send `traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
 * The gateway keeps a valid one's trace id and flags, or starts a new trace when the
 * header is absent or invalid (a bad header is never an error: tracing must not refuse
 * traffic). Either way it makes its own span id and sends the service
 * `00-<trace id>-<gateway span id>-<flags>` in Call.traceparent, so the service's work
 * is a child of the gateway's hop. The trace id goes into the access log.
 *
 * Only version 00 is understood (exactly 55 characters, lowercase hex); a trace id or
 * parent id of all zeros is invalid, as the specification says.
 */
#ifndef GW_TRACE_H
#define GW_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define GW_TRACEPARENT_LEN 55

struct gw_trace {
    char trace_id[33];     /* 32 lowercase hex + NUL */
    char parent_id[17];    /* the caller's span (the client's, or ours towards services) */
    uint8_t flags;         /* trace-flags; bit 0 = sampled */
};

/* Parses a traceparent header value of n bytes. Returns 0 and fills out when it is a
 * valid version-00 value, -1 otherwise (out untouched). */
int gw_trace_parse(const char *s, size_t n, struct gw_trace *out);
/* A new trace: random trace id and parent id, flags 01 (the access log records every
 * request). */
void gw_trace_new(struct gw_trace *out);
/* A new random span id: 16 lowercase hex + NUL, never all zeros. */
void gw_trace_span_new(char out[17]);
/* Writes "00-<trace_id>-<span_id>-<flags>" + NUL into out. */
void gw_trace_format(const char *trace_id, const char *span_id, uint8_t flags, char out[GW_TRACEPARENT_LEN + 1]);

#endif
