/*
 * bench_speculate: a corpus's passages generated through the scheduler
 * without and with speculative decoding, alternating, their ids compared.
 */
#include "bench_speculate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "file.h"
#include "tokenizer.h"

#define S_MAX_CORPUS (4u << 20) // bytes of a corpus file, at most
#define S_SEED 0x5eedull        // seeded sampling: this plus the prompt's index

// One generation's collected ids and the scheduler's report.
typedef struct {
    int32_t *ids; // (cap)
    uint32_t n, cap;
    mc_finish_t why;
    mc_gen_usage_t usage;
    char err[MC_ERR_LEN];
    bool done;
} s_run_t;

static bool s_on_text(void *user, int32_t id, const char *text, size_t len) {
    (void)text, (void)len;
    s_run_t *r = user;
    if (id >= 0 && r->n < r->cap) r->ids[r->n++] = id;
    return true;
}

static void s_on_done(void *user, mc_finish_t why, const mc_gen_usage_t *u, const char *err) {
    s_run_t *r = user;
    r->why = why, r->usage = *u, r->done = true;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
}

// Process CPU time in seconds, every thread's: what a process stopped or
// crowded out by others did not spend.
static double s_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// What one run measured.
typedef struct {
    double gen_s;     // from the first sampled token to the end
    double cpu_s;     // this process's CPU time in the passes after the first sampled token
    uint32_t steps;   // passes after the first sampled token
    mc_spec_stats_t spec;
} s_meas_t;

// Generate prompt (n ids) n_gen tokens on a fresh scheduler (no prefix
// cache from the run before), greedy or seeded, with drafts dp or none.
static mc_err_t s_generate(mc_engine_t *e, const mc_tokenizer_t *tok, const int32_t *prompt, uint32_t n,
                           uint32_t n_gen, uint32_t index, bool seeded, float repeat_penalty,
                           const mc_draft_params_t *dp, s_run_t *run, s_meas_t *ms, char *err) {
    mc_scheduler_t *s = mc_scheduler_new(e, tok, err);
    if (!s) return mc_err_code(err, MC_ERR_NOMEM);
    mc_gen_params_t p = mc_gen_params_default();
    p.prompt = prompt, p.n_prompt = n, p.max_tokens = n_gen, p.ignore_eos = true;
    if (seeded) {
        p.sampling = mc_sampler_params_default();
        p.sampling.seed = S_SEED + index;
    }
    p.sampling.repeat_penalty = repeat_penalty;
    p.speculate = dp;
    p.on_text = s_on_text, p.on_done = s_on_done, p.user = run;
    run->n = 0, run->done = false, run->why = MC_FINISH_NONE;
    mc_err_t rc = mc_scheduler_submit(s, &p, NULL, err);
    uint32_t steps = 0;
    double cpu = 0;
    while (!rc && !run->done) {
        const bool generating = run->n > 0; // the first token is out: this pass is generation
        const double c0 = generating ? s_cpu_s() : 0;
        rc = mc_scheduler_step(s, err);
        if (generating) cpu += s_cpu_s() - c0;
        steps += generating;
    }
    if (!rc && run->why != MC_FINISH_LENGTH)
        rc = mc_err_set(err, MC_ERR_ARG, "prompt %u: the generation ended early (%s%s%s)", index + 1,
                        mc_finish_name(run->why), run->err[0] ? ": " : "", run->err);
    if (!rc) {
        ms->gen_s = run->usage.generate_s, ms->cpu_s = cpu, ms->steps = steps;
        mc_scheduler_spec_stats(s, &ms->spec);
    }
    mc_scheduler_destroy(&s);
    return rc;
}

