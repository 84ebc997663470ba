/*
 * kernel_avx2: x86-64 AVX2 (+F16C) activation conversions and dot products,
 * bit-identical to the scalar reference in kernel.c.
 *
 * Integer sums are exact in any order, so they come from byte multiply-adds
 * (maddubs, madd). The float operations that combine them are the
 * reference's, in its order: the 32-value block types' 8 lanes are one ymm
 * register per activation row, the K-quants' per-block products run in
 * vector lanes (a lane rounds exactly like the scalar operation) before the
 * running sum takes them one block after the other. Nothing is
 * fused into an fma: the functions are compiled for "avx2,f16c" only (no
 * "fma"), so the compiler cannot contract a multiply and an add whatever
 * -ffp-contract says. kernel.c still requires FMA on the CPU for this ISA,
 * as its name promises.
 *
 * The file is compiled for every target: on x86-64 each function carries a
 * target attribute so the rest of the program stays baseline x86-64, and
 * kernel.c checks the CPU before handing the table out; elsewhere the table
 * is NULL. Rows come from file mappings at any offset: only unaligned loads.
 */
#include "kernel_impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant.h"

#define S_FN static __attribute__((target("avx2,f16c")))
#define S_INLINE static inline __attribute__((always_inline, target("avx2,f16c")))

#define S_AT(p, type, field) ((const uint8_t *)(p) + offsetof(type, field))

// --- small helpers -----------------------------------------------------------------

// Weight rows stream from memory once per product: the integer work per byte
// is dense enough that the out-of-order window alone does not keep enough
// cache-line fills in flight, so the dots prefetch this far ahead (into the
// following rows, which a matrix product reads next). Halves DRAM-bound time.
#define S_PREFETCH 2048

// Prefetch the cache lines of [p, p + bytes) S_PREFETCH bytes ahead.
S_INLINE void s_prefetch(const uint8_t *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch((const char *)p + S_PREFETCH + off, _MM_HINT_T0);
}

S_INLINE float s_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

S_INLINE float s_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

S_INLINE __m256i s_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

// The 4 bytes at p (any alignment) in every 32-bit lane: one vpbroadcastd.
S_INLINE __m256i s_bcast32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}
S_INLINE __m128i s_load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

// The fp16 fields at p, p + stride, ... of the first r (1..4) blocks as f32
// lanes (0 beyond r). The 16-byte loads stay inside their blocks: every
// block with such a field has at least 16 bytes from the field on.
S_INLINE __m128 s_halves(const uint8_t *p, size_t stride, int r) {
    __m128i l[4];
    for (int b = 0; b < 4; b++) l[b] = b < r ? s_load128(p + (size_t)b * stride) : _mm_setzero_si128();
    const __m128i h01 = _mm_unpacklo_epi16(l[0], l[1]), h23 = _mm_unpacklo_epi16(l[2], l[3]);
    return _mm_cvtph_ps(_mm_unpacklo_epi32(h01, h23)); // the first halfword of each load
}

// sum += p[0]; sum += p[1]; ... over the first r lanes: the reference's
// block-after-block accumulation.
S_INLINE float s_accumulate(float sum, __m128 p, int r) {
    float v[4];
    _mm_storeu_ps(v, p);
    for (int b = 0; b < r; b++) sum += v[b];
    return sum;
}

// Lane sums of four vectors of 8 int32: {sum(a), sum(b), sum(c), sum(d)}.
S_INLINE __m128i s_hsum4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_hadd_epi32(a, b); // a01 a23 b01 b23 | a45 a67 b45 b67
    const __m256i cd = _mm256_hadd_epi32(c, d);
    const __m256i abcd = _mm256_hadd_epi32(ab, cd); // a0123 b0123 c0123 d0123 | a4567 ...
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// Lane sums of two vectors of 8 int32.
S_INLINE void s_hsum2(__m256i a, __m256i b, int *sa, int *sb) {
    const __m256i ab = _mm256_hadd_epi32(a, b); // a01 a23 b01 b23 | a45 a67 b45 b67
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(ab), _mm256_extracti128_si256(ab, 1));
    t = _mm_hadd_epi32(t, t); // A B A B
    *sa = _mm_cvtsi128_si32(t);
    *sb = _mm_extract_epi32(t, 1);
}

S_INLINE float s_hmax(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// Four vectors of 8 int32 (each within int8 range) as 32 bytes in order.
S_INLINE __m256i s_pack_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i abcd = _mm256_packs_epi16(ab, cd); // dwords a0 b0 c0 d0 | a1 b1 c1 d1
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// 16 packed nibbles -> 32 bytes: the low nibbles, then the high ones.
S_INLINE __m256i s_nibbles(const uint8_t *qs) {
    // Both halves from one broadcast load; the high half shifted by 4 in
    // 64-bit lanes (bits crossing bytes are masked off below).
    const __m256i q = _mm256_broadcastsi128_si256(s_load128(qs));
    const __m256i v = _mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// 32 bits (little-endian at p) -> 32 bytes, byte j = 16 when bit j is set.
S_INLINE __m256i s_bit16(const uint8_t *p) {
    uint32_t bits;
    memcpy(&bits, p, sizeof bits);
    // Byte j takes the source byte j / 8, then tests its bit j % 8.
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
                         3, 3));
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
    return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

// --- activation conversions ------------------------------------------------------

static void s_act_f32(const float *x, void *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof *x); }

// F16C rounds to nearest even like mc_fp32_to_fp16, subnormals and overflow
// included; only NaNs differ (F16C keeps payload bits), so they are rewritten
// to the reference's quiet NaN with the same sign.
S_FN void s_act_f16(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i mag = _mm_and_si128(h, _mm_set1_epi16(0x7FFF));
        const __m128i nan = _mm_cmpgt_epi16(mag, _mm_set1_epi16(0x7C00));
        const __m128i quiet = _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16((short)0x8000)), _mm_set1_epi16(0x7E00));
        h = _mm_blendv_epi8(h, quiet, nan);
        _mm_storeu_si128((__m128i *)(out + 2 * i), h);
    }
    for (; i < n; i++) {
        const uint16_t h = mc_fp32_to_fp16(x[i]);
        memcpy(out + 2 * i, &h, sizeof h);
    }
}

// mc_fp32_to_bf16 on 8 lanes: round to nearest even on the bits, NaN quieted.
S_FN void s_act_bf16(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            const __m256i b = s_load(x + i + 8 * k);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF)),
                                                   _mm256_set1_epi32(0x7F800000));
            const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
            const __m256i rounded =
                _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), odd), 16);
            const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
            r[k] = _mm256_blendv_epi8(rounded, quiet, nan);
        }
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(out + 2 * i), packed);
    }
    for (; i < n; i++) {
        const uint16_t h = mc_fp32_to_bf16(x[i]);
        memcpy(out + 2 * i, &h, sizeof h);
    }
}

// roundf (half away from zero) on 8 lanes: truncate, then step away from
// zero when the dropped fraction (exact: v - trunc(v)) is at least one half.
// Infinities and NaNs pass through (their fraction compares false).
S_INLINE __m256 s_round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    const __m256 step = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step));
}

