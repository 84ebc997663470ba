/*
 * test_matmul: threaded products give, for every output value, the bits of
 * one scalar-reference dot of the weight row with the converted token;
 * whatever the thread count, the batch size (dot4 tiles and remainders) and
 * the grouping of products in mc_matmul_many, including products that share
 * their input (an expert's gate and up).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"
#include "matmul.h"
#include "quant.h"
#include "rng.h"

// N_IN * MAX_TOK is past matmul.c's serial-conversion limit: both paths run.
enum { N_IN = 2048, N_OUT = 72, MAX_TOK = 10 };

typedef struct {
    mc_matrix_t w;
    uint8_t *data;
} s_mat_t;

static float s_gauss(mc_rng_t *r) {
    return (float)(mc_rng_uniform(r) + mc_rng_uniform(r) + mc_rng_uniform(r) - 1.5);
}

// A random (n_out, n_in) matrix quantized to t (n_in a multiple of t's block).
static s_mat_t s_mat(mc_dtype_t t, uint32_t n_in, uint32_t n_out, mc_rng_t *r) {
    s_mat_t m = {{.type = t, .n_in = n_in, .n_out = n_out, .row_bytes = mc_dtype_row_bytes(t, n_in)}, NULL};
    m.data = malloc(m.w.row_bytes * n_out);
    float *row = malloc(n_in * sizeof *row);
    assert_true(m.data && row);
    for (uint32_t o = 0; o < n_out; o++) {
        for (uint32_t i = 0; i < n_in; i++) row[i] = s_gauss(r);
        assert_int_equal(mc_quant_quantize_row(t, row, m.data + (size_t)o * m.w.row_bytes, n_in), MC_OK);
    }
    m.w.data = m.data;
    free(row);
    return m;
}

static float *s_tokens(uint32_t n_tok, uint32_t n_in, mc_rng_t *r) {
    float *x = malloc((size_t)n_tok * n_in * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < (size_t)n_tok * n_in; i++) x[i] = s_gauss(r) * (1.f + (float)(i % 5));
    return x;
}

// y[t][o] by the scalar reference, one dot at a time.
static float *s_reference(const mc_matrix_t *w, const float *x, uint32_t n_tok) {
    const mc_kernel_t *k = mc_kernel_get(w->type, MC_ISA_SCALAR);
    float *y = malloc((size_t)n_tok * w->n_out * sizeof *y);
    uint8_t *a = malloc(mc_kernel_act_bytes(k, w->n_in));
    assert_true(y && a);
    for (uint32_t t = 0; t < n_tok; t++) {
        mc_kernel_act_row(k, x + (size_t)t * w->n_in, a, w->n_in);
        for (uint32_t o = 0; o < w->n_out; o++)
            k->dot(w->n_in, &y[(size_t)t * w->n_out + o], w->data + (size_t)o * w->row_bytes, a);
    }
    free(a);
    return y;
}

static void test_same_bits_as_reference(void **state) {
    (void)state;
    const mc_dtype_t types[] = {MC_DTYPE_F32,  MC_DTYPE_Q4_0, MC_DTYPE_Q5_0,
                                MC_DTYPE_Q4_1, MC_DTYPE_Q8_0, MC_DTYPE_Q4_K};
    mc_rng_t r;
    mc_rng_seed(&r, 7);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        s_mat_t m = s_mat(types[ti], N_IN, N_OUT, &r);
        float *x = s_tokens(MAX_TOK, N_IN, &r), *want = s_reference(&m.w, x, MAX_TOK);
        for (int nth = 1; nth <= 3; nth++) {
            mc_pool_t *pool = mc_pool_new(nth);
            mc_matmul_t *mm = mc_matmul_new(pool, MC_ISA_BEST);
            assert_non_null(mm);
            // 1..10 tokens: single dots, whole dot4 tiles and every remainder.
            for (uint32_t n_tok = 1; n_tok <= MAX_TOK; n_tok++) {
                float *y = malloc((size_t)n_tok * N_OUT * sizeof *y);
                assert_non_null(y);
                assert_int_equal(mc_matmul_f32(mm, &m.w, x, n_tok, y), MC_OK);
                assert_memory_equal(y, want, (size_t)n_tok * N_OUT * sizeof *y);
                free(y);
            }
            mc_matmul_destroy(&mm);
            mc_matmul_destroy(&mm); // safe twice
            mc_pool_destroy(&pool);
        }
        free(want);
        free(x);
        free(m.data);
    }
}

// Products of the same type with the same input share its conversion (an
// expert's gate and up); the same input with another row count does not;
// mixed weight types in one pass; more products than one pass takes.
static void test_many_matches_single(void **state) {
    (void)state;
    mc_rng_t r;
    mc_rng_seed(&r, 11);
    enum { N_OPS = 20 };
    const mc_dtype_t types[] = {MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, MC_DTYPE_Q4_1};
    s_mat_t m[N_OPS];
    float *x[N_OPS], *want[N_OPS], *got[N_OPS];
    mc_matmul_op_t ops[N_OPS];
    for (int i = 0; i < N_OPS; i++) {
        // Pairs (2k, 2k+1) have the same type and token count.
        m[i] = s_mat(types[(i / 2) % 3], N_IN, N_OUT, &r);
        uint32_t n_tok = 1 + (uint32_t)(i / 2) % 6;
        const float *xi;
        if (i % 4 == 1) { // shares op i-1's input: converted once
            x[i] = NULL;
            xi = x[i - 1];
        } else if (i == N_OPS - 1) { // op i-1's input, more rows: its own conversion
            x[i] = NULL;
            xi = x[i - 1];
            n_tok = 6;
        } else {
            x[i] = s_tokens(6, N_IN, &r); // room for op N_OPS-1's rows
            xi = x[i];
        }
        want[i] = s_reference(&m[i].w, xi, n_tok);
        got[i] = malloc((size_t)n_tok * N_OUT * sizeof(float));
        assert_non_null(got[i]);
        ops[i] = (mc_matmul_op_t){&m[i].w, xi, n_tok, got[i], NULL};
    }
    mc_pool_t *pool = mc_pool_new(2);
    mc_matmul_t *mm = mc_matmul_new(pool, MC_ISA_BEST);
    assert_non_null(mm);
    assert_int_equal(mc_matmul_many(mm, ops, N_OPS), MC_OK);
    for (int i = 0; i < N_OPS; i++)
        assert_memory_equal(got[i], want[i], (size_t)ops[i].n_tok * N_OUT * sizeof(float));
    mc_matmul_destroy(&mm);
    mc_pool_destroy(&pool);
    for (int i = 0; i < N_OPS; i++) {
        free(m[i].data);
        free(x[i]);
        free(want[i]);
        free(got[i]);
    }
}

// A copy of m's rows in its type's repacked layout (what mc_model_repack
// makes), set as m->w.packed; returns the buffer to free.
static uint8_t *s_repack(s_mat_t *m) {
    const uint32_t groups = m->w.n_out / MC_Q4_0X8_ROWS;
    const size_t group_bytes = (size_t)MC_Q4_0X8_ROWS * m->w.row_bytes;
    uint8_t *p = malloc(groups * group_bytes + 1);
    assert_non_null(p);
    for (uint32_t g = 0; g < groups; g++)
        mc_kernel_repack8(m->w.type, m->data + (size_t)g * group_bytes, m->w.row_bytes, m->w.n_in,
                          p + (size_t)g * group_bytes);
    m->w.packed = groups ? p : NULL;
    return p;
}

// Repacked matrices (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) give the bits of the raw rows, whatever the ISA,
// thread count and batch (1..10 tokens: every tile of the 8-row kernel and
// its remainders), with row counts that are a multiple of 8, that leave a
// tail of raw rows, and below one group; also inside mc_matmul_many beside
// raw matrices that share their input.
static void s_check_repacked(mc_dtype_t t) {
    mc_rng_t r;
    mc_rng_seed(&r, 13 + (uint64_t)t);
    const uint32_t n_outs[] = {72, 75, 5, 133};
    const mc_isa_t isas[] = {MC_ISA_SCALAR, MC_ISA_BEST};
    for (size_t oi = 0; oi < sizeof n_outs / sizeof n_outs[0]; oi++) {
        const uint32_t n_in = oi % 2 ? (t == MC_DTYPE_Q4_K || t == MC_DTYPE_Q5_K || t == MC_DTYPE_Q6_K ? 768 : 320) : N_IN, n_out = n_outs[oi];
        s_mat_t raw = s_mat(t, n_in, n_out, &r), rp = raw;
        uint8_t *packed = s_repack(&rp);
        assert_true((rp.w.packed != NULL) == (n_out >= 8));
        float *x = s_tokens(MAX_TOK, n_in, &r), *want = s_reference(&raw.w, x, MAX_TOK);
        for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++)
            for (int nth = 1; nth <= 3; nth++) {
                mc_pool_t *pool = mc_pool_new(nth);
                mc_matmul_t *mm = mc_matmul_new(pool, isas[ii]);
                assert_non_null(mm);
                // Every ISA has the repacked product of the types with a layout.
                assert_non_null(mc_matmul_kernel(mm, t)->dot8);
                for (uint32_t n_tok = 1; n_tok <= MAX_TOK; n_tok++) {
                    float *y = malloc((size_t)n_tok * n_out * sizeof *y);
                    assert_non_null(y);
                    memset(y, 0xFF, (size_t)n_tok * n_out * sizeof *y);
                    assert_int_equal(mc_matmul_f32(mm, &rp.w, x, n_tok, y), MC_OK);
                    assert_memory_equal(y, want, (size_t)n_tok * n_out * sizeof *y);
                    free(y);
                }
                // One pass: the repacked matrix and the raw one on the same input.
                float *y2[2];
                for (int i = 0; i < 2; i++) y2[i] = malloc((size_t)MAX_TOK * n_out * sizeof(float));
                assert_true(y2[0] && y2[1]);
                const mc_matmul_op_t ops[2] = {{&rp.w, x, MAX_TOK, y2[0], NULL}, {&raw.w, x, MAX_TOK, y2[1], NULL}};
                assert_int_equal(mc_matmul_many(mm, ops, 2), MC_OK);
                for (int i = 0; i < 2; i++) {
                    assert_memory_equal(y2[i], want, (size_t)MAX_TOK * n_out * sizeof(float));
                    free(y2[i]);
                }
                mc_matmul_destroy(&mm);
                mc_pool_destroy(&pool);
            }
        free(want);
        free(x);
        free(packed);
        free(raw.data);
    }
}

static void test_repacked_same_bits(void **state) {
    (void)state;
    s_check_repacked(MC_DTYPE_Q4_0);
}

static void test_repacked_q8_0_same_bits(void **state) {
    (void)state;
    s_check_repacked(MC_DTYPE_Q8_0);
}

static void test_repacked_q4_k_same_bits(void **state) {
    (void)state;
    s_check_repacked(MC_DTYPE_Q4_K);
}

static void test_repacked_q5_k_same_bits(void **state) {
    (void)state;
    s_check_repacked(MC_DTYPE_Q5_K);
}

static void test_repacked_q6_k_same_bits(void **state) {
    (void)state;
    s_check_repacked(MC_DTYPE_Q6_K);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bits_as_reference),
        cmocka_unit_test(test_many_matches_single),
        cmocka_unit_test(test_repacked_same_bits),
        cmocka_unit_test(test_repacked_q8_0_same_bits),
        cmocka_unit_test(test_repacked_q4_k_same_bits),
        cmocka_unit_test(test_repacked_q5_k_same_bits),
        cmocka_unit_test(test_repacked_q6_k_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
