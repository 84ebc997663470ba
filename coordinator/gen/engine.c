/*
 * engine: embedding, attention with RoPE and a KV cache, routing, the expert
 * step and the output head, for batches of tokens.
 *
 * Float operations follow llama.cpp's CPU graph where it matters for
 * matching its numbers: rmsnorm sums squares in double, softmax sums
 * exponentials in double and scales by the reciprocal, RoPE angles advance
 * by repeated multiplication with base^(-2/rope_dim) (YaRN scaled as ggml's
 * rope_yarn does).
 *
 * Multi-head latent attention (DeepSeek-V2, arch.h) caches per position
 * only the normed latent c (kv_lora_rank) and the rotated shared key part
 * k_pe (rope_dim), one row every head reads, and works as llama.cpp's
 * deepseek2 graph does with split attn_k_b / attn_v_b: each head's query
 * no-RoPE part is multiplied by its k_b into latent space (absorbed), so a
 * score is one dot of [q_abs, q_pe] with the cached [c, k_pe]; the softmax
 * mixes the cached latents, and the head's v_b turns the mix into its
 * value. The key and value heads are never expanded.
 */
#include "engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"
#include "moe.h"
#include "pool.h"

struct mc_engine {
    const mc_model_t *m;
    mc_engine_params_t p;
    mc_pool_t *pool;
    mc_matmul_t *mm;
    mc_experts_t *local;   // every expert computed here (owned)
    mc_experts_t *experts; // the expert step in use: local, or one set (borrowed)
    mc_moe_t *shared;      // shared experts and dense layers' FFNs, always computed here (owned; NULL: none)
    struct {
        mc_engine_route_fn fn;
        void *ctx;
    } observers[MC_ENGINE_MAX_OBSERVERS]; // of the router's choices, [0]: the expert counts
    uint32_t n_observers;
    mc_engine_layer_fn layer_hook; // NULL: none
    void *layer_ctx;
    uint64_t rows_done; // rows evaluated before the current chunk
    mc_attn_fns_t attn;     // q.k dots and the value mix: same bits on every ISA

    uint8_t *k_cache; // (n_seq, n_layer, n_ctx, k_row) of kv_type
    uint8_t *v_cache; // (n_seq, n_layer, n_ctx, v_row) of kv_type; NULL for MLA
    // Attention geometry: cached values per position and layer (MLA: k_row
    // = kv_lora_rank + rope_dim, the latent read as values too, v_row 0),
    // and per head the query-key dot length and the attended value length.
    size_t k_row, v_row;
    uint32_t qk_len, v_len;
    size_t kv_elem;   // bytes per cached value: 4 (f32) or 2 (f16)
    mc_act_fn to_f16; // f32 -> fp16 with mc_fp32_to_fp16's bits (this ISA's)

    // Scratch for one chunk of up to max_batch rows.
    float *x;        // (B, dim) residual stream
    float *xn;       // (B, dim) normed input of a sub-layer
    float *q;        // (B, q_dim)
    float *k;        // (B, kv_dim)
    float *v;        // (B, kv_dim)
    float *att;      // (B, q_dim) attention output
    float *o;        // (B, dim) projection / expert output
    float *rl;       // (B, n_expert) router logits
    int32_t *sel;    // (B, k) chosen experts
    float *selw;     // (B, k) their weights
    float *scores;   // (n_threads, n_ctx) attention scores per thread
    // MLA only (NULL otherwise):
    float *qa;              // (B, q_lora_rank) compressed queries (NULL without)
    float *qm;              // (B, n_head, kv_lora_rank + rope_dim) absorbed queries
    float *lat;             // (B, n_head, kv_lora_rank) attended latents
    float *hin, *hout;      // (n_head, B, widest) per-head gathered inputs and products
    mc_matmul_op_t *hops;   // (n_head) per-head products

    float *router_keep; // (n_layer, keep_rows, n_expert) when keep_router
    uint32_t keep_rows, keep_cap;
    // (n_layer, n_expert); read by other threads (mc_engine_expert_counts)
    _Atomic uint64_t *expert_counts;
};

static void s_count_route(void *ctx, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos, const int32_t *sel,
                          uint32_t k);

mc_engine_params_t mc_engine_params_default(void) {
    return (mc_engine_params_t){
        .n_threads = 1, .n_ctx = 4096, .n_seq = 1, .max_batch = 256, .isa = MC_ISA_BEST, .kv_type = MC_DTYPE_F32};
}

