/*
 * model: hyperparameters from the <arch>.* keys and tensor binding with full
 * shape and type checks, for merged and legacy expert layouts.
 */
#include "model.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "expert_store.h"
#include "kernel.h"
#include "quant.h"

#define MC_NAME_MAX 96

// Required unsigned key "<arch>.<suffix>", 1 .. limit.
static mc_err_t s_get_dim(const mc_gguf_t *g, const char *arch, const char *suffix, uint64_t limit,
                          uint32_t *out, char *err) {
    char key[MC_NAME_MAX];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    if (!mc_gguf_get_u64(g, key, &v))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata key '%s' is missing or not an unsigned integer", key);
    if (v == 0 || v > limit)
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' = %llu is out of range (1..%llu)", key,
                          (unsigned long long)v, (unsigned long long)limit);
    *out = (uint32_t)v;
    return MC_OK;
}

static float s_get_float(const mc_gguf_t *g, const char *arch, const char *suffix, float def);

// Optional unsigned key "<arch>.<suffix>": def when absent, else 0 .. limit.
static mc_err_t s_get_opt(const mc_gguf_t *g, const char *arch, const char *suffix, uint32_t def, uint64_t limit,
                          uint32_t *out, char *err) {
    char key[MC_NAME_MAX];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v = def;
    if (mc_gguf_find(g, key) && !mc_gguf_get_u64(g, key, &v))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata key '%s' is not an unsigned integer", key);
    if (v > limit)
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' = %llu is out of range (0..%llu)", key,
                          (unsigned long long)v, (unsigned long long)limit);
    *out = (uint32_t)v;
    return MC_OK;
}

// llama.cpp's deepseek2 loader, for a file without expert_gating_func: V2
// and V2.5 files are softmax, but GLM-4.7-Lite's shape (47 or 48 blocks,
// next-token-prediction ones included, and 154880 tokens) is sigmoid.
static bool s_deepseek2_sigmoid_default(const mc_gguf_t *g, const char *arch) {
    char key[MC_NAME_MAX];
    uint64_t blocks = 0, vocab = 0;
    snprintf(key, sizeof key, "%s.block_count", arch);
    if (!mc_gguf_get_u64(g, key, &blocks) || (blocks != 47 && blocks != 48)) return false;
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    if (!mc_gguf_get_u64(g, key, &vocab)) { // as llama.cpp: else the tokenizer's list
        const mc_gguf_value_t *tokens = mc_gguf_find(g, "tokenizer.ggml.tokens");
        if (tokens && tokens->type == MC_GGUF_ARRAY) vocab = tokens->arr.count;
    }
    return vocab == 154880;
}

// The routing variant: the family's defaults with the file's keys (arch.h).
static mc_err_t s_read_route(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    char key[MC_NAME_MAX];
    mc_err_t rc;
    mc_route_t *r = &hp->route;
    *r = hp->arch->route;
    snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
    if (mc_gguf_find(g, key) && !mc_gguf_get_bool(g, key, &r->norm_topk))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' is not a boolean", key);
    // 0 in a file means "not set" for llama.cpp, as does 1.
    r->scale = s_get_float(g, arch, "expert_weights_scale", 1.0f);
    if (r->scale == 0.0f) r->scale = 1.0f;
    if (!isfinite(r->scale)) return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s.expert_weights_scale' is not finite", arch);
    uint32_t gating = 0;
    if (hp->arch->route_keys && (rc = s_get_opt(g, arch, "expert_gating_func", 0, UINT32_MAX, &gating, err))) return rc;
    if (gating == 0 && hp->arch->id == MC_ARCH_DEEPSEEK2 && s_deepseek2_sigmoid_default(g, arch)) gating = MC_GATING_SIGMOID;
    if (gating == MC_GATING_SOFTMAX || gating == MC_GATING_SIGMOID || gating == MC_GATING_SOFTMAX_WEIGHT)
        r->gating = (mc_gating_t)gating;
    else if (gating != 0) // 0: none set, the family's default
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "metadata '%s.expert_gating_func' = %u is not a supported gating function (1 softmax, 2 "
                          "sigmoid, 3 softmax over the chosen logits)",
                          arch, gating);
    // Groups apply in every family, as llama.cpp reads them for all.
    if ((rc = s_get_opt(g, arch, "expert_group_count", 0, hp->n_expert, &r->n_group, err)) ||
        (rc = s_get_opt(g, arch, "expert_group_used_count", 0, hp->n_expert, &r->n_group_used, err)))
        return rc;
    if (r->n_group <= 1) {
        r->n_group = r->n_group_used = 0;
        return MC_OK;
    }
    const uint32_t per = hp->n_expert / r->n_group;
    if (hp->n_expert % r->n_group)
        return mc_err_set(err, MC_ERR_FORMAT, "expert_group_count %u does not divide the %u experts into equal groups",
                          r->n_group, hp->n_expert);
    if (per < 2)
        return mc_err_set(err, MC_ERR_FORMAT, "expert_group_count %u leaves fewer than 2 of the %u experts per group",
                          r->n_group, hp->n_expert);
    if (r->n_group_used == 0 || r->n_group_used >= r->n_group)
        return mc_err_set(err, MC_ERR_FORMAT, "expert_group_used_count %u is out of range (1..%u, below the %u groups)",
                          r->n_group_used, r->n_group - 1, r->n_group);
    if ((uint64_t)r->n_group_used * per < hp->n_expert_used)
        return mc_err_set(err, MC_ERR_FORMAT, "%u groups of %u experts cannot hold the %u experts each row uses",
                          r->n_group_used, per, hp->n_expert_used);
    return MC_OK;
}

static float s_get_float(const mc_gguf_t *g, const char *arch, const char *suffix, float def) {
    char key[MC_NAME_MAX];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    double v;
    return mc_gguf_get_f64(g, key, &v) ? (float)v : def;
}

// Squeeze trailing dims of 1 and compare with the expected (ne0, ne1, ne2).
static mc_err_t s_check_shape(const mc_gguf_tensor_t *t, uint32_t nd, const uint64_t *want, char *err) {
    for (uint32_t i = 0; i < MC_GGUF_MAX_DIMS; i++) {
        uint64_t w = i < nd ? want[i] : 1;
        uint64_t have = i < t->n_dims ? t->ne[i] : 1;
        if (have != w) {
            char ws[96] = "", hs[96] = "";
            size_t wl = 0, hl = 0;
            for (uint32_t j = 0; j < nd; j++)
                wl += (size_t)snprintf(ws + wl, sizeof ws - wl, "%s%llu", j ? ", " : "", (unsigned long long)want[j]);
            for (uint32_t j = 0; j < t->n_dims; j++)
                hl += (size_t)snprintf(hs + hl, sizeof hs - hl, "%s%llu", j ? ", " : "", (unsigned long long)t->ne[j]);
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' has shape {%s}, expected {%s}", t->name, hs, ws);
        }
    }
    return MC_OK;
}

static const mc_gguf_tensor_t *s_find(const mc_gguf_t *g, const char *name, char *err) {
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    if (!t) mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing", name);
    return t;
}

