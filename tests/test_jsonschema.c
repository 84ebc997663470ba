/*
 * test_jsonschema: the schema compiler and its automaton. Supported
 * keywords compile, others are refused naming the keyword; for a table of
 * schemas, documents fed byte by byte are accepted exactly when they are
 * valid (and inside the automaton's documented subset of JSON); prefix and
 * suffix text; the limits (whitespace runs, digits, nesting, lengths).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

// The whole document doc through the automaton: every byte taken and the end accepted.
static bool s_accepts(const mc_jsm_t *m, const char *doc) {
    static mc_jsm_state_t a, b; // test-local scratch (large)
    mc_jsm_start(m, &a);
    mc_jsm_state_t *cur = &a, *nx = &b;
    for (const char *p = doc; *p; p++) {
        if (!mc_jsm_step(m, cur, (uint8_t)*p, nx)) return false;
        mc_jsm_state_t *t = cur;
        cur = nx, nx = t;
    }
    return mc_jsm_accepting(m, cur);
}

static bool s_schema_accepts(const char *schema, const char *doc) {
    char err[MC_ERR_LEN];
    mc_jschema_t *s = mc_jschema_compile(schema, strlen(schema), err);
    if (!s) fail_msg("%s: %s", schema, err);
    mc_jsm_t m = {s, NULL, 0, NULL, 0};
    bool ok = s_accepts(&m, doc);
    mc_jschema_destroy(&s);
    return ok;
}

static void test_refused(void **state) {
    (void)state;
    static const struct {
        const char *schema, *needle;
        mc_err_t code;
    } cases[] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", "pattern", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"string\",\"format\":\"date\"}", "format", MC_ERR_UNSUPPORTED},
        {"{\"$ref\":\"#/x\"}", "$ref", MC_ERR_UNSUPPORTED},
        {"{\"oneOf\":[{\"type\":\"string\"}]}", "oneOf", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"number\",\"minimum\":3}", "minimum", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"allOf\":[]}}}", "allOf", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"array\",\"items\":[{\"type\":\"string\"}]}", "tuple", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"date\"}", "date", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"string\",\"anyOf\":[{\"type\":\"null\"}]}", "anyOf", MC_ERR_UNSUPPORTED},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "minItems", MC_ERR_ARG},
        {"{\"type\":\"string\",\"minLength\":-1}", "minLength", MC_ERR_ARG},
        {"{\"type\":\"object\",\"required\":[\"x\"],\"additionalProperties\":false}", "'x'", MC_ERR_ARG},
        {"{\"enum\":[]}", "enum", MC_ERR_ARG},
        {"{\"type\":\"string\",\"enum\":[1,2]}", "enum", MC_ERR_ARG},
        {"false", "false", MC_ERR_ARG},
        {"{\"type\":", "JSON", MC_ERR_FORMAT},
        {"{} x", "JSON", MC_ERR_FORMAT},
        {"[1]", "object", MC_ERR_ARG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[MC_ERR_LEN] = "";
        mc_jschema_t *s = mc_jschema_compile(cases[i].schema, strlen(cases[i].schema), err);
        if (s) fail_msg("accepted %s", cases[i].schema);
        if (!strstr(err, cases[i].needle)) fail_msg("%s: message '%s' lacks '%s'", cases[i].schema, err, cases[i].needle);
        assert_int_equal(mc_err_code(err, MC_OK), cases[i].code);
    }
    // Deep nesting is refused at compile time.
    char deep[1024] = "";
    for (int i = 0; i < 30; i++) strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "{\"type\":\"null\"}");
    for (int i = 0; i < 30; i++) strcat(deep, "}");
    char err[MC_ERR_LEN];
    assert_null(mc_jschema_compile(deep, strlen(deep), err));
    assert_non_null(strstr(err, "nests"));
}

typedef struct {
    const char *doc;
    bool ok;
} s_doc_t;

static void s_table(const char *schema, const s_doc_t *docs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s_schema_accepts(schema, docs[i].doc) != docs[i].ok)
            fail_msg("%s: %s should be %s", schema, docs[i].doc, docs[i].ok ? "accepted" : "refused");
}
#define S_TABLE(schema, ...)                                                                                           \
    do {                                                                                                               \
        static const s_doc_t d_[] = {__VA_ARGS__};                                                                     \
        s_table(schema, d_, sizeof d_ / sizeof *d_);                                                                   \
    } while (0)

static void test_scalars(void **state) {
    (void)state;
    S_TABLE("{\"type\":\"string\"}", {"\"\"", true}, {"\"abc\"", true}, {"\"a\\\"b\\\\c\\n\\u00e9\"", true},
            {"\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", true}, {"\"abc", false}, {"abc", false}, {"\"a\"x", false},
            {"\"\\x\"", false}, {"\"\\ud800\"", false}, {"\"\\u12\"", false}, {"\"\xc0\x80\"", false},
            {"\"\xed\xa0\x80\"", false}, {"\"\xf4\x90\x80\x80\"", false}, {"\"\xe2\x82\"", false}, {"\"a\nb\"", false},
            {" \"a\"", false}, {"\"a\" ", false}, {"", false});
    S_TABLE("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", {"\"ab\"", true}, {"\"abc\"", true},
            {"\"\xc3\xa9\xc3\xa9\"", true}, {"\"a\\nb\"", true}, {"\"a\"", false}, {"\"abcd\"", false},
            {"\"\xc3\xa9\"", false});
    S_TABLE("{\"type\":\"number\"}", {"0", true}, {"-0", true}, {"12.5", true}, {"-3e10", true}, {"1.0E+3", true},
            {"6.02e-23", true}, {"01", false}, {"1.", false}, {".5", false}, {"-", false}, {"1e", false}, {"+1", false},
            {"1234567890123456", true}, {"12345678901234567", false}, {"1e1234", false}, {"NaN", false});
    S_TABLE("{\"type\":\"integer\"}", {"0", true}, {"-42", true}, {"4.0", false}, {"1e3", false}, {"00", false});
    S_TABLE("{\"type\":\"boolean\"}", {"true", true}, {"false", true}, {"tru", false}, {"truex", false}, {"null", false});
    S_TABLE("{\"type\":\"null\"}", {"null", true}, {"nul", false}, {"Null", false});
    S_TABLE("{\"enum\":[\"red\",\"green\",1,12,null,{\"a\":[1,2]}]}", {"\"red\"", true}, {"\"green\"", true}, {"1", true},
            {"12", true}, {"null", true}, {"{\"a\":[1,2]}", true}, {"\"blue\"", false}, {"123", false},
            {"{\"a\": [1,2]}", false}, {"\"re\"", false});
    S_TABLE("{\"const\":\"x\"}", {"\"x\"", true}, {"\"y\"", false});
    S_TABLE("{\"type\":\"string\",\"enum\":[\"a\",2]}", {"\"a\"", true}, {"2", false});
    S_TABLE("{\"type\":[\"string\",\"null\"]}", {"\"a\"", true}, {"null", true}, {"1", false});
    S_TABLE("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":1}]}", {"5", true}, {"\"x\"", true},
            {"\"xy\"", false}, {"5.5", false});
    S_TABLE("{}", {"1", true}, {"\"s\"", true}, {"[1,{\"a\":null}]", true}, {"{\"k\":[true,false]}", true}, {"x", false});
}

static void test_objects(void **state) {
    (void)state;
    const char *strict = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
                         "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":2}},"
                         "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}";
    S_TABLE(strict, {"{\"name\":\"a\",\"age\":3}", true}, {"{\"age\":3,\"name\":\"a\"}", true},
            {"{\"name\":\"a\",\"age\":3,\"tags\":[\"x\",\"y\"]}", true}, {"{ \"name\" : \"a\" ,\n\t\"age\": 3 }", true},
            {"{\"name\":\"a\"}", false}, {"{\"name\":\"a\",\"age\":3,\"x\":1}", false},
            {"{\"name\":\"a\",\"name\":\"b\",\"age\":3}", false}, {"{\"name\":\"a\",\"age\":3,\"tags\":[\"x\",\"y\",\"z\"]}", false},
            {"{\"name\":\"a\",\"age\":3,}", false}, {"{\"name\":\"a\",\"age\":\"3\"}", false}, {"{\"nam\":\"a\",\"age\":3}", false},
            {"{\"name\":1,\"age\":3}", false}, {"{\"name\":\"a\",         \"age\":3}", false} /* a 9-byte run */);
    S_TABLE("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", {"{}", true}, {"{\"a\":1}", true},
            {"{\"b\":\"x\",\"a\":2}", true}, {"{\"a\":\"x\"}", false}, {"{\"a\":1,\"a\":2}", false}, {"{\"ab\":[]}", true},
            {"{\"b\\n\":1}", false});
    S_TABLE("{\"type\":\"object\",\"required\":[\"id\"]}", {"{\"id\":[1]}", true}, {"{\"x\":1}", false}, {"{}", false});
    S_TABLE("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"number\"}}", {"{\"x\":1,\"y\":2.5}", true},
            {"{\"x\":\"1\"}", false});
    S_TABLE("{\"type\":\"object\",\"properties\":{\"a\\\"b\":{\"type\":\"null\"}},\"additionalProperties\":false}",
            {"{\"a\\\"b\":null}", true}, {"{\"ab\":null}", false});
    S_TABLE("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}", {"[1]", true},
            {"[1, 2,3]", true}, {"[]", false}, {"[1,2,3,4]", false}, {"[1,]", false}, {"[\"a\"]", false});
    S_TABLE("{\"type\":\"array\",\"maxItems\":0}", {"[]", true}, {"[1]", false});
    // anyOf of two objects sharing their first member: both followed until they part.
    S_TABLE("{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"k\":{\"const\":1},\"a\":{\"type\":\"string\"}},"
            "\"required\":[\"k\",\"a\"],\"additionalProperties\":false},"
            "{\"type\":\"object\",\"properties\":{\"k\":{\"const\":1},\"b\":{\"type\":\"number\"}},"
            "\"required\":[\"k\",\"b\"],\"additionalProperties\":false}]}",
            {"{\"k\":1,\"a\":\"x\"}", true}, {"{\"k\":1,\"b\":2}", true}, {"{\"k\":1,\"a\":2}", false},
            {"{\"k\":1,\"b\":\"x\"}", false}, {"{\"k\":1}", false});
    // json_object mode.
    char err[MC_ERR_LEN];
    mc_jschema_t *s = mc_jschema_any_object(err);
    assert_non_null(s);
    mc_jsm_t m = {s, NULL, 0, NULL, 0};
    assert_true(s_accepts(&m, "{}"));
    assert_true(s_accepts(&m, "{\"a\":[1,{\"b\":\"c\"},null,true],\"d\":-1.5e3}"));
    assert_false(s_accepts(&m, "[]"));
    assert_false(s_accepts(&m, "\"x\""));
    // Values with no schema stop opening containers at the depth limit.
    char deep[256] = "{\"a\":";
    for (int i = 0; i < MC_JS_MAX_DEPTH; i++) strcat(deep, "[");
    mc_jsm_state_t *x = malloc(sizeof *x), *y = malloc(sizeof *y);
    mc_jsm_start(&m, x);
    size_t i = 0, len = strlen(deep);
    for (; i < len; i++) {
        if (!mc_jsm_step(&m, x, (uint8_t)deep[i], y)) break;
        mc_jsm_copy(x, y);
    }
    assert_true(i < len);
    // ... but a scalar still fits there, so the document can always be finished.
    assert_true(mc_jsm_step(&m, x, '1', y));
    free(x), free(y);
    mc_jschema_destroy(&s);
}

