/* log_test.c — the JSON lines of log.c, read back with jansson: fields, level filtering,
 * escaping, the 16 KiB cap, and that concurrent lines never interleave. Output is
 * captured by pointing fd 2 (or 1) at a temporary file around each call. */
#include "log.c"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>

struct capture {
    int fd;    /* the descriptor redirected (1 or 2) */
    int saved; /* its original, restored at the end */
    FILE *file;
};

static void capture_begin(struct capture *c, int fd)
{
    c->fd = fd;
    c->file = tmpfile();
    assert_non_null(c->file);
    c->saved = dup(fd);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->file), fd) >= 0);
}

/* Restores the descriptor and returns everything written meanwhile (caller frees). */
static char *capture_end(struct capture *c)
{
    dup2(c->saved, c->fd);
    close(c->saved);
    int fd = fileno(c->file);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size >= 0);
    char *text = cn_malloc((size_t)size + 1);
    assert_int_equal(pread(fd, text, (size_t)size, 0), size);
    text[size] = '\0';
    fclose(c->file);
    return text;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Asserts text is exactly one newline-terminated JSON object and returns it parsed. */
static json_t *parse_one(const char *text)
{
    assert_int_equal(count_lines(text), 1);
    assert_int_equal(text[strlen(text) - 1], '\n');
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (j == NULL)
        fail_msg("not JSON (%s): %s", err.text, text);
    assert_true(json_is_object(j));
    return j;
}

