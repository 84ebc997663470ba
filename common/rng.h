/*
 * rng: the project's one pseudo-random generator, xoshiro256** seeded
 * through splitmix64.
 *
 * Pure 64-bit integer arithmetic, so a seed gives the same stream on every
 * platform: the sampler's draws and moe-mkmodel's weights depend on that.
 * Not for anything security-related. Also here: deriving the seeds of a
 * stream's parts, Gaussian pairs, and a fresh seed when none was given.
 */
#ifndef MC_RNG_H
#define MC_RNG_H

#include <math.h>
#include <stddef.h>
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

// The seed of one part of a seeded whole, the part named by a path of numbers
// (moe-mkmodel: role, layer, expert; moe-bench: the sequence): a splitmix64 step
// before each number is added and one after, so neighbouring paths give unrelated
// seeds. moe-mkmodel's weights depend on these exact bits.
static inline uint64_t mc_rng_seed_of(uint64_t seed, const uint64_t *path, size_t n) {
    uint64_t h = seed;
    for (size_t i = 0; i < n; i++) h = mc_rng_splitmix64(&h) + path[i];
    return mc_rng_splitmix64(&h);
}

// Two independent N(0,1) values (Marsaglia's polar form of Box-Muller: one
// log and one sqrt per pair, no trigonometry). moe-mkmodel's weights depend on
// these exact bits (integer draws, float arithmetic without contraction).
static inline void mc_rng_gauss2(mc_rng_t *r, float *a, float *b) {
    for (;;) {
        uint64_t x = mc_rng_next(r);
        // Two 24-bit uniforms in [-1, 1), exact in float.
        float u = (float)(int32_t)((x >> 40) - (1u << 23)) * 0x1p-23f;
        float v = (float)(int32_t)(((x >> 16) & 0xFFFFFFu) - (1u << 23)) * 0x1p-23f;
        float s = u * u + v * v;
        if (s >= 1.0f || s == 0.0f) continue;
        float f = sqrtf(-2.0f * logf(s) / s);
        *a = u * f;
        *b = v * f;
        return;
    }
}

// A seed nobody chose (getrandom, else the clock and the process id), for
// sampling without --seed or a request's "seed". At most INT64_MAX, so it can be
// printed and given back as --seed or a JSON "seed" to repeat the run.
uint64_t mc_rng_fresh_seed(void);

// 64 unpredictable-enough bits for names (request ids), by the same means.
uint64_t mc_rng_fresh_u64(void);

#endif
