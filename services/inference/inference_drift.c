/* inference_drift.c — input drift: reference bins per feature and PSI, live histograms
 * counted on the predict path, flushed per minute to inference.drift_counts, the drift
 * report (GetDrift) and the cairn_inference_drift_psi gauges.
 *
 * API (inference_drift.h): infer_bins_* and infer_psi for the reference given at upload
 * and for the report; infer_drift_observe on the predict path; infer_drift_start/stop for
 * the flusher thread; infer_drift_report for GetDrift.
 *
 * PSI as Evidently computes it (evidently/calculations/stattests/psi.py and
 * get_binned_data in stattests/utils.py), and where streaming forces a difference:
 *   - A numeric feature (more than 20 distinct reference values) gets equal-width bins,
 *     numpy's "sturges" rule: width = range / (log2(n) + 1), ceil(range / width) bins,
 *     edges = linspace(min, max). Evidently takes min, max and n over reference and
 *     current data together; live data is counted as it arrives, so the bins here are
 *     fixed from the reference alone and the outer two are open-ended (a live value
 *     below the reference minimum counts in the first bin, above the maximum in the
 *     last). Bins are [edge_i, edge_i+1), the last closed, as np.histogram.
 *   - Other features get one bin per reference value. Evidently gives every value seen
 *     in either sample its own bin; values the reference never had are unknown when
 *     the reference is built, so they share one last bin here. With at most one such
 *     value live the result is the same; with several, their (cur - eps) * ln(cur / eps)
 *     terms are one term of their sum. A bin empty on both sides is skipped, since
 *     Evidently has no bin for a value neither sample holds.
 *   - Shares are counts over the non-missing values of the sample (Evidently drops NaN
 *     and infinities before the test). An empty share becomes 0.0001, or a millionth of
 *     the side's smallest non-empty share when that is at most 0.0001 (Evidently's
 *     feel_zeroes), for each side separately. PSI = sum (cur - ref) * ln(cur / ref).
 *   - Thresholds: 0.1 moderate, 0.25 significant (Evidently's default drift threshold
 *     for PSI is 0.1; 0.25 is the customary "significant shift").
 *
 * Live counts. Each (model, version) seen by infer_drift_observe gets a track: a copy of
 * its bins and one atomic counter per bin, found through a small hash map under a
 * reader-writer lock. Observers take the lock shared and add with relaxed atomics; only
 * creating or retiring a track takes it exclusively (rare), and the lock prefers writers
 * so a steady stream of observers cannot starve that. The flusher thread drains the
 * counters with atomic exchanges (nothing is lost or counted twice) into two
 * flusher-only places: `pending`, added to drift_counts for the current minute (one
 * upsert per track, element-wise onto what other replicas wrote; kept and retried while
 * the database is down), and a ring of time slots covering the gauge window (at most
 * 16 slots, each at least one flush long), from which the gauges are computed. A track
 * with nothing observed for longer than the window is dropped; one whose version's bins
 * changed is retired and replaced. Tracks leave the map only under the exclusive lock,
 * so no observer can hold one when the flusher frees it.
 *
 * Rows: drift_counts has a pseudo-feature -1 per (model, version, minute) whose one
 * count is the number of rows observed; the report's rows come from it.
 *
 * To add a drift statistic: compute it beside infer_psi from the same counts, add a
 * field to FeatureDrift (proto) and fill it in infer_drift_report.
 */
#include "inference_drift.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "inference_log.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "util.h"

#define CAT_MAX_DISTINCT 20 /* Evidently: numeric binning needs more distinct values */
#define JSON_MAX_BINS 1024  /* Sturges gives < 70 bins for any count; categories <= 21 */
#define JSON_MAX_FEATURES 65536
#define EMPTY_SHARE 0.0001 /* Evidently's replacement for an empty bin */
#define PSI_MODERATE 0.1
#define PSI_SIGNIFICANT 0.25
#define MAP_BUCKETS 256 /* a power of two */
#define MAX_TRACKS 1024
#define RING_MAX 16
#define DEFAULT_WINDOW_S 3600
#define MAX_WINDOW_S (366 * 86400)

/* ------------------------------------------------------------------ bins and PSI */

void infer_bins_free(struct infer_bins *b)
{
    if (b == NULL)
        return;
    free(b->edges);
    free(b->ref_share);
    memset(b, 0, sizeof *b);
}

