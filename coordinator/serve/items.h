/*
 * items: the answers /v1/responses keeps so that a later request may name
 * them instead of sending them again (an input item {"type":
 * "item_reference", "id": "msg_..."}). The Vercel AI SDK does that by
 * default for every earlier answer of a conversation (store is true unless
 * a request says false), so without this its second turn would fail.
 *
 * The text of each output message is kept under its message id, and each
 * call as its function_call item's JSON under its "fc_" id (the caller
 * decides what a text means), in memory: at most max_items answers and max_bytes of text, the oldest
 * dropped first (a reference to a dropped one gets a 400 that says to send
 * the text). Nothing survives a restart. Any thread (one mutex).
 */
#ifndef MC_ITEMS_H
#define MC_ITEMS_H

#include <stddef.h>

#include "error.h"

typedef struct mc_items mc_items_t;

// NULL when out of memory.
mc_items_t *mc_items_new(size_t max_items, size_t max_bytes);
void mc_items_destroy(mc_items_t **s);

// Keep text[0..len) as the answer id (both copied); an answer larger than
// max_bytes is not kept (MC_ERR_RANGE).
mc_err_t mc_items_put(mc_items_t *s, const char *id, const char *text, size_t len);

// A malloc'd, NUL-terminated copy of answer id's text (*len its length), or
// NULL when it is not kept (or no memory).
char *mc_items_get(mc_items_t *s, const char *id, size_t *len);

#endif
