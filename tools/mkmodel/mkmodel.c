/*
 * mkmodel: random mixture-of-experts GGUF files (Mixtral, Qwen3-MoE, OLMoE,
 * Qwen2-MoE).
 *
 * The vocabulary imitates a SentencePiece BPE model with byte fallback:
 * control and byte tokens, single characters, then pieces learned by BPE
 * from a built-in English text, topped up with longer word-like pieces when
 * the text runs out of frequent pairs. Every merged piece is the
 * concatenation of two earlier pieces, so the tokenizer can reach it.
 *
 * Weights are Gaussian. Each (role, layer, expert) part of the model has its
 * own generator seeded from the model seed, so a tensor's bytes never depend
 * on what was generated before it: merged and legacy expert layouts of one
 * seed hold identical experts.
 */
#include "mkmodel.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe_train.h"
#include "gguf_writer.h"
#include "quant.h"
#include "rng.h"

#define MC_MK_N_SPECIAL 259u        // <unk>, <s>, </s>, 256 byte tokens
#define MC_MK_SPACE "\xE2\x96\x81" // U+2581, SentencePiece's visible space

// Training text for the BPE merges: plain English so that the pieces look
// like the ones of a real model (common words, suffixes, "▁the").
static const char s_corpus[] =
    "The river town woke slowly on winter mornings. Before the sun had cleared the hills, the "
    "baker was already at work, and the smell of fresh bread drifted along the narrow streets "
    "toward the harbor. Fishermen checked their nets, children walked to school in small groups, "
    "and the old clock above the market struck seven with a tired, familiar sound.\n"
    "Most people in the town had lived there all their lives. They knew which roads flooded in "
    "the spring, which shops opened late, and which neighbors would always stop to talk. "
    "Visitors were rare, but when they came they were welcomed with coffee, a warm meal and more "
    "questions than they could answer. Some stayed for a week; others never left.\n"
    "In the evening the light changed. The water turned from grey to gold, then to a deep and "
    "quiet blue, and the lamps along the harbor were lit one by one. Music came from the café "
    "near the station, where students and workers shared long tables and argued about politics, "
    "football and the weather. Nobody was ever completely right, and nobody seemed to mind.\n"
    "A computer is a machine that follows instructions. It reads numbers from memory, combines "
    "them, and writes the results back, billions of times every second. Everything it does, from "
    "showing a picture to translating a sentence, is built from these simple steps. The art of "
    "programming is to describe a complicated task as a sequence of operations that the machine "
    "can perform, without making mistakes and without wasting time.\n"
    "Language models are programs that predict the next word of a text. They are trained on "
    "large collections of writing, and they learn which words tend to follow which. A model "
    "does not see letters or words directly: the text is first split into pieces called tokens, "
    "and each token is mapped to a number. Frequent words become single tokens, while rare words "
    "are broken into several smaller pieces. When a character is not known at all, the model "
    "falls back to its raw bytes, so that every possible input can still be represented.\n"
    "A mixture of experts divides the work of a large network between many smaller ones. For "
    "every token, a router chooses the experts that seem most useful and combines their answers, "
    "weighted by how confident it is. Only a few experts run for each token, so the model can "
    "hold a great deal of knowledge while keeping the cost of each step low. The experts can "
    "even live on different machines, connected by a fast network, as long as the messages "
    "between them are small and the answers arrive in time.\n"
    "Good software is tested carefully. Each part is checked on its own, with inputs that are "
    "normal, unusual and deliberately wrong, and the whole system is then checked together. "
    "When something fails, the error message should say clearly what happened and where, so "
    "that the person reading it knows what to do next. Writing such messages takes patience, "
    "but it saves far more time than it costs.\n"
    "On Sunday the market was full. There were apples and pears, cheese from the farms in the "
    "valley, fresh fish from the morning boats, flowers, honey, bread and wine. An old woman "
    "sold knitted hats and told everyone the same story about the great storm of her childhood, "
    "when the river rose over the bridge and the whole town had to be rowed to safety. Her "
    "naïve listeners believed every word, and perhaps every word was true.\n";

// Normal pieces always present: the visible space, printable ASCII, and the
// Latin-1 letters (U+00C0..U+00FF without the multiplication and division signs).
static uint32_t s_n_chars(void) { return 1 + 94 + 62; }

static uint32_t s_char_codepoint(uint32_t i) {
    if (i == 0) return 0x2581;
    if (i <= 94) return 0x20 + i;
    uint32_t c = 0xC0 + (i - 95);
    if (c >= 0xD7) c++;
    if (c >= 0xF7) c++;
    return c;
}

static size_t s_utf8_encode(uint32_t c, char out[4]) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (c >> 12));
    out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[2] = (char)(0x80 | (c & 0x3F));
    return 3;
}

// ---- vocabulary ----

typedef struct {
    uint32_t n, cap;          // pieces so far, n_vocab
    uint32_t first_char;      // id of "▁", the first single-character piece
    uint32_t first_merge;     // id of the first merged piece
    char *pool;               // piece bytes back to back
    size_t pool_len, pool_cap;
    size_t *off;              // [cap] start of each piece in pool
    uint32_t *len;            // [cap] piece length in bytes
    float *score;             // [cap]
    int32_t *type;            // [cap] S_TOKEN_* values
    uint32_t *table;          // [table_cap] piece id + 1, 0 when empty
    size_t table_cap;         // power of two >= 2 * cap
} s_vocab_t;

// Token types as tokenizer.h's mc_token_type_t numbers them (and GGUF stores them).
enum { S_TOKEN_NORMAL = 1, S_TOKEN_UNKNOWN = 2, S_TOKEN_CONTROL = 3, S_TOKEN_BYTE = 6 };

static uint64_t s_hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

// Slot of piece s in the table: where it is, or the empty slot where it would go.
static size_t s_vocab_slot(const s_vocab_t *v, const char *s, size_t len) {
    size_t mask = v->table_cap - 1, i = (size_t)s_hash_bytes(s, len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t id = v->table[i];
        if (id == 0) return i;
        id--;
        if (v->len[id] == len && !memcmp(v->pool + v->off[id], s, len)) return i;
    }
}

static uint32_t s_vocab_find(const s_vocab_t *v, const char *s, size_t len) {
    uint32_t id = v->table[s_vocab_slot(v, s, len)];
    return id ? id - 1 : UINT32_MAX;
}

static mc_err_t s_vocab_add(s_vocab_t *v, const char *s, size_t len, float score, int32_t type,
                            char *err) {
    assert(v->n < v->cap);
    size_t slot = s_vocab_slot(v, s, len);
    assert(v->table[slot] == 0);
    if (v->pool_len + len > v->pool_cap) {
        size_t cap = v->pool_cap * 2;
        while (cap < v->pool_len + len) cap *= 2;
        char *pool = realloc(v->pool, cap);
        if (!pool) return mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory (vocabulary)");
        v->pool = pool;
        v->pool_cap = cap;
    }
    memcpy(v->pool + v->pool_len, s, len);
    v->off[v->n] = v->pool_len;
    v->len[v->n] = (uint32_t)len;
    v->score[v->n] = score;
    v->type[v->n] = type;
    v->pool_len += len;
    v->table[slot] = ++v->n;
    return MC_OK;
}

static void s_vocab_free(s_vocab_t *v) {
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->table);
    *v = (s_vocab_t){0};
}

// Merged pieces score -1, -2, ... in the order they are created, like a
// SentencePiece BPE model; single characters score below all of them.
static float s_merge_score(const s_vocab_t *v) { return -(float)(v->n - v->first_merge + 1); }

// Add the concatenation of pieces a and b unless present; *id gets its id.
static mc_err_t s_vocab_add_concat(s_vocab_t *v, uint32_t a, uint32_t b, uint32_t *id, char *err) {
    char buf[512];
    size_t la = v->len[a], lb = v->len[b];
    if (la + lb > sizeof buf) { // longer than any piece the generator makes
        *id = UINT32_MAX;
        return MC_OK;
    }
    memcpy(buf, v->pool + v->off[a], la);
    memcpy(buf + la, v->pool + v->off[b], lb);
    *id = s_vocab_find(v, buf, la + lb);
    if (*id != UINT32_MAX) return MC_OK;
    *id = v->n;
    return s_vocab_add(v, buf, la + lb, s_merge_score(v), S_TOKEN_NORMAL, err);
}

