/*
 * termchat: `moe-coordinator --chat`, a conversation in the terminal.
 *
 * Each line the user types is a message; the answer streams back as it is
 * generated, followed by its speed. The history is kept (and its KV cache
 * reused: a turn only evaluates what is new), /reset starts over, /quit or
 * end of input leaves. Ctrl-C stops an answer; at the prompt it leaves.
 */
#ifndef MC_TERMCHAT_H
#define MC_TERMCHAT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sampler.h"
#include "session.h"

typedef struct {
    mc_sampler_params_t sampling;
    bool seed_given;       // else a random seed per answer
    uint32_t max_tokens;   // per answer; 0: until it ends
    const char *system;    // a system message, or NULL
    bool safe_prompt;      // Mistral's safety prompt as a system message
    atomic_int *stop;      // set by Ctrl-C (may be NULL); cleared after an interrupted answer
    const mc_draft_params_t *speculate; // speculative decoding of the answers; NULL: off (borrowed)
} mc_termchat_params_t;

mc_termchat_params_t mc_termchat_params_default(void);

// Talk on in/out until /quit or end of input; returns the exit code.
int mc_termchat_run(mc_session_t *s, const mc_termchat_params_t *p, FILE *in, FILE *out);

#endif
