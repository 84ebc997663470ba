/*
 * convert: the conversion is planned completely before a byte is written:
 * config.json gives the hyperparameters, each one checked; from them every
 * source tensor's expected shape follows, and the plan lists the output
 * tensors, each made of one source tensor or, for merged experts, of one
 * per expert stacked on the outer dimension, or, for DeepSeek's kv_b_proj,
 * one per-head part of it (attn_k_b transposed, attn_v_b). A source tensor
 * the plan does not use is an error too (a bias or a shared expert where
 * the family has none, a dense layer: a model variant that would otherwise
 * lose weights silently), but for the next-token-prediction layers, which
 * no runtime evaluates and which are left out whole. Then the metadata
 * and vocabulary are added and the GGUF writer calls back for each tensor's
 * bytes, which are produced row by row: source row to f32 (exact for BF16,
 * F16 and F32), then to the output type with mc_quant_quantize_row.
 * GPT-OSS stores each layer's experts in one tensor, gate and up fused and
 * interleaved: its outputs pick every other row or column of the fused
 * source (s_oss_t), and its MXFP4 blocks are moved, not converted.
 *
 * llama.cpp's "llama" graph rotates adjacent pairs of each head (x0,x1),
 * (x2,x3)... while Hugging Face's Mixtral rotates the two halves (x_i,
 * x_{i+d/2}); so for Mixtral the rows of each Q and K head are reordered,
 * row 2i from row i and row 2i+1 from row i+d/2. Qwen3-MoE, OLMoE,
 * Qwen2-MoE and GLM-4.5 use the halves convention in llama.cpp as well
 * (NEOX) and keep their order; DeepSeek's graph rotates adjacent pairs and
 * its Hugging Face code does too (it reorders q_pe and k_pe on the fly), so
 * its rows stay as they are.
 */
#include "convert.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "file.h"
#include "gguf_writer.h"
#include "quant.h"
#include "safetensors.h"
#include "sentencepiece_model.pb-c.h"

#define S_PATH_MAX 4096
#define S_MAX_CONFIG (16u << 20)
#define S_MAX_TOKENIZER_JSON (512u << 20)
#define S_MAX_SPM (256u << 20)
#define S_MAX_PIECE 65535u

// --- architectures --------------------------------------------------------------

typedef enum { S_MIXTRAL, S_QWEN3MOE, S_OLMOE, S_QWEN2MOE, S_GLM4MOE, S_DEEPSEEK, S_GPTOSS } s_arch_id_t;

// The Hugging Face side of a family (config keys, tensor names) is here;
// what its GGUF looks like (RoPE pairing, q/k norms, expert FFN key,
// vocabulary kind) comes from the engine's own table (common/arch.h).
typedef struct {
    const char *hf;      // config.json "architectures"[0]
    mc_arch_t family;
    s_arch_id_t id;
} s_arch_t;

static const s_arch_t s_archs[] = {
    {"MixtralForCausalLM", MC_ARCH_LLAMA, S_MIXTRAL},
    {"Qwen3MoeForCausalLM", MC_ARCH_QWEN3MOE, S_QWEN3MOE},
    {"OlmoeForCausalLM", MC_ARCH_OLMOE, S_OLMOE},
    {"Qwen2MoeForCausalLM", MC_ARCH_QWEN2MOE, S_QWEN2MOE},
    {"Glm4MoeForCausalLM", MC_ARCH_GLM4MOE, S_GLM4MOE},
    // V3 (and R1) differ from V2 only in config values: sigmoid scores, a
    // selection bias, groups, a compressed query.
    {"DeepseekV2ForCausalLM", MC_ARCH_DEEPSEEK2, S_DEEPSEEK},
    {"DeepseekV3ForCausalLM", MC_ARCH_DEEPSEEK2, S_DEEPSEEK},
    {"GptOssForCausalLM", MC_ARCH_GPTOSS, S_GPTOSS},
};

const char *mc_convert_architectures(void) {
    return "MixtralForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM, Qwen2MoeForCausalLM, Glm4MoeForCausalLM, "
           "DeepseekV2ForCausalLM, DeepseekV3ForCausalLM, GptOssForCausalLM";
}

mc_convert_params_t mc_convert_params_default(void) {
    return (mc_convert_params_t){.type_auto = true, .type = MC_DTYPE_F16, .name = NULL, .log = NULL};
}

// --- files ------------------------------------------------------------------------

static mc_err_t s_join(char *out, const char *dir, const char *name, char *err) {
    int k = snprintf(out, S_PATH_MAX, "%s/%s", dir, name);
    if (k < 0 || k >= S_PATH_MAX) return mc_err_set(err, MC_ERR_ARG, "%s/%s: path too long", dir, name);
    return MC_OK;
}

static bool s_exists(const char *dir, const char *name) {
    char path[S_PATH_MAX];
    struct stat sb;
    return s_join(path, dir, name, NULL) == MC_OK && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

// The whole of dir/name (NUL-terminated) when at most cap bytes.
static mc_err_t s_read_file(const char *dir, const char *name, size_t cap, char **out, size_t *len, char *err) {
    char path[S_PATH_MAX];
    mc_err_t rc = s_join(path, dir, name, err);
    return rc ? rc : mc_file_read(path, cap, out, len, err);
}

// dir/name parsed as a JSON object; *out stays NULL when the file is absent and optional.
static mc_err_t s_read_json(const char *dir, const char *name, size_t cap, bool required, cJSON **out, char *err) {
    if (!required && !s_exists(dir, name)) return MC_OK;
    char *text;
    size_t len;
    mc_err_t rc = s_read_file(dir, name, cap, &text, &len, err);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return mc_err_set(err, MC_ERR_FORMAT, "%s: not a JSON object", name);
    }
    *out = j;
    return MC_OK;
}

// --- config.json --------------------------------------------------------------------

typedef struct {
    uint32_t n_vocab, dim, n_layer, n_head, n_head_kv, head_dim;
    uint32_t ffn;     // intermediate_size (feed_forward_length)
    uint32_t ffn_exp; // one expert's hidden size
    uint32_t ffn_shexp; // the shared expert's hidden size (families with one)
    uint32_t n_expert, n_expert_used, ctx;
    float rope_base, rms_eps;
    bool head_dim_given; // config.json set head_dim: written as key/value length
    bool tied, norm_topk;
    bool norm_topk_given; // norm_topk_prob is in config.json
    bool qkv_bias;        // q/k/v projections carry biases
    bool qk_norm;         // per-head q/k norms (GLM-4.5's use_qk_norm)
    // GLM-4.5 and DeepSeek (s_read_v3_hparams).
    uint32_t n_dense;     // leading dense layers, ffn wide (first_k_dense_replace, s_read_dense_layers)
    uint32_t moe_step;    // then layer l is MoE iff (l + 1) % moe_step == 0 (model.h: mc_hparams_layer_moe)
    uint32_t n_nextn;     // num_nextn_predict_layers: trailing MTP layers, skipped
    uint32_t n_shared;    // n_shared_experts: ffn_shexp = n_shared x ffn_exp
    uint32_t n_group, n_group_used; // n_group, topk_group; 0: not in config.json
    uint32_t gating;      // <arch>.expert_gating_func; 0: not written
    bool has_scale;
    float scale;          // routed_scaling_factor
    uint32_t rope_dim;    // rope.dimension_count; 0: not written
    // Multi-head latent attention (DeepSeek): head_dim = nope + rope_dim.
    uint32_t q_lora, kv_lora, nope, head_dim_v; // q_lora 0: attn_q directly
    // YaRN (rope_scaling type "yarn").
    bool yarn, has_attn_factor, has_log_mul, has_beta_fast, has_beta_slow;
    float yarn_factor, attn_factor, log_mul, beta_fast, beta_slow;
    uint32_t yarn_orig_ctx;
    // GPT-OSS (s_read_oss_hparams).
    uint32_t n_swa; // sliding_window
    bool mxfp4;     // quantization_config says mxfp4: the experts come as blocks and scales
} s_hp_t;

static const cJSON *s_get(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsNull(v) ? NULL : v;
}

// A whole number in lo..hi; absent: def, or an error when def < 0.
static mc_err_t s_cfg_u32(const cJSON *cfg, const char *key, int64_t def, uint32_t lo, uint32_t hi, uint32_t *out,
                          char *err) {
    const cJSON *v = s_get(cfg, key);
    if (!v) {
        if (def < 0) return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s' is missing", key);
        *out = (uint32_t)def;
        return MC_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= lo && d <= hi) || d != floor(d))
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s' must be a whole number in %u..%u", key, lo, hi);
    *out = (uint32_t)d;
    return MC_OK;
}

// A finite number > 0 (rope_theta, rms_norm_eps); required.
static mc_err_t s_cfg_pos(const cJSON *cfg, const char *key, float *out, char *err) {
    const cJSON *v = s_get(cfg, key);
    if (!v) return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s' is missing", key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d > 0) || !isfinite((float)d) || (float)d <= 0)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s' must be a positive number", key);
    *out = (float)d;
    return MC_OK;
}

// A finite number in lo..hi; *has false (and *out untouched) when absent.
static mc_err_t s_cfg_f32(const cJSON *o, const char *where, const char *key, double lo, double hi, bool *has,
                          float *out, char *err) {
    const cJSON *v = s_get(o, key);
    *has = v != NULL;
    if (!v) return MC_OK;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi))
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s%s' must be a number in %g..%g", where, key, lo, hi);
    *out = (float)d;
    return MC_OK;
}

static mc_err_t s_cfg_bool(const cJSON *cfg, const char *key, bool def, bool *out, char *err) {
    const cJSON *v = s_get(cfg, key);
    if (!v) {
        *out = def;
        return MC_OK;
    }
    if (!cJSON_IsBool(v)) return mc_err_set(err, MC_ERR_FORMAT, "config.json: '%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return MC_OK;
}

static mc_err_t s_find_arch(const cJSON *cfg, const s_arch_t **out, char *err) {
    const cJSON *archs = s_get(cfg, "architectures");
    const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (!cJSON_IsString(first))
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: 'architectures' is missing or not a list of names (supported: %s)",
                          mc_convert_architectures());
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (!strcmp(first->valuestring, s_archs[i].hf)) {
            *out = &s_archs[i];
            return MC_OK;
        }
    return mc_err_set(err, MC_ERR_UNSUPPORTED, "architecture '%.64s' is not supported (supported: %s)", first->valuestring,
                      mc_convert_architectures());
}

static bool s_v3_family(const s_arch_t *a) { return a->id == S_GLM4MOE || a->id == S_DEEPSEEK; }

// Families whose rope_scaling is read (YaRN, s_read_yarn).
static bool s_yarn_family(const s_arch_t *a) { return s_v3_family(a) || a->id == S_GPTOSS; }

// Switches of variants this converter does not map must be off.
static mc_err_t s_check_variants(const cJSON *cfg, const s_arch_t *a, char *err) {
    // GPT-OSS's own checkpoints say mxfp4 (s_read_oss_hparams); any other
    // quantized checkpoint would be read as floats it is not.
    const cJSON *qc = s_get(cfg, "quantization_config");
    if (qc && a->id != S_GPTOSS)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "config.json: quantization_config is set (FP8 or other quantized checkpoints are not "
                          "converted: dequantize to BF16 first)");
    const cJSON *rs = s_yarn_family(a) ? NULL : s_get(cfg, "rope_scaling"); // GLM, DeepSeek, GPT-OSS: s_read_yarn
    if (rs && !(cJSON_IsObject(rs) && !rs->child))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: rope_scaling is not supported (only plain RoPE)");
    const cJSON *rp = s_get(cfg, "rope_parameters"), *rt = s_yarn_family(a) ? NULL : s_get(rp, "rope_type");
    if (rt && !(cJSON_IsString(rt) && !strcmp(rt->valuestring, "default")))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: rope_parameters.rope_type is not supported (only \"default\")");
    bool b;
    mc_err_t rc = s_cfg_bool(cfg, "attention_bias", a->id == S_GPTOSS, &b, err);
    if (rc) return rc;
    // GPT-OSS's attention always has its biases (its runtime requires the output one).
    if (!b && a->id == S_GPTOSS)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: attention_bias false is not supported for GPT-OSS");
    if (b && !mc_arch_get(a->family)->qkv_bias)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: attention_bias is not supported");
    if (a->id == S_QWEN3MOE) { // Qwen2-MoE's dense layers: s_read_dense_layers
        uint32_t step;
        if ((rc = s_cfg_u32(cfg, "decoder_sparse_step", 1, 0, UINT32_MAX, &step, err))) return rc;
        const cJSON *dense = s_get(cfg, "mlp_only_layers");
        if (step != 1 || (dense && !(cJSON_IsArray(dense) && !dense->child)))
            return mc_err_set(err, MC_ERR_UNSUPPORTED,
                              "config.json: dense layers (decoder_sparse_step != 1 or mlp_only_layers) are not supported");
    }
    if (a->id == S_QWEN2MOE) {
        if ((rc = s_cfg_bool(cfg, "use_sliding_window", false, &b, err))) return rc;
        if (b) return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: use_sliding_window is not supported");
    }
    if (a->id == S_OLMOE && s_get(cfg, "clip_qkv"))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: clip_qkv is not supported");
    return MC_OK;
}