// The block of w whose E8M0 scale is 0xFF, scanning bytes (w's rows as
// read: the mapping's or a copy), as an error naming its tensor (found by
// w->data's place in the file), block, row, expert and values.
static mc_err_t s_mxfp4_scan(const mc_gguf_t *g, const mc_matrix_t *w, const uint8_t *bytes, char *err) {
    if (w->type != MC_DTYPE_MXFP4 || !w->data) return MC_OK;
    const int64_t b = mc_quant_mxfp4_bad_block(bytes, (int64_t)w->n_in * w->n_out);
    if (b < 0) return MC_OK;
    const mc_gguf_tensor_t *t = NULL;
    for (size_t i = 0; i < mc_gguf_tensor_count(g) && !t; i++) {
        const mc_gguf_tensor_t *c = mc_gguf_tensor_at(g, i);
        if (w->data >= c->data && w->data < c->data + c->size) t = c;
    }
    if (!t) // a matrix outside the file's tensors is a caller's bug, not a damaged file
        return mc_err_set(err, MC_ERR_FORMAT, "MXFP4 block %lld of a matrix has the scale byte 0xFF", (long long)b);
    const uint64_t bpr = w->n_in / MC_QK, first = (uint64_t)(w->data - t->data) / sizeof(mc_block_mxfp4_t);
    const uint64_t blk = first + (uint64_t)b, row = blk / bpr;
    char where[64] = "";
    if (t->n_dims == 3 && t->ne[1])
        snprintf(where, sizeof where, ", expert %llu", (unsigned long long)(row / t->ne[1]));
    return mc_err_set(err, MC_ERR_FORMAT,
                      "tensor '%s': MXFP4 block %llu (row %llu%s, values %llu..%llu) has the scale byte 0xFF, "
                      "which is NaN in E8M0: the file is damaged",
                      t->name, (unsigned long long)blk, (unsigned long long)row, where,
                      (unsigned long long)(blk % bpr * MC_QK), (unsigned long long)(blk % bpr * MC_QK + MC_QK - 1));
}

// A matrix view of n_out rows from data. check: its MXFP4 scales are read
// now (the dense matrices, which every token multiplies anyway); experts'
// are read when first used (mc_model_expert_check, the expert store), so
// opening a model never reads its experts' pages.
static mc_err_t s_matrix_from(const mc_gguf_t *g, const mc_gguf_tensor_t *t, uint32_t n_in, uint32_t n_out,
                              const uint8_t *data, bool check, mc_matrix_t *out, char *err) {
    if (!mc_kernel_get(t->type, MC_ISA_SCALAR))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "tensor '%s' has type %s, which is not a weight type", t->name,
                          mc_dtype_name(t->type));
    const mc_matrix_t w = {t->type, n_in, n_out, mc_dtype_row_bytes(t->type, n_in), data, NULL};
    mc_err_t rc;
    if (check && (rc = s_mxfp4_scan(g, &w, data, err))) return rc;
    *out = w;
    return MC_OK;
}

static mc_err_t s_bind_rows(const mc_gguf_t *g, const char *name, uint32_t n_in, uint32_t n_out, bool check,
                            mc_matrix_t *out, char *err) {
    const mc_gguf_tensor_t *t = s_find(g, name, err);
    if (!t) return MC_ERR_FORMAT;
    mc_err_t rc = s_check_shape(t, 2, (uint64_t[]){n_in, n_out}, err);
    if (rc) return rc;
    return s_matrix_from(g, t, n_in, n_out, t->data, check, out, err);
}

// A dense matrix (checked now).
static mc_err_t s_bind_matrix(const mc_gguf_t *g, const char *name, uint32_t n_in, uint32_t n_out,
                              mc_matrix_t *out, char *err) {
    return s_bind_rows(g, name, n_in, n_out, true, out, err);
}

// One expert's matrix of a per-expert tensor (checked when first used).
static mc_err_t s_bind_expert(const mc_gguf_t *g, const char *name, uint32_t n_in, uint32_t n_out, mc_matrix_t *out,
                              char *err) {
    return s_bind_rows(g, name, n_in, n_out, false, out, err);
}

// Norm weights and biases are tiny: keep an f32 copy whatever their stored
// type. n values in rows of n0 (a per-expert bias: {n0, n_expert}).
static mc_err_t s_bind_f32_rows(const mc_gguf_t *g, const char *name, uint32_t n0, uint32_t rows, float **out,
                                char *err) {
    const mc_gguf_tensor_t *t = s_find(g, name, err);
    if (!t) return MC_ERR_FORMAT;
    mc_err_t rc = s_check_shape(t, rows > 1 ? 2 : 1, (uint64_t[]){n0, rows}, err);
    if (rc) return rc;
    const uint32_t n = n0 * rows;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (mc_quant_dequantize_row(t->type, t->data, v, n) != MC_OK) {
        free(v);
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "tensor '%s': cannot read type %s", name, mc_dtype_name(t->type));
    }
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            free(v);
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' holds a non-finite value at %u", name, i);
        }
    *out = v;
    return MC_OK;
}

static mc_err_t s_bind_vector(const mc_gguf_t *g, const char *name, uint32_t n, float **out, char *err) {
    return s_bind_f32_rows(g, name, n, 1, out, err);
}

// A tensor the family requires: a missing one is named with the family.
static mc_err_t s_bind_required(const mc_gguf_t *g, const mc_hparams_t *hp, const char *name, uint32_t n0,
                                uint32_t rows, const char *what, float **out, char *err) {
    if (!mc_gguf_tensor_find(g, name))
        return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing: every %s layer has %s", name, hp->arch->family,
                          what);
    return s_bind_f32_rows(g, name, n0, rows, out, err);
}

// One of gate/up/down for all experts of a layer from a merged tensor
// {n_in, n_out, n_expert}: expert e starts e * n_out rows in.
static mc_err_t s_bind_merged(const mc_gguf_t *g, const char *name, const mc_hparams_t *hp, uint32_t n_in,
                              uint32_t n_out, mc_expert_t *experts, size_t field, char *err) {
    const mc_gguf_tensor_t *t = s_find(g, name, err);
    if (!t) return MC_ERR_FORMAT;
    mc_err_t rc = s_check_shape(t, 3, (uint64_t[]){n_in, n_out, hp->n_expert}, err);
    if (rc) return rc;
    size_t expert_bytes = mc_dtype_row_bytes(t->type, n_in) * n_out;
    for (uint32_t e = 0; e < hp->n_expert; e++) {
        mc_matrix_t *m = (mc_matrix_t *)((char *)&experts[e] + field);
        rc = s_matrix_from(g, t, n_in, n_out, t->data + (size_t)e * expert_bytes, false, m, err);
        if (rc) return rc;
    }
    return MC_OK;
}

// The shared expert of layer l and its gate (a family whose shared expert
// has one); a missing tensor says the family needs it.
static mc_err_t s_bind_shexp(const mc_gguf_t *g, const mc_hparams_t *hp, uint32_t l, mc_layer_t *L, char *err) {
    const struct {
        const char *part;
        uint32_t n_in, n_out;
        mc_matrix_t *w;
    } parts[] = {
        {hp->arch->shexp_gated ? "ffn_gate_inp_shexp" : NULL, hp->dim, 1, &L->shexp_gate},
        {"ffn_gate_shexp", hp->dim, hp->ffn_shexp, &L->shexp.gate},
        {"ffn_up_shexp", hp->dim, hp->ffn_shexp, &L->shexp.up},
        {"ffn_down_shexp", hp->ffn_shexp, hp->dim, &L->shexp.down},
    };
    char name[MC_NAME_MAX];
    for (size_t i = hp->arch->shexp_gated ? 0 : 1; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(name, sizeof name, "blk.%u.%s.weight", l, parts[i].part);
        if (!mc_gguf_tensor_find(g, name))
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing: every %s layer has a shared expert", name,
                              hp->arch->family);
        mc_err_t rc = s_bind_matrix(g, name, parts[i].n_in, parts[i].n_out, parts[i].w, err);
        if (rc) return rc;
    }
    return MC_OK;
}

