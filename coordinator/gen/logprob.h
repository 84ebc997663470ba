/*
 * logprob: the log-probabilities clients ask for with OpenAI's `logprobs`
 * and `top_logprobs`: for one logits row, the log-softmax value of the
 * token that was sampled and of the n most likely tokens.
 *
 * Which distribution: the model's, from the raw logits row the sampler was
 * given, before the repetition penalties, the top-k/top-p/min-p filters and
 * the temperature. That is what llama.cpp's server reports by default
 * (post_sampling_probs off) and what OpenAI's API reports (its numbers do
 * not change with the temperature), and it keeps a token's probability
 * meaningful whatever sampling a client chose. So the sampled token's logprob equals its entry in the top list
 * whenever it is among the n most likely, and greedy decoding without
 * penalties always samples top[0].
 *
 * Under constrained decoding (constraint.h) the row the sampler is given
 * is the masked one: tokens the document cannot take are at -inf, so the
 * numbers are those of the masked distribution.
 *
 * The sum is taken in double over the whole row; NaN logits count as -inf
 * and +inf as FLT_MAX, as in the sampler. This is a read of the row: it
 * never changes which token is sampled.
 */
#ifndef MC_LOGPROB_H
#define MC_LOGPROB_H

#include <stdint.h>

#define MC_LOGPROB_MAX_TOP 20 // OpenAI's bound on top_logprobs

typedef struct {
    int32_t id;
    double logprob; // <= 0; -inf for a token the model rules out
} mc_logprob_entry_t;

typedef struct {
    mc_logprob_entry_t chosen;                  // the sampled token
    uint32_t n_top;
    mc_logprob_entry_t top[MC_LOGPROB_MAX_TOP]; // most likely first, ties: the lower id
} mc_logprob_t;

// Fill out for logits[n_vocab], the sampled token id and n_top (clamped to
// MC_LOGPROB_MAX_TOP and n_vocab) alternatives.
void mc_logprob_compute(const float *logits, uint32_t n_vocab, int32_t id, uint32_t n_top, mc_logprob_t *out);

#endif
