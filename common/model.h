/*
 * model: a Mixtral-family model bound to the tensors of a GGUF file.
 *
 * Reads the hyperparameters from the <arch>.* keys of any architecture in the
 * arch table (no dimension is assumed),
 * checks every tensor's presence, type and shape, and exposes weight
 * matrices as views into the mapped file: nothing is copied except the tiny
 * norm vectors (converted to f32), until mc_model_repack copies the Q4_0, Q8_0,
 * Q4_K, Q5_K and Q6_K matrices a process multiplies into the kernels' layout. Expert e of layer l is handed out as
 * (gate, up, down) whatever the file's layout: merged ffn_*_exps tensors,
 * where the expert is one contiguous byte range, or legacy per-expert
 * ffn_*.E tensors. A family with a shared expert (arch.h) has it bound per
 * layer as one more (gate, up, down) with its sigmoid gate's weights.
 */
#ifndef MC_MODEL_H
#define MC_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch.h"
#include "error.h"
#include "gguf.h"
#include "matmul.h"

typedef struct {
    const mc_arch_info_t *arch; // family traits (rope, q/k norms, routing)
    uint32_t n_vocab;
    uint32_t dim;           // embedding length
    uint32_t n_layer;       // evaluated layers: block_count less any next-token-prediction ones
    uint32_t n_dense_lead;  // layers [0, n_dense_lead) are dense (no router or experts)
    // interleave_moe_layer_step: after them, layer l is MoE iff (l + 1) %
    // moe_step == 0, dense otherwise (1: every one is MoE); mc_hparams_layer_moe.
    uint32_t moe_step;
    uint32_t ffn_dense;     // the dense layers' FFN hidden size (feed_forward_length); 0 without
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;      // attention.key_length, else dim / n_head; MLA: key_length_mla (nope + rope)
    uint32_t head_dim_v;    // value head size: head_dim, except MLA's value_length_mla
    uint32_t rope_dim;      // rotated dims per head (<= head_dim); MLA: the last rope_dim of a q head
    uint32_t kv_lora_rank;  // MLA (arch.h): the cached latent's width; 0 otherwise
    uint32_t q_lora_rank;   // MLA: the compressed query's width (V2, V3); 0: attn_q directly (V2-Lite)
    uint32_t ffn;           // expert hidden size
    uint32_t ffn_shexp;     // shared expert hidden size; 0: the family has none
    uint32_t n_expert;
    uint32_t n_expert_used; // experts per token (k)
    uint32_t n_ctx_train;   // llama.context_length
    float rope_base;
    // RoPE scaling from rope.scaling.* as llama.cpp applies it: frequencies
    // times rope_freq_scale (1 / factor), blended with the unscaled ones by
    // YaRN's ramp between dims yarn_corr[0..1] when rope_ext_factor is 1;
    // cos and sin times rope_mscale. None: 1, 0, 1.
    float rope_freq_scale;
    float rope_ext_factor;
    float rope_mscale;
    float yarn_corr[2];
    float kq_scale;         // attention logits scale: 1/sqrt(head_dim) (DeepSeek-V2: times YaRN's mscale^2)
    float rms_eps;
    mc_route_t route;       // the routing variant (arch.h): the family's, with the file's keys
    // Sliding-window attention (arch.h swa): a position sees the n_swa
    // positions up to itself on the layers mc_model_layer_swa names; 0: none.
    uint32_t n_swa;
    uint32_t swa_pattern;   // period P: layers l with l % P < P - 1 slide
} mc_hparams_t;

typedef struct {
    mc_matrix_t gate; // (ffn, dim)
    mc_matrix_t up;   // (ffn, dim)
    mc_matrix_t down; // (dim, ffn)
} mc_expert_t;

