/* auth_events.c — revocations published to gateways, so their caches drop a key or a
 * user at once instead of at the end of their TTL (and the lifting of a user's).
 *
 * An nng PUB socket listens on CAIRN_AUTH_EVENTS (each replica on its own address);
 * gateways dial it with SUB sockets. Messages are plain text, no NUL and no newline:
 *   "revoke-key <key_id>"    a key was revoked (by its owner, or its owner was disabled)
 *   "revoke-user <user_id>"  a user was disabled: refuse their still-valid access tokens
 *   "enable-user <user_id>"  a disabled user was enabled again: accept their new tokens
 *                            (iat has one-second resolution, so a gateway cannot tell a
 *                            token signed in the second of the disable from an older one)
 * so a subscriber can filter by topic ("revoke-key " / ...). Handlers publish
 * after their transaction committed. PUB never blocks and keeps nothing for subscribers
 * that are not connected: a gateway that was away misses messages, which its cache TTL
 * bounds. That is also why a listen that fails for a reason that may pass (address in use,
 * say by another replica on the same host) does not stop the service: it is logged
 * (AUTH-EVENTS-LISTEN), the gauge cairn_auth_events_listening stays 0, and
 * auth_events_retry (called by the housekeeping thread, auth_lastused.c) tries again.
 * A malformed address is a configuration error and fails start-up.
 *
 * To publish a new kind of event: add a function beside auth_events_revoke_key, a line in
 * the list above and in README.md, and teach the gateway's subscriber.
 */
#include "auth.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>

#include "err.h"
#include "log.h"
#include "metrics.h"

#define EVENT_MAX 96

static struct {
    nng_socket sock;
    bool open; /* set by start before any worker runs, cleared by stop after they ended */
    atomic_bool listening;
    pthread_mutex_t mu; /* one listen attempt at a time */
    const char *addr;
    struct cn_series *listening_gauge;
    struct cn_series *sent_key, *sent_user, *sent_enable, *failed_key, *failed_user, *failed_enable;
} ev = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* An address that can never be listened on: a configuration error, not bad timing. */
static bool permanent(int rv)
{
    return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL;
}

/* Tries to listen once; 0, or the nng error. Logs a failure only when it is new, so a
 * retry every period does not fill the log. */
static int try_listen(void)
{
    static int last_rv;
    int rv;

    pthread_mutex_lock(&ev.mu);
    if (atomic_load(&ev.listening)) {
        pthread_mutex_unlock(&ev.mu);
        return 0;
    }
    rv = nng_listen(ev.sock, ev.addr, NULL, 0);
    if (rv == 0) {
        atomic_store(&ev.listening, true);
        cn_series_set(ev.listening_gauge, 1);
        cn_log_info("AUTH-EVENTS", "publishing revocations on %s%s", ev.addr,
                    last_rv != 0 ? " (listening now after earlier failures)" : "");
    } else if (permanent(rv)) {
        cn_log_error("AUTH-EVENTS-LISTEN", "cannot listen on CAIRN_AUTH_EVENTS %s: %s", ev.addr,
                     nng_strerror(rv));
    } else if (rv != last_rv) {
        cn_log_error("AUTH-EVENTS-LISTEN",
                     "cannot listen on CAIRN_AUTH_EVENTS %s: %s; gateways will not hear "
                     "revocations from this replica until it can (retried periodically)",
                     ev.addr, nng_strerror(rv));
    }
    last_rv = rv;
    pthread_mutex_unlock(&ev.mu);
    return rv;
}

int auth_events_start(const char *addr)
{
    struct cn_metric *m;
    int rv;

    m = cn_metric_new(CN_METRIC_GAUGE, "cairn_auth_events_listening",
                      "1 while the revocation PUB socket listens on CAIRN_AUTH_EVENTS", NULL, NULL,
                      0);
    ev.listening_gauge = cn_metric_series(m, NULL);
    m = cn_metric_new(CN_METRIC_COUNTER, "cairn_auth_revocations_published_total",
                      "Revocation events published to gateways, by kind and result", "kind,result",
                      NULL, 0);
    ev.sent_key = cn_metric_series(m, (const char *[]){"key", "sent"});
    ev.sent_user = cn_metric_series(m, (const char *[]){"user", "sent"});
    ev.failed_key = cn_metric_series(m, (const char *[]){"key", "failed"});
    ev.failed_user = cn_metric_series(m, (const char *[]){"user", "failed"});
    ev.sent_enable = cn_metric_series(m, (const char *[]){"enable", "sent"});
    ev.failed_enable = cn_metric_series(m, (const char *[]){"enable", "failed"});

    if (addr == NULL || addr[0] == '\0') {
        cn_log_info("AUTH-EVENTS", "CAIRN_AUTH_EVENTS is empty: revocations are not published");
        return CN_OK;
    }
    rv = nng_pub0_open(&ev.sock);
    if (rv != 0) {
        cn_log_error("AUTH-EVENTS-LISTEN", "cannot open a PUB socket: %s", nng_strerror(rv));
        return CN_EIO;
    }
    ev.addr = addr;
    ev.open = true;
    rv = try_listen();
    if (permanent(rv)) {
        /* Logged by try_listen; this one will never work. */
        auth_events_stop();
        return CN_EINVAL;
    }
    return CN_OK;
}

void auth_events_retry(void)
{
    if (ev.open && !atomic_load(&ev.listening))
        try_listen();
}

void auth_events_stop(void)
{
    if (!ev.open)
        return;
    nng_close(ev.sock);
    ev.open = false;
    atomic_store(&ev.listening, false);
    cn_series_set(ev.listening_gauge, 0);
}

/* Sends "<kind> <id>". A PUB send only fails when the socket is closed or out of memory:
 * counted and logged, never the caller's problem (their change is committed). */
static void publish(const char *kind, const char *id, struct cn_series *sent,
                    struct cn_series *failed, const char *request_id)
{
    char msg[EVENT_MAX];
    int n, rv;

    if (!ev.open)
        return;
    n = snprintf(msg, sizeof msg, "%s %s", kind, id);
    if (n < 0 || (size_t)n >= sizeof msg)
        return; /* ids are short; a longer one is not ours */
    rv = nng_send(ev.sock, msg, (size_t)n, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        cn_series_add(failed, 1);
        cn_log(CN_LOG_WARN, "AUTH-EVENTS-SEND", request_id, "cannot publish %s %s: %s", kind, id,
               nng_strerror(rv));
        return;
    }
    cn_series_add(sent, 1);
}

void auth_events_revoke_key(const char *key_id, const char *request_id)
{
    publish("revoke-key", key_id, ev.sent_key, ev.failed_key, request_id);
}

void auth_events_revoke_user(const char *user_id, const char *request_id)
{
    publish("revoke-user", user_id, ev.sent_user, ev.failed_user, request_id);
}

void auth_events_enable_user(const char *user_id, const char *request_id)
{
    publish("enable-user", user_id, ev.sent_enable, ev.failed_enable, request_id);
}
