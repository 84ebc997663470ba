/*
 * kernel: the scalar reference dot products and the per-ISA kernel tables.
 *
 * The K-quant dots follow ggml's generic C code: integer multiply-accumulate
 * inside a block, one float multiply (or two, for the min terms) per block,
 * accumulated in a float, block after block. Q4_0 does the same with whole
 * 32-value blocks (see s_dot_q4_0: the order its 8-row interleaved repacked
 * layout computes with rows in vector lanes), and MXFP4 the same with its
 * E2M1 table and power-of-two scales (s_dot_mxfp4). The other 32-value block types
 * (Q4_1, Q5_0, Q5_1, Q8_0) accumulate 8 float lanes of 4-value integer sums
 * (see s_dot_lanes32), and the float-type dots (F32, F16, BF16) 16 lanes of
 * products (see s_dot_lanes): fixed orders that SIMD units reproduce at speed.
 *
 * These functions define the bits: the SIMD files (kernel_avx2.c,
 * kernel_neon.c) compute the same integers per block and apply the same float
 * operations to them in the same order, so every ISA gives identical results.
 *
 * Weight rows come straight from a file mapping and may start at any offset,
 * so multi-byte fields are read with memcpy and arrays through byte pointers.
 */
#include "kernel.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernel_impl.h"
#include "quant.h"

// --- field access on possibly unaligned blocks --------------------------------

#define S_FIELD(blk, type, field) ((const uint8_t *)(blk) + offsetof(type, field))

static inline float s_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return mc_fp16_to_fp32(h);
}

static inline float s_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

// --- activation conversions ------------------------------------------------------

// The act signature has no error path: n is validated by the caller (a
// multiple of the block size), so a failure here is a programmer error.
#define S_ACT(name, type)                                                    \
    static void name(const float *x, void *y, int64_t n) {                   \
        const mc_err_t e = mc_quant_quantize_row(type, x, y, n);             \
        assert(e == MC_OK);                                                  \
        (void)e;                                                             \
    }
S_ACT(s_act_f32, MC_DTYPE_F32)
S_ACT(s_act_f16, MC_DTYPE_F16)
S_ACT(s_act_bf16, MC_DTYPE_BF16)
S_ACT(s_act_q8_0, MC_DTYPE_Q8_0)
S_ACT(s_act_q8_1, MC_DTYPE_Q8_1)
S_ACT(s_act_q8_k, MC_DTYPE_Q8_K)
#undef S_ACT

// --- float weights -------------------------------------------------------------

// The float-weight dots (and the engine's attention dots, which use the F32
// kernel; over an F16 KV cache the keys widened first) sum in 16 float lanes, an order every SIMD unit can follow:
//
//   acc[0..15] = +0;  for each j: acc[j % 16] += w[j] * x[j]
//       (the product rounded to f32, then added: never fused into an fma)
//   for (h = 8; h >= 4; h /= 2) for (i = 0; i < h; i++) acc[i] += acc[i + h]
//   result: (acc[0] + acc[1]) + (acc[2] + acc[3])
//
// F16 and BF16 operands are first converted exactly to f32. With 8-lane
// registers (AVX2) that is two accumulators (lanes 0-7 and 8-15) added
// lane-wise, then the low and high halves of the sum; with 4-lane registers
// (NEON) four accumulators q0..q3 (lanes 0-3, 4-7, 8-11, 12-15), folded as
// q0+q2 and q1+q3, then their sum. The last step adds neighbouring lanes
// first (a pairwise add twice: hadd, vpaddq), as ggml's AVX reduction does.
// A tail of n % 16 values goes to lanes 0 .. n % 16 - 1 after the full groups.
//
// ggml sums in double (scalar) or in fma lanes (SIMD); the difference is
// float rounding. For 32 values (head_dim 32: the attention scores of the
// small fixture model) this order gives exactly ggml's AVX2 bits, which keeps
// the fixtures' near-tied router choices and greedy tokens as llama.cpp made
// them (the plain halving tree down to one lane did not).
#define S_LANES 16

typedef float (*s_load_fn)(const uint8_t *p, int64_t i);

static inline float s_load_f32(const uint8_t *p, int64_t i) { return s_f32(p + 4 * i); }
static inline float s_load_f16(const uint8_t *p, int64_t i) { return s_half(p + 2 * i); }
static inline float s_load_bf16(const uint8_t *p, int64_t i) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return mc_bf16_to_fp32(h);
}

