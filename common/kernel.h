/*
 * kernel: dot products of one weight row with one activation row, for every
 * weight type, and the activation conversion each one expects.
 *
 * As in llama.cpp, a product with a quantized weight first converts the f32
 * activation once (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the
 * K-quants, F16 for F16, BF16 for BF16, F32 for F32), then multiplies
 * integers block by block with one float multiply per block. Matching that
 * activation treatment is what makes our logits match the reference.
 *
 * Implementations are selected per instruction set: MC_ISA_SCALAR is the
 * portable reference. Every other implementation returns the SAME BITS as
 * the reference: integer block sums are exact, and the float operations that
 * combine them (and the lane structure of the float-weight dots) happen in
 * the reference's order. That is what lets a cluster mixing x86 and ARM
 * nodes give exactly the logits of one machine.
 */
#ifndef MC_KERNEL_H
#define MC_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef enum {
    MC_ISA_SCALAR = 0,
    MC_ISA_AVX2,         // x86-64 with AVX2 + FMA + F16C
    MC_ISA_NEON,         // aarch64 baseline
    MC_ISA_NEON_DOTPROD, // aarch64 with sdot (Cortex-A76: Raspberry Pi 5)
    MC_ISA_AVX_VNNI,     // MC_ISA_AVX2 plus AVX-VNNI (vpdpbusd on ymm: Alder Lake, Sapphire Rapids, Zen 5)
    MC_ISA_BEST,         // best available on this CPU (resolved by mc_kernel_get)
} mc_isa_t;

// Convert n f32 values (multiple of the activation block) to the activation type.
typedef void (*mc_act_fn)(const float *x, void *y, int64_t n);
// *s = dot(weight row w, activation row a) over n values.
typedef void (*mc_dot_fn)(int64_t n, float *s, const void *w, const void *a);

// The same dot for 4 activation rows a[0..3] (each a full row): s[c] =
// dot(w, a[c]), bit-identical to 4 calls of the single-row dot. Batched
// products use it to unpack each weight block once for 4 tokens.
typedef void (*mc_dot4_fn)(int64_t n, float s[4], const void *w, const void *const a[4]);

// Side data a kernel derives once per activation row rather than once per
// weight row: the f32 value of each block scale, the activation sums that a
// weight offset (Q4_0's 8) multiplies. A product reads thousands of weight
// rows against one activation row, so this work leaves the inner loop. With
// prep, every row dot and dot4 read is the act_type row followed by
// prep_bytes(n) bytes that prep(row, n) wrote (mc_kernel_act_row); the
// act_type part is unchanged, so the wire and the scalar reference still
// read it as before.
typedef void (*mc_prep_fn)(void *a, int64_t n);
typedef size_t (*mc_prep_bytes_fn)(int64_t n);

// Q4_0 weights repacked at load time (mc_kernel_repack_q4_0x8, called by
// mc_model_repack): 8 rows interleaved so that one 256-bit register holds 4
// bytes of each of the 8 rows, and the integer sums of 8 rows land in 8
// lanes without any horizontal reduction. A group of 8 rows (n values each)
// is n / 32 records of MC_Q4_0X8_BYTES, one per block b, in block order:
//
//   d[8]        (8) fp16: block b's scale of row r = 0..7
//   qs[4][8][4] (4, 8, 4): qs[k][r][j] = byte 4k + j of block b's qs of row
//               r, i.e. values 4k + j (low nibble) and 16 + 4k + j (high)
//
// Same bytes as the 8 rows' blocks, so the same memory.
#define MC_Q4_0X8_ROWS 8
#define MC_Q4_0X8_BYTES 144 // 8 * sizeof(mc_block_q4_0_t)

// Pack 8 Q4_0 rows of n values (row r at rows + r * row_bytes) into out
// (n / 32 * MC_Q4_0X8_BYTES bytes) in the layout above.
void mc_kernel_repack_q4_0x8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out);

// Q8_0, Q4_K, Q5_K and Q6_K have 8-row layouts too (mc_kernel_repack8), again the
// same bytes as the 8 rows (a group is 8 * row_bytes), rows in 32-bit lanes:
//
// Q8_0, per block b, MC_Q8_0X8_BYTES:
//   d[8]        (8) fp16 scales of rows 0..7
//   qs[8][8][4] qs[k][r][j] = byte 4k + j of row r's qs (values 4k + j)
//
// Q4_K, per super-block b, MC_Q4_KX8_BYTES:
//   d[8], dmin[8] (16 + 16) fp16
//   lo[64]      sub-block j (0..7) of row r at index i = 8j + r: the low 4
//               bits of its 6-bit scale | the low 4 bits of its min << 4
//   hi[32]      byte i % 32 holds the top 2 bits of scale i (bits 0-1) and
//               min i (bits 2-3) for i < 32, shifted by 4 for i >= 32
//   qs[4][8][8][4] qs[c][k][r][j] = byte 32c + 4k + j of row r's qs: low
//               nibble value 64c + 4k + j, high nibble value 64c + 32 + 4k + j
//
// Q5_K, per super-block b, MC_Q5_KX8_BYTES: Q4_K's record (the same
// fields from the Q5_K blocks), then
//   qh[8][8][4] qh[k][r][j] = byte 4k + j of row r's qh: bits 2c and 2c + 1
//               are the fifth bits of the nibbles in qs[c][k][r][j]
//
// Q6_K, per super-block b, MC_Q6_KX8_BYTES:
//   d[8]        (16) fp16
//   scales[16][8] (128) scales[G][r] = row r's int8 scale of values 16G..16G+15
//   ql[2][16][8][4] ql[h][k][r][j] = byte 64h + 4k + j of row r's ql
//   qh[2][8][8][4]  qh[h][k][r][j] = byte 32h + 4k + j of row r's qh
#define MC_Q8_0X8_BYTES 272  // 8 * sizeof(mc_block_q8_0_t)
#define MC_Q4_KX8_BYTES 1152 // 8 * sizeof(mc_block_q4_k_t)
#define MC_Q5_KX8_BYTES 1408 // 8 * sizeof(mc_block_q5_k_t)
#define MC_Q6_KX8_BYTES 1680 // 8 * sizeof(mc_block_q6_k_t)

