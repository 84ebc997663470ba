/*
 * routing: counters, the trace, and the JSON file (cJSON) both ways.
 */
#include "routing.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"

#define S_MAX_FILE (256u << 20)

struct mc_routing {
    uint32_t n_layer, n_expert, k, n_seq, max_trace;
    pthread_mutex_t mu;
    uint64_t tokens;   // rows at layer 0
    uint64_t *rows;    // (L, E)
    uint64_t *pairs;   // (L, E, E), e1 < e2 only
    uint64_t *kept;    // (L, E)
    uint64_t *follow;  // (L, E)
    int32_t *last;     // (n_seq, L, k) the sequence's previous choice
    uint32_t *last_pos; // (n_seq, L) its position + 1 (0: none)
    uint8_t *trace;    // (max_trace, L, k)
    uint64_t n_trace;  // highest recorded row + 1, capped at max_trace
    // The recent window (mc_routing_keep_recent): row r's choices in slot
    // r % n_recent, while recent_row[slot] == r + 1.
    uint32_t n_recent;
    uint8_t *recent;        // (n_recent, L, k)
    uint64_t *recent_row;   // (n_recent) row + 1 in the slot (0: none)
    uint32_t *recent_fill;  // (n_recent) layers recorded of that row
    uint64_t recent_hi;     // highest row + 1 seen
};

mc_routing_t *mc_routing_new(uint32_t n_layer, uint32_t n_expert, uint32_t k, uint32_t n_seq, uint32_t max_trace) {
    if (!n_layer || n_layer > MC_ROUTING_MAX_LAYERS || !n_expert || n_expert > MC_ROUTING_MAX_EXPERTS || !k ||
        k > MC_ROUTING_MAX_K || k > n_expert || !n_seq || max_trace > MC_ROUTING_MAX_TRACE)
        return NULL;
    mc_routing_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->n_layer = n_layer, r->n_expert = n_expert, r->k = k, r->n_seq = n_seq, r->max_trace = max_trace;
    const size_t le = (size_t)n_layer * n_expert;
    r->rows = calloc(le, sizeof *r->rows);
    r->pairs = calloc(le * n_expert, sizeof *r->pairs);
    r->kept = calloc(le, sizeof *r->kept);
    r->follow = calloc(le, sizeof *r->follow);
    r->last = calloc((size_t)n_seq * n_layer * k, sizeof *r->last);
    r->last_pos = calloc((size_t)n_seq * n_layer, sizeof *r->last_pos);
    r->trace = calloc((size_t)max_trace * n_layer * k + 1, 1);
    if (!r->rows || !r->pairs || !r->kept || !r->follow || !r->last || !r->last_pos || !r->trace)
        mc_routing_destroy(&r);
    return r;
}

void mc_routing_destroy(mc_routing_t **pr) {
    if (!pr || !*pr) return;
    mc_routing_t *r = *pr;
    pthread_mutex_destroy(&r->mu);
    free(r->rows), free(r->pairs), free(r->kept), free(r->follow), free(r->last), free(r->last_pos), free(r->trace);
    free(r->recent), free(r->recent_row), free(r->recent_fill);
    free(r);
    *pr = NULL;
}

