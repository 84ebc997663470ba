/*
 * transfer: the coordinator's side of nodes without a model file.
 *
 * A thread of its own with a socket of its own per node (a second DEALER
 * to the node's endpoint, CURVE like the node's link), so slices never wait
 * behind expert requests and generation never waits behind slices. About
 * once a second it tells every node which session it serves (FetchOpen);
 * a node fetching its share then asks for chunks of the slices it lacks
 * (SliceRequest: a pair, an offset, a length) and gets them from the
 * coordinator's mapped model file (SliceData), in order. The service keeps
 * no state per node beyond counters: a node decides what it needs, so
 * either side may restart at any time (the node resumes from what it has).
 *
 * mbps caps all transfers together (0: no cap), so a link shared with
 * generation keeps room for it. Per node it counts bytes sent, the rate
 * over the last seconds and what the node said it still needs, for the
 * coordinator's log (every few seconds while a node fetches, and when it is
 * done), /v1/cluster and the dashboard. Nodes may be added and removed
 * while it runs (mc_transfer_add, mc_transfer_remove).
 */
#ifndef MC_TRANSFER_H
#define MC_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "keys.h"
#include "model.h"
#include "wire.h"

typedef struct {
    const char *name;       // borrowed
    const char *endpoint;   // borrowed
    const char *server_key; // the node's CURVE public key; NULL: none
} mc_transfer_node_t;

typedef struct {
    void *zctx;                  // borrowed
    const mc_model_t *m;         // the model served (borrowed; outlives the service)
    const mc_wire_limits_t *lim; // what requests may name (borrowed)
    uint64_t session;
    double mbps;                 // cap of all transfers together, Mbit/s; 0: none
    const mc_keypair_t *keys;    // ours, for nodes with a server_key (borrowed)
    FILE *log;                   // progress lines; NULL: quiet
    const mc_transfer_node_t *nodes; // (n_nodes), borrowed for the call
    size_t n_nodes;
} mc_transfer_params_t;

typedef struct {
    uint64_t bytes;     // sent since the start
    uint64_t remaining; // what the node said it still needs after its last request
    double rate;        // bytes/s over the last seconds
    double eta_s;       // remaining / rate; 0 when not fetching
    bool active;        // asked for something in the last seconds
} mc_transfer_stats_t;

typedef struct mc_transfer mc_transfer_t;

// Sockets made and the thread started. NULL with err on failure.
mc_transfer_t *mc_transfer_new(const mc_transfer_params_t *p, char *err);

// Stop the thread, close the sockets; safe twice.
void mc_transfer_destroy(mc_transfer_t **t);

// The counters of the node of that name (any thread); false (and zeros)
// when there is none.
bool mc_transfer_stats(mc_transfer_t *t, const char *name, mc_transfer_stats_t *out);

// Nodes that join or leave while the cluster runs (cluster.h:
// mc_cluster_request): queued here (any thread, nd's strings copied) and
// taken up by the thread at its next pass, within a few milliseconds. A
// node added twice under one name replaces the first.
mc_err_t mc_transfer_add(mc_transfer_t *t, const mc_transfer_node_t *nd, char *err);
void mc_transfer_remove(mc_transfer_t *t, const char *name);

#endif
