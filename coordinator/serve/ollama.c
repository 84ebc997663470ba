/*
 * ollama: Ollama's request bodies into the common request, and its answer
 * lines and model descriptions, with cJSON.
 */
#include "ollama.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// The Ollama release whose API these endpoints follow (fields and
// defaults); clients that check a minimum version read this.
#define S_VERSION "0.9.0"

// --- requests ----------------------------------------------------------------------------

// A field that must be absent, null, false or empty to be honoured here.
static mc_err_t s_unsupported(const cJSON *root, const char *key, const char *why, mc_api_error_t *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    const bool empty = !v || cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsString(v) && !v->valuestring[0]) ||
                       (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0);
    return empty ? MC_OK : mc_api_bad(e, key, "'%s' is not supported: %s", key, why);
}

// options: the sampling fields, num_predict, stop and repeat_last_n; the
// others (num_ctx, num_gpu, num_thread, ...) belong to the command line.
static mc_err_t s_options(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, "options");
    if (!o || cJSON_IsNull(o)) return MC_OK;
    if (!cJSON_IsObject(o)) return mc_api_bad(e, "options", "'options' must be an object");
    mc_err_t rc = mc_api_sampling(o, "options.", r, e);
    if (rc) return rc;
    double v = 0;
    bool given = false;
    if ((rc = mc_api_integer(o, "num_predict", "options.num_predict", -2, 1e9, &v, &given, e))) return rc;
    if (given && v == 0)
        return mc_api_bad(e, "options.num_predict", "'options.num_predict' must be positive, or -1 (no limit)");
    if (given) r->max_tokens = v > 0 ? (uint32_t)v : 0; // -1, -2: until the context is full
    given = false;
    if ((rc = mc_api_integer(o, "repeat_last_n", "options.repeat_last_n", -1, 1 << 20, &v, &given, e))) return rc;
    // -1 is Ollama's "the whole context": the longest window the sampler keeps.
    if (given) r->sampling.repeat_last_n = v < 0 ? 1 << 20 : (int32_t)v;
    return mc_api_stop(cJSON_GetObjectItemCaseSensitive(o, "stop"), "options.stop", r, e);
}

static mc_err_t s_common(const cJSON *root, mc_api_request_t *r, mc_api_error_t *e) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model)) return mc_api_bad(e, "model", "'model' is required (a string)");
    mc_err_t rc;
    if ((rc = s_unsupported(root, "images", "this model reads text only", e)) ||
        (rc = s_unsupported(root, "think", "this model does not think", e)))
        return rc;
    // format: "json" (any JSON object here) or a JSON Schema: constrained decoding.
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (cJSON_IsString(format) && !strcmp(format->valuestring, "json")) r->json = true;
    else if (cJSON_IsString(format) && !format->valuestring[0]) r->json = false;
    else if (format && !cJSON_IsNull(format) && (rc = mc_api_schema(format, "format", r, e))) return rc;
    r->stream = true; // Ollama streams unless told not to
    if ((rc = mc_api_bool(root, "stream", NULL, &r->stream, e))) return rc;
    return s_options(root, r, e);
}

