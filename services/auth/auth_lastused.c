/* auth_lastused.c — api_keys.last_used_at without a write per request, and the service's
 * housekeeping thread.
 *
 * ResolveApiKey runs for every request a gateway has not cached, so it must not write.
 * It calls auth_lastused_record(key_id, now), which only puts the id and the time into an
 * in-memory table (a mutex-protected open-addressing hash of key id -> latest time in unix
 * ms). The housekeeping thread flushes that table every CAIRN_AUTH_LAST_USED_FLUSH_S
 * seconds (default 30) with one statement,
 *     UPDATE auth.api_keys ... FROM unnest($1::text[], $2::bigint[]) ...
 * taking the later of the stored and the recorded time, so replicas flushing the same key
 * in any order end with the latest use. The flush swaps in an empty table under the lock
 * and writes outside it: recording never waits for the database. When the table fills up
 * to FLUSH_EARLY entries the thread is woken to flush early; if the database is down the
 * flushed entries are merged back and tried again next time. Beyond TABLE_MAX entries
 * (a flush that cannot keep up) new uses are dropped and counted
 * (cairn_auth_key_uses_dropped_total): last_used_at is a hint, never a security fact.
 * auth_lastused_stop flushes once more, so a clean stop loses nothing; a crash loses at
 * most one period of uses.
 *
 * The same thread calls auth_events_retry each period, so a revocation publisher that
 * could not listen at start-up keeps trying, and purges login-throttle rows that no longer
 * count (purge_throttle). To add periodic work, call it from run().
 */
#include "auth.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apikey.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define TABLE_SLOTS 8192 /* a power of two */
#define TABLE_MAX 6144   /* at most 3/4 full, so probes stay short */
#define FLUSH_EARLY 4096

struct use {
    char id[CN_APIKEY_ID_LEN + 1]; /* "" = empty slot */
    int64_t ms;
};

struct table {
    struct use *slots; /* TABLE_SLOTS */
    size_t n;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* stop, or the table wants an early flush */
    struct table cur, spare;
    bool stop, started, early;
    pthread_t thread;
    struct cn_pg *pg; /* the thread's own handle */
    int64_t period_ms, throttle_window_s;
    struct cn_series *flushed, *dropped, *flush_failed;
} lu = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint32_t hash_id(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *id != '\0'; id++) {
        h ^= (uint8_t)*id;
        h *= 16777619u;
    }
    return h;
}

/* Records (id, ms) in t, keeping the later time. false when t is full. */
static bool table_put(struct table *t, const char *id, int64_t ms)
{
    uint32_t i = hash_id(id) & (TABLE_SLOTS - 1);

    for (;; i = (i + 1) & (TABLE_SLOTS - 1)) {
        struct use *u = &t->slots[i];
        if (u->id[0] == '\0') {
            if (t->n >= TABLE_MAX)
                return false;
            memcpy(u->id, id, sizeof u->id);
            u->ms = ms;
            t->n++;
            return true;
        }
        if (strcmp(u->id, id) == 0) {
            if (ms > u->ms)
                u->ms = ms;
            return true;
        }
    }
}

static void table_clear(struct table *t)
{
    memset(t->slots, 0, TABLE_SLOTS * sizeof *t->slots);
    t->n = 0;
}

static void table_init(struct table *t)
{
    t->slots = cn_calloc(TABLE_SLOTS, sizeof *t->slots);
    t->n = 0;
}

void auth_lastused_record(const char *key_id, int64_t now_ms)
{
    bool ok, wake;

    if (strlen(key_id) != CN_APIKEY_ID_LEN)
        return;
    pthread_mutex_lock(&lu.mu);
    if (lu.cur.slots == NULL) { /* not started (a subcommand): nothing to flush to */
        pthread_mutex_unlock(&lu.mu);
        return;
    }
    ok = table_put(&lu.cur, key_id, now_ms);
    wake = lu.cur.n >= FLUSH_EARLY && !lu.early;
    if (wake)
        lu.early = true;
    pthread_mutex_unlock(&lu.mu);
    if (!ok && lu.dropped != NULL)
        cn_series_add(lu.dropped, 1);
    if (wake)
        pthread_cond_signal(&lu.cv);
}

/* Writes the current table to the database. Called on the housekeeping thread only (or
 * at stop, after it ended), so the spare table is ours outside the lock. */
