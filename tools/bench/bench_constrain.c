/*
 * bench_constrain: free and constrained generation through the scheduler,
 * then mask replays on the model's vocabulary and on a synthetic one.
 */
#include "bench_constrain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "constraint.h"
#include "rng.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "tokentrie.h"

#define S_QWEN_VOCAB 151936u

static const char *const s_schema =
    "{\"type\":\"array\",\"minItems\":50,\"items\":{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},\"city\":{\"type\":\"string\",\"maxLength\":20},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"active\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"city\",\"tags\",\"active\"],\"additionalProperties\":false}}";

typedef struct {
    int32_t *ids;
    uint32_t n, cap;
    char *text;
    size_t len, cap_text;
    mc_finish_t why;
} s_run_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_run_t *r = user;
    if (id >= 0 && r->n < r->cap) r->ids[r->n++] = id;
    if (r->len + len <= r->cap_text) memcpy(r->text + r->len, text, len), r->len += len;
    return true;
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    (void)u, (void)err;
    ((s_run_t *)user)->why = why;
}

// One greedy generation of n tokens (constrained or not); its tokens per
// second and, constrained, the mask time it spent.
static mc_err_t s_generate(mc_engine_t *e, const mc_tokenizer_t *tok, uint32_t n, bool con, s_run_t *run,
                           double *tok_s, double *mask_s, uint64_t *masks, char *err) {
    mc_scheduler_t *s = mc_scheduler_new(e, tok, err);
    if (!s) return mc_err_code(err, MC_ERR_NOMEM);
    static const int32_t words[] = {1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723};
    int32_t prompt[sizeof words / sizeof *words];
    const uint32_t nv = mc_tokenizer_n_vocab(tok);
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) prompt[i] = (int32_t)((uint32_t)words[i] % nv);
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = prompt, p.n_prompt = sizeof prompt / sizeof *prompt;
    p.max_tokens = n, p.ignore_eos = !con;
    mc_constraint_params_t cp = mc_constraint_params_default();
    cp.schema = s_schema, cp.schema_len = strlen(s_schema);
    if (con) p.constrain = &cp;
    p.on_text = s_on_text, p.on_done = s_on_done, p.user = run;
    run->n = 0, run->len = 0;
    mc_err_t rc = mc_scheduler_submit(s, &p, NULL, err);
    // The prompt's pass first (not timed), then the generation.
    if (!rc) rc = mc_scheduler_step(s, err);
    const uint32_t first = run->n;
    const double t0 = mc_clock_s();
    while (!rc && mc_scheduler_pending(s)) rc = mc_scheduler_step(s, err);
    const double dt = mc_clock_s() - t0;
    mc_constrain_stats_t cs;
    mc_scheduler_constrain_stats(s, &cs);
    *tok_s = run->n > first ? (run->n - first) / dt : 0.0;
    *mask_s = cs.mask_s, *masks = cs.masks;
    mc_scheduler_destroy(&s);
    return rc;
}

// The tokens replayed through a constraint: mean mask time with kept masks,
// then mean and worst with every mask a walk.
static mc_err_t s_replay(const mc_tokenizer_t *tok, uint32_t n_vocab, const int32_t *ids, uint32_t n,
                         mc_bench_vocab_t *v, char *err) {
    const int32_t eos = mc_tokenizer_eos(tok);
    double t0 = mc_clock_s();
    mc_tokentrie_t *t = mc_tokentrie_new(tok, n_vocab, &eos, 1, err);
    if (!t) return mc_err_code(err, MC_ERR_NOMEM);
    v->trie_ms = (mc_clock_s() - t0) * 1e3;
    v->trie_nodes = t->n_nodes;
    v->n_vocab = n_vocab;
    v->tokens = n;
    mc_err_t rc = MC_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        mc_constraint_params_t cp = mc_constraint_params_default();
        cp.schema = s_schema, cp.schema_len = strlen(s_schema), cp.no_cache = pass == 1;
        mc_constraint_t *c = mc_constraint_new(t, &cp, err);
        if (!c) {
            rc = mc_err_code(err, MC_ERR_ARG);
            break;
        }
        uint64_t visited = 0;
        double sum = 0, worst = 0, *each = malloc((n ? n : 1) * sizeof *each);
        if (!each) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        for (uint32_t i = 0; i < n && !rc; i++) {
            uint32_t allowed;
            t0 = mc_clock_s();
            (void)mc_constraint_mask(c, &allowed);
            const double dt = mc_clock_s() - t0;
            sum += dt, worst = dt > worst ? dt : worst, each[i] = dt;
            if (pass == 1) { // the work of the walk, which the machine's load does not change
                mc_constraint_stats_t st;
                mc_constraint_stats(c, &st);
                if (st.visited - visited > v->walk_max_nodes) v->walk_max_nodes = st.visited - visited;
                visited = st.visited;
            }
            rc = mc_constraint_advance(c, ids[i], err);
        }
        if (pass == 0) v->mask_us = n ? sum / n * 1e6 : 0;
        else {
            v->walk_us = n ? sum / n * 1e6 : 0, v->walk_max_us = worst * 1e6;
            if (!rc) v->walk_median_us = mc_bench_median(each, n) * 1e6;
        }
        free(each);
        mc_constraint_destroy(&c);
    }
    mc_tokentrie_destroy(&t);
    return rc;
}

