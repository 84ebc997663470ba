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
 * GPT-OSS's experts add their biases (model.h exp_b_*) to the gate and up
 * products, use the clamped SwiGLU (arch.h MC_ACT_SWIGLU_OAI) and add their
 * down bias before the router weight multiplies the result, as llama.cpp's
 * build_moe_ffn does; the biases come from the model, wherever the matrices
 * come from (an expert store's pool).
 *
 * Shared experts (Qwen2-MoE's, GLM-4.5's and DeepSeek's: one dense SwiGLU FFN
 * per layer that every row passes through, scaled by a sigmoid gate in
 * Qwen2-MoE) are a second call, mc_moe_shared, made by whoever holds the
 * rows after the routed sum; a dense layer's FFN is mc_moe_dense. The
 * router's choice of experts and weights for every routing variant is
 * mc_moe_route.
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
// per value, as llama.cpp's graph adds its ffn_shexp_out to the routed sum
// (without the sigmoid factor for a family whose shared expert has no gate).
// out holds the routed experts' sum (mc_moe_compute, or the cluster's, the
// same bits), so the shared term is always added last, once, on the machine
// that holds the rows: a single machine and a cluster give the same bits.
// x (n, dim) f32 normed rows. MC_ERR_ARG for a layer without a shared expert.
mc_err_t mc_moe_shared(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n, float *out,
                       char *err);

// A dense layer's FFN (model.h: hp.n_dense_lead): out[t] = down(silu(gate
// x[t]) * up x[t]), written over out. MC_ERR_ARG for a MoE layer.
mc_err_t mc_moe_dense(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n, float *out,
                      char *err);

// The router's choice for n rows of logits (n, n_expert) under the routing
// variant r (arch.h), as llama.cpp's build_moe_ffn computes it:
//   scores p = softmax(logits) | sigmoid(logits) | logits (SOFTMAX_WEIGHT)
//   selection s = p + bias (bias (n_expert) or NULL): for choosing only
//   grouped: keep the n_group_used groups with the largest sum of their two
//     best s, the others' experts cannot be chosen
//   sel = the k largest s, best first (ties: lower id); w = p[sel], or
//     softmax over them for SOFTMAX_WEIGHT; renormalised to sum 1 when
//     norm_topk (the sum summed in double, clamped to 2^-14); times scale.
// sel and w (n, k). MC_ERR_ARG for counts that do not fit (n_expert up to 256).
mc_err_t mc_moe_route(const mc_route_t *r, const float *logits, const float *bias, uint32_t n, uint32_t n_expert,
                      uint32_t k, int32_t *sel, float *w, char *err);

#endif
