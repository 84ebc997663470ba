/*
 * test_wire: the wire codec. Every message survives an encode/decode round
 * trip; row encodings are exactly the project's conversions; a placement's
 * slice hashes are exactly one per pair, in held's order whatever the
 * listing order; the decoder rejects every malformed field with a clear
 * message, every truncation of a valid message, and survives random and
 * mutated bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "moe.pb-c.h"
#include "quant.h"
#include "wire.h"

#define N_LAYER 4
#define N_EXPERT 8
#define DIM 64
#define N_ROWS 3
#define K 2

static const mc_wire_limits_t s_lim = {N_LAYER, N_EXPERT, DIM, 16, K, NULL, 0};

static uint64_t s_rng(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

static float s_uniform(uint64_t *s) { return (float)(s_rng(s) >> 40) / (float)(1u << 24) * 2.0f - 1.0f; }

// A valid f32 request: 3 rows, the last with one pair only.
typedef struct {
    float x[N_ROWS * DIM];
    int32_t experts[N_ROWS * K];
    float weights[N_ROWS * K];
    mc_wire_msg_t msg;
} s_req_t;

static void s_req_init(s_req_t *r) {
    uint64_t seed = 7;
    for (int i = 0; i < N_ROWS * DIM; i++) r->x[i] = s_uniform(&seed);
    static const int32_t ex[N_ROWS * K] = {1, 5, 7, 0, 3, -1};
    static const float w[N_ROWS * K] = {0.75f, 0.25f, 0.5f, 0.5f, 1.0f, 0.0f};
    memcpy(r->experts, ex, sizeof ex);
    memcpy(r->weights, w, sizeof w);
    r->msg = (mc_wire_msg_t){.kind = MC_WIRE_MSG_REQUEST, .request_id = 42};
    r->msg.u.request = (mc_wire_request_t){.layer = 2, .enc = MC_WIRE_F32, .n_rows = N_ROWS, .dim = DIM,
                                           .rows = (const uint8_t *)r->x, .rows_len = sizeof r->x, .k = K,
                                           .experts = r->experts, .weights = r->weights};
}

static uint8_t *s_encode(const mc_wire_msg_t *m, size_t *len) {
    uint8_t *buf = NULL;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_encode(m, &buf, len, err), MC_OK);
    return buf;
}

static void s_decode_ok(const mc_wire_limits_t *lim, const mc_wire_msg_t *in, mc_wire_msg_t *out) {
    size_t len;
    uint8_t *buf = s_encode(in, &len);
    char err[MC_ERR_LEN] = "";
    mc_err_t rc = mc_wire_decode(lim, buf, len, out, NULL, err);
    free(buf);
    if (rc != MC_OK) fail_msg("decode: %s", err);
    assert_int_equal(out->kind, in->kind);
    assert_true(out->request_id == in->request_id);
}

// Encode m, expect the decoder to refuse it with code and a message
// containing `needle`, and to report m's request id.
static void s_expect_reject(const mc_wire_limits_t *lim, const mc_wire_msg_t *m, mc_err_t code, const char *needle) {
    size_t len;
    uint8_t *buf = s_encode(m, &len);
    mc_wire_msg_t out = {.kind = MC_WIRE_MSG_STATS};
    uint64_t bad = 0;
    char err[MC_ERR_LEN] = "";
    mc_err_t rc = mc_wire_decode(lim, buf, len, &out, &bad, err);
    free(buf);
    if (rc != code || !strstr(err, needle))
        fail_msg("expected %s '%s', got %s '%s'", mc_err_name(code), needle, mc_err_name(rc), err);
    assert_true(bad == m->request_id);
    assert_int_equal(out.kind, MC_WIRE_MSG_STATS); // untouched
}

// The encoder writes one route per row, so a request whose row count
// disagrees with its routes is made by editing the protobuf directly: claim
// n_rows and keep the first rows_len bytes of rows.
static void s_expect_reject_edited(const mc_wire_msg_t *m, uint32_t n_rows, size_t rows_len, mc_err_t code,
                                   const char *needle) {
    size_t len;
    uint8_t *buf = s_encode(m, &len);
    Mc__Envelope *env = mc__envelope__unpack(NULL, len, buf);
    assert_non_null(env);
    env->expert_request->n_rows = n_rows;
    env->expert_request->rows.len = rows_len;
    uint8_t *edited = malloc(mc__envelope__get_packed_size(env));
    len = mc__envelope__pack(env, edited);
    mc__envelope__free_unpacked(env, NULL);
    mc_wire_msg_t out;
    uint64_t bad = 0;
    char err[MC_ERR_LEN] = "";
    mc_err_t rc = mc_wire_decode(&s_lim, edited, len, &out, &bad, err);
    free(buf), free(edited);
    if (rc != code || !strstr(err, needle))
        fail_msg("expected %s '%s', got %s '%s'", mc_err_name(code), needle, mc_err_name(rc), err);
    assert_true(bad == m->request_id);
}

static void test_roundtrip_small_messages(void **state) {
    (void)state;
    mc_wire_msg_t in = {.kind = MC_WIRE_MSG_HELLO, .request_id = 1}, out;
    in.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = 0xfedcba9876543210ull, .name = "node-a",
                                   .threads = 6, .memory_bytes = 1ull << 36};
    s_decode_ok(&s_lim, &in, &out);
    assert_true(out.u.hello.fingerprint == in.u.hello.fingerprint && out.u.hello.memory_bytes == in.u.hello.memory_bytes);
    assert_int_equal(out.u.hello.version, MC_WIRE_VERSION);
    assert_int_equal(out.u.hello.threads, 6);
    assert_string_equal(out.u.hello.name, "node-a");
    mc_wire_msg_free(&out);
    mc_wire_msg_free(&out); // safe twice

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ERROR, .request_id = 2};
    in.u.error.code = MC_ERR_RANGE;
    strcpy(in.u.error.message, "node b: layer 9 out of range");
    s_decode_ok(&s_lim, &in, &out);
    assert_int_equal(out.u.error.code, MC_ERR_RANGE);
    assert_string_equal(out.u.error.message, in.u.error.message);
    mc_wire_msg_free(&out);

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 3, .u.heartbeat = 1ull << 40};
    s_decode_ok(&s_lim, &in, &out);
    assert_true(out.u.heartbeat == 1ull << 40);
    mc_wire_msg_free(&out);

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_READY, .request_id = 4, .u.ready = {123456789, 7}};
    s_decode_ok(&s_lim, &in, &out);
    assert_true(out.u.ready.resident_bytes == 123456789 && out.u.ready.n_pairs == 7);
    mc_wire_msg_free(&out);

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 5};
    s_decode_ok(&s_lim, &in, &out);
    mc_wire_msg_free(&out);

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_STATS, .request_id = 6, .u.stats = {1, 2, 3, 4, 5, 6}};
    s_decode_ok(&s_lim, &in, &out);
    assert_memory_equal(&out.u.stats, &in.u.stats, sizeof in.u.stats);
    mc_wire_msg_free(&out);
}

// Made-up slice hashes: pair i's bytes are i * 32 + b.
static void s_fake_hashes(uint8_t *h, size_t pairs) {
    for (size_t i = 0; i < pairs * MC_WIRE_HASH_BYTES; i++) h[i] = (uint8_t)i;
}

static void test_roundtrip_assign(void **state) {
    (void)state;
    uint8_t held[N_LAYER * N_EXPERT] = {0}, hashes[4 * MC_WIRE_HASH_BYTES];
    held[0 * N_EXPERT + 0] = held[0 * N_EXPERT + 7] = held[2 * N_EXPERT + 3] = held[3 * N_EXPERT + 1] = 1;
    s_fake_hashes(hashes, 4);
    mc_wire_msg_t in = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 9}, out;
    in.u.assign = (mc_wire_assign_t){.session_id = 0xabcdef, .n_layer = N_LAYER, .n_expert = N_EXPERT, .held = held,
                                     .hashes = hashes};
    s_decode_ok(&s_lim, &in, &out);
    assert_true(out.u.assign.session_id == 0xabcdef);
    assert_memory_equal(out.u.assign.held, held, sizeof held);
    assert_memory_equal(out.u.assign.hashes, hashes, sizeof hashes);
    mc_wire_msg_free(&out);
    // An empty placement (release everything) is valid too, without hashes.
    memset(held, 0, sizeof held);
    in.u.assign.hashes = NULL;
    s_decode_ok(&s_lim, &in, &out);
    assert_memory_equal(out.u.assign.held, held, sizeof held);
    mc_wire_msg_free(&out);
}

// An Assign made directly as protobuf (any listing order): layer 2 with
// experts 5 and 1, then layer 0 with expert 6; hashes in that order, with
// `extra` bytes more (negative: fewer).
static uint8_t *s_raw_assign(int extra, size_t *len) {
    uint32_t e2[] = {5, 1}, e0[] = {6};
    Mc__LayerExperts l2 = MC__LAYER_EXPERTS__INIT, l0 = MC__LAYER_EXPERTS__INIT;
    l2.layer = 2, l2.n_experts = 2, l2.experts = e2;
    l0.layer = 0, l0.n_experts = 1, l0.experts = e0;
    Mc__LayerExperts *layers[] = {&l2, &l0};
    static uint8_t hashes[4 * MC_WIRE_HASH_BYTES];
    s_fake_hashes(hashes, 4);
    Mc__Assign a = MC__ASSIGN__INIT;
    a.session_id = 5, a.n_layers = 2, a.layers = layers;
    a.hashes.data = hashes, a.hashes.len = (size_t)(3 * MC_WIRE_HASH_BYTES + extra);
    Mc__Envelope env = MC__ENVELOPE__INIT;
    env.request_id = 77, env.body_case = MC__ENVELOPE__BODY_ASSIGN, env.assign = &a;
    uint8_t *buf = malloc(mc__envelope__get_packed_size(&env));
    *len = mc__envelope__pack(&env, buf);
    return buf;
}

// Every listed pair carries exactly one 32-byte hash; the decoder hands
// them out in held's order (layer by layer, experts ascending) whatever the
// listing order.
static void test_assign_hashes(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = s_raw_assign(0, &len);
    mc_wire_msg_t out;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_wire_decode(&s_lim, buf, len, &out, NULL, err), MC_OK);
    free(buf);
    const uint8_t *h = out.u.assign.hashes;
    assert_true(out.u.assign.held[0 * N_EXPERT + 6] && out.u.assign.held[2 * N_EXPERT + 1] &&
                out.u.assign.held[2 * N_EXPERT + 5]);
    // Listed: (2,5) (2,1) (0,6) = hashes 0, 1, 2; held order: (0,6) (2,1) (2,5).
    assert_int_equal(h[0 * MC_WIRE_HASH_BYTES], (uint8_t)(2 * MC_WIRE_HASH_BYTES));
    assert_int_equal(h[1 * MC_WIRE_HASH_BYTES], (uint8_t)(1 * MC_WIRE_HASH_BYTES));
    assert_int_equal(h[2 * MC_WIRE_HASH_BYTES], 0);
    assert_int_equal(h[2 * MC_WIRE_HASH_BYTES + 31], 31);
    mc_wire_msg_free(&out);
    // One byte short or over, none, a pair's worth too many.
    const int lengths[] = {-1, 1, -3 * MC_WIRE_HASH_BYTES, MC_WIRE_HASH_BYTES};
    const char *const said[] = {"carries 95 bytes of slice hashes for 3 (layer, expert) pairs, expected 32 per pair",
                                "carries 97 bytes", "carries 0 bytes", "carries 128 bytes"};
    for (int i = 0; i < 4; i++) {
        buf = s_raw_assign(lengths[i], &len);
        uint64_t bad = 0;
        assert_int_equal(mc_wire_decode(&s_lim, buf, len, &out, &bad, err), MC_ERR_FORMAT);
        if (!strstr(err, said[i])) fail_msg("'%s' lacks '%s'", err, said[i]);
        assert_true(bad == 77);
        free(buf);
    }
    // The encoder leaves the hashes out when given none: refused too.
    uint8_t held[N_LAYER * N_EXPERT] = {[3] = 1};
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 78};
    m.u.assign = (mc_wire_assign_t){1, N_LAYER, N_EXPERT, held, NULL, NULL};
    s_expect_reject(&s_lim, &m, MC_ERR_FORMAT, "carries 0 bytes of slice hashes for 1 (layer, expert) pairs");
}

static void test_roundtrip_request_result(void **state) {
    (void)state;
    s_req_t r;
    s_req_init(&r);
    mc_wire_msg_t out;
    s_decode_ok(&s_lim, &r.msg, &out);
    const mc_wire_request_t *q = &out.u.request;
    assert_int_equal(q->layer, 2);
    assert_int_equal(q->enc, MC_WIRE_F32);
    assert_int_equal(q->n_rows, N_ROWS);
    assert_int_equal(q->k, K);
    assert_int_equal(q->rows_len, sizeof r.x);
    assert_memory_equal(q->rows, r.x, sizeof r.x);
    assert_memory_equal(q->experts, r.experts, sizeof r.experts);
    assert_memory_equal(q->weights, r.weights, sizeof r.weights);
    mc_wire_msg_free(&out);

    // Unused choices are not sent: a request where every row has one pair decodes with k = 1.
    int32_t ex1[N_ROWS * K] = {-1, 4, 6, -1, 2, -1};
    r.msg.u.request.experts = ex1;
    s_decode_ok(&s_lim, &r.msg, &out);
    assert_int_equal(out.u.request.k, 1);
    assert_int_equal(out.u.request.experts[0], 4);
    assert_int_equal(out.u.request.experts[1], 6);
    assert_true(out.u.request.weights[0] == r.weights[1] && out.u.request.weights[1] == r.weights[2]);
    mc_wire_msg_free(&out);

    mc_wire_msg_t res = {.kind = MC_WIRE_MSG_RESULT, .request_id = 77};
    res.u.result = (mc_wire_result_t){N_ROWS, DIM, MC_WIRE_F32, (const uint8_t *)r.x, sizeof r.x, 1234, {0}};
    s_decode_ok(&s_lim, &res, &out);
    assert_int_equal(out.u.result.n_rows, N_ROWS);
    assert_true(out.u.result.compute_us == 1234);
    assert_memory_equal(out.u.result.rows, r.x, sizeof r.x);
    assert_false(out.u.result.store.has); // a node without a memory limit sends none
    mc_wire_msg_free(&out);
    // A node under --mem-limit: its store's counters ride on the result.
    res.u.result.store = (mc_wire_store_stats_t){true, 1 << 20, 3 << 18, 11, 5, 123456789012ull, 42, 7, 6, 1};
    s_decode_ok(&s_lim, &res, &out);
    assert_true(out.u.result.store.has);
    assert_true(out.u.result.store.budget_bytes == 1 << 20 && out.u.result.store.used_bytes == 3 << 18);
    assert_true(out.u.result.store.hits == 11 && out.u.result.store.misses == 5);
    assert_true(out.u.result.store.bytes_read == 123456789012ull && out.u.result.store.stall_us == 42);
    assert_true(out.u.result.store.prefetched == 7 && out.u.result.store.prefetch_used == 6);
    assert_true(out.u.result.store.errors == 1);
    mc_wire_msg_free(&out);
}

static void test_row_encodings(void **state) {
    (void)state;
    enum { N = 4 };
    float x[N * DIM], back[N * DIM];
    uint64_t seed = 99;
    for (int i = 0; i < N * DIM; i++) x[i] = s_uniform(&seed) * 100.0f;
    // Values that exercise rounding: ties, subnormal halves, overflow to Inf.
    x[0] = 1.0f + 1.0f / 2048.0f, x[1] = 1e-6f, x[2] = 70000.0f, x[3] = -0.0f, x[4] = 3.0e-41f;

    assert_int_equal(mc_wire_row_bytes(MC_WIRE_F32, DIM), DIM * 4);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_F16, DIM), DIM * 2);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_BF16, DIM), DIM * 2);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_Q8_0, DIM), DIM / 32 * 34);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_Q8_0, 48), 0);
    assert_int_equal(mc_wire_row_bytes((mc_wire_enc_t)9, DIM), 0);

    uint8_t buf[N * DIM * 4], ref[N * DIM * 4];
    mc_wire_rows_encode(MC_WIRE_F32, x, N, DIM, buf);
    mc_wire_rows_decode(MC_WIRE_F32, buf, N, DIM, back);
    assert_memory_equal(back, x, sizeof x);

    mc_wire_rows_encode(MC_WIRE_F16, x, N, DIM, buf);
    mc_wire_rows_decode(MC_WIRE_F16, buf, N, DIM, back);
    for (int i = 0; i < N * DIM; i++) {
        uint16_t h, want = mc_fp32_to_fp16(x[i]);
        memcpy(&h, buf + 2 * i, 2);
        assert_int_equal(h, want);
        assert_true(mc_f32_bits(back[i]) == mc_f32_bits(mc_fp16_to_fp32(want)));
    }
    assert_true(isinf(back[2]));

    mc_wire_rows_encode(MC_WIRE_BF16, x, N, DIM, buf);
    mc_wire_rows_decode(MC_WIRE_BF16, buf, N, DIM, back);
    for (int i = 0; i < N * DIM; i++) {
        uint16_t h, want = mc_fp32_to_bf16(x[i]);
        memcpy(&h, buf + 2 * i, 2);
        assert_int_equal(h, want);
        assert_true(mc_f32_bits(back[i]) == mc_f32_bits(mc_bf16_to_fp32(want)));
    }

    size_t rb = mc_wire_row_bytes(MC_WIRE_Q8_0, DIM);
    mc_wire_rows_encode(MC_WIRE_Q8_0, x, N, DIM, buf);
    float deq[DIM];
    for (int t = 0; t < N; t++) {
        assert_int_equal(mc_quant_quantize_row(MC_DTYPE_Q8_0, x + t * DIM, ref + t * rb, DIM), MC_OK);
        assert_int_equal(mc_quant_dequantize_row(MC_DTYPE_Q8_0, ref + t * rb, deq, DIM), MC_OK);
        mc_wire_rows_decode(MC_WIRE_Q8_0, buf + t * rb, 1, DIM, back);
        assert_memory_equal(back, deq, sizeof deq);
    }
    assert_memory_equal(buf, ref, N * rb);
}

// Q8_1 and Q8_K rows are the activation quantizer's blocks, byte for byte.
static void test_block_encodings(void **state) {
    (void)state;
    enum { N = 3, W = 512 };
    static float x[N * W], back[N * W], deq[W];
    static uint8_t buf[N * W * 4], ref[N * W * 4];
    uint64_t seed = 7;
    for (int i = 0; i < N * W; i++) x[i] = s_uniform(&seed) * 3.0f;
    const mc_wire_enc_t encs[] = {MC_WIRE_Q8_0, MC_WIRE_Q8_1, MC_WIRE_Q8_K};
    const mc_dtype_t types[] = {MC_DTYPE_Q8_0, MC_DTYPE_Q8_1, MC_DTYPE_Q8_K};
    for (int e = 0; e < 3; e++) {
        assert_int_equal(mc_wire_enc_dtype(encs[e]), types[e]);
        mc_wire_enc_t back_enc;
        assert_true(mc_wire_enc_of_dtype(types[e], &back_enc));
        assert_int_equal(back_enc, encs[e]);
        const size_t rb = mc_wire_row_bytes(encs[e], W);
        assert_int_equal(rb, mc_dtype_row_bytes(types[e], W));
        mc_wire_rows_encode(encs[e], x, N, W, buf);
        for (int t = 0; t < N; t++) {
            assert_int_equal(mc_quant_quantize_row(types[e], x + t * W, ref + t * rb, W), MC_OK);
            assert_int_equal(mc_quant_dequantize_row(types[e], ref + t * rb, deq, W), MC_OK);
            mc_wire_rows_decode(encs[e], buf + t * rb, 1, W, back);
            assert_memory_equal(back, deq, sizeof deq);
        }
        assert_memory_equal(buf, ref, N * rb);
        assert_int_equal(mc_wire_rows_check(encs[e], buf, N, W, NULL), MC_OK);
    }
    // Q8_K: 256-value blocks only; about 1.14 bytes per value against 4.
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_Q8_K, 256), 292);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_Q8_K, 64), 0);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_Q8_1, 64), 72);
    assert_int_equal(mc_wire_row_bytes(MC_WIRE_AUTO, 64), 0);
    // A block whose per-16 sums do not match its quants, or a scale that is
    // not finite, is refused.
    char err[MC_ERR_LEN];
    mc_wire_rows_encode(MC_WIRE_Q8_K, x, N, W, buf);
    mc_block_q8_k_t blk;
    memcpy(&blk, buf + 292 * 3, sizeof blk); // row 1, block 1
    blk.bsums[5]++;
    memcpy(buf + 292 * 3, &blk, sizeof blk);
    assert_int_equal(mc_wire_rows_check(MC_WIRE_Q8_K, buf, N, W, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "row 1: a q8_k block's sums do not match its quants"));
    blk.bsums[5]--, blk.d = INFINITY;
    memcpy(buf + 292 * 3, &blk, sizeof blk);
    assert_int_equal(mc_wire_rows_check(MC_WIRE_Q8_K, buf, N, W, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "row 1: a block scale is not finite"));
    mc_wire_rows_encode(MC_WIRE_Q8_1, x, N, W, buf);
    const uint16_t nan16 = 0x7e00;
    memcpy(buf + 36 * 16 * 2 + 2, &nan16, 2); // row 2, block 0, s
    assert_int_equal(mc_wire_rows_check(MC_WIRE_Q8_1, buf, N, W, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "row 2: a block scale is not finite"));
    mc_wire_rows_encode(MC_WIRE_Q8_0, x, N, W, buf);
    memcpy(buf + 34 * 17, &nan16, 2); // row 1, block 1, d
    assert_int_equal(mc_wire_rows_check(MC_WIRE_Q8_0, buf, N, W, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "row 1: a block scale is not finite"));
    // Float rows carry any bits.
    assert_int_equal(mc_wire_rows_check(MC_WIRE_F16, buf, N, W, err), MC_OK);
    // The decoder runs the check on requests.
    mc_wire_limits_t lim = {1, N_EXPERT, W, 16, K, NULL, 0};
    int32_t ex[N * K] = {0, 1, 2, 3, 4, 5};
    float w[N * K] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    mc_wire_rows_encode(MC_WIRE_Q8_K, x, N, W, buf);
    blk.d = 0.5f, blk.bsums[0] = (int16_t)(blk.bsums[0] + 3);
    memcpy(buf + 292 * 4, &blk, sizeof blk); // row 2
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 77};
    m.u.request = (mc_wire_request_t){0, MC_WIRE_Q8_K, N, W, buf, (size_t)N * 584, K, ex, w, MC_WIRE_F32};
    s_expect_reject(&lim, &m, MC_ERR_FORMAT, "row 2: a q8_k block's sums do not match");
    mc_wire_rows_encode(MC_WIRE_Q8_K, x, N, W, buf);
    mc_wire_msg_t out;
    s_decode_ok(&lim, &m, &out);
    assert_int_equal(out.u.request.enc, MC_WIRE_Q8_K);
    mc_wire_msg_free(&out);
    m.u.request.enc = (mc_wire_enc_t)MC_WIRE_N_ENC;
    s_expect_reject(&lim, &m, MC_ERR_UNSUPPORTED, "unknown row encoding 6");
    m.u.request.enc = MC_WIRE_AUTO;
    s_expect_reject(&lim, &m, MC_ERR_UNSUPPORTED, "unknown row encoding 15");
}

// What `wire: auto` sends for each weight type, and what a node answers with.
static void test_auto_and_result_encodings(void **state) {
    (void)state;
    static const struct {
        mc_dtype_t w;
        mc_wire_enc_t enc;
    } want[] = {{MC_DTYPE_F32, MC_WIRE_F32},   {MC_DTYPE_F16, MC_WIRE_F16},   {MC_DTYPE_BF16, MC_WIRE_BF16},
                {MC_DTYPE_Q4_0, MC_WIRE_Q8_0}, {MC_DTYPE_Q5_0, MC_WIRE_Q8_0}, {MC_DTYPE_Q8_0, MC_WIRE_Q8_0},
                {MC_DTYPE_Q4_1, MC_WIRE_Q8_1}, {MC_DTYPE_Q5_1, MC_WIRE_Q8_1}, {MC_DTYPE_Q2_K, MC_WIRE_Q8_K},
                {MC_DTYPE_Q3_K, MC_WIRE_Q8_K}, {MC_DTYPE_Q4_K, MC_WIRE_Q8_K}, {MC_DTYPE_Q5_K, MC_WIRE_Q8_K},
                {MC_DTYPE_Q6_K, MC_WIRE_Q8_K}};
    // A one-layer model view with one expert per case; auto only reads types.
    enum { NC = sizeof want / sizeof want[0] };
    mc_expert_t ex[NC + 1];
    mc_layer_t layer = {.experts = ex};
    mc_model_t m = {.hp = {.dim = 256, .n_layer = 1, .n_expert = NC + 1}, .layers = &layer};
    for (int i = 0; i < NC; i++) {
        ex[i].gate.type = ex[i].up.type = want[i].w;
        assert_int_equal(mc_wire_auto_enc(&m, 0, (uint32_t)i), want[i].enc);
    }
    // Gate and up taking different activations: f32, which the node converts.
    ex[NC].gate.type = MC_DTYPE_Q4_K, ex[NC].up.type = MC_DTYPE_Q8_0;
    assert_int_equal(mc_wire_auto_enc(&m, 0, NC), MC_WIRE_F32);
    // A dim the blocks do not divide: f32 too.
    m.hp.dim = 96;
    assert_int_equal(mc_wire_auto_enc(&m, 0, 10), MC_WIRE_F32);
    assert_int_equal(mc_wire_auto_enc(&m, 0, 3), MC_WIRE_Q8_0);
    assert_int_equal(mc_wire_result_enc(MC_WIRE_Q8_K), MC_WIRE_F32);
    assert_int_equal(mc_wire_result_enc(MC_WIRE_Q8_0), MC_WIRE_F32);
    assert_int_equal(mc_wire_result_enc(MC_WIRE_F16), MC_WIRE_F16);
    assert_int_equal(mc_wire_result_enc(MC_WIRE_BF16), MC_WIRE_BF16);
}

static void test_rejects_bad_requests(void **state) {
    (void)state;
    s_req_t r;
    s_req_init(&r);
    mc_wire_request_t *q = &r.msg.u.request;
    const mc_wire_request_t good = *q;

    q->layer = N_LAYER;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "layer 4 out of range");
    *q = good;
    r.experts[2] = N_EXPERT;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "expert 8 out of range");
    r.experts[2] = 7;
    uint8_t held[N_LAYER * N_EXPERT] = {0};
    held[2 * N_EXPERT + 1] = held[2 * N_EXPERT + 5] = held[2 * N_EXPERT + 0] = held[2 * N_EXPERT + 3] = 1;
    mc_wire_limits_t lim = s_lim;
    lim.held = held;
    s_expect_reject(&lim, &r.msg, MC_ERR_RANGE, "expert 7 of layer 2 is not assigned");
    held[2 * N_EXPERT + 7] = 1;
    mc_wire_msg_t out;
    s_decode_ok(&lim, &r.msg, &out);
    mc_wire_msg_free(&out);

    q->dim = DIM / 2, q->rows_len = sizeof r.x / 2;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "row width 32, the model's dim is 64");
    *q = good;
    q->rows_len--;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_FORMAT, "rows payload of 767 bytes");
    *q = good;
    q->enc = MC_WIRE_F16; // bytes of f32 rows, announced as f16
    s_expect_reject(&s_lim, &r.msg, MC_ERR_FORMAT, "expected 3 rows of 128 bytes");
    *q = good;
    q->enc = (mc_wire_enc_t)7;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_UNSUPPORTED, "unknown row encoding 7");
    *q = good;

    // Huge or zero counts: the row count says more rows than the routes and bytes carry.
    s_expect_reject_edited(&r.msg, 1u << 30, sizeof r.x, MC_ERR_RANGE, "1073741824 rows, expected 1..16");
    s_expect_reject_edited(&r.msg, UINT32_MAX, sizeof r.x, MC_ERR_RANGE, "4294967295 rows");
    s_expect_reject_edited(&r.msg, 2, 2 * DIM * 4, MC_ERR_FORMAT, "3 rows of experts for 2 rows");
    q->n_rows = 0, q->rows_len = 0;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "0 rows");
    *q = good;

    r.weights[1] = NAN;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "row 0: weight 1 is not finite");
    r.weights[1] = -INFINITY;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "not finite");
    r.weights[1] = 0.25f;

    r.experts[4] = -1; // row 2 then has no pair at all
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "row 2: 0 experts, expected 1..2");
    r.experts[4] = 3;
    r.experts[1] = 1;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_FORMAT, "row 0: expert 1 listed twice");
    r.experts[1] = 5;

    // More pairs per row than the model's k.
    int32_t ex3[N_ROWS * 3] = {0, 1, 2, 0, 1, 2, 0, 1, 2};
    float w3[N_ROWS * 3] = {0};
    q->k = 3, q->experts = ex3, q->weights = w3;
    s_expect_reject(&s_lim, &r.msg, MC_ERR_RANGE, "row 0: 3 experts, expected 1..2");
    *q = good;

    q->res_enc = MC_WIRE_Q8_0; // results travel as floats only
    s_expect_reject(&s_lim, &r.msg, MC_ERR_UNSUPPORTED, "result encoding 3: expected f32, f16 or bf16");
    q->res_enc = MC_WIRE_BF16;
    s_decode_ok(&s_lim, &r.msg, &out);
    assert_int_equal(out.u.request.res_enc, MC_WIRE_BF16);
    mc_wire_msg_free(&out);
    *q = good;

    // Q8_0 rows need whole blocks.
    lim = s_lim;
    lim.dim = 48;
    q->enc = MC_WIRE_Q8_0, q->dim = 48, q->rows_len = 0;
    s_expect_reject(&lim, &r.msg, MC_ERR_UNSUPPORTED, "q8_0 rows cannot carry 48 values");
}

static void test_rejects_bad_other_messages(void **state) {
    (void)state;
    // Placements made for a bigger model.
    uint8_t big[(N_LAYER + 1) * N_EXPERT] = {0};
    big[N_LAYER * N_EXPERT + 2] = 1;
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 11};
    m.u.assign = (mc_wire_assign_t){1, N_LAYER + 1, N_EXPERT, big, NULL, NULL};
    s_expect_reject(&s_lim, &m, MC_ERR_RANGE, "assignment names layer 4");
    uint8_t wide[N_LAYER * (N_EXPERT + 1)] = {0};
    wide[N_EXPERT] = 1; // layer 0, expert 8
    m.u.assign = (mc_wire_assign_t){1, N_LAYER, N_EXPERT + 1, wide, NULL, NULL};
    s_expect_reject(&s_lim, &m, MC_ERR_RANGE, "assignment names expert 8 of layer 0");

    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_HELLO, .request_id = 12};
    strcpy(m.u.hello.name, "bad\tname");
    s_expect_reject(&s_lim, &m, MC_ERR_FORMAT, "node name has a non-printable character");

    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ERROR, .request_id = 13};
    m.u.error.code = (mc_err_t)99;
    s_expect_reject(&s_lim, &m, MC_ERR_RANGE, "unknown code 99");
    m.u.error.code = MC_OK;
    s_expect_reject(&s_lim, &m, MC_ERR_RANGE, "unknown code 0");

    float rows[DIM];
    memset(rows, 0, sizeof rows);
    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_RESULT, .request_id = 14};
    m.u.result = (mc_wire_result_t){1, DIM, MC_WIRE_Q8_0, (const uint8_t *)rows, 68, 0, {0}};
    s_expect_reject(&s_lim, &m, MC_ERR_UNSUPPORTED, "result rows in unknown encoding 3");
    m.u.result = (mc_wire_result_t){2, DIM, MC_WIRE_F32, (const uint8_t *)rows, sizeof rows, 0, {0}};
    s_expect_reject(&s_lim, &m, MC_ERR_FORMAT, "rows payload of 256 bytes, expected 2 rows");

    m = (mc_wire_msg_t){.kind = MC_WIRE_MSG_READY, .request_id = 15, .u.ready = {0, N_LAYER * N_EXPERT + 1}};
    s_expect_reject(&s_lim, &m, MC_ERR_RANGE, "ready with 33 pairs");
}

// Hand-made envelopes: protobuf bytes the encoder cannot produce.
// What nodes without a model file exchange: Hello's cache flag, ModelInfo,
// the types in Assign, Progress of fetching, FetchOpen, SliceRequest and
// SliceData round-trip; bad sizes, offsets, pairs, types and hashes are
// refused by the decoder before anyone sees them.
static void test_transfer_messages(void **state) {
    (void)state;
    const mc_wire_limits_t lim = {N_LAYER, N_EXPERT, DIM, 16, K, NULL, 128};
    mc_wire_msg_t in = {.kind = MC_WIRE_MSG_HELLO, .request_id = 3}, out;
    in.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = 0, .cache = true};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.hello.cache && out.u.hello.fingerprint == 0);
    mc_wire_msg_free(&out);

    static uint8_t blob[MC_WIRE_INFO_MAX + 1];
    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_MODEL_INFO, .request_id = 4};
    in.u.model_info = (mc_wire_model_info_t){0x1234, blob, 100};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.model_info.fingerprint == 0x1234 && out.u.model_info.len == 100);
    mc_wire_msg_free(&out);
    in.u.model_info.len = MC_WIRE_INFO_MAX + 1;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "model info of 1048577 bytes");
    in.u.model_info.len = 0;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "model info of 0 bytes");

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_FETCH_OPEN, .request_id = 5, .u.fetch_open = 77};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.fetch_open == 77);
    mc_wire_msg_free(&out);

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_SLICE_REQUEST, .request_id = 6};
    in.u.slice_request = (mc_wire_slice_request_t){3, 7, 4096, 65536, 1000};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.slice_request.layer == 3 && out.u.slice_request.expert == 7 && out.u.slice_request.offset == 4096 &&
                out.u.slice_request.length == 65536 && out.u.slice_request.remaining == 1000);
    mc_wire_msg_free(&out);
    in.u.slice_request.length = 0;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "slice chunk of 0 bytes");
    in.u.slice_request.length = MC_WIRE_CHUNK_MAX + 1;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "expected 1..4194304");
    in.u.slice_request.length = 16, in.u.slice_request.offset = UINT64_MAX - 8;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "beyond any slice");
    in.u.slice_request.offset = 0, in.u.slice_request.layer = N_LAYER;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "the model has 4 layers of 8 experts");
    in.u.slice_request.layer = 0, in.u.slice_request.expert = N_EXPERT;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "slice of expert 8 of layer 0");

    uint8_t data[300];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_SLICE_DATA, .request_id = 7};
    in.u.slice_data = (mc_wire_slice_data_t){1, 2, 8192, data, sizeof data};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.slice_data.len == sizeof data && out.u.slice_data.offset == 8192);
    assert_memory_equal(out.u.slice_data.data, data, sizeof data);
    mc_wire_msg_free(&out);
    in.u.slice_data.len = 0;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "slice chunk of 0 bytes");
    in.u.slice_data.len = sizeof data, in.u.slice_data.offset = MC_WIRE_SLICE_MAX;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "beyond any slice");
    in.u.slice_data.offset = 0, in.u.slice_data.expert = 99;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "slice of expert 99");
    // Without a model (a node that has none yet) every pair is out of range.
    const mc_wire_limits_t none = {0};
    in.u.slice_data.expert = 0;
    s_expect_reject(&none, &in, MC_ERR_RANGE, "the model has 0 layers");

    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_PROGRESS, .request_id = 8};
    in.u.progress = (mc_wire_progress_t){10, 20, 5, 10};
    s_decode_ok(&lim, &in, &out);
    assert_true(out.u.progress.fetch_done == 5 && out.u.progress.fetch_total == 10);
    mc_wire_msg_free(&out);
    in.u.progress.fetch_done = 11;
    s_expect_reject(&lim, &in, MC_ERR_RANGE, "11 bytes fetched out of 10");

    // Assign's types: 3 per pair, weight types whose blocks divide the rows
    // (gate and up: DIM values, down: the lim's ffn).
    uint8_t held[N_LAYER * N_EXPERT] = {0}, hashes[2 * MC_WIRE_HASH_BYTES];
    held[1] = held[2 * N_EXPERT + 5] = 1;
    s_fake_hashes(hashes, 2);
    uint8_t types[6] = {MC_DTYPE_Q4_0, MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_Q4_K};
    in = (mc_wire_msg_t){.kind = MC_WIRE_MSG_ASSIGN, .request_id = 9};
    in.u.assign = (mc_wire_assign_t){1, N_LAYER, N_EXPERT, held, hashes, types};
    // Q4_K's blocks of 256 do not divide down's 128 values.
    s_expect_reject(&lim, &in, MC_ERR_FORMAT, "tensor type 12 for rows of 128 values");
    types[5] = MC_DTYPE_Q6_K - 0; // also 256
    s_expect_reject(&lim, &in, MC_ERR_FORMAT, "for rows of 128 values");
    types[5] = MC_DTYPE_BF16;
    s_decode_ok(&lim, &in, &out);
    assert_memory_equal(out.u.assign.types, types, sizeof types);
    mc_wire_msg_free(&out);
    types[0] = MC_DTYPE_Q8_K; // not a weight type
    s_expect_reject(&lim, &in, MC_ERR_FORMAT, "tensor type");
    types[0] = 200;
    s_expect_reject(&lim, &in, MC_ERR_FORMAT, "tensor type 200");
    types[0] = MC_DTYPE_Q4_0;
    // A wrong number of type bytes: made as protobuf directly.
    size_t len;
    uint8_t *buf = s_encode(&in, &len);
    Mc__Envelope *env = mc__envelope__unpack(NULL, len, buf);
    assert_non_null(env);
    env->assign->types.len = 5;
    uint8_t *edited = malloc(mc__envelope__get_packed_size(env));
    len = mc__envelope__pack(env, edited);
    mc__envelope__free_unpacked(env, NULL);
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_decode(&lim, edited, len, &out, NULL, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "5 bytes of tensor types for 2 pairs"));
    free(buf), free(edited);
}

static void test_rejects_raw_envelopes(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_wire_msg_t out;
    uint64_t bad = 0;
    // request_id 5, then an unknown field 31 (varint 1): a body from a future version.
    static const uint8_t future[] = {0x08, 0x05, 0xF8, 0x01, 0x01};
    assert_int_equal(mc_wire_decode(&s_lim, future, sizeof future, &out, &bad, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "without a body"));
    assert_true(bad == 5);
    // An empty buffer is an envelope without a body.
    assert_int_equal(mc_wire_decode(&s_lim, future, 0, &out, &bad, err), MC_ERR_UNSUPPORTED);
    // Not protobuf at all: nothing to answer, bad id untouched.
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    bad = 77;
    assert_int_equal(mc_wire_decode(&s_lim, junk, sizeof junk, &out, &bad, err), MC_ERR_NET);
    assert_non_null(strstr(err, "not a message envelope"));
    assert_true(bad == 77);
    // Assignments the encoder cannot write: a layer listed twice, an expert
    // listed twice, a layer without experts.
    static const uint8_t twice_layer[] = {0x2a, 0x0e, 0x12, 0x05, 0x08, 0x01, 0x12, 0x01, 0x02,
                                          0x12, 0x05, 0x08, 0x01, 0x12, 0x01, 0x03};
    assert_int_equal(mc_wire_decode(&s_lim, twice_layer, sizeof twice_layer, &out, &bad, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "lists layer 1 twice"));
    static const uint8_t twice_expert[] = {0x2a, 0x08, 0x12, 0x06, 0x08, 0x01, 0x12, 0x02, 0x02, 0x02};
    assert_int_equal(mc_wire_decode(&s_lim, twice_expert, sizeof twice_expert, &out, &bad, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "lists expert 2 of layer 1 twice"));
    static const uint8_t empty_layer[] = {0x2a, 0x04, 0x12, 0x02, 0x08, 0x01};
    assert_int_equal(mc_wire_decode(&s_lim, empty_layer, sizeof empty_layer, &out, &bad, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "layer 1 without experts"));
    // A hello whose name has 65 characters.
    uint8_t hello[2 + 2 + 65] = {0x12, 67, 0x1a, 65};
    memset(hello + 4, 'a', 65);
    assert_int_equal(mc_wire_decode(&s_lim, hello, sizeof hello, &out, &bad, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "node name is 65 characters, at most 64"));
}

// A tiny message that would unpack into far more memory than its size (a
// million empty row routes) fails inside the decoder's allocation budget.
static void test_decode_memory_budget(void **state) {
    (void)state;
    enum { ROUTES = 1 << 20 };
    size_t inner = 2 * (size_t)ROUTES, len = 1 + 4 + inner;
    uint8_t *buf = malloc(len);
    buf[0] = 0x3a; // field 7 (expert_request), length-delimited
    size_t v = inner;
    for (int i = 1; i <= 4; i++, v >>= 7) buf[i] = (uint8_t)((v & 0x7f) | (i < 4 ? 0x80 : 0));
    for (size_t i = 0; i < ROUTES; i++) buf[5 + 2 * i] = 0x32, buf[6 + 2 * i] = 0x00; // field 6, empty
    mc_wire_msg_t out;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_wire_decode(&s_lim, buf, len, &out, NULL, err), MC_ERR_NET);
    // Under the limits of the largest model too (the budget allows for its
    // biggest legitimate messages), and as an assignment: a million empty
    // layer entries.
    const mc_wire_limits_t big = {94, 128, 4096, MC_WIRE_MAX_ROWS, 8, NULL, 0};
    assert_int_equal(mc_wire_decode(&big, buf, len, &out, NULL, err), MC_ERR_NET);
    buf[0] = 0x2a; // field 5 (assign), entries of field 2 (layers)
    for (size_t i = 0; i < ROUTES; i++) buf[5 + 2 * i] = 0x12;
    assert_int_equal(mc_wire_decode(&big, buf, len, &out, NULL, err), MC_ERR_NET);
    free(buf);
}

// Assignments at the largest model shapes, every pair held or one expert
// per layer, survive the round trip: the decoder's budget is what such a
// message needs, not a multiple of its (compact) size on the wire.
static void test_roundtrip_assign_largest(void **state) {
    (void)state;
    static const struct {
        uint32_t n_layer, n_expert, first, last; // held: experts first..last of every layer
    } shapes[] = {
        {48, 8, 0, 7},      // the bug report: a 48-layer model on one node
        {48, 128, 0, 42},   // Qwen3-30B-A3B, the README's box-1
        {48, 128, 0, 127},
        {94, 128, 0, 127},  // Qwen3-235B-A22B
        {94, 128, 127, 127},
        {61, 256, 0, 255},  // DeepSeek-V3
        {61, 256, 200, 200},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const uint32_t nl = shapes[i].n_layer, ne = shapes[i].n_expert;
        const mc_wire_limits_t lim = {nl, ne, 4096, MC_WIRE_MAX_ROWS, 8, NULL, 0};
        uint8_t *held = calloc((size_t)nl * ne, 1);
        for (uint32_t l = 0; l < nl; l++)
            for (uint32_t e = shapes[i].first; e <= shapes[i].last; e++) held[(size_t)l * ne + e] = 1;
        // Every listed pair carries its 32-byte slice hash.
        const size_t pairs = (size_t)nl * (shapes[i].last - shapes[i].first + 1);
        uint8_t *hashes = malloc(pairs * MC_WIRE_HASH_BYTES);
        for (size_t b = 0; b < pairs * MC_WIRE_HASH_BYTES; b++) hashes[b] = (uint8_t)(b * 131 + 7);
        mc_wire_msg_t in = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = UINT64_MAX}, out;
        in.u.assign = (mc_wire_assign_t){.session_id = UINT64_MAX, .n_layer = nl, .n_expert = ne, .held = held,
                                         .hashes = hashes};
        size_t len;
        free(s_encode(&in, &len));
        assert_true((int64_t)len <= mc_wire_max_msg_bytes(&lim)); // ZeroMQ lets it in
        s_decode_ok(&lim, &in, &out);
        assert_true(out.u.assign.session_id == UINT64_MAX);
        assert_int_equal(out.u.assign.n_layer, nl);
        assert_int_equal(out.u.assign.n_expert, ne);
        assert_memory_equal(out.u.assign.held, held, (size_t)nl * ne);
        // Listed in held's row-major order, so here in the order sent.
        assert_memory_equal(out.u.assign.hashes, hashes, pairs * MC_WIRE_HASH_BYTES);
        mc_wire_msg_free(&out);
        free(held), free(hashes);
    }
}

// The largest requests: MC_WIRE_MAX_ROWS rows, each with all 8 choices used,
// as f32 and as q8_0 rows of a 2048-wide model; and their results.
static void test_roundtrip_request_largest(void **state) {
    (void)state;
    enum { W = 2048, KK = 8 };
    const uint32_t n = MC_WIRE_MAX_ROWS;
    const mc_wire_limits_t lim = {94, 128, W, MC_WIRE_MAX_ROWS, KK, NULL, 0};
    float *x = malloc((size_t)n * W * sizeof *x);
    int32_t *ex = malloc((size_t)n * KK * sizeof *ex);
    float *w = malloc((size_t)n * KK * sizeof *w);
    uint64_t seed = 3;
    for (size_t i = 0; i < (size_t)n * W; i++) x[i] = s_uniform(&seed);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t j = 0; j < KK; j++) {
            ex[t * KK + j] = (int32_t)((t * 7 + j * 16) % 128); // 8 distinct experts a row
            w[t * KK + j] = s_uniform(&seed);
        }
    const mc_wire_enc_t encs[] = {MC_WIRE_F32, MC_WIRE_Q8_0};
    uint8_t *rows = malloc((size_t)n * W * sizeof *x);
    for (size_t i = 0; i < 2; i++) {
        const size_t rows_len = n * mc_wire_row_bytes(encs[i], W);
        mc_wire_rows_encode(encs[i], x, n, W, rows);
        mc_wire_msg_t in = {.kind = MC_WIRE_MSG_REQUEST, .request_id = 5}, out;
        in.u.request = (mc_wire_request_t){93, encs[i], n, W, rows, rows_len, KK, ex, w, MC_WIRE_F32};
        s_decode_ok(&lim, &in, &out);
        const mc_wire_request_t *q = &out.u.request;
        assert_int_equal(q->n_rows, n);
        assert_int_equal(q->k, KK);
        assert_int_equal(q->rows_len, rows_len);
        assert_memory_equal(q->rows, rows, rows_len);
        assert_memory_equal(q->experts, ex, (size_t)n * KK * sizeof *ex);
        assert_memory_equal(q->weights, w, (size_t)n * KK * sizeof *w);
        mc_wire_msg_free(&out);
    }
    mc_wire_msg_t res = {.kind = MC_WIRE_MSG_RESULT, .request_id = 6}, out;
    res.u.result = (mc_wire_result_t){n, W, MC_WIRE_F32, (const uint8_t *)x, (size_t)n * W * sizeof *x, 1, {0}};
    s_decode_ok(&lim, &res, &out);
    assert_memory_equal(out.u.result.rows, x, (size_t)n * W * sizeof *x);
    mc_wire_msg_free(&out);
    free(x), free(ex), free(w), free(rows);
}

static void test_max_message_size_covers_largest_request(void **state) {
    (void)state;
    mc_wire_limits_t lim = {32, 8, 4096, 4096, 2, NULL, 0};
    size_t n = lim.max_rows, rows_len = n * lim.dim * 4;
    uint8_t *rows = calloc(rows_len, 1);
    int32_t *ex = malloc(n * 2 * sizeof *ex);
    float *w = malloc(n * 2 * sizeof *w);
    for (size_t i = 0; i < n * 2; i++) ex[i] = 7 - (int32_t)(i & 1), w[i] = -1.0e30f;
    mc_wire_msg_t m = {.kind = MC_WIRE_MSG_REQUEST, .request_id = UINT64_MAX};
    m.u.request = (mc_wire_request_t){31, MC_WIRE_F32, (uint32_t)n, lim.dim, rows, rows_len, 2, ex, w, MC_WIRE_F32};
    size_t len;
    uint8_t *buf = s_encode(&m, &len);
    assert_true((int64_t)len <= mc_wire_max_msg_bytes(&lim));
    assert_true((int64_t)len > mc_wire_max_msg_bytes(&lim) / 2);
    free(buf), free(rows), free(ex), free(w);
}

static void s_all_valid(uint8_t **bufs, size_t *lens, int *n) {
    s_req_t r;
    s_req_init(&r);
    uint8_t held[N_LAYER * N_EXPERT] = {[3] = 1, [17] = 1}, hashes[2 * MC_WIRE_HASH_BYTES];
    s_fake_hashes(hashes, 2);
    mc_wire_msg_t ms[9] = {
        {.kind = MC_WIRE_MSG_HELLO, .request_id = 300, .u.hello = {1, 99, "n", 2, 3}},
        {.kind = MC_WIRE_MSG_ERROR, .request_id = 301, .u.error = {MC_ERR_NET, "gone"}},
        {.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = 302, .u.heartbeat = 5},
        {.kind = MC_WIRE_MSG_ASSIGN, .request_id = 303, .u.assign = {8, N_LAYER, N_EXPERT, held, hashes}},
        {.kind = MC_WIRE_MSG_READY, .request_id = 304, .u.ready = {1, 2}},
        r.msg,
        {.kind = MC_WIRE_MSG_RESULT, .request_id = 306, .u.result = {1, DIM, MC_WIRE_BF16, (uint8_t *)r.x, DIM * 2, 9}},
        {.kind = MC_WIRE_MSG_STATS_REQUEST, .request_id = 307},
        {.kind = MC_WIRE_MSG_STATS, .request_id = 308, .u.stats = {1, 1, 1, 1, 1, 1}},
    };
    for (int i = 0; i < 9; i++) bufs[i] = s_encode(&ms[i], &lens[i]);
    *n = 9;
}

static void test_truncations_rejected(void **state) {
    (void)state;
    uint8_t *bufs[9];
    size_t lens[9];
    int n;
    s_all_valid(bufs, lens, &n);
    for (int i = 0; i < n; i++) {
        mc_wire_msg_t out;
        char err[MC_ERR_LEN];
        assert_int_equal(mc_wire_decode(&s_lim, bufs[i], lens[i], &out, NULL, err), MC_OK);
        mc_wire_msg_free(&out);
        for (size_t cut = 0; cut < lens[i]; cut++) {
            // A fresh copy of exactly `cut` bytes so ASan sees any read past it.
            uint8_t *p = malloc(cut + 1);
            memcpy(p, bufs[i], cut);
            err[0] = 0;
            mc_err_t rc = mc_wire_decode(&s_lim, p, cut, &out, NULL, err);
            free(p);
            if (rc == MC_OK) fail_msg("message %d cut to %zu of %zu bytes was accepted", i, cut, lens[i]);
            assert_true(err[0] != 0);
        }
        free(bufs[i]);
    }
}

// Random bytes and randomly damaged valid messages: the decoder returns
// (no crash, no leak under ASan) and whatever it accepts is in bounds.
static void test_fuzz(void **state) {
    (void)state;
    uint8_t *bufs[9];
    size_t lens[9];
    int n;
    s_all_valid(bufs, lens, &n);
    uint64_t seed = 0x5eed;
    uint8_t soup[512];
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len;
        if (it % 2 == 0) {
            len = s_rng(&seed) % sizeof soup;
            for (size_t i = 0; i < len; i++) soup[i] = (uint8_t)s_rng(&seed);
        } else {
            int m = (int)(s_rng(&seed) % (uint64_t)n);
            len = lens[m] < sizeof soup ? lens[m] : sizeof soup;
            memcpy(soup, bufs[m], len);
            for (int flips = 1 + (int)(s_rng(&seed) % 4); flips > 0; flips--) soup[s_rng(&seed) % len] = (uint8_t)s_rng(&seed);
            if (s_rng(&seed) % 4 == 0) len -= s_rng(&seed) % len;
        }
        uint8_t *p = malloc(len + 1);
        memcpy(p, soup, len);
        mc_wire_msg_t out;
        if (mc_wire_decode(&s_lim, p, len, &out, NULL, NULL) == MC_OK) {
            accepted++;
            if (out.kind == MC_WIRE_MSG_REQUEST) {
                const mc_wire_request_t *q = &out.u.request;
                assert_true(q->layer < N_LAYER && q->dim == DIM && q->n_rows >= 1 && q->k <= K);
                assert_int_equal(q->rows_len, q->n_rows * mc_wire_row_bytes(q->enc, DIM));
                for (size_t i = 0; i < (size_t)q->n_rows * q->k; i++) {
                    assert_true(q->experts[i] < N_EXPERT);
                    assert_true(isfinite(q->weights[i]));
                }
            }
            mc_wire_msg_free(&out);
        }
        free(p);
    }
    assert_true(accepted > 0); // damaged messages do get through sometimes: the checks above ran
    for (int i = 0; i < n; i++) free(bufs[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_small_messages),
        cmocka_unit_test(test_roundtrip_assign),
        cmocka_unit_test(test_assign_hashes),
        cmocka_unit_test(test_roundtrip_request_result),
        cmocka_unit_test(test_row_encodings),
        cmocka_unit_test(test_block_encodings),
        cmocka_unit_test(test_auto_and_result_encodings),
        cmocka_unit_test(test_rejects_bad_requests),
        cmocka_unit_test(test_rejects_bad_other_messages),
        cmocka_unit_test(test_transfer_messages),
        cmocka_unit_test(test_rejects_raw_envelopes),
        cmocka_unit_test(test_decode_memory_budget),
        cmocka_unit_test(test_roundtrip_assign_largest),
        cmocka_unit_test(test_roundtrip_request_largest),
        cmocka_unit_test(test_max_message_size_covers_largest_request),
        cmocka_unit_test(test_truncations_rejected),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
