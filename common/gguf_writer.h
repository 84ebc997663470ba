/*
 * gguf_writer: writes GGUF version 3 files.
 *
 * Metadata and the tensor table are collected first; tensor bytes are then
 * produced one tensor at a time by a caller callback while the file is
 * written, so writing a multi-GB model needs memory for one tensor only.
 * A caller that fills the data section itself, in any order (an expert
 * node writing the slices it receives where they belong), takes the header
 * (mc_gguf_writer_header) and the tensors' offsets instead.
 *
 * In common/ because both binaries write GGUFs: the coordinator the
 * metadata it sends a node without a model file, the node its cache file
 * (expert_file.h); the tools (moe-mkmodel, moe-convert, moe-split) too.
 */
#ifndef MC_GGUF_WRITER_H
#define MC_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "gguf.h"

typedef struct mc_gguf_writer mc_gguf_writer_t;

// Fill dst (size bytes) with the data of tensor number `index` (order of
// mc_gguf_writer_add_tensor calls). Return MC_OK or an error (aborts the write).
typedef mc_err_t (*mc_gguf_fill_fn)(void *ctx, size_t index, void *dst, size_t size, char *err);

mc_gguf_writer_t *mc_gguf_writer_new(uint32_t alignment); // 0: default 32
void mc_gguf_writer_destroy(mc_gguf_writer_t **w);

// Metadata (keys must be unique; a duplicate is MC_ERR_ARG).
mc_err_t mc_gguf_writer_add_u32(mc_gguf_writer_t *w, const char *key, uint32_t v);
mc_err_t mc_gguf_writer_add_i32(mc_gguf_writer_t *w, const char *key, int32_t v);
mc_err_t mc_gguf_writer_add_u64(mc_gguf_writer_t *w, const char *key, uint64_t v);
mc_err_t mc_gguf_writer_add_f32(mc_gguf_writer_t *w, const char *key, float v);
mc_err_t mc_gguf_writer_add_bool(mc_gguf_writer_t *w, const char *key, bool v);
mc_err_t mc_gguf_writer_add_str(mc_gguf_writer_t *w, const char *key, const char *v);
mc_err_t mc_gguf_writer_add_arr_str(mc_gguf_writer_t *w, const char *key, const char *const *v,
                                    const size_t *lens, size_t n); // lens NULL: strlen
mc_err_t mc_gguf_writer_add_arr_f32(mc_gguf_writer_t *w, const char *key, const float *v, size_t n);
mc_err_t mc_gguf_writer_add_arr_i32(mc_gguf_writer_t *w, const char *key, const int32_t *v, size_t n);

// Copy a value read by the GGUF reader (scalars, strings, arrays of
// scalars or strings); MC_ERR_UNSUPPORTED for arrays of arrays.
mc_err_t mc_gguf_writer_add_value(mc_gguf_writer_t *w, const char *key, const mc_gguf_value_t *v);

// Declare a tensor (ne[0] contiguous; n_dims 1..4). Names must be unique.
mc_err_t mc_gguf_writer_add_tensor(mc_gguf_writer_t *w, const char *name, mc_dtype_t type,
                                   uint32_t n_dims, const uint64_t *ne);

// Bytes of the whole file as it would be written.
uint64_t mc_gguf_writer_file_bytes(const mc_gguf_writer_t *w);

// Offset in the file of tensor number `index` (declaration order); index
// must be below the number of tensors declared.
uint64_t mc_gguf_writer_tensor_offset(const mc_gguf_writer_t *w, size_t index);

// Everything before the data section (header, metadata, tensor table, zero
// padding) into a malloc'd buffer (*out, *len; free() it): with zeros up to
// mc_gguf_writer_file_bytes and each tensor's bytes at its offset, the file
// write_file would write.
mc_err_t mc_gguf_writer_header(const mc_gguf_writer_t *w, uint8_t **out, size_t *len, char *err);

// Write everything to path (via a temporary file renamed into place, so a
// crash never leaves a truncated model under the final name).
mc_err_t mc_gguf_writer_write_file(mc_gguf_writer_t *w, const char *path, mc_gguf_fill_fn fill,
                                   void *ctx, char *err);

// Write everything to a malloc'd buffer (for tests); *out freed by caller.
mc_err_t mc_gguf_writer_write_mem(mc_gguf_writer_t *w, mc_gguf_fill_fn fill, void *ctx,
                                  uint8_t **out, size_t *out_len, char *err);

#endif