static const char *str_field(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL)
        fail_msg("no field %s", key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* Runs the statement with stderr captured and returns what it wrote. */
#define CAPTURE_STDERR(text, stmt)           \
    do {                                     \
        struct capture cap_;                 \
        capture_begin(&cap_, STDERR_FILENO); \
        stmt;                                \
        (text) = capture_end(&cap_);         \
    } while (0)

static void test_defaults(void **state)
{
    (void)state;
    /* Runs first: nothing has called cn_log_init yet. */
    assert_int_equal(cn_log_min_level, CN_LOG_INFO);
    char *text;
    CAPTURE_STDERR(text, cn_log_info("START", "hello"));
    json_t *j = parse_one(text);
    assert_string_equal(str_field(j, "service"), "cairn");
    assert_string_equal(str_field(j, "level"), "info");
    json_decref(j);
    free(text);

    CAPTURE_STDERR(text, cn_log(CN_LOG_DEBUG, "NOISE", NULL, "not shown"));
    assert_string_equal(text, "");
    free(text);
}

static void test_fields(void **state)
{
    (void)state;
    cn_log_init("auth", CN_LOG_INFO);
    char *text;
    CAPTURE_STDERR(text, cn_log(CN_LOG_WARN, "AUTH-DB-DOWN", "0123abcd", "db %s down for %d ms",
                                "primary", 250));
    /* Field order is part of the format: people read these lines too. */
    assert_memory_equal(text, "{\"ts\":\"", 7);
    json_t *j = parse_one(text);
    assert_int_equal(json_object_size(j), 6);
    const char *ts = str_field(j, "ts");
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[4], '-');
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    struct tm tm = {0};
    assert_non_null(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    /* Within a minute of now, in UTC. */
    time_t when = timegm(&tm);
    assert_true(labs((long)(when - time(NULL))) < 60);
    assert_string_equal(str_field(j, "level"), "warn");
    assert_string_equal(str_field(j, "service"), "auth");
    assert_string_equal(str_field(j, "event"), "AUTH-DB-DOWN");
    assert_string_equal(str_field(j, "request_id"), "0123abcd");
    assert_string_equal(str_field(j, "msg"), "db primary down for 250 ms");
    json_decref(j);
    free(text);

    /* A NULL or empty service name keeps the current one. */
    cn_log_init(NULL, CN_LOG_INFO);
    cn_log_init("", CN_LOG_INFO);
    CAPTURE_STDERR(text, cn_log_error("X", "y"));
    j = parse_one(text);
    assert_string_equal(str_field(j, "service"), "auth");
    assert_string_equal(str_field(j, "level"), "error");
    json_decref(j);
    free(text);
}

static void test_request_id_omitted(void **state)
{
    (void)state;
    const char *ids[] = {NULL, ""};
    for (size_t i = 0; i < CN_ARRAY_LEN(ids); i++) {
        char *text;
        CAPTURE_STDERR(text, cn_log(CN_LOG_INFO, "E", ids[i], "m"));
        json_t *j = parse_one(text);
        assert_null(json_object_get(j, "request_id"));
        assert_int_equal(json_object_size(j), 5);
        json_decref(j);
        free(text);
    }
}

static void test_level_filter(void **state)
{
    (void)state;
    cn_log_init("svc", CN_LOG_WARN);
    char *text;
    CAPTURE_STDERR(text, {
        cn_log(CN_LOG_DEBUG, "A", NULL, "debug");
        cn_log_info("B", "info");
        cn_log_write(CN_LOG_INFO, "C", NULL, "direct call is filtered too");
        cn_log_warn("D", "warn");
        cn_log_error("E", "error");
    });
    assert_int_equal(count_lines(text), 2);
    assert_non_null(strstr(text, "\"event\":\"D\""));
    assert_non_null(strstr(text, "\"event\":\"E\""));
    assert_null(strstr(text, "\"event\":\"B\""));
    free(text);

    cn_log_init("svc", CN_LOG_DEBUG);
    CAPTURE_STDERR(text, cn_log(CN_LOG_DEBUG, "A", NULL, "debug"));
    json_t *j = parse_one(text);
    assert_string_equal(str_field(j, "level"), "debug");
    json_decref(j);
    free(text);

    /* A level out of range falls back to info. */
    cn_log_init("svc", (enum cn_log_level)42);
    assert_int_equal(cn_log_min_level, CN_LOG_INFO);
}

static void test_level_parse(void **state)
{
    (void)state;
    enum cn_log_level l;
    assert_int_equal(cn_log_level_parse("debug", &l), 0);
    assert_int_equal(l, CN_LOG_DEBUG);
    assert_int_equal(cn_log_level_parse("info", &l), 0);
    assert_int_equal(l, CN_LOG_INFO);
    assert_int_equal(cn_log_level_parse("WARN", &l), 0);
    assert_int_equal(l, CN_LOG_WARN);
    assert_int_equal(cn_log_level_parse("error", &l), 0);
    assert_int_equal(l, CN_LOG_ERROR);
    const char *bad[] = {"", "warning", "inf", "debug ", "3", NULL};
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++)
        assert_int_equal(cn_log_level_parse(bad[i], &l), CN_EINVAL);
}

static void test_escaping(void **state)
{
    (void)state;
    cn_log_init("svc", CN_LOG_INFO);
    char *text;
    CAPTURE_STDERR(text,
                   cn_log(CN_LOG_INFO, "EV\"\n", "id\\\"",
                          "quote \" backslash \\ nl \n cr \r tab \t ctl \x01\x1f bad \xff end"));
    /* One line: the newlines inside are escaped. */
    json_t *j = parse_one(text);
    assert_non_null(strstr(text, "\\u0001\\u001f"));
    assert_string_equal(
        str_field(j, "msg"),
        "quote \" backslash \\ nl \n cr \r tab \t ctl \x01\x1f bad \xef\xbf\xbd end");
    assert_string_equal(str_field(j, "event"), "EV\"\n");
    assert_string_equal(str_field(j, "request_id"), "id\\\"");
    json_decref(j);
    free(text);
}

/* Logs msg and checks the line is within the cap, valid, and its msg a cut of msg ending
 * in "..."; returns the length of the kept part. */
