/* metrics.c — the process-wide Prometheus registry (see metrics.h).
 *
 * Families live in a list in registration order; each family keeps its series in creation
 * order plus a small chained hash over the label values, so a lookup of an existing
 * series costs one hash and a compare. One mutex guards the lists (registration, series
 * creation, lookup, rendering); the values themselves are atomics updated without it.
 * C11 has no atomic add for double, so a value is the bit pattern of a double in an
 * _Atomic uint64_t, changed with a compare-and-swap loop. A histogram series counts each
 * observation once, in the first bucket whose bound holds it; rendering makes the counts
 * cumulative and derives _count from the same counts so the exposition is consistent
 * even while observations land. Nothing is ever freed: series pointers stay valid for the
 * life of the process. To add a metric type: add it to enum cn_metric_type, name it in
 * type_name, and give it a case in render_series.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "util.h"

#define HASH_SIZE 64 /* per family; series counts are bounded by label cardinality */

struct cn_series {
    struct cn_series *next;  /* creation order */
    struct cn_series *hnext; /* hash chain */
    const struct cn_metric *family;
    char **values;             /* one per label name */
    _Atomic uint64_t value;    /* counter/gauge: bits of a double */
    _Atomic uint64_t sum;      /* histogram: bits of a double */
    _Atomic uint64_t count;    /* histogram: observations */
    _Atomic uint64_t *buckets; /* histogram: nbuckets + 1 (the last is +Inf) */
};

struct cn_metric {
    struct cn_metric *next;
    enum cn_metric_type type;
    char *name;
    char *help;
    char **labels;
    size_t nlabels;
    double *bounds; /* histogram upper bounds, ascending */
    size_t nbounds;
    struct cn_series *series, **series_tail;
    struct cn_series *hash[HASH_SIZE];
};

const double cn_metric_latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                            1,      2.5,     5,      10};
const size_t cn_metric_latency_nbuckets = CN_ARRAY_LEN(cn_metric_latency_buckets);

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cn_metric *families;
static struct cn_metric **families_tail = &families;

static uint64_t to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Misuse of the API (a bad name, the same name with another shape) is a bug in the
 * program, found on its first start: say what it is and stop, rather than serve an
 * exposition Prometheus would reject as a whole. */
static void misuse(const char *name, const char *why)
{
    cn_log_error("METRIC-MISUSE", "metric %s: %s", name, why);
    abort();
}