static mc_err_t s_vocab_base(s_vocab_t *v, char *err) {
    static const char *const control[3] = {"<unk>", "<s>", "</s>"};
    mc_err_t rc = MC_OK;
    for (uint32_t i = 0; i < 3 && rc == MC_OK; i++)
        rc = s_vocab_add(v, control[i], strlen(control[i]), 0.0f,
                         i == 0 ? S_TOKEN_UNKNOWN : S_TOKEN_CONTROL, err);
    for (uint32_t b = 0; b < 256 && rc == MC_OK; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        rc = s_vocab_add(v, name, 6, 0.0f, S_TOKEN_BYTE, err);
    }
    v->first_char = v->n;
    for (uint32_t i = 0; i < s_n_chars() && rc == MC_OK; i++) {
        char c[4];
        size_t len = s_utf8_encode(s_char_codepoint(i), c);
        rc = s_vocab_add(v, c, len, -(float)(v->cap + i), S_TOKEN_NORMAL, err);
    }
    v->first_merge = v->n;
    return rc;
}

static bool s_is_letter(uint32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xFF);
}

// Decode one UTF-8 character of the (trusted, built-in) corpus.
static size_t s_utf8_decode(const char *s, uint32_t *c) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80) {
        *c = u[0];
        return 1;
    }
    assert((u[0] & 0xE0) == 0xC0); // the corpus holds Latin-1 letters at most
    *c = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    return 2;
}

typedef struct {
    uint32_t *sym;   // symbols (piece ids) of all words, back to back
    uint32_t *start; // [n_words] first symbol of each word
    uint32_t *len;   // [n_words] current symbol count of each word
    uint32_t n_words, n_sym;
} s_words_t;

// Split the corpus like SentencePiece: a word is "▁" plus the following
// characters, and a change between letters and other characters starts a
// new word (so "town." gives "▁town" and ".").
static mc_err_t s_words_build(const s_vocab_t *v, s_words_t *ws, char *err) {
    size_t n = sizeof s_corpus - 1;
    ws->sym = malloc((2 * n + 1) * sizeof *ws->sym);
    ws->start = malloc((n + 1) * sizeof *ws->start);
    ws->len = malloc((n + 1) * sizeof *ws->len);
    if (!ws->sym || !ws->start || !ws->len)
        return mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory (BPE training)");
    uint32_t space = v->first_char;
    bool in_word = false, prev_letter = false;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = s_utf8_decode(s_corpus + i, &c);
        if (c == ' ' || c == '\n') {
            in_word = false;
            i += k;
            continue;
        }
        bool letter = s_is_letter(c);
        if (!in_word || letter != prev_letter) {
            ws->start[ws->n_words] = ws->n_sym;
            ws->len[ws->n_words++] = 0;
            if (!in_word) {
                ws->sym[ws->n_sym++] = space;
                ws->len[ws->n_words - 1]++;
            }
        }
        uint32_t id = s_vocab_find(v, s_corpus + i, k);
        assert(id != UINT32_MAX); // every corpus character is a base piece
        ws->sym[ws->n_sym++] = id;
        ws->len[ws->n_words - 1]++;
        in_word = true;
        prev_letter = letter;
        i += k;
    }
    return MC_OK;
}

typedef struct {
    uint64_t key;   // left << 32 | right piece id
    uint32_t count; // 0: empty slot
} s_pair_t;

// Classic BPE: count adjacent pairs, merge the most frequent (ties: smaller
// ids first), repeat until the vocabulary is full or no pair occurs twice.
static mc_err_t s_vocab_train(s_vocab_t *v, char *err) {
    s_words_t ws = {0};
    size_t cap = 1;
    s_pair_t *pairs = NULL;
    size_t *used = NULL;
    mc_err_t rc = s_words_build(v, &ws, err);
    if (rc == MC_OK) {
        while (cap < 2 * (size_t)ws.n_sym) cap *= 2;
        pairs = calloc(cap, sizeof *pairs);
        used = malloc(ws.n_sym * sizeof *used);
        if (!pairs || !used) rc = mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory (BPE training)");
    }
    while (rc == MC_OK && v->n < v->cap) {
        size_t n_used = 0;
        for (uint32_t w = 0; w < ws.n_words; w++) {
            const uint32_t *s = ws.sym + ws.start[w];
            for (uint32_t j = 0; j + 1 < ws.len[w]; j++) {
                uint64_t key = (uint64_t)s[j] << 32 | s[j + 1];
                size_t i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
                while (pairs[i].count && pairs[i].key != key) i = (i + 1) & (cap - 1);
                if (!pairs[i].count) {
                    pairs[i].key = key;
                    used[n_used++] = i;
                }
                pairs[i].count++;
            }
        }
        s_pair_t best = {0, 0};
        for (size_t u = 0; u < n_used; u++) {
            s_pair_t p = pairs[used[u]];
            if (p.count > best.count || (p.count == best.count && p.key < best.key)) best = p;
            pairs[used[u]].count = 0;
        }
        if (best.count < 2) break;
        uint32_t a = (uint32_t)(best.key >> 32), b = (uint32_t)best.key, id;
        rc = s_vocab_add_concat(v, a, b, &id, err);
        if (rc != MC_OK) break;
        assert(id != UINT32_MAX);
        for (uint32_t w = 0; w < ws.n_words; w++) {
            uint32_t *s = ws.sym + ws.start[w], out = 0;
            for (uint32_t j = 0; j < ws.len[w]; j++) {
                if (j + 1 < ws.len[w] && s[j] == a && s[j + 1] == b) {
                    s[out++] = id;
                    j++;
                } else {
                    s[out++] = s[j];
                }
            }
            ws.len[w] = out;
        }
    }
    free(pairs);
    free(used);
    free(ws.sym);
    free(ws.start);
    free(ws.len);
    return rc;
}

// Piece made of lowercase ASCII letters, optionally after a leading "▁".
static bool s_word_like(const s_vocab_t *v, uint32_t id, bool allow_space) {
    const char *s = v->pool + v->off[id];
    size_t len = v->len[id], i = 0;
    if (allow_space && len >= 3 && !memcmp(s, MC_MK_SPACE, 3)) i = 3;
    if (i == len) return i > 0;
    for (; i < len; i++)
        if (s[i] < 'a' || s[i] > 'z') return false;
    return true;
}

// Top the vocabulary up once the corpus has no pair left to merge: append
// lowercase continuations (taken from the existing pieces) to "▁" and to
// the word-like merged pieces, in id order. Each new piece is the
// concatenation of two existing ones. The longest word-like piece always
// yields new, longer pieces, so this cannot run dry.
static mc_err_t s_vocab_fill(s_vocab_t *v, char *err) {
    if (v->n == v->cap) return MC_OK;
    uint32_t *cont = malloc(v->n * sizeof *cont), n_cont = 0;
    if (!cont) return mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory (vocabulary)");
    for (uint32_t id = v->first_char; id < v->n; id++)
        if (s_word_like(v, id, false)) cont[n_cont++] = id;
    mc_err_t rc = MC_OK;
    for (uint32_t left = v->first_char; rc == MC_OK && v->n < v->cap; left++) {
        assert(left < v->n);
        if ((left > v->first_char && left < v->first_merge) || !s_word_like(v, left, true)) continue;
        for (uint32_t r = 0; r < n_cont && rc == MC_OK && v->n < v->cap; r++) {
            uint32_t id;
            rc = s_vocab_add_concat(v, left, cont[r], &id, err);
        }
    }
    free(cont);
    return rc;
}

static mc_err_t s_vocab_build(s_vocab_t *v, uint32_t n_vocab, char *err) {
    v->cap = n_vocab;
    v->table_cap = 1;
    while (v->table_cap < 2 * (size_t)n_vocab) v->table_cap *= 2;
    v->pool_cap = 16 * (size_t)n_vocab;
    v->pool = malloc(v->pool_cap);
    v->off = malloc(n_vocab * sizeof *v->off);
    v->len = malloc(n_vocab * sizeof *v->len);
    v->score = malloc(n_vocab * sizeof *v->score);
    v->type = malloc(n_vocab * sizeof *v->type);
    v->table = calloc(v->table_cap, sizeof *v->table);
    if (!v->pool || !v->off || !v->len || !v->score || !v->type || !v->table)
        return mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory (vocabulary)");
    mc_err_t rc = s_vocab_base(v, err);
    if (rc == MC_OK) rc = s_vocab_train(v, err);
    if (rc == MC_OK) rc = s_vocab_fill(v, err);
    return rc;
}

