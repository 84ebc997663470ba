/*
 * moe-convert: command-line front end of tools/convert: a Hugging Face
 * model folder to a GGUF file.
 *
 * Exit status: 0 written, 1 the conversion failed, 2 bad command line.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "convert.h"
#include "flags.h"

#define S_PROG "moe-convert"

typedef struct {
    const char *hf_dir, *out; // the two arguments
    mc_convert_params_t p;
    bool quiet;
} s_opts_t;

// --type T: "auto" or a weight type, into the parameters' type and type_auto.
static mc_err_t s_parse_type(const char *flag, const char *v, void *field, char *err) {
    mc_convert_params_t *p = field;
    if (!strcmp(v, "auto")) {
        p->type_auto = true;
        return MC_OK;
    }
    mc_dtype_t t;
    const mc_dtype_traits_t *tr = mc_dtype_from_name(v, &t) ? mc_dtype_traits(t) : NULL;
    if (!tr || !tr->weight) return mc_err_set(err, MC_ERR_ARG, "%s: '%s' is not a weight type (see --help)", flag, v);
    p->type = t;
    p->type_auto = false;
    return MC_OK;
}

#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(s_opts_t, field)
static const mc_flag_t s_flags[] = {
    {S_ROW("HF_DIR", NULL, MC_FLAG_ARG, hf_dir), .help = "the model folder"},
    {S_ROW("OUT.gguf", NULL, MC_FLAG_ARG, out), .help = "the file to write"},
    {S_ROW("--type", "T", MC_FLAG_CUSTOM, p), .parse = s_parse_type,
     .help = "weight matrices: auto (the source's F32/F16/BF16, the default), F32, F16,\n"
             "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4\n"
             "(the experts; the other matrices F32); a matrix\n"
             "whose rows are not whole blocks falls back to Q8_0, else F16; norms and\n"
             "routers stay F32"},
    {S_ROW("--name", "NAME", MC_FLAG_STRING, p.name), .help = "general.name (default: the folder's name)"},
    {S_ROW("--quiet", NULL, MC_FLAG_SWITCH, quiet), .help = "no summary"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: " S_PROG " HF_DIR OUT.gguf [--type T] [--name NAME] [--quiet]\n"
            "Convert a Hugging Face model folder (config.json, *.safetensors, tokenizer.model or\n"
            "tokenizer.json) into a GGUF file for moe-cluster and llama.cpp.\n"
            "Architectures: %s.\n",
            mc_convert_architectures());
    mc_flags_usage(f, s_flags, S_N_FLAGS, 15, NULL);
}

int main(int argc, char **argv) {
    s_opts_t o = {.p = mc_convert_params_default()};
    bool help;
    char err[MC_ERR_LEN] = "";
    if (mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &o, &help, NULL, err)) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 2;
    }
    if (help) {
        s_usage(stdout);
        return 0;
    }
    if (!o.hf_dir || !o.out) {
        fprintf(stderr, S_PROG ": HF_DIR and OUT.gguf are required (see --help)\n");
        return 2;
    }
    o.p.log = o.quiet ? NULL : stdout;
    if (mc_convert(o.hf_dir, o.out, &o.p, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 1;
    }
    return 0;
}
