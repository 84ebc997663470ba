/*
 * tokenizer: SentencePiece BPE encoding and streaming-safe decoding over a
 * vocabulary copied from explicit arrays or from a GGUF file; byte-level BPE
 * vocabularies ("gpt2") share the piece table and decoding, and hand
 * encoding to bpe.c.
 *
 * Encoding keeps the normalized text as a doubly linked list of symbols (one
 * per UTF-8 character at first) and a binary max-heap of candidate merges of
 * adjacent symbols, so a text of n characters costs O(n log n). A merge that
 * became impossible because a neighbour changed is not removed from the heap;
 * it is recognised as stale when popped (symbol lengths only ever grow).
 *
 * Choices where SentencePiece (SP) and llama.cpp differ, or where neither
 * defines the behaviour:
 *  - An invalid UTF-8 byte in the input is a symbol of its own and ends up as
 *    its <0xNN> byte token (SP would first turn it into U+FFFD), so
 *    encode/decode round-trips every valid UTF-8 text exactly.
 *  - Merges only produce NORMAL or USER pieces, so literal "<s>" or "<0x41>"
 *    text never becomes a control or byte token. SP's special handling of
 *    UNUSED pieces (merge, then split again) and its prefix matching of
 *    user-defined pieces are not implemented; the Mixtral vocabulary has
 *    neither kind.
 *  - Decoding writes nothing for control, unknown and out-of-range ids (like
 *    llama.cpp's streaming output; SP prints <unk> as " \u2047 "). Such a
 *    token still ends a run of byte tokens as in SP, so an incomplete UTF-8
 *    sequence before it becomes U+FFFD. Every byte that does not belong to a
 *    complete, valid UTF-8 sequence becomes one U+FFFD, exactly as SP does
 *    for byte pieces; output is therefore always valid UTF-8.
 *  - The leading space is stripped as SP does: from the first piece that
 *    produces text, only if it is a text piece starting with U+2581.
 *  - Duplicate piece strings (SP forbids them) resolve to the lowest id; in
 *    byte-level vocabularies to the highest, as llama.cpp does for those.
 *
 * Byte-level BPE decoding follows llama.cpp's: normal pieces become the bytes
 * their characters stand for, user-defined pieces their text; control,
 * unknown and unused pieces write nothing and, since byte-level text is one
 * byte stream, do not flush held-back bytes. No leading space is stripped.
 */
#include "tokenizer.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "heap.h"

#define MC_TOK_MAX_VOCAB (1u << 24)           // far above any real vocabulary
#define MC_TOK_MAX_PIECE 1024u                // bytes; real pieces are < 100
_Static_assert(MC_TOK_MAX_PIECE == MC_TOKENIZER_MAX_PIECE, "the header promises this bound");
#define MC_TOK_MAX_TEXT ((size_t)1 << 29)     // keeps symbol indices in int32

static const char s_space_sym[3] = {'\xe2', '\x96', '\x81'};  // U+2581
static const char s_replacement[3] = {'\xef', '\xbf', '\xbd'}; // U+FFFD

struct mc_tokenizer {
    uint32_t n_vocab;
    char *arena;          // all pieces back to back, each NUL-terminated
    size_t *piece_off;    // [n_vocab] start of each piece in arena
    uint32_t *piece_len;  // [n_vocab] bytes, without the NUL
    float *scores;        // [n_vocab]
    uint8_t *types;       // [n_vocab] mc_token_type_t
    int32_t *slots;       // [mask + 1] open-addressing table of ids, -1 = empty
    size_t mask;
    uint32_t max_piece_len;
    int32_t byte_id[256]; // id of the piece "<0xNN>" per byte value, -1 if none
    int32_t bos_id, eos_id, unk_id;
    bool add_bos;
    mc_tokenizer_kind_t kind;
    mc_bpe_t *bpe;        // merges and pre-tokenizer of a byte-level vocabulary
};

// One symbol of the text being encoded: bytes [off, off + len) of the
// normalized text. len becomes 0 when the symbol is merged into its left one.
typedef struct {
    int32_t prev, next; // neighbours in the list, -1 at the ends
    uint32_t off, len;
} mc_symbol_t;

// A candidate merge of symbols left and right into a vocabulary piece.
typedef struct {
    float score;
    int32_t left, right;
    uint32_t len; // left.len + right.len when pushed; differs once stale
} mc_bigram_t;

