/*
 * kernel_neon: aarch64 NEON versions of the kernels in kernel.c, in two
 * flavours: baseline ARMv8 NEON (Cortex-A72, Raspberry Pi 4), where byte
 * products are widened with smull and summed pairwise, and the dot-product
 * extension (Cortex-A76, Raspberry Pi 5), where one sdot multiplies and sums
 * four byte pairs per 32-bit lane.
 *
 * Every kernel returns the same bits as the scalar reference. Integer sums
 * are exact in any order; every float operation that combines them is the
 * reference's, in the reference's order: Q4_0 and MXFP4 add whole-block sums one
 * block after the other (its repacked 8-row groups keep 8 rows in two 4-lane
 * registers), the other 32-value block types keep the
 * reference's 8 lanes as two 4-lane registers per activation row, the
 * K-quants compute several blocks' products side by side in vector lanes,
 * and the float-weight dots keep the reference's 16 accumulators as four
 * 4-lane registers. None of it survives a*b+c being fused into an FMA, so
 * this file, like the whole project, is built with -ffp-contract=off (GCC's
 * arm_neon.h spells vmulq_f32 and vaddq_f32 as plain vector * and +).
 *
 * The flavours share each kernel's body: an always-inline function that takes
 * its byte-dot primitive as a function pointer, which is constant at each call
 * site, so the compiler inlines body and primitive into each flavour's small
 * wrapper. Only the dot-product wrappers are compiled for armv8.2-a+dotprod,
 * so the rest of the program stays baseline and still runs on a Pi 4; kernel.c
 * hands out that table only when the CPU reports the extension.
 */
#include "kernel_impl.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "quant.h"

#define S_FIELD(blk, type, field) ((const uint8_t *)(blk) + offsetof(type, field))
// Wrappers of the dot-product flavour. (GCC 12 needs the arch= spelling: a
// bare "+dotprod" does not unlock vdotq_s32. Clang before 16 cannot enable
// the intrinsic per function at all; the project builds with GCC.)
#define S_SDOT __attribute__((target("arch=armv8.2-a+dotprod")))
// Kernel bodies: inlined into every wrapper, so each flavour gets its own copy.
#define S_BODY static inline __attribute__((always_inline))

// --- loads (rows come from a file mapping: any alignment) -------------------------

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

static inline int8x16_t s_ld_s8(const uint8_t *p) {
    return vreinterpretq_s8_u8(vld1q_u8(p));
}

// The fp16 values at four addresses as four floats (the conversion is exact).
static inline float32x4_t s_half4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3) {
    uint16_t h[4];
    memcpy(&h[0], p0, 2);
    memcpy(&h[1], p1, 2);
    memcpy(&h[2], p2, 2);
    memcpy(&h[3], p3, 2);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

static inline float32x4_t s_f32x4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3) {
    const float f[4] = {s_f32(p0), s_f32(p1), s_f32(p2), s_f32(p3)};
    return vld1q_f32(f);
}

// [sum of p[0]'s lanes, ..., sum of p[3]'s lanes].
static inline int32x4_t s_hsum4(const int32x4_t p[4]) {
    return vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
}

// --- byte dot primitives --------------------------------------------------------------
//
// Each returns acc plus four int32 lanes whose total is the dot of the bytes.
// The smull versions are bounded by the weights they serve, against any
// activation byte: an int16 lane of summed products holds at most 32767,
// i.e. one product of two full-range bytes, two products when |w| <= 64, or
// four when |w| <= 32.

typedef int32x4_t (*s_dot16_fn)(int32x4_t acc, int8x16_t w, int8x16_t a);
typedef int32x4_t (*s_dot32_fn)(int32x4_t acc, int8x16_t w0, int8x16_t a0, int8x16_t w1, int8x16_t a1);

// |w| <= 64.
S_BODY int32x4_t s_dot16_small_mull(int32x4_t acc, int8x16_t w, int8x16_t a) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), w, a));
}

// |w0|, |w1| <= 32.
S_BODY int32x4_t s_dot32_small_mull(int32x4_t acc, int8x16_t w0, int8x16_t a0, int8x16_t w1, int8x16_t a1) {
    int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    p = vmlal_high_s8(p, w0, a0);
    p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
    p = vmlal_high_s8(p, w1, a1);
    return vpadalq_s16(acc, p);
}

S_SDOT S_BODY int32x4_t s_dot16_sdot(int32x4_t acc, int8x16_t w, int8x16_t a) {
    return vdotq_s32(acc, w, a);
}

S_SDOT S_BODY int32x4_t s_dot32_sdot(int32x4_t acc, int8x16_t w0, int8x16_t a0, int8x16_t w1, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(acc, w0, a0), w1, a1);
}

// --- activation conversions -----------------------------------------------------------
//
// The act signature has no error path: the caller validates n (a multiple of
// the block size), so a bad n is a programmer error.

static void s_act_f32(const float *x, void *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof *x);
}

static void s_act_f16(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float32x4_t v = vld1q_f32(x + j);
        const uint16x4_t h = vreinterpret_u16_f16(vcvt_f16_f32(v)); // IEEE round to nearest even
        // fcvtn keeps a NaN's payload; the reference makes every NaN the
        // payload-free quiet NaN of its sign.
        const uint16x4_t sign = vand_u16(vshrn_n_u32(vreinterpretq_u32_f32(v), 16), vdup_n_u16(0x8000));
        const uint16x4_t nan = vorr_u16(sign, vdup_n_u16(0x7E00));
        vst1_u8(out + 2 * j, vreinterpret_u8_u16(vbsl_u16(vmovn_u32(vceqq_f32(v, v)), h, nan)));
    }
    for (; j < n; j++) {
        const uint16_t h = mc_fp32_to_fp16(x[j]);
        memcpy(out + 2 * j, &h, 2);
    }
}

static void s_act_bf16(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        // The reference's integer rounding (to nearest even) and NaN quieting.
        const uint32x4_t u = vreinterpretq_u32_f32(vld1q_f32(x + j));
        const uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
        const uint16x4_t r = vshrn_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7FFF)), odd), 16);
        const uint16x4_t nan = vorr_u16(vshrn_n_u32(u, 16), vdup_n_u16(0x40));
        const uint32x4_t is_nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7FFFFFFF)), vdupq_n_u32(0x7F800000));
        vst1_u8(out + 2 * j, vreinterpret_u8_u16(vbsl_u16(vmovn_u32(is_nan), nan, r)));
    }
    for (; j < n; j++) {
        const uint16_t h = mc_fp32_to_bf16(x[j]);
        memcpy(out + 2 * j, &h, 2);
    }
}

// One Q8_0/Q8_1 block: d = max|x| / 127 (fmaxf semantics: fmaxnm), q =
// roundf(x / d) saturated to [-128, 127] (fcvtas rounds ties away from zero
// and gives 0 for NaN, as the reference's roundf + saturating conversion).
// Returns d.
static float s_q8_block(const float *x, int8_t q[MC_QK]) {
    float32x4_t v[MC_QK / 4];
    float32x4_t amax = vdupq_n_f32(0.f);
    for (int r = 0; r < MC_QK / 4; r++) {
        v[r] = vld1q_f32(x + 4 * r);
        amax = vmaxnmq_f32(amax, vabsq_f32(v[r]));
    }
    const float d = vmaxnmvq_f32(amax) / 127;
    const float id = d ? 1.0f / d : 0.0f;
    for (int r = 0; r < MC_QK / 4; r += 2) {
        const int32x4_t q0 = vcvtaq_s32_f32(vmulq_n_f32(v[r], id));
        const int32x4_t q1 = vcvtaq_s32_f32(vmulq_n_f32(v[r + 1], id));
        vst1_s8(q + 4 * r, vqmovn_s16(vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1))));
    }
    return d;
}

static void s_act_q8_0(const float *x, void *y, int64_t n) {
    assert(n % MC_QK == 0);
    uint8_t *dst = y;
    for (int64_t i = 0; i < n / MC_QK; i++, x += MC_QK, dst += sizeof(mc_block_q8_0_t)) {
        mc_block_q8_0_t b;
        b.d = mc_fp32_to_fp16(s_q8_block(x, b.qs));
        memcpy(dst, &b, sizeof b);
    }
}

static void s_act_q8_1(const float *x, void *y, int64_t n) {
    assert(n % MC_QK == 0);
    uint8_t *dst = y;
    for (int64_t i = 0; i < n / MC_QK; i++, x += MC_QK, dst += sizeof(mc_block_q8_1_t)) {
        mc_block_q8_1_t b;
        const float d = s_q8_block(x, b.qs);
        const int sum = vaddlvq_s8(vld1q_s8(b.qs)) + vaddlvq_s8(vld1q_s8(b.qs + 16));
        b.d = mc_fp32_to_fp16(d);
        b.s = mc_fp32_to_fp16(sum * d);
        memcpy(dst, &b, sizeof b);
    }
}

