/*
 * cluster_config: the cluster file, which tells the coordinator where its
 * expert nodes are and which (layer, expert) pairs each of them holds.
 *
 *   model: models/mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf  # optional; relative to this file
 *   wire: auto                # auto | f32 | f16 | bf16 | q8_0 | q8_1 | q8_k (default auto)
 *   timeout_ms: 5000          # 1..600000 (default 5000)
 *   retry_ms: 2000            # probe a dead node this often to let it rejoin;
 *                             # 0..600000, 0 = never (default 2000)
 *   secret_key: keys/coordinator.key   # optional: the coordinator's CURVE secret key
 *                             # (moe-keygen), relative to this file
 *   heartbeat_ms: 1000        # an idle node hears from the coordinator this often
 *                             # (keeps its lease, notices a dead node); 0..600000,
 *                             # 0 = never (default 1000)
 *   load_timeout_ms: 0        # how long a node may take to load its share; 0 (default):
 *                             # as long as it reports progress at least every timeout_ms
 *   dead_ms: 1500             # a connected node whose transport heartbeats (answered
 *                             # by ZeroMQ's I/O thread even while it computes) stop for
 *                             # this long is lost at once; 500..600000, 0 = off
 *   slow_ms: 250              # a request unanswered for max(slow_ms, 4 x the node's usual
 *                             # time for as many rows) has its share computed here and
 *                             # the node sits out a while (backing off); 0 = never
 *   transfer_mbps: 0          # cap of the experts sent to nodes without a model file
 *                             # (moe-expert --cache-dir), all together, in Mbit/s, so
 *                             # a shared link keeps room for generation; 0 = no cap
 *   rebalance:                # optional: live rebalancing (moe-coordinator --serve)
 *     every_s: 300            # look at the recent routing this often; 1..86400
 *     min_gain: 0.10          # stage a plan predicted at least this much faster
 *                             # (old step time / new - 1); 0 <= min_gain < 10
 *     machines: machines.yaml # the planner's machines file (moe-plan --machines),
 *                             # relative to this file; required
 *     window: 32              # decode steps timed before and after a switch; 4..100000
 *     tolerance: 0.05         # a switch measured slower by more than this share
 *                             # is rolled back; 0..1
 *   nodes:                    # required, at least one
 *     - name: pi-1            # required, unique, [A-Za-z0-9._-]{1,64}
 *       endpoint: tcp://10.0.0.11:5555   # required, unique; tcp://HOST:PORT, ipc://PATH, inproc://NAME
 *       experts: 0-1          # default all
 *       layers: 0-15          # default all
 *       public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # the node's .pub: traffic
 *                             # to it is encrypted and only goes to that node
 *     - name: pi-2            # a placement that differs per layer: instead of
 *       endpoint: ...         # experts/layers, the union of several blocks
 *       holds:
 *         - {layers: 0-15, experts: [0, 3]}
 *         - {layers: 16-31, experts: 5-7}
 *   discover: true            # nodes announced on the network (mDNS/DNS-SD, moe-expert
 *                             # --announce) join while serving when their key is listed
 *                             # below; needs secret_key (default false; discovery.h)
 *   discover_keys:            # the announced public keys that may join (Z85, the nodes' .pub)
 *     - "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
 *   discover_experts: 0-7     # what an announced node holds when it joins (default none)
 *   discover_layers: all      # (default all)
 *   local:                    # what the coordinator computes itself
 *     experts: 6-7            # default none
 *     layers: all             # default all
 *                             # (or holds: blocks, as for a node)
 *
 * A node holds the pair (l, e) when l is in its layers and e in its experts.
 * An id set is a number (3), a range (0-7), a comma list in one string
 * ("0-3, 6"), a YAML sequence of numbers and ranges ([0-1, 4]), all or none.
 *
 * The file is written by hand, so every error names file:line:column (from
 * libyaml's marks) and what is wrong, and it is untrusted input: the size is
 * capped, aliases are refused, ids are bounded, and parsing follows the
 * schema event by event, failing at the first value of an unexpected kind,
 * so nesting can never go deeper than the schema's four levels.
 */
#ifndef MC_CLUSTER_CONFIG_H
#define MC_CLUSTER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "wire.h"