// ---- weights ----

typedef enum {
    S_ROLE_TOKEN_EMBD,
    S_ROLE_ATTN_NORM,
    S_ROLE_ATTN_Q,
    S_ROLE_ATTN_K,
    S_ROLE_ATTN_V,
    S_ROLE_ATTN_OUT,
    S_ROLE_FFN_NORM,
    S_ROLE_ROUTER,
    S_ROLE_GATE,
    S_ROLE_UP,
    S_ROLE_DOWN,
    S_ROLE_OUTPUT_NORM,
    S_ROLE_OUTPUT,
    // Appended: a role's number seeds its generator, so older roles keep their bits.
    S_ROLE_Q_NORM,
    S_ROLE_K_NORM,
    S_ROLE_Q_BIAS,
    S_ROLE_K_BIAS,
    S_ROLE_V_BIAS,
    S_ROLE_SHEXP_GATE_INP,
    S_ROLE_SHEXP_GATE,
    S_ROLE_SHEXP_UP,
    S_ROLE_SHEXP_DOWN,
    S_ROLE_KV_A,
    S_ROLE_KV_A_NORM,
    S_ROLE_K_B,
    S_ROLE_V_B,
    S_ROLE_Q_A,
    S_ROLE_Q_A_NORM,
    S_ROLE_EXP_PROBS_B,
    S_ROLE_DENSE_GATE,
    S_ROLE_DENSE_UP,
    S_ROLE_DENSE_DOWN,
    S_ROLE_NEXTN_EH_PROJ,
    S_ROLE_NEXTN_ENORM,
    S_ROLE_NEXTN_HNORM,
    S_ROLE_SINKS,
    S_ROLE_ATTN_OUT_BIAS,
    S_ROLE_ROUTER_BIAS,
    S_ROLE_EXP_GATE_BIAS,
    S_ROLE_EXP_UP_BIAS,
    S_ROLE_EXP_DOWN_BIAS,
} s_role_t;

// One tensor of the file: n_part parts (experts, stacked along ne[2] in the
// merged layout) of ne1 rows of ne0 values each.
typedef struct {
    s_role_t role;
    uint32_t layer;
    uint32_t expert; // expert of the first part
    uint32_t n_part;
    mc_dtype_t type;
    uint64_t ne0, ne1;
    float mean, std;
} s_spec_t;

typedef struct {
    uint64_t seed;
    const s_spec_t *specs;
    float *row; // [max ne0] scratch
    float router_skew;
} s_fill_ctx_t;

typedef struct {
    mc_rng_t g;
    float spare;   // second value of the last Gaussian pair
    bool has_spare;
} s_rng_t;

static void s_rng_seed(s_rng_t *r, uint64_t seed) {
    mc_rng_seed(&r->g, seed);
    r->spare = 0.0f;
    r->has_spare = false;
}

static void s_rng_fill(s_rng_t *r, float *out, uint64_t n, float mean, float std) {
    uint64_t i = 0;
    if (n && r->has_spare) {
        out[i++] = mean + std * r->spare;
        r->has_spare = false;
    }
    for (; i + 1 < n; i += 2) {
        float a, b;
        mc_rng_gauss2(&r->g, &a, &b);
        out[i] = mean + std * a;
        out[i + 1] = mean + std * b;
    }
    if (i < n) {
        float a;
        mc_rng_gauss2(&r->g, &a, &r->spare);
        r->has_spare = true;
        out[i] = mean + std * a;
    }
}

// The generator seed of one part: a hash of (seed, role, layer, expert).
static uint64_t s_part_seed(uint64_t seed, s_role_t role, uint32_t layer, uint32_t expert) {
    const uint64_t path[] = {(uint64_t)role, layer, expert};
    return mc_rng_seed_of(seed, path, 3);
}

static mc_err_t s_fill(void *vctx, size_t index, void *dst, size_t size, char *err) {
    const s_fill_ctx_t *c = vctx;
    const s_spec_t *sp = &c->specs[index];
    size_t row_bytes = mc_dtype_row_bytes(sp->type, sp->ne0);
    assert(size == row_bytes * sp->ne1 * sp->n_part);
    (void)size;
    uint8_t *out = dst;
    for (uint32_t e = 0; e < sp->n_part; e++) {
        s_rng_t rng;
        s_rng_seed(&rng, s_part_seed(c->seed, sp->role, sp->layer, sp->expert + e));
        for (uint64_t r = 0; r < sp->ne1; r++, out += row_bytes) {
            s_rng_fill(&rng, c->row, sp->ne0, sp->mean, sp->std);
            if (sp->role == S_ROLE_ROUTER && c->router_skew != 1.0f && sp->ne1 > 1) {
                const float scale = powf(c->router_skew, -(float)r / (float)(sp->ne1 - 1));
                for (uint64_t i = 0; i < sp->ne0; i++) c->row[i] *= scale;
            }
            mc_err_t rc = mc_quant_quantize_row(sp->type, c->row, out, (int64_t)sp->ne0);
            if (rc != MC_OK)
                return mc_err_set(err, rc, "quantizing a row to %s failed", mc_dtype_name(sp->type));
        }
    }
    return MC_OK;
}

// ---- file layout ----

// llama.cpp's general.file_type for a model whose matrices are all `type` (the one
// table is common/dtype.c's, which moe-convert writes too).
static uint32_t s_file_type(mc_dtype_t type) {
    uint32_t ft = 0;
    if (!mc_dtype_file_type(type, &ft)) assert(!"type rejected by mc_mkmodel_check");
    return ft;
}

typedef struct {
    const char *key;
    char kind; // s string, u u32, f f32, b bool, T tokens, S scores, Y token types
    const char *s;
    uint32_t u;
    float f;
} s_meta_t;

static uint32_t s_head_dim(const mc_mkmodel_params_t *p) { return p->head_dim ? p->head_dim : p->dim / p->n_head; }

// The shared expert's width; 0 when the family has none (a count of expert
// widths for DeepSeek: default 2, V2-Lite's).
static uint32_t s_ffn_shexp(const mc_mkmodel_params_t *p) {
    const mc_shexp_t kind = mc_arch_get(p->arch)->shared_expert;
    if (!kind) return 0;
    return p->ffn_shexp ? p->ffn_shexp : (kind == MC_SHEXP_COUNT ? 2 : 4) * p->ffn;
}

static bool s_mla(const mc_mkmodel_params_t *p) { return mc_arch_get(p->arch)->mla; }

// Latent attention's widths (see mc_mkmodel_params_t).
static uint32_t s_kv_lora_rank(const mc_mkmodel_params_t *p) { return p->kv_lora_rank ? p->kv_lora_rank : p->dim; }
static uint32_t s_rope_dim(const mc_mkmodel_params_t *p) {
    if (!s_mla(p)) return p->rope_dim ? p->rope_dim : s_head_dim(p);
    return p->rope_dim ? p->rope_dim : s_head_dim(p) / 8 * 2;
}
static uint32_t s_head_dim_v(const mc_mkmodel_params_t *p) {
    if (!s_mla(p)) return s_head_dim(p);
    return p->head_dim_v ? p->head_dim_v : s_head_dim(p) - s_rope_dim(p);
}

