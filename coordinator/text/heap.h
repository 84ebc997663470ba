/*
 * heap: a growable binary heap of fixed-size items, ordered by the caller's
 * `before` (the item that should come out first is "before" the others). Both
 * tokenizers queue their candidate merges in one: SentencePiece by score,
 * byte-level BPE by rank, each leftmost first on a tie.
 */
#ifndef MC_HEAP_H
#define MC_HEAP_H

#include <stdbool.h>
#include <stddef.h>

typedef bool (*mc_heap_before_fn)(const void *a, const void *b);

typedef struct {
    unsigned char *items; // cap + 1 slots: the last is scratch for the item being moved
    size_t n, cap, size;
    mc_heap_before_fn before;
} mc_heap_t;

// An empty heap of items of `size` bytes; allocates on the first push.
static inline mc_heap_t mc_heap_make(size_t size, mc_heap_before_fn before) {
    return (mc_heap_t){NULL, 0, 0, size, before};
}

// Copies *item in; false when out of memory (the heap is unchanged).
bool mc_heap_push(mc_heap_t *h, const void *item);

// Copies the first item out to *out and removes it; the heap must not be empty.
void mc_heap_pop(mc_heap_t *h, void *out);

// Empties the heap, keeping its memory for the next use.
static inline void mc_heap_clear(mc_heap_t *h) { h->n = 0; }

void mc_heap_free(mc_heap_t *h);

#endif
