/* Wire codec between the coordinator and expert nodes.
 *
 * Every ZeroMQ message carries one protobuf Envelope (proto/moe.proto; the
 * message flow is described there). Callers never touch protobuf: they fill
 * and read the plain mc_wire_msg_t below. mc_wire_decode() is the single
 * place where untrusted bytes from the network are unpacked, and it checks
 * every field against the model's limits before anything else sees it:
 * layer and expert ids in range (and held, for a node), weights finite, row
 * payload length exactly n_rows * row bytes, a placement's slice hashes
 * exactly 32 bytes per pair, counts bounded. Unpacking itself runs under a
 * memory budget: the message's length plus what the largest valid message
 * under the same limits unpacks into, so a small message cannot make the
 * decoder allocate much more than a valid one could.
 *
 * Rows travel as little-endian f32, f16 or bf16 values (round to nearest
 * even: mc_fp32_to_fp16 / mc_fp32_to_bf16), or as the activation blocks
 * the kernels make from an f32 row before multiplying it with quantized
 * weights (Q8_0, Q8_1, Q8_K; kernel.h). A node feeds blocks of the type its
 * expert's kernel takes straight into the product, so sending exactly those
 * (mc_wire_auto_enc) is lossless at about a quarter of the f32 bytes. Any
 * other pairing is lossy: the node decodes the rows to f32 and converts
 * them again, and the coordinator's fallback for a lost node does the same
 * from the same bytes (mc_moe_compute on the wire rows), so a result never
 * depends on who computed it. */
#ifndef MC_WIRE_H
#define MC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"

/* How activation rows travel on the wire. */
typedef enum {
    MC_WIRE_F32 = 0,  /* exact */
    MC_WIRE_F16 = 1,  /* IEEE half, round-to-nearest-even: exact for F16 weights */
    MC_WIRE_BF16 = 2, /* bfloat16, round-to-nearest-even: exact for BF16 weights */
    MC_WIRE_Q8_0 = 3, /* Q8_0 blocks: exact for Q4_0, Q5_0, Q8_0 weights */
    MC_WIRE_Q8_1 = 4, /* Q8_1 blocks (d, d * sum): exact for Q4_1, Q5_1 weights */
    MC_WIRE_Q8_K = 5, /* Q8_K blocks (f32 d, per-16 sums): exact for Q2_K..Q6_K weights */
    /* Not an encoding on the wire: a cluster setting meaning "per request,
     * the blocks the experts' kernels make" (mc_wire_auto_enc). */
    MC_WIRE_AUTO = 15,
} mc_wire_enc_t;

#define MC_WIRE_N_ENC 6 /* encodings that travel: 0 .. MC_WIRE_Q8_K */

/* 2: Q8_1 and Q8_K rows, blocks used as they arrive.
 * 3: Progress while a node loads its placement, Release at a coordinator's
 *    exit, transport heartbeats (ZMTP PING) from both ends. */
/* 4: nodes without a model file: Hello's cache flag, ModelInfo, the types
 *    in Assign, Progress of fetching, and the transfer socket's FetchOpen,
 *    SliceRequest and SliceData. */
/* 5: a slice of a family whose experts carry biases (GPT-OSS) holds them
 *    after its rows (expert_file.h), in its hash, its bytes and what the
 *    transfer sends: a version 4 peer cuts other slices. */
#define MC_WIRE_VERSION 5
#define MC_WIRE_MAX_ROWS 4096 /* rows per expert request (a prompt chunk) */
#define MC_WIRE_NAME_MAX 64   /* characters of a node name */
#define MC_WIRE_CHUNK_MAX (4u << 20)   /* bytes of one SliceData */
#define MC_WIRE_INFO_MAX (1u << 20)    /* bytes of ModelInfo's GGUF (MC_EXPERT_FILE_INFO_MAX) */
#define MC_WIRE_SLICE_MAX (1ull << 40) /* offset + length within a slice */

typedef enum {
    MC_WIRE_MSG_HELLO = 1,
    MC_WIRE_MSG_ERROR,
    MC_WIRE_MSG_HEARTBEAT,
    MC_WIRE_MSG_ASSIGN,
    MC_WIRE_MSG_READY,
    MC_WIRE_MSG_REQUEST,
    MC_WIRE_MSG_RESULT,
    MC_WIRE_MSG_STATS_REQUEST,
    MC_WIRE_MSG_STATS,
    MC_WIRE_MSG_PROGRESS,
    MC_WIRE_MSG_RELEASE,
    MC_WIRE_MSG_MODEL_INFO,
    MC_WIRE_MSG_FETCH_OPEN,
    MC_WIRE_MSG_SLICE_REQUEST,
    MC_WIRE_MSG_SLICE_DATA,
} mc_wire_kind_t;

