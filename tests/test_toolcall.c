/*
 * test_toolcall: tools in requests (checked, printed as the chat templates
 * print JSON), the model's calls parsed from its text (whole, several,
 * malformed, cut off, mistral-v3's array, names not offered, one call
 * without parallel_tool_calls, ids the same for the same request), the
 * constraint of a forced call, deepseek-v3's and glm4's own call syntax
 * (well formed, malformed, every cut of an answer) and forced calls, and
 * reply.h's split of reasoning, content and calls, streamed byte by byte
 * against the whole.
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

#define DSB "<｜tool▁calls▁begin｜>"
#define DSE "<｜tool▁calls▁end｜>"
#define DCB "<｜tool▁call▁begin｜>"
#define DCE "<｜tool▁call▁end｜>"
#define DSEP "<｜tool▁sep｜>"

// deepseek-v3 and glm4: their own call syntax, well formed and not.
static void test_parse_ds_glm(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    mc_toolcall_list_t l;
    // DeepSeek: two calls a line apart (as the template writes them), the fence, the closing marker.
    const char *ds = DSB DCB "function" DSEP "get_weather\n```json\n{\"city\": \"Paris\", \"days\": 2}\n```" DCE "\n" DCB
                             "function" DSEP "time\n```json\n{}\n```" DCE DSE;
    assert_int_equal(s_parse(MC_CHAT_STYLE_DEEPSEEK_V3, ds, &r, &l), MC_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.calls[0].name, "get_weather");
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"Paris\",\"days\":2}");
    assert_string_equal(l.calls[1].name, "time");
    assert_string_equal(l.calls[1].arguments, "{}");
    mc_toolcall_list_free(&l);
    // The end of the answer stands for the closing marker; no fence; whitespace around.
    assert_int_equal(s_parse(MC_CHAT_STYLE_DEEPSEEK_V3, DSB " " DCB "function" DSEP " time \n{} " DCE "\n", &r, &l),
                     MC_OK);
    assert_int_equal(l.n, 1);
    mc_toolcall_list_free(&l);
    assert_string_equal(mc_toolcall_marker(MC_CHAT_STYLE_DEEPSEEK_V3), DSB);
    static const char *const ds_bad[] = {
        DSB DCB "function" DSEP "time\n```json\n{\"a\": ",                          // cut off
        DSB DCB "function" DSEP "time\n```json\n{}\n```",                            // call not closed
        DSB DCB "function" DSEP "time\n```json\n{}\n" DCE DSE,                       // fence not closed
        DSB DCB "function" DSEP "time\n```json\n{}\n---" DCE DSE,                    // ... nor by something else
        DSB DCB "function" DSEP "rm_rf\n```json\n{}\n```" DCE DSE,                   // not offered
        DSB DCB "function" DSEP "time\n```json\n[1]\n```" DCE DSE,                   // not an object
        DSB DCB "retrieval" DSEP "time\n```json\n{}\n```" DCE DSE,                   // another type
        DSB DCB "function" DSEP "time\n```json\n{}\n```" DCE DSE " and then some",  // text after
        DSB DCB "function time\n```json\n{}\n```" DCE DSE,                           // no separator
        DSB "get_weather(city=Paris)",                                               // not a call
        "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>",        // another format's
        "",
    };
    for (size_t i = 0; i < sizeof ds_bad / sizeof ds_bad[0]; i++)
        if (s_parse(MC_CHAT_STYLE_DEEPSEEK_V3, ds_bad[i], &r, &l) != MC_ERR_FORMAT) fail_msg("accepted: %s", ds_bad[i]);
    // GLM: a string parameter stays text (even when it looks like JSON), the
    // others are read as JSON; a key the schema does not type: JSON when it is.
    const char *glm = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>42</arg_value>\n<arg_key>days"
                      "</arg_key>\n<arg_value>3</arg_value>\n<arg_key>note</arg_key>\n<arg_value>a \"b\"\nc"
                      "</arg_value>\n<arg_key>opts</arg_key>\n<arg_value>{\"x\": [1, null]}</arg_value>\n</tool_call>\n"
                      "<tool_call>time\n</tool_call>";
    assert_int_equal(s_parse(MC_CHAT_STYLE_GLM4, glm, &r, &l), MC_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.calls[0].name, "get_weather");
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"42\",\"days\":3,\"note\":\"a \\\"b\\\"\\nc\",\"opts\":{\"x\":[1,null]}}");
    assert_string_equal(l.calls[1].name, "time");
    assert_string_equal(l.calls[1].arguments, "{}");
    mc_toolcall_list_free(&l);
    // GLM-4.7's one-line form (no newlines) parses the same.
    assert_int_equal(s_parse(MC_CHAT_STYLE_GLM4,
                             "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>",
                             &r, &l),
                     MC_OK);
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"Oslo\"}");
    mc_toolcall_list_free(&l);
    static const char *const glm_bad[] = {
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo",                                 // cut off
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n",                   // not closed
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n</tool_call>",                                    // no value
        "<tool_call>get_weather\n<arg_key>city\n<arg_value>Oslo</arg_value></tool_call>",                   // key open
        "<tool_call>get_weather\n<arg_key>c</arg_key><arg_value>1</arg_value><arg_key>c</arg_key><arg_value>2"
        "</arg_value></tool_call>",                                                                         // twice
        "<tool_call>get_weather\n<arg_key></arg_key><arg_value>1</arg_value></tool_call>",                  // empty key
        "<tool_call>rm_rf\n</tool_call>",                                                                   // not offered
        "<tool_call>time\n</tool_call> and then some",                                                      // text after
        "<tool_call>time\nstray<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",                   // stray text
        "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>",                               // qwen's JSON
        "",
    };
    for (size_t i = 0; i < sizeof glm_bad / sizeof glm_bad[0]; i++)
        if (s_parse(MC_CHAT_STYLE_GLM4, glm_bad[i], &r, &l) != MC_ERR_FORMAT) fail_msg("accepted: %s", glm_bad[i]);
    // Every cut of a well-formed answer is malformed or parses: never a crash (ASan watches).
    for (size_t n = 0; n < strlen(glm); n++) {
        char *cut = strndup(glm, n);
        if (s_parse(MC_CHAT_STYLE_GLM4, cut, &r, &l) == MC_OK) mc_toolcall_list_free(&l);
        free(cut);
    }
    for (size_t n = 0; n < strlen(ds); n++) {
        char *cut = strndup(ds, n);
        if (s_parse(MC_CHAT_STYLE_DEEPSEEK_V3, cut, &r, &l) == MC_OK) mc_toolcall_list_free(&l);
        free(cut);
    }
    mc_toolcall_req_free(&r);
    // The marker tokens the server writes for control tokens.
    const char *const *names;
    assert_int_equal(mc_toolcall_marker_tokens(MC_CHAT_STYLE_DEEPSEEK_V3, &names), 5);
    assert_string_equal(names[0], DSB);
    assert_int_equal(mc_toolcall_marker_tokens(MC_CHAT_STYLE_GLM4, &names), 6);
    assert_string_equal(names[2], "<arg_key>");
    assert_int_equal(mc_toolcall_marker_tokens(MC_CHAT_STYLE_MISTRAL_V3, &names), 1);
    assert_int_equal(mc_toolcall_marker_tokens(MC_CHAT_STYLE_QWEN3, &names), 0);
}

// Forced calls: deepseek-v3 only for a known function; glm4 not at all.
static void test_constraint_ds_glm(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    mc_toolcall_constraint_t c;
    bool forced;
    char err[MC_ERR_LEN];
    r.choice = MC_TOOL_CHOICE_NAMED, r.forced = strdup("get_weather");
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_DEEPSEEK_V3, &forced, &c, err), MC_OK);
    assert_true(forced);
    assert_false(c.prefix_token);
    assert_string_equal(c.prefix, DSB DCB "function" DSEP "get_weather\n```json\n");
    assert_string_equal(c.suffix, "\n```" DCE DSE);
    assert_string_equal(c.schema, r.tools[0].params);
    // What the constraint produces parses as the call.
    char text[1024];
    snprintf(text, sizeof text, "%s{\"city\": \"Oslo\"}%s", c.prefix, c.suffix);
    mc_toolcall_list_t l;
    assert_int_equal(s_parse(MC_CHAT_STYLE_DEEPSEEK_V3, text, &r, &l), MC_OK);
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"Oslo\"}");
    mc_toolcall_list_free(&l);
    mc_toolcall_constraint_free(&c);
    // "time" has no parameters: any object.
    free(r.forced), r.forced = strdup("time");
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_DEEPSEEK_V3, &forced, &c, err), MC_OK);
    assert_string_equal(c.schema, "{\"type\": \"object\"}");
    mc_toolcall_constraint_free(&c);
    // required with two tools: the name cannot be constrained.
    r.choice = MC_TOOL_CHOICE_REQUIRED;
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_DEEPSEEK_V3, &forced, &c, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "name one function"));
    assert_null(c.prefix);
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_GLM4, &forced, &c, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "glm4"));
    r.choice = MC_TOOL_CHOICE_AUTO;
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_GLM4, &forced, &c, err), MC_OK);
    assert_false(forced);
    mc_toolcall_req_free(&r);
    // required with one tool: that one.
    r = s_req("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"required\"}");
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_DEEPSEEK_V3, &forced, &c, err), MC_OK);
    assert_string_equal(c.prefix, DSB DCB "function" DSEP "f\n```json\n");
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
    // Their calls: the content ends at the format's marker, streamed or whole.
    const mc_reply_params_t glm_t = {MC_CHAT_STYLE_GLM4, true, true}, ds_t = {MC_CHAT_STYLE_DEEPSEEK_V3, false, true};
    s_stream_check(&glm_t, "\n<think>weather?</think>\nChecking.\n<tool_call>f\n</tool_call>", "weather?",
                   "Checking.", "<tool_call>f\n</tool_call>");
    s_stream_check(&ds_t, "Checking." DSB DCB "function" DSEP "f\n```json\n{}\n```" DCE DSE, "", "Checking.",
                   DSB DCB "function" DSEP "f\n```json\n{}\n```" DCE DSE);
    s_stream_check(&ds_t, "A <｜tool but no call", "", "A <｜tool but no call", "");
}

// gpt-oss (harmony): calls are messages to functions.NAME; the answer's
// analysis is the reasoning and its final message the content.
#define H_CALL "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
static void test_harmony(void **state) {
    (void)state;
    mc_toolcall_req_t r = s_req(s_two_tools);
    mc_toolcall_list_t l;
    assert_int_equal(s_parse(MC_CHAT_STYLE_HARMONY, H_CALL "{\"city\": \"Paris\", \"days\": 2}", &r, &l), MC_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.calls[0].name, "get_weather");
    assert_string_equal(l.calls[0].arguments, "{\"city\":\"Paris\",\"days\":2}");
    mc_toolcall_list_free(&l);
    // The recipient before the channel (as the template writes calls), the closing <|call|>.
    assert_int_equal(s_parse(MC_CHAT_STYLE_HARMONY, " to=functions.time<|channel|>commentary json<|message|>{}<|call|>",
                             &r, &l),
                     MC_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.calls[0].name, "time");
    mc_toolcall_list_free(&l);
    // The content type after the recipient, as text.
    assert_int_equal(s_parse(MC_CHAT_STYLE_HARMONY, "<|channel|>commentary to=functions.time json<|message|>{}", &r, &l),
                     MC_OK);
    assert_string_equal(l.calls[0].name, "time");
    mc_toolcall_list_free(&l);
    static const char *const bad[] = {
        H_CALL "{}<|channel|>commentary to=functions.time<|message|>{}",             // a second header not opened
        H_CALL "{\"city\": ",                                                        // cut off
        H_CALL "[1]",                                                                // not an object
        H_CALL "{} and more",                                                        // text after
        "<|channel|>commentary<|message|>{}",                                       // to no one
        "<|channel|>commentary to=browser.search<|message|>{}",                     // another namespace
        "<|channel|>commentary to=functions.rm_rf<|message|>{}",                    // not offered
        "<|channel|>commentary to=functions.time json",                             // header not whole
        "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>",        // another format's
    };
    char err[MC_ERR_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (mc_toolcall_parse(MC_CHAT_STYLE_HARMONY, bad[i], strlen(bad[i]), &r, "req", &l, err) != MC_ERR_FORMAT)
            fail_msg("case %zu parsed", i);
        assert_null(l.calls);
    }
    // The header's control tokens are written into the text by name.
    const char *const *names;
    const size_t n = mc_toolcall_marker_tokens(MC_CHAT_STYLE_HARMONY, &names);
    bool chan = false, msg = false;
    for (size_t i = 0; i < n; i++) chan |= !strcmp(names[i], "<|channel|>"), msg |= !strcmp(names[i], "<|message|>");
    assert_true(chan && msg);
    // Forced calls: refused (the header mixes tokens and text).
    mc_toolcall_constraint_t c;
    bool forced;
    r.choice = MC_TOOL_CHOICE_REQUIRED;
    assert_int_equal(mc_toolcall_constraint(&r, MC_CHAT_STYLE_HARMONY, &forced, &c, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "gpt-oss"));
    mc_toolcall_req_free(&r);
    // Replies: always split (the headers are never content), streamed or whole.
    const mc_reply_params_t h = {MC_CHAT_STYLE_HARMONY, false, false}, ht = {MC_CHAT_STYLE_HARMONY, false, true};
    assert_true(mc_reply_active(&h));
    s_stream_check(&h, "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.",
                   "Let me think.", "It is 4.", "");
    s_stream_check(&h, "<|channel|>final<|message|>4", "", "4", "");
    s_stream_check(&h, "<|channel|>final<|message|>4<|return|><|start|>assistant<|channel|>final<|message|>5", "", "4", "");
    s_stream_check(&h, "<|channel|>analysis<|message|>cut while thinking <|", "cut while thinking <|", "", "");
    s_stream_check(&h, "Off the format <|channel|>", "", "Off the format <|channel|>", "");
    s_stream_check(&h, "<|channel|>commentary<|message|>preamble<|end|><|start|>assistant<|channel|>final<|message|>A",
                   "", "A", "");
    s_stream_check(&ht, "<|channel|>analysis<|message|>weather?<|end|>" H_CALL "{\"city\": \"Paris\"}", "weather?", "",
                   H_CALL "{\"city\": \"Paris\"}");
    s_stream_check(&ht, " to=functions.time<|channel|>commentary json<|message|>{}", "", "",
                   " to=functions.time<|channel|>commentary json<|message|>{}");
    // Without tools a call is not content either.
    s_stream_check(&h, "<|channel|>commentary to=functions.time json<|message|>{}", "", "", "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_constraint),
        cmocka_unit_test(test_parse_ds_glm),
        cmocka_unit_test(test_constraint_ds_glm),
        cmocka_unit_test(test_reply),
        cmocka_unit_test(test_harmony),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
