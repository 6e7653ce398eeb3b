/* pg.h — PostgreSQL access for services: one connection per worker thread, reconnect
 * with backoff, parameterised statements only, and migrations under an advisory lock.
 *
 * A connection that breaks is re-established on the next call, with exponential backoff
 * (50 ms doubling to 5 s) between attempts so a database restart is ridden out; while it
 * is down calls return CN_EUNAVAIL at once and the service answers UNAVAILABLE.
 */
#ifndef CN_PG_H
#define CN_PG_H

#include <libpq-fe.h>

struct cn_migration {
    const char *name;   /* file name, e.g. "001_init.sql"; applied in array order */
    const char *sql;
};

struct cn_pg;

/* Returns a handle for dsn; connects lazily on first use. Never fails. */
struct cn_pg *cn_pg_new(const char *dsn);
void cn_pg_free(struct cn_pg *pg);

/* Runs sql with text parameters ($1..$n; a NULL entry is SQL NULL). On success returns
 * 0 and *out (caller PQclears; may be NULL to discard). CN_EUNAVAIL when the server
 * cannot be reached; CN_EDB when the statement failed (cn_pg_sqlstate says why, e.g.
 * "23505" for a duplicate key). */
int cn_pg_exec(struct cn_pg *pg, const char *sql, int nparams, const char *const *params,
               PGresult **out);
/* cn_pg_exec with some parameters binary (formats[i] = 1, lengths[i] bytes; e.g. bytea). */
int cn_pg_exec_bin(struct cn_pg *pg, const char *sql, int nparams, const char *const *params,
                   const int *lengths, const int *formats, PGresult **out);
/* Runs sql, a COPY ... FROM STDIN, with len bytes of data in its format (e.g. text: one
 * line a row, tab-separated, \N for NULL). Returns 0, CN_EUNAVAIL or CN_EDB as cn_pg_exec
 * (a row the server refuses fails the whole COPY). */
int cn_pg_copy_in(struct cn_pg *pg, const char *sql, const char *data, size_t len);
/* The same COPY streamed over time: cn_pg_copy_begin runs sql; each cn_pg_copy_put sends
 * data to the server at once (it parses rows as they come, committing nothing); and
 * cn_pg_copy_end commits every row put since the begin, or none. Between begin and end
 * the handle is for nothing else. A put or end that fails to send drops the connection
 * (CN_EUNAVAIL); libpq may notice a connection lost after the data left only at the end,
 * which then fails the same way. A refused row fails the end (CN_EDB). An abandoned COPY ends
 * with the connection (cn_pg_free): nothing of it is committed. */
int cn_pg_copy_begin(struct cn_pg *pg, const char *sql);
int cn_pg_copy_put(struct cn_pg *pg, const char *data, size_t len);
int cn_pg_copy_end(struct cn_pg *pg);
/* Convenience: BEGIN / COMMIT / ROLLBACK. */
int cn_pg_begin(struct cn_pg *pg);
int cn_pg_commit(struct cn_pg *pg);
void cn_pg_rollback(struct cn_pg *pg);
/* SQLSTATE and message of the last failed call on this handle ("" if none). */
const char *cn_pg_sqlstate(const struct cn_pg *pg);
const char *cn_pg_errmsg(const struct cn_pg *pg);
/* 1 if the last call reached the server. */
int cn_pg_ok(struct cn_pg *pg);

/* Applies migrations not yet recorded in <schema>.schema_migrations, each in its own
 * transaction, holding a session advisory lock keyed by the schema name so replicas
 * starting together apply each exactly once. Creates the schema if missing. Waits up to
 * wait_ms for the database to come up. Returns 0, CN_EUNAVAIL or CN_EDB (logged). */
int cn_pg_migrate(const char *dsn, const char *schema, const struct cn_migration *m,
                  unsigned n, int wait_ms);

#endif