typedef struct {
    uint32_t version;
    uint64_t fingerprint; /* mc_model_fingerprint */
    char name[MC_WIRE_NAME_MAX + 1];
    uint32_t threads;
    uint64_t memory_bytes;
    uint64_t session_id; /* a coordinator's session (0 from a node) */
    bool cache;          /* from a node without a model file (fingerprint: what it holds, 0: nothing) */
} mc_wire_hello_t;

typedef struct {
    mc_err_t code;
    char message[MC_ERR_LEN];
} mc_wire_error_t;

#define MC_WIRE_HASH_BYTES 32 /* a slice hash (MC_SLICE_HASH_BYTES, slice_index.h) */

typedef struct {
    uint64_t session_id;
    uint32_t n_layer, n_expert;
    uint8_t *held;   /* (n_layer, n_expert) 1 where the node must hold the expert */
    uint8_t *hashes; /* (pairs held, MC_WIRE_HASH_BYTES) the coordinator's slice hash
                        of each held pair, layer by layer, experts ascending (the
                        order the encoder lists them; the decoder puts any listing
                        order back into this one); decoded: in held's allocation */
    uint8_t *types;  /* (pairs held, 3) the types of each held pair's gate, up and down,
                        in the order of hashes; NULL: not sent. Decoded: weight types
                        whose blocks divide the rows */
} mc_wire_assign_t;

typedef struct {
    uint64_t resident_bytes;
    uint32_t n_pairs;
} mc_wire_ready_t;

typedef struct {
    uint32_t layer;
    mc_wire_enc_t enc;
    uint32_t n_rows;
    uint32_t dim;
    const uint8_t *rows; /* (n_rows, mc_wire_row_bytes(enc, dim)) */
    size_t rows_len;
    uint32_t k;          /* choices per row */
    int32_t *experts;    /* (n_rows, k); negative: unused choice (not sent) */
    float *weights;      /* (n_rows, k) */
    mc_wire_enc_t res_enc; /* how the result rows travel back: F32, F16 or BF16 */
} mc_wire_request_t;

// A node's expert store counters (moe-expert --mem-limit); has: sent at all.
typedef struct {
    bool has;
    uint64_t budget_bytes, used_bytes, hits, misses, bytes_read, stall_us, prefetched, prefetch_used, errors;
} mc_wire_store_stats_t;

typedef struct {
    uint32_t n_rows;
    uint32_t dim;
    mc_wire_enc_t enc;   /* F32, F16 or BF16 */
    const uint8_t *rows; /* (n_rows, mc_wire_row_bytes(enc, dim)) */
    size_t rows_len;
    uint64_t compute_us;
    mc_wire_store_stats_t store;
} mc_wire_result_t;

typedef struct {
    uint64_t requests, rows, bytes_in, bytes_out, compute_us, errors;
} mc_wire_stats_t;

typedef struct {
    uint64_t done_bytes, total_bytes; /* done <= total */
    uint64_t fetch_done, fetch_total; /* of those, fetched from the coordinator; done <= total */
} mc_wire_progress_t;

typedef struct {
    uint64_t fingerprint;
    const uint8_t *gguf; /* 1..MC_WIRE_INFO_MAX bytes (an experts-only GGUF, expert_file.h) */
    size_t len;
} mc_wire_model_info_t;

typedef struct {
    uint32_t layer, expert; /* in range */
    uint64_t offset;        /* offset + length <= MC_WIRE_SLICE_MAX */
    uint32_t length;        /* 1..MC_WIRE_CHUNK_MAX */
    uint64_t remaining;
} mc_wire_slice_request_t;

typedef struct {
    uint32_t layer, expert; /* in range */
    uint64_t offset;        /* offset + len <= MC_WIRE_SLICE_MAX */
    const uint8_t *data;    /* 1..MC_WIRE_CHUNK_MAX bytes */
    size_t len;
} mc_wire_slice_data_t;

/* One message. Encoding reads the body selected by kind (pointers are
 * borrowed); decoding fills it with pointers owned by the message. */
typedef struct {
    mc_wire_kind_t kind;
    uint64_t request_id;
    union {
        mc_wire_hello_t hello;
        mc_wire_error_t error;
        uint64_t heartbeat; /* sequence */
        mc_wire_assign_t assign;
        mc_wire_ready_t ready;
        mc_wire_request_t request;
        mc_wire_result_t result;
        mc_wire_stats_t stats;
        mc_wire_progress_t progress;
        uint64_t release; /* session_id */
        mc_wire_model_info_t model_info;
        uint64_t fetch_open; /* session_id */
        mc_wire_slice_request_t slice_request;
        mc_wire_slice_data_t slice_data;
    } u;
    void *owned_; /* decoder's allocations (mc_wire_msg_free) */
} mc_wire_msg_t;

