/* redis_test.c — the Redis connection's state machine on a real h2o loop against fake
 * servers: nobody listening (down at once, commands refused), a server that accepts and
 * never answers (a command times out, its callback gets NULL once; the probe's PING
 * times out too instead of hanging), and the same server starting to answer (the next
 * probe brings the connection back and commands flow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis.c"

/* A fake Redis: accepts connections; while `answer` is set, replies "+PONG" to every read. */
struct fake {
    int lfd, port;
    atomic_int answer, stop;
    pthread_t tid;
};

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int conns[16], n = 0;
    while (!atomic_load(&f->stop)) {
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(f->lfd, &rs);
        int maxfd = f->lfd;
        for (int i = 0; i < n; i++) {
            FD_SET(conns[i], &rs);
            if (conns[i] > maxfd)
                maxfd = conns[i];
        }
        struct timeval tv = {0, 10000};
        if (select(maxfd + 1, &rs, NULL, NULL, &tv) <= 0)
            continue;
        if (FD_ISSET(f->lfd, &rs) && n < 16)
            conns[n++] = accept(f->lfd, NULL, NULL);
        for (int i = 0; i < n; i++) {
            if (!FD_ISSET(conns[i], &rs) || !atomic_load(&f->answer))
                continue;
            char buf[512];
            ssize_t got = read(conns[i], buf, sizeof buf);
            if (got > 0 && write(conns[i], "+PONG\r\n", 7) != 7)
                break;
        }
    }
    for (int i = 0; i < n; i++)
        close(conns[i]);
    return NULL;
}

static void fake_start(struct fake *f)
{
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    socklen_t l = sizeof a;
    getsockname(f->lfd, (struct sockaddr *)&a, &l);
    f->port = ntohs(a.sin_port);
    pthread_create(&f->tid, NULL, fake_main, f);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->tid, NULL);
    close(f->lfd);
}

static int calls, nulls, pongs;
/* One loop for the whole file, reachable until exit. */
static h2o_loop_t *loop;

static void on_answer(void *data, const redisReply *r)
{
    (void)data;
    calls++;
    if (r == NULL)
        nulls++;
    else if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0)
        pongs++;
}

/* Runs the loop until pred(r) or ms pass; returns pred's last value. */
static int run_until(h2o_loop_t *l, struct gw_redis *r, int (*pred)(struct gw_redis *), int ms)
{
    int64_t end = cn_mono_ms() + ms;
    while (!pred(r) && cn_mono_ms() < end)
        h2o_evloop_run(l, 5);
    return pred(r);
}

static int is_down(struct gw_redis *r) { return r->state == DOWN; }
static int is_up(struct gw_redis *r) { return r->state == UP; }
static int answered(struct gw_redis *r) { (void)r; return calls > 0; }

static void test_nobody_listening(void **state)
{
    (void)state;
    struct fake f = {0};
    fake_start(&f);
    int port = f.port;
    fake_stop(&f);   /* the port is now closed */
    struct gw_redis *r = gw_redis_new(loop, "127.0.0.1", port, 50, 100000, NULL, NULL);
    assert_true(run_until(loop, r, is_down, 2000));
    assert_false(gw_redis_usable(r));
    const char *argv[] = {"PING"};
    size_t len[] = {4};
    calls = 0;
    assert_int_equal(gw_redis_command(r, 1, argv, len, on_answer, NULL, NULL), CN_EUNAVAIL);
    h2o_evloop_run(loop, 0);
    assert_int_equal(calls, 0);   /* refused commands never call back */
    assert_int_equal(atomic_load(&down_count), 1);
    gw_redis_free(r);
    assert_int_equal(atomic_load(&down_count), 0);
}

static void test_silent_then_answering(void **state)
{
    (void)state;
    struct fake f = {0};
    fake_start(&f);
    struct gw_redis *r = gw_redis_new(loop, "127.0.0.1", f.port, 30, 150, NULL, NULL);
    const char *argv[] = {"PING"};
    size_t len[] = {4};

    /* A silent server: the command fails after its deadline, once, and Redis is down. */
    calls = nulls = pongs = 0;
    int64_t t0 = cn_mono_ms();
    assert_int_equal(gw_redis_command(r, 1, argv, len, on_answer, NULL, NULL), CN_OK);
    assert_true(run_until(loop, r, answered, 2000));
    int64_t took = cn_mono_ms() - t0;
    assert_true(took >= 25 && took < 500);
    assert_int_equal(nulls, 1);
    assert_true(is_down(r));
    /* The probe's PING to the silent server times out: still down, not stuck probing. */
    int64_t until = cn_mono_ms() + 600;
    while (cn_mono_ms() < until)
        h2o_evloop_run(loop, 5);
    assert_true(r->state == DOWN || r->state == PROBING);
    assert_int_equal(calls, 1);

    /* The server answers again: a probe brings the connection up. */
    atomic_store(&f.answer, 1);
    assert_true(run_until(loop, r, is_up, 3000));
    assert_int_equal(atomic_load(&down_count), 0);
    calls = nulls = pongs = 0;
    assert_int_equal(gw_redis_command(r, 1, argv, len, on_answer, NULL, NULL), CN_OK);
    struct gw_redis_ticket *t;
    assert_int_equal(gw_redis_command(r, 1, argv, len, on_answer, NULL, &t), CN_OK);
    gw_redis_cancel(t);
    assert_true(run_until(loop, r, answered, 2000));
    for (int i = 0; i < 20; i++)
        h2o_evloop_run(loop, 5);
    assert_int_equal(calls, 1);
    assert_int_equal(pongs, 1);
    gw_redis_free(r);
    fake_stop(&f);
}

int main(void)
{
    loop = h2o_evloop_create();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nobody_listening),
        cmocka_unit_test(test_silent_then_answering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
