/*
 * scheduler: slots, the queue, batch assembly, sampling, stop strings and
 * callbacks.
 */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "clock.h"

// Prompt rows one step takes at most (beyond one row per generating
// sequence): a long prompt does not hold the others' next tokens up for
// longer than one pass of this size.
#define S_PROMPT_ROWS_PER_STEP 256

typedef struct s_gen s_gen_t;
struct s_gen {
    uint64_t id;
    mc_gen_params_t p; // pointers below replace the caller's
    int32_t *prompt;
    char stop[MC_SCHEDULER_MAX_STOP][MC_SCHEDULER_STOP_LEN + 1];
    size_t stop_len[MC_SCHEDULER_MAX_STOP];
    mc_sampler_t *smp;
    mc_detok_t dt;
    int slot;          // -1 while queued
    uint32_t done;     // prompt tokens in the cache
    uint32_t n_gen;    // tokens sampled
    int32_t last;      // the last sampled token (not yet in the cache)
    mc_constraint_t *con; // constrained decoding; NULL: free text
    mc_draft_t *draft; // speculative decoding's guesses; NULL: off
    mc_draft_params_t draft_p;
    int32_t *guess;    // (draft_p.k_max) this pass's guesses
    uint32_t n_guess;
    uint32_t row0;     // this pass: the logits row of its first generating row
    int32_t pre;       // its next id, sampled ahead in parallel with the others' (-1: none)
    char *held;        // text not yet handed out (a stop string may begin in it)
    size_t held_len, held_cap;
    double t_submit, t_first;
    s_gen_t *next;     // queue / running list
};

typedef struct {
    int32_t *tokens; // (n_ctx) ids whose keys and values are in the cache
    uint32_t n_tokens;
    bool busy;
} s_slot_t;

// A prefix kept outside the slots: its tokens and their keys and values
// (mc_engine_kv_save's layout), so a prompt that starts the same way later
// loads them instead of evaluating them again.
typedef struct s_saved s_saved_t;
struct s_saved {
    int32_t *tokens; // (n)
    uint32_t n;
    void *kv;        // mc_engine_kv_bytes(n)
    size_t bytes;    // kv and tokens: what counts against the budget
    uint64_t used;   // the scheduler's clock when last saved or loaded (LRU)
    s_saved_t *next;
};

// Prefixes shorter than this are not worth a saved copy.
#define S_SAVE_MIN_TOKENS 16

struct mc_sched {
    mc_engine_t *e;
    const mc_tokenizer_t *tok;
    // Tokens that end an answer (mc_chat_end_ids: EOS, ChatML's and GLM's
    // turn ends), n_eog of them.
    int32_t eog[MC_CHAT_MAX_END];
    uint32_t n_eog;
    uint32_t n_ctx, n_vocab;
    s_slot_t *slots;  // (n_seq)
    uint32_t n_slots;
    s_gen_t *queue;   // waiting for a slot, in submission order
    s_gen_t *running; // in a slot
    uint64_t next_id;
    char *piece;      // one detokenized piece
    size_t piece_cap;
    // One step's batch.
    int32_t *ids;
    uint32_t *seq, *pos;
    uint8_t *want;
    s_gen_t **row_gen; // generation of each row
    uint32_t cap_rows;
    float *logits;     // (wanted rows, n_vocab)
    uint32_t cap_logits;
    // The prefix cache beyond the slots (mc_scheduler_set_prefix_cache).
    s_saved_t *saved;
    size_t saved_bytes, saved_max;
    uint64_t clock;
    mc_prefix_stats_t stats;
    mc_spec_stats_t spec;
    mc_tokentrie_t *trie;  // built on the first constrained generation
    float *masked;         // (n_vocab) a constrained row
    mc_constrain_stats_t con;
};

const char *mc_finish_name(mc_finish_t f) {
    switch (f) {
    case MC_FINISH_STOP: return "stop";
    case MC_FINISH_LENGTH: return "length";
    case MC_FINISH_CANCELLED: return "cancelled";
    case MC_FINISH_ERROR: return "error";
    default: return "none";
    }
}

