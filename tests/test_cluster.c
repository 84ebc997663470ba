/*
 * test_cluster: real moe-expert processes on 127.0.0.1 against the
 * single-machine engine.
 *
 * With the f32 wire, fixture logits from 2- and 3-node clusters (with
 * replicas, layer ranges and local experts) must equal one machine's to the
 * bit; with q8_0 on Q8_0/Q4_0 experts too (their kernels quantize the input
 * to Q8_0 anyway); f16 and bf16 must stay within the quantized-model bounds
 * of the fixture README. Models generated at the largest layer and expert
 * counts (48 layers; 94 layers of 128 experts, 8 used) are exact too, and
 * MXFP4 experts through two nodes on the f32, q8_0 and auto wires. A
 * node with another model, or with a copy of ours whose weights differ in
 * one expert it is given, or with an MXFP4 NaN scale in its share, is
 * refused by name, a
 * node down at start is computed around until it joins, a node killed mid-run is
 * replaced by local computation with unchanged logits, and one started
 * again on its endpoint rejoins.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <zmq.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "experts_factory.h"
#include "keys.h"
#include "mkmodel.h"
#include "nodeproc.h"
#include "plan.h"
#include "rng.h"
#include "testnodes.h"
#include "testutil.h"


static char s_dir[256];
static unsigned s_lease_ms; // --lease-ms of the nodes s_start starts (0: their default)

static int s_setup(void **state) {
    (void)state;
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
    mc_test_nodes_t nodes;
    mc_cluster_config_t *cfg;
} s_nodes_t;

// The nodes of the running test: a failing assertion jumps out of the test,
// so the per-test teardown stops them, not the test body.
static s_nodes_t *s_live;

static int s_stop_live(void **state) {
    (void)state;
    if (s_live) {
        mc_test_nodes_stop(&s_live->nodes);
        mc_cluster_config_destroy(&s_live->cfg);
        s_live = NULL;
    }
    return 0;
}

static void s_start(s_nodes_t *ns, const char *model, const s_place_t *place, size_t n, mc_wire_enc_t wire,
                    const char *local_experts) {
    char err[MC_ERR_LEN], name[32];
    memset(ns, 0, sizeof *ns);
    mc_test_nodes_init(&ns->nodes);
    s_live = ns;
    ns->cfg = mc_cluster_config_new();
    ns->cfg->wire = wire;
    ns->cfg->timeout_ms = 10000;
    if (local_experts) assert_int_equal(mc_expert_set_parse(local_experts, &ns->cfg->local_experts, err), MC_OK);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "node-%zu", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = model, np.name = name, np.lease_ms = s_lease_ms;
        mc_test_nodes_start(&ns->nodes, i, &np);
        mc_expert_set_t ex;
        mc_layer_set_t ly, *lp = NULL;
        assert_int_equal(mc_expert_set_parse(place[i].experts, &ex, err), MC_OK);
        if (place[i].layers) {
            assert_int_equal(mc_layer_set_parse(place[i].layers, &ly, err), MC_OK);
            lp = &ly;
        }
        assert_int_equal(mc_cluster_config_add_node(ns->cfg, name, ns->nodes.procs[i].endpoint, &ex, lp, err), MC_OK);
    }
}

static void s_stop(s_nodes_t *ns) {
    mc_test_nodes_stop(&ns->nodes);
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

// The KV cache type of the engines s_logits makes (f16: test_kv_f16_cluster).
static mc_dtype_t s_kv = MC_DTYPE_F32;

// All logits of s_ids, locally (cfg NULL) or through the cluster: the
// expert step made by the factory a session uses.
static float *s_logits(const mc_model_t *m, const mc_cluster_config_t *cfg, int32_t *greedy, size_t n_greedy) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 300; // the longest fixture prompt plus the greedy steps
    ep.n_threads = 1;
    ep.kv_type = s_kv;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_experts_params_t xp = mc_experts_params_default();
    xp.model = m, xp.mm = mc_engine_matmul(e), xp.cluster = cfg;
    mc_experts_t *x = mc_experts_new(&xp, err);
    if (!x) fail_msg("expert step: %s", err);
    assert_true(!cfg == !mc_experts_cluster(x)); // a cluster exactly when a file was given
    // A dense layer (leading or interleaved) has no experts: no node holds
    // any of its cells, whatever the placement names.
    for (size_t i = 0; cfg && i < mc_cluster_n_nodes(mc_experts_cluster(x)); i++)
        for (uint32_t l = 0; l < m->hp.n_layer; l++)
            for (uint32_t ex = 0; ex < m->hp.n_expert && !mc_model_layer_moe(m, l); ex++)
                if (mc_cluster_holds(mc_experts_cluster(x), i, l, ex)) fail_msg("node %zu holds expert %u of dense layer %u", i, ex, l);
    mc_engine_set_experts(e, x);
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
    mc_experts_destroy(&x); // the cluster with it
    mc_engine_destroy(&e);
    return out;
}

static void s_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

// A model generated into the test folder at the largest shapes the wire
// carries, with tiny dims so that it is quick, through three nodes; a fixed
// prompt (written as an ids file) against one machine, to the bit.
static void s_write_generated(const char *label, const mc_mkmodel_params_t *mp, char *path, size_t cap) {
    char err[MC_ERR_LEN];
    snprintf(path, cap, "%s/%s.ids.txt", s_dir, label);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("1\n300\n17\n42\n259\n100\n7\n480\n", f); // below the default vocabulary of 512
    fclose(f);
    snprintf(path, cap, "%s/%s.gguf", s_dir, label);
    if (mc_mkmodel_write(mp, path, err)) fail_msg("%s", err);
}

static void s_compare_generated(const char *label, const mc_mkmodel_params_t *mp, const s_place_t *place,
                                mc_wire_enc_t wire) {
    char path[512];
    s_write_generated(label, mp, path, sizeof path);
    s_compare_at(label, path, s_dir, &label, 1, place, 3, wire, NULL, true);
}

// MXFP4 experts (GPT-OSS's type; moe-mkmodel --type mxfp4, the rest F32)
// through two nodes: the f32 wire, the q8_0 wire (MXFP4's kernel takes
// Q8_0 blocks: the node multiplies the coordinator's own blocks) and auto
// to the bit, with replicas and local experts too, in two families; f16
// and bf16 within the quantized bound.
static void test_mxfp4_two_nodes(void **state) {
    (void)state;
    char path[512];
    const s_place_t halves[] = {{"0-3", NULL}, {"4-7", NULL}}, shared[] = {{"0-5", NULL}, {"2-5", NULL}};
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_MXFP4;
    for (int fam = 0; fam < 2; fam++) {
        p.arch = fam ? MC_ARCH_QWEN3MOE : MC_ARCH_LLAMA;
        const char *label = fam ? "qwen3moe-mxfp4" : "mixtral-mxfp4";
        s_write_generated(label, &p, path, sizeof path);
        char err[MC_ERR_LEN];
        mc_model_t *m = mc_model_open(path, err);
        if (!m) fail_msg("%s", err);
        assert_int_equal(m->layers[1].experts[7].down.type, MC_DTYPE_MXFP4);
        mc_model_destroy(&m);
        const mc_wire_enc_t exact[] = {MC_WIRE_F32, MC_WIRE_Q8_0, MC_WIRE_AUTO};
        for (size_t w = 0; w < sizeof exact / sizeof exact[0]; w++)
            s_compare_at(label, path, s_dir, &label, 1, halves, 2, exact[w], NULL, true);
        s_compare_at(label, path, s_dir, &label, 1, shared, 2, MC_WIRE_AUTO, "6-7", true);
        s_compare_at(label, path, s_dir, &label, 1, halves, 2, MC_WIRE_F16, NULL, false);
        s_compare_at(label, path, s_dir, &label, 1, halves, 2, MC_WIRE_BF16, NULL, false);
    }
}


// A node whose share holds an MXFP4 NaN scale refuses the placement when it
// loads the share, naming tensor and block (the coordinator, reading the
// same file, opened it: opening reads no expert), and the cluster does not
// start. A node under --mem-limit reads its experts through a store: the
// step that needs a damaged one fails with the tensor named, no logits.
static void test_mxfp4_bad_scale_node(void **state) {
    (void)state;
    char good[512], bad[600], err[MC_ERR_LEN] = "";
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_MXFP4;
    s_write_generated("mxfp4-src", &p, good, sizeof good);
    snprintf(bad, sizeof bad, "%s/mxfp4-nan.gguf", s_dir);
    mc_test_poison_mxfp4(good, bad);
    mc_model_t *m = mc_model_open(bad, err);
    if (!m) fail_msg("%s", err);
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t upper[] = {{"4-7", NULL}};
    s_start(&ns, bad, upper, 1, MC_WIRE_AUTO, "0-3");
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    assert_null(mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err));
    if (!strstr(err, "node-1") || !strstr(err, "refused the placement") ||
        !strstr(err, "tensor 'blk.1.ffn_up_exps.weight': MXFP4 block 1024 (row 512, expert 4, values 0..31) has the "
                     "scale byte 0xFF"))
        fail_msg("%s", err);
    s_stop(&ns);
    // Every expert on a node under a memory limit: the placement is
    // accepted (nothing read but what the store warms), the step that
    // needs a damaged expert fails with the node's message.
    memset(&ns, 0, sizeof ns);
    mc_test_nodes_init(&ns.nodes);
    s_live = &ns;
    ns.cfg = mc_cluster_config_new();
    ns.cfg->timeout_ms = 10000;
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.model = bad, np.name = "node-1", np.mem_limit_mb = 1;
    mc_test_nodes_start(&ns.nodes, 0, &np);
    mc_expert_set_t ex;
    assert_int_equal(mc_expert_set_parse("all", &ex, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(ns.cfg, "node-1", ns.nodes.procs[0].endpoint, &ex, NULL, err), MC_OK);
    mc_experts_params_t xp = mc_experts_params_default();
    xp.model = m, xp.mm = mc_engine_matmul(e), xp.cluster = ns.cfg;
    mc_experts_t *x = mc_experts_new(&xp, err);
    if (!x) fail_msg("expert step: %s", err);
    mc_engine_set_experts(e, x);
    static const int32_t ids[] = {1, 300, 17, 42, 259, 100, 7, 480};
    float *logits = malloc(m->hp.n_vocab * sizeof(float));
    err[0] = 0;
    FILE *log = tmpfile(); // stderr meanwhile: the coordinator's warnings tell the node's answer
    assert_non_null(log);
    fflush(stderr);
    const int saved = dup(2);
    assert_true(saved >= 0 && dup2(fileno(log), 2) == 2);
    const mc_err_t rc = mc_engine_eval(e, ids, 8, 0, MC_LOGITS_LAST, logits, err);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    assert_int_not_equal(rc, MC_OK);
    // The node's store refused the expert, then the coordinator's own
    // check, computing the share itself from the same file.
    if (!strstr(err, "tensor 'blk.1.ffn_up_exps.weight': MXFP4 block ") || !strstr(err, "has the scale byte 0xFF"))
        fail_msg("%s", err);
    char said[4096] = "";
    rewind(log);
    said[fread(said, 1, sizeof said - 1, log)] = 0;
    fclose(log);
    if (!strstr(said, "node node-1 failed a request: node node-1: tensor 'blk.1.ffn_up_exps.weight': MXFP4 block "))
        fail_msg("%s", said);
    printf("[cluster] MXFP4 NaN scale: placement refused by the node; under --mem-limit the step fails: %s\n", err);
    free(logits);
    mc_experts_destroy(&x);
    mc_engine_destroy(&e);
    s_stop(&ns);
    mc_model_destroy(&m);
}

// Placements of 48 layers and more: the nodes used to drop such an Assign
// (the decoder's memory budget was 4x the message's length).
static void test_generated_largest_shapes(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.ffn = 32, p.n_layer = 48; // Mixtral: 8 experts, 2 used
    s_place_t mixtral[] = {{"0-2", NULL}, {"3-5", NULL}, {"6-7", NULL}};
    s_compare_generated("mixtral-48", &p, mixtral, MC_WIRE_F32);
    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN3MOE, p.type = MC_DTYPE_Q4_0;
    p.dim = 32, p.ffn = 32, p.n_layer = 94, p.n_expert = 128, p.n_expert_used = 8; // Qwen3-235B-A22B's counts
    s_place_t qwen[] = {{"0-42", NULL}, {"43-85", NULL}, {"86-127", NULL}};
    s_compare_generated("qwen3moe-94x128", &p, qwen, MC_WIRE_AUTO);
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

// Qwen2-MoE: the shared expert (and its gate) computed on the coordinator
// after the routed sum, which three nodes and the coordinator's own experts
// share: the same bits as one machine.
static void test_qwen2moe_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-19", NULL}, {"20-39", NULL}, {"40-55, 0-9", NULL}};
    s_compare_arch("qwen2moe-f32", p, 3, MC_WIRE_AUTO, "56-59");
    s_compare_arch("qwen2moe-f32", p, 3, MC_WIRE_F32, "56-59");
}

// A generated Q4_0 Qwen2-MoE (its shared expert repacked on the coordinator,
// the routed experts on the nodes) through three nodes, to the bit.
static void test_qwen2moe_generated_q4_0(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE, p.type = MC_DTYPE_Q4_0;
    p.ffn = 32, p.ffn_shexp = 128, p.n_expert = 16, p.n_expert_used = 4;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("qwen2moe-q4_0", &p, place, MC_WIRE_AUTO);
}

// DeepSeek-V2: latent attention on the coordinator, its two shared experts
// there too after the routed sum, the routed experts spread over three
// nodes and the coordinator: the same bits as one machine.
static void test_deepseek2_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"5-9", NULL}, {"10-13, 0-2", NULL}};
    s_compare_arch("deepseek2-f32", p, 3, MC_WIRE_AUTO, "14-15");
    s_compare_arch("deepseek2-f32", p, 3, MC_WIRE_F32, "14-15");
}

// A generated Q4_0 DeepSeek-V2 (its latent attention and shared experts
// repacked on the coordinator) through three nodes, to the bit.
static void test_deepseek2_generated_q4_0(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.type = MC_DTYPE_Q4_0;
    p.ffn = 32, p.ffn_shexp = 64, p.n_expert = 16, p.n_expert_used = 4;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 64, p.yarn_factor = 4;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("deepseek2-q4_0", &p, place, MC_WIRE_AUTO);
}

// DeepSeek-V3's shape: the leading dense layer, latent attention and the
// shared expert on the coordinator; sigmoid routing with its selection bias
// in groups there too, the routed experts of the MoE layers on three nodes
// and the coordinator: the same bits as one machine.
static void test_deepseek2v3_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"5-9", NULL}, {"10-13, 0-3", NULL}};
    s_compare_arch("deepseek2v3-f32", p, 3, MC_WIRE_AUTO, "14-15");
    s_compare_arch("deepseek2v3-f32", p, 3, MC_WIRE_F32, "14-15");
}

// A generated Q4_0 DeepSeek-V3 shape (compressed query, a dense layer,
// sigmoid routing with a bias in 4 groups, scaled, a skipped
// next-token-prediction layer) through three nodes, to the bit.
static void test_deepseek2v3_generated_q4_0(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.type = MC_DTYPE_Q4_0;
    p.ffn = 32, p.ffn_shexp = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 3;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 64, p.q_lora_rank = 32, p.yarn_factor = 4;
    p.n_dense_lead = 1, p.ffn_dense = 64, p.n_nextn = 1, p.n_group = 4, p.n_group_used = 2;
    p.gating = MC_GATING_SIGMOID, p.expert_bias = true, p.expert_weights_scale = 2.5f;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("deepseek2v3-q4_0", &p, place, MC_WIRE_AUTO);
}

// GLM-4.5's fixture through three nodes and the coordinator's own experts
// (its dense layer and shared experts computed there too), f32 and auto wires.
static void test_glm4moe_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"5-9", NULL}, {"10-13, 0-3", NULL}};
    s_compare_arch("glm4moe-f32", p, 3, MC_WIRE_AUTO, "14-15");
    s_compare_arch("glm4moe-f32", p, 3, MC_WIRE_F32, "14-15");
}

// GPT-OSS's fixture through three nodes and the coordinator's own experts:
// the biased experts with their clamped SwiGLU on the nodes (which hold the
// whole file here; test_split has them from experts-only files), the
// sinks, sliding windows and router bias on the coordinator; f32 and auto
// wires, the same bits as one machine.
static void test_gptoss_three_nodes(void **state) {
    (void)state;
    s_place_t p[] = {{"0-4", NULL}, {"5-9", NULL}, {"10-13, 0-3", NULL}};
    s_compare_arch("gptoss-f32", p, 3, MC_WIRE_AUTO, "14-15");
    s_compare_arch("gptoss-f32", p, 3, MC_WIRE_F32, "14-15");
}

// A generated GPT-OSS with MXFP4 experts (as its files ship them) through
// three nodes, to the bit.
static void test_gptoss_generated_mxfp4(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_GPTOSS, p.type = MC_DTYPE_MXFP4;
    p.ffn = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 3, p.head_dim = 32, p.n_swa = 4, p.yarn_factor = 4;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("gptoss-mxfp4", &p, place, MC_WIRE_AUTO);
}

// A generated GLM-4.5 (a leading dense layer, sigmoid routing with a
// selection bias in 4 groups, an ungated shared expert, a skipped
// next-token-prediction layer) through three nodes, Q4_0 and F32: the dense
// layer and the shared experts stay on the coordinator, the routed experts
// of the MoE layers go to the nodes, the same bits as one machine.
static void test_glm4moe_generated(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_GLM4MOE, p.type = MC_DTYPE_Q4_0;
    p.ffn = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 3, p.n_dense_lead = 1, p.ffn_dense = 128;
    p.rope_dim = 8, p.n_nextn = 1, p.n_group = 4, p.n_group_used = 2, p.expert_weights_scale = 2.5f;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("glm4moe-q4_0", &p, place, MC_WIRE_AUTO);
    p.type = MC_DTYPE_F32;
    s_compare_generated("glm4moe-f32", &p, place, MC_WIRE_F32);
}

// Interleaved dense layers (interleave_moe_layer_step): Qwen2-MoE with
// step 2 on 4 layers (0 and 2 dense) and DeepSeek-V2 with one leading dense
// layer and step 3 on 6 (2 and 5 MoE), through three nodes whose
// placements name every layer: the dense layers' FFNs on the coordinator,
// no expert of theirs placed, the same bits as one machine.
static void test_interleaved_generated(void **state) {
    (void)state;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE, p.type = MC_DTYPE_Q4_0;
    p.ffn = 32, p.ffn_shexp = 64, p.ffn_dense = 64, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 4, p.moe_step = 2;
    s_place_t place[] = {{"0-5", NULL}, {"6-10", NULL}, {"11-15", NULL}};
    s_compare_generated("qwen2moe-step2-q4_0", &p, place, MC_WIRE_AUTO);
    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.type = MC_DTYPE_F32;
    p.ffn = 32, p.ffn_shexp = 32, p.ffn_dense = 64, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 6;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 32, p.n_dense_lead = 1, p.moe_step = 3;
    s_compare_generated("deepseek2-step3-f32", &p, place, MC_WIRE_F32);
}

// --kv-type f16: the cache is the coordinator's alone, so the cluster still
// gives one machine's bits (each side with an F16 cache), greedy ids too.
static void test_kv_f16_cluster(void **state) {
    (void)state;
    s_kv = MC_DTYPE_F16;
    s_place_t p[] = {{"0-20", "0"}, {"21-42", NULL}, {"43-63, 0-20", NULL}};
    s_compare_arch("olmoe-f32", p, 3, MC_WIRE_AUTO, NULL);
    s_place_t q[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_compare("tiny-q8_0.gguf", q, 2, MC_WIRE_AUTO, NULL, true);
}

// Its teardown: the nodes stopped and the F32 cache back for the tests after, pass or fail.
static int s_stop_live_f32(void **state) {
    s_kv = MC_DTYPE_F32;
    return s_stop_live(state);
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
        if (i) snprintf(mc->endpoint, sizeof mc->endpoint, "%s", ns.nodes.procs[i - 1].endpoint);
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
             ns.nodes.procs[0].endpoint, ns.nodes.procs[1].endpoint, ns.nodes.procs[2].endpoint);
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
             ns.nodes.procs[0].endpoint);
    assert_string_equal(err, want);
    assert_int_equal(mc_err_code(err, MC_OK), MC_ERR_ARG); // a refusal, not a network failure
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

// A node that is down when the coordinator starts does not keep the
// service down: the cluster starts after timeout_ms, computes that node's
// share itself (the same logits), and takes the node in when it comes up.
// A node holding nothing that is down costs nothing either.
static void test_starts_with_node_down(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN] = "";
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}, {"none", NULL}};
    s_start(&ns, path, p, 3, MC_WIRE_F32, NULL);
    ns.cfg->timeout_ms = 300;
    ns.cfg->retry_ms = 50;
    // Started nodes sit in process groups of their own: Ctrl-C in a demo's
    // chat (SIGINT to the terminal's foreground group) does not reach them.
    assert_int_equal(getpgid(ns.nodes.procs[0].pid), ns.nodes.procs[0].pid);
    s_load_ids(s_prompts[0]);
    int32_t g[1];
    float *ref = s_logits(m, NULL, g, 0);
    const size_t bytes = s_n_ids * m->hp.n_vocab * sizeof(float);
    float *got = malloc(bytes);
    for (size_t i = 1; i < 3; i++) { // down before the coordinator starts
        kill(ns.nodes.procs[i].pid, SIGKILL);
        waitpid(ns.nodes.procs[i].pid, NULL, 0);
        ns.nodes.procs[i].pid = 0;
    }
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    const double t0 = mc_clock_ms();
    mc_cluster_t *c = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("a node down stopped the start: %s", err);
    assert_true(mc_clock_ms() - t0 < 2000);
    mc_engine_set_experts(e, mc_cluster_experts(c));
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 0, &st);
    assert_true(st.alive);
    mc_cluster_node_stats(c, 1, &st);
    assert_false(st.alive);
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);
    // node-2 comes up on its endpoint: it joins between evaluations.
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.model = path, np.name = ns.cfg->nodes[1].name, np.listen = ns.cfg->nodes[1].endpoint;
    mc_test_nodes_start(&ns.nodes, 1, &np);
    for (int k = 0; k < 300 && !st.alive; k++) {
        s_sleep_ms(10);
        mc_experts_tick(mc_cluster_experts(c));
        mc_cluster_node_stats(c, 1, &st);
    }
    assert_true(st.alive);
    assert_int_equal(st.deaths, 0);
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);
    mc_cluster_node_stats(c, 1, &st);
    assert_true(st.requests > 0);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    free(ref), free(got);
    s_stop(&ns);
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
    mc_engine_set_experts(l->e, mc_cluster_experts(l->c));
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
    kill(ns->nodes.procs[i].pid, SIGKILL);
    waitpid(ns->nodes.procs[i].pid, NULL, 0);
    ns->nodes.procs[i].pid = 0;
}

static void s_life_restart(s_life_t *l, s_nodes_t *ns, size_t i) {
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.model = l->path, np.name = ns->cfg->nodes[i].name, np.listen = ns->cfg->nodes[i].endpoint;
    mc_test_nodes_start(&ns->nodes, i, &np);
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
    mc_engine_set_experts(e, mc_cluster_experts(c));
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
            kill(ns->nodes.procs[1].pid, SIGKILL);
            waitpid(ns->nodes.procs[1].pid, NULL, 0);
            ns->nodes.procs[1].pid = 0;
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

// --- pipelined passes ---------------------------------------------------------------

// Kills node 1 from the engine's layer hook: at layer 1 of the armed pass,
// on the hook's `want`-th call there (pipelined: the second group's, while
// the first group's request of that layer is on the wire).
typedef struct {
    s_nodes_t *ns;
    bool armed;
    int seen, want;
} s_killer_t;

static void s_kill_hook(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *sel, uint32_t k) {
    (void)x, (void)n, (void)sel, (void)k;
    s_killer_t *kl = ctx;
    if (!kl->armed || layer != 1 || ++kl->seen != kl->want) return;
    kill(kl->ns->nodes.procs[1].pid, SIGKILL);
    waitpid(kl->ns->nodes.procs[1].pid, NULL, 0);
    kl->ns->nodes.procs[1].pid = 0;
    kl->armed = false;
}

// Batched greedy decoding of n_seq streams through the cluster of ns (NULL:
// one machine), pipelined or not: every prompt in one pass (a sequence's
// rows after one another, so the cut between the two groups may fall inside
// one), then `steps` passes of one row per stream. When kill_at >= 0, node
// 1 is killed in the middle of that step (s_killer_t). All logits in order
// (*n_rows rows); the requests node 0 was sent in *requests.
static float *s_streams(const mc_model_t *m, s_nodes_t *ns, bool pipeline, uint32_t n_seq, int kill_at,
                        size_t *n_rows, uint64_t *requests) {
    char err[MC_ERR_LEN];
    enum { PROMPT = 6, STEPS = 8, MAXS = 8 };
    assert_true(n_seq <= MAXS);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 32, ep.n_seq = n_seq, ep.n_threads = 2, ep.pipeline = pipeline;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = NULL;
    if (ns) {
        if (!(c = mc_cluster_new(ns->cfg, m, mc_engine_matmul(e), NULL, err))) fail_msg("cluster: %s", err);
        mc_engine_set_experts(e, mc_cluster_experts(c));
    }
    s_killer_t killer = {ns, false, 0, pipeline && n_seq > 1 ? 2 : 1};
    mc_engine_set_layer_hook(e, s_kill_hook, &killer);
    const uint32_t nv = m->hp.n_vocab;
    float *out = malloc((size_t)n_seq * (PROMPT + STEPS) * nv * sizeof(float));
    int32_t ids[MAXS * PROMPT];
    uint32_t seq[MAXS * PROMPT], pos[MAXS * PROMPT];
    uint8_t want[MAXS * PROMPT];
    size_t done = 0;
    uint32_t n = 0;
    for (uint32_t s = 0; s < n_seq; s++)
        for (uint32_t p = 0; p < PROMPT; p++, n++)
            ids[n] = (int32_t)(1 + (s * 37 + p * 11) % (nv - 1)), seq[n] = s, pos[n] = p;
    for (int step = 0;; step++) {
        killer.armed = step == kill_at;
        memset(want, 1, n);
        const mc_engine_batch_t b = {ids, seq, pos, want, n};
        if (mc_engine_decode(e, &b, out + done * nv, err)) fail_msg("decode: %s", err);
        assert_false(killer.armed); // the kill happened when it was armed
        const float *last = out + done * nv;
        done += n;
        if (step == STEPS) break;
        // Each stream's greedy token after its last row.
        int32_t next[MAXS];
        for (uint32_t r = 0; r < n; r++) {
            int32_t best = 0;
            for (uint32_t v = 1; v < nv; v++)
                if (last[(size_t)r * nv + v] > last[(size_t)r * nv + best]) best = (int32_t)v;
            next[seq[r]] = best;
        }
        for (uint32_t s = 0; s < n_seq; s++) ids[s] = next[s], seq[s] = s, pos[s] = (uint32_t)(PROMPT + step);
        n = n_seq;
    }
    *n_rows = done;
    if (c) {
        mc_cluster_node_stats_t st;
        mc_cluster_node_stats(c, 0, &st);
        *requests = st.requests;
        mc_cluster_node_stats(c, 1, &st);
        assert_int_equal(st.deaths, kill_at >= 0 ? 1 : 0);
    }
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    return out;
}

// Pipelined passes through two nodes (and experts of the coordinator's
// own) give one machine's bits for 1, 3 and 8 streams; with more than one
// row a pass, each group is its own request (more requests: the pipeline
// did run). A node killed in the middle of a pass (pipelined: while the
// first group's request to it is on the wire) falls back as without the
// pipeline: the same tokens and logits.
static void test_pipeline_streams_exact(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.n_layer = 3, mp.seed = 23; // Mixtral: 8 experts, 2 used
    snprintf(path, sizeof path, "%s/pipeline.gguf", s_dir);
    if (mc_mkmodel_write(&mp, path, err)) fail_msg("%s", err);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-2", NULL}, {"3-5", NULL}};
    static const uint32_t streams[] = {1, 3, 8};
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        const uint32_t n_seq = streams[i];
        s_start(&ns, path, p, 2, MC_WIRE_F32, "6-7");
        ns.cfg->timeout_ms = 300, ns.cfg->retry_ms = 0;
        size_t n_ref, n_plain, n_pipe, n_kill;
        uint64_t req_plain = 0, req_pipe = 0, req_kill = 0;
        float *ref = s_streams(m, NULL, false, n_seq, -1, &n_ref, &req_plain);
        float *plain = s_streams(m, &ns, false, n_seq, -1, &n_plain, &req_plain);
        float *pipe = s_streams(m, &ns, true, n_seq, -1, &n_pipe, &req_pipe);
        float *killed = s_streams(m, &ns, true, n_seq, 3, &n_kill, &req_kill);
        assert_true(n_plain == n_ref && n_pipe == n_ref && n_kill == n_ref);
        const size_t bytes = n_ref * m->hp.n_vocab * sizeof(float);
        assert_memory_equal(plain, ref, bytes);
        assert_memory_equal(pipe, ref, bytes);
        assert_memory_equal(killed, ref, bytes);
        // Each group of a cut pass is a request of its own (one stream: only
        // the prompt pass is cut, single-row steps are not).
        assert_true(req_pipe > req_plain);
        printf("[cluster] pipeline %u streams: node 0 sent %llu requests (%llu unpipelined), same bits, "
               "node killed within step 3: same bits\n",
               n_seq, (unsigned long long)req_pipe, (unsigned long long)req_plain);
        free(ref), free(plain), free(pipe), free(killed);
        s_stop(&ns);
    }
    mc_model_destroy(&m);
}


// A placement built in code: the nodes of ns with other experts.
static mc_cluster_config_t *s_replace(const s_nodes_t *ns, const char *const *experts) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->wire = ns->cfg->wire;
    for (size_t i = 0; i < ns->nodes.n; i++) {
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(experts[i], &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(cfg, ns->cfg->nodes[i].name, ns->cfg->nodes[i].endpoint, &ex, NULL, err),
                         MC_OK);
    }
    return cfg;
}

// A live coordinator hands its nodes a new placement (same logits after);
// a second coordinator with another placement is refused by the nodes
// while the first keeps its lease with heartbeats (it serves without
// them), and accepted at once when the first exits (its Release).
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
    ns.cfg->timeout_ms = 300; // how long the second coordinator asks busy nodes again (under the lease)
    ns.cfg->retry_ms = 60000;  // and then no more: they stay the first one's
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
    mc_engine_set_experts(e, mc_cluster_experts(c));
    assert_false(mc_cluster_holds(c, 0, 1, 5));

    static const char *const moved[] = {"0-5", "6-7"};
    mc_cluster_config_t *cfg2 = s_replace(&ns, moved);
    assert_int_equal(mc_cluster_place(c, cfg2, err), MC_OK);
    assert_true(mc_cluster_holds(c, 0, 1, 5));
    assert_false(mc_cluster_holds(c, 1, 1, 5));
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);

    // Another coordinator with the old placement: refused by the nodes, also
    // after more than a lease, since the first one's heartbeats keep it. It
    // still starts, computing every expert itself (the same logits).
    mc_engine_t *e2 = mc_engine_new(m, &ep, err);
    for (int i = 0; i < 10; i++) {
        mc_experts_tick(mc_cluster_experts(c));
        s_sleep_ms(100);
    }
    mc_cluster_t *c2 = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e2), NULL, err);
    if (!c2) fail_msg("%s", err);
    mc_engine_set_experts(e2, mc_cluster_experts(c2));
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c2, 0, &st);
    assert_false(st.alive);
    assert_int_equal(mc_engine_eval(e2, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);
    mc_cluster_destroy(&c2);
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

    // The first coordinator exits: it releases its nodes, so the next one's
    // placement is accepted at once, well before the lease (600 ms) ends.
    mc_cluster_destroy(&c);
    const double t0 = mc_clock_ms();
    c2 = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e2), NULL, err);
    if (!c2) fail_msg("%s", err);
    mc_cluster_node_stats(c2, 0, &st);
    assert_true(st.alive);
    assert_true(mc_clock_ms() - t0 < 400);
    mc_engine_set_experts(e2, mc_cluster_experts(c2));
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
    mc_engine_set_experts(l.e, mc_cluster_experts(l.c));
    s_life_kill(&ns, 1);
    mc_cluster_node_stats_t st;
    for (int i = 0; i < 100; i++) {
        mc_experts_tick(mc_cluster_experts(l.c));
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

// Dead nodes are noticed by the transport, all at once and well inside
// the request timeout: one killed (its connection closes) and one stopped
// (SIGSTOP: silent, its heartbeats stop) while a run goes on cost one
// dead_ms together, not a timeout_ms each; the logits do not change.
static void test_dead_nodes_at_once(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-2", NULL}, {"3-5", NULL}, {"6-7", NULL}};
    s_start(&ns, path, p, 3, MC_WIRE_F32, NULL);
    ns.cfg->timeout_ms = 8000;
    ns.cfg->dead_ms = 600;
    ns.cfg->retry_ms = 0;
    s_load_ids(s_prompts[1]);
    int32_t g[1];
    float *ref = s_logits(m, NULL, g, 0);
    const size_t bytes = s_n_ids * m->hp.n_vocab * sizeof(float);
    float *got = malloc(bytes);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_cluster_t *c = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_engine_set_experts(e, mc_cluster_experts(c));
    kill(ns.nodes.procs[0].pid, SIGKILL);
    kill(ns.nodes.procs[1].pid, SIGSTOP);
    const double t0 = mc_clock_ms();
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    const double took = mc_clock_ms() - t0;
    kill(ns.nodes.procs[1].pid, SIGCONT);
    assert_memory_equal(got, ref, bytes);
    printf("[cluster] one node killed, one stopped: noticed in %.0f ms (dead_ms 600, timeout_ms 8000)\n", took);
    assert_true(took < 2500);
    mc_cluster_node_stats_t st;
    for (size_t i = 0; i < 2; i++) {
        mc_cluster_node_stats(c, i, &st);
        assert_false(st.alive);
        assert_int_equal(st.deaths, 1);
    }
    mc_cluster_node_stats(c, 2, &st);
    assert_true(st.alive);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    free(ref), free(got);
    s_stop(&ns);
    mc_model_destroy(&m);
}

// A node that stalls while its transport stays up (dead_ms off here, as on
// a node swapping or starved of CPU) is not waited for: past max(slow_ms,
// 4 x its usual time) its share is computed here, it sits out a while (it
// is not lost: no probe, no new placement), and then gets work again.
static void test_slow_node_benched(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"0-3", NULL}, {"4-7", NULL}};
    s_start(&ns, path, p, 2, MC_WIRE_F32, NULL);
    ns.cfg->timeout_ms = 8000;
    ns.cfg->dead_ms = 0;
    ns.cfg->slow_ms = 150;
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
    mc_engine_set_experts(e, mc_cluster_experts(c));
    for (int i = 0; i < 4; i++) { // its usual time: a few answers per layer
        assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
        assert_memory_equal(got, ref, bytes);
    }
    kill(ns.nodes.procs[1].pid, SIGSTOP);
    double t0 = mc_clock_ms();
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    const double took = mc_clock_ms() - t0;
    assert_memory_equal(got, ref, bytes);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 1, &st);
    printf("[cluster] a stalled node: run of %zu tokens took %.0f ms (slow_ms 150, timeout_ms 8000)\n", s_n_ids, took);
    assert_true(took < 2000);
    assert_true(st.alive);
    assert_true(st.benched);
    assert_int_equal(st.slow, 1);
    assert_int_equal(st.hedged, 1);
    assert_int_equal(st.deaths, 0);
    const uint64_t before = st.requests;
    kill(ns.nodes.procs[1].pid, SIGCONT);
    s_sleep_ms(1100); // the first bench: 1 s
    mc_experts_tick(mc_cluster_experts(c));
    assert_int_equal(mc_engine_eval(e, s_ids, s_n_ids, 0, MC_LOGITS_ALL, got, err), MC_OK);
    assert_memory_equal(got, ref, bytes);
    mc_cluster_node_stats(c, 1, &st);
    assert_false(st.benched);
    assert_true(st.requests > before);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    free(ref), free(got);
    s_stop(&ns);
    mc_model_destroy(&m);
}

// A node that takes longer to load its share than timeout_ms is waited for
// while it reports progress (here a scripted node: Progress every 100 ms
// for 1.2 s, then Ready, against timeout_ms 400); with load_timeout_ms set
// below its loading time it is given up (and the start goes on without it).
typedef struct {
    void *zctx;
    const mc_model_t *m;
    int load_ms;
    char endpoint[128];
    atomic_int stop;
    atomic_int released;
    pthread_t thread;
    // As a node without a model file (cache): it says so until it takes
    // the model's metadata, and leaves the first info_drops ModelInfo
    // messages unanswered (a metadata lost on its way, or a node that
    // stalled on it).
    bool cache;
    int info_drops;
    atomic_int hellos, infos;
} s_loader_t;

static void s_loader_send(void *sock, zmq_msg_t *id, const mc_wire_msg_t *msg) {
    uint8_t *buf;
    size_t len;
    char err[MC_ERR_LEN];
    if (mc_wire_encode(msg, &buf, &len, err)) return;
    zmq_send(sock, zmq_msg_data(id), zmq_msg_size(id), ZMQ_SNDMORE);
    zmq_send(sock, buf, len, 0);
    free(buf);
}

static void *s_loader_run(void *arg) {
    s_loader_t *ld = arg;
    void *sock = zmq_socket(ld->zctx, ZMQ_ROUTER);
    int linger = 0, rcv = 50;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &rcv, sizeof rcv);
    zmq_bind(sock, "tcp://127.0.0.1:*");
    size_t len = sizeof ld->endpoint;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ld->endpoint, &len);
    const mc_wire_limits_t lim = mc_wire_limits(ld->m);
    while (!atomic_load(&ld->stop)) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, sock, 0) < 0) {
            zmq_msg_close(&id);
            continue;
        }
        zmq_msg_init(&body);
        zmq_msg_recv(&body, sock, 0);
        mc_wire_msg_t in, out = {0};
        char err[MC_ERR_LEN];
        if (mc_wire_decode(&lim, zmq_msg_data(&body), zmq_msg_size(&body), &in, NULL, err) == MC_OK) {
            out.request_id = in.request_id;
            const bool info = in.kind == MC_WIRE_MSG_MODEL_INFO;
            if (info) atomic_fetch_add(&ld->infos, 1);
            if (in.kind == MC_WIRE_MSG_HELLO) atomic_fetch_add(&ld->hellos, 1);
            if (info && atomic_load(&ld->infos) <= ld->info_drops) {
                // unanswered
            } else if (in.kind == MC_WIRE_MSG_HELLO || info) {
                // It has the model's shape now (unless that metadata is of
                // another model, which the coordinator is then told).
                if (info) ld->cache = in.u.model_info.fingerprint != mc_model_fingerprint(ld->m);
                out.kind = MC_WIRE_MSG_HELLO;
                out.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION,
                                                .fingerprint = ld->cache ? 0 : mc_model_fingerprint(ld->m),
                                                .name = "loader", .threads = 1, .cache = ld->cache};
                s_loader_send(sock, &id, &out);
            } else if (in.kind == MC_WIRE_MSG_ASSIGN) {
                out.kind = MC_WIRE_MSG_PROGRESS;
                for (int t = 0; t < ld->load_ms && !atomic_load(&ld->stop); t += 100) {
                    out.u.progress = (mc_wire_progress_t){(uint64_t)t, (uint64_t)ld->load_ms, 0, 0};
                    s_loader_send(sock, &id, &out);
                    s_sleep_ms(100);
                }
                out.kind = MC_WIRE_MSG_READY;
                out.u.ready = (mc_wire_ready_t){.resident_bytes = 1, .n_pairs = 1};
                s_loader_send(sock, &id, &out);
            } else if (in.kind == MC_WIRE_MSG_HEARTBEAT) {
                out.kind = MC_WIRE_MSG_HEARTBEAT;
                out.u.heartbeat = in.u.heartbeat;
                s_loader_send(sock, &id, &out);
            } else if (in.kind == MC_WIRE_MSG_RELEASE) {
                atomic_store(&ld->released, 1);
            }
            mc_wire_msg_free(&in);
        }
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
    zmq_close(sock);
    return NULL;
}

// A scripted loader node on its own thread, and a cluster file that places
// expert 0 on it (1-7 local) with these timeouts.
static mc_cluster_config_t *s_loader_start(s_loader_t *ld, uint32_t timeout_ms, uint32_t retry_ms) {
    char err[MC_ERR_LEN];
    ld->zctx = zmq_ctx_new();
    assert_int_equal(pthread_create(&ld->thread, NULL, s_loader_run, ld), 0);
    while (!ld->endpoint[0]) s_sleep_ms(5);
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = timeout_ms;
    cfg->retry_ms = retry_ms;
    mc_expert_set_t one;
    assert_int_equal(mc_expert_set_parse("0", &one, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(cfg, "loader", ld->endpoint, &one, NULL, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("1-7", &cfg->local_experts, err), MC_OK);
    return cfg;
}

static void s_loader_stop(s_loader_t *ld) {
    atomic_store(&ld->stop, 1);
    pthread_join(ld->thread, NULL);
    zmq_ctx_term(ld->zctx);
}

static void test_loading_reports_progress(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_loader_t ld;
    memset(&ld, 0, sizeof ld);
    ld.m = m;
    ld.load_ms = 1200;
    mc_cluster_config_t *cfg = s_loader_start(&ld, 400, 0);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 0, &st);
    assert_true(st.alive); // loaded in 1.2 s against timeout_ms 400
    mc_cluster_destroy(&c);
    for (int i = 0; i < 100 && !atomic_load(&ld.released); i++) s_sleep_ms(5);
    assert_true(atomic_load(&ld.released)); // its exit released the node
    cfg->load_timeout_ms = 500;
    const double t0 = mc_clock_ms();
    c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_cluster_node_stats(c, 0, &st);
    assert_false(st.alive); // given up at load_timeout_ms
    assert_true(mc_clock_ms() - t0 < 1000);
    mc_cluster_destroy(&c);
    s_loader_stop(&ld);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// A node without a model file that got the Hello but left the model's
// metadata (ModelInfo) unanswered: the probe gives up on it after
// timeout_ms and asks again retry_ms later with a fresh connection, where
// the metadata is taken and the node joins (a lost ModelInfo delays the
// join; it never stops it).
static void test_unanswered_model_info_retried(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("tiny-f32.gguf", path, sizeof path);
    if (!m) skip();
    static s_loader_t ld;
    memset(&ld, 0, sizeof ld);
    ld.m = m;
    ld.cache = true;
    ld.info_drops = 1;
    mc_cluster_config_t *cfg = s_loader_start(&ld, 300, 100);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err); // a metadata unanswered is no refusal: the start goes on without the node
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 0, &st);
    assert_false(st.alive);
    assert_int_equal(atomic_load(&ld.infos), 1);
    for (int k = 0; k < 500 && !st.alive; k++) { // 5 s at most
        s_sleep_ms(10);
        mc_experts_tick(mc_cluster_experts(c));
        mc_cluster_node_stats(c, 0, &st);
    }
    assert_true(st.alive);
    assert_int_equal(atomic_load(&ld.infos), 2);  // the metadata sent again
    assert_true(atomic_load(&ld.hellos) >= 2);    // on a fresh handshake
    mc_cluster_destroy(&c);
    s_loader_stop(&ld);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// What the operator is told at start: a lossy wire for the file's experts,
// and a node that answers under another name than the cluster file's (two
// endpoints swapped); neither stops the start.
static void test_start_warnings(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture("small-q4_k_m.gguf", path, sizeof path);
    if (!m) skip();
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    s_place_t p[] = {{"all", NULL}};
    s_start(&ns, path, p, 1, MC_WIRE_Q8_0, NULL);
    free(ns.cfg->nodes[0].name);
    ns.cfg->nodes[0].name = strdup("pi-7");
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 16;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    FILE *log = tmpfile();
    mc_cluster_t *c = mc_cluster_new(ns.cfg, m, mc_engine_matmul(e), log, err);
    if (!c) fail_msg("%s", err);
    mc_cluster_destroy(&c);
    char text[4096] = "";
    rewind(log);
    text[fread(text, 1, sizeof text - 1, log)] = 0;
    fclose(log);
    if (!strstr(text, "wire q8_0 is lossy for") || !strstr(text, "Q4_K weights take q8_k rows"))
        fail_msg("no lossy-wire warning:\n%s", text);
    if (!strstr(text, "node pi-7 at tcp://127.0.0.1:") || !strstr(text, "calls itself 'node-1'"))
        fail_msg("no name warning:\n%s", text);
    mc_engine_destroy(&e);
    s_stop(&ns);
    mc_model_destroy(&m);
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
    mc_test_nodes_init(&ns.nodes);
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
        np.model = path, np.name = name, np.secret_key = nkey, np.authorized_keys = auth;
        mc_test_nodes_start(&ns.nodes, i, &np);
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(i ? "4-7" : "0-3", &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(ns.cfg, name, ns.nodes.procs[i].endpoint, &ex, NULL, err), MC_OK);
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
    assert_int_equal(mc_cluster_config_add_node(bad, "secure-1", ns.nodes.procs[0].endpoint, NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_set_node_key(bad, 0, nk[0].pub, err), MC_OK);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 64;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    // Key mistakes are named as such at once, not left to look like a dead
    // host: our key not authorized by the node...
    double t0 = mc_clock_ms();
    assert_null(mc_cluster_new(bad, m, mc_engine_matmul(e), NULL, err));
    if (!strstr(err, "refused our key") || !strstr(err, "--authorized-keys")) fail_msg("%s", err);
    assert_true(mc_clock_ms() - t0 < 450);
    // ...the wrong public key for the node (another node's)...
    assert_int_equal(mc_cluster_config_set_secret_key(bad, ns.cfg->secret_key_resolved, err), MC_OK);
    assert_int_equal(mc_cluster_config_set_node_key(bad, 0, nk[1].pub, err), MC_OK);
    assert_null(mc_cluster_new(bad, m, mc_engine_matmul(e), NULL, err));
    if (!strstr(err, "secure-1") || !strstr(err, "public_key")) fail_msg("%s", err);
    // ...and no keys at all for a node that requires them.
    mc_cluster_config_t *plain = mc_cluster_config_new();
    plain->timeout_ms = 500;
    assert_int_equal(mc_cluster_config_add_node(plain, "secure-1", ns.nodes.procs[0].endpoint, NULL, NULL, err), MC_OK);
    assert_null(mc_cluster_new(plain, m, mc_engine_matmul(e), NULL, err));
    if (!strstr(err, "secure-1") || !strstr(err, "CURVE keys")) fail_msg("%s", err);
    mc_cluster_config_destroy(&plain);
    // A key given to a node without the coordinator's own is refused up front.
    mc_cluster_config_t *half = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_add_node(half, "secure-1", ns.nodes.procs[0].endpoint, NULL, NULL, err), MC_OK);
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

// Whether this machine has the IPv6 loopback address (/proc/net/if_inet6
// lists ::1 as 32 hex digits).
static bool s_have_ipv6_loopback(void) {
    FILE *f = fopen("/proc/net/if_inet6", "r"); // a size-0 /proc file: read by lines
    char line[256];
    bool have = false;
    while (f && !have && fgets(line, sizeof line, f)) have = !strncmp(line, "00000000000000000000000000000001 ", 33);
    if (f) fclose(f);
    return have;
}

// IPv6 and host names: a node on tcp://[::1]:* and one on tcp://localhost:*
// (bound on each address the name has) answer through the coordinator's
// sockets with the logits of one machine; so does the localhost node reached
// at each of its addresses. The [::1] node only where the machine has ::1.
static void test_ipv6_and_host_names(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    snprintf(path, sizeof path, "%s/net.gguf", s_dir);
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    assert_int_equal(mc_mkmodel_write(&mp, path, err), MC_OK);
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    bool v6 = s_have_ipv6_loopback();
    const char *listen[] = {"tcp://localhost:*", "tcp://[::1]:*"};
    const char *announced[] = {"tcp://localhost:", "tcp://[::1]:"};
    static s_nodes_t ns; // static: the teardown reads it after a failed assertion left this frame
    memset(&ns, 0, sizeof ns);
    mc_test_nodes_init(&ns.nodes);
    s_live = &ns;
    ns.cfg = mc_cluster_config_new();
    ns.cfg->timeout_ms = 10000;
    for (size_t i = 0; i < (v6 ? 2u : 1u); i++) {
        char name[32];
        snprintf(name, sizeof name, "net-%zu", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = path, np.name = name, np.listen = listen[i];
        mc_test_nodes_start(&ns.nodes, i, &np);
        assert_memory_equal(ns.nodes.procs[i].endpoint, announced[i], strlen(announced[i]));
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(i ? "4-7" : v6 ? "0-3" : "0-7", &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(ns.cfg, name, ns.nodes.procs[i].endpoint, &ex, NULL, err), MC_OK);
    }
    s_n_ids = 0;
    for (int32_t t = 1; t <= 12; t++) s_ids[s_n_ids++] = (t * 37) % (int32_t)m->hp.n_vocab;
    int32_t g1[4], g2[4];
    float *ref = s_logits(m, NULL, g1, 4);
    float *got = s_logits(m, ns.cfg, g2, 4);
    assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
    assert_memory_equal(g1, g2, sizeof g1);
    free(got);
    // The localhost node at each address the name resolves to, one at a time.
    const char *port = strrchr(ns.nodes.procs[0].endpoint, ':') + 1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    assert_int_equal(getaddrinfo("localhost", NULL, &hints, &res), 0);
    size_t addrs = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char addr[NI_MAXHOST], ep[NI_MAXHOST + 32];
        assert_int_equal(getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST), 0);
        if (ai->ai_family == AF_INET6 && !v6) continue;
        snprintf(ep, sizeof ep, ai->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", addr, port);
        mc_cluster_config_t *one = mc_cluster_config_new(); // net-1's placement, the rest here
        one->timeout_ms = 10000;
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(v6 ? "0-3" : "0-7", &ex, err), MC_OK);
        if (v6) assert_int_equal(mc_expert_set_parse("4-7", &one->local_experts, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(one, "net-1", ep, &ex, NULL, err), MC_OK);
        got = s_logits(m, one, g2, 4);
        mc_cluster_config_destroy(&one);
        assert_memory_equal(got, ref, s_n_ids * m->hp.n_vocab * sizeof(float));
        free(got);
        addrs++;
    }
    freeaddrinfo(res);
    assert_true(addrs >= 1);
    printf("[cluster] %s node on localhost (also at its %zu address(es)): logits bit-identical\n",
           v6 ? "a node on [::1] and a" : "no ::1 here: a", addrs);
    free(ref);
    s_stop(&ns);
    mc_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_f32_two_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_mxfp4_two_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_mxfp4_bad_scale_node, s_stop_live),
        cmocka_unit_test_teardown(test_pipeline_streams_exact, s_stop_live),
        cmocka_unit_test_teardown(test_f32_replicas_layers_local, s_stop_live),
        cmocka_unit_test_teardown(test_qwen3moe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_olmoe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_qwen2moe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_qwen2moe_generated_q4_0, s_stop_live),
        cmocka_unit_test_teardown(test_deepseek2_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_deepseek2_generated_q4_0, s_stop_live),
        cmocka_unit_test_teardown(test_deepseek2v3_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_deepseek2v3_generated_q4_0, s_stop_live),
        cmocka_unit_test_teardown(test_glm4moe_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_glm4moe_generated, s_stop_live),
        cmocka_unit_test_teardown(test_interleaved_generated, s_stop_live),
        cmocka_unit_test_teardown(test_gptoss_three_nodes, s_stop_live),
        cmocka_unit_test_teardown(test_gptoss_generated_mxfp4, s_stop_live),
        cmocka_unit_test_teardown(test_kv_f16_cluster, s_stop_live_f32),
        cmocka_unit_test_teardown(test_generated_largest_shapes, s_stop_live),
        cmocka_unit_test_teardown(test_planned_placement_exact, s_stop_live),
        cmocka_unit_test_teardown(test_q8_0_wire_exact, s_stop_live),
        cmocka_unit_test_teardown(test_auto_wire_exact, s_stop_live),
        cmocka_unit_test_teardown(test_lossy_wires, s_stop_live),
        cmocka_unit_test_teardown(test_kill_f32, s_stop_live),
        cmocka_unit_test_teardown(test_kill_auto, s_stop_live),
        cmocka_unit_test_teardown(test_kill_q8_0_lossy, s_stop_live),
        cmocka_unit_test_teardown(test_other_model_refused, s_stop_live),
        cmocka_unit_test_teardown(test_other_weights_refused, s_stop_live),
        cmocka_unit_test_teardown(test_starts_with_node_down, s_stop_live),
        cmocka_unit_test_teardown(test_node_killed_and_back, s_stop_live),
        cmocka_unit_test_teardown(test_node_restarted_quickly, s_stop_live),
        cmocka_unit_test_teardown(test_placement_changes, s_stop_live),
        cmocka_unit_test_teardown(test_heartbeat_notices_dead_node, s_stop_live),
        cmocka_unit_test_teardown(test_curve_cluster, s_stop_live),
        cmocka_unit_test_teardown(test_dead_nodes_at_once, s_stop_live),
        cmocka_unit_test_teardown(test_slow_node_benched, s_stop_live),
        cmocka_unit_test(test_loading_reports_progress),
        cmocka_unit_test(test_unanswered_model_info_retried),
        cmocka_unit_test_teardown(test_start_warnings, s_stop_live),
        cmocka_unit_test_teardown(test_ipv6_and_host_names, s_stop_live),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