/* ---- UTF-8 ---- */

// Length of the sequence a lead byte announces: 1 for ASCII, 2..4 for a
// valid lead byte, 0 for bytes that can never start a character.
static uint32_t s_utf8_need(uint8_t b) {
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf) return 2;
    if (b >= 0xe0 && b <= 0xef) return 3;
    if (b >= 0xf0 && b <= 0xf4) return 4;
    return 0;
}

// Whether b may follow the n bytes of prefix (lead byte first) in a valid
// sequence. The second-byte limits reject overlong forms, surrogates and
// code points above U+10FFFF.
static bool s_utf8_continues(const uint8_t *prefix, uint32_t n, uint8_t b) {
    if ((b & 0xc0) != 0x80) return false;
    if (n != 1) return true;
    switch (prefix[0]) {
    case 0xe0: return b >= 0xa0;
    case 0xed: return b <= 0x9f;
    case 0xf0: return b >= 0x90;
    case 0xf4: return b <= 0x8f;
    default: return true;
    }
}

// Bytes of the character at s[0..n) (n > 0): its length when it is a
// complete valid sequence, else 1 (the byte stands alone).
static uint32_t s_utf8_char_len(const uint8_t *s, size_t n) {
    uint32_t need = s_utf8_need(s[0]);
    if (need == 0 || need > n) return 1;
    for (uint32_t i = 1; i < need; i++)
        if (!s_utf8_continues(s, i, s[i])) return 1;
    return need;
}

/* ---- piece table ---- */

static uint64_t s_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static const char *s_piece(const mc_tokenizer_t *t, int32_t id) {
    return t->arena + t->piece_off[id];
}

// Id of the piece with text s[0..n), or -1.
static int32_t s_lookup(const mc_tokenizer_t *t, const char *s, size_t n) {
    for (size_t i = (size_t)s_hash(s, n) & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(s_piece(t, id), s, n) == 0) return id;
    }
}

static int32_t s_lookup_cb(const void *t, const char *s, size_t n) { return s_lookup(t, s, n); }

static bool s_is_text_piece(const mc_tokenizer_t *t, int32_t id) {
    return t->types[id] == MC_TOKEN_NORMAL || t->types[id] == MC_TOKEN_USER;
}

static int s_hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// Byte value of a piece spelled "<0xNN>", or -1.
static int s_byte_piece_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = s_hex_digit(s[3]), lo = s_hex_digit(s[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

/* ---- construction ---- */

mc_tokenizer_params_t mc_tokenizer_params_default(void) {
    mc_tokenizer_params_t p = {0};
    p.bos_id = p.eos_id = p.unk_id = -1;
    return p;
}

void mc_tokenizer_destroy(mc_tokenizer_t **t) {
    if (!t || !*t) return;
    mc_tokenizer_t *x = *t;
    free(x->arena);
    free(x->piece_off);
    free(x->piece_len);
    free(x->scores);
    free(x->types);
    free(x->slots);
    mc_bpe_destroy(&x->bpe);
    free(x);
    *t = NULL;
}

static mc_err_t s_check_special(int32_t id, uint32_t n_vocab, const char *what, char *err) {
    if (id == -1 || (id >= 0 && (uint32_t)id < n_vocab)) return MC_OK;
    return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %s id %d outside the vocabulary (%u pieces)",
                      what, (int)id, n_vocab);
}

static mc_err_t s_validate(const mc_tokenizer_params_t *p, char *err) {
    if (p->n_vocab == 0 || p->n_vocab > MC_TOK_MAX_VOCAB)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: vocabulary size %u outside 1..%u",
                          p->n_vocab, MC_TOK_MAX_VOCAB);
    if (!p->pieces) return mc_err_set(err, MC_ERR_ARG, "tokenizer: no pieces given");
    for (uint32_t i = 0; i < p->n_vocab; i++) {
        const mc_gguf_str_t *s = &p->pieces[i];
        if (s->len > MC_TOK_MAX_PIECE)
            return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: piece %u is %llu bytes (max %u)", i,
                              (unsigned long long)s->len, MC_TOK_MAX_PIECE);
        if (s->len > 0 && !s->ptr) return mc_err_set(err, MC_ERR_ARG, "tokenizer: piece %u has no text", i);
        if (p->scores && isnan(p->scores[i]))
            return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: score of piece %u is NaN", i);
        if (!p->types) continue;
        int32_t ty = p->types[i];
        if (ty < MC_TOKEN_NORMAL || ty > MC_TOKEN_BYTE)
            return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: piece %u has unknown type %d", i, (int)ty);
        // Decoding turns byte pieces into their byte, so the spelling must say which.
        if (ty == MC_TOKEN_BYTE && s_byte_piece_value(s->ptr, (size_t)s->len) < 0)
            return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: byte piece %u is not spelled <0xNN>", i);
    }
    mc_err_t rc;
    if ((rc = s_check_special(p->bos_id, p->n_vocab, "BOS", err)) != MC_OK) return rc;
    if ((rc = s_check_special(p->eos_id, p->n_vocab, "EOS", err)) != MC_OK) return rc;
    if ((rc = s_check_special(p->unk_id, p->n_vocab, "unknown-token", err)) != MC_OK) return rc;
    if (p->add_bos && p->bos_id < 0)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: add_bos is set but there is no BOS token");
    if (p->kind != MC_TOKENIZER_SPM && p->kind != MC_TOKENIZER_BPE)
        return mc_err_set(err, MC_ERR_ARG, "tokenizer: unknown kind %d", (int)p->kind);
    if (p->kind == MC_TOKENIZER_BPE && p->n_merges > 0 && !p->merges)
        return mc_err_set(err, MC_ERR_ARG, "tokenizer: no merges given");
    return MC_OK;
}

