/*
 * termchat: the read-a-line, answer, repeat loop over a session.
 */
#include "termchat.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "rng.h"
#include "scheduler.h"

// While a person thinks at the prompt, the cluster's nodes still hear from
// us this often (heartbeats keep their lease on our placement; probes bring
// lost nodes back): an idle chat must not lose its nodes to the lease.
#define S_IDLE_TICK_MS 250

// Wait until a line can be read from in, ticking the cluster meanwhile.
// Only a terminal is waited on this way: it hands over one line per read, so
// nothing sits in in's buffer unseen by poll. False on Ctrl-C (EINTR).
static bool s_idle_wait(mc_session_t *s, FILE *in) {
    if (!mc_experts_n_nodes(mc_session_experts(s)) || !isatty(fileno(in))) return true;
    for (;;) {
        struct pollfd pfd = {.fd = fileno(in), .events = POLLIN};
        int r = poll(&pfd, 1, S_IDLE_TICK_MS);
        if (r > 0) return true;
        if (r < 0) return errno != EINTR;
        mc_session_tick(s);
    }
}

mc_termchat_params_t mc_termchat_params_default(void) {
    mc_termchat_params_t p = {0};
    p.sampling = mc_sampler_params_default();
    return p;
}

// The conversation so far (system messages first).
typedef struct {
    mc_chat_msg_t *msgs;
    char **texts; // owned copies of the contents
    size_t n, cap;
} s_history_t;

static bool s_add(s_history_t *h, mc_chat_role_t role, const char *text, size_t len) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 16;
        mc_chat_msg_t *m = realloc(h->msgs, cap * sizeof *m);
        if (!m) return false;
        h->msgs = m;
        char **t = realloc(h->texts, cap * sizeof *t);
        if (!t) return false;
        h->texts = t, h->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, text, len);
    copy[len] = 0;
    h->texts[h->n] = copy;
    h->msgs[h->n++] = (mc_chat_msg_t){.role = role, .content = copy, .len = len};
    return true;
}

static void s_truncate(s_history_t *h, size_t n) {
    while (h->n > n) free(h->texts[--h->n]);
}

// One answer's text and outcome.
typedef struct {
    FILE *out;
    atomic_int *stop;
    char *text;
    size_t len, cap;
    // gpt-oss: the answer's parts (chat.h); only the final channel is kept
    // for the conversation (its template drops past reasoning), the
    // reasoning is shown as "(thinking)" and the headers not at all.
    bool harmony;
    mc_harmony_split_t split;
    mc_harmony_part_t shown; // the part printed last
    bool done, nomem;
    mc_finish_t why;
    mc_gen_usage_t usage;
    char err[MC_ERR_LEN];
} s_answer_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_answer_t *a = user;
    if (a->harmony) {
        const mc_harmony_part_t part = mc_harmony_split_push(&a->split, id, text, len);
        if (part == MC_HARMONY_HEADER || !len) return !(a->stop && atomic_load(a->stop));
        if (part != a->shown) {
            fputs(part == MC_HARMONY_ANALYSIS ? "(thinking) " : a->shown == MC_HARMONY_HEADER ? "" : "\n\n", a->out);
            a->shown = part;
        }
        fwrite(text, 1, len, a->out);
        fflush(a->out);
        if (part != MC_HARMONY_FINAL) return !(a->stop && atomic_load(a->stop));
    } else {
        fwrite(text, 1, len, a->out);
        fflush(a->out);
    }
    if (a->len + len + 1 > a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 1024;
        while (cap < a->len + len + 1) cap *= 2;
        char *t = realloc(a->text, cap);
        if (!t) {
            a->nomem = true;
            return false;
        }
        a->text = t, a->cap = cap;
    }
    memcpy(a->text + a->len, text, len);
    a->len += len;
    return !(a->stop && atomic_load(a->stop));
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_answer_t *a = user;
    a->done = true, a->why = why, a->usage = *u;
    snprintf(a->err, sizeof a->err, "%s", err);
}

