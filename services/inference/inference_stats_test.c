/* inference_stats_test.c — unit tests for inference_stats.c and inference_db_stats.c: the
 * distribution functions against closed forms, published tables and worked examples;
 * the z- and Welch tests with their edge cases; quantiles; the per-row scoring and the
 * assembly of the report (fed rows directly); and, against a real PostgreSQL, feedback
 * storage and the whole report (summary SQL, latest feedback, since, caps, timeout).
 *
 * The database cases need CAIRN_PG_DSN and skip cleanly without it. To run them:
 *   scripts/stack start /tmp/st && . /tmp/st/env && export CAIRN_PG_DSN && <this binary>
 * They create a database of their own (cairn_stats_test_<pid>), apply migrations/ into
 * schema inference there, and drop it at the end.
 *
 * Where expected values come from is written beside each. "Python" means a numpy-free
 * script run with /usr/bin/python3: the normal from math.erfc, Student's t by Simpson
 * integration of its density (200 000 intervals, lgamma), independent of the continued
 * fraction tested here.
 *
 * Includes both .c files to reach statics and to shrink the caps so they can be hit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define INFER_STATS_MAX_OUTCOMES 40
#define INFER_STATS_TIMEOUT_MS 500
#define FETCH_ROWS "3"

#include "inference_db_stats.c"
#include "inference_stats.c"

#include "arena.h"

/* Declared in inference.h too; the test does not need the rest of the service. */
extern const struct cn_migration inference_migrations[];
extern const unsigned inference_migrations_count;

/* ------------------------------------------------------------------ helpers */

#define near(a, b, tol) near_at((a), (b), (tol), #a, __FILE__, __LINE__)
static void near_at(double a, double b, double tol, const char *what, const char *file, int line)
{
    if (!(fabs(a - b) <= tol))
        fail_msg("%s:%d: %s = %.17g, want %.17g (+- %g)", file, line, what, a, b, tol);
}

static struct cn_arena *arena;
static ProtobufCAllocator alloc;

static int arena_setup(void **state)
{
    (void)state;
    arena = cn_arena_new(0);
    cn_arena_allocator(arena, &alloc);
    return 0;
}

static int arena_teardown(void **state)
{
    (void)state;
    cn_arena_free(arena);
    arena = NULL;
    return 0;
}

/* A report being fed rows by hand, as infer_db_stats_read would. */
static struct report fresh(void) { return (struct report){.alloc = &alloc}; }

static void group(struct report *r, const char *variant, int32_t version, int64_t requests)
{
    struct infer_db_stats_group g = {.variant = variant, .version = version, .requests = requests};

    assert_int_equal(on_group(r, &g), CN_OK);
}

/* Feeds n identical outcomes; label / reward NULL = absent. */
static void outcome(struct report *r, const char *variant, int32_t version, const char *objective,
                    const char *output0, const double *label, const double *reward, int n)
{
    struct infer_db_stats_outcome o = {
        .variant = variant,
        .version = version,
        .objective = objective,
        .output0 = output0,
        .has_label = label != NULL,
        .has_reward = reward != NULL,
        .label = label ? *label : 0,
        .reward = reward ? *reward : 0,
    };

    for (int i = 0; i < n; i++)
        assert_int_equal(on_outcome(r, &o), CN_OK);
}

static const double ZERO = 0, ONE = 1, TWO = 2;

static Cairn__V1__ModelStats finish(struct report *r, const char *control)
{
    Cairn__V1__ModelStats out;

    cairn__v1__model_stats__init(&out);
    report_finish(r, "m", 0.05, 123, control, 0.5, &out);
    free(r->groups);
    r->groups = NULL;
    return out;
}

static Cairn__V1__VariantStats *vstats(Cairn__V1__ModelStats *s, const char *variant,
                                       int32_t version)
{
    for (size_t i = 0; i < s->n_variants; i++)
        if (strcmp(s->variants[i]->variant, variant) == 0 && s->variants[i]->version == version)
            return s->variants[i];
    fail_msg("no VariantStats %s v%d", variant, version);
    return NULL;
}

/* ------------------------------------------------------------------ distributions */

static void test_norm_cdf(void **state)
{
    (void)state;
    /* Standard normal tables: 0.9750 at 1.96, 0.8413 at 1; more digits from Python. */
    near(infer_norm_cdf(1.96), 0.9750021048517795, 1e-12);
    near(infer_norm_cdf(1.0), 0.8413447460685429, 1e-12);
    near(infer_norm_cdf(-1.0), 0.15865525393145707, 1e-12);
    near(infer_norm_cdf(0), 0.5, 0);
    assert_true(isnan(infer_norm_cdf(NAN)));
    /* The upper tail keeps relative precision where 1 - cdf is 0: Q(10) = 7.6198530241605e-24
     * (Abramowitz & Stegun 26.2 / Python). */
    near(norm_upper(10, 0) / 7.619853024160527e-24, 1, 1e-12);
}

static void test_norm_quantile(void **state)
{
    (void)state;
    /* The critical values every z table prints: 1.645, 1.960, 2.576; more digits: R's
     * qnorm (1.6448536269514729, 1.959963984540054, 2.5758293035489004). */
    near(infer_norm_quantile(0.95), 1.6448536269514729, 1e-10);
    near(infer_norm_quantile(0.975), 1.959963984540054, 1e-10);
    near(infer_norm_quantile(0.995), 2.5758293035489004, 1e-10);
    near(infer_norm_quantile(0.025), -1.959963984540054, 1e-10);
    near(infer_norm_quantile(0.5), 0, 1e-12);
    /* Far tail: qnorm(1e-12) = -7.034483825 (R); the round trip through the CDF holds. */
    near(infer_norm_quantile(1e-12), -7.0344838253, 1e-8);
    near(norm_upper(-infer_norm_quantile(1e-12), 0) / 1e-12, 1, 1e-9);
    assert_true(isnan(infer_norm_quantile(0)));
    assert_true(isnan(infer_norm_quantile(1)));
    assert_true(isnan(infer_norm_quantile(NAN)));
}

/* Closed forms of Student's t CDF for small integer df (e.g. Wikipedia, "Student's
 * t-distribution", cumulative distribution function for special cases). */
static double t_cdf_closed(double t, int df)
{
    switch (df) {
    case 1: return 0.5 + atan(t) / M_PI;
    case 2: return 0.5 + t / (2 * sqrt(2 + t * t));
    case 3: return 0.5 + (t / (sqrt(3) * (1 + t * t / 3)) + atan(t / sqrt(3))) / M_PI;
    case 4: {
        double u = 1 + t * t / 4;
        return 0.5 + 3.0 / 8 * t / sqrt(u) * (1 - t * t / (12 * u));
    }
    default: return NAN;
    }
}