// One Q8_0/Q8_1 block: the 32 quants to qs, returns d; *sum (when not
// NULL) = the sum of the quants.
// Same steps as quant.c: amax (NaN ignored, as fmaxf does), d = amax / 127,
// id = 1 / d (0 for d = 0), q = roundf(x * id) saturated, NaN -> 0.
S_INLINE float s_q8_block(const float *x, uint8_t *qs, int *sum) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(_mm256_and_ps(v[k], abs_mask), m); // a NaN first operand yields m
    }
    const float amax = s_hmax(m);
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        __m256 r = s_round_away(_mm256_mul_ps(v[k], idv));
        r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
        r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.f)), _mm256_set1_ps(127.f));
        q[k] = _mm256_cvttps_epi32(r);
    }
    if (sum) {
        const __m256i all = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        *sum = _mm_cvtsi128_si32(s_hsum4(all, all, all, all));
    }
    _mm256_storeu_si256((__m256i *)qs, s_pack_bytes(q[0], q[1], q[2], q[3]));
    return d;
}

S_FN void s_act_q8_0(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t i = 0; i < n / MC_QK; i++, x += MC_QK, out += sizeof(mc_block_q8_0_t)) {
        const uint16_t d = mc_fp32_to_fp16(s_q8_block(x, out + offsetof(mc_block_q8_0_t, qs), NULL));
        memcpy(out + offsetof(mc_block_q8_0_t, d), &d, sizeof d);
    }
}

S_FN void s_act_q8_1(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t i = 0; i < n / MC_QK; i++, x += MC_QK, out += sizeof(mc_block_q8_1_t)) {
        int sum;
        const float d = s_q8_block(x, out + offsetof(mc_block_q8_1_t, qs), &sum);
        const uint16_t hd = mc_fp32_to_fp16(d), hs = mc_fp32_to_fp16(sum * d);
        memcpy(out + offsetof(mc_block_q8_1_t, d), &hd, sizeof hd);
        memcpy(out + offsetof(mc_block_q8_1_t, s), &hs, sizeof hs);
    }
}

// Q8_K as quant.c: the element of largest magnitude (the first one on ties)
// maps to -127; q = nearest-even(iscale * x) by the same 1.5 * 2^23 trick on
// the same float operations, so even NaN and overflow give the same bytes.
S_FN void s_act_q8_k(const float *x, void *y, int64_t n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    uint8_t *out = y;
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += MC_QK_K, out += sizeof(mc_block_q8_k_t)) {
        mc_block_q8_k_t b;
        memset(&b, 0, sizeof b);
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < MC_QK_K / 8; k++) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs_mask), m);
        const float amax = s_hmax(m);
        if (amax != 0.f) {
            float max = 0.f;
            for (int k = 0; k < MC_QK_K / 8; k++) {
                const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs_mask);
                const int hit = _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(amax), _CMP_EQ_OQ));
                if (hit) {
                    max = x[8 * k + __builtin_ctz((unsigned)hit)];
                    break;
                }
            }
            const float iscale = -127.f / max;
            const __m256 iv = _mm256_set1_ps(iscale), magic = _mm256_set1_ps(12582912.f);
            for (int c = 0; c < MC_QK_K / 64; c++) { // 4 groups of 16 per step
                __m256i q[8];
                for (int k = 0; k < 8; k++) {
                    const __m256 t = _mm256_add_ps(_mm256_mul_ps(iv, _mm256_loadu_ps(x + 64 * c + 8 * k)), magic);
                    const __m256i mant = _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007FFFFF));
                    const __m256i v = _mm256_sub_epi32(mant, _mm256_set1_epi32(0x00400000));
                    q[k] = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(-128)), _mm256_set1_epi32(127));
                }
                _mm256_storeu_si256((__m256i *)(b.qs + 64 * c), s_pack_bytes(q[0], q[1], q[2], q[3]));
                _mm256_storeu_si256((__m256i *)(b.qs + 64 * c + 32), s_pack_bytes(q[4], q[5], q[6], q[7]));
                const __m128i sums = s_hsum4(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]),
                                             _mm256_add_epi32(q[4], q[5]), _mm256_add_epi32(q[6], q[7]));
                _mm_storel_epi64((__m128i *)(b.bsums + 4 * c), _mm_packs_epi32(sums, sums));
            }
            b.d = 1 / iscale;
        }
        memcpy(out, &b, sizeof b);
    }
}

// --- float weights: the reference's 16 lanes as two 8-lane accumulators -------------

// Lanes 0-7 in a, 8-15 in b; the n % 16 values from j on (tx, ty) go to
// lanes 0.., then the fixed folding of kernel.c: 16 -> 8 -> 4 lanes, then
// (0 + 1) + (2 + 3).
S_INLINE float s_lanes_finish(__m256 a, __m256 b, int64_t j, int64_t n, const float *tx, const float *ty) {
    float acc[16];
    _mm256_storeu_ps(acc, a);
    _mm256_storeu_ps(acc + 8, b);
    for (int k = 0; j < n; j++, k++) acc[k] += tx[k] * ty[k];
    for (int h = 8; h >= 4; h /= 2)
        for (int i = 0; i < h; i++) acc[i] += acc[i + h];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

S_INLINE __m256 s_load_f32(const uint8_t *p) { return _mm256_loadu_ps((const float *)(const void *)p); }

S_FN void s_dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s_prefetch(x + 4 * j, 64);
        acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(s_load_f32(x + 4 * j), s_load_f32(y + 4 * j)));
        acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(s_load_f32(x + 4 * j + 32), s_load_f32(y + 4 * j + 32)));
    }
    float tx[16], ty[16];
    for (int64_t k = j; k < n; k++) {
        memcpy(&tx[k - j], x + 4 * k, 4);
        memcpy(&ty[k - j], y + 4 * k, 4);
    }
    *s = s_lanes_finish(acc0, acc1, j, n, tx, ty);
}

// F16 and BF16 operands become f32 exactly, 8 at a time.
S_INLINE __m256 s_cvt_f16(const uint8_t *p) { return _mm256_cvtph_ps(s_load128(p)); }
S_INLINE __m256 s_cvt_bf16(const uint8_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(s_load128(p)), 16));
}

S_INLINE float s_dot_half16(int64_t n, const uint8_t *x, const uint8_t *y, bool bf16) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s_prefetch(x + 2 * j, 32);
        const __m256 x0 = bf16 ? s_cvt_bf16(x + 2 * j) : s_cvt_f16(x + 2 * j);
        const __m256 y0 = bf16 ? s_cvt_bf16(y + 2 * j) : s_cvt_f16(y + 2 * j);
        const __m256 x1 = bf16 ? s_cvt_bf16(x + 2 * j + 16) : s_cvt_f16(x + 2 * j + 16);
        const __m256 y1 = bf16 ? s_cvt_bf16(y + 2 * j + 16) : s_cvt_f16(y + 2 * j + 16);
        acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(x0, y0));
        acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(x1, y1));
    }
    float tx[16], ty[16];
    for (int64_t k = j; k < n; k++) {
        uint16_t hx, hy;
        memcpy(&hx, x + 2 * k, 2);
        memcpy(&hy, y + 2 * k, 2);
        tx[k - j] = bf16 ? mc_bf16_to_fp32(hx) : _cvtsh_ss(hx);
        ty[k - j] = bf16 ? mc_bf16_to_fp32(hy) : _cvtsh_ss(hy);
    }
    return s_lanes_finish(acc0, acc1, j, n, tx, ty);
}

