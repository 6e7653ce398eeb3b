/* auth_page.c — what the list RPCs (ListApiKeys, ListUsers, ListAudit) need besides SQL:
 * cursor page tokens, the shapes of the ids they carry, and LIKE escaping for filters.
 *
 * Lists are newest first and paginated by cursor: the token names the last row of a
 * page by (creation time in unix microseconds, id), and the next page is the rows before
 * it in that order. Microseconds, because that is what timestamptz keeps: a coarser time
 * would skip or repeat rows made within one millisecond. The token is base64url of
 * "<microseconds>.<id>": opaque to clients, and checked fully here (digits, then an id
 * of the list's kind) so a forged token is a field error, never a SQL error.
 *
 * To paginate another list: give its rows a (time, id) order in SQL, add an id kind here
 * if the id has a new shape, and encode the last row of each page.
 */
#include "auth.h"

#include <stdio.h>
#include <string.h>

#include "apikey.h"
#include "b64.h"
#include "err.h"
#include "util.h"

#define TOKEN_TEXT_MAX 72 /* "<19 digits>.<36-char uuid>" and a NUL, with room */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_b62(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool auth_id_valid(enum auth_id_kind kind, const char *s)
{
    size_t n = strlen(s);

    switch (kind) {
    case AUTH_ID_UUID:
        if (n != 36)
            return false;
        for (size_t i = 0; i < n; i++) {
            bool dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash ? s[i] != '-' : !is_hex(s[i]))
                return false;
        }
        return true;
    case AUTH_ID_KEY:
        if (n != CN_APIKEY_ID_LEN)
            return false;
        for (size_t i = 0; i < n; i++)
            if (!is_b62(s[i]))
                return false;
        return true;
    case AUTH_ID_SERIAL: {
        long long v;
        /* A bigserial: 1..2^63-1 with no sign, no leading zeros. */
        return n > 0 && s[0] != '0' && strspn(s, "0123456789") == n &&
               cn_parse_int(s, 1, INT64_MAX, &v) == CN_OK;
    }
    }
    return false;
}

int auth_page_encode(int64_t at_us, const char *id, char *out, size_t cap)
{
    char text[TOKEN_TEXT_MAX];
    int n;

    n = snprintf(text, sizeof text, "%lld.%s", (long long)at_us, id);
    if (n < 0 || (size_t)n >= sizeof text || cn_b64url_len((size_t)n) + 1 > cap)
        return CN_ETOOBIG;
    cn_b64url_encode((const uint8_t *)text, (size_t)n, out);
    return CN_OK;
}

int auth_page_decode(const char *token, enum auth_id_kind kind, int64_t *at_us, char *id,
                     size_t idcap)
{
    char text[TOKEN_TEXT_MAX];
    size_t len = strlen(token), n = 0;
    long long us;
    char *dot;

    if (len == 0 || len > AUTH_PAGE_TOKEN_MAX)
        return CN_EINVAL;
    if (cn_b64url_decode(token, len, (uint8_t *)text, sizeof text - 1, &n) != CN_OK)
        return CN_EINVAL;
    text[n] = '\0';
    if (strlen(text) != n) /* a NUL inside */
        return CN_EINVAL;
    dot = strchr(text, '.');
    if (dot == NULL || dot == text)
        return CN_EINVAL;
    *dot = '\0';
    if (strspn(text, "0123456789") != (size_t)(dot - text) ||
        cn_parse_int(text, 0, INT64_MAX, &us) != CN_OK)
        return CN_EINVAL;
    if (!auth_id_valid(kind, dot + 1) || strlen(dot + 1) >= idcap)
        return CN_EINVAL;
    snprintf(id, idcap, "%s", dot + 1);
    *at_us = (int64_t)us;
    return CN_OK;
}

int auth_like_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;

    for (const char *p = in; *p != '\0'; p++) {
        bool special = *p == '%' || *p == '_' || *p == '\\';
        if (o + (special ? 2 : 1) >= cap)
            return CN_ETOOBIG;
        if (special)
            out[o++] = '\\';
        out[o++] = *p;
    }
    if (o >= cap)
        return CN_ETOOBIG;
    out[o] = '\0';
    return CN_OK;
}
