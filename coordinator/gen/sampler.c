/*
 * sampler: repetition penalty, top-k, top-p, min-p, temperature and a seeded
 * draw over one logits row, in llama.cpp's default order.
 *
 * Every buffer is sized in mc_sampler_new(), so sampling never allocates.
 * The draw is meant to be reproducible across platforms: the generator is
 * xoshiro256** seeded through splitmix64 (pure integer arithmetic), and the
 * exponentials come from s_exp() below, built on basic IEEE double operations
 * only, so the chosen ids do not depend on the platform's libm. (Bit-exact
 * results also need the compiler not to fuse a*b+c into an FMA: on targets
 * with FMA, build with -ffp-contract=off.)
 *
 * Robustness: NaN logits count as -inf and +inf as FLT_MAX. When every logit
 * is -inf/NaN there is nothing to choose between and id 0 (the lowest id, what
 * the greedy argmax gives too) is returned.
 */
#include "sampler.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

typedef struct {
    float logit;
    int32_t id;
} s_cand_t;

struct mc_sampler {
    mc_sampler_params_t p;
    uint32_t n_vocab;
    mc_rng_t rng;
    float *logit;     // [n_vocab] sanitised, penalised copy of the row
    s_cand_t *cand;   // [n_vocab] candidates still in the running, in place
    double *w;        // [n_vocab] unnormalised probabilities of cand[]
    uint32_t *seen;   // [n_vocab] epoch stamps: apply the penalty once per id
    uint32_t *count;  // [n_vocab] occurrences in the window (valid where seen is current)
    uint32_t epoch;
    int32_t *hist;    // [repeat_last_n] ring of accepted ids (NULL when 0)
    int32_t hist_len; // valid entries, <= repeat_last_n
    int32_t hist_pos; // next slot to write
};

mc_sampler_params_t mc_sampler_params_default(void) {
    // A fixed seed keeps runs reproducible; choosing a random one is the
    // CLI's decision, not the library's.
    return (mc_sampler_params_t){
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0x5eed,
    };
}

// exp(x) for x <= 0 from +, - and * only, all exactly rounded by IEEE 754,
// so every platform gets the same bits (libm exp may differ in the last ulp
// between implementations, which could flip a draw).
// x = k*ln2 + r with |r| <= ln2/2: adding and subtracting 1.5*2^52 rounds to
// the nearest integer, and ln2 is split in two (the high part has trailing
// zero bits) so k*ln2_hi is exact. exp(r) is a degree-12 Taylor polynomial
// (relative error below 1e-15) and 2^k is assembled in the exponent field.
// Results under 2^-1021 become 0: every weight here is relative to the best
// token's exp(0) = 1, next to which they have no mass anyway.
static double s_exp(double x) {
    assert(x <= 0.0);
    if (x < -708.0) return 0.0;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double k = (x * 1.44269504088896338700 + 0x1.8p52) - 0x1.8p52;
    double r = (x - k * ln2_hi) - k * ln2_lo;
    static const double inv_fact[] = {1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                      1.0 / 40320.0,    1.0 / 5040.0,    1.0 / 720.0,
                                      1.0 / 120.0,      1.0 / 24.0,      1.0 / 6.0,
                                      0.5,              1.0,             1.0};
    double p = 1.0 / 479001600.0;
    for (size_t i = 0; i < sizeof inv_fact / sizeof inv_fact[0]; i++) p = p * r + inv_fact[i];
    uint64_t bits = (uint64_t)((int64_t)k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

mc_sampler_t *mc_sampler_new(const mc_sampler_params_t *p, uint32_t n_vocab) {
    if (!p || n_vocab == 0 || n_vocab > (uint32_t)INT32_MAX) return NULL;
    if (isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p)) return NULL;
    // 0 or inf would turn a zero logit into NaN (0 * inf) or divide by zero.
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f) return NULL;
    if (!isfinite(p->frequency_penalty) || !isfinite(p->presence_penalty)) return NULL;
    if (p->repeat_last_n < 0) return NULL;

    mc_sampler_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->logit = calloc(n_vocab, sizeof *s->logit);
    s->cand = calloc(n_vocab, sizeof *s->cand);
    s->w = calloc(n_vocab, sizeof *s->w);
    s->seen = calloc(n_vocab, sizeof *s->seen);
    s->count = calloc(n_vocab, sizeof *s->count);
    if (p->repeat_last_n > 0) s->hist = calloc((size_t)p->repeat_last_n, sizeof *s->hist);
    if (!s->logit || !s->cand || !s->w || !s->seen || !s->count || (p->repeat_last_n > 0 && !s->hist)) {
        mc_sampler_destroy(&s);
        return NULL;
    }
    mc_rng_seed(&s->rng, p->seed);
    return s;
}

