/* err.h — the error codes every libcairn call returns, generated from one list.
 *
 * Fallible calls return int: 0 (CN_OK) on success or a negative CN_E* code, and hand
 * results back through out-parameters. The human-readable detail, where there is one, is
 * recorded once by the caller that knows why (on the call or connection context).
 * To add a code, add one X() line below; cn_strerror() follows from it.
 */
#ifndef CN_ERR_H
#define CN_ERR_H

#define CN_ERRNO_MAP(X)                                                   \
    X(INVAL, -1, "invalid argument")                                      \
    X(NOTFOUND, -2, "not found")                                          \
    X(EXIST, -3, "already exists")                                        \
    X(UNAVAIL, -4, "unavailable")                                         \
    X(TIMEDOUT, -5, "timed out")                                          \
    X(TOOBIG, -6, "too big")                                              \
    X(DB, -7, "database error")                                           \
    X(PROTO, -8, "malformed message")                                     \
    X(FULL, -9, "queue full")                                             \
    X(CLOSED, -10, "closed")                                              \
    X(CRYPTO, -11, "cryptographic failure")                               \
    X(IO, -12, "i/o error")                                               \
    X(DENIED, -13, "permission denied")                                   \
    X(INTERNAL, -14, "internal error")

enum cn_err {
    CN_OK = 0,
#define CN_X(name, val, msg) CN_E##name = val,
    CN_ERRNO_MAP(CN_X)
#undef CN_X
};

/* Returns a static string for a CN_E* code (or "ok" / "unknown error"). */
const char *cn_strerror(int err);

#endif
