/*
 * test_server: the HTTP server on a free loopback port, started and stopped
 * by the test, talked to over real sockets.
 *
 * On the tiny-f32 fixture (the real Mixtral tokenizer): a greedy chat answer
 * equals `moe-coordinator --prompt` with the same chat-formatted text, usage
 * counts right, streamed and whole answers agree, stop strings cut; bad
 * requests get the right 4xx and OpenAI error object and the server keeps
 * serving; 8 concurrent clients each get what they get alone; a client that
 * leaves mid-stream stops its generation (and is logged with its true
 * token counts); /metrics parses as Prometheus text; /v1/cluster and the
 * answers through a 2-node cluster. The other dialects give the chat's
 * greedy answer exactly: /v1/responses (whole and streamed events),
 * Ollama's /api/chat and /api/generate (whole and NDJSON); logprobs agree
 * with the text and between whole and streamed answers; CORS preflights,
 * Allow on a 405, a lower-case "bearer"; a server stopped mid-stream ends
 * the stream with an error event, never a finished-looking answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <ctype.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "cluster_config.h"
#include "nodeproc.h"
#include "rebalance.h"
#include "server.h"
#include "session.h"
#include "testmachines.h"
#include "testnodes.h"
#include "testutil.h"

static char s_dir[256];
static char s_model[512];
static uint32_t s_mem_limit_mb; // the sessions s_up makes: --mem-limit (0: none)
static mc_dtype_t s_kv_type;    // and --kv-type (MC_DTYPE_F32 = 0 by default)

// A server on a session of the fixture model (ctx and slots given).
typedef struct {
    mc_session_t *s;
    mc_server_t *srv;
    uint16_t port;
} s_srv_t;

// With server parameters beyond the defaults (port 0 always).
static void s_up_with(s_srv_t *t, const mc_cluster_config_t *cfg, uint32_t ctx, uint32_t slots, mc_server_params_t p) {
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = s_model, sp.cluster = cfg, sp.ctx = ctx, sp.n_seq = slots, sp.threads = 2;
    t->s = mc_session_new(&sp, err);
    if (!t->s) fail_msg("%s", err);
    p.port = 0;
    t->srv = mc_server_new(t->s, &p, err);
    if (!t->srv) fail_msg("%s", err);
    t->port = mc_server_port(t->srv);
    assert_true(t->port > 0);
}

static void s_up(s_srv_t *t, const mc_cluster_config_t *cfg, uint32_t ctx, uint32_t slots, const char *key,
                 size_t max_body) {
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = s_model, sp.cluster = cfg, sp.ctx = ctx, sp.n_seq = slots, sp.threads = 2;
    sp.mem_limit_mb = s_mem_limit_mb, sp.kv_type = s_kv_type;
    t->s = mc_session_new(&sp, err);
    if (!t->s) fail_msg("%s", err);
    mc_server_params_t p = mc_server_params_default();
    p.port = 0, p.api_key = key;
    if (max_body) p.max_body = max_body;
    t->srv = mc_server_new(t->s, &p, err);
    if (!t->srv) fail_msg("%s", err);
    t->port = mc_server_port(t->srv);
    assert_true(t->port > 0);
}

static void s_down(s_srv_t *t) {
    mc_server_destroy(&t->srv);
    mc_session_destroy(&t->s);
}

// The nodes of the cluster tests: stopped by their teardown even after a
// failed assertion.
static mc_test_nodes_t s_nodes;

static int s_setup(void **state) {
    (void)state;
    mc_test_nodes_init(&s_nodes);
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_stop_nodes(void **state) {
    (void)state;
    mc_test_nodes_stop(&s_nodes);
    return 0;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static bool s_fixture(void) { return mc_test_fixture("tiny-f32.gguf", s_model, sizeof s_model) != NULL; }

// POST body to path; the parsed JSON answer (status checked).
static cJSON *s_post(uint16_t port, const char *path, const char *body, int want_status) {
    mc_test_http_t r;
    if (mc_test_http(port, "POST", path, NULL, body, &r)) fail_msg("no answer from the server");
    if (r.status != want_status) fail_msg("%s %s: status %d, wanted %d: %s", path, body, r.status, want_status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    if (!j) fail_msg("not JSON: %s", r.body);
    mc_test_http_free(&r);
    return j;
}

static const char *s_get_str(const cJSON *j, const char *a, const char *b, const char *c) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b) x = cJSON_IsArray(x) ? cJSON_GetArrayItem(x, 0) : cJSON_GetObjectItemCaseSensitive(x, b);
    if (b && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, a))) x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (c) x = cJSON_GetObjectItemCaseSensitive(x, c);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static int s_usage(const cJSON *j, const char *field) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "usage"), field);
    return cJSON_IsNumber(x) ? x->valueint : -1;
}

// `moe-coordinator --model M --prompt TEXT -n N --temp 0`: the text it prints.
static char *s_cli(const char *prompt, int n) {
    char cmd[4096], out[600];
    const char *bin = getenv("MC_BIN_DIR");
    snprintf(out, sizeof out, "%s/cli.out", s_dir);
    snprintf(cmd, sizeof cmd, "'%s/moe-coordinator' --model '%s' --prompt '%s' -n %d --temp 0 --threads 1 >'%s' 2>/dev/null",
             bin ? bin : ".", s_model, prompt, n, out);
    assert_int_equal(system(cmd), 0);
    char *txt = (char *)mc_test_read_file(out, NULL);
    assert_non_null(txt);
    size_t l = strlen(txt);
    if (l && txt[l - 1] == '\n') txt[l - 1] = 0; // the CLI ends with a newline
    return txt;
}

static int s_prompt_tokens(const char *user) {
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = s_model;
    mc_session_t *s = mc_session_new(&sp, err);
    assert_non_null(s);
    const mc_chat_msg_t m = {.role = MC_CHAT_USER, .content = user, .len = strlen(user)};
    int32_t *ids;
    size_t n;
    assert_int_equal(mc_chat_format(mc_session_tokenizer(s), &m, 1, false, &ids, &n, err), MC_OK);
    free(ids);
    mc_session_destroy(&s);
    return (int)n;
}

// The events of an SSE body: the JSON of every data line but [DONE].
static cJSON *s_events(const char *body, bool *done) {
    cJSON *all = cJSON_CreateArray();
    *done = false;
    for (const char *p = body; (p = strstr(p, "data: "));) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        char *line = strndup(p + 6, (size_t)(end - p - 6));
        if (!strcmp(line, "[DONE]")) *done = true;
        else {
            assert_false(*done); // nothing after [DONE]
            cJSON *j = cJSON_Parse(line);
            if (!j) fail_msg("bad event: %s", line);
            cJSON_AddItemToArray(all, j);
        }
        free(line);
        p = end + 2;
    }
    return all;
}

// Greedy chat through the API = the CLI on the same chat-formatted text.
static void test_chat_greedy_and_stream(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 256, 4, NULL, 0);
    char *cli = s_cli("[INST] Tell me about foxes. [/INST]", 16);
    cJSON *j = s_post(t.port, "/v1/chat/completions",
                      "{\"model\":\"tiny-f32\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],"
                      "\"max_tokens\":16,\"temperature\":0}",
                      200);
    const char *content = s_get_str(j, "choices", "message", "content");
    assert_non_null(content);
    // An instruct answer drops the one leading space the CLI prints.
    assert_string_equal(content, cli[0] == ' ' ? cli + 1 : cli);
    assert_string_equal(s_get_str(j, "object", NULL, NULL), "chat.completion");
    assert_string_equal(s_get_str(j, "model", NULL, NULL), "tiny-f32");
    assert_int_equal(s_usage(j, "prompt_tokens"), s_prompt_tokens("Tell me about foxes."));
    const int completion = s_usage(j, "completion_tokens");
    const char *finish = s_get_str(j, "choices", "finish_reason", NULL);
    assert_true((completion == 16 && !strcmp(finish, "length")) || (completion < 16 && !strcmp(finish, "stop")));
    assert_int_equal(s_usage(j, "total_tokens"), s_usage(j, "prompt_tokens") + completion);
    printf("[server] greedy answer (%d tokens, %s): %s\n", completion, finish, content);

    // The same streamed: the deltas add up to the same text.
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "POST", "/v1/chat/completions", NULL,
                                  "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],"
                                  "\"max_tokens\":16,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                                  &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "content-type: text/event-stream"));
    bool done;
    cJSON *ev = s_events(r.body, &done);
    assert_true(done);
    const int n = cJSON_GetArraySize(ev);
    assert_true(n >= 3);
    assert_string_equal(s_get_str(cJSON_GetArrayItem(ev, 0), "choices", "delta", "role"), "assistant");
    char text[4096] = "";
    for (int i = 0; i < n - 2; i++) {
        const char *piece = s_get_str(cJSON_GetArrayItem(ev, i), "choices", "delta", "content");
        if (piece) strncat(text, piece, sizeof text - strlen(text) - 1);
        assert_string_equal(s_get_str(cJSON_GetArrayItem(ev, i), "object", NULL, NULL), "chat.completion.chunk");
    }
    assert_string_equal(text, content);
    assert_string_equal(s_get_str(cJSON_GetArrayItem(ev, n - 2), "choices", "finish_reason", NULL), finish);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, n - 1), "choices")), 0);
    assert_int_equal(s_usage(cJSON_GetArrayItem(ev, n - 1), "completion_tokens"), completion);
    cJSON_Delete(ev);
    mc_test_http_free(&r);

    // A stop string from the middle of the answer: the text ends before it.
    const size_t cut = strlen(content) / 2;
    char stop[16], body[512];
    snprintf(stop, sizeof stop, "%.3s", content + cut);
    char *at = strstr(content, stop);
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],\"max_tokens\":16,"
             "\"temperature\":0,\"stop\":[\"%s\"]}",
             stop);
    cJSON *k = s_post(t.port, "/v1/chat/completions", body, 200);
    const char *kept = s_get_str(k, "choices", "message", "content");
    assert_int_equal(strlen(kept), (size_t)(at - content));
    assert_memory_equal(kept, content, strlen(kept));
    assert_string_equal(s_get_str(k, "choices", "finish_reason", NULL), "stop");
    cJSON_Delete(k);

    // /v1/completions: a raw prompt, the CLI's text exactly.
    char *raw = s_cli("The quick brown fox", 8);
    k = s_post(t.port, "/v1/completions", "{\"prompt\":\"The quick brown fox\",\"max_tokens\":8,\"temperature\":0}", 200);
    assert_string_equal(s_get_str(k, "choices", "text", NULL), raw);
    assert_string_equal(s_get_str(k, "object", NULL, NULL), "text_completion");
    cJSON_Delete(k);
    free(raw);
    cJSON_Delete(j);
    free(cli);
    s_down(&t);
}

static void s_expect(uint16_t port, const char *method, const char *path, const char *headers, const char *body,
                     int status, const char *type, const char *needle) {
    mc_test_http_t r;
    assert_int_equal(mc_test_http(port, method, path, headers, body, &r), 0);
    if (r.status != status || !strstr(r.body, needle) || !strstr(r.body, type))
        fail_msg("%s %s: %d %s (wanted %d, %s, '%s')", method, path, r.status, r.body, status, type, needle);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message"));
    cJSON_Delete(j);
    mc_test_http_free(&r);
}

static void test_bad_requests(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 64, 2, NULL, 4096);
    const char *chat = "/v1/chat/completions";
    s_expect(t.port, "POST", chat, NULL, "{\"messages\": [", 400, "invalid_request_error", "not valid JSON");
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":\"hi\"}", 400, "invalid_request_error", "must be an array");
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400,
             "invalid_request_error", "the roles are system, user, assistant and tool");
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"warm\"}",
             400, "invalid_request_error", "'temperature' must be a number");
    s_expect(t.port, "POST", chat, NULL,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]}", 400,
             "invalid_request_error", "roles must alternate");
    // Longer than the context (64): OpenAI's code for it.
    char big[4000];
    int n = snprintf(big, sizeof big, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 100; i++) n += snprintf(big + n, sizeof big - (size_t)n, "word%d ", i);
    snprintf(big + n, sizeof big - (size_t)n, "\"}]}");
    s_expect(t.port, "POST", chat, NULL, big, 400, "context_length_exceeded", "maximum context length is 64 tokens");
    // A body over the cap (4096 here).
    char *huge = malloc(6000);
    memset(huge, ' ', 5999);
    huge[0] = '{', huge[5998] = '}', huge[5999] = 0;
    s_expect(t.port, "POST", chat, NULL, huge, 413, "invalid_request_error", "larger than 4096 bytes");
    free(huge);
    s_expect(t.port, "GET", "/v1/nothing", NULL, NULL, 404, "invalid_request_error", "unknown URL");
    s_expect(t.port, "GET", "/../etc/passwd", NULL, NULL, 404, "not_found_error", "no such page");
    s_expect(t.port, "GET", chat, NULL, NULL, 405, "invalid_request_error", "takes POST");
    s_expect(t.port, "POST", "/v1/models", NULL, "{}", 405, "invalid_request_error", "takes GET");
    s_expect(t.port, "GET", "/v1/models/gpt-4", NULL, NULL, 404, "model_not_found", "does not exist");
    // Still serving.
    cJSON *j = s_post(t.port, chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3}", 200);
    assert_int_equal(s_usage(j, "completion_tokens") <= 3, 1);
    cJSON_Delete(j);
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "GET", "/v1/models", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"id\":\"tiny-f32\""));
    mc_test_http_free(&r);
    s_down(&t);

    // With an API key: /v1 wants it, the rest does not.
    s_up(&t, NULL, 64, 1, "s3cret", 0);
    s_expect(t.port, "GET", "/v1/models", NULL, NULL, 401, "authentication_error", "a valid API key is required");
    s_expect(t.port, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL, 401, "invalid_api_key", "API key");
    assert_int_equal(mc_test_http(t.port, "GET", "/v1/models", "Authorization: Bearer s3cret\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    mc_test_http_free(&r);
    s_down(&t);
}

// --- concurrency --------------------------------------------------------------------------

typedef struct {
    uint16_t port;
    char body[512];
    char *answer;
} s_client_t;

static void *s_client(void *arg) {
    s_client_t *c = arg;
    mc_test_http_t r;
    if (mc_test_http(c->port, "POST", "/v1/chat/completions", NULL, c->body, &r) == 0) {
        if (r.status == 200) c->answer = strdup(r.body);
        mc_test_http_free(&r);
    }
    return NULL;
}

static char *s_content(const char *json) {
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    char *c = strdup(s_get_str(j, "choices", "message", "content"));
    cJSON_Delete(j);
    return c;
}

// 8 clients at once (4 slots: they queue too), each answer the same as the
// same request alone.
static void test_concurrent_clients(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 128, 4, NULL, 0);
    enum { N = 8 };
    static s_client_t c[N];
    pthread_t th[N];
    static const char *const topics[] = {"foxes", "rivers", "the moon", "bread", "trains", "music", "snow", "bees"};
    for (int i = 0; i < N; i++) {
        c[i].port = t.port;
        c[i].answer = NULL;
        snprintf(c[i].body, sizeof c[i].body,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Write about %s.\"}],\"max_tokens\":%d,"
                 "\"temperature\":%s,\"seed\":%d}",
                 topics[i], 10 + 3 * i, i % 2 ? "0.9" : "0", 1000 + i);
        assert_int_equal(pthread_create(&th[i], NULL, s_client, &c[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_non_null(c[i].answer);
        s_client_t alone = c[i];
        alone.answer = NULL;
        s_client(&alone);
        assert_non_null(alone.answer);
        char *a = s_content(c[i].answer), *b = s_content(alone.answer);
        assert_string_equal(a, b);
        cJSON *j = cJSON_Parse(c[i].answer);
        printf("[server] client %d: %d tokens together and alone\n", i, s_usage(j, "completion_tokens"));
        cJSON_Delete(j);
        free(a), free(b), free(c[i].answer), free(alone.answer);
    }
    s_down(&t);
}

// --- a client that leaves -------------------------------------------------------------------

static double s_metric(uint16_t port, const char *name) {
    mc_test_http_t r;
    assert_int_equal(mc_test_http(port, "GET", "/metrics", NULL, NULL, &r), 0);
    double v = -1;
    for (char *line = r.body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (!strncmp(line, name, strlen(name)) && line[strlen(name)] == ' ') v = atof(line + strlen(name) + 1);
    mc_test_http_free(&r);
    return v;
}

static void test_client_leaves_mid_stream(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 4096, 2, NULL, 0);
    int fd = mc_test_http_connect(t.port);
    assert_true(fd >= 0);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Go on forever.\"}],\"max_tokens\":4000,"
                       "\"stream\":true,\"temperature\":1}";
    assert_int_equal(mc_test_http_send(fd, "POST", "/v1/chat/completions", NULL, body, strlen(body)), 0);
    char buf[512];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0); // the stream has begun
    close(fd);
    // The generation ends long before its 4000 tokens.
    for (int i = 0; i < 200 && s_metric(t.port, "moe_generations_total") < 1; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(s_metric(t.port, "moe_generations_total") == 1);
    const double tokens = s_metric(t.port, "moe_completion_tokens_total");
    printf("[server] the client left: its generation stopped after %.0f of 4000 tokens\n", tokens);
    assert_true(tokens < 4000);
    assert_true(s_metric(t.port, "moe_generations_active") == 0);
    s_down(&t);
}

// Under --mem-limit the coordinator's expert store is in /metrics: its
// reads, hits and misses, and each predictor's guesses.
static void test_metrics_expert_store(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_mem_limit_mb = 1;
    s_up(&t, NULL, 64, 1, NULL, 0);
    s_mem_limit_mb = 0;
    cJSON_Delete(s_post(t.port, "/v1/completions", "{\"prompt\":\"Hello\",\"max_tokens\":4}", 200));
    assert_true(s_metric(t.port, "moe_expert_memory_limit_bytes") == 1048576);
    assert_true(s_metric(t.port, "moe_expert_reads_total") > 0);
    assert_true(s_metric(t.port, "moe_expert_hits_total") + s_metric(t.port, "moe_expert_misses_total") > 0);
    assert_true(s_metric(t.port, "moe_expert_read_errors_total") == 0);
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "moe_expert_predicted_total{predictor=\"router\"}"));
    assert_non_null(strstr(r.body, "moe_expert_predicted_used_total{predictor=\"transitions\"}"));
    mc_test_http_free(&r);
    s_down(&t);
}

// The sequences' KV caches in /metrics and /v1/cluster, by type: --kv-type
// f16 reports half the bytes of f32 and still answers.
static void test_metrics_kv_cache(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    double bytes[2];
    for (int k = 0; k < 2; k++) {
        s_kv_type = k ? MC_DTYPE_F16 : MC_DTYPE_F32;
        s_up(&t, NULL, 64, 2, NULL, 0);
        s_kv_type = MC_DTYPE_F32;
        cJSON_Delete(s_post(t.port, "/v1/completions", "{\"prompt\":\"Hello\",\"max_tokens\":4}", 200));
        bytes[k] = s_metric(t.port, k ? "moe_kv_cache_bytes{type=\"f16\"}" : "moe_kv_cache_bytes{type=\"f32\"}");
        const mc_engine_t *e = mc_session_engine(t.s);
        assert_true(bytes[k] == (double)(2 * mc_engine_kv_bytes(e, 64)));
        mc_test_http_t r;
        assert_int_equal(mc_test_http(t.port, "GET", "/v1/cluster", NULL, NULL, &r), 0);
        assert_non_null(strstr(r.body, k ? "\"kv_type\":\"f16\"" : "\"kv_type\":\"f32\""));
        mc_test_http_free(&r);
        s_down(&t);
    }
    assert_true(bytes[0] > 0 && bytes[1] * 2 == bytes[0]);
}

// Every line of /metrics: a comment, or `name{labels} value`.
static void test_metrics_format(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 64, 1, NULL, 0);
    cJSON_Delete(s_post(t.port, "/v1/completions", "{\"prompt\":\"Hello\",\"max_tokens\":4}", 200));
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "content-type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "moe_requests_total{endpoint=\"completions\",status=\"200\"} 1"));
    assert_non_null(strstr(r.body, "moe_prompt_tokens_total 2"));
    assert_non_null(strstr(r.body, "moe_expert_rows_total{layer=\"1\",expert=\"7\"}"));
    assert_non_null(strstr(r.body, "moe_time_to_first_token_seconds_count 1"));
    int samples = 0;
    for (char *line = r.body; *line;) { // (cuts the body into lines)
        char *nl = strchr(line, '\n');
        assert_non_null(nl); // every line ends
        *nl = 0;
        if (line[0] == '#') {
            assert_true(!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7));
        } else {
            char *p = line;
            assert_true(isalpha((unsigned char)*p) || *p == '_');
            while (isalnum((unsigned char)*p) || *p == '_' || *p == ':') p++;
            if (*p == '{') {
                char *close = strchr(p, '}');
                assert_non_null(close);
                for (char *q = p + 1; q < close;) { // name="value"[,]
                    while (isalnum((unsigned char)*q) || *q == '_') q++;
                    assert_true(q[0] == '=' && q[1] == '"');
                    q += 2;
                    while (*q != '"') q += *q == '\\' ? 2 : 1;
                    q++;
                    if (*q == ',') q++;
                }
                p = close + 1;
            }
            assert_true(*p == ' ');
            char *end;
            strtod(p + 1, &end);
            if (strncmp(p + 1, "+Inf", 4)) assert_true(end > p + 1 && *end == 0);
            samples++;
        }
        line = nl + 1;
    }
    assert_true(samples > 40);
    mc_test_http_free(&r);
    // The web page and its script.
    assert_int_equal(mc_test_http(t.port, "GET", "/", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "content-type: text/html"));
    assert_non_null(strstr(r.body, "<title>moe-cluster</title>"));
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "GET", "/app.js", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "/v1/cluster"));
    mc_test_http_free(&r);
    // The same prompt again: its start is reused from the cache (all but
    // the last token, whose logits are needed), and /metrics says so.
    assert_true(s_metric(t.port, "moe_prefix_cache_lookups_total") == 1);
    assert_true(s_metric(t.port, "moe_prefix_cache_hits_total") == 0);
    cJSON_Delete(s_post(t.port, "/v1/completions", "{\"prompt\":\"Hello\",\"max_tokens\":4}", 200));
    for (int i = 0; i < 200 && s_metric(t.port, "moe_prefix_cache_hits_total") < 1; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(s_metric(t.port, "moe_prefix_cache_lookups_total") == 2);
    assert_true(s_metric(t.port, "moe_prefix_cache_hits_total") == 1);
    assert_true(s_metric(t.port, "moe_prefix_cache_tokens_saved_total") == 1);
    s_down(&t);
}

// Does text hold exactly one JSON object with name (a string of at most 6
// characters), age (an integer) and pets (at most 2 of "cat", "dog"), nothing else?
static bool s_person(const char *text) {
    const char *end = NULL;
    cJSON *j = text ? cJSON_ParseWithOpts(text, &end, false) : NULL;
    bool ok = j && !*end && cJSON_IsObject(j) && cJSON_GetArraySize(j) == 3;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name"), *age = cJSON_GetObjectItemCaseSensitive(j, "age");
    const cJSON *pets = cJSON_GetObjectItemCaseSensitive(j, "pets"), *p;
    size_t chars = 0;
    for (const char *c = cJSON_IsString(name) ? name->valuestring : ""; *c; c++) chars += ((unsigned char)*c & 0xC0) != 0x80;
    ok = ok && cJSON_IsString(name) && chars <= 6 && cJSON_IsNumber(age) && floor(age->valuedouble) == age->valuedouble &&
         cJSON_IsArray(pets) && cJSON_GetArraySize(pets) <= 2;
    const cJSON *list = ok ? pets : NULL;
    cJSON_ArrayForEach(p, list) ok = ok && cJSON_IsString(p) && (!strcmp(p->valuestring, "cat") || !strcmp(p->valuestring, "dog"));
    cJSON_Delete(j);
    return ok;
}

#define S_PERSON                                                                                                        \
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":6},\"age\":{\"type\":\"integer\"},"     \
    "\"pets\":{\"type\":\"array\",\"items\":{\"enum\":[\"cat\",\"dog\"]},\"maxItems\":2}},"                                \
    "\"required\":[\"name\",\"age\",\"pets\"],\"additionalProperties\":false}"

// Structured output on every dialect: the answer is a document the schema
// accepts, even from random weights, and ends with "stop".
static void test_structured_output(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 1024, 2, NULL, 0);
    const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"Describe a person.\"}]";
    char body[2048];
    for (int seeded = 0; seeded < 2; seeded++) {
        snprintf(body, sizeof body,
                 "{%s,\"max_tokens\":900,\"temperature\":%s,\"response_format\":{\"type\":\"json_schema\","
                 "\"json_schema\":{\"name\":\"person\",\"strict\":true,\"schema\":" S_PERSON "}}}",
                 msgs, seeded ? "1.0,\"seed\":3" : "0");
        cJSON *j = s_post(t.port, "/v1/chat/completions", body, 200);
        const char *content = s_get_str(j, "choices", "message", "content");
        if (!s_person(content)) fail_msg("not a person: %s", content ? content : "(none)");
        assert_string_equal(s_get_str(j, "choices", "finish_reason", NULL), "stop");
        printf("[server] json_schema answer: %s\n", content);
        cJSON_Delete(j);
    }
    // json_object: any object; streamed, the deltas join into it.
    snprintf(body, sizeof body, "{%s,\"max_tokens\":40,\"temperature\":0,\"stream\":true,"
             "\"response_format\":{\"type\":\"json_object\"}}", msgs);
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "POST", "/v1/chat/completions", NULL, body, &r), 0);
    assert_int_equal(r.status, 200);
    bool done;
    cJSON *ev = s_events(r.body, &done), *e;
    assert_true(done);
    char text[4096] = "";
    cJSON_ArrayForEach(e, ev) {
        const char *d = s_get_str(e, "choices", "delta", "content");
        if (d) strncat(text, d, sizeof text - strlen(text) - 1);
    }
    assert_true(text[0] == '{');
    cJSON_Delete(ev);
    mc_test_http_free(&r);
    // Ollama's format (a schema) and the Responses API's text.format.
    snprintf(body, sizeof body, "{\"model\":\"m\",%s,\"stream\":false,\"options\":{\"temperature\":0,\"num_predict\":900},"
             "\"format\":" S_PERSON "}", msgs);
    cJSON *o = s_post(t.port, "/api/chat", body, 200);
    const char *oc = s_get_str(o, "message", "content", NULL);
    if (!s_person(oc)) fail_msg("ollama: not a person: %s", oc ? oc : "(none)");
    cJSON_Delete(o);
    snprintf(body, sizeof body, "{\"input\":\"Describe a person.\",\"max_output_tokens\":900,\"temperature\":0,"
             "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"person\",\"strict\":true,\"schema\":" S_PERSON "}}}");
    cJSON *rs = s_post(t.port, "/v1/responses", body, 200);
    const cJSON *out = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(rs, "output"), 0);
    const char *rt = s_get_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(out, "content"), 0), "text", NULL, NULL);
    if (!s_person(rt)) fail_msg("responses: not a person: %s", rt ? rt : "(none)");
    cJSON_Delete(rs);
    // An unsupported schema: 400 naming the keyword.
    snprintf(body, sizeof body, "{%s,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
             "\"schema\":{\"type\":\"string\",\"pattern\":\"^a\"}}}}", msgs);
    cJSON *bad = s_post(t.port, "/v1/chat/completions", body, 400);
    assert_non_null(strstr(s_get_str(bad, "error", "message", NULL), "'pattern'"));
    cJSON_Delete(bad);
    s_down(&t);
}

// Through two real moe-expert processes: /v1/cluster shows them, their
// placement and the routing; answers are the single machine's.
static void test_cluster_endpoint(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    char err[MC_ERR_LEN];
    mc_cluster_config_t *cfg = mc_cluster_config_new();
    for (int i = 0; i < 2; i++) {
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = s_model, np.name = i ? "box-b" : "box-a";
        mc_test_nodes_start(&s_nodes, (size_t)i, &np);
        mc_expert_set_t ex;
        assert_int_equal(mc_expert_set_parse(i ? "4-7" : "0-3", &ex, err), MC_OK);
        assert_int_equal(mc_cluster_config_add_node(cfg, np.name, s_nodes.procs[i].endpoint, &ex, NULL, err), MC_OK);
    }
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say something.\"}],\"max_tokens\":12,\"temperature\":0}";
    static s_srv_t one, two;
    s_up(&one, NULL, 128, 2, NULL, 0);
    cJSON *a = s_post(one.port, "/v1/chat/completions", req, 200);
    const char *seeded = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say more.\"}],\"max_tokens\":16,"
                         "\"temperature\":0.9,\"seed\":5%s}";
    char body[512];
    snprintf(body, sizeof body, seeded, "");
    cJSON *a2 = s_post(one.port, "/v1/chat/completions", body, 200);
    // Structured output, seeded: the same document through the nodes.
    const char *con_fmt = "{\"messages\":[{\"role\":\"user\",\"content\":\"A person?\"}],\"max_tokens\":100,"
                          "\"temperature\":0.9,\"seed\":%d,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                          "{\"name\":\"p\",\"strict\":true,\"schema\":" S_PERSON "}}}";
    static s_client_t cc[2];
    for (int i = 0; i < 2; i++) snprintf(cc[i].body, sizeof cc[i].body, con_fmt, 9 + i);
    const char *con = cc[0].body;
    cJSON *a3 = s_post(one.port, "/v1/chat/completions", con, 200);
    cJSON *a4 = s_post(one.port, "/v1/chat/completions", cc[1].body, 200);
    s_down(&one);
    s_up(&two, cfg, 128, 2, NULL, 0);
    cJSON *b = s_post(two.port, "/v1/chat/completions", req, 200);
    assert_string_equal(s_get_str(a, "choices", "message", "content"), s_get_str(b, "choices", "message", "content"));
    cJSON *b3 = s_post(two.port, "/v1/chat/completions", con, 200);
    assert_string_equal(s_get_str(a3, "choices", "message", "content"), s_get_str(b3, "choices", "message", "content"));
    printf("[server] structured output through the cluster: %s\n", s_get_str(b3, "choices", "message", "content"));
    // ... and two at once through the nodes (batched): each the one machine's answer alone.
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        cc[i].port = two.port, cc[i].answer = NULL;
        assert_int_equal(pthread_create(&th[i], NULL, s_client, &cc[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_non_null(cc[i].answer);
        char *got = s_content(cc[i].answer);
        assert_string_equal(got, s_get_str(i ? a4 : a3, "choices", "message", "content"));
        free(got), free(cc[i].answer);
    }
    cJSON_Delete(a3), cJSON_Delete(b3), cJSON_Delete(a4);
    // Speculating through the nodes: the same answer (guesses verified K+1
    // rows a round trip), greedy and seeded.
    const char *spec = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say something.\"}],\"max_tokens\":12,"
                       "\"temperature\":0,\"speculative\":{\"max_draft\":6}}";
    cJSON *b2 = s_post(two.port, "/v1/chat/completions", spec, 200);
    assert_string_equal(s_get_str(a, "choices", "message", "content"), s_get_str(b2, "choices", "message", "content"));
    cJSON_Delete(b2);
    snprintf(body, sizeof body, seeded, ",\"speculative\":{\"max_draft\":6}");
    b2 = s_post(two.port, "/v1/chat/completions", body, 200);
    assert_string_equal(s_get_str(a2, "choices", "message", "content"), s_get_str(b2, "choices", "message", "content"));
    cJSON_Delete(b2), cJSON_Delete(a2);
    mc_test_http_t r;
    assert_int_equal(mc_test_http(two.port, "GET", "/v1/cluster", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *c = cJSON_Parse(r.body);
    assert_non_null(c);
    const cJSON *nodes = cJSON_GetObjectItem(c, "nodes");
    assert_int_equal(cJSON_GetArraySize(nodes), 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *n = cJSON_GetArrayItem(nodes, i);
        assert_string_equal(cJSON_GetObjectItem(n, "name")->valuestring, i ? "box-b" : "box-a");
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(n, "alive")));
        assert_true(cJSON_GetObjectItem(n, "requests")->valuedouble > 0);
        const cJSON *held = cJSON_GetArrayItem(cJSON_GetObjectItem(n, "experts"), 1);
        assert_int_equal(cJSON_GetArraySize(held), 4);
        assert_int_equal(cJSON_GetArrayItem(held, 0)->valueint, i ? 4 : 0);
    }
    assert_int_equal(cJSON_GetObjectItem(c, "layers")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(c, "wire")->valuestring, "auto");
    double routed = 0;
    const cJSON *layer, *v;
    cJSON_ArrayForEach(layer, cJSON_GetObjectItem(c, "rows_per_expert")) cJSON_ArrayForEach(v, layer) routed += v->valuedouble;
    assert_true(routed > 0);
    cJSON_Delete(c);
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(two.port, "GET", "/health", NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    assert_non_null(strstr(r.body, "\"nodes_alive\":2"));
    mc_test_http_free(&r);
    assert_true(s_metric(two.port, "moe_node_alive{node=\"box-a\"}") == 1);
    cJSON_Delete(a), cJSON_Delete(b);
    s_down(&two);
    mc_test_nodes_stop(&s_nodes);
    mc_cluster_config_destroy(&cfg);
}

// --- the other dialects, logprobs -------------------------------------------------------------

// A header line's value, or NULL (the test client lower-cases header lines).
static char *s_header(const mc_test_http_t *r, const char *name, char *buf, size_t cap) {
    char key[128];
    snprintf(key, sizeof key, "\r\n%s: ", name);
    const char *h = strstr(r->headers, key);
    if (!h) return NULL;
    h += strlen(key);
    size_t n = strcspn(h, "\r\n");
    snprintf(buf, cap, "%.*s", (int)n, h);
    return buf;
}

// The bytes a logprobs content array spells, appended to out (its `bytes`).
static size_t s_lp_bytes(const cJSON *content, char *out, size_t at, size_t cap) {
    const cJSON *entry, *b;
    cJSON_ArrayForEach(entry, content) {
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(entry, "bytes")) {
            assert_true(at + 1 < cap);
            out[at++] = (char)b->valueint;
        }
    }
    out[at] = 0;
    return at;
}

// The SSE events of a Responses stream: "event: T\ndata: {json}\n\n", the
// name and the data's type the same.
static cJSON *s_typed_events(const char *body) {
    cJSON *all = cJSON_CreateArray();
    for (const char *p = body; (p = strstr(p, "event: "));) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char type[64];
        snprintf(type, sizeof type, "%.*s", (int)(nl - p - 7), p + 7);
        assert_int_equal(strncmp(nl + 1, "data: ", 6), 0);
        const char *end = strstr(nl, "\n\n");
        char *line = strndup(nl + 7, (size_t)(end - nl - 7));
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("bad event: %s", line);
        assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, type);
        cJSON_AddItemToArray(all, j);
        free(line);
        p = end + 2;
    }
    return all;
}

static void test_dialects_and_logprobs(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 256, 2, NULL, 0);
    // The chat's greedy answer, with logprobs.
    cJSON *j = s_post(t.port, "/v1/chat/completions",
                      "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],\"max_tokens\":16,"
                      "\"temperature\":0,\"logprobs\":true,\"top_logprobs\":3}",
                      200);
    char content[4096];
    snprintf(content, sizeof content, "%s", s_get_str(j, "choices", "message", "content"));
    const int completion = s_usage(j, "completion_tokens"), prompt = s_usage(j, "prompt_tokens");
    const char *finish = s_get_str(j, "choices", "finish_reason", NULL);
    const cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                                                "logprobs"),
                                          "content");
    // One entry per token but the end-of-answer one; their bytes spell the
    // text (the instruct answer's one leading space dropped).
    assert_int_equal(cJSON_GetArraySize(lc), completion - (!strcmp(finish, "stop") ? 1 : 0));
    char spelled[4096];
    s_lp_bytes(lc, spelled, 0, sizeof spelled);
    assert_string_equal(spelled[0] == ' ' ? spelled + 1 : spelled, content);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, lc) { // greedy, no penalties: each token is its top one
        const cJSON *top0 = cJSON_GetArrayItem(cJSON_GetObjectItem(entry, "top_logprobs"), 0);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(entry, "top_logprobs")), 3);
        assert_string_equal(cJSON_GetObjectItem(top0, "token")->valuestring, cJSON_GetObjectItem(entry, "token")->valuestring);
        assert_true(cJSON_GetObjectItem(top0, "logprob")->valuedouble == cJSON_GetObjectItem(entry, "logprob")->valuedouble);
        assert_true(cJSON_GetObjectItem(entry, "logprob")->valuedouble <= 0);
    }
    // Streamed: the same entries, spread over the chunks; every chunk but
    // the usage one has "usage": null.
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "POST", "/v1/chat/completions", NULL,
                                  "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],\"max_tokens\":16,"
                                  "\"temperature\":0,\"logprobs\":true,\"top_logprobs\":3,\"stream\":true,"
                                  "\"stream_options\":{\"include_usage\":true}}",
                                  &r),
                     0);
    bool done;
    cJSON *ev = s_events(r.body, &done);
    assert_true(done);
    const int n = cJSON_GetArraySize(ev);
    char streamed[4096];
    size_t at = 0;
    int entries = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(ev, i);
        if (i < n - 1) assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "usage")));
        const cJSON *l = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0), "logprobs");
        if (cJSON_IsObject(l)) {
            entries += cJSON_GetArraySize(cJSON_GetObjectItem(l, "content"));
            at = s_lp_bytes(cJSON_GetObjectItem(l, "content"), streamed, at, sizeof streamed);
        }
    }
    assert_int_equal(entries, cJSON_GetArraySize(lc));
    assert_string_equal(streamed, spelled);
    assert_int_equal(s_usage(cJSON_GetArrayItem(ev, n - 1), "completion_tokens"), completion);
    cJSON_Delete(ev);
    mc_test_http_free(&r);

    // /v1/responses: the same answer, whole and as events.
    cJSON *k = s_post(t.port, "/v1/responses",
                      "{\"model\":\"tiny-f32\",\"input\":\"Tell me about foxes.\",\"max_output_tokens\":16,\"temperature\":0}",
                      200);
    const cJSON *out0 = cJSON_GetArrayItem(cJSON_GetObjectItem(k, "output"), 0);
    const cJSON *part = cJSON_GetArrayItem(cJSON_GetObjectItem(out0, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(part, "text")->valuestring, content);
    assert_string_equal(cJSON_GetObjectItem(k, "status")->valuestring, completion == 16 ? "incomplete" : "completed");
    const cJSON *u = cJSON_GetObjectItem(k, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "input_tokens")->valueint, prompt);
    assert_int_equal(cJSON_GetObjectItem(u, "output_tokens")->valueint, completion);
    // The answer is kept: a next turn may name it (the AI SDK's default)
    // and gets the conversation with its text in it.
    char next[1024];
    snprintf(next, sizeof next,
             "{\"input\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"},{\"type\":\"item_reference\","
             "\"id\":\"%s\"},{\"role\":\"user\",\"content\":\"More.\"}],\"max_output_tokens\":4,\"store\":false}",
             cJSON_GetObjectItem(out0, "id")->valuestring);
    cJSON *k2 = s_post(t.port, "/v1/responses", next, 200);
    const int turn2 = cJSON_GetObjectItem(cJSON_GetObjectItem(k2, "usage"), "input_tokens")->valueint;
    assert_true(turn2 > prompt + completion);
    // That one said store: false: naming it fails, plainly.
    snprintf(next, sizeof next, "{\"input\":[{\"type\":\"item_reference\",\"id\":\"%s\"}]}",
             cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(k2, "output"), 0), "id")->valuestring);
    s_expect(t.port, "POST", "/v1/responses", NULL, next, 400, "invalid_request_error", "does not keep");
    cJSON_Delete(k2);
    cJSON_Delete(k);
    assert_int_equal(mc_test_http(t.port, "POST", "/v1/responses", NULL,
                                  "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
                                  "\"Tell me about foxes.\"}]}],\"max_output_tokens\":16,\"temperature\":0,\"stream\":true,"
                                  "\"include\":[\"message.output_text.logprobs\"]}",
                                  &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "content-type: text/event-stream"));
    assert_null(strstr(r.body, "[DONE]")); // the Responses API has no [DONE]
    ev = s_typed_events(r.body);
    static const char *const opening[] = {"response.created", "response.in_progress", "response.output_item.added",
                                          "response.content_part.added"};
    static const char *const closing[] = {"response.output_text.done", "response.content_part.done",
                                          "response.output_item.done"};
    const int m = cJSON_GetArraySize(ev);
    assert_true(m >= 8);
    char deltas[4096] = "";
    int lp_entries = 0;
    for (int i = 0; i < m; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev, i);
        const char *type = cJSON_GetObjectItem(e, "type")->valuestring;
        assert_int_equal(cJSON_GetObjectItem(e, "sequence_number")->valueint, i);
        if (i < 4) assert_string_equal(type, opening[i]);
        else if (i >= m - 4 && i < m - 1) assert_string_equal(type, closing[i - (m - 4)]);
        else if (i < m - 1) {
            assert_string_equal(type, "response.output_text.delta");
            strncat(deltas, cJSON_GetObjectItem(e, "delta")->valuestring, sizeof deltas - strlen(deltas) - 1);
            lp_entries += cJSON_GetArraySize(cJSON_GetObjectItem(e, "logprobs"));
        }
    }
    const cJSON *last = cJSON_GetArrayItem(ev, m - 1);
    assert_string_equal(cJSON_GetObjectItem(last, "type")->valuestring,
                        completion == 16 ? "response.incomplete" : "response.completed");
    assert_string_equal(deltas, content);
    assert_int_equal(lp_entries, cJSON_GetArraySize(lc));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, m - 4), "text")->valuestring, content);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "response"), "usage"), "output_tokens")->valueint,
        completion);
    cJSON_Delete(ev);
    mc_test_http_free(&r);

    // Ollama: /api/chat whole and as lines, /api/generate as one user turn.
    k = s_post(t.port, "/api/chat",
               "{\"model\":\"tiny-f32\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about foxes.\"}],"
               "\"stream\":false,\"options\":{\"temperature\":0,\"num_predict\":16}}",
               200);
    assert_string_equal(s_get_str(k, "message", "content", NULL), content);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(k, "done")));
    assert_string_equal(s_get_str(k, "done_reason", NULL, NULL), finish);
    assert_int_equal(cJSON_GetObjectItem(k, "eval_count")->valueint, completion);
    assert_int_equal(cJSON_GetObjectItem(k, "prompt_eval_count")->valueint, prompt);
    assert_true(cJSON_GetObjectItem(k, "total_duration")->valuedouble > 0);
    cJSON_Delete(k);
    assert_int_equal(mc_test_http(t.port, "POST", "/api/chat", NULL,
                                  "{\"model\":\"tiny-f32\",\"messages\":[{\"role\":\"user\",\"content\":"
                                  "\"Tell me about foxes.\"}],\"options\":{\"temperature\":0,\"num_predict\":16}}",
                                  &r),
                     0); // streamed by default
    assert_non_null(strstr(r.headers, "content-type: application/x-ndjson"));
    char lines[4096] = "";
    int n_lines = 0;
    bool ended = false;
    for (char *line = r.body; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl); // every line ends
        *nl = 0;
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        assert_false(ended); // nothing after the last line
        ended = cJSON_IsTrue(cJSON_GetObjectItem(o, "done"));
        strncat(lines, s_get_str(o, "message", "content", NULL), sizeof lines - strlen(lines) - 1);
        if (ended) assert_int_equal(cJSON_GetObjectItem(o, "eval_count")->valueint, completion);
        cJSON_Delete(o);
        n_lines++;
        line = nl + 1;
    }
    assert_true(ended && n_lines >= 2);
    assert_string_equal(lines, content);
    mc_test_http_free(&r);
    k = s_post(t.port, "/api/generate",
               "{\"model\":\"tiny-f32\",\"prompt\":\"Tell me about foxes.\",\"stream\":false,\"options\":{\"temperature\":0,"
               "\"num_predict\":16}}",
               200);
    assert_string_equal(s_get_str(k, "response", NULL, NULL), content);
    cJSON_Delete(k);
    // The model as Ollama lists it.
    assert_int_equal(mc_test_http(t.port, "GET", "/api/tags", NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "\"name\":\"tiny-f32:latest\""));
    mc_test_http_free(&r);
    k = s_post(t.port, "/api/show", "{\"model\":\"tiny-f32\"}", 200);
    assert_non_null(cJSON_GetObjectItem(k, "model_info"));
    cJSON_Delete(k);
    k = s_post(t.port, "/api/show", "{\"model\":\"llama3\"}", 404);
    assert_non_null(strstr(cJSON_GetObjectItem(k, "error")->valuestring, "not found"));
    cJSON_Delete(k);

    // /v1/completions: the legacy logprobs object.
    k = s_post(t.port, "/v1/completions", "{\"prompt\":\"The quick brown fox\",\"max_tokens\":6,\"temperature\":0,\"logprobs\":2}",
               200);
    const cJSON *legacy = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(k, "choices"), 0), "logprobs");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(legacy, "tokens")), s_usage(k, "completion_tokens"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(legacy, "text_offset")), s_usage(k, "completion_tokens"));
    cJSON_Delete(k);
    printf("[server] one greedy answer (%d tokens) the same through chat, responses, ollama chat and generate; "
           "%d logprob entries whole and streamed\n",
           completion, cJSON_GetArraySize(lc));
    cJSON_Delete(j);
    s_down(&t);
}

// Bodies every dialect refuses: a user message without text, invalid
// UTF-8, a raw NUL byte; n > 1 said plainly; Ollama's errors in its form.
static void test_bad_bodies(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 64, 1, NULL, 0);
    const char *chat = "/v1/chat/completions";
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":[{\"role\":\"user\",\"content\":null}]}", 400,
             "invalid_request_error", "'messages[0].content' is null");
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}", 400,
             "invalid_request_error", "not valid UTF-8");
    s_expect(t.port, "POST", "/v1/responses", NULL, "{\"input\":\"\xc3\"}", 400, "invalid_request_error", "not valid UTF-8");
    s_expect(t.port, "POST", chat, NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", 400,
             "invalid_request_error", "n > 1 is not supported");
    // A raw NUL byte inside a string: refused, not cut.
    static const char raw[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"before\0after\"}]}";
    int fd = mc_test_http_connect(t.port);
    assert_true(fd >= 0);
    assert_int_equal(mc_test_http_send(fd, "POST", chat, NULL, raw, sizeof raw - 1), 0);
    mc_test_http_t r;
    assert_int_equal(mc_test_http_read(fd, &r), 0);
    close(fd);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "NUL byte"));
    mc_test_http_free(&r);
    // Ollama's routes answer in Ollama's form: {"error": "..."}.
    assert_int_equal(mc_test_http(t.port, "POST", "/api/chat", NULL, "{\"messages\":[]}", &r), 0);
    assert_int_equal(r.status, 400);
    cJSON *j = cJSON_Parse(r.body);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "error")));
    assert_non_null(strstr(cJSON_GetObjectItem(j, "error")->valuestring, "'model' is required"));
    cJSON_Delete(j);
    mc_test_http_free(&r);
    s_down(&t);
}

// CORS: a listed origin gets the preflight's headers and
// Access-Control-Allow-Origin on its answers, another origin none; a
// server without --cors-origin allows none. Every 405 says Allow. The API
// key: preflights need none, "bearer" in any case works.
static void test_cors_methods_auth(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    mc_server_params_t p = mc_server_params_default();
    p.cors_origin = "http://page.example:8000, https://other.example";
    p.api_key = "s3cret";
    s_up_with(&t, NULL, 64, 1, p);
    mc_test_http_t r;
    char v[256];
    const char *pre = "Origin: http://page.example:8000\r\nAccess-Control-Request-Method: POST\r\n"
                      "Access-Control-Request-Headers: authorization, content-type, x-stainless-os\r\n";
    assert_int_equal(mc_test_http(t.port, "OPTIONS", "/v1/chat/completions", pre, NULL, &r), 0);
    assert_int_equal(r.status, 204); // no API key on a preflight
    assert_string_equal(s_header(&r, "access-control-allow-origin", v, sizeof v), "http://page.example:8000");
    assert_string_equal(s_header(&r, "access-control-allow-methods", v, sizeof v), "post, options");
    assert_non_null(strstr(s_header(&r, "access-control-allow-headers", v, sizeof v), "authorization, content-type"));
    assert_non_null(strstr(v, "x-stainless-os"));
    assert_string_equal(s_header(&r, "access-control-max-age", v, sizeof v), "600");
    assert_string_equal(s_header(&r, "allow", v, sizeof v), "post, options");
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "OPTIONS", "/api/tags",
                                  "Origin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n", NULL, &r),
                     0);
    assert_int_equal(r.status, 204);
    assert_null(s_header(&r, "access-control-allow-origin", v, sizeof v));
    assert_null(s_header(&r, "access-control-allow-methods", v, sizeof v));
    assert_string_equal(s_header(&r, "allow", v, sizeof v), "get, head, options");
    mc_test_http_free(&r);
    // The answer itself (and a 401) carry the origin for the listed page.
    assert_int_equal(mc_test_http(t.port, "GET", "/v1/models", "Origin: https://other.example\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(s_header(&r, "access-control-allow-origin", v, sizeof v), "https://other.example");
    mc_test_http_free(&r);
    // "bearer", "BEARER", extra spaces: the scheme is case-insensitive.
    static const char *const ok[] = {"Authorization: Bearer s3cret\r\n", "Authorization: bearer s3cret\r\n",
                                     "Authorization: BEARER   s3cret\r\n"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mc_test_http(t.port, "GET", "/v1/models", ok[i], NULL, &r), 0);
        assert_int_equal(r.status, 200);
        mc_test_http_free(&r);
    }
    static const char *const no[] = {"Authorization: Bearers3cret\r\n", "Authorization: Basic s3cret\r\n",
                                     "Authorization: bearer s3cre\r\n"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mc_test_http(t.port, "GET", "/api/tags", no[i], NULL, &r), 0);
        assert_int_equal(r.status, 401);
        mc_test_http_free(&r);
    }
    // Allow on every 405.
    assert_int_equal(mc_test_http(t.port, "GET", "/v1/responses", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(s_header(&r, "allow", v, sizeof v), "post, options");
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "DELETE", "/api/tags", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(s_header(&r, "allow", v, sizeof v), "get, head, options");
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "PUT", "/index.html", NULL, "{}", &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(s_header(&r, "allow", v, sizeof v), "get, head, options");
    mc_test_http_free(&r);
    s_down(&t);
    // No --cors-origin: no page elsewhere may read the answers.
    s_up(&t, NULL, 64, 1, NULL, 0);
    assert_int_equal(mc_test_http(t.port, "OPTIONS", "/v1/chat/completions", pre, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_null(s_header(&r, "access-control-allow-origin", v, sizeof v));
    mc_test_http_free(&r);
    assert_int_equal(mc_test_http(t.port, "GET", "/v1/models", "Origin: http://page.example:8000\r\n", NULL, &r), 0);
    assert_null(s_header(&r, "access-control-allow-origin", v, sizeof v));
    mc_test_http_free(&r);
    s_down(&t);
    // A malformed list stops the server from starting, with the reason.
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = s_model, sp.ctx = 64, sp.n_seq = 1;
    mc_session_t *s = mc_session_new(&sp, err);
    p.cors_origin = "page.example";
    p.port = 0;
    assert_null(mc_server_new(s, &p, err));
    assert_non_null(strstr(err, "--cors-origin"));
    mc_session_destroy(&s);
}

// --- the server stops mid-stream -----------------------------------------------------------------

static void *s_stopper(void *arg) {
    s_down(arg);
    return NULL;
}

// A stream the server has to end (it is stopping) ends with an error
// event: never a finish_reason "stop" and [DONE], which would pass a cut
// answer off as whole. The same for the other dialects.
static void test_stop_mid_stream(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static const struct {
        const char *path, *body, *error;
    } cases[] = {
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"Go on forever.\"}],\"max_tokens\":4000,\"stream\":true,"
         "\"temperature\":1}",
         "\"error\":{\"message\":\"the server stopped before the answer was finished\""},
        {"/v1/responses", "{\"input\":\"Go on forever.\",\"max_output_tokens\":4000,\"stream\":true,\"temperature\":1}",
         "event: response.failed"},
        {"/api/chat",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Go on forever.\"}],\"options\":"
         "{\"num_predict\":4000,\"temperature\":1}}",
         "{\"error\":\"the server stopped before the answer was finished\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        static s_srv_t t;
        s_up(&t, NULL, 4096, 1, NULL, 0);
        int fd = mc_test_http_connect(t.port);
        assert_true(fd >= 0);
        assert_int_equal(mc_test_http_send(fd, "POST", cases[i].path, NULL, cases[i].body, strlen(cases[i].body)), 0);
        // Wait for the text to flow, then stop the server while reading on.
        char peek[256];
        assert_true(recv(fd, peek, sizeof peek, MSG_PEEK) > 0);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, s_stopper, &t), 0);
        mc_test_http_t r;
        assert_int_equal(mc_test_http_read(fd, &r), 0);
        close(fd);
        pthread_join(th, NULL);
        assert_int_equal(r.status, 200);
        if (!strstr(r.body, cases[i].error)) fail_msg("%s: no error at the end: ...%s", cases[i].path,
                                                      r.body + (r.body_len > 400 ? r.body_len - 400 : 0));
        assert_null(strstr(r.body, "[DONE]"));
        assert_null(strstr(r.body, "\"finish_reason\":\"stop\""));
        assert_null(strstr(r.body, "response.completed"));
        assert_null(strstr(r.body, "\"done\":true"));
        printf("[server] %s: stopped mid-stream, %zu bytes, ended with an error\n", cases[i].path, r.body_len);
        mc_test_http_free(&r);
    }
}

// A client that leaves mid-stream is logged when its generation has ended:
// with the tokens generated (as /metrics counted them), not 0 and 0.
static void test_stream_log_counts(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    char path[600];
    snprintf(path, sizeof path, "%s/server.log", s_dir);
    FILE *log = fopen(path, "w");
    assert_non_null(log);
    static s_srv_t t;
    mc_server_params_t p = mc_server_params_default();
    p.log = log;
    s_up_with(&t, NULL, 4096, 1, p);
    int fd = mc_test_http_connect(t.port);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Go on forever.\"}],\"max_tokens\":4000,"
                       "\"stream\":true,\"temperature\":1}";
    assert_int_equal(mc_test_http_send(fd, "POST", "/v1/chat/completions", NULL, body, strlen(body)), 0);
    char buf[4096];
    size_t got = 0;
    while (got < 2000) { // well into the text
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
    close(fd);
    for (int i = 0; i < 500 && s_metric(t.port, "moe_generations_total") < 1; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    const double prompt = s_metric(t.port, "moe_prompt_tokens_total"), gen = s_metric(t.port, "moe_completion_tokens_total");
    s_down(&t);
    fclose(log);
    char *txt = (char *)mc_test_read_file(path, NULL);
    assert_non_null(txt);
    char want[128];
    snprintf(want, sizeof want, "chat (stream) 200 in ");
    const char *line = strstr(txt, want);
    if (!line) fail_msg("no stream line in the log: %s", txt);
    snprintf(want, sizeof want, ": %.0f prompt + %.0f generated tokens, cancelled (the client left)", prompt, gen);
    if (!strstr(line, want)) fail_msg("log line '%.*s', wanted '%s'", (int)strcspn(line, "\n"), line, want);
    assert_true(gen > 0);
    printf("[server] the log says what /metrics counted: %.0f + %.0f tokens\n", prompt, gen);
    free(txt);
}

// The prompt length of msgs in a format with tools (as the server renders them).
// date, effort: gpt-oss's "Current date" and "Reasoning" (NULL: none, the default).
static int s_render_count_on(mc_chat_style_t st, const char *tool, const mc_chat_msg_t *m, size_t n, bool thinking,
                             const char *date, const char *effort) {
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = s_model;
    mc_session_t *s = mc_session_new(&sp, err);
    assert_non_null(s);
    mc_chat_opts_t o = mc_chat_opts_default();
    o.style = st, o.tools = tool ? &tool : NULL, o.n_tools = tool ? 1 : 0, o.thinking = thinking, o.date = date;
    o.reasoning_effort = effort;
    int32_t *ids;
    size_t k;
    if (mc_chat_render(mc_session_tokenizer(s), &o, m, n, false, &ids, &k, err)) fail_msg("%s", err);
    free(ids);
    mc_session_destroy(&s);
    return (int)k;
}

static int s_render_count(mc_chat_style_t st, const char *tool, const mc_chat_msg_t *m, size_t n, bool thinking) {
    return s_render_count_on(st, tool, m, n, thinking, NULL, NULL);
}

// Today (UTC) as the server writes it into gpt-oss's system message.
static void s_today(char out[16]) {
    const time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

// A forced call's arguments: an object with a string city of at most 8
// characters and perhaps an integer days, nothing else (ftools' schema).
static void s_check_args(const char *text) {
    cJSON *args = cJSON_Parse(text);
    if (!cJSON_IsObject(args)) fail_msg("arguments are not an object: %s", text);
    const cJSON *city = cJSON_GetObjectItem(args, "city");
    assert_true(cJSON_IsString(city) && strlen(city->valuestring) <= 8 * 4);
    const cJSON *a;
    cJSON_ArrayForEach(a, args) {
        assert_true(!strcmp(a->string, "city") || (!strcmp(a->string, "days") && cJSON_IsNumber(a) &&
                                                   a->valuedouble == (double)(int64_t)a->valuedouble));
    }
    cJSON_Delete(args);
}

// Tools through /v1/responses: a conversation with a function_call and its
// function_call_output reaches the prompt as chat's call and tool message
// do (the same prompt length); a forced call (random weights, constrained)
// is always one function_call item whose arguments follow the schema,
// whole and streamed the same (output_item.added with empty arguments, the
// deltas, arguments.done, output_item.done, response.completed); the kept
// call is named by its item id in a next turn with its output.
static void s_responses_tools(uint16_t port) {
    static const char flat[] = "\"tools\":[{\"type\":\"function\",\"name\":\"get\",\"parameters\":{"
                               "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}]";
    static const char nested[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{"
                                 "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]";
    char body[2048];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,"
             "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":"
             "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"20C\"}],"
             "%s,\"max_tokens\":1}",
             nested);
    cJSON *j = s_post(port, "/v1/chat/completions", body, 200);
    const int chat_prompt = s_usage(j, "prompt_tokens");
    cJSON_Delete(j);
    snprintf(body, sizeof body,
             "{\"input\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"type\":\"function_call\",\"call_id\":\"c1\","
             "\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},{\"type\":\"function_call_output\","
             "\"call_id\":\"c1\",\"output\":\"20C\"}],%s,\"max_output_tokens\":1}",
             flat);
    j = s_post(port, "/v1/responses", body, 200);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "input_tokens")->valueint, chat_prompt);
    cJSON_Delete(j);
    // Forced (a named function), whole.
    static const char ftools[] = "\"tools\":[{\"type\":\"function\",\"name\":\"get\",\"strict\":true,\"parameters\":{"
                                 "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
                                 "\"days\":{\"type\":\"integer\"}},\"required\":[\"city\"],"
                                 "\"additionalProperties\":false}}]";
    char whole_body[2048], stream_body[2048];
    for (int st = 0; st < 2; st++)
        snprintf(st ? stream_body : whole_body, sizeof whole_body,
                 "{\"input\":\"Weather in Paris?\",%s,\"tool_choice\":{\"type\":\"function\",\"name\":\"get\"},"
                 "\"max_output_tokens\":200,\"temperature\":0%s}",
                 ftools, st ? ",\"stream\":true" : "");
    j = s_post(port, "/v1/responses", whole_body, 200);
    assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "completed");
    const cJSON *out = cJSON_GetObjectItem(j, "output");
    assert_int_equal(cJSON_GetArraySize(out), 1); // the call alone: no text, no message
    const cJSON *item = cJSON_GetArrayItem(out, 0);
    assert_string_equal(cJSON_GetObjectItem(item, "type")->valuestring, "function_call");
    assert_string_equal(cJSON_GetObjectItem(item, "name")->valuestring, "get");
    assert_string_equal(cJSON_GetObjectItem(item, "status")->valuestring, "completed");
    char call_id[64], item_id[64], args[1024];
    snprintf(call_id, sizeof call_id, "%s", cJSON_GetObjectItem(item, "call_id")->valuestring);
    snprintf(item_id, sizeof item_id, "%s", cJSON_GetObjectItem(item, "id")->valuestring);
    snprintf(args, sizeof args, "%s", cJSON_GetObjectItem(item, "arguments")->valuestring);
    assert_true(!strncmp(call_id, "call_", 5) && !strncmp(item_id, "fc_", 3));
    s_check_args(args);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tool_choice"), "name")->valuestring, "get");
    printf("[server] forced call through /v1/responses: get(%s)\n", args);
    const int whole_tokens = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "output_tokens")->valueint;
    cJSON_Delete(j);
    // Streamed: the same call, as the Responses API streams one.
    mc_test_http_t r;
    if (mc_test_http(port, "POST", "/v1/responses", NULL, stream_body, &r)) fail_msg("no answer");
    assert_int_equal(r.status, 200);
    cJSON *ev = s_typed_events(r.body);
    static const char *const want[] = {"response.created", "response.in_progress", "response.output_item.added"};
    const int m = cJSON_GetArraySize(ev);
    assert_true(m >= 7);
    char deltas[1024] = "";
    for (int i = 0; i < m; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev, i);
        const char *type = cJSON_GetObjectItem(e, "type")->valuestring;
        assert_int_equal(cJSON_GetObjectItem(e, "sequence_number")->valueint, i);
        if (i < 3) assert_string_equal(type, want[i]);
        if (i == 2) {
            const cJSON *it = cJSON_GetObjectItem(e, "item");
            assert_string_equal(cJSON_GetObjectItem(it, "type")->valuestring, "function_call");
            assert_string_equal(cJSON_GetObjectItem(it, "arguments")->valuestring, "");
            assert_string_equal(cJSON_GetObjectItem(it, "name")->valuestring, "get");
            assert_true(!strncmp(cJSON_GetObjectItem(it, "call_id")->valuestring, "call_", 5)); // ids: per request
        } else if (i > 2 && i < m - 3) {
            assert_string_equal(type, "response.function_call_arguments.delta");
            strncat(deltas, cJSON_GetObjectItem(e, "delta")->valuestring, sizeof deltas - strlen(deltas) - 1);
        }
    }
    assert_string_equal(deltas, args);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, m - 3), "type")->valuestring,
                        "response.function_call_arguments.done");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, m - 3), "arguments")->valuestring, args);
    const cJSON *done = cJSON_GetArrayItem(ev, m - 2);
    assert_string_equal(cJSON_GetObjectItem(done, "type")->valuestring, "response.output_item.done");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(done, "item"), "arguments")->valuestring, args);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(done, "item"), "status")->valuestring, "completed");
    const cJSON *last = cJSON_GetObjectItem(cJSON_GetArrayItem(ev, m - 1), "response");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, m - 1), "type")->valuestring, "response.completed");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(last, "output")), 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "usage"), "output_tokens")->valueint, whole_tokens);
    cJSON_Delete(ev);
    mc_test_http_free(&r);
    // The kept call by its item id, with its output: the conversation goes on.
    snprintf(body, sizeof body,
             "{\"input\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"},{\"type\":\"item_reference\",\"id\":"
             "\"%s\"},{\"type\":\"function_call_output\",\"call_id\":\"%s\",\"output\":\"20C\"}],%s,"
             "\"max_output_tokens\":2}",
             item_id, call_id, ftools);
    j = s_post(port, "/v1/responses", body, 200);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "input_tokens")->valueint > 10);
    cJSON_Delete(j);
}

// Tools through Ollama's /api/chat: a conversation with a call (object
// arguments) and a tool message reaches the prompt as chat's does (the
// same length, no call ids: none in the chat body either); a forced call
// (tool_choice, which this server also reads here) is message.tool_calls
// with arguments that follow the schema, whole and as NDJSON lines.
static void s_ollama_tools(uint16_t port) {
    static const char tools[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{"
                                "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
                                "\"days\":{\"type\":\"integer\"}},\"required\":[\"city\"],\"additionalProperties\":false}}}]";
    char body[2048];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,"
             "\"tool_calls\":[{\"id\":\"\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":"
             "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"\",\"content\":\"20C\"}],"
             "%s,\"max_tokens\":1}",
             tools);
    cJSON *j = s_post(port, "/v1/chat/completions", body, 200);
    const int chat_prompt = s_usage(j, "prompt_tokens");
    cJSON_Delete(j);
    snprintf(body, sizeof body,
             "{\"model\":\"tiny-f32\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":"
             "\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get\",\"arguments\":{\"city\":"
             "\"Paris\"}}}]},{\"role\":\"tool\",\"content\":\"20C\"}],%s,\"stream\":false,\"options\":{\"num_predict\":1}}",
             tools);
    j = s_post(port, "/api/chat", body, 200);
    assert_int_equal(cJSON_GetObjectItem(j, "prompt_eval_count")->valueint, chat_prompt);
    cJSON_Delete(j);
    char args[1024] = "";
    for (int st = 0; st < 2; st++) {
        snprintf(body, sizeof body,
                 "{\"model\":\"tiny-f32\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,"
                 "\"tool_choice\":\"required\",\"stream\":%s,\"options\":{\"temperature\":0,\"num_predict\":200}}",
                 tools, st ? "true" : "false");
        mc_test_http_t r;
        if (mc_test_http(port, "POST", "/api/chat", NULL, body, &r)) fail_msg("no answer");
        assert_int_equal(r.status, 200);
        const cJSON *tc = NULL;
        cJSON *keep = NULL;
        int with_calls = 0;
        for (char *line = r.body, *nl; line && *line; line = nl ? nl + 1 : NULL) { // whole: one line
            nl = strchr(line, '\n');
            if (nl) *nl = 0;
            cJSON *o = cJSON_Parse(line);
            if (!o) fail_msg("bad line: %s", line);
            const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "message"), "tool_calls");
            if (c) {
                with_calls++;
                cJSON_Delete(keep);
                keep = o, tc = c;
            } else {
                if (cJSON_IsTrue(cJSON_GetObjectItem(o, "done")))
                    assert_string_equal(cJSON_GetObjectItem(o, "done_reason")->valuestring, "stop");
                cJSON_Delete(o);
            }
        }
        assert_int_equal(with_calls, 1);
        assert_int_equal(cJSON_GetArraySize(tc), 1);
        const cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 0), "function");
        assert_string_equal(cJSON_GetObjectItem(f, "name")->valuestring, "get");
        const cJSON *a = cJSON_GetObjectItem(f, "arguments");
        assert_true(cJSON_IsObject(a));
        char *printed = cJSON_PrintUnformatted(a);
        s_check_args(printed);
        if (st) assert_string_equal(printed, args); // streamed: the same call
        else snprintf(args, sizeof args, "%s", printed);
        free(printed);
        cJSON_Delete(keep);
        mc_test_http_free(&r);
    }
    printf("[server] forced call through /api/chat: get(%s)\n", args);
}

// Tools through the chat API: the tools and a conversation with a call and
// its result reach the prompt in the model's format (its length says so);
// a forced call (unconstrained here, random weights) comes back as a call
// that parses, or as text with finish "stop"/"length", never as a call it
// is not; streamed, the same answer in OpenAI's deltas. --chat-format and
// enable_thinking change the prompt as their formats say.
static void test_tools_and_formats(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    static s_srv_t t;
    s_up(&t, NULL, 512, 2, NULL, 0);
    static const char tools[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{"
                                "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]";
    const char *tool_py = "{\"type\": \"function\", \"function\": {\"name\": \"get\", \"parameters\": {\"type\": "
                          "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}";
    char body[2048];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,"
             "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":"
             "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"20C\"}],"
             "%s,\"max_tokens\":4,\"temperature\":0}",
             tools);
    cJSON *j = s_post(t.port, "/v1/chat/completions", body, 200);
    const mc_chat_call_t call = {"c1", "get", "{\"city\": \"Paris\"}"};
    const mc_chat_msg_t conv[] = {{.role = MC_CHAT_USER, .content = "Weather?", .len = 8},
                                  {.role = MC_CHAT_ASSISTANT, .content = "", .calls = &call, .n_calls = 1},
                                  {.role = MC_CHAT_TOOL, .content = "20C", .len = 3, .tool_call_id = "c1"}};
    assert_int_equal(s_usage(j, "prompt_tokens"), s_render_count(MC_CHAT_STYLE_MISTRAL, tool_py, conv, 3, true));
    cJSON_Delete(j);
    // Forced: decoded under the call's constraint, so with random weights
    // too the answer is a call of "get" whose arguments follow its schema.
    static const char ftools[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{"
                                 "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
                                 "\"days\":{\"type\":\"integer\"}},\"required\":[\"city\"],"
                                 "\"additionalProperties\":false}}}]";
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,\"tool_choice\":\"required\","
             "\"max_tokens\":200,\"temperature\":0%s}",
             ftools, "");
    j = s_post(t.port, "/v1/chat/completions", body, 200);
    const cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    char finish[16];
    snprintf(finish, sizeof finish, "%s", s_get_str(j, "choices", "finish_reason", NULL));
    const cJSON *calls = cJSON_GetObjectItem(msg, "tool_calls");
    char *content = cJSON_IsString(cJSON_GetObjectItem(msg, "content"))
                        ? strdup(cJSON_GetObjectItem(msg, "content")->valuestring)
                        : NULL;
    if (!calls) fail_msg("a forced call came back as text: '%s' (%s)", content ? content : "(null)", finish);
    assert_string_equal(finish, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 1);
    {
        const cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "function");
        assert_string_equal(cJSON_GetObjectItem(f, "name")->valuestring, "get");
        cJSON *args = cJSON_Parse(cJSON_GetObjectItem(f, "arguments")->valuestring);
        assert_true(cJSON_IsObject(args));
        const cJSON *city = cJSON_GetObjectItem(args, "city");
        assert_true(cJSON_IsString(city) && strlen(city->valuestring) <= 8 * 4);
        const cJSON *a;
        cJSON_ArrayForEach(a, args) { // nothing beyond the schema's properties
            assert_true(!strcmp(a->string, "city") || (!strcmp(a->string, "days") && cJSON_IsNumber(a)));
        }
        cJSON_Delete(args);
    }
    char whole_args[1024];
    snprintf(whole_args, sizeof whole_args, "%s",
             cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "function"), "arguments")->valuestring);
    printf("[server] forced call: get(%s)\n", whole_args);
    const bool called = calls != NULL;
    cJSON_Delete(j);
    // Streamed: the same answer.
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,\"tool_choice\":\"required\","
             "\"max_tokens\":200,\"temperature\":0,\"stream\":true}",
             ftools);
    mc_test_http_t r;
    if (mc_test_http(t.port, "POST", "/v1/chat/completions", NULL, body, &r)) fail_msg("no answer");
    assert_int_equal(r.status, 200);
    bool done;
    cJSON *ev = s_events(r.body, &done);
    assert_true(done);
    char streamed[4096] = "", args[4096] = "";
    const char *last_finish = NULL;
    int heads = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ev) {
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "choices"), 0);
        const cJSON *d = cJSON_GetObjectItem(c, "delta");
        const cJSON *txt = cJSON_GetObjectItem(d, "content");
        if (cJSON_IsString(txt)) strncat(streamed, txt->valuestring, sizeof streamed - strlen(streamed) - 1);
        const cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
        if (tc) {
            assert_int_equal(cJSON_GetObjectItem(tc, "index")->valueint, 0);
            const cJSON *f = cJSON_GetObjectItem(tc, "function");
            if (cJSON_GetObjectItem(tc, "id")) {
                heads++;
                assert_string_equal(cJSON_GetObjectItem(tc, "type")->valuestring, "function");
                assert_string_equal(cJSON_GetObjectItem(f, "name")->valuestring, "get");
            }
            strncat(args, cJSON_GetObjectItem(f, "arguments")->valuestring, sizeof args - strlen(args) - 1);
        }
        const cJSON *fr = cJSON_GetObjectItem(c, "finish_reason");
        if (cJSON_IsString(fr)) last_finish = fr->valuestring;
    }
    assert_non_null(last_finish);
    assert_string_equal(last_finish, finish);
    if (called) {
        assert_int_equal(heads, 1);
        assert_string_equal(args, whole_args); // the same call, streamed
    } else {
        assert_int_equal(heads, 0);
        assert_string_equal(streamed, content);
    }
    cJSON_Delete(ev);
    mc_test_http_free(&r);
    free(content);
    // A named function among two: that one is called, seeded sampling too.
    static const char two[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{"
                              "\"type\":\"object\",\"properties\":{}}}},{\"type\":\"function\",\"function\":{\"name\":"
                              "\"put\",\"parameters\":{\"type\":\"object\",\"properties\":{\"n\":{\"enum\":[1,2,3]}},"
                              "\"required\":[\"n\"],\"additionalProperties\":false}}}]";
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Put it\"}],%s,\"tool_choice\":{\"type\":\"function\","
             "\"function\":{\"name\":\"put\"}},\"max_tokens\":100,\"temperature\":0.9,\"seed\":5}",
             two);
    j = s_post(t.port, "/v1/chat/completions", body, 200);
    assert_string_equal(s_get_str(j, "choices", "finish_reason", NULL), "tool_calls");
    {
        const cJSON *m2 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
        const cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m2, "tool_calls"), 0), "function");
        assert_non_null(f);
        assert_string_equal(cJSON_GetObjectItem(f, "name")->valuestring, "put");
        cJSON *args = cJSON_Parse(cJSON_GetObjectItem(f, "arguments")->valuestring);
        const cJSON *n = cJSON_GetObjectItem(args, "n");
        assert_true(cJSON_IsNumber(n) && n->valueint >= 1 && n->valueint <= 3 && cJSON_GetArraySize(args) == 1);
        cJSON_Delete(args);
    }
    cJSON_Delete(j);
    // A forced call whose schema cannot be enforced: the client's 400, naming the keyword.
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"When?\"}],\"tools\":[{\"type\":\"function\",\"function\":"
             "{\"name\":\"at\",\"parameters\":{\"type\":\"object\",\"properties\":{\"t\":{\"type\":\"string\","
             "\"format\":\"date-time\"}}}}}],\"tool_choice\":\"required\"}");
    j = s_post(t.port, "/v1/chat/completions", body, 400);
    assert_non_null(strstr(s_get_str(j, "error", "message", NULL), "'format' is not supported"));
    cJSON_Delete(j);
    s_responses_tools(t.port);
    s_ollama_tools(t.port);
    s_down(&t);
    // --chat-format: chatml, then qwen3 with and without thinking.
    const mc_chat_msg_t one = {.role = MC_CHAT_USER, .content = "Hi", .len = 2};
    const char *formats[] = {"chatml", "qwen3"};
    for (int f = 0; f < 2; f++) {
        char err[MC_ERR_LEN];
        mc_session_params_t sp = mc_session_params_default();
        sp.model = s_model, sp.ctx = 256, sp.chat_format = formats[f];
        t.s = mc_session_new(&sp, err);
        if (!t.s) fail_msg("%s", err);
        mc_server_params_t p = mc_server_params_default();
        p.port = 0;
        if (!(t.srv = mc_server_new(t.s, &p, err))) fail_msg("%s", err);
        t.port = mc_server_port(t.srv);
        for (int think = 0; think < 2; think++) {
            snprintf(body, sizeof body,
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":1,"
                     "\"chat_template_kwargs\":{\"enable_thinking\":%s}}",
                     think ? "true" : "false");
            j = s_post(t.port, "/v1/chat/completions", body, 200);
            assert_int_equal(s_usage(j, "prompt_tokens"),
                             s_render_count(f ? MC_CHAT_STYLE_QWEN3 : MC_CHAT_STYLE_CHATML, NULL, &one, 1, think));
            cJSON_Delete(j);
        }
        s_down(&t);
    }
    assert_true(s_render_count(MC_CHAT_STYLE_QWEN3, NULL, &one, 1, false) >
                s_render_count(MC_CHAT_STYLE_QWEN3, NULL, &one, 1, true));
    // deepseek-v3, glm4 and gpt-oss (their markers as text in this
    // vocabulary): the tools, a call and its result reach the prompt in their
    // own syntax (gpt-oss's with today's date and the request's reasoning
    // effort); a named call is forced in deepseek-v3 (and comes back as that
    // call, whole and streamed); glm4 and gpt-oss cannot force one (a 400
    // that says so).
    const char *own[] = {"deepseek-v3", "glm4", "gpt-oss"};
    for (int f = 0; f < 3; f++) {
        char err[MC_ERR_LEN];
        mc_session_params_t sp = mc_session_params_default();
        sp.model = s_model, sp.ctx = 512, sp.chat_format = own[f];
        t.s = mc_session_new(&sp, err);
        if (!t.s) fail_msg("%s", err);
        mc_server_params_t p = mc_server_params_default();
        p.port = 0;
        if (!(t.srv = mc_server_new(t.s, &p, err))) fail_msg("%s", err);
        t.port = mc_server_port(t.srv);
        const mc_chat_style_t st = f == 2 ? MC_CHAT_STYLE_HARMONY : f ? MC_CHAT_STYLE_GLM4 : MC_CHAT_STYLE_DEEPSEEK_V3;
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,"
                 "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":"
                 "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"20C\"}],"
                 "%s,\"max_tokens\":2,\"temperature\":0}",
                 tools);
        char day0[16], day1[16];
        s_today(day0);
        j = s_post(t.port, "/v1/chat/completions", body, 200);
        s_today(day1);
        if (f == 2) { // the date of the request (either side of a midnight)
            const int n = s_usage(j, "prompt_tokens");
            assert_true(n == s_render_count_on(st, tool_py, conv, 3, true, day0, NULL) ||
                        n == s_render_count_on(st, tool_py, conv, 3, true, day1, NULL));
            assert_true(s_render_count_on(st, tool_py, conv, 3, true, day0, NULL) > s_render_count(st, tool_py, conv, 3, true));
        } else {
            assert_int_equal(s_usage(j, "prompt_tokens"), s_render_count(st, tool_py, conv, 3, true));
        }
        assert_true(s_render_count(st, tool_py, conv, 3, true) > s_render_count(st, NULL, conv, 3, true));
        cJSON_Delete(j);
        if (f == 2) { // reasoning_effort reaches the "Reasoning:" line: the same length here, other logits
            double lp[2];
            for (int k = 0; k < 2; k++) {
                const char *eff = k ? "high" : "low";
                snprintf(body, sizeof body,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":1,\"temperature\":0,"
                         "\"logprobs\":true,\"reasoning_effort\":\"%s\"}",
                         eff);
                s_today(day0);
                j = s_post(t.port, "/v1/chat/completions", body, 200);
                s_today(day1);
                const int n = s_usage(j, "prompt_tokens");
                assert_true(n == s_render_count_on(st, NULL, &one, 1, true, day0, eff) ||
                            n == s_render_count_on(st, NULL, &one, 1, true, day1, eff));
                const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
                const cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "logprobs"), "content"), 0);
                assert_true(cJSON_IsNumber(cJSON_GetObjectItem(l0, "logprob")));
                lp[k] = cJSON_GetObjectItem(l0, "logprob")->valuedouble;
                cJSON_Delete(j);
            }
            assert_true(lp[0] != lp[1]);
        }
        for (int stream = 0; stream < 2 && !f; stream++) {
            snprintf(body, sizeof body,
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,\"tool_choice\":"
                     "{\"type\":\"function\",\"function\":{\"name\":\"get\"}},\"max_tokens\":200,\"temperature\":0%s}",
                     ftools, stream ? ",\"stream\":true" : "");
            if (!stream) {
                j = s_post(t.port, "/v1/chat/completions", body, 200);
                assert_string_equal(s_get_str(j, "choices", "finish_reason", NULL), "tool_calls");
                const cJSON *m2 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
                const cJSON *fn =
                    cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m2, "tool_calls"), 0), "function");
                assert_non_null(fn);
                assert_string_equal(cJSON_GetObjectItem(fn, "name")->valuestring, "get");
                snprintf(whole_args, sizeof whole_args, "%s", cJSON_GetObjectItem(fn, "arguments")->valuestring);
                cJSON *a = cJSON_Parse(whole_args);
                assert_true(cJSON_IsString(cJSON_GetObjectItem(a, "city")));
                cJSON_Delete(a), cJSON_Delete(j);
                printf("[server] %s forced call: get(%s)\n", own[f], whole_args);
                continue;
            }
            if (mc_test_http(t.port, "POST", "/v1/chat/completions", NULL, body, &r)) fail_msg("no answer");
            assert_int_equal(r.status, 200);
            ev = s_events(r.body, &done);
            assert_true(done);
            args[0] = 0, heads = 0;
            cJSON_ArrayForEach(e, ev) {
                const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(e, "choices"), 0), "delta");
                assert_false(cJSON_IsString(cJSON_GetObjectItem(d, "content")) &&
                             strstr(cJSON_GetObjectItem(d, "content")->valuestring, "tool")); // no marker as content
                const cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
                if (!tc) continue;
                if (cJSON_GetObjectItem(tc, "id")) heads++;
                strncat(args, cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")->valuestring,
                        sizeof args - strlen(args) - 1);
            }
            assert_int_equal(heads, 1);
            assert_string_equal(args, whole_args);
            cJSON_Delete(ev);
            mc_test_http_free(&r);
        }
        if (f) {
            snprintf(body, sizeof body,
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}],%s,\"tool_choice\":\"required\"}", tools);
            j = s_post(t.port, "/v1/chat/completions", body, 400);
            assert_non_null(strstr(s_get_str(j, "error", "message", NULL), f == 2 ? "gpt-oss" : "glm4"));
            cJSON_Delete(j);
        }
        s_down(&t);
    }
}

static int s_write(const char *path, const char *txt, size_t len) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const bool ok = fwrite(txt, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

// An HTTP call expected to answer with status (and, when says is given,
// a body that says it); the body's JSON when it is JSON.
static cJSON *s_call(uint16_t port, const char *method, const char *path, const char *headers, const char *body,
                     int status, const char *says) {
    mc_test_http_t r;
    if (mc_test_http(port, method, path, headers, body, &r)) fail_msg("no answer from the server");
    if (r.status != status) fail_msg("%s %s: status %d, wanted %d: %s", method, path, r.status, status, r.body);
    if (says && !strstr(r.body, says)) fail_msg("%s %s: '%s' does not say '%s'", method, path, r.body, says);
    cJSON *j = cJSON_Parse(r.body);
    mc_test_http_free(&r);
    return j;
}

// GET /v1/cluster until the placement has switched `want` times and no
// change is staged; the answer then.
static cJSON *s_switched(uint16_t port, const char *key, double want) {
    for (int i = 0; i < 3000; i++) {
        cJSON *c = s_call(port, "GET", "/v1/cluster", key, NULL, 200, NULL);
        const cJSON *p = cJSON_GetObjectItem(c, "placement");
        assert_non_null(p);
        if (cJSON_GetObjectItem(p, "switches")->valuedouble >= want &&
            !strcmp(cJSON_GetObjectItem(p, "state")->valuestring, "steady"))
            return c;
        cJSON_Delete(c);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the placement did not switch within 30 s");
    return NULL;
}

static int s_count_nodes(const cJSON *c) { return cJSON_GetArraySize(cJSON_GetObjectItem(c, "nodes")); }

// The live-change endpoints: the API key, every refusal named with a 4xx
// and nothing changed, then a node added, a placement put and the cluster
// file read again (SIGHUP), each switched while the server serves the
// same answers.
static void test_cluster_changes(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    char err[MC_ERR_LEN], path[600];
    const char *names[] = {"box-a", "box-b", "box-c"};
    for (int i = 0; i < 3; i++) {
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = s_model, np.name = names[i];
        mc_test_nodes_start(&s_nodes, (size_t)i, &np);
    }
    // The cluster file: box-a and box-b; box-c is up but not in it.
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "nodes:\n  - {name: box-a, endpoint: \"%s\", experts: 0-3}\n"
                                "  - {name: box-b, endpoint: \"%s\", experts: 4-7}\n", s_nodes.procs[0].endpoint, s_nodes.procs[1].endpoint);
    snprintf(path, sizeof path, "%s/cluster.yaml", s_dir);
    assert_int_equal(s_write(path, yaml, strlen(yaml)), 0);
    mc_cluster_config_t *cfg = mc_cluster_config_load(path, err);
    if (!cfg) fail_msg("%s", err);
    static s_srv_t t;
    s_up(&t, cfg, 128, 2, "k3y", 0);
    const char *key = "Authorization: Bearer k3y\r\n";
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say something.\"}],\"max_tokens\":12,\"temperature\":0}";
    cJSON *before = s_call(t.port, "POST", "/v1/chat/completions", key, req, 200, NULL);
    char add[1024];
    snprintf(add, sizeof add, "{\"name\":\"box-c\",\"endpoint\":\"%s\",\"experts\":\"0-7\"}", s_nodes.procs[2].endpoint);

    // Who may: the API key.
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", NULL, add, 401, "invalid_api_key"));
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/placement", "Authorization: Bearer nope\r\n", yaml, 401, NULL));
    cJSON_Delete(s_call(t.port, "DELETE", "/v1/cluster/nodes/box-b", NULL, NULL, 401, NULL));
    // Methods and paths.
    cJSON_Delete(s_call(t.port, "GET", "/v1/cluster/nodes", key, NULL, 405, "takes POST"));
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/placement", key, yaml, 405, "takes PUT"));
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/other", key, yaml, 404, NULL));
    // Bad bodies and changes, each named.
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, "not json", 400, "JSON object"));
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, "{\"name\":\"box-c\"}", 400, "endpoint"));
    snprintf(add, sizeof add, "{\"name\":\"box-c\",\"endpoint\":\"%s\",\"experts\":\"0-9\"}", s_nodes.procs[2].endpoint);
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, add, 400, "9"));
    snprintf(add, sizeof add, "{\"name\":\"box-a\",\"endpoint\":\"%s\"}", s_nodes.procs[2].endpoint);
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, add, 400, "already"));
    snprintf(add, sizeof add, "{\"name\":\"box-c\",\"endpoint\":\"%s\",\"experts\":[0,\"x\"]}", s_nodes.procs[2].endpoint);
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, add, 400, NULL));
    cJSON_Delete(s_call(t.port, "DELETE", "/v1/cluster/nodes/nobody", key, NULL, 404, "nobody"));
    cJSON_Delete(s_call(t.port, "DELETE", "/v1/cluster/nodes/box-b", key, NULL, 400, "expert")); // 4-7 held by no one
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/placement", key, "nodes: [", 400, "placement:"));
    snprintf(yaml, sizeof yaml, "nodes:\n  - {name: box-a, endpoint: \"%s\", experts: 0-7, layers: 0-5}\n",
             s_nodes.procs[0].endpoint);
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/placement", key, yaml, 400, "layer"));
    snprintf(yaml, sizeof yaml, "nodes:\n  - {name: box-a, endpoint: \"%s\", experts: 0-7}\n", s_nodes.procs[1].endpoint);
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/placement", key, yaml, 400, "remove it first"));
    cJSON *c = s_call(t.port, "GET", "/v1/cluster", key, NULL, 200, "\"steady\"");
    assert_int_equal(s_count_nodes(c), 2);
    cJSON_Delete(c);

    // box-c joins holding every expert; then box-b leaves.
    snprintf(add, sizeof add, "{\"name\":\"box-c\",\"endpoint\":\"%s\",\"experts\":\"0-7\"}", s_nodes.procs[2].endpoint);
    cJSON_Delete(s_call(t.port, "POST", "/v1/cluster/nodes", key, add, 202, "staged"));
    c = s_switched(t.port, key, 1);
    assert_int_equal(s_count_nodes(c), 3);
    cJSON_Delete(c);
    cJSON_Delete(s_call(t.port, "DELETE", "/v1/cluster/nodes/box-b", key, NULL, 202, "staged"));
    c = s_switched(t.port, key, 2);
    assert_int_equal(s_count_nodes(c), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "nodes"), 1), "name")->valuestring,
                        "box-c");
    cJSON_Delete(c);
    cJSON *after = s_call(t.port, "POST", "/v1/chat/completions", key, req, 200, NULL);
    assert_string_equal(s_get_str(before, "choices", "message", "content"), s_get_str(after, "choices", "message", "content"));
    cJSON_Delete(after);
    // A placement put as a cluster file (moe-plan's output has this form).
    snprintf(yaml, sizeof yaml, "nodes:\n  - {name: box-a, endpoint: \"%s\", experts: 0-5}\n"
                                "  - {name: box-c, endpoint: \"%s\", experts: 6-7}\n", s_nodes.procs[0].endpoint, s_nodes.procs[2].endpoint);
    cJSON_Delete(s_call(t.port, "PUT", "/v1/cluster/placement", key, yaml, 202, "staged"));
    cJSON_Delete(s_switched(t.port, key, 3));
    // SIGHUP: the cluster file (box-a and box-b) read again.
    assert_int_equal(mc_server_reload(t.srv, err), MC_OK);
    c = s_switched(t.port, key, 4);
    assert_int_equal(s_count_nodes(c), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "nodes"), 1), "name")->valuestring,
                        "box-b");
    cJSON_Delete(c);
    after = s_call(t.port, "POST", "/v1/chat/completions", key, req, 200, NULL);
    assert_string_equal(s_get_str(before, "choices", "message", "content"), s_get_str(after, "choices", "message", "content"));
    cJSON_Delete(after), cJSON_Delete(before);
    // A damaged file is refused and changes nothing.
    assert_int_equal(s_write(path, "nodes: [", 8), 0);
    assert_true(mc_server_reload(t.srv, err) != MC_OK);
    s_down(&t);
    mc_test_nodes_stop(&s_nodes);
    mc_cluster_config_destroy(&cfg);
}

static double s_one_ms(void *user, mc_rebalance_phase_t phase, double ms) {
    (void)user, (void)phase, (void)ms;
    return 1;
}

// Live rebalancing served: a cluster file with a rebalance block (every
// second; node-1 holds every expert, node-2 none): the server's rebalance
// thread plans on the routing of the first answers, stages the plan, times
// the next answer's steps and keeps it; /v1/cluster shows the last
// rebalance, /metrics counts it, and the answers stay the same.
static void test_rebalance_served(void **state) {
    (void)state;
    if (!s_fixture()) skip();
    char err[MC_ERR_LEN], path[600], mpath[600];
    const char *names[] = {"reb-1", "reb-2"};
    for (int i = 0; i < 2; i++) {
        mc_nodeproc_params_t np = mc_nodeproc_params_default();
        np.model = s_model, np.name = names[i];
        mc_test_nodes_start(&s_nodes, (size_t)i, &np);
    }
    char yaml[2048];
    const mc_test_machine_t two[] = {{"reb-1", s_nodes.procs[0].endpoint, 4000, NULL},
                                     {"reb-2", s_nodes.procs[1].endpoint, 4000, NULL}};
    const mc_test_machines_t mt = mc_test_machines_split("F32");
    mc_test_machines_yaml(&mt, two, 2, yaml, sizeof yaml);
    snprintf(mpath, sizeof mpath, "%s/machines.yaml", s_dir);
    assert_int_equal(s_write(mpath, yaml, strlen(yaml)), 0);
    snprintf(yaml, sizeof yaml,
             "rebalance: {every_s: 1, min_gain: 0.1, machines: machines.yaml, window: 4, tolerance: 1}\n"
             "nodes:\n  - {name: reb-1, endpoint: \"%s\", experts: all}\n"
             "  - {name: reb-2, endpoint: \"%s\", experts: none}\n", s_nodes.procs[0].endpoint, s_nodes.procs[1].endpoint);
    snprintf(path, sizeof path, "%s/cluster.yaml", s_dir);
    assert_int_equal(s_write(path, yaml, strlen(yaml)), 0);
    mc_cluster_config_t *cfg = mc_cluster_config_load(path, err);
    if (!cfg) fail_msg("%s", err);
    static s_srv_t t;
    // Every step timed as 1 ms (the loop's test seam): the switch is kept
    // whatever the machine's load.
    mc_rebalance_params_t rp = mc_rebalance_params_default();
    rp.step_ms = s_one_ms;
    mc_server_params_t sp = mc_server_params_default();
    sp.rebalance = &rp;
    s_up_with(&t, cfg, 256, 2, sp);
    mc_test_http_t r;
    assert_int_equal(mc_test_http(t.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "# TYPE moe_rebalance_total counter\n"));
    assert_non_null(strstr(r.body, "moe_rebalance_total{outcome=\"applied\"} 0\n"));
    mc_test_http_free(&r);
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say something.\"}],\"max_tokens\":40,\"temperature\":0}";
    cJSON *first = s_post(t.port, "/v1/chat/completions", req, 200);
    char *want = strdup(s_get_str(first, "choices", "message", "content"));
    cJSON_Delete(first);
    // Answers until the rebalance is judged (a switch needs a pass to
    // happen in, and the window's steps after it).
    double applied = 0;
    for (int i = 0; i < 40 && !applied; i++) {
        cJSON *a = s_post(t.port, "/v1/chat/completions", req, 200);
        assert_string_equal(s_get_str(a, "choices", "message", "content"), want);
        cJSON_Delete(a);
        cJSON *c = s_call(t.port, "GET", "/v1/cluster", NULL, NULL, 200, NULL);
        const cJSON *rb = cJSON_GetObjectItem(c, "rebalance");
        assert_non_null(rb);
        assert_int_equal(cJSON_GetObjectItem(rb, "every_s")->valuedouble, 1);
        applied = cJSON_GetObjectItem(cJSON_GetObjectItem(rb, "counts"), "applied")->valuedouble;
        // A round may fail on a loaded machine (a staged change dropped when
        // a holder answers too late): the loop must go on and apply a later
        // one. Its reason is printed, so a failure here says why.
        const cJSON *last = cJSON_GetObjectItem(rb, "last");
        if (last && !strcmp(cJSON_GetObjectItem(last, "outcome")->valuestring, "failed"))
            printf("[server] a rebalance round failed: %s\n", cJSON_GetObjectItem(last, "message")->valuestring);
        if (applied) {
            // The round after the applied one (every_s is 1) may have come
            // already (planned on the new placement it finds nothing better
            // to do, or the window not timed yet): its figures are its own.
            const char *o = cJSON_GetObjectItem(last, "outcome")->valuestring;
            if (!strcmp(o, "applied")) assert_true(cJSON_GetObjectItem(last, "predicted_gain")->valuedouble >= 0.1);
            else printf("[server] the round after the applied one: %s\n", o);
        }
        cJSON_Delete(c);
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(applied >= 1);
    // node-2 holds experts now.
    cJSON *c = s_call(t.port, "GET", "/v1/cluster", NULL, NULL, 200, NULL);
    int held = 0;
    const cJSON *nd, *layer;
    cJSON_ArrayForEach(nd, cJSON_GetObjectItem(c, "nodes"))
        if (!strcmp(cJSON_GetObjectItem(nd, "name")->valuestring, "reb-2"))
            cJSON_ArrayForEach(layer, cJSON_GetObjectItem(nd, "experts")) held += cJSON_GetArraySize(layer);
    cJSON_Delete(c);
    assert_true(held > 0);
    assert_int_equal(mc_test_http(t.port, "GET", "/metrics", NULL, NULL, &r), 0);
    // Applied at least once (a later round may apply again), never rolled
    // back (every step is timed 1 ms).
    assert_non_null(strstr(r.body, "moe_rebalance_total{outcome=\"applied\"} "));
    assert_null(strstr(r.body, "moe_rebalance_total{outcome=\"applied\"} 0\n"));
    assert_non_null(strstr(r.body, "moe_rebalance_total{outcome=\"rolled_back\"} 0\n"));
    mc_test_http_free(&r);
    cJSON *after = s_post(t.port, "/v1/chat/completions", req, 200);
    assert_string_equal(s_get_str(after, "choices", "message", "content"), want);
    cJSON_Delete(after);
    printf("[server] rebalanced live: node-2 took experts, the answers unchanged\n");
    free(want);
    s_down(&t);
    mc_cluster_config_destroy(&cfg);
    mc_test_nodes_stop(&s_nodes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_greedy_and_stream), cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_concurrent_clients),     cmocka_unit_test(test_client_leaves_mid_stream),
        cmocka_unit_test(test_metrics_format), cmocka_unit_test(test_metrics_expert_store), cmocka_unit_test(test_metrics_kv_cache),
        cmocka_unit_test_teardown(test_cluster_endpoint, s_stop_nodes),
        cmocka_unit_test_teardown(test_cluster_changes, s_stop_nodes),
        cmocka_unit_test_teardown(test_rebalance_served, s_stop_nodes),
        cmocka_unit_test(test_dialects_and_logprobs),  cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_cors_methods_auth),      cmocka_unit_test(test_stop_mid_stream),
        cmocka_unit_test(test_stream_log_counts),      cmocka_unit_test(test_structured_output),
        cmocka_unit_test(test_tools_and_formats),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
