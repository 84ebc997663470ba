/*
 * log: stderr writer for MC_LOG* macros; level threshold from $MC_LOG.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mc_log_level_t s_threshold(void) {
    const char *v = getenv("MC_LOG");
    if (!v) return MC_LOG_WARN;
    if (!strcmp(v, "error")) return MC_LOG_ERROR;
    if (!strcmp(v, "info")) return MC_LOG_INFO;
    if (!strcmp(v, "debug")) return MC_LOG_DEBUG;
    return MC_LOG_WARN;
}

void mc_log_write(mc_log_level_t level, const char *func, const char *fmt, ...) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > s_threshold()) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    // One fprintf per line so lines from several threads do not interleave.
    fprintf(stderr, "[%s] %s: %s\n", names[level], func, line);
}