// Q8_K: the signed element of largest magnitude (the first on ties) maps to
// -127; quants are rounded with the reference's add-1.5*2^23 trick (not
// fcvtns), so even inputs outside its exact range give the reference's bits.
static void s_act_q8_k(const float *x, void *y, int64_t n) {
    assert(n % MC_QK_K == 0);
    uint8_t *dst = y;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += MC_QK_K, dst += sizeof(mc_block_q8_k_t)) {
        mc_block_q8_k_t b;
        memset(&b, 0, sizeof b);
        // Largest |x| per lane by "greater than", which skips NaN as the reference does.
        float32x4_t amax4 = vdupq_n_f32(0.f);
        for (int j = 0; j < MC_QK_K; j += 4) {
            const float32x4_t a = vabsq_f32(vld1q_f32(x + j));
            amax4 = vbslq_f32(vcgtq_f32(a, amax4), a, amax4);
        }
        const float amax = vmaxvq_f32(amax4); // lanes are never NaN
        float max = 0.f;
        if (amax > 0.f) {
            for (int j = 0; j < MC_QK_K; j++) {
                if (fabsf(x[j]) == amax) {
                    max = x[j];
                    break;
                }
            }
        }
        if (max != 0.f) {
            const float iscale = -127.f / max;
            const float32x4_t magic = vdupq_n_f32(12582912.f);
            for (int g = 0; g < MC_QK_K / 16; g++) {
                int32x4_t q[4];
                for (int r = 0; r < 4; r++) {
                    const float32x4_t t = vaddq_f32(vmulq_n_f32(vld1q_f32(x + 16 * g + 4 * r), iscale), magic);
                    const int32x4_t m = vreinterpretq_s32_u32(vandq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(0x007FFFFF)));
                    q[r] = vsubq_s32(m, vdupq_n_s32(0x00400000));
                }
                const int16x8_t lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
                const int16x8_t hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
                const int8x16_t qs = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
                vst1q_s8(b.qs + 16 * g, qs);
                b.bsums[g] = vaddlvq_s8(qs);
            }
            b.d = 1 / iscale;
        }
        memcpy(dst, &b, sizeof b);
    }
}

// --- float weights: 16 accumulators, acc[j % 16] += w[j] * x[j] -----------------------
//
// As four registers acc[r] holding accumulators 4r..4r+3. A tail of n % 16
// values goes to the first lanes one by one, on the stored accumulators.

static inline void s_store16(const float32x4_t acc[4], float out[16]) {
    for (int r = 0; r < 4; r++) vst1q_f32(out + 4 * r, acc[r]);
}

static inline void s_load16(const float in[16], float32x4_t acc[4]) {
    for (int r = 0; r < 4; r++) acc[r] = vld1q_f32(in + 4 * r);
}

// The reference's fold: lanes i += i + 8, then i += i + 4 (q0 + q2, q1 + q3,
// then their sum), then (lane 0 + lane 1) + (lane 2 + lane 3).
static inline float s_fold16(const float32x4_t acc[4]) {
    const float32x4_t v = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    const float32x2_t p = vpadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(p, 0) + vget_lane_f32(p, 1);
}

static inline float32x4_t s_ld_f32x4(const uint8_t *p) {
    return vreinterpretq_f32_u8(vld1q_u8(p));
}

static void s_dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int r = 0; r < 4; r++)
            acc[r] = vaddq_f32(acc[r], vmulq_f32(s_ld_f32x4(x + 4 * (j + 4 * r)), s_ld_f32x4(y + 4 * (j + 4 * r))));
    if (j < n) {
        float lanes[16];
        s_store16(acc, lanes);
        for (; j < n; j++) lanes[j % 16] += s_f32(x + 4 * j) * s_f32(y + 4 * j);
        s_load16(lanes, acc);
    }
    *s = s_fold16(acc);
}

static void s_dot_f16(int64_t n, float *s, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int h = 0; h < 2; h++) {
            const float16x8_t wh = vreinterpretq_f16_u8(vld1q_u8(x + 2 * (j + 8 * h)));
            const float16x8_t yh = vreinterpretq_f16_u8(vld1q_u8(y + 2 * (j + 8 * h)));
            acc[2 * h] = vaddq_f32(acc[2 * h], vmulq_f32(vcvt_f32_f16(vget_low_f16(wh)), vcvt_f32_f16(vget_low_f16(yh))));
            acc[2 * h + 1] = vaddq_f32(acc[2 * h + 1], vmulq_f32(vcvt_high_f32_f16(wh), vcvt_high_f32_f16(yh)));
        }
    }
    if (j < n) {
        float lanes[16];
        s_store16(acc, lanes);
        for (; j < n; j++) lanes[j % 16] += s_half(x + 2 * j) * s_half(y + 2 * j);
        s_load16(lanes, acc);
    }
    *s = s_fold16(acc);
}

static void s_dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int h = 0; h < 2; h++) {
            // bf16 -> f32 is a 16-bit left shift.
            const uint16x8_t wb = vreinterpretq_u16_u8(vld1q_u8(x + 2 * (j + 8 * h)));
            const uint16x8_t yb = vreinterpretq_u16_u8(vld1q_u8(y + 2 * (j + 8 * h)));
            const float32x4_t w0 = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(wb), 16));
            const float32x4_t y0 = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(yb), 16));
            const float32x4_t w1 = vreinterpretq_f32_u32(vshll_high_n_u16(wb, 16));
            const float32x4_t y1 = vreinterpretq_f32_u32(vshll_high_n_u16(yb, 16));
            acc[2 * h] = vaddq_f32(acc[2 * h], vmulq_f32(w0, y0));
            acc[2 * h + 1] = vaddq_f32(acc[2 * h + 1], vmulq_f32(w1, y1));
        }
    }
    if (j < n) {
        float lanes[16];
        s_store16(acc, lanes);
        for (; j < n; j++) {
            uint16_t hx, hy;
            memcpy(&hx, x + 2 * j, 2);
            memcpy(&hy, y + 2 * j, 2);
            lanes[j % 16] += mc_bf16_to_fp32(hx) * mc_bf16_to_fp32(hy);
        }
        s_load16(lanes, acc);
    }
    *s = s_fold16(acc);
}

// --- 32-value blocks ----------------------------------------------------------------------
//
// kernel.c's 8-lane order: lane l sums the products of values 4l..4l+3, so
// the values 0..15 of a block give lanes 0-3 and 16..31 lanes 4-7, each half
// one byte-quad primitive (sdot, or smull and pairwise adds). Each activation
// row keeps its 8 float lanes in two registers, lo and hi, that take
// acc + (float)p * d block after block. Blocks go four at a time so their
// fp16 scales convert together. d is the first field of every one of these
// block types, so a block pointer is also the address of its d.

// Lane k: the sum of the byte products 4k..4k+3 of w and a.
typedef int32x4_t (*s_quad_fn)(int8x16_t w, int8x16_t a);

// Any bytes: a product pair can reach 2 * 128 * 128, so pairs widen first.
S_BODY int32x4_t s_quad_mull(int8x16_t w, int8x16_t a) {
    const int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    return vpaddq_s32(lo, vpaddlq_s16(vmull_high_s8(w, a)));
}

// |w| <= 64: a pair of products fits in int16.
S_BODY int32x4_t s_quad_small_mull(int8x16_t w, int8x16_t a) {
    return vpaddlq_s16(vpaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)), vmull_high_s8(w, a)));
}

S_SDOT S_BODY int32x4_t s_quad_sdot(int8x16_t w, int8x16_t a) {
    return vdotq_s32(vdupq_n_s32(0), w, a);
}

// w[0] holds values 0..15 (low nibbles), w[1] values 16..31 (high nibbles).
S_BODY void s_nibbles(const uint8_t *qs, int8x16_t w[2]) {
    const uint8x16_t q = vld1q_u8(qs);
    w[0] = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF)));
    w[1] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
}

// The fifth bits of a Q5_0/Q5_1 block (bit j of qh belongs to value j) as
// 0x10 bytes in the layout of s_nibbles.
S_BODY void s_q5_high(const uint8_t *qh, int8x16_t h[2]) {
    static const uint8_t lo_bytes[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t hi_bytes[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t bits;
    memcpy(&bits, qh, sizeof bits);
    const uint8x16_t v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
    const uint8x16_t sel = vld1q_u8(bit), five = vdupq_n_u8(0x10);
    h[0] = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(vqtbl1q_u8(v, vld1q_u8(lo_bytes)), sel), five));
    h[1] = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(vqtbl1q_u8(v, vld1q_u8(hi_bytes)), sel), five));
}

S_BODY void s_unpack_q4_0(const uint8_t *xb, int8x16_t w[2]) {
    s_nibbles(S_FIELD(xb, mc_block_q4_0_t, qs), w);
    for (int k = 0; k < 2; k++) w[k] = vsubq_s8(w[k], vdupq_n_s8(8));
}

S_BODY void s_unpack_q5_0(const uint8_t *xb, int8x16_t w[2]) {
    int8x16_t h[2];
    s_nibbles(S_FIELD(xb, mc_block_q5_0_t, qs), w);
    s_q5_high(S_FIELD(xb, mc_block_q5_0_t, qh), h);
    for (int k = 0; k < 2; k++) w[k] = vsubq_s8(vorrq_s8(w[k], h[k]), vdupq_n_s8(16));
}

S_BODY void s_unpack_q5_1(const uint8_t *xb, int8x16_t w[2]) {
    int8x16_t h[2];
    s_nibbles(S_FIELD(xb, mc_block_q5_1_t, qs), w);
    s_q5_high(S_FIELD(xb, mc_block_q5_1_t, qh), h);
    for (int k = 0; k < 2; k++) w[k] = vorrq_s8(w[k], h[k]);
}

