/*
 * toolcall: OpenAI function tools on the way in and out.
 *
 * In: a request's `tools` (function tools: name, description, parameters),
 * `tool_choice` ("auto", "none", "required" or {"type": "function",
 * "function": {"name": ...}}) and `parallel_tool_calls`, checked and kept
 * (mc_toolcall_req_parse), each tool printed as the chat templates print
 * JSON (mc_toolcall_print: Python's json.dumps, ", " and ": ") for chat.h
 * to put in the prompt in the model's own format.
 *
 * Out: the calls the model wrote (mc_toolcall_parse), from its format's
 * marker on: "<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>"
 * blocks (qwen3, chatml and the text convention of formats without tool
 * tokens), mistral-v3's [TOOL_CALLS] and a JSON array, deepseek-v3's
 * <｜tool▁calls▁begin｜> (<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
 * "\n```json\n" {...} "\n```" <｜tool▁call▁end｜>)... <｜tool▁calls▁end｜>, or
 * glm4's "<tool_call>NAME" (<arg_key>K</arg_key> <arg_value>V</arg_value>)...
 * "</tool_call>" blocks, a value read as its text when the tool's schema
 * types the parameter as a string, else as the JSON it is (its text when it
 * is not JSON). A call must name
 * one of the request's tools (the named one when tool_choice names one)
 * and carry an object of arguments; anything else, or text that is not
 * whole JSON, is malformed and the caller keeps the text as content: an
 * answer is never reported as a call it is not. Ids are "call_" and 24 hex
 * digits, a hash of the request's id and the call's index (the same
 * request id gives the same ids).
 *
 * Forced calls (tool_choice "required" or a named function): the
 * constraint that makes the output a call, as literal prefix text, the
 * JSON schema of what follows and literal suffix text
 * (mc_toolcall_constraint), which the server hands to constrained
 * decoding (gen/constraint.h), so the answer is a call whose arguments
 * follow the tool's parameters schema. deepseek-v3 writes the name outside
 * the JSON, so only a known function can be forced (a named one, or
 * "required" with one tool); glm4's arguments are not one JSON value, so
 * its calls cannot be forced (MC_ERR_UNSUPPORTED, a 400 for the client).
 */
#ifndef MC_TOOLCALL_H
#define MC_TOOLCALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "error.h"

struct cJSON;

#define MC_TOOLCALL_MAX_TOOLS 128

typedef enum {
    MC_TOOL_CHOICE_AUTO = 0, // the model decides (the default with tools)
    MC_TOOL_CHOICE_NONE,     // no call: the tools are left out of the prompt
    MC_TOOL_CHOICE_REQUIRED, // some call
    MC_TOOL_CHOICE_NAMED,    // a call of `forced`
} mc_tool_choice_t;

typedef struct {
    char *name;   // [A-Za-z0-9_-], 1..64 characters
    char *params; // its parameters' JSON schema as printed (mc_toolcall_print); NULL: none given
    char *json;   // the whole tool ({"type": "function", "function": {...}}) as printed
} mc_toolcall_tool_t;

typedef struct {
    mc_toolcall_tool_t *tools;
    size_t n_tools;
    mc_tool_choice_t choice;
    char *forced;  // MC_TOOL_CHOICE_NAMED: the function's name
    bool parallel; // parallel_tool_calls (default true): more than one call may come back
} mc_toolcall_req_t;

// tools, tool_choice and parallel_tool_calls of a request body (root) into
// *out (which then owns its strings; empty when there are none). On
// failure MC_ERR_ARG, the message in err and the field at fault in param
// (64 bytes), *out empty.
mc_err_t mc_toolcall_req_parse(const struct cJSON *root, mc_toolcall_req_t *out, char *param, char *err);
// The same in the Responses API's flat shapes: tools {"type": "function",
// "name", "description", "parameters", "strict"} (json: the nested form
// the templates print) and tool_choice {"type": "function", "name"}.
mc_err_t mc_toolcall_req_parse_flat(const struct cJSON *root, mc_toolcall_req_t *out, char *param, char *err);
void mc_toolcall_req_free(mc_toolcall_req_t *t);

// Whether calls are looked for: tools given and tool_choice not "none".
bool mc_toolcall_active(const mc_toolcall_req_t *t);

// v as Python's json.dumps prints it (what `tojson` writes in the chat
// templates): ", " and ": " between items, non-ASCII as is, integers
// without a fraction. malloc'd; NULL when out of memory.
char *mc_toolcall_print(const struct cJSON *v);

// One call the model made.
typedef struct {
    char id[32];     // "call_" + 24 hex digits
    char *name;
    char *arguments; // JSON text of an object (compact)
} mc_toolcall_t;

typedef struct {
    mc_toolcall_t *calls;
    size_t n;
} mc_toolcall_list_t;

// The marker that opens the calls of a format: "[TOOL_CALLS]" (mistral-v3,
// whose control token the server writes into the text as this),
// "<｜tool▁calls▁begin｜>" (deepseek-v3) or "<tool_call>".
const char *mc_toolcall_marker(mc_chat_style_t style);

// The names of the tokens a format's calls are written with ([TOOL_CALLS];
// DeepSeek's five call markers; GLM's <tool_call>, </tool_call>, <arg_key>,
// </arg_key>, <arg_value>, </arg_value>): a vocabulary may have them as
// control tokens, which decode to no text, so the server writes their names
// where the model generates them. *names: static; returns how many (0: none).
size_t mc_toolcall_marker_tokens(mc_chat_style_t style, const char *const **names);

// The calls in text[0..len), which starts at the marker: MC_OK with the
// calls in *out (at least one; only the first unless req->parallel), or
// MC_ERR_FORMAT (out empty) when the text is not calls as above. id_seed
// (the request's id) makes the ids.
mc_err_t mc_toolcall_parse(mc_chat_style_t style, const char *text, size_t len, const mc_toolcall_req_t *req,
                           const char *id_seed, mc_toolcall_list_t *out, char *err);
void mc_toolcall_list_free(mc_toolcall_list_t *l);

// What constrained decoding must produce for a forced call: prefix, then
// JSON text valid against schema, then suffix (all malloc'd, NUL-terminated).
// prefix_token: the prefix is the format's control token of that name
// ([TOOL_CALLS]), to be forced by id rather than spelled.
typedef struct {
    char *prefix;
    char *schema;
    char *suffix;
    bool prefix_token;
} mc_toolcall_constraint_t;

// The constraint of t's forced call in style's format: qwen3, chatml and
// the text formats: "<tool_call>\n", {"type": "object", "properties":
// {"name": {"const": NAME}, "arguments": PARAMETERS}, "required": ["name",
// "arguments"], "additionalProperties": false} (an anyOf of those for
// "required" with several tools), "\n</tool_call>"; mistral-v3:
// [TOOL_CALLS], an array of those (minItems 1; maxItems 1 without
// parallel calls), "". deepseek-v3: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>
// function<｜tool▁sep｜>NAME\n```json\n", the parameters schema,
// "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>" (MC_ERR_UNSUPPORTED for
// "required" with several tools); glm4: MC_ERR_UNSUPPORTED. *forced false
// (out zeroed) when t forces nothing.
mc_err_t mc_toolcall_constraint(const mc_toolcall_req_t *t, mc_chat_style_t style, bool *forced,
                                mc_toolcall_constraint_t *out, char *err);
void mc_toolcall_constraint_free(mc_toolcall_constraint_t *c);

#endif
