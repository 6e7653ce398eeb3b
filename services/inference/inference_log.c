/* inference_log.c — the prediction log: every logged predict/infer call goes through a
 * bounded in-memory queue to one writer thread, which owns its own Postgres connection
 * and writes in batches (inference_db_log.c, one COPY per batch).
 *
 * API (inference_log.h): infer_log_start / infer_log_stop around the service's life,
 * infer_log_entry_new + infer_log_push on the predict path, infer_log_flush_now for tests.
 *
 * The predict path must never wait for the log. infer_log_push holds the queue's mutex
 * only to store a pointer in a ring; when the ring is full the entry is freed and
 * counted (cairn_inference_log_dropped_total{reason="full"}) instead.
 *
 * A batch is one COPY, streamed: the first queued row opens it, and every STREAM_MS the
 * writer sends the rows queued since, so the database parses them as they come. The COPY
 * commits when it holds `batch` rows, or flush_ms after it opened but within COPY_OPEN_MS
 * whatever flush_ms says (an open COPY holds a snapshot and a lock on the table). Why,
 * measured at 2 000 predictions/s on a 2-core machine shared with PostgreSQL
 * (bench/inference.sh): a COPY written at once keeps a core busy while PostgreSQL parses
 * and inserts it, and the predictions queued behind that core show it in their p99
 * (4.3-6.2 ms with 500-row batches, 4.0-4.1 ms with 100); streamed 100-row batches gave
 * 2.6-3.7 ms. PostgreSQL inserts the streamed rows as they come too (inference_db_log.c
 * says how). Smaller COPYs cost the database more per row: 20-row batches doubled its CPU
 * per logged prediction.
 *
 * Rows leave the ring only once their COPY committed, so while the database is down they
 * stay queued (up to the cap; beyond it new ones are dropped) and are retried with
 * backoff (100 ms doubling to 5 s). The outage is logged once when it starts
 * (LOG-DB-DOWN) and once when it ends (LOG-DB-UP), never per row. A batch the database
 * refuses (a string that is not valid UTF-8) is retried row by row so one bad row
 * costs only itself (dropped, reason "rejected").
 *
 * To add a column: the field in struct infer_log_entry, the column in migrations/ and in
 * inference_db_log.c's rows_binary.
 */
#include "inference_log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "util.h"

#define QUEUE_MAX 10000000
#define BATCH_MAX 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STREAM_MS 10      /* while a COPY is open, queued rows are sent this often */
#define COPY_OPEN_MS 1000 /* and it commits this long after it opened, at the latest */

/* The database side, a seam for tests (which include this file and point it at a fake). */
static struct {
    int (*begin)(struct cn_pg *);
    int (*put)(struct cn_pg *, struct infer_log_entry *const *, size_t);
    int (*end)(struct cn_pg *);
} sink = {infer_db_log_begin, infer_db_log_put, infer_db_log_end};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work for the writer, or stop */
    bool running;      /* between start and the end of stop */
    bool stopping;
    bool flush_req;
    struct infer_log_entry **ring; /* cap slots; count entries from head */
    size_t cap, head, count;
    size_t sent; /* of those, how many the open COPY holds (0: none open) */
    size_t batch;
    int flush_ms;
    int64_t drain_until_ms; /* monotonic; set by stop */
    char *dsn;
    pthread_t thread;
} lg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct {
    struct cn_series *written, *full, *rejected, *stopped, *queue, *batch_s, *errors;
} m;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct cn_metric *f;

    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_log_written_total",
                      "Predictions written to the prediction log", NULL, NULL, 0);
    m.written = cn_metric_series(f, NULL);
    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_log_dropped_total",
                      "Predictions not logged: queue full, refused by the database, or "
                      "still queued when the log stopped",
                      "reason", NULL, 0);
    m.full = cn_metric_series(f, (const char *[]){"full"});
    m.rejected = cn_metric_series(f, (const char *[]){"rejected"});
    m.stopped = cn_metric_series(f, (const char *[]){"stopped"});
    f = cn_metric_new(CN_METRIC_GAUGE, "cairn_inference_log_queue",
                      "Predictions waiting to be written to the log", NULL, NULL, 0);
    m.queue = cn_metric_series(f, NULL);
    f = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_inference_log_batch_seconds",
                      "Time the writer spent on one prediction-log batch: sending its rows and committing", NULL, NULL, 0);
    m.batch_s = cn_metric_series(f, NULL);
    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_log_errors_total",
                      "Prediction-log batches that failed (database down or refused)", NULL, NULL,
                      0);
    m.errors = cn_metric_series(f, NULL);
}

