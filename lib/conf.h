/* conf.h — table-driven configuration from environment variables.
 *
 * Each program declares its settings as one table of CN_CONF() rows over a struct of
 * values; parsing, validation (type, range), `--help` and the start-up dump all follow
 * from that table. Secrets (CN_CONF_SECRET) are never printed. To add a setting: add a
 * field to the program's conf struct and one row to its table, and document it in the
 * service README.
 *
 *   struct auth_conf { const char *listen; int64_t workers; bool debug; };
 *   static const struct cn_conf_def defs[] = {
 *       CN_CONF(struct auth_conf, listen, "CAIRN_AUTH_LISTEN", CN_CONF_STR,
 *               "tcp://127.0.0.1:7101", 0, 0, "nng address to serve RPCs on"),
 *       CN_CONF(struct auth_conf, workers, "CAIRN_AUTH_WORKERS", CN_CONF_INT, "4", 1, 256,
 *               "RPC worker threads"),
 *   };
 */
#ifndef CN_CONF_H
#define CN_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cn_conf_type {
    CN_CONF_STR,     /* const char * (points into the environment or the default) */
    CN_CONF_SECRET,  /* const char *, never printed */
    CN_CONF_INT,     /* int64_t within [min, max] */
    CN_CONF_BOOL,    /* bool: 1/0, true/false, yes/no, on/off */
};

struct cn_conf_def {
    const char *env;
    enum cn_conf_type type;
    const char *def;     /* default as text; NULL = required (STR/SECRET may default to "") */
    int64_t min, max;    /* INT only */
    const char *help;
    size_t offset;       /* of the field in the values struct */
};

#define CN_CONF(type_, field, env, kind, def, min, max, help) \
    { (env), (kind), (def), (min), (max), (help), offsetof(type_, field) }

/* Fills out (a struct of the table's type) from the environment. On a missing or invalid
 * value returns CN_EINVAL and writes "CAIRN_X: why" into err. */
int cn_conf_load(const struct cn_conf_def *defs, size_t n, void *out, char *err, size_t errlen);
/* Prints every setting with its type, default, range and help. */
void cn_conf_help(FILE *f, const char *prog, const struct cn_conf_def *defs, size_t n);
/* Logs the effective configuration as one info line (secrets shown as "***"). */
void cn_conf_dump(const char *prog, const struct cn_conf_def *defs, size_t n, const void *values);

#endif