void infer_bins_array_free(struct infer_bins *bins, size_t n)
{
    if (bins == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        infer_bins_free(&bins[i]);
    free(bins);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The index of the first element of v[0..n) greater than x (n when none). */
static size_t upper_bound(const double *v, size_t n, double x)
{
    /* Up to 64 edges (every numeric binning and category list built here), count the
     * edges <= x without branches: on live values the binary search's branches were
     * mispredicted about every other step, 20 ns a value. */
    if (n <= 64) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
            c += v[i] <= x;
        return c;
    }
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t infer_bins_index(const struct infer_bins *b, double v)
{
    size_t i;

    if (!isfinite(v) || b->nbins == 0)
        return SIZE_MAX;
    i = upper_bound(b->edges, b->nbins - 1, v);
    if (!b->categorical)
        return i; /* bin i is [edges[i-1], edges[i]), open at both ends */
    /* Categories: edges[i-1] is the last value <= v; equal means v is a known one. */
    if (i > 0 && b->edges[i - 1] == v)
        return i - 1;
    return b->nbins - 1;
}

int infer_bins_build(const float *col, size_t n, size_t stride, struct infer_bins *out)
{
    double *vals = NULL;
    int64_t *counts = NULL;
    size_t k = 0, distinct = 0;

    memset(out, 0, sizeof *out);
    if (n > 0 && (col == NULL || stride == 0))
        return CN_EINVAL;
    vals = cn_malloc((n ? n : 1) * sizeof *vals);
    for (size_t i = 0; i < n; i++) {
        double v = col[i * stride];
        if (isfinite(v))
            vals[k++] = v;
    }
    qsort(vals, k, sizeof *vals, cmp_double);
    for (size_t i = 0; i < k; i++)
        if (i == 0 || vals[i] != vals[i - 1])
            distinct++;

    if (distinct > CAT_MAX_DISTINCT) {
        /* numpy's histogram_bin_edges(bins="sturges"), computed the way numpy does so
         * the edges agree to the last bit. */
        double lo = vals[0], hi = vals[k - 1], ptp = hi - lo;
        double width = ptp / (log2((double)k) + 1.0);
        size_t nb = (size_t)ceil(ptp / width);
        double step = ptp / (double)nb;

        out->categorical = false;
        out->nbins = nb;
        out->edges = cn_malloc((nb - 1 ? nb - 1 : 1) * sizeof *out->edges);
        for (size_t i = 1; i < nb; i++)
            out->edges[i - 1] = (double)i * step + lo;
    } else {
        out->categorical = true;
        out->nbins = distinct + 1;
        out->edges = cn_malloc((distinct ? distinct : 1) * sizeof *out->edges);
        distinct = 0;
        for (size_t i = 0; i < k; i++)
            if (i == 0 || vals[i] != vals[i - 1])
                out->edges[distinct++] = vals[i];
    }

    counts = cn_calloc(out->nbins, sizeof *counts);
    for (size_t i = 0; i < k; i++)
        counts[infer_bins_index(out, vals[i])]++;
    out->ref_share = cn_malloc(out->nbins * sizeof *out->ref_share);
    for (size_t i = 0; i < out->nbins; i++)
        out->ref_share[i] = k ? (double)counts[i] / (double)k : 0.0;
    out->ref_count = (int64_t)k;
    free(counts);
    free(vals);
    return CN_OK;
}

/* Evidently's replacement for the empty shares of one side: 0.0001, or a millionth of
 * the smallest non-empty share when that is at most 0.0001. */
static double empty_share(const double *share, size_t n)
{
    double min = INFINITY;

    for (size_t i = 0; i < n; i++)
        if (share[i] > 0 && share[i] < min)
            min = share[i];
    return min <= EMPTY_SHARE ? min / 1e6 : EMPTY_SHARE;
}

double infer_psi(const struct infer_bins *b, const int64_t *cur_counts, double *cur_share)
{
    double *cur = cur_share ? cur_share : cn_malloc(b->nbins * sizeof *cur);
    double eps_ref, eps_cur, psi = 0;
    int64_t total = 0;

    for (size_t i = 0; i < b->nbins; i++)
        total += cur_counts[i];
    for (size_t i = 0; i < b->nbins; i++)
        cur[i] = total > 0 ? (double)cur_counts[i] / (double)total : 0.0;
    if (total == 0 || b->ref_count == 0)
        goto out;
    eps_ref = empty_share(b->ref_share, b->nbins);
    eps_cur = empty_share(cur, b->nbins);
    for (size_t i = 0; i < b->nbins; i++) {
        double r = b->ref_share[i], c = cur[i];

        if (b->categorical && r == 0 && c == 0)
            continue;
        r = r > 0 ? r : eps_ref;
        c = c > 0 ? c : eps_cur;
        psi += (c - r) * log(c / r);
    }
out:
    if (cur != cur_share)
        free(cur);
    return psi;
}

const char *infer_psi_status(double psi)
{
    if (psi >= PSI_SIGNIFICANT)
        return "significant";
    if (psi >= PSI_MODERATE)
        return "moderate";
    return "none"; /* NaN too */
}

/* Rank of a status, for "the worst". */
static int status_rank(double psi)
{
    return psi >= PSI_SIGNIFICANT ? 2 : psi >= PSI_MODERATE ? 1 : 0;
}

static json_t *double_array(const double *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

json_t *infer_bins_to_json(const struct infer_bins *bins, size_t nfeatures)
{
    json_t *features = json_array();

    for (size_t f = 0; f < nfeatures; f++) {
        const struct infer_bins *b = &bins[f];
        json_array_append_new(features, json_pack("{s:s, s:o, s:o, s:I}", "kind",
                                                  b->categorical ? "categorical" : "numeric",
                                                  "edges", double_array(b->edges, b->nbins - 1),
                                                  "ref_share", double_array(b->ref_share, b->nbins),
                                                  "ref_count", (json_int_t)b->ref_count));
    }
    return json_pack("{s:i, s:o}", "format", 1, "features", features);
}

/* Reads n finite numbers of array a into out (n slots). Returns false on anything else. */
static bool read_numbers(const json_t *a, double *out, size_t n)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return false;
        out[i] = json_number_value(v);
    }
    return true;
}

/* One feature's bins from its JSON object; false when anything is off. */
static bool bins_from_json(const json_t *o, struct infer_bins *b)
{
    const json_t *kind = json_object_get(o, "kind");
    const json_t *edges = json_object_get(o, "edges");
    const json_t *share = json_object_get(o, "ref_share");
    const json_t *count = json_object_get(o, "ref_count");
    size_t nb;

    if (!json_is_object(o) || !json_is_string(kind) || !json_is_array(share) ||
        !json_is_integer(count) || json_integer_value(count) < 0)
        return false;
    if (strcmp(json_string_value(kind), "categorical") == 0)
        b->categorical = true;
    else if (strcmp(json_string_value(kind), "numeric") != 0)
        return false;
    nb = json_array_size(share);
    if (nb < 1 || nb > JSON_MAX_BINS)
        return false;
    b->nbins = nb;
    b->ref_count = json_integer_value(count);
    b->edges = cn_malloc((nb - 1 ? nb - 1 : 1) * sizeof *b->edges);
    b->ref_share = cn_malloc(nb * sizeof *b->ref_share);
    if (!read_numbers(edges, b->edges, nb - 1) || !read_numbers(share, b->ref_share, nb))
        return false;
    /* infer_bins_index counts or binary-searches the edges: they must ascend strictly. */
    for (size_t i = 1; i + 1 < nb; i++)
        if (!(b->edges[i - 1] < b->edges[i]))
            return false;
    for (size_t i = 0; i < nb; i++)
        if (b->ref_share[i] < 0 || b->ref_share[i] > 1)
            return false;
    return true;
}

int infer_bins_from_json(const json_t *j, struct infer_bins **bins, size_t *nfeatures)
{
    const json_t *features = json_object_get(j, "features");
    const json_t *format = json_object_get(j, "format");
    struct infer_bins *out = NULL;
    size_t n = 0;

    *bins = NULL;
    *nfeatures = 0;
    if (!json_is_object(j) || !json_is_integer(format) || json_integer_value(format) != 1 ||
        !json_is_array(features) || json_array_size(features) > JSON_MAX_FEATURES)
        return CN_EINVAL;
    n = json_array_size(features);
    out = cn_calloc(n ? n : 1, sizeof *out);
    for (size_t f = 0; f < n; f++) {
        if (!bins_from_json(json_array_get(features, f), &out[f])) {
            infer_bins_array_free(out, f + 1);
            return CN_EINVAL;
        }
    }
    *bins = out;
    *nfeatures = n;
    return CN_OK;
}

/* ------------------------------------------------------------------ live counts */

struct track {
    struct track *next; /* hash chain, the retired list, the dead list */
    char *model;
    int version;
    char version_str[16];
    size_t nfeatures;
    struct infer_bins *bins; /* a copy */
    char **names;            /* gauge labels */
    size_t *off;             /* feature f's counters are [off[f], off[f+1]) */
    size_t total;            /* counters in all */
    _Atomic int64_t *live;   /* observers add here */
    _Atomic int64_t live_rows;
    _Atomic(const struct infer_bins *) hint; /* caller's bins last found to match */
    /* Flusher-only from here. */
    int64_t *pending; /* drained, not yet in the database */
    int64_t pending_rows;
    int64_t *ring; /* nslots x total */
    int64_t *ring_rows;
    int64_t *slot_epoch; /* the time slot each ring slot holds; -1 unused */
    int nslots;
    bool evict;               /* unlink at the next flush */
    struct cn_series **gauge; /* nfeatures, made on first use */
};

static struct {
    pthread_rwlock_t lock; /* map and ntracks; shared for observers */
    struct track *map[MAP_BUCKETS];
    size_t ntracks;
    struct track *retired; /* out of the map, waiting for the flusher */
} tr = {.lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stopping;
    pthread_t thread;
    char *dsn;
    int flush_s, window_s;
    int64_t slot_s; /* ring slot length */
    int nslots;
    /* Flusher-only. */
    struct track *dead; /* unlinked, flushed until their pending is written */
    bool db_down;
} fl = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The database seam, for tests (which include this file). */
static int (*drift_add)(struct cn_pg *, const char *, int, int64_t, size_t, const int *,
                        const int64_t *const *, const size_t *) = infer_db_drift_add;

static struct {
    struct cn_metric *psi;
    struct cn_series *untracked, *errors;
} dm;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct cn_metric *f;

    dm.psi = cn_metric_new(CN_METRIC_GAUGE, "cairn_inference_drift_psi",
                           "PSI of a feature's live inputs on this replica over the drift "
                           "window, against the version's reference",
                           "model,version,feature", NULL, 0);
    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_drift_untracked_rows_total",
                      "Rows not counted for drift: too many model versions at once", NULL, NULL, 0);
    dm.untracked = cn_metric_series(f, NULL);
    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_drift_flush_errors_total",
                      "Drift-count upserts that failed (retried at the next flush)", NULL, NULL, 0);
    dm.errors = cn_metric_series(f, NULL);
}

