/*
 * api: OpenAI request validation and response JSON, with cJSON.
 */
#include "api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

// The parsed body and what the request owns beside it.
typedef struct {
    cJSON *root;
    char **texts; // message contents made of several parts
    size_t n_texts;
} s_owned_t;

mc_err_t mc_api_error(mc_api_error_t *e, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...) {
    e->status = status;
    e->type = type;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return MC_ERR_ARG;
}

static char *s_print(cJSON *root) {
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

char *mc_api_error_json(const mc_api_error_t *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type);
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code[0]) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    return s_print(root);
}

mc_err_t mc_api_bad(mc_api_error_t *e, const char *param, const char *fmt, ...) {
    char msg[MC_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mc_api_error(e, 400, "invalid_request_error", param, NULL, "%s", msg);
}

#define s_bad mc_api_bad

mc_err_t mc_api_number(const cJSON *root, const char *key, const char *param, double lo, double hi, double *out,
                       bool *given, mc_api_error_t *e) {
    if (!param) param = key;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return s_bad(e, param, "'%s' must be a number", param);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return s_bad(e, param, "'%s' must be between %g and %g, not %g", param, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    if (given) *given = true;
    return MC_OK;
}

mc_err_t mc_api_integer(const cJSON *root, const char *key, const char *param, double lo, double hi, double *out,
                        bool *given, mc_api_error_t *e) {
    if (!param) param = key;
    double v = 0;
    bool got = false;
    mc_err_t rc = mc_api_number(root, key, param, lo, hi, &v, &got, e);
    if (rc || !got) return rc;
    if (v != floor(v)) return s_bad(e, param, "'%s' must be a whole number", param);
    *out = v;
    if (given) *given = true;
    return MC_OK;
}

mc_err_t mc_api_bool(const cJSON *root, const char *key, const char *param, bool *out, mc_api_error_t *e) {
    if (!param) param = key;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (!cJSON_IsBool(v)) return s_bad(e, param, "'%s' must be true or false", param);
    *out = cJSON_IsTrue(v);
    return MC_OK;
}

char *mc_api_own(mc_api_request_t *r, size_t len) {
    s_owned_t *own = r->owned_;
    char *t = malloc(len + 1), **texts = own ? realloc(own->texts, (own->n_texts + 1) * sizeof *texts) : NULL;
    if (texts) own->texts = texts;
    if (!t || !texts) {
        free(t);
        return NULL;
    }
    own->texts[own->n_texts++] = t;
    return t;
}

// A message's content: a string or an array of {"type": "text", "text":
// ...} parts, joined. Null (or none) only where OpenAI allows it: an
// assistant message that calls tools (its tool_calls are the tools work's).
static mc_err_t s_content(const cJSON *m, size_t i, mc_api_request_t *r, mc_chat_msg_t *out, mc_api_error_t *e) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (cJSON_IsString(c)) {
        out->content = c->valuestring, out->len = strlen(c->valuestring);
        return MC_OK;
    }
    if (!c || cJSON_IsNull(c)) {
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (out->role == MC_CHAT_ASSISTANT && cJSON_IsArray(calls) && cJSON_GetArraySize(calls) > 0) {
            out->content = "", out->len = 0;
            return MC_OK;
        }
        return s_bad(e, param, "'%s' is %s: a message needs its text (null only for an assistant message with tool_calls)",
                     param, c ? "null" : "missing");
    }
    if (!cJSON_IsArray(c)) return s_bad(e, param, "'%s' must be a string or an array of text parts", param);
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return s_bad(e, param, "'%s' may only hold parts of type \"text\" with a string \"text\"", param);
        total += strlen(text->valuestring);
    }
    char *joined = mc_api_own(r, total);
    if (!joined) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(joined + at, t, l);
        at += l;
    }
    joined[at] = 0;
    out->content = joined, out->len = at;
    return MC_OK;
}

// How many bytes of s to quote, at most max, cut before a UTF-8 sequence
// rather than inside one: the error body goes back as JSON, and a client
// reading it as UTF-8 (Python's json, most) fails on half a character.
int mc_api_quote_len(const char *s, size_t max) {
    size_t n = strnlen(s, max + 1);
    if (n > max)
        for (n = max; n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80;) n--;
    return (int)n;
}

