/*
 * tokenizer: the vocabulary of a GGUF model and its text <-> id mapping, for
 * two kinds of tokenizer chosen by tokenizer.ggml.model:
 *
 * "llama": SentencePiece BPE with byte fallback. Encoding follows
 * SentencePiece exactly (as llama.cpp's "spm" tokenizer): a space is
 * prepended, spaces become U+2581, the text is split into UTF-8 characters
 * and the adjacent pair whose concatenation is a normal vocabulary piece with
 * the best score is merged until none is left (ties: leftmost); characters
 * that are not pieces become <0xNN> byte tokens.
 *
 * "gpt2": byte-level BPE (Qwen2/Qwen3/Qwen3-MoE, OLMoE), as llama.cpp's
 * "gpt2" tokenizer: a regex pre-tokenizer chosen by tokenizer.ggml.pre, the
 * GPT-2 byte-to-unicode mapping and merges by rank from
 * tokenizer.ggml.merges (see bpe.h). No space is prepended.
 *
 * Text is always plain user content: "<s>" or "<|im_start|>" in the input is
 * text, never a control token (chat templates place those by id; see
 * mc_tokenizer_find). User-defined pieces of a byte-level vocabulary are
 * matched in the text, as llama.cpp and Hugging Face do.
 *
 * Decoding is streaming-safe: mc_detok_t holds back an incomplete UTF-8
 * sequence until the token that completes it arrives.
 */
#ifndef MC_TOKENIZER_H
#define MC_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

typedef enum {
    MC_TOKEN_NORMAL = 1,
    MC_TOKEN_UNKNOWN = 2,
    MC_TOKEN_CONTROL = 3,
    MC_TOKEN_USER = 4,
    MC_TOKEN_UNUSED = 5,
    MC_TOKEN_BYTE = 6,
} mc_token_type_t;

typedef enum {
    MC_TOKENIZER_SPM = 0, // "llama": SentencePiece BPE with byte fallback
    MC_TOKENIZER_BPE = 1, // "gpt2": byte-level BPE
} mc_tokenizer_kind_t;

typedef struct mc_tokenizer mc_tokenizer_t;

typedef struct {
    uint32_t n_vocab;
    const mc_gguf_str_t *pieces; // n_vocab piece strings (copied by mc_tokenizer_new)
    const float *scores;         // n_vocab merge scores (SentencePiece only)
    const int32_t *types;        // n_vocab mc_token_type_t values (NULL: all normal)
    int32_t bos_id, eos_id, unk_id; // -1 when absent
    bool add_bos;
    mc_tokenizer_kind_t kind;     // default MC_TOKENIZER_SPM
    // Byte-level BPE only:
    const mc_gguf_str_t *merges;  // n_merges strings "left right", rank = index
    uint32_t n_merges;
    mc_gguf_str_t pre;            // pre-tokenizer name (tokenizer.ggml.pre)
} mc_tokenizer_params_t;

mc_tokenizer_params_t mc_tokenizer_params_default(void);

// Build from explicit arrays (copied). NULL on failure with err.
mc_tokenizer_t *mc_tokenizer_new(const mc_tokenizer_params_t *p, char *err);

// Build from tokenizer.ggml.* keys of a GGUF file (model "llama" or "gpt2");
// the tokenizer copies what it needs, so g may be destroyed afterwards.
mc_tokenizer_t *mc_tokenizer_new_from_gguf(const mc_gguf_t *g, char *err);

void mc_tokenizer_destroy(mc_tokenizer_t **t);

uint32_t mc_tokenizer_n_vocab(const mc_tokenizer_t *t);
int32_t mc_tokenizer_bos(const mc_tokenizer_t *t);
int32_t mc_tokenizer_eos(const mc_tokenizer_t *t);
bool mc_tokenizer_add_bos(const mc_tokenizer_t *t);
mc_tokenizer_kind_t mc_tokenizer_kind(const mc_tokenizer_t *t);

// Id of the piece spelled exactly piece[0..len) (any type, control tokens
// such as "<|im_start|>" included), or -1. Duplicates: the id encoding uses
// (the lowest for SentencePiece, the highest for byte-level BPE).
int32_t mc_tokenizer_find(const mc_tokenizer_t *t, const char *piece, size_t len);

// Upper bound of the ids produced for len bytes of text (with BOS).
size_t mc_tokenizer_max_tokens(size_t len);

// Encode text[0..len) (raw bytes; invalid UTF-8 is byte-encoded) into ids
// (capacity cap, which mc_tokenizer_max_tokens(len) always satisfies);
// BOS first when add_bos. *n_out = number of ids. MC_ERR_RANGE if cap is
// too small (ids then unspecified).
mc_err_t mc_tokenizer_encode(const mc_tokenizer_t *t, const char *text, size_t len, bool add_bos,
                             int32_t *ids, size_t cap, size_t *n_out, char *err);

// The raw piece string of id (U+2581 not replaced, byte-level characters
// not mapped back), or NULL if out of range.
const char *mc_tokenizer_piece(const mc_tokenizer_t *t, int32_t id, size_t *len);

// The raw bytes of one token as the text would hold them (a byte token its
// byte, U+2581 a space, byte-level characters the bytes they stand for; no
// UTF-8 check: a piece may be part of a character). Control, unknown and
// unused tokens have none. Returns the count written to out, 0 when cap is
// below the piece's length (MC_TOKENIZER_MAX_PIECE always suffices).
#define MC_TOKENIZER_MAX_PIECE 1024
size_t mc_tokenizer_token_bytes(const mc_tokenizer_t *t, int32_t id, char *out, size_t cap);

// Streaming decoder state.
typedef struct {
    uint8_t pending[4];   // bytes of an incomplete UTF-8 sequence
    uint32_t n_pending;
    bool strip_space;     // drop one leading space at the start (SentencePiece decode)
} mc_detok_t;

// Start a decode; strip_leading_space as SentencePiece does for a whole text
// (byte-level BPE adds no space when encoding and never strips one).
void mc_detok_init(mc_detok_t *d, bool strip_leading_space);

// Most bytes one mc_detok_push() can write (longest piece plus held-back bytes).
size_t mc_detok_max_bytes(const mc_tokenizer_t *t);

// Append the text of id to out (cap >= mc_detok_max_bytes(t)); returns the
// bytes written (0 when cap is too small: nothing is consumed then).
// Control and unknown tokens write nothing (byte-level BPE: unused ones too);
// invalid UTF-8 becomes U+FFFD. Byte-level pieces become the bytes they
// stand for, user-defined ones their text.
size_t mc_detok_push(const mc_tokenizer_t *t, mc_detok_t *d, int32_t id, char *out, size_t cap);

// Flush what is still pending at the end of a stream (as U+FFFD).
size_t mc_detok_flush(mc_detok_t *d, char *out, size_t cap);

// Decode a whole id sequence into a NUL-terminated malloc'd string
// (SentencePiece decode semantics for "llama", byte-level for "gpt2"). NULL
// on allocation failure.
char *mc_tokenizer_decode(const mc_tokenizer_t *t, const int32_t *ids, size_t n);

#endif
