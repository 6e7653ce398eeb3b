/* util.c — allocation that aborts on OOM, clocks, randomness, hex and integer parsing
 * (see util.h). */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "err.h"

static void oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"error\",\"event\":\"OOM\",\"msg\":\"out of memory allocating %zu bytes\"}\n", n);
    abort();
}

void *cn_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *cn_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *cn_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *cn_strdup(const char *s)
{
    return cn_strndup(s, strlen(s));
}

char *cn_strndup(const char *s, size_t n)
{
    char *p = cn_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cn_mono_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }
int64_t cn_mono_us(void) { return clock_us(CLOCK_MONOTONIC); }
int64_t cn_wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }
int64_t cn_wall_s(void) { return clock_us(CLOCK_REALTIME) / 1000000; }

void cn_random_bytes(void *buf, size_t n)
{
    if (RAND_bytes(buf, (int)n) != 1) {
        fprintf(stderr, "{\"level\":\"error\",\"event\":\"RAND-FAIL\",\"msg\":\"RAND_bytes failed\"}\n");
        abort();
    }
}

/* Bumped in a forked child, so that no thread there hands out its parent's bytes. */
static atomic_uint id_pool_gen;
static pthread_once_t id_pool_once = PTHREAD_ONCE_INIT;
static void id_pool_forked(void) { atomic_fetch_add(&id_pool_gen, 1); }
static void id_pool_init(void) { pthread_atfork(NULL, NULL, id_pool_forked); }

void cn_random_id_bytes(void *buf, size_t n)
{
    static __thread unsigned char pool[4096];
    static __thread size_t left;
    static __thread unsigned gen;
    pthread_once(&id_pool_once, id_pool_init);
    unsigned now = atomic_load(&id_pool_gen);
    if (gen != now) {
        gen = now;
        left = 0;
    }
    unsigned char *out = buf;
    while (n > 0) {
        if (left == 0) {
            cn_random_bytes(pool, sizeof pool);
            left = sizeof pool;
        }
        size_t k = n < left ? n : left;
        unsigned char *from = pool + sizeof pool - left;
        memcpy(out, from, k);
        memset(from, 0, k); /* an id's bytes are not kept once handed out */
        out += k;
        n -= k;
        left -= k;
    }
}

uint64_t cn_fast_random(void)
{
    static __thread uint64_t s;
    while (s == 0)
        cn_random_bytes(&s, sizeof s);
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
}

double cn_fast_unit(void) { return (double)(cn_fast_random() >> 11) * 0x1.0p-53; }

void cn_hex(const void *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void cn_request_id_new(char out[33])
{
    unsigned char r[16];
    cn_random_id_bytes(r, sizeof r);
    cn_hex(r, sizeof r, out);
}

int cn_parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0')
        return CN_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return CN_EINVAL;
    *out = v;
    return CN_OK;
}
