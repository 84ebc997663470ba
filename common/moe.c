/*
 * moe: rows grouped by expert (as f32 rows or as ready activation blocks),
 * batched gate/up/down products, SwiGLU, and a fixed-order weighted sum.
 */
#include "moe.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "expert_store.h"
#include "kernel.h"
#include "quant.h"

#define MC_MOE_MAX_EXPERTS 256 // the model loader's limit

struct mc_moe {
    mc_matmul_t *mm;
    float *xf;     // (n, dim) input rows decoded to f32, when they came in another type
    float *xg;     // (rows, dim) gathered f32 inputs of the experts that convert them
    uint8_t *xq;   // gathered input blocks of the experts that take them as they are
    float *g, *u;  // (rows, ffn) gate and up products
    float *d;      // (rows, dim) down product
    uint32_t *at;  // (n * k) the gathered (down product) row of each computed choice
    float *sg;     // (n) shared expert gate logits
    uint32_t *idx; // (rows) flat (t * k + j) choice of each gathered row
    size_t cap_xf, cap_xg, cap_xq, cap_g, cap_u, cap_d, cap_at, cap_idx, cap_sg; // bytes
    mc_matmul_op_t ops[2 * MC_MOE_MAX_EXPERTS];   // gate and up per active expert
    const mc_expert_t *sel[MC_MOE_MAX_EXPERTS];   // the active experts of a turn, in id order
    uint32_t eid[MC_MOE_MAX_EXPERTS];             // their ids
    mc_expert_t views[MC_MOE_MAX_EXPERTS];        // their matrices in the expert store's pool
    uint32_t pinned[MC_MOE_MAX_EXPERTS];          // the experts of a turn pinned in the store
    uint32_t want[MC_MOE_MAX_EXPERTS];            // the layer's experts the store keeps
};

// Unpin the n experts of a turn.
static void s_release(mc_moe_t *moe, mc_expert_store_t *st, uint32_t layer, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) mc_expert_store_release(st, layer, moe->pinned[i]);
}

mc_moe_t *mc_moe_new(mc_matmul_t *mm) {
    mc_moe_t *moe = calloc(1, sizeof *moe);
    if (moe) moe->mm = mm;
    return moe;
}

void mc_moe_destroy(mc_moe_t **pm) {
    if (!pm || !*pm) return;
    mc_moe_t *m = *pm;
    free(m->xf), free(m->xg), free(m->xq), free(m->g), free(m->u), free(m->d), free(m->at), free(m->idx), free(m->sg);
    free(m);
    *pm = NULL;
}

// Make *p hold at least bytes (old contents are not kept).
static bool s_grow(void *pp, size_t *cap, size_t bytes) {
    void **p = pp;
    if (bytes <= *cap) return true;
    free(*p);
    if (!(*p = malloc(bytes))) {
        *cap = 0;
        return false;
    }
    *cap = bytes;
    return true;
}

mc_err_t mc_moe_compute(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n,
                        const int32_t *experts, const float *weights, uint32_t k, float *out, char *err) {
    const mc_moe_rows_t rows = {MC_DTYPE_F32, x, (size_t)m->hp.dim * sizeof(float)};
    return mc_moe_compute_rows(moe, m, layer, &rows, n, experts, weights, k, out, err);
}

// Copy rows idx[0..cnt) (choices t * k + j) of x into dst in the layout kc's
// products read: the act_type row, then the kernel's side data.
static void s_gather_blocks(const mc_kernel_t *kc, const mc_moe_rows_t *x, const uint32_t *idx, uint32_t cnt,
                            uint32_t k, uint32_t dim, uint8_t *dst) {
    const size_t stride = mc_kernel_act_bytes(kc, dim);
    for (uint32_t r = 0; r < cnt; r++) {
        uint8_t *a = dst + (size_t)r * stride;
        memcpy(a, (const uint8_t *)x->data + (size_t)(idx[r] / k) * x->row_bytes, x->row_bytes);
        mc_kernel_prep(kc, a, dim);
    }
}

// Below this many values, the element-wise steps after the products
// (SwiGLU, the weighted sum) run on the caller: a pool pass costs more.
#define MC_MOE_SERIAL 8192

typedef struct {
    float *g;
    const float *u;
    size_t n;
    mc_act_t act;
} s_swiglu_t;

