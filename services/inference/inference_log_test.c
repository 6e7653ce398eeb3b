/* inference_log_test.c — unit tests for the prediction log (inference_log.c): the queue
 * is bounded and a full one drops and counts without blocking, every entry is freed
 * (ASan), the writer batches in order, keeps rows queued while the database is down and
 * writes them when it is back, isolates a row the database refuses, and stop drains
 * within its deadline, streams rows into an open COPY before it commits, and sends a
 * COPY lost midway again whole. The database side is faked through the file's seam; with
 * CAIRN_PG_DSN set (scripts/stack) two cases write real rows to inference.predictions
 * (read back; inserted while their COPY is open), else they skip. Includes the .c to
 * reach the queue.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "inference_log.c"

extern const struct cn_migration inference_migrations[];
extern const unsigned inference_migrations_count;

/* --- helpers --- */

/* What the fake database saw; it runs on the writer thread. A COPY is begin, puts, end. */
static struct {
    pthread_mutex_t mu;
    int entered;     /* ends begun */
    int calls;       /* COPYs over: committed, refused, or failed to begin or send */
    int batches[64]; /* rows of each COPY that committed */
    int nbatches;
    char ids[256][129]; /* request ids committed, in order */
    int nids;
    char pending[256][129]; /* request ids put into the open COPY */
    int npending;
    int puts;         /* puts that succeeded */
    int put_rows;     /* rows those puts sent */
    int unavailable;  /* the next begins fail with CN_EUNAVAIL */
    int put_fail;     /* the next puts fail with CN_EUNAVAIL (the connection is lost) */
    int end_fail;     /* the next ends fail with CN_EUNAVAIL (lost, noticed only at the end) */
    int64_t sleep_ms; /* each end takes this long */
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int fake_begin(struct cn_pg *pg)
{
    int rc = CN_OK;

    (void)pg;
    pthread_mutex_lock(&fake.mu);
    if (fake.unavailable > 0) {
        fake.unavailable--;
        fake.calls++;
        rc = CN_EUNAVAIL;
    }
    fake.npending = 0;
    pthread_mutex_unlock(&fake.mu);
    return rc;
}

static int fake_put(struct cn_pg *pg, struct infer_log_entry *const *rows, size_t n)
{
    int rc = CN_OK;

    (void)pg;
    pthread_mutex_lock(&fake.mu);
    if (fake.put_fail > 0) {
        fake.put_fail--;
        fake.calls++;
        fake.npending = 0;
        rc = CN_EUNAVAIL;
    } else {
        fake.puts++;
        fake.put_rows += (int)n;
        for (size_t i = 0; i < n && fake.npending < 256; i++)
            snprintf(fake.pending[fake.npending++], sizeof fake.pending[0], "%s", rows[i]->request_id);
    }
    pthread_mutex_unlock(&fake.mu);
    return rc;
}

static int fake_end(struct cn_pg *pg)
{
    int rc = CN_OK;

    (void)pg;
    pthread_mutex_lock(&fake.mu);
    fake.entered++;
    pthread_mutex_unlock(&fake.mu);
    if (fake.sleep_ms > 0) {
        struct timespec ts = {fake.sleep_ms / 1000, (long)(fake.sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&fake.mu);
    fake.calls++;
    if (fake.end_fail > 0) {
        fake.end_fail--;
        rc = CN_EUNAVAIL;
        goto out;
    }
    /* The database refuses any COPY with a row named "bad". */
    for (int i = 0; i < fake.npending; i++)
        if (strcmp(fake.pending[i], "bad") == 0) {
            rc = CN_EDB;
            goto out;
        }
    if (fake.nbatches < 64)
        fake.batches[fake.nbatches++] = fake.npending;
    for (int i = 0; i < fake.npending && fake.nids < 256; i++)
        memcpy(fake.ids[fake.nids++], fake.pending[i], sizeof fake.ids[0]);
out:
    fake.npending = 0;
    pthread_mutex_unlock(&fake.mu);
    return rc;
}

/* Reads one of the fake's counters under its lock. */
static int fake_read(const int *counter)
{
    int n;

    pthread_mutex_lock(&fake.mu);
    n = *counter;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

static int fake_ids(void) { return fake_read(&fake.nids); }

/* Waits up to 5 s for one of the fake's counters to reach n, and checks it is n. */
static void wait_count(const int *counter, int n)
{
    for (int i = 0; i < 500 && fake_read(counter) < n; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(fake_read(counter), n);
}

/* The writer has committed n rows / sent n rows into COPYs. */
static void wait_written(int n) { wait_count(&fake.nids, n); }
static void wait_put(int n) { wait_count(&fake.put_rows, n); }

/* A new entry with inputs and predictions, so a leak of either shows under ASan. */
static struct infer_log_entry *entry(const char *id)
{
    struct infer_log_entry *e = infer_log_entry_new();

    snprintf(e->request_id, sizeof e->request_id, "%s", id);
    snprintf(e->model, sizeof e->model, "m");
    snprintf(e->variant, sizeof e->variant, "a");
    e->version = 1;
    infer_log_entry_set(e, (const float[]){1.5f, 2.5f}, 1, 2, (const float[]){0.25f}, 1);
    e->ok = true;
    e->latency_us = 42;
    return e;
}

static size_t queued(void)
{
    size_t n;

    pthread_mutex_lock(&lg.mu);
    n = lg.count;
    pthread_mutex_unlock(&lg.mu);
    return n;
}

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&fake.mu);
    fake.entered = fake.calls = fake.nbatches = fake.nids = fake.unavailable = 0;
    fake.npending = fake.puts = fake.put_rows = fake.put_fail = fake.end_fail = 0;
    fake.sleep_ms = 0;
    pthread_mutex_unlock(&fake.mu);
    sink.begin = fake_begin;
    sink.put = fake_put;
    sink.end = fake_end;
    pthread_once(&metrics_once, metrics_init);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    infer_log_stop(0);
    sink.begin = infer_db_log_begin;
    sink.put = infer_db_log_put;
    sink.end = infer_db_log_end;
    return 0;
}

/* --- cases --- */

static void start_checks_its_arguments(void **state)
{
    (void)state;
    assert_int_equal(infer_log_start(NULL, 10, 10, 10), CN_EINVAL);
    assert_int_equal(infer_log_start("", 0, 10, 10), CN_EINVAL);
    assert_int_equal(infer_log_start("", QUEUE_MAX + 1, 10, 10), CN_EINVAL);
    assert_int_equal(infer_log_start("", 10, 0, 10), CN_EINVAL);
    assert_int_equal(infer_log_start("", 10, BATCH_MAX + 1, 10), CN_EINVAL);
    assert_int_equal(infer_log_start("", 10, 10, 0), CN_EINVAL);
    assert_int_equal(infer_log_start("", 10, 10, 10), CN_OK);
    assert_int_equal(infer_log_start("", 10, 10, 10), CN_EEXIST);
}

static void a_full_queue_drops_and_counts(void **state)
{
    double full = cn_series_value(m.full), stopped = cn_series_value(m.stopped);
    char id[16];

    (void)state;
    /* A writer that will not write during the test: batches of 100 after a minute. */
    assert_int_equal(infer_log_start("", 4, 100, 60000), CN_OK);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_int_equal(infer_log_push(entry(id)), i < 4);
    }
    assert_true(cn_series_value(m.full) == full + 6);
    assert_int_equal(queued(), 4);
    assert_true(cn_series_value(m.queue) == 4);
    assert_false(infer_log_push(NULL));

    /* Stopping without a drain drops (and frees) what is queued. */
    infer_log_stop(0);
    assert_int_equal(fake_ids(), 0);
    assert_true(cn_series_value(m.stopped) == stopped + 4);
    assert_true(cn_series_value(m.queue) == 0);

    /* Not running: dropped too. */
    assert_false(infer_log_push(entry("late")));
    assert_true(cn_series_value(m.stopped) == stopped + 5);
}

static void pushing_never_waits_for_the_database(void **state)
{
    int64_t t0;
    int entered = 0;

    (void)state;
    /* Every insert takes 300 ms; pushes while the writer is inside one must not notice. */
    fake.sleep_ms = 300;
    assert_int_equal(infer_log_start("", 1000, 5, 1), CN_OK);
    infer_log_push(entry("first"));
    for (int i = 0; i < 200 && entered == 0; i++) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&fake.mu);
        entered = fake.entered;
        pthread_mutex_unlock(&fake.mu);
    }
    assert_int_equal(entered, 1);
    t0 = cn_mono_ms();
    for (int i = 0; i < 50; i++)
        assert_true(infer_log_push(entry("x")));
    assert_true(cn_mono_ms() - t0 < 150);
    assert_int_equal(fake_ids(), 0); /* the insert was still going on */
    assert_int_equal(queued(), 51);
}

