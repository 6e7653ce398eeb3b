/* metrics_test.c — metrics.c: the exact text of each metric type (rendered one family at
 * a time through the static render_family), escaping, number formatting, registration
 * rules, and exact totals under concurrent updates. */
#include "metrics.c"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>

/* Renders one family and compares it with want. */
static void assert_family(const struct cn_metric *m, const char *want)
{
    struct cn_buf b = {0};
    pthread_mutex_lock(&registry_lock);
    render_family(&b, m);
    pthread_mutex_unlock(&registry_lock);
    assert_string_equal(b.data, want);
    cn_buf_free(&b);
}

#define VALUES(...) ((const char *const[]){__VA_ARGS__})

static void test_counter(void **state)
{
    (void)state;
    struct cn_metric *m =
        cn_metric_new(CN_METRIC_COUNTER, "t_requests_total", "Requests handled.", NULL, NULL, 0);
    /* A family without labels shows its single series at 0 before any event. */
    assert_family(m, "# HELP t_requests_total Requests handled.\n"
                     "# TYPE t_requests_total counter\n"
                     "t_requests_total 0\n");
    struct cn_series *s = cn_metric_series(m, NULL);
    cn_series_add(s, 1);
    cn_series_add(s, 2.5);
    assert_true(cn_series_value(s) == 3.5);
    assert_ptr_equal(cn_metric_series(m, NULL), s);
    assert_family(m, "# HELP t_requests_total Requests handled.\n"
                     "# TYPE t_requests_total counter\n"
                     "t_requests_total 3.5\n");
}

static void test_labelled_counter(void **state)
{
    (void)state;
    struct cn_metric *m = cn_metric_new(CN_METRIC_COUNTER, "t_rpc_calls_total", "RPCs handled",
                                        " method , code", NULL, 0);
    /* No series until the first label values are used. */
    assert_family(m, "# HELP t_rpc_calls_total RPCs handled\n"
                     "# TYPE t_rpc_calls_total counter\n");
    struct cn_series *ok = cn_metric_series(m, VALUES("Login", "OK"));
    cn_series_add(ok, 1);
    cn_series_add(cn_metric_series(m, VALUES("Login", "INTERNAL")), 2);
    cn_series_add(cn_metric_series(m, VALUES("Login", "OK")), 1);
    /* Values that concatenate alike are still different series. */
    cn_series_add(cn_metric_series(m, VALUES("LoginO", "K")), 1);
    assert_ptr_equal(cn_metric_series(m, VALUES("Login", "OK")), ok);
    assert_true(cn_series_value(ok) == 2);
    assert_family(m, "# HELP t_rpc_calls_total RPCs handled\n"
                     "# TYPE t_rpc_calls_total counter\n"
                     "t_rpc_calls_total{method=\"Login\",code=\"OK\"} 2\n"
                     "t_rpc_calls_total{method=\"Login\",code=\"INTERNAL\"} 2\n"
                     "t_rpc_calls_total{method=\"LoginO\",code=\"K\"} 1\n");

    /* NULL values (or a NULL array) count as "". */
    struct cn_series *empty = cn_metric_series(m, NULL);
    assert_ptr_equal(cn_metric_series(m, VALUES(NULL, "")), empty);
}

static void test_gauge(void **state)
{
    (void)state;
    struct cn_metric *m =
        cn_metric_new(CN_METRIC_GAUGE, "t_queue_depth", "Calls waiting.", "queue", NULL, 0);
    struct cn_series *a = cn_metric_series(m, VALUES("a"));
    struct cn_series *b = cn_metric_series(m, VALUES("b"));
    cn_series_set(a, 10);
    cn_series_add(a, -2.5);
    cn_series_set(b, 0.1);
    assert_true(cn_series_value(a) == 7.5);
    assert_family(m, "# HELP t_queue_depth Calls waiting.\n"
                     "# TYPE t_queue_depth gauge\n"
                     "t_queue_depth{queue=\"a\"} 7.5\n"
                     "t_queue_depth{queue=\"b\"} 0.1\n");

    /* Numbers read back exactly; special values use Prometheus spellings. */
    cn_series_set(a, 1e21);
    cn_series_set(b, 1.0 / 3);
    struct cn_series *c = cn_metric_series(m, VALUES("c"));
    struct cn_series *d = cn_metric_series(m, VALUES("d"));
    struct cn_series *e = cn_metric_series(m, VALUES("e"));
    cn_series_set(c, INFINITY);
    cn_series_set(d, -INFINITY);
    cn_series_set(e, NAN);
    assert_family(m, "# HELP t_queue_depth Calls waiting.\n"
                     "# TYPE t_queue_depth gauge\n"
                     "t_queue_depth{queue=\"a\"} 1e+21\n"
                     "t_queue_depth{queue=\"b\"} 0.3333333333333333\n"
                     "t_queue_depth{queue=\"c\"} +Inf\n"
                     "t_queue_depth{queue=\"d\"} -Inf\n"
                     "t_queue_depth{queue=\"e\"} NaN\n");
}

