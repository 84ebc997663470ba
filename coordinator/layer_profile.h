/*
 * layer_profile: `moe-coordinator --profile`: the machine's profile
 * (profile.h: memory, one expert's step for 1..32 rows) plus what a
 * coordinator does per layer and per token (norms, attention, router) and
 * for the output head, measured in whole decode steps of the engine, for 1
 * and 8 rows. The result is the coordinator entry of moe-plan's machines
 * file.
 */
#ifndef MC_LAYER_PROFILE_H
#define MC_LAYER_PROFILE_H

#include <stdio.h>

#include "error.h"

// Measure with `threads` threads and write the YAML entry to out. name: the
// machine's name in the entry (NULL: the host name).
mc_err_t mc_layer_profile_run(const char *model_path, const char *name, int threads, FILE *out, char *err);

#endif
