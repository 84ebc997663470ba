/*
 * fuzz_wire: any bytes from the network through the one decode function, as
 * a node (experts it holds) and as a coordinator (any expert) would decode
 * them. What decodes must encode again and decode to the same message kind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_seed.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_seed(const char *name, const mc_wire_msg_t *m) {
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;
    if (mc_wire_encode(m, &buf, &len, err) != MC_OK) abort();
    mc_fuzz_seed_write(name, buf, len);
    free(buf);
}

// With MC_FUZZ_SEEDS=DIR: write one valid message of each kind there first
// (deploy/fuzz.sh starts the corpus with them).
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("MC_FUZZ_SEEDS")) return 0;
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1};
    m.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = 42, .threads = 2, .memory_bytes = 1u << 30};
    strcpy(m.u.hello.name, "pi-1");
    s_seed("hello", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 2};
    m.u.heartbeat = 7;
    s_seed("heartbeat", &m);
    uint8_t held[4 * 8], hashes[4 * 8 * MC_WIRE_HASH_BYTES];
    for (int i = 0; i < 4 * 8; i++) held[i] = (uint8_t)(i % 3 == 0);
    for (size_t i = 0; i < sizeof hashes; i++) hashes[i] = (uint8_t)(i * 13);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ASSIGN, .request_id = 3};
    m.u.assign = (mc_wire_assign_t){.session_id = 9, .n_layer = 4, .n_expert = 8, .held = held, .hashes = hashes};
    s_seed("assign", &m);
    // Two q8_0 rows of 64 values (2 blocks each) for experts 0 and 2.
    uint8_t rows[2 * 2 * 34];
    float x[2 * 64];
    for (int i = 0; i < 2 * 64; i++) x[i] = (float)(i % 17) - 8.f;
    mc_wire_rows_encode(MC_WIRE_Q8_0, x, 2, 64, rows);
    int32_t experts[4] = {0, 2, 2, -1};
    float weights[4] = {0.75f, 0.25f, 1.f, 0.f};
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_REQUEST, .request_id = 4};
    m.u.request = (mc_wire_request_t){.layer = 1, .enc = MC_WIRE_Q8_0, .n_rows = 2, .dim = 64, .rows = rows,
                                      .rows_len = sizeof rows, .k = 2, .experts = experts, .weights = weights};
    s_seed("request", &m);
    uint8_t rows1[2 * 2 * 36];
    mc_wire_rows_encode(MC_WIRE_Q8_1, x, 2, 64, rows1);
    m.u.request.enc = MC_WIRE_Q8_1, m.u.request.rows = rows1, m.u.request.rows_len = sizeof rows1;
    m.u.request.res_enc = MC_WIRE_F16;
    s_seed("request-q8_1", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_RESULT, .request_id = 4};
    m.u.result = (mc_wire_result_t){.n_rows = 2, .dim = 64, .enc = MC_WIRE_F32, .rows = (const uint8_t *)x,
                                    .rows_len = sizeof x, .compute_us = 100};
    s_seed("result", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ERROR, .request_id = 5};
    m.u.error.code = MC_ERR_RANGE;
    strcpy(m.u.error.message, "layer 9 out of range");
    s_seed("error", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_STATS, .request_id = 6};
    m.u.stats = (mc_wire_stats_t){1, 2, 3, 4, 5, 6};
    s_seed("stats", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_PROGRESS, .request_id = 3};
    m.u.progress = (mc_wire_progress_t){1u << 20, 6u << 20, 1u << 19, 4u << 20};
    s_seed("progress", &m);
    // What nodes without a model file exchange (the transfer socket's too).
    static const uint8_t blob[] = "GGUF metadata of a model, as bytes";
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_MODEL_INFO, .request_id = 8};
    m.u.model_info = (mc_wire_model_info_t){42, blob, sizeof blob};
    s_seed("model-info", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_FETCH_OPEN, .request_id = 9, .u.fetch_open = 9};
    s_seed("fetch-open", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_SLICE_REQUEST, .request_id = 10};
    m.u.slice_request = (mc_wire_slice_request_t){1, 2, 4096, 4096, 1u << 20};
    s_seed("slice-request", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_SLICE_DATA, .request_id = 10};
    m.u.slice_data = (mc_wire_slice_data_t){1, 2, 4096, (const uint8_t *)x, sizeof x};
    s_seed("slice-data", &m);
    uint8_t types[4 * 8 * 3];
    memset(types, 8, sizeof types); // Q8_0
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ASSIGN, .request_id = 11};
    m.u.assign = (mc_wire_assign_t){.session_id = 9, .n_layer = 4, .n_expert = 8, .held = held, .hashes = hashes,
                                     .types = types};
    s_seed("assign-types", &m);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_RELEASE, .request_id = 7};
    m.u.release = 9;
    s_seed("release", &m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // A small model: 4 layers, 8 experts, dim 64; the node holds the even experts.
    static uint8_t held[4 * 8];
    for (int i = 0; i < 4 * 8; i++) held[i] = (uint8_t)(i % 2 == 0);
    const mc_wire_limits_t as_node = {4, 8, 64, 16, 2, held, 64};
    const mc_wire_limits_t as_coord = {4, 8, 64, 16, 2, NULL, 64};
    const mc_wire_limits_t *lims[2] = {&as_node, &as_coord};
    for (int l = 0; l < 2; l++) {
        char err[256];
        mc_wire_msg_t m;
        if (mc_wire_decode(lims[l], data, size, &m, NULL, err) != MC_OK) continue;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (mc_wire_encode(&m, &buf, &len, err) != MC_OK) abort(); // a decoded message is encodable
        mc_wire_msg_t again;
        if (mc_wire_decode(lims[l], buf, len, &again, NULL, err) != MC_OK || again.kind != m.kind ||
            again.request_id != m.request_id)
            abort();
        mc_wire_msg_free(&again);
        free(buf);
        mc_wire_msg_free(&m);
    }
    return 0;
}