// RoPE scaling of GLM-4.5 and DeepSeek: none, or YaRN, written as
// llama.cpp's converter writes it. The engine (model.c) uses YaRN's ramp
// with beta_fast 32 and beta_slow 1 and full extrapolation, so other values
// are refused rather than written and then ignored.
static mc_err_t s_read_yarn(const cJSON *cfg, const s_arch_t *a, s_hp_t *hp, char *err) {
    const cJSON *rs = s_get(cfg, "rope_parameters");
    if (!rs) rs = s_get(cfg, "rope_scaling");
    if (rs && !cJSON_IsObject(rs)) return mc_err_set(err, MC_ERR_FORMAT, "config.json: rope_scaling is not an object");
    const cJSON *type = s_get(rs, "rope_type");
    if (!type) type = s_get(rs, "type");
    if (!type || (cJSON_IsString(type) && !strcmp(type->valuestring, "default"))) return MC_OK;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "yarn") != 0)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: rope_scaling type '%.32s' is not supported (only yarn)",
                          cJSON_IsString(type) ? type->valuestring : "?");
    const char *w = "rope_scaling.";
    bool has;
    mc_err_t rc;
    if ((rc = s_cfg_f32(rs, w, "factor", 1.0, 1e6, &has, &hp->yarn_factor, err))) return rc;
    if (!has) return mc_err_set(err, MC_ERR_FORMAT, "config.json: rope_scaling is yarn but has no factor");
    hp->yarn = true;
    const cJSON *orig = s_get(rs, "original_max_position_embeddings") ? rs : cfg;
    if ((rc = s_cfg_u32(orig, "original_max_position_embeddings", -1, 1, 1u << 24, &hp->yarn_orig_ctx, err))) return rc;
    if ((rc = s_cfg_f32(rs, w, "attention_factor", 1e-6, 1e3, &hp->has_attn_factor, &hp->attn_factor, err))) return rc;
    if (!hp->has_attn_factor &&
        (rc = s_cfg_f32(rs, w, "attn_factor", 1e-6, 1e3, &hp->has_attn_factor, &hp->attn_factor, err)))
        return rc;
    float ext = 1.0f;
    if ((rc = s_cfg_f32(rs, w, "extrapolation_factor", -1e3, 1e3, &has, &ext, err))) return rc;
    if ((rc = s_cfg_f32(rs, w, "beta_fast", -1e6, 1e6, &hp->has_beta_fast, &hp->beta_fast, err))) return rc;
    if ((rc = s_cfg_f32(rs, w, "beta_slow", -1e6, 1e6, &hp->has_beta_slow, &hp->beta_slow, err))) return rc;
    // GPT-OSS says "truncate": false (its reference keeps the correction
    // range's ends fractional); llama.cpp's converter ignores the switch and
    // its YaRN, like the engine's, always rounds them, so either is taken.
    const cJSON *trunc = s_get(rs, "truncate");
    if (trunc && !cJSON_IsBool(trunc))
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: 'rope_scaling.truncate' must be true or false");
    if (ext != 1.0f || (hp->has_beta_fast && hp->beta_fast != 32.0f) || (hp->has_beta_slow && hp->beta_slow != 1.0f))
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "config.json: rope_scaling with extrapolation_factor %g, beta_fast %g, beta_slow %g is not "
                          "supported (the engine's YaRN uses 1, 32 and 1)",
                          ext, hp->has_beta_fast ? hp->beta_fast : 32.0f, hp->has_beta_slow ? hp->beta_slow : 1.0f);
    // DeepSeek's attention scale: llama.cpp's converter writes 0.1 x mscale_all_dim.
    if (a->id == S_DEEPSEEK && (rc = s_cfg_f32(rs, w, "mscale_all_dim", 0, 1e3, &hp->has_log_mul, &hp->log_mul, err)))
        return rc;
    // In double, then rounded, as llama.cpp's Python computes it.
    if (hp->has_log_mul) hp->log_mul = (float)(0.1 * s_get(rs, "mscale_all_dim")->valuedouble);
    return MC_OK;
}

// What GLM-4.5 and DeepSeek add: dense leading layers, next-token-prediction
// layers (skipped), shared experts, the routing's keys, RoPE dims and
// scaling, and DeepSeek's latent attention. Checked as model.c checks the
// GGUF keys, so a folder that converts also loads.
static mc_err_t s_read_v3_hparams(const cJSON *cfg, const s_arch_t *a, s_hp_t *hp, char *err) {
    mc_err_t rc;
    if ((rc = s_cfg_u32(cfg, "first_k_dense_replace", 0, 0, hp->n_layer - 1, &hp->n_dense, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "num_nextn_predict_layers", 0, 0, 16, &hp->n_nextn, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "n_shared_experts", -1, 1, 64, &hp->n_shared, err))) return rc;
    if ((uint64_t)hp->n_shared * hp->ffn_exp > (1u << 18))
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: %u shared experts of width %u are too wide", hp->n_shared,
                          hp->ffn_exp);
    hp->ffn_shexp = hp->n_shared * hp->ffn_exp;
    // Groups: consecutive experts in n_group equal groups, topk_group kept.
    if ((rc = s_cfg_u32(cfg, "n_group", 0, 1, hp->n_expert, &hp->n_group, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "topk_group", 0, 1, hp->n_expert, &hp->n_group_used, err))) return rc;
    if (hp->n_group > 1) {
        const uint32_t per = hp->n_expert / hp->n_group;
        if (hp->n_expert % hp->n_group)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: n_group %u does not divide the %u experts into equal groups",
                              hp->n_group, hp->n_expert);
        if (per < 2)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: n_group %u leaves fewer than 2 of the %u experts per group",
                              hp->n_group, hp->n_expert);
        if (hp->n_group_used == 0 || hp->n_group_used >= hp->n_group)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: topk_group %u must be in 1..%u (below n_group %u)",
                              hp->n_group_used, hp->n_group - 1, hp->n_group);
        if ((uint64_t)hp->n_group_used * per < hp->n_expert_used)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: topk_group %u groups of %u experts cannot hold the %u "
                              "experts each token uses", hp->n_group_used, per, hp->n_expert_used);
    }
    // Scores: GLM-4.5 is always sigmoid; DeepSeek says so (V2: softmax, V3: sigmoid).
    hp->gating = a->id == S_GLM4MOE ? MC_GATING_SIGMOID : 0;
    const cJSON *sf = s_get(cfg, "scoring_func");
    if (a->id == S_DEEPSEEK && sf) {
        if (cJSON_IsString(sf) && !strcmp(sf->valuestring, "softmax")) hp->gating = MC_GATING_SOFTMAX;
        else if (cJSON_IsString(sf) && !strcmp(sf->valuestring, "sigmoid")) hp->gating = MC_GATING_SIGMOID;
        else
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: scoring_func '%.32s' is not supported (softmax or "
                              "sigmoid)", cJSON_IsString(sf) ? sf->valuestring : "?");
    }
    if ((rc = s_cfg_f32(cfg, "", "routed_scaling_factor", 1e-6, 1e4, &hp->has_scale, &hp->scale, err))) return rc;
    if ((rc = s_read_yarn(cfg, a, hp, err))) return rc;
    if (a->id == S_GLM4MOE) {
        // Partial RoPE: the first head_dim x partial_rotary_factor values of
        // each head (halves), 0.5 when unset, as llama.cpp converts it.
        const cJSON *rp = s_get(cfg, "rope_parameters");
        const cJSON *o = s_get(cfg, "partial_rotary_factor") || !s_get(rp, "partial_rotary_factor") ? cfg : rp;
        float prf = 0.5f;
        bool has;
        if ((rc = s_cfg_f32(o, "", "partial_rotary_factor", 1e-6, 1.0, &has, &prf, err))) return rc;
        hp->rope_dim = (uint32_t)((double)hp->head_dim * prf);
        if (hp->rope_dim < 2 || hp->rope_dim % 2)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: head_dim %u x partial_rotary_factor %g gives %u RoPE "
                              "dims (must be even and at least 2)", hp->head_dim, prf, hp->rope_dim);
        bool qk;
        if ((rc = s_cfg_bool(cfg, "use_qk_norm", false, &qk, err))) return rc;
        hp->qk_norm = qk;
        return MC_OK;
    }
    // DeepSeek's latent attention: a query head is nope + rope values, a
    // value head v; keys and values come from one latent of kv_lora_rank.
    // null (V2-Lite) or 0: the query directly.
    if ((rc = s_cfg_u32(cfg, "q_lora_rank", 0, 0, 1u << 14, &hp->q_lora, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "kv_lora_rank", -1, 1, 1u << 14, &hp->kv_lora, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "qk_nope_head_dim", -1, 1, 2048, &hp->nope, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "qk_rope_head_dim", -1, 2, 2048, &hp->rope_dim, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "v_head_dim", -1, 1, 4096, &hp->head_dim_v, err))) return rc;
    if (hp->rope_dim % 2)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: qk_rope_head_dim %u is odd (RoPE rotates pairs)", hp->rope_dim);
    hp->head_dim = hp->nope + hp->rope_dim;
    return MC_OK;
}

static bool s_layer_moe(const s_hp_t *hp, uint32_t l) {
    return l >= hp->n_dense && (hp->moe_step <= 1 || (l + 1) % hp->moe_step == 0);
}

// Which layers are MoE, as Hugging Face's modelling code decides: Qwen2-MoE
// by decoder_sparse_step ((l + 1) % step == 0) less mlp_only_layers,
// DeepSeek by first_k_dense_replace and moe_layer_freq (l % freq == 0).
// Written as the leading count and step of the GGUF keys (the smallest step
// that gives exactly those layers); a pattern they cannot say is refused.
static mc_err_t s_read_dense_layers(const cJSON *cfg, const s_arch_t *a, s_hp_t *hp, char *err) {
    hp->moe_step = 1;
    if (a->id != S_QWEN2MOE && a->id != S_DEEPSEEK) return MC_OK;
    const uint32_t n = hp->n_layer;
    const char *what = a->id == S_DEEPSEEK ? "first_k_dense_replace and moe_layer_freq"
                                           : "decoder_sparse_step and mlp_only_layers";
    bool *moe = calloc(n, sizeof *moe);
    if (!moe) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    uint32_t step;
    mc_err_t rc = s_cfg_u32(cfg, a->id == S_DEEPSEEK ? "moe_layer_freq" : "decoder_sparse_step", 1, 1, n, &step, err);
    for (uint32_t l = 0; l < n && !rc; l++)
        moe[l] = a->id == S_DEEPSEEK ? l >= hp->n_dense && l % step == 0 : (l + 1) % step == 0;
    const cJSON *only = a->id == S_QWEN2MOE ? s_get(cfg, "mlp_only_layers") : NULL, *x;
    if (!rc && only && !cJSON_IsArray(only))
        rc = mc_err_set(err, MC_ERR_FORMAT, "config.json: 'mlp_only_layers' is not a list");
    cJSON_ArrayForEach(x, only) {
        if (rc) break;
        if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble < n) || x->valuedouble != floor(x->valuedouble))
            rc = mc_err_set(err, MC_ERR_FORMAT, "config.json: 'mlp_only_layers' holds a value that is not a layer in 0..%u",
                            n - 1);
        else
            moe[(uint32_t)x->valuedouble] = false;
    }
    uint32_t first = 0;
    while (!rc && first < n && !moe[first]) first++;
    if (!rc && first == n)
        rc = mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: %s leave no MoE layer among the %u", what, n);
    bool fit = false;
    for (uint32_t s = 1; !rc && s <= n && !fit; s++) {
        hp->n_dense = first, hp->moe_step = s, fit = true;
        for (uint32_t l = 0; l < n && fit; l++) fit = moe[l] == s_layer_moe(hp, l);
    }
    free(moe);
    if (!rc && !fit)
        rc = mc_err_set(err, MC_ERR_UNSUPPORTED,
                        "config.json: %s make a pattern of dense layers that leading_dense_block_count and "
                        "interleave_moe_layer_step cannot say",
                        what);
    return rc;
}

