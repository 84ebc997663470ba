/*
 * split: one experts-only GGUF per node of a cluster file (moe-split).
 *
 * For every node of the cluster file, OUTDIR/NAME.gguf holds the whole
 * model's metadata without the tokenizer and exactly the experts the node
 * holds (expert_file.h), and NAME.gguf.mcidx beside it their slice hashes
 * (slice_index.h), so the node starts without hashing. Such a file is the
 * node's --model (a node refuses a placement naming an expert the file
 * lacks, saying so), or, copied into its --cache-dir, a warm cache: the
 * node fetches nothing it holds. The coordinator keeps the whole model.
 *
 * The bytes of each slice are copied as they are (any layout, any type),
 * so a node's products are those of the whole file, bit for bit.
 */
#ifndef MC_SPLIT_H
#define MC_SPLIT_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "model.h"

typedef struct {
    const char *model;   // the whole model (GGUF)
    const char *cluster; // the cluster file
    const char *outdir;  // created when missing
    int threads;         // hashing
    FILE *log;           // one line per file written; NULL: quiet
} mc_split_params_t;

mc_split_params_t mc_split_params_default(void);

// Write node i's experts-only file (held: (n_layer, n_expert) its pairs)
// to path, atomically, and its slice index beside it.
mc_err_t mc_split_write(const mc_model_t *m, const uint8_t *held, const char *path, int threads, char *err);

// Every node's file, checked against the model first.
mc_err_t mc_split_run(const mc_split_params_t *p, char *err);

#endif
