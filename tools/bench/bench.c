/*
 * bench: flag parsing, the bandwidth probe, the model run and the kernel
 * micro-benchmark of moe-bench, with their JSON and table output.
 *
 * The bandwidth probe is written to reach what the hardware can stream: a
 * buffer several times the last-level cache, pre-faulted (and on huge pages
 * where the kernel allows), split between pool threads that each sum their
 * share with eight independent accumulators over 32-byte (AVX2) or 8-byte
 * (portable) loads. The sum is checked against its closed form, which both
 * validates the loop and keeps the compiler from dropping the reads.
 */
#include "bench.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "flags.h"
#include "matmul.h"
#include "parse.h"
#include "pool.h"
#include "prefetch.h"
#include "quant.h"
#include "rng.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define S_MIB (1024.0 * 1024.0)
#define S_GIB ((size_t)1 << 30)
#define S_UNIT_WORDS 32       // 64-bit words per 256-byte unit of the bandwidth loop
#define S_LINE_WORDS 8        // one 64-byte cache line of per-thread sums
#define S_HUGE_ALIGN ((size_t)2 << 20)
#define S_KERNEL_TEMPLATES 16 // distinct random rows tiled over a kernel-bench matrix
// Fixed seeds: every run, and every build, times the same prompts and rows.
#define S_PROMPT_SEED 0x9E3779B97F4A7C15ull
#define S_KERNEL_SEED 0x2545F4914F6CDD1Dull

// Elapsed seconds, never 0: a clock tick coarser than the work must not
// turn a rate into infinity (which JSON cannot carry).
static double s_since(double t0) {
    const double dt = mc_clock_s() - t0;
    return dt > 1e-9 ? dt : 1e-9;
}

// n values from N(0, 1).
static void s_gauss_fill(mc_rng_t *r, float *x, uint32_t n) {
    float spare;
    for (uint32_t i = 0; i < n; i += 2) mc_rng_gauss2(r, &x[i], i + 1 < n ? &x[i + 1] : &spare);
}

// --- options ------------------------------------------------------------------

// --type T: a weight type, by name.
static mc_err_t s_parse_type(const char *flag, const char *v, void *field, char *err) {
    mc_dtype_t t;
    const mc_dtype_traits_t *tr = mc_dtype_from_name(v, &t) ? mc_dtype_traits(t) : NULL;
    if (!tr || !tr->weight) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a weight type", flag, v);
    *(mc_dtype_t *)field = t;
    return MC_OK;
}

// --bw-mib N: MiB into bytes, up to 1 TiB, or what a size_t holds on 32-bit machines.
static mc_err_t s_parse_mib(const char *flag, const char *v, void *field, char *err) {
    const int64_t hi = (int64_t)((SIZE_MAX >> 20) < (1u << 20) ? (SIZE_MAX >> 20) : (1u << 20));
    int64_t n;
    mc_err_t rc = mc_parse_i64(flag, v, 16, hi, &n, err);
    if (!rc) *(size_t *)field = (size_t)n << 20;
    return rc;
}

// --mem-policy lru|lfu|hot
static mc_err_t s_parse_policy(const char *flag, const char *v, void *field, char *err) {
    if (mc_store_policy_parse(v, field)) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not lru, lfu or hot", flag, v);
    return MC_OK;
}

// --mem-prefetch router|transitions|none
static mc_err_t s_parse_prefetch(const char *flag, const char *v, void *field, char *err) {
    mc_store_pred_t p;
    if (!strcmp(v, "none")) *(int *)field = -1;
    else if (!mc_store_pred_parse(v, &p)) *(int *)field = (int)p;
    else return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not router, transitions or none", flag, v);
    return MC_OK;
}

// The rows' order is their bit in s_given (mc_flags_parse); see the checks below.
// --kv-type f32|f16 into an mc_dtype_t.
static mc_err_t s_parse_kv_type(const char *flag, const char *v, void *field, char *err) {
    if (mc_engine_kv_type_parse(v, field)) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not f32 or f16", flag, v);
    return MC_OK;
}

enum { S_F_MODEL, S_F_CLUSTER, S_F_TYPE, S_F_THREADS, S_F_P, S_F_N, S_F_BATCH, S_F_VERIFY, S_F_ROUTING, S_F_STATS, S_F_REPS, S_F_BW,
       S_F_NO_REPACK, S_F_JSON, S_F_KERNELS, S_F_CONSTRAIN, S_F_MEM, S_F_MEM_POLICY, S_F_MEM_PREFETCH, S_F_COLD,
       S_F_KV_TYPE, S_F_NO_HEAD, S_F_PIPELINE, S_F_CORPUS, S_F_SPECULATE, S_F_REPEAT };