static void the_writer_batches_in_order(void **state)
{
    double written = cn_series_value(m.written), batches = cn_series_value(m.batch_s);
    char id[16];

    (void)state;
    assert_int_equal(infer_log_start("", 100, 10, 100000), CN_OK);
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_true(infer_log_push(entry(id)));
    }
    /* Two full batches go at once; the partial one waits for its timer or a flush. */
    wait_written(20);
    assert_int_equal(queued(), 5);
    infer_log_flush_now();
    wait_written(25);
    assert_int_equal(fake.nbatches, 3);
    assert_int_equal(fake.batches[0], 10);
    assert_int_equal(fake.batches[1], 10);
    assert_int_equal(fake.batches[2], 5);
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_string_equal(fake.ids[i], id);
    }
    assert_true(cn_series_value(m.written) == written + 25);
    assert_true(cn_series_value(m.batch_s) == batches + 3);
}

static void a_partial_batch_goes_after_flush_ms(void **state)
{
    int64_t t0;

    (void)state;
    assert_int_equal(infer_log_start("", 100, 50, 100), CN_OK);
    t0 = cn_mono_ms();
    infer_log_push(entry("a"));
    infer_log_push(entry("b"));
    wait_written(2);
    assert_true(cn_mono_ms() - t0 < 1000);
    assert_int_equal(fake.nbatches, 1);
    assert_int_equal(fake.batches[0], 2);
}