// GPT-OSS's clamped SwiGLU constants (llama.cpp's swiglu_oai).
#define MC_OAI_ALPHA 1.702f
#define MC_OAI_LIMIT 7.0f

// g[i] = silu(g[i]) * u[i] (or the family's variant, arch.h mc_act_t) over
// a contiguous share of the n values: each value alone, so any split gives
// the same bits.
static void s_swiglu_task(void *arg, int ith, int nth) {
    const s_swiglu_t *j = arg;
    const size_t i0 = j->n * (size_t)ith / (size_t)nth, i1 = j->n * (size_t)(ith + 1) / (size_t)nth;
    if (j->act == MC_ACT_SWIGLU_OAI) {
        for (size_t i = i0; i < i1; i++) {
            const float g = j->g[i] > MC_OAI_LIMIT ? MC_OAI_LIMIT : j->g[i];
            const float u = j->u[i] < -MC_OAI_LIMIT ? -MC_OAI_LIMIT : j->u[i] > MC_OAI_LIMIT ? MC_OAI_LIMIT : j->u[i];
            j->g[i] = g / (1.0f + expf(MC_OAI_ALPHA * -g)) * (u + 1.0f);
        }
        return;
    }
    for (size_t i = i0; i < i1; i++) {
        const float g = j->g[i];
        j->g[i] = g / (1.0f + expf(-g)) * j->u[i]; // SwiGLU: silu(gate) * up
    }
}

static void s_swiglu_run(mc_matmul_t *mm, float *g, const float *u, size_t n, mc_act_t act) {
    s_swiglu_t j = {g, u, n, act};
    if (n < MC_MOE_SERIAL) s_swiglu_task(&j, 0, 1);
    else mc_pool_run(mc_matmul_pool(mm), s_swiglu_task, &j);
}

typedef struct {
    const float *d;       // (rows, dim) down products in gathered order
    const uint32_t *at;   // (n * k) gathered row of each computed choice
    const int32_t *experts;
    const float *weights; // (n, k)
    uint32_t k, dim, n;
    float *out;           // (n, dim)
} s_sum_t;

// out[t] = sum over j in choice order of w[t][j] * d[at[t * k + j]], for a
// contiguous share of the rows: every row alone, in a fixed order.
static void s_sum_task(void *arg, int ith, int nth) {
    const s_sum_t *j = arg;
    const uint32_t t0 = (uint32_t)((uint64_t)j->n * (uint64_t)ith / (uint64_t)nth);
    const uint32_t t1 = (uint32_t)((uint64_t)j->n * (uint64_t)(ith + 1) / (uint64_t)nth);
    for (uint32_t t = t0; t < t1; t++) {
        float *o = j->out + (size_t)t * j->dim;
        memset(o, 0, j->dim * sizeof(float));
        for (uint32_t c = 0; c < j->k; c++) {
            const size_t s = (size_t)t * j->k + c;
            if (j->experts[s] < 0) continue;
            const float *y = j->d + (size_t)j->at[s] * j->dim;
            const float w = j->weights[s];
            for (uint32_t i = 0; i < j->dim; i++) o[i] += w * y[i];
        }
    }
}

