/* inference_cache_test.c — unit tests for inference_cache.c with a fake loader (no
 * XGBoost): hits and misses, LRU order under the byte bound, entries in use surviving
 * eviction and forget, an oversized entry still served, single-flight loading (threads),
 * failed loads not cached, and several threads getting, putting and forgetting at random
 * for a second without a leak (run under ASan). Includes the .c to reach its statics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "inference_cache.c"

/* --- a fake loader --- */

/* What the fake loader does; passed as the get's arg. */
struct fake {
    atomic_int calls;
    int fail;         /* return this instead of loading (0: load) */
    int fail_version; /* ... only for this version (0: any) */
    size_t bytes;     /* per entry; 0: 100 * version */
    int sleep_ms;
};

static atomic_int live; /* loaded and not yet unloaded */

/* The "booster" is a string naming what was loaded, so holders can check it. */
static int fake_load(const char *model, int version, void *arg, struct infer_loaded *out, char *why,
                     size_t whylen)
{
    struct fake *f = arg;
    atomic_fetch_add(&f->calls, 1);
    if (f->sleep_ms > 0)
        usleep((useconds_t)f->sleep_ms * 1000);
    if (f->fail != 0 && (f->fail_version == 0 || f->fail_version == version)) {
        snprintf(why, whylen, "no such version %s/%d", model, version);
        return f->fail;
    }
    char name[128];
    snprintf(name, sizeof name, "%s/%d", model, version);
    out->booster = (struct infer_booster *)cn_strdup(name);
    out->bytes = f->bytes ? f->bytes : 100 * (size_t)version;
    atomic_fetch_add(&live, 1);
    return 0;
}

static void fake_unload(struct infer_loaded *v)
{
    free(v->booster);
    atomic_fetch_sub(&live, 1);
}

/* --- helpers --- */

static struct infer_entry *get_ok(struct infer_cache *c, const char *model, int version,
                                  struct fake *f)
{
    struct infer_entry *e = NULL;
    char why[128] = "";
    int rc = infer_cache_get(c, model, version, f, &e, why, sizeof why);
    if (rc != 0)
        fail_msg("get %s/%d: %d %s", model, version, rc, why);
    char name[128];
    snprintf(name, sizeof name, "%s/%d", model, version);
    assert_string_equal((const char *)e->v.booster, name);
    assert_string_equal(e->model, model);
    assert_int_equal(e->version, version);
    return e;
}

/* Gets and puts at once; returns the entry's address (only to compare). */
static const void *touch(struct infer_cache *c, const char *model, int version, struct fake *f)
{
    struct infer_entry *e = get_ok(c, model, version, f);
    infer_cache_put(c, e);
    return e;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&live, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return atomic_load(&live) != 0; /* every test frees what it loaded */
}

/* --- cases --- */

static void a_second_get_is_a_hit(void **state)
{
    (void)state;
    struct fake f = {.bytes = 10};
    struct infer_cache *c = infer_cache_new(1000, fake_load, fake_unload);
    const void *a = touch(c, "churn", 1, &f);
    assert_ptr_equal(touch(c, "churn", 1, &f), a);
    assert_int_equal(atomic_load(&f.calls), 1);
    touch(c, "churn", 2, &f);
    touch(c, "churn.v2", 1, &f);
    assert_int_equal(atomic_load(&f.calls), 3);
    assert_int_equal(infer_cache_count(c), 3);
    assert_int_equal(infer_cache_bytes(c), 30);
    assert_int_equal(cn_series_value(m.entries), 3);
    assert_int_equal(cn_series_value(m.bytes), 30);
    assert_int_equal(atomic_load(&live), 3);
    infer_cache_free(c);
    assert_int_equal(atomic_load(&live), 0);
    assert_int_equal(cn_series_value(m.entries), 0);
}

static void the_least_recently_used_goes_first(void **state)
{
    (void)state;
    struct fake f = {.bytes = 100};
    struct infer_cache *c = infer_cache_new(300, fake_load, fake_unload);
    double ev0 = cn_series_value(m.evictions);
    touch(c, "m", 1, &f);
    touch(c, "m", 2, &f);
    touch(c, "m", 3, &f);
    touch(c, "m", 1, &f); /* 2 is now the oldest */
    touch(c, "m", 4, &f);
    assert_int_equal(infer_cache_count(c), 3);
    assert_int_equal(infer_cache_bytes(c), 300);
    assert_int_equal(cn_series_value(m.evictions) - ev0, 1);
    assert_int_equal(atomic_load(&f.calls), 4);
    touch(c, "m", 1, &f);
    touch(c, "m", 3, &f);
    touch(c, "m", 4, &f);
    assert_int_equal(atomic_load(&f.calls), 4); /* all hits */
    touch(c, "m", 2, &f);                       /* evicted: loaded again, evicting 1 */
    assert_int_equal(atomic_load(&f.calls), 5);
    touch(c, "m", 3, &f);
    assert_int_equal(atomic_load(&f.calls), 5);
    touch(c, "m", 1, &f);
    assert_int_equal(atomic_load(&f.calls), 6);
    assert_int_equal(atomic_load(&live), 3);
    infer_cache_free(c);
}