// What GPT-OSS adds: the sliding window (on the even layers, as the engine
// and llama.cpp's graph place it: layer_types, when given, must say so),
// YaRN, the clamped SwiGLU's limit (the engine's is 7) and whether the
// experts are MXFP4 (quantization_config) or floats.
static mc_err_t s_read_oss_hparams(const cJSON *cfg, const s_arch_t *a, s_hp_t *hp, char *err) {
    mc_err_t rc;
    if ((rc = s_cfg_u32(cfg, "sliding_window", -1, 1, 1u << 24, &hp->n_swa, err))) return rc;
    const cJSON *lt = s_get(cfg, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || (uint32_t)cJSON_GetArraySize(lt) != hp->n_layer)
            return mc_err_set(err, MC_ERR_FORMAT, "config.json: 'layer_types' is not a list of num_hidden_layers (%u) "
                              "names", hp->n_layer);
        uint32_t l = 0;
        for (const cJSON *e = lt->child; e; e = e->next, l++) {
            const char *want = l % 2 == 0 ? "sliding_attention" : "full_attention";
            if (!cJSON_IsString(e) || strcmp(e->valuestring, want) != 0)
                return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: layer_types[%u] is '%.32s' (only %s on even "
                                  "layers and full_attention on odd ones is supported)", l,
                                  cJSON_IsString(e) ? e->valuestring : "?", "sliding_attention");
        }
    }
    bool has;
    float limit = 7.0f;
    if ((rc = s_cfg_f32(cfg, "", "swiglu_limit", 0, 1e6, &has, &limit, err))) return rc;
    if (limit != 7.0f)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: swiglu_limit %g is not supported (the engine clamps at 7)",
                          limit);
    const cJSON *act = s_get(cfg, "hidden_act");
    if (act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "silu")))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: hidden_act '%.32s' is not supported (silu)",
                          cJSON_IsString(act) ? act->valuestring : "?");
    // Both names are in the wild (GPT-OSS's own config has both).
    uint32_t used;
    if ((rc = s_cfg_u32(cfg, "experts_per_token", hp->n_expert_used, 1, hp->n_expert, &used, err))) return rc;
    if (used != hp->n_expert_used)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: experts_per_token %u and num_experts_per_tok %u differ", used,
                          hp->n_expert_used);
    const cJSON *qc = s_get(cfg, "quantization_config");
    if (qc) {
        const cJSON *m = s_get(qc, "quant_method");
        if (!cJSON_IsString(m) || strcmp(m->valuestring, "mxfp4") != 0)
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "config.json: quantization_config.quant_method '%.32s' is not "
                              "supported (GPT-OSS: mxfp4, or no quantization_config for float experts)",
                              cJSON_IsString(m) ? m->valuestring : "?");
        hp->mxfp4 = true;
    }
    if (hp->dim % MC_QK || hp->ffn_exp % MC_QK)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: hidden_size %u and intermediate_size %u must be multiples of "
                          "%u (MXFP4 blocks)", hp->dim, hp->ffn_exp, MC_QK);
    return s_read_yarn(cfg, a, hp, err);
}

static mc_err_t s_read_hparams(const cJSON *cfg, const s_arch_t *a, s_hp_t *hp, char *err) {
    mc_err_t rc;
    if ((rc = s_check_variants(cfg, a, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "vocab_size", -1, 1, 1u << 23, &hp->n_vocab, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "hidden_size", -1, 1, 1u << 17, &hp->dim, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "num_hidden_layers", -1, 1, 4096, &hp->n_layer, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "num_attention_heads", -1, 1, 4096, &hp->n_head, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "num_key_value_heads", hp->n_head, 1, hp->n_head, &hp->n_head_kv, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "intermediate_size", -1, 1, 1u << 20, &hp->ffn, err))) return rc;
    const char *ne_key = a->id == S_MIXTRAL || a->id == S_GPTOSS ? "num_local_experts"
                         : s_v3_family(a)                         ? "n_routed_experts"
                                                                  : "num_experts";
    if ((rc = s_cfg_u32(cfg, ne_key, -1, 1, 4096, &hp->n_expert, err))) return rc;
    // GPT-OSS's config may name it experts_per_token only.
    const char *nu_key = a->id == S_GPTOSS && !s_get(cfg, "num_experts_per_tok") ? "experts_per_token" : "num_experts_per_tok";
    if ((rc = s_cfg_u32(cfg, nu_key, -1, 1, hp->n_expert, &hp->n_expert_used, err))) return rc;
    if ((rc = s_cfg_u32(cfg, "max_position_embeddings", -1, 1, 1u << 26, &hp->ctx, err))) return rc;
    if (s_get(cfg, "rope_theta") || !s_get(s_get(cfg, "rope_parameters"), "rope_theta")) {
        if ((rc = s_cfg_pos(cfg, "rope_theta", &hp->rope_base, err))) return rc;
    } else if ((rc = s_cfg_pos(s_get(cfg, "rope_parameters"), "rope_theta", &hp->rope_base, err))) {
        return rc;
    }
    if ((rc = s_cfg_pos(cfg, "rms_norm_eps", &hp->rms_eps, err))) return rc;
    hp->head_dim_given = s_get(cfg, "head_dim") != NULL;
    if (a->id == S_DEEPSEEK) {
        // Latent attention's heads come from their own keys (s_read_v3_hparams).
        hp->head_dim_given = false;
    } else if (!hp->head_dim_given && hp->dim % hp->n_head)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: hidden_size %u is not a multiple of num_attention_heads %u",
                          hp->dim, hp->n_head);
    if (a->id != S_DEEPSEEK && (rc = s_cfg_u32(cfg, "head_dim", hp->dim / hp->n_head, 2, 4096, &hp->head_dim, err)))
        return rc;
    if (a->id != S_DEEPSEEK && hp->head_dim % 2)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: the head dimension %u is odd (RoPE rotates pairs)",
                          hp->head_dim);
    if (hp->n_head % hp->n_head_kv)
        return mc_err_set(err, MC_ERR_FORMAT, "config.json: num_attention_heads %u is not a multiple of num_key_value_heads %u",
                          hp->n_head, hp->n_head_kv);
    hp->ffn_exp = hp->ffn;
    if ((a->id == S_QWEN3MOE || a->id == S_QWEN2MOE || s_v3_family(a)) &&
        (rc = s_cfg_u32(cfg, "moe_intermediate_size", -1, 1, 1u << 20, &hp->ffn_exp, err)))
        return rc;
    if (mc_arch_get(a->family)->shared_expert == MC_SHEXP_FFN_KEY &&
        (rc = s_cfg_u32(cfg, "shared_expert_intermediate_size", -1, 1, 1u << 20, &hp->ffn_shexp, err)))
        return rc;
    if ((rc = s_cfg_bool(cfg, "tie_word_embeddings", false, &hp->tied, err))) return rc;
    hp->norm_topk_given = s_get(cfg, "norm_topk_prob") != NULL;
    if ((rc = s_cfg_bool(cfg, "norm_topk_prob", false, &hp->norm_topk, err))) return rc;
    // Qwen2-MoE always has q/k/v biases (its config has no switch for them).
    bool bias;
    if ((rc = s_cfg_bool(cfg, "attention_bias", false, &bias, err))) return rc;
    hp->qkv_bias = mc_arch_get(a->family)->qkv_bias && (a->id == S_QWEN2MOE || a->id == S_GPTOSS || bias);
    hp->qk_norm = mc_arch_get(a->family)->qk_norm != MC_QKNORM_NONE;
    if (a->id == S_GPTOSS && (rc = s_read_oss_hparams(cfg, a, hp, err))) return rc;
    if (s_v3_family(a) && (rc = s_read_v3_hparams(cfg, a, hp, err))) return rc;
    return s_read_dense_layers(cfg, a, hp, err);
}

// --- the plan ---------------------------------------------------------------------------

typedef enum {
    S_CLS_EMBD, S_CLS_ATTN, S_CLS_NORM, S_CLS_ROUTER, S_CLS_EXPERTS, S_CLS_SHARED, S_CLS_DENSE, S_CLS_OUTPUT, S_CLS_N
} s_cls_t;

static const char *const s_cls_name[S_CLS_N] = {"token embedding", "attention",     "norms",     "router",
                                                "experts",         "shared expert", "dense FFN", "output"};

// A part of DeepSeek's kv_b_proj, whose rows are per head nope key rows
// then v value rows, each of kv_lora_rank values.
typedef enum {
    S_KVB_NONE = 0,
    S_KVB_K, // attn_k_b {nope, kv_lora, n_head}: each head's key rows transposed
    S_KVB_V, // attn_v_b {kv_lora, v, n_head}: each head's value rows as they are
} s_kvb_t;

// How GPT-OSS's experts and their biases are laid out in Hugging Face's
// files: all experts of a layer in one tensor, the gate and up projections
// fused into one gate_up with gate and up interleaved (gate rows, or
// columns, 0, 2, 4...; up 1, 3, 5...).
typedef enum {
    S_OSS_NONE = 0,
    // Biases: output row e is every other value (pick) of source row e, or
    // the whole row (down_proj_bias).
    S_OSS_COLS,
    // Float experts, [E, in, out] (x @ W): output row (e, j) is source
    // column j (or 2j / 2j+1 with pick) of expert e, gathered through a
    // transposed copy of the expert.
    S_OSS_T,
    // MXFP4 experts: blocks [E, rows, in/32, 16] and scales [E, rows, in/32]
    // (two sources), output row (e, r) from source row r (or 2r / 2r+1),
    // each block's 32 nibbles re-laid in GGUF's order with its scale byte.
    S_OSS_MXFP4,
} s_oss_t;

typedef struct {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[3];         // GGUF order (ne[0] contiguous); unused dims 1
    mc_dtype_t type;
    bool fallback;          // rows not a whole number of blocks of the requested type
    s_cls_t cls;
    uint32_t permute_heads; // Q/K rows reordered within each of this many heads (0: none)
    size_t src0, n_src;     // source tensors plan.srcs[src0 ..], stacked along ne[2]
    s_kvb_t kvb;            // a part of one kv_b_proj source (n_src 1, ne[2] heads)
    uint32_t nope, vdim;    // kv_b_proj's per-head key and value rows
    s_oss_t oss;            // a GPT-OSS expert tensor from its fused source
    uint8_t pick;           // interleaved gate_up: 0 all, 1 gate (even), 2 up (odd)
} s_out_t;

typedef struct {
    const mc_safetensors_dir_t *dir;
    bool *used; // per source tensor
    bool mxfp4_kept; // some experts are copied as MXFP4 blocks (file type)
    mc_dtype_t want;
    s_out_t *outs;
    size_t n_outs, cap_outs;
    size_t *srcs;
    size_t n_srcs, cap_srcs;
} s_plan_t;

static void s_plan_free(s_plan_t *pl) {
    free(pl->used);
    free(pl->outs);
    free(pl->srcs);
    *pl = (s_plan_t){0};
}

static void s_fmt_shape(char *buf, size_t cap, const uint64_t *shape, uint32_t n) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < n && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

// Find source tensor `name` of shape want[0..nd) and take it: floats, or
// bytes (U8) when u8.
static mc_err_t s_src_nd(s_plan_t *pl, const char *name, uint32_t nd, const uint64_t *want, bool u8, const char *dims,
                         char *err) {
    size_t i = mc_safetensors_dir_find(pl->dir, name);
    if (i == SIZE_MAX) return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is missing", name);
    const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(pl->dir, i);
    bool same = t->n_dims == nd;
    for (uint32_t d = 0; d < nd && same; d++) same = t->shape[d] == want[d];
    if (!same) {
        char got[160], exp[128];
        s_fmt_shape(got, sizeof got, t->shape, t->n_dims);
        s_fmt_shape(exp, sizeof exp, want, nd);
        return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' has shape %s but config.json implies %s (%s)", name, got, exp,
                          dims);
    }
    if ((t->dtype == MC_SAFETENSORS_U8) != u8)
        return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is %s but must be %s", name,
                          t->dtype == MC_SAFETENSORS_U8 ? "U8" : mc_dtype_name(t->dtype),
                          u8 ? "U8 (MXFP4 blocks or scales)" : "BF16, F16 or F32");
    if (pl->used[i]) return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is used twice", name);
    pl->used[i] = true;
    if (pl->n_srcs == pl->cap_srcs) {
        size_t cap = pl->cap_srcs ? 2 * pl->cap_srcs : 256;
        size_t *s = realloc(pl->srcs, cap * sizeof *s);
        if (!s) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        pl->srcs = s;
        pl->cap_srcs = cap;
    }
    pl->srcs[pl->n_srcs++] = i;
    return MC_OK;
}

// Find source tensor `name` of shape [rows] (cols 0) or [rows, cols] and take it.
static mc_err_t s_src(s_plan_t *pl, const char *name, uint64_t rows, uint64_t cols, const char *dims, char *err) {
    const uint64_t want[2] = {rows, cols};
    return s_src_nd(pl, name, cols ? 2 : 1, want, false, dims, err);
}

// Matrices take the requested type when their rows split into its blocks;
// otherwise Q8_0 (32-value blocks), else F16, as llama.cpp falls back.
static mc_dtype_t s_matrix_type(mc_dtype_t want, uint64_t ne0, bool *fallback) {
    const mc_dtype_traits_t *tr = mc_dtype_traits(want);
    *fallback = false;
    if (ne0 % tr->block_elems == 0) return want;
    *fallback = true;
    return ne0 % MC_QK == 0 ? MC_DTYPE_Q8_0 : MC_DTYPE_F16;
}