mc_gen_params_t mc_gen_params_default(void) {
    mc_gen_params_t p = {0};
    p.sampling = mc_sampler_params_default();
    p.sampling.temp = 0.0f;
    return p;
}

mc_scheduler_t *mc_scheduler_new(mc_engine_t *e, const mc_tokenizer_t *tok, char *err) {
    mc_scheduler_t *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->e = e;
    s->tok = tok;
    s->n_eog = (uint32_t)mc_chat_end_ids(tok, s->eog);
    s->n_ctx = mc_engine_n_ctx(e);
    s->n_vocab = mc_engine_model(e)->hp.n_vocab;
    s->n_slots = mc_engine_n_seq(e);
    s->piece_cap = mc_detok_max_bytes(tok);
    s->piece = malloc(s->piece_cap);
    s->slots = calloc(s->n_slots, sizeof *s->slots);
    if (!s->piece || !s->slots) goto nomem;
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (!(s->slots[i].tokens = malloc(s->n_ctx * sizeof(int32_t)))) goto nomem;
    return s;
nomem:
    mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_scheduler_destroy(&s);
    return NULL;
}

static void s_gen_free(s_gen_t *g) {
    mc_sampler_destroy(&g->smp);
    mc_draft_destroy(&g->draft);
    mc_constraint_destroy(&g->con);
    free(g->prompt), free(g->held), free(g->guess);
    free(g);
}

void mc_scheduler_destroy(mc_scheduler_t **ps) {
    if (!ps || !*ps) return;
    mc_scheduler_t *s = *ps;
    for (s_gen_t *g = s->queue, *n; g; g = n) n = g->next, s_gen_free(g);
    for (s_gen_t *g = s->running, *n; g; g = n) n = g->next, s_gen_free(g);
    for (uint32_t i = 0; s->slots && i < s->n_slots; i++) free(s->slots[i].tokens);
    for (s_saved_t *v = s->saved, *n; v; v = n) n = v->next, free(v->tokens), free(v->kv), free(v);
    free(s->slots), free(s->piece), free(s->ids), free(s->seq), free(s->pos), free(s->want), free(s->row_gen);
    free(s->logits), free(s->masked);
    mc_tokentrie_destroy(&s->trie);
    free(s);
    *ps = NULL;
}

