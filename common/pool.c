/*
 * pool: persistent workers synchronised by a generation counter.
 *
 * The caller publishes (fn, arg), bumps `gen`, runs its own share, then makes
 * sure every other share has run. Each share of a job is claimed exactly
 * once, by its worker or by the caller: a worker that has not started when
 * the caller is done with its own share (asleep, or descheduled because
 * other processes want the cores) finds its share taken and skips the job,
 * so a late thread never holds a job up. Workers watch `gen`: spinning
 * first, then sleeping on `cond` once they have been idle for a while.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define s_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define s_cpu_relax() __asm__ __volatile__("yield")
#else
#define s_cpu_relax() ((void)0)
#endif

// Busy-wait iterations (pause instructions) before a waiting thread starts
// yielding its core, and yields before a worker goes to sleep. Yielding keeps
// a pool with more threads than cores from spinning away the time slice the
// thread it waits for needs.
#define MC_POOL_SPIN 2000
#define MC_POOL_YIELDS 200

// One per thread, on its own cache line: the caller and the worker both
// touch `taken` once per job, and neighbouring workers should not.
typedef struct {
    mc_pool_t *pool;
    int ith;
    // Generation of the last job whose share ith has been claimed. Every job
    // claims every share, so it moves from g - 1 to g during job g: the
    // compare-and-swap that moves it decides who runs the share.
    atomic_uint taken;
    atomic_uint done; // generation of the last job whose share ith has run
    char pad[64 - sizeof(void *) - 3 * sizeof(int)];
} s_worker_t;
static_assert(sizeof(s_worker_t) == 64, "one cache line per worker");

struct mc_pool {
    int nth;
    pthread_t *threads;
    s_worker_t *workers;
    mc_pool_fn fn;
    void *arg;
    atomic_uint gen;     // bumped once per job
    atomic_bool stop;
    atomic_bool rest;    // set by mc_pool_rest: idle workers sleep at once
    atomic_int sleepers; // workers blocked (or about to block) on cond
    pthread_mutex_t mu;
    pthread_cond_t cond;
};

static void *s_worker_main(void *p) {
    s_worker_t *w = p;
    mc_pool_t *pool = w->pool;
    // Not the current value of gen: a thread that starts late must still run
    // the jobs published before it got going. Workers exist before any job.
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            if (atomic_load_explicit(&pool->rest, memory_order_relaxed)) spins = MC_POOL_SPIN + MC_POOL_YIELDS;
            if (++spins < MC_POOL_SPIN) {
                s_cpu_relax();
                continue;
            }
            if (spins < MC_POOL_SPIN + MC_POOL_YIELDS) {
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            // Re-check under the lock: the publisher bumps gen before locking
            // and broadcasting, so a job cannot slip in unnoticed.
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cond, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        seen = g;
        // Winning the claim means the caller has not finished job g (it
        // cannot without share ith), so fn and arg are still job g's.
        unsigned expect = g - 1;
        if (atomic_compare_exchange_strong_explicit(&w->taken, &expect, g, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            pool->fn(pool->arg, w->ith, pool->nth);
            atomic_store_explicit(&w->done, g, memory_order_release);
        }
    }
    return NULL;
}

mc_pool_t *mc_pool_new(int n_threads) {
    if (n_threads < 1 || n_threads > 1024) return NULL;
    mc_pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nth = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->rest, false);
    atomic_init(&p->sleepers, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cond, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->workers = aligned_alloc(sizeof(s_worker_t), (size_t)n_threads * sizeof(s_worker_t));
    if (!p->threads || !p->workers) {
        p->nth = 1; // no workers started
        mc_pool_destroy(&p);
        return NULL;
    }
    for (int i = 0; i < n_threads; i++) {
        p->workers[i] = (s_worker_t){.pool = p, .ith = i};
        atomic_init(&p->workers[i].taken, 0);
        atomic_init(&p->workers[i].done, 0);
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, s_worker_main, &p->workers[i]) != 0) {
            p->nth = i; // join only those started
            mc_pool_destroy(&p);
            return NULL;
        }
    }
    return p;
}

void mc_pool_destroy(mc_pool_t **pp) {
    if (!pp || !*pp) return;
    mc_pool_t *p = *pp;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nth; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->workers);
    free(p);
    *pp = NULL;
}

int mc_pool_threads(const mc_pool_t *p) { return p->nth; }

int mc_pool_default_threads(void) {
    const long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    return nproc < 1 ? 1 : nproc > 8 ? 8 : (int)nproc;
}

void mc_pool_run(mc_pool_t *p, mc_pool_fn fn, void *arg) {
    if (p->nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->rest, false, memory_order_relaxed);
    // seq_cst: pairs with the worker's sleepers++ / gen re-check (store-load on both sides).
    const unsigned g = atomic_fetch_add(&p->gen, 1) + 1;
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->nth);
    // Shares nobody has started yet run here rather than wait for a thread
    // that may not get a core soon.
    for (int i = 1; i < p->nth; i++) {
        s_worker_t *w = &p->workers[i];
        unsigned expect = g - 1;
        if (atomic_compare_exchange_strong_explicit(&w->taken, &expect, g, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            fn(arg, i, p->nth);
            atomic_store_explicit(&w->done, g, memory_order_relaxed);
        }
    }
    for (int i = 1; i < p->nth; i++)
        for (int spins = 0; atomic_load_explicit(&p->workers[i].done, memory_order_acquire) != g; spins++) {
            if (spins < MC_POOL_SPIN)
                s_cpu_relax();
            else
                sched_yield();
        }
}

void mc_pool_rest(mc_pool_t *p) {
    // A stale read of the flag by a worker is harmless either way: the
    // sleep path re-checks gen under the lock, and a worker that spins a
    // little longer only costs time.
    if (p->nth > 1) atomic_store_explicit(&p->rest, true, memory_order_relaxed);
}
