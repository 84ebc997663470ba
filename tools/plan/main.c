/*
 * moe-plan: command-line front end of tools/plan: plan a placement, or
 * predict (--simulate) what given cluster files would do. Exit status: 0
 * done, 1 the run failed, 2 bad command line.
 */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_config.h"
#include "file.h"
#include "flags.h"
#include "model.h"
#include "parse.h"
#include "plan.h"
#include "routing.h"

#define S_PROG "moe-plan"
#define S_MAX_FILES 64

// Files of a repeatable flag (--compare, --simulate), in order.
typedef struct {
    const char *file[S_MAX_FILES];
    size_t n;
} s_files_t;

typedef struct {
    const char *model, *routing, *machines, *out, *stats;
    s_files_t compare, simulate;
    bool naive, no_local, no_replicas;
    uint32_t coord_mem_limit; // --coord-mem-limit: the coordinator's --mem-limit, for predictions
    mc_plan_params_t pp;
} s_opts_t;

static mc_err_t s_parse_file(const char *flag, const char *v, void *field, char *err) {
    s_files_t *l = field;
    if (!*v) return mc_err_set(err, MC_ERR_ARG, "%s needs a file name", flag);
    if (l->n == S_MAX_FILES) return mc_err_set(err, MC_ERR_ARG, "%s: more than %d files", flag, S_MAX_FILES);
    l->file[l->n++] = v;
    return MC_OK;
}

static mc_err_t s_parse_gain(const char *flag, const char *v, void *field, char *err) {
    return mc_parse_f64(flag, v, 0, 10, field, err);
}

static mc_err_t s_parse_wire(const char *flag, const char *v, void *field, char *err) {
    if (!mc_wire_enc_from_name(v, field)) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not an encoding", flag, v);
    return MC_OK;
}

