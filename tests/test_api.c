/*
 * test_api: OpenAI request bodies (every field the server uses, every kind
 * of bad input with its status, param and message) and the JSON of
 * answers and stream chunks, read back with cJSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

static mc_api_request_t s_ok(const char *body, bool chat) {
    mc_api_request_t r;
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    if (mc_api_parse(body, strlen(body), chat, &d, &r, &e)) fail_msg("%s: %s", body, e.message);
    return r;
}

static void s_bad(const char *body, bool chat, int status, const char *param, const char *needle) {
    mc_api_request_t r = {0};
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    if (mc_api_parse(body, strlen(body), chat, &d, &r, &e) != MC_ERR_ARG) fail_msg("accepted: %s", body);
    if (e.status != status || strcmp(e.param, param) || !strstr(e.message, needle))
        fail_msg("%s: got %d '%s' '%s', wanted %d '%s' '%s'", body, e.status, e.param, e.message, status, param, needle);
    assert_null(r.owned_); // untouched
}

static void test_chat_fields(void **state) {
    (void)state;
    mc_api_request_t r = s_ok("{\"model\":\"x\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\","
                              "\"text\":\"lo\"}]},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                              "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"user\",\"content\":"
                              "\"again\"}],\"max_tokens\":7,\"temperature\":0,\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,"
                              "\"repeat_penalty\":1.1,\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,\"seed\":42,"
                              "\"stop\":[\"END\",\"\",\"x\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                              "\"safe_prompt\":true,\"n\":1,\"user\":\"ignored\",\"logit_bias\":{},\"logprobs\":true,"
                              "\"top_logprobs\":5}",
                              true);
    assert_true(r.chat);
    assert_int_equal(r.n_msgs, 4);
    assert_int_equal(r.msgs[0].role, MC_CHAT_SYSTEM); // developer
    assert_int_equal(r.msgs[1].len, 5);
    assert_memory_equal(r.msgs[1].content, "Hello", 5);
    assert_int_equal(r.msgs[2].role, MC_CHAT_ASSISTANT);
    assert_int_equal(r.msgs[2].len, 0);
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.sampling.temp == 0.0f && r.sampling.top_p == 0.5f && r.sampling.top_k == 3);
    assert_true(fabsf(r.sampling.min_p - 0.1f) < 1e-7f && fabsf(r.sampling.repeat_penalty - 1.1f) < 1e-6f);
    assert_true(r.sampling.frequency_penalty == 0.5f && r.sampling.presence_penalty == -0.5f);
    assert_true(r.seed_given && r.sampling.seed == 42);
    assert_int_equal(r.n_stop, 2); // the empty one is dropped
    assert_string_equal(r.stop[0], "END");
    assert_true(r.stream && r.include_usage && r.safe_prompt);
    assert_true(r.logprobs && r.top_logprobs == 5);
    mc_api_request_free(&r);
    mc_api_request_free(&r); // safe twice
    // Defaults come from the server; a single stop string; no stream.
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"\\n\",\"max_completion_tokens\":3}", true);
    const mc_sampler_params_t d = mc_sampler_params_default();
    assert_true(r.sampling.temp == d.temp && !r.seed_given && !r.stream && r.max_tokens == 3 && !r.logprobs);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "\n");
    mc_api_request_free(&r);
    // Completions: a prompt string, or an array of one.
    r = s_ok("{\"prompt\":\"Once upon\",\"temperature\":1.5}", false);
    assert_false(r.chat);
    assert_int_equal(r.prompt_len, 9);
    mc_api_request_free(&r);
    r = s_ok("{\"prompt\":[\"a\"]}", false);
    assert_string_equal(r.prompt, "a");
    mc_api_request_free(&r);
    // Completions' logprobs: the alternatives per token (0: the chosen only).
    r = s_ok("{\"prompt\":\"a\",\"logprobs\":3}", false);
    assert_true(r.logprobs && r.top_logprobs == 3);
    mc_api_request_free(&r);
    r = s_ok("{\"prompt\":\"a\",\"logprobs\":0}", false);
    assert_true(r.logprobs && r.top_logprobs == 0);
    mc_api_request_free(&r);
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true}", true);
    assert_true(r.logprobs && r.top_logprobs == 0);
    mc_api_request_free(&r);
}

// "speculative": absent (the server's), true, false, {"max_draft": K}.
static void test_speculative(void **state) {
    (void)state;
    static const struct {
        const char *v;
        int32_t want;
    } cases[] = {{"null", 0},
                 {"true", MC_API_SPECULATE_ON},
                 {"false", MC_API_SPECULATE_OFF},
                 {"{\"max_draft\":5}", 5},
                 {"{\"max_draft\":0}", MC_API_SPECULATE_OFF},
                 {"{}", MC_API_SPECULATE_DEFAULT}};
    char body[256];
    mc_api_request_t r = s_ok("{\"prompt\":\"hi\"}", false);
    assert_int_equal(r.speculate, 0);
    mc_api_request_free(&r);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{\"prompt\":\"hi\",\"speculative\":%s}", cases[i].v);
        r = s_ok(body, false);
        assert_int_equal(r.speculate, cases[i].want);
        mc_api_request_free(&r);
    }
    s_bad("{\"prompt\":\"hi\",\"speculative\":3}", false, 400, "speculative", "must be true, false");
    s_bad("{\"prompt\":\"hi\",\"speculative\":{\"max_draft\":65}}", false, 400, "speculative.max_draft", "");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"speculative\":{\"max_draft\":-1}}", true, 400,
          "speculative.max_draft", "");
}

// response_format: json_object, json_schema (strict or not), text; unsupported schemas refused naming the keyword.
static void test_response_format(void **state) {
    (void)state;
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char b[1024];
    snprintf(b, sizeof b, "{%s,\"response_format\":{\"type\":\"json_object\"}}", m);
    mc_api_request_t r = s_ok(b, true);
    assert_true(r.json);
    assert_null(r.schema);
    assert_null(r.compiled);
    mc_api_request_free(&r);
    snprintf(b, sizeof b,
             "{%s,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"person\",\"strict\":true,"
             "\"schema\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"],"
             "\"additionalProperties\":false}}}}",
             m);
    r = s_ok(b, true);
    assert_true(r.json);
    assert_string_equal(r.schema, "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":"
                                  "[\"name\"],\"additionalProperties\":false}");
    assert_int_equal(r.schema_len, strlen(r.schema));
    assert_non_null(r.compiled); // kept for the generation: compiled once
    mc_api_request_free(&r);
    snprintf(b, sizeof b, "{%s,\"response_format\":{\"type\":\"text\"}}", m);
    r = s_ok(b, true);
    assert_false(r.json);
    mc_api_request_free(&r);
    r = s_ok("{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}", false);
    assert_true(r.json);
    mc_api_request_free(&r);
    static const struct {
        const char *rf, *param, *needle;
    } bad[] = {
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"string\",\"pattern\":\"a\"}}}",
         "response_format.json_schema.schema", "keyword 'pattern' is not supported"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"$ref\":\"#/$defs/a\"}}}",
         "response_format.json_schema.schema", "'$ref'"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"array\",\"minItems\":2,"
         "\"maxItems\":1}}}",
         "response_format.json_schema.schema", "no value satisfies"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}", "response_format.json_schema.schema",
         "is required"},
        {"{\"type\":\"json_schema\"}", "response_format.json_schema", "must be an object"},
        {"{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{},\"strict\":\"yes\"}}", "response_format",
         "'strict'"},
        {"{\"type\":\"xml\"}", "response_format", "'xml'"},
        {"\"json\"", "response_format", "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(b, sizeof b, "{%s,\"response_format\":%s}", m, bad[i].rf);
        s_bad(b, true, 400, bad[i].param, bad[i].needle);
    }
}

static void test_bad_requests(void **state) {
    (void)state;
    s_bad("{\"messages\": [", true, 400, "", "not valid JSON");
    s_bad("[1,2]", true, 400, "", "must be a JSON object");
    s_bad("", true, 400, "", "not valid JSON");
    s_bad("{}", true, 400, "messages", "'messages' is required");
    s_bad("{\"messages\":{}}", true, 400, "messages", "must be an array");
    s_bad("{\"messages\":[]}", true, 400, "messages", "must not be empty");
    s_bad("{\"messages\":[1]}", true, 400, "messages[0]", "must be an object");
    s_bad("{\"messages\":[{\"content\":\"x\"}]}", true, 400, "messages[0].role", "must be a string");
    s_bad("{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", true, 400, "messages[0].role",
          "'messages[0].role' is 'robot': the roles are system, user, assistant and tool");
    s_bad("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", true, 400, "messages[0].tool_call_id",
          "must be the id (a string) of the call this tool message answers");
    // A long role is quoted in part, never cut inside a character: the
    // body must stay UTF-8 ('x' x 39, then a 2-byte e-acute over the 40th).
    s_bad("{\"messages\":[{\"role\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\",\"content\":\"x\"}]}", true, 400,
          "messages[0].role", "is 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': the roles");
    s_bad("{\"messages\":[{\"role\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\",\"content\":\"x\"}]}", true, 400,
          "messages[0].role", "is 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': the roles");
    s_bad("{\"messages\":[{\"role\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\",\"content\":\"x\"}]}", true, 400,
          "messages[0].role", "is 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9': the roles");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", true, 400, "messages[0].content",
          "must be a string or an array of text parts");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}", true, 400,
          "messages[0].content", "only hold parts of type \"text\"");
    const char *m = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],";
    char b[512];
    struct {
        const char *field, *param, *needle;
    } cases[] = {
        {"\"temperature\":\"hot\"}", "temperature", "'temperature' must be a number"},
        {"\"temperature\":3}", "temperature", "between 0 and 2, not 3"},
        {"\"top_p\":-0.1}", "top_p", "between 0 and 1"},
        {"\"max_tokens\":0}", "max_tokens", "between 1 and"},
        {"\"max_tokens\":2.5}", "max_tokens", "must be a whole number"},
        {"\"top_k\":-1}", "top_k", "between 0 and"},
        {"\"n\":2}", "n", "'n' is 2: this server gives one choice per request (n > 1 is not supported"},
        {"\"n\":0}", "n", "between 1 and"},
        {"\"logprobs\":1}", "logprobs", "'logprobs' must be true or false"},
        {"\"top_logprobs\":2}", "top_logprobs", "'top_logprobs' needs 'logprobs': true"},
        {"\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs", "between 0 and 20"},
        {"\"stream\":\"yes\"}", "stream", "must be true or false"},
        {"\"stop\":7}", "stop", "must be a string or an array of strings"},
        {"\"stop\":[\"a\",1]}", "stop", "must be a string or an array of strings"},
        {"\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}", "stop", "at most 8 stop strings"},
        {"\"stream_options\":true}", "stream_options", "must be an object"},
        {"\"stream_options\":{\"include_usage\":1}}", "include_usage", "must be true or false"},
        {"\"model\":5}", "model", "'model' must be a string"},
        {"\"seed\":\"7\"}", "seed", "'seed' must be a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(b, sizeof b, "%s%s", m, cases[i].field);
        s_bad(b, true, 400, cases[i].param, cases[i].needle);
    }
    char longstop[400];
    memset(longstop, 'a', 300);
    longstop[300] = 0;
    snprintf(b, sizeof b, "%s\"stop\":\"%s\"}", m, longstop);
    s_bad(b, true, 400, "stop", "at most 256 bytes");
    s_bad("{\"messages\":[]}", false, 400, "prompt", "'prompt' is required");
    s_bad("{\"prompt\":[\"a\",\"b\"]}", false, 400, "prompt", "must be a string");
    s_bad("{\"prompt\":\"a\",\"logprobs\":true}", false, 400, "logprobs", "'logprobs' must be a number");
    s_bad("{\"prompt\":\"a\",\"logprobs\":6.5}", false, 400, "logprobs", "whole number");
    // A message without its text: only an assistant's call of tools may be.
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":null}]}", true, 400, "messages[0].content",
          "'messages[0].content' is null: a message needs its text");
    s_bad("{\"messages\":[{\"role\":\"user\"}]}", true, 400, "messages[0].content", "is missing");
    s_bad("{\"messages\":[{\"role\":\"system\",\"content\":null},{\"role\":\"user\",\"content\":\"x\"}]}", true,
          400, "messages[0].content", "is null");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":null}]}",
          true, 400, "messages[1].content", "null only for an assistant message with tool_calls");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":null,"
          "\"tool_calls\":[]}]}",
          true, 400, "messages[1].content", "with tool_calls");
    // JSON text is UTF-8 (RFC 8259): a stray byte, an overlong form, a
    // surrogate, a cut sequence are refused, never passed to the tokenizer.
    s_bad("{\"prompt\":\"caf\xe9\"}", false, 400, "", "not valid UTF-8");
    s_bad("{\"prompt\":\"\xc0\xaf\"}", false, 400, "", "not valid UTF-8");
    s_bad("{\"prompt\":\"\xed\xa0\x80\"}", false, 400, "", "not valid UTF-8");
    s_bad("{\"prompt\":\"\xf4\x90\x80\x80\"}", false, 400, "", "not valid UTF-8");
    s_bad("{\"prompt\":\"\xe2\x82\"}", false, 400, "", "not valid UTF-8");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", true, 400, "", "not valid UTF-8");
    mc_api_request_t u8 = s_ok("{\"prompt\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\xa6\x8a\"}", false);
    assert_int_equal(u8.prompt_len, 14);
    mc_api_request_free(&u8);
    // Text after the object is not JSON any more (a strict reader, as
    // OpenAI's or Python's, refuses it); whitespace is.
    s_bad("{\"prompt\":\"ok\"} {\"prompt\":\"two\"}", false, 400, "", "not valid JSON");
    s_bad("{\"prompt\":\"ok\"}}", false, 400, "", "not valid JSON");
    mc_api_request_t ws = s_ok("{\"prompt\":\"ok\"}\r\n \t", false);
    mc_api_request_free(&ws);
    // A NUL in a string would end it early (cJSON's strings are C strings):
    // the role "user\0x" would pass as "user", a content lose its tail.
    s_bad("{\"messages\":[{\"role\":\"user\\u0000x\",\"content\":\"hi\"}]}", true, 400, "", "NUL character");
    s_bad("{\"prompt\":\"before\\u0000after\"}", false, 400, "", "NUL character");
    // A raw NUL byte is not JSON either: cJSON would end the string there
    // and the text after it would be lost without a word.
    {
        static const char raw[] = "{\"prompt\":\"before\0after\"}";
        mc_api_request_t r0 = {0};
        mc_api_error_t e0;
        const mc_sampler_params_t d0 = mc_sampler_params_default();
        assert_int_equal(mc_api_parse(raw, sizeof raw - 1, false, &d0, &r0, &e0), MC_ERR_ARG);
        assert_int_equal(e0.status, 400);
        assert_non_null(strstr(e0.message, "NUL byte"));
        assert_null(r0.owned_);
    }
    // An escaped backslash before u0000 is text, not a NUL.
    mc_api_request_t lit = s_ok("{\"prompt\":\"a\\\\u0000b\\\\\"}", false);
    assert_string_equal(lit.prompt, "a\\u0000b\\");
    mc_api_request_free(&lit);
    // Not NUL-terminated input is read only within its length.
    const char body[] = "{\"prompt\":\"ok\"}XXXX";
    mc_api_request_t r;
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    assert_int_equal(mc_api_parse(body, strlen(body) - 4, false, &d, &r, &e), MC_OK);
    mc_api_request_free(&r);
}

static cJSON *s_parse(char *txt) {
    assert_non_null(txt);
    cJSON *j = cJSON_Parse(txt);
    assert_non_null(j);
    free(txt);
    return j;
}

static const char *s_str(const cJSON *o, const char *path) {
    // a.b.c over objects, [n] for array items
    const cJSON *cur = o;
    char key[64];
    for (const char *p = path; *p && cur;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        cur = key[0] == '[' ? cJSON_GetArrayItem(cur, atoi(key + 1)) : cJSON_GetObjectItemCaseSensitive(cur, key);
        p += n + (p[n] == '.');
    }
    if (!cur) fail_msg("no %s", path);
    return cJSON_IsString(cur) ? cur->valuestring : cJSON_IsNull(cur) ? "null" : cJSON_IsNumber(cur) ? "number" : "?";
}

static mc_api_result_t s_res(const char *text, size_t len, mc_finish_t why, uint32_t p, uint32_t c) {
    return (mc_api_result_t){.text = text, .len = len, .why = why, .prompt_tokens = p, .completion_tokens = c};
}

static void test_answers(void **state) {
    (void)state;
    const mc_api_answer_t chat = {true, "chatcmpl-1", 1700000000, "tiny", false, false, NULL},
                          comp = {false, "cmpl-2", 1700000001, "tiny", false, false, NULL};
    mc_api_result_t res = s_res("Hi \"there\"\n", 11, MC_FINISH_STOP, 5, 3);
    cJSON *j = s_parse(mc_api_completion_json(&chat, &res));
    assert_string_equal(s_str(j, "object"), "chat.completion");
    assert_string_equal(s_str(j, "id"), "chatcmpl-1");
    assert_string_equal(s_str(j, "model"), "tiny");
    assert_string_equal(s_str(j, "choices.[0].message.role"), "assistant");
    assert_string_equal(s_str(j, "choices.[0].message.content"), "Hi \"there\"\n");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "stop");
    assert_string_equal(s_str(j, "choices.[0].logprobs"), "null");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint, 8);
    cJSON_Delete(j);
    res = s_res("abc", 2, MC_FINISH_LENGTH, 1, 2);
    j = s_parse(mc_api_completion_json(&comp, &res));
    assert_string_equal(s_str(j, "object"), "text_completion");
    assert_string_equal(s_str(j, "choices.[0].text"), "ab");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "length");
    cJSON_Delete(j);
    // Chunks: the role first, then text, then the finish with an empty delta.
    res = s_res("", 0, MC_FINISH_NONE, 0, 0);
    j = s_parse(mc_api_chunk_json(&chat, true, &res));
    assert_string_equal(s_str(j, "object"), "chat.completion.chunk");
    assert_string_equal(s_str(j, "choices.[0].delta.role"), "assistant");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "null");
    assert_null(cJSON_GetObjectItem(j, "usage")); // not asked for
    cJSON_Delete(j);
    res = s_res("a\0b", 3, MC_FINISH_NONE, 0, 0);
    j = s_parse(mc_api_chunk_json(&chat, false, &res));
    assert_string_equal(s_str(j, "choices.[0].delta.content"), "a\xEF\xBF\xBD" "b"); // a NUL is not an end
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta"),
                                    "role"));
    cJSON_Delete(j);
    res = s_res("", 0, MC_FINISH_STOP, 0, 0);
    j = s_parse(mc_api_chunk_json(&chat, false, &res));
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "stop");
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta"),
                                    "content"));
    cJSON_Delete(j);
    res = s_res("xy", 2, MC_FINISH_NONE, 0, 0);
    j = s_parse(mc_api_chunk_json(&comp, false, &res));
    assert_string_equal(s_str(j, "object"), "text_completion");
    assert_string_equal(s_str(j, "choices.[0].text"), "xy");
    cJSON_Delete(j);
    // A stream that asked for usage: every chunk says "usage": null (as
    // OpenAI's do), the last one has the counts and no choices.
    const mc_api_answer_t chat_u = {true, "chatcmpl-3", 1700000000, "tiny", true, false, NULL};
    res = s_res("xy", 2, MC_FINISH_NONE, 0, 0);
    j = s_parse(mc_api_chunk_json(&chat_u, false, &res));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "usage")));
    cJSON_Delete(j);
    j = s_parse(mc_api_usage_chunk_json(&chat_u, 4, 6));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, 6);
    cJSON_Delete(j);
    // Errors: OpenAI's object, null param and code when there are none.
    mc_api_error_t e;
    assert_int_equal(mc_api_error(&e, 404, "not_found_error", NULL, NULL, "no %s", "page"), MC_ERR_ARG);
    j = s_parse(mc_api_error_json(&e));
    assert_string_equal(s_str(j, "error.message"), "no page");
    assert_string_equal(s_str(j, "error.type"), "not_found_error");
    assert_string_equal(s_str(j, "error.param"), "null");
    assert_string_equal(s_str(j, "error.code"), "null");
    cJSON_Delete(j);
    mc_api_error(&e, 400, "invalid_request_error", "messages", "context_length_exceeded", "too long");
    j = s_parse(mc_api_error_json(&e));
    assert_string_equal(s_str(j, "error.param"), "messages");
    assert_string_equal(s_str(j, "error.code"), "context_length_exceeded");
    cJSON_Delete(j);
}

// A small SentencePiece vocabulary: " b" (U+2581 b), "a", half of "é"
// (the byte token <0xC3>), and </s>.
static mc_tokenizer_t *s_tokenizer(void) {
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "b", "a", "<0xC3>"};
    static const int32_t types[] = {MC_TOKEN_UNKNOWN, MC_TOKEN_CONTROL, MC_TOKEN_CONTROL,
                                    MC_TOKEN_NORMAL,  MC_TOKEN_NORMAL,  MC_TOKEN_BYTE};
    static const float scores[] = {0, 0, 0, -1, -1, 0};
    mc_gguf_str_t p[6];
    for (int i = 0; i < 6; i++) p[i] = (mc_gguf_str_t){pieces[i], strlen(pieces[i])};
    mc_tokenizer_params_t tp = mc_tokenizer_params_default();
    tp.n_vocab = 6, tp.pieces = p, tp.scores = scores, tp.types = types, tp.bos_id = 1, tp.eos_id = 2, tp.unk_id = 0;
    char err[MC_ERR_LEN];
    mc_tokenizer_t *t = mc_tokenizer_new(&tp, err);
    if (!t) fail_msg("%s", err);
    return t;
}

static double s_num(const cJSON *o, const char *path) {
    const cJSON *cur = o;
    char key[64];
    for (const char *p = path; *p && cur;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        cur = key[0] == '[' ? cJSON_GetArrayItem(cur, atoi(key + 1)) : cJSON_GetObjectItemCaseSensitive(cur, key);
        p += n + (p[n] == '.');
    }
    if (!cJSON_IsNumber(cur)) fail_msg("no number at %s", path);
    return cur->valuedouble;
}

// logprobs: chat's {content: [{token, logprob, bytes, top_logprobs}],
// refusal}, the legacy completions object, a token that is half a
// character (its bytes exact, its text U+FFFD), a probability of 0 as -9999.
// Tools, tool messages, assistant calls and reasoning, enable_thinking;
// the answers with calls and reasoning, whole and in chunks.
static void test_tools(void **state) {
    (void)state;
    mc_api_request_t r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\","
                              "\"content\":null,\"reasoning_content\":\"hm\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                              "\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\","
                              "\\\"n\\\":[1,2]}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"20\"}],"
                              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\"}}],\"tool_choice\":"
                              "\"required\",\"chat_template_kwargs\":{\"enable_thinking\":false}}",
                              true);
    assert_int_equal(r.n_msgs, 3);
    assert_int_equal(r.msgs[1].n_calls, 1);
    assert_string_equal(r.msgs[1].calls[0].id, "c1");
    assert_string_equal(r.msgs[1].calls[0].name, "get");
    assert_string_equal(r.msgs[1].calls[0].arguments, "{\"city\": \"Paris\", \"n\": [1, 2]}"); // as templates print
    assert_int_equal(r.msgs[1].reasoning_len, 2);
    assert_int_equal(r.msgs[2].role, MC_CHAT_TOOL);
    assert_string_equal(r.msgs[2].tool_call_id, "c1");
    assert_int_equal(r.tools.n_tools, 1);
    assert_int_equal(r.tools.choice, MC_TOOL_CHOICE_REQUIRED);
    assert_false(r.thinking);
    mc_api_request_free(&r);
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"enable_thinking\":false}", true);
    assert_false(r.thinking);
    mc_api_request_free(&r);
    // reasoning_effort (gpt-oss's "Reasoning:"), at the top or in chat_template_kwargs; a "developer" message.
    r = s_ok("{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"x\"}],"
             "\"reasoning_effort\":\"high\"}",
             true);
    assert_string_equal(r.effort, "high");
    assert_int_equal(r.msgs[0].role, MC_CHAT_SYSTEM);
    mc_api_request_free(&r);
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"reasoning_effort\":\"low\"}}",
             true);
    assert_string_equal(r.effort, "low");
    mc_api_request_free(&r);
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"max\"}", true, 400,
          "reasoning_effort", "\"low\", \"medium\" or \"high\"");
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true);
    assert_true(r.thinking);
    assert_string_equal(r.effort, "");
    assert_false(mc_toolcall_active(&r.tools));
    mc_api_request_free(&r);
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", true, 400,
          "tools[0]", "only function tools");
    s_bad("{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"function\":{}}]}]}", true, 400,
          "messages[0].tool_calls[0]", "must be {\"id\"");
    s_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"enable_thinking\":1}}",
          true, 400, "chat_template_kwargs.enable_thinking", "true or false");
    // A whole answer with a call: content null, tool_calls, finish "tool_calls".
    const mc_api_answer_t chat = {true, "chatcmpl-1", 1700000000, "tiny", false, false, NULL};
    const mc_toolcall_t call = {"call_abc", "get", "{\"city\":\"Paris\"}"};
    mc_api_result_t res = {.text = "", .why = MC_FINISH_STOP, .reasoning = "hm", .reasoning_len = 2, .calls = &call,
                           .n_calls = 1};
    cJSON *j = s_parse(mc_api_completion_json(&chat, &res));
    assert_string_equal(s_str(j, "choices.[0].message.content"), "null");
    assert_string_equal(s_str(j, "choices.[0].message.reasoning_content"), "hm");
    assert_string_equal(s_str(j, "choices.[0].message.tool_calls.[0].id"), "call_abc");
    assert_string_equal(s_str(j, "choices.[0].message.tool_calls.[0].type"), "function");
    assert_string_equal(s_str(j, "choices.[0].message.tool_calls.[0].function.name"), "get");
    assert_string_equal(s_str(j, "choices.[0].message.tool_calls.[0].function.arguments"), "{\"city\":\"Paris\"}");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "tool_calls");
    cJSON_Delete(j);
    // Streamed: the head (index, id, type, name, empty arguments), then pieces of the arguments.
    j = s_parse(mc_api_call_chunk_json(&chat, 1, &call, true, NULL, 0));
    assert_string_equal(s_str(j, "choices.[0].delta.tool_calls.[0].id"), "call_abc");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(
                                                                                     cJSON_GetObjectItem(j, "choices"), 0),
                                                                                 "delta"),
                                                             "tool_calls"),
                                                         0),
                                         "index")
                         ->valueint,
                     1);
    assert_string_equal(s_str(j, "choices.[0].delta.tool_calls.[0].type"), "function");
    assert_string_equal(s_str(j, "choices.[0].delta.tool_calls.[0].function.name"), "get");
    assert_string_equal(s_str(j, "choices.[0].delta.tool_calls.[0].function.arguments"), "");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "null");
    cJSON_Delete(j);
    j = s_parse(mc_api_call_chunk_json(&chat, 1, &call, false, call.arguments, 6));
    assert_string_equal(s_str(j, "choices.[0].delta.tool_calls.[0].function.arguments"), "{\"city");
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(
                                                                               cJSON_GetObjectItem(j, "choices"), 0),
                                                                           "delta"),
                                                       "tool_calls"),
                                                   0),
                                    "id"));
    cJSON_Delete(j);
    j = s_parse(mc_api_reasoning_chunk_json(&chat, "hm", 2));
    assert_string_equal(s_str(j, "choices.[0].delta.reasoning_content"), "hm");
    cJSON_Delete(j);
    res = (mc_api_result_t){.text = "", .why = MC_FINISH_STOP, .tool_calls = true};
    j = s_parse(mc_api_chunk_json(&chat, false, &res));
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "tool_calls");
    cJSON_Delete(j);
}

static void test_logprob_answers(void **state) {
    (void)state;
    mc_tokenizer_t *tok = s_tokenizer();
    const mc_api_answer_t chat = {true, "chatcmpl-1", 1700000000, "tiny", false, true, tok},
                          comp = {false, "cmpl-1", 1700000000, "tiny", false, true, tok};
    mc_logprob_t lps[2] = {0};
    lps[0].chosen = (mc_logprob_entry_t){3, -0.25};
    lps[0].n_top = 2;
    lps[0].top[0] = (mc_logprob_entry_t){3, -0.25};
    lps[0].top[1] = (mc_logprob_entry_t){4, -1.5};
    lps[1].chosen = (mc_logprob_entry_t){5, -INFINITY};
    lps[1].n_top = 1;
    lps[1].top[0] = (mc_logprob_entry_t){4, -0.01};
    mc_api_result_t res = {.text = " b\xc3",
                           .len = 3,
                           .why = MC_FINISH_STOP,
                           .prompt_tokens = 4,
                           .completion_tokens = 2,
                           .lps = lps,
                           .n_lps = 2};
    cJSON *j = s_parse(mc_api_completion_json(&chat, &res));
    assert_string_equal(s_str(j, "choices.[0].logprobs.content.[0].token"), " b");
    assert_true(s_num(j, "choices.[0].logprobs.content.[0].logprob") == -0.25);
    assert_true(s_num(j, "choices.[0].logprobs.content.[0].bytes.[0]") == ' ');
    assert_true(s_num(j, "choices.[0].logprobs.content.[0].bytes.[1]") == 'b');
    assert_string_equal(s_str(j, "choices.[0].logprobs.content.[0].top_logprobs.[1].token"), "a");
    assert_true(s_num(j, "choices.[0].logprobs.content.[0].top_logprobs.[1].logprob") == -1.5);
    assert_string_equal(s_str(j, "choices.[0].logprobs.content.[1].token"), "\xEF\xBF\xBD");
    assert_true(s_num(j, "choices.[0].logprobs.content.[1].bytes.[0]") == 0xC3);
    assert_true(s_num(j, "choices.[0].logprobs.content.[1].logprob") == -9999.0);
    assert_string_equal(s_str(j, "choices.[0].logprobs.refusal"), "null");
    cJSON_Delete(j);
    // A chunk carries its own tokens' entries.
    mc_api_result_t piece = {.text = " b", .len = 2, .why = MC_FINISH_NONE, .lps = lps, .n_lps = 1};
    j = s_parse(mc_api_chunk_json(&chat, false, &piece));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(
                                                                                 cJSON_GetObjectItem(j, "choices"), 0),
                                                                             "logprobs"),
                                                            "content")),
                     1);
    cJSON_Delete(j);
    // Completions: tokens, token_logprobs, top_logprobs (token -> logprob), text_offset.
    j = s_parse(mc_api_completion_json(&comp, &res));
    assert_string_equal(s_str(j, "choices.[0].logprobs.tokens.[0]"), " b");
    assert_true(s_num(j, "choices.[0].logprobs.token_logprobs.[0]") == -0.25);
    assert_true(s_num(j, "choices.[0].logprobs.top_logprobs.[0].a") == -1.5);
    assert_true(s_num(j, "choices.[0].logprobs.text_offset.[0]") == 0);
    assert_true(s_num(j, "choices.[0].logprobs.text_offset.[1]") == 2);
    cJSON_Delete(j);
    // Token strings: whole characters kept, the rest U+FFFD, NUL too.
    cJSON *t = mc_api_token_string("a\xc3\xa9\xe2\x82", 5);
    assert_string_equal(t->valuestring, "a\xc3\xa9\xEF\xBF\xBD\xEF\xBF\xBD");
    cJSON_Delete(t);
    t = mc_api_token_string("x\0y", 3);
    assert_string_equal(t->valuestring, "x\xEF\xBF\xBDy");
    cJSON_Delete(t);
    mc_tokenizer_destroy(&tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_fields),
        cmocka_unit_test(test_speculative),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_logprob_answers),
        cmocka_unit_test(test_tools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
