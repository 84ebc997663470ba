/*
 * quant: the on-disk block layouts of ggml's quantized types, and row
 * conversion between them and f32.
 *
 * Dequantizers cover every weight type (F32, F16, BF16, Q4_0..Q8_0,
 * Q2_K..Q6_K, MXFP4) and the activation types (Q8_0, Q8_1, Q8_K). Quantizers are
 * the plain reference kind (round to nearest with a per-block scale): good
 * enough to write test and benchmark models, not tuned like llama.cpp's
 * importance-weighted ones. Block structs mirror the file bytes exactly and
 * their sizes are checked at compile time.
 */
#ifndef MC_QUANT_H
#define MC_QUANT_H

#include <assert.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

#define MC_QK 32   // values per block of the 32-element types
#define MC_QK_K 256 // values per K-quant super-block
#define MC_K_SCALE_SIZE 12

typedef struct { uint16_t d; uint8_t qs[MC_QK / 2]; } mc_block_q4_0_t;
typedef struct { uint16_t d, m; uint8_t qs[MC_QK / 2]; } mc_block_q4_1_t;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[MC_QK / 2]; } mc_block_q5_0_t;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[MC_QK / 2]; } mc_block_q5_1_t;
typedef struct { uint16_t d; int8_t qs[MC_QK]; } mc_block_q8_0_t;
typedef struct { uint16_t d, s; int8_t qs[MC_QK]; } mc_block_q8_1_t; // s = d * sum(qs)
// MXFP4 (OCP microscaling): value j is E2M1 code c (4 bits: sign, 2 exponent bits,
// 1 mantissa bit) of qs[j] (low nibble) or qs[j - 16] (high nibble), worth
// mc_mxfp4_values[c] * mc_e8m0_to_fp32_half(e), the table holding the E2M1
// values doubled (integers) and the scale halved to match.
typedef struct { uint8_t e; uint8_t qs[MC_QK / 2]; } mc_block_mxfp4_t;

// E2M1 codes 0..15 doubled: +-{0, 0.5, 1, 1.5, 2, 3, 4, 6} x 2 (ggml's kvalues_mxfp4).
static const int8_t mc_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

typedef struct {
    uint8_t scales[MC_QK_K / 16]; // 4-bit scale (low) and 4-bit min (high) per 16 values
    uint8_t qs[MC_QK_K / 4];      // 2-bit quants
    uint16_t d, dmin;
} mc_block_q2_k_t;
typedef struct {
    uint8_t hmask[MC_QK_K / 8]; // high bit of each 3-bit quant
    uint8_t qs[MC_QK_K / 4];    // low 2 bits
    uint8_t scales[12];         // 16 6-bit signed scales (offset 32)
    uint16_t d;
} mc_block_q3_k_t;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[MC_K_SCALE_SIZE]; // 8 (scale, min) pairs of 6 bits
    uint8_t qs[MC_QK_K / 2];
} mc_block_q4_k_t;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[MC_K_SCALE_SIZE];
    uint8_t qh[MC_QK_K / 8];
    uint8_t qs[MC_QK_K / 2];
} mc_block_q5_k_t;
typedef struct {
    uint8_t ql[MC_QK_K / 2];     // low 4 bits
    uint8_t qh[MC_QK_K / 4];     // high 2 bits
    int8_t scales[MC_QK_K / 16]; // 8-bit signed scale per 16 values
    uint16_t d;
} mc_block_q6_k_t;
typedef struct {
    float d;                   // f32 scale (not f16)
    int8_t qs[MC_QK_K];
    int16_t bsums[MC_QK_K / 16]; // sum of each group of 16 qs
} mc_block_q8_k_t;

static_assert(sizeof(mc_block_q4_0_t) == 18, "q4_0 block");
static_assert(sizeof(mc_block_q4_1_t) == 20, "q4_1 block");
static_assert(sizeof(mc_block_q5_0_t) == 22, "q5_0 block");
static_assert(sizeof(mc_block_q5_1_t) == 24, "q5_1 block");
static_assert(sizeof(mc_block_q8_0_t) == 34, "q8_0 block");
static_assert(sizeof(mc_block_q8_1_t) == 36, "q8_1 block");
static_assert(sizeof(mc_block_mxfp4_t) == 17, "mxfp4 block");
static_assert(sizeof(mc_block_q2_k_t) == 84, "q2_K block");
static_assert(sizeof(mc_block_q3_k_t) == 110, "q3_K block");
static_assert(sizeof(mc_block_q4_k_t) == 144, "q4_K block");
static_assert(sizeof(mc_block_q5_k_t) == 176, "q5_K block");
static_assert(sizeof(mc_block_q6_k_t) == 210, "q6_K block");
static_assert(sizeof(mc_block_q8_k_t) == 292, "q8_K block");

// Convert n values (a multiple of the type's block size) of type `type`
// at src to f32. MC_ERR_UNSUPPORTED for an unknown type, MC_ERR_ARG for a
// bad n. Blocks need not be aligned in memory.
mc_err_t mc_quant_dequantize_row(mc_dtype_t type, const void *src, float *dst, int64_t n);

// Convert n f32 values to `type` (any weight or activation type; for Q8_0,
// Q8_1 and Q8_K this is exactly the activation quantization that
// kernel.h uses; MXFP4 is ggml's reference quantizer, byte for byte).
// dst must hold mc_dtype_row_bytes(type, n) bytes.
mc_err_t mc_quant_quantize_row(mc_dtype_t type, const float *src, void *dst, int64_t n);

// The first block of the n values (a multiple of 32) of MXFP4 data at src whose
// scale is E8M0's NaN (0xFF), or -1 when every scale is a number. Such a
// block has no value; the loader refuses it rather than compute with 2^127.
int64_t mc_quant_mxfp4_bad_block(const void *src, int64_t n);

#endif
