/*
 * test_plan: the machines file (good and hostile), the simulator against
 * hand-computed times, and the planner's promises: every pair held, no
 * machine over its memory, no local experts or replicas when told so, never
 * predicted slower than the naive split, and a refusal when nothing fits.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "rng.h"

#define L 4
#define E 8
#define K 2

// A machine entry: curve of 1 ms per row (rows 1 and 32), Q4_0 experts.
static const char *s_curve = "    experts:\n      - types: [Q4_0, Q4_0, Q4_0]\n        bytes: 1048576\n"
                             "        ms: [[1, 1.0], [32, 32.0]]\n";

// Machines: a coordinator and n nodes, every one with mem MiB.
static char *s_machines_yaml(int n, double coord_mb, double node_mb, const char *node_extra) {
    static char buf[16384];
    int o;
    // s_curve is indented for a node; the coordinator's keys sit 2 less deep.
    o = snprintf(buf, sizeof buf,
                 "network: {latency_ms: 0.5, bandwidth_mbps: 1000, request_ms: 0}\n"
                 "coordinator:\n  name: coord\n  memory_mb: %g\n  threads: 2\n  layer_ms_1: 0.25\n"
                 "  layer_ms_8: 1.0\n  head_ms_1: 2\n  head_ms_8: 4\n"
                 "  experts:\n    - types: [Q4_0, Q4_0, Q4_0]\n      ms: [[1, 1.0], [32, 32.0]]\nnodes:\n",
                 coord_mb);
    for (int i = 0; i < n; i++)
        o += snprintf(buf + o, sizeof buf - (size_t)o,
                      "  - name: n%d\n    endpoint: tcp://10.0.0.%d:5555\n    memory_mb: %g\n    threads: 1\n%s%s", i + 1,
                      i + 1, node_mb, s_curve, node_extra ? node_extra : "");
    return buf;
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
                           calloc(L * E, sizeof(mc_wire_enc_t)), 8u << 20};
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

    // `moe-expert --profile` output pasted as is under coordinator: a one-item sequence.
    const char *pasted = "coordinator:\n  # moe-expert --profile of m.gguf\n  - name: desk\n    memory_mb: 900\n"
                         "    total_mb: 1000\n    threads: 4\n    experts:\n      - types: [Q4_0, Q4_0, Q4_0]\n"
                         "        bytes: 6193152\n        ms: [[1, 0.5], [2, 0.9]]\n    layer_ms_1: 0.1\n"
                         "    head_ms_1: 1.2\n    layer_ms_8: 0.7\n    head_ms_8: 7\n    local_scale: 1.1\n"
                         "nodes:\n  - name: pi\n    endpoint: tcp://pi:5555\n    memory_mb: 100\n    threads: 4\n"
                         "    experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 2]]}]\n";
    s_parse_ok(pasted, &ms);
    assert_string_equal(ms.m[0].name, "desk");
    assert_true(ms.m[0].local_scale == 1.1 && ms.m[1].local_scale == 1.0);
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
        char *c = strstr(m, "ms: [[1, 1.0], [32, 32.0]]");
        memcpy(c, "ms: [[1, 0.003]]          ", 26); // same length: the rest of the text stays put
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
        mc_plan_placement_t p;
        if (mc_plan_make(&s, &ms, &st, &pp, &p, err)) fail_msg("case %zu: %s", i, err);
        s_check_plan(&ms, &s, &st, &pp, &p);
        if (i == 4) // 20 ms links: every expert stays on the coordinator
            for (size_t j = 0; j < (size_t)L * E; j++) assert_int_equal(p.held[j], 1);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_machines_file),
        cmocka_unit_test(test_machines_errors),
        cmocka_unit_test(test_simulator_times),
        cmocka_unit_test(test_planner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
