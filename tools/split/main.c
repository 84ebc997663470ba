/*
 * moe-split: entry point (the work is in split.c). Exit status: 0 every
 * file written, 1 it could not be, 2 bad command line.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "flags.h"
#include "split.h"

#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(mc_split_params_t, field)
static const mc_flag_t s_flags[] = {
    {S_ROW("MODEL", NULL, MC_FLAG_ARG, model), .help = "the whole model (GGUF), as the coordinator has it"},
    {S_ROW("CLUSTER.yaml", NULL, MC_FLAG_ARG, cluster), .help = "the cluster file: which node holds which experts"},
    {S_ROW("OUTDIR", NULL, MC_FLAG_ARG, outdir), .help = "where NAME.gguf and NAME.gguf.mcidx go (made when missing)"},
    {S_ROW("--threads", "N", MC_FLAG_INT, threads), MC_FLAG_DEF_THREADS, 1, 512, .help = "threads hashing the slices"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

static void s_usage(FILE *f) {
    fprintf(f, "usage: moe-split MODEL CLUSTER.yaml OUTDIR [--threads N]\n"
               "Write one GGUF per node of the cluster file, OUTDIR/NAME.gguf, with just the experts\n"
               "that node holds (and their slice hashes beside it, NAME.gguf.mcidx). Give it to the\n"
               "node as --model, or put it into the node's --cache-dir as a warm cache. The\n"
               "coordinator keeps the whole model.\n\n");
    mc_flags_usage(f, s_flags, S_N_FLAGS, 16, NULL);
}

int main(int argc, char **argv) {
    mc_split_params_t p = mc_split_params_default();
    mc_flags_init(s_flags, S_N_FLAGS, &p);
    char err[MC_ERR_LEN];
    bool help;
    if (mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &p, &help, NULL, err) != MC_OK) {
        fprintf(stderr, "moe-split: %s\n", err);
        return 2;
    }
    if (help) {
        s_usage(stdout);
        return 0;
    }
    if (!p.model || !p.cluster || !p.outdir) {
        fprintf(stderr, "moe-split: MODEL, CLUSTER.yaml and OUTDIR are required (see --help)\n");
        return 2;
    }
    p.log = stderr;
    if (mc_split_run(&p, err) != MC_OK) {
        fprintf(stderr, "moe-split: %s\n", err);
        return 1;
    }
    return 0;
}
