/*
 * tokentrie: the vocabulary as a trie over the tokens' bytes (the bytes
 * mc_tokenizer_token_bytes gives: what the decoded text holds), so that
 * constrained decoding (constraint.h) can walk it with an automaton's
 * state and drop a whole subtree as soon as its first bytes are refused.
 *
 * Tokens without bytes (control, unknown and unused ones) are not in it;
 * the end-of-generation ids given at construction are kept apart (a
 * constraint allows them only where the document may end). Built once per
 * vocabulary and read-only afterwards: constraints share it.
 *
 * Layout: nodes in one array, each node's children contiguous and sorted by
 * byte; node 0 is the root (the empty string); each node lists the ids
 * spelled exactly by the path to it (ids[tok0 .. tok0 + n_tok)), and the ids
 * of its whole subtree follow (ids[tok0 .. tok_end)). `plain` marks
 * subtrees of plain string text: inside a JSON string without a length
 * bound every one of their tokens is allowed, without a step.
 */
#ifndef MC_TOKENTRIE_H
#define MC_TOKENTRIE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

typedef struct {
    uint32_t child0;  // first child
    uint32_t tok0;    // first id in ids
    uint32_t n_tok;   // ids ending here
    uint32_t tok_end; // ids[tok0 .. tok_end): the ids of the whole subtree (ids are in depth-first order)
    uint16_t n_child; // children (<= 256)
    uint8_t byte;     // the byte on the edge into this node
    uint8_t plain;    // this edge and every edge below it are printable ASCII other than '"' and '\\'
    uint8_t strok;    // bit s: entered in UTF-8 state s (mc_tokentrie_utf8_next), every path of the subtree is
                      // string text: valid UTF-8 (possibly cut), no control byte, '"' or '\\'
} mc_tokentrie_node_t;

#define MC_TOKENTRIE_MAX_END 8

typedef struct {
    mc_tokentrie_node_t *nodes;
    uint32_t n_nodes;
    int32_t *ids;       // grouped by node
    uint32_t n_vocab;   // ids range over [0, n_vocab)
    uint32_t max_len;   // bytes of the longest token (the trie's depth)
    uint32_t *off, *len; // (n_vocab) each token's bytes in pool (len 0: not in the trie)
    uint8_t *pool;
    uint8_t *is_byte;   // (n_vocab) a byte token (<0xNN>): its leading space is never stripped
    int32_t end[MC_TOKENTRIE_MAX_END]; // end-of-generation ids
    uint32_t n_end;
} mc_tokentrie_t;

// The trie of tok's tokens below n_vocab (the model's row count); end[0..n_end)
// (ids < 0 skipped) end a generation. NULL on failure with err.
mc_tokentrie_t *mc_tokentrie_new(const mc_tokenizer_t *tok, uint32_t n_vocab, const int32_t *end, uint32_t n_end,
                                 char *err);
void mc_tokentrie_destroy(mc_tokentrie_t **t);

bool mc_tokentrie_is_end(const mc_tokentrie_t *t, int32_t id);

// UTF-8 states between bytes of JSON string text: 0 at a character
// boundary; 1 one continuation byte due; 2, 3 (after E0: A0..BF first), 4
// (after ED: 80..9F first) two due; 5, 6 (after F0: 90..BF first), 7 (after
// F4: 80..8F first) three due. The state after byte b, or -1 when b cannot
// come there (or is '"', '\\' or a control byte at a boundary).
int mc_tokentrie_utf8_next(int state, uint8_t b);

#endif
