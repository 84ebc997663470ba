/*
 * flags: command lines parsed from a table. One row per flag holds its name,
 * the kind of value and the options field it sets, its default, its bounds and
 * its --help text, so the parser, the defaults and --help cannot disagree.
 *
 * Strict like parse.h: whole numbers are decimal digits only and in range; an
 * unknown flag, a missing value or a bad number is MC_ERR_ARG with a one-line
 * message ("unknown flag '--port' (see --help)", "--model needs a value",
 * "--threads: '0' is not a whole number in 1..512"). "--help" and "-h" stop
 * the parse wherever they stand.
 */
#ifndef MC_FLAGS_H
#define MC_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef enum {
    MC_FLAG_SWITCH, // bool, set to true; takes no value
    MC_FLAG_STRING, // const char *, borrowed from argv
    MC_FLAG_FILE,   // const char *, borrowed from argv, not empty ("--model needs a file name")
    MC_FLAG_INT,    // int in lo..hi
    MC_FLAG_U32,    // uint32_t in lo..hi
    MC_FLAG_CUSTOM, // the row's parse() reads the value into the field
} mc_flag_kind_t;

// def of a thread count: mc_pool_default_threads(), shown as such in --help.
#define MC_FLAG_DEF_THREADS INT64_MIN

typedef struct mc_flag {
    const char *name;    // "--threads", "-p"
    const char *arg;     // the value's name in --help ("N", "FILE"); NULL for a switch
    mc_flag_kind_t kind;
    size_t off;          // offsetof the field in the options struct
    int64_t def, lo, hi; // INT, U32: the default (set by mc_flags_init, shown in --help) and range
    // CUSTOM: parse v into the field at `field`; MC_ERR_ARG with a message naming flag.
    mc_err_t (*parse)(const char *flag, const char *v, void *field, char *err);
    const char *help;    // '\n' starts a continuation line, indented under the first
} mc_flag_t;

// The rows' defaults into opts (INT and U32 rows; other fields are left alone).
void mc_flags_init(const mc_flag_t *t, size_t n, void *opts);

// argv[1..argc) into opts. *help is set (and the parse stops) on --help or -h.
// *given (may be NULL) gets bit i for each row i seen (at most 64 rows). On
// failure opts may be part-written: parse into a copy and keep it on MC_OK.
mc_err_t mc_flags_parse(const mc_flag_t *t, size_t n, int argc, char **argv, void *opts, bool *help,
                        uint64_t *given, char *err);

// One entry per row, "  NAME ARG" then the help text from column col, each
// number's default and range after its text, and "--help, -h" last.
void mc_flags_usage(FILE *f, const mc_flag_t *t, size_t n, int col);

#endif