#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(mc_bench_opts_t, field)
static const mc_flag_t s_flags[] = {
    [S_F_MODEL] = {S_ROW("--model", "FILE", MC_FLAG_FILE, model),
                   .help = "GGUF model (default: the benchmark model, generated once into\n"
                           "$MC_CACHE_DIR, else $XDG_CACHE_HOME/moe-cluster, else ~/.cache/moe-cluster)"},
    [S_F_CLUSTER] = {S_ROW("--cluster", "FILE", MC_FLAG_FILE, cluster),
                     .help = "run the experts on the nodes of a cluster file (see moe-coordinator);\n"
                             "--model overrides the file's model"},
    [S_F_TYPE] = {S_ROW("--type", "T", MC_FLAG_CUSTOM, type), .parse = s_parse_type,
                  .help = "weight type of the generated model: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1\n"
                          "Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K (default Q4_0)"},
    [S_F_THREADS] = {S_ROW("--threads", "N", MC_FLAG_INT, n_threads), MC_FLAG_DEF_THREADS, 1, 512,
                     .help = "compute threads, also for the bandwidth test"},
    [S_F_P] = {S_ROW("-p", "N", MC_FLAG_U32, n_prompt), 64, 1, 65536, .help = "prompt tokens, evaluated as one batch"},
    [S_F_N] = {S_ROW("-n", "N", MC_FLAG_U32, n_gen), 64, 1, 65536,
               .help = "tokens generated one at a time after the prompt"},
    [S_F_BATCH] = {S_ROW("--batch", "B", MC_FLAG_U32, n_batch), 1, 1, 256,
                   .help = "B sequences, each its own prompt, then decoded together one token\n"
                           "per sequence per step; speeds count every sequence's tokens"},
    [S_F_VERIFY] = {S_ROW("--verify", "K", MC_FLAG_U32, n_verify), 0, 0, 64,
                    .help = "each generation step also verifies K guessed tokens per sequence, all\n"
                            "rejected: what a failed speculative draft costs (tokens/s still count\n"
                            "one token per sequence a step)"},
    [S_F_ROUTING] = {S_ROW("--routing-stats", "FILE", MC_FLAG_FILE, routing_stats),
                     .help = "write what the router chose (rows per expert, pairs, locality,\n"
                             "a trace) as JSON for moe-plan"},
    [S_F_STATS] = {S_ROW("--stats-json", "FILE", MC_FLAG_FILE, stats_json),
                   .help = "with --cluster: the per-node statistics after the run"},
    [S_F_REPS] = {S_ROW("--reps", "N", MC_FLAG_INT, reps), 3, 1, 1000,
                  .help = "timed repetitions after one warm-up; medians are reported"},
    [S_F_BW] = {S_ROW("--bw-mib", "N", MC_FLAG_CUSTOM, bw_bytes), .parse = s_parse_mib,
                .help = "bandwidth buffer in MiB (default: 4 x the last-level cache, at least\n"
                        "1024, at most a quarter of RAM); measured in a child process so it\n"
                        "does not count in the reported peak RSS"},
    [S_F_NO_REPACK] = {S_ROW("--no-repack", NULL, MC_FLAG_SWITCH, no_repack),
                       .help = "multiply Q4_0, Q8_0, Q4_K and Q6_K weights from the file's rows instead of\n"
                               "repacking them at load (the same results, for comparison)"},
    [S_F_NO_HEAD] = {S_ROW("--no-head", NULL, MC_FLAG_SWITCH, no_head),
                     .help = "generation steps compute no logits (no output head, no argmax; each\n"
                             "sequence's next id a fixed function of its last): the head's share of\n"
                             "a step, against the same run without this"},
    [S_F_PIPELINE] = {S_ROW("--pipeline", NULL, MC_FLAG_SWITCH, pipeline),
                      .help = "with --cluster: cut each pass in two groups of rows and compute one\n"
                              "group's attention while the other's experts are on the wire (the same\n"
                              "tokens)"},
    [S_F_JSON] = {S_ROW("--json", NULL, MC_FLAG_SWITCH, json), .help = "print one JSON line instead of the table"},
    [S_F_KERNELS] = {S_ROW("--kernels", NULL, MC_FLAG_SWITCH, kernels),
                     .help = "kernel micro-benchmark: a 4096 x 4096 matrix-vector product per weight\n"
                             "type (cycling through copies spanning twice the last-level cache),\n"
                             "scalar vs best instruction set (1 thread) and 1 vs N threads"},
    [S_F_CONSTRAIN] = {S_ROW("--constrain", NULL, MC_FLAG_SWITCH, constrain),
                       .help = "constrained decoding: free vs JSON-Schema-constrained generation speed,\n"
                               "and the token masks' time per token on the model's vocabulary and on\n"
                               "a synthetic 151936-token one, against the step time (-n tokens)"},
    [S_F_MEM] = {S_ROW("--mem-limit", "MB", MC_FLAG_U32, mem_limit_mb), 0, 0, 16777216,
                 .help = "keep at most MB MiB of expert weights in memory and read the others\n"
                         "from the file when used (expert store; hits, misses, reads and stalls\n"
                         "reported); 0: every expert resident"},
    [S_F_MEM_POLICY] = {S_ROW("--mem-policy", "P", MC_FLAG_CUSTOM, mem_policy), .parse = s_parse_policy,
                        .help = "with --mem-limit: which expert leaves, lru, lfu or hot (default lfu)"},
    [S_F_MEM_PREFETCH] = {S_ROW("--mem-prefetch", "F", MC_FLAG_CUSTOM, mem_prefetch), .parse = s_parse_prefetch,
                          .help = "with --mem-limit: read ahead what the next layer's router (router),\n"
                                  "the transitions seen (transitions) or nothing (none) predicts\n"
                                  "(default none); both predictors are scored either way"},
    [S_F_COLD] = {S_ROW("--cold", NULL, MC_FLAG_SWITCH, cold),
                  .help = "drop the model file from the page cache first and, with --mem-limit,\n"
                          "keep expert reads out of it: every miss reads the disk"},
    [S_F_KV_TYPE] = {S_ROW("--kv-type", "T", MC_FLAG_CUSTOM, kv_type), .parse = s_parse_kv_type,
                     .help = "KV-cache values: f32 (default) or f16 (half the memory)"},
    [S_F_CORPUS] = {S_ROW("--corpus", "FILE", MC_FLAG_FILE, corpus),
                    .help = "speculative decoding end to end: every passage of FILE (blank lines\n"
                            "between passages) generated -n tokens through the scheduler without\n"
                            "and with --speculate K, alternating, greedy and seeded; speeds, guesses\n"
                            "kept, and exit 1 unless the tokens are identical both ways"},
    [S_F_SPECULATE] = {S_ROW("--speculate", "K", MC_FLAG_U32, speculate), 0, 1, 64,
                       .help = "with --corpus: guess up to K tokens a step (as moe-coordinator\n"
                               "--speculate K)"},
    [S_F_REPEAT] = {S_ROW("--repeat-penalty", "R", MC_FLAG_F32, repeat_penalty), .flo = 0.01, .fhi = 100,
                    .help = "with --corpus: the sampler's repetition penalty over the last 64 tokens in\n"
                            "both ways, 1 = off; below 1 it favours them: a random-weight model's\n"
                            "answers then fall into loops, a stand-in for a model that repeats"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])
#define S_BIT(f) ((uint64_t)1 << (f))

void mc_bench_opts_init(mc_bench_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->type = MC_DTYPE_Q4_0;
    o->mem_policy = MC_STORE_LFU;
    o->mem_prefetch = -1;
    o->repeat_penalty = 1.0f;
    mc_flags_init(s_flags, S_N_FLAGS, o);
}

void mc_bench_usage(FILE *f) {
    fprintf(f, "usage: moe-bench [--model FILE | --type T] [--cluster FILE] [options]\n"
               "       moe-bench --kernels [--threads N] [--reps N] [--json]\n"
               "       moe-bench --constrain [--model FILE | --type T] [--threads N] [-n N] [--reps N] [--json]\n"
               "       moe-bench --corpus FILE --speculate K [--model FILE | --type T] [--cluster FILE]\n"
               "                 [--repeat-penalty R] [--threads N] [-n N] [--reps N] [--json]\n"
               "Measure prompt and generation speed, memory read bandwidth and the generation\n"
               "speed it bounds (bandwidth / weight bytes per token).\n"
               "\n");
    mc_flags_usage(f, s_flags, S_N_FLAGS, 17, NULL);
}

