/* conf_test.c — conf.c against a small table: defaults, overrides from the environment,
 * every way a value can be wrong (with the exact message), the --help layout, and the
 * start-up dump, which must never show a secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "conf.h"
#include "err.h"
#include "log.h"
#include "util.h"

struct test_conf {
    const char *listen;
    const char *key;
    int64_t workers;
    bool debug;
    const char *dsn;
    const char *token;
};

static const struct cn_conf_def defs[] = {
    CN_CONF(struct test_conf, listen, "CAIRN_T_LISTEN", CN_CONF_STR, "tcp://127.0.0.1:7101", 0, 0,
            "nng address to serve RPCs on"),
    CN_CONF(struct test_conf, key, "CAIRN_T_KEY", CN_CONF_SECRET, "", 0, 0, "signing key"),
    CN_CONF(struct test_conf, workers, "CAIRN_T_WORKERS", CN_CONF_INT, "4", 1, 256,
            "RPC worker threads"),
    CN_CONF(struct test_conf, debug, "CAIRN_T_DEBUG", CN_CONF_BOOL, "false", 0, 0, "extra checks"),
};

/* A table with required settings and a secret that has a default. */
static const struct cn_conf_def required_defs[] = {
    CN_CONF(struct test_conf, dsn, "CAIRN_T_DSN", CN_CONF_STR, NULL, 0, 0, "database"),
    CN_CONF(struct test_conf, token, "CAIRN_T_TOKEN", CN_CONF_SECRET, "s3cr3t-default", 0, 0,
            "upstream token"),
};

static const char *const all_env[] = {"CAIRN_T_LISTEN", "CAIRN_T_KEY", "CAIRN_T_WORKERS",
                                      "CAIRN_T_DEBUG",  "CAIRN_T_DSN", "CAIRN_T_TOKEN"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(all_env); i++)
        unsetenv(all_env[i]);
    cn_log_init("conftest", CN_LOG_INFO);
    return 0;
}

/* Loads defs with one variable set and returns the error text ("" if it loaded). */
static int load_with(const char *env, const char *value, struct test_conf *c, char *err,
                     size_t errlen)
{
    clear_env(NULL);
    if (env)
        setenv(env, value, 1);
    memset(c, 0, sizeof *c);
    return cn_conf_load(defs, CN_ARRAY_LEN(defs), c, err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    struct test_conf c;
    char err[256] = "stale";
    assert_int_equal(load_with(NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(c.listen, "tcp://127.0.0.1:7101");
    assert_string_equal(c.key, "");
    assert_int_equal(c.workers, 4);
    assert_false(c.debug);
}

static void test_overrides(void **state)
{
    (void)state;
    struct test_conf c = {0};
    char err[256];
    setenv("CAIRN_T_LISTEN", "tcp://0.0.0.0:9", 1);
    setenv("CAIRN_T_KEY", "hunter2", 1);
    setenv("CAIRN_T_WORKERS", "256", 1);
    setenv("CAIRN_T_DEBUG", "yes", 1);
    assert_int_equal(cn_conf_load(defs, CN_ARRAY_LEN(defs), &c, err, sizeof err), 0);
    assert_string_equal(c.listen, "tcp://0.0.0.0:9");
    assert_string_equal(c.key, "hunter2");
    assert_int_equal(c.workers, 256);
    assert_true(c.debug);

    /* The range is inclusive at both ends; an empty string is a valid STR. */
    assert_int_equal(load_with("CAIRN_T_WORKERS", "1", &c, err, sizeof err), 0);
    assert_int_equal(c.workers, 1);
    assert_int_equal(load_with("CAIRN_T_LISTEN", "", &c, err, sizeof err), 0);
    assert_string_equal(c.listen, "");
}

static void test_bool_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool value;
    } cases[] = {
        {"1", true},   {"0", false},  {"true", true}, {"false", false}, {"yes", true},
        {"no", false}, {"on", true},  {"off", false}, {"TRUE", true},   {"False", false},
        {"YES", true}, {"nO", false}, {"On", true},   {"OFF", false},
    };
    struct test_conf c;
    char err[256];
    for (size_t i = 0; i < CN_ARRAY_LEN(cases); i++) {
        c.debug = !cases[i].value;
        assert_int_equal(load_with("CAIRN_T_DEBUG", cases[i].text, &c, err, sizeof err), 0);
        assert_int_equal(c.debug, cases[i].value);
    }
}

static void test_invalid_int(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "abc", "", "12x", "1.5", "0", "257", "-4", "0x10", "99999999999999999999", "4 "};
    struct test_conf c;
    char err[256], want[256];
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        assert_int_equal(load_with("CAIRN_T_WORKERS", bad[i], &c, err, sizeof err), CN_EINVAL);
        snprintf(want, sizeof want,
                 "CAIRN_T_WORKERS: expected an integer between 1 and 256, got '%s'", bad[i]);
        assert_string_equal(err, want);
    }
}

static void test_invalid_bool(void **state)
{
    (void)state;
    static const char *const bad[] = {"maybe", "", "2", "tru", "yess", "enabled"};
    struct test_conf c;
    char err[256], want[256];
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        assert_int_equal(load_with("CAIRN_T_DEBUG", bad[i], &c, err, sizeof err), CN_EINVAL);
        snprintf(want, sizeof want,
                 "CAIRN_T_DEBUG: expected a boolean (true/false, 1/0, yes/no, on/off), got '%s'",
                 bad[i]);
        assert_string_equal(err, want);
    }
}

