/*
 * log: one-line diagnostics on stderr, with a time stamp and a level.
 *
 * Library code logs only what a caller cannot see through return codes
 * (e.g. a node dropping an unparsable packet); everything else goes through
 * error buffers. The minimum level comes from the MC_LOG environment
 * variable (error|warn|info|debug, default warn), read on every call so
 * there is no mutable global state. Lines are for users: the function that
 * wrote one is named only at the debug level.
 *
 * mc_log_status() writes the status lines of a long-running process (a node
 * saying who connected, what it holds, why it refused something).
 */
#ifndef MC_LOG_H
#define MC_LOG_H

#include <stdio.h>

typedef enum { MC_LOG_ERROR = 0, MC_LOG_WARN, MC_LOG_INFO, MC_LOG_DEBUG } mc_log_level_t;

void mc_log_write(mc_log_level_t level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// "2026-12-04 14:10:00.123 who: text" on f, flushed (no-op when f is NULL).
void mc_log_status(FILE *f, const char *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define MC_LOGE(...) mc_log_write(MC_LOG_ERROR, __func__, __VA_ARGS__)
#define MC_LOGW(...) mc_log_write(MC_LOG_WARN, __func__, __VA_ARGS__)
#define MC_LOGI(...) mc_log_write(MC_LOG_INFO, __func__, __VA_ARGS__)
#define MC_LOGD(...) mc_log_write(MC_LOG_DEBUG, __func__, __VA_ARGS__)

#endif
