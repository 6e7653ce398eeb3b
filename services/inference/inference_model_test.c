/* inference_model_test.c — unit tests for inference_model.c: every fixture format loads
 * in-process and through the validator child with the metadata and predictions Debian's
 * python3-xgboost gave (testdata/expected.json, written by testdata/make_models.py);
 * hostile files (truncated, random, not a model, a bogus tree, empty, oversize, too wide)
 * are refused with a message and never hurt this process; the parent side survives
 * children that crash, hang, flood or lie (small shell scripts stand in for them); no
 * zombie and no descriptor is left behind. Includes the .c to reach its statics.
 *
 * main() dispatches `__validate-model` to infer_model_validate_main, as the service's
 * main does, so the validator child is this test binary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

#include "inference_model.c"

/* --- helpers --- */

static char testdata[4096];
static json_t *expected;

static const struct infer_limits roomy = {
    .max_bytes = 1 << 20, .max_features = 1000, .time_ms = 20000, .mem_bytes = (size_t)1 << 30};

/* The whole of testdata/<name>; *len gets its size. */
static uint8_t *slurp(const char *name, size_t *len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", testdata, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    uint8_t *p = cn_malloc((size_t)st.st_size + 1);
    assert_int_equal(fread(p, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    *len = (size_t)st.st_size;
    return p;
}

static size_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    size_t n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void assert_no_children(void)
{
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void assert_strings(char **v, size_t n, const json_t *want)
{
    assert_int_equal(n, json_array_size(want));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v[i], json_string_value(json_array_get(want, i)));
}

/* m is what expected.json says of the file name. */
static void assert_meta(const struct infer_meta *m, const char *name)
{
    const json_t *e = json_object_get(json_object_get(expected, "models"), name);
    assert_non_null(e);
    assert_int_equal(m->num_features, json_integer_value(json_object_get(e, "num_features")));
    assert_string_equal(m->objective, json_string_value(json_object_get(e, "objective")));
    assert_int_equal(m->num_classes, json_integer_value(json_object_get(e, "num_classes")));
    assert_int_equal(m->rounds, json_integer_value(json_object_get(e, "rounds")));
    assert_string_equal(m->booster, json_string_value(json_object_get(e, "booster")));
    assert_int_equal(m->outputs, json_integer_value(json_object_get(e, "outputs")));
    assert_strings(m->feature_names, m->n_feature_names, json_object_get(e, "feature_names"));
    assert_strings(m->feature_types, m->n_feature_types, json_object_get(e, "feature_types"));
}

/* b predicts expected.json's rows, one at a time and as one batch, as Python did. */
static void assert_predictions(struct infer_booster *b, const char *name)
{
    const json_t *rows = json_object_get(expected, "rows");
    const json_t *want =
        json_object_get(json_object_get(json_object_get(expected, "models"), name), "predictions");
    size_t nrows = json_array_size(rows), ncols = json_array_size(json_array_get(rows, 0));
    size_t outs = json_array_size(json_array_get(want, 0));
    assert_int_equal(nrows, json_array_size(want));
    float x[64], y[64], one[16];
    assert_true(nrows * ncols <= 64 && nrows * outs <= 64);
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            const json_t *v = json_array_get(json_array_get(rows, r), c);
            x[r * ncols + c] = json_is_null(v) ? NAN : (float)json_number_value(v);
        }
    char why[256] = "";
    assert_int_equal(infer_booster_predict(b, x, nrows, ncols, y, 64, why, sizeof why), 0);
    for (size_t r = 0; r < nrows; r++) {
        assert_int_equal(
            infer_booster_predict(b, x + r * ncols, 1, ncols, one, outs, why, sizeof why), 0);
        for (size_t k = 0; k < outs; k++) {
            double w = json_number_value(json_array_get(json_array_get(want, r), k));
            if (fabs(y[r * outs + k] - w) > 1e-6 || fabs(one[k] - w) > 1e-6)
                fail_msg("%s row %zu output %zu: batch %.9g, single %.9g, python %.9g", name, r, k,
                         y[r * outs + k], one[k], w);
        }
    }
}

static const char *format_of(const char *name)
{
    const char *ext = strrchr(name, '.');
    return strcmp(ext, ".json") == 0 ? "json" : strcmp(ext, ".ubj") == 0 ? "ubjson" : "binary";
}

/* Validation of file must fail with CN_EINVAL, a message, and nothing handed back. */
static void assert_refused(const void *file, size_t len, const struct infer_limits *lim,
                           const char *why_has)
{
    uint8_t *ubj = (uint8_t *)"sentinel";
    size_t ubj_len = 99;
    struct infer_meta m;
    char why[512] = "";
    int rc = infer_model_validate(file, len, lim, &ubj, &ubj_len, &m, why, sizeof why);
    if (rc != CN_EINVAL)
        fail_msg("expected CN_EINVAL, got %d (%s)", rc, why);
    assert_null(ubj);
    assert_int_equal(ubj_len, 0);
    assert_int_equal(m.num_features, 0);
    assert_null(m.feature_names);
    assert_true(strlen(why) > 0);
    if (why_has != NULL && strstr(why, why_has) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", why, why_has);
}

/* A JSON fixture, changed by edit, as a new string. */
static char *edited_json(const char *name, void (*edit)(json_t *learner))
{
    size_t len;
    uint8_t *p = slurp(name, &len);
    json_t *j = json_loadb((const char *)p, len, 0, NULL);
    assert_non_null(j);
    edit(json_object_get(j, "learner"));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    free(p);
    return s;
}

static json_t *first_tree(json_t *learner)
{
    json_t *trees = json_object_get(
        json_object_get(json_object_get(learner, "gradient_booster"), "model"), "trees");
    return json_array_get(trees, 0);
}

static void wide(json_t *learner)
{
    json_object_set_new(json_object_get(learner, "learner_model_param"), "num_feature",
                        json_string("10000"));
}

static void self_loop(json_t *learner)
{
    /* Node 0's left child is node 0: a row that goes left never reaches a leaf. */
    json_array_set_new(json_object_get(first_tree(learner), "left_children"), 0, json_integer(0));
}

static void child_out_of_range(json_t *learner)
{
    json_array_set_new(json_object_get(first_tree(learner), "left_children"), 1,
                       json_integer(100000));
    json_array_set_new(json_object_get(first_tree(learner), "right_children"), 1, json_integer(-7));
}

static void feature_out_of_range(json_t *learner)
{
    json_array_set_new(json_object_get(first_tree(learner), "split_indices"), 0,
                       json_integer(1 << 30));
}

static void short_arrays(json_t *learner)
{
    json_array_remove(json_object_get(first_tree(learner), "split_conditions"), 0);
}

/* An executable shell script standing in for the validator child. */
static const char *script(const char *name, const char *body)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/inference_model_test.%d.%s", (int)getpid(), name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    assert_int_equal(chmod(path, 0700), 0);
    return path;
}

/* --- cases --- */

static void formats_are_detected(void **state)
{
    (void)state;
    char f[8];
    detect_format((const uint8_t *)" \n{\"learner\":{}}", 15, f);
    assert_string_equal(f, "json");
    detect_format((const uint8_t *)"{}", 2, f);
    assert_string_equal(f, "json");
    detect_format((const uint8_t *)"{L\0\0\0\0\0\0\0\7learner", 17, f);
    assert_string_equal(f, "ubjson");
    detect_format((const uint8_t *)"{i\7learner", 10, f);
    assert_string_equal(f, "ubjson");
    detect_format((const uint8_t *)"binf\0\0\0?", 8, f);
    assert_string_equal(f, "binary");
    detect_format((const uint8_t *)"", 0, f);
    assert_string_equal(f, "binary");
}

static void xgboost_messages_are_cleaned(void **state)
{
    (void)state;
    char out[128];
    const char *e = "[05:09:29] ./include/xgboost/gbm.h:120: Inplace predict is not "
                    "supported.\nStack trace:\n  [bt] (0)";
    clean_line(e, strlen(e), out, sizeof out);
    assert_string_equal(out, "Inplace predict is not supported.");
    clean_line("plain words: here", 17, out, sizeof out);
    assert_string_equal(out, "plain words: here");
    const char *err = "junk line\nterminate called after throwing an instance of 'dmlc::Error'\n"
                      "  what():  [10:00:00] src/learner.cc:9: Check failed: x\nStack trace:";
    stderr_line(err, strlen(err), out, sizeof out);
    assert_string_equal(out, "Check failed: x");
    const char *asan = "AddressSanitizer:DEADLYSIGNAL\n==1==ERROR: AddressSanitizer: SEGV\n";
    stderr_line(asan, strlen(asan), out, sizeof out);
    assert_string_equal(out, "");
    clean_line("Check failed: a == b (6 vs. 7) :", 32, out, sizeof out);
    assert_string_equal(out, "Check failed: a == b (6 vs. 7)");
    stderr_line("\n\nsecond\n", 9, out, sizeof out);
    assert_string_equal(out, "second");
    stderr_line("", 0, out, sizeof out);
    assert_string_equal(out, "");
}

static void every_fixture_loads_in_process(void **state)
{
    (void)state;
    const char *name;
    json_t *m;
    json_object_foreach(json_object_get(expected, "models"), name, m)
    {
        size_t len;
        uint8_t *file = slurp(name, &len);
        struct infer_booster *b = NULL;
        struct infer_meta meta;
        char why[256] = "";
        if (infer_booster_load(file, len, &b, &meta, why, sizeof why) != 0)
            fail_msg("%s: %s", name, why);
        assert_string_equal(meta.source_format, format_of(name));
        assert_meta(&meta, name);
        assert_predictions(b, name);
        infer_meta_free(&meta);
        infer_booster_free(b);
        free(file);
    }
}

static void every_fixture_validates_and_converts(void **state)
{
    (void)state;
    size_t fds = open_fds();
    const char *name;
    json_t *m;
    json_object_foreach(json_object_get(expected, "models"), name, m)
    {
        size_t len, ubj_len = 0;
        uint8_t *file = slurp(name, &len), *ubj = NULL;
        struct infer_meta meta;
        char why[512] = "";
        if (infer_model_validate(file, len, &roomy, &ubj, &ubj_len, &meta, why, sizeof why) != 0)
            fail_msg("%s: %s", name, why);
        assert_string_equal(meta.source_format, format_of(name));
        assert_meta(&meta, name);
        assert_true(ubj_len > 2 && ubj[0] == '{' && ubj[1] == 'L');
        infer_meta_free(&meta);

        /* What the registry would store serves what Python predicted. */
        struct infer_booster *b = NULL;
        assert_int_equal(infer_booster_load(ubj, ubj_len, &b, &meta, why, sizeof why), 0);
        assert_string_equal(meta.source_format, "ubjson");
        assert_meta(&meta, name);
        assert_predictions(b, name);
        assert_true(infer_booster_bytes(b) >= ubj_len);
        infer_meta_free(&meta);
        infer_booster_free(b);
        free(ubj);
        free(file);
    }
    assert_int_equal(open_fds(), fds);
    assert_no_children();
}

static void hostile_files_are_refused(void **state)
{
    (void)state;
    size_t fds = open_fds();
    size_t len;
    uint8_t *ubj = slurp("logistic_named.ubj", &len);
    assert_refused(ubj, len / 2, &roomy, "could not be loaded as an XGBoost model");
    assert_refused(ubj, 1, &roomy, NULL);
    free(ubj);
    uint8_t *js = slurp("logistic_named.json", &len);
    assert_refused(js, len - 40, &roomy, "could not be loaded as an XGBoost model");
    free(js);
    uint8_t *bin = slurp("regression.bin", &len);
    assert_refused(bin, len / 3, &roomy, NULL);
    free(bin);

    uint8_t noise[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        s = s * 1103515245u + 12345u;
        noise[i] = (uint8_t)(s >> 16);
    }
    assert_refused(noise, sizeof noise, &roomy, NULL);
    noise[0] = '{';
    noise[1] = 'L';
    assert_refused(noise, sizeof noise, &roomy, NULL);
    assert_refused("{\"a\":1}", 7, &roomy, NULL);
    assert_refused("[1,2,3]", 7, &roomy, NULL);
    assert_refused("", 0, &roomy, "empty");

    struct infer_limits small = roomy;
    small.max_bytes = 100;
    int64_t t0 = cn_mono_ms();
    assert_refused(noise, 101, &small, "the limit is 100 (CAIRN_MODEL_MAX_BYTES)");
    assert_true(cn_mono_ms() - t0 < 50); /* refused before any child starts */

    void (*edits[])(json_t *) = {child_out_of_range, feature_out_of_range, short_arrays};
    for (size_t i = 0; i < CN_ARRAY_LEN(edits); i++) {
        char *bogus = edited_json("logistic_plain.json", edits[i]);
        assert_refused(bogus, strlen(bogus), &roomy, NULL);
        free(bogus);
    }
    assert_int_equal(open_fds(), fds);
    assert_no_children();
}

static void a_model_wider_than_the_limit_is_refused(void **state)
{
    (void)state;
    char *w = edited_json("logistic_plain.json", wide);
    assert_refused(w, strlen(w), &roomy,
                   "the model has 10000 features; the limit is 1000 (CAIRN_MODEL_MAX_FEATURES)");
    /* Within a higher limit the same file is a valid (if odd) model. */
    struct infer_limits wider = roomy;
    wider.max_features = 10000;
    uint8_t *ubj = NULL;
    size_t ubj_len = 0;
    struct infer_meta m;
    char why[512] = "";
    assert_int_equal(
        infer_model_validate(w, strlen(w), &wider, &ubj, &ubj_len, &m, why, sizeof why), 0);
    assert_int_equal(m.num_features, 10000);
    infer_meta_free(&m);
    free(ubj);
    free(w);
}

static void a_model_that_never_finishes_is_stopped(void **state)
{
    (void)state;
    char *loop = edited_json("logistic_plain.json", self_loop);
    struct infer_limits quick = roomy;
    quick.time_ms = 1500;
    int64_t t0 = cn_mono_ms();
    assert_refused(loop, strlen(loop), &quick, NULL);
    assert_true(cn_mono_ms() - t0 < 5000);
    free(loop);
    assert_no_children();
}

static void a_tiny_time_limit_times_out(void **state)
{
    (void)state;
    size_t fds = open_fds(), len;
    uint8_t *file = slurp("softprob.ubj", &len);
    struct infer_limits tiny = roomy;
    tiny.time_ms = 1;
    assert_refused(file, len, &tiny, "validating the model took longer than 1 ms");
    free(file);
    assert_no_children();
    assert_int_equal(open_fds(), fds);
}

static void misbehaving_children_are_contained(void **state)
{
    (void)state;
    size_t fds = open_fds(), len;
    uint8_t *file = slurp("logistic_named.json", &len);
    struct infer_limits quick = roomy;
    quick.time_ms = 400;
    const char *saved = infer_model_exe;

    infer_model_exe = script("crash", "kill -SEGV $$");
    assert_refused(file, len, &quick, "crashed");

    infer_model_exe = script("hang", "exec sleep 30");
    int64_t t0 = cn_mono_ms();
    assert_refused(file, len, &quick, "took longer than 400 ms");
    assert_true(cn_mono_ms() - t0 < 2000);

    /* Closes its pipes, then lingers: killed at the deadline all the same. */
    infer_model_exe = script("linger", "exec >&- 2>&- <&-; sleep 30");
    t0 = cn_mono_ms();
    assert_refused(file, len, &quick, "took longer than 400 ms");
    assert_true(cn_mono_ms() - t0 < 2000);

    infer_model_exe = script("fail", "echo 'Check failed: boom' >&2; exit 3");
    assert_refused(file, len, &quick,
                   "could not be loaded as an XGBoost model: Check failed: boom");

    infer_model_exe = script("flood", "exec cat /dev/zero");
    struct infer_limits capped = quick;
    capped.max_bytes = 64 * 1024;
    assert_refused(file, 1000, &capped, "larger than");

    infer_model_exe = script("garbage", "cat >/dev/null; echo 'not json'");
    assert_refused(file, len, &quick, "could not be loaded");

    infer_model_exe =
        script("lies", "cat >/dev/null; printf '{\"ok\":true,\"num_features\":4}\\nxx'");
    assert_refused(file, len, &quick, "malformed report");

    /* Exits without reading: a big upload must give EPIPE here, never SIGPIPE. */
    infer_model_exe = script("deaf", "exit 0");
    size_t big = 4 << 20;
    uint8_t *zeros = cn_calloc(1, big);
    struct infer_limits large = quick;
    large.max_bytes = big;
    assert_refused(zeros, big, &large, NULL);
    free(zeros);

    infer_model_exe = "/nonexistent/validator";
    uint8_t *ubj = NULL;
    size_t ubj_len = 0;
    struct infer_meta m;
    char why[256] = "";
    assert_int_equal(infer_model_validate(file, len, &quick, &ubj, &ubj_len, &m, why, sizeof why),
                     CN_EINTERNAL);
    assert_non_null(strstr(why, "could not start the model validator"));

    infer_model_exe = saved;
    free(file);
    assert_no_children();
    assert_int_equal(open_fds(), fds);
}

struct job {
    const char *name;
    int rc;
    char why[256];
};

static void *validate_one(void *arg)
{
    struct job *j = arg;
    size_t len, ubj_len;
    uint8_t *file = slurp(j->name, &len), *ubj = NULL;
    struct infer_meta m;
    j->rc = infer_model_validate(file, len, &roomy, &ubj, &ubj_len, &m, j->why, sizeof j->why);
    if (j->rc == 0 &&
        strcmp(m.objective, json_string_value(json_object_get(
                                json_object_get(json_object_get(expected, "models"), j->name),
                                "objective"))) != 0)
        j->rc = -100;
    infer_meta_free(&m);
    free(ubj);
    free(file);
    return NULL;
}

static void validations_run_concurrently(void **state)
{
    (void)state;
    size_t fds = open_fds();
    struct job jobs[] = {
        {"softprob.ubj", -1, ""}, {"regression.bin", -1, ""}, {"logistic_named.json", -1, ""}};
    pthread_t t[CN_ARRAY_LEN(jobs)];
    for (size_t i = 0; i < CN_ARRAY_LEN(jobs); i++)
        assert_int_equal(pthread_create(&t[i], NULL, validate_one, &jobs[i]), 0);
    for (size_t i = 0; i < CN_ARRAY_LEN(jobs); i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].rc != 0)
            fail_msg("%s: %d %s", jobs[i].name, jobs[i].rc, jobs[i].why);
    }
    assert_no_children();
    assert_int_equal(open_fds(), fds);
}

