/*
 * bpe_vocab_gguf: writes a vocabulary-only GGUF (no tensors) holding a
 * byte-level BPE vocabulary trained by mc_bpe_train() on the built-in
 * corpus, for checking our tokenizer against llama.cpp's
 * (deploy/make-bpe-golden.sh). Not a test itself and not installed.
 *
 *   bpe_vocab_gguf PRE N_VOCAB OUT.gguf [USER_PIECE...]
 *
 * USER_PIECEs are appended as user-defined pieces (type 4, matched in text
 * before pre-tokenization, as Qwen3's "<think>"), for
 * deploy/diff-bpe-llamacpp.sh.
 *
 * The file says general.architecture "qwen3moe" with the few
 * hyperparameters llama.cpp reads before it loads a vocabulary; BOS and EOS
 * are <|endoftext|> and <|im_end|>, add_bos_token false (as Qwen3's files).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_train.h"
#include "gguf_writer.h"
#include "tokenizer.h"

// The file has no tensors, so the writer never asks for data.
static mc_err_t s_no_data(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)ctx, (void)dst, (void)size;
    return mc_err_set(err, MC_ERR_ARG, "unexpected tensor %zu", index);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PRE N_VOCAB OUT.gguf [USER_PIECE...]\n", argv[0]);
        return 2;
    }
    char err[MC_ERR_LEN] = "";
    mc_bpe_train_params_t tp = mc_bpe_train_params_default();
    tp.pre = argv[1];
    tp.n_vocab = (uint32_t)strtoul(argv[2], NULL, 10);
    mc_bpe_vocab_t *v = mc_bpe_train(NULL, 0, &tp, err);
    if (!v) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    // The trained vocabulary, then the user-defined pieces.
    uint32_t n_user = (uint32_t)argc - 4, n = v->n_tokens + n_user;
    const char **tokens = malloc(n * sizeof(*tokens));
    size_t *lens = malloc(n * sizeof(*lens));
    int32_t *types = malloc(n * sizeof(*types));
    if (!tokens || !lens || !types) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        bool user = i >= v->n_tokens;
        tokens[i] = user ? argv[4 + i - v->n_tokens] : v->tokens[i];
        lens[i] = user ? strlen(tokens[i]) : v->token_lens[i];
        types[i] = user ? MC_TOKEN_USER : v->token_types[i];
    }
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    const char *a = "qwen3moe";
    mc_err_t rc = w ? MC_OK : MC_ERR_NOMEM;
    if (rc == MC_OK) rc = mc_gguf_writer_add_str(w, "general.architecture", a);
    if (rc == MC_OK) rc = mc_gguf_writer_add_str(w, "general.name", "bpe-vocab-test");
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.context_length", 4096);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.embedding_length", 64);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.block_count", 1);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.feed_forward_length", 128);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.expert_feed_forward_length", 32);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.expert_count", 4);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.expert_used_count", 2);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.attention.head_count", 4);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.attention.head_count_kv", 2);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.attention.key_length", 16);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "qwen3moe.attention.value_length", 16);
    if (rc == MC_OK) rc = mc_gguf_writer_add_f32(w, "qwen3moe.attention.layer_norm_rms_epsilon", 1e-6f);
    if (rc == MC_OK) rc = mc_gguf_writer_add_f32(w, "qwen3moe.rope.freq_base", 1000000.0f);
    if (rc == MC_OK) rc = mc_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (rc == MC_OK) rc = mc_gguf_writer_add_str(w, "tokenizer.ggml.pre", v->pre);
    if (rc == MC_OK) rc = mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, lens, n);
    if (rc == MC_OK) rc = mc_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", types, n);
    if (rc == MC_OK)
        rc = mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->merge_lens,
                                        v->n_merges);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->endoftext_id);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->im_end_id);
    if (rc == MC_OK) rc = mc_gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->endoftext_id);
    if (rc == MC_OK) rc = mc_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false);
    if (rc == MC_OK) rc = mc_gguf_writer_write_file(w, argv[3], s_no_data, NULL, err);
    else mc_err_set(err, rc, "cannot build the metadata (%s)", mc_err_name(rc));
    if (rc == MC_OK)
        fprintf(stderr, "%s: %u tokens (%u user-defined), %u merges, pre %s -> %s\n", argv[0], n, n_user, v->n_merges,
                v->pre, argv[3]);
    else
        fprintf(stderr, "%s: %s\n", argv[0], err);
    mc_gguf_writer_destroy(&w);
    mc_bpe_vocab_destroy(&v);
    free(tokens);
    free(lens);
    free(types);
    return rc == MC_OK ? 0 : 1;
}
