/*
 * server: libmicrohttpd plumbing, URL dispatch, CORS, the engine thread and the
 * jobs that connect a request to its generation, and the streams that
 * carry it back in each dialect (OpenAI's chat and completion chunks, the
 * Responses API's events, Ollama's lines).
 */
#include "server.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "chat.h"
#include "clock.h"
#include "cors.h"
#include "dtype.h"
#include "items.h"
#include "log.h"
#include "cluster.h"
#include "discovery.h"
#include "membership.h"
#include "metrics.h"
#include "ollama.h"
#include "rebalance.h"
#include "reply.h"
#include "responses.h"
#include "rng.h"
#include "routing.h"
#include "jsonschema.h"
#include "toolcall.h"
#include "web_assets.h"


// How long the engine thread sleeps without work before it looks again
// (and keeps the nodes' leases with heartbeats).
#define S_IDLE_MS 250
// A stream with nothing new for this long gets an SSE comment, which keeps
// proxies from closing it (an NDJSON stream cannot carry one: its client is
// only checked), and finds out whether the client is still there.
#define S_KEEPALIVE_MS 15000
// A waiting non-streamed request checks its client this often.
#define S_CLIENT_CHECK_MS 200
// At shutdown, how long the answers still being sent get to finish.
#define S_DRAIN_MS 2000
// /v1/responses' answers kept for item references: the last this many, at
// most this much text (items.h).
#define S_ITEMS_KEPT 1024
#define S_ITEMS_BYTES ((size_t)16 << 20)

// The dialect a generation answers in.
typedef enum {
    S_FMT_CHAT,            // /v1/chat/completions
    S_FMT_COMPLETIONS,     // /v1/completions
    S_FMT_RESPONSES,       // /v1/responses
    S_FMT_OLLAMA_CHAT,     // /api/chat
    S_FMT_OLLAMA_GENERATE, // /api/generate
} s_fmt_t;

// How far a stream is: its opening events, the text as it comes, the
// closing events (or the error), nothing more.
typedef enum { S_PH_START, S_PH_BODY, S_PH_END, S_PH_CLOSED } s_phase_t;

// One generation request. The HTTP side and the engine thread each hold a
// reference; the last one frees it (and writes its log line: only then are
// both the token counts and the client's fate known).
typedef struct s_job s_job_t;
struct s_job {
    mc_server_t *srv;
    s_fmt_t fmt;
    mc_endpoint_t ep;
    bool stream;
    mc_api_answer_t ans;           // chat and completions
    mc_responses_answer_t rans;    // responses
    mc_ollama_answer_t oans;       // ollama
    char id[48], msg_id[48];
    mc_gen_params_t gp;            // prompt and stop strings are copied at submit
    mc_draft_params_t draft;       // the request's own speculative drafts (gp.speculate may point here)
    int32_t *prompt;
    char *stops[MC_SCHEDULER_MAX_STOP];
    mc_constraint_params_t con;    // structured output (gp.constrain points here)
    mc_jschema_t *schema;          // its schema, compiled when the request was parsed (con.compiled points here)
    mc_reply_params_t rp;          // chat: reasoning and tool calls split off the text (reply.h)
    mc_toolcall_req_t tools;       // chat: the request's tools (moved from it)
    int32_t calls_tok;             // mistral-v3 with tools: the [TOOL_CALLS] control token (-1: none)
    int32_t mark_ids[8];           // with tools: the format's call markers that are control tokens
    const char *mark_names[8];     // ... and the names written for them (toolcall.h)
    size_t n_marks;
    mc_toolcall_constraint_t tcon; // a forced call: what the answer must be (gp.constrain then points at con)
    // Shared with the engine thread (mu).
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;                    // everything generated so far
    size_t len, cap;
    mc_logprob_t *lps;             // each text token's logprobs, when asked (n_lps)
    size_t n_lps, cap_lps;
    bool done;
    mc_finish_t why;
    mc_gen_usage_t usage;
    char err[MC_ERR_LEN];
    atomic_bool cancel;            // the client is gone
    int refs;
    double t_start, t_last;        // s; t_last: the previous token
    uint64_t sched_id;
    s_job_t *next;                 // the submit queue, then the live list
    // HTTP side only.
    struct MHD_Connection *conn;   // a stream's connection (its client is checked on keep-alive ticks)
    size_t sent, sent_lps;         // text and logprobs already in the stream
    size_t sent_r, sent_c;         // a split chat stream: reasoning and content sent up to here (of text)
    s_phase_t phase;
    uint32_t seq;                  // the Responses API's sequence numbers
    bool msg_open;                 // the Responses API: the message item's opening events are sent
    char *out;                     // stream bytes not yet given to MHD
    size_t out_len, out_at, out_cap;
    // The log line (written at the last release).
    bool log_it, client_left;
    int status;
    double t_end;                  // the answer was sent (or the client left)
};

struct mc_server {
    mc_session_t *s;
    mc_server_params_t p;
    mc_cors_t *cors;      // NULL: no cross-origin caller is allowed
    mc_items_t *items;    // /v1/responses' answers, for item references
    mc_chat_style_t style; // the model's chat format
    struct MHD_Daemon *d;
    uint16_t port;
    mc_metrics_t *metrics;
    pthread_t engine;
    bool engine_started;
    pthread_mutex_t mu;   // queue, live, counts
    pthread_cond_t cv;    // work arrived / quit
    s_job_t *queue;       // waiting for the engine thread
    s_job_t *live;        // submitted to the scheduler
    uint32_t n_running, n_queued;
    uint32_t n_open;      // requests between their headers and their last byte sent
    bool quit;
    int64_t started;      // unix time, the model's "created"
    // Live rebalancing (the cluster file's rebalance block; NULL: off),
    // driven by its own thread so that planning never holds up decoding.
    mc_rebalance_t *rebalance;
    pthread_t rebalancer;
    bool rebalancer_started;
    atomic_bool rebalance_quit;
};

typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
    double t0;
    const char *allow_origin; // Access-Control-Allow-Origin for this request (NULL: none)
    const char *allow;        // the Allow header (a 405, a preflight)
    bool ollama;              // errors in Ollama's form ({"error": message})
} s_req_t;

mc_server_params_t mc_server_params_default(void) {
    mc_server_params_t p = {0};
    p.host = "127.0.0.1";
    p.port = 8080;
    p.sampling = mc_sampler_params_default();
    p.max_connections = 256;
    p.max_per_ip = 128; // one address may be a proxy (Open WebUI's backend) for many users
    p.idle_timeout_s = 60;
    p.max_body = 1u << 20;
    return p;
}

// --- jobs ------------------------------------------------------------------------------

static const char *s_fmt_name(s_fmt_t f) {
    static const char *const names[] = {"chat", "completion", "responses", "ollama chat", "ollama generate"};
    return names[f];
}

static void s_job_release(s_job_t *j) {
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    // Both sides are done: the counts are the generation's (a client that
    // left mid-stream is logged with what was generated for it).
    if (j->log_it && j->srv->p.log)
        mc_log_status(j->srv->p.log, "moe-coordinator", "%s%s %d in %.2f s: %u prompt + %u generated tokens, %s%s",
                      s_fmt_name(j->fmt), j->stream ? " (stream)" : "", j->status, j->t_end - j->t_start,
                      j->usage.prompt_tokens, j->usage.completion_tokens, mc_finish_name(j->why),
                      j->client_left ? " (the client left)" : "");
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    for (int i = 0; i < MC_SCHEDULER_MAX_STOP; i++) free(j->stops[i]);
    mc_toolcall_req_free(&j->tools);
    mc_toolcall_constraint_free(&j->tcon);
    free(j->prompt), free(j->text), free(j->lps), free(j->out);
    mc_jschema_destroy(&j->schema);
    free(j);
}

// Engine thread: a piece of text.
static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_job_t *j = user;
    const double now = mc_clock_s();
    bool ok = true;
    pthread_mutex_lock(&j->mu);
    if (j->len + len + 1 > j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 4096;
        while (cap < j->len + len + 1) cap *= 2;
        char *t = realloc(j->text, cap);
        if (t) j->text = t, j->cap = cap;
        else ok = false;
    }
    if (ok) {
        memcpy(j->text + j->len, text, len);
        j->len += len;
    }
    // A format's call markers may be control tokens, which have no text:
    // each is written as its name, where the reply looks for it.
    for (size_t i = 0; ok && id >= 0 && i < j->n_marks; i++) {
        if (id != j->mark_ids[i]) continue;
        const size_t ml = strlen(j->mark_names[i]);
        if (j->len + ml + 1 > j->cap) {
            char *t = realloc(j->text, j->len + ml + 1);
            if (t) j->text = t, j->cap = j->len + ml + 1;
            else ok = false;
        }
        if (ok) memcpy(j->text + j->len, j->mark_names[i], ml), j->len += ml;
    }
    const double gap = j->t_last ? now - j->t_last : -1;
    j->t_last = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (gap >= 0 && id >= 0) mc_metrics_token_gap(j->srv->metrics, gap);
    return ok && !atomic_load(&j->cancel);
}

