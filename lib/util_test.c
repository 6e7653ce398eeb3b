/* util_test.c — the helpers of util.c that carry a promise beyond their one line:
 * identifier bytes from the per-thread pool are all different, across refills of the
 * pool, and a forked child never repeats what its parent hands out next. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define IDS 3000 /* 16 bytes each: 48 000 bytes, about twelve refills of the 4 KiB pool */

static int cmp16(const void *a, const void *b) { return memcmp(a, b, 16); }

static void test_id_bytes_differ_across_refills(void **state)
{
    (void)state;
    unsigned char (*ids)[16] = calloc(IDS, 16);
    static const unsigned char zero[16];
    for (int i = 0; i < IDS; i++) {
        cn_random_id_bytes(ids[i], 16);
        assert_memory_not_equal(ids[i], zero, 16);
    }
    qsort(ids, IDS, 16, cmp16);
    for (int i = 1; i < IDS; i++)
        assert_memory_not_equal(ids[i - 1], ids[i], 16);
    /* odd sizes take the pool's tail and the next fill together */
    unsigned char odd[4099];
    cn_random_id_bytes(odd, sizeof odd);
    char a[33], b[33];
    cn_request_id_new(a);
    cn_request_id_new(b);
    assert_int_equal(strlen(a), 32);
    assert_string_not_equal(a, b);
    free(ids);
}

static void test_forked_child_does_not_repeat_parent(void **state)
{
    (void)state;
    unsigned char first[16], parent_next[16], child_next[16];
    cn_random_id_bytes(first, sizeof first); /* the pool is filled and partly used */
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char c[16];
        cn_random_id_bytes(c, sizeof c);
        _exit(write(fd[1], c, sizeof c) == (ssize_t)sizeof c ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(read(fd[0], child_next, sizeof child_next), (ssize_t)sizeof child_next);
    cn_random_id_bytes(parent_next, sizeof parent_next);
    assert_memory_not_equal(child_next, parent_next, 16);
    close(fd[0]);
    close(fd[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_bytes_differ_across_refills),
        cmocka_unit_test(test_forked_child_does_not_repeat_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
