/*
 * bpe_train: the deterministic byte-level BPE vocabulary trainer (for tiny
 * test models) and its GGUF writer. Pre-tokenizes with the runtime's
 * pre-tokenizer (bpe.c), so a trained vocabulary splits text exactly as the
 * tokenizer will.
 */
#include "bpe_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "tokenizer.h"

#define MC_BPE_MAX_TRAIN_VOCAB (1u << 20)
#define MC_BPE_MAX_CORPUS ((size_t)1 << 28) // keeps word and symbol offsets in uint32_t

static size_t s_pair_hash(uint32_t a, uint32_t b) {
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull; // splitmix64 finaliser
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return (size_t)x;
}

/* ---- vocabulary trainer ---- */

// The 3 specials every trained vocabulary has, then GPT-OSS's harmony markers.
static const char *const s_specials[10] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|start|>",  "<|channel|>",
                                           "<|message|>",   "<|end|>",      "<|return|>", "<|call|>", "<|constrain|>"};

static uint32_t s_n_specials(const mc_bpe_train_params_t *p) { return p->harmony ? 10 : 3; }

mc_bpe_train_params_t mc_bpe_train_params_default(void) {
    return (mc_bpe_train_params_t){.n_vocab = 1024, .pre = "qwen2", .min_frequency = 1};
}

typedef struct {
    uint32_t text_off, text_len; // the word's bytes in the corpus
    uint32_t sym_off, n_sym;     // its current symbols (token ids) in the symbol array
    uint32_t count;              // occurrences in the corpus
} s_tword_t;

typedef struct {
    uint32_t a, b; // a == UINT32_MAX: empty
    uint64_t count;
} s_pair_t;

typedef struct {
    const char *corpus;
    s_tword_t *words;
    uint32_t n_words, cap_words;
    uint32_t *word_slots; // word index + 1, 0 = empty; keyed by the word's bytes
    size_t word_mask;
    uint32_t *sym;
    // Tokens as raw bytes, plus a table from bytes to id for merges that
    // rebuild a string an earlier merge already made.
    char *tok_bytes;
    size_t tok_bytes_len, tok_bytes_cap;
    uint32_t *tok_off, *tok_len, n_tok, cap_tok;
    uint32_t *tok_slots; // id + 1, 0 = empty
    size_t tok_mask;
    uint32_t *merge_a, *merge_b, n_merges;
} s_train_t;

static uint64_t s_bytes_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool s_word_grow(s_train_t *t) {
    uint32_t cap = t->cap_words ? 2 * t->cap_words : 1024;
    s_tword_t *w = realloc(t->words, cap * sizeof(*w));
    if (!w) return false;
    t->words = w;
    t->cap_words = cap;
    // Rehash into a table twice as large as the word array.
    size_t n_slots = 2 * (size_t)cap;
    uint32_t *slots = calloc(n_slots, sizeof(*slots));
    if (!slots) return false;
    free(t->word_slots);
    t->word_slots = slots;
    t->word_mask = n_slots - 1;
    for (uint32_t i = 0; i < t->n_words; i++) {
        size_t k = (size_t)s_bytes_hash(t->corpus + t->words[i].text_off, t->words[i].text_len) & t->word_mask;
        while (t->word_slots[k]) k = (k + 1) & t->word_mask;
        t->word_slots[k] = i + 1;
    }
    return true;
}

static mc_err_t s_train_word(void *ctx, const char *word, size_t len, char *err) {
    s_train_t *t = ctx;
    if (t->n_words == t->cap_words && !s_word_grow(t)) return mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
    size_t k = (size_t)s_bytes_hash(word, len) & t->word_mask;
    for (uint32_t w; (w = t->word_slots[k]) != 0; k = (k + 1) & t->word_mask) {
        s_tword_t *x = &t->words[w - 1];
        if (x->text_len == len && memcmp(t->corpus + x->text_off, word, len) == 0) {
            x->count++;
            return MC_OK;
        }
    }
    t->word_slots[k] = t->n_words + 1;
    t->words[t->n_words++] = (s_tword_t){(uint32_t)(word - t->corpus), (uint32_t)len, 0, 0, 1};
    return MC_OK;
}

static int32_t s_tok_find(const s_train_t *t, const char *s, size_t n, size_t *slot) {
    size_t k = (size_t)s_bytes_hash(s, n) & t->tok_mask;
    for (uint32_t id; (id = t->tok_slots[k]) != 0; k = (k + 1) & t->tok_mask)
        if (t->tok_len[id - 1] == n && memcmp(t->tok_bytes + t->tok_off[id - 1], s, n) == 0) break;
    *slot = k;
    return t->tok_slots[k] ? (int32_t)t->tok_slots[k] - 1 : -1;
}

