/*
 * responses: the Responses API's request items into chat messages, and its
 * response object and stream events, with cJSON.
 */
#include "responses.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- the request -------------------------------------------------------------------------

// The conversation being read: r->msgs has room for every item and the
// instructions.
typedef struct {
    mc_api_request_t *r;
    size_t cap;
    mc_items_t *items;    // the answers kept (NULL: none)
    mc_chat_call_t *calls; // the last message's calls, while function_call items add to it
    size_t calls_cap;     // their room (0: the last message takes no more)
} s_input_t;

static mc_err_t s_push(s_input_t *in, mc_chat_role_t role, const char *text, size_t len, mc_api_error_t *e) {
    if (in->r->n_msgs == in->cap) return mc_api_bad(e, "input", "at most %d input items", MC_API_MAX_MESSAGES);
    in->r->msgs[in->r->n_msgs++] = (mc_chat_msg_t){.role = role, .content = text, .len = len};
    in->calls = NULL, in->calls_cap = 0;
    return MC_OK;
}

// A message's content: a string, or text parts (input_text; output_text in
// an assistant's earlier answer), joined.
static mc_err_t s_content(const cJSON *c, const char *param, s_input_t *in, const char **text, size_t *len,
                          mc_api_error_t *e) {
    if (cJSON_IsString(c)) {
        *text = c->valuestring, *len = strlen(c->valuestring);
        return MC_OK;
    }
    if (!cJSON_IsArray(c)) return mc_api_bad(e, param, "'%s' must be a string or an array of input_text parts", param);
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type))
            return mc_api_bad(e, param, "'%s' holds a part without a \"type\"", param);
        if (strcmp(type->valuestring, "input_text") && strcmp(type->valuestring, "output_text"))
            return mc_api_bad(e, param, "'%s' holds a part of type '%.*s': this model reads text only (input_text)",
                              param, mc_api_quote_len(type->valuestring, 40), type->valuestring);
        if (!cJSON_IsString(t)) return mc_api_bad(e, param, "a text part of '%s' needs a string \"text\"", param);
        total += strlen(t->valuestring);
    }
    char *joined = mc_api_own(in->r, total);
    if (!joined) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        const size_t l = strlen(t);
        memcpy(joined + at, t, l);
        at += l;
    }
    joined[at] = 0;
    *text = joined, *len = at;
    return MC_OK;
}

// {"type": "message" (or none), "role", "content"}.
static mc_err_t s_item_message(const cJSON *item, size_t i, s_input_t *in, mc_api_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "input[%zu].role", i);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
    if (!cJSON_IsString(role)) return mc_api_bad(e, param, "'%s' must be a string", param);
    // "developer" is what newer OpenAI clients call the system role.
    const char *name = !strcmp(role->valuestring, "developer") ? "system" : role->valuestring;
    mc_chat_role_t rl;
    if (!mc_chat_role_from_name(name, &rl) || rl == MC_CHAT_TOOL) // results come as function_call_output items
        return mc_api_bad(e, param, "'%s' is '%.*s': the roles are system, developer, user and assistant", param,
                          mc_api_quote_len(role->valuestring, 40), role->valuestring);
    snprintf(param, sizeof param, "input[%zu].content", i);
    const char *text = "";
    size_t len = 0;
    mc_err_t rc = s_content(cJSON_GetObjectItemCaseSensitive(item, "content"), param, in, &text, &len, e);
    return rc ? rc : s_push(in, rl, text, len, e);
}

// A copy of s that the request owns (NULL: no memory).
static const char *s_own(s_input_t *in, const char *s) {
    const size_t n = strlen(s);
    char *t = mc_api_own(in->r, n);
    if (t) memcpy(t, s, n + 1);
    return t;
}

static bool s_is_call(const cJSON *item) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type"), *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    if (!cJSON_IsString(type)) return false;
    if (!strcmp(type->valuestring, "function_call")) return true;
    return !strcmp(type->valuestring, "item_reference") && cJSON_IsString(id) && !strncmp(id->valuestring, "fc_", 3);
}

