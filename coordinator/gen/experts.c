/*
 * experts: the interface's calls, and the local implementation.
 */
#include "experts.h"

#include <stdlib.h>

#include "moe.h"

typedef struct {
    mc_experts_t base;
    const mc_model_t *m;
    mc_moe_t *moe;
} s_local_t;

static mc_err_t s_local_compute(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                                const float *weights, uint32_t k, float *out, char *err) {
    s_local_t *l = (s_local_t *)x;
    return mc_moe_compute(l->moe, l->m, layer, in, n, experts, weights, k, out, err);
}

static void s_local_destroy(mc_experts_t *x) {
    s_local_t *l = (s_local_t *)x;
    mc_moe_destroy(&l->moe);
    free(l);
}

static const mc_experts_ops_t s_local_ops = {.compute = s_local_compute, .destroy = s_local_destroy};

mc_experts_t *mc_experts_local_new(const mc_model_t *m, mc_matmul_t *mm, char *err) {
    s_local_t *l = calloc(1, sizeof *l);
    if (l) l->moe = mc_moe_new(mm);
    if (!l || !l->moe) {
        free(l);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    l->base.ops = &s_local_ops;
    l->m = m;
    return &l->base;
}

mc_err_t mc_experts_compute(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err) {
    return x->ops->compute(x, layer, in, n, experts, weights, k, out, err);
}

mc_err_t mc_experts_begin(mc_experts_t *x, uint32_t g, uint32_t layer, const float *in, uint32_t n,
                          const int32_t *experts, const float *weights, uint32_t k, float *out, char *err) {
    if (g >= MC_EXPERTS_GROUPS) return mc_err_set(err, MC_ERR_ARG, "expert step group %u out of range", g);
    if (!x->ops->begin) return x->ops->compute(x, layer, in, n, experts, weights, k, out, err);
    return x->ops->begin(x, g, layer, in, n, experts, weights, k, out, err);
}

mc_err_t mc_experts_finish(mc_experts_t *x, uint32_t g, char *err) {
    if (g >= MC_EXPERTS_GROUPS) return mc_err_set(err, MC_ERR_ARG, "expert step group %u out of range", g);
    return x->ops->finish ? x->ops->finish(x, g, err) : MC_OK;
}

bool mc_experts_splits(const mc_experts_t *x) { return x && x->ops->begin && x->ops->finish; }

void mc_experts_tick(mc_experts_t *x) {
    if (x && x->ops->tick) x->ops->tick(x);
}

size_t mc_experts_n_nodes(const mc_experts_t *x) { return x && x->ops->n_nodes ? x->ops->n_nodes(x) : 0; }

void mc_experts_node_stats(const mc_experts_t *x, size_t i, mc_experts_node_stats_t *out) {
    x->ops->node_stats(x, i, out);
}

void mc_experts_health(const mc_experts_t *x, size_t *nodes, size_t *alive) {
    *nodes = mc_experts_n_nodes(x), *alive = 0;
    for (size_t i = 0; i < *nodes; i++) {
        mc_experts_node_stats_t st;
        mc_experts_node_stats(x, i, &st);
        *alive += st.alive;
    }
}

char *mc_experts_stats_json(const mc_experts_t *x, const uint64_t *counts) {
    return x && x->ops->stats_json ? x->ops->stats_json(x, counts) : NULL;
}

void mc_experts_print_stats(const mc_experts_t *x, const uint64_t *counts, FILE *f) {
    if (x && x->ops->print_stats) x->ops->print_stats(x, counts, f);
}

void mc_experts_destroy(mc_experts_t **x) {
    if (!x || !*x) return;
    if ((*x)->ops->destroy) (*x)->ops->destroy(*x);
    *x = NULL;
}
