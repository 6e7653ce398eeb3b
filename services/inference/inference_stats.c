/* inference_stats.c — the statistics of experiments: the significance tests, the
 * distribution functions under them, quantiles, and the GetStats report.
 *
 * API (inference_stats.h): infer_ztest (two proportions: accuracy), infer_welch (two
 * means with unequal variances: reward, squared error), infer_quantile, the normal and
 * Student's t CDFs and their inverses, and infer_stats_report, which reads the prediction
 * log and the feedback through inference_db_stats.c and assembles a ModelStats.
 *
 * The math is written from the definitions, with no statistics library:
 *   - Normal CDF from erfc; Student's t CDF through the regularized incomplete beta
 *     function, P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2), evaluated by its
 *     continued fraction with the modified Lentz method. df need not be an integer
 *     (Welch–Satterthwaite df never is); above T_NORMAL_DF the normal CDF stands in: the
 *     two differ by less than 2e-8 there, while ln B(df/2, 1/2) from lgamma loses digits
 *     to cancellation as df grows (about 1e-8 relative at 1e7).
 *   - Quantiles (critical values of the intervals) by bisection on the upper tail, which
 *     keeps relative precision for tiny alpha.
 *
 * The report, per (variant, version): requests, errors, latency percentiles (in SQL) and
 * the outcome metric computed here row by row from outputs[0] and the latest feedback:
 * mean_reward when the rows have rewards; else with labels, by the version's objective,
 * accuracy (+ log_loss) for binary:* and multi:*, mse for the rest. Variants (all their
 * versions together) are compared against the control on one metric, the first of
 * mean_reward, accuracy, mse that the control and another variant both have two
 * outcomes of. To add a metric: a value in enum metric, its accumulator in struct acc,
 * its row work in add_outcome, and its test in compare().
 */
#include "inference_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "pg.h"
#include "util.h"

#define T_NORMAL_DF 1e7         /* above this many df, Student's t is the normal */
#define CF_EPS 1e-15            /* relative change at which the continued fraction stops */
#define CF_MAX_TERMS 10000      /* measured: under 100 terms for any df up to 1e7 */
#define CF_TINY 1e-300          /* Lentz's stand-in for a zero denominator */
#define LOGLOSS_CLIP 1e-15      /* probabilities are clipped to [clip, 1 - clip] (sklearn) */
#define MIRROR_VARIANT "mirror" /* shadow traffic: reported, never compared */

/* ------------------------------------------------------------------ distributions */

double infer_norm_cdf(double x)
{
    if (isnan(x))
        return NAN;
    return 0.5 * erfc(-x / M_SQRT2);
}

/* P(Z > x), accurate far into the upper tail where 1 - cdf would round to 0. */
static double norm_upper(double x, double unused)
{
    (void)unused;
    return 0.5 * erfc(x / M_SQRT2);
}

/* ln B(a, b), with the re-entrant lgamma (lgamma writes the global signgam). */
static double lbeta(double a, double b)
{
    int sign;

    return lgamma_r(a, &sign) + lgamma_r(b, &sign) - lgamma_r(a + b, &sign);
}

/* The continued fraction of I_x(a, b):
 *   I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...)))
 * with d(2m+1) = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d(2m) = m(b-m) x / ((a+2m-1)(a+2m)).
 * This returns the fraction part, evaluated front to back with the modified Lentz method:
 * for f = b0 + a1/(b1 + a2/(b2 + ...)) keep C = b_j + a_j / C and D = 1 / (b_j + a_j D),
 * and multiply f by C D until that factor is 1. Here b0 = 0, a1 = 1, then a_j = d(j-1),
 * b_j = 1. It converges fast for x < (a + 1) / (a + b + 2). */
