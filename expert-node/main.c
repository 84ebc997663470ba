/*
 * moe-expert: entry point. Parses the command line, serves until SIGINT or
 * SIGTERM; all the work lives in node.c and common/ (nothing of the
 * coordinator's is linked in: see CMakeLists.txt).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>

#include "node.h"
#include "profile.h"

// The one piece of process-wide state: set to the signal's number by the
// handler, polled by the serving loop at least every 100 ms.
static atomic_int s_stop;

static void s_on_signal(int sig) { atomic_store(&s_stop, sig); }

int main(int argc, char **argv) {
    mc_node_params_t p = mc_node_params_default();
    p.log = stderr;
    bool help;
    char err[MC_ERR_LEN];
    if (mc_node_parse_args(argc, argv, &p, &help, err) != MC_OK) {
        fprintf(stderr, "moe-expert: %s\n", err);
        return 2;
    }
    if (help) {
        mc_node_usage(stdout);
        return 0;
    }
    if (p.profile) {
        const mc_profile_params_t pp = {.model = p.model, .name = p.name, .threads = p.threads};
        if (mc_profile_run(&pp, stdout, err) != MC_OK) {
            fprintf(stderr, "moe-expert: %s\n", err);
            return 1;
        }
        return 0;
    }
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    mc_node_t *n = mc_node_new(&p, err);
    if (!n) {
        fprintf(stderr, "moe-expert: %s\n", err);
        return 1;
    }
    // The one stdout line: where it listens (a tcp://host:* port resolved),
    // for scripts and moe-coordinator --demo.
    printf("moe-expert: listening on %s\n", mc_node_endpoint(n));
    fflush(stdout);
    mc_err_t rc = mc_node_run(n, &s_stop, err);
    mc_node_destroy(&n);
    if (rc != MC_OK) {
        fprintf(stderr, "moe-expert: %s\n", err);
        return 1;
    }
    return 0;
}