// A per-head stack {n_in, n_out, n_head} as n_head matrices (*out, owned).
static mc_err_t s_bind_heads(const mc_gguf_t *g, const char *name, uint32_t n_in, uint32_t n_out, uint32_t n_head,
                             mc_matrix_t **out, char *err) {
    const mc_gguf_tensor_t *t = s_find(g, name, err);
    if (!t) return MC_ERR_FORMAT;
    mc_err_t rc = s_check_shape(t, 3, (uint64_t[]){n_in, n_out, n_head}, err);
    if (rc) return rc;
    if (!(*out = calloc(n_head, sizeof **out))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    const size_t head_bytes = mc_dtype_row_bytes(t->type, n_in) * n_out;
    for (uint32_t h = 0; h < n_head && !rc; h++)
        rc = s_matrix_from(g, t, n_in, n_out, t->data + (size_t)h * head_bytes, true, &(*out)[h], err);
    return rc;
}

// Multi-head latent attention's tensors in place of attn_k / attn_v. Files
// from before llama.cpp split attn_kv_b into attn_k_b and attn_v_b are
// refused (s_read_hparams: they lack key_length_mla).
static mc_err_t s_bind_mla(const mc_gguf_t *g, const mc_hparams_t *hp, uint32_t l, mc_layer_t *L, char *err) {
    char name[MC_NAME_MAX];
    mc_err_t rc;
    const uint32_t nope = hp->head_dim - hp->rope_dim, r = hp->kv_lora_rank;
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_kv_a_mqa.weight", l), hp->dim, r + hp->rope_dim, &L->wkv_a, err)))
        return rc;
    if ((rc = s_bind_vector(g, NAME("blk.%u.attn_kv_a_norm.weight", l), r, &L->kv_a_norm, err))) return rc;
    if ((rc = s_bind_heads(g, NAME("blk.%u.attn_k_b.weight", l), nope, r, hp->n_head, &L->wk_b, err))) return rc;
    return s_bind_heads(g, NAME("blk.%u.attn_v_b.weight", l), r, hp->head_dim_v, hp->n_head, &L->wv_b, err);
#undef NAME
}

static mc_err_t s_bind_layer(const mc_gguf_t *g, const mc_hparams_t *hp, uint32_t l, mc_layer_t *L, bool *legacy,
                             char *err) {
    char name[MC_NAME_MAX];
    mc_err_t rc;
    uint32_t q_dim = hp->n_head * hp->head_dim, kv_dim = hp->n_head_kv * hp->head_dim;
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if ((rc = s_bind_vector(g, NAME("blk.%u.attn_norm.weight", l), hp->dim, &L->attn_norm, err))) return rc;
    if (hp->q_lora_rank) { // compressed query: attn_q_b (attn_q_a_norm (attn_q_a x))
        if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_q_a.weight", l), hp->dim, hp->q_lora_rank, &L->wq_a, err)))
            return rc;
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_q_a_norm.weight", l), hp->q_lora_rank, &L->q_a_norm, err)))
            return rc;
        if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_q_b.weight", l), hp->q_lora_rank, q_dim, &L->wq, err))) return rc;
    } else if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_q.weight", l), hp->dim, q_dim, &L->wq, err))) {
        return rc;
    }
    if (hp->arch->mla) {
        if ((rc = s_bind_mla(g, hp, l, L, err))) return rc;
    } else {
        if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_k.weight", l), hp->dim, kv_dim, &L->wk, err))) return rc;
        if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_v.weight", l), hp->dim, kv_dim, &L->wv, err))) return rc;
    }
    if ((rc = s_bind_matrix(g, NAME("blk.%u.attn_output.weight", l), hp->n_head * hp->head_dim_v, hp->dim, &L->wo,
                            err)))
        return rc;
    if (hp->arch->attn_out_bias &&
        (rc = s_bind_required(g, hp, NAME("blk.%u.attn_output.bias", l), hp->dim, 1, "an attention output bias",
                              &L->bo, err)))
        return rc;
    if (hp->arch->attn_sinks &&
        (rc = s_bind_required(g, hp, NAME("blk.%u.attn_sinks.weight", l), hp->n_head, 1, "attention sinks (one per head)",
                              &L->sinks, err)))
        return rc;
    // An optional pair (GLM-4.5-Air has none) is read when the q norm is there.
    if (hp->arch->qk_norm != MC_QKNORM_NONE &&
        (!hp->arch->qk_norm_optional || mc_gguf_tensor_find(g, NAME("blk.%u.attn_q_norm.weight", l)))) {
        const bool head = hp->arch->qk_norm == MC_QKNORM_HEAD;
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_q_norm.weight", l), head ? hp->head_dim : q_dim, &L->q_norm, err)))
            return rc;
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_k_norm.weight", l), head ? hp->head_dim : kv_dim, &L->k_norm, err)))
            return rc;
    }
    if (hp->arch->qkv_bias && mc_gguf_tensor_find(g, NAME("blk.%u.attn_q.bias", l))) {
        // Optional, as llama.cpp has them; all three or none.
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_q.bias", l), q_dim, &L->bq, err))) return rc;
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_k.bias", l), kv_dim, &L->bk, err))) return rc;
        if ((rc = s_bind_vector(g, NAME("blk.%u.attn_v.bias", l), kv_dim, &L->bv, err))) return rc;
    }
    if ((rc = s_bind_vector(g, NAME("blk.%u.%s.weight", l, hp->arch->ffn_norm_name), hp->dim, &L->ffn_norm, err)))
        return rc;
    // A dense layer's experts stay without data, so every (layer, expert)
    // index is valid; mc_model_has_expert says there is none.
    L->experts = calloc(hp->n_expert, sizeof *L->experts);
    if (!L->experts) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!mc_hparams_layer_moe(hp, l)) {
        if ((rc = s_bind_matrix(g, NAME("blk.%u.ffn_gate.weight", l), hp->dim, hp->ffn_dense, &L->dense.gate, err)) ||
            (rc = s_bind_matrix(g, NAME("blk.%u.ffn_up.weight", l), hp->dim, hp->ffn_dense, &L->dense.up, err)) ||
            (rc = s_bind_matrix(g, NAME("blk.%u.ffn_down.weight", l), hp->ffn_dense, hp->dim, &L->dense.down, err)))
            return rc;
        *legacy = false;
        return MC_OK;
    }
    if (hp->ffn_shexp && (rc = s_bind_shexp(g, hp, l, L, err))) return rc;
    if ((rc = s_bind_matrix(g, NAME("blk.%u.ffn_gate_inp.weight", l), hp->dim, hp->n_expert, &L->router, err)))
        return rc;
    if (hp->arch->router_bias &&
        (rc = s_bind_required(g, hp, NAME("blk.%u.ffn_gate_inp.bias", l), hp->n_expert, 1, "a router bias",
                              &L->router_b, err)))
        return rc;
    if (hp->arch->expert_ffn_bias) {
        // Biases of the merged experts, one row per expert.
        if ((rc = s_bind_required(g, hp, NAME("blk.%u.ffn_gate_exps.bias", l), hp->ffn, hp->n_expert,
                                  "expert gate biases", &L->exp_b_gate, err)) ||
            (rc = s_bind_required(g, hp, NAME("blk.%u.ffn_up_exps.bias", l), hp->ffn, hp->n_expert, "expert up biases",
                                  &L->exp_b_up, err)) ||
            (rc = s_bind_required(g, hp, NAME("blk.%u.ffn_down_exps.bias", l), hp->dim, hp->n_expert,
                                  "expert down biases", &L->exp_b_down, err)))
            return rc;
    }
    if (hp->arch->expert_bias == MC_NEED_REQUIRED ||
        (hp->arch->expert_bias == MC_NEED_OPTIONAL && mc_gguf_tensor_find(g, NAME("blk.%u.exp_probs_b.bias", l)))) {
        if (!mc_gguf_tensor_find(g, NAME("blk.%u.exp_probs_b.bias", l)))
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing: every %s MoE layer has an expert selection bias",
                              name, hp->arch->family);
        if ((rc = s_bind_vector(g, name, hp->n_expert, &L->exp_probs_b, err))) return rc;
    }

    *legacy = !mc_gguf_tensor_find(g, NAME("blk.%u.ffn_gate_exps.weight", l));
    if (!*legacy) {
        if ((rc = s_bind_merged(g, NAME("blk.%u.ffn_gate_exps.weight", l), hp, hp->dim, hp->ffn, L->experts,
                                offsetof(mc_expert_t, gate), err)))
            return rc;
        if ((rc = s_bind_merged(g, NAME("blk.%u.ffn_up_exps.weight", l), hp, hp->dim, hp->ffn, L->experts,
                                offsetof(mc_expert_t, up), err)))
            return rc;
        return s_bind_merged(g, NAME("blk.%u.ffn_down_exps.weight", l), hp, hp->ffn, hp->dim, L->experts,
                             offsetof(mc_expert_t, down), err);
    }
    if (!mc_gguf_tensor_find(g, NAME("blk.%u.ffn_gate.0.weight", l)))
        return mc_err_set(err, MC_ERR_FORMAT,
                          "not a mixture-of-experts model: layer %u has neither blk.%u.ffn_gate_exps.weight nor "
                          "blk.%u.ffn_gate.0.weight",
                          l, l, l);
    for (uint32_t e = 0; e < hp->n_expert; e++) {
        mc_expert_t *x = &L->experts[e];
        if ((rc = s_bind_expert(g, NAME("blk.%u.ffn_gate.%u.weight", l, e), hp->dim, hp->ffn, &x->gate, err)))
            return rc;
        if ((rc = s_bind_expert(g, NAME("blk.%u.ffn_up.%u.weight", l, e), hp->dim, hp->ffn, &x->up, err))) return rc;
        if ((rc = s_bind_expert(g, NAME("blk.%u.ffn_down.%u.weight", l, e), hp->ffn, hp->dim, &x->down, err)))
            return rc;
    }