// Engine thread: a sampled token's logprobs (before its text). The token
// that ends the answer adds no text and is left out, as OpenAI does.
static void s_on_logprob(void *user, const mc_logprob_t *lp, bool eog) {
    s_job_t *j = user;
    if (eog) return;
    pthread_mutex_lock(&j->mu);
    if (j->n_lps == j->cap_lps) {
        const size_t cap = j->cap_lps ? 2 * j->cap_lps : 64;
        mc_logprob_t *l = realloc(j->lps, cap * sizeof *l);
        if (l) j->lps = l, j->cap_lps = cap;
    }
    if (j->n_lps < j->cap_lps) j->lps[j->n_lps++] = *lp; // out of memory: the entry is lost, not the answer
    pthread_mutex_unlock(&j->mu);
}

// The jobs the scheduler is running (srv->live), under srv->mu.
static void s_live_link(mc_server_t *srv, s_job_t *j) {
    j->next = srv->live, srv->live = j, srv->n_running++;
}

static void s_live_unlink(mc_server_t *srv, s_job_t *j) {
    for (s_job_t **pp = &srv->live; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            srv->n_running--;
            return;
        }
}

// Engine thread: the generation ended.
static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_job_t *j = user;
    mc_server_t *srv = j->srv;
    // Counted before the waiting request is woken: a client that reads
    // /metrics right after its answer must find its generation there.
    mc_metrics_generation(srv->metrics, u->prompt_tokens, u->completion_tokens, u->prompt_s);
    pthread_mutex_lock(&j->mu);
    j->done = true, j->why = why, j->usage = *u;
    snprintf(j->err, sizeof j->err, "%s", err);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&srv->mu);
    s_live_unlink(srv, j);
    pthread_mutex_unlock(&srv->mu);
    s_job_release(j);
}

// --- the engine thread -------------------------------------------------------------------

static void s_fail_job(s_job_t *j, mc_finish_t why, const char *err) {
    const mc_gen_usage_t u = {j->gp.n_prompt, 0, 0, 0};
    pthread_mutex_lock(&j->srv->mu);
    s_live_link(j->srv, j); // s_on_done unlinks it
    pthread_mutex_unlock(&j->srv->mu);
    s_on_done(j, why, &u, err);
}

static void *s_engine_main(void *arg) {
    mc_server_t *srv = arg;
    mc_scheduler_t *sched = mc_session_scheduler(srv->s);
    char err[MC_ERR_LEN];
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        s_job_t *q = srv->queue;
        srv->queue = NULL;
        const bool quit = srv->quit;
        pthread_mutex_unlock(&srv->mu);
        while (q) {
            s_job_t *j = q;
            q = q->next;
            pthread_mutex_lock(&srv->mu);
            srv->n_queued--;
            pthread_mutex_unlock(&srv->mu);
            if (quit || atomic_load(&j->cancel)) {
                s_fail_job(j, MC_FINISH_CANCELLED, "");
                continue;
            }
            pthread_mutex_lock(&srv->mu);
            s_live_link(srv, j);
            pthread_mutex_unlock(&srv->mu);
            if (mc_scheduler_submit(sched, &j->gp, &j->sched_id, err)) {
                pthread_mutex_lock(&srv->mu); // undo the link; s_fail_job links it again
                s_live_unlink(srv, j);
                pthread_mutex_unlock(&srv->mu);
                s_fail_job(j, MC_FINISH_ERROR, err);
            }
        }
        if (quit) break;
        if (mc_scheduler_pending(sched)) {
            const double t0 = mc_clock_ms();
            mc_scheduler_step(sched, err); // a failure has ended its generations with the message
            if (srv->rebalance) mc_rebalance_step(srv->rebalance, mc_clock_ms() - t0);
            mc_prefix_stats_t ps;
            mc_scheduler_prefix_stats(sched, &ps);
            mc_metrics_prefix(srv->metrics, &ps);
            continue;
        }
        mc_session_tick(srv->s);
        pthread_mutex_lock(&srv->mu);
        if (!srv->queue && !srv->quit) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += S_IDLE_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
        }
        pthread_mutex_unlock(&srv->mu);
    }
    // Shutting down: end what is still running.
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        s_job_t *j = srv->live;
        uint64_t id = j ? j->sched_id : 0;
        pthread_mutex_unlock(&srv->mu);
        if (!j) break;
        mc_scheduler_cancel(sched, id); // its done callback unlinks it
    }
    return NULL;
}

// --- responses ---------------------------------------------------------------------------

