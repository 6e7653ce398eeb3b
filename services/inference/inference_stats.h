/* inference_stats.h — the statistics of experiments: significance tests, quantiles, the
 * stats report (GetStats) and the feedback it joins.
 * (Part of cairn-inference; see inference.h for the map of files.)
 *
 * inference_stats.c has the math and assembles the report; inference_db_stats.c has all
 * SQL of feedback and of the report (the infer_db_stats_* names below are its seam).
 */
#ifndef INFERENCE_STATS_H
#define INFERENCE_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "cairn/v1/inference.pb-c.h"

struct cn_pg;

/* ------------------------------------------------------------------ tests */

struct infer_test {
    double difference, ci_low, ci_high, statistic, p_value;
    double df; /* Welch–Satterthwaite degrees of freedom; INFINITY for z */
};
/* Two-proportion z-test of variant (s2 of n2) against control (s1 of n1), pooled
 * standard error for the statistic, unpooled for the (1 - alpha) interval of p2 - p1;
 * p-value two-sided. When the pooled standard error is 0 (both proportions 0 or both 1)
 * the statistic is 0 and p is 1. Returns CN_EINVAL when either n is 0 (or negative),
 * s is outside [0, n], or alpha is outside (0, 1). */
int infer_ztest(int64_t s1, int64_t n1, int64_t s2, int64_t n2, double alpha,
                struct infer_test *out);
/* Welch's t-test of variant (mean m2, sample variance v2, n2) against control; p-value
 * two-sided from Student's t with Welch–Satterthwaite degrees of freedom (not rounded),
 * interval of m2 - m1 from the t quantile at those df. With both variances 0 the
 * statistic is 0 and p 1 for equal means, +-INFINITY and p 0 otherwise. Returns
 * CN_EINVAL when either n is below 2 (a sample variance needs two values), a variance
 * is negative, an input is not finite, or alpha is outside (0, 1). */
int infer_welch(double m1, double v1, int64_t n1, double m2, double v2, int64_t n2, double alpha,
                struct infer_test *out);
/* The q-quantile (0..1) of v[0..n) with linear interpolation (PostgreSQL's
 * percentile_cont, numpy's default); sorts v. NAN when n is 0 or q is outside [0, 1]. */
double infer_quantile(double *v, size_t n, double q);

/* Distribution functions behind the tests (exported for the tests and the bench).
 * infer_norm_cdf: standard normal P(Z <= x). infer_t_cdf: Student's t P(T <= t) for any
 * df > 0, not only integers (NAN for df <= 0). infer_norm_quantile / infer_t_quantile:
 * the inverses, p in (0, 1) (NAN outside). */
double infer_norm_cdf(double x);
double infer_t_cdf(double t, double df);
double infer_norm_quantile(double p);
double infer_t_quantile(double p, double df);

/* ------------------------------------------------------------------ feedback and report */

/* Stores an outcome for (model, request_id): label and/or reward, NULL = absent. The
 * latest feedback for a request is the one the report uses. Returns 0; CN_EINVAL when
 * both are absent, a value is not finite or request_id is empty or longer than 128
 * bytes; CN_ENOTFOUND when the model does not exist; CN_EUNAVAIL / CN_EDB from lib/pg.
 * Feedback is accepted before the prediction reaches the (asynchronous, sampled) log. */
int infer_feedback_store(struct cn_pg *pg, const char *model, const char *request_id,
                         const double *label, const double *reward);

/* Fills out with the experiment report of model from the prediction log since since_ms
 * (unix ms; 0 = since the model's experiment started, or all time without one; out->since
 * is the time used): per (variant, version) requests, errors, latency percentiles of the
 * answered calls and the outcome metric; each variant against the control (control_variant
 * if given and present, else the variant with the most requests; "mirror" is never
 * compared); the winner. alpha 0 means 0.05. log_sample_rate is echoed. Messages and
 * strings come from alloc (an arena: nothing is freed on error). At most
 * INFER_STATS_MAX_OUTCOMES joined outcomes and INFER_STATS_MAX_GROUPS (variant, version)
 * rows are read (beyond that the report covers a subset and INFER-STATS-TRUNCATED is
 * logged). Returns 0; CN_EINVAL (bad alpha or since), CN_ENOTFOUND (no such model),
 * CN_EUNAVAIL (database down), CN_ETIMEDOUT (the queries ran out of time), CN_EDB —
 * each with a message in why. */
int infer_stats_report(struct cn_pg *pg, const char *model, int64_t since_ms, double alpha,
                       const char *control_variant, double log_sample_rate,
                       ProtobufCAllocator *alloc, Cairn__V1__ModelStats *out, char *why,
                       size_t whylen);

/* Caps of the report (a unit test may define smaller ones before including the .c). */
#ifndef INFER_STATS_MAX_OUTCOMES
#define INFER_STATS_MAX_OUTCOMES 1000000
#endif
#ifndef INFER_STATS_MAX_GROUPS
#define INFER_STATS_MAX_GROUPS 1000
#endif
#ifndef INFER_STATS_TIMEOUT_MS
#define INFER_STATS_TIMEOUT_MS 30000 /* statement_timeout of the report's queries */
#endif

/* ------------------------------------------------------------------ SQL seam (inference_db_stats.c) */

/* One (variant, version) row of the prediction log summary. Strings are borrowed for
 * the callback. Latencies are of status 'ok' rows, 0 when there are none. */
struct infer_db_stats_group {
    const char *variant;
    int32_t version;
    int64_t requests, errors;
    double p50_ms, p95_ms, p99_ms;
};
/* One answered prediction joined to the latest feedback of its request_id. objective is
 * the version's ("" when the version is gone); output0 the JSON text of outputs[0] (NULL
 * when absent). Strings are borrowed for the callback. */
struct infer_db_stats_outcome {
    const char *variant;
    int32_t version;
    const char *objective;
    const char *output0;
    bool has_label, has_reward;
    double label, reward;
};
/* Where infer_db_stats_read delivers rows: every group (ordered by variant in byte
 * order, then version) before any outcome (unordered). A callback returning non-zero
 * stops the read, which returns that value. */
struct infer_db_stats_sink {
    int (*on_group)(void *arg, const struct infer_db_stats_group *g);
    int (*on_outcome)(void *arg, const struct infer_db_stats_outcome *o);
    void *arg;
};
/* Reads the summary and the joined outcomes of model since since_ms (0 = experiment
 * start, else all time; *since_used says which) in one read-only snapshot, streaming
 * outcomes through a cursor so memory stays flat. *truncated is set when a cap was hit.
 * Returns 0, CN_ENOTFOUND (no such model), CN_EUNAVAIL, CN_ETIMEDOUT, CN_EDB, or a
 * callback's code; on failure rows already delivered are partial. */
int infer_db_stats_read(struct cn_pg *pg, const char *model, int64_t since_ms,
                        const struct infer_db_stats_sink *sink, int64_t *since_used,
                        bool *truncated);

#endif
