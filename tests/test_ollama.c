/*
 * test_ollama: Ollama's /api/chat and /api/generate bodies (stream by
 * default, options, raw prompts, a system prompt, the "load" requests,
 * tools with assistant tool_calls and tool messages) and their refusals;
 * the answer lines (with calls), errors, and the model descriptions of
 * /api/tags and /api/show, read back with cJSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ollama.h"

static mc_api_request_t s_ok(const char *body, bool chat, bool *load) {
    mc_api_request_t r;
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    bool l = true;
    if (mc_ollama_parse(body, strlen(body), chat, &d, &r, load ? load : &l, &e)) fail_msg("%s: %s", body, e.message);
    if (!load) assert_false(l);
    return r;
}

static void s_bad(const char *body, bool chat, const char *param, const char *needle) {
    mc_api_request_t r = {0};
    mc_api_error_t e;
    bool load = false;
    const mc_sampler_params_t d = mc_sampler_params_default();
    if (mc_ollama_parse(body, strlen(body), chat, &d, &r, &load, &e) != MC_ERR_ARG) fail_msg("accepted: %s", body);
    if (e.status != 400 || strcmp(e.param, param) || !strstr(e.message, needle))
        fail_msg("%s: got %d '%s' '%s', wanted 400 '%s' '%s'", body, e.status, e.param, e.message, param, needle);
    assert_null(r.owned_);
}

static void test_requests(void **state) {
    (void)state;
    const mc_sampler_params_t d = mc_sampler_params_default();
    // What ollama.chat({model, messages}) sends: streamed unless told not to.
    mc_api_request_t r = s_ok("{\"model\":\"tiny:latest\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                              "{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello\"},"
                              "{\"role\":\"user\"}]}",
                              true, NULL);
    assert_true(r.chat && r.stream);
    assert_int_equal(r.n_msgs, 4);
    assert_int_equal(r.msgs[0].role, MC_CHAT_SYSTEM);
    assert_int_equal(r.msgs[2].role, MC_CHAT_ASSISTANT);
    assert_int_equal(r.msgs[3].len, 0); // Ollama reads a missing content as empty
    assert_true(r.sampling.temp == d.temp && r.max_tokens == 0);
    mc_api_request_free(&r);
    // Options.
    r = s_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":false,\"keep_alive\":\"5m\","
             "\"options\":{\"temperature\":0.2,\"top_p\":0.5,\"top_k\":7,\"min_p\":0.1,\"seed\":42,\"num_predict\":12,"
             "\"stop\":[\"\\n\\n\",\"User:\"],\"repeat_penalty\":1.2,\"repeat_last_n\":32,\"frequency_penalty\":0.5,"
             "\"presence_penalty\":0.25,\"num_ctx\":8192,\"num_gpu\":1,\"num_thread\":4}}",
             true, NULL);
    assert_false(r.stream);
    assert_true(r.sampling.temp == 0.2f && r.sampling.top_p == 0.5f && r.sampling.top_k == 7);
    assert_true(r.seed_given && r.sampling.seed == 42 && r.max_tokens == 12 && r.sampling.repeat_last_n == 32);
    assert_true(r.sampling.repeat_penalty == 1.2f && r.sampling.presence_penalty == 0.25f);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "User:");
    mc_api_request_free(&r);
    // num_predict -1 and -2: until the context is full; repeat_last_n -1: all of it.
    r = s_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"options\":{\"num_predict\":-1,"
             "\"repeat_last_n\":-1}}",
             true, NULL);
    assert_true(r.max_tokens == 0 && r.sampling.repeat_last_n >= 1 << 20);
    mc_api_request_free(&r);
    // Generate: a prompt as one user turn, with its system prompt.
    r = s_ok("{\"model\":\"m\",\"prompt\":\"Why is the sky blue?\",\"system\":\"Answer like a poet.\"}", false, NULL);
    assert_true(r.chat && r.stream);
    assert_int_equal(r.n_msgs, 2);
    assert_int_equal(r.msgs[0].role, MC_CHAT_SYSTEM);
    assert_int_equal(r.msgs[1].role, MC_CHAT_USER);
    assert_memory_equal(r.msgs[1].content, "Why is the sky blue?", 20);
    mc_api_request_free(&r);
    // raw: the prompt as it is.
    r = s_ok("{\"model\":\"m\",\"prompt\":\"Once upon\",\"raw\":true,\"stream\":false}", false, NULL);
    assert_false(r.chat || r.stream);
    assert_int_equal(r.prompt_len, 9);
    mc_api_request_free(&r);
    // Nothing to answer: the model is only loaded.
    bool load = false;
    r = s_ok("{\"model\":\"m\"}", false, &load);
    assert_true(load);
    mc_api_request_free(&r);
    load = false;
    r = s_ok("{\"model\":\"m\",\"messages\":[]}", true, &load);
    assert_true(load);
    mc_api_request_free(&r);
}

// format: "json" (any object) or a JSON Schema.
static void test_format(void **state) {
    (void)state;
    mc_api_request_t r = s_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"format\":\"json\"}",
                              true, NULL);
    assert_true(r.json);
    assert_null(r.schema);
    mc_api_request_free(&r);
    r = s_ok("{\"model\":\"m\",\"prompt\":\"x\",\"format\":{\"type\":\"object\",\"properties\":{\"age\":"
             "{\"type\":\"integer\"}},\"required\":[\"age\"]}}",
             false, NULL);
    assert_true(r.json);
    assert_non_null(strstr(r.schema, "\"age\""));
    mc_api_request_free(&r);
}

// Tools as Ollama takes them (OpenAI's function tools), an assistant's
// tool_calls with object arguments, a tool message.
static void test_tools(void **state) {
    (void)state;
    mc_api_request_t r = s_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\","
        "\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get\",\"arguments\":{\"city\":\"Oslo\",\"n\":2}}},"
        "{\"function\":{\"index\":1,\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},{\"role\":"
        "\"tool\",\"content\":\"rain\",\"tool_name\":\"get\"}],\"tools\":[{\"type\":\"function\",\"function\":{"
        "\"name\":\"get\",\"description\":\"Weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
        "{\"type\":\"string\"}}}}}]}",
        true, NULL);
    assert_int_equal(r.n_msgs, 3);
    assert_int_equal(r.msgs[1].role, MC_CHAT_ASSISTANT);
    assert_int_equal(r.msgs[1].n_calls, 2);
    assert_string_equal(r.msgs[1].calls[0].name, "get");
    assert_string_equal(r.msgs[1].calls[0].arguments, "{\"city\": \"Oslo\", \"n\": 2}");
    assert_string_equal(r.msgs[1].calls[1].arguments, "{\"city\": \"Rome\"}");
    assert_int_equal(r.msgs[2].role, MC_CHAT_TOOL);
    assert_int_equal(r.msgs[2].len, 4);
    assert_string_equal(r.msgs[2].tool_call_id, ""); // none named
    assert_int_equal(r.tools.n_tools, 1);
    assert_true(mc_toolcall_active(&r.tools));
    assert_string_equal(r.tools.tools[0].name, "get");
    mc_api_request_free(&r);
}

static void test_refusals(void **state) {
    (void)state;
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char b[512];
    s_bad("{\"messages\":[]}", true, "model", "'model' is required");
    s_bad("{\"model\":\"m\",\"messages\":{}}", true, "messages", "must be an array");
    s_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", true, "messages[0].role",
          "system, user, assistant and tool");
    s_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":{}}}]}]}",
          true, "messages[0].tool_calls[0]", "{\"function\": {\"name\"");
    s_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", true,
          "messages[0].tool_calls", "in an assistant message");
    s_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", true, "messages[0].content",
          "must be a string");
    s_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"images\":[\"aGk=\"]}]}", true, "images",
          "reads text only");
    struct {
        const char *field, *param, *needle;
    } cases[] = {
        {"\"tools\":[{\"type\":\"function\"}]", "tools[0]", "only function tools"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]", "tools[0].function.name", "1 to 64"},
        {"\"format\":{\"type\":\"string\",\"format\":\"date\"}", "format", "keyword 'format' is not supported"},
        {"\"format\":5", "format", "JSON Schema object"},
        {"\"think\":true", "think", "does not think"},
        {"\"stream\":\"yes\"", "stream", "true or false"},
        {"\"options\":[]", "options", "must be an object"},
        {"\"options\":{\"temperature\":\"hot\"}", "options.temperature", "'options.temperature' must be a number"},
        {"\"options\":{\"num_predict\":0}", "options.num_predict", "positive, or -1"},
        {"\"options\":{\"num_predict\":-3}", "options.num_predict", "between -2 and"},
        {"\"options\":{\"stop\":5}", "options.stop", "a string or an array"},
        {"\"options\":{\"top_k\":1.5}", "options.top_k", "whole number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,%s}", m, cases[i].field);
        s_bad(b, true, cases[i].param, cases[i].needle);
    }
    s_bad("{\"model\":\"m\",\"prompt\":\"x\",\"suffix\":\"y\"}", false, "suffix", "fill in the middle");
    s_bad("{\"model\":\"m\",\"prompt\":\"x\",\"context\":[1,2]}", false, "context", "/api/chat");
    s_bad("{\"model\":\"m\",\"prompt\":5}", false, "prompt", "must be a string");
    s_bad("{\"model\":\"m\",\"prompt\":\"x\",\"raw\":\"no\"}", false, "raw", "true or false");
    s_bad("{\"model\":\"m\",\"prompt\":\"a\\u0000b\"}", false, "", "NUL character");
    // /api/show's body.
    char name[64];
    mc_api_error_t e;
    assert_int_equal(mc_ollama_show_parse("{\"model\":\"tiny:latest\"}", 23, name, sizeof name, &e), MC_OK);
    assert_string_equal(name, "tiny:latest");
    assert_int_equal(mc_ollama_show_parse("{\"name\":\"old\"}", 14, name, sizeof name, &e), MC_OK);
    assert_string_equal(name, "old");
    assert_int_equal(mc_ollama_show_parse("{}", 2, name, sizeof name, &e), MC_ERR_ARG);
    assert_non_null(strstr(e.message, "'model' is required"));
}

static cJSON *s_parse(char *txt) {
    assert_non_null(txt);
    cJSON *j = cJSON_Parse(txt);
    if (!j) fail_msg("not JSON: %s", txt);
    free(txt);
    return j;
}

static const cJSON *s_get(const cJSON *o, const char *a, const char *b) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) v = cJSON_GetObjectItemCaseSensitive(v, b);
    if (!v) fail_msg("no %s.%s", a, b ? b : "");
    return v;
}

static void test_answers(void **state) {
    (void)state;
    const mc_ollama_answer_t chat = {true, "tiny"}, gen = {false, "tiny"};
    cJSON *j = s_parse(mc_ollama_chunk_json(&chat, "Hel", 3));
    assert_string_equal(s_get(j, "model", NULL)->valuestring, "tiny");
    assert_string_equal(s_get(j, "message", "role")->valuestring, "assistant");
    assert_string_equal(s_get(j, "message", "content")->valuestring, "Hel");
    assert_true(cJSON_IsFalse(s_get(j, "done", NULL)));
    // created_at: RFC 3339 in UTC with nanoseconds, as Ollama writes it.
    const char *at = s_get(j, "created_at", NULL)->valuestring;
    assert_int_equal(strlen(at), 30);
    assert_true(at[4] == '-' && at[10] == 'T' && at[19] == '.' && at[29] == 'Z');
    cJSON_Delete(j);
    const mc_api_result_t res = {.text = "", .why = MC_FINISH_LENGTH, .prompt_tokens = 9, .completion_tokens = 5};
    const mc_gen_usage_t u = {9, 5, 0.25, 1.5};
    j = s_parse(mc_ollama_final_json(&gen, &res, &u, 2.0));
    assert_string_equal(s_get(j, "response", NULL)->valuestring, "");
    assert_true(cJSON_IsTrue(s_get(j, "done", NULL)));
    assert_string_equal(s_get(j, "done_reason", NULL)->valuestring, "length");
    assert_true(s_get(j, "prompt_eval_count", NULL)->valuedouble == 9);
    assert_true(s_get(j, "eval_count", NULL)->valuedouble == 5);
    assert_true(s_get(j, "total_duration", NULL)->valuedouble == 2e9);
    assert_true(s_get(j, "prompt_eval_duration", NULL)->valuedouble == 2.5e8);
    assert_true(s_get(j, "eval_duration", NULL)->valuedouble == 1.5e9);
    cJSON_Delete(j);
    // An answer with calls: message.tool_calls, arguments as objects.
    const mc_toolcall_t calls[2] = {{"call_1", "get", "{\"city\":\"Oslo\"}"}, {"call_2", "put", "{}"}};
    const mc_api_result_t called = {.text = "Sure.", .len = 5, .why = MC_FINISH_STOP, .calls = calls, .n_calls = 2};
    j = s_parse(mc_ollama_final_json(&chat, &called, &u, 1.0));
    assert_string_equal(s_get(j, "message", "content")->valuestring, "Sure.");
    const cJSON *tc = s_get(j, "message", "tool_calls");
    assert_int_equal(cJSON_GetArraySize(tc), 2);
    assert_string_equal(s_get(cJSON_GetArrayItem(tc, 0), "function", "name")->valuestring, "get");
    assert_string_equal(cJSON_GetObjectItem(s_get(cJSON_GetArrayItem(tc, 0), "function", "arguments"), "city")->valuestring,
                        "Oslo");
    assert_true(s_get(cJSON_GetArrayItem(tc, 1), "function", "index")->valuedouble == 1);
    assert_true(cJSON_IsObject(s_get(cJSON_GetArrayItem(tc, 1), "function", "arguments")));
    assert_string_equal(s_get(j, "done_reason", NULL)->valuestring, "stop");
    cJSON_Delete(j);
    j = s_parse(mc_ollama_calls_json(&chat, calls, 1)); // a stream's line of calls
    assert_true(cJSON_IsFalse(s_get(j, "done", NULL)));
    assert_string_equal(s_get(j, "message", "content")->valuestring, "");
    assert_int_equal(cJSON_GetArraySize(s_get(j, "message", "tool_calls")), 1);
    cJSON_Delete(j);
    const mc_api_result_t load = {.text = "", .why = MC_FINISH_NONE};
    j = s_parse(mc_ollama_final_json(&chat, &load, &u, 0.001));
    assert_string_equal(s_get(j, "done_reason", NULL)->valuestring, "load");
    assert_null(cJSON_GetObjectItem(j, "eval_count"));
    cJSON_Delete(j);
    j = s_parse(mc_ollama_error_json("bad \"thing\""));
    assert_string_equal(s_get(j, "error", NULL)->valuestring, "bad \"thing\"");
    cJSON_Delete(j);
    // The model: one entry in /api/tags, its details and info in /api/show.
    const mc_ollama_model_t m = {"tiny-f32", 18779776, 0xf96dfc8420759b23ull, 1700000000, "qwen3moe", 30500000000ull,
                                 "Q4_K", 4096, 2048, 48, 128, 8};
    j = s_parse(mc_ollama_tags_json(&m));
    const cJSON *e = cJSON_GetArrayItem(s_get(j, "models", NULL), 0);
    assert_string_equal(s_get(e, "name", NULL)->valuestring, "tiny-f32:latest");
    assert_string_equal(s_get(e, "digest", NULL)->valuestring, "f96dfc8420759b23");
    assert_string_equal(s_get(e, "modified_at", NULL)->valuestring, "2023-11-14T22:13:20Z");
    assert_true(s_get(e, "size", NULL)->valuedouble == 18779776);
    assert_string_equal(s_get(e, "details", "parameter_size")->valuestring, "30.5B");
    assert_string_equal(s_get(e, "details", "quantization_level")->valuestring, "Q4_K");
    assert_string_equal(s_get(e, "details", "family")->valuestring, "qwen3moe");
    cJSON_Delete(j);
    j = s_parse(mc_ollama_show_json(&m));
    assert_true(s_get(j, "model_info", "qwen3moe.context_length")->valuedouble == 4096);
    assert_true(s_get(j, "model_info", "qwen3moe.expert_count")->valuedouble == 128);
    assert_string_equal(cJSON_GetArrayItem(s_get(j, "capabilities", NULL), 0)->valuestring, "completion");
    assert_string_equal(cJSON_GetArrayItem(s_get(j, "capabilities", NULL), 1)->valuestring, "tools");
    cJSON_Delete(j);
    j = s_parse(mc_ollama_version_json());
    assert_non_null(strchr(s_get(j, "version", NULL)->valuestring, '.'));
    cJSON_Delete(j);
    assert_true(mc_ollama_name_is(&m, "tiny-f32") && mc_ollama_name_is(&m, "tiny-f32:latest"));
    assert_false(mc_ollama_name_is(&m, "tiny-f32:7b") || mc_ollama_name_is(&m, "tiny") || mc_ollama_name_is(&m, "tiny-f32x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
