/*
 * quant: row dequantizers and quantizers for ggml's block formats.
 *
 * Dequantizers and the activation quantizers (Q8_0, Q8_1, Q8_K) perform the
 * same float operations in the same order as ggml's reference C code, so
 * their results are bit-identical to llama.cpp's as long as the compiler does
 * not fuse a*b+c into an FMA (-ffp-contract=off; GCC's default with -std=c11,
 * but GNU mode and clang fuse when the target has FMA).
 * The Q4_0..Q5_1 weight quantizers are ggml's reference ones too; the K-quant
 * weight quantizers use a plain min/max fit per sub-block instead of ggml's
 * search, which is good enough for test and benchmark models. MXFP4's is
 * ggml's reference quantizer (quantize_row_mxfp4_ref) step for step, so a
 * file we write holds the bytes llama.cpp's would.
 *
 * Blocks are read and written with memcpy through a local copy because a row
 * inside a file mapping can start at any offset.
 */
#include "quant.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "block fields are read in host order; only little-endian hosts match the file format"
#endif

// Round to nearest, ties to even, independent of the FP rounding mode: adding
// 1.5 * 2^23 leaves the rounded integer in the low mantissa bits. Exact for
// |v| < 2^22 (every caller's values are far smaller; larger or NaN inputs give
// a meaningless but defined result that the callers clamp).
static inline int s_nearest_int(float v) {
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007FFFFF) - 0x00400000;
}

static inline int s_clamp(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

// C's truncating float -> int conversion, saturated to [lo, hi] (NaN gives 0)
// so inf/NaN inputs from a diverging model cannot hit undefined behaviour.
static inline int s_to_int(float r, int lo, int hi) {
    if (r >= (float)hi) return hi;
    if (r <= (float)lo) return lo;
    return r == r ? (int)r : 0;
}

// --- dequantizers -------------------------------------------------------------

static void s_deq_q4_0(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q4_0_t), y += MC_QK) {
        mc_block_q4_0_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        for (int j = 0; j < MC_QK / 2; j++) {
            y[j] = ((b.qs[j] & 0xF) - 8) * d;
            y[j + MC_QK / 2] = ((b.qs[j] >> 4) - 8) * d;
        }
    }
}

static void s_deq_q4_1(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q4_1_t), y += MC_QK) {
        mc_block_q4_1_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d), m = mc_fp16_to_fp32(b.m);
        for (int j = 0; j < MC_QK / 2; j++) {
            y[j] = (b.qs[j] & 0xF) * d + m;
            y[j + MC_QK / 2] = (b.qs[j] >> 4) * d + m;
        }
    }
}

static void s_deq_q5_0(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q5_0_t), y += MC_QK) {
        mc_block_q5_0_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        uint32_t qh;
        memcpy(&qh, b.qh, sizeof qh);
        for (int j = 0; j < MC_QK / 2; j++) {
            const int hi0 = (int)((qh >> j) & 1u) << 4;
            const int hi1 = (int)((qh >> (j + 16)) & 1u) << 4;
            y[j] = (((b.qs[j] & 0xF) | hi0) - 16) * d;
            y[j + MC_QK / 2] = (((b.qs[j] >> 4) | hi1) - 16) * d;
        }
    }
}

static void s_deq_q5_1(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q5_1_t), y += MC_QK) {
        mc_block_q5_1_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d), m = mc_fp16_to_fp32(b.m);
        uint32_t qh;
        memcpy(&qh, b.qh, sizeof qh);
        for (int j = 0; j < MC_QK / 2; j++) {
            const int hi0 = (int)((qh >> j) & 1u) << 4;
            const int hi1 = (int)((qh >> (j + 16)) & 1u) << 4;
            y[j] = ((b.qs[j] & 0xF) | hi0) * d + m;
            y[j + MC_QK / 2] = ((b.qs[j] >> 4) | hi1) * d + m;
        }
    }
}

static void s_deq_q8_0(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q8_0_t), y += MC_QK) {
        mc_block_q8_0_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        for (int j = 0; j < MC_QK; j++) y[j] = b.qs[j] * d;
    }
}

