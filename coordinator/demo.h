/*
 * demo: `moe-coordinator --demo`, the whole cluster on one machine.
 *
 * Generates (once, cached) a random-weight Mixtral-shaped model with
 * moe-mkmodel, starts --nodes moe-expert processes on free loopback ports,
 * gives each an equal share of the experts, generates text through them,
 * prints the statistics and stops the nodes it started, also on failure.
 */
#ifndef MC_DEMO_H
#define MC_DEMO_H

#include "cli.h"

// Returns the process exit code.
int mc_demo_run(const mc_cli_opts_t *o);

#endif
