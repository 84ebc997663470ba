/*
 * toolcall: function tools in requests, the model's calls in its answers,
 * and the constraint of a forced call; cJSON for the JSON.
 */
#include "toolcall.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- printing as the templates do -------------------------------------------------------

typedef struct {
    char *p;
    size_t n, cap;
    bool bad;
} s_buf_t;

static void s_put(s_buf_t *b, const char *s, size_t n) {
    if (b->bad) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->bad = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void s_puts(s_buf_t *b, const char *s) { s_put(b, s, strlen(s)); }

static char *s_done(s_buf_t *b) {
    if (b->bad || !b->p) {
        free(b->p);
        return NULL;
    }
    return b->p;
}

static void s_py_string(s_buf_t *b, const char *s) {
    s_puts(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        switch (*c) {
        case '"': s_puts(b, "\\\""); break;
        case '\\': s_puts(b, "\\\\"); break;
        case '\n': s_puts(b, "\\n"); break;
        case '\r': s_puts(b, "\\r"); break;
        case '\t': s_puts(b, "\\t"); break;
        case '\b': s_puts(b, "\\b"); break;
        case '\f': s_puts(b, "\\f"); break;
        default:
            if (*c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *c);
                s_puts(b, esc);
            } else {
                s_put(b, (const char *)c, 1);
            }
        }
    }
    s_puts(b, "\"");
}

// The shortest of %.15g..%.17g that reads back the same (Python's repr),
// with ".0" when it would look like an integer; integers as integers.
static void s_py_number(s_buf_t *b, double v) {
    char t[40];
    if (!isfinite(v)) {
        s_puts(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(t, sizeof t, "%.0f", v);
        s_puts(b, t);
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*g", p, v);
        if (strtod(t, NULL) == v) break;
    }
    s_puts(b, t);
    if (!strpbrk(t, ".en")) s_puts(b, ".0");
}

static void s_py(s_buf_t *b, const cJSON *v) {
    if (cJSON_IsNull(v)) s_puts(b, "null");
    else if (cJSON_IsTrue(v)) s_puts(b, "true");
    else if (cJSON_IsFalse(v)) s_puts(b, "false");
    else if (cJSON_IsNumber(v)) s_py_number(b, v->valuedouble);
    else if (cJSON_IsString(v)) s_py_string(b, v->valuestring);
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const bool obj = cJSON_IsObject(v);
        s_puts(b, obj ? "{" : "[");
        const cJSON *it;
        bool first = true;
        cJSON_ArrayForEach(it, v) {
            if (!first) s_puts(b, ", ");
            first = false;
            if (obj) {
                s_py_string(b, it->string ? it->string : "");
                s_puts(b, ": ");
            }
            s_py(b, it);
        }
        s_puts(b, obj ? "}" : "]");
    } else {
        s_puts(b, "null"); // cJSON_Raw and invalid: not produced by the parser
    }
}

char *mc_toolcall_print(const cJSON *v) {
    s_buf_t b = {0};
    s_py(&b, v);
    return s_done(&b);
}

// --- requests ---------------------------------------------------------------------------

static bool s_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

void mc_toolcall_req_free(mc_toolcall_req_t *t) {
    for (size_t i = 0; i < t->n_tools; i++) free(t->tools[i].name), free(t->tools[i].params), free(t->tools[i].json);
    free(t->tools), free(t->forced);
    memset(t, 0, sizeof *t);
    t->parallel = true;
}

static mc_err_t s_bad(char *param, const char *p, char *err, const char *msg) {
    snprintf(param, 64, "%s", p);
    return mc_err_set(err, MC_ERR_ARG, "%s", msg);
}

// The nested form of a flat tool: {"type": "function", "function": {the
// tool's other fields}}, as the chat templates print tools.
static cJSON *s_nest(const cJSON *it) {
    cJSON *o = cJSON_CreateObject(), *fn = cJSON_CreateObject();
    if (!o || !fn || !cJSON_AddStringToObject(o, "type", "function")) {
        cJSON_Delete(o), cJSON_Delete(fn);
        return NULL;
    }
    cJSON_AddItemToObject(o, "function", fn);
    const cJSON *f;
    cJSON_ArrayForEach(f, it) {
        if (!f->string || !strcmp(f->string, "type")) continue;
        cJSON *d = cJSON_Duplicate(f, true);
        if (!d) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(fn, f->string, d);
    }
    return o;
}