static void bytes_bound_by_entry_size(void **state)
{
    (void)state;
    struct fake f = {0}; /* version v costs 100 v bytes */
    struct infer_cache *c = infer_cache_new(500, fake_load, fake_unload);
    touch(c, "m", 1, &f);
    touch(c, "m", 2, &f);
    touch(c, "m", 3, &f); /* 600 > 500: 1 goes */
    assert_int_equal(infer_cache_bytes(c), 500);
    touch(c, "m", 4, &f); /* 900: 2 and 3 go */
    assert_int_equal(infer_cache_bytes(c), 400);
    assert_int_equal(infer_cache_count(c), 1);
    assert_int_equal(atomic_load(&live), 1);
    infer_cache_free(c);
}

static void an_entry_in_use_survives_eviction(void **state)
{
    (void)state;
    struct fake f = {.bytes = 100};
    struct infer_cache *c = infer_cache_new(100, fake_load, fake_unload);
    struct infer_entry *held = get_ok(c, "m", 1, &f);
    touch(c, "m", 2, &f); /* over the bound; 1 is in use, so 2 goes at its put */
    assert_int_equal(infer_cache_count(c), 1);
    assert_int_equal(atomic_load(&live), 1);
    assert_string_equal((const char *)held->v.booster, "m/1");
    struct infer_entry *again = get_ok(c, "m", 1, &f);
    assert_ptr_equal(again, held);
    assert_int_equal(atomic_load(&f.calls), 2);
    infer_cache_put(c, again);
    infer_cache_put(c, held);
    assert_int_equal(infer_cache_count(c), 1); /* within the bound: kept */
    infer_cache_free(c);
}

static void an_entry_bigger_than_the_cache_is_still_served(void **state)
{
    (void)state;
    struct fake f = {.bytes = 1000};
    struct infer_cache *c = infer_cache_new(50, fake_load, fake_unload);
    struct infer_entry *e = get_ok(c, "huge", 1, &f);
    struct infer_entry *e2 = get_ok(c, "huge", 1, &f); /* a hit while in use */
    assert_ptr_equal(e, e2);
    infer_cache_put(c, e2);
    assert_int_equal(atomic_load(&live), 1);
    infer_cache_put(c, e);
    assert_int_equal(atomic_load(&live), 0); /* evicted at its last put */
    assert_int_equal(infer_cache_count(c), 0);
    assert_int_equal(infer_cache_bytes(c), 0);
    infer_cache_free(c);
}

static void forget_waits_for_the_last_holder(void **state)
{
    (void)state;
    struct fake f = {.bytes = 10};
    struct infer_cache *c = infer_cache_new(1000, fake_load, fake_unload);
    struct infer_entry *old = get_ok(c, "m", 1, &f);
    infer_cache_forget(c, "m", 1);
    assert_int_equal(infer_cache_count(c), 0);
    assert_int_equal(infer_cache_bytes(c), 0);
    assert_string_equal((const char *)old->v.booster, "m/1"); /* still valid */
    struct infer_entry *fresh = get_ok(c, "m", 1, &f);
    assert_ptr_not_equal(fresh, old);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_int_equal(atomic_load(&live), 2);
    infer_cache_put(c, old);
    assert_int_equal(atomic_load(&live), 1);
    infer_cache_put(c, fresh);
    assert_int_equal(infer_cache_count(c), 1);

    /* version 0: every version of that model, and only of that model */
    touch(c, "m", 2, &f);
    touch(c, "m", 3, &f);
    touch(c, "mm", 1, &f);
    touch(c, "n", 2, &f);
    infer_cache_forget(c, "m", 0);
    assert_int_equal(infer_cache_count(c), 2);
    assert_int_equal(atomic_load(&live), 2);
    infer_cache_forget(c, "nothing", 5);
    infer_cache_forget(c, "n", 3);
    assert_int_equal(infer_cache_count(c), 2);
    int calls = atomic_load(&f.calls);
    touch(c, "mm", 1, &f);
    touch(c, "n", 2, &f);
    assert_int_equal(atomic_load(&f.calls), calls);
    infer_cache_free(c);
}