static inline float s_dot_lanes2(int64_t n, const uint8_t *x, const uint8_t *y, s_load_fn load_x, s_load_fn load_y) {
    float acc[S_LANES] = {0};
    for (int64_t j = 0; j < n; j++) acc[j % S_LANES] += load_x(x, j) * load_y(y, j);
    for (int h = S_LANES / 2; h >= 4; h /= 2)
        for (int i = 0; i < h; i++) acc[i] += acc[i + h];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static inline float s_dot_lanes(int64_t n, const uint8_t *x, const uint8_t *y, s_load_fn load) {
    return s_dot_lanes2(n, x, y, load, load);
}

static void s_dot_f32(int64_t n, float *s, const void *w, const void *a) { *s = s_dot_lanes(n, w, a, s_load_f32); }
static void s_dot_f16(int64_t n, float *s, const void *w, const void *a) { *s = s_dot_lanes(n, w, a, s_load_f16); }
static void s_dot_bf16(int64_t n, float *s, const void *w, const void *a) { *s = s_dot_lanes(n, w, a, s_load_bf16); }

// --- 32-value blocks -------------------------------------------------------------

// Q4_1, Q5_0, Q5_1 and Q8_0 follow an 8-lane order that AVX2 and NEON
// reproduce without any horizontal sum inside the loop (Q4_0 has its own
// order, below). Q8_0 keeps it in its repacked layout too (s_dot8_q8_0). With w[j] the weight's
// integer quant of value j (Q4_0: nibble - 8, Q4_1: nibble, Q5_0: 5-bit value
// - 16, Q5_1: 5-bit value, Q8_0: the byte) and a[j] the activation's int8
// quant, for every block in order:
//
//   p[l] = sum over j = 4l .. 4l+3 of w[j] * a[j]        (l = 0..7, exact)
//   d    = (weight d) * (activation d)                   (both fp16 -> f32)
//   acc[l] = acc[l] + (float)p[l] * d                    (acc starts at +0;
//            the product rounded to f32, then the add: never fused)
//   Q4_1/Q5_1 only: summ = summ + (weight m) * (activation s)   (summ from +0)
//
// then the fixed fold: x[i] = acc[i] + acc[i + 4] (i = 0..3), y0 = x[0] + x[2],
// y1 = x[1] + x[3], result = y0 + y1 (Q4_1/Q5_1: + summ as the last add).
//
// Lane l is what AVX2's maddubs + madd(1) gives for 32 bytes in value order,
// and what NEON's sdot gives on the two 16-value halves (lanes 0-3, 4-7).

enum { S_LANES32 = 8 };

// The weight's integer quants of one block, in value order.
typedef void (*s_quants32_fn)(const uint8_t *blk, int8_t q[MC_QK]);

static void s_quants_q4_0(const uint8_t *blk, int8_t q[MC_QK]) {
    const uint8_t *qs = S_FIELD(blk, mc_block_q4_0_t, qs);
    for (int j = 0; j < MC_QK / 2; j++) {
        q[j] = (int8_t)((qs[j] & 0xF) - 8);
        q[j + MC_QK / 2] = (int8_t)((qs[j] >> 4) - 8);
    }
}

static void s_quants_q4_1(const uint8_t *blk, int8_t q[MC_QK]) {
    const uint8_t *qs = S_FIELD(blk, mc_block_q4_1_t, qs);
    for (int j = 0; j < MC_QK / 2; j++) {
        q[j] = (int8_t)(qs[j] & 0xF);
        q[j + MC_QK / 2] = (int8_t)(qs[j] >> 4);
    }
}

// Bit j of qh is the fifth bit of value j; off is 16 (Q5_0) or 0 (Q5_1).
static inline void s_quants_q5(const uint8_t *qs, const uint8_t *qhp, int off, int8_t q[MC_QK]) {
    uint32_t qh;
    memcpy(&qh, qhp, sizeof qh);
    for (int j = 0; j < MC_QK / 2; j++) {
        q[j] = (int8_t)(((qs[j] & 0xF) | (int)((qh >> j) & 1u) << 4) - off);
        q[j + MC_QK / 2] = (int8_t)(((qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4) - off);
    }
}

static void s_quants_q5_0(const uint8_t *blk, int8_t q[MC_QK]) {
    s_quants_q5(S_FIELD(blk, mc_block_q5_0_t, qs), S_FIELD(blk, mc_block_q5_0_t, qh), 16, q);
}

static void s_quants_q5_1(const uint8_t *blk, int8_t q[MC_QK]) {
    s_quants_q5(S_FIELD(blk, mc_block_q5_1_t, qs), S_FIELD(blk, mc_block_q5_1_t, qh), 0, q);
}

static void s_quants_q8_0(const uint8_t *blk, int8_t q[MC_QK]) {
    memcpy(q, S_FIELD(blk, mc_block_q8_0_t, qs), MC_QK);
}

// The order above for one type. d is the first field of every weight and
// activation block; m (weights) and s (Q8_1) follow it, used when has_min.
static_assert(offsetof(mc_block_q4_1_t, m) == 2 && offsetof(mc_block_q5_1_t, m) == 2 &&
                  offsetof(mc_block_q8_1_t, s) == 2 && offsetof(mc_block_q4_0_t, d) == 0 &&
                  offsetof(mc_block_q5_0_t, d) == 0 && offsetof(mc_block_q8_0_t, d) == 0,
              "block field layout");
static inline float s_dot_lanes32(int64_t n, const uint8_t *x, size_t xb, const uint8_t *y, size_t yb, size_t y_q,
                                  s_quants32_fn quants, bool has_min) {
    assert(n % MC_QK == 0);
    float acc[S_LANES32] = {0}, summ = 0.f;
    for (int64_t i = 0; i < n / MC_QK; i++, x += xb, y += yb) {
        int8_t q[MC_QK];
        quants(x, q);
        const int8_t *a = (const int8_t *)(y + y_q);
        const float d = s_half(x) * s_half(y);
        for (int l = 0; l < S_LANES32; l++) {
            int p = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) p += q[j] * a[j];
            acc[l] = acc[l] + (float)p * d;
        }
        if (has_min) summ = summ + s_half(x + sizeof(uint16_t)) * s_half(y + sizeof(uint16_t));
    }
    const float x0 = acc[0] + acc[4], x1 = acc[1] + acc[5], x2 = acc[2] + acc[6], x3 = acc[3] + acc[7];
    const float r = (x0 + x2) + (x1 + x3);
    return has_min ? r + summ : r;
}

// Q4_0's order: one float accumulator per output value, block after block:
//
//   isum = sum over the block's 32 values of (nibble - 8) * a[j]   (exact int)
//   acc  = acc + (float)isum * (weight d * activation d)           (acc from +0)
//
// the two fp16 scales as f32, their product rounded to f32 first, then the
// multiply, then the add: never fused. With 8 weight rows interleaved (the
// repacked layout, kernel.h) SIMD code keeps 8 rows' accumulators in 8 lanes
// and needs no horizontal work at all, one activation row or many; rows
// outside a full group of 8, and matrices that were not repacked, compute
// the same steps one row at a time (s_dot_q4_0), so the bits never depend on
// the layout, the batch or the ISA. SIMD code may add the offset as
// -8 * sum(a[j]) (exact in int32: the same isum).
static inline float s_step_q4_0(float acc, int isum, float dw, float da) {
    return acc + (float)isum * (dw * da);
}

static void s_dot_q4_0(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK == 0);
    const uint8_t *x = w, *y = a;
    float acc = 0.f;
    for (int64_t i = 0; i < n / MC_QK; i++, x += sizeof(mc_block_q4_0_t), y += sizeof(mc_block_q8_0_t)) {
        int8_t q[MC_QK];
        s_quants_q4_0(x, q);
        const int8_t *qa = (const int8_t *)S_FIELD(y, mc_block_q8_0_t, qs);
        int isum = 0;
        for (int j = 0; j < MC_QK; j++) isum += q[j] * qa[j];
        acc = s_step_q4_0(acc, isum, s_half(x), s_half(y));
    }
    *s = acc;
}

