/*
 * cli: flag parsing and the run modes of moe-coordinator, each on a session
 * (session.h) driven through the generation loop (scheduler.h).
 */
#include "cli.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "clock.h"
#include "file.h"
#include "flags.h"
#include "layer_profile.h"
#include "model.h"
#include "rng.h"
#include "scheduler.h"
#include "session.h"
#include "termchat.h"
#include "tokenizer.h"
#include "cluster_config.h"
#include "demo.h"
#include "discovery.h"
#include "routing.h"
#include "server.h"

#define MC_CLI_DEFAULT_N 128
#define S_STR2(x) #x
#define S_STR(x) S_STR2(x)
// --tokenize-file and --prompt-file: far more text than a run wants, and the
// token buffer (mc_tokenizer_max_tokens: up to three ids a byte, four bytes an
// id) stays under 1 GiB.
#define S_MAX_TEXT_FILE ((size_t)64 << 20)

// --top-k is an int row (common/flags.h) over the sampler's int32_t.
static_assert(sizeof(int) == sizeof(int32_t), "int is 32 bits");

// --mem-prefetch router|transitions|none into an int (MC_STORE_PRED_*, -1).
static mc_err_t s_parse_prefetch(const char *flag, const char *v, void *field, char *err) {
    mc_store_pred_t p;
    if (!strcmp(v, "none")) *(int *)field = -1;
    else if (!mc_store_pred_parse(v, &p)) *(int *)field = (int)p;
    else return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not router, transitions or none", flag, v);
    return MC_OK;
}

// --chat-format NAME: one of chat.h's formats, kept as the name.
static mc_err_t s_parse_chat_format(const char *flag, const char *v, void *field, char *err) {
    mc_chat_style_t st;
    if (!mc_chat_style_from_name(v, &st))
        return mc_err_set(err, MC_ERR_ARG, "%s: '%.40s' is not a chat format (%s)", flag, v, mc_chat_style_names);
    *(const char **)field = v;
    return MC_OK;
}

// --kv-type f32|f16 into an mc_dtype_t.
static mc_err_t s_parse_kv_type(const char *flag, const char *v, void *field, char *err) {
    if (mc_engine_kv_type_parse(v, field)) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not f32 or f16", flag, v);
    return MC_OK;
}