mc_err_t mc_bench_parse(int argc, char **argv, mc_bench_opts_t *o, char *err) {
    mc_bench_opts_t r = *o;
    bool help;
    uint64_t given;
    mc_err_t rc = mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &r, &help, &given, err);
    if (rc) return rc;
    if (help) {
        o->help = true;
        return MC_OK;
    }
    // Everything but the thread and repetition counts and the switches is about the model run.
    const uint64_t kernel_flags =
        S_BIT(S_F_THREADS) | S_BIT(S_F_REPS) | S_BIT(S_F_JSON) | S_BIT(S_F_KERNELS) | S_BIT(S_F_NO_REPACK);
    if ((given & S_BIT(S_F_TYPE)) && r.model)
        return mc_err_set(err, MC_ERR_ARG, "--type picks the generated model; it does not apply to --model");
    if (r.stats_json && !r.cluster) return mc_err_set(err, MC_ERR_ARG, "--stats-json needs --cluster");
    if ((given & (S_BIT(S_F_MEM_POLICY) | S_BIT(S_F_MEM_PREFETCH))) && !r.mem_limit_mb)
        return mc_err_set(err, MC_ERR_ARG, "--mem-policy and --mem-prefetch go with --mem-limit");
    const uint64_t constrain_flags = S_BIT(S_F_MODEL) | S_BIT(S_F_TYPE) | S_BIT(S_F_THREADS) | S_BIT(S_F_N) |
                                     S_BIT(S_F_REPS) | S_BIT(S_F_JSON) | S_BIT(S_F_CONSTRAIN) | S_BIT(S_F_NO_REPACK);
    if (r.constrain && (given & ~constrain_flags))
        return mc_err_set(err, MC_ERR_ARG, "--constrain takes only --model, --type, --threads, -n, --reps and --json");
    if (r.constrain && r.kernels) return mc_err_set(err, MC_ERR_ARG, "--constrain and --kernels are separate runs");
    const uint64_t corpus_flags = S_BIT(S_F_MODEL) | S_BIT(S_F_TYPE) | S_BIT(S_F_CLUSTER) | S_BIT(S_F_THREADS) |
                                  S_BIT(S_F_N) | S_BIT(S_F_REPS) | S_BIT(S_F_JSON) | S_BIT(S_F_NO_REPACK) |
                                  S_BIT(S_F_CORPUS) | S_BIT(S_F_SPECULATE) | S_BIT(S_F_REPEAT);
    if ((given & S_BIT(S_F_REPEAT)) && !r.corpus) return mc_err_set(err, MC_ERR_ARG, "--repeat-penalty goes with --corpus");
    if (!r.corpus != !(given & S_BIT(S_F_SPECULATE)))
        return mc_err_set(err, MC_ERR_ARG, "--corpus and --speculate go together");
    if (r.corpus && (given & ~corpus_flags))
        return mc_err_set(err, MC_ERR_ARG,
                          "--corpus takes only --speculate, --repeat-penalty, --model, --type, --cluster, --threads, -n, "
                          "--reps, --no-repack and --json");
    if (r.corpus && (r.kernels || r.constrain))
        return mc_err_set(err, MC_ERR_ARG, "--corpus, --constrain and --kernels are separate runs");
    if (r.kernels && (given & ~kernel_flags))
        return mc_err_set(err, MC_ERR_ARG, "--kernels takes only --threads, --reps and --json");
    *o = r;
    return MC_OK;
}

// --- statistics -------------------------------------------------------------------

static int s_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double mc_bench_median(double *v, size_t n) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, s_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// --- memory bandwidth -----------------------------------------------------------

typedef uint64_t (*s_sum_fn)(const uint64_t *p, size_t units);

static uint64_t s_sum_portable(const uint64_t *p, size_t units) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (size_t u = 0; u < units; u++, p += S_UNIT_WORDS)
        for (int j = 0; j < S_UNIT_WORDS; j += 8) {
            a0 += p[j + 0], a1 += p[j + 1], a2 += p[j + 2], a3 += p[j + 3];
            a4 += p[j + 4], a5 += p[j + 5], a6 += p[j + 6], a7 += p[j + 7];
        }
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

#if defined(__x86_64__)
// One 256-byte unit is eight 32-byte loads into eight independent sums, so
// no add waits on the previous one and the loads can all be in flight.
__attribute__((target("avx2"))) static uint64_t s_sum_avx2(const uint64_t *p, size_t units) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const __m256i *v = (const __m256i *)p;
    for (size_t u = 0; u < units; u++, v += 8) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + 0));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + 3));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256(v + 4));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256(v + 5));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256(v + 6));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256(v + 7));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)),
                          _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7)));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

static s_sum_fn s_sum_pick(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return s_sum_avx2;
#endif
    return s_sum_portable;
}

typedef struct {
    uint64_t *buf;  // (units, S_UNIT_WORDS)
    size_t units;
    s_sum_fn sum;
    uint64_t *sums; // (nth, S_LINE_WORDS): thread t writes sums[t * S_LINE_WORDS]
} s_bw_job_t;

static void s_share(size_t units, int ith, int nth, size_t *lo, size_t *hi) {
    *lo = (size_t)((uint64_t)units * (uint64_t)ith / (uint64_t)nth);
    *hi = (size_t)((uint64_t)units * (uint64_t)(ith + 1) / (uint64_t)nth);
}

// Word i holds i; each thread writes (and so first-touches) its own share.
static void s_bw_fill(void *arg, int ith, int nth) {
    s_bw_job_t *j = arg;
    size_t lo, hi;
    s_share(j->units, ith, nth, &lo, &hi);
    for (size_t w = lo * S_UNIT_WORDS; w < hi * S_UNIT_WORDS; w++) j->buf[w] = (uint64_t)w;
}

static void s_bw_sum(void *arg, int ith, int nth) {
    s_bw_job_t *j = arg;
    size_t lo, hi;
    s_share(j->units, ith, nth, &lo, &hi);
    j->sums[(size_t)ith * S_LINE_WORDS] = j->sum(j->buf + lo * S_UNIT_WORDS, hi - lo);
}

mc_err_t mc_bench_mem_bw(int n_threads, size_t bytes, int passes, double *gb_s, char *err) {
    if (n_threads < 1 || passes < 1) return mc_err_set(err, MC_ERR_ARG, "bandwidth: bad thread or pass count");
    const size_t unit = S_UNIT_WORDS * sizeof(uint64_t);
    if (bytes / unit < (size_t)n_threads)
        return mc_err_set(err, MC_ERR_ARG, "bandwidth buffer of %zu bytes is too small for %d threads", bytes,
                          n_threads);
    s_bw_job_t j = {.units = bytes / unit, .sum = s_sum_pick()};
    bytes = j.units * unit;
    void *mem = NULL;
    if (posix_memalign(&mem, S_HUGE_ALIGN, bytes) != 0)
        return mc_err_set(err, MC_ERR_NOMEM, "cannot allocate the %zu MiB bandwidth buffer", bytes >> 20);
    // Huge pages keep TLB misses out of the measurement; a no-op where unsupported.
    (void)madvise(mem, bytes, MADV_HUGEPAGE);
    j.buf = mem;
    j.sums = calloc((size_t)n_threads * S_LINE_WORDS, sizeof *j.sums);
    mc_pool_t *pool = j.sums ? mc_pool_new(n_threads) : NULL;
    if (!pool) {
        free(j.sums);
        free(mem);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory starting %d bandwidth threads", n_threads);
    }
    mc_pool_run(pool, s_bw_fill, &j);
    // Sum of 0..N-1 modulo 2^64, halving whichever factor is even.
    const uint64_t n = (uint64_t)j.units * S_UNIT_WORDS;
    const uint64_t expect = n % 2 ? n * ((n - 1) / 2) : (n / 2) * (n - 1);
    double best = 0.0;
    for (int pass = 0; pass < passes; pass++) {
        const double t0 = mc_clock_s();
        mc_pool_run(pool, s_bw_sum, &j);
        const double dt = s_since(t0);
        uint64_t total = 0;
        for (int t = 0; t < n_threads; t++) total += j.sums[(size_t)t * S_LINE_WORDS];
        assert(total == expect);
        (void)expect;
        (void)total;
        const double rate = (double)bytes / dt * 1e-9;
        if (rate > best) best = rate;
    }
    mc_pool_destroy(&pool);
    free(j.sums);
    free(mem);
    *gb_s = best;
    return MC_OK;
}

