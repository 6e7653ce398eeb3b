/* buf.c — growable text buffer (see buf.h). */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void cn_buf_reserve(struct cn_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = cn_realloc(b->data, cap);
    b->cap = cap;
}

void cn_buf_append(struct cn_buf *b, const void *p, size_t n)
{
    cn_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void cn_buf_puts(struct cn_buf *b, const char *s) { cn_buf_append(b, s, strlen(s)); }

void cn_buf_putc(struct cn_buf *b, char c) { cn_buf_append(b, &c, 1); }

void cn_buf_vprintf(struct cn_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    cn_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void cn_buf_printf(struct cn_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cn_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; c &= 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; c &= 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; c &= 0x07; }
    else return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

void cn_buf_json_str(struct cn_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    cn_buf_reserve(b, n + 2);
    cn_buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            cn_buf_append(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': cn_buf_append(b, "\\n", 2); break;
            case '\r': cn_buf_append(b, "\\r", 2); break;
            case '\t': cn_buf_append(b, "\\t", 2); break;
            default: cn_buf_printf(b, "\\u%04x", c); break;
            }
            i++;
        } else if (c < 0x80) {
            cn_buf_putc(b, (char)c);
            i++;
        } else {
            size_t len = utf8_seq(p + i, n - i);
            if (len == 0) {
                cn_buf_append(b, "\xef\xbf\xbd", 3);
                i++;
            } else {
                cn_buf_append(b, p + i, len);
                i += len;
            }
        }
    }
    cn_buf_putc(b, '"');
}

void cn_buf_reset(struct cn_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void cn_buf_free(struct cn_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *cn_buf_steal(struct cn_buf *b, size_t *len)
{
    char *p = b->data;
    if (p == NULL)
        p = cn_strdup("");
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