static double beta_fraction(double a, double b, double x)
{
    double f = CF_TINY, c = CF_TINY, d = 0, coef, delta;

    for (int j = 1; j <= CF_MAX_TERMS; j++) {
        if (j == 1) {
            coef = 1;
        } else {
            int k = j - 1, m = k / 2;

            if (k % 2 == 1)
                coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
            else
                coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
        }
        d = 1 + coef * d;
        if (fabs(d) < CF_TINY)
            d = CF_TINY;
        c = 1 + coef / c;
        if (fabs(c) < CF_TINY)
            c = CF_TINY;
        d = 1 / d;
        delta = c * d;
        f *= delta;
        if (j > 1 && fabs(delta - 1) < CF_EPS)
            return f;
    }
    return f; /* not reached for the a, b the t distribution uses below T_NORMAL_DF */
}

/* The regularized incomplete beta I_x(a, b) for a, b > 0, given x and y = 1 - x
 * separately so a tiny 1 - x keeps its digits. Uses I_x(a, b) = 1 - I_y(b, a) on the side
 * where the fraction converges slowly. */
static double ibeta(double a, double b, double x, double y)
{
    double front;

    if (x <= 0)
        return 0;
    if (y <= 0)
        return 1;
    front = exp(a * log(x) + b * log(y) - lbeta(a, b));
    if (x < (a + 1) / (a + b + 2))
        return front * beta_fraction(a, b, x) / a;
    return 1 - front * beta_fraction(b, a, y) / b;
}

/* P(|T| > |t|) for Student's t with df degrees of freedom: two-sided p-value. */
static double t_two_sided(double t, double df)
{
    double t2 = t * t;

    if (isnan(t) || isnan(df) || df <= 0)
        return NAN;
    if (df > T_NORMAL_DF)
        return erfc(fabs(t) / M_SQRT2);
    if (isinf(t2))
        return 0;
    return ibeta(df / 2, 0.5, df / (df + t2), t2 / (df + t2));
}

/* P(T > t) for t >= 0. */
static double t_upper(double t, double df) { return 0.5 * t_two_sided(t, df); }

double infer_t_cdf(double t, double df)
{
    double tail = 0.5 * t_two_sided(t, df);

    return t > 0 ? 1 - tail : tail;
}

/* The x >= 0 with upper(x, df) = q, q in (0, 0.5], by bisection: bracket by doubling,
 * then halve until the bracket stops shrinking in double precision. */
static double upper_quantile(double (*upper)(double, double), double df, double q)
{
    double lo = 0, hi = 1, mid;

    if (!(q > 0 && q <= 0.5))
        return NAN;
    while (upper(hi, df) > q) {
        lo = hi;
        hi *= 2;
        if (hi > 1e300)
            return INFINITY;
    }
    for (int i = 0; i < 2000; i++) {
        mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi)
            break;
        if (upper(mid, df) > q)
            lo = mid;
        else
            hi = mid;
    }
    return lo + (hi - lo) / 2;
}

double infer_norm_quantile(double p)
{
    if (!(p > 0 && p < 1))
        return NAN;
    return p >= 0.5 ? upper_quantile(norm_upper, 0, 1 - p) : -upper_quantile(norm_upper, 0, p);
}

double infer_t_quantile(double p, double df)
{
    if (!(p > 0 && p < 1) || !(df > 0))
        return NAN;
    if (df > T_NORMAL_DF)
        return infer_norm_quantile(p);
    return p >= 0.5 ? upper_quantile(t_upper, df, 1 - p) : -upper_quantile(t_upper, df, p);
}

/* ------------------------------------------------------------------ tests */

int infer_ztest(int64_t s1, int64_t n1, int64_t s2, int64_t n2, double alpha,
                struct infer_test *out)
{
    double p1, p2, pool, se_pool, se, crit;