static size_t bucket_of(const char *model, int version)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)model; *p; p++)
        h = (h ^ *p) * 16777619u;
    h = (h ^ (uint32_t)version) * 16777619u;
    return h & (MAP_BUCKETS - 1);
}

/* Called with tr.lock held (either way). */
static struct track *find(const char *model, int version)
{
    for (struct track *t = tr.map[bucket_of(model, version)]; t != NULL; t = t->next)
        if (t->version == version && strcmp(t->model, model) == 0)
            return t;
    return NULL;
}

static bool same_bins(const struct infer_bins *a, const struct infer_bins *b)
{
    return a->categorical == b->categorical && a->nbins == b->nbins &&
           a->ref_count == b->ref_count &&
           memcmp(a->edges, b->edges, (a->nbins - 1) * sizeof *a->edges) == 0 &&
           memcmp(a->ref_share, b->ref_share, a->nbins * sizeof *a->ref_share) == 0;
}

/* True when t counts with these bins. The caller's pointer seen before means the same
 * loaded version, so only sizes are checked; another pointer is compared in full once. */
static bool matches(struct track *t, const struct infer_bins *bins, size_t nfeatures)
{
    if (t->nfeatures != nfeatures)
        return false;
    if (atomic_load_explicit(&t->hint, memory_order_relaxed) == bins) {
        for (size_t f = 0; f < nfeatures; f++)
            if (t->bins[f].nbins != bins[f].nbins || t->bins[f].ref_count != bins[f].ref_count)
                return false;
        return true;
    }
    for (size_t f = 0; f < nfeatures; f++)
        if (!same_bins(&t->bins[f], &bins[f]))
            return false;
    atomic_store_explicit(&t->hint, bins, memory_order_relaxed);
    return true;
}

