/* cpus_test.c — CAIRN_CPUS (cpus.c): lists parse as taskset writes them and anything
 * else is refused with a message; applying a list confines threads that already run and
 * threads started later, and cn_cpu_count follows; a CPU the process may not use is
 * refused and changes nothing. The confining cases run in a forked child, so the test
 * process keeps its CPUs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpus.h"
#include "err.h"

static void test_lists_parse(void **state)
{
    (void)state;
    cpu_set_t s;
    char err[256];

    assert_int_equal(cn_cpus_parse("0", &s, err, sizeof err), CN_OK);
    assert_int_equal(CPU_COUNT(&s), 1);
    assert_true(CPU_ISSET(0, &s));
    assert_int_equal(cn_cpus_parse("0,2,4-6", &s, err, sizeof err), CN_OK);
    assert_int_equal(CPU_COUNT(&s), 5);
    assert_true(CPU_ISSET(2, &s) && CPU_ISSET(4, &s) && CPU_ISSET(6, &s));
    assert_false(CPU_ISSET(3, &s));
    assert_int_equal(cn_cpus_parse("3-3,3", &s, err, sizeof err), CN_OK);
    assert_int_equal(CPU_COUNT(&s), 1);

    static const char *const bad[] = {"", "a", "-1", "1-", "3-1", "0,", ",0", "0 1", "0;1",
                                      "1-2-3", "99999", "0-99999", " 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(cn_cpus_parse(bad[i], &s, err, sizeof err), CN_EINVAL);
        assert_true(strlen(err) > 10);
    }
    cn_cpus_parse("3-1", &s, err, sizeof err);
    assert_non_null(strstr(err, "3-1"));
}

static void *report_cpus(void *arg)
{
    cpu_set_t *out = arg;
    sched_getaffinity(0, sizeof *out, out);
    return NULL;
}

static volatile bool release;

static void *wait_then_report(void *arg)
{
    while (!release)
        usleep(1000);
    return report_cpus(arg);
}

/* Runs body in a child; the test fails unless it exits 0. */
static void in_child(int (*body)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(body());
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static int confine_to_one(void)
{
    cpu_set_t mine, before, after;
    char err[256], list[16];
    pthread_t early, late;

    if (sched_getaffinity(0, sizeof mine, &mine) != 0)
        return 10;
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &mine))
            first = c;
    snprintf(list, sizeof list, "%d", first);
    /* A thread that exists before the list is applied, and one started after. */
    if (pthread_create(&early, NULL, wait_then_report, &before) != 0)
        return 11;
    if (cn_cpus_apply(list, err, sizeof err) != CN_OK)
        return 12;
    release = true;
    if (pthread_create(&late, NULL, report_cpus, &after) != 0)
        return 13;
    pthread_join(early, NULL);
    pthread_join(late, NULL);
    if (CPU_COUNT(&before) != 1 || !CPU_ISSET(first, &before))
        return 14;
    if (CPU_COUNT(&after) != 1 || !CPU_ISSET(first, &after))
        return 15;
    if (cn_cpu_count() != 1)
        return 16;
    return 0;
}

static void test_apply_confines_every_thread(void **state)
{
    (void)state;
    if (cn_cpu_count() < 2)
        skip(); /* on one CPU every thread is already where the list would put it */
    in_child(confine_to_one);
}

static int refuse_unavailable(void)
{
    cpu_set_t mine, now;
    char err[256] = "", list[16];

    if (sched_getaffinity(0, sizeof mine, &mine) != 0)
        return 10;
    int count = cn_cpu_count();
    int missing = -1;
    for (int c = 0; c < CPU_SETSIZE && missing < 0; c++)
        if (!CPU_ISSET(c, &mine))
            missing = c;
    snprintf(list, sizeof list, "%d", missing);
    if (cn_cpus_apply(list, err, sizeof err) != CN_EINVAL)
        return 11;
    if (strstr(err, "cannot run on") == NULL)
        return 12;
    if (sched_getaffinity(0, sizeof now, &now) != 0 || !CPU_EQUAL(&now, &mine))
        return 13;
    if (cn_cpu_count() != count)
        return 14;
    /* Empty: nothing to do. */
    if (cn_cpus_apply("", err, sizeof err) != CN_OK || cn_cpus_apply(NULL, err, sizeof err) != CN_OK)
        return 15;
    if (cn_cpus_apply("x", err, sizeof err) != CN_EINVAL)
        return 16;
    return 0;
}

static void test_apply_refuses_cpus_it_cannot_use(void **state)
{
    (void)state;
    if (cn_cpu_count() >= CPU_SETSIZE)
        skip(); /* every CPU a list can name is allowed */
    in_child(refuse_unavailable);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lists_parse),
        cmocka_unit_test(test_apply_confines_every_thread),
        cmocka_unit_test(test_apply_refuses_cpus_it_cannot_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