// A string field of obj (NULL when absent or null); *bad when it is
// something else.
static const char *s_opt_string(const cJSON *obj, const char *key, bool *bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *bad = v && !cJSON_IsNull(v) && !cJSON_IsString(v);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

mc_err_t mc_api_msg_calls(const cJSON *m, size_t i, mc_api_dialect_t dialect, mc_api_request_t *r, mc_chat_msg_t *out,
                          mc_api_error_t *e) {
    const bool openai = dialect == MC_API_DIALECT_OPENAI;
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (!calls || cJSON_IsNull(calls)) return MC_OK;
    if (out->role != MC_CHAT_ASSISTANT || !cJSON_IsArray(calls))
        return mc_api_bad(e, param, "'%s' must be an array of calls, in an assistant message", param);
    const size_t n = (size_t)cJSON_GetArraySize(calls);
    if (n > MC_TOOLCALL_MAX_TOOLS) return mc_api_bad(e, param, "'%s' has more than %d calls", param, MC_TOOLCALL_MAX_TOOLS);
    mc_chat_call_t *cs = n ? (mc_chat_call_t *)(void *)mc_api_own(r, n * sizeof *cs) : NULL;
    if (n && !cs) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu]", i, k);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        // OpenAI's calls carry the id a tool message answers: a wrong one is
        // the client's mistake. Ollama's carry none (newer clients may send
        // one, which is kept when it is a string).
        bool bad_id;
        const char *id = s_opt_string(c, "id", &bad_id);
        if (!cJSON_IsObject(c) || (openai && bad_id) || !cJSON_IsString(name) ||
            (args && !cJSON_IsString(args) && !cJSON_IsObject(args) && !cJSON_IsNull(args)))
            return mc_api_bad(e, param, "'%s' must be %s", param,
                              openai ? "{\"id\": ..., \"type\": \"function\", \"function\": {\"name\": ..., "
                                       "\"arguments\": \"{...}\"}}"
                                     : "{\"function\": {\"name\": ..., \"arguments\": {...}}}");
        // The arguments as the templates print JSON (kept as they are when they are not JSON).
        cJSON *parsed = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
        const cJSON *obj = parsed ? parsed : cJSON_IsObject(args) ? args : NULL;
        char *printed = obj ? mc_toolcall_print(obj) : NULL;
        cJSON_Delete(parsed);
        const char *text = printed ? printed : cJSON_IsString(args) ? args->valuestring : "{}";
        char *own = mc_api_own(r, strlen(text));
        if (own) memcpy(own, text, strlen(text) + 1);
        free(printed);
        if (!own) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        cs[k++] = (mc_chat_call_t){id ? id : "", name->valuestring, own};
    }
    out->calls = cs, out->n_calls = n;
    return MC_OK;
}

// The tool side of a message: a tool message's tool_call_id, an assistant
// message's tool_calls ({id, type "function", function {name, arguments}},
// the arguments JSON text written again as the templates print JSON) and
// reasoning_content.
static mc_err_t s_tool_fields(const cJSON *m, size_t i, mc_api_request_t *r, mc_chat_msg_t *out, mc_api_error_t *e) {
    char param[64];
    bool bad;
    if (out->role == MC_CHAT_TOOL) {
        snprintf(param, sizeof param, "messages[%zu].tool_call_id", i);
        out->tool_call_id = s_opt_string(m, "tool_call_id", &bad);
        if (bad || !out->tool_call_id)
            return s_bad(e, param, "'%s' must be the id (a string) of the call this tool message answers", param);
        return MC_OK;
    }
    if (out->role != MC_CHAT_ASSISTANT) return MC_OK;
    snprintf(param, sizeof param, "messages[%zu].reasoning_content", i);
    const char *reasoning = s_opt_string(m, "reasoning_content", &bad);
    if (bad) return s_bad(e, param, "'%s' must be a string", param);
    if (reasoning) out->reasoning = reasoning, out->reasoning_len = strlen(reasoning);
    return mc_api_msg_calls(m, i, MC_API_DIALECT_OPENAI, r, out, e);
}

// reasoning_effort in o (under the name param): "low", "medium" or "high".
static mc_err_t s_effort(const cJSON *o, const char *param, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "reasoning_effort");
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (!cJSON_IsString(v) ||
        (strcmp(v->valuestring, "low") && strcmp(v->valuestring, "medium") && strcmp(v->valuestring, "high")))
        return s_bad(e, param, "'%s' must be \"low\", \"medium\" or \"high\"", param);
    snprintf(r->effort, sizeof r->effort, "%s", v->valuestring);
    return MC_OK;
}