// The headers every answer of r gets: CORS for an allowed origin, Allow.
static void s_decorate(const s_req_t *r, struct MHD_Response *resp) {
    if (r->allow_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->allow_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    if (r->allow) MHD_add_response_header(resp, "Allow", r->allow);
}

static enum MHD_Result s_send(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep, int status,
                              const char *type, char *body) {
    if (!body) {
        status = 500;
        body = strdup(r->ollama ? "{\"error\":\"out of memory\"}"
                                : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":null}}");
        if (!body) return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    s_decorate(r, resp);
    // Counted before it leaves: a client may ask /metrics right after.
    mc_metrics_request(srv->metrics, ep, status, mc_clock_s() - r->t0);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result s_json(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep, int status,
                              cJSON *root) {
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s_send(srv, c, r, ep, status, "application/json", txt);
}

// An error in the request's dialect: OpenAI's object, or Ollama's.
static enum MHD_Result s_error(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep,
                               const mc_api_error_t *e) {
    return s_send(srv, c, r, ep, e->status, "application/json",
                  r->ollama ? mc_ollama_error_json(e->message) : mc_api_error_json(e));
}

// --- what a generation gave -------------------------------------------------------------

// An answer that cannot be given: the generation failed, or the server
// stopped it (cancelled while the client was still there). Never a
// finished-looking answer: a client must not take a cut text as whole.
static bool s_failed(const s_job_t *j, mc_api_error_t *e) {
    if (j->why == MC_FINISH_ERROR) {
        mc_api_error(e, 500, "server_error", NULL, NULL, "the generation failed: %s", j->err);
        return true;
    }
    if (j->why == MC_FINISH_CANCELLED) {
        mc_api_error(e, 503, "server_error", NULL, NULL, "the server stopped before the answer was finished");
        return true;
    }
    return false;
}

// The whole answer (after done).
static mc_api_result_t s_result(const s_job_t *j) {
    return (mc_api_result_t){.text = j->text ? j->text : "",
                             .len = j->len,
                             .why = j->why,
                             .prompt_tokens = j->usage.prompt_tokens,
                             .completion_tokens = j->usage.completion_tokens,
                             .lps = j->lps,
                             .n_lps = j->n_lps};
}

// Whether a chat (or Responses) answer is split (reply.h) rather than all content.
static bool s_splits(const s_job_t *j) {
    return (j->fmt == S_FMT_CHAT || j->fmt == S_FMT_RESPONSES || j->fmt == S_FMT_OLLAMA_CHAT) &&
           mc_reply_active(&j->rp);
}

// The split of a finished chat answer: reasoning, content and the calls
// (none when the text after the marker is not calls: it stays content).
static void s_split(const s_job_t *j, mc_reply_view_t *v, mc_toolcall_list_t *calls) {
    const char *text = j->text ? j->text : "";
    mc_reply_view(&j->rp, text, j->len, true, v);
    *calls = (mc_toolcall_list_t){0};
    char err[MC_ERR_LEN];
    if (j->rp.tools && v->calls < j->len &&
        mc_toolcall_parse(j->rp.style, text + v->calls, j->len - v->calls, &j->tools, j->id, calls, err))
        v->c1 = j->len;
}

// The whole answer as the chat API gives it: the content, the reasoning, the calls.
static mc_api_result_t s_split_result(const s_job_t *j, const mc_reply_view_t *v, const mc_toolcall_list_t *calls) {
    mc_api_result_t r = s_result(j);
    r.text += v->c0, r.len = v->c1 - v->c0;
    if (v->r1 > v->r0) r.reasoning = j->text + v->r0, r.reasoning_len = v->r1 - v->r0;
    r.calls = calls->calls, r.n_calls = calls->n;
    return r;
}

// A finished Responses answer (res: its text and calls) is kept for later
// item references (unless the request said store: false): the message's
// text under its id, each call as its function_call item under its own.
// Out of memory: it is not, and a request naming it gets a 400 that says so.
static void s_keep(s_job_t *j, const mc_api_result_t *res) {
    if (j->fmt != S_FMT_RESPONSES || !j->rans.store) return;
    if (mc_responses_has_message(res)) mc_items_put(j->srv->items, j->msg_id, res->text, res->len);
    for (size_t i = 0; i < res->n_calls; i++) {
        char id[MC_RESPONSES_ID_LEN], *item = mc_responses_call_json(&res->calls[i]);
        mc_responses_call_item_id(&res->calls[i], id);
        if (item) mc_items_put(j->srv->items, id, item, strlen(item));
        free(item);
    }
}

// --- streams -------------------------------------------------------------------------------

// Append n bytes to what the stream sends next.
static bool s_out(s_job_t *j, const char *bytes, size_t n) {
    if (j->out_len + n > j->out_cap) {
        size_t cap = j->out_cap ? j->out_cap : 1024;
        while (cap < j->out_len + n) cap *= 2;
        char *o = realloc(j->out, cap);
        if (!o) return false;
        j->out = o, j->out_cap = cap;
    }
    memcpy(j->out + j->out_len, bytes, n);
    j->out_len += n;
    return true;
}

// A server-sent event ("event: TYPE" when typed), json freed.
static bool s_out_sse(s_job_t *j, const char *type, char *json) {
    bool ok = json && (!type || (s_out(j, "event: ", 7) && s_out(j, type, strlen(type)) && s_out(j, "\n", 1))) &&
              s_out(j, "data: ", 6) && s_out(j, json, strlen(json)) && s_out(j, "\n\n", 2);
    free(json);
    return ok;
}

// One NDJSON line, json freed.
static bool s_out_line(s_job_t *j, char *json) {
    bool ok = json && s_out(j, json, strlen(json)) && s_out(j, "\n", 1);
    free(json);
    return ok;
}

static bool s_responses_event(s_job_t *j, mc_responses_event_t ev, const mc_api_result_t *res, const char *err) {
    const char *type;
    char *json = mc_responses_event_json(&j->rans, ev, res, err, j->seq++, &type);
    return s_out_sse(j, type, json);
}

static bool s_stream_start(s_job_t *j) {
    const mc_api_result_t none = {.text = "", .why = MC_FINISH_NONE};
    switch (j->fmt) {
    case S_FMT_CHAT: return s_out_sse(j, NULL, mc_api_chunk_json(&j->ans, true, &none));
    case S_FMT_RESPONSES: // the message item opens with its first text (there may be none: a call)
        for (mc_responses_event_t ev = MC_RESPONSES_CREATED; ev <= MC_RESPONSES_IN_PROGRESS; ev++)
            if (!s_responses_event(j, ev, NULL, NULL)) return false;
        return true;
    default: return true;
    }
}

// The Responses API's message item opens: output_item.added, content_part.added.
static bool s_responses_open(s_job_t *j) {
    if (j->msg_open) return true;
    j->msg_open = true;
    return s_responses_event(j, MC_RESPONSES_ITEM_ADDED, NULL, NULL) &&
           s_responses_event(j, MC_RESPONSES_PART_ADDED, NULL, NULL);
}

// New text and its tokens' logprobs (under j->mu).
static bool s_stream_piece(s_job_t *j, const mc_api_result_t *piece) {
    switch (j->fmt) {
    case S_FMT_CHAT:
    case S_FMT_COMPLETIONS: return s_out_sse(j, NULL, mc_api_chunk_json(&j->ans, false, piece));
    case S_FMT_RESPONSES: return s_responses_open(j) && s_responses_event(j, MC_RESPONSES_TEXT_DELTA, piece, NULL);
    default: return s_out_line(j, mc_ollama_chunk_json(&j->oans, piece->text, piece->len));
    }
}

// A split chat stream's new reasoning and content in text[0..len) (under
// j->mu, or after done); done: nothing is held back.
static bool s_stream_split(s_job_t *j, bool done) {
    mc_reply_view_t v;
    mc_toolcall_list_t none = {0};
    if (done) s_split(j, &v, &none);
    else mc_reply_view(&j->rp, j->text ? j->text : "", j->len, false, &v);
    mc_toolcall_list_free(&none);
    bool ok = true;
    const size_t r = j->sent_r > v.r0 ? j->sent_r : v.r0, c = j->sent_c > v.c0 ? j->sent_c : v.c0;
    if (v.r1 > r && j->fmt == S_FMT_CHAT) { // (gpt-oss reasons in every format; only chat shows it)
        ok = s_out_sse(j, NULL, mc_api_reasoning_chunk_json(&j->ans, j->text + r, v.r1 - r));
        j->sent_r = v.r1;
    }
    if (ok && v.c1 > c) {
        const mc_api_result_t piece = {.text = j->text + c, .len = v.c1 - c, .why = MC_FINISH_NONE,
                                       .lps = j->lps + j->sent_lps, .n_lps = j->n_lps - j->sent_lps};
        ok = s_stream_piece(j, &piece);
        j->sent_c = v.c1, j->sent_lps = j->n_lps;
    }
    return ok;
}

// Argument pieces of a streamed call: at most this many bytes, cut between characters.
#define S_ARGS_PIECE 32

// The length of the next piece of a call's arguments a[at..n): at most
// S_ARGS_PIECE bytes, cut between characters.
static size_t s_args_piece(const char *a, size_t n, size_t at) {
    size_t k = n - at < S_ARGS_PIECE ? n - at : S_ARGS_PIECE;
    while (at + k < n && k > 1 && ((unsigned char)a[at + k] & 0xC0) == 0x80) k--;
    return k;
}

// The end of a split chat stream: what was held back, then each call as
// OpenAI streams them (its head, then its arguments in pieces).
static bool s_stream_split_end(s_job_t *j, bool *tool_calls) {
    if (!s_stream_split(j, true)) return false;
    mc_reply_view_t v;
    mc_toolcall_list_t calls;
    s_split(j, &v, &calls);
    bool ok = true;
    for (size_t i = 0; ok && i < calls.n; i++) {
        const mc_toolcall_t *c = &calls.calls[i];
        ok = s_out_sse(j, NULL, mc_api_call_chunk_json(&j->ans, (uint32_t)i, c, true, NULL, 0));
        const size_t n = strlen(c->arguments);
        for (size_t at = 0, k; ok && at < n; at += k) {
            k = s_args_piece(c->arguments, n, at);
            ok = s_out_sse(j, NULL, mc_api_call_chunk_json(&j->ans, (uint32_t)i, c, false, c->arguments + at, k));
        }
    }
    *tool_calls = calls.n > 0;
    mc_toolcall_list_free(&calls);
    return ok;
}

static bool s_call_event(s_job_t *j, mc_responses_event_t ev, uint32_t index, const mc_toolcall_t *c, const char *delta,
                         size_t len) {
    const char *type;
    char *json = mc_responses_call_event_json(&j->rans, ev, index, c, delta, len, j->seq++, &type);
    return s_out_sse(j, type, json);
}

// The end of a Responses stream: what was held back, the message item's
// closing events (the whole item when no text came and there is no call),
// each call's item (added, its arguments in pieces, done), then
// response.completed (or .incomplete) with all of them.
static bool s_responses_end(s_job_t *j) {
    mc_reply_view_t v;
    mc_toolcall_list_t calls = {0};
    mc_api_result_t whole = s_result(j);
    if (s_splits(j)) {
        if (!s_stream_split(j, true)) return false;
        s_split(j, &v, &calls);
        whole = s_split_result(j, &v, &calls);
    }
    bool ok = true;
    const bool msg = mc_responses_has_message(&whole);
    if (msg) {
        ok = s_responses_open(j);
        for (mc_responses_event_t ev = MC_RESPONSES_TEXT_DONE; ok && ev <= MC_RESPONSES_ITEM_DONE; ev++)
            ok = s_responses_event(j, ev, &whole, NULL);
    }
    for (size_t i = 0; ok && i < calls.n; i++) {
        const mc_toolcall_t *c = &calls.calls[i];
        const uint32_t index = (uint32_t)(i + msg);
        ok = s_call_event(j, MC_RESPONSES_CALL_ADDED, index, c, NULL, 0);
        const size_t n = strlen(c->arguments);
        for (size_t at = 0, k; ok && at < n; at += k) {
            k = s_args_piece(c->arguments, n, at);
            ok = s_call_event(j, MC_RESPONSES_CALL_ARGS_DELTA, index, c, c->arguments + at, k);
        }
        ok = ok && s_call_event(j, MC_RESPONSES_CALL_ARGS_DONE, index, c, NULL, 0) &&
             s_call_event(j, MC_RESPONSES_CALL_DONE, index, c, NULL, 0);
    }
    if (ok) {
        s_keep(j, &whole);
        ok = s_responses_event(j, MC_RESPONSES_END, &whole, NULL);
    }
    mc_toolcall_list_free(&calls);
    return ok;
}

// The end (after done): the finish, usage and [DONE]; the closing events;
// the last line. A failure ends the stream with the error instead.
static bool s_stream_end(s_job_t *j) {
    mc_api_error_t e;
    const bool failed = s_failed(j, &e);
    const mc_api_result_t whole = s_result(j);
    // A split chat sends what it held back (and its calls) first.
    bool tool_calls = false;
    if (!failed && j->fmt == S_FMT_CHAT && s_splits(j) && !s_stream_split_end(j, &tool_calls)) return false;
    // The finish carries the logprobs of tokens whose text never came (a stop string).
    const mc_api_result_t rest = {.text = "",
                                  .why = j->why,
                                  .prompt_tokens = whole.prompt_tokens,
                                  .completion_tokens = whole.completion_tokens,
                                  .lps = j->lps + j->sent_lps,
                                  .n_lps = j->n_lps - j->sent_lps,
                                  .tool_calls = tool_calls};
    switch (j->fmt) {
    case S_FMT_CHAT:
    case S_FMT_COMPLETIONS:
        if (failed) return s_out_sse(j, NULL, mc_api_error_json(&e));
        if (!s_out_sse(j, NULL, mc_api_chunk_json(&j->ans, false, &rest))) return false;
        if (j->ans.include_usage &&
            !s_out_sse(j, NULL, mc_api_usage_chunk_json(&j->ans, whole.prompt_tokens, whole.completion_tokens)))
            return false;
        return s_out(j, "data: [DONE]\n\n", 14);
    case S_FMT_RESPONSES:
        if (failed) return s_responses_event(j, MC_RESPONSES_END, &whole, e.message);
        return s_responses_end(j);
    default:
        if (failed) return s_out_line(j, mc_ollama_error_json(e.message));
        if (s_splits(j)) { // what was held back, then the calls' line
            if (!s_stream_split(j, true)) return false;
            mc_reply_view_t v;
            mc_toolcall_list_t calls;
            s_split(j, &v, &calls);
            const bool ok = !calls.n || s_out_line(j, mc_ollama_calls_json(&j->oans, calls.calls, calls.n));
            mc_toolcall_list_free(&calls);
            if (!ok) return false;
        }
        return s_out_line(j, mc_ollama_final_json(&j->oans, &rest, &j->usage, mc_clock_s() - j->t_start));
    }
}

static bool s_client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd pf = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static ssize_t s_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    s_job_t *j = cls;
    while (j->out_at == j->out_len) {
        j->out_at = j->out_len = 0;
        bool ok = true;
        switch (j->phase) {
        case S_PH_CLOSED: return MHD_CONTENT_READER_END_OF_STREAM;
        case S_PH_START:
            j->phase = S_PH_BODY;
            ok = s_stream_start(j);
            break;
        case S_PH_BODY: {
            pthread_mutex_lock(&j->mu);
            if (j->len == j->sent && !j->done) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += S_KEEPALIVE_MS / 1000;
                pthread_cond_timedwait(&j->cv, &j->mu, &ts);
            }
            bool keepalive = false;
            if (j->len > j->sent && s_splits(j)) {
                ok = s_stream_split(j, false);
                j->sent = j->len;
            } else if (j->len > j->sent) {
                const mc_api_result_t piece = {.text = j->text + j->sent,
                                               .len = j->len - j->sent,
                                               .why = MC_FINISH_NONE,
                                               .lps = j->lps + j->sent_lps,
                                               .n_lps = j->n_lps - j->sent_lps};
                ok = s_stream_piece(j, &piece);
                j->sent = j->len, j->sent_lps = j->n_lps;
            } else if (j->done) {
                j->phase = S_PH_END;
            } else {
                keepalive = true;
            }
            pthread_mutex_unlock(&j->mu);
            if (keepalive) {
                if (s_client_gone(j->conn)) return MHD_CONTENT_READER_END_WITH_ERROR;
                if (j->fmt != S_FMT_OLLAMA_CHAT && j->fmt != S_FMT_OLLAMA_GENERATE)
                    ok = s_out(j, ": keep-alive\n\n", 14);
            }
            break;
        }
        case S_PH_END:
            j->phase = S_PH_CLOSED;
            ok = s_stream_end(j); // done: nothing writes the job now
            break;
        }
        if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = j->out_len - j->out_at < max ? j->out_len - j->out_at : max;
    memcpy(buf, j->out + j->out_at, n);
    j->out_at += n;
    return (ssize_t)n;
}

// The stream's response is gone: finished, or the client left.
static void s_stream_free(void *cls) {
    s_job_t *j = cls;
    atomic_store(&j->cancel, true); // no-op when it is done
    mc_metrics_request(j->srv->metrics, j->ep, 200, mc_clock_s() - j->t_start);
    j->client_left = j->phase != S_PH_CLOSED || j->out_at < j->out_len;
    j->t_end = mc_clock_s();
    s_job_release(j);
}

// --- generations ---------------------------------------------------------------------------

// The prompt ids of a request; MC_ERR_ARG with an API error for the client.
static mc_err_t s_prompt(mc_server_t *srv, const mc_api_request_t *q, int32_t **ids, size_t *n, mc_api_error_t *e) {
    const mc_tokenizer_t *tok = mc_session_tokenizer(srv->s);
    char err[MC_ERR_LEN];
    if (q->chat) {
        mc_chat_msg_t *msgs = malloc((q->n_msgs + 1) * sizeof *msgs);
        if (!msgs) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        size_t k = 0;
        if (q->safe_prompt || srv->p.safe_prompt)
            msgs[k++] = (mc_chat_msg_t){.role = MC_CHAT_SYSTEM, .content = mc_chat_safe_prompt, .len = strlen(mc_chat_safe_prompt)};
        memcpy(msgs + k, q->msgs, q->n_msgs * sizeof *msgs);
        mc_chat_opts_t o = mc_chat_opts_default();
        o.style = srv->style, o.thinking = q->thinking;
        // gpt-oss's system message names the effort and today's date (UTC), as its template does.
        char date[16] = "";
        const time_t now = time(NULL);
        struct tm tm;
        if (gmtime_r(&now, &tm)) strftime(date, sizeof date, "%Y-%m-%d", &tm);
        if (date[0]) o.date = date;
        if (q->effort[0]) o.reasoning_effort = q->effort;
        const char **tools = NULL;
        if (mc_toolcall_active(&q->tools)) {
            if (!(tools = malloc(q->tools.n_tools * sizeof *tools))) {
                free(msgs);
                return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
            }
            for (size_t i = 0; i < q->tools.n_tools; i++) tools[i] = q->tools.tools[i].json;
            o.tools = tools, o.n_tools = q->tools.n_tools;
        }
        mc_err_t rc = mc_chat_render(tok, &o, msgs, q->n_msgs + k, false, ids, n, err);
        free(msgs), free(tools);
        if (rc == MC_ERR_ARG) return mc_api_error(e, 400, "invalid_request_error", "messages", NULL, "%s", err);
        if (rc) return mc_api_error(e, 500, "server_error", NULL, NULL, "%s", err);
    } else {
        size_t cap = mc_tokenizer_max_tokens(q->prompt_len);
        if (!(*ids = malloc(cap * sizeof **ids))) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        if (mc_tokenizer_encode(tok, q->prompt, q->prompt_len, mc_tokenizer_add_bos(tok), *ids, cap, n, err)) {
            free(*ids);
            return mc_api_error(e, 500, "server_error", NULL, NULL, "%s", err);
        }
        if (*n == 0) {
            free(*ids);
            return mc_api_error(e, 400, "invalid_request_error", "prompt", NULL, "the prompt is empty");
        }
    }
    const uint32_t n_ctx = mc_engine_n_ctx(mc_session_engine(srv->s));
    if (*n >= n_ctx) {
        free(*ids);
        return mc_api_error(e, 400, "invalid_request_error", q->chat ? "messages" : "prompt", "context_length_exceeded",
                            "This model's maximum context length is %u tokens. However, your %s resulted in %zu tokens "
                            "(no room left for the answer).",
                            n_ctx, q->chat ? "messages" : "prompt", *n);
    }
    return MC_OK;
}

static mc_err_t s_parse(mc_server_t *srv, s_req_t *r, s_fmt_t fmt, mc_api_request_t *q, bool *load_only,
                        mc_api_error_t *e) {
    const char *body = r->body ? r->body : "";
    *load_only = false;
    switch (fmt) {
    case S_FMT_CHAT: return mc_api_parse(body, r->len, true, &srv->p.sampling, q, e);
    case S_FMT_COMPLETIONS: return mc_api_parse(body, r->len, false, &srv->p.sampling, q, e);
    case S_FMT_RESPONSES: return mc_responses_parse(body, r->len, &srv->p.sampling, srv->items, q, e);
    case S_FMT_OLLAMA_CHAT: return mc_ollama_parse(body, r->len, true, &srv->p.sampling, q, load_only, e);
    default: return mc_ollama_parse(body, r->len, false, &srv->p.sampling, q, load_only, e);
    }
}

static void s_random_id(char *buf, size_t cap, const char *prefix) {
    snprintf(buf, cap, "%s%016llx%08x", prefix, (unsigned long long)mc_rng_fresh_u64(),
             (unsigned)(mc_rng_fresh_u64() & 0xffffffffu));
}

// The answer to a body that asks Ollama only to load the model: done.
static enum MHD_Result s_ollama_loaded(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, s_fmt_t fmt, bool stream) {
    const mc_ollama_answer_t a = {fmt == S_FMT_OLLAMA_CHAT, mc_session_model_id(srv->s)};
    const mc_api_result_t none = {.text = "", .why = MC_FINISH_NONE};
    const mc_gen_usage_t u = {0};
    char *line = mc_ollama_final_json(&a, &none, &u, mc_clock_s() - r->t0);
    if (line && stream) { // a stream of one line
        char *nl = realloc(line, strlen(line) + 2);
        if (nl) strcat(nl, "\n");
        else free(line);
        line = nl;
    }
    return s_send(srv, c, r, MC_EP_OLLAMA, 200, stream ? "application/x-ndjson" : "application/json", line);
}

static enum MHD_Result s_generation(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, s_fmt_t fmt) {
    static const mc_endpoint_t eps[] = {MC_EP_CHAT, MC_EP_COMPLETIONS, MC_EP_RESPONSES, MC_EP_OLLAMA, MC_EP_OLLAMA};
    const mc_endpoint_t ep = eps[fmt];
    mc_api_error_t e;
    mc_api_request_t q;
    bool load_only;
    if (s_parse(srv, r, fmt, &q, &load_only, &e)) return s_error(srv, c, r, ep, &e);
    if (load_only) {
        const bool stream = q.stream;
        mc_api_request_free(&q);
        return s_ollama_loaded(srv, c, r, fmt, stream);
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (s_prompt(srv, &q, &ids, &n_ids, &e)) {
        mc_api_request_free(&q);
        return s_error(srv, c, r, ep, &e);
    }
    s_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        free(ids);
        mc_api_request_free(&q);
        mc_api_error(&e, 500, "server_error", NULL, NULL, "out of memory");
        return s_error(srv, c, r, ep, &e);
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->srv = srv;
    j->refs = 2; // this side and the engine's
    j->fmt = fmt, j->ep = ep;
    j->stream = q.stream;
    const int64_t now = (int64_t)time(NULL);
    const char *model = mc_session_model_id(srv->s);
    const mc_tokenizer_t *tok = mc_session_tokenizer(srv->s);
    s_random_id(j->id, sizeof j->id, fmt == S_FMT_CHAT ? "chatcmpl-" : fmt == S_FMT_RESPONSES ? "resp_" : "cmpl-");
    s_random_id(j->msg_id, sizeof j->msg_id, "msg_");
    j->ans = (mc_api_answer_t){fmt == S_FMT_CHAT, j->id, now, model, q.stream && q.include_usage, q.logprobs, tok};
    j->prompt = ids;
    j->gp = mc_gen_params_default();
    j->gp.prompt = ids, j->gp.n_prompt = (uint32_t)n_ids;
    j->gp.sampling = q.sampling;
    if (!q.seed_given) j->gp.sampling.seed = mc_rng_fresh_seed();
    // A window longer than the context sees what the context holds (Ollama's -1).
    const uint32_t n_ctx = mc_engine_n_ctx(mc_session_engine(srv->s));
    if (j->gp.sampling.repeat_last_n > (int32_t)n_ctx) j->gp.sampling.repeat_last_n = (int32_t)n_ctx;
    j->gp.max_tokens = q.max_tokens ? q.max_tokens : srv->p.max_tokens;
    j->gp.strip_space = q.chat;
    j->gp.speculate = srv->p.speculate;
    if (q.speculate == MC_API_SPECULATE_OFF) {
        j->gp.speculate = NULL;
    } else if (q.speculate > 0 || (q.speculate == MC_API_SPECULATE_ON && !srv->p.speculate)) {
        j->draft = mc_draft_params_default();
        j->draft.k_max = q.speculate > 0 ? (uint32_t)q.speculate : MC_API_SPECULATE_DEFAULT;
        j->draft.k_start = (j->draft.k_max + 1) / 2;
        j->gp.speculate = &j->draft;
    }
    if (q.json) { // structured output: the answer is constrained to the schema (or to any object)
        j->con = mc_constraint_params_default();
        j->schema = q.compiled, q.compiled = NULL; // the job's now
        j->con.compiled = j->schema;
        j->gp.constrain = &j->con;
    }
    for (uint32_t i = 0; i < q.n_stop; i++) j->stops[i] = strdup(q.stop[i]);
    j->gp.stop = (const char *const *)j->stops, j->gp.n_stop = q.n_stop;
    j->gp.on_text = s_on_text, j->gp.on_done = s_on_done, j->gp.user = j;
    if (q.logprobs) j->gp.on_logprob = s_on_logprob, j->gp.top_logprobs = q.top_logprobs;
    j->rans = (mc_responses_answer_t){j->id,        j->msg_id,  now, model, j->gp.sampling.temp, j->gp.sampling.top_p,
                                      q.max_tokens, q.logprobs, tok, q.store, &j->tools};
    j->oans = (mc_ollama_answer_t){fmt == S_FMT_OLLAMA_CHAT, model};
    j->calls_tok = -1;
    if (fmt == S_FMT_CHAT || fmt == S_FMT_RESPONSES || fmt == S_FMT_OLLAMA_CHAT) { // (only chat splits off thinking)
        const bool thinks = srv->style == MC_CHAT_STYLE_QWEN3 || srv->style == MC_CHAT_STYLE_DEEPSEEK_V3 ||
                            srv->style == MC_CHAT_STYLE_GLM4; // answers open with a <think> block
        j->rp = (mc_reply_params_t){srv->style, fmt == S_FMT_CHAT && thinks && q.thinking,
                                    mc_toolcall_active(&q.tools)};
        j->tools = q.tools; // the job's now
        memset(&q.tools, 0, sizeof q.tools);
        char piece[MC_TOKENIZER_MAX_PIECE];
        const char *const *names;
        const size_t n_names =
            j->rp.tools || srv->style == MC_CHAT_STYLE_HARMONY ? mc_toolcall_marker_tokens(srv->style, &names) : 0;
        for (size_t i = 0; i < n_names && j->n_marks < sizeof j->mark_ids / sizeof *j->mark_ids; i++) {
            const int32_t id = mc_tokenizer_find(tok, names[i], strlen(names[i]));
            if (id >= 0 && mc_tokenizer_token_bytes(tok, id, piece, sizeof piece) == 0) // a control token
                j->mark_ids[j->n_marks] = id, j->mark_names[j->n_marks++] = names[i];
        }
        const int32_t ct = mc_tokenizer_find(tok, MC_CHAT_V3_CALLS, strlen(MC_CHAT_V3_CALLS));
        if (j->rp.tools && srv->style == MC_CHAT_STYLE_MISTRAL_V3 && ct >= 0 &&
            mc_tokenizer_token_bytes(tok, ct, piece, sizeof piece) == 0)
            j->calls_tok = ct;
        // A forced call (tool_choice "required" or a named function) is
        // decoded under its constraint: the format's call opening, the call
        // object whose arguments follow the tool's parameters schema, the
        // closing. So the answer is a call that parses, whatever the weights;
        // it takes the place of any response_format (a call has no text).
        bool forced = false;
        char terr[MC_ERR_LEN];
        if (j->rp.tools && mc_toolcall_constraint(&j->tools, srv->style, &forced, &j->tcon, terr) != MC_OK) {
            j->refs = 1;
            s_job_release(j);
            mc_api_request_free(&q);
            mc_api_error(&e, 400, "invalid_request_error", "tools", NULL, "%s", terr);
            return s_error(srv, c, r, ep, &e);
        }
        if (forced) { // checked here, so a schema we cannot enforce is the client's 400
            mc_jschema_destroy(&j->schema); // a response_format's
            if (!(j->schema = mc_jschema_compile(j->tcon.schema, strlen(j->tcon.schema), terr))) {
                j->refs = 1;
                s_job_release(j);
                mc_api_request_free(&q);
                mc_api_error(&e, 400, "invalid_request_error", "tools", NULL,
                             "a forced tool call is decoded under its parameters' JSON Schema: %s", terr);
                return s_error(srv, c, r, ep, &e);
            }
            j->con = mc_constraint_params_default();
            if (j->tcon.prefix_token && j->calls_tok >= 0) {
                j->con.prefix_ids = &j->calls_tok, j->con.n_prefix_ids = 1;
            } else if (j->tcon.prefix && *j->tcon.prefix) {
                j->con.prefix = j->tcon.prefix; // spelled out (a vocabulary without the control token)
            }
            j->con.compiled = j->schema;
            if (j->tcon.suffix && *j->tcon.suffix) j->con.suffix = j->tcon.suffix;
            j->gp.constrain = &j->con;
        }
    }
    j->t_start = r->t0;
    mc_api_request_free(&q);
    for (uint32_t i = 0; i < j->gp.n_stop; i++)
        if (!j->stops[i]) {
            j->refs = 1;
            s_job_release(j);
            mc_api_error(&e, 500, "server_error", NULL, NULL, "out of memory");
            return s_error(srv, c, r, ep, &e);
        }
    pthread_mutex_lock(&srv->mu);
    const bool closing = srv->quit;
    if (!closing) {
        s_job_t **tail = &srv->queue;
        while (*tail) tail = &(*tail)->next;
        *tail = j;
        srv->n_queued++;
        pthread_cond_signal(&srv->cv);
    }
    pthread_mutex_unlock(&srv->mu);
    if (closing) { // the engine thread is gone or going: nobody would answer
        j->refs = 1;
        s_job_release(j);
        mc_api_error(&e, 503, "server_error", NULL, NULL, "the server is shutting down");
        return s_error(srv, c, r, ep, &e);
    }
    j->log_it = true;
    j->status = 200;

    if (j->stream) {
        j->conn = c;
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, s_stream_read, j, s_stream_free);
        if (!resp) {
            atomic_store(&j->cancel, true);
            j->client_left = true, j->t_end = mc_clock_s();
            s_job_release(j);
            return MHD_NO;
        }
        const bool ndjson = fmt == S_FMT_OLLAMA_CHAT || fmt == S_FMT_OLLAMA_GENERATE;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ndjson ? "application/x-ndjson" : "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        s_decorate(r, resp);
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp); // s_stream_free runs when MHD is done with it
        return rc;
    }
    // Not streamed: wait here (this connection's own thread), watching the
    // client so a hang-up cancels the work.
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += S_CLIENT_CHECK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!j->done && s_client_gone(c)) atomic_store(&j->cancel, true), j->client_left = true;
    }
    pthread_mutex_unlock(&j->mu);
    enum MHD_Result rc;
    mc_api_result_t whole = s_result(j);
    mc_reply_view_t view;
    mc_toolcall_list_t calls = {0};
    if (s_splits(j) && j->done) {
        s_split(j, &view, &calls);
        whole = s_split_result(j, &view, &calls);
    }
    if (s_failed(j, &e)) {
        j->status = e.status;
        rc = s_error(srv, c, r, ep, &e);
    } else {
        s_keep(j, &whole);
        char *body = fmt == S_FMT_RESPONSES ? mc_responses_json(&j->rans, &whole, NULL)
                     : fmt == S_FMT_CHAT || fmt == S_FMT_COMPLETIONS
                         ? mc_api_completion_json(&j->ans, &whole)
                         : mc_ollama_final_json(&j->oans, &whole, &j->usage, mc_clock_s() - j->t_start);
        rc = s_send(srv, c, r, ep, 200, "application/json", body);
    }
    mc_toolcall_list_free(&calls);
    j->t_end = mc_clock_s();
    s_job_release(j);
    return rc;
}

