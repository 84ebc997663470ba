/* wire: protobuf packing of mc_wire_msg_t, row encodings, and the one
 * validating decoder for everything that arrives from the network. */
#include "wire.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernel.h"
#include "moe.pb-c.h"
#include "quant.h"
#include "expert_file.h"
#include "slice_index.h"

static_assert(MC_WIRE_HASH_BYTES == MC_SLICE_HASH_BYTES, "placements carry slice hashes");
static_assert(MC_WIRE_INFO_MAX == MC_EXPERT_FILE_INFO_MAX, "model info is an experts-only file's metadata");

// Row payloads are the host's float and block bytes as they are.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire row format assumes a little-endian host"
#endif

mc_wire_limits_t mc_wire_limits(const mc_model_t *m) {
    return (mc_wire_limits_t){
        .n_layer = m->hp.n_layer,
        .n_expert = m->hp.n_expert,
        .dim = m->hp.dim,
        .ffn = m->hp.ffn,
        .max_rows = MC_WIRE_MAX_ROWS,
        .k_max = m->hp.n_expert_used,
        .held = NULL,
    };
}

int64_t mc_wire_max_msg_bytes(const mc_wire_limits_t *lim) {
    // The biggest message is a request of max_rows f32 rows (a row's route
    // costs at most 16 bytes of framing plus a 5-byte varint and a 4-byte
    // float per pair), or a placement of every pair with its 32-byte hash
    // (a layer's entry: framing, ids of up to 5 bytes, a hash each). 64 KiB
    // covers the envelope and every small message.
    uint64_t per_row = (uint64_t)lim->dim * 4 + 16 + (uint64_t)lim->k_max * 9;
    uint64_t request = (uint64_t)lim->max_rows * per_row;
    uint64_t assign = (uint64_t)lim->n_layer * (16 + (uint64_t)lim->n_expert * (5 + MC_WIRE_HASH_BYTES + 3 + 2));
    uint64_t total = request > assign ? request : assign;
    // A slice's chunk or a model's metadata (a node without a model file).
    if (total < MC_WIRE_CHUNK_MAX) total = MC_WIRE_CHUNK_MAX;
    total += 65536;
    return total > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)total;
}

static const char *const s_enc_names[MC_WIRE_N_ENC] = {"f32", "f16", "bf16", "q8_0", "q8_1", "q8_k"};
static const mc_dtype_t s_enc_dtypes[MC_WIRE_N_ENC] = {MC_DTYPE_F32,  MC_DTYPE_F16,  MC_DTYPE_BF16,
                                                      MC_DTYPE_Q8_0, MC_DTYPE_Q8_1, MC_DTYPE_Q8_K};

const char *mc_wire_enc_name(mc_wire_enc_t enc) {
    if (enc == MC_WIRE_AUTO) return "auto";
    return (unsigned)enc < MC_WIRE_N_ENC ? s_enc_names[enc] : "unknown";
}

bool mc_wire_enc_from_name(const char *name, mc_wire_enc_t *out) {
    if (!name) return false;
    if (!strcmp(name, "auto")) {
        *out = MC_WIRE_AUTO;
        return true;
    }
    for (unsigned i = 0; i < MC_WIRE_N_ENC; i++)
        if (!strcmp(name, s_enc_names[i])) {
            *out = (mc_wire_enc_t)i;
            return true;
        }
    return false;
}

mc_dtype_t mc_wire_enc_dtype(mc_wire_enc_t enc) {
    return (unsigned)enc < MC_WIRE_N_ENC ? s_enc_dtypes[enc] : MC_DTYPE_F32;
}

bool mc_wire_enc_of_dtype(mc_dtype_t t, mc_wire_enc_t *out) {
    for (unsigned i = 0; i < MC_WIRE_N_ENC; i++)
        if (s_enc_dtypes[i] == t) {
            *out = (mc_wire_enc_t)i;
            return true;
        }
    return false;
}

mc_wire_enc_t mc_wire_auto_enc(const mc_model_t *m, uint32_t layer, uint32_t e) {
    const mc_expert_t *ex = &m->layers[layer].experts[e];
    // The scalar table: every ISA's kernel takes the same activation type.
    const mc_kernel_t *kg = mc_kernel_get(ex->gate.type, MC_ISA_SCALAR);
    const mc_kernel_t *ku = mc_kernel_get(ex->up.type, MC_ISA_SCALAR);
    mc_wire_enc_t enc;
    if (!kg || !ku || kg->act_type != ku->act_type || !mc_wire_enc_of_dtype(kg->act_type, &enc)) return MC_WIRE_F32;
    return mc_wire_row_bytes(enc, m->hp.dim) ? enc : MC_WIRE_F32;
}

mc_wire_enc_t mc_wire_result_enc(mc_wire_enc_t wire) {
    return wire == MC_WIRE_F16 || wire == MC_WIRE_BF16 ? wire : MC_WIRE_F32;
}

size_t mc_wire_row_bytes(mc_wire_enc_t enc, uint32_t dim) {
    if ((unsigned)enc >= MC_WIRE_N_ENC) return 0;
    return mc_dtype_row_bytes(s_enc_dtypes[enc], dim);
}

void mc_wire_rows_encode(mc_wire_enc_t enc, const float *x, uint32_t n, uint32_t dim, void *dst) {
    const size_t rb = mc_wire_row_bytes(enc, dim);
    uint8_t *d = dst;
    if (enc == MC_WIRE_F32) {
        memcpy(d, x, (size_t)n * rb);
        return;
    }
    for (uint32_t t = 0; t < n; t++) {
        const mc_err_t rc = mc_quant_quantize_row(s_enc_dtypes[enc], x + (size_t)t * dim, d + t * rb, dim);
        assert(rc == MC_OK); // enc valid for dim: the caller's contract
        (void)rc;
    }
}

