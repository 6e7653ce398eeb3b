/* admin.h — the small admin HTTP port every process serves (libevent evhttp, own thread).
 *
 *   GET /healthz  200 "ok" while the process runs (liveness)
 *   GET /readyz   200 "ready" when the ready callback says so, else 503 with its reason
 *   GET /metrics  Prometheus text (cn_metrics_render)
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
/* Stops the thread and frees. NULL is fine. */
void cn_admin_stop(struct cn_admin *a);

#endif