// enable_thinking and reasoning_effort, at the top or in
// chat_template_kwargs (as vLLM and llama.cpp take them).
static mc_err_t s_thinking(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs");
    mc_err_t rc = MC_OK;
    if (kw && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw)) return s_bad(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        if ((rc = mc_api_bool(kw, "enable_thinking", "chat_template_kwargs.enable_thinking", &r->thinking, e)) ||
            (rc = s_effort(kw, "chat_template_kwargs.reasoning_effort", r, e)))
            return rc;
    }
    if ((rc = s_effort(root, "reasoning_effort", r, e))) return rc;
    return mc_api_bool(root, "enable_thinking", NULL, &r->thinking, e);
}

static mc_err_t s_messages(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs) return s_bad(e, "messages", "'messages' is required");
    if (!cJSON_IsArray(msgs)) return s_bad(e, "messages", "'messages' must be an array of messages");
    const size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (n == 0) return s_bad(e, "messages", "'messages' must not be empty");
    if (n > MC_API_MAX_MESSAGES) return s_bad(e, "messages", "at most %d messages", MC_API_MAX_MESSAGES);
    if (!(r->msgs = calloc(n, sizeof *r->msgs))) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) return s_bad(e, param, "'%s' must be an object with a role and a content", param);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role)) return s_bad(e, param, "'%s' must be a string", param);
        // "developer" is what newer OpenAI clients call the system role.
        const char *name = !strcmp(role->valuestring, "developer") ? "system" : role->valuestring;
        if (!mc_chat_role_from_name(name, &r->msgs[i].role))
            return s_bad(e, param, "'%s' is '%.*s': the roles are system, user, assistant and tool", param,
                         mc_api_quote_len(role->valuestring, 40), role->valuestring);
        mc_err_t rc = s_content(m, i, r, &r->msgs[i], e);
        if (!rc) rc = s_tool_fields(m, i, r, &r->msgs[i], e);
        if (rc) return rc;
        i++;
    }
    r->n_msgs = n;
    return MC_OK;
}

mc_err_t mc_api_stop(const cJSON *s, const char *param, mc_api_request_t *r, mc_api_error_t *e) {
    if (!s || cJSON_IsNull(s)) return MC_OK;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return MC_OK;
        if (strlen(s->valuestring) > MC_SCHEDULER_STOP_LEN)
            return s_bad(e, param, "a stop string has at most %d bytes", MC_SCHEDULER_STOP_LEN);
        r->stop[r->n_stop++] = s->valuestring;
        return MC_OK;
    }
    if (!cJSON_IsArray(s)) return s_bad(e, param, "'%s' must be a string or an array of strings", param);
    if (cJSON_GetArraySize(s) > MC_SCHEDULER_MAX_STOP) return s_bad(e, param, "at most %d stop strings", MC_SCHEDULER_MAX_STOP);
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (!cJSON_IsString(it)) return s_bad(e, param, "'%s' must be a string or an array of strings", param);
        if (strlen(it->valuestring) > MC_SCHEDULER_STOP_LEN)
            return s_bad(e, param, "a stop string has at most %d bytes", MC_SCHEDULER_STOP_LEN);
        if (it->valuestring[0]) r->stop[r->n_stop++] = it->valuestring;
    }
    return MC_OK;
}

mc_err_t mc_api_sampling(const cJSON *obj, const char *prefix, mc_api_request_t *r, mc_api_error_t *e) {
    mc_sampler_params_t *sp = &r->sampling;
    struct {
        const char *key;
        double lo, hi;
        float *dst;
    } floats[] = {{"temperature", 0, 2, &sp->temp},
                  {"top_p", 0, 1, &sp->top_p},
                  {"min_p", 0, 1, &sp->min_p},
                  {"repeat_penalty", 0.01, 100, &sp->repeat_penalty},
                  {"frequency_penalty", -2, 2, &sp->frequency_penalty},
                  {"presence_penalty", -2, 2, &sp->presence_penalty}};
    char param[64];
    double v = 0;
    bool given;
    mc_err_t rc;
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        given = false;
        snprintf(param, sizeof param, "%s%s", prefix, floats[i].key);
        if ((rc = mc_api_number(obj, floats[i].key, param, floats[i].lo, floats[i].hi, &v, &given, e))) return rc;
        if (given) *floats[i].dst = (float)v;
    }
    given = false;
    snprintf(param, sizeof param, "%stop_k", prefix);
    if ((rc = mc_api_integer(obj, "top_k", param, 0, 1e9, &v, &given, e))) return rc;
    if (given) sp->top_k = (int32_t)v;
    given = false;
    snprintf(param, sizeof param, "%sseed", prefix);
    if ((rc = mc_api_integer(obj, "seed", param, -9007199254740992.0, 9007199254740992.0, &v, &given, e))) return rc;
    if (given) sp->seed = (uint64_t)(int64_t)v, r->seed_given = true;
    return MC_OK;
}

