/*
 * llama-ref: reference outputs from llama.cpp for our fixtures.
 *
 * Built only by deploy/make-arch-fixtures.sh, against a llama.cpp build
 * beside the project (never part of our build). For one model and one
 * prompt it writes, in the fixtures' format (see tests/fixtures/README.md):
 * NAME.ids.txt (llama.cpp's own tokenization, with BOS when the vocabulary
 * adds one, special tokens not parsed), NAME.logits.f32 (every position's
 * logits, the whole prompt evaluated as one batch) and NAME.gen.txt (greedy
 * ids, one token per step through the KV cache, ties to the lowest id).
 * One thread, F32 K/V cache, no flash attention: the most exact settings.
 *
 * usage: llama-ref MODEL PROMPT_FILE OUT_PREFIX N_GEN
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static int s_argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: llama-ref MODEL PROMPT_FILE OUT_PREFIX N_GEN\n");
        return 2;
    }
    const int n_gen = atoi(argv[4]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) return perror(argv[2]), 1;
    static char text[1 << 16];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;

    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return fprintf(stderr, "cannot load %s\n", argv[1]), 1;
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_token ids[4096];
    int n = llama_tokenize(vocab, text, (int32_t)len, ids, 4096, llama_vocab_get_add_bos(vocab), false);
    if (n <= 0) return fprintf(stderr, "tokenize failed (%d)\n", n), 1;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return fprintf(stderr, "cannot create a context\n"), 1;

    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b)) return fprintf(stderr, "decode failed\n"), 1;

    char path[4096];
    snprintf(path, sizeof path, "%s.ids.txt", argv[3]);
    FILE *fi = fopen(path, "w");
    snprintf(path, sizeof path, "%s.logits.f32", argv[3]);
    FILE *fl = fopen(path, "wb");
    if (!fi || !fl) return perror(path), 1;
    for (int i = 0; i < n; i++) {
        fprintf(fi, "%d\n", ids[i]);
        fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, fl);
    }
    fclose(fi);
    fclose(fl);

    snprintf(path, sizeof path, "%s.gen.txt", argv[3]);
    FILE *fg = fopen(path, "w");
    if (!fg) return perror(path), 1;
    int tok = s_argmax(llama_get_logits_ith(ctx, n - 1), n_vocab);
    for (int g = 0; g < n_gen; g++) {
        fprintf(fg, "%d\n", tok);
        if (g + 1 == n_gen) break;
        struct llama_batch one = llama_batch_init(1, 0, 1);
        one.token[0] = tok;
        one.pos[0] = n + g;
        one.n_seq_id[0] = 1;
        one.seq_id[0][0] = 0;
        one.logits[0] = 1;
        one.n_tokens = 1;
        if (llama_decode(ctx, one)) return fprintf(stderr, "decode failed\n"), 1;
        tok = s_argmax(llama_get_logits_ith(ctx, 0), n_vocab);
        llama_batch_free(one);
    }
    fclose(fg);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
