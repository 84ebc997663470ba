/*
 * experts: the expert step of a layer as one object, whoever computes it.
 *
 * For every layer the engine hands an mc_experts_t the rows' normed hidden
 * states and each row's k chosen (expert, weight) pairs, and gets back
 * sum_j weight_j * expert_j(row) per row (mc_moe_compute's contract: the
 * same bits whoever computes them). Implementations:
 *   - local (mc_experts_local_new, here): the mc_moe step on the engine's
 *     threads; every engine has one and uses it unless told otherwise;
 *   - the cluster's (coordinator/cluster: mc_cluster_experts): nodes, with
 *     this machine computing its local experts and any lost or slow node's
 *     share;
 *   - wrappers: --profile's timing one, the tests' splitting one.
 * mc_experts_new (coordinator/experts_factory.h) makes local or cluster
 * from a cluster file or none, for a session, moe-bench and the tests
 * alike. Placement changes and experts read from disk plug in here.
 *
 * Shared experts (a family's dense FFN every row passes through, arch.h)
 * are the other half of a layer's expert step: the engine adds them on this
 * machine right after compute returns, with mc_moe_shared (moe.h), so
 *   out[t] = (sum_j weight_j * expert_j(row), in choice order)
 *            + sigmoid(gate_s . row) * shared(row)
 * whichever implementation computed the routed sum: one machine and the
 * cluster give the same bits. Nodes never see shared experts.
 *
 * Pipelining (engine.h: pipeline): the split form mc_experts_begin /
 * mc_experts_finish lets the engine put one group of rows' expert step on
 * the wire and compute another group's attention meanwhile. An
 * implementation with begin and finish keeps up to MC_EXPERTS_GROUPS
 * groups open at once; without them begin computes at once (compute) and
 * finish has nothing left to do. A group's out is the same bits either way.
 *
 * An implementation embeds struct mc_experts first and points it at its
 * ops; one thread (the engine's) calls compute and tick. The statistics
 * calls (nodes, their counters, the JSON of /v1/cluster and --stats-json)
 * may come from any thread: the server and /metrics ask the step, not the
 * cluster behind it.
 */
#ifndef MC_EXPERTS_H
#define MC_EXPERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "expert_store.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_experts mc_experts_t;

// Groups of rows a split expert step keeps open at once (begin/finish).
#define MC_EXPERTS_GROUPS 2

// Round-trip histogram buckets of a node (upper bounds in rtt_bounds_ms).
#define MC_EXPERTS_RTT_BUCKETS 12

// One node that computes experts for this step, as its counters stand.
typedef struct {
    const char *name, *endpoint;
    bool alive;
    uint64_t requests, rows, bytes_sent, bytes_recv;
    double rtt_mean_ms, rtt_p50_ms, rtt_p99_ms; // p50/p99 over the recent round trips
    double compute_ms; // reported by the node
    uint32_t deaths;   // times it stopped answering
    uint32_t rejoins;  // times it came back (cluster file's retry_ms)
    uint32_t slow;     // times it was benched for a slow answer (slow_ms)
    bool benched;      // sitting out now after a slow answer
    uint64_t hedged;   // requests whose share was computed here after a slow answer
    uint64_t load_done, load_total; // bytes of the placement it is loading now (0, 0: none)
    uint64_t fetch_done, fetch_total; // of those, fetched from the coordinator (a node without a model file)
    // Slices the coordinator sent it (cluster/transfer.h): in all, what it
    // still needs, the rate (bytes/s) and time left of a fetch going on.
    uint64_t transfer_bytes, transfer_remaining;
    double transfer_rate, transfer_eta_s;
    bool transfer_active;
    const double *rtt_bounds_ms;    // (MC_EXPERTS_RTT_BUCKETS) the buckets' upper bounds
    uint64_t rtt_hist[MC_EXPERTS_RTT_BUCKETS + 1]; // round trips per bucket, then above the last
    uint64_t rtt_count;
    double rtt_sum_ms;
    // The node's expert store, as its last answer told (has_store: it runs
    // under --mem-limit; the counters moe-expert sends, the rest zero).
    bool has_store;
    mc_expert_store_stats_t store;
} mc_experts_node_stats_t;

typedef struct {
    // out (n, dim) = per row, the weighted sum of its experts' outputs;
    // in (n, dim) normed rows; experts/weights (n, k), a negative id: unused.
    mc_err_t (*compute)(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                        const float *weights, uint32_t k, float *out, char *err);
    // The split form of compute, for group g (< MC_EXPERTS_GROUPS; one open
    // per group): begin takes the rows (copied: in, experts and weights may
    // change before finish) and returns once they are under way; finish
    // waits and writes out (given to begin; untouched in between). Both
    // NULL: not split (mc_experts_begin computes at once).
    mc_err_t (*begin)(mc_experts_t *x, uint32_t g, uint32_t layer, const float *in, uint32_t n,
                      const int32_t *experts, const float *weights, uint32_t k, float *out, char *err);
    mc_err_t (*finish)(mc_experts_t *x, uint32_t g, char *err);
    // Between evaluations (heartbeats, probes of lost nodes); NULL: nothing.
    void (*tick)(mc_experts_t *x);
    // Free x and what it owns; NULL: the caller owns x (a wrapper on its stack).
    void (*destroy)(mc_experts_t *x);
    // Statistics, from any thread; NULL: no nodes, nothing to report.
    size_t (*n_nodes)(const mc_experts_t *x);
    void (*node_stats)(const mc_experts_t *x, size_t i, mc_experts_node_stats_t *out);
    // counts (n_layer, n_expert): rows routed per expert (engine's), may be NULL.
    char *(*stats_json)(const mc_experts_t *x, const uint64_t *counts);
    void (*print_stats)(const mc_experts_t *x, const uint64_t *counts, FILE *f);
} mc_experts_ops_t;

struct mc_experts {
    const mc_experts_ops_t *ops;
};

// Every expert computed here with mm's threads. m and mm are borrowed.
mc_experts_t *mc_experts_local_new(const mc_model_t *m, mc_matmul_t *mm, char *err);

mc_err_t mc_experts_compute(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err);
// The split form (see the top): begin group g's rows, finish them into
// out. After a failed begin the group is not open; a failed finish closes
// it. Whether x splits at all (else begin computes at once):
mc_err_t mc_experts_begin(mc_experts_t *x, uint32_t g, uint32_t layer, const float *in, uint32_t n,
                          const int32_t *experts, const float *weights, uint32_t k, float *out, char *err);
mc_err_t mc_experts_finish(mc_experts_t *x, uint32_t g, char *err);
bool mc_experts_splits(const mc_experts_t *x);
void mc_experts_tick(mc_experts_t *x);

// The nodes behind x (0 when every expert is computed here) and node i's
// counters (i < mc_experts_n_nodes).
size_t mc_experts_n_nodes(const mc_experts_t *x);
void mc_experts_node_stats(const mc_experts_t *x, size_t i, mc_experts_node_stats_t *out);
// Nodes and nodes answering now.
void mc_experts_health(const mc_experts_t *x, size_t *nodes, size_t *alive);
// Per node statistics, placement and rows routed per expert, as a JSON
// object's text (malloc'd); NULL when x has no nodes (or out of memory).
char *mc_experts_stats_json(const mc_experts_t *x, const uint64_t *counts);
// The same for a person, on f; nothing when x has no nodes.
void mc_experts_print_stats(const mc_experts_t *x, const uint64_t *counts, FILE *f);

// Safe twice and on NULL.
void mc_experts_destroy(mc_experts_t **x);

#endif
