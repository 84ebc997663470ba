/*
 * moe-convert: command-line front end of tools/convert: a Hugging Face
 * model folder to a GGUF file.
 *
 * Exit status: 0 written, 1 the conversion failed, 2 bad command line.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "convert.h"

#define S_PROG "moe-convert"

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: " S_PROG " HF_DIR OUT.gguf [--type T] [--name NAME] [--quiet]\n"
            "Convert a Hugging Face model folder (config.json, *.safetensors, tokenizer.model or\n"
            "tokenizer.json) into a GGUF file for moe-cluster and llama.cpp.\n"
            "Architectures: %s.\n"
            "  --type T     weight matrices: auto (the source's F32/F16/BF16, the default), F32, F16,\n"
            "               BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; a matrix\n"
            "               whose rows are not whole blocks falls back to Q8_0, else F16; norms and\n"
            "               routers stay F32\n"
            "  --name NAME  general.name (default: the folder's name)\n"
            "  --quiet      no summary\n"
            "  --help       show this text\n",
            mc_convert_architectures());
}

int main(int argc, char **argv) {
    mc_convert_params_t p = mc_convert_params_default();
    p.log = stdout;
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            p.log = NULL;
        } else if (!strcmp(a, "--type") || !strcmp(a, "--name")) {
            if (i + 1 >= argc) {
                fprintf(stderr, S_PROG ": %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--name")) {
                p.name = v;
            } else if (!strcmp(v, "auto")) {
                p.type_auto = true;
            } else {
                const mc_dtype_traits_t *tr = NULL;
                if (mc_dtype_from_name(v, &p.type)) tr = mc_dtype_traits(p.type);
                if (!tr || !tr->weight) {
                    fprintf(stderr, S_PROG ": --type: '%s' is not a weight type (see --help)\n", v);
                    return 2;
                }
                p.type_auto = false;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, S_PROG ": unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, S_PROG ": too many arguments (see --help)\n");
            return 2;
        }
    }
    if (n_pos != 2) {
        s_usage(stderr);
        return 2;
    }
    char err[MC_ERR_LEN] = "";
    if (mc_convert(pos[0], pos[1], &p, err) != MC_OK) {
        fprintf(stderr, S_PROG ": %s\n", err);
        return 1;
    }
    return 0;
}
