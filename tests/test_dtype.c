/*
 * test_dtype: the type table's rows: names, block geometry, and the llama.cpp
 * file type a model of each weight type declares (moe-mkmodel and moe-convert
 * both write it from this table).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dtype.h"

// llama.h's enum llama_ftype, as llama.cpp numbers it; a K-quant maps to its _M mix,
// as llama_model_loader guesses it from the dominant type when the key is absent.
static void test_file_type(void **state) {
    (void)state;
    const struct {
        mc_dtype_t type;
        uint32_t file_type;
    } rows[] = {
        {MC_DTYPE_F32, 0},   // LLAMA_FTYPE_ALL_F32
        {MC_DTYPE_F16, 1},   // MOSTLY_F16
        {MC_DTYPE_Q4_0, 2},  // MOSTLY_Q4_0
        {MC_DTYPE_Q4_1, 3},  // MOSTLY_Q4_1
        {MC_DTYPE_Q8_0, 7},  // MOSTLY_Q8_0
        {MC_DTYPE_Q5_0, 8},  // MOSTLY_Q5_0
        {MC_DTYPE_Q5_1, 9},  // MOSTLY_Q5_1
        {MC_DTYPE_Q2_K, 10}, // MOSTLY_Q2_K
        {MC_DTYPE_Q3_K, 12}, // MOSTLY_Q3_K_M
        {MC_DTYPE_Q4_K, 15}, // MOSTLY_Q4_K_M
        {MC_DTYPE_Q5_K, 17}, // MOSTLY_Q5_K_M
        {MC_DTYPE_Q6_K, 18}, // MOSTLY_Q6_K
        {MC_DTYPE_BF16, 32}, // MOSTLY_BF16
        {MC_DTYPE_MXFP4, 38}, // MOSTLY_MXFP4_MOE
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint32_t ft = 99;
        assert_true(mc_dtype_file_type(rows[i].type, &ft));
        assert_int_equal(ft, rows[i].file_type);
    }
    // Activation-only types and unknown ids have none, and leave *out alone.
    const uint32_t none[] = {MC_DTYPE_Q8_1, MC_DTYPE_Q8_K, 4, 5, 31, 1000};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        uint32_t ft = 99;
        assert_false(mc_dtype_file_type(none[i], &ft));
        assert_int_equal(ft, 99);
    }
}

static void test_names_and_rows(void **state) {
    (void)state;
    mc_dtype_t t;
    assert_true(mc_dtype_from_name("q4_k", &t));
    assert_int_equal(t, MC_DTYPE_Q4_K);
    assert_false(mc_dtype_from_name("Q4_K_M", &t));
    assert_string_equal(mc_dtype_name(MC_DTYPE_BF16), "BF16");
    assert_string_equal(mc_dtype_name(4), "?");
    assert_int_equal(mc_dtype_row_bytes(MC_DTYPE_Q4_K, 512), 288);
    assert_int_equal(mc_dtype_row_bytes(MC_DTYPE_Q4_K, 100), 0);
    assert_int_equal(mc_dtype_row_bytes(MC_DTYPE_F16, 3), 6);
    // MXFP4: ggml type 39, 32 values in 16 bytes of 4-bit codes plus one scale byte.
    assert_true(mc_dtype_from_name("mxfp4", &t));
    assert_int_equal(t, 39);
    assert_string_equal(mc_dtype_name(39), "MXFP4");
    const mc_dtype_traits_t *tr = mc_dtype_traits(MC_DTYPE_MXFP4);
    assert_non_null(tr);
    assert_int_equal(tr->block_elems, 32);
    assert_int_equal(tr->block_bytes, 17);
    assert_true(tr->weight);
    assert_int_equal(mc_dtype_row_bytes(MC_DTYPE_MXFP4, 2880), 90 * 17); // a GPT-OSS row
    assert_int_equal(mc_dtype_row_bytes(MC_DTYPE_MXFP4, 48), 0);
    assert_null(mc_dtype_traits(38));
    assert_null(mc_dtype_traits(40));
    assert_true(MC_DTYPE_MXFP4 < MC_DTYPE_ID_LIMIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_type),
        cmocka_unit_test(test_names_and_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