// The dense layers (families with them): the leading ones, then those the
// interleave step skips (model.h: mc_hparams_layer_moe); trailing
// next-token-prediction layers are MoE. And the dense layers' width.
static uint32_t s_dense_lead(const mc_mkmodel_params_t *p) { return mc_arch_get(p->arch)->dense_lead ? p->n_dense_lead : 0; }
static uint32_t s_moe_step(const mc_mkmodel_params_t *p) {
    return mc_arch_get(p->arch)->dense_lead && p->moe_step > 1 ? p->moe_step : 1;
}
static bool s_layer_moe(const mc_mkmodel_params_t *p, uint32_t l) {
    return l >= p->n_layer || (l >= s_dense_lead(p) && (l + 1) % s_moe_step(p) == 0);
}
static uint32_t s_n_dense(const mc_mkmodel_params_t *p) {
    uint32_t n = 0;
    for (uint32_t l = 0; l < p->n_layer; l++) n += !s_layer_moe(p, l);
    return n;
}
static uint32_t s_ffn_dense(const mc_mkmodel_params_t *p) {
    return s_n_dense(p) ? (p->ffn_dense ? p->ffn_dense : 4 * p->ffn) : 0;
}
static uint32_t s_nextn(const mc_mkmodel_params_t *p) { return mc_arch_get(p->arch)->nextn ? p->n_nextn : 0; }
// Whether MoE layers carry the selection bias exp_probs_b.
static bool s_expert_bias(const mc_mkmodel_params_t *p) {
    const mc_need_t need = mc_arch_get(p->arch)->expert_bias;
    return need == MC_NEED_REQUIRED || (need == MC_NEED_OPTIONAL && p->expert_bias);
}

