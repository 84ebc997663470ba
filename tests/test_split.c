/*
 * test_split: moe-split's files (tools/split) with real moe-expert
 * processes on 127.0.0.1.
 *
 * Each node's file holds exactly its experts and their slice index; as the
 * nodes' --model they give one machine's logits to the bit; a node given
 * another node's file refuses the placement, naming the expert it lacks;
 * copied into an empty --cache-dir it is a warm cache: the node fetches
 * nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "experts.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "mkmodel.h"
#include "model.h"
#include "nodeproc.h"
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
static void s_start(size_t i, const char *model, const char *cache) {
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.model = model, np.cache_dir = cache, np.lease_ms = 300;
    mc_test_nodes_start(&s_nodes, i, &np);
}

static mc_cluster_config_t *s_config(void) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 10000;
    mc_expert_set_t a, b;
    assert_int_equal(mc_expert_set_parse("0-4", &a, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("3-7", &b, err), MC_OK);
    const char *ep0 = s_nodes.n > 0 ? s_nodes.procs[0].endpoint : "tcp://127.0.0.1:1";
    const char *ep1 = s_nodes.n > 1 ? s_nodes.procs[1].endpoint : "tcp://127.0.0.1:2";
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-1", ep0, &a, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-2", ep1, &b, NULL, err), MC_OK);
    return cfg;
}

static const int32_t s_ids[] = {1, 300, 17, 42, 259, 100, 7, 480};
#define N_IDS (sizeof s_ids / sizeof s_ids[0])

// Logits locally (cfg NULL) or with every node serving; *refusal gets the
// cluster's error instead when it cannot start (then NULL is returned).
static float *s_logits(const mc_model_t *m, const mc_cluster_config_t *cfg, uint64_t *sent, char *refusal) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64, ep.n_threads = 1;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = NULL;
    if (cfg && !(c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err))) {
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
    if (mc_engine_eval(e, s_ids, N_IDS, 0, MC_LOGITS_ALL, out, err)) fail_msg("%s", err);
    for (size_t i = 0; c && i < mc_cluster_n_nodes(c); i++) {
        mc_cluster_node_stats_t st;
        mc_cluster_node_stats(c, i, &st);
        assert_true(st.requests > 0);
        if (sent) sent[i] = st.transfer_bytes;
    }
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    return out;
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_split_files, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_dense_layer, s_stop_nodes),
        cmocka_unit_test_teardown(test_split_interleaved, s_stop_nodes),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