// The corpus's passages (a blank line ends one; leading newlines and spaces
// dropped, as moe-coordinator --profile-routing reads them) as token ids:
// ids[i] the first of n[i].
static mc_err_t s_corpus(const char *path, const mc_tokenizer_t *tok, int32_t **out, uint32_t *first, uint32_t *n,
                         uint32_t *count, char *err) {
    char *text;
    size_t len;
    mc_err_t rc = mc_file_read(path, S_MAX_CORPUS, &text, &len, err);
    if (rc) return rc;
    // Room for every passage's bound: the blank lines between them leave
    // more than the BOS and dummy prefix each adds.
    int32_t *ids = malloc((mc_tokenizer_max_tokens(len) + 1) * sizeof *ids);
    if (!ids) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    uint32_t c = 0;
    size_t total = 0;
    for (size_t at = 0; !rc && at < len;) {
        const char *start = text + at, *end = strstr(start, "\n\n");
        size_t len1 = end ? (size_t)(end - start) : len - at;
        at += len1 + (end ? 2 : 0);
        while (len1 && (start[0] == '\n' || start[0] == ' ')) start++, len1--;
        if (!len1) continue;
        if (c == MC_BENCH_SPEC_MAX_PROMPTS) {
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: more than %d passages", path, MC_BENCH_SPEC_MAX_PROMPTS);
            break;
        }
        size_t got;
        rc = mc_tokenizer_encode(tok, start, len1, mc_tokenizer_add_bos(tok), ids + total,
                                 mc_tokenizer_max_tokens(len1), &got, err);
        if (!rc && got == 0) continue;
        first[c] = (uint32_t)total, n[c] = (uint32_t)got, c++;
        total += got;
    }
    free(text);
    if (!rc && !c) rc = mc_err_set(err, MC_ERR_FORMAT, "%s: no passage (blank lines between passages)", path);
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids, *count = c;
    return MC_OK;
}

