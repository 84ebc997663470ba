/*
 * test_cluster: real moe-expert processes on 127.0.0.1 against the
 * single-machine engine.
 *
 * With the f32 wire, fixture logits from 2- and 3-node clusters (with
 * replicas, layer ranges and local experts) must equal one machine's to the
 * bit; with q8_0 on Q8_0/Q4_0 experts too (their kernels quantize the input
 * to Q8_0 anyway); f16 and bf16 must stay within the quantized-model bounds
 * of the fixture README. A node with another model, or with a copy of ours
 * whose weights differ in one expert it is given, is refused by name, a
 * missing node fails within the timeout, a node killed mid-run is
 * replaced by local computation with unchanged logits, and one started
 * again on its endpoint rejoins.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "keys.h"
#include "mkmodel.h"
#include "nodeproc.h"
#include "plan.h"
#include "rng.h"
#include "testutil.h"

#define MAX_NODES 3

static char s_dir[256];
static char s_exe[1024];
static unsigned s_lease_ms; // --lease-ms of the nodes s_start starts (0: their default)

static int s_setup(void **state) {
    (void)state;
    const char *bin = getenv("MC_BIN_DIR");
    snprintf(s_exe, sizeof s_exe, "%s/moe-expert", bin ? bin : ".");
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

typedef struct {
    const char *experts; // id set of each node
    const char *layers;  // NULL: all
} s_place_t;

typedef struct {
    mc_nodeproc_t procs[MAX_NODES];
    size_t n;
    mc_cluster_config_t *cfg;
} s_nodes_t;

// The nodes of the running test: a failing assertion jumps out of the test,
// so the per-test teardown stops them, not the test body.
static s_nodes_t *s_live;

static int s_stop_live(void **state) {
    (void)state;
    if (s_live) {
        mc_nodeproc_stop(s_live->procs, s_live->n);
        mc_cluster_config_destroy(&s_live->cfg);
        s_live = NULL;
    }
    return 0;
}

static void s_start(s_nodes_t *ns, const char *model, const s_place_t *place, size_t n, mc_wire_enc_t wire,
                    const char *local_experts) {
    char err[MC_ERR_LEN], name[32];
    memset(ns, 0, sizeof *ns);
    for (size_t i = 0; i < MAX_NODES; i++) ns->procs[i].out = -1;
    s_live = ns;
    ns->cfg = mc_cluster_config_new();
    ns->cfg->wire = wire;
    ns->cfg->timeout_ms = 10000;
    if (local_experts) assert_int_equal(mc_expert_set_parse(local_experts, &ns->cfg->local_experts, err), MC_OK);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "node-%zu", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.exe = s_exe, np.model = model, np.name = name, np.lease_ms = s_lease_ms;
        if (mc_nodeproc_start(&np, &ns->procs[i], err)) fail_msg("%s", err);
        ns->n = i + 1;
        mc_expert_set_t ex;
        mc_layer_set_t ly, *lp = NULL;
        assert_int_equal(mc_expert_set_parse(place[i].experts, &ex, err), MC_OK);
        if (place[i].layers) {
            assert_int_equal(mc_layer_set_parse(place[i].layers, &ly, err), MC_OK);
            lp = &ly;
        }
        assert_int_equal(mc_cluster_config_add_node(ns->cfg, name, ns->procs[i].endpoint, &ex, lp, err), MC_OK);
    }
}

static void s_stop(s_nodes_t *ns) {
    mc_nodeproc_stop(ns->procs, ns->n);
    mc_cluster_config_destroy(&ns->cfg);
    s_live = NULL;
}

// The fixture prompts (golden/<model>/P.ids.txt: one id per line, BOS first).
static const char *const s_prompts[] = {"p0_fox", "p1_fr", "p2_code", "p3_inst"};
#define N_PROMPTS (sizeof s_prompts / sizeof s_prompts[0])

static int32_t s_ids[256];
static size_t s_n_ids;

// Ids of a prompt from dir/P.ids.txt.
static void s_load_ids_from(const char *dir, const char *prompt) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.ids.txt", dir, prompt);
    char *txt = (char *)mc_test_read_file(path, NULL);
    assert_non_null(txt);
    s_n_ids = 0;
    for (char *q = txt, *end; s_n_ids < 256; q = end) {
        long v = strtol(q, &end, 10);
        if (end == q) break;
        s_ids[s_n_ids++] = (int32_t)v;
    }
    free(txt);
}

static void s_load_ids(const char *prompt) {
    char dir[512];
    s_load_ids_from(mc_test_fixture("golden/tiny-f32", dir, sizeof dir), prompt);
}

// All logits of s_ids, locally (cfg NULL) or through the cluster.
static float *s_logits(const mc_model_t *m, const mc_cluster_config_t *cfg, int32_t *greedy, size_t n_greedy) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 300; // the longest fixture prompt plus the greedy steps
    ep.n_threads = 1;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = NULL;
    if (cfg) {
        c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
        if (!c) fail_msg("cluster: %s", err);
        mc_engine_set_moe(e, mc_cluster_moe, c);
    }
    const uint32_t nv = m->hp.n_vocab;
    float *out = malloc(s_n_ids * nv * sizeof(float)), *row = malloc(nv * sizeof(float));
    if (mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, out, err)) fail_msg("eval: %s", err);
    memcpy(row, out + (s_n_ids - 1) * nv, nv * sizeof(float));
    for (size_t i = 0; i < n_greedy; i++) {
        int32_t best = 0;
        for (uint32_t v = 1; v < nv; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        greedy[i] = best;
        if (mc_engine_eval(e, &best, 1, (uint32_t)(s_n_ids + i), MC_LOGITS_LAST, row, err)) fail_msg("eval: %s", err);
    }
    free(row);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    return out;
}

static mc_model_t *s_fixture(const char *name, char *path, size_t cap) {
    if (!mc_test_fixture(name, path, cap)) return NULL;
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    return m;
}

// Cluster logits of every fixture prompt against local ones: bit-identical
// (and the same 8 greedy ids), or mean |d| within the quantized bound.
static void s_compare_at(const char *label, const char *path, const char *ids_dir, const char *const *prompts,
                         size_t n_prompts, const s_place_t *place, size_t n, mc_wire_enc_t wire, const char *local,
                         bool exact) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_start(&ns, path, place, n, wire, local);
    double sum = 0;
    size_t count = 0;
    for (size_t p = 0; p < n_prompts; p++) {
        s_load_ids_from(ids_dir, prompts[p]);
        int32_t g_local[8], g_remote[8];
        float *ref = s_logits(m, NULL, g_local, 8);
        float *got = s_logits(m, ns.cfg, g_remote, 8);
        size_t c = s_n_ids * m->hp.n_vocab;
        for (size_t i = 0; i < c; i++) sum += fabs((double)got[i] - ref[i]);
        count += c;
        if (exact) {
            assert_memory_equal(got, ref, c * sizeof(float));
            assert_memory_equal(g_local, g_remote, sizeof g_local);
        }
        free(ref), free(got);
    }
    s_stop(&ns);
    printf("[cluster] %-17s %zu nodes wire %-4s mean|d| %.3g over %zu prompts\n", label, n, mc_wire_enc_name(wire),
           sum / count, n_prompts);
    if (!exact) assert_true(sum / count <= 0.06);
    mc_model_destroy(&m);
}

// A shared fixture model with the Mixtral fixture prompts.
static void s_compare(const char *fixture, const s_place_t *place, size_t n, mc_wire_enc_t wire, const char *local,
                      bool exact) {
    char path[512], ids[512];
    if (!mc_test_fixture(fixture, path, sizeof path)) skip();
    mc_test_fixture("golden/tiny-f32", ids, sizeof ids);
    s_compare_at(fixture, path, ids, s_prompts, N_PROMPTS, place, n, wire, local, exact);
}

// One of the project's own fixtures (tests/fixtures/arch) with its prompts.
static void s_compare_arch(const char *model, const s_place_t *place, size_t n, mc_wire_enc_t wire,
                           const char *local) {
    static const char *const prompts[] = {"p0_fox", "p1_fr", "p2_code", "p3_chat"};
    char path[512], ids[512];
    snprintf(path, sizeof path, "%s/arch/%s.gguf", MC_REPO_FIXTURES, model);
    snprintf(ids, sizeof ids, "%s/arch/%s", MC_REPO_FIXTURES, model);
    s_compare_at(model, path, ids, prompts, sizeof prompts / sizeof prompts[0], place, n, wire, local, true);
}

// Fine-grained families through three nodes: a token's eight experts span
// every node and the coordinator, still one request per node per layer,
// and the result is bit-identical to one machine (f32 and auto wires).
static void test_qwen3moe_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-47", NULL}, {"40-87", NULL}, {"88-119", NULL}};
    s_compare_arch("qwen3moe-f32", p, 3, MC_WIRE_AUTO, "120-127");
    s_compare_arch("qwen3moe-f32", p, 3, MC_WIRE_F32, "120-127");
}

static void test_olmoe_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-20", "0"}, {"21-42", NULL}, {"43-63, 0-20", NULL}};
    s_compare_arch("olmoe-f32", p, 3, MC_WIRE_AUTO, NULL);
}

static void test_f32_two_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_compare("tiny-f32.gguf", p, 2, MC_WIRE_F32, NULL, true);
}

static void test_f32_replicas_layers_local(void **state) {
    (void)state;
    // Replicas: experts 2-3 on two nodes; layer ranges; 6-7 computed locally.
    s_place_t p[] = {{"0-3", "0"}, {"0-5", "1"}, {"2-5", NULL}};
    s_compare("tiny-f32.gguf", p, 3, MC_WIRE_F32, "6-7", true);
}

// What moe-plan writes, through the real cluster: per-layer blocks, replicas
// and local experts, bit-identical to one machine. Machines made up in code
// (node-1 slow), a skewed trace so that hot experts are worth replicating;
// then a hand-written placement of the same shape, so that every feature is
// covered whatever the planner chose.
static void test_planned_placement_exact(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("small-q4_k_m.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns;
    s_place_t all[] = {{"all", NULL}, {"all", NULL}, {"all", NULL}};
    s_lease_ms = 200; // a new placement is accepted soon after the last cluster went
    s_start(&ns, path, all, 3, MC_WIRE_AUTO, NULL);
    s_lease_ms = 0;
    mc_plan_shape_t shape;
    assert_int_equal(mc_plan_shape_from_model(m, &shape, err), MC_OK);
    const uint32_t L = shape.n_layer, E = shape.n_expert, k = shape.k;
    mc_plan_machines_t ms = {calloc(4, sizeof(mc_plan_machine_t)), 4, 0.1};
    for (size_t i = 0; i < 4; i++) {
        mc_plan_machine_t *mc = &ms.m[i];
        snprintf(mc->name, sizeof mc->name, i ? "node-%zu" : "coord", i);
        if (i) snprintf(mc->endpoint, sizeof mc->endpoint, "%s", ns.procs[i - 1].endpoint);
        snprintf(mc->host, sizeof mc->host, "%s", mc->name);
        mc->coordinator = i == 0, mc->threads = mc->cores = 1, mc->memory_mb = 1000, mc->local_scale = 1;
        mc->latency_ms = i ? 0.2 : 0, mc->bandwidth_mbps = 1000;
        mc->layer_ms_1 = 0.1, mc->layer_ms_8 = 0.5, mc->head_ms_1 = 1, mc->head_ms_8 = 3;
        for (size_t c = 0; c < (size_t)L * E; c++) { // a curve per distinct type triple
            bool seen = false;
            for (uint32_t j = 0; j < mc->n_curves; j++)
                seen |= !memcmp(mc->curves[j].types, &shape.types[3 * c], sizeof mc->curves[j].types);
            if (seen) continue;
            assert_true(mc->n_curves < MC_PLAN_MAX_CURVES);
            mc_plan_curve_t *cv = &mc->curves[mc->n_curves++];
            memcpy(cv->types, &shape.types[3 * c], sizeof cv->types);
            cv->n = 2, cv->rows[0] = 1, cv->rows[1] = 32;
            cv->ms[0] = i == 1 ? 2.0 : 1.0, cv->ms[1] = 32 * cv->ms[0];
        }
    }
    mc_routing_stats_t st = {.n_layer = L, .n_expert = E, .k = k, .tokens = 512, .n_trace = 512};
    st.rows = calloc((size_t)L * E, sizeof(uint64_t));
    st.trace = calloc((size_t)512 * L * k, 1);
    mc_rng_t g;
    mc_rng_seed(&g, 5);
    for (uint32_t t = 0; t < 512; t++)
        for (uint32_t l = 0; l < L; l++)
            for (uint32_t j = 0; j < k; j++) {
                uint32_t e = (uint32_t)(mc_rng_next(&g) % 4 ? mc_rng_next(&g) % 2 : mc_rng_next(&g) % E);
                for (uint32_t q = 0; q < j; q++)
                    if (st.trace[((size_t)t * L + l) * k + q] == e) e = (e + 1 + j) % E;
                st.trace[((size_t)t * L + l) * k + j] = (uint8_t)e;
                st.rows[(size_t)l * E + e]++;
            }
    mc_plan_params_t pp = mc_plan_params_default();
    pp.sim.batch = 8;
    mc_plan_placement_t p;
    if (mc_plan_make(&shape, &ms, &st, &pp, &p, err)) fail_msg("%s", err);
    mc_cluster_config_t *planned = NULL;
    assert_int_equal(mc_plan_placement_to_config(&p, &ms, path, MC_WIRE_AUTO, &planned, err), MC_OK);
    planned->timeout_ms = 10000;
    mc_plan_placement_free(&p);
    // The hand-written one: blocks per layer, experts 0-1 on every node, the
    // coordinator holding a different set per layer.
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "wire: auto\ntimeout_ms: 10000\nnodes:\n"
             "  - {name: node-1, endpoint: \"%s\", holds: [{layers: 0, experts: 0-3}, {layers: 1-3, experts: 0-1}]}\n"
             "  - {name: node-2, endpoint: \"%s\", holds: [{layers: all, experts: [0, 1, 4, 5]}]}\n"
             "  - {name: node-3, endpoint: \"%s\", holds: [{layers: 0, experts: 0-1}, {layers: 1-3, experts: 0-3}]}\n"
             "local:\n  holds: [{layers: 0, experts: 6-7}, {layers: 1-3, experts: [6, 7]}, {layers: 0, experts: 4-5}]\n",
             ns.procs[0].endpoint, ns.procs[1].endpoint, ns.procs[2].endpoint);
    mc_cluster_config_t *hand = mc_cluster_config_parse(yaml, strlen(yaml), "hand.yaml", err);
    if (!hand) fail_msg("%s", err);
    if (mc_cluster_config_check(hand, L, E, err)) fail_msg("%s", err);
    size_t replicated = 0, local = 0;
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t e = 0; e < E; e++) {
            size_t h = 0;
            for (size_t i = 0; i < planned->n_nodes; i++) h += mc_cluster_node_holds(&planned->nodes[i], l, e);
            replicated += h > 1, local += mc_cluster_config_local_holds(planned, l, e);
        }
    printf("[cluster] planned placement: %zu replicated pairs, %zu local\n", replicated, local);
    for (int which = 0; which < 2; which++) {
        const mc_cluster_config_t *cfg = which ? hand : planned;
        nanosleep(&(struct timespec){0, 400 * 1000000L}, NULL); // the last placement's lease runs out
        for (size_t q = 0; q < N_PROMPTS; q++) {
            s_load_ids(s_prompts[q]);
            int32_t g_local[8], g_remote[8];
            float *ref = s_logits(m, NULL, g_local, 8);
            float *got = s_logits(m, cfg, g_remote, 8);
            assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
            assert_memory_equal(g_local, g_remote, sizeof g_local);
            free(ref), free(got);
        }
    }
    mc_cluster_config_destroy(&hand);
    mc_cluster_config_destroy(&planned);
    mc_routing_stats_free(&st);
    mc_plan_machines_free(&ms);
    mc_plan_shape_free(&shape);
    s_stop(&ns);
    mc_model_destroy(&m);
}

static void test_q8_0_wire_exact(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"3-7", NULL}};
    s_compare("tiny-q8_0.gguf", p, 2, MC_WIRE_Q8_0, NULL, true);
    s_compare("tiny-q4_0.gguf", p, 2, MC_WIRE_Q8_0, NULL, true);
}

// `wire: auto` sends each expert the blocks its kernel makes: every fixture,
// K-quants included, through two nodes equals one machine to the bit.
static void test_auto_wire_exact(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"3-7", NULL}};
    s_compare("tiny-f32.gguf", p, 2, MC_WIRE_AUTO, NULL, true);
    s_compare("tiny-q8_0.gguf", p, 2, MC_WIRE_AUTO, NULL, true);
    s_compare("tiny-q4_0.gguf", p, 2, MC_WIRE_AUTO, NULL, true);
    s_compare("small-q4_k_m.gguf", p, 2, MC_WIRE_AUTO, NULL, true);
}

static void test_lossy_wires(void **state) {
    (void)state;
    s_place_t p[] = {{"all", NULL}};
    s_compare("tiny-f32.gguf", p, 1, MC_WIRE_F16, NULL, false);
    s_compare("tiny-f32.gguf", p, 1, MC_WIRE_BF16, NULL, false);
    s_compare("small-q4_k_m.gguf", p, 1, MC_WIRE_Q8_0, NULL, false);
}

static void test_other_model_refused(void **state) {
    (void)state;
    char path[512], other[600], err[MC_ERR_LEN] = "";
    mc_model_t *m = s_fixture("tiny-q8_0.gguf", path, sizeof path);
    if (!m) skip();
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    snprintf(other, sizeof other, "%s/other.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&p, other, err), MC_OK);
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t place[] = {{"all", NULL}};
    s_start(&ns, other, place, 1, MC_WIRE_F32, NULL);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_null(mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err));
    // Refused by the node itself (it checks first); either way the message
    // names the node and the fingerprints.
    assert_non_null(strstr(err, "node-1"));
    assert_non_null(strstr(err, "fingerprint"));
    mc_engine_destroy(&e);
    s_stop(&ns);
    mc_model_destroy(&m);
}

// A node serving a copy of the model with the same header and one weight
// byte flipped (expert 5 of layer 1): the fingerprint agrees, the placement
// is refused with a message naming that expert, and the cluster does not
// start. With that expert computed here instead, the node's share is the
// coordinator's weights: it serves, and the logits are one machine's.
static void test_other_weights_refused(void **state) {
    (void)state;
    char path[512], copy[600], want[MC_ERR_LEN * 2], err[MC_ERR_LEN] = "";
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    size_t len;
    uint8_t *bytes = mc_test_read_file(path, &len);
    assert_non_null(bytes);
    bytes[(size_t)(m->layers[1].experts[5].down.data - mc_gguf_base(m->gguf)) + 8] ^= 0x01;
    snprintf(copy, sizeof copy, "%s/other-weights.gguf", s_dir);
    FILE *f = fopen(copy, "wb");
    assert_true(f && fwrite(bytes, 1, len, f) == len && fclose(f) == 0);
    free(bytes);
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t all[] = {{"all", NULL}};
    s_start(&ns, copy, all, 1, MC_WIRE_F32, NULL);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_null(mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err));
    snprintf(want, sizeof want,
             "node node-1 (%s) refused the placement: its model file differs from the coordinator's: expert 5 of layer "
             "1 has other weights (1 of the 16 experts placed differs); start this node with the coordinator's GGUF file",
             ns.procs[0].endpoint);
    assert_string_equal(err, want);
    mc_engine_destroy(&e);
    s_stop(&ns);

    s_place_t but5[] = {{"0-4, 6-7", NULL}};
    s_start(&ns, copy, but5, 1, MC_WIRE_F32, "5");
    s_load_ids("p0_fox");
    int32_t g_local[4], g_remote[4];
    float *ref = s_logits(m, NULL, g_local, 4);
    float *got = s_logits(m, ns.cfg, g_remote, 4);
    assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
    assert_memory_equal(g_remote, g_local, sizeof g_local);
    printf("[cluster] a node with other weights in expert 5 of layer 1: refused by name; without that expert, "
           "logits bit-identical\n");
    free(ref), free(got);
    s_stop(&ns);
    mc_model_destroy(&m);
}

static void test_missing_node(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN] = "";
    mc_model_t *m = s_fixture("tiny-q8_0.gguf", path, sizeof path);
    if (!m) skip();
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 300;
    // Port 9 (discard) on loopback: nothing listens there in the sandbox.
    assert_int_equal(mc_cluster_config_add_node(cfg, "ghost", "tcp://127.0.0.1:9", NULL, NULL, err), MC_OK);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_null(mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err));
    assert_non_null(strstr(err, "ghost"));
    assert_non_null(strstr(err, "300 ms"));
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// The node-lifecycle tests: two nodes (experts 0-3, 4-7) serving the f32
// fixture through a cluster that probes lost nodes every 20 ms, and the
// single-machine logits of one prompt to compare with.
typedef struct {
    char path[512];
    mc_model_t *m;
    mc_engine_t *e;
    mc_cluster_t *c;
    float *ref, *got; // (s_n_ids, n_vocab)
    size_t bytes;
} s_life_t;

static bool s_life_start(s_life_t *l, s_nodes_t *ns, size_t prompt, uint32_t timeout_ms) {
    char err[MC_ERR_LEN];
    if (!(l->m = s_fixture("tiny-f32.gguf", l->path, sizeof l->path))) return false;
    int32_t g[1];
    s_load_ids(s_prompts[prompt]);
    l->ref = s_logits(l->m, NULL, g, 0);
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_start(ns, l->path, p, 2, MC_WIRE_F32, NULL);
    ns->cfg->timeout_ms = timeout_ms;
    ns->cfg->retry_ms = 20;
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    l->e = mc_engine_new(l->m, &ep, err);
    l->c = mc_cluster_new(ns->cfg, l->m, mc_engine_matmul(l->e), NULL, err);
    assert_non_null(l->c);
    mc_engine_set_moe(l->e, mc_cluster_moe, l->c);
    l->bytes = s_n_ids * l->m->hp.n_vocab * sizeof(float);
    l->got = malloc(l->bytes);
    return true;
}

// The whole prompt through the cluster: the single-machine logits.
static void s_life_eval_same(s_life_t *l) {
    char err[MC_ERR_LEN];
    assert_int_equal(mc_engine_eval(l->e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, l->got, err), MC_OK);
    assert_memory_equal(l->got, l->ref, l->bytes);
}

// Node i killed, or killed and started again on its endpoint at once.
static void s_life_kill(s_nodes_t *ns, size_t i) {
    kill(ns->procs[i].pid, SIGKILL);
    waitpid(ns->procs[i].pid, NULL, 0);
    ns->procs[i].pid = 0;
}

static void s_life_restart(s_life_t *l, s_nodes_t *ns, size_t i) {
    char err[MC_ERR_LEN];
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.exe = s_exe, np.model = l->path, np.name = ns->cfg->nodes[i].name, np.listen = ns->cfg->nodes[i].endpoint;
    if (mc_nodeproc_start(&np, &ns->procs[i], err)) fail_msg("%s", err);
}

// One-token evaluations until node i is back (the probe runs between them).
static void s_life_await_rejoin(s_life_t *l, size_t i, mc_cluster_node_stats_t *st) {
    char err[MC_ERR_LEN];
    mc_cluster_node_stats(l->c, i, st);
    for (int k = 0; k < 500 && !st->alive; k++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        assert_int_equal(mc_engine_eval(l->e, s_ids, 1, 0, MC_LOGITS_LAST, l->got, err), MC_OK);
        mc_cluster_node_stats(l->c, i, st);
    }
    assert_true(st->alive);
}

static void s_life_stop(s_life_t *l, s_nodes_t *ns) {
    free(l->got), free(l->ref);
    mc_cluster_destroy(&l->c);
    mc_engine_destroy(&l->e);
    s_stop(ns);
    mc_model_destroy(&l->m);
}

// A node that dies after the handshake: its experts move to the coordinator
// and the logits do not change. Started again on its endpoint it rejoins:
// it gets its placement back and work again, and the logits still do not
// change.
static void test_node_killed_and_back(void **state) {
    (void)state;
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_life_t l;
    if (!s_life_start(&l, &ns, 0, 500)) skip();
    s_life_kill(&ns, 1);
    s_life_eval_same(&l);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(l.c, 1, &st);
    assert_false(st.alive);
    assert_int_equal(st.deaths, 1);
    const uint64_t before = st.requests;
    mc_cluster_node_stats(l.c, 0, &st);
    assert_true(st.alive);
    assert_true(st.requests > 0);

    s_life_restart(&l, &ns, 1); // the old port: the node's config names it
    s_life_await_rejoin(&l, 1, &st);
    assert_int_equal(st.rejoins, 1);
    s_life_eval_same(&l);
    mc_cluster_node_stats(l.c, 1, &st);
    assert_true(st.alive);
    assert_true(st.requests > before);
    s_life_stop(&l, &ns);
}

// Restarted before the coordinator noticed: the new process has no
// placement and refuses the requests. The run goes on, computing that
// node's experts locally, and the node is handed its placement again.
static void test_node_restarted_quickly(void **state) {
    (void)state;
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_life_t l;
    if (!s_life_start(&l, &ns, 1, 2000)) skip();
    s_life_eval_same(&l);
    s_life_kill(&ns, 1);
    s_life_restart(&l, &ns, 1);
    s_life_eval_same(&l);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(l.c, 1, &st);
    assert_int_equal(st.deaths, 1);
    s_life_await_rejoin(&l, 1, &st);
    const uint64_t before = st.requests;
    s_life_eval_same(&l);
    mc_cluster_node_stats(l.c, 1, &st);
    assert_true(st.requests > before);
    s_life_stop(&l, &ns);
}

// Greedy generation of n tokens after prompt 3 through a cluster; when
// kill_at >= 0, node 1 is killed after that many tokens. Returns the logits
// of every step (n, n_vocab); the tokens in ids.
static float *s_generate(const mc_model_t *m, s_nodes_t *ns, int kill_at, size_t n, int32_t *ids) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    ep.n_threads = 2;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = mc_cluster_new(ns->cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("cluster: %s", err);
    mc_engine_set_moe(e, mc_cluster_moe, c);
    const uint32_t nv = m->hp.n_vocab;
    float *out = malloc(n * nv * sizeof(float));
    s_load_ids(s_prompts[3]);
    if (mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_LAST, out, err)) fail_msg("eval: %s", err);
    for (size_t i = 0; i < n; i++) {
        const float *row = out + i * nv;
        int32_t best = 0;
        for (uint32_t v = 1; v < nv; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        ids[i] = best;
        if ((int)i == kill_at) {
            kill(ns->procs[1].pid, SIGKILL);
            waitpid(ns->procs[1].pid, NULL, 0);
            ns->procs[1].pid = 0;
        }
        if (i + 1 < n && mc_engine_eval(e, &best, 1, (uint32_t)(s_n_ids + i), MC_LOGITS_LAST, out + (i + 1) * nv, err))
            fail_msg("eval: %s", err);
    }
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 1, &st);
    assert_int_equal(st.deaths, kill_at >= 0 ? 1 : 0);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    return out;
}

// A node killed mid-generation: the coordinator computes its experts from
// the bytes it sent it, so even a lossy wire gives exactly the tokens and
// logits of the same cluster without the kill.
static void s_kill_same(const char *fixture, mc_wire_enc_t wire) {
    char path[512];
    mc_model_t *m = s_fixture(fixture, path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_start(&ns, path, p, 2, wire, NULL);
    ns.cfg->timeout_ms = 300;
    ns.cfg->retry_ms = 0;
    enum { N = 24 };
    int32_t ids_ref[N], ids_kill[N];
    float *ref = s_generate(m, &ns, -1, N, ids_ref);
    float *got = s_generate(m, &ns, 7, N, ids_kill);
    assert_memory_equal(ids_kill, ids_ref, sizeof ids_ref);
    assert_memory_equal(got, ref, N * m->hp.n_vocab * sizeof(float));
    printf("[cluster] %-17s wire %-4s: node killed after 7 of %d tokens, same tokens and logits\n", fixture,
           mc_wire_enc_name(wire), N);
    free(ref), free(got);
    s_stop(&ns);
    mc_model_destroy(&m);
}

static void test_kill_f32(void **state) {
    (void)state;
    s_kill_same("small-q4_k_m.gguf", MC_WIRE_F32);
}

static void test_kill_auto(void **state) {
    (void)state;
    s_kill_same("small-q4_k_m.gguf", MC_WIRE_AUTO);
}

static void test_kill_q8_0_lossy(void **state) {
    (void)state;
    s_kill_same("small-q4_k_m.gguf", MC_WIRE_Q8_0); // lossy for its K-quant experts
    s_kill_same("tiny-f32.gguf", MC_WIRE_F16);
}

static void s_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// A placement built in code: the nodes of ns with other experts.
static mc_cluster_config_t *s_replace(const s_nodes_t *ns, const char *const *experts) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->wire = ns->cfg->wire;
    for (size_t i = 0; i < ns->n; i++) {
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(experts[i], &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(cfg, ns->cfg->nodes[i].name, ns->cfg->nodes[i].endpoint, &ex, NULL, err),
                         MC_OK);
    }
    return cfg;
}

// A live coordinator hands its nodes a new placement (same logits after);
// a second coordinator with another placement is refused while the first
// keeps its lease with heartbeats, and accepted once it is gone.
static void test_placement_changes(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_lease_ms = 600;
    s_start(&ns, path, p, 2, MC_WIRE_AUTO, NULL);
    s_lease_ms = 0;
    ns.cfg->heartbeat_ms = 100;
    s_load_ids(s_prompts[0]);
    int32_t g[1];
    float *ref = s_logits(m, NULL, g, 0);
    const size_t bytes = s_n_ids * m->hp.n_vocab * sizeof(float);
    float *got = malloc(bytes);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_cluster_t *c = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_engine_set_moe(e, mc_cluster_moe, c);
    assert_false(mc_cluster_holds(c, 0, 1, 5));

    static const char *const moved[] = {"0-5", "6-7"};
    mc_cluster_config_t *cfg2 = s_replace(&ns, moved);
    assert_int_equal(mc_cluster_place(c, cfg2, err), MC_OK);
    assert_true(mc_cluster_holds(c, 0, 1, 5));
    assert_false(mc_cluster_holds(c, 1, 1, 5));
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);

    // Another coordinator with the old placement: refused, also after more
    // than a lease, since the first one's heartbeats keep it.
    mc_engine_t *e2 = mc_engine_new(m, &ep, err);
    assert_null(mc_cluster_new(ns.cfg, m, mc_engine_matmul(e2), NULL, err));
    assert_non_null(strstr(err, "already serving a different placement"));
    for (int i = 0; i < 10; i++) {
        mc_cluster_tick(c);
        s_sleep_ms(100);
    }
    assert_null(mc_cluster_new(ns.cfg, m, mc_engine_matmul(e2), NULL, err));
    assert_non_null(strstr(err, "already serving a different placement"));
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 0, &st);
    assert_true(st.alive);

    // A placement that names other nodes is refused, the old one kept.
    mc_cluster_config_t *bad = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_add_node(bad, "other", ns.cfg->nodes[0].endpoint, NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(bad, ns.cfg->nodes[1].name, ns.cfg->nodes[1].endpoint, NULL, NULL, err),
                     MC_OK);
    assert_int_equal(mc_cluster_place(c, bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "same nodes in the same order"));
    assert_true(mc_cluster_holds(c, 0, 1, 5));

    // The first coordinator gone, its lease runs out: the second one's
    // placement is accepted.
    mc_cluster_destroy(&c);
    s_sleep_ms(800);
    mc_cluster_t *c2 = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e2), NULL, err);
    if (!c2) fail_msg("%s", err);
    mc_engine_set_moe(e2, mc_cluster_moe, c2);
    assert_int_equal(mc_engine_eval(e2, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);
    mc_cluster_destroy(&c2);
    mc_engine_destroy(&e2);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg2);
    mc_cluster_config_destroy(&bad);
    free(ref), free(got);
    s_stop(&ns);
    mc_model_destroy(&m);
}

// A node that dies while the coordinator is idle is noticed by the
// heartbeats, before any request would have waited for it.
static void test_heartbeat_notices_dead_node(void **state) {
    (void)state;
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_life_t l;
    if (!s_life_start(&l, &ns, 0, 300)) skip();
    mc_cluster_destroy(&l.c); // again, with heartbeats every 50 ms and no probes
    ns.cfg->heartbeat_ms = 50;
    ns.cfg->retry_ms = 0;
    char err[MC_ERR_LEN];
    l.c = mc_cluster_new(ns.cfg, l.m, mc_engine_matmul(l.e), NULL, err);
    assert_non_null(l.c);
    mc_engine_set_moe(l.e, mc_cluster_moe, l.c);
    s_life_kill(&ns, 1);
    mc_cluster_node_stats_t st;
    for (int i = 0; i < 100; i++) {
        mc_cluster_tick(l.c);
        mc_cluster_node_stats(l.c, 1, &st);
        if (!st.alive) break;
        s_sleep_ms(20);
    }
    assert_false(st.alive);
    assert_int_equal(st.deaths, 1);
    assert_true(st.requests == 0);
    s_life_eval_same(&l); // computed here at once, no timeout to wait
    s_life_stop(&l, &ns);
}

// CURVE between coordinator and nodes: the logits are one machine's; a
// coordinator whose key the nodes do not know gets no answer at all, and
// the nodes go on serving the right one.
static void test_curve_cluster(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN], keydir[300], auth[400], ckey[400];
    mc_model_t *m = s_fixture("tiny-q4_0.gguf", path, sizeof path);
    if (!m) skip();
    snprintf(keydir, sizeof keydir, "%s/keys", s_dir);
    mkdir(keydir, 0700);
    mc_keypair_t coord, stranger, nk[2];
    assert_int_equal(mc_keys_generate(&coord, err), MC_OK);
    assert_int_equal(mc_keys_generate(&stranger, err), MC_OK);
    assert_int_equal(mc_keys_write(keydir, "coordinator", &coord, err), MC_OK);
    assert_int_equal(mc_keys_write(keydir, "stranger", &stranger, err), MC_OK);
    snprintf(auth, sizeof auth, "%s/coordinator.pub", keydir); // one authorized key
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    memset(&ns, 0, sizeof ns);
    s_live = &ns;
    ns.cfg = mc_cluster_config_new();
    snprintf(ckey, sizeof ckey, "%s/coordinator.key", keydir);
    assert_int_equal(mc_cluster_config_set_secret_key(ns.cfg, ckey, err), MC_OK);
    for (size_t i = 0; i < 2; i++) {
        char name[32], nkey[400];
        snprintf(name, sizeof name, "secure-%zu", i + 1);
        assert_int_equal(mc_keys_generate(&nk[i], err), MC_OK);
        assert_int_equal(mc_keys_write(keydir, name, &nk[i], err), MC_OK);
        snprintf(nkey, sizeof nkey, "%s/%s.key", keydir, name);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.exe = s_exe, np.model = path, np.name = name, np.secret_key = nkey, np.authorized_keys = auth;
        if (mc_nodeproc_start(&np, &ns.procs[i], err)) fail_msg("%s", err);
        ns.n = i + 1;
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(i ? "4-7" : "0-3", &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(ns.cfg, name, ns.procs[i].endpoint, &ex, NULL, err), MC_OK);
        assert_int_equal(mc_cluster_config_set_node_key(ns.cfg, i, nk[i].pub, err), MC_OK);
    }
    s_load_ids(s_prompts[2]);
    int32_t g1[4], g2[4];
    float *ref = s_logits(m, NULL, g1, 4);
    float *got = s_logits(m, ns.cfg, g2, 4);
    assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
    assert_memory_equal(g1, g2, sizeof g1);
    free(got);
    // The stranger: same file, another secret key.
    mc_cluster_config_t *bad = mc_cluster_config_new();
    snprintf(ckey, sizeof ckey, "%s/stranger.key", keydir);
    assert_int_equal(mc_cluster_config_set_secret_key(bad, ckey, err), MC_OK);
    bad->timeout_ms = 500;
    assert_int_equal(mc_cluster_config_add_node(bad, "secure-1", ns.procs[0].endpoint, NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_set_node_key(bad, 0, nk[0].pub, err), MC_OK);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_null(mc_cluster_new(bad, m, mc_engine_matmul(e), NULL, err));
    assert_non_null(strstr(err, "did not answer the handshake within 500 ms"));
    // A key given to a node without the coordinator's own is refused up front.
    mc_cluster_config_t *half = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_add_node(half, "secure-1", ns.procs[0].endpoint, NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_set_node_key(half, 0, nk[0].pub, err), MC_OK);
    assert_null(mc_cluster_new(half, m, mc_engine_matmul(e), NULL, err));
    assert_non_null(strstr(err, "needs the coordinator's secret_key too"));
    mc_engine_destroy(&e);
    got = s_logits(m, ns.cfg, g2, 4); // still serving the right coordinator
    assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
    printf("[cluster] CURVE: 2 nodes, logits bit-identical; a coordinator with another key refused\n");
    free(got), free(ref);
    mc_cluster_config_destroy(&bad);
    mc_cluster_config_destroy(&half);
    s_stop(&ns);
    mc_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_f32_two_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_f32_replicas_layers_local, s_stop_live),
        cmocka_unit_test_teardown(test_qwen3moe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_olmoe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_planned_placement_exact, s_stop_live),
        cmocka_unit_test_teardown(test_q8_0_wire_exact, s_stop_live),
        cmocka_unit_test_teardown(test_auto_wire_exact, s_stop_live),
        cmocka_unit_test_teardown(test_lossy_wires, s_stop_live),
        cmocka_unit_test_teardown(test_kill_f32, s_stop_live),
        cmocka_unit_test_teardown(test_kill_auto, s_stop_live),
        cmocka_unit_test_teardown(test_kill_q8_0_lossy, s_stop_live),
        cmocka_unit_test_teardown(test_other_model_refused, s_stop_live),
        cmocka_unit_test_teardown(test_other_weights_refused, s_stop_live),
        cmocka_unit_test_teardown(test_missing_node, s_stop_live),
        cmocka_unit_test_teardown(test_node_killed_and_back, s_stop_live),
        cmocka_unit_test_teardown(test_node_restarted_quickly, s_stop_live),
        cmocka_unit_test_teardown(test_placement_changes, s_stop_live),
        cmocka_unit_test_teardown(test_heartbeat_notices_dead_node, s_stop_live),
        cmocka_unit_test_teardown(test_curve_cluster, s_stop_live),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