// One row per flag, in --help's order; a new flag is a row here (and its
// field in mc_cli_opts_t, and its check in mc_cli_parse when it goes with
// some modes only). Defaults: the row's, or for sampling the sampler's own
// (mc_sampler_params_default), or explained in the text.
#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(mc_cli_opts_t, field)
static const mc_flag_t s_flags[] = {
    {S_ROW("--model", "FILE", MC_FLAG_FILE, model), .help = "GGUF model (llama/Mixtral, qwen3moe, olmoe, qwen2moe,\ndeepseek2)"},
    {S_ROW("--prompt", "TEXT", MC_FLAG_STRING, prompt),
     .help = "generate a continuation of TEXT (BOS added), streamed to stdout"},
    {S_ROW("-n", "N", MC_FLAG_INT, n_predict), MC_FLAG_DEF_TEXT, 0, INT32_MAX,
     .help = "tokens to generate: " S_STR(MC_CLI_DEFAULT_N) ", with --token-ids 0, with --chat and --serve\n"
             "until the answer ends (a request's max_tokens wins)"},
    {S_ROW("--temp", "T", MC_FLAG_F32, sampling.temp), .help = "temperature, 0 = greedy", .flo = 0, .fhi = 100},
    {S_ROW("--top-k", "K", MC_FLAG_INT, sampling.top_k), MC_FLAG_DEF_OWN, 0, INT32_MAX,
     .help = "keep the K most likely tokens, 0 = off"},
    {S_ROW("--top-p", "P", MC_FLAG_F32, sampling.top_p), .help = "nucleus sampling, 1 = off", .flo = 0, .fhi = 1},
    {S_ROW("--min-p", "P", MC_FLAG_F32, sampling.min_p), .help = "drop tokens below P x the best probability, 0 = off",
     .flo = 0, .fhi = 1},
    {S_ROW("--repeat-penalty", "R", MC_FLAG_F32, sampling.repeat_penalty),
     .help = "penalty for the last 64 tokens, 1 = off", .flo = 0.01, .fhi = 100},
    {S_ROW("--seed", "S", MC_FLAG_U64, sampling.seed), MC_FLAG_DEF_TEXT,
     .help = "random seed (default: random; printed to stderr)"},
    {S_ROW("--threads", "N", MC_FLAG_INT, threads), MC_FLAG_DEF_THREADS, 1, 512, .help = "compute threads"},
    {S_ROW("--ctx", "N", MC_FLAG_U32, ctx), MC_FLAG_DEF_TEXT, 1, 1 << 24,
     .help = "KV-cache length per sequence (default 4096, at most the model's\ncontext length)"},
    {S_ROW("--kv-type", "T", MC_FLAG_CUSTOM, kv_type), .parse = s_parse_kv_type,
     .help = "KV-cache values: f32 (the default: no rounding) or f16 (half the\n"
             "memory; keys and values rounded to the nearest half)"},
    {S_ROW("--pipeline", NULL, MC_FLAG_SWITCH, pipeline),
     .help = "with --cluster: cut each pass over several sequences in two groups of\n"
             "rows and compute one group's attention while the other's experts are\n"
             "on the wire (the same tokens; see docs/PERFORMANCE.md)"},
    {S_ROW("--prefix-cache-mb", "MB", MC_FLAG_U32, prefix_cache_mb), 256, 0, 1 << 20,
     .help = "keep prompt prefixes (keys and values) of finished answers up to this\n"
             "size, so a later prompt that starts the same way skips them (0: only\n"
             "the sequences' own caches)"},
    {S_ROW("--speculate", "K", MC_FLAG_U32, speculate), 0, 0, 64,
     .help = "speculative decoding: guess up to K next tokens from the text so far\n"
             "and verify them in one pass (the same tokens as without; 0 = off;\n"
             "default: 8 with --cluster or --demo, else 0)"},
    {S_ROW("--mem-limit", "MB", MC_FLAG_U32, mem_limit_mb), 0, 0, 1 << 24,
     .help = "keep at most MB MiB of expert weights in memory and read the others\n"
             "from the model file when used (0: every expert resident)"},
    {S_ROW("--mem-prefetch", "P", MC_FLAG_CUSTOM, mem_prefetch), .parse = s_parse_prefetch,
     .help = "with --mem-limit: read ahead what the next layer's router (router) or\n"
             "the layer-to-layer transitions seen (transitions) predict, or not\n"
             "(none, the default)"},
    {S_ROW("--tokenize", "TEXT", MC_FLAG_STRING, tokenize_text), .help = "print the ids of TEXT (no BOS) as a JSON array"},
    {S_ROW("--tokenize-file", "PATH", MC_FLAG_FILE, tokenize_file), .help = "same for the raw bytes of a file"},
    {S_ROW("--token-ids", "LIST", MC_FLAG_STRING, token_ids),
     .help = "evaluate these ids (comma-separated, no BOS added) as one batch"},
    {S_ROW("--dump-logits", "FILE", MC_FLAG_FILE, dump_logits),
     .help = "with --token-ids: write float32 logits [n_ids][n_vocab] to FILE\n"
             "(with -n N: then generate N tokens, printed as ids on the last line)"},
    {S_ROW("--cluster", "FILE", MC_FLAG_FILE, cluster),
     .help = "run the experts on the nodes of a cluster file (YAML; see README);\n"
             "--model overrides the file's model"},
    {S_ROW("--stats-json", "FILE", MC_FLAG_FILE, stats_json),
     .help = "with --cluster or --demo: write per-node and per-expert stats as JSON"},
    {S_ROW("--demo", NULL, MC_FLAG_SWITCH, demo),
     .help = "generate a model, start --nodes local moe-expert processes, then\n"
             "generate (or --chat, or --serve) through them"},
    {S_ROW("--nodes", "N", MC_FLAG_U32, demo_nodes), 2, 1, 64, .help = "with --demo: number of expert nodes"},
    {S_ROW("--chat", NULL, MC_FLAG_SWITCH, chat),
     .help = "interactive chat in the terminal (the model's chat format; /reset, /quit)"},
    {S_ROW("--system", "TEXT", MC_FLAG_STRING, system), .help = "with --chat: a system message for the conversation"},
    {S_ROW("--safe-prompt", NULL, MC_FLAG_SWITCH, safe_prompt),
     .help = "with --chat or --serve: prepend Mistral's safety system prompt"},
    {S_ROW("--chat-format", "NAME", MC_FLAG_CUSTOM, chat_format), .parse = s_parse_chat_format,
     .help = "with --chat or --serve: the model's chat format, instead of the one its\n"
             "chat template (or vocabulary) names: mistral-v1, mistral-v3, chatml,\nqwen3, tulu, "
             "deepseek-v2, deepseek-v3 or glm4"},
    {S_ROW("--serve", NULL, MC_FLAG_SWITCH, serve), .help = "OpenAI-compatible HTTP API, web chat and cluster dashboard"},
    {S_ROW("--host", "H", MC_FLAG_STRING, host),
     .help = "with --serve: address to listen on (default 127.0.0.1; 0.0.0.0: all)"},
    {S_ROW("--port", "N", MC_FLAG_U32, port), 8080, 0, 65535, .help = "with --serve: TCP port (0: any free one, printed)"},
    {S_ROW("--parallel", "N", MC_FLAG_U32, parallel), 4, 1, 256,
     .help = "with --serve: requests decoded together, each with its own\nKV cache of --ctx positions"},
    {S_ROW("--api-key", "KEY", MC_FLAG_STRING, api_key),
     .help = "with --serve: require 'Authorization: Bearer KEY' on /v1 and /api"},
    {S_ROW("--api-key-file", "FILE", MC_FLAG_FILE, api_key_file),
     .help = "the same, the key read from FILE (keeps it out of the process list)"},
    {S_ROW("--web", "DIR", MC_FLAG_FILE, web_dir),
     .help = "with --serve: serve the web page from DIR instead of the built-in one"},
    {S_ROW("--cors-origin", "LIST", MC_FLAG_STRING, cors_origin),
     .help = "with --serve: web pages on these origins may call the API from a\nbrowser (comma-separated, e.g. "
             "https://app.example.com, or *;\ndefault: none)"},
    {S_ROW("--routing-stats", "FILE", MC_FLAG_FILE, routing_stats),
     .help = "any mode: write what the router chose (rows per expert, pairs chosen\n"
             "together, how often a token keeps its predecessor's expert, a trace)\n"
             "as JSON for moe-plan at the end; with --serve also live at /v1/routing"},
    {S_ROW("--profile-routing", NULL, MC_FLAG_SWITCH, profile_routing),
     .help = "run every passage of --prompt-file (blank lines between passages;\n"
             "e.g. deploy/corpus/routing.txt) just to collect --routing-stats"},
    {S_ROW("--prompt-file", "FILE", MC_FLAG_FILE, prompt_file), .help = "with --profile-routing: the passages"},
    {S_ROW("--profile", NULL, MC_FLAG_SWITCH, profile),
     .help = "measure this machine with the model (memory, one expert's step for\n"
             "1..32 rows, the coordinator's work per layer and for the output head)\n"
             "and print it as the coordinator entry for moe-plan; then exit"},
    {S_ROW("--name", "NAME", MC_FLAG_STRING, name),
     .help = "with --profile: the machine's name in the entry (default: host name)"},
    {S_ROW("--discover", NULL, MC_FLAG_SWITCH, discover),
     .help = "list the expert nodes announced on the local network (moe-expert\n"
             "--announce, over mDNS through the Avahi daemon): name, endpoint,\n"
             "public key; then exit"},
    {S_ROW("--discover-timeout", "S", MC_FLAG_U32, discover_timeout), 3, 1, 600,
     .help = "with --discover: seconds to listen for announcements"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])
