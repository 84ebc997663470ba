/*
 * arch: the per-architecture traits table (see arch.h).
 *
 * The values follow how llama.cpp evaluates each family, since that is the
 * engine GGUF files are made for: Qwen3-MoE always renormalises its top-k
 * weights (Qwen3-30B-A3B ships norm_topk_prob = true), OLMoE never does, and
 * both rotate halves of a head as their Hugging Face originals do.
 */
#include "arch.h"

#include <string.h>

static const mc_arch_info_t s_archs[] = {
    {"llama", MC_ARCH_LLAMA, MC_ROPE_NORM, MC_QKNORM_NONE, true, false, "Mixtral", NULL},
    {"qwen3moe", MC_ARCH_QWEN3MOE, MC_ROPE_NEOX, MC_QKNORM_HEAD, true, true, "Qwen3-MoE", "qwen2"},
    {"olmoe", MC_ARCH_OLMOE, MC_ROPE_NEOX, MC_QKNORM_FULL, false, false, "OLMoE", "olmo"},
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

const char *mc_arch_supported(void) { return "llama (Mixtral), qwen3moe (Qwen3-MoE), olmoe (OLMoE)"; }
