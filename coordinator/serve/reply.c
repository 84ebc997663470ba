/*
 * reply: reasoning, content and the start of tool calls in a chat answer.
 */
#include "reply.h"

#include <string.h>

#include "toolcall.h"

bool mc_reply_active(const mc_reply_params_t *p) { return p->think || p->tools; }

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

void mc_reply_view(const mc_reply_params_t *p, const char *text, size_t len, bool done, mc_reply_view_t *v) {
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
