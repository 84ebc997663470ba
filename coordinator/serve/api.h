/*
 * api: the OpenAI-compatible request and response bodies, as JSON text.
 *
 * mc_api_parse() reads a /v1/chat/completions or /v1/completions body from
 * a buffer (parse(buf, len): tests/test_api.c and tests/fuzz/fuzz_api.c
 * feed it directly) and
 * checks every field the server uses: types, ranges, roles, the number of
 * stop strings; tools (toolcall.h), tool messages (role "tool" with
 * tool_call_id) and assistant messages' tool_calls and reasoning_content;
 * enable_thinking. Fields other servers accept too (top_k, min_p,
 * repeat_penalty, frequency/presence_penalty, seed, safe_prompt) work;
 * fields it does not use (user, logit_bias, ...) are ignored. A bad body
 * gets an OpenAI-style error (mc_api_error_t: status, type, param,
 * message) for the client.
 *
 * Every body is first checked as a whole (mc_api_begin, which the other
 * dialects' parsers, responses.h and ollama.h, share): one JSON object and
 * nothing after it, strict UTF-8, and no NUL character. cJSON's strings end
 * at a NUL, so a "\u0000" escape (or a raw NUL byte) would silently cut a
 * role, a message or a stop string; the tokenizer could carry the byte,
 * but nothing between the parser and it can, so such a body is refused
 * with a 400 that says why rather than cut.
 *
 * The builders write the answers: a whole completion, and the chunks of a
 * streamed one (server-sent events carry them as `data: {json}` lines),
 * with OpenAI's logprobs objects when the request asked for them.
 */
#ifndef MC_API_H
#define MC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "error.h"
#include "jsonschema.h"
#include "logprob.h"
#include "sampler.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "toolcall.h"

struct cJSON;

#define MC_API_MAX_MESSAGES 4096

#define MC_API_SPECULATE_OFF (-1)
#define MC_API_SPECULATE_ON (-2)
#define MC_API_SPECULATE_DEFAULT 8

typedef struct {
    int status;           // HTTP status: 400, 401, 404, 405, 413, 500, 503
    const char *type;     // "invalid_request_error", "authentication_error", "not_found_error", "server_error"
    char param[64];       // the field at fault ("messages[2].role"), "" for none
    char code[40];        // "context_length_exceeded", ... ; "" for none
    char message[MC_ERR_LEN];
} mc_api_error_t;

// Fill e (and return MC_ERR_ARG): printf-style message.
mc_err_t mc_api_error(mc_api_error_t *e, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

// {"error": {"message", "type", "param", "code"}}, malloc'd (NULL: no memory).
char *mc_api_error_json(const mc_api_error_t *e);

typedef struct {
    bool chat;                   // /v1/chat/completions (else /v1/completions)
    mc_chat_msg_t *msgs;         // chat: (n_msgs) contents owned by the request
    size_t n_msgs;
    const char *prompt;          // completions: the raw prompt (owned by the request)
    size_t prompt_len;
    uint32_t max_tokens;         // 0: not given
    mc_sampler_params_t sampling;
    bool seed_given;
    const char *stop[MC_SCHEDULER_MAX_STOP];
    uint32_t n_stop;
    bool stream, include_usage;
    bool safe_prompt;
    bool logprobs;               // each token's logprob in the answer
    uint32_t top_logprobs;       // and this many alternatives (<= MC_LOGPROB_MAX_TOP)
    bool store;                  // /v1/responses: keep the answer for later item references (items.h)
    mc_toolcall_req_t tools;     // chat: tools, tool_choice, parallel_tool_calls (toolcall.h)
    bool thinking;               // chat: enable_thinking (or chat_template_kwargs.enable_thinking); default true
    char effort[8];              // chat: reasoning_effort (or chat_template_kwargs.reasoning_effort): "low",
                                 // "medium" or "high" (gpt-oss's "Reasoning:"); "": not given
    // "speculative": 0 not given (the server's setting), MC_API_SPECULATE_OFF,
    // MC_API_SPECULATE_ON (the server's drafts, else MC_API_SPECULATE_DEFAULT
    // guesses), or K > 0: at most K guesses a step.
    int32_t speculate;
    // Structured output (response_format json_object / json_schema, the
    // Responses API's text.format, Ollama's format): the answer is one JSON
    // value, constrained while it is generated (constraint.h). schema: its
    // JSON Schema text, checked by the compiler (owned by the request);
    // NULL with json: any JSON object. compiled: what the compiler made of
    // it, kept for the generation (mc_constraint_params_t.compiled); owned
    // by the request (mc_api_request_free), NULL when schema is.
    bool json;
    const char *schema;
    size_t schema_len;
    mc_jschema_t *compiled;
    void *owned_;                // the parsed JSON (mc_api_request_free)
} mc_api_request_t;

// Parse body[0..len) (need not be NUL-terminated); sampling starts from
// defaults (the server's command line). *out is untouched on failure.
mc_err_t mc_api_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                      mc_api_request_t *out, mc_api_error_t *e);
void mc_api_request_free(mc_api_request_t *r);