static void test_t_cdf_closed_forms(void **state)
{
    static const double ts[] = {-30, -4.5, -2, -0.7, -0.01, 0, 0.3, 1, 1.96, 2.5, 6, 100};

    (void)state;
    for (int df = 1; df <= 4; df++)
        for (size_t i = 0; i < CN_ARRAY_LEN(ts); i++)
            near(infer_t_cdf(ts[i], df), t_cdf_closed(ts[i], df), 1e-12);
}

static void test_t_cdf_tables(void **state)
{
    (void)state;
    /* t tables: t(0.975; 10) = 2.228, so the CDF there is 0.975 to the table's 3 digits.
     * Python: 0.9749941140914502 at 2.228, 0.97500000000059 at 2.228138852. */
    near(infer_t_cdf(2.228, 10), 0.975, 1e-4);
    near(infer_t_cdf(2.228, 10), 0.9749941140914502, 1e-10);
    near(infer_t_cdf(2.228138852, 10), 0.975, 1e-9);
    /* Non-integer df (Welch's df never is one). Python. */
    near(infer_t_cdf(1.7, 7.3), 0.9344173158234501, 1e-10);
    near(infer_t_cdf(-0.5, 2.5), 0.3288489599348583, 1e-10);
    /* Between its integer neighbours. */
    assert_true(infer_t_cdf(1.7, 7) < infer_t_cdf(1.7, 7.3));
    assert_true(infer_t_cdf(1.7, 7.3) < infer_t_cdf(1.7, 8));
    /* Symmetry, tiny t (y = 1 - x kept apart keeps the digits: slope at 0 is the density
     * 0.3796066898224944 for df 5, Python), infinities, bad df. */
    near(infer_t_cdf(0.8, 6.5) + infer_t_cdf(-0.8, 6.5), 1, 1e-14);
    near((infer_t_cdf(1e-10, 5) - 0.5) / 1e-10, 0.3796066898224944, 1e-5);
    near(infer_t_cdf(INFINITY, 3), 1, 0);
    near(infer_t_cdf(-INFINITY, 3), 0, 0);
    near(infer_t_cdf(1e200, 3), 1, 0);
    assert_true(isnan(infer_t_cdf(1, 0)));
    assert_true(isnan(infer_t_cdf(1, -2)));
    assert_true(isnan(infer_t_cdf(NAN, 3)));
}

static void test_t_quantile(void **state)
{
    (void)state;
    /* Two-sided 5% critical values of t tables (12.706, 4.303, 2.571, 2.228, 2.042), with
     * R's qt digits: 12.7062047, 4.30265273, 2.57058184, 2.22813885, 2.04227246. */
    near(infer_t_quantile(0.975, 1), 12.7062047, 1e-6);
    near(infer_t_quantile(0.975, 2), 4.30265273, 1e-7);
    near(infer_t_quantile(0.975, 5), 2.57058184, 1e-7);
    near(infer_t_quantile(0.975, 10), 2.22813885, 1e-7);
    near(infer_t_quantile(0.975, 30), 2.04227246, 1e-7);
    near(infer_t_quantile(0.025, 10), -2.22813885, 1e-7);
    /* Round trip at a non-integer df and a small p. */
    near(infer_t_cdf(infer_t_quantile(0.9, 24.98852929), 24.98852929), 0.9, 1e-12);
    near(infer_t_cdf(infer_t_quantile(1e-6, 3.3), 3.3) / 1e-6, 1, 1e-8);
    assert_true(isnan(infer_t_quantile(1, 5)));
    assert_true(isnan(infer_t_quantile(0.5, 0)));
}

static void test_t_large_df(void **state)
{
    (void)state;
    /* Student's t tends to the normal; the gap is about phi(t)(t^3 + t) / (4 df)
     * (the first Cornish–Fisher term): 1.4e-8 at df 1e7, t 1.96. */
    near(infer_t_cdf(1.96, 1e6), infer_norm_cdf(1.96), 2e-7);
    near(infer_t_cdf(1.96, 0.99 * T_NORMAL_DF), infer_norm_cdf(1.96), 2e-8);
    near(infer_t_cdf(1.96, 1e15), infer_norm_cdf(1.96), 0);
    near(infer_t_quantile(0.975, 1e9), 1.959963984540054, 1e-10);
    /* Large but exact: df 1e5, Python: 0.9750007184... (t = 1.96). */
    near(infer_t_cdf(1.96, 1e5), 0.975000718405, 1e-10);
}

/* ------------------------------------------------------------------ tests */

static void test_ztest_worked(void **state)
{
    struct infer_test t;

    (void)state;
    /* 200/1000 vs 250/1000. By hand: pooled p = 0.225, SE = sqrt(0.225 * 0.775 * 0.002)
     * = 0.0186749, z = 0.05 / SE = 2.6774; two-sided p = erfc(z / sqrt 2) = 0.0074196
     * (the brief's 0.0073 is z rounded to 2.68). Unpooled SE = 0.0186011, 95% CI
     * 0.05 -+ 1.959964 * SE = [0.0134636, 0.0865364]. Digits: Python. */
    assert_int_equal(infer_ztest(200, 1000, 250, 1000, 0.05, &t), CN_OK);
    near(t.difference, 0.05, 1e-15);
    near(t.statistic, 2.677397763008329, 1e-10);
    near(t.p_value, 0.007419649261025693, 1e-10);
    near(t.ci_low, 0.013463621687539853, 1e-10);
    near(t.ci_high, 0.08653637831246015, 1e-10);
    assert_true(isinf(t.df));
    /* Swapping the sides mirrors everything. */
    assert_int_equal(infer_ztest(250, 1000, 200, 1000, 0.05, &t), CN_OK);
    near(t.statistic, -2.677397763008329, 1e-10);
    near(t.p_value, 0.007419649261025693, 1e-10);
    near(t.ci_high, -0.013463621687539853, 1e-10);
    /* A wider interval at alpha 0.01 (z 2.5758293): 0.05 -+ 2.5758293 * 0.0186011. */
    assert_int_equal(infer_ztest(200, 1000, 250, 1000, 0.01, &t), CN_OK);
    near(t.ci_low, 0.05 - 2.5758293035489004 * sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000), 1e-10);
}