    if (n1 <= 0 || n2 <= 0 || s1 < 0 || s1 > n1 || s2 < 0 || s2 > n2 || !(alpha > 0 && alpha < 1))
        return CN_EINVAL;
    p1 = (double)s1 / (double)n1;
    p2 = (double)s2 / (double)n2;
    pool = ((double)s1 + (double)s2) / ((double)n1 + (double)n2);
    se_pool = sqrt(pool * (1 - pool) * (1 / (double)n1 + 1 / (double)n2));
    se = sqrt(p1 * (1 - p1) / (double)n1 + p2 * (1 - p2) / (double)n2);
    crit = upper_quantile(norm_upper, 0, alpha / 2);

    out->difference = p2 - p1;
    out->df = INFINITY;
    /* A pooled SE of 0 means both sides are all 0 or all 1: no evidence of a difference. */
    if (se_pool > 0) {
        out->statistic = out->difference / se_pool;
        out->p_value = erfc(fabs(out->statistic) / M_SQRT2);
    } else {
        out->statistic = 0;
        out->p_value = 1;
    }
    out->ci_low = out->difference - crit * se;
    out->ci_high = out->difference + crit * se;
    return CN_OK;
}

int infer_welch(double m1, double v1, int64_t n1, double m2, double v2, int64_t n2, double alpha,
                struct infer_test *out)
{
    double a, b, se, crit;

    if (n1 < 2 || n2 < 2 || !isfinite(m1) || !isfinite(m2) || !isfinite(v1) || !isfinite(v2) ||
        v1 < 0 || v2 < 0 || !(alpha > 0 && alpha < 1))
        return CN_EINVAL;
    a = v1 / (double)n1;
    b = v2 / (double)n2;
    se = sqrt(a + b);
    out->difference = m2 - m1;
    if (!(se > 0)) {
        /* Both samples constant: the difference is exact. */
        out->df = INFINITY;
        out->statistic = out->difference == 0 ? 0 : copysign(INFINITY, out->difference);
        out->p_value = out->difference == 0 ? 1 : 0;
        out->ci_low = out->ci_high = out->difference;
        return CN_OK;
    }
    /* Welch–Satterthwaite; a side with variance 0 contributes nothing (df = other n - 1). */
    out->df = (a + b) * (a + b) / (a * a / (double)(n1 - 1) + b * b / (double)(n2 - 1));
    out->statistic = out->difference / se;
    out->p_value = t_two_sided(out->statistic, out->df);
    crit = out->df > T_NORMAL_DF ? upper_quantile(norm_upper, 0, alpha / 2)
                                 : upper_quantile(t_upper, out->df, alpha / 2);
    out->ci_low = out->difference - crit * se;
    out->ci_high = out->difference + crit * se;
    return CN_OK;
}

/* Ascending, NaN last, so a stray NaN cannot break qsort's ordering. */
static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;

    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return (a > b) - (a < b);
}

double infer_quantile(double *v, size_t n, double q)
{
    double pos, frac;
    size_t lo;

    if (n == 0 || !(q >= 0 && q <= 1))
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    pos = q * (double)(n - 1);
    lo = (size_t)pos;
    if (lo >= n - 1)
        return v[n - 1];
    frac = pos - (double)lo;
    /* On a sample point, that point: no arithmetic with a neighbour that may be inf. */
    if (frac == 0)
        return v[lo];
    return v[lo] + frac * (v[lo + 1] - v[lo]);
}

/* ------------------------------------------------------------------ the report */

/* Count, mean and sum of squared deviations (Welford), mergeable (Chan et al.). */
struct moments {
    int64_t n;
    double mean, m2;
};

static void moments_add(struct moments *m, double x)
{
    double d = x - m->mean;

    m->n++;
    m->mean += d / (double)m->n;
    m->m2 += d * (x - m->mean);
}

static void moments_merge(struct moments *into, const struct moments *m)
{
    double n, d;

    if (m->n == 0)
        return;
    n = (double)(into->n + m->n);
    d = m->mean - into->mean;
    into->m2 += m->m2 + d * d * (double)into->n * (double)m->n / n;
    into->mean += d * (double)m->n / n;
    into->n += m->n;
}