static mc_err_t s_chat(const cJSON *root, mc_api_request_t *r, bool *load_only, mc_api_error_t *e) {
    char tparam[64] = "", terr[MC_ERR_LEN];
    mc_err_t trc = mc_toolcall_req_parse(root, &r->tools, tparam, terr); // OpenAI's shape, as Ollama takes it
    if (trc == MC_ERR_ARG) return mc_api_bad(e, tparam, "%s", terr);
    if (trc) return mc_api_error(e, 500, "server_error", NULL, NULL, "%s", terr);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (msgs && !cJSON_IsNull(msgs) && !cJSON_IsArray(msgs))
        return mc_api_bad(e, "messages", "'messages' must be an array of messages");
    const size_t n = cJSON_IsArray(msgs) ? (size_t)cJSON_GetArraySize(msgs) : 0;
    if (n == 0) {
        *load_only = true;
        return MC_OK;
    }
    if (n > MC_API_MAX_MESSAGES) return mc_api_bad(e, "messages", "at most %d messages", MC_API_MAX_MESSAGES);
    if (!(r->msgs = calloc(n, sizeof *r->msgs))) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const size_t i = r->n_msgs;
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) return mc_api_bad(e, param, "'%s' must be an object with a role and a content", param);
        mc_err_t rc = s_unsupported(m, "images", "this model reads text only", e);
        if (rc) return rc;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role)) return mc_api_bad(e, param, "'%s' must be a string", param);
        if (!mc_chat_role_from_name(role->valuestring, &r->msgs[i].role))
            return mc_api_bad(e, param, "'%s' is '%.*s': the roles are system, user, assistant and tool", param,
                              mc_api_quote_len(role->valuestring, 40), role->valuestring);
        // Ollama reads a missing content as empty.
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (c && !cJSON_IsString(c) && !cJSON_IsNull(c)) return mc_api_bad(e, param, "'%s' must be a string", param);
        r->msgs[i].content = cJSON_IsString(c) ? c->valuestring : "";
        r->msgs[i].len = strlen(r->msgs[i].content);
        if ((rc = mc_api_msg_calls(m, i, MC_API_DIALECT_OLLAMA, r, &r->msgs[i], e))) return rc;
        if (r->msgs[i].role == MC_CHAT_TOOL) { // Ollama names no call (newer clients may send its id)
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            r->msgs[i].tool_call_id = cJSON_IsString(id) ? id->valuestring : "";
        }
        r->n_msgs++;
    }
    r->chat = true;
    return MC_OK;
}

static mc_err_t s_generate(const cJSON *root, mc_api_request_t *r, bool *load_only, mc_api_error_t *e) {
    mc_err_t rc;
    if ((rc = s_unsupported(root, "suffix", "this server does not fill in the middle", e)) ||
        (rc = s_unsupported(root, "context", "send the conversation to /api/chat instead", e)) ||
        (rc = s_unsupported(root, "template", "the chat format comes from the model's vocabulary", e)))
        return rc;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt"), *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
    if (p && !cJSON_IsString(p) && !cJSON_IsNull(p)) return mc_api_bad(e, "prompt", "'prompt' must be a string");
    if (sys && !cJSON_IsString(sys) && !cJSON_IsNull(sys)) return mc_api_bad(e, "system", "'system' must be a string");
    bool raw = false;
    if ((rc = mc_api_bool(root, "raw", NULL, &raw, e))) return rc;
    const char *prompt = cJSON_IsString(p) ? p->valuestring : "";
    if (!prompt[0]) {
        *load_only = true;
        return MC_OK;
    }
    if (raw) { // the prompt as it is, as /v1/completions takes it
        r->chat = false;
        r->prompt = prompt, r->prompt_len = strlen(prompt);
        return MC_OK;
    }
    if (!(r->msgs = calloc(2, sizeof *r->msgs))) return mc_api_error(e, 500, "server_error", NULL, NULL, "out of memory");
    if (cJSON_IsString(sys) && sys->valuestring[0])
        r->msgs[r->n_msgs++] = (mc_chat_msg_t){.role = MC_CHAT_SYSTEM, .content = sys->valuestring, .len = strlen(sys->valuestring)};
    r->msgs[r->n_msgs++] = (mc_chat_msg_t){.role = MC_CHAT_USER, .content = prompt, .len = strlen(prompt)};
    r->chat = true;
    return MC_OK;
}

mc_err_t mc_ollama_parse(const char *body, size_t len, bool chat, const mc_sampler_params_t *defaults,
                         mc_api_request_t *out, bool *load_only, mc_api_error_t *e) {
    mc_api_request_t r;
    const cJSON *root;
    mc_err_t rc = mc_api_begin(body, len, defaults, &r, &root, e);
    if (rc) return rc;
    bool load = false;
    if (!(rc = s_common(root, &r, e))) rc = chat ? s_chat(root, &r, &load, e) : s_generate(root, &r, &load, e);
    if (rc) {
        mc_api_request_free(&r);
        return rc;
    }
    *load_only = load;
    *out = r;
    return MC_OK;
}

