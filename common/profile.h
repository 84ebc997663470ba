/*
 * profile: what this machine can do with a model, measured, for the
 * placement planner (moe-plan): usable memory and the time of one expert's
 * feed-forward step (gate, up, down) for 1 to 32 rows at a time, per
 * distinct weight-type combination. `moe-expert --profile` prints it as
 * the YAML node entry moe-plan reads; `moe-coordinator --profile` prints the
 * same and adds a coordinator's work per layer and for the output head
 * (coordinator/layer_profile.h), through `more`.
 *
 * It also times the disk that holds the model file, for a process whose
 * experts outgrow its memory (--mem-limit, expert_store.h): expert slices
 * read with pread in a random order, the file's pages dropped from the
 * page cache (POSIX_FADV_DONTNEED) before each, so that they come from the
 * disk (and out of it again after: other users of the file read it
 * again from the disk). A
 * warm page cache would make the figures optimistic; pages another process
 * keeps mapped cannot be dropped, and the share of those is reported.
 */
#ifndef MC_PROFILE_H
#define MC_PROFILE_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "matmul.h"
#include "model.h"

// The row counts one expert's step is timed at.
#define MC_PROFILE_N_ROWS 6
extern const uint32_t mc_profile_rows[MC_PROFILE_N_ROWS]; // 1, 2, 4, 8, 16, 32

// Milliseconds of one expert's step at each of mc_profile_rows.
typedef double mc_profile_curve_t[MC_PROFILE_N_ROWS];

// What a curve says for r rows: linear between the measured counts,
// through 0 below the first.
double mc_profile_curve_at(const double *curve, uint32_t r);

// Called after the experts' tables, with the model opened and repacked as
// a serving process multiplies it, the products' matmul, and the curve of
// each layer's expert types (n_layer curves): writes more keys of the same
// entry to out.
typedef mc_err_t (*mc_profile_more_fn)(void *ctx, const mc_model_t *m, mc_matmul_t *mm,
                                       const mc_profile_curve_t *curve_of_layer, FILE *out, char *err);

// Cold reads of expert slices from the model file.
typedef struct {
    uint32_t max_reads;  // experts read at most (each whole: gate, up, down)
    double max_seconds;  // ... and no longer than this (after the first)
    uint64_t seed;       // the random order
} mc_profile_disk_params_t;

typedef struct {
    double mb_s;         // transfer rate, 10^6 bytes per second
    double latency_ms;   // a cold read's first 4 KiB (median): a read of b bytes costs latency + b / rate
    uint32_t reads;      // experts read
    uint64_t bytes;      // their bytes
    double cached;       // share of their pages still in the page cache when read (0..1): then optimistic
} mc_profile_disk_t;

// 48 experts, 2 s, seed 1.
static inline mc_profile_disk_params_t mc_profile_disk_params_default(void) {
    return (mc_profile_disk_params_t){.max_reads = 48, .max_seconds = 2.0, .seed = 1};
}

// Time cold reads of m's experts from m->path (m opened with mc_model_open).
// MC_ERR_ARG when m has no file or no experts, MC_ERR_IO when a read fails.
mc_err_t mc_profile_disk(const mc_model_t *m, const mc_profile_disk_params_t *dp, mc_profile_disk_t *out, char *err);

typedef struct {
    const char *model;   // GGUF file
    const char *name;    // the machine's name in the entry (NULL: the host name)
    int threads;
    const char *program; // named in the entry's first comment (NULL: "moe-expert")
    mc_profile_more_fn more; // optional
    void *more_ctx;
} mc_profile_params_t;

// Measure and write the YAML entry to out. A few seconds per distinct expert
// type combination.
mc_err_t mc_profile_run(const mc_profile_params_t *p, FILE *out, char *err);

#endif
