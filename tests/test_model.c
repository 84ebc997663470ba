/*
 * test_model: hyperparameters and tensor binding from real and generated
 * files, expert views in both layouts, and clear errors for files that are
 * not Mixtral-family MoE models.
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

#include "gguf_writer.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"

static char s_dir[256];

static int s_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static void test_fixture_hparams(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof path)) skip();
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    const mc_hparams_t *hp = &m->hp;
    assert_int_equal(hp->n_vocab, 32000);
    assert_int_equal(hp->dim, 64);
    assert_int_equal(hp->n_layer, 2);
    assert_int_equal(hp->n_head, 4);
    assert_int_equal(hp->n_head_kv, 2);
    assert_int_equal(hp->head_dim, 16);
    assert_int_equal(hp->rope_dim, 16);
    assert_int_equal(hp->ffn, 128);
    assert_int_equal(hp->n_expert, 8);
    assert_int_equal(hp->n_expert_used, 2);
    assert_int_equal(hp->n_ctx_train, 32768);
    assert_true(hp->rope_base == 1e6f);
    assert_true(hp->rms_eps == 1e-5f);
    assert_false(m->legacy_experts);
    // Merged layout: expert e is the e-th contiguous slab of the tensor.
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(m->gguf, "blk.1.ffn_down_exps.weight");
    assert_non_null(t);
    for (uint32_t e = 0; e < 8; e++) {
        mc_expert_t x;
        assert_int_equal(mc_model_expert(m, 1, e, &x), MC_OK);
        assert_ptr_equal(x.down.data, t->data + (size_t)e * 64 * 128 * 4);
        assert_int_equal(x.down.n_in, 128);
        assert_int_equal(x.down.n_out, 64);
        assert_int_equal(x.gate.n_in, 64);
        assert_int_equal(x.gate.n_out, 128);
    }
    mc_expert_t x;
    assert_int_equal(mc_model_expert(m, 2, 0, &x), MC_ERR_RANGE);
    assert_int_equal(mc_model_expert(m, 0, 8, &x), MC_ERR_RANGE);
    // Attention 4 x 64x64-ish F32 matrices, router, 2 of 8 experts, the head.
    uint64_t per_layer = (64 * 64 + 2 * 64 * 32 + 64 * 64 + 64 * 8 + 2 * 3 * 64 * 128) * 4;
    assert_int_equal(mc_model_bytes_per_token(m), 2 * per_layer + 64 * 32000 * 4);
    mc_model_destroy(&m);
    mc_model_destroy(&m);
}

static void test_quant_fixture_types(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_fixture("small-q4_k_m.gguf", path, sizeof path)) skip();
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    assert_int_equal(m->hp.dim, 256);
    assert_int_equal(m->hp.head_dim, 32);
    assert_int_equal(m->layers[0].experts[3].gate.type, MC_DTYPE_Q4_K);
    assert_int_equal(m->layers[3].experts[3].down.type, MC_DTYPE_Q6_K);
    assert_int_equal(m->layers[0].wo.type, MC_DTYPE_Q5_K);
    assert_int_equal(m->layers[0].wk.type, MC_DTYPE_Q8_0);
    assert_int_equal(m->output.type, MC_DTYPE_Q6_K);
    mc_model_destroy(&m);
}

// Writes src's bytes to dst with byte `value` at the scale of MXFP4 block
// `block` of tensor `name`; returns that byte's file offset.
static long s_patch_scale(const char *src, const char *dst, const char *name, uint64_t block, uint8_t value) {
    char err[MC_ERR_LEN];
    mc_gguf_t *g = mc_gguf_open(src, err);
    assert_non_null(g);
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    assert_non_null(t);
    assert_int_equal(t->type, MC_DTYPE_MXFP4);
    assert_true((block + 1) * sizeof(mc_block_mxfp4_t) <= t->size);
    const long off = (long)(t->data - mc_gguf_base(g)) + (long)(block * sizeof(mc_block_mxfp4_t));
    mc_gguf_destroy(&g);
    size_t len;
    uint8_t *buf = mc_test_read_file(src, &len);
    assert_non_null(buf);
    assert_true(buf[off] != 0xFF); // the quantizer never writes the NaN byte
    buf[off] = value;
    FILE *f = fopen(dst, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    free(buf);
    return off;
}

// An MXFP4 expert block whose E8M0 scale is 0xFF (NaN) is refused when the
// expert is first checked (mc_model_expert_check, what a product from the
// mapping calls), the error naming the tensor, the block, its row (and
// expert) and its values; opening the file reads no expert (it opens), the
// other experts check clean, and 0xFE, the largest number, passes. Merged
// and per-expert tensors, through mc_model_open and mc_model_open_node.
static void s_expect_bad(const char *path, bool node, uint32_t layer, uint32_t bad_e, const char *want) {
    char err[MC_ERR_LEN];
    mc_model_t *m = node ? mc_model_open_node(path, err) : mc_model_open(path, err);
    if (!m) fail_msg("the open read an expert's scales: %s", err);
    assert_non_null(m->expert_checked);
    for (uint32_t e = 0; e < m->hp.n_expert; e++) {
        if (e == bad_e) continue;
        if (mc_model_expert_check(m, layer, e, err)) fail_msg("expert %u: %s", e, err);
    }
    for (int i = 0; i < 2; i++) { // refused again: a failed check is not remembered as done
        err[0] = 0;
        assert_int_equal(mc_model_expert_check(m, layer, bad_e, err), MC_ERR_FORMAT);
        if (!strstr(err, want)) fail_msg("%s", err);
    }
    assert_int_equal(mc_model_expert_check(m, layer, m->hp.n_expert, err), MC_OK); // out of range: nothing to multiply
    mc_model_destroy(&m);
}

static void test_mxfp4_bad_scale(void **state) {
    (void)state;
    char good[512], bad[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default(); // dim 64, ffn 128: 2 blocks per gate/up row
    p.type = MC_DTYPE_MXFP4;
    snprintf(good, sizeof good, "%s/mxfp4.gguf", s_dir);
    snprintf(bad, sizeof bad, "%s/mxfp4-bad.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, good, err), MC_OK);
    mc_model_t *m = mc_model_open(good, err);
    assert_non_null(m);
    for (uint32_t l = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++) assert_int_equal(mc_model_expert_check(m, l, e, err), MC_OK);
    mc_model_destroy(&m);
    // Expert 5, row 17, second block: block (5 * 128 + 17) * 2 + 1 = 1315 of the tensor.
    s_patch_scale(good, bad, "blk.1.ffn_up_exps.weight", 1315, 0xFF);
    s_expect_bad(bad, false, 1, 5,
                 "tensor 'blk.1.ffn_up_exps.weight': MXFP4 block 1315 (row 657, expert 5, values 32..63) has the scale "
                 "byte 0xFF");
    s_patch_scale(good, bad, "blk.1.ffn_up_exps.weight", 1315, 0xFE);
    m = mc_model_open(bad, err);
    if (!m) fail_msg("%s", err);
    assert_int_equal(mc_model_expert_check(m, 1, 5, err), MC_OK);
    mc_model_destroy(&m);
    // The first block of the first tensor and the last of the last.
    s_patch_scale(good, bad, "blk.0.ffn_gate_exps.weight", 0, 0xFF);
    s_expect_bad(bad, false, 0, 0, "'blk.0.ffn_gate_exps.weight': MXFP4 block 0 (row 0, expert 0, values 0..31)");
    s_patch_scale(good, bad, "blk.1.ffn_down_exps.weight", 8 * 64 * 4 - 1, 0xFF); // 8 experts x 64 rows x 4 blocks
    s_expect_bad(bad, false, 1, 7, "MXFP4 block 2047 (row 511, expert 7, values 96..127)");
    // Per-expert tensors (as experts-only files hold them), by either open.
    p.legacy_layout = true;
    assert_int_equal(mc_mkmodel_write(&p, good, err), MC_OK);
    s_patch_scale(good, bad, "blk.0.ffn_down.2.weight", 9, 0xFF); // row 2, block 1 of 4
    s_expect_bad(bad, false, 0, 2, "tensor 'blk.0.ffn_down.2.weight': MXFP4 block 9 (row 2, values 32..63)");
    s_expect_bad(bad, true, 0, 2, "tensor 'blk.0.ffn_down.2.weight': MXFP4 block 9 (row 2, values 32..63)");
    // A model without MXFP4 experts has nothing to check.
    p.type = MC_DTYPE_Q8_0, p.legacy_layout = false;
    assert_int_equal(mc_mkmodel_write(&p, good, err), MC_OK);
    assert_non_null(m = mc_model_open(good, err));
    assert_null(m->expert_checked);
    assert_int_equal(mc_model_expert_check(m, 0, 0, err), MC_OK);
    mc_model_destroy(&m);
}

static void test_legacy_views(void **state) {
    (void)state;
    char a[512], b[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0;
    snprintf(a, sizeof a, "%s/merged.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, a, err), MC_OK);
    p.legacy_layout = true;
    snprintf(b, sizeof b, "%s/legacy.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, b, err), MC_OK);
    mc_model_t *mm = mc_model_open(a, err), *ml = mc_model_open(b, err);
    assert_non_null(mm);
    assert_non_null(ml);
    assert_true(ml->legacy_experts);
    for (uint32_t l = 0; l < mm->hp.n_layer; l++)
        for (uint32_t e = 0; e < mm->hp.n_expert; e++) {
            mc_expert_t x, y;
            assert_int_equal(mc_model_expert(mm, l, e, &x), MC_OK);
            assert_int_equal(mc_model_expert(ml, l, e, &y), MC_OK);
            assert_ptr_not_equal(x.up.data, y.up.data);
            assert_memory_equal(x.gate.data, y.gate.data, x.gate.row_bytes * x.gate.n_out);
            assert_memory_equal(x.up.data, y.up.data, x.up.row_bytes * x.up.n_out);
            assert_memory_equal(x.down.data, y.down.data, x.down.row_bytes * x.down.n_out);
        }
    // Different files, different fingerprints; the same file, the same one.
    mc_model_t *mm2 = mc_model_open(a, err);
    assert_int_equal(mc_model_fingerprint(mm), mc_model_fingerprint(mm2));
    assert_int_not_equal(mc_model_fingerprint(mm), mc_model_fingerprint(ml));
    mc_model_destroy(&mm2);
    mc_model_destroy(&mm);
    mc_model_destroy(&ml);
}

// Write a model-like file with the given metadata variations.
typedef struct {
    const char *arch;
    bool with_experts_key;
    bool with_expert_tensors;
    bool bad_q_shape;
    // Shared-expert tensors written, in the order gate_inp, gate, up, down
    // (0: none); shexp_bad_gate: the gate input as a (dim, 2) matrix.
    int shexp;
    bool shexp_bad_gate;
} s_variant_t;

static mc_err_t s_fill_zero(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)ctx, (void)index, (void)err;
    memset(dst, 0, size);
    return MC_OK;
}

// True when the variant binds as a model (err holds the reason otherwise).
static bool s_loads(const s_variant_t *v, char *err) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    const uint32_t dim = 32, ffn = 64, vocab = 16, ne = 4;
    char arch_key[64];
    mc_gguf_writer_add_str(w, "general.architecture", v->arch);
#define K(suffix) (snprintf(arch_key, sizeof arch_key, "%s.%s", v->arch, suffix), arch_key)
    mc_gguf_writer_add_u32(w, K("block_count"), 1);
    mc_gguf_writer_add_u32(w, K("context_length"), 128);
    mc_gguf_writer_add_u32(w, K("embedding_length"), dim);
    mc_gguf_writer_add_u32(w, K("feed_forward_length"), ffn);
    mc_gguf_writer_add_u32(w, K("expert_feed_forward_length"), ffn); // read by the families that have it
    mc_gguf_writer_add_u32(w, K("attention.head_count"), 4);
    mc_gguf_writer_add_u32(w, K("attention.head_count_kv"), 2);
    if (v->with_experts_key) {
        mc_gguf_writer_add_u32(w, K("expert_count"), ne);
        mc_gguf_writer_add_u32(w, K("expert_used_count"), 2);
    }
#undef K
    mc_gguf_writer_add_tensor(w, "token_embd.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, vocab});
    mc_gguf_writer_add_tensor(w, "output_norm.weight", MC_DTYPE_F32, 1, (uint64_t[]){dim});
    mc_gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", MC_DTYPE_F32, 1, (uint64_t[]){dim});
    mc_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", MC_DTYPE_F32, 2,
                              (uint64_t[]){dim, v->bad_q_shape ? dim + 1 : dim});
    mc_gguf_writer_add_tensor(w, "blk.0.attn_k.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, dim / 2});
    mc_gguf_writer_add_tensor(w, "blk.0.attn_v.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, dim / 2});
    mc_gguf_writer_add_tensor(w, "blk.0.attn_output.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, dim});
    mc_gguf_writer_add_tensor(w, "blk.0.ffn_norm.weight", MC_DTYPE_F32, 1, (uint64_t[]){dim});
    mc_gguf_writer_add_tensor(w, "blk.0.ffn_gate_inp.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, ne});
    if (v->shexp > 0)
        mc_gguf_writer_add_tensor(w, "blk.0.ffn_gate_inp_shexp.weight", MC_DTYPE_F32, v->shexp_bad_gate ? 2 : 1,
                                  (uint64_t[]){dim, 2});
    if (v->shexp > 1) mc_gguf_writer_add_tensor(w, "blk.0.ffn_gate_shexp.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, ffn});
    if (v->shexp > 2) mc_gguf_writer_add_tensor(w, "blk.0.ffn_up_shexp.weight", MC_DTYPE_F32, 2, (uint64_t[]){dim, ffn});
    if (v->shexp > 3) mc_gguf_writer_add_tensor(w, "blk.0.ffn_down_shexp.weight", MC_DTYPE_F32, 2, (uint64_t[]){ffn, dim});
    if (v->with_expert_tensors) {
        mc_gguf_writer_add_tensor(w, "blk.0.ffn_gate_exps.weight", MC_DTYPE_F32, 3, (uint64_t[]){dim, ffn, ne});
        mc_gguf_writer_add_tensor(w, "blk.0.ffn_up_exps.weight", MC_DTYPE_F32, 3, (uint64_t[]){dim, ffn, ne});
        mc_gguf_writer_add_tensor(w, "blk.0.ffn_down_exps.weight", MC_DTYPE_F32, 3, (uint64_t[]){ffn, dim, ne});
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_zero, NULL, &buf, &len, err), MC_OK);
    mc_gguf_writer_destroy(&w);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    mc_model_t *m = mc_model_new(&g, err);
    bool ok = m != NULL;
    if (ok) assert_null(g); // ownership moved to the model
    mc_model_destroy(&m);
    mc_gguf_destroy(&g);
    free(buf);
    return ok;
}

static void test_not_moe_errors(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    s_variant_t ok = {"llama", true, true, false, 0, false};
    assert_true(s_loads(&ok, err));

    s_variant_t dense = {"llama", false, false, false, 0, false};
    assert_false(s_loads(&dense, err));
    assert_non_null(strstr(err, "llama.expert_count"));

    s_variant_t other = {"llama4", true, true, false, 0, false};
    assert_false(s_loads(&other, err));
    assert_non_null(strstr(err, "llama4"));
    assert_non_null(strstr(err, "supported: llama (Mixtral), qwen3moe (Qwen3-MoE), olmoe (OLMoE), qwen2moe (Qwen2-MoE), "
                                "deepseek2 (DeepSeek-V2/V3), glm4moe (GLM-4.5), gpt-oss (GPT-OSS)"));

    // Qwen2-MoE: each missing shared-expert tensor is named, and says why;
    // with all four (and no q/k/v biases, optional as in llama.cpp) it binds.
    static const char *const shexp_names[] = {"blk.0.ffn_gate_inp_shexp.weight", "blk.0.ffn_gate_shexp.weight",
                                              "blk.0.ffn_up_shexp.weight", "blk.0.ffn_down_shexp.weight"};
    for (int i = 0; i < 4; i++) {
        s_variant_t no_shexp = {"qwen2moe", true, true, false, i, false};
        assert_false(s_loads(&no_shexp, err));
        assert_non_null(strstr(err, shexp_names[i]));
        assert_non_null(strstr(err, "every Qwen2-MoE layer has a shared expert"));
    }
    s_variant_t bad_gate = {"qwen2moe", true, true, false, 4, true};
    assert_false(s_loads(&bad_gate, err));
    assert_non_null(strstr(err, "blk.0.ffn_gate_inp_shexp.weight"));
    assert_non_null(strstr(err, "expected {32, 1}"));
    s_variant_t full = {"qwen2moe", true, true, false, 4, false};
    if (!s_loads(&full, err)) fail_msg("%s", err);

    // A Qwen3-MoE file without its q/k norm tensors names the first missing one.
    s_variant_t no_norms = {"qwen3moe", true, true, false, 0, false};
    assert_false(s_loads(&no_norms, err));
    assert_non_null(strstr(err, "blk.0.attn_q_norm.weight"));

    s_variant_t no_tensors = {"llama", true, false, false, 0, false};
    assert_false(s_loads(&no_tensors, err));
    assert_non_null(strstr(err, "ffn_gate_exps"));

    s_variant_t bad_shape = {"llama", true, true, true, 0, false};
    assert_false(s_loads(&bad_shape, err));
    assert_non_null(strstr(err, "blk.0.attn_q.weight"));
    assert_non_null(strstr(err, "expected {32, 32}"));
}

// A GLM-4.5 file in memory: layer 0 dense, layer 1 MoE (4 experts, 2 used,
// one shared expert), with the tensor `drop` left out and the given group
// counts and gating function (0: key not written). True when it binds.
static bool s_glm_loads(const char *drop, uint32_t groups, uint32_t groups_used, uint32_t gating, bool shared_count,
                        char *err, mc_hparams_t *hp) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    const uint32_t dim = 32, ffn = 16, dense = 64, vocab = 16, ne = 4;
    mc_gguf_writer_add_str(w, "general.architecture", "glm4moe");
    mc_gguf_writer_add_u32(w, "glm4moe.block_count", 3); // the last: next-token prediction
    mc_gguf_writer_add_u32(w, "glm4moe.nextn_predict_layers", 1);
    mc_gguf_writer_add_u32(w, "glm4moe.leading_dense_block_count", 1);
    mc_gguf_writer_add_u32(w, "glm4moe.context_length", 128);
    mc_gguf_writer_add_u32(w, "glm4moe.embedding_length", dim);
    mc_gguf_writer_add_u32(w, "glm4moe.feed_forward_length", dense);
    mc_gguf_writer_add_u32(w, "glm4moe.expert_feed_forward_length", ffn);
    mc_gguf_writer_add_u32(w, "glm4moe.attention.head_count", 4);
    mc_gguf_writer_add_u32(w, "glm4moe.attention.head_count_kv", 2);
    mc_gguf_writer_add_u32(w, "glm4moe.rope.dimension_count", 4);
    mc_gguf_writer_add_u32(w, "glm4moe.expert_count", ne);
    mc_gguf_writer_add_u32(w, "glm4moe.expert_used_count", 2);
    if (shared_count) mc_gguf_writer_add_u32(w, "glm4moe.expert_shared_count", 1);
    mc_gguf_writer_add_f32(w, "glm4moe.expert_weights_scale", 2.5f);
    mc_gguf_writer_add_bool(w, "glm4moe.expert_weights_norm", true);
    if (gating) mc_gguf_writer_add_u32(w, "glm4moe.expert_gating_func", gating);
    if (groups) {
        mc_gguf_writer_add_u32(w, "glm4moe.expert_group_count", groups);
        mc_gguf_writer_add_u32(w, "glm4moe.expert_group_used_count", groups_used);
    }
    const struct {
        const char *name;
        uint32_t nd;
        uint64_t ne[3];
    } t[] = {
        {"token_embd.weight", 2, {dim, vocab}},
        {"output_norm.weight", 1, {dim}},
        {"blk.0.attn_norm.weight", 1, {dim}},
        {"blk.0.attn_q.weight", 2, {dim, dim}},
        {"blk.0.attn_k.weight", 2, {dim, dim / 2}},
        {"blk.0.attn_v.weight", 2, {dim, dim / 2}},
        {"blk.0.attn_output.weight", 2, {dim, dim}},
        {"blk.0.post_attention_norm.weight", 1, {dim}},
        {"blk.0.ffn_gate.weight", 2, {dim, dense}},
        {"blk.0.ffn_up.weight", 2, {dim, dense}},
        {"blk.0.ffn_down.weight", 2, {dense, dim}},
        {"blk.1.attn_norm.weight", 1, {dim}},
        {"blk.1.attn_q.weight", 2, {dim, dim}},
        {"blk.1.attn_k.weight", 2, {dim, dim / 2}},
        {"blk.1.attn_v.weight", 2, {dim, dim / 2}},
        {"blk.1.attn_output.weight", 2, {dim, dim}},
        {"blk.1.post_attention_norm.weight", 1, {dim}},
        {"blk.1.ffn_gate_inp.weight", 2, {dim, ne}},
        {"blk.1.exp_probs_b.bias", 1, {ne}},
        {"blk.1.ffn_gate_shexp.weight", 2, {dim, ffn}},
        {"blk.1.ffn_up_shexp.weight", 2, {dim, ffn}},
        {"blk.1.ffn_down_shexp.weight", 2, {ffn, dim}},
        {"blk.1.ffn_gate_exps.weight", 3, {dim, ffn, ne}},
        {"blk.1.ffn_up_exps.weight", 3, {dim, ffn, ne}},
        {"blk.1.ffn_down_exps.weight", 3, {ffn, dim, ne}},
        // Layer 2, next-token prediction: only some of its tensors, never read.
        {"blk.2.nextn.eh_proj.weight", 2, {2 * dim, dim}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!drop || strcmp(drop, t[i].name) != 0) mc_gguf_writer_add_tensor(w, t[i].name, MC_DTYPE_F32, t[i].nd, t[i].ne);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_zero, NULL, &buf, &len, err), MC_OK);
    mc_gguf_writer_destroy(&w);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    mc_model_t *m = mc_model_new(&g, err);
    const bool ok = m != NULL;
    if (ok && hp) *hp = m->hp;
    mc_model_destroy(&m);
    mc_gguf_destroy(&g);
    free(buf);
    return ok;
}

// GLM-4.5's metadata reaches the routing variant and the layer layout, and
// hostile files (a missing shared-expert or selection-bias tensor, groups
// that do not divide the experts, an unknown gating function) are refused
// with a message that names the problem.
static void test_glm4moe_files(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_hparams_t hp;
    if (!s_glm_loads(NULL, 0, 0, 0, true, err, &hp)) fail_msg("%s", err);
    assert_int_equal(hp.n_layer, 2); // block_count 3 less the next-token-prediction layer
    assert_int_equal(hp.n_dense_lead, 1);
    assert_int_equal(hp.ffn_dense, 64);
    assert_int_equal(hp.ffn, 16);
    assert_int_equal(hp.ffn_shexp, 16);
    assert_int_equal(hp.rope_dim, 4);
    assert_int_equal(hp.head_dim, 8);
    assert_int_equal(hp.route.gating, MC_GATING_SIGMOID); // the family's default without the key
    assert_true(hp.route.norm_topk);
    assert_true(hp.route.scale == 2.5f);
    assert_int_equal(hp.route.n_group, 0);
    assert_true(s_glm_loads(NULL, 2, 1, 1, true, err, &hp));
    assert_int_equal(hp.route.gating, MC_GATING_SOFTMAX);
    assert_int_equal(hp.route.n_group, 2);
    assert_int_equal(hp.route.n_group_used, 1);
    assert_true(s_glm_loads(NULL, 1, 1, 3, true, err, &hp)); // one group: none
    assert_int_equal(hp.route.gating, MC_GATING_SOFTMAX_WEIGHT);
    assert_int_equal(hp.route.n_group, 0);

    static const char *const shexp[] = {"blk.1.ffn_gate_shexp.weight", "blk.1.ffn_up_shexp.weight",
                                         "blk.1.ffn_down_shexp.weight"};
    for (int i = 0; i < 3; i++) {
        assert_false(s_glm_loads(shexp[i], 0, 0, 0, true, err, NULL));
        assert_non_null(strstr(err, shexp[i]));
        assert_non_null(strstr(err, "every GLM-4.5 layer has a shared expert"));
    }
    assert_false(s_glm_loads(NULL, 0, 0, 0, false, err, NULL));
    assert_non_null(strstr(err, "glm4moe.expert_shared_count"));
    assert_false(s_glm_loads("blk.1.exp_probs_b.bias", 0, 0, 0, true, err, NULL));
    assert_non_null(strstr(err, "expert selection bias"));
    assert_false(s_glm_loads("blk.0.ffn_up.weight", 0, 0, 0, true, err, NULL));
    assert_non_null(strstr(err, "blk.0.ffn_up.weight"));
    assert_false(s_glm_loads("blk.1.post_attention_norm.weight", 0, 0, 0, true, err, NULL));
    assert_non_null(strstr(err, "blk.1.post_attention_norm.weight"));
    assert_false(s_glm_loads(NULL, 3, 1, 0, true, err, NULL));
    assert_non_null(strstr(err, "expert_group_count 3 does not divide the 4 experts"));
    assert_false(s_glm_loads(NULL, 2, 2, 0, true, err, NULL));
    assert_non_null(strstr(err, "expert_group_used_count 2"));
    assert_false(s_glm_loads(NULL, 4, 1, 0, true, err, NULL));
    assert_non_null(strstr(err, "fewer than 2"));
    assert_false(s_glm_loads(NULL, 0, 0, 4, true, err, NULL));
    assert_non_null(strstr(err, "expert_gating_func' = 4"));
}

// Each family's traits reach the hyperparameters, and the file's metadata
// overrides the defaults where llama.cpp lets it.
static void test_arch_hparams(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN3MOE;
    p.head_dim = 32; // wider than dim / n_head = 16
    p.n_expert = 16;
    p.n_expert_used = 4;
    p.ffn = 32;
    p.tie_output = true;
    snprintf(path, sizeof path, "%s/qwen3moe.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    assert_int_equal(m->hp.arch->id, MC_ARCH_QWEN3MOE);
    assert_int_equal(m->hp.head_dim, 32);
    assert_int_equal(m->hp.ffn, 32);
    assert_true(m->hp.route.norm_topk);
    assert_int_equal(m->hp.arch->rope, MC_ROPE_NEOX);
    assert_int_equal(m->layers[1].wq.n_out, 4 * 32);
    assert_int_equal(m->layers[1].wo.n_in, 4 * 32);
    assert_non_null(m->layers[1].q_norm);
    assert_true(m->output.data == m->tok_embd.data); // tied head
    mc_model_destroy(&m);

    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_OLMOE;
    snprintf(path, sizeof path, "%s/olmoe.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    assert_int_equal(m->hp.arch->id, MC_ARCH_OLMOE);
    assert_false(m->hp.route.norm_topk);
    assert_int_equal(m->hp.arch->qk_norm, MC_QKNORM_FULL);
    assert_non_null(m->layers[0].k_norm);
    assert_true(m->output.data != m->tok_embd.data);
    mc_model_destroy(&m);

    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE;
    p.ffn = 32, p.ffn_shexp = 96;
    snprintf(path, sizeof path, "%s/qwen2moe.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    assert_int_equal(m->hp.arch->id, MC_ARCH_QWEN2MOE);
    assert_false(m->hp.route.norm_topk); // llama.cpp's qwen2moe graph never renormalises
    assert_int_equal(m->hp.arch->rope, MC_ROPE_NEOX);
    assert_int_equal(m->hp.ffn, 32);
    assert_int_equal(m->hp.ffn_shexp, 96);
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const mc_layer_t *L = &m->layers[l];
        assert_non_null(L->bq), assert_non_null(L->bk), assert_non_null(L->bv);
        assert_null(L->q_norm);
        assert_int_equal(L->shexp.gate.n_out, 96), assert_int_equal(L->shexp.up.n_in, 64);
        assert_int_equal(L->shexp.down.n_in, 96), assert_int_equal(L->shexp.down.n_out, 64);
        assert_int_equal(L->shexp_gate.n_in, 64), assert_int_equal(L->shexp_gate.n_out, 1);
        assert_int_equal(L->shexp_gate.type, MC_DTYPE_F32);
    }
    mc_model_destroy(&m);
    // The other families have no shared expert.
    p.arch = MC_ARCH_QWEN3MOE;
    snprintf(path, sizeof path, "%s/qwen3moe-noshexp.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    if (!(m = mc_model_open(path, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.ffn_shexp, 0);
    assert_null(m->layers[0].shexp.gate.data), assert_null(m->layers[0].bq);
    mc_model_destroy(&m);

    assert_null(mc_arch_find("llama4", 6));
    assert_non_null(mc_arch_find("olmoe", 5));
    assert_null(mc_arch_find("olmo", 4)); // prefixes are not names
}

// A copy of a GGUF file with one change: tensor `drop` left out, tensor
// `reshape` declared with its first two dims swapped (same bytes), metadata
// `key` set to the u32 `value` or removed (`remove`). NULLs: no such change.
typedef struct {
    const char *drop, *reshape, *key;
    uint32_t value;
    bool remove;
} s_edit_t;

typedef struct {
    const mc_gguf_t *g;
    size_t map[1024]; // declared tensor -> source tensor
} s_copy_t;

static mc_err_t s_copy_fill(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)err;
    const s_copy_t *c = ctx;
    const mc_gguf_tensor_t *t = mc_gguf_tensor_at(c->g, c->map[index]);
    memcpy(dst, t->data, size < t->size ? size : t->size);
    return MC_OK;
}

static void s_rewrite(const char *src, const char *dst, const s_edit_t *ed) {
    char err[MC_ERR_LEN];
    mc_gguf_t *g = mc_gguf_open(src, err);
    if (!g) fail_msg("%s", err);
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    assert_non_null(w);
    bool set = false;
    for (size_t i = 0; i < mc_gguf_kv_count(g); i++) {
        const mc_gguf_kv_t *kv = mc_gguf_kv_at(g, i);
        if (ed->key && strcmp(kv->key, ed->key) == 0) {
            if (!ed->remove) assert_int_equal(mc_gguf_writer_add_u32(w, kv->key, ed->value), MC_OK);
            set = true;
        } else {
            assert_int_equal(mc_gguf_writer_add_value(w, kv->key, &kv->value), MC_OK);
        }
    }
    if (ed->key && !set && !ed->remove) assert_int_equal(mc_gguf_writer_add_u32(w, ed->key, ed->value), MC_OK);
    static s_copy_t c;
    c.g = g;
    size_t n = 0;
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        if (ed->drop && strcmp(t->name, ed->drop) == 0) continue;
        uint64_t ne[MC_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (ed->reshape && strcmp(t->name, ed->reshape) == 0) ne[0] = t->ne[1], ne[1] = t->ne[0];
        assert_true(n < sizeof c.map / sizeof c.map[0]);
        c.map[n++] = i;
        assert_int_equal(mc_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, ne), MC_OK);
    }
    if (mc_gguf_writer_write_file(w, dst, s_copy_fill, &c, err)) fail_msg("%s", err);
    mc_gguf_writer_destroy(&w);
    mc_gguf_destroy(&g);
}

// Interleaved dense layers: leading_dense_block_count and
// interleave_moe_layer_step read in every family with dense layers (here
// Qwen2-MoE, whose llama.cpp loader reads neither: the rule is ours, layer l
// is MoE iff l >= the count and (l + 1) % step == 0); the dense layers bound
// as one FFN and nothing else; hostile values and missing tensors refused
// by name.
static void test_interleave_files(void **state) {
    (void)state;
    char path[512], bad[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE;
    p.ffn = 16, p.ffn_shexp = 32, p.ffn_dense = 48, p.n_expert = 4, p.n_expert_used = 2, p.n_layer = 4, p.moe_step = 2;
    snprintf(path, sizeof path, "%s/qwen2moe-step2.gguf", s_dir);
    snprintf(bad, sizeof bad, "%s/qwen2moe-step2-bad.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    assert_int_equal(m->hp.moe_step, 2), assert_int_equal(m->hp.n_dense_lead, 0);
    assert_int_equal(m->hp.ffn_dense, 48), assert_int_equal(m->hp.ffn, 16), assert_int_equal(m->hp.ffn_shexp, 32);
    for (uint32_t l = 0; l < 4; l++) {
        assert_int_equal(mc_model_layer_moe(m, l), l % 2 == 1);
        assert_int_equal(mc_hparams_layer_moe(&m->hp, l), l % 2 == 1);
        assert_int_equal(m->layers[l].dense.gate.data != NULL, l % 2 == 0);
        assert_int_equal(m->layers[l].dense.down.n_in, l % 2 == 0 ? 48 : 0);
        assert_int_equal(m->layers[l].shexp_gate.data != NULL, l % 2 == 1);
    }
    assert_false(mc_hparams_layer_moe(&m->hp, 5)); // out of range
    mc_model_destroy(&m);
    // A leading count and a step together: layers 2 and 3 dense by the
    // count, then only 3 ((3 + 1) % 2 == 0) is MoE; the tensors of layer 2
    // are then a MoE layer's where a dense one's are expected.
    const s_edit_t lead3 = {NULL, NULL, "qwen2moe.leading_dense_block_count", 3, false};
    s_rewrite(path, bad, &lead3);
    assert_null(mc_model_open(bad, err));
    assert_non_null(strstr(err, "'blk.1.ffn_gate.weight' is missing"));
    const struct {
        s_edit_t ed;
        const char *want1, *want2;
    } cases[] = {
        {{NULL, NULL, "qwen2moe.interleave_moe_layer_step", 0, false}, "interleave_moe_layer_step' = 0",
         "must be 1 or more"},
        {{NULL, NULL, "qwen2moe.interleave_moe_layer_step", 5, false}, "interleave_moe_layer_step' = 5",
         "out of range"},
        {{NULL, NULL, "qwen2moe.interleave_moe_layer_step", 3, false}, "'blk.1.ffn_gate.weight' is missing", ""},
        {{NULL, NULL, "qwen2moe.interleave_moe_layer_step", 0, true}, "'blk.0.ffn_gate_inp_shexp.weight' is missing", ""},
        {{NULL, NULL, "qwen2moe.interleave_moe_layer_step", 4294967295u, false}, "out of range", ""},
        {{NULL, NULL, "qwen2moe.leading_dense_block_count", 4, false}, "every layer is dense", ""},
        {{NULL, NULL, "qwen2moe.leading_dense_block_count", 5, false}, "leading_dense_block_count' = 5",
         "out of range"},
        {{"blk.2.ffn_down.weight", NULL, NULL, 0, false}, "'blk.2.ffn_down.weight' is missing", ""},
        {{"blk.3.ffn_gate_inp_shexp.weight", NULL, NULL, 0, false}, "blk.3.ffn_gate_inp_shexp.weight", ""},
        {{NULL, "blk.0.ffn_up.weight", NULL, 0, false}, "blk.0.ffn_up.weight", ", 48}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_rewrite(path, bad, &cases[i].ed);
        err[0] = 0;
        m = mc_model_open(bad, err);
        if (m) fail_msg("case %zu loaded", i);
        if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
            fail_msg("case %zu: '%s' lacks '%s' / '%s'", i, err, cases[i].want1, cases[i].want2);
    }
    // Step 3 with one leading dense layer on 3 layers: only layer 2 is MoE.
    p.n_layer = 3, p.n_dense_lead = 1, p.moe_step = 3;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    if (!(m = mc_model_open(path, err))) fail_msg("%s", err);
    for (uint32_t l = 0; l < 3; l++) assert_int_equal(mc_model_layer_moe(m, l), l == 2);
    mc_model_destroy(&m);
    // A step that leaves no MoE layer (mkmodel refuses to write one).
    const s_edit_t none = {NULL, NULL, "qwen2moe.leading_dense_block_count", 2, false};
    s_rewrite(path, bad, &none);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err); // layer 2 is still MoE
    mc_model_destroy(&m);
    const s_edit_t all = {NULL, NULL, "qwen2moe.leading_dense_block_count", 3, false};
    s_rewrite(path, bad, &all);
    assert_null(mc_model_open(bad, err));
    assert_non_null(strstr(err, "every layer is dense"));
    p.n_dense_lead = 3;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "must leave a MoE layer"));
}

// DeepSeek-V2: latent attention's shapes and its YaRN numbers reach the
// hyperparameters; hostile variants (a tensor missing, a dimension wrong,
// the older unsplit attn_kv_b form, V3's keys without what they need) fail
// naming what is wrong.
static void test_deepseek2(void **state) {
    (void)state;
    char path[512], bad[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2;
    p.ffn = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 2;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 64;
    p.yarn_factor = 4, p.yarn_orig_ctx = 512, p.yarn_mscale_all_dim = 0.707f, p.expert_weights_scale = 2.5f;
    snprintf(path, sizeof path, "%s/deepseek2.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    const mc_hparams_t *hp = &m->hp;
    assert_int_equal(hp->arch->id, MC_ARCH_DEEPSEEK2);
    assert_int_equal(hp->head_dim, 48), assert_int_equal(hp->head_dim_v, 32), assert_int_equal(hp->rope_dim, 16);
    assert_int_equal(hp->kv_lora_rank, 64), assert_int_equal(hp->n_head_kv, 1);
    assert_int_equal(hp->ffn_shexp, 2 * 32); // two shared experts of the expert width
    assert_false(hp->route.norm_topk);
    assert_true(hp->route.scale == 2.5f);
    assert_int_equal(hp->arch->rope, MC_ROPE_NORM);
    // YaRN: factor 4, so frequencies x 1/4 blended between the correction
    // dims; mscale_all_dim = mscale cancels in the rope's magnitude (1 up to
    // rounding) and the attention scale is (1 + 0.1 x 0.707 x ln 4)^2 / sqrt(48).
    assert_true(hp->rope_freq_scale == 0.25f && hp->rope_ext_factor == 1.0f);
    assert_true(fabsf(hp->rope_mscale - 1.0f) < 1e-6f);
    assert_true(hp->yarn_corr[0] == 0.0f && hp->yarn_corr[1] == 3.0f); // base 1e6, 16 dims, 512 positions
    const float ms = 1.0f + 0.1f * 0.707f * logf(4.0f);
    assert_true(fabsf(hp->kq_scale - ms * ms / sqrtf(48.0f)) < 1e-6f);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const mc_layer_t *L = &m->layers[l];
        assert_null(L->wk.data), assert_null(L->wv.data), assert_null(L->shexp_gate.data);
        assert_int_equal(L->wq.n_out, 4 * 48), assert_int_equal(L->wo.n_in, 4 * 32);
        assert_int_equal(L->wkv_a.n_out, 64 + 16), assert_non_null(L->kv_a_norm);
        for (uint32_t h = 0; h < 4; h++) {
            assert_int_equal(L->wk_b[h].n_in, 32), assert_int_equal(L->wk_b[h].n_out, 64);
            assert_int_equal(L->wv_b[h].n_in, 64), assert_int_equal(L->wv_b[h].n_out, 32);
            if (h) assert_ptr_equal(L->wv_b[h].data, L->wv_b[h - 1].data + 32 * 64 * 4);
        }
        assert_int_equal(L->shexp.gate.n_out, 64);
    }
    mc_model_destroy(&m);

    snprintf(bad, sizeof bad, "%s/deepseek2-bad.gguf", s_dir);
    const struct {
        s_edit_t ed;
        const char *want1, *want2;
    } cases[] = {
        {{"blk.1.attn_kv_a_mqa.weight", NULL, NULL, 0, false}, "'blk.1.attn_kv_a_mqa.weight' is missing", ""},
        {{"blk.0.attn_kv_a_norm.weight", NULL, NULL, 0, false}, "'blk.0.attn_kv_a_norm.weight' is missing", ""},
        {{"blk.0.attn_v_b.weight", NULL, NULL, 0, false}, "'blk.0.attn_v_b.weight' is missing", ""},
        {{"blk.1.ffn_up_shexp.weight", NULL, NULL, 0, false}, "blk.1.ffn_up_shexp.weight", "shared expert"},
        {{NULL, "blk.0.attn_k_b.weight", NULL, 0, false}, "'blk.0.attn_k_b.weight' has shape {64, 32, 4}",
         "expected {32, 64, 4}"},
        {{NULL, "blk.1.attn_output.weight", NULL, 0, false}, "blk.1.attn_output.weight", "expected {128, 64}"},
        {{NULL, NULL, "deepseek2.attention.kv_lora_rank", 48, false}, "key_length' = 80", "needs 64"},
        {{NULL, NULL, "deepseek2.attention.key_length", 48, false}, "key_length' = 48", "needs 80"},
        {{NULL, NULL, "deepseek2.attention.head_count_kv", 4, false}, "head_count_kv' = 4", "needs 1"},
        {{NULL, NULL, "deepseek2.rope.dimension_count", 48, false}, "rope dimension 48", "below key_length_mla 48"},
        {{NULL, NULL, "deepseek2.attention.key_length_mla", 0, true}, "split attn_kv_b", "reconvert"},
        {{NULL, NULL, "deepseek2.attention.q_lora_rank", 32, false}, "'blk.0.attn_q_a.weight' is missing", ""},
        // V3's keys on a V2 file: read, so what they need is missing.
        {{NULL, NULL, "deepseek2.leading_dense_block_count", 1, false}, "'blk.0.ffn_gate.weight' is missing", ""},
        {{NULL, NULL, "deepseek2.leading_dense_block_count", 2, false}, "every layer is dense", ""},
        {{NULL, NULL, "deepseek2.expert_shared_count", 0, false}, "expert_shared_count' = 0", "out of range"},
        {{NULL, NULL, "deepseek2.expert_gating_func", 4, false}, "expert_gating_func' = 4", "not a supported"},
        {{NULL, NULL, "deepseek2.nextn_predict_layers", 2, false}, "nextn_predict_layers' = 2", "out of range"},
        {{NULL, NULL, "deepseek2.expert_group_count", 8, false}, "expert_group_used_count 0", "out of range"},
        {{NULL, NULL, "deepseek2.expert_group_count", 3, false}, "expert_group_count 3 does not divide", ""},
        {{NULL, NULL, "deepseek2.rope.scaling.original_context_length", 0, false}, "original_context_length' = 0",
         "out of range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_rewrite(path, bad, &cases[i].ed);
        err[0] = 0;
        m = mc_model_open(bad, err);
        if (m) fail_msg("case %zu loaded", i);
        if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
            fail_msg("case %zu: '%s' lacks '%s' / '%s'", i, err, cases[i].want1, cases[i].want2);
    }
    // An unchanged copy loads (the rewriting itself is sound).
    const s_edit_t none = {NULL, NULL, NULL, 0, false};
    s_rewrite(path, bad, &none);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    mc_model_destroy(&m);
    // V2's compressed query: attn_q_b (norm (attn_q_a x)) in place of attn_q.
    p.q_lora_rank = 32;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    if (!(m = mc_model_open(path, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.q_lora_rank, 32);
    assert_int_equal(m->layers[1].wq_a.n_in, 64), assert_int_equal(m->layers[1].wq_a.n_out, 32);
    assert_int_equal(m->layers[1].wq.n_in, 32), assert_int_equal(m->layers[1].wq.n_out, 4 * 48);
    assert_non_null(m->layers[1].q_a_norm);
    mc_model_destroy(&m);
    const s_edit_t no_qa_norm = {"blk.1.attn_q_a_norm.weight", NULL, NULL, 0, false};
    s_rewrite(path, bad, &no_qa_norm);
    assert_null(mc_model_open(bad, err));
    assert_non_null(strstr(err, "'blk.1.attn_q_a_norm.weight' is missing"));
}

// DeepSeek-V3/R1's additions on deepseek2 (llama.cpp's loader and graph):
// leading dense layers, the file's gating function (softmax when absent, as
// V2's files are), expert groups, renormalisation and scale, a selection
// bias where a layer has one (optional in every layer, as llama.cpp has
// it), trailing next-token-prediction layers skipped.
static void test_deepseek2v3(void **state) {
    (void)state;
    char path[512], bad[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2;
    p.ffn = 16, p.ffn_shexp = 16, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 3;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 32, p.q_lora_rank = 32;
    p.n_dense_lead = 1, p.ffn_dense = 64, p.n_nextn = 1, p.n_group = 4, p.n_group_used = 2;
    p.gating = MC_GATING_SIGMOID, p.expert_bias = true, p.expert_weights_scale = 2.5f;
    snprintf(path, sizeof path, "%s/deepseek2v3.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    const mc_hparams_t *hp = &m->hp;
    assert_int_equal(hp->n_layer, 3); // block_count 4 less the next-token-prediction layer
    assert_int_equal(hp->n_dense_lead, 1), assert_int_equal(hp->ffn_dense, 64);
    assert_int_equal(hp->ffn, 16), assert_int_equal(hp->ffn_shexp, 16);
    assert_int_equal(hp->route.gating, MC_GATING_SIGMOID);
    assert_true(hp->route.norm_topk);
    assert_true(hp->route.scale == 2.5f);
    assert_int_equal(hp->route.n_group, 4), assert_int_equal(hp->route.n_group_used, 2);
    assert_null(m->layers[0].router.data), assert_null(m->layers[0].exp_probs_b);
    assert_non_null(m->layers[0].dense.gate.data);
    assert_false(mc_model_has_expert(m, 0, 0));
    for (uint32_t l = 1; l < 3; l++) {
        assert_non_null(m->layers[l].exp_probs_b), assert_non_null(m->layers[l].router.data);
        assert_true(mc_model_has_expert(m, l, 15));
    }
    mc_model_destroy(&m);

    snprintf(bad, sizeof bad, "%s/deepseek2v3-bad.gguf", s_dir);
    // Without a layer's bias (llama.cpp: not required), that layer chooses by
    // the scores alone.
    const s_edit_t no_bias = {"blk.2.exp_probs_b.bias", NULL, NULL, 0, false};
    s_rewrite(path, bad, &no_bias);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_non_null(m->layers[1].exp_probs_b), assert_null(m->layers[2].exp_probs_b);
    mc_model_destroy(&m);
    // Without expert_gating_func: V2's softmax (llama.cpp's default for
    // files that predate the key).
    const s_edit_t no_gating = {NULL, NULL, "deepseek2.expert_gating_func", 0, true};
    s_rewrite(path, bad, &no_gating);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.route.gating, MC_GATING_SOFTMAX);
    mc_model_destroy(&m);
    // Without nextn_predict_layers the trailing layer is an ordinary one.
    const s_edit_t no_nextn = {NULL, NULL, "deepseek2.nextn_predict_layers", 0, true};
    s_rewrite(path, bad, &no_nextn);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.n_layer, 4);
    mc_model_destroy(&m);
    const struct {
        s_edit_t ed;
        const char *want1, *want2;
    } cases[] = {
        {{NULL, "blk.1.exp_probs_b.bias", NULL, 0, false}, "'blk.1.exp_probs_b.bias' has shape", ""},
        {{"blk.0.ffn_down.weight", NULL, NULL, 0, false}, "'blk.0.ffn_down.weight' is missing", ""},
        {{NULL, NULL, "deepseek2.leading_dense_block_count", 0, false}, "blk.0.ffn_gate_shexp.weight' is missing", ""},
        {{NULL, NULL, "deepseek2.leading_dense_block_count", 3, false}, "every layer is dense", ""},
        {{NULL, NULL, "deepseek2.nextn_predict_layers", 4, false}, "nextn_predict_layers' = 4", "out of range"},
        {{NULL, NULL, "deepseek2.expert_group_count", 5, false}, "expert_group_count 5 does not divide", ""},
        {{NULL, NULL, "deepseek2.expert_group_used_count", 4, false}, "expert_group_used_count 4", "out of range"},
        {{NULL, NULL, "deepseek2.expert_used_count", 9, false}, "2 groups of 4 experts", "the 9 experts"},
        {{NULL, NULL, "deepseek2.expert_gating_func", 7, false}, "expert_gating_func' = 7", "not a supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_rewrite(path, bad, &cases[i].ed);
        err[0] = 0;
        m = mc_model_open(bad, err);
        if (m) fail_msg("case %zu loaded", i);
        if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
            fail_msg("case %zu: '%s' lacks '%s' / '%s'", i, err, cases[i].want1, cases[i].want2);
    }

    // GLM-4.7-Lite's shape without the key (47 blocks, 154880 tokens):
    // llama.cpp's deepseek2 loader makes it sigmoid; 46 blocks stay softmax.
    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2;
    p.dim = 32, p.ffn = 32, p.n_expert = 4, p.n_expert_used = 2, p.n_layer = 47, p.head_dim = 32, p.rope_dim = 8;
    p.kv_lora_rank = 32;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    const s_edit_t lite = {NULL, NULL, "deepseek2.vocab_size", 154880, false};
    s_rewrite(path, bad, &lite);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.route.gating, MC_GATING_SIGMOID);
    mc_model_destroy(&m);
    if (!(m = mc_model_open(path, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.route.gating, MC_GATING_SOFTMAX);
    mc_model_destroy(&m);
    p.n_layer = 46;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    s_rewrite(path, bad, &lite);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_int_equal(m->hp.route.gating, MC_GATING_SOFTMAX);
    mc_model_destroy(&m);
}

// GPT-OSS: its tensors and keys reach the model (sinks, biases, the
// sliding window on every other layer, the routing and activation);
// hostile variants (a sink, bias or window missing, a bad window, a
// per-layer pattern, a RoPE base of the sliding layers' own) say what is
// wrong; an experts-only file is refused (its experts lack their biases).
static void test_gptoss(void **state) {
    (void)state;
    char path[512], bad[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_GPTOSS;
    p.ffn = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 3, p.head_dim = 32, p.n_swa = 8;
    snprintf(path, sizeof path, "%s/gptoss.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    const mc_hparams_t *hp = &m->hp;
    assert_int_equal(hp->n_swa, 8), assert_int_equal(hp->swa_pattern, 2);
    assert_true(mc_model_layer_swa(m, 0)), assert_false(mc_model_layer_swa(m, 1)), assert_true(mc_model_layer_swa(m, 2));
    assert_int_equal(hp->route.gating, MC_GATING_SOFTMAX_WEIGHT);
    assert_false(hp->route.norm_topk);
    assert_int_equal(hp->arch->act, MC_ACT_SWIGLU_OAI);
    assert_int_equal(hp->head_dim, 32), assert_int_equal(hp->ffn, 32);
    for (uint32_t l = 0; l < 3; l++) {
        const mc_layer_t *L = &m->layers[l];
        assert_non_null(L->sinks), assert_non_null(L->bo), assert_non_null(L->router_b);
        assert_non_null(L->exp_b_gate), assert_non_null(L->exp_b_up), assert_non_null(L->exp_b_down);
        assert_non_null(L->bq);
    }
    mc_model_destroy(&m);

    snprintf(bad, sizeof bad, "%s/gptoss-bad.gguf", s_dir);
    // No sliding_window_pattern: 2, as llama.cpp; 3 makes layers 0 and 1 slide.
    const s_edit_t pat3 = {NULL, NULL, "gpt-oss.attention.sliding_window_pattern", 3, false};
    s_rewrite(path, bad, &pat3);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_true(mc_model_layer_swa(m, 0)), assert_true(mc_model_layer_swa(m, 1)), assert_false(mc_model_layer_swa(m, 2));
    mc_model_destroy(&m);
    // q/k/v biases are optional (llama.cpp's loader), the rest required.
    const s_edit_t no_bq = {"blk.1.attn_q.bias", NULL, NULL, 0, false};
    s_rewrite(path, bad, &no_bq);
    if (!(m = mc_model_open(bad, err))) fail_msg("%s", err);
    assert_null(m->layers[1].bq), assert_non_null(m->layers[0].bq);
    mc_model_destroy(&m);
    const struct {
        s_edit_t ed;
        const char *want1, *want2;
    } cases[] = {
        {{"blk.1.attn_sinks.weight", NULL, NULL, 0, false}, "'blk.1.attn_sinks.weight' is missing", "attention sinks"},
        {{"blk.0.attn_output.bias", NULL, NULL, 0, false}, "'blk.0.attn_output.bias' is missing", "GPT-OSS"},
        {{"blk.2.ffn_gate_inp.bias", NULL, NULL, 0, false}, "'blk.2.ffn_gate_inp.bias' is missing", "router bias"},
        {{"blk.0.ffn_gate_exps.bias", NULL, NULL, 0, false}, "'blk.0.ffn_gate_exps.bias' is missing", "expert gate"},
        {{"blk.0.ffn_up_exps.bias", NULL, NULL, 0, false}, "'blk.0.ffn_up_exps.bias' is missing", "expert up"},
        {{"blk.1.ffn_down_exps.bias", NULL, NULL, 0, false}, "'blk.1.ffn_down_exps.bias' is missing", "expert down"},
        {{NULL, "blk.0.ffn_gate_exps.bias", NULL, 0, false}, "'blk.0.ffn_gate_exps.bias' has shape", ""},
        {{NULL, NULL, "gpt-oss.attention.sliding_window", 0, true}, "sliding_window' is missing", "sliding window"},
        {{NULL, NULL, "gpt-oss.attention.sliding_window", 0, false}, "sliding_window' = 0", "out of range"},
        {{NULL, NULL, "gpt-oss.attention.sliding_window_pattern", 4, false}, "sliding_window_pattern' = 4",
         "out of range"},
        {{NULL, NULL, "gpt-oss.rope.freq_base_swa", 500, false}, "freq_base_swa", "not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_rewrite(path, bad, &cases[i].ed);
        err[0] = 0;
        m = mc_model_open(bad, err);
        if (m) fail_msg("case %zu loaded", i);
        if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
            fail_msg("case %zu: '%s' lacks '%s' / '%s'", i, err, cases[i].want1, cases[i].want2);
    }
    // The whole file tagged as experts-only (a node's cache, moe-split's
    // output): its merged experts are no per-expert tensors, so it binds
    // holding none, and no bias of an expert it lacks (test_split checks
    // real experts-only files of GPT-OSS).
    const s_edit_t split = {NULL, NULL, MC_MODEL_SOURCE_KEY, 7, false};
    s_rewrite(path, bad, &split);
    err[0] = 0;
    if (!(m = mc_model_open_node(bad, err))) fail_msg("%s", err);
    assert_true(m->experts_only && !mc_model_has_expert(m, 0, 0) && !m->layers[0].exp_b_gate);
    mc_model_destroy(&m);
    // moe-mkmodel keeps its experts merged: per-expert tensors cannot carry them.
    p.legacy_layout = true;
    assert_int_equal(mc_mkmodel_write(&p, path, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "merged layout"));
}

static void test_missing_file(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    assert_null(mc_model_open("/nonexistent/model.gguf", err));
    assert_non_null(strstr(err, "/nonexistent/model.gguf"));
    // The constructor's code comes back through err (common/error.h).
    assert_int_equal(mc_err_code(err, MC_OK), MC_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_hparams),
        cmocka_unit_test(test_quant_fixture_types),
        cmocka_unit_test(test_legacy_views),
        cmocka_unit_test(test_mxfp4_bad_scale),
        cmocka_unit_test(test_not_moe_errors),
        cmocka_unit_test(test_glm4moe_files),
        cmocka_unit_test(test_arch_hparams),
        cmocka_unit_test(test_deepseek2),
        cmocka_unit_test(test_deepseek2v3),
        cmocka_unit_test(test_interleave_files),
        cmocka_unit_test(test_gptoss),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
