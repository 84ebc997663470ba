/*
 * matmul: threaded products of a weight matrix with one or many activation
 * rows, for any weight type.
 *
 * The activation rows are converted once to the type the weight's kernel
 * expects (kernel.h); output rows are then split between the pool's threads
 * in blocks of whole cache lines, and within a block every weight row is
 * reused for all tokens while it is hot in cache. Each output value is
 * computed by exactly one kernel call, so the result does not depend on the
 * thread count or on how tokens are batched.
 */
#ifndef MC_MATMUL_H
#define MC_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "kernel.h"
#include "pool.h"

// A read-only view of a row-major weight matrix inside a model file.
//
// packed, when set (mc_model_repack; Q4_0, Q8_0, Q4_K, Q5_K, Q6_K: mc_kernel_repacks),
// holds the first n_out / 8 * 8 rows again in the kernels' 8-row interleaved
// layout (kernel.h: 8 * row_bytes per group of 8 rows); products then
// read it instead of those rows, and the rows beyond (n_out % 8) from data.
// data stays a valid view of every row (its file pages may have been
// released: reading them faults them back in), and results are the same
// bits either way.
typedef struct {
    mc_dtype_t type;
    uint32_t n_in;        // values per row (GGUF ne[0])
    uint32_t n_out;       // rows
    size_t row_bytes;     // bytes per row
    const uint8_t *data;  // (n_out, n_in) in `type`
    const uint8_t *packed; // (n_out / 8, 8 * row_bytes) or NULL; owned by whoever repacked
} mc_matrix_t;

// Bytes of w's rows in the file.
static inline uint64_t mc_matrix_bytes(const mc_matrix_t *w) { return (uint64_t)w->n_out * w->row_bytes; }

typedef struct mc_matmul mc_matmul_t;

// pool is borrowed and must outlive the result. NULL on failure.
mc_matmul_t *mc_matmul_new(mc_pool_t *pool, mc_isa_t isa);
void mc_matmul_destroy(mc_matmul_t **mm);

mc_pool_t *mc_matmul_pool(const mc_matmul_t *mm);

// The kernel this matmul uses for weight type t (resolved at creation), or
// NULL when t is not a weight type.
const mc_kernel_t *mc_matmul_kernel(const mc_matmul_t *mm, mc_dtype_t t);
mc_isa_t mc_matmul_isa(const mc_matmul_t *mm);

// y (n_tok, w->n_out) = x (n_tok, w->n_in) times w transposed.
mc_err_t mc_matmul_f32(mc_matmul_t *mm, const mc_matrix_t *w, const float *x, uint32_t n_tok, float *y);

// One product of a batch of several (mc_matmul_many).
typedef struct {
    const mc_matrix_t *w;
    const float *x; // (n_tok, w->n_in); unused when xa is set
    uint32_t n_tok;
    float *y;       // (n_tok, w->n_out)
    // Rows already converted for w's kernel, (n_tok, mc_kernel_act_bytes)
    // with the kernel's side data (activation blocks received from the
    // network and completed with mc_kernel_prep); NULL: convert x.
    const void *xa;
} mc_matmul_op_t;

// Independent products (their x and y must not overlap another's y) run as
// one pass over the pool, with one barrier instead of one per product.
// Results are the bits mc_matmul_f32 gives for each.
mc_err_t mc_matmul_many(mc_matmul_t *mm, const mc_matmul_op_t *ops, size_t n_ops);

#endif