static_assert(S_N_FLAGS <= 64, "mc_flags_parse reports at most 64 rows as given");

// Whether the flag called name was on the command line (given: mc_flags_parse's).
static bool s_given(uint64_t given, const char *name) {
    for (size_t i = 0; i < S_N_FLAGS; i++)
        if (!strcmp(s_flags[i].name, name)) return given >> i & 1;
    return false;
}

void mc_cli_opts_init(mc_cli_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->sampling = mc_sampler_params_default();
    o->host = "127.0.0.1";
    mc_flags_init(s_flags, S_N_FLAGS, o);
    o->mem_prefetch = -1;
}

void mc_cli_opts_free(mc_cli_opts_t *o) {
    free(o->ids);
    o->ids = NULL;
    o->n_ids = 0;
}

void mc_cli_usage(FILE *f) {
    fprintf(f, "usage: moe-coordinator --model FILE --prompt TEXT [options]\n"
               "       moe-coordinator --model FILE --chat [options]\n"
               "       moe-coordinator --model FILE --serve [--host H] [--port N] [options]\n"
               "       moe-coordinator --model FILE --tokenize TEXT | --tokenize-file PATH\n"
               "       moe-coordinator --model FILE --token-ids 1,415,2936 [--dump-logits FILE] [-n N --temp 0]\n"
               "       moe-coordinator --demo [--chat | --serve] [options]\n"
               "       moe-coordinator --model FILE --profile-routing --prompt-file FILE --routing-stats FILE\n"
               "       moe-coordinator --model FILE --profile [--threads N] [--name NAME]\n"
               "       moe-coordinator --discover [--discover-timeout S]\n"
               "\n");
    mc_cli_opts_t d;
    mc_cli_opts_init(&d);
    mc_flags_usage(f, s_flags, S_N_FLAGS, 24, &d);
}