S_BODY void s_unpack_q4_1(const uint8_t *xb, int8x16_t w[2]) {
    s_nibbles(S_FIELD(xb, mc_block_q4_1_t, qs), w);
}

S_BODY void s_unpack_q8_0(const uint8_t *xb, int8x16_t w[2]) {
    w[0] = s_ld_s8(S_FIELD(xb, mc_block_q8_0_t, qs));
    w[1] = s_ld_s8(S_FIELD(xb, mc_block_q8_0_t, qs) + 16);
}

// A weight block's integer quants in value order: values 0..15, 16..31.
typedef void (*s_unpack32_fn)(const uint8_t *xb, int8x16_t w[2]);

// What distinguishes the five types. The activation is Q8_0 or Q8_1: its
// quants start at y_q; has_min: the weight's m and the activation's s follow
// their d (Q4_1, Q5_1 against Q8_1).
typedef struct {
    size_t xb, yb, y_q;
    bool has_min;
} s_shape32_t;

// One block against activation block yb: lo/hi += (float)p * d.
S_BODY void s_block32(const int8x16_t q[2], const uint8_t *yb, size_t y_q, float d, s_quad_fn quad,
                      float32x4_t *lo, float32x4_t *hi) {
    const int8x16_t a0 = s_ld_s8(yb + y_q), a1 = s_ld_s8(yb + y_q + 16);
    *lo = vaddq_f32(*lo, vmulq_n_f32(vcvtq_f32_s32(quad(q[0], a0)), d));
    *hi = vaddq_f32(*hi, vmulq_n_f32(vcvtq_f32_s32(quad(q[1], a1)), d));
}

// kernel.c's fold: lanes i + (i + 4), then (0 + 2) + (1 + 3).
static inline float s_fold8(float32x4_t lo, float32x4_t hi) {
    const float32x4_t x = vaddq_f32(lo, hi);
    const float32x2_t y = vadd_f32(vget_low_f32(x), vget_high_f32(x));
    return vget_lane_f32(y, 0) + vget_lane_f32(y, 1);
}

// s[c] = dot(x, a[c]) for na (1..4) activation rows.
S_BODY void s_dot32_rows(int64_t n, float *s, const uint8_t *x, const uint8_t *const *a, int na, s_shape32_t sh,
                         s_unpack32_fn unpack, s_quad_fn quad) {
    assert(n % MC_QK == 0);
    const int64_t nb = n / MC_QK;
    const size_t BX = sh.xb, BY = sh.yb, OM = sizeof(uint16_t);
    float32x4_t lo[4], hi[4];
    float summ[4] = {0.f, 0.f, 0.f, 0.f};
    for (int c = 0; c < 4; c++) lo[c] = hi[c] = vdupq_n_f32(0.f);
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4, x += 4 * BX) {
        int8x16_t q[4][2];
        for (int b = 0; b < 4; b++) unpack(x + b * BX, q[b]);
        const float32x4_t dx = s_half4(x, x + BX, x + 2 * BX, x + 3 * BX);
        // The weights' mins (read only for the types that have them).
        const float32x4_t mx = sh.has_min ? s_half4(x + OM, x + BX + OM, x + 2 * BX + OM, x + 3 * BX + OM) : dx;
        for (int c = 0; c < na; c++) {
            const uint8_t *y = a[c] + i * BY;
            float d[4];
            vst1q_f32(d, vmulq_f32(dx, s_half4(y, y + BY, y + 2 * BY, y + 3 * BY)));
            for (int b = 0; b < 4; b++) s_block32(q[b], y + b * BY, sh.y_q, d[b], quad, &lo[c], &hi[c]);
            if (sh.has_min) {
                float m[4];
                vst1q_f32(m, vmulq_f32(mx, s_half4(y + OM, y + BY + OM, y + 2 * BY + OM, y + 3 * BY + OM)));
                for (int b = 0; b < 4; b++) summ[c] = summ[c] + m[b];
            }
        }
    }
    for (; i < nb; i++, x += BX) {
        int8x16_t q[2];
        unpack(x, q);
        for (int c = 0; c < na; c++) {
            const uint8_t *y = a[c] + i * BY;
            s_block32(q, y, sh.y_q, s_half(x) * s_half(y), quad, &lo[c], &hi[c]);
            if (sh.has_min) summ[c] = summ[c] + s_half(x + OM) * s_half(y + OM);
        }
    }
    for (int c = 0; c < na; c++) s[c] = sh.has_min ? s_fold8(lo[c], hi[c]) + summ[c] : s_fold8(lo[c], hi[c]);
}

static const s_shape32_t s_shape_q4_1 = {sizeof(mc_block_q4_1_t), sizeof(mc_block_q8_1_t),
                                         offsetof(mc_block_q8_1_t, qs), true};
static const s_shape32_t s_shape_q5_0 = {sizeof(mc_block_q5_0_t), sizeof(mc_block_q8_0_t),
                                         offsetof(mc_block_q8_0_t, qs), false};
static const s_shape32_t s_shape_q5_1 = {sizeof(mc_block_q5_1_t), sizeof(mc_block_q8_1_t),
                                         offsetof(mc_block_q8_1_t, qs), true};
static const s_shape32_t s_shape_q8_0 = {sizeof(mc_block_q8_0_t), sizeof(mc_block_q8_0_t),
                                         offsetof(mc_block_q8_0_t, qs), false};

// Each type's dot and dot4 bodies (Q8_0 weights use the whole byte range,
// hence the full-range primitive in its plain-NEON flavour).
#define S_DOT32(name, unpack)                                                                              \
    S_BODY void s_dot_##name(int64_t n, float *s, const void *w, const void *a, s_quad_fn quad) {           \
        const uint8_t *y[1] = {a};                                                                         \
        s_dot32_rows(n, s, w, y, 1, s_shape_##name, unpack, quad);                                         \
    }                                                                                                      \
    S_BODY void s_dot4_##name(int64_t n, float s[4], const void *w, const void *const a[4], s_quad_fn quad) { \
        const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};                                                    \
        s_dot32_rows(n, s, w, y, 4, s_shape_##name, unpack, quad);                                         \
    }
S_DOT32(q4_1, s_unpack_q4_1)
S_DOT32(q5_0, s_unpack_q5_0)
S_DOT32(q5_1, s_unpack_q5_1)
S_DOT32(q8_0, s_unpack_q8_0)
#undef S_DOT32

// --- Q4_0: whole-block sums (kernel.c's Q4_0 order) --------------------------------------------

// Raw rows: each block's exact sum (two quads, added across lanes), then
// acc + (float)isum * (dx * dy), block after block, per activation row.
S_BODY void s_dot_q4_0_rows(int64_t n, float *s, const uint8_t *x, const uint8_t *const *a, int na, s_quad_fn quad) {
    assert(n % MC_QK == 0);
    enum { BX = sizeof(mc_block_q4_0_t), BY = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t i = 0; i < n / MC_QK; i++, x += BX) {
        int8x16_t q[2];
        s_unpack_q4_0(x, q);
        const float dx = s_half(x);
        for (int c = 0; c < na; c++) {
            const uint8_t *y = a[c] + i * BY;
            const int32_t isum = vaddvq_s32(vaddq_s32(quad(q[0], s_ld_s8(y + YQ)), quad(q[1], s_ld_s8(y + YQ + 16))));
            acc[c] = acc[c] + (float)isum * (dx * s_half(y));
        }
    }
    for (int c = 0; c < na; c++) s[c] = acc[c];
}

S_BODY void s_dot_q4_0(int64_t n, float *s, const void *w, const void *a, s_quad_fn quad) {
    const uint8_t *y[1] = {a};
    s_dot_q4_0_rows(n, s, w, y, 1, quad);
}

S_BODY void s_dot4_q4_0(int64_t n, float s[4], const void *w, const void *const a[4], s_quad_fn quad) {
    const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};
    s_dot_q4_0_rows(n, s, w, y, 4, quad);
}

// --- MXFP4: Q4_0's order with the E2M1 table (kernel.c's s_dot_mxfp4) -------------------------

// Each nibble looks up its doubled E2M1 value (tbl): signed bytes, |w| <= 12,
// so the small-product primitive is exact. Then Q4_0's steps with the scale
// 2^(e - 128).
S_BODY void s_dot_mxfp4_rows(int64_t n, float *s, const uint8_t *x, const uint8_t *const *a, int na, s_quad_fn quad) {
    assert(n % MC_QK == 0);
    enum { BX = sizeof(mc_block_mxfp4_t), BY = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    const int8x16_t table = vld1q_s8(mc_mxfp4_values);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t i = 0; i < n / MC_QK; i++, x += BX) {
        int8x16_t q[2];
        s_nibbles(S_FIELD(x, mc_block_mxfp4_t, qs), q);
        for (int k = 0; k < 2; k++) q[k] = vqtbl1q_s8(table, vreinterpretq_u8_s8(q[k]));
        const float dx = mc_e8m0_to_fp32_half(*S_FIELD(x, mc_block_mxfp4_t, e));
        for (int c = 0; c < na; c++) {
            const uint8_t *y = a[c] + i * BY;
            const int32_t isum = vaddvq_s32(vaddq_s32(quad(q[0], s_ld_s8(y + YQ)), quad(q[1], s_ld_s8(y + YQ + 16))));
            acc[c] = acc[c] + (float)isum * (dx * s_half(y));
        }
    }
    for (int c = 0; c < na; c++) s[c] = acc[c];
}

