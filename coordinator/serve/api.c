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

static mc_err_t s_bad(mc_api_error_t *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mc_err_t s_bad(mc_api_error_t *e, const char *param, const char *fmt, ...) {
    char msg[MC_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mc_api_error(e, 400, "invalid_request_error", param, NULL, "%s", msg);
}

// A number field in [lo, hi] (absent or null: *out untouched).
static mc_err_t s_number(const cJSON *root, const char *key, double lo, double hi, double *out, bool *given,
                         mc_api_error_t *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return s_bad(e, key, "'%s' must be a number", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return s_bad(e, key, "'%s' must be between %g and %g, not %g", key, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    if (given) *given = true;
    return MC_OK;
}

static mc_err_t s_integer(const cJSON *root, const char *key, double lo, double hi, double *out, bool *given,
                          mc_api_error_t *e) {
    double v = 0;
    bool got = false;
    mc_err_t rc = s_number(root, key, lo, hi, &v, &got, e);
    if (rc || !got) return rc;
    if (v != floor(v)) return s_bad(e, key, "'%s' must be a whole number", key);
    *out = v;
    if (given) *given = true;
    return MC_OK;
}

static mc_err_t s_bool(const cJSON *root, const char *key, bool *out, mc_api_error_t *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return MC_OK;
    if (!cJSON_IsBool(v)) return s_bad(e, key, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return MC_OK;
}

// A message's content: a string, null (an empty assistant turn) or an array
// of {"type": "text", "text": ...} parts, joined.
static mc_err_t s_content(const cJSON *c, size_t i, s_owned_t *own, mc_chat_msg_t *m, mc_api_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (cJSON_IsString(c)) {
        m->content = c->valuestring, m->len = strlen(c->valuestring);
        return MC_OK;
    }
    if (!c || cJSON_IsNull(c)) {
        m->content = "", m->len = 0;
        return MC_OK;
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
    char *joined = malloc(total + 1), **texts = realloc(own->texts, (own->n_texts + 1) * sizeof *texts);
    if (!joined || !texts) {
        free(joined);
        if (texts) own->texts = texts;
        return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    own->texts = texts;
    own->texts[own->n_texts++] = joined;
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(joined + at, t, l);
        at += l;
    }
    joined[at] = 0;
    m->content = joined, m->len = at;
    return MC_OK;
}

// How many bytes of s to quote, at most max, cut before a UTF-8 sequence
// rather than inside one: the error body goes back as JSON, and a client
// reading it as UTF-8 (Python's json, most) fails on half a character.
static int s_quote_len(const char *s, size_t max) {
    size_t n = strnlen(s, max + 1);
    if (n > max)
        for (n = max; n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80;) n--;
    return (int)n;
}

static mc_err_t s_messages(const cJSON *root, mc_api_request_t *r, s_owned_t *own, mc_api_error_t *e) {
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
            return s_bad(e, param, "'%s' is '%.*s': the roles are system, user and assistant", param,
                         s_quote_len(role->valuestring, 40), role->valuestring);
        mc_err_t rc = s_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, own, &r->msgs[i], e);
        if (rc) return rc;
        i++;
    }
    r->n_msgs = n;
    return MC_OK;
}

static mc_err_t s_stop(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return MC_OK;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return MC_OK;
        if (strlen(s->valuestring) > MC_SCHEDULER_STOP_LEN)
            return s_bad(e, "stop", "a stop string has at most %d bytes", MC_SCHEDULER_STOP_LEN);
        r->stop[r->n_stop++] = s->valuestring;
        return MC_OK;
    }
    if (!cJSON_IsArray(s)) return s_bad(e, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(s) > MC_SCHEDULER_MAX_STOP) return s_bad(e, "stop", "at most %d stop strings", MC_SCHEDULER_MAX_STOP);
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (!cJSON_IsString(it)) return s_bad(e, "stop", "'stop' must be a string or an array of strings");
        if (strlen(it->valuestring) > MC_SCHEDULER_STOP_LEN)
            return s_bad(e, "stop", "a stop string has at most %d bytes", MC_SCHEDULER_STOP_LEN);
        if (it->valuestring[0]) r->stop[r->n_stop++] = it->valuestring;
    }
    return MC_OK;
}

static mc_err_t s_fields(const cJSON *root, bool chat, mc_api_request_t *r, s_owned_t *own, mc_api_error_t *e) {
    mc_err_t rc;
    if (chat) {
        if ((rc = s_messages(root, r, own, e))) return rc;
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
    if ((rc = s_integer(root, "n", 1, 1, &v, NULL, e))) return rc; // one choice per request
    if ((rc = s_integer(root, "max_tokens", 1, 1e9, &v, &given, e)) ||
        (rc = s_integer(root, "max_completion_tokens", 1, 1e9, &v, &given, e)))
        return rc;
    if (given) r->max_tokens = (uint32_t)v;
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
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        given = false;
        if ((rc = s_number(root, floats[i].key, floats[i].lo, floats[i].hi, &v, &given, e))) return rc;
        if (given) *floats[i].dst = (float)v;
    }
    given = false;
    if ((rc = s_integer(root, "top_k", 0, 1e9, &v, &given, e))) return rc;
    if (given) sp->top_k = (int32_t)v;
    given = false;
    if ((rc = s_integer(root, "seed", -9007199254740992.0, 9007199254740992.0, &v, &given, e))) return rc;
    if (given) sp->seed = (uint64_t)(int64_t)v, r->seed_given = true;
    if ((rc = s_stop(root, r, e)) || (rc = s_bool(root, "stream", &r->stream, e)) ||
        (rc = s_bool(root, "safe_prompt", &r->safe_prompt, e)))
        return rc;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return s_bad(e, "stream_options", "'stream_options' must be an object");
        if ((rc = s_bool(so, "include_usage", &r->include_usage, e))) return rc;
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

mc_err_t mc_api_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                      mc_api_request_t *out, mc_api_error_t *e) {
    mc_api_request_t r = {.chat = chat, .sampling = *defaults};
    s_owned_t *own = calloc(1, sizeof *own);
    if (!own) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    r.owned_ = own;
    // cJSON stops after the first value: whatever follows it must be
    // whitespace, or the body is not JSON (`{...} {...}` is refused, as
    // strict readers do, rather than read as its first half).
    const char *end = NULL;
    own->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    while (own->root && end && end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    mc_err_t rc;
    if (!own->root || !end || end != body + len) rc = s_bad(e, NULL, "the body is not valid JSON");
    else if (!cJSON_IsObject(own->root)) rc = s_bad(e, NULL, "the body must be a JSON object");
    else if (s_has_nul(body, len)) rc = s_bad(e, NULL, "a string in the body holds a NUL character (\\u0000)");
    else rc = s_fields(own->root, chat, &r, own, e);
    if (rc) {
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
    memset(r, 0, sizeof *r);
}

// --- answers -------------------------------------------------------------------------

const char *mc_api_finish_reason(mc_finish_t why) { return why == MC_FINISH_LENGTH ? "length" : "stop"; }

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

char *mc_api_completion_json(const mc_api_answer_t *a, const char *text, size_t len, mc_finish_t why,
                             uint32_t prompt_tokens, uint32_t completion_tokens) {
    cJSON *root = s_head(a, a->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", s_text(text, len));
    } else {
        cJSON_AddItemToObject(c, "text", s_text(text, len));
    }
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", mc_api_finish_reason(why));
    s_usage(root, prompt_tokens, completion_tokens);
    return s_print(root);
}

char *mc_api_chunk_json(const mc_api_answer_t *a, bool role, const char *text, size_t len, mc_finish_t why) {
    cJSON *root = s_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (role || len) cJSON_AddItemToObject(d, "content", s_text(text, len));
    } else {
        cJSON_AddItemToObject(c, "text", s_text(text, len));
    }
    cJSON_AddNullToObject(c, "logprobs");
    if (why == MC_FINISH_NONE) cJSON_AddNullToObject(c, "finish_reason");
    else cJSON_AddStringToObject(c, "finish_reason", mc_api_finish_reason(why));
    return s_print(root);
}

char *mc_api_usage_chunk_json(const mc_api_answer_t *a, uint32_t prompt_tokens, uint32_t completion_tokens) {
    cJSON *root = s_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddArrayToObject(root, "choices");
    s_usage(root, prompt_tokens, completion_tokens);
    return s_print(root);
}
