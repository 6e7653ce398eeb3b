/* inference_drift_test.c — unit tests for inference_drift.c: bins as numpy's "sturges"
 * histogram and as categories, the bin of edge cases, PSI against values computed by hand
 * and with Evidently's algorithm (numpy, /usr/bin/python3), the reference JSON round trip
 * and its validation, live counts from several threads, the flush (with a fake database
 * seam: pending kept while the database is down, tracks retired and evicted, gauges),
 * and the report. With CAIRN_PG_DSN set (scripts/stack), the upsert and the report run
 * against a real PostgreSQL (schema inference, migrated here); without it they skip.
 * Includes the .c to reach the tracks and the flusher.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "inference_drift.c"

#include "arena.h"

extern const struct cn_migration inference_migrations[];
extern const unsigned inference_migrations_count;

/* --- helpers --- */

#define NOW_S 1700000000 /* a minute boundary + 20 s: 1699999980 is the minute */

/* What the fake database seam saw. */
static struct {
    int calls, fail_next; /* fail_next calls return CN_EUNAVAIL */
    char model[64];
    int version;
    int64_t minute;
    size_t n;
    int features[64];
    int64_t counts[64][32];
    size_t lens[64];
    int64_t sum_rows; /* over every successful call: feature -1 */
    int64_t sum0[32]; /* and feature 0 */
} fake;

static int fake_add(struct cn_pg *pg, const char *model, int version, int64_t minute_s, size_t n,
                    const int *features, const int64_t *const *counts, const size_t *lens)
{
    (void)pg;
    fake.calls++;
    if (fake.fail_next > 0) {
        fake.fail_next--;
        return CN_EUNAVAIL;
    }
    snprintf(fake.model, sizeof fake.model, "%s", model);
    fake.version = version;
    fake.minute = minute_s;
    fake.n = n;
    for (size_t i = 0; i < n && i < 64; i++) {
        fake.features[i] = features[i];
        fake.lens[i] = lens[i];
        memcpy(fake.counts[i], counts[i], lens[i] * sizeof(int64_t));
        for (size_t k = 0; k < lens[i] && k < 32; k++) {
            if (features[i] == -1)
                fake.sum_rows += counts[i][k];
            if (features[i] == 0)
                fake.sum0[k] += counts[i][k];
        }
    }
    return CN_OK;
}

/* The counts the fake last received for feature f, or NULL. */
static const int64_t *fake_counts(int f)
{
    for (size_t i = 0; i < fake.n; i++)
        if (fake.features[i] == f)
            return fake.counts[i];
    return NULL;
}

/* Categorical bins of values 1, 2, 3 with reference counts a, b, c. */
static void three_categories(struct infer_bins *b, int a, int bb, int c)
{
    float col[1000];
    int n = 0;

    assert_true(a + bb + c <= 1000);
    for (int i = 0; i < a; i++)
        col[n++] = 1;
    for (int i = 0; i < bb; i++)
        col[n++] = 2;
    for (int i = 0; i < c; i++)
        col[n++] = 3;
    assert_int_equal(infer_bins_build(col, (size_t)n, 1, b), CN_OK);
}

static int reset(void **state)
{
    (void)state;
    memset(&fake, 0, sizeof fake);
    drift_add = fake_add;
    ring_config(10, 60); /* slots of 10 s, 6 of them */
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    infer_drift_stop();
    drift_add = infer_db_drift_add;
    return 0;
}

/* --- bins --- */

static void numeric_bins_are_numpys_sturges_histogram(void **state)
{
    /* numpy.histogram_bin_edges(np.arange(100.0), bins="sturges") and np.histogram. */
    static const double edges[] = {12.375, 24.75, 37.125, 49.5, 61.875, 74.25, 86.625};
    static const int counts[] = {13, 12, 13, 12, 12, 13, 12, 13};
    float col[300];
    struct infer_bins b;

    (void)state;
    /* Column 1 of 3 interleaved columns, with missing values the other columns' slots
     * and NaN/inf rows in between that must be skipped. */
    for (int i = 0; i < 100; i++) {
        col[3 * i] = NAN;
        col[3 * i + 1] = (float)i;
        col[3 * i + 2] = INFINITY;
    }
    assert_int_equal(infer_bins_build(col + 1, 100, 3, &b), CN_OK);
    assert_false(b.categorical);
    assert_int_equal(b.nbins, 8);
    assert_int_equal(b.ref_count, 100);
    for (int i = 0; i < 7; i++)
        assert_true(b.edges[i] == edges[i]);
    for (int i = 0; i < 8; i++)
        assert_true(b.ref_share[i] == counts[i] / 100.0);
    infer_bins_free(&b);

    /* Missing values are not counted: the NaN column gives the empty bins. */
    assert_int_equal(infer_bins_build(col, 100, 3, &b), CN_OK);
    assert_true(b.categorical);
    assert_int_equal(b.nbins, 1);
    assert_int_equal(b.ref_count, 0);
    assert_true(b.ref_share[0] == 0);
    infer_bins_free(&b);

    assert_int_equal(infer_bins_build(NULL, 3, 1, &b), CN_EINVAL);
    assert_int_equal(infer_bins_build(col, 3, 0, &b), CN_EINVAL);
}