static void s_deq_q8_1(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q8_1_t), y += MC_QK) {
        mc_block_q8_1_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        for (int j = 0; j < MC_QK; j++) y[j] = b.qs[j] * d;
    }
}

static void s_deq_q2_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q2_k_t)) {
        mc_block_q2_k_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d), dmin = mc_fp16_to_fp32(b.dmin);
        int is = 0;
        // Each 128-value half reads 32 bytes of qs four times, 2 bits per pass;
        // each pass covers two 16-value groups with their own scale and min.
        for (int half = 0; half < 2; half++) {
            const uint8_t *q = b.qs + 32 * half;
            for (int shift = 0; shift < 8; shift += 2) {
                for (int g = 0; g < 2; g++) {
                    const uint8_t sc = b.scales[is++];
                    const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * ((q[16 * g + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

// The 16 signed 6-bit Q3_K scales: low 4 bits in bytes 0..7 (two per byte),
// high 2 bits packed four per byte in bytes 8..11.
static void s_q3_k_scales(const uint8_t s[12], int out[16]) {
    for (int i = 0; i < 16; i++) {
        const int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
        const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = (lo | hi << 4) - 32;
    }
}

static void s_deq_q3_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q3_k_t)) {
        mc_block_q3_k_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        int sc[16];
        s_q3_k_scales(b.scales, sc);
        int is = 0;
        uint8_t m = 1; // hmask bit of the current 32-value slice
        for (int half = 0; half < 2; half++) {
            const uint8_t *q = b.qs + 32 * half;
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int g = 0; g < 2; g++) {
                    const float dl = d * sc[is++];
                    for (int l = 0; l < 16; l++) {
                        const int k = 16 * g + l;
                        *y++ = dl * (((q[k] >> shift) & 3) - ((b.hmask[k] & m) ? 0 : 4));
                    }
                }
            }
        }
    }
}

// (scale, min) of sub-block j of a Q4_K/Q5_K block: 6 bits each; j < 4 sit
// in the low 6 bits of bytes 0..7, j >= 4 split over a nibble of bytes 8..11
// and the top 2 bits of bytes 0..7.
static inline void s_scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

static void s_deq_q4_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q4_k_t)) {
        mc_block_q4_k_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d), dmin = mc_fp16_to_fp32(b.dmin);
        // 32 bytes of qs hold 64 values: low nibbles then high nibbles.
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = b.qs + 32 * c;
            uint8_t sc, m;
            s_scale_min_k4(2 * c, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            s_scale_min_k4(2 * c + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void s_deq_q5_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q5_k_t)) {
        mc_block_q5_k_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d), dmin = mc_fp16_to_fp32(b.dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = b.qs + 32 * c;
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            uint8_t sc, m;
            s_scale_min_k4(2 * c, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            s_scale_min_k4(2 * c + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void s_deq_q6_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q6_k_t)) {
        mc_block_q6_k_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_fp16_to_fp32(b.d);
        // Per 128-value half: 64 bytes of ql (low nibbles for values 0..63,
        // high nibbles for 64..127) and 32 bytes of qh (2 bits for each of four
        // values l, l+32, l+64, l+96).
        for (int half = 0; half < 2; half++, y += 128) {
            const uint8_t *ql = b.ql + 64 * half, *qh = b.qh + 32 * half;
            const int8_t *sc = b.scales + 8 * half;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

static void s_deq_mxfp4(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_mxfp4_t), y += MC_QK) {
        mc_block_mxfp4_t b;
        memcpy(&b, src, sizeof b);
        const float d = mc_e8m0_to_fp32_half(b.e);
        for (int j = 0; j < MC_QK / 2; j++) {
            y[j] = mc_mxfp4_values[b.qs[j] & 0xF] * d;
            y[j + MC_QK / 2] = mc_mxfp4_values[b.qs[j] >> 4] * d;
        }
    }
}

static void s_deq_q8_k(const uint8_t *src, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, src += sizeof(mc_block_q8_k_t), y += MC_QK_K) {
        mc_block_q8_k_t b;
        memcpy(&b, src, sizeof b);
        for (int j = 0; j < MC_QK_K; j++) y[j] = b.d * b.qs[j];
    }
}