typedef struct {
    mc_err_t rc;
    double gb_s;
    char err[MC_ERR_LEN];
} s_bw_msg_t;

mc_err_t mc_bench_mem_bw_child(int n_threads, size_t bytes, int passes, double *gb_s, char *err) {
    int fds[2];
    if (pipe(fds) != 0) return mc_err_set(err, MC_ERR_IO, "pipe: %s", strerror(errno));
    const pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return mc_err_set(err, MC_ERR_IO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        s_bw_msg_t msg = {0};
        msg.rc = mc_bench_mem_bw(n_threads, bytes, passes, &msg.gb_s, msg.err);
        const uint8_t *p = (const uint8_t *)&msg;
        for (size_t off = 0; off < sizeof msg;) {
            const ssize_t w = write(fds[1], p + off, sizeof msg - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) _exit(1);
            off += (size_t)w;
        }
        _exit(0);
    }
    close(fds[1]);
    s_bw_msg_t msg;
    size_t got = 0;
    while (got < sizeof msg) {
        const ssize_t r = read(fds[0], (uint8_t *)&msg + got, sizeof msg - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got != sizeof msg || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return mc_err_set(err, MC_ERR_IO, "the bandwidth test process failed (out of memory?)");
    if (msg.rc != MC_OK) {
        msg.err[MC_ERR_LEN - 1] = '\0';
        return mc_err_set(err, msg.rc, "%s", msg.err);
    }
    *gb_s = msg.gb_s;
    return MC_OK;
}

size_t mc_bench_bw_default_bytes(void) {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    uint64_t want = llc > 0 ? 4 * (uint64_t)llc : 0;
    if (want < S_GIB) want = S_GIB;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
        const uint64_t quarter = (uint64_t)pages / 4 * (uint64_t)page;
        if (want > quarter) want = quarter;
    }
    if (want > SIZE_MAX / 2) want = SIZE_MAX / 2;
    return (size_t)want;
}

// --- the benchmark model ---------------------------------------------------------

mc_mkmodel_params_t mc_bench_model_params(mc_dtype_t type) { return mc_mkmodel_params_bench(type); }

mc_err_t mc_bench_cache_path(mc_dtype_t type, char *buf, size_t cap, char *err) {
    const mc_mkmodel_params_t p = mc_bench_model_params(type);
    char tname[16], name[64];
    snprintf(tname, sizeof tname, "%s", mc_dtype_name(type));
    for (char *c = tname; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    snprintf(name, sizeof name, "bench-%ux%ux%u-%s.gguf", p.dim, p.ffn, p.n_layer, tname);
    return mc_mkmodel_cache_path(name, buf, cap, err);
}

// --- the model run ------------------------------------------------------------------

static mc_err_t s_check_tokens(const mc_model_t *m, uint32_t n_prompt, uint32_t n_gen, char *err) {
    if (n_prompt == 0 || n_gen == 0)
        return mc_err_set(err, MC_ERR_ARG, "the benchmark needs at least one prompt and one generated token");
    if ((uint64_t)n_prompt + n_gen > m->hp.n_ctx_train)
        return mc_err_set(err, MC_ERR_RANGE, "%u prompt + %u generated tokens exceed the model's context length %u",
                          n_prompt, n_gen, m->hp.n_ctx_train);
    return MC_OK;
}

mc_engine_t *mc_bench_engine_new(const mc_model_t *m, int n_threads, const mc_bench_shape_t *sh, char *err) {
    if (s_check_tokens(m, sh->n_prompt, sh->n_gen + sh->n_verify, err)) return NULL;
    if (sh->n_batch == 0) {
        mc_err_set(err, MC_ERR_ARG, "the benchmark needs at least one sequence");
        return NULL;
    }
    mc_engine_params_t p = mc_engine_params_default();
    p.n_threads = n_threads;
    p.n_ctx = sh->n_prompt + sh->n_gen + sh->n_verify;
    p.n_seq = sh->n_batch;
    p.kv_type = sh->kv_type;
    p.pipeline = sh->pipeline;
    const uint32_t step = sh->n_batch * (1 + sh->n_verify);
    p.max_batch = sh->n_prompt > step ? sh->n_prompt : step; // a prompt, or a step, is one forward pass
    return mc_engine_new(m, &p, err);
}

static int32_t s_argmax(const float *v, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (int32_t)best;
}

// Process CPU time in seconds: all threads' work, whatever else the machine runs.
static double s_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

mc_err_t mc_bench_speed(mc_engine_t *e, const mc_bench_shape_t *sh, int reps, double *pp_tok_s, double *tg_tok_s,
                        double *pp_cpu_ms, double *tg_cpu_ms, char *err) {
    const uint32_t nv = mc_engine_model(e)->hp.n_vocab, B = sh->n_batch, n_prompt = sh->n_prompt, n_gen = sh->n_gen;
    const uint32_t R = 1 + sh->n_verify; // rows per sequence a step
    if (n_prompt == 0 || n_gen == 0 || B == 0 || reps < 1)
        return mc_err_set(err, MC_ERR_ARG, "the benchmark needs prompt and generated tokens, a sequence and a repetition");
    if ((uint64_t)n_prompt + n_gen + sh->n_verify > mc_engine_n_ctx(e))
        return mc_err_set(err, MC_ERR_RANGE, "%u + %u (+ %u guessed) tokens do not fit the engine's context of %u",
                          n_prompt, n_gen, sh->n_verify, mc_engine_n_ctx(e));
    if (B > mc_engine_n_seq(e) || n_prompt > mc_engine_max_batch(e) || (uint64_t)B * R > mc_engine_max_batch(e))
        return mc_err_set(err, MC_ERR_RANGE, "%u sequences of %u prompt tokens do not fit the engine (%u sequences, %u rows a pass)",
                          B, n_prompt, mc_engine_n_seq(e), mc_engine_max_batch(e));
    const uint32_t rows = n_prompt > B * R ? n_prompt : B * R;
    int32_t *ids = malloc((size_t)rows * sizeof *ids);
    uint32_t *seq = malloc((size_t)rows * sizeof *seq), *pos = malloc((size_t)rows * sizeof *pos);
    uint8_t *want = malloc(rows);
    float *logits = malloc((size_t)B * R * nv * sizeof *logits);
    double *pp = malloc((size_t)reps * 4 * sizeof *pp), *tg = pp ? pp + reps : NULL;
    double *ppc = pp ? pp + 2 * reps : NULL, *tgc = pp ? pp + 3 * reps : NULL;
    mc_err_t rc = MC_OK;
    if (!ids || !seq || !pos || !want || !logits || !pp) {
        rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto done;
    }
    // Run -1 is the warm-up: it faults in the weights and the KV cache.
    for (int r = -1; r < reps && !rc; r++) {
        double t0 = mc_clock_s(), c0 = s_cpu_s();
        for (uint32_t b = 0; b < B && !rc; b++) {
            // Fixed per sequence: every run evaluates the same prompts.
            mc_rng_t rng;
            const uint64_t part = b;
            mc_rng_seed(&rng, mc_rng_seed_of(S_PROMPT_SEED, &part, 1));
            for (uint32_t i = 0; i < n_prompt; i++) {
                ids[i] = (int32_t)(mc_rng_next(&rng) % nv);
                seq[i] = b, pos[i] = i, want[i] = i + 1 == n_prompt;
            }
            const mc_engine_batch_t batch = {ids, seq, pos, want, n_prompt};
            rc = mc_engine_decode(e, &batch, logits + (size_t)b * nv, err);
        }
        const double t_pp = s_since(t0), c_pp = s_cpu_s() - c0;
        t0 = mc_clock_s(), c0 = s_cpu_s();
        for (uint32_t i = 0; i < n_gen && !rc; i++) {
            // Sequence b's greedy token from its first row's logits (row b
            // after the prompts, b * R after a step), then R - 1 guesses
            // that differ from it.
            for (uint32_t b = 0; b < B; b++) {
                // Without the head, the next id comes from the last one (a
                // fixed walk over the vocabulary) instead of the logits.
                const int32_t next = !sh->no_head || i == 0 ? s_argmax(logits + (size_t)b * (i ? R : 1) * nv, nv)
                                                            : (int32_t)(((uint64_t)ids[b * R] * 7919u + 1u) % nv);
                for (uint32_t j = 0; j < R; j++) {
                    const uint32_t r = b * R + j;
                    ids[r] = j ? (int32_t)((uint32_t)(next + j) % nv) : next;
                    seq[r] = b, pos[r] = n_prompt + i + j, want[r] = !sh->no_head;
                }
            }
            const mc_engine_batch_t batch = {ids, seq, pos, want, B * R};
            rc = mc_engine_decode(e, &batch, logits, err);
        }
        const double t_tg = s_since(t0), c_tg = s_cpu_s() - c0;
        if (r >= 0) {
            pp[r] = (double)B * n_prompt / t_pp;
            tg[r] = (double)B * n_gen / t_tg;
            ppc[r] = 1e3 * c_pp / ((double)B * n_prompt);
            tgc[r] = 1e3 * c_tg / ((double)B * n_gen);
        }
    }
    if (!rc) {
        *pp_tok_s = mc_bench_median(pp, (size_t)reps);
        *tg_tok_s = mc_bench_median(tg, (size_t)reps);
        if (pp_cpu_ms) *pp_cpu_ms = mc_bench_median(ppc, (size_t)reps);
        if (tg_cpu_ms) *tg_cpu_ms = mc_bench_median(tgc, (size_t)reps);
    }
done:
    free(ids);
    free(seq);
    free(pos);
    free(want);
    free(logits);
    free(pp);
    return rc;
}

mc_err_t mc_bench_repack(const mc_bench_opts_t *o, mc_model_t *m, mc_engine_t *e, char *err) {
    if (o->no_repack) return MC_OK;
    // As a coordinator's session does (coordinator/session.c): everything,
    // or with a cluster attached the non-expert matrices and the experts
    // computed here (the cluster file's local ones). The others are the
    // nodes': a lost node's share computed here reads the file's rows, the
    // same bits.
    const size_t cells = (size_t)m->hp.n_layer * m->hp.n_expert;
    uint8_t *held = o->attach ? calloc(cells + 1, 1) : NULL;
    if (o->attach && !held) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t c = 0; held && c < cells; c++)
        held[c] = !o->local || o->local(o->attach_ctx, (uint32_t)(c / m->hp.n_expert), (uint32_t)(c % m->hp.n_expert));
    const mc_err_t rc = mc_model_repack(m, mc_engine_matmul(e), true, held, err);
    free(held);
    return rc;
}

mc_err_t mc_bench_run(const mc_bench_opts_t *o, mc_bench_result_t *r, char *err) {
    assert(o->model);
    mc_bench_result_t res = {
        .model = o->model,
        .n_threads = o->n_threads,
        .n_prompt = o->n_prompt,
        .n_gen = o->n_gen,
        .n_batch = o->n_batch ? o->n_batch : 1,
        .n_verify = o->n_verify,
        .no_head = o->no_head,
        .pipeline = o->pipeline,
        .reps = o->reps,
        .bw_bytes = o->bw_bytes ? o->bw_bytes : mc_bench_bw_default_bytes(),
    };
    // Opening maps the file without reading the weights, so the bandwidth
    // child can be forked after it: a bad file or token count fails fast,
    // and the engine's threads do not exist yet.
    if (o->cold) { // advice: clean pages of a file nobody maps leave the page cache
        const int fd = open(o->model, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), close(fd);
    }
    mc_model_t *m = mc_model_open(o->model, err);
    if (!m) return mc_err_code(err, MC_ERR_FORMAT);
    mc_engine_t *e = NULL;
    mc_expert_store_t *store = NULL;
    mc_prefetch_t *prefetch = NULL;
    mc_err_t rc = s_check_tokens(m, o->n_prompt, o->n_gen, err);
    if (!rc) rc = mc_bench_mem_bw_child(o->n_threads, res.bw_bytes, MC_BENCH_BW_PASSES, &res.mem_bw_gb_s, err);
    const double t_load = mc_clock_s();
    const mc_bench_shape_t shape = {o->n_prompt, o->n_gen, res.n_batch, o->n_verify, o->kv_type, o->no_head, o->pipeline};
    if (!rc && !(e = mc_bench_engine_new(m, o->n_threads, &shape, err))) rc = mc_err_code(err, MC_ERR_NOMEM);
    if (!rc && o->mem_limit_mb) {
        // As moe-coordinator --mem-limit does (coordinator/session.c):
        // every expert through the store, before repacking.
        mc_expert_store_params_t sp = mc_expert_store_params_default();
        sp.budget_bytes = (uint64_t)o->mem_limit_mb << 20;
        sp.policy = o->mem_policy;
        sp.repack = !o->no_repack;
        sp.uncached = o->cold;
        sp.prefetch = o->mem_prefetch >= 0;
        sp.prefetch_from = o->mem_prefetch >= 0 ? (mc_store_pred_t)o->mem_prefetch : MC_STORE_PRED_ROUTER;
        if (!(store = mc_expert_store_new(m, mc_engine_matmul(e), &sp, err)) ||
            !(prefetch = mc_prefetch_new(e, store, err)))
            rc = MC_ERR_ARG;
        else m->store = store;
    }
    if (!rc) {
        const double t_repack = mc_clock_s();
        rc = mc_bench_repack(o, m, e, err);
        res.repack_ms = (mc_clock_s() - t_repack) * 1e3;
        res.load_ms = (mc_clock_s() - t_load) * 1e3;
        res.repacked_mb = (double)m->packed_bytes / S_MIB;
    }
    bool attached = false;
    if (!rc && o->attach) attached = !(rc = o->attach(o->attach_ctx, e, m, err));
    if (!rc) rc = mc_bench_speed(e, &shape, o->reps, &res.pp_tok_s, &res.tg_tok_s, &res.pp_cpu_ms, &res.tg_cpu_ms, err);
    if (!rc) {
        res.bytes_per_token = mc_model_bytes_per_token(m);
        assert(res.bytes_per_token > 0);
        res.tg_bound_tok_s = res.mem_bw_gb_s * 1e9 / (double)res.bytes_per_token;
        res.file_mb = (double)mc_gguf_size(m->gguf) / S_MIB;
        res.experts_mb = (double)mc_expert_store_total_bytes(m, NULL) / S_MIB;
        res.kv_mb = (double)res.n_batch * (double)mc_engine_kv_bytes(e, mc_engine_n_ctx(e)) / S_MIB;
        res.kv_type = mc_engine_kv_type(e);
        // What serves the expert weights, the bulk of the traffic (types
        // without a faster version fall back to scalar).
        res.isa = mc_kernel_get(m->layers[0].experts[0].gate.type, mc_matmul_isa(mc_engine_matmul(e)))->isa;
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) res.peak_rss_mb = (double)ru.ru_maxrss / 1024.0; // KiB on Linux
        if (store) {
            res.store = true;
            res.mem_limit_mb = o->mem_limit_mb, res.mem_policy = o->mem_policy, res.mem_prefetch = o->mem_prefetch;
            res.cold = o->cold;
            mc_expert_store_stats(store, &res.store_stats);
            res.tokens = (uint64_t)(o->reps + 1) * res.n_batch * (o->n_prompt + (uint64_t)o->n_gen * (1 + o->n_verify));
        }
        *r = res;
    }
    if (attached) o->detach(o->attach_ctx);
    mc_prefetch_destroy(&prefetch);
    mc_engine_destroy(&e);
    m->store = NULL;
    mc_expert_store_destroy(&store);
    mc_model_destroy(&m);
    return rc;
}

