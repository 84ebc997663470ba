/*
 * moe-keygen: writes a CURVE key pair (common/net/keys.h) for a node or a
 * coordinator: DIR/NAME.key (the secret key, mode 0600) and DIR/NAME.pub.
 *
 * Exit status: 0 written, 1 it could not be, 2 bad command line.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flags.h"
#include "keys.h"

typedef struct {
    const char *dir, *name;
} s_opts_t;

static const mc_flag_t s_flags[] = {
    {"DIR", NULL, MC_FLAG_ARG, offsetof(s_opts_t, dir), .help = "the folder of the key files (made when missing)"},
    {"NAME", NULL, MC_FLAG_ARG, offsetof(s_opts_t, name), .help = "the files' name (default: this machine's host name)"},
};
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

static void s_usage(FILE *f) {
    fprintf(f, "usage: moe-keygen DIR [NAME]\n"
               "Write a CURVE key pair for moe-expert or moe-coordinator: DIR/NAME.key (secret, mode 0600)\n"
               "and DIR/NAME.pub (public). Existing files are never overwritten.\n"
               "\n"
               "  node:        moe-expert ... --secret-key DIR/NAME.key --authorized-keys FILE\n"
               "               (FILE: the coordinators' .pub keys, one per line)\n"
               "  coordinator: cluster file 'secret_key: DIR/NAME.key', and per node 'public_key: <its .pub>'\n"
               "\n");
    mc_flags_usage(f, s_flags, S_N_FLAGS, 14, NULL);
}

int main(int argc, char **argv) {
    s_opts_t o = {0};
    bool help;
    char name[256], err[MC_ERR_LEN];
    if (mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &o, &help, NULL, err)) {
        fprintf(stderr, "moe-keygen: %s\n", err);
        return 2;
    }
    if (help) {
        s_usage(stdout);
        return 0;
    }
    if (!o.dir) {
        fprintf(stderr, "moe-keygen: DIR is required (see --help)\n");
        return 2;
    }
    if (o.name) snprintf(name, sizeof name, "%s", o.name);
    else if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "moe");
    name[sizeof name - 1] = 0;
    if (!name[0] || strchr(name, '/')) {
        fprintf(stderr, "moe-keygen: NAME must be a file name without '/'\n");
        return 2;
    }
    mkdir(o.dir, 0700); // may exist already
    mc_keypair_t kp;
    if (mc_keys_generate(&kp, err) || mc_keys_write(o.dir, name, &kp, err)) {
        fprintf(stderr, "moe-keygen: %s\n", err);
        return 1;
    }
    printf("wrote %s/%s.key (secret) and %s/%s.pub\npublic key: %s\n", o.dir, name, o.dir, name, kp.pub);
    return 0;
}
