/* fuzz_gw_config.c — libFuzzer target for the gateway's policy file parser
 * (gw_config_parse, gateway/config.c): the input as the YAML text of CAIRN_GATEWAY_CONFIG.
 * The file is operator input, not network input, but a SIGHUP reload parses whatever is on
 * disk inside a running gateway, so it must never crash, leak or read out of bounds.
 * Checks: a refusal has a "NAME:LINE: " message; an accepted config keeps the invariants
 * the request path relies on (limits and windows positive, burst >= 1, every group index
 * and `replaces` index in range, percents in [0, 100], abort statuses 0 or 400..599). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"

static void check(const struct gw_config *c)
{
    if (c->ngroups > 64 || c->replicas < 1 || c->retry_max_attempts < 1 || c->retry_cap_ms < c->retry_base_ms ||
        c->outlier_max_s < c->outlier_base_s || c->shed_max_outstanding < 1)
        abort();
    for (size_t i = 0; i < c->npolicies; i++) {
        const struct gw_rl_policy *p = &c->policies[i];
        if (p->limit < 1 || p->window_ms < 1 || p->burst < 1 || p->name[0] == '\0' ||
            (p->replaces != -1 && (p->replaces < 0 || (size_t)p->replaces >= c->npolicies ||
                                   (size_t)p->replaces == i)) ||
            (!p->all_groups && c->ngroups < 64 && (p->groups >> c->ngroups) != 0))
            abort();
        for (size_t k = 0; k < p->nkey_ids; k++)
            if (p->key_ids[k] == NULL)
                abort();
    }
    for (size_t i = 0; i < c->nfaults; i++) {
        const struct gw_fault_rule *r = &c->faults[i];
        if (r->delay_ms < 0 || r->delay_percent < 0 || r->delay_percent > 100 || r->abort_percent < 0 ||
            r->abort_percent > 100 || (r->abort_status != 0 && (r->abort_status < 400 || r->abort_status > 599)))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_config *c = NULL;
    char err[512];
    err[0] = '\0';
    int rv = gw_config_parse("f.yaml", (const char *)data, size, &c, err, sizeof err);
    if (rv == CN_OK) {
        if (c == NULL)
            abort();
        check(c);
        gw_config_put(c);
    } else if (rv != CN_EINVAL || c != NULL || strncmp(err, "f.yaml:", 7) != 0) {
        abort();
    }
    return 0;
}
