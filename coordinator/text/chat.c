/*
 * chat: the conversation formats of the families we run: Mistral's [INST]
 * format (v1 as text, v3 with control tokens and tools) for Mixtral, ChatML
 * and Qwen3's (tools, thinking) for Qwen3-MoE, Tulu for OLMoE instruct,
 * DeepSeek's V2 and V3/R1 formats, GLM-4.5's (thinking), GPT-OSS's harmony format.
 */
#include "chat.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char mc_chat_safe_prompt[] =
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, unethical, "
    "prejudiced, or negative content. Ensure replies promote fairness and positivity.";

const char mc_chat_style_names[] =
    "mistral-v1, mistral-v3, chatml, qwen3, tulu, deepseek-v2, deepseek-v3, glm4, gpt-oss";

static const char *const s_style_names[MC_CHAT_STYLE_COUNT] = {
    "mistral-v1", "chatml", "mistral-v3", "qwen3", "tulu", "deepseek-v2", "deepseek-v3", "glm4", "gpt-oss"};

// DeepSeek's markers (fullwidth bars, "▁" for spaces).
#define S_DS_USER "<｜User｜>"
#define S_DS_ASSISTANT "<｜Assistant｜>"
#define S_DS_EOS "<｜end▁of▁sentence｜>"
#define S_DS_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define S_DS_CALLS_END "<｜tool▁calls▁end｜>"
#define S_DS_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define S_DS_CALL_END "<｜tool▁call▁end｜>"
#define S_DS_SEP "<｜tool▁sep｜>"
#define S_DS_OUTPUTS_BEGIN "<｜tool▁outputs▁begin｜>"
#define S_DS_OUTPUTS_END "<｜tool▁outputs▁end｜>"
#define S_DS_OUTPUT_BEGIN "<｜tool▁output▁begin｜>"
#define S_DS_OUTPUT_END "<｜tool▁output▁end｜>"

const char *mc_chat_style_name(mc_chat_style_t s) { return s < MC_CHAT_STYLE_COUNT ? s_style_names[s] : "?"; }

bool mc_chat_style_from_name(const char *name, mc_chat_style_t *out) {
    if (!name) return false;
    if (!strcmp(name, "mistral") || !strcmp(name, "harmony")) {
        *out = name[0] == 'm' ? MC_CHAT_STYLE_MISTRAL : MC_CHAT_STYLE_HARMONY;
        return true;
    }
    for (int i = 0; i < MC_CHAT_STYLE_COUNT; i++)
        if (!strcmp(name, s_style_names[i])) {
            *out = (mc_chat_style_t)i;
            return true;
        }
    return false;
}

mc_chat_opts_t mc_chat_opts_default(void) { return (mc_chat_opts_t){MC_CHAT_STYLE_MISTRAL, NULL, 0, true, NULL, NULL}; }

bool mc_chat_role_from_name(const char *name, mc_chat_role_t *out) {
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    if (name && !strcmp(name, "developer")) { // OpenAI's newer name for the instructions a system message gives
        *out = MC_CHAT_SYSTEM;
        return true;
    }
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, names[i])) {
            *out = (mc_chat_role_t)i;
            return true;
        }
    return false;
}

static bool s_has(const mc_tokenizer_t *tok, const char *piece) {
    return tok && mc_tokenizer_find(tok, piece, strlen(piece)) >= 0;
}

mc_chat_style_t mc_chat_style_of(const mc_tokenizer_t *tok) {
    if (s_has(tok, "<|start|>") && s_has(tok, "<|channel|>") && s_has(tok, "<|message|>")) return MC_CHAT_STYLE_HARMONY;
    if (s_has(tok, "<|im_start|>") && s_has(tok, "<|im_end|>")) return MC_CHAT_STYLE_CHATML;
    if (s_has(tok, "[gMASK]") && s_has(tok, "<|user|>")) return MC_CHAT_STYLE_GLM4;
    if (s_has(tok, "<|user|>") && s_has(tok, "<|assistant|>")) return MC_CHAT_STYLE_TULU;
    if (s_has(tok, S_DS_USER) && s_has(tok, S_DS_ASSISTANT)) return MC_CHAT_STYLE_DEEPSEEK_V3;
    if (s_has(tok, S_DS_EOS)) return MC_CHAT_STYLE_DEEPSEEK_V2;
    if (s_has(tok, "[AVAILABLE_TOOLS]")) return MC_CHAT_STYLE_MISTRAL_V3;
    return MC_CHAT_STYLE_MISTRAL;
}

size_t mc_chat_end_ids(const mc_tokenizer_t *tok, int32_t out[MC_CHAT_MAX_END]) {
    const bool glm = s_has(tok, "[gMASK]"), harmony = s_has(tok, "<|channel|>");
    const int32_t ids[MC_CHAT_MAX_END] = {
        mc_tokenizer_eos(tok), mc_tokenizer_find(tok, "<|im_end|>", 10), mc_tokenizer_find(tok, "<|endoftext|>", 13),
        glm ? mc_tokenizer_find(tok, "<|user|>", 8) : -1, glm ? mc_tokenizer_find(tok, "<|observation|>", 15) : -1,
        harmony ? mc_tokenizer_find(tok, "<|return|>", 10) : -1, harmony ? mc_tokenizer_find(tok, "<|call|>", 8) : -1};
    size_t n = 0;
    for (size_t i = 0; i < MC_CHAT_MAX_END; i++) {
        bool seen = ids[i] < 0;
        for (size_t k = 0; k < n && !seen; k++) seen = out[k] == ids[i];
        if (!seen) out[n++] = ids[i];
    }
    return n;
}

// Whether t[0..len) contains the text s.
static bool s_in(const char *t, size_t len, const char *s) {
    const size_t n = strlen(s);
    for (size_t i = 0; i + n <= len; i++)
        if (t[i] == s[0] && !memcmp(t + i, s, n)) return true;
    return false;
}

mc_err_t mc_chat_style_from_template(const char *tmpl, size_t len, const mc_tokenizer_t *tok, mc_chat_style_t *out,
                                     char *err) {
    mc_chat_style_t s;
    // GLM's "[gMASK]<sop>" first: its templates also write <|user|> and <|assistant|> (tulu's markers).
    const bool glm = s_in(tmpl, len, "[gMASK]<sop>");
    if (s_in(tmpl, len, "<|start|>") && s_in(tmpl, len, "<|channel|>")) s = MC_CHAT_STYLE_HARMONY;
    else if (s_in(tmpl, len, "[AVAILABLE_TOOLS]") || s_in(tmpl, len, "[TOOL_CALLS]")) s = MC_CHAT_STYLE_MISTRAL_V3;
    else if (glm && s_in(tmpl, len, "<think>")) s = MC_CHAT_STYLE_GLM4;
    else if (glm) // ChatGLM4 / GLM-4-0414: another turn layout
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "the model's chat template is an older GLM's, not GLM-4.5's; name a format with "
                          "--chat-format (%s)",
                          mc_chat_style_names);
    else if (s_in(tmpl, len, "<|im_start|>"))
        s = s_in(tmpl, len, "<think>") || s_in(tmpl, len, "enable_thinking") ? MC_CHAT_STYLE_QWEN3 : MC_CHAT_STYLE_CHATML;
    else if (s_in(tmpl, len, "<|user|>") && s_in(tmpl, len, "<|assistant|>")) s = MC_CHAT_STYLE_TULU;
    else if (s_in(tmpl, len, S_DS_USER) && s_in(tmpl, len, S_DS_ASSISTANT)) s = MC_CHAT_STYLE_DEEPSEEK_V3;
    else if (s_in(tmpl, len, "Assistant: ' + message['content'] + eos_token")) s = MC_CHAT_STYLE_DEEPSEEK_V2;
    else if (s_in(tmpl, len, "[INST]")) s = s_has(tok, "[INST]") ? MC_CHAT_STYLE_MISTRAL_V3 : MC_CHAT_STYLE_MISTRAL;
    else
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "the model's chat template (tokenizer.chat_template) is none this server knows; "
                          "name its format with --chat-format (%s)",
                          mc_chat_style_names);
    *out = s;
    return MC_OK;
}

