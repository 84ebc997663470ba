/*
 * test_pool: every share of a job runs exactly once, jobs see each other's
 * results in order, the pool survives idle periods (sleeping workers), and a
 * worker that cannot run does not hold a job up.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

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

// A worker stuck in a signal handler stands for one the scheduler does not
// run: the job must complete on the caller, which then ran both shares.
static atomic_int s_stuck, s_release;

static void s_stall(int sig) {
    (void)sig;
    atomic_store(&s_stuck, 1);
    struct timespec ts = {0, 1000 * 1000};
    while (!atomic_load(&s_release)) nanosleep(&ts, NULL);
}

typedef struct {
    pthread_t ran_on[2];
    atomic_int calls;
} s_who_t;

static void s_record(void *arg, int ith, int nth) {
    (void)nth;
    s_who_t *w = arg;
    w->ran_on[ith] = pthread_self();
    atomic_fetch_add(&w->calls, 1);
}

static void test_stalled_worker(void **state) {
    (void)state;
    mc_pool_t *p = mc_pool_new(2);
    assert_non_null(p);
    s_who_t warm = {0};
    mc_pool_run(p, s_record, &warm); // the worker is up
    // Only the worker may take SIGUSR1: it inherited an unblocked mask.
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = s_stall;
    assert_int_equal(sigaction(SIGUSR1, &sa, &old_sa), 0);
    atomic_store(&s_stuck, 0);
    atomic_store(&s_release, 0);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    struct timespec ts = {0, 1000 * 1000};
    while (!atomic_load(&s_stuck)) nanosleep(&ts, NULL);
    for (int rep = 0; rep < 3; rep++) {
        s_who_t w = {0};
        mc_pool_run(p, s_record, &w);
        assert_int_equal(atomic_load(&w.calls), 2);
        assert_true(pthread_equal(w.ran_on[0], pthread_self()));
        assert_true(pthread_equal(w.ran_on[1], pthread_self()));
    }
    atomic_store(&s_release, 1);
    s_who_t after = {0};
    for (int rep = 0; rep < 100; rep++) mc_pool_run(p, s_record, &after);
    assert_int_equal(atomic_load(&after.calls), 200);
    mc_pool_destroy(&p);
    sigaction(SIGUSR1, &old_sa, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
        cmocka_unit_test(test_stalled_worker),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
