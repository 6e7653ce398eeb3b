/* redis.h — one asynchronous Redis connection per gateway loop thread, driven by that
 * thread's h2o event loop (hiredis's async context on an h2o socket made with
 * H2O_SOCKET_FLAG_DONT_READ, so h2o only reports readiness and hiredis does the I/O).
 *
 * Every command has a deadline (the policy file's redis.timeout_ms, an h2o timer). A
 * timeout, a lost connection or a failed connect takes the connection down: every command
 * waiting on it fails at once (its callback gets NULL), and while it is down no command
 * is sent (gw_redis_command returns CN_EUNAVAIL) — one PING per redis.probe_ms tries it
 * again, and the first answered PING brings it back up. The transitions are logged once
 * for the process (GW-REDIS-DOWN when the first thread loses Redis, GW-REDIS-UP when the
 * last one has it back) and shown by the gauge cairn_gateway_redis_up.
 *
 * Everything here runs on the loop thread that owns the connection.
 */
#ifndef GW_REDIS_H
#define GW_REDIS_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

struct gw_redis;
struct gw_redis_ticket;

/* A command's answer: reply is borrowed for the call; NULL when the command failed
 * (timeout, connection lost, connection freed). Called exactly once per command that
 * was sent, unless it was cancelled first. */
typedef void (*gw_redis_cb)(void *data, const redisReply *reply);
/* Called each time a connection is established, before any command is sent on it
 * (e.g. to SCRIPT LOAD). */
typedef void (*gw_redis_on_connect)(struct gw_redis *r, void *data);

/* A connection to host:port on loop; starts connecting at once. Never fails (a Redis that
 * is not there makes a connection that is down). */
struct gw_redis *gw_redis_new(h2o_loop_t *loop, const char *host, int port, int64_t timeout_ms, int64_t probe_ms,
                              gw_redis_on_connect on_connect, void *data);
/* Fails every command waiting (callbacks get NULL) and frees r. */
void gw_redis_free(struct gw_redis *r);
/* Applies a new command timeout / probe period (from a reloaded config). */
void gw_redis_set_timing(struct gw_redis *r, int64_t timeout_ms, int64_t probe_ms);
/* Whether commands may be sent now (connected, or making the first connection). */
bool gw_redis_usable(const struct gw_redis *r);

/* Sends a command (argv strings are copied). Returns 0: cb will be called once, later,
 * and *ticket (if not NULL) can cancel it; or CN_EUNAVAIL while Redis is down: cb is
 * never called. */
int gw_redis_command(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen, gw_redis_cb cb,
                     void *data, struct gw_redis_ticket **ticket);
/* Sends a command whose answer nobody waits for (SCRIPT LOAD). No deadline. */
void gw_redis_command_noreply(struct gw_redis *r, int argc, const char **argv, const size_t *argvlen);
/* The callback of a command sent will not be called (the request that waited is gone). */
void gw_redis_cancel(struct gw_redis_ticket *t);

/* Parses "host:port" (port 1..65535; host may be [v6]). Returns 0 or CN_EINVAL. */
int gw_redis_addr_parse(const char *addr, char *host, size_t hostlen, int *port);

#endif