#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(s_opts_t, field)
static const mc_flag_t s_flags[] = {
    {S_ROW("--model", "FILE", MC_FLAG_FILE, model), .help = "the GGUF model (its experts' sizes and weight types)"},
    {S_ROW("--routing", "FILE", MC_FLAG_FILE, routing),
     .help = "routing statistics with a trace (moe-coordinator --routing-stats,\n"
             "--profile-routing, or moe-bench --routing-stats)"},
    {S_ROW("--machines", "FILE", MC_FLAG_FILE, machines),
     .help = "YAML: the coordinator (a `moe-coordinator --profile` entry) and the\n"
             "nodes (each a `moe-expert --profile` entry), plus endpoint,\n"
             "latency_ms, bandwidth_mbps, host and cores"},
    {S_ROW("-o", "FILE", MC_FLAG_FILE, out), .help = "write the planned cluster file here (default: stdout)"},
    {S_ROW("--batch", "B", MC_FLAG_U32, pp.sim.batch), MC_FLAG_DEF_OWN, 1, 4096,
     .help = "streams decoded together, the batch to plan for"},
    {S_ROW("--wire", "ENC", MC_FLAG_CUSTOM, pp.sim.wire), .parse = s_parse_wire,
     .help = "the cluster's wire encoding (default auto)"},
    {S_ROW("--compare", "FILE", MC_FLAG_CUSTOM, compare), .parse = s_parse_file,
     .help = "also predict FILE and print the ratio (repeatable)"},
    {S_ROW("--simulate", "FILE", MC_FLAG_CUSTOM, simulate), .parse = s_parse_file,
     .help = "only predict FILE, no plan (repeatable)"},
    {S_ROW("--naive", NULL, MC_FLAG_SWITCH, naive),
     .help = "write the equal split (experts in equal ranges over the nodes)\n"
             "instead of a plan, e.g. to compare"},
    {S_ROW("--no-local", NULL, MC_FLAG_SWITCH, no_local), .help = "keep every expert off the coordinator"},
    {S_ROW("--no-replicas", NULL, MC_FLAG_SWITCH, no_replicas), .help = "hold every (layer, expert) once"},
    {S_ROW("--steps", "N", MC_FLAG_U32, pp.sim.max_steps), MC_FLAG_DEF_TEXT, 1, 1 << 24,
     .help = "trace steps a prediction replays (default: all)"},
    {S_ROW("--min-gain", "F", MC_FLAG_CUSTOM, pp.min_gain), .parse = s_parse_gain,
     .help = "keep the naive split unless the plan is predicted at least this\n"
             "much faster (default 0.15: the simulator's measured error; 0: any gain)"},
    {S_ROW("--coord-mem-limit", "MB", MC_FLAG_U32, coord_mem_limit), MC_FLAG_DEF_TEXT, 1, 1 << 24,
     .help = "predictions: the coordinator runs with --mem-limit MB (default: none,\n"
             "every local expert resident)"},
    {S_ROW("--stats", "FILE", MC_FLAG_FILE, stats),
     .help = "take each node's latency_ms from a run's statistics\n"
             "(moe-coordinator --stats-json): mean round trip less its compute"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: moe-plan --model FILE --routing FILE --machines FILE [-o CLUSTER.yaml] [options]\n"
            "       moe-plan --model FILE --routing FILE --machines FILE --simulate CLUSTER.yaml\n"
            "                [--simulate CLUSTER.yaml...]\n"
            "\n"
            "Writes a cluster file that fits every machine's memory (or, when the model does not\n"
            "fit, reads the coldest experts from the disks of machines with the disk tier) and\n"
            "minimises the predicted\n"
            "time per token (per-layer splits, replicas of hot experts, experts on the coordinator\n"
            "when that pays), and explains it; or predicts tokens/s and per-machine load of given\n"
            "cluster files. Predictions replay the routing trace against the machines' measured\n"
            "profiles (see docs/PLACEMENT.md).\n"
            "\n");
    const s_opts_t d = {.pp = mc_plan_params_default()};
    mc_flags_usage(f, s_flags, S_N_FLAGS, 20, &d);
    fprintf(f, "\n"
               "The report gives per machine: experts, the (layer, expert) pairs it holds; replicas,\n"
               "those also held elsewhere; memory MiB, used/budget; choices/step, the (token, expert)\n"
               "pairs it computes in one step of --batch tokens, summed over the layers; busy, its\n"
               "expert compute (its measured speed, alone) as a share of the predicted step time;\n"
               "KB/step, the bytes on its link, both ways. When machines with the disk tier (disk_read_mb_s\n"
               "and disk_latency_ms in their entry) hold more than their memory: resident MiB, the\n"
               "experts kept in memory; hits, the share of its experts' uses that find them there;\n"
               "read ms/step, the time its reads of the others take (latency + bytes / rate).\n");
}

static int s_bad(const char *msg) {
    fprintf(stderr, S_PROG ": %s\n", msg);
    return 2;
}

// -1: --help; 0: o is ready; 2: a bad command line (said on stderr).
static int s_parse(int argc, char **argv, s_opts_t *o) {
    char err[MC_ERR_LEN];
    bool help;
    if (mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, o, &help, NULL, err)) return s_bad(err);
    if (help) return -1;
    o->pp.local = !o->no_local;
    o->pp.replicas = !o->no_replicas;
    if (!o->model || !o->routing || !o->machines) return s_bad("--model, --routing and --machines are required (see --help)");
    if (o->simulate.n && (o->naive || o->out || o->compare.n))
        return s_bad("--simulate only predicts: no -o, --naive or --compare (see --help)");
    return 0;
}

static int s_fail(const char *msg) {
    fprintf(stderr, S_PROG ": %s\n", msg);
    return 1;
}

