/*
 * moe-expert: entry point. Parses the command line, serves until SIGINT or
 * SIGTERM; all the work lives in node.c and common/ (nothing of the
 * coordinator's is linked in: see CMakeLists.txt).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "keys.h"
#include "node.h"
#include "profile.h"

// The one piece of process-wide state: set to the signal's number by the
// handler, polled by the serving loop at least every 100 ms.
static atomic_int s_stop;

static void s_on_signal(int sig) { atomic_store(&s_stop, sig); }

// --announce: the service on the bound port, with the public key of
// --secret-key (derived from the secret one).
static mc_err_t s_announce(const mc_node_t *n, const mc_node_params_t *p, mc_announce_t **out, char *err) {
    const char *colon = strrchr(mc_node_endpoint(n), ':');
    char *end;
    const unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (!port || port > 65535 || *end) return mc_err_set(err, MC_ERR_ARG, "--announce: no port in %s", mc_node_endpoint(n));
    mc_keypair_t kp;
    memset(&kp, 0, sizeof kp);
    if (p->secret_key && mc_keys_load_secret(p->secret_key, &kp, err)) return mc_err_code(err, MC_ERR_ARG);
    const mc_announce_params_t ap = {.name = mc_node_name(n), .port = (uint16_t)port,
                                     .public_key = p->secret_key ? kp.pub : NULL, .cache = p->cache_dir != NULL,
                                     .log = p->log};
    *out = mc_announce_new(&ap, err);
    explicit_bzero(kp.sec, sizeof kp.sec);
    return *out ? MC_OK : mc_err_code(err, MC_ERR_NET);
}

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
    mc_announce_t *a = NULL;
    if (p.announce && s_announce(n, &p, &a, err) != MC_OK) {
        fprintf(stderr, "moe-expert: %s\n", err);
        mc_node_destroy(&n);
        return 1;
    }
    mc_err_t rc = mc_node_run(n, &s_stop, err);
    mc_announce_destroy(&a);
    mc_node_destroy(&n);
    if (rc != MC_OK) {
        fprintf(stderr, "moe-expert: %s\n", err);
        return 1;
    }
    return 0;
}