static void test_ztest_edges(void **state)
{
    struct infer_test t;

    (void)state;
    assert_int_equal(infer_ztest(0, 0, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(1, 10, 0, 0, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(11, 10, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(-1, 10, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(1, 10, 1, 10, 0, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(1, 10, 1, 10, 1, &t), CN_EINVAL);
    assert_int_equal(infer_ztest(1, 10, 1, 10, NAN, &t), CN_EINVAL);
    /* All 0 or all 1 on both sides: pooled SE 0, no evidence. */
    assert_int_equal(infer_ztest(0, 50, 0, 70, 0.05, &t), CN_OK);
    near(t.statistic, 0, 0);
    near(t.p_value, 1, 0);
    near(t.ci_low, 0, 0);
    near(t.ci_high, 0, 0);
    assert_int_equal(infer_ztest(50, 50, 70, 70, 0.05, &t), CN_OK);
    near(t.statistic, 0, 0);
    near(t.p_value, 1, 0);
    /* All 0 vs all 1: pooled SE > 0, unpooled 0. By hand: pooled p = 0.5, SE =
     * sqrt(0.25 * 0.2) = 0.2236068, z = 1 / SE = 4.4721360; p = erfc(z / sqrt 2). */
    assert_int_equal(infer_ztest(0, 10, 10, 10, 0.05, &t), CN_OK);
    near(t.statistic, sqrt(20), 1e-12);
    near(t.p_value, erfc(sqrt(10)), 1e-15);
    near(t.ci_low, 1, 0);
    /* Huge n: 1e12 trials each, 0.5 against 0.50001. By hand: pooled p = 0.500005,
     * z = 1e-5 / sqrt(p (1 - p) 2e-12) = 14.142, p = erfc(z / sqrt 2) ~ 2.1e-45. */
    assert_int_equal(
        infer_ztest(500000000000LL, 1000000000000LL, 500010000000LL, 1000000000000LL, 0.05, &t),
        CN_OK);
    near(t.statistic, 1e-5 / sqrt(0.500005 * 0.499995 * 2e-12), 1e-6);
    near(t.p_value / erfc(t.statistic / M_SQRT2), 1, 1e-12);
    assert_true(t.p_value > 1e-46 && t.p_value < 1e-44);
    /* ... and 1e-6 apart is z = 1.414, p = 0.157: no evidence even with 1e12 trials. */
    assert_int_equal(
        infer_ztest(500000000000LL, 1000000000000LL, 500001000000LL, 1000000000000LL, 0.05, &t),
        CN_OK);
    near(t.statistic, M_SQRT2, 1e-5);
    near(t.p_value, 0.15729920705028513, 1e-5); /* erfc(1), Python */
}

static void test_welch_worked(void **state)
{
    struct infer_test t;

    (void)state;
    /* Wikipedia, "Welch's t-test", example 1: A1 = {27.5, 21.0, 19.0, 23.6, 17.0, 17.9,
     * 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4}, A2 = {27.1, 22.0, 20.8, 23.4,
     * 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4}: |t| = 2.46,
     * df = 24.9(9), p = 0.021. Means and variances by hand; digits: Python; the interval
     * from t(0.975; 24.988529) = 2.0595865 (Python, bisection on the integrated CDF). */
    assert_int_equal(infer_welch(20.82, 7.867428571428574, 15, 22.986666666666668,
                                 3.812666666666668, 15, 0.05, &t),
                     CN_OK);
    near(t.difference, 2.166666666666668, 1e-12);
    near(t.statistic, 2.45535639828601, 1e-10);
    near(t.df, 24.98852929023142, 1e-9);
    near(t.p_value, 0.02137800146286173, 1e-9);
    near(t.ci_low, 0.34923706619240713, 1e-8);
    near(t.ci_high, 3.9840962671409357, 1e-8);
    /* Example 2 (unequal sizes, 10 vs 20): t = 2.22, df = 24.5, p = 0.036 in the article;
     * Python: 2.2255120399698485, 24.524634944257343, 0.03548453083001357. */
    assert_int_equal(infer_welch(19.37, 1.4489999999999996, 10, 21.589999999999996,
                                 17.00305263157895, 20, 0.05, &t),
                     CN_OK);
    near(t.statistic, 2.2255120399698485, 1e-10);
    near(t.df, 24.524634944257343, 1e-9);
    near(t.p_value, 0.03548453083001357, 1e-9);
}

static void test_welch_edges(void **state)
{
    struct infer_test t;

    (void)state;
    assert_int_equal(infer_welch(1, 1, 0, 1, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_welch(1, 1, 10, 1, 1, 1, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_welch(1, -1, 10, 1, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_welch(NAN, 1, 10, 1, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_welch(1, INFINITY, 10, 1, 1, 10, 0.05, &t), CN_EINVAL);
    assert_int_equal(infer_welch(1, 1, 10, 1, 1, 10, 1.5, &t), CN_EINVAL);
    /* Both constant and equal: nothing to see. */
    assert_int_equal(infer_welch(3, 0, 10, 3, 0, 20, 0.05, &t), CN_OK);
    near(t.statistic, 0, 0);
    near(t.p_value, 1, 0);
    near(t.ci_low, 0, 0);
    /* Both constant and different: the difference is exact. */
    assert_int_equal(infer_welch(3, 0, 10, 4, 0, 20, 0.05, &t), CN_OK);
    assert_true(isinf(t.statistic) && t.statistic > 0);
    near(t.p_value, 0, 0);
    near(t.ci_low, 1, 0);
    near(t.ci_high, 1, 0);
    /* One side constant: df = the other n - 1 (by hand), here 19; t = 1 / sqrt(4 / 20). */
    assert_int_equal(infer_welch(3, 0, 10, 4, 4, 20, 0.05, &t), CN_OK);
    near(t.df, 19, 1e-12);
    near(t.statistic, 1 / sqrt(0.2), 1e-12);
    near(t.p_value, 2 * (1 - infer_t_cdf(1 / sqrt(0.2), 19)), 1e-12);
    /* Equal sizes and variances: df = 2n - 2 (by hand). */
    assert_int_equal(infer_welch(0, 2, 8, 1, 2, 8, 0.05, &t), CN_OK);
    near(t.df, 14, 1e-12);
    /* Huge n: the normal takes over without NaN; z = 0.001 / sqrt(2e-9) = 22.36. */
    assert_int_equal(infer_welch(0, 1, 1000000000LL, 0.001, 1, 1000000000LL, 0.05, &t), CN_OK);
    near(t.statistic, 0.001 / sqrt(2e-9), 1e-9);
    assert_true(t.p_value >= 0 && t.p_value < 1e-100);
    near(t.ci_high - t.difference, 1.959963984540054 * sqrt(2e-9), 1e-12);
}

static void test_quantile(void **state)
{
    /* numpy.percentile(..., method="linear") / PostgreSQL percentile_cont, by hand:
     * {1,2,3,4}: 0.5 -> 2.5; 1..10: 0.95 -> 9.55, 0.99 -> 9.91. */
    double a[] = {4, 1, 3, 2};
    double b[10];
    double one[] = {7};
    double nan_last[] = {NAN, 3, 1};

    (void)state;
    for (int i = 0; i < 10; i++)
        b[i] = 10 - i;
    near(infer_quantile(a, 4, 0.5), 2.5, 1e-15);
    near(a[0], 1, 0); /* sorted in place */
    near(infer_quantile(a, 4, 0), 1, 0);
    near(infer_quantile(a, 4, 1), 4, 0);
    near(infer_quantile(b, 10, 0.95), 9.55, 1e-12);
    near(infer_quantile(b, 10, 0.99), 9.91, 1e-12);
    near(infer_quantile(one, 1, 0.3), 7, 0);
    near(infer_quantile(nan_last, 3, 0.5), 3, 0); /* NaN sorts last */
    assert_true(isnan(nan_last[2]));
    assert_true(isnan(infer_quantile(a, 0, 0.5)));
    assert_true(isnan(infer_quantile(a, 4, -0.1)));
    assert_true(isnan(infer_quantile(a, 4, 1.1)));
    assert_true(isnan(infer_quantile(a, 4, NAN)));
}

/* ------------------------------------------------------------------ scoring and assembly */

static void test_scoring_per_objective(void **state)
{
    struct report r = fresh();
    Cairn__V1__ModelStats s;
    Cairn__V1__VariantStats *v;
    double three = 3, half = 0.5;

    (void)state;
    group(&r, "bin", 1, 10);
    group(&r, "hinge", 1, 10);
    group(&r, "logitraw", 1, 10);
    group(&r, "reg", 1, 10);
    group(&r, "softmax", 1, 10);
    group(&r, "softprob", 1, 10);
    group(&r, "unknown", 1, 10);

    /* binary:logistic: p > 0.5 is class 1; log loss -ln p(label). */
    outcome(&r, "bin", 1, "binary:logistic", "0.9", &ONE, NULL, 1);  /* right, -ln 0.9 */
    outcome(&r, "bin", 1, "binary:logistic", "0.9", &ZERO, NULL, 1); /* wrong, -ln 0.1 */
    outcome(&r, "bin", 1, "binary:logistic", "0.5", &ZERO, NULL,
            1); /* 0.5 is class 0: right, -ln 0.5 */
    outcome(&r, "bin", 1, "binary:logistic", "1", &ONE, NULL, 1); /* clipped: -ln(1 - 1e-15) */
    outcome(&r, "bin", 1, "binary:logistic", "0", &ONE, NULL, 1); /* clipped: -ln(1e-15) = 34.54 */
    /* binary:hinge outputs the class; no probability. */
    outcome(&r, "hinge", 1, "binary:hinge", "1", &ONE, NULL, 1);
    outcome(&r, "hinge", 1, "binary:hinge", "0", &ONE, NULL, 1);
    /* binary:logitraw: margin > 0 is class 1, p = sigmoid(margin). */
    outcome(&r, "logitraw", 1, "binary:logitraw", "2.0", &ONE, NULL, 1);
    outcome(&r, "logitraw", 1, "binary:logitraw", "-1", &ONE, NULL, 1);
    /* Regression: squared error. */
    outcome(&r, "reg", 1, "reg:squarederror", "1.5", &ONE, NULL, 1);
    outcome(&r, "reg", 1, "reg:squarederror", "-1", &TWO, NULL, 1);
    /* multi:softmax outputs the class. */
    outcome(&r, "softmax", 1, "multi:softmax", "2", &TWO, NULL, 1);
    outcome(&r, "softmax", 1, "multi:softmax", "1", &TWO, NULL, 1);
    outcome(&r, "softmax", 1, "multi:softmax", "2", &TWO, NULL, 1);
    /* multi:softprob: argmax; a label that is no class index is wrong with p 0 (clipped). */
    outcome(&r, "softprob", 1, "multi:softprob", "[0.2, 0.7, 0.1]", &ONE, NULL, 1);
    outcome(&r, "softprob", 1, "multi:softprob", "[0.2, 0.7, 0.1]", &TWO, NULL, 1);
    outcome(&r, "softprob", 1, "multi:softprob", "[0.2, 0.7, 0.1]", &three, NULL, 1);
    outcome(&r, "softprob", 1, "multi:softprob", "[0.2, 0.7, 0.1]", &half, NULL, 1);
    /* A version gone from the registry: an array is softprob, a number regression. */
    outcome(&r, "unknown", 1, "", "[0.6, 0.4]", &ZERO, NULL, 1);
    outcome(&r, "unknown", 1, "", "3", &ONE, NULL, 1);
    /* Unusable outputs still count as outcomes but score nothing. */
    outcome(&r, "unknown", 1, "", "not json", &ONE, NULL, 1);
    outcome(&r, "unknown", 1, "", "[1, \"x\"]", &ONE, NULL, 1);
    outcome(&r, "unknown", 1, "", "[]", &ONE, NULL, 1);
    outcome(&r, "unknown", 1, "", "null", &ONE, NULL, 1);
    outcome(&r, "unknown", 1, "", NULL, &ONE, NULL, 1);
    /* No such group (cannot happen within one snapshot): ignored, counted. */
    outcome(&r, "nobody", 1, "", "1", &ONE, NULL, 1);
    outcome(&r, "bin", 9, "", "1", &ONE, NULL, 1);
    assert_int_equal(r.orphans, 2);

    s = finish(&r, NULL);
    assert_int_equal(s.n_variants, 7);

    v = vstats(&s, "bin", 1);
    assert_int_equal(v->outcomes, 5);
    assert_string_equal(v->metric, "accuracy");
    near(v->metric_value, 3.0 / 5, 1e-15);
    near(v->log_loss, (-log(0.9) - log(0.1) - log(0.5) - log(1 - 1e-15) - log(1e-15)) / 5, 1e-12);
    near(v->mean_reward, 0, 0);

    v = vstats(&s, "hinge", 1);
    near(v->metric_value, 0.5, 0);
    near(v->log_loss, 0, 0);

    v = vstats(&s, "logitraw", 1);
    near(v->metric_value, 0.5, 0);
    near(v->log_loss, (log1p(exp(-2.0)) + log1p(exp(1.0))) / 2, 1e-12);

    v = vstats(&s, "reg", 1);
    assert_string_equal(v->metric, "mse");
    near(v->metric_value, (0.25 + 9) / 2, 1e-15);
    near(v->log_loss, 0, 0);

    v = vstats(&s, "softmax", 1);
    near(v->metric_value, 2.0 / 3, 1e-15);

    v = vstats(&s, "softprob", 1);
    assert_int_equal(v->outcomes, 4);
    near(v->metric_value, 0.25, 0);
    near(v->log_loss, (-log(0.7) - log(0.1) - 2 * log(1e-15)) / 4, 1e-12);

    v = vstats(&s, "unknown", 1);
    assert_int_equal(v->outcomes, 7);
    assert_string_equal(v->metric, "accuracy"); /* classification rows come first */
    near(v->metric_value, 1, 0);
    near(v->log_loss, -log(0.6), 1e-12);

    /* All have 10 requests: the first, "bin", is the control. Compared on accuracy: those
     * with two labelled classification rows (hinge, logitraw, softmax, softprob). */
    assert_int_equal(s.n_comparisons, 4);
    for (size_t i = 0; i < s.n_comparisons; i++) {
        assert_string_equal(s.comparisons[i]->control, "bin");
        assert_string_equal(s.comparisons[i]->metric, "accuracy");
    }
    assert_string_equal(s.comparisons[0]->variant, "hinge");
    assert_string_equal(s.comparisons[3]->variant, "softprob");
    near(s.alpha, 0.05, 0);
    assert_int_equal(s.since, 123);
    near(s.log_sample_rate, 0.5, 0);
    assert_string_equal(s.model, "m");
}

/* Control A: 800 of 1000 right; B: 850 of 1000; mirror: 100 of 100 (never compared). */
static void feed_ab(struct report *r, int a_right, int b_right)
{
    group(r, "A", 1, 1000);
    group(r, "B", 2, 1000);
    group(r, "mirror", 2, 500);
    outcome(r, "A", 1, "binary:logistic", "0.9", &ONE, NULL, a_right);
    outcome(r, "A", 1, "binary:logistic", "0.9", &ZERO, NULL, 1000 - a_right);
    outcome(r, "B", 2, "binary:logistic", "0.9", &ONE, NULL, b_right);
    outcome(r, "B", 2, "binary:logistic", "0.2", &ONE, NULL, 1000 - b_right);
    outcome(r, "mirror", 2, "binary:logistic", "0.9", &ONE, NULL, 100);
}

static void test_report_accuracy_winner(void **state)
{
    struct report r = fresh();
    Cairn__V1__ModelStats s;
    Cairn__V1__Comparison *c;
    struct infer_test t;

    (void)state;
    feed_ab(&r, 800, 850);
    s = finish(&r, NULL);
    assert_int_equal(s.n_variants, 3);
    assert_string_equal(s.variants[0]->variant, "A");
    assert_string_equal(s.variants[2]->variant, "mirror");
    near(vstats(&s, "mirror", 2)->metric_value, 1, 0);
    assert_int_equal(s.n_comparisons, 1);
    c = s.comparisons[0];
    assert_string_equal(c->variant, "B");
    assert_string_equal(c->control, "A");
    assert_string_equal(c->metric, "accuracy");
    assert_string_equal(c->test, "two_proportion_z");
    assert_true(c->higher_is_better);
    /* By hand: pooled 0.825, SE = sqrt(0.825 * 0.175 * 0.002) = 0.0169926, z = 2.9425. */
    near(c->statistic, 0.05 / sqrt(0.825 * 0.175 * 0.002), 1e-10);
    assert_int_equal(infer_ztest(800, 1000, 850, 1000, 0.05, &t), CN_OK);
    near(c->p_value, t.p_value, 0);
    near(c->ci_low, t.ci_low, 0);
    near(c->difference, 0.05, 1e-12);
    assert_true(c->significant);
    assert_string_equal(s.winner, "B");
}

static void test_report_control_wins_or_nobody(void **state)
{
    struct report r = fresh();
    Cairn__V1__ModelStats s;

    (void)state;
    /* B named control; A is significantly worse, so the control is the winner. */
    feed_ab(&r, 800, 850);
    s = finish(&r, "B");
    assert_int_equal(s.n_comparisons, 1);
    assert_string_equal(s.comparisons[0]->variant, "A");
    assert_string_equal(s.comparisons[0]->control, "B");
    near(s.comparisons[0]->difference, -0.05, 1e-12);
    assert_true(s.comparisons[0]->significant);
    assert_string_equal(s.winner, "B");

    /* 800 vs 810 of 1000 is no evidence: no winner. */
    r = fresh();
    feed_ab(&r, 800, 810);
    s = finish(&r, NULL);
    assert_int_equal(s.n_comparisons, 1);
    assert_false(s.comparisons[0]->significant);
    assert_string_equal(s.winner, "");

    /* "mirror" asked for as control is ignored; an absent control falls back to the
     * busiest (A and B tie at 1000: the first, A). */
    r = fresh();
    feed_ab(&r, 800, 850);
    s = finish(&r, "mirror");
    assert_string_equal(s.comparisons[0]->control, "A");
    r = fresh();
    feed_ab(&r, 800, 850);
    s = finish(&r, "nope");
    assert_string_equal(s.comparisons[0]->control, "A");
}

static void test_report_rewards_welch(void **state)
{
    struct report r = fresh();
    Cairn__V1__ModelStats s;
    Cairn__V1__Comparison *c;
    Cairn__V1__VariantStats *v;
    struct infer_test t;
    /* A: rewards 0,1,2,3 (mean 1.5, var 5/3); B over two versions: 2,3 and 4,5 (mean 3.5,
     * var 5/3). Labels present too: rewards take precedence. */
    static const double ra[] = {0, 1, 2, 3}, rb[] = {2, 3, 4, 5};

    (void)state;
    group(&r, "A", 1, 10);
    group(&r, "B", 1, 3);
    group(&r, "B", 2, 3);
    group(&r, "C", 1, 3);
    for (int i = 0; i < 4; i++) {
        outcome(&r, "A", 1, "binary:logistic", "0.9", &ONE, &ra[i], 1);
        outcome(&r, "B", i < 2 ? 1 : 2, "binary:logistic", "0.9", &ONE, &rb[i], 1);
    }
    outcome(&r, "C", 1, "binary:logistic", "0.9", &ONE, &rb[0], 1); /* 1 outcome: no comparison */
    s = finish(&r, NULL);
    assert_int_equal(s.n_variants, 4);
    v = vstats(&s, "B", 2);
    assert_string_equal(v->metric, "mean_reward");
    near(v->metric_value, 4.5, 1e-15);
    assert_int_equal(v->rewards, 2);
    near(v->mean_reward, 4.5, 1e-15);
    near(v->log_loss, -log(0.9), 1e-12);
    assert_int_equal(s.n_comparisons, 1);
    c = s.comparisons[0];
    assert_string_equal(c->variant, "B");
    assert_string_equal(c->metric, "mean_reward");
    assert_string_equal(c->test, "welch_t");
    /* The versions of B are merged: same as Welch on the four values (df 6 by hand). */
    assert_int_equal(infer_welch(1.5, 5.0 / 3, 4, 3.5, 5.0 / 3, 4, 0.05, &t), CN_OK);
    near(t.df, 6, 1e-12);
    near(c->difference, 2, 1e-12);
    near(c->statistic, t.statistic, 1e-12);
    near(c->p_value, t.p_value, 1e-12);
    near(c->ci_high, t.ci_high, 1e-12);
    /* t = 2 / sqrt(5/6) = 2.1909, df 6: p = 0.0710 (t tables: between 1.943 (0.10) and
     * 2.447 (0.05)), not significant. */
    assert_true(c->p_value > 0.05 && c->p_value < 0.10);
    assert_false(c->significant);
    assert_string_equal(s.winner, "");
}

static void test_report_mse_lower_is_better(void **state)
{
    struct report r = fresh();
    Cairn__V1__ModelStats s;
    Cairn__V1__Comparison *c;
    char out[32];

    (void)state;
    group(&r, "new", 2, 50); /* in byte order, as the database delivers them */
    group(&r, "old", 1, 100);
    /* old errs by 1 +- a little, new by 0.1 +- a little: squared errors ~1 vs ~0.01. */
    for (int i = 0; i < 30; i++) {
        snprintf(out, sizeof out, "%g", 1 + 0.01 * (i % 3));
        outcome(&r, "old", 1, "reg:squarederror", out, &ZERO, NULL, 1);
        snprintf(out, sizeof out, "%g", 0.1 + 0.01 * (i % 3));
        outcome(&r, "new", 2, "reg:squarederror", out, &ZERO, NULL, 1);
    }
    assert_int_equal(r.orphans, 0);
    s = finish(&r, NULL);
    assert_int_equal(s.n_comparisons, 1);
    c = s.comparisons[0];
    assert_string_equal(c->control, "old");
    assert_string_equal(c->metric, "mse");
    assert_false(c->higher_is_better);
    assert_true(c->difference < -0.9);
    assert_true(c->significant);
    assert_string_equal(s.winner, "new");
}

static void test_report_args_and_db_down(void **state)
{
    struct cn_pg *pg = cn_pg_new("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2");
    Cairn__V1__ModelStats s;
    char why[128] = "";
    double l = 1, bad = NAN;

    (void)state;
    assert_int_equal(infer_stats_report(pg, "m", 0, 1.5, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_EINVAL);
    assert_non_null(strstr(why, "alpha"));
    assert_int_equal(infer_stats_report(pg, "m", -5, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_EINVAL);
    assert_non_null(strstr(why, "since"));
    assert_int_equal(infer_stats_report(pg, "m", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_EUNAVAIL);
    assert_string_equal(why, "database unavailable");
    assert_int_equal(s.n_variants, 0);
    /* Feedback: input is refused before the database; a valid one meets it down. */
    assert_int_equal(infer_feedback_store(pg, "m", "r1", NULL, NULL), CN_EINVAL);
    assert_int_equal(infer_feedback_store(pg, "m", "r1", &bad, NULL), CN_EINVAL);
    assert_int_equal(infer_feedback_store(pg, "m", "r1", &l, &bad), CN_EINVAL);
    assert_int_equal(infer_feedback_store(pg, "m", "", &l, NULL), CN_EINVAL);
    assert_int_equal(infer_feedback_store(pg, "m", "has space", &l, NULL), CN_EINVAL);
    assert_int_equal(infer_feedback_store(pg, "m", "caf\xc3\xa9", &l, NULL), CN_EINVAL);
    {
        char longid[REQUEST_ID_MAX + 2];

        memset(longid, 'a', sizeof longid - 1);
        longid[sizeof longid - 1] = '\0';
        assert_int_equal(infer_feedback_store(pg, "m", longid, &l, NULL), CN_EINVAL);
        longid[REQUEST_ID_MAX] = '\0';
        assert_int_equal(infer_feedback_store(pg, "m", longid, &l, NULL), CN_EUNAVAIL);
    }
    cn_pg_free(pg);
}

/* ------------------------------------------------------------------ against PostgreSQL */

static char db_name[64];
static char db_dsn[512];
static struct cn_pg *db;
static bool db_broken; /* CAIRN_PG_DSN given but the database could not be set up */

/* Skips a database case without CAIRN_PG_DSN; fails it when one was given but unusable
 * (the math cases still run: the group setup never fails). */
#define NEED_DB()                                                                    \
    do {                                                                             \
        if (db_broken)                                                               \
            fail_msg("CAIRN_PG_DSN is set but the test database could not be made"); \
        if (db == NULL)                                                              \
            skip();                                                                  \
    } while (0)

/* Creates a database of our own and migrates it (or leaves db NULL without a DSN). */
static int db_setup(void **state)
{
    const char *dsn = getenv("CAIRN_PG_DSN");
    char sql[128];
    PGconn *c;
    PGresult *res;
    bool ok;

    (void)state;
    if (dsn == NULL || dsn[0] == '\0')
        return 0;
    snprintf(db_name, sizeof db_name, "cairn_stats_test_%ld", (long)getpid());
    c = PQconnectdb(dsn);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    res = PQexec(c, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "db_setup: %s", PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
    if (!ok) {
        db_broken = true;
        return 0;
    }
    /* Key/value DSNs: a later keyword wins. */
    snprintf(db_dsn, sizeof db_dsn, "%s dbname=%s", dsn, db_name);
    db = cn_pg_new(db_dsn);
    if (cn_pg_migrate(db_dsn, "inference", inference_migrations, inference_migrations_count,
                      5000) != CN_OK)
        db_broken = true;
    return 0;
}

static int db_teardown(void **state)
{
    const char *dsn = getenv("CAIRN_PG_DSN");
    char sql[128];
    PGconn *c;

    (void)state;
    if (db == NULL || db_name[0] == '\0')
        return 0;
    cn_pg_free(db);
    db = NULL;
    c = PQconnectdb(dsn);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
    PQclear(PQexec(c, sql));
    PQfinish(c);
    return 0;
}

static void sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql(const char *fmt, ...)
{
    char q[4096];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    rc = cn_pg_exec(db, q, 0, NULL, NULL);
    if (rc != CN_OK)
        fail_msg("%s: %s", q, cn_pg_errmsg(db));
}

#define T0 1700000000LL /* the experiment's start, unix seconds */

/* A model with versions (objective), optionally an experiment started at T0. */
static void db_model(const char *name, const char *objective, bool experiment)
{
    sql("INSERT INTO inference.models(name) VALUES ('%s')", name);
    sql("INSERT INTO inference.versions(model_id, version, ubj, sha256, size_bytes, source_format, "
        "num_features, objective) SELECT id, v, '\\x00', 'x', 1, 'json', 1, '%s' "
        "FROM inference.models, generate_series(1, 2) v WHERE name = '%s'",
        objective, name);
    if (experiment)
        sql("INSERT INTO inference.experiments(model_id, spec, started_at) SELECT id, '{}', "
            "to_timestamp(%lld) FROM inference.models WHERE name = '%s'",
            T0, name);
}

/* One logged call at T0 + at_s seconds, its outputs (an SQL literal) in column `col`:
 * output_values (real[]), or outputs (json) as rows logged before migration 004 are. */
static void db_pred_in(const char *col, const char *model, const char *request_id, const char *variant,
                       int version, const char *outputs, int latency_us, const char *status, long long at_s)
{
    sql("INSERT INTO inference.predictions(request_id, at, model, version, variant, input_values, %s, "
        "latency_us, status) VALUES ('%s', to_timestamp(%lld), '%s', %d, '%s', '{{1}}', %s, %d, '%s')",
        col, request_id, T0 + at_s, model, version, variant, outputs, latency_us, status);
}

static void db_pred(const char *model, const char *request_id, const char *variant, int version,
                    const char *outputs, int latency_us, const char *status, long long at_s)
{
    db_pred_in("output_values", model, request_id, variant, version, outputs, latency_us, status, at_s);
}

static void db_label(const char *model, const char *request_id, double label)
{
    assert_int_equal(infer_feedback_store(db, model, request_id, &label, NULL), CN_OK);
}

static void test_db_feedback(void **state)
{
    PGresult *res = NULL;
    double l = 1, rw = 2.5;

    (void)state;
    NEED_DB();
    db_model("fb", "binary:logistic", false);
    assert_int_equal(infer_feedback_store(db, "fb", "req-1", &l, NULL), CN_OK);
    assert_int_equal(infer_feedback_store(db, "fb", "req-1", NULL, &rw), CN_OK);
    assert_int_equal(infer_feedback_store(db, "nope", "req-1", &l, NULL), CN_ENOTFOUND);
    assert_int_equal(
        cn_pg_exec(db,
                   "SELECT count(*), count(label), count(reward), sum(reward) "
                   "FROM inference.feedback WHERE model = 'fb' AND request_id = 'req-1'",
                   0, NULL, &res),
        CN_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "2");
    assert_string_equal(PQgetvalue(res, 0, 1), "1");
    assert_string_equal(PQgetvalue(res, 0, 2), "1");
    assert_string_equal(PQgetvalue(res, 0, 3), "2.5");
    PQclear(res);
    assert_int_equal(cn_pg_exec(db, "SELECT count(*) FROM inference.feedback WHERE model = 'nope'",
                                0, NULL, &res),
                     CN_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
}

static void test_db_report(void **state)
{
    Cairn__V1__ModelStats s;
    Cairn__V1__VariantStats *v;
    char why[256] = "";

    (void)state;
    NEED_DB();
    db_model("m1", "binary:logistic", true);
    /* Before the experiment: only counted when since asks for them. */
    for (int i = 0; i < 5; i++) {
        char id[16];

        snprintf(id, sizeof id, "old%d", i);
        db_pred("m1", id, "A", 1, "'{0.9}'", 100, "ok", -600);
    }
    /* A v1: 4 answered (1..4 ms), 1 error (10 us, excluded from latency and outcomes). */
    db_pred("m1", "a1", "A", 1, "'{0.9}'", 1000, "ok", 60);
    db_pred("m1", "a2", "A", 1, "'{0.9}'", 4000, "ok", 61);
    db_pred("m1", "a3", "A", 1, "'{0.9}'", 3000, "ok", 62);
    db_pred("m1", "a4", "A", 1, "'{0.9}'", 2000, "ok", 63);
    db_pred("m1", "a5", "A", 1, "NULL", 10, "error", 64);
    /* B v2: 3 answered. The mirror got a copy of b1 (same request id). */
    db_pred("m1", "b1", "B", 2, "'{0.2}'", 500, "ok", 70);
    db_pred("m1", "b2", "B", 2, "'{0.8, 0.1}'", 900, "ok", 71); /* two instances */
    db_pred_in("outputs", "m1", "b3", "B", 2, "'[0.7]'", 700, "ok", 72); /* logged as json */
    db_pred("m1", "b1", "mirror", 2, "'{0.3}'", 800, "ok", 70);
    /* Another model's rows never leak in. */
    db_model("other", "binary:logistic", false);
    db_pred("other", "a1", "A", 1, "'{0.1}'", 5, "ok", 60);

    db_label("m1", "a1", 1); /* right */
    db_label("m1", "a2", 1); /* right */
    db_label("m1", "a3", 1); /* superseded by the next: */
    db_label("m1", "a3", 0); /* wrong (0.9 says 1) */
    /* a4: no feedback. */
    db_label("m1", "a5", 1); /* an error row: not an outcome */
    db_label("m1", "b1", 0); /* right for B (0.2) and for the mirror (0.3) */
    db_label("m1", "b2", 1); /* right: instance 0 (0.8) is scored */
    db_label("m1", "b3", 0); /* wrong */
    db_label("other", "a1", 0);

    /* since 0 = the experiment's start. */
    assert_int_equal(infer_stats_report(db, "m1", 0, 0, NULL, 0.25, &alloc, &s, why, sizeof why),
                     CN_OK);
    assert_string_equal(s.model, "m1");
    assert_int_equal(s.since, T0 * 1000);
    near(s.alpha, 0.05, 0);
    near(s.log_sample_rate, 0.25, 0);
    assert_int_equal(s.n_variants, 3);
    assert_string_equal(s.variants[0]->variant, "A");
    assert_string_equal(s.variants[1]->variant, "B");
    assert_string_equal(s.variants[2]->variant, "mirror");

    v = vstats(&s, "A", 1);
    assert_int_equal(v->requests, 5);
    assert_int_equal(v->errors, 1);
    /* percentile_cont over 1000..4000 us, by hand: 2.5, 1 + 0.95 * 3 = 3.85, 3.97 ms. */
    near(v->latency_p50_ms, 2.5, 1e-9);
    near(v->latency_p95_ms, 3.85, 1e-9);
    near(v->latency_p99_ms, 3.97, 1e-9);
    assert_int_equal(v->outcomes, 3);
    assert_string_equal(v->metric, "accuracy");
    near(v->metric_value, 2.0 / 3, 1e-12);
    near(v->log_loss, (-2 * log(0.9) - log(0.1)) / 3, 1e-9);

    v = vstats(&s, "B", 2);
    assert_int_equal(v->requests, 3);
    assert_int_equal(v->errors, 0);
    near(v->latency_p50_ms, 0.7, 1e-9);
    near(v->latency_p99_ms, 0.896, 1e-9);
    assert_int_equal(v->outcomes, 3);
    near(v->metric_value, 2.0 / 3, 1e-12);
    near(v->log_loss, (-2 * log(0.8) - log(0.3)) / 3, 1e-9);

    v = vstats(&s, "mirror", 2);
    assert_int_equal(v->outcomes, 1);
    near(v->metric_value, 1, 0);

    /* B against A (the busiest), 2/3 against 2/3. */
    assert_int_equal(s.n_comparisons, 1);
    assert_string_equal(s.comparisons[0]->variant, "B");
    assert_string_equal(s.comparisons[0]->control, "A");
    assert_string_equal(s.comparisons[0]->test, "two_proportion_z");
    near(s.comparisons[0]->difference, 0, 1e-12);
    near(s.comparisons[0]->p_value, 1, 1e-12);
    assert_false(s.comparisons[0]->significant);
    assert_string_equal(s.winner, "");

    /* An explicit since reaches back before the experiment. */
    assert_int_equal(
        infer_stats_report(db, "m1", (T0 - 700) * 1000, 0.1, NULL, 1, &alloc, &s, why, sizeof why),
        CN_OK);
    assert_int_equal(s.since, (T0 - 700) * 1000);
    near(s.alpha, 0.1, 0);
    assert_int_equal(vstats(&s, "A", 1)->requests, 10);
    assert_int_equal(vstats(&s, "A", 1)->outcomes, 3);
    /* ... and one after every row sees nothing. */
    assert_int_equal(
        infer_stats_report(db, "m1", (T0 + 3600) * 1000, 0, NULL, 1, &alloc, &s, why, sizeof why),
        CN_OK);
    assert_int_equal(s.n_variants, 0);
    assert_int_equal(s.n_comparisons, 0);

    /* No experiment: since 0 is all time. */
    assert_int_equal(infer_stats_report(db, "other", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_OK);
    assert_int_equal(s.since, 0);
    assert_int_equal(s.n_variants, 1);
    assert_int_equal(s.variants[0]->outcomes, 1);
    near(s.variants[0]->metric_value, 1, 0);

    assert_int_equal(infer_stats_report(db, "ghost", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_ENOTFOUND);
    assert_non_null(strstr(why, "not found"));
}

/* Class probabilities come out of the database as the first instance's row, whether
 * logged as real[] (rows x classes) or as json; a missing output scores nothing. */
static void test_db_softprob(void **state)
{
    Cairn__V1__ModelStats s;
    Cairn__V1__VariantStats *v;
    char why[256] = "";

    (void)state;
    NEED_DB();
    db_model("sp", "multi:softprob", false);
    db_pred("sp", "s1", "A", 1, "'{{0.2,0.7,0.1},{0.5,0.25,0.25}}'", 100, "ok", 1); /* says 1 */
    db_pred_in("outputs", "sp", "s2", "A", 1, "'[[0.6,0.3,0.1]]'", 100, "ok", 2); /* says 0 */
    db_pred("sp", "s3", "A", 1, "'{{0.1,NULL,0.9}}'", 100, "ok", 3);             /* unusable */
    db_label("sp", "s1", 1); /* right */
    db_label("sp", "s2", 2); /* wrong */
    db_label("sp", "s3", 2);
    assert_int_equal(infer_stats_report(db, "sp", 0, 0, NULL, 1, &alloc, &s, why, sizeof why), CN_OK);
    v = vstats(&s, "A", 1);
    assert_int_equal(v->requests, 3);
    assert_int_equal(v->outcomes, 3);
    assert_string_equal(v->metric, "accuracy");
    near(v->metric_value, 0.5, 1e-12);
    near(v->log_loss, (-log(0.7f) - log(0.1f)) / 2, 1e-6);
}

static void test_db_outcome_cap(void **state)
{
    Cairn__V1__ModelStats s;
    char why[256] = "", id[16];
    int64_t total = 0;

    (void)state;
    NEED_DB();
    /* 45 labelled rows over two variants; the test's cap is 40 (fetched 3 at a time). */
    db_model("capped", "reg:squarederror", false);
    for (int i = 0; i < 45; i++) {
        snprintf(id, sizeof id, "c%d", i);
        db_pred("capped", id, i % 2 ? "A" : "B", 1, "'{1.5}'", 100, "ok", i);
        db_label("capped", id, 1);
    }
    assert_int_equal(infer_stats_report(db, "capped", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_OK);
    assert_int_equal(s.n_variants, 2);
    for (size_t i = 0; i < s.n_variants; i++) {
        total += s.variants[i]->outcomes;
        assert_int_equal(s.variants[i]->requests, i == 0 ? 22 : 23);
        assert_string_equal(s.variants[i]->metric, "mse");
        near(s.variants[i]->metric_value, 0.25, 1e-15);
    }
    assert_int_equal(total, INFER_STATS_MAX_OUTCOMES);
    /* All squared errors equal: Welch with zero variance on both sides. */
    assert_int_equal(s.n_comparisons, 1);
    near(s.comparisons[0]->p_value, 1, 0);
}

static void test_db_timeout(void **state)
{
    struct cn_pg *locker;
    Cairn__V1__ModelStats s;
    char why[256] = "";

    (void)state;
    NEED_DB();
    db_model("slow", "binary:logistic", false);
    /* Another session holds the log: the report waits, and statement_timeout ends it. */
    locker = cn_pg_new(db_dsn);
    assert_int_equal(cn_pg_begin(locker), CN_OK);
    assert_int_equal(cn_pg_exec(locker, "LOCK TABLE inference.predictions IN ACCESS EXCLUSIVE MODE",
                                0, NULL, NULL),
                     CN_OK);
    assert_int_equal(infer_stats_report(db, "slow", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_ETIMEDOUT);
    assert_non_null(strstr(why, "500 ms"));
    cn_pg_rollback(locker);
    cn_pg_free(locker);
    /* The handle is usable again: its transaction was rolled back. */
    assert_int_equal(infer_stats_report(db, "slow", 0, 0, NULL, 1, &alloc, &s, why, sizeof why),
                     CN_OK);
    {
        PGresult *res = NULL;

        /* Outside the report's REPEATABLE READ transaction again. */
        assert_int_equal(cn_pg_exec(db, "SHOW transaction_isolation", 0, NULL, &res), CN_OK);
        assert_string_equal(PQgetvalue(res, 0, 0), "read committed");
        PQclear(res);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_cdf),
        cmocka_unit_test(test_norm_quantile),
        cmocka_unit_test(test_t_cdf_closed_forms),
        cmocka_unit_test(test_t_cdf_tables),
        cmocka_unit_test(test_t_quantile),
        cmocka_unit_test(test_t_large_df),
        cmocka_unit_test(test_ztest_worked),
        cmocka_unit_test(test_ztest_edges),
        cmocka_unit_test(test_welch_worked),
        cmocka_unit_test(test_welch_edges),
        cmocka_unit_test(test_quantile),
        cmocka_unit_test_setup_teardown(test_scoring_per_objective, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_report_accuracy_winner, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_report_control_wins_or_nobody, arena_setup,
                                        arena_teardown),
        cmocka_unit_test_setup_teardown(test_report_rewards_welch, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_report_mse_lower_is_better, arena_setup,
                                        arena_teardown),
        cmocka_unit_test_setup_teardown(test_report_args_and_db_down, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_db_feedback, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_db_report, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_db_softprob, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_db_outcome_cap, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_db_timeout, arena_setup, arena_teardown),
    };
    return cmocka_run_group_tests(tests, db_setup, db_teardown);
}
