/*
 * test_flags: the table-driven parser: defaults from the rows, each kind of
 * value, the messages of parse.h and of unknown or valueless flags, --help
 * anywhere, the flags seen, and --help text built from the rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"

typedef struct {
    const char *model, *name;
    int threads;
    uint32_t n;
    bool json;
    double x2; // CUSTOM: twice the value
} s_opts_t;

static mc_err_t s_twice(const char *flag, const char *v, void *field, char *err) {
    if (strcmp(v, "1") && strcmp(v, "2")) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is neither 1 nor 2", flag, v);
    *(double *)field = 2.0 * atoi(v);
    return MC_OK;
}

static const mc_flag_t s_t[] = {
    {"--model", "FILE", MC_FLAG_FILE, offsetof(s_opts_t, model), .help = "the model"},
    {"--name", "NAME", MC_FLAG_STRING, offsetof(s_opts_t, name), .help = "a name\nover two lines"},
    {"--threads", "N", MC_FLAG_INT, offsetof(s_opts_t, threads), MC_FLAG_DEF_THREADS, 1, 512, .help = "threads"},
    {"-n", "N", MC_FLAG_U32, offsetof(s_opts_t, n), 64, 1, 65536, .help = "count"},
    {"--json", NULL, MC_FLAG_SWITCH, offsetof(s_opts_t, json), .help = "JSON"},
    {"--x", "V", MC_FLAG_CUSTOM, offsetof(s_opts_t, x2), .parse = s_twice, .help = "1 or 2"},
};
#define S_N (sizeof s_t / sizeof s_t[0])

static mc_err_t s_parse(s_opts_t *o, bool *help, uint64_t *given, char *err, int n, ...) {
    char *argv[16] = {"prog"};
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) argv[i + 1] = va_arg(ap, char *);
    va_end(ap);
    return mc_flags_parse(s_t, S_N, n + 1, argv, o, help, given, err);
}

static void test_parse(void **state) {
    (void)state;
    s_opts_t o = {0};
    mc_flags_init(s_t, S_N, &o);
    assert_int_equal(o.n, 64);
    assert_true(o.threads >= 1 && o.threads <= 8);
    assert_null(o.model);
    bool help;
    uint64_t given;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(s_parse(&o, &help, &given, err, 8, "--model", "m", "-n", "5", "--json", "--x", "2", "--name"),
                     MC_ERR_ARG);
    assert_string_equal(err, "--name needs a value");
    assert_int_equal(s_parse(&o, &help, &given, err, 9, "--model", "m", "-n", "5", "--json", "--x", "2", "--name", ""),
                     MC_OK);
    assert_false(help);
    assert_string_equal(o.model, "m");
    assert_string_equal(o.name, "");
    assert_int_equal(o.n, 5);
    assert_true(o.json);
    assert_true(o.x2 == 4.0);
    assert_int_equal(given, 1u << 0 | 1u << 1 | 1u << 3 | 1u << 4 | 1u << 5);

    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--model", ""), MC_ERR_ARG);
    assert_string_equal(err, "--model needs a file name");
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--threads", "0"), MC_ERR_ARG);
    assert_string_equal(err, "--threads: '0' is not a whole number in 1..512");
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "-n", "+3"), MC_ERR_ARG);
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--x", "3"), MC_ERR_ARG);
    assert_string_equal(err, "--x: '3' is neither 1 nor 2");
    assert_int_equal(s_parse(&o, &help, NULL, err, 1, "--port"), MC_ERR_ARG);
    assert_string_equal(err, "unknown flag '--port' (see --help)");
    assert_int_equal(s_parse(&o, &help, NULL, err, 3, "-n", "2", "-h"), MC_OK);
    assert_true(help);
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--help", "--port"), MC_OK);
    assert_true(help);
}

static void test_usage(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    mc_flags_usage(f, s_t, S_N, 16);
    fclose(f);
    const char *want = "  --model FILE  the model\n"
                       "  --name NAME   a name\n"
                       "                over two lines\n"
                       "  --threads N   threads (default: online CPUs, at most 8; 1..512)\n"
                       "  -n N          count (default 64, 1..65536)\n"
                       "  --json        JSON\n"
                       "  --x V         1 or 2\n"
                       "  --help, -h    this text\n";
    assert_string_equal(text, want);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