// logprobs: chat takes a boolean and top_logprobs (0..20, which needs
// logprobs true, as OpenAI says); completions take one number, the
// alternatives per token (OpenAI's legacy API allows 5; we allow 20).
static mc_err_t s_logprobs(const cJSON *root, bool chat, mc_api_request_t *r, mc_api_error_t *e) {
    double v = 0;
    bool given = false;
    mc_err_t rc;
    if (!chat) {
        if ((rc = mc_api_integer(root, "logprobs", NULL, 0, MC_LOGPROB_MAX_TOP, &v, &given, e))) return rc;
        if (given) r->logprobs = true, r->top_logprobs = (uint32_t)v;
        return MC_OK;
    }
    if ((rc = mc_api_bool(root, "logprobs", NULL, &r->logprobs, e)) ||
        (rc = mc_api_integer(root, "top_logprobs", NULL, 0, MC_LOGPROB_MAX_TOP, &v, &given, e)))
        return rc;
    if (given && !r->logprobs)
        return s_bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (given) r->top_logprobs = (uint32_t)v;
    return MC_OK;
}

// "speculative": true (the server's drafts, else 8 guesses a step), false,
// or {"max_draft": K} with K in 0..64. The tokens are the same either way
// (scheduler.h); only speed changes.
static mc_err_t s_speculative(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "speculative");
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (cJSON_IsBool(v)) {
        r->speculate = cJSON_IsTrue(v) ? MC_API_SPECULATE_ON : MC_API_SPECULATE_OFF;
        return MC_OK;
    }
    if (!cJSON_IsObject(v))
        return s_bad(e, "speculative", "'speculative' must be true, false or {\"max_draft\": K}");
    double k = MC_API_SPECULATE_DEFAULT;
    bool given = false;
    mc_err_t rc = mc_api_integer(v, "max_draft", "speculative.max_draft", 0, 64, &k, &given, e);
    if (rc) return rc;
    r->speculate = k ? (int32_t)k : MC_API_SPECULATE_OFF;
    return MC_OK;
}

