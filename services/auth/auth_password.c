/* auth_password.c — the rules for emails, passwords and API key names, and Argon2id
 * hashing on a bounded pool.
 *
 * Argon2id (libargon2; OpenSSL 3.0 has none) with OWASP's costs m=19 MiB, t=2, p=1 takes
 * ~25 ms of one core and 19 MiB per hash. Hashing runs on the calling RPC worker, but at
 * most `slots` at once and with at most `waiters` more callers queued for a slot; anyone
 * beyond that is turned away at once (the handler answers RESOURCE_EXHAUSTED). With
 * slots + waiters below the worker count, a login flood always leaves workers free for
 * Refresh, Me and GetJwks. Waiters are served before newcomers so nobody starves.
 *
 * Login for an unknown email verifies the given password against a dummy hash made at
 * start-up with the same costs, so "no such user" and "wrong password" take the same time.
 *
 * To change the costs, change the ARGON_* constants: stored hashes carry their own
 * parameters and keep verifying.
 */
#include "auth.h"

#include <argon2.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define ARGON_T 2
#define ARGON_M_KIB 19456
#define ARGON_P 1
#define ARGON_SALT 16
#define ARGON_HASH 32

/* --- emails --- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Checks the part after the '@': dot-separated labels of [a-z0-9-], none empty, none
 * starting or ending with '-', none over 63 (DNS), at least two labels. */
static int check_domain(const char *d, size_t n, const char **why)
{
    size_t label = 0, dots = 0;

    if (n == 0) {
        *why = "must have a domain after the @";
        return CN_EINVAL;
    }
    if (n > 253) {
        *why = "the domain must be at most 253 characters";
        return CN_EINVAL;
    }
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? d[i] : '.';
        if (c == '.') {
            if (label == 0) {
                *why =
                    "the domain must not have an empty label (a leading, trailing or double dot)";
                return CN_EINVAL;
            }
            if (d[i - 1] == '-') {
                *why = "a domain label must not start or end with a hyphen";
                return CN_EINVAL;
            }
            if (i < n)
                dots++;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            *why = "the domain may contain only letters, digits, hyphens and dots";
            return CN_EINVAL;
        }
        if (c == '-' && label == 0) {
            *why = "a domain label must not start or end with a hyphen";
            return CN_EINVAL;
        }
        if (++label > 63) {
            *why = "a domain label must be at most 63 characters";
            return CN_EINVAL;
        }
    }
    if (dots == 0) {
        *why = "the domain must contain a dot, like example.com";
        return CN_EINVAL;
    }
    return CN_OK;
}

int auth_email_normalize(const char *in, char *out, size_t cap, const char **why)
{
    const char *at = NULL;
    size_t start = 0, end = strlen(in), n, local;

    while (start < end && is_space(in[start]))
        start++;
    while (end > start && is_space(in[end - 1]))
        end--;
    n = end - start;
    if (n == 0) {
        *why = "is required";
        return CN_EINVAL;
    }
    if (n > AUTH_EMAIL_MAX) {
        *why = "must be at most 254 characters";
        return CN_EINVAL;
    }
    if (cap < n + 1) {
        *why = "must be at most 254 characters";
        return CN_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[start + i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        if (c == '@') {
            if (at != NULL) {
                *why = "must contain exactly one @";
                return CN_EINVAL;
            }
            at = out + i;
        }
    }
    out[n] = '\0';
    if (at == NULL) {
        *why = "must contain an @, like name@example.com";
        return CN_EINVAL;
    }
    local = (size_t)(at - out);
    if (local == 0) {
        *why = "must have a name before the @";
        return CN_EINVAL;
    }
    if (local > 64) {
        *why = "the part before the @ must be at most 64 characters";
        return CN_EINVAL;
    }
    for (size_t i = 0; i < local; i++) {
        unsigned char c = (unsigned char)out[i];
        /* Printable ASCII without space; no double quote, so no quoted local parts. */
        if (c < 0x21 || c > 0x7e || c == '"') {
            *why = "the part before the @ may contain only printable ASCII characters, "
                   "without spaces or quotes";
            return CN_EINVAL;
        }
    }
    return check_domain(at + 1, n - local - 1, why);
}

/* --- passwords --- */

/* Counts the code points of s if it is valid UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF); -1 if it is not. */
static long utf8_count(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;

    while (*p != '\0') {
        unsigned char b = *p;
        uint32_t cp, min;
        int more;

        if (b < 0x80) {
            p++;
            count++;
            continue;
        }
        if ((b & 0xe0) == 0xc0) {
            cp = b & 0x1f, more = 1, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            cp = b & 0x0f, more = 2, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            cp = b & 0x07, more = 3, min = 0x10000;
        } else {
            return -1;
        }
        p++;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        count++;
    }
    return count;
}

int auth_password_check(const char *pw, const char **why)
{
    long n = utf8_count(pw);

    if (n < 0) {
        *why = "must be valid UTF-8";
        return CN_EINVAL;
    }
    if (n == 0) {
        *why = "is required";
        return CN_EINVAL;
    }
    if (n < AUTH_PASSWORD_MIN) {
        *why = "must be at least 12 characters";
        return CN_EINVAL;
    }
    if (n > AUTH_PASSWORD_MAX) {
        *why = "must be at most 1024 characters";
        return CN_EINVAL;
    }
    return CN_OK;
}

/* --- other text: API key names, filters --- */

bool auth_text_ok(const char *s, long max)
{
    long n = utf8_count(s);
    return n >= 0 && n <= max;
}

int auth_key_name_check(const char *name, const char **why)
{
    long n = utf8_count(name);
    bool blank = true;

    if (n < 0) {
        *why = "must be valid UTF-8";
        return CN_EINVAL;
    }
    if (n == 0) {
        *why = "is required";
        return CN_EINVAL;
    }
    if (n > AUTH_KEY_NAME_MAX) {
        *why = "must be at most 100 characters";
        return CN_EINVAL;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *why = "must not contain control characters";
            return CN_EINVAL;
        }
        if (*p != ' ')
            blank = false;
    }
    if (blank) {
        *why = "must not be blank";
        return CN_EINVAL;
    }
    return CN_OK;
}