S_BODY void s_dot_mxfp4(int64_t n, float *s, const void *w, const void *a, s_quad_fn quad) {
    const uint8_t *y[1] = {a};
    s_dot_mxfp4_rows(n, s, w, y, 1, quad);
}

S_BODY void s_dot4_mxfp4(int64_t n, float s[4], const void *w, const void *const a[4], s_quad_fn quad) {
    const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};
    s_dot_mxfp4_rows(n, s, w, y, 4, quad);
}

// Repacked groups of 8 rows (kernel.h): a 16-byte half of each quant record
// holds 4 bytes of 4 rows, so quad(w, the activation's 4 bytes in every
// lane) sums 4 bytes of 4 rows in 4 lanes (|w| <= 8: the small-product
// primitive is exact). Rows 0-3 and 4-7 in two registers, kernel.c's steps
// lane-wise.
S_BODY void s_dot8_q4_0(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na, s_quad_fn quad) {
    assert(n % MC_QK == 0 && na >= 1 && na <= 4);
    if (row_bytes) { // raw rows: one row at a time, the same steps
        const uint8_t *y[4] = {a[0], na > 1 ? a[1] : a[0], na > 2 ? a[2] : a[0], na > 3 ? a[3] : a[0]};
        for (int r = 0; r < MC_Q4_0X8_ROWS; r++) {
            float t[4];
            s_dot_q4_0_rows(n, t, (const uint8_t *)w8 + (size_t)r * row_bytes, y, na, quad);
            for (int c = 0; c < na; c++) s[(size_t)c * stride + (size_t)r] = t[c];
        }
        return;
    }
    enum { BY = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    const uint8_t *x = w8;
    float32x4_t acc[4][2];
    for (int c = 0; c < 4; c++) acc[c][0] = acc[c][1] = vdupq_n_f32(0.f);
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int64_t i = 0; i < n / MC_QK; i++, x += MC_Q4_0X8_BYTES) {
        int8x16_t lo[4][2], hi[4][2];
        for (int k = 0; k < 4; k++)
            for (int h = 0; h < 2; h++) {
                const uint8x16_t v = vld1q_u8(x + 16 + 32 * k + 16 * h);
                lo[k][h] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), eight);
                hi[k][h] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
            }
        const float32x4_t dw0 = s_half4(x, x + 2, x + 4, x + 6), dw1 = s_half4(x + 8, x + 10, x + 12, x + 14);
        for (int c = 0; c < na; c++) {
            const uint8_t *y = (const uint8_t *)a[c] + i * BY;
            int32_t ya[8];
            memcpy(ya, y + YQ, sizeof ya);
            int32x4_t is0 = vdupq_n_s32(0), is1 = vdupq_n_s32(0);
            for (int k = 0; k < 4; k++) {
                const int8x16_t al = vreinterpretq_s8_s32(vdupq_n_s32(ya[k]));
                const int8x16_t ah = vreinterpretq_s8_s32(vdupq_n_s32(ya[4 + k]));
                is0 = vaddq_s32(is0, vaddq_s32(quad(lo[k][0], al), quad(hi[k][0], ah)));
                is1 = vaddq_s32(is1, vaddq_s32(quad(lo[k][1], al), quad(hi[k][1], ah)));
            }
            const float dy = s_half(y);
            acc[c][0] = vaddq_f32(acc[c][0], vmulq_f32(vcvtq_f32_s32(is0), vmulq_n_f32(dw0, dy)));
            acc[c][1] = vaddq_f32(acc[c][1], vmulq_f32(vcvtq_f32_s32(is1), vmulq_n_f32(dw1, dy)));
        }
    }
    for (int c = 0; c < na; c++) {
        vst1q_f32(s + (size_t)c * stride, acc[c][0]);
        vst1q_f32(s + (size_t)c * stride + 4, acc[c][1]);
    }
}

// Q8_0's 8-lane order on a repacked group (kernel.h): register l of a record
// holds lane l (values 4l..4l+3) of the 8 rows, 4 bytes a row, so quad(one
// 16-byte half, the activation's bytes 4l..4l+3 in every lane) is p[l] of 4
// rows. acc[l][h] keeps lane l of rows 4h..4h+3, each taking acc + (float)p
// * d block after block, and kernel.c's fold runs lane-wise at the end.
// Activation rows go one after the other (16 accumulators each).
S_BODY void s_dot8_q8_0(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na, s_quad_fn quad) {
    assert(n % MC_QK == 0 && na >= 1 && na <= 4);
    if (row_bytes) { // raw rows: one row at a time, the same steps
        const uint8_t *y[4] = {a[0], na > 1 ? a[1] : a[0], na > 2 ? a[2] : a[0], na > 3 ? a[3] : a[0]};
        for (int r = 0; r < 8; r++) {
            float t[4];
            s_dot32_rows(n, t, (const uint8_t *)w8 + (size_t)r * row_bytes, y, na, s_shape_q8_0, s_unpack_q8_0, quad);
            for (int c = 0; c < na; c++) s[(size_t)c * stride + (size_t)r] = t[c];
        }
        return;
    }
    enum { BY = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    for (int c = 0; c < na; c++) {
        const uint8_t *x = w8, *y = a[c];
        float32x4_t acc[8][2];
        for (int l = 0; l < 8; l++) acc[l][0] = acc[l][1] = vdupq_n_f32(0.f);
        for (int64_t i = 0; i < n / MC_QK; i++, x += MC_Q8_0X8_BYTES, y += BY) {
            const float dy = s_half(y);
            const float32x4_t d[2] = {vmulq_n_f32(s_half4(x, x + 2, x + 4, x + 6), dy),
                                      vmulq_n_f32(s_half4(x + 8, x + 10, x + 12, x + 14), dy)};
            int32_t ya[8];
            memcpy(ya, y + YQ, sizeof ya);
            for (int l = 0; l < 8; l++) {
                const int8x16_t al = vreinterpretq_s8_s32(vdupq_n_s32(ya[l]));
                for (int h = 0; h < 2; h++) {
                    const int32x4_t p = quad(s_ld_s8(x + 16 + 32 * l + 16 * h), al);
                    acc[l][h] = vaddq_f32(acc[l][h], vmulq_f32(vcvtq_f32_s32(p), d[h]));
                }
            }
        }
        for (int h = 0; h < 2; h++) {
            const float32x4_t x0 = vaddq_f32(acc[0][h], acc[4][h]), x1 = vaddq_f32(acc[1][h], acc[5][h]);
            const float32x4_t x2 = vaddq_f32(acc[2][h], acc[6][h]), x3 = vaddq_f32(acc[3][h], acc[7][h]);
            vst1q_f32(s + (size_t)c * stride + 4 * h, vaddq_f32(vaddq_f32(x0, x2), vaddq_f32(x1, x3)));
        }
    }
}

// --- K-quants against Q8_K --------------------------------------------------------------------

// The 16 bsums of a Q8_K block.
S_BODY void s_bsums(const uint8_t *yb, int16x8_t b[2]) {
    const uint8_t *p = S_FIELD(yb, mc_block_q8_k_t, bsums);
    b[0] = vreinterpretq_s16_u8(vld1q_u8(p));
    b[1] = vreinterpretq_s16_u8(vld1q_u8(p + 16));
}

// Q2_K, Q3_K and Q6_K: 16 groups of 16 unsigned quants u (at most 63),
// group g against activation quants 16g..16g+15, each with its own integer
// scale (and, for Q2_K, min).
typedef struct {
    int8x16_t q[16];
    int32_t sc[16];
    int32_t m[16]; // Q2_K only
} s_k16_t;

// sum over g of sc[g] * (sum(u * y) - off * bsums[g]): the reference's
// integer for quants stored as u - off (Q3_K: 4, Q6_K: 32; Q2_K: 0), which
// uses bsums rather than the quants themselves, whatever the bsums hold.
S_BODY int s_k16_isum(const s_k16_t *u, const uint8_t *yb, int off, s_dot16_fn dot16) {
    const uint8_t *q8 = S_FIELD(yb, mc_block_q8_k_t, qs);
    int16x8_t b[2];
    s_bsums(yb, b);
    const int32x4_t bs[4] = {vmovl_s16(vget_low_s16(b[0])), vmovl_high_s16(b[0]), vmovl_s16(vget_low_s16(b[1])),
                             vmovl_high_s16(b[1])};
    int32x4_t acc = vdupq_n_s32(0);
    for (int q = 0; q < 4; q++) { // groups 4q..4q+3
        int32x4_t p[4];
        for (int r = 0; r < 4; r++) p[r] = dot16(vdupq_n_s32(0), u->q[4 * q + r], s_ld_s8(q8 + 16 * (4 * q + r)));
        const int32x4_t sums = vmlsq_s32(s_hsum4(p), bs[q], vdupq_n_s32(off));
        acc = vmlaq_s32(acc, sums, vld1q_s32(u->sc + 4 * q));
    }
    return vaddvq_s32(acc);
}

// Each 32-byte half of qs serves 128 values: bits 2k..2k+1 of byte l are
// value 32k + l of that half.
S_BODY void s_unpack_q2_k(const uint8_t *xb, s_k16_t *u) {
    const uint8_t *sc = S_FIELD(xb, mc_block_q2_k_t, scales), *qs = S_FIELD(xb, mc_block_q2_k_t, qs);
    for (int g = 0; g < 16; g++) {
        u->sc[g] = sc[g] & 0xF;
        u->m[g] = sc[g] >> 4;
    }
    for (int h = 0; h < 2; h++) {
        uint8x16_t v[2] = {vld1q_u8(qs + 32 * h), vld1q_u8(qs + 32 * h + 16)};
        for (int k = 0; k < 4; k++) {
            for (int r = 0; r < 2; r++) {
                u->q[8 * h + 2 * k + r] = vreinterpretq_s8_u8(vandq_u8(v[r], vdupq_n_u8(3)));
                v[r] = vshrq_n_u8(v[r], 2);
            }
        }
    }
}

S_BODY void s_dot_q2_k(int64_t n, float *s, const void *w, const void *a, s_dot16_fn dot16) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q2_k_t), y += sizeof(mc_block_q8_k_t)) {
        s_k16_t u;
        s_unpack_q2_k(x, &u);
        const int isum = s_k16_isum(&u, y, 0, dot16);
        int16x8_t b[2];
        s_bsums(y, b);
        int32x4_t mins = vdupq_n_s32(0); // sum over groups of min * sum(activation quants)
        for (int r = 0; r < 2; r++) {
            mins = vmlaq_s32(mins, vmovl_s16(vget_low_s16(b[r])), vld1q_s32(u.m + 8 * r));
            mins = vmlaq_s32(mins, vmovl_high_s16(b[r]), vld1q_s32(u.m + 8 * r + 4));
        }
        const int summs = vaddvq_s32(mins);
        const float yd = s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        const float dall = yd * s_half(S_FIELD(x, mc_block_q2_k_t, d));
        const float dmin = yd * s_half(S_FIELD(x, mc_block_q2_k_t, dmin));
        sumf += dall * isum - dmin * summs;
    }
    *s = sumf;
}

