/*
 * arch: the per-architecture traits table (see arch.h).
 *
 * The values follow how llama.cpp evaluates each family, since that is the
 * engine GGUF files are made for: Qwen3-MoE always renormalises its top-k
 * weights (Qwen3-30B-A3B ships norm_topk_prob = true), OLMoE never does, and
 * both rotate halves of a head as their Hugging Face originals do.
 * Qwen2-MoE (llama.cpp's qwen2moe graph) leaves its top-k softmax weights as
 * they are (build_moe_ffn with norm_w false; Qwen1.5-MoE-A2.7B and
 * Qwen2-57B-A14B ship norm_topk_prob = false), adds q/k/v biases and a
 * shared expert with a sigmoid gate. DeepSeek-V2 and V3 (llama.cpp's
 * deepseek2 graph) rotate adjacent pairs of their RoPE parts, take their
 * routing from the file (V2: softmax, V2-Lite without renormalisation or
 * scale; V3: sigmoid, a selection bias, groups, renormalised and scaled),
 * and add their shared experts ungated.
 */
#include "arch.h"

#include <string.h>

#define S_SOFTMAX(norm) {MC_GATING_SOFTMAX, (norm), 1.0f, 0, 0}

static const mc_arch_info_t s_archs[] = {
    {.name = "llama", .id = MC_ARCH_LLAMA, .rope = MC_ROPE_NORM, .qk_norm = MC_QKNORM_NONE, .route = S_SOFTMAX(true),
     .family = "Mixtral", .ffn_norm_name = "ffn_norm"},
    {.name = "qwen3moe", .id = MC_ARCH_QWEN3MOE, .rope = MC_ROPE_NEOX, .qk_norm = MC_QKNORM_HEAD,
     .route = S_SOFTMAX(true), .expert_ffn_key = true, .family = "Qwen3-MoE", .bpe_pre = "qwen2",
     .ffn_norm_name = "ffn_norm"},
    {.name = "olmoe", .id = MC_ARCH_OLMOE, .rope = MC_ROPE_NEOX, .qk_norm = MC_QKNORM_FULL, .route = S_SOFTMAX(false),
     .family = "OLMoE", .bpe_pre = "olmo", .ffn_norm_name = "ffn_norm"},
    {.name = "qwen2moe", .id = MC_ARCH_QWEN2MOE, .rope = MC_ROPE_NEOX, .qk_norm = MC_QKNORM_NONE,
     .route = S_SOFTMAX(false), .expert_ffn_key = true, .family = "Qwen2-MoE", .bpe_pre = "qwen2", .qkv_bias = true,
     .shared_expert = MC_SHEXP_FFN_KEY, .shexp_gated = true, .ffn_norm_name = "ffn_norm", .dense_lead = true},
    // GLM-4.5 (llama.cpp's glm4moe graph): sigmoid scores, a selection bias,
    // weights renormalised (the file's expert_weights_norm, true in
    // converted GLM-4.5 files) and scaled; one ungated shared expert; dense
    // leading layers; per-head q/k norms in GLM-4.5 only; partial RoPE on
    // halves (rope.dimension_count); a trailing next-token-prediction layer.
    // moe-mkmodel writes its test files with Qwen2's pre-tokenizer (their
    // llama.cpp fixtures were made so); real files say "glm4" (digits in
    // runs of 1-3), which the tokenizer has too.
    {.name = "glm4moe", .id = MC_ARCH_GLM4MOE, .rope = MC_ROPE_NEOX, .qk_norm = MC_QKNORM_HEAD,
     .route = {MC_GATING_SIGMOID, false, 1.0f, 0, 0}, .route_keys = true, .expert_ffn_key = true,
     .family = "GLM-4.5", .bpe_pre = "qwen2", .qkv_bias = true, .shared_expert = MC_SHEXP_COUNT,
     .expert_bias = MC_NEED_REQUIRED, .qk_norm_optional = true, .ffn_norm_name = "post_attention_norm",
     .dense_lead = true, .nextn = true},
    // DeepSeek-V2 and V3/R1 (llama.cpp's deepseek2 graph): softmax unless
    // the file says otherwise (V3: sigmoid, model.c s_read_route), a
    // selection bias when the layer has one, expert groups, leading dense
    // layers and trailing next-token-prediction layers (skipped) as the
    // file's keys say.
    {.name = "deepseek2", .id = MC_ARCH_DEEPSEEK2, .rope = MC_ROPE_NORM, .qk_norm = MC_QKNORM_NONE,
     .route = S_SOFTMAX(false), .route_keys = true, .expert_ffn_key = true, .family = "DeepSeek-V2/V3",
     .bpe_pre = "gpt-2", .shared_expert = MC_SHEXP_COUNT, .mla = true, .expert_bias = MC_NEED_OPTIONAL,
     .ffn_norm_name = "ffn_norm", .dense_lead = true, .nextn = true},
    // GPT-OSS (llama.cpp's openai-moe graph): RoPE on halves, YaRN from the
    // file, q/k/v biases (optional in llama.cpp's loader) and an output
    // bias, attention sinks, sliding-window attention on every other layer,
    // a router bias, the logits choosing and a softmax over the chosen ones
    // weighing (not renormalised after it), biased experts with the clamped
    // SwiGLU, post_attention_norm as the FFN norm. moe-mkmodel writes its
    // test files with Qwen2's pre-tokenizer (their llama.cpp fixtures were
    // made so); real files say "gpt-4o" (o200k), which the tokenizer has too.
    {.name = "gpt-oss", .id = MC_ARCH_GPTOSS, .rope = MC_ROPE_NEOX, .qk_norm = MC_QKNORM_NONE,
     .route = {MC_GATING_SOFTMAX_WEIGHT, false, 1.0f, 0, 0}, .expert_ffn_key = true, .family = "GPT-OSS",
     .bpe_pre = "qwen2", .qkv_bias = true, .ffn_norm_name = "post_attention_norm", .attn_sinks = true,
     .attn_out_bias = true, .swa = true, .router_bias = true, .expert_ffn_bias = true, .act = MC_ACT_SWIGLU_OAI},
};

const mc_arch_info_t *mc_arch_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (strlen(s_archs[i].name) == len && memcmp(s_archs[i].name, name, len) == 0) return &s_archs[i];
    return NULL;
}

const mc_arch_info_t *mc_arch_get(mc_arch_t id) {
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (s_archs[i].id == id) return &s_archs[i];
    return NULL;
}

const char *mc_arch_supported(void) {
    return "llama (Mixtral), qwen3moe (Qwen3-MoE), olmoe (OLMoE), qwen2moe (Qwen2-MoE), deepseek2 (DeepSeek-V2/V3), "
           "glm4moe (GLM-4.5), gpt-oss (GPT-OSS)";
}
