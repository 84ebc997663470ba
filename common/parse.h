/*
 * parse: numbers from command lines, strictly. Decimal digits with an
 * optional leading '-' (for signed values) and nothing else: no blanks, no
 * '+', no hex, no trailing text; a value outside the allowed range is an
 * error naming the flag, the text and the range.
 */
#ifndef MC_PARSE_H
#define MC_PARSE_H

#include <stdint.h>

#include "error.h"

// what: the flag or key, for the message ("--threads: 'x' is not a whole
// number in 1..512"). *out is untouched on failure (MC_ERR_ARG).
mc_err_t mc_parse_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, char *err);
mc_err_t mc_parse_u64(const char *what, const char *s, uint64_t hi, uint64_t *out, char *err);
// A finite number (decimal or exponent notation) in lo..hi.
mc_err_t mc_parse_f32(const char *what, const char *s, float lo, float hi, float *out, char *err);
mc_err_t mc_parse_f64(const char *what, const char *s, double lo, double hi, double *out, char *err);

#endif
