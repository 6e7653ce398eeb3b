/* svc.h — the main() skeleton every service shares.
 *
 * A service's main.c is a few lines: it fills a struct cn_svc and returns
 * cn_svc_main(&svc, argc, argv). The skeleton then: reads the common settings and the
 * service's own table (conf.h), answers --help, runs a subcommand if the service has
 * one (`cairn-auth create-admin ...`), applies migrations under the advisory lock,
 * calls init, starts the admin port and the RPC server with one Postgres handle per
 * worker, and on SIGTERM/SIGINT stops taking calls, drains those in flight for at most
 * CAIRN_DRAIN_MS, calls fini and exits 0.
 *
 * Common settings, for a service named "auth" (NAME upper-cased):
 *   CAIRN_AUTH_LISTEN    nng address to serve on (default tcp://127.0.0.1:<rpc_port>)
 *   CAIRN_AUTH_ADMIN     admin HTTP host:port (default 127.0.0.1:<admin_port>)
 *   CAIRN_AUTH_WORKERS   RPC worker threads (default svc->workers, or 4 when that is 0,
 *                        plus svc->workers_per_cpu for each CPU it may run on)
 *   CAIRN_AUTH_QUEUE     calls that may wait for a worker before shedding (default 64)
 *   CAIRN_PG_DSN         PostgreSQL connection string (default host=127.0.0.1 port=5432 dbname=cairn user=cairn)
 *   CAIRN_LOG_LEVEL      debug|info|warn|error (default info)
 *   CAIRN_DRAIN_MS       how long SIGTERM waits for calls in flight (default 10000)
 *   CAIRN_ADMIN_FAULTS   1 = serve /faults on the admin port (fault injection for tests;
 *                        admin.h), default 0
 *   CAIRN_CPUS           CPUs every thread runs on, as taskset -c writes them (cpus.h);
 *                        applied before anything else starts, default: all it may use
 */
#ifndef CN_SVC_H
#define CN_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "conf.h"
#include "pg.h"

struct cn_svc_common {
    const char *listen;
    const char *admin;
    int64_t workers;
    int64_t queue;
    const char *pg_dsn;
    const char *log_level;
    int64_t drain_ms;
    bool admin_faults;
    const char *cpus;
};

/* Per-worker state handed to handlers as call->worker. */
struct cn_svc_worker {
    struct cn_pg *pg;
    void *user;           /* from svc->worker_init, if any */
};

struct cn_svc {
    const char *name;                 /* "auth": binary cairn-auth, schema auth */
    int rpc_port, admin_port;         /* defaults, e.g. 7101 and 9101 */
    int workers;                      /* default worker threads; 0 = 4 */
    int workers_per_cpu;              /* plus this many per CPU it may run on (CAIRN_CPUS) */
    ProtobufCService *service;
    const struct cn_migration *migrations;
    unsigned nmigrations;
    /* The service's own settings (may be NULL/0). */
    const struct cn_conf_def *conf;
    size_t nconf;
    void *conf_values;
    /* Optional subcommands: called when argv[1] is not an option, with argc - 1 and
     * argv + 1 (so argv[0] is the command name); return the exit code, or -1 if the
     * command is unknown. Runs after config and migrations, before init. */
    int (*command)(int argc, char **argv);
    /* Optional start-up work after migrations (e.g. load signing keys); non-zero aborts. */
    int (*init)(void);
    void (*fini)(void);
    /* Optional per-worker state beside the Postgres handle. */
    void *(*worker_init)(int index);
    void (*worker_fini)(void *user);
    /* Largest request accepted, in bytes; 0 = CN_RPC_MAX_MSG_DEFAULT (16 MiB). */
    size_t max_msg;
    /* Methods whose small calls run on the receiving thread (rpc.h inline_methods). */
    const char *const *inline_methods;
    /* Filled by cn_svc_main before init: the common settings. */
    struct cn_svc_common common;
};

int cn_svc_main(struct cn_svc *svc, int argc, char **argv);

/* The worker state of a call (shorthand for handlers). */
#define cn_svc_worker_of(call) ((struct cn_svc_worker *)(call)->worker)

#endif
