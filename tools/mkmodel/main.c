/*
 * moe-mkmodel: command-line front end of tools/mkmodel: parses flags into
 * mc_mkmodel_params_t and writes a random-weight mixture-of-experts GGUF file.
 *
 * Exit status: 0 written, 1 the write failed, 2 bad command line.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flags.h"
#include "mkmodel.h"

#define S_PROG "moe-mkmodel"

typedef struct {
    mc_mkmodel_params_t p;
    const char *out; // -o
    bool bench;      // --bench-model: the preset, under the other flags
} s_opts_t;

// --type T: a weight type, by name.
static mc_err_t s_parse_type(const char *flag, const char *v, void *field, char *err) {
    mc_dtype_t t;
    const mc_dtype_traits_t *tr = mc_dtype_from_name(v, &t) ? mc_dtype_traits(t) : NULL;
    if (!tr || !tr->weight) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a weight type", flag, v);
    *(mc_dtype_t *)field = t;
    return MC_OK;
}

// --arch A: a family, by its GGUF name.
static mc_err_t s_parse_arch(const char *flag, const char *v, void *field, char *err) {
    const mc_arch_info_t *a = mc_arch_find(v, strlen(v));
    if (!a) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not llama, qwen3moe, olmoe, qwen2moe, deepseek2 or glm4moe", flag, v);
    *(mc_arch_t *)field = a->id;
    return MC_OK;
}

// --gating G: the routing's scoring function, by name.
static mc_err_t s_parse_gating(const char *flag, const char *v, void *field, char *err) {
    if (strcmp(v, "softmax") == 0) *(mc_gating_t *)field = MC_GATING_SOFTMAX;
    else if (strcmp(v, "sigmoid") == 0) *(mc_gating_t *)field = MC_GATING_SIGMOID;
    else return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not softmax or sigmoid", flag, v);
    return MC_OK;
}

// Every number's default is mc_mkmodel_params_default()'s (or the preset's).
#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(s_opts_t, field)
#define S_SHAPE(name, field, max, text) {S_ROW(name, "N", MC_FLAG_U32, p.field), MC_FLAG_DEF_OWN, 1, max, .help = text}
static const mc_flag_t s_flags[] = {
    {S_ROW("-o", "FILE", MC_FLAG_FILE, out), .help = "output path (required)"},
    {S_ROW("--arch", "A", MC_FLAG_CUSTOM, p.arch), .parse = s_parse_arch,
     .help = "llama (Mixtral, default), qwen3moe, olmoe, qwen2moe,\ndeepseek2, glm4moe or gpt-oss"},
    S_SHAPE("--dim", dim, MC_MK_MAX_DIM, "embedding length"),
    S_SHAPE("--ffn", ffn, MC_MK_MAX_DIM, "expert hidden size"),
    {S_ROW("--ffn-shexp", "N", MC_FLAG_U32, p.ffn_shexp), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_DIM,
     .help = "shared expert hidden size, qwen2moe (default 0: 4 x ffn)\nor deepseek2 and glm4moe (a multiple of ffn; 0: 2 x ffn)"},
    S_SHAPE("--layers", n_layer, MC_MK_MAX_LAYERS, "transformer blocks (evaluated ones)"),
    {S_ROW("--dense-layers", "N", MC_FLAG_U32, p.n_dense_lead), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_LAYERS,
     .help = "glm4moe, deepseek2, qwen2moe: leading dense layers\n(default 0)"},
    {S_ROW("--moe-step", "N", MC_FLAG_U32, p.moe_step), MC_FLAG_DEF_TEXT, 1, MC_MK_MAX_LAYERS,
     .help = "glm4moe, deepseek2, qwen2moe: after the dense layers,\nlayer l is MoE iff (l + 1) % N == 0, dense otherwise\n(interleave_moe_layer_step; default 1: every layer)"},
    {S_ROW("--ffn-dense", "N", MC_FLAG_U32, p.ffn_dense), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_DIM,
     .help = "glm4moe, deepseek2, qwen2moe: dense layers' hidden size\n(default 0: 4 x ffn)"},
    {S_ROW("--nextn", "N", MC_FLAG_U32, p.n_nextn), MC_FLAG_DEF_TEXT, 0, 16,
     .help = "glm4moe, deepseek2: trailing next-token-prediction layers\n(default 0)"},
    {S_ROW("--groups", "N", MC_FLAG_U32, p.n_group), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_EXPERTS,
     .help = "expert_group_count (default 0: not written)"},
    {S_ROW("--groups-used", "N", MC_FLAG_U32, p.n_group_used), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_EXPERTS,
     .help = "expert_group_used_count: groups kept per token"},
    {S_ROW("--gating", "G", MC_FLAG_CUSTOM, p.gating), .parse = s_parse_gating,
     .help = "deepseek2, glm4moe: softmax or sigmoid, written with\nexpert_weights_norm true (default: the family's; deepseek2\nwrites neither, V2's softmax)"},
    {S_ROW("--selection-bias", NULL, MC_FLAG_SWITCH, p.expert_bias),
     .help = "deepseek2: a selection bias exp_probs_b per MoE layer\n(DeepSeek-V3's; glm4moe always has one)"},
    {S_ROW("--swa", "N", MC_FLAG_U32, p.n_swa), MC_FLAG_DEF_TEXT, 0, 1u << 24,
     .help = "gpt-oss: attention.sliding_window, the window of every other\nlayer (default 0: 128)"},
    S_SHAPE("--heads", n_head, MC_MK_MAX_DIM, "query heads"),
    S_SHAPE("--kv-heads", n_head_kv, MC_MK_MAX_DIM, "key/value heads"),
    {S_ROW("--head-dim", "N", MC_FLAG_U32, p.head_dim), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_HEAD_DIM,
     .help = "head width, written as key_length (default 0: dim/heads);\ndeepseek2: a query head, nope + rope"},
    {S_ROW("--kv-lora-rank", "N", MC_FLAG_U32, p.kv_lora_rank), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_DIM,
     .help = "deepseek2: the cached latent's width (default 0: dim)"},
    {S_ROW("--q-lora-rank", "N", MC_FLAG_U32, p.q_lora_rank), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_DIM,
     .help = "deepseek2: a compressed query of N (attn_q_a, attn_q_b;\ndefault 0: attn_q directly, V2-Lite's)"},
    {S_ROW("--rope-dim", "N", MC_FLAG_U32, p.rope_dim), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_HEAD_DIM,
     .help = "rotated dims of a head (default 0: deepseek2 head_dim/4,\nthe others the whole head)"},
    {S_ROW("--head-dim-v", "N", MC_FLAG_U32, p.head_dim_v), MC_FLAG_DEF_TEXT, 0, MC_MK_MAX_HEAD_DIM,
     .help = "deepseek2: value head width (default 0: head_dim - rope)"},
    {S_ROW("--yarn-factor", "F", MC_FLAG_F32, p.yarn_factor), MC_FLAG_DEF_TEXT, .flo = 0, .fhi = 1e4,
     .help = "YaRN RoPE scaling factor (default 0: no scaling)"},
    {S_ROW("--yarn-orig-ctx", "N", MC_FLAG_U32, p.yarn_orig_ctx), MC_FLAG_DEF_TEXT, 0, UINT32_MAX,
     .help = "YaRN's original context (default 0: ctx / factor)"},
    {S_ROW("--yarn-mscale-all-dim", "F", MC_FLAG_F32, p.yarn_mscale_all_dim), MC_FLAG_DEF_TEXT, .flo = 0, .fhi = 100,
     .help = "DeepSeek's YaRN mscale_all_dim (default 0: none)"},
    {S_ROW("--weights-scale", "F", MC_FLAG_F32, p.expert_weights_scale), MC_FLAG_DEF_TEXT, .flo = 0, .fhi = 1e4,
     .help = "expert_weights_scale: routed weights times F (default 0:\nnot written)"},
    S_SHAPE("--experts", n_expert, MC_MK_MAX_EXPERTS, "experts per layer"),
    S_SHAPE("--experts-used", n_expert_used, MC_MK_MAX_EXPERTS, "experts used per token"),
    S_SHAPE("--vocab", n_vocab, MC_MK_MAX_VOCAB, "vocabulary size"),
    S_SHAPE("--ctx", ctx_len, UINT32_MAX, "context length"),
    {S_ROW("--rope-base", "F", MC_FLAG_F32, p.rope_base), .help = "RoPE frequency base", .flo = 1e-3, .fhi = 1e12},
    {S_ROW("--rms-eps", "F", MC_FLAG_F32, p.rms_eps), .help = "RMSNorm epsilon", .flo = 1e-12, .fhi = 1},
    {S_ROW("--type", "T", MC_FLAG_CUSTOM, p.type), .parse = s_parse_type,
     .help = "matrix type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K\nQ4_K Q5_K Q6_K, or MXFP4 (the experts; the rest F32)\n(default F32)"},
    {S_ROW("--legacy", NULL, MC_FLAG_SWITCH, p.legacy_layout),
     .help = "per-expert tensors blk.N.ffn_*.E (default: merged *_exps)"},
    {S_ROW("--tie-output", NULL, MC_FLAG_SWITCH, p.tie_output), .help = "no output.weight: the head reuses token_embd"},
    {S_ROW("--seed", "N", MC_FLAG_U64, p.seed), .help = "random seed"},
    {S_ROW("--router-skew", "S", MC_FLAG_F32, p.router_skew),
     .help = "uneven routing for placement experiments: expert e's router\n"
             "row scaled by S^(-e/(experts-1)), so expert 0 is chosen most\n"
             "(1: no skew)",
     .flo = 1, .fhi = 1e6},
    {S_ROW("--bench-model", NULL, MC_FLAG_SWITCH, bench),
     .help = "benchmark preset: dim 1024, ffn 3584, 8 layers, 16/4 heads,\n"
             "8 experts (2 used), vocab 32000, Q4_0; other flags override it"},
};
#undef S_SHAPE
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

static void s_usage(FILE *f) {
    fprintf(f, "usage: " S_PROG " -o FILE [options]\n"
               "Write a random-weight mixture-of-experts GGUF model (deterministic from the seed).\n");
    const s_opts_t d = {.p = mc_mkmodel_params_default()};
    mc_flags_usage(f, s_flags, S_N_FLAGS, 21, &d);
}

int main(int argc, char **argv) {
    s_opts_t o = {.p = mc_mkmodel_params_default()}, first = o;
    bool help;
    char err[MC_ERR_LEN];
    // The preset is applied first wherever it stands, so explicit flags win:
    // a first parse finds it, the second starts from it.
    mc_err_t rc = mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &first, &help, NULL, err);
    if (!rc && !help) {
        if (first.bench) o.p = mc_mkmodel_params_bench(MC_DTYPE_Q4_0);
        rc = mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &o, &help, NULL, err);
    }
    if (rc) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 2;
    }
    if (help) {
        s_usage(stdout);
        return 0;
    }
    if (!o.out) {
        fprintf(stderr, S_PROG ": -o FILE is required (see --help)\n");
        return 2;
    }
    if (mc_mkmodel_check(&o.p, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 2;
    }
    if (mc_mkmodel_write(&o.p, o.out, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 1;
    }
    printf("wrote %s\n", o.out);
    return 0;
}