mc_err_t mc_moe_compute_rows(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const mc_moe_rows_t *x, uint32_t n,
                             const int32_t *experts, const float *weights, uint32_t k, float *out, char *err) {
    const uint32_t dim = m->hp.dim, ffn = m->hp.ffn, n_expert = m->hp.n_expert;
    if (layer >= m->hp.n_layer) return mc_err_set(err, MC_ERR_RANGE, "layer %u out of range", layer);
    if (n_expert > MC_MOE_MAX_EXPERTS) return mc_err_set(err, MC_ERR_RANGE, "%u experts: at most %d", n_expert, MC_MOE_MAX_EXPERTS);
    const size_t rb = mc_dtype_row_bytes(x->type, dim);
    if (rb == 0 || rb != x->row_bytes)
        return mc_err_set(err, MC_ERR_ARG, "input rows of %zu bytes, a %s row of %u values has %zu", x->row_bytes,
                          mc_dtype_name(x->type), dim, rb);
    uint32_t cnt[MC_MOE_MAX_EXPERTS] = {0};
    for (size_t i = 0; i < (size_t)n * k; i++) {
        if (experts[i] >= (int32_t)n_expert)
            return mc_err_set(err, MC_ERR_RANGE, "expert id %d out of range (%u experts)", experts[i], n_expert);
        if (experts[i] >= 0) cnt[experts[i]]++;
    }
    // Plan: which experts take the rows as they are (their kernel's
    // activation type is the input's), which convert gathered f32 rows.
    mc_matmul_t *mm = moe->mm;
    mc_expert_store_t *st = m->store;
    size_t rows = 0, f32_rows = 0, blk_bytes = 0;
    for (uint32_t e = 0; e < n_expert; e++) {
        if (!cnt[e]) continue;
        const mc_expert_t *ex = &m->layers[layer].experts[e];
        // An expert multiplied from the mapping has its MXFP4 scales read
        // the first time (model.h); a store checks what it reads itself.
        if (!(st && mc_expert_store_manages(st, layer, e))) {
            const mc_err_t rc = mc_model_expert_check(m, layer, e, err);
            if (rc) return rc;
        }
        const mc_kernel_t *kg = mc_matmul_kernel(mm, ex->gate.type), *ku = mc_matmul_kernel(mm, ex->up.type);
        if (!kg || !ku) return mc_err_set(err, MC_ERR_UNSUPPORTED, "layer %u expert %u: no kernel for its weights", layer, e);
        const bool dg = kg->act_type == x->type, du = ku->act_type == x->type;
        if (dg) blk_bytes += cnt[e] * mc_kernel_act_bytes(kg, dim);
        if (du && ku != kg) blk_bytes += cnt[e] * mc_kernel_act_bytes(ku, dim);
        if (!dg || !du) f32_rows += cnt[e];
        rows += cnt[e];
    }
    const bool decode = f32_rows && x->type != MC_DTYPE_F32;
    if (!s_grow(&moe->idx, &moe->cap_idx, rows * sizeof(uint32_t) + 1) ||
        !s_grow(&moe->g, &moe->cap_g, rows * ffn * sizeof(float) + 1) ||
        !s_grow(&moe->u, &moe->cap_u, rows * ffn * sizeof(float) + 1) ||
        !s_grow(&moe->d, &moe->cap_d, rows * dim * sizeof(float) + 1) ||
        !s_grow(&moe->at, &moe->cap_at, (size_t)n * k * sizeof(uint32_t) + 1) ||
        !s_grow(&moe->xg, &moe->cap_xg, f32_rows * dim * sizeof(float) + 1) ||
        !s_grow(&moe->xq, &moe->cap_xq, blk_bytes + 1) ||
        (decode && !s_grow(&moe->xf, &moe->cap_xf, (size_t)n * dim * sizeof(float))))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    const float *xf = x->data;
    if (decode) {
        for (uint32_t t = 0; t < n; t++)
            mc_quant_dequantize_row(x->type, (const uint8_t *)x->data + (size_t)t * x->row_bytes, moe->xf + (size_t)t * dim,
                                    dim);
        xf = moe->xf;
    }
    // With an expert store, the managed experts come from its pool: the
    // misses are queued for its reader now, and when the budget cannot hold
    // all of this layer's experts at once they are computed in turns (each
    // expert's products are the same bits whatever else is in the pass).
    if (st) {
        uint32_t n_want = 0;
        for (uint32_t e = 0; e < n_expert; e++)
            if (cnt[e] && mc_expert_store_manages(st, layer, e)) moe->want[n_want++] = e;
        if (n_want) mc_expert_store_observe(st, layer, moe->want, n_want);
    }
    mc_matmul_op_t *ops = moe->ops;
    uint32_t r0 = 0, e_next = 0;
    size_t f32_at = 0, blk_at = 0;
    while (e_next < n_expert) {
        // Gather each expert's rows, experts in id order, into one block each.
        uint32_t n_ops = 0, n_pinned = 0, e;
        const uint32_t turn_r0 = r0;
        for (e = e_next; e < n_expert; e++) {
            if (!cnt[e]) continue;
            const mc_expert_t *ex = &m->layers[layer].experts[e];
            if (st && mc_expert_store_manages(st, layer, e)) {
                mc_expert_t *view = &moe->views[n_ops / 2];
                mc_err_t rc = mc_expert_store_acquire(st, layer, e, view, err);
                if (rc == MC_ERR_BUSY && n_ops) break; // the pool is full of this turn: compute it first
                if (rc) {
                    s_release(moe, st, layer, n_pinned);
                    return rc;
                }
                moe->pinned[n_pinned++] = e;
                ex = view;
            }
            uint32_t *idx = moe->idx + r0;
            uint32_t c = 0;
            for (uint32_t t = 0; t < n; t++)
                for (uint32_t j = 0; j < k; j++)
                    if (experts[(size_t)t * k + j] == (int32_t)e) idx[c++] = t * k + j;
            const mc_kernel_t *kg = mc_matmul_kernel(mm, ex->gate.type), *ku = mc_matmul_kernel(mm, ex->up.type);
            const bool dg = kg->act_type == x->type, du = ku->act_type == x->type;
            float *xe = NULL;
            if (!dg || !du) {
                xe = moe->xg + f32_at * dim;
                for (uint32_t r = 0; r < c; r++)
                    memcpy(xe + (size_t)r * dim, xf + (size_t)(idx[r] / k) * dim, dim * sizeof(float));
                f32_at += c;
            }
            const void *bg = NULL, *bu = NULL;
            if (dg) {
                s_gather_blocks(kg, x, idx, c, k, dim, moe->xq + blk_at);
                bg = moe->xq + blk_at;
                blk_at += c * mc_kernel_act_bytes(kg, dim);
            }
            if (du && ku == kg) bu = bg;
            else if (du) {
                s_gather_blocks(ku, x, idx, c, k, dim, moe->xq + blk_at);
                bu = moe->xq + blk_at;
                blk_at += c * mc_kernel_act_bytes(ku, dim);
            }
            moe->eid[n_ops / 2] = e;
            moe->sel[n_ops / 2] = ex;
            ops[n_ops++] = (mc_matmul_op_t){&ex->gate, xe, c, moe->g + (size_t)r0 * ffn, bg};
            ops[n_ops++] = (mc_matmul_op_t){&ex->up, xe, c, moe->u + (size_t)r0 * ffn, bu};
            r0 += c;
        }
        e_next = e;
        // Two passes over the pool for all experts: gate and up, then down.
        mc_err_t rc = mc_matmul_many(mm, ops, n_ops);
        if (rc) {
            s_release(moe, st, layer, n_pinned);
            return mc_err_set(err, rc, "layer %u: expert gate/up products failed", layer);
        }
        const mc_layer_t *L = &m->layers[layer];
        if (L->exp_b_gate) // GPT-OSS: each expert's gate and up biases, then its clamped SwiGLU
            for (uint32_t i = 0; i < n_ops / 2; i++) {
                const float *bg = L->exp_b_gate + (size_t)moe->eid[i] * ffn, *bu = L->exp_b_up + (size_t)moe->eid[i] * ffn;
                for (uint32_t r = 0; r < ops[2 * i].n_tok; r++)
                    for (uint32_t f = 0; f < ffn; f++)
                        ops[2 * i].y[(size_t)r * ffn + f] += bg[f], ops[2 * i + 1].y[(size_t)r * ffn + f] += bu[f];
            }
        s_swiglu_run(mm, moe->g + (size_t)turn_r0 * ffn, moe->u + (size_t)turn_r0 * ffn, (size_t)(r0 - turn_r0) * ffn,
                     m->hp.arch->act);
        // Reuse ops for the down products: step i writes ops[i] after reading
        // ops[2i], and no later step reads an index below its own.
        for (uint32_t i = 0; i < n_ops / 2; i++) {
            const mc_matmul_op_t *gate = &ops[2 * i];
            size_t first = (size_t)(gate->y - moe->g) / ffn;
            ops[i] = (mc_matmul_op_t){&moe->sel[i]->down, moe->g + first * ffn, gate->n_tok, moe->d + first * dim, NULL};
        }
        rc = mc_matmul_many(mm, ops, n_ops / 2);
        s_release(moe, st, layer, n_pinned);
        if (rc) return mc_err_set(err, rc, "layer %u: expert down products failed", layer);
        for (uint32_t i = 0; L->exp_b_down && i < n_ops / 2; i++) { // and its down bias, before the weight
            const float *bd = L->exp_b_down + (size_t)moe->eid[i] * dim;
            for (uint32_t r = 0; r < ops[i].n_tok; r++)
                for (uint32_t d = 0; d < dim; d++) ops[i].y[(size_t)r * dim + d] += bd[d];
        }
    }
    // at[s]: the down product row of choice s (its gathered row).
    for (size_t r = 0; r < rows; r++) moe->at[moe->idx[r]] = (uint32_t)r;
    s_sum_t sum = {moe->d, moe->at, experts, weights, k, dim, n, out};
    if ((size_t)n * k * dim < MC_MOE_SERIAL) s_sum_task(&sum, 0, 1);
    else mc_pool_run(mc_matmul_pool(mm), s_sum_task, &sum);
    return MC_OK;
}

