/* inference_raw.c — the "raw XGBoost" floor that cairn-inference's numbers are compared
 * to: a model file loaded in-process with the plain XGBoost C API, one booster with
 * nthread=1 shared by T threads (as the service does), and
 *   (a) single-row predictions from T threads for D seconds: throughput and p50/p99/p99.9
 *       latency per call;
 *   (b) a batch of B rows (default 1000) from one thread: p50 time per batch and rows/s;
 * printed as one JSON line on stdout. Rows are pseudo-random normals (fixed seed), 1024
 * distinct ones cycled so the trees are not walked along one cached path.
 *
 * Build (from the repository root; the bench scripts do this):
 *   mkdir -p build/bench && cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -pthread \
 *     bench/inference_raw.c -o build/bench/inference_raw $(pkg-config --cflags --libs xgboost) -lm
 * Run:
 *   build/bench/inference_raw MODEL [-t THREADS=2] [-d SECONDS=5] [-b BATCH_ROWS=1000]
 * The prediction call and its config are those of services/inference/inference_model.c
 * (XGBoosterPredictFromDense with an array interface over the caller's floats), so only
 * gbtree and dart models: gblinear has no in-place prediction in XGBoost 1.7.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xgboost/c_api.h>

#define DISTINCT_ROWS 1024
#define WARMUP_CALLS 2000
#define MAX_SAMPLES (8u << 20) /* latencies kept per thread; beyond that only counted */

static const char predict_config[] = "{\"type\":0,\"training\":false,\"iteration_begin\":0,"
                                     "\"iteration_end\":0,\"strict_shape\":false,"
                                     "\"missing\":NaN,\"cache_id\":0}";

static BoosterHandle booster;
static pthread_barrier_t warm, go; /* warm-ups done; the clock is set */
static int64_t until_ns;
static size_t nfeat;
static float *rows; /* DISTINCT_ROWS x nfeat */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    const char *e = XGBGetLastError();
    fprintf(stderr, "inference_raw: %s: %.*s\n", what, (int)strcspn(e, "\n"),
            e); /* not the stack trace */
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "inference_raw: out of memory\n");
        exit(1);
    }
    return p;
}

/* Predicts n rows at x; returns the number of values XGBoost gave. */
static size_t predict(const float *x, size_t n)
{
    char iface[160];
    snprintf(iface, sizeof iface,
             "{\"data\":[%" PRIuPTR ",true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
             (uintptr_t)x, n, nfeat);
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    if (XGBoosterPredictFromDense(booster, iface, predict_config, NULL, &shape, &dim, &res) != 0)
        die("predict");
    size_t total = 1;
    for (bst_ulong i = 0; i < dim; i++)
        total *= shape[i];
    volatile float sink = res[0]; /* the service copies the result out: touch it */
    (void)sink;
    return total;
}

struct worker {
    pthread_t t;
    size_t start_row;
    uint64_t calls;
    uint32_t *lat_ns; /* up to MAX_SAMPLES */
    size_t nlat, cap;
};

