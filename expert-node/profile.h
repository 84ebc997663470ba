/*
 * profile: what this machine can do with a model, measured, for the
 * placement planner (moe-plan): usable memory, the time of one expert's
 * feed-forward step (gate, up, down) for 1 to 32 rows at a time, per
 * distinct weight-type combination, and the time of everything else a
 * coordinator does per layer and per token (norms, attention, router) and
 * for the output head. `moe-expert --profile` prints it as the YAML node
 * entry moe-plan reads.
 */
#ifndef MC_PROFILE_H
#define MC_PROFILE_H

#include <stdio.h>

#include "error.h"

// Measure with `threads` threads and write the YAML to out. name: the node's
// name in the entry. A few seconds per distinct expert type combination.
mc_err_t mc_profile_run(const char *model_path, const char *name, int threads, FILE *out, char *err);

#endif
