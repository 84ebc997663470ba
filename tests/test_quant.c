/*
 * test_quant: block layouts, fp16/bf16 conversions, activation quantization
 * and quantizer round-trip error, checked against hand-computed values and
 * against tensors written by llama.cpp's own llama-quantize (fixtures).
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

#include "quant.h"
#include "testutil.h"

// --- helpers ---------------------------------------------------------------------

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

static float *s_dequant(mc_dtype_t type, const void *src, int64_t n) {
    float *y = malloc((size_t)n * sizeof *y);
    assert_non_null(y);
    assert_int_equal(mc_quant_dequantize_row(type, src, y, n), MC_OK);
    return y;
}

static void s_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

#ifdef __FLT16_MAX__
// The compiler's own half type (software-rounded on x86 without AVX512-FP16)
// is an independent oracle for the conversions.
__extension__ typedef _Float16 s_f16_t;
#endif

// --- fp16 / bf16 ---------------------------------------------------------------------

static void test_fp16_roundtrip_all(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        const float f = mc_fp16_to_fp32((uint16_t)h);
        const bool nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu);
        if (nan) {
            assert_true(isnan(f));
            assert_true(isnan(mc_fp16_to_fp32(mc_fp32_to_fp16(f))));
            continue;
        }
        assert_int_equal(mc_fp32_to_fp16(f), h);
#ifdef __FLT16_MAX__
        s_f16_t g;
        const uint16_t hb = (uint16_t)h;
        memcpy(&g, &hb, 2);
        assert_true((float)g == f && signbit((float)g) == signbit(f));
#endif
    }
}

static void test_fp16_values(void **state) {
    (void)state;
    const struct { float f; uint16_t h; } cases[] = {
        {1.0f, 0x3C00}, {-2.0f, 0xC000}, {0.0f, 0x0000}, {-0.0f, 0x8000},
        {65504.0f, 0x7BFF}, {65519.99f, 0x7BFF}, {65520.0f, 0x7C00}, {1e9f, 0x7C00},
        {INFINITY, 0x7C00}, {-INFINITY, 0xFC00},
        {0x1p-24f, 0x0001},         // smallest subnormal
        {0x1p-25f, 0x0000},         // half of it: tie, rounds to even (zero)
        {0x1.8p-25f, 0x0001},       // above the tie
        {0x1.8p-24f, 0x0002},       // 1.5 ulp: tie between 1 and 2, even is 2
        {0x1.4p-23f, 0x0002},       // 2.5 ulp: tie between 2 and 3, even is 2
        {0x1.ff8p-15f, 0x03FF},     // largest subnormal
        {0x1.ffcp-15f, 0x0400},     // ... + half ulp: tie, rounds to even (smallest normal)
        {1.0f + 0x1p-11f, 0x3C00},  // tie, stays even
        {1.0f + 0x3p-11f, 0x3C02},  // tie, rounds up to even
        {1.0f + 0x1.001p-11f, 0x3C01},
        {-1.0f - 0x3p-11f, 0xBC02},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) assert_int_equal(mc_fp32_to_fp16(cases[i].f), cases[i].h);
    const uint16_t nan = mc_fp32_to_fp16(NAN);
    assert_true((nan & 0x7C00u) == 0x7C00u && (nan & 0x3FFu));
#ifdef __FLT16_MAX__
    // Random floats over the whole half range, including subnormals and ties.
    uint64_t rng = 7;
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)s_rng_next(&rng);
        const uint32_t e = 100u + (bits >> 24) % 48u; // exponents around the half range
        bits = (bits & 0x80000000u) | (e << 23) | (bits & 0x7FFFFFu);
        if (i % 4 == 0) bits &= ~0xFFFu; // exact ties and near-ties at the 13 dropped bits
        float f;
        memcpy(&f, &bits, 4);
        const s_f16_t g = (s_f16_t)f;
        uint16_t hb;
        memcpy(&hb, &g, 2);
        assert_int_equal(mc_fp32_to_fp16(f), hb);
    }
#endif
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        const float f = mc_bf16_to_fp32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(mc_bf16_to_fp32(mc_fp32_to_bf16(f))));
            continue;
        }
        assert_int_equal(mc_fp32_to_bf16(f), h);
    }
    const struct { uint32_t f; uint16_t h; } cases[] = {
        {0x3F800000u, 0x3F80}, {0x3F808000u, 0x3F80}, // tie, even stays
        {0x3F818000u, 0x3F82},                         // tie, rounds up to even
        {0x3F808001u, 0x3F81}, {0xBF80FFFFu, 0xBF81},
        {0x7F7FFFFFu, 0x7F80},                         // rounds to infinity
        {0x00000001u, 0x0000}, {0x00018000u, 0x0002},  // subnormals
        {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(mc_fp32_to_bf16(mc_f32_from_bits(cases[i].f)), cases[i].h);
    const uint16_t nan = mc_fp32_to_bf16(mc_f32_from_bits(0x7F800001u)); // signalling NaN stays NaN
    assert_true((nan & 0x7F80u) == 0x7F80u && (nan & 0x7Fu));
}

// --- dequantization of hand-built blocks ----------------------------------------------

static void test_dequant_float_types(void **state) {
    (void)state;
    uint8_t raw[9];
    s_put16(raw + 1, 0x3C00); // 1.0 in both formats' view below
    s_put16(raw + 3, 0xC500); // fp16 -5.0
    s_put16(raw + 5, 0x0001); // fp16 smallest subnormal
    s_put16(raw + 7, 0x7C00); // fp16 inf
    float y[4];
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_F16, raw + 1, y, 4), MC_OK); // odd address
    assert_true(y[0] == 1.0f && y[1] == -5.0f && y[2] == 0x1p-24f && isinf(y[3]));
    s_put16(raw + 1, 0x3F80); // bf16 1.0
    s_put16(raw + 3, 0xC0A0); // bf16 -5.0
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_BF16, raw + 1, y, 2), MC_OK);
    assert_true(y[0] == 1.0f && y[1] == -5.0f);
    const float v = -3.25f;
    memcpy(raw + 1, &v, 4);
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_F32, raw + 1, y, 1), MC_OK);
    assert_true(y[0] == -3.25f);
}

static void test_dequant_q4_0(void **state) {
    (void)state;
    mc_block_q4_0_t b;
    memset(&b, 0, sizeof b);
    b.d = 0xB800; // -0.5
    b.qs[0] = 0x1F;
    b.qs[5] = 0x80;
    float *y = s_dequant(MC_DTYPE_Q4_0, &b, 32);
    assert_true(y[0] == -3.5f);  // (15 - 8) * -0.5
    assert_true(y[16] == 3.5f);  // (1 - 8) * -0.5
    assert_true(y[5] == 4.0f);   // (0 - 8) * -0.5
    assert_true(y[21] == 0.0f);  // (8 - 8)
    assert_true(y[1] == 4.0f && y[31] == 4.0f);
    free(y);
}

// E8M0 scale 127 is 2^0; halved it meets the doubled table: values are the
// E2M1 grid itself. 0 and 1 are subnormal scales, 0xFE the largest.
static void test_dequant_mxfp4(void **state) {
    (void)state;
    assert_true(mc_e8m0_to_fp32_half(127) == 0.5f);
    assert_true(mc_e8m0_to_fp32_half(128) == 1.0f);
    assert_true(mc_e8m0_to_fp32_half(2) == ldexpf(1.f, -126));     // the smallest normal
    assert_true(mc_e8m0_to_fp32_half(1) == ldexpf(1.f, -127));     // subnormal
    assert_true(mc_e8m0_to_fp32_half(0) == ldexpf(1.f, -128));     // subnormal
    assert_true(mc_e8m0_to_fp32_half(0xFE) == ldexpf(1.f, 126));
    assert_true(mc_e8m0_to_fp32_half(0xFF) == ldexpf(1.f, 127));   // ggml's value for the NaN byte
    mc_block_mxfp4_t b;
    memset(&b, 0, sizeof b);
    b.e = 127;
    b.qs[0] = 0xF7; // value 0: code 7 = +6, value 16: code 15 = -6
    b.qs[1] = 0x91; // +0.5, -0.5
    b.qs[2] = 0x3A; // code 10 = -1, code 3 = +1.5
    b.qs[3] = 0x8C; // code 12 = -2, code 8 = (-)0
    b.qs[15] = 0xD5; // code 5 = +3 (value 15), code 13 = -3 (value 31)
    float *y = s_dequant(MC_DTYPE_MXFP4, &b, 32);
    assert_true(y[0] == 6.f && y[16] == -6.f);
    assert_true(y[1] == 0.5f && y[17] == -0.5f);
    assert_true(y[2] == -1.f && y[18] == 1.5f);
    assert_true(y[3] == -2.f && y[19] == 0.f && !signbit(y[19])); // the table's -0 is the integer 0
    assert_true(y[15] == 3.f && y[31] == -3.f);
    assert_true(y[4] == 0.f && y[30] == 0.f);
    free(y);
    // Two blocks at an odd address: the second scales by 2^-128 (subnormal).
    uint8_t two[1 + 2 * sizeof b];
    b.e = 0;
    memcpy(two + 1 + sizeof b, &b, sizeof b);
    b.e = 129; // 2^2 / 2 = 2: values twice the doubled table
    memcpy(two + 1, &b, sizeof b);
    y = s_dequant(MC_DTYPE_MXFP4, two + 1, 64);
    assert_true(y[0] == 24.f && y[16] == -24.f && y[17] == -2.f);
    assert_true(y[32] == 12.f * ldexpf(1.f, -128) && y[48] == -12.f * ldexpf(1.f, -128));
    assert_true(y[33] == ldexpf(1.f, -128)); // code 1 at the smallest scale: 2^-128
    free(y);
}

static void test_dequant_q4_1(void **state) {
    (void)state;
    mc_block_q4_1_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; // 0.25
    b.m = 0xBC00; // -1
    b.qs[2] = 0xF3;
    float *y = s_dequant(MC_DTYPE_Q4_1, &b, 32);
    assert_true(y[2] == -0.25f); // 3 * 0.25 - 1
    assert_true(y[18] == 2.75f); // 15 * 0.25 - 1
    assert_true(y[0] == -1.0f && y[31] == -1.0f);
    free(y);
}

static void test_dequant_q5_0(void **state) {
    (void)state;
    mc_block_q5_0_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800; // 0.5
    const uint8_t qh[4] = {0x01, 0x00, 0x04, 0x80}; // bits 0, 18, 31
    memcpy(b.qh, qh, 4);
    b.qs[0] = 0x2F;
    b.qs[2] = 0x30;
    b.qs[15] = 0xE0;
    float *y = s_dequant(MC_DTYPE_Q5_0, &b, 32);
    assert_true(y[0] == 7.5f);   // (15 | 16) - 16 = 15
    assert_true(y[16] == -7.0f); // 2 - 16
    assert_true(y[2] == -8.0f);  // 0 - 16
    assert_true(y[18] == 1.5f);  // (3 | 16) - 16
    assert_true(y[15] == -8.0f);
    assert_true(y[31] == 7.0f);  // (14 | 16) - 16
    free(y);
}

static void test_dequant_q5_1(void **state) {
    (void)state;
    mc_block_q5_1_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3000; // 0.125
    b.m = 0x3800; // 0.5
    b.qh[2] = 0x01; // bit 16
    b.qs[0] = 0x5A;
    float *y = s_dequant(MC_DTYPE_Q5_1, &b, 32);
    assert_true(y[0] == 1.75f);   // 10 * 0.125 + 0.5
    assert_true(y[16] == 3.125f); // (5 | 16) * 0.125 + 0.5
    assert_true(y[1] == 0.5f);
    free(y);
}

static void test_dequant_q8(void **state) {
    (void)state;
    mc_block_q8_0_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3A00; // 0.75
    b.qs[0] = -128;
    b.qs[31] = 127;
    b.qs[7] = -3;
    float *y = s_dequant(MC_DTYPE_Q8_0, &b, 32);
    assert_true(y[0] == -96.0f && y[31] == 95.25f && y[7] == -2.25f && y[1] == 0.0f);
    free(y);

    mc_block_q8_1_t b1;
    memset(&b1, 0, sizeof b1);
    b1.d = 0x3800;
    b1.s = 0x7C00; // s is not part of the values
    b1.qs[3] = -7;
    y = s_dequant(MC_DTYPE_Q8_1, &b1, 32);
    assert_true(y[3] == -3.5f && y[0] == 0.0f);
    free(y);

    mc_block_q8_k_t bk;
    memset(&bk, 0, sizeof bk);
    bk.d = 0.25f;
    bk.qs[200] = -100;
    bk.qs[0] = 127;
    bk.bsums[0] = 999; // ignored by the values
    y = s_dequant(MC_DTYPE_Q8_K, &bk, 256);
    assert_true(y[200] == -25.0f && y[0] == 31.75f && y[1] == 0.0f);
    free(y);
}

static void test_dequant_q2_k(void **state) {
    (void)state;
    mc_block_q2_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800;    // 0.5
    b.dmin = 0x3400; // 0.25
    b.scales[0] = 0x3A;  // scale 10, min 3
    b.scales[10] = 0xF1; // scale 1, min 15
    b.scales[15] = 0x0F; // scale 15, min 0
    b.qs[0] = 0x02;      // value 0: q = 2
    b.qs[42] = 0x0C;     // value 170 = half 1, slice 1 (bits 2-3), group 0, l 10: q = 3
    b.qs[63] = 0x40;     // value 255 = half 1, slice 3 (bits 6-7), group 1, l 15: q = 1
    float *y = s_dequant(MC_DTYPE_Q2_K, &b, 256);
    assert_true(y[0] == 9.25f);    // 0.5*10*2 - 0.25*3
    assert_true(y[1] == -0.75f);   // q = 0
    assert_true(y[170] == -2.25f); // 0.5*1*3 - 0.25*15
    assert_true(y[255] == 7.5f);   // 0.5*15*1
    assert_true(y[16] == 0.0f);    // scales[1] == 0
    free(y);
}

static void test_dequant_q3_k(void **state) {
    (void)state;
    mc_block_q3_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; // 0.25
    // Scale 13 = 25: stored 57 = 0b11'1001, low nibble in the high half of
    // byte 5, high bits in bits 6-7 of byte 9. Scale 2 = -31: stored 1.
    b.scales[5] = 0x90;
    b.scales[9] = 0xC0;
    b.scales[2] = 0x01;
    // Value 210 = half 1, slice 2 (bits 4-5), group 1, l 2 -> qs[50], hmask[18] bit 6.
    b.qs[50] = 0x30; // q = 3, hmask bit clear: 3 - 4 = -1
    b.qs[51] = 0x10; // value 211: q = 1 with hmask bit set
    b.hmask[19] = 0x40;
    // Value 35 = half 0, slice 1 (bits 2-3), group 0, l 3 -> qs[3], hmask[3] bit 1.
    b.qs[3] = 0x08; // q = 2
    b.hmask[3] = 0x02;
    float *y = s_dequant(MC_DTYPE_Q3_K, &b, 256);
    assert_true(y[210] == -6.25f); // 0.25 * 25 * -1
    assert_true(y[211] == 6.25f);  // 0.25 * 25 * 1
    assert_true(y[35] == -15.5f);  // 0.25 * -31 * 2
    assert_true(y[36] == 31.0f);   // 0.25 * -31 * -4
    assert_true(y[0] == 32.0f);    // scale 0 stored 0: -32; q = -4
    assert_true(y[240] == 32.0f);  // scale 15 stored 0: -32; q = -4
    free(y);
}

static void test_dequant_q4_k(void **state) {
    (void)state;
    mc_block_q4_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800;    // 0.5
    b.dmin = 0x3400; // 0.25
    // Sub-block 0: scale 7, min 3; sub-block 4: scale 17 (1 | 1 << 4), min 2;
    // sub-block 5: scale 45 (0b10'1101), min 37 (0b10'0101).
    b.scales[0] = 0x47; // scale 0 = 7, top bits = high bits of scale 4 (1)
    b.scales[4] = 0x03; // min 0 = 3
    b.scales[8] = 0x21; // scale 4 low nibble 1, min 4 low nibble 2
    b.scales[1] = 0x80; // scale 1 = 0, top bits = high bits of scale 5 (2)
    b.scales[5] = 0x80; // min 1 = 0, top bits = high bits of min 5 (2)
    b.scales[9] = 0x5D; // scale 5 low nibble 13, min 5 low nibble 5
    b.qs[0] = 0x0C;   // value 0: q = 12
    b.qs[67] = 0xA7;  // chunk 2, l 3: value 131 (sub-block 4) q = 7, value 163 (sub-block 5) q = 10
    float *y = s_dequant(MC_DTYPE_Q4_K, &b, 256);
    assert_true(y[0] == 41.25f);   // 0.5*7*12 - 0.25*3
    assert_true(y[131] == 59.0f);  // 0.5*17*7 - 0.25*2
    assert_true(y[163] == 215.75f); // 0.5*45*10 - 0.25*37
    assert_true(y[40] == 0.0f);    // sub-block 1: scale 0, min 0
    assert_true(y[1] == -0.75f);   // q = 0 in sub-block 0
    free(y);
}

static void test_dequant_q5_k(void **state) {
    (void)state;
    mc_block_q5_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800;
    b.dmin = 0x3400;
    b.scales[0] = 0x47;
    b.scales[4] = 0x03;
    b.scales[8] = 0x21;
    b.scales[1] = 0x80;
    b.scales[5] = 0x80;
    b.scales[9] = 0x5D;
    b.qs[0] = 0x0C;
    b.qs[67] = 0xA7;
    b.qh[0] = 0x01; // value 0 (chunk 0, low nibbles): +16
    b.qh[3] = 0x20; // value 163 (chunk 2, high nibbles: bit 5): +16; value 131 (bit 4) not set
    float *y = s_dequant(MC_DTYPE_Q5_K, &b, 256);
    assert_true(y[0] == 97.25f);    // 0.5*7*28 - 0.75
    assert_true(y[131] == 59.0f);   // 0.5*17*7 - 0.5
    assert_true(y[163] == 575.75f); // 0.5*45*26 - 9.25
    assert_true(y[3] == -0.75f);    // qh[3] bit 0 is clear: value 3 (chunk 0, l 3) q = 0
    free(y);
}

static void test_dequant_q6_k(void **state) {
    (void)state;
    mc_block_q6_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; // 0.25
    b.scales[0] = -3;
    b.scales[13] = 100;
    b.scales[6] = -128;
    b.ql[0] = 0x05;  // value 0: low 4 bits 5
    b.qh[0] = 0x02;  // value 0: high 2 bits 2 -> 37 - 32 = 5
    b.ql[88] = 0xF0; // value 216 = half 1, quarter 2, l 24: high nibble 15
    b.qh[56] = 0x10; // its high bits (4-5) = 1 -> 31 - 32 = -1, scale 8 + 1 + 4 = 13
    b.qh[4] = 0xC0;  // value 100 = half 0, quarter 3, l 4: bits 6-7 = 3 -> 48 - 32 = 16, scale 6
    float *y = s_dequant(MC_DTYPE_Q6_K, &b, 256);
    assert_true(y[0] == -3.75f);   // 0.25 * -3 * 5
    assert_true(y[1] == 24.0f);    // 0.25 * -3 * -32
    assert_true(y[216] == -25.0f); // 0.25 * 100 * -1
    assert_true(y[100] == -512.0f); // 0.25 * -128 * 16
    free(y);
}

// --- activation quantization ---------------------------------------------------------

static void test_quant_q8_0_q8_1(void **state) {
    (void)state;
    float x[96] = {0};
    // Block 0: max 127 -> d = 1; roundf rounds ties away from zero.
    const float b0[6] = {127.f, -63.5f, 0.5f, -0.5f, 1.49f, 2.5f};
    memcpy(x, b0, sizeof b0);
    // Block 1: max |x| 254 (negative) -> d = 2, id = 0.5.
    x[32] = 3.f;   // 1.5 -> 2
    x[33] = -5.f;  // -2.5 -> -3
    x[34] = -254.f;
    // Block 2: all zero.
    mc_block_q8_0_t q[3];
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, x, q, 96), MC_OK);
    assert_int_equal(q[0].d, 0x3C00); // 1
    const int8_t e0[6] = {127, -64, 1, -1, 1, 3};
    assert_memory_equal(q[0].qs, e0, 6);
    assert_int_equal(q[0].qs[6], 0);
    assert_int_equal(q[1].d, 0x4000); // 2
    assert_int_equal(q[1].qs[0], 2);
    assert_int_equal(q[1].qs[1], -3);
    assert_int_equal(q[1].qs[2], -127);
    assert_int_equal(q[2].d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(q[2].qs[j], 0);

    mc_block_q8_1_t q1[3];
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_1, x, q1, 96), MC_OK);
    assert_int_equal(q1[0].d, 0x3C00);
    assert_memory_equal(q1[0].qs, e0, 6);
    assert_int_equal(q1[0].s, 0x5430); // 67 = 127 - 64 + 1 - 1 + 1 + 3
    assert_int_equal(q1[1].s, mc_fp32_to_fp16(-128.f * 2)); // (2 - 3 - 127) * 2
    assert_int_equal(q1[2].d, 0);
    assert_int_equal(q1[2].s, 0);

    // s is taken from the f32 scale: three values 1.001 give q = 127 each and
    // s = fp16(381 * (1.001f / 127)) = 0x4202; the fp16 scale 0x2009 would give 0x4201.
    float three[32] = {1.001f, 1.001f, 1.001f};
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_1, three, q1, 32), MC_OK);
    assert_int_equal(q1[0].d, 0x2009);
    assert_int_equal(q1[0].s, 0x4202);
}

static void test_quant_q8_k(void **state) {
    (void)state;
    float x[3 * 256] = {0};
    // Block 0: negative max -127 -> iscale = +1, d = 1; ties round to even.
    x[0] = 2.5f;   // 2
    x[1] = 3.5f;   // 4
    x[2] = -2.5f;  // -2
    x[3] = -127.f; // -127
    x[4] = 127.f;  // same magnitude as the max, not first: +127 is the positive end
    x[17] = 0.49f; // 0, group 1
    x[18] = -6.5f; // -6, group 1
    // Block 1: all zero. Block 2: first of two equal magnitudes wins (negative
    // -63.5 at index 2 before +63.5 at index 5): iscale = 2, d = 0.5.
    float *x2 = x + 512;
    x2[2] = -63.5f;
    x2[5] = 63.5f;
    x2[7] = 0.25f;   // 0.5 -> 0
    x2[8] = 0.75f;   // 1.5 -> 2
    x2[9] = -0.25f;  // -0.5 -> 0
    x2[3] = 1.25f;   // 2.5 -> 2
    x2[20] = -1.75f; // -3.5 -> -4
    mc_block_q8_k_t q[3];
    memset(q, 0x55, sizeof q); // the zero block must clear everything
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_K, x, q, 768), MC_OK);
    assert_true(q[0].d == 1.0f);
    const int8_t e0[5] = {2, 4, -2, -127, 127};
    assert_memory_equal(q[0].qs, e0, 5);
    assert_int_equal(q[0].qs[17], 0);
    assert_int_equal(q[0].qs[18], -6);
    assert_int_equal(q[0].bsums[0], 2 + 4 - 2 - 127 + 127);
    assert_int_equal(q[0].bsums[1], -6);
    assert_int_equal(q[0].bsums[2], 0);

    assert_true(q[1].d == 0.0f);
    for (int j = 0; j < 256; j++) assert_int_equal(q[1].qs[j], 0);
    for (int j = 0; j < 16; j++) assert_int_equal(q[1].bsums[j], 0);

    assert_true(q[2].d == 0.5f);
    assert_int_equal(q[2].qs[2], -127);
    assert_int_equal(q[2].qs[5], 127);
    assert_int_equal(q[2].qs[7], 0);
    assert_int_equal(q[2].qs[8], 2);
    assert_int_equal(q[2].qs[9], 0);
    assert_int_equal(q[2].qs[3], 2);
    assert_int_equal(q[2].qs[20], -4);
    assert_int_equal(q[2].bsums[0], -127 + 127 + 2 + 2);
    assert_int_equal(q[2].bsums[1], -4);

    // Positive max: iscale negative, so the largest value maps to -127, d < 0.
    float y[256] = {0};
    y[9] = 254.f;
    y[10] = -1.f; // -1 * -0.5 = 0.5 -> 0 (even)
    y[11] = -3.f; // 1.5 -> 2
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_K, y, q, 256), MC_OK);
    assert_true(q[0].d == -2.0f);
    assert_int_equal(q[0].qs[9], -127);
    assert_int_equal(q[0].qs[10], 0);
    assert_int_equal(q[0].qs[11], 2);
    assert_int_equal(q[0].bsums[0], -125);
}

// --- quantizers ----------------------------------------------------------------------

static void test_quant_q4_0_reference(void **state) {
    (void)state;
    // ggml's Q4_0: d = max / -8 with the signed max, q = min(15, trunc(x/d + 8.5)).
    float x[32] = {0};
    x[0] = 4.f;   // max -> d = -0.5, q = -8 + 8 = 0
    x[1] = -4.f;  // x/d = 8 -> 16.5 -> clamped 15
    x[2] = 1.2f;  // -2.4 + 8.5 = 6.1 -> 6
    x[16] = -0.3f; // 0.6 + 8.5 = 9.1 -> 9
    mc_block_q4_0_t b;
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q4_0, x, &b, 32), MC_OK);
    assert_int_equal(b.d, 0xB800);
    assert_int_equal(b.qs[0], 0x90); // value 0 -> 0, value 16 -> 9
    assert_int_equal(b.qs[1], 0x8F); // value 1 -> 15, value 17 (0) -> 8
    assert_int_equal(b.qs[2], 0x86);
}

// ggml's quantize_row_mxfp4_ref: e = floor(log2(amax)) - 2 + 127, then per
// value the code nearest x / scale, the first on ties.
static void test_quant_mxfp4_reference(void **state) {
    (void)state;
    float x[32] = {0};
    x[0] = 6.f;    // amax 6: floor(log2 6) = 2 -> e = 127, unit 0.5: code 7 (+6)
    x[1] = -6.f;   // code 15
    x[2] = 5.f;    // 4 (code 6) and 6 (code 7) both 1 away: the first, 6
    x[3] = 0.25f;  // +0 and +0.5 tie: code 0
    x[4] = -0.25f; // +0 (code 0) and -0.5 (code 9) tie: code 0
    x[16] = -2.5f; // -2 (code 12) and -3 (code 13) tie: code 12
    x[17] = 1.25f; // 1 (code 2) and 1.5 (code 3) tie: code 2
    x[18] = 0.7f;  // nearest 0.5: code 1
    mc_block_mxfp4_t b;
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 127);
    assert_int_equal(b.qs[0], 0xC7);
    assert_int_equal(b.qs[1], 0x2F);
    assert_int_equal(b.qs[2], 0x16);
    assert_int_equal(b.qs[3], 0x00);
    assert_int_equal(b.qs[4], 0x00);
    // Above 6 units clips to the largest code: amax 7.9 still has e = 127.
    x[0] = 7.9f;
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 127);
    assert_int_equal(b.qs[0] & 0xF, 7);
    // amax 8: the next exponent, unit 1.
    x[0] = 8.f;
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 128);
    // All zero: scale byte 0, codes 0.
    memset(x, 0, sizeof x);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 0);
    for (int j = 0; j < 16; j++) assert_int_equal(b.qs[j], 0);
    // Where ggml's cast would be undefined: below 2^-125 the exponent clamps
    // to 0, an infinite amax to 254; never the NaN byte.
    x[3] = ldexpf(1.f, -140);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 0);
    x[3] = INFINITY;
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, &b, 32), MC_OK);
    assert_int_equal(b.e, 254);
}

// tests/fixtures/mxfp4_golden.txt (llama.cpp's bytes and values, see the
// README there): our quantizer writes ggml's block bytes for every "q" line's
// inputs, and our dequantizer gives ggml's value bits for every line.
static void s_hex_words(const char **p, uint32_t *out, int n, int width) {
    for (int i = 0; i < n; i++) {
        char *end;
        while (**p == ' ') (*p)++;
        const unsigned long v = strtoul(*p, &end, 16);
        assert_int_equal(end - *p, width);
        out[i] = (uint32_t)v;
        *p = end;
    }
}

static void s_bar(const char **p) {
    while (**p == ' ') (*p)++;
    assert_int_equal(**p, '|');
    (*p)++;
}

static void test_fixture_mxfp4_golden(void **state) {
    (void)state;
    FILE *f = fopen(MC_REPO_FIXTURES "/mxfp4_golden.txt", "r");
    assert_non_null(f);
    char line[1024];
    int nq = 0, nd = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        assert_true(line[0] == 'q' || line[0] == 'd');
        const char *p = line + 1;
        uint32_t xb[32], qb[17], yb[32];
        float x[32], y[32];
        uint8_t q[17], ours[17];
        if (line[0] == 'q') {
            s_hex_words(&p, xb, 32, 8);
            for (int j = 0; j < 32; j++) x[j] = mc_f32_from_bits(xb[j]);
        }
        s_bar(&p);
        s_hex_words(&p, qb, 17, 2);
        s_bar(&p);
        s_hex_words(&p, yb, 32, 8);
        for (int j = 0; j < 17; j++) q[j] = (uint8_t)qb[j];
        if (line[0] == 'q') {
            assert_int_equal(mc_quant_quantize_row(MC_DTYPE_MXFP4, x, ours, 32), MC_OK);
            assert_memory_equal(ours, q, 17);
            nq++;
        } else {
            nd++;
        }
        assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_MXFP4, q, y, 32), MC_OK);
        for (int j = 0; j < 32; j++) assert_int_equal(mc_f32_bits(y[j]), yb[j]);
    }
    fclose(f);
    assert_int_equal(nq, 64);
    assert_int_equal(nd, 16);
}

static double s_rel_rms(mc_dtype_t type, const float *x, int64_t n) {
    const size_t bytes = mc_dtype_row_bytes(type, (uint64_t)n);
    assert_true(bytes > 0);
    // Odd offset: quantizers and dequantizers must not assume alignment.
    uint8_t *buf = malloc(bytes + 1);
    assert_non_null(buf);
    assert_int_equal(mc_quant_quantize_row(type, x, buf + 1, n), MC_OK);
    float *y = s_dequant(type, buf + 1, n);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        den += (double)x[i] * x[i];
    }
    free(y);
    free(buf);
    return sqrt(num / den);
}

static void test_roundtrip_error(void **state) {
    (void)state;
    const int64_t n = 256 * 32;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    uint64_t rng = 12345;
    // Gaussian with a varying scale per 256, as in real weight rows.
    for (int64_t i = 0; i < n; i++) x[i] = s_rng_gauss(&rng) * (0.02f + 0.01f * (float)((i / 256) % 5));
    // Measured on this data: F16 2.0e-4, BF16 1.6e-3, Q8_0 5.5e-3, Q8_K 7.3e-3,
    // Q5_0 0.044, Q5_1 0.038, Q4_0 0.087, Q4_1 0.079, Q6_K 0.019, Q5_K 0.038,
    // Q4_K 0.079, Q3_K 0.158, Q2_K 0.332.
    const struct { mc_dtype_t t; double lo, hi; } cases[] = {
        {MC_DTYPE_F32, 0.0, 0.0},    {MC_DTYPE_F16, 1e-5, 5e-4},  {MC_DTYPE_BF16, 1e-4, 4e-3},
        {MC_DTYPE_Q8_0, 1e-3, 0.01}, {MC_DTYPE_Q8_1, 1e-3, 0.01}, {MC_DTYPE_Q8_K, 1e-4, 0.01},
        {MC_DTYPE_Q5_0, 0.01, 0.06}, {MC_DTYPE_Q5_1, 0.01, 0.06},
        {MC_DTYPE_Q4_0, 0.03, 0.12}, {MC_DTYPE_Q4_1, 0.03, 0.12},
        {MC_DTYPE_Q6_K, 0.005, 0.03}, {MC_DTYPE_Q5_K, 0.01, 0.06}, {MC_DTYPE_Q4_K, 0.03, 0.12},
        {MC_DTYPE_Q3_K, 0.05, 0.25}, {MC_DTYPE_Q2_K, 0.1, 0.45}, {MC_DTYPE_MXFP4, 0.05, 0.2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const double e = s_rel_rms(cases[i].t, x, n);
        if (getenv("MC_TEST_VERBOSE")) printf("%-5s rel rms %.5f\n", mc_dtype_name(cases[i].t), e);
        assert_true(e >= cases[i].lo);
        assert_true(e <= cases[i].hi);
    }
    free(x);
}

static void test_quant_special_blocks(void **state) {
    (void)state;
    // All-zero, constant and all-negative super-blocks must reconstruct sanely.
    static const mc_dtype_t types[] = {MC_DTYPE_Q4_0, MC_DTYPE_Q4_1, MC_DTYPE_Q5_0, MC_DTYPE_Q5_1,
                                       MC_DTYPE_Q8_0, MC_DTYPE_Q2_K, MC_DTYPE_Q3_K, MC_DTYPE_Q4_K,
                                       MC_DTYPE_Q5_K, MC_DTYPE_Q6_K};
    float x[256];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (int kind = 0; kind < 3; kind++) {
            for (int i = 0; i < 256; i++) x[i] = kind == 0 ? 0.f : kind == 1 ? 0.75f : -0.5f - (float)(i % 7) * 0.1f;
            uint8_t buf[256 * 2];
            assert_int_equal(mc_quant_quantize_row(types[t], x, buf, 256), MC_OK);
            float *y = s_dequant(types[t], buf, 256);
            for (int i = 0; i < 256; i++) {
                // Coarsest case: Q3_K's step of 1.1 / 4 over [-1.1, -0.5], half a step 0.1375.
                assert_true(fabsf(y[i] - x[i]) <= 0.15f);
                if (kind == 0) assert_true(y[i] == 0.f);
            }
            free(y);
        }
    }
}

static void test_errors(void **state) {
    (void)state;
    float x[64] = {0};
    uint8_t buf[512];
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q4_0, x, buf, 33), MC_ERR_ARG);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q4_K, x, buf, 64), MC_ERR_ARG);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, x, buf, -32), MC_ERR_ARG);
    assert_int_equal(mc_quant_quantize_row((mc_dtype_t)4, x, buf, 32), MC_ERR_UNSUPPORTED);
    assert_int_equal(mc_quant_dequantize_row((mc_dtype_t)99, buf, x, 32), MC_ERR_UNSUPPORTED);
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_Q6_K, buf, x, 255), MC_ERR_ARG);
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_Q8_0, NULL, NULL, 0), MC_OK);
}

// --- fixtures: bytes written by llama-quantize ------------------------------------------

// Just enough GGUF to find tensors: returns the data of tensor `name` (type
// and element count out), or NULL. Every read is bounds-checked.
typedef struct {
    const uint8_t *p, *end;
    bool ok;
} s_rd_t;

static uint64_t s_rd(s_rd_t *r, size_t n) {
    uint64_t v = 0;
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = false;
        return 0;
    }
    memcpy(&v, r->p, n);
    r->p += n;
    return v;
}

static void s_skip(s_rd_t *r, uint64_t n) {
    if (!r->ok || (uint64_t)(r->end - r->p) < n) r->ok = false;
    else r->p += n;
}

static void s_skip_value(s_rd_t *r, uint32_t type, int depth) {
    static const uint8_t sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) {
        s_skip(r, s_rd(r, 8));
    } else if (type == 9 && depth < 4) {
        const uint32_t et = (uint32_t)s_rd(r, 4);
        const uint64_t count = s_rd(r, 8);
        if (et < 13 && sizes[et]) {
            if (count > UINT64_MAX / sizes[et]) r->ok = false;
            else s_skip(r, count * sizes[et]);
        } else {
            for (uint64_t i = 0; i < count && r->ok; i++) s_skip_value(r, et, depth + 1);
        }
    } else if (type < 13 && sizes[type]) {
        s_skip(r, sizes[type]);
    } else {
        r->ok = false;
    }
}

static const uint8_t *s_gguf_tensor(const uint8_t *file, size_t len, const char *name, uint32_t *type, uint64_t *nel) {
    s_rd_t r = {file, file + len, true};
    if (s_rd(&r, 4) != 0x46554747u || s_rd(&r, 4) != 3) return NULL;
    const uint64_t nt = s_rd(&r, 8), nkv = s_rd(&r, 8);
    uint64_t align = 32;
    for (uint64_t i = 0; i < nkv && r.ok; i++) {
        const uint64_t kl = s_rd(&r, 8);
        const uint8_t *key = r.p;
        s_skip(&r, kl);
        const uint32_t vt = (uint32_t)s_rd(&r, 4);
        if (r.ok && vt == 4 && kl == 17 && !memcmp(key, "general.alignment", 17)) align = s_rd(&r, 4);
        else s_skip_value(&r, vt, 0);
    }
    const uint8_t *found = NULL;
    uint64_t off = 0;
    for (uint64_t i = 0; i < nt && r.ok; i++) {
        const uint64_t nl = s_rd(&r, 8);
        const uint8_t *nm = r.p;
        s_skip(&r, nl);
        const uint32_t nd = (uint32_t)s_rd(&r, 4);
        if (nd > 4) return NULL;
        uint64_t ne = 1;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t v = s_rd(&r, 8);
            if (v && ne > UINT64_MAX / v) return NULL;
            ne *= v;
        }
        const uint32_t t = (uint32_t)s_rd(&r, 4);
        const uint64_t o = s_rd(&r, 8);
        if (r.ok && nl == strlen(name) && !memcmp(nm, name, nl)) {
            found = nm;
            *type = t;
            *nel = ne;
            off = o;
        }
    }
    if (!r.ok || !found || !align || (align & (align - 1))) return NULL;
    const uint64_t start = ((uint64_t)(r.p - file) + align - 1) / align * align;
    const size_t bytes = mc_dtype_row_bytes(*type, *nel);
    if (!bytes || start > len || off > len - start || bytes > len - start - off) return NULL;
    return file + start + off;
}

static const char *const s_tensor_names[] = {
    "token_embd.weight",          "output.weight",          "output_norm.weight",
    "blk.0.attn_q.weight",        "blk.0.attn_k.weight",    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",   "blk.0.ffn_gate_inp.weight", "blk.0.attn_norm.weight",
    "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight",
};

// Our quantizers reproduce llama-quantize's Q8_0 and Q4_0 bytes exactly
// (same reference algorithm, same fp16 rounding).
static void s_check_requantize(const char *qfile) {
    char path[4096];
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof path)) skip();
    size_t flen, qlen;
    uint8_t *f = mc_test_read_file(path, &flen);
    assert_non_null(f);
    assert_non_null(mc_test_fixture(qfile, path, sizeof path));
    uint8_t *q = mc_test_read_file(path, &qlen);
    assert_non_null(q);
    int quantized = 0;
    for (size_t i = 0; i < sizeof s_tensor_names / sizeof s_tensor_names[0]; i++) {
        uint32_t ft, qt;
        uint64_t fn, qn;
        const uint8_t *fd = s_gguf_tensor(f, flen, s_tensor_names[i], &ft, &fn);
        const uint8_t *qd = s_gguf_tensor(q, qlen, s_tensor_names[i], &qt, &qn);
        assert_non_null(fd);
        assert_non_null(qd);
        assert_int_equal(ft, MC_DTYPE_F32);
        assert_int_equal(fn, qn);
        const size_t bytes = mc_dtype_row_bytes(qt, qn);
        float *src = malloc((size_t)fn * sizeof *src);
        uint8_t *ours = malloc(bytes);
        assert_true(src && ours);
        memcpy(src, fd, (size_t)fn * sizeof *src);
        // Rows are whole blocks, so the tensor quantizes as one long row.
        assert_int_equal(mc_quant_quantize_row((mc_dtype_t)qt, src, ours, (int64_t)fn), MC_OK);
        assert_memory_equal(ours, qd, bytes);
        quantized += qt != MC_DTYPE_F32;
        free(src);
        free(ours);
    }
    assert_true(quantized >= 8);
    free(f);
    free(q);
}

static void test_fixture_q8_0_bytes(void **state) {
    (void)state;
    s_check_requantize("tiny-q8_0.gguf");
}

static void test_fixture_q4_0_bytes(void **state) {
    (void)state;
    s_check_requantize("tiny-q4_0.gguf");
}

// Q8_0 activation blocks whose fp16 scale is neither 0 nor inf are a fixed
// point of dequantize-then-quantize: the largest element comes back as
// +-127 * d16, 127 * d16 / 127 is exactly d16, and q * d16 * (1 / d16)
// rounds back to q. An expert node relies on it: it dequantizes rows
// received as Q8_0 and the kernels re-quantize them to the very blocks the
// coordinator sent. (A block whose scale underflowed to 0 comes back as all
// zeros: it contributes +-0 to every product either way.)
static void s_check_q8_fixed_point(const float *x, int64_t n) {
    const size_t rb = mc_dtype_row_bytes(MC_DTYPE_Q8_0, (uint64_t)n);
    uint8_t *a = malloc(rb), *b = malloc(rb);
    float *y = malloc((size_t)n * sizeof *y);
    assert_true(a && b && y);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, x, a, n), MC_OK);
    assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_Q8_0, a, y, n), MC_OK);
    assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, y, b, n), MC_OK);
    assert_memory_equal(a, b, rb);
    free(a), free(b), free(y);
}

static void test_q8_0_requantize_fixed_point(void **state) {
    (void)state;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    float x[256];
    // Random rows over the decades where the fp16 scale is representable
    // (amax / 127 between 2^-24 and 65504), with zero blocks among them.
    for (int rep = 0; rep < 2000; rep++) {
        const float scale = powf(10.0f, (float)(rep % 10) - 4.0f);
        for (int j = 0; j < 256; j++) x[j] = (j / 32 == rep % 9) ? 0.0f : s_rng_gauss(&rng) * scale;
        s_check_q8_fixed_point(x, 256);
    }
    // Every finite positive fp16 value as the block scale.
    for (uint32_t h = 1; h < 0x7C00; h++) {
        const float d = mc_fp16_to_fp32((uint16_t)h);
        for (int j = 0; j < 32; j++) x[j] = (float)((int)(s_rng_next(&rng) % 255) - 127) * d;
        x[(int)(s_rng_next(&rng) % 32)] = 127.0f * d;
        s_check_q8_fixed_point(x, 32);
    }
}

// small-q4_k_m's weights are N(0, 1/fan_in) (the embedding N(0, 1)): a wrong
// scale/min unpacking shows up as a wrong spread or mean.
static void test_fixture_k_quants(void **state) {
    (void)state;
    char path[4096];
    if (!mc_test_fixture("small-q4_k_m.gguf", path, sizeof path)) skip();
    size_t len;
    uint8_t *file = mc_test_read_file(path, &len);
    assert_non_null(file);
    const struct { const char *name; mc_dtype_t type; double sd; } cases[] = {
        {"token_embd.weight", MC_DTYPE_Q4_K, 1.0},
        {"blk.0.attn_q.weight", MC_DTYPE_Q4_K, 1.0 / 16},
        {"blk.1.attn_output.weight", MC_DTYPE_Q5_K, 1.0 / 16},
        {"blk.3.ffn_down_exps.weight", MC_DTYPE_Q6_K, 1.0 / sqrt(512.0)},
        {"output.weight", MC_DTYPE_Q6_K, 1.0 / 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t t;
        uint64_t nel;
        const uint8_t *d = s_gguf_tensor(file, len, cases[i].name, &t, &nel);
        assert_non_null(d);
        assert_int_equal(t, cases[i].type);
        float *y = s_dequant((mc_dtype_t)t, d, (int64_t)nel);
        double s1 = 0, s2 = 0;
        for (uint64_t j = 0; j < nel; j++) {
            assert_true(isfinite(y[j]));
            s1 += y[j];
            s2 += (double)y[j] * y[j];
        }
        const double mean = s1 / (double)nel, sd = sqrt(s2 / (double)nel - mean * mean);
        if (getenv("MC_TEST_VERBOSE")) printf("%s mean %.5f sd %.5f\n", cases[i].name, mean, sd);
        assert_true(fabs(mean) < 0.05 * cases[i].sd);
        assert_true(sd > 0.97 * cases[i].sd && sd < 1.03 * cases[i].sd);
        free(y);
    }
    free(file);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_roundtrip_all),
        cmocka_unit_test(test_fp16_values),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_float_types),
        cmocka_unit_test(test_dequant_q4_0),
        cmocka_unit_test(test_dequant_mxfp4),
        cmocka_unit_test(test_dequant_q4_1),
        cmocka_unit_test(test_dequant_q5_0),
        cmocka_unit_test(test_dequant_q5_1),
        cmocka_unit_test(test_dequant_q8),
        cmocka_unit_test(test_dequant_q2_k),
        cmocka_unit_test(test_dequant_q3_k),
        cmocka_unit_test(test_dequant_q4_k),
        cmocka_unit_test(test_dequant_q5_k),
        cmocka_unit_test(test_dequant_q6_k),
        cmocka_unit_test(test_quant_q8_0_q8_1),
        cmocka_unit_test(test_quant_q8_k),
        cmocka_unit_test(test_quant_q4_0_reference),
        cmocka_unit_test(test_quant_mxfp4_reference),
        cmocka_unit_test(test_fixture_mxfp4_golden),
        cmocka_unit_test(test_roundtrip_error),
        cmocka_unit_test(test_quant_special_blocks),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_q8_0_requantize_fixed_point),
        cmocka_unit_test(test_fixture_q8_0_bytes),
        cmocka_unit_test(test_fixture_q4_0_bytes),
        cmocka_unit_test(test_fixture_k_quants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