static void twenty_distinct_values_are_categories_twenty_one_are_not(void **state)
{
    /* numpy for 0, 0.5 .. 10 twice (42 values): 7 bins of 6. */
    static const double edges[] = {1.4285714285714286, 2.857142857142857, 4.285714285714286,
                                   5.714285714285714,  7.142857142857143, 8.571428571428571};
    float col[42];
    struct infer_bins b;

    (void)state;
    for (int i = 0; i < 42; i++)
        col[i] = (float)(i % 20) * 0.5f;
    assert_int_equal(infer_bins_build(col, 42, 1, &b), CN_OK);
    assert_true(b.categorical);
    assert_int_equal(b.nbins, 21); /* 20 values + "never seen" */
    assert_true(b.edges[0] == 0 && b.edges[19] == 9.5);
    assert_true(b.ref_share[0] == 3 / 42.0);  /* 0 is i = 0, 20, 40 */
    assert_true(b.ref_share[19] == 2 / 42.0); /* 9.5 is i = 19, 39 */
    assert_true(b.ref_share[20] == 0);
    infer_bins_free(&b);

    for (int i = 0; i < 42; i++)
        col[i] = (float)(i % 21) * 0.5f;
    assert_int_equal(infer_bins_build(col, 42, 1, &b), CN_OK);
    assert_false(b.categorical);
    assert_int_equal(b.nbins, 7);
    for (int i = 0; i < 6; i++)
        assert_true(b.edges[i] == edges[i]);
    for (int i = 0; i < 7; i++)
        assert_true(b.ref_share[i] == 6 / 42.0);
    infer_bins_free(&b);
}

/* Short edge lists are counted, long ones (from a reference's JSON) binary-searched: both
 * give the bin of every value, on an edge, between two and beyond either end. */
static void index_by_count_and_by_search_agree(void **state)
{
    static const size_t sizes[] = {1, 2, 63, 64, 65, 200, 1023};
    double edges[1023];

    (void)state;
    for (size_t i = 0; i < 1023; i++)
        edges[i] = (double)i * 1.5 - 7;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        struct infer_bins b = {.categorical = false, .nbins = n + 1, .edges = edges};
        for (size_t k = 0; k <= n; k++) {
            double base = k < n ? edges[k] : edges[n - 1] + 1;
            const double probes[] = {base, nextafter(base, -INFINITY), nextafter(base, INFINITY), base - 0.75};
            for (size_t j = 0; j < sizeof probes / sizeof probes[0]; j++) {
                size_t want = 0;
                while (want < n && edges[want] <= probes[j])
                    want++;
                assert_int_equal(infer_bins_index(&b, probes[j]), want);
            }
        }
    }
}

static void index_at_the_edges(void **state)
{
    float col[100];
    struct infer_bins num, cat;

    (void)state;
    for (int i = 0; i < 100; i++)
        col[i] = (float)i;
    assert_int_equal(infer_bins_build(col, 100, 1, &num), CN_OK);
    /* Outer bins are open-ended. */
    assert_int_equal(infer_bins_index(&num, -1e30), 0);
    assert_int_equal(infer_bins_index(&num, 0), 0);
    assert_int_equal(infer_bins_index(&num, 99), 7);
    assert_int_equal(infer_bins_index(&num, 1e30), 7);
    /* [edge_i, edge_i+1): an exact edge belongs to the bin above it. */
    assert_int_equal(infer_bins_index(&num, 12.375), 1);
    assert_int_equal(infer_bins_index(&num, nextafter(12.375, 0)), 0);
    assert_int_equal(infer_bins_index(&num, 86.625), 7);
    assert_int_equal(infer_bins_index(&num, 86.6), 6);
    assert_int_equal(infer_bins_index(&num, NAN), SIZE_MAX);
    assert_int_equal(infer_bins_index(&num, INFINITY), SIZE_MAX);
    assert_int_equal(infer_bins_index(&num, -INFINITY), SIZE_MAX);

    three_categories(&cat, 5, 3, 2);
    assert_true(cat.categorical);
    assert_int_equal(cat.nbins, 4);
    assert_int_equal(infer_bins_index(&cat, 1), 0);
    assert_int_equal(infer_bins_index(&cat, 2), 1);
    assert_int_equal(infer_bins_index(&cat, 3), 2);
    assert_int_equal(infer_bins_index(&cat, 0), 3); /* below, between, above: never seen */
    assert_int_equal(infer_bins_index(&cat, 2.5), 3);
    assert_int_equal(infer_bins_index(&cat, 4), 3);
    assert_int_equal(infer_bins_index(&cat, NAN), SIZE_MAX);
    infer_bins_free(&num);
    infer_bins_free(&cat);
}

