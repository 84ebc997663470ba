/*
 * cli: the moe-coordinator command line: option parsing into mc_cli_opts_t
 * and the run modes (generate, tokenize, evaluate ids and dump logits,
 * terminal chat, HTTP server, the demo cluster, routing statistics, this
 * machine's profile for moe-plan).
 *
 * Parsing is separate from running so tests can check every flag and error
 * message without starting a model.
 */
#ifndef MC_CLI_H
#define MC_CLI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "error.h"
#include "sampler.h"

typedef enum {
    MC_CLI_MODE_GENERATE = 0, // --prompt
    MC_CLI_MODE_TOKENIZE,     // --tokenize / --tokenize-file
    MC_CLI_MODE_IDS,          // --token-ids: evaluate given ids, dump logits, optional -n
    MC_CLI_MODE_HELP,
    MC_CLI_MODE_CHAT,         // --chat: interactive terminal chat
    MC_CLI_MODE_SERVE,        // --serve: OpenAI-compatible HTTP server
    MC_CLI_MODE_PROFILE_ROUTING, // --profile-routing: run a text corpus for routing statistics
    MC_CLI_MODE_PROFILE,      // --profile: measure this machine, print moe-plan's coordinator entry
    MC_CLI_MODE_DISCOVER,     // --discover: list the nodes announced on the network
} mc_cli_mode_t;

// --speculate's default through a cluster (cli.c says why; 0 on one machine).
#define MC_CLI_SPECULATE_CLUSTER 8

typedef struct {
    atomic_int *reload; // set non-zero by SIGHUP under --serve (main.c): the cluster file is read again; NULL: never
    mc_cli_mode_t mode;        // from the flags below, by mc_cli_parse
    const char *model;         // --model
    const char *prompt;        // --prompt
    const char *tokenize_text; // --tokenize
    const char *tokenize_file; // --tokenize-file
    const char *token_ids;     // --token-ids LIST, parsed into ids
    int32_t *ids;              // the ids of --token-ids (owned, n_ids entries)
    size_t n_ids;
    const char *dump_logits;   // --dump-logits
    int n_predict;             // -n (-1: mode default)
    mc_sampler_params_t sampling;
    bool seed_given;
    int threads;               // --threads
    uint32_t ctx;              // --ctx (0: default 4096 clipped to the model)
    uint32_t prefix_cache_mb;  // --prefix-cache-mb: saved prefixes beyond the sequences' caches
    bool pipeline;             // --pipeline: passes through a cluster in two groups of rows (engine.h)
    mc_dtype_t kv_type;        // --kv-type: the KV cache's values, MC_DTYPE_F32 (default) or MC_DTYPE_F16
    uint32_t speculate;        // --speculate K: guessed tokens verified per step at most (0: off)
    uint32_t mem_limit_mb;     // --mem-limit (0: every expert resident)
    int mem_prefetch;          // --mem-prefetch: MC_STORE_PRED_* or -1 (none, the default)
    const char *cluster;       // --cluster FILE: experts on the nodes it lists
    const char *stats_json;    // --stats-json FILE (with --cluster or --demo)
    bool demo;                 // --demo: start local nodes first
    uint32_t demo_nodes;       // --nodes N (with --demo)
    // The modes that take no text (mode says which was given).
    bool chat, serve, profile_routing, profile;
    // Chat and server.
    bool safe_prompt;          // --safe-prompt: Mistral's safety system prompt
    const char *chat_format;   // --chat-format: the chat format (chat.h) instead of the file's template
    const char *system;        // --system TEXT (chat)
    const char *host;          // --host (serve)
    uint32_t port;             // --port (serve)
    uint32_t parallel;         // --parallel: sequences decoded together (serve)
    const char *api_key;       // --api-key (or --api-key-file): required bearer token (serve)
    const char *api_key_file;  // --api-key-file FILE, read into api_key_buf
    char api_key_buf[256];     // the key read by --api-key-file
    const char *web_dir;       // --web DIR: serve these files at / instead of the built-in page
    const char *cors_origin;  // --cors-origin: origins allowed to call from a browser
    const char *routing_stats; // --routing-stats FILE: routing statistics written at the end
    const char *prompt_file;   // --prompt-file FILE (with --profile-routing)
    const char *name;          // --name NAME (with --profile): the machine's name in the entry
    bool discover;             // --discover
    uint32_t discover_timeout; // --discover-timeout S: how long --discover browses
} mc_cli_opts_t;

void mc_cli_opts_init(mc_cli_opts_t *o);
void mc_cli_opts_free(mc_cli_opts_t *o);

// Parse argv into o (initialised by mc_cli_opts_init) with the flags' table
// (common/flags.h). MC_ERR_ARG with a one-line message on a bad flag or value
// or flags that do not go together; o is unchanged then.
mc_err_t mc_cli_parse(int argc, char **argv, mc_cli_opts_t *o, char *err);

// Print --help (every flag with its default and bounds) to f.
void mc_cli_usage(FILE *f);

// Run the parsed command; returns the process exit code (0 ok, 1 runtime
// error, reported on stderr as one line; 130 when a generation was
// interrupted). *stop (may be NULL) becomes non-zero on Ctrl-C/SIGTERM
// (main.c): a generation, an answer or the server stops then.
int mc_cli_run(const mc_cli_opts_t *o, atomic_int *stop);

#endif
