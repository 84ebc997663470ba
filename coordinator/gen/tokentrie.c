/*
 * tokentrie: built from the tokens sorted by their bytes; a range of sorted
 * tokens sharing a prefix becomes one node, whose children are the groups
 * of the range by their next byte (allocated side by side before any of
 * them is filled, so each node's children are contiguous).
 */
#include "tokentrie.h"

#include <stdlib.h>
#include <string.h>

// A token to sort: its bytes (qsort's comparator gets no context, so they travel with it).
typedef struct {
    const uint8_t *b;
    uint32_t len;
    int32_t id;
} s_tok_t;

static int s_cmp(const void *pa, const void *pb) {
    const s_tok_t *a = pa, *b = pb;
    const uint32_t l = a->len < b->len ? a->len : b->len;
    const int c = memcmp(a->b, b->b, l);
    if (c) return c;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

// Node `node` holds the sorted ids [lo, hi), which share their first d bytes.
static void s_build(mc_tokentrie_t *t, const int32_t *order, uint32_t node, uint32_t lo, uint32_t hi, uint32_t d,
                    uint32_t *n_ids) {
    uint32_t k = lo;
    mc_tokentrie_node_t *nd = &t->nodes[node];
    nd->tok0 = *n_ids;
    while (k < hi && t->len[order[k]] == d) t->ids[(*n_ids)++] = order[k++];
    nd->n_tok = k - lo;
    uint32_t groups = 0;
    for (uint32_t i = k; i < hi; i++)
        if (i == k || t->pool[t->off[order[i]] + d] != t->pool[t->off[order[i - 1]] + d]) groups++;
    nd->child0 = t->n_nodes;
    nd->n_child = (uint16_t)groups;
    t->n_nodes += groups;
    uint32_t child = nd->child0;
    for (uint32_t i = k; i < hi;) {
        const uint8_t b = t->pool[t->off[order[i]] + d];
        uint32_t j = i + 1;
        while (j < hi && t->pool[t->off[order[j]] + d] == b) j++;
        memset(&t->nodes[child], 0, sizeof t->nodes[child]);
        t->nodes[child].byte = b;
        s_build(t, order, child, i, j, d + 1, n_ids);
        child++;
        i = j;
    }
    nd = &t->nodes[node];
    nd->tok_end = *n_ids;
    bool plain = node == 0 || (nd->byte >= 0x20 && nd->byte < 0x7F && nd->byte != '"' && nd->byte != '\\');
    for (uint32_t c = 0; c < nd->n_child && plain; c++) plain = t->nodes[nd->child0 + c].plain;
    nd->plain = plain;
    uint8_t strok = 0;
    for (int st = 0; st < 8 && node; st++) {
        const int nx = mc_tokentrie_utf8_next(st, nd->byte);
        bool ok = nx >= 0;
        for (uint32_t c = 0; c < nd->n_child && ok; c++) ok = t->nodes[nd->child0 + c].strok >> nx & 1;
        if (ok) strok |= (uint8_t)(1u << st);
    }
    nd->strok = strok;
}

int mc_tokentrie_utf8_next(int state, uint8_t b) {
    const bool cont = b >= 0x80 && b <= 0xBF;
    switch (state) {
    case 0:
        if (b >= 0x20 && b < 0x80) return b == '"' || b == '\\' ? -1 : 0;
        if (b >= 0xC2 && b <= 0xDF) return 1;
        if (b == 0xE0) return 3;
        if (b == 0xED) return 4;
        if (b >= 0xE1 && b <= 0xEF) return 2;
        if (b == 0xF0) return 6;
        if (b >= 0xF1 && b <= 0xF3) return 5;
        if (b == 0xF4) return 7;
        return -1;
    case 1: return cont ? 0 : -1;
    case 2: return cont ? 1 : -1;
    case 3: return b >= 0xA0 && b <= 0xBF ? 1 : -1;
    case 4: return b >= 0x80 && b <= 0x9F ? 1 : -1;
    case 5: return cont ? 2 : -1;
    case 6: return b >= 0x90 && b <= 0xBF ? 2 : -1;
    case 7: return b >= 0x80 && b <= 0x8F ? 2 : -1;
    default: return -1;
    }
}

mc_tokentrie_t *mc_tokentrie_new(const mc_tokenizer_t *tok, uint32_t n_vocab, const int32_t *end, uint32_t n_end,
                                 char *err) {
    mc_tokentrie_t *t = calloc(1, sizeof *t);
    int32_t *order = NULL;
    s_tok_t *sorted = NULL;
    if (!t) goto nomem;
    t->n_vocab = n_vocab;
    t->off = calloc(n_vocab ? n_vocab : 1, sizeof *t->off);
    t->len = calloc(n_vocab ? n_vocab : 1, sizeof *t->len);
    t->is_byte = calloc(n_vocab ? n_vocab : 1, 1);
    if (!t->off || !t->len || !t->is_byte) goto nomem;
    for (uint32_t i = 0; i < n_end && t->n_end < MC_TOKENTRIE_MAX_END; i++)
        if (end[i] >= 0 && (uint32_t)end[i] < n_vocab) t->end[t->n_end++] = end[i];
    const uint32_t nv_tok = mc_tokenizer_n_vocab(tok);
    size_t total = 0, cap = 0;
    uint32_t n_in = 0;
    char buf[MC_TOKENIZER_MAX_PIECE];
    for (uint32_t id = 0; id < n_vocab && id < nv_tok; id++) {
        if (mc_tokentrie_is_end(t, (int32_t)id)) continue;
        const size_t len = mc_tokenizer_token_bytes(tok, (int32_t)id, buf, sizeof buf);
        if (!len) continue;
        if (total + len > cap) {
            size_t c = cap ? cap * 2 : 1 << 16;
            while (c < total + len) c *= 2;
            uint8_t *p = realloc(t->pool, c);
            if (!p) goto nomem;
            t->pool = p, cap = c;
        }
        memcpy(t->pool + total, buf, len);
        t->off[id] = (uint32_t)total, t->len[id] = (uint32_t)len;
        total += len;
        n_in++;
        if (len > t->max_len) t->max_len = (uint32_t)len;
        size_t plen = 0;
        const char *piece = mc_tokenizer_piece(tok, (int32_t)id, &plen);
        t->is_byte[id] = mc_tokenizer_kind(tok) == MC_TOKENIZER_SPM && piece && plen == 6 && !memcmp(piece, "<0x", 3) &&
                         piece[5] == '>';
    }
    order = malloc((n_in ? n_in : 1) * sizeof *order);
    sorted = malloc((n_in ? n_in : 1) * sizeof *sorted);
    t->ids = malloc((n_in ? n_in : 1) * sizeof *t->ids);
    t->nodes = malloc((total + 1) * sizeof *t->nodes);
    if (!order || !sorted || !t->ids || !t->nodes) goto nomem;
    uint32_t k = 0;
    for (uint32_t id = 0; id < n_vocab; id++)
        if (t->len[id]) sorted[k++] = (s_tok_t){t->pool + t->off[id], t->len[id], (int32_t)id};
    qsort(sorted, n_in, sizeof *sorted, s_cmp);
    for (uint32_t i = 0; i < n_in; i++) order[i] = sorted[i].id;
    free(sorted);
    sorted = NULL;
    memset(&t->nodes[0], 0, sizeof t->nodes[0]);
    t->n_nodes = 1;
    uint32_t n_ids = 0;
    s_build(t, order, 0, 0, n_in, 0, &n_ids);
    free(order);
    return t;
nomem:
    free(order), free(sorted);
    mc_tokentrie_destroy(&t);
    mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return NULL;
}

void mc_tokentrie_destroy(mc_tokentrie_t **pt) {
    if (!pt || !*pt) return;
    mc_tokentrie_t *t = *pt;
    free(t->nodes), free(t->ids), free(t->off), free(t->len), free(t->pool), free(t->is_byte);
    free(t);
    *pt = NULL;
}

bool mc_tokentrie_is_end(const mc_tokentrie_t *t, int32_t id) {
    for (uint32_t i = 0; i < t->n_end; i++)
        if (t->end[i] == id) return true;
    return false;
}
