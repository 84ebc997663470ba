/*
 * routing: what the router chose, collected for placement tools (moe-plan).
 *
 * Per layer: rows routed to each expert; how often two experts are chosen
 * together for one token (the pair counts decide which experts share a
 * request); how often a token keeps an expert that its sequence's previous
 * token had (locality); and a trace of the choices themselves for the first
 * max_trace tokens, which the simulator replays. The engine reports every
 * row of every pass as a router observer (mc_engine_route_subscribe, with
 * mc_routing_hook); mc_routing_json() may be called from another thread
 * meanwhile.
 *
 * The trace covers the first tokens only; a live planner (the server's
 * rebalancing, rebalance.h) wants the recent ones: mc_routing_keep_recent
 * adds a ring of the last n tokens' choices, a sliding window that
 * mc_routing_recent turns into statistics (counts, pairs and a trace of
 * those tokens alone, older ones forgotten as new ones come).
 *
 * The file (JSON) is read back by mc_routing_parse(buf, len), which checks
 * every count and id against the shape it declares: it comes from disk.
 */
#ifndef MC_ROUTING_H
#define MC_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MC_ROUTING_MAX_EXPERTS 256
#define MC_ROUTING_MAX_K 16
#define MC_ROUTING_MAX_LAYERS 4096
#define MC_ROUTING_MAX_TRACE 1000000 // tokens a file may carry

typedef struct mc_routing mc_routing_t;

// A collector for a model of these dimensions and n_seq sequences (the
// engine's choices). NULL on bad dimensions or no memory.
mc_routing_t *mc_routing_new(uint32_t n_layer, uint32_t n_expert, uint32_t k, uint32_t n_seq, uint32_t max_trace);
void mc_routing_destroy(mc_routing_t **r);

// The engine's row number `row` (counted over every pass: the trace index),
// of sequence seq at position pos, chose sel[0..k) at layer. The signature
// of mc_engine_route_fn, with ctx the mc_routing_t.
void mc_routing_hook(void *ctx, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos, const int32_t *sel,
                     uint32_t k);

// The statistics as JSON text (malloc'd; NULL when out of memory); the file
// format mc_routing_parse reads.
char *mc_routing_json(mc_routing_t *r);
mc_err_t mc_routing_write(mc_routing_t *r, const char *path, char *err);

// Statistics read back from a file (or a recent window's).
typedef struct {
    uint32_t n_layer, n_expert, k;
    uint64_t tokens;     // rows recorded per layer
    uint64_t *rows;      // (n_layer, n_expert) rows routed to each expert
    uint64_t *pairs;     // (n_layer, n_expert, n_expert) tokens choosing both (symmetric; diagonal 0)
    uint64_t *kept;      // (n_layer, n_expert) rows whose previous token chose the expert too
    uint64_t *follow;    // (n_layer, n_expert) rows that had a previous token
    uint32_t n_trace;    // tokens in the trace
    uint8_t *trace;      // (n_trace, n_layer, k) expert ids
} mc_routing_stats_t;

// Keep the choices of the last n tokens (1..MC_ROUTING_MAX_TRACE) from now
// on, beside the rest (again: a new, empty ring of n).
mc_err_t mc_routing_keep_recent(mc_routing_t *r, uint32_t n, char *err);

// The window of the last recorded tokens (at most max_tokens, those whose
// every layer is in): rows, pairs and the trace, oldest token first; kept
// and follow are 0 (the ring does not know sequences). MC_ERR_ARG without
// a ring (mc_routing_keep_recent); an empty window has tokens 0.
mc_err_t mc_routing_recent(mc_routing_t *r, uint32_t max_tokens, mc_routing_stats_t *out, char *err);

mc_err_t mc_routing_parse(const char *buf, size_t len, mc_routing_stats_t *out, char *err);
mc_err_t mc_routing_load(const char *path, mc_routing_stats_t *out, char *err);
void mc_routing_stats_free(mc_routing_stats_t *s);

#endif
