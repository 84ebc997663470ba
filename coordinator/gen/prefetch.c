/*
 * prefetch: layer l+1's router on the hidden state before layer l's step.
 */
#include "prefetch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mc_prefetch {
    mc_engine_t *e;
    const mc_model_t *m;
    mc_expert_store_t *st;
    float *xn, *logits; // (cap, dim), (cap, n_expert)
    uint32_t cap;
    uint32_t votes[256];
    uint32_t order[256];
};

static void s_hook(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *sel, uint32_t k) {
    (void)sel;
    mc_prefetch_t *p = ctx;
    const mc_hparams_t *hp = &p->m->hp;
    if (layer + 1 >= hp->n_layer || n == 0 || !mc_model_layer_moe(p->m, layer + 1)) return; // a dense layer has no router
    const uint32_t dim = hp->dim, ne = hp->n_expert;
    if (n > p->cap) {
        float *xn = realloc(p->xn, (size_t)n * dim * sizeof(float));
        if (xn) p->xn = xn;
        float *lg = xn ? realloc(p->logits, (size_t)n * ne * sizeof(float)) : NULL;
        if (lg) p->logits = lg;
        if (!xn || !lg) return; // no guess this time
        p->cap = n;
    }
    const mc_layer_t *next = &p->m->layers[layer + 1];
    for (uint32_t t = 0; t < n; t++) {
        const float *r = x + (size_t)t * dim;
        double ss = 0;
        for (uint32_t i = 0; i < dim; i++) ss += (double)r[i] * r[i];
        const float scale = (float)(1.0 / sqrt(ss / dim + hp->rms_eps));
        for (uint32_t i = 0; i < dim; i++) p->xn[(size_t)t * dim + i] = r[i] * scale * next->ffn_norm[i];
    }
    if (mc_matmul_f32(mc_engine_matmul(p->e), &next->router, p->xn, n, p->logits)) return;
    for (uint32_t t = 0; next->router_b && t < n; t++) // GPT-OSS's router bias, as the router adds it
        for (uint32_t e = 0; e < ne; e++) p->logits[(size_t)t * ne + e] += next->router_b[e];
    memset(p->votes, 0, sizeof p->votes);
    for (uint32_t t = 0; t < n; t++) {
        const float *lg = p->logits + (size_t)t * ne;
        uint8_t taken[256] = {0};
        for (uint32_t j = 0; j < k && j < ne; j++) { // top k, ties to the lower id (as the router)
            uint32_t best = ne;
            for (uint32_t e = 0; e < ne; e++)
                if (!taken[e] && (best == ne || lg[e] > lg[best])) best = e;
            taken[best] = 1;
            p->votes[best]++;
        }
    }
    uint32_t got = 0;
    for (;;) {
        uint32_t best = ne;
        for (uint32_t e = 0; e < ne; e++)
            if (p->votes[e] && (best == ne || p->votes[e] > p->votes[best])) best = e;
        if (best == ne) break;
        p->order[got++] = best;
        p->votes[best] = 0;
    }
    mc_expert_store_predict(p->st, MC_STORE_PRED_ROUTER, layer + 1, p->order, got);
}

mc_prefetch_t *mc_prefetch_new(mc_engine_t *e, mc_expert_store_t *st, char *err) {
    mc_prefetch_t *p = calloc(1, sizeof *p);
    if (!p) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    p->e = e, p->m = mc_engine_model(e), p->st = st;
    mc_engine_set_layer_hook(e, s_hook, p);
    return p;
}

void mc_prefetch_destroy(mc_prefetch_t **pp) {
    if (!pp || !*pp) return;
    mc_prefetch_t *p = *pp;
    mc_engine_set_layer_hook(p->e, NULL, NULL);
    free(p->xn), free(p->logits);
    free(p);
    *pp = NULL;
}
