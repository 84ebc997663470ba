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
                              "\"text\":\"lo\"}]},{\"role\":\"assistant\",\"content\":null},{\"role\":\"user\",\"content\":"
                              "\"again\"}],\"max_tokens\":7,\"temperature\":0,\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,"
                              "\"repeat_penalty\":1.1,\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,\"seed\":42,"
                              "\"stop\":[\"END\",\"\",\"x\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                              "\"safe_prompt\":true,\"n\":1,\"user\":\"ignored\",\"logit_bias\":{}}",
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
    mc_api_request_free(&r);
    mc_api_request_free(&r); // safe twice
    // Defaults come from the server; a single stop string; no stream.
    r = s_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"\\n\",\"max_completion_tokens\":3}", true);
    const mc_sampler_params_t d = mc_sampler_params_default();
    assert_true(r.sampling.temp == d.temp && !r.seed_given && !r.stream && r.max_tokens == 3);
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
    s_bad("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", true, 400, "messages[0].role",
          "'messages[0].role' is 'tool': the roles are system, user and assistant");
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
        {"\"n\":2}", "n", "between 1 and 1"},
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

static void test_answers(void **state) {
    (void)state;
    const mc_api_answer_t chat = {true, "chatcmpl-1", 1700000000, "tiny"}, comp = {false, "cmpl-2", 1700000001, "tiny"};
    cJSON *j = s_parse(mc_api_completion_json(&chat, "Hi \"there\"\n", 11, MC_FINISH_STOP, 5, 3));
    assert_string_equal(s_str(j, "object"), "chat.completion");
    assert_string_equal(s_str(j, "id"), "chatcmpl-1");
    assert_string_equal(s_str(j, "model"), "tiny");
    assert_string_equal(s_str(j, "choices.[0].message.role"), "assistant");
    assert_string_equal(s_str(j, "choices.[0].message.content"), "Hi \"there\"\n");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "stop");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint, 8);
    cJSON_Delete(j);
    j = s_parse(mc_api_completion_json(&comp, "abc", 2, MC_FINISH_LENGTH, 1, 2));
    assert_string_equal(s_str(j, "object"), "text_completion");
    assert_string_equal(s_str(j, "choices.[0].text"), "ab");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "length");
    cJSON_Delete(j);
    // Chunks: the role first, then text, then the finish with an empty delta.
    j = s_parse(mc_api_chunk_json(&chat, true, "", 0, MC_FINISH_NONE));
    assert_string_equal(s_str(j, "object"), "chat.completion.chunk");
    assert_string_equal(s_str(j, "choices.[0].delta.role"), "assistant");
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "null");
    cJSON_Delete(j);
    j = s_parse(mc_api_chunk_json(&chat, false, "a\0b", 3, MC_FINISH_NONE));
    assert_string_equal(s_str(j, "choices.[0].delta.content"), "a\xEF\xBF\xBD" "b"); // a NUL is not an end
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta"),
                                    "role"));
    cJSON_Delete(j);
    j = s_parse(mc_api_chunk_json(&chat, false, "", 0, MC_FINISH_CANCELLED));
    assert_string_equal(s_str(j, "choices.[0].finish_reason"), "stop");
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta"),
                                    "content"));
    cJSON_Delete(j);
    j = s_parse(mc_api_chunk_json(&comp, false, "xy", 2, MC_FINISH_NONE));
    assert_string_equal(s_str(j, "object"), "text_completion");
    assert_string_equal(s_str(j, "choices.[0].text"), "xy");
    cJSON_Delete(j);
    j = s_parse(mc_api_usage_chunk_json(&chat, 4, 6));
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_fields),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
