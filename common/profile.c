/*
 * profile: timing loops over one expert's step, /proc/meminfo, cold reads
 * of expert slices from the model file, and the YAML of one machine.
 */
#include "profile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clock.h"
#include "kernel.h"
#include "moe.h"
#include "pool.h"
#include "rng.h"

#define S_SAMPLE_S 0.15 // seconds per measurement, at least
const uint32_t mc_profile_rows[MC_PROFILE_N_ROWS] = {1, 2, 4, 8, 16, 32};

static uint64_t s_meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            sscanf(line + n + 1, "%llu", &kb);
            break;
        }
    if (f) fclose(f);
    return (uint64_t)kb * 1024;
}

// Milliseconds per call of the expert step: r rows all through one expert,
// a different one each call, cycling through the n_pairs (layer, expert)
// pairs of the same types (the median of three samples). Cycling matters:
// one expert's weights can sit in a core's L2 cache, but a real step reads
// every expert it uses from memory.
static mc_err_t s_expert_ms(mc_moe_t *moe, const mc_model_t *m, const uint32_t (*pairs)[2], size_t n_pairs,
                            uint32_t r, double *ms, char *err) {
    const uint32_t dim = m->hp.dim, k = m->hp.n_expert_used;
    float *x = malloc((size_t)r * dim * sizeof(float)), *out = malloc((size_t)r * dim * sizeof(float));
    int32_t *ex = malloc((size_t)r * k * sizeof(int32_t));
    float *w = malloc((size_t)r * k * sizeof(float));
    if (!x || !out || !ex || !w) {
        free(x), free(out), free(ex), free(w);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    mc_rng_t rng; // a fixed seed: every sample times the same activations
    mc_rng_seed(&rng, 12345);
    for (size_t i = 0; i < (size_t)r * dim; i++) x[i] = (float)(mc_rng_uniform(&rng) - 0.5);
    for (size_t i = 0; i < (size_t)r * k; i++) w[i] = 1.0f;
    double samples[3];
    mc_err_t rc = MC_OK;
    size_t next = 0;
    for (int t = 0; t < 3 && !rc; t++) {
        const double t0 = mc_clock_s();
        int calls = 0;
        do {
            const uint32_t *pe = pairs[next++ % n_pairs];
            for (size_t i = 0; i < (size_t)r * k; i++) ex[i] = i % k ? -1 : (int32_t)pe[1];
            rc = mc_moe_compute(moe, m, pe[0], x, r, ex, w, k, out, err);
            calls++;
        } while (!rc && mc_clock_s() - t0 < S_SAMPLE_S / 3);
        samples[t] = (mc_clock_s() - t0) * 1e3 / calls;
    }
    free(x), free(out), free(ex), free(w);
    if (rc) return rc;
    double a = samples[0], b = samples[1], c = samples[2];
    *ms = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
    return MC_OK;
}

// --- the disk ---------------------------------------------------------------------------

static int s_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// A read of n bytes at off, all of it (EINTR and short reads retried).
static bool s_read_all(int fd, uint8_t *buf, size_t n, uint64_t off) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        done += (size_t)r;
    }
    return true;
}

// Out of this process's page tables: a page the model's mapping has
// touched cannot leave the page cache. The mapping is read-only, so the
// pages come back from the file if used again (advice only).
static void s_unmap_pages(const uint8_t *p, size_t n) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = (uintptr_t)p / page * page, b = ((uintptr_t)p + n + page - 1) / page * page;
    (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

// Pages of [p, p + n) in the page cache, of those there are (mincore on
// the model's mapping), to say when dropping them did not work.
static void s_cached(const uint8_t *p, size_t n, size_t *in, size_t *all) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = (uintptr_t)p / page * page, b = ((uintptr_t)p + n + page - 1) / page * page;
    const size_t pages = (b - a) / page;
    unsigned char *v = malloc(pages ? pages : 1);
    if (v && mincore((void *)a, b - a, v) == 0)
        for (size_t i = 0; i < pages; i++) *in += v[i] & 1, *all += 1;
    free(v);
}