// Node latencies from `--stats-json` output: for each node that answered,
// the mean round trip less the mean compute time of a request.
static int s_apply_stats(const char *path, mc_plan_machines_t *ms) {
    // --stats-json output may outgrow a machines file, so a larger bound; a file
    // over it is refused, not cut and parsed as far as it goes.
    char *buf, err[MC_ERR_LEN];
    size_t len;
    if (mc_file_read(path, MC_PLAN_MAX_FILE_BYTES * 16, &buf, &len, err)) return s_fail(err);
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(root, "nodes");
    if (!cJSON_IsArray(nodes)) {
        cJSON_Delete(root);
        return s_fail("the --stats file has no 'nodes' list (moe-coordinator --stats-json writes one)");
    }
    const cJSON *n;
    cJSON_ArrayForEach(n, nodes) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(n, "name");
        const cJSON *rtt = cJSON_GetObjectItemCaseSensitive(n, "rtt_mean_ms");
        const cJSON *comp = cJSON_GetObjectItemCaseSensitive(n, "compute_ms");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(n, "requests");
        if (!cJSON_IsString(name) || !cJSON_IsNumber(rtt) || !cJSON_IsNumber(comp) || !cJSON_IsNumber(req) ||
            req->valuedouble < 1)
            continue;
        const double lat = rtt->valuedouble - comp->valuedouble / req->valuedouble;
        for (size_t i = 1; i < ms->n; i++)
            if (!strcmp(ms->m[i].name, name->valuestring) && lat >= 0 && lat < 1e6) {
                ms->m[i].latency_ms = lat;
                printf("# %s: latency %.3f ms from %s\n", ms->m[i].name, lat, path);
            }
    }
    cJSON_Delete(root);
    return 0;
}

// Predict the cluster file at path; *tok_s receives its speed.
static int s_predict(const char *path, const mc_plan_shape_t *s, const mc_plan_machines_t *ms,
                     const mc_routing_stats_t *st, const mc_plan_sim_params_t *sp, uint32_t coord_limit_mb,
                     double *tok_s) {
    char err[MC_ERR_LEN];
    mc_cluster_config_t *c = mc_cluster_config_load(path, err);
    if (!c) return s_fail(err);
    mc_plan_placement_t p;
    mc_plan_sim_t r;
    mc_plan_sim_params_t own = *sp;
    own.wire = c->wire; // the file's encoding
    int ret = 0;
    // The machines as this file runs them: what bounds each one's resident
    // experts is its limit (mc_plan_machines_as_run).
    mc_plan_machines_t lim;
    if (mc_plan_machines_as_run(ms, c, coord_limit_mb, &lim, err)) {
        mc_cluster_config_destroy(&c);
        return s_fail(err);
    }
    for (size_t j = 0; j < lim.n; j++)
        if (lim.m[j].mem_limit_mb && !lim.m[j].disk_tier)
            fprintf(stderr,
                    S_PROG ": warning: %s: %s runs under a memory limit of %u MiB but its machine entry has no disk "
                    "figures (disk_read_mb_s, disk_latency_ms): its reads are not predicted\n",
                    path, lim.m[j].name, lim.m[j].mem_limit_mb);
    ms = &lim;
    if (mc_plan_placement_from_config(c, ms, s, &p, err)) ret = s_fail(err);
    else {
        if (mc_plan_check_memory(&p, ms, s, err)) fprintf(stderr, S_PROG ": warning: %s: %s\n", path, err);
        if (mc_plan_simulate(s, ms, st, &p, &own, &r, err)) ret = s_fail(err);
        else {
            mc_plan_report(stdout, path, &p, ms, s, &r);
            *tok_s = r.tok_s;
            mc_plan_sim_free(&r);
        }
        mc_plan_placement_free(&p);
    }
    mc_plan_machines_free(&lim);
    mc_cluster_config_destroy(&c);
    return ret;
}