static void rows_are_sent_before_their_copy_commits(void **state)
{
    int64_t t0;

    (void)state;
    /* Batches of 100, committed only on a flush: what is sent before is streamed. */
    assert_int_equal(infer_log_start("", 100, 100, 100000), CN_OK);
    infer_log_push(entry("a"));
    infer_log_push(entry("b"));
    infer_log_push(entry("c"));
    wait_put(3);
    assert_int_equal(fake_ids(), 0);
    assert_int_equal(queued(), 3);
    /* Rows pushed while the COPY is open follow within a few STREAM_MS, unasked. */
    t0 = cn_mono_ms();
    infer_log_push(entry("d"));
    infer_log_push(entry("e"));
    wait_put(5);
    assert_true(cn_mono_ms() - t0 < 1000);
    assert_int_equal(fake_ids(), 0);
    assert_int_equal(queued(), 5);
    pthread_mutex_lock(&fake.mu);
    assert_true(fake.puts >= 2);
    assert_int_equal(fake.entered, 0);
    pthread_mutex_unlock(&fake.mu);
    infer_log_flush_now();
    wait_written(5);
    assert_int_equal(fake.nbatches, 1);
    assert_int_equal(fake.batches[0], 5);
    assert_string_equal(fake.ids[0], "a");
    assert_string_equal(fake.ids[4], "e");
    assert_int_equal(queued(), 0);
}

static void an_open_copy_commits_within_a_second(void **state)
{
    int64_t t0;

    (void)state;
    /* flush_ms of 100 s: the COPY still commits within COPY_OPEN_MS of opening. */
    assert_int_equal(infer_log_start("", 100, 100, 100000), CN_OK);
    t0 = cn_mono_ms();
    infer_log_push(entry("a"));
    wait_written(1);
    assert_true(cn_mono_ms() - t0 >= COPY_OPEN_MS - 50);
    assert_true(cn_mono_ms() - t0 < COPY_OPEN_MS + 2000);
    assert_int_equal(fake.nbatches, 1);
    assert_int_equal(queued(), 0);
}