mc_err_t mc_profile_disk(const mc_model_t *m, const mc_profile_disk_params_t *dp, mc_profile_disk_t *out, char *err) {
    const mc_hparams_t *hp = &m->hp;
    if (!m->path || !mc_gguf_mapped(m->gguf))
        return mc_err_set(err, MC_ERR_ARG, "the model was not opened from a file");
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    uint32_t *order = malloc((cells ? cells : 1) * sizeof *order);
    size_t n = 0, most = 0;
    for (size_t c = 0; order && c < cells; c++) {
        const mc_expert_t *x = &m->layers[c / hp->n_expert].experts[c % hp->n_expert];
        if (!x->gate.data || !x->up.data || !x->down.data) continue; // not in this file
        order[n++] = (uint32_t)c;
        const mc_matrix_t *ws[3] = {&x->gate, &x->up, &x->down};
        for (int i = 0; i < 3; i++)
            if (mc_matrix_bytes(ws[i]) > most) most = (size_t)mc_matrix_bytes(ws[i]);
    }
    if (!order) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (n == 0) {
        free(order);
        return mc_err_set(err, MC_ERR_ARG, "the file holds no experts");
    }
    mc_rng_t g; // a random order: no read follows its neighbour on the disk
    mc_rng_seed(&g, dp->seed);
    for (size_t i = n - 1; i > 0; i--) {
        const size_t j = (size_t)(mc_rng_next(&g) % (i + 1));
        const uint32_t t = order[i];
        order[i] = order[j], order[j] = t;
    }
    const size_t max = dp->max_reads < n ? dp->max_reads : n;
    uint8_t *buf = malloc(most > 4096 ? most : 4096);
    double *small = malloc((max ? max : 1) * sizeof *small);
    // Two descriptors on the file: one told the reads are random (no read
    // ahead around the small reads that time the latency), one as the
    // expert store reads whole matrices.
    const int fr = open(m->path, O_RDONLY | O_CLOEXEC), fw = open(m->path, O_RDONLY | O_CLOEXEC);
    mc_err_t rc = MC_OK;
    if (!buf || !small) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    else if (fr < 0 || fw < 0) rc = mc_err_set(err, MC_ERR_IO, "%s: %s", m->path, strerror(errno));
    if (!rc) (void)posix_fadvise(fr, 0, 0, POSIX_FADV_RANDOM);
    const uint8_t *base = mc_gguf_base(m->gguf);
    mc_profile_disk_t r = {0};
    double full_s = 0;
    size_t in = 0, all = 0;
    const double t_start = mc_clock_s();
    for (size_t k = 0; k < max && !rc && (k == 0 || mc_clock_s() - t_start < dp->max_seconds); k++) {
        const uint32_t c = order[k];
        const mc_expert_t *x = &m->layers[c / hp->n_expert].experts[c % hp->n_expert];
        const mc_matrix_t *ws[3] = {&x->gate, &x->up, &x->down};
        // Cold: the file's pages out of the page cache before each read (the
        // whole file: dropping each expert's range left most of its pages
        // cached, measured; likely large folios straddling the ranges).
        for (int i = 0; i < 3; i++) s_unmap_pages(ws[i]->data, (size_t)mc_matrix_bytes(ws[i]));
        (void)posix_fadvise(fw, 0, 0, POSIX_FADV_DONTNEED);
        const uint64_t off0 = (uint64_t)(ws[0]->data - base);
        const size_t first = mc_matrix_bytes(ws[0]) < 4096 ? (size_t)mc_matrix_bytes(ws[0]) : 4096;
        double t0 = mc_clock_s();
        if (!s_read_all(fr, buf, first, off0)) {
            rc = mc_err_set(err, MC_ERR_IO, "%s: cannot read %zu bytes at offset %llu", m->path, first,
                            (unsigned long long)off0);
            break;
        }
        small[r.reads] = (mc_clock_s() - t0) * 1e3;
        (void)posix_fadvise(fw, 0, 0, POSIX_FADV_DONTNEED);
        for (int i = 0; i < 3; i++) s_cached(ws[i]->data, (size_t)mc_matrix_bytes(ws[i]), &in, &all);
        t0 = mc_clock_s();
        for (int i = 0; i < 3 && !rc; i++)
            if (!s_read_all(fw, buf, (size_t)mc_matrix_bytes(ws[i]), (uint64_t)(ws[i]->data - base)))
                rc = mc_err_set(err, MC_ERR_IO, "%s: cannot read expert %u of layer %u", m->path, c % hp->n_expert,
                                c / hp->n_expert);
        full_s += mc_clock_s() - t0;
        (void)posix_fadvise(fw, 0, 0, POSIX_FADV_DONTNEED); // what was read leaves too
        r.bytes += mc_matrix_bytes(ws[0]) + mc_matrix_bytes(ws[1]) + mc_matrix_bytes(ws[2]);
        r.reads++;
    }
    if (!rc) {
        qsort(small, r.reads, sizeof *small, s_cmp_double);
        r.latency_ms = r.reads % 2 ? small[r.reads / 2] : (small[r.reads / 2 - 1] + small[r.reads / 2]) / 2;
        // latency + bytes / bandwidth gives back the reads' total time.
        double transfer_s = full_s - r.reads * r.latency_ms / 1e3;
        if (transfer_s < full_s / 10) transfer_s = full_s / 10;
        r.mb_s = transfer_s > 0 ? (double)r.bytes / 1e6 / transfer_s : 1e6;
        if (r.mb_s > 1e6) r.mb_s = 1e6;
        r.cached = all ? (double)in / (double)all : 0;
        *out = r;
    }
    if (fr >= 0) close(fr);
    if (fw >= 0) close(fw);
    free(buf), free(small), free(order);
    return rc;
}