int main(int argc, char **argv) {
    s_opts_t o = {.pp = mc_plan_params_default()};
    int ret = s_parse(argc, argv, &o);
    if (ret < 0) {
        s_usage(stdout);
        return 0;
    }
    if (ret) return ret;
    char err[MC_ERR_LEN];
    mc_plan_machines_t ms = {0};
    mc_routing_stats_t st = {0};
    mc_plan_shape_t s = {0};
    mc_model_t *m = NULL;
    char *model_abs = NULL;
    if (mc_plan_machines_load(o.machines, &ms, err) || mc_routing_load(o.routing, &st, err) ||
        !(m = mc_model_open(o.model, err)) || mc_plan_shape_from_model(m, &s, err)) {
        ret = s_fail(err);
        goto done;
    }
    if (o.stats && (ret = s_apply_stats(o.stats, &ms))) goto done;
    printf("# moe-plan: %s, %u layers x %u experts (%u used), %zu machines, batch %u, wire %s; trace of %u tokens\n",
           o.model, s.n_layer, s.n_expert, s.k, ms.n, o.pp.sim.batch, mc_wire_enc_name(o.pp.sim.wire), st.n_trace);
    if (o.simulate.n) {
        for (size_t i = 0; i < o.simulate.n && !ret; i++) {
            double t;
            ret = s_predict(o.simulate.file[i], &s, &ms, &st, &o.pp.sim, o.coord_mem_limit, &t);
        }
        goto done;
    }
    mc_plan_placement_t p = {0};
    if (o.naive ? mc_plan_naive(&ms, &s, &p, err) : mc_plan_make(&s, &ms, &st, &o.pp, &p, err)) {
        ret = s_fail(err);
        goto done;
    }
    mc_plan_sim_t r;
    mc_cluster_config_t *c = NULL;
    // The cluster file resolves a relative model path from its own folder.
    model_abs = realpath(o.model, NULL);
    if (mc_plan_simulate(&s, &ms, &st, &p, &o.pp.sim, &r, err)) {
        mc_plan_placement_free(&p);
        ret = s_fail(err);
        goto done;
    }
    if (mc_plan_placement_to_config(&p, &ms, model_abs ? model_abs : o.model, o.pp.sim.wire, &c, err)) {
        mc_plan_sim_free(&r);
        mc_plan_placement_free(&p);
        ret = s_fail(err);
        goto done;
    }
    if (mc_plan_check_memory(&p, &ms, &s, err)) fprintf(stderr, S_PROG ": warning: %s\n", err);
    // Machines holding more than their memory run under a limit: the nodes'
    // in the cluster file, the coordinator's on its command line.
    const uint32_t coord_limit = mc_plan_mem_limits(&p, &ms, &s, c);
    bool kept_naive = false; // the plan's predicted gain was below --min-gain
    if (!o.naive) {
        mc_plan_placement_t q = {0};
        kept_naive = !mc_plan_naive(&ms, &s, &q, err) &&
                     !memcmp(q.held, p.held, ms.n * (size_t)s.n_layer * s.n_expert);
        mc_plan_placement_free(&q);
    }
    mc_plan_report(stdout, o.naive || kept_naive ? "equal split" : "plan", &p, &ms, &s, &r);
    if (kept_naive)
        printf("  the equal split is kept: no placement was predicted at least %.0f%% faster (--min-gain; a\n"
               "  smaller gain is within the simulator's measured error)\n",
               100 * o.pp.min_gain);
    if (coord_limit) printf("  run the coordinator with --mem-limit %u (its experts outgrow its memory)\n", coord_limit);
    const double planned = r.tok_s;
    mc_plan_sim_free(&r);
    mc_plan_placement_free(&p);
    for (size_t i = 0; i < o.compare.n && !ret; i++) {
        double t = 0;
        ret = s_predict(o.compare.file[i], &s, &ms, &st, &o.pp.sim, o.coord_mem_limit, &t);
        if (!ret) printf("  %s: the plan is predicted %.2fx its speed\n", o.compare.file[i], t > 0 ? planned / t : 0.0);
    }
    if (!ret) {
        FILE *f = o.out ? fopen(o.out, "w") : stdout;
        if (!f) ret = s_fail("cannot write the output file");
        else {
            if (!o.out) printf("---\n");
            fprintf(f, "# written by moe-plan for batch %u (%.1f tok/s predicted)\n", o.pp.sim.batch, planned);
            if (coord_limit) fprintf(f, "# run the coordinator with --mem-limit %u\n", coord_limit);
            if (mc_cluster_config_write(c, f, err)) ret = s_fail(err);
            if (o.out && fclose(f)) ret = s_fail("writing the output file failed");
            if (!ret && o.out) printf("wrote %s\n", o.out);
        }
    }
    mc_cluster_config_destroy(&c);
done:
    free(model_abs);
    mc_model_destroy(&m);
    mc_plan_shape_free(&s);
    mc_routing_stats_free(&st);
    mc_plan_machines_free(&ms);
    return ret;
}
