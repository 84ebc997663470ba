/*
 * cli: flag parsing and the single-machine run modes of moe-coordinator.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "model.h"
#include "tokenizer.h"

#if MC_HAVE_CLUSTER
#include "cluster.h"
#include "demo.h"
#endif

#define MC_CLI_DEFAULT_CTX 4096u
#define MC_CLI_DEFAULT_N 128

void mc_cli_opts_init(mc_cli_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->sampling = mc_sampler_params_default();
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = nproc < 1 ? 1 : nproc > 8 ? 8 : (int)nproc;
}

void mc_cli_opts_free(mc_cli_opts_t *o) {
    free(o->ids);
    o->ids = NULL;
    o->n_ids = 0;
}

void mc_cli_usage(FILE *f) {
    mc_sampler_params_t d = mc_sampler_params_default();
    fprintf(f,
            "usage: moe-coordinator --model FILE --prompt TEXT [options]\n"
            "       moe-coordinator --model FILE --tokenize TEXT | --tokenize-file PATH\n"
            "       moe-coordinator --model FILE --token-ids 1,415,2936 [--dump-logits FILE] [-n N --temp 0]\n"
            "\n"
            "  --model FILE          GGUF model (Mixtral family)\n"
            "  --prompt TEXT         generate a continuation of TEXT (BOS added), streamed to stdout\n"
            "  -n N                  tokens to generate (default %d; with --token-ids default 0)\n"
            "  --temp T              temperature, 0 = greedy (default %.2f)\n"
            "  --top-k K             keep the K most likely tokens, 0 = off (default %d)\n"
            "  --top-p P             nucleus sampling, 1 = off (default %.2f)\n"
            "  --min-p P             drop tokens below P x the best probability, 0 = off (default %.2f)\n"
            "  --repeat-penalty R    penalty for the last 64 tokens, 1 = off (default %.2f)\n"
            "  --seed S              random seed (default: random; printed to stderr)\n"
            "  --threads N           compute threads (default: online CPUs, at most 8)\n"
            "  --ctx N               KV-cache length (default %u, at most the model's context length)\n"
            "  --tokenize TEXT       print the ids of TEXT (no BOS) as a JSON array\n"
            "  --tokenize-file PATH  same for the raw bytes of a file\n"
            "  --token-ids LIST      evaluate these ids (comma-separated, no BOS added) as one batch\n"
            "  --dump-logits FILE    with --token-ids: write float32 logits [n_ids][n_vocab] to FILE\n"
            "                        (with -n N: then generate N tokens, printed as ids on the last line)\n"
            "  --cluster FILE        run the experts on the nodes of a cluster file (YAML; see README);\n"
            "                        --model overrides the file's model\n"
            "  --stats-json FILE     with --cluster or --demo: write per-node and per-expert stats as JSON\n"
            "  --demo                generate a model, start --nodes local moe-expert processes, generate\n"
            "  --nodes N             with --demo: number of expert nodes (default 2)\n"
            "  --help                this text\n",
            MC_CLI_DEFAULT_N, d.temp, d.top_k, d.top_p, d.min_p, d.repeat_penalty, MC_CLI_DEFAULT_CTX);
}

static mc_err_t s_parse_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out, char *err) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a whole number in %lld..%lld", flag, s, (long long)lo,
                          (long long)hi);
    *out = v;
    return MC_OK;
}

static mc_err_t s_parse_f32(const char *flag, const char *s, float lo, float hi, float *out, char *err) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a number in %g..%g", flag, s, lo, hi);
    *out = v;
    return MC_OK;
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

mc_err_t mc_cli_parse(int argc, char **argv, mc_cli_opts_t *o, char *err) {
    mc_err_t rc = MC_OK;
    int64_t v;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            o->mode = MC_CLI_MODE_HELP;
            return MC_OK;
        }
        if (!strcmp(a, "--demo")) {
            o->demo = true;
            continue;
        }
        // Every other flag takes a value.
        static const char *const with_value[] = {"--model", "--prompt", "-n", "--temp", "--top-k", "--top-p",
                                                 "--min-p", "--repeat-penalty", "--seed", "--threads", "--ctx",
                                                 "--tokenize", "--tokenize-file", "--token-ids", "--dump-logits",
                                                 "--cluster", "--stats-json", "--nodes"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) return mc_err_set(err, MC_ERR_ARG, "unknown flag '%s' (see --help)", a);
        if (i + 1 >= argc) return mc_err_set(err, MC_ERR_ARG, "%s needs a value", a);
        const char *val = argv[++i];
        if (!strcmp(a, "--model")) o->model = val;
        else if (!strcmp(a, "--prompt")) o->prompt = val;
        else if (!strcmp(a, "--tokenize")) o->tokenize_text = val;
        else if (!strcmp(a, "--tokenize-file")) o->tokenize_file = val;
        else if (!strcmp(a, "--dump-logits")) o->dump_logits = val;
        else if (!strcmp(a, "--cluster")) o->cluster = val;
        else if (!strcmp(a, "--stats-json")) o->stats_json = val;
        else if (!strcmp(a, "--nodes")) {
            if (!(rc = s_parse_i64(a, val, 1, 64, &v, err))) o->demo_nodes = (uint32_t)v;
        }
        else if (!strcmp(a, "--token-ids")) {
            free(o->ids);
            o->ids = NULL;
            rc = s_parse_ids(val, &o->ids, &o->n_ids, err);
        } else if (!strcmp(a, "-n")) rc = s_parse_i64(a, val, 0, INT32_MAX, &o->n_predict, err);
        else if (!strcmp(a, "--temp")) rc = s_parse_f32(a, val, 0.0f, 100.0f, &o->sampling.temp, err);
        else if (!strcmp(a, "--top-k")) {
            if (!(rc = s_parse_i64(a, val, 0, INT32_MAX, &v, err))) o->sampling.top_k = (int32_t)v;
        } else if (!strcmp(a, "--top-p")) rc = s_parse_f32(a, val, 0.0f, 1.0f, &o->sampling.top_p, err);
        else if (!strcmp(a, "--min-p")) rc = s_parse_f32(a, val, 0.0f, 1.0f, &o->sampling.min_p, err);
        else if (!strcmp(a, "--repeat-penalty")) rc = s_parse_f32(a, val, 0.01f, 100.0f, &o->sampling.repeat_penalty, err);
        else if (!strcmp(a, "--seed")) {
            if (!(rc = s_parse_i64(a, val, 0, INT64_MAX, &v, err))) {
                o->sampling.seed = (uint64_t)v;
                o->seed_given = true;
            }
        } else if (!strcmp(a, "--threads")) {
            if (!(rc = s_parse_i64(a, val, 1, 512, &v, err))) o->threads = (int)v;
        } else if (!strcmp(a, "--ctx")) {
            if (!(rc = s_parse_i64(a, val, 1, 1 << 24, &v, err))) o->ctx = (uint32_t)v;
        }
    }
    if (rc) return rc;
    if (o->demo) {
        if (o->cluster || o->model || o->tokenize_text || o->tokenize_file || o->ids)
            return mc_err_set(err, MC_ERR_ARG, "--demo makes its own model and cluster: only --prompt, -n, sampling, "
                                               "--threads, --nodes and --stats-json go with it");
        o->mode = MC_CLI_MODE_DEMO;
        if (!o->demo_nodes) o->demo_nodes = 2;
        if (o->n_predict < 0) o->n_predict = 32;
        return MC_OK;
    }
    if (o->demo_nodes) return mc_err_set(err, MC_ERR_ARG, "--nodes goes with --demo");
    if (o->stats_json && !o->cluster) return mc_err_set(err, MC_ERR_ARG, "--stats-json needs --cluster or --demo");
    int modes = (o->prompt != NULL) + (o->tokenize_text != NULL) + (o->tokenize_file != NULL) + (o->ids != NULL);
    if (modes == 0) return mc_err_set(err, MC_ERR_ARG, "nothing to do: give --prompt, --tokenize, --tokenize-file or --token-ids (see --help)");
    if (modes > 1) return mc_err_set(err, MC_ERR_ARG, "--prompt, --tokenize, --tokenize-file and --token-ids exclude each other");
    if (!o->model && !o->cluster) return mc_err_set(err, MC_ERR_ARG, "--model FILE is required");
    if (o->dump_logits && !o->ids) return mc_err_set(err, MC_ERR_ARG, "--dump-logits needs --token-ids");
    if (o->tokenize_text || o->tokenize_file) o->mode = MC_CLI_MODE_TOKENIZE;
    else if (o->ids) o->mode = MC_CLI_MODE_IDS;
    else o->mode = MC_CLI_MODE_GENERATE;
    if (o->n_predict < 0) o->n_predict = o->mode == MC_CLI_MODE_IDS ? 0 : MC_CLI_DEFAULT_N;
    return MC_OK;
}

static int s_fail(const char *what) {
    fprintf(stderr, "moe-coordinator: %s\n", what);
    return 1;
}

static int s_tokenize(const mc_cli_opts_t *o, const mc_tokenizer_t *tok) {
    char err[MC_ERR_LEN];
    const char *text = o->tokenize_text;
    size_t len = text ? strlen(text) : 0;
    char *file_buf = NULL;
    if (o->tokenize_file) {
        FILE *f = fopen(o->tokenize_file, "rb");
        if (!f) {
            snprintf(err, sizeof err, "%s: %s", o->tokenize_file, strerror(errno));
            return s_fail(err);
        }
        size_t cap = 1 << 16;
        file_buf = malloc(cap);
        for (size_t r; file_buf && (r = fread(file_buf + len, 1, cap - len, f)) > 0;) {
            len += r;
            if (len == cap) {
                char *nb = realloc(file_buf, cap *= 2);
                if (!nb) free(file_buf);
                file_buf = nb;
            }
        }
        bool bad = ferror(f);
        fclose(f);
        if (!file_buf) return s_fail("out of memory reading the file");
        if (bad) {
            free(file_buf);
            snprintf(err, sizeof err, "%s: read error", o->tokenize_file);
            return s_fail(err);
        }
        text = file_buf;
    }
    size_t cap = mc_tokenizer_max_tokens(len), n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids || mc_tokenizer_encode(tok, text ? text : "", len, false, ids, cap, &n, err)) {
        free(ids);
        free(file_buf);
        return s_fail(ids ? err : "out of memory");
    }
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("]\n");
    free(ids);
    free(file_buf);
    return 0;
}

static uint64_t s_random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return s & (uint64_t)INT64_MAX; // printable and accepted back by --seed
}

// Evaluate a prompt then sample up to n tokens. Text mode streams decoded
// text; ids mode (print_ids) collects ids, prints them as the last line and
// does not stop at EOS, like the reference tools it is compared against.
static int s_generate(const mc_cli_opts_t *o, mc_engine_t *eng, const mc_tokenizer_t *tok, const int32_t *prompt,
                      size_t n_prompt, bool print_ids) {
    char err[MC_ERR_LEN];
    const mc_model_t *m = mc_engine_model(eng);
    const uint32_t n_vocab = m->hp.n_vocab;
    mc_logits_t which = o->dump_logits ? MC_LOGITS_ALL : MC_LOGITS_LAST;
    float *logits = malloc((which == MC_LOGITS_ALL ? n_prompt : 1) * (size_t)n_vocab * sizeof(float));
    int32_t *gen = malloc(((size_t)o->n_predict + 1) * sizeof(int32_t));
    mc_sampler_params_t sp = o->sampling;
    if (!o->seed_given) {
        sp.seed = s_random_seed();
        if (sp.temp > 0 && o->n_predict > 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)sp.seed);
    }
    mc_sampler_t *smp = mc_sampler_new(&sp, n_vocab);
    char *piece = tok ? malloc(mc_detok_max_bytes(tok)) : NULL;
    int ret = 1;
    if (!logits || !gen || !smp || (tok && !piece)) {
        s_fail("out of memory");
        goto out;
    }
    double t0 = mc_clock_s();
    if (mc_engine_eval(eng, prompt, (uint32_t)n_prompt, 0, which, logits, err)) {
        s_fail(err);
        goto out;
    }
    double t1 = mc_clock_s();
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
    const float *last = logits + (which == MC_LOGITS_ALL ? (n_prompt - 1) * (size_t)n_vocab : 0);
    for (size_t i = 0; i < n_prompt; i++) mc_sampler_accept(smp, prompt[i]);
    mc_detok_t dt;
    mc_detok_init(&dt, false);
    size_t n_gen = 0, n_decode = 0;
    uint32_t pos = (uint32_t)n_prompt;
    while (n_gen < (size_t)o->n_predict) {
        int32_t id = mc_sampler_sample(smp, last);
        mc_sampler_accept(smp, id);
        gen[n_gen++] = id;
        if (!print_ids) {
            if (id == mc_tokenizer_eos(tok)) break;
            size_t w = mc_detok_push(tok, &dt, id, piece, mc_detok_max_bytes(tok));
            fwrite(piece, 1, w, stdout);
            fflush(stdout);
        }
        if (n_gen == (size_t)o->n_predict) break;
        if (pos >= mc_engine_n_ctx(eng)) {
            fprintf(stderr, "\nmoe-coordinator: context full (%u tokens), stopping\n", mc_engine_n_ctx(eng));
            break;
        }
        if (mc_engine_eval(eng, &id, 1, pos++, MC_LOGITS_LAST, logits, err)) {
            s_fail(err);
            goto out;
        }
        last = logits;
        n_decode++;
    }
    double t2 = mc_clock_s();
    if (print_ids && n_gen) {
        for (size_t i = 0; i < n_gen; i++) printf(i ? ",%d" : "%d", gen[i]);
        putchar('\n');
    } else if (!print_ids) {
        size_t w = mc_detok_flush(&dt, piece, mc_detok_max_bytes(tok));
        fwrite(piece, 1, w, stdout);
        putchar('\n');
    }
    fflush(stdout);
    fprintf(stderr, "prompt: %zu tokens, %.2f tok/s; generation: %zu tokens, %.2f tok/s\n", n_prompt,
            n_prompt / (t1 - t0), n_gen, n_decode ? n_decode / (t2 - t1) : 0.0);
    ret = 0;
out:
    free(piece);
    mc_sampler_destroy(&smp);
    free(gen);
    free(logits);
    return ret;
}

int mc_cli_run_with(const mc_cli_opts_t *o, const char *model_path, const struct mc_cluster_config *cfg) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(model_path, err);
    if (!m) return s_fail(err);
    int ret = 1;
    mc_tokenizer_t *tok = mc_tokenizer_new_from_gguf(m->gguf, err);
    mc_engine_t *eng = NULL;
#if MC_HAVE_CLUSTER
    mc_cluster_t *cl = NULL;
#endif
    int32_t *prompt = NULL;
    if (!tok) {
        s_fail(err);
        goto out;
    }
    if (o->mode == MC_CLI_MODE_TOKENIZE) {
        ret = s_tokenize(o, tok);
        goto out;
    }
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = o->threads;
    ep.n_ctx = o->ctx ? o->ctx : (MC_CLI_DEFAULT_CTX < m->hp.n_ctx_train ? MC_CLI_DEFAULT_CTX : m->hp.n_ctx_train);
    if (!(eng = mc_engine_new(m, &ep, err))) {
        s_fail(err);
        goto out;
    }
#if MC_HAVE_CLUSTER
    if (cfg) {
        if (!(cl = mc_cluster_new(cfg, m, mc_engine_matmul(eng), stderr, err))) {
            s_fail(err);
            goto out;
        }
        mc_engine_set_moe(eng, mc_cluster_moe, cl);
    }
#else
    (void)cfg;
#endif
    if (o->mode == MC_CLI_MODE_IDS) {
        for (size_t i = 0; i < o->n_ids; i++)
            if ((uint32_t)o->ids[i] >= m->hp.n_vocab) {
                snprintf(err, sizeof err, "token id %d is outside the vocabulary (0..%u)", o->ids[i], m->hp.n_vocab - 1);
                s_fail(err);
                goto out;
            }
        if (o->n_ids > ep.n_ctx) {
            snprintf(err, sizeof err, "%zu token ids are more than the context (%u, see --ctx)", o->n_ids, ep.n_ctx);
            s_fail(err);
            goto out;
        }
        ret = s_generate(o, eng, tok, o->ids, o->n_ids, true);
    } else {
        const char *text = o->prompt ? o->prompt : "";
        size_t len = strlen(text), cap = mc_tokenizer_max_tokens(len), n = 0;
        prompt = malloc(cap * sizeof *prompt);
        if (!prompt || mc_tokenizer_encode(tok, text, len, mc_tokenizer_add_bos(tok), prompt, cap, &n, err)) {
            s_fail(prompt ? err : "out of memory");
            goto out;
        }
        if (n == 0) {
            s_fail("the prompt is empty and the model adds no BOS token");
            goto out;
        }
        if (n > ep.n_ctx) {
            snprintf(err, sizeof err, "prompt of %zu tokens is longer than the context (%u, see --ctx)", n, ep.n_ctx);
            s_fail(err);
            goto out;
        }
        ret = s_generate(o, eng, tok, prompt, n, false);
    }
#if MC_HAVE_CLUSTER
    if (cl && ret == 0) {
        uint64_t *counts = malloc((size_t)m->hp.n_layer * m->hp.n_expert * sizeof *counts);
        if (counts) mc_engine_expert_counts(eng, counts);
        if (counts) mc_cluster_print_stats(cl, counts, stderr);
        if (!counts || (o->stats_json && mc_cluster_write_stats_json(cl, counts, o->stats_json, err))) {
            s_fail(counts ? err : "out of memory");
            ret = 1;
        }
        free(counts);
    }
#endif
out:
    free(prompt);
#if MC_HAVE_CLUSTER
    mc_cluster_destroy(&cl);
#endif
    mc_engine_destroy(&eng);
    mc_tokenizer_destroy(&tok);
    mc_model_destroy(&m);
    return ret;
}

int mc_cli_run(const mc_cli_opts_t *o) {
    char err[MC_ERR_LEN];
    if (o->mode == MC_CLI_MODE_HELP) {
        mc_cli_usage(stdout);
        return 0;
    }
    if (!o->cluster && o->mode != MC_CLI_MODE_DEMO) return mc_cli_run_with(o, o->model, NULL);
#if MC_HAVE_CLUSTER
    if (o->mode == MC_CLI_MODE_DEMO) return mc_demo_run(o);
    mc_cluster_config_t *cfg = mc_cluster_config_load(o->cluster, err);
    if (!cfg) return s_fail(err);
    const char *model = o->model ? o->model : cfg->model_resolved;
    int ret = model ? mc_cli_run_with(o, model, cfg)
                    : s_fail("no model: give --model FILE or a 'model:' line in the cluster file");
    mc_cluster_config_destroy(&cfg);
    return ret;
#else
    (void)err;
    return s_fail("this moe-coordinator was built without cluster support (MC_ENGINE_ONLY)");
#endif
}