static void flush(void)
{
    const char **ids;
    int64_t *ms;
    size_t n = 0;
    int rc;

    pthread_mutex_lock(&lu.mu);
    struct table t = lu.cur;
    lu.cur = lu.spare;
    lu.spare = t;
    lu.early = false;
    pthread_mutex_unlock(&lu.mu);
    /* lu.spare is now the snapshot: no recorder touches it. */
    if (lu.spare.n == 0)
        return;

    ids = cn_calloc(lu.spare.n, sizeof *ids);
    ms = cn_calloc(lu.spare.n, sizeof *ms);
    for (size_t i = 0; i < TABLE_SLOTS; i++) {
        if (lu.spare.slots[i].id[0] == '\0')
            continue;
        ids[n] = lu.spare.slots[i].id;
        ms[n] = lu.spare.slots[i].ms;
        n++;
    }
    rc = auth_db_api_key_touch(lu.pg, ids, ms, n);
    if (rc == CN_OK) {
        cn_series_add(lu.flushed, (double)n);
    } else {
        size_t lost = 0;
        cn_series_add(lu.flush_failed, 1);
        cn_log_warn("AUTH-LAST-USED-FAIL",
                    "cannot record the last use of %zu API key(s) (%s: %s); retrying next time", n,
                    cn_strerror(rc), cn_pg_errmsg(lu.pg));
        /* Merge back: a newer use recorded meanwhile keeps its later time. */
        pthread_mutex_lock(&lu.mu);
        for (size_t i = 0; i < n; i++)
            lost += !table_put(&lu.cur, ids[i], ms[i]);
        pthread_mutex_unlock(&lu.mu);
        if (lost > 0)
            cn_series_add(lu.dropped, (double)lost);
    }
    free(ids);
    free(ms);
    table_clear(&lu.spare);
}

/* Deletes login-throttle rows older than the window that block nothing: a spray of
 * addresses must not grow the table for ever. A database that is down is PG-DOWN's news;
 * anything else is logged. */
static void purge_throttle(void)
{
    long n = 0;
    int rc = auth_db_throttle_purge(lu.pg, lu.throttle_window_s, &n);

    if (rc == CN_OK && n > 0)
        cn_log(CN_LOG_DEBUG, "AUTH-THROTTLE-PURGE", NULL, "forgot %ld stale login throttle(s)", n);
    else if (rc != CN_OK && rc != CN_EUNAVAIL)
        cn_log_warn("AUTH-THROTTLE-PURGE-FAIL", "cannot purge login throttles (%s: %s)",
                    cn_strerror(rc), cn_pg_errmsg(lu.pg));
}

static void *run(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lu.mu);
    while (!lu.stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += lu.period_ms / 1000;
        until.tv_nsec += (long)(lu.period_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!lu.stop && !lu.early)
            if (pthread_cond_timedwait(&lu.cv, &lu.mu, &until) != 0)
                break; /* the period is over */
        if (lu.stop)
            break;
        pthread_mutex_unlock(&lu.mu);
        flush();
        auth_events_retry();
        purge_throttle();
        pthread_mutex_lock(&lu.mu);
    }
    pthread_mutex_unlock(&lu.mu);
    return NULL;
}

int auth_lastused_start(const char *dsn, int64_t period_s, int64_t throttle_window_s)
{
    struct cn_metric *m;
    pthread_condattr_t attr;

    m = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_key_uses_flushed_total",
                      "API key uses written to last_used_at (one per key per flush)", NULL, NULL,
                      0);
    lu.flushed = cn_metric_series(m, NULL);
    m = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_key_uses_dropped_total",
                      "API key uses not recorded because the in-memory table was full", NULL, NULL,
                      0);
    lu.dropped = cn_metric_series(m, NULL);
    m = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_key_use_flush_failures_total",
                      "Flushes of last_used_at that failed (retried next period)", NULL, NULL, 0);
    lu.flush_failed = cn_metric_series(m, NULL);

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lu.cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&lu.mu);
    table_init(&lu.cur);
    table_init(&lu.spare);
    lu.stop = lu.early = false;
    lu.period_ms = period_s * 1000;
    lu.throttle_window_s = throttle_window_s;
    pthread_mutex_unlock(&lu.mu);
    lu.pg = cn_pg_new(dsn);
    if (pthread_create(&lu.thread, NULL, run, NULL) != 0) {
        cn_log_error("AUTH-LAST-USED-FAIL", "cannot start the housekeeping thread");
        auth_lastused_stop();
        return CN_EIO;
    }
    lu.started = true;
    return CN_OK;
}

void auth_lastused_stop(void)
{
    if (lu.started) {
        pthread_mutex_lock(&lu.mu);
        lu.stop = true;
        pthread_mutex_unlock(&lu.mu);
        pthread_cond_signal(&lu.cv);
        pthread_join(lu.thread, NULL);
        lu.started = false;
        flush(); /* the uses since the last period */
    }
    if (lu.cur.slots == NULL)
        return;
    pthread_mutex_lock(&lu.mu);
    free(lu.cur.slots);
    free(lu.spare.slots);
    memset(&lu.cur, 0, sizeof lu.cur);
    memset(&lu.spare, 0, sizeof lu.spare);
    pthread_mutex_unlock(&lu.mu);
    pthread_cond_destroy(&lu.cv);
    cn_pg_free(lu.pg);
    lu.pg = NULL;
}
