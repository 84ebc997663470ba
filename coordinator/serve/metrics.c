/*
 * metrics: fixed-bucket histograms, labelled counters, Prometheus text.
 */
#include "metrics.h"
#include "rebalance.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define S_MAX_BUCKETS 16

typedef struct {
    const double *bounds; // upper bounds, increasing
    size_t n;             // bounds; counts has n + 1 (the last: above all)
    uint64_t counts[S_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
} s_hist_t;

static const double s_request_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double s_ttft_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double s_gap_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

// Statuses counted per endpoint; anything else counts as 500.
static const int s_statuses[] = {200, 204, 400, 401, 404, 405, 413, 500, 503};
#define S_N_STATUS (sizeof s_statuses / sizeof s_statuses[0])
static const char *const s_ep_names[MC_EP_N] = {"chat",    "completions", "responses", "ollama", "ollama_info",
                                                "models",  "cluster",     "health",    "metrics", "web",
                                                "other"};

// The endpoints that generate (their durations go to the histogram).
static bool s_generates(int ep) {
    return ep == MC_EP_CHAT || ep == MC_EP_COMPLETIONS || ep == MC_EP_RESPONSES || ep == MC_EP_OLLAMA;
}

struct mc_metrics {
    pthread_mutex_t mu;
    uint64_t requests[MC_EP_N][S_N_STATUS];
    uint64_t prompt_tokens, completion_tokens, generations;
    s_hist_t request_s, ttft_s, gap_s;
    mc_prefix_stats_t prefix; // the scheduler's, as of its last step
    bool rebalance;           // rebalancing is on: its counts are rendered
    uint64_t rebalance_counts[MC_REBALANCE_N_OUTCOMES];
};

static void s_hist_init(s_hist_t *h, const double *bounds, size_t n) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds, h->n = n;
}

static void s_hist_add(s_hist_t *h, double v) {
    size_t b = 0;
    while (b < h->n && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

mc_metrics_t *mc_metrics_new(void) {
    mc_metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    s_hist_init(&m->request_s, s_request_bounds, sizeof s_request_bounds / sizeof s_request_bounds[0]);
    s_hist_init(&m->ttft_s, s_ttft_bounds, sizeof s_ttft_bounds / sizeof s_ttft_bounds[0]);
    s_hist_init(&m->gap_s, s_gap_bounds, sizeof s_gap_bounds / sizeof s_gap_bounds[0]);
    return m;
}

void mc_metrics_destroy(mc_metrics_t **pm) {
    if (!pm || !*pm) return;
    pthread_mutex_destroy(&(*pm)->mu);
    free(*pm);
    *pm = NULL;
}

void mc_metrics_request(mc_metrics_t *m, mc_endpoint_t ep, int status, double seconds) {
    size_t s = 0;
    while (s < S_N_STATUS && s_statuses[s] != status) s++;
    if (s == S_N_STATUS)
        for (s = 0; s_statuses[s] != 500;) s++;
    pthread_mutex_lock(&m->mu);
    m->requests[ep < MC_EP_N ? ep : MC_EP_OTHER][s]++;
    if (s_generates(ep)) s_hist_add(&m->request_s, seconds);
    pthread_mutex_unlock(&m->mu);
}

void mc_metrics_generation(mc_metrics_t *m, uint32_t prompt_tokens, uint32_t completion_tokens, double ttft_s) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt_tokens, m->completion_tokens += completion_tokens, m->generations++;
    if (completion_tokens) s_hist_add(&m->ttft_s, ttft_s);
    pthread_mutex_unlock(&m->mu);
}

void mc_metrics_token_gap(mc_metrics_t *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    s_hist_add(&m->gap_s, seconds);
    pthread_mutex_unlock(&m->mu);
}

void mc_metrics_rebalance(mc_metrics_t *m, const uint64_t *counts) {
    pthread_mutex_lock(&m->mu);
    m->rebalance = true;
    memcpy(m->rebalance_counts, counts, sizeof m->rebalance_counts);
    pthread_mutex_unlock(&m->mu);
}

void mc_metrics_prefix(mc_metrics_t *m, const mc_prefix_stats_t *st) {
    pthread_mutex_lock(&m->mu);
    m->prefix = *st;
    pthread_mutex_unlock(&m->mu);
}

// --- rendering -------------------------------------------------------------------------

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} s_text_t;

static void s_put(s_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_put(s_text_t *t, const char *fmt, ...) {
    for (;;) {
        if (t->oom) return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = true;
            return;
        }
        t->buf = b, t->cap = cap;
    }
}