struct infer_log_entry *infer_log_entry_new(void)
{
    pthread_once(&metrics_once, metrics_init);
    return cn_calloc(1, sizeof(struct infer_log_entry));
}

void infer_log_entry_free(struct infer_log_entry *e)
{
    if (e == NULL)
        return;
    free(e->x);
    free(e->pred);
    free(e);
}

static float *copy_floats(const float *v, size_t n)
{
    if (v == NULL)
        return NULL;
    float *c = cn_malloc(n ? n * sizeof *c : 1);
    memcpy(c, v, n * sizeof *c);
    return c;
}

void infer_log_entry_set(struct infer_log_entry *e, const float *x, size_t nrows, size_t ncols, const float *pred,
                         int outputs)
{
    free(e->x);
    free(e->pred);
    e->nrows = nrows;
    e->ncols = ncols;
    e->outputs = outputs;
    e->x = copy_floats(x, nrows * ncols);
    e->pred = copy_floats(pred, nrows * (size_t)(outputs > 1 ? outputs : 1));
}

static void drop(struct infer_log_entry *e, struct cn_series *why)
{
    cn_series_add(why, 1);
    infer_log_entry_free(e);
}

bool infer_log_push(struct infer_log_entry *e)
{
    struct cn_series *why = NULL;

    if (e == NULL)
        return false;
    pthread_once(&metrics_once, metrics_init);
    /* The strings go to the database as C strings: never past their arrays. */
    e->request_id[sizeof e->request_id - 1] = '\0';
    e->model[sizeof e->model - 1] = '\0';
    e->variant[sizeof e->variant - 1] = '\0';
    e->error[sizeof e->error - 1] = '\0';
    if (e->at_ms == 0)
        e->at_ms = cn_wall_ms();

    pthread_mutex_lock(&lg.mu);
    if (!lg.running || lg.stopping) {
        why = m.stopped;
    } else if (lg.count == lg.cap) {
        why = m.full;
    } else {
        lg.ring[(lg.head + lg.count) % lg.cap] = e;
        lg.count++;
        cn_series_set(m.queue, (double)lg.count);
        /* The first row opens a COPY, a full batch commits it; in between, the writer
         * comes for rows on its own timer, so a push does not wake it each time. */
        if ((lg.sent == 0 && lg.count == 1) || lg.count == lg.batch)
            pthread_cond_signal(&lg.cv);
    }
    pthread_mutex_unlock(&lg.mu);
    if (why != NULL) {
        drop(e, why);
        return false;
    }
    return true;
}

void infer_log_flush_now(void)
{
    pthread_mutex_lock(&lg.mu);
    lg.flush_req = true;
    pthread_cond_signal(&lg.cv);
    pthread_mutex_unlock(&lg.mu);
}

/* Waits on lg.cv until the monotonic time until_ms at the latest. Called locked. */
static void wait_until(int64_t until_ms)
{
    struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (long)(until_ms % 1000) * 1000000L};

    pthread_cond_timedwait(&lg.cv, &lg.mu, &ts);
}

/* Inserts one row with a COPY of its own. */
static int insert_one(struct cn_pg *pg, struct infer_log_entry *row)
{
    int rc = sink.begin(pg);
    if (rc == CN_OK)
        rc = sink.put(pg, &row, 1);
    if (rc == CN_OK)
        rc = sink.end(pg);
    return rc;
}

/* After the COPY of rows[0 .. n) ended with rc: returns how many leading rows are
 * finished (written, or refused and dropped); fewer than n only when the database is
 * unreachable (*down set). */