static void test_long_value_is_cut_in_error(void **state)
{
    (void)state;
    char value[1000];
    memset(value, '7', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    struct test_conf c;
    char err[512];
    assert_int_equal(load_with("CAIRN_T_WORKERS", value, &c, err, sizeof err), CN_EINVAL);
    assert_non_null(strstr(err, "got '7777"));
    assert_non_null(strstr(err, "...'"));
    assert_true(strlen(err) < 200);

    /* A tiny error buffer is filled without overflow. */
    char small[8];
    assert_int_equal(load_with("CAIRN_T_WORKERS", value, &c, small, sizeof small), CN_EINVAL);
    assert_string_equal(small, "CAIRN_T");
}

static void test_required(void **state)
{
    (void)state;
    struct test_conf c = {0};
    char err[256];
    assert_int_equal(cn_conf_load(required_defs, 2, &c, err, sizeof err), CN_EINVAL);
    assert_string_equal(err, "CAIRN_T_DSN: required but not set");

    setenv("CAIRN_T_DSN", "", 1);
    assert_int_equal(cn_conf_load(required_defs, 2, &c, err, sizeof err), CN_EINVAL);
    assert_string_equal(err, "CAIRN_T_DSN: required but not set");

    setenv("CAIRN_T_DSN", "host=db", 1);
    assert_int_equal(cn_conf_load(required_defs, 2, &c, err, sizeof err), 0);
    assert_string_equal(c.dsn, "host=db");
    assert_string_equal(c.token, "s3cr3t-default");
}

/* Returns what fn wrote to a memory stream (caller frees). */
static char *help_text(const char *prog, const struct cn_conf_def *d, size_t n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cn_conf_help(f, prog, d, n);
    fclose(f);
    return text;
}

static void test_help(void **state)
{
    (void)state;
    setenv("CAIRN_T_KEY", "hunter2", 1);
    char *text = help_text("cairn-test", defs, CN_ARRAY_LEN(defs));
    static const char want[] =
        "cairn-test is configured by environment variables:\n"
        "\n"
        "  VARIABLE         TYPE        DEFAULT                 DESCRIPTION\n"
        "  CAIRN_T_LISTEN   string      \"tcp://127.0.0.1:7101\"  nng address to serve RPCs on\n"
        "  CAIRN_T_KEY      secret      \"\"                      signing key\n"
        "  CAIRN_T_WORKERS  int 1..256  4                       RPC worker threads\n"
        "  CAIRN_T_DEBUG    bool        false                   extra checks\n";
    assert_string_equal(text, want);
    free(text);

    text = help_text("cairn-test", required_defs, CN_ARRAY_LEN(required_defs));
    assert_non_null(strstr(text, "(required)"));
    assert_non_null(strstr(text, "(hidden)"));
    assert_null(strstr(text, "s3cr3t"));
    assert_null(strstr(text, "hunter2"));
    free(text);
}

/* Runs cn_conf_dump with stderr pointed at a file; returns what it wrote (caller frees). */
static char *dump_text(const struct cn_conf_def *d, size_t n, const void *values)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    cn_conf_dump("cairn-test", d, n, values);
    dup2(saved, STDERR_FILENO);
    close(saved);
    long size = lseek(fileno(tmp), 0, SEEK_END);
    char *text = cn_malloc((size_t)size + 1);
    assert_int_equal(pread(fileno(tmp), text, (size_t)size, 0), size);
    text[size] = '\0';
    fclose(tmp);
    return text;
}

static void test_dump(void **state)
{
    (void)state;
    struct test_conf c = {"tcp://\"q\"", "hunter2", 8, true, "host=db", "s3cr3t-default"};
    char *text = dump_text(defs, CN_ARRAY_LEN(defs), &c);
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "event")), "CONF");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "cairn-test: CAIRN_T_LISTEN=\"tcp://\\\"q\\\"\" CAIRN_T_KEY=\"***\" "
                        "CAIRN_T_WORKERS=8 CAIRN_T_DEBUG=true");
    assert_null(strstr(text, "hunter2"));
    json_decref(j);
    free(text);

    /* An unset secret shows as "", so "is it configured?" is answerable from the log. */
    c.key = "";
    text = dump_text(defs, CN_ARRAY_LEN(defs), &c);
    assert_non_null(strstr(text, "CAIRN_T_KEY=\\\"\\\""));
    free(text);

    text = dump_text(required_defs, CN_ARRAY_LEN(required_defs), &c);
    assert_non_null(strstr(text, "CAIRN_T_DSN=\\\"host=db\\\" CAIRN_T_TOKEN=\\\"***\\\""));
    assert_null(strstr(text, "s3cr3t"));
    free(text);

    /* Below the log level nothing is formatted or written. */
    cn_log_init("conftest", CN_LOG_WARN);
    text = dump_text(defs, CN_ARRAY_LEN(defs), &c);
    assert_string_equal(text, "");
    free(text);
}

static void test_error_never_shows_secret(void **state)
{
    (void)state;
    /* The first bad value stops the load; the message names only that variable. */
    struct test_conf c;
    char err[256];
    clear_env(NULL);
    setenv("CAIRN_T_KEY", "hunter2", 1);
    setenv("CAIRN_T_WORKERS", "lots", 1);
    assert_int_equal(cn_conf_load(defs, CN_ARRAY_LEN(defs), &c, err, sizeof err), CN_EINVAL);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "CAIRN_T_WORKERS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_overrides, clear_env),
        cmocka_unit_test_setup(test_bool_spellings, clear_env),
        cmocka_unit_test_setup(test_invalid_int, clear_env),
        cmocka_unit_test_setup(test_invalid_bool, clear_env),
        cmocka_unit_test_setup(test_long_value_is_cut_in_error, clear_env),
        cmocka_unit_test_setup(test_required, clear_env),
        cmocka_unit_test_setup(test_help, clear_env),
        cmocka_unit_test_setup(test_dump, clear_env),
        cmocka_unit_test_setup(test_error_never_shows_secret, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
