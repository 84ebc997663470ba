/*
 * test_node: an expert node served from a thread of this process on
 * tcp://127.0.0.1 (a free port), talked to through DEALER sockets as a
 * coordinator would. Checks the handshake, placements, their ownership and
 * the weights they name (a file with other weights is refused), that
 * results are bit-identical to computing the same rows locally (f32 and
 * Q8_0 wires), and that malformed messages are refused or dropped while
 * the node keeps serving. Each test's teardown stops the node and closes
 * every socket even when the test fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "keys.h"
#include "mkmodel.h"
#include "model.h"
#include "moe.h"
#include "moe.pb-c.h"
#include "node.h"
#include "pool.h"
#include "profile.h"
#include "slice_index.h"
#include "testutil.h"
#include "wire.h"

#define NAME "test-node"
#define MAX_CLIENTS 3
#define MAX_PAIRS 16 // every model here: 2 layers x 8 experts

static char s_dir[256];

typedef struct {
    mc_node_t *node;
    pthread_t thread;
    bool running;
    atomic_int stop;
    mc_err_t run_rc;
    char run_err[MC_ERR_LEN];
    void *zctx;
    void *clients[MAX_CLIENTS];
    mc_wire_limits_t lim; // what a coordinator accepts from this node
    char path[512];       // the node's model
    uint8_t hashes[MAX_PAIRS * MC_SLICE_HASH_BYTES]; // of the last placement s_assign_msg made
} s_fix_t;

// The slice hashes of the pairs in held, as a coordinator with the model
// at path sends them (held's order).
static void s_hashes(const char *path, const uint8_t *held, uint8_t *out) {
    mc_model_t *m = mc_model_open(path, NULL);
    assert_non_null(m);
    assert_true(m->hp.n_layer * m->hp.n_expert <= MAX_PAIRS);
    for (uint32_t l = 0, n = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++)
            if (held[l * m->hp.n_expert + e]) assert_int_equal(mc_slice_hash(m, l, e, out + n++ * MC_SLICE_HASH_BYTES), MC_OK);
    mc_model_destroy(&m);
}

static const char *s_model(const char *name, mc_dtype_t type, uint32_t dim, uint32_t ffn, char *path, size_t cap) {
    char err[MC_ERR_LEN];
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = type, p.dim = dim, p.ffn = ffn, p.seed = 5;
    snprintf(path, cap, "%s/%s.gguf", s_dir, name);
    if (access(path, R_OK) != 0 && mc_mkmodel_write(&p, path, err) != MC_OK) fail_msg("mkmodel: %s", err);
    return path;
}

static void *s_serve(void *arg) {
    s_fix_t *f = arg;
    f->run_rc = mc_node_run(f->node, &f->stop, f->run_err);
    return NULL;
}

static void *s_client(s_fix_t *f, int i) {
    void *c = zmq_socket(f->zctx, ZMQ_DEALER);
    assert_non_null(c);
    int timeout = 5000, linger = 0;
    zmq_setsockopt(c, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(c, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(c, mc_node_endpoint(f->node)), 0);
    f->clients[i] = c;
    return c;
}

// Start a node on model path with the given lease and connect client 0.
static void *s_start(s_fix_t *f, const char *path, uint32_t lease_ms) {
    char err[MC_ERR_LEN];
    mc_node_params_t p = mc_node_params_default();
    p.model = path, p.listen = "tcp://127.0.0.1:*", p.name = NAME, p.threads = 2, p.lease_ms = lease_ms;
    f->node = mc_node_new(&p, err);
    if (!f->node) fail_msg("node: %s", err);
    snprintf(f->path, sizeof f->path, "%s", path);
    assert_int_equal(strncmp(mc_node_endpoint(f->node), "tcp://127.0.0.1:", 16), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, s_serve, f), 0);
    f->running = true;
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    f->lim = mc_wire_limits(m);
    mc_model_destroy(&m);
    return s_client(f, 0);
}

static int s_setup(void **state) {
    s_fix_t *f = calloc(1, sizeof *f);
    if (!f || !(f->zctx = zmq_ctx_new())) return -1;
    *state = f;
    return 0;
}

static int s_teardown(void **state) {
    s_fix_t *f = *state;
    if (f->running) {
        atomic_store(&f->stop, 1);
        pthread_join(f->thread, NULL);
    }
    mc_node_destroy(&f->node);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (f->clients[i]) zmq_close(f->clients[i]);
    zmq_ctx_term(f->zctx);
    free(f);
    return 0;
}

static void s_send_raw(void *sock, const void *buf, size_t len) {
    assert_int_equal(zmq_send(sock, buf, len, 0), (int)len);
}

static void s_send(void *sock, const mc_wire_msg_t *m) {
    uint8_t *buf;
    size_t len;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_encode(m, &buf, &len, err), MC_OK);
    s_send_raw(sock, buf, len);
    free(buf);
}

// Next reply on sock (fails the test after 5 s).
static void s_recv(s_fix_t *f, void *sock, mc_wire_msg_t *out) {
    zmq_msg_t z;
    zmq_msg_init(&z);
    if (zmq_msg_recv(&z, sock, 0) < 0) {
        zmq_msg_close(&z);
        fail_msg("no reply from the node: %s", zmq_strerror(zmq_errno()));
    }
    char err[MC_ERR_LEN];
    mc_err_t rc = mc_wire_decode(&f->lim, zmq_msg_data(&z), zmq_msg_size(&z), out, NULL, err);
    zmq_msg_close(&z);
    if (rc != MC_OK) fail_msg("bad reply: %s", err);
}

// Send m and return the reply, checking it answers m. A placement's
// Progress messages come first: checked (the first says 0 bytes done,
// none goes backwards or past the total) and skipped.
static void s_call(s_fix_t *f, void *sock, const mc_wire_msg_t *m, mc_wire_msg_t *out) {
    s_send(sock, m);
    uint64_t done = 0;
    for (int n_progress = 0;; n_progress++) {
        s_recv(f, sock, out);
        assert_true(out->request_id == m->request_id);
        if (out->kind != MC_WIRE_MSG_PROGRESS) break;
        assert_int_equal(m->kind, MC_WIRE_MSG_ASSIGN);
        const mc_wire_progress_t p = out->u.progress;
        assert_true(p.done_bytes <= p.total_bytes);
        assert_true(n_progress > 0 || p.done_bytes == 0);
        assert_true(p.done_bytes >= done);
        done = p.done_bytes;
        mc_wire_msg_free(out);
    }
}

// The reply must be an error naming the node and containing needle.
static void s_expect_error(s_fix_t *f, void *sock, const mc_wire_msg_t *m, const char *needle) {
    mc_wire_msg_t r;
    s_call(f, sock, m, &r);
    if (r.kind != MC_WIRE_MSG_ERROR) fail_msg("expected an error '%s', got a %s", needle, mc_wire_kind_name(r.kind));
    if (!strstr(r.u.error.message, needle) || strncmp(r.u.error.message, "node " NAME ": ", 16))
        fail_msg("error '%s' does not say '%s'", r.u.error.message, needle);
    mc_wire_msg_free(&r);
}

// Round trip of a heartbeat: proves the node is alive and that nothing was
// queued for sock before it (a dropped message gets no reply).
static void s_heartbeat(s_fix_t *f, void *sock, uint64_t seq) {
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 1000 + seq, .u.heartbeat = seq}, r;
    s_call(f, sock, &m, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_HEARTBEAT);
    assert_true(r.u.heartbeat == seq);
    mc_wire_msg_free(&r);
}

// A placement of held for session, with the right hashes (in f->hashes).
static mc_wire_msg_t s_assign_msg(s_fix_t *f, uint64_t id, uint64_t session, const uint8_t *held) {
    s_hashes(f->path, held, f->hashes);
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = id};
    m.u.assign = (mc_wire_assign_t){session, f->lim.n_layer, f->lim.n_expert, (uint8_t *)held, f->hashes, NULL};
    return m;
}

static void s_assign(s_fix_t *f, void *sock, uint64_t session, const uint8_t *held, mc_wire_ready_t *ready) {
    mc_wire_msg_t m = s_assign_msg(f, 500 + session, session, held), r;
    s_call(f, sock, &m, &r);
    if (r.kind != MC_WIRE_MSG_READY)
        fail_msg("assignment refused: %s", r.kind == MC_WIRE_MSG_ERROR ? r.u.error.message : mc_wire_kind_name(r.kind));
    if (ready) *ready = r.u.ready;
    mc_wire_msg_free(&r);
}

static uint64_t s_rng(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

// Rows and a routing like the coordinator's: k distinct experts per row,
// choices of experts this node does not hold set to -1 (at least one held).
typedef struct {
    uint32_t n, dim, k;
    float *x;         // (n, dim)
    int32_t *experts; // (n, k)
    float *weights;   // (n, k)
} s_batch_t;

static s_batch_t s_batch(const mc_wire_limits_t *lim, const uint8_t *held_layer, uint32_t n, uint64_t seed) {
    s_batch_t b = {n, lim->dim, lim->k_max, malloc((size_t)n * lim->dim * sizeof(float)),
                   malloc((size_t)n * lim->k_max * sizeof(int32_t)), malloc((size_t)n * lim->k_max * sizeof(float))};
    for (size_t i = 0; i < (size_t)n * lim->dim; i++) b.x[i] = (float)(s_rng(&seed) >> 40) / (float)(1u << 24) - 0.5f;
    for (uint32_t t = 0; t < n; t++) {
        int32_t *ex = b.experts + (size_t)t * b.k;
        uint32_t first = (uint32_t)(s_rng(&seed) % lim->n_expert);
        bool any = false;
        for (uint32_t j = 0; j < b.k; j++) {
            uint32_t e = (first + j * 3) % lim->n_expert; // distinct for k <= 2, n_expert 8
            ex[j] = held_layer[e] ? (int32_t)e : -1;
            any |= held_layer[e];
            b.weights[(size_t)t * b.k + j] = (float)(s_rng(&seed) >> 40) / (float)(1u << 24);
        }
        if (!any)
            for (uint32_t e = 0; e < lim->n_expert; e++)
                if (held_layer[e]) ex[0] = (int32_t)e;
    }
    return b;
}

static void s_batch_free(s_batch_t *b) { free(b->x), free(b->experts), free(b->weights); }

// What mc_moe_compute gives locally for the batch (x replaced by its wire
// round trip when the node cannot use the wire rows directly).
static float *s_local(const char *path, uint32_t layer, const s_batch_t *b, const float *x) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    mc_pool_t *pool = mc_pool_new(1);
    mc_matmul_t *mm = mc_matmul_new(pool, mc_kernel_best_isa());
    mc_moe_t *moe = mc_moe_new(mm);
    assert_true(m && pool && mm && moe);
    float *out = malloc((size_t)b->n * b->dim * sizeof(float));
    assert_int_equal(mc_moe_compute(moe, m, layer, x, b->n, b->experts, b->weights, b->k, out, err), MC_OK);
    mc_moe_destroy(&moe), mc_matmul_destroy(&mm), mc_pool_destroy(&pool), mc_model_destroy(&m);
    return out;
}

// Send the batch in encoding enc and return the node's result as f32.
static float *s_remote(s_fix_t *f, void *sock, uint32_t layer, const s_batch_t *b, mc_wire_enc_t enc, uint64_t id) {
    size_t rb = mc_wire_row_bytes(enc, b->dim);
    uint8_t *rows = malloc(rb * b->n);
    mc_wire_rows_encode(enc, b->x, b->n, b->dim, rows);
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_REQUEST, .request_id = id}, r;
    m.u.request = (mc_wire_request_t){layer, enc, b->n, b->dim, rows, rb * b->n, b->k, b->experts, b->weights,
                                       mc_wire_result_enc(enc)};
    s_call(f, sock, &m, &r);
    free(rows);
    if (r.kind != MC_WIRE_MSG_RESULT)
        fail_msg("request failed: %s", r.kind == MC_WIRE_MSG_ERROR ? r.u.error.message : mc_wire_kind_name(r.kind));
    assert_int_equal(r.u.result.n_rows, b->n);
    assert_int_equal(r.u.result.enc, enc == MC_WIRE_F16 || enc == MC_WIRE_BF16 ? enc : MC_WIRE_F32);
    float *out = malloc((size_t)b->n * b->dim * sizeof(float));
    mc_wire_rows_decode(r.u.result.enc, r.u.result.rows, b->n, b->dim, out);
    mc_wire_msg_free(&r);
    return out;
}

static void s_hello_ok(s_fix_t *f, void *sock, const char *path) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    mc_wire_msg_t h = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1}, r;
    h.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "coord"};
    mc_model_destroy(&m);
    s_call(f, sock, &h, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_HELLO);
    assert_string_equal(r.u.hello.name, NAME);
    assert_int_equal(r.u.hello.threads, 2);
    assert_true(r.u.hello.fingerprint == h.u.hello.fingerprint);
    assert_true(r.u.hello.memory_bytes > 0);
    mc_wire_msg_free(&r);
}

static void test_handshake(void **state) {
    s_fix_t *f = *state;
    char path[512];
    void *c = s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 10000);
    s_hello_ok(f, c, path);
    char other[512];
    s_model("q8", MC_DTYPE_Q8_0, 64, 128, other, sizeof other);
    mc_model_t *m = mc_model_open(other, NULL);
    assert_non_null(m);
    mc_wire_msg_t h = {.kind = MC_WIRE_MSG_HELLO, .request_id = 2};
    h.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "coord"};
    mc_model_destroy(&m);
    char want[64];
    snprintf(want, sizeof want, "the coordinator (coord) has %016llx", (unsigned long long)h.u.hello.fingerprint);
    s_expect_error(f, c, &h, want);
    s_expect_error(f, c, &h, "model fingerprint mismatch: node has ");
    h.u.hello.version = MC_WIRE_VERSION + 1;
    char versions[96];
    snprintf(versions, sizeof versions, "speaks protocol version %d, the coordinator (coord) version %d", MC_WIRE_VERSION,
             MC_WIRE_VERSION + 1);
    s_expect_error(f, c, &h, versions);
    // Messages only a node sends are refused.
    mc_wire_msg_t ready = {.kind = MC_WIRE_MSG_READY, .request_id = 3};
    s_expect_error(f, c, &ready, "does not accept ready messages");
    s_heartbeat(f, c, 1);
}

static void test_results_bit_identical(void **state) {
    s_fix_t *f = *state;
    char path[512];
    void *c = s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 10000);
    s_hello_ok(f, c, path);
    // Layer 0 whole, layer 1 partly: rows of layer 1 carry only the pairs held here.
    uint8_t held[2 * 8] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0};
    mc_wire_ready_t ready;
    s_assign(f, c, 7, held, &ready);
    assert_int_equal(ready.n_pairs, 11);
    assert_true(ready.resident_bytes > 0);
    static const mc_wire_enc_t encs[] = {MC_WIRE_F32, MC_WIRE_F16, MC_WIRE_BF16, MC_WIRE_Q8_0};
    for (uint32_t layer = 0; layer < 2; layer++)
        for (size_t i = 0; i < 4; i++) {
            s_batch_t b = s_batch(&f->lim, held + layer * 8, 9, 100 + layer * 4 + i);
            // Except for f32, the node sees the rows after their wire round
            // trip (F32 weights do not use Q8_0 activations), and f16/bf16
            // results make the trip back too.
            mc_wire_enc_t enc = encs[i];
            size_t rb = mc_wire_row_bytes(enc, b.dim);
            uint8_t *wire = malloc(rb * b.n);
            float *xw = malloc((size_t)b.n * b.dim * sizeof(float));
            mc_wire_rows_encode(enc, b.x, b.n, b.dim, wire);
            mc_wire_rows_decode(enc, wire, b.n, b.dim, xw);
            float *want = s_local(path, layer, &b, xw);
            if (enc == MC_WIRE_F16 || enc == MC_WIRE_BF16) {
                mc_wire_rows_encode(enc, want, b.n, b.dim, wire);
                mc_wire_rows_decode(enc, wire, b.n, b.dim, want);
            }
            float *got = s_remote(f, c, layer, &b, enc, 10 + layer * 4 + i);
            assert_memory_equal(got, want, (size_t)b.n * b.dim * sizeof(float));
            free(wire), free(xw), free(want), free(got);
            s_batch_free(&b);
        }
    mc_wire_msg_t sr = {.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 99}, st;
    s_call(f, c, &sr, &st);
    assert_int_equal(st.kind, MC_WIRE_MSG_STATS);
    assert_true(st.u.stats.requests == 8 && st.u.stats.rows == 72 && st.u.stats.errors == 0);
    assert_true(st.u.stats.bytes_in > 72 * 64 && st.u.stats.bytes_out > 0);
    mc_wire_msg_free(&st);
}

// With Q8_0 or Q4_0 weights the gate and up kernels take Q8_0 activations:
// the node uses the received blocks, the same bits local computation makes
// from the f32 rows.
static void s_q8_wire_bit_identical(s_fix_t *f, const char *name, mc_dtype_t type) {
    char path[512];
    void *c = s_start(f, s_model(name, type, 64, 128, path, sizeof path), 10000);
    uint8_t held[2 * 8];
    memset(held, 1, sizeof held);
    s_assign(f, c, 1, held, NULL);
    for (uint32_t layer = 0; layer < 2; layer++) {
        s_batch_t b = s_batch(&f->lim, held + layer * 8, 13, 7 + layer);
        float *want = s_local(path, layer, &b, b.x);
        float *got = s_remote(f, c, layer, &b, MC_WIRE_Q8_0, 20 + layer);
        assert_memory_equal(got, want, (size_t)b.n * b.dim * sizeof(float));
        free(got);
        got = s_remote(f, c, layer, &b, MC_WIRE_F32, 30 + layer);
        assert_memory_equal(got, want, (size_t)b.n * b.dim * sizeof(float));
        free(want), free(got);
        s_batch_free(&b);
    }
}

static void test_q8_wire_q8_0_weights(void **state) { s_q8_wire_bit_identical(*state, "q8", MC_DTYPE_Q8_0); }
static void test_q8_wire_q4_0_weights(void **state) { s_q8_wire_bit_identical(*state, "q4", MC_DTYPE_Q4_0); }

// One message through mc_node_handle; the reply decoded into *out.
static void s_handle(mc_node_t *n, const mc_wire_limits_t *lim, const mc_wire_msg_t *m, mc_wire_msg_t *out) {
    uint8_t *buf, *reply;
    size_t len, reply_len;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_encode(m, &buf, &len, err), MC_OK);
    assert_int_equal(mc_node_handle(n, "coord", 5, buf, len, &reply, &reply_len, err), MC_OK);
    free(buf);
    assert_non_null(reply);
    if (mc_wire_decode(lim, reply, reply_len, out, NULL, err)) fail_msg("bad reply: %s", err);
    free(reply);
}

// Every weight type, its rows sent as `wire: auto` would send them (the
// activation blocks its kernels make): the node's result has the bits of
// computing from the f32 rows on one machine, and so has f32.
static void test_auto_wire_every_weight_type(void **state) {
    (void)state;
    static const mc_dtype_t types[] = {MC_DTYPE_F32,  MC_DTYPE_F16,  MC_DTYPE_BF16, MC_DTYPE_Q4_0, MC_DTYPE_Q4_1,
                                       MC_DTYPE_Q5_0, MC_DTYPE_Q5_1, MC_DTYPE_Q8_0, MC_DTYPE_Q2_K, MC_DTYPE_Q3_K,
                                       MC_DTYPE_Q4_K, MC_DTYPE_Q5_K, MC_DTYPE_Q6_K, MC_DTYPE_MXFP4};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[512], name[32], err[MC_ERR_LEN];
        snprintf(name, sizeof name, "auto-%s", mc_dtype_name(types[i]));
        s_model(name, types[i], 256, 256, path, sizeof path);
        mc_node_params_t p = mc_node_params_default();
        p.model = path, p.name = "direct", p.threads = 2;
        mc_node_t *n = mc_node_new(&p, err);
        mc_model_t *m = mc_model_open(path, err);
        assert_true(n && m);
        const mc_wire_limits_t lim = mc_wire_limits(m);
        uint8_t held[2 * 8];
        memset(held, 1, sizeof held);
        uint8_t hashes[MAX_PAIRS * MC_SLICE_HASH_BYTES];
        s_hashes(path, held, hashes);
        mc_wire_msg_t a = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 1}, r;
        a.u.assign = (mc_wire_assign_t){9, 2, 8, held, hashes, NULL};
        s_handle(n, &lim, &a, &r);
        assert_int_equal(r.kind, MC_WIRE_MSG_READY);
        mc_wire_msg_free(&r);
        for (uint32_t layer = 0; layer < 2; layer++) {
            s_batch_t b = s_batch(&lim, held, 11, 40 + layer);
            float *want = s_local(path, layer, &b, b.x);
            const mc_wire_enc_t encs[2] = {mc_wire_auto_enc(m, layer, 0), MC_WIRE_F32};
            if (types[i] != MC_DTYPE_F32) assert_int_not_equal(encs[0], MC_WIRE_F32);
            for (int e = 0; e < 2; e++) {
                const size_t rb = mc_wire_row_bytes(encs[e], b.dim);
                uint8_t *rows = malloc(rb * b.n);
                mc_wire_rows_encode(encs[e], b.x, b.n, b.dim, rows);
                mc_wire_msg_t q = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 2 + layer * 2 + (uint32_t)e};
                q.u.request = (mc_wire_request_t){layer, encs[e], b.n, b.dim, rows, rb * b.n, b.k, b.experts, b.weights,
                                                  MC_WIRE_F32};
                s_handle(n, &lim, &q, &r);
                free(rows);
                if (r.kind != MC_WIRE_MSG_RESULT)
                    fail_msg("%s: %s", name, r.kind == MC_WIRE_MSG_ERROR ? r.u.error.message : mc_wire_kind_name(r.kind));
                assert_int_equal(r.u.result.enc, MC_WIRE_F32);
                float *got = malloc((size_t)b.n * b.dim * sizeof(float));
                mc_wire_rows_decode(r.u.result.enc, r.u.result.rows, b.n, b.dim, got);
                mc_wire_msg_free(&r);
                if (memcmp(got, want, (size_t)b.n * b.dim * sizeof(float)))
                    fail_msg("%s layer %u: a %s request differs from local computation", name, layer,
                             mc_wire_enc_name(encs[e]));
                free(got);
            }
            free(want);
            s_batch_free(&b);
        }
        mc_model_destroy(&m);
        mc_node_destroy(&n);
    }
}

static void test_malformed_messages(void **state) {
    s_fix_t *f = *state;
    char path[512];
    void *c = s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 10000);
    uint8_t held[2 * 8] = {1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    s_assign(f, c, 1, held, NULL);
    s_batch_t b = s_batch(&f->lim, held, 4, 3);
    float *want = s_local(path, 0, &b, b.x);
    size_t rb = mc_wire_row_bytes(MC_WIRE_F32, 64);
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 50};
    const mc_wire_request_t good = {0, MC_WIRE_F32, b.n, b.dim, (uint8_t *)b.x, rb * b.n, b.k, b.experts, b.weights,
                                    MC_WIRE_F32};
    mc_wire_request_t *q = &m.u.request;

    // Truncated: not an envelope, dropped without a reply.
    *q = good;
    uint8_t *buf;
    size_t len;
    assert_int_equal(mc_wire_encode(&m, &buf, &len, NULL), MC_OK);
    const size_t cuts[] = {1, 3, len / 2, len - 1};
    for (int i = 0; i < 4; i++) s_send_raw(c, buf, cuts[i]);
    s_heartbeat(f, c, 1);
    // Two frames in one message: dropped.
    assert_int_equal(zmq_send(c, buf, len, ZMQ_SNDMORE), (int)len);
    s_send_raw(c, buf, len);
    s_heartbeat(f, c, 2);
    free(buf);

    q->layer = 2;
    s_expect_error(f, c, &m, "layer 2 out of range (2 layers)");
    *q = good;
    int32_t bad_ex[4 * 2];
    memcpy(bad_ex, b.experts, sizeof bad_ex);
    q->experts = bad_ex;
    bad_ex[0] = 8;
    s_expect_error(f, c, &m, "row 0: expert 8 out of range (8 experts)");
    bad_ex[0] = 5;
    s_expect_error(f, c, &m, "row 0: expert 5 of layer 0 is not assigned to this node");
    *q = good;
    q->dim = 32, q->rows_len = 32 * 4 * b.n;
    s_expect_error(f, c, &m, "row width 32, the model's dim is 64");
    *q = good;
    q->rows_len -= 4;
    s_expect_error(f, c, &m, "rows payload");
    // More rows than a request may carry (the message itself stays under the socket's cap).
    uint32_t many = MC_WIRE_MAX_ROWS + 1;
    s_batch_t big = s_batch(&f->lim, held, many, 9);
    *q = (mc_wire_request_t){0, MC_WIRE_F32, many, 64, (uint8_t *)big.x, rb * many, big.k, big.experts, big.weights, MC_WIRE_F32};
    s_expect_error(f, c, &m, "4097 rows, expected 1..4096");
    s_batch_free(&big);
    // A message beyond ZMQ_MAXMSGSIZE: ZeroMQ drops it and that peer's
    // connection; other coordinators do not notice.
    void *c2 = s_client(f, 1);
    size_t huge = (size_t)mc_wire_max_msg_bytes(&f->lim) + 1024;
    uint8_t *zeros = calloc(huge, 1);
    s_send_raw(c2, zeros, huge);
    free(zeros);
    s_heartbeat(f, c, 3);

    *q = good;
    float *got = s_remote(f, c, 0, &b, MC_WIRE_F32, 60);
    assert_memory_equal(got, want, (size_t)b.n * b.dim * sizeof(float));
    free(got), free(want);
    s_batch_free(&b);
    mc_wire_msg_t sr = {.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 99}, st;
    s_call(f, c, &sr, &st);
    assert_int_equal(st.kind, MC_WIRE_MSG_STATS);
    assert_true(st.u.stats.requests == 1 && st.u.stats.errors == 4 + 1 + 6); // drops and error replies
    mc_wire_msg_free(&st);
}

static void test_placement_ownership(void **state) {
    s_fix_t *f = *state;
    char path[512];
    void *a = s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 1000);
    void *b = s_client(f, 1);
    uint8_t p1[16] = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0};
    uint8_t p2[16] = {0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    s_assign(f, a, 1, p1, NULL);
    mc_wire_msg_t m = s_assign_msg(f, 70, 2, p2);
    s_expect_error(f, b, &m, "already serving a different placement for coordinator session 0000000000000001");
    m.u.assign.session_id = 3; // the same socket with a new session is another coordinator too
    s_expect_error(f, a, &m, "different placement");
    s_assign(f, b, 2, p1, NULL); // the same placement: fine
    s_assign(f, a, 1, p2, NULL); // its owner may change it
    m = s_assign_msg(f, 70, 2, p1);
    s_expect_error(f, b, &m, "different placement");
    // Once the owner has been silent for longer than the lease, the placement is free.
    usleep(1300 * 1000);
    s_assign(f, b, 2, p1, NULL);
    m = s_assign_msg(f, 70, 1, p2);
    s_expect_error(f, a, &m, "coordinator session 0000000000000002");
    // A placement belongs to the session, not the socket: the owner coming
    // back on a new connection (as after losing the node) may change it.
    void *c = s_client(f, 2);
    s_assign(f, c, 2, p2, NULL);
    m = s_assign_msg(f, 70, 1, p1);
    s_expect_error(f, a, &m, "coordinator session 0000000000000002");
}

// Status lines: who connected, what was accepted or refused and why, the
// owner lost, the counts at shutdown; never a function name.
static void test_status_lines(void **state) {
    s_fix_t *f = *state;
    char path[512], logpath[600], err[MC_ERR_LEN];
    s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path);
    snprintf(logpath, sizeof logpath, "%s/node.log", s_dir);
    FILE *log = fopen(logpath, "w");
    assert_non_null(log);
    mc_node_params_t p = mc_node_params_default();
    assert_int_equal(p.lease_ms, MC_NODE_DEFAULT_LEASE_MS);
    p.model = path, p.listen = "tcp://127.0.0.1:*", p.name = NAME, p.threads = 1, p.lease_ms = 300, p.log = log;
    f->node = mc_node_new(&p, err);
    assert_non_null(f->node);
    assert_int_equal(pthread_create(&f->thread, NULL, s_serve, f), 0);
    f->running = true;
    mc_model_t *m = mc_model_open(path, err);
    f->lim = mc_wire_limits(m);
    snprintf(f->path, sizeof f->path, "%s", path);
    void *a = s_client(f, 0), *b = s_client(f, 1);
    mc_wire_msg_t h = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1}, r;
    h.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "coord-a",
                                  .session_id = 0xabc};
    mc_model_destroy(&m);
    s_call(f, a, &h, &r);
    mc_wire_msg_free(&r);
    uint8_t p1[16] = {1, 1}, p2[16] = {0, 0, 1};
    s_assign(f, a, 0xabc, p1, NULL);
    mc_wire_msg_t as = s_assign_msg(f, 9, 0xdef, p2);
    s_expect_error(f, b, &as, "different placement");
    usleep(500 * 1000); // the lease (300 ms) runs out: one "lost" line
    s_assign(f, b, 0xdef, p2, NULL);
    h.u.hello.fingerprint ^= 1;
    s_expect_error(f, b, &h, "fingerprint mismatch");
    atomic_store(&f->stop, SIGTERM);
    pthread_join(f->thread, NULL);
    f->running = false;
    fclose(log);
    char *text = (char *)mc_test_read_file(logpath, NULL);
    assert_non_null(text);
    static const char *const want[] = {
        "moe-expert test-node: serving ",
        "moe-expert test-node: coordinator coord-a at 127.0.0.1 connected (session 0000000000000abc)",
        "placement of session 0000000000000abc from coord-a at 127.0.0.1 accepted: 2 experts in 1 layer (",
        "resident memory ",
        "refused the placement of session 0000000000000def from 127.0.0.1: already serving a different placement",
        "lost coordinator coord-a at 127.0.0.1 (session 0000000000000abc): silent for ",
        "placement of session 0000000000000def from 127.0.0.1 accepted: 1 expert in 1 layer (",
        "refused coordinator coord-a at 127.0.0.1: model fingerprint mismatch",
        "stopping on SIGTERM: served 0 requests",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("the log lacks '%s':\n%s", want[i], text);
    // One line per event, each with a date and time; no function names.
    assert_null(strstr(text, "s_on_"));
    for (char *line = text; *line; line = strchr(line, '\n') + 1) {
        assert_true(line[4] == '-' && line[10] == ' ' && line[13] == ':');
        if (!strchr(line, '\n')) break;
    }
    free(text);
}

// A node whose file has the coordinator's header but one other weight byte
// (in expert 5 of layer 1): a placement naming that expert is refused,
// naming it, and the node keeps the placement it had; one without it is
// accepted (a node multiplies nothing else). The node hashed only what
// placements named, and a restart loads the hashes saved beside its file.
static void test_other_weights_refused(void **state) {
    (void)state;
    char path[512], copy[600], logpath[600], want[700], err[MC_ERR_LEN];
    s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path);
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    const size_t at = (size_t)(m->layers[1].experts[5].up.data - mc_gguf_base(m->gguf)) + 8;
    const mc_wire_limits_t lim = mc_wire_limits(m);
    mc_model_destroy(&m);
    size_t len;
    uint8_t *bytes = mc_test_read_file(path, &len);
    assert_non_null(bytes);
    bytes[at] ^= 0x01;
    snprintf(copy, sizeof copy, "%s/other-weights.gguf", s_dir);
    FILE *fc = fopen(copy, "wb");
    assert_true(fc && fwrite(bytes, 1, len, fc) == len && fclose(fc) == 0);
    free(bytes);
    snprintf(logpath, sizeof logpath, "%s/other-weights.log", s_dir);
    FILE *log = fopen(logpath, "w");
    mc_node_params_t p = mc_node_params_default();
    p.model = copy, p.name = NAME, p.threads = 2, p.log = log;
    mc_node_t *n = mc_node_new(&p, err);
    if (!n) fail_msg("%s", err);

    uint8_t two[16] = {[0] = 1, [9] = 1}, all[16], hashes[MAX_PAIRS * MC_SLICE_HASH_BYTES];
    memset(all, 1, sizeof all);
    mc_wire_msg_t a = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 1}, r;
    s_hashes(path, two, hashes);
    a.u.assign = (mc_wire_assign_t){1, 2, 8, two, hashes, NULL};
    s_handle(n, &lim, &a, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_READY);
    assert_int_equal(r.u.ready.n_pairs, 2);
    mc_wire_msg_free(&r);

    s_hashes(path, all, hashes);
    a.request_id = 2, a.u.assign.held = all;
    s_handle(n, &lim, &a, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_int_equal(r.u.error.code, MC_ERR_ARG);
    assert_string_equal(r.u.error.message,
                        "node " NAME ": its model file differs from the coordinator's: expert 5 of layer 1 has other "
                        "weights (1 of the 16 experts placed differs); start this node with the coordinator's GGUF file");
    mc_wire_msg_free(&r);
    // The placement it had stands: experts 0 of layer 0 and 1 of layer 1.
    s_batch_t b = s_batch(&lim, two, 3, 5);
    mc_wire_msg_t q = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 3};
    q.u.request = (mc_wire_request_t){0, MC_WIRE_F32, b.n, b.dim, (uint8_t *)b.x, (size_t)b.n * b.dim * 4, b.k,
                                      b.experts, b.weights, MC_WIRE_F32};
    s_handle(n, &lim, &q, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_RESULT);
    mc_wire_msg_free(&r);
    s_batch_free(&b);
    all[1 * 8 + 5] = 0;
    s_hashes(path, all, hashes);
    a.request_id = 4;
    s_handle(n, &lim, &a, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_READY);
    assert_int_equal(r.u.ready.n_pairs, 15);
    mc_wire_msg_free(&r);
    mc_node_destroy(&n);
    fclose(log);

    char *text = (char *)mc_test_read_file(logpath, NULL);
    snprintf(want, sizeof want, "expert 5 of layer 1 of %s: slice hash ", copy);
    const char *const lines[] = {
        "hashed the weights of 2 experts (0.2 MiB) in ",
        "; saved to ",
        "hashed the weights of 14 experts (1.3 MiB) in ",
        want,
        "refused the placement of session 0000000000000001 from a direct caller: its model file differs from the "
        "coordinator's: expert 5 of layer 1 has other weights",
        "placement of session 0000000000000001 from a direct caller accepted: 15 experts in 2 layers",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (!strstr(text, lines[i])) fail_msg("the log lacks '%s':\n%s", lines[i], text);
    assert_null(strstr(text, "hashed the weights of 16"));
    free(text);

    p.log = log = fopen(logpath, "w");
    n = mc_node_new(&p, err);
    assert_non_null(n);
    mc_node_destroy(&n);
    fclose(log);
    text = (char *)mc_test_read_file(logpath, NULL);
    snprintf(want, sizeof want, "slice hashes of 16 of 16 experts loaded from %s.mcidx", copy);
    if (!strstr(text, want)) fail_msg("the log lacks '%s':\n%s", want, text);
    free(text);
}

static uint64_t s_expert_bytes(const char *path) {
    mc_model_t *m = mc_model_open(path, NULL);
    assert_non_null(m);
    const mc_expert_t *e = &m->layers[0].experts[0];
    uint64_t n = e->gate.n_out * e->gate.row_bytes + e->up.n_out * e->up.row_bytes + e->down.n_out * e->down.row_bytes;
    mc_model_destroy(&m);
    return n;
}

// The node keeps resident what it holds, not the file.
static void test_resident_memory_follows_share(void **state) {
    s_fix_t *f = *state;
    char path[512];
    s_model("f32-wide", MC_DTYPE_F32, 128, 512, path, sizeof path);
    uint64_t eb = s_expert_bytes(path); // 768 KiB
    void *c = s_start(f, path, 10000);
    uint8_t one[16] = {1}, all[16];
    memset(all, 1, sizeof all);
    mc_wire_ready_t r1, r16, r1b;
    s_assign(f, c, 1, one, &r1);
    s_assign(f, c, 1, all, &r16);
    s_assign(f, c, 1, one, &r1b);
    assert_int_equal(r1.n_pairs, 1);
    assert_int_equal(r16.n_pairs, 16);
    assert_true(r16.resident_bytes > r1.resident_bytes + 12 * eb);
    assert_true(r1b.resident_bytes + 12 * eb < r16.resident_bytes);
}

// The same placement again (a coordinator reconnecting, a new one with the
// same cluster file) keeps one copy of the repacked Q4_0 experts: the
// file's pages of repacked rows are not brought back (they doubled a node's
// memory at every repeat before). A changed placement repacks, and ends
// with one copy too.
static void test_repeated_placement_one_copy(void **state) {
    s_fix_t *f = *state;
    char path[512];
    s_model("q4_0-wide", MC_DTYPE_Q4_0, 512, 1024, path, sizeof path);
    const uint64_t eb = s_expert_bytes(path); // 864 KiB; 16 experts: 13.5 MiB
    void *c = s_start(f, path, 60000);
    uint8_t none[16] = {0}, all[16], most[16];
    memset(all, 1, sizeof all);
    memset(most, 1, sizeof most);
    most[15] = 0;
    mc_wire_ready_t base, r[6];
    s_assign(f, c, 1, none, &base);
    s_assign(f, c, 1, all, &r[0]);
    s_assign(f, c, 1, all, &r[1]);
    s_assign(f, c, 1, all, &r[2]);
    mc_wire_msg_t rel = {.kind = MC_WIRE_MSG_RELEASE, .request_id = 77, .u.release = 1};
    s_send(c, &rel);
    s_assign(f, c, 2, all, &r[3]); // another coordinator, the same placement
    s_assign(f, c, 2, most, &r[4]);
    s_assign(f, c, 2, all, &r[5]);
    // One copy: the packed experts (as many bytes as the file's rows), pages
    // shared with neighbours, and under ASan the shadow of the packed copy
    // (an eighth): below 24 experts' worth. Two copies would be 32.
    for (int i = 0; i < 6; i++)
        if (r[i].resident_bytes > base.resident_bytes + 24 * eb)
            fail_msg("placement %d: resident %.1f MiB, %.1f MiB before any (16 experts: %.1f MiB)", i,
                     r[i].resident_bytes / 1048576.0, base.resident_bytes / 1048576.0, 16 * eb / 1048576.0);
}

// A coordinator's Release ends its lease at once: another coordinator's
// placement is accepted without waiting for the lease (60 s here). A
// Release naming another session changes nothing.
static void test_release_frees_placement(void **state) {
    s_fix_t *f = *state;
    char path[512];
    void *a = s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 60000);
    void *b = s_client(f, 1);
    uint8_t p1[16] = {1, 1}, p2[16] = {0, 0, 1, 1};
    s_assign(f, a, 1, p1, NULL);
    mc_wire_msg_t m = s_assign_msg(f, 70, 2, p2), r;
    s_call(f, b, &m, &r);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_int_equal(r.u.error.code, MC_ERR_BUSY); // try later, not a mistake
    mc_wire_msg_free(&r);
    mc_wire_msg_t rel = {.kind = MC_WIRE_MSG_RELEASE, .request_id = 71, .u.release = 99};
    s_send(b, &rel);
    s_expect_error(f, b, &m, "different placement");
    rel.u.release = 1;
    s_send(a, &rel);
    s_heartbeat(f, a, 1); // a's messages arrive in order: the Release has been handled
    s_assign(f, b, 2, p2, NULL);
}

static void test_stops_promptly(void **state) {
    s_fix_t *f = *state;
    char path[512];
    s_start(f, s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path), 10000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    f->running = false;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 500);
    assert_int_equal(f->run_rc, MC_OK);
}

// The serving code without a socket: what tests and fuzzers drive directly.
// A DEALER to the node speaking CURVE with the node's public key and the
// client pair kp (NULL: plain), receive timeout ms.
static void *s_curve_client(s_fix_t *f, int i, const char *server_pub, const mc_keypair_t *kp, int ms) {
    void *c = zmq_socket(f->zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    if (kp) {
        assert_int_equal(zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, server_pub, MC_KEY_TEXT), 0);
        assert_int_equal(zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, kp->pub, MC_KEY_TEXT), 0);
        assert_int_equal(zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, kp->sec, MC_KEY_TEXT), 0);
    }
    assert_int_equal(zmq_connect(c, mc_node_endpoint(f->node)), 0);
    f->clients[i] = c;
    return c;
}

// True when a heartbeat on sock is answered within its receive timeout.
static bool s_answers(void *sock) {
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 77, .u.heartbeat = 5};
    uint8_t *buf;
    size_t len;
    assert_int_equal(mc_wire_encode(&m, &buf, &len, NULL), MC_OK);
    zmq_send(sock, buf, len, ZMQ_DONTWAIT);
    free(buf);
    zmq_msg_t z;
    zmq_msg_init(&z);
    bool got = zmq_msg_recv(&z, sock, 0) >= 0;
    zmq_msg_close(&z);
    return got;
}

// CURVE on: an authorized coordinator is served; a stranger's key and a
// plain client are refused at the handshake, logged, and the node goes on.
static void test_curve_strangers_refused(void **state) {
    s_fix_t *f = *state;
    char path[512], dir[300], key[600], auth[600], logpath[600], err[MC_ERR_LEN];
    s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path);
    snprintf(dir, sizeof dir, "%s/keys", s_dir);
    mc_keypair_t node, coord, stranger;
    assert_int_equal(mc_keys_generate(&node, err), MC_OK);
    assert_int_equal(mc_keys_generate(&coord, err), MC_OK);
    assert_int_equal(mc_keys_generate(&stranger, err), MC_OK);
    mkdir(dir, 0700);
    assert_int_equal(mc_keys_write(dir, "node", &node, err), MC_OK);
    snprintf(key, sizeof key, "%s/node.key", dir);
    snprintf(auth, sizeof auth, "%s/authorized", dir);
    FILE *a = fopen(auth, "w");
    fprintf(a, "# the coordinator\n%s\n", coord.pub);
    fclose(a);
    snprintf(logpath, sizeof logpath, "%s/curve.log", s_dir);
    FILE *log = fopen(logpath, "w");
    mc_node_params_t p = mc_node_params_default();
    p.model = path, p.listen = "tcp://127.0.0.1:*", p.name = NAME, p.threads = 1, p.log = log;
    p.secret_key = key, p.authorized_keys = auth;
    f->node = mc_node_new(&p, err);
    if (!f->node) fail_msg("%s", err);
    assert_int_equal(pthread_create(&f->thread, NULL, s_serve, f), 0);
    f->running = true;
    mc_model_t *m = mc_model_open(path, err);
    f->lim = mc_wire_limits(m);
    mc_model_destroy(&m);
    void *good = s_curve_client(f, 0, node.pub, &coord, 5000);
    assert_true(s_answers(good));
    void *bad = s_curve_client(f, 1, node.pub, &stranger, 600);
    assert_false(s_answers(bad));
    void *plain = s_curve_client(f, 2, NULL, NULL, 600);
    assert_false(s_answers(plain));
    assert_true(s_answers(good)); // still serving
    atomic_store(&f->stop, SIGTERM);
    pthread_join(f->thread, NULL);
    f->running = false;
    // The run is over but the socket is still bound: the refused clients
    // keep reconnecting and the key check thread keeps logging them. So the
    // log must stay open until the node is destroyed (closing it first let
    // that thread write into a freed FILE: the heap corruption that once
    // aborted the next test with "free(): invalid size").
    // A while for them to do so (whether they do in it is up to the
    // scheduler: nothing is asserted on it), then the node, then the log.
    usleep(300 * 1000);
    mc_node_destroy(&f->node);
    fclose(log);
    char *text = (char *)mc_test_read_file(logpath, NULL);
    char want[200];
    snprintf(want, sizeof want, "refused a connection from 127.0.0.1: its key %s is not an authorized coordinator's",
             stranger.pub);
    if (!strstr(text, want)) fail_msg("no refusal of the stranger in:\n%s", text);
    if (!strstr(text, "failed the CURVE handshake")) fail_msg("no refusal of the plain client in:\n%s", text);
    assert_non_null(strstr(text, node.pub)); // the start line gives the node's public key
    free(text);
    // Keys go together; a bad file is a clear error.
    p.log = NULL; // closed
    p.authorized_keys = "/nonexistent/auth";
    mc_node_t *n2 = mc_node_new(&p, err);
    assert_null(n2);
    assert_non_null(strstr(err, "/nonexistent/auth"));
}

// Without keys on an address other machines reach: a warning.
static void test_exposed_without_keys_warns(void **state) {
    (void)state;
    char path[512], logpath[600], err[MC_ERR_LEN];
    s_model("f32", MC_DTYPE_F32, 64, 128, path, sizeof path);
    snprintf(logpath, sizeof logpath, "%s/open.log", s_dir);
    FILE *log = fopen(logpath, "w");
    mc_node_params_t p = mc_node_params_default();
    p.model = path, p.listen = "tcp://0.0.0.0:*", p.name = NAME, p.threads = 1, p.log = log;
    mc_node_t *n = mc_node_new(&p, err);
    assert_non_null(n);
    mc_node_destroy(&n);
    p.listen = "tcp://127.0.0.1:*";
    n = mc_node_new(&p, err);
    mc_node_destroy(&n);
    fclose(log);
    char *text = (char *)mc_test_read_file(logpath, NULL);
    const char *w = strstr(text, "warning: listening on tcp://0.0.0.0:* without --secret-key");
    assert_non_null(w);
    assert_null(strstr(w + 1, "warning")); // not for loopback
    free(text);
}

static void test_handle_without_socket(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    s_model("q4", MC_DTYPE_Q4_0, 64, 128, path, sizeof path);
    mc_node_params_t p = mc_node_params_default();
    p.model = path, p.name = "direct", p.threads = 1;
    mc_node_t *n = mc_node_new(&p, err);
    assert_non_null(n);
    atomic_int stop = 1;
    assert_int_equal(mc_node_run(n, &stop, err), MC_ERR_ARG); // nothing to serve on
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    const mc_wire_limits_t lim = mc_wire_limits(m);
    mc_wire_msg_t h = {.kind = MC_WIRE_MSG_HELLO, .request_id = 5};
    h.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = mc_model_fingerprint(m), .name = "c"};
    mc_model_destroy(&m);
    uint8_t *buf, *reply;
    size_t len, reply_len;
    assert_int_equal(mc_wire_encode(&h, &buf, &len, err), MC_OK);
    assert_int_equal(mc_node_handle(n, "peer", 4, buf, len, &reply, &reply_len, err), MC_OK);
    free(buf);
    mc_wire_msg_t r;
    assert_non_null(reply);
    assert_int_equal(mc_wire_decode(&lim, reply, reply_len, &r, NULL, err), MC_OK);
    assert_int_equal(r.kind, MC_WIRE_MSG_HELLO);
    assert_true(r.request_id == 5);
    assert_string_equal(r.u.hello.name, "direct");
    mc_wire_msg_free(&r);
    free(reply);
    // A request for an expert it was not assigned: an error reply.
    int32_t experts[2] = {0, 1};
    float weights[2] = {0.5f, 0.5f}, x[64] = {0};
    mc_wire_msg_t q = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 6};
    q.u.request = (mc_wire_request_t){0, MC_WIRE_F32, 1, 64, (const uint8_t *)x, sizeof x, 2, experts, weights, MC_WIRE_F32};
    assert_int_equal(mc_wire_encode(&q, &buf, &len, err), MC_OK);
    assert_int_equal(mc_node_handle(n, "peer", 4, buf, len, &reply, &reply_len, err), MC_OK);
    free(buf);
    assert_non_null(reply);
    assert_int_equal(mc_wire_decode(&lim, reply, reply_len, &r, NULL, err), MC_OK);
    assert_int_equal(r.kind, MC_WIRE_MSG_ERROR);
    assert_true(r.request_id == 6);
    mc_wire_msg_free(&r);
    free(reply);
    // Bytes that are not a message: dropped, no reply.
    assert_int_equal(mc_node_handle(n, "peer", 4, "\xff\xff\xff", 3, &reply, &reply_len, err), MC_OK);
    assert_null(reply);
    uint8_t long_id[300] = {0};
    assert_int_equal(mc_node_handle(n, long_id, sizeof long_id, "x", 1, &reply, &reply_len, err), MC_ERR_ARG);
    mc_node_destroy(&n);
}

static void test_parse_args(void **state) {
    (void)state;
    mc_node_params_t p = mc_node_params_default();
    assert_true(p.threads >= 1 && p.threads <= 8);
    bool help;
    char err[MC_ERR_LEN];
    char *ok[] = {"moe-expert", "--model", "m.gguf", "--listen", "tcp://*:5555", "--threads", "3", "--name", "box"};
    assert_int_equal(mc_node_parse_args(9, ok, &p, &help, err), MC_OK);
    assert_false(help);
    assert_string_equal(p.model, "m.gguf");
    assert_string_equal(p.listen, "tcp://*:5555");
    assert_string_equal(p.name, "box");
    assert_int_equal(p.threads, 3);
    char *h[] = {"moe-expert", "--help"};
    assert_int_equal(mc_node_parse_args(2, h, &p, &help, err), MC_OK);
    assert_true(help);
    p = mc_node_params_default();
    char *no_listen[] = {"moe-expert", "--model", "m.gguf"};
    assert_int_equal(mc_node_parse_args(3, no_listen, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--listen is required"));
    char *bad_threads[] = {"moe-expert", "--model", "m", "--listen", "x", "--threads", "0"};
    assert_int_equal(mc_node_parse_args(7, bad_threads, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--threads: '0' is not a whole number in 1..512"));
    char *unknown[] = {"moe-expert", "--port", "5"};
    assert_int_equal(mc_node_parse_args(3, unknown, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "unknown flag '--port'"));
    char *lease[] = {"moe-expert", "--model", "m", "--listen", "x", "--lease-ms", "1500"};
    assert_int_equal(mc_node_parse_args(7, lease, &p, &help, err), MC_OK);
    assert_int_equal(p.lease_ms, 1500);
    lease[6] = "50";
    assert_int_equal(mc_node_parse_args(7, lease, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--lease-ms: '50' is not a whole number in 100..3600000"));
    char *half[] = {"moe-expert", "--model", "m", "--listen", "x", "--secret-key", "k"};
    assert_int_equal(mc_node_parse_args(7, half, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--secret-key and --authorized-keys go together"));
    // --announce: only a listener other machines can reach.
    char *announce[] = {"moe-expert", "--model", "m", "--listen", "tcp://10.0.0.11:5555", "--announce"};
    p = mc_node_params_default();
    assert_int_equal(mc_node_parse_args(6, announce, &p, &help, err), MC_OK);
    assert_true(p.announce);
    const char *local[] = {"tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555", "ipc:///tmp/n", "inproc://n"};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        announce[4] = (char *)local[i];
        assert_int_equal(mc_node_parse_args(6, announce, &p, &help, err), MC_ERR_ARG);
        assert_non_null(strstr(err, "--announce needs a tcp:// --listen other machines can reach"));
    }
    char *missing[] = {"moe-expert", "--model"};
    assert_int_equal(mc_node_parse_args(2, missing, &p, &help, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "--model needs a value"));
    // Startup failures are reported, not fatal.
    p = mc_node_params_default();
    p.model = "/nonexistent.gguf", p.listen = "tcp://127.0.0.1:*", p.name = "x";
    assert_null(mc_node_new(&p, err));
    p.name = "has space";
    assert_null(mc_node_new(&p, err));
    assert_non_null(strstr(err, "printable ASCII"));
}

// moe-expert --profile: memory, the model file's disk and one expert's
// step for 1..32 rows, as a node entry for moe-plan; the coordinator's keys
// are moe-coordinator's.
static void test_profile(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN], *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    const mc_profile_params_t p = {.model = s_model("prof", MC_DTYPE_Q4_0, 64, 64, path, sizeof path), .name = "pi-1",
                                   .threads = 1};
    if (mc_profile_run(&p, f, err) != MC_OK) fail_msg("%s", err);
    fclose(f);
    static const char *const want[] = {"# moe-expert --profile of ", "- name: pi-1\n", "  memory_mb: ", "  threads: 1\n",
                                       "    - types: [Q4_0, Q4_0, Q4_0]\n", "[1, ", "[32, ", "  disk_read_mb_s: ",
                                       "  disk_latency_ms: "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("no '%s' in:\n%s", want[i], text);
    assert_null(strstr(text, "layer_ms"));
    assert_null(strstr(text, "head_ms"));
    free(text);
    // The disk alone: as many cold reads as asked (each a whole expert),
    // at most every expert once; a model without a file is refused.
    mc_model_t *m = mc_model_open(path, err);
    assert_non_null(m);
    mc_profile_disk_params_t dp = mc_profile_disk_params_default();
    dp.max_reads = 3, dp.max_seconds = 60;
    mc_profile_disk_t d;
    assert_int_equal(mc_profile_disk(m, &dp, &d, err), MC_OK);
    assert_int_equal(d.reads, 3);
    assert_int_equal(d.bytes, 3 * mc_model_expert_bytes(m, 0, 0));
    assert_true(d.mb_s > 0 && d.mb_s <= 1e6 && d.latency_ms >= 0 && d.cached >= 0 && d.cached <= 1);
    dp.max_reads = 100000;
    assert_int_equal(mc_profile_disk(m, &dp, &d, err), MC_OK);
    assert_true(d.reads >= 1 && d.reads <= m->hp.n_layer * m->hp.n_expert);
    mc_model_destroy(&m);
}

static int s_group_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_group_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_results_bit_identical, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_q8_wire_q8_0_weights, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_q8_wire_q4_0_weights, s_setup, s_teardown),
        cmocka_unit_test(test_auto_wire_every_weight_type),
        cmocka_unit_test_setup_teardown(test_malformed_messages, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_placement_ownership, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_status_lines, s_setup, s_teardown),
        cmocka_unit_test(test_other_weights_refused),
        cmocka_unit_test_setup_teardown(test_curve_strangers_refused, s_setup, s_teardown),
        cmocka_unit_test(test_exposed_without_keys_warns),
        cmocka_unit_test(test_handle_without_socket),
        cmocka_unit_test_setup_teardown(test_repeated_placement_one_copy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_release_frees_placement, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_resident_memory_follows_share, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stops_promptly, s_setup, s_teardown),
        cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_profile),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
