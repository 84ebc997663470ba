/*
 * items: a ring of (id, text) in insertion order; lookups scan it (a
 * thousand short ids: far cheaper than the generation that follows).
 */
#include "items.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *id, *text;
    size_t len;
} s_item_t;

struct mc_items {
    pthread_mutex_t mu;
    s_item_t *ring; // (max_items) oldest at head
    size_t max_items, max_bytes, head, n, bytes;
};

mc_items_t *mc_items_new(size_t max_items, size_t max_bytes) {
    mc_items_t *s = calloc(1, sizeof *s);
    if (!s || !max_items || !(s->ring = calloc(max_items, sizeof *s->ring))) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->max_items = max_items, s->max_bytes = max_bytes;
    return s;
}

static void s_drop_oldest(mc_items_t *s) {
    s_item_t *it = &s->ring[s->head];
    s->bytes -= it->len;
    free(it->id), free(it->text);
    memset(it, 0, sizeof *it);
    s->head = (s->head + 1) % s->max_items;
    s->n--;
}

void mc_items_destroy(mc_items_t **ps) {
    if (!ps || !*ps) return;
    mc_items_t *s = *ps;
    while (s->n) s_drop_oldest(s);
    pthread_mutex_destroy(&s->mu);
    free(s->ring);
    free(s);
    *ps = NULL;
}

mc_err_t mc_items_put(mc_items_t *s, const char *id, const char *text, size_t len) {
    if (len > s->max_bytes) return MC_ERR_RANGE;
    s_item_t it = {strdup(id), malloc(len + 1), len};
    if (!it.id || !it.text) {
        free(it.id), free(it.text);
        return MC_ERR_NOMEM;
    }
    memcpy(it.text, text, len);
    it.text[len] = 0;
    pthread_mutex_lock(&s->mu);
    while (s->n && (s->n == s->max_items || s->bytes + len > s->max_bytes)) s_drop_oldest(s);
    s->ring[(s->head + s->n) % s->max_items] = it;
    s->n++, s->bytes += len;
    pthread_mutex_unlock(&s->mu);
    return MC_OK;
}

char *mc_items_get(mc_items_t *s, const char *id, size_t *len) {
    char *copy = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < s->n; k++) {
        const s_item_t *it = &s->ring[(s->head + k) % s->max_items];
        if (strcmp(it->id, id)) continue;
        if ((copy = malloc(it->len + 1))) {
            memcpy(copy, it->text, it->len + 1);
            *len = it->len;
        }
        break;
    }
    pthread_mutex_unlock(&s->mu);
    return copy;
}
