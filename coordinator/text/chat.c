/*
 * chat: the conversation formats of the families we run: Mistral's
 * [INST] format for Mixtral, ChatML for Qwen3-MoE and OLMoE instruct models.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

const char mc_chat_safe_prompt[] =
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, unethical, "
    "prejudiced, or negative content. Ensure replies promote fairness and positivity.";

bool mc_chat_role_from_name(const char *name, mc_chat_role_t *out) {
    static const char *const names[] = {"system", "user", "assistant"};
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = (mc_chat_role_t)i;
            return true;
        }
    return false;
}

// A growing id array.
typedef struct {
    int32_t *v;
    size_t n, cap;
} s_ids_t;

static bool s_push(s_ids_t *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return false;
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = id;
    return true;
}

// Append sp(text): the text tokenized on its own, with its leading space.
static mc_err_t s_text(s_ids_t *a, const mc_tokenizer_t *tok, const char *text, size_t len, char *err) {
    size_t cap = mc_tokenizer_max_tokens(len), n;
    int32_t *tmp = malloc(cap * sizeof *tmp);
    if (!tmp) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_err_t rc = mc_tokenizer_encode(tok, text, len, false, tmp, cap, &n, err);
    for (size_t i = 0; !rc && i < n; i++)
        if (!s_push(a, tmp[i])) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    free(tmp);
    return rc;
}

// dst = a + sep + b (NUL-terminated, malloc'd; lengths explicit).
static char *s_join(const char *a, size_t la, const char *sep, const char *b, size_t lb, size_t *len) {
    size_t ls = strlen(sep);
    char *out = malloc(la + ls + lb + 1);
    if (!out) return NULL;
    memcpy(out, a, la);
    memcpy(out + la, sep, ls);
    memcpy(out + la + ls, b, lb);
    out[la + ls + lb] = 0;
    *len = la + ls + lb;
    return out;
}

mc_chat_style_t mc_chat_style_of(const mc_tokenizer_t *tok) {
    const int32_t start = mc_tokenizer_find(tok, "<|im_start|>", 12), end = mc_tokenizer_find(tok, "<|im_end|>", 10);
    return start >= 0 && end >= 0 ? MC_CHAT_STYLE_CHATML : MC_CHAT_STYLE_MISTRAL;
}

// <|im_start|> role "\n" content <|im_end|> "\n", the markers as tokens and
// the rest tokenized on its own (as llama.cpp splits a templated prompt at
// its special tokens); with content NULL, only the opening: the prompt for
// the model's turn.
// start and end are the ids of <|im_start|> and <|im_end|>.
static mc_err_t s_chatml_turn(s_ids_t *a, const mc_tokenizer_t *tok, int32_t start, int32_t end, const char *role,
                              const char *content, size_t len, char *err) {
    size_t tl;
    char *text = s_join(role, strlen(role), "\n", content ? content : "", content ? len : 0, &tl);
    if (!text || !s_push(a, start)) {
        free(text);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    mc_err_t rc = s_text(a, tok, text, tl, err);
    free(text);
    if (rc || !content) return rc;
    if (!s_push(a, end)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return s_text(a, tok, "\n", 1, err);
}

// The system messages, joined, as one system turn in front; a prompt (odd
// number of turns) ends with the opening of the model's turn.
static mc_err_t s_chatml(s_ids_t *a, const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n,
                         const char *system, size_t sys_len, size_t turns, char *err) {
    mc_err_t rc = MC_OK;
    const int32_t bos = mc_tokenizer_bos(tok);
    const int32_t start = mc_tokenizer_find(tok, "<|im_start|>", 12), end = mc_tokenizer_find(tok, "<|im_end|>", 10);
    if (bos >= 0 && mc_tokenizer_add_bos(tok) && !s_push(a, bos)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc && system) rc = s_chatml_turn(a, tok, start, end, "system", system, sys_len, err);
    for (size_t i = 0; i < n && !rc; i++)
        if (msgs[i].role != MC_CHAT_SYSTEM)
            rc = s_chatml_turn(a, tok, start, end, msgs[i].role == MC_CHAT_USER ? "user" : "assistant",
                               msgs[i].content, msgs[i].len, err);
    if (!rc && turns % 2 == 1) rc = s_chatml_turn(a, tok, start, end, "assistant", NULL, 0, err);
    return rc;
}

// BOS, then [INST] turns with the system text in front of the first user
// message, each answer closed by EOS.
static mc_err_t s_mistral(s_ids_t *a, const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n,
                          const char *system, size_t sys_len, char *err) {
    mc_err_t rc = MC_OK;
    const int32_t bos = mc_tokenizer_bos(tok), eos = mc_tokenizer_eos(tok);
    if (bos >= 0 && !s_push(a, bos)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    bool first_user = true;
    for (size_t i = 0; i < n && !rc; i++) {
        const mc_chat_msg_t *m = &msgs[i];
        if (m->role == MC_CHAT_SYSTEM) continue;
        if (m->role == MC_CHAT_ASSISTANT) {
            rc = s_text(a, tok, m->content, m->len, err);
            if (!rc && eos >= 0 && !s_push(a, eos)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            continue;
        }
        size_t ul, tl;
        char *user = first_user && system ? s_join(system, sys_len, "\n\n", m->content, m->len, &ul)
                                          : s_join("", 0, "", m->content, m->len, &ul);
        char *turn = user ? s_join("[INST] ", 7, "", user, ul, &tl) : NULL;
        char *full = turn ? s_join(turn, tl, " [/INST]", "", 0, &tl) : NULL;
        if (!full) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        else rc = s_text(a, tok, full, tl, err);
        free(user), free(turn), free(full);
        first_user = false;
    }
    return rc;
}

mc_err_t mc_chat_format(const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n, bool allow_assistant_last,
                        int32_t **ids, size_t *n_ids, char *err) {
    // System messages, joined, go in front of the first user message.
    char *system = NULL;
    size_t sys_len = 0;
    size_t turns = 0;
    mc_err_t rc = MC_OK;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role != MC_CHAT_SYSTEM) {
            const mc_chat_role_t want = turns % 2 == 0 ? MC_CHAT_USER : MC_CHAT_ASSISTANT;
            if (msgs[i].role != want) {
                free(system);
                return mc_err_set(err, MC_ERR_ARG,
                                  "message %zu: after the system messages, roles must alternate user, assistant, "
                                  "user, ... (found %s where %s belongs)",
                                  i, msgs[i].role == MC_CHAT_USER ? "user" : "assistant",
                                  want == MC_CHAT_USER ? "user" : "assistant");
            }
            turns++;
            continue;
        }
        char *joined = system ? s_join(system, sys_len, "\n\n", msgs[i].content, msgs[i].len, &sys_len)
                              : s_join("", 0, "", msgs[i].content, msgs[i].len, &sys_len);
        free(system);
        if (!(system = joined)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (turns == 0) {
        free(system);
        return mc_err_set(err, MC_ERR_ARG, "the conversation has no user message");
    }
    if (turns % 2 == 0 && !allow_assistant_last) {
        free(system);
        return mc_err_set(err, MC_ERR_ARG, "the last message must be the user's (the model answers it)");
    }
    s_ids_t a = {0};
    rc = mc_chat_style_of(tok) == MC_CHAT_STYLE_CHATML ? s_chatml(&a, tok, msgs, n, system, sys_len, turns, err)
                                                       : s_mistral(&a, tok, msgs, n, system, sys_len, err);
    free(system);
    if (rc) {
        free(a.v);
        return rc;
    }
    *ids = a.v;
    *n_ids = a.n;
    return MC_OK;
}
