/*
 * bench: the measurements behind moe-bench.
 *
 * Decoding a mixture-of-experts model is bound by memory traffic: every
 * generated token reads the attention, router and output weights plus k
 * experts per layer. So next to prompt and generation speed the benchmark
 * measures the machine's memory read bandwidth and divides it by the weight
 * bytes per token: the generation speed no implementation could beat here.
 *
 * Speeds are medians over repetitions after one warm-up run. The bandwidth
 * test runs in a forked child process, so its large buffer never counts in
 * the benchmark's own peak RSS (which then reflects the engine alone).
 * Everything the CLI prints comes from functions here, so tests can call
 * them on tiny models.
 */
#ifndef MC_BENCH_H
#define MC_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "engine.h"
#include "error.h"
#include "expert_store.h"
#include "kernel.h"
#include "mkmodel.h"
#include "model.h"

// Passes over the bandwidth buffer; the best one is reported.
#define MC_BENCH_BW_PASSES 5

// Attaches an expert backend to the engine before timing (moe-bench
// --cluster sends the experts to the nodes of a cluster file through it);
// detach releases it before the engine goes. Kept as hooks so this module
// needs no network code.
typedef mc_err_t (*mc_bench_attach_fn)(void *ctx, mc_engine_t *e, const mc_model_t *m, char *err);
typedef void (*mc_bench_detach_fn)(void *ctx);
// Whether the attached backend leaves (layer, expert) to this process (a
// cluster file's local experts): those are repacked at load like every
// other matrix, as a coordinator's session repacks them.
typedef bool (*mc_bench_local_fn)(void *ctx, uint32_t layer, uint32_t expert);
// --corpus: a timed run's token ids (n of them, for passage `prompt`,
// seeded sampling or greedy, with speculation or without) just before they
// are compared with the first run's. Tests alter them to see the comparison
// fail; moe-bench sets none.
typedef void (*mc_bench_ids_fn)(void *ctx, uint32_t prompt, bool seeded, bool speculative, int32_t *ids, uint32_t n);

typedef struct {
    const char *model;   // GGUF file; NULL: the cached benchmark model of `type`
    const char *cluster; // --cluster FILE (the front end attaches it)
    mc_bench_attach_fn attach; // optional
    mc_bench_detach_fn detach; // with attach
    mc_bench_local_fn local;   // with attach: the experts computed here (NULL: all of them)
    void *attach_ctx;
    mc_dtype_t type;     // weight type of the generated benchmark model
    int n_threads;
    uint32_t n_prompt;   // prompt tokens, evaluated as one batch
    uint32_t n_gen;      // tokens generated one at a time after the prompt
    uint32_t n_batch;    // sequences decoded together (each its prompt, then one token per step)
    uint32_t n_verify;   // --verify K: each step also verifies K guessed tokens per sequence
    mc_dtype_t kv_type;  // --kv-type: the KV cache's values (MC_DTYPE_F32 by default, or MC_DTYPE_F16)
    const char *routing_stats; // --routing-stats FILE (the front end records it)
    const char *stats_json;    // --stats-json FILE: with --cluster, its statistics after the run
    int reps;            // timed repetitions (after one warm-up)
    size_t bw_bytes;     // bandwidth buffer; 0: mc_bench_bw_default_bytes()
    bool json;
    bool kernels;        // kernel micro-benchmark instead of the model run
    bool constrain;      // constrained decoding's cost instead (bench_constrain.h)
    const char *corpus;  // --corpus FILE: speculative decoding on its passages instead (bench_speculate.h)
    uint32_t speculate;  // --speculate K: with --corpus, guesses per step at most
    float repeat_penalty; // --repeat-penalty R: with --corpus, the sampler's (1: off; below 1 favours the
                          // last 64 tokens, which random weights then repeat)
    mc_bench_ids_fn on_ids; // with --corpus (optional)
    void *on_ids_ctx;
    bool no_repack;      // --no-repack: Q4_0 products read the file's rows
    bool no_head;        // --no-head: generation steps compute no logits (the head's share of a step)
    bool pipeline;       // --pipeline: with --cluster, two groups of rows per pass (engine.h: pipeline)
    uint32_t mem_limit_mb;        // --mem-limit: expert memory (expert_store.h); 0: all resident
    bool cold;                    // --cold: the model file out of the page cache at start, and expert
                                  // reads kept out of it (every miss reads the disk)
    mc_store_policy_t mem_policy; // --mem-policy
    int mem_prefetch;             // --mem-prefetch: MC_STORE_PRED_* or -1 (none)
    bool help;
} mc_bench_opts_t;

