/*
 * scheduler: the one generation loop. Many generations share an engine, each in
 * its own sequence slot (KV cache): every step is one forward pass holding
 * the next token of every generation that is producing text and chunks of
 * the prompts of those that are starting (continuous batching). Through a
 * cluster that is one network round trip per layer for all of them.
 *
 * A generation: the prompt's ids (copied), sampling parameters (its own
 * seeded sampler), a token limit, stop strings and whether EOS ends it. Its
 * text arrives through a callback, piece by piece, on the thread that calls
 * mc_scheduler_step: UTF-8 completed across tokens, and text that might be the
 * start of a stop string held back until it is known not to be. On request
 * each sampled token's log-probabilities (logprob.h) go to another callback
 * just before its text; computing them never changes a token. Since
 * every row of a pass is computed from its own sequence alone (engine.h), a
 * generation's tokens are the same whatever runs beside it.
 *
 * Prefix cache: a free slot that held an earlier generation keeps its
 * cache, and a new prompt that starts with that generation's tokens (the
 * history of a chat) only evaluates what is new. A longer start found in
 * another slot's cache (a request running beside it with the same system
 * prompt) or among the saved prefixes (slots' caches kept, within a byte
 * budget, before they were overwritten) is copied in first. The result is
 * the same bits as evaluating it all: a position's keys and values depend
 * only on the tokens up to it (engine.h).
 *
 * Speculative decoding (mc_gen_params_t.speculate): a generation whose
 * history suggests its next K tokens (draft.h) gets K+1 rows in a pass: its
 * last token and the K guesses. Each position is then sampled in order, as
 * sequential decoding would (the same sampler, the same draws), and kept
 * while it equals the guess that the next row was computed from; the first
 * difference is itself the next token, and the rows after it are dropped
 * (their cache entries are overwritten later). Since a row's logits do not
 * depend on what shares its pass, the tokens are those of decoding one at a
 * time, greedy or seeded; through a cluster the K+1 rows share one round
 * trip per layer.
 *
 * Constrained decoding (mc_gen_params_t.constrain): each generation carries
 * its own constraint; before its row is sampled, the tokens the constraint
 * refuses get -inf (greedy, seeded and speculative decoding alike, and the
 * logprobs are those of the masked row). The vocabulary's token trie is
 * built once, on the first constrained generation.
 *
 * Single-threaded: one thread submits, steps and cancels.
 */
#ifndef MC_SCHEDULER_H
#define MC_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "constraint.h"
#include "draft.h"
#include "engine.h"
#include "error.h"
#include "logprob.h"
#include "sampler.h"
#include "tokenizer.h"

typedef enum {
    MC_FINISH_NONE = 0,
    MC_FINISH_STOP,      // EOS or a stop string
    MC_FINISH_LENGTH,    // max_tokens, or the context is full
    MC_FINISH_CANCELLED, // the callback asked to stop
    MC_FINISH_ERROR,     // the forward pass failed (message in the done callback)
} mc_finish_t;

// "stop", "length", "cancelled", "error".
const char *mc_finish_name(mc_finish_t f);

// A piece of text (len bytes, not NUL-terminated; may be empty) after the
// token id was sampled. Return false to cancel the generation.
typedef bool (*mc_gen_text_fn)(void *user, int32_t id, const char *text, size_t len);

typedef struct {
    uint32_t prompt_tokens, completion_tokens;
    double prompt_s;   // from submission to the first sampled token
    double generate_s; // from the first sampled token to the end
} mc_gen_usage_t;

// The log-probabilities of a sampled token (logprob.h), before its text;
// eog: the token ends the answer (EOS or a turn end) and adds no text.
typedef void (*mc_gen_logprob_fn)(void *user, const mc_logprob_t *lp, bool eog);

// The generation ended (err: a message for MC_FINISH_ERROR, else "").
typedef void (*mc_gen_done_fn)(void *user, mc_finish_t why, const mc_gen_usage_t *usage, const char *err);

#define MC_SCHEDULER_MAX_STOP 8 // stop strings per generation
#define MC_SCHEDULER_STOP_LEN 256 // bytes of one stop string