// {"type": "function_call", "call_id", "name", "arguments"}: a call the
// assistant made, as a chat assistant message's tool_calls. A run of them
// (and the assistant's text just before) is one assistant message. run: the
// item in the request, whose following items are looked at for the run's
// length (NULL: a kept item, counted with the items that follow ref).
static mc_err_t s_call(const cJSON *item, const cJSON *run, const char *param, s_input_t *in, mc_api_error_t *e) {
    const cJSON *call_id = cJSON_GetObjectItemCaseSensitive(item, "call_id");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(item, "arguments");
    if (!cJSON_IsString(call_id) || !cJSON_IsString(name) || !cJSON_IsString(args))
        return mc_api_bad(e, param, "'%s' (a function_call) needs strings \"call_id\", \"name\" and \"arguments\"", param);
    mc_api_request_t *r = in->r;
    mc_chat_msg_t *last = r->n_msgs ? &r->msgs[r->n_msgs - 1] : NULL;
    const bool extend = last && last->role == MC_CHAT_ASSISTANT && (in->calls_cap > last->n_calls || !last->n_calls);
    if (!extend || in->calls_cap <= last->n_calls) { // a new array: room for the whole run
        size_t n = 0;
        for (const cJSON *it = run; it && s_is_call(it); it = it->next) n++;
        if (n == 0) n = 1;
        mc_chat_call_t *cs = (mc_chat_call_t *)(void *)mc_api_own(r, n * sizeof *cs);
        if (!cs) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        if (!extend) {
            mc_err_t rc = s_push(in, MC_CHAT_ASSISTANT, "", 0, e);
            if (rc) return rc;
            last = &r->msgs[r->n_msgs - 1];
        }
        in->calls = cs, in->calls_cap = n;
        last->calls = cs;
    }
    // The arguments as the templates print JSON (kept as they are when they are not JSON).
    cJSON *parsed = cJSON_Parse(args->valuestring);
    char *printed = cJSON_IsObject(parsed) ? mc_toolcall_print(parsed) : NULL;
    cJSON_Delete(parsed);
    const char *a = s_own(in, printed ? printed : args->valuestring);
    free(printed);
    const char *id = s_own(in, call_id->valuestring), *nm = s_own(in, name->valuestring);
    if (!a || !id || !nm) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    in->calls[last->n_calls++] = (mc_chat_call_t){id, nm, a};
    return MC_OK;
}

static mc_err_t s_item_call(const cJSON *item, size_t i, s_input_t *in, mc_api_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "input[%zu]", i);
    return s_call(item, item, param, in, e);
}

// {"type": "function_call_output", "call_id", "output"}: a call's result,
// as a chat tool message.
static mc_err_t s_item_output(const cJSON *item, size_t i, s_input_t *in, mc_api_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "input[%zu].call_id", i);
    const cJSON *call_id = cJSON_GetObjectItemCaseSensitive(item, "call_id");
    if (!cJSON_IsString(call_id))
        return mc_api_bad(e, param, "'%s' must be the call_id (a string) of the call this output answers", param);
    snprintf(param, sizeof param, "input[%zu].output", i);
    const char *text = "";
    size_t len = 0;
    mc_err_t rc = s_content(cJSON_GetObjectItemCaseSensitive(item, "output"), param, in, &text, &len, e);
    if (!rc) rc = s_push(in, MC_CHAT_TOOL, text, len, e);
    if (!rc) in->r->msgs[in->r->n_msgs - 1].tool_call_id = call_id->valuestring;
    return rc;
}

