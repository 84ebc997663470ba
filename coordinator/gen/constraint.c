/*
 * constraint: forced ids, then the automaton (prefix, value, suffix); masks
 * by trie walk, kept per automaton state.
 */
#include "constraint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

#define S_CACHE 8 // masks kept per constraint

typedef struct {
    bool valid;
    uint64_t hash, used;
    size_t klen;
    uint8_t *key;   // the state, serialized
    uint64_t *mask;
    uint32_t n_allowed;
} s_entry_t;

struct mc_constraint {
    const mc_tokentrie_t *t;
    const mc_jschema_t *schema; // compiled, or borrowed (p->compiled)
    mc_jschema_t *own;          // what it compiled itself (NULL: borrowed)
    uint8_t *prefix, *suffix;
    mc_jsm_t m;
    int32_t *forced;
    uint32_t n_forced, i_forced;
    bool strip; // the first token's leading space is still to be dropped
    bool ended; // an end id was taken
    bool no_cache;
    mc_jsm_state_t st;
    mc_jsm_state_t *walk; // (t->max_len + 2) one state per depth of the walk
    uint32_t *node_at, *child_at; // (t->max_len + 1) the walk's path
    uint32_t words;
    uint64_t *mask;       // the mask of an uncached state
    uint8_t *key;         // a serialized state
    s_entry_t cache[S_CACHE];
    uint64_t clock;
    mc_constraint_stats_t stats;
};

mc_constraint_params_t mc_constraint_params_default(void) { return (mc_constraint_params_t){0}; }

static uint8_t *s_dup(const char *s, size_t *len) {
    *len = s ? strlen(s) : 0;
    uint8_t *d = malloc(*len + 1);
    if (d && *len) memcpy(d, s, *len);
    return d;
}

mc_constraint_t *mc_constraint_new(const mc_tokentrie_t *trie, const mc_constraint_params_t *p, char *err) {
    for (uint32_t i = 0; i < p->n_prefix_ids; i++)
        if (p->prefix_ids[i] < 0 || (uint32_t)p->prefix_ids[i] >= trie->n_vocab) {
            mc_err_set(err, MC_ERR_RANGE, "forced token id %d is outside the vocabulary", p->prefix_ids[i]);
            return NULL;
        }
    mc_constraint_t *c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->t = trie;
    if (p->compiled)
        c->schema = p->compiled;
    else
        c->schema = c->own = p->schema ? mc_jschema_compile(p->schema, p->schema_len, err) : mc_jschema_any_object(err);
    if (!c->schema) {
        mc_constraint_destroy(&c);
        return NULL;
    }
    size_t np, ns;
    c->prefix = s_dup(p->prefix, &np);
    c->suffix = s_dup(p->suffix, &ns);
    c->m = (mc_jsm_t){c->schema, c->prefix, np, c->suffix, ns};
    c->forced = malloc((p->n_prefix_ids ? p->n_prefix_ids : 1) * sizeof *c->forced);
    c->walk = malloc(((size_t)trie->max_len + 2) * sizeof *c->walk);
    c->node_at = malloc(2 * ((size_t)trie->max_len + 1) * sizeof *c->node_at); // the walk's, then s_plain_upto's
    c->child_at = malloc(2 * ((size_t)trie->max_len + 1) * sizeof *c->child_at);
    c->words = (trie->n_vocab + 63) / 64;
    c->mask = malloc(((size_t)c->words + 1) * sizeof *c->mask);
    c->key = malloc(sizeof(mc_jsm_state_t) + 8);
    if (!c->prefix || !c->suffix || !c->forced || !c->walk || !c->node_at || !c->child_at || !c->mask || !c->key)
        goto nomem;
    for (int i = 0; i < S_CACHE; i++) {
        c->cache[i].key = malloc(sizeof(mc_jsm_state_t) + 8);
        c->cache[i].mask = malloc(((size_t)c->words + 1) * sizeof *c->mask);
        if (!c->cache[i].key || !c->cache[i].mask) goto nomem;
    }
    if (p->n_prefix_ids) memcpy(c->forced, p->prefix_ids, p->n_prefix_ids * sizeof *c->forced);
    c->n_forced = p->n_prefix_ids;
    c->strip = p->strip_space;
    c->no_cache = p->no_cache;
    mc_jsm_start(&c->m, &c->st);
    return c;
nomem:
    mc_constraint_destroy(&c);
    mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return NULL;
}

void mc_constraint_destroy(mc_constraint_t **pc) {
    if (!pc || !*pc) return;
    mc_constraint_t *c = *pc;
    mc_jschema_destroy(&c->own);
    free(c->prefix), free(c->suffix), free(c->forced), free(c->walk), free(c->node_at), free(c->child_at);
    free(c->mask), free(c->key);
    for (int i = 0; i < S_CACHE; i++) free(c->cache[i].key), free(c->cache[i].mask);
    free(c);
    *pc = NULL;
}