static mc_err_t s_tool(const cJSON *it, size_t i, bool flat, mc_toolcall_tool_t *out, char *param, char *err) {
    char p[64];
    snprintf(p, sizeof p, "tools[%zu]", i);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
    const cJSON *fn = flat ? it : cJSON_GetObjectItemCaseSensitive(it, "function");
    const char *in = flat ? "" : "function.";
    if (!cJSON_IsObject(it) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsObject(fn))
        return s_bad(param, p, err,
                     flat ? "a tool must be {\"type\": \"function\", \"name\": ..., \"parameters\": {...}} (only "
                            "function tools are supported)"
                          : "a tool must be {\"type\": \"function\", \"function\": {\"name\": ...}} (only "
                            "function tools are supported)");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    snprintf(p, sizeof p, "tools[%zu].%sname", i, in);
    if (!cJSON_IsString(name) || !s_name_ok(name->valuestring))
        return s_bad(param, p, err, "a function's name must be 1 to 64 letters, digits, '_' or '-'");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    snprintf(p, sizeof p, "tools[%zu].%sparameters", i, in);
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return s_bad(param, p, err, "a function's parameters must be a JSON schema (an object)");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
    snprintf(p, sizeof p, "tools[%zu].%sdescription", i, in);
    if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))
        return s_bad(param, p, err, "a function's description must be a string");
    const cJSON *strict = cJSON_GetObjectItemCaseSensitive(fn, "strict");
    snprintf(p, sizeof p, "tools[%zu].%sstrict", i, in);
    if (strict && !cJSON_IsNull(strict) && !cJSON_IsBool(strict))
        return s_bad(param, p, err, "a function's strict must be true or false");
    out->name = strdup(name->valuestring);
    out->params = cJSON_IsObject(params) ? mc_toolcall_print(params) : NULL;
    cJSON *nested = flat ? s_nest(it) : NULL;
    out->json = flat ? (nested ? mc_toolcall_print(nested) : NULL) : mc_toolcall_print(it);
    cJSON_Delete(nested);
    if (!out->name || !out->json || (cJSON_IsObject(params) && !out->params))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return MC_OK;
}