static mc_err_t s_parse_ids(const char *s, int32_t **out, size_t *n_out, char *err) {
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    size_t n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            return mc_err_set(err, MC_ERR_ARG, "--token-ids: '%s' is not a comma-separated list of ids", s);
        }
        ids[n++] = (int32_t)v;
        if (!*end) break;
        p = end + 1;
    }
    *out = ids;
    *n_out = n;
    return MC_OK;
}

// The first line of path, without its newline, into buf (256 bytes).
static mc_err_t s_read_key(const char *path, char *buf, char *err) {
    FILE *f = fopen(path, "r");
    if (!f) return mc_err_set(err, MC_ERR_ARG, "--api-key-file: %s: %s", path, strerror(errno));
    char *line = fgets(buf, 256, f);
    fclose(f);
    size_t n = line ? strcspn(line, "\r\n") : 0;
    if (!n) return mc_err_set(err, MC_ERR_ARG, "--api-key-file: %s has no key on its first line", path);
    buf[n] = 0;
    return MC_OK;
}

// Which flags go together, and the mode they make.
static mc_err_t s_check(mc_cli_opts_t *o, uint64_t given, char *err) {
    if (o->discover) {
        for (size_t i = 0; i < S_N_FLAGS; i++)
            if ((given >> i & 1) && strcmp(s_flags[i].name, "--discover") && strcmp(s_flags[i].name, "--discover-timeout"))
                return mc_err_set(err, MC_ERR_ARG, "--discover lists the announced nodes and exits: only "
                                                   "--discover-timeout goes with it, not %s", s_flags[i].name);
        o->mode = MC_CLI_MODE_DISCOVER;
        return MC_OK;
    }
    if (s_given(given, "--discover-timeout")) return mc_err_set(err, MC_ERR_ARG, "--discover-timeout goes with --discover");
    if (o->chat + o->serve + o->profile_routing + o->profile > 1)
        return mc_err_set(err, MC_ERR_ARG, "--chat, --serve, --profile-routing and --profile exclude each other");
    o->mode = o->chat ? MC_CLI_MODE_CHAT
              : o->serve ? MC_CLI_MODE_SERVE
              : o->profile_routing ? MC_CLI_MODE_PROFILE_ROUTING
              : o->profile ? MC_CLI_MODE_PROFILE
                           : MC_CLI_MODE_GENERATE;
    o->seed_given = s_given(given, "--seed");
    if (o->api_key && o->api_key_file)
        return mc_err_set(err, MC_ERR_ARG, "--api-key and --api-key-file exclude each other");
    if (o->name && o->mode != MC_CLI_MODE_PROFILE) return mc_err_set(err, MC_ERR_ARG, "--name goes with --profile");
    if (o->mem_prefetch >= 0 && !o->mem_limit_mb) return mc_err_set(err, MC_ERR_ARG, "--mem-prefetch goes with --mem-limit");
    if (o->mode == MC_CLI_MODE_PROFILE) {
        if (o->demo || o->cluster || o->prompt || o->tokenize_text || o->tokenize_file || o->token_ids ||
            o->routing_stats || o->stats_json || o->prompt_file)
            return mc_err_set(err, MC_ERR_ARG, "--profile measures this machine with --model alone: only --threads "
                                               "and --name go with it");
        if (!o->model) return mc_err_set(err, MC_ERR_ARG, "--model FILE is required");
        return MC_OK;
    }
    if (o->mode == MC_CLI_MODE_PROFILE_ROUTING && (!o->prompt_file || !o->routing_stats))
        return mc_err_set(err, MC_ERR_ARG, "--profile-routing needs --prompt-file FILE and --routing-stats FILE");
    if (o->prompt_file && o->mode != MC_CLI_MODE_PROFILE_ROUTING)
        return mc_err_set(err, MC_ERR_ARG, "--prompt-file goes with --profile-routing");
    // Through a cluster every step waits on the network, and a step that
    // verifies guesses shares that wait: speculation is on there unless
    // --speculate says otherwise (docs/PERFORMANCE.md: never measurably
    // slower when nothing is guessed right, 1.3-1.6x when text repeats). On
    // one machine a verifying pass routes its rows to more experts than
    // one row does, which costs about what the kept guesses save: off.
    if (!s_given(given, "--speculate") && (o->cluster || o->demo)) o->speculate = MC_CLI_SPECULATE_CLUSTER;
    const bool interactive = o->mode != MC_CLI_MODE_GENERATE;
    if (o->demo) {
        if (o->cluster || o->model || o->tokenize_text || o->tokenize_file || o->token_ids)
            return mc_err_set(err, MC_ERR_ARG, "--demo makes its own model and cluster: only --prompt, -n, sampling, "
                                               "--threads, --nodes, --stats-json, --chat and --serve go with it");
        if (!interactive && o->n_predict < 0) o->n_predict = 32;
        return MC_OK;
    }
    if (s_given(given, "--nodes")) return mc_err_set(err, MC_ERR_ARG, "--nodes goes with --demo");
    if (o->stats_json && !o->cluster) return mc_err_set(err, MC_ERR_ARG, "--stats-json needs --cluster or --demo");
    int modes = (o->prompt != NULL) + (o->tokenize_text != NULL) + (o->tokenize_file != NULL) + (o->token_ids != NULL);
    if (interactive && modes)
        return mc_err_set(err, MC_ERR_ARG, "--chat, --serve and --profile-routing take their text elsewhere, not from "
                                           "--prompt, --tokenize or --token-ids");
    if (modes == 0 && !interactive)
        return mc_err_set(err, MC_ERR_ARG, "nothing to do: give --prompt, --chat, --serve, --tokenize, --tokenize-file "
                                           "or --token-ids (see --help)");
    if (modes > 1) return mc_err_set(err, MC_ERR_ARG, "--prompt, --tokenize, --tokenize-file and --token-ids exclude each other");
    if (!o->model && !o->cluster) return mc_err_set(err, MC_ERR_ARG, "--model FILE is required");
    if (o->dump_logits && !o->token_ids) return mc_err_set(err, MC_ERR_ARG, "--dump-logits needs --token-ids");
    if (o->tokenize_text || o->tokenize_file) o->mode = MC_CLI_MODE_TOKENIZE;
    else if (o->token_ids) o->mode = MC_CLI_MODE_IDS;
    if (o->n_predict < 0) o->n_predict = o->mode == MC_CLI_MODE_GENERATE ? MC_CLI_DEFAULT_N : 0;
    return MC_OK;
}

