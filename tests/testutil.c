/*
 * testutil: fixture discovery and small file helpers for tests.
 */
#include "testutil.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <ftw.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef MC_DEFAULT_FIXTURES
#define MC_DEFAULT_FIXTURES "../shared/fixtures"
#endif

const char *mc_test_fixture(const char *name, char *buf, size_t cap) {
    const char *dir = getenv("MC_FIXTURES");
    if (!dir || !*dir) dir = MC_DEFAULT_FIXTURES;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        const char *req = getenv("MC_REQUIRE_FIXTURES");
        if (req && !strcmp(req, "1")) fail_msg("fixtures folder '%s' is missing (MC_REQUIRE_FIXTURES=1)", dir);
        return NULL;
    }
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

uint8_t *mc_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (!b) return NULL;
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

const char *mc_test_tmpdir(char *buf, size_t cap) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(buf, cap, "%s/mc-test-XXXXXX", base);
    return mkdtemp(buf);
}

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void mc_test_rmtree(const char *path) {
    if (path && *path) nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
