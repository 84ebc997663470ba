/*
 * reply: what a chat model wrote, split into reasoning, content and tool
 * calls, for a whole answer and while it streams.
 *
 * qwen3 with thinking on writes "<think>\n" reasoning "\n</think>\n\n"
 * content: the reasoning (newlines trimmed) goes out as
 * reasoning_content, the rest as content. With tools, the content ends
 * where the format's call marker begins (toolcall.h); what follows is
 * parsed as calls when the answer is done, and given back as content when
 * it is not calls.
 *
 * mc_reply_view works on the text so far: while it streams, a tail that
 * may still become "</think>" or a call marker (and, with tools, the
 * whitespace before it) is held back, so every byte it gives is certain;
 * its ranges only grow as the text does, and a stream sends each range's
 * new bytes.
 */
#ifndef MC_REPLY_H
#define MC_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "chat.h"

typedef struct {
    mc_chat_style_t style;
    bool think; // a leading <think> block is reasoning (qwen3 with thinking on)
    bool tools; // calls are looked for (toolcall.h: mc_toolcall_active)
} mc_reply_params_t;

// Whether p changes anything (else the text is all content).
bool mc_reply_active(const mc_reply_params_t *p);

typedef struct {
    size_t r0, r1; // reasoning: text[r0..r1)
    size_t c0, c1; // content: text[c0..c1)
    size_t calls;  // the call marker's position; len when there is none (yet)
} mc_reply_view_t;

// The split of text[0..len); done: the text is whole (nothing held back).
void mc_reply_view(const mc_reply_params_t *p, const char *text, size_t len, bool done, mc_reply_view_t *v);

#endif