static double moments_var(const struct moments *m)
{
    return m->n > 1 ? m->m2 / (double)(m->n - 1) : 0;
}

/* Outcomes of one (variant, version), or of a whole variant. */
struct acc {
    int64_t outcomes;       /* joined rows */
    int64_t n_cls, correct; /* labelled classification rows, right predictions */
    int64_t n_prob;         /* of those, rows with a probability (log loss) */
    double logloss_sum;
    struct moments sqerr; /* labelled regression rows: squared errors */
    struct moments reward;
};

static void acc_merge(struct acc *into, const struct acc *a)
{
    into->outcomes += a->outcomes;
    into->n_cls += a->n_cls;
    into->correct += a->correct;
    into->n_prob += a->n_prob;
    into->logloss_sum += a->logloss_sum;
    moments_merge(&into->sqerr, &a->sqerr);
    moments_merge(&into->reward, &a->reward);
}

enum metric { M_NONE, M_REWARD, M_ACCURACY, M_MSE };
static const char *const metric_names[] = {"", "mean_reward", "accuracy", "mse"};

static int64_t metric_count(const struct acc *a, enum metric m)
{
    switch (m) {
    case M_REWARD: return a->reward.n;
    case M_ACCURACY: return a->n_cls;
    case M_MSE: return a->sqerr.n;
    default: return 0;
    }
}

static double metric_value(const struct acc *a, enum metric m)
{
    switch (m) {
    case M_REWARD: return a->reward.mean;
    case M_ACCURACY: return a->n_cls ? (double)a->correct / (double)a->n_cls : 0;
    case M_MSE: return a->sqerr.mean;
    default: return 0;
    }
}

/* The metric a set of outcomes shows by itself: rewards first, then labels. */
static enum metric metric_of(const struct acc *a)
{
    if (a->reward.n > 0)
        return M_REWARD;
    if (a->n_cls > 0)
        return M_ACCURACY;
    if (a->sqerr.n > 0)
        return M_MSE;
    return M_NONE;
}

static double clip_prob(double p)
{
    return p < LOGLOSS_CLIP ? LOGLOSS_CLIP : p > 1 - LOGLOSS_CLIP ? 1 - LOGLOSS_CLIP : p;
}

static void add_class(struct acc *a, double label, double predicted, bool has_prob, double logloss)
{
    a->n_cls++;
    a->correct += label == predicted;
    if (has_prob) {
        a->n_prob++;
        a->logloss_sum += logloss;
    }
}

/* multi:softprob: outputs[0] is the class probabilities; the predicted class is the
 * argmax, the log loss -ln p(label). A label that is not a class index is simply wrong. */
static void add_softprob(struct acc *a, const json_t *probs, double label)
{
    size_t k = json_array_size(probs), best = 0;
    double p_label = 0;

    if (k == 0)
        return;
    for (size_t i = 0; i < k; i++) {
        const json_t *e = json_array_get(probs, i);
        double p;

        if (!json_is_number(e))
            return;
        p = json_number_value(e);
        if (p > json_number_value(json_array_get(probs, best)))
            best = i;
        if (label == (double)i)
            p_label = p;
    }
    add_class(a, label, (double)best, true, -log(clip_prob(p_label)));
}

/* Adds one joined row. Rewards need no prediction; labels are scored by the objective:
 * binary:logistic p > 0.5 (logitraw: margin > 0, p its sigmoid; hinge: the 0/1 output),
 * multi:softmax the class itself, regression the squared error. With the version gone
 * ("" objective) an array is taken for softprob and a number for regression. */