void mc_wire_rows_decode(mc_wire_enc_t enc, const void *src, uint32_t n, uint32_t dim, float *x) {
    const size_t rb = mc_wire_row_bytes(enc, dim);
    const uint8_t *s = src;
    if (enc == MC_WIRE_F32) {
        memcpy(x, s, (size_t)n * rb);
        return;
    }
    for (uint32_t t = 0; t < n; t++) {
        const mc_err_t rc = mc_quant_dequantize_row(s_enc_dtypes[enc], s + t * rb, x + (size_t)t * dim, dim);
        assert(rc == MC_OK);
        (void)rc;
    }
}

static bool s_half_finite(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return (h & 0x7C00u) != 0x7C00u;
}

mc_err_t mc_wire_rows_check(mc_wire_enc_t enc, const void *rows, uint32_t n, uint32_t dim, char *err) {
    const uint8_t *p = rows;
    switch (enc) {
    case MC_WIRE_Q8_0:
    case MC_WIRE_Q8_1: {
        // Q8_1's second field s = d * sum(q) was rounded from the f32 d,
        // which the row no longer has: only its finiteness can be checked.
        const size_t bb = enc == MC_WIRE_Q8_0 ? sizeof(mc_block_q8_0_t) : sizeof(mc_block_q8_1_t);
        const size_t nb = (size_t)n * (dim / MC_QK);
        for (size_t b = 0; b < nb; b++, p += bb)
            if (!s_half_finite(p) || (enc == MC_WIRE_Q8_1 && !s_half_finite(p + 2)))
                return mc_err_set(err, MC_ERR_FORMAT, "row %zu: a block scale is not finite", b / (dim / MC_QK));
        return MC_OK;
    }
    case MC_WIRE_Q8_K: {
        const size_t nb = (size_t)n * (dim / MC_QK_K);
        for (size_t b = 0; b < nb; b++, p += sizeof(mc_block_q8_k_t)) {
            mc_block_q8_k_t blk;
            memcpy(&blk, p, sizeof blk);
            if (!isfinite(blk.d))
                return mc_err_set(err, MC_ERR_FORMAT, "row %zu: a block scale is not finite", b / (dim / MC_QK_K));
            for (int g = 0; g < MC_QK_K / 16; g++) {
                int sum = 0;
                for (int l = 0; l < 16; l++) sum += blk.qs[16 * g + l];
                if (sum != blk.bsums[g])
                    return mc_err_set(err, MC_ERR_FORMAT, "row %zu: a q8_k block's sums do not match its quants",
                                      b / (dim / MC_QK_K));
            }
        }
        return MC_OK;
    }
    default: return MC_OK; // float rows: any bits are values
    }
}

const char *mc_wire_kind_name(mc_wire_kind_t kind) {
    switch (kind) {
    case MC_WIRE_MSG_HELLO: return "hello";
    case MC_WIRE_MSG_ERROR: return "error";
    case MC_WIRE_MSG_HEARTBEAT: return "heartbeat";
    case MC_WIRE_MSG_ASSIGN: return "assign";
    case MC_WIRE_MSG_READY: return "ready";
    case MC_WIRE_MSG_REQUEST: return "expert request";
    case MC_WIRE_MSG_RESULT: return "expert result";
    case MC_WIRE_MSG_STATS_REQUEST: return "stats request";
    case MC_WIRE_MSG_STATS: return "stats";
    case MC_WIRE_MSG_PROGRESS: return "progress";
    case MC_WIRE_MSG_RELEASE: return "release";
    case MC_WIRE_MSG_MODEL_INFO: return "model info";
    case MC_WIRE_MSG_FETCH_OPEN: return "fetch open";
    case MC_WIRE_MSG_SLICE_REQUEST: return "slice request";
    case MC_WIRE_MSG_SLICE_DATA: return "slice data";
    }
    return "unknown";
}

// --- encoding -----------------------------------------------------------------

// Layer entries of an assignment, built from its dense table, and its
// hashes (held pairs in row-major order: the order listed here). *layers,
// the expert lists and the hashes live in one allocation (*mem).
static mc_err_t s_pack_assign(const mc_wire_assign_t *a, Mc__Assign *pa, void **mem) {
    size_t nl = a->n_layer, ne = a->n_expert, pairs = 0;
    for (size_t i = 0; i < nl * ne; i++) pairs += a->held[i] != 0;
    const size_t hash_bytes = a->hashes ? pairs * MC_WIRE_HASH_BYTES : 0; // none: an invalid message, for tests
    const size_t type_bytes = a->types ? pairs * 3 : 0;
    uint8_t *m = calloc(1, nl * (sizeof(Mc__LayerExperts *) + sizeof(Mc__LayerExperts)) + nl * ne * 4 + hash_bytes +
                               type_bytes + 1);
    if (!m) return MC_ERR_NOMEM;
    Mc__LayerExperts **ptrs = (Mc__LayerExperts **)m;
    Mc__LayerExperts *le = (Mc__LayerExperts *)(m + nl * sizeof *ptrs);
    uint32_t *ids = (uint32_t *)(m + nl * (sizeof *ptrs + sizeof *le));
    uint8_t *hashes = (uint8_t *)(ids + nl * ne);
    size_t n = 0;
    for (size_t l = 0; l < nl; l++) {
        uint32_t *first = ids;
        for (size_t e = 0; e < ne; e++)
            if (a->held[l * ne + e]) *ids++ = (uint32_t)e;
        if (ids == first) continue;
        mc__layer_experts__init(&le[n]);
        le[n].layer = (uint32_t)l;
        le[n].experts = first;
        le[n].n_experts = (size_t)(ids - first);
        ptrs[n] = &le[n];
        n++;
    }
    if (hash_bytes) memcpy(hashes, a->hashes, hash_bytes);
    if (type_bytes) memcpy(hashes + hash_bytes, a->types, type_bytes);
    pa->layers = ptrs;
    pa->n_layers = n;
    pa->hashes.data = hashes;
    pa->hashes.len = hash_bytes;
    pa->types.data = hashes + hash_bytes;
    pa->types.len = type_bytes;
    *mem = m;
    return MC_OK;
}

