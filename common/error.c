/*
 * error: names of error codes and the formatted error-buffer writer.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *mc_err_name(mc_err_t code) {
    switch (code) {
    case MC_OK: return "ok";
    case MC_ERR_ARG: return "bad argument";
    case MC_ERR_IO: return "i/o";
    case MC_ERR_FORMAT: return "format";
    case MC_ERR_UNSUPPORTED: return "unsupported";
    case MC_ERR_RANGE: return "out of range";
    case MC_ERR_NOMEM: return "out of memory";
    case MC_ERR_NET: return "network";
    case MC_ERR_TIMEOUT: return "timeout";
    case MC_ERR_BUSY: return "busy";
    }
    return "unknown";
}

mc_err_t mc_err_set(char *err, mc_err_t code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, MC_ERR_LEN - 1, fmt, ap);
        va_end(ap);
        err[MC_ERR_LEN - 1] = (char)code;
    }
    return code;
}

mc_err_t mc_err_code(const char *err, mc_err_t otherwise) {
    const unsigned c = err ? (unsigned char)err[MC_ERR_LEN - 1] : 0;
    return c >= 1 && c <= MC_ERR_LAST ? (mc_err_t)c : otherwise;
}
