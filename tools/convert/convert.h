/*
 * convert: a Hugging Face model folder (config.json, safetensors weights,
 * tokenizer) to a GGUF file that moe-cluster and llama.cpp both load.
 *
 * Mixtral (-> "llama", Q and K rows reordered for llama.cpp's rotation of
 * adjacent pairs), Qwen3-MoE (-> "qwen3moe"), OLMoE (-> "olmoe"),
 * Qwen2-MoE (-> "qwen2moe"), GLM-4.5 (-> "glm4moe"), DeepSeek-V2/V3
 * (-> "deepseek2", kv_b_proj split into attn_k_b and attn_v_b) and GPT-OSS
 * (-> "gpt-oss", its fused and interleaved gate_up split, its MXFP4 experts
 * re-laid into GGUF MXFP4 blocks without requantizing) are mapped;
 * per-expert weights are stacked into merged ffn_*_exps tensors, and
 * next-token-prediction layers are left out.
 * The vocabulary comes from tokenizer.model (SentencePiece, "llama") or
 * tokenizer.json (byte-level BPE, "gpt2"). Weights stream from the mapped
 * shards one output tensor at a time through the GGUF writer, so memory is
 * about the largest tensor, not the model. Every value read from the folder
 * is checked: a missing key, a tensor of the wrong shape or an unexpected
 * tensor is an error naming it, never a guess.
 */
#ifndef MC_CONVERT_H
#define MC_CONVERT_H

#include <stdbool.h>
#include <stdio.h>

#include "dtype.h"
#include "error.h"

typedef struct {
    // Type of the weight matrices. type_auto: the source's float type (the
    // token embedding's: F32, F16 or BF16), so nothing is rounded. Otherwise
    // any GGUF weight type; a matrix whose rows are not a whole number of
    // blocks falls back to Q8_0, else F16. Norms and routers stay F32.
    bool type_auto;
    mc_dtype_t type;
    const char *name; // general.name; NULL: the folder's last component
    FILE *log;        // a line per tensor class and the output size; NULL: silent
} mc_convert_params_t;

// type_auto, no name, no log.
mc_convert_params_t mc_convert_params_default(void);

// Convert the folder hf_dir into out_path (written through a temporary file,
// so a failed run leaves no partial model). MC_OK or an error with err.
mc_err_t mc_convert(const char *hf_dir, const char *out_path, const mc_convert_params_t *p, char *err);

// The Hugging Face architectures understood, for help and error texts.
const char *mc_convert_architectures(void);

#endif
