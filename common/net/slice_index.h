/*
 * slice_index: content hashes of the expert weights of a model file,
 * computed once and kept beside the model.
 *
 * A slice is what one (layer, expert) pair multiplies: the expert's gate,
 * up and down matrices, as the raw bytes of the file (a contiguous range of
 * the merged ffn_*_exps tensors, or the legacy per-expert ffn_*.E tensors;
 * model.h), and in a family whose experts carry biases (GPT-OSS) its gate,
 * up and down biases as little-endian f32 (expert_file.h). Its hash is
 * BLAKE2b-256 (libsodium's crypto_generichash) of a 36-byte descriptor, the
 * type, n_in and n_out of gate, up and down as little-endian u32, followed
 * by the bytes of gate, up and down (then of the biases). The same
 * weights thus hash the same in either layout, and a hash alone says what
 * the bytes are (the same bytes read as another type are other weights), so
 * a slice can be checked without the file's header. The header itself
 * (hyperparameters, tensor table) is covered by mc_model_fingerprint, the
 * cluster's first, cheap check; nothing else of the file reaches a node's
 * products.
 *
 * An index holds the hashes of one model file's n_layer x n_expert slices,
 * each known or not yet computed (a node hashes only the slices it is given),
 * tagged with the identity of the file it describes (mc_slice_source_t:
 * header fingerprint, size, modification time, shape). Its file format,
 * all little-endian:
 *
 *   header    48 bytes, mc_slice_index_header_t
 *   known     n_layer * n_expert bytes, 1 where the hash is known, else 0
 *   hashes    n_layer * n_expert * 32 bytes, pair (l, e) at l * n_expert + e;
 *             zero where not known
 *   checksum  32 bytes, BLAKE2b-256 of everything before it
 *
 * Index files are untrusted input: mc_slice_index_parse() checks every field,
 * the exact length and the checksum, and accepts only the one canonical
 * encoding (so parse and serialize round-trip byte for byte). An index made
 * for another source (the model was rewritten, replaced or is another file)
 * is stale. Either way it is ignored and recomputed, never trusted.
 *
 * Where an index lives (mc_slice_index_open, mc_slice_index_ensure): beside
 * the model as MODEL.gguf.mcidx when that folder is writable (its mode bits
 * grant writing, even to root: a folder made read-only stays untouched), else
 * in the cache folder ($MC_CACHE_DIR, else $XDG_CACHE_HOME/moe-cluster, else
 * ~/.cache/moe-cluster, as for mkmodel.h's generated models) as
 * NAME-P-S.mcidx, P and S hex digests of the file's absolute path and of its
 * size, modification time and fingerprint (older entries for the same path
 * are removed), else nowhere: the index then lives in memory only. An index
 * is saved only while the file at the model's path is still the one that was
 * opened (same size and modification time).
 *
 * The index is a cache trusted as far as the file system it lives on: it
 * catches a wrong or damaged model file, not someone who can rewrite both a
 * model and its index and put the old modification time back.
 */
#ifndef MC_SLICE_INDEX_H
#define MC_SLICE_INDEX_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "pool.h"

#define MC_SLICE_HASH_BYTES 32
// 2: a GPT-OSS slice's hash covers its biases (an index of version 1 is
// stale: recomputed).
#define MC_SLICE_INDEX_VERSION 2
#define MC_SLICE_INDEX_MAGIC "MCSLIDX\0" // 8 bytes
#define MC_SLICE_INDEX_MAX_LAYERS 1024   // model.c's limits
#define MC_SLICE_INDEX_MAX_EXPERTS 256

// The file an index describes.
typedef struct {
    uint64_t fingerprint; // mc_model_fingerprint: header and size
    uint64_t file_size;   // bytes
    int64_t mtime_ns;     // modification time, ns since the epoch
    uint32_t n_layer, n_expert;
} mc_slice_source_t;

// The first bytes of an index file (host order = little-endian, as gguf.h).
typedef struct {
    char magic[8];        // MC_SLICE_INDEX_MAGIC
    uint32_t version;     // MC_SLICE_INDEX_VERSION
    uint32_t hash_bytes;  // MC_SLICE_HASH_BYTES
    uint64_t fingerprint; // mc_slice_source_t's fields
    uint64_t file_size;
    int64_t mtime_ns;
    uint32_t n_layer;  // 1..MC_SLICE_INDEX_MAX_LAYERS
    uint32_t n_expert; // 1..MC_SLICE_INDEX_MAX_EXPERTS
} mc_slice_index_header_t;
static_assert(sizeof(mc_slice_index_header_t) == 48, "slice index header: 48 bytes, no padding");

typedef struct mc_slice_index mc_slice_index_t;

// Hash of slice (layer, e) of m into out; MC_ERR_RANGE for a pair outside
// the model (out untouched).
mc_err_t mc_slice_hash(const mc_model_t *m, uint32_t layer, uint32_t e, uint8_t out[MC_SLICE_HASH_BYTES]);