static int valid_name(const char *s, int colon_ok)
{
    if (*s == '\0' || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++) {
        int ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                 *s == '_' || (colon_ok && *s == ':');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Splits "a, b,c" into a new array of names; *n gets the count. */
static char **split_labels(const char *metric, const char *labels, size_t *n)
{
    *n = 0;
    if (labels == NULL || *labels == '\0')
        return NULL;
    size_t cap = 1;
    for (const char *p = labels; *p; p++)
        cap += *p == ',';
    char **out = cn_calloc(cap, sizeof *out);
    const char *p = labels;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        out[*n] = cn_strndup(p, len);
        if (!valid_name(out[*n], 0) || strncmp(out[*n], "__", 2) == 0)
            misuse(metric, "invalid label name");
        for (size_t i = 0; i < *n; i++)
            if (strcmp(out[i], out[*n]) == 0)
                misuse(metric, "duplicate label name");
        (*n)++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return out;
}

static int same_shape(const struct cn_metric *m, enum cn_metric_type type, char **labels,
                      size_t nlabels, const double *bounds, size_t nbounds)
{
    if (m->type != type || m->nlabels != nlabels)
        return 0;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(m->labels[i], labels[i]) != 0)
            return 0;
    if (type == CN_METRIC_HISTOGRAM) {
        if (m->nbounds != nbounds)
            return 0;
        for (size_t i = 0; i < nbounds; i++)
            if (m->bounds[i] != bounds[i])
                return 0;
    }
    return 1;
}

static void free_labels(char **labels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

static unsigned hash_values(const struct cn_metric *m, const char *const *values);
static struct cn_series *series_new_locked(struct cn_metric *m, const char *const *values,
                                           unsigned h);

struct cn_metric *cn_metric_new(enum cn_metric_type type, const char *name, const char *help,
                                const char *labels, const double *buckets, size_t nbuckets)
{
    if (!valid_name(name, 1))
        misuse(name, "invalid metric name");
    size_t nlabels;
    char **names = split_labels(name, labels, &nlabels);
    if (type == CN_METRIC_HISTOGRAM) {
        if (buckets == NULL) {
            buckets = cn_metric_latency_buckets;
            nbuckets = cn_metric_latency_nbuckets;
        }
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                misuse(name, "bucket bounds must be finite and ascending");
        for (size_t i = 0; i < nlabels; i++)
            if (strcmp(names[i], "le") == 0)
                misuse(name, "a histogram cannot have a label named le");
    } else {
        nbuckets = 0;
    }

    pthread_mutex_lock(&registry_lock);
    struct cn_metric *m;
    for (m = families; m; m = m->next) {
        if (strcmp(m->name, name) == 0)
            break;
    }
    if (m != NULL) {
        if (!same_shape(m, type, names, nlabels, buckets, nbuckets))
            misuse(name, "registered twice with a different type, labels or buckets");
        free_labels(names, nlabels);
    } else {
        m = cn_calloc(1, sizeof *m);
        m->type = type;
        m->name = cn_strdup(name);
        m->help = cn_strdup(help ? help : "");
        m->labels = names;
        m->nlabels = nlabels;
        if (nbuckets > 0) {
            m->bounds = cn_calloc(nbuckets, sizeof *m->bounds);
            memcpy(m->bounds, buckets, nbuckets * sizeof *m->bounds);
        }
        m->nbounds = nbuckets;
        m->series_tail = &m->series;
        /* A family without labels has exactly one series: make it now so it renders
         * (as 0) before the first event. */
        if (nlabels == 0)
            series_new_locked(m, NULL, hash_values(m, NULL));
        *families_tail = m;
        families_tail = &m->next;
    }
    pthread_mutex_unlock(&registry_lock);
    return m;
}

static const char *value_at(const char *const *values, size_t i)
{
    return values && values[i] ? values[i] : "";
}

/* FNV-1a over the label values, each followed by a 0 byte so ("ab","") != ("a","b"). */
static unsigned hash_values(const struct cn_metric *m, const char *const *values)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < m->nlabels; i++) {
        for (const unsigned char *p = (const unsigned char *)value_at(values, i); *p; p++)
            h = (h ^ *p) * 16777619u;
        h *= 16777619u;
    }
    return h % HASH_SIZE;
}

static struct cn_series *series_new_locked(struct cn_metric *m, const char *const *values,
                                           unsigned h)
{
    struct cn_series *s = cn_calloc(1, sizeof *s);
    s->family = m;
    if (m->nlabels > 0) {
        s->values = cn_calloc(m->nlabels, sizeof *s->values);
        for (size_t i = 0; i < m->nlabels; i++)
            s->values[i] = cn_strdup(value_at(values, i));
    }
    if (m->type == CN_METRIC_HISTOGRAM)
        s->buckets = cn_calloc(m->nbounds + 1, sizeof *s->buckets);
    s->hnext = m->hash[h];
    m->hash[h] = s;
    *m->series_tail = s;
    m->series_tail = &s->next;
    return s;
}

struct cn_series *cn_metric_series(struct cn_metric *m, const char *const *values)
{
    unsigned h = hash_values(m, values);
    pthread_mutex_lock(&registry_lock);
    struct cn_series *s;
    for (s = m->hash[h]; s; s = s->hnext) {
        size_t i = 0;
        while (i < m->nlabels && strcmp(s->values[i], value_at(values, i)) == 0)
            i++;
        if (i == m->nlabels)
            break;
    }
    if (s == NULL)
        s = series_new_locked(m, values, h);
    pthread_mutex_unlock(&registry_lock);
    return s;
}

void cn_series_add(struct cn_series *s, double v) { atomic_add_double(&s->value, v); }

void cn_series_set(struct cn_series *s, double v)
{
    atomic_store_explicit(&s->value, to_bits(v), memory_order_relaxed);
}

