/*
 * log: stderr writer for MC_LOG* macros; level threshold from $MC_LOG; status
 * lines with a time stamp.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static mc_log_level_t s_threshold(void) {
    const char *v = getenv("MC_LOG");
    if (!v) return MC_LOG_WARN;
    if (!strcmp(v, "error")) return MC_LOG_ERROR;
    if (!strcmp(v, "info")) return MC_LOG_INFO;
    if (!strcmp(v, "debug")) return MC_LOG_DEBUG;
    return MC_LOG_WARN;
}

// "2026-12-04 14:10:00.123" in local time.
static void s_stamp(char *buf, size_t cap) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03ld", ts.tv_nsec / 1000000);
}

void mc_log_write(mc_log_level_t level, const char *func, const char *fmt, ...) {
    static const char *const names[] = {"error", "warning", "info", "debug"};
    const mc_log_level_t threshold = s_threshold();
    if (level > threshold) return;
    char line[1024], stamp[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s_stamp(stamp, sizeof stamp);
    // One fprintf per line so lines from several threads do not interleave.
    // Function names are for developers: only at the debug level.
    if (threshold == MC_LOG_DEBUG)
        fprintf(stderr, "%s %s (%s): %s\n", stamp, names[level], func, line);
    else
        fprintf(stderr, "%s %s: %s\n", stamp, names[level], line);
}

void mc_log_status(FILE *f, const char *who, const char *fmt, ...) {
    if (!f) return;
    char line[1024], stamp[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s_stamp(stamp, sizeof stamp);
    fprintf(f, "%s %s: %s\n", stamp, who, line);
    fflush(f);
}