// As Q2_K, plus a third bit from hmask (bit 4h + k of byte l, for the same
// value); the quant is u - 4.
S_BODY void s_unpack_q3_k(const uint8_t *xb, s_k16_t *u) {
    const uint8_t *s12 = S_FIELD(xb, mc_block_q3_k_t, scales), *qs = S_FIELD(xb, mc_block_q3_k_t, qs);
    const uint8_t *hm = S_FIELD(xb, mc_block_q3_k_t, hmask);
    for (int g = 0; g < 16; g++) {
        // Signed 6-bit scale: low nibble from bytes 0..7, top 2 bits from 8..11.
        const int lo = g < 8 ? s12[g] & 0xF : s12[g - 8] >> 4;
        const int hi = (s12[8 + g % 4] >> (2 * (g / 4))) & 3;
        u->sc[g] = (lo | hi << 4) - 32;
    }
    uint8x16_t hv[2] = {vld1q_u8(hm), vld1q_u8(hm + 16)};
    for (int h = 0; h < 2; h++) {
        uint8x16_t v[2] = {vld1q_u8(qs + 32 * h), vld1q_u8(qs + 32 * h + 16)};
        for (int k = 0; k < 4; k++) {
            for (int r = 0; r < 2; r++) {
                const uint8x16_t third = vandq_u8(vshlq_n_u8(hv[r], 2), vdupq_n_u8(4));
                const uint8x16_t q = vorrq_u8(vandq_u8(v[r], vdupq_n_u8(3)), third);
                u->q[8 * h + 2 * k + r] = vreinterpretq_s8_u8(q);
                v[r] = vshrq_n_u8(v[r], 2);
                hv[r] = vshrq_n_u8(hv[r], 1);
            }
        }
    }
}

S_BODY void s_dot_q3_k(int64_t n, float *s, const void *w, const void *a, s_dot16_fn dot16) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q3_k_t), y += sizeof(mc_block_q8_k_t)) {
        s_k16_t u;
        s_unpack_q3_k(x, &u);
        const int isum = s_k16_isum(&u, y, 4, dot16);
        const float d = s_half(S_FIELD(x, mc_block_q3_k_t, d)) * s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        sumf += d * isum;
    }
    *s = sumf;
}

// Per 128-value half: byte l of ql (l < 64) holds the low 4 bits of values l
// (low nibble) and l + 64 (high nibble); bits 2k..2k+1 of qh[l] (l < 32) are
// the top bits of value 32k + l; the quant is u - 32. Groups come out in value
// order, so group g has scale g.
S_BODY void s_unpack_q6_k(const uint8_t *xb, s_k16_t *u) {
    const int8_t *sc = (const int8_t *)S_FIELD(xb, mc_block_q6_k_t, scales);
    for (int g = 0; g < 16; g++) u->sc[g] = sc[g];
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = S_FIELD(xb, mc_block_q6_k_t, ql) + 64 * h;
        const uint8_t *qh = S_FIELD(xb, mc_block_q6_k_t, qh) + 32 * h;
        for (int r = 0; r < 2; r++) {
            const uint8x16_t l0 = vld1q_u8(ql + 16 * r), l1 = vld1q_u8(ql + 32 + 16 * r);
            const uint8x16_t hb = vld1q_u8(qh + 16 * r), m2 = vdupq_n_u8(0x30);
            const uint8x16_t v[4] = {
                vorrq_u8(vandq_u8(l0, vdupq_n_u8(0xF)), vandq_u8(vshlq_n_u8(hb, 4), m2)),
                vorrq_u8(vandq_u8(l1, vdupq_n_u8(0xF)), vandq_u8(vshlq_n_u8(hb, 2), m2)),
                vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, m2)),
                vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), m2)),
            };
            for (int k = 0; k < 4; k++) u->q[8 * h + 2 * k + r] = vreinterpretq_s8_u8(v[k]);
        }
    }
}

S_BODY void s_dot_q6_k(int64_t n, float *s, const void *w, const void *a, s_dot16_fn dot16) {
    assert(n % MC_QK_K == 0);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q6_k_t), y += sizeof(mc_block_q8_k_t)) {
        s_k16_t u;
        s_unpack_q6_k(x, &u);
        const int isum = s_k16_isum(&u, y, 32, dot16);
        const float d = s_half(S_FIELD(x, mc_block_q6_k_t, d)) * s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        sumf += d * isum;
    }
    *s = sumf;
}

S_BODY void s_dot4_q6_k(int64_t n, float s[4], const void *w, const void *const a[4], s_dot16_fn dot16) {
    assert(n % MC_QK_K == 0);
    enum { BY = sizeof(mc_block_q8_k_t), OD = offsetof(mc_block_q8_k_t, d) };
    const uint8_t *x = w;
    const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};
    float32x4_t sumf = vdupq_n_f32(0.f);
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q6_k_t)) {
        s_k16_t u;
        s_unpack_q6_k(x, &u);
        int isum[4];
        for (int c = 0; c < 4; c++) isum[c] = s_k16_isum(&u, y[c] + i * BY, 32, dot16);
        const float32x4_t yd = s_f32x4(y[0] + i * BY + OD, y[1] + i * BY + OD, y[2] + i * BY + OD, y[3] + i * BY + OD);
        const float32x4_t d = vmulq_n_f32(yd, s_half(S_FIELD(x, mc_block_q6_k_t, d)));
        sumf = vaddq_f32(sumf, vmulq_f32(d, vcvtq_f32_s32(vld1q_s32(isum))));
    }
    vst1q_f32(s, sumf);
}

// Q4_K and Q5_K: 8 sub-blocks of 32 values (q[2j], q[2j + 1] for sub-block
// j, against activation quants 32j..32j+31), each with a 6-bit scale and min.
typedef struct {
    int8x16_t q[16];
    int32_t sc[8], m[8];
} s_k32_t;

// Chunk c of qs (32 bytes) holds sub-block 2c in its low nibbles and 2c + 1 in
// its high nibbles; for Q5_K, bits 2c and 2c + 1 of qh[l] are their fifth bits.
S_BODY void s_unpack_k4(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, s_k32_t *u) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            u->sc[j] = scales[j] & 63;
            u->m[j] = scales[j + 4] & 63;
        } else {
            u->sc[j] = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
            u->m[j] = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        }
    }
    uint8x16_t hv[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
    if (qh) {
        hv[0] = vld1q_u8(qh);
        hv[1] = vld1q_u8(qh + 16);
    }
    for (int c = 0; c < 4; c++) {
        for (int r = 0; r < 2; r++) {
            const uint8x16_t v = vld1q_u8(qs + 32 * c + 16 * r);
            const uint8x16_t lo = vorrq_u8(vandq_u8(v, vdupq_n_u8(0xF)), vandq_u8(vshlq_n_u8(hv[r], 4), vdupq_n_u8(0x10)));
            const uint8x16_t hi = vorrq_u8(vshrq_n_u8(v, 4), vandq_u8(vshlq_n_u8(hv[r], 3), vdupq_n_u8(0x10)));
            u->q[4 * c + r] = vreinterpretq_s8_u8(lo);
            u->q[4 * c + 2 + r] = vreinterpretq_s8_u8(hi);
            hv[r] = vshrq_n_u8(hv[r], 2);
        }
    }
}

