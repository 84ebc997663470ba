/*
 * flags: command lines parsed from a table. One row per flag (or positional
 * argument) holds its name, the kind of value and the options field it sets,
 * its default, its bounds and its --help text, so the parser, the defaults
 * and --help cannot disagree.
 *
 * Strict like parse.h: whole numbers are decimal digits only and in range; an
 * unknown flag, a missing value, a bad number or an argument too many is
 * MC_ERR_ARG with a one-line message ("unknown flag '--port' (see --help)",
 * "--model needs a value", "--threads: '0' is not a whole number in 1..512",
 * "unexpected argument 'x' (see --help)"). "--help" and "-h" stop the parse
 * wherever they stand.
 *
 * A binary's table: one row per flag, e.g.
 *   {"--port", "N", MC_FLAG_U32, offsetof(opts_t, port), 8080, 0, 65535, .help = "TCP port"},
 * and adding a flag is adding a row (and its field).
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
    MC_FLAG_U64,    // uint64_t, any value 0..2^64-1 (seeds); default: the field's own
    MC_FLAG_F32,    // float in flo..fhi; default: the field's own
    MC_FLAG_CUSTOM, // the row's parse() reads the value into the field
    MC_FLAG_ARG,    // a positional argument, const char * borrowed from argv: name is its name in
                    // --help ("HF_DIR"); arguments not starting with '-' fill these rows in order
} mc_flag_kind_t;

// def of a thread count: mc_pool_default_threads(), shown as such in --help.
#define MC_FLAG_DEF_THREADS INT64_MIN
// def of a number whose default the options' own initialiser sets (a params
// *_default(), a preset): mc_flags_init leaves the field, --help shows its
// value in the defaults given to mc_flags_usage.
#define MC_FLAG_DEF_OWN (INT64_MIN + 1)
// def of a number whose default the help text explains ("default: all"):
// mc_flags_init leaves the field, --help shows only the bounds.
#define MC_FLAG_DEF_TEXT (INT64_MIN + 2)

typedef struct mc_flag {
    const char *name;    // "--threads", "-p"; MC_FLAG_ARG: the argument's name ("DIR")
    const char *arg;     // the value's name in --help ("N", "FILE"); NULL for a switch
    mc_flag_kind_t kind;
    size_t off;          // offsetof the field in the options struct
    int64_t def, lo, hi; // INT, U32: the default (set by mc_flags_init, shown in --help) and range;
                         // U64, F32: the field's own default unless def is MC_FLAG_DEF_TEXT
    // CUSTOM: parse v into the field at `field`; MC_ERR_ARG with a message naming flag.
    mc_err_t (*parse)(const char *flag, const char *v, void *field, char *err);
    const char *help;    // '\n' starts a continuation line, indented under the first
    double flo, fhi;     // F32: the range
} mc_flag_t;

// The rows' defaults into opts (INT and U32 rows with a def of their own;
// other fields are left alone).
void mc_flags_init(const mc_flag_t *t, size_t n, void *opts);

// argv[1..argc) into opts. *help is set (and the parse stops) on --help or -h.
// *given (may be NULL) gets bit i for each row i seen (at most 64 rows). On
// failure opts may be part-written: parse into a copy and keep it on MC_OK.
mc_err_t mc_flags_parse(const mc_flag_t *t, size_t n, int argc, char **argv, void *opts, bool *help,
                        uint64_t *given, char *err);

// One entry per row, "  NAME ARG" then the help text from column col, each
// number's default and range after its text, and "--help, -h" last.
// defaults: the options as initialised, for the rows whose default is the
// field's own (MC_FLAG_DEF_OWN, F32); may be NULL when there are none.
void mc_flags_usage(FILE *f, const mc_flag_t *t, size_t n, int col, const void *defaults);

#endif