// Exactly one of v (SentencePiece, with pieces and lens) and bv (byte-level
// BPE) is set.
static mc_err_t s_add_metadata(mc_gguf_writer_t *w, const mc_mkmodel_params_t *p,
                               const s_vocab_t *v, const char *const *pieces, const size_t *lens,
                               const mc_bpe_vocab_t *bv, char *err) {
    const mc_arch_info_t *arch = mc_arch_get(p->arch);
    assert(arch); // mc_mkmodel_check
    const bool mla = s_mla(p), wide = p->head_dim != 0 && !mla; // heads not dim / n_head: say so, as Qwen3 files do
    const bool yarn = p->yarn_factor > 0, route_said = arch->route_keys && (!mla || p->gating);
    const uint32_t r = s_kv_lora_rank(p), rope = s_rope_dim(p);
    const s_meta_t meta[] = {
        {"general.architecture", 's', arch->name, 0, 0},
        {"general.type", 's', "model", 0, 0},
        {"general.name", 's', "moe-mkmodel random", 0, 0},
        {".block_count", 'u', NULL, p->n_layer + s_nextn(p), 0},
        {".context_length", 'u', NULL, p->ctx_len, 0},
        {".embedding_length", 'u', NULL, p->dim, 0},
        {".feed_forward_length", 'u', NULL, s_n_dense(p) ? s_ffn_dense(p) : p->ffn, 0},
        {arch->expert_ffn_key ? ".expert_feed_forward_length" : NULL, 'u', NULL, p->ffn, 0},
        {arch->shared_expert == MC_SHEXP_FFN_KEY ? ".expert_shared_feed_forward_length" : NULL, 'u', NULL,
         s_ffn_shexp(p), 0},
        {arch->shared_expert == MC_SHEXP_COUNT ? ".expert_shared_count" : NULL, 'u', NULL, s_ffn_shexp(p) / p->ffn, 0},
        // deepseek2 says its dense layers below, with latent attention's
        // keys, and its next-token-prediction layers only when it has some.
        // GLM-4.5's converted files always say their dense layers, Qwen2-MoE's never.
        {arch->dense_lead && !mla && (arch->nextn || s_dense_lead(p)) ? ".leading_dense_block_count" : NULL, 'u', NULL,
         s_dense_lead(p), 0},
        {!mla && s_moe_step(p) > 1 ? ".interleave_moe_layer_step" : NULL, 'u', NULL, s_moe_step(p), 0},
        {arch->nextn && (!mla || s_nextn(p)) ? ".nextn_predict_layers" : NULL, 'u', NULL, s_nextn(p), 0},
        // The family's routing, said as its converted files say it (V2's
        // deepseek2 files: not at all, softmax by default).
        {route_said ? ".expert_gating_func" : NULL, 'u', NULL, (uint32_t)(p->gating ? p->gating : arch->route.gating), 0},
        {route_said ? ".expert_weights_norm" : NULL, 'b', NULL, 1, 0},
        {p->n_group ? ".expert_group_count" : NULL, 'u', NULL, p->n_group, 0},
        {p->n_group ? ".expert_group_used_count" : NULL, 'u', NULL, p->n_group_used, 0},
        {".attention.head_count", 'u', NULL, p->n_head, 0},
        {".attention.head_count_kv", 'u', NULL, mla ? 1 : p->n_head_kv, 0},
        {wide ? ".attention.key_length" : NULL, 'u', NULL, s_head_dim(p), 0},
        {wide ? ".attention.value_length" : NULL, 'u', NULL, s_head_dim(p), 0},
        // Latent attention as llama.cpp's converter writes it: the cached
        // row seen as one shared head, and the real head sizes.
        {mla ? ".attention.key_length" : NULL, 'u', NULL, r + rope, 0},
        {mla ? ".attention.value_length" : NULL, 'u', NULL, r, 0},
        {mla ? ".attention.key_length_mla" : NULL, 'u', NULL, s_head_dim(p), 0},
        {mla ? ".attention.value_length_mla" : NULL, 'u', NULL, s_head_dim_v(p), 0},
        {mla ? ".attention.kv_lora_rank" : NULL, 'u', NULL, r, 0},
        {mla ? ".attention.q_lora_rank" : NULL, 'u', NULL, p->q_lora_rank, 0},
        {mla ? ".leading_dense_block_count" : NULL, 'u', NULL, s_dense_lead(p), 0},
        {mla && s_moe_step(p) > 1 ? ".interleave_moe_layer_step" : NULL, 'u', NULL, s_moe_step(p), 0},
        {yarn ? ".rope.scaling.type" : NULL, 's', "yarn", 0, 0},
        {yarn ? ".rope.scaling.factor" : NULL, 'f', NULL, 0, p->yarn_factor},
        {yarn ? ".rope.scaling.original_context_length" : NULL, 'u', NULL,
         p->yarn_orig_ctx ? p->yarn_orig_ctx : yarn ? (uint32_t)(p->ctx_len / p->yarn_factor) : 0, 0},
        {yarn && p->yarn_mscale_all_dim != 0 ? ".rope.scaling.yarn_log_multiplier" : NULL, 'f', NULL, 0,
         0.1f * p->yarn_mscale_all_dim},
        {p->expert_weights_scale != 0 ? ".expert_weights_scale" : NULL, 'f', NULL, 0, p->expert_weights_scale},
        {arch->swa ? ".attention.sliding_window" : NULL, 'u', NULL, p->n_swa ? p->n_swa : 128, 0},
        {".rope.freq_base", 'f', NULL, 0, p->rope_base},
        {".attention.layer_norm_rms_epsilon", 'f', NULL, 0, p->rms_eps},
        {".expert_count", 'u', NULL, p->n_expert, 0},
        {".expert_used_count", 'u', NULL, p->n_expert_used, 0},
        {"general.file_type", 'u', NULL, s_file_type(p->type), 0},
        {".vocab_size", 'u', NULL, p->n_vocab, 0},
        {".rope.dimension_count", 'u', NULL, s_rope_dim(p), 0},
        {v ? "tokenizer.ggml.model" : NULL, 's', "llama", 0, 0},
        {v ? "tokenizer.ggml.pre" : NULL, 's', "default", 0, 0},
        {v ? "tokenizer.ggml.tokens" : NULL, 'T', NULL, 0, 0},
        {v ? "tokenizer.ggml.scores" : NULL, 'S', NULL, 0, 0},
        {v ? "tokenizer.ggml.token_type" : NULL, 'Y', NULL, 0, 0},
        {v ? "tokenizer.ggml.bos_token_id" : NULL, 'u', NULL, 1, 0},
        {v ? "tokenizer.ggml.eos_token_id" : NULL, 'u', NULL, 2, 0},
        {v ? "tokenizer.ggml.unknown_token_id" : NULL, 'u', NULL, 0, 0},
        {v ? "tokenizer.ggml.add_bos_token" : NULL, 'b', NULL, 1, 0},
        {v ? "tokenizer.ggml.add_eos_token" : NULL, 'b', NULL, 0, 0},
        // Byte-level vocabularies as Qwen's instruct files set them: BOS is
        // <|endoftext|> but not added, a turn ends with <|im_end|>.
        {bv ? "tokenizer.ggml.bos_token_id" : NULL, 'u', NULL, bv ? (uint32_t)bv->endoftext_id : 0, 0},
        {bv ? "tokenizer.ggml.eos_token_id" : NULL, 'u', NULL, bv ? (uint32_t)bv->im_end_id : 0, 0},
        {bv ? "tokenizer.ggml.add_bos_token" : NULL, 'b', NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++) {
        const s_meta_t *m = &meta[i];
        if (!m->key) continue; // not written for this family
        char key[96];
        // Keys starting with '.' are the family's own: "<arch>.<rest>".
        snprintf(key, sizeof key, "%s%s", m->key[0] == '.' ? arch->name : "", m->key);
        mc_err_t rc = MC_OK;
        switch (m->kind) {
        case 's': rc = mc_gguf_writer_add_str(w, key, m->s); break;
        case 'u': rc = mc_gguf_writer_add_u32(w, key, m->u); break;
        case 'f': rc = mc_gguf_writer_add_f32(w, key, m->f); break;
        case 'b': rc = mc_gguf_writer_add_bool(w, key, m->u != 0); break;
        case 'T': rc = mc_gguf_writer_add_arr_str(w, key, pieces, lens, v->n); break;
        case 'S': rc = mc_gguf_writer_add_arr_f32(w, key, v->score, v->n); break;
        case 'Y': rc = mc_gguf_writer_add_arr_i32(w, key, v->type, v->n); break;
        default: assert(!"metadata kind");
        }
        if (rc != MC_OK)
            return mc_err_set(err, rc, "mkmodel: adding metadata '%s' failed: %s", key, mc_err_name(rc));
    }
    return bv ? mc_bpe_vocab_to_gguf(bv, w, err) : MC_OK;
}

// Declare one tensor: its spec goes to specs[*n], its name and shape to w.
static mc_err_t s_add_tensor(mc_gguf_writer_t *w, s_spec_t *specs, size_t *n, const char *name,
                             uint32_t n_dims, s_spec_t sp, char *err) {
    const uint64_t ne[3] = {sp.ne0, sp.ne1, sp.n_part};
    mc_err_t rc = mc_gguf_writer_add_tensor(w, name, sp.type, n_dims, ne);
    if (rc != MC_OK)
        return mc_err_set(err, rc, "mkmodel: adding tensor '%s' failed: %s", name, mc_err_name(rc));
    specs[(*n)++] = sp;
    return MC_OK;
}

// The q/k norms written: none for a family where they are optional.
static mc_qknorm_t s_qk_norm(const mc_mkmodel_params_t *p) {
    const mc_arch_info_t *a = mc_arch_get(p->arch);
    return a->qk_norm_optional ? MC_QKNORM_NONE : a->qk_norm;
}

static size_t s_tensor_count(const mc_mkmodel_params_t *p) {
    const mc_arch_info_t *a = mc_arch_get(p->arch);
    size_t common = 6; // attn_norm, q, k, v, output, ffn norm
    if (s_qk_norm(p) != MC_QKNORM_NONE) common += 2;
    if (a->qkv_bias) common += 3;
    if (s_mla(p)) common += 2; // kv_a_mqa, kv_a_norm, k_b, v_b for k, v
    if (s_mla(p) && p->q_lora_rank) common += 2; // q_a, q_a_norm, q_b for q
    size_t moe = 1 + 3 * (size_t)(p->legacy_layout ? p->n_expert : 1);
    if (a->shared_expert) moe += a->shexp_gated ? 4 : 3;
    if (s_expert_bias(p)) moe += 1;
    if (a->attn_sinks) common += 1;
    if (a->attn_out_bias) common += 1;
    if (a->router_bias) moe += 1;
    if (a->expert_ffn_bias) moe += 3;
    const size_t n_dense = s_n_dense(p), n_moe = p->n_layer + s_nextn(p) - n_dense;
    return 3 - (p->tie_output ? 1 : 0) + n_dense * (common + 3) + n_moe * (common + moe) + 3 * (size_t)s_nextn(p);
}

// Declare every tensor in file order: token_embd, per layer attn_norm,
// attn_q, attn_k, attn_v, (their biases,) attn_output, (q/k norms,)
// ffn_norm, ffn_gate_inp, (the shared expert's gate input, gate, up and
// down,) and the experts, then output_norm and output.
static mc_err_t s_add_tensors(mc_gguf_writer_t *w, const mc_mkmodel_params_t *p, s_spec_t *specs,
                              char *err) {
    // MXFP4 is for the routed experts only (as GPT-OSS files and llama-quantize's
    // MXFP4_MOE keep it): the other matrices are F32 then.
    const mc_dtype_t te = p->type, t = te == MC_DTYPE_MXFP4 ? MC_DTYPE_F32 : te;
    const uint32_t head_dim = s_head_dim(p), q_dim = p->n_head * head_dim, kv_dim = p->n_head_kv * head_dim;
    // Matrices have std 1/sqrt(fan_in), fan_in = ne0.
    const float s_dim = 1.0f / sqrtf((float)p->dim), s_ffn = 1.0f / sqrtf((float)p->ffn);
    const float s_q = q_dim == p->dim ? s_dim : 1.0f / sqrtf((float)q_dim);
    const mc_qknorm_t qk = s_qk_norm(p);
    const uint32_t qn = qk == MC_QKNORM_HEAD ? head_dim : q_dim, kn = qk == MC_QKNORM_HEAD ? head_dim : kv_dim;
    const mc_arch_info_t *a = mc_arch_get(p->arch);
    const bool bias = a->qkv_bias, ebias = s_expert_bias(p);
    const uint32_t fs = s_ffn_shexp(p), fd = s_ffn_dense(p);
    const float s_fd = fd ? 1.0f / sqrtf((float)fd) : 0.0f;
    const float s_fs = fs ? 1.0f / sqrtf((float)fs) : 0.0f;
    const bool gated = fs && mc_arch_get(p->arch)->shexp_gated, mla = s_mla(p);
    const uint32_t r = s_kv_lora_rank(p), rope = s_rope_dim(p), hv = p->n_head * s_head_dim_v(p);
    const uint32_t nope = head_dim - rope, qr = mla ? p->q_lora_rank : 0;
    size_t n = 0;
    char name[64];
    mc_err_t rc = s_add_tensor(w, specs, &n, "token_embd.weight", 2,
                               (s_spec_t){S_ROLE_TOKEN_EMBD, 0, 0, 1, t, p->dim, p->n_vocab, 0, 1}, err);
    for (uint32_t l = 0; l < p->n_layer + s_nextn(p) && rc == MC_OK; l++) {
        const bool moe = s_layer_moe(p, l), nextn = l >= p->n_layer;
        const uint32_t fsl = moe ? fs : 0;
        const struct {
            const char *name;
            uint32_t n_dims;
            s_spec_t sp;
        } fixed[] = {
            {"attn_norm", 1, {S_ROLE_ATTN_NORM, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 1, 0.1f}},
            {qr ? NULL : "attn_q", 2, {S_ROLE_ATTN_Q, l, 0, 1, t, p->dim, q_dim, 0, s_dim}},
            {qr ? "attn_q_a" : NULL, 2, {S_ROLE_Q_A, l, 0, 1, t, p->dim, qr, 0, s_dim}},
            {qr ? "attn_q_a_norm" : NULL, 1, {S_ROLE_Q_A_NORM, l, 0, 1, MC_DTYPE_F32, qr, 1, 1, 0.1f}},
            {qr ? "attn_q_b" : NULL, 2, {S_ROLE_ATTN_Q, l, 0, 1, t, qr, q_dim, 0, qr ? 1.0f / sqrtf((float)qr) : 0}},
            {mla ? NULL : "attn_k", 2, {S_ROLE_ATTN_K, l, 0, 1, t, p->dim, kv_dim, 0, s_dim}},
            {mla ? NULL : "attn_v", 2, {S_ROLE_ATTN_V, l, 0, 1, t, p->dim, kv_dim, 0, s_dim}},
            // Latent attention: k_b and v_b are per head, {.., .., n_head}.
            {mla ? "attn_kv_a_mqa" : NULL, 2, {S_ROLE_KV_A, l, 0, 1, t, p->dim, r + rope, 0, s_dim}},
            {mla ? "attn_kv_a_norm" : NULL, 1, {S_ROLE_KV_A_NORM, l, 0, 1, MC_DTYPE_F32, r, 1, 1, 0.1f}},
            {mla ? "attn_k_b" : NULL, 3, {S_ROLE_K_B, l, 0, p->n_head, t, nope, r, 0, 1.0f / sqrtf((float)nope)}},
            {mla ? "attn_v_b" : NULL, 3, {S_ROLE_V_B, l, 0, p->n_head, t, r, s_head_dim_v(p), 0, 1.0f / sqrtf((float)r)}},
            // Biases of 0.5 sigma: large enough that a forgotten one shows.
            {bias ? "attn_q.bias" : NULL, 1, {S_ROLE_Q_BIAS, l, 0, 1, MC_DTYPE_F32, q_dim, 1, 0, 0.5f}},
            {bias ? "attn_k.bias" : NULL, 1, {S_ROLE_K_BIAS, l, 0, 1, MC_DTYPE_F32, kv_dim, 1, 0, 0.5f}},
            {bias ? "attn_v.bias" : NULL, 1, {S_ROLE_V_BIAS, l, 0, 1, MC_DTYPE_F32, kv_dim, 1, 0, 0.5f}},
            {"attn_output", 2,
             {S_ROLE_ATTN_OUT, l, 0, 1, t, mla ? hv : q_dim, p->dim, 0, mla ? 1.0f / sqrtf((float)hv) : s_q}},
            {qk ? "attn_q_norm" : NULL, 1, {S_ROLE_Q_NORM, l, 0, 1, MC_DTYPE_F32, qn, 1, 1, 0.1f}},
            {qk ? "attn_k_norm" : NULL, 1, {S_ROLE_K_NORM, l, 0, 1, MC_DTYPE_F32, kn, 1, 1, 0.1f}},
            {a->ffn_norm_name, 1, {S_ROLE_FFN_NORM, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 1, 0.1f}},
            // A dense layer: one FFN, no router or experts.
            {moe ? NULL : "ffn_gate", 2, {S_ROLE_DENSE_GATE, l, 0, 1, t, p->dim, fd, 0, s_dim}},
            {moe ? NULL : "ffn_up", 2, {S_ROLE_DENSE_UP, l, 0, 1, t, p->dim, fd, 0, s_dim}},
            {moe ? NULL : "ffn_down", 2, {S_ROLE_DENSE_DOWN, l, 0, 1, t, fd, p->dim, 0, s_fd}},
            {moe ? "ffn_gate_inp" : NULL, 2, {S_ROLE_ROUTER, l, 0, 1, MC_DTYPE_F32, p->dim, p->n_expert, 0, s_dim}},
            // The selection bias, about a fifth of the sigmoid scores' spread:
            // it changes some choices, so using it for the weights shows.
            {moe && ebias ? "exp_probs_b.bias" : NULL, 1,
             {S_ROLE_EXP_PROBS_B, l, 0, 1, MC_DTYPE_F32, p->n_expert, 1, 0, 0.05f}},
            // The shared expert: its gate's weights are one F32 vector (dim),
            // as converted files keep them.
            {fsl && gated ? "ffn_gate_inp_shexp" : NULL, 1,
             {S_ROLE_SHEXP_GATE_INP, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 0, s_dim}},
            {fsl ? "ffn_gate_shexp" : NULL, 2, {S_ROLE_SHEXP_GATE, l, 0, 1, t, p->dim, fs, 0, s_dim}},
            {fsl ? "ffn_up_shexp" : NULL, 2, {S_ROLE_SHEXP_UP, l, 0, 1, t, p->dim, fs, 0, s_dim}},
            {fsl ? "ffn_down_shexp" : NULL, 2, {S_ROLE_SHEXP_DOWN, l, 0, 1, t, fs, p->dim, 0, s_fs}},
            // GPT-OSS: sinks about as wide as the scores, so they take a
            // visible share of each softmax; an output bias; a router bias
            // that changes some choices; expert gate and up biases wide
            // enough (3 sigma against the products' 1) that the clamp at 7
            // takes some values, and down biases.
            {a->attn_sinks ? "attn_sinks" : NULL, 1, {S_ROLE_SINKS, l, 0, 1, MC_DTYPE_F32, p->n_head, 1, 0, 1.0f}},
            {a->attn_out_bias ? "attn_output.bias" : NULL, 1,
             {S_ROLE_ATTN_OUT_BIAS, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 0, 0.5f}},
            {moe && a->router_bias ? "ffn_gate_inp.bias" : NULL, 1,
             {S_ROLE_ROUTER_BIAS, l, 0, 1, MC_DTYPE_F32, p->n_expert, 1, 0, 0.5f}},
            {moe && a->expert_ffn_bias ? "ffn_gate_exps.bias" : NULL, 2,
             {S_ROLE_EXP_GATE_BIAS, l, 0, 1, MC_DTYPE_F32, p->ffn, p->n_expert, 0, 3.0f}},
            {moe && a->expert_ffn_bias ? "ffn_up_exps.bias" : NULL, 2,
             {S_ROLE_EXP_UP_BIAS, l, 0, 1, MC_DTYPE_F32, p->ffn, p->n_expert, 0, 3.0f}},
            {moe && a->expert_ffn_bias ? "ffn_down_exps.bias" : NULL, 2,
             {S_ROLE_EXP_DOWN_BIAS, l, 0, 1, MC_DTYPE_F32, p->dim, p->n_expert, 0, 0.5f}},
            // A next-token-prediction layer's own tensors (never evaluated).
            {nextn ? "nextn.eh_proj" : NULL, 2, {S_ROLE_NEXTN_EH_PROJ, l, 0, 1, t, 2 * p->dim, p->dim, 0, s_dim}},
            {nextn ? "nextn.enorm" : NULL, 1, {S_ROLE_NEXTN_ENORM, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 1, 0.1f}},
            {nextn ? "nextn.hnorm" : NULL, 1, {S_ROLE_NEXTN_HNORM, l, 0, 1, MC_DTYPE_F32, p->dim, 1, 1, 0.1f}},
        };
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && rc == MC_OK; i++) {
            if (!fixed[i].name) continue; // not in this family
            // "attn_q.bias" names its own suffix; the rest are weights.
            if (strstr(fixed[i].name, ".bias")) snprintf(name, sizeof name, "blk.%u.%s", l, fixed[i].name);
            else snprintf(name, sizeof name, "blk.%u.%s.weight", l, fixed[i].name);
            rc = s_add_tensor(w, specs, &n, name, fixed[i].n_dims, fixed[i].sp, err);
        }
        const struct {
            const char *name;
            s_role_t role;
            uint64_t ne0, ne1;
            float std;
        } experts[] = {
            {"ffn_gate", S_ROLE_GATE, p->dim, p->ffn, s_dim},
            {"ffn_up", S_ROLE_UP, p->dim, p->ffn, s_dim},
            {"ffn_down", S_ROLE_DOWN, p->ffn, p->dim, s_ffn},
        };
        if (!moe) continue;
        if (!p->legacy_layout) {
            for (size_t i = 0; i < 3 && rc == MC_OK; i++) {
                snprintf(name, sizeof name, "blk.%u.%s_exps.weight", l, experts[i].name);
                s_spec_t sp = {experts[i].role, l, 0, p->n_expert, te, experts[i].ne0, experts[i].ne1,
                               0, experts[i].std};
                rc = s_add_tensor(w, specs, &n, name, 3, sp, err);
            }
        }
        for (uint32_t e = 0; p->legacy_layout && e < p->n_expert && rc == MC_OK; e++) {
            for (size_t i = 0; i < 3 && rc == MC_OK; i++) {
                snprintf(name, sizeof name, "blk.%u.%s.%u.weight", l, experts[i].name, e);
                s_spec_t sp = {experts[i].role, l, e, 1, te, experts[i].ne0, experts[i].ne1, 0,
                               experts[i].std};
                rc = s_add_tensor(w, specs, &n, name, 2, sp, err);
            }
        }
    }
    if (rc == MC_OK)
        rc = s_add_tensor(w, specs, &n, "output_norm.weight", 1,
                          (s_spec_t){S_ROLE_OUTPUT_NORM, 0, 0, 1, MC_DTYPE_F32, p->dim, 1, 1, 0.1f}, err);
    if (rc == MC_OK && !p->tie_output)
        rc = s_add_tensor(w, specs, &n, "output.weight", 2,
                          (s_spec_t){S_ROLE_OUTPUT, 0, 0, 1, t, p->dim, p->n_vocab, 0, s_dim}, err);
    assert(rc != MC_OK || n == s_tensor_count(p));
    return rc;
}

