/*
 * logprob: log-softmax of one logits row, the sampled token's value and the
 * n best, in one pass for the maximum, one for the sum and the selection.
 */
#include "logprob.h"

#include <float.h>
#include <math.h>

// The sampler's reading of a logit: NaN is -inf, +inf is FLT_MAX.
static double s_logit(float l) { return isnan(l) ? -INFINITY : l > FLT_MAX ? FLT_MAX : l; }

void mc_logprob_compute(const float *logits, uint32_t n_vocab, int32_t id, uint32_t n_top, mc_logprob_t *out) {
    if (n_top > MC_LOGPROB_MAX_TOP) n_top = MC_LOGPROB_MAX_TOP;
    if (n_top > n_vocab) n_top = n_vocab;
    double max = -INFINITY;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (s_logit(logits[i]) > max) max = s_logit(logits[i]);
    // Every logit -inf: nothing has mass; report them all as ruled out.
    double log_sum = INFINITY;
    if (max > -INFINITY) {
        double sum = 0;
        for (uint32_t i = 0; i < n_vocab; i++) sum += exp(s_logit(logits[i]) - max);
        log_sum = max + log(sum);
    }
    // The n best by insertion into a sorted list: n is at most 20.
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_vocab && n_top; i++) {
        const double l = s_logit(logits[i]);
        if (n == n_top && !(l > out->top[n - 1].logprob)) continue; // ties keep the lower id
        uint32_t at = n < n_top ? n++ : n - 1;
        while (at > 0 && l > out->top[at - 1].logprob) {
            out->top[at] = out->top[at - 1];
            at--;
        }
        out->top[at] = (mc_logprob_entry_t){(int32_t)i, l};
    }
    for (uint32_t k = 0; k < n; k++) out->top[k].logprob -= log_sum;
    out->n_top = n;
    const double lc = id >= 0 && (uint32_t)id < n_vocab ? s_logit(logits[id]) : -INFINITY;
    out->chosen = (mc_logprob_entry_t){id, lc - log_sum};
}