static size_t settle_rows(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n, int rc,
                          bool *down)
{
    size_t i, rejected = 0;
    char first[sizeof rows[0]->request_id] = "", state[6] = "", msg[256] = "";

    *down = false;
    if (rc == CN_OK) {
        cn_series_add(m.written, (double)n);
        return n;
    }
    cn_series_add(m.errors, 1);
    if (rc == CN_EUNAVAIL) {
        *down = true;
        return 0;
    }
    /* Refused: find the bad rows one by one, so the good ones still get in. One log line
     * per batch (naming the first bad row), not per row. */
    for (i = 0; i < n; i++) {
        if (n > 1) {
            int64_t t0 = cn_mono_us();
            rc = insert_one(pg, rows[i]);
            cn_series_observe(m.batch_s, (double)(cn_mono_us() - t0) / 1e6);
            if (rc != CN_OK)
                cn_series_add(m.errors, 1);
        }
        if (rc == CN_OK) {
            cn_series_add(m.written, 1);
            continue;
        }
        if (rc == CN_EUNAVAIL) {
            *down = true;
            break;
        }
        if (rejected++ == 0) {
            snprintf(first, sizeof first, "%s", rows[i]->request_id);
            snprintf(state, sizeof state, "%s", cn_pg_sqlstate(pg));
            snprintf(msg, sizeof msg, "%s", cn_pg_errmsg(pg));
        }
        cn_series_add(m.rejected, 1);
    }
    if (rejected > 0)
        cn_log(CN_LOG_WARN, "LOG-ROW-REJECTED", first,
               "%zu of %zu prediction log rows refused by the database (sqlstate %s): %s", rejected,
               n, state, msg);
    return i;
}

/* Copies the ring's entries [from, from + n) into rows. Called locked. Only the writer
 * removes entries, so they stay put while it works unlocked. */
static void take(struct infer_log_entry **rows, size_t from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rows[i] = lg.ring[(lg.head + from + i) % lg.cap];
}

static void *writer(void *arg)
{
    struct cn_pg *pg = cn_pg_new(arg);
    struct infer_log_entry **rows = cn_calloc(lg.batch, sizeof *rows);
    int64_t opened_ms = 0, next_put_ms = 0, retry_at = 0, busy_us = 0;
    int backoff = BACKOFF_MIN_MS;
    bool down = false;

    pthread_mutex_lock(&lg.mu);
    for (;;) {
        int64_t now = cn_mono_ms();
        size_t room = lg.batch - lg.sent;
        size_t fresh = lg.count - lg.sent < room ? lg.count - lg.sent : room;
        bool open = lg.sent > 0;
        size_t done = 0, n;
        int rc;

        if (lg.stopping && (lg.count == 0 || now >= lg.drain_until_ms))
            break;
        if (now < retry_at) {
            wait_until(lg.stopping && lg.drain_until_ms < retry_at ? lg.drain_until_ms : retry_at);
            continue;
        }
        /* An open COPY holds a snapshot and a lock on the table: never for long. */
        int64_t commit_ms = opened_ms + (lg.flush_ms < COPY_OPEN_MS ? lg.flush_ms : COPY_OPEN_MS);
        bool end_due = open && (lg.sent + fresh == lg.batch || now >= commit_ms || lg.flush_req ||
                                lg.stopping);
        if (fresh > 0 && (!open || end_due || now >= next_put_ms)) {
            /* Send what came since the last send, opening the COPY if none is. */
            take(rows, lg.sent, fresh);
            pthread_mutex_unlock(&lg.mu);
            int64_t t0 = cn_mono_us();
            rc = open ? CN_OK : sink.begin(pg);
            if (rc == CN_OK)
                rc = sink.put(pg, rows, fresh);
            busy_us += cn_mono_us() - t0;
            pthread_mutex_lock(&lg.mu);
            if (rc == CN_OK) {
                if (!open)
                    opened_ms = now;
                lg.sent += fresh;
                next_put_ms = cn_mono_ms() + STREAM_MS;
                continue;
            }
            /* The COPY is lost with what it held: settle it as a failed batch below. */
            n = lg.sent + fresh;
        } else if (end_due) {
            n = lg.sent;
            pthread_mutex_unlock(&lg.mu);
            int64_t t0 = cn_mono_us();
            rc = sink.end(pg);
            busy_us += cn_mono_us() - t0;
            pthread_mutex_lock(&lg.mu);
        } else if (open) {
            /* Pushes do not wake the writer while a COPY is open: it looks again every
             * STREAM_MS, until the COPY is due to commit. */
            if (next_put_ms <= now)
                next_put_ms = now + STREAM_MS;
            wait_until(commit_ms < next_put_ms ? commit_ms : next_put_ms);
            continue;
        } else {
            /* Nothing queued (fresh > 0 whenever rows are): sleep until a push. */
            lg.flush_req = false;
            if (lg.stopping)
                wait_until(lg.drain_until_ms);
            else
                pthread_cond_wait(&lg.cv, &lg.mu);
            continue;
        }

        /* The batch rows[0 .. n) ended with rc. */
        take(rows, 0, n);
        pthread_mutex_unlock(&lg.mu);
        bool now_down;
        cn_series_observe(m.batch_s, (double)busy_us / 1e6);
        busy_us = 0;
        done = settle_rows(pg, rows, n, rc, &now_down);
        if (now_down && !down)
            cn_log_warn("LOG-DB-DOWN", "prediction log cannot write (%s); keeping rows queued",
                        cn_pg_errmsg(pg)[0] ? cn_pg_errmsg(pg) : "database unavailable");
        else if (!now_down && down)
            cn_log_info("LOG-DB-UP", "prediction log writing again");
        down = now_down;
        if (down) {
            retry_at = cn_mono_ms() + backoff;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        } else {
            retry_at = 0;
            backoff = BACKOFF_MIN_MS;
        }
        for (size_t i = 0; i < done; i++)
            infer_log_entry_free(rows[i]);

        pthread_mutex_lock(&lg.mu);
        lg.head = (lg.head + done) % lg.cap;
        lg.count -= done;
        lg.sent = 0;
        lg.flush_req = false;
        cn_series_set(m.queue, (double)lg.count);
    }
    pthread_mutex_unlock(&lg.mu);
    free(rows);
    /* A COPY still open (the drain ran out of time) ends with the connection, uncommitted:
     * its rows are still queued and counted as stopped. */
    cn_pg_free(pg);
    return NULL;
}

