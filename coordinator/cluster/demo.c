/*
 * demo: model generation, node processes and placement for
 * `moe-coordinator --demo`.
 */
#include "demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mkmodel.h"

#define MC_DEMO_START_MS 20000 // a node maps its model and binds within this

// The small Q8_0 demo model: Q8_0 weights take Q8_0 activations, so the
// auto wire sends them as Q8_0 blocks, exact at a quarter of f32's bytes.
static mc_mkmodel_params_t s_demo_params(void) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.dim = 256, p.ffn = 512, p.n_layer = 4, p.n_head = 8, p.n_head_kv = 4;
    p.n_expert = 8, p.n_expert_used = 2, p.n_vocab = 2000, p.ctx_len = 4096;
    p.type = MC_DTYPE_Q8_0;
    p.seed = 7;
    return p;
}

mc_err_t mc_demo_start(uint32_t nodes, int threads, mc_demo_t *d, char *err) {
    char exe[PATH_MAX + 64], name[32];
    memset(d, 0, sizeof *d);
    mc_mkmodel_params_t mp = s_demo_params();
    mc_err_t rc = mc_mkmodel_cache_path("demo-256x512x4-q8_0.gguf", d->model, sizeof d->model, err);
    if (rc) return rc;
    if (access(d->model, R_OK) != 0) {
        fprintf(stderr, "demo: generating a random-weight model (once) in %s\n", d->model);
        if ((rc = mc_mkmodel_write(&mp, d->model, err))) return rc;
    }
    mc_nodeproc_sibling("moe-expert", exe, sizeof exe);
    d->n = nodes < mp.n_expert ? nodes : mp.n_expert;
    d->procs = calloc(d->n, sizeof *d->procs);
    d->cfg = mc_cluster_config_new();
    if (!d->procs || !d->cfg) {
        mc_demo_stop(d);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < d->n; i++) d->procs[i].out = -1;
    // Every node gets the coordinator's thread count: per layer the
    // coordinator waits while nodes compute, and a token's two experts often
    // sit on one node, so giving each node all cores beat splitting them
    // (measured on 2 cores with the benchmark model: 77 vs 59 tok/s).
    for (uint32_t i = 0; i < d->n; i++) {
        snprintf(name, sizeof name, "demo-%u", i + 1);
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.exe = exe, np.model = d->model, np.name = name, np.threads = threads, np.timeout_ms = MC_DEMO_START_MS;
        if ((rc = mc_nodeproc_start(&np, &d->procs[i], err))) break;
        // Node i holds an equal, contiguous share of the experts.
        mc_expert_set_t share;
        char ids[32];
        snprintf(ids, sizeof ids, "%u-%u", i * mp.n_expert / d->n, (i + 1) * mp.n_expert / d->n - 1);
        if ((rc = mc_expert_set_parse(ids, &share, err)) ||
            (rc = mc_cluster_config_add_node(d->cfg, name, d->procs[i].endpoint, &share, NULL, err)))
            break;
    }
    if (rc) {
        mc_demo_stop(d);
        return rc;
    }
    fprintf(stderr,
            "demo: %u expert nodes on this machine; the model has RANDOM weights, so the text is gibberish: "
            "what it shows is the machinery\n",
            d->n);
    return MC_OK;
}

void mc_demo_stop(mc_demo_t *d) {
    if (d->procs) mc_nodeproc_stop(d->procs, d->n);
    free(d->procs);
    d->procs = NULL;
    mc_cluster_config_destroy(&d->cfg);
}