mc_err_t mc_bench_speculate(const mc_bench_opts_t *o, mc_bench_spec_t *out, char *err) {
    mc_bench_spec_t res, *r = &res; // into *out when all went well
    memset(r, 0, sizeof *r);
    r->model = o->model, r->corpus = o->corpus, r->cluster = o->cluster;
    r->n_threads = o->n_threads, r->reps = o->reps > 0 ? o->reps : 3, r->k = o->speculate, r->n_gen = o->n_gen;
    r->repeat_penalty = o->repeat_penalty;
    if (!o->corpus || o->speculate < 1 || o->n_gen < 1)
        return mc_err_set(err, MC_ERR_ARG, "the benchmark needs a corpus, K >= 1 and tokens to generate");
    mc_model_t *m = mc_model_open(o->model, err);
    if (!m) return mc_err_code(err, MC_ERR_FORMAT);
    mc_tokenizer_t *tok = mc_tokenizer_new_from_gguf(m->gguf, err);
    mc_engine_t *e = NULL;
    int32_t *ids = NULL, *ref = NULL;
    uint32_t first[MC_BENCH_SPEC_MAX_PROMPTS], np[MC_BENCH_SPEC_MAX_PROMPTS], count = 0;
    double *v = NULL;
    bool attached = false;
    mc_err_t rc = tok ? MC_OK : mc_err_code(err, MC_ERR_FORMAT);
    if (!rc) rc = s_corpus(o->corpus, tok, &ids, first, np, &count, err);
    uint32_t longest = 0;
    for (uint32_t i = 0; !rc && i < count; i++) {
        longest = np[i] > longest ? np[i] : longest;
        r->prompt_tokens += np[i];
        r->greedy.prompt[i].prompt_tokens = r->seeded.prompt[i].prompt_tokens = np[i];
    }
    r->n_prompts = count;
    if (!rc && (uint64_t)longest + o->n_gen > m->hp.n_ctx_train)
        rc = mc_err_set(err, MC_ERR_RANGE, "a passage of %u tokens and %u generated exceed the model's context %u",
                        longest, o->n_gen, m->hp.n_ctx_train);
    if (!rc) {
        mc_engine_params_t ep = mc_engine_params_default();
        ep.n_seq = 1, ep.n_threads = o->n_threads, ep.n_ctx = longest + o->n_gen;
        if (!(e = mc_engine_new(m, &ep, err))) rc = mc_err_code(err, MC_ERR_NOMEM);
    }
    if (!rc) rc = mc_bench_repack(o, m, e, err);
    if (!rc && o->attach) attached = !(rc = o->attach(o->attach_ctx, e, m, err));
    // ref: the first run without speculation of every (way, prompt), at
    // ref[(way * count + i) * n_gen]; run[0] and run[1] the runs without and with.
    s_run_t run[2] = {{.cap = o->n_gen}, {.cap = o->n_gen}};
    for (int j = 0; j < 2; j++) run[j].ids = malloc((size_t)o->n_gen * sizeof *run[j].ids);
    ref = malloc((size_t)2 * count * o->n_gen * sizeof *ref);
    v = malloc((size_t)r->reps * 10 * sizeof *v);
    if (!rc && (!run[0].ids || !run[1].ids || !ref || !v)) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_draft_params_t dp = mc_draft_params_default(); // as moe-coordinator --speculate K
    dp.k_max = o->speculate, dp.k_start = (o->speculate + 1) / 2;
    // v: per repetition and way, tokens/s off and on and their ratio.
    bool have_ref[2][MC_BENCH_SPEC_MAX_PROMPTS] = {{false}};
    for (int rep = -1; rep < r->reps && !rc; rep++) {
        double gen[2][2] = {{0}}, secs[2][2] = {{0}}, cpu[2][2] = {{0}}; // tokens, seconds, CPU s [way][speculative]
        // The warm-up (rep -1) faults in the weights and the nodes' pages: the first prompt both ways.
        const uint32_t prompts = rep < 0 ? 1 : count;
        for (uint32_t i = 0; i < prompts && !rc; i++)
            for (int way = 0; way < 2 && !rc; way++) {
                mc_bench_spec_way_t *w = way ? &r->seeded : &r->greedy;
                mc_bench_spec_prompt_t *pr = &w->prompt[i];
                s_meas_t ms[2];
                // Alternating which goes first, so a trend in the machine's
                // load touches both alike.
                for (int j = 0; j < 2 && !rc; j++) {
                    const int spec = (j + rep + 2 + (int)i) % 2;
                    rc = s_generate(e, tok, ids + first[i], np[i], o->n_gen, i, way, o->repeat_penalty,
                                    spec ? &dp : NULL, &run[spec], &ms[spec], err);
                    if (!rc && o->on_ids) o->on_ids(o->on_ids_ctx, i, way, spec, run[spec].ids, run[spec].n);
                }
                int32_t *want = ref + ((size_t)way * count + i) * o->n_gen;
                const bool fresh = !rc && !have_ref[way][i];
                if (fresh) {
                    memcpy(want, run[0].ids, run[0].n * sizeof *want);
                    pr->tokens = run[0].n;
                    have_ref[way][i] = true;
                }
                for (int spec = fresh; spec < 2 && !rc; spec++) { // (the reference is not compared with itself)
                    const s_run_t *x = &run[spec];
                    uint32_t at = 0;
                    while (at < x->n && at < pr->tokens && x->ids[at] == want[at]) at++;
                    r->compared++;
                    if (at < x->n || at < pr->tokens)
                        rc = mc_err_set(err, MC_ERR_RANGE,
                                        "tokens differ: prompt %u, %s, %s speculation: token %u is %d, the first "
                                        "run without speculation gave %d (%u and %u tokens)",
                                        i + 1, way ? "seeded sampling" : "greedy", spec ? "with" : "without", at,
                                        at < x->n ? x->ids[at] : -1, at < pr->tokens ? want[at] : -1, x->n,
                                        pr->tokens);
                }
                if (rc || rep < 0) continue;
                for (int spec = 0; spec < 2; spec++) { // the tokens after the first one
                    gen[way][spec] += run[spec].n > 0 ? run[spec].n - 1 : 0;
                    secs[way][spec] += ms[spec].gen_s, cpu[way][spec] += ms[spec].cpu_s;
                }
                if (rep > 0) continue; // the counts below are the same every repetition
                pr->steps_off = ms[0].steps, pr->steps_on = ms[1].steps, pr->spec = ms[1].spec;
                w->steps_off += ms[0].steps, w->steps_on += ms[1].steps, w->tokens += run[1].n;
                w->spec.drafts += ms[1].spec.drafts, w->spec.proposed += ms[1].spec.proposed;
                w->spec.accepted += ms[1].spec.accepted;
            }
        if (rep < 0 || rc) continue;
        for (int way = 0; way < 2; way++) {
            const double off = secs[way][0] > 0 ? gen[way][0] / secs[way][0] : 0;
            const double on = secs[way][1] > 0 ? gen[way][1] / secs[way][1] : 0;
            v[(size_t)(way * 3 + 0) * r->reps + rep] = off;
            v[(size_t)(way * 3 + 1) * r->reps + rep] = on;
            v[(size_t)(way * 3 + 2) * r->reps + rep] = off > 0 ? on / off : 0;
            const double c_off = gen[way][0] > 0 ? 1e3 * cpu[way][0] / gen[way][0] : 0;
            const double c_on = gen[way][1] > 0 ? 1e3 * cpu[way][1] / gen[way][1] : 0;
            v[(size_t)(6 + way * 2 + 0) * r->reps + rep] = c_off;
            v[(size_t)(6 + way * 2 + 1) * r->reps + rep] = c_on;
        }
    }
    if (!rc)
        for (int way = 0; way < 2; way++) {
            mc_bench_spec_way_t *w = way ? &r->seeded : &r->greedy;
            w->off_tok_s = mc_bench_median(v + (size_t)(way * 3 + 0) * r->reps, (size_t)r->reps);
            w->on_tok_s = mc_bench_median(v + (size_t)(way * 3 + 1) * r->reps, (size_t)r->reps);
            w->ratio = mc_bench_median(v + (size_t)(way * 3 + 2) * r->reps, (size_t)r->reps);
            w->off_cpu_ms = mc_bench_median(v + (size_t)(6 + way * 2 + 0) * r->reps, (size_t)r->reps);
            w->on_cpu_ms = mc_bench_median(v + (size_t)(6 + way * 2 + 1) * r->reps, (size_t)r->reps);
        }
    if (attached) o->detach(o->attach_ctx);
    if (!rc) *out = res;
    free(v), free(ref), free(run[0].ids), free(run[1].ids), free(ids);
    mc_engine_destroy(&e);
    mc_tokenizer_destroy(&tok);
    mc_model_destroy(&m);
    return rc;
}