static void add_outcome(struct acc *a, const struct infer_db_stats_outcome *o)
{
    const char *obj = o->objective ? o->objective : "";
    json_t *out0 = NULL;
    double x, y = o->label, p;

    a->outcomes++;
    if (o->has_reward && isfinite(o->reward))
        moments_add(&a->reward, o->reward);
    if (!o->has_label || !isfinite(y) || o->output0 == NULL)
        return;
    out0 = json_loads(o->output0, JSON_DECODE_ANY, NULL);
    if (json_is_array(out0)) {
        add_softprob(a, out0, y);
        goto out;
    }
    if (!json_is_number(out0))
        goto out;
    x = json_number_value(out0);
    if (!isfinite(x))
        goto out;
    if (strcmp(obj, "binary:logitraw") == 0) {
        p = 1 / (1 + exp(-x));
        add_class(a, y, x > 0, true, -(y * log(clip_prob(p)) + (1 - y) * log(clip_prob(1 - p))));
    } else if (strcmp(obj, "binary:hinge") == 0) {
        add_class(a, y, x > 0.5, false, 0);
    } else if (strncmp(obj, "binary:", 7) == 0) {
        add_class(a, y, x > 0.5, true, -(y * log(clip_prob(x)) + (1 - y) * log(clip_prob(1 - x))));
    } else if (strncmp(obj, "multi:", 6) == 0) {
        add_class(a, y, round(x), false, 0);
    } else {
        moments_add(&a->sqerr, (x - y) * (x - y));
    }
out:
    json_decref(out0);
}

struct group {
    Cairn__V1__VariantStats *vs; /* allocated from the report's allocator */
    struct acc acc;
};

struct variant {
    const char *name; /* borrowed from the first group's VariantStats */
    int64_t requests;
    struct acc acc;
};

struct report {
    ProtobufCAllocator *alloc;
    struct group *groups; /* ordered by (variant in byte order, version) */
    size_t ngroups, capgroups;
    int64_t orphans; /* outcomes without a group (cannot happen in one snapshot) */
};

static void *palloc(ProtobufCAllocator *alloc, size_t n)
{
    void *p = alloc->alloc(alloc->allocator_data, n ? n : 1);

    if (p == NULL)
        abort(); /* the arena aborts itself; any other allocator is held to the same rule */
    memset(p, 0, n ? n : 1);
    return p;
}

static char *pstrdup(ProtobufCAllocator *alloc, const char *s)
{
    size_t n = strlen(s) + 1;

    return memcpy(palloc(alloc, n), s, n);
}

static int on_group(void *arg, const struct infer_db_stats_group *g)
{
    struct report *r = arg;
    Cairn__V1__VariantStats *vs;

    if (r->ngroups == r->capgroups) {
        r->capgroups = r->capgroups ? 2 * r->capgroups : 16;
        r->groups = cn_realloc(r->groups, r->capgroups * sizeof *r->groups);
    }
    vs = palloc(r->alloc, sizeof *vs);
    cairn__v1__variant_stats__init(vs);
    vs->variant = pstrdup(r->alloc, g->variant);
    vs->version = g->version;
    vs->requests = g->requests;
    vs->errors = g->errors;
    vs->latency_p50_ms = g->p50_ms;
    vs->latency_p95_ms = g->p95_ms;
    vs->latency_p99_ms = g->p99_ms;
    r->groups[r->ngroups++] = (struct group){.vs = vs};
    return CN_OK;
}

static int cmp_group(const char *variant, int32_t version, const struct group *g)
{
    int c = strcmp(variant, g->vs->variant);

    if (c != 0)
        return c;
    return (version > g->vs->version) - (version < g->vs->version);
}