#undef NAME
    return MC_OK;
}

// Head sizes of ordinary attention: key_length (Qwen3's heads are wider than
// dim / n_head: the file then says so), equal value heads, RoPE dims.
static mc_err_t s_read_heads(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    char key[MC_NAME_MAX];
    mc_err_t rc;
    snprintf(key, sizeof key, "%s.attention.key_length", arch);
    if (mc_gguf_find(g, key)) {
        if ((rc = s_get_dim(g, arch, "attention.key_length", 1u << 12, &hp->head_dim, err))) return rc;
    } else if (hp->dim % hp->n_head) {
        return mc_err_set(err, MC_ERR_FORMAT, "embedding_length %u is not a multiple of head_count %u", hp->dim,
                          hp->n_head);
    } else {
        hp->head_dim = hp->dim / hp->n_head;
    }
    snprintf(key, sizeof key, "%s.attention.value_length", arch);
    uint32_t v_dim = hp->head_dim;
    if (mc_gguf_find(g, key) && (rc = s_get_dim(g, arch, "attention.value_length", 1u << 12, &v_dim, err))) return rc;
    if (v_dim != hp->head_dim)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "value heads of %u differ from key heads of %u", v_dim,
                          hp->head_dim);
    hp->head_dim_v = hp->head_dim;
    hp->rope_dim = hp->head_dim;
    snprintf(key, sizeof key, "%s.rope.dimension_count", arch);
    if (mc_gguf_find(g, key) && (rc = s_get_dim(g, arch, "rope.dimension_count", hp->head_dim, &hp->rope_dim, err)))
        return rc;
    if (hp->rope_dim % 2 || hp->head_dim % 2)
        return mc_err_set(err, MC_ERR_FORMAT, "rope dimension %u / head dimension %u must be even", hp->rope_dim,
                          hp->head_dim);
    return MC_OK;
}

// Multi-head latent attention's sizes, as llama.cpp's converter writes them:
// key_length_mla / value_length_mla are a head's query-key and value sizes,
// key_length / value_length the cached row (kv_lora_rank + rope dims, and
// the latent) seen as one shared head (head_count_kv 1).
static mc_err_t s_read_mla(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    char key[MC_NAME_MAX];
    mc_err_t rc;
    uint64_t v;
    // llama.cpp requires the key except on V2-Lite's layer counts; 0 (or
    // absent): attn_q directly.
    snprintf(key, sizeof key, "%s.attention.q_lora_rank", arch);
    if (mc_gguf_get_u64(g, key, &v) && v != 0 &&
        (rc = s_get_dim(g, arch, "attention.q_lora_rank", 1u << 14, &hp->q_lora_rank, err)))
        return rc;
    snprintf(key, sizeof key, "%s.attention.key_length_mla", arch);
    if (!mc_gguf_find(g, key))
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "metadata '%s' is missing: a file from before llama.cpp split attn_kv_b into attn_k_b and "
                          "attn_v_b (reconvert it)",
                          key);
    if ((rc = s_get_dim(g, arch, "attention.key_length_mla", 1u << 12, &hp->head_dim, err))) return rc;
    if ((rc = s_get_dim(g, arch, "attention.value_length_mla", 1u << 12, &hp->head_dim_v, err))) return rc;
    if ((rc = s_get_dim(g, arch, "attention.kv_lora_rank", 1u << 14, &hp->kv_lora_rank, err))) return rc;
    if ((rc = s_get_dim(g, arch, "rope.dimension_count", 1u << 12, &hp->rope_dim, err))) return rc;
    if (hp->rope_dim % 2 || hp->rope_dim >= hp->head_dim)
        return mc_err_set(err, MC_ERR_FORMAT, "rope dimension %u must be even and below key_length_mla %u",
                          hp->rope_dim, hp->head_dim);
    const struct {
        const char *suffix;
        uint32_t want;
    } views[] = {{"attention.key_length", hp->kv_lora_rank + hp->rope_dim},
                 {"attention.value_length", hp->kv_lora_rank},
                 {"attention.head_count_kv", 1}};
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, views[i].suffix);
        if (mc_gguf_get_u64(g, key, &v) && v != views[i].want)
            return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' = %llu, latent attention needs %u", key,
                              (unsigned long long)v, views[i].want);
    }
    hp->n_head_kv = 1;
    return MC_OK;
}

// ggml's mscale of a YaRN factor (llama-context.cpp's get_mscale).
static float s_yarn_get_mscale(float scale, float mscale) {
    return scale <= 1.0f ? 1.0f : (0.1f * mscale * logf(scale) + 1.0f);
}

// RoPE base and scaling, and the attention scale, computed as llama.cpp's
// context and graphs do (the same float operations, for the same bits).
static mc_err_t s_read_rope(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    const bool deepseek = hp->arch->id == MC_ARCH_DEEPSEEK2;
    char key[MC_NAME_MAX];
    hp->rope_base = s_get_float(g, arch, "rope.freq_base", 10000.0f);
    if (!(hp->rope_base > 0) || !isfinite(hp->rope_base))
        return mc_err_set(err, MC_ERR_FORMAT, "rope.freq_base %g is not a positive number", hp->rope_base);
    // No type: llama.cpp's "linear", a no-op without a factor.
    bool yarn = false, none = false;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    mc_gguf_str_t type;
    if (mc_gguf_find(g, key)) {
        if (!mc_gguf_get_str(g, key, &type)) return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' is not a string", key);
        yarn = type.len == 4 && memcmp(type.ptr, "yarn", 4) == 0;
        none = type.len == 4 && memcmp(type.ptr, "none", 4) == 0;
        if (!yarn && !none && !(type.len == 6 && memcmp(type.ptr, "linear", 6) == 0))
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "metadata '%s' = '%.*s': RoPE scaling none, linear or yarn only",
                              key, (int)(type.len < 32 ? type.len : 32), type.ptr);
    }
    const float factor = s_get_float(g, arch, "rope.scaling.factor", 0.0f);
    if (!isfinite(factor) || factor < 0.0f || (factor > 0.0f && factor < 1e-3f) || factor > 1e6f)
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s.rope.scaling.factor' = %g is out of range", arch, factor);
    hp->rope_freq_scale = factor == 0.0f || none ? 1.0f : 1.0f / factor;
    hp->rope_ext_factor = yarn ? 1.0f : 0.0f;
    uint32_t n_ctx_orig = hp->n_ctx_train;
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    mc_err_t rc;
    if (mc_gguf_find(g, key) &&
        (rc = s_get_dim(g, arch, "rope.scaling.original_context_length", 1u << 24, &n_ctx_orig, err)))
        return rc;
    float log_mul = s_get_float(g, arch, "rope.scaling.yarn_log_multiplier", 0.0f);
    const float rope_attn = s_get_float(g, arch, "rope.scaling.attn_factor", 1.0f);
    if (!isfinite(log_mul) || fabsf(log_mul) > 1e3f || !isfinite(rope_attn) || !(rope_attn > 0))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s.rope.scaling.yarn_log_multiplier' %g or attn_factor %g is "
                          "out of range", arch, log_mul, rope_attn);
    // DeepSeek-V2's converter writes 0.1 x mscale_all_dim.
    if (deepseek && mc_gguf_find(g, (snprintf(key, sizeof key, "%s.rope.scaling.yarn_log_multiplier", arch), key)))
        log_mul /= 0.1f;
    float attn_factor = 1.0f;
    if (yarn) {
        const float fac = 1.0f / hp->rope_freq_scale;
        if (log_mul != 0.0f) {
            const float mscale = deepseek && log_mul != 1.0f ? log_mul : 1.0f;
            attn_factor = s_yarn_get_mscale(fac, mscale) / s_yarn_get_mscale(fac, log_mul);
        } else {
            attn_factor = s_yarn_get_mscale(fac, 1.0f);
        }
        attn_factor *= 1.0f / (1.0f + 0.1f * logf(fac)); // ggml's rope multiplies it back
    }
    attn_factor *= rope_attn;
    // What ggml's rope_yarn multiplies cos and sin by.
    hp->rope_mscale = attn_factor;
    if (yarn) hp->rope_mscale *= 1.0f + 0.1f * logf(1.0f / hp->rope_freq_scale);
    // ggml_rope_yarn_corr_dims with llama.cpp's beta_fast 32, beta_slow 1.
    const float n_dims = (float)hp->rope_dim, base2 = 2 * logf(hp->rope_base);
    const float lo = floorf(n_dims * logf((float)n_ctx_orig / (32.0f * 2 * (float)M_PI)) / base2);
    const float hi = ceilf(n_dims * logf((float)n_ctx_orig / (1.0f * 2 * (float)M_PI)) / base2);
    hp->yarn_corr[0] = lo > 0 ? lo : 0;
    hp->yarn_corr[1] = hi < n_dims - 1 ? hi : n_dims - 1;
    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (deepseek) { // its graph folds YaRN's mscale into the attention scale
        const float org = attn_factor * (1.0f + 0.1f * logf(1.0f / hp->rope_freq_scale));
        const float mscale = org * (1.0f + 0.1f * log_mul * logf(1.0f / hp->rope_freq_scale));
        hp->kq_scale = 1.0f * mscale * mscale / sqrtf((float)hp->head_dim);
    }
    return MC_OK;
}