// --- 32-value weight quantizers (ggml's reference algorithms) -----------------

// Element of largest magnitude, with its sign (the first one on ties).
static float s_signed_absmax(const float *x, int n) {
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void s_min_max(const float *x, int n, float *mn, float *mx) {
    *mn = x[0];
    *mx = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

static void s_quant_q4_0(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q4_0_t)) {
        mc_block_q4_0_t b;
        // The largest-magnitude value maps to -8, the end with the extra level.
        const float d = s_signed_absmax(x, MC_QK) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = mc_fp32_to_fp16(d);
        for (int j = 0; j < MC_QK / 2; j++) {
            const int q0 = s_to_int(x[j] * id + 8.5f, 0, 15);
            const int q1 = s_to_int(x[j + MC_QK / 2] * id + 8.5f, 0, 15);
            b.qs[j] = (uint8_t)(q0 | q1 << 4);
        }
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q4_1(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q4_1_t)) {
        mc_block_q4_1_t b;
        float mn, mx;
        s_min_max(x, MC_QK, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = mc_fp32_to_fp16(d);
        b.m = mc_fp32_to_fp16(mn);
        for (int j = 0; j < MC_QK / 2; j++) {
            const int q0 = s_to_int((x[j] - mn) * id + 0.5f, 0, 15);
            const int q1 = s_to_int((x[j + MC_QK / 2] - mn) * id + 0.5f, 0, 15);
            b.qs[j] = (uint8_t)(q0 | q1 << 4);
        }
        memcpy(dst, &b, sizeof b);
    }
}

// Splits 32 five-bit values into nibbles (qs) and the fifth bits (qh, bit j
// for value j).
static void s_pack_q5(const int q[MC_QK], uint8_t qs[MC_QK / 2], uint8_t qh_out[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < MC_QK / 2; j++) {
        const int q0 = q[j], q1 = q[j + MC_QK / 2];
        qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + MC_QK / 2);
    }
    memcpy(qh_out, &qh, sizeof qh);
}

static void s_quant_q5_0(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q5_0_t)) {
        mc_block_q5_0_t b;
        const float d = s_signed_absmax(x, MC_QK) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = mc_fp32_to_fp16(d);
        int q[MC_QK];
        for (int j = 0; j < MC_QK; j++) q[j] = s_to_int(x[j] * id + 16.5f, 0, 31);
        s_pack_q5(q, b.qs, b.qh);
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q5_1(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q5_1_t)) {
        mc_block_q5_1_t b;
        float mn, mx;
        s_min_max(x, MC_QK, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = mc_fp32_to_fp16(d);
        b.m = mc_fp32_to_fp16(mn);
        int q[MC_QK];
        for (int j = 0; j < MC_QK; j++) q[j] = s_to_int((x[j] - mn) * id + 0.5f, 0, 31);
        s_pack_q5(q, b.qs, b.qh);
        memcpy(dst, &b, sizeof b);
    }
}

