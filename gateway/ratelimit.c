/* ratelimit.c — rate-limit decisions (ratelimit.h): policy selection, the GCRA Lua script
 * run in Redis (all of a request's buckets in one EVALSHA), the local GCRA used while
 * Redis is down, the RateLimit headers, the counters and the shadow log.
 *
 * All Redis keys of the gateway are made here ("rl:" prefix, DESIGN §5). The script is
 * loaded (SCRIPT LOAD) on every new connection before anything else is sent on it, and
 * sent whole (EVAL, which loads it again) if Redis ever answers NOSCRIPT.
 *
 * To add a bucket key kind: enum gw_rl_key (config.h) and its name in config.c, then
 * bucket_key() here. To add an outcome: enum outcome and outcome_names.
 */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <math.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "util.h"

/* KEYS: the request's buckets. ARGV: per bucket T (us), burst, enforced (1/0).
 * Returns {admitted, then per bucket: allowed, remaining, reset_ms, retry_after_ms}. */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local n = #KEYS\n"
    "local out = {0}\n"
    "local tats, nts = {}, {}\n"
    "local ok = 1\n"
    "for i = 1, n do\n"
    "  local T = tonumber(ARGV[3*i-2])\n"
    "  local tol = T * tonumber(ARGV[3*i-1])\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0\n"
    "  if tat < now then tat = now end\n"
    "  local nt = tat + T\n"
    "  tats[i] = tat\n"
    "  if nt - now <= tol then\n"
    "    nts[i] = nt\n"
    "    out[4*i-2] = 1\n"
    "    out[4*i-1] = math.floor((tol - (nt - now)) / T)\n"
    "    out[4*i] = math.ceil((nt - now) / 1000)\n"
    "    out[4*i+1] = 0\n"
    "  else\n"
    "    if ARGV[3*i] == '1' then ok = 0 end\n"
    "    out[4*i-2] = 0\n"
    "    out[4*i-1] = 0\n"
    "    out[4*i] = math.ceil((tat - now) / 1000)\n"
    "    out[4*i+1] = math.ceil((nt - tol - now) / 1000)\n"
    "  end\n"
    "end\n"
    "out[1] = ok\n"
    "for i = 1, n do\n"
    "  if nts[i] then\n"
    "    if ok == 1 then\n"
    "      redis.call('SET', KEYS[i], string.format('%.0f', nts[i]), 'PX', math.ceil((nts[i] - now) / 1000) + 1)\n"
    "    else\n"
    "      local T = tonumber(ARGV[3*i-2])\n"
    "      out[4*i-1] = math.floor((T * tonumber(ARGV[3*i-1]) - (tats[i] - now)) / T)\n"
    "      out[4*i] = math.ceil((tats[i] - now) / 1000)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

static char script_sha[SHA_DIGEST_LENGTH * 2 + 1];
static char redis_host[256];
static int redis_port;
static __thread struct gw_redis *tl_redis;
static __thread int tl_waiting;

enum outcome { ALLOWED, LIMITED, SHADOW_LIMITED, FALLBACK_ALLOWED, FALLBACK_LIMITED, FAILED_OPEN, FAILED_CLOSED, NOUTCOMES };
static const char *const outcome_names[NOUTCOMES] = {"allowed", "limited", "shadow_limited", "fallback_allowed",
                                                     "fallback_limited", "failed_open", "failed_closed"};
/* Which outcome names the request in the access log: the most telling one. */
static const enum outcome precedence[NOUTCOMES] = {LIMITED, FAILED_CLOSED, FALLBACK_LIMITED, SHADOW_LIMITED,
                                                   FAILED_OPEN, FALLBACK_ALLOWED, ALLOWED};
static struct cn_metric *m_decisions;

/* One applying policy's verdict. */
struct verdict {
    const struct gw_rl_policy *p;
    char *key;                  /* bucket key (req->pool) */
    size_t keylen;
    int64_t t_us;               /* emission interval */
    bool known;                 /* remaining/reset are meaningful */
    bool allowed;
    int64_t remaining, reset_ms, retry_ms;
    enum outcome outcome;
};

/* A decision in progress (req->pool, disposed with the request). */
struct pending {
    h2o_req_t *req;
    const struct gw_config *c;
    const char *request_id;
    struct verdict *v;
    size_t n;
    gw_rl_done done;
    void *data;
    struct gw_redis_ticket *ticket;
    bool sent_whole;            /* NOSCRIPT once: the script was sent with EVAL */
    bool quiet;                 /* the caller's quiet: headers only on a refusal */
    int64_t start_us;
};

