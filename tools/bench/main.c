/*
 * moe-bench: command-line front end of tools/bench: prompt and generation
 * speed against the memory-bandwidth bound, or (--kernels) the per-type
 * kernel micro-benchmark.
 *
 * Without --model it benchmarks the standard benchmark model, generated
 * once into the cache folder. Exit status: 0 done, 1 the run failed (with
 * --corpus also: speculation changed the tokens), 2 bad command line.
 */
#include <stdio.h>
#include <unistd.h>

#include "bench.h"
#include "bench_constrain.h"
#include "bench_speculate.h"
#include "cluster.h"
#include "cluster_config.h"
#include "experts_factory.h"
#include "routing.h"

// What is attached to the benchmark's engine: the cluster's expert step
// (--cluster) and the routing recorder (--routing-stats).
typedef struct {
    const mc_cluster_config_t *cfg; // NULL: local experts
    mc_experts_t *experts;          // made from cfg (owned)
    mc_cluster_t *cluster;          // behind experts
    const char *routing_path;       // NULL: not recorded
    mc_routing_t *routing;
    const char *stats_path;         // --stats-json: the cluster's statistics after the run
} s_cluster_ctx_t;

static mc_err_t s_attach(void *ctx, mc_engine_t *e, const mc_model_t *m, char *err) {
    s_cluster_ctx_t *c = ctx;
    mc_err_t rc;
    if (c->routing_path && (rc = mc_experts_routing_new(e, 200000, &c->routing, err))) return rc;
    if (c->cfg) { // the same factory as a session's
        mc_experts_params_t xp = mc_experts_params_default();
        xp.model = m, xp.mm = mc_engine_matmul(e), xp.cluster = c->cfg, xp.log = stderr;
        if (!(c->experts = mc_experts_new(&xp, err))) {
            mc_routing_destroy(&c->routing);
            return mc_err_code(err, MC_ERR_NET);
        }
        c->cluster = mc_experts_cluster(c->experts);
        mc_engine_set_experts(e, c->experts);
    }
    return MC_OK;
}

static bool s_local(void *ctx, uint32_t layer, uint32_t expert) {
    const s_cluster_ctx_t *c = ctx;
    return !c->cfg || mc_cluster_config_local_holds(c->cfg, layer, expert);
}

static void s_detach(void *ctx) {
    s_cluster_ctx_t *c = ctx;
    char err[MC_ERR_LEN];
    if (c->routing && mc_routing_write(c->routing, c->routing_path, err))
        fprintf(stderr, "moe-bench: %s\n", err);
    mc_routing_destroy(&c->routing);
    if (c->cluster && c->stats_path && mc_cluster_write_stats_json(c->cluster, NULL, c->stats_path, err))
        fprintf(stderr, "moe-bench: %s\n", err);
    mc_experts_destroy(&c->experts); // the cluster with it
    c->cluster = NULL;
}

#define S_PROG "moe-bench"
#define S_KERNEL_DIM 4096     // matrix of the kernel benchmark: S_KERNEL_DIM x S_KERNEL_DIM
#define S_KERNEL_SAMPLE_S 0.1 // seconds per kernel-benchmark sample, at least

static const mc_dtype_t s_kernel_types[] = {
    MC_DTYPE_F32,  MC_DTYPE_F16,  MC_DTYPE_BF16, MC_DTYPE_Q4_0, MC_DTYPE_Q4_1, MC_DTYPE_Q5_0, MC_DTYPE_Q5_1,
    MC_DTYPE_Q8_0, MC_DTYPE_Q2_K, MC_DTYPE_Q3_K, MC_DTYPE_Q4_K, MC_DTYPE_Q5_K, MC_DTYPE_Q6_K,
};

static int s_fail(const char *msg) {
    fprintf(stderr, S_PROG ": %s\n", msg);
    return 1;
}