mc_engine_t *mc_engine_new(const mc_model_t *m, const mc_engine_params_t *p, char *err) {
    const mc_hparams_t *hp = &m->hp;
    if (p->n_threads < 1 || p->n_threads > 512) {
        mc_err_set(err, MC_ERR_ARG, "thread count %d out of range (1..512)", p->n_threads);
        return NULL;
    }
    if (p->n_ctx == 0 || p->n_ctx > hp->n_ctx_train) {
        mc_err_set(err, MC_ERR_RANGE, "context length %u out of range (1..%u, the model's context length)", p->n_ctx,
                   hp->n_ctx_train);
        return NULL;
    }
    if (p->max_batch == 0) {
        mc_err_set(err, MC_ERR_ARG, "max_batch must be at least 1");
        return NULL;
    }
    if (p->n_seq == 0 || p->n_seq > 4096) {
        mc_err_set(err, MC_ERR_ARG, "sequence count %u out of range (1..4096)", p->n_seq);
        return NULL;
    }
    if (p->kv_type != MC_DTYPE_F32 && p->kv_type != MC_DTYPE_F16) {
        mc_err_set(err, MC_ERR_ARG, "KV cache type %s not supported (f32, f16)", mc_dtype_name(p->kv_type));
        return NULL;
    }
    mc_engine_t *e = calloc(1, sizeof *e);
    if (!e) goto nomem;
    e->m = m;
    e->p = *p;
    e->p.isa = p->isa == MC_ISA_BEST ? mc_kernel_best_isa() : p->isa;
    const bool mla = hp->arch->mla;
    size_t B = e->p.max_batch, dim = hp->dim, qd = (size_t)hp->n_head * hp->head_dim,
           kvd = (size_t)hp->n_head_kv * hp->head_dim, vd = (size_t)hp->n_head * hp->head_dim_v;
    e->k_row = mla ? (size_t)hp->kv_lora_rank + hp->rope_dim : kvd;
    e->v_row = mla ? 0 : kvd;
    e->qk_len = mla ? hp->kv_lora_rank + hp->rope_dim : hp->head_dim;
    e->v_len = mla ? hp->kv_lora_rank : hp->head_dim;
    const size_t cells = (size_t)p->n_seq * hp->n_layer * e->p.n_ctx;
    e->attn = mc_kernel_attn(e->p.isa);
    e->kv_elem = p->kv_type == MC_DTYPE_F16 ? 2 : 4;
    e->to_f16 = mc_kernel_get(MC_DTYPE_F16, e->p.isa)->act;
    e->pool = mc_pool_new(p->n_threads);
    if (!e->pool) goto nomem;
    e->mm = mc_matmul_new(e->pool, e->p.isa);
    e->experts = e->local = e->mm ? mc_experts_local_new(m, e->mm, NULL) : NULL;
    if ((hp->ffn_shexp || hp->ffn_dense) && e->mm && !(e->shared = mc_moe_new(e->mm))) goto nomem;
    e->k_cache = calloc(cells * e->k_row, e->kv_elem);
    e->v_cache = mla ? NULL : calloc(cells * e->v_row, e->kv_elem);
    e->x = malloc(B * dim * sizeof(float));
    e->xn = malloc(B * (dim > qd ? dim : qd) * sizeof(float));
    e->q = malloc(B * qd * sizeof(float));
    e->k = malloc(B * (mla ? e->k_row : kvd) * sizeof(float));
    e->v = malloc(B * kvd * sizeof(float));
    e->att = malloc(B * (qd > vd ? qd : vd) * sizeof(float));
    e->o = malloc(B * dim * sizeof(float));
    e->rl = malloc(B * hp->n_expert * sizeof(float));
    e->sel = malloc(B * hp->n_expert_used * sizeof(int32_t));
    e->selw = malloc(B * hp->n_expert_used * sizeof(float));
    e->scores = malloc((size_t)p->n_threads * e->p.n_ctx * sizeof(float));
    e->expert_counts = calloc((size_t)hp->n_layer * hp->n_expert, sizeof *e->expert_counts);
    if (!e->local || !e->k_cache || (!mla && !e->v_cache) || !e->x || !e->xn || !e->q || !e->k || !e->v || !e->att ||
        !e->o || !e->rl || !e->sel || !e->selw || !e->scores || !e->expert_counts)
        goto nomem;
    if (mla) {
        const size_t H = hp->n_head, r = hp->kv_lora_rank, nope = hp->head_dim - hp->rope_dim;
        size_t widest = r > nope ? r : nope;
        if (hp->head_dim_v > widest) widest = hp->head_dim_v;
        e->qm = malloc(B * H * e->k_row * sizeof(float));
        e->lat = malloc(B * H * r * sizeof(float));
        e->hin = malloc(H * B * widest * sizeof(float));
        e->hout = malloc(H * B * widest * sizeof(float));
        e->hops = malloc(H * sizeof *e->hops);
        if (hp->q_lora_rank && !(e->qa = malloc(B * hp->q_lora_rank * sizeof(float)))) goto nomem;
        if (!e->qm || !e->lat || !e->hin || !e->hout || !e->hops) goto nomem;
    }
    mc_engine_route_subscribe(e, s_count_route, e);
    return e;
nomem:
    mc_err_set(err, MC_ERR_NOMEM, "out of memory allocating the engine (KV cache of %u sequences x %u positions)",
               p->n_seq, p->n_ctx);
    mc_engine_destroy(&e);
    return NULL;
}

void mc_engine_destroy(mc_engine_t **pe) {
    if (!pe || !*pe) return;
    mc_engine_t *e = *pe;
    mc_experts_destroy(&e->local);
    mc_moe_destroy(&e->shared);
    mc_matmul_destroy(&e->mm);
    mc_pool_destroy(&e->pool);
    free(e->k_cache), free(e->v_cache), free(e->x), free(e->xn), free(e->q), free(e->k), free(e->v);
    free(e->att), free(e->o), free(e->rl), free(e->sel), free(e->selw), free(e->scores);
    free(e->qa), free(e->qm), free(e->lat), free(e->hin), free(e->hout), free(e->hops);
    free(e->router_keep), free(e->expert_counts);
    free(e);
    *pe = NULL;
}

