/*
 * demo: `moe-coordinator --demo`, a whole cluster on this machine.
 *
 * mc_demo_start() generates (once, cached) a random-weight Mixtral-shaped
 * model with moe-mkmodel's code, starts `nodes` moe-expert processes on
 * free loopback ports and makes a cluster configuration giving each an
 * equal share of the experts; the caller then runs whatever it wants on
 * it (a generation, the chat, the server) and mc_demo_stop() stops the
 * nodes, also after a failure.
 */
#ifndef MC_DEMO_H
#define MC_DEMO_H

#include <limits.h>
#include <stdint.h>

#include "cluster_config.h"
#include "error.h"
#include "nodeproc.h"

typedef struct {
    char model[PATH_MAX + 64];  // the generated model's path
    mc_cluster_config_t *cfg;   // the nodes (owned)
    mc_nodeproc_t *procs;       // (n) running moe-expert processes (owned)
    uint32_t n;
} mc_demo_t;

// Every node computes with `threads` threads. On failure everything started
// is stopped again and err says why.
mc_err_t mc_demo_start(uint32_t nodes, int threads, mc_demo_t *d, char *err);
void mc_demo_stop(mc_demo_t *d);

#endif