// Hashing a slice that arrives in pieces (a node fetching it): the same
// hash as mc_slice_hash of the finished slice, given its matrices' types
// (gate, up, down) and the model's dim and ffn; then its bytes in order.
typedef struct mc_slice_hasher mc_slice_hasher_t;
mc_slice_hasher_t *mc_slice_hasher_new(const mc_dtype_t types[3], uint32_t dim, uint32_t ffn);
void mc_slice_hasher_update(mc_slice_hasher_t *h, const void *p, size_t n);
// The hash into out; frees h.
void mc_slice_hasher_final(mc_slice_hasher_t **h, uint8_t out[MC_SLICE_HASH_BYTES]);
void mc_slice_hasher_destroy(mc_slice_hasher_t **h);

// The identity of the file at path, which m maps: its size must be the
// mapping's. MC_ERR_IO (cannot stat it, or another size) otherwise.
mc_err_t mc_slice_source(const mc_model_t *m, const char *path, mc_slice_source_t *out, char *err);

// Same file: every field equal.
bool mc_slice_source_equal(const mc_slice_source_t *a, const mc_slice_source_t *b);

// An index of src with nothing known and no file. NULL on failure.
mc_slice_index_t *mc_slice_index_new(const mc_slice_source_t *src, char *err);

// Free; sets *x to NULL; safe on NULL and twice.
void mc_slice_index_destroy(mc_slice_index_t **x);

// An index from the bytes of an index file (see above for what is checked;
// the source is not compared with anything here). NULL with err otherwise.
mc_slice_index_t *mc_slice_index_parse(const void *buf, size_t len, char *err);

// The index file's bytes (malloc'd into *out, *len; free() it).
mc_err_t mc_slice_index_serialize(const mc_slice_index_t *x, uint8_t **out, size_t *len, char *err);

const mc_slice_source_t *mc_slice_index_source(const mc_slice_index_t *x);

// Pairs whose hash is known.
size_t mc_slice_index_known(const mc_slice_index_t *x);

// Hash of slice (layer, e), or NULL when not computed or out of range.
const uint8_t *mc_slice_index_hash(const mc_slice_index_t *x, uint32_t layer, uint32_t e);

// All hashes, (n_layer, n_expert, MC_SLICE_HASH_BYTES), zero where not
// known. The pointer stays valid (its contents grow) as long as x lives.
const uint8_t *mc_slice_index_table(const mc_slice_index_t *x);

// What a fill or an ensure did.
typedef struct {
    uint32_t slices;    // hashes computed
    uint64_t bytes;     // weight bytes hashed
    double seconds;     // wall time of the hashing
    const char *saved;  // file written (owned by the index, until its next save), NULL: none
    char note[MC_ERR_LEN]; // why hashes computed were not saved; "" otherwise
} mc_slice_stats_t;

// Bytes of weights mc_slice_index_fill would read for held (NULL: every
// pair): those of the pairs not known yet.
uint64_t mc_slice_index_todo_bytes(const mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held);

// Told, from the filling thread, how many bytes the fills that follow have
// hashed so far, after every batch of about 32 MiB (a node tells its
// coordinator; a first start tells the log). p is copied; NULL: nothing.
void mc_slice_index_set_progress(mc_slice_index_t *x, const mc_model_progress_t *p);

// Compute the hashes of the pairs with held[l * n_expert + e] != 0 (held
// NULL: every pair) that are not known yet, from m, which must be the
// index's source (its shape and fingerprint are checked), on pool's
// threads (NULL: the caller's). release: afterwards drop the hashed pages
// from this process's memory (MADV_DONTNEED, whole pages inside each
// matrix; only for a file mapping), for a caller that hashes weights it
// does not serve. st (may be NULL) gets the counts. Nothing changes on
// failure.
mc_err_t mc_slice_index_fill(mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held, mc_pool_t *pool,
                             bool release, mc_slice_stats_t *st, char *err);

// --- files ---------------------------------------------------------------------------

// Read and parse the index file at path and check it describes want.
// MC_ERR_IO (missing, unreadable), MC_ERR_FORMAT (corrupt) or MC_ERR_RANGE
// (stale: another source) with err; *out untouched then.
mc_err_t mc_slice_index_load(const char *path, const mc_slice_source_t *want, mc_slice_index_t **out, char *err);

// Write x to path atomically (a temporary file in the same folder, synced,
// renamed over path).
mc_err_t mc_slice_index_save(const mc_slice_index_t *x, const char *path, char *err);

// The index of the model m mapped from model_path: loaded from beside the
// model or from the cache folder (cache_dir; NULL: the default one above)
// when a valid one for this very file is there, else a new one with
// nothing known. NULL only when model_path cannot be read as m's file or
// memory runs out. The index remembers where it may be saved
// (mc_slice_index_ensure).
mc_slice_index_t *mc_slice_index_open(const mc_model_t *m, const char *model_path, const char *cache_dir, char *err);

// Where the index was loaded from or last saved to; NULL: memory only.
const char *mc_slice_index_path(const mc_slice_index_t *x);

// What mc_slice_index_open found out about the files it looked at (a stale
// or corrupt index set aside); "" when there is nothing to say.
const char *mc_slice_index_note(const mc_slice_index_t *x);

// mc_slice_index_fill, then, when anything was computed and x came from
// mc_slice_index_open, save it (merged with what another process may have
// saved meanwhile) beside the model, else in the cache folder. A failed
// save is not an error: st->note says why and the index stays in memory.
mc_err_t mc_slice_index_ensure(mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held, mc_pool_t *pool,
                               bool release, mc_slice_stats_t *st, char *err);

#endif