void mc_kernel_repack_q4_0x8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out) {
    assert(n % MC_QK == 0);
    for (int64_t b = 0; b < n / MC_QK; b++, out += MC_Q4_0X8_BYTES)
        for (int r = 0; r < MC_Q4_0X8_ROWS; r++) {
            const uint8_t *blk = rows + (size_t)r * row_bytes + (size_t)b * sizeof(mc_block_q4_0_t);
            memcpy(out + 2 * r, S_FIELD(blk, mc_block_q4_0_t, d), 2);
            for (int k = 0; k < 4; k++)
                memcpy(out + 16 + 32 * k + 4 * r, S_FIELD(blk, mc_block_q4_0_t, qs) + 4 * k, 4);
        }
}

// s_dot_q4_0's steps for the 8 rows of a repacked group (kernel.h layout),
// or of 8 raw rows.
static void s_dot8_q4_0(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na) {
    assert(n % MC_QK == 0 && na >= 1 && na <= 4);
    if (row_bytes) {
        for (int c = 0; c < na; c++)
            for (int r = 0; r < MC_Q4_0X8_ROWS; r++)
                s_dot_q4_0(n, &s[(size_t)c * s_stride + (size_t)r], (const uint8_t *)w8 + (size_t)r * row_bytes, a[c]);
        return;
    }
    for (int c = 0; c < na; c++)
        for (int r = 0; r < MC_Q4_0X8_ROWS; r++) {
            const uint8_t *x = w8, *y = a[c];
            float acc = 0.f;
            for (int64_t i = 0; i < n / MC_QK; i++, x += MC_Q4_0X8_BYTES, y += sizeof(mc_block_q8_0_t)) {
                const int8_t *qa = (const int8_t *)S_FIELD(y, mc_block_q8_0_t, qs);
                int isum = 0;
                for (int k = 0; k < 4; k++)
                    for (int j = 0; j < 4; j++) {
                        const uint8_t byte = x[16 + 32 * k + 4 * r + j];
                        isum += ((byte & 0xF) - 8) * qa[4 * k + j] + ((byte >> 4) - 8) * qa[16 + 4 * k + j];
                    }
                acc = s_step_q4_0(acc, isum, s_half(x + 2 * r), s_half(y));
            }
            s[(size_t)c * s_stride + (size_t)r] = acc;
        }
}

// MXFP4 follows Q4_0's order with its own integers and scale: per block,
//
//   isum = sum over the 32 values of mc_mxfp4_values[code] * a[j]   (exact int)
//   acc  = acc + (float)isum * (e8m0_half(weight e) * activation d)
//
// the table holding the E2M1 values doubled (|v| <= 12) and the scale halved
// (mc_e8m0_to_fp32_half, exact). Both factors as f32, their product rounded
// to f32 first, then the multiply, then the add: never fused. That is ggml's
// generic ggml_vec_dot_mxfp4_q8_0 (which multiplies the two scales the other
// way round: the same product).
static void s_quants_mxfp4(const uint8_t *blk, int8_t q[MC_QK]) {
    const uint8_t *qs = S_FIELD(blk, mc_block_mxfp4_t, qs);
    for (int j = 0; j < MC_QK / 2; j++) {
        q[j] = mc_mxfp4_values[qs[j] & 0xF];
        q[j + MC_QK / 2] = mc_mxfp4_values[qs[j] >> 4];
    }
}

static void s_dot_mxfp4(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK == 0);
    const uint8_t *x = w, *y = a;
    float acc = 0.f;
    for (int64_t i = 0; i < n / MC_QK; i++, x += sizeof(mc_block_mxfp4_t), y += sizeof(mc_block_q8_0_t)) {
        int8_t q[MC_QK];
        s_quants_mxfp4(x, q);
        const int8_t *qa = (const int8_t *)S_FIELD(y, mc_block_q8_0_t, qs);
        int isum = 0;
        for (int j = 0; j < MC_QK; j++) isum += q[j] * qa[j];
        acc = acc + (float)isum * (mc_e8m0_to_fp32_half(*S_FIELD(x, mc_block_mxfp4_t, e)) * s_half(y));
    }
    *s = acc;
}

static void s_dot_q4_1(int64_t n, float *s, const void *w, const void *a) {
    *s = s_dot_lanes32(n, w, sizeof(mc_block_q4_1_t), a, sizeof(mc_block_q8_1_t), offsetof(mc_block_q8_1_t, qs),
                       s_quants_q4_1, true);
}

static void s_dot_q5_0(int64_t n, float *s, const void *w, const void *a) {
    *s = s_dot_lanes32(n, w, sizeof(mc_block_q5_0_t), a, sizeof(mc_block_q8_0_t), offsetof(mc_block_q8_0_t, qs),
                       s_quants_q5_0, false);
}

static void s_dot_q5_1(int64_t n, float *s, const void *w, const void *a) {
    *s = s_dot_lanes32(n, w, sizeof(mc_block_q5_1_t), a, sizeof(mc_block_q8_1_t), offsetof(mc_block_q8_1_t, qs),
                       s_quants_q5_1, true);
}

static void s_dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    *s = s_dot_lanes32(n, w, sizeof(mc_block_q8_0_t), a, sizeof(mc_block_q8_0_t), offsetof(mc_block_q8_0_t, qs),
                       s_quants_q8_0, false);
}