mc_err_t mc_api_schema(const cJSON *schema, const char *param, mc_api_request_t *r, mc_api_error_t *e) {
    if (!cJSON_IsObject(schema) && !cJSON_IsTrue(schema))
        return mc_api_bad(e, param, "'%s' must be a JSON Schema object", param);
    char *txt = cJSON_PrintUnformatted(schema);
    if (!txt) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    const size_t len = strlen(txt);
    char err[MC_ERR_LEN];
    mc_jschema_t *js = mc_jschema_compile(txt, len, err);
    if (!js) {
        free(txt);
        if (mc_err_code(err, MC_ERR_ARG) == MC_ERR_NOMEM) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
        return mc_api_bad(e, param, "'%s' cannot be used for structured output: %s", param, err);
    }
    char *own = mc_api_own(r, len);
    if (!own) {
        mc_jschema_destroy(&js);
        free(txt);
        return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    memcpy(own, txt, len + 1);
    free(txt);
    mc_jschema_destroy(&r->compiled); // a schema given before this one
    r->json = true, r->schema = own, r->schema_len = len, r->compiled = js;
    return MC_OK;
}

mc_err_t mc_api_response_format(const cJSON *v, const char *param, bool flat, mc_api_request_t *r, mc_api_error_t *e) {
    if (!v || cJSON_IsNull(v)) return MC_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!cJSON_IsObject(v) || !cJSON_IsString(type))
        return mc_api_bad(e, param, "'%s' must be an object with a \"type\"", param);
    if (!strcmp(type->valuestring, "text")) return MC_OK;
    if (!strcmp(type->valuestring, "json_object")) {
        mc_jschema_destroy(&r->compiled);
        r->json = true, r->schema = NULL, r->schema_len = 0;
        return MC_OK;
    }
    if (strcmp(type->valuestring, "json_schema"))
        return mc_api_bad(e, param, "'%s.type' is '%.*s': \"text\", \"json_object\" or \"json_schema\"", param,
                          mc_api_quote_len(type->valuestring, 40), type->valuestring);
    char sub[96];
    const cJSON *js = v;
    if (!flat) {
        snprintf(sub, sizeof sub, "%s.json_schema", param);
        js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
        if (!cJSON_IsObject(js)) return mc_api_bad(e, sub, "'%s' must be an object with a \"schema\"", sub);
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name"), *strict = cJSON_GetObjectItemCaseSensitive(js, "strict");
    if (name && !cJSON_IsString(name)) return mc_api_bad(e, param, "'%s' needs a string \"name\"", param);
    if (strict && !cJSON_IsBool(strict) && !cJSON_IsNull(strict))
        return mc_api_bad(e, param, "'strict' in '%s' must be a boolean", param);
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    snprintf(sub, sizeof sub, flat ? "%s.schema" : "%s.json_schema.schema", param);
    if (!schema || cJSON_IsNull(schema)) return mc_api_bad(e, sub, "'%s' is required", sub);
    // strict or not, the output follows the schema: decoding is always constrained.
    return mc_api_schema(schema, sub, r, e);
}

static mc_err_t s_fields(const cJSON *root, bool chat, mc_api_request_t *r, mc_api_error_t *e) {
    mc_err_t rc;
    if (chat) {
        if ((rc = s_messages(root, r, e)) || (rc = s_thinking(root, r, e))) return rc;
        char param[64] = "", err[MC_ERR_LEN];
        rc = mc_toolcall_req_parse(root, &r->tools, param, err);
        if (rc == MC_ERR_ARG) return s_bad(e, param, "%s", err);
        if (rc) return mc_api_error(e, 500, "server_error", NULL, NULL, "%s", err);
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        // A one-element array is what some clients send for one prompt.
        if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1) p = cJSON_GetArrayItem(p, 0);
        if (!p) return s_bad(e, "prompt", "'prompt' is required");
        if (!cJSON_IsString(p)) return s_bad(e, "prompt", "'prompt' must be a string");
        r->prompt = p->valuestring, r->prompt_len = strlen(p->valuestring);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsString(model) && !cJSON_IsNull(model)) return s_bad(e, "model", "'model' must be a string");
    double v = 0;
    bool given = false;
    if ((rc = mc_api_integer(root, "n", NULL, 1, 1e9, &v, &given, e))) return rc;
    if (given && v != 1)
        return s_bad(e, "n", "'n' is %g: this server gives one choice per request (n > 1 is not supported; send the "
                     "request again, with another seed, for another answer)", v);
    given = false;
    if ((rc = mc_api_integer(root, "max_tokens", NULL, 1, 1e9, &v, &given, e)) ||
        (rc = mc_api_integer(root, "max_completion_tokens", NULL, 1, 1e9, &v, &given, e)))
        return rc;
    if (given) r->max_tokens = (uint32_t)v;
    if ((rc = mc_api_sampling(root, "", r, e))) return rc;
    if ((rc = mc_api_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), "stop", r, e)) ||
        (rc = mc_api_bool(root, "stream", NULL, &r->stream, e)) ||
        (rc = mc_api_bool(root, "safe_prompt", NULL, &r->safe_prompt, e)) || (rc = s_logprobs(root, chat, r, e)) ||
        (rc = s_speculative(root, r, e)) ||
        (rc = mc_api_response_format(cJSON_GetObjectItemCaseSensitive(root, "response_format"), "response_format", false,
                                     r, e)))
        return rc;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return s_bad(e, "stream_options", "'stream_options' must be an object");
        if ((rc = mc_api_bool(so, "include_usage", NULL, &r->include_usage, e))) return rc;
    }
    return MC_OK;
}

