/*
 * plan: expert placement for a cluster of unequal machines, and the
 * simulator that scores a placement (moe-plan).
 *
 * The simulator replays a routing trace (mc_routing_*: the experts the
 * router chose, token by token) in steps of `batch` tokens, as the
 * coordinator decodes `batch` streams together. For every layer of a step
 * it does what the cluster's expert step (mc_cluster_experts) does: the
 * coordinator's attention and router
 * (layer_ms), each token's experts to their holders (its own first, then
 * the replicas of an expert in turn, the same round robin as the cluster),
 * one request per node, and the answers gathered. Time comes from the
 * machines' profiles (`moe-expert --profile`, and `moe-coordinator --profile`
 * for the coordinator's layer_ms and head_ms): one expert's step for r rows,
 * interpolated between the measured row counts; a link's round trip and
 * bandwidth for the bytes of the wire encoding; the coordinator's sends
 * queued on its own link. Machines on one host share its cores: while the
 * threads of the jobs running there outnumber the cores, each job advances
 * at cores / threads of its speed (processor sharing, simulated event by
 * event), except that the coordinator's own experts keep its cores (its
 * pool spins through a burst of products; nodes beside it wait, and when
 * its threads hold every core there, a node's request is only received
 * after the burst: its inbound half of the round trip starts then).
 *
 * The disk tier: a machine whose entry has the disk keys of its profile
 * (disk_read_mb_s, disk_latency_ms) may hold more experts than its memory,
 * as a process under --mem-limit does (expert_store.h): memory_mb stays
 * its resident budget and the rest is read from its disk when used. The
 * simulator decides which of a machine's experts are resident as the
 * store's pinned hot set does (the experts the trace uses most, ties to the
 * lower (layer, expert) index, until one does not fit; an expert the trace
 * never uses is never resident), and charges every step's request that
 * uses a non-resident expert its read, latency + bytes / rate, once per
 * step and layer, before that machine computes.
 *
 * The planner fits every machine's memory and minimises that simulated
 * time: a greedy start that gives each (layer, expert), heaviest first, to
 * the machine where it least raises its layer's estimated time; replicas
 * of the bottleneck's heaviest experts while memory lasts; then a local
 * search whose every move (move, replicate, drop a replica) is scored by
 * the simulator, layer by layer (layers add up, so each is searched on its
 * own). The naive equal split is searched from as well, and the better of
 * the two kept, so a plan never predicts slower than the naive split.
 * When neither start fits the machines' memory and some may use the disk
 * tier, it plans again with them holding more than their memory: the
 * experts in the trace's order of use, hottest first (so they are the
 * resident ones where they land), each where it least raises its layer's
 * estimate (a cold expert's expected reads included), then the same
 * search, every move judged by the simulator over each layer whose
 * residency it changes; the naive split, using the tier where it must, is
 * again the floor. When everything fits the tier changes nothing.
 *
 * Machines and placements are inputs from files, checked like any: every
 * id, count, size and time bounded.
 */
#ifndef MC_PLAN_H
#define MC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster_config.h"
#include "dtype.h"
#include "error.h"
#include "model.h"
#include "routing.h"
#include "wire.h"

#define MC_PLAN_MAX_MACHINES 256
#define MC_PLAN_MAX_CURVES 16   // weight-type combinations one machine profiles
#define MC_PLAN_MAX_POINTS 64   // measured row counts of one curve
#define MC_PLAN_MAX_FILE_BYTES (1u << 20)
// The default min_gain: the largest error of the simulator's predictions
// measured by deploy/plan-check.sh over the machine shapes in
// docs/PLACEMENT.md, rounded up.
#define MC_PLAN_MIN_GAIN 0.15

// One expert's step on one machine: ms for rows[i] rows at once.
typedef struct {
    mc_dtype_t types[3]; // gate, up, down
    uint32_t n;
    uint32_t rows[MC_PLAN_MAX_POINTS]; // increasing
    double ms[MC_PLAN_MAX_POINTS];
} mc_plan_curve_t;