void mc_engine_set_experts(mc_engine_t *e, mc_experts_t *x) { e->experts = x ? x : e->local; }

mc_experts_t *mc_engine_experts(mc_engine_t *e) { return e->experts; }

void mc_engine_set_layer_hook(mc_engine_t *e, mc_engine_layer_fn fn, void *ctx) {
    e->layer_hook = fn;
    e->layer_ctx = ctx;
}

mc_err_t mc_engine_route_subscribe(mc_engine_t *e, mc_engine_route_fn fn, void *ctx) {
    if (e->n_observers == MC_ENGINE_MAX_OBSERVERS)
        return mc_err_set(NULL, MC_ERR_RANGE, "at most %d router observers", MC_ENGINE_MAX_OBSERVERS);
    e->observers[e->n_observers].fn = fn;
    e->observers[e->n_observers++].ctx = ctx;
    return MC_OK;
}

// The first observer: rows per (layer, expert), read by other threads.
static void s_count_route(void *ctx, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos, const int32_t *sel,
                          uint32_t k) {
    (void)row, (void)seq, (void)pos;
    mc_engine_t *e = ctx;
    const uint32_t ne = e->m->hp.n_expert;
    for (uint32_t j = 0; j < k; j++)
        if (sel[j] >= 0)
            atomic_fetch_add_explicit(&e->expert_counts[(size_t)layer * ne + (uint32_t)sel[j]], 1, memory_order_relaxed);
}

static uint8_t *s_cache(const mc_engine_t *e, uint8_t *cache, size_t row, uint32_t s, uint32_t l);

mc_dtype_t mc_engine_kv_type(const mc_engine_t *e) { return e->p.kv_type; }

mc_err_t mc_engine_kv_type_parse(const char *s, mc_dtype_t *out) {
    if (strcmp(s, "f32") == 0) *out = MC_DTYPE_F32;
    else if (strcmp(s, "f16") == 0) *out = MC_DTYPE_F16;
    else return mc_err_set(NULL, MC_ERR_ARG, "KV cache type '%s' (f32, f16)", s);
    return MC_OK;
}

const char *mc_engine_kv_type_name(mc_dtype_t t) {
    return t == MC_DTYPE_F16 ? "f16" : t == MC_DTYPE_F32 ? "f32" : "?";
}

size_t mc_engine_kv_bytes(const mc_engine_t *e, uint32_t n) {
    return (size_t)e->m->hp.n_layer * n * (e->k_row + e->v_row) * e->kv_elem;
}

static mc_err_t s_kv_check(const mc_engine_t *e, uint32_t seq, uint32_t n, char *err) {
    if (seq >= e->p.n_seq) return mc_err_set(err, MC_ERR_RANGE, "sequence %u out of range (0..%u)", seq, e->p.n_seq - 1);
    if (n > e->p.n_ctx) return mc_err_set(err, MC_ERR_RANGE, "%u positions, the cache holds %u", n, e->p.n_ctx);
    return MC_OK;
}

mc_err_t mc_engine_kv_copy(mc_engine_t *e, uint32_t src, uint32_t dst, uint32_t n, char *err) {
    mc_err_t rc;
    if ((rc = s_kv_check(e, src, n, err)) || (rc = s_kv_check(e, dst, n, err))) return rc;
    if (src == dst) return mc_err_set(err, MC_ERR_RANGE, "a sequence's cache copied onto itself");
    const size_t kb = e->k_row * e->kv_elem, vb = e->v_row * e->kv_elem;
    for (uint32_t l = 0; l < e->m->hp.n_layer; l++) {
        memcpy(s_cache(e, e->k_cache, e->k_row, dst, l), s_cache(e, e->k_cache, e->k_row, src, l), n * kb);
        if (vb) memcpy(s_cache(e, e->v_cache, e->v_row, dst, l), s_cache(e, e->v_cache, e->v_row, src, l), n * vb);
    }
    return MC_OK;
}

// Layer by layer, keys then values (MLA: the latent rows only): the order
// mc_engine_kv_load reads.
mc_err_t mc_engine_kv_save(const mc_engine_t *e, uint32_t seq, uint32_t n, void *buf, char *err) {
    mc_err_t rc = s_kv_check(e, seq, n, err);
    if (rc) return rc;
    const size_t kb = (size_t)n * e->k_row * e->kv_elem, vb = (size_t)n * e->v_row * e->kv_elem;
    char *o = buf;
    for (uint32_t l = 0; l < e->m->hp.n_layer; l++) {
        memcpy(o, s_cache(e, e->k_cache, e->k_row, seq, l), kb), o += kb;
        if (vb) memcpy(o, s_cache(e, e->v_cache, e->v_row, seq, l), vb), o += vb;
    }
    return MC_OK;
}

mc_err_t mc_engine_kv_load(mc_engine_t *e, uint32_t seq, uint32_t n, const void *buf, uint32_t n_saved, char *err) {
    mc_err_t rc = s_kv_check(e, seq, n, err);
    if (rc) return rc;
    if (n > n_saved) return mc_err_set(err, MC_ERR_RANGE, "%u positions asked of %u saved", n, n_saved);
    const size_t kb = e->k_row * e->kv_elem, vb = e->v_row * e->kv_elem;
    const char *in = buf;
    for (uint32_t l = 0; l < e->m->hp.n_layer; l++) {
        memcpy(s_cache(e, e->k_cache, e->k_row, seq, l), in, n * kb), in += n_saved * kb;
        if (vb) memcpy(s_cache(e, e->v_cache, e->v_row, seq, l), in, n * vb), in += n_saved * vb;
    }
    return MC_OK;
}

