/*
 * mkmodel: writes random-weight mixture-of-experts GGUF files (Mixtral,
 * Qwen3-MoE, OLMoE, Qwen2-MoE, DeepSeek-V2/V3, GLM-4.5 and GPT-OSS architectures).
 *
 * Tests, the demo and the benchmark need models of chosen shapes without
 * downloading anything. Everything is deterministic from the seed: the same
 * parameters give a byte-identical file, and the merged and legacy expert
 * layouts of one seed hold the same weights.
 */
#ifndef MC_MKMODEL_H
#define MC_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch.h"
#include "dtype.h"
#include "error.h"

// The largest shapes mc_mkmodel_check accepts.
#define MC_MK_MAX_VOCAB (1u << 20)
#define MC_MK_MAX_DIM (1u << 20)
#define MC_MK_MAX_LAYERS 1024u
#define MC_MK_MAX_EXPERTS 256u
#define MC_MK_MAX_HEAD_DIM 4096u

typedef struct {
    mc_arch_t arch;         // family: metadata prefix, q/k norm tensors
    uint32_t dim;           // embedding length
    uint32_t ffn;           // expert hidden size
    uint32_t ffn_shexp;     // shared expert hidden size (families with one); 0: 4 * ffn
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;      // 0: dim / n_head; else written as attention.key_length
    uint32_t n_expert;
    uint32_t n_expert_used;
    uint32_t n_vocab;       // >= 259 (3 control + 256 byte tokens) plus some merges
    uint32_t ctx_len;       // llama.context_length
    float rope_base;
    float rms_eps;
    mc_dtype_t type;        // matrices: experts, attention, embedding, output (MXFP4: the experts, the rest F32)
    bool legacy_layout;     // per-expert blk.N.ffn_*.E tensors instead of merged *_exps
    bool tie_output;        // no output.weight: the head reuses token_embd
    uint64_t seed;
    // Uneven routing, for placement experiments: router row e is scaled by
    // router_skew^(-e / (n_expert - 1)), so expert 0 has the widest logits
    // and wins most often, in every layer. 1 (the default): no skew. The
    // other tensors are the same bits whatever the skew.
    float router_skew;
    // Multi-head latent attention (deepseek2; head_dim is then a query
    // head's nope + rope width, key_length_mla): the cached latent's width
    // (0: dim), the rotated dims of a head (0: head_dim / 4, even; other
    // families: the whole head) and a value head's width (0: head_dim - rope_dim).
    uint32_t kv_lora_rank;
    uint32_t q_lora_rank; // the compressed query's width (V2, V3); 0: attn_q directly (V2-Lite)
    uint32_t rope_dim;
    uint32_t head_dim_v;
    // YaRN RoPE scaling by yarn_factor (0: none) from a context of
    // yarn_orig_ctx (0: ctx_len / factor), with DeepSeek's mscale_all_dim.
    float yarn_factor;
    uint32_t yarn_orig_ctx;
    float yarn_mscale_all_dim;
    float expert_weights_scale; // written as <arch>.expert_weights_scale unless 0
    // Families that read them (arch.h), else ignored:
    uint32_t n_dense_lead; // leading_dense_block_count: dense layers (ffn_dense wide) before the MoE ones
    uint32_t moe_step;     // interleave_moe_layer_step: after those, layer l is MoE iff (l + 1) % moe_step == 0
                           // (written when > 1; 0 and 1: every layer)
    uint32_t ffn_dense;    // the dense layers' width, written as feed_forward_length; 0: 4 * ffn
    uint32_t n_nextn;      // nextn_predict_layers: trailing next-token-prediction layers after n_layer
    uint32_t n_group;      // expert_group_count (0: not written)
    uint32_t n_group_used; // expert_group_used_count
    // Routing said by the file where the family reads it (arch.h route_keys):
    // 0, the family's (deepseek2: no key, V2's softmax; glm4moe: its sigmoid
    // written), else written as expert_gating_func, with expert_weights_norm
    // true (DeepSeek-V3's converted files: sigmoid, renormalised).
    mc_gating_t gating;
    bool expert_bias; // blk.N.exp_probs_b.bias where the family has it optional (DeepSeek-V3)
    // gpt-oss: attention.sliding_window (0: 128), written for the families
    // with sliding-window layers (arch.h swa).
    uint32_t n_swa;
} mc_mkmodel_params_t;

// Small defaults: Mixtral (llama), dim 64, ffn 128, 2 layers, 4/2 heads, 8
// experts (2 used), vocab 512, ctx 2048, base 1e6, eps 1e-5, F32, merged,
// separate output, seed 1.
mc_mkmodel_params_t mc_mkmodel_params_default(void);

// The benchmark shape used by moe-bench and `moe-mkmodel --bench-model`:
// embedding 1024, expert FFN 3584, 8 layers, 16 heads / 4 KV heads,
// 8 experts (2 used), vocabulary 32000, context 4096, weights of `type`.
mc_mkmodel_params_t mc_mkmodel_params_bench(mc_dtype_t type);

// Path of a generated model called `name` in the cache folder ($MC_CACHE_DIR,
// else $XDG_CACHE_HOME/moe-cluster, else $HOME/.cache/moe-cluster), creating
// the folder. The file itself may not exist yet.
mc_err_t mc_mkmodel_cache_path(const char *name, char *buf, size_t cap, char *err);

// Validate p (dims divisible as the types and heads require); MC_ERR_ARG with
// a message naming the bad field.
mc_err_t mc_mkmodel_check(const mc_mkmodel_params_t *p, char *err);

mc_err_t mc_mkmodel_write(const mc_mkmodel_params_t *p, const char *path, char *err);

#endif
