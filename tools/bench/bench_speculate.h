/*
 * bench_speculate: what speculative decoding gains end to end (moe-bench
 * --corpus FILE --speculate K).
 *
 * Every passage of a corpus (blank lines between passages, as the files
 * in deploy/corpus) is a prompt; each is generated n_gen tokens long (EOS
 * ignored) through the scheduler, as a coordinator generates it: once
 * without speculation and once with drafts of up to K tokens (draft.h, K
 * starting at half of it, as moe-coordinator --speculate K), one after the
 * other, greedy and then with seeded sampling (the sampler's defaults, a
 * fixed seed per prompt), both with o->repeat_penalty. Over reps
 * repetitions after a warm-up the generation speeds (tokens after the first
 * one over the time from the first one, the whole corpus summed, as
 * moe-coordinator reports a generation) give medians per way and the median
 * of each repetition's on/off ratio; the speculative runs' drafts give the
 * guesses kept per proposed and per generation step.
 *
 * Speculative decoding promises the tokens of decoding one at a time: every
 * run's ids, with or without speculation and in every repetition, are
 * compared with the first run without speculation of that prompt and way,
 * and the first difference fails the benchmark with the prompt and position
 * named.
 */
#ifndef MC_BENCH_SPECULATE_H
#define MC_BENCH_SPECULATE_H

#include <stdint.h>
#include <stdio.h>

#include "bench.h"
#include "scheduler.h"

#define MC_BENCH_SPEC_MAX_PROMPTS 64 // passages of a corpus, at most

// One prompt's figures in one way (greedy or seeded), from one corpus pass.
typedef struct {
    uint32_t prompt_tokens;
    uint32_t tokens;            // generated (n_gen unless the context ran out)
    uint32_t steps_off, steps_on; // generation passes after the first token, without and with drafts
    mc_spec_stats_t spec;       // the drafts of the speculative run
} mc_bench_spec_prompt_t;

typedef struct {
    double off_tok_s, on_tok_s; // medians over repetitions (the corpus's tokens after each first one / time)
    double ratio;               // median of each repetition's on / off
    double off_cpu_ms, on_cpu_ms; // this process's CPU time per generated token (medians): what a stopped or
                                  // crowded-out process did not spend (the nodes' work not included)
    uint64_t tokens;            // generated per corpus pass, each way
    uint64_t steps_off, steps_on; // generation passes per corpus pass
    mc_spec_stats_t spec;       // drafts per corpus pass with speculation
    mc_bench_spec_prompt_t prompt[MC_BENCH_SPEC_MAX_PROMPTS];
} mc_bench_spec_way_t;

typedef struct {
    const char *model, *corpus, *cluster; // borrowed from the options (cluster NULL: local experts)
    int n_threads, reps;
    uint32_t k;           // --speculate: guesses per step at most
    uint32_t n_gen;       // tokens per prompt
    float repeat_penalty; // the sampler's, both ways (1: off)
    uint32_t n_prompts;   // passages of the corpus
    uint64_t prompt_tokens; // all of them
    uint64_t compared;    // runs whose ids were compared with the first (all identical, or the run failed)
    mc_bench_spec_way_t greedy, seeded;
} mc_bench_spec_t;

// The benchmark of o->corpus on o->model (set) with o->speculate guesses,
// o->n_gen tokens per prompt, o->reps repetitions after a warm-up (the
// first prompt both ways), through o->attach when set. MC_ERR_FORMAT for a
// corpus without passages or with more than MC_BENCH_SPEC_MAX_PROMPTS;
// MC_ERR_RANGE when a run with speculation gave other ids than without it
// (err names the prompt, the way and the first differing token). *r is
// written only on success.
mc_err_t mc_bench_speculate(const mc_bench_opts_t *o, mc_bench_spec_t *r, char *err);

// The readable table: both ways, then every prompt.
void mc_bench_speculate_print(const mc_bench_spec_t *r, FILE *f);

// One JSON line (no newline): model, corpus, cluster, threads, reps, k,
// repeat_penalty, tokens_per_prompt, prompts, prompt_tokens, compared, identical (true), then
// for greedy_ and seeded_: off_tok_s, on_tok_s, ratio, tokens, steps_off,
// steps_on, drafts, proposed, accepted, accept_rate, kept_per_step,
// tokens_per_step, off_cpu_ms, on_cpu_ms. MC_ERR_ARG when cap is too small.
mc_err_t mc_bench_speculate_json(const mc_bench_spec_t *r, char *buf, size_t cap, char *err);

#endif
