/*
 * testmachines: machines files (plan.h: what moe-plan and the rebalance
 * loop know of each machine) for the planner, rebalance and server tests.
 *
 * Every file written here has a network line, a coordinator with 2 threads
 * and nodes with 1, each machine with one expert-time curve of two points
 * (1 and 32 rows) over a single weight type. The numbers are the test's:
 * mc_test_machines_split() gives the ones the rebalance tests share.
 */
#ifndef MC_TESTMACHINES_H
#define MC_TESTMACHINES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double latency_ms, bandwidth_mbps; // the network (request_ms 0)
    double coord_mb;                   // the coordinator's memory
    double layer_ms_1, layer_ms_8, head_ms_1, head_ms_8;
    double coord_ms_1, coord_ms_32;    // its time for an expert at 1 and 32 rows
    const char *type;                  // every curve's weight type ("Q4_0", "F32")
    double node_ms_1, node_ms_32;      // a node's time for an expert at 1 and 32 rows
    uint64_t node_bytes;               // a node curve's expert bytes (0: the key left out)
} mc_test_machines_t;

typedef struct {
    const char *name, *endpoint;
    double memory_mb;
    const char *extra; // more keys of the node, each line indented by 4 (NULL: none)
} mc_test_machine_t;

// A coordinator too slow at experts to hold any (50 ms a row) and nodes 50
// times faster, 4000 MiB each: splitting the experts between the nodes is
// predicted far faster than one node holding them all. type: the weights'.
mc_test_machines_t mc_test_machines_split(const char *type);

// The machines file of m and nodes[0..n) into buf (NUL-terminated; the
// test fails when it does not fit in cap).
char *mc_test_machines_yaml(const mc_test_machines_t *m, const mc_test_machine_t *nodes, size_t n, char *buf,
                            size_t cap);

#endif
