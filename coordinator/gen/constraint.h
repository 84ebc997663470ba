/*
 * constraint: what one generation may say next when its output must be a
 * given document: optional forced token ids (control tokens such as
 * [TOOL_CALLS]), optional literal text, a JSON value a schema accepts
 * (jsonschema.h), optional literal text after it.
 *
 * mc_constraint_mask gives the tokens allowed after what was generated so
 * far, as a bitset over the vocabulary: it walks the token trie
 * (tokentrie.h) with the automaton's state, dropping a subtree at its first
 * refused byte. End-of-generation ids are allowed exactly where the
 * document may end. Masks are kept per state (a few, least recently used
 * replaced), so the steps inside a long string or between members of an
 * object, which come back to the same state, cost a lookup. The mask is a
 * function of the tokens so far only: the same tokens give the same mask
 * on every machine, alone or batched.
 *
 * strip_space: the generation's text drops one leading space of its first
 * token (SentencePiece answers, mc_detok_t): the constraint sees the text as
 * the client will.
 */
#ifndef MC_CONSTRAINT_H
#define MC_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "jsonschema.h"
#include "tokentrie.h"

typedef struct {
    const int32_t *prefix_ids; // (n_prefix_ids) forced first, in order; copied
    uint32_t n_prefix_ids;
    const char *prefix;        // literal text before the value (NUL-terminated; NULL: none); copied
    const char *schema;        // JSON Schema text (NULL: any JSON object); compiled
    size_t schema_len;
    // The schema compiled already (the server checks it when it parses the
    // request): used instead of schema, so a request compiles it once.
    // Borrowed: it must outlive the constraint.
    const mc_jschema_t *compiled;
    const char *suffix;        // literal text after the value (NULL: none); copied
    bool strip_space;
    bool no_cache;             // every mask walks the trie (benchmarks: the cost without kept masks)
} mc_constraint_params_t;

mc_constraint_params_t mc_constraint_params_default(void);

typedef struct mc_constraint mc_constraint_t;

// trie is borrowed (it must outlive the constraint). NULL on failure with
// err: the schema compiler's codes and messages (jsonschema.h), MC_ERR_RANGE
// for a forced id outside the vocabulary.
mc_constraint_t *mc_constraint_new(const mc_tokentrie_t *trie, const mc_constraint_params_t *p, char *err);
void mc_constraint_destroy(mc_constraint_t **c);

// The allowed tokens now: bit i of word i / 64 (n_vocab bits); *n_allowed
// their count (0: nothing may follow, the document cannot go on). Valid until
// the next call on c.
const uint64_t *mc_constraint_mask(mc_constraint_t *c, uint32_t *n_allowed);

// Set logits[i] to -inf for every token not allowed now; returns the count allowed.
uint32_t mc_constraint_apply(mc_constraint_t *c, float *logits);

// The generation took token id: MC_ERR_ARG (state unchanged) when id was not allowed.
mc_err_t mc_constraint_advance(mc_constraint_t *c, int32_t id, char *err);

// The document is whole and nothing may follow it (or an end id was taken).
bool mc_constraint_complete(const mc_constraint_t *c);

// The document may end here (an end id is allowed).
bool mc_constraint_accepting(const mc_constraint_t *c);

typedef struct {
    uint64_t masks;    // mc_constraint_mask calls
    uint64_t hits;     // ... answered from the kept masks
    uint64_t visited;  // trie nodes stepped through by the walks
} mc_constraint_stats_t;

void mc_constraint_stats(const mc_constraint_t *c, mc_constraint_stats_t *out);

#endif
