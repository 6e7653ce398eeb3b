/* metrics.h — Prometheus counters, gauges and histograms, rendered as text format 0.0.4.
 *
 * A metric is a family (name, help, label names); each distinct set of label values is a
 * series, created on first use and never freed, so hot paths look a series up once and
 * keep the pointer. Updates are lock-free atomics; only series creation and rendering
 * take the registry lock. All metrics live in one process-wide registry that the admin
 * port's /metrics renders.
 *
 *   static struct cn_metric *calls;
 *   calls = cn_metric_new(CN_METRIC_COUNTER, "cairn_rpc_calls_total", "RPCs handled",
 *                         "method,code", NULL, 0);
 *   cn_series_add(cn_metric_series(calls, (const char *[]){"Login", "OK"}), 1);
 */
#ifndef CN_METRICS_H
#define CN_METRICS_H

#include <stddef.h>

struct cn_buf;
struct cn_metric;
struct cn_series;

enum cn_metric_type { CN_METRIC_COUNTER, CN_METRIC_GAUGE, CN_METRIC_HISTOGRAM };

/* Latency buckets in seconds, 100 us .. 10 s. */
extern const double cn_metric_latency_buckets[];
extern const size_t cn_metric_latency_nbuckets;

/* Registers a family. labels is a comma-separated list of label names or NULL/"" for
 * none; buckets (ascending upper bounds, +Inf implied) only for histograms, NULL = latency
 * buckets. Registering the same name twice returns the first family. Never fails. */
struct cn_metric *cn_metric_new(enum cn_metric_type type, const char *name, const char *help,
                                const char *labels, const double *buckets, size_t nbuckets);
/* Returns the series for these label values (as many as the family has label names;
 * NULL for none), creating it on first use. The pointer is valid for the process. */
struct cn_series *cn_metric_series(struct cn_metric *m, const char *const *values);

void cn_series_add(struct cn_series *s, double v);      /* counter or gauge */
void cn_series_set(struct cn_series *s, double v);      /* gauge */
void cn_series_observe(struct cn_series *s, double v);  /* histogram */
double cn_series_value(const struct cn_series *s);      /* counter/gauge value, histogram count */

/* Appends every registered family in Prometheus text format. */
void cn_metrics_render(struct cn_buf *out);

#endif