// The rows' experts of a request: one RowExperts per row with its non-negative choices.
static mc_err_t s_pack_request(const mc_wire_request_t *r, Mc__ExpertRequest *pr, void **mem) {
    size_t n = r->n_rows, choices = (size_t)r->n_rows * r->k;
    uint8_t *m = malloc(n * (sizeof(Mc__RowExperts *) + sizeof(Mc__RowExperts)) + choices * 8 + 1);
    if (!m) return MC_ERR_NOMEM;
    Mc__RowExperts **ptrs = (Mc__RowExperts **)m;
    Mc__RowExperts *rr = (Mc__RowExperts *)(m + n * sizeof *ptrs);
    uint32_t *ids = (uint32_t *)(m + n * (sizeof *ptrs + sizeof *rr));
    float *ws = (float *)(ids + choices);
    for (size_t t = 0; t < n; t++) {
        mc__row_experts__init(&rr[t]);
        rr[t].experts = ids;
        rr[t].weights = ws;
        for (size_t j = 0; j < r->k; j++) {
            if (r->experts[t * r->k + j] < 0) continue;
            *ids++ = (uint32_t)r->experts[t * r->k + j];
            *ws++ = r->weights[t * r->k + j];
        }
        rr[t].n_experts = rr[t].n_weights = (size_t)(ids - rr[t].experts);
        ptrs[t] = &rr[t];
    }
    pr->row_experts = ptrs;
    pr->n_row_experts = n;
    *mem = m;
    return MC_OK;
}

mc_err_t mc_wire_encode(const mc_wire_msg_t *msg, uint8_t **out, size_t *len, char *err) {
    Mc__Envelope env = MC__ENVELOPE__INIT;
    Mc__Hello hello = MC__HELLO__INIT;
    Mc__ErrorReply error = MC__ERROR_REPLY__INIT;
    Mc__Heartbeat hb = MC__HEARTBEAT__INIT;
    Mc__Assign assign = MC__ASSIGN__INIT;
    Mc__Ready ready = MC__READY__INIT;
    Mc__ExpertRequest req = MC__EXPERT_REQUEST__INIT;
    Mc__ExpertResult res = MC__EXPERT_RESULT__INIT;
    Mc__StatsRequest sreq = MC__STATS_REQUEST__INIT;
    Mc__Stats stats = MC__STATS__INIT;
    Mc__Progress progress = MC__PROGRESS__INIT;
    Mc__Release release = MC__RELEASE__INIT;
    Mc__ModelInfo info = MC__MODEL_INFO__INIT;
    Mc__FetchOpen fopen_ = MC__FETCH_OPEN__INIT;
    Mc__SliceRequest sreq_ = MC__SLICE_REQUEST__INIT;
    Mc__SliceData sdata = MC__SLICE_DATA__INIT;
    Mc__StoreStats store = MC__STORE_STATS__INIT;
    void *mem = NULL;
    env.request_id = msg->request_id;
    switch (msg->kind) {
    case MC_WIRE_MSG_HELLO:
        hello.protocol_version = msg->u.hello.version;
        hello.model_fingerprint = msg->u.hello.fingerprint;
        hello.node_name = (char *)msg->u.hello.name;
        hello.threads = msg->u.hello.threads;
        hello.memory_bytes = msg->u.hello.memory_bytes;
        hello.session_id = msg->u.hello.session_id;
        hello.cache = msg->u.hello.cache;
        env.body_case = MC__ENVELOPE__BODY_HELLO, env.hello = &hello;
        break;
    case MC_WIRE_MSG_ERROR:
        error.code = (uint32_t)msg->u.error.code;
        error.message = (char *)msg->u.error.message;
        env.body_case = MC__ENVELOPE__BODY_ERROR, env.error = &error;
        break;
    case MC_WIRE_MSG_HEARTBEAT:
        hb.sequence = msg->u.heartbeat;
        env.body_case = MC__ENVELOPE__BODY_HEARTBEAT, env.heartbeat = &hb;
        break;
    case MC_WIRE_MSG_ASSIGN:
        if (s_pack_assign(&msg->u.assign, &assign, &mem) != MC_OK) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        assign.session_id = msg->u.assign.session_id;
        env.body_case = MC__ENVELOPE__BODY_ASSIGN, env.assign = &assign;
        break;
    case MC_WIRE_MSG_READY:
        ready.resident_bytes = msg->u.ready.resident_bytes;
        ready.n_pairs = msg->u.ready.n_pairs;
        env.body_case = MC__ENVELOPE__BODY_READY, env.ready = &ready;
        break;
    case MC_WIRE_MSG_REQUEST: {
        const mc_wire_request_t *r = &msg->u.request;
        if (s_pack_request(r, &req, &mem) != MC_OK) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        req.layer = r->layer;
        req.encoding = (uint32_t)r->enc;
        req.n_rows = r->n_rows;
        req.dim = r->dim;
        req.rows.data = (uint8_t *)r->rows;
        req.rows.len = r->rows_len;
        req.result_encoding = (uint32_t)r->res_enc;
        env.body_case = MC__ENVELOPE__BODY_EXPERT_REQUEST, env.expert_request = &req;
        break;
    }
    case MC_WIRE_MSG_RESULT:
        res.n_rows = msg->u.result.n_rows;
        res.dim = msg->u.result.dim;
        res.encoding = (uint32_t)msg->u.result.enc;
        res.rows.data = (uint8_t *)msg->u.result.rows;
        res.rows.len = msg->u.result.rows_len;
        res.compute_us = msg->u.result.compute_us;
        if (msg->u.result.store.has) {
            const mc_wire_store_stats_t *ss = &msg->u.result.store;
            store.budget_bytes = ss->budget_bytes, store.used_bytes = ss->used_bytes;
            store.hits = ss->hits, store.misses = ss->misses, store.bytes_read = ss->bytes_read;
            store.stall_us = ss->stall_us, store.prefetched = ss->prefetched;
            store.prefetch_used = ss->prefetch_used, store.errors = ss->errors;
            res.store = &store;
        }
        env.body_case = MC__ENVELOPE__BODY_EXPERT_RESULT, env.expert_result = &res;
        break;
    case MC_WIRE_MSG_STATS_REQUEST:
        env.body_case = MC__ENVELOPE__BODY_STATS_REQUEST, env.stats_request = &sreq;
        break;
    case MC_WIRE_MSG_STATS: {
        const mc_wire_stats_t *s = &msg->u.stats;
        stats.requests = s->requests, stats.rows = s->rows, stats.bytes_in = s->bytes_in;
        stats.bytes_out = s->bytes_out, stats.compute_us = s->compute_us, stats.errors = s->errors;
        env.body_case = MC__ENVELOPE__BODY_STATS, env.stats = &stats;
        break;
    }
    case MC_WIRE_MSG_PROGRESS:
        progress.done_bytes = msg->u.progress.done_bytes;
        progress.total_bytes = msg->u.progress.total_bytes;
        progress.fetch_done = msg->u.progress.fetch_done;
        progress.fetch_total = msg->u.progress.fetch_total;
        env.body_case = MC__ENVELOPE__BODY_PROGRESS, env.progress = &progress;
        break;
    case MC_WIRE_MSG_RELEASE:
        release.session_id = msg->u.release;
        env.body_case = MC__ENVELOPE__BODY_RELEASE, env.release = &release;
        break;
    case MC_WIRE_MSG_MODEL_INFO:
        info.model_fingerprint = msg->u.model_info.fingerprint;
        info.gguf.data = (uint8_t *)msg->u.model_info.gguf;
        info.gguf.len = msg->u.model_info.len;
        env.body_case = MC__ENVELOPE__BODY_MODEL_INFO, env.model_info = &info;
        break;
    case MC_WIRE_MSG_FETCH_OPEN:
        fopen_.session_id = msg->u.fetch_open;
        env.body_case = MC__ENVELOPE__BODY_FETCH_OPEN, env.fetch_open = &fopen_;
        break;
    case MC_WIRE_MSG_SLICE_REQUEST: {
        const mc_wire_slice_request_t *q = &msg->u.slice_request;
        sreq_.layer = q->layer, sreq_.expert = q->expert, sreq_.offset = q->offset, sreq_.length = q->length;
        sreq_.remaining = q->remaining;
        env.body_case = MC__ENVELOPE__BODY_SLICE_REQUEST, env.slice_request = &sreq_;
        break;
    }
    case MC_WIRE_MSG_SLICE_DATA: {
        const mc_wire_slice_data_t *d = &msg->u.slice_data;
        sdata.layer = d->layer, sdata.expert = d->expert, sdata.offset = d->offset;
        sdata.data.data = (uint8_t *)d->data;
        sdata.data.len = d->len;
        env.body_case = MC__ENVELOPE__BODY_SLICE_DATA, env.slice_data = &sdata;
        break;
    }
    default: return mc_err_set(err, MC_ERR_ARG, "unknown message kind %d", (int)msg->kind);
    }
    size_t n = mc__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) mc__envelope__pack(&env, buf);
    free(mem);
    if (!buf) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    *out = buf;
    *len = n;
    return MC_OK;
}

