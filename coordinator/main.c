/*
 * moe-coordinator: entry point. Parses the command line and runs it; all the
 * work lives in cli.c and the modules it calls.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>

#include "cli.h"

// The one piece of process-wide state: set to the signal's number by the
// handler; generation loops, the chat and the server poll it.
static atomic_int s_stop;

static void s_on_signal(int sig) { atomic_store(&s_stop, sig); }

// And SIGHUP's under --serve: read the cluster file again (the server polls it).
static atomic_int s_reload;

static void s_on_hangup(int sig) { atomic_store(&s_reload, sig); }

int main(int argc, char **argv) {
    mc_cli_opts_t o;
    mc_cli_opts_init(&o);
    char err[MC_ERR_LEN];
    if (mc_cli_parse(argc, argv, &o, err) != MC_OK) {
        fprintf(stderr, "moe-coordinator: %s\n", err);
        mc_cli_opts_free(&o);
        return 2;
    }
    // No SA_RESTART: a terminal chat blocked reading a line sees Ctrl-C.
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (o.mode == MC_CLI_MODE_SERVE) {
        struct sigaction hup = {.sa_handler = s_on_hangup, .sa_flags = SA_RESTART};
        sigemptyset(&hup.sa_mask);
        sigaction(SIGHUP, &hup, NULL);
        o.reload = &s_reload;
    }
    int rc = mc_cli_run(&o, &s_stop);
    mc_cli_opts_free(&o);
    return rc;
}