static void *single_rows(void *arg)
{
    struct worker *w = arg;
    size_t r = w->start_row;
    for (int i = 0; i < WARMUP_CALLS; i++)
        predict(rows + (r++ % DISTINCT_ROWS) * nfeat, 1);
    pthread_barrier_wait(&warm);
    pthread_barrier_wait(&go);
    while (now_ns() < until_ns) {
        const float *x = rows + (r++ % DISTINCT_ROWS) * nfeat;
        int64_t t0 = now_ns();
        predict(x, 1);
        int64_t dt = now_ns() - t0;
        w->calls++;
        if (w->nlat < w->cap)
            w->lat_ns[w->nlat++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of n sorted values. */
static size_t rank(size_t n, double q)
{
    size_t k = (size_t)ceil(q * (double)n);
    return k == 0 ? 0 : k - 1;
}

/* Standard normals from a fixed-seed xorshift + Box-Muller: the same rows every run. */
static float normal(uint64_t *s)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        u[i] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(u[0])) * cos(2 * M_PI * u[1]));
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static long arg_num(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < min || v > max) {
        fprintf(stderr, "inference_raw: %s must be an integer in [%ld, %ld]\n", what, min, max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long threads = 2, seconds = 5, batch = 1000;
    int opt;
    while ((opt = getopt(argc, argv, "t:d:b:")) != -1) {
        switch (opt) {
        case 't': threads = arg_num(optarg, 1, 256, "-t THREADS"); break;
        case 'd': seconds = arg_num(optarg, 1, 3600, "-d SECONDS"); break;
        case 'b': batch = arg_num(optarg, 1, 1000000, "-b BATCH_ROWS"); break;
        default:
            fprintf(stderr, "usage: %s MODEL [-t THREADS] [-d SECONDS] [-b BATCH_ROWS]\n", argv[0]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s MODEL [-t THREADS] [-d SECONDS] [-b BATCH_ROWS]\n", argv[0]);
        return 2;
    }
    const char *path = argv[optind];

    XGBSetGlobalConfig("{\"verbosity\":0}");
    if (XGBoosterCreate(NULL, 0, &booster) != 0 || XGBoosterSetParam(booster, "nthread", "1") != 0)
        die("create");
    int64_t t0 = now_ns();
    if (XGBoosterLoadModel(booster, path) != 0)
        die(path);
    if (XGBoosterSetParam(booster, "nthread", "1") != 0)
        die("nthread");
    double load_ms = (double)(now_ns() - t0) / 1e6;
    bst_ulong nf = 0;
    int rounds = 0;
    if (XGBoosterGetNumFeature(booster, &nf) != 0 || nf == 0 ||
        XGBoosterBoostedRounds(booster, &rounds) != 0)
        die("model shape");
    nfeat = (size_t)nf;

    size_t nrows = DISTINCT_ROWS > (size_t)batch ? DISTINCT_ROWS : (size_t)batch;
    rows = xmalloc(nrows * nfeat * sizeof *rows);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < nrows * nfeat; i++)
        rows[i] = normal(&seed);
    size_t outputs = predict(rows, 1);

    /* (a) single rows, T threads sharing the booster */
    struct worker *w = calloc((size_t)threads, sizeof *w);
    size_t cap = (size_t)seconds * 200000;
    if (cap > MAX_SAMPLES)
        cap = MAX_SAMPLES;
    pthread_barrier_init(&warm, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (long i = 0; i < threads; i++) {
        w[i].start_row = (size_t)i * 97;
        w[i].cap = cap;
        w[i].lat_ns = xmalloc(cap * sizeof *w[i].lat_ns);
        if (pthread_create(&w[i].t, NULL, single_rows, &w[i]) != 0) {
            fprintf(stderr, "inference_raw: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&warm);
    int64_t start = now_ns();
    until_ns = start + (int64_t)seconds * 1000000000;
    pthread_barrier_wait(&go);
    uint64_t calls = 0;
    size_t nlat = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(w[i].t, NULL);
        calls += w[i].calls;
        nlat += w[i].nlat;
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    uint32_t *lat = xmalloc((nlat ? nlat : 1) * sizeof *lat);
    for (long i = 0, k = 0; i < threads; i++) {
        memcpy(lat + k, w[i].lat_ns, w[i].nlat * sizeof *lat);
        k += (long)w[i].nlat;
        free(w[i].lat_ns);
    }
    qsort(lat, nlat, sizeof *lat, cmp_u32);

    /* (b) batches of B rows, one thread */
    size_t nb_cap = 100000, nb = 0;
    int64_t *bt = xmalloc(nb_cap * sizeof *bt);
    predict(rows, (size_t)batch); /* warm-up */
    int64_t b_until = now_ns() + (int64_t)seconds * 1000000000;
    while (nb < nb_cap && (nb < 20 || now_ns() < b_until)) {
        int64_t b0 = now_ns();
        predict(rows, (size_t)batch);
        bt[nb++] = now_ns() - b0;
    }
    qsort(bt, nb, sizeof *bt, cmp_i64);
    double b_p50_ms = (double)bt[rank(nb, 0.5)] / 1e6;

    int major, minor, patch;
    XGBoostVersion(&major, &minor, &patch);
    printf("{\"bench\":\"inference_raw\",\"xgboost\":\"%d.%d.%d\",\"model\":", major, minor, patch);
    print_json_string(path);
    printf(",\"features\":%zu,"
           "\"rounds\":%d,\"outputs\":%zu,\"load_ms\":%.2f,\"threads\":%ld,\"seconds\":%ld,"
           "\"single\":{\"calls\":%" PRIu64
           ",\"per_s\":%.0f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f},"
           "\"batch\":{\"rows\":%ld,\"batches\":%zu,\"p50_ms\":%.3f,\"rows_per_s\":%.0f}}\n",
           nfeat, rounds, outputs, load_ms, threads, seconds, calls, (double)calls / elapsed,
           nlat ? lat[rank(nlat, 0.5)] / 1e3 : 0.0, nlat ? lat[rank(nlat, 0.99)] / 1e3 : 0.0,
           nlat ? lat[rank(nlat, 0.999)] / 1e3 : 0.0, batch, nb, b_p50_ms,
           (double)batch / (b_p50_ms / 1e3));
    free(bt);
    free(lat);
    free(w);
    free(rows);
    pthread_barrier_destroy(&warm);
    pthread_barrier_destroy(&go);
    XGBoosterFree(booster);
    return 0;
}
