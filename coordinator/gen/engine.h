/*
 * engine: the Mixtral forward pass with a KV cache per sequence.
 *
 * mc_engine_decode() runs a batch of rows through every layer, each row a
 * token of some sequence at some position: the prompt chunks of new
 * sequences and the next token of every sequence being generated share one
 * pass (continuous batching), and through a cluster one network round trip
 * per layer. Every value of a row is computed from that row alone, in a
 * fixed order, so a sequence's logits are the same bits whatever else is in
 * the batch, however the batch is cut, and whatever the thread count.
 * mc_engine_eval() is the one-sequence form (sequence 0, consecutive
 * positions).
 *
 * The expert FFN of every layer goes through an mc_experts_t (experts.h): by
 * default the engine's local one; a cluster's ships rows to expert nodes.
 *
 * The KV cache holds keys and values, (n_seq, n_layer, n_ctx, n_head_kv *
 * head_dim) each (multi-head latent attention: one row of kv_lora_rank +
 * rope_dim per position, engine.c), as f32 by default: twice the memory of llama.cpp's f16 default,
 * but no rounding, so logits follow the model exactly. kv_type MC_DTYPE_F16
 * halves it: each value rounded to the nearest fp16 (ties to even,
 * mc_fp32_to_fp16's bits on every ISA) when it is stored, widened exactly
 * when attention reads it; the logits move by that rounding only and stay
 * the same bits across threads, batches and ISAs. It is allocated
 * untouched, so memory is only used for the positions sequences have
 * reached.
 */
#ifndef MC_ENGINE_H
#define MC_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "experts.h"
#include "kernel.h"
#include "model.h"

typedef struct {
    int n_threads;      // compute threads (>= 1)
    uint32_t n_ctx;     // KV cache length per sequence (<= the model's context length)
    uint32_t n_seq;     // sequences with a KV cache (>= 1)
    uint32_t max_batch; // rows per forward chunk (bounds scratch memory)
    mc_isa_t isa;       // kernel implementation (MC_ISA_BEST: fastest available)
    bool keep_router;   // keep each layer's router logits of the last eval
    mc_dtype_t kv_type; // KV cache values: MC_DTYPE_F32 or MC_DTYPE_F16
    // Pipelined micro-batches: a chunk of 2 rows or more is cut in two
    // groups, and one group's expert step is on the wire while the other's
    // attention is computed (engine.c: s_eval_chunk). Only an expert step
    // that splits (the cluster's) is pipelined; the same bits either way.
    bool pipeline;
} mc_engine_params_t;

// 1 thread, n_ctx 4096, 1 sequence, max_batch 256, MC_ISA_BEST, no router
// capture, f32 KV cache, not pipelined.
mc_engine_params_t mc_engine_params_default(void);

typedef enum {
    MC_LOGITS_NONE = 0,
    MC_LOGITS_LAST, // logits of the last token only: (n_vocab)
    MC_LOGITS_ALL,  // every token: (n, n_vocab)
} mc_logits_t;

typedef struct mc_engine mc_engine_t;

// The model is borrowed and must outlive the engine. n_ctx larger than the
// model's context length is an error (MC_ERR_RANGE), as is 0.
mc_engine_t *mc_engine_new(const mc_model_t *m, const mc_engine_params_t *p, char *err);
void mc_engine_destroy(mc_engine_t **e);

// The expert step every layer goes through (experts.h): x is borrowed and
// must outlive its use; NULL: back to the engine's own local one.
void mc_engine_set_experts(mc_engine_t *e, mc_experts_t *x);

// The expert step in use (the engine's local one unless set).
mc_experts_t *mc_engine_experts(mc_engine_t *e);

// Observer of the router: for every row of every pass and every layer, the
// k experts chosen. row counts rows over all passes since the engine was
// made; seq and pos are the row's sequence and position. Called on the
// engine's thread, in subscription order, before the layer's expert step.
typedef void (*mc_engine_route_fn)(void *ctx, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos,
                                   const int32_t *sel, uint32_t k);

// The router's choices have one list of observers: the engine's own count
// per expert (mc_engine_expert_counts) is the first, routing statistics
// (routing.h) and anything else subscribe after it. MC_ERR_RANGE when
// MC_ENGINE_MAX_OBSERVERS are subscribed already.
#define MC_ENGINE_MAX_OBSERVERS 8
mc_err_t mc_engine_route_subscribe(mc_engine_t *e, mc_engine_route_fn fn, void *ctx);