static double s_div(double a, double b) { return b > 0 ? a / b : 0.0; }

void mc_bench_speculate_print(const mc_bench_spec_t *r, FILE *f) {
    fprintf(f, "speculative decoding, K <= %u: %s\n", r->k, r->model);
    if (r->repeat_penalty != 1.0f)
        fprintf(f, "repetition penalty %g over the last 64 tokens in both ways%s\n", (double)r->repeat_penalty,
                r->repeat_penalty < 1.0f ? " (below 1: favoured, the answers loop)" : "");
    fprintf(f, "corpus %s: %u prompts, %llu prompt tokens, %u generated each (EOS ignored); %d threads, %s%s\n",
            r->corpus, r->n_prompts, (unsigned long long)r->prompt_tokens, r->n_gen, r->n_threads,
            r->cluster ? "experts on the nodes of " : "experts local", r->cluster ? r->cluster : "");
    fprintf(f, "%-8s %10s %10s %7s %9s %9s %8s %10s %10s %12s\n", "way", "off tok/s", "on tok/s", "on/off", "proposed",
            "kept", "kept %", "kept/step", "tok/step", "cpu ms/tok");
    const mc_bench_spec_way_t *w[2] = {&r->greedy, &r->seeded};
    const char *name[2] = {"greedy", "seeded"};
    for (int i = 0; i < 2; i++) {
        const mc_bench_spec_way_t *x = w[i];
        // Tokens a step: the ones after the first, over the passes that made them.
        const double gen = (double)(x->tokens - r->n_prompts);
        fprintf(f, "%-8s %10.2f %10.2f %6.3fx %9llu %9llu %7.1f%% %10.2f %10.2f %5.2f %5.2f\n", name[i],
                x->off_tok_s, x->on_tok_s, x->ratio, (unsigned long long)x->spec.proposed,
                (unsigned long long)x->spec.accepted, 100 * s_div((double)x->spec.accepted, (double)x->spec.proposed),
                s_div((double)x->spec.accepted, (double)x->steps_on), s_div(gen, (double)x->steps_on), x->off_cpu_ms,
                x->on_cpu_ms);
    }
    fprintf(f, "per prompt (with speculation: generation steps for the %u tokens after the first; guesses kept of proposed)\n",
            r->n_gen - 1);
    fprintf(f, "%6s %7s %18s %18s\n", "prompt", "tokens", "greedy", "seeded");
    for (uint32_t p = 0; p < r->n_prompts; p++) {
        const mc_bench_spec_prompt_t *g = &r->greedy.prompt[p], *s = &r->seeded.prompt[p];
        fprintf(f, "%6u %7u %5u (%4llu/%4llu) %5u (%4llu/%4llu)\n", p + 1, g->prompt_tokens, g->steps_on,
                (unsigned long long)g->spec.accepted, (unsigned long long)g->spec.proposed, s->steps_on,
                (unsigned long long)s->spec.accepted, (unsigned long long)s->spec.proposed);
    }
    fprintf(f, "tokens identical with and without speculation: %llu runs compared with each prompt's first run without\n",
            (unsigned long long)r->compared);
    fprintf(f, "(tok/s: generated tokens after the first one over their time, the corpus summed; medians of %d\n"
               " repetitions, off and on alternating per prompt; on/off: median of each repetition's ratio;\n"
               " kept/step: guesses kept per generation step; tok/step: tokens per step, 1 without speculation;\n"
               " cpu ms/tok: this process's CPU time per generated token off and on, medians: time a stopped or\n"
               " crowded-out process did not spend; with a cluster the nodes' work is not in it)\n",
            r->reps);
}