// {"type": "item_reference", "id"}: an earlier answer this server keeps.
static mc_err_t s_item_reference(const cJSON *item, const char *param, s_input_t *in, mc_api_error_t *e) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    if (!cJSON_IsString(id)) return mc_api_bad(e, param, "'%s' (an item_reference) needs a string \"id\"", param);
    size_t len = 0;
    char *kept = in->items ? mc_items_get(in->items, id->valuestring, &len) : NULL;
    if (!kept)
        return mc_api_bad(e, param,
                          "'%s' refers to '%.*s', an answer this server does not keep (it keeps recent answers in memory "
                          "only): send the item itself (with the AI SDK: providerOptions.openai.store = false)",
                          param, mc_api_quote_len(id->valuestring, 64), id->valuestring);
    if (!strncmp(id->valuestring, "fc_", 3)) { // a call: kept as its function_call item
        cJSON *call = cJSON_Parse(kept);
        free(kept);
        if (!call) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        mc_err_t rc = s_call(call, item, param, in, e);
        cJSON_Delete(call);
        return rc;
    }
    char *text = mc_api_own(in->r, len);
    if (text) memcpy(text, kept, len + 1);
    free(kept);
    if (!text) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    return s_push(in, MC_CHAT_ASSISTANT, text, len, e);
}

typedef mc_err_t (*s_item_fn)(const cJSON *item, size_t i, s_input_t *in, mc_api_error_t *e);

// The item types read.
static const struct {
    const char *type;
    s_item_fn fn;
} s_items[] = {
    {"message", s_item_message},
    {"function_call", s_item_call},
    {"function_call_output", s_item_output},
};

static mc_err_t s_item(const cJSON *item, size_t i, s_input_t *in, mc_api_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "input[%zu]", i);
    if (!cJSON_IsObject(item)) return mc_api_bad(e, param, "'%s' must be an object (an input item)", param);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
    if (type && !cJSON_IsString(type)) return mc_api_bad(e, param, "'%s.type' must be a string", param);
    const char *t = type ? type->valuestring : "message"; // a bare {role, content} is a message
    for (size_t k = 0; k < sizeof s_items / sizeof s_items[0]; k++)
        if (!strcmp(t, s_items[k].type)) return s_items[k].fn(item, i, in, e);
    if (!strcmp(t, "item_reference")) return s_item_reference(item, param, in, e);
    return mc_api_bad(e, param,
                      "'%s' has type '%.*s': this server reads message, function_call, function_call_output and "
                      "item_reference items", param,
                      mc_api_quote_len(t, 40), t);
}

// Function tools, tool_choice, parallel_tool_calls in the flat shapes (toolcall.h).
static mc_err_t s_tools(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    char param[64] = "", err[MC_ERR_LEN];
    mc_err_t rc = mc_toolcall_req_parse_flat(root, &r->tools, param, err);
    if (rc == MC_ERR_ARG) return mc_api_bad(e, param, "%s", err);
    if (rc) return mc_api_error(e, 500, "server_error", NULL, NULL, "%s", err);
    return MC_OK;
}

// text: {"format": {"type": "text"}} (what clients send by default), or
// structured output: {"type": "json_object"} or {"type": "json_schema",
// "name", "schema", "strict"} (the flat form of chat's response_format).
static mc_err_t s_text_format(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (!text || cJSON_IsNull(text)) return MC_OK;
    if (!cJSON_IsObject(text)) return mc_api_bad(e, "text", "'text' must be an object");
    return mc_api_response_format(cJSON_GetObjectItemCaseSensitive(text, "format"), "text.format", true, r, e);
}

// include: the strings OpenAI knows; only the output text's logprobs mean
// anything here.
static mc_err_t s_include(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *inc = cJSON_GetObjectItemCaseSensitive(root, "include");
    if (inc && !cJSON_IsNull(inc) && !cJSON_IsArray(inc))
        return mc_api_bad(e, "include", "'include' must be an array of strings");
    const cJSON *it, *list = cJSON_IsArray(inc) ? inc : NULL;
    cJSON_ArrayForEach(it, list) {
        if (!cJSON_IsString(it)) return mc_api_bad(e, "include", "'include' must be an array of strings");
        if (!strcmp(it->valuestring, "message.output_text.logprobs")) r->logprobs = true;
    }
    double v = 0;
    bool given = false;
    mc_err_t rc = mc_api_integer(root, "top_logprobs", NULL, 0, MC_LOGPROB_MAX_TOP, &v, &given, e);
    if (rc) return rc;
    if (given) r->top_logprobs = (uint32_t)v;
    return MC_OK;
}