mc_err_t mc_chat_style_choose(const mc_gguf_t *g, const mc_tokenizer_t *tok, const char *name, mc_chat_style_t *out,
                              char *err) {
    if (name) {
        if (!mc_chat_style_from_name(name, out))
            return mc_err_set(err, MC_ERR_ARG, "--chat-format '%.40s' is not a format: %s", name, mc_chat_style_names);
        return MC_OK;
    }
    mc_gguf_str_t t;
    if (g && mc_gguf_get_str(g, "tokenizer.chat_template", &t) && t.len)
        return mc_chat_style_from_template(t.ptr, (size_t)t.len, tok, out, err);
    *out = mc_chat_style_of(tok);
    return MC_OK;
}

// --- the prompt: text pieces and tokens -------------------------------------------------

// Ids so far, the text piece being written, the first failure.
typedef struct {
    const mc_tokenizer_t *tok;
    int32_t *v;
    size_t n, cap;
    char *buf;
    size_t len, bcap;
    mc_err_t rc;
    char *err;
} s_b_t;

static void s_nomem(s_b_t *b) {
    if (!b->rc) b->rc = mc_err_set(b->err, MC_ERR_NOMEM, "out of memory");
}

static void s_push(s_b_t *b, int32_t id) {
    if (b->rc) return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return s_nomem(b);
        b->v = v, b->cap = cap;
    }
    b->v[b->n++] = id;
}

// Append text to the piece being written.
static void s_lit(s_b_t *b, const char *s, size_t n) {
    if (b->rc || !n) return;
    if (b->len + n + 1 > b->bcap) {
        size_t cap = b->bcap ? b->bcap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *t = realloc(b->buf, cap);
        if (!t) return s_nomem(b);
        b->buf = t, b->bcap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void s_str(s_b_t *b, const char *s) { s_lit(b, s, strlen(s)); }

// The piece written so far, tokenized on its own.
static void s_flush(s_b_t *b) {
    if (b->rc || !b->len) return;
    size_t cap = mc_tokenizer_max_tokens(b->len), n;
    int32_t *tmp = malloc(cap * sizeof *tmp);
    if (!tmp) return s_nomem(b);
    mc_err_t rc = mc_tokenizer_encode(b->tok, b->buf, b->len, false, tmp, cap, &n, b->err);
    if (rc) b->rc = rc;
    for (size_t i = 0; !rc && i < n; i++) s_push(b, tmp[i]);
    free(tmp);
    b->len = 0;
}

static void s_id(s_b_t *b, int32_t id) {
    s_flush(b);
    s_push(b, id);
}

// A marker: its token when the vocabulary has one, else its text (joined
// to the piece around it, as a templated string would be tokenized).
// Returns whether it was a token.
static bool s_mark(s_b_t *b, const char *piece) {
    const int32_t id = mc_tokenizer_find(b->tok, piece, strlen(piece));
    if (id >= 0) s_id(b, id);
    else s_str(b, piece);
    return id >= 0;
}

// A v3 marker the template follows with a space: as a token the space is
// the next piece's own (SentencePiece's), as text it is written.
static void s_mark_sp(s_b_t *b, const char *piece) {
    if (!s_mark(b, piece)) s_str(b, " ");
}

static void s_bos(s_b_t *b) {
    const int32_t bos = mc_tokenizer_bos(b->tok);
    if (bos >= 0) s_id(b, bos);
}

static void s_eos(s_b_t *b) {
    const int32_t eos = mc_tokenizer_eos(b->tok);
    if (eos >= 0) s_id(b, eos);
}

// --- the shared pieces --------------------------------------------------------------------

static const char s_tools_head[] = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                                   "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char s_tools_tail[] = "\n</tools>\n\nFor each function call, return a json object with function name and "
                                   "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
                                   "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

// Qwen3's tools section (the "# Tools" text, one tool per line).
static void s_tools_text(s_b_t *b, const mc_chat_opts_t *o) {
    s_str(b, s_tools_head);
    for (size_t i = 0; i < o->n_tools; i++) {
        s_str(b, "\n");
        s_str(b, o->tools[i]);
    }
    s_str(b, s_tools_tail);
}

// <tool_call> blocks of an assistant message (the first after a newline
// when there is text before it).
static void s_calls_text(s_b_t *b, const mc_chat_msg_t *m, bool after_text) {
    for (size_t k = 0; k < m->n_calls; k++) {
        if (k || after_text) s_str(b, "\n");
        s_str(b, "<tool_call>\n{\"name\": \"");
        s_str(b, m->calls[k].name ? m->calls[k].name : "");
        s_str(b, "\", \"arguments\": ");
        s_str(b, m->calls[k].arguments && m->calls[k].arguments[0] ? m->calls[k].arguments : "{}");
        s_str(b, "}\n</tool_call>");
    }
}

// A call id as the 9 letters and digits Mistral's v3 format wants: itself
// when it is one, else 9 characters of a hash of it (FNV-1a), so a call and
// the result naming it agree.
static void s_v3_id(const char *id, char out[10]) {
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    if (!id) id = "";
    size_t n = strlen(id);
    bool ok = n == 9;
    for (size_t i = 0; ok && i < 9; i++)
        ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9');
    if (ok) {
        memcpy(out, id, 10);
        return;
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
    for (int i = 0; i < 9; i++) {
        out[i] = al[h % 62];
        h = h / 62 ^ (h << 29);
    }
    out[9] = 0;
}

// --- the formats ----------------------------------------------------------------------------

// A view of the conversation every format reads: the system text, joined.
typedef struct {
    const mc_chat_msg_t *m;
    size_t n;
    const char *system;
    size_t sys_len;
    size_t prompt; // 1: the conversation ends with the user's side (the model's turn is opened)
} s_conv_t;

static bool s_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// BOS, then [INST] turns with the system text in front of the first user
// message, each answer closed by EOS.
static void s_mistral(s_b_t *b, const s_conv_t *c) {
    s_bos(b);
    bool first_user = true;
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        if (m->role == MC_CHAT_SYSTEM) continue;
        if (m->role == MC_CHAT_ASSISTANT) {
            s_lit(b, m->content, m->len);
            s_flush(b);
            s_eos(b);
            continue;
        }
        s_flush(b);
        s_str(b, "[INST] ");
        if (first_user && c->system) s_lit(b, c->system, c->sys_len), s_str(b, "\n\n");
        s_lit(b, m->content, m->len);
        s_str(b, " [/INST]");
        s_flush(b);
        first_user = false;
    }
}

// Mistral v3: control tokens, the tools before the last user message, the
// system text in it, calls and results in their JSON.
static void s_mistral_v3(s_b_t *b, const mc_chat_opts_t *o, const s_conv_t *c) {
    size_t last_user = c->n;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == MC_CHAT_USER) last_user = i;
    s_bos(b);
    char id9[10];
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        switch (m->role) {
        case MC_CHAT_SYSTEM: break;
        case MC_CHAT_USER:
            if (o->n_tools && i == last_user) {
                s_mark_sp(b, "[AVAILABLE_TOOLS]");
                s_str(b, "[");
                for (size_t k = 0; k < o->n_tools; k++) {
                    if (k) s_str(b, ", ");
                    s_str(b, o->tools[k]);
                }
                s_str(b, "]");
                s_mark(b, "[/AVAILABLE_TOOLS]");
            }
            s_mark_sp(b, "[INST]");
            if (i == last_user && c->system) s_lit(b, c->system, c->sys_len), s_str(b, "\n\n");
            s_lit(b, m->content, m->len);
            s_mark(b, "[/INST]");
            break;
        case MC_CHAT_ASSISTANT:
            if (m->n_calls) {
                s_mark_sp(b, "[TOOL_CALLS]");
                s_str(b, "[");
                for (size_t k = 0; k < m->n_calls; k++) {
                    s_v3_id(m->calls[k].id, id9);
                    s_str(b, k ? ", {\"name\": \"" : "{\"name\": \"");
                    s_str(b, m->calls[k].name ? m->calls[k].name : "");
                    s_str(b, "\", \"arguments\": ");
                    s_str(b, m->calls[k].arguments && m->calls[k].arguments[0] ? m->calls[k].arguments : "{}");
                    s_str(b, ", \"id\": \"");
                    s_str(b, id9);
                    s_str(b, "\"}");
                }
                s_str(b, "]");
            } else { // the text, trimmed
                size_t a = 0, z = m->len;
                while (a < z && s_ws(m->content[a])) a++;
                while (z > a && s_ws(m->content[z - 1])) z--;
                s_lit(b, m->content + a, z - a);
            }
            s_flush(b);
            s_eos(b);
            break;
        case MC_CHAT_TOOL:
            s_v3_id(m->tool_call_id, id9);
            s_mark_sp(b, "[TOOL_RESULTS]");
            s_str(b, "{\"content\": ");
            s_lit(b, m->content, m->len);
            s_str(b, ", \"call_id\": \"");
            s_str(b, id9);
            s_str(b, "\"}");
            s_mark(b, "[/TOOL_RESULTS]");
            break;
        }
    }
    s_flush(b);
}