mc_tokenizer_t *mc_tokenizer_new(const mc_tokenizer_params_t *p, char *err) {
    if (!p) {
        mc_err_set(err, MC_ERR_ARG, "tokenizer: no parameters");
        return NULL;
    }
    if (s_validate(p, err) != MC_OK) return NULL;
    uint32_t n = p->n_vocab;

    size_t arena_len = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (arena_len > SIZE_MAX - MC_TOK_MAX_PIECE - 1) {
            mc_err_set(err, MC_ERR_NOMEM, "tokenizer: %u pieces do not fit in memory", n);
            return NULL;
        }
        arena_len += (size_t)p->pieces[i].len + 1;
    }
    size_t n_slots = 1;
    while (n_slots < 2 * (size_t)n) n_slots *= 2; // load <= 1/2 keeps probes short

    mc_tokenizer_t *t = calloc(1, sizeof(*t));
    if (!t) goto nomem;
    t->arena = malloc(arena_len);
    t->piece_off = malloc(n * sizeof(*t->piece_off));
    t->piece_len = malloc(n * sizeof(*t->piece_len));
    t->scores = malloc(n * sizeof(*t->scores));
    t->types = malloc(n);
    t->slots = malloc(n_slots * sizeof(*t->slots));
    if (!t->arena || !t->piece_off || !t->piece_len || !t->scores || !t->types || !t->slots) goto nomem;

    t->n_vocab = n;
    t->mask = n_slots - 1;
    t->bos_id = p->bos_id;
    t->eos_id = p->eos_id;
    t->unk_id = p->unk_id;
    t->add_bos = p->add_bos;
    t->kind = p->kind;
    for (size_t i = 0; i < n_slots; i++) t->slots[i] = -1;

    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)p->pieces[i].len;
        if (len > 0) memcpy(t->arena + off, p->pieces[i].ptr, len);
        t->arena[off + len] = '\0';
        t->piece_off[i] = off;
        t->piece_len[i] = len;
        t->scores[i] = p->scores ? p->scores[i] : 0.0f;
        t->types[i] = (uint8_t)(p->types ? p->types[i] : MC_TOKEN_NORMAL);
        if (len > t->max_piece_len) t->max_piece_len = len;
        off += (size_t)len + 1;

        const char *piece = s_piece(t, (int32_t)i);
        size_t slot = (size_t)s_hash(piece, len) & t->mask;
        for (int32_t o; (o = t->slots[slot]) >= 0; slot = (slot + 1) & t->mask)
            if (t->piece_len[o] == len && memcmp(s_piece(t, o), piece, len) == 0) break;
        if (t->slots[slot] < 0 || t->kind == MC_TOKENIZER_BPE) t->slots[slot] = (int32_t)i;
        // else a SentencePiece duplicate: the lower id keeps the text
    }
    for (int b = 0; b < 256; b++) {
        static const char hex[] = "0123456789ABCDEF";
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        t->byte_id[b] = s_lookup(t, name, sizeof(name));
    }
    if (t->kind == MC_TOKENIZER_BPE) {
        mc_bpe_params_t bp = {
            .n_vocab = n, .pieces = p->pieces, .types = t->types, .merges = p->merges, .n_merges = p->n_merges,
            .pre = p->pre.ptr, .pre_len = (size_t)p->pre.len, .lookup = s_lookup_cb, .lookup_ctx = t,
        };
        if (!(t->bpe = mc_bpe_new(&bp, err))) {
            mc_tokenizer_destroy(&t);
            return NULL;
        }
    }
    return t;