static void s_set(uint64_t *mask, int32_t id) { mask[(uint32_t)id / 64] |= 1ull << ((uint32_t)id % 64); }

// Run len bytes from in; false when one is refused. a and b are scratch; *out
// points to the final state.
static bool s_run(const mc_jsm_t *m, const mc_jsm_state_t *in, const uint8_t *b, size_t len, mc_jsm_state_t *x,
                  mc_jsm_state_t *y, const mc_jsm_state_t **out) {
    const mc_jsm_state_t *cur = in;
    for (size_t i = 0; i < len; i++) {
        mc_jsm_state_t *nx = cur == x ? y : x;
        if (!mc_jsm_step(m, cur, b[i], nx)) return false;
        cur = nx;
    }
    *out = cur;
    return true;
}

// The bytes a token adds to the text now (the stripped space dropped).
static const uint8_t *s_bytes(const mc_constraint_t *c, int32_t id, size_t *len) {
    const uint8_t *b = c->t->pool + c->t->off[id];
    *len = c->t->len[id];
    if (c->strip && *len && b[0] == ' ' && !c->t->is_byte[id]) b++, (*len)--;
    return b;
}

// Every token tried on its own (the first token of a generation that strips a space).
static uint32_t s_mask_each(mc_constraint_t *c, uint64_t *mask) {
    uint32_t n = 0;
    for (uint32_t id = 0; id < c->t->n_vocab; id++) {
        if (!c->t->len[id]) continue;
        size_t len;
        const uint8_t *b = s_bytes(c, (int32_t)id, &len);
        const mc_jsm_state_t *end;
        if (s_run(&c->m, &c->st, b, len, &c->walk[0], &c->walk[1], &end)) s_set(mask, (int32_t)id), n++;
    }
    return n;
}

// The tokens of a plain subtree (rooted at node, one byte below the walk's
// state) with at most room bytes from there: a walk by depth alone.
static uint32_t s_plain_upto(mc_constraint_t *c, uint64_t *mask, uint32_t node, uint32_t room) {
    if (room == 0) return 0;
    const mc_tokentrie_node_t *nodes = c->t->nodes;
    uint32_t n = 0, *at = c->node_at + c->t->max_len + 1, *ci = c->child_at + c->t->max_len + 1;
    int d = 0;
    at[0] = node, ci[0] = 0;
    for (uint32_t i = 0; i < nodes[node].n_tok; i++) s_set(mask, c->t->ids[nodes[node].tok0 + i]), n++;
    while (d >= 0) {
        const mc_tokentrie_node_t *nd = &nodes[at[d]];
        if (ci[d] == nd->n_child || (uint32_t)d + 1 >= room) {
            d--;
            continue;
        }
        const uint32_t ch = nd->child0 + ci[d]++;
        for (uint32_t i = 0; i < nodes[ch].n_tok; i++) s_set(mask, c->t->ids[nodes[ch].tok0 + i]), n++;
        d++;
        at[d] = ch, ci[d] = 0;
    }
    return n;
}

// The trie walked depth first with the state after each path's bytes.
static uint32_t s_mask_walk(mc_constraint_t *c, uint64_t *mask) {
    const mc_tokentrie_t *t = c->t;
    const mc_tokentrie_node_t *nodes = t->nodes;
    uint32_t n = 0;
    uint64_t visited = 0;
    mc_jsm_copy(&c->walk[0], &c->st);
    // Inside an unbounded string, plain subtrees leave the state as it is:
    // all their tokens are allowed without a step.
    int d = 0;
    c->node_at[0] = 0, c->child_at[0] = 0;
    while (d >= 0) {
        const mc_tokentrie_node_t *nd = &nodes[c->node_at[d]];
        if (c->child_at[d] == nd->n_child) {
            d--;
            continue;
        }
        const uint32_t ch = nd->child0 + c->child_at[d]++;
        visited++;
        if (nodes[ch].strok) { // inside a string: whole subtrees of string text need no steps
            uint32_t room;
            const int u8 = mc_jsm_string_state(&c->m, &c->walk[d], &room);
            if (u8 >= 0 && room == UINT32_MAX && (nodes[ch].strok >> u8 & 1)) { // every token of the subtree
                const mc_tokentrie_node_t *cn = &nodes[ch];
                for (uint32_t i = cn->tok0; i < cn->tok_end; i++) s_set(mask, t->ids[i]);
                n += cn->tok_end - cn->tok0;
                continue;
            }
            if (u8 == 0 && nodes[ch].plain) { // one character a byte: those with at most room bytes
                n += s_plain_upto(c, mask, ch, room);
                continue;
            }
        }
        if (!mc_jsm_step(&c->m, &c->walk[d], nodes[ch].byte, &c->walk[d + 1])) continue;
        const mc_tokentrie_node_t *cn = &nodes[ch];
        for (uint32_t i = 0; i < cn->n_tok; i++) s_set(mask, t->ids[cn->tok0 + i]);
        n += cn->n_tok;
        if (cn->n_child) {
            d++;
            c->node_at[d] = ch, c->child_at[d] = 0;
        }
    }
    c->stats.visited += visited;
    return n;
}