S_FN void s_dot_f16(int64_t n, float *s, const void *w, const void *a) { *s = s_dot_half16(n, w, a, false); }
S_FN void s_dot_bf16(int64_t n, float *s, const void *w, const void *a) { *s = s_dot_half16(n, w, a, true); }

// --- 32-value blocks ----------------------------------------------------------------
//
// kernel.c's 8-lane order (Q4_1, Q5_0, Q5_1, Q8_0; Q4_0 has its own, in
// kernel_avx2_q32.h): with a weight block's 32 bytes in value order in a
// ymm, byte multiply-adds give exactly the reference's lane sums p[l] (values
// 4l..4l+3) as 8 int32; one ymm accumulator per activation row then takes
// acc + (float)p * d, block after block, with no horizontal work until the
// final fold. Blocks go in groups of 4 (one prefetch, one fp16 conversion
// for their 4 scales); within a group the integer work of the blocks is
// independent, so only the float adds form a chain.
//
// Byte products: maddubs (unsigned weight byte x signed activation byte,
// pairs summed in int16, exact here) then madd with ones, or on AVX-VNNI one
// vpdpbusd (4 products summed into int32). Q4_1/Q5_1 quants are unsigned
// already. Q4_0/Q5_0 use the stored u = q + 8 (q + 16), and the activation's
// prepared side data holds -8 times its block sums (Q4_0) or -16 times its
// lane sums (Q5_0), which vpdpbusd takes as its starting value. Q8_0 multiplies |w| by y carrying w's sign, exact
// unless y holds -128 (its negation overflows); rows flagged so by the side
// data are computed with 16-bit products instead (the activation conversion
// never produces -128 from finite, non-tiny input, so this is a rare path
// kept for exactness).

typedef struct {
    size_t wb, yb;       // block bytes: weight, activation
    size_t w_d, w_m, w_q; // weight field offsets (w_m: Q4_1/Q5_1 only)
    size_t y_d, y_s, y_q; // activation field offsets (y_s: Q8_1 only)
} s_layout32_t;

S_INLINE s_layout32_t s_layout32(mc_dtype_t t) {
    const s_layout32_t q8_0 = {0, sizeof(mc_block_q8_0_t), 0, 0, 0, offsetof(mc_block_q8_0_t, d), 0,
                               offsetof(mc_block_q8_0_t, qs)};
    const s_layout32_t q8_1 = {0, sizeof(mc_block_q8_1_t), 0, 0, 0, offsetof(mc_block_q8_1_t, d),
                               offsetof(mc_block_q8_1_t, s), offsetof(mc_block_q8_1_t, qs)};
    s_layout32_t l = q8_0;
    switch (t) {
    case MC_DTYPE_Q4_0:
        l.wb = sizeof(mc_block_q4_0_t);
        l.w_d = offsetof(mc_block_q4_0_t, d);
        l.w_q = offsetof(mc_block_q4_0_t, qs);
        break;
    case MC_DTYPE_Q5_0:
        l.wb = sizeof(mc_block_q5_0_t);
        l.w_d = offsetof(mc_block_q5_0_t, d);
        l.w_q = offsetof(mc_block_q5_0_t, qs);
        break;
    case MC_DTYPE_Q8_0:
        l.wb = sizeof(mc_block_q8_0_t);
        l.w_d = offsetof(mc_block_q8_0_t, d);
        l.w_q = offsetof(mc_block_q8_0_t, qs);
        break;
    case MC_DTYPE_Q4_1:
        l = q8_1;
        l.wb = sizeof(mc_block_q4_1_t);
        l.w_d = offsetof(mc_block_q4_1_t, d);
        l.w_m = offsetof(mc_block_q4_1_t, m);
        l.w_q = offsetof(mc_block_q4_1_t, qs);
        break;
    default: // MC_DTYPE_Q5_1
        l = q8_1;
        l.wb = sizeof(mc_block_q5_1_t);
        l.w_d = offsetof(mc_block_q5_1_t, d);
        l.w_m = offsetof(mc_block_q5_1_t, m);
        l.w_q = offsetof(mc_block_q5_1_t, qs);
        break;
    }
    return l;
}

// A weight block as bytes: u (unsigned quants, or |w| for Q8_0) and, for
// Q8_0, the signed quants that carry the sign.
typedef struct {
    __m256i u, w;
} s_wblock_t;

S_INLINE s_wblock_t s_unpack32(mc_dtype_t t, const uint8_t *x, const s_layout32_t *l) {
    s_wblock_t b = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    switch (t) {
    case MC_DTYPE_Q8_0:
        b.w = s_load(x + l->w_q);
        b.u = _mm256_sign_epi8(b.w, b.w);
        break;
    case MC_DTYPE_Q5_0: b.u = _mm256_or_si256(s_nibbles(x + l->w_q), s_bit16(S_AT(x, mc_block_q5_0_t, qh))); break;
    case MC_DTYPE_Q5_1: b.u = _mm256_or_si256(s_nibbles(x + l->w_q), s_bit16(S_AT(x, mc_block_q5_1_t, qh))); break;
    default: b.u = s_nibbles(x + l->w_q); break; // Q4_0, Q4_1
    }
    return b;
}

// The first r (1..4) weight blocks at xg unpacked into wb (zero beyond r);
// returns their scales as f32 lanes.
S_INLINE __m128 s_wgroup32(mc_dtype_t t, int r, const uint8_t *xg, const s_layout32_t *l, s_wblock_t wb[4]) {
    s_prefetch(xg, 4 * l->wb);
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++) {
        wb[b] = (s_wblock_t){_mm256_setzero_si256(), _mm256_setzero_si256()};
        if (b < r) wb[b] = s_unpack32(t, xg + (size_t)b * l->wb, l);
    }
    return s_halves(xg + l->w_d, l->wb, r);
}

// acc[0..7] folded as kernel.c: lanes i + (i + 4), then (0 + 2) + (1 + 3).
S_INLINE float s_fold8(__m256 acc) {
    const __m128 x = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 y = _mm_add_ps(x, _mm_movehl_ps(x, x)); // x0 + x2, x1 + x3
    return _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
}

