/*
 * api: the OpenAI-compatible request and response bodies, as JSON text.
 *
 * mc_api_parse() reads a /v1/chat/completions or /v1/completions body from
 * a buffer (parse(buf, len): tests/test_api.c and tests/fuzz/fuzz_api.c
 * feed it directly) and
 * checks every field the server uses: types, ranges, roles, the number of
 * stop strings. Fields other servers accept too (top_k, min_p,
 * repeat_penalty, frequency/presence_penalty, seed, safe_prompt) work;
 * fields it does not use (user, logit_bias, ...) are ignored. A bad body
 * gets an OpenAI-style error (mc_api_error_t: status, type, param,
 * message) for the client.
 *
 * The builders write the answers: a whole completion, and the chunks of a
 * streamed one (server-sent events carry them as `data: {json}` lines).
 */
#ifndef MC_API_H
#define MC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "error.h"
#include "sampler.h"
#include "scheduler.h"

#define MC_API_MAX_MESSAGES 4096

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
    void *owned_;                // the parsed JSON (mc_api_request_free)
} mc_api_request_t;

// Parse body[0..len) (need not be NUL-terminated); sampling starts from
// defaults (the server's command line). *out is untouched on failure.
mc_err_t mc_api_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                      mc_api_request_t *out, mc_api_error_t *e);
void mc_api_request_free(mc_api_request_t *r);

// What the builders need to know about one answer.
typedef struct {
    bool chat;
    const char *id;      // "chatcmpl-..." / "cmpl-..."
    int64_t created;     // unix seconds
    const char *model;
} mc_api_answer_t;

// A whole answer: text (len bytes), finish reason, token counts.
char *mc_api_completion_json(const mc_api_answer_t *a, const char *text, size_t len, mc_finish_t why,
                             uint32_t prompt_tokens, uint32_t completion_tokens);

// One chunk of a streamed answer: with role (the first chunk of a chat),
// with text, or with the finish reason (text then empty).
char *mc_api_chunk_json(const mc_api_answer_t *a, bool role, const char *text, size_t len, mc_finish_t why);

// The last chunk of a stream that asked for usage: no choices, the counts.
char *mc_api_usage_chunk_json(const mc_api_answer_t *a, uint32_t prompt_tokens, uint32_t completion_tokens);

// "stop" for EOS and stop strings, "length" for limits (what clients know).
const char *mc_api_finish_reason(mc_finish_t why);

#endif
