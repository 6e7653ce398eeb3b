/* ratelimit.h — the rate-limit decision for one request: which of the policy file's
 * policies apply, GCRA in Redis (one Lua script, one round trip, all of the request's
 * buckets decided atomically against Redis's clock), the local fallback while Redis is
 * down or slow, the IETF RateLimit headers and the counters.
 *
 * The algorithm (GCRA, "generic cell rate algorithm"), per policy and bucket:
 *   T   = window_ms / limit, the emission interval (microseconds, rounded down)
 *   tau = T * burst, the tolerance
 *   TAT = the bucket's theoretical arrival time, stored in Redis (absent = now)
 * A request at `now` is admitted iff max(TAT, now) + T - now <= tau, and then
 * TAT := max(TAT, now) + T. So an idle bucket admits `burst` requests at once, then one
 * per T: `limit` per window on average. Reported per bucket:
 *   remaining   requests admitted now if sent at once: floor((tau - (TAT - now)) / T)
 *   reset       when the bucket is full again: TAT - now (RateLimit's t, in seconds)
 *   retry_after for a refused request: the wait until it would be admitted
 * A request's buckets are decided together: it is admitted only if every enforced policy
 * admits it, and only then does any bucket advance (a refused request costs nothing).
 * Shadow policies are computed, counted and logged but never refuse.
 *
 * Which policies apply: the route's group is in the policy's groups (or groups is "*");
 * the caller's tiers meet its tiers (anonymous: no credentials, a public route, refused
 * credentials, or an API key before auth has resolved it (proxy.c); user
 * or admin by the caller's role; a caller with an API key is `key` as well as its owner's
 * role tier); the caller's key id is in key_ids (when set); and the caller has the
 * policy's bucket key (`user` needs a caller, `key` an API key). A policy that applies
 * and `replaces` another one switches that one off for the request.
 * Buckets: "rl:<policy>:ip:<client ip>", "rl:<policy>:user:<subject>",
 * "rl:<policy>:key:<key id>", "rl:<policy>:global"; each expires when it is full again.
 * The client IP is the peer's address, or, when the peer is in trusted_proxies, the
 * right-most address of X-Forwarded-For that is not a trusted proxy.
 *
 * Redis down or slower than redis.timeout_ms (redis.h): each policy decides by its
 * on_redis_down: local = the same GCRA in this process with limit / replicas (and
 * burst / replicas, at least 1); open = admitted; closed = refused with 503.
 *
 * Headers on every response of a request some enforced policy applied to:
 *   RateLimit-Policy: "<name>";q=<limit>;w=<window_s>, one item per enforced policy
 *   RateLimit: "<name>";r=<remaining>;t=<reset_s> for the most restrictive (fewest
 *              remaining; on a 429 the policy that refused, latest retry first)
 * A 429 also has Retry-After (seconds, rounded up).
 * Counter: cairn_gateway_ratelimit_decisions_total{policy,outcome}, outcome one of
 * allowed, limited, shadow_limited, fallback_allowed, fallback_limited, failed_open,
 * failed_closed.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct gw_rl_caller {
    bool authenticated;
    const char *subject;        /* "" when anonymous */
    const char *role;           /* "" when anonymous */
    const char *key_id;         /* "" unless an API key was used */
    bool quiet;                 /* no RateLimit headers unless refused, but handed back in
                                 * the result: a pre-check whose admitted request may be
                                 * checked again as its caller */
};

struct gw_rl_result {
    int status;                 /* 0 = go on; 429 limited; 503 Redis down and on_redis_down closed */
    int64_t retry_after_ms;     /* with status */
    const char *detail;         /* with status: says which policy and when to come back (req->pool) */
    const char *outcome;        /* for the access log (static); NULL = no policy applied */
    int64_t waited_us;          /* time spent waiting for Redis */
    /* With caller->quiet and no refusal: the RateLimit-Policy and RateLimit values that
     * were not set (req->pool; NULL = none), for the caller to set if the request ends
     * without a second check (gw_ratelimit_set_headers). */
    const char *policy_header, *limit_header;
};

/* Sets the headers a quiet check held back (res->policy_header, res->limit_header). */
void gw_ratelimit_set_headers(h2o_req_t *req, const char *policy_header, const char *limit_header);

/* Called once with the decision (result borrowed for the call). */
typedef void (*gw_rl_done)(void *data, const struct gw_rl_result *res);

/* Checks redis_addr ("host:port") and remembers it. Returns 0 or CN_EINVAL. */
int gw_ratelimit_init(const char *redis_addr);
/* Frees this loop thread's Redis connection (call when the loop ends). */
void gw_ratelimit_thread_fini(void);
/* Requests of this thread waiting for Redis (a draining loop waits for them). */
int gw_ratelimit_waiting(void);

/* Decides req (route route_index, config c, which req must keep until it ends) and adds
 * the RateLimit headers to req->res.headers. Calls done exactly once: before returning,
 * or later from this loop when Redis answers; never if the request is disposed first. */
void gw_ratelimit_check(h2o_req_t *req, const struct gw_config *c, size_t route_index,
                        const struct gw_rl_caller *caller, const char *request_id, gw_rl_done done, void *data);

/* The client address of req under c's trusted proxies, as text into out. */
void gw_ratelimit_client_ip(h2o_req_t *req, const struct gw_config *c, char *out, size_t outlen);

#endif