// Integer sums of one Q4_K/Q5_K block against a Q8_K block: isum = sum of
// scale * dot, summs = sum of min * sum(activation quants) per sub-block.
S_BODY void s_k32_sums(const s_k32_t *u, const uint8_t *yb, s_dot32_fn dot32, int *isum, int *summs) {
    const uint8_t *q8 = S_FIELD(yb, mc_block_q8_k_t, qs);
    int32x4_t p[8];
    for (int j = 0; j < 8; j++)
        p[j] = dot32(vdupq_n_s32(0), u->q[2 * j], s_ld_s8(q8 + 32 * j), u->q[2 * j + 1], s_ld_s8(q8 + 32 * j + 16));
    const int32x4_t scaled = vmlaq_s32(vmulq_s32(s_hsum4(p), vld1q_s32(u->sc)), s_hsum4(p + 4), vld1q_s32(u->sc + 4));
    *isum = vaddvq_s32(scaled);
    int16x8_t b[2];
    s_bsums(yb, b);
    // Pairwise: the activation sum of each 32-value sub-block (widened, so
    // any bsums from the wire sum as the reference's ints do).
    const int32x4_t mins = vmlaq_s32(vmulq_s32(vpaddlq_s16(b[0]), vld1q_s32(u->m)), vpaddlq_s16(b[1]), vld1q_s32(u->m + 4));
    *summs = vaddvq_s32(mins);
}

S_BODY void s_dot_k4(int64_t n, float *s, const void *w, const void *a, s_dot32_fn dot32, bool five) {
    assert(n % MC_QK_K == 0);
    const size_t bx = five ? sizeof(mc_block_q5_k_t) : sizeof(mc_block_q4_k_t);
    const uint8_t *x = w, *y = a;
    float sumf = 0.f;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += bx, y += sizeof(mc_block_q8_k_t)) {
        s_k32_t u;
        if (five)
            s_unpack_k4(S_FIELD(x, mc_block_q5_k_t, scales), S_FIELD(x, mc_block_q5_k_t, qs),
                        S_FIELD(x, mc_block_q5_k_t, qh), &u);
        else
            s_unpack_k4(S_FIELD(x, mc_block_q4_k_t, scales), S_FIELD(x, mc_block_q4_k_t, qs), NULL, &u);
        int isum, summs;
        s_k32_sums(&u, y, dot32, &isum, &summs);
        // d and dmin are the first two fields of both block types.
        const float d = s_half(x), dmin = s_half(x + 2), yd = s_f32(S_FIELD(y, mc_block_q8_k_t, d));
        sumf += (d * yd) * isum - (dmin * yd) * summs;
    }
    *s = sumf;
}

S_BODY void s_dot_q4_k(int64_t n, float *s, const void *w, const void *a, s_dot32_fn dot32) {
    s_dot_k4(n, s, w, a, dot32, false);
}

S_BODY void s_dot_q5_k(int64_t n, float *s, const void *w, const void *a, s_dot32_fn dot32) {
    s_dot_k4(n, s, w, a, dot32, true);
}

S_BODY void s_dot4_q4_k(int64_t n, float s[4], const void *w, const void *const a[4], s_dot32_fn dot32) {
    assert(n % MC_QK_K == 0);
    enum { BY = sizeof(mc_block_q8_k_t), OD = offsetof(mc_block_q8_k_t, d) };
    const uint8_t *x = w;
    const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};
    float32x4_t sumf = vdupq_n_f32(0.f);
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += sizeof(mc_block_q4_k_t)) {
        s_k32_t u;
        s_unpack_k4(S_FIELD(x, mc_block_q4_k_t, scales), S_FIELD(x, mc_block_q4_k_t, qs), NULL, &u);
        int isum[4], summs[4];
        for (int c = 0; c < 4; c++) s_k32_sums(&u, y[c] + i * BY, dot32, &isum[c], &summs[c]);
        const float32x4_t yd = s_f32x4(y[0] + i * BY + OD, y[1] + i * BY + OD, y[2] + i * BY + OD, y[3] + i * BY + OD);
        const float d = s_half(S_FIELD(x, mc_block_q4_k_t, d)), dmin = s_half(S_FIELD(x, mc_block_q4_k_t, dmin));
        const float32x4_t t = vmulq_f32(vmulq_n_f32(yd, d), vcvtq_f32_s32(vld1q_s32(isum)));
        const float32x4_t u4 = vmulq_f32(vmulq_n_f32(yd, dmin), vcvtq_f32_s32(vld1q_s32(summs)));
        sumf = vaddq_f32(sumf, vsubq_f32(t, u4));
    }
    vst1q_f32(s, sumf);
}

// --- K-quants on repacked 8-row groups (kernel.h layouts) ----------------------------------
//
// As for Q4_0 and Q8_0, a 16-byte half of a quant register holds 4 bytes of
// 4 rows, so quad(that half, 4 activation bytes in every lane) gives 4 rows'
// byte-quad sums in 4 lanes; rows 4h..4h+3 live in registers [h]. The
// integer sums per sub-block are exact in any order; the float steps are
// the reference's per row, lane-wise. Activation rows go one after the
// other. Raw rows take the plain dot per row.

// 4 unsigned (u8) or signed (s8) bytes as 4 int32 lanes.
static inline int32x4_t s_u8x4(const uint8_t *p) {
    const int32_t v[4] = {p[0], p[1], p[2], p[3]};
    return vld1q_s32(v);
}

static inline int32x4_t s_s8x4(const uint8_t *p) {
    const int32_t v[4] = {(int8_t)p[0], (int8_t)p[1], (int8_t)p[2], (int8_t)p[3]};
    return vld1q_s32(v);
}

// The 4 activation bytes at p in every lane.
static inline int8x16_t s_dup4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// The 6-bit scales and mins of a repacked Q4_K record: sc[8j + r], m[8j + r]
// for sub-block j of row r (index i = 8j + r: low nibbles at 32 + i, top
// bits in byte 96 + i % 32, the high nibble for i >= 32).
S_BODY void s_scales_k4x8(const uint8_t *rec, uint8_t sc[64], uint8_t m[64]) {
    const uint8x16_t f = vdupq_n_u8(0xF), t = vdupq_n_u8(3);
    for (int q = 0; q < 4; q++) {
        const uint8x16_t lo = vld1q_u8(rec + 32 + 16 * q);
        const uint8x16_t hb = vld1q_u8(rec + 96 + 16 * (q % 2));
        const uint8x16_t hi = q < 2 ? hb : vshrq_n_u8(hb, 4);
        vst1q_u8(sc + 16 * q, vorrq_u8(vandq_u8(lo, f), vshlq_n_u8(vandq_u8(hi, t), 4)));
        vst1q_u8(m + 16 * q, vorrq_u8(vshrq_n_u8(lo, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hi, 2), t), 4)));
    }
}

// Q4_K and (five) Q5_K, whose fifth bits come from the qh registers after
// Q4_K's record (at most 31: the small-product primitive stays exact).
S_BODY void s_dot8_k4(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes, const void *const *a,
                      int na, s_dot32_fn dot32, s_quad_fn quad, bool five) {
    assert(n % MC_QK_K == 0 && na >= 1 && na <= 4);
    if (row_bytes) {
        for (int c = 0; c < na; c++)
            for (int r = 0; r < 8; r++)
                s_dot_k4(n, &s[(size_t)c * stride + (size_t)r], (const uint8_t *)w8 + (size_t)r * row_bytes, a[c],
                         dot32, five);
        return;
    }
    enum { BY = sizeof(mc_block_q8_k_t) };
    const uint8x16_t m4 = vdupq_n_u8(0xF), b5 = vdupq_n_u8(0x10);
    const size_t rec = five ? MC_Q5_KX8_BYTES : MC_Q4_KX8_BYTES;
    for (int c = 0; c < na; c++) {
        const uint8_t *x = w8, *y = a[c];
        float32x4_t sumf[2] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
        for (int64_t i = 0; i < n / MC_QK_K; i++, x += rec, y += BY) {
            const uint8_t *q8 = S_FIELD(y, mc_block_q8_k_t, qs);
            int16_t bs[MC_QK_K / 16];
            memcpy(bs, S_FIELD(y, mc_block_q8_k_t, bsums), sizeof bs);
            uint8_t sc[64], mn[64];
            s_scales_k4x8(x, sc, mn);
            const float yd = s_f32(S_FIELD(y, mc_block_q8_k_t, d));
            for (int h = 0; h < 2; h++) {
                int32x4_t isum = vdupq_n_s32(0), summs = vdupq_n_s32(0);
                for (int cc = 0; cc < 4; cc++) {
                    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
                    for (int k = 0; k < 8; k++) {
                        const uint8x16_t v = vld1q_u8(x + 128 + 32 * (8 * cc + k) + 16 * h);
                        uint8x16_t vl = vandq_u8(v, m4), vh = vshrq_n_u8(v, 4);
                        if (five) { // bits 2cc, 2cc + 1 of the qh bytes as 0x10
                            const uint8x16_t hb = vld1q_u8(x + MC_Q4_KX8_BYTES + 32 * k + 16 * h);
                            const uint8x16_t t = vshlq_u8(hb, vdupq_n_s8((int8_t)(4 - 2 * cc)));
                            vl = vorrq_u8(vl, vandq_u8(t, b5));
                            vh = vorrq_u8(vh, vandq_u8(vshrq_n_u8(t, 1), b5));
                        }
                        lo = vaddq_s32(lo, quad(vreinterpretq_s8_u8(vl), s_dup4(q8 + 64 * cc + 4 * k)));
                        hi = vaddq_s32(hi, quad(vreinterpretq_s8_u8(vh), s_dup4(q8 + 64 * cc + 32 + 4 * k)));
                    }
                    const int j1 = 8 * (2 * cc) + 4 * h, j2 = 8 * (2 * cc + 1) + 4 * h;
                    isum = vmlaq_s32(vmlaq_s32(isum, s_u8x4(sc + j1), lo), s_u8x4(sc + j2), hi);
                    const int b1 = bs[4 * cc] + bs[4 * cc + 1], b2 = bs[4 * cc + 2] + bs[4 * cc + 3];
                    summs = vmlaq_n_s32(vmlaq_n_s32(summs, s_u8x4(mn + j1), b1), s_u8x4(mn + j2), b2);
                }
                const float32x4_t d = s_half4(x + 8 * h, x + 8 * h + 2, x + 8 * h + 4, x + 8 * h + 6);
                const float32x4_t dmin = s_half4(x + 16 + 8 * h, x + 18 + 8 * h, x + 20 + 8 * h, x + 22 + 8 * h);
                const float32x4_t t = vmulq_f32(vmulq_n_f32(d, yd), vcvtq_f32_s32(isum));
                const float32x4_t u = vmulq_f32(vmulq_n_f32(dmin, yd), vcvtq_f32_s32(summs));
                sumf[h] = vaddq_f32(sumf[h], vsubq_f32(t, u));
            }
        }
        vst1q_f32(s + (size_t)c * stride, sumf[0]);
        vst1q_f32(s + (size_t)c * stride + 4, sumf[1]);
    }
}

