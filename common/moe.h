/*
 * moe: the expert feed-forward step for a batch of rows of one layer.
 *
 * Given each row's selected experts and router weights, computes
 *   out[t] = sum_j w[t][j] * down_e( silu(gate_e x[t]) * up_e x[t] ),  e = experts[t][j]
 * with the terms added in slot order j = 0, 1, ... so the result is the same
 * bits however the rows are grouped. Rows that share an expert are
 * multiplied as one batch (a matrix-matrix product), which is what makes
 * prompt processing and busy expert nodes fast. Slots whose expert id is
 * negative are skipped: the coordinator uses that to compute only the
 * experts it holds locally.
 */
#ifndef MC_MOE_H
#define MC_MOE_H

#include <stdint.h>

#include "error.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_moe mc_moe_t;

// mm is borrowed. NULL on allocation failure.
mc_moe_t *mc_moe_new(mc_matmul_t *mm);
void mc_moe_destroy(mc_moe_t **moe);

// x (n, dim), experts and weights (n, k), out (n, dim). Expert ids must be
// < n_expert (negative: slot skipped); MC_ERR_RANGE otherwise. out rows
// with every slot skipped are zero.
mc_err_t mc_moe_compute(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n,
                        const int32_t *experts, const float *weights, uint32_t k, float *out, char *err);

#endif