// --- the other endpoints ------------------------------------------------------------------------

static cJSON *s_model_object(mc_server_t *srv) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", mc_session_model_id(srv->s));
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)srv->started);
    cJSON_AddStringToObject(m, "owned_by", "moe-cluster");
    return m;
}

static void s_counts(mc_server_t *srv, uint32_t *running, uint32_t *queued) {
    pthread_mutex_lock(&srv->mu);
    *running = srv->n_running, *queued = srv->n_queued;
    pthread_mutex_unlock(&srv->mu);
}

// The rebalance thread: the loop's timer and watch, ten times a second.
static void *s_rebalance_main(void *arg) {
    mc_server_t *srv = arg;
    uint64_t counts[MC_REBALANCE_N_OUTCOMES];
    while (!atomic_load(&srv->rebalance_quit)) {
        mc_rebalance_poll(srv->rebalance, mc_clock_ms());
        mc_rebalance_counts(srv->rebalance, counts);
        mc_metrics_rebalance(srv->metrics, counts);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static cJSON *s_cluster_json(mc_server_t *srv) {
    const mc_hparams_t *hp = &mc_session_model(srv->s)->hp;
    uint64_t *counts = malloc((size_t)hp->n_layer * hp->n_expert * sizeof *counts);
    if (!counts) return NULL;
    mc_engine_expert_counts(mc_session_engine(srv->s), counts);
    char *txt = mc_experts_stats_json(mc_session_experts(srv->s), counts);
    cJSON *root = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    if (!root) { // one machine: every expert is local
        root = cJSON_CreateObject();
        cJSON_AddArrayToObject(root, "nodes");
        cJSON_AddNumberToObject(root, "layers", hp->n_layer);
        cJSON_AddNumberToObject(root, "experts", hp->n_expert);
        cJSON *local = cJSON_AddArrayToObject(root, "local_experts"), *rows = cJSON_AddArrayToObject(root, "rows_per_expert");
        for (uint32_t l = 0; l < hp->n_layer; l++) {
            cJSON *a = cJSON_CreateArray(), *b = cJSON_CreateArray();
            for (uint32_t x = 0; x < hp->n_expert; x++) {
                cJSON_AddItemToArray(a, cJSON_CreateNumber(x));
                cJSON_AddItemToArray(b, cJSON_CreateNumber((double)counts[(size_t)l * hp->n_expert + x]));
            }
            cJSON_AddItemToArray(local, a);
            cJSON_AddItemToArray(rows, b);
        }
    }
    free(counts);
    uint32_t running, queued;
    s_counts(srv, &running, &queued);
    cJSON_AddStringToObject(root, "model", mc_session_model_id(srv->s));
    cJSON_AddNumberToObject(root, "generations_active", running);
    cJSON_AddNumberToObject(root, "generations_queued", queued);
    cJSON_AddNumberToObject(root, "parallel", mc_engine_n_seq(mc_session_engine(srv->s)));
    cJSON_AddNumberToObject(root, "context", mc_engine_n_ctx(mc_session_engine(srv->s)));
    const mc_engine_t *e = mc_session_engine(srv->s);
    cJSON_AddStringToObject(root, "kv_type", mc_engine_kv_type_name(mc_engine_kv_type(e)));
    cJSON_AddNumberToObject(root, "kv_cache_bytes", (double)mc_engine_n_seq(e) * (double)mc_engine_kv_bytes(e, mc_engine_n_ctx(e)));
    if (srv->rebalance) cJSON_AddItemToObject(root, "rebalance", mc_rebalance_json(srv->rebalance));
    return root;
}

static enum MHD_Result s_health(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r) {
    cJSON *root = cJSON_CreateObject();
    size_t nodes, alive;
    mc_experts_health(mc_session_experts(srv->s), &nodes, &alive);
    // Lost nodes do not stop the service (their experts run here): degraded.
    cJSON_AddStringToObject(root, "status", alive == nodes ? "ok" : "degraded");
    cJSON_AddStringToObject(root, "model", mc_session_model_id(srv->s));
    cJSON_AddNumberToObject(root, "nodes", (double)nodes);
    cJSON_AddNumberToObject(root, "nodes_alive", (double)alive);
    return s_json(srv, c, r, MC_EP_HEALTH, 200, root);
}

// A file of the web page: from --web DIR, or built in.
static enum MHD_Result s_web(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, const char *url) {
    const char *name = strcmp(url, "/") ? url : "/index.html";
    mc_api_error_t e;
    // Names are one path segment of plain characters: nothing can leave the folder.
    bool plain = name[0] == '/' && name[1] && name[1] != '.';
    for (const char *p = name + 1; *p && plain; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                *p == '-' || *p == '_';
    const char *ext = strrchr(name, '.');
    const char *type = !ext                   ? "application/octet-stream"
                       : !strcmp(ext, ".html") ? "text/html; charset=utf-8"
                       : !strcmp(ext, ".js")   ? "text/javascript; charset=utf-8"
                       : !strcmp(ext, ".css")  ? "text/css; charset=utf-8"
                       : !strcmp(ext, ".png")  ? "image/png"
                       : !strcmp(ext, ".svg")  ? "image/svg+xml"
                                               : "application/octet-stream";
    if (plain && srv->p.web_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", srv->p.web_dir, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            struct MHD_Response *resp = MHD_create_response_from_fd((size_t)st.st_size, fd);
            if (!resp) {
                close(fd);
                return MHD_NO;
            }
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
            enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
            MHD_destroy_response(resp);
            mc_metrics_request(srv->metrics, MC_EP_WEB, 200, mc_clock_s() - r->t0);
            return rc;
        }
        if (fd >= 0) close(fd);
    } else if (plain) {
        for (size_t i = 0; i < mc_web_n_assets; i++)
            if (!strcmp(mc_web_assets[i].path, name)) {
                struct MHD_Response *resp = MHD_create_response_from_buffer(
                    mc_web_assets[i].len, (void *)mc_web_assets[i].data, MHD_RESPMEM_PERSISTENT);
                if (!resp) return MHD_NO;
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
                enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
                MHD_destroy_response(resp);
                mc_metrics_request(srv->metrics, MC_EP_WEB, 200, mc_clock_s() - r->t0);
                return rc;
            }
    }
    mc_api_error(&e, 404, "not_found_error", NULL, NULL, "no such page: %.100s", url);
    return s_error(srv, c, r, MC_EP_WEB, &e);
}

// What Ollama's /api/tags and /api/show say about the model.
static void s_ollama_model(mc_server_t *srv, mc_ollama_model_t *o) {
    const mc_model_t *m = mc_session_model(srv->s);
    const mc_hparams_t *hp = &m->hp;
    struct stat st;
    const bool have = m->path && stat(m->path, &st) == 0;
    // Parameters from the shapes: embeddings and head, attention, router, experts.
    const uint64_t dim = hp->dim, attn = (uint64_t)hp->n_head * hp->head_dim, kv = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t attn_params = dim * (2 * attn + 2 * kv);
    if (hp->arch->mla) { // q (or its compressed form), the latent, k_b and v_b per head, the output
        const uint64_t r = hp->kv_lora_rank, v = (uint64_t)hp->n_head * hp->head_dim_v;
        const uint64_t q = hp->q_lora_rank ? (dim + attn) * hp->q_lora_rank : dim * attn;
        attn_params = q + dim * (r + hp->rope_dim) + hp->n_head * (uint64_t)(hp->head_dim - hp->rope_dim) * r + r * v +
                      v * dim;
    }
    const uint64_t per_layer = attn_params + (uint64_t)hp->n_expert * dim * (1 + 3 * (uint64_t)hp->ffn) +
                               3 * dim * (uint64_t)hp->ffn_shexp;
    *o = (mc_ollama_model_t){
        .name = mc_session_model_id(srv->s),
        .size = have ? (uint64_t)st.st_size : 0,
        .fingerprint = mc_model_fingerprint(m),
        .modified = have ? (int64_t)st.st_mtime : srv->started,
        .family = hp->arch->name,
        .parameters = 2 * (uint64_t)hp->n_vocab * dim + (uint64_t)hp->n_layer * per_layer,
        .quantization = mc_dtype_name(m->layers[0].wq.type),
        .context_length = mc_engine_n_ctx(mc_session_engine(srv->s)),
        .embedding_length = hp->dim,
        .n_layer = hp->n_layer,
        .n_expert = hp->n_expert,
        .n_expert_used = hp->n_expert_used,
    };
}

static enum MHD_Result s_ollama_show(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r) {
    mc_api_error_t e;
    char name[256];
    mc_ollama_model_t m;
    s_ollama_model(srv, &m);
    if (mc_ollama_show_parse(r->body ? r->body : "", r->len, name, sizeof name, &e))
        return s_error(srv, c, r, MC_EP_OLLAMA_INFO, &e);
    if (!mc_ollama_name_is(&m, name)) {
        mc_api_error(&e, 404, "not_found_error", "model", "model_not_found", "model '%.100s' not found (this server has '%s')",
                     name, m.name);
        return s_error(srv, c, r, MC_EP_OLLAMA_INFO, &e);
    }
    return s_send(srv, c, r, MC_EP_OLLAMA_INFO, 200, "application/json", mc_ollama_show_json(&m));
}

// "Authorization: Bearer KEY": the scheme in any case (RFC 9110 says it is
// case-insensitive; some clients send "bearer"), then spaces, then the key.
static bool s_authorized(mc_server_t *srv, struct MHD_Connection *c) {
    if (!srv->p.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t')) return false;
    const char *got = h + 6;
    while (*got == ' ' || *got == '\t') got++;
    // Compare in time independent of where the first difference is.
    const char *want = srv->p.api_key;
    size_t lg = strlen(got), lw = strlen(want);
    unsigned diff = (unsigned)(lg != lw);
    for (size_t i = 0; i < lw; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < lg ? got[i] : 0);
    return diff == 0;
}

typedef enum {
    S_H_CHAT, S_H_COMPLETIONS, S_H_RESPONSES, S_H_MODELS, S_H_CLUSTER, S_H_ROUTING, S_H_HEALTH, S_H_METRICS,
    S_H_OLLAMA_CHAT, S_H_OLLAMA_GENERATE, S_H_OLLAMA_VERSION, S_H_OLLAMA_TAGS, S_H_OLLAMA_SHOW,
} s_handler_t;

// A CORS preflight (OPTIONS) on a known path: 204 with Allow; for an
// allowed origin the Access-Control-* headers the browser waits for.
static enum MHD_Result s_preflight(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    s_decorate(r, resp);
    if (r->allow_origin) {
        char headers[512];
        mc_cors_allow_headers(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers"), headers,
                              sizeof headers);
        char age[16];
        snprintf(age, sizeof age, "%d", MC_CORS_MAX_AGE);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", r->allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", headers);
        MHD_add_response_header(resp, "Access-Control-Max-Age", age);
    }
    mc_metrics_request(srv->metrics, ep, 204, mc_clock_s() - r->t0);
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    return rc;
}

// The cluster's live changes (membership.h): the API key as for every
// /v1 route, then the body (capped like every body) to the module.
static enum MHD_Result s_membership(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, const char *url,
                                    const char *method) {
    mc_api_error_t e;
    r->allow = mc_membership_allow(url);
    if (r->allow && !strcmp(method, "OPTIONS")) return s_preflight(srv, c, r, MC_EP_CLUSTER);
    if (!s_authorized(srv, c)) {
        r->allow = NULL;
        mc_api_error(&e, 401, "authentication_error", NULL, "invalid_api_key",
                     "a valid API key is required: 'Authorization: Bearer KEY' (the server's --api-key)");
        return s_error(srv, c, r, MC_EP_CLUSTER, &e);
    }
    if (r->too_big) {
        r->allow = NULL;
        mc_api_error(&e, 413, "invalid_request_error", NULL, NULL, "the body is larger than %zu bytes", srv->p.max_body);
        return s_error(srv, c, r, MC_EP_CLUSTER, &e);
    }
    int status = 200;
    cJSON *root = mc_membership_handle(mc_session_experts(srv->s), method, url, r->body, r->len, &status, &e);
    if (!root) {
        if (e.status != 405) r->allow = NULL; // a 405 names the methods in Allow
        return s_error(srv, c, r, MC_EP_CLUSTER, &e);
    }
    r->allow = NULL;
    mc_log_status(srv->p.log, "moe-coordinator", "%s %s: placement change staged", method, url);
    return s_json(srv, c, r, MC_EP_CLUSTER, status, root);
}

mc_err_t mc_server_reload(mc_server_t *srv, char *err) {
    mc_err_t rc = mc_membership_reload(mc_session_experts(srv->s), srv->p.cluster_path, err);
    if (rc) mc_log_status(srv->p.log, "moe-coordinator", "SIGHUP: the cluster file was not taken: %s", err);
    else mc_log_status(srv->p.log, "moe-coordinator", "SIGHUP: %s read again, its placement staged", srv->p.cluster_path);
    return rc;
}

static enum MHD_Result s_dispatch(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, const char *url,
                               const char *method) {
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    const bool options = !strcmp(method, "OPTIONS");
    mc_api_error_t e;
    struct {
        const char *path;
        s_handler_t handler;
        mc_endpoint_t ep;
        bool post;
    } const handlers[] = {
        {"/v1/chat/completions", S_H_CHAT, MC_EP_CHAT, true},
        {"/v1/completions", S_H_COMPLETIONS, MC_EP_COMPLETIONS, true},
        {"/v1/responses", S_H_RESPONSES, MC_EP_RESPONSES, true},
        {"/v1/models", S_H_MODELS, MC_EP_MODELS, false},
        {"/v1/cluster", S_H_CLUSTER, MC_EP_CLUSTER, false},
        {"/v1/routing", S_H_ROUTING, MC_EP_CLUSTER, false},
        {"/health", S_H_HEALTH, MC_EP_HEALTH, false},
        {"/metrics", S_H_METRICS, MC_EP_METRICS, false},
        {"/api/chat", S_H_OLLAMA_CHAT, MC_EP_OLLAMA, true},
        {"/api/generate", S_H_OLLAMA_GENERATE, MC_EP_OLLAMA, true},
        {"/api/version", S_H_OLLAMA_VERSION, MC_EP_OLLAMA_INFO, false},
        {"/api/tags", S_H_OLLAMA_TAGS, MC_EP_OLLAMA_INFO, false},
        {"/api/show", S_H_OLLAMA_SHOW, MC_EP_OLLAMA_INFO, true},
    };
    r->allow_origin = mc_cors_allow(srv->cors, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
    r->ollama = !strncmp(url, "/api/", 5);
    if (mc_membership_path(url)) return s_membership(srv, c, r, url, method);
    const bool model_path = !strncmp(url, "/v1/models/", 11);
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (strcmp(url, handlers[i].path) && !(model_path && handlers[i].handler == S_H_MODELS)) continue;
        const mc_endpoint_t ep = handlers[i].ep;
        r->allow = handlers[i].post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
        // Before authorization: a browser's preflight carries no credentials.
        if (options) return s_preflight(srv, c, r, ep);
        if (handlers[i].post ? !post : !get) {
            mc_api_error(&e, 405, "invalid_request_error", NULL, NULL, "%s takes %s, not %.20s", handlers[i].path,
                         handlers[i].post ? "POST" : "GET", method);
            return s_error(srv, c, r, ep, &e);
        }
        r->allow = NULL;
        if ((!strncmp(url, "/v1/", 4) || r->ollama) && !s_authorized(srv, c)) {
            mc_api_error(&e, 401, "authentication_error", NULL, "invalid_api_key",
                         "a valid API key is required: 'Authorization: Bearer KEY' (the server's --api-key)");
            return s_error(srv, c, r, ep, &e);
        }
        if (r->too_big) {
            mc_api_error(&e, 413, "invalid_request_error", NULL, NULL, "the body is larger than %zu bytes",
                         srv->p.max_body);
            return s_error(srv, c, r, ep, &e);
        }
        switch (handlers[i].handler) {
        case S_H_CHAT: return s_generation(srv, c, r, S_FMT_CHAT);
        case S_H_COMPLETIONS: return s_generation(srv, c, r, S_FMT_COMPLETIONS);
        case S_H_RESPONSES: return s_generation(srv, c, r, S_FMT_RESPONSES);
        case S_H_OLLAMA_CHAT: return s_generation(srv, c, r, S_FMT_OLLAMA_CHAT);
        case S_H_OLLAMA_GENERATE: return s_generation(srv, c, r, S_FMT_OLLAMA_GENERATE);
        case S_H_OLLAMA_VERSION: return s_send(srv, c, r, ep, 200, "application/json", mc_ollama_version_json());
        case S_H_OLLAMA_TAGS: {
            mc_ollama_model_t m;
            s_ollama_model(srv, &m);
            return s_send(srv, c, r, ep, 200, "application/json", mc_ollama_tags_json(&m));
        }
        case S_H_OLLAMA_SHOW: return s_ollama_show(srv, c, r);
        case S_H_MODELS: {
            if (model_path) {
                if (strcmp(url + 11, mc_session_model_id(srv->s))) {
                    mc_api_error(&e, 404, "invalid_request_error", "model", "model_not_found",
                                 "the model '%.100s' does not exist (this server has '%s')", url + 11,
                                 mc_session_model_id(srv->s));
                    return s_error(srv, c, r, ep, &e);
                }
                return s_json(srv, c, r, ep, 200, s_model_object(srv));
            }
            cJSON *root = cJSON_CreateObject();
            cJSON_AddStringToObject(root, "object", "list");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), s_model_object(srv));
            return s_json(srv, c, r, ep, 200, root);
        }
        case S_H_ROUTING:
            if (!mc_session_routing(srv->s)) {
                mc_api_error(&e, 404, "invalid_request_error", NULL, NULL,
                             "routing statistics are off: start the server with --routing-stats FILE");
                return s_error(srv, c, r, ep, &e);
            }
            return s_send(srv, c, r, ep, 200, "application/json", mc_routing_json(mc_session_routing(srv->s)));
        case S_H_CLUSTER: return s_json(srv, c, r, ep, 200, s_cluster_json(srv));
        case S_H_HEALTH: return s_health(srv, c, r);
        case S_H_METRICS: {
            uint32_t running, queued;
            s_counts(srv, &running, &queued);
            return s_send(srv, c, r, ep, 200, "text/plain; version=0.0.4; charset=utf-8",
                          mc_metrics_render(srv->metrics, srv->s, running, queued));
        }
        }
    }
    const bool api = !strncmp(url, "/v1/", 4) || r->ollama;
    if (!api && (get || options)) {
        if (!options) return s_web(srv, c, r, url);
        r->allow = "GET, HEAD, OPTIONS";
        return s_preflight(srv, c, r, MC_EP_WEB);
    }
    if (!api) {
        r->allow = "GET, HEAD, OPTIONS";
        mc_api_error(&e, 405, "invalid_request_error", NULL, NULL, "%.100s takes GET, not %.20s", url, method);
        return s_error(srv, c, r, MC_EP_WEB, &e);
    }
    mc_api_error(&e, 404, "invalid_request_error", NULL, "unknown_url", "unknown URL: %.20s %.100s", method, url);
    return s_error(srv, c, r, MC_EP_OTHER, &e);
}