// Declare an output tensor made of the last n_src sources taken.
static mc_err_t s_out(s_plan_t *pl, s_cls_t cls, const char *name, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                      size_t n_src, uint32_t permute_heads, char *err) {
    if (pl->n_outs == pl->cap_outs) {
        size_t cap = pl->cap_outs ? 2 * pl->cap_outs : 64;
        s_out_t *o = realloc(pl->outs, cap * sizeof *o);
        if (!o) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        pl->outs = o;
        pl->cap_outs = cap;
    }
    s_out_t *o = &pl->outs[pl->n_outs++];
    *o = (s_out_t){.n_dims = n_dims, .ne = {ne0, ne1, n_src}, .cls = cls, .permute_heads = permute_heads,
                   .src0 = pl->n_srcs - n_src, .n_src = n_src};
    snprintf(o->name, sizeof o->name, "%s", name);
    if (n_dims == 1 || cls == S_CLS_ROUTER || cls == S_CLS_NORM) o->type = MC_DTYPE_F32;
    // MXFP4 is for the routed experts (as GPT-OSS files and llama-quantize's
    // MXFP4_MOE keep it); the other matrices stay F32.
    else o->type = s_matrix_type(pl->want == MC_DTYPE_MXFP4 && cls != S_CLS_EXPERTS ? MC_DTYPE_F32 : pl->want, ne0,
                                 &o->fallback);
    return MC_OK;
}

#define S_NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

// DeepSeek's latent attention as llama.cpp's converter writes it: the
// query directly (V2-Lite) or compressed (attn_q_a, its norm, attn_q_b), the
// latent with the shared RoPE key part (attn_kv_a_mqa) and its norm, and
// kv_b_proj split per head into attn_k_b (transposed, so the key part can
// be absorbed into the query) and attn_v_b.
static mc_err_t s_plan_mla(s_plan_t *pl, const s_hp_t *hp, uint32_t l, char *err) {
    const uint64_t D = hp->dim, H = hp->n_head, QH = H * hp->head_dim, R = hp->kv_lora, rope = hp->rope_dim;
    const uint64_t KVB = H * ((uint64_t)hp->nope + hp->head_dim_v), VO = H * hp->head_dim_v;
    char hf[160], gg[64];
    mc_err_t rc;
#define S_TAKE(rows, cols, dims, suffix) \
    if ((rc = s_src(pl, S_NAME(hf, "model.layers.%u.self_attn.%s", l, suffix), rows, cols, dims, err))) return rc
#define S_PUT(cls, nd, ne0, ne1, suffix) \
    if ((rc = s_out(pl, cls, S_NAME(gg, "blk.%u.%s", l, suffix), nd, ne0, ne1, 1, 0, err))) return rc
    if (hp->q_lora) {
        S_TAKE(hp->q_lora, D, "q_lora_rank, hidden_size", "q_a_proj.weight");
        S_PUT(S_CLS_ATTN, 2, D, hp->q_lora, "attn_q_a.weight");
        S_TAKE(hp->q_lora, 0, "q_lora_rank", "q_a_layernorm.weight");
        S_PUT(S_CLS_NORM, 1, hp->q_lora, 1, "attn_q_a_norm.weight");
        S_TAKE(QH, hp->q_lora, "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim), q_lora_rank",
               "q_b_proj.weight");
        S_PUT(S_CLS_ATTN, 2, hp->q_lora, QH, "attn_q_b.weight");
    } else {
        S_TAKE(QH, D, "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim), hidden_size", "q_proj.weight");
        S_PUT(S_CLS_ATTN, 2, D, QH, "attn_q.weight");
    }
    S_TAKE(R + rope, D, "kv_lora_rank + qk_rope_head_dim, hidden_size", "kv_a_proj_with_mqa.weight");
    S_PUT(S_CLS_ATTN, 2, D, R + rope, "attn_kv_a_mqa.weight");
    S_TAKE(R, 0, "kv_lora_rank", "kv_a_layernorm.weight");
    S_PUT(S_CLS_NORM, 1, R, 1, "attn_kv_a_norm.weight");
    S_TAKE(KVB, R, "num_attention_heads x (qk_nope_head_dim + v_head_dim), kv_lora_rank", "kv_b_proj.weight");
    for (int part = 0; part < 2; part++) { // both outputs read the one source just taken
        const bool k = part == 0;
        S_PUT(S_CLS_ATTN, 3, k ? hp->nope : R, k ? R : hp->head_dim_v, k ? "attn_k_b.weight" : "attn_v_b.weight");
        s_out_t *o = &pl->outs[pl->n_outs - 1];
        o->ne[2] = H;
        o->kvb = k ? S_KVB_K : S_KVB_V;
        o->nope = hp->nope;
        o->vdim = hp->head_dim_v;
    }
    S_TAKE(D, VO, "hidden_size, num_attention_heads x v_head_dim", "o_proj.weight");
    S_PUT(S_CLS_ATTN, 2, VO, D, "attn_output.weight");
#undef S_TAKE
#undef S_PUT
    return MC_OK;
}

// Declare a GPT-OSS expert tensor {ne0, ne1, E} (or a bias {ne0, E}) made
// from the n_src sources from src0 on, laid out as oss and pick say.
static mc_err_t s_out_oss(s_plan_t *pl, const char *name, uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint64_t E,
                          size_t src0, size_t n_src, s_oss_t oss, uint8_t pick, char *err) {
    mc_err_t rc = s_out(pl, S_CLS_EXPERTS, name, n_dims, ne0, n_dims == 3 ? ne1 : E, 0, 0, err);
    if (rc) return rc;
    s_out_t *o = &pl->outs[pl->n_outs - 1];
    o->ne[2] = n_dims == 3 ? E : 1;
    o->src0 = src0;
    o->n_src = n_src;
    o->oss = oss;
    o->pick = pick;
    if (oss == S_OSS_COLS) o->type = MC_DTYPE_F32, o->fallback = false; // biases, as every other bias
    if (oss == S_OSS_MXFP4) o->type = MC_DTYPE_MXFP4, o->fallback = false, pl->mxfp4_kept = true;
    return MC_OK;
}

