/*
 * cluster: the coordinator's side of expert parallelism.
 *
 * mc_cluster_new() connects to every node of a cluster file (link.h:
 * handshake, placement, liveness), and mc_cluster_experts() is then the
 * engine's expert step (experts.h). Per layer it
 *   1. routes every (row, choice) to a holder: the coordinator itself for the
 *      file's `local` experts, else one of the nodes holding the expert
 *      (replicas take rows in turn);
 *   2. sends exactly one request to each node that has work (all of that
 *      layer's rows for all of its experts), encoded as the file's `wire`
 *      says (`auto`: the activation blocks each expert's kernel makes);
 *   3. computes the local experts while those are in flight;
 *   4. collects the answers; a node that is lost (its connection dropped,
 *      silent for dead_ms or timeout_ms, answering wrongly) or slow (past
 *      max(slow_ms, 4x its usual time): it then sits out a while) has its
 *      share computed here from the very bytes it was sent, as it would have
 *      computed it;
 *   5. adds each token's rows in choice order from zero, as one machine adds
 *      its k expert outputs, so the result does not depend on timing.
 * With `wire: auto` or f32 every partial has one machine's bits: the logits
 * are identical to the bit, whoever computed what.
 *
 * A lost node is probed every retry_ms without blocking the run and takes
 * work again once it is back; the expert step's tick (mc_experts_tick)
 * keeps idle links alive (heartbeats) and moves probes along between
 * requests. mc_cluster_request() stages a new membership and placement
 * while the cluster serves and switches to it between two passes;
 * mc_cluster_place() hands the same nodes a new placement at once
 * (blocking).
 *
 * One thread drives a cluster (the engine's); the stats functions may be
 * called from any thread.
 */
#ifndef MC_CLUSTER_H
#define MC_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster_config.h"
#include "error.h"
#include "experts.h"
#include "link.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_cluster mc_cluster_t;

// cfg and m are borrowed and must outlive the cluster; mm (the engine's) is
// used for the local experts. Progress lines go to log (may be NULL).
mc_cluster_t *mc_cluster_new(const mc_cluster_config_t *cfg, const mc_model_t *m, mc_matmul_t *mm, FILE *log,
                             char *err);
void mc_cluster_destroy(mc_cluster_t **c);

// The cluster as the engine's expert step (experts.h): valid as long as
// the cluster; mc_experts_destroy on it destroys the cluster.
mc_experts_t *mc_cluster_experts(mc_cluster_t *c);

// The cluster behind an expert step, NULL when x is not a cluster's.
mc_cluster_t *mc_cluster_of(mc_experts_t *x);

// Switch at once (blocking) to the placement of cfg: the same nodes (names and endpoints, in
// the same order) holding other experts, checked against the model. Live
// nodes whose share changes get it now (a node refuses a placement while
// another coordinator's lease on it lasts); on failure the old placement
// stays (nodes already switched are switched back) and err says why
// (MC_ERR_BUSY while mc_cluster_request's change is staged). cfg is
// borrowed and must outlive the cluster.
mc_err_t mc_cluster_place(mc_cluster_t *c, const mc_cluster_config_t *cfg, char *err);

// Live membership and placement: ask for cfg (the whole cluster file:
// nodes to keep, to add and to drop, and what each holds) to become the
// placement, from any thread. Checked at once against the model and the
// running cluster (ids, every pair held, the same wire and coordinator key,
// a known node at the same endpoint with the same key): MC_ERR_ARG,
// _RANGE, _FORMAT or _UNSUPPORTED with err naming the problem, nothing
// changed. MC_ERR_BUSY while another change is staged. On success the
// cluster takes cfg (*cfg set to NULL) and the engine's thread stages it
// between two passes: new nodes are connected (a node without a model file
// fetches its slices), the holders that gain pairs are given the old and new
// ones together and load (or fetch and check) them while the current
// placement keeps serving; once they have (a node that is down is not waited
// for: its share is computed here), the switch happens at the start of a
// pass, for every sequence at once, then leaving nodes are released and the
// others drop what they no longer hold. A node refusing its share drops the
// change (the current placement stays; /v1/cluster says why). Tokens never
// change: every holder computes the same bits.
mc_err_t mc_cluster_request(mc_cluster_t *c, mc_cluster_config_t **cfg, char *err);

// The config the next change should start from: the one requested or
// staged, else the current one (*staging says which). Valid as long as the
// cluster.
const mc_cluster_config_t *mc_cluster_config_latest(mc_cluster_t *c, bool *staging);

// A node's counters: the expert step's type (gen/experts.h), whose calls
// (mc_experts_node_stats, ...) reach these functions through the cluster's
// mc_experts_t.
typedef mc_experts_node_stats_t mc_cluster_node_stats_t;

size_t mc_cluster_n_nodes(const mc_cluster_t *c);
void mc_cluster_node_stats(const mc_cluster_t *c, size_t i, mc_cluster_node_stats_t *out);

// Whether node i holds expert e of layer l in the current placement.
bool mc_cluster_holds(const mc_cluster_t *c, size_t i, uint32_t layer, uint32_t e);

const mc_cluster_config_t *mc_cluster_config(const mc_cluster_t *c);

// Human-readable stats (per node, then rows routed per layer and expert from
// the engine's counts (n_layer, n_expert)).
void mc_cluster_print_stats(const mc_cluster_t *c, const uint64_t *expert_counts, FILE *f);

// The same as one JSON document in path.
mc_err_t mc_cluster_write_stats_json(const mc_cluster_t *c, const uint64_t *expert_counts, const char *path,
                                     char *err);

// The JSON of mc_cluster_write_stats_json, plus every node's placement
// (`experts`: per layer, the ids it holds): a cJSON object the caller
// deletes, NULL when out of memory. expert_counts may be NULL.
struct cJSON;
struct cJSON *mc_cluster_stats_json(const mc_cluster_t *c, const uint64_t *expert_counts);

#endif