static void test_prefix_suffix(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"],"
                         "\"additionalProperties\":false}";
    mc_jschema_t *s = mc_jschema_compile(schema, strlen(schema), err);
    assert_non_null(s);
    const char *pre = "<tool_call>\n", *suf = "\n</tool_call>";
    mc_jsm_t m = {s, (const uint8_t *)pre, strlen(pre), (const uint8_t *)suf, strlen(suf)};
    assert_true(s_accepts(&m, "<tool_call>\n{\"n\":5}\n</tool_call>"));
    assert_false(s_accepts(&m, "<tool_call>\n{\"n\":5}\n</tool_call"));
    assert_false(s_accepts(&m, "<tool_call>{\"n\":5}\n</tool_call>"));
    assert_false(s_accepts(&m, "{\"n\":5}"));
    // Done after the suffix: nothing may follow.
    mc_jsm_state_t *x = malloc(sizeof *x), *y = malloc(sizeof *y);
    mc_jsm_start(&m, x);
    const char *doc = "<tool_call>\n{\"n\":5}\n</tool_call>";
    for (const char *p = doc; *p; p++) {
        assert_false(mc_jsm_done(x));
        assert_true(mc_jsm_step(&m, x, (uint8_t)*p, y));
        mc_jsm_copy(x, y);
    }
    assert_true(mc_jsm_done(x));
    for (int c = 0; c < 256; c++) assert_false(mc_jsm_step(&m, x, (uint8_t)c, y));
    // A number before a suffix ends where the suffix begins.
    const char *num = "{\"type\":\"number\"}";
    mc_jschema_t *sn = mc_jschema_compile(num, strlen(num), err);
    mc_jsm_t mn = {sn, NULL, 0, (const uint8_t *)"]", 1};
    assert_true(s_accepts(&mn, "12.5]"));
    assert_false(s_accepts(&mn, "12.5"));
    free(x), free(y);
    mc_jschema_destroy(&sn);
    mc_jschema_destroy(&s);
    mc_jschema_destroy(&s); // safe twice
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_prefix_suffix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
