/* retry.c — the retry rules, full-jitter backoff, the loop timer durations and the
 * per-service retry budget (retry.h).
 */
#include "retry.h"

#include <pthread.h>
#include <string.h>

#include "cairn/v1/rpc.pb-c.h"

enum gw_retry_reason gw_retry_reason(const struct gw_attempt *a, bool idempotent)
{
    switch (a->end) {
    case GW_END_NO_INSTANCE:
        return GW_RETRY_NO_INSTANCE;
    case GW_END_NOT_SENT:
        return GW_RETRY_NOT_SENT;
    case GW_END_TIMEOUT:
        return GW_RETRY_NO;
    case GW_END_CONN_LOST:
        return idempotent ? GW_RETRY_CONN_LOST : GW_RETRY_NO;
    case GW_END_RESULT:
        break;
    }
    if (a->code == CAIRN__V1__CODE__RESOURCE_EXHAUSTED)
        /* Only the intake's shedding: a handler's RESOURCE_EXHAUSTED (a throttled
         * login, a quota) is the answer, whichever instance gives it. */
        return a->unprocessed ? GW_RETRY_SHED : GW_RETRY_NO;
    if (a->code == CAIRN__V1__CODE__UNAVAILABLE)
        return a->unprocessed || idempotent ? GW_RETRY_UNAVAILABLE : GW_RETRY_NO;
    return GW_RETRY_NO;
}

const char *gw_retry_reason_name(enum gw_retry_reason r)
{
    static const char *const names[GW_RETRY_NREASONS] = {"no_instance", "not_sent", "shed", "unavailable",
                                                         "connection_lost"};
    return r >= 0 && r < GW_RETRY_NREASONS ? names[r] : "none";
}

bool gw_attempt_failed(const struct gw_attempt *a, bool client_budget)
{
    switch (a->end) {
    case GW_END_NO_INSTANCE:
        return false;
    case GW_END_NOT_SENT:
    case GW_END_CONN_LOST:
        return true;
    case GW_END_TIMEOUT:
        return !client_budget;
    case GW_END_RESULT:
        break;
    }
    /* A service's DEADLINE_EXCEEDED is a timeout it noticed first. */
    return a->code == CAIRN__V1__CODE__UNAVAILABLE ||
           (a->code == CAIRN__V1__CODE__RESOURCE_EXHAUSTED && a->unprocessed) ||
           (a->code == CAIRN__V1__CODE__DEADLINE_EXCEEDED && !client_budget);
}

int64_t gw_backoff_ms(int n, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
    if (base_ms <= 0 || cap_ms <= 0)
        return 0;
    int64_t ceiling = base_ms;
    for (int i = 0; i < n && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return (int64_t)(rnd % (uint64_t)(ceiling + 1));
}

int gw_retry_wait(int64_t backoff_ms, uint32_t retry_after_ms, int64_t left_ms, int64_t min_attempt_ms,
                  int64_t *wait_ms)
{
    int64_t room = left_ms - min_attempt_ms;
    if (room < 0 || (int64_t)retry_after_ms > room)
        return -1;
    int64_t w = backoff_ms > (int64_t)retry_after_ms ? backoff_ms : (int64_t)retry_after_ms;
    *wait_ms = w < room ? w : room;
    return 0;
}

/* ---- timer durations ---- */

static int64_t buckets[GW_DELAY_BUCKETS];
static int nbuckets;
static pthread_once_t buckets_once = PTHREAD_ONCE_INIT;

static void buckets_init(void)
{
    for (int i = 0; i < GW_DELAY_BUCKETS; i++) {
        buckets[i] = i < 64 ? i : buckets[i - 1] + (buckets[i - 1] / 8 > 1 ? buckets[i - 1] / 8 : 1);
        nbuckets = i + 1;
        if (buckets[i] >= 600000)
            break;
    }
}

int gw_delay_bucket(int64_t ms, bool up, int64_t *bucket_ms)
{
    pthread_once(&buckets_once, buckets_init);
    if (ms < 0)
        ms = 0;
    int lo = 0, hi = nbuckets - 1;
    if (ms >= buckets[hi]) {
        *bucket_ms = buckets[hi];
        return hi;
    }
    /* the largest bucket <= ms */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (buckets[mid] <= ms)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (up && buckets[lo] < ms)
        lo++;
    *bucket_ms = buckets[lo];
    return lo;
}

/* ---- budget ---- */

void gw_budget_init(struct gw_retry_budget *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mtx, NULL);
}

void gw_budget_fini(struct gw_retry_budget *b) { pthread_mutex_destroy(&b->mtx); }

/* The slot of second s, cleared when it last held an older second. Under b->mtx. */
static int slot_of(struct gw_retry_budget *b, int64_t s)
{
    int i = (int)(s % GW_BUDGET_SLOTS);
    if (b->sec[i] != s) {
        b->sec[i] = s;
        b->requests[i] = 0;
        b->retries[i] = 0;
    }
    return i;
}

void gw_budget_request(struct gw_retry_budget *b, int64_t now_ms)
{
    pthread_mutex_lock(&b->mtx);
    b->requests[slot_of(b, now_ms / 1000)]++;
    pthread_mutex_unlock(&b->mtx);
}

bool gw_budget_take(struct gw_retry_budget *b, int64_t now_ms, int64_t percent, int64_t min_per_s)
{
    int64_t s = now_ms / 1000;
    pthread_mutex_lock(&b->mtx);
    int cur = slot_of(b, s);
    int64_t requests = 0, retries = 0;
    for (int i = 0; i < GW_BUDGET_SLOTS; i++) {
        if (b->sec[i] > s - GW_BUDGET_SLOTS && b->sec[i] <= s) {
            requests += b->requests[i];
            retries += b->retries[i];
        }
    }
    int64_t allowed = requests * percent / 100;
    if (allowed < min_per_s * GW_BUDGET_SLOTS)
        allowed = min_per_s * GW_BUDGET_SLOTS;
    bool ok = retries + 1 <= allowed;
    if (ok)
        b->retries[cur]++;
    pthread_mutex_unlock(&b->mtx);
    return ok;
}