// Q6_K: group G = 8h + 2q + g (half h, quarter q, k = 4g..4g+3 of its 16
// byte quads); the 6-bit quant u = nibble of ql | 2 bits of qh << 4 (at most
// 63: the small-product primitive is exact), and the reference's integer
// sc * (sum(u * y) - 32 * bsums[G]).
S_BODY void s_dot8_q6_k(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes, const void *const *a,
                        int na, s_dot16_fn dot16, s_quad_fn quad) {
    assert(n % MC_QK_K == 0 && na >= 1 && na <= 4);
    if (row_bytes) {
        for (int c = 0; c < na; c++)
            for (int r = 0; r < 8; r++)
                s_dot_q6_k(n, &s[(size_t)c * stride + (size_t)r], (const uint8_t *)w8 + (size_t)r * row_bytes, a[c],
                           dot16);
        return;
    }
    enum { BY = sizeof(mc_block_q8_k_t) };
    const uint8x16_t m4 = vdupq_n_u8(0xF), m2 = vdupq_n_u8(0x30);
    for (int c = 0; c < na; c++) {
        const uint8_t *x = w8, *y = a[c];
        float32x4_t sumf[2] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
        for (int64_t i = 0; i < n / MC_QK_K; i++, x += MC_Q6_KX8_BYTES, y += BY) {
            const uint8_t *q8 = S_FIELD(y, mc_block_q8_k_t, qs);
            int16_t bs[MC_QK_K / 16];
            memcpy(bs, S_FIELD(y, mc_block_q8_k_t, bsums), sizeof bs);
            const float yd = s_f32(S_FIELD(y, mc_block_q8_k_t, d));
            for (int rh = 0; rh < 2; rh++) { // rows 4rh..4rh+3
                int32x4_t isum = vdupq_n_s32(0);
                for (int h = 0; h < 2; h++)
                    for (int q = 0; q < 4; q++)
                        for (int g = 0; g < 2; g++) {
                            int32x4_t sg = vdupq_n_s32(0);
                            for (int k = 4 * g; k < 4 * g + 4; k++) {
                                const uint8x16_t l = vld1q_u8(x + 144 + 32 * (16 * h + k + 8 * (q % 2)) + 16 * rh);
                                const uint8x16_t hb = vld1q_u8(x + 1168 + 32 * (8 * h + k) + 16 * rh);
                                const uint8x16_t nib = q < 2 ? vandq_u8(l, m4) : vshrq_n_u8(l, 4);
                                // bits 2q..2q+1 of hb moved to bits 4..5
                                const uint8x16_t top = q == 0   ? vshlq_n_u8(hb, 4)
                                                       : q == 1 ? vshlq_n_u8(hb, 2)
                                                       : q == 2 ? hb
                                                                : vshrq_n_u8(hb, 2);
                                const int8x16_t u = vreinterpretq_s8_u8(vorrq_u8(nib, vandq_u8(top, m2)));
                                sg = vaddq_s32(sg, quad(u, s_dup4(q8 + 128 * h + 32 * q + 4 * k)));
                            }
                            const int G = 8 * h + 2 * q + g;
                            isum = vmlaq_s32(isum, s_s8x4(x + 16 + 8 * G + 4 * rh),
                                             vsubq_s32(sg, vdupq_n_s32(32 * bs[G])));
                        }
                const float32x4_t d =
                    vmulq_n_f32(s_half4(x + 8 * rh, x + 8 * rh + 2, x + 8 * rh + 4, x + 8 * rh + 6), yd);
                sumf[rh] = vaddq_f32(sumf[rh], vmulq_f32(d, vcvtq_f32_s32(isum)));
            }
        }
        vst1q_f32(s + (size_t)c * stride, sumf[0]);
        vst1q_f32(s + (size_t)c * stride + 4, sumf[1]);
    }
}

// --- the two flavours ---------------------------------------------------------------------

#define S_FLAVOURS(body, prim_neon, prim_sdot)                                              \
    static void body##_neon(int64_t n, float *s, const void *w, const void *a) {            \
        body(n, s, w, a, prim_neon);                                                         \
    }                                                                                        \
    S_SDOT static void body##_sdot(int64_t n, float *s, const void *w, const void *a) {     \
        body(n, s, w, a, prim_sdot);                                                         \
    }
#define S_FLAVOURS4(body, prim_neon, prim_sdot)                                                   \
    static void body##_neon(int64_t n, float s[4], const void *w, const void *const a[4]) {       \
        body(n, s, w, a, prim_neon);                                                               \
    }                                                                                              \
    S_SDOT static void body##_sdot(int64_t n, float s[4], const void *w, const void *const a[4]) { \
        body(n, s, w, a, prim_sdot);                                                               \
    }