void mc_routing_hook(void *ctx, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos, const int32_t *sel,
                     uint32_t k) {
    mc_routing_t *r = ctx;
    if (layer >= r->n_layer || seq >= r->n_seq || k != r->k) return; // not this model's shape: nothing to learn
    const uint32_t E = r->n_expert;
    pthread_mutex_lock(&r->mu);
    if (layer == 0) r->tokens++;
    int32_t *last = r->last + ((size_t)seq * r->n_layer + layer) * k;
    uint32_t *lp = r->last_pos + (size_t)seq * r->n_layer + layer;
    const bool follows = *lp && *lp == pos; // the previous position was recorded: pos == (previous pos) + 1
    for (uint32_t j = 0; j < k; j++) {
        const int32_t e = sel[j];
        if (e < 0 || (uint32_t)e >= E) continue;
        r->rows[(size_t)layer * E + (uint32_t)e]++;
        for (uint32_t q = j + 1; q < k; q++) {
            const int32_t f = sel[q];
            if (f < 0 || (uint32_t)f >= E || f == e) continue;
            const uint32_t a = (uint32_t)(e < f ? e : f), b = (uint32_t)(e < f ? f : e);
            r->pairs[((size_t)layer * E + a) * E + b]++;
        }
        if (follows) {
            r->follow[(size_t)layer * E + (uint32_t)e]++;
            for (uint32_t q = 0; q < k; q++)
                if (last[q] == e) r->kept[(size_t)layer * E + (uint32_t)e]++;
        }
        if (row < r->max_trace) r->trace[((size_t)row * r->n_layer + layer) * k + j] = (uint8_t)e;
    }
    if (r->n_recent) {
        const size_t slot = row % r->n_recent;
        if (r->recent_row[slot] != row + 1) { // a newer row takes the slot over
            if (r->recent_row[slot] > row + 1) goto done; // an older row than the slot's: out of the window
            r->recent_row[slot] = row + 1, r->recent_fill[slot] = 0;
        }
        uint8_t *dst = r->recent + ((size_t)slot * r->n_layer + layer) * k;
        for (uint32_t j = 0; j < k; j++) dst[j] = sel[j] >= 0 && (uint32_t)sel[j] < E ? (uint8_t)sel[j] : 0;
        r->recent_fill[slot]++;
        if (row + 1 > r->recent_hi) r->recent_hi = row + 1;
    }
done:
    memcpy(last, sel, k * sizeof *last);
    *lp = pos + 1;
    if (row < r->max_trace && row + 1 > r->n_trace) r->n_trace = row + 1;
    pthread_mutex_unlock(&r->mu);
}

