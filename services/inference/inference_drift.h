/* inference_drift.h — drift: reference bins per feature, PSI, live input histograms
 * flushed to Postgres, the drift report and gauges.
 * (Part of cairn-inference; see inference.h for the map of files.)
 */
#ifndef INFERENCE_DRIFT_H
#define INFERENCE_DRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "cairn/v1/inference.pb-c.h"

struct cn_pg;

/* Drift bins of one feature, from the reference sample. Numeric features with more than
 * 20 distinct reference values get equal-width bins over the reference range (Sturges'
 * count), the outer bins open-ended; others get one bin per reference value plus one
 * (the last) for values never seen. NaN and infinities (missing) are not binned. */
struct infer_bins {
    bool categorical;
    size_t nbins;  /* >= 1 */
    double *edges; /* numeric: nbins - 1 inner edges; categorical: nbins - 1 values; ascending */
    double *ref_share; /* nbins shares of the reference, summing to 1 (all 0 when ref_count is 0) */
    int64_t ref_count; /* non-missing reference values */
};
/* Frees what b holds (not b itself) and zeroes it. NULL is fine. */
void infer_bins_free(struct infer_bins *b);
/* Frees n bins and the array itself (as infer_bins_from_json returns it). NULL is fine. */
void infer_bins_array_free(struct infer_bins *bins, size_t n);
/* Builds bins from n values at col[0], col[stride], ... (NaN and infinities skipped).
 * Returns 0 with *out filled (caller infer_bins_free's), or CN_EINVAL (col NULL with
 * n > 0, stride 0). A column with no value at all gets the one "never seen" bin. */
int infer_bins_build(const float *col, size_t n, size_t stride, struct infer_bins *out);
/* The bin of v, or SIZE_MAX for NaN and infinities. */
size_t infer_bins_index(const struct infer_bins *b, double v);
/* PSI of current counts (nbins) against the reference shares, as Evidently computes it:
 * sum over bins of (cur - ref) * ln(cur / ref), an empty share replaced by 0.0001, or by
 * a millionth of the smallest non-empty share of its side when that is below 0.0001.
 * Fills cur_share (nbins) if not NULL. 0 when either side has no value. */
double infer_psi(const struct infer_bins *b, const int64_t *cur_counts, double *cur_share);
/* "none", "moderate" (>= 0.1) or "significant" (>= 0.25). */
const char *infer_psi_status(double psi);
/* A whole reference (one infer_bins per feature) to and from the JSON in
 * versions.reference: {"format":1,"features":[{"kind":"numeric"|"categorical",
 * "edges":[...],"ref_share":[...],"ref_count":n}, ...]}. to_json returns a new reference.
 * from_json validates everything (lengths, order, finite values, caps) and returns 0 with
 * *bins (malloc'd array; infer_bins_array_free) and *nfeatures, or CN_EINVAL. */
json_t *infer_bins_to_json(const struct infer_bins *bins, size_t nfeatures);
int infer_bins_from_json(const json_t *j, struct infer_bins **bins, size_t *nfeatures);

/* Counts one batch of live inputs (nrows rows of nfeatures floats, row-major, NaN =
 * missing) into the histograms of (model, version). Called by the predict path of any
 * worker: no I/O, a read lock and relaxed atomic adds. bins (nfeatures of them, borrowed
 * for the call; NULL = no reference, nothing counted) is copied on first use; a version
 * whose bins change starts counting afresh. feature_names (may be NULL: "f0", "f1" ...)
 * label the gauges. Beyond 1024 (model, version) pairs, rows are not counted
 * (cairn_inference_drift_untracked_rows_total). */
void infer_drift_observe(const char *model, int version, const struct infer_bins *bins,
                         size_t nfeatures, const char *const *feature_names, const float *x,
                         size_t nrows);

/* Starts the flusher thread (own connection to dsn): every flush_s seconds it adds the
 * counts since the last flush to inference.drift_counts for the current minute and sets
 * cairn_inference_drift_psi{model,version,feature} from this replica's counts over the
 * last window_s seconds. Returns 0, CN_EINVAL (flush_s < 1, window_s < flush_s),
 * CN_EEXIST or CN_EINTERNAL. */
int infer_drift_start(const char *dsn, int flush_s, int window_s);
/* Flushes once more (one attempt), stops the thread and frees every live histogram. Call
 * it after the workers stopped; safe when not started (frees what observe made). */
void infer_drift_stop(void);

/* The drift report of (model, version) over the last window_s seconds (<= 0: the
 * window given to infer_drift_start, else 3600; rounded out to whole minutes), summed
 * over every replica from inference.drift_counts, against bins (nfeatures; the version's
 * reference). Fills *out (initialised here); every string and array comes from alloc.
 * rows is the number of rows observed in the window; status is the worst feature's.
 * Returns 0; CN_ENOTFOUND when bins is NULL or nfeatures 0 (no reference); CN_EINVAL
 * for a window over a year; CN_EUNAVAIL or CN_EDB from the database; why says which. */
int infer_drift_report(struct cn_pg *pg, const char *model, int version,
                       const struct infer_bins *bins, size_t nfeatures,
                       const char *const *feature_names, int64_t window_s,
                       ProtobufCAllocator *alloc, Cairn__V1__DriftReport *out, char *why,
                       size_t whylen);

#endif