static void s_repack_q8_0x8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out) {
    assert(n % MC_QK == 0);
    for (int64_t b = 0; b < n / MC_QK; b++, out += MC_Q8_0X8_BYTES)
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * row_bytes + (size_t)b * sizeof(mc_block_q8_0_t);
            memcpy(out + 2 * r, S_FIELD(blk, mc_block_q8_0_t, d), 2);
            for (int k = 0; k < 8; k++) memcpy(out + 16 + 32 * k + 4 * r, S_FIELD(blk, mc_block_q8_0_t, qs) + 4 * k, 4);
        }
}

// s_dot_q8_0's steps (the 8-lane order) for the 8 rows of a repacked group,
// or of 8 raw rows: lane l of row r is register l of the repacked record
// (kernel.h), so SIMD code keeps 8 accumulators, one per lane, each holding
// the 8 rows.
static void s_dot8_q8_0(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na) {
    assert(n % MC_QK == 0 && na >= 1 && na <= 4);
    for (int c = 0; c < na; c++)
        for (int r = 0; r < 8; r++) {
            float *out = &s[(size_t)c * s_stride + (size_t)r];
            if (row_bytes) {
                s_dot_q8_0(n, out, (const uint8_t *)w8 + (size_t)r * row_bytes, a[c]);
                continue;
            }
            const uint8_t *x = w8, *y = a[c];
            float acc[S_LANES32] = {0};
            for (int64_t i = 0; i < n / MC_QK; i++, x += MC_Q8_0X8_BYTES, y += sizeof(mc_block_q8_0_t)) {
                const int8_t *qa = (const int8_t *)S_FIELD(y, mc_block_q8_0_t, qs);
                const float d = s_half(x + 2 * r) * s_half(y);
                for (int l = 0; l < S_LANES32; l++) {
                    int p = 0;
                    for (int j = 0; j < 4; j++) p += (int8_t)x[16 + 32 * l + 4 * r + j] * qa[4 * l + j];
                    acc[l] = acc[l] + (float)p * d;
                }
            }
            const float x0 = acc[0] + acc[4], x1 = acc[1] + acc[5], x2 = acc[2] + acc[6], x3 = acc[3] + acc[7];
            *out = (x0 + x2) + (x1 + x3);
        }
}

// --- K-quants against Q8_K ----------------------------------------------------------

// Per-16 sums of the activation quants, used for the weights' min offsets.
static inline void s_bsums(const uint8_t *y, int16_t out[MC_QK_K / 16]) {
    memcpy(out, S_FIELD(y, mc_block_q8_k_t, bsums), sizeof(int16_t) * (MC_QK_K / 16));
}

static void s_dot_q2_k(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q2_k_t), y += sizeof(mc_block_q8_k_t)) {
        const uint8_t *sc = S_FIELD(x, mc_block_q2_k_t, scales);
        const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
        int16_t bsums[MC_QK_K / 16];
        s_bsums(y, bsums);
        int summs = 0; // sum over groups of min * sum(activation quants)
        for (int g = 0; g < 16; g++) summs += bsums[g] * (sc[g] >> 4);
        int isum = 0, is = 0;
        for (int half = 0; half < 2; half++) {
            const uint8_t *q2 = S_FIELD(x, mc_block_q2_k_t, qs) + 32 * half;
            for (int shift = 0; shift < 8; shift += 2) {
                for (int g = 0; g < 2; g++, q8 += 16) {
                    int isuml = 0;
                    for (int l = 0; l < 16; l++) isuml += q8[l] * ((q2[16 * g + l] >> shift) & 3);
                    isum += (sc[is++] & 0xF) * isuml;
                }
            }
        }
        const float yd = s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        const float dall = yd * s_half(S_FIELD(x, mc_block_q2_k_t, d));
        const float dmin = yd * s_half(S_FIELD(x, mc_block_q2_k_t, dmin));
        sumf += dall * isum - dmin * summs;
    }
    *s = sumf;
}

// Q3_K and Q6_K store signed quants with an offset (u - 4, u - 32, u >= 0).
// Their dots take sum(u * y) per group of 16 and subtract offset * bsums[g],
// as ggml's SIMD kernels do: the same integer as summing (u - offset) * y
// whenever bsums holds the sums of the activation quants, which the Q8_K
// conversion guarantees, and it lets SIMD code multiply unsigned quants.

static void s_dot_q3_k(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q3_k_t), y += sizeof(mc_block_q8_k_t)) {
        const uint8_t *s12 = S_FIELD(x, mc_block_q3_k_t, scales);
        const uint8_t *hm = S_FIELD(x, mc_block_q3_k_t, hmask);
        const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
        int16_t bsums[MC_QK_K / 16];
        s_bsums(y, bsums);
        int isum = 0, is = 0;
        uint8_t m = 1; // hmask bit of the current 32-value slice
        for (int half = 0; half < 2; half++) {
            const uint8_t *q3 = S_FIELD(x, mc_block_q3_k_t, qs) + 32 * half;
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int g = 0; g < 2; g++, q8 += 16, is++) {
                    int isuml = 0;
                    for (int l = 0; l < 16; l++) {
                        const int k = 16 * g + l;
                        isuml += q8[l] * (((q3[k] >> shift) & 3) | ((hm[k] & m) ? 4 : 0));
                    }
                    // Signed 6-bit scale: low nibble from bytes 0..7, top 2 bits from 8..11.
                    const int lo = is < 8 ? s12[is] & 0xF : s12[is - 8] >> 4;
                    const int hi = (s12[8 + is % 4] >> (2 * (is / 4))) & 3;
                    isum += ((lo | hi << 4) - 32) * (isuml - 4 * bsums[is]);
                }
            }
        }
        const float d = s_half(S_FIELD(x, mc_block_q3_k_t, d)) * s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        sumf += d * isum;
    }
    *s = sumf;
}