static void track_free(struct track *t)
{
    infer_bins_array_free(t->bins, t->nfeatures);
    for (size_t f = 0; f < t->nfeatures; f++)
        free(t->names[f]);
    free(t->names);
    free(t->off);
    free((void *)t->live);
    free(t->pending);
    free(t->ring);
    free(t->ring_rows);
    free(t->slot_epoch);
    free(t->gauge);
    free(t->model);
    free(t);
}

static struct track *track_new(const char *model, int version, const struct infer_bins *bins,
                               size_t nfeatures, const char *const *names)
{
    struct track *t = cn_calloc(1, sizeof *t);

    t->model = cn_strdup(model);
    t->version = version;
    snprintf(t->version_str, sizeof t->version_str, "%d", version);
    t->nfeatures = nfeatures;
    t->bins = cn_calloc(nfeatures, sizeof *t->bins);
    t->names = cn_calloc(nfeatures, sizeof *t->names);
    t->off = cn_calloc(nfeatures + 1, sizeof *t->off);
    for (size_t f = 0; f < nfeatures; f++) {
        const struct infer_bins *b = &bins[f];
        char fallback[32];

        t->bins[f] = *b;
        t->bins[f].edges = cn_malloc((b->nbins > 1 ? b->nbins - 1 : 1) * sizeof(double));
        memcpy(t->bins[f].edges, b->edges, (b->nbins - 1) * sizeof(double));
        t->bins[f].ref_share = cn_malloc(b->nbins * sizeof(double));
        memcpy(t->bins[f].ref_share, b->ref_share, b->nbins * sizeof(double));
        snprintf(fallback, sizeof fallback, "f%zu", f);
        t->names[f] = cn_strdup(names && names[f] ? names[f] : fallback);
        t->off[f + 1] = t->off[f] + b->nbins;
    }
    t->total = t->off[nfeatures];
    t->live = cn_calloc(t->total ? t->total : 1, sizeof *t->live);
    t->pending = cn_calloc(t->total ? t->total : 1, sizeof *t->pending);
    atomic_store(&t->hint, bins);
    return t;
}

