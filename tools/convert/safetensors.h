/*
 * safetensors: reader (and a small writer) for Hugging Face .safetensors
 * files, and for a model folder holding one file or several shards.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON
 * mapping tensor names to {dtype, shape, data_offsets} (plus an optional
 * "__metadata__" map of strings, ignored), then the data section.
 * mc_safetensors_parse() indexes a byte buffer that the caller keeps alive;
 * mc_safetensors_open() maps a file read-only and parses it. Every byte is
 * untrusted: the header length, the JSON, each dtype, shape and offset pair
 * is checked against the buffer (sizes without overflow, tensors inside the
 * data section, no two overlapping, unique names), so a damaged or hostile
 * file gives a clear error, never a crash. Only the types a model
 * converter needs are accepted: BF16, F16 and F32, and U8 (the bytes of
 * GPT-OSS's MXFP4 blocks and scales, marked MC_SAFETENSORS_U8).
 *
 * Tensor data is not aligned in the file: read it with memcpy.
 */
#ifndef MC_SAFETENSORS_H
#define MC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

#define MC_SAFETENSORS_MAX_DIMS 8
// Larger headers are refused before the JSON is parsed (real ones are a few MB).
#define MC_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

// U8 has no GGUF tensor type: its tensors carry this value, outside every
// mc_dtype_t id (so no dtype table takes them for a weight type).
#define MC_SAFETENSORS_U8 ((mc_dtype_t)MC_DTYPE_ID_LIMIT)

typedef struct {
    const char *name;       // NUL-terminated, owned by the file object
    mc_dtype_t dtype;       // MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16 or MC_SAFETENSORS_U8
    uint32_t n_dims;        // 0 (a scalar) .. MC_SAFETENSORS_MAX_DIMS
    uint64_t shape[MC_SAFETENSORS_MAX_DIMS]; // row-major as in the file: shape[n_dims - 1] is contiguous
    uint64_t n_elems;       // product of shape (1 for a scalar)
    uint64_t offset;        // start within the data section
    uint64_t size;          // bytes: n_elems * element size
    const uint8_t *data;    // buffer + 8 + N + offset
} mc_safetensors_tensor_t;

typedef struct mc_safetensors mc_safetensors_t;

// Index buf[0..len) (the whole file image). The buffer must outlive the
// result. NULL on failure with a message in err (MC_ERR_LEN bytes, may be NULL).
mc_safetensors_t *mc_safetensors_parse(const void *buf, size_t len, char *err);

// Map path read-only and parse it; the mapping is owned by the result.
mc_safetensors_t *mc_safetensors_open(const char *path, char *err);

// Unmap (if opened) and free; sets *st to NULL; safe on NULL or twice.
void mc_safetensors_destroy(mc_safetensors_t **st);

// Tensors in header order.
size_t mc_safetensors_count(const mc_safetensors_t *st);
const mc_safetensors_tensor_t *mc_safetensors_at(const mc_safetensors_t *st, size_t i);
const mc_safetensors_tensor_t *mc_safetensors_find(const mc_safetensors_t *st, const char *name); // NULL if absent

// Bytes per element of a supported dtype (1, 2 or 4), 0 for anything else.
size_t mc_safetensors_dtype_size(mc_dtype_t t);

// --- writing (tests, tools) ------------------------------------------------

typedef struct {
    const char *name;
    mc_dtype_t dtype; // F32, F16, BF16 or MC_SAFETENSORS_U8
    uint32_t n_dims;  // 0..MC_SAFETENSORS_MAX_DIMS
    const uint64_t *shape;
    const void *data; // n_elems * element size bytes
} mc_safetensors_desc_t;

// Write n tensors, back to back in the given order, with an optional
// __metadata__ map (meta_kv: 2 * n_meta strings, key then value).
mc_err_t mc_safetensors_write(const char *path, const mc_safetensors_desc_t *tensors, size_t n,
                              const char *const *meta_kv, size_t n_meta, char *err);

// --- a model folder ---------------------------------------------------------

// The tensors of a Hugging Face model folder: model.safetensors.index.json
// (weight_map: tensor name -> shard file in the same folder) with its shards,
// or else a single model.safetensors. Shard names must be plain file names
// (no '/', not "." or ".."); every tensor of the index must be in the shard it
// names, every tensor of a shard in the index, and no name in two shards.
typedef struct mc_safetensors_dir mc_safetensors_dir_t;

mc_safetensors_dir_t *mc_safetensors_dir_open(const char *dir, char *err);
void mc_safetensors_dir_destroy(mc_safetensors_dir_t **d);

// All tensors of all shards (shard by shard, header order), each once.
size_t mc_safetensors_dir_count(const mc_safetensors_dir_t *d);
const mc_safetensors_tensor_t *mc_safetensors_dir_at(const mc_safetensors_dir_t *d, size_t i);
// Index of a tensor in 0..count-1, or SIZE_MAX when absent.
size_t mc_safetensors_dir_find(const mc_safetensors_dir_t *d, const char *name);
// Number of files the tensors came from (1 without an index).
size_t mc_safetensors_dir_shards(const mc_safetensors_dir_t *d);

// Done with tensor i for now: its mapped pages are dropped from memory (read
// again from the file if touched later), so streaming a model through keeps
// the resident set at about one tensor instead of growing to the model.
void mc_safetensors_dir_release(const mc_safetensors_dir_t *d, size_t i);

#endif