// --- decoding -----------------------------------------------------------------

// protobuf-c allocator with a byte budget: a tiny message claiming millions
// of empty sub-messages fails here instead of exhausting memory. Blocks come
// from malloc, so the default allocator can free them later.
typedef struct {
    size_t left;
} s_budget_t;

static void *s_budget_alloc(void *data, size_t size) {
    s_budget_t *b = data;
    if (size > b->left) return NULL;
    b->left -= size;
    return malloc(size);
}

static void s_budget_free(void *data, void *p) {
    (void)data;
    free(p);
}

// The budget: the message's own length, plus what the largest legitimate
// message under the decoder's limits unpacks into (not a multiple of the
// length: an assignment's entry for a layer of 8 experts is 14 bytes on the
// wire and about 90 unpacked, so 4x the length failed from 48 layers up).
// Unpacking a message, protobuf-c allocates
//  - its struct;
//  - while scanning, a ScannedMember record per field occurrence past the
//    first 16, in slabs of doubling size: under two records per occurrence
//    (freed at the end, but the budget counts allocations, not what is live);
//  - per repeated field an array: a pointer per sub-message, an element per
//    scalar, a ProtobufCBinaryData per bytes value;
//  - all of this again for every sub-message;
//  - a copy of every string (and its NUL), bytes value and unknown field:
//    disjoint spans of the input, each after a tag byte, so at most len in all;
//  - per message with unknown fields, an array of their records.
// The structure is counted per body kind below from the generated structs;
// the envelope allows a few unknown fields on top. A hostile message thus
// allocates at most what a legitimate one under the same limits could, plus
// its own length.
#define S_SCAN_BYTES (2 * 32) // two ScannedMember records: protobuf-c bounds one at 32 bytes
#define S_UNKNOWN_FIELDS 16   // fields of a newer protocol (the decoder ignores or refuses them)

// A message of n_fields field occurrences: its struct and their scan.
static uint64_t s_msg_bytes(size_t struct_bytes, uint64_t n_fields) { return struct_bytes + n_fields * S_SCAN_BYTES; }