/* Unlinks t from the map onto the retired list. Called with tr.lock exclusive. */
static void retire(struct track *t)
{
    struct track **pp = &tr.map[bucket_of(t->model, t->version)];

    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    tr.ntracks--;
    t->next = tr.retired;
    tr.retired = t;
}

/* Counts a feature's column into a local histogram, then adds each bin to the shared
 * counters once: at most nbins atomic adds per feature instead of one per value, so
 * workers observing at once pass the counters' cache lines back and forth per batch,
 * not per value. This runs in the predict call before its reply. */
static void count_rows(struct track *t, const float *x, size_t nrows)
{
    size_t nf = t->nfeatures;
    uint32_t local[JSON_MAX_BINS];

    for (size_t f = 0; f < nf; f++) {
        const struct infer_bins *b = &t->bins[f];
        _Atomic int64_t *live = &t->live[t->off[f]];
        if (b->nbins > JSON_MAX_BINS) { /* never built so (see JSON_MAX_BINS), but safe */
            for (size_t r = 0; r < nrows; r++) {
                size_t i = infer_bins_index(b, x[r * nf + f]);
                if (i != SIZE_MAX)
                    atomic_fetch_add_explicit(&live[i], 1, memory_order_relaxed);
            }
            continue;
        }
        memset(local, 0, b->nbins * sizeof local[0]);
        for (size_t r = 0; r < nrows; r++) {
            size_t i = infer_bins_index(b, x[r * nf + f]);
            if (i != SIZE_MAX)
                local[i]++;
        }
        for (size_t i = 0; i < b->nbins; i++)
            if (local[i] != 0)
                atomic_fetch_add_explicit(&live[i], local[i], memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&t->live_rows, (int64_t)nrows, memory_order_relaxed);
}

void infer_drift_observe(const char *model, int version, const struct infer_bins *bins,
                         size_t nfeatures, const char *const *feature_names, const float *x,
                         size_t nrows)
{
    struct track *t;

    if (model == NULL || bins == NULL || nfeatures == 0 || x == NULL || nrows == 0)
        return;
    pthread_rwlock_rdlock(&tr.lock);
    t = find(model, version);
    if (t != NULL && matches(t, bins, nfeatures)) {
        count_rows(t, x, nrows);
        pthread_rwlock_unlock(&tr.lock);
        return;
    }
    pthread_rwlock_unlock(&tr.lock);

    /* First rows of this version (or its bins changed): create under the exclusive
     * lock, looking again since another worker may have been first. */
    pthread_once(&metrics_once, metrics_init);
    pthread_rwlock_wrlock(&tr.lock);
    t = find(model, version);
    if (t != NULL && !matches(t, bins, nfeatures)) {
        retire(t);
        t = NULL;
    }
    if (t == NULL && tr.ntracks < MAX_TRACKS) {
        t = track_new(model, version, bins, nfeatures, feature_names);
        t->next = tr.map[bucket_of(model, version)];
        tr.map[bucket_of(model, version)] = t;
        tr.ntracks++;
    }
    if (t != NULL)
        count_rows(t, x, nrows);
    else
        cn_series_add(dm.untracked, (double)nrows);
    pthread_rwlock_unlock(&tr.lock);
}

/* ------------------------------------------------------------------ the flusher */

static void ring_config(int flush_s, int window_s)
{
    int64_t slot = (window_s + RING_MAX - 1) / RING_MAX;

    fl.flush_s = flush_s;
    fl.window_s = window_s;
    fl.slot_s = slot > flush_s ? slot : flush_s;
    fl.nslots = (int)((window_s + fl.slot_s - 1) / fl.slot_s);
    if (fl.nslots < 1)
        fl.nslots = 1;
}

/* Moves what observers counted since the last drain into t->pending and the
 * ring slot of now_s. Flusher only; t is in the map (read lock held) or unlinked. */
static void drain(struct track *t, int64_t now_s)
{
    int64_t epoch = now_s / fl.slot_s, rows;
    int slot;

    if (t->nslots != fl.nslots) {
        free(t->ring);
        free(t->ring_rows);
        free(t->slot_epoch);
        t->nslots = fl.nslots;
        t->ring = cn_calloc((size_t)t->nslots * (t->total ? t->total : 1), sizeof *t->ring);
        t->ring_rows = cn_calloc((size_t)t->nslots, sizeof *t->ring_rows);
        t->slot_epoch = cn_malloc((size_t)t->nslots * sizeof *t->slot_epoch);
        for (int s = 0; s < t->nslots; s++)
            t->slot_epoch[s] = -1;
    }
    slot = (int)(epoch % t->nslots);
    if (t->slot_epoch[slot] != epoch) {
        memset(t->ring + (size_t)slot * t->total, 0, t->total * sizeof *t->ring);
        t->ring_rows[slot] = 0;
        t->slot_epoch[slot] = epoch;
    }
    for (size_t k = 0; k < t->total; k++) {
        int64_t v = atomic_exchange_explicit(&t->live[k], 0, memory_order_relaxed);
        t->pending[k] += v;
        t->ring[(size_t)slot * t->total + k] += v;
    }
    rows = atomic_exchange_explicit(&t->live_rows, 0, memory_order_relaxed);
    t->pending_rows += rows;
    t->ring_rows[slot] += rows;
}

/* Adds t's pending counts to drift_counts for the minute of now_s; clears them when
 * written. Returns 0 (also when there was nothing) or the database's error. */
static int write_pending(struct cn_pg *pg, struct track *t, int64_t now_s)
{
    size_t n = 0, cap = t->nfeatures + 1;
    int *features = cn_malloc(cap * sizeof *features);
    const int64_t **counts = cn_malloc(cap * sizeof *counts);
    size_t *lens = cn_malloc(cap * sizeof *lens);
    int rc = CN_OK;

    /* Feature -1 first and the rest ascending: replicas lock rows in the same order. */
    if (t->pending_rows > 0) {
        features[n] = -1;
        counts[n] = &t->pending_rows;
        lens[n++] = 1;
    }
    for (size_t f = 0; f < t->nfeatures; f++) {
        bool any = false;
        for (size_t k = t->off[f]; k < t->off[f + 1] && !any; k++)
            any = t->pending[k] != 0;
        if (!any)
            continue;
        features[n] = (int)f;
        counts[n] = t->pending + t->off[f];
        lens[n++] = t->bins[f].nbins;
    }
    if (n > 0)
        rc = drift_add(pg, t->model, t->version, now_s / 60 * 60, n, features, counts, lens);
    if (rc == CN_OK && n > 0) {
        memset(t->pending, 0, t->total * sizeof *t->pending);
        t->pending_rows = 0;
    }
    free(features);
    free(counts);
    free(lens);
    return rc;
}

/* Sets t's gauges from the ring slots inside the window ending at now_s. Returns the
 * rows observed in that window. */
static int64_t set_gauges(struct track *t, int64_t now_s)
{
    int64_t epoch = now_s / fl.slot_s, rows = 0;
    int64_t *sum = cn_calloc(t->total ? t->total : 1, sizeof *sum);

    if (t->gauge == NULL)
        t->gauge = cn_calloc(t->nfeatures, sizeof *t->gauge);
    for (int s = 0; s < t->nslots; s++) {
        if (t->slot_epoch[s] < 0 || t->slot_epoch[s] <= epoch - t->nslots)
            continue;
        rows += t->ring_rows[s];
        for (size_t k = 0; k < t->total; k++)
            sum[k] += t->ring[(size_t)s * t->total + k];
    }
    for (size_t f = 0; f < t->nfeatures; f++) {
        if (t->gauge[f] == NULL)
            t->gauge[f] =
                cn_metric_series(dm.psi, (const char *[]){t->model, t->version_str, t->names[f]});
        cn_series_set(t->gauge[f], infer_psi(&t->bins[f], sum + t->off[f], NULL));
    }
    free(sum);
    return rows;
}

/* Logs the database going away or coming back, once per change. */
static void note_db(int rc, struct cn_pg *pg)
{
    if (rc != CN_OK) {
        cn_series_add(dm.errors, 1);
        if (!fl.db_down)
            cn_log_warn("DRIFT-DB-DOWN", "drift counts not written (%s); keeping them",
                        cn_pg_errmsg(pg)[0] ? cn_pg_errmsg(pg) : cn_strerror(rc));
        fl.db_down = true;
    } else if (fl.db_down) {
        cn_log_info("DRIFT-DB-UP", "drift counts written again");
        fl.db_down = false;
    }
}

/* One flush at wall time now_s: see the top of the file. Flusher only. */
static void flush_once(struct cn_pg *pg, int64_t now_s)
{
    struct track **live = NULL, *t, **pp;
    size_t n = 0;
    int rc = CN_OK, failed = CN_OK;

    pthread_once(&metrics_once, metrics_init);
    if (fl.nslots < 1)
        ring_config(60, DEFAULT_WINDOW_S);

    /* Exclusive, briefly: tracks leave the map only here and in observe. */
    pthread_rwlock_wrlock(&tr.lock);
    for (size_t b = 0; b < MAP_BUCKETS; b++) {
        for (pp = &tr.map[b]; (t = *pp) != NULL;) {
            if (t->evict) {
                *pp = t->next;
                tr.ntracks--;
                t->next = fl.dead;
                fl.dead = t;
            } else {
                pp = &t->next;
            }
        }
    }
    while ((t = tr.retired) != NULL) {
        tr.retired = t->next;
        t->next = fl.dead;
        fl.dead = t;
    }
    pthread_rwlock_unlock(&tr.lock);

    /* Shared: observers keep counting while we drain; no track comes or goes. */
    pthread_rwlock_rdlock(&tr.lock);
    live = cn_malloc((tr.ntracks ? tr.ntracks : 1) * sizeof *live);
    for (size_t b = 0; b < MAP_BUCKETS; b++)
        for (t = tr.map[b]; t != NULL; t = t->next) {
            drain(t, now_s);
            live[n++] = t;
        }
    pthread_rwlock_unlock(&tr.lock);
    for (t = fl.dead; t != NULL; t = t->next)
        drain(t, now_s);

    /* Unlocked: the database and the gauges. Only this thread frees tracks, so the
     * snapshot stays valid even if observe retires one meanwhile. After one failure the
     * rest wait for the next flush rather than each wait for the database. */
    for (size_t i = 0; i < n && rc != CN_EUNAVAIL; i++)
        if ((rc = write_pending(pg, live[i], now_s)) != CN_OK)
            failed = rc;
    for (t = fl.dead; t != NULL && rc != CN_EUNAVAIL; t = t->next)
        if ((rc = write_pending(pg, t, now_s)) != CN_OK)
            failed = rc;
    note_db(failed, pg);
    for (size_t i = 0; i < n; i++) {
        t = live[i];
        /* Nothing left in the window (the gauges just went to 0) and everything
         * written: the track has nothing more to say until rows come again. */
        if (set_gauges(t, now_s) == 0 && t->pending_rows == 0)
            t->evict = true;
    }
    for (pp = &fl.dead; (t = *pp) != NULL;) {
        if (t->pending_rows == 0) {
            *pp = t->next;
            track_free(t);
        } else {
            pp = &t->next;
        }
    }
    free(live);
}

static void *flusher(void *arg)
{
    struct cn_pg *pg = cn_pg_new(arg);
    int64_t next = cn_mono_ms() + (int64_t)fl.flush_s * 1000;

    pthread_mutex_lock(&fl.mu);
    while (!fl.stopping) {
        struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (long)(next % 1000) * 1000000L};

        if (cn_mono_ms() < next) {
            pthread_cond_timedwait(&fl.cv, &fl.mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&fl.mu);
        flush_once(pg, cn_wall_s());
        next += (int64_t)fl.flush_s * 1000;
        if (next < cn_mono_ms())
            next = cn_mono_ms() + (int64_t)fl.flush_s * 1000; /* fell behind: no burst */
        pthread_mutex_lock(&fl.mu);
    }
    pthread_mutex_unlock(&fl.mu);
    flush_once(pg, cn_wall_s()); /* what came in since the last one */
    cn_pg_free(pg);
    return NULL;
}

int infer_drift_start(const char *dsn, int flush_s, int window_s)
{
    pthread_condattr_t attr;
    int rc = CN_OK;

    if (dsn == NULL || flush_s < 1 || window_s < flush_s || window_s > MAX_WINDOW_S)
        return CN_EINVAL;
    pthread_once(&metrics_once, metrics_init);
    pthread_mutex_lock(&fl.mu);
    if (fl.running) {
        rc = CN_EEXIST;
        goto out;
    }
    ring_config(flush_s, window_s);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fl.cv, &attr);
    pthread_condattr_destroy(&attr);
    fl.dsn = cn_strdup(dsn);
    fl.stopping = false;
    if (pthread_create(&fl.thread, NULL, flusher, fl.dsn) != 0) {
        cn_log_error("DRIFT-START-FAIL", "cannot start the drift flusher");
        pthread_cond_destroy(&fl.cv);
        free(fl.dsn);
        fl.dsn = NULL;
        rc = CN_EINTERNAL;
        goto out;
    }
    fl.running = true;
out:
    pthread_mutex_unlock(&fl.mu);
    return rc;
}

