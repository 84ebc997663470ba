/*
 * bpe_train: a deterministic byte-level BPE vocabulary trainer for tiny
 * test models (moe-mkmodel, the tests, the fuzzers), and the GGUF keys of a
 * trained vocabulary. The runtime tokenizer (bpe.h) never needs it.
 */
#ifndef MC_BPE_TRAIN_H
#define MC_BPE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf_writer.h"

typedef struct {
    uint32_t n_vocab;       // tokens wanted in all: 256 bytes + merges + 3 specials (+ 7 harmony; default 1024)
    const char *pre;        // pre-tokenizer the corpus is split with (default "qwen2")
    uint32_t min_frequency; // a pair occurring fewer times is never merged (default 1)
    bool harmony;           // also GPT-OSS's harmony tokens (<|start|>, <|channel|>, <|message|>, <|end|>,
                            // <|return|>, <|call|>, <|constrain|>) as control tokens after the 3 specials
} mc_bpe_train_params_t;

mc_bpe_train_params_t mc_bpe_train_params_default(void);

// A trained vocabulary, laid out as the GGUF keys want it.
typedef struct {
    uint32_t n_tokens;
    char **tokens;        // byte-level piece strings (tokenizer.ggml.tokens)
    size_t *token_lens;
    int32_t *token_types; // mc_token_type_t (tokenizer.ggml.token_type)
    uint32_t n_merges;
    char **merges;        // "left right" (tokenizer.ggml.merges), rank = index
    size_t *merge_lens;
    // The control tokens appended after the merged ones, in this order.
    int32_t endoftext_id, im_start_id, im_end_id;
    char pre[16];         // the pre-tokenizer's name (tokenizer.ggml.pre)
} mc_bpe_vocab_t;

// The built-in training text (5 KB of English, French, German, Spanish,
// Italian, Russian, Greek, Chinese, Japanese, Korean, Arabic, Hindi, code,
// numbers and emoji).
const char *mc_bpe_corpus(size_t *len);

// Train on corpus[0..len) (NULL: the built-in corpus). Token ids: 0..255
// are the single bytes in GPT-2 order (by the code point that stands for
// them), then one token per merge in the order learnt (a merge that
// rebuilds an existing string adds none), then the control
// tokens "<|endoftext|>", "<|im_start|>", "<|im_end|>". Each step merges the
// most frequent adjacent pair within pre-tokens (ties: the lower left id,
// then the lower right id), so the result is the same on every machine.
// Training stops at p->n_vocab tokens or when no pair occurs min_frequency
// times, whichever is first (the built-in corpus runs out at about 2,100
// tokens with min_frequency 1): check n_tokens. NULL on failure with err.
mc_bpe_vocab_t *mc_bpe_train(const char *corpus, size_t len, const mc_bpe_train_params_t *p, char *err);
void mc_bpe_vocab_destroy(mc_bpe_vocab_t **v);

// Add tokenizer.ggml.model ("gpt2"), .pre, .tokens, .token_type and .merges
// to a GGUF being written. The caller adds the special-token ids it wants
// (bos_token_id, eos_token_id, add_bos_token) from the *_id fields.
mc_err_t mc_bpe_vocab_to_gguf(const mc_bpe_vocab_t *v, mc_gguf_writer_t *w, char *err);

#endif
