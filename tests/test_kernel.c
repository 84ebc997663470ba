/*
 * test_kernel: every weight type's dot product against a double-precision dot
 * of the dequantized operands, the activation conversions, and the kernel
 * table lookup.
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

#include "kernel.h"
#include "quant.h"

static uint64_t s_rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
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
} s_types[] = {
    {MC_DTYPE_F32, MC_DTYPE_F32, -1, -1, false},
    {MC_DTYPE_F16, MC_DTYPE_F16, -1, -1, false},
    {MC_DTYPE_BF16, MC_DTYPE_BF16, -1, -1, false},
    {MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, offsetof(mc_block_q4_0_t, d), -1, false},
    {MC_DTYPE_Q4_1, MC_DTYPE_Q8_1, offsetof(mc_block_q4_1_t, d), offsetof(mc_block_q4_1_t, m), true},
    {MC_DTYPE_Q5_0, MC_DTYPE_Q8_0, offsetof(mc_block_q5_0_t, d), -1, false},
    {MC_DTYPE_Q5_1, MC_DTYPE_Q8_1, offsetof(mc_block_q5_1_t, d), offsetof(mc_block_q5_1_t, m), true},
    {MC_DTYPE_Q8_0, MC_DTYPE_Q8_0, offsetof(mc_block_q8_0_t, d), -1, false},
    {MC_DTYPE_Q2_K, MC_DTYPE_Q8_K, offsetof(mc_block_q2_k_t, d), offsetof(mc_block_q2_k_t, dmin), false},
    {MC_DTYPE_Q3_K, MC_DTYPE_Q8_K, offsetof(mc_block_q3_k_t, d), -1, false},
    {MC_DTYPE_Q4_K, MC_DTYPE_Q8_K, offsetof(mc_block_q4_k_t, d), offsetof(mc_block_q4_k_t, dmin), false},
    {MC_DTYPE_Q5_K, MC_DTYPE_Q8_K, offsetof(mc_block_q5_k_t, d), offsetof(mc_block_q5_k_t, dmin), false},
    {MC_DTYPE_Q6_K, MC_DTYPE_Q8_K, offsetof(mc_block_q6_k_t, d), -1, false},
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

static void s_check_dot(size_t ti, int64_t n, uint64_t *rng) {
    const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, MC_ISA_SCALAR);
    assert_non_null(k);
    const size_t wbytes = mc_dtype_row_bytes(k->wtype, (uint64_t)n);
    const size_t abytes = mc_dtype_row_bytes(k->act_type, (uint64_t)n);
    assert_true(wbytes > 0 && abytes > 0);
    // Odd offsets: rows in a file mapping (and, here, activations) are unaligned.
    uint8_t *wbuf = malloc(wbytes + 1), *abuf = malloc(abytes + 3), *aref = malloc(abytes);
    float *x = malloc((size_t)n * sizeof *x);
    assert_true(wbuf && abuf && aref && x);
    uint8_t *w = wbuf + 1, *a = abuf + 3;
    s_random_row(ti, n, w, rng);
    for (int64_t i = 0; i < n; i++) x[i] = s_rng_gauss(rng) * (1.f + (float)(i % 3));

    k->act(x, a, n);
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

static void test_dot_all_types(void **state) {
    (void)state;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (size_t ti = 0; ti < sizeof s_types / sizeof s_types[0]; ti++) {
        const int64_t unit = mc_dtype_traits(s_types[ti].wtype)->block_elems;
        const int64_t blocks[] = {1, 2, 7};
        for (size_t b = 0; b < 3; b++)
            for (int rep = 0; rep < 4; rep++) s_check_dot(ti, blocks[b] * unit, &rng);
        if (unit == 1) s_check_dot(ti, 448, &rng); // float types: a realistic length too
    }
}

// Extreme quants: all-ones bytes give the largest quants, scales and 6-bit
// fields, and equal activations all quantize to +-127, so the per-block integer
// sums reach their largest magnitude and must not overflow.
static void test_dot_extremes(void **state) {
    (void)state;
    for (size_t ti = 3; ti < sizeof s_types / sizeof s_types[0]; ti++) {
        const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, MC_ISA_SCALAR);
        const mc_dtype_traits_t *tr = mc_dtype_traits(k->wtype);
        const int64_t n = 7 * (int64_t)tr->block_elems;
        const size_t wbytes = mc_dtype_row_bytes(k->wtype, (uint64_t)n);
        uint8_t *w = malloc(wbytes), *a = malloc(mc_dtype_row_bytes(k->act_type, (uint64_t)n));
        float *x = malloc((size_t)n * sizeof *x);
        assert_true(w && a && x);
        memset(w, 0xFF, wbytes);
        for (int64_t b = 0; b < n / tr->block_elems; b++) {
            s_put_half(w + (size_t)b * tr->block_bytes + s_types[ti].off_d, 0.01f);
            if (s_types[ti].off_m >= 0) s_put_half(w + (size_t)b * tr->block_bytes + s_types[ti].off_m, 0.01f);
        }
        for (int64_t i = 0; i < n; i++) x[i] = 1.f;
        k->act(x, a, n);
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
}

static void test_table(void **state) {
    (void)state;
    const mc_isa_t isas[] = {MC_ISA_SCALAR, MC_ISA_AVX2, MC_ISA_NEON, MC_ISA_NEON_DOTPROD, MC_ISA_BEST};
    const mc_isa_t best = mc_kernel_best_isa();
    assert_true(best != MC_ISA_BEST);
    for (size_t ti = 0; ti < sizeof s_types / sizeof s_types[0]; ti++) {
        for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
            const mc_kernel_t *k = mc_kernel_get(s_types[ti].wtype, isas[i]);
            assert_non_null(k);
            assert_int_equal(k->wtype, s_types[ti].wtype);
            assert_int_equal(k->act_type, s_types[ti].act_type);
            assert_true(k->act && k->dot);
            const mc_isa_t want = isas[i] == MC_ISA_BEST ? best : isas[i];
            assert_true(k->isa == want || k->isa == MC_ISA_SCALAR);
        }
        assert_int_equal(mc_kernel_get(s_types[ti].wtype, MC_ISA_SCALAR)->isa, MC_ISA_SCALAR);
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
    assert_string_equal(mc_kernel_isa_name((mc_isa_t)42), "?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_all_types),
        cmocka_unit_test(test_dot_extremes),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
