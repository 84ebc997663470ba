/*
 * parse: strict decimal numbers for flags.
 */
#include "parse.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

mc_err_t mc_parse_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, char *err) {
    char *end;
    errno = 0;
    // strtoll alone would also skip leading blanks and take a '+' or "0x".
    const long long v = (*s == '-' || (*s >= '0' && *s <= '9')) ? strtoll(s, &end, 10) : 0;
    if ((*s != '-' && (*s < '0' || *s > '9')) || errno || end == s || *end || v < lo || v > hi)
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a whole number in %" PRId64 "..%" PRId64, what, s, lo, hi);
    *out = v;
    return MC_OK;
}

mc_err_t mc_parse_u64(const char *what, const char *s, uint64_t hi, uint64_t *out, char *err) {
    char *end = NULL;
    errno = 0;
    const unsigned long long v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
    if (*s < '0' || *s > '9' || errno || *end || v > hi)
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a whole number in 0..%" PRIu64, what, s, hi);
    *out = v;
    return MC_OK;
}

mc_err_t mc_parse_f32(const char *what, const char *s, float lo, float hi, float *out, char *err) {
    char *end;
    errno = 0;
    const float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi || *s == ' ' || *s == '\t')
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a number in %g..%g", what, s, (double)lo, (double)hi);
    *out = v;
    return MC_OK;
}

mc_err_t mc_parse_f64(const char *what, const char *s, double lo, double hi, double *out, char *err) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi || *s == ' ' || *s == '\t')
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a number in %g..%g", what, s, lo, hi);
    *out = v;
    return MC_OK;
}