// --- the synthetic Qwen-sized vocabulary -----------------------------------------------

static size_t s_utf8_put(char *o, uint32_t cp) {
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 63)), o[2] = (char)(0x80 | (cp & 63));
    return 3;
}

// One synthetic piece (SentencePiece spelling: U+2581 for a space) into o.
static size_t s_piece(mc_rng_t *r, char *o) {
    static const char punct[] = "{}[]():;,.\"'=<>/-_+*&|!?#@$%^~`";
    const uint32_t cls = (uint32_t)(mc_rng_next(r) % 100), len = 1 + (uint32_t)(mc_rng_next(r) % 9);
    size_t w = 0;
    if (cls < 55) { // a word, mostly after a space
        if (cls < 40) memcpy(o, "\xe2\x96\x81", 3), w = 3;
        for (uint32_t i = 0; i < len; i++) o[w++] = (char)((cls >= 50 && i == 0 ? 'A' : 'a') + mc_rng_next(r) % 26);
    } else if (cls < 65) { // digits
        for (uint32_t i = 0; i < 1 + len % 3; i++) o[w++] = (char)('0' + mc_rng_next(r) % 10);
    } else if (cls < 80) { // punctuation and code
        for (uint32_t i = 0; i < 1 + len % 4; i++) o[w++] = punct[mc_rng_next(r) % (sizeof punct - 1)];
    } else if (cls < 85) { // whitespace runs
        const char *ws[] = {"\xe2\x96\x81", "\n", "\t"};
        for (uint32_t i = 0; i < 1 + len; i++) {
            const char *s = ws[mc_rng_next(r) % 3];
            memcpy(o + w, s, strlen(s)), w += strlen(s);
        }
    } else { // letters beyond ASCII
        for (uint32_t i = 0; i < 1 + len % 3; i++)
            w += s_utf8_put(o + w, cls < 92 ? 0xC0 + (uint32_t)(mc_rng_next(r) % 0x140) : 0x4E00 + (uint32_t)(mc_rng_next(r) % 0x5000));
    }
    return w;
}

static mc_tokenizer_t *s_qwen_sized(char *err) {
    const uint32_t n = S_QWEN_VOCAB;
    mc_gguf_str_t *pieces = calloc(n, sizeof *pieces);
    float *scores = calloc(n, sizeof *scores);
    int32_t *types = calloc(n, sizeof *types);
    char *pool = malloc((size_t)n * 32);
    mc_tokenizer_t *tok = NULL;
    if (!pieces || !scores || !types || !pool) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t at = 0;
    static const char *const ctl[3] = {"<unk>", "<s>", "</s>"};
    mc_rng_t r;
    mc_rng_seed(&r, 151936);
    for (uint32_t i = 0; i < n; i++) {
        char *p = pool + at;
        size_t len;
        if (i < 3) len = strlen(ctl[i]), memcpy(p, ctl[i], len), types[i] = i == 0 ? MC_TOKEN_UNKNOWN : MC_TOKEN_CONTROL;
        else if (i < 259) len = (size_t)snprintf(p, 8, "<0x%02X>", i - 3), types[i] = MC_TOKEN_BYTE;
        else len = s_piece(&r, p), types[i] = MC_TOKEN_NORMAL;
        pieces[i] = (mc_gguf_str_t){p, len};
        scores[i] = -(float)i;
        at += len;
    }
    mc_tokenizer_params_t tp = mc_tokenizer_params_default();
    tp.n_vocab = n, tp.pieces = pieces, tp.scores = scores, tp.types = types;
    tp.unk_id = 0, tp.bos_id = 1, tp.eos_id = 2, tp.kind = MC_TOKENIZER_SPM;
    tok = mc_tokenizer_new(&tp, err);
out:
    free(pieces), free(scores), free(types), free(pool);
    return tok;
}