static mc_err_t s_choice(const cJSON *c, bool flat, mc_toolcall_req_t *t, char *param, char *err) {
    const char *shape = flat ? "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                               "\"name\": ...}"
                             : "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                               "\"function\": {\"name\": ...}}";
    if (!c || cJSON_IsNull(c)) return MC_OK;
    if (cJSON_IsString(c)) {
        if (!strcmp(c->valuestring, "auto")) t->choice = MC_TOOL_CHOICE_AUTO;
        else if (!strcmp(c->valuestring, "none")) t->choice = MC_TOOL_CHOICE_NONE;
        else if (!strcmp(c->valuestring, "required")) t->choice = MC_TOOL_CHOICE_REQUIRED;
        else return s_bad(param, "tool_choice", err, shape);
        return MC_OK;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
    const cJSON *fn = flat ? c : cJSON_GetObjectItemCaseSensitive(c, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsObject(c) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsString(name))
        return s_bad(param, "tool_choice", err, shape);
    for (size_t i = 0; i < t->n_tools; i++)
        if (!strcmp(t->tools[i].name, name->valuestring)) {
            t->choice = MC_TOOL_CHOICE_NAMED;
            if (!(t->forced = strdup(name->valuestring))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            return MC_OK;
        }
    return s_bad(param, flat ? "tool_choice.name" : "tool_choice.function.name", err,
                 "'tool_choice' names a function that is not in 'tools'");
}

static mc_err_t s_req_parse(const cJSON *root, bool flat, mc_toolcall_req_t *out, char *param, char *err) {
    mc_toolcall_req_t t = {.parallel = true};
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    mc_err_t rc = MC_OK;
    if (tools && !cJSON_IsNull(tools)) {
        if (!cJSON_IsArray(tools)) return s_bad(param, "tools", err, "'tools' must be an array of function tools");
        const size_t n = (size_t)cJSON_GetArraySize(tools);
        if (n > MC_TOOLCALL_MAX_TOOLS) return s_bad(param, "tools", err, "at most 128 tools");
        if (n && !(t.tools = calloc(n, sizeof *t.tools))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        const cJSON *it;
        cJSON_ArrayForEach(it, tools) {
            rc = s_tool(it, t.n_tools, flat, &t.tools[t.n_tools], param, err);
            t.n_tools++;
            if (rc) break;
            for (size_t k = 0; k + 1 < t.n_tools; k++)
                if (!strcmp(t.tools[k].name, t.tools[t.n_tools - 1].name)) {
                    rc = s_bad(param, "tools", err, "two tools have the same name");
                    break;
                }
            if (rc) break;
        }
    }
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (!rc) rc = s_choice(choice, flat, &t, param, err);
    if (!rc && (t.choice == MC_TOOL_CHOICE_REQUIRED) && !t.n_tools)
        rc = s_bad(param, "tool_choice", err, "'tool_choice' asks for a call but there are no 'tools'");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parallel_tool_calls");
    if (!rc && par && !cJSON_IsNull(par)) {
        if (!cJSON_IsBool(par)) rc = s_bad(param, "parallel_tool_calls", err, "'parallel_tool_calls' must be true or false");
        else t.parallel = cJSON_IsTrue(par);
    }
    if (rc) {
        mc_toolcall_req_free(&t);
        return rc;
    }
    *out = t;
    return MC_OK;
}

mc_err_t mc_toolcall_req_parse(const cJSON *root, mc_toolcall_req_t *out, char *param, char *err) {
    return s_req_parse(root, false, out, param, err);
}

mc_err_t mc_toolcall_req_parse_flat(const cJSON *root, mc_toolcall_req_t *out, char *param, char *err) {
    return s_req_parse(root, true, out, param, err);
}

bool mc_toolcall_active(const mc_toolcall_req_t *t) { return t->n_tools > 0 && t->choice != MC_TOOL_CHOICE_NONE; }

// --- the model's calls --------------------------------------------------------------------

const char *mc_toolcall_marker(mc_chat_style_t style) {
    if (style == MC_CHAT_STYLE_MISTRAL_V3) return MC_CHAT_V3_CALLS;
    if (style == MC_CHAT_STYLE_DEEPSEEK_V3) return MC_CHAT_DS_CALLS_BEGIN;
    if (style == MC_CHAT_STYLE_HARMONY) return MC_CHAT_HARMONY_TO;
    return MC_CHAT_CALL_OPEN;
}

size_t mc_toolcall_marker_tokens(mc_chat_style_t style, const char *const **names) {
    static const char *const v3[] = {MC_CHAT_V3_CALLS};
    static const char *const ds[] = {MC_CHAT_DS_CALLS_BEGIN, MC_CHAT_DS_CALLS_END, MC_CHAT_DS_CALL_BEGIN,
                                     MC_CHAT_DS_CALL_END, MC_CHAT_DS_SEP};
    static const char *const glm[] = {MC_CHAT_CALL_OPEN,      MC_CHAT_CALL_CLOSE,      MC_CHAT_GLM_KEY_OPEN,
                                      MC_CHAT_GLM_KEY_CLOSE,  MC_CHAT_GLM_VALUE_OPEN, MC_CHAT_GLM_VALUE_CLOSE};
    // gpt-oss's structure is control tokens throughout: every answer needs them (reply.h).
    static const char *const harmony[] = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>"};
    switch (style) {
    case MC_CHAT_STYLE_HARMONY: *names = harmony; return sizeof harmony / sizeof *harmony;
    case MC_CHAT_STYLE_MISTRAL_V3: *names = v3; return 1;
    case MC_CHAT_STYLE_DEEPSEEK_V3: *names = ds; return sizeof ds / sizeof *ds;
    case MC_CHAT_STYLE_GLM4: *names = glm; return sizeof glm / sizeof *glm;
    default: *names = NULL; return 0;
    }
}

void mc_toolcall_list_free(mc_toolcall_list_t *l) {
    for (size_t i = 0; i < l->n; i++) free(l->calls[i].name), free(l->calls[i].arguments);
    free(l->calls);
    l->calls = NULL, l->n = 0;
}

static size_t s_skip_ws(const char *t, size_t len, size_t at) {
    while (at < len && (t[at] == ' ' || t[at] == '\n' || t[at] == '\t' || t[at] == '\r')) at++;
    return at;
}

static bool s_starts(const char *t, size_t len, size_t at, const char *s) {
    const size_t n = strlen(s);
    return at + n <= len && !memcmp(t + at, s, n);
}

// One JSON value at t[*at..len): parsed, *at after it.
static cJSON *s_json(const char *t, size_t len, size_t *at) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(t + *at, len - *at, &end, false);
    if (v) *at = (size_t)(end - t);
    return v;
}

// A call of the function name with args into the list, checked against
// req: a function offered (the forced one when tool_choice names one), an
// object of arguments (or JSON text of one).
static mc_err_t s_add_named(const char *name, const cJSON *args, const mc_toolcall_req_t *req, const char *seed,
                            mc_toolcall_list_t *l, char *err) {
    bool known = false;
    for (size_t i = 0; i < req->n_tools && !known; i++) known = !strcmp(req->tools[i].name, name);
    if (!known || (req->choice == MC_TOOL_CHOICE_NAMED && strcmp(name, req->forced)))
        return mc_err_set(err, MC_ERR_FORMAT, "the call names a function that was not offered");
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) args = parsed = cJSON_Parse(args->valuestring); // arguments given as JSON text
    if (args && !cJSON_IsObject(args)) args = NULL;
    char *a = args ? cJSON_PrintUnformatted(args) : NULL;
    cJSON_Delete(parsed);
    if (!a) return mc_err_set(err, MC_ERR_FORMAT, "a call's arguments are not a JSON object");
    mc_toolcall_t *calls = realloc(l->calls, (l->n + 1) * sizeof *calls);
    char *nm = strdup(name);
    if (!calls || !nm) {
        if (calls) l->calls = calls;
        free(a), free(nm);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    l->calls = calls;
    mc_toolcall_t *c = &l->calls[l->n];
    // FNV-1a of the seed, then the index: 24 hex digits.
    uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
    for (const char *s = seed ? seed : ""; *s; s++) h1 = (h1 ^ (unsigned char)*s) * 1099511628211ull;
    h1 = (h1 ^ (uint64_t)l->n) * 1099511628211ull;
    h2 ^= h1, h2 *= 0xff51afd7ed558ccdull, h2 ^= h2 >> 33;
    snprintf(c->id, sizeof c->id, "call_%016llx%08llx", (unsigned long long)h1, (unsigned long long)(h2 & 0xffffffffu));
    c->name = nm, c->arguments = a;
    l->n++;
    return MC_OK;
}

// A call object {"name", "arguments"} into the list.
static mc_err_t s_add(const cJSON *o, const mc_toolcall_req_t *req, const char *seed, mc_toolcall_list_t *l, char *err) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name))
        return mc_err_set(err, MC_ERR_FORMAT, "a call is not {\"name\": ..., \"arguments\": {...}}");
    return s_add_named(name->valuestring, args, req, seed, l, err);
}