// Sliding-window attention as llama.cpp's openai-moe loader reads it: the
// window (required), the layer pattern (optional, 2: every other layer from
// layer 0), and no separate RoPE base for the sliding layers.
static mc_err_t s_read_swa(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    char key[MC_NAME_MAX];
    mc_err_t rc;
    snprintf(key, sizeof key, "%s.attention.sliding_window", arch);
    if (!mc_gguf_find(g, key))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata key '%s' is missing: %s attends through a sliding window on "
                          "every other layer", key, hp->arch->family);
    if ((rc = s_get_dim(g, arch, "attention.sliding_window", 1u << 24, &hp->n_swa, err))) return rc;
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
    const mc_gguf_value_t *pat = mc_gguf_find(g, key);
    if (pat && pat->type == MC_GGUF_ARRAY)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "metadata '%s' is a per-layer array: only one period is supported",
                          key);
    if ((rc = s_get_opt(g, arch, "attention.sliding_window_pattern", 2, hp->n_layer, &hp->swa_pattern, err))) return rc;
    if (hp->swa_pattern == 0) // llama.cpp: 0 makes every layer slide
        hp->swa_pattern = 1u << 31;
    snprintf(key, sizeof key, "%s.rope.freq_base_swa", arch);
    if (mc_gguf_find(g, key) && s_get_float(g, arch, "rope.freq_base_swa", 0.0f) != hp->rope_base)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "metadata '%s': a RoPE base of its own for the sliding layers is not "
                          "supported", key);
    return MC_OK;
}

// Which layers are dense: the first leading_dense_block_count, then every
// layer l with (l + 1) % interleave_moe_layer_step != 0 (llama.cpp's
// llama4 / ernie4_5-moe rule; 1, the default, makes every later layer MoE).
// llama.cpp reads the step for neither of the families that have dense
// layers here, so the rule is ours; a value that leaves no MoE layer is no
// mixture-of-experts model.
static mc_err_t s_read_dense(const mc_gguf_t *g, mc_hparams_t *hp, char *err) {
    const char *arch = hp->arch->name;
    mc_err_t rc;
    if ((rc = s_get_opt(g, arch, "leading_dense_block_count", 0, hp->n_layer, &hp->n_dense_lead, err))) return rc;
    if ((rc = s_get_opt(g, arch, "interleave_moe_layer_step", 1, hp->n_layer, &hp->moe_step, err))) return rc;
    if (hp->moe_step == 0)
        return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s.interleave_moe_layer_step' = 0: a layer step must be 1 or more",
                          arch);
    uint32_t n_moe = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) n_moe += mc_hparams_layer_moe(hp, l);
    if (n_moe == 0)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "leading_dense_block_count %u, interleave_moe_layer_step %u: every layer is dense (%u "
                          "layers), not a mixture-of-experts model",
                          hp->n_dense_lead, hp->moe_step, hp->n_layer);
    if (n_moe < hp->n_layer) hp->ffn_dense = hp->ffn;
    return MC_OK;
}