#define MC_CLUSTER_MAX_EXPERTS 256 // expert ids 0..255
#define MC_CLUSTER_MAX_LAYERS 4096 // layer ids 0..4095
#define MC_CLUSTER_MAX_NODES 1024
#define MC_CLUSTER_MAX_MEM_MB 16777216u // a node's mem_limit_mb (16 TiB)
#define MC_CLUSTER_MAX_NAME MC_WIRE_NAME_MAX // bytes of a node name (it travels in Hello)
#define MC_CLUSTER_MAX_ENDPOINT 256          // bytes of an endpoint
#define MC_CLUSTER_MAX_PATH 4095             // bytes of the model path
#define MC_CLUSTER_MAX_FILE_BYTES (1u << 20)
#define MC_CLUSTER_DEFAULT_TIMEOUT_MS 5000u
#define MC_CLUSTER_MAX_TIMEOUT_MS 600000u
#define MC_CLUSTER_DEFAULT_RETRY_MS 2000u
#define MC_CLUSTER_DEFAULT_HEARTBEAT_MS 1000u
#define MC_CLUSTER_DEFAULT_DEAD_MS 1500u
#define MC_CLUSTER_MIN_DEAD_MS 500u // nodes PING every 250 ms (node.c): at least two per dead_ms
#define MC_CLUSTER_DEFAULT_SLOW_MS 250u
#define MC_CLUSTER_MAX_LOAD_MS 86400000u // a day
#define MC_CLUSTER_MAX_TRANSFER_MBPS 1000000u // 1 Tbit/s
#define MC_CLUSTER_MIN_REBALANCE_S 1u        // rebalance every_s bounds
#define MC_CLUSTER_MAX_REBALANCE_S 86400u
#define MC_CLUSTER_DEFAULT_REBALANCE_WINDOW 32u
#define MC_CLUSTER_MIN_REBALANCE_WINDOW 4u
#define MC_CLUSTER_MAX_REBALANCE_WINDOW 100000u

// Id sets as bitsets: bit i of bits[i / 64] is id i.
typedef struct {
    uint64_t bits[MC_CLUSTER_MAX_EXPERTS / 64];
} mc_expert_set_t;

typedef struct {
    uint64_t bits[MC_CLUSTER_MAX_LAYERS / 64];
} mc_layer_set_t;

// Parse an id set written as in the file ("3", "0-7", "0-3, 6", "all",
// "none"); MC_ERR_FORMAT with a message naming the bad item. 'all' is every
// id the set can hold, so it keeps meaning all whatever the model's shape.
mc_err_t mc_expert_set_parse(const char *text, mc_expert_set_t *out, char *err);
mc_err_t mc_layer_set_parse(const char *text, mc_layer_set_t *out, char *err);

bool mc_expert_set_has(const mc_expert_set_t *s, uint32_t expert);
bool mc_layer_set_has(const mc_layer_set_t *s, uint32_t layer);

// Write the set compactly ("0-3,6"; "" when empty) into buf, NUL-terminated
// and cut to cap bytes; returns the full length, like snprintf.
size_t mc_expert_set_format(const mc_expert_set_t *s, char *buf, size_t cap);
size_t mc_layer_set_format(const mc_layer_set_t *s, char *buf, size_t cap);

// A place in the file, 1-based; line 0 when the value did not come from a
// file (defaulted, or added with mc_cluster_config_add_node).
typedef struct {
    uint32_t line, col;
} mc_cluster_mark_t;

// One (layers, experts) block of a node's placement.
typedef struct {
    mc_layer_set_t layers;
    mc_expert_set_t experts;
    mc_cluster_mark_t at;
} mc_cluster_hold_t;

typedef struct {
    char *name;     // owned
    char *endpoint; // owned
    mc_expert_set_t experts;
    mc_layer_set_t layers;
    mc_cluster_mark_t at;         // the node's mapping
    mc_cluster_mark_t experts_at; // its experts value
    mc_cluster_mark_t layers_at;  // its layers value
    char public_key[41];          // Z85 CURVE key of the node; "" when none
    // `holds:` instead of experts/layers: the union of these blocks (a
    // placement that differs per layer, as moe-plan writes). Owned.
    mc_cluster_hold_t *holds;
    size_t n_holds;
    // The memory the node's experts may take (moe-expert --mem-limit), MiB;
    // 0: none. The node applies its own flag: the coordinator only reads
    // this (the tools that start nodes pass it on, moe-plan models it).
    uint32_t mem_limit_mb;
} mc_cluster_node_t;

// The `rebalance:` block (live rebalancing, coordinator/serve/rebalance.h).
typedef struct {
    bool on;                  // the block is there
    uint32_t every_s;         // MC_CLUSTER_MIN_REBALANCE_S..MC_CLUSTER_MAX_REBALANCE_S
    double min_gain;          // 0 <= min_gain < 10
    char *machines;           // as written (owned)
    char *machines_resolved;  // relative to the file's folder (owned)
    uint32_t window;          // decode steps timed on each side of a switch
    double tolerance;         // 0..1
} mc_cluster_rebalance_t;

typedef struct mc_cluster_config {
    char *path;           // file name as given to parse/load (owned; NULL if none)
    char *model;          // as written (owned; NULL when absent)
    char *model_resolved; // relative to the file's folder (owned; NULL when absent)
    char *secret_key;     // the coordinator's CURVE secret key file, as written (owned; NULL: none)
    char *secret_key_resolved;
    mc_wire_enc_t wire;
    uint32_t timeout_ms;
    uint32_t retry_ms;    // 0: a dead node stays dead
    uint32_t heartbeat_ms; // 0: no heartbeats
    uint32_t load_timeout_ms; // a node's loading in all; 0: no bound while it reports progress
    uint32_t dead_ms;         // transport silence that loses a connected node at once; 0: off
    uint32_t slow_ms;         // floor of the wait before a slow node's share is computed here; 0: never
    uint32_t transfer_mbps;   // cap of the slices sent to nodes without a model file, Mbit/s; 0: none
    mc_cluster_node_t *nodes; // n_nodes, in file order (owned)
    size_t n_nodes;
    mc_expert_set_t local_experts;
    mc_layer_set_t local_layers;
    mc_cluster_mark_t local_experts_at, local_layers_at;
    mc_cluster_hold_t *local_holds; // `holds:` under local, as for a node (owned)
    size_t n_local_holds;
    mc_cluster_mark_t local_holds_at;
    mc_cluster_rebalance_t rebalance;
    // Discovery: announced nodes whose key is in discover_keys join holding
    // discover_experts x discover_layers (the server, membership.h).
    bool discover;
    char (*discover_keys)[41]; // Z85 public keys (owned)
    size_t n_discover_keys;
    mc_expert_set_t discover_experts; // default none
    mc_layer_set_t discover_layers;   // default all
} mc_cluster_config_t;

