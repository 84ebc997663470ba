/*
 * rebalance: live rebalancing, opt-in with the cluster file's `rebalance:`
 * block (cluster_config.h): every every_s the planner (tools/plan) looks at
 * the routing of the recent tokens (mc_routing_recent: a sliding window,
 * older tokens forgotten) and proposes a placement; it is staged like any
 * live change (mc_cluster_request: the new holders load while the current
 * placement serves, switched between two passes) only when the simulator
 * predicts it at least min_gain faster than the current one on the same
 * tokens. After the switch the decode steps are timed over `window` steps
 * and compared with the `window` steps before the request; a switch that
 * measured slower by more than `tolerance` is rolled back through the same
 * staging (the previous file is requested again).
 *
 * The decisions are pure functions (propose, decide, judge), tested on
 * their own; mc_rebalance_t is the loop that acts on them: the thread that
 * drives it calls mc_rebalance_poll (the server's rebalance thread), the
 * engine's thread reports every step's time (mc_rebalance_step), and any
 * thread may read the counts and the JSON. Every proposal, skip, switch and
 * rollback is logged with its figures.
 */
#ifndef MC_REBALANCE_H
#define MC_REBALANCE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster.h"
#include "cluster_config.h"
#include "error.h"
#include "plan.h"
#include "routing.h"

struct cJSON;

typedef enum {
    MC_REBALANCE_APPLIED = 0,     // switched and measured no worse (or not measurable)
    MC_REBALANCE_ROLLED_BACK,     // switched, measured worse, switched back
    MC_REBALANCE_SKIPPED_GAIN,    // the plan's predicted gain was below min_gain
    MC_REBALANCE_SKIPPED_BUSY,    // another change was staged
    MC_REBALANCE_SKIPPED_IDLE,    // too few recent tokens to plan on
    MC_REBALANCE_FAILED,          // planning, staging or the switch failed
    MC_REBALANCE_N_OUTCOMES,
} mc_rebalance_outcome_t;

// "applied", "rolled_back", "skipped_gain", "skipped_busy", "skipped_idle", "failed".
const char *mc_rebalance_outcome_name(mc_rebalance_outcome_t o);

// --- the decisions -------------------------------------------------------------------

// A proposal's figures: the simulated step time of the current placement
// and of the candidate on the same tokens, and gain = cur_ms / new_ms - 1.
typedef struct {
    double cur_ms, new_ms, gain;
    uint32_t tokens; // of the window planned on
    bool same;       // the candidate is the current placement
} mc_rebalance_proposal_t;

// Plan on st (a recent window) for the machines ms (the coordinator first;
// the nodes of cur are found by name, each must be there; others are left
// out) and simulate cur and the plan. *out: the candidate cluster file,
// cur's nodes in cur's order at cur's endpoints with cur's settings, only
// what each holds changed. MC_ERR_ARG and friends with err when the stats,
// machines and cluster do not fit together or the planner fails.
mc_err_t mc_rebalance_propose(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                              const mc_cluster_config_t *cur, const mc_plan_params_t *pp, mc_cluster_config_t **out,
                              mc_rebalance_proposal_t *prop, char *err);

// Whether a proposal is worth staging: a different placement predicted at
// least min_gain faster.
bool mc_rebalance_decide(const mc_rebalance_proposal_t *p, double min_gain);

typedef enum {
    MC_REBALANCE_WAIT = 0, // fewer than window steps on a side yet
    MC_REBALANCE_KEEP,
    MC_REBALANCE_ROLLBACK,
} mc_rebalance_verdict_t;

// Step times before (n_before) and after (n_after) a switch, ms: WAIT while
// after has fewer than window; KEEP when before has fewer than window (not
// measurable) or the median after is within (1 + tolerance) x the median
// before; ROLLBACK when it is slower than that. The medians go to *med_before
// and *med_after (0 where not measured); before and after are reordered.
mc_rebalance_verdict_t mc_rebalance_judge(double *before, uint32_t n_before, double *after, uint32_t n_after,
                                          uint32_t window, double tolerance, double *med_before, double *med_after);

// --- the loop -------------------------------------------------------------------------

// Which steps a time belongs to: before a request, or after its switch.
typedef enum { MC_REBALANCE_PHASE_BEFORE, MC_REBALANCE_PHASE_AFTER } mc_rebalance_phase_t;

typedef struct mc_rebalance_params {
    uint32_t recent_tokens;  // the routing window planned on (default 4096)
    uint32_t min_tokens;     // fewer recent tokens: skipped (default 64)
    uint32_t batch;          // streams decoded together, to plan for (default 1)
    uint32_t max_evals;      // the planner's search budget per start (default 2000; 0: the planner's)
    FILE *log;               // a line per proposal, skip, switch and rollback; NULL: quiet
    // A test seam: the time recorded for a step that took ms (NULL: ms).
    double (*step_ms)(void *user, mc_rebalance_phase_t phase, double ms);
    void *user;
} mc_rebalance_params_t;

mc_rebalance_params_t mc_rebalance_params_default(void);

typedef struct mc_rebalance mc_rebalance_t;

// The loop for cluster c (its current file's rebalance block: on, with
// machines) on model m; routing is the engine's collector (borrowed; the
// window is added to it). NULL with err when the block is off, the
// machines file cannot be read or does not name the cluster's nodes.
mc_rebalance_t *mc_rebalance_new(mc_cluster_t *c, const mc_model_t *m, mc_routing_t *routing,
                                 const mc_rebalance_params_t *p, char *err);
void mc_rebalance_destroy(mc_rebalance_t **rb);

// The engine's thread: a pass (decode step) took ms.
void mc_rebalance_step(mc_rebalance_t *rb, double ms);

// Move along (now_ms: mc_clock_ms()): every every_s a proposal (skipped
// while a change is staged, with too few tokens or too little gain, else
// requested); a requested change is watched until it switches (or is
// dropped: failed); then window steps are timed and judged, and a worse one
// rolled back.
void mc_rebalance_poll(mc_rebalance_t *rb, double now_ms);

// Outcomes so far, by mc_rebalance_outcome_t.
void mc_rebalance_counts(mc_rebalance_t *rb, uint64_t counts[MC_REBALANCE_N_OUTCOMES]);

// {"every_s", "min_gain", "state", "counts": {...}, "last": {"outcome", "at",
// "tokens", "predicted_ms_before", "predicted_ms_after", "predicted_gain",
// "measured_ms_before", "measured_ms_after", "message"}} (NULL: no memory).
struct cJSON *mc_rebalance_json(mc_rebalance_t *rb);

#endif
