/*
 * test_rebalance: live rebalancing (coordinator/serve/rebalance.h).
 *
 * The decisions alone: a proposal on skewed routing over a placement that
 * puts every hot expert on one node predicts a gain and keeps the
 * cluster's nodes, endpoints and settings; a gain below min_gain, or the
 * same placement, is not staged; the judge waits for a full window, keeps
 * a switch within the tolerance (or one with nothing before to compare
 * with) and rolls back one measured slower.
 *
 * The loop with real moe-expert processes on 127.0.0.1: four streams
 * decode while node-1 holds every expert and node-2 none; the loop plans
 * on the recent routing, stages the plan, the switch happens mid-stream,
 * the steps after are timed and the change kept (the params' test seam
 * reports every step as 1 ms, so a loaded machine's noise cannot decide);
 * every stream's tokens equal the same prompt decoded alone. With the
 * steps after the switch reported ten times slower the change is rolled
 * back through the same staging, node-2 holds nothing again, and the
 * tokens are still one machine's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "experts_factory.h"
#include "nodeproc.h"
#include "rebalance.h"
#include "rng.h"
#include "routing.h"
#include "scheduler.h"
#include "testmachines.h"
#include "testnodes.h"
#include "testutil.h"
#include "tokenizer.h"

// --- the decisions -------------------------------------------------------------------

#define L 4
#define E 8
#define K 2

static void s_shape(mc_plan_shape_t *s) {
    *s = (mc_plan_shape_t){L, E, K, 64, calloc(L * E * 3, sizeof(mc_dtype_t)), calloc(L * E, sizeof(uint64_t)),
                           calloc(L * E, sizeof(mc_wire_enc_t)), 8u << 20, NULL};
    for (size_t i = 0; i < L * E; i++) {
        s->types[3 * i] = s->types[3 * i + 1] = s->types[3 * i + 2] = MC_DTYPE_Q4_0;
        s->bytes[i] = 1u << 20;
        s->auto_enc[i] = MC_WIRE_F32;
    }
}

// n tokens; with skew, three choices in four go to experts 0 and 1.
static void s_stats(mc_routing_stats_t *st, uint32_t n, bool skew) {
    memset(st, 0, sizeof *st);
    st->n_layer = L, st->n_expert = E, st->k = K, st->tokens = n, st->n_trace = n;
    st->rows = calloc(L * E, sizeof(uint64_t));
    st->pairs = calloc(L * E * E, sizeof(uint64_t));
    st->kept = calloc(L * E, sizeof(uint64_t));
    st->follow = calloc(L * E, sizeof(uint64_t));
    st->trace = calloc((size_t)n * L * K, 1);
    mc_rng_t g;
    mc_rng_seed(&g, 5);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t l = 0; l < L; l++) {
            uint8_t *sel = st->trace + ((size_t)t * L + l) * K;
            uint32_t a = (uint32_t)(mc_rng_next(&g) % E), b;
            if (skew && mc_rng_next(&g) % 4) a = (uint32_t)(mc_rng_next(&g) % 2);
            do b = skew && mc_rng_next(&g) % 4 ? (uint32_t)(mc_rng_next(&g) % 2) : (uint32_t)(mc_rng_next(&g) % E);
            while (b == a);
            sel[0] = (uint8_t)a, sel[1] = (uint8_t)b;
            st->rows[l * E + a]++, st->rows[l * E + b]++;
            st->pairs[(l * E + a) * E + b]++, st->pairs[(l * E + b) * E + a]++;
        }
}

// A coordinator (too slow at experts to hold any) and two equal nodes.
static const mc_test_machine_t s_two_machines[] = {{"n1", "tcp://ignored:1", 4000, NULL},
                                                   {"n2", "tcp://ignored:2", 4000, NULL}};

static mc_cluster_config_t *s_two_nodes(const char *a, const char *b) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *c = mc_cluster_config_new();
    mc_expert_set_t x, y;
    assert_int_equal(mc_expert_set_parse(a, &x, err), MC_OK);
    assert_int_equal(mc_expert_set_parse(b, &y, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(c, "n1", "tcp://10.0.0.1:5555", &x, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(c, "n2", "tcp://10.0.0.2:5555", &y, NULL, err), MC_OK);
    c->timeout_ms = 1234, c->slow_ms = 0;
    assert_int_equal(mc_cluster_config_set_rebalance(c, 60, 0.1, "/m.yaml", 8, 0.05, err), MC_OK);
    return c;
}

static void test_propose_and_decide(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_shape_t s;
    s_shape(&s);
    char machines[2048];
    const mc_test_machines_t mt = mc_test_machines_split("Q4_0");
    mc_test_machines_yaml(&mt, s_two_machines, 2, machines, sizeof machines);
    mc_plan_machines_t ms;
    if (mc_plan_machines_parse(machines, strlen(machines), "m.yaml", &ms, err)) fail_msg("%s", err);
    mc_plan_params_t pp = mc_plan_params_default();
    pp.sim.batch = 4, pp.local = false;
    mc_routing_stats_t skewed, even;
    s_stats(&skewed, 400, true);
    s_stats(&even, 400, false);

    // Every hot expert on n1: the plan spreads them, predicted faster.
    mc_cluster_config_t *bad = s_two_nodes("0-3", "4-7"), *cand = NULL;
    mc_rebalance_proposal_t p;
    if (mc_rebalance_propose(&s, &ms, &skewed, bad, &pp, &cand, &p, err)) fail_msg("%s", err);
    printf("[rebalance] skewed routing, hot experts on one node: %.3f ms/step now, %.3f planned, gain %.1f%%\n",
           p.cur_ms, p.new_ms, 100 * p.gain);
    assert_false(p.same);
    assert_int_equal(p.tokens, 400);
    assert_true(p.gain > 0.2);
    assert_true(p.cur_ms / p.new_ms - 1 == p.gain);
    assert_true(mc_rebalance_decide(&p, 0.1));
    assert_true(mc_rebalance_decide(&p, p.gain));      // at the threshold: staged
    assert_false(mc_rebalance_decide(&p, p.gain + 1e-9)); // just below it: not
    // The candidate: the cluster's nodes in order, at its endpoints, with its settings.
    assert_int_equal(cand->n_nodes, 2);
    assert_string_equal(cand->nodes[0].name, "n1");
    assert_string_equal(cand->nodes[1].endpoint, "tcp://10.0.0.2:5555");
    assert_int_equal(cand->timeout_ms, 1234);
    assert_int_equal(cand->slow_ms, 0);
    assert_true(cand->rebalance.on);
    assert_string_equal(cand->rebalance.machines, "/m.yaml");
    assert_int_equal(mc_cluster_config_check(cand, L, E, err), MC_OK);
    bool n2_hot = false;
    for (uint32_t l = 0; l < L; l++) n2_hot |= mc_cluster_node_holds(&cand->nodes[1], l, 0) || mc_cluster_node_holds(&cand->nodes[1], l, 1);
    assert_true(n2_hot);
    // Planning again on the plan: nothing more to gain.
    mc_cluster_config_t *again = NULL;
    mc_rebalance_proposal_t q;
    if (mc_rebalance_propose(&s, &ms, &skewed, cand, &pp, &again, &q, err)) fail_msg("%s", err);
    assert_true(q.gain < 0.1);
    assert_false(mc_rebalance_decide(&q, 0.1));
    mc_cluster_config_destroy(&again);
    mc_cluster_config_destroy(&cand);

    // Even routing over an even split: gain below the threshold, no change.
    if (mc_rebalance_propose(&s, &ms, &even, bad, &pp, &cand, &p, err)) fail_msg("%s", err);
    assert_true(p.gain < 0.1);
    assert_false(mc_rebalance_decide(&p, 0.1));
    mc_cluster_config_destroy(&cand);
    // The same placement is never staged, whatever min_gain.
    p.same = true, p.gain = 5;
    assert_false(mc_rebalance_decide(&p, 0));

    // A node the machines file does not know; stats of another shape.
    mc_cluster_config_t *other = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_add_node(other, "n9", "tcp://10.0.0.9:5555", NULL, NULL, err), MC_OK);
    assert_int_equal(mc_rebalance_propose(&s, &ms, &skewed, other, &pp, &cand, &p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "node n9 is not in the machines file"));
    assert_null(cand);
    skewed.k = 3;
    assert_int_equal(mc_rebalance_propose(&s, &ms, &skewed, bad, &pp, &cand, &p, err), MC_ERR_ARG);
    skewed.k = K;
    mc_cluster_config_destroy(&other);
    mc_cluster_config_destroy(&bad);
    mc_routing_stats_free(&skewed);
    mc_routing_stats_free(&even);
    mc_plan_machines_free(&ms);
    mc_plan_shape_free(&s);
}

static void test_judge(void **state) {
    (void)state;
    double mb, ma;
    double before[5] = {10, 10.2, 9.8, 50, 10}; // one outlier (a prefill): the median ignores it
    double slow[4] = {12, 11.5, 12.5, 12}, same[4] = {10.4, 10.3, 10.1, 9.9}, fast[4] = {6, 6, 7, 6};
    assert_int_equal(mc_rebalance_judge(before, 5, slow, 3, 4, 0.05, &mb, &ma), MC_REBALANCE_WAIT);
    assert_int_equal(mc_rebalance_judge(before, 5, slow, 4, 4, 0.05, &mb, &ma), MC_REBALANCE_ROLLBACK);
    assert_true(mb == 10 && ma == 12);
    assert_int_equal(mc_rebalance_judge(before, 5, slow, 4, 4, 0.25, &mb, &ma), MC_REBALANCE_KEEP); // within noise
    assert_int_equal(mc_rebalance_judge(before, 5, same, 4, 4, 0.05, &mb, &ma), MC_REBALANCE_KEEP);
    assert_int_equal(mc_rebalance_judge(before, 5, fast, 4, 4, 0, &mb, &ma), MC_REBALANCE_KEEP);
    assert_true(ma == 6);
    // Fewer steps before than the window: nothing to compare with, kept.
    assert_int_equal(mc_rebalance_judge(before, 3, slow, 4, 4, 0.05, &mb, &ma), MC_REBALANCE_KEEP);
    assert_true(mb == 0 && ma == 12);
    assert_string_equal(mc_rebalance_outcome_name(MC_REBALANCE_ROLLED_BACK), "rolled_back");
    assert_string_equal(mc_rebalance_outcome_name(MC_REBALANCE_SKIPPED_GAIN), "skipped_gain");
}

// --- the loop on a real cluster ----------------------------------------------------------

#define N_STREAMS 4
#define N_TOKENS 48

static char s_dir[256];
static mc_test_nodes_t s_nodes;

static int s_setup(void **state) {
    (void)state;
    mc_test_nodes_init(&s_nodes);
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static int s_stop_procs(void **state) {
    (void)state;
    mc_test_nodes_stop(&s_nodes);
    return 0;
}

static void s_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct {
    int32_t ids[N_TOKENS];
    uint32_t n;
    bool done;
} s_stream_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    (void)text, (void)len;
    s_stream_t *o = user;
    if (o->n < N_TOKENS) o->ids[o->n++] = id;
    return true;
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *usage, const char *err) {
    (void)why, (void)usage, (void)err;
    ((s_stream_t *)user)->done = true;
}

static const int32_t s_prompt_ids[N_STREAMS][6] = {
    {1, 415, 2936, 9060, 285, 1142}, {1, 330, 3900, 302, 4843, 28747}, {1, 851, 349, 264, 1369, 28723}, {1, 22557, 28725, 910, 460, 368}};

static mc_gen_params_t s_params(size_t i, s_stream_t *o) {
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = s_prompt_ids[i], p.n_prompt = 6, p.max_tokens = N_TOKENS, p.ignore_eos = true;
    p.on_text = s_on_text, p.on_done = s_on_done, p.user = o;
    return p;
}

static mc_engine_t *s_engine(const mc_model_t *m, uint32_t n_seq) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_seq = n_seq, ep.n_ctx = 128, ep.n_threads = 2;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    if (!e) fail_msg("%s", err);
    return e;
}

// Each prompt alone on one machine.
static void s_reference(const mc_model_t *m, mc_tokenizer_t *tok, s_stream_t *ref) {
    char err[MC_ERR_LEN];
    for (size_t i = 0; i < N_STREAMS; i++) {
        mc_engine_t *e = s_engine(m, 1);
        mc_scheduler_t *s = mc_scheduler_new(e, tok, err);
        mc_gen_params_t p = s_params(i, &ref[i]);
        assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
        while (mc_scheduler_pending(s))
            if (mc_scheduler_step(s, err)) fail_msg("%s", err);
        assert_int_equal(ref[i].n, N_TOKENS);
        mc_scheduler_destroy(&s);
        mc_engine_destroy(&e);
    }
}

// The step-time seam: steps after a switch reported ten times slower
// (1 ms before, 10 after, whatever the machine's load).
static double s_slower_after(void *user, mc_rebalance_phase_t phase, double ms) {
    (void)user, (void)ms;
    return phase == MC_REBALANCE_PHASE_AFTER ? 10 : 1;
}

// The seam for the kept switch: every step 1 ms, so a loaded machine's
// noise (sanitizers, other tests) cannot roll it back.
static double s_steady_ms(void *user, mc_rebalance_phase_t phase, double ms) {
    (void)user, (void)phase, (void)ms;
    return 1;
}

// Whether node i holds any pair.
static bool s_holds_any(mc_cluster_t *c, const mc_model_t *m, size_t i) {
    for (uint32_t l = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++)
            if (mc_cluster_holds(c, i, l, e)) return true;
    return false;
}

// Request f (a copy of the current file, changed by the caller) and step
// until it is the current one; then let the loop see it.
static void s_switch_to(mc_cluster_t *c, mc_scheduler_t *s, mc_rebalance_t *rb, mc_cluster_config_t *f, double *now) {
    char err[MC_ERR_LEN];
    const mc_cluster_config_t *want = f;
    assert_int_equal(mc_cluster_request(c, &f, err), MC_OK);
    const double t0 = mc_clock_ms();
    for (;;) {
        bool staging;
        const mc_cluster_config_t *cur = mc_cluster_config_latest(c, &staging);
        if (!staging && cur == want) break;
        if (!staging) fail_msg("the change was dropped");
        if (mc_clock_ms() - t0 > 30000) fail_msg("no switch within 30 s");
        if (mc_scheduler_pending(s)) {
            if (mc_scheduler_step(s, err)) fail_msg("%s", err);
        } else {
            mc_experts_tick(mc_cluster_experts(c));
            s_sleep_ms(2);
        }
    }
    *now += 250;
    mc_rebalance_poll(rb, *now);
}

// The loop follows the current file's block: one without it rests the loop
// (no rounds however long), one with other numbers takes them.
static void s_follow_files(mc_cluster_t *c, mc_scheduler_t *s, mc_rebalance_t *rb, const char *machines, double *now) {
    char err[MC_ERR_LEN];
    uint64_t before[MC_REBALANCE_N_OUTCOMES], after[MC_REBALANCE_N_OUTCOMES];
    bool staging;
    mc_cluster_config_t *f = mc_cluster_config_clone(mc_cluster_config_latest(c, &staging), err);
    if (!f) fail_msg("%s", err);
    f->rebalance.on = false;
    s_switch_to(c, s, rb, f, now);
    mc_rebalance_counts(rb, before);
    for (int i = 0; i < 40; i++) mc_rebalance_poll(rb, *now += 250); // 10 s: ten rounds were it on
    mc_rebalance_counts(rb, after);
    assert_memory_equal(before, after, sizeof before);
    cJSON *js = mc_rebalance_json(rb);
    assert_string_equal(cJSON_GetObjectItem(js, "state")->valuestring, "off");
    cJSON_Delete(js);
    // Back on, every 7 s and min_gain 50%.
    if (!(f = mc_cluster_config_clone(mc_cluster_config_latest(c, &staging), err))) fail_msg("%s", err);
    assert_int_equal(mc_cluster_config_set_rebalance(f, 7, 0.5, machines, 4, 0.05, err), MC_OK);
    s_switch_to(c, s, rb, f, now);
    js = mc_rebalance_json(rb);
    assert_string_equal(cJSON_GetObjectItem(js, "state")->valuestring, "idle");
    assert_true(cJSON_GetObjectItem(js, "every_s")->valuedouble == 7);
    assert_true(cJSON_GetObjectItem(js, "min_gain")->valuedouble == 0.5);
    cJSON_Delete(js);
    mc_rebalance_counts(rb, before);
    for (int i = 0; i < 24; i++) mc_rebalance_poll(rb, *now += 250); // 6 s: no round yet
    mc_rebalance_counts(rb, after);
    assert_memory_equal(before, after, sizeof before);
    printf("[rebalance] a file without the block rested the loop; one with every_s 7 restarted it\n");
}

// The loop on the cluster under four streams until `want` has happened
// once; returns the pass at which each switch was seen (switch_step[0..2)).
static void s_run(bool rollback) {
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof path)) skip();
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    mc_tokenizer_t *tok = mc_tokenizer_new_from_gguf(m->gguf, err);
    if (!tok) fail_msg("%s", err);
    s_stream_t ref[N_STREAMS] = {0};
    s_reference(m, tok, ref);

    for (size_t i = 0; i < 2; i++) {
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = path;
        mc_test_nodes_start(&s_nodes, i, &np);
    }
    // The machines: two equal nodes whose expert steps dominate, so that
    // splitting the experts between them is predicted far faster.
    char machines[2048], mpath[512];
    const mc_test_machine_t two[] = {{"node-1", s_nodes.procs[0].endpoint, 4000, NULL},
                                     {"node-2", s_nodes.procs[1].endpoint, 4000, NULL}};
    const mc_test_machines_t mt = mc_test_machines_split("F32");
    mc_test_machines_yaml(&mt, two, 2, machines, sizeof machines);
    snprintf(mpath, sizeof mpath, "%s/machines.yaml", s_dir);
    FILE *f = fopen(mpath, "w");
    assert_non_null(f);
    fputs(machines, f);
    fclose(f);
    // Deliberately bad: node-1 holds every expert, node-2 none.
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 5000, cfg->retry_ms = 200;
    mc_expert_set_t all, none = {{0}};
    assert_int_equal(mc_expert_set_parse("all", &all, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-1", s_nodes.procs[0].endpoint, &all, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(cfg, "node-2", s_nodes.procs[1].endpoint, &none, NULL, err), MC_OK);
    // every_s 1, min_gain 10%, a window of 4 steps, a tolerance of 5%.
    assert_int_equal(mc_cluster_config_set_rebalance(cfg, 1, 0.1, mpath, 4, 0.05, err), MC_OK);

    mc_engine_t *e = s_engine(m, N_STREAMS);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_engine_set_experts(e, mc_cluster_experts(c));
    mc_routing_t *routing = NULL;
    assert_int_equal(mc_experts_routing_new(e, 0, &routing, err), MC_OK);
    mc_rebalance_params_t rp = mc_rebalance_params_default();
    rp.batch = N_STREAMS, rp.min_tokens = 16, rp.log = stdout;
    rp.step_ms = rollback ? s_slower_after : s_steady_ms;
    mc_rebalance_t *rb = mc_rebalance_new(c, m, routing, &rp, err);
    if (!rb) fail_msg("%s", err);
    assert_false(s_holds_any(c, m, 1));
    mc_scheduler_t *s = mc_scheduler_new(e, tok, err);
    s_stream_t got[N_STREAMS] = {0};
    for (size_t i = 0; i < N_STREAMS; i++) {
        mc_gen_params_t p = s_params(i, &got[i]);
        assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    }
    // A clock of our own: 250 ms a round, so the timer fires every fourth;
    // the first time, with fewer than a window of steps timed, it skips.
    double now = 1e6;
    mc_rebalance_poll(rb, now); // arms the timer
    uint64_t counts[MC_REBALANCE_N_OUTCOMES];
    const mc_rebalance_outcome_t want = rollback ? MC_REBALANCE_ROLLED_BACK : MC_REBALANCE_APPLIED;
    int staged_steps = 0, switched_at = -1, steps = 0;
    bool saw_node2 = false;
    const double t0 = mc_clock_ms();
    for (;;) {
        mc_rebalance_counts(rb, counts);
        if (counts[want]) break;
        if (steps == 4) assert_int_equal(counts[MC_REBALANCE_SKIPPED_IDLE], 1);
        if (counts[MC_REBALANCE_FAILED]) fail_msg("a rebalance failed (see its log line)");
        if (mc_clock_ms() - t0 > 60000) fail_msg("no rebalance %s within 60 s", mc_rebalance_outcome_name(want));
        now += 250;
        mc_rebalance_poll(rb, now);
        bool staging;
        mc_cluster_config_latest(c, &staging);
        if (s_holds_any(c, m, 1) && !saw_node2) saw_node2 = true, switched_at = steps;
        if (!mc_scheduler_pending(s)) fail_msg("the streams ended before the rebalance was judged: nothing tested under load");
        // While a change is staged the streams take two steps (the old
        // placement serves them), then wait, the cluster ticking, so the
        // switch lands mid-stream whatever the machine's speed.
        if (staging && staged_steps >= 2) {
            mc_experts_tick(mc_cluster_experts(c));
            s_sleep_ms(2);
            continue;
        }
        staged_steps = staging ? staged_steps + 1 : 0;
        const double t = mc_clock_ms();
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
        mc_rebalance_step(rb, mc_clock_ms() - t);
        steps++;
    }
    assert_true(saw_node2); // the plan gave node-2 experts, and it computed them
    assert_true(switched_at > 0);
    bool all_done = true;
    for (size_t i = 0; i < N_STREAMS; i++) all_done &= got[i].done;
    assert_false(all_done);
    assert_int_equal(counts[MC_REBALANCE_FAILED], 0);
    // Applied: node-2 holds experts now; rolled back: none again.
    assert_int_equal(s_holds_any(c, m, 1), !rollback);
    cJSON *js = mc_rebalance_json(rb);
    assert_non_null(js);
    const cJSON *last = cJSON_GetObjectItem(js, "last");
    assert_non_null(last);
    assert_string_equal(cJSON_GetObjectItem(last, "outcome")->valuestring, mc_rebalance_outcome_name(want));
    assert_true(cJSON_GetObjectItem(last, "predicted_gain")->valuedouble >= 0.1);
    assert_true(cJSON_GetObjectItem(last, "measured_ms_after")->valuedouble > 0);
    if (rollback)
        assert_true(cJSON_GetObjectItem(last, "measured_ms_after")->valuedouble >
                    2 * cJSON_GetObjectItem(last, "measured_ms_before")->valuedouble);
    assert_string_equal(cJSON_GetObjectItem(js, "state")->valuestring, "idle");
    cJSON_Delete(js);
    if (!rollback) s_follow_files(c, s, rb, mpath, &now);
    while (mc_scheduler_pending(s))
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
    for (size_t i = 0; i < N_STREAMS; i++) {
        assert_int_equal(got[i].n, N_TOKENS);
        assert_memory_equal(got[i].ids, ref[i].ids, sizeof ref[i].ids);
    }
    printf("[rebalance] %d streams of %d tokens: the plan switched at step %d of the streams and was %s; every "
           "stream's tokens equal one machine's\n",
           N_STREAMS, N_TOKENS, switched_at, rollback ? "rolled back" : "kept");
    mc_rebalance_destroy(&rb);
    mc_scheduler_destroy(&s);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    mc_routing_destroy(&routing);
    mc_cluster_config_destroy(&cfg);
    mc_tokenizer_destroy(&tok);
    mc_model_destroy(&m);
}

static void test_loop_applies(void **state) {
    (void)state;
    s_run(false);
}

static void test_loop_rolls_back(void **state) {
    (void)state;
    s_run(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_propose_and_decide),
        cmocka_unit_test(test_judge),
        cmocka_unit_test_teardown(test_loop_applies, s_stop_procs),
        cmocka_unit_test_teardown(test_loop_rolls_back, s_stop_procs),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
