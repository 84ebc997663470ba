/*
 * flags: table-driven command lines (see flags.h).
 */
#include "flags.h"

#include <string.h>

#include "parse.h"
#include "pool.h"

static int64_t s_def(const mc_flag_t *f) { return f->def == MC_FLAG_DEF_THREADS ? mc_pool_default_threads() : f->def; }

void mc_flags_init(const mc_flag_t *t, size_t n, void *opts) {
    for (size_t i = 0; i < n; i++) {
        void *field = (char *)opts + t[i].off;
        if (t[i].kind == MC_FLAG_INT) *(int *)field = (int)s_def(&t[i]);
        else if (t[i].kind == MC_FLAG_U32) *(uint32_t *)field = (uint32_t)s_def(&t[i]);
    }
}

mc_err_t mc_flags_parse(const mc_flag_t *t, size_t n, int argc, char **argv, void *opts, bool *help,
                        uint64_t *given, char *err) {
    *help = false;
    if (given) *given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = true;
            return MC_OK;
        }
        size_t k = 0;
        while (k < n && strcmp(a, t[k].name)) k++;
        if (k == n) return mc_err_set(err, MC_ERR_ARG, "unknown flag '%s' (see --help)", a);
        const mc_flag_t *f = &t[k];
        void *field = (char *)opts + f->off;
        if (given && k < 64) *given |= (uint64_t)1 << k;
        if (f->kind == MC_FLAG_SWITCH) {
            *(bool *)field = true;
            continue;
        }
        if (i + 1 >= argc) return mc_err_set(err, MC_ERR_ARG, "%s needs a value", a);
        const char *v = argv[++i];
        int64_t x;
        mc_err_t rc = MC_OK;
        switch (f->kind) {
        case MC_FLAG_FILE:
            if (!*v) return mc_err_set(err, MC_ERR_ARG, "%s needs a file name", a);
            *(const char **)field = v;
            break;
        case MC_FLAG_STRING: *(const char **)field = v; break;
        case MC_FLAG_INT:
        case MC_FLAG_U32:
            if ((rc = mc_parse_i64(a, v, f->lo, f->hi, &x, err))) return rc;
            if (f->kind == MC_FLAG_INT) *(int *)field = (int)x;
            else *(uint32_t *)field = (uint32_t)x;
            break;
        case MC_FLAG_CUSTOM:
            if ((rc = f->parse(a, v, field, err))) return rc;
            break;
        case MC_FLAG_SWITCH: break;
        }
    }
    return MC_OK;
}

// "  NAME ARG" padded to col (two spaces when it reaches col), then text whose
// continuation lines start at col.
static void s_entry(FILE *f, const char *name, const char *arg, const char *text, int col) {
    int w = fprintf(f, "  %s%s%s", name, arg ? " " : "", arg ? arg : "");
    fprintf(f, "%*s", w < col ? col - w : 2, "");
    for (const char *p = text; *p; p++) {
        fputc(*p, f);
        if (*p == '\n') fprintf(f, "%*s", col, "");
    }
}

void mc_flags_usage(FILE *f, const mc_flag_t *t, size_t n, int col) {
    for (size_t i = 0; i < n; i++) {
        s_entry(f, t[i].name, t[i].arg, t[i].help, col);
        if (t[i].kind == MC_FLAG_INT || t[i].kind == MC_FLAG_U32) {
            if (t[i].def == MC_FLAG_DEF_THREADS) fputs(" (default: online CPUs, at most 8; ", f);
            else fprintf(f, " (default %lld, ", (long long)t[i].def);
            fprintf(f, "%lld..%lld)", (long long)t[i].lo, (long long)t[i].hi);
        }
        fputc('\n', f);
    }
    s_entry(f, "--help, -h", NULL, "this text", col);
    fputc('\n', f);
}
