/* problem.h — the one table from gRPC codes to HTTP statuses, and RFC 9457
 * application/problem+json bodies.
 *
 * Every error the gateway answers goes through gw_problem_body(), so clients see one
 * shape: {type, title, status, detail, request_id, errors:[{field, message}]} — except
 * on routes flagged GW_ROUTE_OIP_ERRORS, whose clients (KServe, Triton) expect the Open
 * Inference Protocol's {"error": "<message>"}: gw_oip_error_body(), same status.
 */
#ifndef GW_PROBLEM_H
#define GW_PROBLEM_H

#include <stddef.h>

#include "cairn/v1/rpc.pb-c.h"

struct cn_buf;

/* HTTP status for a result code. */
int gw_code_status(Cairn__V1__Code code);
/* Reason phrase for an HTTP status ("Not Found"). */
const char *gw_status_reason(int status);

/* Appends a problem document. errors may be NULL. */
void gw_problem_body(struct cn_buf *out, int status, const char *detail, const char *request_id,
                     Cairn__V1__FieldError *const *errors, size_t nerrors);

/* Appends an Open Inference Protocol error, {"error": "<message>"}: detail (the status's
 * reason phrase when empty), then the field errors folded in as
 * ": field: message; field: message". errors may be NULL. */
void gw_oip_error_body(struct cn_buf *out, int status, const char *detail, Cairn__V1__FieldError *const *errors,
                       size_t nerrors);

#endif
