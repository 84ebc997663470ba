/*
 * layer_profile: whole decode steps of the engine with the expert step timed
 * apart, on top of the machine's profile.
 */
#include "layer_profile.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine.h"
#include "moe.h"
#include "profile.h"

#define S_SAMPLE_S 0.15 // seconds per measurement, at least

// A whole decode step, as the coordinator runs it: the engine with the
// real expert step, timed apart (a hook around mc_moe_compute), with and
// without the output head. What is not the expert step is the per-layer
// work (norms, attention, router); the expert step is compared with what
// the curves predict for the same rows (`local_scale`): inside a step the
// experts share the caches with attention and the head.
typedef struct {
    mc_experts_t base; // an expert step that times the local one
    mc_moe_t *moe;
    const mc_model_t *m;
    double ms;        // time in the expert step
    double predicted; // what the curves say for the same calls
    const double (*curve_of_layer)[MC_PROFILE_N_ROWS]; // (n_layer) the curve of each layer's types
    uint32_t *count;  // (n_expert) scratch
} s_step_ctx_t;

static mc_err_t s_timed_moe(mc_experts_t *x_, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err) {
    s_step_ctx_t *c = (s_step_ctx_t *)x_;
    const double t0 = mc_clock_s();
    mc_err_t rc = mc_moe_compute(c->moe, c->m, layer, x, n, experts, weights, k, out, err);
    c->ms += (mc_clock_s() - t0) * 1e3;
    memset(c->count, 0, c->m->hp.n_expert * sizeof *c->count);
    for (size_t i = 0; i < (size_t)n * k; i++)
        if (experts[i] >= 0 && (uint32_t)experts[i] < c->m->hp.n_expert) c->count[experts[i]]++;
    for (uint32_t e = 0; e < c->m->hp.n_expert; e++) c->predicted += mc_profile_curve_at(c->curve_of_layer[layer], c->count[e]);
    return rc;
}

static mc_err_t s_step_ms(const mc_model_t *m, mc_matmul_t *mm, int threads, uint32_t rows,
                          const double (*curve_of_layer)[MC_PROFILE_N_ROWS], double *layer_ms, double *head_ms,
                          double *moe_ms, double *predicted_ms, char *err) {
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = threads, ep.n_ctx = 64, ep.n_seq = rows;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    if (!e) return mc_err_code(err, MC_ERR_NOMEM);
    static const mc_experts_ops_t ops = {.compute = s_timed_moe};
    s_step_ctx_t c = {{&ops}, mc_moe_new(mm), m, 0, 0, curve_of_layer, calloc(m->hp.n_expert, sizeof(uint32_t))};
    mc_engine_set_experts(e, &c.base);
    int32_t ids[64];
    uint32_t seq[64], pos[64];
    uint8_t want[64];
    float *logits = malloc((size_t)rows * m->hp.n_vocab * sizeof(float));
    mc_err_t rc = logits && c.moe && c.count ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    double t_with = 0, t_without = 0, moe_with = 0, moe_without = 0, pred = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) { // with the head, then without
        c.ms = 0, c.predicted = 0;
        const double t0 = mc_clock_s();
        int calls = 0;
        do {
            for (uint32_t i = 0; i < rows; i++)
                ids[i] = (int32_t)(3 + (calls * 7 + i * 131) % (m->hp.n_vocab - 3)), seq[i] = i,
                pos[i] = (uint32_t)calls % 32, want[i] = pass == 0;
            const mc_engine_batch_t b = {ids, seq, pos, want, rows};
            rc = mc_engine_decode(e, &b, logits, err);
            calls++;
        } while (!rc && mc_clock_s() - t0 < 2 * S_SAMPLE_S);
        const double t = (mc_clock_s() - t0) * 1e3 / calls;
        if (pass == 0) t_with = t, moe_with = c.ms / calls, pred = c.predicted / calls;
        else t_without = t, moe_without = c.ms / calls;
    }
    free(logits);
    free(c.count);
    mc_moe_destroy(&c.moe);
    mc_engine_destroy(&e);
    if (rc) return rc;
    const double rest = t_without - moe_without;
    *layer_ms = rest > 0 ? rest / m->hp.n_layer : 0;
    const double head = (t_with - moe_with) - rest;
    *head_ms = head > 0 ? head : 0;
    *moe_ms = moe_with;
    *predicted_ms = pred;
    return MC_OK;
}

// The coordinator's part, for the machine that will run it, measured in
// whole decode steps: 1 and 8 rows at once.
static mc_err_t s_more(void *ctx, const mc_model_t *m, mc_matmul_t *mm, const mc_profile_curve_t *curve_of_layer,
                       FILE *out, char *err) {
    const int threads = *(const int *)ctx;
    double moe_ms = 0, predicted_ms = 0;
    mc_err_t rc = MC_OK;
    for (uint32_t rows = 1; rows <= 8 && !rc; rows *= 8) {
        double layer_ms = 0, head_ms = 0, mo = 0, pr = 0;
        if (!(rc = s_step_ms(m, mm, threads, rows, curve_of_layer, &layer_ms, &head_ms, &mo, &pr, err))) {
            fprintf(out, "  layer_ms_%u: %.4f        # per layer, %u row%s at once: norms, attention, router\n"
                         "  head_ms_%u: %.4f         # the output head for %u row%s\n",
                    rows, layer_ms, rows, rows == 1 ? "" : "s", rows, head_ms, rows, rows == 1 ? "" : "s");
            moe_ms += mo, predicted_ms += pr;
        }
    }
    if (!rc && predicted_ms > 0)
        fprintf(out, "  local_scale: %.3f        # the expert step inside a whole decode step, over the curves\n",
                moe_ms / predicted_ms);
    return rc;
}

mc_err_t mc_layer_profile_run(const char *model_path, const char *name, int threads, FILE *out, char *err) {
    const mc_profile_params_t p = {.model = model_path, .name = name, .threads = threads,
                                   .program = "moe-coordinator", .more = s_more, .more_ctx = &threads};
    return mc_profile_run(&p, out, err);
}
