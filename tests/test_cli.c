/*
 * test_cli: the moe-coordinator binary as tools and users call it: --help,
 * --tokenize, --token-ids with --dump-logits and greedy ids against the
 * fixtures, generation on a generated model, --profile (moe-plan's
 * coordinator entry), and one clear stderr line plus a non-zero exit for
 * every kind of bad input; and in-process, mc_cli_parse: the flags' table's
 * defaults, the command lines of the docs and scripts, the modes they make,
 * and which flags go together; and the codes a session that cannot start
 * hands back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"
#include "mkmodel.h"
#include "session.h"
#include "testutil.h"

static char s_dir[256];
static char s_model[512]; // generated Q8_0 model

typedef struct {
    int status;
    char *out;
    char *err;
} s_result_t;

// Run moe-coordinator with args (already shell-quoted), capturing output.
// A cross build sets MC_RUN_PREFIX to its emulator (shell words, e.g.
// "qemu-aarch64"), which the binary then runs under.
static s_result_t s_run(const char *args) {
    const char *bin = getenv("MC_BIN_DIR"), *prefix = getenv("MC_RUN_PREFIX");
    char cmd[4096], out[600], errp[600];
    snprintf(out, sizeof out, "%s/stdout", s_dir);
    snprintf(errp, sizeof errp, "%s/stderr", s_dir);
    snprintf(cmd, sizeof cmd, "%s '%s/moe-coordinator' %s >'%s' 2>'%s' </dev/null", prefix ? prefix : "",
             bin ? bin : ".", args, out, errp);
    s_result_t r;
    int st = system(cmd);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = (char *)mc_test_read_file(out, NULL);
    r.err = (char *)mc_test_read_file(errp, NULL);
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

static void s_free(s_result_t *r) {
    free(r->out);
    free(r->err);
}

static int s_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// A failing run: non-zero exit, exactly one stderr line containing `want`.
static void s_expect_error(const char *args, const char *want) {
    s_result_t r = s_run(args);
    if (r.status == 0 || s_lines(r.err) != 1 || !strstr(r.err, want))
        fail_msg("args [%s]: status %d, stderr '%s' (wanted one line with '%s')", args, r.status, r.err, want);
    s_free(&r);
}

static int s_setup(void **state) {
    (void)state;
    if (!mc_test_tmpdir(s_dir, sizeof s_dir)) return -1;
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q8_0;
    p.ctx_len = 64;
    snprintf(s_model, sizeof s_model, "%s/m.gguf", s_dir);
    return mc_mkmodel_write(&p, s_model, NULL) == MC_OK ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static void test_help(void **state) {
    (void)state;
    s_result_t r = s_run("--help");
    assert_int_equal(r.status, 0);
    static const char *const flags[] = {"--model", "--prompt", "-n N", "--temp", "--top-k", "--top-p", "--min-p",
                                        "--repeat-penalty", "--seed", "--threads", "--ctx", "--tokenize ",
                                        "--tokenize-file", "--token-ids", "--dump-logits", "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strstr(r.out, flags[i])) fail_msg("--help does not mention %s", flags[i]);
    assert_non_null(strstr(r.out, "default 4096"));
    s_free(&r);
}

static void test_bad_usage(void **state) {
    (void)state;
    char a[4096];
    s_expect_error("--frobnicate", "unknown flag '--frobnicate'");
    snprintf(a, sizeof a, "--model '%s' --prompt hi -n abc", s_model);
    s_expect_error(a, "-n: 'abc'");
    snprintf(a, sizeof a, "--model '%s' --prompt hi --temp -1", s_model);
    s_expect_error(a, "--temp");
    snprintf(a, sizeof a, "--model '%s' --prompt hi --top-p 2", s_model);
    s_expect_error(a, "--top-p");
    snprintf(a, sizeof a, "--model '%s' --prompt", s_model);
    s_expect_error(a, "--prompt needs a value");
    s_expect_error("--prompt hi", "--model FILE is required");
    snprintf(a, sizeof a, "--model '%s' --token-ids 1,x,3", s_model);
    s_expect_error(a, "--token-ids");
    s_expect_error("--model /nonexistent.gguf --prompt hi", "/nonexistent.gguf");
    snprintf(a, sizeof a, "--model '%s/stderr' --prompt hi", s_dir); // not a GGUF file
    s_expect_error(a, "stderr");
    snprintf(a, sizeof a, "--model '%s' --token-ids 1,999999", s_model);
    s_expect_error(a, "token id 999999 is outside the vocabulary");
    snprintf(a, sizeof a, "--model '%s' --ctx 65 --prompt hi", s_model);
    s_expect_error(a, "context length 65 out of range");
    snprintf(a, sizeof a, "--model '%s' --ctx 4 --prompt 'a long prompt that has more than four tokens'", s_model);
    s_expect_error(a, "longer than the context");
}

static void test_generate(void **state) {
    (void)state;
    char a[4096];
    snprintf(a, sizeof a, "--model '%s' --prompt 'hello there' -n 12 --seed 5 --threads 2", s_model);
    s_result_t r1 = s_run(a), r2 = s_run(a);
    assert_int_equal(r1.status, 0);
    assert_string_equal(r1.out, r2.out); // same seed, same text
    assert_non_null(strstr(r1.err, "generation:"));
    assert_non_null(strstr(r1.err, "tok/s"));
    s_free(&r1);
    s_free(&r2);
    // Speculating: the same text, greedy and seeded.
    const char *const modes[] = {"--temp 0", "--seed 5 --temp 0.8"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "--model '%s' --prompt 'hello there' -n 40 %s --threads 2", s_model, modes[i]);
        r1 = s_run(a);
        snprintf(a, sizeof a, "--model '%s' --prompt 'hello there' -n 40 %s --threads 2 --speculate 6", s_model,
                 modes[i]);
        r2 = s_run(a);
        assert_int_equal(r1.status, 0);
        assert_int_equal(r2.status, 0);
        assert_string_equal(r1.out, r2.out);
        s_free(&r1);
        s_free(&r2);
    }
}

static void test_tokenize_fixture(void **state) {
    (void)state;
    char path[512], a[4096];
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof path)) skip();
    snprintf(a, sizeof a, "--model '%s' --tokenize 'Hello world'", path);
    s_result_t r = s_run(a);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "[22557,1526]\n");
    s_free(&r);
    snprintf(a, sizeof a, "--model '%s' --tokenize ''", path);
    r = s_run(a);
    assert_string_equal(r.out, "[]\n");
    s_free(&r);
    char file[600];
    snprintf(file, sizeof file, "%s/text.txt", s_dir);
    FILE *f = fopen(file, "wb");
    fputs("Hello world", f);
    fclose(f);
    snprintf(a, sizeof a, "--model '%s' --tokenize-file '%s'", path, file);
    r = s_run(a);
    assert_string_equal(r.out, "[22557,1526]\n");
    s_free(&r);
}

static void test_ids_dump_and_greedy(void **state) {
    (void)state;
    char model[512], idsp[512], genp[512], logp[512], a[4096];
    if (!mc_test_fixture("tiny-f32.gguf", model, sizeof model)) skip();
    mc_test_fixture("golden/tiny-f32/p0_fox.ids.txt", idsp, sizeof idsp);
    mc_test_fixture("golden/tiny-f32/p0_fox.gen.txt", genp, sizeof genp);
    mc_test_fixture("golden/tiny-f32/p0_fox.logits.f32", logp, sizeof logp);
    char *ids = (char *)mc_test_read_file(idsp, NULL), *gen = (char *)mc_test_read_file(genp, NULL);
    assert_non_null(ids);
    assert_non_null(gen);
    // Files hold one id per line: make comma-separated lists.
    for (char *p = ids; *p; p++) if (*p == '\n') *p = ',';
    for (char *p = gen; *p; p++) if (*p == '\n') *p = ',';
    size_t l = strlen(ids);
    while (l && ids[l - 1] == ',') ids[--l] = 0;
    l = strlen(gen);
    while (l && gen[l - 1] == ',') gen[--l] = 0;
    char dump[600];
    snprintf(dump, sizeof dump, "%s/logits.f32", s_dir);
    snprintf(a, sizeof a, "--model '%s' --token-ids %s --dump-logits '%s' -n 16 --temp 0 --threads 2", model, ids, dump);
    s_result_t r = s_run(a);
    assert_int_equal(r.status, 0);
    // Greedy ids are the last line of stdout.
    char *last = r.out + strlen(r.out);
    while (last > r.out && last[-1] == '\n') *--last = 0;
    char *nl = strrchr(r.out, '\n');
    assert_string_equal(nl ? nl + 1 : r.out, gen);
    size_t n_dump = 0, n_ref = 0;
    float *x = (float *)mc_test_read_file(dump, &n_dump), *y = (float *)mc_test_read_file(logp, &n_ref);
    assert_int_equal(n_dump, n_ref);
    for (size_t i = 0; i < n_ref / 4; i++) assert_true(fabsf(x[i] - y[i]) <= 1e-3f);
    s_free(&r);
    // --kv-type f16: other logits (the cache rounds), within 5e-3 of the
    // reference (measured 1.4e-3), and the same greedy ids.
    snprintf(a, sizeof a, "--model '%s' --token-ids %s --dump-logits '%s' -n 16 --temp 0 --threads 2 --kv-type f16",
             model, ids, dump);
    r = s_run(a);
    assert_int_equal(r.status, 0);
    last = r.out + strlen(r.out);
    while (last > r.out && last[-1] == '\n') *--last = 0;
    nl = strrchr(r.out, '\n');
    assert_string_equal(nl ? nl + 1 : r.out, gen);
    float *h = (float *)mc_test_read_file(dump, &n_dump);
    assert_int_equal(n_dump, n_ref);
    assert_memory_not_equal(h, x, n_ref);
    for (size_t i = 0; i < n_ref / 4; i++) assert_true(fabsf(h[i] - y[i]) <= 5e-3f);
    free(h), free(x), free(y), free(ids), free(gen);
    s_free(&r);
}

// --profile: the machine's profile plus the coordinator's work per layer
// and for the head, the coordinator entry of moe-plan's machines file.
static void test_profile(void **state) {
    (void)state;
    char a[4096];
    snprintf(a, sizeof a, "--model '%s' --profile --threads 1 --name desk", s_model);
    s_result_t r = s_run(a);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    static const char *const want[] = {"# moe-coordinator --profile of ", "- name: desk\n", "  memory_mb: ",
                                       "  threads: 1\n", "  experts:", "      ms: [[1, ", "  layer_ms_1: ",
                                       "  head_ms_1: ", "  layer_ms_8: ", "  head_ms_8: ", "  local_scale: ",
                                       "  disk_read_mb_s: ", "  disk_latency_ms: "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.out, want[i])) fail_msg("no '%s' in:\n%s", want[i], r.out);
    s_free(&r);
    snprintf(a, sizeof a, "--model '%s' --profile --prompt hi", s_model);
    s_expect_error(a, "only --threads and --name go with it");
    snprintf(a, sizeof a, "--model '%s' --prompt hi --name desk", s_model);
    s_expect_error(a, "--name goes with --profile");
    snprintf(a, sizeof a, "--model '%s' --profile --chat", s_model);
    s_expect_error(a, "exclude each other");
    s_expect_error("--profile", "--model FILE is required");
}

// mc_cli_parse of the words of line (split at spaces) into *o, freshly
// initialised; its code, with the message in err.
static mc_err_t s_parse(const char *line, mc_cli_opts_t *o, char *err) {
    static char buf[1024];
    char *argv[64] = {"moe-coordinator"};
    int argc = 1;
    snprintf(buf, sizeof buf, "%s", line);
    for (char *w = strtok(buf, " "); w && argc < 64; w = strtok(NULL, " ")) argv[argc++] = w;
    mc_cli_opts_init(o);
    return mc_cli_parse(argc, argv, o, err);
}

static void s_parse_ok(const char *line, mc_cli_opts_t *o) {
    char err[MC_ERR_LEN] = "";
    if (s_parse(line, o, err) != MC_OK) fail_msg("[%s]: %s", line, err);
}

static void s_parse_fails(const char *line, const char *want) {
    mc_cli_opts_t o;
    char err[MC_ERR_LEN] = "";
    if (s_parse(line, &o, err) != MC_ERR_ARG || !strstr(err, want) || strchr(err, '\n'))
        fail_msg("[%s]: '%s' (wanted one line with '%s')", line, err, want);
    // Untouched on failure: still as initialised.
    assert_null(o.ids);
    assert_int_equal(o.mode, MC_CLI_MODE_GENERATE);
    assert_int_equal(o.n_predict, -1);
    mc_cli_opts_free(&o);
}

static void test_parse_defaults(void **state) {
    (void)state;
    mc_cli_opts_t o;
    mc_cli_opts_init(&o);
    const mc_sampler_params_t d = mc_sampler_params_default();
    assert_memory_equal(&o.sampling, &d, sizeof d);
    assert_int_equal(o.port, 8080);
    assert_int_equal(o.parallel, 4);
    assert_int_equal(o.demo_nodes, 2);
    assert_int_equal(o.n_predict, -1);
    assert_true(o.threads >= 1 && o.threads <= 8);
    assert_string_equal(o.host, "127.0.0.1");
    s_parse_ok("--model m.gguf --help --frobnicate", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_HELP);
}

// Command lines as README.md, docs/, deploy/ and the tests give them.
static void test_parse_modes(void **state) {
    (void)state;
    mc_cli_opts_t o;
    s_parse_ok("--model m.gguf --prompt hi -n 12 --seed 5 --threads 2 --temp 0 --top-k 7 --top-p 0.5 --min-p 0.1 "
               "--repeat-penalty 1.1 --ctx 64",
               &o);
    assert_int_equal(o.mode, MC_CLI_MODE_GENERATE);
    assert_string_equal(o.model, "m.gguf");
    assert_string_equal(o.prompt, "hi");
    assert_int_equal(o.n_predict, 12);
    assert_true(o.seed_given);
    assert_int_equal(o.sampling.seed, 5);
    assert_int_equal(o.threads, 2);
    assert_true(o.sampling.temp == 0.0f);
    assert_int_equal(o.sampling.top_k, 7);
    assert_true(o.sampling.top_p == 0.5f && o.sampling.min_p == 0.1f && o.sampling.repeat_penalty == 1.1f);
    assert_int_equal(o.ctx, 64);
    s_parse_ok("--model m.gguf --prompt hi", &o);
    assert_int_equal(o.kv_type, MC_DTYPE_F32);
    assert_int_equal(o.mem_limit_mb, 0);
    assert_int_equal(o.mem_prefetch, -1);
    mc_cli_opts_free(&o);
    assert_null(o.chat_format);
    mc_cli_opts_t cf;
    s_parse_ok("--model m.gguf --serve --chat-format tulu", &cf);
    assert_non_null(cf.chat_format);
    mc_cli_opts_free(&cf);
    s_parse_ok("--model m.gguf --prompt hi --kv-type f16", &o);
    assert_int_equal(o.kv_type, MC_DTYPE_F16);
    mc_cli_opts_free(&o);
    s_parse_ok("--model m.gguf --prompt hi --mem-limit 6000 --mem-prefetch router", &o);
    assert_int_equal(o.mem_limit_mb, 6000);
    assert_int_equal(o.mem_prefetch, MC_STORE_PRED_ROUTER);
    assert_int_equal(o.n_predict, 128);
    assert_false(o.seed_given);

    s_parse_ok("--model m.gguf --token-ids 1,415,2936 --dump-logits l.bin", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_IDS);
    assert_int_equal(o.n_ids, 3);
    assert_int_equal(o.ids[2], 2936);
    assert_int_equal(o.n_predict, 0);
    assert_string_equal(o.dump_logits, "l.bin");
    // A second parse into the same options frees the first ids.
    char err[MC_ERR_LEN];
    char *argv[] = {"moe-coordinator", "--model", "m", "--token-ids", "9"};
    assert_int_equal(mc_cli_parse(5, argv, &o, err), MC_OK);
    assert_int_equal(o.n_ids, 1);
    mc_cli_opts_free(&o);

    s_parse_ok("--model m.gguf --tokenize-file t.txt", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_TOKENIZE);
    s_parse_ok("--cluster c.yaml --serve --host 0.0.0.0 --port 0 --parallel 8 --api-key KEY --web w", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_SERVE);
    assert_null(o.model);
    assert_string_equal(o.host, "0.0.0.0");
    assert_int_equal(o.port, 0);
    assert_int_equal(o.parallel, 8);
    assert_string_equal(o.api_key, "KEY");
    assert_int_equal(o.n_predict, 0);
    // Speculation: on by default through a cluster (or the demo's), off on one machine, as given when given.
    assert_int_equal(o.speculate, MC_CLI_SPECULATE_CLUSTER);
    s_parse_ok("--cluster c.yaml --prompt a --speculate 0", &o);
    assert_int_equal(o.speculate, 0);
    s_parse_ok("--demo --speculate 3", &o);
    assert_int_equal(o.speculate, 3);
    s_parse_ok("--demo", &o);
    assert_int_equal(o.speculate, MC_CLI_SPECULATE_CLUSTER);
    s_parse_ok("--model m.gguf --prompt a", &o);
    assert_int_equal(o.speculate, 0);
    s_parse_ok("--model m.gguf --chat --system be-brief --safe-prompt", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_CHAT);
    assert_true(o.safe_prompt);
    s_parse_ok("--demo", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_GENERATE);
    assert_int_equal(o.n_predict, 32);
    assert_int_equal(o.demo_nodes, 2);
    s_parse_ok("--demo --serve --nodes 3 --stats-json s.json", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_SERVE);
    assert_int_equal(o.demo_nodes, 3);
    s_parse_ok("--model m.gguf --profile-routing --prompt-file p.txt --routing-stats r.json", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_PROFILE_ROUTING);
    s_parse_ok("--model m.gguf --profile --threads 1 --name desk", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_PROFILE);
    assert_string_equal(o.name, "desk");
    s_parse_ok("--discover", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_DISCOVER);
    assert_int_equal(o.discover_timeout, 3);
    s_parse_ok("--discover --discover-timeout 10", &o);
    assert_int_equal(o.mode, MC_CLI_MODE_DISCOVER);
    assert_int_equal(o.discover_timeout, 10);

    // --api-key-file: the first line of the file.
    char path[600], line[700];
    snprintf(path, sizeof path, "%s/key", s_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("s3cret\nmore\n", f);
    fclose(f);
    snprintf(line, sizeof line, "--model m.gguf --serve --api-key-file %s", path);
    s_parse_ok(line, &o);
    assert_string_equal(o.api_key, "s3cret");
}

static void test_parse_errors(void **state) {
    (void)state;
    s_parse_fails("--frobnicate", "unknown flag '--frobnicate' (see --help)");
    s_parse_fails("--model m --prompt hi stray", "unexpected argument 'stray'");
    s_parse_fails("--model m --prompt hi -n -1", "-n: '-1' is not a whole number in 0..2147483647");
    s_parse_fails("--model m --prompt hi --temp 101", "--temp");
    s_parse_fails("--model m --prompt hi --seed x", "--seed");
    s_parse_fails("--model m --prompt hi --port 65536", "--port: '65536' is not a whole number in 0..65535");
    s_parse_fails("--model m --serve --parallel 0", "--parallel");
    s_parse_fails("--model m --prompt", "--prompt needs a value");
    s_parse_fails("--prompt hi", "--model FILE is required");
    s_parse_fails("--model m", "nothing to do");
    s_parse_fails("--model m --chat --serve", "exclude each other");
    s_parse_fails("--model m --prompt a --tokenize b", "exclude each other");
    s_parse_fails("--model m --chat --prompt a", "take their text elsewhere");
    s_parse_fails("--model m --prompt a --nodes 3", "--nodes goes with --demo");
    s_parse_fails("--demo --model m", "--demo makes its own model");
    s_parse_fails("--model m --prompt a --stats-json s", "--stats-json needs --cluster or --demo");
    s_parse_fails("--model m --prompt a --dump-logits l", "--dump-logits needs --token-ids");
    s_parse_fails("--model m --token-ids 1,x", "--token-ids: '1,x' is not a comma-separated list of ids");
    s_parse_fails("--model m --serve --api-key k --api-key-file f", "--api-key and --api-key-file exclude each other");
    s_parse_fails("--model m --serve --api-key-file /nonexistent/key", "--api-key-file: /nonexistent/key");
    s_parse_fails("--model m --profile-routing --prompt-file p", "--profile-routing needs");
    s_parse_fails("--model m --prompt a --prompt-file p", "--prompt-file goes with --profile-routing");
    s_parse_fails("--model m --prompt a --kv-type q8_0", "--kv-type: 'q8_0' is not f32 or f16");
    s_parse_fails("--model m --prompt a --mem-prefetch router", "--mem-prefetch goes with --mem-limit");
    s_parse_fails("--model m --serve --chat-format llama3",
                  "--chat-format: 'llama3' is not a chat format (mistral-v1, mistral-v3, chatml, qwen3, tulu, "
                  "deepseek-v2, deepseek-v3, glm4, gpt-oss)");
    s_parse_fails("--model m --prompt a --mem-limit 100 --mem-prefetch soon",
                  "--mem-prefetch: 'soon' is not router, transitions or none");
    s_parse_fails("--model m --prompt a --mem-limit 16777217", "--mem-limit");
    s_parse_fails("--discover --model m", "--discover lists the announced nodes and exits: only --discover-timeout goes "
                                          "with it, not --model");
    s_parse_fails("--discover --serve", "not --serve");
    s_parse_fails("--model m --serve --discover-timeout 5", "--discover-timeout goes with --discover");
    s_parse_fails("--discover --discover-timeout 0", "--discover-timeout");
    s_parse_fails("--discover --discover-timeout 601", "--discover-timeout");
}

// --help: every row of the table, each number with its default and bounds.
static void test_usage(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    mc_cli_usage(f);
    fclose(f);
    static const char *const want[] = {
        "  --port N              with --serve: TCP port (0: any free one, printed) (default 8080, 0..65535)\n",
        "(default 0.8, 0..100)\n", "(default 40, 0..2147483647)\n", "(default 4, 1..256)\n",
        "(default 2, 1..64)\n", "(default: online CPUs, at most 8; 1..512)\n", "  --prompt-file FILE ",
        "  --help, -h "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("no '%s' in --help:\n%s", want[i], text);
    free(text);
}

// A session that cannot start hands back why through err's code
// (common/error.h): no file, not a GGUF file, a context the model refuses.
static void test_session_codes(void **state) {
    (void)state;
    char err[MC_ERR_LEN], junk[600];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = "/nonexistent/m.gguf";
    assert_null(mc_session_new(&sp, err));
    assert_int_equal(mc_err_code(err, MC_OK), MC_ERR_IO);
    snprintf(junk, sizeof junk, "%s/junk.gguf", s_dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("not a model, and long enough to have a header's worth of bytes\n", f);
    fclose(f);
    sp.model = junk;
    assert_null(mc_session_new(&sp, err));
    assert_int_equal(mc_err_code(err, MC_OK), MC_ERR_FORMAT);
    sp.model = s_model, sp.ctx = 65; // the model's context is 64
    assert_null(mc_session_new(&sp, err));
    assert_non_null(strstr(err, "context length 65 out of range"));
    assert_int_equal(mc_err_code(err, MC_OK), MC_ERR_RANGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_codes),
        cmocka_unit_test(test_parse_defaults),
        cmocka_unit_test(test_parse_modes),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bad_usage),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_tokenize_fixture),
        cmocka_unit_test(test_ids_dump_and_greedy),
        cmocka_unit_test(test_profile),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