static void predict_checks_its_arguments(void **state)
{
    (void)state;
    size_t len;
    uint8_t *file = slurp("softprob.ubj", &len);
    struct infer_booster *b = NULL;
    char why[256] = "";
    assert_int_equal(infer_booster_load(file, len, &b, NULL, why, sizeof why), 0);
    float x[8] = {0}, y[6];
    assert_int_equal(infer_booster_predict(b, x, 2, 3, y, 6, why, sizeof why), CN_EINVAL);
    assert_non_null(strstr(why, "the model has 4 features"));
    assert_int_equal(infer_booster_predict(b, x, 2, 4, y, 5, why, sizeof why), CN_EINVAL);
    assert_int_equal(infer_booster_predict(b, x, 0, 4, y, 0, why, sizeof why), 0);
    assert_int_equal(infer_booster_predict(b, x, 2, 4, y, 6, why, sizeof why), 0);
    assert_float_equal(y[0] + y[1] + y[2], 1.0, 1e-5); /* softprob: one distribution per row */
    infer_booster_free(b);

    assert_int_equal(infer_booster_load("{\"a\":1}", 7, &b, NULL, why, sizeof why), CN_EINVAL);
    assert_null(b);
    assert_non_null(strstr(why, "could not be loaded as an XGBoost model"));
    free(file);
}

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("CAIRN_TESTDATA");
    if (dir != NULL) {
        snprintf(testdata, sizeof testdata, "%s", dir);
    } else {
        /* Beside this file, wherever the build ran from. */
        const char *slash = strrchr(__FILE__, '/');
        snprintf(testdata, sizeof testdata, "%.*stestdata", slash ? (int)(slash - __FILE__ + 1) : 0,
                 __FILE__);
    }
    size_t len;
    uint8_t *p = slurp("expected.json", &len);
    expected = json_loadb((const char *)p, len, 0, NULL);
    free(p);
    return expected == NULL;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(expected);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -f /tmp/inference_model_test.%d.*", (int)getpid());
    return system(cmd) != 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], VALIDATE_ARG) == 0)
        return infer_model_validate_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(formats_are_detected),
        cmocka_unit_test(xgboost_messages_are_cleaned),
        cmocka_unit_test(every_fixture_loads_in_process),
        cmocka_unit_test(every_fixture_validates_and_converts),
        cmocka_unit_test(hostile_files_are_refused),
        cmocka_unit_test(a_model_wider_than_the_limit_is_refused),
        cmocka_unit_test(a_model_that_never_finishes_is_stopped),
        cmocka_unit_test(a_tiny_time_limit_times_out),
        cmocka_unit_test(misbehaving_children_are_contained),
        cmocka_unit_test(validations_run_concurrently),
        cmocka_unit_test(predict_checks_its_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
