/* svc.c — the main() skeleton every service shares (see svc.h): settings, --help,
 * migrations, subcommands, the admin port, the RPC server, and a bounded, graceful stop.
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked before the first thread is made (so
 * every thread inherits the mask and none is picked to run a handler) and the main
 * thread takes them with sigwait. Before that point the process is single-threaded and
 * the default actions apply, so a SIGTERM while waiting for the database just ends it.
 * The drain runs on a helper thread so the main thread can still see a second signal
 * (exit at once) and enforce the overall bound of drain_ms + 1 s.
 *
 * Readiness (/readyz) means: the RPC server is serving and not stopping, and a
 * `SELECT 1` through the admin thread's own Postgres handle succeeds; the database
 * answer is cached for a second so a busy prober cannot load the database.
 *
 * To add a common setting: add a field to struct cn_svc_common, a row in
 * common_table(), and a line to the list in svc.h.
 */
#include "svc.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "cpus.h"
#include "err.h"
#include "log.h"
#include "rpc.h"
#include "util.h"

#define NCOMMON 9
#define READY_CACHE_MS 1000
#define STOP_SLACK_MS 800 /* of the 1 s beyond drain_ms: the rest is for fini */
#define MIGRATE_WAIT_MS 30000

/* Env names and defaults of the common settings, made from the service name. Lives for
 * the process because the conf table points into it. */
struct common_names {
    char listen[64], admin[64], workers[64], queue[64];
    char listen_def[64], admin_def[64], workers_def[16];
    struct cn_conf_def defs[NCOMMON];
};

static struct common_names names;

static struct {
    atomic_bool serving; /* RPC server started and not stopping */
    pthread_mutex_t ready_mu;
    struct cn_pg *ready_pg; /* used only under ready_mu (admin thread) */
    int64_t ready_checked_ms;
    bool ready_db_ok;
    char ready_why[128];
} state = {.ready_mu = PTHREAD_MUTEX_INITIALIZER};

/* Fills names.defs for a service called name ("auth" -> CAIRN_AUTH_LISTEN, ...). */
static void common_table(const struct cn_svc *svc)
{
    char up[32];
    size_t i;

    for (i = 0; svc->name[i] != '\0' && i + 1 < sizeof up; i++) {
        char ch = svc->name[i];
        up[i] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 'a' + 'A') : (ch == '-' ? '_' : ch);
    }
    up[i] = '\0';
    snprintf(names.listen, sizeof names.listen, "CAIRN_%s_LISTEN", up);
    snprintf(names.admin, sizeof names.admin, "CAIRN_%s_ADMIN", up);
    snprintf(names.workers, sizeof names.workers, "CAIRN_%s_WORKERS", up);
    snprintf(names.queue, sizeof names.queue, "CAIRN_%s_QUEUE", up);
    snprintf(names.listen_def, sizeof names.listen_def, "tcp://127.0.0.1:%d", svc->rpc_port);
    snprintf(names.admin_def, sizeof names.admin_def, "127.0.0.1:%d", svc->admin_port);
    snprintf(names.workers_def, sizeof names.workers_def, "%d",
             (svc->workers > 0 ? svc->workers : 4) + svc->workers_per_cpu * cn_cpu_count());

    struct cn_conf_def defs[NCOMMON] = {
        CN_CONF(struct cn_svc_common, listen, names.listen, CN_CONF_STR, names.listen_def, 0, 0,
                "nng address to serve RPCs on"),
        CN_CONF(struct cn_svc_common, admin, names.admin, CN_CONF_STR, names.admin_def, 0, 0,
                "admin HTTP host:port (/healthz, /readyz, /metrics)"),
        CN_CONF(struct cn_svc_common, workers, names.workers, CN_CONF_INT, names.workers_def, 1,
                256, "RPC worker threads (each has its own Postgres connection)"),
        CN_CONF(struct cn_svc_common, queue, names.queue, CN_CONF_INT, "64", 0, 100000,
                "calls that may wait for a worker before new ones are shed"),
        CN_CONF(struct cn_svc_common, pg_dsn, "CAIRN_PG_DSN", CN_CONF_SECRET,
                "host=127.0.0.1 port=5432 dbname=cairn user=cairn", 0, 0,
                "PostgreSQL connection string, key=value or URI (default host=127.0.0.1 "
                "port=5432 dbname=cairn user=cairn)"),
        CN_CONF(struct cn_svc_common, log_level, "CAIRN_LOG_LEVEL", CN_CONF_STR, "info", 0, 0,
                "debug|info|warn|error"),
        CN_CONF(struct cn_svc_common, drain_ms, "CAIRN_DRAIN_MS", CN_CONF_INT, "10000", 0, 600000,
                "how long SIGTERM waits for calls in flight, in ms"),
        CN_CONF(struct cn_svc_common, admin_faults, "CAIRN_ADMIN_FAULTS", CN_CONF_BOOL, "0", 0, 0,
                "serve PUT/GET/DELETE /faults on the admin port (fault injection, for tests only)"),
        CN_CONF(struct cn_svc_common, cpus, "CAIRN_CPUS", CN_CONF_STR, "", 0, 0,
                "CPUs every thread runs on, as taskset -c writes them (\"1\", \"2-3\"); "
                "default: all the process may use"),
    };
    memcpy(names.defs, defs, sizeof defs);
}