mc_err_t mc_ollama_show_parse(const char *body, size_t len, char *name, size_t cap, mc_api_error_t *e) {
    mc_api_request_t r;
    const cJSON *root;
    const mc_sampler_params_t d = mc_sampler_params_default();
    mc_err_t rc = mc_api_begin(body, len, &d, &r, &root, e);
    if (rc) return rc;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!m || cJSON_IsNull(m)) m = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!cJSON_IsString(m)) rc = mc_api_bad(e, "model", "'model' is required (a string)");
    else snprintf(name, cap, "%s", m->valuestring);
    mc_api_request_free(&r);
    return rc;
}

// --- answers -------------------------------------------------------------------------------

static char *s_print(cJSON *root) {
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

// Now as Ollama writes it: RFC 3339 in UTC with nanoseconds.
static void s_now(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%09ldZ", day, (long)ts.tv_nsec);
}

static void s_rfc3339(int64_t unix_s, char *buf, size_t cap) {
    const time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// text (len bytes; a NUL byte as U+FFFD) as a JSON string.
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

// Ollama's tool_calls: [{"function": {"index", "name", "arguments": {...}}}].
static cJSON *s_tool_calls(const mc_toolcall_t *calls, size_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject(), *fn = cJSON_AddObjectToObject(c, "function");
        cJSON_AddNumberToObject(fn, "index", (double)i);
        cJSON_AddStringToObject(fn, "name", calls[i].name);
        cJSON *args = cJSON_Parse(calls[i].arguments);
        cJSON_AddItemToObject(fn, "arguments", args ? args : cJSON_CreateObject());
        cJSON_AddItemToArray(arr, c);
    }
    return arr;
}

static cJSON *s_line(const mc_ollama_answer_t *a, const char *text, size_t len, bool done) {
    cJSON *o = cJSON_CreateObject();
    char now[64];
    s_now(now, sizeof now);
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "created_at", now);
    if (a->chat) {
        cJSON *m = cJSON_AddObjectToObject(o, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", s_text(text, len));
    } else {
        cJSON_AddItemToObject(o, "response", s_text(text, len));
    }
    cJSON_AddBoolToObject(o, "done", done);
    return o;
}

char *mc_ollama_chunk_json(const mc_ollama_answer_t *a, const char *text, size_t len) {
    return s_print(s_line(a, text, len, false));
}

char *mc_ollama_calls_json(const mc_ollama_answer_t *a, const mc_toolcall_t *calls, size_t n) {
    cJSON *o = s_line(a, "", 0, false);
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(o, "message"), "tool_calls", s_tool_calls(calls, n));
    return s_print(o);
}

static double s_ns(double s) { return s > 0 ? floor(s * 1e9) : 0; }

char *mc_ollama_final_json(const mc_ollama_answer_t *a, const mc_api_result_t *res, const mc_gen_usage_t *u,
                           double total_s) {
    cJSON *o = s_line(a, res->text, res->len, true);
    if (a->chat && res->n_calls)
        cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(o, "message"), "tool_calls",
                              s_tool_calls(res->calls, res->n_calls));
    cJSON_AddStringToObject(o, "done_reason", res->why == MC_FINISH_NONE ? "load" : mc_api_finish_reason(res->why));
    cJSON_AddNumberToObject(o, "total_duration", s_ns(total_s));
    cJSON_AddNumberToObject(o, "load_duration", 0); // the model is loaded once, at start
    if (res->why != MC_FINISH_NONE) {
        cJSON_AddNumberToObject(o, "prompt_eval_count", res->prompt_tokens);
        cJSON_AddNumberToObject(o, "prompt_eval_duration", s_ns(u->prompt_s));
        cJSON_AddNumberToObject(o, "eval_count", res->completion_tokens);
        cJSON_AddNumberToObject(o, "eval_duration", s_ns(u->generate_s));
    }
    return s_print(o);
}