static uint64_t s_hash(const uint8_t *k, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 0x100000001b3ull;
    return h;
}

const uint64_t *mc_constraint_mask(mc_constraint_t *c, uint32_t *n_allowed) {
    c->stats.masks++;
    uint64_t *mask = c->mask;
    memset(mask, 0, c->words * sizeof *mask);
    if (c->i_forced < c->n_forced) {
        s_set(mask, c->forced[c->i_forced]);
        *n_allowed = 1;
        return mask;
    }
    if (c->ended || mc_jsm_done(&c->st)) {
        *n_allowed = 0;
        return mask;
    }
    if (c->strip) {
        uint32_t n = s_mask_each(c, mask);
        if (mc_jsm_accepting(&c->m, &c->st))
            for (uint32_t i = 0; i < c->t->n_end; i++) s_set(mask, c->t->end[i]), n++;
        *n_allowed = n;
        return mask;
    }
    const size_t klen = mc_jsm_serialize(&c->st, c->key);
    const uint64_t h = s_hash(c->key, klen);
    s_entry_t *slot = &c->cache[0];
    for (int i = 0; i < S_CACHE; i++) {
        s_entry_t *e = &c->cache[i];
        if (!c->no_cache && e->valid && e->hash == h && e->klen == klen && !memcmp(e->key, c->key, klen)) {
            e->used = ++c->clock;
            c->stats.hits++;
            *n_allowed = e->n_allowed;
            return e->mask;
        }
        if (!e->valid || (slot->valid && e->used < slot->used)) slot = e;
    }
    memset(slot->mask, 0, c->words * sizeof *slot->mask);
    uint32_t n = s_mask_walk(c, slot->mask);
    if (mc_jsm_accepting(&c->m, &c->st))
        for (uint32_t i = 0; i < c->t->n_end; i++) s_set(slot->mask, c->t->end[i]), n++;
    slot->valid = true, slot->hash = h, slot->klen = klen, slot->used = ++c->clock, slot->n_allowed = n;
    memcpy(slot->key, c->key, klen);
    *n_allowed = n;
    return slot->mask;
}

uint32_t mc_constraint_apply(mc_constraint_t *c, float *logits) {
    uint32_t n;
    const uint64_t *mask = mc_constraint_mask(c, &n);
    const uint32_t nv = c->t->n_vocab;
    for (uint32_t w = 0; w < c->words; w++) {
        const uint64_t bits = mask[w];
        if (bits == UINT64_MAX) continue;
        const uint32_t base = w * 64, end = base + 64 < nv ? base + 64 : nv;
        for (uint32_t i = base; i < end; i++)
            if (!(bits >> (i - base) & 1)) logits[i] = -INFINITY;
    }
    return n;
}

mc_err_t mc_constraint_advance(mc_constraint_t *c, int32_t id, char *err) {
    if (id < 0 || (uint32_t)id >= c->t->n_vocab) return mc_err_set(err, MC_ERR_ARG, "token %d is outside the vocabulary", id);
    if (c->i_forced < c->n_forced) {
        if (id != c->forced[c->i_forced]) return mc_err_set(err, MC_ERR_ARG, "token %d is not the forced one", id);
        c->i_forced++;
        return MC_OK;
    }
    if (c->ended || mc_jsm_done(&c->st)) return mc_err_set(err, MC_ERR_ARG, "the document has ended");
    if (mc_tokentrie_is_end(c->t, id)) {
        if (!mc_jsm_accepting(&c->m, &c->st)) return mc_err_set(err, MC_ERR_ARG, "the document cannot end here");
        c->ended = true;
        return MC_OK;
    }
    if (!c->t->len[id]) return mc_err_set(err, MC_ERR_ARG, "token %d has no text", id);
    size_t len;
    const uint8_t *b = s_bytes(c, id, &len);
    const mc_jsm_state_t *end;
    if (!s_run(&c->m, &c->st, b, len, &c->walk[0], &c->walk[1], &end))
        return mc_err_set(err, MC_ERR_ARG, "token %d does not fit the document", id);
    if (end != &c->st) mc_jsm_copy(&c->st, end);
    c->strip = false;
    return MC_OK;
}

bool mc_constraint_complete(const mc_constraint_t *c) {
    return c->i_forced >= c->n_forced && (c->ended || mc_jsm_done(&c->st));
}

bool mc_constraint_accepting(const mc_constraint_t *c) {
    return c->i_forced >= c->n_forced && !c->ended && mc_jsm_accepting(&c->m, &c->st);
}

void mc_constraint_stats(const mc_constraint_t *c, mc_constraint_stats_t *out) { *out = c->stats; }
