/*
 * test_live: live membership and placement (cluster.h: mc_cluster_request)
 * with real moe-expert processes on 127.0.0.1.
 *
 * Four streams decode through a scheduler while a node without a model
 * file joins (it fetches its experts from the coordinator while the old
 * placement serves), the placement changes twice and a node leaves: every
 * stream's tokens equal the same prompt decoded alone on one machine, bit
 * for bit, and each change switches at the start of a pass. Placements
 * that cannot follow the running cluster are refused naming the problem,
 * and nothing changes. A coordinator that exits while a node fetches from
 * it releases the node (with a lease of a minute, the next coordinator's
 * placement would otherwise wait that long). SIGHUP makes a running
 * `moe-coordinator --serve` read its cluster file again and switch.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_config.h"
#include "engine.h"
#include "nodeproc.h"
#include "scheduler.h"
#include "testnodes.h"
#include "testutil.h"
#include "tokenizer.h"

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

// The nodes of a test: stopped by the per-test teardown even after a
// failed assertion.
static int s_stop_procs(void **state) {
    (void)state;
    mc_test_nodes_stop(&s_nodes);
    return 0;
}

static void s_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Node i: on the model file, or (cache) without one, fetching into a
// folder of its own.
static void s_node(size_t i, const char *model, bool cache, unsigned lease_ms) {
    char dir[512];
    mc_nodeproc_params_t np = mc_nodeproc_params_default();
    np.lease_ms = lease_ms;
    if (cache) {
        snprintf(dir, sizeof dir, "%s/cache-%zu", s_dir, i + 1);
        np.cache_dir = dir;
    } else {
        np.model = model;
    }
    mc_test_nodes_start(&s_nodes, i, &np);
}

// A cluster file of nodes (i, experts), in code.
static mc_cluster_config_t *s_config(const size_t *nodes, const char *const *experts, size_t n) {
    char err[MC_ERR_LEN], name[32];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    cfg->timeout_ms = 5000, cfg->retry_ms = 200;
    for (size_t j = 0; j < n; j++) {
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(experts[j], &ex, err), MC_OK);
        snprintf(name, sizeof name, "node-%zu", nodes[j] + 1);
        assert_int_equal(mc_cluster_config_add_node(cfg, name, s_nodes.procs[nodes[j]].endpoint, &ex, NULL, err), MC_OK);
    }
    return cfg;
}

// What /v1/cluster says: the placement's switches so far, whether a
// change is staged, and node name's stage.
static void s_state(mc_cluster_t *c, double *switches, bool *steady, const char *name, char *stage, size_t cap) {
    cJSON *root = mc_cluster_stats_json(c, NULL);
    assert_non_null(root);
    const cJSON *p = cJSON_GetObjectItem(root, "placement");
    assert_non_null(p);
    *switches = cJSON_GetObjectItem(p, "switches")->valuedouble;
    *steady = !strcmp(cJSON_GetObjectItem(p, "state")->valuestring, "steady");
    if (stage) {
        stage[0] = 0;
        const cJSON *nd;
        cJSON_ArrayForEach(nd, cJSON_GetObjectItem(root, "nodes"))
            if (!strcmp(cJSON_GetObjectItem(nd, "name")->valuestring, name))
                snprintf(stage, cap, "%s", cJSON_GetObjectItem(nd, "stage")->valuestring);
    }
    cJSON_Delete(root);
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

static mc_model_t *s_fixture(char *path, size_t cap) {
    if (!mc_test_fixture("tiny-f32.gguf", path, cap)) return NULL;
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    return m;
}

// Until the cluster has switched `want` times: the streams take two steps
// while the change is staged (the old placement serves them), then wait,
// the cluster ticking, so that every change lands mid-stream whatever the
// machine's speed.
static bool s_until_switched(mc_cluster_t *c, mc_scheduler_t *s, double want) {
    char err[MC_ERR_LEN];
    const double t0 = mc_clock_ms();
    for (int steps = 0;;) {
        double sw;
        bool steady;
        s_state(c, &sw, &steady, NULL, NULL, 0);
        if (sw >= want && steady) return true;
        if (mc_clock_ms() - t0 > 60000) fail_msg("the change was not switched within 60 s");
        if (steps < 2 && mc_scheduler_pending(s)) {
            if (mc_scheduler_step(s, err)) fail_msg("%s", err);
            steps++;
        } else {
            mc_experts_tick(mc_cluster_experts(c));
            s_sleep_ms(2);
        }
    }
}

static void test_changes_under_streams(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture(path, sizeof path);
    if (!m) skip();
    mc_tokenizer_t *tok = mc_tokenizer_new_from_gguf(m->gguf, err);
    if (!tok) fail_msg("%s", err);
    // One machine, each prompt alone.
    s_stream_t ref[N_STREAMS] = {0};
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
    // The cluster: node-1 and node-2 on the model file; node-3 has none and
    // is not in the cluster file yet.
    s_node(0, path, false, 0);
    s_node(1, path, false, 0);
    s_node(2, path, true, 0);
    const size_t two[] = {0, 1}, three[] = {0, 1, 2}, after[] = {0, 2};
    static const char *const start[] = {"0-3", "4-7"};
    mc_cluster_config_t *cfg = s_config(two, start, 2);
    mc_engine_t *e = s_engine(m, N_STREAMS);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_engine_set_experts(e, mc_cluster_experts(c));
    mc_scheduler_t *s = mc_scheduler_new(e, tok, err);
    s_stream_t got[N_STREAMS] = {0};
    for (size_t i = 0; i < N_STREAMS; i++) {
        mc_gen_params_t p = s_params(i, &got[i]);
        assert_int_equal(mc_scheduler_submit(s, &p, NULL, err), MC_OK);
    }
    for (int k = 0; k < 3; k++)
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);

    // 1. node-3 joins with experts 2-5: it fetches them while the streams go on.
    static const char *const joined[] = {"0-3", "4-7", "2-5"};
    mc_cluster_config_t *next = s_config(three, joined, 3);
    assert_int_equal(mc_cluster_request(c, &next, err), MC_OK);
    assert_null(next); // taken
    assert_false(mc_cluster_holds(c, 0, 0, 5)); // the old placement serves until the switch
    assert_true(s_until_switched(c, s, 1));
    assert_int_equal(mc_cluster_n_nodes(c), 3);
    assert_true(mc_cluster_holds(c, 2, 0, 4));
    // 2. and 3. the placement changes twice.
    static const char *const moved[] = {"0-1", "2-5", "6-7"}, *const again[] = {"4-7", "0-3", "0-7"};
    next = s_config(three, moved, 3);
    assert_int_equal(mc_cluster_request(c, &next, err), MC_OK);
    assert_true(s_until_switched(c, s, 2));
    assert_true(mc_cluster_holds(c, 2, 1, 7));
    assert_false(mc_cluster_holds(c, 0, 1, 2));
    next = s_config(three, again, 3);
    assert_int_equal(mc_cluster_request(c, &next, err), MC_OK);
    assert_true(s_until_switched(c, s, 3));
    // 4. node-2 leaves: node-1 and node-3 hold everything between them.
    static const char *const left[] = {"0-3", "4-7"};
    next = s_config(after, left, 2);
    assert_int_equal(mc_cluster_request(c, &next, err), MC_OK);
    assert_true(s_until_switched(c, s, 4));
    assert_int_equal(mc_cluster_n_nodes(c), 2);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 1, &st);
    assert_string_equal(st.name, "node-3");
    assert_true(st.alive);
    uint64_t before = st.requests;
    bool all_done = true;
    for (size_t i = 0; i < N_STREAMS; i++) all_done &= got[i].done;
    if (all_done) fail_msg("the streams ended before the four changes: nothing was tested under load");
    while (mc_scheduler_pending(s))
        if (mc_scheduler_step(s, err)) fail_msg("%s", err);
    mc_cluster_node_stats(c, 1, &st);
    assert_true(st.requests > before); // the node that joined computes
    for (size_t i = 0; i < N_STREAMS; i++) {
        assert_int_equal(got[i].n, N_TOKENS);
        assert_memory_equal(got[i].ids, ref[i].ids, sizeof ref[i].ids);
    }
    printf("[live] %d streams of %d tokens: a node joined (fetching), 2 placement changes, a node left: every "
           "stream's tokens equal one machine's\n",
           N_STREAMS, N_TOKENS);
    mc_scheduler_destroy(&s);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg);
    mc_tokenizer_destroy(&tok);
    mc_model_destroy(&m);
}

// Changes that cannot follow the running cluster: refused at once, naming
// the problem; the cluster is as it was.
static void test_bad_changes_refused(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture(path, sizeof path);
    if (!m) skip();
    s_node(0, path, false, 0);
    s_node(1, path, false, 0);
    const size_t two[] = {0, 1}, swapped[] = {1, 0};
    static const char *const start[] = {"0-3", "4-7"};
    mc_cluster_config_t *cfg = s_config(two, start, 2);
    mc_engine_t *e = s_engine(m, 1);
    mc_cluster_t *c = mc_cluster_new(cfg, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    struct {
        const char *const experts[2];
        const size_t *nodes;
        mc_err_t code;
        const char *says;
    } const cases[] = {
        {{"0-3", "4-9"}, two, MC_ERR_RANGE, "9"},            // an expert the model does not have
        {{"0-3", "4-6"}, two, MC_ERR_FORMAT, "expert 7"},    // a pair no one holds
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mc_cluster_config_t *bad = s_config(cases[k].nodes, cases[k].experts, 2);
        err[0] = 0;
        assert_int_equal(mc_cluster_request(c, &bad, err), cases[k].code);
        if (!strstr(err, cases[k].says)) fail_msg("case %zu: '%s' does not say %s", k, err, cases[k].says);
        assert_non_null(bad); // not taken
        mc_cluster_config_destroy(&bad);
    }
    // Two names on swapped endpoints.
    static const char *const same[] = {"0-3", "4-7"};
    mc_cluster_config_t *bad = s_config(swapped, same, 2);
    free(bad->nodes[0].name), free(bad->nodes[1].name);
    bad->nodes[0].name = strdup("node-1"), bad->nodes[1].name = strdup("node-2");
    assert_int_equal(mc_cluster_request(c, &bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "remove it first"));
    mc_cluster_config_destroy(&bad);
    // Another wire.
    bad = s_config(two, same, 2);
    bad->wire = MC_WIRE_F32;
    assert_int_equal(mc_cluster_request(c, &bad, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "wire"));
    mc_cluster_config_destroy(&bad);
    // One change at a time.
    mc_cluster_config_t *ok = s_config(two, same, 2), *ok2 = s_config(two, same, 2);
    assert_int_equal(mc_cluster_request(c, &ok, err), MC_OK);
    assert_int_equal(mc_cluster_request(c, &ok2, err), MC_ERR_BUSY);
    mc_cluster_config_destroy(&ok2);
    // The same placement switches at once; nothing else moved.
    double sw = 0;
    bool steady = false;
    for (int i = 0; i < 2000 && !(sw >= 1 && steady); i++) {
        mc_experts_tick(mc_cluster_experts(c));
        s_state(c, &sw, &steady, NULL, NULL, 0);
        s_sleep_ms(5);
    }
    assert_true(sw >= 1 && steady);
    assert_true(mc_cluster_holds(c, 0, 0, 3));
    assert_false(mc_cluster_holds(c, 0, 0, 4));
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
}

// A coordinator that exits while a node without a model file fetches from
// it releases the node: the next coordinator's (other) placement is taken
// at once, not after the node's lease (a minute here).
static void test_exit_mid_fetch_releases(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_fixture(path, sizeof path);
    if (!m) skip();
    s_node(0, path, true, 60000);
    const size_t one[] = {0};
    static const char *const all[] = {"0-7"}, *const half[] = {"0-3"};
    mc_cluster_config_t *slow = s_config(one, all, 1);
    slow->transfer_mbps = 8; // about 1 MB/s: the whole share takes many seconds
    mc_engine_t *e = s_engine(m, 1);
    mc_cluster_t *c = mc_cluster_new(slow, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    mc_cluster_node_stats_t st;
    mc_cluster_node_stats(c, 0, &st);
    assert_false(st.alive); // still fetching
    for (int i = 0; i < 20; i++) { // a few chunks in
        mc_experts_tick(mc_cluster_experts(c));
        s_sleep_ms(25);
    }
    mc_cluster_destroy(&c);
    mc_cluster_config_t *next = s_config(one, half, 1);
    assert_int_equal(mc_expert_set_parse("4-7", &next->local_experts, err), MC_OK);
    next->timeout_ms = 2000;
    const double t0 = mc_clock_ms();
    c = mc_cluster_new(next, m, mc_engine_matmul(e), NULL, err);
    if (!c) fail_msg("%s", err);
    for (;;) {
        mc_cluster_node_stats(c, 0, &st);
        if (st.alive) break;
        if (mc_clock_ms() - t0 > 30000) fail_msg("the node was not released: still not ready after 30 s (lease 60 s)");
        mc_experts_tick(mc_cluster_experts(c));
        s_sleep_ms(10);
    }
    printf("[live] coordinator exited mid-fetch: the next one's placement ready after %.0f ms (node lease 60 s)\n",
           mc_clock_ms() - t0);
    mc_cluster_destroy(&c);
    mc_engine_destroy(&e);
    mc_cluster_config_destroy(&slow);
    mc_cluster_config_destroy(&next);
    mc_model_destroy(&m);
}

// SIGHUP to a real `moe-coordinator --serve`: the cluster file is read
// again and its placement switched while the server runs.
static void test_sighup_rereads(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN], file[600], log[600], exe[1024];
    mc_model_t *m = s_fixture(path, sizeof path);
    if (!m) skip();
    mc_model_destroy(&m);
    s_node(0, path, false, 0);
    s_node(1, path, false, 0);
    const size_t two[] = {0, 1};
    static const char *const start[] = {"0-3", "4-7"}, *const moved[] = {"0-7", "4-7"};
    snprintf(file, sizeof file, "%s/hup.yaml", s_dir);
    snprintf(log, sizeof log, "%s/hup.log", s_dir);
    mc_cluster_config_t *cfg = s_config(two, start, 2);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    mc_test_bin("moe-coordinator", exe, sizeof exe);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *o = freopen(log, "w", stderr);
        (void)o;
        execl(exe, exe, "--model", path, "--cluster", file, "--serve", "--port", "0", "--threads", "1", (char *)NULL);
        _exit(127);
    }
    // The port it chose, from its log.
    unsigned port = 0;
    for (int i = 0; i < 3000 && !port; i++) {
        char *txt = (char *)mc_test_read_file(log, NULL);
        const char *at = txt ? strstr(txt, "on http://") : NULL;
        const char *colon = at ? strchr(at + 10, ':') : NULL;
        if (colon) port = (unsigned)strtoul(colon + 1, NULL, 10);
        free(txt);
        if (!port) s_sleep_ms(10);
    }
    if (!port) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the server did not start");
    }
    cfg = s_config(two, moved, 2);
    f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(mc_cluster_config_write(cfg, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_destroy(&cfg);
    kill(pid, SIGHUP);
    bool switched = false;
    for (int i = 0; i < 3000 && !switched; i++) {
        mc_test_http_t r;
        if (mc_test_http((uint16_t)port, "GET", "/v1/cluster", NULL, NULL, &r) == 0) {
            switched = strstr(r.body, "\"switches\":1") && strstr(r.body, "\"steady\"");
            mc_test_http_free(&r);
        }
        if (!switched) s_sleep_ms(10);
    }
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    char *txt = (char *)mc_test_read_file(log, NULL);
    if (!switched) fail_msg("SIGHUP did not switch the placement; the log:\n%s", txt ? txt : "");
    assert_non_null(strstr(txt, "SIGHUP"));
    free(txt);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0); // SIGHUP did not end it; SIGTERM did, cleanly
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_changes_under_streams, s_stop_procs),
        cmocka_unit_test_teardown(test_bad_changes_refused, s_stop_procs),
        cmocka_unit_test_teardown(test_exit_mid_fetch_releases, s_stop_procs),
        cmocka_unit_test_teardown(test_sighup_rereads, s_stop_procs),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