/* Check rows of block encodings (values any int8): scales finite, and Q8_K's
 * per-16 sums those of its quants, which the K-quant kernels rely on.
 * MC_ERR_FORMAT naming the first bad row otherwise. mc_wire_decode runs it
 * on every request. */
mc_err_t mc_wire_rows_check(mc_wire_enc_t enc, const void *rows, uint32_t n, uint32_t dim, char *err);

/* What a decoder accepts. */
typedef struct {
    uint32_t n_layer, n_expert, dim;
    uint32_t max_rows;    /* rows per request or result */
    uint32_t k_max;       /* (expert, weight) pairs per row */
    const uint8_t *held;  /* (n_layer, n_expert) experts a request may name; NULL: any */
    uint32_t ffn;         /* expert hidden size (0: types in a placement not checked against it) */
} mc_wire_limits_t;

/* Limits of model m: MC_WIRE_MAX_ROWS rows, n_expert_used pairs, any expert. */
mc_wire_limits_t mc_wire_limits(const mc_model_t *m);

/* Largest valid message under lim, for ZMQ_MAXMSGSIZE. */
int64_t mc_wire_max_msg_bytes(const mc_wire_limits_t *lim);

/* Short name of an encoding ("auto", "f32", "q8_k"); "unknown" for values
 * outside the enum. */
const char *mc_wire_enc_name(mc_wire_enc_t enc);

/* Encoding named `name` (as mc_wire_enc_name writes it) into *out; false
 * (out untouched) for anything else. */
bool mc_wire_enc_from_name(const char *name, mc_wire_enc_t *out);

/* Bytes of one row of dim values; 0 for MC_WIRE_AUTO, an unknown encoding,
 * or a block encoding whose block size does not divide dim. */
size_t mc_wire_row_bytes(mc_wire_enc_t enc, uint32_t dim);

/* The tensor type of a travelling encoding's values (F32, F16, BF16, Q8_0,
 * Q8_1, Q8_K), the same numbering as kernel activation types. */
mc_dtype_t mc_wire_enc_dtype(mc_wire_enc_t enc);

/* The encoding that carries activation type t unchanged; false when none
 * does. */
bool mc_wire_enc_of_dtype(mc_dtype_t t, mc_wire_enc_t *out);

/* What `wire: auto` sends for expert e of layer l: the activation type its
 * gate and up kernels take, when they take the same one (always so far),
 * else F32 (the node then converts, still exactly). Every ISA's kernel for a
 * weight type takes the same activation type, so this is the same on every
 * machine. */
mc_wire_enc_t mc_wire_auto_enc(const mc_model_t *m, uint32_t layer, uint32_t e);

/* How results travel back under the cluster setting `wire`: an explicit
 * f16 or bf16 wire chose a compact wire both ways, everything else (auto
 * included: its f16 rows for F16 weights are exact) gets f32. */
mc_wire_enc_t mc_wire_result_enc(mc_wire_enc_t wire);

/* x (n, dim) f32 -> dst (n, mc_wire_row_bytes(enc, dim)). enc must be valid
 * for dim. Block encodings are exactly the kernels' activation blocks. */
void mc_wire_rows_encode(mc_wire_enc_t enc, const float *x, uint32_t n, uint32_t dim, void *dst);

/* src (n, mc_wire_row_bytes(enc, dim)) -> x (n, dim) f32. */
void mc_wire_rows_decode(mc_wire_enc_t enc, const void *src, uint32_t n, uint32_t dim, float *x);

/* Pack msg into a malloc'd buffer (*out, *len; free() it). Values are not
 * checked here (the receiver's decoder does that), so tests can build
 * invalid messages. MC_ERR_NOMEM or MC_ERR_ARG (unknown kind). */
mc_err_t mc_wire_encode(const mc_wire_msg_t *msg, uint8_t **out, size_t *len, char *err);

/* Unpack and validate buf into *out (release with mc_wire_msg_free).
 * MC_ERR_NET: the bytes are not an Envelope (nothing to answer).
 * Any other error: the Envelope unpacked but its content is invalid;
 * *bad_id (may be NULL) then receives its request_id so the Error reply can
 * name it. *out is untouched on failure. */
mc_err_t mc_wire_decode(const mc_wire_limits_t *lim, const void *buf, size_t len, mc_wire_msg_t *out,
                        uint64_t *bad_id, char *err);

/* Free what mc_wire_decode allocated; safe twice and on an encoder-filled msg
 * (owned_ NULL). */
void mc_wire_msg_free(mc_wire_msg_t *msg);

/* Name of a message kind, for logs ("hello", "expert request"). */
const char *mc_wire_kind_name(mc_wire_kind_t kind);

#endif
