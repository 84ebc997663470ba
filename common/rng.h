/*
 * rng: the project's one pseudo-random generator, xoshiro256** seeded
 * through splitmix64.
 *
 * Pure 64-bit integer arithmetic, so a seed gives the same stream on every
 * platform: the sampler's draws and moe-mkmodel's weights depend on that.
 * Not for anything security-related.
 */
#ifndef MC_RNG_H
#define MC_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4]; // xoshiro256** state
} mc_rng_t;

// splitmix64 step: advances *x and returns a well-mixed value (also a good
// 64-bit hash step for deriving seeds).
static inline uint64_t mc_rng_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void mc_rng_seed(mc_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = mc_rng_splitmix64(&seed);
}

static inline uint64_t mc_rng_next(mc_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5;
    uint64_t out = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

// Uniform in [0, 1): the top 53 bits fill a double's mantissa exactly.
static inline double mc_rng_uniform(mc_rng_t *r) { return (double)(mc_rng_next(r) >> 11) * 0x1.0p-53; }

#endif
