/* upstream_test.c — instance sets: address parsing, name resolution into one endpoint
 * per address, refresh keeping an unchanged set, malformed lists refused, and a call
 * with no connected instance failing at once instead of waiting out its timeout; the
 * choice: power of two choices, retries leaving out tried instances, shedding when all
 * are saturated, ejected instances skipped; ejection timing, doubling and the cap; calls
 * through a real REQ/REP pair and an h2o loop, one of them timing out while its send is
 * still queued in nng. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "upstream.c"

#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

static void test_parse(void **state)
{
    (void)state;
    struct target t;
    assert_int_equal(target_parse(&t, "tcp://127.0.0.1:7101"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    assert_int_equal(target_parse(&t, "tcp://auth.cairn.svc:7101"), CN_OK);
    assert_string_equal(t.host, "auth.cairn.svc");
    assert_string_equal(t.port, "7101");
    free(t.addr), free(t.host), free(t.port);
    assert_int_equal(target_parse(&t, "tcp://[::1]:7101"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    assert_int_equal(target_parse(&t, "inproc://x"), CN_OK);
    assert_null(t.host);
    free(t.addr);
    const char *bad[] = {"tcp://auth", "tcp://:7101", "tcp://auth:", "tcp://[::1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(target_parse(&t, bad[i]), CN_EINVAL);
        free(t.addr);
        free(t.host);
        free(t.port);
    }
}

static void test_sets(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "tcp://127.0.0.1:1, tcp://localhost:2,tcp://127.0.0.1:1", 0);
    assert_non_null(u);
    struct epset *set = atomic_load(&u->set);
    /* the duplicate is folded; localhost gives at least 127.0.0.1:2 */
    assert_true(set->n >= 2);
    int found = 0;
    for (int i = 0; i < set->n; i++)
        found += strcmp(set->eps[i]->addr, "tcp://127.0.0.1:2") == 0;
    assert_int_equal(found, 1);
    gw_upstream_refresh(u);
    assert_ptr_equal(atomic_load(&u->set), set);   /* nothing changed, nothing swapped */
    assert_int_equal(gw_upstream_connected(u), 0);

    /* nothing listens: the call fails now, not after its timeout */
    nng_msg *m;
    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    struct gw_upcall *c;
    assert_int_equal(gw_upstream_call(u, m, 5000, NULL, NULL, NULL, &c), CN_EUNAVAIL);
    nng_msg_free(m);
    gw_upstream_free(u);

    assert_null(gw_upstream_new("auth", "", 0));
    assert_null(gw_upstream_new("auth", "tcp://auth", 0));
    assert_null(gw_upstream_new("auth", "bogus://x", 0));
}

static void test_retire(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "inproc://a,inproc://b", 0);
    assert_non_null(u);
    assert_int_equal(atomic_load(&u->set)->n, 2);
    /* drop b from the targets: the next refresh retires it, later ones free it */
    free(u->targets[1].addr);
    u->ntargets = 1;
    gw_upstream_refresh(u);
    assert_int_equal(atomic_load(&u->set)->n, 1);
    assert_non_null(u->retired);
    for (int i = 0; i < 3; i++)
        gw_upstream_refresh(u);
    assert_null(u->retired);
    assert_null(u->old_sets);
    gw_upstream_free(u);
}

static void test_p2c(void **state)
{
    (void)state;
    unsigned score[4] = {5, 1, 9, 1};
    assert_int_equal(gw_p2c(score, 0, 7), -1);
    assert_int_equal(gw_p2c(score, 1, 7), 0);
    /* two instances: always the less loaded one, whatever the draw */
    for (uint64_t r = 0; r < 100; r++)
        assert_int_equal(gw_p2c(score, 2, r), 1);
    /* four: never the most loaded one (it loses to whichever it is paired with), the two
     * least loaded win most draws, and every draw compares two different instances */
    int wins[4] = {0};
    for (uint64_t r = 0; r < 12000; r++)
        wins[gw_p2c(score, 4, r * 0x9E3779B97F4A7C15ull >> 7)]++;
    assert_int_equal(wins[2], 0);
    assert_true(wins[1] + wins[3] > 12000 * 3 / 4);
    assert_true(wins[0] > 0);
}