static mc_err_t s_read_hparams(const mc_gguf_t *g, mc_hparams_t *hp, bool vocab, char *err) {
    mc_gguf_str_t arch_s;
    if (!mc_gguf_get_str(g, "general.architecture", &arch_s))
        return mc_err_set(err, MC_ERR_FORMAT, "metadata key 'general.architecture' is missing");
    hp->arch = mc_arch_find(arch_s.ptr, arch_s.len);
    if (!hp->arch) {
        char shown[32];
        snprintf(shown, sizeof shown, "%.*s", (int)(arch_s.len < 31 ? arch_s.len : 31), arch_s.ptr);
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "architecture '%s' is not supported (supported: %s)", shown,
                          mc_arch_supported());
    }
    const char *arch = hp->arch->name;
    char key[MC_NAME_MAX];
    snprintf(key, sizeof key, "%s.expert_count", arch);
    if (!mc_gguf_find(g, key))
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "not a mixture-of-experts model: metadata key '%s' is missing (dense %s models are not "
                          "supported)",
                          key, arch);
    mc_err_t rc;
    // Limits keep every derived size comfortably inside 64-bit arithmetic.
    if ((rc = s_get_dim(g, arch, "embedding_length", 1u << 16, &hp->dim, err))) return rc;
    if ((rc = s_get_dim(g, arch, "block_count", 1024, &hp->n_layer, err))) return rc;
    if (hp->arch->nextn) {
        // llama.cpp evaluates block_count - nextn_predict_layers layers; the
        // trailing ones are next-token-prediction layers we skip.
        uint32_t nextn;
        if ((rc = s_get_opt(g, arch, "nextn_predict_layers", 0, hp->n_layer - 1, &nextn, err))) return rc;
        hp->n_layer -= nextn;
    }
    if ((rc = s_get_dim(g, arch, "feed_forward_length", 1u << 18, &hp->ffn, err))) return rc;
    hp->moe_step = 1;
    if (hp->arch->dense_lead && (rc = s_read_dense(g, hp, err))) return rc;
    if ((rc = s_get_dim(g, arch, "attention.head_count", 1024, &hp->n_head, err))) return rc;
    if ((rc = s_get_dim(g, arch, "expert_count", 256, &hp->n_expert, err))) return rc;
    if ((rc = s_get_dim(g, arch, "expert_used_count", hp->n_expert, &hp->n_expert_used, err))) return rc;
    if ((rc = s_get_dim(g, arch, "context_length", 1u << 24, &hp->n_ctx_train, err))) return rc;
    if (hp->arch->expert_ffn_key) {
        // llama.cpp's rule when the key is absent: the dense length over k.
        snprintf(key, sizeof key, "%s.expert_feed_forward_length", arch);
        if (mc_gguf_find(g, key)) {
            if ((rc = s_get_dim(g, arch, "expert_feed_forward_length", 1u << 18, &hp->ffn, err))) return rc;
        } else if ((hp->ffn /= hp->n_expert_used) == 0) {
            return mc_err_set(err, MC_ERR_FORMAT, "metadata '%s' is missing and feed_forward_length is below k", key);
        }
    }
    if (hp->arch->shared_expert == MC_SHEXP_COUNT) {
        // llama.cpp's rule: expert_shared_count experts' width (at least one:
        // its graphs compute the shared expert unconditionally).
        uint32_t count;
        if ((rc = s_get_dim(g, arch, "expert_shared_count", 64, &count, err))) return rc;
        if ((uint64_t)count * hp->ffn > (1u << 18))
            return mc_err_set(err, MC_ERR_FORMAT, "%u shared experts of width %u are too wide", count, hp->ffn);
        hp->ffn_shexp = count * hp->ffn;
    } else if (hp->arch->shared_expert == MC_SHEXP_FFN_KEY) {
        // llama.cpp's rule: the dense length when the key is absent.
        snprintf(key, sizeof key, "%s.expert_shared_feed_forward_length", arch);
        if (!mc_gguf_find(g, key)) {
            if ((rc = s_get_dim(g, arch, "feed_forward_length", 1u << 18, &hp->ffn_shexp, err))) return rc;
        } else if ((rc = s_get_dim(g, arch, "expert_shared_feed_forward_length", 1u << 18, &hp->ffn_shexp, err))) {
            return rc;
        }
    }
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    hp->n_head_kv = hp->n_head;
    if (mc_gguf_find(g, key) && (rc = s_get_dim(g, arch, "attention.head_count_kv", hp->n_head, &hp->n_head_kv, err)))
        return rc;
    if (hp->n_head % hp->n_head_kv)
        return mc_err_set(err, MC_ERR_FORMAT, "head_count %u is not a multiple of head_count_kv %u", hp->n_head,
                          hp->n_head_kv);
    if (hp->arch->mla) {
        if ((rc = s_read_mla(g, hp, err))) return rc;
    } else if ((rc = s_read_heads(g, hp, err))) {
        return rc;
    }
    if ((rc = s_read_rope(g, hp, err))) return rc;
    hp->rms_eps = s_get_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f);
    if ((rc = s_read_route(g, hp, err))) return rc;
    if (hp->arch->swa && (rc = s_read_swa(g, hp, err))) return rc;
    if (!(hp->rms_eps > 0) || !isfinite(hp->rms_eps))
        return mc_err_set(err, MC_ERR_FORMAT, "layer_norm_rms_epsilon %g is not a positive number", hp->rms_eps);
    if (!vocab) return MC_OK; // an experts-only file has no embeddings
    const mc_gguf_tensor_t *emb = s_find(g, "token_embd.weight", err);
    if (!emb) return MC_ERR_FORMAT;
    if (emb->n_dims != 2 || emb->ne[1] == 0 || emb->ne[1] > (1u << 22))
        return mc_err_set(err, MC_ERR_FORMAT, "tensor 'token_embd.weight' has a bad shape");
    hp->n_vocab = (uint32_t)emb->ne[1];
    const mc_gguf_value_t *tokens = mc_gguf_find(g, "tokenizer.ggml.tokens");
    if (tokens && (tokens->type != MC_GGUF_ARRAY || tokens->arr.count != hp->n_vocab))
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries but token_embd has %u rows",
                          tokens->type == MC_GGUF_ARRAY ? (unsigned long long)tokens->arr.count : 0ull, hp->n_vocab);
    return MC_OK;
}

// The checked flags when some expert is MXFP4 (mc_model_expert_check).
static mc_err_t s_checked_new(mc_model_t *m, char *err) {
    const mc_hparams_t *hp = &m->hp;
    bool any = false;
    for (uint32_t l = 0; l < hp->n_layer && !any; l++)
        for (uint32_t e = 0; e < hp->n_expert && !any; e++) {
            const mc_expert_t *x = &m->layers[l].experts[e];
            any = x->gate.type == MC_DTYPE_MXFP4 || x->up.type == MC_DTYPE_MXFP4 || x->down.type == MC_DTYPE_MXFP4;
        }
    if (!any) return MC_OK;
    if (!(m->expert_checked = calloc((size_t)hp->n_layer * hp->n_expert, sizeof *m->expert_checked)))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < (size_t)hp->n_layer * hp->n_expert; i++) atomic_init(&m->expert_checked[i], 0);
    return MC_OK;
}

mc_model_t *mc_model_new(mc_gguf_t **pg, char *err) {
    const mc_gguf_t *g = *pg;
    mc_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    mc_hparams_t *hp = &m->hp;
    if (mc_gguf_find(g, MC_MODEL_SOURCE_KEY)) {
        mc_err_set(err, MC_ERR_ARG,
                   "an experts-only file (moe-split's output or an expert node's cache), not a whole model: only "
                   "moe-expert --model takes it");
        goto fail;
    }
    if (s_read_hparams(g, hp, true, err)) goto fail;
    if (s_bind_matrix(g, "token_embd.weight", hp->dim, hp->n_vocab, &m->tok_embd, err)) goto fail;
    if (s_bind_vector(g, "output_norm.weight", hp->dim, &m->output_norm, err)) goto fail;
    if (mc_gguf_tensor_find(g, "output.weight")) {
        if (s_bind_matrix(g, "output.weight", hp->dim, hp->n_vocab, &m->output, err)) goto fail;
    } else {
        m->output = m->tok_embd; // tied embeddings
    }
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        bool legacy = false;
        if (s_bind_layer(g, hp, l, &m->layers[l], &legacy, err)) goto fail;
        m->legacy_experts |= legacy;
    }
    if (s_checked_new(m, err)) goto fail;
    m->gguf = *pg;
    *pg = NULL;
    return m;
fail:
    m->gguf = NULL; // not ours until success
    mc_model_destroy(&m);
    return NULL;
}

// Expert e of layer l's gate, up and down biases from an experts-only file
// (expert_file.h: F32 vectors blk.L.ffn_{gate,up,down}.E.bias, stored as
// they travel), into the layer's per-expert rows as a whole model has them
// (moe.c reads them there), allocated with the layer's first expert: zero
// rows for the experts the file lacks, which a node never computes.
static mc_err_t s_bind_expert_biases(const mc_gguf_t *g, const mc_hparams_t *hp, uint32_t l, uint32_t e, mc_layer_t *L,
                                     char *err) {
    static const char *const part[3] = {"gate", "up", "down"};
    float **rows[3] = {&L->exp_b_gate, &L->exp_b_up, &L->exp_b_down};
    const uint32_t n[3] = {hp->ffn, hp->ffn, hp->dim};
    for (int j = 0; j < 3; j++) {
        char name[MC_NAME_MAX];
        snprintf(name, sizeof name, "blk.%u.ffn_%s.%u.bias", l, part[j], e);
        const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
        if (!t)
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing: every %s expert has gate, up and down biases",
                              name, hp->arch->family);
        if (t->type != MC_DTYPE_F32)
            return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' has type %s: an experts-only file holds expert biases as F32",
                              name, mc_dtype_name(t->type));
        float *v = NULL;
        mc_err_t rc = s_bind_f32_rows(g, name, n[j], 1, &v, err); // shape and finite values
        if (rc) return rc;
        if (!*rows[j] && !(*rows[j] = calloc((size_t)hp->n_expert * n[j], sizeof(float)))) {
            free(v);
            return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        }
        memcpy(*rows[j] + (size_t)e * n[j], v, (size_t)n[j] * sizeof(float));
        free(v);
    }
    return MC_OK;
}