// Q4_1 and Q5_1 against Q8_1 (no side data): r (1..4) blocks starting at
// block i, for na activation rows; acc[c] takes each block's lane products
// in turn, summ[c] its min terms.
S_INLINE void s_group32(mc_dtype_t t, int r, int64_t i, const uint8_t *x, const uint8_t *const *a, int na,
                        const s_layout32_t *l, __m256 *acc, float *summ) {
    const uint8_t *xg = x + (size_t)i * l->wb;
    s_wblock_t wb[4];
    const __m128 dx = s_wgroup32(t, r, xg, l, wb);
#pragma GCC unroll 4
    for (int c = 0; c < na; c++) {
        const uint8_t *yg = a[c] + (size_t)i * l->yb;
        float d[4];
        _mm_storeu_ps(d, _mm_mul_ps(dx, s_halves(yg + l->y_d, l->yb, r)));
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++) {
            if (b >= r) continue;
            const __m256i y = s_load(yg + (size_t)b * l->yb + l->y_q);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wb[b].u, y), _mm256_set1_epi16(1));
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d[b])));
        }
        const __m128 mx = s_halves(xg + l->w_m, l->wb, r), sy = s_halves(yg + l->y_s, l->yb, r);
        summ[c] = s_accumulate(summ[c], _mm_mul_ps(mx, sy), r);
    }
}

S_INLINE void s_dot32(mc_dtype_t t, int64_t n, float *s, const uint8_t *x, const uint8_t *const *a, int na) {
    const s_layout32_t l = s_layout32(t);
    const int64_t nb = n / MC_QK;
    __m256 acc[4];
    float summ[4] = {0.f, 0.f, 0.f, 0.f};
    for (int c = 0; c < 4; c++) acc[c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) s_group32(t, 4, i, x, a, na, &l, acc, summ);
    if (i < nb) s_group32(t, (int)(nb - i), i, x, a, na, &l, acc, summ);
    for (int c = 0; c < na; c++) s[c] = s_fold8(acc[c]) + summ[c];
}

#define S_DOT32(name, type)                                                                       \
    S_FN void s_dot_##name(int64_t n, float *s, const void *w, const void *a) {                  \
        const uint8_t *y[1] = {a};                                                                \
        s_dot32(type, n, s, w, y, 1);                                                             \
    }                                                                                             \
    S_FN void s_dot4_##name(int64_t n, float s[4], const void *w, const void *const a[4]) {      \
        const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};                                           \
        s_dot32(type, n, s, w, y, 4);                                                             \
    }
S_DOT32(q4_1, MC_DTYPE_Q4_1)
S_DOT32(q5_1, MC_DTYPE_Q5_1)
#undef S_DOT32

// Q8_0 with 16-bit products: exact for every byte, the reference's floats.
S_FN float s_dot_q8_0_wide(int64_t nb, const uint8_t *x, const uint8_t *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, x += sizeof(mc_block_q8_0_t), y += sizeof(mc_block_q8_0_t)) {
        const uint8_t *qx = S_AT(x, mc_block_q8_0_t, qs), *qy = S_AT(y, mc_block_q8_0_t, qs);
        // Pair sums of values 0..15 (lo) and 16..31 (hi); hadd makes quads in
        // the order 0 1 4 5 | 2 3 6 7, which the 64-bit permute puts right.
        const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(s_load128(qx)), _mm256_cvtepi8_epi16(s_load128(qy)));
        const __m256i hi =
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(s_load128(qx + 16)), _mm256_cvtepi8_epi16(s_load128(qy + 16)));
        const __m256i p = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
        const float d = s_half(S_AT(x, mc_block_q8_0_t, d)) * s_half(S_AT(y, mc_block_q8_0_t, d));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d)));
    }
    return s_fold8(acc);
}

// A repacked Q8_0 group against an activation row holding -128 (AVX2 byte
// products would overflow): kernel.c's steps one row at a time, in plain C.
S_FN void s_dot8_q8_0_exact(int64_t n, float *s, const uint8_t *x8, const uint8_t *y) {
    for (int r = 0; r < 8; r++) {
        const uint8_t *x = x8, *yb = y;
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int64_t i = 0; i < n / MC_QK; i++, x += MC_Q8_0X8_BYTES, yb += sizeof(mc_block_q8_0_t)) {
            const int8_t *qa = (const int8_t *)S_AT(yb, mc_block_q8_0_t, qs);
            const float d = s_half(x + 2 * r) * s_half(yb);
            for (int l = 0; l < 8; l++) {
                int p = 0;
                for (int j = 0; j < 4; j++) p += (int8_t)x[16 + 32 * l + 4 * r + j] * qa[4 * l + j];
                acc[l] = acc[l] + (float)p * d;
            }
        }
        const float x0 = acc[0] + acc[4], x1 = acc[1] + acc[5], x2 = acc[2] + acc[6], x3 = acc[3] + acc[7];
        s[r] = (x0 + x2) + (x1 + x3);
    }
}

// --- prepared Q8_0 activations (Q4_0, Q5_0, Q8_0 weights) --------------------------
//
// Side data after the Q8_0 row (kernel.h): the f32 scale of each block, then
// Q4_0: per block one int32 = -8 * the activation's block sum; Q5_0: per
// block 8 int32 = -16 * its lane sums; Q8_0: per block 8 int32 = -128 *
// its lane sums (AVX-VNNI's repacked product multiplies w + 128 by y), then
// one uint32 flag: some activation byte is -128.
// Unaligned, like the rows it follows: read with memcpy or unaligned loads.

typedef struct {
    const uint8_t *q;  // (nb) Q8_0 blocks
    const uint8_t *d;  // (nb) f32 block scales
    const uint8_t *nc; // Q5_0, Q8_0: (nb, 8) int32 offset corrections; Q4_0: (nb) int32
    bool wide;         // Q8_0: |w| * sign(y, w) could overflow
} s_prow_t;

S_INLINE s_prow_t s_prow(mc_dtype_t t, const void *a, int64_t n) {
    const size_t nb = (size_t)(n / MC_QK);
    s_prow_t p = {a, (const uint8_t *)a + nb * sizeof(mc_block_q8_0_t), NULL, false};
    p.nc = p.d + nb * sizeof(float);
    if (t == MC_DTYPE_Q8_0) {
        uint32_t flag;
        memcpy(&flag, p.nc + nb * 8 * sizeof(int32_t), sizeof flag);
        p.wide = flag != 0;
    }
    return p;
}

S_INLINE void s_prep32(mc_dtype_t t, void *a, int64_t n) {
    const size_t nb = (size_t)(n / MC_QK);
    uint8_t *q = a, *d = q + nb * sizeof(mc_block_q8_0_t), *nc = d + nb * sizeof(float);
    // The offset the weight bytes carry: Q5_0's 16, or the 128 that AVX-VNNI
    // adds to Q8_0's signed bytes in the repacked product.
    const __m256i off = _mm256_set1_epi8(t == MC_DTYPE_Q8_0 ? (char)0x80 : 16);
    __m256i ymin = _mm256_setzero_si256();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *blk = q + i * sizeof(mc_block_q8_0_t);
        const float f = s_half(S_AT(blk, mc_block_q8_0_t, d));
        memcpy(d + i * sizeof f, &f, sizeof f);
        const __m256i y = s_load(S_AT(blk, mc_block_q8_0_t, qs));
        if (t == MC_DTYPE_Q8_0) ymin = _mm256_min_epi8(ymin, y);
        // Q8_0: 128 * y pairs lie in [-32768, 32512]: maddubs is exact.
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(off, y), _mm256_set1_epi16(1));
        _mm256_storeu_si256((__m256i *)(nc + i * 32), _mm256_sub_epi32(_mm256_setzero_si256(), sums));
    }
    if (t == MC_DTYPE_Q8_0) {
        const uint32_t flag = _mm256_movemask_epi8(_mm256_cmpeq_epi8(ymin, _mm256_set1_epi8(-128))) != 0;
        memcpy(nc + nb * 8 * sizeof(int32_t), &flag, sizeof flag);
    }
}

