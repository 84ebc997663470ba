/*
 * test_kernel: every weight type's dot product against a double-precision dot
 * of the dequantized operands, the activation conversions, the kernel table
 * lookup, and the cross-ISA contract: every SIMD implementation this CPU runs
 * gives the scalar reference's bits (activation bytes, dot and dot4 results)
 * on random, tie, extreme and special inputs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernel.h"
#include "quant.h"

// xorshift64* (the multiply mixes the low bits, which `% k` picks).
static uint64_t s_rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s * 0x2545F4914F6CDD1Dull;
}

static float s_rng_uniform(uint64_t *s) { // (0, 1)
    return ((float)(s_rng_next(s) >> 40) + 0.5f) / 16777216.0f;
}

static float s_rng_gauss(uint64_t *s) {
    const float u = s_rng_uniform(s), v = s_rng_uniform(s);
    return sqrtf(-2.f * logf(u)) * cosf(6.2831853f * v);
}

static void s_put_half(uint8_t *p, float v) {
    const uint16_t h = mc_fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

// Where the fp16 scale (and min, -1 when none) sit in each block, so random
// blocks can get sane values there.
static const struct {
    mc_dtype_t wtype, act_type;
    int off_d, off_m;
    bool signed_m; // Q4_1/Q5_1 add m, the K-quants subtract a non-negative dmin
    bool e8m0;     // MXFP4: the scale at off_d is one E8M0 byte, not an fp16
} s_types[] = {
    {MC_DTYPE_F32, MC_DTYPE_F32, -1, -1, false, false},
    {MC_DTYPE_F16, MC_DTYPE_F16, -1, -1, false, false},
    {MC_DTYPE_BF16, MC_DTYPE_BF16, -1, -1, false, false},
    {MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, offsetof(mc_block_q4_0_t, d), -1, false, false},
    {MC_DTYPE_Q4_1, MC_DTYPE_Q8_1, offsetof(mc_block_q4_1_t, d), offsetof(mc_block_q4_1_t, m), true, false},
    {MC_DTYPE_Q5_0, MC_DTYPE_Q8_0, offsetof(mc_block_q5_0_t, d), -1, false, false},
    {MC_DTYPE_Q5_1, MC_DTYPE_Q8_1, offsetof(mc_block_q5_1_t, d), offsetof(mc_block_q5_1_t, m), true, false},
    {MC_DTYPE_Q8_0, MC_DTYPE_Q8_0, offsetof(mc_block_q8_0_t, d), -1, false, false},
    {MC_DTYPE_Q2_K, MC_DTYPE_Q8_K, offsetof(mc_block_q2_k_t, d), offsetof(mc_block_q2_k_t, dmin), false, false},
    {MC_DTYPE_Q3_K, MC_DTYPE_Q8_K, offsetof(mc_block_q3_k_t, d), -1, false, false},
    {MC_DTYPE_Q4_K, MC_DTYPE_Q8_K, offsetof(mc_block_q4_k_t, d), offsetof(mc_block_q4_k_t, dmin), false, false},
    {MC_DTYPE_Q5_K, MC_DTYPE_Q8_K, offsetof(mc_block_q5_k_t, d), offsetof(mc_block_q5_k_t, dmin), false, false},
    {MC_DTYPE_Q6_K, MC_DTYPE_Q8_K, offsetof(mc_block_q6_k_t, d), -1, false, false},
    {MC_DTYPE_MXFP4, MC_DTYPE_Q8_0, offsetof(mc_block_mxfp4_t, e), -1, false, true},
};

// A random weight row of n values at w: random bits for the quants and
// scales in [0.001, 0.1] (mins in +-0.1); Gaussian values for the float types.
static void s_random_row(size_t ti, int64_t n, uint8_t *w, uint64_t *rng) {
    const mc_dtype_t t = s_types[ti].wtype;
    if (t == MC_DTYPE_F32 || t == MC_DTYPE_F16 || t == MC_DTYPE_BF16) {
        float *x = malloc((size_t)n * sizeof *x);
        assert_non_null(x);
        for (int64_t i = 0; i < n; i++) x[i] = s_rng_gauss(rng);
        assert_int_equal(mc_quant_quantize_row(t, x, w, n), MC_OK);
        free(x);
        return;
    }
    const mc_dtype_traits_t *tr = mc_dtype_traits(t);
    const size_t bytes = mc_dtype_row_bytes(t, (uint64_t)n);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)s_rng_next(rng);
    for (int64_t b = 0; b < n / tr->block_elems; b++) {
        uint8_t *blk = w + (size_t)b * tr->block_bytes;
        if (s_types[ti].e8m0) { // 2^-10 .. 2^-4: values up to 12 times that
            blk[s_types[ti].off_d] = (uint8_t)(118 + s_rng_next(rng) % 7);
            continue;
        }
        s_put_half(blk + s_types[ti].off_d, 0.001f + 0.099f * s_rng_uniform(rng));
        if (s_types[ti].off_m >= 0) {
            const float m = 0.001f + 0.099f * s_rng_uniform(rng);
            s_put_half(blk + s_types[ti].off_m, s_types[ti].signed_m && (s_rng_next(rng) & 1) ? -m : m);
        }
    }
}

static float *s_dequant(mc_dtype_t t, const void *src, int64_t n) {
    float *y = malloc((size_t)n * sizeof *y);
    assert_non_null(y);
    assert_int_equal(mc_quant_dequantize_row(t, src, y, n), MC_OK);
    return y;
}

// With Q8_1 activations the weight min m multiplies the block's stored sum
// s = fp16(d * sum(q)), not sum(dequantized activations) = fp16(d) * sum(q);
// this is what that changes in the exact dot (0 for other types).
static double s_q8_1_offset(size_t ti, const uint8_t *w, const void *act, int64_t n) {
    if (s_types[ti].act_type != MC_DTYPE_Q8_1) return 0.0;
    const mc_dtype_traits_t *tr = mc_dtype_traits(s_types[ti].wtype);
    double off = 0.0;
    for (int64_t b = 0; b < n / MC_QK; b++) {
        mc_block_q8_1_t y;
        memcpy(&y, (const uint8_t *)act + (size_t)b * sizeof y, sizeof y);
        uint16_t mh;
        memcpy(&mh, w + (size_t)b * tr->block_bytes + s_types[ti].off_m, 2);
        int sum = 0;
        for (int j = 0; j < MC_QK; j++) sum += y.qs[j];
        off += (double)mc_fp16_to_fp32(mh) * ((double)mc_fp16_to_fp32(y.s) - (double)mc_fp16_to_fp32(y.d) * sum);
    }
    return off;
}

static void s_check_dot(size_t ti, int64_t n, mc_isa_t isa, uint64_t *rng) {
    const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isa);
    assert_non_null(k);
    const size_t wbytes = mc_dtype_row_bytes(k->wtype, (uint64_t)n);
    const size_t abytes = mc_dtype_row_bytes(k->act_type, (uint64_t)n);
    assert_true(wbytes > 0 && abytes > 0);
    // Odd offsets: rows in a file mapping (and, here, activations) are unaligned.
    uint8_t *wbuf = malloc(wbytes + 1), *abuf = malloc(mc_kernel_act_bytes(k, n) + 3), *aref = malloc(abytes);
    float *x = malloc((size_t)n * sizeof *x);
    assert_true(wbuf && abuf && aref && x);
    uint8_t *w = wbuf + 1, *a = abuf + 3;
    s_random_row(ti, n, w, rng);
    for (int64_t i = 0; i < n; i++) x[i] = s_rng_gauss(rng) * (1.f + (float)(i % 3));

    mc_kernel_act_row(k, x, a, n);
    assert_int_equal(mc_quant_quantize_row(k->act_type, x, aref, n), MC_OK);
    assert_memory_equal(a, aref, abytes);

    float dot = NAN;
    k->dot(n, &dot, w, a);

    float *wf = s_dequant(k->wtype, w, n), *af = s_dequant(k->act_type, a, n);
    double exact = 0, mag = 0, f32 = 0, act_err = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)wf[i] * af[i];
        mag += fabs((double)wf[i] * af[i]);
        f32 += (double)wf[i] * x[i];
        act_err += fabs((double)wf[i]) * fabs((double)x[i] - af[i]);
    }
    exact += s_q8_1_offset(ti, w, aref, n);
    if (getenv("MC_TEST_VERBOSE"))
        printf("%-4s n=%-4lld dot err/mag %.2e, act err/mag %.4f\n", mc_dtype_name(k->wtype), (long long)n,
               fabs(dot - exact) / mag, act_err / mag);
    // Same operands: only float rounding differs.
    assert_true(fabs(dot - exact) <= 1e-5 * mag + 1e-30);
    // Against the unquantized activation: off by at most the activation's rounding.
    assert_true(fabs(dot - f32) <= act_err * 1.001 + 1e-5 * mag + 1e-30);
    // And that rounding is small: half a step of max/127 per value is about 1%
    // of the typical product for these Gaussian activations.
    assert_true(act_err <= 0.03 * mag + 1e-30);
    free(wf);
    free(af);
    free(x);
    free(wbuf);
    free(abuf);
    free(aref);
}

// The ISAs this CPU runs (scalar first), and how many.
static size_t s_isas(mc_isa_t out[MC_ISA_BEST]) {
    const mc_isa_t all[] = {MC_ISA_SCALAR, MC_ISA_AVX2, MC_ISA_AVX_VNNI, MC_ISA_NEON, MC_ISA_NEON_DOTPROD};
    size_t n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (mc_kernel_get(MC_DTYPE_F32, all[i])->isa == all[i]) out[n++] = all[i];
    return n;
}

// The attention loops: every ISA's scores are the F32 dot per row and its
// mix the scalar product-then-add per row in turn, bit for bit, for head sizes around the
// vector widths, position counts around the 4-row step, and a row stride
// wider than the head (the KV cache's layout).
static void test_attn_same_bits(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const mc_kernel_t *dot = mc_kernel_get(MC_DTYPE_F32, MC_ISA_SCALAR);
    enum { MAXP = 19, STRIDE = 150 };
    static float k[MAXP * STRIDE], q[STRIDE], w[MAXP], want[STRIDE], got[STRIDE], sw[MAXP], sg[MAXP];
    uint64_t rng = 777;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        k[i] = ldexpf((float)(int32_t)(rng >> 32) / 2147483648.f, (int)(rng % 24) - 12);
    }
    for (int i = 0; i < STRIDE; i++) q[i] = k[(i * 7 + 3) % (MAXP * STRIDE)] * 0.75f;
    for (int p = 0; p < MAXP; p++) w[p] = ldexpf(1.f + (float)p / 7.f, -(p % 5));
    const int hds[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128};
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (int n = 0; n <= MAXP; n++) {
            const int hd = hds[h];
            for (int p = 0; p < n; p++) dot->dot(hd, &sw[p], k + p * STRIDE, q);
            for (int i = 0; i < STRIDE; i++) want[i] = q[i];
            for (int p = 0; p < n; p++) // the product rounded, then the add (-ffp-contract=off)
                for (int i = 0; i < hd; i++) want[i] = want[i] + w[p] * k[p * STRIDE + i];
            for (size_t x = 0; x < n_isas; x++) {
                const mc_attn_fns_t f = mc_kernel_attn(isas[x]);
                memset(sg, 0, sizeof sg);
                f.scores(hd, q, k, STRIDE, n, sg);
                assert_memory_equal(sg, sw, (size_t)n * sizeof *sg);
                for (int i = 0; i < STRIDE; i++) got[i] = q[i];
                f.mix(hd, n, w, k, STRIDE, got);
                assert_memory_equal(got, want, sizeof got); // past hd untouched too
            }
        }
}

// The F16 cache's loops (--kv-type f16): on every ISA, the bits of the scalar
// F32 loops run on the keys and values widened from fp16 (the widening is
// exact, so the order of the sums is the F32 one), for the same head sizes,
// position counts and stride; values include fp16 subnormals, infinity-free
// extremes and both zeros.
static void test_attn_f16_same_bits(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const mc_kernel_t *dot = mc_kernel_get(MC_DTYPE_F32, MC_ISA_SCALAR);
    enum { MAXP = 19, STRIDE = 150 };
    static uint16_t kh[MAXP * STRIDE];
    static float kw[MAXP * STRIDE], q[STRIDE], w[MAXP], want[STRIDE], got[STRIDE], sw[MAXP], sg[MAXP];
    uint64_t rng = 4242;
    for (size_t i = 0; i < sizeof kh / sizeof kh[0]; i++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        const float v = ldexpf((float)(int32_t)(rng >> 32) / 2147483648.f, (int)(rng % 40) - 28); // to subnormal
        kh[i] = i % 37 == 5 ? (uint16_t)(0x8000u * (i & 1)) : i % 41 == 7 ? 0x7BFFu : mc_fp32_to_fp16(v);
        kw[i] = mc_fp16_to_fp32(kh[i]);
    }
    for (int i = 0; i < STRIDE; i++) q[i] = ldexpf(kw[(i * 7 + 3) % (MAXP * STRIDE)], i % 9);
    for (int p = 0; p < MAXP; p++) w[p] = ldexpf(1.f + (float)p / 7.f, -(p % 5));
    const int hds[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128};
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (int n = 0; n <= MAXP; n++) {
            const int hd = hds[h];
            for (int p = 0; p < n; p++) dot->dot(hd, &sw[p], kw + p * STRIDE, q);
            for (int i = 0; i < STRIDE; i++) want[i] = q[i];
            for (int p = 0; p < n; p++)
                for (int i = 0; i < hd; i++) want[i] = want[i] + w[p] * kw[p * STRIDE + i];
            for (size_t x = 0; x < n_isas; x++) {
                const mc_attn_fns_t f = mc_kernel_attn(isas[x]);
                memset(sg, 0, sizeof sg);
                f.scores_f16(hd, q, kh, STRIDE, n, sg);
                assert_memory_equal(sg, sw, (size_t)n * sizeof *sg);
                for (int i = 0; i < STRIDE; i++) got[i] = q[i];
                f.mix_f16(hd, n, w, kh, STRIDE, got);
                assert_memory_equal(got, want, sizeof got);
            }
        }
}

// IEEE binary16 rounding of f written independently of mc_fp32_to_fp16: the
// nearest of the two neighbouring halves found by exact double arithmetic,
// ties to the even one; NaN -> the reference's quiet NaN of its sign.
static uint16_t s_half_ref(float f) {
    const uint32_t u = mc_f32_bits(f), sign = (u >> 16) & 0x8000u;
    if (isnan(f)) return (uint16_t)(sign | 0x7E00u);
    const double a = fabs((double)f);
    if (a >= 65520.0) return (uint16_t)(sign | 0x7C00u); // 65504 + half its ulp (32) and up: infinity
    int e;
    frexp(a, &e);                           // a = m * 2^e, m in [0.5, 1)
    const int ulp_e = e - 11 < -24 ? -24 : e - 11; // 11 significant bits; subnormals' ulp 2^-24
    const double ulp = ldexp(1.0, ulp_e), lo = floor(a / ulp) * ulp, rem = a - lo;
    uint64_t m = (uint64_t)(lo / ulp);
    if (rem > ulp / 2 || (rem == ulp / 2 && (m & 1))) m++;
    const double r = (double)m * ulp; // exact
    if (r == 0) return (uint16_t)sign;
    if (r < ldexp(1.0, -14)) return (uint16_t)(sign | (uint32_t)m); // subnormal: m * 2^-24
    int re;
    const double rm = frexp(r, &re); // r = rm * 2^re, rm in [0.5, 1): exponent field re + 14
    return (uint16_t)(sign | (uint32_t)(re + 14) << 10 | ((uint32_t)ldexp(rm, 11) & 0x3FFu));
}

// The conversion the F16 KV cache stores with (each ISA's F16 activation
// conversion) against mc_fp32_to_fp16 and both against s_half_ref, over
// every 61st bit pattern of the 2^32 floats (MC_TEST_ALL_FLOATS=1: all of
// them), offset so each run covers other patterns, plus every half's
// neighbourhood (test_act_half_boundaries). And every f16 -> f32 value: the
// reference's widening is exact, and each ISA's F16 mix widens the same way.
static void test_kv_f16_conversion(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const char *all = getenv("MC_TEST_ALL_FLOATS");
    const uint64_t step = all && strcmp(all, "1") == 0 ? 1 : 61;
    enum { CHUNK = 1 << 16 };
    static float x[CHUNK];
    static uint16_t want[CHUNK], got[CHUNK + 1];
    uint64_t checked = 0;
    for (uint64_t u = 0; u < (1ull << 32);) {
        int c = 0;
        for (; c < CHUNK && u < (1ull << 32); c++, u += step) x[c] = mc_f32_from_bits((uint32_t)u);
        for (int i = 0; i < c; i++) {
            want[i] = mc_fp32_to_fp16(x[i]);
            if (want[i] != s_half_ref(x[i])) fail_msg("fp32 %08x -> %04x, want %04x", mc_f32_bits(x[i]), want[i], s_half_ref(x[i]));
        }
        for (size_t ii = 1; ii < n_isas; ii++) {
            mc_kernel_get(MC_DTYPE_F16, isas[ii])->act(x, got + 1, c); // odd output address
            assert_memory_equal(got + 1, want, (size_t)c * 2);
        }
        checked += (uint64_t)c;
    }
    assert_true(checked >= (1ull << 32) / 61);
    // Every half widened: exact (its value by arithmetic), and each ISA's mix
    // of one position with weight 1 onto -0 gives it back (-0 + v = v, both zeros).
    static uint16_t h[65536];
    static float wide[65536], y[65536];
    for (uint32_t i = 0; i < 65536; i++) {
        h[i] = (uint16_t)i;
        wide[i] = mc_fp16_to_fp32(h[i]);
        const uint32_t e = (i >> 10) & 0x1F, m = i & 0x3FF;
        const double v = e == 0 ? ldexp((double)m, -24) : e < 31 ? ldexp(1024.0 + m, (int)e - 25) : m ? NAN : INFINITY;
        if (e == 31 && m) assert_true(isnan(wide[i]) && (mc_f32_bits(wide[i]) & 0x7FFFFFu) == m << 13);
        else assert_true((double)fabsf(wide[i]) == v && (signbit(wide[i]) != 0) == (i >> 15 != 0));
        if (!(e == 31 && m)) assert_int_equal(mc_fp32_to_fp16(wide[i]), h[i]); // and back
    }
    const float one = 1.f;
    for (size_t ii = 0; ii < n_isas; ii++) {
        for (int i = 0; i < 65536; i++) y[i] = -0.f;
        mc_kernel_attn(isas[ii]).mix_f16(65536, 1, &one, h, 65536, y);
        for (int i = 0; i < 65536; i++) {
            if (isnan(wide[i])) assert_true(isnan(y[i]));
            else assert_int_equal(mc_f32_bits(y[i]), mc_f32_bits(wide[i]));
        }
    }
}

static void test_dot_all_types(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    for (size_t ii = 0; ii < n_isas; ii++) {
        uint64_t rng = 0x9E3779B97F4A7C15ull;
        for (size_t ti = 0; ti < sizeof s_types / sizeof s_types[0]; ti++) {
            const int64_t unit = mc_dtype_traits(s_types[ti].wtype)->block_elems;
            const int64_t blocks[] = {1, 2, 7};
            for (size_t b = 0; b < 3; b++)
                for (int rep = 0; rep < 4; rep++) s_check_dot(ti, blocks[b] * unit, isas[ii], &rng);
            if (unit == 1) s_check_dot(ti, 448, isas[ii], &rng); // float types: a realistic length too
        }
    }
}

// Extreme quants: all-ones bytes give the largest quants, scales and 6-bit
// fields, and equal activations all quantize to +-127, so the per-block integer
// sums reach their largest magnitude and must not overflow.
static void s_check_extremes(size_t ti, mc_isa_t isa) {
    const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isa);
    const mc_dtype_traits_t *tr = mc_dtype_traits(k->wtype);
    const int64_t n = 7 * (int64_t)tr->block_elems;
    const size_t wbytes = mc_dtype_row_bytes(k->wtype, (uint64_t)n);
    uint8_t *w = malloc(wbytes), *a = malloc(mc_kernel_act_bytes(k, n));
    float *x = malloc((size_t)n * sizeof *x);
    assert_true(w && a && x);
    memset(w, 0xFF, wbytes);
    for (int64_t b = 0; b < n / tr->block_elems; b++) {
        if (s_types[ti].e8m0) { // 2^-7; codes 0xF: -12 each
            w[(size_t)b * tr->block_bytes + (size_t)s_types[ti].off_d] = 121;
            continue;
        }
        s_put_half(w + (size_t)b * tr->block_bytes + s_types[ti].off_d, 0.01f);
        if (s_types[ti].off_m >= 0) s_put_half(w + (size_t)b * tr->block_bytes + s_types[ti].off_m, 0.01f);
    }
    for (int64_t i = 0; i < n; i++) x[i] = 1.f;
    mc_kernel_act_row(k, x, a, n);
    float dot = NAN;
    k->dot(n, &dot, w, a);
    float *wf = s_dequant(k->wtype, w, n), *af = s_dequant(k->act_type, a, n);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)wf[i] * af[i];
        mag += fabs((double)wf[i] * af[i]);
    }
    exact += s_q8_1_offset(ti, w, a, n);
    assert_true(mag > 0);
    assert_true(fabs(dot - exact) <= 1e-5 * mag);
    free(wf);
    free(af);
    free(w);
    free(a);
    free(x);
}

static void test_dot_extremes(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    for (size_t ii = 0; ii < n_isas; ii++)
        for (size_t ti = 3; ti < sizeof s_types / sizeof s_types[0]; ti++) s_check_extremes(ti, isas[ii]);
}

// --- the cross-ISA contract: same bits as the scalar reference -------------------

static float s_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// One 32-value block of activation input in one of several shapes that stress
// the conversions: Gaussian at any magnitude, zeros, exact rounding ties
// (max 127 makes the Q8 scale exactly 1 or -1), a dominant negative value,
// equal magnitudes of both signs (which one Q8_K picks), subnormals,
// infinities and NaN, values on fp16 / bf16 rounding midpoints, and large
// positive values only (block sums large enough that the order of the float
// multiplies after them matters).
enum { S_SHAPES = 10 };

static void s_special_block(float *x, int shape, uint64_t *rng) {
    const float scale = powf(10.f, -6.f + 12.f * s_rng_uniform(rng));
    const float flip = s_rng_next(rng) & 1 ? -1.f : 1.f;
    for (int j = 0; j < MC_QK; j++) {
        const int k = (int)(s_rng_next(rng) % 253) - 126; // -126..126
        switch (shape) {
        case 0: x[j] = s_rng_gauss(rng) * scale; break;
        case 1: x[j] = 0.f; break;
        case 2: x[j] = j == 5 ? 127.f : (float)k + (k < 0 ? -0.5f : 0.5f); break;
        case 3: x[j] = j == 9 ? -127.f : (float)k + (k & 1 ? -0.5f : 0.5f); break;
        case 4: x[j] = j == 3 ? -40.f * scale : s_rng_gauss(rng) * scale; break;
        case 5: x[j] = flip * (j % 4 == 1 ? 2.5f : j % 4 == 2 ? -2.5f : 0.25f * (float)(j % 4)); break;
        case 6: x[j] = s_from_bits((uint32_t)(s_rng_next(rng) % 0x00800000u) | (j & 1 ? 0x80000000u : 0)); break;
        case 7: {
            const float sp[] = {INFINITY, -INFINITY, NAN, -NAN, 3e38f, -3e38f, 1e-45f, 65520.f, -65519.f, 0.f};
            x[j] = j < 10 && (s_rng_next(rng) & 1) ? sp[j] : s_rng_gauss(rng);
            break;
        }
        case 8: x[j] = 0.5f + s_rng_uniform(rng); break;
        default: { // halfway between neighbouring fp16 (low bits 0x1000) or bf16 (0x8000) values
            const uint32_t u = (uint32_t)s_rng_next(rng) & 0xBFFF0000u;
            x[j] = s_from_bits(u | (j & 1 ? 0x1000u : 0x8000u));
            break;
        }
        }
    }
}

// n values (a multiple of 256): odd super-blocks one shape throughout (Q8_K
// sees all-zero, all-tie... blocks), the rest a random shape per 32 values.
// only >= 0: that shape everywhere.
static void s_special_row(float *x, int64_t n, int only, uint64_t *rng) {
    for (int64_t b = 0; b < n / MC_QK; b++) {
        const int64_t sb = b / (MC_QK_K / MC_QK);
        int shape = sb % 2 ? (int)(sb / 2 % S_SHAPES) : (int)(s_rng_next(rng) % S_SHAPES);
        if (only >= 0) shape = only;
        s_special_block(x + b * MC_QK, shape, rng);
    }
}

// A weight type using each activation type, to reach its conversion.
static const mc_dtype_t s_act_users[] = {MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16,
                                         MC_DTYPE_Q4_0, MC_DTYPE_Q4_1, MC_DTYPE_Q4_K};

// k->act against the scalar conversion on x, at an odd output offset.
static void s_check_act(const mc_kernel_t *k, const float *x, int64_t n) {
    const mc_kernel_t *ref = mc_kernel_get(k->wtype, MC_ISA_SCALAR);
    const size_t bytes = mc_dtype_row_bytes(k->act_type, (uint64_t)n);
    uint8_t *got = malloc(bytes + 1), *want = malloc(bytes);
    assert_true(got && want);
    k->act(x, got + 1, n);
    ref->act(x, want, n);
    assert_memory_equal(got + 1, want, bytes);
    free(got);
    free(want);
}

static void test_act_same_bits(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const int64_t n = 16 * MC_QK_K;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    for (int rep = 0; rep < 4; rep++) {
        s_special_row(x, n, -1, &rng);
        for (size_t ii = 1; ii < n_isas; ii++)
            for (size_t u = 0; u < sizeof s_act_users / sizeof s_act_users[0]; u++) {
                const mc_kernel_t *k = mc_kernel_get(s_act_users[u], isas[ii]);
                s_check_act(k, x, n);
                // Odd lengths reach the float conversions' tails.
                if (k->act_type == MC_DTYPE_F16 || k->act_type == MC_DTYPE_BF16) s_check_act(k, x + 1, n - 27);
            }
    }
    free(x);
}

// Every fp16 and bf16 value, its neighbours and the rounding midpoints around
// it: the vector conversions must round (ties to even, subnormals, overflow
// to infinity) exactly like the scalar ones.
static void test_act_half_boundaries(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const int64_t per = 6, n = per * 65536;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int bf = 0; bf < 2; bf++) {
        for (uint32_t h = 0; h < 65536; h++) {
            const uint32_t base = bf ? h << 16 : mc_f32_bits(mc_fp16_to_fp32((uint16_t)h));
            const uint32_t half_step = bf ? 0x8000u : 0x1000u; // half a unit of the last place (normals)
            const uint32_t mid = base + half_step;
            const uint32_t v[6] = {base, base + 1, base - 1, mid, mid - 1, mid + 1};
            for (int k = 0; k < per; k++) x[per * h + k] = s_from_bits(v[k]);
        }
        for (size_t ii = 1; ii < n_isas; ii++)
            s_check_act(mc_kernel_get(bf ? MC_DTYPE_BF16 : MC_DTYPE_F16, isas[ii]), x, n);
    }
    free(x);
}

// A weight row with random quant bytes and fp16 scales (and mins) of either
// sign, with `wild`: anywhere from zero and subnormal to 60000, else of
// similar size (so that no block's float terms vanish in the sum, and their
// rounding shows in the result). Blocks are random, all zero, one repeated
// byte (the largest quants, large block sums) or random quants of one sign.
// Float types: values of any magnitude that cannot overflow a product.
static void s_wild_row(size_t ti, int64_t n, uint8_t *w, bool wild, uint64_t *rng) {
    const mc_dtype_t t = s_types[ti].wtype;
    const size_t bytes = mc_dtype_row_bytes(t, (uint64_t)n);
    if (t == MC_DTYPE_F32 || t == MC_DTYPE_F16 || t == MC_DTYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const float v = s_rng_gauss(rng) * powf(2.f, (float)(int)(s_rng_next(rng) % 40) - 20.f);
            const float f = i % 7 == 3 ? 0.f : v;
            if (t == MC_DTYPE_F32) {
                memcpy(w + 4 * i, &f, 4);
            } else {
                // Any finite half / bf16 bit pattern (bf16 kept within +-2^40).
                uint16_t h = (uint16_t)s_rng_next(rng);
                if (t == MC_DTYPE_F16 && (h & 0x7C00) == 0x7C00) h &= 0xBFFF;
                if (t == MC_DTYPE_BF16) h = (uint16_t)((h & 0x807F) | (uint16_t)(((h >> 7) & 0x3F) + 100) << 7);
                memcpy(w + 2 * i, &h, 2);
            }
        }
        return;
    }
    const mc_dtype_traits_t *tr = mc_dtype_traits(t);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)s_rng_next(rng);
    for (int64_t b = 0; b < n / tr->block_elems; b++) {
        uint8_t *blk = w + (size_t)b * tr->block_bytes;
        const uint8_t fill[] = {0xFF, 0x00, 0x7F, 0x80, 0xF0, 0x0F};
        switch (s_rng_next(rng) % 5) {
        case 0: memset(blk, 0, tr->block_bytes); continue;
        case 1:
        case 2: memset(blk, fill[s_rng_next(rng) % sizeof fill], tr->block_bytes); break;
        case 3: // random quants of one sign: sums with many significant bits
            for (size_t i = 0; i < tr->block_bytes; i++) blk[i] |= 0x88;
            break;
        default: break;
        }
        if (s_types[ti].e8m0) {
            // Any scale but NaN (the loader refuses 0xFF): the subnormal 0 and 1,
            // 2^-128 .. 2^72 (products with any fp16 activation scale and block
            // sum stay finite), or near 2^-7.
            const uint8_t e = (uint8_t)(s_rng_next(rng) % 201);
            blk[s_types[ti].off_d] = wild ? (s_rng_next(rng) % 4 == 0 ? (uint8_t)(s_rng_next(rng) % 2) : e)
                                          : (uint8_t)(118 + s_rng_next(rng) % 7);
            continue;
        }
        const int offs[2] = {s_types[ti].off_d, s_types[ti].off_m};
        for (int f = 0; f < 2; f++) {
            if (offs[f] < 0) continue;
            uint16_t h;
            switch (wild ? s_rng_next(rng) % 5 : 3) {
            case 0: h = mc_fp32_to_fp16(60000.f * s_rng_uniform(rng)); break;
            case 1: h = (uint16_t)(1 + s_rng_next(rng) % 0x3FF); break; // subnormal
            case 2: h = 0; break;
            default: h = mc_fp32_to_fp16(0.1f * s_rng_gauss(rng)); break;
            }
            memcpy(blk + offs[f], &h, 2);
        }
    }
}

// A valid activation row of random bytes: quants over the whole int8 range
// (-128 included), scales of any size; Q8_K bsums hold the quants' sums as
// the conversion guarantees.
static void s_wild_act(mc_dtype_t at, int64_t n, uint8_t *a, uint64_t *rng) {
    const size_t bytes = mc_dtype_row_bytes(at, (uint64_t)n);
    for (size_t i = 0; i < bytes; i++) a[i] = (uint8_t)s_rng_next(rng);
    if (at == MC_DTYPE_Q8_0 || at == MC_DTYPE_Q8_1) {
        const size_t bb = at == MC_DTYPE_Q8_0 ? sizeof(mc_block_q8_0_t) : sizeof(mc_block_q8_1_t);
        for (int64_t b = 0; b < n / MC_QK; b++) {
            s_put_half(a + (size_t)b * bb, s_rng_gauss(rng) * (s_rng_next(rng) & 1 ? 100.f : 0.01f));
            if (at == MC_DTYPE_Q8_1) s_put_half(a + (size_t)b * bb + 2, s_rng_gauss(rng) * 100.f);
        }
    } else if (at == MC_DTYPE_Q8_K) {
        for (int64_t b = 0; b < n / MC_QK_K; b++) {
            mc_block_q8_k_t y;
            memcpy(&y, a + (size_t)b * sizeof y, sizeof y);
            y.d = s_rng_gauss(rng) * 0.05f;
            for (int g = 0; g < MC_QK_K / 16; g++) {
                int sum = 0;
                for (int l = 0; l < 16; l++) sum += y.qs[16 * g + l];
                y.bsums[g] = (int16_t)sum;
            }
            memcpy(a + (size_t)b * sizeof y, &y, sizeof y);
        }
    } else {
        float *x = malloc((size_t)n * sizeof *x);
        assert_non_null(x);
        for (int64_t i = 0; i < n; i++) x[i] = s_rng_gauss(rng) * powf(2.f, (float)(int)(s_rng_next(rng) % 40) - 20.f);
        assert_int_equal(mc_quant_quantize_row(at, x, a, n), MC_OK);
        free(x);
    }
}

static void s_assert_same_float(float got, float want) {
    assert_memory_equal(&got, &want, sizeof got);
}

// dot (and dot4, when the table has one) of `isa` against the scalar dot on
// the same bytes, for 4 activation rows: converted from special input, from
// large positive values (large block sums), and two random.
static void s_check_same_dot(size_t ti, int64_t n, mc_isa_t isa, uint64_t *rng) {
    const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isa), *ref = mc_kernel_get(k->wtype, MC_ISA_SCALAR);
    const size_t wbytes = mc_dtype_row_bytes(k->wtype, (uint64_t)n);
    const size_t abytes = mc_kernel_act_bytes(k, n); // with k's side data
    const int64_t nx = (n + MC_QK_K - 1) / MC_QK_K * MC_QK_K;
    uint8_t *wbuf = malloc(wbytes + 1), *abuf = malloc(4 * (abytes + 3));
    float *x = malloc((size_t)nx * sizeof *x);
    assert_true(wbuf && abuf && x);
    // Odd offsets: rows in a file mapping, activation rows side by side.
    uint8_t *w = wbuf + 1;
    const void *a[4];
    s_wild_row(ti, n, w, s_rng_next(rng) & 1, rng);
    for (int c = 0; c < 4; c++) {
        uint8_t *ac = abuf + (size_t)c * (abytes + 3) + 1 + (size_t)c % 2;
        a[c] = ac;
        if (c < 2) {
            s_special_row(x, nx, c == 0 ? -1 : 8, rng);
            // Specials (inf, NaN) stay out of the dots: their NaN bits are not part of the contract.
            for (int64_t i = 0; i < n; i++)
                if (!isfinite(x[i]) || fabsf(x[i]) > 1e30f) x[i] = 1.f;
            ref->act(x, ac, n);
        } else {
            s_wild_act(k->act_type, n, ac, rng);
        }
        mc_kernel_prep(k, ac, n);
    }
    float want[4], got[4];
    for (int c = 0; c < 4; c++) {
        ref->dot(n, &want[c], w, a[c]);
        k->dot(n, &got[c], w, a[c]);
        s_assert_same_float(got[c], want[c]);
    }
    if (k->dot4) {
        memset(got, 0xFF, sizeof got);
        k->dot4(n, got, w, a);
        for (int c = 0; c < 4; c++) s_assert_same_float(got[c], want[c]);
    }
    free(wbuf);
    free(abuf);
    free(x);
}

static void test_dot_same_bits(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    for (size_t ii = 1; ii < n_isas; ii++) {
        uint64_t rng = 0xD1B54A32D192ED03ull;
        for (size_t ti = 0; ti < sizeof s_types / sizeof s_types[0]; ti++) {
            const int64_t unit = mc_dtype_traits(s_types[ti].wtype)->block_elems;
            if (unit == 1) {
                const int64_t lens[] = {1, 3, 15, 16, 17, 31, 100, 448, 4096};
                for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) s_check_same_dot(ti, lens[l], isas[ii], &rng);
                continue;
            }
            // Many one-block rows: there the result is the block's float term itself.
            const int64_t blocks[] = {1, 2, 3, 7, 16, 64};
            for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++)
                for (int rep = 0; rep < (b == 0 ? 100 : 3); rep++)
                    s_check_same_dot(ti, blocks[b] * unit, isas[ii], &rng);
        }
    }
}

// The 8-row product of a type with a repacked layout (Q4_0, Q8_0, Q4_K:
// dot8, on a repacked group and on 8 raw rows) against the scalar
// reference's dot on the raw rows, on every ISA that has it (the scalar dot8
// included): groups of 8 wild rows
// (zero, saturated, one-sign and subnormal-scaled blocks), 1..9 activation
// rows in dot8 calls of 1..4 (every tile and remainder a prompt makes),
// lengths of 1..64 blocks, outputs written with a stride. The raw dot is
// checked on the same rows by test_dot_same_bits; here also the rows of a
// matrix whose count is not a multiple of 8 (the tail that stays raw).
static void s_check_dot8(mc_dtype_t t) {
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    size_t ti = 0;
    while (s_types[ti].wtype != t) ti++;
    const mc_kernel_t *ref = mc_kernel_get(t, MC_ISA_SCALAR);
    assert_non_null(ref->dot8);
    assert_true(mc_kernel_repacks(t));
    enum { MAX_ROWS = 27, N_ACT = 9, STRIDE = 37 };
    uint64_t rng = 0x5851F42D4C957F2Dull ^ (uint64_t)t;
    const int64_t unit = mc_dtype_traits(t)->block_elems;
    const int64_t blocks[] = {1, 2, 3, 5, 8, 17, 64};
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        if (unit > MC_QK && blocks[bi] > 17) continue; // K-quants: up to 4352 values
        const int64_t n = blocks[bi] * unit;
        const size_t rb = mc_dtype_row_bytes(t, (uint64_t)n);
        for (uint32_t n_rows = 5; n_rows <= MAX_ROWS; n_rows += 11) { // 5, 16, 27: none, 2 groups, 3 + 3 tail
            uint8_t *wbuf = malloc(rb * n_rows + 1), *packed = malloc(8 * rb + 1);
            assert_true(wbuf && packed);
            uint8_t *w = wbuf + 1; // odd offset: a row in a file mapping
            for (uint32_t r = 0; r < n_rows; r++) s_wild_row(ti, n, w + (size_t)r * rb, s_rng_next(&rng) & 1, &rng);
            for (size_t ii = 0; ii < n_isas; ii++) {
                const mc_kernel_t *k = mc_kernel_get(t, isas[ii]);
                assert_non_null(k->dot8); // every ISA repacks the types with a layout
                const size_t ab = mc_kernel_act_bytes(k, n);
                uint8_t *abuf = malloc(N_ACT * (ab + 1));
                float *x = malloc((size_t)n * sizeof *x), *got = malloc(4 * STRIDE * sizeof *got);
                assert_true(abuf && x && got);
                const void *a[N_ACT];
                for (int c = 0; c < N_ACT; c++) {
                    uint8_t *ac = abuf + (size_t)c * (ab + 1) + (size_t)(c % 2);
                    a[c] = ac;
                    if (c % 3 == 0) {
                        s_wild_act(s_types[ti].act_type, n, ac, &rng);
                        mc_kernel_prep(k, ac, n);
                    } else {
                        // c = 5, 7: one sign, near the block maximum: block sums
                        // of 15 bits, whose products with a scale round.
                        for (int64_t i = 0; i < n; i++)
                            x[i] = c == 5 || c == 7 ? (c == 5 ? 1.f : -3.f) + 0.01f * s_rng_gauss(&rng)
                                                    : s_rng_gauss(&rng) * (c == 4 ? 1e4f : 1.f);
                        mc_kernel_act_row(k, x, ac, n);
                    }
                }
                // The raw dot of this ISA on every row (the tail rows' path).
                for (uint32_t r = 0; r < n_rows; r++)
                    for (int c = 0; c < N_ACT; c++) {
                        float want, have;
                        ref->dot(n, &want, w + (size_t)r * rb, a[c]);
                        k->dot(n, &have, w + (size_t)r * rb, a[c]);
                        s_assert_same_float(have, want);
                    }
                for (uint32_t g = 0; g + MC_Q4_0X8_ROWS <= n_rows; g += MC_Q4_0X8_ROWS) {
                    uint8_t *p = packed + (ii % 2); // aligned and not
                    mc_kernel_repack8(t, w + (size_t)g * rb, rb, n, p);
                    for (int na = 1; na <= 4; na++)
                        for (int c0 = 0; c0 < N_ACT; c0 += na) {
                            const int cnt = N_ACT - c0 < na ? N_ACT - c0 : na;
                            for (int raw = 0; raw < 2; raw++) { // the repacked group, then the raw rows
                                memset(got, 0xFF, 4 * STRIDE * sizeof *got);
                                if (raw)
                                    k->dot8(n, got, STRIDE, w + (size_t)g * rb, rb, &a[c0], cnt);
                                else
                                    k->dot8(n, got, STRIDE, p, 0, &a[c0], cnt);
                                for (int c = 0; c < cnt; c++)
                                    for (int r = 0; r < MC_Q4_0X8_ROWS; r++) {
                                        float want;
                                        ref->dot(n, &want, w + (size_t)(g + (uint32_t)r) * rb, a[c0 + c]);
                                        s_assert_same_float(got[c * STRIDE + r], want);
                                    }
                                // Nothing outside the 8 outputs of each row is written.
                                for (int c = 0; c < 4; c++)
                                    for (int r = c < cnt ? MC_Q4_0X8_ROWS : 0; r < STRIDE; r++) {
                                        uint32_t bits;
                                        memcpy(&bits, &got[c * STRIDE + r], sizeof bits);
                                        assert_int_equal(bits, 0xFFFFFFFFu);
                                    }
                            }
                        }
                }
                free(abuf);
                free(x);
                free(got);
            }
            free(wbuf);
            free(packed);
        }
    }
}

static void test_dot8_q4_0_same_bits(void **state) {
    (void)state;
    s_check_dot8(MC_DTYPE_Q4_0);
}

static void test_dot8_q8_0_same_bits(void **state) {
    (void)state;
    s_check_dot8(MC_DTYPE_Q8_0);
}

static void test_dot8_q4_k_same_bits(void **state) {
    (void)state;
    s_check_dot8(MC_DTYPE_Q4_K);
}

static void test_dot8_q5_k_same_bits(void **state) {
    (void)state;
    s_check_dot8(MC_DTYPE_Q5_K);
}

static void test_dot8_q6_k_same_bits(void **state) {
    (void)state;
    s_check_dot8(MC_DTYPE_Q6_K);
}

// The repacked layout is the rows' bytes rearranged (kernel.h): record b of
// a group holds block b's 8 scales, then bytes 4k..4k+3 of each row's quants.
static void test_repack_q4_0_layout(void **state) {
    (void)state;
    enum { NB = 3 };
    const size_t rb = NB * sizeof(mc_block_q4_0_t);
    uint8_t rows[8 * NB * sizeof(mc_block_q4_0_t)], out[NB * MC_Q4_0X8_BYTES];
    for (size_t i = 0; i < sizeof rows; i++) rows[i] = (uint8_t)(i * 7 + 3);
    mc_kernel_repack_q4_0x8(rows, rb, NB * MC_QK, out);
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * rb + (size_t)b * sizeof(mc_block_q4_0_t);
            const uint8_t *rec = out + (size_t)b * MC_Q4_0X8_BYTES;
            assert_memory_equal(rec + 2 * r, blk, 2);
            for (int k = 0; k < 4; k++) assert_memory_equal(rec + 16 + 32 * k + 4 * r, blk + 2 + 4 * k, 4);
        }
}

// Q8_0's, Q4_K's and Q6_K's layouts (kernel.h): the rows' bytes rearranged,
// Q4_K's 12 scale bytes per row re-encoded as 8 (scale, min) pairs of 6 bits.
static void test_repack_k_layouts(void **state) {
    (void)state;
    enum { NB = 2 };
    uint8_t rows[8 * NB * sizeof(mc_block_q6_k_t)], out[8 * NB * sizeof(mc_block_q6_k_t)];
    for (size_t i = 0; i < sizeof rows; i++) rows[i] = (uint8_t)(i * 13 + 5);
    size_t rb = NB * sizeof(mc_block_q8_0_t);
    mc_kernel_repack8(MC_DTYPE_Q8_0, rows, rb, NB * MC_QK, out);
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * rb + (size_t)b * sizeof(mc_block_q8_0_t);
            const uint8_t *rec = out + (size_t)b * MC_Q8_0X8_BYTES;
            assert_memory_equal(rec + 2 * r, blk, 2);
            for (int k = 0; k < 8; k++) assert_memory_equal(rec + 16 + 32 * k + 4 * r, blk + 2 + 4 * k, 4);
        }
    // Q4_K, then Q5_K: Q4_K's record from the same fields, then the qh bytes.
    _Static_assert(offsetof(mc_block_q4_k_t, d) == offsetof(mc_block_q5_k_t, d) &&
                       offsetof(mc_block_q4_k_t, dmin) == offsetof(mc_block_q5_k_t, dmin) &&
                       offsetof(mc_block_q4_k_t, scales) == offsetof(mc_block_q5_k_t, scales),
                   "K4 block heads");
    for (int five = 0; five <= 1; five++) {
        const size_t bx = five ? sizeof(mc_block_q5_k_t) : sizeof(mc_block_q4_k_t);
        const size_t qs_off = five ? offsetof(mc_block_q5_k_t, qs) : offsetof(mc_block_q4_k_t, qs);
        rb = NB * bx;
        mc_kernel_repack8(five ? MC_DTYPE_Q5_K : MC_DTYPE_Q4_K, rows, rb, NB * MC_QK_K, out);
        for (int b = 0; b < NB; b++)
            for (int r = 0; r < 8; r++) {
                const uint8_t *blk = rows + (size_t)r * rb + (size_t)b * bx;
                const uint8_t *rec = out + (size_t)b * (five ? MC_Q5_KX8_BYTES : MC_Q4_KX8_BYTES),
                              *sc = blk + offsetof(mc_block_q4_k_t, scales);
                if (five)
                    for (int k = 0; k < 8; k++)
                        assert_memory_equal(rec + 1152 + 32 * k + 4 * r, blk + offsetof(mc_block_q5_k_t, qh) + 4 * k, 4);
                assert_memory_equal(rec + 2 * r, blk + offsetof(mc_block_q4_k_t, d), 2);
                assert_memory_equal(rec + 16 + 2 * r, blk + offsetof(mc_block_q4_k_t, dmin), 2);
                for (int j = 0; j < 8; j++) {
                    // quant.c's 6-bit packing, decoded independently of kernel.c.
                    const int want_sc = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | (sc[j - 4] >> 6) << 4;
                    const int want_m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | (sc[j] >> 6) << 4;
                    const int i = 8 * j + r, hi = rec[96 + i % 32] >> (i < 32 ? 0 : 4);
                    assert_int_equal((rec[32 + i] & 0xF) | (hi & 3) << 4, want_sc);
                    assert_int_equal((rec[32 + i] >> 4) | ((hi >> 2) & 3) << 4, want_m);
                }
                for (int c = 0; c < 4; c++)
                    for (int k = 0; k < 8; k++)
                        assert_memory_equal(rec + 128 + 32 * (8 * c + k) + 4 * r, blk + qs_off + 32 * c + 4 * k, 4);
            }
    }
    rb = NB * sizeof(mc_block_q6_k_t);
    mc_kernel_repack8(MC_DTYPE_Q6_K, rows, rb, NB * MC_QK_K, out);
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows + (size_t)r * rb + (size_t)b * sizeof(mc_block_q6_k_t);
            const uint8_t *rec = out + (size_t)b * MC_Q6_KX8_BYTES;
            assert_memory_equal(rec + 2 * r, blk + offsetof(mc_block_q6_k_t, d), 2);
            for (int g = 0; g < 16; g++) assert_int_equal(rec[16 + 8 * g + r], blk[offsetof(mc_block_q6_k_t, scales) + g]);
            for (int h = 0; h < 2; h++) {
                for (int k = 0; k < 16; k++)
                    assert_memory_equal(rec + 144 + 32 * (16 * h + k) + 4 * r,
                                        blk + offsetof(mc_block_q6_k_t, ql) + 64 * h + 4 * k, 4);
                for (int k = 0; k < 8; k++)
                    assert_memory_equal(rec + 1168 + 32 * (8 * h + k) + 4 * r,
                                        blk + offsetof(mc_block_q6_k_t, qh) + 32 * h + 4 * k, 4);
            }
        }
}

// Q8_0 rows whose activation holds -128 where the weight is negative: the
// one product a sign-flipping SIMD kernel cannot form in a byte.
static void test_dot_q8_0_min_byte(void **state) {
    (void)state;
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    const int64_t n = 9 * MC_QK;
    mc_block_q8_0_t w[9], y[4][9];
    for (int b = 0; b < 9; b++) {
        w[b].d = mc_fp32_to_fp16(0.5f + (float)b);
        for (int c = 0; c < 4; c++) y[c][b].d = mc_fp32_to_fp16(0.25f * (float)(c + 1));
        for (int j = 0; j < MC_QK; j++) {
            w[b].qs[j] = (int8_t)(j % 2 ? -128 : -1 - j);
            // Rows 0-2 hold -128 (row 2 only in its last block), row 3 does not.
            for (int c = 0; c < 4; c++) {
                const int v = (j + b + c) % 3 ? -128 : 127;
                y[c][b].qs[j] = (int8_t)(c == 3 ? (v == 127 ? 127 : -127) : c == 2 && b < 8 ? 5 - j : v);
            }
        }
    }
    const mc_kernel_t *ref = mc_kernel_get(MC_DTYPE_Q8_0, MC_ISA_SCALAR);
    for (size_t ii = 1; ii < n_isas; ii++) {
        const mc_kernel_t *k = mc_kernel_get(MC_DTYPE_Q8_0, isas[ii]);
        // The rows as k reads them: with its side data (which flags the -128s).
        const size_t abytes = mc_kernel_act_bytes(k, n);
        uint8_t *abuf = malloc(4 * abytes);
        assert_non_null(abuf);
        const void *a[4];
        for (int c = 0; c < 4; c++) {
            memcpy(abuf + (size_t)c * abytes, y[c], sizeof y[c]);
            mc_kernel_prep(k, abuf + (size_t)c * abytes, n);
            a[c] = abuf + (size_t)c * abytes;
        }
        float want[4], got[4];
        for (int c = 0; c < 4; c++) {
            ref->dot(n, &want[c], w, a[c]);
            k->dot(n, &got[c], w, a[c]);
            s_assert_same_float(got[c], want[c]);
        }
        if (k->dot4) {
            k->dot4(n, got, w, a);
            for (int c = 0; c < 4; c++) s_assert_same_float(got[c], want[c]);
        }
        if (k->dot8) { // 8 copies of the row, repacked: every lane meets the -128s
            uint8_t rows8[8 * sizeof w], packed[8 * sizeof w];
            for (int r = 0; r < 8; r++) memcpy(rows8 + (size_t)r * sizeof w, w, sizeof w);
            mc_kernel_repack8(MC_DTYPE_Q8_0, rows8, sizeof w, n, packed);
            float got8[4 * 8];
            for (int na = 1; na <= 4; na++) {
                k->dot8(n, got8, 8, packed, 0, a, na);
                for (int c = 0; c < na; c++)
                    for (int r = 0; r < 8; r++) s_assert_same_float(got8[c * 8 + r], want[c]);
            }
        }
        free(abuf);
    }
}

static void test_table(void **state) {
    (void)state;
    const mc_isa_t isas[] = {MC_ISA_SCALAR,   MC_ISA_AVX2,         MC_ISA_AVX_VNNI,
                             MC_ISA_NEON,     MC_ISA_NEON_DOTPROD, MC_ISA_BEST};
    const mc_isa_t best = mc_kernel_best_isa();
    assert_true(best != MC_ISA_BEST);
    for (size_t ti = 0; ti < sizeof s_types / sizeof s_types[0]; ti++) {
        for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
            const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isas[i]);
            assert_non_null(k);
            assert_int_equal(k->wtype, s_types[ti].wtype);
            assert_int_equal(k->act_type, s_types[ti].act_type);
            assert_true(k->act && k->dot);
            assert_true(!k->prep == !k->prep_bytes);
            const mc_isa_t want = isas[i] == MC_ISA_BEST ? best : isas[i];
            assert_true(k->isa == want || k->isa == MC_ISA_SCALAR);
        }
        assert_int_equal(mc_kernel_get(s_types[ti].wtype, MC_ISA_SCALAR)->isa, MC_ISA_SCALAR);
        // The scalar table has no dot4: callers loop over dot.
        assert_null(mc_kernel_get(s_types[ti].wtype, MC_ISA_SCALAR)->dot4);
        // The repacked product exists on every ISA (scalar, AVX2, AVX-VNNI,
        // NEON, NEON dotprod) for exactly the types with a layout: a matrix is
        // repacked only where its kernel has dot8.
        for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
            const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isas[i]);
            const mc_dtype_t t = s_types[ti].wtype;
            assert_true(mc_kernel_repacks(t) == (t == MC_DTYPE_Q4_0 || t == MC_DTYPE_Q8_0 || t == MC_DTYPE_Q4_K ||
                                                 t == MC_DTYPE_Q5_K || t == MC_DTYPE_Q6_K));
            if (!mc_kernel_repacks(t)) assert_null(k->dot8);
            assert_true(!k->dot8 == !mc_kernel_repacks(t));
        }
    }
    // The batched products of the benchmark types and the Q4_K_M mix have dot4 wherever SIMD runs.
    const mc_dtype_t batched[] = {MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, MC_DTYPE_Q4_K, MC_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof batched / sizeof batched[0]; i++) {
        for (mc_isa_t isa = MC_ISA_AVX2; isa < MC_ISA_BEST; isa++)
            if (mc_kernel_get(batched[i], isa)->isa == isa) assert_non_null(mc_kernel_get(batched[i], isa)->dot4);
    }
    // Activation-only and unknown types have no kernel.
    const uint32_t none[] = {MC_DTYPE_Q8_1, MC_DTYPE_Q8_K, 4, 5, 16, 29, 99, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        assert_null(mc_kernel_get((mc_dtype_t)none[i], MC_ISA_SCALAR));
        assert_null(mc_kernel_get((mc_dtype_t)none[i], MC_ISA_BEST));
    }
    assert_string_equal(mc_kernel_isa_name(MC_ISA_SCALAR), "scalar");
    assert_string_equal(mc_kernel_isa_name(MC_ISA_AVX2), "avx2");
    assert_string_equal(mc_kernel_isa_name(MC_ISA_NEON), "neon");
    assert_string_equal(mc_kernel_isa_name(MC_ISA_NEON_DOTPROD), "neon-dotprod");
    assert_string_equal(mc_kernel_isa_name(MC_ISA_AVX_VNNI), "avx-vnni");
    assert_string_equal(mc_kernel_isa_name((mc_isa_t)42), "?");
}

// MC_ISA picks a lower ISA than the best; what the CPU cannot run, or an
// unknown name, leaves the best. An ISA the CPU lacks is never handed out.
static void test_isa_env(void **state) {
    (void)state;
    char saved[64] = "";
    const char *env = getenv("MC_ISA");
    if (env) snprintf(saved, sizeof saved, "%s", env);
    assert_int_equal(unsetenv("MC_ISA"), 0);
    const mc_isa_t best = mc_kernel_best_isa();
#if defined(__x86_64__)
    unsigned a, b, c, d;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    const bool vnni = avx2 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
    assert_int_equal(best, vnni ? MC_ISA_AVX_VNNI : avx2 ? MC_ISA_AVX2 : MC_ISA_SCALAR);
    assert_int_equal(mc_kernel_get(MC_DTYPE_Q4_0, MC_ISA_NEON)->isa, MC_ISA_SCALAR);
    assert_int_equal(mc_kernel_get(MC_DTYPE_Q4_0, MC_ISA_NEON_DOTPROD)->isa, MC_ISA_SCALAR);
#elif defined(__aarch64__)
    assert_true(best == MC_ISA_NEON || best == MC_ISA_NEON_DOTPROD);
    assert_int_equal(mc_kernel_get(MC_DTYPE_Q4_0, MC_ISA_AVX2)->isa, MC_ISA_SCALAR);
    assert_int_equal(mc_kernel_get(MC_DTYPE_Q4_0, MC_ISA_AVX_VNNI)->isa, MC_ISA_SCALAR);
#endif
    mc_isa_t isas[MC_ISA_BEST];
    const size_t n_isas = s_isas(isas);
    for (size_t i = 0; i < n_isas; i++) {
        assert_int_equal(setenv("MC_ISA", mc_kernel_isa_name(isas[i]), 1), 0);
        assert_int_equal(mc_kernel_best_isa(), isas[i]);
        assert_int_equal(mc_kernel_get(MC_DTYPE_Q4_0, MC_ISA_BEST)->isa, isas[i]);
    }
    const char *ignored[] = {"bogus", "", "AVX2", "best"};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        assert_int_equal(setenv("MC_ISA", ignored[i], 1), 0);
        assert_int_equal(mc_kernel_best_isa(), best);
    }
    if (env)
        assert_int_equal(setenv("MC_ISA", saved, 1), 0);
    else
        assert_int_equal(unsetenv("MC_ISA"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_all_types),
        cmocka_unit_test(test_dot_extremes),
        cmocka_unit_test(test_act_same_bits),
        cmocka_unit_test(test_act_half_boundaries),
        cmocka_unit_test(test_dot_same_bits),
        cmocka_unit_test(test_dot_q8_0_min_byte),
        cmocka_unit_test(test_dot8_q4_0_same_bits),
        cmocka_unit_test(test_dot8_q8_0_same_bits),
        cmocka_unit_test(test_dot8_q4_k_same_bits),
        cmocka_unit_test(test_dot8_q5_k_same_bits),
        cmocka_unit_test(test_dot8_q6_k_same_bits),
        cmocka_unit_test(test_repack_q4_0_layout),
        cmocka_unit_test(test_repack_k_layouts),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_attn_same_bits),
        cmocka_unit_test(test_attn_f16_same_bits),
        cmocka_unit_test(test_kv_f16_conversion),
        cmocka_unit_test(test_isa_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