// qwen3's view of an assistant message: its reasoning and its text (the
// reasoning given, else a <think> block split off the content).
static void s_qwen3_split(const mc_chat_msg_t *m, const char **r, size_t *rl, const char **t, size_t *tl) {
    *t = m->content, *tl = m->len, *r = "", *rl = 0;
    if (m->reasoning) {
        *r = m->reasoning, *rl = m->reasoning_len;
        return;
    }
    static const char close[] = "</think>";
    const size_t cl = sizeof close - 1;
    size_t first = m->len, last = m->len;
    for (size_t i = 0; i + cl <= m->len; i++)
        if (!memcmp(m->content + i, close, cl)) {
            if (first == m->len) first = i;
            last = i;
        }
    if (first == m->len) return;
    // content: after the last </think>, without leading newlines
    size_t a = last + cl;
    while (a < m->len && m->content[a] == '\n') a++;
    *t = m->content + a, *tl = m->len - a;
    // reasoning: before the first </think>, after the last <think> in it, newlines trimmed
    size_t s = 0, e = first;
    for (size_t i = 0; i + 7 <= first; i++)
        if (!memcmp(m->content + i, "<think>", 7)) s = i + 7;
    while (e > s && m->content[e - 1] == '\n') e--;
    while (s < e && m->content[s] == '\n') s++;
    *r = m->content + s, *rl = e - s;
}

// ChatML and Qwen3: the system turn (with the tools section), the turns,
// tool results in user turns, and the model's opened turn.
static void s_chatml(s_b_t *b, const mc_chat_opts_t *o, const s_conv_t *c) {
    const bool qwen3 = o->style == MC_CHAT_STYLE_QWEN3;
    if (mc_tokenizer_add_bos(b->tok)) s_bos(b);
    if (o->n_tools || c->system) {
        s_mark(b, "<|im_start|>");
        s_str(b, "system\n");
        if (c->system) s_lit(b, c->system, c->sys_len);
        if (o->n_tools) {
            if (c->system) s_str(b, "\n\n");
            s_tools_text(b, o);
        }
        s_mark(b, "<|im_end|>");
        s_str(b, "\n");
    }
    size_t last_query = c->n;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == MC_CHAT_USER) last_query = i;
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        switch (m->role) {
        case MC_CHAT_SYSTEM: break;
        case MC_CHAT_USER:
            s_mark(b, "<|im_start|>");
            s_str(b, "user\n");
            s_lit(b, m->content, m->len);
            s_mark(b, "<|im_end|>");
            s_str(b, "\n");
            break;
        case MC_CHAT_ASSISTANT: {
            const char *r = "", *t = m->content;
            size_t rl = 0, tl = m->len;
            if (qwen3) s_qwen3_split(m, &r, &rl, &t, &tl);
            s_mark(b, "<|im_start|>");
            s_str(b, "assistant\n");
            if (qwen3 && i > last_query && (i + 1 == c->n || rl)) {
                while (rl && r[0] == '\n') r++, rl--;
                while (rl && r[rl - 1] == '\n') rl--;
                while (tl && t[0] == '\n') t++, tl--;
                s_str(b, "<think>\n");
                s_lit(b, r, rl);
                s_str(b, "\n</think>\n\n");
            }
            s_lit(b, t, tl);
            s_calls_text(b, m, tl > 0);
            s_mark(b, "<|im_end|>");
            s_str(b, "\n");
            break;
        }
        case MC_CHAT_TOOL:
            if (i == 0 || c->m[i - 1].role != MC_CHAT_TOOL) {
                s_mark(b, "<|im_start|>");
                s_str(b, "user");
            }
            s_str(b, "\n<tool_response>\n");
            s_lit(b, m->content, m->len);
            s_str(b, "\n</tool_response>");
            if (i + 1 == c->n || c->m[i + 1].role != MC_CHAT_TOOL) {
                s_mark(b, "<|im_end|>");
                s_str(b, "\n");
            }
            break;
        }
    }
    if (c->prompt) {
        s_mark(b, "<|im_start|>");
        s_str(b, "assistant\n");
        if (qwen3 && !o->thinking) s_str(b, "<think>\n\n</think>\n\n");
    }
    s_flush(b);
}

// Tulu (OLMoE instruct): <|system|>, <|user|>, <|assistant|> turns.
static void s_tulu(s_b_t *b, const s_conv_t *c) {
    s_bos(b);
    if (c->system) {
        s_mark(b, "<|system|>");
        s_str(b, "\n");
        s_lit(b, c->system, c->sys_len);
        s_str(b, "\n");
    }
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        if (m->role == MC_CHAT_SYSTEM) continue;
        if (m->role == MC_CHAT_USER) {
            s_mark(b, "<|user|>");
            s_str(b, "\n");
            s_lit(b, m->content, m->len);
            s_str(b, "\n");
            continue;
        }
        s_mark(b, "<|assistant|>");
        s_str(b, "\n");
        s_lit(b, m->content, m->len);
        s_eos(b);
        if (i + 1 < c->n) s_str(b, "\n");
    }
    if (c->prompt) {
        s_mark(b, "<|assistant|>");
        s_str(b, "\n");
    }
    s_flush(b);
}

// DeepSeek-V2 Chat: "User: " and "Assistant: " are text; each answer
// closed by EOS; the model's turn opened with "Assistant:" (no space).
static void s_deepseek_v2(s_b_t *b, const s_conv_t *c) {
    s_bos(b);
    if (c->system) s_lit(b, c->system, c->sys_len), s_str(b, "\n\n");
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        if (m->role == MC_CHAT_SYSTEM) continue;
        if (m->role == MC_CHAT_USER) {
            s_str(b, "User: ");
            s_lit(b, m->content, m->len);
            s_str(b, "\n\n");
            continue;
        }
        s_str(b, "Assistant: ");
        s_lit(b, m->content, m->len);
        s_eos(b);
    }
    if (c->prompt) s_str(b, "Assistant:");
    s_flush(b);
}