// The first s in t[at..len), or len.
static size_t s_find(const char *t, size_t len, size_t at, const char *s) {
    const size_t n = strlen(s);
    for (size_t i = at; i + n <= len; i++)
        if (t[i] == s[0] && !memcmp(t + i, s, n)) return i;
    return len;
}

// t[a..b) without the whitespace around it, as a string (malloc'd).
static char *s_trimmed(const char *t, size_t a, size_t b) {
    a = s_skip_ws(t, b, a);
    while (b > a && (t[b - 1] == ' ' || t[b - 1] == '\n' || t[b - 1] == '\t' || t[b - 1] == '\r')) b--;
    char *s = malloc(b - a + 1);
    if (s) memcpy(s, t + a, b - a), s[b - a] = 0;
    return s;
}

// deepseek-v3's calls, from <｜tool▁calls▁begin｜>: each
// <｜tool▁call▁begin｜> "function" <｜tool▁sep｜> name "\n```json\n" arguments
// "\n```" <｜tool▁call▁end｜> (whitespace between them allowed, the fence
// optional), then <｜tool▁calls▁end｜> (which the end of the answer may stand for).
static mc_err_t s_parse_ds(const char *text, size_t len, const mc_toolcall_req_t *req, const char *seed,
                           mc_toolcall_list_t *l, char *err) {
    if (!s_starts(text, len, 0, MC_CHAT_DS_CALLS_BEGIN)) return mc_err_set(err, MC_ERR_FORMAT, "no calls marker");
    size_t at = strlen(MC_CHAT_DS_CALLS_BEGIN);
    for (;;) {
        at = s_skip_ws(text, len, at);
        if (at == len) break;
        if (s_starts(text, len, at, MC_CHAT_DS_CALLS_END)) {
            at += strlen(MC_CHAT_DS_CALLS_END);
            break;
        }
        if (!s_starts(text, len, at, MC_CHAT_DS_CALL_BEGIN)) return mc_err_set(err, MC_ERR_FORMAT, "not a call");
        at = s_skip_ws(text, len, at + strlen(MC_CHAT_DS_CALL_BEGIN));
        if (!s_starts(text, len, at, "function")) return mc_err_set(err, MC_ERR_FORMAT, "a call of another type");
        at = s_skip_ws(text, len, at + 8);
        if (!s_starts(text, len, at, MC_CHAT_DS_SEP)) return mc_err_set(err, MC_ERR_FORMAT, "no separator");
        at += strlen(MC_CHAT_DS_SEP);
        size_t eol = at;
        while (eol < len && text[eol] != '\n' && text[eol] != '`' && text[eol] != '{') eol++;
        char *name = s_trimmed(text, at, eol);
        if (!name) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        at = s_skip_ws(text, len, eol);
        const bool fence = s_starts(text, len, at, "```");
        if (fence) {
            at += 3;
            if (s_starts(text, len, at, "json")) at += 4;
            at = s_skip_ws(text, len, at);
        }
        cJSON *v = s_json(text, len, &at);
        mc_err_t rc = MC_OK;
        if (!v) rc = mc_err_set(err, MC_ERR_FORMAT, "a call's arguments are not JSON");
        else rc = s_add_named(name, v, req, seed, l, err);
        cJSON_Delete(v), free(name);
        if (rc) return rc;
        at = s_skip_ws(text, len, at);
        if (fence) {
            if (!s_starts(text, len, at, "```")) return mc_err_set(err, MC_ERR_FORMAT, "an open fence");
            at = s_skip_ws(text, len, at + 3);
        }
        if (!s_starts(text, len, at, MC_CHAT_DS_CALL_END)) return mc_err_set(err, MC_ERR_FORMAT, "a call not closed");
        at += strlen(MC_CHAT_DS_CALL_END);
    }
    if (s_skip_ws(text, len, at) != len) return mc_err_set(err, MC_ERR_FORMAT, "text after the calls");
    return MC_OK;
}