nomem:
    mc_tokenizer_destroy(&t);
    mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory for %u pieces", n);
    return NULL;
}

// A special-token id from GGUF metadata: absent or -1 means none.
static mc_err_t s_gguf_token_id(const mc_gguf_t *g, const char *key, int32_t *out, char *err) {
    int64_t v;
    if (!mc_gguf_find(g, key)) {
        *out = -1;
        return MC_OK;
    }
    if (!mc_gguf_get_i64(g, key, &v) || v < -1 || v > INT32_MAX)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %s is not a valid token id", key);
    *out = (int32_t)v;
    return MC_OK;
}

// A per-piece array must be numeric and have one entry per piece.
static const mc_gguf_value_t *s_gguf_piece_array(const mc_gguf_t *g, const char *key, uint64_t n,
                                                 mc_err_t *rc, char *err) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    if (!v) return NULL;
    if (v->type != MC_GGUF_ARRAY || v->arr.elem_type == MC_GGUF_STRING || v->arr.elem_type == MC_GGUF_ARRAY)
        *rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %s is not a numeric array", key);
    else if (v->arr.count != n)
        *rc = mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %s has %llu entries for %llu tokens", key,
                         (unsigned long long)v->arr.count, (unsigned long long)n);
    return v;
}

// The merges and pre-tokenizer name of a byte-level vocabulary.
static mc_err_t s_gguf_bpe(const mc_gguf_t *g, mc_tokenizer_params_t *p, char *err) {
    const mc_gguf_value_t *m = mc_gguf_find(g, "tokenizer.ggml.merges");
    if (!m || m->type != MC_GGUF_ARRAY || m->arr.elem_type != MC_GGUF_STRING)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: tokenizer.ggml.merges is missing or not a string array");
    if (m->arr.count > MC_TOK_MAX_VOCAB)
        return mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %llu merges (at most %u)", (unsigned long long)m->arr.count,
                          MC_TOK_MAX_VOCAB);
    if (!mc_gguf_get_str(g, "tokenizer.ggml.pre", &p->pre))
        return mc_err_set(err, MC_ERR_FORMAT,
                          "tokenizer: tokenizer.ggml.pre is missing or not a string (supported: %s)", MC_BPE_PRE_NAMES);
    p->kind = MC_TOKENIZER_BPE;
    p->merges = m->arr.strings;
    p->n_merges = (uint32_t)m->arr.count;
    return MC_OK;
}

