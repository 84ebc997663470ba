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
 * shared expert with a sigmoid gate. DeepSeek-V2 (llama.cpp's deepseek2
 * graph) rotates adjacent pairs of its RoPE parts, takes its softmax
 * routing's renormalisation and scale from the file (V2-Lite: neither), and
 * adds its shared experts ungated.
 */
#include "arch.h"

#include <string.h>

static const mc_arch_info_t s_archs[] = {
    {"llama", MC_ARCH_LLAMA, MC_ROPE_NORM, MC_QKNORM_NONE, true, false, "Mixtral", NULL, false, MC_SHEXP_NONE, false, false},
    {"qwen3moe", MC_ARCH_QWEN3MOE, MC_ROPE_NEOX, MC_QKNORM_HEAD, true, true, "Qwen3-MoE", "qwen2", false, MC_SHEXP_NONE, false, false},
    {"olmoe", MC_ARCH_OLMOE, MC_ROPE_NEOX, MC_QKNORM_FULL, false, false, "OLMoE", "olmo", false, MC_SHEXP_NONE, false, false},
    {"qwen2moe", MC_ARCH_QWEN2MOE, MC_ROPE_NEOX, MC_QKNORM_NONE, false, true, "Qwen2-MoE", "qwen2", true, MC_SHEXP_FFN_KEY, true, false},
    {"deepseek2", MC_ARCH_DEEPSEEK2, MC_ROPE_NORM, MC_QKNORM_NONE, false, true, "DeepSeek-V2", "gpt-2", false,
     MC_SHEXP_COUNT, false, true},
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

const char *mc_arch_supported(void) { return "llama (Mixtral), qwen3moe (Qwen3-MoE), olmoe (OLMoE), qwen2moe (Qwen2-MoE), deepseek2 (DeepSeek-V2)";
}