// Whether t has an 8-row layout (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K).
bool mc_kernel_repacks(mc_dtype_t t);

// Pack 8 rows of type t (mc_kernel_repacks) of n values each (row r at rows
// + r * row_bytes) into out (8 * row_bytes bytes) in t's layout.
void mc_kernel_repack8(mc_dtype_t t, const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out);

// The product of 8 rows (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) with na (1..4) activation rows a[c] as dot
// reads them (with prep's side data): s[c * s_stride + r] = dot(row r,
// a[c]), the same bits as dot. row_bytes 0: w is one repacked group (the
// type's layout above); else w is 8 raw rows, row r at w + r * row_bytes (a matrix
// that was not repacked: the kernel interleaves them in registers).
typedef void (*mc_dot8_fn)(int64_t n, float *s, size_t s_stride, const void *w, size_t row_bytes,
                           const void *const *a, int na);

typedef struct {
    mc_dtype_t wtype;    // weight type served
    mc_dtype_t act_type; // what the activation is converted to
    mc_act_fn act;       // f32 -> act_type
    mc_dot_fn dot;
    mc_dot4_fn dot4;     // NULL: callers loop over dot
    mc_isa_t isa;        // the implementation actually returned
    mc_prep_fn prep;     // NULL: dot reads bare act_type rows
    mc_prep_bytes_fn prep_bytes;
    mc_dot8_fn dot8;     // the repacked 8-row product (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K); NULL: this kernel reads raw rows only
} mc_kernel_t;

// Bytes of one activation row of n values as k's dot reads it.
size_t mc_kernel_act_bytes(const mc_kernel_t *k, int64_t n);

// x (n values) -> the row k's dot reads: act, then prep.
void mc_kernel_act_row(const mc_kernel_t *k, const float *x, void *a, int64_t n);

// Add k's side data after the act_type row at a (one that did not come from
// k->act: received from the network, say). No-op without prep.
void mc_kernel_prep(const mc_kernel_t *k, void *a, int64_t n);

// Kernel for weight type wtype on `isa` (falling back to scalar for types
// or ISAs without a faster version); NULL when wtype is not a weight type.
const mc_kernel_t *mc_kernel_get(mc_dtype_t wtype, mc_isa_t isa);

// Attention's two loops over n cached positions (rows stride floats apart),
// each giving exactly the bits of its one-row kernel called in a loop, so
// they change speed only: out[p] = the F32 dot of row p of k with q (hd
// values); y[i] = y[i] + w[p] * v[p][i] for p = 0, 1, ... in turn, the
// product rounded to f32, then the add (never fused), so every ISA gives the
// scalar loop's bits.
typedef void (*mc_scores_fn)(int64_t hd, const float *q, const float *k, int64_t stride, int64_t n, float *out);
typedef void (*mc_mix_fn)(int64_t hd, int64_t n, const float *w, const float *v, int64_t stride, float *y);
// The same two loops over an F16 cache (--kv-type f16: each cached value the
// fp16 bits mc_fp32_to_fp16 gives): every value is widened to f32 exactly,
// then summed in the F32 loops' order, so each ISA gives the bits of the
// scalar F32 loops run on the widened rows. q, w and y stay f32.
typedef void (*mc_scores_f16_fn)(int64_t hd, const float *q, const uint16_t *k, int64_t stride, int64_t n,
                                 float *out);
typedef void (*mc_mix_f16_fn)(int64_t hd, int64_t n, const float *w, const uint16_t *v, int64_t stride, float *y);
typedef struct {
    mc_scores_fn scores;
    mc_mix_fn mix;
    mc_scores_f16_fn scores_f16;
    mc_mix_f16_fn mix_f16;
} mc_attn_fns_t;

// The attention loops of `isa` (scalar where it has none or the CPU cannot run
// it). Each of the four is set.
mc_attn_fns_t mc_kernel_attn(mc_isa_t isa);

// Best ISA this CPU supports (checked at run time).
mc_isa_t mc_kernel_best_isa(void);
const char *mc_kernel_isa_name(mc_isa_t isa);

#endif
