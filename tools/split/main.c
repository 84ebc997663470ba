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
    mc_flags_usage(f, s_flags, S_N_FLAGS, 16);
}

int main(int argc, char **argv) {
    mc_split_params_t p = mc_split_params_default();
    mc_flags_init(s_flags, S_N_FLAGS, &p);
    p.log = stderr;
    char err[256];
    bool help = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) help = true;
    if (help) {
        s_usage(stdout);
        return 0;
    }
    if (argc < 4 || argv[1][0] == '-' || argv[2][0] == '-' || argv[3][0] == '-') {
        s_usage(stderr);
        return 2;
    }
    p.model = argv[1], p.cluster = argv[2], p.outdir = argv[3];
    argv[3] = argv[0];
    if (mc_flags_parse(s_flags, S_N_FLAGS, argc - 3, argv + 3, &p, &help, NULL, err) != MC_OK) {
        fprintf(stderr, "moe-split: %s\n", err);
        return 2;
    }
    if (mc_split_run(&p, err) != MC_OK) {
        fprintf(stderr, "moe-split: %s\n", err);
        return 1;
    }
    return 0;
}
