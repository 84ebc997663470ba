/*
 * test_routing: what the hook records (rows, pairs, locality per sequence,
 * the trace), the JSON written and read back, and hostile files refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "rng.h"
#include "routing.h"

static void s_hook(mc_routing_t *r, uint32_t layer, uint64_t row, uint32_t seq, uint32_t pos, int32_t a, int32_t b) {
    const int32_t sel[2] = {a, b};
    mc_routing_hook(r, layer, row, seq, pos, sel, 2);
}

static void test_record_and_read(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    assert_null(mc_routing_new(0, 8, 2, 1, 10));
    assert_null(mc_routing_new(2, 8, 9, 1, 10));
    mc_routing_t *r = mc_routing_new(2, 4, 2, 2, 3);
    assert_non_null(r);
    // Sequence 0 at positions 0, 1, 2; sequence 1 at position 5 (no predecessor recorded).
    s_hook(r, 0, 0, 0, 0, 0, 1), s_hook(r, 1, 0, 0, 0, 2, 3);
    s_hook(r, 0, 1, 0, 1, 1, 2), s_hook(r, 1, 1, 0, 1, 2, 3);
    s_hook(r, 0, 2, 1, 5, 1, 3), s_hook(r, 1, 2, 1, 5, 0, 3);
    s_hook(r, 0, 3, 0, 2, 1, 0), s_hook(r, 1, 3, 0, 2, 3, 1); // beyond max_trace: counted, not traced
    s_hook(r, 5, 4, 0, 3, 1, 0);                              // no such layer: ignored
    char *json = mc_routing_json(r);
    assert_non_null(json);
    mc_routing_stats_t st;
    if (mc_routing_parse(json, strlen(json), &st, err)) fail_msg("%s\n%s", err, json);
    assert_int_equal(st.n_layer, 2);
    assert_int_equal(st.n_expert, 4);
    assert_int_equal(st.k, 2);
    assert_int_equal(st.tokens, 4);
    const uint64_t rows0[4] = {2, 4, 1, 1}, rows1[4] = {1, 1, 2, 4};
    assert_memory_equal(st.rows, rows0, sizeof rows0);
    assert_memory_equal(st.rows + 4, rows1, sizeof rows1);
    assert_int_equal(st.pairs[(0 * 4 + 0) * 4 + 1], 2); // layer 0: {0,1} twice (rows 0 and 3)
    assert_int_equal(st.pairs[(0 * 4 + 1) * 4 + 0], 2); // symmetric
    assert_int_equal(st.pairs[(1 * 4 + 2) * 4 + 3], 2);
    // Layer 0, sequence 0: row 1 (1, 2) follows (0, 1): expert 1 kept; row 3
    // (1, 0) follows (1, 2): expert 1 kept. Sequence 1's row follows nothing.
    assert_int_equal(st.follow[0 * 4 + 1], 2);
    assert_int_equal(st.kept[0 * 4 + 1], 2);
    assert_int_equal(st.kept[0 * 4 + 2], 0);
    assert_int_equal(st.follow[0 * 4 + 2], 1);
    assert_int_equal(st.n_trace, 3);
    const uint8_t trace[3 * 2 * 2] = {0, 1, 2, 3, 1, 2, 2, 3, 1, 3, 0, 3};
    assert_memory_equal(st.trace, trace, sizeof trace);
    mc_routing_stats_free(&st);
    mc_routing_stats_free(&st); // twice is fine

    // Hostile: every mutation of a byte is parsed or refused, never more.
    mc_rng_t g;
    mc_rng_seed(&g, 11);
    const size_t len = strlen(json);
    char *bad = malloc(len + 1);
    for (int t = 0; t < 3000; t++) {
        memcpy(bad, json, len + 1);
        for (int m = 0; m < 3; m++) bad[mc_rng_next(&g) % len] = "0123456789abf[]{},\":-. x"[mc_rng_next(&g) % 24];
        size_t cut = t % 5 == 0 ? mc_rng_next(&g) % len : len;
        if (!mc_routing_parse(bad, cut, &st, err)) mc_routing_stats_free(&st);
    }
    free(bad);
    cJSON_free(json);
    mc_routing_destroy(&r);
    mc_routing_destroy(&r);
}

static void s_expect(const char *text, const char *want) {
    char err[MC_ERR_LEN] = "";
    mc_routing_stats_t st = {0};
    assert_int_not_equal(mc_routing_parse(text, strlen(text), &st, err), MC_OK);
    if (!strstr(err, want)) fail_msg("for %s\ngot  %s\nwant %s", text, err, want);
    assert_null(st.rows);
}

static void test_refused(void **state) {
    (void)state;
    const char *head = "{\"layers\":1,\"experts\":2,\"experts_per_token\":1,\"tokens\":1,";
    char buf[1024];
    s_expect("[]", "not a JSON object");
    s_expect("{\"layers\":0}", "'layers' must be a whole number in 1..4096");
    s_expect("{\"layers\":1,\"experts\":2,\"experts_per_token\":3,\"tokens\":1}", "more experts per token than experts");
    s_expect("{\"layers\":4096,\"experts\":256,\"experts_per_token\":2,\"tokens\":1}", "do not fit a file");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[]],\"trace\":[]}", head);
    s_expect(buf, "'rows' layer 0 must hold 2 counts");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1,-1]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[]],\"trace\":[]}", head);
    s_expect(buf, "'rows'[0][1] is not a count");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1,0]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[[1,0,3]]],\"trace\":[]}",
             head);
    s_expect(buf, "e1 < e2 < 2");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1,0]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[]],\"trace\":[\"05\"]}",
             head);
    s_expect(buf, "trace token 0 names an expert beyond 1");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1,0]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[]],\"trace\":[\"0\"]}",
             head);
    s_expect(buf, "trace token 0 is not 1 hex pairs");
    snprintf(buf, sizeof buf, "%s\"rows\":[[1,0]],\"kept\":[[0,0]],\"follow\":[[0,0]],\"pairs\":[[]],\"trace\":[\"01\"]}",
             head);
    mc_routing_stats_t st;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_routing_parse(buf, strlen(buf), &st, err), MC_OK);
    assert_int_equal(st.n_trace, 1);
    assert_int_equal(st.trace[0], 1);
    mc_routing_stats_free(&st);
    assert_int_equal(mc_routing_load("/nonexistent/r.json", &st, err), MC_ERR_IO);
}

// The recent window: the last n complete tokens only, oldest first; a
// token still missing layers (a pass under way) is left out; older tokens
// leave as new ones come (the window slides), whatever the total.
static void test_recent_window(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_routing_t *r = mc_routing_new(2, 4, 2, 1, 0);
    assert_non_null(r);
    mc_routing_stats_t st;
    assert_int_equal(mc_routing_recent(r, 100, &st, err), MC_ERR_ARG); // no window asked for
    assert_int_equal(mc_routing_keep_recent(r, 0, err), MC_ERR_ARG);
    assert_int_equal(mc_routing_keep_recent(r, 8, err), MC_OK);
    assert_int_equal(mc_routing_recent(r, 100, &st, err), MC_OK);
    assert_int_equal(st.tokens, 0);
    assert_int_equal(st.n_trace, 0);
    mc_routing_stats_free(&st);
    // 100 tokens choosing experts 0 and 1 at both layers ...
    uint64_t row = 0;
    for (; row < 100; row++) s_hook(r, 0, row, 0, (uint32_t)row, 0, 1), s_hook(r, 1, row, 0, (uint32_t)row, 1, 0);
    // ... then 6 choosing 2 and 3, and a 7th with only layer 0 in.
    for (; row < 106; row++) s_hook(r, 0, row, 0, (uint32_t)row, 2, 3), s_hook(r, 1, row, 0, (uint32_t)row, 3, 2);
    s_hook(r, 0, row, 0, (uint32_t)row, 3, 1);
    assert_int_equal(mc_routing_recent(r, 100, &st, err), MC_OK);
    // The window holds 8 rows: 99..106; 106 is incomplete, so 7 tokens: one of the old, six of the new.
    assert_int_equal(st.n_trace, 7);
    assert_int_equal(st.tokens, 7);
    assert_int_equal(st.rows[0], 1);     // layer 0, expert 0
    assert_int_equal(st.rows[2], 6);     // layer 0, expert 2
    assert_int_equal(st.rows[4 + 3], 6); // layer 1, expert 3
    assert_int_equal(st.pairs[(0 * 4 + 2) * 4 + 3], 6);
    assert_int_equal(st.pairs[(0 * 4 + 3) * 4 + 2], 6); // symmetric, as a parsed file's
    assert_int_equal(st.pairs[(0 * 4 + 0) * 4 + 1], 1);
    // Oldest first: token 99 (0, 1 | 1, 0), then 100 (2, 3 | 3, 2).
    static const uint8_t first[8] = {0, 1, 1, 0, 2, 3, 3, 2};
    assert_memory_equal(st.trace, first, sizeof first);
    mc_routing_stats_free(&st);
    // At most max_tokens: the newest ones.
    assert_int_equal(mc_routing_recent(r, 3, &st, err), MC_OK);
    assert_int_equal(st.n_trace, 3);
    assert_int_equal(st.rows[2], 3);
    assert_int_equal(st.rows[0], 0);
    mc_routing_stats_free(&st);
    // The pass completes and 8 more come: the old tokens are gone entirely.
    s_hook(r, 1, row, 0, (uint32_t)row, 1, 3), row++;
    for (int i = 0; i < 8; i++, row++) s_hook(r, 0, row, 0, (uint32_t)row, 2, 3), s_hook(r, 1, row, 0, (uint32_t)row, 3, 2);
    assert_int_equal(mc_routing_recent(r, 100, &st, err), MC_OK);
    assert_int_equal(st.n_trace, 8);
    assert_int_equal(st.rows[0], 0);
    assert_int_equal(st.rows[1], 0);
    assert_int_equal(st.rows[2], 8);
    mc_routing_stats_free(&st);
    // The counts over everything are untouched by the window.
    char *json = mc_routing_json(r);
    assert_non_null(json);
    assert_int_equal(mc_routing_parse(json, strlen(json), &st, err), MC_OK);
    assert_int_equal(st.tokens, 115);
    assert_int_equal(st.rows[0], 100);
    mc_routing_stats_free(&st);
    free(json);
    mc_routing_destroy(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_and_read),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_recent_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
