/*
 * test_cluster_config: the cluster file parser, checker and writer: the
 * documented example, every id-set syntax, defaults, model path resolution,
 * coverage and range checks against a model shape, every error with its
 * exact file:line:column, hostile input (aliases, deep nesting, oversized
 * values, random bytes and YAML token soup) and write -> parse round trips.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_config.h"
#include "testutil.h"

static const char s_example[] = "model: models/mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf\n"
                                "wire: q8_0                 # f32 | f16 | bf16 | q8_0\n"
                                "timeout_ms: 5000\n"
                                "nodes:\n"
                                "  - name: pi-1\n"
                                "    endpoint: tcp://10.0.0.11:5555\n"
                                "    experts: 0-1           # ids and ranges; 'all' by default\n"
                                "  - name: pi-2\n"
                                "    endpoint: tcp://10.0.0.12:5555\n"
                                "    experts: [2, 3]\n"

                                "    layers: 0-15           # 'all' by default\n"
                                "  - name: old-pc\n"
                                "    endpoint: tcp://10.0.0.20:5555\n"
                                "    experts: 2-7\n"
                                "local:\n"
                                "  experts: none            # what the coordinator computes itself (e.g. 6-7)\n";

static mc_cluster_config_t *s_parse(const char *yaml, const char *file) {
    char err[MC_ERR_LEN] = "";
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), file, err);
    if (!c) fail_msg("parse failed: %s", err);
    return c;
}

// Parse yaml as "cluster.yaml", which must fail; the message goes to err.
static void s_parse_fail(const char *yaml, size_t len, char *err) {
    err[0] = '\0';
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, len, "cluster.yaml", err);
    if (c) fail_msg("parse unexpectedly succeeded:\n%s", yaml);
    assert_true(err[0] != '\0');
}

static void s_expect_error(const char *yaml, const char *want) {
    char err[MC_ERR_LEN];
    s_parse_fail(yaml, strlen(yaml), err);
    if (strcmp(err, want)) fail_msg("for:\n%s\ngot:  %s\nwant: %s", yaml, err, want);
}

// The message starts with `where` ("cluster.yaml:2:1: ") and contains `what`.
static void s_expect_error_at(const char *yaml, const char *where, const char *what) {
    char err[MC_ERR_LEN];
    s_parse_fail(yaml, strlen(yaml), err);
    if (strncmp(err, where, strlen(where)) || !strstr(err, what))
        fail_msg("for:\n%s\ngot:  %s\nwant: %s...%s", yaml, err, where, what);
}

static const char *s_fmt_experts(const mc_expert_set_t *s, char *buf, size_t cap) {
    mc_expert_set_format(s, buf, cap);
    return buf;
}

static const char *s_fmt_layers(const mc_layer_set_t *s, char *buf, size_t cap) {
    mc_layer_set_format(s, buf, cap);
    return buf;
}

static bool s_all_layers(const mc_layer_set_t *s) {
    for (size_t w = 0; w < MC_CLUSTER_MAX_LAYERS / 64; w++)
        if (s->bits[w] != UINT64_MAX) return false;
    return true;
}

static bool s_all_experts(const mc_expert_set_t *s) {
    for (size_t w = 0; w < MC_CLUSTER_MAX_EXPERTS / 64; w++)
        if (s->bits[w] != UINT64_MAX) return false;
    return true;
}

static void s_assert_mark(mc_cluster_mark_t m, uint32_t line, uint32_t col) {
    assert_int_equal(m.line, line);
    assert_int_equal(m.col, col);
}

static void s_assert_str_or_null(const char *a, const char *b) {
    if (!a || !b) assert_ptr_equal(a, b);
    else assert_string_equal(a, b);
}

static void s_assert_same(const mc_cluster_config_t *a, const mc_cluster_config_t *b) {
    s_assert_str_or_null(a->model, b->model);
    s_assert_str_or_null(a->model_resolved, b->model_resolved);
    assert_int_equal(a->wire, b->wire);
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->retry_ms, b->retry_ms);
    assert_int_equal(a->heartbeat_ms, b->heartbeat_ms);
    assert_int_equal(a->load_timeout_ms, b->load_timeout_ms);
    assert_int_equal(a->dead_ms, b->dead_ms);
    assert_int_equal(a->slow_ms, b->slow_ms);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (size_t i = 0; i < a->n_nodes; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_int_equal(a->nodes[i].mem_limit_mb, b->nodes[i].mem_limit_mb);
        assert_string_equal(a->nodes[i].endpoint, b->nodes[i].endpoint);
        assert_memory_equal(&a->nodes[i].experts, &b->nodes[i].experts, sizeof(mc_expert_set_t));
        assert_memory_equal(&a->nodes[i].layers, &b->nodes[i].layers, sizeof(mc_layer_set_t));
    }
    assert_memory_equal(&a->local_experts, &b->local_experts, sizeof(mc_expert_set_t));
    assert_memory_equal(&a->local_layers, &b->local_layers, sizeof(mc_layer_set_t));
}

// Write c to memory and parse it back as `file`.
static mc_cluster_config_t *s_round_trip(const mc_cluster_config_t *c, const char *file) {
    char *text = NULL, err[MC_ERR_LEN] = "";
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    assert_int_equal(fclose(f), 0);
    mc_cluster_config_t *back = mc_cluster_config_parse(text, len, file, err);
    if (!back) fail_msg("written config does not parse: %s\n%s", err, text);
    free(text);
    return back;
}

static void test_example(void **state) {
    (void)state;
    char buf[64];
    mc_cluster_config_t *c = s_parse(s_example, "conf/cluster.yaml");
    assert_string_equal(c->path, "conf/cluster.yaml");
    assert_string_equal(c->model, "models/mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf");
    assert_string_equal(c->model_resolved, "conf/models/mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf");
    assert_int_equal(c->wire, MC_WIRE_Q8_0);
    assert_int_equal(c->timeout_ms, 5000);
    assert_int_equal(c->n_nodes, 3);

    const mc_cluster_node_t *n = c->nodes;
    assert_string_equal(n[0].name, "pi-1");
    assert_string_equal(n[0].endpoint, "tcp://10.0.0.11:5555");
    assert_string_equal(s_fmt_experts(&n[0].experts, buf, sizeof buf), "0-1");
    assert_true(s_all_layers(&n[0].layers));
    assert_string_equal(n[1].name, "pi-2");
    assert_int_equal(n[1].mem_limit_mb, 0);
    assert_string_equal(n[1].endpoint, "tcp://10.0.0.12:5555");
    assert_string_equal(s_fmt_experts(&n[1].experts, buf, sizeof buf), "2-3");
    assert_string_equal(s_fmt_layers(&n[1].layers, buf, sizeof buf), "0-15");
    assert_string_equal(n[2].name, "old-pc");
    assert_string_equal(s_fmt_experts(&n[2].experts, buf, sizeof buf), "2-7");
    assert_true(s_all_layers(&n[2].layers));
    assert_string_equal(s_fmt_experts(&c->local_experts, buf, sizeof buf), "");
    assert_true(s_all_layers(&c->local_layers));

    s_assert_mark(n[0].at, 5, 5);
    s_assert_mark(n[1].at, 8, 5);
    s_assert_mark(n[1].experts_at, 10, 14);
    s_assert_mark(n[1].layers_at, 11, 13);
    s_assert_mark(n[2].layers_at, 0, 0); // defaulted
    s_assert_mark(c->local_experts_at, 16, 12);

    assert_true(mc_cluster_node_holds(&n[0], 31, 1));
    assert_false(mc_cluster_node_holds(&n[0], 0, 2));
    assert_true(mc_cluster_node_holds(&n[1], 15, 3));
    assert_false(mc_cluster_node_holds(&n[1], 16, 3));
    assert_false(mc_cluster_node_holds(&n[1], 0, MC_CLUSTER_MAX_EXPERTS));
    assert_false(mc_cluster_node_holds(&n[0], MC_CLUSTER_MAX_LAYERS, 0));
    assert_false(mc_cluster_config_local_holds(c, 0, 0));

    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_OK);
    mc_cluster_config_destroy(&c);
    assert_null(c);
    mc_cluster_config_destroy(&c); // safe twice
}

// The experts of a one-node file whose experts value is `value`.
static void s_expect_experts(const char *value, const char *want) {
    char yaml[512], buf[MC_ERR_LEN];
    snprintf(yaml, sizeof yaml, "nodes:\n  - name: a\n    endpoint: inproc://a\n    experts: %s\n", value);
    mc_cluster_config_t *c = s_parse(yaml, "cluster.yaml");
    if (strcmp(s_fmt_experts(&c->nodes[0].experts, buf, sizeof buf), want))
        fail_msg("experts: %s gave '%s', want '%s'", value, buf, want);
    mc_cluster_config_destroy(&c);
}

static void test_id_sets(void **state) {
    (void)state;
    s_expect_experts("3", "3");
    s_expect_experts("0-7", "0-7");
    s_expect_experts("0-3, 6", "0-3,6");
    s_expect_experts("\"0-3, 6\"", "0-3,6");
    s_expect_experts("' 2 - 4 ,9 '", "2-4,9");
    s_expect_experts("[0-1, 4]", "0-1,4");
    s_expect_experts("[5, \"1-2\", 7]", "1-2,5,7");
    s_expect_experts("[0-1, '3,5']", "0-1,3,5");
    s_expect_experts("\n      - 6\n      - 0-2", "0-2,6");
    s_expect_experts("0-3, 2-5, 5", "0-5");
    s_expect_experts("007", "7");
    s_expect_experts("255", "255");
    s_expect_experts("none", "");
    s_expect_experts("[]", "");
    s_expect_experts("all", "0-255");

    // The same syntax outside YAML, with each set's own bound.
    char err[MC_ERR_LEN], buf[64];
    mc_expert_set_t e;
    mc_layer_set_t l;
    assert_int_equal(mc_layer_set_parse("4095, 0-2", &l, err), MC_OK);
    assert_string_equal(s_fmt_layers(&l, buf, sizeof buf), "0-2,4095");
    assert_true(mc_layer_set_has(&l, 4095));
    assert_false(mc_layer_set_has(&l, 4096));
    assert_int_equal(mc_layer_set_parse("all", &l, err), MC_OK);
    assert_true(s_all_layers(&l));
    assert_int_equal(mc_expert_set_parse("all", &e, err), MC_OK);
    assert_true(s_all_experts(&e));
    assert_int_equal(mc_layer_set_parse("4096", &l, err), MC_ERR_FORMAT);
    assert_string_equal(err, "layer id '4096' is too large (cluster files support layer ids up to 4095)");
    assert_int_equal(mc_expert_set_parse("", &e, err), MC_ERR_FORMAT);
    assert_string_equal(err, "empty expert set (write none for no experts)");
    assert_int_equal(mc_expert_set_parse("1,", &e, err), MC_ERR_FORMAT);
    assert_string_equal(err, "empty item in expert list '1,'");
    mc_expert_set_t before = e;
    assert_int_equal(mc_expert_set_parse("3-1", &e, err), MC_ERR_FORMAT);
    assert_memory_equal(&e, &before, sizeof e); // untouched on failure
    assert_int_equal(mc_expert_set_parse(NULL, &e, NULL), MC_ERR_ARG);
}

static void test_set_format(void **state) {
    (void)state;
    char err[MC_ERR_LEN], buf[8];
    mc_expert_set_t e;
    assert_int_equal(mc_expert_set_parse("0-3, 6, 8-9, 200", &e, err), MC_OK);
    // snprintf-like: full length returned, output cut and terminated.
    assert_int_equal(mc_expert_set_format(&e, buf, sizeof buf), strlen("0-3,6,8-9,200"));
    assert_string_equal(buf, "0-3,6,8");
    assert_int_equal(mc_expert_set_format(&e, NULL, 0), strlen("0-3,6,8-9,200"));
    assert_int_equal(mc_expert_set_parse("none", &e, err), MC_OK);
    assert_int_equal(mc_expert_set_format(&e, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
}

static void test_defaults(void **state) {
    (void)state;
    mc_cluster_config_t *c = s_parse("nodes:\n  - name: a\n    endpoint: inproc://a\n", NULL);
    assert_null(c->path);
    assert_null(c->model);
    assert_null(c->model_resolved);
    assert_int_equal(c->wire, MC_WIRE_AUTO);
    assert_int_equal(c->timeout_ms, MC_CLUSTER_DEFAULT_TIMEOUT_MS);
    assert_int_equal(c->retry_ms, MC_CLUSTER_DEFAULT_RETRY_MS);
    assert_int_equal(c->heartbeat_ms, MC_CLUSTER_DEFAULT_HEARTBEAT_MS);
    assert_int_equal(c->load_timeout_ms, 0);
    assert_int_equal(c->dead_ms, MC_CLUSTER_DEFAULT_DEAD_MS);
    assert_int_equal(c->slow_ms, MC_CLUSTER_DEFAULT_SLOW_MS);
    assert_int_equal(c->n_nodes, 1);
    assert_true(s_all_experts(&c->nodes[0].experts));
    assert_true(s_all_layers(&c->nodes[0].layers));
    s_assert_mark(c->nodes[0].experts_at, 0, 0);
    char buf[8];
    assert_string_equal(s_fmt_experts(&c->local_experts, buf, sizeof buf), "");
    assert_true(s_all_layers(&c->local_layers));
    mc_cluster_config_destroy(&c);

    // Every value given; local layers narrowed; an empty 'local:' is allowed.
    c = s_parse("wire: bf16\ntimeout_ms: 600000\nretry_ms: 0\nheartbeat_ms: 250\nload_timeout_ms: 900000\n"
                "dead_ms: 0\nslow_ms: 40\n"
                "nodes: [{name: a, endpoint: 'inproc://a', experts: 0}]\n"
                "local: {experts: 1-7, layers: 2-3}\n",
                "c.yaml");
    assert_int_equal(c->wire, MC_WIRE_BF16);
    assert_int_equal(c->timeout_ms, 600000);
    assert_int_equal(c->retry_ms, 0);
    assert_int_equal(c->heartbeat_ms, 250);
    assert_int_equal(c->load_timeout_ms, 900000);
    assert_int_equal(c->dead_ms, 0);
    assert_int_equal(c->slow_ms, 40);
    assert_string_equal(s_fmt_layers(&c->local_layers, buf, sizeof buf), "2-3");
    assert_true(mc_cluster_config_local_holds(c, 3, 7));
    assert_false(mc_cluster_config_local_holds(c, 4, 7));
    mc_cluster_config_destroy(&c);
    c = s_parse("nodes: [{name: a, endpoint: 'inproc://a'}]\nlocal:\n#  experts: 6-7\n", "c.yaml");
    assert_string_equal(s_fmt_experts(&c->local_experts, buf, sizeof buf), "");
    mc_cluster_config_destroy(&c);
}

static void test_wire_names(void **state) {
    (void)state;
    static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q8_1", "q8_k"};
    for (int i = 0; i < 6; i++) {
        mc_wire_enc_t e = MC_WIRE_AUTO;
        assert_true(mc_wire_enc_from_name(names[i], &e));
        assert_int_equal(e, i);
        assert_string_equal(mc_wire_enc_name(e), names[i]);
        char yaml[128];
        snprintf(yaml, sizeof yaml, "wire: %s\nnodes: [{name: a, endpoint: 'inproc://a'}]\n", names[i]);
        mc_cluster_config_t *c = s_parse(yaml, "c.yaml");
        assert_int_equal(c->wire, i);
        mc_cluster_config_destroy(&c);
    }
    mc_wire_enc_t e = MC_WIRE_F16;
    assert_false(mc_wire_enc_from_name("Q8_0", &e));
    assert_false(mc_wire_enc_from_name(NULL, &e));
    assert_int_equal(e, MC_WIRE_F16);
    assert_string_equal(mc_wire_enc_name((mc_wire_enc_t)7), "unknown");
    assert_true(mc_wire_enc_from_name("auto", &e));
    assert_int_equal(e, MC_WIRE_AUTO);
    assert_string_equal(mc_wire_enc_name(MC_WIRE_AUTO), "auto");
}

// CURVE keys: the coordinator's secret key file (relative to the cluster
// file), a node's public key checked where it is written.
static void test_keys(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const char *pub = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "secret_key: keys/c.key\nnodes:\n  - name: a\n    endpoint: tcp://10.0.0.1:5555\n    public_key: \"%s\"\n"
             "  - name: b\n    endpoint: tcp://10.0.0.2:5555\n",
             pub);
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), "/etc/moe/cluster.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_string_equal(c->secret_key, "keys/c.key");
    assert_string_equal(c->secret_key_resolved, "/etc/moe/keys/c.key");
    assert_string_equal(c->nodes[0].public_key, pub);
    assert_string_equal(c->nodes[1].public_key, "");
    // Written and read back: the same.
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_t *back = mc_cluster_config_parse(buf, len, "/etc/moe/cluster.yaml", err);
    if (!back) fail_msg("%s\n%s", err, buf);
    assert_string_equal(back->secret_key_resolved, "/etc/moe/keys/c.key");
    assert_string_equal(back->nodes[0].public_key, pub);
    free(buf);
    mc_cluster_config_destroy(&back);
    mc_cluster_config_destroy(&c);
    s_expect_error("nodes:\n  - name: a\n    endpoint: tcp://a:1\n    public_key: tooshort\n",
                   "cluster.yaml:4:17: 'public_key' in node 'a': a key is 40 characters of Z85 text, not 8 (the node's "
                   ".pub file from moe-keygen)");
    s_expect_error("secret_key: [1]\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:13: 'secret_key' must be a single value, found a sequence");
    c = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_add_node(c, "n", "inproc://n", NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_set_node_key(c, 0, "bad", err), MC_ERR_ARG);
    assert_int_equal(mc_cluster_config_set_node_key(c, 1, pub, err), MC_ERR_ARG);
    assert_int_equal(mc_cluster_config_set_node_key(c, 0, pub, err), MC_OK);
    mc_cluster_config_destroy(&c);
}

// `holds:` blocks: a placement that differs per layer.
static void test_holds(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const char *yaml = "nodes:\n"
                       "  - name: a\n    endpoint: inproc://a\n    holds:\n"
                       "      - {layers: 0-1, experts: [0, 3]}\n      - layers: 2\n        experts: 5-7\n"
                       "  - name: b\n    endpoint: inproc://b\n    experts: all\n";
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), "h.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_int_equal(c->nodes[0].n_holds, 2);
    assert_true(mc_cluster_node_holds(&c->nodes[0], 1, 3));
    assert_false(mc_cluster_node_holds(&c->nodes[0], 1, 5));
    assert_true(mc_cluster_node_holds(&c->nodes[0], 2, 6));
    assert_false(mc_cluster_node_holds(&c->nodes[0], 2, 0));
    assert_false(mc_cluster_node_holds(&c->nodes[0], 3, 0));
    assert_int_equal(mc_cluster_config_check(c, 3, 8, err), MC_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    fclose(f);
    mc_cluster_config_t *back = mc_cluster_config_parse(buf, len, "h.yaml", err);
    if (!back) fail_msg("%s\n%s", err, buf);
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t e = 0; e < 8; e++)
            assert_int_equal(mc_cluster_node_holds(&back->nodes[0], l, e), mc_cluster_node_holds(&c->nodes[0], l, e));
    free(buf);
    mc_cluster_config_destroy(&back);
    // Beyond the model, in a block: named.
    assert_int_equal(mc_cluster_config_check(c, 2, 8, err), MC_ERR_RANGE); // its block names layer 2
    assert_non_null(strstr(err, "node 'a'"));
    assert_int_equal(mc_cluster_config_check(c, 3, 6, err), MC_ERR_RANGE); // and experts 5-7
    assert_non_null(strstr(err, "node 'a'"));
    // Built in code.
    mc_layer_set_t ls;
    mc_expert_set_t es;
    assert_int_equal(mc_layer_set_parse("3", &ls, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("1", &es, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_hold(c, 0, &ls, &es, err), MC_OK);
    assert_true(mc_cluster_node_holds(&c->nodes[0], 3, 1));
    assert_int_equal(mc_cluster_config_add_hold(c, 9, &ls, &es, err), MC_ERR_ARG);
    mc_cluster_config_destroy(&c);
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\n    experts: 1\n    holds: [{layers: 1}]\n",
                   "cluster.yaml:5:5: 'holds' in node 'a' replaces 'experts' and 'layers': give one or the other");
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\n    holds: [{layer: 1}]\n",
                   "cluster.yaml:4:14: unknown key 'layer' in a 'holds' block (expected layers, experts)");
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\n    holds: []\n",
                   "cluster.yaml:4:12: 'holds' in node 'a' is empty: list at least one block ({layers: none, experts: none} "
                   "holds nothing)");
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\n    holds: 3\n",
                   "cluster.yaml:4:12: 'holds' in node 'a' must be a sequence of {layers, experts}, found '3'");
    // Coverage counts the blocks, not the (unused, default all) experts/layers.
    const char *gap = "nodes:\n  - name: a\n    endpoint: inproc://a\n    holds:\n      - {layers: 0, experts: 0-7}\n"
                      "      - {layers: 1, experts: 0-6}\n";
    c = mc_cluster_config_parse(gap, strlen(gap), "g.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_int_equal(mc_cluster_config_check(c, 2, 8, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "layer 1 expert 7"));
    mc_cluster_config_destroy(&c);
    // The coordinator's own experts as blocks.
    const char *loc = "nodes:\n  - name: a\n    endpoint: inproc://a\n    holds: [{layers: 0, experts: 0-5}]\n"
                      "local:\n  holds:\n    - {layers: 0, experts: 6-7}\n    - {layers: 1, experts: all}\n";
    c = mc_cluster_config_parse(loc, strlen(loc), "l.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_int_equal(c->n_local_holds, 2);
    assert_true(mc_cluster_config_local_holds(c, 0, 6));
    assert_false(mc_cluster_config_local_holds(c, 0, 5));
    assert_true(mc_cluster_config_local_holds(c, 1, 0));
    assert_false(mc_cluster_config_local_holds(c, 2, 0));
    assert_int_equal(mc_cluster_config_check(c, 2, 8, err), MC_OK);
    assert_int_equal(mc_cluster_config_check(c, 3, 8, err), MC_ERR_FORMAT); // layer 2 held by nobody
    assert_int_equal(mc_cluster_config_check(c, 2, 7, err), MC_ERR_RANGE);  // a local block names expert 7
    assert_non_null(strstr(err, "local"));
    f = open_memstream(&buf, &len);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    fclose(f);
    back = mc_cluster_config_parse(buf, len, "l.yaml", err);
    if (!back) fail_msg("%s\n%s", err, buf);
    assert_int_equal(back->n_local_holds, 2);
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t e = 0; e < 8; e++)
            assert_int_equal(mc_cluster_config_local_holds(back, l, e), mc_cluster_config_local_holds(c, l, e));
    free(buf);
    mc_cluster_config_destroy(&back);
    assert_int_equal(mc_cluster_config_add_local_hold(c, &ls, &es, err), MC_OK);
    assert_true(mc_cluster_config_local_holds(c, 3, 1));
    mc_cluster_config_destroy(&c);
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\nlocal:\n  experts: 1\n  holds: [{layers: 1}]\n",
                   "cluster.yaml:6:3: 'holds' in 'local' replaces 'experts' and 'layers': give one or the other");
}

static void test_model_path(void **state) {
    (void)state;
    static const struct {
        const char *file, *model, *resolved;
    } cases[] = {
        {"/etc/moe/cluster.yaml", "models/m.gguf", "/etc/moe/models/m.gguf"},
        {"/etc/moe/cluster.yaml", "/srv/m.gguf", "/srv/m.gguf"},
        {"/cluster.yaml", "m.gguf", "/m.gguf"},
        {"cluster.yaml", "m.gguf", "m.gguf"},
        {"a/b/c.yaml", "../m.gguf", "a/b/../m.gguf"},
        {NULL, "m.gguf", "m.gguf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, "model: '%s'\nnodes: [{name: a, endpoint: 'inproc://a'}]\n", cases[i].model);
        mc_cluster_config_t *c = s_parse(yaml, cases[i].file);
        assert_string_equal(c->model, cases[i].model);
        assert_string_equal(c->model_resolved, cases[i].resolved);
        mc_cluster_config_destroy(&c);
    }
}

static void test_check_coverage(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_cluster_config_t *c = s_parse("nodes:\n"
                                     "  - {name: a, endpoint: 'tcp://a:1', experts: 0-5}\n"
                                     "  - {name: b, endpoint: 'tcp://b:1', experts: 6, layers: 16-31}\n",
                                     "cluster.yaml");
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_ERR_FORMAT);
    assert_string_equal(err, "cluster.yaml: 48 (layer, expert) pairs are not held by any node or local: "
                             "layers 0-15 experts 6-7; layers 16-31 expert 7");
    // local fills the gap for some layers only.
    assert_int_equal(mc_layer_set_parse("0-14, 16-31", &c->local_layers, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("6-7", &c->local_experts, err), MC_OK);
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_ERR_FORMAT);
    assert_string_equal(err, "cluster.yaml: 2 (layer, expert) pairs are not held by any node or local: "
                             "layer 15 experts 6-7");
    assert_int_equal(mc_expert_set_parse("7", &c->local_experts, err), MC_OK);
    assert_int_equal(mc_layer_set_parse("0-2, 4-31", &c->local_layers, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("0-6", &c->nodes[1].experts, err), MC_OK);
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_ERR_FORMAT);
    assert_string_equal(err, "cluster.yaml: 17 (layer, expert) pairs are not held by any node or local: "
                             "layers 0-2 expert 6; layer 3 experts 6-7; layers 4-15 expert 6");
    assert_int_equal(mc_layer_set_parse("all", &c->local_layers, err), MC_OK);
    assert_int_equal(mc_expert_set_parse("6-7", &c->local_experts, err), MC_OK);
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_OK);
    mc_cluster_config_destroy(&c);

    // A single pair, and identical sets on non-adjacent layers.
    c = s_parse("nodes: [{name: a, endpoint: 'tcp://a:1', experts: 1-3}]\n"
                "local: {experts: 0, layers: '0-2, 4-5'}\n",
                "cluster.yaml");
    assert_int_equal(mc_cluster_config_check(c, 6, 4, err), MC_ERR_FORMAT);
    assert_string_equal(err, "cluster.yaml: 1 (layer, expert) pair is not held by any node or local: layer 3 expert 0");
    assert_int_equal(mc_cluster_config_check(c, 8, 4, err), MC_ERR_FORMAT);
    assert_string_equal(err, "cluster.yaml: 3 (layer, expert) pairs are not held by any node or local: "
                             "layer 3 expert 0; layers 6-7 expert 0");
    mc_cluster_config_destroy(&c);

    // Too many groups for one message: it ends with "; ..." within the buffer.
    c = s_parse("nodes: [{name: a, endpoint: 'tcp://a:1', experts: 0-6, layers: all}]\n"
                "local: {experts: 7, layers: '0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, "
                "32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62'}\n",
                "cluster.yaml");
    memset(err, 'x', sizeof err);
    assert_int_equal(mc_cluster_config_check(c, 64, 8, err), MC_ERR_FORMAT);
    assert_true(strlen(err) < MC_ERR_LEN);
    assert_non_null(strstr(err, "32 (layer, expert) pairs are not held by any node or local: layer 1 expert 7; "
                                "layer 3 expert 7; "));
    assert_string_equal(err + strlen(err) - 5, "; ...");
    mc_cluster_config_destroy(&c);
}

static void test_check_beyond(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_cluster_config_t *c = s_parse("nodes:\n"
                                     "  - name: a\n"
                                     "    endpoint: tcp://a:1\n"
                                     "    experts: 0-9\n"
                                     "  - name: b\n"
                                     "    endpoint: tcp://b:1\n"
                                     "    layers: [0-31, 40]\n"
                                     "local:\n"
                                     "  experts: 8\n",
                                     "cluster.yaml");
    assert_int_equal(mc_cluster_config_check(c, 32, 8, err), MC_ERR_RANGE);
    assert_string_equal(err, "cluster.yaml:4:14: node 'a' has experts 8-9, but the model has 8 experts (ids 0-7)");
    assert_int_equal(mc_cluster_config_check(c, 32, 10, err), MC_ERR_RANGE);
    assert_string_equal(err, "cluster.yaml:7:13: node 'b' has layer 40, but the model has 32 layers (ids 0-31)");
    assert_int_equal(mc_cluster_config_check(c, 41, 10, err), MC_OK); // node a holds experts 0-9 everywhere
    assert_int_equal(mc_cluster_config_check(c, 41, 1, err), MC_ERR_RANGE);
    assert_string_equal(err, "cluster.yaml:4:14: node 'a' has experts 1-9, but the model has 1 expert (id 0)");
    mc_expert_set_parse("0-7", &c->nodes[0].experts, err);
    assert_int_equal(mc_cluster_config_check(c, 41, 8, err), MC_ERR_RANGE);
    assert_string_equal(err, "cluster.yaml:9:12: local has expert 8, but the model has 8 experts (ids 0-7)");
    mc_expert_set_parse("none", &c->local_experts, err);
    assert_int_equal(mc_cluster_config_check(c, 41, 8, err), MC_OK); // 'all' layers of node a never exceed

    assert_int_equal(mc_cluster_config_check(c, 41, MC_CLUSTER_MAX_EXPERTS + 1, err), MC_ERR_UNSUPPORTED);
    assert_int_equal(mc_cluster_config_check(c, MC_CLUSTER_MAX_LAYERS + 1, 8, err), MC_ERR_UNSUPPORTED);
    assert_int_equal(mc_cluster_config_check(c, 0, 8, err), MC_ERR_ARG);
    assert_int_equal(mc_cluster_config_check(NULL, 1, 1, NULL), MC_ERR_ARG);
    mc_cluster_config_destroy(&c);
}

// discover, discover_keys, discover_experts, discover_layers: parsed,
// written back, and discover without what keeps strangers out refused.
static void test_discover(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const char *k1 = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", *k2 = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "secret_key: c.key\nnodes: [{name: a, endpoint: 'tcp://10.0.0.1:5555'}]\ndiscover: true\n"
             "discover_keys:\n  - \"%s\"\n  - '%s'\ndiscover_experts: 0-3\ndiscover_layers: 1\n",
             k1, k2);
    mc_cluster_config_t *c = mc_cluster_config_parse(yaml, strlen(yaml), "cluster.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_true(c->discover);
    assert_int_equal(c->n_discover_keys, 2);
    assert_true(mc_cluster_config_discover_allows(c, k1));
    assert_true(mc_cluster_config_discover_allows(c, k2));
    assert_false(mc_cluster_config_discover_allows(c, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf8"));
    assert_false(mc_cluster_config_discover_allows(c, ""));
    assert_true(mc_expert_set_has(&c->discover_experts, 3));
    assert_false(mc_expert_set_has(&c->discover_experts, 4));
    assert_true(mc_layer_set_has(&c->discover_layers, 1));
    assert_false(mc_layer_set_has(&c->discover_layers, 0));
    // A clone (what a live change starts from) keeps them.
    mc_cluster_config_t *back = mc_cluster_config_clone(c, err);
    if (!back) fail_msg("%s", err);
    assert_true(back->discover);
    assert_int_equal(back->n_discover_keys, 2);
    assert_string_equal(back->discover_keys[1], k2);
    assert_memory_equal(back->discover_experts.bits, c->discover_experts.bits, sizeof c->discover_experts.bits);
    assert_memory_equal(back->discover_layers.bits, c->discover_layers.bits, sizeof c->discover_layers.bits);
    mc_cluster_config_destroy(&back);
    mc_cluster_config_destroy(&c);
    // Defaults: off, no keys, experts none, layers all.
    c = s_parse("nodes: [{name: a, endpoint: 'inproc://a'}]\n", NULL);
    assert_false(c->discover);
    assert_int_equal(c->n_discover_keys, 0);
    assert_false(mc_expert_set_has(&c->discover_experts, 0));
    assert_true(mc_layer_set_has(&c->discover_layers, 4095));
    mc_cluster_config_destroy(&c);
    // One key alone, not in a list.
    snprintf(yaml, sizeof yaml, "secret_key: c.key\nnodes: [{name: a, endpoint: 'inproc://a'}]\ndiscover: true\n"
                                "discover_keys: \"%s\"\n", k1);
    c = mc_cluster_config_parse(yaml, strlen(yaml), "cluster.yaml", err);
    if (!c) fail_msg("%s", err);
    assert_int_equal(c->n_discover_keys, 1);
    mc_cluster_config_destroy(&c);
    // No secret key, or no keys: a stranger could join by announcing.
    snprintf(yaml, sizeof yaml, "nodes: [{name: a, endpoint: 'inproc://a'}]\ndiscover: true\ndiscover_keys: [\"%s\"]\n",
             k1);
    s_expect_error(yaml, "cluster.yaml:2:1: 'discover: true' needs 'secret_key' and 'discover_keys': only announced "
                         "nodes whose key is listed may join, and CURVE makes them prove they hold it");
    s_expect_error("secret_key: c.key\nnodes: [{name: a, endpoint: 'inproc://a'}]\ndiscover: true\n",
                   "cluster.yaml:3:1: 'discover: true' needs 'secret_key' and 'discover_keys': only announced "
                   "nodes whose key is listed may join, and CURVE makes them prove they hold it");
    s_expect_error("discover: yes\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:11: 'discover' must be true or false, found 'yes'");
    s_expect_error("discover_keys: [short]\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:17: 'discover_keys': a key is 40 characters of Z85 text, not 5 (the nodes' .pub files from "
                   "moe-keygen)");
    s_expect_error("discover_keys: {a: 1}\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:16: 'discover_keys' must be a list of public keys (the nodes' .pub), found a mapping");
    s_expect_error("discover_keys: [[1]]\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:17: items of 'discover_keys' must be public keys, found a sequence");
    s_expect_error("discover_experts: 300\nnodes: [{name: a, endpoint: 'inproc://a'}]\n",
                   "cluster.yaml:1:19: expert id '300' is too large (cluster files support expert ids up to 255)");
}

static void test_errors_keys(void **state) {
    (void)state;
    s_expect_error("nodes:\n"
                   "  - name: pi-1\n"
                   "    endpoint: tcp://a:1\n"
                   "  - name: pi-2\n"
                   "    endpoint: tcp://b:1\n"
                   "    expert: 3\n",
                   "cluster.yaml:6:5: unknown key 'expert' in node 'pi-2' (expected name, endpoint, experts, layers, public_key, holds, mem_limit_mb)");
    s_expect_error("nodes:\n  - experts: 3\n    names: a\n",
                   "cluster.yaml:3:5: unknown key 'names' in node #1 (expected name, endpoint, experts, layers, public_key, holds, mem_limit_mb)");
    s_expect_error("heartbeats: 1000\n",
                   "cluster.yaml:1:1: unknown key 'heartbeats' (expected model, wire, timeout_ms, retry_ms, heartbeat_ms, load_timeout_ms, dead_ms, slow_ms, "
                   "transfer_mbps, secret_key, nodes, local, rebalance, discover, discover_keys, discover_experts, discover_layers)");
    s_expect_error("local:\n  threads: 2\n",
                   "cluster.yaml:2:3: unknown key 'threads' in 'local' (expected experts, layers, holds)");
    s_expect_error("wire: f32\ntimeout_ms: 9\nwire: f16\n", "cluster.yaml:3:1: duplicate key 'wire' (first at line 1)");
    s_expect_error("nodes:\n  - name: a\n    experts: 1\n    endpoint: inproc://a\n    experts: 2\n",
                   "cluster.yaml:5:5: duplicate key 'experts' in node 'a' (first at line 3)");
    s_expect_error("local: {layers: 1, layers: 2}\n",
                   "cluster.yaml:1:20: duplicate key 'layers' in 'local' (first at line 1)");
    s_expect_error("? [a]\n: 1\n", "cluster.yaml:1:3: expected a key, found a sequence");
    // Keys are compared exactly; a long unknown key is cut in the message.
    s_expect_error("Nodes: []\n",
                   "cluster.yaml:1:1: unknown key 'Nodes' (expected model, wire, timeout_ms, retry_ms, heartbeat_ms, load_timeout_ms, dead_ms, slow_ms, transfer_mbps, secret_key, nodes, local, rebalance, discover, discover_keys, discover_experts, discover_layers)");
    // (Cut again at the error buffer's MC_ERR_LEN - 1 bytes.)
    s_expect_error("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1\n",
                   "cluster.yaml:1:1: unknown key 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' (expected model, wire, "
                   "timeout_ms, retry_ms, heartbeat_ms, load_timeout_ms, dead_ms, slow_ms, transfer_mbps, secret_key, nodes, local, rebalance, discover, discover_keys, discove");
}

static void test_errors_structure(void **state) {
    (void)state;
    s_expect_error("model: x\n", "cluster.yaml:1:1: missing key 'nodes' (the list of expert nodes)");
    s_expect_error("nodes: []\n", "cluster.yaml:1:8: 'nodes' is empty: list at least one node");
    s_expect_error("nodes:\n", "cluster.yaml:1:7: 'nodes' must be a sequence of nodes, found no value");
    s_expect_error("nodes: abc\n", "cluster.yaml:1:8: 'nodes' must be a sequence of nodes, found 'abc'");
    s_expect_error("nodes: {a: 1}\n", "cluster.yaml:1:8: 'nodes' must be a sequence of nodes, found a mapping");
    s_expect_error("nodes:\n  - abc\n",
                   "cluster.yaml:2:5: each node must be a mapping of name, endpoint, experts, layers, public_key, holds, mem_limit_mb; found 'abc'");
    s_expect_error("nodes:\n  - name: a\n    endpoint: tcp://a:1\n  - endpoint: tcp://b:1\n    experts: 1\n",
                   "cluster.yaml:4:5: missing key 'name' in node #2");
    s_expect_error("nodes:\n- name: a\n  experts: 1\n", "cluster.yaml:2:3: missing key 'endpoint' in node 'a'");
    s_expect_error("", "cluster.yaml:1:1: the file is empty (expected a mapping with at least 'nodes')");
    s_expect_error("# nothing here\n\n",
                   "cluster.yaml:3:1: the file is empty (expected a mapping with at least 'nodes')");
    s_expect_error(
        "- a\n",
        "cluster.yaml:1:1: the file must be a mapping of model, nodes, local and the other keys docs/CLUSTER.md lists; found a sequence");
    s_expect_error(
        "~\n", "cluster.yaml:1:1: the file must be a mapping of model, nodes, local and the other keys docs/CLUSTER.md lists; found no value");
    s_expect_error("nodes: [{name: a, endpoint: 'inproc://a'}]\n---\nnodes: []\n",
                   "cluster.yaml:2:1: only one YAML document is allowed");
    s_expect_error("local: 3\n", "cluster.yaml:1:8: 'local' must be a mapping of experts and layers, found '3'");
}

static void test_errors_values(void **state) {
    (void)state;
    s_expect_error("nodes:\n  - name: a\n    endpoint: tcp://a:1\n    mem_limit_mb: 6GB\n",
                   "cluster.yaml:4:19: 'mem_limit_mb' in node 'a' must be a number of MiB from 0 (no limit) to 16777216, "
                   "found '6GB'");
    s_expect_error_at("nodes:\n  - name: a\n    endpoint: tcp://a:1\n    mem_limit_mb: 16777217\n", "cluster.yaml:4:19: ",
                      "'mem_limit_mb' in node 'a' must be a number of MiB");
    const char *head = "nodes:\n  - name: a\n    endpoint: tcp://a:1\n";
    static const struct {
        const char *line, *want; // the node's 4th line, and the message
    } cases[] = {
        {"    experts: 7-2", "cluster.yaml:4:14: bad expert range '7-2'"},
        {"    experts: 0-3, 9-2", "cluster.yaml:4:14: bad expert range '9-2'"},
        {"    experts: 1-2-3", "cluster.yaml:4:14: bad expert range '1-2-3'"},
        {"    experts: -1", "cluster.yaml:4:14: bad expert range '-1'"},
        {"    experts: x", "cluster.yaml:4:14: bad expert id 'x'"},
        {"    experts: 0x10", "cluster.yaml:4:14: bad expert id '0x10'"},
        {"    experts: +3", "cluster.yaml:4:14: bad expert id '+3'"},
        {"    experts: 1,,2", "cluster.yaml:4:14: empty item in expert list '1,,2'"},
        {"    experts: ''", "cluster.yaml:4:14: empty expert set (write none for no experts)"},
        {"    experts: 256",
         "cluster.yaml:4:14: expert id '256' is too large (cluster files support expert ids up to 255)"},
        {"    experts: 99999999999999999999999", "cluster.yaml:4:14: expert id '99999999999999999999999' is too large "
                                                 "(cluster files support expert ids up to 255)"},
        {"    layers: 0-4096",
         "cluster.yaml:4:13: layer range '0-4096' is too large (cluster files support layer ids up to 4095)"},
        {"    experts: [0, all]", "cluster.yaml:4:18: 'all' must stand alone, not inside a list of expert ids"},
        {"    experts: 1, none", "cluster.yaml:4:14: 'none' must stand alone, not inside a list of expert ids"},
        {"    experts: [1, 7-2]", "cluster.yaml:4:18: bad expert range '7-2'"},
        {"    experts: [[1]]", "cluster.yaml:4:15: items of 'experts' must be expert ids or ranges, found a sequence"},
        {"    experts: [1, ~]", "cluster.yaml:4:18: items of 'experts' must be expert ids or ranges, found no value"},
        {"    experts: {a: 1}",
         "cluster.yaml:4:14: 'experts' must be expert ids such as 0-3, [1, 5], all or none; found a mapping"},
        {"    layers:",
         "cluster.yaml:4:12: 'layers' must be layer ids such as 0-3, [1, 5], all or none; found no value"},
        {"    name: b", "cluster.yaml:4:5: duplicate key 'name' in node 'a' (first at line 2)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, "%s%s\n", head, cases[i].line);
        s_expect_error(yaml, cases[i].want);
    }

    s_expect_error("wire: q4_0\n", "cluster.yaml:1:7: unknown wire encoding 'q4_0' (expected auto, f32, f16, bf16, q8_0, q8_1 or q8_k)");
    s_expect_error("wire: [f32]\n", "cluster.yaml:1:7: 'wire' must be a single value, found a sequence");
    s_expect_error("model: {a: b}\n", "cluster.yaml:1:8: 'model' must be a single value, found a mapping");
    s_expect_error("model:\n", "cluster.yaml:1:7: 'model' has no value");
    s_expect_error("model: ''\n", "cluster.yaml:1:8: the model path must be 1 to 4095 bytes long");
    static const char *const timeouts[] = {"0", "600001", "5s", "-1", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        char yaml[64], want[160];
        snprintf(yaml, sizeof yaml, "timeout_ms: %s\n", timeouts[i]);
        snprintf(want, sizeof want,
                 "cluster.yaml:1:13: 'timeout_ms' must be a number of milliseconds from 1 to 600000, found '%s'",
                 timeouts[i]);
        s_expect_error(yaml, want);
    }
    static const char *const retries[] = {"600001", "2s", "-1", "0.5"};
    for (size_t i = 0; i < sizeof retries / sizeof retries[0]; i++) {
        char yaml[64], want[160];
        snprintf(yaml, sizeof yaml, "retry_ms: %s\n", retries[i]);
        snprintf(want, sizeof want,
                 "cluster.yaml:1:11: 'retry_ms' must be a number of milliseconds from 0 (never) to 600000, found '%s'",
                 retries[i]);
        s_expect_error(yaml, want);
        snprintf(yaml, sizeof yaml, "heartbeat_ms: %s\n", retries[i]);
        snprintf(want, sizeof want,
                 "cluster.yaml:1:15: 'heartbeat_ms' must be a number of milliseconds from 0 (never) to 600000, found '%s'",
                 retries[i]);
        s_expect_error(yaml, want);
    }
    // dead_ms: off, or long enough for two of a node's transport PINGs.
    s_expect_error("dead_ms: 499\n",
                   "cluster.yaml:1:10: 'dead_ms' must be 0 (off) or a number of milliseconds from 500 to 600000, found '499'");
    s_expect_error("load_timeout_ms: 86400001\n",
                   "cluster.yaml:1:18: 'load_timeout_ms' must be a number of milliseconds from 0 (no bound while the node "
                   "reports progress) to 86400000, found '86400001'");
    s_expect_error("slow_ms: fast\n",
                   "cluster.yaml:1:10: 'slow_ms' must be a number of milliseconds from 0 (never) to 600000, found 'fast'");
}

static void test_errors_nodes(void **state) {
    (void)state;
    s_expect_error("nodes:\n  - name: pi-1\n    endpoint: tcp://a:1\n  - name: pi-1\n    endpoint: tcp://b:1\n",
                   "cluster.yaml:4:11: duplicate node name 'pi-1' (first at line 2)");
    s_expect_error("nodes:\n  - name: pi-1\n    endpoint: tcp://a:1\n  - name: pi-2\n    endpoint: tcp://a:1\n",
                   "cluster.yaml:5:15: duplicate endpoint 'tcp://a:1' (already used by node 'pi-1')");
    s_expect_error("nodes:\n  - name: pi 1\n",
                   "cluster.yaml:2:11: node name 'pi 1' may only contain letters, digits, '.', '_' and '-'");
    s_expect_error("nodes:\n  - name: ''\n", "cluster.yaml:2:11: node name '' must be 1 to 64 characters long");
    s_expect_error("nodes:\n  - name: [a]\n", "cluster.yaml:2:11: 'name' must be a single value, found a sequence");
    char yaml[512], want[256];
    snprintf(yaml, sizeof yaml, "nodes:\n  - name: %065d\n", 0);
    s_expect_error(yaml, "cluster.yaml:2:11: node name '0000000000000000000000000000000000000000...' must be 1 to 64 "
                         "characters long");
    snprintf(yaml, sizeof yaml, "nodes:\n  - name: %064d\n    endpoint: inproc://a\n", 0);
    mc_cluster_config_t *c = s_parse(yaml, "c.yaml");
    mc_cluster_config_destroy(&c);

    static const char *const bad[] = {
        "tcp://a",   "tcp://a:0",     "tcp://a:65536", "tcp://:5555", "tcp://*:5555",
        "tcp://a:b", "tcp://[]:5555", "tcp://[::1:5",  "tcp://a/b:1", "tcp://a:99999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(yaml, sizeof yaml, "nodes:\n  - name: a\n    endpoint: '%s'\n", bad[i]);
        snprintf(want, sizeof want,
                 "cluster.yaml:3:15: bad endpoint '%s' (expected tcp://HOST:PORT with PORT 1 to 65535)", bad[i]);
        s_expect_error(yaml, want);
    }
    s_expect_error("nodes:\n  - name: a\n    endpoint: http://a:1\n",
                   "cluster.yaml:3:15: endpoint 'http://a:1' must start with tcp://, ipc:// or inproc://");
    s_expect_error("nodes:\n  - name: a\n    endpoint: 'tcp://a b:1'\n",
                   "cluster.yaml:3:15: endpoint 'tcp://a b:1' contains a space or control character");
    s_expect_error("nodes:\n  - name: a\n    endpoint: \"tcp://a:1\\n\"\n",
                   "cluster.yaml:3:15: endpoint 'tcp://a:1?' contains a space or control character");
    s_expect_error("nodes:\n  - name: a\n    endpoint: ipc://\n",
                   "cluster.yaml:3:15: bad endpoint 'ipc://' (expected ipc://PATH, PATH 1 to 107 bytes)");
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://\n",
                   "cluster.yaml:3:15: bad endpoint 'inproc://' (expected inproc://NAME)");
    snprintf(yaml, sizeof yaml, "nodes:\n  - name: a\n    endpoint: ipc:///%0107d\n", 0);
    s_expect_error_at(yaml, "cluster.yaml:3:15: bad endpoint 'ipc:///0000",
                      "(expected ipc://PATH, PATH 1 to 107 bytes)");
    char long_ep[300];
    snprintf(long_ep, sizeof long_ep, "inproc://%0250d", 0);
    snprintf(yaml, sizeof yaml, "nodes:\n  - name: a\n    endpoint: %s\n", long_ep);
    s_expect_error_at(yaml, "cluster.yaml:3:15: endpoint 'inproc://000", "' is longer than 256 bytes");

    static const char *const good[] = {"tcp://10.0.0.11:5555", "tcp://[::1]:1", "tcp://my-host.lan:65535",
                                       "ipc:///tmp/moe.sock", "inproc://node-a"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(yaml, sizeof yaml, "nodes:\n  - name: a\n    endpoint: '%s'\n", good[i]);
        c = s_parse(yaml, "c.yaml");
        assert_string_equal(c->nodes[0].endpoint, good[i]);
        mc_cluster_config_destroy(&c);
    }

    // Node 1025 is refused at its mapping.
    size_t cap = 64 * (MC_CLUSTER_MAX_NODES + 2), len = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    len += (size_t)snprintf(big + len, cap - len, "nodes:\n");
    for (int i = 0; i <= MC_CLUSTER_MAX_NODES; i++)
        len += (size_t)snprintf(big + len, cap - len, "- {name: n%d, endpoint: 'inproc://%d'}\n", i, i);
    char err[MC_ERR_LEN];
    s_parse_fail(big, len, err);
    snprintf(want, sizeof want, "cluster.yaml:%d:3: too many nodes (at most %d)", MC_CLUSTER_MAX_NODES + 2,
             MC_CLUSTER_MAX_NODES);
    assert_string_equal(err, want);
    free(big);
}

static void test_errors_yaml(void **state) {
    (void)state;
    s_expect_error("wire: \"q8_0\n", "cluster.yaml:2:1: found unexpected end of stream "
                                     "(while scanning a quoted scalar at line 1, column 7)");
    s_expect_error("wire: f32\n- a\n",
                   "cluster.yaml:2:1: did not find expected key (while parsing a block mapping at line 1, column 1)");
    s_expect_error(
        "wire: f32\nnodes: ]\n",
        "cluster.yaml:2:8: did not find expected node content (while parsing a block node at line 2, column 8)");
    s_expect_error(
        "model: \"a\\q\"\n",
        "cluster.yaml:1:10: found unknown escape character (while parsing a quoted scalar at line 1, column 8)");
    s_expect_error_at("nodes:\n\t- name: a\n", "cluster.yaml:2:1: ", "found character that cannot start any token");
    s_expect_error_at("nodes:\n  - {name: a, endpoint: 'inproc://a'\n",
                      "cluster.yaml:3:1: ", "did not find expected ',' or '}'");
    // The reader reports byte offsets; they are turned into line:column too.
    s_expect_error("nodes:\n  - name: a\xff\n", "cluster.yaml:2:12: invalid leading UTF-8 octet (0xff)");
    s_expect_error("nodes:\n  - name: \xc3\xa9\x01\n", "cluster.yaml:2:12: control characters are not allowed (0x1)");
    char err[MC_ERR_LEN];
    static const char nul[] = "nodes:\n  - name: a\0b\n";
    s_parse_fail(nul, sizeof nul - 1, err);
    assert_string_equal(err, "cluster.yaml:2:12: control characters are not allowed (0x0)");
    s_expect_error("nodes:\n  - name: \"a\\0b\"\n", "cluster.yaml:2:11: NUL characters are not allowed");
    // UTF-16 (with its BOM) is not UTF-8, the only encoding read.
    static const char utf16[] = "\xff\xfen\0o\0";
    s_parse_fail(utf16, sizeof utf16 - 1, err);
    assert_non_null(strstr(err, "cluster.yaml:1:1: invalid leading UTF-8 octet"));

    // Without a file name, messages say <input>.
    char e2[MC_ERR_LEN];
    assert_null(mc_cluster_config_parse("x: 1", 4, NULL, e2));
    assert_string_equal(e2, "<input>:1:1: unknown key 'x' (expected model, wire, timeout_ms, retry_ms, heartbeat_ms, load_timeout_ms, dead_ms, slow_ms, transfer_mbps, secret_key, nodes, local, rebalance, discover, discover_keys, discover_experts, discover_layers)");
    assert_null(mc_cluster_config_parse(NULL, 1, NULL, NULL));
    assert_null(mc_cluster_config_parse(NULL, 0, "c.yaml", e2));
    assert_string_equal(e2, "c.yaml:1:1: the file is empty (expected a mapping with at least 'nodes')");
}

static void test_aliases(void **state) {
    (void)state;
    s_expect_error("nodes:\n  - &n {name: a, endpoint: 'inproc://a'}\n  - *n\n",
                   "cluster.yaml:3:5: aliases are not supported");
    s_expect_error("nodes:\n  - name: a\n    endpoint: inproc://a\n    experts: &e [1, 2]\n    layers: *e\n",
                   "cluster.yaml:5:13: aliases are not supported");
    // The billion-laughs shape stops at its first alias.
    s_expect_error("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n",
                   "cluster.yaml:1:1: unknown key 'a' (expected model, wire, timeout_ms, retry_ms, heartbeat_ms, load_timeout_ms, dead_ms, slow_ms, transfer_mbps, secret_key, nodes, local, rebalance, discover, discover_keys, discover_experts, discover_layers)");
    s_expect_error("local:\n  experts: &a [1]\n  layers: [*a, *a]\n", "cluster.yaml:3:12: aliases are not supported");
    // An anchor alone is harmless.
    mc_cluster_config_t *c = s_parse("nodes: &n [{name: a, endpoint: 'inproc://a', experts: &e 3}]\n", "c.yaml");
    assert_int_equal(c->n_nodes, 1);
    mc_cluster_config_destroy(&c);
}

static void test_hostile_sizes(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    // Deep nesting fails at the first level the schema does not allow.
    enum { DEPTH = 100000 };
    char *deep = malloc(DEPTH + 16);
    assert_non_null(deep);
    memcpy(deep, "nodes: ", 7);
    memset(deep + 7, '[', DEPTH);
    s_parse_fail(deep, DEPTH + 7, err);
    assert_string_equal(err, "cluster.yaml:1:9: each node must be a mapping of name, endpoint, experts, layers, public_key, holds, "
                             "mem_limit_mb; found a sequence");
    memset(deep, '{', DEPTH);
    s_parse_fail(deep, DEPTH, err);
    assert_string_equal(err, "cluster.yaml:1:2: expected a key, found a mapping");
    free(deep);

    // Size cap: one byte over is refused before parsing.
    size_t n = MC_CLUSTER_MAX_FILE_BYTES + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, '#', n);
    s_parse_fail(big, n, err);
    assert_string_equal(err, "cluster.yaml: the file is larger than 1048576 bytes");
    // Exactly at the cap it is parsed (a comment, so: empty).
    s_parse_fail(big, n - 1, err);
    assert_non_null(strstr(err, "the file is empty"));
    free(big);

    // A huge id list stays within the sets' bounds.
    size_t cap = 400000, len = 0;
    char *ids = malloc(cap);
    assert_non_null(ids);
    len += (size_t)snprintf(ids, cap, "nodes:\n  - name: a\n    endpoint: inproc://a\n    layers: [");
    for (int i = 0; i < 60000; i++) len += (size_t)snprintf(ids + len, cap - len, "%d,", i % 4096);
    len += (size_t)snprintf(ids + len, cap - len, "0-4095]\n");
    mc_cluster_config_t *c = mc_cluster_config_parse(ids, len, "c.yaml", err);
    assert_non_null(c);
    assert_true(s_all_layers(&c->nodes[0].layers));
    mc_cluster_config_destroy(&c);
    free(ids);
}

static uint64_t s_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

// One random input: raw bytes, YAML-ish token soup, or the example mutated.
static size_t s_random_input(uint64_t *rng, char *buf, size_t cap) {
    static const char *const tokens[] = {
        "nodes", "name",      "endpoint",   "experts",  "layers",      "local", "model",  "wire",  "timeout_ms", "retry_ms", ":",
        ": ",    " ",         "\n",         "  ",       "    ",        "- ",    "[",      "]",     "{",          "}",
        ", ",    ",",         "0-7",        "7-2",      "all",         "none",  "3",      "65536", "-",          "q8_0",
        "f32",   "tcp://a:1", "inproc://x", "ipc:///s", "&a ",         "*a",    "!!str ", "\"",    "'",          "#",
        "---\n", "...\n",     "? ",         "|\n",      ">\n",         "\t",    "~",      "\\0",   "\xc3\xa9",   "\xff",
        "0",     "255",       "4095",       "5000",     "%YAML 1.1\n", "!x ",   "\r\n",
    };
    const size_t n_tokens = sizeof tokens / sizeof tokens[0];
    size_t len = 0;
    switch (s_rand(rng) % 3) {
    case 0:
        len = s_rand(rng) % 200;
        for (size_t i = 0; i < len; i++) buf[i] = (char)s_rand(rng);
        break;
    case 1:
        for (size_t k = s_rand(rng) % 60; k > 0; k--) {
            const char *t = tokens[s_rand(rng) % n_tokens];
            size_t tl = strlen(t);
            if (len + tl > cap) break;
            memcpy(buf + len, t, tl);
            len += tl;
        }
        break;
    default:
        len = sizeof s_example - 1;
        memcpy(buf, s_example, len);
        for (size_t k = 1 + s_rand(rng) % 4; k > 0; k--) {
            size_t at = s_rand(rng) % len;
            switch (s_rand(rng) % 3) {
            case 0: buf[at] = (char)s_rand(rng); break;
            case 1: memmove(buf + at, buf + at + 1, len - at - 1), len--; break;
            default:
                if (len < cap) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = tokens[s_rand(rng) % n_tokens][0];
                    len++;
                }
            }
        }
    }
    return len;
}

static void test_hostile_random(void **state) {
    (void)state;
    enum { ITERS = 3000, CAP = 2048 };
    char *buf = malloc(CAP);
    assert_non_null(buf);
    uint64_t rng = 0x9e3779b97f4a7c15u;
    int accepted = 0;
    for (int it = 0; it < ITERS; it++) {
        size_t len = s_random_input(&rng, buf, CAP);
        char err[MC_ERR_LEN] = "";
        mc_cluster_config_t *c = mc_cluster_config_parse(buf, len, "cluster.yaml", err);
        if (!c) {
            // Every failure is located in the file.
            if (strncmp(err, "cluster.yaml:", 13)) fail_msg("iteration %d: unlocated error '%s'", it, err);
            assert_true(strlen(err) < MC_ERR_LEN);
            continue;
        }
        accepted++;
        mc_cluster_config_check(c, 32, 8, err);
        mc_cluster_config_t *back = s_round_trip(c, "cluster.yaml");
        s_assert_same(c, back);
        mc_cluster_config_destroy(&back);
        mc_cluster_config_destroy(&c);
    }
    assert_true(accepted > 50); // the mutated examples exercise the success path too
    free(buf);
}

static void test_round_trip(void **state) {
    (void)state;
    mc_cluster_config_t *c = s_parse(s_example, "conf/cluster.yaml");
    mc_cluster_config_t *back = s_round_trip(c, "conf/cluster.yaml");
    s_assert_same(c, back);
    mc_cluster_config_destroy(&back);
    mc_cluster_config_destroy(&c);

    // Built in code, with strings that need quoting and sparse sets.
    char err[MC_ERR_LEN];
    c = mc_cluster_config_new();
    assert_non_null(c);
    c->wire = MC_WIRE_F16;
    c->timeout_ms = 1;
    assert_int_equal(mc_cluster_config_write(c, stdout, err), MC_ERR_ARG); // no nodes yet
    assert_string_equal(err, "cluster write: a cluster needs at least one node");
    assert_int_equal(mc_cluster_config_set_model(c, "/m \"q\" \\ \t\xc3\xa9 #x: - [y].gguf", err), MC_OK);
    assert_string_equal(c->model_resolved, c->model);
    mc_expert_set_t e;
    mc_layer_set_t l;
    assert_int_equal(mc_expert_set_parse("0, 2, 4-9, 255", &e, err), MC_OK);
    assert_int_equal(mc_layer_set_parse("1, 3, 4095", &l, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(c, "n-1.x_y", "tcp://[fe80::1]:5555", &e, &l, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(c, "n2", "ipc:///tmp/s", NULL, NULL, err), MC_OK);
    assert_int_equal(mc_cluster_config_add_node(c, "n2", "ipc:///tmp/t", NULL, NULL, err), MC_ERR_ARG);
    assert_string_equal(err, "duplicate node name 'n2'");
    assert_int_equal(mc_cluster_config_add_node(c, "n3", "ipc:///tmp/s", NULL, NULL, err), MC_ERR_ARG);
    assert_string_equal(err, "duplicate endpoint 'ipc:///tmp/s' (already used by node 'n2')");
    assert_int_equal(mc_cluster_config_add_node(c, "n 3", "inproc://z", NULL, NULL, err), MC_ERR_ARG);
    assert_int_equal(mc_cluster_config_set_model(c, "", err), MC_ERR_ARG);
    assert_int_equal(c->n_nodes, 2);
    assert_int_equal(mc_expert_set_parse("3", &c->local_experts, err), MC_OK);
    assert_int_equal(mc_layer_set_parse("none", &c->local_layers, err), MC_OK);
    c->nodes[1].mem_limit_mb = 6000;
    back = s_round_trip(c, NULL);
    assert_int_equal(back->nodes[1].mem_limit_mb, 6000);
    s_assert_same(c, back);
    mc_cluster_config_destroy(&back);
    // Through a real file.
    char dir[256], path[300];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/cluster.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(mc_cluster_config_write(c, f, err), MC_OK);
    fclose(f);
    back = mc_cluster_config_load(path, err);
    assert_non_null(back);
    assert_string_equal(back->path, path);
    s_assert_same(c, back);
    mc_cluster_config_destroy(&back);
    c->wire = (mc_wire_enc_t)9;
    assert_int_equal(mc_cluster_config_write(c, stdout, err), MC_ERR_ARG);
    mc_cluster_config_destroy(&c);
    mc_test_rmtree(dir);
}

// `rebalance:`: parsed with its defaults, resolved against the file,
// written back and parsed again to the same values; every bound and
// unknown key refused naming the place.
static void test_rebalance(void **state) {
    (void)state;
    const char *node = "nodes:\n  - name: a\n    endpoint: tcp://h:1\n";
    char yaml[512];
    snprintf(yaml, sizeof yaml, "rebalance:\n  every_s: 300\n  min_gain: 0.10\n  machines: m.yaml\n%s", node);
    mc_cluster_config_t *c = s_parse(yaml, "conf/cluster.yaml");
    assert_true(c->rebalance.on);
    assert_int_equal(c->rebalance.every_s, 300);
    assert_true(c->rebalance.min_gain == 0.10);
    assert_string_equal(c->rebalance.machines, "m.yaml");
    assert_string_equal(c->rebalance.machines_resolved, "conf/m.yaml");
    assert_int_equal(c->rebalance.window, MC_CLUSTER_DEFAULT_REBALANCE_WINDOW);
    assert_true(c->rebalance.tolerance == 0.05);
    char err[MC_ERR_LEN];
    mc_cluster_config_t *copy = mc_cluster_config_clone(c, err);
    if (!copy) fail_msg("%s", err);
    assert_true(copy->rebalance.on);
    assert_int_equal(copy->rebalance.every_s, 300);
    assert_true(copy->rebalance.min_gain == 0.10);
    assert_string_equal(copy->rebalance.machines_resolved, "conf/m.yaml");
    // copy_settings carries the block to a config built in code.
    mc_cluster_config_t *built = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_copy_settings(built, c, err), MC_OK);
    assert_true(built->rebalance.on);
    assert_string_equal(built->rebalance.machines_resolved, "conf/m.yaml");
    mc_cluster_config_destroy(&built);
    mc_cluster_config_destroy(&copy);
    mc_cluster_config_destroy(&c);
    snprintf(yaml, sizeof yaml,
             "rebalance: {every_s: 1, min_gain: 0, machines: /m.yaml, window: 4, tolerance: 1}\n%s", node);
    c = s_parse(yaml, "cluster.yaml");
    assert_int_equal(c->rebalance.every_s, 1);
    assert_int_equal(c->rebalance.window, 4);
    assert_true(c->rebalance.tolerance == 1);
    assert_string_equal(c->rebalance.machines_resolved, "/m.yaml");
    mc_cluster_config_destroy(&c);
    // A config without the block has it off.
    c = s_parse(node, "cluster.yaml");
    assert_false(c->rebalance.on);
    mc_cluster_config_destroy(&c);
    static const struct {
        const char *block, *want;
    } bad[] = {
        {"{every_s: 0, min_gain: 0.1, machines: m}", "'every_s' in 'rebalance' must be a number of seconds from 1 to 86400"},
        {"{every_s: 86401, min_gain: 0.1, machines: m}", "'every_s' in 'rebalance'"},
        {"{every_s: 5, min_gain: 10, machines: m}", "'min_gain' in 'rebalance' must be a number at least 0 and below 10"},
        {"{every_s: 5, min_gain: -0.1, machines: m}", "'min_gain' in 'rebalance'"},
        {"{every_s: 5, min_gain: nan, machines: m}", "'min_gain' in 'rebalance'"},
        {"{every_s: 5, min_gain: 0x1, machines: m}", "'min_gain' in 'rebalance'"},
        {"{every_s: 5, min_gain: 0.1, machines: m, window: 3}", "'window' in 'rebalance' must be a number of decode steps"},
        {"{every_s: 5, min_gain: 0.1, machines: m, tolerance: 1.5}", "'tolerance' in 'rebalance' must be a share from 0 to 1"},
        {"{every_s: 5, min_gain: 0.1, machines: m, speed: 1}", "unknown key 'speed' in 'rebalance' (expected every_s, min_gain, "
                                                              "machines, window, tolerance)"},
        {"{every_s: 5, min_gain: 0.1, machines: m, every_s: 6}", "duplicate key 'every_s' in 'rebalance'"},
        {"{min_gain: 0.1, machines: m}", "missing key 'every_s' in 'rebalance'"},
        {"{every_s: 5, machines: m}", "missing key 'min_gain' in 'rebalance'"},
        {"{every_s: 5, min_gain: 0.1}", "missing key 'machines' in 'rebalance'"},
        {"{every_s: [5], min_gain: 0.1, machines: m}", "'every_s' must be a single value"},
        {"300", "'rebalance' must be a mapping of every_s, min_gain, machines, window, tolerance"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(yaml, sizeof yaml, "rebalance: %s\n%s", bad[i].block, node);
        s_expect_error_at(yaml, "cluster.yaml:1:", bad[i].want);
    }
    // The setter checks as the parser does.
    c = mc_cluster_config_new();
    assert_int_equal(mc_cluster_config_set_rebalance(c, 0, 0.1, "m", 32, 0.05, err), MC_ERR_ARG);
    assert_int_equal(mc_cluster_config_set_rebalance(c, 5, 10, "m", 32, 0.05, err), MC_ERR_ARG);
    assert_false(c->rebalance.on);
    assert_int_equal(mc_cluster_config_set_rebalance(c, 5, 0.2, "m", 32, 0.05, err), MC_OK);
    assert_true(c->rebalance.on);
    mc_cluster_config_destroy(&c);
}

static void test_load(void **state) {
    (void)state;
    char dir[256], path[300], err[MC_ERR_LEN];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/models", dir);
    assert_null(mc_cluster_config_load(path, err));
    assert_non_null(strstr(err, "cannot open"));

    snprintf(path, sizeof path, "%s/cluster.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s_example, f);
    fclose(f);
    mc_cluster_config_t *c = mc_cluster_config_load(path, err);
    assert_non_null(c);
    char want[400];
    snprintf(want, sizeof want, "%s/models/mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf", dir);
    assert_string_equal(c->model_resolved, want);
    mc_cluster_config_destroy(&c);

    // Errors name the path as given.
    f = fopen(path, "w");
    fputs("nodes:\n  - name: a\n    endpont: x\n", f);
    fclose(f);
    assert_null(mc_cluster_config_load(path, err));
    snprintf(want, sizeof want, "%s:3:5: unknown key 'endpont' in node 'a'", path);
    assert_memory_equal(err, want, strlen(want));

    f = fopen(path, "w");
    for (unsigned i = 0; i <= MC_CLUSTER_MAX_FILE_BYTES / 8; i++) fputs("#######\n", f);
    fclose(f);
    assert_null(mc_cluster_config_load(path, err));
    snprintf(want, sizeof want, "%s: the file is larger than 1048576 bytes", path);
    assert_string_equal(err, want);

    assert_null(mc_cluster_config_load(dir, err)); // a directory
    assert_non_null(strstr(err, "not a readable regular file"));
    assert_null(mc_cluster_config_load(NULL, NULL));
    mc_test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),        cmocka_unit_test(test_id_sets),
        cmocka_unit_test(test_set_format),     cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_wire_names),     cmocka_unit_test(test_model_path), cmocka_unit_test(test_keys), cmocka_unit_test(test_holds),
        cmocka_unit_test(test_check_coverage), cmocka_unit_test(test_check_beyond),
        cmocka_unit_test(test_discover),
        cmocka_unit_test(test_errors_keys),    cmocka_unit_test(test_errors_structure),
        cmocka_unit_test(test_errors_values),  cmocka_unit_test(test_errors_nodes),
        cmocka_unit_test(test_errors_yaml),    cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_hostile_sizes),  cmocka_unit_test(test_hostile_random),
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_load), cmocka_unit_test(test_rebalance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