mc_tokenizer_t *mc_tokenizer_new_from_gguf(const mc_gguf_t *g, char *err) {
    if (!g) {
        mc_err_set(err, MC_ERR_ARG, "tokenizer: no GGUF file");
        return NULL;
    }
    mc_gguf_str_t model;
    if (!mc_gguf_get_str(g, "tokenizer.ggml.model", &model)) {
        mc_err_set(err, MC_ERR_FORMAT, "tokenizer: tokenizer.ggml.model is missing or not a string");
        return NULL;
    }
    const bool bpe = model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0;
    if (!bpe && (model.len != 5 || memcmp(model.ptr, "llama", 5) != 0)) {
        mc_err_set(err, MC_ERR_UNSUPPORTED,
                   "tokenizer: model \"%.*s\" is not supported (only \"llama\", SentencePiece BPE, and \"gpt2\", "
                   "byte-level BPE)",
                   (int)(model.len > 32 ? 32 : model.len), model.ptr);
        return NULL;
    }
    const mc_gguf_value_t *tokens = mc_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != MC_GGUF_ARRAY || tokens->arr.elem_type != MC_GGUF_STRING) {
        mc_err_set(err, MC_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens is missing or not a string array");
        return NULL;
    }
    uint64_t n = tokens->arr.count;
    if (n == 0 || n > MC_TOK_MAX_VOCAB) {
        mc_err_set(err, MC_ERR_FORMAT, "tokenizer: %llu tokens (expected 1..%u)", (unsigned long long)n,
                   MC_TOK_MAX_VOCAB);
        return NULL;
    }

    mc_err_t rc = MC_OK;
    // Byte-level vocabularies rank merges, not pieces: their scores are unused.
    const mc_gguf_value_t *scores_v = bpe ? NULL : s_gguf_piece_array(g, "tokenizer.ggml.scores", n, &rc, err);
    const mc_gguf_value_t *types_v =
        rc == MC_OK ? s_gguf_piece_array(g, "tokenizer.ggml.token_type", n, &rc, err) : NULL;
    if (rc != MC_OK) return NULL;

    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    p.n_vocab = (uint32_t)n;
    p.pieces = tokens->arr.strings;
    if (s_gguf_token_id(g, "tokenizer.ggml.bos_token_id", &p.bos_id, err) != MC_OK ||
        s_gguf_token_id(g, "tokenizer.ggml.eos_token_id", &p.eos_id, err) != MC_OK ||
        s_gguf_token_id(g, "tokenizer.ggml.unknown_token_id", &p.unk_id, err) != MC_OK)
        return NULL;
    p.add_bos = !bpe && p.bos_id >= 0; // llama.cpp's defaults: SentencePiece yes, byte-level BPE no
    if (mc_gguf_find(g, "tokenizer.ggml.add_bos_token") &&
        !mc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &p.add_bos)) {
        mc_err_set(err, MC_ERR_FORMAT, "tokenizer: tokenizer.ggml.add_bos_token is not a boolean");
        return NULL;
    }
    if (bpe && s_gguf_bpe(g, &p, err) != MC_OK) return NULL;

    float *scores = scores_v ? malloc(n * sizeof(float)) : NULL;
    int32_t *types = types_v ? malloc(n * sizeof(int32_t)) : NULL;
    mc_tokenizer_t *t = NULL;
    if ((scores_v && !scores) || (types_v && !types)) {
        mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        double s;
        int64_t ty;
        if (scores_v) {
            // A finite f64 beyond float range would not convert meaningfully.
            if (!mc_gguf_arr_f64(scores_v, i, &s) || (isfinite(s) && fabs(s) > FLT_MAX)) {
                mc_err_set(err, MC_ERR_FORMAT, "tokenizer: score %llu is not a float", (unsigned long long)i);
                goto done;
            }
            scores[i] = (float)s;
        }
        if (types_v) {
            if (!mc_gguf_arr_i64(types_v, i, &ty) || ty < INT32_MIN || ty > INT32_MAX) {
                mc_err_set(err, MC_ERR_FORMAT, "tokenizer: token type %llu is not an integer",
                           (unsigned long long)i);
                goto done;
            }
            types[i] = (int32_t)ty;
        }
    }
    p.scores = scores;
    p.types = types;
    t = mc_tokenizer_new(&p, err);
done:
    free(scores);
    free(types);
    return t;
}

uint32_t mc_tokenizer_n_vocab(const mc_tokenizer_t *t) { return t->n_vocab; }
int32_t mc_tokenizer_bos(const mc_tokenizer_t *t) { return t->bos_id; }
int32_t mc_tokenizer_eos(const mc_tokenizer_t *t) { return t->eos_id; }
bool mc_tokenizer_add_bos(const mc_tokenizer_t *t) { return t->add_bos; }
mc_tokenizer_kind_t mc_tokenizer_kind(const mc_tokenizer_t *t) { return t->kind; }

int32_t mc_tokenizer_find(const mc_tokenizer_t *t, const char *piece, size_t len) {
    if (!t || (!piece && len > 0)) return -1;
    return s_lookup(t, piece ? piece : "", len);
}

const char *mc_tokenizer_piece(const mc_tokenizer_t *t, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_vocab) return NULL;
    if (len) *len = t->piece_len[id];
    return s_piece(t, id);
}

/* ---- encoding ---- */

size_t mc_tokenizer_max_tokens(size_t len) {
    // Every normalized byte yields at most one token (a byte token); a space
    // becomes three bytes, and the dummy prefix and BOS add four more.
    // (Byte-level BPE needs at most len + 1.)
    if (len > (SIZE_MAX - 4) / 3) return SIZE_MAX;
    return 3 * len + 4;
}