char *mc_ollama_error_json(const char *message) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", message);
    return s_print(o);
}

char *mc_ollama_version_json(void) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", S_VERSION);
    return s_print(o);
}

bool mc_ollama_name_is(const mc_ollama_model_t *m, const char *name) {
    const size_t n = strlen(m->name);
    return !strncmp(name, m->name, n) && (!name[n] || !strcmp(name + n, ":latest"));
}

// "47B", "1.2M": how Ollama writes a parameter count.
static void s_count(uint64_t n, char *buf, size_t cap) {
    if (n >= 1000000000ull) snprintf(buf, cap, "%.1fB", (double)n / 1e9);
    else if (n >= 1000000ull) snprintf(buf, cap, "%.1fM", (double)n / 1e6);
    else snprintf(buf, cap, "%.1fK", (double)n / 1e3);
}

static cJSON *s_details(const mc_ollama_model_t *m) {
    cJSON *d = cJSON_CreateObject();
    char count[32];
    s_count(m->parameters, count, sizeof count);
    cJSON_AddStringToObject(d, "parent_model", "");
    cJSON_AddStringToObject(d, "format", "gguf");
    cJSON_AddStringToObject(d, "family", m->family);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "families"), cJSON_CreateString(m->family));
    cJSON_AddStringToObject(d, "parameter_size", count);
    cJSON_AddStringToObject(d, "quantization_level", m->quantization);
    return d;
}

char *mc_ollama_tags_json(const mc_ollama_model_t *m) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_CreateObject();
    char name[160], when[40], digest[72];
    snprintf(name, sizeof name, "%s:latest", m->name);
    s_rfc3339(m->modified, when, sizeof when);
    // Ollama's digests are SHA-256 of the file; this server names its
    // weights by their 64-bit fingerprint (the cluster's, too).
    snprintf(digest, sizeof digest, "%016llx", (unsigned long long)m->fingerprint);
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "model", name);
    cJSON_AddStringToObject(e, "modified_at", when);
    cJSON_AddNumberToObject(e, "size", (double)m->size);
    cJSON_AddStringToObject(e, "digest", digest);
    cJSON_AddItemToObject(e, "details", s_details(m));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "models"), e);
    return s_print(root);
}

char *mc_ollama_show_json(const mc_ollama_model_t *m) {
    cJSON *root = cJSON_CreateObject();
    char when[40], key[96], modelfile[256];
    s_rfc3339(m->modified, when, sizeof when);
    snprintf(modelfile, sizeof modelfile, "# served by moe-cluster\nFROM %s\n", m->name);
    cJSON_AddStringToObject(root, "license", "");
    cJSON_AddStringToObject(root, "modelfile", modelfile);
    cJSON_AddStringToObject(root, "parameters", "");
    cJSON_AddStringToObject(root, "template", "");
    cJSON_AddItemToObject(root, "details", s_details(m));
    cJSON *info = cJSON_AddObjectToObject(root, "model_info");
    cJSON_AddStringToObject(info, "general.architecture", m->family);
    cJSON_AddNumberToObject(info, "general.parameter_count", (double)m->parameters);
    struct {
        const char *suffix;
        uint32_t v;
    } const kv[] = {{"context_length", m->context_length}, {"embedding_length", m->embedding_length},
                    {"block_count", m->n_layer},           {"expert_count", m->n_expert},
                    {"expert_used_count", m->n_expert_used}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", m->family, kv[i].suffix);
        cJSON_AddNumberToObject(info, key, kv[i].v);
    }
    cJSON *caps = cJSON_AddArrayToObject(root, "capabilities");
    cJSON_AddItemToArray(caps, cJSON_CreateString("completion"));
    cJSON_AddItemToArray(caps, cJSON_CreateString("tools"));
    cJSON_AddStringToObject(root, "modified_at", when);
    return s_print(root);
}