typedef struct {
    float *attn_norm;     // (dim)
    mc_matrix_t wq;       // (n_head * head_dim, dim); MLA with q_lora_rank: attn_q_b (.., q_lora_rank)
    mc_matrix_t wq_a;     // MLA with q_lora_rank: (q_lora_rank, dim), NULL data otherwise
    float *q_a_norm;      // (q_lora_rank), its RMS norm before wq
    mc_matrix_t wk;       // (n_head_kv * head_dim, dim)
    mc_matrix_t wv;       // (n_head_kv * head_dim, dim)
    mc_matrix_t wo;       // (dim, n_head * head_dim_v)
    float *q_norm;        // (head_dim) per head or (n_head * head_dim); NULL without q/k norms
    float *k_norm;        // (head_dim) per head or (n_head_kv * head_dim); NULL without
    float *ffn_norm;      // (dim)
    mc_matrix_t router;   // (n_expert, dim); no data in a dense layer
    mc_expert_t *experts; // (n_expert); no data in a dense layer
    float *exp_probs_b;   // (n_expert) selection bias (arch.h: expert_bias); NULL without
    // q/k/v biases (q_dim, kv_dim, kv_dim), NULL when the file has none.
    float *bq, *bk, *bv;
    // The shared expert (hp.ffn_shexp wide; all NULL data without) and its
    // gate's weights (1, dim): sigmoid(shexp_gate . x) scales its output
    // (NULL data: an ungated shared expert, arch.h shexp_gated).
    mc_expert_t shexp;
    mc_matrix_t shexp_gate;
    // A dense layer's FFN (hp.ffn_dense wide): blk.N.ffn_{gate,up,down}.
    // NULL data in a MoE layer.
    mc_expert_t dense;
    // Multi-head latent attention (arch.h; wk and wv are then unused, NULL
    // data): the latent and the shared RoPE key in one product, the latent's
    // norm, and per head the key and value up-projections.
    mc_matrix_t wkv_a;    // (kv_lora_rank + rope_dim, dim)
    float *kv_a_norm;     // (kv_lora_rank)
    mc_matrix_t *wk_b;    // (n_head) of (kv_lora_rank, head_dim - rope_dim): absorbed into the query
    mc_matrix_t *wv_b;    // (n_head) of (head_dim_v, kv_lora_rank): applied to the attended latent
    // GPT-OSS (arch.h), NULL otherwise:
    float *sinks;         // (n_head) attention sink logits
    float *bo;            // (dim) attention output bias
    float *router_b;      // (n_expert) router logit bias
    float *exp_b_gate;    // (n_expert, ffn) each expert's gate bias
    float *exp_b_up;      // (n_expert, ffn) up bias
    float *exp_b_down;    // (n_expert, dim) down bias
} mc_layer_t;

typedef struct {
    mc_hparams_t hp;
    mc_matrix_t tok_embd;  // (n_vocab, dim), rows looked up and dequantized
    mc_layer_t *layers;    // (n_layer)
    float *output_norm;    // (dim)
    mc_matrix_t output;    // (n_vocab, dim); token_embd when the file ties them
    bool legacy_experts;   // per-expert tensors in the file
    mc_gguf_t *gguf;       // owned
    char *path;            // the file mc_model_open mapped (owned); NULL from mc_model_new
    uint8_t *packed;       // (packed_bytes) owned anonymous mapping: every matrix's repacked rows (mc_model_repack)
    size_t packed_bytes;
    // Attached by the process that budgets its expert memory (borrowed; NULL:
    // none): the experts it manages are read through it (moe.h), never
    // through the mapping, and mc_model_repack leaves them alone.
    struct mc_expert_store *store;
    // An experts-only file (below): no dense tensors, n_vocab 0, and only
    // some experts, the others with NULL data (mc_model_has_expert).
    bool experts_only;
    uint64_t source_fingerprint; // experts-only: mc_model_fingerprint of the model it was cut from
    // (n_layer, n_expert) 1 once an expert's MXFP4 rows in the mapping were
    // found free of NaN scales (mc_model_expert_check); NULL when no expert
    // is MXFP4 (nothing to check).
    atomic_uchar *expert_checked;
} mc_model_t;

// The key that makes a GGUF an experts-only file: a node's cache, or
// moe-split's output. Such a file has the whole model's metadata (without
// the tokenizer), this key (u64: the fingerprint of the whole model), and
// some experts as per-expert tensors blk.L.ffn_{gate,up,down}.E.weight
// (with blk.L.ffn_{gate,up,down}.E.bias where the family's experts carry
// biases: expert_file.h).
#define MC_MODEL_SOURCE_KEY "moe_cluster.source_fingerprint"

// Bind a parsed file; takes ownership of *g on success (sets *g = NULL).
mc_model_t *mc_model_new(mc_gguf_t **g, char *err);

// Open and bind a GGUF file (a whole model: an experts-only file is
// refused, saying what it is).
mc_model_t *mc_model_open(const char *path, char *err);

// Bind an experts-only file (see MC_MODEL_SOURCE_KEY): the hyperparameters
// and whichever experts it has (each with all three matrices, shapes and
// types checked, and in a family with expert biases its three F32 biases,
// shapes and finite values checked, into the layer's exp_b_* rows); one
// without any expert binds too (a node learning a model's shape). Takes
// ownership of *g on success.
mc_model_t *mc_model_new_experts(mc_gguf_t **g, char *err);

// A node's --model: a whole model or an experts-only file.
mc_model_t *mc_model_open_node(const char *path, char *err);