static void a_copy_lost_midway_is_sent_again_whole(void **state)
{
    double errors = cn_series_value(m.errors);

    (void)state;
    assert_int_equal(infer_log_start("", 100, 5, 100000), CN_OK);
    infer_log_push(entry("a"));
    infer_log_push(entry("b"));
    infer_log_push(entry("c"));
    wait_put(3);
    /* The connection breaks on the next send: a, b and c were not committed either. */
    pthread_mutex_lock(&fake.mu);
    fake.put_fail = 1;
    pthread_mutex_unlock(&fake.mu);
    infer_log_push(entry("d"));
    infer_log_push(entry("e"));
    wait_written(5); /* after the 100 ms backoff, one COPY of all five fills the batch */
    assert_int_equal(fake.nbatches, 1);
    assert_int_equal(fake.batches[0], 5);
    for (int i = 0; i < 5; i++) {
        char id[2] = {(char)('a' + i), '\0'};
        assert_string_equal(fake.ids[i], id);
    }
    assert_true(cn_series_value(m.errors) == errors + 1);
    assert_int_equal(queued(), 0);
}

static void a_copy_lost_at_its_commit_is_sent_again(void **state)
{
    double errors = cn_series_value(m.errors), written = cn_series_value(m.written);

    (void)state;
    /* libpq may see a lost connection only when the COPY ends: the rows stay queued. */
    pthread_mutex_lock(&fake.mu);
    fake.end_fail = 1;
    pthread_mutex_unlock(&fake.mu);
    assert_int_equal(infer_log_start("", 100, 3, 100000), CN_OK);
    infer_log_push(entry("a"));
    infer_log_push(entry("b"));
    infer_log_push(entry("c"));
    wait_written(3); /* the first COPY of three fails at its end, the one after the backoff commits */
    assert_int_equal(fake.calls, 2);
    assert_int_equal(fake.nbatches, 1);
    assert_int_equal(fake.batches[0], 3);
    assert_string_equal(fake.ids[0], "a");
    assert_string_equal(fake.ids[2], "c");
    assert_true(cn_series_value(m.errors) == errors + 1);
    assert_true(cn_series_value(m.written) == written + 3);
    assert_int_equal(queued(), 0);
}

static void rows_wait_while_the_database_is_down(void **state)
{
    double errors = cn_series_value(m.errors), full = cn_series_value(m.full);

    (void)state;
    fake.unavailable = 2; /* then up: retried after 100 and 200 ms */
    assert_int_equal(infer_log_start("", 3, 10, 1), CN_OK);
    assert_true(infer_log_push(entry("a")));
    assert_true(infer_log_push(entry("b")));
    assert_true(infer_log_push(entry("c")));
    /* Kept up to the cap, the rest dropped. */
    assert_false(infer_log_push(entry("d")));
    assert_true(cn_series_value(m.full) == full + 1);
    wait_written(3);
    assert_int_equal(fake.calls, 3);
    assert_true(cn_series_value(m.errors) == errors + 2);
    assert_string_equal(fake.ids[0], "a");
    assert_string_equal(fake.ids[2], "c");
    assert_int_equal(queued(), 0);
}

static void a_refused_row_costs_only_itself(void **state)
{
    double rejected = cn_series_value(m.rejected), written = cn_series_value(m.written);

    (void)state;
    assert_int_equal(infer_log_start("", 100, 4, 100000), CN_OK);
    infer_log_push(entry("a"));
    infer_log_push(entry("bad"));
    infer_log_push(entry("c"));
    infer_log_push(entry("d"));
    wait_written(3);
    /* One COPY, then a, bad, c, d one by one. */
    assert_int_equal(fake.calls, 5);
    assert_string_equal(fake.ids[0], "a");
    assert_string_equal(fake.ids[1], "c");
    assert_string_equal(fake.ids[2], "d");
    assert_true(cn_series_value(m.rejected) == rejected + 1);
    assert_true(cn_series_value(m.written) == written + 3);
    assert_int_equal(queued(), 0);
}

static void stop_drains_within_its_deadline(void **state)
{
    double stopped = cn_series_value(m.stopped);
    int64_t t0;

    (void)state;
    /* Database up: everything queued is written. */
    assert_int_equal(infer_log_start("", 100, 50, 100000), CN_OK);
    for (int i = 0; i < 7; i++)
        infer_log_push(entry("x"));
    infer_log_stop(2000);
    assert_int_equal(fake_ids(), 7);

    /* Database down for good: stop gives up at the deadline and frees the rest. */
    fake.unavailable = 1000000;
    assert_int_equal(infer_log_start("", 100, 50, 1), CN_OK);
    for (int i = 0; i < 3; i++)
        infer_log_push(entry("y"));
    t0 = cn_mono_ms();
    infer_log_stop(300);
    assert_true(cn_mono_ms() - t0 >= 250);
    assert_true(cn_mono_ms() - t0 < 2000);
    assert_true(cn_series_value(m.stopped) == stopped + 3);
}