/* --- PSI --- */

static void psi_known_values(void **state)
{
    struct infer_bins cat, num, rare;
    float col[100];
    double share[8];

    (void)state;
    three_categories(&cat, 50, 30, 20);

    /* Same distribution (other sample size): exactly 0. */
    assert_true(infer_psi(&cat, (int64_t[]){5, 3, 2, 0}, share) == 0.0);
    assert_true(share[0] == 0.5 && share[3] == 0);
    /* By hand: (.3-.5)ln(.3/.5) + 0 + (.4-.2)ln(.4/.2) = 0.1021651 + 0.1386294. */
    assert_float_equal(infer_psi(&cat, (int64_t[]){30, 30, 40, 0}, NULL), 0.24079456086518719,
                       1e-12);
    /* An empty live bin counts as 0.0001; the never-seen bin, empty on both sides, is
     * skipped (Evidently has no bin for it). numpy: 4.6347972207044208. */
    assert_float_equal(infer_psi(&cat, (int64_t[]){0, 50, 50, 0}, NULL), 4.6347972207044208, 1e-12);
    /* One value the reference never had: the same as Evidently's own bin for it. */
    assert_float_equal(infer_psi(&cat, (int64_t[]){50, 30, 20, 10}, NULL), 0.62729650812482196,
                       1e-12);
    /* Nothing live, or no reference: 0. */
    assert_true(infer_psi(&cat, (int64_t[]){0, 0, 0, 0}, share) == 0.0);
    assert_true(share[1] == 0);

    /* A reference share below 0.0001 makes the empty reference share a millionth of it
     * (5e-11): Evidently gives 8.0585623092189671 for 19 999 x 1, 1 x 2 against
     * 10 x 1, 5 x 2, 5 x 3. */
    {
        float *big = cn_malloc(20000 * sizeof *big);
        for (int i = 0; i < 20000; i++)
            big[i] = i < 19999 ? 1 : 2;
        assert_int_equal(infer_bins_build(big, 20000, 1, &rare), CN_OK);
        free(big);
    }
    assert_float_equal(infer_psi(&rare, (int64_t[]){10, 5, 5}, NULL), 8.0585623092189671, 1e-9);
    assert_true(empty_share((double[]){0.5, 0.00005, 0}, 3) == 0.00005 / 1e6);
    assert_true(empty_share((double[]){0.5, 0.2, 0}, 3) == 0.0001);

    /* Numeric: every bin counts, the empty ones as 0.0001. */
    for (int i = 0; i < 100; i++)
        col[i] = (float)i;
    assert_int_equal(infer_bins_build(col, 100, 1, &num), CN_OK);
    assert_float_equal(infer_psi(&num, (int64_t[]){0, 0, 0, 0, 0, 0, 50, 50}, NULL),
                       6.3852176888018821, 1e-12);
    assert_true(infer_psi(&num, (int64_t[]){13, 12, 13, 12, 12, 13, 12, 13}, NULL) == 0.0);

    assert_string_equal(infer_psi_status(0), "none");
    assert_string_equal(infer_psi_status(0.0999), "none");
    assert_string_equal(infer_psi_status(0.1), "moderate");
    assert_string_equal(infer_psi_status(0.2499), "moderate");
    assert_string_equal(infer_psi_status(0.25), "significant");
    assert_string_equal(infer_psi_status(NAN), "none");
    infer_bins_free(&cat);
    infer_bins_free(&num);
    infer_bins_free(&rare);
}

/* --- the reference JSON --- */

