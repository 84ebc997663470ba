/*
 * scheduler: slots, the queue, batch assembly, sampling, stop strings and
 * callbacks.
 */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

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

struct mc_sched {
    mc_engine_t *e;
    const mc_tokenizer_t *tok;
    // Tokens that end an answer: EOS, and the turn and text ends of ChatML
    // vocabularies (an instruct file's EOS may name either), as llama.cpp
    // treats them; -1 where absent.
    int32_t eog[3];
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
    s->eog[0] = mc_tokenizer_eos(tok);
    s->eog[1] = mc_tokenizer_find(tok, "<|im_end|>", 10);
    s->eog[2] = mc_tokenizer_find(tok, "<|endoftext|>", 13);
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
    free(g->prompt), free(g->held);
    free(g);
}

void mc_scheduler_destroy(mc_scheduler_t **ps) {
    if (!ps || !*ps) return;
    mc_scheduler_t *s = *ps;
    for (s_gen_t *g = s->queue, *n; g; g = n) n = g->next, s_gen_free(g);
    for (s_gen_t *g = s->running, *n; g; g = n) n = g->next, s_gen_free(g);
    for (uint32_t i = 0; s->slots && i < s->n_slots; i++) free(s->slots[i].tokens);
    free(s->slots), free(s->piece), free(s->ids), free(s->seq), free(s->pos), free(s->want), free(s->row_gen);
    free(s->logits);
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

// Free slots to queued generations, in order: the slot whose cache shares
// the longest start with the prompt (a chat's history), else any.
static void s_admit(mc_scheduler_t *s) {
    while (s->queue) {
        s_gen_t *g = s->queue;
        int best = -1;
        uint32_t best_len = 0;
        for (uint32_t i = 0; i < s->n_slots; i++) {
            if (s->slots[i].busy) continue;
            uint32_t c = 0;
            while (c < s->slots[i].n_tokens && c < g->p.n_prompt && s->slots[i].tokens[c] == g->prompt[c]) c++;
            if (best < 0 || c > best_len) best = (int)i, best_len = c;
        }
        if (best < 0) return;
        s->queue = g->next;
        g->next = s->running, s->running = g;
        g->slot = best;
        s_slot_t *sl = &s->slots[best];
        sl->busy = true;
        // The last prompt token is always evaluated: its logits are needed.
        g->done = g->p.prompt_logits ? 0 : best_len < g->p.n_prompt ? best_len : g->p.n_prompt - 1;
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

// Sample g's next token from its logits row and hand out its text.
static void s_sample(mc_scheduler_t *s, s_gen_t *g, const float *logits) {
    const int32_t id = mc_sampler_sample(g->smp, logits);
    mc_sampler_accept(g->smp, id);
    if (!g->n_gen) g->t_first = mc_clock_s();
    g->n_gen++;
    g->last = id;
    const bool eog = id >= 0 && (id == s->eog[0] || id == s->eog[1] || id == s->eog[2]);
    if (g->p.on_logprob) { // a read of the row the sampler was given (unchanged by it)
        mc_logprob_t lp;
        mc_logprob_compute(logits, s->n_vocab, id, g->p.top_logprobs, &lp);
        g->p.on_logprob(g->p.user, &lp, eog && !g->p.ignore_eos);
    }
    if (eog && !g->p.ignore_eos) {
        size_t w = mc_detok_flush(&g->dt, s->piece, s->piece_cap);
        bool stopped;
        if (s_held_add(g, s->piece, w)) s_emit(g, id, &stopped);
        s_finish(s, g, MC_FINISH_STOP, NULL);
        return;
    }
    size_t w = mc_detok_push(s->tok, &g->dt, id, s->piece, s->piece_cap);
    bool stopped = false;
    if (!s_held_add(g, s->piece, w)) {
        s_finish(s, g, MC_FINISH_ERROR, "out of memory");
        return;
    }
    if (!s_emit(g, id, &stopped)) s_finish(s, g, MC_FINISH_CANCELLED, NULL);
    else if (stopped) s_finish(s, g, MC_FINISH_STOP, NULL);
    else if ((g->p.max_tokens && g->n_gen >= g->p.max_tokens) || g->p.n_prompt + g->n_gen >= s->n_ctx)
        s_finish(s, g, MC_FINISH_LENGTH, NULL);
}

mc_err_t mc_scheduler_step(mc_scheduler_t *s, char *err) {
    s_admit(s);
    if (!s->running) return MC_OK;
    // Rows: the last token of every generating sequence, then prompt chunks.
    uint32_t rows = 0, wanted = 0, budget = S_PROMPT_ROWS_PER_STEP;
    for (s_gen_t *g = s->running; g; g = g->next) {
        if (g->done < g->p.n_prompt) {
            uint32_t c = g->p.n_prompt - g->done < budget ? g->p.n_prompt - g->done : budget;
            budget -= c;
            rows += c;
            wanted += g->p.prompt_logits ? c : (g->done + c == g->p.n_prompt);
        } else {
            rows++, wanted++;
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
            sl->tokens[pos] = g->last, sl->n_tokens = pos + 1;
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
    for (uint32_t r = 0; r < n; r++)
        if (s->want[r] == 2) s_sample(s, s->row_gen[r], s->logits + (size_t)s->pos[r] * s->n_vocab);
    return MC_OK;
}