double mc_profile_curve_at(const double *curve, uint32_t r) {
    if (r == 0) return 0;
    if (r <= mc_profile_rows[0]) return curve[0] * r / mc_profile_rows[0];
    size_t i = 1;
    while (i + 1 < MC_PROFILE_N_ROWS && r > mc_profile_rows[i]) i++;
    return curve[i - 1] + (curve[i] - curve[i - 1]) * (double)(r - mc_profile_rows[i - 1]) /
                              (double)(mc_profile_rows[i] - mc_profile_rows[i - 1]);
}

mc_err_t mc_profile_run(const mc_profile_params_t *p, FILE *out, char *err) {
    mc_model_t *m = mc_model_open(p->model, err);
    if (!m) return mc_err_code(err, MC_ERR_IO);
    // The disk first, before the repack and the timing loops touch the
    // experts' pages through the mapping (mapped pages stay cached).
    mc_profile_disk_t disk = {0};
    char disk_err[MC_ERR_LEN] = "";
    const mc_profile_disk_params_t dparams = mc_profile_disk_params_default();
    const bool disk_ok = mc_profile_disk(m, &dparams, &disk, disk_err) == MC_OK;
    mc_pool_t *pool = mc_pool_new(p->threads);
    mc_matmul_t *mm = pool ? mc_matmul_new(pool, mc_kernel_best_isa()) : NULL;
    mc_moe_t *moe = mm ? mc_moe_new(mm) : NULL;
    mc_err_t rc = moe ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    // Time the layout a serving process multiplies: nodes and coordinators
    // repack what they hold at load (raw rows would look slower).
    if (!rc) rc = mc_model_repack(m, mm, true, NULL, err);
    const mc_hparams_t *hp = &m->hp;
    char host[128] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = 0;
    if (!rc) {
        fprintf(out,
                "# %s --profile of %s on %s, %d threads, %s kernels\n"
                "- name: %s\n"
                "  memory_mb: %.0f        # available now (MemAvailable): what its experts may take\n"
                "  total_mb: %.0f\n"
                "  threads: %d\n",
                p->program ? p->program : "moe-expert", p->model, host, p->threads,
                mc_kernel_isa_name(mc_matmul_isa(mm)), p->name ? p->name : host,
                s_meminfo("MemAvailable") / 1048576.0, s_meminfo("MemTotal") / 1048576.0, p->threads);
        if (disk_ok)
            fprintf(out,
                    "  disk_read_mb_s: %.1f     # the model file's disk: %u expert slices read cold, in a random order\n"
                    "  disk_latency_ms: %.3f    # (MB/s of 10^6 bytes; a read costs latency + bytes / rate)\n",
                    disk.mb_s, disk.reads, disk.latency_ms);
        if (disk_ok && disk.cached > 0.05)
            fprintf(out,
                    "  # %.0f%% of those pages stayed in the page cache (another process maps the file?): the disk "
                    "figures are optimistic\n",
                    100 * disk.cached);
        if (!disk_ok) fprintf(out, "  # the disk was not measured: %s\n", disk_err);
    }
    // One table per distinct (gate, up, down) type combination, measured on
    // the first layer that has it; later layers of the same kind refer to it.
    uint32_t done[64][3], n_done = 0;
    double curves[64][MC_PROFILE_N_ROWS];
    mc_profile_curve_t *curve_of_layer = calloc(hp->n_layer, sizeof *curve_of_layer);
    if (!rc && !curve_of_layer) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) fprintf(out, "  experts:                # one expert's step (gate, up, down), [rows, ms] pairs\n");
    for (uint32_t l = 0; l < hp->n_layer && !rc; l++) {
        const mc_expert_t *ex = &m->layers[l].experts[0];
        const uint32_t t[3] = {ex->gate.type, ex->up.type, ex->down.type};
        uint32_t seen = n_done;
        for (uint32_t i = 0; i < n_done; i++)
            if (!memcmp(done[i], t, sizeof t)) seen = i;
        if (seen < n_done || n_done == 64) {
            if (seen < n_done) memcpy(curve_of_layer[l], curves[seen], sizeof curves[seen]);
            continue;
        }
        memcpy(done[n_done], t, sizeof t);
        const uint64_t bytes = mc_matrix_bytes(&ex->gate) + mc_matrix_bytes(&ex->up) + mc_matrix_bytes(&ex->down);
        fprintf(out, "    - types: [%s, %s, %s]\n      bytes: %llu\n      ms: [", mc_dtype_name(t[0]),
                mc_dtype_name(t[1]), mc_dtype_name(t[2]), (unsigned long long)bytes);
        // Every expert of these types, in every layer.
        uint32_t(*pairs)[2] = malloc((size_t)hp->n_layer * hp->n_expert * sizeof *pairs);
        size_t n_pairs = 0;
        if (!pairs) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        for (uint32_t l2 = 0; l2 < hp->n_layer && !rc; l2++)
            for (uint32_t e = 0; e < hp->n_expert; e++) {
                const mc_expert_t *x2 = &m->layers[l2].experts[e];
                if (x2->gate.type == t[0] && x2->up.type == t[1] && x2->down.type == t[2])
                    pairs[n_pairs][0] = l2, pairs[n_pairs][1] = e, n_pairs++;
            }
        for (size_t i = 0; i < MC_PROFILE_N_ROWS && !rc; i++) {
            double ms = 0;
            if (!(rc = s_expert_ms(moe, m, (const uint32_t(*)[2])pairs, n_pairs, mc_profile_rows[i], &ms, err)))
                fprintf(out, "%s[%u, %.4f]", i ? ", " : "", mc_profile_rows[i], ms);
            curves[n_done][i] = ms;
        }
        free(pairs);
        memcpy(curve_of_layer[l], curves[n_done], sizeof curves[n_done]);
        n_done++;
        fprintf(out, "]\n");
    }
    // What else the program measures on this machine with the same model
    // (moe-coordinator: its per-layer work, in whole decode steps).
    if (!rc && p->more) rc = p->more(p->more_ctx, m, mm, (const mc_profile_curve_t *)curve_of_layer, out, err);
    free(curve_of_layer);
    mc_moe_destroy(&moe);
    mc_matmul_destroy(&mm);
    mc_pool_destroy(&pool);
    mc_model_destroy(&m);
    return rc;
}
