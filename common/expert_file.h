/*
 * expert_file: experts-only GGUF files, what a node holds without the
 * whole model.
 *
 * Such a file (a node's cache file, or one of moe-split's outputs) has the
 * whole model's metadata except the tokenizer's (a few MB a node never
 * reads), the key MC_MODEL_SOURCE_KEY (model.h: the fingerprint of the
 * whole model, which the node then answers a coordinator's Hello with), and
 * some experts as per-expert tensors blk.L.ffn_{gate,up,down}.E.weight of
 * the whole model's types. mc_model_open_node binds it (model.h); here is
 * what writes one: the metadata (copied from a whole model, or from another
 * experts-only file), and the tensors of a slice. A slice's bytes are the
 * gate, up and down rows back to back, as a merged or legacy model file has
 * them for that expert (slice_index.h hashes exactly those), so a node can
 * write what it receives where the layout says and nothing is converted.
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

// Bytes of a slice whose gate, up and down have these types; 0 when a type
// cannot hold the rows (its block does not divide them) or is no weight type.
uint64_t mc_expert_file_slice_bytes(const mc_hparams_t *hp, const mc_dtype_t types[3]);

// Declare expert e of layer l's three tensors (gate, up, down: the tensors
// number n, n + 1, n + 2 of w when n were declared before).
mc_err_t mc_expert_file_add(mc_gguf_writer_t *w, const mc_hparams_t *hp, uint32_t layer, uint32_t e,
                            const mc_dtype_t types[3], char *err);

// The types of expert e of layer l's gate, up and down in m.
void mc_expert_file_types(const mc_model_t *m, uint32_t layer, uint32_t e, mc_dtype_t out[3]);

// An experts-only file without tensors holding m's metadata (the model's
// shape for a node that has nothing yet), malloc'd into *out, *len.
// MC_ERR_RANGE when it exceeds MC_EXPERT_FILE_INFO_MAX.
mc_err_t mc_expert_file_info(const mc_model_t *m, uint8_t **out, size_t *len, char *err);

#endif
