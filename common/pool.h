/*
 * pool: a persistent pool of worker threads for data-parallel loops.
 *
 * mc_pool_run() runs fn(arg, ith, nth) once for each ith in 0..nth-1 and
 * returns when all have run. The caller runs share 0, each worker its own
 * share, and the caller also runs any share whose worker has not started by
 * the time its own is done: a sleeping or descheduled thread (more threads
 * than cores, other processes busy) never holds a job up. A share thus runs
 * on one thread at a time, but not always on the same one: per-share
 * scratch is indexed by ith, never tied to a thread. Workers spin briefly
 * between jobs, because a decode step issues hundreds of small products and
 * waking a sleeping thread costs more than most of them; after a short idle
 * spell they block on a condition variable so an idle engine uses no CPU.
 */
#ifndef MC_POOL_H
#define MC_POOL_H

typedef struct mc_pool mc_pool_t;

typedef void (*mc_pool_fn)(void *arg, int ith, int nth);

// n_threads >= 1 (total, including the caller). NULL on failure.
mc_pool_t *mc_pool_new(int n_threads);
void mc_pool_destroy(mc_pool_t **p);

int mc_pool_threads(const mc_pool_t *p);

// The --threads default of moe-coordinator, moe-expert and moe-bench, written
// once: the online CPUs, at most 8, at least 1.
int mc_pool_default_threads(void);

// Run fn for every ith and wait. Not re-entrant: one caller at a time.
void mc_pool_run(mc_pool_t *p, mc_pool_fn fn, void *arg);

// The caller is about to block (on the network, say) for longer than a
// spin is worth: idle workers go to sleep now instead of spinning, leaving
// the cores to other processes (on one machine: the expert nodes). The next
// mc_pool_run wakes them as usual. Same caller as mc_pool_run.
void mc_pool_rest(mc_pool_t *p);

#endif