// GPT-OSS's MoE half: the router with its bias, and the experts as its
// Hugging Face files hold them (all experts in one tensor, gate and up
// fused and interleaved): MXFP4 blocks and scales when quantization_config
// says mxfp4, else floats stored as x @ W ([E, in, out]), and their biases.
static mc_err_t s_plan_oss_moe(s_plan_t *pl, const s_hp_t *hp, uint32_t l, char *err) {
    const uint64_t D = hp->dim, F = hp->ffn_exp, E = hp->n_expert;
    char hf[160], gg[64];
    mc_err_t rc;
    if ((rc = s_src(pl, S_NAME(hf, "model.layers.%u.mlp.router.weight", l), E, D, "num_local_experts, hidden_size", err)) ||
        (rc = s_out(pl, S_CLS_ROUTER, S_NAME(gg, "blk.%u.ffn_gate_inp.weight", l), 2, D, E, 1, 0, err)) ||
        (rc = s_src(pl, S_NAME(hf, "model.layers.%u.mlp.router.bias", l), E, 0, "num_local_experts", err)) ||
        (rc = s_out(pl, S_CLS_ROUTER, S_NAME(gg, "blk.%u.ffn_gate_inp.bias", l), 1, E, 1, 1, 0, err)))
        return rc;
    // The other layout's tensor present: say which switch is wrong.
    const char *other = hp->mxfp4 ? "gate_up_proj" : "gate_up_proj_blocks";
    if (mc_safetensors_dir_find(pl->dir, S_NAME(hf, "model.layers.%u.mlp.experts.%s", l, other)) != SIZE_MAX)
        return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s' is there but config.json %s (%s experts expected)", hf,
                          hp->mxfp4 ? "says quantization_config mxfp4" : "has no quantization_config mxfp4",
                          hp->mxfp4 ? "MXFP4" : "float");
    static const char *const gate_up[2] = {"ffn_gate_exps.weight", "ffn_up_exps.weight"};
    if (hp->mxfp4) {
        const uint64_t gb[4] = {E, 2 * F, D / MC_QK, 16}, db[4] = {E, D, F / MC_QK, 16};
        const char *dg = "num_local_experts, 2 x intermediate_size, hidden_size / 32, 16";
        const char *dd = "num_local_experts, hidden_size, intermediate_size / 32, 16";
        const size_t s0 = pl->n_srcs;
        if ((rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.gate_up_proj_blocks", l), 4, gb, true, dg, err)) ||
            (rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.gate_up_proj_scales", l), 3, gb, true, dg, err)))
            return rc;
        for (uint8_t k = 0; k < 2; k++)
            if ((rc = s_out_oss(pl, S_NAME(gg, "blk.%u.%s", l, gate_up[k]), 3, D, F, E, s0, 2, S_OSS_MXFP4, k + 1, err)))
                return rc;
        if ((rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.down_proj_blocks", l), 4, db, true, dd, err)) ||
            (rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.down_proj_scales", l), 3, db, true, dd, err)) ||
            (rc = s_out_oss(pl, S_NAME(gg, "blk.%u.ffn_down_exps.weight", l), 3, F, D, E, pl->n_srcs - 2, 2, S_OSS_MXFP4,
                            0, err)))
            return rc;
    } else {
        const uint64_t gw[3] = {E, D, 2 * F}, dw[3] = {E, F, D};
        const size_t s0 = pl->n_srcs;
        if ((rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.gate_up_proj", l), 3, gw, false,
                           "num_local_experts, hidden_size, 2 x intermediate_size", err)))
            return rc;
        for (uint8_t k = 0; k < 2; k++)
            if ((rc = s_out_oss(pl, S_NAME(gg, "blk.%u.%s", l, gate_up[k]), 3, D, F, E, s0, 1, S_OSS_T, k + 1, err)))
                return rc;
        if ((rc = s_src_nd(pl, S_NAME(hf, "model.layers.%u.mlp.experts.down_proj", l), 3, dw, false,
                           "num_local_experts, intermediate_size, hidden_size", err)) ||
            (rc = s_out_oss(pl, S_NAME(gg, "blk.%u.ffn_down_exps.weight", l), 3, F, D, E, pl->n_srcs - 1, 1, S_OSS_T, 0,
                            err)))
            return rc;
    }
    static const char *const gate_up_b[2] = {"ffn_gate_exps.bias", "ffn_up_exps.bias"};
    const size_t s0 = pl->n_srcs;
    if ((rc = s_src(pl, S_NAME(hf, "model.layers.%u.mlp.experts.gate_up_proj_bias", l), E, 2 * F,
                    "num_local_experts, 2 x intermediate_size", err)))
        return rc;
    for (uint8_t k = 0; k < 2; k++)
        if ((rc = s_out_oss(pl, S_NAME(gg, "blk.%u.%s", l, gate_up_b[k]), 2, F, 0, E, s0, 1, S_OSS_COLS, k + 1, err)))
            return rc;
    if ((rc = s_src(pl, S_NAME(hf, "model.layers.%u.mlp.experts.down_proj_bias", l), E, D,
                    "num_local_experts, hidden_size", err)) ||
        (rc = s_out_oss(pl, S_NAME(gg, "blk.%u.ffn_down_exps.bias", l), 2, D, 0, E, pl->n_srcs - 1, 1, S_OSS_COLS, 0, err)))
        return rc;
    return MC_OK;
}

static mc_err_t s_plan_layer(s_plan_t *pl, const s_arch_t *a, const s_hp_t *hp, uint32_t l, char *err) {
    const uint64_t D = hp->dim, Q = (uint64_t)hp->n_head * hp->head_dim, KV = (uint64_t)hp->n_head_kv * hp->head_dim;
    const uint64_t F = hp->ffn_exp, E = hp->n_expert;
    char hf[160], gg[64];
    mc_err_t rc;
#define S_TAKE(rows, cols, dims, ...) \
    if ((rc = s_src(pl, S_NAME(hf, __VA_ARGS__), rows, cols, dims, err))) return rc
#define S_PUT(cls, nd, ne0, ne1, n, perm, ...) \
    if ((rc = s_out(pl, cls, S_NAME(gg, __VA_ARGS__), nd, ne0, ne1, n, perm, err))) return rc
    const char *pre = "model.layers";
    S_TAKE(D, 0, "hidden_size", "%s.%u.input_layernorm.weight", pre, l);
    S_PUT(S_CLS_NORM, 1, D, 1, 1, 0, "blk.%u.attn_norm.weight", l);
    const mc_arch_info_t *t = mc_arch_get(a->family);
    // HF rotates halves of each head; a family whose GGUF rotates adjacent
    // pairs gets its Q and K rows reordered. DeepSeek's HF code rotates
    // adjacent pairs itself (its weights are in that order), so not there.
    const bool rope_pairs = t->rope == MC_ROPE_NORM && !t->mla;
    if (t->mla) {
        if ((rc = s_plan_mla(pl, hp, l, err))) return rc;
    } else {
        S_TAKE(Q, D, "num_attention_heads x head_dim, hidden_size", "%s.%u.self_attn.q_proj.weight", pre, l);
        S_PUT(S_CLS_ATTN, 2, D, Q, 1, rope_pairs ? hp->n_head : 0, "blk.%u.attn_q.weight", l);
        S_TAKE(KV, D, "num_key_value_heads x head_dim, hidden_size", "%s.%u.self_attn.k_proj.weight", pre, l);
        S_PUT(S_CLS_ATTN, 2, D, KV, 1, rope_pairs ? hp->n_head_kv : 0, "blk.%u.attn_k.weight", l);
        S_TAKE(KV, D, "num_key_value_heads x head_dim, hidden_size", "%s.%u.self_attn.v_proj.weight", pre, l);
        S_PUT(S_CLS_ATTN, 2, D, KV, 1, 0, "blk.%u.attn_v.weight", l);
        S_TAKE(D, Q, "hidden_size, num_attention_heads x head_dim", "%s.%u.self_attn.o_proj.weight", pre, l);
        S_PUT(S_CLS_ATTN, 2, Q, D, 1, 0, "blk.%u.attn_output.weight", l);
    }
    if (hp->qkv_bias) { // vectors, so F32 whatever the matrices become (as llama.cpp writes them)
        assert(!rope_pairs); // a bias of a reordered projection would need the same order
        S_TAKE(Q, 0, "num_attention_heads x head_dim", "%s.%u.self_attn.q_proj.bias", pre, l);
        S_PUT(S_CLS_ATTN, 1, Q, 1, 1, 0, "blk.%u.attn_q.bias", l);
        S_TAKE(KV, 0, "num_key_value_heads x head_dim", "%s.%u.self_attn.k_proj.bias", pre, l);
        S_PUT(S_CLS_ATTN, 1, KV, 1, 1, 0, "blk.%u.attn_k.bias", l);
        S_TAKE(KV, 0, "num_key_value_heads x head_dim", "%s.%u.self_attn.v_proj.bias", pre, l);
        S_PUT(S_CLS_ATTN, 1, KV, 1, 1, 0, "blk.%u.attn_v.bias", l);
    }
    if (t->attn_out_bias) {
        S_TAKE(D, 0, "hidden_size", "%s.%u.self_attn.o_proj.bias", pre, l);
        S_PUT(S_CLS_ATTN, 1, D, 1, 1, 0, "blk.%u.attn_output.bias", l);
    }
    if (t->attn_sinks) { // one logit per head (HF names it without .weight, llama.cpp with)
        S_TAKE(hp->n_head, 0, "num_attention_heads", "%s.%u.self_attn.sinks", pre, l);
        S_PUT(S_CLS_ATTN, 1, hp->n_head, 1, 1, 0, "blk.%u.attn_sinks.weight", l);
    }
    if (hp->qk_norm) {
        // Per head (Qwen3, GLM-4.5): head_dim, or over the whole projection (OLMoE).
        const bool head = t->qk_norm == MC_QKNORM_HEAD;
        const uint64_t qn = head ? hp->head_dim : Q, kn = head ? hp->head_dim : KV;
        const char *dq = head ? "head_dim" : "num_attention_heads x head_dim";
        const char *dk = head ? "head_dim" : "num_key_value_heads x head_dim";
        S_TAKE(qn, 0, dq, "%s.%u.self_attn.q_norm.weight", pre, l);
        S_PUT(S_CLS_NORM, 1, qn, 1, 1, 0, "blk.%u.attn_q_norm.weight", l);
        S_TAKE(kn, 0, dk, "%s.%u.self_attn.k_norm.weight", pre, l);
        S_PUT(S_CLS_NORM, 1, kn, 1, 1, 0, "blk.%u.attn_k_norm.weight", l);
    }
    S_TAKE(D, 0, "hidden_size", "%s.%u.post_attention_layernorm.weight", pre, l);
    S_PUT(S_CLS_NORM, 1, D, 1, 1, 0, "blk.%u.%s.weight", l, t->ffn_norm_name);
    if (a->id == S_GPTOSS) return s_plan_oss_moe(pl, hp, l, err);
    static const char *const mixtral[3] = {"w1", "w3", "w2"}, *const named[3] = {"gate_proj", "up_proj", "down_proj"};
    if (!s_layer_moe(hp, l)) { // a dense layer: one FFN of intermediate_size, no router
        static const char *const dense[3] = {"ffn_gate", "ffn_up", "ffn_down"};
        for (int k = 0; k < 3; k++) {
            const uint64_t rows = k < 2 ? hp->ffn : D, cols = k < 2 ? D : hp->ffn;
            S_TAKE(rows, cols, k < 2 ? "intermediate_size, hidden_size" : "hidden_size, intermediate_size",
                   "%s.%u.mlp.%s.weight", pre, l, named[k]);
            S_PUT(S_CLS_DENSE, 2, cols, rows, 1, 0, "blk.%u.%s.weight", l, dense[k]);
        }
        return MC_OK;
    }
    const char *moe = a->id == S_MIXTRAL ? "block_sparse_moe" : "mlp";
    S_TAKE(E, D, "num_experts, hidden_size", "%s.%u.%s.gate.weight", pre, l, moe);
    S_PUT(S_CLS_ROUTER, 2, D, E, 1, 0, "blk.%u.ffn_gate_inp.weight", l);
    // The selection bias: every GLM-4.5 MoE layer has one; DeepSeek-V3's
    // have, V2's have not (the same family), so it is taken when present.
    if (t->expert_bias == MC_NEED_REQUIRED ||
        (t->expert_bias == MC_NEED_OPTIONAL &&
         mc_safetensors_dir_find(pl->dir, S_NAME(hf, "%s.%u.mlp.gate.e_score_correction_bias", pre, l)) != SIZE_MAX)) {
        S_TAKE(E, 0, "n_routed_experts", "%s.%u.mlp.gate.e_score_correction_bias", pre, l);
        S_PUT(S_CLS_ROUTER, 1, E, 1, 1, 0, "blk.%u.exp_probs_b.bias", l);
    }
    // Mixtral's w1 is the gate, w3 the up projection and w2 the down one.
    static const char *const out[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    for (int k = 0; k < 3; k++) {
        const uint64_t rows = k < 2 ? F : D, cols = k < 2 ? D : F;
        const char *dims = k < 2 ? "expert hidden size, hidden_size" : "hidden_size, expert hidden size";
        for (uint32_t e = 0; e < E; e++) {
            S_TAKE(rows, cols, dims, "%s.%u.%s.experts.%u.%s.weight", pre, l, moe, e,
                   a->id == S_MIXTRAL ? mixtral[k] : named[k]);
        }
        S_PUT(S_CLS_EXPERTS, 3, cols, rows, E, 0, "blk.%u.%s.weight", l, out[k]);
    }
    if (t->shared_expert) {
        // Qwen2-MoE: "shared_expert" and its gate, a (1, hidden_size) matrix
        // in HF, written as the vector of hidden_size llama.cpp's loader
        // declares (and F32, as llama.cpp keeps every router input).
        // GLM-4.5 and DeepSeek: "shared_experts", n_shared_experts experts
        // fused into one FFN, ungated.
        const uint64_t FS = hp->ffn_shexp;
        const bool qwen = t->shared_expert == MC_SHEXP_FFN_KEY;
        const char *dims[2] = {qwen ? "shared_expert_intermediate_size, hidden_size"
                                    : "n_shared_experts x moe_intermediate_size, hidden_size",
                               qwen ? "hidden_size, shared_expert_intermediate_size"
                                    : "hidden_size, n_shared_experts x moe_intermediate_size"};
        static const char *const shexp[3] = {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"};
        for (int k = 0; k < 3; k++) {
            const uint64_t rows = k < 2 ? FS : D, cols = k < 2 ? D : FS;
            S_TAKE(rows, cols, dims[k / 2], "%s.%u.mlp.%s.%s.weight", pre, l, qwen ? "shared_expert" : "shared_experts",
                   named[k]);
            S_PUT(S_CLS_SHARED, 2, cols, rows, 1, 0, "blk.%u.%s.weight", l, shexp[k]);
        }
        if (t->shexp_gated) {
            S_TAKE(1, D, "1, hidden_size", "%s.%u.mlp.shared_expert_gate.weight", pre, l);
            S_PUT(S_CLS_ROUTER, 1, D, 1, 1, 0, "blk.%u.ffn_gate_inp_shexp.weight", l);
        }
    }
#undef S_TAKE
#undef S_PUT
    return MC_OK;
}

static mc_err_t s_plan_build(s_plan_t *pl, const s_arch_t *a, const s_hp_t *hp, char *err) {
    const uint64_t D = hp->dim, V = hp->n_vocab;
    pl->used = calloc(mc_safetensors_dir_count(pl->dir) + 1, sizeof *pl->used);
    if (!pl->used) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_err_t rc = s_src(pl, "model.embed_tokens.weight", V, D, "vocab_size, hidden_size", err);
    if (!rc) rc = s_out(pl, S_CLS_EMBD, "token_embd.weight", 2, D, V, 1, 0, err);
    for (uint32_t l = 0; l < hp->n_layer && !rc; l++) rc = s_plan_layer(pl, a, hp, l, err);
    // Next-token-prediction layers (GLM-4.5, DeepSeek-V3: model.layers.N for
    // N from num_hidden_layers on) are not evaluated by llama.cpp's graphs
    // or ours: skipped whole, so the file is as if the model had none.
    for (size_t i = 0; i < mc_safetensors_dir_count(pl->dir) && !rc && hp->n_nextn; i++) {
        unsigned layer;
        int end = 0;
        if (sscanf(mc_safetensors_dir_at(pl->dir, i)->name, "model.layers.%u.%n", &layer, &end) == 1 && end > 0 &&
            layer >= hp->n_layer && layer - hp->n_layer < hp->n_nextn)
            pl->used[i] = true;
    }
    if (!rc) rc = s_src(pl, "model.norm.weight", D, 0, "hidden_size", err);
    if (!rc) rc = s_out(pl, S_CLS_NORM, "output_norm.weight", 1, D, 1, 1, 0, err);
    if (!rc && mc_safetensors_dir_find(pl->dir, "lm_head.weight") != SIZE_MAX) {
        rc = s_src(pl, "lm_head.weight", V, D, "vocab_size, hidden_size", err);
        if (!rc) rc = s_out(pl, S_CLS_OUTPUT, "output.weight", 2, D, V, 1, 0, err);
    } else if (!rc && !hp->tied) {
        rc = mc_err_set(err, MC_ERR_FORMAT, "tensor 'lm_head.weight' is missing and tie_word_embeddings is not set");
    }
    // Whatever is left would be dropped: refuse rather than write a different model.
    for (size_t i = 0; i < mc_safetensors_dir_count(pl->dir) && !rc; i++) {
        const char *n = mc_safetensors_dir_at(pl->dir, i)->name;
        size_t len = strlen(n);
        static const char inv_freq[] = ".rotary_emb.inv_freq"; // recomputed by every runtime
        if (!pl->used[i] && !(len >= sizeof inv_freq - 1 && !strcmp(n + len - (sizeof inv_freq - 1), inv_freq)))
            rc = mc_err_set(err, MC_ERR_UNSUPPORTED, "tensor '%.100s' is not part of a %s model as converted here", n,
                            a->hf);
    }
    return rc;
}

// --- vocabulary ------------------------------------------------------------------------

typedef struct {
    const char *model, *pre; // tokenizer.ggml.model / .pre
    uint32_t n;
    char **tok;
    size_t *len;
    float *score; // SentencePiece only
    int32_t *type;
    char **merge; // BPE only
    size_t n_merge;
    int32_t bos, eos, unk, pad; // -1: absent
    bool add_bos, add_eos;
    bool space_prefix, remove_extra_ws; // SentencePiece normalizer switches
    const char *chat_template;          // inside the tokenizer_config JSON, or template_file
    char *template_file;                // chat_template.jinja's text (owned)
} s_vocab_t;

enum { S_TOK_NORMAL = 1, S_TOK_UNKNOWN = 2, S_TOK_CONTROL = 3, S_TOK_USER = 4, S_TOK_UNUSED = 5, S_TOK_BYTE = 6 };

static void s_vocab_free(s_vocab_t *v) {
    for (uint32_t i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    for (size_t i = 0; v->merge && i < v->n_merge; i++) free(v->merge[i]);
    free(v->tok);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->merge);
    free(v->template_file);
    *v = (s_vocab_t){0};
}

static mc_err_t s_vocab_alloc(s_vocab_t *v, uint32_t n, bool scores, char *err) {
    v->n = n;
    v->tok = calloc(n, sizeof *v->tok);
    v->len = calloc(n, sizeof *v->len);
    v->type = calloc(n, sizeof *v->type);
    v->score = scores ? calloc(n, sizeof *v->score) : NULL;
    v->bos = v->eos = v->unk = v->pad = -1;
    if (!v->tok || !v->len || !v->type || (scores && !v->score)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return MC_OK;
}

static mc_err_t s_vocab_set(s_vocab_t *v, uint32_t id, const void *s, size_t len, char *err) {
    char *t = malloc(len + 1);
    if (!t) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    memcpy(t, s, len);
    t[len] = 0;
    free(v->tok[id]);
    v->tok[id] = t;
    v->len[id] = len;
    return MC_OK;
}

// Ids the model has no piece for: "[PAD<id>]", unused (as llama.cpp fills them).
static mc_err_t s_vocab_pad(s_vocab_t *v, char *err) {
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->tok[i]) continue;
        char name[32];
        int k = snprintf(name, sizeof name, "[PAD%u]", i);
        mc_err_t rc = s_vocab_set(v, i, name, (size_t)k, err);
        if (rc) return rc;
        v->type[i] = S_TOK_UNUSED;
        if (v->score) v->score[i] = -1000.0f;
    }
    return MC_OK;
}

// tokenizer_config.json: add_bos_token / add_eos_token switches and the chat template.
static mc_err_t s_vocab_tcfg(s_vocab_t *v, const cJSON *tcfg, char *err) {
    const cJSON *b = s_get(tcfg, "add_bos_token"), *e = s_get(tcfg, "add_eos_token");
    if ((b && !cJSON_IsBool(b)) || (e && !cJSON_IsBool(e)))
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer_config.json: add_bos_token/add_eos_token must be true or false");
    if (b) v->add_bos = cJSON_IsTrue(b);
    if (e) v->add_eos = cJSON_IsTrue(e);
    const cJSON *t = s_get(tcfg, "chat_template");
    if (cJSON_IsString(t)) v->chat_template = t->valuestring;
    return MC_OK;
}

// config.json's <typ>_token_id when it is a valid id (lists and nulls are skipped).
static void s_cfg_token_id(const cJSON *cfg, const char *typ, uint32_t n, int32_t *id) {
    char key[32];
    snprintf(key, sizeof key, "%s_token_id", typ);
    const cJSON *v = s_get(cfg, key);
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < n && v->valuedouble == floor(v->valuedouble))
        *id = (int32_t)v->valuedouble;
}

// Newer checkpoints (GPT-OSS's among them) keep the chat template in its
// own chat_template.jinja rather than in tokenizer_config.json: read it
// when tokenizer_config.json has none.
static mc_err_t s_vocab_template_file(const char *dir, s_vocab_t *v, char *err) {
    if (v->chat_template || !s_exists(dir, "chat_template.jinja")) return MC_OK;
    size_t len;
    mc_err_t rc = s_read_file(dir, "chat_template.jinja", S_MAX_CONFIG, &v->template_file, &len, err);
    if (rc) return rc;
    if (strlen(v->template_file) != len)
        return mc_err_set(err, MC_ERR_FORMAT, "chat_template.jinja: holds a NUL byte");
    v->chat_template = v->template_file;
    return MC_OK;
}

static mc_err_t s_vocab_spm(const char *dir, const cJSON *cfg, const cJSON *tcfg, uint32_t n_vocab, s_vocab_t *v,
                            char *err) {
    char *buf;
    size_t len;
    mc_err_t rc = s_read_file(dir, "tokenizer.model", S_MAX_SPM, &buf, &len, err);
    if (rc) return rc;
    Spm__ModelProto *m = spm__model_proto__unpack(NULL, len, (const uint8_t *)buf);
    free(buf);
    if (!m) return mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: not a SentencePiece model (the protobuf does not parse)");
    const Spm__TrainerSpec *ts = m->trainer_spec;
    const Spm__NormalizerSpec *ns = m->normalizer_spec;
    if (m->n_pieces == 0) rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: no pieces");
    else if (m->n_pieces > n_vocab)
        rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model has %zu pieces but config.json's vocab_size is %u",
                        m->n_pieces, n_vocab);
    else if (!ts || ts->model_type != SPM__TRAINER_SPEC__MODEL_TYPE__BPE)
        rc = mc_err_set(err, MC_ERR_UNSUPPORTED,
                        "tokenizer.model: only SentencePiece BPE models are supported (model type %d)",
                        ts ? (int)ts->model_type : 1);
    if (!rc) rc = s_vocab_alloc(v, n_vocab, true, err);
    for (size_t i = 0; i < m->n_pieces && !rc; i++) {
        const Spm__ModelProto__SentencePiece *p = m->pieces[i];
        int type = (int)p->type;
        if (!p->has_piece || p->piece.len == 0 || p->piece.len > S_MAX_PIECE)
            rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: piece %zu is empty or too long", i);
        else if (type < S_TOK_NORMAL || type > S_TOK_BYTE)
            rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: piece %zu has an unknown type %d", i, type);
        else if (!isfinite(p->score))
            rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: piece %zu has a score that is not a number", i);
        if (!rc) rc = s_vocab_set(v, (uint32_t)i, p->piece.data, p->piece.len, err);
        if (!rc) {
            v->score[i] = p->score;
            v->type[i] = type;
        }
    }
    if (!rc) {
        const int32_t ids[4] = {ts->unk_id, ts->bos_id, ts->eos_id, ts->pad_id};
        static const char *const names[4] = {"unk_id", "bos_id", "eos_id", "pad_id"};
        for (int k = 0; k < 4 && !rc; k++)
            if (ids[k] < -1 || ids[k] >= (int64_t)m->n_pieces)
                rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.model: %s %d is not one of its %zu pieces", names[k], ids[k],
                                m->n_pieces);
        v->unk = ids[0], v->bos = ids[1], v->eos = ids[2], v->pad = ids[3];
    }
    v->space_prefix = ns ? ns->add_dummy_prefix : true;
    v->remove_extra_ws = ns ? ns->remove_extra_whitespaces : true;
    spm__model_proto__free_unpacked(m, NULL);
    if (rc) return rc;
    s_cfg_token_id(cfg, "bos", n_vocab, &v->bos);
    s_cfg_token_id(cfg, "eos", n_vocab, &v->eos);
    s_cfg_token_id(cfg, "pad", n_vocab, &v->pad);
    v->model = "llama";
    v->pre = "default";
    v->add_bos = true;
    v->add_eos = false;
    if ((rc = s_vocab_tcfg(v, tcfg, err))) return rc;
    return s_vocab_pad(v, err);
}

static bool s_looks_special(const char *s) {
    size_t n = strlen(s);
    return n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>");
}

static bool s_has_byte_level(const cJSON *pt) {
    const cJSON *type = s_get(pt, "type");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "ByteLevel")) return true;
    const cJSON *seq = s_get(pt, "pretokenizers"), *p;
    if (!cJSON_IsArray(seq)) return false;
    cJSON_ArrayForEach(p, seq) if (s_has_byte_level(p)) return true;
    return false;
}