// ---- public API ----

mc_mkmodel_params_t mc_mkmodel_params_default(void) {
    return (mc_mkmodel_params_t){
        .dim = 64,
        .ffn = 128,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 2,
        .n_expert = 8,
        .n_expert_used = 2,
        .n_vocab = 512,
        .ctx_len = 2048,
        .rope_base = 1e6f,
        .rms_eps = 1e-5f,
        .type = MC_DTYPE_F32,
        .legacy_layout = false,
        .seed = 1,
        .router_skew = 1.0f,
    };
}

mc_err_t mc_mkmodel_check(const mc_mkmodel_params_t *p, char *err) {
    assert(p);
    const struct {
        const char *name;
        uint32_t v, max;
    } counts[] = {
        {"dim", p->dim, MC_MK_MAX_DIM},
        {"ffn", p->ffn, MC_MK_MAX_DIM},
        {"n_layer", p->n_layer, MC_MK_MAX_LAYERS},
        {"n_head", p->n_head, MC_MK_MAX_DIM},
        {"n_head_kv", p->n_head_kv, MC_MK_MAX_DIM},
        {"n_expert", p->n_expert, MC_MK_MAX_EXPERTS},
        {"n_expert_used", p->n_expert_used, MC_MK_MAX_EXPERTS},
        {"n_vocab", p->n_vocab, MC_MK_MAX_VOCAB},
        {"ctx_len", p->ctx_len, UINT32_MAX},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (counts[i].v == 0) return mc_err_set(err, MC_ERR_ARG, "%s must be > 0", counts[i].name);
        if (counts[i].v > counts[i].max)
            return mc_err_set(err, MC_ERR_ARG, "%s (%u) must be <= %u", counts[i].name, counts[i].v,
                              counts[i].max);
    }
    if (!mc_arch_get(p->arch))
        return mc_err_set(err, MC_ERR_ARG, "arch (%d) is not one of the supported families", (int)p->arch);
    if (!p->head_dim && p->dim % p->n_head)
        return mc_err_set(err, MC_ERR_ARG, "n_head (%u) must divide dim (%u)", p->n_head, p->dim);
    if (p->head_dim > MC_MK_MAX_HEAD_DIM)
        return mc_err_set(err, MC_ERR_ARG, "head_dim (%u) must be <= %u", p->head_dim, MC_MK_MAX_HEAD_DIM);
    if (s_head_dim(p) % 2)
        return mc_err_set(err, MC_ERR_ARG, "head dimension (%u) must be even for RoPE", s_head_dim(p));
    if (p->n_head % p->n_head_kv)
        return mc_err_set(err, MC_ERR_ARG, "n_head_kv (%u) must divide n_head (%u)", p->n_head_kv,
                          p->n_head);
    if (p->n_expert_used > p->n_expert)
        return mc_err_set(err, MC_ERR_ARG, "n_expert_used (%u) must be <= n_expert (%u)",
                          p->n_expert_used, p->n_expert);
    if (!(p->router_skew >= 1.0f && p->router_skew <= 1e6f))
        return mc_err_set(err, MC_ERR_ARG, "router_skew (%g) must be in 1..1e6", (double)p->router_skew);
    uint32_t min_vocab = MC_MK_N_SPECIAL + s_n_chars();
    if (p->n_vocab < min_vocab)
        return mc_err_set(err, MC_ERR_ARG,
                          "n_vocab (%u) must be >= %u (control, byte and single-character pieces)",
                          p->n_vocab, min_vocab);
    if (!(p->rope_base > 0.0f) || !isfinite(p->rope_base))
        return mc_err_set(err, MC_ERR_ARG, "rope_base (%g) must be a finite number > 0",
                          (double)p->rope_base);
    if (!(p->rms_eps > 0.0f) || !isfinite(p->rms_eps))
        return mc_err_set(err, MC_ERR_ARG, "rms_eps (%g) must be a finite number > 0",
                          (double)p->rms_eps);
    const mc_dtype_traits_t *tr = mc_dtype_traits(p->type);
    if (!tr || !tr->weight)
        return mc_err_set(err, MC_ERR_ARG, "type %s (%u) is not a weight type", mc_dtype_name(p->type),
                          (unsigned)p->type);
    if ((uint64_t)p->n_head * s_head_dim(p) % tr->block_elems)
        return mc_err_set(err, MC_ERR_ARG, "n_head x head_dim (%u) must be a multiple of %u for type %s",
                          p->n_head * s_head_dim(p), tr->block_elems, tr->name);
    // The other rows are dim or ffn long.
    if (p->dim % tr->block_elems)
        return mc_err_set(err, MC_ERR_ARG, "dim (%u) must be a multiple of %u for type %s", p->dim,
                          tr->block_elems, tr->name);
    if (p->ffn % tr->block_elems)
        return mc_err_set(err, MC_ERR_ARG, "ffn (%u) must be a multiple of %u for type %s", p->ffn,
                          tr->block_elems, tr->name);
    if (s_ffn_shexp(p) > MC_MK_MAX_DIM)
        return mc_err_set(err, MC_ERR_ARG, "ffn_shexp (%u) must be <= %u", s_ffn_shexp(p), MC_MK_MAX_DIM);
    if (s_ffn_shexp(p) % tr->block_elems)
        return mc_err_set(err, MC_ERR_ARG, "ffn_shexp (%u) must be a multiple of %u for type %s", s_ffn_shexp(p),
                          tr->block_elems, tr->name);
    if (s_ffn_dense(p) > MC_MK_MAX_DIM || s_ffn_dense(p) % tr->block_elems)
        return mc_err_set(err, MC_ERR_ARG, "ffn_dense (%u) must be <= %u and a multiple of %u for type %s", s_ffn_dense(p),
                          MC_MK_MAX_DIM, tr->block_elems, tr->name);
    if (s_n_dense(p) >= p->n_layer)
        return mc_err_set(err, MC_ERR_ARG, "n_dense_lead (%u) and moe_step (%u) must leave a MoE layer among the %u",
                          s_dense_lead(p), s_moe_step(p), p->n_layer);
    if (p->moe_step > MC_MK_MAX_LAYERS)
        return mc_err_set(err, MC_ERR_ARG, "moe_step (%u) must be <= %u", p->moe_step, MC_MK_MAX_LAYERS);
    if (s_nextn(p) > 16) return mc_err_set(err, MC_ERR_ARG, "n_nextn (%u) must be <= 16", s_nextn(p));
    if (!s_mla(p) && (p->rope_dim > s_head_dim(p) || p->rope_dim % 2))
        return mc_err_set(err, MC_ERR_ARG, "rope_dim (%u) must be even and <= the head dimension (%u)", p->rope_dim,
                          s_head_dim(p));
    if (p->n_group && (p->n_group > p->n_expert || p->n_group_used > p->n_group))
        return mc_err_set(err, MC_ERR_ARG, "n_group (%u) / n_group_used (%u) must fit the %u experts", p->n_group,
                          p->n_group_used, p->n_expert);
    if (p->gating && (!mc_arch_get(p->arch)->route_keys ||
                      (p->gating != MC_GATING_SOFTMAX && p->gating != MC_GATING_SIGMOID &&
                       p->gating != MC_GATING_SOFTMAX_WEIGHT)))
        return mc_err_set(err, MC_ERR_ARG, "gating (%d) must be 1..3 and for a family that reads it (deepseek2, glm4moe)",
                          (int)p->gating);
    if (p->legacy_layout && mc_arch_get(p->arch)->expert_ffn_bias)
        return mc_err_set(err, MC_ERR_ARG, "legacy_layout: %s's expert biases need the merged layout",
                          mc_arch_get(p->arch)->name);
    if (p->expert_bias && mc_arch_get(p->arch)->expert_bias == MC_NEED_NONE)
        return mc_err_set(err, MC_ERR_ARG, "expert_bias: %s has no selection bias", mc_arch_get(p->arch)->name);
    if (mc_arch_get(p->arch)->shared_expert == MC_SHEXP_COUNT && s_ffn_shexp(p) % p->ffn)
        return mc_err_set(err, MC_ERR_ARG, "ffn_shexp (%u) must be a multiple of ffn (%u): %s counts shared experts",
                          s_ffn_shexp(p), p->ffn, mc_arch_get(p->arch)->name);
    if (!(p->yarn_factor == 0 || (p->yarn_factor >= 1 && p->yarn_factor <= 1e4f)) || p->yarn_mscale_all_dim < 0 ||
        p->yarn_mscale_all_dim > 100 || p->expert_weights_scale < 0 || p->expert_weights_scale > 1e4f)
        return mc_err_set(err, MC_ERR_ARG, "yarn_factor (1..1e4 or 0), yarn_mscale_all_dim or expert_weights_scale out of range");
    if (s_mla(p)) {
        const uint32_t hd = s_head_dim(p), rope = s_rope_dim(p), r = s_kv_lora_rank(p), hv = s_head_dim_v(p);
        if (rope == 0 || rope % 2 || rope >= hd)
            return mc_err_set(err, MC_ERR_ARG, "rope_dim (%u) must be even, > 0 and below head_dim (%u)", rope, hd);
        if (r > MC_MK_MAX_DIM || hv == 0 || hv > MC_MK_MAX_HEAD_DIM)
            return mc_err_set(err, MC_ERR_ARG, "kv_lora_rank (%u) or head_dim_v (%u) out of range", r, hv);
        if (p->q_lora_rank > MC_MK_MAX_DIM || p->q_lora_rank % tr->block_elems)
            return mc_err_set(err, MC_ERR_ARG, "q_lora_rank (%u) must be <= %u and a multiple of %u for type %s",
                              p->q_lora_rank, MC_MK_MAX_DIM, tr->block_elems, tr->name);
        if ((hd - rope) % tr->block_elems || r % tr->block_elems || p->n_head * hv % tr->block_elems)
            return mc_err_set(err, MC_ERR_ARG,
                              "head_dim - rope_dim (%u), kv_lora_rank (%u) and heads x head_dim_v (%u) must be "
                              "multiples of %u for type %s",
                              hd - rope, r, p->n_head * hv, tr->block_elems, tr->name);
    }
    return MC_OK;
}

