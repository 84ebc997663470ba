/*
 * chat: a conversation (system, user, assistant and tool messages) turned
 * into the prompt ids an instruct model was trained on.
 *
 * Nine formats (mc_chat_style_t). Which one a model gets: --chat-format
 * NAME when given, else the GGUF's tokenizer.chat_template recognised by
 * distinctive text (mc_chat_style_from_template; never executed: an
 * unknown template is refused, naming --chat-format, rather than guessed),
 * else the vocabulary (mc_chat_style_of). Each renders what the model's own
 * template renders, with markers that are tokens in the vocabulary placed
 * by id and the text between two of them tokenized on its own (as
 * llama.cpp splits a templated prompt at its special tokens; SentencePiece
 * vocabularies then put their leading space on each piece, as
 * mistral_common does). sp() below is such a piece.
 *
 * mistral-v1 (Mixtral Instruct v0.1, "[INST]" is text):
 *   BOS sp("[INST] " user1 " [/INST]") sp(assistant1) EOS sp("[INST] " user2 " [/INST]") ...
 * system messages folded into the first user message (system "\n\n" user).
 *
 * mistral-v3 (Mistral v0.3 / Mixtral v0.3 tokenizer, control tokens):
 *   BOS [INST] sp(user1) [/INST] sp(assistant1) EOS ...
 *   [AVAILABLE_TOOLS] sp("[" tool ", " tool "]") [/AVAILABLE_TOOLS]   before the last user message
 *   [INST] sp(system "\n\n" last user) [/INST]                       (system with the last user message)
 *   [TOOL_CALLS] sp("[{\"name\": \"f\", \"arguments\": {...}, \"id\": \"abcDEF123\"}]") EOS
 *   [TOOL_RESULTS] sp("{\"content\": " result ", \"call_id\": \"abcDEF123\"}") [/TOOL_RESULTS]
 * (call ids are the 9 letters and digits the format wants: an id of
 * another shape is mapped to 9 by a hash, the same for the call and its
 * result).
 *
 * chatml and qwen3 (Qwen3-MoE; qwen3 adds thinking):
 *   <|im_start|> sp("system\n" system) <|im_end|> sp("\n")
 *   <|im_start|> sp("user\n" user1) <|im_end|> sp("\n")
 *   <|im_start|> sp("assistant\n" assistant1) <|im_end|> sp("\n") ...
 *   <|im_start|> sp("assistant\n")                 qwen3 without thinking: + "<think>\n\n</think>\n\n"
 * with tools, Qwen3's system section ("# Tools ... <tools>\n" one tool per
 * line "\n</tools> ... </tool_call>", after the system text), calls as
 * "<tool_call>\n{\"name\": \"f\", \"arguments\": {...}}\n</tool_call>" in the
 * assistant turn and results as "\n<tool_response>\n" result
 * "\n</tool_response>" in one user turn per run of tool messages. qwen3
 * drops the reasoning of assistant messages before the last user message
 * and keeps it (as "<think>\n" reasoning "\n</think>\n\n") after it, as
 * Qwen3's template does.
 *
 * tulu (OLMoE-1B-7B-0924-Instruct):
 *   BOS <|system|> sp("\n" system "\n") <|user|> sp("\n" user1 "\n")
 *   <|assistant|> sp("\n" assistant1) EOS sp("\n") ... <|assistant|> sp("\n")
 *
 * deepseek-v2 (DeepSeek-V2 / V2-Lite Chat; "User:" is text):
 *   BOS sp(system "\n\n" "User: " user1 "\n\n" "Assistant: " assistant1) EOS
 *   sp("User: " user2 "\n\n" "Assistant:")
 *
 * deepseek-v3 (DeepSeek-V3 / R1 and their "V3 shape"):
 *   BOS sp(system) <｜User｜> sp(user1) <｜Assistant｜> sp(assistant1) <｜end▁of▁sentence｜>
 *   <｜User｜> sp(user2) <｜Assistant｜>
 * an answer's text after its last "</think>" only (R1's template drops
 * past reasoning; V3's answers have none). No separator after the system
 * text, as the templates write it (llama.cpp's built-in adds "\n\n").
 * Calls and results as R1's template writes them:
 *   <｜Assistant｜> sp(text) <｜tool▁calls▁begin｜> <｜tool▁call▁begin｜> sp("function") <｜tool▁sep｜>
 *   sp(name "\n```json\n" arguments "\n```") <｜tool▁call▁end｜> (sp("\n") <｜tool▁call▁begin｜> ...)
 *   <｜tool▁calls▁end｜> <｜end▁of▁sentence｜>
 *   <｜tool▁outputs▁begin｜> <｜tool▁output▁begin｜> sp(result) <｜tool▁output▁end｜> ... <｜tool▁outputs▁end｜>
 * the answer to the results right after <｜tool▁outputs▁end｜> (no
 * <｜Assistant｜>; a prompt ending with results is not given one). The
 * templates never write the request's tools: ours follow the system text
 * ("## Tools", one tool's JSON a line, the call syntax), our convention.
 *
 * glm4 (GLM-4.5 / 4.6, glm4moe; no end-of-turn token: the next turn's
 * marker ends one, and the model's turn ends on <|user|>, <|observation|>
 * or <|endoftext|>):
 *   [gMASK] <sop> <|system|> sp("\n" system) <|user|> sp("\n" user1)
 *   <|assistant|> sp("\n<think></think>\n" assistant1) ... <|assistant|>
 * reasoning kept ("\n<think>" r "</think>") only for answers after the last
 * user message; thinking off appends "/nothink" to each user message and
 * opens the model's turn with "\n<think></think>", as GLM's template does
 * (<think> and </think> by id when the vocabulary has them as tokens).
 * With tools, GLM's "# Tools" system turn right after <sop> (one tool's
 * JSON a line, the <tool_call> syntax); calls after an answer's text:
 *   sp("\n") <tool_call> sp(name "\n") (<arg_key> sp(key) </arg_key> sp("\n")
 *   <arg_value> sp(value) </arg_value> sp("\n"))... </tool_call>
 * a string value as its text, any other as JSON; a run of results:
 *   <|observation|> (sp("\n") <tool_response> sp("\n" result "\n") </tool_response>)...
 * No BOS unless the file sets add_bos_token and its BOS is not [gMASK]
 * (llama.cpp's rule: the template writes [gMASK], the tokenizer adds the
 * file's BOS only with add_bos, and drops a doubled one).

 * gpt-oss (GPT-OSS, OpenAI's harmony format; every marker a token), as
 * its published template renders it (golden strings in tests/harmony_golden.h):
 *   <|start|> "system" <|message|> sp("You are ChatGPT, ...\nKnowledge cutoff: 2024-06\n"
 *   ["Current date: " date "\n"] "\nReasoning: " effort "\n\n# Valid channels: ...") <|end|>
 *   <|start|> "developer" <|message|> sp("# Instructions\n\n" system "\n\n" "# Tools\n\n## functions ...") <|end|>
 *   <|start|> "user" <|message|> sp(user1) <|end|>
 *   <|start|> "assistant" <|channel|> "final" <|message|> sp(answer1) <|end|> ... <|start|> "assistant"
 * (each quoted text a piece of its own). The developer message only with
 * system text or tools; tools as the template's TypeScript types in
 * "namespace functions". Past reasoning dropped; a call as
 *   <|start|> "assistant to=functions.NAME" <|channel|> "commentary json" <|message|> args <|call|>
 * after its message's reasoning (or text) as an analysis message while no
 * answer follows; a result as
 *   <|start|> "functions.NAME to=assistant" <|channel|> "commentary" <|message|> json_string(result) <|end|>
 * A whole conversation's last answer: its analysis, then the final message
 * closed by <|return|>. The date comes from the caller (the server: today,
 * UTC); without one the line is left out, so tests are deterministic.
 *
 * Formats without tool tokens (mistral-v1, tulu, deepseek-v2) get tools as text, the
 * same convention as Qwen3's: the "# Tools" section appended to the system
 * text, calls as <tool_call> blocks in the assistant's text, results as a
 * user message of <tool_response> blocks.
 *
 * Other system messages than the first are joined with it ("\n\n"), in
 * front (the DeepSeek and GLM templates write a system message where it
 * stands; the same text when it comes first, as it almost always does).
 * BOS, EOS and markers are tokens placed here, never text: a
 * message containing "[INST]" or "</s>" stays text, so a user cannot forge
 * the structure.
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

typedef enum { MC_CHAT_SYSTEM = 0, MC_CHAT_USER, MC_CHAT_ASSISTANT, MC_CHAT_TOOL } mc_chat_role_t;

typedef enum {
    MC_CHAT_STYLE_MISTRAL = 0, // "mistral-v1"
    MC_CHAT_STYLE_CHATML,      // "chatml"
    MC_CHAT_STYLE_MISTRAL_V3,  // "mistral-v3"
    MC_CHAT_STYLE_QWEN3,       // "qwen3"
    MC_CHAT_STYLE_TULU,        // "tulu"
    MC_CHAT_STYLE_DEEPSEEK_V2, // "deepseek-v2"
    MC_CHAT_STYLE_DEEPSEEK_V3, // "deepseek-v3"
    MC_CHAT_STYLE_GLM4,        // "glm4"
    MC_CHAT_STYLE_HARMONY,     // "gpt-oss" (OpenAI's harmony format)
    MC_CHAT_STYLE_COUNT
} mc_chat_style_t;

// The format a vocabulary suggests when the file has no template:
// <|im_start|> and <|im_end|> tokens: chatml; [gMASK] and <|user|>: glm4;
// <|start|>, <|channel|> and <|message|>: gpt-oss (harmony);
// <|user|> and <|assistant|> (and no <|im_start|>): tulu; <｜User｜> and
// <｜Assistant｜>: deepseek-v3; <｜end▁of▁sentence｜> (without those):
// deepseek-v2; [AVAILABLE_TOOLS]: mistral-v3; else mistral-v1.
mc_chat_style_t mc_chat_style_of(const mc_tokenizer_t *tok);

// "mistral-v1", "mistral-v3", "chatml", "qwen3", "tulu", "deepseek-v2", "deepseek-v3", "glm4", "gpt-oss".
const char *mc_chat_style_name(mc_chat_style_t s);
// A name above (also "mistral" for mistral-v1, "harmony" for gpt-oss) -> style; false otherwise.
bool mc_chat_style_from_name(const char *name, mc_chat_style_t *out);
// The names, for messages and --help: "mistral-v1, mistral-v3, chatml, qwen3, tulu, deepseek-v2, ...".
extern const char mc_chat_style_names[];

// The format of a chat template text (a GGUF's tokenizer.chat_template),
// by the markers it writes: "<|start|>" with "<|channel|>" gpt-oss;
// [AVAILABLE_TOOLS] mistral-v3; "[gMASK]<sop>"
// with <think> glm4 (GLM-4.5; without: an older GLM, refused); <|im_start|>
// with <think> or enable_thinking qwen3, without chatml; <|user|> and
// <|assistant|> tulu; <｜User｜> and <｜Assistant｜> deepseek-v3;
// "Assistant: ' + message['content'] + eos_token" deepseek-v2; [INST]
// mistral-v3 when tok has [INST] as one token, else mistral-v1. Anything else: MC_ERR_UNSUPPORTED with a message that
// names --chat-format.
mc_err_t mc_chat_style_from_template(const char *tmpl, size_t len, const mc_tokenizer_t *tok, mc_chat_style_t *out,
                                     char *err);

// The format for a model: name (--chat-format) when not NULL (an unknown
// name is MC_ERR_ARG), else g's template when it has one, else tok's vocabulary.
mc_err_t mc_chat_style_choose(const mc_gguf_t *g, const mc_tokenizer_t *tok, const char *name, mc_chat_style_t *out,
                              char *err);

// The tokens that end a model's answer, found in tok's vocabulary (as
// llama.cpp treats them): EOS; ChatML's <|im_end|> and <|endoftext|> (an
// instruct file's EOS may name either); in GLM vocabularies (with [gMASK])
// <|user|> and <|observation|>, the markers that follow an answer or a
// tool call (GLM-4.5 has no end-of-turn token). DeepSeek's
// <｜end▁of▁sentence｜> is its files' EOS. In harmony vocabularies (with
// <|channel|>) <|return|> and <|call|>, which end an answer and a tool
// call; not <|end|>, which ends the analysis message the final answer
// follows in the same turn. Writes up to MC_CHAT_MAX_END
// distinct ids to out; returns how many.
#define MC_CHAT_MAX_END 7
size_t mc_chat_end_ids(const mc_tokenizer_t *tok, int32_t out[MC_CHAT_MAX_END]);

// A call an assistant message made (OpenAI's tool_calls[i]).
typedef struct {
    const char *id;        // the call's id ("" or NULL: none)
    const char *name;      // the function
    const char *arguments; // its arguments as JSON text, written as the formats print JSON (tools.h)
} mc_chat_call_t;

typedef struct {
    mc_chat_role_t role;
    const char *content; // len bytes of UTF-8 (not necessarily NUL-terminated)
    size_t len;
    const mc_chat_call_t *calls; // assistant: the tool calls it made (n_calls)
    size_t n_calls;
    const char *tool_call_id;    // tool: the call it answers (NULL: none)
    const char *reasoning;       // assistant: its reasoning_content (NULL: none given; qwen3 then
    size_t reasoning_len;        // looks for a <think> block in the content)
} mc_chat_msg_t;

// What a rendering needs besides the messages.
typedef struct {
    mc_chat_style_t style;
    const char *const *tools; // n_tools function tools, each as its JSON object ({"type": "function",
    size_t n_tools;           // "function": {...}}) printed as the templates print JSON; 0: no tools
    bool thinking;            // qwen3, glm4: let the model think (false: the empty think block, glm4
                              // also "/nothink"); default true
    const char *reasoning_effort; // gpt-oss: "Reasoning: " in the system message (NULL: "medium")
    const char *date;             // gpt-oss: "Current date: " (YYYY-MM-DD) in the system message; NULL:
                                  // the line is left out (the server gives today's UTC date)
} mc_chat_opts_t;

// mistral-v1 (reset by callers to a chosen style), no tools, thinking on.
mc_chat_opts_t mc_chat_opts_default(void);

// Mistral's published safety prompt (FORMATS.md): prepended as a system
// message when a request or --safe-prompt asks for it.
extern const char mc_chat_safe_prompt[];

// "system", "user", "assistant", "tool" -> role; false for anything else.
bool mc_chat_role_from_name(const char *name, mc_chat_role_t *out);

// Prompt ids of msgs in o's format into *ids (malloc'd, *n_ids entries).
// After the system messages, roles must alternate user, assistant, user,
// ..., where tool messages may follow an assistant message with calls (or
// another tool message) and stand for the user's turn. A conversation
// ending with a user or tool message is a prompt for the next answer;
// unless allow_assistant_last, that is required (a whole conversation, its
// last answer closed by EOS, is allowed otherwise). MC_ERR_ARG with a
// message for the client when the roles do not fit.
mc_err_t mc_chat_render(const mc_tokenizer_t *tok, const mc_chat_opts_t *o, const mc_chat_msg_t *msgs, size_t n,
                        bool allow_assistant_last, int32_t **ids, size_t *n_ids, char *err);

// mc_chat_render in the vocabulary's format (mc_chat_style_of), no tools.
mc_err_t mc_chat_format(const mc_tokenizer_t *tok, const mc_chat_msg_t *msgs, size_t n, bool allow_assistant_last,
                        int32_t **ids, size_t *n_ids, char *err);

// Qwen3's tools section after "# Tools" (the text convention of chatml,
// qwen3 and the formats without tool tokens) is written by the renderer;
// the model's calls come back as "<tool_call>\n{json}\n</tool_call>" blocks
// (mistral-v3: the [TOOL_CALLS] token, then a JSON array; deepseek-v3 and
// glm4: their own syntax above).
#define MC_CHAT_CALL_OPEN "<tool_call>"
#define MC_CHAT_CALL_CLOSE "</tool_call>"
#define MC_CHAT_V3_CALLS "[TOOL_CALLS]"
// deepseek-v3's call markers (tokens in its vocabulary).
#define MC_CHAT_DS_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define MC_CHAT_DS_CALLS_END "<｜tool▁calls▁end｜>"
#define MC_CHAT_DS_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define MC_CHAT_DS_CALL_END "<｜tool▁call▁end｜>"
#define MC_CHAT_DS_SEP "<｜tool▁sep｜>"
// gpt-oss's: a message's recipient in its header (" to=functions.NAME").
#define MC_CHAT_HARMONY_TO " to="
// glm4's (<tool_call> and </tool_call> as above).
#define MC_CHAT_GLM_KEY_OPEN "<arg_key>"
#define MC_CHAT_GLM_KEY_CLOSE "</arg_key>"
#define MC_CHAT_GLM_VALUE_OPEN "<arg_value>"
#define MC_CHAT_GLM_VALUE_CLOSE "</arg_value>"

// A gpt-oss answer as it streams, token by token, for a reader that has
// the token ids but not the control tokens' text (the terminal chat): which
// part of the answer each piece belongs to. The answer opens with a header
// (<|channel|> "analysis" <|message|>, right after the prompt's
// "<|start|>assistant"); a message's body runs to <|end|>, after which
// "<|start|>assistant" and the next header follow. An answer that does not
// open with <|channel|> or a recipient is off the format: all final.
typedef enum {
    MC_HARMONY_HEADER = 0, // control tokens, role, channel and recipient text
    MC_HARMONY_ANALYSIS,   // the reasoning
    MC_HARMONY_FINAL,      // the answer
    MC_HARMONY_OTHER,      // commentary: preambles and calls
} mc_harmony_part_t;

typedef struct {
    int32_t start, channel, message, end; // the control tokens' ids (-1: not in the vocabulary)
    bool body, off, any;                  // in a message's body; off the format; anything pushed
    char head[64];                        // the header's text so far (its start: role, recipient, channel)
    size_t head_len, chan_at;             // its length; where the channel's name starts in it
    mc_harmony_part_t part; // of the current body
} mc_harmony_split_t;

// Before an answer: the control tokens' ids from tok (-1 for any it lacks).
void mc_harmony_split_init(mc_harmony_split_t *h, const mc_tokenizer_t *tok);
// The part that token id, whose text is text[0..len), belongs to.
mc_harmony_part_t mc_harmony_split_push(mc_harmony_split_t *h, int32_t id, const char *text, size_t len);

#endif
