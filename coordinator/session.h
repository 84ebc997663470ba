/*
 * session: everything a run of moe-coordinator works with, set up once:
 * the model, its tokenizer, the engine (with a KV cache per sequence slot),
 * the cluster when the experts run on nodes, and the generation loop
 * (gen/scheduler.h), and under a memory limit the expert store with its
 * read-ahead from the router (gen/prefetch.h). The command line, the demo,
 * the terminal chat and the HTTP server all start here.
 */
#ifndef MC_SESSION_H
#define MC_SESSION_H

#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "error.h"
#include "expert_store.h"
#include "model.h"
#include "scheduler.h"
#include "chat.h"
#include "tokenizer.h"

struct mc_cluster_config;

typedef struct {
    const char *model;                       // GGUF path (required)
    const struct mc_cluster_config *cluster; // experts on these nodes; NULL: all here (borrowed)
    int threads;                             // compute threads
    uint32_t ctx;                            // KV cache per sequence; 0: 4096, at most the model's
    mc_dtype_t kv_type;                      // KV cache values: MC_DTYPE_F32 (default) or MC_DTYPE_F16
    bool pipeline;                           // pipelined passes through a cluster (engine.h)
    uint32_t n_seq;                          // sequences decoded together
    FILE *log;                               // cluster progress lines; NULL: quiet
    bool routing;                            // collect routing statistics (mc_session_routing)
    size_t prefix_cache;                     // bytes of saved prefixes (mc_scheduler_set_prefix_cache); 0: none
    uint32_t mem_limit_mb;                   // expert memory here (expert_store.h): the experts this process
                                             // computes (local ones, a lost node's share) read from the file
                                             // beyond it; 0: no limit
    mc_store_policy_t mem_policy;            // with mem_limit_mb: eviction (LFU by default)
    int mem_prefetch;                        // read ahead from: MC_STORE_PRED_* or -1 for none (the default)
    const char *chat_format;                 // --chat-format: a chat.h format name; NULL: the file's template,
                                             // else the vocabulary's (mc_chat_style_choose)
} mc_session_params_t;

// 1 thread, default context, 1 sequence, no cluster, no log.
mc_session_params_t mc_session_params_default(void);

typedef struct mc_session mc_session_t;

// NULL with err on failure (a missing file, a node that does not answer).
mc_session_t *mc_session_new(const mc_session_params_t *p, char *err);
void mc_session_destroy(mc_session_t **s);

const mc_model_t *mc_session_model(const mc_session_t *s);
const mc_tokenizer_t *mc_session_tokenizer(const mc_session_t *s);
mc_engine_t *mc_session_engine(mc_session_t *s);
mc_scheduler_t *mc_session_scheduler(mc_session_t *s);
// The expert step the engine uses (its nodes, their statistics): the
// cluster's, or the engine's local one.
mc_experts_t *mc_session_experts(mc_session_t *s);
// The model's file name without folder and ".gguf" (the API's model id).
const char *mc_session_model_id(const mc_session_t *s);

// The chat format of the model (chat.h: --chat-format, the file's template
// or the vocabulary). MC_ERR_UNSUPPORTED with the reason (an unknown
// template: name the format with --chat-format) when there is none; the
// chat modes (--chat, --serve) refuse to start then.
mc_err_t mc_session_chat_style(const mc_session_t *s, mc_chat_style_t *out, char *err);

// The routing statistics being collected (params.routing), else NULL.
struct mc_routing;
struct mc_routing *mc_session_routing(mc_session_t *s);

// The expert store under --mem-limit (its statistics), NULL without one.
mc_expert_store_t *mc_session_store(mc_session_t *s);

// Between requests (an idle chat, a server waiting for work): the
// cluster's heartbeats and probes (mc_experts_tick). No-op without one.
void mc_session_tick(mc_session_t *s);

// Per-node statistics and rows routed per expert, as text on f and, when
// json_path is given, as JSON there. No-op when the experts have no nodes.
mc_err_t mc_session_report(mc_session_t *s, FILE *f, const char *json_path, char *err);

#endif