static void s_family(s_text_t *t, const char *name, const char *type, const char *help) {
    s_put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

// labels: "" or `node="pi-1",` (a trailing comma, joined with le).
static void s_hist_put(s_text_t *t, const char *name, const char *labels, const uint64_t *counts, const double *bounds,
                       size_t n, double scale, double sum, uint64_t count) {
    uint64_t cum = 0;
    for (size_t b = 0; b < n; b++) {
        cum += counts[b];
        s_put(t, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[b] * scale, (unsigned long long)cum);
    }
    cum += counts[n];
    s_put(t, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    // A label list without its trailing comma for _sum and _count.
    char plain[256];
    snprintf(plain, sizeof plain, "%s", labels);
    size_t pl = strlen(plain);
    if (pl) plain[pl - 1] = 0;
    s_put(t, "%s_sum%s%s%s %.9g\n", name, pl ? "{" : "", plain, pl ? "}" : "", sum * scale);
    s_put(t, "%s_count%s%s%s %llu\n", name, pl ? "{" : "", plain, pl ? "}" : "", (unsigned long long)count);
}

// A label value: backslash, quote and newline escaped.
static void s_label(const char *v, char *out, size_t cap) {
    size_t o = 0;
    for (; *v && o + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') out[o++] = '\\', out[o++] = *v;
        else if (*v == '\n') out[o++] = '\\', out[o++] = 'n';
        else out[o++] = *v;
    }
    out[o] = 0;
}

static void s_nodes(s_text_t *t, const mc_experts_t *x) {
    const size_t n = mc_experts_n_nodes(x);
    mc_experts_node_stats_t *st = calloc(n ? n : 1, sizeof *st);
    if (!st) {
        t->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) mc_experts_node_stats(x, i, &st[i]);
    char name[160];
    struct {
        const char *metric, *type, *help;
        int field;
    } rows[] = {
        {"moe_node_alive", "gauge", "1 while the node answers, 0 while its experts are computed here.", 0},
        {"moe_node_requests_total", "counter", "Expert requests sent to the node.", 1},
        {"moe_node_rows_total", "counter", "Hidden-state rows sent to the node.", 2},
        {"moe_node_sent_bytes_total", "counter", "Bytes sent to the node.", 3},
        {"moe_node_received_bytes_total", "counter", "Bytes received from the node.", 4},
        {"moe_node_lost_total", "counter", "Times the node stopped answering.", 5},
        {"moe_node_compute_seconds_total", "counter", "Expert compute time the node reported.", 6},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        s_family(t, rows[r].metric, rows[r].type, rows[r].help);
        for (size_t i = 0; i < n; i++) {
            s_label(st[i].name, name, sizeof name);
            const double v[] = {st[i].alive, (double)st[i].requests, (double)st[i].rows, (double)st[i].bytes_sent,
                                (double)st[i].bytes_recv, st[i].deaths, st[i].compute_ms / 1e3};
            s_put(t, "%s{node=\"%s\"} %.9g\n", rows[r].metric, name, v[rows[r].field]);
        }
    }
    s_family(t, "moe_node_round_trip_seconds", "histogram", "Round trip of expert requests to the node.");
    for (size_t i = 0; i < n; i++) {
        char labels[200];
        s_label(st[i].name, name, sizeof name);
        snprintf(labels, sizeof labels, "node=\"%s\",", name);
        s_hist_put(t, "moe_node_round_trip_seconds", labels, st[i].rtt_hist, st[i].rtt_bounds_ms, MC_EXPERTS_RTT_BUCKETS,
                   1e-3, st[i].rtt_sum_ms, st[i].rtt_count);
    }
    // Nodes under --mem-limit: their expert stores, from the counters each
    // answer carries (nodes without a limit have no series).
    struct {
        const char *metric, *type, *help;
    } srows[] = {
        {"moe_node_expert_store_budget_bytes", "gauge", "The node's expert memory limit."},
        {"moe_node_expert_store_used_bytes", "gauge", "Bytes of experts resident on the node."},
        {"moe_node_expert_store_hits_total", "counter", "Expert uses on the node that found it resident."},
        {"moe_node_expert_store_misses_total", "counter", "Expert uses on the node that waited for a read."},
        {"moe_node_expert_store_read_bytes_total", "counter", "Expert bytes the node read from its disk."},
        {"moe_node_expert_store_stall_seconds_total", "counter", "Time the node's steps waited for reads."},
        {"moe_node_expert_store_read_errors_total", "counter", "Failed expert reads on the node."},
    };
    for (size_t r = 0; r < sizeof srows / sizeof srows[0]; r++) {
        bool any = false;
        for (size_t i = 0; i < n; i++) any |= st[i].has_store;
        if (!any) break;
        s_family(t, srows[r].metric, srows[r].type, srows[r].help);
        for (size_t i = 0; i < n; i++) {
            if (!st[i].has_store) continue;
            const mc_expert_store_stats_t *ss = &st[i].store;
            const double v[] = {(double)ss->budget_bytes, (double)ss->used_bytes, (double)ss->hits,
                                (double)ss->misses,       (double)ss->bytes_read, ss->stall_us / 1e6,
                                (double)ss->errors};
            s_label(st[i].name, name, sizeof name);
            s_put(t, "%s{node=\"%s\"} %.9g\n", srows[r].metric, name, v[r]);
        }
    }
    free(st);
}

// The expert store under --mem-limit (expert_store.h): this process's own;
// a node's counters go to its log.
static void s_store(s_text_t *t, const mc_expert_store_t *st) {
    mc_expert_store_stats_t ss;
    mc_expert_store_stats(st, &ss);
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } rows[] = {
        {"moe_expert_memory_limit_bytes", "gauge", "Expert memory allowed (--mem-limit).", ss.budget_bytes},
        {"moe_expert_memory_used_bytes", "gauge", "Expert memory mapped now.", ss.used_bytes},
        {"moe_expert_resident", "gauge", "Experts resident now.", ss.resident},
        {"moe_expert_hits_total", "counter", "Expert uses that found it resident.", ss.hits},
        {"moe_expert_misses_total", "counter", "Expert uses that waited for a read.", ss.misses},
        {"moe_expert_reads_total", "counter", "Experts read from the model file.", ss.reads},
        {"moe_expert_read_bytes_total", "counter", "Bytes of experts read from the model file.", ss.bytes_read},
        {"moe_expert_evictions_total", "counter", "Experts dropped to make room.", ss.evictions},
        {"moe_expert_read_ahead_total", "counter", "Experts read ahead of use.", ss.prefetched},
        {"moe_expert_read_ahead_used_total", "counter", "Experts read ahead and then used.", ss.prefetch_used},
        {"moe_expert_read_errors_total", "counter", "Failed expert reads.", ss.errors},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        s_family(t, rows[i].name, rows[i].type, rows[i].help);
        s_put(t, "%s %llu\n", rows[i].name, (unsigned long long)rows[i].v);
    }
    s_family(t, "moe_expert_stall_seconds_total", "counter", "Time expert steps waited for reads.");
    s_put(t, "moe_expert_stall_seconds_total %.6f\n", ss.stall_us / 1e6);
    s_family(t, "moe_expert_predicted_total", "counter", "Next-layer experts predicted, by predictor.");
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        s_put(t, "moe_expert_predicted_total{predictor=\"%s\"} %llu\n", mc_store_pred_name((mc_store_pred_t)i),
              (unsigned long long)ss.pred[i].predicted);
    s_family(t, "moe_expert_predicted_used_total", "counter", "Predicted experts the layer then used, by predictor.");
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        s_put(t, "moe_expert_predicted_used_total{predictor=\"%s\"} %llu\n", mc_store_pred_name((mc_store_pred_t)i),
              (unsigned long long)ss.pred[i].correct);
    s_family(t, "moe_expert_used_scored_total", "counter", "Experts used in layers a predictor had guessed, by predictor.");
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        s_put(t, "moe_expert_used_scored_total{predictor=\"%s\"} %llu\n", mc_store_pred_name((mc_store_pred_t)i),
              (unsigned long long)ss.pred[i].actual);
}

char *mc_metrics_render(mc_metrics_t *m, mc_session_t *s, uint32_t active, uint32_t queued) {
    s_text_t t = {malloc(16384), 0, 16384, false};
    if (!t.buf) return NULL;
    mc_metrics_t c;
    pthread_mutex_lock(&m->mu);
    c = *m; // a consistent copy; the lock member is not used
    pthread_mutex_unlock(&m->mu);
    s_family(&t, "moe_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int e = 0; e < MC_EP_N; e++)
        for (size_t k = 0; k < S_N_STATUS; k++)
            if (c.requests[e][k] || (k == 0 && s_generates(e)))
                s_put(&t, "moe_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", s_ep_names[e], s_statuses[k],
                      (unsigned long long)c.requests[e][k]);
    s_family(&t, "moe_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
    s_put(&t, "moe_prompt_tokens_total %llu\n", (unsigned long long)c.prompt_tokens);
    s_family(&t, "moe_completion_tokens_total", "counter", "Tokens generated.");
    s_put(&t, "moe_completion_tokens_total %llu\n", (unsigned long long)c.completion_tokens);
    s_family(&t, "moe_generations_total", "counter", "Generations finished (any reason).");
    s_put(&t, "moe_generations_total %llu\n", (unsigned long long)c.generations);
    s_family(&t, "moe_generations_active", "gauge", "Generations being decoded now.");
    s_put(&t, "moe_generations_active %u\n", active);
    s_family(&t, "moe_generations_queued", "gauge", "Generations waiting for a free sequence slot.");
    s_put(&t, "moe_generations_queued %u\n", queued);
    s_family(&t, "moe_request_duration_seconds", "histogram", "Time to answer a completion request.");
    s_hist_put(&t, "moe_request_duration_seconds", "", c.request_s.counts, c.request_s.bounds, c.request_s.n, 1,
               c.request_s.sum, c.request_s.count);
    s_family(&t, "moe_time_to_first_token_seconds", "histogram", "From a request's arrival to its first token.");
    s_hist_put(&t, "moe_time_to_first_token_seconds", "", c.ttft_s.counts, c.ttft_s.bounds, c.ttft_s.n, 1,
               c.ttft_s.sum, c.ttft_s.count);
    s_family(&t, "moe_token_seconds", "histogram", "Time between two tokens of one generation.");
    s_hist_put(&t, "moe_token_seconds", "", c.gap_s.counts, c.gap_s.bounds, c.gap_s.n, 1, c.gap_s.sum, c.gap_s.count);
    s_family(&t, "moe_prefix_cache_lookups_total", "counter", "Generations started (each looks for a cached prefix).");
    s_put(&t, "moe_prefix_cache_lookups_total %llu\n", (unsigned long long)c.prefix.lookups);
    s_family(&t, "moe_prefix_cache_hits_total", "counter", "Generations that reused cached prompt positions.");
    s_put(&t, "moe_prefix_cache_hits_total %llu\n", (unsigned long long)c.prefix.hits);
    s_family(&t, "moe_prefix_cache_tokens_saved_total", "counter", "Prompt tokens not evaluated again.");
    s_put(&t, "moe_prefix_cache_tokens_saved_total %llu\n", (unsigned long long)c.prefix.tokens_reused);
    s_family(&t, "moe_prefix_cache_copies_total", "counter",
             "Hits served from another sequence's cache or a saved prefix.");
    s_put(&t, "moe_prefix_cache_copies_total %llu\n", (unsigned long long)c.prefix.copied);
    s_family(&t, "moe_prefix_cache_saved", "gauge", "Prefixes kept beyond the sequences' own caches.");
    s_put(&t, "moe_prefix_cache_saved %u\n", c.prefix.saved);
    s_family(&t, "moe_prefix_cache_saved_bytes", "gauge", "Bytes of those prefixes (keys, values, ids).");
    s_put(&t, "moe_prefix_cache_saved_bytes %zu\n", c.prefix.saved_bytes);
    if (c.rebalance) {
        s_family(&t, "moe_rebalance_total", "counter",
                 "Live rebalancing rounds, by outcome (the cluster file's rebalance block).");
        for (int o = 0; o < MC_REBALANCE_N_OUTCOMES; o++)
            s_put(&t, "moe_rebalance_total{outcome=\"%s\"} %llu\n", mc_rebalance_outcome_name((mc_rebalance_outcome_t)o),
                  (unsigned long long)c.rebalance_counts[o]);
    }
    const mc_engine_t *e = mc_session_engine(s);
    s_family(&t, "moe_kv_cache_bytes", "gauge",
             "The sequences' KV caches at full context (--parallel x --ctx), by value type (--kv-type).");
    s_put(&t, "moe_kv_cache_bytes{type=\"%s\"} %zu\n", mc_engine_kv_type_name(mc_engine_kv_type(e)),
          (size_t)mc_engine_n_seq(e) * mc_engine_kv_bytes(e, mc_engine_n_ctx(e)));
    if (mc_experts_n_nodes(mc_session_experts(s))) s_nodes(&t, mc_session_experts(s));
    if (mc_session_store(s)) s_store(&t, mc_session_store(s));
    const mc_hparams_t *hp = &mc_session_model(s)->hp;
    uint64_t *counts = malloc((size_t)hp->n_layer * hp->n_expert * sizeof *counts);
    if (!counts) t.oom = true;
    else {
        mc_engine_expert_counts(mc_session_engine(s), counts);
        s_family(&t, "moe_expert_rows_total", "counter", "Rows routed to each expert of each layer.");
        for (uint32_t l = 0; l < hp->n_layer; l++)
            for (uint32_t e = 0; e < hp->n_expert; e++)
                s_put(&t, "moe_expert_rows_total{layer=\"%u\",expert=\"%u\"} %llu\n", l, e,
                      (unsigned long long)counts[(size_t)l * hp->n_expert + e]);
        free(counts);
    }
    if (t.oom) {
        free(t.buf);
        return NULL;
    }
    return t.buf;
}
