/*
 * demo: model generation, node processes, placement and clean-up for
 * `moe-coordinator --demo`.
 */
#include "demo.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_config.h"
#include "mkmodel.h"
#include "nodeproc.h"

#define MC_DEMO_START_MS 20000 // a node maps its model and binds within this

// The small Q8_0 demo model: Q8_0 weights take Q8_0 activations, so the
// q8_0 wire is exact as well as four times smaller than f32.
static mc_mkmodel_params_t s_demo_params(void) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.dim = 256, p.ffn = 512, p.n_layer = 4, p.n_head = 8, p.n_head_kv = 4;
    p.n_expert = 8, p.n_expert_used = 2, p.n_vocab = 2000, p.ctx_len = 4096;
    p.type = MC_DTYPE_Q8_0;
    p.seed = 7;
    return p;
}

__attribute__((format(printf, 1, 2))) static int s_fail(const char *fmt, ...) {
    char line[MC_ERR_LEN + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "moe-coordinator: %s\n", line);
    return 1;
}

int mc_demo_run(const mc_cli_opts_t *o) {
    char err[MC_ERR_LEN], model[PATH_MAX + 64], exe[PATH_MAX + 64], name[32];
    mc_mkmodel_params_t mp = s_demo_params();
    if (mc_mkmodel_cache_path("demo-256x512x4-q8_0.gguf", model, sizeof model, err)) return s_fail("%s", err);
    if (access(model, R_OK) != 0) {
        fprintf(stderr, "demo: generating a random-weight model (once) in %s\n", model);
        if (mc_mkmodel_write(&mp, model, err) != MC_OK) return s_fail("%s", err);
    }
    mc_nodeproc_sibling("moe-expert", exe, sizeof exe);
    uint32_t n = o->demo_nodes < mp.n_expert ? o->demo_nodes : mp.n_expert;
    mc_nodeproc_t *procs = calloc(n, sizeof *procs);
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    int ret = 1;
    if (!procs || !cfg) {
        s_fail("out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) procs[i].out = -1;
    // Every node gets the coordinator's thread count: per layer the
    // coordinator waits while nodes compute, and a token's two experts often
    // sit on one node, so giving each node all cores beat splitting them
    // (measured on 2 cores with the benchmark model: 77 vs 59 tok/s).
    int node_threads = o->threads;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "demo-%u", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.exe = exe, np.model = model, np.name = name, np.threads = node_threads, np.timeout_ms = MC_DEMO_START_MS;
        if (mc_nodeproc_start(&np, &procs[i], err)) {
            s_fail("%s", err);
            goto out;
        }
        // Node i holds an equal, contiguous share of the experts.
        mc_expert_set_t share;
        char ids[32];
        snprintf(ids, sizeof ids, "%u-%u", i * mp.n_expert / n, (i + 1) * mp.n_expert / n - 1);
        if (mc_expert_set_parse(ids, &share, err) ||
            mc_cluster_config_add_node(cfg, name, procs[i].endpoint, &share, NULL, err)) {
            s_fail("%s", err);
            goto out;
        }
    }
    fprintf(stderr,
            "demo: %u expert nodes on this machine; the model has RANDOM weights, so the text is gibberish: "
            "what it shows is the machinery\n",
            n);
    mc_cli_opts_t run = *o;
    run.mode = MC_CLI_MODE_GENERATE;
    if (!run.prompt) run.prompt = "The quick brown fox";
    if (!run.seed_given) {
        run.sampling.seed = 42;
        run.seed_given = true;
    }
    ret = mc_cli_run_with(&run, model, cfg);
out:
    if (procs) mc_nodeproc_stop(procs, n);
    free(procs);
    mc_cluster_config_destroy(&cfg);
    return ret;
}
