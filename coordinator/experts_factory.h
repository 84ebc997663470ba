/*
 * experts_factory: the one place an expert step is chosen and made.
 *
 * A cluster file makes the cluster's (nodes connected, placements sent,
 * coordinator/cluster); none makes the local one (gen/experts.h). The
 * session, moe-bench and the tests all make theirs here, so how a run
 * computes its experts is decided the same way everywhere. An engine-only
 * build (no network libraries) refuses a cluster file with a clear error.
 */
#ifndef MC_EXPERTS_FACTORY_H
#define MC_EXPERTS_FACTORY_H

#include <stdio.h>

#include "error.h"
#include "experts.h"
#include "matmul.h"
#include "model.h"

struct mc_cluster_config;
struct mc_cluster;

typedef struct {
    const mc_model_t *model;                  // borrowed, outlives the step
    mc_matmul_t *mm;                          // the engine's (local products), borrowed
    const struct mc_cluster_config *cluster;  // NULL: every expert computed here; borrowed
    FILE *log;                                // the cluster's progress lines; NULL: quiet
} mc_experts_params_t;

// Everything NULL: a local step (model and mm must still be set).
mc_experts_params_t mc_experts_params_default(void);

// NULL on failure with err (a node refused, out of memory, no cluster
// support in this build).
mc_experts_t *mc_experts_new(const mc_experts_params_t *p, char *err);

// The cluster behind x (for statistics, placement changes); NULL when x
// computes everything here.
struct mc_cluster *mc_experts_cluster(mc_experts_t *x);

#endif
