/*
 * expert_store: expert weights within a memory budget, the rest read from
 * the model file on demand.
 *
 * A process given less memory than its experts keeps a pool of resident
 * experts of at most budget_bytes, in the layout its kernels multiply (Q4_0
 * matrices repacked into 8-row groups as mc_model_repack does, anything
 * else as the file's rows), and reads the others from the model file with
 * pread when a layer's step needs them: the same bytes through the same
 * kernels, so the results are the same bits whatever the budget. Expert
 * rows are never touched through the file mapping once a store is attached
 * (mc_model_t.store), so they never count in the process's resident memory
 * beside the pool.
 *
 * mc_moe_compute_rows (moe.h) gets every managed expert's matrices through
 * mc_expert_store_acquire, which pins it until mc_expert_store_release; an
 * expert that is not resident is read (and repacked) on arrival, evicting
 * unpinned experts as the policy says. When the budget cannot hold all of a
 * layer's experts at once the step computes them in turns (the minimum
 * budget is the largest managed expert).
 *
 * One background thread reads ahead: the misses of the layer being
 * computed (so two reads run at once) and, before that, what the next layer
 * will most likely use (mc_expert_store_prefetch). Predictions come from
 * the transitions between consecutive layers' experts this store has seen
 * (every process can learn them from its own steps) or from outside (the
 * coordinator applies layer l+1's router to the current hidden state:
 * coordinator/gen/prefetch.h); both are scored against what the next layer
 * then used, whichever drives the reads. A read that fails or comes back
 * short (the file truncated under a running process) is MC_ERR_IO for the
 * step that needed it, naming the file, the offset and the expert, never
 * wrong numbers; a failed read ahead is only counted. An MXFP4 matrix read
 * with a NaN scale (E8M0 0xFF) is MC_ERR_FORMAT the same way, naming the
 * tensor and block (mc_model_matrix_check): nothing else reads experts the
 * store manages, so this is where their scales are checked.
 *
 * Every call is thread-safe; acquire and release come from the thread
 * computing a layer (one at a time per store).
 */
#ifndef MC_EXPERT_STORE_H
#define MC_EXPERT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_expert_store mc_expert_store_t;

// Which resident expert leaves when room is needed (pinned ones never).
typedef enum {
    MC_STORE_LRU = 0, // the least recently used
    MC_STORE_LFU,     // the least often used (uses halved every few thousand steps), then the oldest
    MC_STORE_HOT,     // the most-routed experts filling hot_percent of the budget stay once read; LRU for the rest
} mc_store_policy_t;

// Who predicts the next layer's experts (what the reader fetches ahead).
typedef enum {
    MC_STORE_PRED_TRANSITIONS = 0, // learned here: layer l's experts -> layer l+1's
    MC_STORE_PRED_ROUTER,          // told from outside (mc_expert_store_predict)
    MC_STORE_N_PRED,
} mc_store_pred_t;

typedef struct {
    uint64_t budget_bytes;     // resident expert bytes at most (>= mc_expert_store_min_bytes)
    const uint8_t *managed;    // (n_layer, n_expert) the experts read through the store; NULL: all
    const uint8_t *ahead;      // (n_layer, n_expert) the managed experts worth reading ahead; NULL: all
                               // (a coordinator with nodes: its local ones, not a lost node's share)
    mc_store_policy_t policy;
    uint32_t hot_percent;      // MC_STORE_HOT: the hot set's share of the budget (1..90)
    const uint64_t *hot_counts; // MC_STORE_HOT: (n_layer, n_expert) rows routed per expert (a routing
                                // statistics file); NULL: the store's own counts, refreshed as it runs
    bool repack;               // Q4_0, Q8_0, Q4_K, Q5_K, Q6_K repacked on arrival (when mm's kernel has a repacked product)
    bool uncached;             // drop what was read from the page cache (POSIX_FADV_DONTNEED): the pool
                               // is the only copy, and every miss reads the disk (benchmarks' cold runs)
    bool prefetch;             // read ahead what prefetch_from predicts for the next layer
    mc_store_pred_t prefetch_from;
} mc_expert_store_params_t;

// budget 0 (must be set), every expert, LFU (fewer reads than LRU or a hot set
// on skewed routing: docs/PERFORMANCE.md), hot 50%, repacked, no read-ahead
// (on a busy 2-core machine repacking what was read ahead cost more than it
// hid: docs/PERFORMANCE.md; predictions are scored either way), predictor
// transitions when it is turned on.
mc_expert_store_params_t mc_expert_store_params_default(void);