// Higher score first; on a tie the leftmost pair.
static bool s_bigram_before(const void *pa, const void *pb) {
    const mc_bigram_t *a = pa, *b = pb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

// Queue the merge of symbols left and right if it forms a text piece.
static bool s_try_bigram(const mc_tokenizer_t *t, const char *norm, const mc_symbol_t *sym, int32_t left,
                         int32_t right, mc_heap_t *h) {
    if (left < 0 || right < 0) return true;
    uint32_t len = sym[left].len + sym[right].len;
    if (len > t->max_piece_len) return true;
    int32_t id = s_lookup(t, norm + sym[left].off, len);
    if (id < 0 || !s_is_text_piece(t, id)) return true;
    return mc_heap_push(h, &(mc_bigram_t){t->scores[id], left, right, len});
}

// The dummy-prefix U+2581, then the text with each ' ' replaced by U+2581.
static char *s_normalize(const char *text, size_t len, size_t *out_len) {
    size_t n = sizeof(s_space_sym);
    for (size_t i = 0; i < len; i++) n += text[i] == ' ' ? sizeof(s_space_sym) : 1;
    char *norm = malloc(n);
    if (!norm) return NULL;
    memcpy(norm, s_space_sym, sizeof(s_space_sym));
    size_t o = sizeof(s_space_sym);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(norm + o, s_space_sym, sizeof(s_space_sym));
            o += sizeof(s_space_sym);
        } else {
            norm[o++] = text[i];
        }
    }
    *out_len = n;
    return norm;
}

mc_err_t mc_tokenizer_encode(const mc_tokenizer_t *t, const char *text, size_t len, bool add_bos,
                             int32_t *ids, size_t cap, size_t *n_out, char *err) {
    if (!t || !n_out || (!text && len > 0) || (!ids && cap > 0))
        return mc_err_set(err, MC_ERR_ARG, "tokenizer: encode called with NULL arguments");
    if (len > MC_TOK_MAX_TEXT)
        return mc_err_set(err, MC_ERR_RANGE, "tokenizer: text of %zu bytes is too long", len);
    size_t n = 0;
    if (add_bos) {
        if (t->bos_id < 0) return mc_err_set(err, MC_ERR_ARG, "tokenizer: the vocabulary has no BOS token");
        if (cap < 1) return mc_err_set(err, MC_ERR_RANGE, "tokenizer: id buffer too small");
        ids[n++] = t->bos_id;
    }
    if (len == 0) { // SentencePiece adds no dummy prefix to empty text
        *n_out = n;
        return MC_OK;
    }
    if (t->kind == MC_TOKENIZER_BPE) {
        size_t k;
        mc_err_t brc = mc_bpe_encode(t->bpe, text, len, ids + n, cap - n, &k, err);
        if (brc == MC_OK) *n_out = n + k;
        return brc;
    }

    size_t norm_len;
    char *norm = s_normalize(text, len, &norm_len);
    const uint8_t *u = (const uint8_t *)norm;
    mc_symbol_t *sym = NULL;
    mc_heap_t heap = mc_heap_make(sizeof(mc_bigram_t), s_bigram_before);
    mc_err_t rc = MC_OK;
    if (!norm) goto nomem;

    size_t n_sym = 0;
    for (size_t i = 0; i < norm_len; i += s_utf8_char_len(u + i, norm_len - i)) n_sym++;
    sym = malloc(n_sym * sizeof(*sym));
    if (!sym) goto nomem;
    size_t off = 0;
    for (size_t k = 0; k < n_sym; k++) {
        uint32_t clen = s_utf8_char_len(u + off, norm_len - off);
        sym[k] = (mc_symbol_t){(int32_t)k - 1, k + 1 < n_sym ? (int32_t)k + 1 : -1, (uint32_t)off, clen};
        off += clen;
    }

    for (size_t k = 0; k + 1 < n_sym; k++)
        if (!s_try_bigram(t, norm, sym, (int32_t)k, (int32_t)k + 1, &heap)) goto nomem;
    while (heap.n > 0) {
        mc_bigram_t b;
        mc_heap_pop(&heap, &b);
        mc_symbol_t *l = &sym[b.left], *r = &sym[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.len) continue; // stale
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        if (!s_try_bigram(t, norm, sym, l->prev, b.left, &heap) ||
            !s_try_bigram(t, norm, sym, b.left, l->next, &heap))
            goto nomem;
    }

    // Symbol 0 only ever absorbs its right neighbours, so it stays the head.
    for (int32_t k = 0; k >= 0 && rc == MC_OK; k = sym[k].next) {
        int32_t id = s_lookup(t, norm + sym[k].off, sym[k].len);
        if (id >= 0 && s_is_text_piece(t, id)) {
            if (n == cap) rc = mc_err_set(err, MC_ERR_RANGE, "tokenizer: id buffer too small");
            else ids[n++] = id;
            continue;
        }
        for (uint32_t j = 0; j < sym[k].len && rc == MC_OK; j++) {
            uint8_t byte = u[sym[k].off + j];
            int32_t bid = t->byte_id[byte] >= 0 ? t->byte_id[byte] : t->unk_id;
            if (bid < 0)
                rc = mc_err_set(err, MC_ERR_UNSUPPORTED,
                                "tokenizer: byte 0x%02X has no piece and there is no unknown token", byte);
            else if (n == cap)
                rc = mc_err_set(err, MC_ERR_RANGE, "tokenizer: id buffer too small");
            else
                ids[n++] = bid;
        }
    }
    if (rc == MC_OK) *n_out = n;
    goto done;

nomem:
    rc = mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
done:
    free(norm);
    free(sym);
    mc_heap_free(&heap);
    return rc;
}

