/* inference_log.c — the prediction log: every logged predict/infer call goes through a
 * bounded in-memory queue to one writer thread, which owns its own Postgres connection
 * and inserts in batches (inference_db_log.c, one COPY per batch).
 *
 * API (inference_log.h): infer_log_start / infer_log_stop around the service's life,
 * infer_log_entry_new + infer_log_push on the predict path, infer_log_flush_now for tests.
 *
 * The predict path must never wait for the log. infer_log_push holds the queue's mutex
 * only to store a pointer in a ring; when the ring is full the entry is freed and
 * counted (cairn_inference_log_dropped_total{reason="full"}) instead. The writer takes
 * the first `batch` entries, inserts them with the lock released, and removes them from
 * the ring only once they are written, so while the database is down the rows stay
 * queued (up to the cap; beyond it new ones are dropped) and are retried with backoff
 * (100 ms doubling to 5 s). The outage is logged once when it starts (LOG-DB-DOWN) and
 * once when it ends (LOG-DB-UP), never per row. A batch the database refuses (a value
 * json or text will not take) is retried row by row so one bad row costs only itself
 * (dropped, reason "rejected"). A partial batch is written after flush_ms.
 *
 * To add a column: the field in struct infer_log_entry, the column in migrations/ and in
 * infer_db_log_insert.
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

/* The insert, a seam for tests (which include this file and point it at a fake). */
static int (*insert_rows)(struct cn_pg *, struct infer_log_entry *const *,
                          size_t) = infer_db_log_insert;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work for the writer, or stop */
    bool running;      /* between start and the end of stop */
    bool stopping;
    bool flush_req;
    struct infer_log_entry **ring; /* cap slots; count entries from head */
    size_t cap, head, count;
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
                      "Time of one prediction-log INSERT", NULL, NULL, 0);
    m.batch_s = cn_metric_series(f, NULL);
    f = cn_metric_new(CN_METRIC_COUNTER, "cairn_inference_log_errors_total",
                      "Prediction-log INSERTs that failed (database down or refused)", NULL, NULL,
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
        /* One wake-up per full batch; partial batches wait for the writer's timer. */
        if (lg.count == lg.batch)
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

/* Inserts rows[0 .. n). Returns how many leading rows are finished (written, or refused
 * and dropped); fewer than n only when the database is unreachable (*down set). */
static size_t write_rows(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n,
                         bool *down)
{
    int64_t t0 = cn_mono_us();
    int rc = insert_rows(pg, rows, n);
    size_t i, rejected = 0;
    char first[sizeof rows[0]->request_id] = "", state[6] = "", msg[256] = "";

    cn_series_observe(m.batch_s, (double)(cn_mono_us() - t0) / 1e6);
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
            t0 = cn_mono_us();
            rc = insert_rows(pg, rows + i, 1);
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

static void *writer(void *arg)
{
    struct cn_pg *pg = cn_pg_new(arg);
    struct infer_log_entry **rows = cn_calloc(lg.batch, sizeof *rows);
    int64_t last_ms = cn_mono_ms(), retry_at = 0;
    int backoff = BACKOFF_MIN_MS;
    bool down = false;

    pthread_mutex_lock(&lg.mu);
    for (;;) {
        int64_t now = cn_mono_ms();
        size_t n, done;
        bool now_down;

        if (lg.stopping && (lg.count == 0 || now >= lg.drain_until_ms))
            break;
        if (now < retry_at) {
            wait_until(lg.stopping && lg.drain_until_ms < retry_at ? lg.drain_until_ms : retry_at);
            continue;
        }
        if (lg.count < lg.batch && !lg.flush_req && !lg.stopping &&
            (lg.count == 0 || now - last_ms < lg.flush_ms)) {
            wait_until((lg.count == 0 ? now : last_ms) + lg.flush_ms);
            if (lg.count == 0)
                last_ms = cn_mono_ms(); /* the timer of a partial batch starts with it */
            continue;
        }
        lg.flush_req = false;
        n = lg.count < lg.batch ? lg.count : lg.batch;
        if (n == 0)
            continue;
        /* Only this thread removes entries, so these stay put while unlocked. */
        for (size_t i = 0; i < n; i++)
            rows[i] = lg.ring[(lg.head + i) % lg.cap];
        pthread_mutex_unlock(&lg.mu);

        done = write_rows(pg, rows, n, &now_down);
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
        cn_series_set(m.queue, (double)lg.count);
        last_ms = cn_mono_ms();
    }
    pthread_mutex_unlock(&lg.mu);
    free(rows);
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
    lg.head = lg.count = 0;
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
    lg.cap = lg.head = lg.count = 0;
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