// The text of an answer after its last "</think>" (all of it without one).
static void s_after_think(const mc_chat_msg_t *m, const char **t, size_t *tl) {
    static const char close[] = "</think>";
    const size_t cl = sizeof close - 1;
    *t = m->content, *tl = m->len;
    for (size_t i = 0; i + cl <= m->len; i++)
        if (!memcmp(m->content + i, close, cl)) *t = m->content + i + cl, *tl = m->len - i - cl;
}

// One call as DeepSeek-V3's template writes it: the call's markers around
// "function", its name, and its arguments in a ```json fence.
static void s_ds_call(s_b_t *b, const mc_chat_call_t *call) {
    s_mark(b, S_DS_CALL_BEGIN);
    s_str(b, "function");
    s_mark(b, S_DS_SEP);
    s_str(b, call->name ? call->name : "");
    s_str(b, "\n```json\n");
    s_str(b, call->arguments && call->arguments[0] ? call->arguments : "{}");
    s_str(b, "\n```");
    s_mark(b, S_DS_CALL_END);
}

// The tools after DeepSeek-V3's system text. Its templates (V3, R1) never
// write the request's tools, so this is our convention: each tool's JSON
// on a line, then the call syntax the model was trained to write.
static void s_ds_tools(s_b_t *b, const mc_chat_opts_t *o) {
    s_str(b, "## Tools\nYou have access to the following tools:\n");
    for (size_t i = 0; i < o->n_tools; i++) {
        s_str(b, "\n");
        s_str(b, o->tools[i]);
    }
    s_str(b, "\n\nTo call tools, answer with:\n");
    s_mark(b, S_DS_CALLS_BEGIN);
    s_mark(b, S_DS_CALL_BEGIN);
    s_str(b, "function");
    s_mark(b, S_DS_SEP);
    s_str(b, "tool_name\n```json\narguments\n```");
    s_mark(b, S_DS_CALL_END);
    s_mark(b, S_DS_CALLS_END);
    s_str(b, "\nwhere tool_name is one of the tools above and arguments a JSON object that follows its parameters; "
             "more calls follow the first, each on a new line, before the closing marker.");
}

// DeepSeek-V3 / R1: BOS, the system text, <｜User｜> and <｜Assistant｜>
// turns, each answer (past reasoning dropped) closed by <｜end▁of▁sentence｜>.
// A message with calls: <｜Assistant｜> its text, the calls between
// <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜> (one per line), EOS. A run
// of tool results: each between <｜tool▁output▁begin｜> and
// <｜tool▁output▁end｜>, the run between <｜tool▁outputs▁begin｜> and
// <｜tool▁outputs▁end｜>; the answer after them follows the run's end with
// no <｜Assistant｜>, and a prompt ending with results is not given one
// either (R1's template). Its template starts the outputs only once per
// conversation and numbers calls across messages; here each message's
// calls and each run of results is whole (as V3-0324's template fixes).
static void s_deepseek_v3(s_b_t *b, const mc_chat_opts_t *o, const s_conv_t *c) {
    s_bos(b);
    if (c->system) s_lit(b, c->system, c->sys_len);
    if (o->n_tools) {
        if (c->system) s_str(b, "\n\n");
        s_ds_tools(b, o);
    }
    bool in_tool = false; // after tool results, before what follows them
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        switch (m->role) {
        case MC_CHAT_SYSTEM: break;
        case MC_CHAT_USER:
            in_tool = false;
            s_mark(b, S_DS_USER);
            s_lit(b, m->content, m->len);
            break;
        case MC_CHAT_TOOL:
            if (!in_tool) s_mark(b, S_DS_OUTPUTS_BEGIN);
            in_tool = true;
            s_mark(b, S_DS_OUTPUT_BEGIN);
            s_lit(b, m->content, m->len);
            s_mark(b, S_DS_OUTPUT_END);
            break;
        case MC_CHAT_ASSISTANT:
            if (m->n_calls) {
                if (in_tool) s_mark(b, S_DS_OUTPUTS_END);
                in_tool = false;
                s_mark(b, S_DS_ASSISTANT);
                s_lit(b, m->content, m->len);
                s_mark(b, S_DS_CALLS_BEGIN);
                for (size_t k = 0; k < m->n_calls; k++) {
                    if (k) s_str(b, "\n");
                    s_ds_call(b, &m->calls[k]);
                }
                s_mark(b, S_DS_CALLS_END);
                s_mark(b, S_DS_EOS);
            } else if (in_tool) { // the answer to the results: their end, the text as it is
                s_mark(b, S_DS_OUTPUTS_END);
                s_lit(b, m->content, m->len);
                s_mark(b, S_DS_EOS);
                in_tool = false;
            } else {
                const char *t;
                size_t tl;
                s_after_think(m, &t, &tl);
                s_mark(b, S_DS_ASSISTANT);
                s_lit(b, t, tl);
                s_mark(b, S_DS_EOS);
            }
            break;
        }
    }
    if (in_tool) s_mark(b, S_DS_OUTPUTS_END);
    else if (c->prompt) s_mark(b, S_DS_ASSISTANT);
    s_flush(b);
}

// Python's str.strip() set (ASCII).
static bool s_space(char c) { return s_ws(c) || c == '\v' || c == '\f'; }

static void s_strip(const char **t, size_t *tl) {
    while (*tl && s_space((*t)[0])) (*t)++, (*tl)--;
    while (*tl && s_space((*t)[*tl - 1])) (*tl)--;
}

// GLM-4.5's tools section: its system turn before any other.
static void s_glm_tools(s_b_t *b, const mc_chat_opts_t *o) {
    s_mark(b, "<|system|>");
    s_str(b, "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
             "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n");
    for (size_t i = 0; i < o->n_tools; i++) {
        s_str(b, o->tools[i]);
        s_str(b, "\n");
    }
    s_str(b, "</tools>\n\nFor each function call, output the function name and arguments within the following XML "
             "format:\n");
    s_mark(b, "<tool_call>");
    s_str(b, "{function-name}\n");
    for (int k = 1; k <= 2; k++) {
        char key[24], val[24];
        snprintf(key, sizeof key, "{arg-key-%d}", k);
        snprintf(val, sizeof val, "{arg-value-%d}", k);
        s_mark(b, "<arg_key>");
        s_str(b, key);
        s_mark(b, "</arg_key>");
        s_str(b, "\n");
        s_mark(b, "<arg_value>");
        s_str(b, val);
        s_mark(b, "</arg_value>");
        s_str(b, "\n");
    }
    s_str(b, "...\n");
    s_mark(b, "</tool_call>");
}

// Where the JSON value starting at t[at] (valid JSON) ends: after its
// closing quote or bracket, or at the ',' or '}' after a scalar.
static size_t s_json_end(const char *t, size_t n, size_t at) {
    int depth = 0;
    bool str = false;
    for (size_t i = at; i < n; i++) {
        const char ch = t[i];
        if (str) {
            if (ch == '\\') i++;
            else if (ch == '"' && (str = false, depth == 0)) return i + 1;
            continue;
        }
        if (ch == '"') str = true;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (depth == 0) return i;
            if (--depth == 0) return i + 1;
        } else if (ch == ',' && depth == 0) return i;
    }
    return n;
}