// Defaults: Q4_0, threads = online CPUs (at most 8), 64 + 64 tokens, 3 reps.
void mc_bench_opts_init(mc_bench_opts_t *o);

// Strict flag parsing (see mc_bench_usage); MC_ERR_ARG with a one-line
// message on anything unknown, malformed or out of range. --help only sets
// o->help.
mc_err_t mc_bench_parse(int argc, char **argv, mc_bench_opts_t *o, char *err);

void mc_bench_usage(FILE *f);

// Median of v[0..n) (sorts v in place); NAN when n is 0.
double mc_bench_median(double *v, size_t n);

// Memory read bandwidth in GB/s (1e9 bytes/s): n_threads threads each sum
// their share of a `bytes` buffer (rounded down to whole 256-byte units,
// at least one per thread), best of `passes` after a warm-up fill.
mc_err_t mc_bench_mem_bw(int n_threads, size_t bytes, int passes, double *gb_s, char *err);

// The same, measured in a forked child so the buffer stays out of this
// process's memory and peak RSS. Call it before starting any threads.
mc_err_t mc_bench_mem_bw_child(int n_threads, size_t bytes, int passes, double *gb_s, char *err);

// Buffer size that is much larger than the last-level cache: 4 x the L3
// size, at least 1 GiB, at most a quarter of physical memory.
size_t mc_bench_bw_default_bytes(void);

// The benchmark model shape (embedding 1024, expert FFN 3584, 8 layers,
// 16/4 heads, 8 experts with 2 used, vocabulary 32000, ctx 4096) in `type`.
mc_mkmodel_params_t mc_bench_model_params(mc_dtype_t type);

// Where the generated benchmark model of `type` is cached:
// $MC_CACHE_DIR, else $XDG_CACHE_HOME/moe-cluster, else
// $HOME/.cache/moe-cluster, file bench-<dim>x<ffn>x<layers>-<type>.gguf.
// Creates the folder. The file itself may not exist yet.
mc_err_t mc_bench_cache_path(mc_dtype_t type, char *buf, size_t cap, char *err);

// What one timed run evaluates.
typedef struct {
    uint32_t n_prompt; // prompt tokens per sequence, one pass each
    uint32_t n_gen;    // generation steps
    uint32_t n_batch;  // sequences (>= 1)
    uint32_t n_verify; // guessed tokens each sequence also verifies per step (speculative decoding's cost)
    mc_dtype_t kv_type; // KV cache values (MC_DTYPE_F32 = 0, the default, or MC_DTYPE_F16)
    bool no_head;       // generation steps want no logits: no output head (and no sampling); each
                        // sequence's next id is then a fixed function of the previous one
    bool pipeline;      // the engine's pipeline (two groups of rows, through a cluster)
} mc_bench_shape_t;

// The engine the benchmark drives: a local one with n_batch sequences, each
// with room for the prompt as one batch plus the generated tokens and the
// guesses. (A cluster run swaps in an expert step that goes to the nodes;
// mc_bench_speed works on either.)
mc_engine_t *mc_bench_engine_new(const mc_model_t *m, int n_threads, const mc_bench_shape_t *sh, char *err);

// Repack the weights as a coordinator's session does (mc_model_repack):
// all of them, or with o->attach set the non-expert matrices and the experts
// o->local says are computed here. Nothing with o->no_repack.
mc_err_t mc_bench_repack(const mc_bench_opts_t *o, mc_model_t *m, mc_engine_t *e, char *err);

// Median prompt and generation speeds (tokens/s, summed over sequences) over
// `reps` runs after a warm-up: for each of n_batch sequences, n_prompt
// deterministic ids (different per sequence) at position 0 in one pass; then
// n_gen steps, each one pass with the next greedy token of every sequence
// and, with n_verify, that many guesses after it at the next positions,
// all rejected (their logits computed, the greedy token kept: the cost of
// verifying a draft that fails). The engine needs n_seq >= n_batch, n_ctx >=
// n_prompt + n_gen + n_verify and max_batch >= max(n_prompt, n_batch *
// (1 + n_verify)).
// pp_cpu_ms and tg_cpu_ms (NULL: not wanted) receive the median process CPU
// time per token of each phase, every thread's: on a machine shared with
// other work it moves far less than the wall-clock speeds.
mc_err_t mc_bench_speed(mc_engine_t *e, const mc_bench_shape_t *sh, int reps, double *pp_tok_s, double *tg_tok_s,
                        double *pp_cpu_ms, double *tg_cpu_ms, char *err);