/* For the cases against a real PostgreSQL: the DSN with the schema migrated and a fresh
 * request id in rid for this case's rows, or a skip without CAIRN_PG_DSN. */
static const char *db_ready(char *rid, size_t len)
{
    const char *dsn = getenv("CAIRN_PG_DSN");
    uint8_t rnd[8];
    char hex[17];

    if (dsn == NULL || dsn[0] == '\0')
        skip();
    assert_int_equal(
        cn_pg_migrate(dsn, "inference", inference_migrations, inference_migrations_count, 10000),
        CN_OK);
    cn_random_bytes(rnd, sizeof rnd);
    cn_hex(rnd, sizeof rnd, hex);
    snprintf(rid, len, "logtest-%s", hex);
    return dsn;
}

static void rows_reach_postgres(void **state)
{
    struct infer_log_entry *e;
    struct cn_pg *pg;
    PGresult *res = NULL;
    char rid[40];
    const char *p[1] = {rid};
    const char *dsn = db_ready(rid, sizeof rid);

    (void)state;
    sink.begin = infer_db_log_begin;
    sink.put = infer_db_log_put;
    sink.end = infer_db_log_end;

    assert_int_equal(infer_log_start(dsn, 100, 10, 50), CN_OK);
    e = entry(rid);
    e->at_ms = 1700000000123;
    infer_log_push(e);
    e = entry(rid);
    snprintf(e->model, sizeof e->model, "it's \"quoted\"");
    e->ok = false;
    snprintf(e->error, sizeof e->error, "row 0, column 2: not a number");
    free(e->pred);
    e->pred = NULL;
    infer_log_push(e);
    /* Two rows of three features, a missing input and three classes: rows x columns in
     * that order, NULL for NaN. */
    e = entry(rid);
    infer_log_entry_set(e, (const float[]){1, NAN, -0.5f, 3e-8f, 4, 5}, 2, 3,
                        (const float[]){0.1f, 0.2f, 0.7f, 1, 0, 0}, 3);
    infer_log_push(e);
    /* No inputs; three rows of one output each (one dimension), an infinite one kept as
     * such; a time before 2000, where timestamptz counts from. */
    e = entry(rid);
    infer_log_entry_set(e, NULL, 3, 2, (const float[]){0.5f, INFINITY, -1}, 1);
    e->at_ms = 946684799999;
    infer_log_push(e);
    /* Invalid UTF-8 is refused by Postgres: only this row is lost. */
    e = entry(rid);
    snprintf(e->variant, sizeof e->variant, "\xff\xfe");
    infer_log_push(e);
    infer_log_stop(5000);

    pg = cn_pg_new(dsn);
    assert_int_equal(cn_pg_exec(pg,
                                "SELECT model, version, variant, input_values::text, "
                                "coalesce(output_values::text, 'NULL'), latency_us, status, error, "
                                "(extract(epoch FROM at) * 1000)::bigint "
                                "FROM inference.predictions WHERE request_id = $1 ORDER BY id",
                                1, p, &res),
                     CN_OK);
    assert_int_equal(PQntuples(res), 4);
    assert_string_equal(PQgetvalue(res, 0, 0), "m");
    assert_string_equal(PQgetvalue(res, 0, 1), "1");
    assert_string_equal(PQgetvalue(res, 0, 2), "a");
    assert_string_equal(PQgetvalue(res, 0, 3), "{{1.5,2.5}}");
    assert_string_equal(PQgetvalue(res, 0, 4), "{0.25}");
    assert_string_equal(PQgetvalue(res, 0, 5), "42");
    assert_string_equal(PQgetvalue(res, 0, 6), "ok");
    assert_string_equal(PQgetvalue(res, 0, 8), "1700000000123");
    assert_string_equal(PQgetvalue(res, 1, 0), "it's \"quoted\"");
    assert_string_equal(PQgetvalue(res, 1, 4), "NULL");
    assert_string_equal(PQgetvalue(res, 1, 6), "error");
    assert_string_equal(PQgetvalue(res, 1, 7), "row 0, column 2: not a number");
    assert_string_equal(PQgetvalue(res, 2, 3), "{{1,NULL,-0.5},{3e-08,4,5}}");
    assert_string_equal(PQgetvalue(res, 2, 4), "{{0.1,0.2,0.7},{1,0,0}}");
    assert_true(PQgetisnull(res, 3, 3));
    assert_string_equal(PQgetvalue(res, 3, 4), "{0.5,Infinity,-1}");
    assert_string_equal(PQgetvalue(res, 3, 8), "946684799999");
    PQclear(res);
    assert_int_equal(
        cn_pg_exec(pg, "DELETE FROM inference.predictions WHERE request_id = $1", 1, p, NULL),
        CN_OK);
    cn_pg_free(pg);
}