// out = down(silu(gate x) * up x) for n rows, one dense SwiGLU FFN of
// width ffn (a shared expert, a dense layer's FFN); with gate_w (1, dim),
// each row's result is scaled by sigmoid(gate_w . x); added to out when add.
static mc_err_t s_ffn(mc_moe_t *moe, const mc_expert_t *f, const mc_matrix_t *gate_w, uint32_t dim, uint32_t ffn,
                      uint32_t layer, const float *x, uint32_t n, float *out, bool add, char *err) {
    if (!s_grow(&moe->g, &moe->cap_g, (size_t)n * ffn * sizeof(float) + 1) ||
        !s_grow(&moe->u, &moe->cap_u, (size_t)n * ffn * sizeof(float) + 1) ||
        !s_grow(&moe->d, &moe->cap_d, (size_t)n * dim * sizeof(float) + 1) ||
        !s_grow(&moe->sg, &moe->cap_sg, (size_t)n * sizeof(float) + 1))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    const mc_matmul_op_t ops[3] = {{&f->gate, x, n, moe->g, NULL}, {&f->up, x, n, moe->u, NULL}, {gate_w, x, n, moe->sg, NULL}};
    mc_err_t rc = mc_matmul_many(moe->mm, ops, gate_w ? 3 : 2);
    if (rc) return mc_err_set(err, rc, "layer %u: FFN gate/up products failed", layer);
    s_swiglu_run(moe->mm, moe->g, moe->u, (size_t)n * ffn, MC_ACT_SWIGLU); // SwiGLU, as the routed experts
    if ((rc = mc_matmul_f32(moe->mm, &f->down, moe->g, n, add ? moe->d : out)))
        return mc_err_set(err, rc, "layer %u: FFN down product failed", layer);
    if (!add) return MC_OK;
    for (uint32_t t = 0; t < n; t++) {
        float *o = out + (size_t)t * dim;
        const float *d = moe->d + (size_t)t * dim;
        if (gate_w) {
            const float gate = 1.0f / (1.0f + expf(-moe->sg[t]));
            for (uint32_t i = 0; i < dim; i++) o[i] += d[i] * gate;
        } else {
            for (uint32_t i = 0; i < dim; i++) o[i] += d[i];
        }
    }
    return MC_OK;
}