// m must have been opened from a file (mc_model_open: m->path) and outlive
// the store; mm decides the layout (its kernels' repacked groups or
// the file's rows) and is not kept. NULL on failure with err (a budget below
// one expert, a file that cannot be opened or is not the one mapped).
mc_expert_store_t *mc_expert_store_new(const mc_model_t *m, const mc_matmul_t *mm,
                                       const mc_expert_store_params_t *p, char *err);
void mc_expert_store_destroy(mc_expert_store_t **st);

// Bytes one expert takes in the pool (its matrices, each 64-byte aligned).
uint64_t mc_expert_store_slot_bytes(const mc_model_t *m, uint32_t layer, uint32_t e);
// The smallest budget for managed (NULL: all): the largest managed expert.
uint64_t mc_expert_store_min_bytes(const mc_model_t *m, const uint8_t *managed);
// All managed experts' pool bytes (a budget at least this keeps every one).
uint64_t mc_expert_store_total_bytes(const mc_model_t *m, const uint8_t *managed);

bool mc_expert_store_manages(const mc_expert_store_t *st, uint32_t layer, uint32_t e);

// Expert e of layer l resident and pinned; *out its matrices in the pool
// (valid until the release). MC_ERR_IO when its read fails, MC_ERR_FORMAT
// when it holds an MXFP4 NaN scale; MC_ERR_BUSY
// when every resident expert is pinned and there is no room (release some
// and call again); MC_ERR_RANGE for an expert the store does not manage.
mc_err_t mc_expert_store_acquire(mc_expert_store_t *st, uint32_t layer, uint32_t e, mc_expert_t *out, char *err);
void mc_expert_store_release(mc_expert_store_t *st, uint32_t layer, uint32_t e);

// The experts layer l's step is about to use (managed ones only, any
// order): their misses are queued for the reader, the transitions learned,
// the predictions for l scored, and layer l + 1's predicted.
void mc_expert_store_observe(mc_expert_store_t *st, uint32_t layer, const uint32_t *experts, uint32_t n);

// A prediction of src for layer l (n experts, most likely first), scored
// when l is observed; read ahead when src drives the prefetch.
void mc_expert_store_predict(mc_expert_store_t *st, mc_store_pred_t src, uint32_t layer, const uint32_t *experts,
                             uint32_t n);

// Read experts now until the budget is full or every managed one is
// resident: each layer's first expert, then each layer's second, ... (a
// placement's start, so the first tokens do not read everything). MC_ERR_IO
// on a failed read, MC_ERR_FORMAT on an MXFP4 NaN scale.
// progress (may be NULL) hears the file bytes read so far after each expert.
mc_err_t mc_expert_store_warm(mc_expert_store_t *st, const mc_model_progress_t *progress, char *err);

typedef struct {
    uint64_t budget_bytes, used_bytes; // the pool: its limit, the bytes it has mapped
    uint32_t managed, resident;        // experts
    uint64_t hits;                     // acquires that found the expert resident
    uint64_t misses;                   // acquires that had to wait for a read (theirs or the reader's)
    uint64_t reads, bytes_read;        // experts read from the file, their bytes
    uint64_t read_us;                  // time spent in those reads (both threads)
    uint64_t stall_us;                 // time acquires waited for reads
    uint64_t evictions;
    uint64_t prefetched;               // experts read ahead
    uint64_t prefetch_used;            // ... and then used
    uint64_t prefetch_wasted;          // ... and evicted unused
    uint64_t errors;                   // failed reads (the reader's included)
    uint64_t steps;                    // layers observed
    struct {
        uint64_t predicted, correct, actual; // experts predicted, of those used, experts used
    } pred[MC_STORE_N_PRED];
} mc_expert_store_stats_t;

void mc_expert_store_stats(const mc_expert_store_t *st, mc_expert_store_stats_t *out);

// The policy's and predictor's names ("lru", "transitions", ...), and back.
const char *mc_store_policy_name(mc_store_policy_t p);
const char *mc_store_pred_name(mc_store_pred_t p);
mc_err_t mc_store_policy_parse(const char *s, mc_store_policy_t *out);
mc_err_t mc_store_pred_parse(const char *s, mc_store_pred_t *out);

#endif