static uint64_t s_hello_bytes(void) { return s_msg_bytes(sizeof(Mc__Hello), 7); }
static uint64_t s_error_bytes(void) { return s_msg_bytes(sizeof(Mc__ErrorReply), 2); }
static uint64_t s_heartbeat_bytes(void) { return s_msg_bytes(sizeof(Mc__Heartbeat), 1); }
static uint64_t s_ready_bytes(void) { return s_msg_bytes(sizeof(Mc__Ready), 2); }
static uint64_t s_result_bytes(void) { return s_msg_bytes(sizeof(Mc__ExpertResult), 5); }
static uint64_t s_stats_request_bytes(void) { return s_msg_bytes(sizeof(Mc__StatsRequest), 0); }
static uint64_t s_stats_bytes(void) { return s_msg_bytes(sizeof(Mc__Stats), 6); }
static uint64_t s_progress_bytes(void) { return s_msg_bytes(sizeof(Mc__Progress), 4); }
static uint64_t s_model_info_bytes(void) { return s_msg_bytes(sizeof(Mc__ModelInfo), 2); }
static uint64_t s_fetch_open_bytes(void) { return s_msg_bytes(sizeof(Mc__FetchOpen), 1); }
static uint64_t s_slice_request_bytes(void) { return s_msg_bytes(sizeof(Mc__SliceRequest), 5); }
static uint64_t s_slice_data_bytes(void) { return s_msg_bytes(sizeof(Mc__SliceData), 4); }
static uint64_t s_release_bytes(void) { return s_msg_bytes(sizeof(Mc__Release), 1); }

// Every layer listed, each with every expert (packed ids: one field). Plus
// room for a bytes value per (layer, expert) pair, in Assign or in its layer
// entries (a slice hash per held pair is planned): its array element and
// scan; the hash bytes themselves are in len.
static uint64_t s_assign_bytes(const mc_wire_limits_t *lim) {
    const uint64_t nl = lim->n_layer, pairs = nl * lim->n_expert;
    const uint64_t layer = sizeof(Mc__LayerExperts *) + s_msg_bytes(sizeof(Mc__LayerExperts), 2);
    return s_msg_bytes(sizeof(Mc__Assign), 2 + nl) + nl * layer + pairs * sizeof(uint32_t) +
           pairs * (sizeof(ProtobufCBinaryData) + S_SCAN_BYTES);
}

// max_rows rows of k_max (expert, weight) pairs each (packed: two fields).
static uint64_t s_request_bytes(const mc_wire_limits_t *lim) {
    const uint64_t row_experts = sizeof(Mc__RowExperts *) + s_msg_bytes(sizeof(Mc__RowExperts), 2) +
                                 (uint64_t)lim->k_max * (sizeof(uint32_t) + sizeof(float));
    return s_msg_bytes(sizeof(Mc__ExpertRequest), 6 + (uint64_t)lim->max_rows) + lim->max_rows * row_experts;
}

static size_t s_decode_budget(const mc_wire_limits_t *lim, size_t len) {
    // Every body kind: a new one adds its function here.
    const uint64_t bodies[] = {
        s_hello_bytes(),      s_error_bytes(),  s_heartbeat_bytes(),     s_assign_bytes(lim), s_ready_bytes(),
        s_request_bytes(lim), s_result_bytes(), s_stats_request_bytes(), s_stats_bytes(),   s_progress_bytes(),
        s_release_bytes(),    s_model_info_bytes(), s_fetch_open_bytes(), s_slice_request_bytes(), s_slice_data_bytes(),
    };
    uint64_t body = 0;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        if (bodies[i] > body) body = bodies[i];
    const uint64_t unknown = S_UNKNOWN_FIELDS * (sizeof(ProtobufCMessageUnknownField) + S_SCAN_BYTES);
    const uint64_t need = s_msg_bytes(sizeof(Mc__Envelope), 2) + body + unknown;
    return need > SIZE_MAX - len ? SIZE_MAX : (size_t)need + len;
}

// Peer text ends up in logs and terminals: printable ASCII only.
static mc_err_t s_text(const char *s, size_t max, const char *what, char *err) {
    size_t n = strlen(s);
    if (n > max) return mc_err_set(err, MC_ERR_RANGE, "%s is %zu characters, at most %zu allowed", what, n, max);
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e) return mc_err_set(err, MC_ERR_FORMAT, "%s has a non-printable character", what);
    return MC_OK;
}

static mc_err_t s_hello(const Mc__Hello *h, mc_wire_hello_t *o, char *err) {
    mc_err_t rc = s_text(h->node_name, MC_WIRE_NAME_MAX, "node name", err);
    if (rc) return rc;
    o->version = h->protocol_version;
    o->fingerprint = h->model_fingerprint;
    strcpy(o->name, h->node_name);
    o->threads = h->threads;
    o->memory_bytes = h->memory_bytes;
    o->session_id = h->session_id;
    o->cache = h->cache;
    return MC_OK;
}

static mc_err_t s_error(const Mc__ErrorReply *e, mc_wire_error_t *o, char *err) {
    if (e->code == MC_OK || e->code > MC_ERR_LAST)
        return mc_err_set(err, MC_ERR_RANGE, "error reply with unknown code %u", e->code);
    mc_err_t rc = s_text(e->message, MC_ERR_LEN - 1, "error message", err);
    if (rc) return rc;
    o->code = (mc_err_t)e->code;
    strcpy(o->message, e->message);
    return MC_OK;
}