// (scale, min) of sub-block j of a Q4_K/Q5_K scale array (see quant.c).
static inline void s_scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The float steps of one Q4_K/Q5_K super-block (added to the running sum
// block after block): the products rounded, the subtraction, never fused.
static inline float s_step_k4(float d, float dmin, float yd, int isum, int summs) {
    return (d * yd) * (float)isum - (dmin * yd) * (float)summs;
}

// Q4_K and Q5_K differ only in the fifth bit (qh == NULL for Q4_K).
static inline float s_dot_k4_block(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
                                   float d, float dmin, const uint8_t *y) {
    const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
    int16_t bsums[MC_QK_K / 16];
    s_bsums(y, bsums);
    int isum = 0, summs = 0;
    for (int c = 0; c < 4; c++, qs += 32, q8 += 64) {
        int sc1, m1, sc2, m2;
        s_scale_min_k4(2 * c, scales, &sc1, &m1);
        s_scale_min_k4(2 * c + 1, scales, &sc2, &m2);
        int lo = 0, hi = 0;
        if (qh) {
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            for (int l = 0; l < 32; l++) {
                lo += ((qs[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) * q8[l];
                hi += ((qs[l] >> 4) + (qh[l] & u2 ? 16 : 0)) * q8[l + 32];
            }
        } else {
            for (int l = 0; l < 32; l++) {
                lo += (qs[l] & 0xF) * q8[l];
                hi += (qs[l] >> 4) * q8[l + 32];
            }
        }
        isum += sc1 * lo + sc2 * hi;
        summs += m1 * (bsums[4 * c] + bsums[4 * c + 1]) + m2 * (bsums[4 * c + 2] + bsums[4 * c + 3]);
    }
    return s_step_k4(d, dmin, s_f32(S_FIELD(y, mc_block_q8_k_t, d)), isum, summs);
}

static void s_dot_q4_k(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q4_k_t), y += sizeof(mc_block_q8_k_t))
        sumf += s_dot_k4_block(S_FIELD(x, mc_block_q4_k_t, scales), S_FIELD(x, mc_block_q4_k_t, qs), NULL,
                               s_half(S_FIELD(x, mc_block_q4_k_t, d)), s_half(S_FIELD(x, mc_block_q4_k_t, dmin)), y);
    *s = sumf;
}

// Q4_K and Q5_K share the first MC_Q4_KX8_BYTES of their records; Q5_K's
// fifth bits follow (kernel.h). five: Q5_K (the fields have the same names).
#define S_REPACK_K4(type, blk, out, r)                                                                          \
    do {                                                                                                       \
        memcpy((out) + 2 * (r), S_FIELD(blk, type, d), 2);                                                      \
        memcpy((out) + 16 + 2 * (r), S_FIELD(blk, type, dmin), 2);                                              \
        for (int j = 0; j < 8; j++) {                                                                          \
            int sc, m;                                                                                         \
            s_scale_min_k4(j, S_FIELD(blk, type, scales), &sc, &m);                                             \
            const int i = 8 * j + (r);                                                                         \
            (out)[32 + i] = (uint8_t)((sc & 0xF) | (m & 0xF) << 4);                                             \
            (out)[96 + i % 32] |= (uint8_t)(((sc >> 4) | (m >> 4) << 2) << (i < 32 ? 0 : 4));                   \
        }                                                                                                      \
        for (int c = 0; c < 4; c++)                                                                            \
            for (int k = 0; k < 8; k++)                                                                        \
                memcpy((out) + 128 + 32 * (8 * c + k) + 4 * (r), S_FIELD(blk, type, qs) + 32 * c + 4 * k, 4);  \
    } while (0)

static void s_repack_k4x8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out, bool five) {
    assert(n % MC_QK_K == 0);
    const size_t bx = five ? sizeof(mc_block_q5_k_t) : sizeof(mc_block_q4_k_t);
    for (int64_t b = 0; b < n / MC_QK_K; b++, out += 8 * bx) {
        memset(out + 96, 0, 32);
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * row_bytes + (size_t)b * bx;
            if (!five) {
                S_REPACK_K4(mc_block_q4_k_t, blk, out, r);
                continue;
            }
            S_REPACK_K4(mc_block_q5_k_t, blk, out, r);
            for (int k = 0; k < 8; k++)
                memcpy(out + MC_Q4_KX8_BYTES + 32 * k + 4 * r, S_FIELD(blk, mc_block_q5_k_t, qh) + 4 * k, 4);
        }
    }
}
#undef S_REPACK_K4

// (scale, min) of sub-block j of row r in a repacked Q4_K record.
static inline void s_scale_min_k4x8(const uint8_t *rec, int j, int r, int *sc, int *m) {
    const int i = 8 * j + r, hi = rec[96 + i % 32] >> (i < 32 ? 0 : 4);
    *sc = (rec[32 + i] & 0xF) | (hi & 3) << 4;
    *m = (rec[32 + i] >> 4) | ((hi >> 2) & 3) << 4;
}

static void s_dot_q5_k(int64_t n, float *s, const void *w, const void *a);

