/*
 * test_responses: Responses API bodies (a string input, message items with
 * input_text and output_text parts, instructions, the sampling fields,
 * logprobs through include, references to kept answers, store; function
 * tools, tool_choice, function_call and function_call_output items, kept
 * calls) and every refusal with its param and message; the response object
 * and each stream event, with and without calls, read back with cJSON.
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

#include "responses.h"

static mc_items_t *s_items; // one kept answer: msg_kept

static mc_api_request_t s_ok(const char *body) {
    mc_api_request_t r;
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    if (mc_responses_parse(body, strlen(body), &d, s_items, &r, &e)) fail_msg("%s: %s", body, e.message);
    assert_true(r.chat);
    return r;
}

static void s_bad(const char *body, const char *param, const char *needle) {
    mc_api_request_t r = {0};
    mc_api_error_t e;
    const mc_sampler_params_t d = mc_sampler_params_default();
    if (mc_responses_parse(body, strlen(body), &d, s_items, &r, &e) != MC_ERR_ARG) fail_msg("accepted: %s", body);
    if (e.status != 400 || strcmp(e.param, param) || !strstr(e.message, needle))
        fail_msg("%s: got %d '%s' '%s', wanted 400 '%s' '%s'", body, e.status, e.param, e.message, param, needle);
    assert_null(r.owned_);
}

static void s_msg(const mc_api_request_t *r, size_t i, mc_chat_role_t role, const char *text) {
    assert_true(i < r->n_msgs);
    assert_int_equal(r->msgs[i].role, role);
    assert_int_equal(r->msgs[i].len, strlen(text));
    assert_memory_equal(r->msgs[i].content, text, strlen(text));
}

static void test_requests(void **state) {
    (void)state;
    // What client.responses.create({model, input: "..."}) sends.
    mc_api_request_t r = s_ok("{\"model\":\"gpt-4o\",\"input\":\"Tell me a joke\"}");
    assert_int_equal(r.n_msgs, 1);
    s_msg(&r, 0, MC_CHAT_USER, "Tell me a joke");
    assert_false(r.stream || r.logprobs);
    assert_int_equal(r.max_tokens, 0);
    mc_api_request_free(&r);
    // What the AI SDK sends: a system message, input_text parts, an earlier
    // answer as output_text, the sampling fields, logprobs through include.
    r = s_ok("{\"model\":\"m\",\"input\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":"
             "[{\"type\":\"input_text\",\"text\":\"Hi \"},{\"type\":\"input_text\",\"text\":\"there\"}]},{\"role\":"
             "\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hello\"}],\"id\":\"msg_1\"},{\"type\":"
             "\"message\",\"role\":\"developer\",\"content\":\"Again\"},{\"role\":\"user\",\"content\":\"More\"}],"
             "\"instructions\":\"You are a pirate.\",\"temperature\":0.5,\"top_p\":0.9,\"max_output_tokens\":32,"
             "\"stream\":true,\"include\":[\"message.output_text.logprobs\",\"reasoning.encrypted_content\"],"
             "\"top_logprobs\":3,\"store\":false,\"metadata\":{\"a\":\"b\"},\"user\":\"u\",\"parallel_tool_calls\":true,"
             "\"truncation\":\"disabled\",\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"low\"},\"tools\":[],"
             "\"tool_choice\":\"auto\",\"seed\":7}");
    assert_int_equal(r.n_msgs, 6);
    s_msg(&r, 0, MC_CHAT_SYSTEM, "You are a pirate."); // instructions first
    s_msg(&r, 1, MC_CHAT_SYSTEM, "Be brief.");
    s_msg(&r, 2, MC_CHAT_USER, "Hi there");
    s_msg(&r, 3, MC_CHAT_ASSISTANT, "Hello");
    s_msg(&r, 4, MC_CHAT_SYSTEM, "Again");
    s_msg(&r, 5, MC_CHAT_USER, "More");
    assert_true(r.sampling.temp == 0.5f && r.sampling.top_p == 0.9f && r.max_tokens == 32 && r.stream);
    assert_true(r.logprobs && r.top_logprobs == 3 && r.seed_given && r.sampling.seed == 7);
    mc_api_request_free(&r);
    // top_logprobs alone does not ask for logprobs (OpenAI's include does).
    r = s_ok("{\"input\":\"x\",\"top_logprobs\":2}");
    assert_false(r.logprobs);
    assert_true(r.store); // OpenAI's default
    mc_api_request_free(&r);
    // An earlier answer named by its id (what the AI SDK sends by default).
    r = s_ok("{\"input\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"type\":\"item_reference\",\"id\":\"msg_kept\"},"
             "{\"role\":\"user\",\"content\":\"And?\"}],\"store\":false}");
    assert_int_equal(r.n_msgs, 3);
    s_msg(&r, 1, MC_CHAT_ASSISTANT, "An earlier answer.");
    assert_false(r.store);
    mc_api_request_free(&r);
}

// Function tools in the flat shape, tool_choice, calls and their outputs
// as the chat's assistant tool_calls and tool messages (what the AI SDK
// sends for a second step: the text, the calls, their outputs).
static void test_tools(void **state) {
    (void)state;
    mc_api_request_t r = s_ok(
        "{\"input\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"output_text\",\"text\":\"Looking.\"}]},{\"type\":\"function_call\",\"call_id\":\"call_1\",\"name\":\"weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\",\\\"days\\\":2}\"},{\"type\":\"function_call\",\"call_id\":\"call_2\",\"name\":"
        "\"weather\",\"arguments\":\"{}\",\"id\":\"fc_x\",\"status\":\"completed\"},{\"type\":\"function_call_output\","
        "\"call_id\":\"call_1\",\"output\":\"rain\"},{\"type\":\"function_call_output\",\"call_id\":\"call_2\",\"output\":"
        "[{\"type\":\"input_text\",\"text\":\"sun\"}]},{\"type\":\"function_call\",\"call_id\":\"call_3\",\"name\":\"weather\","
        "\"arguments\":\"not json\"}],\"tools\":[{\"type\":\"function\",\"name\":\"weather\",\"description\":\"Forecast\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]},"
        "\"strict\":true},{\"type\":\"function\",\"name\":\"time\"}],\"tool_choice\":{\"type\":\"function\",\"name\":"
        "\"weather\"},\"parallel_tool_calls\":false}");
    assert_int_equal(r.n_msgs, 5);
    s_msg(&r, 0, MC_CHAT_USER, "Weather?");
    s_msg(&r, 1, MC_CHAT_ASSISTANT, "Looking."); // the text and the calls that follow it: one message
    assert_int_equal(r.msgs[1].n_calls, 2);
    assert_string_equal(r.msgs[1].calls[0].id, "call_1");
    assert_string_equal(r.msgs[1].calls[0].name, "weather");
    assert_string_equal(r.msgs[1].calls[0].arguments, "{\"city\": \"Oslo\", \"days\": 2}"); // as the templates print
    assert_string_equal(r.msgs[1].calls[1].arguments, "{}");
    s_msg(&r, 2, MC_CHAT_TOOL, "rain");
    assert_string_equal(r.msgs[2].tool_call_id, "call_1");
    s_msg(&r, 3, MC_CHAT_TOOL, "sun");
    assert_string_equal(r.msgs[3].tool_call_id, "call_2");
    s_msg(&r, 4, MC_CHAT_ASSISTANT, ""); // a call alone: an assistant message without text
    assert_int_equal(r.msgs[4].n_calls, 1);
    assert_string_equal(r.msgs[4].calls[0].arguments, "not json"); // kept as it is
    assert_int_equal(r.tools.n_tools, 2);
    assert_string_equal(r.tools.tools[0].name, "weather");
    // The nested form the chat templates print.
    assert_string_equal(r.tools.tools[0].json,
                        "{\"type\": \"function\", \"function\": {\"name\": \"weather\", \"description\": \"Forecast\", "
                        "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
                        "\"required\": [\"city\"]}, \"strict\": true}}");
    assert_string_equal(r.tools.tools[0].params,
                        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}");
    assert_null(r.tools.tools[1].params);
    assert_int_equal(r.tools.choice, MC_TOOL_CHOICE_NAMED);
    assert_string_equal(r.tools.forced, "weather");
    assert_false(r.tools.parallel);
    mc_api_request_free(&r);
    r = s_ok("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":\"required\"}");
    assert_int_equal(r.tools.choice, MC_TOOL_CHOICE_REQUIRED);
    assert_true(r.tools.parallel);
    mc_api_request_free(&r);
    r = s_ok("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":\"none\"}");
    assert_false(mc_toolcall_active(&r.tools));
    mc_api_request_free(&r);
    // Kept calls named by their item ids (the AI SDK with store on): one
    // assistant message with both, after the kept text.
    r = s_ok("{\"input\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"type\":\"item_reference\",\"id\":\"msg_kept\"},"
             "{\"type\":\"item_reference\",\"id\":\"fc_kept1\"},{\"type\":\"item_reference\",\"id\":\"fc_kept2\"},"
             "{\"type\":\"function_call_output\",\"call_id\":\"call_kept1\",\"output\":\"1\"}]}");
    assert_int_equal(r.n_msgs, 3);
    s_msg(&r, 1, MC_CHAT_ASSISTANT, "An earlier answer.");
    assert_int_equal(r.msgs[1].n_calls, 2);
    assert_string_equal(r.msgs[1].calls[0].id, "call_kept1");
    assert_string_equal(r.msgs[1].calls[0].name, "f");
    assert_string_equal(r.msgs[1].calls[0].arguments, "{\"a\": 1}");
    assert_string_equal(r.msgs[1].calls[1].id, "call_kept2");
    s_msg(&r, 2, MC_CHAT_TOOL, "1");
    mc_api_request_free(&r);
}

// Structured output: text.format json_object and json_schema (the flat form).
static void test_text_format(void **state) {
    (void)state;
    mc_api_request_t r = s_ok("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}");
    assert_true(r.json);
    assert_null(r.schema);
    mc_api_request_free(&r);
    r = s_ok("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"p\",\"strict\":true,"
             "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"],"
             "\"additionalProperties\":false}}}}");
    assert_true(r.json);
    assert_non_null(strstr(r.schema, "\"required\":[\"a\"]"));
    assert_int_equal(r.schema_len, strlen(r.schema));
    mc_api_request_free(&r);
    r = s_ok("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"text\"}}}");
    assert_false(r.json);
    mc_api_request_free(&r);
}

static void test_refusals(void **state) {
    (void)state;
    s_bad("{\"model\":\"m\"}", "input", "'input' is required");
    s_bad("{\"input\":5}", "input", "a string or an array");
    s_bad("{\"input\":[]}", "input", "must not be empty");
    s_bad("{\"input\":[1]}", "input[0]", "must be an object");
    s_bad("{\"input\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "input[0].role", "'robot': the roles are");
    s_bad("{\"input\":[{\"content\":\"x\"}]}", "input[0].role", "must be a string");
    s_bad("{\"input\":[{\"role\":\"user\",\"content\":null}]}", "input[0].content", "a string or an array");
    s_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"x\"}]}]}",
          "input[0].content", "'input_image': this model reads text only");
    s_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\"}]}]}", "input[0].content",
          "needs a string \"text\"");
    s_bad("{\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}", "input[0]",
          "refers to 'msg_1', an answer this server does not keep");
    s_bad("{\"input\":[{\"type\":\"item_reference\"}]}", "input[0]", "needs a string \"id\"");
    s_bad("{\"input\":\"x\",\"store\":\"yes\"}", "store", "true or false");
    s_bad("{\"input\":[{\"type\":\"function_call_output\",\"output\":\"1\"}]}", "input[0].call_id",
          "must be the call_id");
    s_bad("{\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":5}]}", "input[0].output",
          "a string or an array");
    s_bad("{\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\",\"arguments\":{}}]}", "input[0]",
          "needs strings \"call_id\", \"name\" and \"arguments\"");
    s_bad("{\"input\":[{\"type\":\"item_reference\",\"id\":\"fc_gone\"}]}", "input[0]", "does not keep");
    s_bad("{\"input\":[{\"type\":\"reasoning\",\"summary\":[]}]}", "input[0]", "'reasoning': this server reads message,");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools[0]", "only function tools");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", "tools[0].name",
          "1 to 64 letters"); // the chat shape is not this API's
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":3}]}",
          "tools[0].parameters", "a JSON schema");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"strict\":\"y\"}]}", "tools[0].strict",
          "true or false");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},{\"type\":\"function\",\"name\":\"f\"}]}",
          "tools", "the same name");
    s_bad("{\"input\":\"x\",\"tool_choice\":\"required\"}", "tool_choice", "there are no 'tools'");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":{\"type\":"
          "\"function\",\"name\":\"g\"}}", "tool_choice.name", "not in 'tools'");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":{\"type\":"
          "\"allowed_tools\",\"tools\":[]}}", "tool_choice", "{\"type\": \"function\", \"name\": ...}");
    s_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"parallel_tool_calls\":1}",
          "parallel_tool_calls", "true or false");
    s_bad("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"schema\":{\"pattern\":\"a\"}}}}",
          "text.format.schema", "keyword 'pattern' is not supported");
    s_bad("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\"}}}", "text.format.schema", "is required");
    s_bad("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "text.format", "'yaml'");
    s_bad("{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}", "previous_response_id", "stores no responses");
    s_bad("{\"input\":\"x\",\"conversation\":\"c\"}", "conversation", "keeps no conversations");
    s_bad("{\"input\":\"x\",\"background\":true}", "background", "answers at once");
    s_bad("{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens", "between 1 and");
    s_bad("{\"input\":\"x\",\"temperature\":9}", "temperature", "between 0 and 2");
    s_bad("{\"input\":\"x\",\"top_logprobs\":21}", "top_logprobs", "between 0 and 20");
    s_bad("{\"input\":\"x\",\"include\":\"all\"}", "include", "array of strings");
    s_bad("{\"input\":\"x\",\"instructions\":3}", "instructions", "must be a string");
    s_bad("{\"input\":\"x\",\"stream\":1}", "stream", "true or false");
    s_bad("{\"input\":\"\\u0000\"}", "", "NUL character");
    s_bad("{\"input\":\"\xff\"}", "", "not valid UTF-8");
}

static cJSON *s_parse(char *txt) {
    assert_non_null(txt);
    cJSON *j = cJSON_Parse(txt);
    if (!j) fail_msg("not JSON: %s", txt);
    free(txt);
    return j;
}

static const cJSON *s_at(const cJSON *o, const char *path) {
    const cJSON *cur = o;
    char key[64];
    for (const char *p = path; *p && cur;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        cur = key[0] == '[' ? cJSON_GetArrayItem(cur, atoi(key + 1)) : cJSON_GetObjectItemCaseSensitive(cur, key);
        p += n + (p[n] == '.');
    }
    if (!cur) fail_msg("no %s", path);
    return cur;
}

static const char *s_str(const cJSON *o, const char *path) {
    const cJSON *v = s_at(o, path);
    return cJSON_IsString(v) ? v->valuestring : cJSON_IsNull(v) ? "null" : "?";
}

static double s_num(const cJSON *o, const char *path) {
    const cJSON *v = s_at(o, path);
    if (!cJSON_IsNumber(v)) fail_msg("%s is not a number", path);
    return v->valuedouble;
}

static void test_answers(void **state) {
    (void)state;
    const mc_responses_answer_t a = {"resp_1", "msg_1", 1700000000, "tiny", 0.7f, 0.95f, 64, false, NULL, false, NULL};
    mc_api_result_t res = {.text = "Hello!", .len = 6, .why = MC_FINISH_STOP, .prompt_tokens = 5, .completion_tokens = 2};
    cJSON *j = s_parse(mc_responses_json(&a, &res, NULL));
    assert_string_equal(s_str(j, "id"), "resp_1");
    assert_string_equal(s_str(j, "object"), "response");
    assert_string_equal(s_str(j, "status"), "completed");
    assert_string_equal(s_str(j, "error"), "null");
    assert_string_equal(s_str(j, "incomplete_details"), "null");
    assert_string_equal(s_str(j, "output.[0].type"), "message");
    assert_string_equal(s_str(j, "output.[0].id"), "msg_1");
    assert_string_equal(s_str(j, "output.[0].role"), "assistant");
    assert_string_equal(s_str(j, "output.[0].status"), "completed");
    assert_string_equal(s_str(j, "output.[0].content.[0].type"), "output_text");
    assert_string_equal(s_str(j, "output.[0].content.[0].text"), "Hello!");
    assert_int_equal(cJSON_GetArraySize(s_at(j, "output.[0].content.[0].annotations")), 0);
    assert_true(s_num(j, "usage.input_tokens") == 5 && s_num(j, "usage.output_tokens") == 2);
    assert_true(s_num(j, "usage.total_tokens") == 7 && s_num(j, "usage.input_tokens_details.cached_tokens") == 0);
    assert_true(s_num(j, "temperature") == 0.7 && s_num(j, "top_p") == 0.95); // as written, not 0.699999988
    assert_true(s_num(j, "max_output_tokens") == 64 && s_num(j, "created_at") == 1700000000);
    assert_true(cJSON_IsFalse(s_at(j, "store")));
    cJSON_Delete(j);
    // A token limit: incomplete, with the reason.
    res.why = MC_FINISH_LENGTH;
    j = s_parse(mc_responses_json(&a, &res, NULL));
    assert_string_equal(s_str(j, "status"), "incomplete");
    assert_string_equal(s_str(j, "incomplete_details.reason"), "max_output_tokens");
    assert_string_equal(s_str(j, "output.[0].status"), "incomplete");
    cJSON_Delete(j);
    // The events of a stream, in order, numbered by the caller.
    static const char *const types[] = {"response.created",           "response.in_progress",
                                        "response.output_item.added", "response.content_part.added",
                                        "response.output_text.delta", "response.output_text.done",
                                        "response.content_part.done", "response.output_item.done",
                                        "response.incomplete"};
    const mc_api_result_t delta = {.text = "Hel", .len = 3, .why = MC_FINISH_NONE};
    for (int ev = MC_RESPONSES_CREATED; ev <= MC_RESPONSES_END; ev++) {
        const char *type = NULL;
        j = s_parse(mc_responses_event_json(&a, (mc_responses_event_t)ev, ev == MC_RESPONSES_TEXT_DELTA ? &delta : &res,
                                            NULL, (uint32_t)ev, &type));
        assert_string_equal(type, types[ev]);
        assert_string_equal(s_str(j, "type"), types[ev]);
        assert_true(s_num(j, "sequence_number") == ev);
        switch (ev) {
        case MC_RESPONSES_CREATED:
        case MC_RESPONSES_IN_PROGRESS:
            assert_string_equal(s_str(j, "response.status"), "in_progress");
            assert_int_equal(cJSON_GetArraySize(s_at(j, "response.output")), 0);
            assert_string_equal(s_str(j, "response.usage"), "null");
            break;
        case MC_RESPONSES_ITEM_ADDED:
            assert_string_equal(s_str(j, "item.status"), "in_progress");
            assert_int_equal(cJSON_GetArraySize(s_at(j, "item.content")), 0);
            break;
        case MC_RESPONSES_PART_ADDED: assert_string_equal(s_str(j, "part.text"), ""); break;
        case MC_RESPONSES_TEXT_DELTA:
            assert_string_equal(s_str(j, "delta"), "Hel");
            assert_string_equal(s_str(j, "item_id"), "msg_1");
            assert_true(s_num(j, "output_index") == 0 && s_num(j, "content_index") == 0);
            break;
        case MC_RESPONSES_TEXT_DONE: assert_string_equal(s_str(j, "text"), "Hello!"); break;
        case MC_RESPONSES_PART_DONE: assert_string_equal(s_str(j, "part.text"), "Hello!"); break;
        case MC_RESPONSES_ITEM_DONE: assert_string_equal(s_str(j, "item.content.[0].text"), "Hello!"); break;
        default: assert_true(s_num(j, "response.usage.output_tokens") == 2); break;
        }
        cJSON_Delete(j);
    }
    // A failure: response.failed, the error inside the response.
    const char *type;
    j = s_parse(mc_responses_event_json(&a, MC_RESPONSES_END, &res, "the server stopped", 9, &type));
    assert_string_equal(type, "response.failed");
    assert_string_equal(s_str(j, "response.status"), "failed");
    assert_string_equal(s_str(j, "response.error.message"), "the server stopped");
    assert_string_equal(s_str(j, "response.error.code"), "server_error");
    cJSON_Delete(j);
}

// An answer that is calls: function_call items (after the message when
// there is text), the tools and tool_choice echoed; a call's stream events.
static void test_call_answers(void **state) {
    (void)state;
    mc_toolcall_req_t t = {0};
    char param[64], err[MC_ERR_LEN];
    cJSON *body = cJSON_Parse("{\"tools\":[{\"type\":\"function\",\"name\":\"weather\",\"parameters\":{\"type\":"
                              "\"object\"},\"strict\":true}],\"tool_choice\":{\"type\":\"function\",\"name\":\"weather\"},"
                              "\"parallel_tool_calls\":false}");
    assert_int_equal(mc_toolcall_req_parse_flat(body, &t, param, err), MC_OK);
    cJSON_Delete(body);
    const mc_responses_answer_t a = {"resp_1", "msg_1", 1700000000, "tiny", 0.7f, 0.95f, 0, false, NULL, true, &t};
    const mc_toolcall_t calls[2] = {{"call_0123456789abcdef01234567", "weather", "{\"city\":\"Oslo\"}"},
                                    {"call_fedcba9876543210fedcba98", "weather", "{}"}};
    mc_api_result_t res = {.text = "", .len = 0, .why = MC_FINISH_STOP, .calls = calls, .n_calls = 2};
    cJSON *j = s_parse(mc_responses_json(&a, &res, NULL));
    assert_string_equal(s_str(j, "status"), "completed");
    assert_int_equal(cJSON_GetArraySize(s_at(j, "output")), 2); // no message: no text
    assert_string_equal(s_str(j, "output.[0].type"), "function_call");
    assert_string_equal(s_str(j, "output.[0].id"), "fc_0123456789abcdef01234567");
    assert_string_equal(s_str(j, "output.[0].call_id"), "call_0123456789abcdef01234567");
    assert_string_equal(s_str(j, "output.[0].name"), "weather");
    assert_string_equal(s_str(j, "output.[0].arguments"), "{\"city\":\"Oslo\"}");
    assert_string_equal(s_str(j, "output.[0].status"), "completed");
    assert_string_equal(s_str(j, "output.[1].call_id"), "call_fedcba9876543210fedcba98");
    assert_string_equal(s_str(j, "tool_choice.type"), "function");
    assert_string_equal(s_str(j, "tool_choice.name"), "weather");
    assert_string_equal(s_str(j, "tools.[0].type"), "function");
    assert_string_equal(s_str(j, "tools.[0].name"), "weather");
    assert_string_equal(s_str(j, "tools.[0].parameters.type"), "object");
    assert_true(cJSON_IsTrue(s_at(j, "tools.[0].strict")));
    assert_true(cJSON_IsFalse(s_at(j, "parallel_tool_calls")));
    cJSON_Delete(j);
    // Text before the call: the message first.
    res.text = "Let me look.", res.len = 12, res.n_calls = 1;
    j = s_parse(mc_responses_json(&a, &res, NULL));
    assert_int_equal(cJSON_GetArraySize(s_at(j, "output")), 2);
    assert_string_equal(s_str(j, "output.[0].type"), "message");
    assert_string_equal(s_str(j, "output.[0].content.[0].text"), "Let me look.");
    assert_string_equal(s_str(j, "output.[1].type"), "function_call");
    cJSON_Delete(j);
    // The call's events.
    static const char *const types[] = {"response.output_item.added", "response.function_call_arguments.delta",
                                        "response.function_call_arguments.done", "response.output_item.done"};
    for (int ev = MC_RESPONSES_CALL_ADDED; ev <= MC_RESPONSES_CALL_DONE; ev++) {
        const char *type = NULL;
        j = s_parse(mc_responses_call_event_json(&a, (mc_responses_event_t)ev, 1, &calls[0], "{\"ci", 4, 7, &type));
        const char *want = types[ev - MC_RESPONSES_CALL_ADDED];
        assert_string_equal(type, want);
        assert_string_equal(s_str(j, "type"), want);
        assert_true(s_num(j, "sequence_number") == 7 && s_num(j, "output_index") == 1);
        switch (ev) {
        case MC_RESPONSES_CALL_ADDED:
            assert_string_equal(s_str(j, "item.type"), "function_call");
            assert_string_equal(s_str(j, "item.status"), "in_progress");
            assert_string_equal(s_str(j, "item.arguments"), "");
            assert_string_equal(s_str(j, "item.name"), "weather");
            assert_string_equal(s_str(j, "item.call_id"), "call_0123456789abcdef01234567");
            assert_string_equal(s_str(j, "item.id"), "fc_0123456789abcdef01234567");
            break;
        case MC_RESPONSES_CALL_ARGS_DELTA:
            assert_string_equal(s_str(j, "item_id"), "fc_0123456789abcdef01234567");
            assert_string_equal(s_str(j, "delta"), "{\"ci");
            break;
        case MC_RESPONSES_CALL_ARGS_DONE:
            assert_string_equal(s_str(j, "item_id"), "fc_0123456789abcdef01234567");
            assert_string_equal(s_str(j, "arguments"), "{\"city\":\"Oslo\"}");
            break;
        default:
            assert_string_equal(s_str(j, "item.status"), "completed");
            assert_string_equal(s_str(j, "item.arguments"), "{\"city\":\"Oslo\"}");
            break;
        }
        cJSON_Delete(j);
    }
    // A kept call reads back as its item.
    cJSON *kept = s_parse(mc_responses_call_json(&calls[1]));
    assert_string_equal(s_str(kept, "type"), "function_call");
    assert_string_equal(s_str(kept, "call_id"), "call_fedcba9876543210fedcba98");
    assert_string_equal(s_str(kept, "arguments"), "{}");
    cJSON_Delete(kept);
    mc_toolcall_req_free(&t);
}

static int s_setup(void **state) {
    (void)state;
    s_items = mc_items_new(4, 1024);
    if (!s_items || mc_items_put(s_items, "msg_kept", "An earlier answer.", 18)) return -1;
    // Calls kept as their items, as the server keeps them.
    mc_toolcall_t c1 = {"call_kept1", "f", "{\"a\":1}"}, c2 = {"call_kept2", "f", "{}"};
    char *t1 = mc_responses_call_json(&c1), *t2 = mc_responses_call_json(&c2);
    char id1[MC_RESPONSES_ID_LEN], id2[MC_RESPONSES_ID_LEN];
    mc_responses_call_item_id(&c1, id1), mc_responses_call_item_id(&c2, id2);
    const bool ok = t1 && t2 && !strcmp(id1, "fc_kept1") && !mc_items_put(s_items, id1, t1, strlen(t1)) &&
                    !mc_items_put(s_items, id2, t2, strlen(t2));
    free(t1), free(t2);
    return ok ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_items_destroy(&s_items);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_call_answers),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