/* ---- set-up ---- */

static void on_redis_connect(struct gw_redis *r, void *data)
{
    (void)data;
    const char *argv[] = {"SCRIPT", "LOAD", script};
    size_t lens[] = {6, 4, sizeof script - 1};
    gw_redis_command_noreply(r, 3, argv, lens);
}

int gw_ratelimit_init(const char *redis_addr)
{
    if (gw_redis_addr_parse(redis_addr, redis_host, sizeof redis_host, &redis_port) != CN_OK)
        return CN_EINVAL;
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)script, sizeof script - 1, d);
    cn_hex(d, sizeof d, script_sha);
    m_decisions = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_ratelimit_decisions_total",
                                "Rate-limit verdicts, by policy and outcome", "policy,outcome", NULL, 0);
    return CN_OK;
}

void gw_ratelimit_thread_fini(void)
{
    gw_redis_free(tl_redis);
    tl_redis = NULL;
}

int gw_ratelimit_waiting(void) { return tl_waiting; }

static struct gw_redis *thread_redis(h2o_req_t *req, const struct gw_config *c)
{
    if (tl_redis == NULL)
        tl_redis = gw_redis_new(req->conn->ctx->loop, redis_host, redis_port, c->redis_timeout_ms, c->redis_probe_ms,
                                on_redis_connect, NULL);
    else
        gw_redis_set_timing(tl_redis, c->redis_timeout_ms, c->redis_probe_ms);
    return tl_redis;
}

/* ---- counters and the shadow log ---- */

static struct cn_series *series(const struct gw_rl_policy *p, enum outcome o)
{
    struct cn_series **s = __atomic_load_n((struct cn_series ***)&p->stats, __ATOMIC_ACQUIRE);
    if (s == NULL) {
        struct cn_series **mine = cn_calloc(NOUTCOMES, sizeof *mine);
        for (int i = 0; i < NOUTCOMES; i++)
            mine[i] = cn_metric_series(m_decisions, (const char *[]){p->name, outcome_names[i]});
        struct cn_series **expected = NULL;
        /* The config is shared by every loop thread: the first to get here publishes. */
        if (__atomic_compare_exchange_n((struct cn_series ***)&p->stats, &expected, mine, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            s = mine;
        } else {
            free(mine);
            s = expected;
        }
    }
    return s[o];
}

static void shadow_log(const struct verdict *v, const char *request_id)
{
    /* Sampled: one line a second for the process, so a shadow policy that would refuse
     * heavy traffic cannot flood the log (the counter has every one). */
    static _Atomic int64_t last_ms;
    int64_t now = cn_mono_ms(), prev = atomic_load(&last_ms);
    if (now - prev < 1000 || !atomic_compare_exchange_strong(&last_ms, &prev, now))
        return;
    cn_log(CN_LOG_INFO, "GW-RATELIMIT-SHADOW", request_id,
           "shadow policy \"%s\" would have refused this request (bucket %.*s, retry after %lld ms); "
           "admitted (sampled: at most one line a second)",
           v->p->name, (int)v->keylen, v->key, (long long)v->retry_ms);
}

/* ---- which policies apply ---- */

static unsigned caller_tiers(const struct gw_rl_caller *caller)
{
    if (!caller->authenticated)
        return GW_TIER_ANONYMOUS;
    unsigned t = strcmp(caller->role, "admin") == 0 ? GW_TIER_ADMIN : GW_TIER_USER;
    if (caller->key_id[0])
        t |= GW_TIER_KEY;
    return t;
}

static bool policy_applies(const struct gw_rl_policy *p, int group, unsigned tiers, const struct gw_rl_caller *caller)
{
    if (!p->all_groups && (group < 0 || !(p->groups & ((uint64_t)1 << group))))
        return false;
    if (!(p->tiers & tiers))
        return false;
    if ((p->key == GW_RL_KEY_USER && !caller->authenticated) || (p->key == GW_RL_KEY_KEY && !caller->key_id[0]))
        return false;
    if (p->nkey_ids == 0)
        return true;
    for (size_t i = 0; i < p->nkey_ids; i++)
        if (caller->key_id[0] && strcmp(p->key_ids[i], caller->key_id) == 0)
            return true;
    return false;
}

static void bucket_key(h2o_mem_pool_t *pool, struct verdict *v, const char *ip, const struct gw_rl_caller *caller)
{
    static const char *const kinds[] = {"ip", "user", "key", "global"};
    const char *val = v->p->key == GW_RL_KEY_IP     ? ip
                      : v->p->key == GW_RL_KEY_USER ? caller->subject
                      : v->p->key == GW_RL_KEY_KEY  ? caller->key_id
                                                    : NULL;
    size_t len = 3 + strlen(v->p->name) + 1 + strlen(kinds[v->p->key]) + (val ? 1 + strlen(val) : 0);
    v->key = h2o_mem_alloc_pool(pool, len + 1);
    int n = val ? snprintf(v->key, len + 1, "rl:%s:%s:%s", v->p->name, kinds[v->p->key], val)
                : snprintf(v->key, len + 1, "rl:%s:%s", v->p->name, kinds[v->p->key]);
    v->keylen = (size_t)n;
}

/* ---- the local fallback: GCRA in this process ---- */

#define LOCAL_SLOTS 65536
#define LOCAL_PROBE 8

/* Open addressing over a fixed table, so memory is bounded whatever keys clients make:
 * a key takes a free or the most expired slot of its probe window. Keys are kept as a
 * seeded 64-bit hash. */
struct local_slot {
    uint64_t h;
    int64_t tat_us;
};
static struct local_slot *local_table;
static pthread_mutex_t local_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t local_seed;

static uint64_t local_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ local_seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    return h ? h : 1;
}

