/*
 * test_flags: the table-driven parser: defaults from the rows (or the
 * options' own), each kind of value, positional arguments, the messages of
 * parse.h and of unknown or valueless flags and arguments too many, --help
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
    uint64_t seed;
    float temp;
    uint32_t steps;
    const char *dir, *out; // positional
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
    {"--seed", "S", MC_FLAG_U64, offsetof(s_opts_t, seed), .help = "seed"},
    {"DIR", NULL, MC_FLAG_ARG, offsetof(s_opts_t, dir), .help = "a folder"},
    {"--temp", "T", MC_FLAG_F32, offsetof(s_opts_t, temp), .help = "temperature", .flo = 0, .fhi = 2},
    {"--steps", "N", MC_FLAG_U32, offsetof(s_opts_t, steps), MC_FLAG_DEF_TEXT, 1, 99, .help = "steps (default: all)"},
    {"OUT", NULL, MC_FLAG_ARG, offsetof(s_opts_t, out), .help = "the output"},
};
#define S_N (sizeof s_t / sizeof s_t[0])

static mc_err_t s_parse(s_opts_t *o, bool *help, uint64_t *given, char *err, int n, ...) {
    char *argv[24] = {"prog"};
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

// Numbers whose default is the options' own, seeds, floats, positional arguments.
static void test_kinds(void **state) {
    (void)state;
    s_opts_t o = {.seed = 7, .temp = 0.5f, .steps = 0};
    mc_flags_init(s_t, S_N, &o);
    assert_int_equal(o.seed, 7);      // U64: the field's own default
    assert_true(o.temp == 0.5f);      // F32: likewise
    assert_int_equal(o.steps, 0);     // MC_FLAG_DEF_TEXT: left alone
    bool help;
    uint64_t given;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(s_parse(&o, &help, &given, err, 8, "d", "--seed", "18446744073709551615", "-", "--temp", "1.25",
                             "--steps", "99"),
                     MC_OK);
    assert_string_equal(o.dir, "d");
    assert_string_equal(o.out, "-"); // a lone '-' is an argument
    assert_true(o.seed == UINT64_MAX);
    assert_true(o.temp == 1.25f);
    assert_int_equal(o.steps, 99);
    assert_int_equal(given, 1u << 6 | 1u << 7 | 1u << 8 | 1u << 9 | 1u << 10);
    assert_int_equal(s_parse(&o, &help, NULL, err, 3, "a", "b", "c"), MC_ERR_ARG);
    assert_string_equal(err, "unexpected argument 'c' (see --help)");
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--temp", "2.5"), MC_ERR_ARG);
    assert_non_null(strstr(err, "--temp"));
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--seed", "-1"), MC_ERR_ARG);
    assert_int_equal(s_parse(&o, &help, NULL, err, 2, "--steps", "0"), MC_ERR_ARG);
    assert_string_equal(err, "--steps: '0' is not a whole number in 1..99");
    // A positional row's name is no flag.
    assert_int_equal(s_parse(&o, &help, NULL, err, 1, "DIR"), MC_OK);
    assert_int_equal(s_parse(&o, &help, NULL, err, 1, "-DIR"), MC_ERR_ARG);
    assert_string_equal(err, "unknown flag '-DIR' (see --help)");
}

static void test_usage(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    const s_opts_t d = {.seed = 7, .temp = 0.5f};
    mc_flags_usage(f, s_t, S_N, 16, &d);
    fclose(f);
    const char *want = "  --model FILE  the model\n"
                       "  --name NAME   a name\n"
                       "                over two lines\n"
                       "  --threads N   threads (default: online CPUs, at most 8; 1..512)\n"
                       "  -n N          count (default 64, 1..65536)\n"
                       "  --json        JSON\n"
                       "  --x V         1 or 2\n"
                       "  --seed S      seed (default 7, 0..18446744073709551615)\n"
                       "  DIR           a folder\n"
                       "  --temp T      temperature (default 0.5, 0..2)\n"
                       "  --steps N     steps (default: all) (1..99)\n"
                       "  OUT           the output\n"
                       "  --help, -h    this text\n";
    assert_string_equal(text, want);
    free(text);
    // Without the defaults the own ones are left out, the bounds stay.
    f = open_memstream(&text, &len);
    assert_non_null(f);
    mc_flags_usage(f, s_t, S_N, 16, NULL);
    fclose(f);
    assert_non_null(strstr(text, "  --temp T      temperature (0..2)\n"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