// Q4_0's side data: the f32 scale of each block, then per block one int32:
// -8 * the sum of the block's activation quants (its dot adds whole-block
// sums, kernel.c; the repacked dot starts each block's 8 row lanes from it).
// MXFP4's: the same with -12 (its table's offset, s_mxfp4_u).
S_INLINE void s_prep_blocksum(void *a, int64_t n, char offset) {
    const size_t nb = (size_t)(n / MC_QK);
    uint8_t *q = a, *d = q + nb * sizeof(mc_block_q8_0_t), *nc = d + nb * sizeof(float);
    const __m256i off = _mm256_set1_epi8(offset);
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *blk = q + i * sizeof(mc_block_q8_0_t);
        const float f = s_half(S_AT(blk, mc_block_q8_0_t, d));
        memcpy(d + i * sizeof f, &f, sizeof f);
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(off, s_load(S_AT(blk, mc_block_q8_0_t, qs))),
                                               _mm256_set1_epi16(1));
        const int32_t v = -_mm_cvtsi128_si32(s_hsum4(sums, sums, sums, sums));
        memcpy(nc + i * sizeof v, &v, sizeof v);
    }
}
S_FN void s_prep_q4_0(void *a, int64_t n) { s_prep_blocksum(a, n, 8); }
S_FN void s_prep_mxfp4(void *a, int64_t n) { s_prep_blocksum(a, n, 12); }

// MXFP4's codes 0..15 -> their doubled E2M1 value + 12 (mc_mxfp4_values[c] + 12,
// unsigned for the byte products; the side data's -12 * sum(y) takes the 12 back).
static const uint8_t s_mxfp4_u[16] = {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};
static size_t s_prep_bytes_q4_0(int64_t n) { return (size_t)(n / MC_QK) * (sizeof(float) + sizeof(int32_t)); }
S_FN void s_prep_q5_0(void *a, int64_t n) { s_prep32(MC_DTYPE_Q5_0, a, n); }
S_FN void s_prep_q8_0(void *a, int64_t n) { s_prep32(MC_DTYPE_Q8_0, a, n); }
static size_t s_prep_bytes_offset(int64_t n) { return (size_t)(n / MC_QK) * (sizeof(float) + 8 * sizeof(int32_t)); }
static size_t s_prep_bytes_q8_0(int64_t n) { return s_prep_bytes_offset(n) + sizeof(uint32_t); }

// r (1..4) f32 at p (unaligned) as lanes, 0 beyond r: never reads past them.
S_INLINE __m128 s_floats(const uint8_t *p, int r) {
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    memcpy(v, p, (size_t)r * sizeof(float));
    return _mm_loadu_ps(v);
}

// The same for r int32.
S_INLINE __m128i s_ints(const uint8_t *p, int r) {
    int32_t v[4] = {0, 0, 0, 0};
    memcpy(v, p, (size_t)r * sizeof(int32_t));
    return _mm_loadu_si128((const __m128i *)(const void *)v);
}

// The dots on prepared rows, once with AVX2 byte products and once with
// AVX-VNNI (the same source, kernel_avx2_q32.h, for two targets).
#define S_Q32_VNNI 0
#define S_Q32_FN S_FN
#define S_Q32_INLINE S_INLINE
#define S_Q32_NAME(x) s_avx2_##x
#include "kernel_avx2_q32.h"
#undef S_Q32_VNNI
#undef S_Q32_FN
#undef S_Q32_INLINE
#undef S_Q32_NAME

#define S_Q32_VNNI 1
#define S_Q32_FN static __attribute__((target("avx2,f16c,avxvnni")))
#define S_Q32_INLINE static inline __attribute__((always_inline, target("avx2,f16c,avxvnni")))
#define S_Q32_NAME(x) s_vnni_##x
#include "kernel_avx2_q32.h"
#undef S_Q32_VNNI
#undef S_Q32_FN
#undef S_Q32_INLINE
#undef S_Q32_NAME

// --- K-quants against Q8_K -------------------------------------------------------------
//
// Every K-quant super-block is read as 8 vectors of 32 unsigned quants
// (vector v meets activation bytes 32v..32v+31), 16 per-16-value scales and
// 16 per-16-value multipliers of the activation's bsums:
//
//   A = sum over v of scale * (quant . activation), per 16 values (maddubs, madd)
//   C = sum over g of mult[g] * bsums[g]
//
// which the reference's integers are made of: Q2_K, Q4_K, Q5_K: isum = A,
// summs = C (mult = the mins); Q3_K: isum = A - 4C, Q6_K: isum = A - 32C
// (mult = the scales, the quants' offsets through bsums as in kernel.c).

typedef struct {
    __m256i scale; // 16 x int16: scale of each 16 values
    __m256i mult;  // 16 x int16: multiplier of each bsums entry
    float d, dmin;
} s_kprep_t;

