/*
 * test_convert: Hugging Face folders made in the test, converted with
 * mc_convert() and checked against what they were made from.
 *
 * Mixtral: a tiny random model from mc_mkmodel is exported as an HF folder
 * (Q/K rows put back in Hugging Face's order, experts split, two shards with
 * an index, config.json, and a tokenizer.model built from the model's own
 * vocabulary, or the real Mixtral one from the fixtures); the conversion
 * must give the same tensors bit for bit at F32, the same metadata and
 * vocabulary, the same encodings and bit-identical logits through the
 * engine. A BF16 export converts to F32 exactly; Q8_0 equals quantizing the
 * original rows; rows that are not whole blocks fall back to Q8_0 or F16.
 * Qwen3-MoE and OLMoE are checked at the level of names, shapes, keys,
 * vocabulary and merges too, and run through the engine. The GLM-4.5,
 * DeepSeek and GPT-OSS fixtures go out in their checkpoints' layouts (GPT-OSS:
 * fused, interleaved gate_up; MXFP4 blocks and scales as U8) and come back
 * bit for bit. Misconfigured and
 * hostile folders must fail with a message naming the problem.
 *
 * MC_TEST_KEEP=1 keeps the folders and converted files (for loading them
 * in llama.cpp by hand) and prints where they are.
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
#include <sys/wait.h>

#include "convert.h"
#include "engine.h"
#include "gguf.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "rng.h"
#include "safetensors.h"
#include "sentencepiece_model.pb-c.h"
#include "testutil.h"
#include "tokenizer.h"

#define S_PATH 1024

static bool s_keep(void) {
    const char *k = getenv("MC_TEST_KEEP");
    return k && *k == '1';
}

static void s_done(const char *dir) {
    if (s_keep()) printf("kept %s\n", dir);
    else mc_test_rmtree(dir);
}

static void s_path(char *out, const char *dir, const char *name) { snprintf(out, S_PATH, "%s/%s", dir, name); }

static void s_write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void s_write_json(const char *dir, const char *name, const cJSON *j) {
    char path[S_PATH];
    s_path(path, dir, name);
    char *text = cJSON_PrintUnformatted(j);
    assert_non_null(text);
    s_write_bytes(path, text, strlen(text));
    free(text);
}

static cJSON *s_read_json(const char *dir, const char *name) {
    char path[S_PATH];
    s_path(path, dir, name);
    size_t len;
    uint8_t *b = mc_test_read_file(path, &len);
    assert_non_null(b);
    cJSON *j = cJSON_Parse((const char *)b);
    free(b);
    assert_non_null(j);
    return j;
}

// --- an HF folder under construction ----------------------------------------------------

typedef struct {
    char name[128];
    uint32_t n_dims;
    uint64_t shape[4];
    mc_dtype_t dtype;
    void *data;
} s_hft_t;

typedef struct {
    s_hft_t *t;
    size_t n, cap;
} s_hf_t;

static s_hft_t *s_hf_new(s_hf_t *hf) {
    if (hf->n == hf->cap) {
        hf->cap = hf->cap ? 2 * hf->cap : 64;
        hf->t = realloc(hf->t, hf->cap * sizeof *hf->t);
        assert_non_null(hf->t);
    }
    s_hft_t *t = &hf->t[hf->n++];
    memset(t, 0, sizeof *t);
    return t;
}

// Add a tensor of n_dims dims holding the bytes at data (copied).
static void s_hf_add_raw(s_hf_t *hf, const char *name, uint32_t n_dims, const uint64_t *shape, mc_dtype_t dtype,
                         const void *data) {
    s_hft_t *t = s_hf_new(hf);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) n *= t->shape[d] = shape[d];
    t->dtype = dtype;
    const size_t bytes = n * mc_safetensors_dtype_size(dtype);
    t->data = malloc(bytes + 1);
    assert_non_null(t->data);
    memcpy(t->data, data, bytes);
}

// Add a tensor from f32 values, stored as dtype (F32, F16 or BF16).
static void s_hf_add(s_hf_t *hf, const char *name, uint64_t rows, uint64_t cols, mc_dtype_t dtype, const float *v) {
    s_hft_t *t = s_hf_new(hf);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->dtype = dtype;
    const uint64_t n = rows * (cols ? cols : 1);
    t->data = malloc(n * mc_safetensors_dtype_size(dtype) + 1);
    assert_non_null(t->data);
    assert_int_equal(mc_quant_quantize_row(dtype, v, t->data, (int64_t)n), MC_OK);
}

static const s_hft_t *s_hf_find(const s_hf_t *hf, const char *name) {
    for (size_t i = 0; i < hf->n; i++)
        if (!strcmp(hf->t[i].name, name)) return &hf->t[i];
    fail_msg("test: no HF tensor %s", name);
    return NULL;
}

// Write the tensors: one model.safetensors, or two shards and an index.
static void s_hf_write(const s_hf_t *hf, const char *dir, int shards) {
    mc_safetensors_desc_t *d = calloc(hf->n, sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < hf->n; i++)
        d[i] = (mc_safetensors_desc_t){hf->t[i].name, hf->t[i].dtype, hf->t[i].n_dims, hf->t[i].shape, hf->t[i].data};
    char path[S_PATH], err[MC_ERR_LEN] = "";
    if (shards == 1) {
        s_path(path, dir, "model.safetensors");
        assert_int_equal(mc_safetensors_write(path, d, hf->n, NULL, 0, err), MC_OK);
    } else {
        static const char *const names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
        const size_t half = hf->n / 2;
        const char *meta[2] = {"format", "pt"};
        s_path(path, dir, names[0]);
        assert_int_equal(mc_safetensors_write(path, d, half, meta, 1, err), MC_OK);
        s_path(path, dir, names[1]);
        assert_int_equal(mc_safetensors_write(path, d + half, hf->n - half, meta, 1, err), MC_OK);
        cJSON *idx = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(idx, "weight_map");
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(idx, "metadata"), "total_size", 0);
        // Listed in reverse, as an index need not follow the files.
        for (size_t i = hf->n; i-- > 0;) cJSON_AddStringToObject(map, hf->t[i].name, names[i >= half]);
        s_write_json(dir, "model.safetensors.index.json", idx);
        cJSON_Delete(idx);
    }
    free(d);
}

static void s_hf_free(s_hf_t *hf) {
    for (size_t i = 0; i < hf->n; i++) free(hf->t[i].data);
    free(hf->t);
    *hf = (s_hf_t){0};
}

// --- Mixtral: GGUF -> HF export ------------------------------------------------------------

static uint64_t s_u64(const mc_gguf_t *g, const char *key) {
    uint64_t v = 0;
    if (!mc_gguf_get_u64(g, key, &v)) fail_msg("test: %s missing", key);
    return v;
}

static double s_f64(const mc_gguf_t *g, const char *key) {
    double v = 0;
    if (!mc_gguf_get_f64(g, key, &v)) fail_msg("test: %s missing", key);
    return v;
}

// A SentencePiece model file holding the GGUF's vocabulary.
static void s_write_spm(const mc_gguf_t *g, const char *path) {
    const mc_gguf_value_t *toks = mc_gguf_find(g, "tokenizer.ggml.tokens");
    const mc_gguf_value_t *scores = mc_gguf_find(g, "tokenizer.ggml.scores");
    const mc_gguf_value_t *types = mc_gguf_find(g, "tokenizer.ggml.token_type");
    assert_non_null(toks);
    assert_non_null(scores);
    assert_non_null(types);
    const size_t n = toks->arr.count;
    Spm__ModelProto m = SPM__MODEL_PROTO__INIT;
    Spm__TrainerSpec ts = SPM__TRAINER_SPEC__INIT;
    Spm__NormalizerSpec ns = SPM__NORMALIZER_SPEC__INIT;
    Spm__ModelProto__SentencePiece *pcs = calloc(n, sizeof *pcs), **pp = calloc(n, sizeof *pp);
    assert_non_null(pcs);
    assert_non_null(pp);
    for (size_t i = 0; i < n; i++) {
        Spm__ModelProto__SentencePiece p = SPM__MODEL_PROTO__SENTENCE_PIECE__INIT;
        double sc;
        int64_t ty;
        assert_true(mc_gguf_arr_f64(scores, i, &sc));
        assert_true(mc_gguf_arr_i64(types, i, &ty));
        p.has_piece = p.has_score = p.has_type = 1;
        p.piece.data = (uint8_t *)toks->arr.strings[i].ptr;
        p.piece.len = toks->arr.strings[i].len;
        p.score = (float)sc;
        p.type = (Spm__ModelProto__SentencePiece__Type)ty;
        pcs[i] = p;
        pp[i] = &pcs[i];
    }
    m.n_pieces = n;
    m.pieces = pp;
    ts.has_model_type = 1;
    ts.model_type = SPM__TRAINER_SPEC__MODEL_TYPE__BPE;
    ts.has_byte_fallback = ts.byte_fallback = 1;
    ts.has_unk_id = ts.has_bos_id = ts.has_eos_id = ts.has_pad_id = 1;
    ts.unk_id = 0, ts.bos_id = 1, ts.eos_id = 2, ts.pad_id = -1;
    ns.has_add_dummy_prefix = ns.has_remove_extra_whitespaces = 1;
    ns.add_dummy_prefix = 1;
    ns.remove_extra_whitespaces = 0;
    m.trainer_spec = &ts;
    m.normalizer_spec = &ns;
    size_t len = spm__model_proto__get_packed_size(&m);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(spm__model_proto__pack(&m, buf), len);
    s_write_bytes(path, buf, len);
    free(buf);
    free(pcs);
    free(pp);
}

typedef struct {
    mc_dtype_t dtype;            // of the safetensors: F32 or BF16
    int shards;                  // 1 or 2
    const char *tokenizer_model; // copied in; NULL: built from the GGUF vocabulary
} s_export_t;

// HF row of GGUF row r of a head-permuted Q/K matrix (d rows per head).
static uint64_t s_hf_row(uint64_t r, uint64_t d) {
    const uint64_t h = r / d, j = r % d;
    return h * d + (j % 2) * (d / 2) + j / 2;
}

// The tensors of an F32 GGUF under the Hugging Face names of its family,
// stored as dtype: experts one tensor each (Mixtral: block_sparse_moe's
// w1/w3/w2, and the Q and K rows back in HF's halves order, since GGUF
// llama files rotate adjacent pairs; the others: mlp's gate_proj/up_proj/
// down_proj, rows as they are).
static void s_hf_from_gguf(const mc_gguf_t *g, bool mixtral, uint64_t n_head, uint64_t n_kv, uint64_t head_dim,
                           mc_dtype_t dtype, s_hf_t *hf) {
    const char *moe = mixtral ? "block_sparse_moe" : "mlp";
    static const char *const w_mixtral[3] = {"w1", "w3", "w2"}, *const w_named[3] = {"gate_proj", "up_proj", "down_proj"};
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        assert_int_equal(t->type, MC_DTYPE_F32);
        const uint64_t ne0 = t->ne[0], ne1 = t->n_dims > 1 ? t->ne[1] : 1, cols = t->n_dims > 1 ? ne0 : 0;
        const float *src = (const float *)(const void *)t->data;
        unsigned l = 0;
        char role[64] = "", hfname[160];
        if (sscanf(t->name, "blk.%u.%63[^.]", &l, role) != 2) role[0] = 0;
        if (!strcmp(role, "ffn_gate_exps") || !strcmp(role, "ffn_up_exps") || !strcmp(role, "ffn_down_exps")) {
            const int k = role[4] == 'g' ? 0 : role[4] == 'u' ? 1 : 2;
            for (uint64_t e = 0; e < t->ne[2]; e++) {
                snprintf(hfname, sizeof hfname, "model.layers.%u.%s.experts.%llu.%s.weight", l, moe,
                         (unsigned long long)e, mixtral ? w_mixtral[k] : w_named[k]);
                s_hf_add(hf, hfname, ne1, ne0, dtype, src + e * ne0 * ne1);
            }
            continue;
        }
        static const struct {
            const char *gguf, *hf;
        } map[] = {
            {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
            {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
            {"attn_output", "self_attn.o_proj"}, {"attn_q_norm", "self_attn.q_norm"},
            {"attn_k_norm", "self_attn.k_norm"}, {"ffn_norm", "post_attention_layernorm"},
            {"ffn_gate_shexp", "mlp.shared_expert.gate_proj"}, {"ffn_up_shexp", "mlp.shared_expert.up_proj"},
            {"ffn_down_shexp", "mlp.shared_expert.down_proj"},
            {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"}, // a dense layer's FFN
            {"ffn_down", "mlp.down_proj"},
        };
        const char *kind = strstr(t->name, ".bias") ? "bias" : "weight";
        if (!strcmp(t->name, "token_embd.weight")) snprintf(hfname, sizeof hfname, "model.embed_tokens.weight");
        else if (!strcmp(t->name, "output_norm.weight")) snprintf(hfname, sizeof hfname, "model.norm.weight");
        else if (!strcmp(t->name, "output.weight")) snprintf(hfname, sizeof hfname, "lm_head.weight");
        else if (!strcmp(role, "ffn_gate_inp")) snprintf(hfname, sizeof hfname, "model.layers.%u.%s.gate.weight", l, moe);
        else if (!strcmp(role, "ffn_gate_inp_shexp")) { // HF: a (1, hidden_size) matrix
            snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.shared_expert_gate.weight", l);
            s_hf_add(hf, hfname, 1, ne0 * ne1, dtype, src);
            continue;
        } else {
            size_t k = 0;
            while (k < sizeof map / sizeof map[0] && strcmp(map[k].gguf, role) != 0) k++;
            if (k == sizeof map / sizeof map[0]) fail_msg("test: unexpected tensor %s", t->name);
            snprintf(hfname, sizeof hfname, "model.layers.%u.%s.%s", l, map[k].hf, kind);
        }
        const uint64_t heads = !mixtral ? 0 : !strcmp(role, "attn_q") ? n_head : !strcmp(role, "attn_k") ? n_kv : 0;
        float *v = malloc(ne0 * ne1 * sizeof *v);
        assert_non_null(v);
        for (uint64_t r = 0; r < ne1; r++) memcpy(v + (heads ? s_hf_row(r, head_dim) : r) * ne0, src + r * ne0, ne0 * 4);
        s_hf_add(hf, hfname, cols ? ne1 : ne0, cols, dtype, v);
        free(v);
    }
}

static void s_export_mixtral(const char *gguf_path, const char *dir, const s_export_t *x) {
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(gguf_path, err);
    if (!g) fail_msg("%s", err);
    const uint64_t n_head = s_u64(g, "llama.attention.head_count"), n_kv = s_u64(g, "llama.attention.head_count_kv");
    const uint64_t dim = s_u64(g, "llama.embedding_length"), head_dim = dim / n_head;
    s_hf_t hf = {0};
    s_hf_from_gguf(g, true, n_head, n_kv, head_dim, x->dtype, &hf);
    s_hf_write(&hf, dir, x->shards);
    s_hf_free(&hf);

    cJSON *c = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString("MixtralForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "mixtral");
    cJSON_AddNumberToObject(c, "vocab_size", (double)mc_gguf_tensor_find(g, "token_embd.weight")->ne[1]);
    cJSON_AddNumberToObject(c, "hidden_size", (double)dim);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s_u64(g, "llama.feed_forward_length"));
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)s_u64(g, "llama.block_count"));
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)n_head);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)n_kv);
    cJSON_AddNumberToObject(c, "num_local_experts", (double)s_u64(g, "llama.expert_count"));
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)s_u64(g, "llama.expert_used_count"));
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s_u64(g, "llama.context_length"));
    cJSON_AddNumberToObject(c, "rope_theta", s_f64(g, "llama.rope.freq_base"));
    cJSON_AddNumberToObject(c, "rms_norm_eps", s_f64(g, "llama.attention.layer_norm_rms_epsilon"));
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    cJSON_AddFalseToObject(c, "tie_word_embeddings");
    cJSON_AddNullToObject(c, "rope_scaling");
    cJSON_AddNullToObject(c, "sliding_window");
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);

    char path[S_PATH];
    s_path(path, dir, "tokenizer.model");
    if (x->tokenizer_model) {
        size_t len;
        uint8_t *b = mc_test_read_file(x->tokenizer_model, &len);
        assert_non_null(b);
        s_write_bytes(path, b, len);
        free(b);
    } else {
        s_write_spm(g, path);
    }
    mc_gguf_destroy(&g);
}

// --- comparisons -----------------------------------------------------------------------------

static mc_gguf_t *s_open(const char *path) {
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) fail_msg("%s: %s", path, err);
    return g;
}

static size_t s_vtype_size(mc_gguf_vtype_t t) {
    switch (t) {
    case MC_GGUF_U8: case MC_GGUF_I8: case MC_GGUF_BOOL: return 1;
    case MC_GGUF_U16: case MC_GGUF_I16: return 2;
    case MC_GGUF_U32: case MC_GGUF_I32: case MC_GGUF_F32: return 4;
    default: return 8;
    }
}

static void s_same_value(const char *key, const mc_gguf_value_t *a, const mc_gguf_value_t *b) {
    if (a->type != b->type) fail_msg("%s: type %d vs %d", key, a->type, b->type);
    switch (a->type) {
    case MC_GGUF_STRING:
        if (a->str.len != b->str.len || memcmp(a->str.ptr, b->str.ptr, a->str.len))
            fail_msg("%s: '%.*s' vs '%.*s'", key, (int)a->str.len, a->str.ptr, (int)b->str.len, b->str.ptr);
        break;
    case MC_GGUF_ARRAY:
        if (a->arr.elem_type != b->arr.elem_type || a->arr.count != b->arr.count)
            fail_msg("%s: arrays of %llu vs %llu", key, (unsigned long long)a->arr.count,
                     (unsigned long long)b->arr.count);
        for (uint64_t i = 0; a->arr.elem_type == MC_GGUF_STRING && i < a->arr.count; i++)
            if (a->arr.strings[i].len != b->arr.strings[i].len ||
                memcmp(a->arr.strings[i].ptr, b->arr.strings[i].ptr, a->arr.strings[i].len))
                fail_msg("%s[%llu] differs", key, (unsigned long long)i);
        if (a->arr.elem_type != MC_GGUF_STRING && a->arr.elem_type != MC_GGUF_ARRAY &&
            memcmp(a->arr.data, b->arr.data, a->arr.count * s_vtype_size(a->arr.elem_type)))
            fail_msg("%s: array values differ", key);
        break;
    case MC_GGUF_F32: case MC_GGUF_F64:
        if (a->f != b->f) fail_msg("%s: %g vs %g", key, a->f, b->f);
        break;
    default:
        if (a->u != b->u) fail_msg("%s: %llu vs %llu", key, (unsigned long long)a->u, (unsigned long long)b->u);
    }
}

// Every key of `want` (but those in skip) has the same type and value in `got`.
static void s_same_keys(const mc_gguf_t *want, const mc_gguf_t *got, const char *const *skip, size_t n_skip) {
    for (size_t i = 0; i < mc_gguf_kv_count(want); i++) {
        const mc_gguf_kv_t *kv = mc_gguf_kv_at(want, i);
        bool skipped = false;
        for (size_t s = 0; s < n_skip; s++) skipped |= !strcmp(kv->key, skip[s]);
        if (skipped) continue;
        const mc_gguf_value_t *v = mc_gguf_find(got, kv->key);
        if (!v) fail_msg("converted file lacks key %s", kv->key);
        s_same_value(kv->key, &kv->value, v);
    }
}

// Same tensor names, types, shapes and bytes.
static void s_same_tensors(const mc_gguf_t *want, const mc_gguf_t *got) {
    assert_int_equal(mc_gguf_tensor_count(want), mc_gguf_tensor_count(got));
    for (size_t i = 0; i < mc_gguf_tensor_count(want); i++) {
        const mc_gguf_tensor_t *a = mc_gguf_tensor_at(want, i), *b = mc_gguf_tensor_find(got, a->name);
        if (!b) fail_msg("converted file lacks tensor %s", a->name);
        if (a->type != b->type || a->n_dims != b->n_dims || memcmp(a->ne, b->ne, sizeof a->ne) || a->size != b->size)
            fail_msg("%s: type or shape differs", a->name);
        if (memcmp(a->data, b->data, a->size)) fail_msg("%s: bytes differ", a->name);
    }
}

static float *s_logits(const char *path, const int32_t *ids, uint32_t n, uint32_t *n_vocab) {
    char err[MC_ERR_LEN] = "";
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s: %s", path, err);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    if (!e) fail_msg("%s", err);
    *n_vocab = m->hp.n_vocab;
    float *out = malloc((size_t)n * m->hp.n_vocab * sizeof *out);
    assert_non_null(out);
    if (mc_engine_eval(e, ids, n, 0, MC_LOGITS_ALL, out, err)) fail_msg("%s", err);
    mc_engine_destroy(&e);
    mc_model_destroy(&m);
    return out;
}

static void s_same_logits(const char *a, const char *b) {
    const int32_t ids[5] = {1, 300, 7, 415, 42};
    uint32_t va, vb;
    float *la = s_logits(a, ids, 5, &va), *lb = s_logits(b, ids, 5, &vb);
    assert_int_equal(va, vb);
    for (size_t i = 0; i < 5 * (size_t)va; i++) {
        assert_true(isfinite(la[i]));
        if (memcmp(&la[i], &lb[i], 4)) fail_msg("logit %zu: %a vs %a", i, (double)la[i], (double)lb[i]);
    }
    free(la);
    free(lb);
}

static void s_same_encodings(const mc_gguf_t *a, const mc_gguf_t *b) {
    char err[MC_ERR_LEN] = "";
    mc_tokenizer_t *ta = mc_tokenizer_new_from_gguf(a, err), *tb = mc_tokenizer_new_from_gguf(b, err);
    assert_non_null(ta);
    assert_non_null(tb);
    static const char *const texts[] = {"The river town woke slowly.", "  two  spaces, café, naïve",
                                        "A mixture of experts\nrouter 12345", "\xF0\x9F\x98\x80 emoji and \xE4\xB8\xAD"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t ia[256], ib[256];
        size_t na = 0, nb = 0;
        assert_int_equal(mc_tokenizer_encode(ta, texts[i], strlen(texts[i]), true, ia, 256, &na, err), MC_OK);
        assert_int_equal(mc_tokenizer_encode(tb, texts[i], strlen(texts[i]), true, ib, 256, &nb, err), MC_OK);
        assert_int_equal(na, nb);
        assert_true(na > 2);
        assert_memory_equal(ia, ib, na * sizeof *ia);
    }
    mc_tokenizer_destroy(&ta);
    mc_tokenizer_destroy(&tb);
}

static void s_convert_ok(const char *dir, const char *out, bool type_auto, mc_dtype_t type) {
    mc_convert_params_t p = mc_convert_params_default();
    p.type_auto = type_auto;
    p.type = type;
    p.log = s_keep() ? stdout : NULL;
    char err[MC_ERR_LEN] = "";
    if (mc_convert(dir, out, &p, err) != MC_OK) fail_msg("convert %s: %s", dir, err);
}

static void s_convert_fail(const char *dir, const char *needle) {
    char err[MC_ERR_LEN] = "", out[S_PATH];
    s_path(out, dir, "out.gguf");
    mc_convert_params_t p = mc_convert_params_default();
    if (mc_convert(dir, out, &p, err) == MC_OK) fail_msg("convert succeeded; expected an error with '%s'", needle);
    if (!strstr(err, needle)) fail_msg("error '%s' does not contain '%s'", err, needle);
    FILE *f = fopen(out, "rb");
    if (f) fail_msg("a failed conversion left %s", out);
}

static mc_mkmodel_params_t s_tiny(void) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.dim = 64;
    p.ffn = 96;
    p.n_layer = 2;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.n_expert = 4;
    p.n_expert_used = 2;
    p.n_vocab = 480;
    p.seed = 11;
    return p;
}

// --- Mixtral tests -----------------------------------------------------------------------------

static void test_mixtral_f32_roundtrip(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], out[S_PATH], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    s_path(out, dir, "out.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_F32, 2, NULL};
    s_export_mixtral(orig, dir, &x);
    s_convert_ok(dir, out, true, MC_DTYPE_F32);
    mc_gguf_t *a = s_open(orig), *b = s_open(out);
    s_same_tensors(a, b);
    static const char *const skip[] = {"general.name"};
    s_same_keys(a, b, skip, 1);
    s_same_encodings(a, b);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    s_same_logits(orig, out);
    s_done(dir);
}

// The real Mixtral tokenizer.model gives exactly the vocabulary of the fixture model.
static void test_mixtral_fixture(void **state) {
    (void)state;
    char fx[S_PATH], tok[S_PATH];
    if (!mc_test_fixture("tiny-f32.gguf", fx, sizeof fx) || !mc_test_fixture("tokenizer.model", tok, sizeof tok))
        skip();
    char dir[512], out[S_PATH];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(out, dir, "out.gguf");
    const s_export_t x = {MC_DTYPE_F32, 1, tok};
    s_export_mixtral(fx, dir, &x);
    s_convert_ok(dir, out, false, MC_DTYPE_F32);
    mc_gguf_t *a = s_open(fx), *b = s_open(out);
    s_same_tensors(a, b);
    static const char *const skip[] = {"general.name"};
    s_same_keys(a, b, skip, 1);
    s_same_encodings(a, b);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    s_same_logits(fx, out);
    s_done(dir);
}

// BF16 weights become exactly their f32 values; auto keeps BF16 bytes as they are.
static void test_mixtral_bf16(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], out[S_PATH], out2[S_PATH], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    s_path(out, dir, "out-f32.gguf");
    s_path(out2, dir, "out-auto.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_BF16, 2, NULL};
    s_export_mixtral(orig, dir, &x);
    s_convert_ok(dir, out, false, MC_DTYPE_F32);
    s_convert_ok(dir, out2, true, MC_DTYPE_F32);
    mc_gguf_t *a = s_open(orig), *b = s_open(out), *c = s_open(out2);
    uint64_t f32_file_type = 1;
    assert_true(mc_gguf_get_u64(c, "general.file_type", &f32_file_type));
    assert_int_equal(f32_file_type, 32); // MOSTLY_BF16
    for (size_t i = 0; i < mc_gguf_tensor_count(a); i++) {
        const mc_gguf_tensor_t *ta = mc_gguf_tensor_at(a, i), *tb = mc_gguf_tensor_find(b, ta->name),
                               *tc = mc_gguf_tensor_find(c, ta->name);
        assert_non_null(tb);
        assert_non_null(tc);
        assert_int_equal(tb->type, MC_DTYPE_F32);
        const bool matrix = ta->n_dims > 1 && !strstr(ta->name, "ffn_gate_inp");
        assert_int_equal(tc->type, matrix ? MC_DTYPE_BF16 : MC_DTYPE_F32);
        for (uint64_t k = 0; k < ta->n_elems; k++) {
            float v, w;
            memcpy(&v, ta->data + 4 * k, 4);
            memcpy(&w, tb->data + 4 * k, 4);
            const uint16_t h = mc_fp32_to_bf16(v);
            if (mc_f32_bits(w) != mc_f32_bits(mc_bf16_to_fp32(h))) fail_msg("%s[%llu]", ta->name, (unsigned long long)k);
            if (matrix) {
                uint16_t hc;
                memcpy(&hc, tc->data + 2 * k, 2);
                assert_int_equal(hc, h);
            } else {
                assert_memory_equal(tc->data + 4 * k, tb->data + 4 * k, 4);
            }
        }
    }
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    mc_gguf_destroy(&c);
    // BF16 matrices run in the engine, and BF16 and F32 files of the same weights agree to about
    // 1% (the BF16 kernel rounds the activations to bf16 too); a wrong row order would not.
    uint32_t nv, nv2;
    const int32_t ids[3] = {1, 40, 300};
    float *l16 = s_logits(out2, ids, 3, &nv), *l32 = s_logits(out, ids, 3, &nv2);
    assert_int_equal(nv, nv2);
    for (size_t i = 0; i < 3 * (size_t)nv; i++) {
        assert_true(isfinite(l16[i]));
        if (fabsf(l16[i] - l32[i]) > 0.05f * (1.0f + fabsf(l32[i]))) fail_msg("logit %zu: %g vs %g", i, l16[i], l32[i]);
    }
    free(l16);
    free(l32);
    s_done(dir);
}

// Q8_0 output equals quantizing the original f32 rows; norms and routers stay F32.
static void test_mixtral_q8_0(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], out[S_PATH], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    s_path(out, dir, "out.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_F32, 1, NULL};
    s_export_mixtral(orig, dir, &x);
    s_convert_ok(dir, out, false, MC_DTYPE_Q8_0);
    mc_gguf_t *a = s_open(orig), *b = s_open(out);
    uint64_t ft = 0, qv = 0;
    assert_true(mc_gguf_get_u64(b, "general.file_type", &ft));
    assert_int_equal(ft, 7);
    assert_true(mc_gguf_get_u64(b, "general.quantization_version", &qv));
    assert_int_equal(qv, 2);
    size_t quantized = 0;
    for (size_t i = 0; i < mc_gguf_tensor_count(a); i++) {
        const mc_gguf_tensor_t *ta = mc_gguf_tensor_at(a, i), *tb = mc_gguf_tensor_find(b, ta->name);
        assert_non_null(tb);
        const bool matrix = ta->n_dims > 1 && !strstr(ta->name, "ffn_gate_inp");
        if (!matrix) {
            assert_int_equal(tb->type, MC_DTYPE_F32);
            assert_memory_equal(ta->data, tb->data, ta->size);
            continue;
        }
        assert_int_equal(tb->type, MC_DTYPE_Q8_0);
        const uint64_t ne0 = ta->ne[0], rows = ta->n_elems / ne0;
        const size_t rb = mc_dtype_row_bytes(MC_DTYPE_Q8_0, ne0);
        assert_int_equal(tb->size, rb * rows);
        float *row = malloc(ne0 * sizeof *row);
        uint8_t *q = malloc(rb);
        for (uint64_t r = 0; r < rows; r++) {
            memcpy(row, ta->data + r * ne0 * 4, ne0 * 4);
            assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, row, q, (int64_t)ne0), MC_OK);
            if (memcmp(q, tb->data + r * rb, rb)) fail_msg("%s row %llu", ta->name, (unsigned long long)r);
        }
        free(row);
        free(q);
        quantized++;
    }
    assert_true(quantized >= 2 + 4 * mp.n_layer + 3 * mp.n_layer);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    // The quantized file runs in the engine.
    uint32_t nv;
    const int32_t ids[3] = {1, 5, 9};
    float *l = s_logits(out, ids, 3, &nv);
    for (size_t i = 0; i < 3 * (size_t)nv; i++) assert_true(isfinite(l[i]));
    free(l);
    s_done(dir);
}

// Rows that are not whole Q4_K blocks (256) fall back to Q8_0, and to F16
// when they are not whole Q8_0 blocks (32) either.
static void test_mixtral_fallback(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], out[S_PATH], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    s_path(out, dir, "out.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    mp.dim = 256;
    mp.ffn = 40; // down rows: 40 values
    mp.n_layer = 1;
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_F32, 1, NULL};
    s_export_mixtral(orig, dir, &x);
    s_convert_ok(dir, out, false, MC_DTYPE_Q4_K);
    mc_gguf_t *b = s_open(out);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.attn_q.weight")->type, MC_DTYPE_Q4_K);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_gate_exps.weight")->type, MC_DTYPE_Q4_K);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_down_exps.weight")->type, MC_DTYPE_F16);
    assert_int_equal(mc_gguf_tensor_find(b, "token_embd.weight")->type, MC_DTYPE_Q4_K);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_gate_inp.weight")->type, MC_DTYPE_F32);
    mc_gguf_destroy(&b);
    // MXFP4: the experts only, the other matrices F32; the file loads.
    s_convert_ok(dir, out, false, MC_DTYPE_MXFP4);
    b = s_open(out);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_gate_exps.weight")->type, MC_DTYPE_MXFP4);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_up_exps.weight")->type, MC_DTYPE_MXFP4);
    // ffn is not whole 32-value blocks: the fallback, as for Q4_K.
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_down_exps.weight")->type, MC_DTYPE_F16);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.attn_q.weight")->type, MC_DTYPE_F32);
    assert_int_equal(mc_gguf_tensor_find(b, "token_embd.weight")->type, MC_DTYPE_F32);
    mc_gguf_destroy(&b);
    mc_model_t *mx = mc_model_open(out, err);
    if (!mx) fail_msg("%s", err);
    mc_model_destroy(&mx);
    s_convert_ok(dir, out, false, MC_DTYPE_Q6_K);
    mc_mkmodel_params_t mp2 = mp;
    mp2.ffn = 96; // 96 = 3 Q8_0 blocks
    assert_int_equal(mc_mkmodel_write(&mp2, orig, err), MC_OK);
    s_export_mixtral(orig, dir, &x);
    s_convert_ok(dir, out, false, MC_DTYPE_Q4_K);
    b = s_open(out);
    assert_int_equal(mc_gguf_tensor_find(b, "blk.0.ffn_down_exps.weight")->type, MC_DTYPE_Q8_0);
    mc_gguf_destroy(&b);
    uint32_t nv;
    const int32_t ids[2] = {1, 2};
    float *l = s_logits(out, ids, 2, &nv);
    for (size_t i = 0; i < 2 * (size_t)nv; i++) assert_true(isfinite(l[i]));
    free(l);
    s_done(dir);
}

// --- broken folders ---------------------------------------------------------------------------

static void s_set_num(const char *dir, const char *key, double v) {
    cJSON *c = s_read_json(dir, "config.json");
    cJSON_DeleteItemFromObjectCaseSensitive(c, key);
    if (!isnan(v)) cJSON_AddNumberToObject(c, key, v);
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
}

static void test_mixtral_errors(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], path[S_PATH], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    mp.n_layer = 1;
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_F32, 2, NULL};
    s_export_mixtral(orig, dir, &x);
    cJSON *good = s_read_json(dir, "config.json");

    // Architectures.
    cJSON *c = cJSON_Duplicate(good, 1);
    cJSON_ReplaceItemInObject(c, "architectures", cJSON_CreateStringArray((const char *[]){"LlamaForCausalLM"}, 1));
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_convert_fail(dir, "'LlamaForCausalLM' is not supported (supported: MixtralForCausalLM, Qwen3MoeForCausalLM");
    c = cJSON_Duplicate(good, 1);
    cJSON_DeleteItemFromObject(c, "architectures");
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_convert_fail(dir, "'architectures' is missing");

    // Missing and impossible values.
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "num_local_experts", NAN);
    s_convert_fail(dir, "'num_local_experts' is missing");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "num_experts_per_tok", 9);
    s_convert_fail(dir, "'num_experts_per_tok' must be a whole number in 1..4");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "hidden_size", 64.5);
    s_convert_fail(dir, "'hidden_size' must be a whole number");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "rms_norm_eps", -1);
    s_convert_fail(dir, "'rms_norm_eps' must be a positive number");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "num_key_value_heads", 3);
    s_convert_fail(dir, "not a multiple of num_key_value_heads 3");

    // Shapes that disagree with the config name the tensor.
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "intermediate_size", 128);
    s_convert_fail(dir, "tensor 'model.layers.0.block_sparse_moe.experts.0.w1.weight' has shape [96, 64] but config.json "
                        "implies [128, 64]");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "vocab_size", 500);
    s_convert_fail(dir, "tensor 'model.embed_tokens.weight' has shape [480, 64]");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "num_local_experts", 5);
    s_convert_fail(dir, "has shape [4, 64] but config.json implies [5, 64]");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "num_hidden_layers", 2);
    s_convert_fail(dir, "tensor 'model.layers.1.input_layernorm.weight' is missing");
    s_write_json(dir, "config.json", good);
    s_set_num(dir, "head_dim", 8);
    s_convert_fail(dir, "self_attn.q_proj.weight' has shape [64, 64] but config.json implies [32, 64]");
    // Variants not mapped.
    s_write_json(dir, "config.json", good);
    c = cJSON_Duplicate(good, 1);
    cJSON_ReplaceItemInObject(c, "rope_scaling", cJSON_Parse("{\"type\":\"yarn\",\"factor\":4}"));
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_convert_fail(dir, "rope_scaling is not supported");
    s_write_json(dir, "config.json", good);
    s_path(path, dir, "config.json");
    s_write_bytes(path, "{\"architectures\":", 17);
    s_convert_fail(dir, "config.json: not a JSON object");
    s_write_json(dir, "config.json", good);

    // Tokenizer problems.
    char tok[S_PATH], tok_save[S_PATH];
    s_path(tok, dir, "tokenizer.model");
    s_path(tok_save, dir, "tokenizer.model.saved");
    assert_int_equal(rename(tok, tok_save), 0);
    s_convert_fail(dir, "tokenizer.model: cannot open");
    s_write_bytes(tok, "\xff\xff\xff\xff", 4);
    s_convert_fail(dir, "not a SentencePiece model");
    assert_int_equal(rename(tok_save, tok), 0);
    s_set_num(dir, "vocab_size", 100);
    s_convert_fail(dir, "embed_tokens"); // shapes are checked before the vocabulary

    // A tensor no Mixtral has, and a tensor of an unsupported dtype.
    s_write_json(dir, "config.json", good);
    char shard[S_PATH];
    s_path(shard, dir, "model-00002-of-00002.safetensors");
    size_t len;
    uint8_t *saved = mc_test_read_file(shard, &len);
    assert_non_null(saved);
    {
        mc_safetensors_t *st = mc_safetensors_parse(saved, len, err);
        assert_non_null(st);
        size_t n = mc_safetensors_count(st);
        mc_safetensors_desc_t *d = calloc(n + 1, sizeof *d);
        for (size_t i = 0; i < n; i++) {
            const mc_safetensors_tensor_t *t = mc_safetensors_at(st, i);
            d[i] = (mc_safetensors_desc_t){t->name, t->dtype, t->n_dims, t->shape, t->data};
        }
        static const float bias[64] = {0};
        static const uint64_t bshape[1] = {64};
        d[n] = (mc_safetensors_desc_t){"model.layers.0.self_attn.q_proj.bias", MC_DTYPE_F32, 1, bshape, bias};
        char tmp[S_PATH];
        s_path(tmp, dir, "tmp.safetensors");
        assert_int_equal(mc_safetensors_write(tmp, d, n + 1, NULL, 0, err), MC_OK);
        assert_int_equal(rename(tmp, shard), 0);
        free(d);
        mc_safetensors_destroy(&st);
    }
    cJSON *idx = s_read_json(dir, "model.safetensors.index.json");
    cJSON_AddStringToObject(cJSON_GetObjectItem(idx, "weight_map"), "model.layers.0.self_attn.q_proj.bias",
                            "model-00002-of-00002.safetensors");
    s_write_json(dir, "model.safetensors.index.json", idx);
    s_convert_fail(dir, "tensor 'model.layers.0.self_attn.q_proj.bias' is not part of a MixtralForCausalLM model");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(idx, "weight_map"), "model.layers.0.self_attn.q_proj.bias");
    s_write_json(dir, "model.safetensors.index.json", idx);
    s_convert_fail(dir, "is not in the weight_map");
    cJSON_Delete(idx);
    s_write_bytes(shard, saved, len);
    // An I64 tensor (as position ids sometimes are) is refused by name.
    {
        char one[S_PATH];
        s_path(one, dir, "model-00001-of-00002.safetensors");
        size_t l1;
        uint8_t *b1 = mc_test_read_file(one, &l1);
        const char *needle = "\"dtype\":\"F32\"";
        uint8_t *hit = NULL;
        for (size_t i = 8; i + strlen(needle) < l1 && !hit; i++)
            if (!memcmp(b1 + i, needle, strlen(needle))) hit = b1 + i;
        assert_non_null(hit);
        memcpy(hit, "\"dtype\":\"I32\"", strlen(needle)); // same length, same sizes
        s_write_bytes(one, b1, l1);
        s_convert_fail(dir, "has dtype I32, which is not supported");
        free(b1);
    }
    free(saved);
    cJSON_Delete(good);
    s_done(dir);
}

// --- Qwen3-MoE and OLMoE ----------------------------------------------------------------------------

typedef enum { S_QWEN, S_OLMOE, S_QWEN2 } s_bpe_arch_t;

typedef struct {
    uint32_t dim, n_layer, n_head, n_kv, head_dim, ffn, ffn_exp, n_expert, n_used, n_vocab;
    bool tied, pair_merges;
} s_bpe_shape_t;

// GPT-2's byte-to-character table: printable bytes stand for themselves,
// the others for U+0100 onwards in byte order.
static uint32_t s_byte_char(uint32_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    uint32_t n = 0;
    for (uint32_t x = 0; x < b; x++) n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174);
    return 256 + n;
}

static void s_utf8(uint32_t c, char *out) {
    if (c < 0x80) out[0] = (char)c, out[1] = 0;
    else out[0] = (char)(0xC0 | (c >> 6)), out[1] = (char)(0x80 | (c & 0x3F)), out[2] = 0;
}

static const char *const s_merges[][2] = {{"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}};
static const char *const s_merged[] = {"\xC4\xA0t", "he", "\xC4\xA0the", "in"};

// A byte-level BPE tokenizer.json: the 256 byte characters (ids 0..255),
// four merges (256..259), added tokens at 260..263; tokenizer_config.json
// names the special ones.
static void s_write_bpe_tokenizer(const char *dir, bool pair_merges) {
    cJSON *tj = cJSON_CreateObject();
    cJSON_AddStringToObject(tj, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(tj, "added_tokens");
    static const struct {
        int id;
        const char *content;
        bool special;
    } adds[] = {{260, "<|endoftext|>", true}, {261, "<|im_start|>", true}, {262, "<|im_end|>", true}, {263, "<think>", false}};
    for (size_t i = 0; i < 4; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", adds[i].id);
        cJSON_AddStringToObject(a, "content", adds[i].content);
        cJSON_AddBoolToObject(a, "special", adds[i].special);
        cJSON_AddFalseToObject(a, "normalized");
        cJSON_AddItemToArray(added, a);
    }
    cJSON *pre = cJSON_AddObjectToObject(tj, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *pts = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject(), *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddItemToArray(pts, split);
    cJSON_AddItemToArray(pts, bl);
    cJSON *model = cJSON_AddObjectToObject(tj, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (uint32_t b = 0; b < 256; b++) {
        char s[4];
        s_utf8(s_byte_char(b), s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    for (int i = 0; i < 4; i++) cJSON_AddNumberToObject(vocab, s_merged[i], 256 + i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < 4; i++) {
        if (pair_merges) {
            cJSON_AddItemToArray(merges, cJSON_CreateStringArray(s_merges[i], 2));
        } else {
            char m[32];
            snprintf(m, sizeof m, "%s %s", s_merges[i][0], s_merges[i][1]);
            cJSON_AddItemToArray(merges, cJSON_CreateString(m));
        }
    }
    // The pair form allows spaces inside a part.
    if (pair_merges) cJSON_AddItemToArray(merges, cJSON_CreateStringArray((const char *[]){"a b", "c"}, 2));
    s_write_json(dir, "tokenizer.json", tj);
    cJSON_Delete(tj);
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddNullToObject(tc, "bos_token");
    cJSON_AddStringToObject(tc, "eos_token", "<|im_end|>");
    cJSON *pad = cJSON_AddObjectToObject(tc, "pad_token");
    cJSON_AddStringToObject(pad, "content", "<|endoftext|>");
    cJSON_AddFalseToObject(tc, "add_bos_token");
    cJSON_AddStringToObject(tc, "chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}");
    s_write_json(dir, "tokenizer_config.json", tc);
    cJSON_Delete(tc);
}

static void s_rand(mc_rng_t *rng, float *v, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) v[i] = (float)(mc_rng_uniform(rng) * 2 - 1) * scale;
}

static void s_build_bpe_model(const char *dir, s_bpe_arch_t arch, const s_bpe_shape_t *s, s_hf_t *hf) {
    mc_rng_t rng;
    mc_rng_seed(&rng, 5);
    const uint64_t D = s->dim, Q = (uint64_t)s->n_head * s->head_dim, KV = (uint64_t)s->n_kv * s->head_dim;
    const uint64_t F = s->ffn_exp, V = s->n_vocab, E = s->n_expert;
    size_t max = (size_t)(V * D > F * D ? V * D : F * D);
    if (Q * D > max) max = (size_t)(Q * D);
    float *v = malloc(max * sizeof *v);
    char n[160];
    const mc_dtype_t bf = MC_DTYPE_BF16;
#define S_T(rows, cols, scale, ...) \
    (snprintf(n, sizeof n, __VA_ARGS__), s_rand(&rng, v, (size_t)((rows) * ((cols) ? (cols) : 1)), scale), \
     s_hf_add(hf, n, rows, cols, bf, v))
    S_T(V, D, 1.0f, "model.embed_tokens.weight");
    for (uint32_t l = 0; l < s->n_layer; l++) {
        S_T(D, 0, 1.0f, "model.layers.%u.input_layernorm.weight", l);
        S_T(Q, D, 0.1f, "model.layers.%u.self_attn.q_proj.weight", l);
        S_T(KV, D, 0.1f, "model.layers.%u.self_attn.k_proj.weight", l);
        S_T(KV, D, 0.1f, "model.layers.%u.self_attn.v_proj.weight", l);
        S_T(D, Q, 0.1f, "model.layers.%u.self_attn.o_proj.weight", l);
        S_T(arch == S_QWEN ? s->head_dim : Q, 0, 1.0f, "model.layers.%u.self_attn.q_norm.weight", l);
        S_T(arch == S_QWEN ? s->head_dim : KV, 0, 1.0f, "model.layers.%u.self_attn.k_norm.weight", l);
        S_T(D, 0, 1.0f, "model.layers.%u.post_attention_layernorm.weight", l);
        S_T(E, D, 0.1f, "model.layers.%u.mlp.gate.weight", l);
        for (uint32_t e = 0; e < E; e++) {
            S_T(F, D, 0.1f, "model.layers.%u.mlp.experts.%u.gate_proj.weight", l, e);
            S_T(F, D, 0.1f, "model.layers.%u.mlp.experts.%u.up_proj.weight", l, e);
            S_T(D, F, 0.1f, "model.layers.%u.mlp.experts.%u.down_proj.weight", l, e);
        }
    }
    S_T(D, 0, 1.0f, "model.norm.weight");
    if (!s->tied) S_T(V, D, 0.1f, "lm_head.weight");
#undef S_T
    free(v);
    s_hf_write(hf, dir, 2);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(c, "architectures",
                          cJSON_CreateStringArray((const char *[]){arch == S_QWEN ? "Qwen3MoeForCausalLM" : "OlmoeForCausalLM"}, 1));
    cJSON_AddNumberToObject(c, "vocab_size", s->n_vocab);
    cJSON_AddNumberToObject(c, "hidden_size", s->dim);
    cJSON_AddNumberToObject(c, "intermediate_size", s->ffn);
    cJSON_AddNumberToObject(c, "num_hidden_layers", s->n_layer);
    cJSON_AddNumberToObject(c, "num_attention_heads", s->n_head);
    cJSON_AddNumberToObject(c, "num_key_value_heads", s->n_kv);
    cJSON_AddNumberToObject(c, "num_experts", s->n_expert);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", s->n_used);
    cJSON_AddNumberToObject(c, "max_position_embeddings", 4096);
    cJSON_AddNumberToObject(c, "rope_theta", arch == S_QWEN ? 1000000.0 : 10000.0);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tied);
    cJSON_AddNumberToObject(c, "bos_token_id", 260);
    cJSON_AddNumberToObject(c, "eos_token_id", 262);
    if (arch == S_QWEN) {
        cJSON_AddNumberToObject(c, "head_dim", s->head_dim);
        cJSON_AddNumberToObject(c, "moe_intermediate_size", s->ffn_exp);
        cJSON_AddTrueToObject(c, "norm_topk_prob");
        cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
        cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
        cJSON_AddFalseToObject(c, "attention_bias");
        cJSON_AddNullToObject(c, "rope_scaling");
    } else {
        cJSON_AddNullToObject(c, "clip_qkv");
        cJSON_AddFalseToObject(c, "norm_topk_prob");
    }
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_write_bpe_tokenizer(dir, s->pair_merges);
}

static void s_expect_u(const mc_gguf_t *g, const char *key, uint64_t want) {
    uint64_t v;
    if (!mc_gguf_get_u64(g, key, &v)) fail_msg("%s missing", key);
    if (v != want) fail_msg("%s = %llu, want %llu", key, (unsigned long long)v, (unsigned long long)want);
}

static void s_expect_str(const mc_gguf_t *g, const char *key, const char *want) {
    mc_gguf_str_t s;
    if (!mc_gguf_get_str(g, key, &s)) fail_msg("%s missing", key);
    if (s.len != strlen(want) || memcmp(s.ptr, want, s.len)) fail_msg("%s = '%.*s', want '%s'", key, (int)s.len, s.ptr, want);
}

// Output tensor `name` holds the HF tensors `parts` stacked, as f32 (or, at
// BF16, their exact bytes), with shape ne.
static void s_expect_tensor(const mc_gguf_t *g, const s_hf_t *hf, const char *name, mc_dtype_t type, uint32_t n_dims,
                            const uint64_t *ne, const char *const *parts, size_t n_parts) {
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    if (!t) fail_msg("no tensor %s", name);
    if (t->type != type) fail_msg("%s: type %s, want %s", name, mc_dtype_name(t->type), mc_dtype_name(type));
    assert_int_equal(t->n_dims, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        if (t->ne[d] != ne[d]) fail_msg("%s: ne[%u] = %llu, want %llu", name, d, (unsigned long long)t->ne[d],
                                        (unsigned long long)ne[d]);
    const uint8_t *p = t->data;
    for (size_t k = 0; k < n_parts; k++) {
        const s_hft_t *h = s_hf_find(hf, parts[k]);
        const uint64_t n = h->shape[0] * (h->n_dims > 1 ? h->shape[1] : 1);
        for (uint64_t i = 0; i < n; i++) {
            uint16_t b;
            memcpy(&b, (const uint8_t *)h->data + 2 * i, 2);
            if (type == MC_DTYPE_BF16) {
                if (memcmp(p, &b, 2)) fail_msg("%s: element %llu of %s", name, (unsigned long long)i, parts[k]);
                p += 2;
            } else {
                const float f = mc_bf16_to_fp32(b);
                if (memcmp(p, &f, 4)) fail_msg("%s: element %llu of %s", name, (unsigned long long)i, parts[k]);
                p += 4;
            }
        }
    }
    assert_ptr_equal(p, t->data + t->size);
}

static void s_check_bpe_model(const char *out, s_bpe_arch_t arch, const s_bpe_shape_t *s, const s_hf_t *hf,
                              mc_dtype_t mt) {
    mc_gguf_t *g = s_open(out);
    const char *A = arch == S_QWEN ? "qwen3moe" : "olmoe";
    char k[96];
#define S_K(suffix) (snprintf(k, sizeof k, "%s.%s", A, suffix), k)
    s_expect_str(g, "general.architecture", A);
    s_expect_u(g, S_K("block_count"), s->n_layer);
    s_expect_u(g, S_K("context_length"), 4096);
    s_expect_u(g, S_K("embedding_length"), s->dim);
    s_expect_u(g, S_K("feed_forward_length"), s->ffn);
    s_expect_u(g, S_K("attention.head_count"), s->n_head);
    s_expect_u(g, S_K("attention.head_count_kv"), s->n_kv);
    s_expect_u(g, S_K("expert_count"), s->n_expert);
    s_expect_u(g, S_K("expert_used_count"), s->n_used);
    double f;
    assert_true(mc_gguf_get_f64(g, S_K("rope.freq_base"), &f));
    assert_true(f == (arch == S_QWEN ? 1e6 : 1e4));
    assert_true(mc_gguf_get_f64(g, S_K("attention.layer_norm_rms_epsilon"), &f));
    assert_true((float)f == 1e-6f);
    bool b;
    if (arch == S_QWEN) {
        s_expect_u(g, S_K("attention.key_length"), s->head_dim);
        s_expect_u(g, S_K("attention.value_length"), s->head_dim);
        s_expect_u(g, S_K("expert_feed_forward_length"), s->ffn_exp);
        assert_true(mc_gguf_get_bool(g, S_K("expert_weights_norm"), &b) && b);
    } else {
        assert_null(mc_gguf_find(g, S_K("attention.key_length")));
        assert_null(mc_gguf_find(g, S_K("expert_weights_norm")));
    }
    assert_null(mc_gguf_find(g, "llama.vocab_size"));
#undef S_K
    // Vocabulary: bytes, merges, added tokens by kind, padding, special ids.
    s_expect_str(g, "tokenizer.ggml.model", "gpt2");
    s_expect_str(g, "tokenizer.ggml.pre", arch == S_QWEN ? "qwen2" : "olmo");
    const mc_gguf_value_t *toks = mc_gguf_find(g, "tokenizer.ggml.tokens"), *ty = mc_gguf_find(g, "tokenizer.ggml.token_type");
    assert_non_null(toks);
    assert_non_null(ty);
    assert_null(mc_gguf_find(g, "tokenizer.ggml.scores"));
    assert_int_equal(toks->arr.count, s->n_vocab);
    assert_int_equal(ty->arr.count, s->n_vocab);
    for (uint32_t i = 0; i < s->n_vocab; i++) {
        char want[32];
        int64_t t;
        assert_true(mc_gguf_arr_i64(ty, i, &t));
        int64_t want_t = 1;
        if (i < 256) s_utf8(s_byte_char(i), want);
        else if (i < 260) snprintf(want, sizeof want, "%s", s_merged[i - 256]);
        else if (i < 264) {
            static const char *const a[4] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"};
            snprintf(want, sizeof want, "%s", a[i - 260]);
            want_t = i == 263 ? 4 : 3;
        } else {
            snprintf(want, sizeof want, "[PAD%u]", i);
            want_t = 5;
        }
        const mc_gguf_str_t *tok = &toks->arr.strings[i];
        if (tok->len != strlen(want) || memcmp(tok->ptr, want, tok->len)) fail_msg("token %u: '%.*s' vs '%s'", i, (int)tok->len, tok->ptr, want);
        if (t != want_t) fail_msg("token %u: type %lld, want %lld", i, (long long)t, (long long)want_t);
    }
    const mc_gguf_value_t *merges = mc_gguf_find(g, "tokenizer.ggml.merges");
    assert_non_null(merges);
    assert_int_equal(merges->arr.count, s->pair_merges ? 5 : 4);
    for (int i = 0; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "%s %s", s_merges[i][0], s_merges[i][1]);
        assert_int_equal(merges->arr.strings[i].len, strlen(want));
        assert_memory_equal(merges->arr.strings[i].ptr, want, strlen(want));
    }
    if (s->pair_merges) {
        const char *want = "a\xC4\xA0" "b c";
        assert_int_equal(merges->arr.strings[4].len, strlen(want));
        assert_memory_equal(merges->arr.strings[4].ptr, want, strlen(want));
    }
    s_expect_u(g, "tokenizer.ggml.eos_token_id", 262); // tokenizer_config's eos_token
    s_expect_u(g, "tokenizer.ggml.padding_token_id", 260);
    s_expect_u(g, "tokenizer.ggml.bos_token_id", 260); // config.json's bos_token_id
    assert_null(mc_gguf_find(g, "tokenizer.ggml.unknown_token_id"));
    assert_true(mc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) && !b);
    s_expect_str(g, "tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}");

    // Tensors.
    const uint64_t D = s->dim, Q = (uint64_t)s->n_head * s->head_dim, KV = (uint64_t)s->n_kv * s->head_dim;
    const uint64_t F = s->ffn_exp, V = s->n_vocab, E = s->n_expert;
    const uint64_t qn = arch == S_QWEN ? s->head_dim : Q, kn = arch == S_QWEN ? s->head_dim : KV;
    char hn[8][160], gn[64];
    const char *parts[64];
#define S_ONE(gname, type, nd, ne0, ne1, ...)                                              \
    do {                                                                                   \
        snprintf(hn[0], sizeof hn[0], __VA_ARGS__);                                        \
        parts[0] = hn[0];                                                                  \
        s_expect_tensor(g, hf, gname, type, nd, (const uint64_t[]){ne0, ne1}, parts, 1);   \
    } while (0)
    size_t n_tensors = s->tied ? 2 : 3;
    S_ONE("token_embd.weight", mt, 2, D, V, "model.embed_tokens.weight");
    S_ONE("output_norm.weight", MC_DTYPE_F32, 1, D, 1, "model.norm.weight");
    if (s->tied) assert_null(mc_gguf_tensor_find(g, "output.weight"));
    else S_ONE("output.weight", mt, 2, D, V, "lm_head.weight");
    for (uint32_t l = 0; l < s->n_layer; l++) {
        const char *pre = "model.layers";
#define S_L(suffix, type, nd, ne0, ne1, hsuffix)                        \
    snprintf(gn, sizeof gn, "blk.%u.%s.weight", l, suffix);              \
    S_ONE(gn, type, nd, ne0, ne1, "%s.%u.%s.weight", pre, l, hsuffix);   \
    n_tensors++
        S_L("attn_norm", MC_DTYPE_F32, 1, D, 1, "input_layernorm");
        S_L("attn_q", mt, 2, D, Q, "self_attn.q_proj");
        S_L("attn_k", mt, 2, D, KV, "self_attn.k_proj");
        S_L("attn_v", mt, 2, D, KV, "self_attn.v_proj");
        S_L("attn_output", mt, 2, Q, D, "self_attn.o_proj");
        S_L("attn_q_norm", MC_DTYPE_F32, 1, qn, 1, "self_attn.q_norm");
        S_L("attn_k_norm", MC_DTYPE_F32, 1, kn, 1, "self_attn.k_norm");
        S_L("ffn_norm", MC_DTYPE_F32, 1, D, 1, "post_attention_layernorm");
        S_L("ffn_gate_inp", MC_DTYPE_F32, 2, D, E, "mlp.gate");
#undef S_L
        static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"}, *const out[3] = {"gate", "up", "down"};
        for (int p = 0; p < 3; p++) {
            static char names[64][160];
            for (uint32_t e = 0; e < E; e++) {
                snprintf(names[e], sizeof names[e], "%s.%u.mlp.experts.%u.%s.weight", pre, l, e, proj[p]);
                parts[e] = names[e];
            }
            snprintf(gn, sizeof gn, "blk.%u.ffn_%s_exps.weight", l, out[p]);
            const uint64_t ne[3] = {p < 2 ? D : F, p < 2 ? F : D, E};
            s_expect_tensor(g, hf, gn, mt, 3, ne, parts, E);
            n_tensors++;
        }
    }
#undef S_ONE
    assert_int_equal(mc_gguf_tensor_count(g), n_tensors);
    mc_gguf_destroy(&g);
}

static void s_bpe_case(s_bpe_arch_t arch, const s_bpe_shape_t *s) {
    char dir[512], out[S_PATH];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_hf_t hf = {0};
    s_build_bpe_model(dir, arch, s, &hf);
    s_path(out, dir, "out-f32.gguf");
    s_convert_ok(dir, out, false, MC_DTYPE_F32);
    s_check_bpe_model(out, arch, s, &hf, MC_DTYPE_F32);
    s_path(out, dir, "out-bf16.gguf");
    s_convert_ok(dir, out, true, MC_DTYPE_F32);
    s_check_bpe_model(out, arch, s, &hf, MC_DTYPE_BF16);
    s_hf_free(&hf);
    s_done(dir);
}

static void test_qwen3moe(void **state) {
    (void)state;
    // head_dim 32 is not hidden_size / heads: the config's value must win.
    s_bpe_shape_t s = {.dim = 64, .n_layer = 2, .n_head = 4, .n_kv = 2, .head_dim = 32, .ffn = 96, .ffn_exp = 32,
                       .n_expert = 4, .n_used = 2, .n_vocab = 270, .tied = false, .pair_merges = false};
    s_bpe_case(S_QWEN, &s);
    s.tied = true;
    s.pair_merges = true;
    s_bpe_case(S_QWEN, &s);
}

static void test_olmoe(void **state) {
    (void)state;
    s_bpe_shape_t s = {.dim = 64, .n_layer = 1, .n_head = 4, .n_kv = 4, .head_dim = 16, .ffn = 48, .ffn_exp = 48,
                       .n_expert = 4, .n_used = 2, .n_vocab = 264, .tied = false, .pair_merges = false};
    s_bpe_case(S_OLMOE, &s);
}

// --- the families' fixtures (tests/fixtures/arch) through Hugging Face and back ----------------

// Write the fixture GGUF at gguf_path as the Hugging Face folder its model
// would come in: no Q/K reordering (these families rotate halves, as HF
// does), per-expert tensors, the vocabulary as tokenizer.json.
static void s_export_bpe_family(const char *gguf_path, const char *dir, s_bpe_arch_t arch) {
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(gguf_path, err);
    if (!g) fail_msg("%s", err);
    const char *a = arch == S_QWEN ? "qwen3moe" : arch == S_QWEN2 ? "qwen2moe" : "olmoe";
    static const char *const hf_arch[] = {"Qwen3MoeForCausalLM", "OlmoeForCausalLM", "Qwen2MoeForCausalLM"};
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    const uint64_t dim = s_u64(g, K("embedding_length")), n_head = s_u64(g, K("attention.head_count"));
    s_hf_t hf = {0};
    s_hf_from_gguf(g, false, n_head, 0, 0, MC_DTYPE_F32, &hf);
    s_hf_write(&hf, dir, 2);
    s_hf_free(&hf);

    const mc_gguf_value_t *toks = mc_gguf_find(g, "tokenizer.ggml.tokens");
    const mc_gguf_value_t *types = mc_gguf_find(g, "tokenizer.ggml.token_type");
    const mc_gguf_value_t *merges = mc_gguf_find(g, "tokenizer.ggml.merges");
    assert_non_null(toks), assert_non_null(types), assert_non_null(merges);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(c, "architectures",
                          cJSON_CreateStringArray((const char *[]){hf_arch[arch]}, 1));
    cJSON_AddNumberToObject(c, "vocab_size", (double)toks->arr.count);
    cJSON_AddNumberToObject(c, "hidden_size", (double)dim);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s_u64(g, K("feed_forward_length")));
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)s_u64(g, K("block_count")));
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)n_head);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)s_u64(g, K("attention.head_count_kv")));
    cJSON_AddNumberToObject(c, "num_experts", (double)s_u64(g, K("expert_count")));
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)s_u64(g, K("expert_used_count")));
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s_u64(g, K("context_length")));
    cJSON_AddNumberToObject(c, "rope_theta", s_f64(g, K("rope.freq_base")));
    cJSON_AddNumberToObject(c, "rms_norm_eps", s_f64(g, K("attention.layer_norm_rms_epsilon")));
    cJSON_AddBoolToObject(c, "tie_word_embeddings", mc_gguf_tensor_find(g, "output.weight") == NULL);
    if (arch == S_QWEN) {
        cJSON_AddNumberToObject(c, "head_dim", (double)s_u64(g, K("attention.key_length")));
        cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)s_u64(g, K("expert_feed_forward_length")));
        cJSON_AddTrueToObject(c, "norm_topk_prob");
        cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
        cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
        cJSON_AddFalseToObject(c, "attention_bias");
        cJSON_AddNullToObject(c, "rope_scaling");
    } else if (arch == S_QWEN2) { // Qwen1.5-MoE-A2.7B's config.json keys (q/k/v biases have no switch)
        cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)s_u64(g, K("expert_feed_forward_length")));
        cJSON_AddNumberToObject(c, "shared_expert_intermediate_size",
                                (double)s_u64(g, K("expert_shared_feed_forward_length")));
        cJSON_AddFalseToObject(c, "norm_topk_prob");
        // Dense layers: the step as it is, the leading ones listed.
        uint64_t step = 1, lead = 0;
        mc_gguf_get_u64(g, K("interleave_moe_layer_step"), &step);
        mc_gguf_get_u64(g, K("leading_dense_block_count"), &lead);
        cJSON_AddNumberToObject(c, "decoder_sparse_step", (double)step);
        cJSON *only = cJSON_AddArrayToObject(c, "mlp_only_layers");
        for (uint64_t l = 0; l < lead; l++) cJSON_AddItemToArray(only, cJSON_CreateNumber((double)l));
        cJSON_AddFalseToObject(c, "use_sliding_window");
    } else {
        cJSON_AddNullToObject(c, "clip_qkv");
        cJSON_AddFalseToObject(c, "norm_topk_prob");
    }
#undef K
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);

    // tokenizer.json: the byte-level pieces by id, the merges, and the
    // control tokens as special added tokens.
    cJSON *tj = cJSON_CreateObject(), *added = cJSON_AddArrayToObject(tj, "added_tokens");
    cJSON *model = cJSON_AddObjectToObject(tj, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab"), *ml = cJSON_AddArrayToObject(model, "merges");
    cJSON *pre = cJSON_AddObjectToObject(tj, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    for (uint64_t i = 0; i < toks->arr.count; i++) {
        char piece[256];
        snprintf(piece, sizeof piece, "%.*s", (int)toks->arr.strings[i].len, toks->arr.strings[i].ptr);
        int64_t type = 1;
        assert_true(mc_gguf_arr_i64(types, i, &type));
        if (type == 3) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "id", (double)i);
            cJSON_AddStringToObject(t, "content", piece);
            cJSON_AddTrueToObject(t, "special");
            cJSON_AddItemToArray(added, t);
        } else {
            cJSON_AddNumberToObject(vocab, piece, (double)i);
        }
    }
    for (uint64_t i = 0; i < merges->arr.count; i++) {
        char m[512];
        snprintf(m, sizeof m, "%.*s", (int)merges->arr.strings[i].len, merges->arr.strings[i].ptr);
        cJSON_AddItemToArray(ml, cJSON_CreateString(m));
    }
    s_write_json(dir, "tokenizer.json", tj);
    cJSON_Delete(tj);
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "bos_token", "<|endoftext|>");
    cJSON_AddStringToObject(tc, "eos_token", "<|im_end|>");
    cJSON_AddFalseToObject(tc, "add_bos_token");
    s_write_json(dir, "tokenizer_config.json", tc);
    cJSON_Delete(tc);
    mc_gguf_destroy(&g);
}

// The Qwen3-MoE and OLMoE fixtures (the files llama.cpp's logits belong
// to), written as Hugging Face folders and converted back: every tensor the
// same bytes, the same encodings, bit-identical logits.
static void s_family_roundtrip_at(const char *src, s_bpe_arch_t arch) {
    char dir[512], out[S_PATH];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_bpe_family(src, dir, arch);
    s_path(out, dir, "out.gguf");
    s_convert_ok(dir, out, false, MC_DTYPE_F32);
    mc_gguf_t *a = s_open(src), *b = s_open(out);
    s_same_tensors(a, b);
    s_same_encodings(a, b);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    s_same_logits(src, out);
    s_done(dir);
}

static void s_family_roundtrip(const char *name, s_bpe_arch_t arch) {
    char src[512];
    snprintf(src, sizeof src, "%s/arch/%s.gguf", MC_REPO_FIXTURES, name);
    s_family_roundtrip_at(src, arch);
}

static void test_family_fixtures(void **state) {
    (void)state;
    s_family_roundtrip("qwen3moe-f32", S_QWEN);
    s_family_roundtrip("olmoe-f32", S_OLMOE);
    s_family_roundtrip("qwen2moe-f32", S_QWEN2);
}

// A Qwen2-MoE folder that lacks part of its shared expert, or asks for what
// is not converted, is refused by name.
static void test_qwen2moe_errors(void **state) {
    (void)state;
    char dir[512], src[512], path[S_PATH];
    snprintf(src, sizeof src, "%s/arch/qwen2moe-f32.gguf", MC_REPO_FIXTURES);
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_bpe_family(src, dir, S_QWEN2);
    cJSON *c = s_read_json(dir, "config.json");
    cJSON_ReplaceItemInObject(c, "use_sliding_window", cJSON_CreateTrue());
    s_write_json(dir, "config.json", c);
    s_convert_fail(dir, "use_sliding_window is not supported");
    cJSON_ReplaceItemInObject(c, "use_sliding_window", cJSON_CreateFalse());
    cJSON_DeleteItemFromObject(c, "shared_expert_intermediate_size");
    s_write_json(dir, "config.json", c);
    s_convert_fail(dir, "'shared_expert_intermediate_size' is missing");
    cJSON_Delete(c);
    s_done(dir);

    // The tensors without layer 1's shared-expert gate.
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(src, err);
    assert_non_null(g);
    s_hf_t hf = {0};
    s_hf_from_gguf(g, false, 0, 0, 0, MC_DTYPE_F32, &hf);
    mc_gguf_destroy(&g);
    s_export_bpe_family(src, dir, S_QWEN2); // config and vocabulary
    for (size_t i = 0; i < hf.n; i++)
        if (!strcmp(hf.t[i].name, "model.layers.1.mlp.shared_expert_gate.weight")) snprintf(hf.t[i].name, sizeof hf.t[i].name, "unused.tensor");
    s_path(path, dir, "model.safetensors.index.json");
    remove(path);
    for (int k = 1; k <= 2; k++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, k);
        remove(path);
    }
    s_hf_write(&hf, dir, 1);
    s_hf_free(&hf);
    s_convert_fail(dir, "tensor 'model.layers.1.mlp.shared_expert_gate.weight' is missing");
    s_done(dir);
}

static void test_bpe_errors(void **state) {
    (void)state;
    char dir[512];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_bpe_shape_t s = {.dim = 64, .n_layer = 1, .n_head = 4, .n_kv = 2, .head_dim = 16, .ffn = 64, .ffn_exp = 32,
                       .n_expert = 2, .n_used = 1, .n_vocab = 264, .tied = true, .pair_merges = false};
    s_hf_t hf = {0};
    s_build_bpe_model(dir, S_QWEN, &s, &hf);
    s_hf_free(&hf);
    cJSON *good = s_read_json(dir, "tokenizer.json");
    struct {
        const char *path, *json, *needle;
    } cases[] = {
        {"model.type", "\"WordPiece\"", "not BPE"},
        {"pre_tokenizer", "{\"type\":\"Metaspace\"}", "only byte-level BPE"},
        {"model.vocab", "[]", "malformed"},
        {"model.merges", "[]", "no merges"},
        {"model.merges", "[\"nospace\"]", "merge 0 is not \"left right\""},
        {"model.merges", "[[\"a\"]]", "merge 0 is neither"},
        {"model.merges", "[[\"a\",\"b\",\"c\"]]", "merge 0 is neither"},
        {"model.vocab", "{\"a\":0,\"b\":0}", "id 0 is given to 'a' and 'b'"},
        {"model.vocab", "{\"a\":264}", "token 'a' has no id in 0..263"},
        {"model.vocab", "{\"a\":-1}", "token 'a' has no id"},
        {"model.vocab", "{\"a\":1.5}", "token 'a' has no id"},
        {"added_tokens", "[{\"id\":999,\"content\":\"<x>\"}]", "added token '<x>' has no id"},
        {"added_tokens", "[{\"id\":3}]", "added token has no content"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *t = cJSON_Duplicate(good, 1), *parent = t;
        char key[64];
        snprintf(key, sizeof key, "%s", cases[i].path);
        char *dot = strchr(key, '.');
        if (dot) {
            *dot = 0;
            parent = cJSON_GetObjectItem(t, key);
            memmove(key, dot + 1, strlen(dot + 1) + 1);
        }
        cJSON_DeleteItemFromObject(parent, key);
        cJSON_AddItemToObject(parent, key, cJSON_Parse(cases[i].json));
        s_write_json(dir, "tokenizer.json", t);
        cJSON_Delete(t);
        s_convert_fail(dir, cases[i].needle);
    }
    s_write_json(dir, "tokenizer.json", good);
    cJSON_Delete(good);
    // Dense layers and tied embeddings that are not declared.
    cJSON *c = s_read_json(dir, "config.json");
    cJSON_ReplaceItemInObject(c, "mlp_only_layers", cJSON_Parse("[0]"));
    s_write_json(dir, "config.json", c);
    s_convert_fail(dir, "dense layers");
    cJSON_ReplaceItemInObject(c, "mlp_only_layers", cJSON_Parse("[]"));
    cJSON_ReplaceItemInObject(c, "tie_word_embeddings", cJSON_CreateFalse());
    s_write_json(dir, "config.json", c);
    s_convert_fail(dir, "'lm_head.weight' is missing and tie_word_embeddings is not set");
    cJSON_ReplaceItemInObject(c, "tie_word_embeddings", cJSON_CreateTrue());
    cJSON_DeleteItemFromObject(c, "moe_intermediate_size");
    s_write_json(dir, "config.json", c);
    s_convert_fail(dir, "'moe_intermediate_size' is missing");
    cJSON_Delete(c);
    s_done(dir);
}

// --- GLM-4.5 and DeepSeek: the fixtures through Hugging Face and back ------------------------

typedef enum { S_GLM, S_DS } s_v3_arch_t;

static bool s_has_key(const mc_gguf_t *g, const char *key) { return mc_gguf_find(g, key) != NULL; }

// The layer of a "blk.N." tensor name, or -1.
static int s_layer_of(const char *name) {
    unsigned l;
    int end = 0;
    return sscanf(name, "blk.%u.%n", &l, &end) == 1 && end > 0 ? (int)l : -1;
}

// A GLM-4.5 or DeepSeek GGUF's tensors under their Hugging Face names:
// experts one tensor each, attn_k_b and attn_v_b joined back into
// kv_b_proj (per head the key rows, transposed back, then the value rows),
// and the next-token-prediction layers as model.layers.N with their own
// eh_proj, enorm, hnorm and a shared_head.norm the GGUF has no place for.
static void s_hf_from_gguf_v3(const mc_gguf_t *g, uint32_t n_main, mc_dtype_t dtype, s_hf_t *hf) {
    static const struct {
        const char *gguf, *hf;
    } map[] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"attn_q_norm.weight", "self_attn.q_norm.weight"},
        {"attn_k_norm.weight", "self_attn.k_norm.weight"},
        {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
        {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
        {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
        {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
        {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"post_attention_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
        {"ffn_gate_inp.weight", "mlp.gate.weight"},
        {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
        {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
        {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
        {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
        {"nextn.eh_proj.weight", "eh_proj.weight"},
        {"nextn.enorm.weight", "enorm.weight"},
        {"nextn.hnorm.weight", "hnorm.weight"},
    };
    char hfname[160], other[96];
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        assert_int_equal(t->type, MC_DTYPE_F32);
        const uint64_t ne0 = t->ne[0], ne1 = t->n_dims > 1 ? t->ne[1] : 1, cols = t->n_dims > 1 ? ne0 : 0;
        const float *src = (const float *)(const void *)t->data;
        if (!strcmp(t->name, "token_embd.weight")) s_hf_add(hf, "model.embed_tokens.weight", ne1, ne0, dtype, src);
        else if (!strcmp(t->name, "output_norm.weight")) s_hf_add(hf, "model.norm.weight", ne0, 0, dtype, src);
        else if (!strcmp(t->name, "output.weight")) s_hf_add(hf, "lm_head.weight", ne1, ne0, dtype, src);
        if (s_layer_of(t->name) < 0) continue;
        const unsigned l = (unsigned)s_layer_of(t->name);
        const char *rest = strchr(t->name + 4, '.') + 1;
        if (!strcmp(rest, "ffn_gate_exps.weight") || !strcmp(rest, "ffn_up_exps.weight") ||
            !strcmp(rest, "ffn_down_exps.weight")) {
            static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
            const int k = rest[4] == 'g' ? 0 : rest[4] == 'u' ? 1 : 2;
            for (uint64_t e = 0; e < t->ne[2]; e++) {
                snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.%llu.%s.weight", l, (unsigned long long)e,
                         proj[k]);
                s_hf_add(hf, hfname, ne1, ne0, dtype, src + e * ne0 * ne1);
            }
            continue;
        }
        if (!strcmp(rest, "attn_v_b.weight")) continue; // joined with attn_k_b
        if (!strcmp(rest, "attn_k_b.weight")) {
            snprintf(other, sizeof other, "blk.%u.attn_v_b.weight", l);
            const mc_gguf_tensor_t *vb = mc_gguf_tensor_find(g, other);
            assert_non_null(vb);
            const uint64_t nope = t->ne[0], r = t->ne[1], H = t->ne[2], v = vb->ne[1], per = nope + v;
            assert_int_equal(vb->ne[0], r);
            const float *kd = src, *vd = (const float *)(const void *)vb->data;
            float *kv = malloc(H * per * r * sizeof *kv);
            assert_non_null(kv);
            for (uint64_t h = 0; h < H; h++) {
                for (uint64_t i = 0; i < nope; i++)
                    for (uint64_t j = 0; j < r; j++) kv[(h * per + i) * r + j] = kd[(h * r + j) * nope + i];
                memcpy(kv + (h * per + nope) * r, vd + h * v * r, v * r * sizeof *kv);
            }
            snprintf(hfname, sizeof hfname, "model.layers.%u.self_attn.kv_b_proj.weight", l);
            s_hf_add(hf, hfname, H * per, r, dtype, kv);
            free(kv);
            continue;
        }
        size_t k = 0;
        while (k < sizeof map / sizeof map[0] && strcmp(map[k].gguf, rest) != 0) k++;
        if (k == sizeof map / sizeof map[0]) fail_msg("test: unexpected tensor %s", t->name);
        snprintf(hfname, sizeof hfname, "model.layers.%u.%s", l, map[k].hf);
        s_hf_add(hf, hfname, cols ? ne1 : ne0, cols, dtype, src);
        if (l >= n_main && !strcmp(rest, "attn_norm.weight")) { // the MTP head's norm HF files carry too
            snprintf(hfname, sizeof hfname, "model.layers.%u.shared_head.norm.weight", l);
            s_hf_add(hf, hfname, ne0, 0, dtype, src);
        }
    }
}

// A double m with (float)(0.1 * m) == f: DeepSeek's yarn_log_multiplier is
// 0.1 x mscale_all_dim, computed in double and rounded, as llama.cpp does.
static double s_mscale_for(float f) {
    double m = (double)f / 0.1;
    for (int i = 0; i < 64 && (float)(0.1 * m) != f; i++) m = nextafter(m, (float)(0.1 * m) < f ? INFINITY : -INFINITY);
    if ((float)(0.1 * m) != f) fail_msg("test: no mscale_all_dim for %a", (double)f);
    return m;
}

// The byte-level vocabulary of g as tokenizer.json (control tokens as
// special added tokens) with a Split step of regex (NULL: none) before the
// ByteLevel one, and a tokenizer_config.json.
static void s_write_tokenizer_of(const mc_gguf_t *g, const char *dir, const char *regex) {
    const mc_gguf_value_t *toks = mc_gguf_find(g, "tokenizer.ggml.tokens");
    const mc_gguf_value_t *types = mc_gguf_find(g, "tokenizer.ggml.token_type");
    const mc_gguf_value_t *merges = mc_gguf_find(g, "tokenizer.ggml.merges");
    assert_non_null(toks), assert_non_null(types), assert_non_null(merges);
    cJSON *tj = cJSON_CreateObject(), *added = cJSON_AddArrayToObject(tj, "added_tokens");
    cJSON *model = cJSON_AddObjectToObject(tj, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab"), *ml = cJSON_AddArrayToObject(model, "merges");
    cJSON *pre = cJSON_AddObjectToObject(tj, "pre_tokenizer");
    if (regex) {
        cJSON_AddStringToObject(pre, "type", "Sequence");
        cJSON *pts = cJSON_AddArrayToObject(pre, "pretokenizers"), *split = cJSON_CreateObject(), *bl = cJSON_CreateObject();
        cJSON_AddStringToObject(split, "type", "Split");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", regex);
        cJSON_AddStringToObject(bl, "type", "ByteLevel");
        cJSON_AddItemToArray(pts, split);
        cJSON_AddItemToArray(pts, bl);
    } else {
        cJSON_AddStringToObject(pre, "type", "ByteLevel");
    }
    for (uint64_t i = 0; i < toks->arr.count; i++) {
        char piece[256];
        snprintf(piece, sizeof piece, "%.*s", (int)toks->arr.strings[i].len, toks->arr.strings[i].ptr);
        int64_t type = 1;
        assert_true(mc_gguf_arr_i64(types, i, &type));
        if (type == 3) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "id", (double)i);
            cJSON_AddStringToObject(t, "content", piece);
            cJSON_AddTrueToObject(t, "special");
            cJSON_AddItemToArray(added, t);
        } else {
            cJSON_AddNumberToObject(vocab, piece, (double)i);
        }
    }
    for (uint64_t i = 0; i < merges->arr.count; i++) {
        char m[512];
        snprintf(m, sizeof m, "%.*s", (int)merges->arr.strings[i].len, merges->arr.strings[i].ptr);
        cJSON_AddItemToArray(ml, cJSON_CreateString(m));
    }
    s_write_json(dir, "tokenizer.json", tj);
    cJSON_Delete(tj);
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "bos_token", "<|endoftext|>");
    cJSON_AddStringToObject(tc, "eos_token", "<|im_end|>");
    cJSON_AddFalseToObject(tc, "add_bos_token");
    s_write_json(dir, "tokenizer_config.json", tc);
    cJSON_Delete(tc);
}

// Qwen2's pre-tokenizer regex as its tokenizer.json has it (moe-mkmodel's
// GLM-4.5 files use Qwen2's pre type).
static const char s_qwen2_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
                                    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Write the GLM-4.5 or DeepSeek GGUF at gguf_path as the Hugging Face
// folder its model would come in, with config.json keys as GLM-4.5-Air's,
// DeepSeek-V2-Lite's and V3's configs name them.
static void s_export_v3_family(const char *gguf_path, const char *dir, s_v3_arch_t arch, mc_dtype_t dtype) {
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(gguf_path, err);
    if (!g) fail_msg("%s", err);
    const char *a = arch == S_GLM ? "glm4moe" : "deepseek2";
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    uint64_t nextn = 0;
    mc_gguf_get_u64(g, K("nextn_predict_layers"), &nextn);
    const uint64_t n_main = s_u64(g, K("block_count")) - nextn;
    s_hf_t hf = {0};
    s_hf_from_gguf_v3(g, (uint32_t)n_main, dtype, &hf);
    s_hf_write(&hf, dir, 2);
    s_hf_free(&hf);

    cJSON *c = cJSON_CreateObject();
    uint64_t gating = 1;
    mc_gguf_get_u64(g, K("expert_gating_func"), &gating);
    const char *hf_arch = arch == S_GLM ? "Glm4MoeForCausalLM" : gating == 2 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM";
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray(&hf_arch, 1));
    cJSON_AddNumberToObject(c, "vocab_size", (double)mc_gguf_tensor_find(g, "token_embd.weight")->ne[1]);
    cJSON_AddNumberToObject(c, "hidden_size", (double)s_u64(g, K("embedding_length")));
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s_u64(g, K("feed_forward_length")));
    cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)s_u64(g, K("expert_feed_forward_length")));
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)n_main);
    if (nextn) cJSON_AddNumberToObject(c, "num_nextn_predict_layers", (double)nextn);
    const uint64_t n_head = s_u64(g, K("attention.head_count"));
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)n_head);
    cJSON_AddNumberToObject(c, "num_key_value_heads", arch == S_GLM ? (double)s_u64(g, K("attention.head_count_kv")) : (double)n_head);
    cJSON_AddNumberToObject(c, "n_routed_experts", (double)s_u64(g, K("expert_count")));
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)s_u64(g, K("expert_used_count")));
    cJSON_AddNumberToObject(c, "n_shared_experts", (double)s_u64(g, K("expert_shared_count")));
    uint64_t u;
    cJSON_AddNumberToObject(c, "first_k_dense_replace", mc_gguf_get_u64(g, K("leading_dense_block_count"), &u) ? (double)u : 0);
    if (mc_gguf_get_u64(g, K("expert_group_count"), &u)) cJSON_AddNumberToObject(c, "n_group", (double)u);
    if (mc_gguf_get_u64(g, K("expert_group_used_count"), &u)) cJSON_AddNumberToObject(c, "topk_group", (double)u);
    double f;
    if (mc_gguf_get_f64(g, K("expert_weights_scale"), &f)) cJSON_AddNumberToObject(c, "routed_scaling_factor", f);
    bool norm = false;
    mc_gguf_get_bool(g, K("expert_weights_norm"), &norm);
    cJSON_AddBoolToObject(c, "norm_topk_prob", norm);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s_u64(g, K("context_length")));
    cJSON_AddNumberToObject(c, "rope_theta", s_f64(g, K("rope.freq_base")));
    cJSON_AddNumberToObject(c, "rms_norm_eps", s_f64(g, K("attention.layer_norm_rms_epsilon")));
    cJSON_AddBoolToObject(c, "tie_word_embeddings", mc_gguf_tensor_find(g, "output.weight") == NULL);
    const uint64_t rope = s_u64(g, K("rope.dimension_count"));
    if (arch == S_GLM) {
        const uint64_t hd = s_u64(g, K("attention.key_length"));
        cJSON_AddNumberToObject(c, "head_dim", (double)hd);
        cJSON_AddNumberToObject(c, "partial_rotary_factor", (double)rope / (double)hd);
        cJSON_AddBoolToObject(c, "attention_bias", mc_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL);
        cJSON_AddBoolToObject(c, "use_qk_norm", mc_gguf_tensor_find(g, "blk.0.attn_q_norm.weight") != NULL);
        cJSON_AddNullToObject(c, "rope_scaling");
    } else {
        cJSON_AddStringToObject(c, "scoring_func", gating == 2 ? "sigmoid" : "softmax");
        cJSON_AddFalseToObject(c, "attention_bias");
        cJSON_AddNumberToObject(c, "moe_layer_freq", 1);
        if (mc_gguf_get_u64(g, K("attention.q_lora_rank"), &u) && u) cJSON_AddNumberToObject(c, "q_lora_rank", (double)u);
        else cJSON_AddNullToObject(c, "q_lora_rank");
        cJSON_AddNumberToObject(c, "kv_lora_rank", (double)s_u64(g, K("attention.kv_lora_rank")));
        cJSON_AddNumberToObject(c, "qk_nope_head_dim", (double)(s_u64(g, K("attention.key_length_mla")) - rope));
        cJSON_AddNumberToObject(c, "qk_rope_head_dim", (double)rope);
        cJSON_AddNumberToObject(c, "v_head_dim", (double)s_u64(g, K("attention.value_length_mla")));
        mc_gguf_str_t type;
        if (mc_gguf_get_str(g, K("rope.scaling.type"), &type)) {
            assert_true(type.len == 4 && !memcmp(type.ptr, "yarn", 4));
            cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
            cJSON_AddStringToObject(rs, "type", "yarn");
            cJSON_AddNumberToObject(rs, "factor", s_f64(g, K("rope.scaling.factor")));
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    (double)s_u64(g, K("rope.scaling.original_context_length")));
            cJSON_AddNumberToObject(rs, "beta_fast", 32);
            cJSON_AddNumberToObject(rs, "beta_slow", 1);
            if (mc_gguf_get_f64(g, K("rope.scaling.yarn_log_multiplier"), &f)) {
                cJSON_AddNumberToObject(rs, "mscale", s_mscale_for((float)f));
                cJSON_AddNumberToObject(rs, "mscale_all_dim", s_mscale_for((float)f));
            }
        } else {
            cJSON_AddNullToObject(c, "rope_scaling");
        }
    }
#undef K
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_write_tokenizer_of(g, dir, arch == S_GLM ? s_qwen2_regex : NULL);
    mc_gguf_destroy(&g);
}

// Every tensor of want outside its next-token-prediction layers (n_main
// on) is in got with the same type, shape and bytes, and got has no other.
static void s_same_tensors_main(const mc_gguf_t *want, const mc_gguf_t *got, int n_main) {
    size_t n = 0;
    for (size_t i = 0; i < mc_gguf_tensor_count(want); i++) {
        const mc_gguf_tensor_t *a = mc_gguf_tensor_at(want, i), *b = mc_gguf_tensor_find(got, a->name);
        if (s_layer_of(a->name) >= n_main) {
            if (b) fail_msg("next-token-prediction tensor %s was converted", a->name);
            continue;
        }
        n++;
        if (!b) fail_msg("converted file lacks tensor %s", a->name);
        if (a->type != b->type || a->n_dims != b->n_dims || memcmp(a->ne, b->ne, sizeof a->ne) || a->size != b->size)
            fail_msg("%s: type or shape differs", a->name);
        if (memcmp(a->data, b->data, a->size)) fail_msg("%s: bytes differ", a->name);
    }
    assert_int_equal(mc_gguf_tensor_count(got), n);
}

static void s_v3_roundtrip(const char *name, s_v3_arch_t arch) {
    char dir[512], out[S_PATH], src[512];
    snprintf(src, sizeof src, "%s/arch/%s.gguf", MC_REPO_FIXTURES, name);
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_v3_family(src, dir, arch, MC_DTYPE_F32);
    s_path(out, dir, "out.gguf");
    s_convert_ok(dir, out, false, MC_DTYPE_F32);
    mc_gguf_t *a = s_open(src), *b = s_open(out);
    const char *A = arch == S_GLM ? "glm4moe" : "deepseek2";
    char k_blocks[64], k_nextn[64], k_vocab[64], k_bf[64], k_bs[64];
    snprintf(k_blocks, sizeof k_blocks, "%s.block_count", A);
    snprintf(k_nextn, sizeof k_nextn, "%s.nextn_predict_layers", A);
    snprintf(k_vocab, sizeof k_vocab, "%s.vocab_size", A);
    snprintf(k_bf, sizeof k_bf, "%s.rope.scaling.yarn_beta_fast", A);
    snprintf(k_bs, sizeof k_bs, "%s.rope.scaling.yarn_beta_slow", A);
    uint64_t blocks = s_u64(a, k_blocks), nextn = 0;
    mc_gguf_get_u64(a, k_nextn, &nextn);
    // The next-token-prediction layers are left out: fewer blocks, no nextn key.
    s_expect_u(b, k_blocks, blocks - nextn);
    assert_false(s_has_key(b, k_nextn));
    s_same_tensors_main(a, b, (int)(blocks - nextn));
    // Every key of the fixture but those, the name and (GLM: llama.cpp's
    // converter writes none) vocab_size; and none the fixture lacks but
    // YaRN's betas, which config.json gives and llama.cpp's converter copies.
    // moe-mkmodel writes q_lora_rank 0 for a query without compression,
    // where config.json has null and llama.cpp's converter nothing.
    char k_qlora[64];
    snprintf(k_qlora, sizeof k_qlora, "%s.attention.q_lora_rank", A);
    uint64_t qlora = 0;
    mc_gguf_get_u64(a, k_qlora, &qlora);
    const char *const skip[] = {"general.name", k_blocks, k_nextn, arch == S_GLM ? k_vocab : "general.name",
                                qlora ? "general.name" : k_qlora};
    s_same_keys(a, b, skip, 5);
    // A V2 fixture says nothing of its scores (softmax by default); its
    // config.json says softmax, which llama.cpp's converter writes as 1.
    char k_gating[64];
    snprintf(k_gating, sizeof k_gating, "%s.expert_gating_func", A);
    if (!s_has_key(a, k_gating)) s_expect_u(b, k_gating, 1);
    // add_eos_token: written for every byte-level vocabulary (false, llama.cpp's default).
    const char *const skip2[] = {"general.name", k_blocks, k_bf, k_bs, "tokenizer.ggml.add_eos_token", k_gating};
    s_same_keys(b, a, skip2, s_has_key(a, k_gating) ? 5 : 6);
    s_same_encodings(a, b);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    s_same_logits(src, out);
    s_done(dir);
}

// The GLM-4.5 and DeepSeek fixtures (the files llama.cpp's logits belong
// to; V2-Lite's layout with YaRN, V2's compressed query, V3/R1's shape),
// written as Hugging Face folders with their next-token-prediction layers
// and converted back: every other tensor the same bytes (attn_k_b and
// attn_v_b split from kv_b_proj), the same keys, bit-identical logits.
static void test_v3_fixtures(void **state) {
    (void)state;
    s_v3_roundtrip("glm4moe-f32", S_GLM);
    s_v3_roundtrip("deepseek2-f32", S_DS);
    s_v3_roundtrip("deepseek2-qlora-f32", S_DS);
    s_v3_roundtrip("deepseek2v3-f32", S_DS);
}

// BF16 folders: auto keeps every matrix (kv_b_proj's parts too) as the
// bf16 of the fixture's value, vectors become F32, and the file runs.
static void test_v3_bf16(void **state) {
    (void)state;
    static const struct {
        const char *name;
        s_v3_arch_t arch;
    } cases[] = {{"glm4moe-f32", S_GLM}, {"deepseek2v3-f32", S_DS}};
    for (size_t c = 0; c < 2; c++) {
        char dir[512], out[S_PATH], src[512];
        snprintf(src, sizeof src, "%s/arch/%s.gguf", MC_REPO_FIXTURES, cases[c].name);
        assert_non_null(mc_test_tmpdir(dir, sizeof dir));
        s_export_v3_family(src, dir, cases[c].arch, MC_DTYPE_BF16);
        s_path(out, dir, "out.gguf");
        s_convert_ok(dir, out, true, MC_DTYPE_F32);
        mc_gguf_t *a = s_open(src), *b = s_open(out);
        size_t checked = 0;
        for (size_t i = 0; i < mc_gguf_tensor_count(b); i++) {
            const mc_gguf_tensor_t *tb = mc_gguf_tensor_at(b, i), *ta = mc_gguf_tensor_find(a, tb->name);
            assert_non_null(ta);
            const bool matrix = ta->n_dims > 1 && !strstr(ta->name, "ffn_gate_inp");
            assert_int_equal(tb->type, matrix ? MC_DTYPE_BF16 : MC_DTYPE_F32);
            for (uint64_t k = 0; k < ta->n_elems; k++) {
                float v;
                memcpy(&v, ta->data + 4 * k, 4);
                const uint16_t h = mc_fp32_to_bf16(v);
                if (matrix) {
                    uint16_t hb;
                    memcpy(&hb, tb->data + 2 * k, 2);
                    if (hb != h) fail_msg("%s[%llu]", tb->name, (unsigned long long)k);
                } else {
                    float w;
                    memcpy(&w, tb->data + 4 * k, 4);
                    if (mc_f32_bits(w) != mc_f32_bits(mc_bf16_to_fp32(h))) fail_msg("%s[%llu]", tb->name, (unsigned long long)k);
                }
            }
            checked++;
        }
        assert_true(checked > 20);
        mc_gguf_destroy(&a);
        mc_gguf_destroy(&b);
        uint32_t nv;
        const int32_t ids[3] = {1, 40, 300};
        float *l = s_logits(out, ids, 3, &nv);
        for (size_t i = 0; i < 3 * (size_t)nv; i++) assert_true(isfinite(l[i]));
        free(l);
        s_done(dir);
    }
}

// config.json with key set to the JSON text json (NULL: removed).
static void s_cfg_set(const char *dir, const cJSON *good, const char *key, const char *json) {
    cJSON *c = cJSON_Duplicate(good, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(c, key);
    if (json) {
        cJSON *v = cJSON_Parse(json);
        assert_non_null(v);
        cJSON_AddItemToObject(c, key, v);
    }
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
}

// The folder's tensors (re-read from its two shards) written again as one
// file, without the tensor named drop (NULL: none) and with extra_name, a
// copy of the tensor extra_from, when given.
static void s_rewrite_tensors(const char *dir, const char *drop, const char *extra_name, const char *extra_from) {
    char err[MC_ERR_LEN] = "", path[S_PATH];
    mc_safetensors_dir_t *d = mc_safetensors_dir_open(dir, err);
    if (!d) fail_msg("%s", err);
    const size_t n = mc_safetensors_dir_count(d);
    mc_safetensors_desc_t *desc = calloc(n + 1, sizeof *desc);
    assert_non_null(desc);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(d, i);
        if (drop && !strcmp(t->name, drop)) continue;
        desc[k++] = (mc_safetensors_desc_t){t->name, t->dtype, t->n_dims, t->shape, t->data};
        if (extra_name && !strcmp(t->name, extra_from))
            desc[k++] = (mc_safetensors_desc_t){extra_name, t->dtype, t->n_dims, t->shape, t->data};
    }
    assert_int_equal(k, n - (drop ? 1 : 0) + (extra_name ? 1 : 0));
    s_path(path, dir, "tmp.safetensors");
    assert_int_equal(mc_safetensors_write(path, desc, k, NULL, 0, err), MC_OK);
    free(desc);
    mc_safetensors_dir_destroy(&d);
    s_path(path, dir, "model.safetensors.index.json");
    remove(path);
    for (int s = 1; s <= 2; s++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, s);
        remove(path);
    }
    char to[S_PATH];
    s_path(path, dir, "tmp.safetensors");
    s_path(to, dir, "model.safetensors");
    assert_int_equal(rename(path, to), 0);
}

// Misconfigured and incomplete GLM-4.5 and DeepSeek folders are refused by name.
static void test_v3_errors(void **state) {
    (void)state;
    char dir[512], src[512];
    snprintf(src, sizeof src, "%s/arch/deepseek2v3-f32.gguf", MC_REPO_FIXTURES);
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_v3_family(src, dir, S_DS, MC_DTYPE_F32);
    cJSON *good = s_read_json(dir, "config.json");
    static const struct {
        const char *key, *json, *needle;
    } cases[] = {
        {"n_group", "3", "n_group 3 does not divide the 16 experts into equal groups"},
        {"n_group", "16", "n_group 16 leaves fewer than 2 of the 16 experts per group"},
        {"topk_group", "4", "topk_group 4 must be in 1..3 (below n_group 4)"},
        {"topk_group", NULL, "topk_group 0 must be in 1..3"},
        {"num_experts_per_tok", "9", "topk_group 2 groups of 4 experts cannot hold the 9 experts each token uses"},
        {"n_shared_experts", NULL, "'n_shared_experts' is missing"},
        {"n_shared_experts", "0", "'n_shared_experts' must be a whole number in 1..64"},
        {"n_shared_experts", "2", "has shape [16, 64] but config.json implies [32, 64] (n_shared_experts x moe_intermediate_size"},
        {"scoring_func", "\"softplus\"", "scoring_func 'softplus' is not supported"},
        {"first_k_dense_replace", "3", "'first_k_dense_replace' must be a whole number in 0..2"},
        {"first_k_dense_replace", "0", "tensor 'model.layers.0.mlp.gate.weight' is missing"},
        {"kv_lora_rank", "16", "self_attn.kv_a_proj_with_mqa.weight' has shape [48, 64] but config.json implies [32, 64]"},
        {"v_head_dim", "16", "kv_b_proj.weight' has shape [256, 32] but config.json implies [192, 32]"},
        {"qk_rope_head_dim", "15", "qk_rope_head_dim 15 is odd"},
        {"q_lora_rank", "null", "tensor 'model.layers.0.self_attn.q_proj.weight' is missing"},
        {"num_nextn_predict_layers", NULL, "tensor 'model.layers.3."},
        // Read: layer 1 is dense then (1 % 2 != 0), where the folder has a MoE layer.
        {"moe_layer_freq", "2", "tensor 'model.layers.1.mlp.gate_proj.weight' is missing"},
        {"attention_bias", "true", "attention_bias is not supported"},
        {"quantization_config", "{\"quant_method\":\"fp8\"}", "quantization_config is set"},
        {"rope_scaling", "{\"type\":\"linear\",\"factor\":2}", "rope_scaling type 'linear' is not supported (only yarn)"},
        {"rope_scaling", "{\"type\":\"yarn\",\"factor\":4,\"original_max_position_embeddings\":512,\"beta_fast\":16}",
         "beta_fast 16, beta_slow 1 is not supported"},
        {"rope_scaling", "{\"type\":\"yarn\",\"original_max_position_embeddings\":512}", "rope_scaling is yarn but has no factor"},
        {"rope_scaling", "{\"type\":\"yarn\",\"factor\":0.5,\"original_max_position_embeddings\":512}",
         "'rope_scaling.factor' must be a number in 1..1e+06"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_cfg_set(dir, good, cases[i].key, cases[i].json);
        s_convert_fail(dir, cases[i].needle);
    }
    s_write_json(dir, "config.json", good);
    // A pre-tokenizer that is none of DeepSeek's.
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(src, err);
    assert_non_null(g);
    s_write_tokenizer_of(g, dir, "\\p{L}+");
    s_convert_fail(dir, "the pre-tokenizer's Split patterns are not a DeepSeek-V2/V3 one we know");
    mc_gguf_destroy(&g);
    // A layer without its shared expert; a next-token-prediction layer too many.
    s_rewrite_tensors(dir, "model.layers.2.mlp.shared_experts.up_proj.weight", NULL, NULL);
    s_convert_fail(dir, "tensor 'model.layers.2.mlp.shared_experts.up_proj.weight' is missing");
    cJSON_Delete(good);
    s_done(dir);

    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_v3_family(src, dir, S_DS, MC_DTYPE_F32);
    s_rewrite_tensors(dir, NULL, "model.layers.4.enorm.weight", "model.layers.3.enorm.weight");
    s_convert_fail(dir, "tensor 'model.layers.4.enorm.weight' is not part of a DeepseekV3ForCausalLM model");
    s_done(dir);

    // GLM-4.5: the selection bias is required, the RoPE share must give even dims.
    snprintf(src, sizeof src, "%s/arch/glm4moe-f32.gguf", MC_REPO_FIXTURES);
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_v3_family(src, dir, S_GLM, MC_DTYPE_F32);
    good = s_read_json(dir, "config.json");
    s_cfg_set(dir, good, "partial_rotary_factor", "0.3");
    s_convert_fail(dir, "head_dim 32 x partial_rotary_factor 0.3 gives 9 RoPE dims");
    s_cfg_set(dir, good, "attention_bias", "false");
    s_convert_fail(dir, "_proj.bias' is not part of a Glm4MoeForCausalLM model");
    s_cfg_set(dir, good, "use_qk_norm", "true");
    s_convert_fail(dir, "tensor 'model.layers.0.self_attn.q_norm.weight' is missing");
    s_cfg_set(dir, good, "n_group", "5");
    s_convert_fail(dir, "n_group 5 does not divide the 16 experts");
    s_write_json(dir, "config.json", good);
    g = mc_gguf_open(src, err);
    assert_non_null(g);
    s_write_tokenizer_of(g, dir, NULL);
    s_convert_fail(dir, "not a GLM-4.5 one we know");
    s_write_tokenizer_of(g, dir, s_qwen2_regex);
    mc_gguf_destroy(&g);
    s_rewrite_tensors(dir, "model.layers.1.mlp.gate.e_score_correction_bias", NULL, NULL);
    s_convert_fail(dir, "tensor 'model.layers.1.mlp.gate.e_score_correction_bias' is missing");
    cJSON_Delete(good);
    s_done(dir);
}

// Interleaved dense layers from config.json (the GGUF keys are ours:
// llama.cpp's converter and loader read neither for these families).
// Qwen2-MoE: decoder_sparse_step and mlp_only_layers; files moe-mkmodel
// wrote with a step (and a leading count) through a Hugging Face folder and
// back, the same tensors and logits. DeepSeek: moe_layer_freq with
// first_k_dense_replace (layer l MoE iff l >= k and l % freq == 0) said as
// the smallest count and step that give the same layers. Layouts the keys
// cannot say, and bad values, refused by name.
static void test_interleaved_config(void **state) {
    (void)state;
    char src[600], dir[512], out[S_PATH], err[MC_ERR_LEN];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(src, sizeof src, "%s/step.gguf", dir);
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE, p.ffn = 32, p.ffn_shexp = 64, p.ffn_dense = 96, p.n_expert = 8, p.n_expert_used = 2;
    p.n_vocab = 512, p.n_layer = 4, p.moe_step = 2;
    if (mc_mkmodel_write(&p, src, err)) fail_msg("%s", err);
    s_family_roundtrip_at(src, S_QWEN2);
    p.n_layer = 5, p.n_dense_lead = 1; // layers 1 and 3
    if (mc_mkmodel_write(&p, src, err)) fail_msg("%s", err);
    s_family_roundtrip_at(src, S_QWEN2);

    char sub[600];
    snprintf(sub, sizeof sub, "%s/hf", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    s_export_bpe_family(src, sub, S_QWEN2);
    s_path(out, sub, "out.gguf");
    s_convert_ok(sub, out, false, MC_DTYPE_F32);
    mc_gguf_t *g = s_open(out);
    s_expect_u(g, "qwen2moe.interleave_moe_layer_step", 2);
    s_expect_u(g, "qwen2moe.leading_dense_block_count", 1);
    mc_gguf_destroy(&g);
    remove(out); // what the failures below must not leave
    cJSON *good = s_read_json(sub, "config.json");
    static const struct {
        const char *key, *json, *needle;
    } cases[] = {
        {"decoder_sparse_step", "0", "'decoder_sparse_step' must be a whole number in 1..5"},
        {"decoder_sparse_step", "6", "'decoder_sparse_step' must be a whole number in 1..5"},
        {"mlp_only_layers", "[5]", "'mlp_only_layers' holds a value that is not a layer in 0..4"},
        {"mlp_only_layers", "[\"0\"]", "'mlp_only_layers' holds a value that is not a layer"},
        {"mlp_only_layers", "7", "'mlp_only_layers' is not a list"},
        {"mlp_only_layers", "[1, 3]", "decoder_sparse_step and mlp_only_layers leave no MoE layer among the 5"},
        {"mlp_only_layers", "[3]", "decoder_sparse_step and mlp_only_layers make a pattern of dense layers that"},
        // Read: with every layer after the first MoE, layer 2's router is looked for.
        {"decoder_sparse_step", "1", "tensor 'model.layers.2.mlp.gate.weight' is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_cfg_set(sub, good, cases[i].key, cases[i].json);
        s_convert_fail(sub, cases[i].needle);
    }
    cJSON_Delete(good);
    mc_test_rmtree(sub);

    // DeepSeek: two leading dense layers of three, said by config.json as
    // first_k_dense_replace 1 and moe_layer_freq 2 (layer 1 dense since 1 % 2 != 0).
    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.ffn = 16, p.ffn_shexp = 16, p.ffn_dense = 64, p.n_expert = 8, p.n_expert_used = 2;
    p.n_vocab = 512, p.n_layer = 3, p.n_dense_lead = 2, p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32;
    p.kv_lora_rank = 32;
    if (mc_mkmodel_write(&p, src, err)) fail_msg("%s", err);
    assert_int_equal(mkdir(sub, 0700), 0);
    s_export_v3_family(src, sub, S_DS, MC_DTYPE_F32);
    good = s_read_json(sub, "config.json");
    cJSON *c = cJSON_Duplicate(good, 1);
    cJSON_ReplaceItemInObject(c, "first_k_dense_replace", cJSON_CreateNumber(1));
    cJSON_ReplaceItemInObject(c, "moe_layer_freq", cJSON_CreateNumber(2));
    s_write_json(sub, "config.json", c);
    s_path(out, sub, "out.gguf");
    s_convert_ok(sub, out, false, MC_DTYPE_F32);
    g = s_open(out);
    s_expect_u(g, "deepseek2.leading_dense_block_count", 2);
    assert_false(s_has_key(g, "deepseek2.interleave_moe_layer_step"));
    mc_gguf_destroy(&g);
    s_same_logits(src, out);
    remove(out);
    // Five layers, MoE 2 and 4: no count and step give those.
    cJSON_ReplaceItemInObject(c, "num_hidden_layers", cJSON_CreateNumber(5));
    s_write_json(sub, "config.json", c);
    s_convert_fail(sub, "first_k_dense_replace and moe_layer_freq make a pattern of dense layers that");
    cJSON_Delete(c);
    s_cfg_set(sub, good, "moe_layer_freq", "0");
    s_convert_fail(sub, "'moe_layer_freq' must be a whole number in 1..3");
    cJSON_Delete(good);
    s_done(dir);
}

// GLM-4.5's pre-tokenizer: Llama 3's digit runs give "glm4"; DeepSeek-V3's
// and V2's Split steps give theirs.
static void test_v3_pre(void **state) {
    (void)state;
    static const struct {
        const char *fixture, *regex, *pre;
        s_v3_arch_t arch;
    } cases[] = {
        {"glm4moe-f32", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                        "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "glm4", S_GLM},
        {"deepseek2v3-f32", "\\p{N}{1,3}", "deepseek-v3", S_DS},
        {"deepseek2-f32", "\\s+$", "deepseek-llm", S_DS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512], out[S_PATH], src[512], err[MC_ERR_LEN] = "";
        snprintf(src, sizeof src, "%s/arch/%s.gguf", MC_REPO_FIXTURES, cases[i].fixture);
        assert_non_null(mc_test_tmpdir(dir, sizeof dir));
        s_export_v3_family(src, dir, cases[i].arch, MC_DTYPE_F32);
        mc_gguf_t *g = mc_gguf_open(src, err);
        assert_non_null(g);
        s_write_tokenizer_of(g, dir, cases[i].regex);
        mc_gguf_destroy(&g);
        s_path(out, dir, "out.gguf");
        s_convert_ok(dir, out, false, MC_DTYPE_F32);
        g = s_open(out);
        s_expect_str(g, "tokenizer.ggml.pre", cases[i].pre);
        mc_gguf_destroy(&g);
        s_done(dir);
    }
}

// --- GPT-OSS: the fixtures through Hugging Face and back -----------------------------------------

// A value of a Hugging Face MXFP4 block as transformers decodes it: byte
// i holds values 2i (low nibble) and 2i+1 (high), E2M1 codes, times
// 2^(scale - 127). Written from the format's description, not from the
// converter's or the engine's tables, so a re-lay both got wrong shows.
static float s_hf_mxfp4_value(const uint8_t *blk16, uint8_t scale, int j) {
    static const float e2m1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    const int code = j % 2 ? blk16[j / 2] >> 4 : blk16[j / 2] & 0xF;
    return ldexpf(e2m1[code], (int)scale - 127);
}

// GGUF MXFP4 rows {n, rows} of expert e (of a {n, rows, E} tensor) as
// Hugging Face blocks [rows, n/32, 16] and scales [rows, n/32] at row
// stride step from row off (step 2: interleaved into a fused gate_up).
static void s_mxfp4_to_hf(const mc_gguf_tensor_t *t, uint64_t e, uint8_t *blocks, uint8_t *scales, uint64_t step,
                          uint64_t off) {
    const uint64_t n = t->ne[0], rows = t->ne[1], nb = n / MC_QK;
    const size_t rb = nb * sizeof(mc_block_mxfp4_t);
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *src = t->data + (e * rows + r) * rb;
        const uint64_t hr = r * step + off;
        float want[MC_QK * 64];
        assert_true(nb <= 64);
        assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_MXFP4, src, want, (int64_t)n), MC_OK);
        for (uint64_t b = 0; b < nb; b++) {
            mc_block_mxfp4_t blk;
            memcpy(&blk, src + b * sizeof blk, sizeof blk);
            uint8_t *q = blocks + (hr * nb + b) * 16;
            scales[hr * nb + b] = blk.e;
            for (int j = 0; j < MC_QK; j++) {
                const uint8_t v = (uint8_t)(j < 16 ? blk.qs[j] & 0xF : blk.qs[j - 16] >> 4);
                if (j % 2) q[j / 2] = (uint8_t)(q[j / 2] | v << 4);
                else q[j / 2] = v;
            }
            for (int j = 0; j < MC_QK; j++) // the export means what the fixture means
                if (s_hf_mxfp4_value(q, blk.e, j) != want[b * MC_QK + (uint64_t)j])
                    fail_msg("test: %s expert %llu row %llu value %llu: HF %g, GGUF %g", t->name, (unsigned long long)e,
                             (unsigned long long)r, (unsigned long long)(b * MC_QK + (uint64_t)j),
                             (double)s_hf_mxfp4_value(q, blk.e, j), (double)want[b * MC_QK + (uint64_t)j]);
        }
    }
}

static const mc_gguf_tensor_t *s_blk(const mc_gguf_t *g, unsigned l, const char *rest) {
    char name[96];
    snprintf(name, sizeof name, "blk.%u.%s", l, rest);
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    if (!t) fail_msg("test: fixture lacks %s", name);
    return t;
}

// A GPT-OSS GGUF's tensors under Hugging Face's names and layout: all
// experts of a layer in one tensor, gate and up fused with their rows
// (MXFP4) or columns (floats, stored as x @ W) interleaved, biases
// likewise, sinks without ".weight". Floats as dtype.
static void s_hf_from_gguf_oss(const mc_gguf_t *g, mc_dtype_t dtype, s_hf_t *hf) {
    static const struct {
        const char *gguf, *hf;
    } map[] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"attn_output.bias", "self_attn.o_proj.bias"},
        {"attn_sinks.weight", "self_attn.sinks"},
        {"post_attention_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate_inp.weight", "mlp.router.weight"},
        {"ffn_gate_inp.bias", "mlp.router.bias"},
    };
    char hfname[160];
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        const uint64_t ne0 = t->ne[0], ne1 = t->n_dims > 1 ? t->ne[1] : 1, cols = t->n_dims > 1 ? ne0 : 0;
        const float *src = (const float *)(const void *)t->data;
        if (!strcmp(t->name, "token_embd.weight")) s_hf_add(hf, "model.embed_tokens.weight", ne1, ne0, dtype, src);
        else if (!strcmp(t->name, "output_norm.weight")) s_hf_add(hf, "model.norm.weight", ne0, 0, dtype, src);
        else if (!strcmp(t->name, "output.weight")) s_hf_add(hf, "lm_head.weight", ne1, ne0, dtype, src);
        if (s_layer_of(t->name) < 0) continue;
        const unsigned l = (unsigned)s_layer_of(t->name);
        const char *rest = strchr(t->name + 4, '.') + 1;
        if (strstr(rest, "_exps.")) continue; // below, per layer
        size_t k = 0;
        while (k < sizeof map / sizeof map[0] && strcmp(map[k].gguf, rest) != 0) k++;
        if (k == sizeof map / sizeof map[0]) fail_msg("test: unexpected tensor %s", t->name);
        assert_int_equal(t->type, MC_DTYPE_F32);
        snprintf(hfname, sizeof hfname, "model.layers.%u.%s", l, map[k].hf);
        s_hf_add(hf, hfname, cols ? ne1 : ne0, cols, dtype, src);
        if (strcmp(rest, "attn_norm.weight") != 0) continue;
        // The experts and their biases of layer l.
        const mc_gguf_tensor_t *gate = s_blk(g, l, "ffn_gate_exps.weight"), *up = s_blk(g, l, "ffn_up_exps.weight");
        const mc_gguf_tensor_t *down = s_blk(g, l, "ffn_down_exps.weight");
        const uint64_t D = gate->ne[0], F = gate->ne[1], E = gate->ne[2];
        if (gate->type == MC_DTYPE_MXFP4) {
            assert_int_equal(down->type, MC_DTYPE_MXFP4);
            uint8_t *gb = calloc(E * 2 * F * D / 2, 1), *gs = calloc(E * 2 * F * D / MC_QK, 1);
            uint8_t *db = calloc(E * D * F / 2, 1), *ds = calloc(E * D * F / MC_QK, 1);
            assert_true(gb && gs && db && ds);
            for (uint64_t e = 0; e < E; e++) {
                const uint64_t go = e * 2 * F * D / MC_QK, dofs = e * D * F / MC_QK;
                s_mxfp4_to_hf(gate, e, gb + go * 16, gs + go, 2, 0);
                s_mxfp4_to_hf(up, e, gb + go * 16, gs + go, 2, 1);
                s_mxfp4_to_hf(down, e, db + dofs * 16, ds + dofs, 1, 0);
            }
            const uint64_t sgb[4] = {E, 2 * F, D / MC_QK, 16}, sdb[4] = {E, D, F / MC_QK, 16};
#define S_OSS_RAW(suffix, nd, shape, data)                                                        \
    snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.%s", l, suffix);                \
    s_hf_add_raw(hf, hfname, nd, shape, MC_SAFETENSORS_U8, data)
            S_OSS_RAW("gate_up_proj_blocks", 4, sgb, gb);
            S_OSS_RAW("gate_up_proj_scales", 3, sgb, gs);
            S_OSS_RAW("down_proj_blocks", 4, sdb, db);
            S_OSS_RAW("down_proj_scales", 3, sdb, ds);
#undef S_OSS_RAW
            free(gb), free(gs), free(db), free(ds);
        } else {
            assert_int_equal(gate->type, MC_DTYPE_F32);
            const float *gd = (const float *)(const void *)gate->data, *ud = (const float *)(const void *)up->data;
            const float *dd = (const float *)(const void *)down->data;
            float *gu = malloc(E * D * 2 * F * sizeof *gu), *dn = malloc(E * F * D * sizeof *dn);
            assert_true(gu && dn);
            for (uint64_t e = 0; e < E; e++)
                for (uint64_t d = 0; d < D; d++)
                    for (uint64_t f = 0; f < F; f++) {
                        gu[(e * D + d) * 2 * F + 2 * f] = gd[(e * F + f) * D + d];
                        gu[(e * D + d) * 2 * F + 2 * f + 1] = ud[(e * F + f) * D + d];
                        dn[(e * F + f) * D + d] = dd[(e * D + d) * F + f];
                    }
            snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.gate_up_proj", l);
            s_hf_add(hf, hfname, E * D, 2 * F, dtype, gu); // then made 3-D
            hf->t[hf->n - 1].n_dims = 3, hf->t[hf->n - 1].shape[0] = E, hf->t[hf->n - 1].shape[1] = D,
            hf->t[hf->n - 1].shape[2] = 2 * F;
            snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.down_proj", l);
            s_hf_add(hf, hfname, E * F, D, dtype, dn);
            hf->t[hf->n - 1].n_dims = 3, hf->t[hf->n - 1].shape[0] = E, hf->t[hf->n - 1].shape[1] = F,
            hf->t[hf->n - 1].shape[2] = D;
            free(gu), free(dn);
        }
        const mc_gguf_tensor_t *gbias = s_blk(g, l, "ffn_gate_exps.bias"), *ubias = s_blk(g, l, "ffn_up_exps.bias");
        const mc_gguf_tensor_t *dbias = s_blk(g, l, "ffn_down_exps.bias");
        const float *gbd = (const float *)(const void *)gbias->data, *ubd = (const float *)(const void *)ubias->data;
        float *gub = malloc(E * 2 * F * sizeof *gub);
        assert_non_null(gub);
        for (uint64_t e = 0; e < E; e++)
            for (uint64_t f = 0; f < F; f++) {
                gub[e * 2 * F + 2 * f] = gbd[e * F + f];
                gub[e * 2 * F + 2 * f + 1] = ubd[e * F + f];
            }
        snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.gate_up_proj_bias", l);
        s_hf_add(hf, hfname, E, 2 * F, dtype, gub);
        free(gub);
        snprintf(hfname, sizeof hfname, "model.layers.%u.mlp.experts.down_proj_bias", l);
        s_hf_add(hf, hfname, E, D, dtype, (const float *)(const void *)dbias->data);
    }
}

// config.json of a GPT-OSS GGUF as gpt-oss-20b's names it (both names of
// the experts per token, layer_types, YaRN with its betas and truncate,
// quantization_config for MXFP4 experts).
static cJSON *s_oss_config(const mc_gguf_t *g) {
    cJSON *c = cJSON_CreateObject();
    const char *arch = "GptOssForCausalLM";
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray(&arch, 1));
    cJSON_AddStringToObject(c, "model_type", "gpt_oss");
    cJSON_AddNumberToObject(c, "vocab_size", (double)mc_gguf_tensor_find(g, "token_embd.weight")->ne[1]);
    cJSON_AddNumberToObject(c, "hidden_size", (double)s_u64(g, "gpt-oss.embedding_length"));
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s_u64(g, "gpt-oss.expert_feed_forward_length"));
    const uint64_t n_layer = s_u64(g, "gpt-oss.block_count");
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)n_layer);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)s_u64(g, "gpt-oss.attention.head_count"));
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)s_u64(g, "gpt-oss.attention.head_count_kv"));
    cJSON_AddNumberToObject(c, "head_dim", (double)s_u64(g, "gpt-oss.attention.key_length"));
    cJSON_AddNumberToObject(c, "num_local_experts", (double)s_u64(g, "gpt-oss.expert_count"));
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)s_u64(g, "gpt-oss.expert_used_count"));
    cJSON_AddNumberToObject(c, "experts_per_token", (double)s_u64(g, "gpt-oss.expert_used_count"));
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s_u64(g, "gpt-oss.context_length"));
    cJSON_AddNumberToObject(c, "rope_theta", s_f64(g, "gpt-oss.rope.freq_base"));
    cJSON_AddNumberToObject(c, "rms_norm_eps", s_f64(g, "gpt-oss.attention.layer_norm_rms_epsilon"));
    cJSON_AddNumberToObject(c, "sliding_window", (double)s_u64(g, "gpt-oss.attention.sliding_window"));
    cJSON *lt = cJSON_AddArrayToObject(c, "layer_types");
    for (uint64_t l = 0; l < n_layer; l++)
        cJSON_AddItemToArray(lt, cJSON_CreateString(l % 2 ? "full_attention" : "sliding_attention"));
    cJSON_AddTrueToObject(c, "attention_bias");
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "swiglu_limit", 7.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", mc_gguf_tensor_find(g, "output.weight") == NULL);
    mc_gguf_str_t type;
    if (mc_gguf_get_str(g, "gpt-oss.rope.scaling.type", &type)) {
        assert_true(type.len == 4 && !memcmp(type.ptr, "yarn", 4));
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "yarn");
        cJSON_AddNumberToObject(rs, "factor", s_f64(g, "gpt-oss.rope.scaling.factor"));
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                (double)s_u64(g, "gpt-oss.rope.scaling.original_context_length"));
        cJSON_AddNumberToObject(rs, "beta_fast", 32.0);
        cJSON_AddNumberToObject(rs, "beta_slow", 1.0);
        cJSON_AddFalseToObject(rs, "truncate");
    }
    if (mc_gguf_tensor_find(g, "blk.0.ffn_gate_exps.weight")->type == MC_DTYPE_MXFP4) {
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "mxfp4");
        const char *keep[2] = {"model.layers.*.self_attn", "model.layers.*.mlp.router"};
        cJSON_AddItemToObject(q, "modules_to_not_convert", cJSON_CreateStringArray(keep, 2));
    }
    return c;
}

static mc_gguf_t *s_open_fixture(const char *name, char *path) {
    snprintf(path, 512, "%s/arch/%s.gguf", MC_REPO_FIXTURES, name);
    return s_open(path);
}

// The GPT-OSS fixture `name` written as the Hugging Face folder dir
// (floats as dtype; two shards), with Qwen2's pre-tokenizer regex as
// moe-mkmodel's vocabulary has it.
static void s_export_oss(const char *name, const char *dir, mc_dtype_t dtype) {
    char src[512];
    mc_gguf_t *g = s_open_fixture(name, src);
    s_hf_t hf = {0};
    s_hf_from_gguf_oss(g, dtype, &hf);
    s_hf_write(&hf, dir, 2);
    s_hf_free(&hf);
    cJSON *c = s_oss_config(g);
    s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_write_tokenizer_of(g, dir, s_qwen2_regex);
    mc_gguf_destroy(&g);
}

// The fixture and its conversion: the same tensors (bytes, types, shapes),
// every key of the fixture but its name, vocab_size and rope.dimension_count
// (moe-mkmodel writes them, llama.cpp's converter does not), and nothing
// more but YaRN's betas (from config.json), add_eos_token and the
// quantization version; the same encodings and bit-identical logits.
static void s_oss_check(const char *src, const char *out) {
    mc_gguf_t *a = s_open(src), *b = s_open(out);
    s_same_tensors(a, b);
    const char *const skip[] = {"general.name", "gpt-oss.vocab_size", "gpt-oss.rope.dimension_count"};
    s_same_keys(a, b, skip, 3);
    const char *const skip2[] = {"general.name", "gpt-oss.rope.scaling.yarn_beta_fast",
                                 "gpt-oss.rope.scaling.yarn_beta_slow", "tokenizer.ggml.add_eos_token",
                                 "general.quantization_version"};
    s_same_keys(b, a, skip2, 5);
    s_same_encodings(a, b);
    mc_gguf_destroy(&a);
    mc_gguf_destroy(&b);
    s_same_logits(src, out);
}

// The GPT-OSS fixtures (the files llama.cpp's logits belong to) as Hugging
// Face folders and back: F32 experts from the unquantized layout
// (gate_up [E, in, 2F] with interleaved columns, down [E, F, in]), MXFP4
// experts from blocks and scales (interleaved rows) copied bit for bit.
static void test_gptoss_fixtures(void **state) {
    (void)state;
    static const char *const names[2] = {"gptoss-f32", "gptoss-mxfp4"};
    for (int i = 0; i < 2; i++) {
        char dir[512], out[S_PATH], src[512];
        snprintf(src, sizeof src, "%s/arch/%s.gguf", MC_REPO_FIXTURES, names[i]);
        assert_non_null(mc_test_tmpdir(dir, sizeof dir));
        s_export_oss(names[i], dir, MC_DTYPE_F32);
        s_path(out, dir, "out.gguf");
        s_convert_ok(dir, out, true, MC_DTYPE_F32);
        s_oss_check(src, out);
        s_done(dir);
    }
}

// A BF16 folder (the unquantized checkpoints): auto keeps the matrices,
// the experts too, as the bf16 of the fixture's values; Q8_0 quantizes
// the experts' rows as gathered from the interleaved columns; the biases
// and routers are F32 whatever the type; and the file runs.
static void test_gptoss_bf16(void **state) {
    (void)state;
    char dir[512], out[S_PATH], src[512];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_oss("gptoss-f32", dir, MC_DTYPE_BF16);
    mc_gguf_t *a = s_open_fixture("gptoss-f32", src);
    for (int pass = 0; pass < 2; pass++) {
        const mc_dtype_t want = pass ? MC_DTYPE_Q8_0 : MC_DTYPE_BF16;
        s_path(out, dir, pass ? "q8.gguf" : "bf16.gguf");
        s_convert_ok(dir, out, pass == 0, want);
        mc_gguf_t *b = s_open(out);
        for (size_t i = 0; i < mc_gguf_tensor_count(a); i++) {
            const mc_gguf_tensor_t *ta = mc_gguf_tensor_at(a, i), *tb = mc_gguf_tensor_find(b, ta->name);
            if (!tb) fail_msg("%s missing", ta->name);
            // Routers stay F32, as every family's.
            const bool matrix = ta->n_dims >= 2 && !strstr(ta->name, ".bias") && !strstr(ta->name, "ffn_gate_inp");
            const mc_dtype_t type = matrix ? want : MC_DTYPE_F32;
            if (tb->type != type) fail_msg("%s: %s, want %s", ta->name, mc_dtype_name(tb->type), mc_dtype_name(type));
            assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
            const uint64_t n = ta->ne[0], rows = ta->size / (n * sizeof(float));
            float *bf = malloc(n * sizeof *bf);
            uint8_t *row = malloc(mc_dtype_row_bytes(type, n));
            assert_true(bf && row);
            for (uint64_t r = 0; r < rows; r++) {
                const float *x = (const float *)(const void *)(ta->data + r * n * sizeof(float));
                // What the BF16 folder holds, then what the type makes of it.
                for (uint64_t j = 0; j < n; j++) bf[j] = mc_bf16_to_fp32(mc_fp32_to_bf16(x[j]));
                assert_int_equal(mc_quant_quantize_row(type, bf, row, (int64_t)n), MC_OK);
                const size_t rb = mc_dtype_row_bytes(type, n);
                if (memcmp(row, tb->data + r * rb, rb)) fail_msg("%s row %llu differs", ta->name, (unsigned long long)r);
            }
            free(bf);
            free(row);
        }
        mc_gguf_destroy(&b);
        uint32_t nv;
        const int32_t ids[3] = {1, 300, 7};
        float *l = s_logits(out, ids, 3, &nv);
        for (size_t i = 0; i < 3 * (size_t)nv; i++) assert_true(isfinite(l[i]));
        free(l);
    }
    mc_gguf_destroy(&a);
    s_done(dir);
}

// One hostile GPT-OSS folder: the MXFP4 fixture's tensors with `edit`
// applied (on the tensor named like `which`), the good config.json with key
// set to json (NULL key: as it is); the conversion must fail naming needle.
typedef enum { S_EDIT_NONE, S_EDIT_DROP, S_EDIT_SHAPE, S_EDIT_SCALE_NAN, S_EDIT_DTYPE } s_edit_t;

static void s_oss_fail(const char *fixture, s_edit_t edit, const char *which, const char *key, const char *json,
                       const char *needle) {
    char dir[512], src[512];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    mc_gguf_t *g = s_open_fixture(fixture, src);
    s_hf_t hf = {0};
    s_hf_from_gguf_oss(g, MC_DTYPE_F32, &hf);
    bool found = edit == S_EDIT_NONE;
    for (size_t i = 0; i < hf.n && !found; i++) {
        s_hft_t *t = &hf.t[i];
        if (!strstr(t->name, which)) continue;
        found = true;
        if (edit == S_EDIT_DROP) {
            free(t->data);
            hf.t[i] = hf.t[--hf.n];
        } else if (edit == S_EDIT_SHAPE) { // one row fewer: an odd gate_up, or blocks that do not match
            assert_true(t->shape[1] > 1);
            t->shape[1]--;
        } else if (edit == S_EDIT_SCALE_NAN) {
            ((uint8_t *)t->data)[5] = 0xFF;
        } else if (edit == S_EDIT_DTYPE) { // U8 bytes said to be BF16 (half as many values)
            assert_int_equal(t->dtype, MC_SAFETENSORS_U8);
            assert_int_equal(t->shape[t->n_dims - 1] % 2, 0);
            t->shape[t->n_dims - 1] /= 2;
            t->dtype = MC_DTYPE_BF16;
        }
    }
    if (!found) fail_msg("test: no tensor like %s", which);
    s_hf_write(&hf, dir, 1);
    s_hf_free(&hf);
    cJSON *c = s_oss_config(g);
    s_write_tokenizer_of(g, dir, s_qwen2_regex);
    mc_gguf_destroy(&g);
    if (key) s_cfg_set(dir, c, key, json);
    else s_write_json(dir, "config.json", c);
    cJSON_Delete(c);
    s_convert_fail(dir, needle);
    s_done(dir);
}

// Misconfigured, incomplete and damaged GPT-OSS folders are refused by name.
static void test_gptoss_errors(void **state) {
    (void)state;
    const char *mx = "gptoss-mxfp4", *f32 = "gptoss-f32";
    // Tensors: missing, of the wrong shape or type, with a NaN scale.
    s_oss_fail(mx, S_EDIT_DROP, "layers.1.self_attn.sinks", NULL, NULL, "tensor 'model.layers.1.self_attn.sinks' is missing");
    s_oss_fail(mx, S_EDIT_DROP, "layers.0.mlp.experts.gate_up_proj_scales", NULL, NULL,
               "tensor 'model.layers.0.mlp.experts.gate_up_proj_scales' is missing");
    s_oss_fail(mx, S_EDIT_SHAPE, "layers.0.mlp.experts.gate_up_proj_blocks", NULL, NULL,
               "tensor 'model.layers.0.mlp.experts.gate_up_proj_blocks' has shape [16, 63, 2, 16] but config.json "
               "implies [16, 64, 2, 16]");
    s_oss_fail(mx, S_EDIT_SHAPE, "layers.2.mlp.experts.down_proj_scales", NULL, NULL,
               "'model.layers.2.mlp.experts.down_proj_scales' has shape [16, 63, 1]");
    s_oss_fail(mx, S_EDIT_SHAPE, "layers.0.mlp.experts.gate_up_proj_bias", NULL, NULL,
               "'model.layers.0.mlp.experts.gate_up_proj_bias' has shape [16, 63] but config.json implies [16, 64]");
    s_oss_fail(f32, S_EDIT_SHAPE, "layers.1.mlp.experts.gate_up_proj", NULL, NULL,
               "'model.layers.1.mlp.experts.gate_up_proj' has shape [16, 63, 64] but config.json implies [16, 64, 64]");
    s_oss_fail(mx, S_EDIT_DTYPE, "layers.0.mlp.experts.down_proj_blocks", NULL, NULL,
               "'model.layers.0.mlp.experts.down_proj_blocks' has shape [16, 64, 1, 8]");
    s_oss_fail(mx, S_EDIT_SCALE_NAN, "layers.2.mlp.experts.gate_up_proj_scales", NULL, NULL,
               "'model.layers.2.mlp.experts.gate_up_proj_scales': expert 0 row 2 block 1 has scale 0xFF");
    s_oss_fail(mx, S_EDIT_DROP, "layers.0.mlp.router.bias", NULL, NULL, "tensor 'model.layers.0.mlp.router.bias' is missing");
    s_oss_fail(mx, S_EDIT_DROP, "layers.0.self_attn.o_proj.bias", NULL, NULL, "'model.layers.0.self_attn.o_proj.bias' is missing");
    // The layouts and quantization_config disagreeing.
    s_oss_fail(mx, S_EDIT_NONE, "", "quantization_config", NULL,
               "'model.layers.0.mlp.experts.gate_up_proj_blocks' is there but config.json has no quantization_config");
    s_oss_fail(f32, S_EDIT_NONE, "", "quantization_config", "{\"quant_method\":\"mxfp4\"}",
               "'model.layers.0.mlp.experts.gate_up_proj' is there but config.json says quantization_config mxfp4");
    s_oss_fail(mx, S_EDIT_NONE, "", "quantization_config", "{\"quant_method\":\"fp8\"}", "quant_method 'fp8' is not supported");
    // Variants the engine does not run.
    s_oss_fail(mx, S_EDIT_NONE, "", "swiglu_limit", "5", "swiglu_limit 5 is not supported");
    s_oss_fail(mx, S_EDIT_NONE, "", "layer_types", "[\"full_attention\",\"full_attention\",\"sliding_attention\"]",
               "layer_types[0] is 'full_attention'");
    s_oss_fail(mx, S_EDIT_NONE, "", "layer_types", "[\"sliding_attention\"]", "'layer_types' is not a list of");
    s_oss_fail(mx, S_EDIT_NONE, "", "sliding_window", NULL, "'sliding_window' is missing");
    s_oss_fail(mx, S_EDIT_NONE, "", "attention_bias", "false", "attention_bias false is not supported");
    s_oss_fail(mx, S_EDIT_NONE, "", "experts_per_token", "3", "experts_per_token 3 and num_experts_per_tok 4 differ");
    s_oss_fail(mx, S_EDIT_NONE, "", "rope_scaling",
               "{\"rope_type\":\"yarn\",\"factor\":4,\"original_max_position_embeddings\":512,\"beta_fast\":16}",
               "beta_fast 16");
    s_oss_fail(mx, S_EDIT_NONE, "", "hidden_act", "\"gelu\"", "hidden_act 'gelu' is not supported");
    s_oss_fail(mx, S_EDIT_NONE, "", "intermediate_size", "48", "must be multiples of 32");
}

// tokenizer.json with o200k's pattern (as gpt-oss's) gives pre "gpt-4o";
// another pattern is refused; chat_template.jinja gives the chat template.
static void test_gptoss_pre(void **state) {
    (void)state;
    static const char o200k[] =
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    char dir[512], out[S_PATH], src[512];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_export_oss("gptoss-mxfp4", dir, MC_DTYPE_F32);
    mc_gguf_t *g = s_open_fixture("gptoss-mxfp4", src);
    s_write_tokenizer_of(g, dir, o200k);
    s_path(out, dir, "out.gguf");
    s_convert_ok(dir, out, true, MC_DTYPE_F32);
    mc_gguf_t *b = s_open(out);
    s_expect_str(b, "tokenizer.ggml.pre", "gpt-4o");
    assert_null(mc_gguf_find(b, "tokenizer.chat_template"));
    mc_gguf_destroy(&b);
    // The chat template from chat_template.jinja when tokenizer_config.json has none.
    static const char tmpl[] = "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}";
    char path[S_PATH];
    s_path(path, dir, "chat_template.jinja");
    s_write_bytes(path, tmpl, strlen(tmpl));
    assert_int_equal(remove(out), 0);
    s_convert_ok(dir, out, true, MC_DTYPE_F32);
    b = s_open(out);
    s_expect_str(b, "tokenizer.chat_template", tmpl);
    mc_gguf_destroy(&b);
    s_write_bytes(path, "a\0b", 3);
    assert_int_equal(remove(out), 0);
    s_convert_fail(dir, "chat_template.jinja: holds a NUL byte");
    remove(path);
    s_write_tokenizer_of(g, dir, "\\p{N}{1,3}");
    s_convert_fail(dir, "not a GPT-OSS one we know");
    mc_gguf_destroy(&g);
    s_done(dir);
}

// The moe-convert binary: exit status 0 written, 1 failed, 2 bad command line.
static int s_cli(const char *dir, const char *args, char **out) {
    const char *bin = getenv("MC_BIN_DIR"), *prefix = getenv("MC_RUN_PREFIX");
    char cmd[4096], outp[S_PATH];
    s_path(outp, dir, "cli.out");
    snprintf(cmd, sizeof cmd, "%s '%s/moe-convert' %s >'%s' 2>&1 </dev/null", prefix ? prefix : "", bin ? bin : ".",
             args, outp);
    int st = system(cmd);
    *out = (char *)mc_test_read_file(outp, NULL);
    assert_non_null(*out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    (void)state;
    char dir[512], orig[S_PATH], args[2048], err[MC_ERR_LEN] = "", *out;
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_path(orig, dir, "orig.gguf");
    mc_mkmodel_params_t mp = s_tiny();
    mp.dim = 256;
    mp.ffn = 40;
    mp.n_layer = 1;
    assert_int_equal(mc_mkmodel_write(&mp, orig, err), MC_OK);
    const s_export_t x = {MC_DTYPE_BF16, 2, NULL};
    s_export_mixtral(orig, dir, &x);
    assert_int_equal(s_cli(dir, "--help", &out), 0);
    assert_non_null(strstr(out, "Qwen3MoeForCausalLM"));
    free(out);
    assert_int_equal(s_cli(dir, "", &out), 2);
    free(out);
    assert_int_equal(s_cli(dir, "a b --type Q9_9", &out), 2);
    assert_non_null(strstr(out, "'Q9_9' is not a weight type"));
    free(out);
    assert_int_equal(s_cli(dir, "a b --type Q8_K", &out), 2); // an activation type
    free(out);
    assert_int_equal(s_cli(dir, "a b c", &out), 2);
    free(out);
    snprintf(args, sizeof args, "'%s/nothing' '%s/x.gguf'", dir, dir);
    assert_int_equal(s_cli(dir, args, &out), 1);
    assert_non_null(strstr(out, "moe-convert: "));
    assert_non_null(strstr(out, "config.json: cannot open"));
    free(out);
    snprintf(args, sizeof args, "'%s' '%s/q.gguf' --type q4_k --name tiny", dir, dir);
    assert_int_equal(s_cli(dir, args, &out), 0);
    assert_non_null(strstr(out, "MixtralForCausalLM -> llama: 1 layer, 4 experts (2 used), vocabulary 480 (llama), 2 shards, "
                                "matrices Q4_K"));
    assert_non_null(strstr(out, "Q4_K x2, F16 x1*"));
    assert_non_null(strstr(out, "* rows not a whole number of Q4_K blocks"));
    assert_non_null(strstr(out, "q.gguf: 13 tensors"));
    free(out);
    char q[S_PATH];
    s_path(q, dir, "q.gguf");
    mc_gguf_t *g = s_open(q);
    s_expect_str(g, "general.name", "tiny");
    mc_gguf_destroy(&g);
    snprintf(args, sizeof args, "'%s' '%s/q.gguf' --quiet", dir, dir);
    assert_int_equal(s_cli(dir, args, &out), 0);
    assert_string_equal(out, "");
    free(out);
    s_done(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixtral_f32_roundtrip),
        cmocka_unit_test(test_mixtral_fixture),
        cmocka_unit_test(test_mixtral_bf16),
        cmocka_unit_test(test_mixtral_q8_0),
        cmocka_unit_test(test_mixtral_fallback),
        cmocka_unit_test(test_mixtral_errors),
        cmocka_unit_test(test_qwen3moe),
        cmocka_unit_test(test_olmoe),
        cmocka_unit_test(test_family_fixtures),
        cmocka_unit_test(test_qwen2moe_errors),
        cmocka_unit_test(test_interleaved_config),
        cmocka_unit_test(test_bpe_errors),
        cmocka_unit_test(test_v3_fixtures),
        cmocka_unit_test(test_v3_bf16),
        cmocka_unit_test(test_v3_errors),
        cmocka_unit_test(test_v3_pre),
        cmocka_unit_test(test_gptoss_fixtures),
        cmocka_unit_test(test_gptoss_bf16),
        cmocka_unit_test(test_gptoss_errors),
        cmocka_unit_test(test_gptoss_pre),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