// Whether the JSON text body[0..len) holds a \u0000 escape. cJSON's
// strings are C strings and end at the NUL: the role "user\u0000x" would
// pass as "user", and a content or a stop string lose their tail without a
// word. In valid JSON a backslash only starts an escape, so skipping the
// escaped character keeps "\\u0000" (a backslash, then text) apart.
static bool s_has_nul(const char *body, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (body[i] != '\\') continue;
        if (body[i + 1] == 'u' && len - i >= 6 && !memcmp(body + i + 2, "0000", 4)) return true;
        i++;
    }
    return false;
}

// Whether s[0..len) is UTF-8 as RFC 8259 wants JSON text: no stray or cut
// sequence, no overlong form, no surrogate, nothing past U+10FFFF.
static bool s_utf8(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        const unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (n == 0 || n > len - i) return false;
        for (size_t k = 1; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] >= 0xA0) || (c == 0xF0 && p[i + 1] < 0x90) ||
            (c == 0xF4 && p[i + 1] >= 0x90))
            return false;
        i += n;
    }
    return true;
}

mc_err_t mc_api_begin(const char *body, size_t len, const mc_sampler_params_t *defaults, mc_api_request_t *out,
                      const cJSON **root, mc_api_error_t *e) {
    mc_api_request_t r = {.sampling = *defaults, .thinking = true};
    r.tools.parallel = true;
    s_owned_t *own = calloc(1, sizeof *own);
    if (!own) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    r.owned_ = own;
    mc_err_t rc = MC_OK;
    // A raw NUL byte is never JSON (control characters are escaped), and
    // cJSON would end the string it sits in there.
    if (memchr(body, 0, len)) rc = s_bad(e, NULL, "the body is not valid JSON: it holds a NUL byte");
    else if (!s_utf8(body, len)) rc = s_bad(e, NULL, "the body is not valid UTF-8 (JSON text must be)");
    if (!rc) {
        // cJSON stops after the first value: whatever follows it must be
        // whitespace, or the body is not JSON (`{...} {...}` is refused, as
        // strict readers do, rather than read as its first half).
        const char *end = NULL;
        own->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
        while (own->root && end && end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (!own->root || !end || end != body + len) rc = s_bad(e, NULL, "the body is not valid JSON");
        else if (!cJSON_IsObject(own->root)) rc = s_bad(e, NULL, "the body must be a JSON object");
        else if (s_has_nul(body, len))
            rc = s_bad(e, NULL, "a string in the body holds a NUL character (\\u0000): this server cannot pass one "
                                "to the model (its strings end there); leave it out");
    }
    if (rc) {
        mc_api_request_free(&r);
        return rc;
    }
    *out = r;
    *root = own->root;
    return MC_OK;
}

mc_err_t mc_api_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                      mc_api_request_t *out, mc_api_error_t *e) {
    mc_api_request_t r;
    const cJSON *root;
    mc_err_t rc = mc_api_begin(body, len, defaults, &r, &root, e);
    if (rc) return rc;
    r.chat = chat;
    if ((rc = s_fields(root, chat, &r, e))) {
        mc_api_request_free(&r);
        return rc;
    }
    *out = r;
    return MC_OK;
}

void mc_api_request_free(mc_api_request_t *r) {
    s_owned_t *own = r->owned_;
    if (own) {
        for (size_t i = 0; i < own->n_texts; i++) free(own->texts[i]);
        free(own->texts);
        cJSON_Delete(own->root);
        free(own);
    }
    free(r->msgs);
    mc_toolcall_req_free(&r->tools);
    mc_jschema_destroy(&r->compiled);
    memset(r, 0, sizeof *r);
}

// --- answers -------------------------------------------------------------------------

const char *mc_api_finish_reason(mc_finish_t why) { return why == MC_FINISH_LENGTH ? "length" : "stop"; }

static const char *s_finish(const mc_api_result_t *res) {
    return res->n_calls || res->tool_calls ? "tool_calls" : mc_api_finish_reason(res->why);
}

// OpenAI's tool_calls entries: {id, type, function {name, arguments}}.
static cJSON *s_calls(const mc_toolcall_t *calls, size_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", calls[i].id);
        cJSON_AddStringToObject(c, "type", "function");
        cJSON *f = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(f, "name", calls[i].name);
        cJSON_AddStringToObject(f, "arguments", calls[i].arguments);
        cJSON_AddItemToArray(arr, c);
    }
    return arr;
}