uint32_t mc_engine_n_ctx(const mc_engine_t *e) { return e->p.n_ctx; }
uint32_t mc_engine_n_seq(const mc_engine_t *e) { return e->p.n_seq; }
uint32_t mc_engine_max_batch(const mc_engine_t *e) { return e->p.max_batch; }
const mc_model_t *mc_engine_model(const mc_engine_t *e) { return e->m; }
mc_matmul_t *mc_engine_matmul(mc_engine_t *e) { return e->mm; }

const float *mc_engine_router_logits(const mc_engine_t *e, uint32_t layer, uint32_t *n_tokens) {
    if (!e->p.keep_router || !e->router_keep || layer >= e->m->hp.n_layer) return NULL;
    *n_tokens = e->keep_rows;
    return e->router_keep + (size_t)layer * e->keep_cap * e->m->hp.n_expert;
}

void mc_engine_expert_counts(const mc_engine_t *e, uint64_t *out) {
    const size_t n = (size_t)e->m->hp.n_layer * e->m->hp.n_expert;
    for (size_t i = 0; i < n; i++) out[i] = atomic_load_explicit(&e->expert_counts[i], memory_order_relaxed);
}

// y = rmsnorm(x) * w for n rows of dim values.
static void s_rmsnorm(float *y, const float *x, const float *w, uint32_t n, uint32_t dim, float eps) {
    for (uint32_t t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * dim;
        float *yt = y + (size_t)t * dim;
        double sum = 0.0;
        for (uint32_t i = 0; i < dim; i++) sum += (double)(xt[i] * xt[i]);
        float mean = (float)(sum / dim);
        float scale = 1.0f / sqrtf(mean + eps);
        for (uint32_t i = 0; i < dim; i++) yt[i] = (xt[i] * scale) * w[i];
    }
}

// y[t] += b for n rows of len values (q/k/v biases).
static void s_add_bias(float *y, const float *b, uint32_t n, uint32_t len) {
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t i = 0; i < len; i++) y[(size_t)t * len + i] += b[i];
}

// In-place softmax of n values; returns nothing, sums in double as ggml does.
// With a sink (GPT-OSS's attention, NULL: none), its logit joins the max
// and the denominator but has no value of its own, as ggml's soft_max with
// sinks computes it: exp(sink - max) added after the values' sum.
static void s_softmax(float *v, uint32_t n, const float *sink) {
    float max = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (v[i] > max) max = v[i];
    if (sink && *sink > max) max = *sink;
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        v[i] = expf(v[i] - max);
        sum += (double)v[i];
    }
    if (sink) sum += (double)expf(*sink - max);
    float inv = (float)(1.0 / sum);
    for (uint32_t i = 0; i < n; i++) v[i] *= inv;
}

// Rotate pairs of the first rope_dim values of each head (heads head_stride
// apart): adjacent pairs (2i, 2i+1) for MC_ROPE_NORM, (i, i + rope_dim/2) for
// MC_ROPE_NEOX; pair i turns by pos * base^(-2i/rope_dim) either way, scaled
// as the file's RoPE scaling says (ggml's rope_yarn; none: unchanged bits).
static void s_rope(float *v, uint32_t n_heads, uint32_t head_stride, uint32_t pos, const mc_hparams_t *hp) {
    const uint32_t rope_dim = hp->rope_dim;
    const float theta_scale = powf(hp->rope_base, -2.0f / (float)rope_dim);
    const bool neox = hp->arch->rope == MC_ROPE_NEOX, yarn = hp->rope_ext_factor != 0.0f;
    const uint32_t stride = neox ? 1 : 2, other = neox ? rope_dim / 2 : 1;
    const float lo = hp->yarn_corr[0], span = hp->yarn_corr[1] - lo > 0.001f ? hp->yarn_corr[1] - lo : 0.001f;
    for (uint32_t h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * head_stride;
        float theta = (float)pos;
        for (uint32_t i = 0; i < rope_dim / 2; i++) {
            float th = hp->rope_freq_scale * theta; // interpolated
            if (yarn) { // blended with the extrapolated angle by the ramp
                const float y = ((float)i - lo) / span;
                const float mix = (1 - (y < 0 ? 0 : y > 1 ? 1 : y)) * hp->rope_ext_factor;
                th = th * (1 - mix) + theta * mix;
            }
            float c = cosf(th) * hp->rope_mscale, s = sinf(th) * hp->rope_mscale;
            float *a = x + i * stride, *b = a + other;
            float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x0 * s + x1 * c;
            theta *= theta_scale;
        }
    }
}

