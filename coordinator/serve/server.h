/*
 * server: `moe-coordinator --serve`, the OpenAI-compatible HTTP API, the
 * web chat and cluster dashboard, and Prometheus metrics, on a session.
 *
 *   GET  /                      web page (chat panel and cluster dashboard)
 *   GET  /health                liveness, nodes alive
 *   GET  /metrics               Prometheus text (metrics.h)
 *   GET  /v1/models[/ID]        the loaded model
 *   GET  /v1/cluster            nodes, placement (and a staged one), liveness, statistics, live
 *                               rebalancing's state and last outcome (rebalance.h)
 *   POST /v1/cluster/nodes, DELETE /v1/cluster/nodes/NAME, PUT /v1/cluster/placement
 *                               live membership and placement (membership.h); SIGHUP
 *                               re-reads the cluster file (mc_server_reload)
 *   POST /v1/chat/completions   a chat (chat.h), streamed as server-sent
 *                               events with "stream": true; logprobs
 *   POST /v1/completions        a raw prompt, the same options
 *   POST /v1/responses          OpenAI's Responses API (responses.h)
 *   /api/chat, /api/generate, /api/tags, /api/show, /api/version
 *                               Ollama's API (ollama.h), NDJSON streams
 *
 * Every route answers OPTIONS (a CORS preflight) and names its methods in
 * an Allow header on a 405; pages on the origins --cors-origin lists may
 * call it from a browser (cors.h).
 * HTTP is libmicrohttpd, a thread per connection (with a connection limit,
 * a per-address limit and an idle timeout); bodies are capped before they
 * are parsed (api.h). Requests never touch the engine: they queue
 * generations for the one engine thread, which decodes all of them together
 * (scheduler.h: each in its own sequence slot, one pass per token for all)
 * and hands text back through per-request buffers. A client that goes away
 * (mid-stream or while waiting) cancels its generation at the next token.
 * Bad requests get the OpenAI error object (Ollama's under /api) with the
 * right 4xx status, and the server keeps serving. A stream the server has
 * to stop (shutting down, a failed pass) ends with an error event, never
 * with what looks like a finished answer.
 */
#ifndef MC_SERVER_H
#define MC_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "sampler.h"
#include "session.h"

typedef struct {
    const char *host;          // address to bind (default 127.0.0.1)
    uint16_t port;             // 0: any free port (mc_server_port says which)
    const char *api_key;       // required as "Authorization: Bearer KEY" on /v1 and /api; NULL: none
    const char *cors_origin;   // origins whose pages may call the API ("*" or a comma-separated list, cors.h); NULL: none
    const char *web_dir;       // serve the page from here; NULL: the built-in one
    mc_sampler_params_t sampling; // defaults of requests (the command line's)
    uint32_t max_tokens;       // default answer limit; 0: until the context is full
    bool safe_prompt;          // Mistral's safety prompt on every chat
    uint32_t max_connections;  // open connections (default 256)
    uint32_t max_per_ip;       // open connections per client address (default 128)
    uint32_t idle_timeout_s;   // an idle connection is closed after this (default 60)
    size_t max_body;           // bytes of a request body (default 1 MiB)
    FILE *log;                 // one line per generation request, when it has ended; NULL: quiet
    const mc_draft_params_t *speculate; // requests' speculative decoding; NULL: off (borrowed)
    const char *cluster_path;  // the cluster file SIGHUP reads again; NULL: the one the cluster started from
    atomic_int *reload;        // set non-zero (SIGHUP) to read it again and stage it (mc_server_run); NULL: never
    const struct mc_rebalance_params *rebalance; // the rebalance loop's (rebalance.h; batch is the engine's n_seq);
                                                 // NULL: its defaults. Used when the cluster file has the block.
} mc_server_params_t;

mc_server_params_t mc_server_params_default(void);

typedef struct mc_server mc_server_t;

// Start listening and the engine thread; s is borrowed (and driven by the
// server's thread until destroy). NULL with err on failure.
mc_server_t *mc_server_new(mc_session_t *s, const mc_server_params_t *p, char *err);

// Stop accepting, end every generation (cancelled), join the threads.
void mc_server_destroy(mc_server_t **srv);

uint16_t mc_server_port(const mc_server_t *srv);

// Read the cluster file again (cluster_path) and stage its placement
// (membership.h); what SIGHUP does. Logged either way.
mc_err_t mc_server_reload(mc_server_t *srv, char *err);

// New, then serve until *stop becomes non-zero, then destroy.
mc_err_t mc_server_run(mc_session_t *s, const mc_server_params_t *p, atomic_int *stop, char *err);

#endif