mc_err_t mc_cli_parse(int argc, char **argv, mc_cli_opts_t *o, char *err) {
    mc_cli_opts_t r = *o;
    bool help;
    uint64_t given;
    mc_err_t rc = mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &r, &help, &given, err);
    if (rc) return rc;
    if (help) {
        o->mode = MC_CLI_MODE_HELP;
        return MC_OK;
    }
    if ((rc = s_check(&r, given, err))) return rc;
    if (r.api_key_file && (rc = s_read_key(r.api_key_file, r.api_key_buf, err))) return rc;
    r.ids = NULL, r.n_ids = 0;
    if (r.token_ids && (rc = s_parse_ids(r.token_ids, &r.ids, &r.n_ids, err))) return rc;
    free(o->ids);
    *o = r;
    if (o->api_key_file) o->api_key = o->api_key_buf;
    return MC_OK;
}

static int s_fail(const char *what) {
    fprintf(stderr, "moe-coordinator: %s\n", what);
    return 1;
}

static int s_tokenize(const mc_cli_opts_t *o, const char *model_path) {
    char err[MC_ERR_LEN];
    mc_gguf_t *g = mc_gguf_open(model_path, err);
    mc_tokenizer_t *tok = g ? mc_tokenizer_new_from_gguf(g, err) : NULL;
    mc_gguf_destroy(&g);
    if (!tok) return s_fail(err);
    const char *text = o->tokenize_text;
    size_t len = text ? strlen(text) : 0;
    char *file_buf = NULL;
    int ret = 1;
    if (o->tokenize_file) {
        if (mc_file_read(o->tokenize_file, S_MAX_TEXT_FILE, &file_buf, &len, err)) {
            s_fail(err);
            goto out;
        }
        text = file_buf;
    }
    size_t cap = mc_tokenizer_max_tokens(len), n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids || mc_tokenizer_encode(tok, text ? text : "", len, false, ids, cap, &n, err)) {
        free(ids);
        s_fail(ids ? err : "out of memory");
        goto out;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("]\n");
    free(ids);
    ret = 0;
out:
    free(file_buf);
    mc_tokenizer_destroy(&tok);
    return ret;
}