// Fields this server cannot honour: refused rather than ignored.
static mc_err_t s_refused(const cJSON *root, mc_api_error_t *e) {
    static const struct {
        const char *key, *why;
    } no[] = {
        {"previous_response_id", "this server stores no responses: send the whole conversation as 'input'"},
        {"conversation", "this server keeps no conversations: send the whole conversation as 'input'"},
        {"prompt", "this server has no stored prompts: send 'input'"},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, no[i].key);
        if (v && !cJSON_IsNull(v)) return mc_api_bad(e, no[i].key, "'%s' is not supported: %s", no[i].key, no[i].why);
    }
    const cJSON *bg = cJSON_GetObjectItemCaseSensitive(root, "background");
    if (cJSON_IsTrue(bg)) return mc_api_bad(e, "background", "'background' is not supported: this server answers at once");
    return MC_OK;
}

static mc_err_t s_fields(const cJSON *root, mc_items_t *items, mc_api_request_t *r, mc_api_error_t *e) {
    mc_err_t rc;
    if ((rc = s_refused(root, e)) || (rc = s_tools(root, r, e)) || (rc = s_text_format(root, r, e)) ||
        (rc = s_include(root, r, e)))
        return rc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsString(model) && !cJSON_IsNull(model)) return mc_api_bad(e, "model", "'model' must be a string");
    const cJSON *instr = cJSON_GetObjectItemCaseSensitive(root, "instructions");
    if (instr && !cJSON_IsNull(instr) && !cJSON_IsString(instr))
        return mc_api_bad(e, "instructions", "'instructions' must be a string");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!input || cJSON_IsNull(input)) return mc_api_bad(e, "input", "'input' is required");
    if (!cJSON_IsString(input) && !cJSON_IsArray(input))
        return mc_api_bad(e, "input", "'input' must be a string or an array of input items");
    const size_t n_items = cJSON_IsArray(input) ? (size_t)cJSON_GetArraySize(input) : 1;
    if (n_items == 0) return mc_api_bad(e, "input", "'input' must not be empty");
    if (n_items > MC_API_MAX_MESSAGES) return mc_api_bad(e, "input", "at most %d input items", MC_API_MAX_MESSAGES);
    s_input_t in = {r, n_items + 1, items, NULL, 0};
    if (!(r->msgs = calloc(in.cap, sizeof *r->msgs)))
        return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    if (cJSON_IsString(instr) && instr->valuestring[0] &&
        (rc = s_push(&in, MC_CHAT_SYSTEM, instr->valuestring, strlen(instr->valuestring), e)))
        return rc;
    if (cJSON_IsString(input)) {
        if ((rc = s_push(&in, MC_CHAT_USER, input->valuestring, strlen(input->valuestring), e))) return rc;
    } else {
        size_t i = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, input) {
            if ((rc = s_item(item, i++, &in, e))) return rc;
        }
    }
    double v = 0;
    bool given = false;
    if ((rc = mc_api_integer(root, "max_output_tokens", NULL, 1, 1e9, &v, &given, e))) return rc;
    if (given) r->max_tokens = (uint32_t)v;
    r->store = true; // OpenAI's default
    if ((rc = mc_api_sampling(root, "", r, e)) || (rc = mc_api_bool(root, "stream", NULL, &r->stream, e)) ||
        (rc = mc_api_bool(root, "store", NULL, &r->store, e)))
        return rc;
    return MC_OK;
}