// The code whose value times d is nearest x: the first on ties (so 0, never
// -0, for x = 0), as ggml's best_index_mxfp4.
static int s_mxfp4_nearest(float x, float d) {
    int best = 0;
    float best_err = fabsf(mc_mxfp4_values[0] * d - x);
    for (int i = 1; i < 16; i++) {
        const float err = fabsf(mc_mxfp4_values[i] * d - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return best;
}

// ggml's quantize_row_mxfp4_ref: the scale 2^(floor(log2(amax)) - 2) puts the
// largest magnitude in [4, 8) scale units, where E2M1's top values (4, 6) sit;
// values above 6 units clip to 6. log2f as ggml calls it, so the exponent is
// the same even where log2f rounds up to an integer just below a power of two.
// Where ggml's cast to uint8_t would be undefined (amax below 2^-125, or
// infinite) the exponent is clamped to 0 .. 254 instead: never the NaN byte.
static void s_quant_mxfp4(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_mxfp4_t)) {
        mc_block_mxfp4_t b;
        float amax = 0.f;
        for (int j = 0; j < MC_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        float e = amax > 0.f ? floorf(log2f(amax)) - 2 + 127 : 0.f;
        b.e = (uint8_t)(e > 254.f ? 254 : e > 0.f ? (int)e : 0);
        const float d = mc_e8m0_to_fp32_half(b.e);
        for (int j = 0; j < MC_QK / 2; j++)
            b.qs[j] = (uint8_t)(s_mxfp4_nearest(x[j], d) | s_mxfp4_nearest(x[j + MC_QK / 2], d) << 4);
        memcpy(dst, &b, sizeof b);
    }
}

// --- activation quantizers (exactly ggml's reference) ------------------------

// Q8_0 and Q8_1 share the scale: d = max|x| / 127, q = roundf(x / d) (ties
// away from zero). Returns d; q receives the 32 quants.
static float s_q8_block(const float *x, int8_t q[MC_QK]) {
    float amax = 0.f;
    for (int j = 0; j < MC_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < MC_QK; j++) q[j] = (int8_t)s_to_int(roundf(x[j] * id), -128, 127);
    return d;
}

static void s_quant_q8_0(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q8_0_t)) {
        mc_block_q8_0_t b;
        b.d = mc_fp32_to_fp16(s_q8_block(x, b.qs));
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q8_1(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK, dst += sizeof(mc_block_q8_1_t)) {
        mc_block_q8_1_t b;
        const float d = s_q8_block(x, b.qs);
        int sum = 0;
        for (int j = 0; j < MC_QK; j++) sum += b.qs[j];
        b.d = mc_fp32_to_fp16(d);
        b.s = mc_fp32_to_fp16(sum * d); // the f32 d, not its fp16 rounding
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q8_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q8_k_t)) {
        mc_block_q8_k_t b;
        memset(&b, 0, sizeof b);
        const float max = s_signed_absmax(x, MC_QK_K);
        if (max != 0.f) {
            // The largest-magnitude element maps to -127 whatever its sign.
            const float iscale = -127.f / max;
            for (int j = 0; j < MC_QK_K; j++)
                b.qs[j] = (int8_t)s_clamp(s_nearest_int(iscale * x[j]), -128, 127);
            for (int g = 0; g < MC_QK_K / 16; g++) {
                int sum = 0;
                for (int l = 0; l < 16; l++) sum += b.qs[16 * g + l];
                b.bsums[g] = (int16_t)sum;
            }
            b.d = 1 / iscale;
        }
        memcpy(dst, &b, sizeof b);
    }
}

// --- K-quant weight quantizers -------------------------------------------------
//
// Every sub-block gets its own float scale (and min) from its value range; the
// super-block then stores those with one fp16 factor and a few bits each, and
// the values are finally requantized against the scales as stored so rounding
// of the scales does not bias the reconstruction.

// Asymmetric fit of n values to dl * q - ml with q in [0, nmax] and ml >= 0
// (the formats subtract a non-negative min, so the offset never goes above 0).
static void s_fit_asym(const float *x, int n, int nmax, float *scale, float *min) {
    float mn, mx;
    s_min_max(x, n, &mn, &mx);
    if (mn > 0.f) mn = 0.f;
    *scale = mx > mn ? (mx - mn) / nmax : 0.f;
    *min = -mn;
}

// Stores per-sub-block values v[0..n) (all >= 0) as integers of up to `bits`
// bits times one fp16 factor; returns the factor as stored, fills l[].
static float s_quant_scales_u(const float *v, int n, int nmax, uint16_t *f16, uint8_t *l) {
    float vmax = 0.f;
    for (int j = 0; j < n; j++) vmax = fmaxf(vmax, v[j]);
    *f16 = mc_fp32_to_fp16(vmax / nmax);
    const float f = mc_fp16_to_fp32(*f16);
    const float inv = f > 0.f ? 1.f / f : 0.f;
    for (int j = 0; j < n; j++) l[j] = (uint8_t)s_clamp(s_nearest_int(v[j] * inv), 0, nmax);
    return f;
}