// What a --prompt or --token-ids run collects from its one generation.
typedef struct {
    bool print_ids; // collect ids for the last line instead of streaming text
    int32_t *ids;
    size_t n_ids;
    atomic_int *stop;
    mc_finish_t why;
    mc_gen_usage_t usage;
    char err[MC_ERR_LEN];
    bool done;
} s_run_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    s_run_t *r = user;
    if (r->print_ids) {
        if (id >= 0) r->ids[r->n_ids++] = id;
    } else {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return !(r->stop && atomic_load(r->stop));
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_run_t *r = user;
    r->why = why, r->usage = *u, r->done = true;
    snprintf(r->err, sizeof r->err, "%s", err);
}

// Drafts of at most --speculate tokens, starting at half that.
static mc_draft_params_t s_draft_params(const mc_cli_opts_t *o) {
    mc_draft_params_t dp = mc_draft_params_default();
    dp.k_max = o->speculate ? o->speculate : 1;
    dp.k_start = (dp.k_max + 1) / 2;
    return dp;
}

// Evaluate a prompt then sample up to n tokens. Text mode streams decoded
// text; ids mode collects ids, prints them as the last line and does not
// stop at EOS, like the reference tools it is compared against.
static int s_generate(const mc_cli_opts_t *o, mc_session_t *s, const int32_t *prompt, size_t n_prompt, bool print_ids,
                      atomic_int *stop) {
    char err[MC_ERR_LEN];
    const uint32_t n_vocab = mc_session_model(s)->hp.n_vocab;
    const uint32_t n_ctx = mc_engine_n_ctx(mc_session_engine(s));
    if (n_prompt > n_ctx) {
        snprintf(err, sizeof err, "%s of %zu tokens is longer than the context (%u, see --ctx)",
                 print_ids ? "--token-ids list" : "prompt", n_prompt, n_ctx);
        return s_fail(err);
    }
    float *logits = o->dump_logits ? malloc(n_prompt * (size_t)n_vocab * sizeof(float)) : NULL;
    s_run_t run = {.print_ids = print_ids, .ids = malloc(((size_t)o->n_predict + 1) * sizeof(int32_t)), .stop = stop};
    int ret = 1;
    if (!run.ids || (o->dump_logits && !logits)) {
        s_fail("out of memory");
        goto out;
    }
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = prompt, p.n_prompt = (uint32_t)n_prompt;
    p.sampling = o->sampling;
    if (!o->seed_given) {
        p.sampling.seed = mc_rng_fresh_seed();
        if (p.sampling.temp > 0 && o->n_predict > 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)p.sampling.seed);
    }
    p.max_tokens = (uint32_t)o->n_predict, p.ignore_eos = print_ids, p.prompt_logits = logits;
    const mc_draft_params_t dp = s_draft_params(o);
    p.speculate = o->speculate ? &dp : NULL;
    p.on_text = s_on_text, p.on_done = s_on_done, p.user = &run;
    mc_scheduler_t *sched = mc_session_scheduler(s);
    if (o->n_predict == 0) { // logits only: no generation
        if (mc_engine_eval(mc_session_engine(s), prompt, (uint32_t)n_prompt, 0, logits ? MC_LOGITS_ALL : MC_LOGITS_NONE,
                           logits, err)) {
            s_fail(err);
            goto out;
        }
        run.done = true, run.why = MC_FINISH_LENGTH;
    } else if (mc_scheduler_submit(sched, &p, NULL, err)) {
        s_fail(err);
        goto out;
    }
    while (!run.done)
        if (mc_scheduler_step(sched, err)) break; // the done callback has the message
    if (run.why == MC_FINISH_ERROR) {
        s_fail(run.err);
        goto out;
    }
    if (o->dump_logits) {
        FILE *f = fopen(o->dump_logits, "wb");
        bool ok = f && fwrite(logits, sizeof(float) * n_vocab, n_prompt, f) == n_prompt;
        if (f && fclose(f) != 0) ok = false;
        if (!ok) {
            snprintf(err, sizeof err, "%s: cannot write logits", o->dump_logits);
            s_fail(err);
            goto out;
        }
    }
    if (print_ids && run.n_ids) {
        for (size_t i = 0; i < run.n_ids; i++) printf(i ? ",%d" : "%d", run.ids[i]);
        putchar('\n');
    } else if (!print_ids) {
        putchar('\n');
    }
    fflush(stdout);
    if (run.why == MC_FINISH_CANCELLED) fprintf(stderr, "moe-coordinator: interrupted\n");
    if (run.why == MC_FINISH_LENGTH && run.usage.prompt_tokens + run.usage.completion_tokens >= n_ctx)
        fprintf(stderr, "moe-coordinator: context full (%u tokens), stopped\n", n_ctx);
    // Generation speed counts the passes after the first token (the last
    // token sampled is not evaluated).
    const uint32_t passes = run.usage.completion_tokens ? run.usage.completion_tokens - 1 : 0;
    fprintf(stderr, "prompt: %zu tokens, %.2f tok/s; generation: %u tokens, %.2f tok/s\n", n_prompt,
            run.usage.prompt_s > 0 ? n_prompt / run.usage.prompt_s : 0.0, run.usage.completion_tokens,
            passes && run.usage.generate_s > 0 ? passes / run.usage.generate_s : 0.0);
    ret = run.why == MC_FINISH_CANCELLED ? 130 : 0;
