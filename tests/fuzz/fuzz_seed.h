/*
 * fuzz_seed: what the message fuzzers share to start their corpus. With
 * MC_FUZZ_SEEDS=DIR in the environment (deploy/fuzz.sh), a fuzzer writes
 * valid messages there as seed-NAME files before it starts.
 */
#ifndef MC_FUZZ_SEED_H
#define MC_FUZZ_SEED_H

#include <stdio.h>
#include <stdlib.h>

// buf[0..len) as DIR/seed-name when MC_FUZZ_SEEDS=DIR is set.
static inline void mc_fuzz_seed_write(const char *name, const void *buf, size_t len) {
    const char *dir = getenv("MC_FUZZ_SEEDS");
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) abort();
}

#endif
