/* err.c — names for the CN_E* codes of err.h. */
#include "err.h"

const char *cn_strerror(int err)
{
    switch (err) {
    case CN_OK:
        return "ok";
#define CN_X(name, val, msg) \
    case CN_E##name:         \
        return msg;
        CN_ERRNO_MAP(CN_X)
#undef CN_X
    }
    return "unknown error";
}
