/*
 * profile: timing loops over the expert step and the engine's non-expert
 * work, /proc/meminfo, and the YAML of one node.
 */
#include "profile.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "kernel.h"
#include "model.h"
#include "moe.h"
#include "pool.h"

#define S_SAMPLE_S 0.15 // seconds per measurement, at least
static const uint32_t s_rows[] = {1, 2, 4, 8, 16, 32};
#define S_N_ROWS (sizeof s_rows / sizeof s_rows[0])

static uint64_t s_meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            sscanf(line + n + 1, "%llu", &kb);
            break;
        }
    if (f) fclose(f);
    return (uint64_t)kb * 1024;
}

// Milliseconds per call of the expert step: r rows all through one expert,
// a different one each call, cycling through the n_pairs (layer, expert)
// pairs of the same types (the median of three samples). Cycling matters:
// one expert's weights can sit in a core's L2 cache, but a real step reads
// every expert it uses from memory.
static mc_err_t s_expert_ms(mc_moe_t *moe, const mc_model_t *m, const uint32_t (*pairs)[2], size_t n_pairs,
                            uint32_t r, double *ms, char *err) {
    const uint32_t dim = m->hp.dim, k = m->hp.n_expert_used;
    float *x = malloc((size_t)r * dim * sizeof(float)), *out = malloc((size_t)r * dim * sizeof(float));
    int32_t *ex = malloc((size_t)r * k * sizeof(int32_t));
    float *w = malloc((size_t)r * k * sizeof(float));
    if (!x || !out || !ex || !w) {
        free(x), free(out), free(ex), free(w);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < (size_t)r * dim; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1u << 24) - 0.5);
    }
    for (size_t i = 0; i < (size_t)r * k; i++) w[i] = 1.0f;
    double samples[3];
    mc_err_t rc = MC_OK;
    size_t next = 0;
    for (int t = 0; t < 3 && !rc; t++) {
        const double t0 = mc_clock_s();
        int calls = 0;
        do {
            const uint32_t *pe = pairs[next++ % n_pairs];
            for (size_t i = 0; i < (size_t)r * k; i++) ex[i] = i % k ? -1 : (int32_t)pe[1];
            rc = mc_moe_compute(moe, m, pe[0], x, r, ex, w, k, out, err);
            calls++;
        } while (!rc && mc_clock_s() - t0 < S_SAMPLE_S / 3);
        samples[t] = (mc_clock_s() - t0) * 1e3 / calls;
    }
    free(x), free(out), free(ex), free(w);
    if (rc) return rc;
    double a = samples[0], b = samples[1], c = samples[2];
    *ms = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
    return MC_OK;
}

// A whole decode step, as the coordinator runs it: the engine with the
// real expert step, timed apart (a hook around mc_moe_compute), with and
// without the output head. What is not the expert step is the per-layer
// work (norms, attention, router); the expert step is compared with what
// the curves predict for the same rows (`local_scale`): inside a step the
// experts share the caches with attention and the head.
typedef struct {
    mc_moe_t *moe;
    const mc_model_t *m;
    double ms;        // time in the expert step
    double predicted; // what the curves say for the same calls
    const double (*curve_of_layer)[S_N_ROWS]; // (n_layer) the curve of each layer's types
    uint32_t *count;  // (n_expert) scratch
} s_step_ctx_t;

static double s_curve_at(const double *curve, uint32_t r) {
    if (r == 0) return 0;
    if (r <= s_rows[0]) return curve[0] * r / s_rows[0];
    size_t i = 1;
    while (i + 1 < S_N_ROWS && r > s_rows[i]) i++;
    return curve[i - 1] + (curve[i] - curve[i - 1]) * (double)(r - s_rows[i - 1]) / (double)(s_rows[i] - s_rows[i - 1]);
}

static mc_err_t s_timed_moe(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err) {
    s_step_ctx_t *c = ctx;
    const double t0 = mc_clock_s();
    mc_err_t rc = mc_moe_compute(c->moe, c->m, layer, x, n, experts, weights, k, out, err);
    c->ms += (mc_clock_s() - t0) * 1e3;
    memset(c->count, 0, c->m->hp.n_expert * sizeof *c->count);
    for (size_t i = 0; i < (size_t)n * k; i++)
        if (experts[i] >= 0 && (uint32_t)experts[i] < c->m->hp.n_expert) c->count[experts[i]]++;
    for (uint32_t e = 0; e < c->m->hp.n_expert; e++) c->predicted += s_curve_at(c->curve_of_layer[layer], c->count[e]);
    return rc;
}