// Called once per layer of every pass, on the engine's thread, after the
// route observers and before the layer's expert step: x (n, dim) the
// residual stream after the layer's attention, sel (n, k) the experts
// chosen. What looks ahead from the hidden state (the coordinator's read
// ahead of experts, prefetch.h) hooks here. One hook; fn NULL: none.
typedef void (*mc_engine_layer_fn)(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *sel,
                                   uint32_t k);
void mc_engine_set_layer_hook(mc_engine_t *e, mc_engine_layer_fn fn, void *ctx);

// One forward pass: row i is token ids[i] of sequence seq[i] at position
// pos[i]. A row sees its sequence's cache at positions 0..pos[i]: earlier
// positions must have been evaluated before (in an earlier call, or by an
// earlier row of this one); a row's own entry is (over)written. logits
// receives, in row order, the rows whose want[i] is set (want NULL: none).
typedef struct {
    const int32_t *ids;   // (n)
    const uint32_t *seq;  // (n) < n_seq
    const uint32_t *pos;  // (n) < n_ctx
    const uint8_t *want;  // (n) or NULL
    uint32_t n;
} mc_engine_batch_t;

// MC_ERR_RANGE for an id outside the vocabulary, a sequence or position out
// of range (nothing is evaluated then).
mc_err_t mc_engine_decode(mc_engine_t *e, const mc_engine_batch_t *b, float *logits, char *err);

// Sequence 0: ids[0..n) at positions pos..pos+n-1 (cache entries before pos
// are reused, those after are overwritten). MC_ERR_RANGE for an id outside
// the vocabulary or pos + n > n_ctx (nothing is evaluated then).
mc_err_t mc_engine_eval(mc_engine_t *e, const int32_t *ids, uint32_t n, uint32_t pos, mc_logits_t which,
                        float *logits, char *err);

// The cache of one sequence's first n positions, moved whole: what the
// prefix cache (scheduler.h) reuses instead of evaluating a prompt again.
// Since a position's keys and values depend only on the tokens up to it,
// a copy is the same bits as evaluating them in the destination.
// MC_ERR_RANGE for a sequence out of range, src == dst or n > n_ctx.
mc_err_t mc_engine_kv_copy(mc_engine_t *e, uint32_t src, uint32_t dst, uint32_t n, char *err);
// The KV cache's value type (MC_DTYPE_F32 or MC_DTYPE_F16).
mc_dtype_t mc_engine_kv_type(const mc_engine_t *e);
// "f32" / "f16" -> *out; MC_ERR_ARG for anything else. And back.
mc_err_t mc_engine_kv_type_parse(const char *s, mc_dtype_t *out);
const char *mc_engine_kv_type_name(mc_dtype_t t);
// Bytes that n positions of one sequence take (keys and values, every layer,
// in the cache's type).
size_t mc_engine_kv_bytes(const mc_engine_t *e, uint32_t n);
// Positions [0, n) of sequence seq to buf (mc_engine_kv_bytes(e, n) bytes,
// layer by layer), and back: load takes the first n positions of a buf
// saved with n_saved >= n. MC_ERR_RANGE for a sequence out of range,
// n > n_ctx or n > n_saved.
mc_err_t mc_engine_kv_save(const mc_engine_t *e, uint32_t seq, uint32_t n, void *buf, char *err);
mc_err_t mc_engine_kv_load(mc_engine_t *e, uint32_t seq, uint32_t n, const void *buf, uint32_t n_saved, char *err);

uint32_t mc_engine_n_ctx(const mc_engine_t *e);
uint32_t mc_engine_n_seq(const mc_engine_t *e);
uint32_t mc_engine_max_batch(const mc_engine_t *e);
const mc_model_t *mc_engine_model(const mc_engine_t *e);
mc_matmul_t *mc_engine_matmul(mc_engine_t *e);

// Router logits (n_tokens, n_expert) of layer l for every token of the last
// eval when keep_router is set, else NULL; *n_tokens receives the row count.
const float *mc_engine_router_logits(const mc_engine_t *e, uint32_t layer, uint32_t *n_tokens);

// Per-layer histogram (n_layer, n_expert) of rows routed to each expert
// since the engine was created, copied into out. Safe from any thread
// while another one evaluates.
void mc_engine_expert_counts(const mc_engine_t *e, uint64_t *out);

#endif
