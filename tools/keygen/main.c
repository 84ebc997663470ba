/*
 * moe-keygen: writes a CURVE key pair (common/net/keys.h) for a node or a
 * coordinator: DIR/NAME.key (the secret key, mode 0600) and DIR/NAME.pub.
 *
 * Exit status: 0 written, 1 it could not be, 2 bad command line.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"

static void s_usage(FILE *f) {
    fprintf(f, "usage: moe-keygen DIR [NAME]\n"
               "Write a CURVE key pair for moe-expert or moe-coordinator: DIR/NAME.key (secret, mode 0600)\n"
               "and DIR/NAME.pub (public). NAME defaults to this machine's host name. Existing files are\n"
               "never overwritten.\n"
               "\n"
               "  node:        moe-expert ... --secret-key DIR/NAME.key --authorized-keys FILE\n"
               "               (FILE: the coordinators' .pub keys, one per line)\n"
               "  coordinator: cluster file 'secret_key: DIR/NAME.key', and per node 'public_key: <its .pub>'\n");
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        s_usage(stdout);
        return 0;
    }
    if (argc < 2 || argc > 3 || argv[1][0] == '-') {
        s_usage(stderr);
        return 2;
    }
    char name[256], err[MC_ERR_LEN];
    if (argc == 3) snprintf(name, sizeof name, "%s", argv[2]);
    else if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "moe");
    name[sizeof name - 1] = 0;
    if (!name[0] || strchr(name, '/')) {
        fprintf(stderr, "moe-keygen: NAME must be a file name without '/'\n");
        return 2;
    }
    mkdir(argv[1], 0700); // may exist already
    mc_keypair_t kp;
    if (mc_keys_generate(&kp, err) || mc_keys_write(argv[1], name, &kp, err)) {
        fprintf(stderr, "moe-keygen: %s\n", err);
        return 1;
    }
    printf("wrote %s/%s.key (secret) and %s/%s.pub\npublic key: %s\n", argv[1], name, argv[1], name, kp.pub);
    return 0;
}