// Whether the parameters schema (printed JSON; NULL: none) gives key the type "string".
static bool s_string_param(const char *params, const char *key) {
    cJSON *p = params ? cJSON_Parse(params) : NULL;
    const cJSON *prop = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "properties"), key);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(prop, "type");
    const bool str = cJSON_IsString(type) && !strcmp(type->valuestring, "string");
    cJSON_Delete(p);
    return str;
}

// A GLM argument value t[a..b): its text for a parameter the schema types
// as a string (the template writes strings as they are), else the JSON it
// is when it is JSON, else its text.
static cJSON *s_glm_value(const char *params, const char *key, const char *t, size_t a, size_t b) {
    if (!s_string_param(params, key)) {
        const size_t s0 = s_skip_ws(t, b, a);
        size_t s1 = b;
        while (s1 > s0 && (t[s1 - 1] == ' ' || t[s1 - 1] == '\n' || t[s1 - 1] == '\t' || t[s1 - 1] == '\r')) s1--;
        size_t at = s0;
        cJSON *v = s1 > s0 ? s_json(t, s1, &at) : NULL;
        if (v && at == s1) return v;
        cJSON_Delete(v);
    }
    char *s = malloc(b - a + 1);
    if (!s) return NULL;
    memcpy(s, t + a, b - a), s[b - a] = 0;
    cJSON *v = cJSON_CreateString(s);
    free(s);
    return v;
}