static void json_round_trip_is_exact(void **state)
{
    struct infer_bins in[3], *out = NULL;
    float col[100];
    size_t n = 0;
    json_t *j, *back;
    char *text;

    (void)state;
    for (int i = 0; i < 100; i++)
        col[i] = (float)i * 0.1f + 0.01f; /* edges that need all 17 digits */
    assert_int_equal(infer_bins_build(col, 100, 1, &in[0]), CN_OK);
    three_categories(&in[1], 5, 3, 2);
    assert_int_equal(infer_bins_build(NULL, 0, 1, &in[2]), CN_OK);

    j = infer_bins_to_json(in, 3);
    text = json_dumps(j, JSON_COMPACT);
    back = json_loads(text, 0, NULL);
    assert_non_null(back);
    assert_int_equal(infer_bins_from_json(back, &out, &n), CN_OK);
    assert_int_equal(n, 3);
    for (size_t f = 0; f < 3; f++) {
        assert_int_equal(out[f].categorical, in[f].categorical);
        assert_int_equal(out[f].nbins, in[f].nbins);
        assert_int_equal(out[f].ref_count, in[f].ref_count);
        assert_memory_equal(out[f].edges, in[f].edges, (in[f].nbins - 1) * sizeof(double));
        assert_memory_equal(out[f].ref_share, in[f].ref_share, in[f].nbins * sizeof(double));
    }
    infer_bins_array_free(out, n);
    json_decref(back);
    free(text);
    json_decref(j);
    for (int f = 0; f < 3; f++)
        infer_bins_free(&in[f]);
}

static void json_that_is_not_a_reference_is_refused(void **state)
{
    static const char *bad[] = {
        "[]",
        "{\"features\":[]}",
        "{\"format\":2,\"features\":[]}",
        "{\"format\":1,\"features\":{}}",
        "{\"format\":1,\"features\":[1]}",
        "{\"format\":1,\"features\":[{\"kind\":\"odd\",\"edges\":[],\"ref_share\":[1],\"ref_"
        "count\":1}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[],\"ref_share\":[],\"ref_"
        "count\":0}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[1],\"ref_"
        "count\":1}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[2,1],\"ref_share\":[0.5,0,0."
        "5],\"ref_count\":2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1,1],\"ref_share\":[0.5,0,0."
        "5],\"ref_count\":2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[\"1\"],\"ref_share\":[0.5,0."
        "5],\"ref_count\":2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[1.5,0.5],"
        "\"ref_count\":2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[-1,0.5],"
        "\"ref_count\":2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[0.5,0.5],"
        "\"ref_count\":-2}]}",
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[0.5,0.5]}]"
        "}",
        /* the first feature is fine: what it allocated must be freed too */
        "{\"format\":1,\"features\":[{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[0.5,0.5],"
        "\"ref_count\":2},{\"kind\":\"numeric\",\"edges\":[1],\"ref_share\":[0.5],\"ref_count\":2}]"
        "}",
    };
    struct infer_bins *out;
    size_t n;
    json_t *j;

    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(bad); i++) {
        j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        out = (struct infer_bins *)1;
        n = 7;
        if (infer_bins_from_json(j, &out, &n) != CN_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_null(out);
        assert_int_equal(n, 0);
        json_decref(j);
    }

    /* Too many bins. */
    {
        json_t *share = json_array(), *edges = json_array();
        for (int i = 0; i < JSON_MAX_BINS + 1; i++) {
            json_array_append_new(share, json_real(0));
            if (i > 0)
                json_array_append_new(edges, json_real(i));
        }
        j = json_pack("{s:i, s:[{s:s, s:o, s:o, s:i}]}", "format", 1, "features", "kind", "numeric",
                      "edges", edges, "ref_share", share, "ref_count", 0);
        assert_int_equal(infer_bins_from_json(j, &out, &n), CN_EINVAL);
        json_decref(j);
    }
}

/* --- live counts --- */

struct observer {
    const struct infer_bins *bins;
    int rows;
};

static void *observe_many(void *arg)
{
    const struct observer *o = arg;

    /* Row r: feature 0 is 1, 2 or 3 in turn; feature 1 is NaN every 4th row. */
    for (int r = 0; r < o->rows; r++) {
        float x[2] = {(float)(r % 3 + 1), r % 4 == 0 ? NAN : 50.0f};
        infer_drift_observe("m", 1, o->bins, 2, NULL, x, 1);
    }
    return NULL;
}