static mc_err_t s_step_ms(const mc_model_t *m, mc_matmul_t *mm, int threads, uint32_t rows,
                          const double (*curve_of_layer)[S_N_ROWS], double *layer_ms, double *head_ms,
                          double *moe_ms, double *predicted_ms, char *err) {
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = threads, ep.n_ctx = 64, ep.n_seq = rows;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    if (!e) return MC_ERR_NOMEM;
    s_step_ctx_t c = {mc_moe_new(mm), m, 0, 0, curve_of_layer, calloc(m->hp.n_expert, sizeof(uint32_t))};
    mc_engine_set_moe(e, s_timed_moe, &c);
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

mc_err_t mc_profile_run(const char *model_path, const char *name, int threads, FILE *out, char *err) {
    mc_model_t *m = mc_model_open(model_path, err);
    if (!m) return MC_ERR_IO;
    mc_pool_t *pool = mc_pool_new(threads);
    mc_matmul_t *mm = pool ? mc_matmul_new(pool, mc_kernel_best_isa()) : NULL;
    mc_moe_t *moe = mm ? mc_moe_new(mm) : NULL;
    mc_err_t rc = moe ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    // Time the layout a serving process multiplies: nodes and coordinators
    // repack what they hold at load (raw rows would look slower).
    if (!rc) rc = mc_model_repack(m, mm, true, NULL, err);
    const mc_hparams_t *hp = &m->hp;
    char host[128] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = 0;
    if (!rc) {
        fprintf(out,
                "# moe-expert --profile of %s on %s, %d threads, %s kernels\n"
                "- name: %s\n"
                "  memory_mb: %.0f        # available now (MemAvailable): what its experts may take\n"
                "  total_mb: %.0f\n"
                "  threads: %d\n",
                model_path, host, threads, mc_kernel_isa_name(mc_matmul_isa(mm)), name ? name : host,
                s_meminfo("MemAvailable") / 1048576.0, s_meminfo("MemTotal") / 1048576.0, threads);
    }
    // One table per distinct (gate, up, down) type combination, measured on
    // the first layer that has it; later layers of the same kind refer to it.
    uint32_t done[64][3], n_done = 0;
    double curves[64][S_N_ROWS];
    double(*curve_of_layer)[S_N_ROWS] = calloc(hp->n_layer, sizeof *curve_of_layer);
    if (!rc && !curve_of_layer) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) fprintf(out, "  experts:                # one expert's step (gate, up, down), [rows, ms] pairs\n");
    for (uint32_t l = 0; l < hp->n_layer && !rc; l++) {
        const mc_expert_t *ex = &m->layers[l].experts[0];
        const uint32_t t[3] = {ex->gate.type, ex->up.type, ex->down.type};
        uint32_t seen = n_done;
        for (uint32_t i = 0; i < n_done; i++)
            if (!memcmp(done[i], t, sizeof t)) seen = i;
        if (seen < n_done || n_done == 64) {
            if (seen < n_done) memcpy(curve_of_layer[l], curves[seen], sizeof curves[seen]);
            continue;
        }
        memcpy(done[n_done], t, sizeof t);
        const uint64_t bytes = (uint64_t)ex->gate.n_out * ex->gate.row_bytes + (uint64_t)ex->up.n_out * ex->up.row_bytes +
                               (uint64_t)ex->down.n_out * ex->down.row_bytes;
        fprintf(out, "    - types: [%s, %s, %s]\n      bytes: %llu\n      ms: [", mc_dtype_name(t[0]),
                mc_dtype_name(t[1]), mc_dtype_name(t[2]), (unsigned long long)bytes);
        // Every expert of these types, in every layer.
        uint32_t(*pairs)[2] = malloc((size_t)hp->n_layer * hp->n_expert * sizeof *pairs);
        size_t n_pairs = 0;
        if (!pairs) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        for (uint32_t l2 = 0; l2 < hp->n_layer && !rc; l2++)
            for (uint32_t e = 0; e < hp->n_expert; e++) {
                const mc_expert_t *x2 = &m->layers[l2].experts[e];
                if (x2->gate.type == t[0] && x2->up.type == t[1] && x2->down.type == t[2])
                    pairs[n_pairs][0] = l2, pairs[n_pairs][1] = e, n_pairs++;
            }
        for (size_t i = 0; i < S_N_ROWS && !rc; i++) {
            double ms = 0;
            if (!(rc = s_expert_ms(moe, m, (const uint32_t(*)[2])pairs, n_pairs, s_rows[i], &ms, err)))
                fprintf(out, "%s[%u, %.4f]", i ? ", " : "", s_rows[i], ms);
            curves[n_done][i] = ms;
        }
        free(pairs);
        memcpy(curve_of_layer[l], curves[n_done], sizeof curves[n_done]);
        n_done++;
        fprintf(out, "]\n");
    }
    // The coordinator's part, for the machine that will run it, measured in
    // whole decode steps.
    double moe_ms = 0, predicted_ms = 0;
    for (uint32_t rows = 1; rows <= 8 && !rc; rows *= 8) {
        double layer_ms = 0, head_ms = 0, mo = 0, pr = 0;
        if (!(rc = s_step_ms(m, mm, threads, rows, (const double(*)[S_N_ROWS])curve_of_layer, &layer_ms, &head_ms, &mo,
                             &pr, err))) {
            fprintf(out, "  layer_ms_%u: %.4f        # per layer, %u row%s at once: norms, attention, router\n"
                         "  head_ms_%u: %.4f         # the output head for %u row%s\n",
                    rows, layer_ms, rows, rows == 1 ? "" : "s", rows, head_ms, rows, rows == 1 ? "" : "s");
            moe_ms += mo, predicted_ms += pr;
        }
    }
    if (!rc && predicted_ms > 0)
        fprintf(out, "  local_scale: %.3f        # the expert step inside a whole decode step, over the curves\n",
                moe_ms / predicted_ms);
    free(curve_of_layer);
    mc_moe_destroy(&moe);
    mc_matmul_destroy(&mm);
    mc_pool_destroy(&pool);
    mc_model_destroy(&m);
    return rc;
}
