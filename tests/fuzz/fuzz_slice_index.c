/*
 * fuzz_slice_index: any bytes as a slice index file (read from beside a
 * model or from the cache folder) through its parser. What parses must be
 * the one canonical encoding: serializing it gives back the very bytes, and
 * every hash it claims to know is readable. Each input is also tried with
 * its last 32 bytes replaced by the right checksum, so the checks behind
 * the checksum get fuzzed too.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_seed.h"
#include "slice_index.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// An index of src with the slices i % every == 0 known (made-up hashes).
static void s_seed(const char *name, const mc_slice_source_t *src, size_t every) {
    char err[MC_ERR_LEN];
    mc_slice_index_t *x = mc_slice_index_new(src, err);
    uint8_t *buf;
    size_t len;
    if (!x || mc_slice_index_serialize(x, &buf, &len, err) != MC_OK) abort();
    const size_t cells = (size_t)src->n_layer * src->n_expert, hdr = sizeof(mc_slice_index_header_t);
    for (size_t i = 0; i < cells; i += every) {
        buf[hdr + i] = 1;
        for (size_t b = 0; b < MC_SLICE_HASH_BYTES; b++)
            buf[hdr + cells + i * MC_SLICE_HASH_BYTES + b] = (uint8_t)(i * 31 + b * 7 + 1);
    }
    crypto_generichash(buf + len - 32, 32, buf, len - 32, NULL, 0);
    mc_slice_index_t *back = mc_slice_index_parse(buf, len, err);
    if (!back) abort();
    mc_slice_index_destroy(&back);
    mc_fuzz_seed_write(name, buf, len);
    free(buf);
    mc_slice_index_destroy(&x);
}

// With MC_FUZZ_SEEDS=DIR: valid indexes (nothing, some, every slice known).
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("MC_FUZZ_SEEDS") || sodium_init() < 0) return 0;
    const mc_slice_source_t a = {0x0123456789abcdefull, 4291744, 1700000000123456789ll, 2, 8};
    const mc_slice_source_t b = {42, 1u << 20, 0, 3, 4};
    s_seed("empty", &a, 1u << 30);
    s_seed("some", &a, 3);
    s_seed("all", &b, 1);
    return 0;
}

static void s_one(const uint8_t *data, size_t size) {
    char err[MC_ERR_LEN];
    mc_slice_index_t *x = mc_slice_index_parse(data, size, err);
    if (!x) return;
    uint8_t *buf;
    size_t len;
    if (mc_slice_index_serialize(x, &buf, &len, err) != MC_OK || len != size || memcmp(buf, data, size)) abort();
    free(buf);
    const mc_slice_source_t *src = mc_slice_index_source(x);
    size_t known = 0;
    for (uint32_t l = 0; l < src->n_layer; l++)
        for (uint32_t e = 0; e < src->n_expert; e++) {
            const uint8_t *h = mc_slice_index_hash(x, l, e);
            if (h && memcmp(h, mc_slice_index_table(x) + ((size_t)l * src->n_expert + e) * MC_SLICE_HASH_BYTES,
                            MC_SLICE_HASH_BYTES))
                abort();
            known += h != NULL;
        }
    if (known != mc_slice_index_known(x)) abort();
    mc_slice_index_destroy(&x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    s_one(data, size);
    if (size < 32) return 0;
    uint8_t *sealed = malloc(size);
    if (!sealed || sodium_init() < 0) abort();
    memcpy(sealed, data, size);
    crypto_generichash(sealed + size - 32, 32, sealed, size - 32, NULL, 0);
    s_one(sealed, size);
    free(sealed);
    return 0;
}
