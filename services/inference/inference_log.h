/* inference_log.h — the prediction log: a bounded queue of logged predictions written to
 * inference.predictions in batches by one writer thread; and the SQL of the log and of
 * the live drift counts (inference_db_log.c).
 * (Part of cairn-inference; see inference.h for the map of files.)
 */
#ifndef INFERENCE_LOG_H
#define INFERENCE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cn_pg;

/* One logged predict/infer call. Strings are NUL-terminated (push forces the last byte).
 * The inputs (nrows x ncols, row-major, NaN = missing) and predictions (nrows x outputs)
 * are copies owned by the entry (infer_log_entry_set) and freed with it; the writer thread
 * sends them as real[] (NaN as a NULL element), so the predict path only copies floats.
 * x or pred NULL is SQL NULL. at_ms is unix milliseconds; 0 means "now" (set by push). */
struct infer_log_entry {
    char request_id[129];
    char model[64];
    int version;
    char variant[64];
    float *x;
    size_t nrows, ncols;
    float *pred;
    int outputs;                /* predictions per row; <= 1 is one number per row */
    int latency_us;
    bool ok;
    char error[256];
    int64_t at_ms;
};

/* Starts the writer thread with its own connection to dsn. At most queue_cap entries
 * wait (1 .. 10 000 000); each INSERT writes up to batch rows (1 .. 1000); a partial
 * batch is written after flush_ms (>= 1). Returns 0, CN_EINVAL for a bad argument,
 * CN_EEXIST when already started, CN_EINTERNAL when the thread cannot start. */
int infer_log_start(const char *dsn, size_t queue_cap, size_t batch, int flush_ms);
/* Writes what is queued for at most drain_ms (0 = not at all), stops the writer and frees
 * what is left (counted as dropped, reason "stopped"). No-op when not started. */
void infer_log_stop(int drain_ms);
/* Takes e (from infer_log_entry_new) in all cases and never blocks on I/O: queues it and
 * returns true, or frees it and returns false when the queue is full or the log is not
 * running (cairn_inference_log_dropped_total{reason="full"|"stopped"}). NULL is false. */
bool infer_log_push(struct infer_log_entry *e);
/* Returns a zeroed entry (aborts on OOM). */
struct infer_log_entry *infer_log_entry_new(void);
/* Copies the inputs x (nrows x ncols; NULL = none) and the predictions pred (nrows x
 * max(outputs, 1); NULL = none) into e. */
void infer_log_entry_set(struct infer_log_entry *e, const float *x, size_t nrows, size_t ncols, const float *pred,
                         int outputs);
/* Frees e and its copies (for an entry that is not pushed after all). NULL is fine. */
void infer_log_entry_free(struct infer_log_entry *e);
/* Wakes the writer to write what is queued now, even a partial batch (tests). */
void infer_log_flush_now(void);

/* --- SQL (inference_db_log.c) --- */

/* Inserts n entries (1 .. 1000) into inference.predictions with one COPY. Returns 0,
 * CN_EUNAVAIL (database unreachable: retry later) or CN_EDB (the statement was refused,
 * e.g. a string that is not valid UTF-8: retrying the same rows will not help). */
int infer_db_log_insert(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n);
/* The same COPY streamed: begin opens it, each put formats and sends n entries (the
 * server parses them as they come), end commits every entry put since the begin, or none.
 * Same returns as infer_db_log_insert; a refused entry fails the end. */
int infer_db_log_begin(struct cn_pg *pg);
int infer_db_log_put(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n);
int infer_db_log_end(struct cn_pg *pg);

/* Adds live bin counts to inference.drift_counts for (model, version, minute_s), element
 * by element onto what other replicas already wrote for that minute. Row i is feature
 * features[i] with lens[i] counts at counts[i]. Feature -1 holds one count: the rows
 * observed (see inference_drift.c). One statement. Returns 0, CN_EUNAVAIL or CN_EDB. */
int infer_db_drift_add(struct cn_pg *pg, const char *model, int version, int64_t minute_s, size_t n,
                       const int *features, const int64_t *const *counts, const size_t *lens);
/* Sums inference.drift_counts of (model, version) over the minutes starting at or after
 * since_s (unix seconds), element by element, into counts[f][0 .. nbins[f]) for features
 * 0 .. nfeatures-1 (added to what the caller put there), and the observed rows into
 * *rows. Stored arrays of another length than nbins[f] (written under a reference that
 * has changed since) are left out. Returns 0, CN_EUNAVAIL or CN_EDB. */
int infer_db_drift_sum(struct cn_pg *pg, const char *model, int version, int64_t since_s,
                       size_t nfeatures, const size_t *nbins, int64_t *const *counts,
                       int64_t *rows);

#endif