mc_err_t mc_responses_parse(const char *body, size_t len, const mc_sampler_params_t *defaults, mc_items_t *items,
                            mc_api_request_t *out, mc_api_error_t *e) {
    mc_api_request_t r;
    const cJSON *root;
    mc_err_t rc = mc_api_begin(body, len, defaults, &r, &root, e);
    if (rc) return rc;
    r.chat = true;
    if ((rc = s_fields(root, items, &r, e))) {
        mc_api_request_free(&r);
        return rc;
    }
    *out = r;
    return MC_OK;
}

// --- the answer ----------------------------------------------------------------------------

static char *s_print(cJSON *root) {
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

// text as a JSON string (a NUL byte, which the model can write, as U+FFFD).
static cJSON *s_text(const char *text, size_t len) {
    char *buf = malloc(3 * len + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i]) buf[o++] = text[i];
        else memcpy(buf + o, "\xEF\xBF\xBD", 3), o += 3;
    }
    buf[o] = 0;
    cJSON *s = cJSON_CreateString(buf);
    free(buf);
    return s;
}

// A float parameter as the client wrote it (0.95, not 0.949999988...).
static double s_round(float v) {
    char b[32];
    snprintf(b, sizeof b, "%.6g", (double)v);
    return strtod(b, NULL);
}

// The output_text part (whole, or the empty one a stream opens with).
static cJSON *s_part(const mc_responses_answer_t *a, const mc_api_result_t *res) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddItemToObject(p, "text", s_text(res ? res->text : "", res ? res->len : 0));
    cJSON_AddArrayToObject(p, "annotations");
    if (a->logprobs && res) cJSON_AddItemToObject(p, "logprobs", mc_api_logprob_content(a->tok, res->lps, res->n_lps, true));
    else cJSON_AddArrayToObject(p, "logprobs");
    return p;
}

// The output message; res NULL: the empty one in progress.
static cJSON *s_message(const mc_responses_answer_t *a, const mc_api_result_t *res) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", a->msg_id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "status", !res ? "in_progress" : res->why == MC_FINISH_LENGTH ? "incomplete" : "completed");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (res) cJSON_AddItemToArray(content, s_part(a, res));
    return m;
}

// The id of the function_call item of call c: "fc_" and the call id's digits.
void mc_responses_call_item_id(const mc_toolcall_t *c, char out[MC_RESPONSES_ID_LEN]) {
    const char *digits = strncmp(c->id, "call_", 5) ? c->id : c->id + 5;
    snprintf(out, MC_RESPONSES_ID_LEN, "fc_%s", digits);
}

// A function_call item: done, or in progress with empty arguments.
static cJSON *s_call_item(const mc_toolcall_t *c, bool done) {
    char id[MC_RESPONSES_ID_LEN];
    mc_responses_call_item_id(c, id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "type", "function_call");
    cJSON_AddStringToObject(o, "status", done ? "completed" : "in_progress");
    cJSON_AddStringToObject(o, "arguments", done ? c->arguments : "");
    cJSON_AddStringToObject(o, "call_id", c->id);
    cJSON_AddStringToObject(o, "name", c->name);
    return o;
}

char *mc_responses_call_json(const mc_toolcall_t *c) { return s_print(s_call_item(c, true)); }

bool mc_responses_has_message(const mc_api_result_t *res) { return res->len > 0 || res->n_calls == 0; }

