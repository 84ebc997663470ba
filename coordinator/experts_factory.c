/*
 * experts_factory: local or cluster, from the parameters; in an engine-only
 * build, the network side's refusals (see experts_factory.h).
 */
#include "experts_factory.h"

#include "cluster.h"
#include "cluster_config.h"
#include "routing.h"

mc_experts_params_t mc_experts_params_default(void) { return (mc_experts_params_t){0}; }

mc_experts_t *mc_experts_new(const mc_experts_params_t *p, char *err) {
    if (!p->model || !p->mm) {
        mc_err_set(err, MC_ERR_ARG, "an expert step needs a model and the engine's products");
        return NULL;
    }
    if (!p->cluster) return mc_experts_local_new(p->model, p->mm, err);
    mc_cluster_t *c = mc_cluster_new(p->cluster, p->model, p->mm, p->log, err);
    return c ? mc_cluster_experts(c) : NULL;
}

#if MC_HAVE_CLUSTER

struct mc_cluster *mc_experts_cluster(mc_experts_t *x) { return mc_cluster_of(x); }

mc_err_t mc_experts_routing_new(mc_engine_t *e, uint32_t max_trace, struct mc_routing **out, char *err) {
    const mc_hparams_t *hp = &mc_engine_model(e)->hp;
    mc_routing_t *r = mc_routing_new(hp->n_layer, hp->n_expert, hp->n_expert_used, mc_engine_n_seq(e), max_trace);
    if (!r) return mc_err_set(err, MC_ERR_NOMEM, "cannot collect routing statistics for this model");
    if (mc_engine_route_subscribe(e, mc_routing_hook, r)) {
        mc_routing_destroy(&r);
        return mc_err_set(err, MC_ERR_RANGE, "cannot observe the router: too many observers");
    }
    *out = r;
    return MC_OK;
}

#else // MC_ENGINE_ONLY: the network side's entry points, refusing

#include "discovery.h"
#include "demo.h"
#include "server.h"

#define S_NO(what) "this build has no " what " (MC_ENGINE_ONLY)"

struct mc_cluster *mc_experts_cluster(mc_experts_t *x) {
    (void)x;
    return NULL;
}

mc_err_t mc_experts_routing_new(mc_engine_t *e, uint32_t max_trace, struct mc_routing **out, char *err) {
    (void)e, (void)max_trace, (void)out;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("routing statistics"));
}

mc_cluster_t *mc_cluster_new(const mc_cluster_config_t *cfg, const mc_model_t *m, mc_matmul_t *mm, FILE *log,
                             char *err) {
    (void)cfg, (void)m, (void)mm, (void)log;
    mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("cluster support"));
    return NULL;
}

mc_experts_t *mc_cluster_experts(mc_cluster_t *c) {
    (void)c;
    return NULL;
}

mc_cluster_config_t *mc_cluster_config_load(const char *path, char *err) {
    (void)path;
    mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("cluster support"));
    return NULL;
}

void mc_cluster_config_destroy(mc_cluster_config_t **c) {
    if (c) *c = NULL;
}

bool mc_cluster_config_local_holds(const mc_cluster_config_t *c, uint32_t layer, uint32_t expert) {
    (void)c, (void)layer, (void)expert;
    return false;
}

mc_err_t mc_cluster_write_stats_json(const mc_cluster_t *c, const uint64_t *expert_counts, const char *path,
                                     char *err) {
    (void)c, (void)expert_counts, (void)path;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("cluster support"));
}

void mc_routing_destroy(mc_routing_t **r) {
    if (r) *r = NULL;
}

mc_err_t mc_routing_write(mc_routing_t *r, const char *path, char *err) {
    (void)r, (void)path;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("routing statistics"));
}

mc_err_t mc_demo_start(uint32_t nodes, int threads, mc_demo_t *d, char *err) {
    (void)nodes, (void)threads, (void)d;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("cluster support"));
}

void mc_demo_stop(mc_demo_t *d) { (void)d; }

mc_server_params_t mc_server_params_default(void) { return (mc_server_params_t){0}; }

mc_err_t mc_server_run(mc_session_t *s, const mc_server_params_t *p, atomic_int *stop, char *err) {
    (void)s, (void)p, (void)stop;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("HTTP server"));
}

mc_err_t mc_discovery_list(uint32_t timeout_ms, FILE *out, FILE *log, char *err) {
    (void)timeout_ms, (void)out, (void)log;
    return mc_err_set(err, MC_ERR_UNSUPPORTED, S_NO("discovery"));
}

#endif
