/*
 * moe-mkmodel: command-line front end of tools/mkmodel: parses flags into
 * mc_mkmodel_params_t and writes a random-weight mixture-of-experts GGUF file.
 *
 * Exit status: 0 written, 1 the write failed, 2 bad command line.
 */
#include <float.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mkmodel.h"
#include "parse.h"

#define S_PROG "moe-mkmodel"

// Flags followed by a value (the rest are switches).
static const char *const s_value_flags[] = {
    "-o",      "--dim",          "--ffn",   "--layers", "--heads",     "--kv-heads", "--experts",
    "--experts-used", "--vocab", "--ctx",   "--rope-base", "--rms-eps", "--type",    "--seed",
    "--router-skew", "--arch", "--head-dim",
};

static bool s_takes_value(const char *flag) {
    for (size_t i = 0; i < sizeof s_value_flags / sizeof s_value_flags[0]; i++)
        if (!strcmp(flag, s_value_flags[i])) return true;
    return false;
}

static void s_usage(FILE *f) {
    const mc_mkmodel_params_t d = mc_mkmodel_params_default();
    fprintf(f,
            "usage: " S_PROG " -o FILE [options]\n"
            "Write a random-weight mixture-of-experts GGUF model (deterministic from the seed).\n"
            "  -o FILE            output path (required)\n"
            "  --arch A           llama (Mixtral, default), qwen3moe or olmoe\n"
            "  --dim N            embedding length (default %u)\n"
            "  --ffn N            expert hidden size (default %u)\n"
            "  --layers N         transformer blocks (default %u)\n"
            "  --heads N          query heads (default %u)\n"
            "  --kv-heads N       key/value heads (default %u)\n"
            "  --head-dim N       head width when not dim/heads (written as key_length)\n"
            "  --experts N        experts per layer (default %u)\n"
            "  --experts-used N   experts used per token (default %u)\n"
            "  --vocab N          vocabulary size (default %u)\n"
            "  --ctx N            context length (default %u)\n"
            "  --rope-base F      RoPE frequency base (default %g)\n"
            "  --rms-eps F        RMSNorm epsilon (default %g)\n"
            "  --type T           matrix type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K\n"
            "                     Q4_K Q5_K Q6_K (default %s)\n"
            "  --legacy           per-expert tensors blk.N.ffn_*.E (default: merged *_exps)\n"
            "  --tie-output       no output.weight: the head reuses token_embd\n"
            "  --seed N           random seed (default %llu)\n"
            "  --router-skew S    uneven routing for placement experiments: expert e's router\n"
            "                     row scaled by S^(-e/(experts-1)), so expert 0 is chosen most\n"
            "                     (default 1: no skew)\n"
            "  --bench-model      benchmark preset: dim 1024, ffn 3584, 8 layers, 16/4 heads,\n"
            "                     8 experts (2 used), vocab 32000, Q4_0; other flags override it\n"
            "  --help             show this text\n",
            d.dim, d.ffn, d.n_layer, d.n_head, d.n_head_kv, d.n_expert, d.n_expert_used, d.n_vocab,
            d.ctx_len, (double)d.rope_base, (double)d.rms_eps, mc_dtype_name(d.type),
            (unsigned long long)d.seed);
}

static bool s_u32(const char *flag, const char *v, uint32_t *out) {
    uint64_t x;
    if (mc_parse_u64(flag, v, UINT32_MAX, &x, NULL)) return false;
    *out = (uint32_t)x;
    return true;
}

static bool s_apply(mc_mkmodel_params_t *p, const char **out, const char *flag, const char *v) {
    if (!strcmp(flag, "-o")) {
        *out = v;
        return *v != '\0';
    }
    if (!strcmp(flag, "--dim")) return s_u32(flag, v, &p->dim);
    if (!strcmp(flag, "--ffn")) return s_u32(flag, v, &p->ffn);
    if (!strcmp(flag, "--layers")) return s_u32(flag, v, &p->n_layer);
    if (!strcmp(flag, "--heads")) return s_u32(flag, v, &p->n_head);
    if (!strcmp(flag, "--kv-heads")) return s_u32(flag, v, &p->n_head_kv);
    if (!strcmp(flag, "--experts")) return s_u32(flag, v, &p->n_expert);
    if (!strcmp(flag, "--experts-used")) return s_u32(flag, v, &p->n_expert_used);
    if (!strcmp(flag, "--vocab")) return s_u32(flag, v, &p->n_vocab);
    if (!strcmp(flag, "--ctx")) return s_u32(flag, v, &p->ctx_len);
    if (!strcmp(flag, "--rope-base")) return !mc_parse_f32(flag, v, -FLT_MAX, FLT_MAX, &p->rope_base, NULL);
    if (!strcmp(flag, "--rms-eps")) return !mc_parse_f32(flag, v, -FLT_MAX, FLT_MAX, &p->rms_eps, NULL);
    if (!strcmp(flag, "--seed")) return !mc_parse_u64(flag, v, UINT64_MAX, &p->seed, NULL);
    if (!strcmp(flag, "--router-skew")) return !mc_parse_f32(flag, v, 1.0f, 1e6f, &p->router_skew, NULL);
    if (!strcmp(flag, "--type")) return mc_dtype_from_name(v, &p->type);
    if (!strcmp(flag, "--head-dim")) return s_u32(flag, v, &p->head_dim);
    if (!strcmp(flag, "--arch")) {
        const mc_arch_info_t *a = mc_arch_find(v, strlen(v));
        if (a) p->arch = a->id;
        return a != NULL;
    }
    return false;
}

int main(int argc, char **argv) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    // The preset is applied first wherever it appears, so explicit flags win.
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bench-model")) {
            p = mc_mkmodel_params_bench(MC_DTYPE_Q4_0);
        } else if (s_takes_value(argv[i])) {
            i++;
        }
    }
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--bench-model")) continue;
        if (!strcmp(a, "--legacy")) {
            p.legacy_layout = true;
            continue;
        }
        if (!strcmp(a, "--tie-output")) {
            p.tie_output = true;
            continue;
        }
        if (!s_takes_value(a)) {
            fprintf(stderr, S_PROG ": unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, S_PROG ": option %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!s_apply(&p, &out, a, v)) {
            fprintf(stderr, S_PROG ": invalid value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, S_PROG ": missing -o FILE (see --help)\n");
        return 2;
    }
    char err[MC_ERR_LEN];
    if (mc_mkmodel_check(&p, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 2;
    }
    if (mc_mkmodel_write(&p, out, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
