/* buf.h — a growable byte buffer for building text (JSON, Prometheus output, log lines).
 *
 * Grows by doubling and aborts on OOM like cn_malloc; data is always NUL-terminated so it
 * can be passed as a C string. A zeroed struct is a valid empty buffer.
 */
#ifndef CN_BUF_H
#define CN_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct cn_buf {
    char *data;
    size_t len;
    size_t cap;
};

void cn_buf_reserve(struct cn_buf *b, size_t extra);
void cn_buf_append(struct cn_buf *b, const void *p, size_t n);
void cn_buf_puts(struct cn_buf *b, const char *s);
void cn_buf_putc(struct cn_buf *b, char c);
void cn_buf_printf(struct cn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cn_buf_vprintf(struct cn_buf *b, const char *fmt, va_list ap);
/* Appends s (n bytes) as a JSON string literal, quotes included; escapes control
 * characters, quote and backslash; invalid UTF-8 bytes become U+FFFD. */
void cn_buf_json_str(struct cn_buf *b, const char *s, size_t n);
void cn_buf_reset(struct cn_buf *b);   /* len = 0, keeps memory */
void cn_buf_free(struct cn_buf *b);    /* frees memory, leaves a valid empty buffer */
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *cn_buf_steal(struct cn_buf *b, size_t *len);

#endif