static void print_help(const struct cn_svc *svc, const char *prog)
{
    size_t n = NCOMMON + svc->nconf;
    struct cn_conf_def *all = cn_calloc(n, sizeof *all);

    /* One table for --help: offsets are not used when printing, so the common rows and
     * the service's rows can share it. */
    memcpy(all, names.defs, sizeof names.defs);
    if (svc->nconf > 0)
        memcpy(all + NCOMMON, svc->conf, svc->nconf * sizeof *all);
    printf("usage: %s [--help]%s\n\n", prog, svc->command ? " [command args...]" : "");
    cn_conf_help(stdout, prog, all, n);
    fflush(stdout);
    free(all);
}

/* /readyz: serving, and the database answers. Runs on the admin thread. */
static int on_ready(void *arg, char *why, size_t whylen)
{
    int64_t now;
    bool ok;

    (void)arg;
    if (!atomic_load(&state.serving)) {
        snprintf(why, whylen, "not serving RPCs (starting or stopping)");
        return 0;
    }
    pthread_mutex_lock(&state.ready_mu);
    now = cn_mono_ms();
    if (state.ready_checked_ms == 0 || now - state.ready_checked_ms >= READY_CACHE_MS) {
        PGresult *res = NULL;
        int rc = cn_pg_exec(state.ready_pg, "SELECT 1", 0, NULL, &res);
        PQclear(res);
        state.ready_db_ok = rc == CN_OK;
        if (rc != CN_OK)
            snprintf(state.ready_why, sizeof state.ready_why, "database unavailable");
        state.ready_checked_ms = cn_mono_ms();
    }
    ok = state.ready_db_ok;
    if (!ok)
        snprintf(why, whylen, "%s", state.ready_why);
    pthread_mutex_unlock(&state.ready_mu);
    return ok ? 1 : 0;
}

/* Runs on each RPC worker thread: its own Postgres handle plus the service's state. */
static void *on_worker_init(int index, void *arg)
{
    struct cn_svc *svc = arg;
    struct cn_svc_worker *w = cn_calloc(1, sizeof *w);

    w->pg = cn_pg_new(svc->common.pg_dsn);
    w->user = svc->worker_init ? svc->worker_init(index) : NULL;
    return w;
}

static void on_worker_fini(void *worker, void *arg)
{
    struct cn_svc *svc = arg;
    struct cn_svc_worker *w = worker;

    if (w == NULL)
        return;
    if (svc->worker_fini)
        svc->worker_fini(w->user);
    cn_pg_free(w->pg);
    free(w);
}

/* The drain, on its own thread so the main thread keeps listening for signals. */
struct stopper {
    struct cn_rpc_server *server;
    int drain_ms;
    int cut;
    atomic_bool done;
    pthread_t main_thread;
};