// Id of the token with bytes s[0..n), added when new.
static int32_t s_tok_add(s_train_t *t, const char *s, size_t n) {
    size_t slot;
    int32_t id = s_tok_find(t, s, n, &slot);
    if (id >= 0) return id;
    if (t->tok_bytes_len + n > t->tok_bytes_cap) {
        size_t cap = 2 * (t->tok_bytes_len + n);
        char *b = realloc(t->tok_bytes, cap);
        if (!b) return -1;
        t->tok_bytes = b;
        t->tok_bytes_cap = cap;
    }
    memcpy(t->tok_bytes + t->tok_bytes_len, s, n);
    t->tok_off[t->n_tok] = (uint32_t)t->tok_bytes_len;
    t->tok_len[t->n_tok] = (uint32_t)n;
    t->tok_bytes_len += n;
    t->tok_slots[slot] = t->n_tok + 1;
    return (int32_t)t->n_tok++;
}

static void s_train_free(s_train_t *t) {
    free(t->words);
    free(t->word_slots);
    free(t->sym);
    free(t->tok_bytes);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_slots);
    free(t->merge_a);
    free(t->merge_b);
}

void mc_bpe_vocab_destroy(mc_bpe_vocab_t **v) {
    if (!v || !*v) return;
    mc_bpe_vocab_t *x = *v;
    free(x->tokens ? x->tokens[0] : NULL); // one arena holds every string
    free(x->tokens);
    free(x->token_lens);
    free(x->token_types);
    free(x->merges);
    free(x->merge_lens);
    free(x);
    *v = NULL;
}

// Lay the trained tokens and merges out as byte-level strings.
static mc_bpe_vocab_t *s_train_result(const s_train_t *t, const char *pre, uint32_t n_spec, char *err) {
    uint32_t n_tok = t->n_tok + n_spec;
    size_t arena = 0;
    for (uint32_t i = 0; i < t->n_tok; i++) arena += 2 * (size_t)t->tok_len[i] + 1;
    for (uint32_t k = 0; k < n_spec; k++) arena += strlen(s_specials[k]) + 1;
    for (uint32_t m = 0; m < t->n_merges; m++)
        arena += 2 * ((size_t)t->tok_len[t->merge_a[m]] + t->tok_len[t->merge_b[m]]) + 2;

    mc_bpe_vocab_t *v = calloc(1, sizeof(*v));
    char *a = malloc(arena);
    if (!v || !a) goto nomem;
    v->tokens = malloc(n_tok * sizeof(*v->tokens));
    if (v->tokens) v->tokens[0] = NULL; // what mc_bpe_vocab_destroy frees
    v->token_lens = malloc(n_tok * sizeof(*v->token_lens));
    v->token_types = malloc(n_tok * sizeof(*v->token_types));
    v->merges = malloc((t->n_merges ? t->n_merges : 1) * sizeof(*v->merges));
    v->merge_lens = malloc((t->n_merges ? t->n_merges : 1) * sizeof(*v->merge_lens));
    if (!v->tokens || !v->token_lens || !v->token_types || !v->merges || !v->merge_lens) goto nomem;
    v->tokens[0] = a; // owns the arena from here on
    a = NULL;
    char *o = v->tokens[0];
    for (uint32_t i = 0; i < t->n_tok; i++) {
        v->tokens[i] = o;
        v->token_lens[i] = mc_bpe_bytes_to_piece((const uint8_t *)t->tok_bytes + t->tok_off[i], t->tok_len[i], o);
        v->token_types[i] = MC_TOKEN_NORMAL;
        o += v->token_lens[i];
        *o++ = '\0';
    }
    for (uint32_t k = 0; k < n_spec; k++) {
        uint32_t i = t->n_tok + (uint32_t)k;
        // No trained piece can spell these: every pre-tokenizer splits "<|"
        // and "|>" from the letters between them.
        size_t len = strlen(s_specials[k]);
        v->tokens[i] = o;
        v->token_lens[i] = len;
        v->token_types[i] = MC_TOKEN_CONTROL;
        memcpy(o, s_specials[k], len + 1);
        o += len + 1;
    }
    for (uint32_t m = 0; m < t->n_merges; m++) {
        uint32_t x = t->merge_a[m], y = t->merge_b[m];
        v->merges[m] = o;
        size_t n = mc_bpe_bytes_to_piece((const uint8_t *)t->tok_bytes + t->tok_off[x], t->tok_len[x], o);
        o[n++] = ' ';
        n += mc_bpe_bytes_to_piece((const uint8_t *)t->tok_bytes + t->tok_off[y], t->tok_len[y], o + n);
        o[n] = '\0';
        v->merge_lens[m] = n;
        o += n + 1;
    }
    v->n_tokens = n_tok;
    v->n_merges = t->n_merges;
    v->endoftext_id = (int32_t)t->n_tok;
    v->im_start_id = (int32_t)t->n_tok + 1;
    v->im_end_id = (int32_t)t->n_tok + 2;
    snprintf(v->pre, sizeof(v->pre), "%s", pre);
    return v;
nomem:
    free(a);
    mc_bpe_vocab_destroy(&v);
    mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
    return NULL;
}

