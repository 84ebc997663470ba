/*
 * bpe: byte-level BPE as GPT-2, Qwen2/Qwen3(-MoE), OLMoE, DeepSeek and GLM-4.5
 * use it: the
 * regex pre-tokenizer, the GPT-2 byte-to-unicode mapping, merges applied by
 * rank. The vocabulary trainer for tiny test models is bpe_train.h.
 *
 * The tokenizer module (tokenizer.h) selects this for GGUF files whose
 * tokenizer.ggml.model is "gpt2"; most callers use it through there. The
 * pieces here are public so that the trainer (bpe_train.h) can split its
 * corpus, and so that the tests can check each stage on its own.
 *
 * Pre-tokenization runs PCRE2 (UTF + UCP) with the regexes llama.cpp uses
 * for the pre type (one, or for DeepSeek a sequence, each splitting the
 * previous one's pieces), compiled once per mc_bpe_pre_t. Merging follows llama.cpp and
 * Hugging Face: within one pre-token, the adjacent pair with the lowest merge
 * rank is merged first (ties: the leftmost pair) until no pair has a rank.
 */
#ifndef MC_BPE_H
#define MC_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* ---- the GPT-2 byte-to-unicode mapping ---- */

// Code point that stands for byte b in byte-level pieces: printable Latin-1
// bytes stand for themselves, the other 68 for U+0100.. in byte order.
uint32_t mc_bpe_byte_cp(uint8_t b);

// The byte that code point cp stands for, or -1 when cp is none of the 256.
int mc_bpe_cp_byte(uint32_t cp);

// Write the byte-level spelling of bytes[0..n) to out (at most 2 * n bytes:
// every code point of the mapping takes one or two UTF-8 bytes). Returns the
// bytes written.
size_t mc_bpe_bytes_to_piece(const uint8_t *bytes, size_t n, char *out);

// Write the bytes a byte-level piece stands for to out (at most len bytes).
// A character outside the mapping (possible only in a hand-made vocabulary)
// is copied through as its UTF-8 text. Returns the bytes written.
size_t mc_bpe_piece_to_bytes(const char *piece, size_t len, char *out);

/* ---- pre-tokenizer ---- */

// The tokenizer.ggml.pre values understood, for error messages.
#define MC_BPE_PRE_NAMES                                                                                      \
    "\"qwen2\" (Qwen2, Qwen3, Qwen3-MoE), \"olmo\" (OLMoE), \"gpt-2\", \"deepseek-llm\" (DeepSeek-V2), "  \
    "\"deepseek-v3\" (DeepSeek-V3, R1), \"glm4\" (GLM-4.5) and \"gpt-4o\" (GPT-OSS)"

typedef struct mc_bpe_pre mc_bpe_pre_t;

// Compile the pre-tokenizer named name[0..len) (a tokenizer.ggml.pre value).
// NULL on failure with err (MC_ERR_UNSUPPORTED for an unknown name).
mc_bpe_pre_t *mc_bpe_pre_new(const char *name, size_t len, char *err);
void mc_bpe_pre_destroy(mc_bpe_pre_t **p);

// The canonical name ("qwen2", "olmo" or "gpt-2").
const char *mc_bpe_pre_name(const mc_bpe_pre_t *p);

// Called once per pre-token, in text order; the pre-tokens tile the text
// exactly. A non-MC_OK return stops the split and is returned by it.
typedef mc_err_t (*mc_bpe_word_fn)(void *ctx, const char *word, size_t len, char *err);

// Split text[0..len) into pre-tokens. Bytes that are not valid UTF-8 are
// kept (each is matched as if it were U+FFFD, one byte long), so the words
// always concatenate back to the input. Safe to call from several threads
// on one mc_bpe_pre_t.
mc_err_t mc_bpe_pre_split(const mc_bpe_pre_t *p, const char *text, size_t len, mc_bpe_word_fn fn, void *ctx,
                          char *err);

/* ---- encoder ---- */

// Id of the vocabulary piece s[0..n), or -1 (the tokenizer's piece table).
typedef int32_t (*mc_bpe_lookup_fn)(const void *ctx, const char *s, size_t n);

typedef struct {
    uint32_t n_vocab;
    const mc_gguf_str_t *pieces;  // n_vocab pieces; copied where kept
    const uint8_t *types;         // n_vocab mc_token_type_t values
    const mc_gguf_str_t *merges;  // n_merges strings "left right"; rank = index
    uint32_t n_merges;
    const char *pre;              // tokenizer.ggml.pre value, pre_len bytes
    size_t pre_len;
    mc_bpe_lookup_fn lookup;      // resolves the pieces that merges name
    const void *lookup_ctx;
} mc_bpe_params_t;

typedef struct mc_bpe mc_bpe_t;

// Build the merge table and pre-tokenizer. Every merge must name two pieces
// of the vocabulary whose concatenation is a piece too (as Hugging Face
// requires). NULL on failure with err.
mc_bpe_t *mc_bpe_new(const mc_bpe_params_t *p, char *err);
void mc_bpe_destroy(mc_bpe_t **b);

const mc_bpe_pre_t *mc_bpe_pre(const mc_bpe_t *b);

// Encode text[0..len) (no BOS): user-defined pieces found literally in the
// text first (longest first, as llama.cpp), then pre-tokens, byte mapping
// and merges. Appends at most len ids to ids[0..cap); *n_out = ids written.
// MC_ERR_RANGE when cap is too small.
mc_err_t mc_bpe_encode(const mc_bpe_t *b, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n_out,
                       char *err);

#endif
