/*
 * metrics: the server's counters and histograms, and their Prometheus text
 * exposition (format 0.0.4) for GET /metrics.
 *
 * Requests by endpoint and status (a CORS preflight counts as its
 * endpoint's, with status 204), tokens in and out, request duration,
 * time to first token and the gap between tokens are recorded here (any
 * thread; one mutex). At scrape time the render adds what lives elsewhere:
 * per node (alive, requests, rows, bytes, times lost, the round-trip
 * histogram) from the cluster, the prefix cache's hits (given by the
 * generation thread), and rows routed per layer and expert from the
 * engine.
 */
#ifndef MC_METRICS_H
#define MC_METRICS_H

#include <stdint.h>

#include "session.h"

typedef enum {
    MC_EP_CHAT = 0,
    MC_EP_COMPLETIONS,
    MC_EP_RESPONSES,   // /v1/responses
    MC_EP_OLLAMA,      // /api/chat and /api/generate (Ollama's API)
    MC_EP_OLLAMA_INFO, // Ollama's /api/version, /api/tags, /api/show
    MC_EP_MODELS,
    MC_EP_CLUSTER,
    MC_EP_HEALTH,
    MC_EP_METRICS,
    MC_EP_WEB,
    MC_EP_OTHER,
    MC_EP_N,
} mc_endpoint_t;

typedef struct mc_metrics mc_metrics_t;

mc_metrics_t *mc_metrics_new(void);
void mc_metrics_destroy(mc_metrics_t **m);

// A request was answered with `status` after `seconds`.
void mc_metrics_request(mc_metrics_t *m, mc_endpoint_t ep, int status, double seconds);
// A generation ended: its token counts and time to first token.
void mc_metrics_generation(mc_metrics_t *m, uint32_t prompt_tokens, uint32_t completion_tokens, double ttft_s);
// Seconds between two tokens of one generation.
void mc_metrics_token_gap(mc_metrics_t *m, double seconds);

// The scheduler's prefix cache counters (mc_scheduler_prefix_stats), from
// the thread that steps it; rendered as they were last given.
void mc_metrics_prefix(mc_metrics_t *m, const mc_prefix_stats_t *st);

// Live rebalancing's outcomes so far (mc_rebalance_counts, by
// mc_rebalance_outcome_t), from the thread that drives it; rendered as
// moe_rebalance_total{outcome} once given.
void mc_metrics_rebalance(mc_metrics_t *m, const uint64_t *counts);

// The exposition text (malloc'd; NULL when out of memory). active and
// queued: the generations running and waiting now.
char *mc_metrics_render(mc_metrics_t *m, mc_session_t *s, uint32_t active, uint32_t queued);

#endif
