/* loadgen.c — an open-loop HTTP/1.1 load generator that sends at an even rate.
 *
 *   loadgen -R RATE [-c CONNS] [-D SECS] [-w WARMUP_SECS] [-m METHOD] [-d BODY_FILE |
 *           -L BODIES_FILE] [-H 'Name: value']... [-o TRACE_FILE] http://HOST:PORT/PATH
 *
 * Options follow h2load's where they overlap (-c, -D, -d, -H); a body makes the method
 * POST unless -m says otherwise. Defaults: 32 connections, 10 s, 1 s of warm-up.
 *
 * Why not h2load --rps: it gives each connection its own timer, all started together, so
 * ten connections at 200 rps each send ten requests at the same instant every 5 ms (74 %
 * of the gaps between sends were under 50 µs at "2 000 rps"). That measures bursts of ten,
 * not a rate. Here request k is due at exactly start + k/RATE and goes out on any idle
 * keep-alive connection (a timerfd wakes the loop at each due time). Latency is counted
 * from the due time, not from when a connection was free to send it, so a server that
 * falls behind cannot hide its queue (what wrk2 calls correcting coordinated omission).
 *
 * Prints one JSON object: requests sent and answered, 2xx, other statuses, errors, the
 * achieved rate, latency percentiles in ms, and how far sending fell behind schedule.
 * Requests due in the first WARMUP seconds are sent but not counted. -L cycles through
 * the lines of a file, one request body each; -o FILE writes "due_ms latency_ms status"
 * for each counted request, to see when in the run the slow ones were. Responses must carry Content-Length (the
 * gateway always sets it); anything else is counted as an error and the connection is
 * reopened. One thread, so it costs the machine under test one core at most.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define RBUF 65536

struct conn {
    int fd;
    bool busy;
    int64_t due_ns;          /* schedule of the request in flight */
    const char *out;         /* unsent part of the request */
    size_t out_len;
    char rbuf[RBUF];
    size_t rlen;
};

static struct {
    const char *host, *port, *path, *method;
    double rate, secs, warm;
    int nconn;
    char **reqs;             /* prebuilt requests */
    size_t *req_len;
    size_t nreq;
} o = {.method = "GET", .secs = 10, .warm = 1, .nconn = 32};

static struct addrinfo *addr;
static int ep;
static uint32_t *lat_us;     /* counted latencies */
static size_t nlat, cap_lat;
static uint64_t sent, answered, ok2xx, non2xx, errors, reconnects;
static int64_t max_behind_ns;
static FILE *trace;          /* -o: "due_ms latency_ms status" per counted request */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen -R RATE [-c CONNS] [-D SECS] [-w WARMUP] [-m METHOD] "
                    "[-d BODY_FILE | -L BODIES_FILE] [-H 'Name: value']... [-o TRACE_FILE] http://HOST:PORT/PATH\n");
    exit(2);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    for (size_t r; (r = fread(b + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap)
            b = realloc(b, cap *= 2);
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

static void add_request(const char *headers, const char *body, size_t blen)
{
    char *r;
    int n = asprintf(&r, "%s %s HTTP/1.1\r\nHost: %s:%s\r\n%sContent-Length: %zu\r\n\r\n", o.method,
                     o.path, o.host, o.port, headers, blen);
    if (n < 0)
        die("asprintf");
    r = realloc(r, (size_t)n + blen);
    memcpy(r + n, body, blen);
    o.reqs = realloc(o.reqs, (o.nreq + 1) * sizeof *o.reqs);
    o.req_len = realloc(o.req_len, (o.nreq + 1) * sizeof *o.req_len);
    o.reqs[o.nreq] = r;
    o.req_len[o.nreq++] = (size_t)n + blen;
}

static void conn_open(struct conn *c)
{
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) != 0 && errno != EINPROGRESS)
        die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
    c->busy = false;
    c->rlen = 0;
    c->out_len = 0;
}

static void conn_fail(struct conn *c)
{
    if (c->busy)
        errors++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    reconnects++;
    conn_open(c);
}

