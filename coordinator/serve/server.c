/*
 * server: libmicrohttpd plumbing, routes, the engine thread and the jobs
 * that connect a request to its generation.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "chat.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "rng.h"
#include "routing.h"
#include "web_assets.h"


// How long the engine thread sleeps without work before it looks again
// (and keeps the nodes' leases with heartbeats).
#define S_IDLE_MS 250
// A stream with nothing new for this long gets an SSE comment, which keeps
// proxies from closing it and finds out whether the client is still there.
#define S_KEEPALIVE_MS 15000
// A waiting non-streamed request checks its client this often.
#define S_CLIENT_CHECK_MS 200

// One completion request and its generation. The HTTP side and the engine
// thread each hold a reference; the last one frees it.
// A streamed answer's events, in order.
typedef enum {
    S_SSE_ROLE,     // the first chunk: the assistant's role
    S_SSE_CONTENT,  // text chunks as tokens come
    S_SSE_FINISH,   // the finish reason (or the error) as its own event
    S_SSE_USAGE,    // the usage chunk, when the client asked for it
    S_SSE_DONE,     // data: [DONE]
    S_SSE_END,      // nothing more
} s_sse_t;

typedef struct s_job s_job_t;
struct s_job {
    mc_server_t *srv;
    bool stream, include_usage;
    mc_api_answer_t ans;
    char id[48];
    mc_gen_params_t gp;            // prompt and stop strings are copied at submit
    int32_t *prompt;
    char *stops[MC_SCHEDULER_MAX_STOP];
    // Shared with the engine thread (mu).
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;                    // everything generated so far
    size_t len, cap;
    bool done;
    mc_finish_t why;
    mc_gen_usage_t usage;
    char err[MC_ERR_LEN];
    atomic_bool cancel;            // the client is gone
    int refs;
    double t_start, t_last;        // s; t_last: the previous token
    uint64_t sched_id;
    s_job_t *next;                 // the submit queue, then the live list
    // HTTP side only (the stream reader).
    size_t sent;
    s_sse_t phase;                 // how far the event stream is
    char *out;                     // SSE bytes not yet given to MHD
    size_t out_len, out_at;
};

struct mc_server {
    mc_session_t *s;
    mc_server_params_t p;
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
    bool quit;
    int64_t started;      // unix time, the model's "created"
};

typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
    double t0;
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

static void s_job_release(s_job_t *j) {
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    for (int i = 0; i < MC_SCHEDULER_MAX_STOP; i++) free(j->stops[i]);
    free(j->prompt), free(j->text), free(j->out);
    free(j);
}

// Engine thread: a piece of text.
static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
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
    const double gap = j->t_last ? now - j->t_last : -1;
    j->t_last = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (gap >= 0 && id >= 0) mc_metrics_token_gap(j->srv->metrics, gap);
    return ok && !atomic_load(&j->cancel);
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
            mc_scheduler_step(sched, err); // a failure has ended its generations with the message
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

static enum MHD_Result s_send(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep, int status,
                              const char *type, char *body) {
    if (!body) {
        status = 500;
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
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

static enum MHD_Result s_error(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, mc_endpoint_t ep,
                               const mc_api_error_t *e) {
    return s_send(srv, c, r, ep, e->status, "application/json", mc_api_error_json(e));
}

// --- the SSE stream ------------------------------------------------------------------------

// Queue "data: {json}\n\n" (json freed) as the next bytes of j's stream.
static bool s_event(s_job_t *j, char *json, const char *raw) {
    const char *payload = json ? json : raw;
    if (!payload) return false;
    size_t n = strlen(payload);
    free(j->out);
    j->out = malloc(n + 9);
    if (!j->out) {
        free(json);
        return false;
    }
    j->out_len = (size_t)snprintf(j->out, n + 9, "data: %s\n\n", payload);
    j->out_at = 0;
    free(json);
    return true;
}

static ssize_t s_sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    s_job_t *j = cls;
    while (j->out_at == j->out_len) {
        if (j->phase == S_SSE_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (j->phase == S_SSE_ROLE) {
            j->phase = S_SSE_CONTENT;
            if (j->ans.chat && !s_event(j, mc_api_chunk_json(&j->ans, true, "", 0, MC_FINISH_NONE), NULL))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (j->phase == S_SSE_CONTENT) {
            pthread_mutex_lock(&j->mu);
            if (j->len == j->sent && !j->done) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += S_KEEPALIVE_MS / 1000;
                pthread_cond_timedwait(&j->cv, &j->mu, &ts);
            }
            char *chunk = NULL;
            bool keepalive = false, end = false;
            if (j->len > j->sent) {
                chunk = mc_api_chunk_json(&j->ans, false, j->text + j->sent, j->len - j->sent, MC_FINISH_NONE);
                j->sent = j->len;
            } else if (j->done) {
                end = true;
            } else {
                keepalive = true;
            }
            pthread_mutex_unlock(&j->mu);
            if (keepalive) {
                free(j->out);
                j->out = strdup(": keep-alive\n\n");
                if (!j->out) return MHD_CONTENT_READER_END_WITH_ERROR;
                j->out_len = strlen(j->out), j->out_at = 0;
            } else if (end) {
                j->phase = S_SSE_FINISH;
            } else if (!s_event(j, chunk, NULL)) {
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            continue;
        }
        if (j->phase == S_SSE_FINISH) { // the finish (or the error) as its own event
            j->phase = j->include_usage ? S_SSE_USAGE : S_SSE_DONE;
            bool ok;
            if (j->why == MC_FINISH_ERROR) {
                mc_api_error_t e;
                mc_api_error(&e, 500, "server_error", NULL, NULL, "the generation failed: %s", j->err);
                ok = s_event(j, mc_api_error_json(&e), NULL);
            } else {
                ok = s_event(j, mc_api_chunk_json(&j->ans, false, "", 0, j->why), NULL);
            }
            if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (j->phase == S_SSE_USAGE) {
            j->phase = S_SSE_DONE;
            if (!s_event(j, mc_api_usage_chunk_json(&j->ans, j->usage.prompt_tokens, j->usage.completion_tokens), NULL))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        j->phase = S_SSE_END;
        if (!s_event(j, NULL, "[DONE]")) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = j->out_len - j->out_at < max ? j->out_len - j->out_at : max;
    memcpy(buf, j->out + j->out_at, n);
    j->out_at += n;
    return (ssize_t)n;
}

// The stream's response is gone: finished, or the client left.
static void s_sse_free(void *cls) {
    s_job_t *j = cls;
    atomic_store(&j->cancel, true); // no-op when it is done
    mc_metrics_request(j->srv->metrics, j->ans.chat ? MC_EP_CHAT : MC_EP_COMPLETIONS, 200, mc_clock_s() - j->t_start);
    if (j->srv->p.log)
        mc_log_status(j->srv->p.log, "moe-coordinator", "%s (stream) 200 in %.2f s: %u prompt + %u generated tokens, %s%s",
                      j->ans.chat ? "chat" : "completion", mc_clock_s() - j->t_start, j->usage.prompt_tokens,
                      j->usage.completion_tokens, j->done ? mc_finish_name(j->why) : "client gone",
                      j->phase < S_SSE_END ? " (the client left)" : "");
    s_job_release(j);
}

// --- completions ---------------------------------------------------------------------------

static bool s_client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd pf = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

// The prompt ids of a request; MC_ERR_ARG with an API error for the client.
static mc_err_t s_prompt(mc_server_t *srv, const mc_api_request_t *q, int32_t **ids, size_t *n, mc_api_error_t *e) {
    const mc_tokenizer_t *tok = mc_session_tokenizer(srv->s);
    char err[MC_ERR_LEN];
    if (q->chat) {
        mc_chat_msg_t *msgs = malloc((q->n_msgs + 1) * sizeof *msgs);
        if (!msgs) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        size_t k = 0;
        if (q->safe_prompt || srv->p.safe_prompt)
            msgs[k++] = (mc_chat_msg_t){MC_CHAT_SYSTEM, mc_chat_safe_prompt, strlen(mc_chat_safe_prompt)};
        memcpy(msgs + k, q->msgs, q->n_msgs * sizeof *msgs);
        mc_err_t rc = mc_chat_format(tok, msgs, q->n_msgs + k, false, ids, n, err);
        free(msgs);
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

static enum MHD_Result s_completion(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, bool chat) {
    const mc_endpoint_t ep = chat ? MC_EP_CHAT : MC_EP_COMPLETIONS;
    mc_api_error_t e;
    mc_api_request_t q;
    if (mc_api_parse(r->body ? r->body : "", r->len, chat, &srv->p.sampling, &q, &e)) return s_error(srv, c, r, ep, &e);
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
    j->stream = q.stream, j->include_usage = q.include_usage;
    snprintf(j->id, sizeof j->id, "%s%016llx%08x", chat ? "chatcmpl-" : "cmpl-", (unsigned long long)mc_rng_fresh_u64(),
             (unsigned)(mc_rng_fresh_u64() & 0xffffffffu));
    j->ans = (mc_api_answer_t){chat, j->id, (int64_t)time(NULL), mc_session_model_id(srv->s)};
    j->prompt = ids;
    j->gp = mc_gen_params_default();
    j->gp.prompt = ids, j->gp.n_prompt = (uint32_t)n_ids;
    j->gp.sampling = q.sampling;
    if (!q.seed_given) j->gp.sampling.seed = mc_rng_fresh_seed();
    j->gp.max_tokens = q.max_tokens ? q.max_tokens : srv->p.max_tokens;
    j->gp.strip_space = chat;
    j->gp.speculate = srv->p.speculate;
    for (uint32_t i = 0; i < q.n_stop; i++) j->stops[i] = strdup(q.stop[i]);
    j->gp.stop = (const char *const *)j->stops, j->gp.n_stop = q.n_stop;
    j->gp.on_text = s_on_text, j->gp.on_done = s_on_done, j->gp.user = j;
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

    if (j->stream) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, s_sse_read, j, s_sse_free);
        if (!resp) {
            atomic_store(&j->cancel, true);
            s_job_release(j);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp); // s_sse_free runs when MHD is done with it
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
        if (!j->done && s_client_gone(c)) atomic_store(&j->cancel, true);
    }
    pthread_mutex_unlock(&j->mu);
    enum MHD_Result rc;
    int status = 200;
    if (j->why == MC_FINISH_ERROR) {
        mc_api_error(&e, 500, "server_error", NULL, NULL, "the generation failed: %s", j->err);
        rc = s_error(srv, c, r, ep, &e);
        status = 500;
    } else {
        rc = s_send(srv, c, r, ep, 200, "application/json",
                    mc_api_completion_json(&j->ans, j->text ? j->text : "", j->len, j->why, j->usage.prompt_tokens,
                                           j->usage.completion_tokens));
    }
    if (srv->p.log)
        mc_log_status(srv->p.log, "moe-coordinator", "%s %d in %.2f s: %u prompt + %u generated tokens, %s",
                      chat ? "chat" : "completion", status, mc_clock_s() - r->t0, j->usage.prompt_tokens,
                      j->usage.completion_tokens, mc_finish_name(j->why));
    s_job_release(j);
    return rc;
}

// --- the other routes ------------------------------------------------------------------------

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

static bool s_authorized(mc_server_t *srv, struct MHD_Connection *c) {
    if (!srv->p.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    // Compare in time independent of where the first difference is.
    const char *got = h + 7, *want = srv->p.api_key;
    size_t lg = strlen(got), lw = strlen(want);
    unsigned diff = (unsigned)(lg != lw);
    for (size_t i = 0; i < lw; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < lg ? got[i] : 0);
    return diff == 0;
}

static enum MHD_Result s_route(mc_server_t *srv, struct MHD_Connection *c, s_req_t *r, const char *url,
                               const char *method) {
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    mc_api_error_t e;
    struct {
        const char *path;
        mc_endpoint_t ep;
        bool post;
    } const routes[] = {{"/v1/chat/completions", MC_EP_CHAT, true}, {"/v1/completions", MC_EP_COMPLETIONS, true},
                        {"/v1/models", MC_EP_MODELS, false},        {"/v1/cluster", MC_EP_CLUSTER, false},
                        {"/health", MC_EP_HEALTH, false},           {"/metrics", MC_EP_METRICS, false},
                        {"/v1/routing", MC_EP_CLUSTER, false}};
    const bool model_path = !strncmp(url, "/v1/models/", 11);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) && !(model_path && routes[i].ep == MC_EP_MODELS)) continue;
        const mc_endpoint_t ep = routes[i].ep;
        if (routes[i].post ? !post : !get) {
            mc_api_error(&e, 405, "invalid_request_error", NULL, NULL, "%s takes %s, not %.20s", routes[i].path,
                         routes[i].post ? "POST" : "GET", method);
            return s_error(srv, c, r, ep, &e);
        }
        if (!strncmp(url, "/v1/", 4) && !s_authorized(srv, c)) {
            mc_api_error(&e, 401, "authentication_error", NULL, "invalid_api_key",
                         "a valid API key is required: 'Authorization: Bearer KEY' (the server's --api-key)");
            return s_error(srv, c, r, ep, &e);
        }
        if (r->too_big) {
            mc_api_error(&e, 413, "invalid_request_error", NULL, NULL, "the body is larger than %zu bytes",
                         srv->p.max_body);
            return s_error(srv, c, r, ep, &e);
        }
        switch (ep) {
        case MC_EP_CHAT: return s_completion(srv, c, r, true);
        case MC_EP_COMPLETIONS: return s_completion(srv, c, r, false);
        case MC_EP_MODELS: {
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
        case MC_EP_CLUSTER:
            if (!strcmp(url, "/v1/routing")) {
                if (!mc_session_routing(srv->s)) {
                    mc_api_error(&e, 404, "invalid_request_error", NULL, NULL,
                                 "routing statistics are off: start the server with --routing-stats FILE");
                    return s_error(srv, c, r, ep, &e);
                }
                return s_send(srv, c, r, ep, 200, "application/json", mc_routing_json(mc_session_routing(srv->s)));
            }
            return s_json(srv, c, r, ep, 200, s_cluster_json(srv));
        case MC_EP_HEALTH: return s_health(srv, c, r);
        case MC_EP_METRICS: {
            uint32_t running, queued;
            s_counts(srv, &running, &queued);
            return s_send(srv, c, r, ep, 200, "text/plain; version=0.0.4; charset=utf-8",
                          mc_metrics_render(srv->metrics, srv->s, running, queued));
        }
        default: break;
        }
    }
    if (get && strncmp(url, "/v1/", 4)) return s_web(srv, c, r, url);
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
    return s_route(srv, c, r, url, method);
}

static void s_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    s_req_t *r = *con_cls;
    if (r) free(r->body);
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
    srv->started = (int64_t)time(NULL);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (!(srv->metrics = mc_metrics_new())) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
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
    if (srv->engine_started) {
        pthread_mutex_lock(&srv->mu);
        srv->quit = true;
        pthread_cond_signal(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        pthread_join(srv->engine, NULL); // every generation has ended: waiting requests answer
    }
    if (srv->d) MHD_stop_daemon(srv->d);
    mc_metrics_destroy(&srv->metrics);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
    *psrv = NULL;
}

uint16_t mc_server_port(const mc_server_t *srv) { return srv->port; }

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
    while (!stop || !atomic_load(stop)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    mc_log_status(p->log, "moe-coordinator", "stopping the server");
    mc_server_destroy(&srv);
    return MC_OK;
}