int mc_termchat_run(mc_session_t *s, const mc_termchat_params_t *p, FILE *in, FILE *out) {
    const mc_tokenizer_t *tok = mc_session_tokenizer(s);
    mc_scheduler_t *sched = mc_session_scheduler(s);
    const uint32_t n_ctx = mc_engine_n_ctx(mc_session_engine(s));
    char err[MC_ERR_LEN];
    mc_chat_opts_t co = mc_chat_opts_default();
    if (mc_session_chat_style(s, &co.style, err)) { // an unknown template: --chat-format
        fprintf(stderr, "moe-coordinator: %s\n", err);
        return 1;
    }
    s_history_t h = {0};
    size_t n_system = 0;
    int ret = 0;
    if (p->safe_prompt) n_system += s_add(&h, MC_CHAT_SYSTEM, mc_chat_safe_prompt, strlen(mc_chat_safe_prompt));
    if (p->system) n_system += s_add(&h, MC_CHAT_SYSTEM, p->system, strlen(p->system));
    fprintf(out, "Chatting with %s (context %u tokens). /reset starts over, /quit (or Ctrl-D) leaves.\n",
            mc_session_model_id(s), n_ctx);
    char *line = NULL;
    size_t line_cap = 0;
    for (;;) {
        fputs("\n> ", out);
        fflush(out);
        errno = 0;
        ssize_t n = s_idle_wait(s, in) ? getline(&line, &line_cap, in) : -1;
        if (n < 0) { // end of input, or Ctrl-C at the prompt
            fputc('\n', out);
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            s_truncate(&h, n_system);
            fputs("(the conversation starts over)\n", out);
            continue;
        }
        const size_t before = h.n;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (!s_add(&h, MC_CHAT_USER, line, (size_t)n) ||
            mc_chat_render(tok, &co, h.msgs, h.n, false, &ids, &n_ids, err)) {
            fprintf(out, "(cannot format the conversation: %s)\n", h.n == before ? "out of memory" : err);
            s_truncate(&h, before);
            continue;
        }
        if (n_ids >= n_ctx) {
            fprintf(out, "(the conversation has %zu tokens, the context holds %u: /reset to start over)\n", n_ids, n_ctx);
            s_truncate(&h, before);
            free(ids);
            continue;
        }
        s_answer_t a = {.out = out, .stop = p->stop, .harmony = co.style == MC_CHAT_STYLE_HARMONY};
        if (a.harmony) mc_harmony_split_init(&a.split, tok);
        mc_gen_params_t gp = mc_gen_params_default();
        gp.prompt = ids, gp.n_prompt = (uint32_t)n_ids, gp.sampling = p->sampling, gp.max_tokens = p->max_tokens;
        if (!p->seed_given) gp.sampling.seed = mc_rng_fresh_seed();
        gp.strip_space = true, gp.on_text = s_on_text, gp.on_done = s_on_done, gp.user = &a;
        gp.speculate = p->speculate;
        fputc('\n', out);
        if (mc_scheduler_submit(sched, &gp, NULL, err)) {
            fprintf(out, "(%s)\n", err);
            s_truncate(&h, before);
            free(ids);
            continue;
        }
        free(ids);
        while (!a.done)
            if (mc_scheduler_step(sched, err)) break; // the done callback has it
        const uint32_t passes = a.usage.completion_tokens ? a.usage.completion_tokens - 1 : 0;
        if (a.why == MC_FINISH_ERROR || a.nomem) {
            fprintf(out, "\n(the answer failed: %s)\n", a.nomem ? "out of memory" : a.err);
            s_truncate(&h, before);
            ret = 1;
        } else {
            if (a.why == MC_FINISH_CANCELLED && p->stop) atomic_store(p->stop, 0);
            const char *note = a.why == MC_FINISH_CANCELLED ? ", interrupted"
                               : a.why == MC_FINISH_LENGTH && a.usage.prompt_tokens + a.usage.completion_tokens >= n_ctx
                                   ? ", the context is full: /reset to start over"
                               : a.why == MC_FINISH_LENGTH ? ", token limit" : "";
            fprintf(out, "\n[%u tokens, %.1f tok/s; prompt %u tokens, %.1f tok/s%s]\n", a.usage.completion_tokens,
                    passes && a.usage.generate_s > 0 ? passes / a.usage.generate_s : 0.0, a.usage.prompt_tokens,
                    a.usage.prompt_s > 0 ? a.usage.prompt_tokens / a.usage.prompt_s : 0.0, note);
            if (!s_add(&h, MC_CHAT_ASSISTANT, a.text ? a.text : "", a.len)) s_truncate(&h, before);
        }
        free(a.text);
    }
    free(line);
    s_truncate(&h, 0);
    free(h.msgs), free(h.texts);
    return ret;
}