static void conn_flush(struct conn *c)
{
    while (c->out_len > 0) {
        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == ENOTCONN)
                return; /* EPOLLOUT resumes it */
            conn_fail(c);
            return;
        }
        c->out += w;
        c->out_len -= (size_t)w;
    }
}

static void conn_send(struct conn *c, int64_t due)
{
    size_t i = sent % o.nreq;
    c->busy = true;
    c->due_ns = due;
    c->out = o.reqs[i];
    c->out_len = o.req_len[i];
    sent++;
    conn_flush(c);
}

/* A complete response at the front of rbuf: its length, 0 if not complete yet, -1 if it
 * cannot be read (no Content-Length, say). */
static long response_len(const struct conn *c, int *status)
{
    const char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (end == NULL)
        return c->rlen == sizeof c->rbuf ? -1 : 0;
    size_t hlen = (size_t)(end - c->rbuf) + 4;
    if (hlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(c->rbuf + 9);
    long clen = -1;
    for (const char *p = memchr(c->rbuf, '\n', hlen); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            clen = strtol(p + 15, NULL, 10);
    }
    if (clen < 0 || hlen + (size_t)clen > sizeof c->rbuf)
        return -1;
    return c->rlen >= hlen + (size_t)clen ? (long)(hlen + (size_t)clen) : 0;
}

static void record(int64_t due, int64_t t_end, int64_t count_from)
{
    if (due < count_from)
        return;
    if (nlat == cap_lat)
        lat_us = realloc(lat_us, (cap_lat = cap_lat ? cap_lat * 2 : 65536) * sizeof *lat_us);
    int64_t us = (t_end - due) / 1000;
    lat_us[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void conn_read(struct conn *c, int64_t count_from)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            conn_fail(c);
            return;
        }
        if (r < 0)
            return;
        c->rlen += (size_t)r;
        int status = 0;
        long n = response_len(c, &status);
        if (n < 0 || (n > 0 && !c->busy)) {
            conn_fail(c);
            return;
        }
        if (n > 0) {
            answered++;
            if (c->due_ns >= count_from) {
                if (status >= 200 && status < 300)
                    ok2xx++;
                else
                    non2xx++;
            }
            int64_t t_end = now_ns();
            record(c->due_ns, t_end, count_from);
            if (trace && c->due_ns >= count_from)
                fprintf(trace, "%.3f %.3f %d\n", (c->due_ns - count_from) / 1e6, (t_end - c->due_ns) / 1e6, status);
            c->busy = false;
            memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
            c->rlen -= (size_t)n;
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct(double p)
{
    if (nlat == 0)
        return 0;
    size_t i = (size_t)(p * (double)nlat);
    return lat_us[i < nlat ? i : nlat - 1] / 1000.0;
}

int main(int argc, char **argv)
{
    char headers[4096] = "";
    const char *body_file = NULL, *bodies_file = NULL;
    bool method_set = false;
    for (int opt; (opt = getopt(argc, argv, "R:c:D:w:m:d:L:H:o:")) != -1;) {
        switch (opt) {
        case 'R': o.rate = atof(optarg); break;
        case 'c': o.nconn = atoi(optarg); break;
        case 'D': o.secs = atof(optarg); break;
        case 'w': o.warm = atof(optarg); break;
        case 'm': o.method = optarg; method_set = true; break;
        case 'd': body_file = optarg; break;
        case 'o':
            if ((trace = fopen(optarg, "w")) == NULL)
                die(optarg);
            break;
        case 'L': bodies_file = optarg; break;
        case 'H':
            if (strlen(headers) + strlen(optarg) + 3 >= sizeof headers)
                usage();
            strcat(headers, optarg);
            strcat(headers, "\r\n");
            break;
        default: usage();
        }
    }
    if ((body_file || bodies_file) && !method_set)
        o.method = "POST";
    if (optind != argc - 1 || o.rate <= 0 || o.nconn < 1 || o.secs <= 0 || o.warm < 0)
        usage();
    static char url[2048];
    if (strncmp(argv[optind], "http://", 7) != 0 || strlen(argv[optind]) >= sizeof url)
        usage();
    strcpy(url, argv[optind] + 7);
    char *slash = strchr(url, '/');
    o.path = slash ? strdup(slash) : "/";
    if (slash)
        *slash = 0;
    char *colon = strrchr(url, ':');
    if (colon == NULL)
        usage();
    *colon = 0;
    o.host = url;
    o.port = colon + 1;

    if (bodies_file) {
        size_t n;
        char *all = slurp(bodies_file, &n);
        for (char *line = all, *nl; line < all + n; line = nl + 1) {
            nl = memchr(line, '\n', (size_t)(all + n - line));
            if (nl == NULL)
                nl = all + n;
            if (nl > line)
                add_request(headers, line, (size_t)(nl - line));
        }
    } else if (body_file) {
        size_t n;
        char *b = slurp(body_file, &n);
        add_request(headers, b, n);
    } else {
        add_request(headers, "", 0);
    }
    if (o.nreq == 0)
        usage();

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (getaddrinfo(o.host, o.port, &hints, &addr) != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s\n", o.host);
        return 2;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0)
        die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    struct conn *conns = calloc((size_t)o.nconn, sizeof *conns);
    for (int i = 0; i < o.nconn; i++)
        conn_open(&conns[i]);
    usleep(100000); /* let the connections finish their handshakes */

    const double period = 1e9 / o.rate;
    const int64_t start = now_ns();
    const int64_t count_from = start + (int64_t)(o.warm * 1e9);
    const int64_t stop = count_from + (int64_t)(o.secs * 1e9);
    uint64_t k = 0;                       /* next request to schedule */
    size_t qcap = 1 << 20, qh = 0, qt = 0; /* due times waiting for an idle connection */
    int64_t *q = malloc(qcap * sizeof *q);
    int64_t drain_until = 0;

    for (;;) {
        int64_t now = now_ns();
        for (int64_t due; (due = start + (int64_t)((double)k * period)) <= now && due < stop; k++) {
            if (qt - qh < qcap)
                q[qt++ % qcap] = due;
            else
                errors++; /* over a million requests behind: the server is not answering */
        }
        for (int i = 0; i < o.nconn && qh < qt; i++) {
            if (!conns[i].busy) {
                int64_t due = q[qh++ % qcap];
                if (now - due > max_behind_ns)
                    max_behind_ns = now - due;
                conn_send(&conns[i], due);
            }
        }
        int64_t next = start + (int64_t)((double)k * period);
        bool scheduling = next < stop;
        if (!scheduling) {
            bool idle = qh == qt;
            for (int i = 0; idle && i < o.nconn; i++)
                idle = !conns[i].busy;
            if (drain_until == 0)
                drain_until = now + 2000000000LL;
            if (idle || now >= drain_until)
                break;
            next = now + 1000000; /* check again in 1 ms while the last answers come in */
        }
        struct itimerspec its = {.it_value = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000}};
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN)
                    die("timerfd");
                continue;
            }
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                conn_fail(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                conn_flush(c);
            if (evs[i].events & EPOLLIN)
                conn_read(c, count_from);
        }
    }
    uint64_t unanswered = 0;
    for (int i = 0; i < o.nconn; i++)
        unanswered += conns[i].busy && conns[i].due_ns >= count_from;
    unanswered += qt - qh;
    qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
    printf("{\"rate\":%.0f,\"seconds\":%.1f,\"connections\":%d,\"sent\":%llu,\"counted\":%zu,"
           "\"ok\":%llu,\"non2xx\":%llu,\"errors\":%llu,\"unanswered\":%llu,\"reconnects\":%llu,"
           "\"achieved_rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
           "\"max_ms\":%.3f,\"max_behind_ms\":%.3f}\n",
           o.rate, o.secs, o.nconn, (unsigned long long)sent, nlat, (unsigned long long)ok2xx,
           (unsigned long long)non2xx, (unsigned long long)errors, (unsigned long long)unanswered,
           (unsigned long long)reconnects,
           (double)nlat / o.secs, pct(0.50), pct(0.90), pct(0.99), pct(0.999), nlat ? lat_us[nlat - 1] / 1000.0 : 0,
           max_behind_ns / 1e6);
    if (trace)
        fclose(trace);
    return 0;
}
