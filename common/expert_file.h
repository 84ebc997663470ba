/*
 * expert_file: experts-only GGUF files, what a node holds without the
 * whole model.
 *
 * Such a file (a node's cache file, or one of moe-split's outputs) has the
 * whole model's metadata except the tokenizer's (a few MB a node never
 * reads), the key MC_MODEL_SOURCE_KEY (model.h: the fingerprint of the
 * whole model, which the node then answers a coordinator's Hello with), and
 * some experts as per-expert tensors blk.L.ffn_{gate,up,down}.E.weight of
 * the whole model's types; in a family whose experts carry biases (arch.h
 * expert_ffn_bias: GPT-OSS) each expert also has blk.L.ffn_{gate,up,down}.E.bias,
 * F32 vectors of ffn, ffn and dim values. mc_model_open_node binds it
 * (model.h); here is what writes one: the metadata (copied from a whole
 * model, or from another experts-only file), and the tensors of a slice.
 *
 * A slice is an expert's parts back to back: the gate, up and down rows as
 * a merged or legacy model file has them for that expert, then, in a family
 * with expert biases, its gate, up and down biases as little-endian f32
 * (what the model binds: a whole model's ffn_*_exps.bias rows, converted to
 * f32 when stored otherwise). slice_index.h hashes exactly those bytes, the
 * transfer sends them, and each part is one tensor of an experts-only file,
 * so a node writes what it receives where the layout says and nothing is
 * converted.
 *
 * The coordinator sends a node without a model file the metadata as such a
 * file without tensors (mc_expert_file_info).
 */
#ifndef MC_EXPERT_FILE_H
#define MC_EXPERT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"

// Largest metadata an experts-only file may carry (what travels to a node).
#define MC_EXPERT_FILE_INFO_MAX (1u << 20)

// Every key of src except the tokenizer's, general.alignment (the writer's)
// and MC_MODEL_SOURCE_KEY, then MC_MODEL_SOURCE_KEY = fingerprint.
mc_err_t mc_expert_file_meta(const mc_gguf_t *src, uint64_t fingerprint, mc_gguf_writer_t *w, char *err);

// Parts of a slice at most: the gate, up and down weights, then their biases.
#define MC_EXPERT_FILE_PARTS_MAX 6

// Parts of a slice in hp's family: 3, or 6 when its experts carry biases.
uint32_t mc_expert_file_parts(const mc_hparams_t *hp);

// Bytes of part j (< mc_expert_file_parts) of a slice whose gate, up and
// down have these types; 0 when a type cannot hold the rows (its block
// does not divide them) or is no weight type.
uint64_t mc_expert_file_part_bytes(const mc_hparams_t *hp, const mc_dtype_t types[3], uint32_t j);

// Bytes of a slice whose gate, up and down have these types (every part);
// 0 as above.
uint64_t mc_expert_file_slice_bytes(const mc_hparams_t *hp, const mc_dtype_t types[3]);

// Part j of expert e of layer l in m (which has that expert): its bytes as
// they travel, *len of them (NULL and 0 for a bias the layer lacks).
const uint8_t *mc_expert_file_part(const mc_model_t *m, uint32_t layer, uint32_t e, uint32_t j, uint64_t *len);

// Declare expert e of layer l's tensors, one per part (gate, up, down
// weights, then their biases: the tensors numbered n + j of w when n were
// declared before).
mc_err_t mc_expert_file_add(mc_gguf_writer_t *w, const mc_hparams_t *hp, uint32_t layer, uint32_t e,
                            const mc_dtype_t types[3], char *err);

// The types of expert e of layer l's gate, up and down in m.
void mc_expert_file_types(const mc_model_t *m, uint32_t layer, uint32_t e, mc_dtype_t out[3]);

// An experts-only file without tensors holding m's metadata (the model's
// shape for a node that has nothing yet), malloc'd into *out, *len.
// MC_ERR_RANGE when it exceeds MC_EXPERT_FILE_INFO_MAX.
mc_err_t mc_expert_file_info(const mc_model_t *m, uint8_t **out, size_t *len, char *err);

#endif