mc_err_t mc_routing_keep_recent(mc_routing_t *r, uint32_t n, char *err) {
    if (!n || n > MC_ROUTING_MAX_TRACE)
        return mc_err_set(err, MC_ERR_ARG, "a recent window of %u tokens (1..%d)", n, MC_ROUTING_MAX_TRACE);
    uint8_t *ring = calloc((size_t)n * r->n_layer * r->k, 1);
    uint64_t *rows = calloc(n, sizeof *rows);
    uint32_t *fill = calloc(n, sizeof *fill);
    if (!ring || !rows || !fill) {
        free(ring), free(rows), free(fill);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_lock(&r->mu);
    free(r->recent), free(r->recent_row), free(r->recent_fill);
    r->recent = ring, r->recent_row = rows, r->recent_fill = fill, r->n_recent = n, r->recent_hi = 0;
    pthread_mutex_unlock(&r->mu);
    return MC_OK;
}

mc_err_t mc_routing_recent(mc_routing_t *r, uint32_t max_tokens, mc_routing_stats_t *out, char *err) {
    const uint32_t L = r->n_layer, E = r->n_expert, k = r->k;
    const size_t le = (size_t)L * E, tok = (size_t)L * k;
    mc_routing_stats_t s = {.n_layer = L, .n_expert = E, .k = k};
    pthread_mutex_lock(&r->mu);
    if (!r->n_recent) {
        pthread_mutex_unlock(&r->mu);
        return mc_err_set(err, MC_ERR_ARG, "routing: no recent window (mc_routing_keep_recent)");
    }
    const uint32_t cap = max_tokens < r->n_recent ? max_tokens : r->n_recent;
    s.rows = calloc(le, sizeof *s.rows);
    s.pairs = calloc(le * E, sizeof *s.pairs);
    s.kept = calloc(le, sizeof *s.kept);
    s.follow = calloc(le, sizeof *s.follow);
    s.trace = malloc((size_t)cap * tok + 1);
    if (!s.rows || !s.pairs || !s.kept || !s.follow || !s.trace) {
        pthread_mutex_unlock(&r->mu);
        mc_routing_stats_free(&s);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    // The newest complete rows, at most cap of them, oldest first: walk
    // back from the highest row over the ring's span.
    const uint64_t hi = r->recent_hi, lo = hi > r->n_recent ? hi - r->n_recent : 0;
    uint64_t first = hi;
    uint32_t n = 0;
    for (uint64_t row = hi; row > lo && n < cap; row--) {
        const size_t slot = (row - 1) % r->n_recent;
        if (r->recent_row[slot] == row && r->recent_fill[slot] >= L) first = row - 1, n++;
    }
    for (uint64_t row = first; row < hi && s.n_trace < n; row++) {
        const size_t slot = row % r->n_recent;
        if (r->recent_row[slot] != row + 1 || r->recent_fill[slot] < L) continue;
        const uint8_t *src = r->recent + slot * tok;
        memcpy(s.trace + (size_t)s.n_trace * tok, src, tok);
        s.n_trace++;
        for (uint32_t l = 0; l < L; l++)
            for (uint32_t j = 0; j < k; j++) {
                const uint8_t e = src[(size_t)l * k + j];
                s.rows[(size_t)l * E + e]++;
                for (uint32_t q = j + 1; q < k; q++) {
                    const uint8_t f = src[(size_t)l * k + q];
                    if (f == e) continue;
                    s.pairs[((size_t)l * E + e) * E + f]++;
                    s.pairs[((size_t)l * E + f) * E + e]++;
                }
            }
    }
    pthread_mutex_unlock(&r->mu);
    s.tokens = s.n_trace;
    *out = s;
    return MC_OK;
}

static cJSON *s_array_u64(const uint64_t *v, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

char *mc_routing_json(mc_routing_t *r) {
    const uint32_t L = r->n_layer, E = r->n_expert, k = r->k;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    pthread_mutex_lock(&r->mu);
    cJSON_AddStringToObject(root, "format", "moe-cluster routing statistics 1");
    cJSON_AddNumberToObject(root, "layers", L);
    cJSON_AddNumberToObject(root, "experts", E);
    cJSON_AddNumberToObject(root, "experts_per_token", k);
    cJSON_AddNumberToObject(root, "tokens", (double)r->tokens);
    cJSON *rows = cJSON_AddArrayToObject(root, "rows"), *pairs = cJSON_AddArrayToObject(root, "pairs");
    cJSON *kept = cJSON_AddArrayToObject(root, "kept"), *follow = cJSON_AddArrayToObject(root, "follow");
    for (uint32_t l = 0; l < L; l++) {
        cJSON_AddItemToArray(rows, s_array_u64(r->rows + (size_t)l * E, E));
        cJSON_AddItemToArray(kept, s_array_u64(r->kept + (size_t)l * E, E));
        cJSON_AddItemToArray(follow, s_array_u64(r->follow + (size_t)l * E, E));
        // Pairs as [e1, e2, count] triples of the counts that are not 0.
        cJSON *pl = cJSON_CreateArray();
        for (uint32_t a = 0; a < E; a++)
            for (uint32_t b = a + 1; b < E; b++) {
                const uint64_t c = r->pairs[((size_t)l * E + a) * E + b];
                if (!c) continue;
                cJSON *t = cJSON_CreateArray();
                cJSON_AddItemToArray(t, cJSON_CreateNumber(a));
                cJSON_AddItemToArray(t, cJSON_CreateNumber(b));
                cJSON_AddItemToArray(t, cJSON_CreateNumber((double)c));
                cJSON_AddItemToArray(pl, t);
            }
        cJSON_AddItemToArray(pairs, pl);
    }
    // The trace: one string per token, each layer's experts as 2 hex digits
    // apiece (compact, and still text).
    cJSON *trace = cJSON_AddArrayToObject(root, "trace");
    char *line = malloc((size_t)L * k * 2 + 1);
    if (!line) { // a file without its trace would mislead: no file
        pthread_mutex_unlock(&r->mu);
        cJSON_Delete(root);
        return NULL;
    }
    for (uint64_t t = 0; t < r->n_trace; t++) {
        const uint8_t *row = r->trace + (size_t)t * L * k;
        for (size_t i = 0; i < (size_t)L * k; i++) snprintf(line + 2 * i, 3, "%02x", row[i]);
        cJSON_AddItemToArray(trace, cJSON_CreateString(line));
    }
    pthread_mutex_unlock(&r->mu);
    free(line);
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return txt;
}

mc_err_t mc_routing_write(mc_routing_t *r, const char *path, char *err) {
    char *txt = mc_routing_json(r);
    if (!txt) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    bool ok = f && fputs(txt, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    cJSON_free(txt);
    return ok ? MC_OK : mc_err_set(err, MC_ERR_IO, "%s: cannot write the routing statistics: %s", path, strerror(errno));
}

// --- reading --------------------------------------------------------------------------

static mc_err_t s_u32(const cJSON *root, const char *key, uint32_t lo, uint32_t hi, uint32_t *out, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi || v->valuedouble != (double)(uint32_t)v->valuedouble)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: '%s' must be a whole number in %u..%u", key, lo, hi);
    *out = (uint32_t)v->valuedouble;
    return MC_OK;
}

static mc_err_t s_count(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return MC_ERR_FORMAT;
    *out = (uint64_t)v->valuedouble;
    return MC_OK;
}

// A (n_layer, n_expert) table of counts.
static mc_err_t s_table(const cJSON *root, const char *key, uint32_t L, uint32_t E, uint64_t *out, char *err) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(t) || (uint32_t)cJSON_GetArraySize(t) != L)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: '%s' must hold %u layers", key, L);
    uint32_t l = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, t) {
        if (!cJSON_IsArray(row) || (uint32_t)cJSON_GetArraySize(row) != E)
            return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: '%s' layer %u must hold %u counts", key, l, E);
        uint32_t e = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, row) {
            if (s_count(v, &out[(size_t)l * E + e]))
                return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: '%s'[%u][%u] is not a count", key, l, e);
            e++;
        }
        l++;
    }
    return MC_OK;
}