static void test_outlier_timing(void **state)
{
    (void)state;
    struct gw_outlier_conf c = {.failures = 3, .base_s = 30, .max_s = 100, .max_percent = 50};
    struct gw_outlier o = {0};
    int64_t now = 1000000;
    /* two failures and a success: the count starts again */
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 0);
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 0);
    gw_outlier_ok(&o);
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 0);
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 0);
    /* the third in a row ejects for base_s */
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 30000);
    assert_true(gw_outlier_ejected(&o, now + 29999));
    assert_false(gw_outlier_ejected(&o, now + 30000));
    /* late failures of calls sent before do not extend it */
    assert_int_equal(gw_outlier_fail(&o, now + 10, &c, true), 0);
    assert_int_equal(o.until_ms, now + 30000);
    /* back on probation: one failure ejects again, for twice as long, then the cap */
    now += 30000;
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 60000);
    now += 60000;
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 100000);
    now += 100000;
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 100000);
    /* a success after an ejection resets the doubling */
    now += 100000;
    gw_outlier_ok(&o);
    for (int i = 0; i < 2; i++)
        assert_int_equal(gw_outlier_fail(&o, now, &c, true), 0);
    assert_int_equal(gw_outlier_fail(&o, now, &c, true), 30000);
    /* not allowed to eject (too many out already): counted, not ejected */
    struct gw_outlier p = {0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(gw_outlier_fail(&p, now, &c, false), 0);
    assert_false(gw_outlier_ejected(&p, now));
    assert_int_equal(gw_outlier_fail(&p, now, &c, true), 30000);
    /* never more than max_percent, and never every instance */
    assert_int_equal(gw_outlier_max_ejected(1, 50), 0);
    assert_int_equal(gw_outlier_max_ejected(2, 50), 1);
    assert_int_equal(gw_outlier_max_ejected(3, 50), 1);
    assert_int_equal(gw_outlier_max_ejected(4, 50), 2);
    assert_int_equal(gw_outlier_max_ejected(2, 100), 1);
    assert_int_equal(gw_outlier_max_ejected(5, 0), 0);
}

/* Pretends every endpoint of u is connected. */
static void all_connected(struct gw_upstream *u)
{
    struct epset *set = atomic_load(&u->set);
    for (int i = 0; i < set->n; i++)
        atomic_store(&set->eps[i]->pipes, 1);
}

static void test_pick(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "inproc://p1,inproc://p2,inproc://p3", 0);
    assert_non_null(u);
    all_connected(u);
    struct epset *set = atomic_load(&u->set);
    struct gw_endpoint *a = set->eps[0], *b = set->eps[1], *c = set->eps[2];
    int why;
    /* the busy one is never chosen over the idle ones */
    atomic_store(&a->inflight, 10);
    for (int i = 0; i < 50; i++)
        assert_ptr_not_equal(pick(u, NULL, &why), a);
    /* a reported load counts too, while fresh */
    atomic_store(&a->inflight, 0);
    atomic_store(&b->load, 50);
    atomic_store(&b->load_at_ms, cn_mono_ms());
    for (int i = 0; i < 50; i++)
        assert_ptr_not_equal(pick(u, NULL, &why), b);
    atomic_store(&b->load_at_ms, cn_mono_ms() - 2 * LOAD_FRESH_MS);
    int got_b = 0;
    for (int i = 0; i < 100; i++)
        got_b += pick(u, NULL, &why) == b;
    assert_true(got_b > 0);
    /* a retry leaves out what it tried, unless nothing else is left */
    const struct gw_endpoint *tried[2] = {a, b};
    struct gw_pick p = {.exclude = tried, .nexclude = 2};
    for (int i = 0; i < 20; i++)
        assert_ptr_equal(pick(u, &p, &why), c);
    const struct gw_endpoint *all[3] = {a, b, c};
    p = (struct gw_pick){.exclude = all, .nexclude = 3};
    assert_non_null(pick(u, &p, &why));
    /* shedding: every instance at max_outstanding -> CN_EFULL; one below -> that one */
    p = (struct gw_pick){.max_outstanding = 4};
    for (int i = 0; i < 3; i++)
        atomic_store(&set->eps[i]->inflight, 4);
    assert_null(pick(u, &p, &why));
    assert_int_equal(why, CN_EFULL);
    atomic_store(&c->inflight, 3);
    assert_ptr_equal(pick(u, &p, &why), c);
    for (int i = 0; i < 3; i++)
        atomic_store(&set->eps[i]->inflight, 0);
    /* an ejected instance is skipped until its time is up */
    atomic_store(&a->ejected_until, cn_mono_ms() + 60000);
    a->ol.until_ms = atomic_load(&a->ejected_until);
    for (int i = 0; i < 50; i++)
        assert_ptr_not_equal(pick(u, NULL, &why), a);
    atomic_store(&a->ejected_until, cn_mono_ms() - 1);
    a->ol.until_ms = atomic_load(&a->ejected_until);
    int got_a = 0;
    for (int i = 0; i < 100; i++)
        got_a += pick(u, NULL, &why) == a;
    assert_true(got_a > 0);
    assert_true(a->ol.probing);
    assert_int_equal(atomic_load(&a->ejected_until), 0);
    /* nothing connected */
    for (int i = 0; i < 3; i++)
        atomic_store(&set->eps[i]->pipes, 0);
    assert_null(pick(u, NULL, &why));
    assert_int_equal(why, CN_EUNAVAIL);
    gw_upstream_free(u);
}