// --- output ------------------------------------------------------------------------

typedef struct {
    char *buf;
    size_t cap, len;
    bool overflow;
} s_out_t;

static void s_put(s_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_put(s_out_t *o, const char *fmt, ...) {
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) o->overflow = true;
    else o->len += (size_t)n;
}

// A JSON string literal: quotes, backslashes and control bytes escaped.
static void s_put_json_str(s_out_t *o, const char *s) {
    s_put(o, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') s_put(o, "\\%c", *c);
        else if (*c < 0x20) s_put(o, "\\u%04x", *c);
        else s_put(o, "%c", *c);
    }
    s_put(o, "\"");
}

static mc_err_t s_out_done(const s_out_t *o, char *err) {
    return o->overflow ? mc_err_set(err, MC_ERR_ARG, "output buffer of %zu bytes too small", o->cap) : MC_OK;
}

static double s_ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

mc_err_t mc_bench_json(const mc_bench_result_t *r, char *buf, size_t cap, char *err) {
    if (cap == 0) return mc_err_set(err, MC_ERR_ARG, "output buffer of 0 bytes");
    s_out_t o = {buf, cap, 0, false};
    s_put(&o, "{\"model\":");
    s_put_json_str(&o, r->model);
    s_put(&o, ",\"threads\":%d,\"pp_tok_s\":%.3f,\"tg_tok_s\":%.3f,\"mem_bw_gb_s\":%.3f,\"bytes_per_token\":%llu,",
          r->n_threads, r->pp_tok_s, r->tg_tok_s, r->mem_bw_gb_s, (unsigned long long)r->bytes_per_token);
    s_put(&o, "\"tg_bound_tok_s\":%.3f,\"peak_rss_mb\":%.1f,\"tg_ratio\":%.4f,\"isa\":\"%s\",", r->tg_bound_tok_s,
          r->peak_rss_mb, r->tg_tok_s / r->tg_bound_tok_s, mc_kernel_isa_name(r->isa));
    s_put(&o, "\"pp_tokens\":%u,\"tg_tokens\":%u,\"batch\":%u,\"reps\":%d,\"bw_buffer_mb\":%.1f,\"file_mb\":%.3f,\"kv_mb\":%.3f,",
          r->n_prompt, r->n_gen, r->n_batch ? r->n_batch : 1, r->reps, (double)r->bw_bytes / S_MIB, r->file_mb, r->kv_mb);
    s_put(&o, "\"kv_type\":\"%s\",", mc_engine_kv_type_name(r->kv_type));
    s_put(&o, "\"experts_mb\":%.1f,", r->experts_mb);
    s_put(&o, "\"pipeline\":%s,", r->pipeline ? "true" : "false");
    s_put(&o, "\"no_head\":%s,\"pp_cpu_ms\":%.3f,\"tg_cpu_ms\":%.3f,", r->no_head ? "true" : "false", r->pp_cpu_ms,
          r->tg_cpu_ms);
    s_put(&o, "\"verify\":%u,\"load_ms\":%.1f,\"repack_ms\":%.1f,\"repacked_mb\":%.1f", r->n_verify, r->load_ms,
          r->repack_ms, r->repacked_mb);
    if (r->store) {
        const mc_expert_store_stats_t *st = &r->store_stats;
        s_put(&o, ",\"mem_limit_mb\":%u,\"mem_policy\":\"%s\",\"mem_prefetch\":\"%s\",\"cold\":%s,", r->mem_limit_mb,
              mc_store_policy_name(r->mem_policy), r->mem_prefetch < 0 ? "none" : mc_store_pred_name(r->mem_prefetch),
              r->cold ? "true" : "false");
        s_put(&o, "\"hits\":%llu,\"misses\":%llu,\"hit_rate\":%.4f,\"mb_read\":%.1f,\"reads\":%llu,",
              (unsigned long long)st->hits, (unsigned long long)st->misses, s_ratio(st->hits, st->hits + st->misses),
              st->bytes_read / S_MIB, (unsigned long long)st->reads);
        s_put(&o, "\"read_ms\":%.1f,", st->read_us / 1e3);
        s_put(&o, "\"stall_ms_per_token\":%.3f,\"read_ahead\":%llu,\"read_ahead_used\":%llu,\"evictions\":%llu,"
                  "\"read_errors\":%llu",
              st->stall_us / 1e3 / (double)(r->tokens ? r->tokens : 1), (unsigned long long)st->prefetched,
              (unsigned long long)st->prefetch_used, (unsigned long long)st->evictions, (unsigned long long)st->errors);
        for (int i = 0; i < MC_STORE_N_PRED; i++)
            s_put(&o, ",\"pred_%s_hit\":%.4f,\"pred_%s_precision\":%.4f", mc_store_pred_name((mc_store_pred_t)i),
                  s_ratio(st->pred[i].correct, st->pred[i].actual), mc_store_pred_name((mc_store_pred_t)i),
                  s_ratio(st->pred[i].correct, st->pred[i].predicted));
    }
    s_put(&o, "}");
    return s_out_done(&o, err);
}