// Parse buf[0..len) (need not be NUL-terminated). filename is used in
// messages ("<input>" when NULL) and to resolve a relative model path. NULL
// on failure with "file:line:col: what is wrong" in err.
mc_cluster_config_t *mc_cluster_config_parse(const char *buf, size_t len, const char *filename, char *err);

// Read path (at most MC_CLUSTER_MAX_FILE_BYTES) and parse it.
mc_cluster_config_t *mc_cluster_config_load(const char *path, char *err);

// Free c and everything it owns; sets *c to NULL; safe on NULL or twice.
void mc_cluster_config_destroy(mc_cluster_config_t **c);

// Against a model of n_layer layers and n_expert experts: ids beyond the
// model are MC_ERR_RANGE (naming the node and file:line:col), and every pair
// must be held by a node or local, else MC_ERR_FORMAT listing the missing
// pairs compactly ("layers 0-15 expert 7; layers 16-31 experts 6-7"). A set
// holding every id it can (all) is never beyond the model. A model larger
// than the sets can describe is MC_ERR_UNSUPPORTED.
mc_err_t mc_cluster_config_check(const mc_cluster_config_t *c, uint32_t n_layer, uint32_t n_expert, char *err);

bool mc_cluster_node_holds(const mc_cluster_node_t *n, uint32_t layer, uint32_t expert);
bool mc_cluster_config_local_holds(const mc_cluster_config_t *c, uint32_t layer, uint32_t expert);

// Building a config in code (the demo, tests): an empty config with the
// defaults (no model, auto wire, 5000 ms, no nodes, local holds nothing), then
// nodes and the model. Values are checked as the parser checks them
// (MC_ERR_ARG); experts / layers NULL mean all.
mc_cluster_config_t *mc_cluster_config_new(void);
mc_err_t mc_cluster_config_add_node(mc_cluster_config_t *c, const char *name, const char *endpoint,
                                    const mc_expert_set_t *experts, const mc_layer_set_t *layers, char *err);
// Take node i out (its placement with it).
mc_err_t mc_cluster_config_remove_node(mc_cluster_config_t *c, size_t i, char *err);
// A copy of c (written as a file and parsed back; relative paths resolve
// as c's did). NULL with err on failure (a config the parser refuses).
mc_cluster_config_t *mc_cluster_config_clone(const mc_cluster_config_t *c, char *err);
mc_err_t mc_cluster_config_set_model(mc_cluster_config_t *c, const char *model, char *err);
mc_err_t mc_cluster_config_set_secret_key(mc_cluster_config_t *c, const char *path, char *err);
// dst takes src's settings: wire, the millisecond keys, model, secret key,
// rebalance (paths as src resolved them) and, when dst has none, src's path.
// Nodes and local holds are not touched.
mc_err_t mc_cluster_config_copy_settings(mc_cluster_config_t *dst, const mc_cluster_config_t *src, char *err);

// Turn the rebalance block on with these values (checked as the parser
// checks them; machines resolved against c's file as the parser would).
mc_err_t mc_cluster_config_set_rebalance(mc_cluster_config_t *c, uint32_t every_s, double min_gain,
                                         const char *machines, uint32_t window, double tolerance, char *err);
mc_err_t mc_cluster_config_set_node_key(mc_cluster_config_t *c, size_t i, const char *public_key, char *err);
// Add a (layers, experts) block to node i's `holds` (its experts/layers sets
// no longer count once it has one).
mc_err_t mc_cluster_config_add_hold(mc_cluster_config_t *c, size_t i, const mc_layer_set_t *layers,
                                    const mc_expert_set_t *experts, char *err);

// Whether key (Z85) is one of discover_keys.
bool mc_cluster_config_discover_allows(const mc_cluster_config_t *c, const char *key);

// The same for the coordinator's own experts (`local: holds:`).
mc_err_t mc_cluster_config_add_local_hold(mc_cluster_config_t *c, const mc_layer_set_t *layers,
                                          const mc_expert_set_t *experts, char *err);

// Write c as a cluster file that parses back to the same config (model as
// written, every key explicit). MC_ERR_ARG for a config the parser would
// refuse (no nodes, bad wire or timeout), MC_ERR_IO when f fails.
mc_err_t mc_cluster_config_write(const mc_cluster_config_t *c, FILE *f, char *err);

#endif