S_FLAVOURS(s_dot_q4_0, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS(s_dot_q4_1, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS(s_dot_q5_0, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS(s_dot_q5_1, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS(s_dot_q8_0, s_quad_mull, s_quad_sdot)
S_FLAVOURS(s_dot_q2_k, s_dot16_small_mull, s_dot16_sdot)
S_FLAVOURS(s_dot_q3_k, s_dot16_small_mull, s_dot16_sdot)
S_FLAVOURS(s_dot_q4_k, s_dot32_small_mull, s_dot32_sdot)
S_FLAVOURS(s_dot_q5_k, s_dot32_small_mull, s_dot32_sdot)
S_FLAVOURS(s_dot_q6_k, s_dot16_small_mull, s_dot16_sdot)
S_FLAVOURS(s_dot_mxfp4, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_mxfp4, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_q4_0, s_quad_small_mull, s_quad_sdot)
static void s_dot8_q4_0_neon(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes,
                             const void *const *a, int na) {
    s_dot8_q4_0(n, s, stride, w8, row_bytes, a, na, s_quad_small_mull);
}
S_SDOT static void s_dot8_q4_0_sdot(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes,
                                    const void *const *a, int na) {
    s_dot8_q4_0(n, s, stride, w8, row_bytes, a, na, s_quad_sdot);
}
#define S_FLAVOURS8(name, body, attr, ...)                                                            \
    attr static void name(int64_t n, float *s, size_t stride, const void *w8, size_t row_bytes,            \
                          const void *const *a, int na) {                                                  \
        body(n, s, stride, w8, row_bytes, a, na, __VA_ARGS__);                                             \
    }
S_FLAVOURS8(s_dot8_q8_0_neon, s_dot8_q8_0, , s_quad_mull)
S_FLAVOURS8(s_dot8_q8_0_sdot, s_dot8_q8_0, S_SDOT, s_quad_sdot)
S_FLAVOURS8(s_dot8_q4_k_neon, s_dot8_k4, , s_dot32_small_mull, s_quad_small_mull, false)
S_FLAVOURS8(s_dot8_q4_k_sdot, s_dot8_k4, S_SDOT, s_dot32_sdot, s_quad_sdot, false)
S_FLAVOURS8(s_dot8_q5_k_neon, s_dot8_k4, , s_dot32_small_mull, s_quad_small_mull, true)
S_FLAVOURS8(s_dot8_q5_k_sdot, s_dot8_k4, S_SDOT, s_dot32_sdot, s_quad_sdot, true)
S_FLAVOURS8(s_dot8_q6_k_neon, s_dot8_q6_k, , s_dot16_small_mull, s_quad_small_mull)
S_FLAVOURS8(s_dot8_q6_k_sdot, s_dot8_q6_k, S_SDOT, s_dot16_sdot, s_quad_sdot)
#undef S_FLAVOURS8
S_FLAVOURS4(s_dot4_q4_1, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_q5_0, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_q5_1, s_quad_small_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_q8_0, s_quad_mull, s_quad_sdot)
S_FLAVOURS4(s_dot4_q4_k, s_dot32_small_mull, s_dot32_sdot)
S_FLAVOURS4(s_dot4_q6_k, s_dot16_small_mull, s_dot16_sdot)
#undef S_FLAVOURS
#undef S_FLAVOURS4

// --- tables ---------------------------------------------------------------------------------

#define S_K(w, at, a, d, d4, i) {.wtype = (w), .act_type = (at), .act = (a), .dot = (d), .dot4 = (d4), .isa = (i)}
#define S_K8(w, at, a, d, d4, d8, i) \
    {.wtype = (w), .act_type = (at), .act = (a), .dot = (d), .dot4 = (d4), .isa = (i), .dot8 = (d8)}
#define S_TABLE(fl, isa)                                                                       \
    {                                                                                          \
        S_K(MC_DTYPE_F32, MC_DTYPE_F32, s_act_f32, s_dot_f32, NULL, isa),                      \
        S_K(MC_DTYPE_F16, MC_DTYPE_F16, s_act_f16, s_dot_f16, NULL, isa),                      \
        S_K(MC_DTYPE_BF16, MC_DTYPE_BF16, s_act_bf16, s_dot_bf16, NULL, isa),                  \
        S_K8(MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, s_act_q8_0, s_dot_q4_0_##fl, s_dot4_q4_0_##fl, s_dot8_q4_0_##fl, isa), \
        S_K(MC_DTYPE_Q4_1, MC_DTYPE_Q8_1, s_act_q8_1, s_dot_q4_1_##fl, s_dot4_q4_1_##fl, isa),             \
        S_K(MC_DTYPE_Q5_0, MC_DTYPE_Q8_0, s_act_q8_0, s_dot_q5_0_##fl, s_dot4_q5_0_##fl, isa),             \
        S_K(MC_DTYPE_Q5_1, MC_DTYPE_Q8_1, s_act_q8_1, s_dot_q5_1_##fl, s_dot4_q5_1_##fl, isa),             \
        S_K8(MC_DTYPE_Q8_0, MC_DTYPE_Q8_0, s_act_q8_0, s_dot_q8_0_##fl, s_dot4_q8_0_##fl, s_dot8_q8_0_##fl, isa), \
        S_K(MC_DTYPE_Q2_K, MC_DTYPE_Q8_K, s_act_q8_k, s_dot_q2_k_##fl, NULL, isa),             \
        S_K(MC_DTYPE_Q3_K, MC_DTYPE_Q8_K, s_act_q8_k, s_dot_q3_k_##fl, NULL, isa),             \
        S_K8(MC_DTYPE_Q4_K, MC_DTYPE_Q8_K, s_act_q8_k, s_dot_q4_k_##fl, s_dot4_q4_k_##fl, s_dot8_q4_k_##fl, isa), \
        S_K8(MC_DTYPE_Q5_K, MC_DTYPE_Q8_K, s_act_q8_k, s_dot_q5_k_##fl, NULL, s_dot8_q5_k_##fl, isa),             \
        S_K8(MC_DTYPE_Q6_K, MC_DTYPE_Q8_K, s_act_q8_k, s_dot_q6_k_##fl, s_dot4_q6_k_##fl, s_dot8_q6_k_##fl, isa), \
        S_K(MC_DTYPE_MXFP4, MC_DTYPE_Q8_0, s_act_q8_0, s_dot_mxfp4_##fl, s_dot4_mxfp4_##fl, isa),          \
    }

static const mc_kernel_t s_neon[] = S_TABLE(neon, MC_ISA_NEON);
static const mc_kernel_t s_neon_dotprod[] = S_TABLE(sdot, MC_ISA_NEON_DOTPROD);
#undef S_TABLE
#undef S_K8
#undef S_K

static void s_scores(int64_t hd, const float *q, const float *k, int64_t stride, int64_t n, float *out) {
    for (int64_t p = 0; p < n; p++) s_dot_f32(hd, &out[p], k + p * stride, q);
}

// y[i] + w[p] * v[p][i] for every p in turn, the product rounded then the add
// (as the scalar loop), with 16 values of y kept in registers across positions.
static void s_mix(int64_t hd, int64_t n, const float *w, const float *v, int64_t stride, float *y) {
    int64_t i = 0;
    for (; i + 16 <= hd; i += 16) {
        float32x4_t y0 = vld1q_f32(y + i), y1 = vld1q_f32(y + i + 4), y2 = vld1q_f32(y + i + 8),
                    y3 = vld1q_f32(y + i + 12);
        for (int64_t p = 0; p < n; p++) {
            const float *x = v + p * stride + i;
            y0 = vaddq_f32(y0, vmulq_n_f32(vld1q_f32(x), w[p]));
            y1 = vaddq_f32(y1, vmulq_n_f32(vld1q_f32(x + 4), w[p]));
            y2 = vaddq_f32(y2, vmulq_n_f32(vld1q_f32(x + 8), w[p]));
            y3 = vaddq_f32(y3, vmulq_n_f32(vld1q_f32(x + 12), w[p]));
        }
        vst1q_f32(y + i, y0), vst1q_f32(y + i + 4, y1), vst1q_f32(y + i + 8, y2), vst1q_f32(y + i + 12, y3);
    }
    for (; i < hd; i++)
        for (int64_t p = 0; p < n; p++) y[i] = y[i] + w[p] * v[p * stride + i];
}

// 4 cached fp16 values widened to f32 (exact).
static inline float32x4_t s_kv4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// s_scores on an F16 cache: each key value widened exactly, then the F32
// dot's four accumulators and fold.
static void s_scores_f16(int64_t hd, const float *q, const uint16_t *k, int64_t stride, int64_t n, float *out) {
    for (int64_t p = 0; p < n; p++) {
        const uint16_t *x = k + p * stride;
        float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
        int64_t j = 0;
        for (; j + 16 <= hd; j += 16)
            for (int r = 0; r < 4; r++)
                acc[r] = vaddq_f32(acc[r], vmulq_f32(s_kv4(x + j + 4 * r), vld1q_f32(q + j + 4 * r)));
        if (j < hd) {
            float lanes[16];
            s_store16(acc, lanes);
            for (; j < hd; j++) lanes[j % 16] += mc_fp16_to_fp32(x[j]) * q[j];
            s_load16(lanes, acc);
        }
        out[p] = s_fold16(acc);
    }
}

// s_mix on an F16 cache: y[i] + w[p] * widen(v[p][i]), product rounded then
// the add, position by position.
static void s_mix_f16(int64_t hd, int64_t n, const float *w, const uint16_t *v, int64_t stride, float *y) {
    int64_t i = 0;
    for (; i + 16 <= hd; i += 16) {
        float32x4_t y0 = vld1q_f32(y + i), y1 = vld1q_f32(y + i + 4), y2 = vld1q_f32(y + i + 8),
                    y3 = vld1q_f32(y + i + 12);
        for (int64_t p = 0; p < n; p++) {
            const uint16_t *x = v + p * stride + i;
            y0 = vaddq_f32(y0, vmulq_n_f32(s_kv4(x), w[p]));
            y1 = vaddq_f32(y1, vmulq_n_f32(s_kv4(x + 4), w[p]));
            y2 = vaddq_f32(y2, vmulq_n_f32(s_kv4(x + 8), w[p]));
            y3 = vaddq_f32(y3, vmulq_n_f32(s_kv4(x + 12), w[p]));
        }
        vst1q_f32(y + i, y0), vst1q_f32(y + i + 4, y1), vst1q_f32(y + i + 8, y2), vst1q_f32(y + i + 12, y3);
    }
    for (; i < hd; i++)
        for (int64_t p = 0; p < n; p++) y[i] = y[i] + w[p] * mc_fp16_to_fp32(v[p * stride + i]);
}

mc_attn_fns_t mc_kernel_attn_neon(void) { return (mc_attn_fns_t){s_scores, s_mix, s_scores_f16, s_mix_f16}; }

const mc_kernel_t *mc_kernel_table_neon(size_t *count) {
    *count = sizeof s_neon / sizeof s_neon[0];
    return s_neon;
}

const mc_kernel_t *mc_kernel_table_neon_dotprod(size_t *count) {
    *count = sizeof s_neon_dotprod / sizeof s_neon_dotprod[0];
    return s_neon_dotprod;
}

#else

mc_attn_fns_t mc_kernel_attn_neon(void) { return (mc_attn_fns_t){NULL, NULL, NULL, NULL}; }

const mc_kernel_t *mc_kernel_table_neon(size_t *count) {
    *count = 0;
    return NULL;
}

const mc_kernel_t *mc_kernel_table_neon_dotprod(size_t *count) {
    *count = 0;
    return NULL;
}

#endif
