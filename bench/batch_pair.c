/* batch_pair.c — a batch through the gateway against the same batch in raw XGBoost, the
 * two measured side by side on one thread: a block of 16 raw predictions back to back,
 * then a block of 8 requests back to back, again and again. The host's speed here moves
 * in phases of seconds and less (raw XGBoost has measured 1.5 ms and 2.2 ms for the same
 * batch a minute apart, and 2.34 and 1.65 ms in consecutive 75 ms runs of equal work), so a ratio of
 * medians taken in different seconds says as much about the host as about the service.
 * A pair of blocks takes ~60 ms: the median of the pairs' ratios (median request /
 * median raw prediction, each over the block's last 6, the first ones letting the other
 * block's effects pass) compares like with like.
 * bench/inference.sh reports it beside its alternating rounds.
 *
 * The raw side loads MODEL with the plain C API, nthread=1, and predicts the rows the
 * request carries: ROWS_FILE from byte ROWS_OFFSET on, little-endian FP32 row-major, as
 * many whole rows as are there (for OIP binary tensor data, the request body itself and
 * its Inference-Header-Content-Length). The prediction call and config are those of
 * services/inference/inference_model.c and bench/inference_raw.c.
 *
 * The HTTP side: one keep-alive HTTP/1.1 connection to HOST:PORT, POST PATH with BODY and
 * the -H headers; each answer is read whole (Content-Length framing, which is what the
 * gateway sends) before the next request.
 *
 * Build (from the repository root; bench/inference.sh does this):
 *   mkdir -p build/bench && cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror \
 *     bench/batch_pair.c -o build/bench/batch_pair $(pkg-config --cflags --libs xgboost) -lm
 * Run:
 *   build/bench/batch_pair MODEL ROWS_FILE ROWS_OFFSET HOST:PORT PATH BODY \
 *     [-H 'Name: value']... [-d SECONDS=5]
 * Prints one JSON line: blocks, raw and HTTP p50 and the HTTP p99 over every measured
 * call, p50 / raw p50, the median of the pairs' ratios, and the same median over the half
 * of the pairs taken in the host's fastest phases, as their neighbours' raw times tell
 * (with the slowest such neighbour average in that half).
 * Exits 1 on any answer that is not 200.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <xgboost/c_api.h>

#define RAW_BLOCK 16 /* raw predictions per block */
#define HTTP_BLOCK 8 /* then requests */
#define KEEP 6       /* of each, the last KEEP are measured */
#define WARMUP_BLOCKS 3
#define MAX_SAMPLES 600000
#define MAX_HEADERS 16

static const char predict_config[] = "{\"type\":0,\"training\":false,\"iteration_begin\":0,"
                                     "\"iteration_end\":0,\"strict_shape\":false,"
                                     "\"missing\":NaN,\"cache_id\":0}";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *fmt, const char *what)
{
    fprintf(stderr, "batch_pair: ");
    fprintf(stderr, fmt, what);
    fputc('\n', stderr);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        fail("%s", "out of memory");
    return p;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail("cannot open %s", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        buf = realloc(buf, cap);
        if (buf == NULL)
            fail("%s", "out of memory");
    }
    if (ferror(f))
        fail("cannot read %s", path);
    fclose(f);
    *len = n;
    return buf;
}

static BoosterHandle booster;

static void predict(const float *x, size_t n, size_t nfeat)
{
    char iface[256];
    snprintf(iface, sizeof iface,
             "{\"data\":[%llu,true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
             (unsigned long long)(uintptr_t)x, n, nfeat);
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    if (XGBoosterPredictFromDense(booster, iface, predict_config, NULL, &shape, &dim, &res) != 0)
        fail("predict: %s", XGBGetLastError());
}

/* Sends req whole, then reads one answer; returns its status. buf is the connection's
 * read buffer (answers fit in it; bytes of a next answer are never there: one request
 * is outstanding at a time). */
