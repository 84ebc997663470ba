/*
 * rng: fresh seeds (see rng.h); the generator itself is inline in rng.h.
 */
#include "rng.h"

#include <sys/random.h>
#include <unistd.h>

#include "clock.h"

uint64_t mc_rng_fresh_u64(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) == (ssize_t)sizeof v) return v;
    // No entropy (an old kernel, a seccomp filter): the clock and our pid, mixed,
    // still differ between runs and between processes started together.
    uint64_t x = mc_clock_us() ^ ((uint64_t)getpid() << 40);
    return mc_rng_splitmix64(&x);
}

uint64_t mc_rng_fresh_seed(void) { return mc_rng_fresh_u64() & (uint64_t)INT64_MAX; }