void mc_sampler_destroy(mc_sampler_t **s) {
    if (!s || !*s) return;
    free((*s)->logit);
    free((*s)->cand);
    free((*s)->w);
    free((*s)->seen);
    free((*s)->count);
    free((*s)->hist);
    free(*s);
    *s = NULL;
}

void mc_sampler_accept(mc_sampler_t *s, int32_t id) {
    assert(s);
    if (id < 0 || (uint32_t)id >= s->n_vocab || s->p.repeat_last_n == 0) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_len < s->p.repeat_last_n) s->hist_len++;
}

// As in llama.cpp: each distinct id in the window is penalised once: the
// repetition penalty divides a positive logit and multiplies the others (so
// a penalty above 1 always makes the token less likely), then the OpenAI
// penalties subtract count * frequency + presence, count being its
// occurrences in the window.
static void s_penalize(mc_sampler_t *s) {
    const float pen = s->p.repeat_penalty, fp = s->p.frequency_penalty, pp = s->p.presence_penalty;
    if ((pen == 1.0f && fp == 0.0f && pp == 0.0f) || s->hist_len == 0) return;
    if (++s->epoch == 0) { // stamps wrapped: forget them all
        memset(s->seen, 0, (size_t)s->n_vocab * sizeof *s->seen);
        s->epoch = 1;
    }
    for (int32_t j = 0; j < s->hist_len; j++) {
        int32_t id = s->hist[j];
        if (s->seen[id] != s->epoch) s->seen[id] = s->epoch, s->count[id] = 0;
        s->count[id]++;
    }
    for (int32_t j = 0; j < s->hist_len; j++) {
        int32_t id = s->hist[j];
        if (!s->count[id]) continue; // done already
        float *l = &s->logit[id];
        if (pen != 1.0f) *l = *l > 0.0f ? *l / pen : *l * pen;
        if (fp != 0.0f || pp != 0.0f) *l = *l - ((float)s->count[id] * fp + pp);
        s->count[id] = 0;
    }
}

// A strict total order (logit, then lower id first) so selections and sorts
// give the same result whatever algorithm or platform runs them.
static bool s_worse(const s_cand_t *a, const s_cand_t *b) {
    return a->logit < b->logit || (a->logit == b->logit && a->id > b->id);
}

static void s_swap(s_cand_t *a, s_cand_t *b) {
    s_cand_t t = *a;
    *a = *b;
    *b = t;
}

// Min-heap on s_worse: the root is the worst candidate kept so far.
static void s_sift_down(s_cand_t *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && s_worse(&h[l], &h[m])) m = l;
        if (r < n && s_worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        s_swap(&h[i], &h[m]);
        i = m;
    }
}

// Move the k best of c[0..n) to c[0..k), best first, in O(n log k): a small
// top-k never pays for sorting the whole vocabulary. c stays a permutation of
// its input (evicted candidates are swapped out, not overwritten), so it can
// be called again with a larger k.
static void s_select_top(s_cand_t *c, size_t n, size_t k) {
    assert(k >= 1 && k <= n);
    for (size_t i = k / 2; i-- > 0;) s_sift_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (s_worse(&c[0], &c[i])) {
            s_swap(&c[0], &c[i]);
            s_sift_down(c, k, 0);
        }
    }
    // Heap sort: popping the worst to the back leaves the best in front.
    for (size_t end = k - 1; end > 0; end--) {
        s_swap(&c[0], &c[end]);
        s_sift_down(c, end, 0);
    }
}

