/*
 * responses: OpenAI's Responses API (POST /v1/responses), the subset the
 * `openai` package's client.responses.create and the Vercel AI SDK's
 * default OpenAI provider use for text.
 *
 * mc_responses_parse() reads a body (parse(buf, len), like mc_api_parse)
 * into the server's common request (api.h) as a chat: `input` as a string
 * (one user message) or an array of items, `instructions` as a system
 * message in front, max_output_tokens, temperature, top_p (and the sampling
 * extras the chat endpoint takes), stream, and logprobs through
 * include: ["message.output_text.logprobs"] with top_logprobs. Message items
 * hold a string or input_text / output_text parts. Items are read through a
 * table of item types: function_call items are the assistant's calls (a run
 * of them, with the assistant's text just before, one chat assistant
 * message with tool_calls), function_call_output items their results (chat
 * tool messages). Function tools come flat ({"type": "function", "name",
 * "description", "parameters", "strict"}), with tool_choice ({"type":
 * "function", "name"} for a named one) and parallel_tool_calls
 * (toolcall.h: mc_toolcall_req_parse_flat). Structured output is
 * text.format. An item_reference to an earlier answer of this server (a
 * message's text, or a call by its "fc_" id) is read from the answers it
 * keeps (items.h; unless the request said store: false). previous_response_id,
 * conversation, background and other tool types get a 400 that says so.
 *
 * The builders write the response object (non-streamed, and inside the
 * lifecycle events) and each streamed event: response.created,
 * response.in_progress, response.output_item.added,
 * response.content_part.added, response.output_text.delta (text and its
 * tokens' logprobs), response.output_text.done, response.content_part.done,
 * response.output_item.done, then response.completed (or
 * response.incomplete when a token limit ended the text, with
 * incomplete_details.reason "max_output_tokens", or response.failed with
 * the error). The model's calls are function_call output items ("fc_" ids,
 * after the message, which is left out when there is no text and there are
 * calls); streamed, each is response.output_item.added (empty arguments),
 * response.function_call_arguments.delta, .done, response.output_item.done.
 */
#ifndef MC_RESPONSES_H
#define MC_RESPONSES_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "items.h"

// Parse body[0..len); sampling starts from defaults. out->chat is true
// (the input is a conversation). Item references are read from items (the
// answers kept; NULL: none). *out untouched on failure.
mc_err_t mc_responses_parse(const char *body, size_t len, const mc_sampler_params_t *defaults, mc_items_t *items,
                            mc_api_request_t *out, mc_api_error_t *e);

// What every response object of one answer repeats.
typedef struct {
    const char *id;             // "resp_..."
    const char *msg_id;         // "msg_...": the one output message
    int64_t created;            // unix seconds
    const char *model;
    float temperature, top_p;   // as the generation used them
    uint32_t max_output_tokens; // 0: none given
    bool logprobs;              // the output text carries its tokens' logprobs
    const mc_tokenizer_t *tok;  // for those
    bool store;                 // the answer is kept for item references
    const mc_toolcall_req_t *tools; // the request's tools (echoed in the response object); NULL: none
} mc_responses_answer_t;

// The whole response object for a finished generation (res: the whole
// text and all logprobs); err non-NULL: a failed one.
char *mc_responses_json(const mc_responses_answer_t *a, const mc_api_result_t *res, const char *err);

typedef enum {
    MC_RESPONSES_CREATED = 0,
    MC_RESPONSES_IN_PROGRESS,
    MC_RESPONSES_ITEM_ADDED,
    MC_RESPONSES_PART_ADDED,
    MC_RESPONSES_TEXT_DELTA, // res: the new text and its tokens' logprobs
    MC_RESPONSES_TEXT_DONE,  // from here on res is the whole answer
    MC_RESPONSES_PART_DONE,
    MC_RESPONSES_ITEM_DONE,
    MC_RESPONSES_END,        // response.completed, .incomplete, or .failed (err non-NULL)
    // A function call's events (mc_responses_call_event_json):
    MC_RESPONSES_CALL_ADDED,      // response.output_item.added: the item with empty arguments
    MC_RESPONSES_CALL_ARGS_DELTA, // response.function_call_arguments.delta: a piece of them
    MC_RESPONSES_CALL_ARGS_DONE,  // response.function_call_arguments.done: all of them
    MC_RESPONSES_CALL_DONE,       // response.output_item.done: the completed item
} mc_responses_event_t;

// One event's JSON with sequence number seq; *type: its "type" (the SSE
// event name). NULL when out of memory.
char *mc_responses_event_json(const mc_responses_answer_t *a, mc_responses_event_t ev, const mc_api_result_t *res,
                              const char *err, uint32_t seq, const char **type);

// A function call's event (ev: MC_RESPONSES_CALL_*) for call at output
// index output_index; delta[0..len): the piece of its arguments
// (MC_RESPONSES_CALL_ARGS_DELTA). NULL when out of memory.
char *mc_responses_call_event_json(const mc_responses_answer_t *a, mc_responses_event_t ev, uint32_t output_index,
                                   const mc_toolcall_t *call, const char *delta, size_t len, uint32_t seq,
                                   const char **type);

// Whether an answer's output has a message item: it has text, or no calls.
// The message is output 0, the calls follow it.
bool mc_responses_has_message(const mc_api_result_t *res);

#define MC_RESPONSES_ID_LEN 40
// The id of call c's function_call item: "fc_" and the call id's digits.
void mc_responses_call_item_id(const mc_toolcall_t *c, char out[MC_RESPONSES_ID_LEN]);
// Call c's completed function_call item as JSON text (what items.h keeps
// under its id). NULL when out of memory.
char *mc_responses_call_json(const mc_toolcall_t *c);

#endif
