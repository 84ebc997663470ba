/*
 * fuzz_bpe: any bytes through the byte-level BPE tokenizer. The first byte
 * picks what the rest is: text for the "qwen2" or the "olmo" vocabulary
 * trained from the built-in corpus, or a corpus to train a small vocabulary
 * on, which then encodes that same text. Every encoding must hold the
 * input's bytes exactly, and streaming decode must accept every id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "bpe_train.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// A tokenizer over a trained vocabulary, built without a GGUF file.
static mc_tokenizer_t *s_tokenizer(const mc_bpe_vocab_t *v) {
    mc_gguf_str_t *pieces = malloc(v->n_tokens * sizeof(*pieces)), *merges = malloc((v->n_merges + 1) * sizeof(*merges));
    if (!pieces || !merges) abort();
    for (uint32_t i = 0; i < v->n_tokens; i++) pieces[i] = (mc_gguf_str_t){v->tokens[i], v->token_lens[i]};
    for (uint32_t i = 0; i < v->n_merges; i++) merges[i] = (mc_gguf_str_t){v->merges[i], v->merge_lens[i]};
    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    p.kind = MC_TOKENIZER_BPE;
    p.n_vocab = v->n_tokens;
    p.pieces = pieces;
    p.types = v->token_types;
    p.merges = merges;
    p.n_merges = v->n_merges;
    p.pre = (mc_gguf_str_t){v->pre, strlen(v->pre)};
    char err[MC_ERR_LEN];
    mc_tokenizer_t *t = mc_tokenizer_new(&p, err);
    free(pieces);
    free(merges);
    if (!t) abort(); // a trained vocabulary must always load
    return t;
}

static mc_tokenizer_t *s_trained(const char *pre, const char *corpus, size_t len, uint32_t n_vocab) {
    mc_bpe_train_params_t tp = mc_bpe_train_params_default();
    tp.pre = pre;
    tp.n_vocab = n_vocab;
    char err[MC_ERR_LEN];
    mc_bpe_vocab_t *v = mc_bpe_train(corpus, len, &tp, err);
    if (!v) abort();
    mc_tokenizer_t *t = s_tokenizer(v);
    mc_bpe_vocab_destroy(&v);
    return t;
}

static void s_check(const mc_tokenizer_t *t, const char *text, size_t len) {
    size_t cap = mc_tokenizer_max_tokens(len), n = 0, total = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    char err[MC_ERR_LEN];
    if (!ids) abort();
    if (mc_tokenizer_encode(t, text, len, false, ids, cap, &n, err) != MC_OK || n > len) abort();
    for (size_t i = 0; i < n; i++) {
        size_t plen;
        if (!mc_tokenizer_piece(t, ids[i], &plen)) abort();
        total += plen;
    }
    // A piece stands for at most as many bytes as it has.
    size_t step = mc_detok_max_bytes(t), w = 0;
    char *back = malloc(total + 1), *out = malloc(step);
    if (!back || !out) abort();
    mc_detok_t d;
    mc_detok_init(&d, false);
    for (size_t i = 0; i < n; i++) {
        size_t plen;
        const char *p = mc_tokenizer_piece(t, ids[i], &plen);
        w += mc_bpe_piece_to_bytes(p, plen, back + w);
        if (mc_detok_push(t, &d, ids[i], out, step) > step) abort();
    }
    (void)mc_detok_flush(&d, out, step);
    if (w != len || memcmp(back, text, len) != 0) abort();
    (void)mc_tokenizer_find(t, text, len);
    free(ids);
    free(back);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Trained once per process: the built-in corpus gives the same vocabularies every run.
    static mc_tokenizer_t *qwen2, *olmo;
    if (!qwen2) qwen2 = s_trained("qwen2", NULL, 0, 1536);
    if (!olmo) olmo = s_trained("olmo", NULL, 0, 1536);
    if (size < 2) return 0;
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    switch (data[0] % 3) {
    case 0: s_check(qwen2, text, len); break;
    case 1: s_check(olmo, text, len); break;
    default: {
        // Training cost grows with the corpus: a few KB find the same bugs faster.
        mc_tokenizer_t *t = s_trained(data[0] & 4 ? "olmo" : "qwen2", text, len < 4096 ? len : 4096, 259 + data[1] % 128);
        s_check(t, text, len);
        mc_tokenizer_destroy(&t);
    }
    }
    return 0;
}
