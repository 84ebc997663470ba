/*
 * error: the project's error codes and the error-buffer convention.
 *
 * Functions that can fail return an mc_err_t (MC_OK == 0) or, for constructors,
 * NULL. Human-readable details go into a caller-supplied buffer of MC_ERR_LEN
 * bytes (which may be NULL when the caller does not care), Redis-style, so a
 * library never prints on its own behalf and never exits the process.
 *
 * The buffer carries the code too: mc_err_set keeps it in the buffer's last
 * byte, after the message. So a constructor that returns NULL still hands
 * back its mc_err_t, through err: mc_err_code(err, ...) after
 * `if (!(m = mc_model_open(path, err)))` tells MC_ERR_IO (no such file) from
 * MC_ERR_FORMAT (not a GGUF file). Library code writes err only through
 * mc_err_set; a caller that copies a message elsewhere copies the code with
 * mc_err_set(dst, mc_err_code(src, ...), "%s", src).
 */
#ifndef MC_ERROR_H
#define MC_ERROR_H

#include <stddef.h>

#define MC_ERR_LEN 256

typedef enum {
    MC_OK = 0,
    MC_ERR_ARG,         // caller passed an invalid argument
    MC_ERR_IO,          // open/read/write/mmap failed
    MC_ERR_FORMAT,      // malformed input (file, message, config)
    MC_ERR_UNSUPPORTED, // well-formed but not something we handle
    MC_ERR_RANGE,       // value outside the model's bounds (ids, dims, context)
    MC_ERR_NOMEM,       // allocation failed
    MC_ERR_NET,         // network / protocol failure
    MC_ERR_TIMEOUT,     // a peer did not answer in time
    MC_ERR_BUSY,        // held by someone else for now (a node leased to another coordinator): try later
} mc_err_t;

// The last code, for range checks of codes that arrive from outside.
#define MC_ERR_LAST MC_ERR_BUSY

// Short static name of a code, e.g. "format".
const char *mc_err_name(mc_err_t code);

// printf-style write into err (MC_ERR_LEN bytes: a message of at most
// MC_ERR_LEN - 2 characters, then code); no-op when err is NULL. Returns
// code so call sites can write `return mc_err_set(err, MC_ERR_ARG, ...)`.
mc_err_t mc_err_set(char *err, mc_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// The code the last mc_err_set left in err; otherwise when err is NULL or
// holds none (a buffer mc_err_set has not written, or MC_OK).
mc_err_t mc_err_code(const char *err, mc_err_t otherwise);

#endif
