/*
 * test_plan: the machines file (good and hostile), the simulator against
 * hand-computed times, and the planner's promises: every pair held, no
 * machine over its memory, no local experts or replicas when told so, never
 * predicted slower than the naive split, and a refusal when nothing fits.
 * The disk tier: its keys, the simulator's hits and reads on a hand-built
 * trace, plans that do not change when everything fits, a model larger
 * than the cluster's memory planned with its hot experts resident, and the
 * simulator's misses against the real expert store replaying the trace.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "expert_store.h"
#include "kernel.h"
#include "matmul.h"
#include "mkmodel.h"
#include "plan.h"
#include "pool.h"
#include "rng.h"
#include "testmachines.h"
#include "testutil.h"

#define L 4
#define E 8
#define K 2

// Machines: a coordinator and n nodes n1, n2, ... at tcp://10.0.0.i:5555,
// every one with mem MiB; experts of 1 MiB, Q4_0, 1 ms per row everywhere.
static char *s_machines_yaml(int n, double coord_mb, double node_mb, const char *node_extra) {
    static char buf[16384], names[8][16], endpoints[8][40];
    mc_test_machine_t nodes[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i + 1);
        snprintf(endpoints[i], sizeof endpoints[i], "tcp://10.0.0.%d:5555", i + 1);
        nodes[i] = (mc_test_machine_t){names[i], endpoints[i], node_mb, node_extra};
    }
    const mc_test_machines_t m = {.latency_ms = 0.5, .bandwidth_mbps = 1000, .coord_mb = coord_mb, .layer_ms_1 = 0.25,
                                  .layer_ms_8 = 1.0, .head_ms_1 = 2, .head_ms_8 = 4, .coord_ms_1 = 1, .coord_ms_32 = 32,
                                  .type = "Q4_0", .node_ms_1 = 1, .node_ms_32 = 32, .node_bytes = 1u << 20};
    return mc_test_machines_yaml(&m, nodes, (size_t)n, buf, sizeof buf);
}

static void s_parse_ok(const char *yaml, mc_plan_machines_t *ms) {
    char err[MC_ERR_LEN];
    if (mc_plan_machines_parse(yaml, strlen(yaml), "m.yaml", ms, err)) fail_msg("%s\n%s", err, yaml);
}

static void s_expect_error(const char *yaml, const char *want) {
    char err[MC_ERR_LEN] = "";
    mc_plan_machines_t ms = {0};
    assert_int_not_equal(mc_plan_machines_parse(yaml, strlen(yaml), "m.yaml", &ms, err), MC_OK);
    if (!strstr(err, want)) fail_msg("for:\n%s\ngot:  %s\nwant: %s", yaml, err, want);
    assert_null(ms.m);
}

// L layers x E experts of 1 MiB, Q4_0, f32 wire rows of dim 64.
static void s_shape(mc_plan_shape_t *s) {
    *s = (mc_plan_shape_t){L, E, K, 64, calloc(L * E * 3, sizeof(mc_dtype_t)), calloc(L * E, sizeof(uint64_t)),
                           calloc(L * E, sizeof(mc_wire_enc_t)), 8u << 20, NULL};
    for (size_t i = 0; i < L * E; i++) {
        s->types[3 * i] = s->types[3 * i + 1] = s->types[3 * i + 2] = MC_DTYPE_Q4_0;
        s->bytes[i] = 1u << 20;
        s->auto_enc[i] = MC_WIRE_F32;
    }
}

// A trace of n tokens; with skew, experts 0 and 1 are chosen most.
static void s_stats(mc_routing_stats_t *st, uint32_t n, bool skew) {
    memset(st, 0, sizeof *st);
    st->n_layer = L, st->n_expert = E, st->k = K, st->tokens = n, st->n_trace = n;
    st->rows = calloc(L * E, sizeof(uint64_t));
    st->pairs = calloc(L * E * E, sizeof(uint64_t));
    st->kept = calloc(L * E, sizeof(uint64_t));
    st->follow = calloc(L * E, sizeof(uint64_t));
    st->trace = calloc((size_t)n * L * K, 1);
    mc_rng_t g;
    mc_rng_seed(&g, 7);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t l = 0; l < L; l++) {
            uint8_t *sel = st->trace + ((size_t)t * L + l) * K;
            uint32_t a = (uint32_t)(mc_rng_next(&g) % E), b;
            if (skew && mc_rng_next(&g) % 4) a = (uint32_t)(mc_rng_next(&g) % 2);
            do b = (uint32_t)(mc_rng_next(&g) % E);
            while (b == a);
            sel[0] = (uint8_t)a, sel[1] = (uint8_t)b;
            st->rows[l * E + a]++, st->rows[l * E + b]++;
        }
}

static void test_machines_file(void **state) {
    (void)state;
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(2, 100, 50, "    host: box\n    cores: 4\n    latency_ms: 2\n"), &ms);
    assert_int_equal(ms.n, 3);
    assert_true(ms.m[0].coordinator && !ms.m[1].coordinator);
    assert_string_equal(ms.m[1].name, "n1");
    assert_string_equal(ms.m[2].endpoint, "tcp://10.0.0.2:5555");
    assert_string_equal(ms.m[1].host, "box");
    assert_string_equal(ms.m[0].host, "coord"); // default: its name
    assert_int_equal(ms.m[1].cores, 4);
    assert_int_equal(ms.m[0].cores, 2); // default: its threads
    assert_true(ms.m[1].latency_ms == 2.0 && ms.m[0].latency_ms == 0.0);
    assert_true(ms.m[1].bandwidth_mbps == 1000.0);
    assert_int_equal(ms.m[1].n_curves, 1);
    assert_int_equal(ms.m[1].curves[0].n, 2);
    assert_true(ms.m[1].curves[0].ms[1] == 32.0);
    assert_true(ms.request_ms == 0.0);
    mc_plan_machines_free(&ms);
    mc_plan_machines_free(&ms); // twice is fine

    // The disk tier: on with the disk keys, off without them or when told.
    s_parse_ok(s_machines_yaml(2, 100, 50, "    disk_read_mb_s: 512.5     # a comment, as --profile writes\n"
                                           "    disk_latency_ms: 0.25\n"), &ms);
    assert_true(ms.m[1].disk_tier && ms.m[2].disk_tier && !ms.m[0].disk_tier);
    assert_true(ms.m[1].disk_mb_s == 512.5 && ms.m[1].disk_latency_ms == 0.25);
    assert_true(ms.m[0].disk_mb_s == 0 && ms.m[0].disk_latency_ms == 0);
    mc_plan_machines_free(&ms);
    s_parse_ok(s_machines_yaml(1, 100, 50, "    disk_read_mb_s: 100\n    disk_latency_ms: 0\n    disk_tier: false\n"),
               &ms);
    assert_true(!ms.m[1].disk_tier && ms.m[1].disk_mb_s == 100);
    mc_plan_machines_free(&ms);
    s_parse_ok(s_machines_yaml(1, 100, 50, "    disk_tier: false\n"), &ms);
    assert_false(ms.m[1].disk_tier);
    mc_plan_machines_free(&ms);

    // `moe-expert --profile` output pasted as is under coordinator: a one-item sequence.
    const char *pasted = "coordinator:\n  # moe-expert --profile of m.gguf\n  - name: desk\n    memory_mb: 900\n"
                         "    total_mb: 1000\n    threads: 4\n    experts:\n      - types: [Q4_0, Q4_0, Q4_0]\n"
                         "        bytes: 6193152\n        ms: [[1, 0.5], [2, 0.9]]\n    layer_ms_1: 0.1\n"
                         "    head_ms_1: 1.2\n    layer_ms_8: 0.7\n    head_ms_8: 7\n    local_scale: 1.1\n"
                         "    disk_read_mb_s: 2000\n    disk_latency_ms: 0.1\n"
                         "nodes:\n  - name: pi\n    endpoint: tcp://pi:5555\n    memory_mb: 100\n    threads: 4\n"
                         "    experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]\n";
    s_parse_ok(pasted, &ms);
    assert_string_equal(ms.m[0].name, "desk");
    assert_true(ms.m[0].local_scale == 1.1 && ms.m[1].local_scale == 1.0);
    assert_true(ms.m[0].disk_tier && ms.m[0].disk_mb_s == 2000 && !ms.m[1].disk_tier);
    assert_true(ms.m[1].latency_ms == 0.2); // the default network
    mc_plan_machines_free(&ms);
}

static void test_machines_errors(void **state) {
    (void)state;
    const char *node = "  - name: a\n    endpoint: tcp://a:1\n    memory_mb: 10\n    threads: 1\n"
                       "    experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]\n";
    const char *coord = "coordinator: {name: c, memory_mb: 10, threads: 1, layer_ms_1: 1, head_ms_1: 1,"
                        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]}\n";
    char buf[4096];
    snprintf(buf, sizeof buf, "%snodes:\n%s", coord, node);
    mc_plan_machines_t ms;
    s_parse_ok(buf, &ms);
    mc_plan_machines_free(&ms);
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"colour: blue\n", "m.yaml:1:1: unknown key 'colour'"},
        {"nodes: []\n", "no 'coordinator'"},
        {"- 1\n", "the file must be a mapping"},
        {"coordinator: &c {name: c}\nnodes: [*c]\n", "aliases are not allowed"},
        {"coordinator: [", "m.yaml:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) s_expect_error(cases[i].text, cases[i].want);
    static const struct {
        const char *from, *to, *want;
    } edits[] = {
        {"memory_mb: 10\n    threads: 1", "memory_mb: -3\n    threads: 1", "is not a number in 0..1e+09"},
        {"threads: 1\n    experts", "threads: 0\n    experts", "'threads' must be at least 1"},
        {"    endpoint: tcp://a:1\n", "", "node a needs 'endpoint'"},
        {"ms: [[1, 2]]}]\n", "ms: [[2, 1], [1, 3]]}]\n", "the rows of 'ms' must increase"},
        {"types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]\n", "types: [Q4_0, Q9_9, Q4_0], ms: [[1, 2]]}]\n",
         "'Q9_9' is not a weight type"},
        {"    threads: 1\n", "    threads: 1\n    colour: red\n", "unknown key 'colour' in a node"},
        {"name: a\n", "name: \"a b\"\n", "'name' has a character that is not allowed"},
        {"ms: [[1, 2]]}]\n", "ms: [[1, nan]]}]\n", "is not a number"},
        {"experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]\n", "experts: []\n", "has no 'experts' curves"},
        // The disk tier's keys.
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 0\n    disk_latency_ms: 1\n", "is not a number in 0.001..1e+06"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 2e6\n    disk_latency_ms: 1\n", "is not a number in 0.001..1e+06"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 500\n    disk_latency_ms: -1\n", "is not a number in 0..10000"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 500\n    disk_latency_ms: nan\n", "is not a number"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: [500]\n    disk_latency_ms: 1\n", "must be a single value"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 500\n", "gives 'disk_read_mb_s' without 'disk_latency_ms'"},
        {"threads: 1\n", "threads: 1\n    disk_latency_ms: 2\n", "gives 'disk_latency_ms' without 'disk_read_mb_s'"},
        {"threads: 1\n", "threads: 1\n    disk_tier: yes\n", "'disk_tier' must be true or false, found 'yes'"},
        {"threads: 1\n", "threads: 1\n    disk_tier: true\n", "'disk_tier: true' needs disk_read_mb_s and disk_latency_ms"},
        {"threads: 1\n", "threads: 1\n    disk_read_mb_s: 1\n    disk_latency_ms: 1\n    disk_read_mb_s: 2\n",
         "'disk_read_mb_s' is given twice"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char n2[1024];
        const char *at = strstr(node, edits[i].from);
        assert_non_null(at);
        snprintf(n2, sizeof n2, "%.*s%s%s", (int)(at - node), node, edits[i].to, at + strlen(edits[i].from));
        snprintf(buf, sizeof buf, "%snodes:\n%s", coord, n2);
        s_expect_error(buf, edits[i].want);
    }
    snprintf(buf, sizeof buf, "%snodes:\n%s%s", coord, node, node);
    s_expect_error(buf, "two machines are called 'a'");
    snprintf(buf, sizeof buf, "%snodes:\n%s    host: c\n    cores: 3\n", coord, node);
    s_expect_error(buf, "share host c but say 1 and 3 cores");
    // Hostile: huge, deep, random bytes.
    char *big = malloc(MC_PLAN_MAX_FILE_BYTES + 2);
    memset(big, ' ', MC_PLAN_MAX_FILE_BYTES + 1);
    char err[MC_ERR_LEN];
    assert_int_equal(mc_plan_machines_parse(big, MC_PLAN_MAX_FILE_BYTES + 1, "m.yaml", &ms, err), MC_ERR_FORMAT);
    free(big);
    char deep[256];
    memset(deep, '[', 100);
    deep[100] = 0;
    s_expect_error(deep, "m.yaml:");
    mc_rng_t g;
    mc_rng_seed(&g, 3);
    for (int t = 0; t < 2000; t++) {
        char junk[96];
        size_t n = mc_rng_next(&g) % sizeof junk;
        for (size_t i = 0; i < n; i++) junk[i] = "{}[]:,- \n'\"ab1&*!|>#"[mc_rng_next(&g) % 20];
        if (!mc_plan_machines_parse(junk, n, "junk", &ms, err)) mc_plan_machines_free(&ms);
    }
}

static void test_simulator_times(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(1, 1000, 1000, NULL), &ms);
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats(&st, 64, false);
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_naive(&ms, &s, &p, err), MC_OK); // everything on n1
    mc_plan_sim_params_t sp = mc_plan_sim_params_default();
    sp.wire = MC_WIRE_F32;
    mc_plan_sim_t r;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    // Batch 1: per layer, two experts of one row (1 ms each, one thread),
    // the round trip, and the bytes: out 64*4 + 2*8+8 per row + 64 header,
    // back 64*4 + 64, at 1000 Mbit/s.
    const double bytes = (64 * 4 + 24 + 64) + (64 * 4 + 64);
    const double layer = 2.0 + 0.5 + bytes * 8 / 1e6;
    assert_true(fabs(r.moe_ms - L * layer) < 1e-9);
    assert_true(fabs(r.attn_ms - L * 0.25) < 1e-12 && fabs(r.head_ms - 2.0) < 1e-12);
    assert_true(fabs(r.tok_s - 1e3 / (L * layer + L * 0.25 + 2.0)) < 1e-9);
    assert_int_equal(r.steps, 64);
    assert_true(fabs(r.rows[1] - L * K) < 1e-12 && r.rows[0] == 0);
    assert_true(fabs(r.requests[1] - L) < 1e-12);
    mc_plan_sim_free(&r);
    // Layer 1 dense (an interleaved layout): whatever the trace holds for
    // it, no rows are sent and it has no expert step.
    s.moe = malloc(L);
    memset(s.moe, 1, L);
    s.moe[1] = 0;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    assert_true(fabs(r.moe_ms - (L - 1) * layer) < 1e-9);
    assert_true(r.layer_ms[1] == 0 && r.layer_ms[0] > 0);
    assert_true(fabs(r.rows[1] - (L - 1) * K) < 1e-12);
    mc_plan_sim_free(&r);
    free(s.moe);
    s.moe = NULL;
    // The same experts on the coordinator: no link, its two threads share its cores.
    mc_plan_placement_t loc;
    assert_int_equal(mc_plan_placement_new(&loc, ms.n, L, E, err), MC_OK);
    memset(loc.held, 1, (size_t)L * E); // machine 0's rows
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &loc, &sp, &r, err), MC_OK);
    assert_true(fabs(r.moe_ms - L * 2.0) < 1e-9);
    mc_plan_sim_free(&r);
    // A node on the coordinator's host of 2 cores: the coordinator's 2
    // threads keep them while it computes its experts, so the node computes
    // after it, never beside it (fair sharing would overlap the two).
    mc_plan_machines_free(&ms);
    s_parse_ok(s_machines_yaml(1, 1000, 1000, "    host: coord\n    cores: 2\n"), &ms);
    mc_plan_placement_t half;
    assert_int_equal(mc_plan_placement_new(&half, ms.n, L, E, err), MC_OK);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t e = 0; e < E; e++) half.held[((e < 4 ? 0 : 1) * L + l) * E + e] = 1;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &half, &sp, &r, err), MC_OK);
    assert_true(r.busy_ms[0] > 0 && r.busy_ms[1] > 0);
    assert_true(r.moe_ms >= r.busy_ms[0] + r.busy_ms[1] - 1e-9);
    mc_plan_sim_free(&r);
    {
        // By hand: every token chooses experts 0 (the coordinator's) and 4
        // (the node's), batch 1. The coordinator computes 1 ms; the node's
        // request, sent at once, is only received after that burst: half the
        // round trip (0.25 ms) from 1 ms, its 1 ms of compute, the other half
        // and the result's 320 bytes at 1000 Mbit/s.
        mc_routing_stats_t two = {.n_layer = L, .n_expert = E, .k = K, .tokens = 8, .n_trace = 8};
        two.trace = calloc((size_t)8 * L * K, 1);
        for (size_t i = 0; i < (size_t)8 * L; i++) two.trace[i * K] = 0, two.trace[i * K + 1] = 4;
        assert_int_equal(mc_plan_simulate(&s, &ms, &two, &half, &sp, &r, err), MC_OK);
        const double want = 1.0 + 0.25 + 1.0 + 0.25 + 320 * 8 / 1e6;
        if (fabs(r.moe_ms - L * want) > 1e-9) fail_msg("moe %.6f ms a step, want %.6f", r.moe_ms, L * want);
        mc_plan_sim_free(&r);
        // The node on a host of its own: received while the coordinator
        // computes, so it waits only for its own half of the round trip.
        mc_plan_machines_t apart;
        s_parse_ok(s_machines_yaml(1, 1000, 1000, "    host: elsewhere\n"), &apart);
        assert_int_equal(mc_plan_simulate(&s, &apart, &two, &half, &sp, &r, err), MC_OK);
        const double out = (64 * 4 + 24 + 64) * 8 / 1e6, apart_want = out + 0.25 + 1.0 + 0.25 + 320 * 8 / 1e6;
        if (fabs(r.moe_ms - L * apart_want) > 1e-9) fail_msg("moe %.6f ms a step, want %.6f", r.moe_ms, L * apart_want);
        mc_plan_sim_free(&r);
        mc_plan_machines_free(&apart);
        free(two.trace);
    }
    // Errors: a pair held by nobody, a trace shorter than a batch, another shape.
    half.held[0] = 0;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &half, &sp, &r, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "layer 0 expert 0 is held by no machine"));
    sp.batch = 65;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_ERR_ARG);
    sp.batch = 1;
    st.k = 3;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_ERR_ARG);
    st.k = K;
    s.types[0] = MC_DTYPE_Q8_0; // no machine profiled Q8_0
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "no profile of experts of types [Q8_0, Q4_0, Q4_0]"));
    // Far links and tiny steps: the event clock is large next to the work,
    // and rounding must not keep a job alive (it once looped forever).
    mc_plan_machines_free(&ms);
    for (int v = 0; v < 3; v++) {
        static const char *const far[] = {"    latency_ms: 300\n", "    latency_ms: 10000\n", "    latency_ms: 100000\n"};
        char *yaml = s_machines_yaml(1, 1000, 1000, far[v]);
        char *m = strstr(yaml, "  - name: n1");
        char *c = strstr(m, "ms: [[1, 1], [32, 32]]");
        memcpy(c, "ms: [[1, 0.003]]      ", 22); // same length: the rest of the text stays put
        s_parse_ok(yaml, &ms);
        s.types[0] = MC_DTYPE_Q4_0;
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
        assert_true(r.tok_s > 0);
        mc_plan_sim_free(&r);
        mc_plan_machines_free(&ms);
    }
    s_parse_ok(s_machines_yaml(1, 1000, 1000, NULL), &ms);
    mc_plan_placement_free(&half);
    mc_plan_placement_free(&loc);
    mc_plan_placement_free(&p);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
    mc_plan_machines_free(&ms);
}

// Every pair held, nothing over budget, the flags obeyed, not slower than naive.
static void s_check_plan(const mc_plan_machines_t *ms, const mc_plan_shape_t *s, const mc_routing_stats_t *st,
                         const mc_plan_params_t *pp, const mc_plan_placement_t *p) {
    char err[MC_ERR_LEN];
    assert_int_equal(mc_plan_check_memory(p, ms, s, err), MC_OK);
    mc_cluster_config_t *c = NULL;
    if (mc_plan_placement_to_config(p, ms, "m.gguf", MC_WIRE_AUTO, &c, err)) fail_msg("%s", err);
    assert_int_equal(mc_cluster_config_check(c, L, E, err), MC_OK);
    // Through the file and back: the same placement.
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_t *back = mc_cluster_config_parse(buf, len, "plan.yaml", err);
    if (!back) fail_msg("%s\n%s", err, buf);
    mc_plan_placement_t q;
    assert_int_equal(mc_plan_placement_from_config(back, ms, s, &q, err), MC_OK);
    assert_memory_equal(q.held, p->held, ms->n * L * E);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t e = 0; e < E; e++) {
            uint32_t holders = 0;
            for (size_t i = 0; i < ms->n; i++) holders += p->held[(i * L + l) * E + e];
            assert_true(holders >= 1);
            if (!pp->replicas) assert_int_equal(holders, 1);
            if (!pp->local) assert_int_equal(p->held[l * E + e], 0);
        }
    mc_plan_sim_t a, b;
    mc_plan_placement_t naive;
    assert_int_equal(mc_plan_simulate(s, ms, st, p, &pp->sim, &a, err), MC_OK);
    if (!mc_plan_naive(ms, s, &naive, err)) {
        if (!mc_plan_check_memory(&naive, ms, s, err)) {
            assert_int_equal(mc_plan_simulate(s, ms, st, &naive, &pp->sim, &b, err), MC_OK);
            assert_true(a.tok_s >= b.tok_s * 0.999);
            mc_plan_sim_free(&b);
        }
        mc_plan_placement_free(&naive);
    }
    mc_plan_sim_free(&a);
    mc_plan_placement_free(&q);
    mc_cluster_config_destroy(&back);
    mc_cluster_config_destroy(&c);
    free(buf);
}

static void test_planner(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats(&st, 256, true);
    // Budgets: memory less max(5%, 64 MiB); the coordinator also less 8 MiB of other weights.
    static const struct {
        int nodes;
        double coord_mb, node_mb;
        const char *extra;
        bool local, replicas;
        uint32_t batch;
    } cases[] = {
        {2, 80, 90, NULL, true, true, 1},       // 8 + 26 + 26 MiB of room for 32 experts
        {2, 80, 90, NULL, true, true, 8},
        {3, 72, 80, NULL, false, true, 4},      // nothing local: 3 x 16 MiB
        {3, 100, 100, NULL, true, false, 8},
        {4, 1000, 1000, "    latency_ms: 20\n", true, true, 8}, // slow links: the coordinator does it all
        {1, 64, 1000, NULL, true, true, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mc_plan_machines_t ms;
        s_parse_ok(s_machines_yaml(cases[i].nodes, cases[i].coord_mb, cases[i].node_mb, cases[i].extra), &ms);
        mc_plan_params_t pp = mc_plan_params_default();
        pp.local = cases[i].local, pp.replicas = cases[i].replicas, pp.sim.batch = cases[i].batch;
        pp.min_gain = 0; // the search itself, every gain kept (test_min_gain has the floor)
        mc_plan_placement_t p;
        if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("case %zu: %s", i, err);
        s_check_plan(&ms, &s, &st, &pp, &p);
        if (i == 4) // 20 ms links: every expert stays on the coordinator
            for (size_t j = 0; j < (size_t)L * E; j++) assert_int_equal(p.held[j], 1);
        // Everything fits: the disk tier on every machine changes nothing.
        char extra[256];
        snprintf(extra, sizeof extra, "%s    disk_read_mb_s: 50\n    disk_latency_ms: 4\n",
                 cases[i].extra ? cases[i].extra : "");
        mc_plan_machines_t tier;
        s_parse_ok(s_machines_yaml(cases[i].nodes, cases[i].coord_mb, cases[i].node_mb, extra), &tier);
        tier.m[0].disk_tier = true, tier.m[0].disk_mb_s = 50, tier.m[0].disk_latency_ms = 4;
        mc_plan_placement_t q;
        if (mc_plan_make(&s, &tier, &st, &pp, &q, err)) fail_msg("case %zu with the tier: %s", i, err);
        assert_memory_equal(q.held, p.held, tier.n * L * E);
        mc_plan_sim_t r1, r2;
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &pp.sim, &r1, err), MC_OK);
        assert_int_equal(mc_plan_simulate(&s, &tier, &st, &q, &pp.sim, &r2, err), MC_OK);
        assert_true(r1.tok_s == r2.tok_s); // no reads: the same arithmetic
        for (size_t j = 0; j < tier.n; j++) assert_true(r2.misses[j] == 0 && r2.resident_mb[j] == r2.mem_mb[j]);
        mc_plan_sim_free(&r1), mc_plan_sim_free(&r2);
        mc_plan_placement_free(&q);
        mc_plan_machines_free(&tier);
        mc_plan_placement_free(&p);
        mc_plan_machines_free(&ms);
    }
    // Unequal sizes, memory exactly the equal split's: experts 0-3 of 3 MiB
    // on n1 (48 MiB of room), 4-7 of 1 MiB on n2 (16). Whatever the greedy
    // start does, the naive one fits, so a plan exists.
    {
        mc_plan_machines_t tight;
        s_parse_ok(s_machines_yaml(2, 10, 112, NULL), &tight);
        tight.m[2].memory_mb = 80;
        for (uint32_t l = 0; l < L; l++)
            for (uint32_t e = 0; e < E; e++) s.bytes[l * E + e] = (e < 4 ? 3u : 1u) << 20;
        mc_plan_params_t tp = mc_plan_params_default();
        tp.local = false;
        tp.sim.batch = 4;
        mc_plan_placement_t q;
        if (mc_plan_make(&s, &tight, &st, &tp, &q, err)) fail_msg("%s", err);
        assert_int_equal(mc_plan_check_memory(&q, &tight, &s, err), MC_OK);
        mc_plan_placement_free(&q);
        mc_plan_machines_free(&tight);
        for (size_t i = 0; i < (size_t)L * E; i++) s.bytes[i] = 1u << 20;
    }
    // Does not fit: 32 MiB of experts, room for 2 x (70 - 64).
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(2, 10, 70, NULL), &ms);
    mc_plan_params_t pp = mc_plan_params_default();
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_make(&s, &ms, &st, &pp, &p, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "do not fit"));
    mc_plan_machines_free(&ms);
    // A cluster file naming a node the machines file lacks.
    s_parse_ok(s_machines_yaml(1, 1000, 1000, NULL), &ms);
    const char *yaml = "nodes:\n  - {name: stranger, endpoint: tcp://x:1}\n";
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), "c.yaml", err);
    assert_non_null(c);
    assert_int_equal(mc_plan_placement_from_config(c, &ms, &s, &p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "stranger is not in the machines file"));
    mc_cluster_config_destroy(&c);
    mc_plan_machines_free(&ms);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
}


// min_gain: the plan only where it is predicted at least that much faster
// than the naive split; below, the naive split itself.
static void test_min_gain(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats(&st, 256, true);
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(2, 80, 90, NULL), &ms);
    mc_plan_params_t pp = mc_plan_params_default();
    assert_true(pp.min_gain == MC_PLAN_MIN_GAIN);
    pp.sim.batch = 8, pp.min_gain = 0;
    mc_plan_placement_t p, naive, q;
    if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("%s", err);
    assert_int_equal(mc_plan_naive(&ms, &s, &naive, err), MC_OK);
    mc_plan_sim_t a, b;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &pp.sim, &a, err), MC_OK);
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &naive, &pp.sim, &b, err), MC_OK);
    const double gain = b.step_ms / a.step_ms - 1;
    assert_true(gain > 0.05); // a skewed trace: the plan is predicted faster
    mc_plan_sim_free(&a), mc_plan_sim_free(&b);
    // Just below its gain: the plan; just above: the naive split.
    pp.min_gain = gain - 0.01;
    if (mc_plan_make(&s, &ms, &st, &pp, &q, err)) fail_msg("%s", err);
    assert_memory_equal(q.held, p.held, ms.n * L * E);
    mc_plan_placement_free(&q);
    pp.min_gain = gain + 0.01;
    if (mc_plan_make(&s, &ms, &st, &pp, &q, err)) fail_msg("%s", err);
    assert_memory_equal(q.held, naive.held, ms.n * L * E);
    mc_plan_placement_free(&q);
    // Without a naive split that fits (no nodes' memory for it) a plan is
    // made whatever min_gain says.
    mc_plan_machines_t big;
    s_parse_ok(s_machines_yaml(2, 1000, 70, NULL), &big);
    pp.min_gain = 10;
    if (mc_plan_make(&s, &big, &st, &pp, &q, err)) fail_msg("%s", err);
    assert_int_equal(mc_plan_check_memory(&q, &big, &s, err), MC_OK);
    mc_plan_placement_free(&q);
    mc_plan_machines_free(&big);
    mc_plan_placement_free(&naive);
    mc_plan_placement_free(&p);
    mc_plan_machines_free(&ms);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
}

// A cluster file's machines as it runs them: limits from the file (nodes)
// and the command line (the coordinator); without one, no disk tier.
static void test_machines_as_run(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_machines_t ms, run;
    s_parse_ok(s_machines_yaml(2, 80, 90, "    disk_read_mb_s: 50\n    disk_latency_ms: 4\n"), &ms);
    ms.m[0].disk_tier = true, ms.m[0].disk_mb_s = 50, ms.m[0].disk_latency_ms = 4;
    for (size_t i = 0; i < ms.n; i++) assert_true(ms.m[i].disk_tier);
    const char *yaml = "nodes:\n  - {name: n1, endpoint: tcp://a:1, mem_limit_mb: 20}\n"
                       "  - {name: n2, endpoint: tcp://b:1}\n";
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), "c.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_int_equal(mc_plan_machines_as_run(&ms, c, 0, &run, err), MC_OK);
    assert_int_equal(run.n, 3);
    assert_false(run.m[0].disk_tier), assert_int_equal(run.m[0].mem_limit_mb, 0);
    assert_true(run.m[1].disk_tier), assert_int_equal(run.m[1].mem_limit_mb, 20);
    assert_false(run.m[2].disk_tier), assert_int_equal(run.m[2].mem_limit_mb, 0);
    mc_plan_machines_free(&run);
    assert_int_equal(mc_plan_machines_as_run(&ms, c, 50, &run, err), MC_OK);
    assert_true(run.m[0].disk_tier), assert_int_equal(run.m[0].mem_limit_mb, 50);
    mc_plan_machines_free(&run);
    for (size_t i = 0; i < ms.n; i++) assert_true(ms.m[i].disk_tier); // the input untouched
    // A node holding everything without a limit: all resident, no reads,
    // though its budget is smaller than what it holds.
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats(&st, 64, true);
    const char *all = "nodes:\n  - {name: n1, endpoint: tcp://a:1}\n  - {name: n2, endpoint: tcp://b:1, holds: [{layers: none, experts: none}]}\n";
    mc_cluster_config_t *c2 = mc_cluster_config_parse(all, strlen(all), "all.yaml", err);
    if (!c2) fail_msg("%s", err);
    ms.m[1].memory_mb = 70; // a budget of 6 MiB for 32 MiB of experts
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_machines_as_run(&ms, c2, 0, &run, err), MC_OK);
    assert_int_equal(mc_plan_placement_from_config(c2, &run, &s, &p, err), MC_OK);
    mc_plan_sim_t r, t;
    const mc_plan_sim_params_t sp = mc_plan_sim_params_default();
    assert_int_equal(mc_plan_simulate(&s, &run, &st, &p, &sp, &r, err), MC_OK);
    assert_true(r.misses[1] == 0 && r.read_ms[1] == 0);
    // The same machines with the entry's tier: reads (what --simulate used to predict).
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &t, err), MC_OK);
    assert_true(t.misses[1] > 0 && t.tok_s < r.tok_s);
    mc_plan_sim_free(&r), mc_plan_sim_free(&t);
    mc_plan_placement_free(&p);
    mc_plan_machines_free(&run);
    mc_cluster_config_destroy(&c2);
    mc_cluster_config_destroy(&c);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
    mc_plan_machines_free(&ms);
}

// A hand-built trace of n tokens: in every layer token t chooses expert 0
// and expert 1 + t % 7. Counts per layer: expert 0 n, the others ~n / 7.
static void s_stats_hand(mc_routing_stats_t *st, uint32_t n) {
    memset(st, 0, sizeof *st);
    st->n_layer = L, st->n_expert = E, st->k = K, st->tokens = n, st->n_trace = n;
    st->rows = calloc(L * E, sizeof(uint64_t));
    st->pairs = calloc(L * E * E, sizeof(uint64_t));
    st->kept = calloc(L * E, sizeof(uint64_t));
    st->follow = calloc(L * E, sizeof(uint64_t));
    st->trace = calloc((size_t)n * L * K, 1);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t l = 0; l < L; l++) {
            uint8_t *sel = st->trace + ((size_t)t * L + l) * K;
            sel[0] = 0, sel[1] = (uint8_t)(1 + t % 7);
            st->rows[l * E + sel[0]]++, st->rows[l * E + sel[1]]++;
        }
}

// The simulator's hits and reads, by hand. One node holds all 32 experts of
// 1 MiB with a budget of 6 MiB (70 MiB less the 64 MiB reserve); a read is
// 0.5 ms + 1 MiB at 1048.576 MB/s = 1.5 ms. The hand trace of 14 tokens uses
// (l, 0) 14 times and (l, 1..7) twice each, so the resident six are
// (0..3, 0), then among the equals the lower index: (0, 1) and (0, 2).
// Batch 1: every token misses in layers 1-3 (3 reads) and in layer 0 when
// its second expert is 3..7 (10 of 14 tokens): 52 reads. Batch 14: one
// step; each layer's distinct experts read once: 5 + 3 x 7 = 26.
static void test_simulator_tier(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(1, 1000, 70, "    disk_read_mb_s: 1048.576\n    disk_latency_ms: 0.5\n"), &ms);
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats_hand(&st, 14);
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_naive(&ms, &s, &p, err), MC_OK); // everything on n1
    assert_int_equal(mc_plan_check_memory(&p, &ms, &s, err), MC_OK); // the tier may hold more than memory
    uint8_t res[2 * L * E];
    assert_int_equal(mc_plan_resident(&s, &ms, &st, &p, res, err), MC_OK);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t e = 0; e < E; e++)
            assert_int_equal(res[(1 * L + l) * E + e], e == 0 || (l == 0 && e <= 2));
    mc_plan_sim_params_t sp = mc_plan_sim_params_default();
    sp.wire = MC_WIRE_F32;
    mc_plan_sim_t r;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    assert_int_equal(r.steps, 14);
    assert_true(fabs(r.misses[1] * 14 - 52) < 1e-9);
    assert_true(fabs(r.uses[1] - L * K) < 1e-12);
    assert_true(fabs(r.read_ms[1] - 52 * 1.5 / 14) < 1e-9);
    assert_true(fabs(r.resident_mb[1] - 6) < 1e-12 && fabs(r.mem_mb[1] - 32) < 1e-12);
    assert_true(r.misses[0] == 0 && r.read_ms[0] == 0);
    // The reads come before the node computes: on its timeline, whole.
    const double bytes = (64 * 4 + 24 + 64) + (64 * 4 + 64);
    const double layer = 2.0 + 0.5 + bytes * 8 / 1e6;
    assert_true(fabs(r.moe_ms - (L * layer + 52 * 1.5 / 14)) < 1e-9);
    mc_plan_sim_free(&r);
    sp.batch = 14;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    assert_int_equal(r.steps, 1);
    assert_true(fabs(r.misses[1] - 26) < 1e-9 && fabs(r.uses[1] - 32) < 1e-9);
    assert_true(fabs(r.read_ms[1] - 26 * 1.5) < 1e-9);
    mc_plan_sim_free(&r);
    // Under a --mem-limit of 4 MiB (a cluster file's mem_limit_mb): (0..3, 0)
    // resident; every token reads its second expert in every layer: 56.
    ms.m[1].mem_limit_mb = 4;
    sp.batch = 1;
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    assert_true(fabs(r.misses[1] * 14 - 56) < 1e-9 && fabs(r.resident_mb[1] - 4) < 1e-12);
    mc_plan_sim_free(&r);
    ms.m[1].mem_limit_mb = 0;
    // Without the tier the same placement is over memory, simulated resident.
    ms.m[1].disk_tier = false;
    assert_int_equal(mc_plan_check_memory(&p, &ms, &s, err), MC_ERR_RANGE);
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    assert_true(r.misses[1] == 0 && r.read_ms[1] == 0 && fabs(r.moe_ms - L * layer) < 1e-9);
    mc_plan_sim_free(&r);
    // A budget below one expert: no --mem-limit could run it.
    ms.m[1].disk_tier = true;
    ms.m[1].memory_mb = 64.5;
    assert_int_equal(mc_plan_check_memory(&p, &ms, &s, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "would read experts of 1.0 MiB from its disk but its memory budget is 0 MiB"));
    mc_plan_placement_free(&p);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
    mc_plan_machines_free(&ms);
}

// The uses in st's trace of each (layer, expert).
static void s_trace_counts(const mc_routing_stats_t *st, uint64_t *count) {
    memset(count, 0, (size_t)st->n_layer * st->n_expert * sizeof *count);
    for (size_t t = 0; t < st->n_trace; t++)
        for (uint32_t l = 0; l < st->n_layer; l++)
            for (uint32_t j = 0; j < st->k; j++) count[l * st->n_expert + st->trace[(t * st->n_layer + l) * st->k + j]]++;
}

// More model than memory: 32 MiB of experts, n1 with room for 8 and no
// disk tier, n2 with room for 8 and the tier, nothing on the coordinator.
// The plan holds everything, n1 within its memory, and the hottest experts
// (the 12 the trace uses most: less than the 16 resident places) are
// resident wherever they are held; not slower than the equal split with
// the tier; n2's mem_limit_mb in the cluster file.
static void test_planner_tier(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_plan_shape_t s;
    s_shape(&s);
    mc_routing_stats_t st;
    s_stats(&st, 256, true);
    uint64_t count[L * E];
    s_trace_counts(&st, count);
    size_t hot[L * E];
    for (size_t i = 0; i < L * E; i++) hot[i] = i;
    for (size_t i = 0; i < L * E; i++) // by count, most first, then by index
        for (size_t j = i + 1; j < L * E; j++)
            if (count[hot[j]] > count[hot[i]] || (count[hot[j]] == count[hot[i]] && hot[j] < hot[i])) {
                const size_t t = hot[i];
                hot[i] = hot[j], hot[j] = t;
            }
    for (uint32_t batch = 1; batch <= 4; batch *= 4) {
        mc_plan_machines_t ms;
        s_parse_ok(s_machines_yaml(2, 10, 72, NULL), &ms);
        ms.m[2].disk_tier = true, ms.m[2].disk_mb_s = 1000, ms.m[2].disk_latency_ms = 0.2;
        mc_plan_params_t pp = mc_plan_params_default();
        pp.sim.batch = batch;
        pp.min_gain = 0; // the search itself, every gain kept (test_min_gain has the floor)
        mc_plan_placement_t p;
        if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("batch %u: %s", batch, err);
        assert_int_equal(mc_plan_check_memory(&p, &ms, &s, err), MC_OK);
        uint64_t used1 = 0;
        for (size_t c = 0; c < L * E; c++) {
            assert_true(p.held[c] + p.held[L * E + c] + p.held[2 * L * E + c] >= 1);
            used1 += p.held[L * E + c] ? s.bytes[c] : 0;
        }
        assert_true(used1 <= 8u << 20);
        uint8_t res[3 * L * E];
        assert_int_equal(mc_plan_resident(&s, &ms, &st, &p, res, err), MC_OK);
        for (size_t h = 0; h < 12; h++)
            for (size_t i = 0; i < 3; i++)
                if (p.held[i * L * E + hot[h]] && !res[i * L * E + hot[h]])
                    fail_msg("batch %u: layer %zu expert %zu (the %zuth hottest) is held by %s but not resident", batch,
                             hot[h] / E, hot[h] % E, h + 1, ms.m[i].name);
        // Against a split of the same memory blind to use: n1 the first 8
        // by index (layer 0), n2 the rest.
        mc_plan_placement_t naive;
        mc_plan_sim_t a, b;
        assert_int_equal(mc_plan_placement_new(&naive, ms.n, L, E, err), MC_OK);
        for (size_t c = 0; c < L * E; c++) naive.held[(c < 8 ? 1 : 2) * L * E + c] = 1;
        assert_int_equal(mc_plan_check_memory(&naive, &ms, &s, err), MC_OK);
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &pp.sim, &a, err), MC_OK);
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &naive, &pp.sim, &b, err), MC_OK);
        assert_true(a.tok_s >= b.tok_s * 0.999);
        double ua = 0, ma = 0, ub = 0, mb = 0; // the cluster's uses and reads per step
        for (size_t i = 0; i < ms.n; i++) ua += a.uses[i], ma += a.misses[i], ub += b.uses[i], mb += b.misses[i];
        assert_true(ma < mb);
        print_message("# batch %u: plan %.1f tok/s, %.1f%% hits (%.2f reads, %.2f ms on n2 a step); a split of the "
                      "same memory blind to use %.1f tok/s, %.1f%% hits\n",
                      batch, a.tok_s, 100 * (1 - ma / ua), a.misses[2], a.read_ms[2], b.tok_s, 100 * (1 - mb / ub));
        // The cluster file: n2 runs under its budget's whole MiB.
        mc_cluster_config_t *c = NULL;
        assert_int_equal(mc_plan_placement_to_config(&p, &ms, "m.gguf", MC_WIRE_AUTO, &c, err), MC_OK);
        assert_int_equal(mc_plan_mem_limits(&p, &ms, &s, c), 0);
        assert_int_equal(c->nodes[0].mem_limit_mb, 0);
        assert_int_equal(c->nodes[1].mem_limit_mb, 8);
        mc_cluster_config_destroy(&c);
        mc_plan_sim_free(&a), mc_plan_sim_free(&b);
        mc_plan_placement_free(&naive);
        mc_plan_placement_free(&p);
        // Both nodes with the tier: the equal split fits with it, and the
        // plan is not slower (the planner's floor).
        ms.m[1].disk_tier = true, ms.m[1].disk_mb_s = 1000, ms.m[1].disk_latency_ms = 0.2;
        if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("batch %u: %s", batch, err);
        assert_int_equal(mc_plan_naive(&ms, &s, &naive, err), MC_OK);
        assert_int_equal(mc_plan_check_memory(&naive, &ms, &s, err), MC_OK);
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &pp.sim, &a, err), MC_OK);
        assert_int_equal(mc_plan_simulate(&s, &ms, &st, &naive, &pp.sim, &b, err), MC_OK);
        assert_true(a.tok_s >= b.tok_s * 0.999);
        print_message("# batch %u, both with the tier: plan %.1f tok/s, the equal split %.1f\n", batch, a.tok_s, b.tok_s);
        mc_plan_sim_free(&a), mc_plan_sim_free(&b);
        mc_plan_placement_free(&naive);
        mc_plan_placement_free(&p);
        mc_plan_machines_free(&ms);
    }
    // The tier on the coordinator only, and it may not hold experts: refused.
    mc_plan_machines_t ms;
    s_parse_ok(s_machines_yaml(2, 10, 70, NULL), &ms);
    ms.m[0].disk_tier = true, ms.m[0].disk_mb_s = 1000;
    mc_plan_params_t pp = mc_plan_params_default();
    pp.local = false;
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_make(&s, &ms, &st, &pp, &p, err), MC_ERR_RANGE);
    // ... and when it may: planned, with its --mem-limit.
    pp.local = true;
    ms.m[0].memory_mb = 80; // 80 - 64 - 8 MiB of other weights: 8 MiB
    if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("%s", err);
    assert_int_equal(mc_plan_check_memory(&p, &ms, &s, err), MC_OK);
    assert_int_equal(mc_plan_mem_limits(&p, &ms, &s, NULL), 8);
    mc_plan_placement_free(&p);
    mc_plan_machines_free(&ms);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
}

static char s_dir[256];

// The simulator's misses against the real store: a generated model of 8
// layers x 32 experts of 108 KiB (27 MiB), a skewed trace, one node holding
// everything with 8 MiB for experts (72 MiB less the reserve: 75 resident).
// The same trace replayed through mc_expert_store with the same budget,
// each step's experts acquired and released (no read-ahead: the counts do
// not depend on timing), under the pinned hot set (hot_percent 90 of the
// budget, the most the store takes: the rest LRU), LRU and LFU.
static void test_tier_against_store(void **state) {
    (void)state;
    char err[MC_ERR_LEN], path[512];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.type = MC_DTYPE_Q4_0, mp.dim = 256, mp.ffn = 256, mp.n_layer = 8, mp.n_expert = 32, mp.n_expert_used = 2;
    snprintf(path, sizeof path, "%s/tier.gguf", s_dir);
    if (mc_mkmodel_write(&mp, path, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    mc_plan_shape_t s;
    assert_int_equal(mc_plan_shape_from_model(m, &s, err), MC_OK);
    const uint32_t nl = 8, ne = 32, n = 400;
    // Skewed, a different order of favourites in each layer.
    mc_routing_stats_t st;
    memset(&st, 0, sizeof st);
    st.n_layer = nl, st.n_expert = ne, st.k = 2, st.tokens = n, st.n_trace = n;
    st.rows = calloc(nl * ne, sizeof(uint64_t)), st.pairs = calloc(nl * ne * ne, sizeof(uint64_t));
    st.kept = calloc(nl * ne, sizeof(uint64_t)), st.follow = calloc(nl * ne, sizeof(uint64_t));
    st.trace = calloc((size_t)n * nl * 2, 1);
    mc_rng_t g;
    mc_rng_seed(&g, 11);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t l = 0; l < nl; l++) {
            uint8_t *sel = st.trace + ((size_t)t * nl + l) * 2;
            for (int j = 0; j < 2; j++) {
                uint32_t e;
                do e = ((uint32_t)(ne * pow(mc_rng_uniform(&g), 2.5)) + 5 * l) % ne;
                while (j == 1 && e == sel[0]);
                sel[j] = (uint8_t)e;
                st.rows[l * ne + e]++;
            }
        }
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "coordinator: {name: c, memory_mb: 1000, threads: 1, layer_ms_1: 0.1, head_ms_1: 1,"
             " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.1]]}]}\n"
             "nodes:\n  - {name: n, endpoint: 'tcp://n:1', memory_mb: 72, threads: 1, disk_read_mb_s: 500,"
             " disk_latency_ms: 0.1, experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.1]]}]}\n");
    mc_plan_machines_t ms;
    s_parse_ok(yaml, &ms);
    mc_plan_placement_t p;
    assert_int_equal(mc_plan_naive(&ms, &s, &p, err), MC_OK);
    mc_plan_sim_t r;
    mc_plan_sim_params_t sp = mc_plan_sim_params_default();
    assert_int_equal(mc_plan_simulate(&s, &ms, &st, &p, &sp, &r, err), MC_OK);
    const double model = r.misses[1] * r.steps, uses = r.uses[1] * r.steps;
    assert_true(fabs(r.resident_mb[1] - 75 * 110592 / 1048576.0) < 1e-9);
    mc_plan_sim_free(&r);
    // The store, under each policy.
    uint64_t count[8 * 32];
    s_trace_counts(&st, count);
    mc_pool_t *pool = mc_pool_new(1);
    mc_matmul_t *mm = mc_matmul_new(pool, mc_kernel_best_isa());
    assert_non_null(mm);
    static const mc_store_policy_t pol[] = {MC_STORE_HOT, MC_STORE_LFU, MC_STORE_LRU};
    double store[3];
    for (int k = 0; k < 3; k++) {
        mc_expert_store_params_t ep = mc_expert_store_params_default();
        ep.budget_bytes = 8u << 20, ep.policy = pol[k], ep.hot_percent = 90, ep.hot_counts = count;
        mc_expert_store_t *es = mc_expert_store_new(m, mm, &ep, err);
        if (!es) fail_msg("%s", err);
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t l = 0; l < nl; l++) {
                const uint8_t *sel = st.trace + ((size_t)t * nl + l) * 2;
                mc_expert_t x;
                for (int j = 0; j < 2; j++) assert_int_equal(mc_expert_store_acquire(es, l, sel[j], &x, err), MC_OK);
                for (int j = 0; j < 2; j++) mc_expert_store_release(es, l, sel[j]);
            }
        mc_expert_store_stats_t ss;
        mc_expert_store_stats(es, &ss);
        assert_int_equal(ss.hits + ss.misses, (uint64_t)uses);
        store[k] = (double)ss.misses;
        mc_expert_store_destroy(&es);
    }
    print_message("# %u steps, %.0f uses: misses predicted %.0f (%.1f%%); the store: hot %.0f (%+.1f%%), lfu %.0f "
                  "(%+.1f%%), lru %.0f (%+.1f%%)\n",
                  n, uses, model, 100 * model / uses, store[0], 100 * (store[0] - model) / model, store[1],
                  100 * (store[1] - model) / model, store[2], 100 * (store[2] - model) / model);
    // The pinned hot set the store keeps is 90% of the model's (the rest
    // LRU), so it misses a little more or less, never far off.
    assert_true(fabs(store[0] - model) <= 0.15 * model);
    mc_matmul_destroy(&mm);
    mc_pool_destroy(&pool);
    mc_plan_placement_free(&p);
    mc_plan_machines_free(&ms);
    mc_routing_stats_free(&st);
    mc_plan_shape_free(&s);
    mc_model_destroy(&m);
}

static int s_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_machines_file),
        cmocka_unit_test(test_machines_errors),
        cmocka_unit_test(test_simulator_times),
        cmocka_unit_test(test_planner),
        cmocka_unit_test(test_min_gain),
        cmocka_unit_test(test_machines_as_run),
        cmocka_unit_test(test_simulator_tier),
        cmocka_unit_test(test_planner_tier),
        cmocka_unit_test(test_tier_against_store),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
