/*
 * cli: the moe-coordinator command line: option parsing into mc_cli_opts_t
 * and the run modes (generate, tokenize, evaluate ids and dump logits).
 *
 * Parsing is separate from running so tests can check every flag and error
 * message without starting a model.
 */
#ifndef MC_CLI_H
#define MC_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "sampler.h"

typedef enum {
    MC_CLI_MODE_GENERATE = 0, // --prompt (or --token-ids without a dump)
    MC_CLI_MODE_TOKENIZE,     // --tokenize / --tokenize-file
    MC_CLI_MODE_IDS,          // --token-ids: evaluate given ids, dump logits, optional -n
    MC_CLI_MODE_HELP,
    MC_CLI_MODE_DEMO,         // --demo
} mc_cli_mode_t;

typedef struct {
    mc_cli_mode_t mode;
    const char *model;         // --model
    const char *prompt;        // --prompt
    const char *tokenize_text; // --tokenize
    const char *tokenize_file; // --tokenize-file
    int32_t *ids;              // --token-ids (owned, n_ids entries)
    size_t n_ids;
    const char *dump_logits;   // --dump-logits
    int64_t n_predict;         // -n (-1: mode default)
    mc_sampler_params_t sampling;
    bool seed_given;
    int threads;               // --threads
    uint32_t ctx;              // --ctx (0: default 4096 clipped to the model)
    const char *cluster;       // --cluster FILE: experts on the nodes it lists
    const char *stats_json;    // --stats-json FILE (with --cluster or --demo)
    bool demo;                 // --demo: start local nodes and generate
    uint32_t demo_nodes;       // --nodes N (with --demo)
} mc_cli_opts_t;

void mc_cli_opts_init(mc_cli_opts_t *o);
void mc_cli_opts_free(mc_cli_opts_t *o);

// Parse argv into o. MC_ERR_ARG with a one-line message on a bad flag/value.
mc_err_t mc_cli_parse(int argc, char **argv, mc_cli_opts_t *o, char *err);

// Print --help (every flag with its default) to f.
void mc_cli_usage(FILE *f);

// Run the parsed command; returns the process exit code (0 ok, 1 runtime
// error, reported on stderr as one line).
int mc_cli_run(const mc_cli_opts_t *o);

// Run a generate/ids/tokenize command on model_path, with the experts on
// the cluster cfg when it is not NULL (the demo builds its own cfg).
struct mc_cluster_config;
int mc_cli_run_with(const mc_cli_opts_t *o, const char *model_path, const struct mc_cluster_config *cfg);

#endif