typedef struct {
    const char *model;        // path (borrowed from the options)
    int n_threads;
    uint32_t n_prompt, n_gen, n_batch, n_verify;
    bool no_head;             // --no-head: the generation figure leaves the output head out
    bool pipeline;            // --pipeline: the engine pipelined its passes
    int reps;
    double pp_tok_s;          // prompt tokens per second (median)
    double tg_tok_s;          // generated tokens per second (median)
    double pp_cpu_ms, tg_cpu_ms; // process CPU ms per prompt / generated token (medians)
    double mem_bw_gb_s;       // measured read bandwidth, 1e9 bytes/s
    size_t bw_bytes;          // bandwidth buffer used
    uint64_t bytes_per_token; // weight bytes one generated token reads
    double tg_bound_tok_s;    // mem_bw / bytes_per_token
    double peak_rss_mb;       // this process's peak RSS, MiB
    double file_mb;           // model file, MiB
    double experts_mb;        // its experts (all layers), MiB as an expert store holds them
    double kv_mb;             // KV cache, MiB
    mc_dtype_t kv_type;       // its values
    mc_isa_t isa;             // kernels serving the expert weights
    double load_ms;           // engine setup and weight repacking (mc_model_repack), ms
    double repack_ms;         // of which repacking, ms
    double repacked_mb;       // weights repacked, MiB
    // Under --mem-limit: the store's counters over every run (warm-up
    // included) and the tokens those runs evaluated (prompt and generated).
    bool store;
    uint32_t mem_limit_mb;
    mc_store_policy_t mem_policy;
    int mem_prefetch;
    bool cold;
    mc_expert_store_stats_t store_stats;
    uint64_t tokens;
} mc_bench_result_t;

// The whole model benchmark on o->model (which must be set): open the model,
// measure the bandwidth in a child, then build the engine and time it. Call
// it before this process starts any threads (the child is forked).
mc_err_t mc_bench_run(const mc_bench_opts_t *o, mc_bench_result_t *r, char *err);

// One JSON line (no newline) with the required keys first:
// model, threads, pp_tok_s, tg_tok_s, mem_bw_gb_s, bytes_per_token,
// tg_bound_tok_s, peak_rss_mb; then tg_ratio, isa, pp_tokens, tg_tokens,
// reps, bw_buffer_mb, file_mb, kv_mb, kv_type, experts_mb, verify, load_ms, repack_ms, repacked_mb; under
// --mem-limit then mem_limit_mb, mem_policy, mem_prefetch, cold, hits, misses,
// hit_rate, mb_read, reads, read_ms, stall_ms_per_token, read_ahead, read_ahead_used,
// evictions, read_errors, and per predictor pred_<name>_hit (of the experts
// used, the share it predicted) and pred_<name>_precision.
// MC_ERR_ARG when cap is too small.
mc_err_t mc_bench_json(const mc_bench_result_t *r, char *buf, size_t cap, char *err);

// The readable table.
void mc_bench_print(const mc_bench_result_t *r, FILE *f);

typedef struct {
    mc_dtype_t type;
    uint32_t n_in, n_out;
    size_t bytes;        // matrix bytes
    uint32_t copies;     // copies cycled through so that no product hits the cache
    mc_isa_t isa;        // what MC_ISA_BEST gives for this type
    double scalar_gb_s;  // 1 thread, scalar dot per row
    double best_gb_s;    // 1 thread, best-ISA dot per row
    int n_threads;
    double mt1_gb_s;     // mc_matmul_f32, best ISA, pool of 1
    double mtn_gb_s;     // the same with a pool of n_threads
} mc_bench_kernel_t;

typedef struct {
    mc_dtype_t type;   // weight type
    uint32_t n_in;     // columns, a multiple of the type's block
    uint32_t n_out;    // rows
    size_t span_bytes; // copy the matrix until the copies span this (0: one copy)
    double sample_s;   // each sample repeats products for at least this long (0: one)
    int n_threads;     // for the threaded variant
    int reps;          // samples; the median is reported
} mc_bench_kernel_cfg_t;

// Matrix-vector products with a random (n_out, n_in) matrix, in GB/s of
// weight bytes read: median of reps samples after a warm-up product. Each
// product reads the next copy of the matrix, so with a span beyond the
// last-level cache every product streams its weights from memory.
mc_err_t mc_bench_kernel(const mc_bench_kernel_cfg_t *cfg, mc_bench_kernel_t *out, char *err);

// One JSON line (no newline) per kernel result. MC_ERR_ARG when cap is too small.
mc_err_t mc_bench_kernel_json(const mc_bench_kernel_t *k, char *buf, size_t cap, char *err);

#endif
