/*
 * test_constraint: constrained decoding on a generated model (random
 * weights). The trie walk's mask equals trying every token on its own,
 * step after step; forced ids, prefix and suffix text; generations with
 * random weights always give a document that parses and validates against
 * the schema and end with "stop"; the same tokens twice, batched as
 * alone, and with speculative decoding; the strip-space first token; bad schemas refused at submission.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constraint.h"
#include "engine.h"
#include "jsonschema.h"
#include "mkmodel.h"
#include "model.h"
#include "scheduler.h"
#include "testutil.h"
#include "tokenizer.h"
#include "tokentrie.h"

static char s_dir[256];
static mc_model_t *s_m;
static mc_tokenizer_t *s_tok;

static const char *const s_schema =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},\"n\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"y\"]},\"maxItems\":3},\"ok\":{\"type\":\"boolean\"},"
    "\"v\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"null\"}]}},"
    "\"required\":[\"name\",\"n\",\"ok\"],\"additionalProperties\":false}";

// With unbounded strings (the walk's plain-subtree shortcut) and any values.
static const char *const s_schema_walk =
    "{\"type\":\"object\",\"properties\":{\"note\":{\"type\":\"string\"},\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"any\":{},\"v\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"string\"}]}},\"required\":[\"name\"]}";

static int s_setup(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_tmpdir(s_dir, sizeof s_dir)) return -1;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.seed = 5;
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

static size_t s_utf8_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((uint8_t)*s & 0xC0) != 0x80;
    return n;
}

// Does text hold exactly one JSON value that s_schema accepts?
static bool s_valid(const char *text, size_t len) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, false);
    bool ok = j && end == text + len && cJSON_IsObject(j);
    int have = 0;
    for (const cJSON *k = ok ? j->child : NULL; k && ok; k = k->next) {
        if (!strcmp(k->string, "name")) ok = cJSON_IsString(k) && s_utf8_chars(k->valuestring) <= 8, have |= 1;
        else if (!strcmp(k->string, "n")) ok = cJSON_IsNumber(k) && floor(k->valuedouble) == k->valuedouble, have |= 2;
        else if (!strcmp(k->string, "ok")) ok = cJSON_IsBool(k), have |= 4;
        else if (!strcmp(k->string, "v")) ok = cJSON_IsNumber(k) || cJSON_IsNull(k);
        else if (!strcmp(k->string, "tags")) {
            ok = cJSON_IsArray(k) && cJSON_GetArraySize(k) <= 3;
            for (const cJSON *t = ok ? k->child : NULL; t && ok; t = t->next)
                ok = cJSON_IsString(t) && (!strcmp(t->valuestring, "x") || !strcmp(t->valuestring, "y"));
        } else ok = false;
    }
    cJSON_Delete(j);
    return ok && have == 7;
}

// --- the mask against every token tried alone ---------------------------------------

static bool s_brute_allows(const mc_jsm_t *m, const uint8_t *doc, size_t n, const uint8_t *tb, size_t tl) {
    static mc_jsm_state_t a, b;
    mc_jsm_start(m, &a);
    mc_jsm_state_t *cur = &a, *nx = &b;
    for (size_t i = 0; i < n + tl; i++) {
        if (!mc_jsm_step(m, cur, i < n ? doc[i] : tb[i - n], nx)) return false;
        mc_jsm_state_t *t = cur;
        cur = nx, nx = t;
    }
    return true;
}

static void test_mask_equals_brute_force(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const int32_t eos = mc_tokenizer_eos(s_tok);
    mc_tokentrie_t *t = mc_tokentrie_new(s_tok, s_m->hp.n_vocab, &eos, 1, err);
    assert_non_null(t);
    mc_jschema_t *js = mc_jschema_compile(s_schema_walk, strlen(s_schema_walk), err);
    assert_non_null(js);
    const char *pre = "<j>", *suf = "</j>";
    mc_jsm_t m = {js, (const uint8_t *)pre, 3, (const uint8_t *)suf, 4};
    uint64_t rng = 12345;
    for (int run = 0; run < 4; run++) {
        mc_constraint_params_t cp = mc_constraint_params_default();
        cp.schema = s_schema_walk, cp.schema_len = strlen(s_schema_walk), cp.prefix = pre, cp.suffix = suf;
        // Odd runs borrow the compiled schema (the server's way): the text
        // is then not looked at, so none is given.
        if (run % 2) cp.compiled = js, cp.schema = NULL, cp.schema_len = 0;
        mc_constraint_t *c = mc_constraint_new(t, &cp, err);
        assert_non_null(c);
        uint8_t doc[4096];
        size_t n = 0;
        for (int step = 0; step < 300 && !mc_constraint_complete(c); step++) {
            uint32_t allowed;
            const uint64_t *mask = mc_constraint_mask(c, &allowed);
            uint32_t count = 0, pick_at, k = 0;
            int32_t pick = -1;
            for (uint32_t id = 0; id < t->n_vocab; id++) {
                const bool bit = mask[id / 64] >> (id % 64) & 1;
                bool want;
                if (id == (uint32_t)eos) want = mc_constraint_accepting(c);
                else want = t->len[id] && s_brute_allows(&m, doc, n, t->pool + t->off[id], t->len[id]);
                if (bit != want) fail_msg("run %d step %d: token %u mask %d, alone %d", run, step, id, bit, want);
                count += bit;
            }
            assert_int_equal(count, allowed);
            assert_true(allowed > 0);
            // A pseudo-random allowed token (favouring closers now and then so documents end).
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            pick_at = (uint32_t)(rng >> 33) % allowed;
            for (uint32_t id = 0; id < t->n_vocab && pick < 0; id++)
                if ((mask[id / 64] >> (id % 64) & 1) && k++ == pick_at) pick = (int32_t)id;
            assert_int_equal(mc_constraint_advance(c, pick, err), MC_OK);
            if (pick != eos) {
                memcpy(doc + n, t->pool + t->off[pick], t->len[pick]);
                n += t->len[pick];
            }
        }
        // A token that does not fit is refused and changes nothing.
        if (!mc_constraint_complete(c)) {
            uint32_t allowed;
            const uint64_t *mask = mc_constraint_mask(c, &allowed);
            for (uint32_t id = 0; id < t->n_vocab; id++)
                if (!(mask[id / 64] >> (id % 64) & 1)) {
                    assert_int_not_equal(mc_constraint_advance(c, (int32_t)id, err), MC_OK);
                    break;
                }
        }
        mc_constraint_stats_t st;
        mc_constraint_stats(c, &st);
        assert_true(st.masks > 0 && st.visited > 0);
        mc_constraint_destroy(&c);
        mc_constraint_destroy(&c);
    }
    // Forced ids come first, one allowed token each.
    const int32_t forced[2] = {7, 9};
    mc_constraint_params_t cp = mc_constraint_params_default();
    cp.prefix_ids = forced, cp.n_prefix_ids = 2;
    mc_constraint_t *c = mc_constraint_new(t, &cp, err);
    uint32_t allowed;
    const uint64_t *mask = mc_constraint_mask(c, &allowed);
    assert_int_equal(allowed, 1);
    assert_true(mask[0] >> 7 & 1);
    assert_int_not_equal(mc_constraint_advance(c, 9, err), MC_OK);
    assert_int_equal(mc_constraint_advance(c, 7, err), MC_OK);
    assert_int_equal(mc_constraint_advance(c, 9, err), MC_OK);
    mask = mc_constraint_mask(c, &allowed);
    assert_true(allowed > 1); // now any JSON object's first tokens
    mc_constraint_destroy(&c);
    // A bad schema is refused with the compiler's message.
    cp = mc_constraint_params_default();
    cp.schema = "{\"type\":\"string\",\"pattern\":\"x\"}", cp.schema_len = strlen(cp.schema);
    assert_null(mc_constraint_new(t, &cp, err));
    assert_non_null(strstr(err, "pattern"));
    mc_jschema_destroy(&js);
    mc_tokentrie_destroy(&t);
}

// --- generation through the scheduler ---------------------------------------------------

typedef struct {
    int32_t ids[1024];
    uint32_t n;
    char text[8192];
    size_t len;
    mc_finish_t why;
    bool done;
} s_out_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_out_t *o = user;
    if (id >= 0 && o->n < 1024) o->ids[o->n++] = id;
    assert_true(o->len + len < sizeof o->text);
    memcpy(o->text + o->len, text, len);
    o->len += len;
    o->text[o->len] = 0;
    return true;
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_out_t *o = user;
    (void)u;
    if (why == MC_FINISH_ERROR) fail_msg("%s", err);
    o->why = why, o->done = true;
}

static const int32_t s_prompt[] = {1, 300, 301, 302, 260, 270, 280, 290, 3, 4, 5};

static mc_gen_params_t s_params(s_out_t *o, const mc_constraint_params_t *cp, uint64_t seed, bool strip) {
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = s_prompt, p.n_prompt = sizeof s_prompt / sizeof *s_prompt;
    p.on_text = s_on_text, p.on_done = s_on_done, p.user = o;
    p.max_tokens = 900;
    p.sampling.temp = seed ? 1.0f : 0.0f;
    p.sampling.top_k = 0, p.sampling.top_p = 1.0f, p.sampling.min_p = 0.0f;
    p.sampling.seed = seed;
    p.strip_space = strip;
    p.constrain = cp;
    return p;
}

// n generations at once on one engine with n slots.
static void s_batch(const mc_gen_params_t *ps, s_out_t *outs, uint32_t n) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_seq = n, ep.n_ctx = 1024, ep.n_threads = 2;
    mc_engine_t *e = mc_engine_new(s_m, &ep, err);
    assert_non_null(e);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    for (uint32_t i = 0; i < n; i++) {
        mc_gen_params_t q = ps[i];
        q.user = &outs[i];
        memset(&outs[i], 0, sizeof outs[i]);
        assert_int_equal(mc_scheduler_submit(s, &q, NULL, err), MC_OK);
    }
    for (int i = 0; i < 20000 && mc_scheduler_pending(s); i++)
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
    assert_int_equal(mc_scheduler_pending(s), 0);
    mc_constrain_stats_t cs;
    mc_scheduler_constrain_stats(s, &cs);
    assert_true(cs.masks > 0);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

static void test_generations_validate(void **state) {
    (void)state;
    enum { N = 4 };
    mc_constraint_params_t cp = mc_constraint_params_default();
    cp.schema = s_schema, cp.schema_len = strlen(s_schema);
    mc_gen_params_t ps[N];
    static s_out_t batched[N], alone[N], again[N];
    for (uint32_t i = 0; i < N; i++) ps[i] = s_params(&batched[i], &cp, i == 0 ? 0 : 100 + i, i == 3);
    s_batch(ps, batched, N);
    for (uint32_t i = 0; i < N; i++) {
        s_batch(&ps[i], &alone[i], 1);
        s_batch(&ps[i], &again[i], 1);
        assert_true(batched[i].done);
        assert_int_equal(batched[i].why, MC_FINISH_STOP);
        if (getenv("MC_TEST_SHOW")) fprintf(stderr, "[%u] %u tokens: %s\n", i, batched[i].n, batched[i].text);
        if (!s_valid(batched[i].text, batched[i].len)) fail_msg("generation %u: not valid: %s", i, batched[i].text);
        // Batched = alone = again, token for token.
        assert_int_equal(batched[i].n, alone[i].n);
        assert_memory_equal(batched[i].ids, alone[i].ids, batched[i].n * sizeof(int32_t));
        assert_int_equal(alone[i].n, again[i].n);
        assert_memory_equal(alone[i].ids, again[i].ids, alone[i].n * sizeof(int32_t));
        assert_string_equal(batched[i].text, alone[i].text);
    }
    // Speculative decoding (guesses verified against the masked rows): the same tokens.
    const mc_draft_params_t dp = mc_draft_params_default();
    for (uint32_t i = 0; i < 2; i++) {
        static s_out_t spec;
        mc_gen_params_t q = ps[i];
        q.speculate = &dp;
        s_batch(&q, &spec, 1);
        assert_int_equal(spec.n, alone[i].n);
        assert_memory_equal(spec.ids, alone[i].ids, spec.n * sizeof(int32_t));
    }
    // Different seeds, different documents (the mask leaves the model a choice).
    assert_true(strcmp(batched[1].text, batched[2].text) != 0);
    // Prefix and suffix text around the value; any object.
    mc_constraint_params_t cq = mc_constraint_params_default();
    cq.prefix = "<tool_call>\n", cq.suffix = "\n</tool_call>";
    static s_out_t o;
    mc_gen_params_t p = s_params(&o, &cq, 7, false);
    p.max_tokens = 0; // until done: any object is bounded only by the context, which ends with "length"
    s_batch(&p, &o, 1);
    if (getenv("MC_TEST_SHOW")) fprintf(stderr, "[tool] %s: %s\n", mc_finish_name(o.why), o.text);
    if (o.why == MC_FINISH_STOP) {
        assert_true(o.len > 25);
        assert_memory_equal(o.text, "<tool_call>\n", 12);
        assert_string_equal(o.text + o.len - 13, "\n</tool_call>");
        cJSON *j = cJSON_ParseWithLength(o.text + 12, o.len - 25);
        assert_true(cJSON_IsObject(j));
        cJSON_Delete(j);
    } else {
        assert_int_equal(o.why, MC_FINISH_LENGTH);
        assert_memory_equal(o.text, "<tool_call>\n{", 13);
    }
}

static void test_submit_refuses_bad_schema(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_seq = 1, ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(s_m, &ep, err);
    mc_scheduler_t *s = mc_scheduler_new(e, s_tok, err);
    mc_constraint_params_t cp = mc_constraint_params_default();
    cp.schema = "{\"type\":\"object\",\"patternProperties\":{}}", cp.schema_len = strlen(cp.schema);
    s_out_t o;
    mc_gen_params_t p = s_params(&o, &cp, 0, false);
    assert_int_not_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    assert_non_null(strstr(err, "patternProperties"));
    assert_int_equal(mc_scheduler_pending(s), 0);
    mc_scheduler_destroy(&s);
    mc_engine_destroy(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_equals_brute_force),
        cmocka_unit_test(test_generations_validate),
        cmocka_unit_test(test_submit_refuses_bad_schema),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