static struct local_slot *local_find(uint64_t h)
{
    size_t base = (size_t)(h % LOCAL_SLOTS);
    struct local_slot *victim = NULL;
    for (size_t i = 0; i < LOCAL_PROBE; i++) {
        struct local_slot *s = &local_table[(base + i) % LOCAL_SLOTS];
        if (s->h == h)
            return s;
        /* A free slot, else the bucket closest to full (the oldest TAT) gives way. */
        if (victim == NULL || (victim->h != 0 && (s->h == 0 || s->tat_us < victim->tat_us)))
            victim = s;
    }
    victim->h = h;
    victim->tat_us = 0;
    return victim;
}

/* Decides the verdicts vs[] (policies on the local fallback) together, as the script does. */
static void local_decide(const struct gw_config *c, struct verdict **vs, size_t n)
{
    if (n == 0)
        return;
    int64_t now = cn_mono_us();
    int64_t replicas = c->replicas > 0 ? c->replicas : 1;
    pthread_mutex_lock(&local_mu);
    if (local_table == NULL) {
        local_table = cn_calloc(LOCAL_SLOTS, sizeof *local_table);
        cn_random_bytes(&local_seed, sizeof local_seed);
    }
    struct local_slot *slots[n];
    int64_t nts[n];
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        struct verdict *v = vs[i];
        int64_t T = v->t_us * replicas;
        int64_t burst = v->p->burst / replicas > 0 ? v->p->burst / replicas : 1;
        int64_t tol = T * burst;
        slots[i] = local_find(local_hash(v->key, v->keylen));
        int64_t tat = slots[i]->tat_us > now ? slots[i]->tat_us : now;
        int64_t nt = tat + T;
        v->known = true;
        if (nt - now <= tol) {
            v->allowed = true;
            nts[i] = nt;
            v->remaining = (tol - (nt - now)) / T;
            v->reset_ms = (nt - now + 999) / 1000;
            v->retry_ms = 0;
        } else {
            v->allowed = false;
            nts[i] = 0;
            if (!v->p->shadow)
                ok = false;
            v->remaining = 0;
            v->reset_ms = (tat - now + 999) / 1000;
            v->retry_ms = (nt - tol - now + 999) / 1000;
        }
        v->outcome = v->allowed ? FALLBACK_ALLOWED : v->p->shadow ? SHADOW_LIMITED : FALLBACK_LIMITED;
    }
    for (size_t i = 0; i < n; i++)
        if (ok && nts[i])
            slots[i]->tat_us = nts[i];
    pthread_mutex_unlock(&local_mu);
}