// One training step: count adjacent pairs over the distinct words (weighted
// by occurrences) into the table and return the winner (a == UINT32_MAX if
// there is none).
static s_pair_t s_best_pair(const s_train_t *t, s_pair_t *pairs, size_t mask) {
    for (size_t i = 0; i <= mask; i++) pairs[i].a = UINT32_MAX;
    for (uint32_t w = 0; w < t->n_words; w++) {
        const s_tword_t *x = &t->words[w];
        const uint32_t *s = t->sym + x->sym_off;
        for (uint32_t k = 0; k + 1 < x->n_sym; k++) {
            size_t i = s_pair_hash(s[k], s[k + 1]) & mask;
            while (pairs[i].a != UINT32_MAX && !(pairs[i].a == s[k] && pairs[i].b == s[k + 1])) i = (i + 1) & mask;
            if (pairs[i].a == UINT32_MAX) pairs[i] = (s_pair_t){s[k], s[k + 1], 0};
            pairs[i].count += x->count;
        }
    }
    // The order is total (count, then ids), so the table's layout never matters.
    s_pair_t best = {UINT32_MAX, UINT32_MAX, 0};
    for (size_t i = 0; i <= mask; i++) {
        const s_pair_t *p = &pairs[i];
        if (p->a == UINT32_MAX) continue;
        if (p->count > best.count || (p->count == best.count && (p->a < best.a || (p->a == best.a && p->b < best.b))))
            best = *p;
    }
    return best;
}

