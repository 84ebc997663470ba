/*
 * testnodes: real moe-expert processes on 127.0.0.1 for the tests that run a
 * cluster (nodeproc.h starts and stops them), so each such test keeps only
 * its own placements and checks.
 *
 * A test keeps its nodes in a file-scope mc_test_nodes_t and stops them in
 * its per-test teardown: a failing assertion jumps out of the test body, so
 * the body alone cannot be trusted to stop them. The program is the build
 * folder's moe-expert ($MC_BIN_DIR, set by ctest) unless the params name one.
 */
#ifndef MC_TESTNODES_H
#define MC_TESTNODES_H

#include <stddef.h>

#include "nodeproc.h"

#define MC_TEST_MAX_NODES 4

typedef struct {
    mc_nodeproc_t procs[MC_TEST_MAX_NODES];
    size_t n; // procs[0..n) may have been started: those are stopped
} mc_test_nodes_t;

// None started (no descriptor either: a zeroed set would close stdin).
void mc_test_nodes_init(mc_test_nodes_t *ns);

// Node i of ns from np (exe NULL: $MC_BIN_DIR/moe-expert; name NULL:
// "node-<i+1>"), its endpoint announced; the test fails when it cannot start.
void mc_test_nodes_start(mc_test_nodes_t *ns, size_t i, const mc_nodeproc_params_t *np);

// Stop (SIGTERM, then SIGKILL) and reap every node started; ns is empty again.
void mc_test_nodes_stop(mc_test_nodes_t *ns);

#endif
