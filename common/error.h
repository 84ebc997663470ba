/*
 * error: the project's error codes and the error-buffer convention.
 *
 * Functions that can fail return an mc_err_t (MC_OK == 0) or, for constructors,
 * NULL. Human-readable details go into a caller-supplied buffer of MC_ERR_LEN
 * bytes (which may be NULL when the caller does not care), Redis-style, so a
 * library never prints on its own behalf and never exits the process.
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

// printf-style write into err (MC_ERR_LEN bytes); no-op when err is NULL.
// Returns code so call sites can write `return mc_err_set(err, MC_ERR_ARG, ...)`.
mc_err_t mc_err_set(char *err, mc_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
