/* admin.h — the small admin HTTP port every process serves (libevent evhttp, own thread).
 *
 *   GET /healthz  200 "ok" while the process runs (liveness)
 *   GET /readyz   200 "ready" when the ready callback says so, else 503 with its reason
 *   GET /metrics  Prometheus text (cn_metrics_render)
 * and, only after cn_admin_allow_faults (services call it when CAIRN_ADMIN_FAULTS=1, for
 * tests), the RPC server's fault injection (rpc.h, struct cn_rpc_faults):
 *   GET /faults     the current faults as JSON
 *   PUT /faults     {"delay_ms": 200, "delay_percent": 50, "abort_code": "UNAVAILABLE",
 *                    "abort_percent": 100, "methods": ["Login"]}: every key optional; a
 *                    fault without its percentage applies to every call; methods limits
 *                    them to those RPCs (none = all). Replaces the faults; answers them.
 *                    400 {"error"} on an unknown key or a value out of range.
 *   DELETE /faults  clears them.
 * A delay sleeps the worker that runs the call (at most until its deadline), so a slow
 * instance also holds its workers, as a really slow one would.
 * Anything else is 404. Kubernetes probes and Prometheus need no gateway.
 */
#ifndef CN_ADMIN_H
#define CN_ADMIN_H

#include <stddef.h>

/* Returns 1 if ready; otherwise 0 and a short reason in why. */
typedef int (*cn_admin_ready_fn)(void *arg, char *why, size_t whylen);

struct cn_admin;

/* Starts serving on "host:port" (port 0 = any; see cn_admin_port). ready may be NULL
 * (always ready). Returns 0 or CN_EINVAL/CN_EIO. */
int cn_admin_start(struct cn_admin **out, const char *hostport, cn_admin_ready_fn ready, void *arg);
int cn_admin_port(const struct cn_admin *a);
/* Serves /faults from now on (see above). Never call it outside tests and drills: anyone
 * who reaches the admin port could then make the service fail. */
void cn_admin_allow_faults(struct cn_admin *a);
/* Stops the thread and frees. NULL is fine. */
void cn_admin_stop(struct cn_admin *a);

#endif
