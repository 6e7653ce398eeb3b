/* pg.c — PostgreSQL access for services (see pg.h): one handle per worker thread that
 * connects lazily, rides out a database restart with backoff, runs parameterised
 * statements, and applies a service's embedded migrations under an advisory lock.
 *
 * A handle is owned by one thread and takes no locks. Its state machine is small: no
 * connection -> (attempt allowed by the backoff clock) -> connected -> (the connection
 * breaks) -> no connection. A connection the server closed while idle (a restart, an
 * idle timeout) is noticed before anything is sent and replaced on the spot, so a quick
 * database restart costs no failed calls. A connection that breaks during a call fails
 * that call (the statement is not re-run: it may have committed) and one new connection
 * is tried at once. Every failed attempt doubles the wait before the next one (50 ms to
 * 5 s); a success resets it. While waiting, calls fail at once with CN_EUNAVAIL.
 *
 * "Is the database down" is one process-wide fact, logged once per transition: PG-DOWN
 * when a handle cannot connect while the process thought the database was up, PG-UP
 * when a handle connects again. Dead connections that reconnect at once are not a
 * transition, so a restart seen by N workers does not log N times.
 *
 * To add a convenience statement, add it beside cn_pg_begin and keep it parameterised.
 */
#include "pg.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "util.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000

/* The process-wide view, for PG-DOWN/PG-UP (see the top of the file). */
static atomic_bool db_down;

struct cn_pg {
    char *dsn;
    PGconn *conn;
    int64_t next_try_ms; /* monotonic; no connection attempt before this */
    int backoff_ms;      /* wait imposed by the next failed attempt */
    bool reached;        /* the last call reached the server */
    char sqlstate[6];
    char errmsg[256];
};

/* Copies msg into the handle's error as one line: libpq's messages end in a newline and
 * connection failures add an indented hint line. */
