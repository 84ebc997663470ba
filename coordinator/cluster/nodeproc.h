/*
 * nodeproc: start and stop local moe-expert processes.
 *
 * The demo and the cluster tests run real nodes on 127.0.0.1: each binds a
 * free port (tcp://127.0.0.1:*) and announces it on its first stdout line,
 * which is read back here. Stopping is SIGTERM, then SIGKILL after a grace
 * period, always reaping the child.
 */
#ifndef MC_NODEPROC_H
#define MC_NODEPROC_H

#include <stddef.h>
#include <sys/types.h>

#include "error.h"

typedef struct {
    pid_t pid;           // 0: not running
    int out;             // read end of the node's stdout
    char endpoint[256];  // announced endpoint
} mc_nodeproc_t;

// Path of a program next to this executable (moe-expert beside
// moe-coordinator), into buf.
void mc_nodeproc_sibling(const char *name, char *buf, size_t cap);

typedef struct {
    const char *exe;    // moe-expert
    const char *model;  // GGUF path
    const char *cache_dir; // instead of model: a node without a model file (--cache-dir)
    unsigned fetch_chunk_kib; // with cache_dir: --fetch-chunk-kib; 0: the node's default
    unsigned cache_mb;        // with cache_dir: --cache-mb; 0: none
    const char *name;   // node name
    const char *listen; // endpoint to bind (default tcp://127.0.0.1:*, a free port)
    int threads;        // default 1
    int timeout_ms;     // for the endpoint announcement; default 20000
    unsigned lease_ms;  // --lease-ms; 0: the node's default
    unsigned mem_limit_mb; // --mem-limit; 0: none (every held expert resident)
    const char *secret_key, *authorized_keys; // CURVE (both or neither; NULL: none)
} mc_nodeproc_params_t;

mc_nodeproc_params_t mc_nodeproc_params_default(void);

// Start `exe (--model model | --cache-dir DIR [--fetch-chunk-kib N]) --listen listen --name name --threads threads
// [--lease-ms lease_ms] [--mem-limit MB] [--secret-key F --authorized-keys F]` and wait (up to timeout_ms) for its endpoint. On failure the process is
// stopped and err says why.
mc_err_t mc_nodeproc_start(const mc_nodeproc_params_t *params, mc_nodeproc_t *p, char *err);

// Stop (SIGTERM, SIGKILL after 2 s) and reap every started process of procs.
void mc_nodeproc_stop(mc_nodeproc_t *procs, size_t n);

#endif
