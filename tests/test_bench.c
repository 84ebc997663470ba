/*
 * test_bench: the measuring pieces of moe-bench on tiny inputs: median,
 * bandwidth probe (in and out of a child process), flag parsing, the cache
 * path, the model run on a small generated model with its JSON line, and
 * the kernel micro-benchmark, --constrain (free vs constrained
 * generation, masks on the model's and the synthetic 151936-token vocabulary)
 * and --corpus (a corpus without and with speculative decoding, its
 * identical-tokens check failing on altered ids).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"
#include "bench_constrain.h"
#include "bench_speculate.h"
#include "mkmodel.h"
#include <unistd.h>
#include "model.h"
#include "testutil.h"

static char s_dir[256];
static char s_model[512];

static int s_setup(void **state) {
    (void)state;
    if (!mc_test_tmpdir(s_dir, sizeof s_dir)) return -1;
    snprintf(s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    const mc_mkmodel_params_t p = mc_mkmodel_params_default();
    return mc_mkmodel_write(&p, s_model, NULL) == MC_OK ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static void test_median(void **state) {
    (void)state;
    double odd[] = {3.0, 1.0, 2.0};
    assert_true(mc_bench_median(odd, 3) == 2.0);
    double even[] = {4.0, 1.0, 3.0, 2.0};
    assert_true(mc_bench_median(even, 4) == 2.5);
    double one[] = {7.5};
    assert_true(mc_bench_median(one, 1) == 7.5);
    double outlier[] = {10.0, 10.5, 1000.0, 9.5, 0.1};
    assert_true(mc_bench_median(outlier, 5) == 10.0);
    assert_true(isnan(mc_bench_median(NULL, 0)));
}

static void test_mem_bw(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    double gb = -1.0;
    assert_int_equal(mc_bench_mem_bw(2, 4u << 20, 2, &gb, err), MC_OK);
    assert_true(isfinite(gb) && gb > 0.0);
    gb = -1.0;
    assert_int_equal(mc_bench_mem_bw_child(2, 4u << 20, 2, &gb, err), MC_OK);
    assert_true(isfinite(gb) && gb > 0.0);
    // Errors come back from the child with their message; outputs untouched.
    gb = -1.0;
    assert_int_equal(mc_bench_mem_bw_child(4, 512, 1, &gb, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "too small"));
    assert_true(gb == -1.0);
    assert_int_equal(mc_bench_mem_bw(0, 4096, 1, &gb, err), MC_ERR_ARG);
    assert_int_equal(mc_bench_mem_bw(1, 4096, 0, &gb, err), MC_ERR_ARG);
    assert_true(mc_bench_bw_default_bytes() >= ((size_t)256 << 20));
}

static mc_err_t s_parse(mc_bench_opts_t *o, const char *const *args, int n, char *err) {
    char *argv[16] = {"moe-bench"};
    assert_true(n < 16);
    for (int i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    return mc_bench_parse(n + 1, argv, o, err);
}

static void test_parse_good(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    assert_int_equal(o.type, MC_DTYPE_Q4_0);
    assert_int_equal(o.n_prompt, 64);
    assert_int_equal(o.n_gen, 64);
    assert_int_equal(o.reps, 3);
    assert_true(o.n_threads >= 1 && o.n_threads <= 8);
    assert_null(o.model);

    const char *a[] = {"--model", "m.gguf", "--threads", "3", "-p", "5", "-n", "7", "--reps", "2", "--json",
                       "--bw-mib", "64"};
    assert_int_equal(s_parse(&o, a, 13, err), MC_OK);
    assert_string_equal(o.model, "m.gguf");
    assert_int_equal(o.n_threads, 3);
    assert_int_equal(o.n_prompt, 5);
    assert_int_equal(o.n_gen, 7);
    assert_int_equal(o.reps, 2);
    assert_true(o.json && !o.kernels && !o.help);
    assert_true(o.bw_bytes == ((size_t)64 << 20));

    mc_bench_opts_init(&o);
    assert_int_equal(o.n_batch, 1);
    const char *bt[] = {"--batch", "8", "--routing-stats", "r.json"};
    assert_int_equal(s_parse(&o, bt, 4, err), MC_OK);
    assert_int_equal(o.n_batch, 8);
    assert_string_equal(o.routing_stats, "r.json");
    const char *bb[] = {"--batch", "0"};
    assert_int_equal(s_parse(&o, bb, 2, err), MC_ERR_ARG);
    assert_int_equal(o.n_batch, 8);

    mc_bench_opts_init(&o);
    const char *b[] = {"--type", "q8_0"};
    assert_int_equal(s_parse(&o, b, 2, err), MC_OK);
    assert_int_equal(o.type, MC_DTYPE_Q8_0);

    mc_bench_opts_init(&o);
    const char *c[] = {"--kernels", "--threads", "2", "--reps", "5", "--json"};
    assert_int_equal(s_parse(&o, c, 6, err), MC_OK);
    assert_true(o.kernels && o.json);
    assert_int_equal(o.reps, 5);

    const char *d[] = {"-p", "9", "--help"};
    assert_int_equal(s_parse(&o, d, 3, err), MC_OK);
    assert_true(o.help);
}

static void test_parse_bad(void **state) {
    (void)state;
    static const char *const bad[][4] = {
        {"--threads", "0"},
        {"--threads", "2x"},
        {"--threads", ""},
        {"--threads"},
        {"--threads", "513"},
        {"-p", "-1"},
        {"-p", "1.5"},
        {"-p", "0"},
        {"-n", "65537"},
        {"-n", "99999999999999999999"},
        {"--reps", "0"},
        {"--reps", "+2"},
        {"--bogus"},
        {"json"},
        {"--type", "Q8_K"},
        {"--type", "nope"},
        {"--model", ""},
        {"--bw-mib", "8"},
        {"--bw-mib", " 64"},
        {"--model", "a", "--type", "Q8_0"},
        {"--kernels", "--model", "a"},
        {"--kernels", "-p", "4"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mc_bench_opts_t o, before;
        mc_bench_opts_init(&o);
        before = o;
        int n = 0;
        while (n < 4 && bad[i][n]) n++;
        char err[MC_ERR_LEN] = "";
        if (s_parse(&o, bad[i], n, err) != MC_ERR_ARG) fail_msg("accepted bad flags #%zu", i);
        assert_true(err[0] != '\0' && !strchr(err, '\n'));
        assert_true(o.model == before.model && o.type == before.type && o.n_threads == before.n_threads &&
                    o.n_prompt == before.n_prompt && o.n_gen == before.n_gen && o.reps == before.reps &&
                    o.bw_bytes == before.bw_bytes && o.json == before.json && o.kernels == before.kernels &&
                    o.help == before.help);
    }
}

static void test_cache_path(void **state) {
    (void)state;
    char dir[600], want[700], path[1024], err[MC_ERR_LEN];
    const char *old = getenv("MC_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;

    snprintf(dir, sizeof dir, "%s/cache/a/b", s_dir);
    assert_int_equal(setenv("MC_CACHE_DIR", dir, 1), 0);
    assert_int_equal(mc_bench_cache_path(MC_DTYPE_Q8_0, path, sizeof path, err), MC_OK);
    snprintf(want, sizeof want, "%s/bench-1024x3584x8-q8_0.gguf", dir);
    assert_string_equal(path, want);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(mc_bench_cache_path(MC_DTYPE_Q8_0, path, 10, err), MC_ERR_ARG);

    assert_int_equal(unsetenv("MC_CACHE_DIR"), 0);
    snprintf(dir, sizeof dir, "%s/xdg", s_dir);
    const char *old_xdg = getenv("XDG_CACHE_HOME");
    char *saved_xdg = old_xdg ? strdup(old_xdg) : NULL;
    assert_int_equal(setenv("XDG_CACHE_HOME", dir, 1), 0);
    assert_int_equal(mc_bench_cache_path(MC_DTYPE_Q4_K, path, sizeof path, err), MC_OK);
    snprintf(want, sizeof want, "%s/moe-cluster/bench-1024x3584x8-q4_k.gguf", dir);
    assert_string_equal(path, want);

    if (saved_xdg) setenv("XDG_CACHE_HOME", saved_xdg, 1);
    else unsetenv("XDG_CACHE_HOME");
    if (saved) setenv("MC_CACHE_DIR", saved, 1);
    free(saved_xdg);
    free(saved);

    const mc_mkmodel_params_t p = mc_bench_model_params(MC_DTYPE_Q5_K);
    assert_int_equal(mc_mkmodel_check(&p, err), MC_OK);
    assert_int_equal(p.dim, 1024);
    assert_int_equal(p.ffn, 3584);
    assert_int_equal(p.n_layer, 8);
    assert_int_equal(p.n_head, 16);
    assert_int_equal(p.n_head_kv, 4);
    assert_int_equal(p.n_expert, 8);
    assert_int_equal(p.n_expert_used, 2);
    assert_int_equal(p.n_vocab, 32000);
    assert_int_equal(p.ctx_len, 4096);
    assert_int_equal(p.type, MC_DTYPE_Q5_K);
}

static void s_expect_number(const cJSON *j, const char *key, bool positive) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing or not a number", key);
    if (positive && !(v->valuedouble > 0.0)) fail_msg("key %s is not positive", key);
    assert_true(isfinite(v->valuedouble));
    if (positive) assert_true(v->valuedouble > 0.0);
}

static void test_run(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    o.model = s_model;
    o.n_threads = 2;
    o.n_prompt = 6;
    o.n_gen = 4;
    o.reps = 3;
    o.bw_bytes = 4u << 20;
    mc_bench_result_t r;
    assert_int_equal(mc_bench_run(&o, &r, err), MC_OK);
    assert_true(isfinite(r.pp_tok_s) && r.pp_tok_s > 0.0);
    assert_true(isfinite(r.tg_tok_s) && r.tg_tok_s > 0.0);
    assert_true(isfinite(r.mem_bw_gb_s) && r.mem_bw_gb_s > 0.0);
    assert_true(r.bw_bytes == o.bw_bytes);
    assert_true(r.peak_rss_mb > 0.0);
    assert_true(r.file_mb > 0.0);

    mc_model_t *m = mc_model_open(s_model, err);
    assert_non_null(m);
    assert_true(r.bytes_per_token == mc_model_bytes_per_token(m));
    // f32 KV cache of p + n positions, keys and values.
    const double kv = 2.0 * m->hp.n_layer * 10 * m->hp.n_head_kv * m->hp.head_dim * 4 / (1024.0 * 1024.0);
    assert_true(fabs(r.kv_mb - kv) < 1e-9);
    mc_model_destroy(&m);
    const double bound = r.mem_bw_gb_s * 1e9 / (double)r.bytes_per_token;
    assert_true(fabs(r.tg_bound_tok_s - bound) <= 1e-12 * bound);

    char line[4096];
    assert_int_equal(mc_bench_json(&r, line, sizeof line, err), MC_OK);
    assert_null(strchr(line, '\n'));
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    // The required keys come first, in this order.
    static const char *const required[] = {"model",          "threads",        "pp_tok_s",   "tg_tok_s",
                                           "mem_bw_gb_s",    "bytes_per_token", "tg_bound_tok_s", "peak_rss_mb"};
    const cJSON *it = j->child;
    for (size_t k = 0; k < sizeof required / sizeof required[0]; k++, it = it->next) {
        assert_non_null(it);
        assert_string_equal(it->string, required[k]);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    assert_true(cJSON_IsString(model));
    assert_string_equal(model->valuestring, s_model);
    const cJSON *threads = cJSON_GetObjectItemCaseSensitive(j, "threads");
    assert_true(cJSON_IsNumber(threads) && threads->valuedouble == 2.0);
    const cJSON *bpt = cJSON_GetObjectItemCaseSensitive(j, "bytes_per_token");
    assert_true(cJSON_IsNumber(bpt) && bpt->valuedouble == (double)r.bytes_per_token);
    s_expect_number(j, "pp_tok_s", true);
    s_expect_number(j, "tg_tok_s", true);
    s_expect_number(j, "mem_bw_gb_s", true);
    s_expect_number(j, "tg_bound_tok_s", true);
    s_expect_number(j, "peak_rss_mb", true);
    s_expect_number(j, "tg_ratio", true);
    s_expect_number(j, "kv_mb", true);
    s_expect_number(j, "load_ms", false);
    s_expect_number(j, "repack_ms", false);
    s_expect_number(j, "repacked_mb", false);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "isa")));
    cJSON_Delete(j);

    // Names needing escapes survive the round trip; a short buffer is an error.
    r.model = "we\"ird\\name\n.gguf";
    assert_int_equal(mc_bench_json(&r, line, sizeof line, err), MC_OK);
    j = cJSON_Parse(line);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "model")->valuestring, r.model);
    cJSON_Delete(j);
    assert_int_equal(mc_bench_json(&r, line, 40, err), MC_ERR_ARG);
}

// An attached backend (a cluster file) leaves some experts to this process:
// those are repacked like the other matrices, as a coordinator's session
// repacks its local experts; the rest (the nodes') are not.
static mc_err_t s_attach_none(void *ctx, mc_engine_t *e, const mc_model_t *m, char *err) {
    (void)ctx, (void)e, (void)m, (void)err;
    return MC_OK;
}
static void s_detach_none(void *ctx) { (void)ctx; }
static bool s_local_first(void *ctx, uint32_t layer, uint32_t expert) {
    (void)ctx, (void)layer;
    return expert == 0;
}
static bool s_local_none(void *ctx, uint32_t layer, uint32_t expert) {
    (void)ctx, (void)layer, (void)expert;
    return false;
}

static void test_run_attached_repack(void **state) {
    (void)state;
    char err[MC_ERR_LEN], path[600];
    snprintf(path, sizeof path, "%s/tiny-q4_0.gguf", s_dir);
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q4_0;
    assert_int_equal(mc_mkmodel_write(&p, path, NULL), MC_OK);
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    o.model = path, o.n_threads = 1, o.n_prompt = 2, o.n_gen = 2, o.reps = 1, o.bw_bytes = 1u << 20;
    mc_bench_result_t all, first, none;
    assert_int_equal(mc_bench_run(&o, &all, err), MC_OK);
    o.attach = s_attach_none, o.detach = s_detach_none, o.local = s_local_first;
    assert_int_equal(mc_bench_run(&o, &first, err), MC_OK);
    o.local = s_local_none;
    assert_int_equal(mc_bench_run(&o, &none, err), MC_OK);
    // One expert of each layer: (gate, up, down) of ffn x dim Q4_0 each.
    const double expert_mb = 3.0 * p.ffn * (p.dim / 32 * 18) / (1024.0 * 1024.0);
    assert_true(none.repacked_mb > 0); // attention and the head
    assert_true(fabs(first.repacked_mb - none.repacked_mb - p.n_layer * expert_mb) < 1e-9);
    assert_true(fabs(all.repacked_mb - none.repacked_mb - p.n_layer * p.n_expert * expert_mb) < 1e-9);
    unlink(path);
}

// --mem-limit: the experts through a store, its counters in the table's
// result and the JSON; its flags parsed and checked.
static void test_run_mem_limit(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    assert_int_equal(o.mem_prefetch, -1);
    const char *good[] = {"--mem-limit", "1", "--mem-policy", "lfu", "--mem-prefetch", "transitions", "--cold"};
    assert_int_equal(s_parse(&o, good, 7, err), MC_OK);
    assert_true(o.mem_limit_mb == 1 && o.mem_policy == MC_STORE_LFU && o.mem_prefetch == MC_STORE_PRED_TRANSITIONS && o.cold);
    const char *none[] = {"--mem-limit", "1", "--mem-prefetch", "none"};
    assert_int_equal(s_parse(&o, none, 4, err), MC_OK);
    assert_int_equal(o.mem_prefetch, -1);
    mc_bench_opts_init(&o);
    const char *alone[] = {"--mem-policy", "lru"};
    assert_int_equal(s_parse(&o, alone, 2, err), MC_ERR_ARG);
    assert_string_equal(err, "--mem-policy and --mem-prefetch go with --mem-limit");
    const char *bad[] = {"--mem-limit", "1", "--mem-policy", "mru"};
    assert_int_equal(s_parse(&o, bad, 4, err), MC_ERR_ARG);
    assert_string_equal(err, "--mem-policy: 'mru' is not lru, lfu or hot");

    // --kv-type: parsed, and half the KV memory in the result and the JSON.
    mc_bench_opts_init(&o);
    assert_int_equal(o.kv_type, MC_DTYPE_F32);
    const char *kvf[] = {"--kv-type", "f16"};
    assert_int_equal(s_parse(&o, kvf, 2, err), MC_OK);
    assert_int_equal(o.kv_type, MC_DTYPE_F16);
    const char *kvbad[] = {"--kv-type", "bf16"};
    assert_int_equal(s_parse(&o, kvbad, 2, err), MC_ERR_ARG);
    assert_string_equal(err, "--kv-type: 'bf16' is not f32 or f16");
    double kv_mb[2];
    for (int k = 0; k < 2; k++) {
        mc_bench_opts_init(&o);
        o.model = s_model, o.n_threads = 2, o.n_prompt = 6, o.n_gen = 4, o.reps = 1, o.bw_bytes = 4u << 20;
        o.kv_type = k ? MC_DTYPE_F16 : MC_DTYPE_F32;
        mc_bench_result_t r;
        assert_int_equal(mc_bench_run(&o, &r, err), MC_OK);
        assert_int_equal(r.kv_type, o.kv_type);
        kv_mb[k] = r.kv_mb;
        char line[4096];
        assert_int_equal(mc_bench_json(&r, line, sizeof line, err), MC_OK);
        assert_non_null(strstr(line, k ? "\"kv_type\":\"f16\"" : "\"kv_type\":\"f32\""));
    }
    assert_true(kv_mb[0] > 0 && kv_mb[1] * 2 == kv_mb[0]);

    mc_bench_opts_init(&o);
    o.model = s_model, o.n_threads = 2, o.n_prompt = 6, o.n_gen = 4, o.reps = 1, o.bw_bytes = 4u << 20;
    o.mem_limit_mb = 1;
    mc_bench_result_t r;
    assert_int_equal(mc_bench_run(&o, &r, err), MC_OK);
    assert_true(r.store && r.mem_limit_mb == 1);
    assert_true(r.store_stats.hits + r.store_stats.misses > 0);
    assert_true(r.store_stats.reads > 0 && r.store_stats.errors == 0);
    assert_true(r.store_stats.used_bytes <= r.store_stats.budget_bytes);
    assert_true(r.tokens == 2u * (6 + 4));
    char line[4096];
    assert_int_equal(mc_bench_json(&r, line, sizeof line, err), MC_OK);
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    s_expect_number(j, "experts_mb", true);
    s_expect_number(j, "hit_rate", false);
    s_expect_number(j, "mb_read", true);
    s_expect_number(j, "stall_ms_per_token", false);
    s_expect_number(j, "pred_router_hit", false);
    s_expect_number(j, "pred_transitions_precision", false);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "mem_prefetch")->valuestring, "none");
    cJSON_Delete(j);
}

static void test_run_errors(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(s_model, err);
    assert_non_null(m);
    // The tiny model's context is 2048 positions.
    assert_null(mc_bench_engine_new(m, 1, &(mc_bench_shape_t){2000, 100, 1, 0, MC_DTYPE_F32, false, false}, err));
    assert_non_null(strstr(err, "context"));
    mc_engine_t *e = mc_bench_engine_new(m, 1, &(mc_bench_shape_t){4, 2, 1, 0, MC_DTYPE_F32, false, false}, err);
    assert_non_null(e);
    double pp = -1.0, tg = -1.0;
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 3, 1, 0, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_ERR_RANGE);
    assert_true(pp == -1.0 && tg == -1.0);
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 1, 0, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_OK);
    assert_true(pp > 0.0 && tg > 0.0);
    // one sequence only; no room for guesses
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 2, 0, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_ERR_RANGE);
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 1, 1, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_ERR_RANGE);
    mc_engine_destroy(&e);
    // Three sequences decoded together; then each verifying 3 guesses a step.
    assert_null(mc_bench_engine_new(m, 1, &(mc_bench_shape_t){4, 2, 0, 0, MC_DTYPE_F32, false, false}, err));
    e = mc_bench_engine_new(m, 1, &(mc_bench_shape_t){4, 2, 3, 0, MC_DTYPE_F32, false, false}, err);
    assert_non_null(e);
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 3, 0, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_OK);
    assert_true(pp > 0.0 && tg > 0.0);
    // Without the head (--no-head), with the CPU time per token of each phase.
    double ppc = -1.0, tgc = -1.0;
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 3, 0, MC_DTYPE_F32, true, false}, 2, &pp, &tg, &ppc, &tgc, err),
                     MC_OK);
    assert_true(pp > 0.0 && tg > 0.0 && ppc > 0.0 && tgc > 0.0);
    mc_engine_destroy(&e);
    e = mc_bench_engine_new(m, 1, &(mc_bench_shape_t){4, 2, 3, 3, MC_DTYPE_F32, false, false}, err);
    assert_non_null(e);
    assert_int_equal(mc_bench_speed(e, &(mc_bench_shape_t){4, 2, 3, 3, MC_DTYPE_F32, false, false}, 1, &pp, &tg, NULL, NULL, err), MC_OK);
    assert_true(pp > 0.0 && tg > 0.0);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);

    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.gguf", s_dir);
    o.model = missing;
    o.bw_bytes = 1u << 20;
    mc_bench_result_t r;
    memset(&r, 0x5A, sizeof r);
    assert_int_not_equal(mc_bench_run(&o, &r, err), MC_OK);
    assert_non_null(strstr(err, "missing.gguf"));
    assert_int_equal(r.reps, 0x5A5A5A5A);
    // Too many tokens for the context: refused before anything is measured.
    o.model = s_model;
    o.n_prompt = 2000;
    o.n_gen = 100;
    assert_int_equal(mc_bench_run(&o, &r, err), MC_ERR_RANGE);
    assert_int_equal(r.reps, 0x5A5A5A5A);
}

static void test_constrain(void **state) {
    (void)state;
    char err[MC_ERR_LEN], line[4096];
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    const char *argv[] = {"moe-bench", "--constrain", "--model", s_model, "-n", "24", "--reps", "1", "--threads", "1"};
    assert_int_equal(mc_bench_parse(10, (char **)argv, &o, err), MC_OK);
    assert_true(o.constrain);
    const char *mixed[] = {"moe-bench", "--constrain", "--batch", "2"};
    assert_int_equal(mc_bench_parse(4, (char **)mixed, &o, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--constrain takes only"));
    mc_bench_constrain_t r;
    if (mc_bench_constrain(&o, &r, err)) fail_msg("%s", err);
    assert_true(r.free_tok_s > 0 && r.con_tok_s > 0 && r.step_ms > 0);
    assert_true(r.con_tokens > 0 && r.con_tokens <= 24);
    assert_int_equal(r.model_vocab.n_vocab, 512);
    assert_int_equal(r.qwen_vocab.n_vocab, 151936);
    assert_true(r.qwen_vocab.trie_nodes > 151936 && r.qwen_vocab.tokens > 0 && r.qwen_vocab.walk_max_nodes > 0);
    assert_true(r.model_vocab.walk_us > 0 && r.qwen_vocab.walk_median_us > 0);
    assert_int_equal(mc_bench_constrain_json(&r, line, sizeof line, err), MC_OK);
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "qwen_vocab")->valueint, 151936);
    cJSON_Delete(j);
    assert_int_equal(mc_bench_constrain_json(&r, line, 16, err), MC_ERR_ARG);
}

// --corpus: which passage's run, which way, gets one id changed (tests the
// comparison of every run with the first).
typedef struct {
    uint32_t prompt, at;
    bool seeded, speculative;
    uint32_t skip; // matching runs left alone first
} s_tamper_t;

static void s_tamper(void *ctx, uint32_t prompt, bool seeded, bool speculative, int32_t *ids, uint32_t n) {
    s_tamper_t *t = ctx;
    if (prompt != t->prompt || seeded != t->seeded || speculative != t->speculative) return;
    if (t->skip) t->skip--;
    else if (t->at < n) ids[t->at] ^= 1;
}

static void s_write(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void test_speculate(void **state) {
    (void)state;
    char err[MC_ERR_LEN], line[4096], corpus[600];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", s_dir);
    // Three passages (blank lines between, leading ones ignored).
    s_write(corpus, "\n\nquote this back: the cat sat on the mat, the cat sat on the mat.\n\n"
                    "[{\"id\": 1, \"name\": \"a\"},\n {\"id\": 2, \"name\": \"b\"},\n\n\n"
                    "A plain sentence about the weather.\n");
    mc_bench_opts_t o;
    mc_bench_opts_init(&o);
    const char *argv[] = {"moe-bench", "--corpus", corpus, "--speculate", "4", "--model", s_model,
                          "-n", "24", "--reps", "2", "--threads", "1"};
    assert_int_equal(mc_bench_parse(13, (char **)argv, &o, err), MC_OK);
    assert_string_equal(o.corpus, corpus);
    assert_int_equal(o.speculate, 4);
    mc_bench_opts_t bad;
    mc_bench_opts_init(&bad);
    const char *lone[] = {"moe-bench", "--corpus", corpus};
    assert_int_equal(mc_bench_parse(3, (char **)lone, &bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "go together"));
    const char *lone_k[] = {"moe-bench", "--speculate", "4"};
    assert_int_equal(mc_bench_parse(3, (char **)lone_k, &bad, err), MC_ERR_ARG);
    const char *zero[] = {"moe-bench", "--corpus", corpus, "--speculate", "0"};
    assert_int_equal(mc_bench_parse(5, (char **)zero, &bad, err), MC_ERR_ARG);
    const char *rp[] = {"moe-bench", "--corpus", corpus, "--speculate", "4", "--repeat-penalty", "0.8"};
    assert_int_equal(mc_bench_parse(7, (char **)rp, &bad, err), MC_OK);
    assert_true(bad.repeat_penalty == 0.8f);
    assert_true(o.repeat_penalty == 1.0f); // off unless given
    const char *rp_alone[] = {"moe-bench", "--repeat-penalty", "0.8"};
    mc_bench_opts_init(&bad);
    assert_int_equal(mc_bench_parse(3, (char **)rp_alone, &bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--repeat-penalty goes with --corpus"));
    const char *mixed[] = {"moe-bench", "--corpus", corpus, "--speculate", "4", "--batch", "2"};
    assert_int_equal(mc_bench_parse(7, (char **)mixed, &bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--corpus takes only"));

    mc_bench_spec_t r;
    if (mc_bench_speculate(&o, &r, err)) fail_msg("%s", err);
    assert_int_equal(r.n_prompts, 3);
    assert_int_equal(r.k, 4);
    // Warm-up: the first prompt, greedy and seeded, without and with
    // speculation; then 2 repetitions of all three: every run compared but
    // the 6 references (each prompt's and way's first run without).
    assert_int_equal(r.compared, 2 * 2 + 2 * 3 * 2 * 2 - 3 * 2);
    const mc_bench_spec_way_t *ways[2] = {&r.greedy, &r.seeded};
    for (int w = 0; w < 2; w++) {
        const mc_bench_spec_way_t *x = ways[w];
        assert_true(x->off_tok_s > 0 && x->on_tok_s > 0 && x->ratio > 0);
        assert_true(x->off_cpu_ms > 0 && x->on_cpu_ms > 0);
        assert_int_equal(x->tokens, 3 * 24);
        assert_int_equal(x->steps_off, 3 * 23); // one step per token after the first
        uint64_t steps = 0, kept = 0;
        for (uint32_t p = 0; p < 3; p++) {
            const mc_bench_spec_prompt_t *pr = &x->prompt[p];
            assert_true(pr->prompt_tokens > 0);
            assert_int_equal(pr->tokens, 24);
            // Every step gives one token plus the guesses it kept.
            assert_int_equal(pr->steps_on + pr->spec.accepted, 23);
            assert_true(pr->spec.accepted <= pr->spec.proposed);
            steps += pr->steps_on, kept += pr->spec.accepted;
        }
        assert_int_equal(x->steps_on, steps);
        assert_int_equal(x->spec.accepted, kept);
    }
    // The tiny model's greedy answers fall into loops that the drafts find.
    assert_true(r.greedy.spec.accepted > 0);
    assert_true(r.prompt_tokens == (uint64_t)r.greedy.prompt[0].prompt_tokens + r.greedy.prompt[1].prompt_tokens +
                                       r.greedy.prompt[2].prompt_tokens);
    assert_int_equal(mc_bench_speculate_json(&r, line, sizeof line, err), MC_OK);
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "identical")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "cluster")));
    assert_int_equal(cJSON_GetObjectItem(j, "prompts")->valueint, 3);
    assert_true(cJSON_GetObjectItem(j, "repeat_penalty")->valuedouble == 1.0);
    assert_int_equal(cJSON_GetObjectItem(j, "greedy_accepted")->valueint, (int)r.greedy.spec.accepted);
    assert_true(cJSON_GetObjectItem(j, "seeded_ratio")->valuedouble > 0);
    assert_true(cJSON_GetObjectItem(j, "greedy_on_cpu_ms")->valuedouble > 0);
    assert_string_equal(cJSON_GetObjectItem(j, "corpus")->valuestring, corpus);
    cJSON_Delete(j);
    assert_int_equal(mc_bench_speculate_json(&r, line, 64, err), MC_ERR_ARG);
    FILE *devnull = fopen("/dev/null", "w");
    mc_bench_speculate_print(&r, devnull);
    fclose(devnull);

    // A repetition penalty below 1 (the answers loop): the same ids both
    // ways with the penalties in every draw, and more guesses kept.
    o.reps = 1, o.repeat_penalty = 0.5f;
    mc_bench_spec_t rl;
    if (mc_bench_speculate(&o, &rl, err)) fail_msg("%s", err);
    assert_true(rl.repeat_penalty == 0.5f);
    assert_true(rl.greedy.spec.accepted > r.greedy.spec.accepted);
    o.repeat_penalty = 1.0f;

    // One id changed in a speculative run, or in a later run without
    // speculation: the benchmark fails and names it.
    o.reps = 1;
    s_tamper_t t = {.prompt = 1, .at = 5, .seeded = false, .speculative = true, .skip = 0};
    o.on_ids = s_tamper, o.on_ids_ctx = &t;
    memset(&r, 0x5A, sizeof r);
    assert_int_equal(mc_bench_speculate(&o, &r, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "tokens differ: prompt 2, greedy, with speculation: token 5"));
    assert_int_equal(r.reps, 0x5A5A5A5A); // untouched on failure
    t = (s_tamper_t){.prompt = 0, .at = 23, .seeded = true, .speculative = false, .skip = 1}; // not the reference
    assert_int_equal(mc_bench_speculate(&o, &r, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "tokens differ: prompt 1, seeded sampling, without speculation: token 23"));
    t = (s_tamper_t){.prompt = 2, .at = 24, .seeded = true, .speculative = true}; // beyond the ids: unchanged
    assert_int_equal(mc_bench_speculate(&o, &r, err), MC_OK);
    o.on_ids = NULL;

    // A corpus without a passage, or with too many.
    s_write(corpus, "\n\n\n\n");
    assert_int_equal(mc_bench_speculate(&o, &r, err), MC_ERR_FORMAT);
    char many[MC_BENCH_SPEC_MAX_PROMPTS * 8 + 16] = "";
    for (int i = 0; i <= MC_BENCH_SPEC_MAX_PROMPTS; i++) strcat(many, "word\n\n");
    s_write(corpus, many);
    assert_int_equal(mc_bench_speculate(&o, &r, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "passages"));
    unlink(corpus);
}

static void test_kernel(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_bench_kernel_t k;
    const size_t bytes = mc_dtype_row_bytes(MC_DTYPE_Q4_K, 512) * 8;
    mc_bench_kernel_cfg_t cfg = {MC_DTYPE_Q4_K, 512, 8, bytes * 5 / 2, 0.001, 2, 2};
    assert_int_equal(mc_bench_kernel(&cfg, &k, err), MC_OK);
    assert_true(k.bytes == bytes);
    assert_int_equal(k.copies, 3);
    assert_int_equal(k.n_threads, 2);
    assert_true(isfinite(k.scalar_gb_s) && k.scalar_gb_s > 0.0);
    assert_true(isfinite(k.best_gb_s) && k.best_gb_s > 0.0);
    assert_true(isfinite(k.mt1_gb_s) && k.mt1_gb_s > 0.0);
    assert_true(isfinite(k.mtn_gb_s) && k.mtn_gb_s > 0.0);
    assert_int_equal(k.isa, mc_kernel_get(MC_DTYPE_Q4_K, MC_ISA_BEST)->isa);

    char line[1024];
    assert_int_equal(mc_bench_kernel_json(&k, line, sizeof line, err), MC_OK);
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "type")->valuestring, "Q4_K");
    s_expect_number(j, "scalar_gb_s", true);
    s_expect_number(j, "best_gb_s", true);
    s_expect_number(j, "t1_gb_s", true);
    s_expect_number(j, "tn_gb_s", true);
    s_expect_number(j, "isa_speedup", true);
    s_expect_number(j, "thread_speedup", true);
    cJSON_Delete(j);

    // Every weight type runs (one copy, a single row).
    for (uint32_t t = 0; t < 64; t++) {
        const mc_dtype_traits_t *tr = mc_dtype_traits(t);
        if (!tr || !tr->weight) continue;
        cfg = (mc_bench_kernel_cfg_t){(mc_dtype_t)t, 256, 1, 0, 0.0, 1, 1};
        assert_int_equal(mc_bench_kernel(&cfg, &k, err), MC_OK);
        assert_int_equal(k.copies, 1);
        assert_true(k.scalar_gb_s > 0.0 && k.best_gb_s > 0.0 && k.mt1_gb_s > 0.0 && k.mtn_gb_s > 0.0);
    }
    static const mc_bench_kernel_cfg_t bad[] = {
        {MC_DTYPE_Q8_K, 256, 4, 0, 0.0, 1, 1}, // activation-only type
        {MC_DTYPE_Q4_0, 48, 4, 0, 0.0, 1, 1},  // not whole blocks
        {MC_DTYPE_Q4_0, 64, 0, 0, 0.0, 1, 1},  // no rows
        {MC_DTYPE_Q4_0, 64, 4, 0, -1.0, 1, 1}, // negative sample time
        {MC_DTYPE_Q4_0, 64, 4, 0, 0.0, 0, 1},  // no threads
        {MC_DTYPE_Q4_0, 64, 4, 0, 0.0, 1, 0},  // no samples
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (mc_bench_kernel(&bad[i], &k, err) != MC_ERR_ARG) fail_msg("accepted bad kernel config #%zu", i);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median),      cmocka_unit_test(test_mem_bw),     cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),   cmocka_unit_test(test_cache_path), cmocka_unit_test(test_run), cmocka_unit_test(test_run_mem_limit),
        cmocka_unit_test(test_run_attached_repack),
        cmocka_unit_test(test_run_errors),  cmocka_unit_test(test_kernel),     cmocka_unit_test(test_constrain),
        cmocka_unit_test(test_speculate),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