static int s_kernels(const mc_bench_opts_t *o) {
    char err[MC_ERR_LEN], line[512];
    if (!o->json)
        printf("%-5s %8s %-7s %11s %11s %7s %11s %11s %7s\n", "type", "MiB", "isa", "scalar GB/s", "best GB/s",
               "x", "1 thr GB/s", "N thr GB/s", "x");
    mc_bench_kernel_cfg_t cfg = {
        .n_in = S_KERNEL_DIM,
        .n_out = S_KERNEL_DIM,
        // Half the bandwidth buffer: twice the last-level cache, so
        // consecutive products never find their copy of the matrix in cache.
        .span_bytes = mc_bench_bw_default_bytes() / 2,
        // Long enough that a scheduler hiccup is a small part of a sample.
        .sample_s = S_KERNEL_SAMPLE_S,
        .n_threads = o->n_threads,
        .reps = o->reps,
    };
    for (size_t i = 0; i < sizeof s_kernel_types / sizeof s_kernel_types[0]; i++) {
        mc_bench_kernel_t k;
        cfg.type = s_kernel_types[i];
        if (mc_bench_kernel(&cfg, &k, err)) return s_fail(err);
        if (o->json) {
            if (mc_bench_kernel_json(&k, line, sizeof line, err)) return s_fail(err);
            printf("%s\n", line);
        } else {
            printf("%-5s %8.1f %-7s %11.2f %11.2f %7.2f %11.2f %11.2f %7.2f\n", mc_dtype_name(k.type),
                   (double)k.bytes / (1024.0 * 1024.0), mc_kernel_isa_name(k.isa), k.scalar_gb_s, k.best_gb_s,
                   k.best_gb_s / k.scalar_gb_s, k.mt1_gb_s, k.mtn_gb_s, k.mtn_gb_s / k.mt1_gb_s);
        }
        fflush(stdout);
    }
    if (!o->json)
        printf("(%d x %d matrix-vector products, median of %d samples of >= %.1f s, copies spanning %zu MiB;\n"
               " N = %d threads)\n",
               S_KERNEL_DIM, S_KERNEL_DIM, o->reps, S_KERNEL_SAMPLE_S, cfg.span_bytes >> 20, o->n_threads);
    return 0;
}

int main(int argc, char **argv) {
    mc_bench_opts_t o;
    char err[MC_ERR_LEN];
    mc_bench_opts_init(&o);
    if (mc_bench_parse(argc, argv, &o, err)) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 2;
    }
    if (o.help) {
        mc_bench_usage(stdout);
        return 0;
    }
    if (o.kernels) return s_kernels(&o);
    mc_cluster_config_t *cfg = NULL;
    s_cluster_ctx_t cctx = {.routing_path = o.routing_stats, .stats_path = o.stats_json};
    if (o.cluster) {
        if (!(cfg = mc_cluster_config_load(o.cluster, err))) return s_fail(err);
        if (!o.model) o.model = cfg->model_resolved;
        cctx.cfg = cfg;
    }
    if (o.cluster || o.routing_stats) {
        o.attach = s_attach;
        o.detach = s_detach;
        o.local = s_local;
        o.attach_ctx = &cctx;
    }
    char path[4096];
    if (!o.model) {
        if (mc_bench_cache_path(o.type, path, sizeof path, err)) return s_fail(err);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, S_PROG ": generating the benchmark model %s (once; it is cached)\n", path);
            const mc_mkmodel_params_t p = mc_bench_model_params(o.type);
            if (mc_mkmodel_write(&p, path, err)) return s_fail(err);
        }
        o.model = path;
    }
    int ret = 0;
    char line[32768];
    if (o.constrain) {
        mc_bench_constrain_t cr;
        if (mc_bench_constrain(&o, &cr, err) || (o.json && mc_bench_constrain_json(&cr, line, sizeof line, err)))
            ret = s_fail(err);
        else if (o.json)
            printf("%s\n", line);
        else
            mc_bench_constrain_print(&cr, stdout);
        mc_cluster_config_destroy(&cfg);
        return ret;
    }
    if (o.corpus) {
        mc_bench_spec_t sr;
        if (mc_bench_speculate(&o, &sr, err) || (o.json && mc_bench_speculate_json(&sr, line, sizeof line, err)))
            ret = s_fail(err);
        else if (o.json)
            printf("%s\n", line);
        else
            mc_bench_speculate_print(&sr, stdout);
        mc_cluster_config_destroy(&cfg);
        return ret;
    }
    mc_bench_result_t r;
    if (mc_bench_run(&o, &r, err) || (o.json && mc_bench_json(&r, line, sizeof line, err)))
        ret = s_fail(err);
    else if (o.json)
        printf("%s\n", line);
    else
        mc_bench_print(&r, stdout);
    mc_cluster_config_destroy(&cfg);
    return ret;
}