// The family's q/k norms on n rows of q (n_head heads) and k (n_head_kv).
static void s_qk_norm(const mc_hparams_t *hp, const mc_layer_t *L, float *q, float *k, uint32_t n) {
    const uint32_t hd = hp->head_dim;
    if (!L->q_norm) return; // none, or an optional pair the file lacks (GLM-4.5-Air)
    switch (hp->arch->qk_norm) {
    case MC_QKNORM_NONE: break;
    case MC_QKNORM_HEAD: // each head is one row of head_dim
        s_rmsnorm(q, q, L->q_norm, n * hp->n_head, hd, hp->rms_eps);
        s_rmsnorm(k, k, L->k_norm, n * hp->n_head_kv, hd, hp->rms_eps);
        break;
    case MC_QKNORM_FULL:
        s_rmsnorm(q, q, L->q_norm, n, hp->n_head * hd, hp->rms_eps);
        s_rmsnorm(k, k, L->k_norm, n, hp->n_head_kv * hd, hp->rms_eps);
        break;
    }
}

typedef struct {
    mc_engine_t *e;
    uint32_t layer, n;
    const uint32_t *seq, *pos; // (n) of each row
    const float *q;            // (n, n_head, qk_len)
    float *out;                // (n, n_head, v_len)
} s_attn_job_t;

// Keys (or values) of sequence s in layer l: (n_ctx, row) of kv_type.
static uint8_t *s_cache(const mc_engine_t *e, uint8_t *cache, size_t row, uint32_t s, uint32_t l) {
    return cache + ((size_t)s * e->m->hp.n_layer + l) * e->p.n_ctx * row * e->kv_elem;
}

// One row's kv_dim values x into position pos of a sequence's layer cache.
static void s_cache_put(const mc_engine_t *e, uint8_t *layer_cache, uint32_t pos, const float *x, size_t kvd) {
    uint8_t *dst = layer_cache + (size_t)pos * kvd * e->kv_elem;
    if (e->p.kv_type == MC_DTYPE_F16) e->to_f16(x, dst, (int64_t)kvd);
    else memcpy(dst, x, kvd * sizeof(float));
}

// Causal attention for (token, head) pairs dealt round-robin to threads.
static void s_attn_task(void *arg, int ith, int nth) {
    s_attn_job_t *j = arg;
    mc_engine_t *e = j->e;
    const mc_hparams_t *hp = &e->m->hp;
    const uint32_t qk = e->qk_len, vl = e->v_len;
    const uint32_t group = hp->n_head / hp->n_head_kv;
    // MLA's values are the first kv_lora_rank of its cached key rows.
    const size_t ks = e->k_row, vs = e->v_row ? e->v_row : e->k_row;
    const float scale = hp->kq_scale;
    const float *sinks = e->m->layers[j->layer].sinks;
    // A sliding layer sees the n_swa positions up to a row's own (llama.cpp
    // masks the older ones to -inf: their weights are exactly 0).
    const uint32_t window = mc_model_layer_swa(e->m, j->layer) ? hp->n_swa : 0;
    float *sc = e->scores + (size_t)ith * e->p.n_ctx;
    for (uint32_t task = (uint32_t)ith; task < j->n * hp->n_head; task += (uint32_t)nth) {
        uint32_t t = task / hp->n_head, h = task % hp->n_head, kvh = h / group;
        const uint32_t first = window && j->pos[t] + 1 > window ? j->pos[t] + 1 - window : 0;
        const bool f16 = e->p.kv_type == MC_DTYPE_F16;
        const uint8_t *kc = s_cache(e, e->k_cache, ks, j->seq[t], j->layer) + (size_t)first * ks * e->kv_elem;
        const uint8_t *vc =
            e->v_row ? s_cache(e, e->v_cache, vs, j->seq[t], j->layer) + (size_t)first * vs * e->kv_elem : kc;
        uint32_t n_pos = j->pos[t] + 1 - first; // causal: positions first..pos
        const float *q = j->q + ((size_t)t * hp->n_head + h) * qk;
        if (f16) e->attn.scores_f16(qk, q, (const uint16_t *)(const void *)kc + (size_t)kvh * qk, ks, n_pos, sc);
        else e->attn.scores(qk, q, (const float *)(const void *)kc + (size_t)kvh * qk, ks, n_pos, sc);
        for (uint32_t p = 0; p < n_pos; p++) sc[p] = sc[p] * scale;
        s_softmax(sc, n_pos, sinks ? &sinks[h] : NULL);
        float *out = j->out + ((size_t)t * hp->n_head + h) * vl;
        memset(out, 0, vl * sizeof(float));
        if (f16) e->attn.mix_f16(vl, n_pos, sc, (const uint16_t *)(const void *)vc + (size_t)kvh * vl, vs, out);
        else e->attn.mix(vl, n_pos, sc, (const float *)(const void *)vc + (size_t)kvh * vl, vs, out);
    }
}