static void counts_from_several_threads_are_exact(void **state)
{
    struct infer_bins bins[2];
    struct observer o = {bins, 3000};
    float col[100];
    pthread_t th[4];
    struct cn_pg *pg = cn_pg_new("");
    const int64_t *c;

    (void)state;
    three_categories(&bins[0], 50, 30, 20);
    for (int i = 0; i < 100; i++)
        col[i] = (float)i;
    assert_int_equal(infer_bins_build(col, 100, 1, &bins[1]), CN_OK);

    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, observe_many, &o), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* One batch of 3 rows as well: 12 003 rows in all. */
    {
        float x[6] = {1, 200, 9, -5, NAN, NAN};
        infer_drift_observe("m", 1, bins, 2, NULL, x, 3);
    }

    flush_once(pg, NOW_S);
    assert_int_equal(fake.calls, 1);
    assert_string_equal(fake.model, "m");
    assert_int_equal(fake.version, 1);
    assert_int_equal(fake.minute, NOW_S / 60 * 60);
    assert_int_equal(fake.n, 3);
    assert_int_equal(fake.features[0], -1); /* rows first, then features ascending */
    assert_int_equal(fake.counts[0][0], 12003);
    c = fake_counts(0);
    assert_non_null(c);
    assert_int_equal(c[0], 4000 + 1);
    assert_int_equal(c[1], 4000);
    assert_int_equal(c[2], 4000);
    assert_int_equal(c[3], 1); /* 9: never seen */
    c = fake_counts(1);
    assert_non_null(c);
    assert_int_equal(fake.lens[2], 8);
    assert_int_equal(c[0], 1);    /* -5, below the reference */
    assert_int_equal(c[4], 9000); /* 50 in [49.5, 61.875) */
    assert_int_equal(c[7], 1);    /* 200, above */

    /* Drained: nothing more to write. */
    flush_once(pg, NOW_S + 10);
    assert_int_equal(fake.calls, 1);
    cn_pg_free(pg);
    infer_bins_free(&bins[0]);
    infer_bins_free(&bins[1]);
}

static atomic_bool observers_done;
static atomic_int writes_seen; /* fake_add calls that wrote */

static void *flush_while_observing(void *arg)
{
    struct cn_pg *pg = arg;

    for (int i = 0; !atomic_load(&observers_done); i++) {
        int before = fake.calls;
        flush_once(pg, NOW_S + i);
        if (fake.calls != before)
            atomic_fetch_add(&writes_seen, 1);
    }
    return NULL;
}

struct until {
    const struct infer_bins *bins;
    int64_t rows; /* out */
};

/* Observes rows of value 1 until the flusher has written five times meanwhile. */
static void *observe_until_flushed(void *arg)
{
    struct until *u = arg;
    float x[2] = {1, 50};

    for (u->rows = 0; atomic_load(&writes_seen) < 5; u->rows++)
        infer_drift_observe("m", 1, u->bins, 2, NULL, x, 1);
    return NULL;
}

static void flushing_while_observing_loses_nothing(void **state)
{
    struct infer_bins bins[2];
    struct until u[2] = {{bins, 0}, {bins, 0}};
    float col[100];
    pthread_t th[3];
    struct cn_pg *pg = cn_pg_new("");

    (void)state;
    three_categories(&bins[0], 50, 30, 20);
    for (int i = 0; i < 100; i++)
        col[i] = (float)i;
    assert_int_equal(infer_bins_build(col, 100, 1, &bins[1]), CN_OK);
    atomic_store(&observers_done, false);
    atomic_store(&writes_seen, 0);
    assert_int_equal(pthread_create(&th[0], NULL, observe_until_flushed, &u[0]), 0);
    assert_int_equal(pthread_create(&th[1], NULL, observe_until_flushed, &u[1]), 0);
    assert_int_equal(pthread_create(&th[2], NULL, flush_while_observing, pg), 0);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    atomic_store(&observers_done, true);
    pthread_join(th[2], NULL);
    flush_once(pg, NOW_S + 100000);
    assert_true(fake.calls >= 5);
    assert_true(u[0].rows + u[1].rows > 0);
    assert_int_equal(fake.sum_rows, u[0].rows + u[1].rows);
    assert_int_equal(fake.sum0[0], u[0].rows + u[1].rows);
    assert_int_equal(fake.sum0[1] + fake.sum0[2] + fake.sum0[3], 0);
    cn_pg_free(pg);
    infer_bins_free(&bins[0]);
    infer_bins_free(&bins[1]);
}

