/*
 * flags: table-driven command lines (see flags.h).
 */
#include "flags.h"

#include <string.h>

#include "parse.h"
#include "pool.h"

static int64_t s_def(const mc_flag_t *f) { return f->def == MC_FLAG_DEF_THREADS ? mc_pool_default_threads() : f->def; }

// Whether mc_flags_init writes the row's field.
static bool s_sets_default(const mc_flag_t *f) {
    return (f->kind == MC_FLAG_INT || f->kind == MC_FLAG_U32) && f->def != MC_FLAG_DEF_OWN && f->def != MC_FLAG_DEF_TEXT;
}

void mc_flags_init(const mc_flag_t *t, size_t n, void *opts) {
    for (size_t i = 0; i < n; i++) {
        if (!s_sets_default(&t[i])) continue;
        void *field = (char *)opts + t[i].off;
        if (t[i].kind == MC_FLAG_INT) *(int *)field = (int)s_def(&t[i]);
        else *(uint32_t *)field = (uint32_t)s_def(&t[i]);
    }
}

// The first positional row at or after from; n when none is left.
static size_t s_next_arg(const mc_flag_t *t, size_t n, size_t from) {
    while (from < n && t[from].kind != MC_FLAG_ARG) from++;
    return from;
}

mc_err_t mc_flags_parse(const mc_flag_t *t, size_t n, int argc, char **argv, void *opts, bool *help,
                        uint64_t *given, char *err) {
    *help = false;
    if (given) *given = 0;
    size_t next_arg = s_next_arg(t, n, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = true;
            return MC_OK;
        }
        size_t k = 0;
        if (a[0] != '-' || !a[1]) { // a positional argument ("-" is one too)
            if (next_arg == n) return mc_err_set(err, MC_ERR_ARG, "unexpected argument '%s' (see --help)", a);
            k = next_arg;
            next_arg = s_next_arg(t, n, next_arg + 1);
        } else {
            while (k < n && (t[k].kind == MC_FLAG_ARG || strcmp(a, t[k].name))) k++;
            if (k == n) return mc_err_set(err, MC_ERR_ARG, "unknown flag '%s' (see --help)", a);
        }
        const mc_flag_t *f = &t[k];
        void *field = (char *)opts + f->off;
        if (given && k < 64) *given |= (uint64_t)1 << k;
        if (f->kind == MC_FLAG_ARG) {
            *(const char **)field = a;
            continue;
        }
        if (f->kind == MC_FLAG_SWITCH) {
            *(bool *)field = true;
            continue;
        }
        if (i + 1 >= argc) return mc_err_set(err, MC_ERR_ARG, "%s needs a value", a);
        const char *v = argv[++i];
        int64_t x;
        uint64_t u;
        float fl;
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
        case MC_FLAG_U64:
            if ((rc = mc_parse_u64(a, v, UINT64_MAX, &u, err))) return rc;
            *(uint64_t *)field = u;
            break;
        case MC_FLAG_F32:
            if ((rc = mc_parse_f32(a, v, (float)f->flo, (float)f->fhi, &fl, err))) return rc;
            *(float *)field = fl;
            break;
        case MC_FLAG_CUSTOM:
            if ((rc = f->parse(a, v, field, err))) return rc;
            break;
        case MC_FLAG_SWITCH:
        case MC_FLAG_ARG: break;
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

// A number's default and range after its text: " (default 8080, 0..65535)".
static void s_bounds(FILE *f, const mc_flag_t *r, const void *defaults) {
    const void *field = defaults ? (const char *)defaults + r->off : NULL;
    const bool own = r->def == MC_FLAG_DEF_OWN ||
                     ((r->kind == MC_FLAG_F32 || r->kind == MC_FLAG_U64) && r->def != MC_FLAG_DEF_TEXT);
    fputs(" (", f);
    if (r->def == MC_FLAG_DEF_THREADS) {
        fputs("default: online CPUs, at most 8; ", f);
    } else if (own && field) {
        switch (r->kind) {
        case MC_FLAG_INT: fprintf(f, "default %d, ", *(const int *)field); break;
        case MC_FLAG_U32: fprintf(f, "default %u, ", (unsigned)*(const uint32_t *)field); break;
        case MC_FLAG_U64: fprintf(f, "default %llu, ", (unsigned long long)*(const uint64_t *)field); break;
        case MC_FLAG_F32: fprintf(f, "default %g, ", (double)*(const float *)field); break;
        default: break;
        }
    } else if (!own && r->def != MC_FLAG_DEF_TEXT) {
        fprintf(f, "default %lld, ", (long long)r->def);
    }
    if (r->kind == MC_FLAG_F32) fprintf(f, "%g..%g)", r->flo, r->fhi);
    else if (r->kind == MC_FLAG_U64) fprintf(f, "0..%llu)", (unsigned long long)UINT64_MAX);
    else fprintf(f, "%lld..%lld)", (long long)r->lo, (long long)r->hi);
}

void mc_flags_usage(FILE *f, const mc_flag_t *t, size_t n, int col, const void *defaults) {
    for (size_t i = 0; i < n; i++) {
        s_entry(f, t[i].name, t[i].arg, t[i].help, col);
        const mc_flag_kind_t k = t[i].kind;
        if (k == MC_FLAG_INT || k == MC_FLAG_U32 || k == MC_FLAG_U64 || k == MC_FLAG_F32) s_bounds(f, &t[i], defaults);
        fputc('\n', f);
    }
    s_entry(f, "--help, -h", NULL, "this text", col);
    fputc('\n', f);
}