static void a_failed_load_is_not_cached(void **state)
{
    (void)state;
    struct fake f = {.fail = CN_ENOTFOUND};
    struct infer_cache *c = infer_cache_new(1000, fake_load, fake_unload);
    double err0 = cn_series_value(m.loads_error), ok0 = cn_series_value(m.loads_ok);
    double secs0 = cn_series_value(m.load_seconds);
    struct infer_entry *e = (struct infer_entry *)1;
    char why[128] = "";
    assert_int_equal(infer_cache_get(c, "m", 7, &f, &e, why, sizeof why), CN_ENOTFOUND);
    assert_null(e);
    assert_string_equal(why, "no such version m/7");
    assert_int_equal(infer_cache_get(c, "m", 7, &f, &e, NULL, 0), CN_ENOTFOUND);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_int_equal(infer_cache_count(c), 0);
    assert_int_equal(cn_series_value(m.loads_error) - err0, 2);
    f.fail = 0;
    touch(c, "m", 7, &f);
    assert_int_equal(atomic_load(&f.calls), 3);
    assert_int_equal(cn_series_value(m.loads_ok) - ok0, 1);
    assert_int_equal(cn_series_value(m.load_seconds) - secs0, 3);
    infer_cache_free(c);
}

struct getter {
    struct infer_cache *c;
    struct fake *f;
    const char *model;
    int version;
    int rc;
    char why[128];
    struct infer_entry *e;
};

static void *get_in_thread(void *arg)
{
    struct getter *g = arg;
    g->rc = infer_cache_get(g->c, g->model, g->version, g->f, &g->e, g->why, sizeof g->why);
    return NULL;
}