// Requantizes n values against the stored scale dl and min ml.
static void s_requant_asym(const float *x, int n, int nmax, float dl, float ml, uint8_t *q) {
    for (int j = 0; j < n; j++) q[j] = dl ? (uint8_t)s_clamp(s_nearest_int((x[j] + ml) / dl), 0, nmax) : 0;
}

static void s_quant_q2_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q2_k_t)) {
        mc_block_q2_k_t b;
        float scales[16], mins[16];
        for (int g = 0; g < 16; g++) s_fit_asym(x + 16 * g, 16, 3, &scales[g], &mins[g]);
        uint8_t ls[16], lm[16];
        const float d = s_quant_scales_u(scales, 16, 15, &b.d, ls);
        const float dmin = s_quant_scales_u(mins, 16, 15, &b.dmin, lm);
        uint8_t q[MC_QK_K];
        for (int g = 0; g < 16; g++) {
            b.scales[g] = (uint8_t)(ls[g] | lm[g] << 4);
            s_requant_asym(x + 16 * g, 16, 3, d * ls[g], dmin * lm[g], q + 16 * g);
        }
        // Byte l of each 32-byte half holds values l, l+32, l+64, l+96 of it.
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; l++)
                b.qs[32 * h + l] = (uint8_t)(qq[l] | qq[l + 32] << 2 | qq[l + 64] << 4 | qq[l + 96] << 6);
        }
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q3_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q3_k_t)) {
        mc_block_q3_k_t b;
        memset(&b, 0, sizeof b);
        // Symmetric: the largest-magnitude value of a group maps to -4, and the
        // largest-magnitude group scale maps to -32, using both extra levels.
        float scales[16];
        for (int g = 0; g < 16; g++) scales[g] = s_signed_absmax(x + 16 * g, 16) / -4;
        const float smax = s_signed_absmax(scales, 16);
        int sc[16] = {0};
        if (smax != 0.f) {
            const float iscale = -32.f / smax;
            for (int g = 0; g < 16; g++) sc[g] = s_clamp(s_nearest_int(iscale * scales[g]), -32, 31);
            b.d = mc_fp32_to_fp16(1 / iscale);
        }
        for (int g = 0; g < 16; g++) {
            const int l = sc[g] + 32;
            if (g < 8) b.scales[g] = (uint8_t)(l & 0xF);
            else b.scales[g - 8] |= (uint8_t)((l & 0xF) << 4);
            b.scales[8 + g % 4] |= (uint8_t)((l >> 4) << (2 * (g / 4)));
        }
        const float d = mc_fp16_to_fp32(b.d);
        uint8_t q[MC_QK_K];
        for (int j = 0; j < MC_QK_K; j++) {
            const float dl = d * sc[j / 16];
            q[j] = (uint8_t)(dl ? s_clamp(s_nearest_int(x[j] / dl), -4, 3) + 4 : 4);
            // Value j's third bit goes to bit j/32 of hmask[j%32].
            if (q[j] > 3) {
                b.hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                q[j] -= 4;
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; l++)
                b.qs[32 * h + l] = (uint8_t)(qq[l] | qq[l + 32] << 2 | qq[l + 64] << 4 | qq[l + 96] << 6);
        }
        memcpy(dst, &b, sizeof b);
    }
}

