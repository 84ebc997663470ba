/*
 * testnodes: real moe-expert processes for the cluster tests (testnodes.h).
 */
#include "testnodes.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "testutil.h"

void mc_test_nodes_init(mc_test_nodes_t *ns) {
    *ns = (mc_test_nodes_t){0};
    for (size_t i = 0; i < MC_TEST_MAX_NODES; i++) ns->procs[i].out = -1;
}

void mc_test_nodes_start(mc_test_nodes_t *ns, size_t i, const mc_nodeproc_params_t *np) {
    char exe[1024], name[32], err[MC_ERR_LEN];
    if (i >= MC_TEST_MAX_NODES) fail_msg("node %zu: a test set holds %d nodes", i, MC_TEST_MAX_NODES);
    mc_nodeproc_params_t p = *np;
    if (!p.exe) p.exe = mc_test_bin("moe-expert", exe, sizeof exe);
    if (!p.name) {
        snprintf(name, sizeof name, "node-%zu", i + 1);
        p.name = name;
    }
    if (ns->n < i + 1) ns->n = i + 1; // stopped by the teardown even if this start fails halfway
    if (mc_nodeproc_start(&p, &ns->procs[i], err)) fail_msg("%s", err);
}

void mc_test_nodes_stop(mc_test_nodes_t *ns) {
    mc_nodeproc_stop(ns->procs, ns->n);
    ns->n = 0;
}