mc_model_t *mc_model_new_experts(mc_gguf_t **pg, char *err) {
    const mc_gguf_t *g = *pg;
    mc_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    mc_hparams_t *hp = &m->hp;
    m->experts_only = m->legacy_experts = true;
    if (!mc_gguf_get_u64(g, MC_MODEL_SOURCE_KEY, &m->source_fingerprint)) {
        mc_err_set(err, MC_ERR_FORMAT, "not an experts-only file: metadata key '%s' is missing or not an integer",
                   MC_MODEL_SOURCE_KEY);
        goto fail;
    }
    if (s_read_hparams(g, hp, false, err)) goto fail;
    if (!(m->layers = calloc(hp->n_layer, sizeof *m->layers))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    char name[MC_NAME_MAX];
    static const char *const part[3] = {"gate", "up", "down"};
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        if (!(m->layers[l].experts = calloc(hp->n_expert, sizeof(mc_expert_t)))) {
            mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            mc_expert_t *x = &m->layers[l].experts[e];
            int have = 0;
            for (int j = 0; j < 3; j++) {
                snprintf(name, sizeof name, "blk.%u.ffn_%s.%u.weight", l, part[j], e);
                have += mc_gguf_tensor_find(g, name) != NULL;
            }
            if (have == 0) continue;
            if (!mc_hparams_layer_moe(hp, l)) {
                mc_err_set(err, MC_ERR_FORMAT, "expert %u of layer %u: layer %u is dense, it has no experts", e, l, l);
                goto fail;
            }
            if (have != 3) {
                mc_err_set(err, MC_ERR_FORMAT, "expert %u of layer %u lacks some of its gate, up and down tensors", e, l);
                goto fail;
            }
            if (s_bind_expert(g, (snprintf(name, sizeof name, "blk.%u.ffn_gate.%u.weight", l, e), name), hp->dim, hp->ffn,
                              &x->gate, err) ||
                s_bind_expert(g, (snprintf(name, sizeof name, "blk.%u.ffn_up.%u.weight", l, e), name), hp->dim, hp->ffn,
                              &x->up, err) ||
                s_bind_expert(g, (snprintf(name, sizeof name, "blk.%u.ffn_down.%u.weight", l, e), name), hp->ffn, hp->dim,
                              &x->down, err))
                goto fail;
            if (hp->arch->expert_ffn_bias && s_bind_expert_biases(g, hp, l, e, &m->layers[l], err)) goto fail;
        }
        // A bias without its expert's weights: not a file moe-split or a
        // node's cache writes.
        for (uint32_t e = 0; e < hp->n_expert; e++)
            for (int j = 0; j < 3 && !m->layers[l].experts[e].gate.data; j++)
                if (mc_gguf_tensor_find(g, (snprintf(name, sizeof name, "blk.%u.ffn_%s.%u.bias", l, part[j], e), name))) {
                    mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is a bias of expert %u of layer %u, which the file lacks",
                               name, e, l);
                    goto fail;
                }
    }
    if (s_checked_new(m, err)) goto fail;
    m->gguf = *pg;
    *pg = NULL;
    return m;
fail:
    m->gguf = NULL;
    mc_model_destroy(&m);
    return NULL;
}

bool mc_model_layer_swa(const mc_model_t *m, uint32_t layer) {
    const mc_hparams_t *hp = &m->hp;
    return hp->n_swa && layer % hp->swa_pattern < hp->swa_pattern - 1;
}

bool mc_model_has_expert(const mc_model_t *m, uint32_t layer, uint32_t e) {
    return layer < m->hp.n_layer && e < m->hp.n_expert && m->layers[layer].experts[e].gate.data != NULL;
}

bool mc_hparams_layer_moe(const mc_hparams_t *hp, uint32_t layer) {
    // A step of 0 (hyperparameters not read from a file) counts as 1.
    return layer < hp->n_layer && layer >= hp->n_dense_lead && (hp->moe_step <= 1 || (layer + 1) % hp->moe_step == 0);
}

bool mc_model_layer_moe(const mc_model_t *m, uint32_t layer) { return mc_hparams_layer_moe(&m->hp, layer); }

static mc_model_t *s_open(const char *path, bool any, char *err) {
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) return NULL;
    char sub[MC_ERR_LEN];
    mc_model_t *m = any && mc_gguf_find(g, MC_MODEL_SOURCE_KEY) ? mc_model_new_experts(&g, sub) : mc_model_new(&g, sub);
    if (!m) {
        mc_err_set(err, MC_ERR_FORMAT, "%s: %s", path, sub);
        mc_gguf_destroy(&g);
    } else if (!(m->path = strdup(path))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        mc_model_destroy(&m);
    }
    return m;
}

mc_model_t *mc_model_open(const char *path, char *err) { return s_open(path, false, err); }
mc_model_t *mc_model_open_node(const char *path, char *err) { return s_open(path, true, err); }

void mc_model_destroy(mc_model_t **pm) {
    if (!pm || !*pm) return;
    mc_model_t *m = *pm;
    if (m->layers)
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            free(m->layers[l].q_norm);
            free(m->layers[l].k_norm);
            free(m->layers[l].bq), free(m->layers[l].bk), free(m->layers[l].bv);
            free(m->layers[l].kv_a_norm), free(m->layers[l].wk_b), free(m->layers[l].wv_b), free(m->layers[l].q_a_norm);
            free(m->layers[l].experts);
            free(m->layers[l].exp_probs_b);
            free(m->layers[l].sinks), free(m->layers[l].bo), free(m->layers[l].router_b);
            free(m->layers[l].exp_b_gate), free(m->layers[l].exp_b_up), free(m->layers[l].exp_b_down);
        }
    free(m->layers);
    free(m->expert_checked);
    free(m->output_norm);
    if (m->packed) munmap(m->packed, m->packed_bytes);
    mc_gguf_destroy(&m->gguf);
    free(m->path);
    free(m);
    *pm = NULL;
}

mc_err_t mc_model_matrix_check(const mc_model_t *m, const mc_matrix_t *w, const uint8_t *bytes, char *err) {
    return s_mxfp4_scan(m->gguf, w, bytes, err);
}

mc_err_t mc_model_expert_check(const mc_model_t *m, uint32_t layer, uint32_t e, char *err) {
    if (!m->expert_checked || layer >= m->hp.n_layer || e >= m->hp.n_expert) return MC_OK;
    atomic_uchar *done = &m->expert_checked[(size_t)layer * m->hp.n_expert + e];
    // Two threads may both scan an expert the first time: the same answer.
    if (atomic_load_explicit(done, memory_order_acquire)) return MC_OK;
    const mc_expert_t *x = &m->layers[layer].experts[e];
    mc_err_t rc;
    if ((rc = s_mxfp4_scan(m->gguf, &x->gate, x->gate.data, err)) || (rc = s_mxfp4_scan(m->gguf, &x->up, x->up.data, err)) ||
        (rc = s_mxfp4_scan(m->gguf, &x->down, x->down.data, err)))
        return rc;
    atomic_store_explicit(done, 1, memory_order_release);
    return MC_OK;
}

mc_err_t mc_model_expert(const mc_model_t *m, uint32_t layer, uint32_t e, mc_expert_t *out) {
    if (layer >= m->hp.n_layer || e >= m->hp.n_expert) return MC_ERR_RANGE;
    *out = m->layers[layer].experts[e];
    return MC_OK;
}

mc_err_t mc_model_embed(const mc_model_t *m, int32_t id, float *out) {
    if (id < 0 || (uint32_t)id >= m->hp.n_vocab) return MC_ERR_RANGE;
    const mc_matrix_t *e = &m->tok_embd;
    return mc_quant_dequantize_row(e->type, e->data + (size_t)id * e->row_bytes, out, e->n_in);
}


uint64_t mc_model_expert_bytes(const mc_model_t *m, uint32_t layer, uint32_t e) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    const uint64_t biases = x->gate.data && m->layers[layer].exp_b_gate ? (2ull * m->hp.ffn + m->hp.dim) * sizeof(float) : 0;
    return mc_matrix_bytes(&x->gate) + mc_matrix_bytes(&x->up) + mc_matrix_bytes(&x->down) + biases;
}