/* ---- decoding ---- */

void mc_detok_init(mc_detok_t *d, bool strip_leading_space) {
    memset(d, 0, sizeof(*d));
    d->strip_space = strip_leading_space;
}

size_t mc_detok_max_bytes(const mc_tokenizer_t *t) {
    // Up to 3 held-back bytes plus the piece; each byte becomes at most one
    // 3-byte U+FFFD.
    return 3 * ((size_t)t->max_piece_len + 3);
}

// Write one U+FFFD per held-back byte.
static size_t s_detok_drop_pending(mc_detok_t *d, char *out) {
    size_t w = 0;
    for (uint32_t i = 0; i < d->n_pending; i++, w += sizeof(s_replacement))
        memcpy(out + w, s_replacement, sizeof(s_replacement));
    d->n_pending = 0;
    return w;
}

// Pass one output byte through the UTF-8 validator.
static size_t s_detok_byte(mc_detok_t *d, uint8_t b, char *out) {
    size_t w = 0;
    if (d->n_pending > 0) {
        if (s_utf8_continues(d->pending, d->n_pending, b)) {
            d->pending[d->n_pending++] = b;
            if (d->n_pending < s_utf8_need(d->pending[0])) return 0;
            memcpy(out, d->pending, d->n_pending);
            w = d->n_pending;
            d->n_pending = 0;
            return w;
        }
        // The held bytes after the lead are continuation bytes, each invalid on its own.
        w = s_detok_drop_pending(d, out);
    }
    uint32_t need = s_utf8_need(b);
    if (need == 1) {
        out[w++] = (char)b;
    } else if (need == 0) {
        memcpy(out + w, s_replacement, sizeof(s_replacement));
        w += sizeof(s_replacement);
    } else {
        d->pending[0] = b;
        d->n_pending = 1;
    }
    return w;
}

// A byte-level BPE token: its bytes through the UTF-8 validator.
static size_t s_detok_push_bpe(const mc_tokenizer_t *t, mc_detok_t *d, int32_t id, char *out, size_t cap) {
    int type = id >= 0 && (uint32_t)id < t->n_vocab ? t->types[id] : MC_TOKEN_CONTROL;
    if (type == MC_TOKEN_CONTROL || type == MC_TOKEN_UNKNOWN || type == MC_TOKEN_UNUSED) return 0;
    if (type == MC_TOKEN_BYTE) {
        if (cap < 3 * ((size_t)d->n_pending + 1)) return 0;
        return s_detok_byte(d, (uint8_t)s_byte_piece_value(s_piece(t, id), t->piece_len[id]), out);
    }
    size_t len = t->piece_len[id];
    if (cap < 3 * ((size_t)d->n_pending + len)) return 0;
    char bytes[MC_TOK_MAX_PIECE];
    if (type == MC_TOKEN_USER) memcpy(bytes, s_piece(t, id), len);
    else len = mc_bpe_piece_to_bytes(s_piece(t, id), len, bytes);
    size_t w = 0;
    for (size_t i = 0; i < len; i++) w += s_detok_byte(d, (uint8_t)bytes[i], out + w);
    return w;
}

