/*
 * expert_file: metadata and slice tensors of experts-only GGUF files.
 */
#include "expert_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mc_err_t mc_expert_file_meta(const mc_gguf_t *src, uint64_t fingerprint, mc_gguf_writer_t *w, char *err) {
    for (size_t i = 0; i < mc_gguf_kv_count(src); i++) {
        const mc_gguf_kv_t *kv = mc_gguf_kv_at(src, i);
        if (!strncmp(kv->key, "tokenizer.", 10) || !strcmp(kv->key, "general.alignment") ||
            !strcmp(kv->key, MC_MODEL_SOURCE_KEY))
            continue;
        mc_err_t rc = mc_gguf_writer_add_value(w, kv->key, &kv->value);
        if (rc) return mc_err_set(err, rc, "cannot copy metadata key '%.100s'", kv->key);
    }
    mc_err_t rc = mc_gguf_writer_add_u64(w, MC_MODEL_SOURCE_KEY, fingerprint);
    return rc ? mc_err_set(err, rc, "cannot add metadata key '%s'", MC_MODEL_SOURCE_KEY) : MC_OK;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "a slice's biases travel as the host's f32 bytes: little-endian hosts only"
#endif

static const char *const s_part[3] = {"gate", "up", "down"};

uint32_t mc_expert_file_parts(const mc_hparams_t *hp) { return hp->arch->expert_ffn_bias ? 6 : 3; }

uint64_t mc_expert_file_part_bytes(const mc_hparams_t *hp, const mc_dtype_t types[3], uint32_t j) {
    const uint32_t n_in[3] = {hp->dim, hp->dim, hp->ffn}, n_out[3] = {hp->ffn, hp->ffn, hp->dim};
    if (j >= mc_expert_file_parts(hp)) return 0;
    if (j >= 3) return (uint64_t)n_out[j - 3] * sizeof(float); // a bias: one f32 per output
    const mc_dtype_traits_t *tr = mc_dtype_traits(types[j]);
    if (!tr || !tr->weight || n_in[j] % tr->block_elems) return 0;
    return (uint64_t)mc_dtype_row_bytes(types[j], n_in[j]) * n_out[j];
}

uint64_t mc_expert_file_slice_bytes(const mc_hparams_t *hp, const mc_dtype_t types[3]) {
    uint64_t total = 0;
    for (uint32_t j = 0; j < mc_expert_file_parts(hp); j++) {
        const uint64_t b = mc_expert_file_part_bytes(hp, types, j);
        if (!b) return 0;
        total += b;
    }
    return total;
}

const uint8_t *mc_expert_file_part(const mc_model_t *m, uint32_t layer, uint32_t e, uint32_t j, uint64_t *len) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    const mc_layer_t *L = &m->layers[layer];
    const uint32_t ffn = m->hp.ffn, dim = m->hp.dim;
    if (j >= 3 && !L->exp_b_gate) return *len = 0, NULL; // no biases bound (an expert the file lacks)
    switch (j) {
    case 0: return *len = mc_matrix_bytes(&x->gate), x->gate.data;
    case 1: return *len = mc_matrix_bytes(&x->up), x->up.data;
    case 2: return *len = mc_matrix_bytes(&x->down), x->down.data;
    case 3: return *len = (uint64_t)ffn * sizeof(float), (const uint8_t *)(L->exp_b_gate + (size_t)e * ffn);
    case 4: return *len = (uint64_t)ffn * sizeof(float), (const uint8_t *)(L->exp_b_up + (size_t)e * ffn);
    default: return *len = (uint64_t)dim * sizeof(float), (const uint8_t *)(L->exp_b_down + (size_t)e * dim);
    }
}

mc_err_t mc_expert_file_add(mc_gguf_writer_t *w, const mc_hparams_t *hp, uint32_t layer, uint32_t e,
                            const mc_dtype_t types[3], char *err) {
    const uint64_t ne[3][2] = {{hp->dim, hp->ffn}, {hp->dim, hp->ffn}, {hp->ffn, hp->dim}};
    for (uint32_t j = 0; j < mc_expert_file_parts(hp); j++) {
        char name[64];
        const bool bias = j >= 3;
        snprintf(name, sizeof name, "blk.%u.ffn_%s.%u.%s", layer, s_part[j % 3], e, bias ? "bias" : "weight");
        const mc_dtype_t t = bias ? MC_DTYPE_F32 : types[j];
        mc_err_t rc = bias ? mc_gguf_writer_add_tensor(w, name, t, 1, &ne[j - 3][1])
                           : mc_gguf_writer_add_tensor(w, name, t, 2, ne[j]);
        if (rc) return mc_err_set(err, rc, "cannot declare tensor %s of type %s", name, mc_dtype_name(t));
    }
    return MC_OK;
}

void mc_expert_file_types(const mc_model_t *m, uint32_t layer, uint32_t e, mc_dtype_t out[3]) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    out[0] = x->gate.type, out[1] = x->up.type, out[2] = x->down.type;
}

static mc_err_t s_no_data(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)ctx, (void)index, (void)dst, (void)size;
    return mc_err_set(err, MC_ERR_ARG, "a metadata file has no tensors");
}

mc_err_t mc_expert_file_info(const mc_model_t *m, uint8_t **out, size_t *len, char *err) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    if (!w) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_err_t rc = mc_expert_file_meta(m->gguf, mc_model_fingerprint(m), w, err);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (!rc) rc = mc_gguf_writer_write_mem(w, s_no_data, NULL, &buf, &n, err);
    mc_gguf_writer_destroy(&w);
    if (rc) return rc;
    if (n > MC_EXPERT_FILE_INFO_MAX) {
        free(buf);
        return mc_err_set(err, MC_ERR_RANGE, "the model's metadata without the tokenizer takes %zu bytes, at most %u travel",
                          n, MC_EXPERT_FILE_INFO_MAX);
    }
    *out = buf;
    *len = n;
    return MC_OK;
}
