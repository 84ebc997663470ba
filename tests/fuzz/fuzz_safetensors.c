/*
 * fuzz_safetensors: any file image through the safetensors reader; when it
 * parses, every tensor is looked up by name and its first and last data
 * bytes are read (AddressSanitizer then proves the checked offsets stay
 * inside the buffer, which libFuzzer allocates at the input's exact size).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_seed.h"
#include "safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// A file image of header text and n data bytes.
static void s_seed(const char *name, const char *header, size_t n) {
    size_t hl = strlen(header), len = 8 + hl + n;
    uint8_t *b = malloc(len);
    if (!b) abort();
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < n; i++) b[8 + hl + i] = (uint8_t)(i * 37 + 11);
    mc_fuzz_seed_write(name, b, len);
    free(b);
}

// With MC_FUZZ_SEEDS=DIR: valid files to start the corpus (deploy/fuzz.sh).
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("MC_FUZZ_SEEDS")) return 0;
    s_seed("one", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    s_seed("model",
           "{\"__metadata__\":{\"format\":\"pt\"},"
           "\"model.embed_tokens.weight\":{\"dtype\":\"BF16\",\"shape\":[4,2],\"data_offsets\":[0,16]},"
           "\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[16,24]},"
           "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
           "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[32,32]},"
           "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]}}    ",
           36);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    mc_safetensors_t *st = mc_safetensors_parse(data, size, err);
    if (!st) return 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < mc_safetensors_count(st); i++) {
        const mc_safetensors_tensor_t *t = mc_safetensors_at(st, i);
        if (mc_safetensors_find(st, t->name) != t) abort();
        if (t->size != t->n_elems * mc_safetensors_dtype_size(t->dtype)) abort();
        if (t->size) sink ^= t->data[0] ^ t->data[t->size - 1];
    }
    (void)sink;
    mc_safetensors_destroy(&st);
    return 0;
}