// glm4's calls: each "<tool_call>" name, then <arg_key> key </arg_key>
// <arg_value> value </arg_value> pairs, "</tool_call>"; whitespace around
// them allowed. A key given twice, a pair not closed or text between: malformed.
static mc_err_t s_parse_glm(const char *text, size_t len, const mc_toolcall_req_t *req, const char *seed,
                            mc_toolcall_list_t *l, char *err) {
    size_t at = s_skip_ws(text, len, 0);
    while (at < len) {
        if (!s_starts(text, len, at, MC_CHAT_CALL_OPEN)) return mc_err_set(err, MC_ERR_FORMAT, "text between the calls");
        at += strlen(MC_CHAT_CALL_OPEN);
        size_t end = at;
        while (end < len && text[end] != '\n' && text[end] != '<') end++;
        char *name = s_trimmed(text, at, end);
        cJSON *args = cJSON_CreateObject();
        mc_err_t rc = name && args ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        const char *params = NULL;
        for (size_t i = 0; !rc && i < req->n_tools; i++)
            if (!strcmp(req->tools[i].name, name)) params = req->tools[i].params;
        at = end;
        while (!rc) {
            at = s_skip_ws(text, len, at);
            if (!s_starts(text, len, at, MC_CHAT_GLM_KEY_OPEN)) break;
            const size_t k0 = at + strlen(MC_CHAT_GLM_KEY_OPEN), k1 = s_find(text, len, k0, MC_CHAT_GLM_KEY_CLOSE);
            at = s_skip_ws(text, len, k1 + strlen(MC_CHAT_GLM_KEY_CLOSE));
            if (k1 == len || !s_starts(text, len, at, MC_CHAT_GLM_VALUE_OPEN)) {
                rc = mc_err_set(err, MC_ERR_FORMAT, "an argument without its value");
                break;
            }
            const size_t v0 = at + strlen(MC_CHAT_GLM_VALUE_OPEN), v1 = s_find(text, len, v0, MC_CHAT_GLM_VALUE_CLOSE);
            if (v1 == len) {
                rc = mc_err_set(err, MC_ERR_FORMAT, "a value not closed");
                break;
            }
            at = v1 + strlen(MC_CHAT_GLM_VALUE_CLOSE);
            char *key = s_trimmed(text, k0, k1);
            cJSON *v = key ? s_glm_value(params, key, text, v0, v1) : NULL;
            if (!key || !v) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            else if (!*key || cJSON_GetObjectItemCaseSensitive(args, key))
                rc = mc_err_set(err, MC_ERR_FORMAT, "an argument's key empty or given twice");
            else if (cJSON_AddItemToObject(args, key, v)) v = NULL;
            else rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            cJSON_Delete(v), free(key);
        }
        if (!rc && !s_starts(text, len, at, MC_CHAT_CALL_CLOSE))
            rc = mc_err_set(err, MC_ERR_FORMAT, "a call is not closed by </tool_call>");
        if (!rc) rc = s_add_named(name, args, req, seed, l, err);
        cJSON_Delete(args), free(name);
        if (rc) return rc;
        at = s_skip_ws(text, len, at + strlen(MC_CHAT_CALL_CLOSE));
    }
    return MC_OK;
}

// gpt-oss's calls: each a message whose header names its recipient
// " to=functions.NAME" (before or after "<|channel|>commentary", the
// message after "<|start|>assistant" for any but the first), " json" or
// " <|constrain|>json" in it, then "<|message|>" and the arguments, one
// JSON object, ended by "<|call|>" (the end token: not in the text) or
// "<|end|>". A header without a recipient, or one naming another
// namespace, is not a call.
static mc_err_t s_parse_harmony(const char *text, size_t len, const mc_toolcall_req_t *req, const char *seed,
                                mc_toolcall_list_t *l, char *err) {
    static const char start[] = "<|start|>assistant", msg[] = "<|message|>", to[] = MC_CHAT_HARMONY_TO "functions.";
    size_t at = 0;
    while (at < len) {
        if (s_starts(text, len, at, start)) at += sizeof start - 1;
        else if (l->n) return mc_err_set(err, MC_ERR_FORMAT, "text after a call");
        const size_t m = s_find(text, len, at, msg), r = s_find(text, m, at, to);
        if (m == len) return mc_err_set(err, MC_ERR_FORMAT, "a call's header is not whole");
        if (r == m) return mc_err_set(err, MC_ERR_FORMAT, "a message to no function");
        size_t e = r + sizeof to - 1;
        while (e < m && text[e] != ' ' && text[e] != '<') e++;
        char *name = s_trimmed(text, r + sizeof to - 1, e);
        at = s_skip_ws(text, len, m + sizeof msg - 1);
        cJSON *v = name ? s_json(text, len, &at) : NULL;
        mc_err_t rc = !name ? mc_err_set(err, MC_ERR_NOMEM, "out of memory")
                      : !v  ? mc_err_set(err, MC_ERR_FORMAT, "a call's arguments are not JSON")
                            : s_add_named(name, v, req, seed, l, err);
        cJSON_Delete(v), free(name);
        if (rc) return rc;
        at = s_skip_ws(text, len, at);
        if (s_starts(text, len, at, "<|end|>")) at += 7;
        else if (s_starts(text, len, at, "<|call|>")) at += 8;
    }
    return MC_OK;
}