static int exchange(int fd, const char *req, size_t req_len, char *buf, size_t cap)
{
    for (size_t off = 0; off < req_len;) {
        ssize_t w = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fail("%s", "send failed (the gateway closed the connection?)");
        off += (size_t)w;
    }
    size_t n = 0, need = 0;
    char *body = NULL;
    for (;;) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail("%s", "connection closed before a whole answer");
        n += (size_t)r;
        buf[n] = '\0';
        if (body == NULL && (body = strstr(buf, "\r\n\r\n")) != NULL) {
            body += 4;
            const char *cl = NULL;
            for (const char *p = buf; p < body && (p = strstr(p, "\r\n")) != NULL; p += 2)
                if (strncasecmp(p + 2, "content-length:", 15) == 0) {
                    cl = p + 17;
                    break;
                }
            if (cl == NULL)
                fail("%s", "an answer without Content-Length");
            need = (size_t)(body - buf) + strtoul(cl, NULL, 10);
            if (need >= cap)
                fail("%s", "an answer larger than the read buffer");
        }
        if (body != NULL && n >= need)
            break;
        if (n == cap - 1)
            fail("%s", "answer headers larger than the read buffer");
    }
    return atoi(buf + 9); /* "HTTP/1.1 200" */
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct pair {
    double raw;   /* the block's median raw prediction, ns */
    double ratio; /* the block's median request over that */
    double phase; /* the host's speed around it: its neighbours' raw medians, averaged */
};

static int cmp_pair_phase(const void *a, const void *b)
{
    double x = ((const struct pair *)a)->phase, y = ((const struct pair *)b)->phase;
    return (x > y) - (x < y);
}

static double median_i64(const int64_t *sorted, size_t n)
{
    return n % 2 ? (double)sorted[n / 2] : ((double)sorted[n / 2 - 1] + (double)sorted[n / 2]) / 2;
}

/* One block: RAW_BLOCK raw predictions back to back, then HTTP_BLOCK requests. */
static void block(const float *rows, size_t nrows, size_t nf, int fd, const char *req,
                  size_t req_len, char *buf, size_t cap, int64_t *braw, int64_t *bhttp)
{
    for (int i = 0; i < RAW_BLOCK; i++) {
        int64_t t0 = now_ns();
        predict(rows, nrows, nf);
        braw[i] = now_ns() - t0;
    }
    for (int i = 0; i < HTTP_BLOCK; i++) {
        int64_t t0 = now_ns();
        int status = exchange(fd, req, req_len, buf, cap);
        bhttp[i] = now_ns() - t0;
        if (status != 200) {
            fprintf(stderr, "batch_pair: HTTP %d: %.300s\n", status, buf);
            exit(1);
        }
    }
}

static const char usage[] = "usage: batch_pair MODEL ROWS_FILE ROWS_OFFSET HOST:PORT PATH BODY "
                            "[-H 'Name: value']... [-d SECONDS]";