// text[0..len) as a JSON string value: cJSON wants NUL-terminated text, and
// a generated NUL byte (token <0x00>) becomes U+FFFD rather than an end.
static cJSON *s_text(const char *text, size_t len) {
    size_t nul = 0;
    for (size_t i = 0; i < len; i++) nul += !text[i];
    char *buf = malloc(len + 2 * nul + 1);
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

cJSON *mc_api_token_string(const char *bytes, size_t len) {
    char *buf = malloc(3 * len + 1); // each byte at most one U+FFFD
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 1;
        while (n <= 4 && n <= len - i && !s_utf8(bytes + i, n)) n++;
        if (n <= 4 && n <= len - i && bytes[i]) { // a whole character (or ASCII but NUL)
            memcpy(buf + o, bytes + i, n), o += n, i += n;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3), o += 3, i++;
        }
    }
    buf[o] = 0;
    cJSON *s = cJSON_CreateString(buf);
    free(buf);
    return s;
}

// OpenAI reports a probability that is 0 as -9999 (JSON has no -inf).
static double s_lp(double lp) { return lp < -9999.0 || isnan(lp) ? -9999.0 : lp; }

// {token, logprob, bytes} of one id.
static cJSON *s_token_entry(const mc_tokenizer_t *tok, int32_t id, double lp) {
    char b[MC_TOKENIZER_MAX_PIECE];
    const size_t n = mc_tokenizer_token_bytes(tok, id, b, sizeof b);
    cJSON *o = cJSON_CreateObject(), *bytes = cJSON_CreateArray();
    cJSON_AddItemToObject(o, "token", mc_api_token_string(b, n));
    cJSON_AddNumberToObject(o, "logprob", s_lp(lp));
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)b[i]));
    cJSON_AddItemToObject(o, "bytes", bytes);
    return o;
}

cJSON *mc_api_logprob_content(const mc_tokenizer_t *tok, const mc_logprob_t *lps, size_t n, bool with_top) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *o = s_token_entry(tok, lps[i].chosen.id, lps[i].chosen.logprob);
        if (with_top) {
            cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
            for (uint32_t k = 0; k < lps[i].n_top; k++)
                cJSON_AddItemToArray(top, s_token_entry(tok, lps[i].top[k].id, lps[i].top[k].logprob));
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

// The legacy completions object: tokens, token_logprobs, top_logprobs (a
// map token -> logprob per position) and text_offset (bytes into the text
// from `offset`).
static cJSON *s_legacy_logprobs(const mc_tokenizer_t *tok, const mc_logprob_t *lps, size_t n, size_t offset) {
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens"), *lp = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs"), *off = cJSON_AddArrayToObject(o, "text_offset");
    char b[MC_TOKENIZER_MAX_PIECE];
    for (size_t i = 0; i < n; i++) {
        const size_t nb = mc_tokenizer_token_bytes(tok, lps[i].chosen.id, b, sizeof b);
        cJSON_AddItemToArray(tokens, mc_api_token_string(b, nb));
        cJSON_AddItemToArray(lp, cJSON_CreateNumber(s_lp(lps[i].chosen.logprob)));
        cJSON *map = cJSON_CreateObject();
        for (uint32_t k = 0; k < lps[i].n_top; k++) {
            char tb[MC_TOKENIZER_MAX_PIECE];
            const size_t tn = mc_tokenizer_token_bytes(tok, lps[i].top[k].id, tb, sizeof tb);
            cJSON *name = mc_api_token_string(tb, tn);
            // Two ids may spell the same text: the map keeps the first (the likelier).
            if (name && !cJSON_GetObjectItemCaseSensitive(map, name->valuestring))
                cJSON_AddNumberToObject(map, name->valuestring, s_lp(lps[i].top[k].logprob));
            cJSON_Delete(name);
        }
        cJSON_AddItemToArray(top, map);
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        offset += nb;
    }
    return o;
}

static cJSON *s_head(const mc_api_answer_t *a, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", a->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)a->created);
    cJSON_AddStringToObject(root, "model", a->model);
    return root;
}

static void s_usage(cJSON *root, uint32_t prompt, uint32_t completion) {
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)prompt + completion);
}

