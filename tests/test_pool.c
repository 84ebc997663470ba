/*
 * test_pool: every thread runs each job exactly once, jobs see each other's
 * results in order, and the pool survives idle periods (sleeping workers).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdatomic.h>
#include <time.h>

#include "pool.h"

typedef struct {
    atomic_int calls;
    atomic_int mask;
    int data[64];
} s_job_t;

static void s_mark(void *arg, int ith, int nth) {
    s_job_t *j = arg;
    atomic_fetch_add(&j->calls, 1);
    atomic_fetch_or(&j->mask, 1 << ith);
    for (int i = ith; i < 64; i += nth) j->data[i] += i;
}

static void test_each_thread_once(void **state) {
    (void)state;
    for (int nth = 1; nth <= 4; nth++) {
        mc_pool_t *p = mc_pool_new(nth);
        assert_non_null(p);
        assert_int_equal(mc_pool_threads(p), nth);
        s_job_t j = {0};
        for (int rep = 0; rep < 1000; rep++) mc_pool_run(p, s_mark, &j);
        assert_int_equal(atomic_load(&j.calls), 1000 * nth);
        assert_int_equal(atomic_load(&j.mask), (1 << nth) - 1);
        for (int i = 0; i < 64; i++) assert_int_equal(j.data[i], 1000 * i);
        mc_pool_destroy(&p);
        assert_null(p);
        mc_pool_destroy(&p); // safe twice
    }
}

static void test_wakes_after_sleep(void **state) {
    (void)state;
    mc_pool_t *p = mc_pool_new(3);
    s_job_t j = {0};
    for (int rep = 0; rep < 3; rep++) {
        struct timespec ts = {0, 30 * 1000 * 1000}; // long enough for workers to block
        nanosleep(&ts, NULL);
        mc_pool_run(p, s_mark, &j);
    }
    assert_int_equal(atomic_load(&j.calls), 9);
    mc_pool_destroy(&p);
}

static void test_bad_args(void **state) {
    (void)state;
    assert_null(mc_pool_new(0));
    assert_null(mc_pool_new(-3));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_thread_once),
        cmocka_unit_test(test_wakes_after_sleep),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
