/*
 * test_sampler: greedy and seeded sampling, each filter of the pipeline, the
 * repetition penalty window, parameter validation and NaN/inf logits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

// Plain softmax sampling: temperature 1, no top-k/top-p/min-p, no penalty.
static mc_sampler_params_t s_plain(uint64_t seed) {
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static mc_sampler_t *s_new(const mc_sampler_params_t *p, uint32_t n_vocab) {
    mc_sampler_t *s = mc_sampler_new(p, n_vocab);
    assert_non_null(s);
    return s;
}

// Counts of each id over `draws` samples of the same logits.
static void s_histogram(mc_sampler_t *s, const float *logits, uint32_t n_vocab, int draws, int *count) {
    memset(count, 0, n_vocab * sizeof *count);
    for (int i = 0; i < draws; i++) {
        int32_t id = mc_sampler_sample(s, logits);
        assert_true(id >= 0 && (uint32_t)id < n_vocab);
        count[id]++;
    }
}

static void test_defaults(void **state) {
    (void)state;
    mc_sampler_params_t p = mc_sampler_params_default();
    assert_true(p.temp == 0.8f);
    assert_int_equal(p.top_k, 40);
    assert_true(p.top_p == 0.95f);
    assert_true(p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, 64);
    assert_int_equal(p.seed, 0x5eed);
}

static void test_greedy(void **state) {
    (void)state;
    const float logits[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY};
    float copy[6];
    memcpy(copy, logits, sizeof copy);
    for (uint64_t seed = 0; seed < 5; seed++) {
        mc_sampler_params_t p = mc_sampler_params_default();
        p.temp = seed % 2 ? 0.0f : -1.0f;
        p.seed = seed * 7919;
        mc_sampler_t *s = s_new(&p, 6);
        for (int i = 0; i < 10; i++) assert_int_equal(mc_sampler_sample(s, logits), 1);
        mc_sampler_destroy(&s);
    }
    assert_memory_equal(logits, copy, sizeof copy); // input left untouched
}

static void test_seed_reproducible(void **state) {
    (void)state;
    enum { NV = 100, DRAWS = 200 };
    float logits[NV];
    for (int i = 0; i < NV; i++) logits[i] = sinf((float)i) * 2.0f;
    int32_t a[DRAWS], b[DRAWS], c[DRAWS];
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 1.5f;
    p.top_k = 0;
    p.seed = 1234;
    mc_sampler_t *s = s_new(&p, NV);
    for (int i = 0; i < DRAWS; i++) a[i] = mc_sampler_sample(s, logits);
    mc_sampler_destroy(&s);
    mc_sampler_destroy(&s); // safe twice
    s = s_new(&p, NV);
    for (int i = 0; i < DRAWS; i++) b[i] = mc_sampler_sample(s, logits);
    mc_sampler_destroy(&s);
    p.seed = 1235;
    s = s_new(&p, NV);
    for (int i = 0; i < DRAWS; i++) c[i] = mc_sampler_sample(s, logits);
    mc_sampler_destroy(&s);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

// With equal logits every weight is exactly 1, so the drawn id is
// floor(u * n) for the generator's u: this pins xoshiro256** seeded by
// splitmix64 and the 53-bit uniform. Expected ids come from an independent
// reference implementation (checked against the published xoshiro256** and
// splitmix64 test vectors); any platform must reproduce them.
static void test_generator_pinned(void **state) {
    (void)state;
    static const int32_t want42[16] = {83, 378, 680, 924, 991, 769, 719, 850,
                                       761, 583, 682, 290, 801, 321, 711, 877};
    static const int32_t want5eed[16] = {934, 882, 846, 974, 685, 527, 305, 422,
                                         775, 733, 174, 674, 540, 310, 608, 247};
    static const float logits[1000]; // all 0
    mc_sampler_params_t p = s_plain(42);
    mc_sampler_t *s = s_new(&p, 1000);
    for (int i = 0; i < 16; i++) assert_int_equal(mc_sampler_sample(s, logits), want42[i]);
    mc_sampler_destroy(&s);
    p.seed = 0x5eed;
    s = s_new(&p, 1000);
    for (int i = 0; i < 16; i++) assert_int_equal(mc_sampler_sample(s, logits), want5eed[i]);
    mc_sampler_destroy(&s);
}

// Close logits, so without a filter every id turns up often.
static const float s_close[5] = {1.0f, 1.2f, 0.9f, 1.1f, 1.15f};

static void test_unfiltered_spreads(void **state) {
    (void)state;
    mc_sampler_params_t p = s_plain(7);
    mc_sampler_t *s = s_new(&p, 5);
    int count[5];
    s_histogram(s, s_close, 5, 500, count);
    for (int i = 0; i < 5; i++) assert_true(count[i] > 50);
    mc_sampler_destroy(&s);
}

static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    const float temps[] = {0.01f, 0.5f, 1.0f, 10.0f, 1000.0f};
    for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
        mc_sampler_params_t p = s_plain(t + 1);
        p.temp = temps[t];
        p.top_k = 1;
        mc_sampler_t *s = s_new(&p, 5);
        for (int i = 0; i < 100; i++) assert_int_equal(mc_sampler_sample(s, s_close), 1);
        mc_sampler_destroy(&s);
    }
}

static void test_top_p_tiny_keeps_top(void **state) {
    (void)state;
    const float tops[] = {1e-6f, 0.0f, -1.0f};
    for (size_t t = 0; t < sizeof tops / sizeof tops[0]; t++) {
        mc_sampler_params_t p = s_plain(3);
        p.temp = 5.0f;
        p.top_p = tops[t];
        mc_sampler_t *s = s_new(&p, 5);
        for (int i = 0; i < 100; i++) assert_int_equal(mc_sampler_sample(s, s_close), 1);
        mc_sampler_destroy(&s);
    }
}

static void test_min_p_one_keeps_top(void **state) {
    (void)state;
    const float mins[] = {1.0f, 2.0f};
    for (size_t t = 0; t < sizeof mins / sizeof mins[0]; t++) {
        mc_sampler_params_t p = s_plain(4);
        p.temp = 5.0f;
        p.min_p = mins[t];
        mc_sampler_t *s = s_new(&p, 5);
        for (int i = 0; i < 100; i++) assert_int_equal(mc_sampler_sample(s, s_close), 1);
        mc_sampler_destroy(&s);
    }
}

static void test_min_p_threshold(void **state) {
    (void)state;
    // Ratios to the best: 1, 0.5, 0.09, 0.2. min_p 0.1 drops only id 2, and
    // at temperature 1 the survivors keep their relative odds.
    const float logits[4] = {logf(1.0f), logf(0.5f), logf(0.09f), logf(0.2f)};
    mc_sampler_params_t p = s_plain(5);
    p.min_p = 0.1f;
    mc_sampler_t *s = s_new(&p, 4);
    int count[4];
    s_histogram(s, logits, 4, 5000, count);
    assert_int_equal(count[2], 0);
    assert_true(count[0] > count[1] && count[1] > count[3] && count[3] > 0);
    mc_sampler_destroy(&s);
}

static void test_temperature_extremes(void **state) {
    (void)state;
    mc_sampler_params_t p = s_plain(6);
    p.temp = 1e-4f; // differences of 0.05 become 500 nats: only the best
    mc_sampler_t *s = s_new(&p, 5);
    for (int i = 0; i < 200; i++) assert_int_equal(mc_sampler_sample(s, s_close), 1);
    mc_sampler_destroy(&s);

    // A very hot sampler flattens widely spread logits to near uniform.
    const float spread[2] = {0.0f, 5.0f};
    p.temp = 1e6f;
    s = s_new(&p, 2);
    int count[2];
    s_histogram(s, spread, 2, 4000, count);
    assert_true(count[0] > 1800 && count[1] > 1800);
    mc_sampler_destroy(&s);

    // Huge logits with a tiny temperature must not overflow into NaN.
    const float huge[3] = {3e38f, -3e38f, 2.9e38f};
    p.temp = 1e-3f;
    s = s_new(&p, 3);
    for (int i = 0; i < 50; i++) assert_int_equal(mc_sampler_sample(s, huge), 0);
    mc_sampler_destroy(&s);
}

static void test_empirical_distribution(void **state) {
    (void)state;
    const float probs[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    float logits[4];
    for (int i = 0; i < 4; i++) logits[i] = logf(probs[i]);
    mc_sampler_params_t p = s_plain(2024);
    mc_sampler_t *s = s_new(&p, 4);
    enum { DRAWS = 20000 };
    int count[4];
    s_histogram(s, logits, 4, DRAWS, count);
    for (int i = 0; i < 4; i++) assert_true(fabs((double)count[i] / DRAWS - probs[i]) <= 0.02);
    mc_sampler_destroy(&s);
}

// Temperature is applied after top-p: top-p judges temperature-1 masses.
// Masses 0.6/0.3/0.1 with top_p 0.85 keep ids 0 and 1 whatever the
// temperature; at temp 0.5 the draw then follows 0.6^2 : 0.3^2 = 0.8 : 0.2.
static void test_temperature_after_top_p(void **state) {
    (void)state;
    const float logits[3] = {logf(0.6f), logf(0.3f), logf(0.1f)};
    mc_sampler_params_t p = s_plain(11);
    p.top_p = 0.85f;
    p.temp = 0.5f;
    mc_sampler_t *s = s_new(&p, 3);
    enum { DRAWS = 10000 };
    int count[3];
    s_histogram(s, logits, 3, DRAWS, count);
    assert_int_equal(count[2], 0);
    assert_true(fabs((double)count[0] / DRAWS - 0.8) <= 0.02);
    mc_sampler_destroy(&s);

    // Hot: still never id 2, now near 0.6^0.1 : 0.3^0.1 ~ 0.517 : 0.483.
    p.temp = 10.0f;
    s = s_new(&p, 3);
    s_histogram(s, logits, 3, DRAWS, count);
    assert_int_equal(count[2], 0);
    assert_true(fabs((double)count[0] / DRAWS - 0.517) <= 0.02);
    mc_sampler_destroy(&s);
}

// A realistic vocabulary: every draw of a hot top-40 sampler must be one of
// the 40 largest logits (heap selection over 32000).
static void test_top_k_large_vocab(void **state) {
    (void)state;
    enum { NV = 32000, K = 40 };
    float *logits = malloc(NV * sizeof *logits);
    float *sorted = malloc(NV * sizeof *sorted);
    assert_non_null(logits);
    assert_non_null(sorted);
    uint32_t x = 12345;
    for (int i = 0; i < NV; i++) {
        x = x * 1664525u + 1013904223u;
        logits[i] = (float)(x >> 8) / (float)(1u << 24) * 20.0f - 10.0f;
    }
    memcpy(sorted, logits, NV * sizeof *sorted);
    // The K-th largest value by a simple partial selection.
    for (int i = 0; i < K; i++) {
        int m = i;
        for (int j = i + 1; j < NV; j++)
            if (sorted[j] > sorted[m]) m = j;
        float t = sorted[i];
        sorted[i] = sorted[m];
        sorted[m] = t;
    }
    float kth = sorted[K - 1];
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 100.0f;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    mc_sampler_t *s = s_new(&p, NV);
    int distinct = 0;
    int *seen = calloc(NV, sizeof *seen);
    assert_non_null(seen);
    for (int i = 0; i < 300; i++) {
        int32_t id = mc_sampler_sample(s, logits);
        assert_true(logits[id] >= kth);
        if (!seen[id]++) distinct++;
    }
    assert_true(distinct > 20); // hot enough to roam the whole top 40
    mc_sampler_destroy(&s);
    free(logits);
    free(sorted);
    free(seen);
}

// Ties at the top-k boundary resolve to the lowest ids.
static void test_top_k_ties(void **state) {
    (void)state;
    static const float logits[64]; // all equal
    mc_sampler_params_t p = s_plain(8);
    p.top_k = 3;
    mc_sampler_t *s = s_new(&p, 64);
    int count[64];
    s_histogram(s, logits, 64, 600, count);
    for (int i = 0; i < 3; i++) assert_true(count[i] > 100);
    for (int i = 3; i < 64; i++) assert_int_equal(count[i], 0);
    mc_sampler_destroy(&s);
}

// top-p without top-k sorts the whole vocabulary: five scattered ids at
// logit 10 hold ~77.5% of the mass, so top_p 0.7 keeps exactly those five.
static void test_top_p_full_sort(void **state) {
    (void)state;
    enum { NV = 32000 };
    float *logits = calloc(NV, sizeof *logits); // rest at 0
    assert_non_null(logits);
    const int32_t hot[5] = {17, 4000, 12345, 20001, 31999};
    for (int i = 0; i < 5; i++) logits[hot[i]] = 10.0f;
    mc_sampler_params_t p = s_plain(9);
    p.top_p = 0.7f;
    mc_sampler_t *s = s_new(&p, NV);
    int hits[5] = {0};
    for (int i = 0; i < 300; i++) {
        int32_t id = mc_sampler_sample(s, logits);
        int k = 0;
        while (k < 5 && hot[k] != id) k++;
        assert_true(k < 5);
        hits[k]++;
    }
    for (int k = 0; k < 5; k++) assert_true(hits[k] > 20);
    mc_sampler_destroy(&s);
    free(logits);
}

// A wide nucleus makes top-p grow its sorted prefix several times. Of 1000
// ids, the 334 multiples of 3 sit at logit 5, each with e^5 times the mass of
// the 666 others: total 334 + 666 e^-5 = 338.49 units, so top_p 0.9 needs
// 304.64 -> 305 hot tokens; ties go to the lowest ids: 0, 3, ..., 912.
static void test_top_p_wide_nucleus(void **state) {
    (void)state;
    enum { NV = 1000, DRAWS = 2000 };
    float *logits = calloc(NV, sizeof *logits);
    assert_non_null(logits);
    for (int i = 0; i < NV; i += 3) logits[i] = 5.0f;
    mc_sampler_params_t p = s_plain(12);
    p.top_p = 0.9f;
    mc_sampler_t *s = s_new(&p, NV);
    int32_t max_id = 0;
    for (int i = 0; i < DRAWS; i++) {
        int32_t id = mc_sampler_sample(s, logits);
        assert_int_equal(id % 3, 0);
        assert_true(id <= 912);
        if (id > max_id) max_id = id;
    }
    assert_true(max_id > 768); // beyond the first 256 survivors
    assert_true(max_id >= 900); // and up to the end of the nucleus
    mc_sampler_destroy(&s);
    free(logits);
}

static void test_repeat_penalty(void **state) {
    (void)state;
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 4;

    // Positive logit: 3 -> 1.5, below id 1's 2.
    const float pos[3] = {3.0f, 2.0f, -5.0f};
    mc_sampler_t *s = s_new(&p, 3);
    assert_int_equal(mc_sampler_sample(s, pos), 0);
    mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, pos), 1);
    mc_sampler_destroy(&s);

    // Negative logit: -1 -> -2, below id 1's -1.5.
    const float neg[2] = {-1.0f, -1.5f};
    s = s_new(&p, 2);
    assert_int_equal(mc_sampler_sample(s, neg), 0);
    mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, neg), 1);
    mc_sampler_destroy(&s);

    // Applied once per distinct id: 3 -> 1.5 (not 0.75) still beats 1.
    const float once[2] = {3.0f, 1.0f};
    s = s_new(&p, 2);
    for (int i = 0; i < 4; i++) mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, once), 0);
    mc_sampler_destroy(&s);

    // repeat_penalty 1 is off.
    p.repeat_penalty = 1.0f;
    s = s_new(&p, 3);
    mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, pos), 0);
    mc_sampler_destroy(&s);
}

// OpenAI's penalties: count x frequency + presence, once per distinct id.
static void test_frequency_presence(void **state) {
    (void)state;
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 0.0f;
    p.repeat_last_n = 8;
    const float l[3] = {3.0f, 1.9f, 1.5f};
    // id 0 seen 3 times: 3 - 3 * 0.4 = 1.8 < 1.9.
    p.frequency_penalty = 0.4f;
    mc_sampler_t *s = s_new(&p, 3);
    for (int i = 0; i < 3; i++) mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, l), 1);
    mc_sampler_destroy(&s);
    // Seen twice: 3 - 0.8 = 2.2 > 1.9.
    s = s_new(&p, 3);
    for (int i = 0; i < 2; i++) mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, l), 0);
    mc_sampler_destroy(&s);
    // Presence: once, however often: 3 - 1.2 = 1.8 < 1.9 after one or five.
    p.frequency_penalty = 0.0f, p.presence_penalty = 1.2f;
    for (int k = 1; k <= 5; k += 4) {
        s = s_new(&p, 3);
        for (int i = 0; i < k; i++) mc_sampler_accept(s, 0);
        assert_int_equal(mc_sampler_sample(s, l), 1);
        mc_sampler_destroy(&s);
    }
    // Negative values reward repetition; non-finite ones are refused.
    p.presence_penalty = -2.0f;
    s = s_new(&p, 3);
    mc_sampler_accept(s, 2);
    assert_int_equal(mc_sampler_sample(s, l), 2);
    mc_sampler_destroy(&s);
    p.presence_penalty = NAN;
    assert_null(mc_sampler_new(&p, 3));
}

static void test_repeat_window(void **state) {
    (void)state;
    mc_sampler_params_t p = mc_sampler_params_default();
    p.temp = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    const float logits[3] = {3.0f, 2.0f, -5.0f};
    mc_sampler_t *s = s_new(&p, 3);
    mc_sampler_accept(s, 0);
    mc_sampler_accept(s, 2);
    assert_int_equal(mc_sampler_sample(s, logits), 1); // 0 still in window
    mc_sampler_accept(s, -1);                           // ignored
    mc_sampler_accept(s, 3);                            // ignored (>= n_vocab)
    assert_int_equal(mc_sampler_sample(s, logits), 1);
    mc_sampler_accept(s, 2); // evicts 0
    assert_int_equal(mc_sampler_sample(s, logits), 0);
    for (int i = 0; i < 10; i++) mc_sampler_accept(s, i % 2); // ring wraps
    assert_int_equal(mc_sampler_sample(s, logits), 0);        // 1.5 vs 1.0
    mc_sampler_destroy(&s);

    // Window 0: nothing is remembered.
    p.repeat_last_n = 0;
    s = s_new(&p, 3);
    mc_sampler_accept(s, 0);
    assert_int_equal(mc_sampler_sample(s, logits), 0);
    mc_sampler_destroy(&s);
}

static void test_bad_params(void **state) {
    (void)state;
    const mc_sampler_params_t ok = mc_sampler_params_default();
    assert_null(mc_sampler_new(NULL, 10));
    assert_null(mc_sampler_new(&ok, 0));
    assert_null(mc_sampler_new(&ok, (uint32_t)INT32_MAX + 1u));
    mc_sampler_params_t p = ok;
    p.temp = NAN;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.top_p = NAN;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.min_p = NAN;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.repeat_penalty = NAN;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.repeat_penalty = 0.0f;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.repeat_penalty = INFINITY;
    assert_null(mc_sampler_new(&p, 10));
    p = ok;
    p.repeat_last_n = -1;
    assert_null(mc_sampler_new(&p, 10));

    mc_sampler_t *s = mc_sampler_new(&ok, 10);
    assert_non_null(s);
    mc_sampler_destroy(&s);
    assert_null(s);
    mc_sampler_destroy(NULL);
}

static void test_nan_and_inf_logits(void **state) {
    (void)state;
    const float some_nan[4] = {NAN, 0.0f, NAN, 0.0f};
    const float all_bad[3] = {NAN, -INFINITY, NAN};
    const float with_inf[3] = {0.0f, INFINITY, 5.0f};
    for (int greedy = 0; greedy < 2; greedy++) {
        mc_sampler_params_t p = s_plain(10);
        if (greedy) p.temp = 0.0f;
        mc_sampler_t *s = s_new(&p, 4);
        int count[4];
        s_histogram(s, some_nan, 4, 200, count);
        assert_int_equal(count[0] + count[2], 0);
        if (greedy) assert_int_equal(count[1], 200); // tie -> lowest id
        else assert_true(count[1] > 50 && count[3] > 50);
        mc_sampler_destroy(&s);

        s = s_new(&p, 3);
        for (int i = 0; i < 20; i++) {
            assert_int_equal(mc_sampler_sample(s, all_bad), 0);
            assert_int_equal(mc_sampler_sample(s, with_inf), 1);
        }
        mc_sampler_destroy(&s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_generator_pinned),
        cmocka_unit_test(test_unfiltered_spreads),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_top_p_tiny_keeps_top),
        cmocka_unit_test(test_min_p_one_keeps_top),
        cmocka_unit_test(test_min_p_threshold),
        cmocka_unit_test(test_temperature_extremes),
        cmocka_unit_test(test_empirical_distribution),
        cmocka_unit_test(test_temperature_after_top_p),
        cmocka_unit_test(test_top_k_large_vocab),
        cmocka_unit_test(test_top_k_ties),
        cmocka_unit_test(test_top_p_full_sort),
        cmocka_unit_test(test_top_p_wide_nucleus),
        cmocka_unit_test(test_repeat_penalty),
        cmocka_unit_test(test_frequency_presence),
        cmocka_unit_test(test_repeat_window),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_nan_and_inf_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