// 16 bytes -> 16 int16 (signed or not).
S_INLINE __m256i s_widen(__m128i v, bool is_signed) {
    return is_signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

// Q4_K/Q5_K: the 8 6-bit (scale, min) pairs of the 12 scale bytes, each
// duplicated to cover its two groups of 16.
S_INLINE void s_scales_k4(const uint8_t *sc12, s_kprep_t *p) {
    uint32_t w[3];
    memcpy(w, sc12, sizeof w);
    const uint32_t lo6 = 0x3F3F3F3Fu, lo4 = 0x0F0F0F0Fu, lo2 = 0x03030303u;
    const uint32_t sc_lo = w[0] & lo6, m_lo = w[1] & lo6;
    const uint32_t sc_hi = (w[2] & lo4) | ((w[0] >> 6) & lo2) << 4;
    const uint32_t m_hi = ((w[2] >> 4) & lo4) | ((w[1] >> 6) & lo2) << 4;
    const __m128i sc = _mm_setr_epi32((int)sc_lo, (int)sc_hi, 0, 0), m = _mm_setr_epi32((int)m_lo, (int)m_hi, 0, 0);
    p->scale = s_widen(_mm_unpacklo_epi8(sc, sc), false);
    p->mult = s_widen(_mm_unpacklo_epi8(m, m), false);
}

S_INLINE s_kprep_t s_kprep(mc_dtype_t t, const uint8_t *x) {
    s_kprep_t p = {_mm256_setzero_si256(), _mm256_setzero_si256(), 0.f, 0.f};
    switch (t) {
    case MC_DTYPE_Q2_K: {
        const __m128i sc = s_load128(S_AT(x, mc_block_q2_k_t, scales));
        p.scale = s_widen(_mm_and_si128(sc, _mm_set1_epi8(0x0F)), false);
        p.mult = s_widen(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F)), false);
        p.d = s_half(S_AT(x, mc_block_q2_k_t, d));
        p.dmin = s_half(S_AT(x, mc_block_q2_k_t, dmin));
        break;
    }
    case MC_DTYPE_Q3_K: {
        // 16 6-bit scales: low nibbles in bytes 0..7, top 2 bits in 8..11.
        uint32_t w[3];
        memcpy(w, S_AT(x, mc_block_q3_k_t, scales), sizeof w);
        const uint32_t lo4 = 0x0F0F0F0Fu, lo2 = 0x03030303u;
        const __m128i sc = _mm_setr_epi32((int)((w[0] & lo4) | (w[2] & lo2) << 4),
                                          (int)((w[1] & lo4) | ((w[2] >> 2) & lo2) << 4),
                                          (int)(((w[0] >> 4) & lo4) | ((w[2] >> 4) & lo2) << 4),
                                          (int)(((w[1] >> 4) & lo4) | ((w[2] >> 6) & lo2) << 4));
        p.scale = s_widen(_mm_sub_epi8(sc, _mm_set1_epi8(32)), true);
        p.mult = p.scale;
        p.d = s_half(S_AT(x, mc_block_q3_k_t, d));
        break;
    }
    case MC_DTYPE_Q4_K:
        s_scales_k4(S_AT(x, mc_block_q4_k_t, scales), &p);
        p.d = s_half(S_AT(x, mc_block_q4_k_t, d));
        p.dmin = s_half(S_AT(x, mc_block_q4_k_t, dmin));
        break;
    case MC_DTYPE_Q5_K:
        s_scales_k4(S_AT(x, mc_block_q5_k_t, scales), &p);
        p.d = s_half(S_AT(x, mc_block_q5_k_t, d));
        p.dmin = s_half(S_AT(x, mc_block_q5_k_t, dmin));
        break;
    default: // MC_DTYPE_Q6_K
        p.scale = s_widen(s_load128(S_AT(x, mc_block_q6_k_t, scales)), true);
        p.mult = p.scale;
        p.d = s_half(S_AT(x, mc_block_q6_k_t, d));
        break;
    }
    return p;
}

// Bits k, k+1 of every byte, as the byte's value.
S_INLINE __m256i s_bits2(__m256i v, int k) {
    return _mm256_and_si256(_mm256_srli_epi16(v, k), _mm256_set1_epi8(3));
}

S_INLINE __m256i s_bit(__m256i v, int k) {
    return _mm256_and_si256(_mm256_srli_epi16(v, k), _mm256_set1_epi8(1));
}

S_INLINE __m256i s_lo4(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
S_INLINE __m256i s_hi4(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }

// Quant vector v (0..7) of a super-block: 32 unsigned bytes.
S_INLINE __m256i s_kquants(mc_dtype_t t, const uint8_t *x, int v) {
    switch (t) {
    case MC_DTYPE_Q2_K: return s_bits2(s_load(S_AT(x, mc_block_q2_k_t, qs) + 32 * (v / 4)), 2 * (v % 4));
    case MC_DTYPE_Q3_K: {
        const __m256i lo = s_bits2(s_load(S_AT(x, mc_block_q3_k_t, qs) + 32 * (v / 4)), 2 * (v % 4));
        const __m256i hi = s_bit(s_load(S_AT(x, mc_block_q3_k_t, hmask)), v);
        return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
    }
    case MC_DTYPE_Q4_K: {
        const __m256i q = s_load(S_AT(x, mc_block_q4_k_t, qs) + 32 * (v / 2));
        return v % 2 ? s_hi4(q) : s_lo4(q);
    }
    case MC_DTYPE_Q5_K: {
        const __m256i q = s_load(S_AT(x, mc_block_q5_k_t, qs) + 32 * (v / 2));
        const __m256i hi = s_bit(s_load(S_AT(x, mc_block_q5_k_t, qh)), v);
        return _mm256_or_si256(v % 2 ? s_hi4(q) : s_lo4(q), _mm256_slli_epi16(hi, 4));
    }
    default: { // MC_DTYPE_Q6_K: vector 4h+k of half h: ql low/high nibbles, qh bits 2k, 2k+1
        const int h = v / 4, k = v % 4;
        const __m256i ql = s_load(S_AT(x, mc_block_q6_k_t, ql) + 64 * h + 32 * (k % 2));
        const __m256i qh = s_bits2(s_load(S_AT(x, mc_block_q6_k_t, qh) + 32 * h), 2 * k);
        return _mm256_or_si256(k < 2 ? s_lo4(ql) : s_hi4(ql), _mm256_slli_epi16(qh, 4));
    }
    }
}

// madd multipliers for vector v: scale[2v] in the low 128 bits (its first 16
// values), scale[2v + 1] in the high ones.
static const uint8_t s_pair_shuffle[4][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
};

S_INLINE __m256i s_scale_pair(__m256i scale, int v) {
    const __m128i half = v < 4 ? _mm256_castsi256_si128(scale) : _mm256_extracti128_si256(scale, 1);
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(half), s_load(s_pair_shuffle[v % 4]));
}

S_INLINE size_t s_kbytes(mc_dtype_t t) {
    switch (t) {
    case MC_DTYPE_Q2_K: return sizeof(mc_block_q2_k_t);
    case MC_DTYPE_Q3_K: return sizeof(mc_block_q3_k_t);
    case MC_DTYPE_Q4_K: return sizeof(mc_block_q4_k_t);
    case MC_DTYPE_Q5_K: return sizeof(mc_block_q5_k_t);
    default: return sizeof(mc_block_q6_k_t);
    }
}

S_INLINE void s_dotk(mc_dtype_t t, int64_t n, float *s, const uint8_t *x, const uint8_t *const *a, int na) {
    const size_t xb = s_kbytes(t), yb = sizeof(mc_block_q8_k_t);
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t i = 0; i < n / MC_QK_K; i++, x += xb) {
        s_prefetch(x, xb);
        const s_kprep_t p = s_kprep(t, x);
        __m256i acc[4];
        for (int c = 0; c < na; c++) acc[c] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            const __m256i q = s_kquants(t, x, v), sc = s_scale_pair(p.scale, v);
#pragma GCC unroll 4
            for (int c = 0; c < na; c++) {
                const __m256i y = s_load(a[c] + (size_t)i * yb + offsetof(mc_block_q8_k_t, qs) + 32 * v);
                acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), sc));
            }
        }
        for (int c = 0; c < na; c++) {
            const uint8_t *yk = a[c] + (size_t)i * yb;
            const __m256i bsums = s_load(S_AT(yk, mc_block_q8_k_t, bsums));
            int isum, summs;
            s_hsum2(acc[c], _mm256_madd_epi16(bsums, p.mult), &isum, &summs);
            const float yd = s_f32(S_AT(yk, mc_block_q8_k_t, d));
            // The reference's float steps, type by type (kernel.c).
            switch (t) {
            case MC_DTYPE_Q2_K: {
                const float dall = yd * p.d, dmin = yd * p.dmin;
                sum[c] += dall * isum - dmin * summs;
                break;
            }
            case MC_DTYPE_Q3_K: {
                const float d = p.d * yd;
                sum[c] += d * (isum - 4 * summs);
                break;
            }
            case MC_DTYPE_Q4_K:
            case MC_DTYPE_Q5_K: sum[c] += (p.d * yd) * isum - (p.dmin * yd) * summs; break;
            default: {
                const float d = p.d * yd;
                sum[c] += d * (isum - 32 * summs);
                break;
            }
            }
        }
    }
    for (int c = 0; c < na; c++) s[c] = sum[c];
}