static void counts_survive_a_database_outage(void **state)
{
    struct infer_bins b;
    struct cn_pg *pg = cn_pg_new("");
    float x[2] = {1, 3};
    double errors;

    (void)state;
    pthread_once(&metrics_once, metrics_init);
    errors = cn_series_value(dm.errors);
    three_categories(&b, 5, 3, 2);
    infer_drift_observe("m", 2, &b, 1, NULL, x, 2);
    fake.fail_next = 1;
    flush_once(pg, NOW_S);
    assert_int_equal(fake.calls, 1);
    assert_true(fl.db_down);
    assert_true(cn_series_value(dm.errors) == errors + 1);

    infer_drift_observe("m", 2, &b, 1, NULL, x, 1);
    flush_once(pg, NOW_S + 60);
    assert_int_equal(fake.calls, 2);
    assert_false(fl.db_down);
    assert_int_equal(fake.minute, (NOW_S + 60) / 60 * 60);
    assert_int_equal(fake.counts[0][0], 3); /* rows of both flushes */
    assert_int_equal(fake_counts(0)[0], 2);
    assert_int_equal(fake_counts(0)[2], 1);
    cn_pg_free(pg);
    infer_bins_free(&b);
}

static void new_bins_retire_the_old_track(void **state)
{
    struct infer_bins a, b;
    struct cn_pg *pg = cn_pg_new("");
    float x = 1;

    (void)state;
    three_categories(&a, 5, 3, 2);
    three_categories(&b, 5, 3, 0); /* the reference was replaced: values 1, 2 only */
    infer_drift_observe("m", 3, &a, 1, NULL, &x, 1);
    infer_drift_observe("m", 3, &b, 1, NULL, &x, 1);
    infer_drift_observe("m", 3, &b, 1, NULL, &x, 1);
    assert_int_equal(tr.ntracks, 1);
    assert_non_null(tr.retired);
    assert_int_equal(tr.retired->bins[0].nbins, 4);

    /* Both are written, then the retired one is freed. */
    flush_once(pg, NOW_S);
    assert_int_equal(fake.calls, 2);
    assert_null(tr.retired);
    assert_null(fl.dead);
    assert_int_equal(tr.ntracks, 1);
    assert_int_equal(find("m", 3)->bins[0].nbins, 3);
    cn_pg_free(pg);
    infer_bins_free(&a);
    infer_bins_free(&b);
}

static void gauges_follow_the_window_and_quiet_tracks_go(void **state)
{
    struct infer_bins b;
    struct cn_pg *pg = cn_pg_new("");
    float x[10] = {1, 1, 1, 1, 1, 1, 2, 2, 3, 3}; /* 60/20/20 against 50/30/20 */
    struct cn_series *g;
    double want;

    (void)state;
    three_categories(&b, 50, 30, 20);
    want = infer_psi(&b, (int64_t[]){6, 2, 2, 0}, NULL);
    infer_drift_observe("gm", 4, &b, 1, (const char *const[]){"age"}, x, 10);
    flush_once(pg, NOW_S);
    g = cn_metric_series(dm.psi, (const char *[]){"gm", "4", "age"});
    assert_float_equal(cn_series_value(g), want, 1e-12);

    /* Still inside the 60 s window: same value, the track stays. */
    flush_once(pg, NOW_S + 30);
    assert_float_equal(cn_series_value(g), want, 1e-12);
    assert_non_null(find("gm", 4));

    /* The window has passed: the gauge drops to 0 and the track goes at the next flush. */
    flush_once(pg, NOW_S + 70);
    assert_true(cn_series_value(g) == 0);
    assert_non_null(find("gm", 4));
    flush_once(pg, NOW_S + 80);
    assert_null(find("gm", 4));
    assert_int_equal(tr.ntracks, 0);

    /* Rows again: a new track, counted from scratch. */
    infer_drift_observe("gm", 4, &b, 1, (const char *const[]){"age"}, x, 10);
    flush_once(pg, NOW_S + 90);
    assert_float_equal(cn_series_value(g), want, 1e-12);
    cn_pg_free(pg);
    infer_bins_free(&b);
}

static void too_many_versions_are_counted_as_untracked(void **state)
{
    struct infer_bins b;
    float x[5] = {1, 1, 1, 1, 1};
    double before;

    (void)state;
    three_categories(&b, 5, 3, 2);
    pthread_once(&metrics_once, metrics_init);
    before = cn_series_value(dm.untracked);
    for (int v = 0; v < MAX_TRACKS; v++)
        infer_drift_observe("many", v, &b, 1, NULL, x, 1);
    assert_int_equal(tr.ntracks, MAX_TRACKS);
    infer_drift_observe("many", MAX_TRACKS, &b, 1, NULL, x, 5);
    assert_int_equal(tr.ntracks, MAX_TRACKS);
    assert_true(cn_series_value(dm.untracked) == before + 5);
    /* Known versions still count. */
    infer_drift_observe("many", 7, &b, 1, NULL, x, 1);
    assert_int_equal(atomic_load(&find("many", 7)->live_rows), 2);
    /* Nothing without a reference. */
    infer_drift_observe("none", 1, NULL, 1, NULL, x, 1);
    assert_null(find("none", 1));
    infer_bins_free(&b);
}

