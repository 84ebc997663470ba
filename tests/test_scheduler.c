/*
 * test_scheduler: the generation loop on a generated model. One generation
 * gives exactly the ids of a hand-written greedy loop; eight generations
 * sharing four slots give each the ids and text it gets alone; stop
 * strings, token and context limits, cancellation, prompt logits, the
 * prefix cache: a reused slot, a prefix copied from a busy slot, a saved
 * prefix loaded after its slot was overwritten, the byte budget (each the
 * same bits as evaluating it all), and the logprobs handed out beside the
 * tokens (never changing one). The prefix cache, batching and speculation
 * tests run twice: with an F32 and with an F16 KV cache (--kv-type f16),
 * each compared with generations on a cache of the same type.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "gguf.h"
#include "mkmodel.h"
#include "model.h"
#include "scheduler.h"
#include "testutil.h"
#include "tokenizer.h"

static char s_dir[256];
static mc_model_t *s_m;
static mc_tokenizer_t *s_tok;
static mc_dtype_t s_kv = MC_DTYPE_F32; // the KV cache type of every engine s_engine makes

static int s_use_f16(void **state) {
    (void)state;
    s_kv = MC_DTYPE_F16;
    return 0;
}

static int s_use_f32(void **state) {
    (void)state;
    s_kv = MC_DTYPE_F32;
    return 0;
}

static int s_setup(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_tmpdir(s_dir, sizeof s_dir)) return -1;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.seed = 11;
    snprintf(path, sizeof path, "%s/m.gguf", s_dir);
    if (mc_mkmodel_write(&p, path, err) || !(s_m = mc_model_open(path, err)) ||
        !(s_tok = mc_tokenizer_new_from_gguf(s_m->gguf, err))) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int s_teardown(void **state) {
    (void)state;
    mc_tokenizer_destroy(&s_tok);
    mc_model_destroy(&s_m);
    mc_test_rmtree(s_dir);
    return 0;
}

// What one generation produced.
typedef struct {
    int32_t ids[256];
    uint32_t n;
    char text[4096];
    size_t len;
    mc_finish_t why;
    mc_gen_usage_t usage;
    bool done;
    uint32_t cancel_after; // 0: never
    mc_logprob_t lps[64];  // the logprobs of the first sampled tokens
    uint32_t n_lps;
} s_out_t;

static void s_on_logprob(void *user, const mc_logprob_t *lp, bool eog) {
    s_out_t *o = user;
    (void)eog;
    if (o->n_lps < 64) o->lps[o->n_lps++] = *lp;
}

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_out_t *o = user;
    if (id >= 0 && o->n < 256) o->ids[o->n++] = id;
    assert_true(o->len + len < sizeof o->text);
    memcpy(o->text + o->len, text, len);
    o->len += len;
    o->text[o->len] = 0;
    return !o->cancel_after || o->n < o->cancel_after;
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_out_t *o = user;
    (void)err;
    assert_false(o->done);
    o->why = why, o->usage = *u, o->done = true;
}

static mc_engine_t *s_engine(uint32_t n_seq, uint32_t n_ctx) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_seq = n_seq, ep.n_ctx = n_ctx, ep.n_threads = 2, ep.kv_type = s_kv;
    mc_engine_t *e = mc_engine_new(s_m, &ep, err);
    if (!e) fail_msg("%s", err);
    assert_int_equal(mc_engine_kv_type(e), s_kv);
    return e;
}

static mc_gen_params_t s_params(const int32_t *prompt, uint32_t n, s_out_t *o) {
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = prompt, p.n_prompt = n, p.on_text = s_on_text, p.on_done = s_on_done, p.user = o;
    return p;
}

static void s_run(mc_scheduler_t *s) {
    char err[MC_ERR_LEN];
    for (int i = 0; i < 10000 && mc_scheduler_pending(s); i++)
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
    assert_int_equal(mc_scheduler_pending(s), 0);
}

// One generation alone, in a fresh engine.
static void s_alone(const mc_gen_params_t *p, s_out_t *o) {
    char err[MC_ERR_LEN];
    mc_engine_t *e = s_engine(1, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_gen_params_t q = *p;
    q.user = o;
    assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
    s_run(s);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

static const int32_t s_prompt[] = {1, 300, 301, 302, 260, 270, 280, 290, 3, 4, 5, 400, 410, 420, 430, 500, 33, 44};

static void test_matches_greedy_loop(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    enum { N = 20 };
    const uint32_t np = 9, nv = s_m->hp.n_vocab;
    // By hand: the engine, argmax, one token at a time.
    mc_engine_t *e = s_engine(1, 64);
    float *row = malloc(nv * sizeof(float));
    int32_t want[N];
    assert_int_equal(mc_engine_eval(e, s_prompt, np, 0, MC_LOGITS_LAST, row, err), MC_OK);
    for (uint32_t i = 0; i < N; i++) {
        int32_t best = 0;
        for (uint32_t v = 1; v < nv; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        want[i] = best;
        assert_int_equal(mc_engine_eval(e, &best, 1, np + i, MC_LOGITS_LAST, row, err), MC_OK);
    }
    mc_engine_destroy(&e);
    static s_out_t o;
    memset(&o, 0, sizeof o);
    mc_gen_params_t p = s_params(s_prompt, np, &o);
    p.max_tokens = N, p.ignore_eos = true;
    s_alone(&p, &o);
    assert_true(o.done);
    assert_int_equal(o.why, MC_FINISH_LENGTH);
    assert_int_equal(o.n, N);
    assert_memory_equal(o.ids, want, sizeof want);
    assert_int_equal(o.usage.prompt_tokens, np);
    assert_int_equal(o.usage.completion_tokens, N);
    // The text is the decoded ids.
    char *dec = mc_tokenizer_decode(s_tok, want, N);
    assert_string_equal(o.text, dec);
    free(dec), free(row);
}

// Eight generations, four slots: they queue, join and leave; each gets
// exactly what it gets alone.
static void test_concurrent_same_as_alone(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    enum { G = 8 };
    static s_out_t together[G], alone[G];
    memset(together, 0, sizeof together), memset(alone, 0, sizeof alone);
    mc_gen_params_t p[G];
    for (int g = 0; g < G; g++) {
        p[g] = s_params(s_prompt + g, 3 + (uint32_t)g, &together[g]);
        p[g].max_tokens = 6 + (uint32_t)g * 3;
        p[g].sampling.temp = g % 2 ? 0.9f : 0.0f;
        p[g].sampling.seed = 100 + (uint64_t)g;
        p[g].ignore_eos = g % 3 == 0;
    }
    mc_engine_t *e = s_engine(4, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    for (int g = 0; g < G; g++) {
        assert_int_equal(mc_scheduler_submit(s, &p[g], NULL, err), MC_OK);
        assert_int_equal(mc_scheduler_step(s, err), MC_OK); // staggered arrivals
    }
    s_run(s);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
    for (int g = 0; g < G; g++) {
        s_alone(&p[g], &alone[g]);
        assert_true(together[g].done && alone[g].done);
        assert_int_equal(together[g].why, alone[g].why);
        assert_int_equal(together[g].n, alone[g].n);
        assert_memory_equal(together[g].ids, alone[g].ids, alone[g].n * sizeof(int32_t));
        assert_string_equal(together[g].text, alone[g].text);
        printf("[scheduler] generation %d: %u tokens, %s, %zu bytes of text\n", g, together[g].n, mc_finish_name(together[g].why), together[g].len);
    }
}

static void test_stop_strings(void **state) {
    (void)state;
    static s_out_t full, cut, none;
    memset(&full, 0, sizeof full), memset(&cut, 0, sizeof cut), memset(&none, 0, sizeof none);
    mc_gen_params_t p = s_params(s_prompt, 7, &full);
    p.max_tokens = 40, p.ignore_eos = true;
    s_alone(&p, &full);
    assert_true(full.len > 12);
    // A stop string from the middle of the text: the text ends just before
    // its first occurrence.
    char stop[8];
    memcpy(stop, full.text + full.len / 2, 5);
    stop[5] = 0;
    const size_t first = (size_t)(strstr(full.text, stop) - full.text);
    const char *stops[] = {"\x01never", stop};
    p.stop = stops, p.n_stop = 2;
    s_alone(&p, &cut);
    assert_int_equal(cut.why, MC_FINISH_STOP);
    assert_int_equal(cut.len, first);
    assert_memory_equal(cut.text, full.text, first);
    // One that never comes: all of the text, held-back pieces included.
    p.n_stop = 1;
    s_alone(&p, &none);
    assert_int_equal(none.why, MC_FINISH_LENGTH);
    assert_string_equal(none.text, full.text);
}

static void test_limits_and_cancel(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    static s_out_t a, b, c, d;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&c, 0, sizeof c), memset(&d, 0, sizeof d);
    mc_engine_t *e = s_engine(1, 16);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    // The context (16) ends a 10-token prompt after 6 tokens.
    mc_gen_params_t p = s_params(s_prompt, 10, &a);
    p.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    // Cancelled from its callback after 3 tokens.
    p = s_params(s_prompt, 4, &b);
    p.ignore_eos = true;
    b.cancel_after = 3;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    // Cancelled while queued (one slot: it waits).
    uint64_t id;
    p = s_params(s_prompt, 4, &c);
    assert_int_equal(mc_scheduler_submit(s, &p, &id, err), MC_OK);
    mc_scheduler_cancel(s, id);
    assert_true(c.done);
    assert_int_equal(c.why, MC_FINISH_CANCELLED);
    assert_int_equal(c.usage.completion_tokens, 0);
    s_run(s);
    assert_int_equal(a.why, MC_FINISH_LENGTH);
    assert_int_equal(a.usage.completion_tokens, 6);
    assert_int_equal(b.why, MC_FINISH_CANCELLED);
    assert_int_equal(b.usage.completion_tokens, 3);
    // Refused before anything runs.
    p = s_params(s_prompt, 17, &d);
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "the prompt has 17 tokens, the context holds 16"));
    p.n_prompt = 0;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_ERR_ARG);
    int32_t bad = (int32_t)s_m->hp.n_vocab;
    p.prompt = &bad, p.n_prompt = 1;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_ERR_RANGE);
    assert_false(d.done);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

static void s_total_rows(const mc_engine_t *e, uint64_t *total) {
    uint64_t counts[2 * 8];
    mc_engine_expert_counts(e, counts);
    *total = 0;
    for (int i = 0; i < 16; i++) *total += counts[i];
}

// A chat's second turn starts with the first's prompt and answer: only the
// new tokens are evaluated, and the answer is the same as from scratch.
static void test_cache_prefix_reused(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    static s_out_t t1, t2, fresh;
    memset(&t1, 0, sizeof t1), memset(&t2, 0, sizeof t2), memset(&fresh, 0, sizeof fresh);
    mc_engine_t *e = s_engine(2, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_gen_params_t p = s_params(s_prompt, 8, &t1);
    p.max_tokens = 10, p.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    int32_t turn2[64];
    memcpy(turn2, s_prompt, 8 * sizeof(int32_t));
    memcpy(turn2 + 8, t1.ids, 10 * sizeof(int32_t));
    memcpy(turn2 + 18, s_prompt + 10, 5 * sizeof(int32_t));
    uint64_t before, after;
    s_total_rows(e, &before);
    p = s_params(turn2, 23, &t2);
    p.max_tokens = 10, p.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    s_total_rows(e, &after);
    // Rows routed: (5 new prompt tokens + 1 re-evaluated... ) per layer and expert used.
    const uint64_t per_row = (uint64_t)s_m->hp.n_layer * s_m->hp.n_expert_used;
    assert_true(after - before <= (6 + 10) * per_row);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
    s_alone(&p, &fresh);
    assert_int_equal(t2.n, fresh.n);
    assert_memory_equal(t2.ids, fresh.ids, fresh.n * sizeof(int32_t));
}

// Prompt rows evaluated by the engine since `before` (every row passes
// every layer and picks n_expert_used experts).
static uint64_t s_rows_since(const mc_engine_t *e, uint64_t before) {
    uint64_t after;
    s_total_rows(e, &after);
    return (after - before) / ((uint64_t)s_m->hp.n_layer * s_m->hp.n_expert_used);
}

// A second request with the same start as one running beside it (a shared
// system prompt) copies that slot's cache instead of evaluating it.
static void test_prefix_from_busy_slot(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    static s_out_t a, b, fresh;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&fresh, 0, sizeof fresh);
    mc_engine_t *e = s_engine(2, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_gen_params_t pa = s_params(s_prompt, 18, &a);
    pa.max_tokens = 12, pa.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &pa, NULL, err), MC_OK);
    assert_int_equal(mc_scheduler_step(s, err), MC_OK); // a's prompt is in slot 0, a still runs
    int32_t pb[20];
    memcpy(pb, s_prompt, 16 * sizeof(int32_t));
    pb[16] = 77, pb[17] = 78, pb[18] = 79;
    uint64_t before;
    s_total_rows(e, &before);
    mc_gen_params_t q = s_params(pb, 19, &b);
    q.max_tokens = 6, q.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
    assert_int_equal(mc_scheduler_step(s, err), MC_OK);
    // b's first pass: its 3 new prompt tokens and a's next token.
    assert_int_equal(s_rows_since(e, before), 3 + 1);
    s_run(s);
    mc_prefix_stats_t st;
    mc_scheduler_prefix_stats(s, &st);
    assert_int_equal(st.lookups, 2);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.copied, 1);
    assert_int_equal(st.tokens_reused, 16);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
    s_alone(&q, &fresh);
    assert_int_equal(b.n, fresh.n);
    assert_memory_equal(b.ids, fresh.ids, fresh.n * sizeof(int32_t));
}

// One slot: a chat's first turn, then another conversation overwrites the
// slot, then the chat's second turn. The first turn was saved before it was
// overwritten and is loaded back.
static void test_prefix_saved_and_loaded(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    static s_out_t t1, other, t2, fresh;
    memset(&t1, 0, sizeof t1), memset(&other, 0, sizeof other), memset(&t2, 0, sizeof t2);
    memset(&fresh, 0, sizeof fresh);
    mc_engine_t *e = s_engine(1, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_scheduler_set_prefix_cache(s, 64u << 20);
    mc_gen_params_t p = s_params(s_prompt, 18, &t1);
    p.max_tokens = 10, p.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    const int32_t po[] = {1, 200, 201, 202, 203};
    mc_gen_params_t q = s_params(po, 5, &other);
    q.max_tokens = 3, q.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
    s_run(s);
    mc_prefix_stats_t st;
    mc_scheduler_prefix_stats(s, &st);
    assert_int_equal(st.saved, 1); // turn 1: 18 prompt + 9 answer tokens in the cache
    assert_int_equal(st.saved_bytes, mc_engine_kv_bytes(e, 27) + 27 * sizeof(int32_t));
    const uint64_t reused = st.tokens_reused; // the other conversation's BOS
    int32_t turn2[64];
    memcpy(turn2, s_prompt, 18 * sizeof(int32_t));
    memcpy(turn2 + 18, t1.ids, 10 * sizeof(int32_t));
    turn2[28] = 55, turn2[29] = 56;
    uint64_t before;
    s_total_rows(e, &before);
    mc_gen_params_t r = s_params(turn2, 30, &t2);
    r.max_tokens = 8, r.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &r, NULL, err), MC_OK);
    s_run(s);
    // 27 positions loaded: 3 prompt rows, then 7 rows of generation.
    assert_int_equal(s_rows_since(e, before), 3 + 7);
    mc_scheduler_prefix_stats(s, &st);
    assert_int_equal(st.copied, 1);
    assert_int_equal(st.tokens_reused - reused, 27);
    assert_int_equal(st.saved, 1); // the other conversation (7 tokens) is too short to keep
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
    s_alone(&r, &fresh);
    assert_int_equal(t2.n, fresh.n);
    assert_memory_equal(t2.ids, fresh.ids, fresh.n * sizeof(int32_t));
}

// The budget holds: nothing kept without one, one prefix when it fits one,
// the least recently used dropped first.
static void test_prefix_budget(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_engine_t *e = s_engine(1, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    const size_t one = mc_engine_kv_bytes(e, 19) + 19 * sizeof(int32_t);
    int32_t prompts[3][18];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 18; i++) prompts[k][i] = i ? 100 + 50 * k + i : 1;
    static s_out_t o[3];
    mc_prefix_stats_t st;
    for (int round = 0; round < 2; round++) {
        mc_scheduler_set_prefix_cache(s, round ? one + one / 2 : 0);
        for (int k = 0; k < 3; k++) {
            memset(&o[k], 0, sizeof o[k]);
            mc_gen_params_t p = s_params(prompts[k], 18, &o[k]);
            p.max_tokens = 2, p.ignore_eos = true;
            assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
            s_run(s);
        }
        mc_scheduler_prefix_stats(s, &st);
        assert_int_equal(st.saved, round ? 1 : 0);
        assert_true(st.saved_bytes <= (round ? one + one / 2 : 0));
    }
    // The one kept is the second prompt's (the third is still in the slot).
    static s_out_t again;
    memset(&again, 0, sizeof again);
    mc_gen_params_t p = s_params(prompts[1], 18, &again);
    p.max_tokens = 2, p.ignore_eos = true;
    const uint64_t reused = st.tokens_reused;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    mc_scheduler_prefix_stats(s, &st);
    assert_int_equal(st.tokens_reused - reused, 17);
    assert_memory_equal(again.ids, o[1].ids, 2 * sizeof(int32_t));
    mc_scheduler_set_prefix_cache(s, 0);
    mc_scheduler_prefix_stats(s, &st);
    assert_int_equal(st.saved, 0);
    assert_int_equal(st.saved_bytes, 0);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

// Speculative decoding gives the ids of decoding one token per pass,
// greedy and seeded, alone and four at a time in two slots, with stop
// strings and token limits; every kept guess saves exactly one pass.
static uint32_t s_run_count(mc_scheduler_t *s) {
    char err[MC_ERR_LEN];
    uint32_t steps = 0;
    for (; steps < 10000 && mc_scheduler_pending(s); steps++)
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
    assert_int_equal(mc_scheduler_pending(s), 0);
    return steps;
}

static void test_speculative_same_tokens(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const mc_draft_params_t dp = mc_draft_params_default();
    enum { N = 4 };
    static s_out_t plain[N], spec[N];
    mc_gen_params_t p[N];
    for (int i = 0; i < N; i++) {
        p[i] = s_params(s_prompt + i, 14, &plain[i]);
        p[i].max_tokens = 40 + 7 * i, p[i].ignore_eos = i < 2;
        if (i % 2) p[i].sampling.temp = 0.9f, p[i].sampling.seed = 77 + (uint64_t)i, p[i].sampling.top_k = 20;
    }
    static const char *const stop[] = {"zz"};
    p[3].stop = stop, p[3].n_stop = 1;
    uint64_t kept = 0;
    for (int i = 0; i < N; i++) { // alone, one token per pass, then speculating
        uint32_t steps_plain = 0, steps_spec = 0;
        mc_spec_stats_t st = {0};
        memset(&plain[i], 0, sizeof plain[i]), memset(&spec[i], 0, sizeof spec[i]);
        for (int sp = 0; sp < 2; sp++) {
            mc_engine_t *e = s_engine(1, 128);
            mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
            mc_gen_params_t q = p[i];
            q.user = sp ? &spec[i] : &plain[i];
            q.speculate = sp ? &dp : NULL;
            assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
            const uint32_t steps = s_run_count(s);
            *(sp ? &steps_spec : &steps_plain) += steps;
            if (sp) {
                mc_scheduler_spec_stats(s, &st);
                printf("[scheduler] gen %d: %u tokens, %llu of %llu guesses kept, %u passes\n", i, spec[i].n,
                       (unsigned long long)st.accepted, (unsigned long long)st.proposed, steps);
            }
            mc_scheduler_destroy(&s);
            mc_engine_destroy(&e);
        }
        assert_int_equal(spec[i].n, plain[i].n);
        assert_memory_equal(spec[i].ids, plain[i].ids, plain[i].n * sizeof(int32_t));
        assert_string_equal(spec[i].text, plain[i].text);
        assert_int_equal(spec[i].why, plain[i].why);
        assert_int_equal(spec[i].usage.completion_tokens, plain[i].usage.completion_tokens);
        assert_int_equal(steps_spec, steps_plain - st.accepted);
        kept += st.accepted;
    }
    assert_true(kept > 0);
    // All four together in two slots, speculating: each as alone.
    static s_out_t together[N];
    mc_engine_t *e = s_engine(2, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    for (int i = 0; i < N; i++) {
        memset(&together[i], 0, sizeof together[i]);
        mc_gen_params_t q = p[i];
        q.user = &together[i], q.speculate = &dp;
        assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
    }
    s_run(s);
    for (int i = 0; i < N; i++) {
        assert_int_equal(together[i].n, plain[i].n);
        assert_memory_equal(together[i].ids, plain[i].ids, plain[i].n * sizeof(int32_t));
    }
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

// After speculating, the slot's cache holds only kept positions: a second
// turn that reuses it answers as from scratch.
static void test_speculative_then_prefix(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const mc_draft_params_t dp = mc_draft_params_default();
    static s_out_t t1, t2, fresh;
    memset(&t1, 0, sizeof t1), memset(&t2, 0, sizeof t2), memset(&fresh, 0, sizeof fresh);
    mc_engine_t *e = s_engine(1, 128);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_gen_params_t p = s_params(s_prompt, 12, &t1);
    p.max_tokens = 30, p.ignore_eos = true, p.speculate = &dp;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    int32_t turn2[64];
    memcpy(turn2, s_prompt, 12 * sizeof(int32_t));
    memcpy(turn2 + 12, t1.ids, 30 * sizeof(int32_t));
    turn2[42] = 300, turn2[43] = 301;
    p = s_params(turn2, 44, &t2);
    p.max_tokens = 12, p.ignore_eos = true;
    assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    s_run(s);
    mc_prefix_stats_t st;
    mc_scheduler_prefix_stats(s, &st);
    assert_true(st.tokens_reused >= 41); // 12 + 29 cached positions
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
    s_alone(&p, &fresh);
    assert_int_equal(t2.n, fresh.n);
    assert_memory_equal(t2.ids, fresh.ids, fresh.n * sizeof(int32_t));
}

static void test_prompt_logits(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const uint32_t np = 11, nv = s_m->hp.n_vocab;
    mc_engine_t *e = s_engine(1, 64);
    float *want = malloc((size_t)np * nv * sizeof(float)), *got = malloc((size_t)np * nv * sizeof(float));
    assert_int_equal(mc_engine_eval(e, s_prompt, np, 0, MC_LOGITS_ALL, want, err), MC_OK);
    mc_engine_destroy(&e);
    static s_out_t o;
    memset(&o, 0, sizeof o);
    mc_gen_params_t p = s_params(s_prompt, np, &o);
    p.max_tokens = 2, p.prompt_logits = got;
    s_alone(&p, &o);
    assert_memory_equal(got, want, (size_t)np * nv * sizeof(float));
    free(want), free(got);
}

// Logprobs are a read of the row each token was sampled from: asking for
// them changes no id; the chosen token's value is the log-softmax of the
// raw logits (the first one checked against the engine's own row); greedy
// decoding picks the top entry; a sampled token (temperature, penalties)
// shows its own value wherever it sits in the top list.
static void test_logprobs(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const uint32_t np = 9, nv = s_m->hp.n_vocab;
    mc_engine_t *e = s_engine(1, 64);
    float *rows = malloc((size_t)np * nv * sizeof(float));
    assert_int_equal(mc_engine_eval(e, s_prompt, np, 0, MC_LOGITS_ALL, rows, err), MC_OK);
    mc_engine_destroy(&e);
    const float *last = rows + (size_t)(np - 1) * nv;
    double max = -INFINITY, sum = 0;
    for (uint32_t i = 0; i < nv; i++) max = last[i] > max ? last[i] : max;
    for (uint32_t i = 0; i < nv; i++) sum += exp(last[i] - max);
    for (int sampled = 0; sampled < 2; sampled++) {
        static s_out_t plain, with;
        memset(&plain, 0, sizeof plain), memset(&with, 0, sizeof with);
        mc_gen_params_t p = s_params(s_prompt, np, &plain);
        p.max_tokens = 24, p.ignore_eos = true;
        if (sampled) p.sampling.temp = 1.2f, p.sampling.top_k = 0, p.sampling.repeat_penalty = 1.3f, p.sampling.seed = 5;
        s_alone(&p, &plain);
        p.on_logprob = s_on_logprob, p.top_logprobs = sampled ? MC_LOGPROB_MAX_TOP : 4;
        s_alone(&p, &with);
        assert_int_equal(plain.n, with.n);
        assert_memory_equal(plain.ids, with.ids, plain.n * sizeof(int32_t));
        assert_int_equal(with.n_lps, 24);
        const double first = (double)last[with.lps[0].chosen.id] - max - log(sum);
        assert_true(fabs(with.lps[0].chosen.logprob - first) < 1e-9);
        uint32_t found = 0;
        for (uint32_t k = 0; k < with.n_lps; k++) {
            const mc_logprob_t *lp = &with.lps[k];
            assert_int_equal(lp->chosen.id, with.ids[k]);
            assert_int_equal(lp->n_top, sampled ? MC_LOGPROB_MAX_TOP : 4);
            assert_true(lp->chosen.logprob <= 0);
            for (uint32_t t = 1; t < lp->n_top; t++) assert_true(lp->top[t].logprob <= lp->top[t - 1].logprob);
            if (!sampled) {
                assert_int_equal(lp->top[0].id, lp->chosen.id);
                assert_true(lp->top[0].logprob == lp->chosen.logprob);
            }
            for (uint32_t t = 0; t < lp->n_top; t++)
                if (lp->top[t].id == lp->chosen.id) {
                    assert_true(lp->top[t].logprob == lp->chosen.logprob);
                    found++;
                }
        }
        if (sampled) printf("[scheduler] %u of 24 sampled tokens in their top 20\n", found), assert_true(found > 0);
        else assert_int_equal(found, 24);
        // Speculating: each kept position is sampled from its own row, the
        // same bits as one token a pass, so the same logprobs exactly.
        static s_out_t spec;
        memset(&spec, 0, sizeof spec);
        const mc_draft_params_t dp = mc_draft_params_default();
        p.speculate = &dp;
        s_alone(&p, &spec);
        assert_int_equal(spec.n, with.n);
        assert_memory_equal(spec.ids, with.ids, with.n * sizeof(int32_t));
        assert_int_equal(spec.n_lps, with.n_lps);
        for (uint32_t k = 0; k < with.n_lps; k++) {
            const mc_logprob_t *a = &spec.lps[k], *b = &with.lps[k];
            assert_true(a->chosen.id == b->chosen.id && a->chosen.logprob == b->chosen.logprob && a->n_top == b->n_top);
            for (uint32_t t = 0; t < a->n_top; t++)
                assert_true(a->top[t].id == b->top[t].id && a->top[t].logprob == b->top[t].logprob);
        }
    }
    free(rows);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_greedy_loop),
        cmocka_unit_test(test_concurrent_same_as_alone),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_limits_and_cancel),
        cmocka_unit_test(test_cache_prefix_reused),
        cmocka_unit_test(test_prefix_from_busy_slot),
        cmocka_unit_test(test_prefix_saved_and_loaded),
        cmocka_unit_test(test_prefix_budget),
        cmocka_unit_test(test_speculative_same_tokens),
        cmocka_unit_test(test_speculative_then_prefix),
        cmocka_unit_test(test_prompt_logits),
        cmocka_unit_test(test_logprobs),
#define S_F16(t) cmocka_unit_test_setup_teardown(t, s_use_f16, s_use_f32)
        S_F16(test_matches_greedy_loop),
        S_F16(test_concurrent_same_as_alone),
        S_F16(test_cache_prefix_reused),
        S_F16(test_prefix_from_busy_slot),
        S_F16(test_prefix_saved_and_loaded),
        S_F16(test_prefix_budget),
        S_F16(test_speculative_same_tokens),
        S_F16(test_speculative_then_prefix),
        S_F16(test_logprobs),
#undef S_F16
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