static size_t check_truncated(const char *msg, const char *request_id)
{
    char *text;
    CAPTURE_STDERR(text, cn_log(CN_LOG_INFO, "BIG", request_id, "%s", msg));
    assert_true(strlen(text) <= LINE_MAX_BYTES);
    json_t *j = parse_one(text);
    const char *got = str_field(j, "msg");
    size_t len = strlen(got);
    assert_true(len >= 3);
    assert_string_equal(got + len - 3, "...");
    assert_memory_equal(got, msg, len - 3);
    /* A cut in the middle of a character would show up as U+FFFD. */
    assert_null(strstr(got, "\xef\xbf\xbd"));
    json_decref(j);
    free(text);
    return len - 3;
}

static void test_truncation(void **state)
{
    (void)state;
    cn_log_init("svc", CN_LOG_INFO);
    char *msg = cn_malloc(40001);

    /* Plain text: cut close to the cap, not far below it. */
    memset(msg, 'a', 40000);
    msg[40000] = '\0';
    size_t kept = check_truncated(msg, "rid");
    assert_true(kept > LINE_MAX_BYTES - 300);

    /* Control characters grow sixfold when escaped. */
    memset(msg, '\x01', 20000);
    msg[20000] = '\0';
    kept = check_truncated(msg, NULL);
    assert_true(kept > (LINE_MAX_BYTES - 300) / 6);

    /* Two-byte characters are never split. */
    for (size_t i = 0; i < 20000; i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[20000] = '\0';
    kept = check_truncated(msg, NULL);
    assert_int_equal(kept % 2, 0);

    /* A message that fits exactly is left alone. */
    char *text;
    memset(msg, 'b', 1000);
    msg[1000] = '\0';
    CAPTURE_STDERR(text, cn_log_info("OK", "%s", msg));
    json_t *j = parse_one(text);
    assert_string_equal(str_field(j, "msg"), msg);
    json_decref(j);
    free(text);

    /* A huge request id (it may come from a client header) is capped. */
    memset(msg, 'r', 5000);
    msg[5000] = '\0';
    CAPTURE_STDERR(text, cn_log(CN_LOG_INFO, "RID", msg, "m"));
    j = parse_one(text);
    assert_int_equal(strlen(str_field(j, "request_id")), FIELD_MAX);
    json_decref(j);
    free(text);

    free(msg);
}

static void test_log_line(void **state)
{
    (void)state;
    struct capture cap;
    capture_begin(&cap, STDOUT_FILENO);
    cn_log_line("GET / 200", 9);
    char *big = cn_malloc(10000);
    memset(big, 'x', 10000);
    cn_log_line(big, 10000);
    cn_log_line("", 0);
    char *text = capture_end(&cap);
    assert_int_equal(strlen(text), 10 + 10001 + 1);
    assert_memory_equal(text, "GET / 200\n", 10);
    assert_memory_equal(text + 10, big, 10000);
    assert_string_equal(text + 10 + 10000, "\n\n");
    free(big);
    free(text);
}

#define THREADS 4
#define LINES 500

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LINES; i++)
        cn_log(CN_LOG_INFO, "T", NULL, "thread %d line %d %0400d", id, i, 0);
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    (void)state;
    cn_log_init("svc", CN_LOG_INFO);
    struct capture cap;
    pthread_t t[THREADS];
    capture_begin(&cap, STDERR_FILENO);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = capture_end(&cap);

    assert_int_equal(count_lines(text), THREADS * LINES);
    int seen[THREADS] = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (j == NULL)
            fail_msg("interleaved line: %s", line);
        int id, n;
        assert_int_equal(sscanf(str_field(j, "msg"), "thread %d line %d", &id, &n), 2);
        assert_true(id >= 0 && id < THREADS);
        assert_int_equal(n, seen[id]); /* each thread's lines in its own order */
        seen[id]++;
        json_decref(j);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(seen[i], LINES);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_request_id_omitted),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_threads_do_not_interleave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