void infer_drift_stop(void)
{
    struct track *all = NULL, *t;
    bool was_running;

    pthread_mutex_lock(&fl.mu);
    was_running = fl.running;
    fl.stopping = true;
    if (was_running)
        pthread_cond_signal(&fl.cv);
    pthread_mutex_unlock(&fl.mu);
    if (was_running) {
        pthread_join(fl.thread, NULL);
        pthread_cond_destroy(&fl.cv);
        free(fl.dsn);
        fl.dsn = NULL;
    }

    pthread_rwlock_wrlock(&tr.lock);
    for (size_t b = 0; b < MAP_BUCKETS; b++) {
        while ((t = tr.map[b]) != NULL) {
            tr.map[b] = t->next;
            t->next = all;
            all = t;
        }
    }
    while ((t = tr.retired) != NULL) {
        tr.retired = t->next;
        t->next = all;
        all = t;
    }
    tr.ntracks = 0;
    pthread_rwlock_unlock(&tr.lock);
    while ((t = fl.dead) != NULL) {
        fl.dead = t->next;
        t->next = all;
        all = t;
    }
    while ((t = all) != NULL) {
        all = t->next;
        track_free(t);
    }

    pthread_mutex_lock(&fl.mu);
    fl.running = false;
    fl.stopping = false;
    fl.db_down = false;
    pthread_mutex_unlock(&fl.mu);
}

