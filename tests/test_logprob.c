/*
 * test_logprob: log-softmax of hand-made rows against a direct
 * computation; the top list's order (ties to the lower id) and bounds;
 * NaN, -inf and +inf logits; a row where nothing has mass.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "logprob.h"

static void test_values_and_order(void **state) {
    (void)state;
    const float row[] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f, NAN, -INFINITY, 2.0f};
    const uint32_t n = sizeof row / sizeof row[0];
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(row[i])) sum += exp((double)row[i] - 3.0);
    const double lse = 3.0 + log(sum);
    mc_logprob_t lp;
    mc_logprob_compute(row, n, 4, 5, &lp);
    assert_int_equal(lp.chosen.id, 4);
    assert_true(fabs(lp.chosen.logprob - (0.5 - lse)) < 1e-12);
    assert_int_equal(lp.n_top, 5);
    const int32_t order[] = {1, 3, 7, 0, 4}; // 3 and 3 tie: the lower id first
    for (int k = 0; k < 5; k++) {
        assert_int_equal(lp.top[k].id, order[k]);
        assert_true(fabs(lp.top[k].logprob - ((double)row[order[k]] - lse)) < 1e-12);
    }
    // The probabilities of the whole row add up to one.
    mc_logprob_compute(row, n, 1, MC_LOGPROB_MAX_TOP, &lp);
    assert_int_equal(lp.n_top, n); // clamped to the vocabulary
    double total = 0;
    for (uint32_t k = 0; k < lp.n_top; k++) total += exp(lp.top[k].logprob);
    assert_true(fabs(total - 1.0) < 1e-12);
    // NaN and -inf: no mass, last; never chosen over a real token.
    assert_true(isinf(lp.top[n - 1].logprob) && lp.top[n - 1].logprob < 0);
    mc_logprob_compute(row, n, 5, 0, &lp);
    assert_int_equal(lp.n_top, 0);
    assert_true(isinf(lp.chosen.logprob) && lp.chosen.logprob < 0);
    // An id outside the row has no mass either.
    mc_logprob_compute(row, n, 99, 1, &lp);
    assert_true(isinf(lp.chosen.logprob));
    assert_int_equal(lp.top[0].id, 1);
}

static void test_extremes(void **state) {
    (void)state;
    // +inf counts as FLT_MAX: it takes all the mass, the sum stays finite.
    const float inf_row[] = {0.0f, INFINITY, 1.0f};
    mc_logprob_t lp;
    mc_logprob_compute(inf_row, 3, 1, 2, &lp);
    assert_true(lp.chosen.logprob == 0.0);
    assert_int_equal(lp.top[0].id, 1);
    assert_true(lp.top[1].logprob < -1e30);
    // Nothing has mass: everything is -inf, nothing NaN.
    const float none[] = {-INFINITY, NAN, -INFINITY};
    mc_logprob_compute(none, 3, 0, 3, &lp);
    assert_true(isinf(lp.chosen.logprob) && lp.chosen.logprob < 0);
    for (int k = 0; k < 3; k++) assert_true(isinf(lp.top[k].logprob) && lp.top[k].logprob < 0);
    assert_int_equal(lp.top[0].id, 0);
    // A large vocabulary: the 20 best out of 50000, in order.
    const uint32_t nv = 50000;
    float *big = malloc(nv * sizeof *big);
    for (uint32_t i = 0; i < nv; i++) big[i] = (float)((i * 7919u) % 1000u) / 100.0f;
    mc_logprob_compute(big, nv, 0, 25, &lp);
    assert_int_equal(lp.n_top, MC_LOGPROB_MAX_TOP);
    for (uint32_t k = 1; k < lp.n_top; k++) {
        assert_true(lp.top[k].logprob <= lp.top[k - 1].logprob);
        if (lp.top[k].logprob == lp.top[k - 1].logprob) assert_true(lp.top[k].id > lp.top[k - 1].id);
    }
    assert_true(big[lp.top[0].id] == 9.99f);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_order),
        cmocka_unit_test(test_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
