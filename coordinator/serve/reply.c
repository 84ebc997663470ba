/*
 * reply: reasoning, content and the start of tool calls in a chat answer.
 */
#include "reply.h"

#include <string.h>

#include "toolcall.h"

bool mc_reply_active(const mc_reply_params_t *p) { return p->think || p->tools || p->style == MC_CHAT_STYLE_HARMONY; }

// The first s in t[from..len), or len.
static size_t s_find(const char *t, size_t len, size_t from, const char *s) {
    const size_t n = strlen(s);
    for (size_t i = from; i + n <= len; i++)
        if (t[i] == s[0] && !memcmp(t + i, s, n)) return i;
    return len;
}

// The length of the longest tail of t[from..len) that is a proper prefix of s.
static size_t s_partial(const char *t, size_t len, size_t from, const char *s) {
    const size_t n = strlen(s);
    for (size_t k = n - 1; k > 0; k--)
        if (k <= len - from && !memcmp(t + len - k, s, k)) return k;
    return 0;
}

static bool s_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// The longest tail of t[from..len) that is a proper prefix of one of gpt-oss's markers.
static size_t s_harmony_partial(const char *t, size_t len, size_t from) {
    static const char *const marks[] = {"<|end|>", "<|return|>", "<|call|>", "<|start|>", "<|channel|>",
                                        "<|message|>", "<|constrain|>"};
    size_t k = 0;
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++) {
        const size_t n = s_partial(t, len, from, marks[i]);
        if (n > k) k = n;
    }
    return k;
}

// gpt-oss: the model's turn (after "<|start|>assistant") is messages, each
// a header ("<|channel|>" channel, a recipient " to=functions.NAME" before
// or after it, " <|constrain|>json" or " json"), "<|message|>", its body
// and "<|end|>" ("<|start|>assistant" and the next header follow),
// "<|return|>" or "<|call|>" (the last two end the answer: the server
// never sees them). The first analysis body is the reasoning, the final
// body the content; the first message with a recipient starts the calls.
// A commentary message without one (a preamble) is left out. Text that
// does not open with a header is all content (a model off its format).
static void s_harmony_view(const char *text, size_t len, bool done, mc_reply_view_t *v) {
    static const char start[] = "<|start|>", chan[] = "<|channel|>", msg[] = "<|message|>", to[] = " to=";
    *v = (mc_reply_view_t){len, len, len, len, len};
    // The first header: "<|channel|>" or a recipient right after the prompt's "<|start|>assistant".
    const bool opens = s_find(text, len, 0, chan) == 0 || s_find(text, len, 0, to) == 0;
    if (!opens) {
        const bool may = !done && ((len < sizeof chan - 1 && !memcmp(text, chan, len)) ||
                                   (len < sizeof to - 1 && !memcmp(text, to, len)));
        if (!may) v->c0 = 0; // not the format: all content
        return;
    }
    size_t at = 0;
    bool have_r = false;
    for (bool first = true;; first = false) {
        const size_t h0 = at;
        if (!first) {
            if (len - at < sizeof start - 1 || memcmp(text + at, start, sizeof start - 1)) return; // not (yet) a message
            at += sizeof start - 1;
        }
        const size_t m = s_find(text, len, at, msg);
        if (m == len) return; // the header is not whole yet (or the answer was cut in it)
        if (s_find(text, m, h0, to) < m) { // a recipient: the calls start here
            v->calls = h0;
            return;
        }
        const size_t cpos = s_find(text, m, h0, chan);
        const char *ch = cpos < m ? text + cpos + sizeof chan - 1 : "";
        const size_t ch_len = cpos < m ? m - (cpos + sizeof chan - 1) : 0;
        const bool analysis = ch_len >= 8 && !memcmp(ch, "analysis", 8), final = ch_len >= 5 && !memcmp(ch, "final", 5);
        // The body: to its end marker, or (streaming) to what cannot become one.
        const size_t b0 = m + sizeof msg - 1;
        static const char *const ends[] = {"<|end|>", "<|return|>", "<|call|>"};
        size_t b1 = len, next = len;
        bool more = false; // <|end|>: another message may follow
        for (size_t i = 0; i < 3; i++) {
            const size_t e = s_find(text, len, b0, ends[i]);
            if (e < b1) b1 = e, next = e + strlen(ends[i]), more = i == 0;
        }
        const bool closed = b1 < len;
        if (!closed && !done) b1 = len - s_harmony_partial(text, len, b0);
        if (analysis && !have_r) v->r0 = b0, v->r1 = b1, have_r = true;
        else if (final) v->c0 = b0, v->c1 = b1;
        if (!closed || !more) return;
        at = next;
    }
}

void mc_reply_view(const mc_reply_params_t *p, const char *text, size_t len, bool done, mc_reply_view_t *v) {
    if (p->style == MC_CHAT_STYLE_HARMONY) {
        s_harmony_view(text, len, done, v);
        if (!p->tools) v->calls = len;
        return;
    }
    *v = (mc_reply_view_t){0, 0, 0, len, len};
    size_t c0 = 0;
    if (p->think) {
        static const char open[] = "<think>", close[] = "</think>";
        size_t at = 0;
        while (at < len && s_ws(text[at])) at++;
        const size_t rest = len - at;
        if (!done && rest < sizeof open - 1 && !memcmp(text + at, open, rest)) { // may still open it
            *v = (mc_reply_view_t){0, 0, 0, 0, len};
            return;
        }
        if (rest >= sizeof open - 1 && !memcmp(text + at, open, sizeof open - 1)) {
            size_t r0 = at + sizeof open - 1;
            while (r0 < len && text[r0] == '\n') r0++;
            const size_t end = s_find(text, len, r0, close);
            size_t r1 = end;
            if (end == len && !done) r1 = len - s_partial(text, len, r0, close);
            while (r1 > r0 && text[r1 - 1] == '\n') r1--;
            v->r0 = r0 < r1 ? r0 : r1, v->r1 = r1;
            if (end == len) { // still thinking (or cut while thinking)
                v->c0 = v->c1 = v->calls = len;
                return;
            }
            c0 = end + sizeof close - 1;
            while (c0 < len && text[c0] == '\n') c0++;
        }
    }
    v->c0 = c0;
    size_t c1 = len;
    if (p->tools) {
        const char *mark = mc_toolcall_marker(p->style);
        v->calls = s_find(text, len, c0, mark);
        c1 = v->calls;
        if (v->calls == len && !done) c1 = len - s_partial(text, len, c0, mark);
        if (v->calls < len || !done)
            while (c1 > c0 && s_ws(text[c1 - 1])) c1--;
    }
    v->c1 = c1;
}
