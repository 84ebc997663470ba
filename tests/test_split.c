/*
 * test_split: moe-split's files (tools/split) with real moe-expert
 * processes on 127.0.0.1.
 *
 * Each node's file holds exactly its experts and their slice index; as the
 * nodes' --model they give one machine's logits to the bit; a node given
 * another node's file refuses the placement, naming the expert it lacks;
 * copied into an empty --cache-dir it is a warm cache: the node fetches
 * nothing. GPT-OSS (experts with biases) the same way, and through nodes
 * with an empty cache that fetch their experts, biases with them, from the
 * coordinator (also under --mem-limit); experts-only files with a bias
 * missing, of the wrong shape or type, or not finite, refused by name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "expert_file.h"
#include "gguf_writer.h"
#include "experts.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "mkmodel.h"
#include "model.h"
#include "nodeproc.h"
#include "slice_index.h"
#include "split.h"
#include "testnodes.h"
#include "testutil.h"

static char s_dir[256];
static mc_test_nodes_t s_nodes;

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

static int s_stop_nodes(void **state) {
    (void)state;
    mc_test_nodes_stop(&s_nodes);
    return 0;
}

// Node i from a --model file (cache NULL) or an --cache-dir.
static void s_start_limit(size_t i, const char *model, const char *cache, unsigned mem_limit_mb) {
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.model = model, np.cache_dir = cache, np.lease_ms = 300, np.mem_limit_mb = mem_limit_mb;
    mc_test_nodes_start(&s_nodes, i, &np);
}

static void s_start(size_t i, const char *model, const char *cache) { s_start_limit(i, model, cache, 0); }

// node-1 holds experts set1, node-2 set2.
static mc_cluster_config_t *s_config_sets(const char *set1, const char *set2) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 10000;
    mc_expert_set_t a, b;
    assert_int_equal(mc_expert_set_parse(set1, &a, err), MC_OK);
    assert_int_equal(mc_expert_set_parse(set2, &b, err), MC_OK);
    const char *ep0 = s_nodes.n > 0 ? s_nodes.procs[0].endpoint : "tcp://127.0.0.1:1";
    const char *ep1 = s_nodes.n > 1 ? s_nodes.procs[1].endpoint : "tcp://127.0.0.1:2";
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-1", ep0, &a, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-2", ep1, &b, NULL, err), MC_OK);
    return cfg;
}

static mc_cluster_config_t *s_config(void) { return s_config_sets("0-4", "3-7"); }

static const int32_t s_ids[] = {1, 300, 17, 42, 259, 100, 7, 480};
#define N_IDS (sizeof s_ids / sizeof s_ids[0])

// Logits locally (cfg NULL) or with every node serving; *refusal gets the
// cluster's error instead when it cannot start (then NULL is returned).
static float *s_logits_store(const mc_model_t *m, const mc_cluster_config_t *cfg, uint64_t *sent, char *refusal,
                             uint64_t *store_read, uint64_t *store_misses) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64, ep.n_threads = 1;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = NULL;
    if (cfg && !(c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err))) {
        if (!refusal) fail_msg("the cluster did not start: %s", err);
        snprintf(refusal, MC_ERR_LEN, "%s", err);
        mc_engine_destroy(&e);
        return NULL;
    }
    if (c) {
        const double until = mc_clock_ms() + 30000;
        for (bool all = false; !all;) {
            mc_experts_tick(mc_cluster_experts(c));
            all = true;
            for (size_t i = 0; i < mc_cluster_n_nodes(c); i++) {
                mc_cluster_node_stats_t st;
                mc_cluster_node_stats(c, i, &st);
                all &= st.alive;
            }
            if (mc_clock_ms() > until) fail_msg("nodes not ready");
        }
        mc_engine_set_experts(e, mc_cluster_experts(c));
    }
    float *out = malloc(N_IDS * m->hp.n_vocab * sizeof(float));
    int32_t ids[N_IDS];
    for (size_t i = 0; i < N_IDS; i++) ids[i] = s_ids[i] % (int32_t)m->hp.n_vocab;
    if (mc_engine_eval(e, ids, N_IDS, 0, MC_LOGITS_ALL, out, err)) fail_msg("%s", err);
    for (size_t i = 0; c && i < mc_cluster_n_nodes(c); i++) {
        mc_cluster_node_stats_t st;
        mc_cluster_node_stats(c, i, &st);
        assert_true(st.requests > 0);
        if (sent) sent[i] = st.transfer_bytes;
        if (store_read) store_read[i] = st.has_store ? st.store.bytes_read : 0;
        if (store_misses) store_misses[i] = st.has_store ? st.store.misses : 0;
    }
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    return out;
}

static float *s_logits(const mc_model_t *m, const mc_cluster_config_t *cfg, uint64_t *sent, char *refusal) {
    return s_logits_store(m, cfg, sent, refusal, NULL, NULL);
}

static void s_copy(const char *from, const char *to) {
    size_t n;
    uint8_t *b = mc_test_read_file(from, &n);
    assert_non_null(b);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static void test_split_files(void **state) {
    (void)state;
    char model[512], yaml[512], out[512], f1[600], f2[600], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.type = MC_DTYPE_Q4_K, mp.dim = 256, mp.ffn = 256, mp.n_layer = 3;
    snprintf(model, sizeof model, "%s/m.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(model, err);
    assert_non_null(m);
    // The cluster file as a user writes it (endpoints do not matter here).
    mc_cluster_config_t *cfg = s_config();
    snprintf(yaml, sizeof yaml, "%s/cluster.yaml", s_dir);
    FILE *f = fopen(yaml, "w");
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    snprintf(out, sizeof out, "%s/split", s_dir);
    mc_split_params_t sp = mc_split_params_default();
    sp.model = model, sp.cluster = yaml, sp.outdir = out;
    assert_int_equal(mc_split_run(&sp, err), MC_OK);
    snprintf(f1, sizeof f1, "%s/node-1.gguf", out);
    snprintf(f2, sizeof f2, "%s/node-2.gguf", out);
    // Exactly the node's experts, and the index beside it.
    mc_model_t *part = mc_model_open_node(f1, err);
    assert_non_null(part);
    assert_true(part->experts_only && mc_model_fingerprint(part) == mc_model_fingerprint(m));
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t e = 0; e < 8; e++) assert_true(mc_model_has_expert(part, l, e) == (e <= 4));
    mc_model_destroy(&part);
    char idx[700];
    snprintf(idx, sizeof idx, "%s.mcidx", f1);
    struct stat st;
    assert_int_equal(stat(idx, &st), 0);
    // The coordinator never takes such a file.
    assert_null(mc_model_open(f1, err));
    assert_non_null(strstr(err, "experts-only file"));

    float *ref = s_logits(m, NULL, NULL, NULL);
    s_start(0, f1, NULL), s_start(1, f2, NULL);
    cfg = s_config();
    float *got = s_logits(m, cfg, NULL, NULL);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    free(got);
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);

    // node-1's file on node-2: refused, naming an expert it lacks.
    s_start(0, f1, NULL), s_start(1, f1, NULL);
    cfg = s_config();
    char refusal[MC_ERR_LEN] = "";
    assert_null(s_logits(m, cfg, NULL, refusal));
    assert_non_null(strstr(refusal, "lacks expert 5 of layer 0"));
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);

    // As warm caches: nothing fetched.
    char c1[600], c2[600], to[700];
    snprintf(c1, sizeof c1, "%s/cache-1", s_dir);
    snprintf(c2, sizeof c2, "%s/cache-2", s_dir);
    mkdir(c1, 0755), mkdir(c2, 0755);
    snprintf(to, sizeof to, "%s/node-1.gguf", c1);
    s_copy(f1, to);
    snprintf(to, sizeof to, "%s/from-split.gguf", c2);
    s_copy(f2, to);
    s_start(0, NULL, c1), s_start(1, NULL, c2);
    cfg = s_config();
    uint64_t sent[2];
    got = s_logits(m, cfg, sent, NULL);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    assert_true(sent[0] == 0 && sent[1] == 0);
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);
    mc_model_destroy(&m);
}

// A GLM-4.5 model with a dense first layer: the files hold no expert of
// that layer (it has none), the nodes serve from them, one machine's bits.
static void test_split_dense_layer(void **state) {
    (void)state;
    char model[512], yaml[512], out[512], f1[600], f2[600], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.arch = MC_ARCH_GLM4MOE, mp.type = MC_DTYPE_Q4_0, mp.ffn = 64, mp.n_layer = 3, mp.n_dense_lead = 1;
    mp.n_nextn = 1, mp.rope_dim = 8;
    snprintf(model, sizeof model, "%s/glm.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(model, err);
    assert_non_null(m);
    mc_cluster_config_t *cfg = s_config();
    snprintf(yaml, sizeof yaml, "%s/glm.yaml", s_dir);
    FILE *f = fopen(yaml, "w");
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    snprintf(out, sizeof out, "%s/split-glm", s_dir);
    mc_split_params_t sp = mc_split_params_default();
    sp.model = model, sp.cluster = yaml, sp.outdir = out;
    if (mc_split_run(&sp, err)) fail_msg("%s", err);
    snprintf(f1, sizeof f1, "%s/node-1.gguf", out);
    snprintf(f2, sizeof f2, "%s/node-2.gguf", out);
    mc_model_t *part = mc_model_open_node(f1, err);
    assert_non_null(part);
    assert_int_equal(part->hp.n_layer, 3);
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t e = 0; e < 8; e++) assert_true(mc_model_has_expert(part, l, e) == (l > 0 && e <= 4));
    mc_model_destroy(&part);
    float *ref = s_logits(m, NULL, NULL, NULL);
    s_start(0, f1, NULL), s_start(1, f2, NULL);
    cfg = s_config();
    float *got = s_logits(m, cfg, NULL, NULL);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);
    mc_model_destroy(&m);
}

// A copy of GGUF file src at dst with the u32 metadata key set to v.
static mc_err_t s_copy_fill(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)err;
    const mc_gguf_tensor_t *t = mc_gguf_tensor_at(ctx, index);
    memcpy(dst, t->data, size < t->size ? size : t->size);
    return MC_OK;
}

static void s_copy_with(const char *src, const char *dst, const char *key, uint32_t v) {
    char err[MC_ERR_LEN];
    mc_gguf_t *g = mc_gguf_open(src, err);
    if (!g) fail_msg("%s", err);
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    assert_non_null(w);
    for (size_t i = 0; i < mc_gguf_kv_count(g); i++) {
        const mc_gguf_kv_t *kv = mc_gguf_kv_at(g, i);
        if (strcmp(kv->key, key) && strcmp(kv->key, "general.alignment"))
            assert_int_equal(mc_gguf_writer_add_value(w, kv->key, &kv->value), MC_OK);
    }
    assert_int_equal(mc_gguf_writer_add_u32(w, key, v), MC_OK);
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        assert_int_equal(mc_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne), MC_OK);
    }
    if (mc_gguf_writer_write_file(w, dst, s_copy_fill, g, err)) fail_msg("%s", err);
    mc_gguf_writer_destroy(&w);
    mc_gguf_destroy(&g);
}

// Interleaved dense layers (Qwen2-MoE, interleave_moe_layer_step 2 on 4
// layers: 0 and 2 dense): the node files hold experts of layers 1 and 3
// only, the nodes serve from them, one machine's bits.
static void test_split_interleaved(void **state) {
    (void)state;
    char model[512], yaml[512], out[512], f1[600], f2[600], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.arch = MC_ARCH_QWEN2MOE, mp.type = MC_DTYPE_Q4_0, mp.ffn = 64, mp.ffn_shexp = 64, mp.ffn_dense = 64;
    mp.n_layer = 4, mp.moe_step = 2;
    snprintf(model, sizeof model, "%s/step2.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(model, err);
    assert_non_null(m);
    mc_cluster_config_t *cfg = s_config();
    snprintf(yaml, sizeof yaml, "%s/step2.yaml", s_dir);
    FILE *f = fopen(yaml, "w");
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    snprintf(out, sizeof out, "%s/split-step2", s_dir);
    mc_split_params_t sp = mc_split_params_default();
    sp.model = model, sp.cluster = yaml, sp.outdir = out;
    if (mc_split_run(&sp, err)) fail_msg("%s", err);
    snprintf(f1, sizeof f1, "%s/node-1.gguf", out);
    snprintf(f2, sizeof f2, "%s/node-2.gguf", out);
    mc_model_t *part = mc_model_open_node(f1, err);
    assert_non_null(part);
    assert_int_equal(part->hp.moe_step, 2);
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t e = 0; e < 8; e++) assert_true(mc_model_has_expert(part, l, e) == (l % 2 == 1 && e <= 4));
    mc_model_destroy(&part);
    // The same file saying that layer 1 is dense too: its experts there are refused.
    char hostile[640];
    snprintf(hostile, sizeof hostile, "%s/hostile.gguf", out);
    s_copy_with(f1, hostile, "qwen2moe.leading_dense_block_count", 2);
    assert_null(mc_model_open_node(hostile, err));
    if (!strstr(err, "expert 0 of layer 1: layer 1 is dense")) fail_msg("%s", err);
    s_copy_with(f1, hostile, "qwen2moe.interleave_moe_layer_step", 2); // the same file: loads
    part = mc_model_open_node(hostile, err);
    if (!part) fail_msg("%s", err);
    mc_model_destroy(&part);
    float *ref = s_logits(m, NULL, NULL, NULL);
    s_start(0, f1, NULL), s_start(1, f2, NULL);
    cfg = s_config();
    float *got = s_logits(m, cfg, NULL, NULL);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);
    mc_model_destroy(&m);
}

// --- GPT-OSS: experts with biases -----------------------------------------------------

// Split model (a path) for node-1 holding set1 and node-2 set2 into
// s_dir/label, the files' paths in f1, f2.
static void s_split_sets(const char *label, const char *model, const char *set1, const char *set2, char *f1, char *f2,
                         size_t cap) {
    char yaml[512], out[512], err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = s_config_sets(set1, set2);
    snprintf(yaml, sizeof yaml, "%s/%s.yaml", s_dir, label);
    FILE *f = fopen(yaml, "w");
    assert_non_null(f);
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    snprintf(out, sizeof out, "%s/split-%s", s_dir, label);
    mc_split_params_t sp = mc_split_params_default();
    sp.model = model, sp.cluster = yaml, sp.outdir = out;
    if (mc_split_run(&sp, err)) fail_msg("%s", err);
    snprintf(f1, cap, "%s/node-1.gguf", out);
    snprintf(f2, cap, "%s/node-2.gguf", out);
}

// The experts-only file at path holds exactly the experts of set, each
// with its three biases as the whole model m has them.
static void s_check_part(const mc_model_t *m, const char *path, const char *set) {
    char err[MC_ERR_LEN];
    mc_expert_set_t es;
    assert_int_equal(mc_expert_set_parse(set, &es, err), MC_OK);
    mc_model_t *part = mc_model_open_node(path, err);
    if (!part) fail_msg("%s", err);
    assert_true(part->experts_only && mc_model_fingerprint(part) == mc_model_fingerprint(m));
    const uint32_t ffn = m->hp.ffn, dim = m->hp.dim;
    for (uint32_t l = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++) {
            const bool held = mc_expert_set_has(&es, e);
            assert_true(mc_model_has_expert(part, l, e) == held);
            if (!held) continue;
            const mc_layer_t *a = &m->layers[l], *b = &part->layers[l];
            assert_non_null(b->exp_b_gate), assert_non_null(b->exp_b_up), assert_non_null(b->exp_b_down);
            assert_memory_equal(b->exp_b_gate + (size_t)e * ffn, a->exp_b_gate + (size_t)e * ffn, ffn * sizeof(float));
            assert_memory_equal(b->exp_b_up + (size_t)e * ffn, a->exp_b_up + (size_t)e * ffn, ffn * sizeof(float));
            assert_memory_equal(b->exp_b_down + (size_t)e * dim, a->exp_b_down + (size_t)e * dim, dim * sizeof(float));
            assert_int_equal(mc_model_expert_bytes(part, l, e), mc_model_expert_bytes(m, l, e));
        }
    mc_model_destroy(&part);
}

// A GPT-OSS model through two nodes: from moe-split's files, then from
// empty caches (every expert, weights and biases, fetched from the
// coordinator), then from empty caches under a 1 MB --mem-limit (the
// store reads the fetched experts from the cache file; with evicts, the
// held experts do not all fit and some are read when used): one machine's
// logits to the bit each time.
static void s_gptoss_through(const char *label, const char *model, bool evicts) {
    char f1[600], f2[600], err[MC_ERR_LEN];
    const char *set1 = "0-8", *set2 = "7-15";
    mc_model_t *m = mc_model_open(model, err);
    if (!m) fail_msg("%s", err);
    assert_true(m->hp.arch->expert_ffn_bias && m->hp.n_expert == 16);
    s_split_sets(label, model, set1, set2, f1, f2, sizeof f1);
    s_check_part(m, f1, set1);
    s_check_part(m, f2, set2);
    const size_t n_logits = N_IDS * m->hp.n_vocab;
    float *ref = s_logits(m, NULL, NULL, NULL);

    s_start(0, f1, NULL), s_start(1, f2, NULL);
    mc_cluster_config_t *cfg = s_config_sets(set1, set2);
    float *got = s_logits(m, cfg, NULL, NULL);
    assert_memory_equal(got, ref, n_logits * sizeof(float));
    free(got);
    mc_cluster_config_destroy(&cfg);
    s_stop_nodes(NULL);

    for (unsigned limit = 0; limit <= 1; limit++) {
        char c1[600], c2[600];
        snprintf(c1, sizeof c1, "%s/%s-cache-1-%u", s_dir, label, limit);
        snprintf(c2, sizeof c2, "%s/%s-cache-2-%u", s_dir, label, limit);
        s_start_limit(0, NULL, c1, limit), s_start_limit(1, NULL, c2, limit);
        cfg = s_config_sets(set1, set2);
        uint64_t sent[2], store_read[2], misses[2];
        got = s_logits_store(m, cfg, sent, NULL, store_read, misses);
        assert_memory_equal(got, ref, n_logits * sizeof(float));
        free(got);
        // Every held expert's slice, biases included, came from the coordinator.
        const char *sets[2] = {set1, set2};
        for (int i = 0; i < 2; i++) {
            mc_expert_set_t es;
            assert_int_equal(mc_expert_set_parse(sets[i], &es, err), MC_OK);
            uint64_t want = 0, weights = 0;
            for (uint32_t l = 0; l < m->hp.n_layer; l++)
                for (uint32_t e = 0; e < m->hp.n_expert; e++) {
                    if (!mc_expert_set_has(&es, e)) continue;
                    const mc_expert_t *x = &m->layers[l].experts[e];
                    want += mc_model_expert_bytes(m, l, e);
                    weights += mc_matrix_bytes(&x->gate) + mc_matrix_bytes(&x->up) + mc_matrix_bytes(&x->down);
                }
            assert_true(sent[i] == want && want > weights);
            if (limit) assert_true(store_read[i] > 0);
            if (limit && evicts) assert_true(misses[i] > 0);
        }
        mc_cluster_config_destroy(&cfg);
        s_stop_nodes(NULL);
        // What the node wrote is an experts-only file like moe-split's.
        char own[700];
        snprintf(own, sizeof own, "%s/%016llx.gguf", c1, (unsigned long long)mc_model_fingerprint(m));
        s_check_part(m, own, set1);
    }
    free(ref);
    mc_model_destroy(&m);
}

static void test_split_gptoss_generated(void **state) {
    (void)state;
    char model[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.arch = MC_ARCH_GPTOSS, mp.type = MC_DTYPE_MXFP4;
    mp.ffn = 32, mp.n_expert = 16, mp.n_expert_used = 4, mp.n_layer = 3, mp.head_dim = 32, mp.n_swa = 4,
    mp.yarn_factor = 4;
    snprintf(model, sizeof model, "%s/gptoss-mxfp4.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    s_gptoss_through("gen", model, false);
    // Wider: a node's 27 experts (about 3 MB) do not fit its 1 MB.
    mp.dim = 256, mp.ffn = 256;
    snprintf(model, sizeof model, "%s/gptoss-mxfp4-256.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    s_gptoss_through("gen-256", model, true);
}

static void test_split_gptoss_fixtures(void **state) {
    (void)state;
    static const char *const names[] = {"gptoss-f32", "gptoss-mxfp4"};
    for (size_t i = 0; i < 2; i++) {
        char model[512];
        snprintf(model, sizeof model, "%s/arch/%s.gguf", MC_REPO_FIXTURES, names[i]);
        s_gptoss_through(names[i], model, false);
    }
}

// A hand-made experts-only file of expert 0 of layer 0 of m: its three
// weights, then its biases as told (skip: left out; ne0: the length
// declared; type; nan: one value not finite).
typedef struct {
    bool skip;
    uint64_t ne0;
    mc_dtype_t type;
    bool nan;
} s_bias_t;

typedef struct {
    const mc_model_t *m;
    int part[6]; // tensor i is part part[i] of the expert
    const s_bias_t *b;
} s_craft_t;

static mc_err_t s_craft_fill(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)err;
    const s_craft_t *c = ctx;
    const int j = c->part[index];
    uint64_t len;
    const uint8_t *src = mc_expert_file_part(c->m, 0, 0, (uint32_t)j, &len);
    memset(dst, 0, size);
    if (j < 3 || c->b[j - 3].type == MC_DTYPE_F32) memcpy(dst, src, len < size ? (size_t)len : size);
    if (j >= 3 && c->b[j - 3].nan) ((float *)dst)[1] = (float)NAN;
    return MC_OK;
}

static void s_craft(const mc_model_t *m, const s_bias_t b[3], const char *path) {
    char err[MC_ERR_LEN];
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    assert_non_null(w);
    assert_int_equal(mc_expert_file_meta(m->gguf, mc_model_fingerprint(m), w, err), MC_OK);
    mc_dtype_t t[3];
    mc_expert_file_types(m, 0, 0, t);
    const uint32_t dim = m->hp.dim, ffn = m->hp.ffn;
    const uint64_t ne[3][2] = {{dim, ffn}, {dim, ffn}, {ffn, dim}};
    static const char *const part[3] = {"gate", "up", "down"};
    s_craft_t c = {.m = m, .b = b};
    size_t n = 0;
    for (int j = 0; j < 6; j++) {
        char name[64];
        if (j < 3) {
            snprintf(name, sizeof name, "blk.0.ffn_%s.0.weight", part[j]);
            assert_int_equal(mc_gguf_writer_add_tensor(w, name, t[j], 2, ne[j]), MC_OK);
        } else if (!b[j - 3].skip) {
            snprintf(name, sizeof name, "blk.0.ffn_%s.0.bias", part[j - 3]);
            assert_int_equal(mc_gguf_writer_add_tensor(w, name, b[j - 3].type, 1, &b[j - 3].ne0), MC_OK);
        } else {
            continue;
        }
        c.part[n++] = j;
    }
    assert_int_equal(mc_gguf_writer_write_file(w, path, s_craft_fill, &c, err), MC_OK);
    mc_gguf_writer_destroy(&w);
}

// Experts-only files whose biases are wrong are refused, naming the tensor;
// the same file with right biases binds (the crafting itself is sound).
static void test_split_gptoss_hostile(void **state) {
    (void)state;
    char model[512], path[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.arch = MC_ARCH_GPTOSS, mp.type = MC_DTYPE_MXFP4;
    mp.ffn = 32, mp.n_expert = 16, mp.n_expert_used = 4, mp.n_layer = 2, mp.head_dim = 32, mp.n_swa = 4;
    snprintf(model, sizeof model, "%s/gptoss-hostile.gguf", s_dir);
    if (mc_mkmodel_write(&mp, model, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(model, err);
    if (!m) fail_msg("%s", err);
    const uint64_t dim = m->hp.dim, ffn = m->hp.ffn;
    assert_true(dim != ffn);
    snprintf(path, sizeof path, "%s/hostile.gguf", s_dir);
    const s_bias_t good[3] = {{false, ffn, MC_DTYPE_F32, false}, {false, ffn, MC_DTYPE_F32, false},
                              {false, dim, MC_DTYPE_F32, false}};
    s_craft(m, good, path);
    mc_model_t *part = mc_model_open_node(path, err);
    if (!part) fail_msg("%s", err);
    assert_true(mc_model_has_expert(part, 0, 0) && !mc_model_has_expert(part, 0, 1));
    assert_memory_equal(part->layers[0].exp_b_down, m->layers[0].exp_b_down, dim * sizeof(float));
    mc_model_destroy(&part);
    // A slice's hash covers each of its biases (the node's check that it
    // serves the coordinator's experts).
    uint8_t h0[MC_SLICE_HASH_BYTES], h1[MC_SLICE_HASH_BYTES];
    assert_int_equal(mc_slice_hash(m, 1, 3, h0), MC_OK);
    float *b_parts[3] = {m->layers[1].exp_b_gate + 3 * ffn, m->layers[1].exp_b_up + 3 * ffn,
                         m->layers[1].exp_b_down + 3 * dim};
    for (int j = 0; j < 3; j++) {
        const float keep = b_parts[j][0];
        b_parts[j][0] = nextafterf(keep, INFINITY);
        assert_int_equal(mc_slice_hash(m, 1, 3, h1), MC_OK);
        b_parts[j][0] = keep;
        assert_memory_not_equal(h0, h1, sizeof h0);
    }
    assert_int_equal(mc_slice_hash(m, 1, 3, h1), MC_OK);
    assert_memory_equal(h0, h1, sizeof h0);

    struct {
        int which;
        s_bias_t b;
        const char *want;
    } cases[] = {
        {2, {true, dim, MC_DTYPE_F32, false}, "tensor 'blk.0.ffn_down.0.bias' is missing: every GPT-OSS expert has"},
        {0, {true, ffn, MC_DTYPE_F32, false}, "tensor 'blk.0.ffn_gate.0.bias' is missing"},
        {2, {false, ffn, MC_DTYPE_F32, false}, "tensor 'blk.0.ffn_down.0.bias' has shape {32}, expected {"},
        {1, {false, dim, MC_DTYPE_F32, false}, "tensor 'blk.0.ffn_up.0.bias' has shape {"},
        {1, {false, ffn, MC_DTYPE_F16, false}, "tensor 'blk.0.ffn_up.0.bias' has type F16"},
        {2, {false, dim, MC_DTYPE_F32, true}, "tensor 'blk.0.ffn_down.0.bias' holds a non-finite value at 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_bias_t b[3];
        memcpy(b, good, sizeof b);
        b[cases[i].which] = cases[i].b;
        s_craft(m, b, path);
        assert_null(mc_model_open_node(path, err));
        if (!strstr(err, cases[i].want)) fail_msg("case %zu: %s", i, err);
    }
    mc_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_split_files, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_dense_layer, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_interleaved, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_gptoss_generated, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_gptoss_fixtures, s_stop_nodes),
        cmocka_unit_test(test_split_gptoss_hostile),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
