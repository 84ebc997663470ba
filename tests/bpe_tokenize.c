/*
 * bpe_tokenize: our tokenizer over a file of strings, for comparing with
 * llama.cpp (deploy/diff-bpe-llamacpp.sh). Not a test itself.
 *
 *   bpe_tokenize VOCAB.gguf STRINGS
 *
 * STRINGS holds records of a little-endian u32 byte count and the bytes.
 * Prints the ids of each string on a line of its own (no BOS), or
 * "error: ..." when encoding fails.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"
#include "tokenizer.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s VOCAB.gguf STRINGS\n", argv[0]);
        return 2;
    }
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(argv[1], err);
    mc_tokenizer_t *t = g ? mc_tokenizer_new_from_gguf(g, err) : NULL;
    mc_gguf_destroy(&g);
    FILE *f = t ? fopen(argv[2], "rb") : NULL;
    if (!f) {
        fprintf(stderr, "%s: %s\n", argv[0], t ? "cannot open the strings" : err);
        mc_tokenizer_destroy(&t);
        return 1;
    }
    int status = 0;
    uint8_t head[4];
    while (fread(head, 1, 4, f) == 4) {
        size_t len = (size_t)head[0] | (size_t)head[1] << 8 | (size_t)head[2] << 16 | (size_t)head[3] << 24, n;
        char *text = malloc(len + 1);
        int32_t *ids = malloc(mc_tokenizer_max_tokens(len) * sizeof(*ids));
        if (!text || !ids || fread(text, 1, len, f) != len) {
            fprintf(stderr, "%s: truncated or too large record\n", argv[0]);
            free(text);
            free(ids);
            status = 1;
            break;
        }
        if (mc_tokenizer_encode(t, text, len, false, ids, mc_tokenizer_max_tokens(len), &n, err) != MC_OK) {
            printf("error: %s\n", err);
        } else {
            for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
            printf("\n");
        }
        free(text);
        free(ids);
    }
    fclose(f);
    mc_tokenizer_destroy(&t);
    return status;
}