out:
    free(run.ids);
    free(logits);
    return ret;
}

// --profile-routing: every passage of the prompt file (blank lines between
// passages) through the model, prompts only, each a fresh sequence; the
// routing statistics are written by the caller.
static int s_profile_routing(const mc_cli_opts_t *o, mc_session_t *s, atomic_int *stop) {
    char err[MC_ERR_LEN];
    size_t len;
    char *text;
    if (mc_file_read(o->prompt_file, S_MAX_TEXT_FILE, &text, &len, err)) return s_fail(err);
    const mc_tokenizer_t *tok = mc_session_tokenizer(s);
    mc_engine_t *e = mc_session_engine(s);
    const uint32_t n_ctx = mc_engine_n_ctx(e);
    int32_t *ids = malloc(mc_tokenizer_max_tokens(len) * sizeof *ids);
    size_t passages = 0, tokens = 0;
    const double t0 = mc_clock_s();
    int ret = ids ? 0 : s_fail("out of memory");
    for (size_t at = 0; !ret && at < len && !(stop && atomic_load(stop));) {
        // A passage ends at a blank line (two newlines in a row).
        const char *start = text + at, *end = strstr(start, "\n\n");
        size_t n = end ? (size_t)(end - start) : len - at;
        at += n + (end ? 2 : 0);
        while (n && (start[0] == '\n' || start[0] == ' ')) start++, n--;
        if (!n) continue;
        size_t n_ids;
        if (mc_tokenizer_encode(tok, start, n, mc_tokenizer_add_bos(tok), ids, mc_tokenizer_max_tokens(n), &n_ids, err)) {
            ret = s_fail(err);
            break;
        }
        for (size_t done = 0; done < n_ids && !ret;) { // longer than the context: in pieces
            const uint32_t c = n_ids - done < n_ctx ? (uint32_t)(n_ids - done) : n_ctx;
            if (mc_engine_eval(e, ids + done, c, 0, MC_LOGITS_NONE, NULL, err)) ret = s_fail(err);
            done += c;
        }
        passages++, tokens += n_ids;
    }
    if (!ret)
        fprintf(stderr, "routing profile: %zu passages, %zu tokens in %.1f s; statistics to %s\n", passages, tokens,
                mc_clock_s() - t0, o->routing_stats);
    free(ids), free(text);
    return ret;
}