// Ordinary attention of layer l for rows [0, n) from their normed inputs
// xn into e->att (n, n_head * head_dim). Every row's key and value go to
// the cache before any attention, so a row sees the rows of its sequence
// before it in this chunk.
static mc_err_t s_attn_mha(mc_engine_t *e, uint32_t l, const float *xn, const uint32_t *seq, const uint32_t *pos,
                           uint32_t n, char *err) {
    const mc_hparams_t *hp = &e->m->hp;
    const mc_layer_t *L = &e->m->layers[l];
    const uint32_t qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    const mc_matmul_op_t qkv[] = {
        {&L->wq, xn, n, e->q, NULL}, {&L->wk, xn, n, e->k, NULL}, {&L->wv, xn, n, e->v, NULL}};
    mc_err_t rc = mc_matmul_many(e->mm, qkv, 3);
    if (rc) return mc_err_set(err, rc, "layer %u: attention projection failed", l);
    if (L->bq) s_add_bias(e->q, L->bq, n, qd), s_add_bias(e->k, L->bk, n, kvd), s_add_bias(e->v, L->bv, n, kvd);
    s_qk_norm(hp, L, e->q, e->k, n);
    for (uint32_t t = 0; t < n; t++) {
        s_rope(e->q + (size_t)t * qd, hp->n_head, hp->head_dim, pos[t], hp);
        s_rope(e->k + (size_t)t * kvd, hp->n_head_kv, hp->head_dim, pos[t], hp);
        s_cache_put(e, s_cache(e, e->k_cache, e->k_row, seq[t], l), pos[t], e->k + (size_t)t * kvd, kvd);
        s_cache_put(e, s_cache(e, e->v_cache, e->v_row, seq[t], l), pos[t], e->v + (size_t)t * kvd, kvd);
    }
    s_attn_job_t aj = {e, l, n, seq, pos, e->q, e->att};
    mc_pool_run(e->pool, s_attn_task, &aj);
    return MC_OK;
}

// Multi-head latent attention (see the top): the same contract as
// s_attn_mha, e->att (n, n_head * head_dim_v). Per head, products of all
// rows at once: its rows' parts are gathered into e->hin, one op per head.
static mc_err_t s_attn_mla(mc_engine_t *e, uint32_t l, const float *xn, const uint32_t *seq, const uint32_t *pos,
                           uint32_t n, char *err) {
    const mc_hparams_t *hp = &e->m->hp;
    const mc_layer_t *L = &e->m->layers[l];
    const uint32_t H = hp->n_head, hk = hp->head_dim, rope = hp->rope_dim, nope = hk - rope, r = hp->kv_lora_rank,
                   kr = r + rope, hv = hp->head_dim_v;
    // q (n, H, nope + rope) and [c, k_pe] (n, kr) of every row; a
    // compressed query is normed and expanded first.
    const bool qa = hp->q_lora_rank != 0;
    const mc_matmul_op_t proj[] = {{qa ? &L->wq_a : &L->wq, xn, n, qa ? e->qa : e->q, NULL},
                                   {&L->wkv_a, xn, n, e->k, NULL}};
    mc_err_t rc = mc_matmul_many(e->mm, proj, 2);
    if (!rc && qa) {
        s_rmsnorm(e->qa, e->qa, L->q_a_norm, n, hp->q_lora_rank, hp->rms_eps);
        rc = mc_matmul_f32(e->mm, &L->wq, e->qa, n, e->q);
    }
    if (rc) return mc_err_set(err, rc, "layer %u: attention projection failed", l);
    for (uint32_t t = 0; t < n; t++) {
        float *q = e->q + (size_t)t * H * hk, *k = e->k + (size_t)t * kr;
        s_rmsnorm(k, k, L->kv_a_norm, 1, r, hp->rms_eps);
        s_rope(q + nope, H, hk, pos[t], hp); // each head's last rope values
        s_rope(k + r, 1, kr, pos[t], hp);
        s_cache_put(e, s_cache(e, e->k_cache, e->k_row, seq[t], l), pos[t], k, kr);
        for (uint32_t h = 0; h < H; h++)
            memcpy(e->hin + ((size_t)h * n + t) * nope, q + (size_t)h * hk, nope * sizeof(float));
    }
    // q_abs = k_b q_nope per head; the query is [q_abs, q_pe].
    for (uint32_t h = 0; h < H; h++)
        e->hops[h] = (mc_matmul_op_t){&L->wk_b[h], e->hin + (size_t)h * n * nope, n, e->hout + (size_t)h * n * r, NULL};
    if ((rc = mc_matmul_many(e->mm, e->hops, H))) return mc_err_set(err, rc, "layer %u: query absorption failed", l);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < H; h++) {
            float *qm = e->qm + ((size_t)t * H + h) * kr;
            memcpy(qm, e->hout + ((size_t)h * n + t) * r, r * sizeof(float));
            memcpy(qm + r, e->q + (size_t)t * H * hk + (size_t)h * hk + nope, rope * sizeof(float));
        }
    s_attn_job_t aj = {e, l, n, seq, pos, e->qm, e->lat};
    mc_pool_run(e->pool, s_attn_task, &aj);
    // Each head's value: v_b times its attended latent.
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < H; h++)
            memcpy(e->hin + ((size_t)h * n + t) * r, e->lat + ((size_t)t * H + h) * r, r * sizeof(float));
    for (uint32_t h = 0; h < H; h++)
        e->hops[h] = (mc_matmul_op_t){&L->wv_b[h], e->hin + (size_t)h * n * r, n, e->hout + (size_t)h * n * hv, NULL};
    if ((rc = mc_matmul_many(e->mm, e->hops, H))) return mc_err_set(err, rc, "layer %u: value projection failed", l);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < H; h++)
            memcpy(e->att + ((size_t)t * H + h) * hv, e->hout + ((size_t)h * n + t) * hv, hv * sizeof(float));
    return MC_OK;
}

