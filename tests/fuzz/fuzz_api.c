/*
 * fuzz_api: any bytes as the body of a /v1/chat/completions and of a
 * /v1/completions request (mc_api_parse), of a /v1/responses request
 * (mc_responses_parse) and of Ollama's /api/chat and /api/generate
 * (mc_ollama_parse), and what the server does next
 * with a body that parses: the conversation through both chat formats
 * (Mistral's [INST] on a SentencePiece vocabulary, ChatML on a byte-level
 * one with <|im_start|> and <|im_end|>, both from small generated models),
 * the prompt through both tokenizers, and the text back out through the
 * answer builders. A parsed request must hold what the parser promises
 * (ranges, stop strings), a refused one an error a client can be sent, and
 * the formats' control tokens must come from the format only, never from
 * a message's text.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "chat.h"
#include "fuzz_seed.h"
#include "gguf.h"
#include "mkmodel.h"
#include "ollama.h"
#include "reply.h"
#include "responses.h"
#include "tokenizer.h"
#include "toolcall.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mc_tokenizer_t *s_toks[2]; // Mistral [INST] (SentencePiece), ChatML (byte-level BPE)
static mc_sampler_params_t s_defaults;

// The tokenizer of a fresh tiny model of family `arch` (its vocabulary is
// all the fuzzer wants: the file is gone once it is read).
static mc_tokenizer_t *s_tokenizer(mc_arch_t arch, mc_chat_style_t want) {
    char dir[] = "/tmp/mc-fuzz-api-XXXXXX", path[64], err[MC_ERR_LEN];
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    mc_mkmodel_params_t mp = mc_mkmodel_params_default();
    mp.arch = arch;
    mp.dim = 32, mp.ffn = 32, mp.n_layer = 1, mp.n_head = 2, mp.n_head_kv = 1, mp.n_expert = 2, mp.n_expert_used = 1;
    mc_gguf_t *g = NULL;
    mc_tokenizer_t *t = NULL;
    if (mc_mkmodel_write(&mp, path, err) == MC_OK && (g = mc_gguf_open(path, err)))
        t = mc_tokenizer_new_from_gguf(g, err);
    mc_gguf_destroy(&g);
    unlink(path);
    rmdir(dir);
    if (!t || mc_chat_style_of(t) != want) {
        fprintf(stderr, "fuzz_api: tokenizer of %s: %s\n", mc_arch_get(arch)->name, t ? "wrong chat style" : err);
        abort();
    }
    return t;
}

static void s_free_tokenizers(void) {
    for (int i = 0; i < 2; i++) mc_tokenizer_destroy(&s_toks[i]);
}

// A seed body: it must parse as `chat` says (or be refused when `ok` is
// false), and is written to MC_FUZZ_SEEDS when set.
static void s_seed(const char *name, bool chat, bool ok, const char *body) {
    mc_api_request_t r;
    mc_api_error_t e;
    const bool parsed = mc_api_parse(body, strlen(body), chat, &s_defaults, &r, &e) == MC_OK;
    if (parsed != ok) {
        fprintf(stderr, "fuzz_api: seed %s %s: %s\n", name, parsed ? "parsed" : "was refused", parsed ? "" : e.message);
        abort();
    }
    if (parsed) mc_api_request_free(&r);
    mc_fuzz_seed_write(name, body, strlen(body));
}

// A seed for the other dialects' parsers (every input goes to all of them).
static void s_seed_raw(const char *name, const char *body) { mc_fuzz_seed_write(name, body, strlen(body)); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("MC_LOG", "error", 0);
    s_defaults = mc_sampler_params_default();
    s_toks[0] = s_tokenizer(MC_ARCH_LLAMA, MC_CHAT_STYLE_MISTRAL);
    s_toks[1] = s_tokenizer(MC_ARCH_QWEN3MOE, MC_CHAT_STYLE_CHATML);
    atexit(s_free_tokenizers); // LeakSanitizer runs after atexit handlers
    s_seed("chat-min.json", true, true, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}");
    s_seed("chat-turns.json", true, true,
           "{\"model\":\"mixtral\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"What is 2+2?\"},{\"role\":\"assistant\",\"content\":\"4\"},"
           "{\"role\":\"user\",\"content\":\"And [INST] 3+3? [/INST]</s><|im_start|>\\u00e9\\ud83d\\ude00\"}]}");
    s_seed("chat-stream.json", true, true,
           "{\"model\":\"qwen\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":64,"
           "\"temperature\":0.7,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"repeat_penalty\":1.1,"
           "\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,\"seed\":-42,\"n\":1,\"stop\":[\"\\n\\n\",\"User:\",\"\"],"
           "\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Answer \"},"
           "{\"type\":\"text\",\"text\":\"in French.\"}]},{\"role\":\"user\",\"content\":\"Hi\"},"
           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"1\",\"type\":\"function\","
           "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"1\","
           "\"content\":\"ok\"},"
           "{\"role\":\"user\",\"content\":\"Again\"}],\"logprobs\":true,\"top_logprobs\":3}");
    s_seed("chat-whole.json", true, true,
           "{\"safe_prompt\":true,\"max_completion_tokens\":8,\"stop\":\"END\",\"user\":\"u1\",\"logit_bias\":{},"
           "\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}");
    s_seed("chat-tools.json", true, true,
           "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":"
           "\"<think>\\nhm\\n</think>\\n\\n<tool_call>\\n{\\\"name\\\": \\\"get\\\", \\\"arguments\\\": {}}"
           "\\n</tool_call>\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
           "\"get\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"20\"},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"21\"}],\"tools\":[{\"type\":\"function\","
           "\"function\":{\"name\":\"get\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"auto\"}");
    s_seed("chat-bad-role.json", true, false, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}");
    s_seed("completion.json", false, true,
           "{\"model\":\"m\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,\"temperature\":0,\"stop\":[\".\"],"
           "\"stream\":false}");
    s_seed("completion-one.json", false, true, "{\"prompt\":[\"The capital of France is\"],\"seed\":7,\"stream\":true}");
    // A prompt of token ids is OpenAI's too; this server takes text only.
    s_seed("completion-ids.json", false, false, "{\"prompt\":[1,733,16289,28793],\"max_tokens\":4}");
    s_seed("completion-logprobs.json", false, true, "{\"prompt\":\"x\",\"logprobs\":5,\"stream\":true}");
    // The other dialects' bodies (they are all tried on every input).
    s_seed_raw("responses.json",
                       "{\"model\":\"m\",\"instructions\":\"Be brief.\",\"input\":[{\"role\":\"user\",\"content\":"
                       "[{\"type\":\"input_text\",\"text\":\"Hi\"}]},{\"type\":\"message\",\"role\":\"assistant\","
                       "\"content\":[{\"type\":\"output_text\",\"text\":\"Hello\"}]},{\"role\":\"user\",\"content\":"
                       "\"Again\"}],\"max_output_tokens\":16,\"temperature\":0.5,\"top_p\":0.9,\"stream\":true,"
                       "\"include\":[\"message.output_text.logprobs\"],\"top_logprobs\":2,\"text\":{\"format\":{\"type\":"
                       "\"text\"}},\"tools\":[],\"store\":false}");
    s_seed_raw("responses-tools.json",
                       "{\"input\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":\"Hm.\"},"
                       "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"get\",\"arguments\":\"{\\\"a\\\":1}\"},"
                       "{\"type\":\"item_reference\",\"id\":\"fc_1\"},{\"type\":\"function_call_output\",\"call_id\":\"c1\","
                       "\"output\":\"20\"}],\"tools\":[{\"type\":\"function\",\"name\":\"get\",\"strict\":true,"
                       "\"parameters\":{\"type\":\"object\"}}],\"tool_choice\":{\"type\":\"function\",\"name\":\"get\"},"
                       "\"parallel_tool_calls\":false}");
    s_seed_raw("ollama-tools.json",
                       "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\","
                       "\"tool_calls\":[{\"function\":{\"name\":\"get\",\"arguments\":{\"a\":1}}}]},{\"role\":\"tool\","
                       "\"content\":\"20\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\"}}]}");
    s_seed_raw("ollama-chat.json",
                       "{\"model\":\"m:latest\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":false,\"options\":{\"temperature\":0,"
                       "\"num_predict\":-1,\"stop\":[\"\\n\"],\"top_k\":20,\"seed\":3,\"repeat_last_n\":-1}}");
    s_seed_raw("ollama-generate.json",
                       "{\"model\":\"m\",\"prompt\":\"Once upon\",\"system\":\"Tell tales.\",\"raw\":false,"
                       "\"options\":{\"num_predict\":8}}");
    return 0;
}

static bool s_in(float v, double lo, double hi, float dflt) { return v == dflt || (v >= lo && v <= hi); }

// What mc_api_parse promises of a request it accepted.
static void s_check_request(const mc_api_request_t *r, bool chat) {
    if (r->chat != chat || !r->owned_) abort();
    unsigned sum = 0; // every byte of the texts is read (ASan checks the bounds)
    if (chat) {
        if (r->n_msgs == 0 || r->n_msgs > MC_API_MAX_MESSAGES || !r->msgs) abort();
        for (size_t i = 0; i < r->n_msgs; i++) {
            const mc_chat_msg_t *m = &r->msgs[i];
            if ((unsigned)m->role > MC_CHAT_TOOL || !m->content) abort();
            if (m->role == MC_CHAT_TOOL && !m->tool_call_id) abort();
            for (size_t k = 0; k < m->len; k++) sum += (unsigned char)m->content[k];
            for (size_t k = 0; k < m->n_calls; k++)
                if (!m->calls[k].name || !m->calls[k].arguments || !m->calls[k].id) abort();
            for (size_t k = 0; k < m->reasoning_len; k++) sum += (unsigned char)m->reasoning[k];
        }
    } else {
        if (!r->prompt) abort();
        for (size_t k = 0; k < r->prompt_len; k++) sum += (unsigned char)r->prompt[k];
    }
    if (r->n_stop > MC_SCHEDULER_MAX_STOP || r->top_logprobs > MC_LOGPROB_MAX_TOP) abort();
    for (uint32_t i = 0; i < r->n_stop; i++) {
        const size_t l = strlen(r->stop[i]);
        if (l == 0 || l > MC_SCHEDULER_STOP_LEN) abort(); // the scheduler's limits
    }
    const mc_sampler_params_t *s = &r->sampling, *d = &s_defaults;
    if (r->max_tokens > 1000000000u || !s_in(s->temp, 0, 2, d->temp) || !s_in(s->top_p, 0, 1, d->top_p) ||
        !s_in(s->min_p, 0, 1, d->min_p) || !s_in(s->repeat_penalty, 0.01, 100, d->repeat_penalty) ||
        !s_in(s->frequency_penalty, -2, 2, d->frequency_penalty) ||
        !s_in(s->presence_penalty, -2, 2, d->presence_penalty) || (s->top_k < 0 && s->top_k != d->top_k))
        abort();
    if (sum == 1u << 31) fprintf(stderr, "%u\n", sum); // keeps the reads
}

// Whether s[0..len) is UTF-8 as strict JSON readers want it: no stray or
// cut sequence, no overlong form, no surrogate, nothing past U+10FFFF.
static bool s_utf8(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        const unsigned c = p[i];
        size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (n == 0 || i + n > len) return false;
        for (size_t k = 1; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] >= 0xA0) || (c == 0xF0 && p[i + 1] < 0x90) ||
            (c == 0xF4 && p[i + 1] >= 0x90))
            return false;
        i += n;
    }
    return true;
}

// An error the server can send: its status and type, and a body any JSON
// client reads back (strict UTF-8 when the request's body was).
static void s_check_error(const mc_api_error_t *e, bool utf8) {
    if ((e->status != 400 && e->status != 500) || !e->type || !e->message[0]) abort();
    char *json = mc_api_error_json(e);
    if (json && utf8 && !s_utf8(json, strlen(json))) {
        fprintf(stderr, "fuzz_api: an error body that is not UTF-8: %s\n", json);
        abort();
    }
    cJSON *back = json ? cJSON_Parse(json) : NULL;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(back, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
    if (!cJSON_IsString(msg) || strcmp(msg->valuestring, e->message)) abort();
    cJSON_Delete(back);
    free(json);
}

// How many of ids[0..n) are `id`.
static size_t s_count(const int32_t *ids, size_t n, int32_t id) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

// The conversation as the server formats it (the safe prompt in front when
// asked); a conversation closed by an answer is formatted whole as well.
// The control tokens in the ids must be exactly the ones the format places.
static void s_check_chat(const mc_tokenizer_t *t, const mc_api_request_t *r) {
    mc_chat_msg_t *msgs = malloc((r->n_msgs + 1) * sizeof *msgs);
    if (!msgs) abort();
    size_t n = 0, sys = 0, turns = 0, answers = 0, prompt = 0;
    if (r->safe_prompt)
        msgs[n++] =
            (mc_chat_msg_t){.role = MC_CHAT_SYSTEM, .content = mc_chat_safe_prompt, .len = strlen(mc_chat_safe_prompt)};
    memcpy(msgs + n, r->msgs, r->n_msgs * sizeof *msgs);
    n += r->n_msgs;
    // A run of tool messages is one turn (the user's side); the model's
    // turn is opened after the user's side.
    int prev = -1;
    for (size_t i = 0; i < n; i++) {
        const mc_chat_role_t role = msgs[i].role;
        sys += role == MC_CHAT_SYSTEM;
        if (role == MC_CHAT_SYSTEM) continue;
        turns += !(role == MC_CHAT_TOOL && prev == MC_CHAT_TOOL);
        answers += role == MC_CHAT_ASSISTANT;
        prompt = role != MC_CHAT_ASSISTANT;
        prev = (int)role;
    }
    // With the request's tools, in every format: ids in the vocabulary.
    const char **tools = r->tools.n_tools ? malloc(r->tools.n_tools * sizeof *tools) : NULL;
    for (size_t i = 0; i < r->tools.n_tools; i++) tools[i] = r->tools.tools[i].json;
    for (int st = 0; st < MC_CHAT_STYLE_COUNT; st++) {
        mc_chat_opts_t o = mc_chat_opts_default();
        o.style = (mc_chat_style_t)st, o.tools = tools, o.n_tools = r->tools.n_tools, o.thinking = r->thinking;
        int32_t *tids = NULL;
        size_t tn = 0;
        char terr[MC_ERR_LEN];
        const mc_err_t trc = mc_chat_render(t, &o, msgs, n, true, &tids, &tn, terr);
        if (trc != MC_OK && trc != MC_ERR_ARG) abort();
        for (size_t i = 0; trc == MC_OK && i < tn; i++)
            if (tids[i] < 0 || (uint32_t)tids[i] >= mc_tokenizer_n_vocab(t)) abort();
        free(tids);
    }
    free(tools);
    char err[MC_ERR_LEN];
    int32_t *ids = NULL;
    size_t n_ids = 0;
    mc_err_t rc = mc_chat_format(t, msgs, n, false, &ids, &n_ids, err);
    if (rc == MC_ERR_ARG) rc = mc_chat_format(t, msgs, n, true, &ids, &n_ids, err);
    free(msgs);
    if (rc == MC_ERR_ARG) return; // roles out of order: the client is told
    if (rc != MC_OK || !ids || n_ids == 0) abort();
    const uint32_t n_vocab = mc_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= n_vocab) abort();
    if (mc_chat_style_of(t) == MC_CHAT_STYLE_CHATML) {
        // One turn per message (the system ones joined), and the opening of
        // the model's turn after a user message.
        const size_t opened = (sys > 0) + turns + prompt, closed = (sys > 0) + turns;
        if (s_count(ids, n_ids, mc_tokenizer_find(t, "<|im_start|>", 12)) != opened ||
            s_count(ids, n_ids, mc_tokenizer_find(t, "<|im_end|>", 10)) != closed)
            abort();
    } else {
        // BOS once, in front; EOS after each answer.
        const int32_t bos = mc_tokenizer_bos(t);
        if (ids[0] != bos || s_count(ids, n_ids, bos) != 1 || s_count(ids, n_ids, mc_tokenizer_eos(t)) != answers)
            abort();
    }
    free(ids);
}

// The body read as a model's answer: calls parsed (or refused) in each
// format, the reply split within the text.
static void s_check_calls(const mc_api_request_t *r, const char *text, size_t len) {
    for (int st = 0; st < MC_CHAT_STYLE_COUNT; st++) {
        const mc_reply_params_t p = {(mc_chat_style_t)st, true, true};
        mc_reply_view_t v;
        for (int done = 0; done < 2; done++) {
            mc_reply_view(&p, text, len, done, &v);
            if (v.r0 > v.r1 || v.r1 > len || v.c0 > v.c1 || v.c1 > len || v.calls > len) abort();
        }
        if (v.calls == len) continue;
        mc_toolcall_list_t l;
        char err[MC_ERR_LEN];
        const mc_err_t rc = mc_toolcall_parse((mc_chat_style_t)st, text + v.calls, len - v.calls, &r->tools, "id", &l, err);
        if (rc == MC_OK) {
            if (l.n == 0) abort();
            mc_toolcall_list_free(&l);
        } else if (rc != MC_ERR_FORMAT && rc != MC_ERR_NOMEM) {
            abort();
        }
    }
}

// The prompt as the server tokenizes it.
static void s_check_prompt(const mc_tokenizer_t *t, const mc_api_request_t *r) {
    const size_t cap = mc_tokenizer_max_tokens(r->prompt_len);
    int32_t *ids = malloc(cap * sizeof *ids);
    size_t n = 0;
    char err[MC_ERR_LEN];
    if (!ids || mc_tokenizer_encode(t, r->prompt, r->prompt_len, mc_tokenizer_add_bos(t), ids, cap, &n, err) != MC_OK ||
        n > cap)
        abort();
    free(ids);
}

// text[0..len) as the answer and as a stream chunk: each must read back as
// JSON holding the same text (no NUL byte in a parsed string).
static void s_check_answer(bool chat, const char *text, size_t len) {
    const mc_api_answer_t a = {chat, chat ? "chatcmpl-1" : "cmpl-1", 1700000000, "fuzz", true, false, NULL};
    const mc_api_result_t whole = {.text = text,
                                   .len = len,
                                   .why = MC_FINISH_STOP,
                                   .prompt_tokens = 1,
                                   .completion_tokens = 2},
                          piece = {.text = text, .len = len, .why = MC_FINISH_NONE};
    char *bodies[2] = {mc_api_completion_json(&a, &whole), mc_api_chunk_json(&a, true, &piece)};
    for (int i = 0; i < 2; i++) {
        cJSON *root = bodies[i] ? cJSON_Parse(bodies[i]) : NULL;
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
        if (chat) c = cJSON_GetObjectItemCaseSensitive(c, i == 0 ? "message" : "delta");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(c, chat ? "content" : "text");
        if (!cJSON_IsString(s) || strlen(s->valuestring) != len || memcmp(s->valuestring, text, len)) abort();
        cJSON_Delete(root);
        free(bodies[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const bool utf8 = s_utf8((const char *)data, size);
    for (int chat = 1; chat >= 0; chat--) {
        mc_api_request_t r;
        mc_api_error_t e;
        memset(&e, 0, sizeof e);
        if (mc_api_parse((const char *)data, size, chat, &s_defaults, &r, &e) != MC_OK) {
            s_check_error(&e, utf8);
            continue;
        }
        s_check_request(&r, chat);
        for (int i = 0; i < 2; i++) {
            if (chat) s_check_chat(s_toks[i], &r);
            else s_check_prompt(s_toks[i], &r);
        }
        if (chat) s_check_answer(true, r.msgs[r.n_msgs - 1].content, r.msgs[r.n_msgs - 1].len);
        if (chat) s_check_calls(&r, (const char *)data, size);
        else s_check_answer(false, r.prompt, r.prompt_len);
        mc_api_request_free(&r);
    }
    // The other dialects: the same promises of what they accept.
    for (int k = 0; k < 3; k++) {
        mc_api_request_t r;
        mc_api_error_t e;
        memset(&e, 0, sizeof e);
        bool load_only = false;
        const mc_err_t rc = k == 0 ? mc_responses_parse((const char *)data, size, &s_defaults, NULL, &r, &e)
                                   : mc_ollama_parse((const char *)data, size, k == 1, &s_defaults, &r, &load_only, &e);
        if (rc != MC_OK) {
            s_check_error(&e, utf8);
            continue;
        }
        if (!load_only) {
            s_check_request(&r, r.chat);
            for (int i = 0; i < 2; i++) {
                if (r.chat) s_check_chat(s_toks[i], &r);
                else s_check_prompt(s_toks[i], &r);
            }
        }
        mc_api_request_free(&r);
    }
    return 0;
}
