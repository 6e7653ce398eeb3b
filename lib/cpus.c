/* cpus.c — CAIRN_CPUS: parse a CPU list, confine the process to it, count its CPUs
 * (see cpus.h). */
#include "cpus.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

/* Reads a CPU number at *p (digits only), advancing *p. False when there is none or it
 * is not below CPU_SETSIZE. */
static bool cpu_number(const char **p, long *out)
{
    const char *s = *p;
    long v = 0;

    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v >= CPU_SETSIZE)
            return false;
        s++;
    }
    *p = s;
    *out = v;
    return true;
}

int cn_cpus_parse(const char *list, cpu_set_t *set, char *err, size_t errlen)
{
    const char *p = list;

    CPU_ZERO(set);
    if (list == NULL || *list == '\0') {
        snprintf(err, errlen, "expected CPU numbers like \"0\", \"2-3\" or \"0,2,4-5\", got nothing");
        return CN_EINVAL;
    }
    for (;;) {
        long lo, hi;
        const char *at = p;

        if (!cpu_number(&p, &lo)) {
            snprintf(err, errlen,
                     "expected a CPU number (0 to %d) at \"%.20s\" in \"%.40s\"; write CPUs like "
                     "\"0\", \"2-3\" or \"0,2,4-5\"",
                     CPU_SETSIZE - 1, at, list);
            return CN_EINVAL;
        }
        hi = lo;
        if (*p == '-') {
            p++;
            at = p;
            if (!cpu_number(&p, &hi) || hi < lo) {
                snprintf(err, errlen,
                         "expected the end of the range %ld-… (a CPU number from %ld to %d) at "
                         "\"%.20s\" in \"%.40s\"",
                         lo, lo, CPU_SETSIZE - 1, at, list);
                return CN_EINVAL;
            }
        }
        for (long c = lo; c <= hi; c++)
            CPU_SET((int)c, set);
        if (*p == '\0')
            return CN_OK;
        if (*p != ',') {
            snprintf(err, errlen, "expected ',' or the end at \"%.20s\" in \"%.40s\"", p, list);
            return CN_EINVAL;
        }
        p++;
    }
}

/* Writes set as a list ("0-1,3") into buf. */
static void cpus_text(const cpu_set_t *set, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && n < len; c++) {
        if (!CPU_ISSET(c, set))
            continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set))
            e++;
        int w = e > c ? snprintf(buf + n, len - n, "%s%d-%d", n ? "," : "", c, e)
                      : snprintf(buf + n, len - n, "%s%d", n ? "," : "", c);
        if (w < 0)
            break;
        n += (size_t)w;
        c = e;
    }
}

int cn_cpus_apply(const char *list, char *err, size_t errlen)
{
    cpu_set_t want, allowed, both;
    char have[128];

    if (list == NULL || *list == '\0')
        return CN_OK;
    if (cn_cpus_parse(list, &want, err, errlen) != CN_OK)
        return CN_EINVAL;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        snprintf(err, errlen, "cannot read this process's CPUs: %s", strerror(errno));
        return CN_EINTERNAL;
    }
    CPU_AND(&both, &want, &allowed);
    if (!CPU_EQUAL(&both, &want)) {
        cpus_text(&allowed, have, sizeof have);
        snprintf(err, errlen, "\"%.40s\" names CPUs this process cannot run on (it may use %s)",
                 list, have);
        return CN_EINVAL;
    }
    /* Every thread that exists now (libraries may have started some), then this one's
     * mask is what threads started later inherit. */
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) {
        snprintf(err, errlen, "cannot list this process's threads (/proc/self/task): %s", strerror(errno));
        return CN_EINTERNAL;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long tid = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0')
            continue; /* "." and ".." */
        if (sched_setaffinity((pid_t)tid, sizeof want, &want) != 0 && errno != ESRCH) {
            snprintf(err, errlen, "cannot confine thread %ld to CPUs %.40s: %s", tid, list, strerror(errno));
            closedir(d);
            return CN_EINTERNAL;
        }
    }
    closedir(d);
    if (sched_setaffinity(0, sizeof want, &want) != 0) {
        snprintf(err, errlen, "cannot confine this process to CPUs %.40s: %s", list, strerror(errno));
        return CN_EINTERNAL;
    }
    return CN_OK;
}

int cn_cpu_count(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