#define S_DOTK(name, type)                                                                        \
    S_FN void s_dot_##name(int64_t n, float *s, const void *w, const void *a) {                  \
        const uint8_t *y[1] = {a};                                                                \
        s_dotk(type, n, s, w, y, 1);                                                              \
    }                                                                                             \
    S_FN void s_dot4_##name(int64_t n, float s[4], const void *w, const void *const a[4]) {      \
        const uint8_t *y[4] = {a[0], a[1], a[2], a[3]};                                           \
        s_dotk(type, n, s, w, y, 4);                                                              \
    }
S_DOTK(q2_k, MC_DTYPE_Q2_K)
S_DOTK(q3_k, MC_DTYPE_Q3_K)
S_DOTK(q4_k, MC_DTYPE_Q4_K)
S_DOTK(q5_k, MC_DTYPE_Q5_K)
S_DOTK(q6_k, MC_DTYPE_Q6_K)
#undef S_DOTK

// Q4_K's and Q6_K's repacked products, with AVX2 byte products and with AVX-VNNI.
#define S_K8_VNNI 0
#define S_K8_FN S_FN
#define S_K8_INLINE S_INLINE
#define S_K8_NAME(x) s_avx2_##x
#include "kernel_avx2_k8.h"
#undef S_K8_VNNI
#undef S_K8_FN
#undef S_K8_INLINE
#undef S_K8_NAME

#define S_K8_VNNI 1
#define S_K8_FN static __attribute__((target("avx2,f16c,avxvnni")))
#define S_K8_INLINE static inline __attribute__((always_inline, target("avx2,f16c,avxvnni")))
#define S_K8_NAME(x) s_vnni_##x
#include "kernel_avx2_k8.h"
#undef S_K8_VNNI
#undef S_K8_FN
#undef S_K8_INLINE
#undef S_K8_NAME

// --- table --------------------------------------------------------------------------

