/*
 * chat: a conversation (system, user and assistant messages) turned into
 * the prompt ids an instruct model was trained on.
 *
 * Two formats, chosen by the vocabulary (mc_chat_style_of), whatever chat
 * template the GGUF carries. ChatML, for vocabularies with <|im_start|> and
 * <|im_end|> control tokens (Qwen3-MoE, OLMoE instruct):
 *
 *   <|im_start|> sp("system\n" system) <|im_end|> sp("\n")
 *   <|im_start|> sp("user\n" user1) <|im_end|> sp("\n")
 *   <|im_start|> sp("assistant\n" assistant1) <|im_end|> sp("\n") ...
 *   <|im_start|> sp("assistant\n")
 *
 * (no thinking block is added), and otherwise Mistral's for Mixtral
 * Instruct (v1):
 *
 *   BOS sp("[INST] " user1 " [/INST]") sp(assistant1) EOS sp("[INST] " user2 " [/INST]") ...
 *
 * where each sp() is tokenized on its own (with its own leading space in
 * SentencePiece vocabularies).
 * System messages are folded into the first user message (system "\n\n"
 * user), as Mistral's template does. BOS and EOS are tokens placed here,
 * never text: a message containing "[INST]" or "</s>" stays text, so a user
 * cannot forge the structure.
 *
 * Parsing is separate from the tokenizer so the HTTP layer can validate a
 * request's roles (mc_chat_role_from_name) before anything runs.
 */
#ifndef MC_CHAT_H
#define MC_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

typedef enum { MC_CHAT_SYSTEM = 0, MC_CHAT_USER, MC_CHAT_ASSISTANT } mc_chat_role_t;

typedef enum { MC_CHAT_STYLE_MISTRAL = 0, MC_CHAT_STYLE_CHATML } mc_chat_style_t;

// The format mc_chat_format uses with tok's vocabulary.
mc_chat_style_t mc_chat_style_of(const mc_tokenizer_t *tok);

typedef struct {
    mc_chat_role_t role;
    const char *content; // len bytes of UTF-8 (not necessarily NUL-terminated)
    size_t len;
} mc_chat_msg_t;

// Mistral's published safety prompt (FORMATS.md): prepended as a system
// message when a request or --safe-prompt asks for it.
extern const char mc_chat_safe_prompt[];

// "system", "user", "assistant" -> role; false for anything else.
bool mc_chat_role_from_name(const char *name, mc_chat_role_t *out);

// Prompt ids of msgs into *ids (malloc'd, *n_ids entries). After the
// system messages, roles must alternate user, assistant, user, ... A
// conversation ending with a user message is a prompt for the next answer;
// unless allow_assistant_last, that is required (a whole conversation, its
// last answer closed by EOS, is allowed otherwise). MC_ERR_ARG with a
// message for the client when the roles do not fit.
mc_err_t mc_chat_format(const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n, bool allow_assistant_last,
                        int32_t **ids, size_t *n_ids, char *err);

#endif
