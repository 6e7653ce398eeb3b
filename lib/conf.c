/* conf.c — settings from environment variables, driven by a table (see conf.h).
 *
 * Each row says where a value lives in the program's conf struct, its type, default and
 * range; load, --help and the start-up dump all walk the same rows, so they cannot
 * disagree. A secret's value (and its default) is never formatted anywhere, not even in
 * an error message. To add a type: add it to enum cn_conf_type, parse it in load_one,
 * name it in type_name and format it in put_value.
 */
#include "conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "util.h"

#define SHOWN_VALUE_MAX 64 /* an invalid value is quoted in errors up to this length */

static const char *type_name(enum cn_conf_type t)
{
    switch (t) {
    case CN_CONF_STR: return "string";
    case CN_CONF_SECRET: return "secret";
    case CN_CONF_INT: return "int";
    case CN_CONF_BOOL: return "bool";
    }
    return "?";
}

/* Accepts 1/0, true/false, yes/no, on/off in any case; 0 or CN_EINVAL. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < CN_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return CN_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return CN_OK;
        }
    }
    return CN_EINVAL;
}

/* Writes "CAIRN_X: <why>, got 'value'" into err, quoting at most SHOWN_VALUE_MAX bytes of
 * the value so a huge variable cannot flood the message. */
static void bad_value(char *err, size_t errlen, const struct cn_conf_def *d, const char *why,
                      const char *value)
{
    int shown = (int)strnlen(value, SHOWN_VALUE_MAX);
    const char *more = value[shown] != '\0' ? "..." : "";
    snprintf(err, errlen, "%s: %s, got '%.*s%s'", d->env, why, shown, value, more);
}

static int load_one(const struct cn_conf_def *d, char *base, char *err, size_t errlen)
{
    const char *v = getenv(d->env);
    if (v == NULL)
        v = d->def;
    /* A required setting set to "" is as good as missing: an empty DSN or key is never
     * what was meant. */
    if (v == NULL || (d->def == NULL && *v == '\0')) {
        snprintf(err, errlen, "%s: required but not set", d->env);
        return CN_EINVAL;
    }

    void *field = base + d->offset;
    switch (d->type) {
    case CN_CONF_STR:
    case CN_CONF_SECRET: *(const char **)field = v; return CN_OK;
    case CN_CONF_INT: {
        long long n;
        if (cn_parse_int(v, d->min, d->max, &n) != CN_OK) {
            char why[96];
            snprintf(why, sizeof why, "expected an integer between %lld and %lld",
                     (long long)d->min, (long long)d->max);
            bad_value(err, errlen, d, why, v);
            return CN_EINVAL;
        }
        *(int64_t *)field = n;
        return CN_OK;
    }
    case CN_CONF_BOOL:
        if (parse_bool(v, (bool *)field) != CN_OK) {
            bad_value(err, errlen, d, "expected a boolean (true/false, 1/0, yes/no, on/off)", v);
            return CN_EINVAL;
        }
        return CN_OK;
    }
    snprintf(err, errlen, "%s: unknown setting type %d", d->env, (int)d->type);
    return CN_EINVAL;
}

int cn_conf_load(const struct cn_conf_def *defs, size_t n, void *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = load_one(&defs[i], out, err, errlen);
        if (rc != CN_OK)
            return rc;
    }
    if (errlen > 0)
        err[0] = '\0';
    return CN_OK;
}

/* The default column of --help: quoted for strings so "" is visible. */
static void format_default(const struct cn_conf_def *d, char *out, size_t len)
{
    if (d->def == NULL)
        snprintf(out, len, "(required)");
    else if (d->type == CN_CONF_SECRET)
        snprintf(out, len, "%s", *d->def ? "(hidden)" : "\"\"");
    else if (d->type == CN_CONF_STR)
        snprintf(out, len, "\"%s\"", d->def);
    else
        snprintf(out, len, "%s", d->def);
}

static void format_type(const struct cn_conf_def *d, char *out, size_t len)
{
    if (d->type == CN_CONF_INT)
        snprintf(out, len, "int %lld..%lld", (long long)d->min, (long long)d->max);
    else
        snprintf(out, len, "%s", type_name(d->type));
}

static int width(int w, const char *s)
{
    int n = (int)strlen(s);
    return n > w ? n : w;
}

void cn_conf_help(FILE *f, const char *prog, const struct cn_conf_def *defs, size_t n)
{
    char type[64], def[256];
    int wname = width(0, "VARIABLE"), wtype = width(0, "TYPE"), wdef = width(0, "DEFAULT");

    for (size_t i = 0; i < n; i++) {
        format_type(&defs[i], type, sizeof type);
        format_default(&defs[i], def, sizeof def);
        wname = width(wname, defs[i].env);
        wtype = width(wtype, type);
        wdef = width(wdef, def);
    }
    fprintf(f, "%s is configured by environment variables:\n\n", prog);
    fprintf(f, "  %-*s  %-*s  %-*s  %s\n", wname, "VARIABLE", wtype, "TYPE", wdef, "DEFAULT",
            "DESCRIPTION");
    for (size_t i = 0; i < n; i++) {
        format_type(&defs[i], type, sizeof type);
        format_default(&defs[i], def, sizeof def);
        fprintf(f, "  %-*s  %-*s  %-*s  %s\n", wname, defs[i].env, wtype, type, wdef, def,
                defs[i].help ? defs[i].help : "");
    }
}

/* Appends s quoted, with backslash and quote escaped so the dump can be read back. */
static void put_quoted(struct cn_buf *b, const char *s)
{
    cn_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            cn_buf_putc(b, '\\');
        cn_buf_putc(b, *s);
    }
    cn_buf_putc(b, '"');
}

static void put_value(struct cn_buf *b, const struct cn_conf_def *d, const char *base)
{
    const void *field = base + d->offset;
    switch (d->type) {
    case CN_CONF_STR: {
        const char *s = *(const char *const *)field;
        put_quoted(b, s ? s : "");
        return;
    }
    case CN_CONF_SECRET: {
        /* Whether a secret is set is useful to see; its value never is. */
        const char *s = *(const char *const *)field;
        cn_buf_puts(b, s && *s ? "\"***\"" : "\"\"");
        return;
    }
    case CN_CONF_INT: cn_buf_printf(b, "%lld", (long long)*(const int64_t *)field); return;
    case CN_CONF_BOOL: cn_buf_puts(b, *(const bool *)field ? "true" : "false"); return;
    }
    cn_buf_puts(b, "?");
}

void cn_conf_dump(const char *prog, const struct cn_conf_def *defs, size_t n, const void *values)
{
    if (CN_LOG_INFO < cn_log_min_level)
        return;
    struct cn_buf b = {0};
    cn_buf_printf(&b, "%s:", prog);
    for (size_t i = 0; i < n; i++) {
        cn_buf_printf(&b, " %s=", defs[i].env);
        put_value(&b, &defs[i], values);
    }
    cn_log_info("CONF", "%s", b.data);
    cn_buf_free(&b);
}