// A group of a chunk's rows, [off, off + n): the whole chunk, or under
// pipeline one of two halves whose expert steps alternate with the other's
// attention. Its residual stream, normed inputs, sublayer outputs and
// choices live at its rows of e->x, xn, o, sel and selw, so the expert step
// of one group can be out (experts.h: begin) while the other computes; the
// rest of the scratch is used within one sublayer only.
typedef struct {
    uint32_t off, n;
    bool open; // its layer's expert step is begun, not finished
} s_group_t;

// The first half of layer l for group g: attention, then the FFN's normed
// input and either a dense layer's FFN (done) or the router and the expert
// step begun (finished by s_layer_back).
static mc_err_t s_layer_front(mc_engine_t *e, uint32_t l, s_group_t *g, uint32_t gi, const uint32_t *seq,
                              const uint32_t *pos, uint32_t keep_off, char *err) {
    const mc_model_t *m = e->m;
    const mc_hparams_t *hp = &m->hp;
    const mc_layer_t *L = &m->layers[l];
    const uint32_t dim = hp->dim, n = g->n, kk = hp->n_expert_used;
    float *x = e->x + (size_t)g->off * dim, *xn = e->xn + (size_t)g->off * dim, *o = e->o + (size_t)g->off * dim;
    int32_t *sel = e->sel + (size_t)g->off * kk;
    float *selw = e->selw + (size_t)g->off * kk;
    seq += g->off, pos += g->off;
    mc_err_t rc;
    s_rmsnorm(xn, x, L->attn_norm, n, dim, hp->rms_eps);
    rc = hp->arch->mla ? s_attn_mla(e, l, xn, seq, pos, n, err) : s_attn_mha(e, l, xn, seq, pos, n, err);
    if (rc) return rc;
    if ((rc = mc_matmul_f32(e->mm, &L->wo, e->att, n, o)))
        return mc_err_set(err, rc, "layer %u: attention output failed", l);
    if (L->bo) s_add_bias(o, L->bo, n, dim);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += o[i];

    s_rmsnorm(xn, x, L->ffn_norm, n, dim, hp->rms_eps);
    float *keep = e->p.keep_router ? e->router_keep + ((size_t)l * e->keep_cap + keep_off + g->off) * hp->n_expert : NULL;
    if (!mc_model_layer_moe(m, l)) {
        // A dense layer: its FFN here, no router (kept logits are zeros).
        if (keep) memset(keep, 0, (size_t)n * hp->n_expert * sizeof(float));
        if ((rc = mc_moe_dense(e->shared, m, l, xn, n, o, err))) return rc;
        for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += o[i];
        return MC_OK;
    }
    if ((rc = mc_matmul_f32(e->mm, &L->router, xn, n, e->rl)))
        return mc_err_set(err, rc, "layer %u: router failed", l);
    if (L->router_b) s_add_bias(e->rl, L->router_b, n, hp->n_expert);
    if (keep) memcpy(keep, e->rl, (size_t)n * hp->n_expert * sizeof(float));
    if ((rc = mc_moe_route(&hp->route, e->rl, L->exp_probs_b, n, hp->n_expert, kk, sel, selw, err))) return rc;
    for (uint32_t i = 0; i < e->n_observers; i++)
        for (uint32_t t = 0; t < n; t++)
            e->observers[i].fn(e->observers[i].ctx, l, e->rows_done + g->off + t, seq[t], pos[t],
                               sel + (size_t)t * kk, kk);
    if (e->layer_hook) e->layer_hook(e->layer_ctx, l, x, n, sel, kk);
    if ((rc = mc_experts_begin(e->experts, gi, l, xn, n, sel, selw, kk, o, err))) return rc;
    g->open = true;
    return MC_OK;
}

// The second half of layer l for group g: the expert step finished, the
// shared expert (here whoever computed the routed sum) added last.
static mc_err_t s_layer_back(mc_engine_t *e, uint32_t l, s_group_t *g, uint32_t gi, char *err) {
    if (!g->open) return MC_OK; // a dense layer: done in front
    const uint32_t dim = e->m->hp.dim;
    float *x = e->x + (size_t)g->off * dim, *xn = e->xn + (size_t)g->off * dim, *o = e->o + (size_t)g->off * dim;
    g->open = false;
    mc_err_t rc = mc_experts_finish(e->experts, gi, err);
    if (!rc && e->shared) rc = mc_moe_shared(e->shared, e->m, l, xn, g->n, o, err);
    if (rc) return rc;
    for (size_t i = 0; i < (size_t)g->n * dim; i++) x[i] += o[i];
    return MC_OK;
}

