/*
 * test_golden: the engine against llama.cpp's logits, router logits and
 * greedy tokens for every fixture model and prompt.
 *
 * Bounds: the F32 model must match to max |d| <= 1e-3 with identical greedy
 * continuations and router choices (fixture README section 6). We quantize
 * activations exactly as llama.cpp does, and the Q4_0/Q8_0 kernels add
 * their block products in the same lane order as its AVX2 code, so the
 * Q8_0 and Q4_0 models are held to that same bar (measured: ~1e-6). The
 * K-quant mix differs in float summation order inside its super-blocks;
 * it gets the tighter bar the README states for an engine that quantizes
 * activations like llama.cpp: mean |d| <= 0.005, every per-position argmax
 * identical, identical teacher-forced greedy tokens.
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

#include "engine.h"
#include "model.h"
#include "testutil.h"

static const char *const s_prompts[] = {"p0_fox", "p1_fr", "p2_code", "p3_inst"};
#define N_GEN 16

typedef struct {
    int32_t ids[256];
    size_t n;
} s_ids_t;

static bool s_read_ids(const char *path, s_ids_t *out) {
    size_t len;
    char *txt = (char *)mc_test_read_file(path, &len);
    if (!txt) return false;
    out->n = 0;
    for (char *p = txt, *end; *p && out->n < 256; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        out->ids[out->n++] = (int32_t)v;
        while (*end == '\n' || *end == '\r') end++;
    }
    free(txt);
    return true;
}

static int32_t s_argmax(const float *v, uint32_t n) {
    int32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

static void s_check_model(const char *model_name, bool exact) {
    char path[512], dir[512];
    snprintf(dir, sizeof dir, "%s.gguf", model_name);
    if (!mc_test_fixture(dir, path, sizeof path)) skip();
    char err[MC_ERR_LEN] = "";
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    const uint32_t nv = m->hp.n_vocab, ne = m->hp.n_expert;
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = 2;
    ep.n_ctx = 512;
    ep.keep_router = true;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);

    double worst_max = 0, sum_abs = 0, worst_router = 0;
    size_t n_vals = 0, argmax_same = 0, n_pos = 0, tf_same = 0, tf_total = 0;
    for (size_t p = 0; p < sizeof s_prompts / sizeof s_prompts[0]; p++) {
        char name[256];
        s_ids_t ids, gen;
        snprintf(name, sizeof name, "golden/%s/%s.ids.txt", model_name, s_prompts[p]);
        assert_true(s_read_ids(mc_test_fixture(name, path, sizeof path), &ids));
        snprintf(name, sizeof name, "golden/%s/%s.gen.txt", model_name, s_prompts[p]);
        assert_true(s_read_ids(mc_test_fixture(name, path, sizeof path), &gen));
        assert_int_equal(gen.n, N_GEN);
        size_t len;
        snprintf(name, sizeof name, "golden/%s/%s.logits.f32", model_name, s_prompts[p]);
        float *ref = (float *)mc_test_read_file(mc_test_fixture(name, path, sizeof path), &len);
        assert_non_null(ref);
        assert_int_equal(len, ids.n * nv * sizeof(float));
        snprintf(name, sizeof name, "golden/%s/%s.router.f32", model_name, s_prompts[p]);
        float *ref_router = (float *)mc_test_read_file(mc_test_fixture(name, path, sizeof path), &len);
        assert_non_null(ref_router);
        assert_int_equal(len, (size_t)m->hp.n_layer * ids.n * ne * sizeof(float));

        // Teacher forcing: prompt plus the reference continuation in one
        // batch; row n-1+i must predict gen[i].
        s_ids_t all = ids;
        for (size_t i = 0; i + 1 < N_GEN; i++) all.ids[all.n++] = gen.ids[i];
        float *logits = malloc(all.n * nv * sizeof(float));
        assert_non_null(logits);
        assert_int_equal(mc_engine_eval(e, all.ids, (uint32_t)all.n, 0, MC_LOGITS_ALL, logits, err), MC_OK);

        for (size_t t = 0; t < ids.n; t++) {
            const float *a = logits + t * nv, *b = ref + t * nv;
            for (uint32_t i = 0; i < nv; i++) {
                double d = fabs((double)a[i] - b[i]);
                if (d > worst_max) worst_max = d;
                sum_abs += d;
            }
            n_vals += nv;
            argmax_same += s_argmax(a, nv) == s_argmax(b, nv);
            n_pos++;
        }
        for (size_t i = 0; i < N_GEN; i++) {
            tf_same += s_argmax(logits + (ids.n - 1 + i) * nv, nv) == gen.ids[i];
            tf_total++;
        }
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            uint32_t rows = 0;
            const float *r = mc_engine_router_logits(e, l, &rows);
            assert_non_null(r);
            assert_int_equal(rows, all.n);
            for (size_t t = 0; t < ids.n; t++)
                for (uint32_t x = 0; x < ne; x++) {
                    double d = fabs((double)r[t * ne + x] - ref_router[((size_t)l * ids.n + t) * ne + x]);
                    if (d > worst_router) worst_router = d;
                }
        }

        if (exact) {
            // Free-running greedy decode, one token at a time through the cache.
            assert_int_equal(mc_engine_eval(e, ids.ids, (uint32_t)ids.n, 0, MC_LOGITS_LAST, logits, err), MC_OK);
            for (size_t i = 0; i < N_GEN; i++) {
                int32_t id = s_argmax(logits, nv);
                if (id != gen.ids[i]) fail_msg("%s %s: greedy token %zu is %d, expected %d", model_name, s_prompts[p], i, id, gen.ids[i]);
                assert_int_equal(mc_engine_eval(e, &id, 1, (uint32_t)(ids.n + i), MC_LOGITS_LAST, logits, err), MC_OK);
            }
        }
        free(logits);
        free(ref);
        free(ref_router);
    }
    double mean = sum_abs / (double)n_vals;
    printf("[golden] %-14s max|d| %.3g  mean|d| %.3g  argmax %zu/%zu  teacher-forced %zu/%zu  router max|d| %.3g\n",
           model_name, worst_max, mean, argmax_same, n_pos, tf_same, tf_total, worst_router);
    if (exact) {
        assert_true(worst_max <= 1e-3);
        assert_true(worst_router <= 1e-3);
    } else {
        assert_true(mean <= 0.005);
    }
    assert_int_equal(argmax_same, n_pos);
    assert_int_equal(tf_same, tf_total);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);
}

static void test_tiny_f32(void **state) { (void)state; s_check_model("tiny-f32", true); }
static void test_tiny_q8_0(void **state) { (void)state; s_check_model("tiny-q8_0", true); }
static void test_tiny_q4_0(void **state) { (void)state; s_check_model("tiny-q4_0", true); }
static void test_small_q4_k_m(void **state) { (void)state; s_check_model("small-q4_k_m", false); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_tiny_q8_0),
        cmocka_unit_test(test_tiny_q4_0),
        cmocka_unit_test(test_small_q4_k_m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