static void set_error(struct cn_pg *pg, const char *sqlstate, const char *msg)
{
    size_t n;

    snprintf(pg->sqlstate, sizeof pg->sqlstate, "%s", sqlstate ? sqlstate : "");
    snprintf(pg->errmsg, sizeof pg->errmsg, "%s", msg ? msg : "");
    for (char *p = pg->errmsg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    n = strlen(pg->errmsg);
    while (n > 0 && pg->errmsg[n - 1] == ' ')
        pg->errmsg[--n] = '\0';
}

static void clear_error(struct cn_pg *pg)
{
    pg->sqlstate[0] = '\0';
    pg->errmsg[0] = '\0';
}

/* Server notices ("schema already exists, skipping") would go to stderr as bare text;
 * they become log lines instead: warnings as warn, the rest as debug. */
static void on_notice(void *arg, const char *msg)
{
    int len = (int)strcspn(msg, "\n");

    (void)arg;
    if (strncmp(msg, "WARNING", 7) == 0)
        cn_log_warn("PG-NOTICE", "%.*s", len, msg);
    else
        cn_log(CN_LOG_DEBUG, "PG-NOTICE", NULL, "%.*s", len, msg);
}

/* Opens a connection with Cairn's defaults placed before the DSN, so a DSN that sets
 * connect_timeout (or the others) itself wins: libpq lets later entries override earlier
 * ones, and expand_dbname=1 unpacks the DSN (key=value or URI) in place. */
static PGconn *connect_dsn(const char *dsn)
{
    const char *keys[] = {"connect_timeout", "client_encoding", "fallback_application_name",
                          "dbname", NULL};
    const char *vals[] = {"3", "UTF8", program_invocation_short_name, dsn, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (c != NULL)
        PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

static void mark_down(const struct cn_pg *pg)
{
    if (!atomic_exchange(&db_down, true))
        cn_log_warn("PG-DOWN", "database unreachable: %s", pg->errmsg);
}

static void mark_up(void)
{
    if (atomic_exchange(&db_down, false))
        cn_log_info("PG-UP", "database reachable again");
}

/* Makes sure pg->conn is usable: 0, or CN_EUNAVAIL (with the reason recorded) when the
 * backoff forbids an attempt now or the attempt failed. */
static int ensure_conn(struct cn_pg *pg)
{
    int64_t now;

    if (pg->conn != NULL)
        return CN_OK;
    now = cn_mono_ms();
    if (now < pg->next_try_ms) {
        /* Keep the reason of the failed attempt: it says more than "backing off". */
        if (pg->errmsg[0] == '\0')
            set_error(pg, "", "database unavailable");
        pg->sqlstate[0] = '\0';
        return CN_EUNAVAIL;
    }
    pg->conn = connect_dsn(pg->dsn);
    if (pg->conn == NULL || PQstatus(pg->conn) != CONNECTION_OK) {
        set_error(pg, "", pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
        PQfinish(pg->conn);
        pg->conn = NULL;
        pg->next_try_ms = now + pg->backoff_ms;
        pg->backoff_ms = pg->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pg->backoff_ms * 2;
        mark_down(pg);
        return CN_EUNAVAIL;
    }
    pg->backoff_ms = BACKOFF_MIN_MS;
    pg->next_try_ms = 0;
    mark_up();
    return CN_OK;
}

/* Drops a connection that broke and tries a new one at once (not re-running anything),
 * so only a database that is really gone counts as down. Keeps the original error. */
static void drop(struct cn_pg *pg)
{
    char state[sizeof pg->sqlstate], msg[sizeof pg->errmsg];

    memcpy(state, pg->sqlstate, sizeof state);
    memcpy(msg, pg->errmsg, sizeof msg);
    PQfinish(pg->conn);
    pg->conn = NULL;
    pg->next_try_ms = 0;
    if (ensure_conn(pg) == CN_OK) {
        memcpy(pg->sqlstate, state, sizeof state);
        memcpy(pg->errmsg, msg, sizeof msg);
    }
}

/* True when an idle connection was closed by the server (a restart, an idle timeout):
 * the server's goodbye is already in the socket, so we can tell before sending anything
 * and reconnect without failing a call. Inside a transaction nothing is checked: losing
 * the connection there must fail the caller. */
static bool went_away(PGconn *c)
{
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};

    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return false;
    /* The goodbye is an error message and then end-of-file: a few reads at most. */
    for (int i = 0; i < 4 && poll(&p, 1, 0) == 1; i++)
        if (PQconsumeInput(c) == 0 || PQstatus(c) == CONNECTION_BAD)
            return true;
    return false;
}

/* SQLSTATEs that mean the server is going away or not there yet, though libpq may still
 * think the socket is fine: admin_shutdown, crash_shutdown, cannot_connect_now. */
static bool sqlstate_is_down(const char *s)
{
    return strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0 ||
           strncmp(s, "08", 2) == 0;
}

struct cn_pg *cn_pg_new(const char *dsn)
{
    struct cn_pg *pg = cn_calloc(1, sizeof *pg);
    pg->dsn = cn_strdup(dsn ? dsn : "");
    pg->backoff_ms = BACKOFF_MIN_MS;
    return pg;
}

void cn_pg_free(struct cn_pg *pg)
{
    if (pg == NULL)
        return;
    PQfinish(pg->conn);
    free(pg->dsn);
    free(pg);
}

int cn_pg_exec(struct cn_pg *pg, const char *sql, int nparams, const char *const *params,
               PGresult **out)
{
    return cn_pg_exec_bin(pg, sql, nparams, params, NULL, NULL, out);
}

static int call_start(struct cn_pg *pg);
static int call_failed(struct cn_pg *pg, PGresult *res);

int cn_pg_exec_bin(struct cn_pg *pg, const char *sql, int nparams, const char *const *params,
                   const int *lengths, const int *formats, PGresult **out)
{
    PGresult *res;
    ExecStatusType st;
    int rc;

    if (out != NULL)
        *out = NULL;
    if ((rc = call_start(pg)) != CN_OK)
        return rc;

    res = PQexecParams(pg->conn, sql, nparams, NULL, params, lengths, formats, 0);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        pg->reached = true;
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return CN_OK;
    }
    return call_failed(pg, res);
}

int cn_pg_copy_begin(struct cn_pg *pg, const char *sql)
{
    PGresult *res;
    int rc;

    if ((rc = call_start(pg)) != CN_OK)
        return rc;
    res = PQexec(pg->conn, sql);
    if (res == NULL || PQresultStatus(res) != PGRES_COPY_IN)
        return call_failed(pg, res);
    PQclear(res);
    return CN_OK;
}

/* A send that fails leaves the connection mid-COPY: it cannot be used again. */
static int copy_broken(struct cn_pg *pg)
{
    set_error(pg, NULL, PQerrorMessage(pg->conn));
    drop(pg);
    return CN_EUNAVAIL;
}

int cn_pg_copy_put(struct cn_pg *pg, const char *data, size_t len)
{
    if (pg->conn == NULL)
        return CN_EUNAVAIL;
    /* In pieces: PQputCopyData takes an int length. */
    for (size_t off = 0; off < len; off += 1u << 20) {
        size_t n = len - off < (1u << 20) ? len - off : (1u << 20);
        if (PQputCopyData(pg->conn, data + off, (int)n) != 1)
            return copy_broken(pg);
    }
    /* libpq holds back up to 8 KiB; a streamed COPY wants the server to have it now. */
    if (PQflush(pg->conn) != 0)
        return copy_broken(pg);
    return CN_OK;
}

int cn_pg_copy_end(struct cn_pg *pg)
{
    if (pg->conn == NULL)
        return CN_EUNAVAIL;
    if (PQputCopyEnd(pg->conn, NULL) != 1)
        return copy_broken(pg);
    PGresult *res = PQgetResult(pg->conn), *more;
    while ((more = PQgetResult(pg->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(more);
        PQclear(more);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            set_error(pg, NULL, "the server stayed in COPY");
            drop(pg);
            return CN_EUNAVAIL;
        }
    }
    if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        pg->reached = true;
        return CN_OK;
    }
    return call_failed(pg, res);
}

int cn_pg_copy_in(struct cn_pg *pg, const char *sql, const char *data, size_t len)
{
    int rc = cn_pg_copy_begin(pg, sql);
    if (rc == CN_OK)
        rc = cn_pg_copy_put(pg, data, len);
    if (rc == CN_OK)
        rc = cn_pg_copy_end(pg);
    return rc;
}

/* Before a call: a connection that went away is dropped, one is made (or CN_EUNAVAIL
 * during the backoff), and the last error cleared. */
static int call_start(struct cn_pg *pg)
{
    pg->reached = false;
    if (pg->conn != NULL && went_away(pg->conn)) {
        PQfinish(pg->conn);
        pg->conn = NULL;
        pg->next_try_ms = 0;
    }
    int rc = ensure_conn(pg);
    if (rc != CN_OK)
        return rc;
    clear_error(pg);
    return CN_OK;
}

/* A call that did not succeed (res may be NULL): records why, takes res, and answers
 * CN_EUNAVAIL when the server is gone or going (the connection is dropped), else CN_EDB. */
static int call_failed(struct cn_pg *pg, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    /* The primary message only: DETAIL lines can quote row values. */
    if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
        set_error(pg, state, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    else
        set_error(pg, state, PQerrorMessage(pg->conn));
    PQclear(res);

    if (PQstatus(pg->conn) == CONNECTION_BAD || sqlstate_is_down(pg->sqlstate)) {
        drop(pg);
        return CN_EUNAVAIL;
    }
    pg->reached = true;
    return CN_EDB;
}

int cn_pg_begin(struct cn_pg *pg)
{
    /* A transaction left open by an earlier call on this worker would swallow this one
     * and keep its row locks: end it first, and say so, since it is a bug upstream. */
    if (pg->conn != NULL && PQtransactionStatus(pg->conn) != PQTRANS_IDLE) {
        cn_log_warn("PG-TXN-LEAK", "a transaction was left open; rolling it back");
        cn_pg_rollback(pg);
    }
    return cn_pg_exec(pg, "BEGIN", 0, NULL, NULL);
}

int cn_pg_commit(struct cn_pg *pg) { return cn_pg_exec(pg, "COMMIT", 0, NULL, NULL); }

void cn_pg_rollback(struct cn_pg *pg)
{
    PGresult *res;

    /* Keeps the error of the statement that made the caller roll back: callers look at
     * cn_pg_sqlstate after rolling back. */
    if (pg->conn == NULL || PQtransactionStatus(pg->conn) == PQTRANS_IDLE)
        return;
    res = PQexec(pg->conn, "ROLLBACK");
    PQclear(res);
    if (PQstatus(pg->conn) == CONNECTION_BAD)
        drop(pg);
}

const char *cn_pg_sqlstate(const struct cn_pg *pg) { return pg->sqlstate; }

const char *cn_pg_errmsg(const struct cn_pg *pg) { return pg->errmsg; }

int cn_pg_ok(struct cn_pg *pg) { return pg->reached ? 1 : 0; }

/* --- migrations --- */

/* A schema name we create and splice into SQL: lowercase letters and underscores only,
 * so quoting it is enough and no input ever reaches it. */
static bool schema_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            return false;
    return true;
}

/* Runs one statement on the migration connection. Returns 0 (with *out if asked),
 * CN_EUNAVAIL when the connection is gone, or CN_EDB; failures are logged with what. */
static int mig_exec(PGconn *c, const char *what, const char *sql, int n, const char *const *params,
                    PGresult **out)
{
    PGresult *res;
    ExecStatusType st;

    if (out != NULL)
        *out = NULL;
    res = n < 0 ? PQexec(c, sql) : PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return CN_OK;
    }
    {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
        int len = (int)strlen(msg);
        while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
            len--;
        cn_log_error("PG-MIGRATE-FAIL", "%s failed (sqlstate %s): %.*s", what,
                     state ? state : "none", len, msg);
    }
    PQclear(res);
    return PQstatus(c) == CONNECTION_BAD ? CN_EUNAVAIL : CN_EDB;
}

/* Connects for migrations, retrying until wait_ms has passed. NULL when it never came up
 * (logged). */
static PGconn *mig_connect(const char *dsn, int wait_ms)
{
    int64_t deadline = cn_mono_ms() + (wait_ms > 0 ? wait_ms : 0);
    int delay_ms = BACKOFF_MIN_MS;
    bool told = false;

    for (;;) {
        PGconn *c = connect_dsn(dsn);
        const char *why;
        int64_t left;

        if (c != NULL && PQstatus(c) == CONNECTION_OK)
            return c;
        why = c ? PQerrorMessage(c) : "out of memory";
        left = deadline - cn_mono_ms();
        if (left <= 0) {
            cn_log_error("PG-MIGRATE-FAIL", "database unavailable after %d ms: %.*s", wait_ms,
                         (int)strcspn(why, "\n"), why);
            PQfinish(c);
            return NULL;
        }
        if (!told) {
            cn_log_warn("PG-WAIT", "waiting up to %d ms for the database: %.*s", wait_ms,
                        (int)strcspn(why, "\n"), why);
            told = true;
        }
        PQfinish(c);
        {
            int64_t d = delay_ms < left ? delay_ms : left;
            struct timespec ts = {d / 1000, (long)(d % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
    }
}

static bool applied_has(PGresult *applied, const char *name)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (strcmp(PQgetvalue(applied, i, 0), name) == 0)
            return true;
    return false;
}

/* Applies one migration in its own transaction, recording it in the same transaction so
 * a crash leaves it either fully applied and recorded or neither. */
static int mig_apply(PGconn *c, const char *qschema, const struct cn_migration *m)
{
    char sql[256];
    const char *params[1] = {m->name};
    int rc;

    rc = mig_exec(c, "BEGIN", "BEGIN", 0, NULL, NULL);
    if (rc != CN_OK)
        return rc;
    snprintf(sql, sizeof sql, "SET LOCAL search_path TO %s", qschema);
    rc = mig_exec(c, "set search_path", sql, 0, NULL, NULL);
    if (rc == CN_OK)
        rc = mig_exec(c, m->name, m->sql, -1, NULL, NULL);
    if (rc == CN_OK) {
        snprintf(sql, sizeof sql, "INSERT INTO %s.schema_migrations(name) VALUES ($1)", qschema);
        rc = mig_exec(c, "record migration", sql, 1, params, NULL);
    }
    if (rc == CN_OK)
        rc = mig_exec(c, "COMMIT", "COMMIT", 0, NULL, NULL);
    if (rc != CN_OK) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    cn_log_info("PG-MIGRATED", "applied migration %s", m->name);
    return CN_OK;
}

int cn_pg_migrate(const char *dsn, const char *schema, const struct cn_migration *m, unsigned n,
                  int wait_ms)
{
    const char *params[1] = {schema};
    char qschema[80], sql[256];
    PGconn *c = NULL;
    PGresult *applied = NULL;
    bool locked = false;
    unsigned done = 0;
    int rc;

    if (!schema_valid(schema)) {
        cn_log_error("PG-MIGRATE-FAIL", "bad schema name (want [a-z_]+)");
        return CN_EINVAL;
    }
    snprintf(qschema, sizeof qschema, "\"%s\"", schema);

    c = mig_connect(dsn, wait_ms);
    if (c == NULL)
        return CN_EUNAVAIL;
    /* Keyed by the schema name: replicas of one service wait for each other, other
     * services migrate in parallel. The lock is on this session only; closing the
     * connection releases it even if we crash half-way. */
    rc = mig_exec(c, "advisory lock", "SELECT pg_advisory_lock(hashtext($1))", 1, params, NULL);
    if (rc != CN_OK)
        goto out;
    locked = true;

    snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", qschema);
    rc = mig_exec(c, "create schema", sql, 0, NULL, NULL);
    if (rc != CN_OK)
        goto out;
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations("
             "name text PRIMARY KEY, applied_at timestamptz DEFAULT now())",
             qschema);
    rc = mig_exec(c, "create schema_migrations", sql, 0, NULL, NULL);
    if (rc != CN_OK)
        goto out;
    snprintf(sql, sizeof sql, "SELECT name FROM %s.schema_migrations", qschema);
    rc = mig_exec(c, "list migrations", sql, 0, NULL, &applied);
    if (rc != CN_OK)
        goto out;

    for (unsigned i = 0; i < n; i++) {
        if (applied_has(applied, m[i].name))
            continue;
        rc = mig_apply(c, qschema, &m[i]);
        if (rc != CN_OK)
            goto out;
        done++;
    }
    cn_log_info("PG-MIGRATE-DONE", "schema %s: %u migration(s) applied, %u known", schema, done, n);

out:
    PQclear(applied);
    if (locked && PQstatus(c) == CONNECTION_OK)
        PQclear(PQexecParams(c, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, params, NULL,
                             NULL, 0));
    PQfinish(c);
    return rc;
}
