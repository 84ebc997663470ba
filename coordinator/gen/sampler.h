/*
 * sampler: turns a logits row into the next token id.
 *
 * Pipeline (llama.cpp's order): repetition, frequency and presence penalties
 * over the last `repeat_last_n` accepted ids, then top-k, top-p, min-p, temperature and a
 * draw from a seeded generator. temp <= 0 means greedy argmax (ties go to
 * the lowest id) with no randomness at all. Same seed and same logits give
 * the same ids on every platform.
 */
#ifndef MC_SAMPLER_H
#define MC_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temp;           // <= 0: greedy
    int32_t top_k;        // <= 0: off
    float top_p;          // >= 1: off
    float min_p;          // <= 0: off
    float repeat_penalty; // 1: off
    float frequency_penalty; // 0: off; minus count x this (OpenAI)
    float presence_penalty;  // 0: off; minus this once a token has occurred (OpenAI)
    int32_t repeat_last_n;   // the window all three penalties look at
    uint64_t seed;
} mc_sampler_params_t;

mc_sampler_params_t mc_sampler_params_default(void);

typedef struct mc_sampler mc_sampler_t;

// NULL on bad parameters (n_vocab 0, NaN values) or allocation failure.
mc_sampler_t *mc_sampler_new(const mc_sampler_params_t *p, uint32_t n_vocab);
void mc_sampler_destroy(mc_sampler_t **s);

// Pick the next id from logits[n_vocab] (the array is not modified).
int32_t mc_sampler_sample(mc_sampler_t *s, const float *logits);

// Record an id (prompt or generated) for the repetition penalty.
void mc_sampler_accept(mc_sampler_t *s, int32_t id);

#endif
