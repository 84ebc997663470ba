/*
 * gguf_writer: writes GGUF version 3 files.
 *
 * Metadata and the tensor table are collected first; tensor bytes are then
 * produced one tensor at a time by a caller callback while the file is
 * written, so writing a multi-GB model needs memory for one tensor only.
 */
#ifndef MC_GGUF_WRITER_H
#define MC_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

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

// Declare a tensor (ne[0] contiguous; n_dims 1..4). Names must be unique.
mc_err_t mc_gguf_writer_add_tensor(mc_gguf_writer_t *w, const char *name, mc_dtype_t type,
                                   uint32_t n_dims, const uint64_t *ne);

// Write everything to path (via a temporary file renamed into place, so a
// crash never leaves a truncated model under the final name).
mc_err_t mc_gguf_writer_write_file(mc_gguf_writer_t *w, const char *path, mc_gguf_fill_fn fill,
                                   void *ctx, char *err);

// Write everything to a malloc'd buffer (for tests); *out freed by caller.
mc_err_t mc_gguf_writer_write_mem(mc_gguf_writer_t *w, mc_gguf_fill_fn fill, void *ctx,
                                  uint8_t **out, size_t *out_len, char *err);

#endif
