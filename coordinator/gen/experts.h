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
 * alike. Placement changes, experts read from disk and shared experts plug
 * in here.
 *
 * An implementation embeds struct mc_experts first and points it at its
 * ops; one thread (the engine's) calls compute and tick.
 */
#ifndef MC_EXPERTS_H
#define MC_EXPERTS_H

#include <stdint.h>

#include "error.h"
#include "matmul.h"
#include "model.h"

typedef struct mc_experts mc_experts_t;

typedef struct {
    // out (n, dim) = per row, the weighted sum of its experts' outputs;
    // in (n, dim) normed rows; experts/weights (n, k), a negative id: unused.
    mc_err_t (*compute)(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                        const float *weights, uint32_t k, float *out, char *err);
    // Between evaluations (heartbeats, probes of lost nodes); NULL: nothing.
    void (*tick)(mc_experts_t *x);
    // Free x and what it owns; NULL: the caller owns x (a wrapper on its stack).
    void (*destroy)(mc_experts_t *x);
} mc_experts_ops_t;

struct mc_experts {
    const mc_experts_ops_t *ops;
};

// Every expert computed here with mm's threads. m and mm are borrowed.
mc_experts_t *mc_experts_local_new(const mc_model_t *m, mc_matmul_t *mm, char *err);

mc_err_t mc_experts_compute(mc_experts_t *x, uint32_t layer, const float *in, uint32_t n, const int32_t *experts,
                            const float *weights, uint32_t k, float *out, char *err);
void mc_experts_tick(mc_experts_t *x);

// Safe twice and on NULL.
void mc_experts_destroy(mc_experts_t **x);

#endif