/* Redis cannot answer: each policy falls back as its on_redis_down says. */
static void fallback(struct pending *pd)
{
    struct verdict *local[pd->n];
    size_t nlocal = 0;
    for (size_t i = 0; i < pd->n; i++) {
        struct verdict *v = &pd->v[i];
        switch (v->p->on_down) {
        case GW_RL_DOWN_LOCAL:
            local[nlocal++] = v;
            break;
        case GW_RL_DOWN_OPEN:
            v->allowed = true;
            v->known = false;
            v->outcome = FAILED_OPEN;
            break;
        case GW_RL_DOWN_CLOSED:
            v->allowed = v->p->shadow;
            v->known = false;
            v->retry_ms = pd->c->redis_probe_ms;
            v->outcome = v->p->shadow ? SHADOW_LIMITED : FAILED_CLOSED;
            break;
        }
    }
    local_decide(pd->c, local, nlocal);
}

/* ---- the answer ---- */

/* Sets the header, or with held (a quiet check that admitted) keeps its value there. */
static void add_header(h2o_req_t *req, const char *name, size_t namelen, struct cn_buf *b, const char **held)
{
    char *v = h2o_strdup(&req->pool, b->data, b->len).base;
    if (held)
        *held = v;
    else
        h2o_add_header_by_str(&req->pool, &req->res.headers, name, namelen, 0, NULL, v, b->len);
}

void gw_ratelimit_set_headers(h2o_req_t *req, const char *policy_header, const char *limit_header)
{
    if (policy_header)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("ratelimit-policy"), 0, NULL, policy_header,
                              strlen(policy_header));
    if (limit_header)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("ratelimit"), 0, NULL, limit_header,
                              strlen(limit_header));
}

/* Counts, logs, sets the headers and hands the decision to the caller. */
static void finish(struct pending *pd)
{
    h2o_req_t *req = pd->req;
    struct gw_rl_result res = {0};
    const struct verdict *refuser = NULL, *shown = NULL;
    bool seen[NOUTCOMES] = {0};
    struct cn_buf b = {0};
    for (size_t i = 0; i < pd->n; i++) {
        const struct verdict *v = &pd->v[i];
        cn_series_add(series(v->p, v->outcome), 1);
        seen[v->outcome] = true;
        if (v->p->shadow) {
            if (!v->allowed)
                shadow_log(v, pd->request_id);
            continue;
        }
        cn_buf_printf(&b, "%s\"%s\";q=%lld;w=%lld", b.len ? ", " : "", v->p->name, (long long)v->p->limit,
                      (long long)(v->p->window_ms / 1000));
        if (!v->allowed) {
            if (refuser == NULL || v->retry_ms > refuser->retry_ms ||
                (v->outcome == FAILED_CLOSED && refuser->outcome != FAILED_CLOSED))
                refuser = v;
        } else if (v->known && (shown == NULL || v->remaining < shown->remaining ||
                                (v->remaining == shown->remaining && v->reset_ms > shown->reset_ms))) {
            shown = v;
        }
    }
    bool hold = pd->quiet && refuser == NULL;
    if (b.len)
        add_header(req, H2O_STRLIT("ratelimit-policy"), &b, hold ? &res.policy_header : NULL);
    if (refuser && refuser->known)
        shown = refuser;
    if (shown) {
        cn_buf_reset(&b);
        cn_buf_printf(&b, "\"%s\";r=%lld;t=%lld", shown->p->name, (long long)shown->remaining,
                      (long long)((shown->reset_ms + 999) / 1000));
        add_header(req, H2O_STRLIT("ratelimit"), &b, hold ? &res.limit_header : NULL);
    }
    cn_buf_free(&b);
    for (int i = 0; i < NOUTCOMES; i++) {
        if (seen[precedence[i]]) {
            res.outcome = outcome_names[precedence[i]];
            break;
        }
    }
    if (refuser) {
        char detail[256];
        int64_t secs = (refuser->retry_ms + 999) / 1000;
        if (secs < 1)
            secs = 1;
        res.retry_after_ms = refuser->retry_ms;
        if (refuser->outcome == FAILED_CLOSED) {
            res.status = 503;
            snprintf(detail, sizeof detail,
                     "rate limit \"%s\" cannot be checked while its store is unavailable; try again in %lld s",
                     refuser->p->name, (long long)secs);
        } else {
            res.status = 429;
            snprintf(detail, sizeof detail, "rate limit \"%s\" exceeded (%lld requests per %lld s); try again in %lld s",
                     refuser->p->name, (long long)refuser->p->limit, (long long)(refuser->p->window_ms / 1000),
                     (long long)secs);
        }
        res.detail = h2o_strdup(&req->pool, detail, SIZE_MAX).base;
    }
    res.waited_us = pd->start_us ? cn_mono_us() - pd->start_us : 0;
    gw_rl_done done = pd->done;
    pd->done = NULL;
    done(pd->data, &res);
}

