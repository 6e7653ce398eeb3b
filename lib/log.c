/* log.c — one JSON line per event (see log.h).
 *
 * A line is built in memory and handed to the kernel with one write(2), so lines from
 * concurrent threads never interleave and no stdio lock is held. A line is capped at
 * LINE_MAX_BYTES: the message is cut (at a UTF-8 boundary, marked with "...") so the line
 * stays valid JSON; event and request id are capped too, since a request id may come from
 * a client header. To add a field to every line, add it in cn_log_write between "event" and
 * "msg" and mention it in log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "util.h"

#define LINE_MAX_BYTES 16384
#define FIELD_MAX 128 /* event and request_id beyond this are cut */
#define ELLIPSIS "..."

int cn_log_min_level = CN_LOG_INFO;

/* Set once at start-up, before threads log; read by every line. */
static char service_name[64] = "cairn";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cn_log_init(const char *service, enum cn_log_level min)
{
    if (service != NULL && *service != '\0')
        snprintf(service_name, sizeof service_name, "%s", service);
    if ((int)min < CN_LOG_DEBUG || min > CN_LOG_ERROR)
        min = CN_LOG_INFO;
    cn_log_min_level = (int)min;
}

int cn_log_level_parse(const char *s, enum cn_log_level *out)
{
    if (s == NULL)
        return CN_EINVAL;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum cn_log_level)i;
            return CN_OK;
        }
    }
    return CN_EINVAL;
}

/* Writes all n bytes of p to fd: one write(2) unless the kernel takes less (a signal, a
 * full pipe), in which case the rest follows. Errors are dropped: there is nowhere left
 * to report that logging failed. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Writes "2026-11-22T02:15:26.123Z" (24 chars + NUL) into out. */
static void format_ts(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Length of s capped at max, backed off so a multi-byte UTF-8 character is not split. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static void put_field(struct cn_buf *b, const char *key, const char *val)
{
    size_t len = strlen(val);
    cn_buf_printf(b, ",\"%s\":", key);
    cn_buf_json_str(b, val, utf8_cut(val, len, FIELD_MAX));
}

/* Appends msg (len bytes, inside a buffer of at least len + sizeof ELLIPSIS) as a JSON
 * string taking at most budget bytes. The rare too-long message is cut and re-escaped
 * until it fits: escaping can grow a byte up to six times, so the cut is estimated from
 * the first attempt and then tightened. */
static void put_msg(struct cn_buf *b, char *msg, size_t len, size_t budget)
{
    size_t start = b->len;
    cn_buf_json_str(b, msg, len);
    size_t used = b->len - start;
    if (used <= budget)
        return;

    size_t cut = len;
    while (used > budget && cut > 0) {
        size_t want = (size_t)((double)cut * (double)budget / (double)used);
        size_t shrink = cut - want;
        /* Always make progress, and leave room for the ellipsis. */
        if (shrink < sizeof ELLIPSIS)
            shrink = sizeof ELLIPSIS;
        cut = shrink >= cut ? 0 : cut - shrink;
        cut = utf8_cut(msg, len, cut);
        memcpy(msg + cut, ELLIPSIS, sizeof ELLIPSIS - 1);
        b->len = start;
        cn_buf_json_str(b, msg, cut + sizeof ELLIPSIS - 1);
        used = b->len - start;
    }
}

void cn_log_write(enum cn_log_level level, const char *event, const char *request_id,
                  const char *fmt, ...)
{
    if ((int)level < cn_log_min_level)
        return;
    if ((int)level < CN_LOG_DEBUG || level > CN_LOG_ERROR)
        level = CN_LOG_ERROR;

    /* The message is formatted on the stack; vsnprintf cuts anything longer than a
     * whole line could hold, and put_msg trims the rest. */
    char msg[LINE_MAX_BYTES + sizeof ELLIPSIS];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, LINE_MAX_BYTES, fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    size_t msglen = strlen(msg);

    char ts[32];
    format_ts(ts);

    struct cn_buf b = {0};
    cn_buf_reserve(&b, 256 + msglen);
    cn_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
    put_field(&b, "service", service_name);
    put_field(&b, "event", event != NULL ? event : "");
    if (request_id != NULL && *request_id != '\0')
        put_field(&b, "request_id", request_id);
    cn_buf_puts(&b, ",\"msg\":");

    static const char tail[] = "}\n";
    size_t budget = LINE_MAX_BYTES - b.len - (sizeof tail - 1);
    put_msg(&b, msg, msglen, budget);
    cn_buf_puts(&b, tail);

    write_all(STDERR_FILENO, b.data, b.len);
    cn_buf_free(&b);
}

void cn_log_line(const char *line, size_t len)
{
    /* Copying to add the newline keeps the line one write(2); access-log lines are
     * short, so the copy is on the stack. */
    char stack[4096];
    char *p = len + 1 <= sizeof stack ? stack : cn_malloc(len + 1);
    memcpy(p, line, len);
    p[len] = '\n';
    write_all(STDOUT_FILENO, p, len + 1);
    if (p != stack)
        free(p);
}