// The two tables differ only in their ISA and the prepared Q4_0, Q5_0, Q8_0
// and MXFP4 dots (pfx: s_avx2_ or s_vnni_).
#define S_K(w, at, a, name, isa_) \
    {.wtype = w, .act_type = at, .act = a, .dot = s_dot_##name, .dot4 = s_dot4_##name, .isa = isa_}
#define S_KP(w, name, isa_, pfx, pbytes, dot8_)                                               \
    {.wtype = w, .act_type = MC_DTYPE_Q8_0, .act = s_act_q8_0, .dot = pfx##dot_##name,      \
     .dot4 = pfx##dot4_##name, .isa = isa_, .prep = s_prep_##name, .prep_bytes = pbytes, .dot8 = dot8_}
#define S_TABLE(isa_, pfx)                                                                                   \
    {.wtype = MC_DTYPE_F32, .act_type = MC_DTYPE_F32, .act = s_act_f32, .dot = s_dot_f32, .isa = isa_},     \
    {.wtype = MC_DTYPE_F16, .act_type = MC_DTYPE_F16, .act = s_act_f16, .dot = s_dot_f16, .isa = isa_},     \
    {.wtype = MC_DTYPE_BF16, .act_type = MC_DTYPE_BF16, .act = s_act_bf16, .dot = s_dot_bf16, .isa = isa_}, \
    S_KP(MC_DTYPE_Q4_0, q4_0, isa_, pfx, s_prep_bytes_q4_0, pfx##dot8_q4_0),                                              \
    S_K(MC_DTYPE_Q4_1, MC_DTYPE_Q8_1, s_act_q8_1, q4_1, isa_),                                              \
    S_KP(MC_DTYPE_Q5_0, q5_0, isa_, pfx, s_prep_bytes_offset, NULL),                                              \
    S_K(MC_DTYPE_Q5_1, MC_DTYPE_Q8_1, s_act_q8_1, q5_1, isa_),                                              \
    S_KP(MC_DTYPE_Q8_0, q8_0, isa_, pfx, s_prep_bytes_q8_0, pfx##dot8_q8_0),                                                \
    S_K(MC_DTYPE_Q2_K, MC_DTYPE_Q8_K, s_act_q8_k, q2_k, isa_),                                              \
    S_K(MC_DTYPE_Q3_K, MC_DTYPE_Q8_K, s_act_q8_k, q3_k, isa_),                                              \
    {.wtype = MC_DTYPE_Q4_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q4_k, .dot4 = s_dot4_q4_k, \
     .isa = isa_, .dot8 = pfx##dot8_q4_k},                                              \
    {.wtype = MC_DTYPE_Q5_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q5_k, .dot4 = s_dot4_q5_k, \
     .isa = isa_, .dot8 = pfx##dot8_q5_k},                                              \
    {.wtype = MC_DTYPE_Q6_K, .act_type = MC_DTYPE_Q8_K, .act = s_act_q8_k, .dot = s_dot_q6_k, .dot4 = s_dot4_q6_k, \
     .isa = isa_, .dot8 = pfx##dot8_q6_k},                                              \
    S_KP(MC_DTYPE_MXFP4, mxfp4, isa_, pfx, s_prep_bytes_q4_0, NULL)

static const mc_kernel_t s_avx2[] = {S_TABLE(MC_ISA_AVX2, s_avx2_)};
static const mc_kernel_t s_vnni[] = {S_TABLE(MC_ISA_AVX_VNNI, s_vnni_)};
#undef S_TABLE
#undef S_KP
#undef S_K

// The attention loops read the KV cache as F32 or F16 rows: the F16 ones
// widened exactly, and then the very same arithmetic, so one inline body
// serves both (f16 is a constant at every call: each use is its own loop).

// 8 cached fp16 values widened to f32 (exact).
S_INLINE __m256 s_kv8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p)); }

// 8 values of a cache row from value i on (f16: F16 values, else F32), as f32.
S_INLINE __m256 s_row8(const void *row, int64_t i, bool f16) {
    return f16 ? s_kv8((const uint16_t *)row + i) : _mm256_loadu_ps((const float *)row + i);
}

// Value i of a cache row, as f32.
S_INLINE float s_row1(const void *row, int64_t i, bool f16) {
    return f16 ? _cvtsh_ss(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

// The 16-lane accumulators (a0: lanes 0-7, a1: 8-15) of four rows' dots
// with q over every whole 16 values (s_dot_f32's), each load of q shared by
// the four. Returns where the whole ones end.
S_INLINE int64_t s_acc4(int64_t hd, const float *q, const void *const r[4], bool f16, __m256 a0[4], __m256 a1[4]) {
    for (int c = 0; c < 4; c++) a0[c] = a1[c] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= hd; j += 16) {
        const __m256 q0 = _mm256_loadu_ps(q + j), q1 = _mm256_loadu_ps(q + j + 8);
        for (int c = 0; c < 4; c++) {
            a0[c] = _mm256_add_ps(a0[c], _mm256_mul_ps(s_row8(r[c], j, f16), q0));
            a1[c] = _mm256_add_ps(a1[c], _mm256_mul_ps(s_row8(r[c], j + 8, f16), q1));
        }
    }
    return j;
}

// s_lanes_finish for the four at once (no values left over): 16 -> 8
// lanes, 8 -> 4, then hadd pairs (0 + 1), (2 + 3) and again their sums: the
// scalar (acc[0] + acc[1]) + (acc[2] + acc[3]) of each position.
S_INLINE void s_fold4(const __m256 a0[4], const __m256 a1[4], float *out) {
    __m128 z[4];
    for (int c = 0; c < 4; c++) {
        const __m256 x = _mm256_add_ps(a0[c], a1[c]);
        z[c] = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    }
    _mm_storeu_ps(out, _mm_hadd_ps(_mm_hadd_ps(z[0], z[1]), _mm_hadd_ps(z[2], z[3])));
}

// Four positions' F32 dots at once: each one s_dot_f32's accumulators and
// fold (so its bits), with every load of q shared by the four.
S_FN void s_scores(int64_t hd, const float *q, const float *k, int64_t stride, int64_t n, float *out) {
    int64_t p = 0;
    for (; p + 4 <= n; p += 4) {
        const float *r[4] = {k + p * stride, k + (p + 1) * stride, k + (p + 2) * stride, k + (p + 3) * stride};
        __m256 a0[4], a1[4];
        const int64_t j = s_acc4(hd, q, (const void *const *)r, false, a0, a1);
        if (j < hd) {
            for (int c = 0; c < 4; c++) out[p + c] = s_lanes_finish(a0[c], a1[c], j, hd, r[c] + j, q + j);
            continue;
        }
        s_fold4(a0, a1, out + p);
    }
    for (; p < n; p++) s_dot_f32(hd, &out[p], k + p * stride, q);
}

// s_scores on an F16 cache: each key value widened exactly, then the same
// lanes and fold as the F32 dot (four positions at a time, as s_scores).
S_FN void s_scores_f16(int64_t hd, const float *q, const uint16_t *k, int64_t stride, int64_t n, float *out) {
    for (int64_t p0 = 0; p0 < n; p0 += 4) {
        const int rows = n - p0 < 4 ? (int)(n - p0) : 4;
        const uint16_t *r[4];
        __m256 a0[4], a1[4];
        for (int c = 0; c < 4; c++) r[c] = k + (p0 + (c < rows ? c : 0)) * stride;
        const int64_t j = s_acc4(hd, q, (const void *const *)r, true, a0, a1);
        if (j < hd || rows < 4) {
            for (int c = 0; c < rows; c++) {
                float tx[16];
                for (int64_t t = j; t < hd; t++) tx[t - j] = _cvtsh_ss(r[c][t]);
                out[p0 + c] = s_lanes_finish(a0[c], a1[c], j, hd, tx, q + j);
            }
            continue;
        }
        s_fold4(a0, a1, out + p0);
    }
}

// y[i] + w[p] * v[p][i] for every p in turn, the product rounded then the add
// (as the scalar loop), with 32 values of y in registers across all positions.
S_INLINE void s_mix_rows(int64_t hd, int64_t n, const float *w, const void *v, int64_t stride, float *y, bool f16) {
    int64_t i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8);
        __m256 y2 = _mm256_loadu_ps(y + i + 16), y3 = _mm256_loadu_ps(y + i + 24);
        for (int64_t p = 0; p < n; p++) {
            const __m256 wp = _mm256_set1_ps(w[p]);
            const int64_t x = p * stride + i;
            y0 = _mm256_add_ps(y0, _mm256_mul_ps(wp, s_row8(v, x, f16)));
            y1 = _mm256_add_ps(y1, _mm256_mul_ps(wp, s_row8(v, x + 8, f16)));
            y2 = _mm256_add_ps(y2, _mm256_mul_ps(wp, s_row8(v, x + 16, f16)));
            y3 = _mm256_add_ps(y3, _mm256_mul_ps(wp, s_row8(v, x + 24, f16)));
        }
        _mm256_storeu_ps(y + i, y0), _mm256_storeu_ps(y + i + 8, y1);
        _mm256_storeu_ps(y + i + 16, y2), _mm256_storeu_ps(y + i + 24, y3);
    }
    for (; i + 8 <= hd; i += 8) {
        __m256 y0 = _mm256_loadu_ps(y + i);
        for (int64_t p = 0; p < n; p++)
            y0 = _mm256_add_ps(y0, _mm256_mul_ps(_mm256_set1_ps(w[p]), s_row8(v, p * stride + i, f16)));
        _mm256_storeu_ps(y + i, y0);
    }
    for (; i < hd; i++)
        for (int64_t p = 0; p < n; p++) y[i] = y[i] + w[p] * s_row1(v, p * stride + i, f16);
}

S_FN void s_mix(int64_t hd, int64_t n, const float *w, const float *v, int64_t stride, float *y) {
    s_mix_rows(hd, n, w, v, stride, y, false);
}

// s_mix on an F16 cache: y[i] + w[p] * widen(v[p][i]), product rounded then
// the add, position by position.
S_FN void s_mix_f16(int64_t hd, int64_t n, const float *w, const uint16_t *v, int64_t stride, float *y) {
    s_mix_rows(hd, n, w, v, stride, y, true);
}

mc_attn_fns_t mc_kernel_attn_avx2(void) { return (mc_attn_fns_t){s_scores, s_mix, s_scores_f16, s_mix_f16}; }

const mc_kernel_t *mc_kernel_table_avx2(size_t *count) {
    *count = sizeof s_avx2 / sizeof s_avx2[0];
    return s_avx2;
}

const mc_kernel_t *mc_kernel_table_avx_vnni(size_t *count) {
    *count = sizeof s_vnni / sizeof s_vnni[0];
    return s_vnni;
}

#else

mc_attn_fns_t mc_kernel_attn_avx2(void) { return (mc_attn_fns_t){NULL, NULL, NULL, NULL}; }

const mc_kernel_t *mc_kernel_table_avx2(size_t *count) {
    *count = 0;
    return NULL;
}

const mc_kernel_t *mc_kernel_table_avx_vnni(size_t *count) {
    *count = 0;
    return NULL;
}

#endif