// A JSON string's text (unescaped) written to the piece.
static void s_json_str(s_b_t *b, const char *t, size_t n) {
    cJSON *v = cJSON_ParseWithLength(t, n);
    if (!cJSON_IsString(v)) {
        if (!b->rc) b->rc = mc_err_set(b->err, MC_ERR_NOMEM, "out of memory");
    } else {
        s_str(b, v->valuestring);
    }
    cJSON_Delete(v);
}

// A call's arguments as GLM's template writes them: for each member,
// <arg_key> its key </arg_key> "\n" <arg_value> its value </arg_value> "\n",
// a string value as its text, any other as JSON (as printed: json.dumps,
// what the template's tojson writes). Arguments that are not a JSON object
// have no such form: MC_ERR_ARG.
static void s_glm_args(s_b_t *b, const char *args) {
    const char *t = args && args[0] ? args : "{}";
    const size_t n = strlen(t);
    cJSON *v = cJSON_ParseWithLength(t, n);
    const bool obj = cJSON_IsObject(v);
    cJSON_Delete(v);
    if (!obj) {
        if (!b->rc) b->rc = mc_err_set(b->err, MC_ERR_ARG, "a tool call's arguments must be a JSON object in the glm4 chat format");
        return;
    }
    size_t at = 0;
    while (at < n && t[at] != '{') at++;
    at++;
    while (at < n && !b->rc) {
        while (at < n && (s_ws(t[at]) || t[at] == ',')) at++;
        if (at >= n || t[at] != '"') break; // the closing '}'
        const size_t k0 = at, k1 = s_json_end(t, n, at);
        at = k1;
        while (at < n && (s_ws(t[at]) || t[at] == ':')) at++;
        const size_t v0 = at;
        size_t v1 = s_json_end(t, n, at);
        at = v1;
        while (v1 > v0 && s_ws(t[v1 - 1])) v1--;
        s_mark(b, "<arg_key>");
        s_json_str(b, t + k0, k1 - k0);
        s_mark(b, "</arg_key>");
        s_str(b, "\n");
        s_mark(b, "<arg_value>");
        if (t[v0] == '"') s_json_str(b, t + v0, v1 - v0);
        else s_lit(b, t + v0, v1 - v0);
        s_mark(b, "</arg_value>");
        s_str(b, "\n");
    }
}

// GLM-4.5: "[gMASK]<sop>", then <|system|>, <|user|> and <|assistant|>
// turns, each marker followed by "\n" and the next marker ending the turn.
// With tools, the tools section's system turn first; an answer's calls
// after its text, each "\n<tool_call>" name "\n" and its arguments
// (s_glm_args) "</tool_call>"; a run of tool results after one
// <|observation|>, each "\n<tool_response>\n" result "\n</tool_response>".
// No BOS of ours unless the file asks for one (tokenizer.ggml.add_bos_token)
// and it is not the template's own [gMASK]: llama.cpp renders the template
// (which writes [gMASK]) and tokenizes it with the file's add_bos, dropping
// a leading BOS text the template wrote only when add_bos is set.
static void s_glm4(s_b_t *b, const mc_chat_opts_t *o, const s_conv_t *c) {
    static const char nothink[] = "/nothink";
    const int32_t bos = mc_tokenizer_bos(b->tok);
    if (mc_tokenizer_add_bos(b->tok) && bos >= 0 && bos != mc_tokenizer_find(b->tok, "[gMASK]", 7)) s_bos(b);
    s_mark(b, "[gMASK]");
    s_mark(b, "<sop>");
    if (o->n_tools) s_glm_tools(b, o);
    if (c->system) {
        s_mark(b, "<|system|>");
        s_str(b, "\n");
        s_lit(b, c->system, c->sys_len);
    }
    size_t last_user = c->n;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == MC_CHAT_USER) last_user = i;
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        if (m->role == MC_CHAT_SYSTEM) continue;
        if (m->role == MC_CHAT_USER) {
            s_mark(b, "<|user|>");
            s_str(b, "\n");
            s_lit(b, m->content, m->len);
            const size_t nl = sizeof nothink - 1;
            if (!o->thinking && !(m->len >= nl && !memcmp(m->content + m->len - nl, nothink, nl))) s_str(b, nothink);
            continue;
        }
        if (m->role == MC_CHAT_TOOL) {
            if (i == 0 || c->m[i - 1].role != MC_CHAT_TOOL) s_mark(b, "<|observation|>");
            s_str(b, "\n");
            s_mark(b, "<tool_response>");
            s_str(b, "\n");
            s_lit(b, m->content, m->len);
            s_str(b, "\n");
            s_mark(b, "</tool_response>");
            continue;
        }
        const char *r, *t;
        size_t rl, tl;
        s_qwen3_split(m, &r, &rl, &t, &tl);
        s_mark(b, "<|assistant|>");
        s_str(b, "\n");
        s_mark(b, "<think>"); // tokens in GLM's vocabulary, placed as llama.cpp's template path parses them
        if (i > last_user && rl) s_strip(&r, &rl), s_lit(b, r, rl);
        s_mark(b, "</think>");
        s_strip(&t, &tl);
        if (tl) s_str(b, "\n"), s_lit(b, t, tl);
        for (size_t k = 0; k < m->n_calls; k++) {
            s_str(b, "\n");
            s_mark(b, "<tool_call>");
            s_str(b, m->calls[k].name ? m->calls[k].name : "");
            s_str(b, "\n");
            s_glm_args(b, m->calls[k].arguments);
            s_mark(b, "</tool_call>");
        }
    }
    if (c->prompt) {
        s_mark(b, "<|assistant|>");
        if (!o->thinking) s_str(b, "\n"), s_mark(b, "<think>"), s_mark(b, "</think>");
    }
    s_flush(b);
}

// --- gpt-oss (harmony) ------------------------------------------------------------------------

// t[0..n) as a JSON string, as the template's tojson (json.dumps, non-ASCII as is) writes it.
static void s_json_quote(s_b_t *b, const char *t, size_t n) {
    s_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)t[i];
        char esc[8];
        switch (c) {
        case '"': s_str(b, "\\\""); break;
        case '\\': s_str(b, "\\\\"); break;
        case '\n': s_str(b, "\\n"); break;
        case '\r': s_str(b, "\\r"); break;
        case '\t': s_str(b, "\\t"); break;
        case '\b': s_str(b, "\\b"); break;
        case '\f': s_str(b, "\\f"); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                s_str(b, esc);
            } else {
                s_lit(b, t + i, 1);
            }
        }
    }
    s_str(b, "\"");
}

// A JSON value as json.dumps prints it (", " and ": "; integers without a
// fraction, other numbers in the shortest form that reads back).
static void s_json_value(s_b_t *b, const cJSON *v) {
    char t[40];
    if (cJSON_IsString(v)) {
        s_json_quote(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsNumber(v)) {
        const double d = v->valuedouble;
        if (d > -1e15 && d < 1e15 && d == (double)(long long)d) { // (the range first: the cast is defined)
            snprintf(t, sizeof t, "%lld", (long long)d);
        } else {
            for (int p = 15; p <= 17; p++)
                if (snprintf(t, sizeof t, "%.*g", p, d), strtod(t, NULL) == d) break;
            if (!strpbrk(t, ".en")) strcat(t, ".0");
        }
        s_str(b, t);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const bool obj = cJSON_IsObject(v);
        s_str(b, obj ? "{" : "[");
        const cJSON *it;
        cJSON_ArrayForEach(it, v) {
            if (it != v->child) s_str(b, ", ");
            if (obj) s_json_quote(b, it->string ? it->string : "", it->string ? strlen(it->string) : 0), s_str(b, ": ");
            s_json_value(b, it);
        }
        s_str(b, obj ? "}" : "]");
    } else {
        s_str(b, cJSON_IsTrue(v) ? "true" : cJSON_IsFalse(v) ? "false" : "null");
    }
}

// Jinja's truth of a JSON value (absent, null, false, 0, "", [] and {} are false).
static bool s_truthy(const cJSON *v) {
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return false;
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsString(v)) return v->valuestring[0] != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child != NULL;
    return true;
}