// Packs the eight 6-bit (scale, min) pairs of Q4_K/Q5_K (inverse of s_scale_min_k4).
static void s_pack_scale_min_k4(const uint8_t ls[8], const uint8_t lm[8], uint8_t s[MC_K_SCALE_SIZE]) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(ls[j] | (ls[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(lm[j] | (lm[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((ls[j + 4] & 0xF) | (lm[j + 4] & 0xF) << 4);
    }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fills d, dmin, scales and the
// 256 quants q (not yet packed).
static void s_quant_k4_common(const float *x, int nmax, uint16_t *d16, uint16_t *dmin16,
                              uint8_t scales[MC_K_SCALE_SIZE], uint8_t q[MC_QK_K]) {
    float sc[8], mn[8];
    for (int g = 0; g < 8; g++) s_fit_asym(x + 32 * g, 32, nmax, &sc[g], &mn[g]);
    uint8_t ls[8], lm[8];
    const float d = s_quant_scales_u(sc, 8, 63, d16, ls);
    const float dmin = s_quant_scales_u(mn, 8, 63, dmin16, lm);
    s_pack_scale_min_k4(ls, lm, scales);
    for (int g = 0; g < 8; g++) s_requant_asym(x + 32 * g, 32, nmax, d * ls[g], dmin * lm[g], q + 32 * g);
}

static void s_quant_q4_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q4_k_t)) {
        mc_block_q4_k_t b;
        uint8_t q[MC_QK_K];
        s_quant_k4_common(x, 15, &b.d, &b.dmin, b.scales, q);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b.qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + l + 32] << 4);
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q5_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q5_k_t)) {
        mc_block_q5_k_t b;
        uint8_t q[MC_QK_K];
        s_quant_k4_common(x, 31, &b.d, &b.dmin, b.scales, q);
        memset(b.qh, 0, sizeof b.qh);
        // Chunk c's 64 values: nibbles as in Q4_K, fifth bits in qh bits 2c, 2c+1.
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int q1 = q[64 * c + l], q2 = q[64 * c + l + 32];
                b.qs[32 * c + l] = (uint8_t)((q1 & 0xF) | (q2 & 0xF) << 4);
                b.qh[l] |= (uint8_t)((q1 >> 4) << (2 * c) | (q2 >> 4) << (2 * c + 1));
            }
        }
        memcpy(dst, &b, sizeof b);
    }
}

static void s_quant_q6_k(const float *x, uint8_t *dst, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += MC_QK_K, dst += sizeof(mc_block_q6_k_t)) {
        mc_block_q6_k_t b;
        memset(&b, 0, sizeof b);
        // Symmetric as Q3_K: group maxima map to -32, the largest scale to -128.
        float scales[16];
        for (int g = 0; g < 16; g++) scales[g] = s_signed_absmax(x + 16 * g, 16) / -32;
        const float smax = s_signed_absmax(scales, 16);
        if (smax != 0.f) {
            const float iscale = -128.f / smax;
            for (int g = 0; g < 16; g++) b.scales[g] = (int8_t)s_clamp(s_nearest_int(iscale * scales[g]), -128, 127);
            b.d = mc_fp32_to_fp16(1 / iscale);
        }
        const float d = mc_fp16_to_fp32(b.d);
        uint8_t q[MC_QK_K];
        for (int j = 0; j < MC_QK_K; j++) {
            const float dl = d * b.scales[j / 16];
            q[j] = (uint8_t)(dl ? s_clamp(s_nearest_int(x[j] / dl), -32, 31) + 32 : 32);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            uint8_t *ql = b.ql + 64 * h, *qh = b.qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((qq[l] & 0xF) | (qq[l + 64] & 0xF) << 4);
                ql[l + 32] = (uint8_t)((qq[l + 32] & 0xF) | (qq[l + 96] & 0xF) << 4);
                qh[l] = (uint8_t)(qq[l] >> 4 | (qq[l + 32] >> 4) << 2 | (qq[l + 64] >> 4) << 4 | (qq[l + 96] >> 4) << 6);
            }
        }
        memcpy(dst, &b, sizeof b);
    }
}

// --- public entry points -------------------------------------------------------

// Validates (type, n); on success *nb is the number of blocks (or values for
// the float types).
static mc_err_t s_check(mc_dtype_t type, int64_t n, int64_t *nb) {
    const mc_dtype_traits_t *t = mc_dtype_traits((uint32_t)type);
    if (!t) return MC_ERR_UNSUPPORTED;
    if (n < 0 || n % t->block_elems) return MC_ERR_ARG;
    *nb = n / t->block_elems;
    return MC_OK;
}