// One merge rule as "left right". The pair form ["a", "b"] (which allows
// spaces inside a part) gets its spaces written as U+0120, as llama.cpp does.
static mc_err_t s_merge_text(const cJSON *m, size_t i, char **out, char *err) {
    if (cJSON_IsString(m)) {
        const char *sp = strchr(m->valuestring, ' ');
        if (!sp || sp == m->valuestring || !sp[1])
            return mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: merge %zu is not \"left right\"", i);
        *out = strdup(m->valuestring);
        return *out ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    const cJSON *a = cJSON_IsArray(m) ? cJSON_GetArrayItem(m, 0) : NULL, *b = a ? a->next : NULL;
    if (!cJSON_IsString(a) || !cJSON_IsString(b) || b->next || !*a->valuestring || !*b->valuestring)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: merge %zu is neither \"left right\" nor [left, right]", i);
    size_t la = strlen(a->valuestring), lb = strlen(b->valuestring);
    char *s = malloc(2 * (la + lb) + 2), *w = s;
    if (!s) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (int part = 0; part < 2; part++) {
        for (const char *c = part ? b->valuestring : a->valuestring; *c; c++) {
            if (*c == ' ') *w++ = (char)0xC4, *w++ = (char)0xA0;
            else *w++ = *c;
        }
        if (!part) *w++ = ' ';
    }
    *w = 0;
    *out = s;
    return MC_OK;
}

// The special token named by tokenizer_config.json's <typ>_token (a string
// or {"content": ...}), looked up among tokenizer.json's added tokens.
static void s_tcfg_token_id(const cJSON *tcfg, const cJSON *added, const char *typ, int32_t *id) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    const cJSON *e = s_get(tcfg, key);
    if (cJSON_IsObject(e)) e = s_get(e, "content");
    if (!cJSON_IsString(e)) return;
    const cJSON *t;
    cJSON_ArrayForEach(t, added) {
        const cJSON *c = s_get(t, "content"), *i = s_get(t, "id");
        if (cJSON_IsString(c) && cJSON_IsNumber(i) && !strcmp(c->valuestring, e->valuestring)) {
            *id = (int32_t)i->valuedouble; // validated when the added tokens were read
            return;
        }
    }
}

static mc_err_t s_json_id(const cJSON *v, uint32_t n, const char *what, const char *tok, uint32_t *out, char *err) {
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 0 && d < n) || d != floor(d))
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: %s '%.64s' has no id in 0..%u (vocab_size)", what,
                          tok ? tok : "?", n - 1);
    *out = (uint32_t)d;
    return MC_OK;
}

// Whether one of the Split patterns of a pre_tokenizer (a Sequence or a
// single one) contains needle.
static bool s_split_has(const cJSON *pt, const char *needle) {
    const cJSON *type = s_get(pt, "type"), *re = s_get(s_get(pt, "pattern"), "Regex");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "Split") && cJSON_IsString(re) &&
        strstr(re->valuestring, needle))
        return true;
    const cJSON *seq = s_get(pt, "pretokenizers"), *p;
    if (!cJSON_IsArray(seq)) return false;
    cJSON_ArrayForEach(p, seq) if (s_split_has(p, needle)) return true;
    return false;
}

// GLM-4.5 and DeepSeek checkpoints come with different pre-tokenizers
// (llama.cpp tells them apart by hashing the tokenizer's output; we cannot
// run it): told apart here by the regexes of tokenizer.json's Split steps.
// GLM-4.5 is Llama 3's pattern (digits in runs of up to 3: "glm4"), the
// files moe-mkmodel writes Qwen2's (single digits); DeepSeek-V3/R1 start
// with digit runs of up to 3 ("deepseek-v3"), V2 and V2-Lite have a step of
// trailing spaces ("deepseek-llm"); with no Split step, GPT-2's regex.
// GPT-OSS's o200k pattern ("gpt-4o") is the one with letter classes split
// by case (\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}); moe-mkmodel's files use Qwen2's.
static mc_err_t s_pick_pre(const cJSON *tj, const s_arch_t *a, const char **pre, char *err) {
    const cJSON *pt = s_get(tj, "pre_tokenizer");
    const bool digits3 = s_split_has(pt, "\\p{N}{1,3}"), any = s_split_has(pt, "");
    if (a->id == S_GLM4MOE) {
        *pre = digits3 ? "glm4" : s_split_has(pt, "\\p{N}|") ? "qwen2" : NULL;
    } else if (a->id == S_DEEPSEEK) {
        *pre = !any ? "gpt-2" : digits3 ? "deepseek-v3" : s_split_has(pt, "\\s+$") ? "deepseek-llm" : NULL;
    } else if (a->id == S_GPTOSS) {
        *pre = s_split_has(pt, "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]") ? "gpt-4o"
               : s_split_has(pt, "\\p{N}|")                            ? "qwen2"
                                                                       : NULL;
    } else {
        *pre = mc_arch_get(a->family)->bpe_pre;
    }
    if (!*pre)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "tokenizer.json: the pre-tokenizer's Split patterns are not a %s one "
                          "we know", mc_arch_get(a->family)->family);
    return MC_OK;
}