typedef struct {
    const int32_t *prompt; // (n_prompt) ids, BOS included when wanted; copied
    uint32_t n_prompt;
    uint32_t max_tokens;   // 0: until the context is full
    mc_sampler_params_t sampling;
    const char *const *stop; // n_stop strings (copied): the text ends before the first one found
    uint32_t n_stop;
    bool ignore_eos;       // EOS is a token like any other (reference comparisons)
    bool strip_space;      // drop one leading space of the text (an instruct model's answer)
    float *prompt_logits;  // optional (n_prompt, n_vocab): the logits of every prompt position
    // Speculative decoding: drafts from the generation's own history
    // (draft.h), verified K+1 rows per pass; the same tokens as without.
    // NULL: one token per pass. Copied.
    const mc_draft_params_t *speculate;
    mc_gen_text_fn on_text;
    mc_gen_done_fn on_done;
    mc_gen_logprob_fn on_logprob; // optional: every sampled token's logprob and
    uint32_t top_logprobs;        // this many alternatives (<= MC_LOGPROB_MAX_TOP)
    // Constrained decoding (constraint.h): NULL, or what the answer must be
    // (forced ids, prefix text, a JSON value of a schema, suffix text;
    // copied, but a compiled schema it names is borrowed until on_done).
    // Tokens that cannot continue it get -inf before sampling (the sampler
    // and the logprobs see the masked row); the answer ends ("stop") when it
    // is whole.
    const mc_constraint_params_t *constrain;
    void *user;
} mc_gen_params_t;

// Greedy, no limit, EOS stops, nothing else set.
mc_gen_params_t mc_gen_params_default(void);

typedef struct mc_sched mc_scheduler_t;

// e and tok are borrowed. NULL on failure.
mc_scheduler_t *mc_scheduler_new(mc_engine_t *e, const mc_tokenizer_t *tok, char *err);
void mc_scheduler_destroy(mc_scheduler_t **s);

// Queue a generation (it starts when a slot is free); *id names it for
// mc_scheduler_cancel. MC_ERR_RANGE when the prompt does not fit the context,
// MC_ERR_ARG for an empty prompt, too many stop strings or bad sampling
// parameters; nothing is queued then.
mc_err_t mc_scheduler_submit(mc_scheduler_t *s, const mc_gen_params_t *p, uint64_t *id, char *err);

// Generations queued or running.
uint32_t mc_scheduler_pending(const mc_scheduler_t *s);

// One forward pass for everything running (and queued generations that get
// a slot), then sampling and callbacks. Does nothing without work. A failed
// pass ends every generation in it with MC_FINISH_ERROR and is returned.
mc_err_t mc_scheduler_step(mc_scheduler_t *s, char *err);

// Bytes of saved prefixes kept beyond the slots' own caches (keys, values
// and token ids; least recently used dropped first); 0, the default: none.
void mc_scheduler_set_prefix_cache(mc_scheduler_t *s, size_t max_bytes);

typedef struct {
    uint64_t lookups;       // generations admitted
    uint64_t hits;          // ... that reused at least one cached position
    uint64_t tokens_reused; // prompt positions not evaluated again
    uint64_t copied;        // hits served from another slot or a saved prefix
    uint32_t saved;         // saved prefixes now
    size_t saved_bytes;     // ... and their bytes
} mc_prefix_stats_t;

void mc_scheduler_prefix_stats(const mc_scheduler_t *s, mc_prefix_stats_t *out);

typedef struct {
    uint64_t drafts;   // drafts verified
    uint64_t proposed; // tokens guessed in them
    uint64_t accepted; // guesses kept (tokens that cost no pass of their own)
} mc_spec_stats_t;

// Speculative decoding over every generation since the scheduler was made.
void mc_scheduler_spec_stats(const mc_scheduler_t *s, mc_spec_stats_t *out);

// Constrained decoding since the scheduler was made: masks computed (and
// how many came from a constraint's kept masks) and their time.
typedef struct {
    uint64_t masks, hits;
    double mask_s;
} mc_constrain_stats_t;
void mc_scheduler_constrain_stats(const mc_scheduler_t *s, mc_constrain_stats_t *out);

// End generation id now (its done callback reports MC_FINISH_CANCELLED);
// no-op for an unknown or finished id.
void mc_scheduler_cancel(mc_scheduler_t *s, uint64_t id);

#endif