static int s_hex(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static mc_err_t s_parse(const cJSON *root, size_t len, mc_routing_stats_t *s, char *err) {
    mc_err_t rc;
    if ((rc = s_u32(root, "layers", 1, MC_ROUTING_MAX_LAYERS, &s->n_layer, err)) ||
        (rc = s_u32(root, "experts", 1, MC_ROUTING_MAX_EXPERTS, &s->n_expert, err)) ||
        (rc = s_u32(root, "experts_per_token", 1, MC_ROUTING_MAX_K, &s->k, err)))
        return rc;
    if (s->k > s->n_expert) return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: more experts per token than experts");
    if (s_count(cJSON_GetObjectItemCaseSensitive(root, "tokens"), &s->tokens))
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: 'tokens' is not a count");
    const uint32_t L = s->n_layer, E = s->n_expert, k = s->k;
    const size_t le = (size_t)L * E;
    // Every count takes at least two bytes of the file ("0,"): a file cannot
    // declare tables far larger than itself.
    if ((uint64_t)le * E > ((uint64_t)1 << 23) || 2 * (uint64_t)le > len)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: %u layers x %u experts do not fit a file of %zu bytes",
                          L, E, len);
    s->rows = calloc(le, sizeof *s->rows);
    s->pairs = calloc(le * E, sizeof *s->pairs);
    s->kept = calloc(le, sizeof *s->kept);
    s->follow = calloc(le, sizeof *s->follow);
    if (!s->rows || !s->pairs || !s->kept || !s->follow) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if ((rc = s_table(root, "rows", L, E, s->rows, err)) || (rc = s_table(root, "kept", L, E, s->kept, err)) ||
        (rc = s_table(root, "follow", L, E, s->follow, err)))
        return rc;
    const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(root, "pairs");
    if (!cJSON_IsArray(pairs) || (uint32_t)cJSON_GetArraySize(pairs) != L)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: 'pairs' must hold %u layers", L);
    uint32_t l = 0;
    const cJSON *pl, *t;
    cJSON_ArrayForEach(pl, pairs) {
        if (!cJSON_IsArray(pl)) return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: 'pairs'[%u] is not a list", l);
        cJSON_ArrayForEach(t, pl) {
            uint64_t a, b, c;
            if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) != 3 || s_count(cJSON_GetArrayItem(t, 0), &a) ||
                s_count(cJSON_GetArrayItem(t, 1), &b) || s_count(cJSON_GetArrayItem(t, 2), &c) || a >= b || b >= E)
                return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: 'pairs'[%u] holds something other than "
                                                      "[e1, e2, count] with e1 < e2 < %u", l, E);
            s->pairs[((size_t)l * E + a) * E + b] = s->pairs[((size_t)l * E + b) * E + a] = c;
        }
        l++;
    }
    const cJSON *trace = cJSON_GetObjectItemCaseSensitive(root, "trace");
    if (!cJSON_IsArray(trace) || cJSON_GetArraySize(trace) > MC_ROUTING_MAX_TRACE)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: 'trace' must be a list of at most %d tokens",
                          MC_ROUTING_MAX_TRACE);
    s->n_trace = (uint32_t)cJSON_GetArraySize(trace);
    if ((uint64_t)s->n_trace * L * k * 2 > len)
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: a trace of %u tokens does not fit a file of %zu bytes",
                          s->n_trace, len);
    if (!(s->trace = malloc((size_t)s->n_trace * L * k + 1))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    uint32_t i = 0;
    cJSON_ArrayForEach(t, trace) {
        if (!cJSON_IsString(t) || strlen(t->valuestring) != (size_t)L * k * 2)
            return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: trace token %u is not %u hex pairs", i, L * k);
        for (size_t j = 0; j < (size_t)L * k; j++) {
            const int hi = s_hex(t->valuestring[2 * j]), lo = s_hex(t->valuestring[2 * j + 1]);
            if (hi < 0 || lo < 0 || (uint32_t)(hi * 16 + lo) >= E)
                return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: trace token %u names an expert beyond %u", i,
                                  E - 1);
            s->trace[(size_t)i * L * k + j] = (uint8_t)(hi * 16 + lo);
        }
        i++;
    }
    return MC_OK;
}

mc_err_t mc_routing_parse(const char *buf, size_t len, mc_routing_stats_t *out, char *err) {
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mc_err_set(err, MC_ERR_FORMAT, "routing statistics: not a JSON object");
    }
    mc_routing_stats_t s = {0};
    mc_err_t rc = s_parse(root, len, &s, err);
    cJSON_Delete(root);
    if (rc) {
        mc_routing_stats_free(&s);
        return rc;
    }
    *out = s;
    return MC_OK;
}

mc_err_t mc_routing_load(const char *path, mc_routing_stats_t *out, char *err) {
    char *buf;
    size_t n;
    mc_err_t rc = mc_file_read(path, S_MAX_FILE, &buf, &n, err);
    if (rc) return rc;
    char sub[MC_ERR_LEN];
    rc = mc_routing_parse(buf, n, out, sub);
    free(buf);
    return rc ? mc_err_set(err, rc, "%s: %s", path, sub) : MC_OK;
}

void mc_routing_stats_free(mc_routing_stats_t *s) {
    free(s->rows), free(s->pairs), free(s->kept), free(s->follow), free(s->trace);
    memset(s, 0, sizeof *s);
}
