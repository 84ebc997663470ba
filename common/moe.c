/*
 * moe: rows grouped by expert, batched gate/up/down products, SwiGLU, and a
 * fixed-order weighted sum.
 */
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MC_MOE_MAX_EXPERTS 256 // the model loader's limit

struct mc_moe {
    mc_matmul_t *mm;
    float *xg;     // (rows, dim) gathered inputs of one expert
    float *g, *u;  // (rows, ffn) gate and up products
    float *d;      // (rows, dim) down product
    float *y;      // (n, k, dim) per-slot expert outputs
    uint32_t *idx; // (rows) flat (t * k + j) slot of each gathered row
    size_t cap_rows, cap_dim, cap_ffn, cap_slots;
    mc_matmul_op_t ops[2 * MC_MOE_MAX_EXPERTS];   // gate and up per active expert
    const mc_expert_t *sel[MC_MOE_MAX_EXPERTS];   // the active experts, in id order
};

mc_moe_t *mc_moe_new(mc_matmul_t *mm) {
    mc_moe_t *moe = calloc(1, sizeof *moe);
    if (moe) moe->mm = mm;
    return moe;
}

void mc_moe_destroy(mc_moe_t **pm) {
    if (!pm || !*pm) return;
    mc_moe_t *m = *pm;
    free(m->xg), free(m->g), free(m->u), free(m->d), free(m->y), free(m->idx);
    free(m);
    *pm = NULL;
}

static mc_err_t s_reserve(mc_moe_t *m, size_t rows, size_t dim, size_t ffn, size_t slots) {
    if (rows <= m->cap_rows && dim <= m->cap_dim && ffn <= m->cap_ffn && slots <= m->cap_slots) return MC_OK;
    rows = rows > m->cap_rows ? rows : m->cap_rows;
    dim = dim > m->cap_dim ? dim : m->cap_dim;
    ffn = ffn > m->cap_ffn ? ffn : m->cap_ffn;
    slots = slots > m->cap_slots ? slots : m->cap_slots;
    free(m->xg), free(m->g), free(m->u), free(m->d), free(m->y), free(m->idx);
    m->xg = malloc(rows * dim * sizeof(float));
    m->g = malloc(rows * ffn * sizeof(float));
    m->u = malloc(rows * ffn * sizeof(float));
    m->d = malloc(rows * dim * sizeof(float));
    m->y = malloc(slots * dim * sizeof(float));
    m->idx = malloc(rows * sizeof(uint32_t));
    if (!m->xg || !m->g || !m->u || !m->d || !m->y || !m->idx) {
        free(m->xg), free(m->g), free(m->u), free(m->d), free(m->y), free(m->idx);
        m->xg = m->g = m->u = m->d = m->y = NULL;
        m->idx = NULL;
        m->cap_rows = m->cap_dim = m->cap_ffn = m->cap_slots = 0;
        return MC_ERR_NOMEM;
    }
    m->cap_rows = rows, m->cap_dim = dim, m->cap_ffn = ffn, m->cap_slots = slots;
    return MC_OK;
}

mc_err_t mc_moe_compute(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n,
                        const int32_t *experts, const float *weights, uint32_t k, float *out, char *err) {
    const uint32_t dim = m->hp.dim, ffn = m->hp.ffn, n_expert = m->hp.n_expert;
    if (layer >= m->hp.n_layer) return mc_err_set(err, MC_ERR_RANGE, "layer %u out of range", layer);
    if (n_expert > MC_MOE_MAX_EXPERTS) return mc_err_set(err, MC_ERR_RANGE, "%u experts: at most %d", n_expert, MC_MOE_MAX_EXPERTS);
    for (size_t i = 0; i < (size_t)n * k; i++)
        if (experts[i] >= (int32_t)n_expert)
            return mc_err_set(err, MC_ERR_RANGE, "expert id %d out of range (%u experts)", experts[i], n_expert);
    // Every slot may gather its own row: up to n * k rows in all.
    if (s_reserve(moe, (size_t)n * k, dim, ffn, (size_t)n * k) != MC_OK)
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    // Gather each expert's rows, experts in id order, into one block each.
    mc_matmul_op_t *ops = moe->ops;
    uint32_t n_ops = 0, rows = 0;
    for (uint32_t e = 0; e < n_expert; e++) {
        uint32_t first = rows;
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t j = 0; j < k; j++)
                if (experts[(size_t)t * k + j] == (int32_t)e) {
                    memcpy(moe->xg + (size_t)rows * dim, x + (size_t)t * dim, dim * sizeof(float));
                    moe->idx[rows++] = t * k + j;
                }
        if (rows == first) continue;
        const mc_expert_t *ex = &m->layers[layer].experts[e];
        moe->sel[n_ops / 2] = ex;
        ops[n_ops++] = (mc_matmul_op_t){&ex->gate, moe->xg + (size_t)first * dim, rows - first, moe->g + (size_t)first * ffn};
        ops[n_ops++] = (mc_matmul_op_t){&ex->up, moe->xg + (size_t)first * dim, rows - first, moe->u + (size_t)first * ffn};
    }
    // Two passes over the pool for all experts: gate and up, then down.
    mc_err_t rc = mc_matmul_many(moe->mm, ops, n_ops);
    if (rc) return mc_err_set(err, rc, "layer %u: expert gate/up products failed", layer);
    for (size_t i = 0; i < (size_t)rows * ffn; i++) {
        float g = moe->g[i];
        moe->g[i] = g / (1.0f + expf(-g)) * moe->u[i]; // SwiGLU: silu(gate) * up
    }
    // Reuse ops for the down products: step i writes ops[i] after reading
    // ops[2i], and no later step reads an index below its own.
    for (uint32_t i = 0; i < n_ops / 2; i++) {
        const mc_matmul_op_t *gate = &ops[2 * i];
        size_t first = (size_t)(gate->y - moe->g) / ffn;
        ops[i] = (mc_matmul_op_t){&moe->sel[i]->down, moe->g + first * ffn, gate->n_tok, moe->d + first * dim};
    }
    if ((rc = mc_matmul_many(moe->mm, ops, n_ops / 2)))
        return mc_err_set(err, rc, "layer %u: expert down products failed", layer);
    for (uint32_t r = 0; r < rows; r++)
        memcpy(moe->y + (size_t)moe->idx[r] * dim, moe->d + (size_t)r * dim, dim * sizeof(float));
    for (uint32_t t = 0; t < n; t++) {
        float *o = out + (size_t)t * dim;
        memset(o, 0, dim * sizeof(float));
        for (uint32_t j = 0; j < k; j++) {
            size_t s = (size_t)t * k + j;
            if (experts[s] < 0) continue;
            const float *y = moe->y + s * dim;
            float w = weights[s];
            for (uint32_t i = 0; i < dim; i++) o[i] += w * y[i];
        }
    }
    return MC_OK;
}
