/*
 * draft: guesses of a generation's next tokens without a draft model, from
 * its own history (prompt lookup).
 *
 * Text repeats itself: code being edited, a document quoted back, names,
 * JSON keys, the structure of a list. The longest recent n-gram (n_max
 * down to n_min tokens) that ends the history is looked up among its
 * earlier occurrences; the tokens that followed the latest one are the
 * draft, continued past the history's end as the loop it implies (after
 * "a b c a b", "a b" was followed by "c a b", then "c a b" again...), so
 * a short loop drafts K tokens, not only its period. The scheduler verifies a draft of K tokens in one forward pass of
 * K+1 rows and keeps the ones sequential decoding gives (scheduler.h), so a
 * draft only ever changes speed: a wrong guess costs the rows it took.
 *
 * How many tokens to guess adapts to how many were kept: a draft taken
 * whole doubles K (up to k_max), a rejected one sets K to one more than
 * what was kept. A generation whose drafts are rarely kept stops drafting
 * for a while (backoff) so it pays almost nothing.
 *
 * The index is a hash table over every n-gram of the history (n_min..n_max)
 * giving its latest end, updated as tokens are pushed; a lookup is O(n_max)
 * and checks the tokens themselves, so a hash collision cannot make a draft
 * (and could not change results anyway).
 */
#ifndef MC_DRAFT_H
#define MC_DRAFT_H

#include <stdint.h>

#include "error.h"

typedef struct {
    uint32_t n_min, n_max; // n-gram lengths looked up, longest first (1 <= n_min <= n_max <= 8)
    uint32_t k_max;        // tokens guessed at most per step (1..64)
    uint32_t k_start;      // K at the start (1..k_max)
} mc_draft_params_t;

// n 2..4, K from 4 up to 8.
mc_draft_params_t mc_draft_params_default(void);

typedef struct mc_draft mc_draft_t;

// A history of at most cap tokens (prompt and answer). NULL with err on bad
// parameters or no memory.
mc_draft_t *mc_draft_new(const mc_draft_params_t *p, uint32_t cap, char *err);
void mc_draft_destroy(mc_draft_t **d);

// Append tokens to the history (what is beyond cap is ignored: no more
// drafts then).
void mc_draft_push(mc_draft_t *d, const int32_t *ids, uint32_t n);

// Up to min(K, max) guessed next tokens into out; 0 when the history's end
// was not seen before (or while backing off).
uint32_t mc_draft_propose(mc_draft_t *d, int32_t *out, uint32_t max);

// A draft of `proposed` tokens had its first `accepted` kept.
void mc_draft_feedback(mc_draft_t *d, uint32_t proposed, uint32_t accepted);

typedef struct {
    uint64_t drafts;   // drafts proposed
    uint64_t proposed; // tokens in them
    uint64_t accepted; // tokens kept
} mc_draft_stats_t;

void mc_draft_stats(const mc_draft_t *d, mc_draft_stats_t *out);

#endif