static void flusher_thread_flushes_and_stops(void **state)
{
    struct infer_bins b;
    float x[4] = {2, 2, 2, 2};

    (void)state;
    three_categories(&b, 5, 3, 2);
    assert_int_equal(infer_drift_start("", 0, 60), CN_EINVAL);
    assert_int_equal(infer_drift_start("", 10, 5), CN_EINVAL);
    assert_int_equal(infer_drift_start("", 1, 60), CN_OK);
    assert_int_equal(infer_drift_start("", 1, 60), CN_EEXIST);
    infer_drift_observe("t", 1, &b, 1, NULL, x, 4);
    /* Stop flushes what is left even before the first period ends. */
    infer_drift_stop();
    assert_int_equal(fake.calls, 1);
    assert_int_equal(fake_counts(0)[1], 4);
    assert_int_equal(tr.ntracks, 0);
    infer_bins_free(&b);
}

/* --- the report --- */

static void report_without_reference_or_database(void **state)
{
    struct cn_arena *a = cn_arena_new(0);
    ProtobufCAllocator alloc;
    Cairn__V1__DriftReport r;
    struct infer_bins b;
    struct cn_pg *pg = cn_pg_new("host=127.0.0.1 port=1 connect_timeout=1");
    char why[128] = "";

    (void)state;
    cn_arena_allocator(a, &alloc);
    assert_int_equal(infer_drift_report(pg, "m", 1, NULL, 0, NULL, 60, &alloc, &r, why, sizeof why),
                     CN_ENOTFOUND);
    assert_non_null(strstr(why, "no drift reference"));
    three_categories(&b, 5, 3, 2);
    assert_int_equal(
        infer_drift_report(pg, "m", 1, &b, 1, NULL, 400 * 86400, &alloc, &r, why, sizeof why),
        CN_EINVAL);
    assert_int_equal(infer_drift_report(pg, "m", 1, &b, 1, NULL, 60, &alloc, &r, why, sizeof why),
                     CN_EUNAVAIL);
    assert_string_equal(why, "database unavailable");
    infer_bins_free(&b);
    cn_pg_free(pg);
    cn_arena_free(a);
}

/* A migrated database from CAIRN_PG_DSN, or NULL (the test skips). */
static struct cn_pg *test_db(void)
{
    const char *dsn = getenv("CAIRN_PG_DSN");

    if (dsn == NULL || dsn[0] == '\0')
        return NULL;
    assert_int_equal(
        cn_pg_migrate(dsn, "inference", inference_migrations, inference_migrations_count, 10000),
        CN_OK);
    return cn_pg_new(dsn);
}

static void db_exec(struct cn_pg *pg, const char *sql, const char *model)
{
    const char *p[1] = {model};
    assert_int_equal(cn_pg_exec(pg, sql, 1, p, NULL), CN_OK);
}