void mc_bench_print(const mc_bench_result_t *r, FILE *f) {
    fprintf(f, "model             %s\n", r->model);
    fprintf(f, "                  %.1f MiB file, %s kernels, %d threads, KV cache %.2f MiB (%s)\n", r->file_mb,
            mc_kernel_isa_name(r->isa), r->n_threads, r->kv_mb, mc_engine_kv_type_name(r->kv_type));
    fprintf(f, "prompt            %10.2f tok/s  (%u tokens in one batch, median of %d)\n", r->pp_tok_s, r->n_prompt,
            r->reps);
    if (r->n_verify)
        fprintf(f, "generation        %10.2f tok/s  (%u sequence(s) x %u tokens, each step also verifying %u rejected\n"
                   "                                  guesses per sequence, median of %d)\n",
                r->tg_tok_s, r->n_batch, r->n_gen, r->n_verify, r->reps);
    else if (r->n_batch > 1)
        fprintf(f, "generation        %10.2f tok/s  (%u sequences x %u tokens, one per sequence a step, median of %d)\n",
                r->tg_tok_s, r->n_batch, r->n_gen, r->reps);
    else
        fprintf(f, "generation        %10.2f tok/s  (%u tokens one at a time, median of %d)\n", r->tg_tok_s, r->n_gen,
                r->reps);
    if (r->no_head) fprintf(f, "                  (generation without the output head: --no-head)\n");
    if (r->pipeline) fprintf(f, "                  (passes pipelined in two groups of rows: --pipeline)\n");
    fprintf(f, "memory bandwidth  %10.2f GB/s   (read, %d threads, %.0f MiB buffer, best of %d)\n", r->mem_bw_gb_s,
            r->n_threads, (double)r->bw_bytes / S_MIB, MC_BENCH_BW_PASSES);
    fprintf(f, "weights per token %10.2f MiB    (attention, router, used experts, output head)\n",
            (double)r->bytes_per_token / S_MIB);
    fprintf(f, "generation bound  %10.2f tok/s  (bandwidth / weights per token; reached %.0f%%)\n",
            r->tg_bound_tok_s, 100.0 * r->tg_tok_s / r->tg_bound_tok_s);
    fprintf(f, "peak RSS          %10.1f MiB    (this process; the bandwidth buffer lived in a child)\n",
            r->peak_rss_mb);
    fprintf(f, "load              %10.1f ms     (engine setup; of which %.1f ms repacking %.1f MiB of Q4_0 weights)\n",
            r->load_ms, r->repack_ms, r->repacked_mb);
    if (!r->store) return;
    const mc_expert_store_stats_t *st = &r->store_stats;
    fprintf(f, "expert memory     %10u MiB    (--mem-limit; policy %s, read ahead from %s)\n", r->mem_limit_mb,
            mc_store_policy_name(r->mem_policy), r->mem_prefetch < 0 ? "nothing" : mc_store_pred_name(r->mem_prefetch));
    fprintf(f, "expert hits       %9.1f %%     (%llu hits, %llu misses, %llu evictions; every run)\n",
            100 * s_ratio(st->hits, st->hits + st->misses), (unsigned long long)st->hits, (unsigned long long)st->misses,
            (unsigned long long)st->evictions);
    fprintf(f, "expert reads      %10.1f MiB    (%llu reads, %.1f ms stalled per token, %llu read errors)\n",
            st->bytes_read / S_MIB, (unsigned long long)st->reads, st->stall_us / 1e3 / (double)(r->tokens ? r->tokens : 1),
            (unsigned long long)st->errors);
    fprintf(f, "read ahead        %10llu        (%llu used before leaving)\n", (unsigned long long)st->prefetched,
            (unsigned long long)st->prefetch_used);
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        fprintf(f, "predictor %-11s %5.1f %%     (of the experts used, predicted; %.1f %% of its guesses used)\n",
                mc_store_pred_name((mc_store_pred_t)i), 100 * s_ratio(st->pred[i].correct, st->pred[i].actual),
                100 * s_ratio(st->pred[i].correct, st->pred[i].predicted));
}

