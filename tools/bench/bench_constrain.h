/*
 * bench_constrain: what constrained decoding costs (moe-bench --constrain).
 *
 * On the model (the generated benchmark model: a 32000-token vocabulary):
 * greedy generation of n_gen tokens free and constrained to a JSON Schema
 * (an array of objects with strings, integers and arrays), the medians of
 * reps runs: tokens per second both ways, the forward pass's time per step,
 * and the masks' time per token as generation used them (kept masks
 * included). Then the constrained run's tokens replayed with every mask a
 * full trie walk (no kept masks: the worst case per token).
 *
 * On a synthetic Qwen-sized vocabulary (151936 tokens: 3 control and 256
 * byte tokens, then words with and without a leading space, capitalised
 * words, numbers, punctuation and code runs, whitespace runs and UTF-8
 * letters from Latin-1 and CJK, drawn from a fixed-seed generator): the
 * constrained run's text split into its tokens by longest match, replayed
 * the same two ways. No model has that vocabulary here, so its step time is
 * the benchmark model's (a 151936-row head would make real steps longer).
 */
#ifndef MC_BENCH_CONSTRAIN_H
#define MC_BENCH_CONSTRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "bench.h"

typedef struct {
    uint32_t n_vocab;
    uint32_t tokens;        // tokens replayed
    double trie_ms;         // building the trie
    uint32_t trie_nodes;
    double mask_us;         // mean per token as generation uses them (kept masks)
    double walk_us, walk_median_us, walk_max_us; // every mask a full walk: mean, median and worst
    uint64_t walk_max_nodes; // the most trie nodes one walk stepped through (the load does not move it)
} mc_bench_vocab_t;

typedef struct {
    const char *model;
    int n_threads, reps;
    uint32_t n_gen;
    double free_tok_s, con_tok_s; // medians
    double step_ms;               // free decoding's time per token
    uint32_t con_tokens;          // tokens of the constrained run
    mc_bench_vocab_t model_vocab, qwen_vocab;
} mc_bench_constrain_t;

// The benchmark on o->model (set), o->n_gen tokens (0: 128), o->reps runs.
mc_err_t mc_bench_constrain(const mc_bench_opts_t *o, mc_bench_constrain_t *r, char *err);

void mc_bench_constrain_print(const mc_bench_constrain_t *r, FILE *f);
// One JSON line (no newline). MC_ERR_ARG when cap is too small.
mc_err_t mc_bench_constrain_json(const mc_bench_constrain_t *r, char *buf, size_t cap, char *err);

#endif