static void *stopper_run(void *arg)
{
    struct stopper *st = arg;

    st->cut = cn_rpc_server_stop(st->server, st->drain_ms);
    atomic_store(&st->done, true);
    /* Wakes the main thread's sigtimedwait; SIGUSR1 is blocked everywhere. */
    pthread_kill(st->main_thread, SIGUSR1);
    return NULL;
}

/* Loads both settings tables; 0, or prints why to stderr and returns 2. */
static int load_settings(struct cn_svc *svc, const char *prog)
{
    char err[256];
    enum cn_log_level level;

    if (cn_conf_load(names.defs, NCOMMON, &svc->common, err, sizeof err) != CN_OK ||
        (svc->nconf > 0 &&
         cn_conf_load(svc->conf, svc->nconf, svc->conf_values, err, sizeof err) != CN_OK)) {
        fprintf(stderr, "%s: %s (see %s --help)\n", prog, err, prog);
        return 2;
    }
    if (cn_log_level_parse(svc->common.log_level, &level) != CN_OK) {
        fprintf(stderr, "%s: CAIRN_LOG_LEVEL: expected debug, info, warn or error\n", prog);
        return 2;
    }
    cn_log_init(svc->name, level);
    return 0;
}

/* Waits for the drain to finish, a second signal, or the overall bound. Returns the
 * number of calls cut off, or does not return (second signal, or the drain overran). */
static int wait_drain(struct stopper *st, const sigset_t *set)
{
    int64_t deadline = cn_mono_ms() + st->drain_ms + STOP_SLACK_MS;

    while (!atomic_load(&st->done)) {
        int64_t left = deadline - cn_mono_ms();
        struct timespec ts;
        int sig;

        if (left <= 0) {
            cn_log_error("SVC-STOP-TIMEOUT", "the drain did not finish in time; exiting now");
            _exit(1);
        }
        ts.tv_sec = left / 1000;
        ts.tv_nsec = (long)(left % 1000) * 1000000L;
        sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            cn_log_warn("SVC-STOP-FORCED", "second signal during the drain; exiting now");
            _exit(1);
        }
    }
    return st->cut;
}

