/*
 * heap: binary heap with a moving hole (see heap.h): an item is copied once
 * into its final slot, parents and children shift into the hole meanwhile.
 */
#include "heap.h"

#include <stdlib.h>
#include <string.h>

#define S_AT(h, i) ((h)->items + (i) * (h)->size)

bool mc_heap_push(mc_heap_t *h, const void *item) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        unsigned char *items = realloc(h->items, (cap + 1) * h->size);
        if (!items) return false;
        h->items = items;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!h->before(item, S_AT(h, parent))) break;
        memcpy(S_AT(h, i), S_AT(h, parent), h->size);
        i = parent;
    }
    memcpy(S_AT(h, i), item, h->size);
    return true;
}

void mc_heap_pop(mc_heap_t *h, void *out) {
    memcpy(out, S_AT(h, 0), h->size);
    unsigned char *last = S_AT(h, h->cap); // the scratch slot
    memcpy(last, S_AT(h, --h->n), h->size);
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->before(S_AT(h, c + 1), S_AT(h, c))) c++;
        if (!h->before(S_AT(h, c), last)) break;
        memcpy(S_AT(h, i), S_AT(h, c), h->size);
        i = c;
    }
    if (h->n > 0) memcpy(S_AT(h, i), last, h->size);
}

void mc_heap_free(mc_heap_t *h) {
    free(h->items);
    h->items = NULL;
    h->n = h->cap = 0;
}