mc_err_t mc_mkmodel_write(const mc_mkmodel_params_t *p, const char *path, char *err) {
    assert(p && path);
    mc_err_t rc = mc_mkmodel_check(p, err);
    if (rc != MC_OK) return rc;
    s_vocab_t v = {0};
    const char **pieces = NULL;
    size_t *lens = NULL;
    s_spec_t *specs = NULL;
    float *row = NULL;
    mc_gguf_writer_t *w = NULL;
    mc_bpe_vocab_t *bv = NULL;
    const char *bpe_pre = mc_arch_get(p->arch)->bpe_pre;
    if (bpe_pre) {
        mc_bpe_train_params_t tp = mc_bpe_train_params_default();
        tp.n_vocab = p->n_vocab;
        tp.pre = bpe_pre;
        tp.harmony = p->arch == MC_ARCH_GPTOSS; // its chat format's markers, so chat picks gpt-oss (chat.h)
        if (!(bv = mc_bpe_train(NULL, 0, &tp, err))) rc = MC_ERR_ARG;
        else if (bv->n_tokens != p->n_vocab)
            rc = mc_err_set(err, MC_ERR_ARG, "n_vocab (%u): the built-in corpus yields %u byte-level tokens", p->n_vocab,
                            bv->n_tokens);
    } else {
        rc = s_vocab_build(&v, p->n_vocab, err);
    }
    if (rc == MC_OK) {
        pieces = malloc((v.n + 1) * sizeof *pieces);
        lens = malloc((v.n + 1) * sizeof *lens);
        specs = malloc(s_tensor_count(p) * sizeof *specs);
        size_t widest = p->dim > p->ffn ? p->dim : p->ffn;
        if (s_ffn_shexp(p) > widest) widest = s_ffn_shexp(p);
        if (s_ffn_dense(p) > widest) widest = s_ffn_dense(p);
        if (2 * (size_t)p->dim > widest) widest = 2 * (size_t)p->dim;
        if (p->n_expert > widest) widest = p->n_expert; // a router or selection bias
        if ((size_t)p->n_head * s_head_dim(p) > widest) widest = (size_t)p->n_head * s_head_dim(p);
        if (s_mla(p) && (size_t)p->n_head * s_head_dim_v(p) > widest) widest = (size_t)p->n_head * s_head_dim_v(p);
        if (s_mla(p) && s_kv_lora_rank(p) > widest) widest = s_kv_lora_rank(p);
        if (s_mla(p) && p->q_lora_rank > widest) widest = p->q_lora_rank;
        row = malloc(widest * sizeof *row);
        w = mc_gguf_writer_new(0);
        if (!pieces || !lens || !specs || !row || !w)
            rc = mc_err_set(err, MC_ERR_NOMEM, "mkmodel: out of memory");
    }
    if (rc == MC_OK) {
        assert(bv || v.n == p->n_vocab);
        for (uint32_t i = 0; i < v.n; i++) {
            pieces[i] = v.pool + v.off[i];
            lens[i] = v.len[i];
        }
        rc = s_add_metadata(w, p, bv ? NULL : &v, pieces, lens, bv, err);
    }
    if (rc == MC_OK) rc = s_add_tensors(w, p, specs, err);
    if (rc == MC_OK) {
        s_fill_ctx_t ctx = {p->seed, specs, row, p->router_skew};
        rc = mc_gguf_writer_write_file(w, path, s_fill, &ctx, err);
    }
    mc_gguf_writer_destroy(&w);
    free(row);
    free(specs);
    free(lens);
    free(pieces);
    s_vocab_free(&v);
    mc_bpe_vocab_destroy(&bv);
    return rc;
}