mc_bpe_vocab_t *mc_bpe_train(const char *corpus, size_t len, const mc_bpe_train_params_t *p, char *err) {
    if (!p) {
        mc_err_set(err, MC_ERR_ARG, "bpe: no training parameters");
        return NULL;
    }
    if (!corpus) corpus = mc_bpe_corpus(&len);
    if (p->n_vocab < 256 + s_n_specials(p) || p->n_vocab > MC_BPE_MAX_TRAIN_VOCAB) {
        mc_err_set(err, MC_ERR_ARG, "bpe: vocabulary size %u outside %u..%u", p->n_vocab, 256 + s_n_specials(p),
                   MC_BPE_MAX_TRAIN_VOCAB);
        return NULL;
    }
    if (len > MC_BPE_MAX_CORPUS) {
        mc_err_set(err, MC_ERR_ARG, "bpe: corpus of %zu bytes is too large", len);
        return NULL;
    }
    const char *pre_name = p->pre ? p->pre : "qwen2";
    mc_bpe_pre_t *pre = mc_bpe_pre_new(pre_name, strlen(pre_name), err);
    if (!pre) return NULL;

    s_train_t t = {.corpus = corpus};
    mc_bpe_vocab_t *v = NULL;
    s_pair_t *pairs = NULL;
    size_t n_tok_slots = 1;
    while (n_tok_slots < 2 * (size_t)p->n_vocab) n_tok_slots *= 2;
    t.cap_tok = p->n_vocab;
    t.tok_off = malloc(t.cap_tok * sizeof(uint32_t));
    t.tok_len = malloc(t.cap_tok * sizeof(uint32_t));
    t.tok_slots = calloc(n_tok_slots, sizeof(uint32_t));
    t.tok_mask = n_tok_slots - 1;
    t.merge_a = malloc(p->n_vocab * sizeof(uint32_t));
    t.merge_b = malloc(p->n_vocab * sizeof(uint32_t));
    if (!t.tok_off || !t.tok_len || !t.tok_slots || !t.merge_a || !t.merge_b || !s_word_grow(&t)) goto nomem;

    // Bytes first, in GPT-2's order: by the code point standing for each.
    int32_t byte_tok[256];
    for (uint32_t cp = 0; cp < 0x144; cp++) {
        int b = mc_bpe_cp_byte(cp);
        if (b < 0) continue;
        char c = (char)b;
        if ((byte_tok[b] = s_tok_add(&t, &c, 1)) < 0) goto nomem;
    }

    if (mc_bpe_pre_split(pre, corpus, len, s_train_word, &t, err) != MC_OK) goto fail;
    size_t n_sym = 0;
    for (uint32_t w = 0; w < t.n_words; w++) n_sym += t.words[w].text_len;
    t.sym = malloc((n_sym ? n_sym : 1) * sizeof(uint32_t));
    if (!t.sym) goto nomem;
    n_sym = 0;
    for (uint32_t w = 0; w < t.n_words; w++) {
        s_tword_t *x = &t.words[w];
        x->sym_off = (uint32_t)n_sym;
        x->n_sym = x->text_len;
        for (uint32_t k = 0; k < x->text_len; k++) t.sym[n_sym++] = (uint32_t)byte_tok[(uint8_t)corpus[x->text_off + k]];
    }
    size_t n_pair_slots = 2;
    while (n_pair_slots < 2 * n_sym) n_pair_slots *= 2; // distinct pairs < symbols
    pairs = malloc(n_pair_slots * sizeof(*pairs));
    if (!pairs) goto nomem;

    uint32_t min_freq = p->min_frequency ? p->min_frequency : 1;
    while (t.n_tok + s_n_specials(p) < p->n_vocab) {
        s_pair_t best = s_best_pair(&t, pairs, n_pair_slots - 1);
        if (best.a == UINT32_MAX || best.count < min_freq) break;
        uint32_t la = t.tok_len[best.a], lb = t.tok_len[best.b];
        char *joined = malloc((size_t)la + lb);
        if (!joined) goto nomem;
        memcpy(joined, t.tok_bytes + t.tok_off[best.a], la);
        memcpy(joined + la, t.tok_bytes + t.tok_off[best.b], lb);
        int32_t id = s_tok_add(&t, joined, (size_t)la + lb);
        free(joined);
        if (id < 0) goto nomem;
        t.merge_a[t.n_merges] = best.a;
        t.merge_b[t.n_merges++] = best.b;
        for (uint32_t w = 0; w < t.n_words; w++) { // left to right, as encoding would
            s_tword_t *x = &t.words[w];
            uint32_t *s = t.sym + x->sym_off, o = 0;
            for (uint32_t k = 0; k < x->n_sym; k++) {
                if (k + 1 < x->n_sym && s[k] == best.a && s[k + 1] == best.b) {
                    s[o++] = (uint32_t)id;
                    k++;
                } else {
                    s[o++] = s[k];
                }
            }
            x->n_sym = o;
        }
        // A merge that rebuilt an existing string added no token; stop if
        // that keeps happening (each step still shrinks the corpus).
        if (t.n_merges == p->n_vocab) break;
    }
    v = s_train_result(&t, mc_bpe_pre_name(pre), s_n_specials(p), err);
    goto done;
nomem:
    mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory training a vocabulary");
fail:
    v = NULL;
done:
    free(pairs);
    s_train_free(&t);
    mc_bpe_pre_destroy(&pre);
    return v;
}

mc_err_t mc_bpe_vocab_to_gguf(const mc_bpe_vocab_t *v, mc_gguf_writer_t *w, char *err) {
    if (!v || !w) return mc_err_set(err, MC_ERR_ARG, "bpe: no vocabulary or writer");
    const char *key = "tokenizer.ggml.model";
    mc_err_t rc = mc_gguf_writer_add_str(w, key, "gpt2");
    if (rc == MC_OK) rc = mc_gguf_writer_add_str(w, key = "tokenizer.ggml.pre", v->pre);
    if (rc == MC_OK)
        rc = mc_gguf_writer_add_arr_str(w, key = "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->token_lens,
                                        v->n_tokens);
    if (rc == MC_OK) rc = mc_gguf_writer_add_arr_i32(w, key = "tokenizer.ggml.token_type", v->token_types, v->n_tokens);
    if (rc == MC_OK)
        rc = mc_gguf_writer_add_arr_str(w, key = "tokenizer.ggml.merges", (const char *const *)v->merges, v->merge_lens,
                                        v->n_merges);
    if (rc != MC_OK) return mc_err_set(err, rc, "bpe: cannot add %s to the GGUF (%s)", key, mc_err_name(rc));
    return MC_OK;
}
