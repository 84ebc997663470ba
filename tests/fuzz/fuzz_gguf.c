/*
 * fuzz_gguf: any file through the GGUF reader, then, when it parses, through
 * everything that reads a parsed file: metadata getters, the tokenizer, the
 * model binding, an embedding row and an expert lookup, and for a small
 * model that binds, a forward pass over two tokens (whatever hyperparameters
 * the binding accepted must be safe to evaluate).
 */
#include <stdint.h>
#include <stdlib.h>

#include "engine.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    mc_gguf_t *g = mc_gguf_parse(data, size, err);
    if (!g) return 0;
    for (size_t i = 0; i < mc_gguf_kv_count(g); i++) {
        const mc_gguf_kv_t *kv = mc_gguf_kv_at(g, i);
        (void)kv;
    }
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) (void)mc_gguf_tensor_at(g, i);
    uint64_t u;
    mc_gguf_str_t s;
    (void)mc_gguf_get_u64(g, "llama.embedding_length", &u);
    (void)mc_gguf_get_str(g, "general.architecture", &s);

    mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
    if (t) {
        static const char text[] = "Hello world \xC3\xA9\xFF [INST] 12";
        int32_t ids[64];
        size_t n = 0;
        if (mc_tokenizer_encode(t, text, sizeof text - 1, true, ids, 64, &n, err) == MC_OK) {
            mc_detok_t d;
            mc_detok_init(&d, true);
            char *out = malloc(mc_detok_max_bytes(t));
            if (!out) abort();
            for (size_t i = 0; i < n; i++) (void)mc_detok_push(t, &d, ids[i], out, mc_detok_max_bytes(t));
            free(out);
        }
        mc_tokenizer_destroy(&t);
    }

    mc_model_t *m = mc_model_new(&g, err); // takes g either way
    mc_gguf_destroy(&g);
    if (!m) return 0;
    float *row = malloc((size_t)m->hp.dim * sizeof(float));
    if (!row) abort();
    (void)mc_model_embed(m, 0, row);
    free(row);
    mc_expert_t e;
    (void)mc_model_expert(m, 0, 0, &e);
    // Small enough to evaluate at fuzzing speed (the seeds are).
    const mc_hparams_t *hp = &m->hp;
    const uint64_t work = (uint64_t)hp->dim * (hp->n_vocab + (uint64_t)hp->n_layer * (4 * hp->dim + 3 * hp->ffn));
    if (work <= (1u << 22) && hp->n_ctx_train >= 2) {
        mc_engine_params_t ep = mc_engine_params_default();
        ep.n_ctx = 2;
        mc_engine_t *eng = mc_engine_new(m, &ep, err);
        if (eng) {
            const int32_t ids[2] = {1 % (int32_t)hp->n_vocab, 2 % (int32_t)hp->n_vocab};
            float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
            if (!logits) abort();
            (void)mc_engine_eval(eng, ids, 2, 0, MC_LOGITS_LAST, logits, err);
            free(logits);
            mc_engine_destroy(&eng);
        }
    }
    mc_model_destroy(&m);
    return 0;
}