static void test_histogram(void **state)
{
    (void)state;
    static const double bounds[] = {0.25, 1, 10};
    struct cn_metric *m = cn_metric_new(CN_METRIC_HISTOGRAM, "t_latency_seconds", "Latency.",
                                        "route", bounds, CN_ARRAY_LEN(bounds));
    struct cn_series *s = cn_metric_series(m, VALUES("a"));
    cn_series_observe(s, 0.125);
    cn_series_observe(s, 0.25); /* a bound is inclusive: le="0.25" */
    cn_series_observe(s, 0.5);
    cn_series_observe(s, 20);
    assert_true(cn_series_value(s) == 4);
    cn_metric_series(m, VALUES("b"));
    assert_family(m, "# HELP t_latency_seconds Latency.\n"
                     "# TYPE t_latency_seconds histogram\n"
                     "t_latency_seconds_bucket{route=\"a\",le=\"0.25\"} 2\n"
                     "t_latency_seconds_bucket{route=\"a\",le=\"1\"} 3\n"
                     "t_latency_seconds_bucket{route=\"a\",le=\"10\"} 3\n"
                     "t_latency_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\n"
                     "t_latency_seconds_sum{route=\"a\"} 20.875\n"
                     "t_latency_seconds_count{route=\"a\"} 4\n"
                     "t_latency_seconds_bucket{route=\"b\",le=\"0.25\"} 0\n"
                     "t_latency_seconds_bucket{route=\"b\",le=\"1\"} 0\n"
                     "t_latency_seconds_bucket{route=\"b\",le=\"10\"} 0\n"
                     "t_latency_seconds_bucket{route=\"b\",le=\"+Inf\"} 0\n"
                     "t_latency_seconds_sum{route=\"b\"} 0\n"
                     "t_latency_seconds_count{route=\"b\"} 0\n");

    /* Without labels le is the only label; observe on a non-histogram is ignored. */
    static const double one[] = {1};
    struct cn_metric *h = cn_metric_new(CN_METRIC_HISTOGRAM, "t_h", "h", "", one, 1);
    cn_series_observe(cn_metric_series(h, NULL), 3);
    assert_family(h, "# HELP t_h h\n"
                     "# TYPE t_h histogram\n"
                     "t_h_bucket{le=\"1\"} 0\n"
                     "t_h_bucket{le=\"+Inf\"} 1\n"
                     "t_h_sum 3\n"
                     "t_h_count 1\n");
    struct cn_metric *g = cn_metric_new(CN_METRIC_GAUGE, "t_not_hist", "g", NULL, NULL, 0);
    cn_series_observe(cn_metric_series(g, NULL), 3);
    assert_true(cn_series_value(cn_metric_series(g, NULL)) == 0);
}

static void test_latency_buckets(void **state)
{
    (void)state;
    assert_int_equal(cn_metric_latency_nbuckets, 16);
    struct cn_metric *m =
        cn_metric_new(CN_METRIC_HISTOGRAM, "t_default_seconds", "Default buckets.", NULL, NULL, 0);
    cn_series_observe(cn_metric_series(m, NULL), 0.0003);
    static const char *const les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                      "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                      "1",      "2.5",     "5",      "10",    "+Inf"};
    struct cn_buf want = {0};
    cn_buf_puts(&want, "# HELP t_default_seconds Default buckets.\n"
                       "# TYPE t_default_seconds histogram\n");
    for (size_t i = 0; i < CN_ARRAY_LEN(les); i++)
        cn_buf_printf(&want, "t_default_seconds_bucket{le=\"%s\"} %d\n", les[i], i >= 2);
    cn_buf_puts(&want, "t_default_seconds_sum 0.0003\nt_default_seconds_count 1\n");
    assert_family(m, want.data);
    cn_buf_free(&want);
}