// text split into tokens by longest match over the trie's tokens (n_max ids at most).
static uint32_t s_split(const mc_tokentrie_t *t, const char *text, size_t len, int32_t *ids, uint32_t n_max) {
    uint32_t n = 0;
    for (size_t i = 0; i < len && n < n_max;) {
        uint32_t node = 0, best_len = 0;
        int32_t best = -1;
        for (size_t k = i; k < len; k++) {
            const mc_tokentrie_node_t *nd = &t->nodes[node];
            uint32_t c = 0;
            while (c < nd->n_child && t->nodes[nd->child0 + c].byte != (uint8_t)text[k]) c++;
            if (c == nd->n_child) break;
            node = nd->child0 + c;
            if (t->nodes[node].n_tok) best = t->ids[t->nodes[node].tok0], best_len = (uint32_t)(k - i + 1);
        }
        if (best < 0) break; // cannot happen with the byte tokens
        ids[n++] = best;
        i += best_len;
    }
    return n;
}

mc_err_t mc_bench_constrain(const mc_bench_opts_t *o, mc_bench_constrain_t *r, char *err) {
    memset(r, 0, sizeof *r);
    r->model = o->model, r->n_threads = o->n_threads, r->reps = o->reps > 0 ? o->reps : 3;
    r->n_gen = o->n_gen ? o->n_gen : 128;
    mc_model_t *m = mc_model_open(o->model, err);
    if (!m) return mc_err_code(err, MC_ERR_FORMAT);
    mc_tokenizer_t *tok = mc_tokenizer_new_from_gguf(m->gguf, err), *qtok = NULL;
    mc_engine_t *e = NULL;
    mc_tokentrie_t *qt = NULL;
    s_run_t run = {0};
    int32_t *qids = NULL;
    mc_err_t rc = tok ? MC_OK : mc_err_code(err, MC_ERR_FORMAT);
    if (!rc) {
        mc_engine_params_t ep = mc_engine_params_default();
        ep.n_seq = 1, ep.n_ctx = r->n_gen + 64, ep.n_threads = o->n_threads;
        if (!(e = mc_engine_new(m, &ep, err))) rc = mc_err_code(err, MC_ERR_NOMEM);
    }
    run.cap = r->n_gen + 8, run.cap_text = (size_t)run.cap * MC_TOKENIZER_MAX_PIECE;
    run.ids = malloc(run.cap * sizeof *run.ids), run.text = malloc(run.cap_text);
    if (!rc && (!run.ids || !run.text)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    double *fs = calloc((size_t)r->reps, sizeof *fs), *cs = calloc((size_t)r->reps, sizeof *cs);
    if (!rc && (!fs || !cs)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    // Warm-up, then free and constrained runs alternating (the load moves both alike).
    double mask_s = 0, mtot = 0;
    uint64_t masks = 0, mcount = 0;
    for (int i = -1; i < r->reps && !rc; i++) {
        double f, c;
        rc = s_generate(e, tok, r->n_gen, false, &run, &f, &mask_s, &masks, err);
        if (!rc) rc = s_generate(e, tok, r->n_gen, true, &run, &c, &mask_s, &masks, err);
        if (i < 0 || rc) continue;
        fs[i] = f, cs[i] = c;
        mtot += mask_s, mcount += masks;
    }
    if (!rc) {
        r->free_tok_s = mc_bench_median(fs, (size_t)r->reps);
        r->con_tok_s = mc_bench_median(cs, (size_t)r->reps);
        r->step_ms = 1e3 / r->free_tok_s;
        r->con_tokens = run.n;
        rc = s_replay(tok, m->hp.n_vocab, run.ids, run.n, &r->model_vocab, err);
        r->model_vocab.mask_us = mcount ? mtot / (double)mcount * 1e6 : 0; // as generation used them
    }
    // The same text on the synthetic vocabulary.
    if (!rc && !(qtok = s_qwen_sized(err))) rc = mc_err_code(err, MC_ERR_NOMEM);
    if (!rc) {
        const int32_t eos = 2;
        qt = mc_tokentrie_new(qtok, S_QWEN_VOCAB, &eos, 1, err);
        qids = malloc((run.len + 1) * sizeof *qids);
        if (!qt || !qids) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (!rc) {
        const uint32_t nq = s_split(qt, run.text, run.len, qids, (uint32_t)run.len + 1);
        rc = s_replay(qtok, S_QWEN_VOCAB, qids, nq, &r->qwen_vocab, err);
    }
    free(fs), free(cs), free(run.ids), free(run.text), free(qids);
    mc_tokentrie_destroy(&qt);
    mc_tokenizer_destroy(&qtok);
    mc_engine_destroy(&e);
    mc_tokenizer_destroy(&tok);
    mc_model_destroy(&m);
    return rc;
}

void mc_bench_constrain_print(const mc_bench_constrain_t *r, FILE *f) {
    fprintf(f, "constrained decoding on %s, %d threads, %u tokens, median of %d\n", r->model, r->n_threads, r->n_gen,
            r->reps);
    fprintf(f, "  generation: free %.1f tok/s, constrained %.1f tok/s (%.3fx; the constrained run: %u tokens)\n",
            r->free_tok_s, r->con_tok_s, r->free_tok_s > 0 ? r->con_tok_s / r->free_tok_s : 0, r->con_tokens);
    fprintf(f, "  step (forward pass) %.2f ms per token\n", r->step_ms);
    const mc_bench_vocab_t *v[2] = {&r->model_vocab, &r->qwen_vocab};
    const char *name[2] = {"model vocabulary", "synthetic Qwen-sized"};
    for (int i = 0; i < 2; i++)
        fprintf(f,
                "  %-20s %6u tokens: trie %u nodes in %.0f ms; mask per token %.1f us (kept masks), "
                "full walk %.1f us mean, %.1f us median, %.1f us worst, at most %llu trie nodes stepped (mean %.2f%% of a step); %u tokens replayed\n",
                name[i], v[i]->n_vocab, v[i]->trie_nodes, v[i]->trie_ms, v[i]->mask_us, v[i]->walk_us, v[i]->walk_median_us, v[i]->walk_max_us, (unsigned long long)v[i]->walk_max_nodes,
                r->step_ms > 0 ? v[i]->walk_us / 10.0 / r->step_ms : 0, v[i]->tokens);
}

mc_err_t mc_bench_constrain_json(const mc_bench_constrain_t *r, char *buf, size_t cap, char *err) {
    const int n = snprintf(
        buf, cap,
        "{\"model\":\"%s\",\"threads\":%d,\"tokens\":%u,\"reps\":%d,\"free_tok_s\":%.2f,\"constrained_tok_s\":%.2f,"
        "\"step_ms\":%.3f,\"vocab\":%u,\"mask_us\":%.2f,\"walk_us\":%.2f,\"walk_median_us\":%.2f,\"walk_max_us\":%.2f,\"walk_max_nodes\":%llu,\"trie_ms\":%.1f,"
        "\"qwen_vocab\":%u,\"qwen_mask_us\":%.2f,\"qwen_walk_us\":%.2f,\"qwen_walk_median_us\":%.2f,\"qwen_walk_max_us\":%.2f,\"qwen_walk_max_nodes\":%llu,\"qwen_trie_ms\":%.1f}",
        r->model, r->n_threads, r->n_gen, r->reps, r->free_tok_s, r->con_tok_s, r->step_ms, r->model_vocab.n_vocab,
        r->model_vocab.mask_us, r->model_vocab.walk_us, r->model_vocab.walk_median_us, r->model_vocab.walk_max_us,
        (unsigned long long)r->model_vocab.walk_max_nodes, r->model_vocab.trie_ms,
        r->qwen_vocab.n_vocab, r->qwen_vocab.mask_us, r->qwen_vocab.walk_us, r->qwen_vocab.walk_median_us, r->qwen_vocab.walk_max_us,
        (unsigned long long)r->qwen_vocab.walk_max_nodes, r->qwen_vocab.trie_ms);
    if (n < 0 || (size_t)n >= cap) return mc_err_set(err, MC_ERR_ARG, "buffer too small");
    return MC_OK;
}