void cn_series_observe(struct cn_series *s, double v)
{
    const struct cn_metric *m = s->family;
    if (m->type != CN_METRIC_HISTOGRAM)
        return;
    /* Linear: there are a handful of buckets and small values are the common case. A NaN
     * matches no bound and lands in +Inf. */
    size_t i = 0;
    while (i < m->nbounds && !(v <= m->bounds[i]))
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&s->sum, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

double cn_series_value(const struct cn_series *s)
{
    if (s->family->type == CN_METRIC_HISTOGRAM)
        return (double)atomic_load_explicit(&s->count, memory_order_relaxed);
    return from_bits(atomic_load_explicit(&s->value, memory_order_relaxed));
}

/* Appends v the way Prometheus writes numbers: the shortest text that reads back as the
 * same double, and +Inf/-Inf/NaN spelled as the format wants. */
static void put_number(struct cn_buf *b, double v)
{
    if (isnan(v)) {
        cn_buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        cn_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char text[32];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    cn_buf_puts(b, text);
}

/* Label values escape backslash, quote and newline; HELP text only backslash and
 * newline (text format 0.0.4). */
static void put_escaped(struct cn_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            cn_buf_puts(b, "\\\\");
        else if (*s == '\n')
            cn_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            cn_buf_puts(b, "\\\"");
        else
            cn_buf_putc(b, *s);
    }
}

/* Appends name{labels} (with an extra le="..." when le_set), or just name when there are
 * no labels at all. */
static void put_sample_name(struct cn_buf *b, const struct cn_series *s, const char *suffix,
                            int le_set, double le)
{
    const struct cn_metric *m = s->family;
    cn_buf_puts(b, m->name);
    cn_buf_puts(b, suffix);
    if (m->nlabels == 0 && !le_set)
        return;
    cn_buf_putc(b, '{');
    for (size_t i = 0; i < m->nlabels; i++) {
        cn_buf_printf(b, "%s%s=\"", i ? "," : "", m->labels[i]);
        put_escaped(b, s->values[i], 1);
        cn_buf_putc(b, '"');
    }
    if (le_set) {
        cn_buf_puts(b, m->nlabels ? ",le=\"" : "le=\"");
        put_number(b, le);
        cn_buf_putc(b, '"');
    }
    cn_buf_putc(b, '}');
}

static void render_series(struct cn_buf *b, const struct cn_series *s)
{
    const struct cn_metric *m = s->family;
    if (m->type != CN_METRIC_HISTOGRAM) {
        put_sample_name(b, s, "", 0, 0);
        cn_buf_putc(b, ' ');
        put_number(b, from_bits(atomic_load_explicit(&s->value, memory_order_relaxed)));
        cn_buf_putc(b, '\n');
        return;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= m->nbounds; i++) {
        cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        put_sample_name(b, s, "_bucket", 1, i < m->nbounds ? m->bounds[i] : INFINITY);
        cn_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
    }
    put_sample_name(b, s, "_sum", 0, 0);
    cn_buf_putc(b, ' ');
    put_number(b, from_bits(atomic_load_explicit(&s->sum, memory_order_relaxed)));
    cn_buf_putc(b, '\n');
    put_sample_name(b, s, "_count", 0, 0);
    cn_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
}

static const char *type_name(enum cn_metric_type t)
{
    switch (t) {
    case CN_METRIC_COUNTER: return "counter";
    case CN_METRIC_GAUGE: return "gauge";
    case CN_METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

/* Called with registry_lock held. */
static void render_family(struct cn_buf *b, const struct cn_metric *m)
{
    cn_buf_printf(b, "# HELP %s ", m->name);
    put_escaped(b, m->help, 0);
    cn_buf_printf(b, "\n# TYPE %s %s\n", m->name, type_name(m->type));
    for (const struct cn_series *s = m->series; s; s = s->next)
        render_series(b, s);
}

void cn_metrics_render(struct cn_buf *out)
{
    pthread_mutex_lock(&registry_lock);
    for (const struct cn_metric *m = families; m; m = m->next)
        render_family(out, m);
    pthread_mutex_unlock(&registry_lock);
}