static void test_escaping(void **state)
{
    (void)state;
    struct cn_metric *m =
        cn_metric_new(CN_METRIC_COUNTER, "t_escape_total",
                      "Help with \\ backslash,\nnewline and \"quotes\".", "v", NULL, 0);
    cn_series_add(cn_metric_series(m, VALUES("a\\b\"c\nd")), 1);
    assert_family(m, "# HELP t_escape_total Help with \\\\ backslash,\\nnewline and \"quotes\".\n"
                     "# TYPE t_escape_total counter\n"
                     "t_escape_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

static void test_same_name_same_family(void **state)
{
    (void)state;
    struct cn_metric *a = cn_metric_new(CN_METRIC_COUNTER, "t_twice_total", "first", "x", NULL, 0);
    struct cn_metric *b = cn_metric_new(CN_METRIC_COUNTER, "t_twice_total", "second", "x", NULL, 0);
    assert_ptr_equal(a, b);
    cn_series_add(cn_metric_series(a, VALUES("1")), 1);
    cn_series_add(cn_metric_series(b, VALUES("1")), 1);
    assert_family(a, "# HELP t_twice_total first\n"
                     "# TYPE t_twice_total counter\n"
                     "t_twice_total{x=\"1\"} 2\n");
    /* Histograms with default buckets given either way are the same family. */
    struct cn_metric *h1 =
        cn_metric_new(CN_METRIC_HISTOGRAM, "t_twice_seconds", "h", NULL, NULL, 0);
    struct cn_metric *h2 = cn_metric_new(CN_METRIC_HISTOGRAM, "t_twice_seconds", "h", NULL,
                                         cn_metric_latency_buckets, cn_metric_latency_nbuckets);
    assert_ptr_equal(h1, h2);
}

static void test_render_all_in_order(void **state)
{
    (void)state;
    cn_metric_new(CN_METRIC_GAUGE, "t_order_b", "registered first", NULL, NULL, 0);
    cn_metric_new(CN_METRIC_GAUGE, "t_order_a", "registered second", NULL, NULL, 0);
    struct cn_buf b = {0};
    cn_metrics_render(&b);
    const char *first = strstr(b.data, "# HELP t_requests_total ");
    const char *ob = strstr(b.data, "# HELP t_order_b ");
    const char *oa = strstr(b.data, "# HELP t_order_a ");
    assert_non_null(first);
    assert_non_null(ob);
    assert_non_null(oa);
    assert_true(first < ob && ob < oa);
    assert_non_null(strstr(b.data, "t_order_a 0\n"));
    assert_int_equal(b.data[b.len - 1], '\n');
    cn_buf_free(&b);
}

/* Runs fn in a child and asserts that it aborts (misuse is fatal by design). */
static void assert_aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        fn();
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void bad_metric_name(void) { cn_metric_new(CN_METRIC_COUNTER, "9bad", "", NULL, NULL, 0); }
static void bad_label_name(void) { cn_metric_new(CN_METRIC_COUNTER, "t_ok", "", "a,b-c", NULL, 0); }
static void duplicate_label(void) { cn_metric_new(CN_METRIC_COUNTER, "t_ok", "", "a,a", NULL, 0); }
static void le_label(void) { cn_metric_new(CN_METRIC_HISTOGRAM, "t_ok", "", "le", NULL, 0); }
static void other_type(void)
{
    cn_metric_new(CN_METRIC_GAUGE, "t_requests_total", "", NULL, NULL, 0);
}
static void other_labels(void)
{
    cn_metric_new(CN_METRIC_COUNTER, "t_requests_total", "", "x", NULL, 0);
}
static void bad_buckets(void)
{
    static const double b[] = {1, 0.5};
    cn_metric_new(CN_METRIC_HISTOGRAM, "t_ok", "", NULL, b, 2);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    assert_aborts(bad_metric_name);
    assert_aborts(bad_label_name);
    assert_aborts(duplicate_label);
    assert_aborts(le_label);
    assert_aborts(other_type);
    assert_aborts(other_labels);
    assert_aborts(bad_buckets);
}

#define THREADS 4
#define INCREMENTS 100000

static struct cn_metric *conc_counter, *conc_hist;

static void *hammer(void *arg)
{
    char mine[16];
    snprintf(mine, sizeof mine, "t%d", (int)(intptr_t)arg);
    /* Lookups and creation race with the updates of the other threads. */
    struct cn_series *shared = cn_metric_series(conc_counter, VALUES("shared"));
    struct cn_series *own = cn_metric_series(conc_counter, VALUES(mine));
    struct cn_series *h = cn_metric_series(conc_hist, NULL);
    for (int i = 0; i < INCREMENTS; i++) {
        cn_series_add(shared, 1);
        cn_series_add(own, 0.5);
        cn_series_observe(h, (i % 2) ? 0.002 : 2);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    conc_counter = cn_metric_new(CN_METRIC_COUNTER, "t_conc_total", "c", "who", NULL, 0);
    conc_hist = cn_metric_new(CN_METRIC_HISTOGRAM, "t_conc_seconds", "h", NULL, NULL, 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)i), 0);
    /* Rendering concurrently with updates must be safe too. */
    struct cn_buf b = {0};
    for (int i = 0; i < 20; i++) {
        cn_buf_reset(&b);
        cn_metrics_render(&b);
    }
    cn_buf_free(&b);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    assert_true(cn_series_value(cn_metric_series(conc_counter, VALUES("shared"))) ==
                THREADS * INCREMENTS);
    for (int i = 0; i < THREADS; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        assert_true(cn_series_value(cn_metric_series(conc_counter, VALUES(name))) ==
                    INCREMENTS / 2.0);
    }
    struct cn_series *h = cn_metric_series(conc_hist, NULL);
    assert_true(cn_series_value(h) == THREADS * INCREMENTS);
    assert_int_equal(atomic_load(&h->buckets[4]), THREADS * INCREMENTS / 2);  /* le=0.0025 */
    assert_int_equal(atomic_load(&h->buckets[13]), THREADS * INCREMENTS / 2); /* le=2.5 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter),
        cmocka_unit_test(test_labelled_counter),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_same_name_same_family),
        cmocka_unit_test(test_render_all_in_order),
        cmocka_unit_test(test_misuse_aborts),
        cmocka_unit_test(test_concurrency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