typedef struct {
    char name[MC_CLUSTER_MAX_NAME + 1];
    char endpoint[MC_CLUSTER_MAX_ENDPOINT + 1]; // "" for the coordinator
    char public_key[41];                        // "" when none
    char host[MC_CLUSTER_MAX_NAME + 1];         // machines with one host share its cores (default: name)
    bool coordinator;
    uint32_t threads;       // compute threads of its process
    uint32_t cores;         // cores of its host (default: threads)
    double memory_mb;       // what it may give to experts (MiB; the coordinator's also holds the rest)
    double latency_ms;      // round trip to the coordinator (0 for the coordinator)
    double bandwidth_mbps;  // its link, megabits per second
    uint32_t n_curves;
    mc_plan_curve_t curves[MC_PLAN_MAX_CURVES];
    double layer_ms_1, layer_ms_8; // coordinator: norms, attention, router per layer, 1 and 8 rows
    double head_ms_1, head_ms_8;   // coordinator: output head, 1 and 8 rows
    double local_scale;            // coordinator: its expert step inside whole decode steps over its curves (1: none)
    double disk_mb_s;              // the model file's disk: transfer rate, 10^6 bytes/s (0: not measured)
    double disk_latency_ms;        // ... and a cold read's latency
    bool disk_tier;                // may hold more experts than memory_mb, reading the rest from disk
                                   // (default: when the disk keys are there; `disk_tier: false` forbids)
    uint32_t mem_limit_mb;         // not from the file: the --mem-limit it runs under (a cluster file's
                                   // mem_limit_mb, set by moe-plan --simulate), which then bounds its
                                   // resident experts instead of its budget (0: none)
} mc_plan_machine_t;

// The machines file: the coordinator first, then the nodes in file order.
typedef struct {
    mc_plan_machine_t *m; // (n)
    size_t n;
    // The coordinator's own time per node request (encoding and sending it,
    // waking for the answer, decoding and adding it), on the critical path:
    // half before the request leaves, half after the last answer.
    double request_ms;
} mc_plan_machines_t;

// Parse a machines file (see README, "Placement"): buf[0..len), name for
// messages. Errors name file:line:column.
mc_err_t mc_plan_machines_parse(const char *buf, size_t len, const char *name, mc_plan_machines_t *out, char *err);
mc_err_t mc_plan_machines_load(const char *path, mc_plan_machines_t *out, char *err);
void mc_plan_machines_free(mc_plan_machines_t *ms);

// The machines as cluster file c runs them, into out (a copy; free it with
// mc_plan_machines_free): each node under its mem_limit_mb, the coordinator
// under coord_limit_mb (its --mem-limit; 0: none). A machine without a
// limit keeps everything it holds resident, whatever its memory_mb, so its
// disk tier is off; one with a limit keeps its entry's tier (without disk
// figures its reads are not predicted). Nodes of c the machines lack are
// left to mc_plan_placement_from_config to refuse.
mc_err_t mc_plan_machines_as_run(const mc_plan_machines_t *ms, const mc_cluster_config_t *c, uint32_t coord_limit_mb,
                                 mc_plan_machines_t *out, char *err);

// What the planner needs of a model.
typedef struct {
    uint32_t n_layer, n_expert, k, dim;
    mc_dtype_t *types;       // (n_layer, n_expert, 3) gate, up, down
    uint64_t *bytes;         // (n_layer, n_expert) one expert's weights
    mc_wire_enc_t *auto_enc; // (n_layer, n_expert) what `wire: auto` sends for it
    uint64_t other_bytes;    // everything else (embeddings, attention, router, head): the coordinator's
    // (n_layer) 0 for a dense layer (model.h: mc_model_layer_moe), whose FFN
    // the coordinator computes: no rows sent, whatever a trace holds for it
    // (the router never ran there); NULL: every layer is MoE.
    uint8_t *moe;
} mc_plan_shape_t;

mc_err_t mc_plan_shape_from_model(const mc_model_t *m, mc_plan_shape_t *out, char *err);
void mc_plan_shape_free(mc_plan_shape_t *s);

// A placement: held[(i * n_layer + l) * n_expert + e] when machine i holds
// (l, e); machine 0, the coordinator, holds its local experts.
typedef struct {
    size_t n_machines;
    uint32_t n_layer, n_expert;
    uint8_t *held; // (n_machines, n_layer, n_expert)
} mc_plan_placement_t;

mc_err_t mc_plan_placement_new(mc_plan_placement_t *p, size_t n_machines, uint32_t n_layer, uint32_t n_expert,
                               char *err);
void mc_plan_placement_free(mc_plan_placement_t *p);

// A cluster file's placement over these machines: its nodes are found by
// name (each must be a machine), local experts go to the coordinator.
mc_err_t mc_plan_placement_from_config(const mc_cluster_config_t *c, const mc_plan_machines_t *ms,
                                       const mc_plan_shape_t *s, mc_plan_placement_t *out, char *err);

// The cluster file of a placement: every node machine (even one that holds
// nothing this time: it stays listed, with an empty block) with its
// endpoint and key, per-node holds blocks of consecutive layers with equal
// expert sets, local holds for the coordinator. model may be NULL.
mc_err_t mc_plan_placement_to_config(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const char *model,
                                     mc_wire_enc_t wire, mc_cluster_config_t **out, char *err);