static const cJSON *s_get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static bool s_str_is(const cJSON *v, const char *s) { return cJSON_IsString(v) && !strcmp(v->valuestring, s); }

// Whether the string name is in the array req.
static bool s_listed(const cJSON *req, const char *name) {
    const cJSON *it;
    cJSON_ArrayForEach(it, req) if (s_str_is(it, name)) return true;
    return false;
}

// A string value as the template concatenates it (its text), anything else as JSON.
static void s_json_text(s_b_t *b, const cJSON *v) {
    if (cJSON_IsString(v)) s_str(b, v->valuestring);
    else s_json_value(b, v);
}

// A parameter's schema as the gpt-oss template's TypeScript type (its
// render_typescript_type macro, whitespace included): string (or an enum's
// "a" | "b"), number, boolean, X[] (any[] for an item type longer than 50
// characters or "object | object"), a type list joined by " | ", oneOf
// variants, an object's properties ("{\n" name?: type, ... "}"), else any.
static void s_ts_type(s_b_t *b, const cJSON *spec, int depth) {
    const cJSON *type = s_get(spec, "type"), *one = s_get(spec, "oneOf");
    const bool nullable = s_truthy(s_get(spec, "nullable"));
    if (depth > 32) { // a schema nested this deep is hostile, not a tool
        s_str(b, "any");
        return;
    }
    if (s_str_is(type, "array")) {
        const cJSON *items = s_get(spec, "items");
        if (!items) {
            s_str(b, "any[]");
        } else {
            const cJSON *it = s_get(items, "type");
            if (s_str_is(it, "string")) s_str(b, "string[]");
            else if (s_str_is(it, "number") || s_str_is(it, "integer")) s_str(b, "number[]");
            else if (s_str_is(it, "boolean")) s_str(b, "boolean[]");
            else {
                s_b_t in = {.err = b->err};
                s_ts_type(&in, items, depth + 1);
                if (in.rc && !b->rc) b->rc = in.rc;
                if ((in.len == 15 && !memcmp(in.buf, "object | object", 15)) || in.len > 50) s_str(b, "any[]");
                else s_lit(b, in.buf, in.len), s_str(b, "[]");
                free(in.buf);
            }
        }
        if (nullable) s_str(b, " | null");
    } else if (cJSON_IsArray(type) && type->child) {
        const cJSON *it;
        cJSON_ArrayForEach(it, type) {
            if (it != type->child) s_str(b, " | ");
            s_json_text(b, it);
        }
    } else if (s_truthy(one)) {
        // The template's "any" for object variants never fires: its flag is
        // set inside a loop, which Jinja scopes, so every variant is written.
        const cJSON *v;
        cJSON_ArrayForEach(v, one) {
            s_ts_type(b, v, depth + 1);
            const cJSON *desc = s_get(v, "description"), *def = s_get(v, "default");
            if (s_truthy(desc)) s_str(b, "// "), s_json_text(b, desc);
            if (def) s_str(b, "                    // default: "), s_json_value(b, def);
            if (v->next) s_str(b, " | \n");
        }
    } else if (s_str_is(type, "string")) {
        const cJSON *en = s_get(spec, "enum");
        if (s_truthy(en)) {
            const cJSON *it;
            s_str(b, "\"");
            cJSON_ArrayForEach(it, en) {
                if (it != en->child) s_str(b, "\" | \"");
                s_json_text(b, it);
            }
            s_str(b, "\"");
        } else {
            s_str(b, "string");
            if (nullable) s_str(b, " | null");
        }
    } else if (s_str_is(type, "number") || s_str_is(type, "integer")) {
        s_str(b, "number");
    } else if (s_str_is(type, "boolean")) {
        s_str(b, "boolean");
    } else if (s_str_is(type, "object")) {
        const cJSON *props = s_get(spec, "properties"), *req = s_get(spec, "required");
        if (!s_truthy(props)) {
            s_str(b, "object");
            return;
        }
        s_str(b, "{\n");
        const cJSON *p;
        cJSON_ArrayForEach(p, props) {
            s_str(b, p->string ? p->string : "");
            if (!s_listed(req, p->string ? p->string : "")) s_str(b, "?");
            s_str(b, ": \n                "); // the template's own indentation, kept by its {{ }}
            s_ts_type(b, p, depth + 1);
            if (p->next) s_str(b, ", ");
        }
        s_str(b, "}");
    } else {
        s_str(b, "any");
    }
}

// One tool of the request ({"type": "function", "function": {...}}) in the
// functions namespace: "// " description, "type NAME = (_: {" its
// parameters, one a line (a description as a comment above, "?" when not
// required, a default after it) "}) => any;" or "() => any;". A tool
// without a description gets no comment line (the template would fail on
// it).
static void s_harmony_tool(s_b_t *b, const char *json) {
    cJSON *root = cJSON_Parse(json);
    const cJSON *fn = s_get(root, "function");
    if (!fn) fn = root;
    const cJSON *name = s_get(fn, "name"), *desc = s_get(fn, "description"), *params = s_get(fn, "parameters");
    if (cJSON_IsString(desc)) s_str(b, "// "), s_str(b, desc->valuestring), s_str(b, "\n");
    s_str(b, "type ");
    s_str(b, cJSON_IsString(name) ? name->valuestring : "");
    s_str(b, " = ");
    const cJSON *props = s_get(params, "properties"), *req = s_get(params, "required");
    if (s_truthy(params) && s_truthy(props)) {
        s_str(b, "(_: {\n");
        const cJSON *p;
        cJSON_ArrayForEach(p, props) {
            const char *pn = p->string ? p->string : "";
            const cJSON *pd = s_get(p, "description"), *def = s_get(p, "default");
            if (s_truthy(pd)) s_str(b, "// "), s_json_text(b, pd), s_str(b, "\n");
            s_str(b, pn);
            if (!s_listed(req, pn)) s_str(b, "?");
            s_str(b, ": ");
            s_ts_type(b, p, 0);
            if (def) {
                if (s_truthy(s_get(p, "enum"))) s_str(b, ", // default: "), s_json_text(b, def);
                else if (s_truthy(s_get(p, "oneOf"))) s_str(b, "// default: "), s_json_text(b, def);
                else s_str(b, ", // default: "), s_json_value(b, def);
            }
            s_str(b, ",\n");
        }
        s_str(b, "}) => any;\n\n");
    } else {
        s_str(b, "() => any;\n\n");
    }
    cJSON_Delete(root);
}

// The system message of gpt-oss's template: the model's identity, its
// knowledge cutoff, the date (o->date; the line left out without one), the
// reasoning effort and the channels.
static void s_harmony_system(s_b_t *b, const mc_chat_opts_t *o) {
    s_mark(b, "<|start|>");
    s_str(b, "system");
    s_mark(b, "<|message|>");
    s_str(b, "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n");
    if (o->date) s_str(b, "Current date: "), s_str(b, o->date), s_str(b, "\n");
    s_str(b, "\nReasoning: ");
    s_str(b, o->reasoning_effort ? o->reasoning_effort : "medium");
    s_str(b, "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.");
    if (o->n_tools) s_str(b, "\nCalls to these tools must go to the commentary channel: 'functions'.");
    s_mark(b, "<|end|>");
}