/* Reads the script's answer into the verdicts; -1 when it is not what the script returns. */
static int read_reply(struct pending *pd, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 + 4 * pd->n)
        return -1;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return -1;
    for (size_t i = 0; i < pd->n; i++) {
        struct verdict *v = &pd->v[i];
        redisReply **e = &r->element[1 + 4 * i];
        v->known = true;
        v->allowed = e[0]->integer == 1;
        v->remaining = e[1]->integer;
        v->reset_ms = e[2]->integer;
        v->retry_ms = e[3]->integer;
        v->outcome = v->allowed ? ALLOWED : v->p->shadow ? SHADOW_LIMITED : LIMITED;
    }
    return 0;
}

static int send_script(struct pending *pd, bool whole);

static void on_script_reply(void *data, const redisReply *r)
{
    struct pending *pd = data;
    pd->ticket = NULL;
    tl_waiting--;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !pd->sent_whole &&
        send_script(pd, true) == 0)
        return;
    if (r == NULL) {
        fallback(pd);
    } else if (read_reply(pd, r) != 0) {
        cn_log(CN_LOG_WARN, "GW-RATELIMIT-BAD-REPLY", pd->request_id, "unexpected answer from the rate-limit script%s%s",
               r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
        fallback(pd);
    }
    finish(pd);
}

/* EVALSHA (or, whole, EVAL) with every bucket of pd. Returns 0 or CN_EUNAVAIL. */
static int send_script(struct pending *pd, bool whole)
{
    h2o_mem_pool_t *pool = &pd->req->pool;
    size_t argc = 3 + pd->n * 4;
    const char **argv = h2o_mem_alloc_pool(pool, argc * sizeof *argv);
    size_t *lens = h2o_mem_alloc_pool(pool, argc * sizeof *lens);
    argv[0] = whole ? "EVAL" : "EVALSHA";
    argv[1] = whole ? script : script_sha;
    argv[2] = h2o_mem_alloc_pool(pool, 24);
    snprintf((char *)argv[2], 24, "%zu", pd->n);
    for (size_t i = 0; i < pd->n; i++) {
        argv[3 + i] = pd->v[i].key;
        lens[3 + i] = pd->v[i].keylen;
    }
    for (size_t i = 0; i < pd->n; i++) {
        const struct verdict *v = &pd->v[i];
        char *a = h2o_mem_alloc_pool(pool, 64);
        int n1 = snprintf(a, 64, "%lld", (long long)v->t_us);
        int n2 = snprintf(a + n1 + 1, 64 - (size_t)n1 - 1, "%lld", (long long)v->p->burst);
        size_t k = 3 + pd->n + 3 * i;
        argv[k] = a;
        lens[k] = (size_t)n1;
        argv[k + 1] = a + n1 + 1;
        lens[k + 1] = (size_t)n2;
        argv[k + 2] = v->p->shadow ? "0" : "1";
        lens[k + 2] = 1;
    }
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    pd->sent_whole = pd->sent_whole || whole;
    if (gw_redis_command(thread_redis(pd->req, pd->c), (int)argc, argv, lens, on_script_reply, pd, &pd->ticket) !=
        CN_OK)
        return CN_EUNAVAIL;
    tl_waiting++;
    return CN_OK;
}

/* The request is gone while Redis is still deciding: forget it. */
static void on_pending_dispose(void *p)
{
    struct pending *pd = p;
    if (pd->ticket) {
        gw_redis_cancel(pd->ticket);
        pd->ticket = NULL;
        tl_waiting--;
    }
}

/* ---- the client address ---- */

/* Parses one X-Forwarded-For item (spaces trimmed; IPv6 may be bracketed, an IPv4 may
 * carry a :port) into addr. */