/* --- the bounded hashing pool --- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a slot came free */
    int slots, max_waiters;
    int running, waiting;
    bool ready;
    char dummy[AUTH_HASH_MAX];
    struct cn_series *seconds;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Takes a slot, waiting at most wait_ms: 0, CN_EFULL or CN_ETIMEDOUT. */
static int slot_acquire(int64_t wait_ms)
{
    struct timespec until;
    int rc = CN_OK;

    pthread_mutex_lock(&pool.mu);
    /* Newcomers go behind anyone already waiting. */
    if (pool.running < pool.slots && pool.waiting == 0) {
        pool.running++;
        goto out;
    }
    if (pool.waiting >= pool.max_waiters) {
        rc = CN_EFULL;
        goto out;
    }
    if (wait_ms <= 0) {
        rc = CN_ETIMEDOUT;
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pool.waiting++;
    while (pool.running >= pool.slots) {
        if (pthread_cond_timedwait(&pool.cv, &pool.mu, &until) != 0 && pool.running >= pool.slots) {
            rc = CN_ETIMEDOUT;
            break;
        }
    }
    pool.waiting--;
    if (rc == CN_OK)
        pool.running++;
    else if (pool.running < pool.slots && pool.waiting > 0)
        pthread_cond_broadcast(&pool.cv); /* a wake-up meant for us goes to the others */
out:
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

static void slot_release(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.running--;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

/* Hashes pw with a fresh salt; the slot must be held. */
static int hash_now(const char *pw, char *out, size_t cap)
{
    uint8_t salt[ARGON_SALT];
    int64_t t0 = cn_mono_us();
    int rc;

    cn_random_bytes(salt, sizeof salt);
    rc = argon2id_hash_encoded(ARGON_T, ARGON_M_KIB, ARGON_P, pw, strlen(pw), salt, sizeof salt,
                               ARGON_HASH, out, cap);
    if (pool.seconds != NULL)
        cn_series_observe(pool.seconds, (double)(cn_mono_us() - t0) / 1e6);
    if (rc != ARGON2_OK) {
        cn_log_error("AUTH-HASH-FAIL", "argon2id hashing failed: %s", argon2_error_message(rc));
        return CN_ECRYPTO;
    }
    return CN_OK;
}

int auth_password_init(int slots, int waiters)
{
    char pw[33];
    uint8_t r[16];
    struct cn_metric *m;
    pthread_condattr_t attr;

    if (argon2_encodedlen(ARGON_T, ARGON_M_KIB, ARGON_P, ARGON_SALT, ARGON_HASH, Argon2_id) >=
        AUTH_HASH_MAX)
        return CN_ECRYPTO;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool.cv, &attr);
    pthread_condattr_destroy(&attr);
    pool.slots = slots > 0 ? slots : 1;
    pool.max_waiters = waiters >= 0 ? waiters : 0;
    pool.running = pool.waiting = 0;

    m = cn_metric_new(CN_METRIC_HISTOGRAM, "cairn_auth_hash_seconds",
                      "Time spent in one Argon2id hash or verify", NULL, NULL, 0);
    pool.seconds = cn_metric_series(m, NULL);

    /* The dummy is the hash of a random password nobody knows: verifying against it
     * costs what a real verify costs and never matches. */
    cn_random_bytes(r, sizeof r);
    cn_hex(r, sizeof r, pw);
    if (hash_now(pw, pool.dummy, sizeof pool.dummy) != CN_OK) {
        pthread_cond_destroy(&pool.cv);
        return CN_ECRYPTO;
    }
    pool.ready = true;
    return CN_OK;
}

void auth_password_fini(void)
{
    if (!pool.ready)
        return;
    pthread_cond_destroy(&pool.cv);
    pool.ready = false;
}

int auth_password_hash(const char *pw, int64_t wait_ms, char *out, size_t cap)
{
    int rc = slot_acquire(wait_ms);
    if (rc != CN_OK)
        return rc;
    rc = hash_now(pw, out, cap);
    slot_release();
    return rc;
}

int auth_password_verify(const char *encoded, const char *pw, int64_t wait_ms)
{
    int64_t t0;
    int rc, arc;

    rc = slot_acquire(wait_ms);
    if (rc != CN_OK)
        return rc;
    t0 = cn_mono_us();
    arc = argon2id_verify(encoded != NULL ? encoded : pool.dummy, pw, strlen(pw));
    if (pool.seconds != NULL)
        cn_series_observe(pool.seconds, (double)(cn_mono_us() - t0) / 1e6);
    slot_release();
    if (encoded == NULL)
        return CN_EDENIED;
    if (arc == ARGON2_OK)
        return CN_OK;
    if (arc != ARGON2_VERIFY_MISMATCH)
        cn_log_error("AUTH-HASH-BAD", "a stored password hash cannot be verified: %s",
                     argon2_error_message(arc));
    return CN_EDENIED;
}