static int on_outcome(void *arg, const struct infer_db_stats_outcome *o)
{
    struct report *r = arg;
    size_t lo = 0, hi = r->ngroups;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_group(o->variant, o->version, &r->groups[mid]);

        if (c == 0) {
            add_outcome(&r->groups[mid].acc, o);
            return CN_OK;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    r->orphans++;
    return CN_OK;
}

static void fill_variant_stats(Cairn__V1__VariantStats *vs, const struct acc *a)
{
    enum metric m = metric_of(a);

    vs->outcomes = a->outcomes;
    vs->metric = (char *)metric_names[m];
    vs->metric_value = metric_value(a, m);
    vs->log_loss = a->n_prob > 0 ? a->logloss_sum / (double)a->n_prob : 0;
    vs->rewards = a->reward.n;
    vs->mean_reward = a->reward.n > 0 ? a->reward.mean : 0;
}

/* Tests variant against control on metric m into c (allocated). */
static int compare(const struct variant *control, const struct variant *v, enum metric m,
                   double alpha, Cairn__V1__Comparison *c)
{
    struct infer_test t;
    int rc;

    if (m == M_ACCURACY) {
        rc = infer_ztest(control->acc.correct, control->acc.n_cls, v->acc.correct, v->acc.n_cls,
                         alpha, &t);
        c->test = "two_proportion_z";
    } else {
        const struct moments *mc = m == M_REWARD ? &control->acc.reward : &control->acc.sqerr;
        const struct moments *mv = m == M_REWARD ? &v->acc.reward : &v->acc.sqerr;

        rc = infer_welch(mc->mean, moments_var(mc), mc->n, mv->mean, moments_var(mv), mv->n, alpha,
                         &t);
        c->test = "welch_t";
    }
    if (rc != CN_OK)
        return rc;
    c->variant = (char *)v->name;
    c->control = (char *)control->name;
    c->metric = (char *)metric_names[m];
    c->difference = t.difference;
    c->ci_low = t.ci_low;
    c->ci_high = t.ci_high;
    c->statistic = t.statistic;
    c->p_value = t.p_value;
    c->significant = t.p_value < alpha;
    c->higher_is_better = m != M_MSE;
    return CN_OK;
}

/* The comparisons and the winner, from the variants (groups merged by name). */
static void assemble_comparisons(struct report *r, struct variant *vars, size_t nvars,
                                 const char *control_variant, double alpha,
                                 Cairn__V1__ModelStats *out)
{
    static const enum metric order[] = {M_REWARD, M_ACCURACY, M_MSE};
    struct variant *control = NULL;
    enum metric m = M_NONE;
    const struct variant *best = NULL;
    size_t others = 0, worse = 0;

    for (size_t i = 0; i < nvars; i++) {
        if (strcmp(vars[i].name, MIRROR_VARIANT) == 0)
            continue;
        if (control_variant != NULL && control_variant[0] != '\0' &&
            strcmp(vars[i].name, control_variant) == 0) {
            control = &vars[i];
            break;
        }
        /* Without a named control (or when it is absent): the busiest, first on ties. */
        if (control == NULL || vars[i].requests > control->requests)
            control = &vars[i];
    }
    if (control == NULL)
        return;
    /* One metric for every comparison, so the winner is chosen on one scale. */
    for (size_t k = 0; k < CN_ARRAY_LEN(order) && m == M_NONE; k++) {
        if (metric_count(&control->acc, order[k]) < 2)
            continue;
        for (size_t i = 0; i < nvars; i++)
            if (&vars[i] != control && strcmp(vars[i].name, MIRROR_VARIANT) != 0 &&
                metric_count(&vars[i].acc, order[k]) >= 2)
                m = order[k];
    }

    out->comparisons = palloc(r->alloc, nvars * sizeof *out->comparisons);
    for (size_t i = 0; i < nvars; i++) {
        Cairn__V1__Comparison *c;
        bool better;

        if (&vars[i] == control || strcmp(vars[i].name, MIRROR_VARIANT) == 0)
            continue;
        others++;
        if (m == M_NONE || metric_count(&vars[i].acc, m) < 2)
            continue;
        c = palloc(r->alloc, sizeof *c);
        cairn__v1__comparison__init(c);
        if (compare(control, &vars[i], m, alpha, c) != CN_OK)
            continue;
        out->comparisons[out->n_comparisons++] = c;
        better = c->higher_is_better ? c->difference > 0 : c->difference < 0;
        if (c->significant && better) {
            double val = metric_value(&vars[i].acc, m);

            if (best == NULL || (c->higher_is_better ? val > metric_value(&best->acc, m)
                                                     : val < metric_value(&best->acc, m)))
                best = &vars[i];
        } else if (c->significant && c->difference != 0) {
            worse++;
        }
    }
    if (best != NULL)
        out->winner = (char *)best->name;
    else if (others > 0 && worse == others)
        out->winner = (char *)control->name;
}

/* Fills out from the rows r collected: VariantStats in (variant, version) order, then
 * the variants (groups merged by name), the comparisons and the winner. */
static void report_finish(struct report *r, const char *model, double alpha, int64_t since,
                          const char *control_variant, double log_sample_rate,
                          Cairn__V1__ModelStats *out)
{
    struct variant *vars = cn_calloc(r->ngroups ? r->ngroups : 1, sizeof *vars);
    size_t nvars = 0;

    out->model = pstrdup(r->alloc, model);
    out->alpha = alpha;
    out->since = since;
    out->log_sample_rate = log_sample_rate;
    out->variants = palloc(r->alloc, r->ngroups * sizeof *out->variants);
    out->n_variants = r->ngroups;
    for (size_t i = 0; i < r->ngroups; i++) {
        struct group *g = &r->groups[i];

        fill_variant_stats(g->vs, &g->acc);
        out->variants[i] = g->vs;
        /* Groups arrive ordered by variant: a new name starts a new variant. */
        if (nvars == 0 || strcmp(vars[nvars - 1].name, g->vs->variant) != 0)
            vars[nvars++].name = g->vs->variant;
        vars[nvars - 1].requests += g->vs->requests;
        acc_merge(&vars[nvars - 1].acc, &g->acc);
    }
    assemble_comparisons(r, vars, nvars, control_variant, alpha, out);
    free(vars);
}

int infer_stats_report(struct cn_pg *pg, const char *model, int64_t since_ms, double alpha,
                       const char *control_variant, double log_sample_rate,
                       ProtobufCAllocator *alloc, Cairn__V1__ModelStats *out, char *why,
                       size_t whylen)
{
    struct report r = {.alloc = alloc};
    struct infer_db_stats_sink sink = {.on_group = on_group, .on_outcome = on_outcome, .arg = &r};
    int64_t since_used = 0;
    bool truncated = false;
    int rc;

    cairn__v1__model_stats__init(out);
    if (alpha == 0)
        alpha = 0.05;
    if (!(alpha > 0 && alpha < 1)) {
        snprintf(why, whylen, "alpha must be between 0 and 1");
        rc = CN_EINVAL;
        goto out;
    }
    if (since_ms < 0) {
        snprintf(why, whylen, "since must be a unix time in milliseconds, or 0");
        rc = CN_EINVAL;
        goto out;
    }
    rc = infer_db_stats_read(pg, model, since_ms, &sink, &since_used, &truncated);
    switch (rc) {
    case CN_OK: break;
    case CN_ENOTFOUND: snprintf(why, whylen, "model %s not found", model); goto out;
    case CN_EUNAVAIL: snprintf(why, whylen, "database unavailable"); goto out;
    case CN_ETIMEDOUT:
        snprintf(why, whylen, "stats query ran past %d ms", INFER_STATS_TIMEOUT_MS);
        goto out;
    default: snprintf(why, whylen, "database error: %s", cn_pg_errmsg(pg)); goto out;
    }
    if (truncated)
        cn_log_warn(
            "INFER-STATS-TRUNCATED",
            "model %s: the report covers at most %d (variant, version) rows and %d outcomes", model,
            INFER_STATS_MAX_GROUPS, INFER_STATS_MAX_OUTCOMES);
    report_finish(&r, model, alpha, since_used, control_variant, log_sample_rate, out);
out:
    free(r.groups);
    return rc;
}
