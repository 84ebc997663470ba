/*
 * llama-bpe-ids: llama.cpp's token ids for many texts, with one vocabulary.
 *
 * Built only by deploy/make-bpe-golden.sh, against a llama.cpp build beside
 * the project (never part of our build); it stands in for llama-tokenize,
 * which a libllama-only build lacks, and loads the vocabulary once for all
 * texts. The model is loaded with vocab_only. TEXTS holds records of a
 * 4-byte little-endian length and that many bytes of text; for each record
 * one line of ids goes to stdout, separated by spaces (an empty line for no
 * ids). No BOS, special tokens not parsed, as llama-tokenize --no-bos
 * --no-parse-special.
 *
 * usage: llama-bpe-ids MODEL TEXTS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void s_quiet(enum ggml_log_level level, const char *text, void *ctx) {
    (void)level, (void)text, (void)ctx;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: llama-bpe-ids MODEL TEXTS\n");
        return 2;
    }
    llama_log_set(s_quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(argv[1], mp);
    if (!m) {
        fprintf(stderr, "llama-bpe-ids: cannot load %s\n", argv[1]);
        return 1;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "llama-bpe-ids: cannot open %s\n", argv[2]);
        llama_model_free(m);
        return 1;
    }
    const struct llama_vocab *v = llama_model_get_vocab(m);
    int rc = 0;
    unsigned char head[4];
    while (rc == 0 && fread(head, 1, 4, f) == 4) {
        size_t len = head[0] | head[1] << 8 | head[2] << 16 | (size_t)head[3] << 24;
        char *text = malloc(len + 1);
        llama_token *ids = malloc((len + 8) * sizeof(*ids)); // byte-level: at most one id per byte
        if (!text || !ids || fread(text, 1, len, f) != len) {
            fprintf(stderr, "llama-bpe-ids: short record in %s\n", argv[2]);
            rc = 1;
        } else {
            int k = llama_tokenize(v, text, (int)len, ids, (int)len + 8, false, false);
            if (k < 0) {
                fprintf(stderr, "llama-bpe-ids: llama_tokenize failed (%d)\n", k);
                rc = 1;
            }
            for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
            printf("\n");
        }
        free(text);
        free(ids);
    }
    fclose(f);
    llama_model_free(m);
    return rc;
}
