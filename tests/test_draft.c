/*
 * test_draft: prompt-lookup drafts. The draft after a repeated passage is
 * what followed it; the longest n-gram and its latest occurrence win; on
 * random histories of small alphabets the index agrees with a brute-force
 * search at every length (through many table growths); K adapts to what
 * was kept and a miss backs off; the history's cap and bad parameters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <string.h>

#include "draft.h"
#include "rng.h"

static mc_draft_t *s_new(uint32_t cap) {
    char err[MC_ERR_LEN];
    mc_draft_params_t p = mc_draft_params_default();
    mc_draft_t *d = mc_draft_new(&p, cap, err);
    assert_non_null(d);
    return d;
}

static void test_repeat(void **state) {
    (void)state;
    mc_draft_t *d = s_new(64);
    const int32_t h[] = {10, 11, 12, 13, 14, 15, 10, 11};
    int32_t out[8];
    mc_draft_push(d, h, 6);
    assert_int_equal(mc_draft_propose(d, out, 8), 0); // nothing seen twice
    mc_draft_push(d, h + 6, 2);
    assert_int_equal(mc_draft_propose(d, out, 8), 4); // K starts at 4
    const int32_t want[] = {12, 13, 14, 15};
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(mc_draft_propose(d, out, 2), 2); // the caller's limit
    mc_draft_destroy(&d);
    mc_draft_destroy(&d);
}

// "1 2" last occurred before 200, "5 1 2" before 100: the longer n-gram
// wins when it ends the history, else the latest occurrence.
static void test_longest_and_latest(void **state) {
    (void)state;
    mc_draft_t *d = s_new(64);
    const int32_t h[] = {5, 1, 2, 100, 9, 1, 2, 200, 9, 9, 5, 1, 2};
    int32_t out[8];
    mc_draft_push(d, h, 10);
    const int32_t tail2[] = {1, 2};
    mc_draft_push(d, tail2, 2); // ... 9 9 1 2: "9 1 2" was followed by 200
    assert_true(mc_draft_propose(d, out, 1) == 1 && out[0] == 200);
    mc_draft_destroy(&d);
    d = s_new(64);
    mc_draft_push(d, h, 13); // ... 5 1 2: "5 1 2" matches the start, before 100
    assert_true(mc_draft_propose(d, out, 1) == 1 && out[0] == 100);
    mc_draft_destroy(&d);
}

// The reference: for g = n_max..n_min, the latest end e < len-1 of the
// last g tokens; the draft is what follows it, the history continued as
// if it repeated from e+1 (a loop drafts K tokens, not only its period).
static uint32_t s_brute(const int32_t *h, uint32_t len, uint32_t k, int32_t *out) {
    const mc_draft_params_t p = mc_draft_params_default();
    for (uint32_t g = p.n_max; g >= p.n_min; g--) {
        if (len < g + 1) continue;
        for (int64_t e = (int64_t)len - 2; e + 1 >= (int64_t)g; e--) {
            if (memcmp(h + e + 1 - g, h + len - g, g * sizeof *h)) continue;
            // The stream the match predicts: h, then the draft itself.
            int32_t s[4096 + 64];
            memcpy(s, h, len * sizeof *h);
            for (uint32_t n = 0; n < k; n++) s[len + n] = s[e + 1 + n];
            memcpy(out, s + len, k * sizeof *out);
            return k;
        }
    }
    return 0;
}

static void test_matches_brute_force(void **state) {
    (void)state;
    mc_rng_t rng;
    mc_rng_seed(&rng, 7);
    enum { LEN = 3000 };
    static int32_t h[LEN];
    for (int alphabet = 2; alphabet <= 64; alphabet *= 4) {
        mc_draft_t *d = s_new(LEN);
        for (uint32_t len = 0; len < LEN; len++) {
            h[len] = (int32_t)(mc_rng_next(&rng) % (uint64_t)alphabet);
            mc_draft_push(d, &h[len], 1);
            int32_t a[8], b[8];
            const uint32_t na = mc_draft_propose(d, a, 8), nb = s_brute(h, len + 1, 4, b);
            assert_int_equal(na, nb);
            assert_memory_equal(a, b, na * sizeof *a);
        }
        mc_draft_destroy(&d);
    }
}

// A loop shorter than K: "7 8 9" repeating drafts K tokens of the loop,
// not the one token the history holds after the latest "8 9".
static void test_short_loop(void **state) {
    (void)state;
    mc_draft_t *d = s_new(64);
    const int32_t h[] = {1, 7, 8, 9, 7, 8, 9};
    int32_t out[8];
    mc_draft_push(d, h, 7);
    assert_int_equal(mc_draft_propose(d, out, 8), 4);
    const int32_t want[] = {7, 8, 9, 7};
    assert_memory_equal(out, want, sizeof want);
    mc_draft_feedback(d, 4, 4);
    assert_int_equal(mc_draft_propose(d, out, 8), 8);
    const int32_t want8[] = {7, 8, 9, 7, 8, 9, 7, 8};
    assert_memory_equal(out, want8, sizeof want8);
    mc_draft_destroy(&d);
}

static void test_adaptive_k(void **state) {
    (void)state;
    mc_draft_t *d = s_new(256);
    int32_t h[64], out[64];
    for (int i = 0; i < 64; i++) h[i] = i % 16; // a period of 16: drafts of up to 15+
    mc_draft_push(d, h, 40);
    assert_int_equal(mc_draft_propose(d, out, 64), 4);
    mc_draft_feedback(d, 4, 4);
    assert_int_equal(mc_draft_propose(d, out, 64), 8); // taken whole: doubled
    mc_draft_feedback(d, 8, 8);
    assert_int_equal(mc_draft_propose(d, out, 64), 8); // k_max
    mc_draft_feedback(d, 8, 2);
    assert_int_equal(mc_draft_propose(d, out, 64), 3); // 2 kept: 3 next
    mc_draft_feedback(d, 3, 0); // a miss: one step off, then two
    assert_int_equal(mc_draft_propose(d, out, 64), 0);
    assert_int_equal(mc_draft_propose(d, out, 64), 1);
    mc_draft_feedback(d, 1, 0);
    assert_int_equal(mc_draft_propose(d, out, 64), 0);
    assert_int_equal(mc_draft_propose(d, out, 64), 0);
    assert_int_equal(mc_draft_propose(d, out, 64), 1);
    mc_draft_feedback(d, 1, 1);
    assert_int_equal(mc_draft_propose(d, out, 64), 2);
    mc_draft_stats_t st;
    mc_draft_stats(d, &st);
    assert_int_equal(st.drafts, 7);
    assert_int_equal(st.proposed, 4 + 8 + 8 + 3 + 1 + 1 + 2);
    assert_int_equal(st.accepted, 4 + 8 + 2 + 0 + 0 + 1);
    mc_draft_destroy(&d);
}

static void test_cap_and_params(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_draft_t *d = s_new(4);
    const int32_t h[] = {1, 2, 1, 2, 1, 2};
    int32_t out[8];
    mc_draft_push(d, h, 6); // only 1 2 1 2 kept: "1 2" was followed by "1 2", a loop
    assert_int_equal(mc_draft_propose(d, out, 8), 4);
    assert_true(out[0] == 1 && out[1] == 2 && out[2] == 1 && out[3] == 2);
    mc_draft_destroy(&d);
    d = s_new(0);
    mc_draft_push(d, h, 6);
    assert_int_equal(mc_draft_propose(d, out, 8), 0);
    mc_draft_destroy(&d);
    mc_draft_params_t p = mc_draft_params_default();
    p.n_min = 0;
    assert_null(mc_draft_new(&p, 8, err));
    assert_non_null(strstr(err, "draft"));
    p = mc_draft_params_default();
    p.n_max = 9;
    assert_null(mc_draft_new(&p, 8, err));
    p = mc_draft_params_default();
    p.k_start = p.k_max + 1;
    assert_null(mc_draft_new(&p, 8, err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeat),
        cmocka_unit_test(test_longest_and_latest),
        cmocka_unit_test(test_matches_brute_force),
        cmocka_unit_test(test_short_loop),
        cmocka_unit_test(test_adaptive_k),
        cmocka_unit_test(test_cap_and_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
