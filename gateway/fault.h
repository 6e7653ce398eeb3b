/* fault.h — fault injection at the gateway (the "failure simulation lab").
 *
 * Nothing happens unless the policy file says `faults: {enabled: true}` (config.h). Then:
 *   - the first rule of faults.rules whose groups cover the request's route group
 *     (groups: ["*"] covers every route, grouped or not) may delay it (delay_ms, with
 *     probability delay_percent) and then abort it (abort_status, with probability
 *     abort_percent) instead of calling the service;
 *   - with faults.headers also true, a request may ask for its own fault:
 *     `X-Fault-Delay-Ms: <0..600000>` and `X-Fault-Abort: <400..599>`, each always
 *     applied and overriding the rule's fault of the same kind. A malformed value is a
 *     400 naming the header (a test that typed it wrong must not pass by accident).
 * A delay waits on the event loop (gw_fault_timer: never sleeps the thread) and counts
 * against the request's deadline: proxy.c caps it at the time left and answers 504 when
 * it used all of it. An abort answers its status with the detail "fault injected".
 * Injected faults are counted in cairn_gateway_faults_total{route,kind} and named in the
 * access log ("fault":"delay=100ms", "abort=503" or both).
 */
#ifndef GW_FAULT_H
#define GW_FAULT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define GW_FAULT_MAX_DELAY_MS 600000

/* What to do to one request. */
struct gw_fault {
    int delay_ms;          /* 0 = no delay */
    int abort_status;      /* 0 = no abort */
};

/* Registers the metric; call once at start-up. */
void gw_fault_init(void);

/* Parses header values (NULL = absent). Returns 0, or -1 with *bad set to the name of the
 * malformed header. */
int gw_fault_parse_headers(const char *delay, size_t delay_len, const char *abort_, size_t abort_len,
                           int *delay_ms, int *abort_status, const char **bad);

/* The rules' fault for a request in route group `group` (-1 = none), given two rolls in
 * [0, 100): the delay applies when roll_delay < delay_percent, the abort when
 * roll_abort < abort_percent. */
void gw_fault_from_rules(const struct gw_config *c, int group, double roll_delay, double roll_abort,
                         struct gw_fault *out);

/* The whole decision for one request: nothing unless c enables faults; the rules (with
 * this thread's random rolls); then, when c honours headers, the header values (pass
 * NULL when absent). Returns 0, or -1 with *bad naming a malformed header. */
int gw_fault_decide(const struct gw_config *c, int group, const char *hdr_delay, size_t hdr_delay_len,
                    const char *hdr_abort, size_t hdr_abort_len, struct gw_fault *out, const char **bad);

/* Counts one injected fault: kind "delay" or "abort". */
void gw_fault_count(const char *route, const char *kind);

/* A one-shot timer on an h2o loop with any duration in milliseconds. h2o 2.2.5 timeouts
 * have one fixed duration each (and cannot be disposed from their own callback), so each
 * loop thread keeps a ladder of power-of-two timeouts and a wait hops down it: at most
 * ~20 hops, each re-checking the monotonic clock, so the callback never runs early. */
struct gw_fault_timer {
    h2o_timeout_entry_t entry;   /* must be first */
    int64_t wake_us;             /* cn_mono_us() deadline */
    h2o_loop_t *loop;
    void (*cb)(struct gw_fault_timer *t);
};

/* Starts t (zeroed or stopped) on loop, the calling thread's loop: cb(t) runs on it after
 * ms milliseconds. */
void gw_fault_timer_start(struct gw_fault_timer *t, h2o_loop_t *loop, int64_t ms,
                          void (*cb)(struct gw_fault_timer *t));
/* Cancels t if it is waiting; cb will not run. Safe on a timer never started. */
void gw_fault_timer_stop(struct gw_fault_timer *t);
/* Whether t is waiting. */
bool gw_fault_timer_active(const struct gw_fault_timer *t);

#endif