static mc_err_t s_assign(const mc_wire_limits_t *lim, const Mc__Assign *a, mc_wire_assign_t *o, char *err) {
    size_t nl = lim->n_layer, ne = lim->n_expert, pairs = 0;
    if (a->n_layers > nl) return mc_err_set(err, MC_ERR_RANGE, "assignment lists %zu layers, the model has %zu", a->n_layers, nl);
    o->session_id = a->session_id;
    o->n_layer = lim->n_layer, o->n_expert = lim->n_expert;
    // The hashes and types share held's allocation (mc_wire_msg_free frees
    // held); their length is bounded by the message's.
    if (!(o->held = calloc(nl * ne + 1 + a->hashes.len + a->types.len, 1)))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    o->hashes = o->held + nl * ne + 1;
    o->types = NULL;
    for (size_t i = 0; i < a->n_layers; i++) {
        const Mc__LayerExperts *le = a->layers[i];
        if (le->layer >= nl) return mc_err_set(err, MC_ERR_RANGE, "assignment names layer %u, the model has %zu", le->layer, nl);
        uint8_t *row = o->held + (size_t)le->layer * ne;
        // A layer listed twice would need its two lists merged: refuse instead.
        for (size_t e = 0; e < ne; e++)
            if (row[e]) return mc_err_set(err, MC_ERR_FORMAT, "assignment lists layer %u twice", le->layer);
        if (le->n_experts == 0) return mc_err_set(err, MC_ERR_FORMAT, "assignment lists layer %u without experts", le->layer);
        for (size_t j = 0; j < le->n_experts; j++) {
            uint32_t e = le->experts[j];
            if (e >= ne) return mc_err_set(err, MC_ERR_RANGE, "assignment names expert %u of layer %u, the model has %zu experts", e, le->layer, ne);
            if (row[e]) return mc_err_set(err, MC_ERR_FORMAT, "assignment lists expert %u of layer %u twice", e, le->layer);
            row[e] = 1;
        }
        pairs += le->n_experts;
    }
    if (a->hashes.len != pairs * MC_WIRE_HASH_BYTES)
        return mc_err_set(err, MC_ERR_FORMAT, "assignment carries %zu bytes of slice hashes for %zu (layer, expert) pairs, expected %d per pair",
                          a->hashes.len, pairs, MC_WIRE_HASH_BYTES);
    // Listing order -> held's row-major order: a pair's place is the held
    // pairs of the layers before its own plus those before it in its row.
    size_t *before = malloc((nl + ne + 1) * sizeof *before);
    if (!before) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    size_t *in_row = before + nl + 1;
    before[0] = 0;
    for (size_t l = 0; l < nl; l++) {
        size_t c = 0;
        for (size_t e = 0; e < ne; e++) c += o->held[l * ne + e];
        before[l + 1] = before[l] + c;
    }
    if (a->types.len && a->types.len != pairs * 3) {
        free(before);
        return mc_err_set(err, MC_ERR_FORMAT, "assignment carries %zu bytes of tensor types for %zu pairs, expected 3 per pair",
                          a->types.len, pairs);
    }
    for (size_t i = 0; i < a->types.len; i++) {
        const mc_dtype_t t = (mc_dtype_t)a->types.data[i];
        const mc_dtype_traits_t *tr = mc_dtype_traits(t);
        // gate and up take dim values per row, down ffn.
        const uint32_t n_in = i % 3 == 2 ? lim->ffn : lim->dim;
        if (!tr || !tr->weight || (n_in && n_in % tr->block_elems)) {
            free(before);
            return mc_err_set(err, MC_ERR_FORMAT, "assignment names tensor type %u for rows of %u values", a->types.data[i],
                              n_in);
        }
    }
    if (a->types.len) o->types = o->hashes + a->hashes.len;
    const uint8_t *h = a->hashes.data, *ty = a->types.data;
    for (size_t i = 0; i < a->n_layers; i++) {
        const Mc__LayerExperts *le = a->layers[i];
        const uint8_t *row = o->held + (size_t)le->layer * ne;
        for (size_t e = 0, c = 0; e < ne; e++) in_row[e] = c, c += row[e];
        for (size_t j = 0; j < le->n_experts; j++, h += MC_WIRE_HASH_BYTES) {
            const size_t at = before[le->layer] + in_row[le->experts[j]];
            memcpy(o->hashes + at * MC_WIRE_HASH_BYTES, h, MC_WIRE_HASH_BYTES);
            if (o->types) memcpy(o->types + at * 3, ty, 3), ty += 3;
        }
    }
    free(before);
    return MC_OK;
}

// Shape checks shared by requests and results.
static mc_err_t s_rows(const mc_wire_limits_t *lim, uint32_t enc, uint32_t n_rows, uint32_t dim, size_t len,
                       char *err) {
    if (dim != lim->dim) return mc_err_set(err, MC_ERR_RANGE, "row width %u, the model's dim is %u", dim, lim->dim);
    if (n_rows == 0 || n_rows > lim->max_rows)
        return mc_err_set(err, MC_ERR_RANGE, "%u rows, expected 1..%u", n_rows, lim->max_rows);
    size_t rb = mc_wire_row_bytes((mc_wire_enc_t)enc, dim);
    if (rb == 0)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "%s rows cannot carry %u values", mc_wire_enc_name((mc_wire_enc_t)enc),
                          dim);
    if (len != rb * n_rows)
        return mc_err_set(err, MC_ERR_FORMAT, "rows payload of %zu bytes, expected %u rows of %zu bytes", len, n_rows, rb);
    return MC_OK;
}