/* The position where the server writes its write-ahead log now, into lsn. */
static void wal_now(struct cn_pg *pg, char *lsn, size_t len)
{
    PGresult *res = NULL;

    assert_int_equal(cn_pg_exec(pg, "SELECT pg_current_wal_insert_lsn()::text", 0, NULL, &res),
                     CN_OK);
    snprintf(lsn, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Bytes of write-ahead log written since lsn. */
static long long wal_since(struct cn_pg *pg, const char *lsn)
{
    PGresult *res = NULL;
    const char *p[1] = {lsn};
    long long n = 0;

    assert_int_equal(
        cn_pg_exec(pg, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint",
                   1, p, &res),
        CN_OK);
    assert_int_equal(cn_parse_int(PQgetvalue(res, 0, 0), 0, INT64_MAX, &n), CN_OK);
    PQclear(res);
    return n;
}

/* PostgreSQL inserts each row as its put arrives, not all at the COPY's end (which is
 * what it does with a plain COPY of fewer than 1 000 rows): the rows' write-ahead log is
 * written while the COPY is still open, seen from another connection. (The table's size
 * would say the same, unless a vacuum had left room in it.) */
static void rows_are_inserted_as_they_are_put(void **state)
{
    enum { ROWS = 20, CELLS = 1000 * 20 };
    struct infer_log_entry *rows[ROWS];
    struct cn_pg *w, *r;
    float *x;
    char rid[40], before[64];
    const char *p[1] = {rid};
    const char *dsn = db_ready(rid, sizeof rid);
    int64_t until;

    (void)state;
    x = cn_malloc(CELLS * sizeof *x);
    for (int i = 0; i < CELLS; i++)
        x[i] = (float)i;
    for (int i = 0; i < ROWS; i++) {
        rows[i] = entry(rid);
        infer_log_entry_set(rows[i], x, 1000, 20, x, 1); /* 80 kB of inputs each */
    }
    w = cn_pg_new(dsn);
    r = cn_pg_new(dsn);
    wal_now(r, before, sizeof before);
    assert_int_equal(infer_db_log_begin(w), CN_OK);
    assert_int_equal(infer_db_log_put(w, rows, ROWS), CN_OK);
    /* 1.6 MB of arrays went out; they are in once half of that is logged. */
    until = cn_mono_ms() + 5000;
    while (wal_since(r, before) < ROWS * CELLS * 4 / 2 && cn_mono_ms() < until)
        usleep(10000);
    assert_true(wal_since(r, before) >= ROWS * CELLS * 4 / 2);
    assert_int_equal(infer_db_log_end(w), CN_OK);
    assert_int_equal(
        cn_pg_exec(r, "DELETE FROM inference.predictions WHERE request_id = $1", 1, p, NULL),
        CN_OK);
    for (int i = 0; i < ROWS; i++)
        infer_log_entry_free(rows[i]);
    free(x);
    cn_pg_free(w);
    cn_pg_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(start_checks_its_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_queue_drops_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(pushing_never_waits_for_the_database, setup, teardown),
        cmocka_unit_test_setup_teardown(the_writer_batches_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(a_partial_batch_goes_after_flush_ms, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_are_sent_before_their_copy_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(an_open_copy_commits_within_a_second, setup, teardown),
        cmocka_unit_test_setup_teardown(a_copy_lost_midway_is_sent_again_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(a_copy_lost_at_its_commit_is_sent_again, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_wait_while_the_database_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(a_refused_row_costs_only_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_drains_within_its_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_reach_postgres, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_are_inserted_as_they_are_put, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