int infer_log_start(const char *dsn, size_t queue_cap, size_t batch, int flush_ms)
{
    pthread_condattr_t attr;
    int rc = CN_OK;

    if (dsn == NULL || queue_cap < 1 || queue_cap > QUEUE_MAX || batch < 1 || batch > BATCH_MAX ||
        flush_ms < 1)
        return CN_EINVAL;
    pthread_once(&metrics_once, metrics_init);
    pthread_mutex_lock(&lg.mu);
    if (lg.running) {
        rc = CN_EEXIST;
        goto out;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lg.cv, &attr);
    pthread_condattr_destroy(&attr);
    lg.ring = cn_calloc(queue_cap, sizeof *lg.ring);
    lg.cap = queue_cap;
    lg.head = lg.count = lg.sent = 0;
    lg.batch = batch;
    lg.flush_ms = flush_ms;
    lg.stopping = lg.flush_req = false;
    lg.dsn = cn_strdup(dsn);
    if (pthread_create(&lg.thread, NULL, writer, lg.dsn) != 0) {
        cn_log_error("LOG-START-FAIL", "cannot start the prediction log writer");
        pthread_cond_destroy(&lg.cv);
        free(lg.ring);
        free(lg.dsn);
        lg.ring = NULL;
        lg.dsn = NULL;
        rc = CN_EINTERNAL;
        goto out;
    }
    lg.running = true;
    cn_series_set(m.queue, 0);
out:
    pthread_mutex_unlock(&lg.mu);
    return rc;
}

void infer_log_stop(int drain_ms)
{
    struct infer_log_entry **ring;
    size_t cap, head, count;

    pthread_mutex_lock(&lg.mu);
    if (!lg.running || lg.stopping) {
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    lg.stopping = true;
    lg.drain_until_ms = cn_mono_ms() + (drain_ms > 0 ? drain_ms : 0);
    pthread_cond_signal(&lg.cv);
    pthread_mutex_unlock(&lg.mu);

    pthread_join(lg.thread, NULL);

    /* The writer is gone and pushes see stopping: the ring is ours. */
    pthread_mutex_lock(&lg.mu);
    ring = lg.ring;
    cap = lg.cap;
    head = lg.head;
    count = lg.count;
    lg.ring = NULL;
    lg.cap = lg.head = lg.count = lg.sent = 0;
    free(lg.dsn);
    lg.dsn = NULL;
    pthread_cond_destroy(&lg.cv);
    lg.running = false;
    lg.stopping = false;
    cn_series_set(m.queue, 0);
    pthread_mutex_unlock(&lg.mu);

    if (count > 0)
        cn_log_warn("LOG-STOP-DROP", "prediction log stopped with %zu rows unwritten", count);
    for (size_t i = 0; i < count; i++)
        drop(ring[(head + i) % cap], m.stopped);
    free(ring);
}