mc_err_t mc_moe_shared(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n, float *out,
                       char *err) {
    if (layer >= m->hp.n_layer) return mc_err_set(err, MC_ERR_RANGE, "layer %u out of range", layer);
    const mc_layer_t *L = &m->layers[layer];
    if (!L->shexp.gate.data || (m->hp.arch->shexp_gated && !L->shexp_gate.data))
        return mc_err_set(err, MC_ERR_ARG, "layer %u has no shared expert", layer);
    return s_ffn(moe, &L->shexp, L->shexp_gate.data ? &L->shexp_gate : NULL, m->hp.dim, m->hp.ffn_shexp, layer, x, n,
                 out, true, err);
}

mc_err_t mc_moe_dense(mc_moe_t *moe, const mc_model_t *m, uint32_t layer, const float *x, uint32_t n, float *out,
                      char *err) {
    if (layer >= m->hp.n_layer) return mc_err_set(err, MC_ERR_RANGE, "layer %u out of range", layer);
    const mc_layer_t *L = &m->layers[layer];
    if (!L->dense.gate.data) return mc_err_set(err, MC_ERR_ARG, "layer %u is not a dense layer", layer);
    return s_ffn(moe, &L->dense, NULL, m->hp.dim, m->hp.ffn_dense, layer, x, n, out, false, err);
}

// --- routing --------------------------------------------------------------------------

// In-place softmax of n values as ggml's: max subtracted, exponentials
// summed in double, scaled by the reciprocal.
static void s_softmax(float *v, uint32_t n) {
    float max = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (v[i] > max) max = v[i];
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        v[i] = expf(v[i] - max);
        sum += (double)v[i];
    }
    const float inv = (float)(1.0 / sum);
    for (uint32_t i = 0; i < n; i++) v[i] *= inv;
}

