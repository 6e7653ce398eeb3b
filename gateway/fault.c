/* fault.c — fault injection decisions (config rules, X-Fault-* headers), the loop timer
 * an injected delay waits on, and the fault counter. See fault.h; proxy.c's step_fault
 * applies the decision. To add a fault kind: a field in struct gw_fault (and in
 * gw_fault_rule, config.h), its header or rule here, and its effect in step_fault.
 */
#include "fault.h"

#include <string.h>

#include "metrics.h"
#include "util.h"

static struct cn_metric *m_faults;

void gw_fault_init(void)
{
    m_faults = cn_metric_new(CN_METRIC_COUNTER, "cairn_gateway_faults_total",
                             "Faults injected by the gateway, by route template and kind (delay, abort)",
                             "route,kind", NULL, 0);
}

void gw_fault_count(const char *route, const char *kind)
{
    cn_series_add(cn_metric_series(m_faults, (const char *[]){route, kind}), 1);
}

/* ---- decisions ---- */

/* A decimal integer in [min, max], digits only, at most 9 of them. */
static int parse_bounded(const char *s, size_t n, int min, int max, int *out)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int gw_fault_parse_headers(const char *delay, size_t delay_len, const char *abort_, size_t abort_len,
                           int *delay_ms, int *abort_status, const char **bad)
{
    if (delay && parse_bounded(delay, delay_len, 0, GW_FAULT_MAX_DELAY_MS, delay_ms) != 0) {
        *bad = "X-Fault-Delay-Ms";
        return -1;
    }
    if (abort_ && parse_bounded(abort_, abort_len, 400, 599, abort_status) != 0) {
        *bad = "X-Fault-Abort";
        return -1;
    }
    return 0;
}

void gw_fault_from_rules(const struct gw_config *c, int group, double roll_delay, double roll_abort,
                         struct gw_fault *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < c->nfaults; i++) {
        const struct gw_fault_rule *r = &c->faults[i];
        if (!r->all_groups && (group < 0 || group >= 64 || !(r->groups & ((uint64_t)1 << group))))
            continue;
        if (r->delay_ms > 0 && roll_delay < r->delay_percent)
            out->delay_ms = r->delay_ms;
        if (r->abort_status && roll_abort < r->abort_percent)
            out->abort_status = r->abort_status;
        return; /* the first rule that covers the group decides */
    }
}

/* A roll in [0, 100): percentages need no cryptographic randomness. */
static double roll(void) { return cn_fast_unit() * 100.0; }

int gw_fault_decide(const struct gw_config *c, int group, const char *hdr_delay, size_t hdr_delay_len,
                    const char *hdr_abort, size_t hdr_abort_len, struct gw_fault *out, const char **bad)
{
    memset(out, 0, sizeof *out);
    if (c == NULL || !c->faults_enabled)
        return 0;
    if (c->nfaults)
        gw_fault_from_rules(c, group, roll(), roll(), out);
    if (!c->fault_headers)
        return 0;
    int delay = -1, status = -1;
    if (gw_fault_parse_headers(hdr_delay, hdr_delay_len, hdr_abort, hdr_abort_len, &delay, &status, bad) != 0)
        return -1;
    if (hdr_delay)
        out->delay_ms = delay;
    if (hdr_abort)
        out->abort_status = status;
    return 0;
}

/* ---- the delay timer ---- */

#define LADDER 20 /* 1 ms .. 2^19 ms (~8.7 min) >= GW_FAULT_MAX_DELAY_MS / 2 */

static __thread h2o_timeout_t ladder[LADDER];
static __thread h2o_loop_t *ladder_loop;

static void timer_arm(struct gw_fault_timer *t);

static void on_hop(h2o_timeout_entry_t *entry)
{
    struct gw_fault_timer *t = (struct gw_fault_timer *)entry;
    if (cn_mono_us() >= t->wake_us) {
        t->cb(t);
        return;
    }
    timer_arm(t);
}

/* Links t on the largest rung not past its wake time (1 ms at least). */
static void timer_arm(struct gw_fault_timer *t)
{
    int64_t left_ms = (t->wake_us - cn_mono_us() + 999) / 1000;
    int k = 0;
    while (k + 1 < LADDER && ((int64_t)1 << (k + 1)) <= left_ms)
        k++;
    t->entry.cb = on_hop;
    h2o_timeout_link(t->loop, &ladder[k], &t->entry);
}

void gw_fault_timer_start(struct gw_fault_timer *t, h2o_loop_t *loop, int64_t ms,
                          void (*cb)(struct gw_fault_timer *t))
{
    if (ladder_loop == NULL) {
        for (int k = 0; k < LADDER; k++)
            h2o_timeout_init(loop, &ladder[k], (uint64_t)1 << k);
        ladder_loop = loop;
    }
    memset(&t->entry, 0, sizeof t->entry);
    t->loop = loop;
    t->cb = cb;
    t->wake_us = cn_mono_us() + (ms > 0 ? ms : 0) * 1000;
    timer_arm(t);
}

void gw_fault_timer_stop(struct gw_fault_timer *t)
{
    if (h2o_timeout_is_linked(&t->entry))
        h2o_timeout_unlink(&t->entry);
}

bool gw_fault_timer_active(const struct gw_fault_timer *t)
{
    return h2o_timeout_is_linked((h2o_timeout_entry_t *)&t->entry);
}