// s_dot_q4_k's (five: s_dot_q5_k's) steps for the 8 rows of a repacked
// group, or of 8 raw rows.
static inline void s_dot8_k4(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes,
                             const void *const *a, int na, bool five) {
    assert(n % MC_QK_K == 0 && na >= 1 && na <= 4);
    const size_t rec = five ? MC_Q5_KX8_BYTES : MC_Q4_KX8_BYTES;
    for (int c = 0; c < na; c++)
        for (int r = 0; r < 8; r++) {
            float *out = &s[(size_t)c * s_stride + (size_t)r];
            if (row_bytes) {
                (five ? s_dot_q5_k : s_dot_q4_k)(n, out, (const uint8_t *)w8 + (size_t)r * row_bytes, a[c]);
                continue;
            }
            const uint8_t *x = w8, *y = a[c];
            float sumf = 0.f;
            for (int64_t i = 0; i < n / MC_QK_K; i++, x += rec, y += sizeof(mc_block_q8_k_t)) {
                const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
                int16_t bsums[MC_QK_K / 16];
                s_bsums(y, bsums);
                int isum = 0, summs = 0;
                for (int cc = 0; cc < 4; cc++) {
                    int sc1, m1, sc2, m2, lo = 0, hi = 0;
                    s_scale_min_k4x8(x, 2 * cc, r, &sc1, &m1);
                    s_scale_min_k4x8(x, 2 * cc + 1, r, &sc2, &m2);
                    for (int k = 0; k < 8; k++)
                        for (int j = 0; j < 4; j++) {
                            const uint8_t q = x[128 + 32 * (8 * cc + k) + 4 * r + j];
                            // Q5_K: bits 2cc, 2cc + 1 of qh byte 4k + j.
                            const int hb = five ? x[MC_Q4_KX8_BYTES + 32 * k + 4 * r + j] >> (2 * cc) : 0;
                            lo += ((q & 0xF) | (hb & 1) << 4) * q8[64 * cc + 4 * k + j];
                            hi += ((q >> 4) | (hb & 2) << 3) * q8[64 * cc + 32 + 4 * k + j];
                        }
                    isum += sc1 * lo + sc2 * hi;
                    summs += m1 * (bsums[4 * cc] + bsums[4 * cc + 1]) + m2 * (bsums[4 * cc + 2] + bsums[4 * cc + 3]);
                }
                sumf += s_step_k4(s_half(x + 2 * r), s_half(x + 16 + 2 * r), s_f32(S_FIELD(y, mc_block_q8_k_t, d)),
                                  isum, summs);
            }
            *out = sumf;
        }
}

static void s_dot8_q4_k(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na) {
    s_dot8_k4(n, s, s_stride, w8, row_bytes, a, na, false);
}

static void s_dot8_q5_k(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na) {
    s_dot8_k4(n, s, s_stride, w8, row_bytes, a, na, true);
}

static void s_repack_q6_kx8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out);

bool mc_kernel_repacks(mc_dtype_t t) {
    return t == MC_DTYPE_Q4_0 || t == MC_DTYPE_Q8_0 || t == MC_DTYPE_Q4_K || t == MC_DTYPE_Q5_K || t == MC_DTYPE_Q6_K;
}

void mc_kernel_repack8(mc_dtype_t t, const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out) {
    switch (t) {
    case MC_DTYPE_Q4_0: mc_kernel_repack_q4_0x8(rows, row_bytes, n, out); break;
    case MC_DTYPE_Q8_0: s_repack_q8_0x8(rows, row_bytes, n, out); break;
    case MC_DTYPE_Q4_K: s_repack_k4x8(rows, row_bytes, n, out, false); break;
    case MC_DTYPE_Q5_K: s_repack_k4x8(rows, row_bytes, n, out, true); break;
    case MC_DTYPE_Q6_K: s_repack_q6_kx8(rows, row_bytes, n, out); break;
    default: assert(!"type without an 8-row layout"); break;
    }
}

static void s_dot_q5_k(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q5_k_t), y += sizeof(mc_block_q8_k_t))
        sumf += s_dot_k4_block(S_FIELD(x, mc_block_q5_k_t, scales), S_FIELD(x, mc_block_q5_k_t, qs),
                               S_FIELD(x, mc_block_q5_k_t, qh), s_half(S_FIELD(x, mc_block_q5_k_t, d)),
                               s_half(S_FIELD(x, mc_block_q5_k_t, dmin)), y);
    *s = sumf;
}

static void s_dot_q6_k(int64_t n, float *s, const void *w, const void *a) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q6_k_t), y += sizeof(mc_block_q8_k_t)) {
        const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
        int16_t bsums[MC_QK_K / 16];
        s_bsums(y, bsums);
        int isum = 0;
        for (int half = 0; half < 2; half++, q8 += 128) {
            const uint8_t *ql = S_FIELD(x, mc_block_q6_k_t, ql) + 64 * half;
            const uint8_t *qh = S_FIELD(x, mc_block_q6_k_t, qh) + 32 * half;
            const int8_t *sc = (const int8_t *)S_FIELD(x, mc_block_q6_k_t, scales) + 8 * half;
            const int16_t *bs = bsums + 8 * half;
            // Byte l of ql/qh serves values l, l+32, l+64, l+96 of the half;
            // the scale (and bsums entry) changes every 16 values.
            for (int g = 0; g < 2; g++) {
                int s1 = 0, s2 = 0, s3 = 0, s4 = 0;
                for (int l = 16 * g; l < 16 * g + 16; l++) {
                    s1 += ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) * q8[l];
                    s2 += ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) * q8[l + 32];
                    s3 += ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) * q8[l + 64];
                    s4 += ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) * q8[l + 96];
                }
                isum += sc[g] * (s1 - 32 * bs[g]) + sc[g + 2] * (s2 - 32 * bs[g + 2]) +
                        sc[g + 4] * (s3 - 32 * bs[g + 4]) + sc[g + 6] * (s4 - 32 * bs[g + 6]);
            }
        }
        const float d = s_half(S_FIELD(x, mc_block_q6_k_t, d)) * s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        sumf += d * isum;
    }
    *s = sumf;
}


static void s_repack_q6_kx8(const uint8_t *rows, size_t row_bytes, int64_t n, uint8_t *out) {
    assert(n % MC_QK_K == 0);
    for (int64_t b = 0; b < n / MC_QK_K; b++, out += MC_Q6_KX8_BYTES)
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * row_bytes + (size_t)b * sizeof(mc_block_q6_k_t);
            memcpy(out + 2 * r, S_FIELD(blk, mc_block_q6_k_t, d), 2);
            for (int g = 0; g < 16; g++) out[16 + 8 * g + r] = S_FIELD(blk, mc_block_q6_k_t, scales)[g];
            for (int h = 0; h < 2; h++) {
                for (int k = 0; k < 16; k++)
                    memcpy(out + 144 + 32 * (16 * h + k) + 4 * r, S_FIELD(blk, mc_block_q6_k_t, ql) + 64 * h + 4 * k, 4);
                for (int k = 0; k < 8; k++)
                    memcpy(out + 1168 + 32 * (8 * h + k) + 4 * r, S_FIELD(blk, mc_block_q6_k_t, qh) + 32 * h + 4 * k, 4);
            }
        }
}