mc_err_t mc_toolcall_parse(mc_chat_style_t style, const char *text, size_t len, const mc_toolcall_req_t *req,
                           const char *id_seed, mc_toolcall_list_t *out, char *err) {
    mc_toolcall_list_t l = {0};
    mc_err_t rc = MC_OK;
    size_t at = 0;
    if (style == MC_CHAT_STYLE_DEEPSEEK_V3) {
        rc = s_parse_ds(text, len, req, id_seed, &l, err);
    } else if (style == MC_CHAT_STYLE_HARMONY) {
        rc = s_parse_harmony(text, len, req, id_seed, &l, err);
    } else if (style == MC_CHAT_STYLE_GLM4) {
        rc = s_parse_glm(text, len, req, id_seed, &l, err);
    } else if (style == MC_CHAT_STYLE_MISTRAL_V3) {
        if (!s_starts(text, len, 0, MC_CHAT_V3_CALLS)) return mc_err_set(err, MC_ERR_FORMAT, "no [TOOL_CALLS]");
        at = s_skip_ws(text, len, strlen(MC_CHAT_V3_CALLS));
        cJSON *v = s_json(text, len, &at);
        if (!v) rc = mc_err_set(err, MC_ERR_FORMAT, "[TOOL_CALLS] is not followed by JSON");
        else if (cJSON_IsArray(v)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, v) if (!rc) rc = s_add(it, req, id_seed, &l, err);
        } else {
            rc = s_add(v, req, id_seed, &l, err);
        }
        cJSON_Delete(v);
        if (!rc && s_skip_ws(text, len, at) != len) rc = mc_err_set(err, MC_ERR_FORMAT, "text after the calls");
    } else {
        at = s_skip_ws(text, len, 0);
        while (!rc && at < len) {
            if (!s_starts(text, len, at, MC_CHAT_CALL_OPEN)) {
                rc = mc_err_set(err, MC_ERR_FORMAT, "text between or after the calls");
                break;
            }
            at += strlen(MC_CHAT_CALL_OPEN);
            at = s_skip_ws(text, len, at);
            cJSON *v = s_json(text, len, &at);
            if (!v) rc = mc_err_set(err, MC_ERR_FORMAT, "<tool_call> is not followed by a JSON object");
            else rc = s_add(v, req, id_seed, &l, err);
            cJSON_Delete(v);
            at = s_skip_ws(text, len, at);
            if (!rc && !s_starts(text, len, at, MC_CHAT_CALL_CLOSE))
                rc = mc_err_set(err, MC_ERR_FORMAT, "a call is not closed by </tool_call>");
            if (!rc) at = s_skip_ws(text, len, at + strlen(MC_CHAT_CALL_CLOSE));
        }
    }
    if (!rc && l.n == 0) rc = mc_err_set(err, MC_ERR_FORMAT, "no call");
    if (rc) {
        mc_toolcall_list_free(&l);
        return rc;
    }
    while (!req->parallel && l.n > 1) { // one call only: the first
        l.n--;
        free(l.calls[l.n].name), free(l.calls[l.n].arguments);
    }
    *out = l;
    return MC_OK;
}

// --- forced calls ----------------------------------------------------------------------------

static void s_call_schema(s_buf_t *b, const mc_toolcall_tool_t *t) {
    s_puts(b, "{\"type\": \"object\", \"properties\": {\"name\": {\"const\": \"");
    s_puts(b, t->name); // letters, digits, '_' and '-': nothing to escape
    s_puts(b, "\"}, \"arguments\": ");
    s_puts(b, t->params ? t->params : "{\"type\": \"object\"}");
    s_puts(b, "}, \"required\": [\"name\", \"arguments\"], \"additionalProperties\": false}");
}