// Indices of the k largest of v[0..n) not masked (mask NULL: none), best
// first, ties to the lower index.
static void s_top_k(const float *v, const bool *mask, uint32_t n, uint32_t k, int32_t *out) {
    for (uint32_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (uint32_t x = 0; x < n; x++) {
            if (mask && mask[x]) continue;
            bool taken = false;
            for (uint32_t q = 0; q < j; q++) taken |= out[q] == (int32_t)x;
            if (!taken && (best < 0 || v[x] > v[best])) best = (int32_t)x;
        }
        out[j] = best;
    }
}

mc_err_t mc_moe_route(const mc_route_t *r, const float *logits, const float *bias, uint32_t n, uint32_t n_expert,
                      uint32_t k, int32_t *sel, float *w, char *err) {
    if (n_expert == 0 || n_expert > MC_MOE_MAX_EXPERTS || k == 0 || k > n_expert)
        return mc_err_set(err, MC_ERR_ARG, "routing %u of %u experts", k, n_expert);
    const bool grouped = r->n_group > 1;
    if (grouped && (n_expert % r->n_group || n_expert / r->n_group < 2 || r->n_group_used == 0 ||
                    r->n_group_used >= r->n_group || r->n_group_used * (n_expert / r->n_group) < k))
        return mc_err_set(err, MC_ERR_ARG, "%u groups (%u used) do not fit %u experts, %u chosen", r->n_group,
                          r->n_group_used, n_expert, k);
    if (r->gating != MC_GATING_SOFTMAX && r->gating != MC_GATING_SIGMOID && r->gating != MC_GATING_SOFTMAX_WEIGHT)
        return mc_err_set(err, MC_ERR_ARG, "gating function %d unknown", (int)r->gating);
    float p[MC_MOE_MAX_EXPERTS], s[MC_MOE_MAX_EXPERTS], gs[MC_MOE_MAX_EXPERTS];
    bool mask[MC_MOE_MAX_EXPERTS];
    int32_t best[MC_MOE_MAX_EXPERTS];
    for (uint32_t t = 0; t < n; t++) {
        const float *lt = logits + (size_t)t * n_expert;
        int32_t *st = sel + (size_t)t * k;
        float *wt = w + (size_t)t * k;
        // Scores: the weights come from them; the choice from them plus the bias.
        memcpy(p, lt, n_expert * sizeof(float));
        if (r->gating == MC_GATING_SOFTMAX) s_softmax(p, n_expert);
        else if (r->gating == MC_GATING_SIGMOID)
            for (uint32_t x = 0; x < n_expert; x++) p[x] = 1.0f / (1.0f + expf(-p[x]));
        for (uint32_t x = 0; x < n_expert; x++) s[x] = bias ? p[x] + bias[x] : p[x];
        const bool *mk = NULL;
        if (grouped) {
            // A group's score: the sum of its two best selection scores;
            // the experts of the groups not kept cannot be chosen.
            const uint32_t per = n_expert / r->n_group;
            for (uint32_t gi = 0; gi < r->n_group; gi++) {
                s_top_k(s + (size_t)gi * per, NULL, per, 2, best);
                gs[gi] = (float)((double)s[gi * per + (uint32_t)best[0]] + (double)s[gi * per + (uint32_t)best[1]]);
            }
            s_top_k(gs, NULL, r->n_group, r->n_group_used, best);
            for (uint32_t x = 0; x < n_expert; x++) mask[x] = true;
            for (uint32_t j = 0; j < r->n_group_used; j++)
                for (uint32_t x = 0; x < per; x++) mask[(uint32_t)best[j] * per + x] = false;
            mk = mask;
        }
        s_top_k(s, mk, n_expert, k, st);
        for (uint32_t j = 0; j < k; j++) wt[j] = p[st[j]];
        if (r->gating == MC_GATING_SOFTMAX_WEIGHT) s_softmax(wt, k);
        if (r->norm_topk) {
            double sum = 0.0;
            for (uint32_t j = 0; j < k; j++) sum += (double)wt[j];
            // ggml clamps the sum to the smallest normal f16 before dividing.
            const float fsum = (float)sum < 6.103515625e-5f ? 6.103515625e-5f : (float)sum;
            for (uint32_t j = 0; j < k; j++) wt[j] /= fsum;
        }
        if (r->scale != 1.0f)
            for (uint32_t j = 0; j < k; j++) wt[j] *= r->scale;
    }
    return MC_OK;
}
