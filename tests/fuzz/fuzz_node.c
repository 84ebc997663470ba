/*
 * fuzz_node: any bytes as a message to a live expert node (a small Q4_0
 * model, every expert assigned), through decoding, validation and the
 * expert computation. Whatever the node answers must be a message a
 * coordinator accepts. The node keeps its state between inputs, as a
 * serving node does (an input may change its placement).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_seed.h"
#include "mkmodel.h"
#include "model.h"
#include "node.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mc_node_t *s_node;
static mc_wire_limits_t s_coord; // what a coordinator accepts from this node

// Encodes m, hands it to the node (the reply must be the expected kind) and,
// with MC_FUZZ_SEEDS=DIR, also writes it there as a seed.
static void s_feed(const mc_wire_msg_t *m, mc_wire_kind_t want, const char *seed) {
    char err[MC_ERR_LEN];
    uint8_t *buf, *reply;
    size_t len, reply_len;
    mc_wire_msg_t r;
    if (mc_wire_encode(m, &buf, &len, err) != MC_OK ||
        mc_node_handle(s_node, "fuzz", 4, buf, len, &reply, &reply_len, err) != MC_OK || !reply ||
        mc_wire_decode(&s_coord, reply, reply_len, &r, NULL, err) != MC_OK || r.kind != want) {
        fprintf(stderr, "fuzz_node: setup message %s failed\n", seed);
        abort();
    }
    mc_wire_msg_free(&r);
    free(reply);
    mc_fuzz_seed_write(seed, buf, len);
    free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("MC_LOG", "error", 0); // a warning per dropped input would drown the fuzzer's output
    char dir[] = "/tmp/mc-fuzz-node-XXXXXX", path[64], err[MC_ERR_LEN];
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.dim = 32, mp.ffn = 64, mp.n_layer = 2, mp.n_expert = 4, mp.n_vocab = 416, mp.type = MC_DTYPE_Q4_0;
    if (mc_mkmodel_write(&mp, path, err) != MC_OK) abort();
    mc_node_params_t np = mc_node_params_default();
    np.model = path, np.name = "fuzz", np.threads = 1;
    s_node = mc_node_new(&np, err);
    mc_model_t *m = mc_model_open(path, err);
    if (!s_node || !m) abort();
    unlink(path); // both keep their mapping
    rmdir(dir);
    s_coord = mc_wire_limits(m);

    mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1};
    msg.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "c"};
    s_feed(&msg, MC_WIRE_MSG_HELLO, "hello");
    uint8_t held[2 * 4];
    memset(held, 1, sizeof held);
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ASSIGN, .request_id = 2};
    msg.u.assign = (mc_wire_assign_t){.session_id = 3, .n_layer = 2, .n_expert = 4, .held = held};
    s_feed(&msg, MC_WIRE_MSG_READY, "assign");
    float x[3 * 32];
    for (int i = 0; i < 3 * 32; i++) x[i] = (float)((i * 7) % 11) - 5.f;
    int32_t experts[3 * 2] = {0, 3, 1, 2, 2, -1};
    float weights[3 * 2] = {0.6f, 0.4f, 0.5f, 0.5f, 1.f, 0.f};
    uint8_t q8[3 * 34];
    mc_wire_rows_encode(MC_WIRE_Q8_0, x, 3, 32, q8);
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_REQUEST, .request_id = 4};
    msg.u.request = (mc_wire_request_t){1, MC_WIRE_Q8_0, 3, 32, q8, sizeof q8, 2, experts, weights};
    s_feed(&msg, MC_WIRE_MSG_RESULT, "request-q8_0");
    msg.u.request = (mc_wire_request_t){0, MC_WIRE_F32, 3, 32, (const uint8_t *)x, sizeof x, 2, experts, weights};
    s_feed(&msg, MC_WIRE_MSG_RESULT, "request-f32");
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 5};
    msg.u.heartbeat = 1;
    s_feed(&msg, MC_WIRE_MSG_HEARTBEAT, "heartbeat");
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 6};
    s_feed(&msg, MC_WIRE_MSG_STATS, "stats");
    mc_model_destroy(&m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[MC_ERR_LEN];
    uint8_t *reply;
    size_t reply_len;
    if (mc_node_handle(s_node, "fuzz", 4, data, size, &reply, &reply_len, err) != MC_OK) abort();
    if (!reply) return 0;
    mc_wire_msg_t r;
    if (mc_wire_decode(&s_coord, reply, reply_len, &r, NULL, err) != MC_OK) {
        fprintf(stderr, "fuzz_node: the node answered with a message a coordinator refuses: %s\n", err);
        abort();
    }
    mc_wire_msg_free(&r);
    free(reply);
    return 0;
}
