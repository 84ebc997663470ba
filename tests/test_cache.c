/*
 * test_cache: nodes without a model file (moe-expert --cache-dir), as real
 * processes on 127.0.0.1 against an in-process coordinator.
 *
 * Nodes started with empty cache folders fetch exactly their share from the
 * coordinator (the bytes its transfer socket sent equal the share's), serve
 * it, and the logits of every model family (generated models, the project's
 * Qwen3-MoE and OLMoE fixtures, the shared Mixtral fixtures when present)
 * equal one machine's to the bit. A second start with the warm caches
 * transfers nothing; a byte flipped in a cache file makes exactly that
 * expert fetched again; a coordinator gone mid-transfer and a new one
 * resume from what the node has (fewer bytes than the share); a node killed
 * mid-transfer and started again resumes too; a cache bound smaller than
 * the share refuses the placement, saying so; a model with the same header
 * but other weights is told apart by the hashes and fetched again; another
 * model's file evicts the first one's to stay within the bound; hostile
 * messages to a node
 * without a model are refused or dropped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "experts.h"
#include "expert_file.h"
#include "node.h"
#include "wire.h"
#include "mkmodel.h"
#include "model.h"
#include "nodeproc.h"
#include "testnodes.h"
#include "testutil.h"

#define MAX_NODES 3

static char s_dir[256];

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
    mc_test_nodes_t nodes;
    char cache[MAX_NODES][512];
    char endpoint[MAX_NODES][256];
    const char *experts[MAX_NODES];
} s_nodes_t;

static s_nodes_t *s_live; // stopped by the per-test teardown after a failed assertion

static int s_stop_live(void **state) {
    (void)state;
    if (s_live) mc_test_nodes_stop(&s_live->nodes);
    s_live = NULL;
    return 0;
}

static void s_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Start node i on its cache folder (and its endpoint, once it has one: a
// restarted node keeps its port).
static unsigned s_cache_mb; // --cache-mb of the nodes started (0: none)

static void s_node_start(s_nodes_t *ns, size_t i, unsigned chunk_kib) {
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.cache_dir = ns->cache[i], np.lease_ms = 400, np.fetch_chunk_kib = chunk_kib;
    np.cache_mb = s_cache_mb;
    char listen[256];
    snprintf(listen, sizeof listen, "%s", ns->endpoint[i]);
    if (listen[0]) np.listen = listen;
    mc_test_nodes_start(&ns->nodes, i, &np);
    memcpy(ns->endpoint[i], ns->nodes.procs[i].endpoint, sizeof ns->endpoint[i]);
}

// n nodes with empty cache folders tag-0 .. tag-(n-1).
static void s_nodes(s_nodes_t *ns, const char *tag, const char *const *experts, size_t n, unsigned chunk_kib) {
    memset(ns, 0, sizeof *ns);
    mc_test_nodes_init(&ns->nodes);
    s_live = ns;
    for (size_t i = 0; i < n; i++) {
        snprintf(ns->cache[i], sizeof ns->cache[i], "%s/%s-%zu", s_dir, tag, i);
        ns->experts[i] = experts[i];
        s_node_start(ns, i, chunk_kib);
    }
}

static void s_nodes_stop(s_nodes_t *ns) {
    mc_test_nodes_stop(&ns->nodes);
    s_live = NULL;
}

static mc_cluster_config_t *s_config(const s_nodes_t *ns, uint32_t mbps) {
    char err[MC_ERR_LEN], name[32];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 10000;
    cfg->retry_ms = 200;
    cfg->transfer_mbps = mbps;
    for (size_t i = 0; i < ns->nodes.n; i++) {
        snprintf(name, sizeof name, "node-%zu", i + 1);
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(ns->experts[i], &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(cfg, name, ns->endpoint[i], &ex, NULL, err), MC_OK);
    }
    return cfg;
}

// Bytes of node i's share (its experts' slices).
static uint64_t s_share(const mc_model_t *m, const mc_cluster_config_t *cfg, size_t i) {
    uint64_t b = 0;
    for (uint32_t l = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++)
            if (mc_cluster_node_holds(&cfg->nodes[i], l, e)) b += mc_model_expert_bytes(m, l, e);
    return b;
}

// Tick the cluster until every node is alive (or fail after ms).
static void s_wait_alive(mc_cluster_t *c, double ms) {
    const double until = mc_clock_ms() + ms;
    for (;;) {
        mc_experts_tick(mc_cluster_experts(c));
        size_t alive = 0;
        for (size_t i = 0; i < mc_cluster_n_nodes(c); i++) {
            mc_cluster_node_stats_t st;
            mc_cluster_node_stats(c, i, &st);
            alive += st.alive;
        }
        if (alive == mc_cluster_n_nodes(c)) return;
        if (mc_clock_ms() > until) fail_msg("%zu of %zu nodes alive after %.0f ms", alive, mc_cluster_n_nodes(c), ms);
        s_sleep_ms(10);
    }
}

static const int32_t s_ids[] = {1, 300, 17, 42, 259, 100, 7, 480};
#define N_IDS (sizeof s_ids / sizeof s_ids[0])

// All logits of ids: locally (c NULL) or through cluster c with every node
// serving.
static float *s_logits(const mc_model_t *m, const mc_cluster_config_t *cfg, const int32_t *ids, size_t n,
                       uint64_t *sent) {
    char err[MC_ERR_LEN];
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_ctx = 300;
    ep.n_threads = 1;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = NULL;
    if (cfg) {
        if (!(c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err))) fail_msg("cluster: %s", err);
        s_wait_alive(c, 30000);
        mc_engine_set_experts(e, mc_cluster_experts(c));
    }
    const uint32_t nv = m->hp.n_vocab;
    float *out = malloc(n * nv * sizeof(float));
    if (mc_engine_eval(e, ids, (uint32_t)n, 0, MC_LOGITS_ALL, out, err)) fail_msg("eval: %s", err);
    if (c) {
        for (size_t i = 0; i < mc_cluster_n_nodes(c); i++) {
            mc_cluster_node_stats_t st;
            mc_cluster_node_stats(c, i, &st);
            assert_true(st.alive && st.requests > 0); // every node served its share
            if (sent) sent[i] = st.transfer_bytes;
        }
        mc_cluster_destroy(&c);
    }
    mc_engine_destroy(&e);
    return out;
}

static void s_gen(const char *label, mc_mkmodel_params_t *mp, char *path, size_t cap) {
    char err[MC_ERR_LEN];
    snprintf(path, cap, "%s/%s.gguf", s_dir, label);
    if (mc_mkmodel_write(mp, path, err)) fail_msg("%s", err);
}

// Empty caches through the cluster against one machine; then the same
// nodes restarted on their warm caches fetch nothing.
static void s_exact_cold_warm(const char *path, const char *tag, const char *const *experts, size_t n,
                              const int32_t *ids, size_t n_ids, bool warm) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    static s_nodes_t ns;
    s_nodes(&ns, tag, experts, n, 4);
    mc_cluster_config_t *cfg = s_config(&ns, 0);
    float *ref = s_logits(m, NULL, ids, n_ids, NULL);
    uint64_t sent[MAX_NODES];
    float *got = s_logits(m, cfg, ids, n_ids, sent);
    assert_memory_equal(got, ref, n_ids * m->hp.n_vocab * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_true(sent[i] == s_share(m, cfg, i)); // exactly the share, once
    free(got);
    if (warm) {
        s_nodes_stop(&ns);
        s_live = &ns;
        for (size_t i = 0; i < n; i++) s_node_start(&ns, i, 4);
        got = s_logits(m, cfg, ids, n_ids, sent);
        assert_memory_equal(got, ref, n_ids * m->hp.n_vocab * sizeof(float));
        for (size_t i = 0; i < n; i++) assert_true(sent[i] == 0);
        free(got);
    }
    printf("[cache] %-18s %zu nodes from empty caches: exact%s\n", tag, n, warm ? "; warm restart fetched 0 bytes" : "");
    s_nodes_stop(&ns);
    mc_cluster_config_destroy(&cfg);
    free(ref);
    mc_model_destroy(&m);
}

static void test_generated_cold_then_warm(void **state) {
    (void)state;
    char path[512];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q4_0, p.ffn = 256, p.n_layer = 3;
    s_gen("gen-q4_0", &p, path, sizeof path);
    const char *three[] = {"0-2", "3-5", "6-7"};
    s_exact_cold_warm(path, "gen-q4_0", three, 3, s_ids, N_IDS, true);
    // K-quants and a legacy (per-expert) layout, qwen3moe's routing.
    p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN3MOE, p.type = MC_DTYPE_Q4_K, p.dim = 256, p.ffn = 256, p.legacy_layout = true;
    p.n_expert = 16, p.n_expert_used = 4;
    s_gen("gen-q4_k-legacy", &p, path, sizeof path);
    const char *two[] = {"0-9", "6-15"}; // replicas: 6-9 on both
    s_exact_cold_warm(path, "gen-q4_k-legacy", two, 2, s_ids, N_IDS, false);
}

static void s_ids_file(const char *dir, const char *prompt, int32_t *ids, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.ids.txt", dir, prompt);
    char *txt = (char *)mc_test_read_file(path, NULL);
    assert_non_null(txt);
    *n = 0;
    for (char *q = txt, *end; *n < 64; q = end) {
        long v = strtol(q, &end, 10);
        if (end == q) break;
        ids[(*n)++] = (int32_t)v;
    }
    free(txt);
}

static void test_fixture_families(void **state) {
    (void)state;
    int32_t ids[64];
    size_t n;
    char path[512], dir[512];
    static const char *const arch[] = {"qwen3moe-f32", "olmoe-f32", "qwen2moe-f32", "glm4moe-f32"};
    static const char *const halves[][2] = {{"0-63", "64-127"}, {"0-31", "32-63"}, {"0-29", "30-59"}, {"0-7", "8-15"}};
    for (size_t a = 0; a < 4; a++) {
        snprintf(path, sizeof path, "%s/arch/%s.gguf", MC_REPO_FIXTURES, arch[a]);
        snprintf(dir, sizeof dir, "%s/arch/%s", MC_REPO_FIXTURES, arch[a]);
        s_ids_file(dir, "p0_fox", ids, &n);
        const char *two[] = {halves[a][0], halves[a][1]};
        s_exact_cold_warm(path, arch[a], two, 2, ids, n, false);
    }
    // The shared Mixtral fixtures (f32 and a K-quant mix), when present.
    static const char *const shared[] = {"tiny-f32.gguf", "small-q4_k_m.gguf"};
    for (size_t f = 0; f < 2; f++) {
        if (!mc_test_fixture(shared[f], path, sizeof path)) continue;
        mc_test_fixture("golden/tiny-f32", dir, sizeof dir);
        s_ids_file(dir, "p0_fox", ids, &n);
        const char *three[] = {"0-3", "2-5", "6-7"};
        s_exact_cold_warm(path, shared[f], three, 3, ids, n, false);
    }
}

// The first tensor offset of expert e of layer l's gate in an experts-only
// file: where to flip a byte.
static uint64_t s_gate_offset(const char *file, uint32_t l, uint32_t e) {
    char err[MC_ERR_LEN], name[64];
    mc_gguf_t *g = mc_gguf_open(file, err);
    if (!g) fail_msg("%s", err);
    snprintf(name, sizeof name, "blk.%u.ffn_gate.%u.weight", l, e);
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    assert_non_null(t);
    const uint64_t off = (uint64_t)(t->data - mc_gguf_base(g)) + 5;
    mc_gguf_destroy(&g);
    return off;
}

static void s_flip(const char *file, uint64_t off) {
    FILE *f = fopen(file, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void test_flipped_byte_fetched_again(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN], file[600];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0, p.ffn = 256;
    s_gen("flip", &p, path, sizeof path);
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    static s_nodes_t ns;
    const char *two[] = {"0-3", "4-7"};
    s_nodes(&ns, "flip", two, 2, 4);
    mc_cluster_config_t *cfg = s_config(&ns, 0);
    float *ref = s_logits(m, NULL, s_ids, N_IDS, NULL);
    uint64_t sent[MAX_NODES];
    free(s_logits(m, cfg, s_ids, N_IDS, sent));
    s_nodes_stop(&ns);
    // Expert 2 of layer 1 damaged in node-1's file.
    snprintf(file, sizeof file, "%s/%016llx.gguf", ns.cache[0], (unsigned long long)mc_model_fingerprint(m));
    s_flip(file, s_gate_offset(file, 1, 2));
    s_live = &ns;
    for (size_t i = 0; i < 2; i++) s_node_start(&ns, i, 4);
    float *got = s_logits(m, cfg, s_ids, N_IDS, sent);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    assert_true(sent[0] == mc_model_expert_bytes(m, 1, 2)); // that expert alone
    assert_true(sent[1] == 0);
    s_nodes_stop(&ns);
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// Transfer stats of node i, now.
static mc_cluster_node_stats_t s_stats(mc_cluster_t *c, size_t i) {
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, i, &st);
    return st;
}

// A model of a few MB, fetched at a capped rate so that a test can stop
// things in the middle.
static mc_model_t *s_slow_model(char *path, size_t cap) {
    char err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0, p.dim = 256, p.ffn = 512, p.n_layer = 2;
    s_gen("slow", &p, path, cap);
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    return m;
}

// The coordinator goes away in the middle of a transfer (its sockets close
// as a killed process's do) and a new one (another session) resumes it:
// the two together send about the share once, the second less than it.
static void test_coordinator_gone_mid_transfer(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_slow_model(path, sizeof path);
    static s_nodes_t ns;
    const char *one[] = {"all"};
    s_nodes(&ns, "coord-gone", one, 1, 16);
    mc_cluster_config_t *cfg = s_config(&ns, 8); // 8 Mbit/s: the share takes about 2 s
    const uint64_t share = s_share(m, cfg, 0);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = 1;
    ep.n_ctx = 300;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    assert_non_null(e);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    const double until = mc_clock_ms() + 20000;
    while (s_stats(c, 0).transfer_bytes < share / 3) {
        mc_experts_tick(mc_cluster_experts(c));
        s_sleep_ms(10);
        if (mc_clock_ms() > until) fail_msg("the transfer did not start");
    }
    assert_false(s_stats(c, 0).alive);
    const uint64_t first = s_stats(c, 0).transfer_bytes;
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    uint64_t sent[1];
    float *ref = s_logits(m, NULL, s_ids, N_IDS, NULL);
    cfg->transfer_mbps = 0;
    float *got = s_logits(m, cfg, s_ids, N_IDS, sent);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    printf("[cache] coordinator gone after %llu of %llu bytes; the next one sent %llu\n", (unsigned long long)first,
           (unsigned long long)share, (unsigned long long)sent[0]);
    assert_true(sent[0] < share && sent[0] > 0);
    assert_true(first + sent[0] <= share + 64 * 16384); // what was in flight at most, again
    s_nodes_stop(&ns);
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// A node killed (SIGKILL) in the middle of its transfer and started again
// on the same folder and port: the cluster brings it back, it resumes (the
// transfer sends less than the share the second time) and serves exactly.
static void test_node_killed_mid_transfer(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_slow_model(path, sizeof path);
    static s_nodes_t ns;
    const char *one[] = {"all"};
    s_nodes(&ns, "node-killed", one, 1, 16);
    mc_cluster_config_t *cfg = s_config(&ns, 8);
    const uint64_t share = s_share(m, cfg, 0);
    float *ref = s_logits(m, NULL, s_ids, N_IDS, NULL);
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = 1;
    ep.n_ctx = 300;
    mc_engine_t *e = mc_engine_new(m, &ep, err);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    double until = mc_clock_ms() + 20000;
    while (s_stats(c, 0).transfer_bytes < share / 3) {
        mc_experts_tick(mc_cluster_experts(c));
        s_sleep_ms(10);
        if (mc_clock_ms() > until) fail_msg("the transfer did not start");
    }
    kill(ns.nodes.procs[0].pid, SIGKILL);
    waitpid(ns.nodes.procs[0].pid, NULL, 0);
    ns.nodes.procs[0].pid = 0;
    const uint64_t before = s_stats(c, 0).transfer_bytes;
    s_node_start(&ns, 0, 16);
    s_wait_alive(c, 30000);
    const uint64_t again = s_stats(c, 0).transfer_bytes - before;
    printf("[cache] node killed after %llu of %llu bytes; restarted, it fetched %llu more\n", (unsigned long long)before,
           (unsigned long long)share, (unsigned long long)again);
    assert_true(again > 0 && again < share);
    mc_engine_set_experts(e, mc_cluster_experts(c));
    float *got = malloc(N_IDS * m->hp.n_vocab * sizeof(float));
    if (mc_engine_eval(e, s_ids, N_IDS, 0, MC_LOGITS_ALL, got, err)) fail_msg("%s", err);
    assert_memory_equal(got, ref, N_IDS * m->hp.n_vocab * sizeof(float));
    assert_true(s_stats(c, 0).requests > 0);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    s_nodes_stop(&ns);
    free(got), free(ref);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// A node without a model file, handed messages directly: it says it has
// nothing (cache flag), refuses metadata that does not bind or is of
// another model, takes the coordinator's, refuses a placement without
// tensor types, and drops slice data nobody asked for.
static mc_wire_msg_t s_call(mc_node_t *n, const mc_wire_limits_t *lim, const mc_wire_msg_t *in, bool *none) {
    uint8_t *req, *rep;
    size_t len, rlen;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_encode(in, &req, &len, err), MC_OK);
    assert_int_equal(mc_node_handle(n, "coord", 5, req, len, &rep, &rlen, err), MC_OK);
    free(req);
    mc_wire_msg_t out = {0};
    *none = rep == NULL;
    if (rep) {
        if (mc_wire_decode(lim, rep, rlen, &out, NULL, err)) fail_msg("reply: %s", err);
        free(rep);
    }
    return out;
}

static void test_node_hostile_messages(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN], dir[600];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    s_gen("hostile", &p, path, sizeof path);
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    snprintf(dir, sizeof dir, "%s/hostile-cache", s_dir);
    mc_node_params_t np = mc_node_params_default();
    np.cache_dir = dir, np.name = "h", np.threads = 1;
    mc_node_t *n = mc_node_new(&np, err);
    if (!n) fail_msg("%s", err);
    const mc_wire_limits_t lim = mc_wire_limits(m);
    bool none;
    mc_wire_msg_t hello = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1};
    hello.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "c"};
    mc_wire_msg_t r = s_call(n, &lim, &hello, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_HELLO);
    assert_true(r.u.hello.cache && r.u.hello.fingerprint == 0);
    mc_wire_msg_free(&r);
    // Metadata that is no GGUF; then a real one of another model.
    uint8_t junk[64] = "GGUF not really";
    mc_wire_msg_t info = {.kind = MC_WIRE_MSG_MODEL_INFO, .request_id = 2};
    info.u.model_info = (mc_wire_model_info_t){mc_model_fingerprint(m), junk, sizeof junk};
    r = s_call(n, &lim, &info, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_non_null(strstr(r.u.error.message, "does not bind"));
    mc_wire_msg_free(&r);
    uint8_t *blob;
    size_t blen;
    assert_int_equal(mc_expert_file_info(m, &blob, &blen, err), MC_OK);
    info.u.model_info = (mc_wire_model_info_t){mc_model_fingerprint(m) ^ 1, blob, blen};
    r = s_call(n, &lim, &info, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_non_null(strstr(r.u.error.message, "metadata is of model"));
    mc_wire_msg_free(&r);
    info.u.model_info.fingerprint ^= 1;
    r = s_call(n, &lim, &info, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_HELLO);
    assert_true(r.u.hello.fingerprint == mc_model_fingerprint(m));
    mc_wire_msg_free(&r);
    free(blob);
    // A placement without types (an older coordinator's).
    uint8_t held[2 * 8] = {1}, hashes[MC_WIRE_HASH_BYTES] = {0};
    mc_wire_msg_t as = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 3};
    as.u.assign = (mc_wire_assign_t){9, 2, 8, held, hashes, NULL};
    r = s_call(n, &lim, &as, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_non_null(strstr(r.u.error.message, "no tensor types"));
    mc_wire_msg_free(&r);
    // Slice data nobody asked for: dropped without a word.
    uint8_t data[16] = {0};
    mc_wire_msg_t sd = {.kind = MC_WIRE_MSG_SLICE_DATA, .request_id = 4};
    sd.u.slice_data = (mc_wire_slice_data_t){0, 0, 0, data, sizeof data};
    r = s_call(n, &lim, &sd, &none);
    assert_true(none);
    assert_true(mc_node_fetched_bytes(n) == 0);
    mc_node_destroy(&n);

    // A cache bound below the placement's size: refused, saying so.
    snprintf(dir, sizeof dir, "%s/bounded-cache", s_dir);
    np.cache_mb = 1;
    if (!(n = mc_node_new(&np, err))) fail_msg("%s", err);
    mc_wire_msg_free(&r);
    r = s_call(n, &lim, &hello, &none);
    mc_wire_msg_free(&r);
    assert_int_equal(mc_expert_file_info(m, &blob, &blen, err), MC_OK);
    info.u.model_info = (mc_wire_model_info_t){mc_model_fingerprint(m), blob, blen};
    r = s_call(n, &lim, &info, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_HELLO);
    mc_wire_msg_free(&r);
    free(blob);
    uint8_t all[2 * 8], many[16 * MC_WIRE_HASH_BYTES] = {0}, types[16 * 3];
    memset(all, 1, sizeof all);
    for (size_t i = 0; i < sizeof types; i++) types[i] = (uint8_t)m->layers[0].experts[0].gate.type;
    as.u.assign = (mc_wire_assign_t){9, 2, 8, all, many, types};
    r = s_call(n, &lim, &as, &none);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_non_null(strstr(r.u.error.message, "more than the cache's bound of 1.0 MiB"));
    mc_wire_msg_free(&r);
    mc_node_destroy(&n);
    mc_model_destroy(&m);
}

// A node bounded to 10 MiB serves one model (6.4 MiB of experts); then a
// model with the same header (the same fingerprint) but other weights: the
// hashes tell them apart and it fetches everything again; then a model
// with another header: the first file is evicted to stay within the bound.
static void test_cache_bound_evicts(void **state) {
    (void)state;
    char path[3][512], err[MC_ERR_LEN];
    mc_model_t *m[3];
    for (int i = 0; i < 3; i++) {
        mc_mkmodel_params_t p = mc_mkmodel_params_default();
        p.type = MC_DTYPE_Q8_0, p.dim = 256, p.ffn = 512, p.n_layer = 2, p.seed = 11 + (uint64_t)i;
        if (i == 2) p.ctx_len = 1024; // another header
        char label[32];
        snprintf(label, sizeof label, "evict-%d", i);
        s_gen(label, &p, path[i], sizeof path[i]);
        assert_non_null(m[i] = mc_model_open(path[i], err));
    }
    assert_true(mc_model_fingerprint(m[0]) == mc_model_fingerprint(m[1]));
    assert_true(mc_model_fingerprint(m[0]) != mc_model_fingerprint(m[2]));
    static s_nodes_t ns;
    const char *one[] = {"all"};
    s_cache_mb = 10;
    s_nodes(&ns, "evict", one, 1, 64);
    s_cache_mb = 0;
    mc_cluster_config_t *cfg = s_config(&ns, 0);
    for (int i = 0; i < 3; i++) {
        uint64_t sent[1];
        float *ref = s_logits(m[i], NULL, s_ids, N_IDS, NULL), *got = s_logits(m[i], cfg, s_ids, N_IDS, sent);
        assert_memory_equal(got, ref, N_IDS * m[i]->hp.n_vocab * sizeof(float));
        assert_true(sent[0] == s_share(m[i], cfg, 0));
        free(got), free(ref);
        s_sleep_ms(500); // the coordinator gone, its lease ends: another model may come
    }
    char file[2][700];
    struct stat st;
    for (int i = 0; i < 2; i++)
        snprintf(file[i], sizeof file[i], "%s/%016llx.gguf", ns.cache[0], (unsigned long long)mc_model_fingerprint(m[2 * i]));
    assert_int_equal(stat(file[1], &st), 0);
    assert_int_not_equal(stat(file[0], &st), 0); // evicted
    s_nodes_stop(&ns);
    mc_cluster_config_destroy(&cfg);
    for (int i = 0; i < 3; i++) mc_model_destroy(&m[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_hostile_messages),
        cmocka_unit_test_teardown(test_generated_cold_then_warm, s_stop_live),
        cmocka_unit_test_teardown(test_fixture_families, s_stop_live),
        cmocka_unit_test_teardown(test_flipped_byte_fetched_again, s_stop_live),
        cmocka_unit_test_teardown(test_coordinator_gone_mid_transfer, s_stop_live),
        cmocka_unit_test_teardown(test_node_killed_mid_transfer, s_stop_live),
        cmocka_unit_test_teardown(test_cache_bound_evicts, s_stop_live),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