/* ------------------------------------------------------------------ the report */

static void *aalloc(ProtobufCAllocator *a, size_t n)
{
    return a->alloc(a->allocator_data, n ? n : 1);
}

static char *astrdup(ProtobufCAllocator *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = aalloc(a, n);

    memcpy(d, s, n);
    return d;
}

static double *adoubles(ProtobufCAllocator *a, const double *v, size_t n)
{
    double *d;

    if (n == 0)
        return NULL;
    d = aalloc(a, n * sizeof *d);
    memcpy(d, v, n * sizeof *d);
    return d;
}

int infer_drift_report(struct cn_pg *pg, const char *model, int version,
                       const struct infer_bins *bins, size_t nfeatures,
                       const char *const *feature_names, int64_t window_s,
                       ProtobufCAllocator *alloc, Cairn__V1__DriftReport *out, char *why,
                       size_t whylen)
{
    size_t *nbins = NULL, total = 0, maxbins = 1;
    int64_t *flat = NULL, **counts = NULL, rows = 0, since, now = cn_wall_s();
    double *cur = NULL;
    int worst = 0, rc;

    cairn__v1__drift_report__init(out);
    if (bins == NULL || nfeatures == 0) {
        snprintf(why, whylen, "version %d of %s has no drift reference", version, model);
        return CN_ENOTFOUND;
    }
    if (window_s <= 0)
        window_s = fl.window_s > 0 ? fl.window_s : DEFAULT_WINDOW_S;
    if (window_s > MAX_WINDOW_S) {
        snprintf(why, whylen, "window_s is at most %d", MAX_WINDOW_S);
        return CN_EINVAL;
    }
    /* Whole minutes: the one holding now - window_s and every later one. */
    since = (now - window_s) / 60 * 60;

    nbins = cn_malloc(nfeatures * sizeof *nbins);
    counts = cn_malloc(nfeatures * sizeof *counts);
    for (size_t f = 0; f < nfeatures; f++) {
        total += nbins[f] = bins[f].nbins;
        if (nbins[f] > maxbins)
            maxbins = nbins[f];
    }
    flat = cn_calloc(total, sizeof *flat);
    for (size_t f = 0, off = 0; f < nfeatures; off += nbins[f], f++)
        counts[f] = flat + off;
    rc = infer_db_drift_sum(pg, model, version, since, nfeatures, nbins, counts, &rows);
    if (rc != CN_OK) {
        snprintf(why, whylen, "%s", rc == CN_EUNAVAIL ? "database unavailable" : "database error");
        goto out;
    }

    out->model = astrdup(alloc, model);
    out->version = version;
    out->window_s = window_s;
    out->n_features = nfeatures;
    out->features = aalloc(alloc, nfeatures * sizeof *out->features);
    cur = cn_malloc(maxbins * sizeof *cur);
    for (size_t f = 0; f < nfeatures; f++) {
        const struct infer_bins *b = &bins[f];
        Cairn__V1__FeatureDrift *d = aalloc(alloc, sizeof *d);
        char fallback[32];
        int64_t n = 0;

        cairn__v1__feature_drift__init(d);
        snprintf(fallback, sizeof fallback, "f%zu", f);
        d->feature =
            astrdup(alloc, feature_names && feature_names[f] ? feature_names[f] : fallback);
        d->psi = infer_psi(b, counts[f], cur);
        d->status = astrdup(alloc, infer_psi_status(d->psi));
        d->reference_count = b->ref_count;
        for (size_t k = 0; k < b->nbins; k++)
            n += counts[f][k];
        d->current_count = n;
        d->n_edges = b->nbins - 1;
        d->edges = adoubles(alloc, b->edges, b->nbins - 1);
        d->n_reference_share = b->nbins;
        d->reference_share = adoubles(alloc, b->ref_share, b->nbins);
        d->n_current_share = b->nbins;
        d->current_share = adoubles(alloc, cur, b->nbins);
        if (status_rank(d->psi) > worst)
            worst = status_rank(d->psi);
        /* Rows with every feature missing count only in rows; a feature never counts
         * more values than there were rows, unless the pseudo-feature is missing. */
        if (n > rows)
            rows = n;
        out->features[f] = d;
    }
    out->rows = rows;
    out->status = astrdup(alloc, worst == 2 ? "significant" : worst == 1 ? "moderate" : "none");
out:
    free(cur);
    free(flat);
    free(counts);
    free(nbins);
    return rc;
}
