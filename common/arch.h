/*
 * arch: what differs between the mixture-of-experts families we run.
 *
 * One table row per `general.architecture` value. The model binder and the
 * engine read these traits instead of testing architecture names, so adding
 * a family is a new row (and, when it needs one, a new trait), not a hunt
 * through the engine for `if` chains.
 */
#ifndef MC_ARCH_H
#define MC_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    MC_ARCH_LLAMA = 0, // Mixtral: llama with experts
    MC_ARCH_QWEN3MOE,  // Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B)
    MC_ARCH_OLMOE,     // OLMoE
    MC_ARCH_QWEN2MOE,  // Qwen1.5-MoE / Qwen2-MoE (Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B)
    MC_ARCH_GLM4MOE,   // GLM-4.5, GLM-4.5-Air
    MC_ARCH_DEEPSEEK2, // DeepSeek-V2 / V2-Lite (and the V3/R1 attention)
    MC_ARCH_GPTOSS,    // GPT-OSS-20B / 120B (llama.cpp's LLM_ARCH_OPENAI_MOE, "gpt-oss")
} mc_arch_t;

// Which values of a head RoPE rotates together.
typedef enum {
    MC_ROPE_NORM = 0, // adjacent pairs (2i, 2i+1): GGUF llama files
    MC_ROPE_NEOX,     // halves (i, i + rope_dim/2): Hugging Face's rotate_half
} mc_rope_t;

// RMS norms applied to the query and key projections before RoPE.
typedef enum {
    MC_QKNORM_NONE = 0,
    MC_QKNORM_HEAD, // per head, weights (head_dim): Qwen3
    MC_QKNORM_FULL, // over the whole projection, weights (n_head * head_dim): OLMoE
} mc_qknorm_t;

// How the router turns a row's logits into expert scores: the values of
// llama.cpp's <arch>.expert_gating_func key.
typedef enum {
    MC_GATING_SOFTMAX = 1,        // softmax over all experts
    MC_GATING_SIGMOID = 2,        // sigmoid of each logit (DeepSeek-V3, GLM-4.5)
    MC_GATING_SOFTMAX_WEIGHT = 3, // the logits choose; softmax over the chosen logits weighs (GPT-OSS)
} mc_gating_t;

// The routing variant: how k experts and their weights come from a row's
// router logits (moe.h: mc_moe_route). An architecture's row holds its
// defaults; the model binder applies a file's keys over them.
typedef struct {
    mc_gating_t gating;    // <arch>.expert_gating_func
    bool norm_topk;        // renormalise the chosen weights to sum to 1 (<arch>.expert_weights_norm)
    float scale;           // then multiply them by this, 1: none (<arch>.expert_weights_scale)
    // Grouped top-k (<arch>.expert_group_count, expert_group_used_count):
    // the experts fall into n_group equal groups of consecutive ids; a row
    // keeps the n_group_used groups whose two best selection scores sum
    // highest and picks its k experts inside them. n_group <= 1: no groups.
    uint32_t n_group, n_group_used;
} mc_route_t;

// The expert FFN's activation of (gate g, up u) before the down product.
typedef enum {
    MC_ACT_SWIGLU = 0, // silu(g) * u
    // GPT-OSS (llama.cpp's swiglu_oai, alpha 1.702, limit 7): with
    // g' = min(g, 7) and u' = clamp(u, -7, 7), g' * sigmoid(1.702 g') * (u' + 1).
    MC_ACT_SWIGLU_OAI,
} mc_act_t;

// Whether a family's files carry an optional tensor.
typedef enum {
    MC_NEED_NONE = 0, // never: not read
    MC_NEED_OPTIONAL, // used when present
    MC_NEED_REQUIRED, // the file is refused without it
} mc_need_t;

// How a family's shared expert hidden size is found.
typedef enum {
    MC_SHEXP_NONE = 0,  // no shared expert
    MC_SHEXP_FFN_KEY,   // <arch>.expert_shared_feed_forward_length, else feed_forward_length (Qwen2-MoE)
    MC_SHEXP_COUNT,     // expert width x <arch>.expert_shared_count (GLM-4.5, DeepSeek)
} mc_shexp_t;