// Whether the file has expert e of layer l (always for a MoE layer of a
// whole model; never in a dense layer).
bool mc_model_has_expert(const mc_model_t *m, uint32_t layer, uint32_t e);

// Whether layer l attends through a sliding window (hp.n_swa), not to its
// whole past.
bool mc_model_layer_swa(const mc_model_t *m, uint32_t layer);

// Whether layer l is a MoE layer (router and experts), not a dense one.
bool mc_model_layer_moe(const mc_model_t *m, uint32_t layer);
// The same from the hyperparameters alone: false for a dense layer (the
// leading ones and those the interleave step skips) and out of range.
bool mc_hparams_layer_moe(const mc_hparams_t *hp, uint32_t layer);

void mc_model_destroy(mc_model_t **m);

// Repack, at load time, the matrices this process multiplies whose type has
// an 8-row interleaved layout (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K: kernel.h) into it, where
// mm's kernel for the type has the repacked product (else they stay): with dense,
// every layer's attention and router matrices and the output head; and the
// experts with held[layer * n_expert + e] != 0 (held NULL: every expert).
// A node (dense false) repacks only the experts it holds, a coordinator its
// local ones. token_embd keeps
// its raw view for embedding lookups (an output head tied to it gets its
// own packed copy). The file pages of repacked rows are released
// (MADV_DONTNEED, whole pages inside a matrix only) so resident memory stays
// about the size of the tensors served. Calling it again replaces the
// previous repacking (a new placement). Results are the same bits repacked
// or not. On failure nothing is repacked and the model works as before.
// Experts an attached store manages (m->store) are left to it.
mc_err_t mc_model_repack(mc_model_t *m, const mc_matmul_t *mm, bool dense, const uint8_t *held, char *err);

// Told how many bytes of the file's rows have been read so far, after each
// matrix (loading a node's share takes seconds to minutes: its coordinator
// hears how far it is).
typedef struct {
    void (*fn)(void *ctx, uint64_t done_bytes);
    void *ctx;
} mc_model_progress_t;

// mc_model_repack, telling progress (may be NULL) about the rows it reads.
mc_err_t mc_model_repack_progress(mc_model_t *m, const mc_matmul_t *mm, bool dense, const uint8_t *held,
                                  const mc_model_progress_t *progress, char *err);

// MXFP4's E8M0 scale 0xFF is NaN, no number: a file holding one is
// damaged. Dense matrices are checked when the model is opened (every
// token multiplies them anyway); experts only when first used, so that
// opening a model never reads its expert pages (a node serves a share, an
// expert store reads experts on demand). mc_moe_compute_rows checks each
// expert it multiplies from the mapping with mc_model_expert_check, an
// expert store each expert it reads with mc_model_matrix_check, an expert
// node its share when it loads it.
//
// w's rows as read into bytes (w->data itself, or a copy of its rows):
// MC_ERR_FORMAT naming the tensor, block, row (and expert) and values of
// the first NaN scale; MC_OK for any other type.
mc_err_t mc_model_matrix_check(const mc_model_t *m, const mc_matrix_t *w, const uint8_t *bytes, char *err);

// Expert e of layer l's matrices in the mapping, checked as above the first
// time (remembered: later calls cost one atomic load). Thread-safe; MC_OK
// for a pair out of range or absent (nothing to multiply).
mc_err_t mc_model_expert_check(const mc_model_t *m, uint32_t layer, uint32_t e, char *err);

// Expert e of layer l, or MC_ERR_RANGE for an out-of-range pair.
mc_err_t mc_model_expert(const mc_model_t *m, uint32_t layer, uint32_t e, mc_expert_t *out);

// Write the f32 embedding of token id into out (dim values).
mc_err_t mc_model_embed(const mc_model_t *m, int32_t id, float *out);

// Identity of the model file for the cluster handshake: a 64-bit FNV-1a
// hash of the file's header (metadata and tensor table, everything before
// the tensor data) and of its size. Two nodes agree on it exactly when they
// read the same model description; not a defence against a forger. For an
// experts-only file, the fingerprint of the model it was cut from.
uint64_t mc_model_fingerprint(const mc_model_t *m);

// Bytes of expert e of layer l's slice (expert_file.h): its gate, up and
// down rows in the file, and in a family with expert biases its biases as
// f32 (GPT-OSS: (2 ffn + dim) x 4 bytes more); layer and e must be in range.
uint64_t mc_model_expert_bytes(const mc_model_t *m, uint32_t layer, uint32_t e);

// Bytes of all weights a generated token reads: attention, router, k experts
// per layer, output head (the memory traffic that bounds decoding speed).
uint64_t mc_model_bytes_per_token(const mc_model_t *m);

#endif