// A message "<|start|>" head "<|message|>" (channel: "<|channel|>" channel
// between them) body and its end marker.
static void s_harmony_msg(s_b_t *b, const char *head, const char *channel, const char *body, size_t len,
                          const char *end) {
    s_mark(b, "<|start|>");
    s_str(b, head);
    if (channel) s_mark(b, "<|channel|>"), s_str(b, channel);
    s_mark(b, "<|message|>");
    s_lit(b, body, len);
    s_mark(b, end);
}

// The name of the call a tool result answers: the call of the latest
// assistant message with calls whose id it names, else that message's
// first call (the template's rule: it assumes one call a message).
static const char *s_harmony_call_name(const s_conv_t *c, size_t i) {
    size_t a = i;
    while (a > 0 && !(c->m[a - 1].role == MC_CHAT_ASSISTANT && c->m[a - 1].n_calls)) a--;
    if (a == 0) return NULL;
    const mc_chat_msg_t *m = &c->m[a - 1];
    for (size_t k = 0; c->m[i].tool_call_id && k < m->n_calls; k++)
        if (m->calls[k].id && !strcmp(m->calls[k].id, c->m[i].tool_call_id)) return m->calls[k].name;
    return m->calls[0].name;
}

// GPT-OSS's harmony format as its published template renders it: the
// system message, a developer message with the instructions (the system
// text) and the tools, then the turns; see chat.h.
static void s_harmony(s_b_t *b, const mc_chat_opts_t *o, const s_conv_t *c) {
    if (mc_tokenizer_add_bos(b->tok)) s_bos(b);
    s_harmony_system(b, o);
    if ((c->system && c->sys_len) || o->n_tools) {
        s_mark(b, "<|start|>");
        s_str(b, "developer");
        s_mark(b, "<|message|>");
        if (c->system && c->sys_len) s_str(b, "# Instructions\n\n"), s_lit(b, c->system, c->sys_len), s_str(b, "\n\n");
        if (o->n_tools) {
            s_str(b, "# Tools\n\n## functions\n\nnamespace functions {\n\n");
            for (size_t k = 0; k < o->n_tools; k++) s_harmony_tool(b, o->tools[k]);
            s_str(b, "} // namespace functions");
        }
        s_mark(b, "<|end|>");
    }
    for (size_t i = 0; i < c->n && !b->rc; i++) {
        const mc_chat_msg_t *m = &c->m[i];
        switch (m->role) {
        case MC_CHAT_SYSTEM: break;
        case MC_CHAT_USER: s_harmony_msg(b, "user", NULL, m->content, m->len, "<|end|>"); break;
        case MC_CHAT_TOOL: {
            const char *name = s_harmony_call_name(c, i);
            s_mark(b, "<|start|>");
            s_str(b, "functions.");
            s_str(b, name ? name : "");
            s_str(b, " to=assistant");
            s_mark(b, "<|channel|>");
            s_str(b, "commentary");
            s_mark(b, "<|message|>");
            s_json_quote(b, m->content, m->len);
            s_mark(b, "<|end|>");
            break;
        }
        case MC_CHAT_ASSISTANT:
            if (m->n_calls) {
                // The reasoning (or text) before a call is kept only while no
                // answer without calls follows: the template's one case of
                // analysis in a prompt.
                bool later_answer = false;
                for (size_t k = i + 1; k < c->n; k++)
                    later_answer |= c->m[k].role == MC_CHAT_ASSISTANT && !c->m[k].n_calls;
                if (m->len && m->reasoning_len) {
                    b->rc = mc_err_set(b->err, MC_ERR_ARG,
                                       "message %zu: an assistant message with tool_calls has both content and "
                                       "reasoning_content; the gpt-oss format keeps one (its analysis)",
                                       i);
                    break;
                }
                if (!later_answer && (m->len || m->reasoning_len))
                    s_harmony_msg(b, "assistant", "analysis", m->len ? m->content : m->reasoning,
                                  m->len ? m->len : m->reasoning_len, "<|end|>");
                for (size_t k = 0; k < m->n_calls; k++) {
                    const char *args = m->calls[k].arguments && m->calls[k].arguments[0] ? m->calls[k].arguments : "{}";
                    s_mark(b, "<|start|>");
                    s_str(b, "assistant to=functions.");
                    s_str(b, m->calls[k].name ? m->calls[k].name : "");
                    s_mark(b, "<|channel|>");
                    s_str(b, "commentary json");
                    s_mark(b, "<|message|>");
                    s_str(b, args);
                    s_mark(b, "<|call|>");
                }
            } else if (i + 1 == c->n && !c->prompt) { // a whole conversation: its last answer as trained
                if (m->reasoning) s_harmony_msg(b, "assistant", "analysis", m->reasoning, m->reasoning_len, "<|end|>");
                s_harmony_msg(b, "assistant", "final", m->content, m->len, "<|return|>");
            } else { // past reasoning dropped
                s_harmony_msg(b, "assistant", "final", m->content, m->len, "<|end|>");
            }
            break;
        }
    }
    if (c->prompt) {
        s_mark(b, "<|start|>");
        s_str(b, "assistant");
    }
    s_flush(b);
}

// --- tools as text (formats without tool tokens) ----------------------------------------

// Owned strings of a rewritten conversation.
typedef struct {
    mc_chat_msg_t *m;
    size_t n;
    char **own;
    size_t n_own;
} s_rewrite_t;

static char *s_keep(s_rewrite_t *w, s_b_t *tb) {
    char **own = realloc(w->own, (w->n_own + 1) * sizeof *own);
    if (!own) return NULL;
    w->own = own;
    char *t = malloc(tb->len + 1);
    if (!t) return NULL;
    memcpy(t, tb->buf ? tb->buf : "", tb->len);
    t[tb->len] = 0;
    w->own[w->n_own++] = t;
    return t;
}

