/*
 * cache: the experts a node without a model file keeps on its disk
 * (moe-expert --cache-dir DIR), and how a placement's missing ones are
 * fetched into it.
 *
 * The folder holds experts-only GGUF files (expert_file.h): per model, the
 * node's own FP.gguf (FP: the whole model's fingerprint in hex) and any
 * file moe-split wrote for this node (a warm cache); a transfer in progress
 * as FP.gguf.part with its FP.gguf.state beside it. A node binds the file
 * of the coordinator's model like any model file (mc_model_open_node), so
 * its experts are mapped and repacked as from a whole model.
 *
 * For a placement (its pairs, their slice hashes and tensor types) a fill
 * (mc_cache_fill_new) first hashes the placed slices the current file has
 * and that were not checked since it was opened: a slice whose bytes do not
 * give the coordinator's hash is fetched again, like one the file lacks.
 * When the file has every slice the placement names and it is the node's
 * own within the bound, nothing is written. Otherwise a new file holding
 * exactly the placement's slices is laid out (header first, every slice at
 * its final offset) as FP.gguf.part: slices the old file has are copied,
 * the others fetched in chunks (mc_cache_fill_next / mc_cache_fill_put, in
 * order) and hashed as they arrive; a slice whose hash differs is fetched
 * again from its start, twice at most. The state file records, per slice,
 * its hash and how many bytes are in place (whole chunks), after every
 * chunk: a fill interrupted by a crash of either side resumes from there
 * when the next placement lays out the same file (its bytes before are
 * hashed again, not trusted). A finished fill is synced and renamed to
 * FP.gguf, replacing the old file: the cache thus evicts the slices no
 * placement uses; other models' files are removed, oldest first, while
 * the folder holds more than the bound (--cache-mb). A placement that
 * does not fit the bound is refused.
 *
 * Everything read from the folder is untrusted: files are bound with the
 * model checks, slices are hashed before use, and a state file only says
 * where to resume (what it claims is hashed again).
 */
#ifndef MC_CACHE_H
#define MC_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "model.h"
#include "wire.h"

#define MC_CACHE_DEFAULT_CHUNK (1u << 20)

typedef struct {
    const char *dir;      // created when missing
    uint64_t cap_bytes;   // bound of the folder's files; 0: none
    uint32_t chunk_bytes; // fetched per request (and resumed from): 4 KiB .. MC_WIRE_CHUNK_MAX
    FILE *log;            // status lines; NULL: quiet
    const char *who;      // their prefix
} mc_cache_params_t;

typedef struct mc_cache mc_cache_t;

mc_cache_t *mc_cache_new(const mc_cache_params_t *p, char *err);
void mc_cache_destroy(mc_cache_t **c);

const char *mc_cache_dir(const mc_cache_t *c);

// The best experts-only file in the folder for the model of fingerprint fp
// (the node's own FP.gguf, else the newest other one), bound; NULL when
// there is none (a file that fails to bind is passed over and logged).
mc_model_t *mc_cache_find(mc_cache_t *c, uint64_t fp);

// What a placement needs (mc_wire_assign_t's, for the current model).
typedef struct {
    const uint8_t *held;   // (n_layer, n_expert)
    const uint8_t *hashes; // (pairs held, 32), row-major
    const uint8_t *types;  // (pairs held, 3)
} mc_cache_want_t;

typedef struct mc_cache_fill mc_cache_fill_t;

// What is known of the slices of the file a node has open: per (layer,
// expert), a byte 1 when the hash that follows was computed from the file
// (or checked when it was written), 0 when not yet.
#define MC_CACHE_KNOWN_BYTES (1 + MC_WIRE_HASH_BYTES)

// Start filling the cache with the placement `want` of the model cur (the
// node's current file, or a model without experts: the coordinator's
// metadata). known: (n_layer, n_expert, MC_CACHE_KNOWN_BYTES) for cur,
// completed here with the hashes of the placed slices cur has (each is
// hashed once per file opened: a flipped byte on disk is found at the
// first placement after a start; and weights that differ under the same
// model header are told apart by their hash, not by the header). progress
// (may be NULL) hears of the bytes hashed. NULL with err on failure (the
// placement does not fit the bound, the folder cannot be written).
mc_cache_fill_t *mc_cache_fill_new(mc_cache_t *c, const mc_model_t *cur, const mc_cache_want_t *want,
                                   uint8_t *known, const mc_model_progress_t *progress, char *err);

// After mc_cache_fill_finish: the hashes of the slices now in place, into
// known (of the file finish opened, or of cur when in place).
void mc_cache_fill_known(const mc_cache_fill_t *f, uint8_t *known);
void mc_cache_fill_destroy(mc_cache_fill_t **f);

// Whether cur serves the placement as it is (nothing to fetch or write).
bool mc_cache_fill_in_place(const mc_cache_fill_t *f);

// The next chunk to ask for, if any not yet asked for (one more request
// outstanding then).
bool mc_cache_fill_next(mc_cache_fill_t *f, mc_wire_slice_request_t *out);

// Requests asked for and not yet answered.
uint32_t mc_cache_fill_outstanding(const mc_cache_fill_t *f);

// The answer to the oldest outstanding request: written in place, hashed,
// recorded. MC_ERR_FORMAT when it is not that chunk (nothing changes; the
// caller rewinds), MC_ERR_IO when it cannot be written or a slice kept
// failing its hash (the fill is then dead).
mc_err_t mc_cache_fill_put(mc_cache_fill_t *f, const mc_wire_slice_data_t *d, char *err);

// Forget the outstanding requests: they are asked for again.
void mc_cache_fill_rewind(mc_cache_fill_t *f);

// Every slice in place and checked.
bool mc_cache_fill_done(const mc_cache_fill_t *f);

// Bytes fetched so far (this fill) and in all (what it had to fetch when it
// started, resumed bytes excluded), and those resumed from an earlier fill.
void mc_cache_fill_progress(const mc_cache_fill_t *f, uint64_t *done, uint64_t *total, uint64_t *resumed);

// A done fill: the new file synced and renamed in place, the others over
// the bound removed, and the new file bound into *out (its placed slices
// all checked: mc_cache_fill_known records them). With in_place, *out is
// NULL (keep cur).
mc_err_t mc_cache_fill_finish(mc_cache_fill_t *f, mc_model_t **out, char *err);

#endif
