/*
 * profile: what this machine can do with a model, measured, for the
 * placement planner (moe-plan): usable memory and the time of one expert's
 * feed-forward step (gate, up, down) for 1 to 32 rows at a time, per
 * distinct weight-type combination. `moe-expert --profile` prints it as
 * the YAML node entry moe-plan reads; `moe-coordinator --profile` prints the
 * same and adds a coordinator's work per layer and for the output head
 * (coordinator/layer_profile.h), through `more`.
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
