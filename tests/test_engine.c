/*
 * test_engine: invariances of the forward pass on generated models.
 *
 * The same logits, to the bit, whether the experts come from merged or
 * legacy tensors, whatever the thread count, whether a prompt is evaluated
 * as one batch, in chunks or one token at a time, and when the expert step
 * is split between two "holders" the way the cluster splits it.
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
#include <unistd.h>

#include "engine.h"
#include "mkmodel.h"
#include "model.h"
#include "moe.h"
#include "testutil.h"

static char s_dir[256];

static const int32_t s_ids[] = {1, 300, 301, 302, 260, 270, 280, 290, 3, 4, 5, 400, 410, 420, 430, 2, 500};
#define N_IDS (sizeof s_ids / sizeof s_ids[0])

static mc_model_t *s_make(const char *name, mc_dtype_t type, bool legacy, uint32_t dim, uint32_t ffn) {
    char path[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = type;
    p.legacy_layout = legacy;
    p.dim = dim;
    p.ffn = ffn;
    p.seed = 77;
    snprintf(path, sizeof path, "%s/%s.gguf", s_dir, name);
    if (access(path, R_OK) != 0 && mc_mkmodel_write(&p, path, err) != MC_OK) fail_msg("mkmodel: %s", err);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("open: %s", err);
    return m;
}

static float *s_logits_all(const mc_model_t *m, int threads, uint32_t max_batch) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = threads;
    ep.n_ctx = 64;
    ep.max_batch = max_batch;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    float *out = malloc(N_IDS * m->hp.n_vocab * sizeof(float));
    assert_int_equal(mc_engine_eval(e, s_ids, N_IDS, 0, MC_LOGITS_ALL, out, err), MC_OK);
    mc_engine_destroy(&e);
    return out;
}

static int s_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static void test_layouts_identical(void **state) {
    (void)state;
    static const mc_dtype_t types[] = {MC_DTYPE_F32, MC_DTYPE_Q8_0, MC_DTYPE_Q4_0, MC_DTYPE_Q4_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        uint32_t dim = types[i] == MC_DTYPE_Q4_K ? 256 : 64, ffn = types[i] == MC_DTYPE_Q4_K ? 256 : 128;
        char a[64], b[64];
        snprintf(a, sizeof a, "merged-%s", mc_dtype_name(types[i]));
        snprintf(b, sizeof b, "legacy-%s", mc_dtype_name(types[i]));
        mc_model_t *mm = s_make(a, types[i], false, dim, ffn);
        mc_model_t *ml = s_make(b, types[i], true, dim, ffn);
        assert_false(mm->legacy_experts);
        assert_true(ml->legacy_experts);
        float *x = s_logits_all(mm, 1, 256), *y = s_logits_all(ml, 1, 256);
        assert_memory_equal(x, y, N_IDS * mm->hp.n_vocab * sizeof(float));
        for (size_t k = 0; k < N_IDS * mm->hp.n_vocab; k++) assert_true(isfinite(x[k]));
        free(x), free(y);
        mc_model_destroy(&mm);
        mc_model_destroy(&ml);
    }
}

static void test_threads_and_batching_identical(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_model_t *m = s_make("merged-Q8_0", MC_DTYPE_Q8_0, false, 64, 128);
    const size_t nv = m->hp.n_vocab;
    float *base = s_logits_all(m, 1, 256);
    float *t3 = s_logits_all(m, 3, 256);
    float *chunked = s_logits_all(m, 2, 5);
    assert_memory_equal(base, t3, N_IDS * nv * sizeof(float));
    assert_memory_equal(base, chunked, N_IDS * nv * sizeof(float));

    // One token at a time through the cache gives each row exactly.
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    ep.n_threads = 2;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    float *row = malloc(nv * sizeof(float));
    for (uint32_t t = 0; t < N_IDS; t++) {
        assert_int_equal(mc_engine_eval(e, &s_ids[t], 1, t, MC_LOGITS_LAST, row, err), MC_OK);
        assert_memory_equal(row, base + t * nv, nv * sizeof(float));
    }
    // A prompt split in two evals continues from the cache.
    assert_int_equal(mc_engine_eval(e, s_ids, 7, 0, MC_LOGITS_NONE, NULL, err), MC_OK);
    assert_int_equal(mc_engine_eval(e, s_ids + 7, N_IDS - 7, 7, MC_LOGITS_LAST, row, err), MC_OK);
    assert_memory_equal(row, base + (N_IDS - 1) * nv, nv * sizeof(float));
    free(row), free(base), free(t3), free(chunked);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);
}

// Expert step split between two holders (even / odd expert ids) whose
// partial sums are added, as the coordinator does with two nodes.
typedef struct {
    const mc_model_t *m;
    mc_moe_t *moe;
} s_split_t;

static mc_err_t s_split_moe(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err) {
    s_split_t *s = ctx;
    uint32_t dim = s->m->hp.dim;
    int32_t *mine = malloc((size_t)n * k * sizeof(int32_t));
    float *part = malloc((size_t)n * dim * sizeof(float));
    memset(out, 0, (size_t)n * dim * sizeof(float));
    for (int parity = 0; parity < 2; parity++) {
        for (size_t i = 0; i < (size_t)n * k; i++) mine[i] = experts[i] % 2 == parity ? experts[i] : -1;
        mc_err_t rc = mc_moe_compute(s->moe, s->m, layer, x, n, mine, weights, k, part, err);
        if (rc) return rc;
        for (size_t i = 0; i < (size_t)n * dim; i++) out[i] += part[i];
    }
    free(mine), free(part);
    return MC_OK;
}

static void test_split_experts_identical(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_model_t *m = s_make("merged-Q4_0", MC_DTYPE_Q4_0, false, 64, 128);
    float *base = s_logits_all(m, 1, 256);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_pool_t *pool = mc_pool_new(1);
    mc_matmul_t *mm = mc_matmul_new(pool, MC_ISA_BEST);
    s_split_t split = {m, mc_moe_new(mm)};
    mc_engine_set_moe(e, s_split_moe, &split);
    float *out = malloc(N_IDS * m->hp.n_vocab * sizeof(float));
    assert_int_equal(mc_engine_eval(e, s_ids, N_IDS, 0, MC_LOGITS_ALL, out, err), MC_OK);
    // With two experts per token, a + b is the same addition either way.
    assert_memory_equal(out, base, N_IDS * m->hp.n_vocab * sizeof(float));
    mc_moe_destroy(&split.moe);
    mc_matmul_destroy(&mm);
    mc_pool_destroy(&pool);
    free(out), free(base);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);
}

static void test_errors(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_model_t *m = s_make("merged-F32", MC_DTYPE_F32, false, 64, 128);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = m->hp.n_ctx_train + 1;
    assert_null(mc_engine_new(m, &ep, err));
    assert_non_null(strstr(err, "context length"));
    ep.n_ctx = 8;
    ep.n_threads = 0;
    assert_null(mc_engine_new(m, &ep, err));
    ep.n_threads = 1;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    float *row = malloc(m->hp.n_vocab * sizeof(float));
    int32_t bad = (int32_t)m->hp.n_vocab;
    assert_int_equal(mc_engine_eval(e, &bad, 1, 0, MC_LOGITS_LAST, row, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "outside the vocabulary"));
    bad = -1;
    assert_int_equal(mc_engine_eval(e, &bad, 1, 0, MC_LOGITS_LAST, row, err), MC_ERR_RANGE);
    assert_int_equal(mc_engine_eval(e, s_ids, 9, 0, MC_LOGITS_LAST, row, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "exceed the context"));
    assert_int_equal(mc_engine_eval(e, s_ids, 8, 0, MC_LOGITS_LAST, row, err), MC_OK);
    free(row);
    mc_engine_destroy(&e);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts_identical),
        cmocka_unit_test(test_threads_and_batching_identical),
        cmocka_unit_test(test_split_experts_identical),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
