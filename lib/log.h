/* log.h — one JSON line per event on stderr.
 *
 * Each line: {"ts":"2026-11-22T02:15:26.123Z","level":"warn","service":"auth",
 * "event":"AUTH-DB-DOWN","request_id":"...","msg":"..."}. The event id is stable (tests
 * and alerts match on it); the message never contains secrets. The level is checked
 * before anything is formatted. Lines are written with one write(2) so concurrent
 * threads do not interleave.
 */
#ifndef CN_LOG_H
#define CN_LOG_H

#include <stddef.h>

enum cn_log_level { CN_LOG_DEBUG = 0, CN_LOG_INFO, CN_LOG_WARN, CN_LOG_ERROR };

extern int cn_log_min_level;

/* Sets the service name put on every line and the minimum level. */
void cn_log_init(const char *service, enum cn_log_level min);
/* Parses "debug|info|warn|error"; returns 0 or CN_EINVAL. */
int cn_log_level_parse(const char *s, enum cn_log_level *out);

/* request_id may be NULL. fmt is printf-style. */
#define cn_log(level, event, request_id, ...)                                   \
    do {                                                                        \
        if ((int)(level) >= cn_log_min_level)                                   \
            cn_log_write((level), (event), (request_id), __VA_ARGS__);          \
    } while (0)
#define cn_log_info(event, ...) cn_log(CN_LOG_INFO, event, NULL, __VA_ARGS__)
#define cn_log_warn(event, ...) cn_log(CN_LOG_WARN, event, NULL, __VA_ARGS__)
#define cn_log_error(event, ...) cn_log(CN_LOG_ERROR, event, NULL, __VA_ARGS__)

void cn_log_write(enum cn_log_level level, const char *event, const char *request_id,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Writes an already formatted line (a newline is added) to stdout in one write(2):
 * the gateway's access log uses it. */
void cn_log_line(const char *line, size_t len);

#endif
