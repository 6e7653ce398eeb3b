/* stalls.c — how much of each CPU the host takes away: the floor under any latency
 * percentile measured on this machine.
 *
 *   build/bench/stalls [-D SECONDS] [-g GAP_MS]     (defaults 5 s, 0.5 ms)
 *
 * One thread per online CPU, pinned to it, reads CLOCK_MONOTONIC in a tight loop for the
 * duration. Nothing else in the thread can block, so a gap between two consecutive reads
 * longer than GAP_MS is time the CPU did not run it: the kernel ran something else there,
 * or (on a VM, where the guest's steal counter may stay 0) the host did not run the vCPU.
 * Run it on an otherwise idle machine. Prints one JSON object: per CPU the number of gaps
 * per second, the ms lost per second, and the longest gap.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct probe {
    int cpu;
    double secs, gap_ms;
    long gaps;
    double lost_ms, worst_ms;
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void *spin(void *arg)
{
    struct probe *p = arg;
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(p->cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        fprintf(stderr, "stalls: cannot pin to CPU %d; measuring unpinned\n", p->cpu);
    double start = now_ms(), last = start, end = start + p->secs * 1e3;
    while (last < end) {
        double t = now_ms(), gap = t - last;
        if (gap > p->gap_ms) {
            p->gaps++;
            p->lost_ms += gap;
        }
        if (gap > p->worst_ms)
            p->worst_ms = gap;
        last = t;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double secs = 5, gap_ms = 0.5;
    int c;

    while ((c = getopt(argc, argv, "D:g:")) != -1) {
        switch (c) {
        case 'D': secs = atof(optarg); break;
        case 'g': gap_ms = atof(optarg); break;
        default: fprintf(stderr, "usage: stalls [-D SECONDS] [-g GAP_MS]\n"); return 2;
        }
    }
    if (secs <= 0 || gap_ms <= 0) {
        fprintf(stderr, "stalls: -D and -g must be positive\n");
        return 2;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    struct probe *p = calloc((size_t)n, sizeof *p);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    if (p == NULL || t == NULL)
        return 1;
    for (long i = 0; i < n; i++) {
        p[i] = (struct probe){.cpu = (int)i, .secs = secs, .gap_ms = gap_ms};
        if (pthread_create(&t[i], NULL, spin, &p[i]) != 0) {
            fprintf(stderr, "stalls: pthread_create failed\n");
            return 1;
        }
    }
    printf("{\"bench\":\"stalls\",\"seconds\":%g,\"gap_ms\":%g,\"cpus\":[", secs, gap_ms);
    for (long i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        printf("%s{\"cpu\":%d,\"gaps_per_s\":%.1f,\"lost_ms_per_s\":%.2f,\"worst_ms\":%.2f}",
               i ? "," : "", p[i].cpu, (double)p[i].gaps / secs, p[i].lost_ms / secs, p[i].worst_ms);
    }
    printf("]}\n");
    free(p);
    free(t);
    return 0;
}