static void test_report_ejects_at_most_half(void **state)
{
    (void)state;
    struct gw_upstream *u = gw_upstream_new("auth", "inproc://r1,inproc://r2", 0);
    all_connected(u);
    struct epset *set = atomic_load(&u->set);
    struct gw_outlier_conf oc = {.failures = 2, .base_s = 30, .max_s = 300, .max_percent = 50};
    struct gw_upcall ca = {.up = u, .ep = set->eps[0]}, cb = {.up = u, .ep = set->eps[1]};
    gw_upcall_report(&ca, true, false, 0, &oc);
    gw_upcall_report(&ca, true, false, 0, &oc);
    assert_true(atomic_load(&set->eps[0]->ejected_until) > cn_mono_ms());
    /* the other one fails too, but one of two is the most that may be out */
    for (int i = 0; i < 5; i++)
        gw_upcall_report(&cb, true, false, 0, &oc);
    assert_int_equal(atomic_load(&set->eps[1]->ejected_until), 0);
    int why;
    for (int i = 0; i < 20; i++)
        assert_ptr_equal(pick(u, NULL, &why), set->eps[1]);
    /* a Result's load is remembered for the choice */
    gw_upcall_report(&cb, false, true, 7, &oc);
    assert_int_equal(atomic_load(&set->eps[1]->load), 7);
    gw_upstream_free(u);
}

/* ---- calls through a real REQ/REP pair and an h2o loop ---- */

struct outcome {
    int rv;
    bool done, sent, reply;
};
static int outcomes_done;

static void record(struct gw_upcall *c)
{
    struct outcome *o = c->data;
    o->rv = c->rv;
    o->sent = c->sent;
    o->reply = c->reply != NULL;
    o->done = true;
    outcomes_done++;
}

static void run_until(h2o_evloop_t *loop, int n)
{
    for (int i = 0; i < 300 && outcomes_done < n; i++)
        h2o_evloop_run(loop, 10);
    assert_int_equal(outcomes_done, n);
}

/* A reply comes back to the loop; then three calls time out against a server that stops
 * reading: the first reached the server, the second sits in the busy pipe, the third
 * is still queued in nng when its receive times out. nng 1.5.2 leaves that third send's
 * aio scheduled with its request freed, where cancelling it would crash (see on_aio):
 * it must end cleanly, as not sent (so safe to retry), and leak nothing (ASan). */
static void test_calls_and_queued_send(void **state)
{
    (void)state;
    nng_socket srv;
    assert_int_equal(nng_rep0_open(&srv), 0);
    assert_int_equal(nng_listen(srv, "inproc://gw-upstream-test", NULL, 0), 0);
    struct gw_upstream *u = gw_upstream_new("test", "inproc://gw-upstream-test", 0);
    assert_non_null(u);
    for (int i = 0; i < 200 && gw_upstream_connected(u) == 0; i++)
        nng_msleep(5);
    assert_int_equal(gw_upstream_connected(u), 1);

    /* Static, and never destroyed: h2o 2.2.5's h2o_evloop_destroy leaves parts of the
     * loop and its queue allocated, which LeakSanitizer would report. */
    static h2o_evloop_t *loop;
    static h2o_multithread_queue_t *q;
    static h2o_multithread_receiver_t rx;
    loop = h2o_evloop_create();
    q = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(q, &rx, gw_upstream_on_messages);
    struct outcome o[4] = {{0}};
    struct gw_upcall *c;
    nng_msg *m, *req;

    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    assert_int_equal(nng_msg_append(m, "ping", 4), 0);
    assert_int_equal(gw_upstream_call(u, m, 2000, &rx, record, &o[0], &c), CN_OK);
    assert_int_equal(nng_recvmsg(srv, &req, 0), 0);
    assert_int_equal(nng_sendmsg(srv, req, 0), 0);  /* the echo is the reply */
    run_until(loop, 1);
    assert_true(o[0].rv == 0 && o[0].sent && o[0].reply);

    for (int i = 1; i < 4; i++) {
        assert_int_equal(nng_msg_alloc(&m, 64), 0);
        assert_int_equal(gw_upstream_call(u, m, 100, &rx, record, &o[i], &c), CN_OK);
    }
    run_until(loop, 4);
    for (int i = 1; i < 4; i++)
        assert_true(o[i].done && o[i].rv == NNG_ETIMEDOUT && !o[i].reply);
    assert_true(o[1].sent && o[2].sent && !o[3].sent);

    h2o_multithread_unregister_receiver(q, &rx);
    gw_upstream_free(u);
    nng_close(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_retire),
        cmocka_unit_test(test_p2c),
        cmocka_unit_test(test_outlier_timing),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_report_ejects_at_most_half),
        cmocka_unit_test(test_calls_and_queued_send),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
