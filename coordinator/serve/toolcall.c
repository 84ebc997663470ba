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
    return style == MC_CHAT_STYLE_MISTRAL_V3 ? MC_CHAT_V3_CALLS : MC_CHAT_CALL_OPEN;
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

// A call object {"name", "arguments"} into the list, checked against req.
static mc_err_t s_add(const cJSON *o, const mc_toolcall_req_t *req, const char *seed, mc_toolcall_list_t *l, char *err) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name))
        return mc_err_set(err, MC_ERR_FORMAT, "a call is not {\"name\": ..., \"arguments\": {...}}");
    bool known = false;
    for (size_t i = 0; i < req->n_tools && !known; i++) known = !strcmp(req->tools[i].name, name->valuestring);
    if (!known || (req->choice == MC_TOOL_CHOICE_NAMED && strcmp(name->valuestring, req->forced)))
        return mc_err_set(err, MC_ERR_FORMAT, "the call names a function that was not offered");
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) args = parsed = cJSON_Parse(args->valuestring); // arguments given as JSON text
    if (args && !cJSON_IsObject(args)) args = NULL;
    char *a = args ? cJSON_PrintUnformatted(args) : NULL;
    cJSON_Delete(parsed);
    if (!a) return mc_err_set(err, MC_ERR_FORMAT, "a call's arguments are not a JSON object");
    mc_toolcall_t *calls = realloc(l->calls, (l->n + 1) * sizeof *calls);
    char *nm = strdup(name->valuestring);
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

mc_err_t mc_toolcall_parse(mc_chat_style_t style, const char *text, size_t len, const mc_toolcall_req_t *req,
                           const char *id_seed, mc_toolcall_list_t *out, char *err) {
    mc_toolcall_list_t l = {0};
    mc_err_t rc = MC_OK;
    size_t at = 0;
    if (style == MC_CHAT_STYLE_MISTRAL_V3) {
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

mc_err_t mc_toolcall_constraint(const mc_toolcall_req_t *t, mc_chat_style_t style, bool *forced,
                                mc_toolcall_constraint_t *out, char *err) {
    memset(out, 0, sizeof *out);
    *forced = t->n_tools && (t->choice == MC_TOOL_CHOICE_REQUIRED || t->choice == MC_TOOL_CHOICE_NAMED);
    if (!*forced) return MC_OK;
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