static mc_err_t s_vocab_bpe(const char *dir, const cJSON *cfg, const cJSON *tcfg, uint32_t n_vocab, const s_arch_t *a,
                            s_vocab_t *v, char *err) {
    cJSON *tj = NULL;
    mc_err_t rc = s_read_json(dir, "tokenizer.json", S_MAX_TOKENIZER_JSON, true, &tj, err);
    if (rc) return rc;
    const char *pre = NULL;
    if ((rc = s_pick_pre(tj, a, &pre, err))) {
        cJSON_Delete(tj);
        return rc;
    }
    const cJSON *model = s_get(tj, "model"), *type = s_get(model, "type");
    const cJSON *vocab = s_get(model, "vocab"), *merges = s_get(model, "merges"), *added = s_get(tj, "added_tokens");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0)
        rc = mc_err_set(err, MC_ERR_UNSUPPORTED, "tokenizer.json: the model type is not BPE");
    else if (!s_has_byte_level(s_get(tj, "pre_tokenizer")))
        rc = mc_err_set(err, MC_ERR_UNSUPPORTED, "tokenizer.json: only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
    else if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges) || (added && !cJSON_IsArray(added)))
        rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: model.vocab, model.merges or added_tokens is malformed");
    if (!rc) rc = s_vocab_alloc(v, n_vocab, false, err);
    const cJSON *e;
    for (e = vocab ? vocab->child : NULL; e && !rc; e = e->next) {
        uint32_t id;
        if ((rc = s_json_id(e, n_vocab, "token", e->string, &id, err))) break;
        if (v->tok[id])
            rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: id %u is given to '%.64s' and '%.64s'", id, v->tok[id],
                            e->string);
        else if (!(rc = s_vocab_set(v, id, e->string, strlen(e->string), err)))
            v->type[id] = S_TOK_NORMAL;
    }
    // Added tokens take their id whether or not the base vocabulary has it.
    for (e = added ? added->child : NULL; e && !rc; e = e->next) {
        const cJSON *c = s_get(e, "content"), *special = s_get(e, "special");
        uint32_t id;
        if (!cJSON_IsString(c) || !*c->valuestring) {
            rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: an added token has no content");
            break;
        }
        if ((rc = s_json_id(s_get(e, "id"), n_vocab, "added token", c->valuestring, &id, err))) break;
        if (!(rc = s_vocab_set(v, id, c->valuestring, strlen(c->valuestring), err)))
            v->type[id] = cJSON_IsTrue(special) || s_looks_special(c->valuestring) ? S_TOK_CONTROL : S_TOK_USER;
    }
    size_t n_merges = 0;
    cJSON_ArrayForEach(e, merges) n_merges++;
    if (!rc && n_merges == 0) rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer.json: no merges");
    if (!rc && !(v->merge = calloc(n_merges, sizeof *v->merge))) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (e = merges ? merges->child : NULL; e && !rc; e = e->next) {
        rc = s_merge_text(e, v->n_merge, &v->merge[v->n_merge], err);
        if (!rc) v->n_merge++;
    }
    if (!rc) {
        static const char *const typs[4] = {"bos", "eos", "unk", "pad"};
        int32_t *ids[4] = {&v->bos, &v->eos, &v->unk, &v->pad};
        for (int k = 0; k < 4; k++) {
            s_tcfg_token_id(tcfg, added, typs[k], ids[k]);
            if (*ids[k] < 0) s_cfg_token_id(cfg, typs[k], n_vocab, ids[k]);
        }
        v->model = "gpt2";
        v->pre = pre;
        v->add_bos = v->add_eos = false;
        rc = s_vocab_tcfg(v, tcfg, err);
    }
    if (!rc) rc = s_vocab_pad(v, err);
    cJSON_Delete(tj);
    return rc;
}

// --- metadata ---------------------------------------------------------------------------

static mc_err_t s_add_meta(mc_gguf_writer_t *w, const s_arch_t *a, const s_hp_t *hp, const s_vocab_t *v,
                           mc_dtype_t type, const char *name, char *err) {
    char k[96];
    mc_err_t rc = MC_OK;
    const mc_arch_info_t *t = mc_arch_get(a->family);
    const char *A = t->name;
#define S_KEY(...) (snprintf(k, sizeof k, __VA_ARGS__), k)
#define S_ADD(call) \
    if (!rc && (rc = (call))) return mc_err_set(err, rc, "adding metadata '%s' failed: %s", k, mc_err_name(rc))
    S_ADD(mc_gguf_writer_add_str(w, S_KEY("general.architecture"), A));
    S_ADD(mc_gguf_writer_add_str(w, S_KEY("general.type"), "model"));
    S_ADD(mc_gguf_writer_add_str(w, S_KEY("general.name"), name));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.block_count", A), hp->n_layer));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.context_length", A), hp->ctx));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.embedding_length", A), hp->dim));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.feed_forward_length", A), hp->ffn));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.head_count", A), hp->n_head));
    // Latent attention's cache row is one shared head (llama.cpp's converter).
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.head_count_kv", A), t->mla ? 1 : hp->n_head_kv));
    S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.freq_base", A), hp->rope_base));
    S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.attention.layer_norm_rms_epsilon", A), hp->rms_eps));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_count", A), hp->n_expert));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_used_count", A), hp->n_expert_used));
    uint32_t file_type = 0;
    if (!mc_dtype_file_type(type, &file_type))
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "no llama.cpp file type for %s weights", mc_dtype_name(type));
    S_ADD(mc_gguf_writer_add_u32(w, S_KEY("general.file_type"), file_type));
    if (a->id == S_MIXTRAL) {
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.vocab_size", A), hp->n_vocab));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.rope.dimension_count", A), hp->head_dim));
    }
    if (a->id == S_QWEN3MOE || hp->head_dim_given) {
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.key_length", A), hp->head_dim));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.value_length", A), hp->head_dim));
    }
    if (t->expert_ffn_key) {
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_feed_forward_length", A), hp->ffn_exp));
        // GLM-4.5: as config.json says; DeepSeek: only when true (its default).
        // GPT-OSS: never (its weights are a softmax over the chosen, as llama.cpp's converter leaves it).
        if (a->id != S_GPTOSS && (!s_v3_family(a) || (a->id == S_GLM4MOE && hp->norm_topk_given) || hp->norm_topk))
            S_ADD(mc_gguf_writer_add_bool(w, S_KEY("%s.expert_weights_norm", A), hp->norm_topk));
    }
    if (t->shared_expert == MC_SHEXP_FFN_KEY)
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_shared_feed_forward_length", A), hp->ffn_shexp));
    if (!s_v3_family(a) && hp->n_dense) // Qwen2-MoE's dense layers (s_read_dense_layers)
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.leading_dense_block_count", A), hp->n_dense));
    if (!s_v3_family(a) && hp->moe_step > 1)
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.interleave_moe_layer_step", A), hp->moe_step));
    if (s_v3_family(a)) {
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_shared_count", A), hp->n_shared));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.leading_dense_block_count", A), hp->n_dense));
        if (hp->moe_step > 1) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.interleave_moe_layer_step", A), hp->moe_step));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.rope.dimension_count", A), hp->rope_dim));
        if (hp->gating) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_gating_func", A), hp->gating));
        if (hp->n_group) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_group_count", A), hp->n_group));
        if (hp->n_group_used) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.expert_group_used_count", A), hp->n_group_used));
        if (hp->has_scale) S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.expert_weights_scale", A), hp->scale));
    }
    if (t->swa) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.sliding_window", A), hp->n_swa));
    if (s_yarn_family(a)) {
        if (hp->yarn) {
            S_ADD(mc_gguf_writer_add_str(w, S_KEY("%s.rope.scaling.type", A), "yarn"));
            S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.scaling.factor", A), hp->yarn_factor));
            S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.rope.scaling.original_context_length", A), hp->yarn_orig_ctx));
            if (hp->has_attn_factor)
                S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.scaling.attn_factor", A), hp->attn_factor));
            if (hp->has_beta_fast)
                S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.scaling.yarn_beta_fast", A), hp->beta_fast));
            if (hp->has_beta_slow)
                S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.scaling.yarn_beta_slow", A), hp->beta_slow));
        }
        // DeepSeek writes it from rope_scaling's mscale_all_dim, YaRN or not.
        if (hp->has_log_mul)
            S_ADD(mc_gguf_writer_add_f32(w, S_KEY("%s.rope.scaling.yarn_log_multiplier", A), hp->log_mul));
    }
    if (t->mla) {
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.vocab_size", A), hp->n_vocab));
        if (hp->q_lora) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.q_lora_rank", A), hp->q_lora));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.kv_lora_rank", A), hp->kv_lora));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.key_length", A), hp->kv_lora + hp->rope_dim));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.value_length", A), hp->kv_lora));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.key_length_mla", A), hp->head_dim));
        S_ADD(mc_gguf_writer_add_u32(w, S_KEY("%s.attention.value_length_mla", A), hp->head_dim_v));
    }
    if (mc_dtype_traits(type)->block_elems > 1) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("general.quantization_version"), 2));
    S_ADD(mc_gguf_writer_add_str(w, S_KEY("tokenizer.ggml.model"), v->model));
    S_ADD(mc_gguf_writer_add_str(w, S_KEY("tokenizer.ggml.pre"), v->pre));
    S_ADD(mc_gguf_writer_add_arr_str(w, S_KEY("tokenizer.ggml.tokens"), (const char *const *)v->tok, v->len, v->n));
    if (v->score) S_ADD(mc_gguf_writer_add_arr_f32(w, S_KEY("tokenizer.ggml.scores"), v->score, v->n));
    S_ADD(mc_gguf_writer_add_arr_i32(w, S_KEY("tokenizer.ggml.token_type"), v->type, v->n));
    if (v->merge)
        S_ADD(mc_gguf_writer_add_arr_str(w, S_KEY("tokenizer.ggml.merges"), (const char *const *)v->merge, NULL,
                                         v->n_merge));
    if (v->bos >= 0) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("tokenizer.ggml.bos_token_id"), (uint32_t)v->bos));
    if (v->eos >= 0) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("tokenizer.ggml.eos_token_id"), (uint32_t)v->eos));
    if (v->unk >= 0) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("tokenizer.ggml.unknown_token_id"), (uint32_t)v->unk));
    if (v->pad >= 0) S_ADD(mc_gguf_writer_add_u32(w, S_KEY("tokenizer.ggml.padding_token_id"), (uint32_t)v->pad));
    S_ADD(mc_gguf_writer_add_bool(w, S_KEY("tokenizer.ggml.add_bos_token"), v->add_bos));
    S_ADD(mc_gguf_writer_add_bool(w, S_KEY("tokenizer.ggml.add_eos_token"), v->add_eos));
    // Written only where they differ from what llama.cpp assumes for the model.
    if (v->score && !v->space_prefix) S_ADD(mc_gguf_writer_add_bool(w, S_KEY("tokenizer.ggml.add_space_prefix"), false));
    if (v->score && v->remove_extra_ws)
        S_ADD(mc_gguf_writer_add_bool(w, S_KEY("tokenizer.ggml.remove_extra_whitespaces"), true));
    if (v->chat_template) S_ADD(mc_gguf_writer_add_str(w, S_KEY("tokenizer.chat_template"), v->chat_template));
#undef S_ADD
#undef S_KEY
    return rc;
}

// --- tensor data ---------------------------------------------------------------------------

typedef struct {
    const s_plan_t *pl;
    float *row; // one source row as f32
} s_fill_ctx_t;

static void s_load_row(const mc_safetensors_tensor_t *t, uint64_t r, uint64_t n, float *out) {
    const size_t es = mc_safetensors_dtype_size(t->dtype);
    const uint8_t *p = t->data + r * n * es;
    if (t->dtype == MC_DTYPE_F32) {
        memcpy(out, p, n * sizeof *out);
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = t->dtype == MC_DTYPE_BF16 ? mc_bf16_to_fp32(h) : mc_fp16_to_fp32(h);
    }
}

// Source row of output row r of a head-permuted matrix: within each head of
// d rows, row 2i comes from row i and row 2i+1 from row i + d/2.
static uint64_t s_permuted(uint64_t r, uint64_t rows, uint32_t heads) {
    const uint64_t d = rows / heads, h = r / d, j = r % d;
    return h * d + (j % 2) * (d / 2) + j / 2;
}

// attn_k_b or attn_v_b from kv_b_proj (R = kv_lora_rank values a row):
// head h's rows are h x (nope + v) onwards, keys first. attn_k_b's row
// (h, j) is column j of the head's key rows; attn_v_b's row (h, j) is the
// head's value row j.
static mc_err_t s_fill_kvb(const s_fill_ctx_t *ctx, const s_out_t *o, uint8_t *out, char *err) {
    const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    const uint64_t ne0 = o->ne[0], rows = o->ne[1], heads = o->ne[2], per = (uint64_t)o->nope + o->vdim;
    const uint64_t R = t->shape[1];
    const size_t row_bytes = mc_dtype_row_bytes(o->type, ne0);
    for (uint64_t h = 0; h < heads; h++) {
        for (uint64_t j = 0; j < rows; j++, out += row_bytes) {
            if (o->kvb == S_KVB_V) {
                s_load_row(t, h * per + o->nope + j, ne0, ctx->row);
            } else {
                for (uint64_t i = 0; i < ne0; i++) s_load_row(t, (h * per + i) * R + j, 1, &ctx->row[i]);
            }
            mc_err_t rc = mc_quant_quantize_row(o->type, ctx->row, out, (int64_t)ne0);
            if (rc) return mc_err_set(err, rc, "%s: converting to %s failed", o->name, mc_dtype_name(o->type));
        }
    }
    if (o->kvb == S_KVB_V) mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0]); // planned after k_b
    return MC_OK;
}