size_t mc_detok_push(const mc_tokenizer_t *t, mc_detok_t *d, int32_t id, char *out, size_t cap) {
    if (t->kind == MC_TOKENIZER_BPE) return s_detok_push_bpe(t, d, id, out, cap);
    bool known = id >= 0 && (uint32_t)id < t->n_vocab;
    int type = known ? t->types[id] : MC_TOKEN_CONTROL;
    if (type == MC_TOKEN_BYTE) {
        if (cap < 3 * ((size_t)d->n_pending + 1)) return 0;
        d->strip_space = false;
        return s_detok_byte(d, (uint8_t)s_byte_piece_value(s_piece(t, id), t->piece_len[id]), out);
    }
    bool silent = type == MC_TOKEN_CONTROL || type == MC_TOKEN_UNKNOWN;
    const char *p = silent ? NULL : s_piece(t, id);
    size_t len = silent ? 0 : t->piece_len[id];
    if (cap < 3 * ((size_t)d->n_pending + len)) return 0;
    // Any other token ends a run of byte tokens, as in SentencePiece.
    size_t w = s_detok_drop_pending(d, out);
    if (len == 0) return w;
    size_t i = 0;
    if (d->strip_space && len >= sizeof(s_space_sym) && memcmp(p, s_space_sym, sizeof(s_space_sym)) == 0)
        i = sizeof(s_space_sym);
    d->strip_space = false;
    while (i < len) {
        if (len - i >= sizeof(s_space_sym) && memcmp(p + i, s_space_sym, sizeof(s_space_sym)) == 0) {
            w += s_detok_byte(d, ' ', out + w);
            i += sizeof(s_space_sym);
        } else {
            w += s_detok_byte(d, (uint8_t)p[i++], out + w);
        }
    }
    return w;
}

size_t mc_tokenizer_token_bytes(const mc_tokenizer_t *t, int32_t id, char *out, size_t cap) {
    const int type = id >= 0 && (uint32_t)id < t->n_vocab ? t->types[id] : MC_TOKEN_CONTROL;
    if (type == MC_TOKEN_CONTROL || type == MC_TOKEN_UNKNOWN || type == MC_TOKEN_UNUSED) return 0;
    if (type == MC_TOKEN_BYTE) {
        if (cap < 1) return 0;
        out[0] = (char)s_byte_piece_value(s_piece(t, id), t->piece_len[id]);
        return 1;
    }
    const char *p = s_piece(t, id);
    const size_t len = t->piece_len[id];
    if (cap < len) return 0; // no piece grows: U+2581 (3 bytes) becomes 1, byte-level characters 1 or 2 become 1
    if (t->kind == MC_TOKENIZER_BPE) {
        if (type == MC_TOKEN_USER) {
            memcpy(out, p, len);
            return len;
        }
        return mc_bpe_piece_to_bytes(p, len, out);
    }
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= sizeof(s_space_sym) && memcmp(p + i, s_space_sym, sizeof(s_space_sym)) == 0) {
            out[w++] = ' ';
            i += sizeof(s_space_sym);
        } else {
            out[w++] = p[i++];
        }
    }
    return w;
}

size_t mc_detok_flush(mc_detok_t *d, char *out, size_t cap) {
    if (cap < 3 * (size_t)d->n_pending) return 0;
    return s_detok_drop_pending(d, out);
}

char *mc_tokenizer_decode(const mc_tokenizer_t *t, const int32_t *ids, size_t n) {
    size_t step = mc_detok_max_bytes(t);
    size_t cap = step + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    mc_detok_t d;
    mc_detok_init(&d, true);
    for (size_t i = 0; i <= n; i++) {
        if (cap - len < step + 1) {
            if (cap > SIZE_MAX / 2) goto fail;
            char *nb = realloc(buf, 2 * cap);
            if (!nb) goto fail;
            buf = nb;
            cap *= 2;
        }
        len += i < n ? mc_detok_push(t, &d, ids[i], buf + len, cap - len) : mc_detok_flush(&d, buf + len, cap - len);
    }
    buf[len] = '\0';
    return buf;
fail:
    free(buf);
    return NULL;
}