static mc_err_t s_request(const mc_wire_limits_t *lim, const Mc__ExpertRequest *r, mc_wire_request_t *o, char *err) {
    if (r->encoding >= MC_WIRE_N_ENC) return mc_err_set(err, MC_ERR_UNSUPPORTED, "unknown row encoding %u", r->encoding);
    if (r->layer >= lim->n_layer) return mc_err_set(err, MC_ERR_RANGE, "layer %u out of range (%u layers)", r->layer, lim->n_layer);
    mc_err_t rc = s_rows(lim, r->encoding, r->n_rows, r->dim, r->rows.len, err);
    if (rc) return rc;
    if ((rc = mc_wire_rows_check((mc_wire_enc_t)r->encoding, r->rows.data, r->n_rows, r->dim, err))) return rc;
    if (r->result_encoding > MC_WIRE_BF16)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "result encoding %u: expected f32, f16 or bf16", r->result_encoding);
    if (r->n_row_experts != r->n_rows)
        return mc_err_set(err, MC_ERR_FORMAT, "%zu rows of experts for %u rows", r->n_row_experts, r->n_rows);
    uint32_t k = 0;
    for (size_t t = 0; t < r->n_row_experts; t++) {
        const Mc__RowExperts *rr = r->row_experts[t];
        if (rr->n_experts != rr->n_weights)
            return mc_err_set(err, MC_ERR_FORMAT, "row %zu: %zu experts but %zu weights", t, rr->n_experts, rr->n_weights);
        if (rr->n_experts == 0 || rr->n_experts > lim->k_max)
            return mc_err_set(err, MC_ERR_RANGE, "row %zu: %zu experts, expected 1..%u", t, rr->n_experts, lim->k_max);
        for (size_t j = 0; j < rr->n_experts; j++) {
            uint32_t e = rr->experts[j];
            if (e >= lim->n_expert)
                return mc_err_set(err, MC_ERR_RANGE, "row %zu: expert %u out of range (%u experts)", t, e, lim->n_expert);
            if (lim->held && !lim->held[(size_t)r->layer * lim->n_expert + e])
                return mc_err_set(err, MC_ERR_RANGE, "row %zu: expert %u of layer %u is not assigned to this node", t, e, r->layer);
            for (size_t i = 0; i < j; i++)
                if (rr->experts[i] == e) return mc_err_set(err, MC_ERR_FORMAT, "row %zu: expert %u listed twice", t, e);
            if (!isfinite(rr->weights[j])) return mc_err_set(err, MC_ERR_RANGE, "row %zu: weight %zu is not finite", t, j);
        }
        if (rr->n_experts > k) k = (uint32_t)rr->n_experts;
    }
    size_t choices = (size_t)r->n_rows * k;
    o->experts = malloc(choices * sizeof *o->experts);
    o->weights = malloc(choices * sizeof *o->weights);
    if (!o->experts || !o->weights) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t t = 0; t < r->n_rows; t++)
        for (size_t j = 0; j < k; j++) {
            const Mc__RowExperts *rr = r->row_experts[t];
            bool used = j < rr->n_experts;
            o->experts[t * k + j] = used ? (int32_t)rr->experts[j] : -1;
            o->weights[t * k + j] = used ? rr->weights[j] : 0.0f;
        }
    o->layer = r->layer;
    o->enc = (mc_wire_enc_t)r->encoding;
    o->n_rows = r->n_rows;
    o->dim = r->dim;
    o->rows = r->rows.data;
    o->rows_len = r->rows.len;
    o->k = k;
    o->res_enc = (mc_wire_enc_t)r->result_encoding;
    return MC_OK;
}

static mc_err_t s_result(const mc_wire_limits_t *lim, const Mc__ExpertResult *r, mc_wire_result_t *o, char *err) {
    if (r->encoding > MC_WIRE_BF16) return mc_err_set(err, MC_ERR_UNSUPPORTED, "result rows in unknown encoding %u", r->encoding);
    mc_err_t rc = s_rows(lim, r->encoding, r->n_rows, r->dim, r->rows.len, err);
    if (rc) return rc;
    o->n_rows = r->n_rows;
    o->dim = r->dim;
    o->enc = (mc_wire_enc_t)r->encoding;
    o->rows = r->rows.data;
    o->rows_len = r->rows.len;
    o->compute_us = r->compute_us;
    o->store = (mc_wire_store_stats_t){0};
    if (r->store) {
        const Mc__StoreStats *ss = r->store;
        o->store = (mc_wire_store_stats_t){true,      ss->budget_bytes, ss->used_bytes,    ss->hits,  ss->misses,
                                           ss->bytes_read, ss->stall_us, ss->prefetched, ss->prefetch_used, ss->errors};
    }
    return MC_OK;
}

// A chunk of a slice: the pair in the model, 1..MC_WIRE_CHUNK_MAX bytes
// within MC_WIRE_SLICE_MAX (the pair's real size is checked by who serves
// or stores it).
static mc_err_t s_slice_at(const mc_wire_limits_t *lim, uint32_t layer, uint32_t e, uint64_t offset, uint64_t len,
                           char *err) {
    if (layer >= lim->n_layer || e >= lim->n_expert)
        return mc_err_set(err, MC_ERR_RANGE, "slice of expert %u of layer %u: the model has %u layers of %u experts", e,
                          layer, lim->n_layer, lim->n_expert);
    if (len == 0 || len > MC_WIRE_CHUNK_MAX)
        return mc_err_set(err, MC_ERR_RANGE, "slice chunk of %llu bytes, expected 1..%u", (unsigned long long)len,
                          MC_WIRE_CHUNK_MAX);
    if (offset > MC_WIRE_SLICE_MAX - len)
        return mc_err_set(err, MC_ERR_RANGE, "slice chunk at offset %llu: beyond any slice", (unsigned long long)offset);
    return MC_OK;
}