// --- kernel micro-benchmark ------------------------------------------------------------

typedef struct {
    const mc_kernel_t *k;
    const void *act;   // activation row converted for k
    mc_matmul_t *mm;   // NULL: a plain loop of k's dots on this thread
    const float *x;    // f32 activation row, for mm
    const mc_matrix_t *w; // (copies): one per product in turn
    uint32_t copies, next;
    float *y;          // (n_out)
} s_kjob_t;

// Seconds for one matrix-vector product with the next copy of the matrix.
static mc_err_t s_kernel_once(s_kjob_t *j, double *secs, char *err) {
    const mc_matrix_t *w = &j->w[j->next];
    j->next = (j->next + 1) % j->copies;
    const double t0 = mc_clock_s();
    if (j->mm) {
        const mc_err_t rc = mc_matmul_f32(j->mm, w, j->x, 1, j->y);
        if (rc) return mc_err_set(err, rc, "matrix product failed (%s)", mc_err_name(rc));
    } else {
        for (uint32_t r = 0; r < w->n_out; r++)
            j->k->dot(w->n_in, &j->y[r], w->data + (size_t)r * w->row_bytes, j->act);
    }
    *secs = s_since(t0);
    return MC_OK;
}

// One warm-up product, then the median rate in GB/s of `reps` samples of
// at least sample_s each (v: reps scratch).
static mc_err_t s_kernel_rate(s_kjob_t *j, const mc_bench_kernel_cfg_t *cfg, double *v, double *gb_s, char *err) {
    const double gb = (double)j->w->row_bytes * j->w->n_out * 1e-9;
    double secs;
    mc_err_t rc = s_kernel_once(j, &secs, err);
    for (int i = 0; i < cfg->reps && !rc; i++) {
        double total = 0.0;
        uint64_t n = 0;
        do {
            rc = s_kernel_once(j, &secs, err);
            total += secs;
            n++;
        } while (!rc && total < cfg->sample_s);
        v[i] = gb * (double)n / total;
    }
    if (!rc) *gb_s = mc_bench_median(v, (size_t)cfg->reps);
    return rc;
}