static enum MHD_Result s_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    mc_server_t *srv = cls;
    s_req_t *r = *con_cls;
    if (!r) { // headers are in: the first call
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        r->t0 = mc_clock_s();
        *con_cls = r;
        pthread_mutex_lock(&srv->mu);
        srv->n_open++;
        pthread_mutex_unlock(&srv->mu);
        return MHD_YES;
    }
    if (*upload_size) { // a piece of the body
        if (!r->too_big && r->len + *upload_size > srv->p.max_body) {
            r->too_big = true;
            free(r->body);
            r->body = NULL, r->len = r->cap = 0;
        }
        if (!r->too_big) {
            if (r->len + *upload_size > r->cap) {
                size_t cap = r->cap ? r->cap : 4096;
                while (cap < r->len + *upload_size) cap *= 2;
                char *b = realloc(r->body, cap);
                if (!b) return MHD_NO;
                r->body = b, r->cap = cap;
            }
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return s_dispatch(srv, c, r, url, method);
}

static void s_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c, (void)toe;
    mc_server_t *srv = cls;
    s_req_t *r = *con_cls;
    if (r) {
        free(r->body);
        pthread_mutex_lock(&srv->mu);
        srv->n_open--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
    }
    free(r);
    *con_cls = NULL;
}

static void s_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    MC_LOGI("http: %s", line);
}

