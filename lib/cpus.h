/* cpus.h — which CPUs a process runs on. CAIRN_CPUS (a list as taskset -c and
 * /sys/devices/system/cpu/online write it: "0", "2-3", "0,2,4-5") confines every thread
 * of the process to those CPUs, like nginx's worker_cpu_affinity or a Kubernetes static
 * CPU policy. On a small machine that shares its cores between the gateway, services,
 * database and clients, keeping each process on its own core keeps its threads' hand-offs
 * on one CPU (no cross-CPU wake-up) and its caches warm: on the 2-core development VM,
 * gateway and inference each on one core served 9 100-10 000 predictions/s against
 * 5 300-6 200 unconfined (bench/RESULTS.md).
 *
 * Per-CPU thread pools (RPC workers, gateway loop threads, inline calls) are sized by
 * cn_cpu_count(), which counts the CPUs the process may run on, not the machine's.
 */
#ifndef CN_CPUS_H
#define CN_CPUS_H

#include <sched.h>
#include <stddef.h>

/* Parses list into set. 0, or CN_EINVAL with a message naming what is wrong in err. */
int cn_cpus_parse(const char *list, cpu_set_t *set, char *err, size_t errlen);
/* Confines every thread of this process, and those it starts later, to the CPUs of list,
 * each of which must be one the process may run on now. An empty list changes nothing.
 * 0, or CN_EINVAL / CN_EINTERNAL with a message in err. */
int cn_cpus_apply(const char *list, char *err, size_t errlen);
/* How many CPUs this process may run on (at least 1). */
int cn_cpu_count(void);

#endif