typedef struct {
    const char *name;      // general.architecture, also the metadata key prefix
    mc_arch_t id;
    mc_rope_t rope;
    mc_qknorm_t qk_norm;
    // Routing defaults. A file's expert_weights_norm, expert_weights_scale
    // and group counts override them in every family; its expert_gating_func
    // only where route_keys is set (the families whose llama.cpp graph reads
    // it; the others' graphs fix the softmax).
    mc_route_t route;
    bool route_keys;
    // Expert hidden size from <arch>.expert_feed_forward_length when the file
    // has it (feed_forward_length is then the dense FFN size, unused here).
    bool expert_ffn_key;
    const char *family;    // for messages and the README: "Mixtral", ...
    // tokenizer.ggml.pre of the family's byte-level BPE vocabularies; NULL:
    // SentencePiece (Mixtral). What moe-mkmodel and moe-convert write.
    const char *bpe_pre;
    // The q/k/v projections may carry biases blk.N.attn_{q,k,v}.bias, added
    // before RoPE (optional in a file, as llama.cpp has them).
    bool qkv_bias;
    // Every MoE layer has a shared expert: a SwiGLU FFN every row passes
    // through (blk.N.ffn_{gate,up,down}_shexp, its width found as
    // shared_expert says), added after the routed experts (moe.h:
    // mc_moe_shared). Required when set.
    mc_shexp_t shared_expert;
    // The shared expert's output is scaled by sigmoid(blk.N.ffn_gate_inp_shexp . x)
    // (Qwen2-MoE); without, it is added as it is (GLM-4.5, DeepSeek).
    bool shexp_gated;
    // Multi-head latent attention (DeepSeek-V2): keys and values come from
    // one compressed latent per token (blk.N.attn_kv_a_mqa, attn_kv_a_norm)
    // plus one shared RoPE key part; the KV cache holds only those
    // (<arch>.attention.kv_lora_rank + rope dims per token and layer), and
    // the per-head up-projections (attn_k_b, attn_v_b) are absorbed into the
    // query and the attention output (engine.c). Replaces attn_k/attn_v.
    bool mla;
    // A per-expert bias blk.N.exp_probs_b.bias (n_expert) added to the
    // scores for choosing the experts only: the weights are the unbiased
    // scores (DeepSeek-V3's auxiliary-loss-free balancing).
    mc_need_t expert_bias;
    // Whether the q/k norms (qk_norm) may be absent (GLM-4.5-Air has none,
    // GLM-4.5 has per-head ones).
    bool qk_norm_optional;
    // The FFN input norm's tensor: "ffn_norm" (blk.N.ffn_norm.weight), or
    // GLM's "post_attention_norm".
    const char *ffn_norm_name;
    // <arch>.leading_dense_block_count and <arch>.interleave_moe_layer_step
    // are read: the layers below the count, and after them those l with
    // (l + 1) % step != 0, are one dense SwiGLU FFN (blk.N.ffn_{gate,up,down},
    // feed_forward_length wide) on the coordinator, with no router or
    // experts (model.h: mc_hparams_layer_moe).
    bool dense_lead;
    // <arch>.nextn_predict_layers is read: block_count counts that many
    // trailing next-token-prediction layers, whose tensors are skipped.
    bool nextn;
    // GPT-OSS's traits:
    // attention sinks: a learned logit per head (blk.N.attn_sinks.weight,
    // n_head) that joins every softmax's denominator without a value;
    bool attn_sinks;
    // a bias on the attention output (blk.N.attn_output.bias, dim);
    bool attn_out_bias;
    // sliding-window attention on some layers: <arch>.attention.sliding_window
    // (required) positions, on the layers l with l % P < P - 1 where P is
    // <arch>.attention.sliding_window_pattern (default 2: the even layers),
    // full attention on the others;
    bool swa;
    // a bias on the router logits (blk.N.ffn_gate_inp.bias, n_expert), added
    // before the scores;
    bool router_bias;
    // biases on each expert's gate, up and down products
    // (blk.N.ffn_{gate,up,down}_exps.bias: {ffn, n_expert} and {dim, n_expert});
    bool expert_ffn_bias;
    // the expert FFN's activation.
    mc_act_t act;
} mc_arch_info_t;

// The row for an architecture name (len bytes, not NUL-terminated), or NULL.
const mc_arch_info_t *mc_arch_find(const char *name, size_t len);

// The row of a family, or NULL for a value outside mc_arch_t.
const mc_arch_info_t *mc_arch_get(mc_arch_t id);

// "llama (Mixtral), qwen3moe (Qwen3-MoE), ..." for error messages.
const char *mc_arch_supported(void);

#endif