mc_err_t mc_quant_dequantize_row(mc_dtype_t type, const void *src, float *dst, int64_t n) {
    int64_t nb;
    mc_err_t e = s_check(type, n, &nb);
    if (e || n == 0) return e;
    assert(src && dst);
    const uint8_t *p = src;
    switch (type) {
    case MC_DTYPE_F32: memcpy(dst, p, (size_t)n * sizeof(float)); break;
    case MC_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = mc_fp16_to_fp32(h);
        }
        break;
    case MC_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = mc_bf16_to_fp32(h);
        }
        break;
    case MC_DTYPE_Q4_0: s_deq_q4_0(p, dst, nb); break;
    case MC_DTYPE_Q4_1: s_deq_q4_1(p, dst, nb); break;
    case MC_DTYPE_Q5_0: s_deq_q5_0(p, dst, nb); break;
    case MC_DTYPE_Q5_1: s_deq_q5_1(p, dst, nb); break;
    case MC_DTYPE_Q8_0: s_deq_q8_0(p, dst, nb); break;
    case MC_DTYPE_Q8_1: s_deq_q8_1(p, dst, nb); break;
    case MC_DTYPE_Q2_K: s_deq_q2_k(p, dst, nb); break;
    case MC_DTYPE_Q3_K: s_deq_q3_k(p, dst, nb); break;
    case MC_DTYPE_Q4_K: s_deq_q4_k(p, dst, nb); break;
    case MC_DTYPE_Q5_K: s_deq_q5_k(p, dst, nb); break;
    case MC_DTYPE_Q6_K: s_deq_q6_k(p, dst, nb); break;
    case MC_DTYPE_Q8_K: s_deq_q8_k(p, dst, nb); break;
    case MC_DTYPE_MXFP4: s_deq_mxfp4(p, dst, nb); break;
    default: return MC_ERR_UNSUPPORTED;
    }
    return MC_OK;
}

mc_err_t mc_quant_quantize_row(mc_dtype_t type, const float *src, void *dst, int64_t n) {
    int64_t nb;
    mc_err_t e = s_check(type, n, &nb);
    if (e || n == 0) return e;
    assert(src && dst);
    uint8_t *p = dst;
    switch (type) {
    case MC_DTYPE_F32: memcpy(p, src, (size_t)n * sizeof(float)); break;
    case MC_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = mc_fp32_to_fp16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case MC_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = mc_fp32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case MC_DTYPE_Q4_0: s_quant_q4_0(src, p, nb); break;
    case MC_DTYPE_Q4_1: s_quant_q4_1(src, p, nb); break;
    case MC_DTYPE_Q5_0: s_quant_q5_0(src, p, nb); break;
    case MC_DTYPE_Q5_1: s_quant_q5_1(src, p, nb); break;
    case MC_DTYPE_Q8_0: s_quant_q8_0(src, p, nb); break;
    case MC_DTYPE_Q8_1: s_quant_q8_1(src, p, nb); break;
    case MC_DTYPE_Q2_K: s_quant_q2_k(src, p, nb); break;
    case MC_DTYPE_Q3_K: s_quant_q3_k(src, p, nb); break;
    case MC_DTYPE_Q4_K: s_quant_q4_k(src, p, nb); break;
    case MC_DTYPE_Q5_K: s_quant_q5_k(src, p, nb); break;
    case MC_DTYPE_Q6_K: s_quant_q6_k(src, p, nb); break;
    case MC_DTYPE_Q8_K: s_quant_q8_k(src, p, nb); break;
    case MC_DTYPE_MXFP4: s_quant_mxfp4(src, p, nb); break;
    default: return MC_ERR_UNSUPPORTED;
    }
    return MC_OK;
}

int64_t mc_quant_mxfp4_bad_block(const void *src, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / MC_QK; i++)
        if (p[(size_t)i * sizeof(mc_block_mxfp4_t) + offsetof(mc_block_mxfp4_t, e)] == MC_E8M0_NAN) return i;
    return -1;
}