mc_err_t mc_bench_kernel(const mc_bench_kernel_cfg_t *cfg, mc_bench_kernel_t *out, char *err) {
    const mc_dtype_t type = cfg->type;
    const uint32_t n_in = cfg->n_in, n_out = cfg->n_out;
    const mc_dtype_traits_t *tr = mc_dtype_traits(type);
    if (!tr || !tr->weight) return mc_err_set(err, MC_ERR_ARG, "%s is not a weight type", mc_dtype_name(type));
    if (n_in == 0 || n_in % tr->block_elems || n_out == 0)
        return mc_err_set(err, MC_ERR_ARG, "bad matrix shape %u x %u for %s", n_out, n_in, tr->name);
    if (cfg->n_threads < 1 || cfg->reps < 1 || !(cfg->sample_s >= 0.0 && cfg->sample_s <= 60.0))
        return mc_err_set(err, MC_ERR_ARG, "bad thread count, repetition count or sample time");
    const size_t rb = mc_dtype_row_bytes(type, n_in);
    if (n_out > SIZE_MAX / rb) return mc_err_set(err, MC_ERR_ARG, "matrix too large");
    const size_t bytes = rb * n_out;
    const uint64_t copies = cfg->span_bytes > bytes ? (cfg->span_bytes + bytes - 1) / bytes : 1;
    if (copies > UINT32_MAX || copies > SIZE_MAX / bytes)
        return mc_err_set(err, MC_ERR_ARG, "span of %zu bytes too large", cfg->span_bytes);
    const mc_kernel_t *ks = mc_kernel_get(type, MC_ISA_SCALAR), *kb = mc_kernel_get(type, MC_ISA_BEST);
    mc_bench_kernel_t res = {.type = type, .n_in = n_in, .n_out = n_out, .bytes = bytes,
                             .copies = (uint32_t)copies, .isa = kb->isa, .n_threads = cfg->n_threads};
    void *mem = NULL;
    if (posix_memalign(&mem, S_HUGE_ALIGN, (size_t)copies * bytes) == 0)
        (void)madvise(mem, (size_t)copies * bytes, MADV_HUGEPAGE); // fewer page faults to fill, fewer TLB misses
    uint8_t *w = mem;
    mc_matrix_t *mats = malloc((size_t)copies * sizeof *mats);
    float *x = malloc((size_t)n_in * sizeof *x), *y = malloc((size_t)n_out * sizeof *y);
    void *as = malloc(mc_kernel_act_bytes(ks, n_in)), *ab = malloc(mc_kernel_act_bytes(kb, n_in));
    double *v = malloc((size_t)cfg->reps * sizeof *v);
    mc_pool_t *p1 = mc_pool_new(1), *pn = mc_pool_new(cfg->n_threads);
    mc_matmul_t *mm1 = p1 ? mc_matmul_new(p1, MC_ISA_BEST) : NULL, *mmn = pn ? mc_matmul_new(pn, MC_ISA_BEST) : NULL;
    mc_err_t rc = MC_OK;
    if (!w || !mats || !x || !y || !as || !ab || !v || !mm1 || !mmn) {
        rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory for %u copies of a %zu MiB %s matrix", res.copies,
                        bytes >> 20, tr->name);
        goto done;
    }
    // Quantizing millions of values with the reference quantizers is slow;
    // a few quantized random rows tiled over the matrix give real blocks with
    // sane scales, and the memory traffic does not care that rows repeat.
    mc_rng_t rng;
    mc_rng_seed(&rng, S_KERNEL_SEED);
    const uint32_t n_tmpl = n_out < S_KERNEL_TEMPLATES ? n_out : S_KERNEL_TEMPLATES;
    for (uint32_t r = 0; r < n_tmpl && !rc; r++) {
        s_gauss_fill(&rng, x, n_in);
        rc = mc_quant_quantize_row(type, x, w + (size_t)r * rb, n_in);
    }
    if (rc) {
        mc_err_set(err, rc, "cannot quantize to %s", tr->name);
        goto done;
    }
    for (uint64_t r = n_tmpl; r < copies * n_out; r++) memcpy(w + (size_t)r * rb, w + (size_t)(r % n_tmpl) * rb, rb);
    for (uint32_t c = 0; c < copies; c++)
        mats[c] = (mc_matrix_t){
            .type = type, .n_in = n_in, .n_out = n_out, .row_bytes = rb, .data = w + (size_t)c * bytes};
    s_gauss_fill(&rng, x, n_in);
    mc_kernel_act_row(ks, x, as, n_in);
    mc_kernel_act_row(kb, x, ab, n_in);

    s_kjob_t jobs[4] = {
        {.k = ks, .act = as, .w = mats, .copies = res.copies, .y = y},
        {.k = kb, .act = ab, .w = mats, .copies = res.copies, .y = y},
        {.mm = mm1, .x = x, .w = mats, .copies = res.copies, .y = y},
        {.mm = mmn, .x = x, .w = mats, .copies = res.copies, .y = y},
    };
    double *rates[4] = {&res.scalar_gb_s, &res.best_gb_s, &res.mt1_gb_s, &res.mtn_gb_s};
    for (int i = 0; i < 4 && !rc; i++) rc = s_kernel_rate(&jobs[i], cfg, v, rates[i], err);
    if (!rc) *out = res;
done:
    mc_matmul_destroy(&mm1);
    mc_matmul_destroy(&mmn);
    mc_pool_destroy(&p1);
    mc_pool_destroy(&pn);
    free(w);
    free(mats);
    free(x);
    free(y);
    free(as);
    free(ab);
    free(v);
    return rc;
}

mc_err_t mc_bench_kernel_json(const mc_bench_kernel_t *k, char *buf, size_t cap, char *err) {
    if (cap == 0) return mc_err_set(err, MC_ERR_ARG, "output buffer of 0 bytes");
    s_out_t o = {buf, cap, 0, false};
    s_put(&o, "{\"type\":\"%s\",\"rows\":%u,\"cols\":%u,\"matrix_mb\":%.2f,\"copies\":%u,\"isa\":\"%s\",",
          mc_dtype_name(k->type), k->n_out, k->n_in, (double)k->bytes / S_MIB, k->copies, mc_kernel_isa_name(k->isa));
    s_put(&o, "\"scalar_gb_s\":%.3f,\"best_gb_s\":%.3f,\"isa_speedup\":%.3f,", k->scalar_gb_s, k->best_gb_s,
          k->best_gb_s / k->scalar_gb_s);
    s_put(&o, "\"threads\":%d,\"t1_gb_s\":%.3f,\"tn_gb_s\":%.3f,\"thread_speedup\":%.3f}", k->n_threads, k->mt1_gb_s,
          k->mtn_gb_s, k->mtn_gb_s / k->mt1_gb_s);
    return s_out_done(&o, err);
}
