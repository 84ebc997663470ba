/*
 * draft: the n-gram index and the adaptive draft length.
 */
#include "draft.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_N 8
#define S_MAX_K 64
#define S_MAX_BACKOFF 16 // steps without drafting after repeated misses, at most

typedef struct {
    uint64_t hash; // of the n-gram and n; 0: empty
    uint32_t end;  // index of its last token, latest occurrence that has a follower
} s_entry_t;

struct mc_draft {
    mc_draft_params_t p;
    int32_t *hist; // (cap)
    uint32_t len, cap;
    s_entry_t *tab; // (tab_cap) open addressing, linear probing
    uint32_t tab_cap, tab_used;
    uint32_t k;        // the next draft's length
    uint32_t skip;     // proposals still to skip (backoff)
    uint32_t backoff;  // the next miss's skip
    mc_draft_stats_t stats;
};

mc_draft_params_t mc_draft_params_default(void) {
    return (mc_draft_params_t){.n_min = 2, .n_max = 4, .k_max = 8, .k_start = 4};
}

static uint64_t s_hash(const int32_t *t, uint32_t n) {
    uint64_t h = 1469598103934665603ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)t[i];
        for (int b = 0; b < 4; b++, v >>= 8) h = (h ^ (v & 0xff)) * 1099511628211ull;
    }
    return h ? h : 1; // 0 marks an empty entry
}

mc_draft_t *mc_draft_new(const mc_draft_params_t *p, uint32_t cap, char *err) {
    if (p->n_min < 1 || p->n_min > p->n_max || p->n_max > S_MAX_N || p->k_max < 1 || p->k_max > S_MAX_K ||
        p->k_start < 1 || p->k_start > p->k_max) {
        mc_err_set(err, MC_ERR_ARG, "draft: n %u..%u (1..%d), k_max %u (1..%d), k_start %u (1..k_max)", p->n_min,
                   p->n_max, S_MAX_N, p->k_max, S_MAX_K, p->k_start);
        return NULL;
    }
    mc_draft_t *d = calloc(1, sizeof *d);
    if (d) {
        d->p = *p, d->cap = cap, d->k = p->k_start, d->backoff = 1;
        d->tab_cap = 1024;
        d->hist = malloc((cap ? cap : 1) * sizeof *d->hist);
        d->tab = calloc(d->tab_cap, sizeof *d->tab);
    }
    if (!d || !d->hist || !d->tab) {
        mc_draft_destroy(&d);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return d;
}

void mc_draft_destroy(mc_draft_t **pd) {
    if (!pd || !*pd) return;
    free((*pd)->hist), free((*pd)->tab);
    free(*pd);
    *pd = NULL;
}

// Set hash -> end (the latest occurrence wins).
static void s_put(s_entry_t *tab, uint32_t cap, uint32_t *used, uint64_t hash, uint32_t end) {
    for (uint32_t i = (uint32_t)hash & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (tab[i].hash == hash) {
            tab[i].end = end;
            return;
        }
        if (!tab[i].hash) {
            tab[i] = (s_entry_t){hash, end};
            (*used)++;
            return;
        }
    }
}

// Room for one more entry at a load of at most a half; false without memory
// (the index then stops growing: fewer drafts, same results).
static bool s_grow(mc_draft_t *d) {
    if (2 * (d->tab_used + 1) <= d->tab_cap) return true;
    const uint32_t cap = d->tab_cap * 2;
    s_entry_t *t = cap > d->tab_cap ? calloc(cap, sizeof *t) : NULL;
    if (!t) return false;
    uint32_t used = 0;
    for (uint32_t i = 0; i < d->tab_cap; i++)
        if (d->tab[i].hash) s_put(t, cap, &used, d->tab[i].hash, d->tab[i].end);
    free(d->tab);
    d->tab = t, d->tab_cap = cap, d->tab_used = used;
    return true;
}

void mc_draft_push(mc_draft_t *d, const int32_t *ids, uint32_t n) {
    for (uint32_t j = 0; j < n && d->len < d->cap; j++) {
        d->hist[d->len++] = ids[j];
        // The n-grams that end just before the new token now have a follower.
        const uint32_t end = d->len - 2;
        if (d->len < 2) continue;
        for (uint32_t g = d->p.n_min; g <= d->p.n_max && g <= end + 1; g++) {
            if (!s_grow(d)) return;
            s_put(d->tab, d->tab_cap, &d->tab_used, s_hash(d->hist + end + 1 - g, g), end);
        }
    }
}

// The latest earlier end of the history's last g tokens, or -1.
static int64_t s_find(const mc_draft_t *d, uint32_t g) {
    const int32_t *suffix = d->hist + d->len - g;
    const uint64_t h = s_hash(suffix, g);
    for (uint32_t i = (uint32_t)h & (d->tab_cap - 1); d->tab[i].hash; i = (i + 1) & (d->tab_cap - 1)) {
        if (d->tab[i].hash != h) continue;
        const uint32_t end = d->tab[i].end;
        if (end + 1 >= g && !memcmp(d->hist + end + 1 - g, suffix, g * sizeof *suffix)) return end;
        return -1; // a collision: that slot holds another n-gram
    }
    return -1;
}

uint32_t mc_draft_propose(mc_draft_t *d, int32_t *out, uint32_t max) {
    if (d->skip) {
        d->skip--;
        return 0;
    }
    const uint32_t k = d->k < max ? d->k : max;
    for (uint32_t g = d->p.n_max; k && g >= d->p.n_min; g--) {
        if (d->len < g + 1) continue;
        const int64_t end = s_find(d, g);
        if (end < 0) continue;
        // What followed the match, and past the history's end the draft
        // itself: a loop of period len-1-end drafts K tokens, not only the
        // p tokens the history holds after the match (end <= len-2, so the
        // draft index below is always one already written).
        uint32_t n = 0;
        for (uint32_t i = (uint32_t)end + 1; n < k; i++) out[n++] = i < d->len ? d->hist[i] : out[i - d->len];
        d->stats.drafts++;
        d->stats.proposed += n;
        return n;
    }
    return 0;
}

void mc_draft_feedback(mc_draft_t *d, uint32_t proposed, uint32_t accepted) {
    if (!proposed) return;
    d->stats.accepted += accepted;
    if (accepted >= proposed) d->k = 2 * d->k < d->p.k_max ? 2 * d->k : d->p.k_max;
    else d->k = accepted + 1 < d->p.k_max ? accepted + 1 : d->p.k_max;
    if (accepted) {
        d->backoff = 1;
    } else { // a miss: rest a while, longer after each miss in a row
        d->skip = d->backoff;
        d->backoff = 2 * d->backoff < S_MAX_BACKOFF ? 2 * d->backoff : S_MAX_BACKOFF;
    }
}

void mc_draft_stats(const mc_draft_t *d, mc_draft_stats_t *out) { *out = d->stats; }