// s_dot_q6_k's steps for the 8 rows of a repacked group, or of 8 raw rows.
static void s_dot8_q6_k(int64_t n, float *s, size_t s_stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na) {
    assert(n % MC_QK_K == 0 && na >= 1 && na <= 4);
    for (int c = 0; c < na; c++)
        for (int r = 0; r < 8; r++) {
            float *out = &s[(size_t)c * s_stride + (size_t)r];
            if (row_bytes) {
                s_dot_q6_k(n, out, (const uint8_t *)w8 + (size_t)r * row_bytes, a[c]);
                continue;
            }
            const uint8_t *x = w8, *y = a[c];
            float sumf = 0.f;
            for (int64_t i = 0; i < n / MC_QK_K; i++, x += MC_Q6_KX8_BYTES, y += sizeof(mc_block_q8_k_t)) {
                const int8_t *q8 = (const int8_t *)S_FIELD(y, mc_block_q8_k_t, qs);
                int16_t bsums[MC_QK_K / 16];
                s_bsums(y, bsums);
                int isum = 0;
                // Group G = 8h + 2q + g: quarter q of half h, values 4k + j
                // (k = 4g .. 4g + 3) of the quarter.
                for (int h = 0; h < 2; h++)
                    for (int q = 0; q < 4; q++)
                        for (int g = 0; g < 2; g++) {
                            int sg = 0;
                            for (int k = 4 * g; k < 4 * g + 4; k++)
                                for (int j = 0; j < 4; j++) {
                                    const uint8_t l = x[144 + 32 * (16 * h + k + 8 * (q % 2)) + 4 * r + j];
                                    const uint8_t hb = x[1168 + 32 * (8 * h + k) + 4 * r + j];
                                    const int v = (q < 2 ? l & 0xF : l >> 4) | ((hb >> (2 * q)) & 3) << 4;
                                    sg += v * q8[128 * h + 32 * q + 4 * k + j];
                                }
                            const int G = 8 * h + 2 * q + g;
                            isum += (int8_t)x[16 + 8 * G + r] * (sg - 32 * bsums[G]);
                        }
                const float d = s_half(x + 2 * r) * s_f32(S_FIELD(y, mc_block_q8_k_t, d));
                sumf += d * isum;
            }
            *out = sumf;
        }
}

// --- tables ------------------------------------------------------------------------

static const mc_kernel_t s_scalar[] = {
    {.wtype = MC_DTYPE_F32, .act_type = MC_DTYPE_F32, .act = s_act_f32, .dot = s_dot_f32, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_F16, .act_type = MC_DTYPE_F16, .act = s_act_f16, .dot = s_dot_f16, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_BF16, .act_type = MC_DTYPE_BF16, .act = s_act_bf16, .dot = s_dot_bf16, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q4_0, .act_type = MC_DTYPE_Q8_0, .act = s_act_q8_0, .dot = s_dot_q4_0, .isa = MC_ISA_SCALAR,
     .dot8 = s_dot8_q4_0},
    {.wtype = MC_DTYPE_Q4_1, .act_type = MC_DTYPE_Q8_1, .act = s_act_q8_1, .dot = s_dot_q4_1, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q5_0, .act_type = MC_DTYPE_Q8_0, .act = s_act_q8_0, .dot = s_dot_q5_0, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q5_1, .act_type = MC_DTYPE_Q8_1, .act = s_act_q8_1, .dot = s_dot_q5_1, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q8_0, .act_type = MC_DTYPE_Q8_0, .act = s_act_q8_0, .dot = s_dot_q8_0, .isa = MC_ISA_SCALAR,
     .dot8 = s_dot8_q8_0},
    {.wtype = MC_DTYPE_Q2_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q2_k, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q3_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q3_k, .isa = MC_ISA_SCALAR},
    {.wtype = MC_DTYPE_Q4_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q4_k, .isa = MC_ISA_SCALAR,
     .dot8 = s_dot8_q4_k},
    {.wtype = MC_DTYPE_Q5_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q5_k, .isa = MC_ISA_SCALAR,
     .dot8 = s_dot8_q5_k},
    {.wtype = MC_DTYPE_Q6_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q6_k, .isa = MC_ISA_SCALAR,
     .dot8 = s_dot8_q6_k},
    {.wtype = MC_DTYPE_MXFP4, .act_type = MC_DTYPE_Q8_0, .act = s_act_q8_0, .dot = s_dot_mxfp4, .isa = MC_ISA_SCALAR},
};

#define S_N_SCALAR (sizeof s_scalar / sizeof s_scalar[0])

#if defined(__x86_64__)
// Not every compiler's __builtin_cpu_supports knows "f16c": ask cpuid (leaf
// 1, ecx). The AVX2 check before it covers the OS saving the ymm registers.
static bool s_cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

// AVX-VNNI (the VEX form of vpdpbusd): leaf 7, sub-leaf 1, eax bit 4.
static bool s_cpu_has_avx_vnni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
}
#endif

// Whether this CPU runs `isa` (the kernel files are compiled for every
// target; only the CPU decides whether their instructions may execute).
static bool s_isa_runs(mc_isa_t isa) {
    switch (isa) {
    case MC_ISA_SCALAR: return true;
    case MC_ISA_AVX2:
#if defined(__x86_64__)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && s_cpu_has_f16c();
#else
        return false;
#endif
    case MC_ISA_AVX_VNNI:
#if defined(__x86_64__)
        return s_isa_runs(MC_ISA_AVX2) && s_cpu_has_avx_vnni();
#else
        return false;
#endif
    case MC_ISA_NEON:
#if defined(__aarch64__)
        return true;
#else
        return false;
#endif
    case MC_ISA_NEON_DOTPROD:
#if defined(__aarch64__) && defined(__linux__)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
        return false;
#endif
    case MC_ISA_BEST: break;
    }
    return false;
}

