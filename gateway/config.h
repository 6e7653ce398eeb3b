/* config.h — the gateway's policy file (CAIRN_GATEWAY_CONFIG): rate limits, retries,
 * outlier ejection, load shedding and fault injection. YAML, read with libyaml (its marks
 * give every error a file:line and key path). Environment variables (main.c) stay for what
 * a deployment sets once (ports, addresses, TLS); this file holds the policies an operator
 * tunes, reloaded on SIGHUP without a restart.
 *
 * A config is immutable once loaded and reference-counted: a request takes the current
 * one when it starts (gw_config_get) and keeps it to the end (gw_config_put), so a reload
 * never changes the rules under a request in flight. gw_config_reload() parses the file,
 * and only if it is entirely valid swaps it in; an invalid file keeps the old config and
 * logs why (GW-CONFIG-REJECTED), the same message start-up would have failed with.
 *
 * The file (every section optional; what is left out takes the defaults shown):
 *
 *   replicas: 1                 # gateways sharing Redis; the local fallback admits limit/replicas
 *   trusted_proxies: []         # CIDRs whose X-Forwarded-For is believed, e.g. [10.0.0.0/8]
 *   redis:
 *     timeout_ms: 5             # a rate-limit decision waits at most this for Redis
 *     probe_ms: 1000            # while Redis is down: one probe per period, no calls
 *   route_groups:               # name -> routes; a route is in the first group that matches
 *     predict: ["POST /v1/models/{name}:predict", "/v2*"]
 *     auth: ["/v1/auth*"]       # "[METHOD ]PATH", PATH a route template or a prefix ending in *
 *   rate_limits:                # (name and limit required; groups and tiers default to all)
 *     - name: anon-ip           # ^[a-z0-9][a-z0-9_-]*$, unique; shown in RateLimit headers
 *       groups: ["*"]           # route groups it covers ("*" = every route)
 *       tiers: [anonymous]      # anonymous | user | admin | key (caller used an API key)
 *       key: ip                 # ip | user | key | global: whose bucket
 *       limit: 100              # requests per window (quota)
 *       window_s: 60
 *       burst: 100              # requests admitted at once (GCRA tolerance); default limit
 *       mode: enforce           # enforce | shadow (counted and logged, never refused)
 *       on_redis_down: local    # local | open | closed
 *       key_ids: []             # only for requests made with these API key ids
 *       replaces: ""            # for matching requests, this policy stands in for another
 *   retries:
 *     max_attempts: 3           # first try included
 *     base_ms: 25               # full-jitter backoff: random(0, min(cap, base * 2^n))
 *     cap_ms: 250
 *     budget_percent: 20        # retries <= this share of requests per service (10 s window)
 *     budget_min_per_s: 3       # ... or this many per second, whichever is more
 *   outlier:
 *     consecutive_failures: 5   # failures or timeouts in a row that eject an instance
 *     base_ejection_s: 30       # first ejection; doubles each time, back to base once healthy
 *     max_ejection_s: 300
 *     max_ejected_percent: 50   # never more of a service's instances at once
 *   shedding:
 *     max_outstanding: 256      # calls in flight per instance before it counts as saturated
 *   faults:
 *     enabled: false            # nothing below applies unless true
 *     headers: false            # honour X-Fault-Delay-Ms / X-Fault-Abort on requests
 *     rules:
 *       - groups: [predict]
 *         delay_ms: 100
 *         delay_percent: 10
 *         abort_status: 503
 *         abort_percent: 5
 *
 * Unknown keys are errors (a typo must not silently disable a limit).
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_route;

enum gw_tier { GW_TIER_ANONYMOUS = 1u << 0, GW_TIER_USER = 1u << 1, GW_TIER_ADMIN = 1u << 2, GW_TIER_KEY = 1u << 3 };
enum gw_rl_key { GW_RL_KEY_IP, GW_RL_KEY_USER, GW_RL_KEY_KEY, GW_RL_KEY_GLOBAL };
enum gw_rl_down { GW_RL_DOWN_LOCAL, GW_RL_DOWN_OPEN, GW_RL_DOWN_CLOSED };

struct gw_cidr {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

struct gw_rl_policy {
    char name[64];
    bool all_groups;            /* groups: ["*"] */
    uint64_t groups;            /* bit i = route group i */
    unsigned tiers;             /* GW_TIER_* bits */
    enum gw_rl_key key;
    int64_t limit;              /* requests per window */
    int64_t window_ms;
    int64_t burst;              /* >= 1 */
    bool shadow;
    enum gw_rl_down on_down;
    char **key_ids;             /* empty = any caller */
    size_t nkey_ids;
    int replaces;               /* index of the policy this one stands in for, -1 = none */
    void *stats;                /* ratelimit.c's counters for it, made on first use; freed with the config */
};

struct gw_fault_rule {
    bool all_groups;
    uint64_t groups;
    int delay_ms;
    double delay_percent;       /* 0..100 */
    int abort_status;           /* 400..599, 0 = none */
    double abort_percent;
};

struct gw_config {
    char *path;                 /* the file it came from ("" = built-in defaults) */
    int64_t replicas;
    struct gw_cidr *trusted;
    size_t ntrusted;
    int64_t redis_timeout_ms;
    int64_t redis_probe_ms;

    char **group_names;         /* at most 64 groups */
    size_t ngroups;
    int *route_group;           /* per gw_routes[] index: its group, -1 = none */

    struct gw_rl_policy *policies;
    size_t npolicies;

    int64_t retry_max_attempts;
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    int64_t retry_budget_percent;
    int64_t retry_budget_min_per_s;

    int64_t outlier_failures;
    int64_t outlier_base_s;
    int64_t outlier_max_s;
    int64_t outlier_max_percent;

    int64_t shed_max_outstanding;

    bool faults_enabled;
    bool fault_headers;
    struct gw_fault_rule *faults;
    size_t nfaults;

    _Atomic int refs;
};

/* Parses the YAML file at path (NULL or "" = the built-in defaults: no rate limits, no
 * faults, the retry/outlier/shedding defaults above). Returns 0 and a config with one
 * reference, or CN_EINVAL with err "FILE:LINE: KEY.PATH: what is wrong" (CN_EIO when
 * the file cannot be read). */
int gw_config_load(const char *path, struct gw_config **out, char *err, size_t errlen);
/* Parses len bytes of YAML text (name is used in messages). Same results. */
int gw_config_parse(const char *name, const char *text, size_t len, struct gw_config **out, char *err,
                    size_t errlen);
void gw_config_put(struct gw_config *c);

/* The process-wide current config. gw_config_set takes the caller's reference. */
void gw_config_set(struct gw_config *c);
/* A new reference to the current config (never NULL once set). */
struct gw_config *gw_config_get(void);
/* Re-reads the current config's file; swaps it in only when valid. Returns 0 or the
 * load error (the old config stays). Logs either way. */
int gw_config_reload(void);

/* The route group of route index i in c, -1 = none. */
static inline int gw_config_route_group(const struct gw_config *c, size_t route_index)
{
    return c->route_group ? c->route_group[route_index] : -1;
}
/* Whether addr (AF_INET/AF_INET6 bytes) is in one of the trusted proxy CIDRs. */
bool gw_config_trusted(const struct gw_config *c, int family, const void *addr);

#endif