// The request's tools as the response object repeats them (flat), and its tool_choice.
static void s_echo_tools(const mc_responses_answer_t *a, cJSON *o) {
    const mc_toolcall_req_t *t = a->tools;
    cJSON *tools = cJSON_CreateArray();
    for (size_t i = 0; t && i < t->n_tools; i++) {
        cJSON *nested = cJSON_Parse(t->tools[i].json);
        cJSON *fn = cJSON_DetachItemFromObjectCaseSensitive(nested, "function");
        cJSON_Delete(nested);
        if (!fn) continue;
        cJSON *flat = cJSON_CreateObject();
        cJSON_AddStringToObject(flat, "type", "function");
        cJSON *f = fn->child;
        while (f) {
            cJSON *next = f->next;
            cJSON_AddItemToObject(flat, f->string, cJSON_DetachItemViaPointer(fn, f));
            f = next;
        }
        cJSON_Delete(fn);
        cJSON_AddItemToArray(tools, flat);
    }
    if (t && t->choice == MC_TOOL_CHOICE_NAMED) {
        cJSON *c = cJSON_AddObjectToObject(o, "tool_choice");
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddStringToObject(c, "name", t->forced);
    } else {
        cJSON_AddStringToObject(o, "tool_choice", !t || t->choice == MC_TOOL_CHOICE_AUTO ? "auto"
                                                  : t->choice == MC_TOOL_CHOICE_NONE    ? "none"
                                                                                        : "required");
    }
    cJSON_AddItemToObject(o, "tools", tools);
}

// The response object: in progress (res NULL), finished, or failed (err).
static cJSON *s_response(const mc_responses_answer_t *a, const mc_api_result_t *res, const char *err) {
    cJSON *o = cJSON_CreateObject();
    const bool incomplete = res && !err && res->why == MC_FINISH_LENGTH;
    cJSON_AddStringToObject(o, "id", a->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)a->created);
    cJSON_AddStringToObject(o, "status", err ? "failed" : !res ? "in_progress" : incomplete ? "incomplete" : "completed");
    cJSON_AddFalseToObject(o, "background");
    if (err) {
        cJSON *er = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(er, "code", "server_error");
        cJSON_AddStringToObject(er, "message", err);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    if (incomplete) cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "incomplete_details"), "reason", "max_output_tokens");
    else cJSON_AddNullToObject(o, "incomplete_details");
    cJSON_AddNullToObject(o, "instructions");
    if (a->max_output_tokens) cJSON_AddNumberToObject(o, "max_output_tokens", a->max_output_tokens);
    else cJSON_AddNullToObject(o, "max_output_tokens");
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON *output = cJSON_AddArrayToObject(o, "output");
    if (res && !err) {
        if (mc_responses_has_message(res)) cJSON_AddItemToArray(output, s_message(a, res));
        for (size_t i = 0; i < res->n_calls; i++) cJSON_AddItemToArray(output, s_call_item(&res->calls[i], true));
    }
    cJSON_AddBoolToObject(o, "parallel_tool_calls", !a->tools || a->tools->parallel);
    cJSON_AddNullToObject(o, "previous_response_id");
    cJSON *reasoning = cJSON_AddObjectToObject(o, "reasoning");
    cJSON_AddNullToObject(reasoning, "effort");
    cJSON_AddNullToObject(reasoning, "summary");
    cJSON_AddBoolToObject(o, "store", a->store);
    cJSON_AddNumberToObject(o, "temperature", s_round(a->temperature));
    cJSON_AddStringToObject(cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, "text"), "format"), "type", "text");
    s_echo_tools(a, o);
    cJSON_AddNumberToObject(o, "top_p", s_round(a->top_p));
    cJSON_AddStringToObject(o, "truncation", "disabled");
    if (res) {
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        cJSON_AddNumberToObject(u, "input_tokens", res->prompt_tokens);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "input_tokens_details"), "cached_tokens", 0);
        cJSON_AddNumberToObject(u, "output_tokens", res->completion_tokens);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "output_tokens_details"), "reasoning_tokens", 0);
        cJSON_AddNumberToObject(u, "total_tokens", (double)res->prompt_tokens + res->completion_tokens);
    } else {
        cJSON_AddNullToObject(o, "usage");
    }
    cJSON_AddNullToObject(o, "user");
    cJSON_AddObjectToObject(o, "metadata");
    return o;
}

char *mc_responses_json(const mc_responses_answer_t *a, const mc_api_result_t *res, const char *err) {
    return s_print(s_response(a, res, err));
}