// The SIMD table of `isa` (NULL when not built for this target).
static const mc_kernel_t *s_simd_table(mc_isa_t isa, size_t *count) {
    switch (isa) {
    case MC_ISA_AVX2: return mc_kernel_table_avx2(count);
    case MC_ISA_AVX_VNNI: return mc_kernel_table_avx_vnni(count);
    case MC_ISA_NEON: return mc_kernel_table_neon(count);
    case MC_ISA_NEON_DOTPROD: return mc_kernel_table_neon_dotprod(count);
    case MC_ISA_SCALAR:
    case MC_ISA_BEST: break;
    }
    return NULL;
}

static const mc_kernel_t *s_find(const mc_kernel_t *k, size_t count, mc_dtype_t wtype) {
    for (size_t i = 0; i < count; i++)
        if (k[i].wtype == wtype) return &k[i];
    return NULL;
}

// An ISA this CPU cannot run gets the scalar kernels: handing out functions
// that would fault on an illegal instruction is never an option, and every
// ISA computes the same bits anyway.
const mc_kernel_t *mc_kernel_get(mc_dtype_t wtype, mc_isa_t isa) {
    if (isa == MC_ISA_BEST) isa = mc_kernel_best_isa();
    if (isa != MC_ISA_SCALAR && s_isa_runs(isa)) {
        size_t count = 0;
        const mc_kernel_t *t = s_simd_table(isa, &count);
        const mc_kernel_t *k = t ? s_find(t, count, wtype) : NULL;
        if (k) return k;
    }
    return s_find(s_scalar, S_N_SCALAR, wtype);
}

// y[i] = y[i] + a * x[i]: the product rounded, then the add (never fused).
static void s_axpy(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = y[i] + a * x[i];
}

static void s_scores(int64_t hd, const float *q, const float *k, int64_t stride, int64_t n, float *out) {
    for (int64_t p = 0; p < n; p++) s_dot_f32(hd, &out[p], k + p * stride, q);
}

static void s_mix(int64_t hd, int64_t n, const float *w, const float *v, int64_t stride, float *y) {
    for (int64_t p = 0; p < n; p++) s_axpy(hd, w[p], v + p * stride, y);
}

// An F16 cache row (fp16 bits) against f32 q: the F32 dot's lanes and fold.
static void s_scores_f16(int64_t hd, const float *q, const uint16_t *k, int64_t stride, int64_t n, float *out) {
    for (int64_t p = 0; p < n; p++)
        out[p] = s_dot_lanes2(hd, (const uint8_t *)(k + p * stride), (const uint8_t *)q, s_load_f16, s_load_f32);
}

static void s_mix_f16(int64_t hd, int64_t n, const float *w, const uint16_t *v, int64_t stride, float *y) {
    for (int64_t p = 0; p < n; p++)
        for (int64_t i = 0; i < hd; i++) y[i] = y[i] + w[p] * mc_fp16_to_fp32(v[p * stride + i]);
}

mc_attn_fns_t mc_kernel_attn(mc_isa_t isa) {
    if (isa == MC_ISA_BEST) isa = mc_kernel_best_isa();
    mc_attn_fns_t f = {NULL, NULL, NULL, NULL};
    if (isa != MC_ISA_SCALAR && s_isa_runs(isa))
        f = isa == MC_ISA_AVX2 || isa == MC_ISA_AVX_VNNI ? mc_kernel_attn_avx2() : mc_kernel_attn_neon();
    if (!f.scores || !f.mix) f.scores = s_scores, f.mix = s_mix;
    if (!f.scores_f16 || !f.mix_f16) f.scores_f16 = s_scores_f16, f.mix_f16 = s_mix_f16;
    return f;
}

// MC_ISA=scalar|avx2|avx-vnni|neon|neon-dotprod selects a lower ISA than the best
// (benchmarks, debugging); a value this CPU cannot run, or an unknown one, is
// ignored.
mc_isa_t mc_kernel_best_isa(void) {
    static const mc_isa_t order[] = {MC_ISA_AVX_VNNI, MC_ISA_AVX2, MC_ISA_NEON_DOTPROD, MC_ISA_NEON};
    mc_isa_t best = MC_ISA_SCALAR;
    for (size_t i = 0; i < sizeof order / sizeof order[0] && best == MC_ISA_SCALAR; i++)
        if (s_isa_runs(order[i])) best = order[i];
    const char *env = getenv("MC_ISA");
    if (env)
        for (mc_isa_t isa = MC_ISA_SCALAR; isa < MC_ISA_BEST; isa++)
            if (strcmp(env, mc_kernel_isa_name(isa)) == 0 && s_isa_runs(isa)) return isa;
    return best;
}

const char *mc_kernel_isa_name(mc_isa_t isa) {
    switch (isa) {
    case MC_ISA_SCALAR: return "scalar";
    case MC_ISA_AVX2: return "avx2";
    case MC_ISA_NEON: return "neon";
    case MC_ISA_NEON_DOTPROD: return "neon-dotprod";
    case MC_ISA_AVX_VNNI: return "avx-vnni";
    case MC_ISA_BEST: return "best";
    }
    return "?";
}

size_t mc_kernel_act_bytes(const mc_kernel_t *k, int64_t n) {
    return mc_dtype_row_bytes(k->act_type, (uint64_t)n) + (k->prep ? k->prep_bytes(n) : 0);
}

void mc_kernel_act_row(const mc_kernel_t *k, const float *x, void *a, int64_t n) {
    k->act(x, a, n);
    mc_kernel_prep(k, a, n);
}

void mc_kernel_prep(const mc_kernel_t *k, void *a, int64_t n) {
    if (k->prep) k->prep(a, n);
}