int main(int argc, char **argv)
{
    const char *hdrs[MAX_HEADERS];
    int nhdrs = 0;
    long seconds = 5;
    const char *pos[6];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-H") == 0 && i + 1 < argc && nhdrs < MAX_HEADERS)
            hdrs[nhdrs++] = argv[++i];
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            seconds = strtol(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && npos < 6)
            pos[npos++] = argv[i];
        else
            fail("%s", usage);
    }
    if (npos != 6 || seconds < 1 || seconds > 3600)
        fail("%s", usage);

    XGBSetGlobalConfig("{\"verbosity\":0}");
    if (XGBoosterCreate(NULL, 0, &booster) != 0 ||
        XGBoosterSetParam(booster, "nthread", "1") != 0 ||
        XGBoosterLoadModel(booster, pos[0]) != 0 || XGBoosterSetParam(booster, "nthread", "1") != 0)
        fail("cannot load %s", pos[0]);
    bst_ulong nf = 0;
    if (XGBoosterGetNumFeature(booster, &nf) != 0 || nf == 0)
        fail("%s", "the model has no features");
    size_t rows_len, off = strtoul(pos[2], NULL, 10);
    char *rows_file = read_file(pos[1], &rows_len);
    if (off >= rows_len)
        fail("%s", "ROWS_OFFSET is past the end of ROWS_FILE");
    size_t nrows = (rows_len - off) / (nf * sizeof(float));
    if (nrows == 0)
        fail("%s", "ROWS_FILE holds no whole row after ROWS_OFFSET");
    float *rows = xmalloc(nrows * nf * sizeof *rows); /* aligned, unlike the file's offset */
    memcpy(rows, rows_file + off, nrows * nf * sizeof *rows);
    free(rows_file);

    size_t body_len;
    char *body = read_file(pos[5], &body_len);
    size_t head_cap = 4096 + strlen(pos[4]);
    for (int i = 0; i < nhdrs; i++)
        head_cap += strlen(hdrs[i]) + 2;
    char *req = xmalloc(head_cap + body_len);
    int hl = snprintf(req, head_cap, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n",
                      pos[4], pos[3], body_len);
    for (int i = 0; i < nhdrs; i++)
        hl += snprintf(req + hl, head_cap - (size_t)hl, "%s\r\n", hdrs[i]);
    hl += snprintf(req + hl, head_cap - (size_t)hl, "\r\n");
    memcpy(req + hl, body, body_len);
    size_t req_len = (size_t)hl + body_len;
    free(body);

    char host[64];
    const char *colon = strrchr(pos[3], ':');
    if (colon == NULL || (size_t)(colon - pos[3]) >= sizeof host)
        fail("%s", "HOST:PORT wanted, e.g. 127.0.0.1:8080");
    memcpy(host, pos[3], (size_t)(colon - pos[3]));
    host[colon - pos[3]] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        fail("not an IPv4 address: %s", host);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail("cannot connect to %s", pos[3]);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    size_t cap = 1 << 20;
    char *buf = xmalloc(cap);
    int64_t *raw = xmalloc(MAX_SAMPLES * sizeof *raw), *http = xmalloc(MAX_SAMPLES * sizeof *http);
    double *ratio = xmalloc(2 * (MAX_SAMPLES / KEEP) * sizeof *ratio);
    struct pair *pairs = xmalloc(MAX_SAMPLES / KEEP * sizeof *pairs);
    int64_t braw[RAW_BLOCK], bhttp[HTTP_BLOCK];
    size_t n = 0, nblocks = 0;
    for (int i = 0; i < WARMUP_BLOCKS; i++)
        block(rows, nrows, nf, fd, req, req_len, buf, cap, braw, bhttp);
    int64_t until = now_ns() + (int64_t)seconds * 1000000000;
    while (n + KEEP <= MAX_SAMPLES && now_ns() < until) {
        block(rows, nrows, nf, fd, req, req_len, buf, cap, braw, bhttp);
        /* The first of each run are its warm-up: the caches the other run used, and for the
         * raw run also the service's own work after its answers (the prediction log's
         * writes into PostgreSQL), which measured up to 10 % on the first 8 predictions. */
        memcpy(raw + n, braw + RAW_BLOCK - KEEP, KEEP * sizeof *raw);
        memcpy(http + n, bhttp + HTTP_BLOCK - KEEP, KEEP * sizeof *http);
        qsort(raw + n, KEEP, sizeof *raw, cmp_i64);
        qsort(http + n, KEEP, sizeof *http, cmp_i64);
        pairs[nblocks].raw = median_i64(raw + n, KEEP);
        pairs[nblocks].ratio = median_i64(http + n, KEEP) / pairs[nblocks].raw;
        ratio[nblocks] = pairs[nblocks].ratio;
        nblocks++;
        n += KEEP;
    }
    close(fd);
    if (n == 0)
        fail("%s", "no block measured");
    qsort(raw, n, sizeof *raw, cmp_i64);
    qsort(http, n, sizeof *http, cmp_i64);
    qsort(ratio, nblocks, sizeof *ratio, cmp_dbl);
    /* The pairs in the host's fast phases: in its slow ones XGBoost's share of a request
     * grows and flatters the ratio, so this half is the stricter figure. The phase is read
     * off the neighbouring pairs' raw times, not the pair's own: choosing pairs by their
     * own denominator would choose the ones whose raw time was low by chance. */
    for (size_t i = 0; i < nblocks; i++) {
        double sum = 0;
        int k = 0;
        if (i > 0)
            sum += pairs[i - 1].raw, k++;
        if (i + 1 < nblocks)
            sum += pairs[i + 1].raw, k++;
        pairs[i].phase = k ? sum / k : pairs[i].raw;
    }
    qsort(pairs, nblocks, sizeof *pairs, cmp_pair_phase);
    size_t nfast = (nblocks + 1) / 2;
    for (size_t i = 0; i < nfast; i++)
        ratio[nblocks + i] = pairs[i].ratio;
    qsort(ratio + nblocks, nfast, sizeof *ratio, cmp_dbl);
    double raw50 = median_i64(raw, n) / 1e6, http50 = median_i64(http, n) / 1e6;
    printf("{\"bench\":\"batch_pair\",\"rows\":%zu,\"blocks\":%zu,\"per_block\":%d,"
           "\"raw_p50_ms\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"ratio_of_p50\":%.3f,"
           "\"median_ratio\":%.3f,\"fast_half_phase_ms\":%.3f,\"fast_half_median_ratio\":%.3f}\n",
           nrows, nblocks, KEEP, raw50, http50, (double)http[n * 99 / 100] / 1e6, http50 / raw50,
           ratio[nblocks / 2], pairs[nfast - 1].phase / 1e6, ratio[nblocks + nfast / 2]);
    free(pairs);
    free(raw);
    free(http);
    free(ratio);
    free(buf);
    free(req);
    free(rows);
    XGBoosterFree(booster);
    return 0;
}
