/*
 * experts_factory: the one place an expert step is chosen and made, and the
 * one place that knows whether this build has the network side.
 *
 * A cluster file makes the cluster's (nodes connected, placements sent,
 * coordinator/cluster); none makes the local one (gen/experts.h). The
 * session, moe-bench and the tests all make theirs here, so how a run
 * computes its experts is decided the same way everywhere.
 *
 * An engine-only build (MC_ENGINE_ONLY: no ZeroMQ, YAML, JSON or HTTP
 * libraries, e.g. the aarch64 cross build) has no coordinator/cluster,
 * coordinator/serve or common/net libraries. Their headers stay visible, and
 * experts_factory.c stands in for the entry points the run modes call
 * (loading a cluster file, the demo, the server, routing statistics and the
 * cluster's statistics), each refusing with MC_ERR_UNSUPPORTED and a message
 * that names the build. So the session, the command line and moe-bench carry
 * no #if of their own.
 */
#ifndef MC_EXPERTS_FACTORY_H
#define MC_EXPERTS_FACTORY_H

#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "error.h"
#include "experts.h"
#include "matmul.h"
#include "model.h"

struct mc_cluster_config;
struct mc_cluster;
struct mc_routing;

typedef struct {
    const mc_model_t *model;                  // borrowed, outlives the step
    mc_matmul_t *mm;                          // the engine's (local products), borrowed
    const struct mc_cluster_config *cluster;  // NULL: every expert computed here; borrowed
    FILE *log;                                // the cluster's progress lines; NULL: quiet
} mc_experts_params_t;

// Everything NULL: a local step (model and mm must still be set).
mc_experts_params_t mc_experts_params_default(void);

// NULL on failure with err, whose code (mc_err_code) says why: MC_ERR_NET or
// MC_ERR_TIMEOUT a node did not answer, MC_ERR_BUSY it serves another
// coordinator, MC_ERR_ARG the file does not fit the model, MC_ERR_UNSUPPORTED
// no cluster support in this build.
mc_experts_t *mc_experts_new(const mc_experts_params_t *p, char *err);

// The cluster behind x (for statistics, placement changes); NULL when x
// computes everything here.
struct mc_cluster *mc_experts_cluster(mc_experts_t *x);

// Routing statistics (coordinator/cluster/routing.h) of e's router, keeping
// a trace of max_trace tokens: made and subscribed to e (mc_routing_destroy
// after e is done with it). MC_ERR_UNSUPPORTED in an engine-only build.
mc_err_t mc_experts_routing_new(mc_engine_t *e, uint32_t max_trace, struct mc_routing **out, char *err);

#endif