// The conversation with calls as <tool_call> text in the assistant's
// message and each run of tool results as one user message; the tools
// section goes into *system.
static mc_err_t s_rewrite(const mc_chat_msg_t *msgs, size_t n, s_rewrite_t *w, char *err) {
    if (!(w->m = calloc(n ? n : 1, sizeof *w->m))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    s_b_t tb = {0};
    for (size_t i = 0; i < n; i++) {
        const mc_chat_msg_t *m = &msgs[i];
        if (m->role == MC_CHAT_ASSISTANT && m->n_calls) {
            tb.len = 0;
            s_lit(&tb, m->content, m->len);
            s_calls_text(&tb, m, m->len > 0);
        } else if (m->role == MC_CHAT_TOOL) {
            tb.len = 0;
            for (; i < n && msgs[i].role == MC_CHAT_TOOL; i++) {
                if (tb.len) s_str(&tb, "\n");
                s_str(&tb, "<tool_response>\n");
                s_lit(&tb, msgs[i].content, msgs[i].len);
                s_str(&tb, "\n</tool_response>");
            }
            i--;
        } else {
            w->m[w->n++] = *m;
            continue;
        }
        char *t = tb.rc ? NULL : s_keep(w, &tb);
        if (!t) {
            free(tb.buf);
            return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        }
        w->m[w->n++] = (mc_chat_msg_t){
            .role = m->role == MC_CHAT_TOOL ? MC_CHAT_USER : MC_CHAT_ASSISTANT, .content = t, .len = strlen(t)};
    }
    free(tb.buf);
    return MC_OK;
}

static void s_rewrite_free(s_rewrite_t *w) {
    for (size_t i = 0; i < w->n_own; i++) free(w->own[i]);
    free(w->own), free(w->m);
}

// --- checks and the entry points ------------------------------------------------------------

static const char *s_role_name(mc_chat_role_t r) {
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    return names[r];
}

// Roles in order: user first; assistant after the user's side; tool
// messages after an assistant message with calls (or another tool
// message); user after an answer or tool results.
static mc_err_t s_check(const mc_chat_msg_t *msgs, size_t n, bool allow_assistant_last, size_t *prompt, char *err) {
    int prev = -1; // the previous non-system role
    bool prev_calls = false;
    for (size_t i = 0; i < n; i++) {
        const mc_chat_role_t r = msgs[i].role;
        if (r == MC_CHAT_SYSTEM) continue;
        const char *want = NULL;
        if (r == MC_CHAT_USER && prev == MC_CHAT_USER) want = "assistant";
        else if (r == MC_CHAT_ASSISTANT && prev != MC_CHAT_USER && prev != MC_CHAT_TOOL) want = "user";
        else if (r == MC_CHAT_TOOL && !(prev == MC_CHAT_TOOL || (prev == MC_CHAT_ASSISTANT && prev_calls)))
            want = prev == MC_CHAT_ASSISTANT || prev == -1 ? "user" : "assistant";
        if (want)
            return mc_err_set(err, MC_ERR_ARG,
                              "message %zu: after the system messages, roles must alternate user, assistant, "
                              "user, ... (tool results after an assistant message with tool_calls; found %s where "
                              "%s belongs)",
                              i, s_role_name(r), want);
        prev = (int)r;
        prev_calls = r == MC_CHAT_ASSISTANT && msgs[i].n_calls > 0;
    }
    if (prev == -1) return mc_err_set(err, MC_ERR_ARG, "the conversation has no user message");
    if (prev == MC_CHAT_ASSISTANT && !allow_assistant_last)
        return mc_err_set(err, MC_ERR_ARG, "the last message must be the user's (the model answers it)");
    *prompt = prev != MC_CHAT_ASSISTANT;
    return MC_OK;
}

mc_err_t mc_chat_render(const mc_tokenizer_t *tok, const mc_chat_opts_t *o, const mc_chat_msg_t *msgs, size_t n,
                        bool allow_assistant_last, int32_t **ids, size_t *n_ids, char *err) {
    s_conv_t c = {msgs, n, NULL, 0, 0};
    mc_err_t rc = s_check(msgs, n, allow_assistant_last, &c.prompt, err);
    if (rc) return rc;
    if (o->style >= MC_CHAT_STYLE_COUNT) return mc_err_set(err, MC_ERR_ARG, "unknown chat format");
    // Formats without tool tokens: tools as text.
    const bool as_text =
        o->style == MC_CHAT_STYLE_MISTRAL || o->style == MC_CHAT_STYLE_TULU || o->style == MC_CHAT_STYLE_DEEPSEEK_V2;
    s_rewrite_t w = {0};
    if (as_text) {
        if ((rc = s_rewrite(msgs, n, &w, err))) {
            s_rewrite_free(&w);
            return rc;
        }
        c.m = w.m, c.n = w.n;
    }
    // System messages, joined (and the tools section, as text).
    s_b_t sys = {0};
    bool have_sys = false;
    for (size_t i = 0; i < c.n; i++)
        if (c.m[i].role == MC_CHAT_SYSTEM) {
            if (have_sys) s_str(&sys, "\n\n");
            s_lit(&sys, c.m[i].content, c.m[i].len);
            have_sys = true;
        }
    if (as_text && o->n_tools) {
        if (have_sys) s_str(&sys, "\n\n");
        s_tools_text(&sys, o);
        have_sys = true;
    }
    if (sys.rc) {
        free(sys.buf);
        s_rewrite_free(&w);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (have_sys) c.system = sys.buf ? sys.buf : "", c.sys_len = sys.len;
    s_b_t b = {.tok = tok, .err = err};
    switch (o->style) {
    case MC_CHAT_STYLE_MISTRAL: s_mistral(&b, &c); break;
    case MC_CHAT_STYLE_MISTRAL_V3: s_mistral_v3(&b, o, &c); break;
    case MC_CHAT_STYLE_TULU: s_tulu(&b, &c); break;
    case MC_CHAT_STYLE_DEEPSEEK_V2: s_deepseek_v2(&b, &c); break;
    case MC_CHAT_STYLE_DEEPSEEK_V3: s_deepseek_v3(&b, o, &c); break;
    case MC_CHAT_STYLE_GLM4: s_glm4(&b, o, &c); break;
    case MC_CHAT_STYLE_HARMONY: s_harmony(&b, o, &c); break;
    default: s_chatml(&b, o, &c); break;
    }
    s_flush(&b);
    free(sys.buf), free(b.buf);
    s_rewrite_free(&w);
    if (b.rc) {
        free(b.v);
        return b.rc;
    }
    *ids = b.v;
    *n_ids = b.n;
    return MC_OK;
}

mc_err_t mc_chat_format(const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n, bool allow_assistant_last,
                        int32_t **ids, size_t *n_ids, char *err) {
    mc_chat_opts_t o = mc_chat_opts_default();
    o.style = mc_chat_style_of(tok);
    return mc_chat_render(tok, &o, msgs, n, allow_assistant_last, ids, n_ids, err);
}

void mc_harmony_split_init(mc_harmony_split_t *h, const mc_tokenizer_t *tok) {
    *h = (mc_harmony_split_t){.start = mc_tokenizer_find(tok, "<|start|>", 9),
                              .channel = mc_tokenizer_find(tok, "<|channel|>", 11),
                              .message = mc_tokenizer_find(tok, "<|message|>", 11),
                              .end = mc_tokenizer_find(tok, "<|end|>", 7)};
}

static bool s_head_is(const mc_harmony_split_t *h, const char *word) {
    const size_t n = strlen(word);
    return h->head_len >= h->chan_at + n && !memcmp(h->head + h->chan_at, word, n);
}

mc_harmony_part_t mc_harmony_split_push(mc_harmony_split_t *h, int32_t id, const char *text, size_t len) {
    if (id < 0) return MC_HARMONY_HEADER; // -1 never names a token (the ids default to it)
    if (!h->any) {
        h->any = true;
        // The prompt ended with "<|start|>assistant": a header opens with
        // <|channel|> or a recipient (" to=functions.NAME").
        const size_t to = sizeof MC_CHAT_HARMONY_TO - 1;
        h->off = id != h->channel && !(len >= to && !memcmp(text, MC_CHAT_HARMONY_TO, to));
    }
    if (h->off) return MC_HARMONY_FINAL;
    if (id == h->message) {
        h->body = true;
        h->part = s_head_is(h, "analysis") ? MC_HARMONY_ANALYSIS : s_head_is(h, "final") ? MC_HARMONY_FINAL : MC_HARMONY_OTHER;
        // A recipient anywhere in the header (before or after the channel)
        // makes the message a call, whatever its channel.
        for (size_t i = 0; i + 3 <= h->head_len; i++)
            if (!memcmp(h->head + i, "to=", 3)) h->part = MC_HARMONY_OTHER;
        return MC_HARMONY_HEADER;
    }
    if (id == h->end || id == h->start) { // a message ends, the next header begins
        h->body = false, h->head_len = h->chan_at = 0;
        return MC_HARMONY_HEADER;
    }
    if (h->body) return h->part;
    if (id == h->channel) {
        h->chan_at = h->head_len;
        return MC_HARMONY_HEADER;
    }
    for (size_t i = 0; i < len && h->head_len < sizeof h->head; i++) h->head[h->head_len++] = text[i];
    return MC_HARMONY_HEADER;
}