// A path as a JSON string literal (quotes, backslashes and control bytes
// escaped; NULL as null) into out, or "" when it does not fit.
static const char *s_json_str(const char *s, char *out, size_t cap) {
    if (!s) return "null";
    size_t w = 0;
    out[w++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (w + 8 >= cap) return "\"\"";
        if (*c == '"' || *c == '\\') out[w++] = '\\', out[w++] = (char)*c;
        else if (*c < 0x20) w += (size_t)snprintf(out + w, cap - w, "\\u%04x", *c);
        else out[w++] = (char)*c;
    }
    out[w++] = '"', out[w] = '\0';
    return out;
}

mc_err_t mc_bench_speculate_json(const mc_bench_spec_t *r, char *buf, size_t cap, char *err) {
    if (cap == 0) return mc_err_set(err, MC_ERR_ARG, "output buffer of 0 bytes");
    char model[1024], corpus[1024], cluster[1024];
    size_t len = 0;
    int n = snprintf(buf, cap,
                     "{\"model\":%s,\"corpus\":%s,\"cluster\":%s,\"threads\":%d,\"reps\":%d,\"k\":%u,"
                     "\"repeat_penalty\":%g,\"tokens_per_prompt\":%u,\"prompts\":%u,\"prompt_tokens\":%llu,\"compared\":%llu,"
                     "\"identical\":true",
                     s_json_str(r->model, model, sizeof model), s_json_str(r->corpus, corpus, sizeof corpus),
                     s_json_str(r->cluster, cluster, sizeof cluster), r->n_threads, r->reps, r->k,
                     (double)r->repeat_penalty, r->n_gen,
                     r->n_prompts, (unsigned long long)r->prompt_tokens, (unsigned long long)r->compared);
    const mc_bench_spec_way_t *w[2] = {&r->greedy, &r->seeded};
    const char *name[2] = {"greedy", "seeded"};
    for (int i = 0; i < 2 && n >= 0 && (size_t)n < cap - len; i++) {
        len += (size_t)n;
        const mc_bench_spec_way_t *x = w[i];
        const double gen = (double)(x->tokens - r->n_prompts);
        n = snprintf(buf + len, cap - len,
                     ",\"%s_off_tok_s\":%.3f,\"%s_on_tok_s\":%.3f,\"%s_ratio\":%.4f,\"%s_tokens\":%llu,"
                     "\"%s_steps_off\":%llu,\"%s_steps_on\":%llu,\"%s_drafts\":%llu,\"%s_proposed\":%llu,"
                     "\"%s_accepted\":%llu,\"%s_accept_rate\":%.4f,\"%s_kept_per_step\":%.4f,\"%s_tokens_per_step\":%.4f,"
                     "\"%s_off_cpu_ms\":%.3f,\"%s_on_cpu_ms\":%.3f",
                     name[i], x->off_tok_s, name[i], x->on_tok_s, name[i], x->ratio, name[i],
                     (unsigned long long)x->tokens, name[i], (unsigned long long)x->steps_off, name[i],
                     (unsigned long long)x->steps_on, name[i], (unsigned long long)x->spec.drafts, name[i],
                     (unsigned long long)x->spec.proposed, name[i], (unsigned long long)x->spec.accepted, name[i],
                     s_div((double)x->spec.accepted, (double)x->spec.proposed), name[i],
                     s_div((double)x->spec.accepted, (double)x->steps_on), name[i], s_div(gen, (double)x->steps_on),
                     name[i], x->off_cpu_ms, name[i], x->on_cpu_ms);
    }
    if (n >= 0 && (size_t)n < cap - len) len += (size_t)n, n = snprintf(buf + len, cap - len, "}");
    if (n < 0 || (size_t)n >= cap - len) return mc_err_set(err, MC_ERR_ARG, "buffer of %zu bytes too small", cap);
    return MC_OK;
}