// Rows [0, n) of one chunk; logits of the rows whose want is set go to
// logits in row order; router logits are kept at row keep_off onwards.
//
// Pipelined (p.pipeline, an expert step that splits, n >= 2), the chunk is
// two groups, rows [0, h) and [h, n), and per layer
//   A's experts out | B's attention ... ; B's experts out | A's next attention
// so the coordinator computes while the other group is on the wire. Every
// row's arithmetic is its own (the engine's contract), the expert step sums
// a row's choices in choice order whoever computes them, and A's attention
// of a layer always runs before B's: a row still sees the rows of its
// sequence before it, as in one group. The logits are the same bits.
static mc_err_t s_eval_chunk(mc_engine_t *e, const int32_t *ids, const uint32_t *seq, const uint32_t *pos,
                             const uint8_t *want, uint32_t n, float *logits, uint32_t keep_off, char *err) {
    const mc_model_t *m = e->m;
    const mc_hparams_t *hp = &m->hp;
    const uint32_t dim = hp->dim;
    mc_err_t rc;
    for (uint32_t t = 0; t < n; t++)
        if ((rc = mc_model_embed(m, ids[t], e->x + (size_t)t * dim)))
            return mc_err_set(err, rc, "cannot embed token %d", ids[t]);

    s_group_t grp[MC_EXPERTS_GROUPS] = {{0, n, false}};
    uint32_t n_grp = 1;
    if (e->p.pipeline && n >= 2 && mc_experts_splits(e->experts)) {
        const uint32_t h = (n + 1) / 2;
        grp[0].n = h, grp[1] = (s_group_t){h, n - h, false};
        n_grp = 2;
    }
    // Each group one layer apart from the next at most: front(l) of a group
    // follows its back(l - 1), and the groups take turns.
    rc = MC_OK;
    for (uint32_t g = 0; !rc && g < n_grp; g++) rc = s_layer_front(e, 0, &grp[g], g, seq, pos, keep_off, err);
    for (uint32_t l = 0; !rc && l < hp->n_layer; l++)
        for (uint32_t g = 0; !rc && g < n_grp; g++) {
            rc = s_layer_back(e, l, &grp[g], g, err);
            if (!rc && l + 1 < hp->n_layer) rc = s_layer_front(e, l + 1, &grp[g], g, seq, pos, keep_off, err);
        }
    if (rc) { // a group left out is finished (its answers taken or forgotten) for the next pass
        char ignored[MC_ERR_LEN];
        for (uint32_t g = 0; g < n_grp; g++)
            if (grp[g].open) mc_experts_finish(e->experts, g, ignored);
        return rc;
    }

    e->rows_done += n;
    // Only the rows whose logits are wanted go through the (large) head.
    uint32_t n_out = 0;
    for (uint32_t t = 0; want && t < n; t++)
        if (want[t]) memmove(e->x + (size_t)n_out++ * dim, e->x + (size_t)t * dim, dim * sizeof(float));
    if (!n_out) return MC_OK;
    s_rmsnorm(e->xn, e->x, m->output_norm, n_out, dim, hp->rms_eps);
    if ((rc = mc_matmul_f32(e->mm, &m->output, e->xn, n_out, logits)))
        return mc_err_set(err, rc, "output head failed");
    return MC_OK;
}

mc_err_t mc_engine_decode(mc_engine_t *e, const mc_engine_batch_t *b, float *logits, char *err) {
    const mc_hparams_t *hp = &e->m->hp;
    if (b->n == 0) return mc_err_set(err, MC_ERR_ARG, "no tokens to evaluate");
    for (uint32_t t = 0; t < b->n; t++) {
        if (b->ids[t] < 0 || (uint32_t)b->ids[t] >= hp->n_vocab)
            return mc_err_set(err, MC_ERR_RANGE, "token id %d is outside the vocabulary (0..%u)", b->ids[t],
                              hp->n_vocab - 1);
        if (b->seq[t] >= e->p.n_seq)
            return mc_err_set(err, MC_ERR_RANGE, "sequence %u out of range (%u sequences)", b->seq[t], e->p.n_seq);
        if (b->pos[t] >= e->p.n_ctx)
            return mc_err_set(err, MC_ERR_RANGE, "position %u is beyond the context of %u", b->pos[t], e->p.n_ctx);
    }
    if (e->p.keep_router && b->n > e->keep_cap) {
        float *r = realloc(e->router_keep, (size_t)hp->n_layer * b->n * hp->n_expert * sizeof(float));
        if (!r) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        e->router_keep = r;
        e->keep_cap = b->n;
    }
    e->keep_rows = b->n;
    for (uint32_t done = 0; done < b->n;) {
        const uint32_t c = b->n - done < e->p.max_batch ? b->n - done : e->p.max_batch;
        const uint8_t *want = b->want ? b->want + done : NULL;
        mc_err_t rc = s_eval_chunk(e, b->ids + done, b->seq + done, b->pos + done, want, c, logits, done, err);
        if (rc) return rc;
        for (uint32_t t = 0; want && t < c; t++) logits += want[t] ? hp->n_vocab : 0;
        done += c;
    }
    return MC_OK;
}

mc_err_t mc_engine_eval(mc_engine_t *e, const int32_t *ids, uint32_t n, uint32_t pos, mc_logits_t which,
                        float *logits, char *err) {
    if (n == 0) return mc_err_set(err, MC_ERR_ARG, "no tokens to evaluate");
    if ((uint64_t)pos + n > e->p.n_ctx)
        return mc_err_set(err, MC_ERR_RANGE, "%u tokens at position %u exceed the context of %u", n, pos, e->p.n_ctx);
    uint32_t *rows = malloc((size_t)n * 2 * sizeof(uint32_t));
    uint8_t *want = malloc(n);
    if (!rows || !want) {
        free(rows), free(want);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    for (uint32_t t = 0; t < n; t++) {
        rows[t] = 0, rows[n + t] = pos + t;
        want[t] = logits && (which == MC_LOGITS_ALL || (which == MC_LOGITS_LAST && t == n - 1));
    }
    const mc_engine_batch_t b = {ids, rows, rows + n, want, n};
    mc_err_t rc = mc_engine_decode(e, &b, logits, err);
    free(rows), free(want);
    return rc;
}
