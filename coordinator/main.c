/*
 * moe-coordinator: entry point. Parses the command line and runs it; all the
 * work lives in cli.c and common/.
 */
#include <stdio.h>

#include "cli.h"

int main(int argc, char **argv) {
    mc_cli_opts_t o;
    mc_cli_opts_init(&o);
    char err[MC_ERR_LEN];
    if (mc_cli_parse(argc, argv, &o, err) != MC_OK) {
        fprintf(stderr, "moe-coordinator: %s\n", err);
        mc_cli_opts_free(&o);
        return 2;
    }
    int rc = mc_cli_run(&o);
    mc_cli_opts_free(&o);
    return rc;
}