mc_mkmodel_params_t mc_mkmodel_params_bench(mc_dtype_t type) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.dim = 1024;
    p.ffn = 3584;
    p.n_layer = 8;
    p.n_head = 16;
    p.n_head_kv = 4;
    p.n_expert = 8;
    p.n_expert_used = 2;
    p.n_vocab = 32000;
    p.ctx_len = 4096;
    p.type = type;
    return p;
}

// mkdir -p: every prefix of path that ends before a '/', then path itself.
static mc_err_t s_mkdirs(char *path, char *err) {
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        const char c = *p;
        *p = '\0';
        const int rc = mkdir(path, 0755);
        const int e = errno;
        *p = c;
        if (rc != 0 && e != EEXIST) return mc_err_set(err, MC_ERR_IO, "cannot create %s: %s", path, strerror(e));
        if (!c) break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return mc_err_set(err, MC_ERR_IO, "%s is not a folder", path);
    return MC_OK;
}

mc_err_t mc_mkmodel_cache_path(const char *name, char *buf, size_t cap, char *err) {
    const char *dir = getenv("MC_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char tmp[4096];
    int n;
    if (dir && *dir) n = snprintf(tmp, sizeof tmp, "%s", dir);
    else if (xdg && *xdg) n = snprintf(tmp, sizeof tmp, "%s/moe-cluster", xdg);
    else if (home && *home) n = snprintf(tmp, sizeof tmp, "%s/.cache/moe-cluster", home);
    else return mc_err_set(err, MC_ERR_ARG, "no cache folder: set MC_CACHE_DIR or HOME");
    if (n < 0 || (size_t)n >= sizeof tmp) return mc_err_set(err, MC_ERR_ARG, "cache folder name too long");
    mc_err_t rc = s_mkdirs(tmp, err);
    if (rc) return rc;
    n = snprintf(buf, cap, "%s/%s", tmp, name);
    if (n < 0 || (size_t)n >= cap) return mc_err_set(err, MC_ERR_ARG, "cache path too long");
    return MC_OK;
}