static int parse_xff_item(const char *s, size_t n, int *family, unsigned char *addr, char *text, size_t textlen)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char buf[INET6_ADDRSTRLEN + 8];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *a = buf;
    if (a[0] == '[') {
        char *close = strchr(a, ']');
        if (close == NULL)
            return -1;
        *close = '\0';
        a++;
    } else if (strchr(a, '.') && strchr(a, ':')) {
        *strchr(a, ':') = '\0';
    }
    if (inet_pton(AF_INET, a, addr) == 1)
        *family = AF_INET;
    else if (inet_pton(AF_INET6, a, addr) == 1)
        *family = AF_INET6;
    else
        return -1;
    inet_ntop(*family, addr, text, (socklen_t)textlen);
    return 0;
}

/* The client behind a trusted peer: walks X-Forwarded-For (all of its headers, in order)
 * from the right past trusted proxies. out keeps the peer when nothing better is found. */
static void client_from_xff(const struct gw_config *c, const char *xff, size_t len, char *out, size_t outlen)
{
    size_t end = len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        int family;
        unsigned char addr[16];
        char text[INET6_ADDRSTRLEN];
        if (parse_xff_item(xff + start, end - start, &family, addr, text, sizeof text) != 0)
            return;   /* garbage a client wrote: the last trusted hop is the best we know */
        snprintf(out, outlen, "%s", text);
        if (!gw_config_trusted(c, family, addr))
            return;
        end = start ? start - 1 : 0;
    }
}

void gw_ratelimit_client_ip(h2o_req_t *req, const struct gw_config *c, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    out[0] = '\0';
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    const void *addr = NULL;
    if (sl && ss.ss_family == AF_INET)
        addr = &((struct sockaddr_in *)&ss)->sin_addr;
    else if (sl && ss.ss_family == AF_INET6)
        addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (addr == NULL)
        return;
    inet_ntop(ss.ss_family, addr, out, (socklen_t)outlen);
    if (c->ntrusted == 0 || !gw_config_trusted(c, ss.ss_family, addr))
        return;
    struct cn_buf b = {0};
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("x-forwarded-for")) && b.len < 8192) {
            if (b.len)
                cn_buf_putc(&b, ',');
            cn_buf_append(&b, h->value.base, h->value.len);
        }
    }
    if (b.len)
        client_from_xff(c, b.data, b.len, out, outlen);
    cn_buf_free(&b);
}

/* ---- the decision ---- */

void gw_ratelimit_check(h2o_req_t *req, const struct gw_config *c, size_t route_index,
                        const struct gw_rl_caller *caller, const char *request_id, gw_rl_done done, void *data)
{
    struct gw_rl_result none = {0};
    if (c == NULL || c->npolicies == 0) {
        done(data, &none);
        return;
    }
    int group = gw_config_route_group(c, route_index);
    unsigned tiers = caller_tiers(caller);
    bool *on = h2o_mem_alloc_pool(&req->pool, c->npolicies * sizeof *on);
    size_t n = 0;
    for (size_t i = 0; i < c->npolicies; i++)
        on[i] = policy_applies(&c->policies[i], group, tiers, caller);
    for (size_t i = 0; i < c->npolicies; i++)
        if (on[i] && c->policies[i].replaces >= 0)
            on[c->policies[i].replaces] = false;
    for (size_t i = 0; i < c->npolicies; i++)
        n += on[i];
    if (n == 0) {
        done(data, &none);
        return;
    }
    struct pending *pd = h2o_mem_alloc_shared(&req->pool, sizeof *pd, on_pending_dispose);
    memset(pd, 0, sizeof *pd);
    pd->req = req;
    pd->c = c;
    pd->request_id = request_id;
    pd->done = done;
    pd->data = data;
    pd->quiet = caller->quiet;
    pd->v = h2o_mem_alloc_pool(&req->pool, n * sizeof *pd->v);
    memset(pd->v, 0, n * sizeof *pd->v);
    char ip[INET6_ADDRSTRLEN] = "";
    gw_ratelimit_client_ip(req, c, ip, sizeof ip);
    for (size_t i = 0; i < c->npolicies; i++) {
        if (!on[i])
            continue;
        struct verdict *v = &pd->v[pd->n++];
        v->p = &c->policies[i];
        v->t_us = v->p->window_ms * 1000 / v->p->limit;
        bucket_key(&req->pool, v, ip, caller);
    }
    pd->start_us = cn_mono_us();
    if (redis_port == 0 || !gw_redis_usable(thread_redis(req, c)) || send_script(pd, false) != CN_OK) {
        pd->start_us = 0;
        fallback(pd);
        finish(pd);
    }
}
