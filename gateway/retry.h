/* retry.h — when the gateway retries an upstream call, how long it waits first, and how
 * many retries a service may get (the retry budget). Pure decisions, no nng and no loop,
 * so each rule is unit-tested on its own (retry_test.c); proxy.c's step_call and
 * on_upstream_done apply them.
 *
 * Only the gateway retries (one layer), and only when it is safe:
 *   - the request provably never reached a service: no connected instance, the send
 *     failed before a pipe took the message, or the service's intake answered without
 *     running a handler (Result.unprocessed: a full queue's RESOURCE_EXHAUSTED, a
 *     draining server's UNAVAILABLE);
 *   - or the request may run twice (the route is idempotent, or the client sent an
 *     Idempotency-Key) and the attempt failed with a lost connection or UNAVAILABLE.
 * A timeout is never retried: the attempt used the time the request had. Anything else a
 * service answered (a 4xx, INTERNAL, a throttled login's RESOURCE_EXHAUSTED) is its
 * answer.
 *
 * Backoff is full jitter (random(0, min(cap, base * 2^n))), stretched to a service's
 * retry_after_ms, and never past the request's deadline. The budget allows, per service,
 * retries up to budget_percent of the requests of the last 10 s, or budget_min_per_s
 * per second, whichever is more (Finagle's RetryBudget), so a failing service sees at
 * most that much extra load instead of a retry storm.
 *
 * To add a retry reason: a GW_RETRY_* value, its name in gw_retry_reason_name(), and the
 * rule in gw_retry_reason().
 */
#ifndef GW_RETRY_H
#define GW_RETRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* How one attempt ended, as far as retrying and outlier detection care. */
enum gw_attempt_end {
    GW_END_RESULT,           /* the service answered a Result (see code, unprocessed) */
    GW_END_NO_INSTANCE,      /* no instance to send to: nothing was sent */
    GW_END_NOT_SENT,         /* failed before any connection took the request */
    GW_END_TIMEOUT,          /* sent; no answer within the attempt's time */
    GW_END_CONN_LOST,        /* sent; the connection dropped before the answer */
};

struct gw_attempt {
    enum gw_attempt_end end;
    int code;                /* Cairn__V1__Code of the Result (GW_END_RESULT) */
    bool unprocessed;        /* Result.unprocessed */
};

enum gw_retry_reason {
    GW_RETRY_NO = -1,        /* do not retry */
    GW_RETRY_NO_INSTANCE,
    GW_RETRY_NOT_SENT,
    GW_RETRY_SHED,           /* RESOURCE_EXHAUSTED from a full queue */
    GW_RETRY_UNAVAILABLE,
    GW_RETRY_CONN_LOST,
    GW_RETRY_NREASONS
};

/* Whether attempt a may be retried, and why (GW_RETRY_NO if not). idempotent: the route
 * is, or the request carries an Idempotency-Key. */
enum gw_retry_reason gw_retry_reason(const struct gw_attempt *a, bool idempotent);
/* The metric label of a reason ("connection_lost"). */
const char *gw_retry_reason_name(enum gw_retry_reason r);
/* Whether a counts against its instance for outlier ejection: transport failures,
 * UNAVAILABLE, a shed RESOURCE_EXHAUSTED; a timeout (ours, or the service's
 * DEADLINE_EXCEEDED) only when the route's own timeout ran out (client_budget false), so
 * a client sending tiny X-Request-Timeout-Ms values cannot eject healthy instances. */
bool gw_attempt_failed(const struct gw_attempt *a, bool client_budget);

/* Full-jitter backoff before retry number n (0 = the first retry): rnd reduced into
 * [0, min(cap_ms, base_ms * 2^n)]. */
int64_t gw_backoff_ms(int n, int64_t base_ms, int64_t cap_ms, uint64_t rnd);
/* The wait before a retry: the backoff, at least retry_after_ms. Returns 0 and *wait_ms,
 * or -1 when the wait plus min_attempt_ms does not fit in left_ms (a retry_after_ms is
 * honoured or the retry dropped; a backoff alone is shortened to fit). */
int gw_retry_wait(int64_t backoff_ms, uint32_t retry_after_ms, int64_t left_ms, int64_t min_attempt_ms,
                  int64_t *wait_ms);

/* Waits come from a fixed set of timer durations per loop (h2o 2.2.5's timeouts each
 * have one duration): every ms below 64, then steps of 1/8 up to 10 minutes. Returns
 * the index of the duration for ms (rounded down, or up when up is true) and sets
 * *bucket_ms to it. */
#define GW_DELAY_BUCKETS 144
int gw_delay_bucket(int64_t ms, bool up, int64_t *bucket_ms);

/* ---- the retry budget of one service ---- */

#define GW_BUDGET_SLOTS 10   /* one per second: a sliding 10 s window */

struct gw_retry_budget {
    pthread_mutex_t mtx;     /* loop threads share a service's budget */
    int64_t sec[GW_BUDGET_SLOTS];
    int64_t requests[GW_BUDGET_SLOTS];
    int64_t retries[GW_BUDGET_SLOTS];
};

void gw_budget_init(struct gw_retry_budget *b);
void gw_budget_fini(struct gw_retry_budget *b);
/* Counts one request (its first attempt) at now_ms. */
void gw_budget_request(struct gw_retry_budget *b, int64_t now_ms);
/* Takes one retry if the window allows it: retries (this one included) <= max(percent
 * of the window's requests, min_per_s * 10). Returns whether it was taken. */
bool gw_budget_take(struct gw_retry_budget *b, int64_t now_ms, int64_t percent, int64_t min_per_s);

#endif