/* n threads get the same key at once; fills g[0..n). */
static void get_together(struct infer_cache *c, struct fake *f, struct getter *g, size_t n)
{
    pthread_t t[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        g[i] = (struct getter){.c = c, .f = f, .model = "m", .version = 1, .rc = -99};
        assert_int_equal(pthread_create(&t[i], NULL, get_in_thread, &g[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void concurrent_misses_share_one_load(void **state)
{
    (void)state;
    struct fake f = {.bytes = 10, .sleep_ms = 150};
    struct infer_cache *c = infer_cache_new(1000, fake_load, fake_unload);
    struct getter g[8];
    get_together(c, &f, g, 8);
    assert_int_equal(atomic_load(&f.calls), 1);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(g[i].rc, 0);
        assert_ptr_equal(g[i].e, g[0].e);
    }
    assert_int_equal(g[0].e->refs, 8);
    for (size_t i = 0; i < 8; i++)
        infer_cache_put(c, g[i].e);
    assert_int_equal(atomic_load(&live), 1);

    /* A failing load: every waiter gets its answer, nothing is kept. */
    struct fake bad = {.fail = CN_EUNAVAIL, .sleep_ms = 150};
    infer_cache_forget(c, "m", 1);
    get_together(c, &bad, g, 6);
    assert_int_equal(atomic_load(&bad.calls), 1);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(g[i].rc, CN_EUNAVAIL);
        assert_null(g[i].e);
        assert_string_equal(g[i].why, "no such version m/1");
    }
    assert_int_equal(infer_cache_count(c), 0);
    infer_cache_free(c);
}

static void a_version_forgotten_while_loading_is_not_kept(void **state)
{
    (void)state;
    struct fake f = {.bytes = 10, .sleep_ms = 200};
    struct infer_cache *c = infer_cache_new(1000, fake_load, fake_unload);
    struct getter g = {.c = c, .f = &f, .model = "m", .version = 1, .rc = -99};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_in_thread, &g), 0);
    while (atomic_load(&f.calls) == 0)
        usleep(1000);
    infer_cache_forget(c, "m", 1); /* the load is in flight */
    pthread_join(t, NULL);
    assert_int_equal(g.rc, 0);
    assert_string_equal((const char *)g.e->v.booster, "m/1");
    assert_int_equal(infer_cache_count(c), 0);
    assert_int_equal(atomic_load(&live), 1);
    infer_cache_put(c, g.e);
    assert_int_equal(atomic_load(&live), 0);
    infer_cache_free(c);
}

struct chaos {
    struct infer_cache *c;
    struct fake *f;
    unsigned seed;
    int64_t until_ms;
    size_t gets, fails;
    int bad; /* a holder saw the wrong entry */
};

static void *chaos_thread(void *arg)
{
    struct chaos *k = arg;
    static const char *const models[] = {"alpha", "beta", "gamma"};
    struct infer_entry *held[4] = {0};
    while (cn_mono_ms() < k->until_ms) {
        unsigned r = (unsigned)rand_r(&k->seed);
        const char *model = models[r % 3];
        int version = (int)(r / 3 % 5) + 1;
        size_t h = r / 15 % 4;
        switch (r / 60 % 8) {
        case 0: /* forget one version or a whole model */
            infer_cache_forget(k->c, model, r / 480 % 2 ? version : 0);
            break;
        case 1: /* drop one we hold */
            infer_cache_put(k->c, held[h]);
            held[h] = NULL;
            break;
        default: {
            struct infer_entry *e = NULL;
            char why[128];
            int rc = infer_cache_get(k->c, model, version, k->f, &e, why, sizeof why);
            k->gets++;
            if (rc != 0) {
                k->fails++;
                k->bad |= version != 5 || rc != CN_EUNAVAIL || e != NULL;
                break;
            }
            char name[64];
            snprintf(name, sizeof name, "%s/%d", model, version);
            k->bad |= strcmp((const char *)e->v.booster, name) != 0 || e->version != version;
            infer_cache_put(k->c, held[h]); /* keep it a while, like a request in flight */
            held[h] = e;
        }
        }
    }
    for (size_t i = 0; i < 4; i++)
        infer_cache_put(k->c, held[i]);
    return NULL;
}

static void random_traffic_leaks_nothing(void **state)
{
    (void)state;
    /* Versions 1..4 load (100..400 bytes), 5 fails; 700 bytes hold a few. */
    struct fake f = {.fail = CN_EUNAVAIL, .fail_version = 5};
    struct infer_cache *c = infer_cache_new(700, fake_load, fake_unload);
    struct chaos k[4];
    pthread_t t[4];
    int64_t until = cn_mono_ms() + 1000;
    for (size_t i = 0; i < 4; i++) {
        k[i] = (struct chaos){.c = c, .f = &f, .seed = (unsigned)(i * 7919 + 1), .until_ms = until};
        assert_int_equal(pthread_create(&t[i], NULL, chaos_thread, &k[i]), 0);
    }
    size_t gets = 0, fails = 0;
    for (size_t i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_false(k[i].bad);
        gets += k[i].gets;
        fails += k[i].fails;
    }
    assert_true(gets > 1000);
    assert_true(fails > 0);
    /* Nobody holds anything now: within the bound, and the books balance. */
    assert_true(infer_cache_bytes(c) <= 700);
    assert_int_equal(atomic_load(&live), (int)infer_cache_count(c));
    size_t bytes = 0;
    for (struct infer_entry *e = c->head; e != NULL; e = e->lnext) {
        assert_int_equal(e->refs, 0);
        assert_true(e->mapped);
        bytes += e->v.bytes;
    }
    assert_int_equal(bytes, infer_cache_bytes(c));
    print_message("%zu gets, %zu failed, %d loads\n", gets, fails, atomic_load(&f.calls));
    infer_cache_free(c);
    assert_int_equal(atomic_load(&live), 0);
}

static void the_table_grows(void **state)
{
    (void)state;
    struct fake f = {.bytes = 1};
    struct infer_cache *c = infer_cache_new(1 << 20, fake_load, fake_unload);
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "model-%d", i % 50);
        touch(c, name, i / 50 + 1, &f);
    }
    assert_true(c->nbuckets >= 256);
    assert_int_equal(infer_cache_count(c), 300);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "model-%d", i % 50);
        touch(c, name, i / 50 + 1, &f);
    }
    assert_int_equal(atomic_load(&f.calls), 300);
    infer_cache_forget(c, "model-7", 0);
    assert_int_equal(infer_cache_count(c), 294);
    infer_cache_free(c);
}

int main(void)
{
    cn_log_init("inference", CN_LOG_WARN); /* loads and evictions are info: thousands here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_second_get_is_a_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(the_least_recently_used_goes_first, setup, teardown),
        cmocka_unit_test_setup_teardown(bytes_bound_by_entry_size, setup, teardown),
        cmocka_unit_test_setup_teardown(an_entry_in_use_survives_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(an_entry_bigger_than_the_cache_is_still_served, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(forget_waits_for_the_last_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_load_is_not_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_misses_share_one_load, setup, teardown),
        cmocka_unit_test_setup_teardown(a_version_forgotten_while_loading_is_not_kept, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(random_traffic_leaks_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(the_table_grows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