// --- lifetime --------------------------------------------------------------------------------

mc_server_t *mc_server_new(mc_session_t *s, const mc_server_params_t *p, char *err) {
    mc_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    srv->s = s;
    srv->p = *p;
    if (!srv->p.cluster_path) srv->p.cluster_path = mc_membership_file(mc_session_experts(s));
    srv->started = (int64_t)time(NULL);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (mc_session_chat_style(s, &srv->style, err)) goto fail; // an unknown template: --chat-format
    if (p->cors_origin && !(srv->cors = mc_cors_new(p->cors_origin, err))) goto fail;
    if (!(srv->items = mc_items_new(S_ITEMS_KEPT, S_ITEMS_BYTES))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!(srv->metrics = mc_metrics_new())) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    mc_cluster_t *cl = mc_cluster_of(mc_session_experts(s));
    if (cl && mc_cluster_config(cl)->rebalance.on) {
        mc_rebalance_params_t rp = p->rebalance ? *p->rebalance : mc_rebalance_params_default();
        rp.batch = mc_engine_n_seq(mc_session_engine(s));
        if (!rp.log) rp.log = p->log;
        if (!mc_session_routing(s)) {
            mc_err_set(err, MC_ERR_ARG, "rebalancing needs the routing statistics (the session collects them for a "
                                        "cluster file with a rebalance block)");
            goto fail;
        }
        if (!(srv->rebalance = mc_rebalance_new(cl, mc_session_model(s), mc_session_routing(s), &rp, err))) goto fail;
        uint64_t zero[MC_REBALANCE_N_OUTCOMES] = {0};
        mc_metrics_rebalance(srv->metrics, zero);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", p->port);
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai) {
        mc_err_set(err, MC_ERR_ARG, "--host %s: %s", p->host, gai_strerror(gai));
        goto fail;
    }
    if (pthread_create(&srv->engine, NULL, s_engine_main, srv)) {
        freeaddrinfo(ai);
        mc_err_set(err, MC_ERR_NOMEM, "cannot start the engine thread");
        goto fail;
    }
    srv->engine_started = true;
    if (srv->rebalance) {
        if (pthread_create(&srv->rebalancer, NULL, s_rebalance_main, srv)) {
            freeaddrinfo(ai);
            mc_err_set(err, MC_ERR_NOMEM, "cannot start the rebalance thread");
            goto fail;
        }
        srv->rebalancer_started = true;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    srv->d = MHD_start_daemon(flags, p->port, NULL, NULL, s_handle, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)p->max_per_ip,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)p->idle_timeout_s,
                              MHD_OPTION_NOTIFY_COMPLETED, s_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, srv,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->d) {
        mc_err_set(err, MC_ERR_NET, "cannot listen on %s port %u (in use, or not an address of this machine)", p->host,
                   p->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : p->port;
    return srv;
fail:
    mc_server_destroy(&srv);
    return NULL;
}

void mc_server_destroy(mc_server_t **psrv) {
    if (!psrv || !*psrv) return;
    mc_server_t *srv = *psrv;
    if (srv->rebalancer_started) {
        atomic_store(&srv->rebalance_quit, true);
        pthread_join(srv->rebalancer, NULL);
    }
    if (srv->engine_started) {
        pthread_mutex_lock(&srv->mu);
        srv->quit = true;
        pthread_cond_signal(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        pthread_join(srv->engine, NULL); // every generation has ended: waiting requests answer
        // Let the answers (a stream's error event) reach their clients before
        // the daemon closes the connections; a client that does not read
        // holds this up for S_DRAIN_MS at most.
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += S_DRAIN_MS / 1000;
        pthread_mutex_lock(&srv->mu);
        while (srv->n_open && pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) == 0) {
        }
        pthread_mutex_unlock(&srv->mu);
    }
    if (srv->d) MHD_stop_daemon(srv->d);
    mc_rebalance_destroy(&srv->rebalance); // the engine's thread, which reports to it, has ended
    mc_metrics_destroy(&srv->metrics);
    mc_cors_destroy(&srv->cors);
    mc_items_destroy(&srv->items);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
    *psrv = NULL;
}

uint16_t mc_server_port(const mc_server_t *srv) { return srv->port; }

// Wait up to 100 ms for announced nodes and offer each to the cluster
// (membership.h); one that meets a staged change waits in *pending and is
// offered again on the next call.
static void s_discover_take(mc_server_t *srv, mc_browse_t *b, mc_discovery_node_t *pending, bool *have_pending) {
    char err[MC_ERR_LEN];
    mc_discovery_node_t d;
    bool got = false;
    if (*have_pending) {
        d = *pending, got = true, *have_pending = false;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } else if (mc_browse_next(b, 100, &d, &got, err)) {
        mc_log_status(srv->p.log, "moe-coordinator", "discover: %s", err);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        return;
    }
    if (!got) return;
    bool added;
    mc_err_t rc = mc_membership_discovered(mc_session_experts(srv->s), &d, &added, err);
    if (rc == MC_ERR_BUSY) *pending = d, *have_pending = true;
    else if (rc)
        mc_log_status(srv->p.log, "moe-coordinator", "discover: node %s at %s announced itself: %s", d.name, d.endpoint,
                      err);
    else if (added)
        mc_log_status(srv->p.log, "moe-coordinator", "discover: node %s at %s (key %s) joins: placement change staged",
                      d.name, d.endpoint, d.public_key);
}

mc_err_t mc_server_run(mc_session_t *s, const mc_server_params_t *p, atomic_int *stop, char *err) {
    mc_server_t *srv = mc_server_new(s, p, err);
    if (!srv) return mc_err_code(err, MC_ERR_NET);
    const bool any = !strcmp(p->host, "0.0.0.0") || !strcmp(p->host, "::");
    mc_log_status(p->log, "moe-coordinator", "serving %s on http://%s%s%s:%u/ (API under /v1, %u requests decoded together)",
                  mc_session_model_id(s), strchr(p->host, ':') ? "[" : "", any ? "localhost" : p->host,
                  strchr(p->host, ':') ? "]" : "", srv->port, mc_engine_n_seq(mc_session_engine(s)));
    if (any && !p->api_key)
        mc_log_status(p->log, "moe-coordinator",
                      "warning: listening on every address without --api-key: anyone who can reach this port can use "
                      "the model");
    // discover: true: nodes announced on the network are found by Avahi's
    // thread and taken from its queue here, between the 100 ms naps, by the
    // same thread that stages SIGHUP's changes.
    mc_browse_t *browse = NULL;
    mc_cluster_t *cl = mc_cluster_of(mc_session_experts(s));
    if (cl && mc_cluster_config_latest(cl, NULL)->discover) {
        if (!(browse = mc_browse_new(p->log, true, err))) {
            mc_server_destroy(&srv);
            return mc_err_code(err, MC_ERR_NET);
        }
        mc_log_status(p->log, "moe-coordinator", "discover: nodes announcing %s with a key in discover_keys join",
                      MC_DISCOVERY_TYPE);
    }
    mc_discovery_node_t pending;
    bool have_pending = false;
    while (!stop || !atomic_load(stop)) {
        if (browse) s_discover_take(srv, browse, &pending, &have_pending);
        else {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        char rerr[MC_ERR_LEN];
        if (p->reload && atomic_exchange(p->reload, 0)) (void)mc_server_reload(srv, rerr);
    }
    mc_browse_destroy(&browse);
    mc_log_status(p->log, "moe-coordinator", "stopping the server");
    mc_server_destroy(&srv);
    return MC_OK;
}