uint64_t mc_model_bytes_per_token(const mc_model_t *m) {
    uint64_t total = mc_matrix_bytes(&m->output);
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const mc_layer_t *L = &m->layers[l];
        total += mc_matrix_bytes(&L->wq) + mc_matrix_bytes(&L->wk) + mc_matrix_bytes(&L->wv) + mc_matrix_bytes(&L->wo) +
                 mc_matrix_bytes(&L->wkv_a) + mc_matrix_bytes(&L->wq_a);
        for (uint32_t h = 0; L->wk_b && h < m->hp.n_head; h++)
            total += mc_matrix_bytes(&L->wk_b[h]) + mc_matrix_bytes(&L->wv_b[h]);
        if (!mc_model_layer_moe(m, l)) {
            total += mc_matrix_bytes(&L->dense.gate) + mc_matrix_bytes(&L->dense.up) + mc_matrix_bytes(&L->dense.down);
            continue;
        }
        total += mc_matrix_bytes(&L->router);
        // Experts of one layer may differ in type (quant mixes): use the mean.
        uint64_t experts = 0;
        for (uint32_t e = 0; e < m->hp.n_expert; e++) experts += mc_model_expert_bytes(m, l, e);
        total += experts * m->hp.n_expert_used / m->hp.n_expert;
        if (L->shexp.gate.data)
            total += mc_matrix_bytes(&L->shexp_gate) + mc_matrix_bytes(&L->shexp.gate) +
                     mc_matrix_bytes(&L->shexp.up) + mc_matrix_bytes(&L->shexp.down);
    }
    return total;
}

uint64_t mc_model_fingerprint(const mc_model_t *m) {
    if (m->experts_only) return m->source_fingerprint;
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a offset basis
    const uint8_t *p = mc_gguf_base(m->gguf);
    uint64_t n = mc_gguf_data_offset(m->gguf), size = mc_gguf_size(m->gguf);
    if (n > size) n = size;
    for (uint64_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    for (int i = 0; i < 8; i++) h = (h ^ ((size >> (8 * i)) & 0xFF)) * 0x100000001b3ull;
    return h;
}

// --- repacking ------------------------------------------------------------------------

static void s_unpack(mc_matrix_t *w, void *ctx);

// The matrices mc_model_repack serves, in a fixed order: calls fn(w, ctx)
// for each (dense: the non-expert ones; held NULL: every expert; an
// attached store's experts only to unpack them).
static void s_each_served(mc_model_t *m, bool dense, const uint8_t *held, void (*fn)(mc_matrix_t *w, void *ctx),
                          void *ctx) {
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        mc_layer_t *L = &m->layers[l];
        if (dense && !L->wkv_a.data) fn(&L->wk, ctx), fn(&L->wv, ctx);
        if (dense && L->wkv_a.data) { // latent attention
            fn(&L->wkv_a, ctx);
            if (L->wq_a.data) fn(&L->wq_a, ctx);
            for (uint32_t h = 0; h < m->hp.n_head; h++) fn(&L->wk_b[h], ctx), fn(&L->wv_b[h], ctx);
        }
        if (dense) fn(&L->wq, ctx), fn(&L->wo, ctx);
        if (dense && L->router.data) fn(&L->router, ctx);
        if (dense && L->shexp_gate.data) fn(&L->shexp_gate, ctx);
        if (dense && L->shexp.gate.data) // the shared expert is dense: the coordinator's
            fn(&L->shexp.gate, ctx), fn(&L->shexp.up, ctx), fn(&L->shexp.down, ctx);
        if (dense && L->dense.gate.data) fn(&L->dense.gate, ctx), fn(&L->dense.up, ctx), fn(&L->dense.down, ctx);
        if (!mc_model_layer_moe(m, l)) continue; // no router, no experts
        for (uint32_t e = 0; e < m->hp.n_expert; e++) {
            if (held && !held[(size_t)l * m->hp.n_expert + e]) continue;
            if (fn != s_unpack && m->store && mc_expert_store_manages(m->store, l, e)) continue; // the store's
            mc_expert_t *x = &L->experts[e];
            fn(&x->gate, ctx), fn(&x->up, ctx), fn(&x->down, ctx);
        }
    }
    if (dense) fn(&m->output, ctx);
}

static void s_unpack(mc_matrix_t *w, void *ctx) {
    (void)ctx;
    w->packed = NULL;
}

// A matrix of a type with an 8-row layout whose kernel (on mm's ISA) reads it.
static bool s_repackable(const mc_matmul_t *mm, const mc_matrix_t *w) {
    if (!mc_kernel_repacks(w->type) || w->n_out < MC_Q4_0X8_ROWS) return false;
    const mc_kernel_t *k = mc_matmul_kernel(mm, w->type);
    return k && k->dot8 && w->n_in % mc_dtype_traits(w->type)->block_elems == 0;
}

// Bytes of w's packed rows, rounded to a cache line.
static size_t s_packed_bytes(const mc_matrix_t *w) {
    const size_t b = (size_t)(w->n_out / MC_Q4_0X8_ROWS) * MC_Q4_0X8_ROWS * w->row_bytes;
    return (b + 63) / 64 * 64;
}

typedef struct {
    const mc_matmul_t *mm;
    uint8_t *buf; // NULL: only count
    size_t used;
    bool release; // the rows are file pages that may be dropped
    size_t page;
    const mc_model_progress_t *progress; // NULL: none
    uint64_t read;                       // bytes of rows read so far
} s_repack_t;

static void s_repack_one(mc_matrix_t *w, void *ctx) {
    s_repack_t *r = ctx;
    if (!s_repackable(r->mm, w)) return;
    if (!r->buf) { // the counting pass
        r->used += s_packed_bytes(w);
        return;
    }
    uint8_t *out = r->buf + r->used;
    const uint32_t groups = w->n_out / MC_Q4_0X8_ROWS;
    const size_t group_bytes = (size_t)MC_Q4_0X8_ROWS * w->row_bytes;
    for (uint32_t g = 0; g < groups; g++)
        mc_kernel_repack8(w->type, w->data + (size_t)g * group_bytes, w->row_bytes, w->n_in,
                          out + (size_t)g * group_bytes);
    w->packed = out;
    r->used += s_packed_bytes(w);
    r->read += (uint64_t)groups * MC_Q4_0X8_ROWS * w->row_bytes;
    if (r->progress) r->progress->fn(r->progress->ctx, r->read);
    if (r->release) {
        // Whole pages inside the repacked rows only: a page shared with a
        // neighbour (another expert, the tail rows) stays.
        const uintptr_t a = (uintptr_t)w->data, z = a + (size_t)groups * MC_Q4_0X8_ROWS * w->row_bytes;
        const uintptr_t start = (a + r->page - 1) / r->page * r->page, end = z / r->page * r->page;
        if (end > start) (void)madvise((void *)start, end - start, MADV_DONTNEED); // advice only
    }
}

mc_err_t mc_model_repack(mc_model_t *m, const mc_matmul_t *mm, bool dense, const uint8_t *held, char *err) {
    return mc_model_repack_progress(m, mm, dense, held, NULL, err);
}

mc_err_t mc_model_repack_progress(mc_model_t *m, const mc_matmul_t *mm, bool dense, const uint8_t *held,
                                  const mc_model_progress_t *progress, char *err) {
    // Forget the previous repacking first: a new placement replaces it.
    s_each_served(m, true, NULL, s_unpack, NULL);
    if (m->packed) munmap(m->packed, m->packed_bytes);
    m->packed = NULL;
    m->packed_bytes = 0;
    s_repack_t r = {.mm = mm, .release = mc_gguf_mapped(m->gguf), .page = (size_t)sysconf(_SC_PAGESIZE)};
    s_each_served(m, dense, held, s_repack_one, &r);
    if (r.used == 0) return MC_OK;
    void *buf = mmap(NULL, r.used, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return mc_err_set(err, MC_ERR_NOMEM, "cannot map %.1f MiB for the repacked weights", r.used / 1048576.0);
    const size_t total = r.used;
    r.buf = buf;
    r.used = 0;
    r.progress = progress;
    s_each_served(m, dense, held, s_repack_one, &r);
    // Read-only from here on, like the file mapping it replaces.
    (void)mprotect(buf, total, PROT_READ);
    m->packed = buf;
    m->packed_bytes = total;
    return MC_OK;
}
