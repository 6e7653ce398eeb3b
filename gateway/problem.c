/* problem.c — gRPC code -> HTTP status, reason phrases, problem+json and the Open
 * Inference Protocol's error body (problem.h).
 * To add a status: one row in `statuses`; to remap a code: one row in `codes`. */
#include "problem.h"

#include <string.h>

#include "buf.h"

static const struct {
    Cairn__V1__Code code;
    int status;
} codes[] = {
    {CAIRN__V1__CODE__OK, 200},
    {CAIRN__V1__CODE__CANCELLED, 499},
    {CAIRN__V1__CODE__UNKNOWN, 500},
    {CAIRN__V1__CODE__INVALID_ARGUMENT, 400},
    {CAIRN__V1__CODE__DEADLINE_EXCEEDED, 504},
    {CAIRN__V1__CODE__NOT_FOUND, 404},
    {CAIRN__V1__CODE__ALREADY_EXISTS, 409},
    {CAIRN__V1__CODE__PERMISSION_DENIED, 403},
    {CAIRN__V1__CODE__RESOURCE_EXHAUSTED, 429},
    {CAIRN__V1__CODE__FAILED_PRECONDITION, 412},
    {CAIRN__V1__CODE__ABORTED, 409},
    {CAIRN__V1__CODE__OUT_OF_RANGE, 400},
    {CAIRN__V1__CODE__UNIMPLEMENTED, 501},
    {CAIRN__V1__CODE__INTERNAL, 500},
    {CAIRN__V1__CODE__UNAVAILABLE, 503},
    {CAIRN__V1__CODE__DATA_LOSS, 500},
    {CAIRN__V1__CODE__UNAUTHENTICATED, 401},
};

static const struct {
    int status;
    const char *reason;
    const char *slug;
} statuses[] = {
    {200, "OK", "ok"},
    {201, "Created", "created"},
    {202, "Accepted", "accepted"},
    {204, "No Content", "no-content"},
    /* Every 4xx and 5xx of RFC 9110 (and 429, 431, 451, 499): the gateway's own answers
     * use a few, but an injected fault (X-Fault-Abort) may be any of them. */
    {400, "Bad Request", "bad-request"},
    {401, "Unauthorized", "unauthorized"},
    {402, "Payment Required", "payment-required"},
    {403, "Forbidden", "forbidden"},
    {404, "Not Found", "not-found"},
    {405, "Method Not Allowed", "method-not-allowed"},
    {406, "Not Acceptable", "not-acceptable"},
    {407, "Proxy Authentication Required", "proxy-authentication-required"},
    {408, "Request Timeout", "request-timeout"},
    {409, "Conflict", "conflict"},
    {410, "Gone", "gone"},
    {411, "Length Required", "length-required"},
    {412, "Precondition Failed", "precondition-failed"},
    {413, "Content Too Large", "content-too-large"},
    {414, "URI Too Long", "uri-too-long"},
    {415, "Unsupported Media Type", "unsupported-media-type"},
    {416, "Range Not Satisfiable", "range-not-satisfiable"},
    {417, "Expectation Failed", "expectation-failed"},
    {421, "Misdirected Request", "misdirected-request"},
    {422, "Unprocessable Content", "unprocessable-content"},
    {426, "Upgrade Required", "upgrade-required"},
    {428, "Precondition Required", "precondition-required"},
    {429, "Too Many Requests", "too-many-requests"},
    {431, "Request Header Fields Too Large", "request-header-fields-too-large"},
    {451, "Unavailable For Legal Reasons", "unavailable-for-legal-reasons"},
    {499, "Client Closed Request", "client-closed-request"},
    {500, "Internal Server Error", "internal"},
    {501, "Not Implemented", "not-implemented"},
    {502, "Bad Gateway", "bad-gateway"},
    {503, "Service Unavailable", "unavailable"},
    {504, "Gateway Timeout", "gateway-timeout"},
    {505, "HTTP Version Not Supported", "http-version-not-supported"},
};

int gw_code_status(Cairn__V1__Code code)
{
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code)
            return codes[i].status;
    return 500;
}

static int status_index(int status)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].status == status)
            return (int)i;
    return -1;
}

const char *gw_status_reason(int status)
{
    int i = status_index(status);
    return i < 0 ? "Error" : statuses[i].reason;
}

void gw_problem_body(struct cn_buf *out, int status, const char *detail, const char *request_id,
                     Cairn__V1__FieldError *const *errors, size_t nerrors)
{
    int i = status_index(status);
    /* One type per status: one outside the table (a fault may inject 418) is named by number. */
    if (i < 0)
        cn_buf_printf(out, "{\"type\":\"urn:cairn:problem:status-%d\",\"title\":", status);
    else
        cn_buf_printf(out, "{\"type\":\"urn:cairn:problem:%s\",\"title\":", statuses[i].slug);
    const char *title = gw_status_reason(status);
    cn_buf_json_str(out, title, strlen(title));
    cn_buf_printf(out, ",\"status\":%d,\"detail\":", status);
    detail = detail && *detail ? detail : title;
    cn_buf_json_str(out, detail, strlen(detail));
    cn_buf_puts(out, ",\"request_id\":");
    cn_buf_json_str(out, request_id ? request_id : "", request_id ? strlen(request_id) : 0);
    cn_buf_puts(out, ",\"errors\":[");
    for (size_t k = 0; k < nerrors; k++) {
        const char *f = errors[k]->field ? errors[k]->field : "";
        const char *m = errors[k]->message ? errors[k]->message : "";
        cn_buf_puts(out, k ? ",{\"field\":" : "{\"field\":");
        cn_buf_json_str(out, f, strlen(f));
        cn_buf_puts(out, ",\"message\":");
        cn_buf_json_str(out, m, strlen(m));
        cn_buf_putc(out, '}');
    }
    cn_buf_puts(out, "]}");
}

void gw_oip_error_body(struct cn_buf *out, int status, const char *detail, Cairn__V1__FieldError *const *errors,
                       size_t nerrors)
{
    /* The message is built first, then escaped once as one JSON string. */
    struct cn_buf msg = {0};
    detail = detail && *detail ? detail : gw_status_reason(status);
    cn_buf_puts(&msg, detail);
    for (size_t k = 0; k < nerrors; k++) {
        const char *f = errors[k]->field ? errors[k]->field : "";
        const char *m = errors[k]->message ? errors[k]->message : "";
        cn_buf_puts(&msg, k ? "; " : ": ");
        if (*f)
            cn_buf_printf(&msg, "%s: ", f);
        cn_buf_puts(&msg, m);
    }
    cn_buf_puts(out, "{\"error\":");
    cn_buf_json_str(out, msg.data ? msg.data : "", msg.len);
    cn_buf_putc(out, '}');
    cn_buf_free(&msg);
}