int cn_svc_main(struct cn_svc *svc, int argc, char **argv)
{
    char prog[64];
    const char *cmd = NULL;
    struct cn_admin *admin = NULL;
    struct cn_rpc_server *server = NULL;
    struct stopper st;
    pthread_t stopper_thread;
    sigset_t set;
    int rc, sig, cut;

    snprintf(prog, sizeof prog, "cairn-%s", svc->name);
    cn_log_init(svc->name, CN_LOG_INFO);
    bool help = argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
    /* Before anything starts a thread, and before the per-CPU defaults are counted. The
     * table below lists it for --help and the settings dump; --help answers whatever it
     * says (with the defaults of the CPUs the process has). */
    char cpus_err[256];
    if (cn_cpus_apply(getenv("CAIRN_CPUS"), cpus_err, sizeof cpus_err) != CN_OK && !help) {
        fprintf(stderr, "%s: CAIRN_CPUS: %s\n", prog, cpus_err);
        return 2;
    }
    common_table(svc);

    if (argc > 1) {
        if (help) {
            print_help(svc, prog);
            return 0;
        }
        if (argv[1][0] == '-') {
            fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", prog, argv[1], prog);
            return 2;
        }
        if (svc->command == NULL) {
            fprintf(stderr, "%s: takes no command, got '%s' (see %s --help)\n", prog, argv[1],
                    prog);
            return 2;
        }
        cmd = argv[1];
    }

    rc = load_settings(svc, prog);
    if (rc != 0)
        return rc;
    cn_conf_dump(prog, names.defs, NCOMMON, &svc->common);
    if (svc->nconf > 0)
        cn_conf_dump(prog, svc->conf, svc->nconf, svc->conf_values);

    if (cn_pg_migrate(svc->common.pg_dsn, svc->name, svc->migrations, svc->nmigrations,
                      MIGRATE_WAIT_MS) != CN_OK)
        return 1; /* logged by cn_pg_migrate */

    if (cmd != NULL) {
        rc = svc->command(argc - 1, argv + 1);
        if (rc == -1) {
            fprintf(stderr, "%s: unknown command '%s' (see %s --help)\n", prog, cmd, prog);
            return 2;
        }
        return rc;
    }

    /* From here on threads exist (init may make some): block the stop signals first so
     * every thread inherits the mask and only sigwait below sees them. SIGUSR1 is the
     * drain thread's "done". A peer that closes a socket must not kill us. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (svc->init != NULL && svc->init() != 0) {
        cn_log_error("SVC-INIT-FAIL", "start-up failed; exiting");
        return 1;
    }

    state.ready_pg = cn_pg_new(svc->common.pg_dsn);
    if (cn_admin_start(&admin, svc->common.admin, on_ready, NULL) != CN_OK) {
        cn_log_error("SVC-ADMIN-FAIL", "cannot serve the admin port on %s", svc->common.admin);
        rc = 1;
        goto fail;
    }
    if (svc->common.admin_faults) {
        cn_admin_allow_faults(admin);
        cn_log_warn("SVC-ADMIN-FAULTS", "fault injection is open on the admin port %s (CAIRN_ADMIN_FAULTS)",
                    svc->common.admin);
    }

    struct cn_rpc_server_opts opts = {
        .listen = svc->common.listen,
        .service = svc->service,
        .workers = (int)svc->common.workers,
        .queue = (int)svc->common.queue,
        .max_msg = svc->max_msg,
        .inline_methods = svc->inline_methods,
        .worker_init = on_worker_init,
        .worker_fini = on_worker_fini,
        .arg = svc,
        .name = svc->name,
    };
    rc = cn_rpc_server_start(&server, &opts);
    if (rc != CN_OK) {
        cn_log_error("SVC-LISTEN-FAIL", "cannot serve RPCs on %s: %s", svc->common.listen,
                     cn_strerror(rc));
        rc = 1;
        goto fail;
    }
    atomic_store(&state.serving, true);
    cn_log_info("SVC-STARTED", "serving RPCs on %s with %d workers, admin on %s",
                svc->common.listen, (int)svc->common.workers, svc->common.admin);

    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP)
            cn_log_info("SVC-SIGHUP", "SIGHUP ignored: settings are read at start-up only");
    }

    cn_log_info("SVC-STOPPING", "signal %d: draining calls in flight for up to %lld ms", sig,
                (long long)svc->common.drain_ms);
    atomic_store(&state.serving, false);
    memset(&st, 0, sizeof st);
    st.server = server;
    st.drain_ms = (int)svc->common.drain_ms;
    st.main_thread = pthread_self();
    atomic_init(&st.done, false);
    if (pthread_create(&stopper_thread, NULL, stopper_run, &st) != 0) {
        /* No thread: drain here, giving up the second-signal escape. */
        cut = cn_rpc_server_stop(server, st.drain_ms);
    } else {
        cut = wait_drain(&st, &set);
        pthread_join(stopper_thread, NULL);
    }
    server = NULL;

    if (cut > 0) {
        /* Those calls still run on worker threads that use the service's state: fini
         * would free it under them, and exit() would run library destructors under them.
         * Leave at once instead; the process is going away anyway. */
        cn_log_warn("SVC-STOPPED", "%d call(s) still running were cut off by the drain limit", cut);
        _exit(0);
    }
    if (svc->fini != NULL)
        svc->fini();
    cn_admin_stop(admin);
    cn_pg_free(state.ready_pg);
    state.ready_pg = NULL;
    cn_log_info("SVC-STOPPED", "stopped cleanly; no call was cut off");
    return 0;

fail:
    cn_admin_stop(admin);
    if (svc->fini != NULL)
        svc->fini();
    cn_pg_free(state.ready_pg);
    state.ready_pg = NULL;
    return rc;
}