// The modes that run on a session: model (and nodes) set up once.
static int s_run_session(const mc_cli_opts_t *o, const char *model_path, const struct mc_cluster_config *cfg,
                         atomic_int *stop) {
    char err[MC_ERR_LEN];
    mc_session_params_t sp = mc_session_params_default();
    sp.model = model_path, sp.cluster = cfg, sp.threads = o->threads, sp.ctx = o->ctx, sp.log = stderr;
    sp.n_seq = o->mode == MC_CLI_MODE_SERVE ? o->parallel : 1;
    sp.routing = o->routing_stats != NULL;
    sp.prefix_cache = (size_t)o->prefix_cache_mb << 20;
    sp.kv_type = o->kv_type;
    sp.pipeline = o->pipeline;
    sp.mem_limit_mb = o->mem_limit_mb, sp.mem_prefetch = o->mem_prefetch;
    sp.chat_format = o->chat_format;
    const mc_draft_params_t dp = s_draft_params(o);
    mc_session_t *s = mc_session_new(&sp, err);
    if (!s) return s_fail(err);
    int ret = 1;
    int32_t *prompt = NULL;
    if (o->mode == MC_CLI_MODE_IDS) {
        ret = s_generate(o, s, o->ids, o->n_ids, true, stop);
    } else if (o->mode == MC_CLI_MODE_GENERATE) {
        const mc_tokenizer_t *tok = mc_session_tokenizer(s);
        const char *text = o->prompt ? o->prompt : "";
        size_t len = strlen(text), cap = mc_tokenizer_max_tokens(len), n = 0;
        prompt = malloc(cap * sizeof *prompt);
        if (!prompt || mc_tokenizer_encode(tok, text, len, mc_tokenizer_add_bos(tok), prompt, cap, &n, err))
            s_fail(prompt ? err : "out of memory");
        else if (n == 0) s_fail("the prompt is empty and the model adds no BOS token");
        else ret = s_generate(o, s, prompt, n, false, stop);
    } else if (o->mode == MC_CLI_MODE_CHAT) {
        mc_termchat_params_t cp = mc_termchat_params_default();
        cp.sampling = o->sampling, cp.seed_given = o->seed_given, cp.max_tokens = (uint32_t)o->n_predict;
        cp.system = o->system, cp.safe_prompt = o->safe_prompt, cp.stop = stop;
        cp.speculate = o->speculate ? &dp : NULL;
        ret = mc_termchat_run(s, &cp, stdin, stdout);
    } else if (o->mode == MC_CLI_MODE_PROFILE_ROUTING) {
        ret = s_profile_routing(o, s, stop);
    } else {
        mc_server_params_t hp = mc_server_params_default();
        hp.host = o->host, hp.port = (uint16_t)o->port, hp.api_key = o->api_key, hp.web_dir = o->web_dir;
        hp.cors_origin = o->cors_origin;
        hp.sampling = o->sampling, hp.max_tokens = (uint32_t)o->n_predict, hp.safe_prompt = o->safe_prompt;
        hp.log = stderr;
        hp.speculate = o->speculate ? &dp : NULL;
        hp.reload = o->reload;
        ret = mc_server_run(s, &hp, stop, err) ? s_fail(err) : 0;
    }
    if (ret == 0 && mc_session_report(s, stderr, o->stats_json, err)) ret = s_fail(err);
    if (o->routing_stats && mc_routing_write(mc_session_routing(s), o->routing_stats, err)) ret = s_fail(err);
    free(prompt);
    mc_session_destroy(&s);
    return ret;
}

int mc_cli_run(const mc_cli_opts_t *o, atomic_int *stop) {
    char err[MC_ERR_LEN];
    if (o->mode == MC_CLI_MODE_HELP) {
        mc_cli_usage(stdout);
        return 0;
    }
    if (o->mode == MC_CLI_MODE_DISCOVER)
        return mc_discovery_list(o->discover_timeout * 1000u, stdout, stderr, err) ? s_fail(err) : 0;
    if (o->mode == MC_CLI_MODE_PROFILE)
        return mc_layer_profile_run(o->model, o->name, o->threads, stdout, err) ? s_fail(err) : 0;
    if (o->mode == MC_CLI_MODE_TOKENIZE && !o->cluster) return s_tokenize(o, o->model);
    if (!o->cluster && !o->demo) return s_run_session(o, o->model, NULL, stop);
    if (o->demo) {
        mc_demo_t demo;
        if (mc_demo_start(o->demo_nodes, o->threads, &demo, err)) return s_fail(err);
        mc_cli_opts_t run = *o;
        if (!run.prompt && run.mode == MC_CLI_MODE_GENERATE) run.prompt = "The quick brown fox";
        if (!run.seed_given) {
            run.sampling.seed = 42;
            run.seed_given = true;
        }
        int ret = s_run_session(&run, demo.model, demo.cfg, stop);
        mc_demo_stop(&demo);
        return ret;
    }
    mc_cluster_config_t *cfg = mc_cluster_config_load(o->cluster, err);
    if (!cfg) return s_fail(err);
    const char *model = o->model ? o->model : cfg->model_resolved;
    int ret = !model ? s_fail("no model: give --model FILE or a 'model:' line in the cluster file")
              : o->mode == MC_CLI_MODE_TOKENIZE ? s_tokenize(o, model)
                                                : s_run_session(o, model, cfg, stop);
    mc_cluster_config_destroy(&cfg);
    return ret;
}