static void report_sums_replicas_and_minutes_in_postgres(void **state)
{
    struct cn_pg *pg = test_db();
    struct cn_arena *a;
    ProtobufCAllocator alloc;
    Cairn__V1__DriftReport r;
    struct infer_bins b[2];
    float col[100], x[4];
    char model[40], hex[9], why[128] = "";
    int64_t now = cn_wall_s(), want[4] = {0};
    uint8_t rnd[4];

    (void)state;
    if (pg == NULL)
        skip();
    cn_random_bytes(rnd, sizeof rnd);
    cn_hex(rnd, sizeof rnd, hex);
    snprintf(model, sizeof model, "drift-test-%s", hex);
    drift_add = infer_db_drift_add;
    a = cn_arena_new(0);
    cn_arena_allocator(a, &alloc);
    three_categories(&b[0], 50, 30, 20);
    for (int i = 0; i < 100; i++)
        col[i] = (float)i;
    assert_int_equal(infer_bins_build(col, 100, 1, &b[1]), CN_OK);

    /* "Replica" 1 flushes 2 rows, "replica" 2 (the same minute, added element-wise) 1
     * row with a new feature 1 bin and 1 row with feature 0 missing. */
    x[0] = 1, x[1] = 10, x[2] = 3, x[3] = 10;
    infer_drift_observe(model, 1, b, 2, NULL, x, 2);
    flush_once(pg, now);
    x[0] = 1, x[1] = 90, x[2] = NAN, x[3] = 10;
    infer_drift_observe(model, 1, b, 2, NULL, x, 2);
    flush_once(pg, now);
    assert_false(fl.db_down);
    /* Two hours ago, outside a one-hour window; and a wrong-length array (an older
     * reference) for feature 0 this minute, which the report leaves out. */
    {
        int f0 = 0;
        int64_t old[4] = {100, 100, 100, 100}, odd[2] = {7, 7};
        const int64_t *c1[1] = {old}, *c2[1] = {odd};
        size_t l1 = 4, l2 = 2;
        assert_int_equal(infer_db_drift_add(pg, model, 1, (now - 7200) / 60 * 60, 1, &f0, c1, &l1),
                         CN_OK);
        assert_int_equal(
            infer_db_drift_add(pg, model, 1, (now - 7200) / 60 * 60 + 60, 1, &f0, c2, &l2), CN_OK);
    }

    assert_int_equal(infer_drift_report(pg, model, 1, b, 2, (const char *const[]){"color", NULL},
                                        3600, &alloc, &r, why, sizeof why),
                     CN_OK);
    assert_string_equal(r.model, model);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.window_s, 3600);
    assert_int_equal(r.rows, 4);
    assert_int_equal(r.n_features, 2);
    assert_string_equal(r.features[0]->feature, "color");
    assert_string_equal(r.features[1]->feature, "f1");
    /* feature 0: 1, 3, 1 (and a NaN) */
    want[0] = 2, want[2] = 1;
    assert_int_equal(r.features[0]->current_count, 3);
    assert_int_equal(r.features[0]->reference_count, 100);
    assert_int_equal(r.features[0]->n_current_share, 4);
    assert_float_equal(r.features[0]->current_share[0], 2 / 3.0, 1e-15);
    assert_float_equal(r.features[0]->psi, infer_psi(&b[0], want, NULL), 1e-12);
    assert_int_equal(r.features[0]->n_edges, 3);
    assert_true(r.features[0]->edges[2] == 3);
    assert_int_equal(r.features[1]->current_count, 4);
    assert_int_equal(r.features[1]->n_reference_share, 8);
    assert_float_equal(r.features[1]->current_share[0], 0.75, 1e-15); /* 10, 10, 10 */
    assert_float_equal(r.features[1]->current_share[7], 0.25, 1e-15); /* 90 */
    assert_string_equal(r.status, "significant");
    assert_string_equal(r.features[0]->status, infer_psi_status(r.features[0]->psi));

    /* A three-hour window takes in the old minute; the odd array stays out. */
    assert_int_equal(
        infer_drift_report(pg, model, 1, b, 2, NULL, 3 * 3600, &alloc, &r, why, sizeof why), CN_OK);
    assert_int_equal(r.features[0]->current_count, 403);
    assert_int_equal(r.rows, 403);
    /* Another version has nothing. */
    assert_int_equal(
        infer_drift_report(pg, model, 2, b, 2, NULL, 3600, &alloc, &r, why, sizeof why), CN_OK);
    assert_int_equal(r.rows, 0);
    assert_true(r.features[0]->psi == 0);
    assert_string_equal(r.status, "none");

    db_exec(pg, "DELETE FROM inference.drift_counts WHERE model = $1", model);
    infer_bins_free(&b[0]);
    infer_bins_free(&b[1]);
    cn_arena_free(a);
    cn_pg_free(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numeric_bins_are_numpys_sturges_histogram),
        cmocka_unit_test(twenty_distinct_values_are_categories_twenty_one_are_not),
        cmocka_unit_test(index_at_the_edges),
        cmocka_unit_test(index_by_count_and_by_search_agree),
        cmocka_unit_test(psi_known_values),
        cmocka_unit_test(json_round_trip_is_exact),
        cmocka_unit_test(json_that_is_not_a_reference_is_refused),
        cmocka_unit_test_setup_teardown(counts_from_several_threads_are_exact, reset, cleanup),
        cmocka_unit_test_setup_teardown(flushing_while_observing_loses_nothing, reset, cleanup),
        cmocka_unit_test_setup_teardown(counts_survive_a_database_outage, reset, cleanup),
        cmocka_unit_test_setup_teardown(new_bins_retire_the_old_track, reset, cleanup),
        cmocka_unit_test_setup_teardown(gauges_follow_the_window_and_quiet_tracks_go, reset,
                                        cleanup),
        cmocka_unit_test_setup_teardown(too_many_versions_are_counted_as_untracked, reset, cleanup),
        cmocka_unit_test_setup_teardown(flusher_thread_flushes_and_stops, reset, cleanup),
        cmocka_unit_test_setup_teardown(report_without_reference_or_database, reset, cleanup),
        cmocka_unit_test_setup_teardown(report_sums_replicas_and_minutes_in_postgres, reset,
                                        cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