static mc_err_t s_body(const mc_wire_limits_t *lim, const Mc__Envelope *env, mc_wire_msg_t *m, char *err) {
    switch (env->body_case) {
    case MC__ENVELOPE__BODY_HELLO: m->kind = MC_WIRE_MSG_HELLO; return s_hello(env->hello, &m->u.hello, err);
    case MC__ENVELOPE__BODY_ERROR: m->kind = MC_WIRE_MSG_ERROR; return s_error(env->error, &m->u.error, err);
    case MC__ENVELOPE__BODY_HEARTBEAT:
        m->kind = MC_WIRE_MSG_HEARTBEAT;
        m->u.heartbeat = env->heartbeat->sequence;
        return MC_OK;
    case MC__ENVELOPE__BODY_ASSIGN: m->kind = MC_WIRE_MSG_ASSIGN; return s_assign(lim, env->assign, &m->u.assign, err);
    case MC__ENVELOPE__BODY_READY:
        m->kind = MC_WIRE_MSG_READY;
        if (env->ready->n_pairs > (uint64_t)lim->n_layer * lim->n_expert)
            return mc_err_set(err, MC_ERR_RANGE, "ready with %u pairs, the model has %u", env->ready->n_pairs,
                              lim->n_layer * lim->n_expert);
        m->u.ready.resident_bytes = env->ready->resident_bytes;
        m->u.ready.n_pairs = env->ready->n_pairs;
        return MC_OK;
    case MC__ENVELOPE__BODY_EXPERT_REQUEST:
        m->kind = MC_WIRE_MSG_REQUEST;
        return s_request(lim, env->expert_request, &m->u.request, err);
    case MC__ENVELOPE__BODY_EXPERT_RESULT:
        m->kind = MC_WIRE_MSG_RESULT;
        return s_result(lim, env->expert_result, &m->u.result, err);
    case MC__ENVELOPE__BODY_STATS_REQUEST: m->kind = MC_WIRE_MSG_STATS_REQUEST; return MC_OK;
    case MC__ENVELOPE__BODY_STATS: {
        const Mc__Stats *s = env->stats;
        m->kind = MC_WIRE_MSG_STATS;
        m->u.stats = (mc_wire_stats_t){s->requests, s->rows, s->bytes_in, s->bytes_out, s->compute_us, s->errors};
        return MC_OK;
    }
    case MC__ENVELOPE__BODY_PROGRESS:
        m->kind = MC_WIRE_MSG_PROGRESS;
        if (env->progress->done_bytes > env->progress->total_bytes)
            return mc_err_set(err, MC_ERR_RANGE, "progress of %llu bytes out of %llu",
                              (unsigned long long)env->progress->done_bytes,
                              (unsigned long long)env->progress->total_bytes);
        if (env->progress->fetch_done > env->progress->fetch_total)
            return mc_err_set(err, MC_ERR_RANGE, "progress of %llu bytes fetched out of %llu",
                              (unsigned long long)env->progress->fetch_done,
                              (unsigned long long)env->progress->fetch_total);
        m->u.progress = (mc_wire_progress_t){env->progress->done_bytes, env->progress->total_bytes,
                                             env->progress->fetch_done, env->progress->fetch_total};
        return MC_OK;
    case MC__ENVELOPE__BODY_MODEL_INFO:
        m->kind = MC_WIRE_MSG_MODEL_INFO;
        if (env->model_info->gguf.len == 0 || env->model_info->gguf.len > MC_WIRE_INFO_MAX)
            return mc_err_set(err, MC_ERR_RANGE, "model info of %zu bytes, expected 1..%u", env->model_info->gguf.len,
                              MC_WIRE_INFO_MAX);
        m->u.model_info = (mc_wire_model_info_t){env->model_info->model_fingerprint, env->model_info->gguf.data,
                                                 env->model_info->gguf.len};
        return MC_OK;
    case MC__ENVELOPE__BODY_FETCH_OPEN:
        m->kind = MC_WIRE_MSG_FETCH_OPEN;
        m->u.fetch_open = env->fetch_open->session_id;
        return MC_OK;
    case MC__ENVELOPE__BODY_SLICE_REQUEST: {
        const Mc__SliceRequest *q = env->slice_request;
        m->kind = MC_WIRE_MSG_SLICE_REQUEST;
        mc_err_t rc = s_slice_at(lim, q->layer, q->expert, q->offset, q->length, err);
        if (rc) return rc;
        m->u.slice_request = (mc_wire_slice_request_t){q->layer, q->expert, q->offset, q->length, q->remaining};
        return MC_OK;
    }
    case MC__ENVELOPE__BODY_SLICE_DATA: {
        const Mc__SliceData *d = env->slice_data;
        m->kind = MC_WIRE_MSG_SLICE_DATA;
        mc_err_t rc = s_slice_at(lim, d->layer, d->expert, d->offset, d->data.len, err);
        if (rc) return rc;
        m->u.slice_data = (mc_wire_slice_data_t){d->layer, d->expert, d->offset, d->data.data, d->data.len};
        return MC_OK;
    }
    case MC__ENVELOPE__BODY_RELEASE:
        m->kind = MC_WIRE_MSG_RELEASE;
        m->u.release = env->release->session_id;
        return MC_OK;
    default: break;
    }
    return mc_err_set(err, MC_ERR_UNSUPPORTED, "message without a body this protocol version (%d) knows",
                      MC_WIRE_VERSION);
}

mc_err_t mc_wire_decode(const mc_wire_limits_t *lim, const void *buf, size_t len, mc_wire_msg_t *out,
                        uint64_t *bad_id, char *err) {
    s_budget_t budget = {s_decode_budget(lim, len)};
    ProtobufCAllocator alloc = {s_budget_alloc, s_budget_free, &budget};
    Mc__Envelope *env = mc__envelope__unpack(&alloc, len, buf);
    if (!env) return mc_err_set(err, MC_ERR_NET, "%zu bytes that are not a message envelope", len);
    mc_wire_msg_t m = {.request_id = env->request_id, .owned_ = env};
    mc_err_t rc = s_body(lim, env, &m, err);
    if (rc) {
        if (bad_id) *bad_id = env->request_id;
        mc_wire_msg_free(&m);
        return rc;
    }
    *out = m;
    return MC_OK;
}

void mc_wire_msg_free(mc_wire_msg_t *msg) {
    if (!msg || !msg->owned_) return;
    if (msg->kind == MC_WIRE_MSG_REQUEST) free(msg->u.request.experts), free(msg->u.request.weights);
    if (msg->kind == MC_WIRE_MSG_ASSIGN) free(msg->u.assign.held);
    mc__envelope__free_unpacked(msg->owned_, NULL);
    memset(msg, 0, sizeof *msg);
}
