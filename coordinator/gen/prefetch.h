/*
 * prefetch: the coordinator's guess of the next layer's experts from the
 * router, for its expert store (common/expert_store.h).
 *
 * Hooked to the engine (mc_engine_set_layer_hook): before layer l's expert
 * step, each row's hidden state (the residual stream after l's attention)
 * is normed with layer l+1's ffn_norm and put through layer l+1's router;
 * the experts its top k pick, over all rows and most picked first, are the
 * store's router prediction for layer l+1 (MC_STORE_PRED_ROUTER): scored
 * when l+1 runs, and read ahead while layer l computes when the store's
 * prefetch follows the router. The residual still changes before l+1
 * routes (l's experts, l+1's attention), so this is a guess; it costs one
 * (n_expert x dim) product per row and layer. Results never depend on it.
 */
#ifndef MC_PREFETCH_H
#define MC_PREFETCH_H

#include "engine.h"
#include "error.h"
#include "expert_store.h"

typedef struct mc_prefetch mc_prefetch_t;

// Hooks e (its layer hook: one per engine); e, its model and st are
// borrowed and must outlive the result. NULL on failure.
mc_prefetch_t *mc_prefetch_new(mc_engine_t *e, mc_expert_store_t *st, char *err);
// Unhooks the engine. Safe twice and on NULL.
void mc_prefetch_destroy(mc_prefetch_t **p);

#endif
