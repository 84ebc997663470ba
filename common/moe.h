/*
 * moe: the expert feed-forward step for a batch of rows of one layer.
 *
 * Given each row's selected experts and router weights, computes
 *   out[t] = sum_j w[t][j] * down_e( silu(gate_e x[t]) * up_e x[t] ),  e = experts[t][j]
 * with the terms added in choice order j = 0, 1, ... so the result is the same
 * bits however the rows are grouped. Rows that share an expert are
 * multiplied as one batch (a matrix-matrix product), which is what makes
 * prompt processing and busy expert nodes fast. Choices whose expert id is
 * negative are skipped: the coordinator uses that to compute only the
 * experts it holds locally.
 *
 * The input rows may also arrive already converted (mc_moe_rows_t): as the
 * activation blocks an expert's kernel makes from an f32 row (a node's
 * exact wire), they go into its products as they are; rows of any other
 * type are decoded to f32 and converted as usual. The expert nodes and the
 * coordinator's fallback for a lost node both compute through here, so the
 * same bytes give the same result wherever they are computed.
 *
 * Shared experts (Qwen2-MoE's: one dense SwiGLU FFN per layer that every row
 * passes through, scaled by a sigmoid gate; DeepSeek's, ungated) are a second call,
 * mc_moe_shared, made by whoever holds the rows after the routed sum.
 */
#ifndef MC_MOE_H
#define MC_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_moe mc_moe_t;

// Input rows of one layer: f32 values or one activation type's blocks.
typedef struct {
    mc_dtype_t type;  // F32, F16, BF16, Q8_0, Q8_1 or Q8_K
    const void *data; // (n, row_bytes)
    size_t row_bytes; // mc_dtype_row_bytes(type, dim)
} mc_moe_rows_t;

// mm is borrowed. NULL on allocation failure.
mc_moe_t *mc_moe_new(mc_matmul_t *mm);
void mc_moe_destroy(mc_moe_t **moe);

// x (n, dim), experts and weights (n, k), out (n, dim). Expert ids must be
// < n_expert (negative: choice skipped); MC_ERR_RANGE otherwise. out rows
// with every choice skipped are zero.
mc_err_t mc_moe_compute(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n,
                        const int32_t *experts, const float *weights, uint32_t k, float *out, char *err);

// The same from rows of any type (see above); MC_ERR_ARG when x->row_bytes
// is not the size of a row of that type.
mc_err_t mc_moe_compute_rows(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const mc_moe_rows_t *x, uint32_t n,
                             const int32_t *experts, const float *weights, uint32_t k, float *out, char *err);

// The shared expert of a layer (a family with one, arch.h), added to out:
//   out[t] = out[t] + sigmoid(shexp_gate . x[t]) * down_s( silu(gate_s x[t]) * up_s x[t] )
// per value, as llama.cpp's graph adds its ffn_shexp_out to the routed sum;
// an ungated family's (DeepSeek: no shexp_gate) is added unscaled.
// out holds the routed experts' sum (mc_moe_compute, or the cluster's, the
// same bits), so the shared term is always added last, once, on the machine
// that holds the rows: a single machine and a cluster give the same bits.
// x (n, dim) f32 normed rows. MC_ERR_ARG for a layer without a shared expert.
mc_err_t mc_moe_shared(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n, float *out,
                       char *err);

#endif
