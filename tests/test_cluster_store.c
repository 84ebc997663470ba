/*
 * test_cluster_store: expert nodes under a memory limit (moe-expert
 * --mem-limit), real processes on 127.0.0.1.
 *
 * Through two nodes, each holding half the experts with its limit at 100%,
 * 50%, 25% of its share and one expert above the minimum, the logits of a
 * prompt (one batch) and of greedy steps are the same bits as one
 * machine's, on a generated model and on the Q4_0 and Q4_K_M fixtures. A
 * node whose model file is truncated while it serves fails the requests
 * that need a lost expert; the coordinator computes those shares itself
 * (also through its own store, under a limit of its own) and not one
 * logit changes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "expert_store.h"
#include "experts_factory.h"
#include "mkmodel.h"
#include "nodeproc.h"
#include "testnodes.h"
#include "testutil.h"

#define N_NODES 2
#define N_GEN 6

static char s_dir[256];
static mc_test_nodes_t s_nodes;
static mc_cluster_config_t *s_cfg;

static const int32_t s_ids[] = {1, 300, 301, 302, 260, 270, 280, 290, 3, 4, 5, 400, 410, 420, 430, 2, 500};
#define N_IDS (sizeof s_ids / sizeof s_ids[0])

static void s_stop(void) {
    mc_test_nodes_stop(&s_nodes);
    mc_cluster_config_destroy(&s_cfg);
}

static int s_stop_live(void **state) {
    (void)state;
    s_stop();
    return 0;
}

// Two nodes on `paths` (node i's model file), experts 0..n/2-1 and the
// rest, each with --mem-limit mb (0: none).
static void s_start(const char *const paths[N_NODES], uint32_t n_expert, unsigned mb) {
    char err[MC_ERR_LEN], name[32], set[32];
    mc_test_nodes_init(&s_nodes);
    s_cfg = mc_cluster_config_new();
    s_cfg->wire = MC_WIRE_AUTO;
    s_cfg->timeout_ms = 10000;
    s_cfg->retry_ms = 200;
    for (size_t i = 0; i < N_NODES; i++) {
        snprintf(name, sizeof name, "tier-%zu", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = paths[i], np.name = name, np.mem_limit_mb = mb;
        mc_test_nodes_start(&s_nodes, i, &np);
        snprintf(set, sizeof set, "%u-%u", i ? n_expert / 2 : 0, i ? n_expert - 1 : n_expert / 2 - 1);
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(set, &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(s_cfg, name, s_nodes.procs[i].endpoint, &ex, NULL, err), MC_OK);
    }
}

// Logits of the prompt and N_GEN greedy steps, (N_IDS + N_GEN, n_vocab),
// locally (cfg NULL) or through the cluster. before_step: called once
// before the greedy steps (NULL: nothing). *deaths: the nodes' losses.
static bool s_coord_store; // the coordinator under a memory limit too (two experts)

static float *s_logits(mc_model_t *m, const mc_cluster_config_t *cfg, void (*before_step)(void), uint32_t *deaths) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_expert_store_t *st = NULL;
    if (s_coord_store) { // every expert it may compute (a lost node's share) within the limit
        mc_expert_store_params_t sp = mc_expert_store_params_default();
        sp.budget_bytes = 2 * mc_expert_store_min_bytes(m, NULL);
        st = mc_expert_store_new(m, mc_engine_matmul(e), &sp, err);
        if (!st) fail_msg("store: %s", err);
        m->store = st;
    }
    mc_experts_params_t xp = mc_experts_params_default();
    xp.model = m, xp.mm = mc_engine_matmul(e), xp.cluster = cfg;
    mc_experts_t *x = mc_experts_new(&xp, err);
    if (!x) fail_msg("expert step: %s", err);
    mc_engine_set_experts(e, x);
    const uint32_t nv = m->hp.n_vocab;
    float *out = malloc((N_IDS + N_GEN) * nv * sizeof(float));
    if (mc_engine_eval(e, s_ids, N_IDS, 0, MC_LOGITS_ALL, out, err)) fail_msg("eval: %s", err);
    if (before_step) before_step();
    for (uint32_t i = 0; i < N_GEN; i++) {
        const float *row = out + (N_IDS + i - 1) * nv;
        int32_t best = 0;
        for (uint32_t v = 1; v < nv; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        if (mc_engine_eval(e, &best, 1, N_IDS + i, MC_LOGITS_LAST, out + (N_IDS + i) * nv, err))
            fail_msg("eval: %s", err);
    }
    *deaths = 0;
    for (size_t i = 0; i < mc_experts_n_nodes(x); i++) {
        mc_experts_node_stats_t st;
        mc_experts_node_stats(x, i, &st);
        *deaths += st.deaths;
        // Every node here runs under a limit and served requests: its store's
        // counters came back on its answers (what /metrics and /v1/cluster show).
        assert_true(st.requests > 0);
        assert_true(st.has_store);
        assert_true(st.store.budget_bytes > 0 && st.store.used_bytes <= st.store.budget_bytes);
        assert_true(st.store.hits + st.store.misses > 0);
    }
    if (st) {
        mc_expert_store_stats_t ss;
        mc_expert_store_stats(st, &ss);
        print_message("coordinator store: %llu reads, %llu hits, %llu misses\n", (unsigned long long)ss.reads,
                      (unsigned long long)ss.hits, (unsigned long long)ss.misses);
        assert_true(ss.reads > 0); // it computed the lost share through its store
    }
    mc_experts_destroy(&x);
    mc_engine_destroy(&e);
    m->store = NULL;
    mc_expert_store_destroy(&st);
    return out;
}

// Node limits at 100%, 50%, 25% of a node's share and the minimum plus one
// expert, in MiB (rounded up: --mem-limit counts whole MiB).
static void s_check_limits(const char *label, const char *path) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    const uint32_t ne = m->hp.n_expert;
    uint8_t *half = calloc((size_t)m->hp.n_layer * ne, 1);
    for (size_t i = 0; i < (size_t)m->hp.n_layer * ne; i++) half[i] = i % ne < ne / 2;
    const uint64_t share = mc_expert_store_total_bytes(m, half), least = mc_expert_store_min_bytes(m, NULL);
    free(half);
    const uint64_t mib = 1 << 20;
    const uint64_t bytes[] = {share, share / 2, share / 4, 2 * least};
    uint32_t deaths;
    float *ref = s_logits(m, NULL, NULL, &deaths);
    const size_t size = (N_IDS + N_GEN) * m->hp.n_vocab * sizeof(float);
    const char *const paths[N_NODES] = {path, path};
    unsigned last = 0;
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
        unsigned mb = (unsigned)((bytes[i] + mib - 1) / mib);
        if (mb * mib < least) mb = (unsigned)((least + mib - 1) / mib);
        if (mb == last) continue; // a small model's limits meet in whole MiB
        last = mb;
        s_start(paths, ne, mb);
        float *got = s_logits(m, s_cfg, NULL, &deaths);
        s_stop();
        print_message("%s: nodes at --mem-limit %u MiB (share %.1f MiB): %s\n", label, mb, share / (double)mib,
                      memcmp(ref, got, size) ? "DIFFERENT" : "same bits");
        assert_memory_equal(ref, got, size);
        assert_int_equal(deaths, 0);
        free(got);
    }
    free(ref);
    mc_model_destroy(&m);
}

static void test_generated(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    // 4 layers x 8 experts of 3 x 512 x 1024 Q8_0 values: 1.7 MiB an expert.
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0, p.dim = 512, p.ffn = 1024, p.n_layer = 4, p.n_head = 8, p.n_head_kv = 4;
    snprintf(path, sizeof path, "%s/gen.gguf", s_dir);
    if (mc_mkmodel_write(&p, path, err)) fail_msg("%s", err);
    s_check_limits("generated Q8_0", path);
    // Q4_0: repacked on arrival.
    p.type = MC_DTYPE_Q4_0, p.ffn = 2048;
    snprintf(path, sizeof path, "%s/gen-q4.gguf", s_dir);
    if (mc_mkmodel_write(&p, path, err)) fail_msg("%s", err);
    s_check_limits("generated Q4_0", path);
}

static void test_fixture_small_q4_k_m(void **state) {
    (void)state;
    char path[512];
    if (!mc_test_fixture("small-q4_k_m.gguf", path, sizeof path)) skip();
    s_check_limits("small-q4_k_m", path);
}

static void test_fixture_tiny_q4_0(void **state) {
    (void)state;
    char path[512];
    if (!mc_test_fixture("tiny-q4_0.gguf", path, sizeof path)) skip();
    s_check_limits("tiny-q4_0", path);
}

// The other families, from the repository's fixtures (F32, llama.cpp-checked).
static void test_fixture_families(void **state) {
    (void)state;
    static const char *const files[] = {"qwen3moe-f32", "olmoe-f32", "qwen2moe-f32", "glm4moe-f32"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/arch/%s.gguf", MC_REPO_FIXTURES, files[i]);
        s_check_limits(files[i], path);
    }
}

static void s_copy(const char *from, const char *to) {
    size_t len;
    uint8_t *buf = mc_test_read_file(from, &len);
    assert_non_null(buf);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    free(buf);
}

static char s_cut_path[512];
static off_t s_cut_at;

static void s_cut(void) { assert_int_equal(truncate(s_cut_path, s_cut_at), 0); }

// Node 2's copy of the file is cut under it between the prompt and the
// greedy steps: its requests for experts it no longer has resident fail
// (MC_ERR_IO), the coordinator computes them, and the logits are one
// machine's.
static void test_truncated_under_node(void **state) {
    (void)state;
    char src[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0, p.dim = 512, p.ffn = 1024, p.n_layer = 4, p.n_head = 8, p.n_head_kv = 4;
    snprintf(src, sizeof src, "%s/cut-src.gguf", s_dir);
    if (mc_mkmodel_write(&p, src, err)) fail_msg("%s", err);
    snprintf(s_cut_path, sizeof s_cut_path, "%s/cut-node.gguf", s_dir);
    s_copy(src, s_cut_path);
    mc_model_t *m = mc_model_open(src, err);
    assert_non_null(m);
    // Cut inside layer 1's experts: layers 1-3 of node 2's share are gone
    // (a node never reads the non-expert weights).
    s_cut_at = (off_t)(m->layers[1].experts[0].gate.data - mc_gguf_base(m->gguf));
    uint32_t deaths;
    float *ref = s_logits(m, NULL, NULL, &deaths);
    const char *const paths[N_NODES] = {src, s_cut_path};
    // A limit of two experts: every greedy step needs reads.
    const uint64_t least = mc_expert_store_min_bytes(m, NULL);
    s_start(paths, p.n_expert, (unsigned)((2 * least + (1 << 20) - 1) >> 20));
    float *got = s_logits(m, s_cfg, s_cut, &deaths);
    s_stop();
    print_message("node file cut under it: %u node losses, logits %s\n", deaths,
                  memcmp(ref, got, (N_IDS + N_GEN) * m->hp.n_vocab * sizeof(float)) ? "DIFFERENT" : "same bits");
    assert_true(deaths > 0); // its failed requests were computed here
    assert_memory_equal(ref, got, (N_IDS + N_GEN) * m->hp.n_vocab * sizeof(float));
    free(got);
    // Again with the coordinator under a limit of two experts: the share it
    // takes over is read through its own store.
    s_copy(src, s_cut_path);
    s_start(paths, p.n_expert, (unsigned)((2 * least + (1 << 20) - 1) >> 20));
    s_coord_store = true;
    got = s_logits(m, s_cfg, s_cut, &deaths);
    s_coord_store = false;
    s_stop();
    assert_true(deaths > 0);
    assert_memory_equal(ref, got, (N_IDS + N_GEN) * m->hp.n_vocab * sizeof(float));
    free(ref), free(got);
    mc_model_destroy(&m);
}

static int s_setup(void **state) {
    (void)state;
    mc_test_nodes_init(&s_nodes);
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_generated, s_stop_live),
        cmocka_unit_test_teardown(test_fixture_tiny_q4_0, s_stop_live),
        cmocka_unit_test_teardown(test_fixture_small_q4_k_m, s_stop_live),
        cmocka_unit_test_teardown(test_fixture_families, s_stop_live),
        cmocka_unit_test_teardown(test_truncated_under_node, s_stop_live),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