mc_err_t mc_scheduler_submit(mc_scheduler_t *s, const mc_gen_params_t *p, uint64_t *id, char *err) {
    if (!p->n_prompt) return mc_err_set(err, MC_ERR_ARG, "the prompt is empty");
    if (p->n_prompt > s->n_ctx)
        return mc_err_set(err, MC_ERR_RANGE, "the prompt has %u tokens, the context holds %u (prompt and answer)",
                          p->n_prompt, s->n_ctx);
    if (p->n_stop > MC_SCHEDULER_MAX_STOP) return mc_err_set(err, MC_ERR_ARG, "at most %d stop strings", MC_SCHEDULER_MAX_STOP);
    for (uint32_t i = 0; i < p->n_stop; i++) {
        size_t len = strlen(p->stop[i]);
        if (len == 0 || len > MC_SCHEDULER_STOP_LEN)
            return mc_err_set(err, MC_ERR_ARG, "stop strings must have 1..%d bytes", MC_SCHEDULER_STOP_LEN);
    }
    for (uint32_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || (uint32_t)p->prompt[i] >= s->n_vocab)
            return mc_err_set(err, MC_ERR_RANGE, "token id %d is outside the vocabulary (0..%u)", p->prompt[i],
                              s->n_vocab - 1);
    s_gen_t *g = calloc(1, sizeof *g);
    if (!g) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    g->pre = -1;
    g->p = *p;
    g->prompt = malloc(p->n_prompt * sizeof(int32_t));
    g->smp = mc_sampler_new(&p->sampling, s->n_vocab);
    if (!g->prompt || !g->smp) {
        bool bad = g->prompt && !g->smp;
        s_gen_free(g);
        return bad ? mc_err_set(err, MC_ERR_ARG, "bad sampling parameters") : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    memcpy(g->prompt, p->prompt, p->n_prompt * sizeof(int32_t));
    g->p.prompt = g->prompt;
    if (p->speculate) {
        g->draft_p = *p->speculate;
        char derr[MC_ERR_LEN];
        g->draft = mc_draft_new(&g->draft_p, s->n_ctx, derr);
        g->guess = g->draft ? malloc(g->draft_p.k_max * sizeof *g->guess) : NULL;
        if (!g->guess) {
            const bool bad = !g->draft;
            s_gen_free(g);
            return bad ? mc_err_set(err, MC_ERR_ARG, "%s", derr) : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        }
        mc_draft_push(g->draft, g->prompt, p->n_prompt);
    }
    g->p.speculate = NULL;
    if (p->constrain) {
        char cerr[MC_ERR_LEN];
        if (!s->trie && !(s->trie = mc_tokentrie_new(s->tok, s->n_vocab, s->eog, s->n_eog, cerr))) {
            s_gen_free(g);
            return mc_err_set(err, mc_err_code(cerr, MC_ERR_NOMEM), "%s", cerr);
        }
        if (!s->masked && !(s->masked = malloc(s->n_vocab * sizeof *s->masked))) {
            s_gen_free(g);
            return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        }
        mc_constraint_params_t cp = *p->constrain;
        cp.strip_space = p->strip_space && mc_tokenizer_kind(s->tok) == MC_TOKENIZER_SPM;
        if (!(g->con = mc_constraint_new(s->trie, &cp, cerr))) {
            s_gen_free(g);
            return mc_err_set(err, mc_err_code(cerr, MC_ERR_ARG), "%s", cerr);
        }
    }
    g->p.constrain = NULL;
    for (uint32_t i = 0; i < p->n_stop; i++) {
        g->stop_len[i] = strlen(p->stop[i]);
        memcpy(g->stop[i], p->stop[i], g->stop_len[i] + 1);
    }
    g->p.stop = NULL;
    for (uint32_t i = 0; i < p->n_prompt; i++) mc_sampler_accept(g->smp, g->prompt[i]);
    mc_detok_init(&g->dt, p->strip_space);
    g->slot = -1;
    g->id = ++s->next_id;
    g->t_submit = mc_clock_s();
    s_gen_t **tail = &s->queue;
    while (*tail) tail = &(*tail)->next;
    *tail = g;
    if (id) *id = g->id;
    return MC_OK;
}

uint32_t mc_scheduler_pending(const mc_scheduler_t *s) {
    uint32_t n = 0;
    for (const s_gen_t *g = s->queue; g; g = g->next) n++;
    for (const s_gen_t *g = s->running; g; g = g->next) n++;
    return n;
}

// --- text --------------------------------------------------------------------------

static bool s_held_add(s_gen_t *g, const char *text, size_t len) {
    if (!len) return true;
    if (g->held_len + len > g->held_cap) {
        size_t cap = g->held_cap ? g->held_cap : 256;
        while (cap < g->held_len + len) cap *= 2;
        char *h = realloc(g->held, cap);
        if (!h) return false;
        g->held = h, g->held_cap = cap;
    }
    memcpy(g->held + g->held_len, text, len);
    g->held_len += len;
    return true;
}

// Hand out what is certain after the token id: everything before a stop
// string (*stopped then set), else everything but a tail that may begin
// one. Returns the callback's wish to go on.
static bool s_emit(s_gen_t *g, int32_t id, bool *stopped) {
    size_t out = g->held_len, keep = 0;
    *stopped = false;
    for (uint32_t i = 0; i < g->p.n_stop; i++) {
        const size_t sl = g->stop_len[i];
        for (size_t at = 0; at + sl <= g->held_len; at++)
            if (!memcmp(g->held + at, g->stop[i], sl)) {
                if (at < out) out = at;
                *stopped = true;
                break;
            }
    }
    if (!*stopped)
        for (uint32_t i = 0; i < g->p.n_stop; i++)
            for (size_t k = g->stop_len[i] - 1; k > keep; k--)
                if (k <= g->held_len && !memcmp(g->held + g->held_len - k, g->stop[i], k)) {
                    keep = k;
                    break;
                }
    if (!*stopped) out = g->held_len - keep;
    bool go_on = !g->p.on_text || g->p.on_text(g->p.user, id, g->held ? g->held : "", out);
    if (out < g->held_len) memmove(g->held, g->held + out, g->held_len - out);
    g->held_len -= out;
    if (*stopped) g->held_len = 0; // the stop string and what follows are not part of the text
    return go_on;
}

// --- lifetime of a running generation --------------------------------------------------

static void s_finish(mc_scheduler_t *s, s_gen_t *g, mc_finish_t why, const char *err) {
    if (why == MC_FINISH_LENGTH) { // the rest of the text is certain now
        size_t w = mc_detok_flush(&g->dt, s->piece, s->piece_cap);
        if (s_held_add(g, s->piece, w) && g->held_len && g->p.on_text) g->p.on_text(g->p.user, -1, g->held, g->held_len);
    }
    const double now = mc_clock_s();
    mc_gen_usage_t u = {g->p.n_prompt, g->n_gen, (g->t_first ? g->t_first : now) - g->t_submit,
                        g->t_first ? now - g->t_first : 0.0};
    // The constraint goes before on_done: it may borrow a compiled schema
    // from the caller (mc_constraint_params_t.compiled), who may free it
    // as soon as it hears the generation is done.
    mc_constraint_destroy(&g->con);
    if (g->p.on_done) g->p.on_done(g->p.user, why, &u, err ? err : "");
    // Unlink it and free its slot (the cache stays for a later prompt).
    for (s_gen_t **pp = &s->running; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    if (g->slot >= 0) s->slots[g->slot].busy = false;
    s_gen_free(g);
}

void mc_scheduler_cancel(mc_scheduler_t *s, uint64_t id) {
    for (s_gen_t **pp = &s->queue; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            s_gen_t *g = *pp;
            *pp = g->next;
            g->next = s->running, s->running = g; // s_finish unlinks from running
            s_finish(s, g, MC_FINISH_CANCELLED, NULL);
            return;
        }
    for (s_gen_t *g = s->running; g; g = g->next)
        if (g->id == id) {
            s_finish(s, g, MC_FINISH_CANCELLED, NULL);
            return;
        }
}

// --- the prefix cache ---------------------------------------------------------------

// Drop the least recently used saved prefixes, never keep, until at most
// bytes remain (or only keep does).
static void s_evict(mc_scheduler_t *s, size_t bytes, const s_saved_t *keep) {
    while (s->saved_bytes > bytes) {
        s_saved_t **lru = NULL;
        for (s_saved_t **pp = &s->saved; *pp; pp = &(*pp)->next)
            if (*pp != keep && (!lru || (*pp)->used < (*lru)->used)) lru = pp;
        if (!lru) return;
        s_saved_t *v = *lru;
        *lru = v->next;
        s->saved_bytes -= v->bytes;
        free(v->tokens), free(v->kv), free(v);
    }
}

void mc_scheduler_set_prefix_cache(mc_scheduler_t *s, size_t max_bytes) {
    s->saved_max = max_bytes;
    s_evict(s, max_bytes, NULL);
}

void mc_scheduler_prefix_stats(const mc_scheduler_t *s, mc_prefix_stats_t *out) {
    *out = s->stats;
    out->saved = 0;
    for (const s_saved_t *v = s->saved; v; v = v->next) out->saved++;
    out->saved_bytes = s->saved_bytes;
}

static uint32_t s_common(const int32_t *a, uint32_t na, const int32_t *b, uint32_t nb) {
    uint32_t c = 0;
    while (c < na && c < nb && a[c] == b[c]) c++;
    return c;
}

// Keep slot i's cache (about to be overwritten past its first keep tokens) as a saved
// prefix, within the budget, least recently used ones making room. Saved
// prefixes that are a start of it go (it covers them); if it is a start of
// one already kept, that one is only marked used. Best effort: without the
// memory nothing is kept, which costs time later, never results.
static void s_save(mc_scheduler_t *s, uint32_t i, uint32_t keep, const s_saved_t *protect) {
    const s_slot_t *sl = &s->slots[i];
    const uint32_t n = sl->n_tokens;
    if (!s->saved_max || n < S_SAVE_MIN_TOKENS || n <= keep) return;
    const size_t kvb = mc_engine_kv_bytes(s->e, n), bytes = kvb + (size_t)n * sizeof(int32_t);
    if (bytes > s->saved_max) return;
    for (s_saved_t **pp = &s->saved; *pp;) {
        s_saved_t *v = *pp;
        const uint32_t c = s_common(v->tokens, v->n, sl->tokens, n);
        if (c == n) { // already kept, whole
            v->used = ++s->clock;
            return;
        }
        if (c == v->n && v != protect) { // a start of this one
            *pp = v->next;
            s->saved_bytes -= v->bytes;
            free(v->tokens), free(v->kv), free(v);
            continue;
        }
        pp = &v->next;
    }
    s_evict(s, s->saved_max - bytes, protect);
    if (s->saved_bytes + bytes > s->saved_max) return;
    s_saved_t *v = calloc(1, sizeof *v);
    if (v) v->tokens = malloc((size_t)n * sizeof(int32_t)), v->kv = malloc(kvb);
    if (!v || !v->tokens || !v->kv || mc_engine_kv_save(s->e, i, n, v->kv, NULL)) {
        if (v) free(v->tokens), free(v->kv), free(v);
        return;
    }
    memcpy(v->tokens, sl->tokens, (size_t)n * sizeof(int32_t));
    v->n = n, v->bytes = bytes, v->used = ++s->clock;
    v->next = s->saved, s->saved = v;
    s->saved_bytes += bytes;
}

// Free slots to queued generations, in order. A generation goes to the free
// slot whose cache shares the longest start with its prompt (a chat's
// history, evaluated in place); when another slot, busy or not, or a saved
// prefix shares more, those positions are copied in instead. Either way
// only what is new is evaluated, and the last prompt token always is (its
// logits are needed).
static void s_admit(mc_scheduler_t *s) {
    while (s->queue) {
        s_gen_t *g = s->queue;
        int best = -1;
        uint32_t best_len = 0;
        for (uint32_t i = 0; i < s->n_slots; i++) {
            if (s->slots[i].busy) continue;
            const uint32_t c = s_common(s->slots[i].tokens, s->slots[i].n_tokens, g->prompt, g->p.n_prompt);
            if (best < 0 || c > best_len) best = (int)i, best_len = c;
        }
        if (best < 0) return;
        s->queue = g->next;
        g->next = s->running, s->running = g;
        g->slot = best;
        s_slot_t *sl = &s->slots[best];
        sl->busy = true;
        const uint32_t limit = g->p.prompt_logits ? 0 : g->p.n_prompt - 1;
        // A longer start elsewhere: another slot's cache or a saved prefix.
        int from = -1;
        s_saved_t *from_saved = NULL;
        uint32_t other = best_len;
        for (uint32_t i = 0; i < s->n_slots; i++) {
            if ((int)i == best) continue;
            const uint32_t c = s_common(s->slots[i].tokens, s->slots[i].n_tokens, g->prompt, g->p.n_prompt);
            if (c > other) other = c, from = (int)i;
        }
        for (s_saved_t *v = s->saved; v; v = v->next) {
            const uint32_t c = s_common(v->tokens, v->n, g->prompt, g->p.n_prompt);
            if (c > other) other = c, from_saved = v, from = -1;
        }
        uint32_t reuse = best_len < limit ? best_len : limit;
        const uint32_t moved = other < limit ? other : limit;
        if (moved > reuse) {
            s_save(s, (uint32_t)best, best_len, from_saved);
            const mc_err_t rc = from_saved ? mc_engine_kv_load(s->e, (uint32_t)best, moved, from_saved->kv, from_saved->n, NULL)
                                           : mc_engine_kv_copy(s->e, (uint32_t)from, (uint32_t)best, moved, NULL);
            if (rc == MC_OK) {
                memcpy(sl->tokens, g->prompt, (size_t)moved * sizeof(int32_t));
                if (from_saved) from_saved->used = ++s->clock;
                reuse = moved;
                s->stats.copied++;
            }
        } else {
            s_save(s, (uint32_t)best, best_len, NULL);
        }
        s->stats.lookups++;
        s->stats.hits += reuse > 0;
        s->stats.tokens_reused += reuse;
        g->done = reuse;
        sl->n_tokens = g->done;
    }
}

static bool s_reserve(mc_scheduler_t *s, uint32_t rows, uint32_t wanted) {
    if (rows > s->cap_rows) {
        free(s->ids), free(s->seq), free(s->pos), free(s->want), free(s->row_gen);
        s->ids = malloc(rows * sizeof *s->ids);
        s->seq = malloc(rows * sizeof *s->seq);
        s->pos = malloc(rows * sizeof *s->pos);
        s->want = malloc(rows);
        s->row_gen = malloc(rows * sizeof *s->row_gen);
        s->cap_rows = s->ids && s->seq && s->pos && s->want && s->row_gen ? rows : 0;
        if (!s->cap_rows) return false;
    }
    if (wanted > s->cap_logits) {
        free(s->logits);
        s->logits = malloc((size_t)wanted * s->n_vocab * sizeof(float));
        s->cap_logits = s->logits ? wanted : 0;
        if (!s->logits) return false;
    }
    return true;
}

// Sample g's next token from its logits row and hand out its text. False
// when that ended g (it is freed then).
static bool s_sample(mc_scheduler_t *s, s_gen_t *g, const float *logits) {
    if (g->con) { // the row with what the constraint refuses at -inf
        const double t0 = mc_clock_s();
        memcpy(s->masked, logits, s->n_vocab * sizeof *s->masked);
        const uint32_t allowed = mc_constraint_apply(g->con, s->masked);
        s->con.mask_s += mc_clock_s() - t0;
        s->con.masks++;
        logits = s->masked;
        if (!allowed) {
            s_finish(s, g, MC_FINISH_ERROR, "constrained decoding: no token of the vocabulary can continue the document");
            return false;
        }
    }
    // A draw made ahead (s_presample) is the same call on the same sampler
    // state: the sampler is touched by nothing else between.
    const int32_t id = g->pre >= 0 ? g->pre : mc_sampler_sample(g->smp, logits);
    g->pre = -1;
    if (g->con && mc_constraint_advance(g->con, id, NULL)) { // cannot happen: the sampler picks an allowed id
        s_finish(s, g, MC_FINISH_ERROR, "constrained decoding: the sampled token does not fit");
        return false;
    }
    mc_sampler_accept(g->smp, id);
    if (g->draft) mc_draft_push(g->draft, &id, 1);
    if (!g->n_gen) g->t_first = mc_clock_s();
    g->n_gen++;
    g->last = id;
    bool eog = false;
    for (uint32_t k = 0; id >= 0 && k < s->n_eog; k++) eog |= id == s->eog[k];
    eog = eog && (!g->p.ignore_eos || g->con);
    if (g->p.on_logprob) { // a read of the row the sampler was given (unchanged by it)
        mc_logprob_t lp;
        mc_logprob_compute(logits, s->n_vocab, id, g->p.top_logprobs, &lp);
        g->p.on_logprob(g->p.user, &lp, eog);
    }
    if (eog) {
        size_t w = mc_detok_flush(&g->dt, s->piece, s->piece_cap);
        bool stopped;
        if (s_held_add(g, s->piece, w)) s_emit(g, id, &stopped);
        s_finish(s, g, MC_FINISH_STOP, NULL);
        return false;
    }
    size_t w = mc_detok_push(s->tok, &g->dt, id, s->piece, s->piece_cap);
    bool stopped = false;
    if (!s_held_add(g, s->piece, w)) {
        s_finish(s, g, MC_FINISH_ERROR, "out of memory");
        return false;
    }
    mc_finish_t why = MC_FINISH_NONE;
    if (!s_emit(g, id, &stopped)) why = MC_FINISH_CANCELLED;
    else if (stopped) why = MC_FINISH_STOP;
    else if (g->con && mc_constraint_complete(g->con)) { // the document is whole: hand out what is held back
        const size_t fw = mc_detok_flush(&g->dt, s->piece, s->piece_cap);
        if (s_held_add(g, s->piece, fw) && g->held_len && g->p.on_text) g->p.on_text(g->p.user, -1, g->held, g->held_len);
        g->held_len = 0;
        why = MC_FINISH_STOP;
    } else if ((g->p.max_tokens && g->n_gen >= g->p.max_tokens) || g->p.n_prompt + g->n_gen >= s->n_ctx)
        why = MC_FINISH_LENGTH;
    if (why == MC_FINISH_NONE) return true;
    s_finish(s, g, why, NULL);
    return false;
}

typedef struct {
    mc_scheduler_t *s;
    uint32_t n; // rows of the pass
} s_presample_t;

// The first draw of every sampling generation without a constraint, spread
// over the engine's threads: each generation has its own sampler, whose
// state the draw changes alone, so any thread computes the same id. (A
// constraint's mask uses one shared buffer: those draw in s_sample.)
static void s_presample_task(void *arg, int ith, int nth) {
    const s_presample_t *j = arg;
    mc_scheduler_t *s = j->s;
    uint32_t k = 0;
    for (uint32_t r = 0; r < j->n; r++) {
        if (s->want[r] != 2 || s->row_gen[r]->con) continue;
        if (k++ % (uint32_t)nth != (uint32_t)ith) continue;
        s_gen_t *g = s->row_gen[r];
        g->pre = mc_sampler_sample(g->smp, s->logits + (size_t)s->pos[r] * s->n_vocab);
    }
}

// Sampling 32 streams' rows of a large vocabulary one after the other was
// a serial stretch of every step (about 0.2 ms each with top-k 40 over 32000
// ids); with two or more to draw they go to the pool.
static void s_presample(mc_scheduler_t *s, uint32_t n) {
    uint32_t cnt = 0;
    for (uint32_t r = 0; r < n; r++) cnt += s->want[r] == 2 && !s->row_gen[r]->con;
    if (cnt < 2) return;
    s_presample_t j = {s, n};
    mc_pool_run(mc_matmul_pool(mc_engine_matmul(s->e)), s_presample_task, &j);
}

// g's first sampling row of this pass and, after it, one row per guess
// (logits rows in that order). Positions are sampled in order and kept
// while each equals the guess the next row was computed from; the first
// other token ends the pass for g. Before each sample the slot's cache is
// cut to the rows whose inputs are kept, so whatever ends g leaves only
// true positions for the prefix cache.
static void s_verify(mc_scheduler_t *s, s_gen_t *g, const float *logits) {
    s_slot_t *sl = &s->slots[g->slot];
    const uint32_t n_guess = g->n_guess, pos = g->p.n_prompt + g->n_gen - 1;
    for (uint32_t j = 0;; j++) {
        sl->n_tokens = pos + j + 1;
        const int32_t guess = j < n_guess ? g->guess[j] : -1;
        if (!s_sample(s, g, logits + (size_t)j * s->n_vocab)) return;
        if (j == n_guess || g->last != guess) {
            if (n_guess) mc_draft_feedback(g->draft, n_guess, j);
            return;
        }
        s->spec.accepted++;
    }
}

void mc_scheduler_spec_stats(const mc_scheduler_t *s, mc_spec_stats_t *out) { *out = s->spec; }

void mc_scheduler_constrain_stats(const mc_scheduler_t *s, mc_constrain_stats_t *out) { *out = s->con; }

// Guesses for generating g's next tokens (g->guess, g->n_guess): no more
// than its token limit and the context leave room for.
static void s_propose(mc_scheduler_t *s, s_gen_t *g) {
    g->n_guess = 0;
    if (!g->draft) return;
    const uint32_t pos = g->p.n_prompt + g->n_gen - 1;
    uint32_t room = s->n_ctx - 1 - pos;
    if (g->p.max_tokens && g->p.max_tokens - g->n_gen - 1 < room) room = g->p.max_tokens - g->n_gen - 1;
    if (room > g->draft_p.k_max) room = g->draft_p.k_max;
    g->n_guess = mc_draft_propose(g->draft, g->guess, room);
    s->spec.drafts += g->n_guess > 0;
    s->spec.proposed += g->n_guess;
}

mc_err_t mc_scheduler_step(mc_scheduler_t *s, char *err) {
    s_admit(s);
    if (!s->running) return MC_OK;
    // Rows: the last token of every generating sequence (and its guesses),
    // then prompt chunks.
    uint32_t rows = 0, wanted = 0, budget = S_PROMPT_ROWS_PER_STEP;
    for (s_gen_t *g = s->running; g; g = g->next) {
        if (g->done < g->p.n_prompt) {
            uint32_t c = g->p.n_prompt - g->done < budget ? g->p.n_prompt - g->done : budget;
            budget -= c;
            rows += c;
            wanted += g->p.prompt_logits ? c : (g->done + c == g->p.n_prompt);
            g->n_guess = 0;
        } else {
            s_propose(s, g);
            rows += 1 + g->n_guess, wanted += 1 + g->n_guess;
        }
    }
    if (!s_reserve(s, rows, wanted)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    budget = S_PROMPT_ROWS_PER_STEP;
    for (s_gen_t *g = s->running; g; g = g->next) {
        s_slot_t *sl = &s->slots[g->slot];
        if (g->done >= g->p.n_prompt) {
            const uint32_t pos = g->p.n_prompt + g->n_gen - 1;
            s->ids[n] = g->last, s->seq[n] = (uint32_t)g->slot, s->pos[n] = pos, s->want[n] = 1, s->row_gen[n++] = g;
            sl->tokens[pos] = g->last;
            for (uint32_t i = 0; i < g->n_guess; i++, n++) {
                s->ids[n] = g->guess[i], s->seq[n] = (uint32_t)g->slot, s->pos[n] = pos + 1 + i, s->want[n] = 1;
                s->row_gen[n] = g;
                sl->tokens[pos + 1 + i] = g->guess[i];
            }
            sl->n_tokens = pos + 1 + g->n_guess;
            continue;
        }
        uint32_t c = g->p.n_prompt - g->done < budget ? g->p.n_prompt - g->done : budget;
        budget -= c;
        for (uint32_t i = 0; i < c; i++, n++) {
            const uint32_t pos = g->done + i;
            s->ids[n] = g->prompt[pos], s->seq[n] = (uint32_t)g->slot, s->pos[n] = pos;
            s->want[n] = g->p.prompt_logits || pos + 1 == g->p.n_prompt;
            s->row_gen[n] = g;
            sl->tokens[pos] = g->prompt[pos];
        }
        g->done += c;
        sl->n_tokens = g->done;
    }
    const mc_engine_batch_t b = {s->ids, s->seq, s->pos, s->want, n};
    char sub[MC_ERR_LEN];
    mc_err_t rc = mc_engine_decode(s->e, &b, s->logits, sub);
    if (rc) {
        while (s->running) {
            s->slots[s->running->slot].n_tokens = 0; // its cache is not trustworthy now
            s_finish(s, s->running, MC_FINISH_ERROR, sub);
        }
        return mc_err_set(err, rc, "%s", sub);
    }
    // Sampling may finish generations: collect the rows' work first.
    uint32_t k = 0;
    for (uint32_t r = 0; r < n; r++) {
        if (!s->want[r]) continue;
        s_gen_t *g = s->row_gen[r];
        const float *lg = s->logits + (size_t)k++ * s->n_vocab;
        if (g->p.prompt_logits && g->n_gen == 0 && s->pos[r] < g->p.n_prompt)
            memcpy(g->p.prompt_logits + (size_t)s->pos[r] * s->n_vocab, lg, s->n_vocab * sizeof(float));
        // A row samples when it is the newest position of its sequence.
        s->want[r] = s->pos[r] + 1 == g->p.n_prompt + g->n_gen ? 2 : 0;
        s->row_gen[r] = s->want[r] ? g : NULL;
        if (s->want[r]) s->pos[r] = k - 1; // its logits row
    }
    s_presample(s, n);
    // (A generation's guesses' logits rows follow its first one.)
    for (uint32_t r = 0; r < n; r++)
        if (s->want[r] == 2) s_verify(s, s->row_gen[r], s->logits + (size_t)s->pos[r] * s->n_vocab);
    return MC_OK;
}
