/*
 * ollama: Ollama's native API, so Ollama clients (the `ollama` npm package,
 * apps built for Ollama) work unchanged against this server:
 *
 *   GET  /api/version     {"version"}
 *   GET  /api/tags        the one model, with its size, digest and details
 *   POST /api/show        the model's details and model_info
 *   POST /api/chat        messages -> a message; NDJSON lines when streamed
 *   POST /api/generate    a prompt (chat-formatted as one user turn, with
 *                         `system` in front, or as it is with raw: true)
 *
 * mc_ollama_parse() reads a chat or generate body (parse(buf, len)) into
 * the server's common request (api.h). As in Ollama, stream defaults to
 * true; options takes temperature, top_p, top_k, min_p, seed, num_predict
 * (-1 or -2: until the context is full), stop, repeat_penalty,
 * repeat_last_n, frequency_penalty and presence_penalty, and ignores the
 * rest (num_ctx, num_gpu, ...: the server's command line decides those).
 * An empty conversation (or prompt) only "loads" the model: the answer is
 * done at once with done_reason "load". format is structured output
 * ("json" or a JSON Schema, constrained). /api/chat takes tools (OpenAI's
 * function tools, as Ollama does; toolcall.h), assistant messages'
 * tool_calls ({"function": {"name", "arguments": {...}}}) and tool
 * messages ({"role": "tool", "content"}); the model's calls come back as
 * message.tool_calls with their arguments as objects. Images, think,
 * suffix and context get a 400 that says they are not supported.
 *
 * The builders write the lines: each streamed piece ({model, created_at,
 * message | response, done: false}), a streamed answer's calls (a line of
 * their own before the last, as Ollama sends them), the last one (done: true, done_reason,
 * prompt_eval_count, eval_count and the durations in nanoseconds) and
 * errors ({"error": message}), which Ollama sends with the HTTP status, or
 * as a line of its own when a stream has begun.
 */
#ifndef MC_OLLAMA_H
#define MC_OLLAMA_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"

// Parse a /api/chat (chat) or /api/generate body; sampling starts from
// defaults. *load_only: the body asks for no answer (no messages, empty
// prompt). out->chat: the prompt is a conversation (else raw text).
mc_err_t mc_ollama_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                         mc_api_request_t *out, bool *load_only, mc_api_error_t *e);

typedef struct {
    bool chat;         // /api/chat: a "message"; /api/generate: a "response"
    const char *model;
} mc_ollama_answer_t;

// One streamed piece of text (done: false).
char *mc_ollama_chunk_json(const mc_ollama_answer_t *a, const char *text, size_t len);

// A streamed answer's calls: a line whose message has empty content and tool_calls.
char *mc_ollama_calls_json(const mc_ollama_answer_t *a, const mc_toolcall_t *calls, size_t n);

// The last line of a stream (res->len 0) or the whole answer (its calls in
// message.tool_calls, when res has any): done: true,
// done_reason ("stop", "length"; "load" for MC_FINISH_NONE), the counts and
// durations (u: the generation's times; total_s: the request's).
char *mc_ollama_final_json(const mc_ollama_answer_t *a, const mc_api_result_t *res, const mc_gen_usage_t *u,
                           double total_s);

// {"error": message}.
char *mc_ollama_error_json(const char *message);

// What /api/tags and /api/show say about the model.
typedef struct {
    const char *name;          // the model id (the server's)
    uint64_t size;             // bytes of the file
    uint64_t fingerprint;      // mc_model_fingerprint: the digest
    int64_t modified;          // unix seconds
    const char *family;        // general.architecture
    uint64_t parameters;
    const char *quantization;  // the attention weights' type ("Q4_0")
    uint32_t context_length;   // the server's context
    uint32_t embedding_length;
    uint32_t n_layer, n_expert, n_expert_used;
} mc_ollama_model_t;

char *mc_ollama_version_json(void);
char *mc_ollama_tags_json(const mc_ollama_model_t *m);
char *mc_ollama_show_json(const mc_ollama_model_t *m);

// The model a /api/show body names ("model", or the older "name") into
// name[cap].
mc_err_t mc_ollama_show_parse(const char *body, size_t len, char *name, size_t cap, mc_api_error_t *e);

// Whether name (as a client writes it: "id" or "id:latest") is the model.
bool mc_ollama_name_is(const mc_ollama_model_t *m, const char *name);

#endif
