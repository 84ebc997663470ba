/*
 * fuzz_node: any bytes as a message to two live expert nodes (small Q4_0 and
 * Q4_K models, every expert assigned), through decoding, validation and the
 * expert computation, rows used as they arrive (Q8_0 and Q8_K blocks) or
 * converted. Whatever a node answers must be a message a coordinator
 * accepts. The nodes keep their state between inputs, as a serving node
 * does (an input may change a placement).
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
#include "slice_index.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// A node and what a coordinator accepts from it.
typedef struct {
    mc_node_t *node;
    mc_wire_limits_t coord;
} s_target_t;

static s_target_t s_targets[2]; // Q4_0 weights (dim 32), Q4_K weights (dim 256)

// Encodes m, hands it to node t (the reply must be the expected kind) and,
// with MC_FUZZ_SEEDS=DIR, also writes it there as a seed.
static void s_feed(const s_target_t *t, const mc_wire_msg_t *m, mc_wire_kind_t want, const char *seed) {
    char err[MC_ERR_LEN];
    uint8_t *buf, *reply;
    size_t len, reply_len;
    mc_wire_msg_t r;
    if (mc_wire_encode(m, &buf, &len, err) != MC_OK ||
        mc_node_handle(t->node, "fuzz", 4, buf, len, &reply, &reply_len, err) != MC_OK || !reply ||
        mc_wire_decode(&t->coord, reply, reply_len, &r, NULL, err) != MC_OK || r.kind != want) {
        fprintf(stderr, "fuzz_node: setup message %s failed\n", seed);
        abort();
    }
    mc_wire_msg_free(&r);
    free(reply);
    mc_fuzz_seed_write(seed, buf, len);
    free(buf);
}

// A node on a fresh model of `type` and width dim, every expert placed, and
// seeds of each message kind (rows in `enc`, the blocks its kernels take).
static void s_target_init(s_target_t *t, mc_dtype_t type, uint32_t dim, mc_wire_enc_t enc, const char *tag) {
    char dir[] = "/tmp/mc-fuzz-node-XXXXXX", path[64], err[MC_ERR_LEN], seed[64];
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.dim = dim, mp.ffn = dim, mp.n_layer = 2, mp.n_expert = 4, mp.n_vocab = 416, mp.type = type;
    if (mc_mkmodel_write(&mp, path, err) != MC_OK) abort();
    mc_node_params_t np = mc_node_params_default();
    np.model = path, np.name = "fuzz", np.threads = 1;
    t->node = mc_node_new(&np, err);
    mc_model_t *m = mc_model_open(path, err);
    if (!t->node || !m) abort();
    unlink(path); // both keep their mapping
    rmdir(dir);
    t->coord = mc_wire_limits(m);

    mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1};
    msg.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "c"};
    snprintf(seed, sizeof seed, "hello-%s", tag);
    s_feed(t, &msg, MC_WIRE_MSG_HELLO, seed);
    uint8_t held[2 * 4], hashes[2 * 4 * MC_SLICE_HASH_BYTES];
    memset(held, 1, sizeof held);
    for (uint32_t i = 0; i < 2 * 4; i++)
        if (mc_slice_hash(m, i / 4, i % 4, hashes + i * MC_SLICE_HASH_BYTES) != MC_OK) abort();
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ASSIGN, .request_id = 2};
    msg.u.assign = (mc_wire_assign_t){.session_id = 3, .n_layer = 2, .n_expert = 4, .held = held, .hashes = hashes};
    snprintf(seed, sizeof seed, "assign-%s", tag);
    s_feed(t, &msg, MC_WIRE_MSG_READY, seed);
    float *x = malloc(3 * dim * sizeof(float));
    uint8_t *rows = malloc(3 * mc_wire_row_bytes(enc, dim));
    if (!x || !rows) abort();
    for (uint32_t i = 0; i < 3 * dim; i++) x[i] = (float)((i * 7) % 11) - 5.f;
    int32_t experts[3 * 2] = {0, 3, 1, 2, 2, -1};
    float weights[3 * 2] = {0.6f, 0.4f, 0.5f, 0.5f, 1.f, 0.f};
    mc_wire_rows_encode(enc, x, 3, dim, rows);
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_REQUEST, .request_id = 4};
    msg.u.request = (mc_wire_request_t){1, enc, 3, dim, rows, 3 * mc_wire_row_bytes(enc, dim), 2, experts, weights,
                                        MC_WIRE_F32};
    snprintf(seed, sizeof seed, "request-%s-%s", tag, mc_wire_enc_name(enc));
    s_feed(t, &msg, MC_WIRE_MSG_RESULT, seed);
    msg.u.request = (mc_wire_request_t){0, MC_WIRE_F32, 3, dim, (const uint8_t *)x, 3 * dim * sizeof(float), 2,
                                        experts, weights, MC_WIRE_BF16};
    snprintf(seed, sizeof seed, "request-%s-f32", tag);
    s_feed(t, &msg, MC_WIRE_MSG_RESULT, seed);
    free(x), free(rows);
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 5};
    msg.u.heartbeat = 1;
    snprintf(seed, sizeof seed, "heartbeat-%s", tag);
    s_feed(t, &msg, MC_WIRE_MSG_HEARTBEAT, seed);
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 6};
    snprintf(seed, sizeof seed, "stats-%s", tag);
    s_feed(t, &msg, MC_WIRE_MSG_STATS, seed);
    // A Release gets no reply: written as a seed only.
    msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_RELEASE, .request_id = 7, .u.release = 3};
    snprintf(seed, sizeof seed, "release-%s", tag);
    uint8_t *buf;
    size_t len;
    if (mc_wire_encode(&msg, &buf, &len, NULL) != MC_OK) abort();
    mc_fuzz_seed_write(seed, buf, len);
    free(buf);
    mc_model_destroy(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("MC_LOG", "error", 0); // a warning per dropped input would drown the fuzzer's output
    s_target_init(&s_targets[0], MC_DTYPE_Q4_0, 32, MC_WIRE_Q8_0, "q4_0");
    s_target_init(&s_targets[1], MC_DTYPE_Q4_K, 256, MC_WIRE_Q8_K, "q4_k");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int i = 0; i < 2; i++) {
        char err[MC_ERR_LEN];
        uint8_t *reply;
        size_t reply_len;
        if (mc_node_handle(s_targets[i].node, "fuzz", 4, data, size, &reply, &reply_len, err) != MC_OK) abort();
        if (!reply) continue;
        mc_wire_msg_t r;
        if (mc_wire_decode(&s_targets[i].coord, reply, reply_len, &r, NULL, err) != MC_OK) {
            fprintf(stderr, "fuzz_node: the node answered with a message a coordinator refuses: %s\n", err);
            abort();
        }
        mc_wire_msg_free(&r);
        free(reply);
    }
    return 0;
}
