/*
 * experts_factory: local or cluster, from the parameters.
 */
#include "experts_factory.h"

#if MC_HAVE_CLUSTER
#include "cluster.h"
#endif

mc_experts_params_t mc_experts_params_default(void) { return (mc_experts_params_t){0}; }

mc_experts_t *mc_experts_new(const mc_experts_params_t *p, char *err) {
    if (!p->model || !p->mm) {
        mc_err_set(err, MC_ERR_ARG, "an expert step needs a model and the engine's products");
        return NULL;
    }
    if (!p->cluster) return mc_experts_local_new(p->model, p->mm, err);
#if MC_HAVE_CLUSTER
    mc_cluster_t *c = mc_cluster_new(p->cluster, p->model, p->mm, p->log, err);
    return c ? mc_cluster_experts(c) : NULL;
#else
    mc_err_set(err, MC_ERR_UNSUPPORTED, "this build has no cluster support (MC_ENGINE_ONLY)");
    return NULL;
#endif
}

struct mc_cluster *mc_experts_cluster(mc_experts_t *x) {
#if MC_HAVE_CLUSTER
    return mc_cluster_of(x);
#else
    (void)x;
    return NULL;
#endif
}