char *mc_responses_event_json(const mc_responses_answer_t *a, mc_responses_event_t ev, const mc_api_result_t *res,
                              const char *err, uint32_t seq, const char **type) {
    static const char *const names[] = {
        "response.created",          "response.in_progress",      "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
    };
    const char *t = ev < MC_RESPONSES_END  ? names[ev]
                    : err                  ? "response.failed"
                    : res->why == MC_FINISH_LENGTH ? "response.incomplete"
                                           : "response.completed";
    *type = t;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", t);
    cJSON_AddNumberToObject(o, "sequence_number", seq);
    switch (ev) {
    case MC_RESPONSES_CREATED:
    case MC_RESPONSES_IN_PROGRESS: cJSON_AddItemToObject(o, "response", s_response(a, NULL, NULL)); break;
    case MC_RESPONSES_ITEM_ADDED:
    case MC_RESPONSES_ITEM_DONE:
        cJSON_AddNumberToObject(o, "output_index", 0);
        cJSON_AddItemToObject(o, "item", s_message(a, ev == MC_RESPONSES_ITEM_DONE ? res : NULL));
        break;
    case MC_RESPONSES_PART_ADDED:
    case MC_RESPONSES_PART_DONE:
    case MC_RESPONSES_TEXT_DELTA:
    case MC_RESPONSES_TEXT_DONE:
        cJSON_AddStringToObject(o, "item_id", a->msg_id);
        cJSON_AddNumberToObject(o, "output_index", 0);
        cJSON_AddNumberToObject(o, "content_index", 0);
        if (ev == MC_RESPONSES_PART_ADDED || ev == MC_RESPONSES_PART_DONE) {
            cJSON_AddItemToObject(o, "part", s_part(a, ev == MC_RESPONSES_PART_DONE ? res : NULL));
            break;
        }
        cJSON_AddItemToObject(o, ev == MC_RESPONSES_TEXT_DELTA ? "delta" : "text", s_text(res->text, res->len));
        if (a->logprobs) cJSON_AddItemToObject(o, "logprobs", mc_api_logprob_content(a->tok, res->lps, res->n_lps, true));
        else cJSON_AddArrayToObject(o, "logprobs");
        break;
    default: cJSON_AddItemToObject(o, "response", s_response(a, res, err)); break; // MC_RESPONSES_END
    }
    return s_print(o);
}

char *mc_responses_call_event_json(const mc_responses_answer_t *a, mc_responses_event_t ev, uint32_t output_index,
                                   const mc_toolcall_t *call, const char *delta, size_t len, uint32_t seq,
                                   const char **type) {
    (void)a;
    const char *t = ev == MC_RESPONSES_CALL_ADDED       ? "response.output_item.added"
                    : ev == MC_RESPONSES_CALL_ARGS_DELTA ? "response.function_call_arguments.delta"
                    : ev == MC_RESPONSES_CALL_ARGS_DONE  ? "response.function_call_arguments.done"
                                                         : "response.output_item.done";
    *type = t;
    char id[MC_RESPONSES_ID_LEN];
    mc_responses_call_item_id(call, id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", t);
    cJSON_AddNumberToObject(o, "sequence_number", seq);
    cJSON_AddNumberToObject(o, "output_index", output_index);
    switch (ev) {
    case MC_RESPONSES_CALL_ADDED:
    case MC_RESPONSES_CALL_DONE: cJSON_AddItemToObject(o, "item", s_call_item(call, ev == MC_RESPONSES_CALL_DONE)); break;
    case MC_RESPONSES_CALL_ARGS_DELTA:
        cJSON_AddStringToObject(o, "item_id", id);
        cJSON_AddItemToObject(o, "delta", s_text(delta, len));
        break;
    default:
        cJSON_AddStringToObject(o, "item_id", id);
        cJSON_AddStringToObject(o, "name", call->name);
        cJSON_AddStringToObject(o, "arguments", call->arguments);
        break;
    }
    return s_print(o);
}