// The source row (or column) of output row j of an interleaved gate_up.
static uint64_t s_picked(uint64_t j, uint8_t pick) { return pick ? 2 * j + (pick - 1u) : j; }

// GPT-OSS biases: output row e is source row e, every other value (pick) or all.
static mc_err_t s_fill_oss_cols(const s_fill_ctx_t *ctx, const s_out_t *o, uint8_t *out) {
    const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    const uint64_t ne0 = o->ne[0], W = t->shape[1];
    for (uint64_t e = 0; e < o->ne[1]; e++) {
        for (uint64_t j = 0; j < ne0; j++, out += sizeof(float)) {
            float v;
            s_load_row(t, e * W + s_picked(j, o->pick), 1, &v);
            memcpy(out, &v, sizeof v);
        }
    }
    mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    return MC_OK;
}

// GPT-OSS float experts [E, in, out] (x @ W): expert e's output row j is
// column s_picked(j) of its in x out matrix. The expert is read row by row
// (contiguous) into a transposed f32 copy, whose rows are then converted.
static mc_err_t s_fill_oss_t(const s_fill_ctx_t *ctx, const s_out_t *o, uint8_t *out, char *err) {
    const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    const uint64_t in = o->ne[0], rows = o->ne[1], W = t->shape[2];
    const size_t row_bytes = mc_dtype_row_bytes(o->type, in);
    float *tr = malloc((size_t)(in * rows) * sizeof *tr), *src = malloc((size_t)W * sizeof *src);
    mc_err_t rc = tr && src ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "%s: out of memory", o->name);
    for (uint64_t e = 0; e < o->ne[2] && !rc; e++) {
        for (uint64_t i = 0; i < in; i++) {
            s_load_row(t, e * in + i, W, src);
            for (uint64_t j = 0; j < rows; j++) tr[j * in + i] = src[s_picked(j, o->pick)];
        }
        for (uint64_t j = 0; j < rows && !rc; j++, out += row_bytes)
            if (mc_quant_quantize_row(o->type, tr + j * in, out, (int64_t)in))
                rc = mc_err_set(err, MC_ERR_FORMAT, "%s: converting to %s failed", o->name, mc_dtype_name(o->type));
    }
    free(tr);
    free(src);
    mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    return rc;
}

// GPT-OSS MXFP4 experts. A Hugging Face block is 16 bytes holding values
// 2i (low nibble) and 2i+1 (high nibble) in byte i; a GGUF block is the
// scale byte then 16 bytes holding values j (low) and j + 16 (high) in
// byte j. Both scales are E8M0 with bias 127 and the 4-bit codes are the
// same E2M1 values, so the bits move and nothing is rounded. A scale of
// 0xFF (E8M0's NaN) is refused.
static mc_err_t s_fill_oss_mxfp4(const s_fill_ctx_t *ctx, const s_out_t *o, uint8_t *out, char *err) {
    const mc_safetensors_tensor_t *bl = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    const mc_safetensors_tensor_t *sc = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0 + 1]);
    const uint64_t src_rows = bl->shape[1], nb = bl->shape[2];
    for (uint64_t e = 0; e < o->ne[2]; e++) {
        for (uint64_t r = 0; r < o->ne[1]; r++) {
            const uint64_t sr = e * src_rows + s_picked(r, o->pick);
            for (uint64_t b = 0; b < nb; b++, out += sizeof(mc_block_mxfp4_t)) {
                const uint8_t scale = sc->data[sr * nb + b], *q = bl->data + (sr * nb + b) * 16;
                if (scale == MC_E8M0_NAN)
                    return mc_err_set(err, MC_ERR_FORMAT, "tensor '%s': expert %llu row %llu block %llu has scale 0xFF "
                                      "(NaN in E8M0)", sc->name, (unsigned long long)e,
                                      (unsigned long long)s_picked(r, o->pick), (unsigned long long)b);
                mc_block_mxfp4_t blk = {.e = scale};
                for (int j = 0; j < MC_QK / 2; j++) {
                    const uint8_t lo = (uint8_t)(q[j / 2] >> (4 * (j % 2)) & 0xF);
                    const uint8_t hi = (uint8_t)(q[8 + j / 2] >> (4 * (j % 2)) & 0xF);
                    blk.qs[j] = (uint8_t)(lo | hi << 4);
                }
                memcpy(out, &blk, sizeof blk);
            }
        }
    }
    mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0]);
    mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0 + 1]);
    return MC_OK;
}

static mc_err_t s_fill(void *vctx, size_t index, void *dst, size_t size, char *err) {
    const s_fill_ctx_t *ctx = vctx;
    const s_out_t *o = &ctx->pl->outs[index];
    const uint64_t ne0 = o->ne[0], rows = o->n_dims == 1 ? 1 : o->ne[1];
    const size_t row_bytes = mc_dtype_row_bytes(o->type, ne0);
    if ((uint64_t)size != row_bytes * rows * o->ne[2])
        return mc_err_set(err, MC_ERR_ARG, "%s: %zu bytes requested, %llu planned", o->name, size,
                          (unsigned long long)(row_bytes * rows * o->ne[2]));
    uint8_t *out = dst;
    if (o->kvb) return s_fill_kvb(ctx, o, out, err);
    if (o->oss == S_OSS_COLS) return s_fill_oss_cols(ctx, o, out);
    if (o->oss == S_OSS_T) return s_fill_oss_t(ctx, o, out, err);
    if (o->oss == S_OSS_MXFP4) return s_fill_oss_mxfp4(ctx, o, out, err);
    for (size_t s = 0; s < o->n_src; s++) {
        const mc_safetensors_tensor_t *t = mc_safetensors_dir_at(ctx->pl->dir, ctx->pl->srcs[o->src0 + s]);
        for (uint64_t r = 0; r < rows; r++, out += row_bytes) {
            s_load_row(t, o->permute_heads ? s_permuted(r, rows, o->permute_heads) : r, ne0, ctx->row);
            mc_err_t rc = mc_quant_quantize_row(o->type, ctx->row, out, (int64_t)ne0);
            if (rc) return mc_err_set(err, rc, "%s: converting to %s failed", o->name, mc_dtype_name(o->type));
        }
        mc_safetensors_dir_release(ctx->pl->dir, ctx->pl->srcs[o->src0 + s]);
    }
    return MC_OK;
}

// --- summary ---------------------------------------------------------------------------------

static void s_print_summary(FILE *f, const s_plan_t *pl, const char *out_path, uint64_t file_size) {
    bool any_fallback = false;
    for (int c = 0; c < S_CLS_N; c++) {
        size_t n = 0;
        uint64_t bytes = 0;
        char types[160] = "";
        size_t tl = 0;
        // Distinct (type, fallback) pairs of the class in order of first use.
        for (size_t i = 0; i < pl->n_outs; i++) {
            const s_out_t *o = &pl->outs[i];
            if ((int)o->cls != c) continue;
            n++;
            bytes += mc_dtype_row_bytes(o->type, o->ne[0]) * o->ne[1] * o->ne[2];
            bool first = true;
            for (size_t j = 0; j < i && first; j++)
                first = !((int)pl->outs[j].cls == c && pl->outs[j].type == o->type && pl->outs[j].fallback == o->fallback);
            if (!first) continue;
            size_t same = 0;
            for (size_t j = i; j < pl->n_outs; j++)
                same += (int)pl->outs[j].cls == c && pl->outs[j].type == o->type && pl->outs[j].fallback == o->fallback;
            any_fallback |= o->fallback;
            if (tl < sizeof types)
                tl += (size_t)snprintf(types + tl, sizeof types - tl, "%s%s x%zu%s", tl ? ", " : "",
                                       mc_dtype_name(o->type), same, o->fallback ? "*" : "");
        }
        if (n)
            fprintf(f, "  %-16s %5zu tensor%s  %-24s %10.2f MiB\n", s_cls_name[c], n, n == 1 ? " " : "s", types,
                    (double)bytes / (1024.0 * 1024.0));
    }
    if (any_fallback)
        fprintf(f, "  * rows not a whole number of %s blocks: Q8_0, or F16 when not of Q8_0 blocks either\n",
                mc_dtype_name(pl->want));
    fprintf(f, "wrote %s: %zu tensors, %.2f MiB\n", out_path, pl->n_outs, (double)file_size / (1024.0 * 1024.0));
}

// --- the conversion ----------------------------------------------------------------------------

static void s_base_name(const char *dir, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), dir + b);
}

mc_err_t mc_convert(const char *hf_dir, const char *out_path, const mc_convert_params_t *params, char *err) {
    const mc_convert_params_t p = params ? *params : mc_convert_params_default();
    if (!hf_dir || !out_path) return mc_err_set(err, MC_ERR_ARG, "convert: no folder or output path");
    if (!p.type_auto && (!mc_dtype_traits(p.type) || !mc_dtype_traits(p.type)->weight))
        return mc_err_set(err, MC_ERR_ARG, "convert: %s is not a weight type", mc_dtype_name(p.type));
    cJSON *cfg = NULL, *tcfg = NULL;
    mc_safetensors_dir_t *dir = NULL;
    s_plan_t pl = {0};
    s_vocab_t v = {0};
    mc_gguf_writer_t *w = NULL;
    s_fill_ctx_t fill = {&pl, NULL};
    const s_arch_t *a = NULL;
    s_hp_t hp = {0};
    mc_err_t rc = s_read_json(hf_dir, "config.json", S_MAX_CONFIG, true, &cfg, err);
    if (!rc) rc = s_find_arch(cfg, &a, err);
    if (!rc) rc = s_read_hparams(cfg, a, &hp, err);
    if (!rc) rc = s_read_json(hf_dir, "tokenizer_config.json", S_MAX_CONFIG, false, &tcfg, err);
    if (!rc && !(dir = mc_safetensors_dir_open(hf_dir, err))) rc = mc_err_code(err, MC_ERR_FORMAT);
    if (!rc) {
        pl.dir = dir;
        size_t emb = mc_safetensors_dir_find(dir, "model.embed_tokens.weight");
        pl.want = p.type_auto ? (emb == SIZE_MAX ? MC_DTYPE_F32 : mc_safetensors_dir_at(dir, emb)->dtype) : p.type;
        rc = s_plan_build(&pl, a, &hp, err);
    }
    if (!rc) {
        const char *bpe_pre = mc_arch_get(a->family)->bpe_pre;
        rc = bpe_pre ? s_vocab_bpe(hf_dir, cfg, tcfg, hp.n_vocab, a, &v, err)
                     : s_vocab_spm(hf_dir, cfg, tcfg, hp.n_vocab, &v, err);
    }
    if (!rc) rc = s_vocab_template_file(hf_dir, &v, err);
    if (!rc && p.log)
        fprintf(p.log, "%s -> %s: %u layer%s, %u experts (%u used), vocabulary %u (%s), %zu shard%s, matrices %s\n",
                a->hf, mc_arch_get(a->family)->name, hp.n_layer, hp.n_layer == 1 ? "" : "s", hp.n_expert, hp.n_expert_used, hp.n_vocab,
                v.model, mc_safetensors_dir_shards(dir), mc_safetensors_dir_shards(dir) == 1 ? "" : "s",
                mc_dtype_name(pl.want));
    if (!rc && !(w = mc_gguf_writer_new(0))) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) {
        char name[256];
        if (p.name) snprintf(name, sizeof name, "%s", p.name);
        else s_base_name(hf_dir, name, sizeof name);
        // MXFP4 experts kept: the file type llama-quantize gives such files (MXFP4_MOE).
        rc = s_add_meta(w, a, &hp, &v, pl.mxfp4_kept ? MC_DTYPE_MXFP4 : pl.want, name, err);
    }
    s_vocab_free(&v); // the writer holds its own copy now
    uint64_t max_row = 1, total = 0;
    for (size_t i = 0; i < pl.n_outs && !rc; i++) {
        const s_out_t *o = &pl.outs[i];
        rc = mc_gguf_writer_add_tensor(w, o->name, o->type, o->n_dims, o->ne);
        if (rc) rc = mc_err_set(err, rc, "adding tensor '%s' failed: %s", o->name, mc_err_name(rc));
        if (o->ne[0] > max_row) max_row = o->ne[0];
        total += mc_dtype_row_bytes(o->type, o->ne[0]) * o->ne[1] * o->ne[2];
    }
    if (!rc && !(fill.row = malloc(max_row * sizeof *fill.row))) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) rc = mc_gguf_writer_write_file(w, out_path, s_fill, &fill, err);
    if (!rc && p.log) {
        struct stat sb;
        s_print_summary(p.log, &pl, out_path, stat(out_path, &sb) == 0 ? (uint64_t)sb.st_size : total);
    }
    free(fill.row);
    mc_gguf_writer_destroy(&w);
    s_vocab_free(&v);
    s_plan_free(&pl);
    mc_safetensors_dir_destroy(&dir);
    cJSON_Delete(tcfg);
    cJSON_Delete(cfg);
    return rc;
}