// A choice's "logprobs": null when not asked for; chat: {content, refusal};
// completions: the legacy object (offsets from `offset`).
static void s_choice_logprobs(cJSON *c, const mc_api_answer_t *a, const mc_api_result_t *res, size_t offset) {
    if (!a->logprobs || !a->tok) {
        cJSON_AddNullToObject(c, "logprobs");
        return;
    }
    if (!a->chat) {
        cJSON_AddItemToObject(c, "logprobs", s_legacy_logprobs(a->tok, res->lps, res->n_lps, offset));
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(c, "logprobs");
    cJSON_AddItemToObject(o, "content", mc_api_logprob_content(a->tok, res->lps, res->n_lps, true));
    cJSON_AddNullToObject(o, "refusal");
}

char *mc_api_completion_json(const mc_api_answer_t *a, const mc_api_result_t *res) {
    cJSON *root = s_head(a, a->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        if (res->n_calls && !res->len) cJSON_AddNullToObject(m, "content");
        else cJSON_AddItemToObject(m, "content", s_text(res->text, res->len));
        if (res->reasoning) cJSON_AddItemToObject(m, "reasoning_content", s_text(res->reasoning, res->reasoning_len));
        if (res->n_calls) cJSON_AddItemToObject(m, "tool_calls", s_calls(res->calls, res->n_calls));
    } else {
        cJSON_AddItemToObject(c, "text", s_text(res->text, res->len));
    }
    s_choice_logprobs(c, a, res, 0);
    cJSON_AddStringToObject(c, "finish_reason", a->chat ? s_finish(res) : mc_api_finish_reason(res->why));
    s_usage(root, res->prompt_tokens, res->completion_tokens);
    return s_print(root);
}

char *mc_api_chunk_json(const mc_api_answer_t *a, bool role, const mc_api_result_t *piece) {
    cJSON *root = s_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (role || piece->len) cJSON_AddItemToObject(d, "content", s_text(piece->text, piece->len));
    } else {
        cJSON_AddItemToObject(c, "text", s_text(piece->text, piece->len));
    }
    // Offsets of a streamed legacy answer start where the chunk does: the
    // client adds them up (a chunk does not know what came before).
    if (piece->n_lps || !a->logprobs) s_choice_logprobs(c, a, piece, 0);
    else cJSON_AddNullToObject(c, "logprobs");
    if (piece->why == MC_FINISH_NONE) cJSON_AddNullToObject(c, "finish_reason");
    else cJSON_AddStringToObject(c, "finish_reason", a->chat ? s_finish(piece) : mc_api_finish_reason(piece->why));
    if (a->include_usage) cJSON_AddNullToObject(root, "usage");
    return s_print(root);
}

// A chat chunk whose delta the caller fills.
static cJSON *s_delta_chunk(const mc_api_answer_t *a, cJSON **root) {
    *root = s_head(a, "chat.completion.chunk");
    cJSON *choices = cJSON_AddArrayToObject(*root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddNullToObject(c, "finish_reason");
    if (a->include_usage) cJSON_AddNullToObject(*root, "usage");
    return d;
}

char *mc_api_call_chunk_json(const mc_api_answer_t *a, uint32_t index, const mc_toolcall_t *call, bool head,
                             const char *args, size_t len) {
    cJSON *root, *d = s_delta_chunk(a, &root);
    cJSON *arr = cJSON_AddArrayToObject(d, "tool_calls"), *tc = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, tc);
    cJSON_AddNumberToObject(tc, "index", index);
    if (head) {
        cJSON_AddStringToObject(tc, "id", call->id);
        cJSON_AddStringToObject(tc, "type", "function");
    }
    cJSON *f = cJSON_AddObjectToObject(tc, "function");
    if (head) cJSON_AddStringToObject(f, "name", call->name);
    cJSON_AddItemToObject(f, "arguments", s_text(head ? "" : args, head ? 0 : len));
    return s_print(root);
}

char *mc_api_reasoning_chunk_json(const mc_api_answer_t *a, const char *text, size_t len) {
    cJSON *root, *d = s_delta_chunk(a, &root);
    cJSON_AddItemToObject(d, "reasoning_content", s_text(text, len));
    return s_print(root);
}

char *mc_api_usage_chunk_json(const mc_api_answer_t *a, uint32_t prompt_tokens, uint32_t completion_tokens) {
    cJSON *root = s_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddArrayToObject(root, "choices");
    s_usage(root, prompt_tokens, completion_tokens);
    return s_print(root);
}