// deepseek-v3's forced call: the name stands outside the JSON, so the
// function must be known: the named one, or the only tool.
static mc_err_t s_constraint_ds(const mc_toolcall_req_t *t, mc_toolcall_constraint_t *out, char *err) {
    const mc_toolcall_tool_t *tool = NULL;
    for (size_t i = 0; i < t->n_tools; i++)
        if (t->choice == MC_TOOL_CHOICE_REQUIRED ? t->n_tools == 1 : !strcmp(t->tools[i].name, t->forced))
            tool = &t->tools[i];
    if (!tool)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "tool_choice \"required\" with several tools cannot be enforced in the deepseek-v3 chat "
                          "format (the function's name is not part of the JSON); name one function");
    s_buf_t p = {0};
    s_puts(&p, MC_CHAT_DS_CALLS_BEGIN MC_CHAT_DS_CALL_BEGIN "function" MC_CHAT_DS_SEP);
    s_puts(&p, tool->name);
    s_puts(&p, "\n```json\n");
    out->prefix = s_done(&p);
    out->schema = strdup(tool->params ? tool->params : "{\"type\": \"object\"}");
    out->suffix = strdup("\n```" MC_CHAT_DS_CALL_END MC_CHAT_DS_CALLS_END);
    if (!out->schema || !out->prefix || !out->suffix) {
        mc_toolcall_constraint_free(out);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    return MC_OK;
}

mc_err_t mc_toolcall_constraint(const mc_toolcall_req_t *t, mc_chat_style_t style, bool *forced,
                                mc_toolcall_constraint_t *out, char *err) {
    memset(out, 0, sizeof *out);
    *forced = t->n_tools && (t->choice == MC_TOOL_CHOICE_REQUIRED || t->choice == MC_TOOL_CHOICE_NAMED);
    if (!*forced) return MC_OK;
    if (style == MC_CHAT_STYLE_GLM4)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "a forced tool call (tool_choice \"required\" or a named function) cannot be enforced in "
                          "the glm4 chat format: its arguments are <arg_key>/<arg_value> pairs, not one JSON value; "
                          "use \"auto\"");
    if (style == MC_CHAT_STYLE_HARMONY)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "a forced tool call (tool_choice \"required\" or a named function) cannot be enforced in "
                          "the gpt-oss chat format yet: the header naming the function interleaves control tokens "
                          "(<|channel|>, <|constrain|>, <|message|>) with text, which constrained decoding (forced "
                          "tokens, then text) cannot spell; use \"auto\"");
    if (style == MC_CHAT_STYLE_DEEPSEEK_V3) return s_constraint_ds(t, out, err);
    s_buf_t call = {0}, s = {0};
    size_t n = 0;
    for (size_t i = 0; i < t->n_tools; i++)
        if (t->choice == MC_TOOL_CHOICE_REQUIRED || !strcmp(t->tools[i].name, t->forced)) {
            s_puts(&call, n ? ", " : "");
            s_call_schema(&call, &t->tools[i]);
            n++;
        }
    const char *one = call.p ? call.p : "{}";
    const bool v3 = style == MC_CHAT_STYLE_MISTRAL_V3;
    if (v3) s_puts(&s, "{\"type\": \"array\", \"items\": ");
    if (n > 1) s_puts(&s, "{\"anyOf\": [");
    s_puts(&s, one);
    if (n > 1) s_puts(&s, "]}");
    if (v3) s_puts(&s, t->parallel ? ", \"minItems\": 1}" : ", \"minItems\": 1, \"maxItems\": 1}");
    free(s_done(&call));
    out->schema = s_done(&s);
    out->prefix = strdup(v3 ? MC_CHAT_V3_CALLS : MC_CHAT_CALL_OPEN "\n");
    out->suffix = strdup(v3 ? "" : "\n" MC_CHAT_CALL_CLOSE);
    out->prefix_token = v3;
    if (!out->schema || !out->prefix || !out->suffix) {
        mc_toolcall_constraint_free(out);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    return MC_OK;
}

void mc_toolcall_constraint_free(mc_toolcall_constraint_t *c) {
    free(c->prefix), free(c->schema), free(c->suffix);
    memset(c, 0, sizeof *c);
}