// --- for the other dialects' parsers (responses.h, ollama.h) -------------------------

// Check body[0..len) as a whole (above) and parse it into r, which then
// owns the tree (*root); r->sampling starts from defaults. On failure r is
// left empty (nothing to free).
mc_err_t mc_api_begin(const char *body, size_t len, const mc_sampler_params_t *defaults, mc_api_request_t *r,
                      const struct cJSON **root, mc_api_error_t *e);
// len + 1 bytes that r owns (freed with it); NULL when out of memory.
char *mc_api_own(mc_api_request_t *r, size_t len);
// 400 invalid_request_error with a printf-style message.
mc_err_t mc_api_bad(mc_api_error_t *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Field `key` of obj as a number in [lo, hi], a whole number, a boolean;
// absent or null leaves *out (and *given) untouched. param names the field
// in errors (NULL: key).
mc_err_t mc_api_number(const struct cJSON *obj, const char *key, const char *param, double lo, double hi, double *out,
                       bool *given, mc_api_error_t *e);
mc_err_t mc_api_integer(const struct cJSON *obj, const char *key, const char *param, double lo, double hi, double *out,
                        bool *given, mc_api_error_t *e);
mc_err_t mc_api_bool(const struct cJSON *obj, const char *key, const char *param, bool *out, mc_api_error_t *e);
// The sampling fields of obj (temperature, top_p, min_p, top_k, seed,
// repeat_penalty, frequency_penalty, presence_penalty) into r; errors name
// prefix + the field ("options.").
mc_err_t mc_api_sampling(const struct cJSON *obj, const char *prefix, mc_api_request_t *r, mc_api_error_t *e);
// Stop strings from v (a string or an array of strings; null: none) into r.
mc_err_t mc_api_stop(const struct cJSON *v, const char *param, mc_api_request_t *r, mc_api_error_t *e);
// Structured output from a response_format-shaped object v: {"type":
// "text" | "json_object" | "json_schema"}, the schema taken from
// v.json_schema.schema (chat completions) or v.schema (the Responses API's
// flat text.format, flat true). The schema is compiled to check it: an
// unsupported keyword is a 400 naming it.
mc_err_t mc_api_response_format(const struct cJSON *v, const char *param, bool flat, mc_api_request_t *r,
                                mc_api_error_t *e);
// A schema (a JSON object, or true) for r: printed and compiled (both owned by r).
mc_err_t mc_api_schema(const struct cJSON *schema, const char *param, mc_api_request_t *r, mc_api_error_t *e);

// Which API a request came through, where their shapes differ.
typedef enum {
    MC_API_DIALECT_OPENAI, // chat completions
    MC_API_DIALECT_OLLAMA, // /api/chat
} mc_api_dialect_t;

// Message i's (m's) tool_calls into out->calls (out->role already set; only
// an assistant message may carry them), the arguments printed again as the
// templates print JSON, or kept as they are when they are not JSON. OpenAI
// sends {"id", "type": "function", "function": {"name", "arguments": "{...}"}}
// (a non-string id is refused); Ollama {"function": {"name", "arguments":
// {...}}} (arguments an object, text or null; an id kept when a string).
mc_err_t mc_api_msg_calls(const struct cJSON *m, size_t i, mc_api_dialect_t dialect, mc_api_request_t *r,
                          mc_chat_msg_t *out, mc_api_error_t *e);

// How many bytes of s to quote in a message, at most max, never cutting a
// UTF-8 character (error bodies must stay UTF-8).
int mc_api_quote_len(const char *s, size_t max);

// --- answers -----------------------------------------------------------------------------

// What the builders need to know about one answer.
typedef struct {
    bool chat;
    const char *id;      // "chatcmpl-..." / "cmpl-..."
    int64_t created;     // unix seconds
    const char *model;
    bool include_usage;  // a stream that asked for usage: every chunk has "usage": null, as OpenAI's do
    bool logprobs;       // the request asked for logprobs: the answer has them, from tok
    const mc_tokenizer_t *tok;
} mc_api_answer_t;

// What a generation gave (or a piece of it, for a chunk).
typedef struct {
    const char *text;          // len bytes, not NUL-terminated
    size_t len;
    mc_finish_t why;           // MC_FINISH_NONE for a chunk that does not end the answer
    uint32_t prompt_tokens, completion_tokens;
    const mc_logprob_t *lps;   // the tokens' logprobs (n_lps), when a->logprobs
    size_t n_lps;
    // chat: what reply.h split off the text
    const char *reasoning;     // reasoning_content (reasoning_len bytes); NULL: none
    size_t reasoning_len;
    const mc_toolcall_t *calls; // the tool calls (n_calls): content null when there is no text, finish "tool_calls"
    size_t n_calls;
    bool tool_calls;           // a chunk: the finish reason is "tool_calls"
} mc_api_result_t;

// A whole answer.
char *mc_api_completion_json(const mc_api_answer_t *a, const mc_api_result_t *res);

// One chunk of a streamed answer: with role (the first chunk of a chat),
// with text and its tokens' logprobs, or with the finish reason.
char *mc_api_chunk_json(const mc_api_answer_t *a, bool role, const mc_api_result_t *piece);

// A chunk of a streamed tool call, as OpenAI sends them: head, the call's
// index, id, type and name with empty arguments; else a piece of its
// arguments (args[0..len)) under its index.
char *mc_api_call_chunk_json(const mc_api_answer_t *a, uint32_t index, const mc_toolcall_t *call, bool head,
                             const char *args, size_t len);

// A chunk with a piece of reasoning_content.
char *mc_api_reasoning_chunk_json(const mc_api_answer_t *a, const char *text, size_t len);

// The last chunk of a stream that asked for usage: no choices, the counts.
char *mc_api_usage_chunk_json(const mc_api_answer_t *a, uint32_t prompt_tokens, uint32_t completion_tokens);

// "stop" for EOS and stop strings, "length" for limits (what clients know);
// "tool_calls" for an answer that is calls (result.n_calls or .tool_calls).
const char *mc_api_finish_reason(mc_finish_t why);

// A token's bytes as a JSON string value: invalid UTF-8 (a token may hold
// part of a character) as U+FFFD. NULL when out of memory.
struct cJSON *mc_api_token_string(const char *bytes, size_t len);

// OpenAI's chat logprob entries ({token, logprob, bytes, top_logprobs})
// for lps[0..n), as a JSON array (NULL when out of memory). The Responses
// API uses the same shape.
struct cJSON *mc_api_logprob_content(const mc_tokenizer_t *tok, const mc_logprob_t *lps, size_t n, bool with_top);

#endif
