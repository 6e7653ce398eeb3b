/* util.h — small helpers every module uses: clocks, allocation that aborts on OOM,
 * random bytes, hex. Out of memory aborts the process (processes are supervised and
 * cheap to restart) so callers never handle NULL from cn_malloc and friends.
 */
#ifndef CN_UTIL_H
#define CN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define CN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *cn_malloc(size_t n);
void *cn_calloc(size_t n, size_t size);
void *cn_realloc(void *p, size_t n);
char *cn_strdup(const char *s);
char *cn_strndup(const char *s, size_t n);

/* Monotonic milliseconds / microseconds, for deadlines and durations. */
int64_t cn_mono_ms(void);
int64_t cn_mono_us(void);
/* Wall-clock unix milliseconds / seconds. */
int64_t cn_wall_ms(void);
int64_t cn_wall_s(void);

/* Fills buf with n cryptographically random bytes (OpenSSL RAND_bytes); aborts on failure. */
void cn_random_bytes(void *buf, size_t n);
/* Random bytes for identifiers (request, trace and span ids): OpenSSL's CSPRNG output
 * too, but drawn 4 KiB at a time per thread, so an id costs no system call (RAND_bytes
 * asks getpid on every call, and the gateway makes three ids per request). A thread's
 * unused bytes are dropped in a forked child. Keys, salts and tokens use cn_random_bytes. */
void cn_random_id_bytes(void *buf, size_t n);
/* Fast pseudo-random numbers for dice, sampling and spreading load, never for secrets:
 * this thread's xorshift64*, seeded once from cn_random_bytes (threads share nothing). */
uint64_t cn_fast_random(void);
/* A double in [0, 1) from cn_fast_random. */
double cn_fast_unit(void);
/* Writes 2n lowercase hex characters plus a NUL into out (size >= 2n+1). */
void cn_hex(const void *in, size_t n, char *out);
/* A fresh random request id: 32 hex characters + NUL into out[33]. */
void cn_request_id_new(char out[33]);

/* Parses a decimal integer in [min,max] from a whole string; 0 or CN_EINVAL. */
int cn_parse_int(const char *s, long long min, long long max, long long *out);

#endif