static float s_max_logit(const s_cand_t *c, size_t n) {
    float max = c[0].logit;
    for (size_t i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    return max;
}

// Keep the smallest best-first prefix whose probability mass reaches top_p
// (at least one token). Unsorted input is sorted only as far as needed: the
// prefix grows by doubling, so a peaked distribution (the usual case) never
// pays for sorting the whole vocabulary.
static size_t s_top_p(s_cand_t *c, size_t n, bool sorted, double top_p) {
    const float max = s_max_logit(c, n);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += s_exp((double)c[i].logit - max);
    const double goal = top_p * sum;
    for (size_t k = sorted || n < 64 ? n : 64;; k = k > n / 2 ? n : 2 * k) {
        if (!sorted) s_select_top(c, n, k);
        double cum = 0.0;
        for (size_t i = 0; i < k; i++) {
            cum += s_exp((double)c[i].logit - max);
            if (cum >= goal) return i + 1;
        }
        if (k == n) return n; // rounding left the mass just short of top_p
    }
}

// Keep tokens with p >= min_p * p_max, i.e. exp(logit - max) >= min_p; the
// best token always stays, even for min_p > 1. Order is preserved.
static size_t s_min_p(s_cand_t *c, size_t n, double min_p) {
    const float max = s_max_logit(c, n);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit == max || s_exp((double)c[i].logit - max) >= min_p) c[kept++] = c[i];
    return kept;
}

// Draw from softmax(logit / temp) over c[0..n) with u in [0, 1), using w[n]
// as scratch. Shifting by the max before dividing is softmax-invariant and
// keeps huge logits and tiny temperatures from overflowing to inf.
static int32_t s_draw(const s_cand_t *c, size_t n, double temp, double u, double *w) {
    const float max = s_max_logit(c, n);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += w[i] = s_exp(((double)c[i].logit - max) / temp);
    double target = u * sum, cum = 0.0;
    int32_t last = c[0].id;
    for (size_t i = 0; i < n; i++) {
        if (w[i] <= 0.0) continue;
        cum += w[i];
        last = c[i].id;
        if (target < cum) return last;
    }
    return last; // u * sum rounded up to sum: the last token with mass
}

int32_t mc_sampler_sample(mc_sampler_t *s, const float *logits) {
    assert(s && logits);
    const size_t nv = s->n_vocab;
    float *l = s->logit;
    for (size_t i = 0; i < nv; i++) l[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    s_penalize(s);

    if (!(s->p.temp > 0.0f)) {
        size_t best = 0;
        for (size_t i = 1; i < nv; i++)
            if (l[i] > l[best]) best = i;
        return (int32_t)best;
    }

    // Exactly one draw per non-greedy call, whatever the filters leave, so
    // the stream position depends only on the number of calls.
    double u = mc_rng_uniform(&s->rng);

    // Tokens at -inf have no mass; leaving them out keeps the softmax free of
    // inf - inf. +inf becomes FLT_MAX so such tokens share all the mass.
    s_cand_t *c = s->cand;
    size_t n = 0;
    for (size_t i = 0; i < nv; i++)
        if (l[i] > -INFINITY) c[n++] = (s_cand_t){l[i] > FLT_MAX ? FLT_MAX : l[i], (int32_t)i};
    if (n == 0) return 0;

    // llama.cpp's default chain is top_k -> top_p -> min_p -> temp -> dist,
    // where top_p and min_p take their own softmax of the current logits.
    // Temperature therefore comes last: top-p and min-p judge candidates by
    // their temperature-1 probabilities, and temperature only reshapes the
    // draw among the survivors (a hot sampler cannot revive pruned tails).
    bool sorted = false;
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) {
        s_select_top(c, n, (size_t)s->p.top_k);
        n = (size_t)s->p.top_k;
        sorted = true;
    }
    if (s->p.top_p < 1.0f) n = s_top_p(c, n, sorted, s->p.top_p);
    if (s->p.min_p > 0.0f) n = s_min_p(c, n, s->p.min_p);
    return s_draw(c, n, s->p.temp, u, s->w);
}
