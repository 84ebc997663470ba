/*
 * test_toolcall: tools in requests (checked, printed as the chat templates
 * print JSON), the model's calls parsed from its text (whole, several,
 * malformed, cut off, mistral-v3's array, names not offered, one call
 * without parallel_tool_calls, ids the same for the same request), the
 * constraint of a forced call, and reply.h's split of reasoning, content
 * and calls, streamed byte by byte against the whole.
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

#include "reply.h"
#include "toolcall.h"

static const char s_two_tools[] =
    "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather, "
    "\\\"now\\\"\\n\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, "
    "\"days\": {\"type\": \"integer\", \"maximum\": 7.5}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", "
    "\"function\": {\"name\": \"time\"}}]}";

static mc_toolcall_req_t s_req(const char *body) {
    cJSON *root = cJSON_Parse(body);
    assert_non_null(root);
    mc_toolcall_req_t r;
    char param[64], err[MC_ERR_LEN];
    if (mc_toolcall_req_parse(root, &r, param, err)) fail_msg("%s: %s", param, err);
    cJSON_Delete(root);
    return r;
}

static void s_refused(const char *body, const char *param_want, const char *needle) {
    cJSON *root = cJSON_Parse(body);
    assert_non_null(root);
    mc_toolcall_req_t r;
    char param[64] = "", err[MC_ERR_LEN] = "";
    assert_int_equal(mc_toolcall_req_parse(root, &r, param, err), MC_ERR_ARG);
    if (strcmp(param, param_want) || !strstr(err, needle)) fail_msg("%s: %s '%s'", body, param, err);
    cJSON_Delete(root);
}

static void test_requests(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    assert_int_equal(r.n_tools, 2);
    assert_int_equal(r.choice, MC_TOOL_CHOICE_AUTO);
    assert_true(r.parallel && mc_toolcall_active(&r));
    assert_string_equal(r.tools[0].name, "get_weather");
    // As Python's json.dumps writes it: ", " and ": ", escapes, numbers.
    assert_string_equal(r.tools[0].json,
                        "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "
                        "\"Weather, \\\"now\\\"\\n\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": "
                        "{\"type\": \"string\"}, \"days\": {\"type\": \"integer\", \"maximum\": 7.5}}, \"required\": "
                        "[\"city\"]}}}");
    assert_null(r.tools[1].params);
    mc_toolcall_req_free(&r);
    mc_toolcall_req_free(&r); // twice is safe
    r = s_req("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": "
              "{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, \"parallel_tool_calls\": false}");
    assert_int_equal(r.choice, MC_TOOL_CHOICE_NAMED);
    assert_string_equal(r.forced, "f");
    assert_false(r.parallel);
    mc_toolcall_req_free(&r);
    r = s_req("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"none\"}");
    assert_false(mc_toolcall_active(&r));
    mc_toolcall_req_free(&r);
    r = s_req("{}");
    assert_false(mc_toolcall_active(&r));
    mc_toolcall_req_free(&r);
    s_refused("{\"tools\": {}}", "tools", "must be an array");
    s_refused("{\"tools\": [{\"type\": \"retrieval\"}]}", "tools[0]", "only function tools");
    s_refused("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a b\"}}]}", "tools[0].function.name",
              "letters, digits");
    s_refused("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": 3}}]}",
              "tools[0].function.parameters", "JSON schema");
    s_refused("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, {\"type\": \"function\", "
              "\"function\": {\"name\": \"f\"}}]}",
              "tools", "same name");
    s_refused("{\"tool_choice\": \"required\"}", "tool_choice", "no 'tools'");
    s_refused("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"always\"}",
              "tool_choice", "\"auto\", \"none\", \"required\"");
    s_refused("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": "
              "\"function\", \"function\": {\"name\": \"g\"}}}",
              "tool_choice.function.name", "not in 'tools'");
    s_refused("{\"parallel_tool_calls\": 1}", "parallel_tool_calls", "true or false");
}

static mc_err_t s_parse(mc_chat_style_t st, const char *text, const mc_toolcall_req_t *r, mc_toolcall_list_t *l) {
    char err[MC_ERR_LEN];
    return mc_toolcall_parse(st, text, strlen(text), r, "chatcmpl-1", l, err);
}

static void test_parse(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    mc_toolcall_list_t l;
    // One call, and two (ids differ, and are the same for the same request id).
    assert_int_equal(s_parse(MC_CHAT_STYLE_QWEN3,
                             "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                             &r, &l),
                     MC_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.calls[0].name, "get_weather");
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"Paris\"}");
    assert_int_equal(strlen(l.calls[0].id), 29);
    assert_memory_equal(l.calls[0].id, "call_", 5);
    char first_id[32];
    strcpy(first_id, l.calls[0].id);
    mc_toolcall_list_free(&l);
    const char *two = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n"
                      "<tool_call>\n{\"name\": \"time\", \"arguments\": \"{}\"}\n</tool_call>\n";
    assert_int_equal(s_parse(MC_CHAT_STYLE_CHATML, two, &r, &l), MC_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.calls[0].id, first_id);
    assert_string_not_equal(l.calls[1].id, first_id);
    assert_string_equal(l.calls[1].name, "time");
    assert_string_equal(l.calls[1].arguments, "{}");
    mc_toolcall_list_free(&l);
    // Without parallel calls: the first only.
    r.parallel = false;
    assert_int_equal(s_parse(MC_CHAT_STYLE_CHATML, two, &r, &l), MC_OK);
    assert_int_equal(l.n, 1);
    mc_toolcall_list_free(&l);
    r.parallel = true;
    // mistral-v3: the marker, then an array.
    assert_int_equal(s_parse(MC_CHAT_STYLE_MISTRAL_V3,
                             "[TOOL_CALLS] [{\"name\": \"time\", \"arguments\": {}}, {\"name\": \"get_weather\", "
                             "\"arguments\": {\"city\": \"Rome\", \"days\": 2}}]",
                             &r, &l),
                     MC_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.calls[1].arguments, "{\"city\":\"Rome\",\"days\":2}");
    mc_toolcall_list_free(&l);
    // Malformed: cut off, not JSON, not closed, text after, unknown name,
    // arguments not an object, nothing.
    static const char *const bad[] = {
        "<tool_call>\n{\"name\": \"time\", \"argum",
        "<tool_call>\nget_weather(city=Paris)\n</tool_call>",
        "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n",
        "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call> and then some",
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"time\", \"arguments\": [1]}\n</tool_call>",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l.n = 99;
        if (s_parse(MC_CHAT_STYLE_QWEN3, bad[i], &r, &l) != MC_ERR_FORMAT) fail_msg("accepted: %s", bad[i]);
    }
    assert_int_equal(s_parse(MC_CHAT_STYLE_MISTRAL_V3, "[TOOL_CALLS] [{\"name\": \"time\"", &r, &l), MC_ERR_FORMAT);
    assert_int_equal(s_parse(MC_CHAT_STYLE_MISTRAL_V3, "<tool_call>{}</tool_call>", &r, &l), MC_ERR_FORMAT);
    mc_toolcall_req_free(&r);
    // A named choice: another function's call is not that call.
    r = s_req("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, {\"type\": \"function\", "
              "\"function\": {\"name\": \"g\"}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": "
              "\"g\"}}}");
    assert_int_equal(s_parse(MC_CHAT_STYLE_QWEN3, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>", &r, &l),
                     MC_ERR_FORMAT);
    assert_int_equal(s_parse(MC_CHAT_STYLE_QWEN3, "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>", &r, &l),
                     MC_OK);
    mc_toolcall_list_free(&l);
    mc_toolcall_req_free(&r);
}

static void test_constraint(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    mc_toolcall_constraint_t c;
    bool forced;
    char err[MC_ERR_LEN];
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_QWEN3, &forced, &c, err), MC_OK);
    assert_false(forced); // auto forces nothing
    assert_null(c.schema);
    r.choice = MC_TOOL_CHOICE_NAMED, r.forced = strdup("get_weather");
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_QWEN3, &forced, &c, err), MC_OK);
    assert_true(forced);
    assert_string_equal(c.prefix, "<tool_call>\n");
    assert_string_equal(c.suffix, "\n</tool_call>");
    assert_false(c.prefix_token);
    assert_string_equal(c.schema, "{\"type\": \"object\", \"properties\": {\"name\": {\"const\": \"get_weather\"}, "
                                  "\"arguments\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": "
                                  "\"string\"}, \"days\": {\"type\": \"integer\", \"maximum\": 7.5}}, \"required\": "
                                  "[\"city\"]}}, \"required\": [\"name\", \"arguments\"], \"additionalProperties\": "
                                  "false}");
    cJSON *schema = cJSON_Parse(c.schema);
    assert_non_null(schema);
    cJSON_Delete(schema);
    mc_toolcall_constraint_free(&c);
    mc_toolcall_constraint_free(&c);
    // required, two tools, mistral-v3 without parallel calls: an array of one of them.
    r.choice = MC_TOOL_CHOICE_REQUIRED, r.parallel = false;
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_MISTRAL_V3, &forced, &c, err), MC_OK);
    assert_true(forced && c.prefix_token);
    assert_string_equal(c.prefix, "[TOOL_CALLS]");
    assert_string_equal(c.suffix, "");
    schema = cJSON_Parse(c.schema);
    assert_non_null(schema);
    assert_string_equal(cJSON_GetObjectItem(schema, "type")->valuestring, "array");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(schema, "items"), "anyOf")), 2);
    assert_int_equal(cJSON_GetObjectItem(schema, "maxItems")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItem(
                            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(schema, "items"),
                                                                                       "anyOf"),
                                                                   1),
                                                "properties"),
                            "arguments")
                            ->child->valuestring,
                        "object"); // "time" has no parameters: any object
    cJSON_Delete(schema);
    mc_toolcall_constraint_free(&c);
    mc_toolcall_req_free(&r);
}

// The view of every prefix of text (as a stream sees it) never takes back
// what it gave, and ends with the whole answer's view.
static void s_stream_check(const mc_reply_params_t *p, const char *text, const char *reasoning, const char *content,
                           const char *calls) {
    const size_t len = strlen(text);
    mc_reply_view_t v, prev = {0};
    size_t sent_r = 0, sent_c = 0;
    char r[1024] = "", c[1024] = "";
    for (size_t n = 0; n <= len; n++) {
        mc_reply_view(p, text, n, false, &v);
        const size_t rf = sent_r > v.r0 ? sent_r : v.r0, cf = sent_c > v.c0 ? sent_c : v.c0;
        if (v.r1 > rf) strncat(r, text + rf, v.r1 - rf), sent_r = v.r1;
        if (v.c1 > cf) strncat(c, text + cf, v.c1 - cf), sent_c = v.c1;
        assert_true(v.r1 >= prev.r1 && v.c1 >= prev.c1);
        prev = v;
    }
    mc_reply_view(p, text, len, true, &v);
    const size_t rf = sent_r > v.r0 ? sent_r : v.r0, cf = sent_c > v.c0 ? sent_c : v.c0;
    if (v.r1 > rf) strncat(r, text + rf, v.r1 - rf);
    if (v.c1 > cf) strncat(c, text + cf, v.c1 - cf);
    assert_string_equal(r, reasoning);
    assert_string_equal(c, content);
    assert_string_equal(text + v.calls, calls);
    // The whole answer's view says the same.
    char whole_r[1024] = "", whole_c[1024] = "";
    strncat(whole_r, text + v.r0, v.r1 - v.r0);
    strncat(whole_c, text + v.c0, v.c1 - v.c0);
    assert_string_equal(whole_r, reasoning);
    assert_string_equal(whole_c, content);
}

static void test_reply(void **state) {
    (void)state;
    const mc_reply_params_t think = {MC_CHAT_STYLE_QWEN3, true, false}, both = {MC_CHAT_STYLE_QWEN3, true, true},
                            tools = {MC_CHAT_STYLE_CHATML, false, true},
                            v3 = {MC_CHAT_STYLE_MISTRAL_V3, false, true}, none = {MC_CHAT_STYLE_QWEN3, false, false};
    assert_false(mc_reply_active(&none));
    s_stream_check(&think, "<think>\nLet me think.\n</think>\n\nIt is 4.", "Let me think.", "It is 4.", "");
    s_stream_check(&think, "No thinking here </think>", "", "No thinking here </think>", "");
    s_stream_check(&think, "<think>\ncut off while thinking", "cut off while thinking", "", "");
    s_stream_check(&think, "<thin", "", "<thin", "");
    s_stream_check(&both, "<think>\nweather?\n</think>\n\nChecking.\n<tool_call>\n{}\n</tool_call>", "weather?",
                   "Checking.", "<tool_call>\n{}\n</tool_call>");
    s_stream_check(&tools, "Plain answer with <tool but no call", "", "Plain answer with <tool but no call", "");
    s_stream_check(&tools, "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "", "",
                   "<tool_call>\n{\"name\": \"f\"}\n</tool_call>");
    s_stream_check(&v3, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}]", "", "",
                   "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}]");
    s_stream_check(&none, "<think>\nx\n</think>\ny", "", "<think>\nx\n</think>\ny", "");
    // GLM-4.5 answers after "<|assistant|>" with "\n<think>...</think>\n"; R1 opens with "<think>\n".
    const mc_reply_params_t glm = {MC_CHAT_STYLE_GLM4, true, false}, r1 = {MC_CHAT_STYLE_DEEPSEEK_V3, true, false};
    s_stream_check(&glm, "\n<think>Let me think.</think>\nIt is 4.", "Let me think.", "It is 4.", "");
    s_stream_check(&glm, "\n<think></think>\nIt is 4.", "", "It is 4.", "");
    s_stream_check(&r1, "<think>\nadd 2 and 2\n</think>\n\n4", "add 2 and 2", "4", "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_constraint),
        cmocka_unit_test(test_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
