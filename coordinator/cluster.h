/*
 * cluster: the coordinator's side of expert parallelism.
 *
 * mc_cluster_new() connects to every node of a cluster file, checks protocol
 * version and model fingerprint, sends each its placement and waits until all
 * are ready. mc_cluster_moe() then replaces the engine's expert step: per
 * layer it sends exactly one request to each node that has work (all of that
 * layer's rows for all of its experts), computes the coordinator's own
 * experts while those are in flight, and adds the partial sums in a fixed
 * order (local first, then nodes in file order), so the result does not
 * depend on timing. With two experts per token every row's sum is the same
 * single addition as on one machine: the logits are identical to the bit.
 *
 * A node that does not answer within timeout_ms is marked dead and its
 * share is computed by the coordinator itself (it maps the whole model):
 * the run goes on, slower, with the same numbers. Every retry_ms a dead
 * node is probed without blocking the run (hello, placement again); once it
 * is ready it takes work again from the next layer.
 */
#ifndef MC_CLUSTER_H
#define MC_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster_config.h"
#include "error.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_cluster mc_cluster_t;

// cfg and m are borrowed and must outlive the cluster; mm (the engine's) is
// used for the local experts. Progress lines go to log (may be NULL).
mc_cluster_t *mc_cluster_new(const mc_cluster_config_t *cfg, const mc_model_t *m, mc_matmul_t *mm, FILE *log,
                             char *err);
void mc_cluster_destroy(mc_cluster_t **c);

// The engine hook (mc_engine_moe_fn); ctx is the mc_cluster_t.
mc_err_t mc_cluster_moe(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                        const float *weights, uint32_t k, float *out, char *err);

typedef struct {
    const char *name, *endpoint;
    bool alive;
    uint64_t requests, rows, bytes_sent, bytes_recv;
    double rtt_mean_ms, rtt_p50_ms, rtt_p99_ms;
    double compute_ms; // reported by the node
    uint32_t deaths;   // times it stopped answering
    uint32_t rejoins;  // times it came back (cluster file's retry_ms)
} mc_cluster_node_stats_t;

size_t mc_cluster_n_nodes(const mc_cluster_t *c);
void mc_cluster_node_stats(const mc_cluster_t *c, size_t i, mc_cluster_node_stats_t *out);

// Human-readable stats (per node, then rows routed per layer and expert from
// the engine's counts (n_layer, n_expert)).
void mc_cluster_print_stats(const mc_cluster_t *c, const uint64_t *expert_counts, FILE *f);

// The same as one JSON document in path.
mc_err_t mc_cluster_write_stats_json(const mc_cluster_t *c, const uint64_t *expert_counts, const char *path,
                                     char *err);

#endif