// The limits a placement's disk-tier machines run under: each node of c
// (may be NULL) that holds more than its budget gets mem_limit_mb (the
// budget's whole MiB, what the simulator's resident set fills); returns the
// coordinator's --mem-limit the same way (0: none needed).
uint32_t mc_plan_mem_limits(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const mc_plan_shape_t *s,
                            mc_cluster_config_t *c);

// The naive equal split: the experts cut into equal contiguous ranges, one
// per node in file order, the same in every layer; nothing local.
mc_err_t mc_plan_naive(const mc_plan_machines_t *ms, const mc_plan_shape_t *s, mc_plan_placement_t *out, char *err);

typedef struct {
    uint32_t batch;       // tokens decoded together (>= 1)
    mc_wire_enc_t wire;   // the cluster's wire encoding
    uint32_t max_steps;   // steps of the trace replayed (0: all)
} mc_plan_sim_params_t;

// batch 1, auto, all steps.
mc_plan_sim_params_t mc_plan_sim_params_default(void);

typedef struct {
    uint32_t steps;
    double tok_s;           // batch tokens per step time
    double step_ms;         // mean time of one step (batch tokens)
    double attn_ms, head_ms, moe_ms; // its parts, per step
    double *busy_ms;        // (n_machines) expert compute per step, as measured alone
    double *rows;           // (n_machines) expert choices per step
    double *requests;       // (n_machines) requests per step (nodes)
    double *bytes;          // (n_machines) bytes on its link per step, both ways
    double *mem_mb;         // (n_machines) expert weights held, MiB
    double *resident_mb;    // (n_machines) of those, resident (the rest read from its disk)
    double *uses;           // (n_machines) experts it computes per step (each layer's distinct ones)
    double *misses;         // (n_machines) of those, read from its disk per step
    double *read_ms;        // (n_machines) its reads per step, ms
    double *layer_ms;       // (n_layer) mean time of each layer's expert step
} mc_plan_sim_t;

void mc_plan_sim_free(mc_plan_sim_t *r);

// Replay the trace of st over the placement. MC_ERR_ARG when the trace's
// shape is not the model's, a pair is held by nobody, a machine lacks a
// profile of some expert's types, or the trace has fewer tokens than batch.
mc_err_t mc_plan_simulate(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                          const mc_plan_placement_t *p, const mc_plan_sim_params_t *sp, mc_plan_sim_t *out,
                          char *err);

// Which held experts are resident: res[(i * n_layer + l) * n_expert + e]
// (n_machines x n_layer x n_expert bytes), as the simulator decides them
// (see the disk tier above; the trace of st gives the hot order).
mc_err_t mc_plan_resident(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                          const mc_plan_placement_t *p, uint8_t *res, char *err);

// Expert weights each machine may hold (bytes): memory_mb less a reserve
// (5%, at least 64 MiB) for the process, and for the coordinator less the
// model's other weights. budget[i], i over machines.
void mc_plan_budgets(const mc_plan_machines_t *ms, const mc_plan_shape_t *s, uint64_t *budget);

// MC_ERR_RANGE naming the first machine whose experts exceed its budget
// (a machine with the disk tier: whose budget is below its largest expert,
// the least a --mem-limit can be).
mc_err_t mc_plan_check_memory(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const mc_plan_shape_t *s,
                              char *err);

typedef struct {
    mc_plan_sim_params_t sim;
    bool local;           // may the coordinator hold experts
    bool replicas;        // may a pair be held twice
    uint32_t max_evals;   // simulator runs of the local search, per start (0: default 20000)
    uint32_t search_steps; // trace steps each search evaluation replays (0: default 256)
    // The naive split is kept unless the plan is predicted at least this
    // much faster (0.15: 15%): a smaller predicted gain is within the
    // simulator's measured error (docs/PLACEMENT.md), so it may be a loss.
    // Only when the naive split fits and is profiled; 0: any gain.
    double min_gain;
} mc_plan_params_t;

// batch 1, auto wire, local and replicas allowed, default budgets,
// min_gain MC_PLAN_MIN_GAIN.
mc_plan_params_t mc_plan_params_default(void);

// Plan a placement. MC_ERR_RANGE when the experts do not fit the machines'
// memory and none has the disk tier (with the totals in err). The naive
// split itself when the plan's predicted gain over it is below min_gain.
mc_err_t mc_plan_make(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                      const mc_plan_params_t *pp, mc_plan_placement_t *out, char *err);

// The human summary of a simulation: predicted speed and, per machine,
// experts, replicas, memory, rows, busy share and, with the disk tier,
// resident share, predicted hit rate and read time per step.
void mc_plan_report(FILE *f, const char *title, const mc_plan_placement_t *p, const mc_plan_machines_t *ms,
                    const mc_plan_shape_t *s, const mc_plan_sim_t *r);

#endif
