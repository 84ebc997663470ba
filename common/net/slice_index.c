/*
 * slice_index: BLAKE2b-256 of every expert slice, the index file's parser
 * and writer, and where an index is looked for and saved.
 */
#include "slice_index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "expert_file.h"
#include "clock.h"
#include "file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the slice index format assumes a little-endian host"
#endif

#define S_HDR sizeof(mc_slice_index_header_t)
#define S_SUM 32 // checksum bytes
#define S_DESC 36 // slice descriptor bytes: (type, n_in, n_out) x 3
// Largest valid file: the biggest model shape model.c accepts.
#define S_MAX_FILE (S_HDR + (size_t)MC_SLICE_INDEX_MAX_LAYERS * MC_SLICE_INDEX_MAX_EXPERTS * (1 + MC_SLICE_HASH_BYTES) + S_SUM)

struct mc_slice_index {
    mc_slice_source_t src;
    size_t cells;      // n_layer * n_expert
    uint8_t *known;    // (cells) 0/1
    uint8_t *hashes;   // (cells, MC_SLICE_HASH_BYTES), zero where not known
    size_t n_known;
    // Files (mc_slice_index_open); all NULL for an index in memory only.
    char *model_path;
    char *beside;      // MODEL.gguf.mcidx
    char *cache;       // its name in the cache folder; NULL: no cache folder
    char *cache_dir;
    size_t cache_prefix; // bytes of cache's file name shared by every entry of this path
    char *path;        // loaded from / last saved to
    char note[MC_ERR_LEN];
    mc_model_progress_t progress; // fn NULL: none
};

// Hashing in batches of about this many bytes, progress told after each.
#define S_BATCH_BYTES (32u << 20)

static mc_err_t s_sodium(char *err) {
    // Picks the fastest BLAKE2b for this CPU; thread-safe, cheap once done.
    if (sodium_init() < 0) return mc_err_set(err, MC_ERR_UNSUPPORTED, "libsodium cannot start");
    return MC_OK;
}

static void s_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void s_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}


// A slice's descriptor (see the header) starts its hash.
static void s_hash_begin(crypto_generichash_state *st, const uint32_t type[3], const uint32_t n_in[3],
                         const uint32_t n_out[3]) {
    uint8_t desc[S_DESC];
    for (int i = 0; i < 3; i++) {
        s_put32(desc + 12 * i, type[i]);
        s_put32(desc + 12 * i + 4, n_in[i]);
        s_put32(desc + 12 * i + 8, n_out[i]);
    }
    crypto_generichash_init(st, NULL, 0, MC_SLICE_HASH_BYTES);
    crypto_generichash_update(st, desc, sizeof desc);
}

struct mc_slice_hasher {
    crypto_generichash_state st;
};

mc_slice_hasher_t *mc_slice_hasher_new(const mc_dtype_t types[3], uint32_t dim, uint32_t ffn) {
    if (s_sodium(NULL)) return NULL;
    mc_slice_hasher_t *h = NULL;
    // libsodium's state wants 64-byte alignment.
    if (posix_memalign((void **)&h, 64, sizeof *h)) return NULL;
    const uint32_t t[3] = {(uint32_t)types[0], (uint32_t)types[1], (uint32_t)types[2]};
    s_hash_begin(&h->st, t, (const uint32_t[3]){dim, dim, ffn}, (const uint32_t[3]){ffn, ffn, dim});
    return h;
}

void mc_slice_hasher_update(mc_slice_hasher_t *h, const void *p, size_t n) {
    crypto_generichash_update(&h->st, p, n);
}

void mc_slice_hasher_final(mc_slice_hasher_t **h, uint8_t out[MC_SLICE_HASH_BYTES]) {
    crypto_generichash_final(&(*h)->st, out, MC_SLICE_HASH_BYTES);
    mc_slice_hasher_destroy(h);
}

void mc_slice_hasher_destroy(mc_slice_hasher_t **h) {
    if (!h || !*h) return;
    free(*h);
    *h = NULL;
}

// The hash of expert e of layer l's slice (see the header: descriptor, then
// the bytes of every part, expert_file.h).
static void s_hash_expert(const mc_model_t *m, uint32_t layer, uint32_t e, uint8_t out[MC_SLICE_HASH_BYTES]) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    const mc_matrix_t *w[3] = {&x->gate, &x->up, &x->down};
    crypto_generichash_state st;
    s_hash_begin(&st, (const uint32_t[3]){w[0]->type, w[1]->type, w[2]->type},
                 (const uint32_t[3]){w[0]->n_in, w[1]->n_in, w[2]->n_in},
                 (const uint32_t[3]){w[0]->n_out, w[1]->n_out, w[2]->n_out});
    for (uint32_t j = 0; j < mc_expert_file_parts(&m->hp); j++) {
        uint64_t len;
        const uint8_t *p = mc_expert_file_part(m, layer, e, j, &len);
        crypto_generichash_update(&st, p, len);
    }
    crypto_generichash_final(&st, out, MC_SLICE_HASH_BYTES);
}

mc_err_t mc_slice_hash(const mc_model_t *m, uint32_t layer, uint32_t e, uint8_t out[MC_SLICE_HASH_BYTES]) {
    if (layer >= m->hp.n_layer || e >= m->hp.n_expert) return MC_ERR_RANGE;
    mc_err_t rc = s_sodium(NULL);
    if (rc) return rc;
    s_hash_expert(m, layer, e, out);
    return MC_OK;
}

mc_err_t mc_slice_source(const mc_model_t *m, const char *path, mc_slice_source_t *out, char *err) {
    struct stat st;
    if (stat(path, &st) != 0) return mc_err_set(err, MC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != mc_gguf_size(m->gguf))
        return mc_err_set(err, MC_ERR_IO, "%s is no longer the file that was opened (%lld bytes, %zu mapped)", path,
                          (long long)st.st_size, mc_gguf_size(m->gguf));
    *out = (mc_slice_source_t){.fingerprint = mc_model_fingerprint(m),
                               .file_size = (uint64_t)st.st_size,
                               .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
                               .n_layer = m->hp.n_layer,
                               .n_expert = m->hp.n_expert};
    return MC_OK;
}

bool mc_slice_source_equal(const mc_slice_source_t *a, const mc_slice_source_t *b) {
    return a->fingerprint == b->fingerprint && a->file_size == b->file_size && a->mtime_ns == b->mtime_ns &&
           a->n_layer == b->n_layer && a->n_expert == b->n_expert;
}

// --- the index in memory ----------------------------------------------------------------

mc_slice_index_t *mc_slice_index_new(const mc_slice_source_t *src, char *err) {
    if (src->n_layer == 0 || src->n_layer > MC_SLICE_INDEX_MAX_LAYERS || src->n_expert == 0 ||
        src->n_expert > MC_SLICE_INDEX_MAX_EXPERTS) {
        mc_err_set(err, MC_ERR_RANGE, "a slice index holds 1..%d layers of 1..%d experts, not %u x %u",
                   MC_SLICE_INDEX_MAX_LAYERS, MC_SLICE_INDEX_MAX_EXPERTS, src->n_layer, src->n_expert);
        return NULL;
    }
    mc_slice_index_t *x = calloc(1, sizeof *x);
    size_t cells = (size_t)src->n_layer * src->n_expert;
    uint8_t *mem = calloc(cells, 1 + MC_SLICE_HASH_BYTES);
    if (!x || !mem) {
        free(x), free(mem);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    x->src = *src;
    x->cells = cells;
    x->known = mem;
    x->hashes = mem + cells;
    return x;
}

static void s_free_files(mc_slice_index_t *x) {
    free(x->model_path), free(x->beside), free(x->cache), free(x->cache_dir), free(x->path);
    x->model_path = x->beside = x->cache = x->cache_dir = x->path = NULL;
}

void mc_slice_index_destroy(mc_slice_index_t **px) {
    if (!px || !*px) return;
    mc_slice_index_t *x = *px;
    s_free_files(x);
    free(x->known); // one block with the hashes
    free(x);
    *px = NULL;
}

const mc_slice_source_t *mc_slice_index_source(const mc_slice_index_t *x) { return &x->src; }
size_t mc_slice_index_known(const mc_slice_index_t *x) { return x->n_known; }
const uint8_t *mc_slice_index_table(const mc_slice_index_t *x) { return x->hashes; }
const char *mc_slice_index_path(const mc_slice_index_t *x) { return x->path; }
const char *mc_slice_index_note(const mc_slice_index_t *x) { return x->note; }

const uint8_t *mc_slice_index_hash(const mc_slice_index_t *x, uint32_t layer, uint32_t e) {
    if (layer >= x->src.n_layer || e >= x->src.n_expert) return NULL;
    size_t i = (size_t)layer * x->src.n_expert + e;
    return x->known[i] ? x->hashes + i * MC_SLICE_HASH_BYTES : NULL;
}

// Take the hashes `from` knows and x does not (same source).
static void s_adopt(mc_slice_index_t *x, const mc_slice_index_t *from) {
    for (size_t i = 0; i < x->cells; i++)
        if (!x->known[i] && from->known[i]) {
            memcpy(x->hashes + i * MC_SLICE_HASH_BYTES, from->hashes + i * MC_SLICE_HASH_BYTES, MC_SLICE_HASH_BYTES);
            x->known[i] = 1;
            x->n_known++;
        }
}

// --- hashing -------------------------------------------------------------------------

typedef struct {
    const mc_model_t *m;
    const uint32_t *todo; // cells to hash
    size_t n;
    uint8_t *hashes;      // the index's table
    bool release;
    size_t page;
} s_job_t;

// Whole pages inside w's bytes leave this process's memory.
static void s_release(const mc_matrix_t *w, size_t page) {
    const uintptr_t a = (uintptr_t)w->data, z = a + (uintptr_t)mc_matrix_bytes(w);
    const uintptr_t start = (a + page - 1) / page * page, end = z / page * page;
    if (end > start) (void)madvise((void *)start, end - start, MADV_DONTNEED); // advice only
}

static void s_fill_share(void *arg, int ith, int nth) {
    const s_job_t *j = arg;
    const uint32_t ne = j->m->hp.n_expert;
    // Every share takes every nth slice: slices of a model are of about one size.
    for (size_t i = (size_t)ith; i < j->n; i += (size_t)nth) {
        const uint32_t c = j->todo[i];
        const mc_expert_t *x = &j->m->layers[c / ne].experts[c % ne];
        s_hash_expert(j->m, c / ne, c % ne, j->hashes + (size_t)c * MC_SLICE_HASH_BYTES);
        if (j->release) s_release(&x->gate, j->page), s_release(&x->up, j->page), s_release(&x->down, j->page);
    }
}

static uint64_t s_expert_bytes(const mc_model_t *m, size_t cell) {
    return mc_model_expert_bytes(m, (uint32_t)(cell / m->hp.n_expert), (uint32_t)(cell % m->hp.n_expert));
}

uint64_t mc_slice_index_todo_bytes(const mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held) {
    uint64_t bytes = 0;
    if (m->hp.n_layer != x->src.n_layer || m->hp.n_expert != x->src.n_expert) return 0;
    for (size_t i = 0; i < x->cells; i++)
        if (!x->known[i] && (!held || held[i])) bytes += s_expert_bytes(m, i);
    return bytes;
}

void mc_slice_index_set_progress(mc_slice_index_t *x, const mc_model_progress_t *p) {
    x->progress = p ? *p : (mc_model_progress_t){0};
}

mc_err_t mc_slice_index_fill(mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held, mc_pool_t *pool,
                             bool release, mc_slice_stats_t *st, char *err) {
    if (m->hp.n_layer != x->src.n_layer || m->hp.n_expert != x->src.n_expert ||
        mc_model_fingerprint(m) != x->src.fingerprint)
        return mc_err_set(err, MC_ERR_ARG, "this slice index belongs to another model file");
    mc_err_t rc = s_sodium(err);
    if (rc) return rc;
    size_t n = 0;
    for (size_t i = 0; i < x->cells; i++) n += !x->known[i] && (!held || held[i]);
    mc_slice_stats_t s = {0};
    if (n) {
        uint32_t *todo = malloc(n * sizeof *todo);
        if (!todo) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        n = 0;
        for (size_t i = 0; i < x->cells; i++)
            if (!x->known[i] && (!held || held[i])) todo[n++] = (uint32_t)i;
        for (size_t i = 0; i < n; i++) s.bytes += s_expert_bytes(m, todo[i]);
        const double t0 = mc_clock_s();
        uint64_t done = 0;
        for (size_t at = 0; at < n;) { // in batches, progress told after each
            size_t end = at;
            uint64_t batch = 0;
            while (end < n && (end == at || batch < S_BATCH_BYTES)) batch += s_expert_bytes(m, todo[end++]);
            s_job_t job = {m, todo + at, end - at, x->hashes, release && mc_gguf_mapped(m->gguf),
                           (size_t)sysconf(_SC_PAGESIZE)};
            if (pool && end - at > 1) mc_pool_run(pool, s_fill_share, &job);
            else s_fill_share(&job, 0, 1);
            done += batch;
            if (x->progress.fn) x->progress.fn(x->progress.ctx, done);
            at = end;
        }
        s.seconds = mc_clock_s() - t0;
        for (size_t i = 0; i < n; i++) x->known[todo[i]] = 1;
        x->n_known += n;
        s.slices = (uint32_t)n;
        free(todo);
    }
    if (st) *st = s;
    return MC_OK;
}

// --- the file format -------------------------------------------------------------------

static size_t s_file_bytes(size_t cells) { return S_HDR + cells * (1 + MC_SLICE_HASH_BYTES) + S_SUM; }

mc_slice_index_t *mc_slice_index_parse(const void *buf, size_t len, char *err) {
    const uint8_t *p = buf;
    mc_slice_index_header_t h;
    if (len < S_HDR + S_SUM) {
        mc_err_set(err, MC_ERR_FORMAT, "slice index of %zu bytes: too short for its header", len);
        return NULL;
    }
    memcpy(&h, p, sizeof h);
    if (memcmp(h.magic, MC_SLICE_INDEX_MAGIC, sizeof h.magic)) {
        mc_err_set(err, MC_ERR_FORMAT, "not a slice index (bad magic)");
        return NULL;
    }
    if (h.version != MC_SLICE_INDEX_VERSION || h.hash_bytes != MC_SLICE_HASH_BYTES) {
        mc_err_set(err, MC_ERR_UNSUPPORTED, "slice index version %u with %u-byte hashes (this build reads version %d, %d bytes)",
                   h.version, h.hash_bytes, MC_SLICE_INDEX_VERSION, MC_SLICE_HASH_BYTES);
        return NULL;
    }
    if (h.n_layer == 0 || h.n_layer > MC_SLICE_INDEX_MAX_LAYERS || h.n_expert == 0 ||
        h.n_expert > MC_SLICE_INDEX_MAX_EXPERTS) {
        mc_err_set(err, MC_ERR_FORMAT, "slice index for %u layers x %u experts (at most %d x %d)", h.n_layer,
                   h.n_expert, MC_SLICE_INDEX_MAX_LAYERS, MC_SLICE_INDEX_MAX_EXPERTS);
        return NULL;
    }
    const size_t cells = (size_t)h.n_layer * h.n_expert, want = s_file_bytes(cells);
    if (len != want) {
        mc_err_set(err, MC_ERR_FORMAT, "slice index of %zu bytes, expected %zu for %u x %u slices", len, want,
                   h.n_layer, h.n_expert);
        return NULL;
    }
    uint8_t sum[S_SUM];
    if (s_sodium(err)) return NULL;
    crypto_generichash(sum, sizeof sum, p, len - S_SUM, NULL, 0);
    if (sodium_memcmp(sum, p + len - S_SUM, S_SUM) != 0) {
        mc_err_set(err, MC_ERR_FORMAT, "slice index checksum mismatch (damaged file)");
        return NULL;
    }
    const uint8_t *known = p + S_HDR, *hashes = known + cells;
    static const uint8_t zero[MC_SLICE_HASH_BYTES];
    for (size_t i = 0; i < cells; i++) {
        if (known[i] > 1) {
            mc_err_set(err, MC_ERR_FORMAT, "slice index: known flag %u of slice %zu is not 0 or 1", known[i], i);
            return NULL;
        }
        if (!known[i] && memcmp(hashes + i * MC_SLICE_HASH_BYTES, zero, MC_SLICE_HASH_BYTES)) {
            mc_err_set(err, MC_ERR_FORMAT, "slice index: slice %zu is not known but has a hash", i);
            return NULL;
        }
    }
    const mc_slice_source_t src = {h.fingerprint, h.file_size, h.mtime_ns, h.n_layer, h.n_expert};
    mc_slice_index_t *x = mc_slice_index_new(&src, err);
    if (!x) return NULL;
    memcpy(x->known, known, cells);
    memcpy(x->hashes, hashes, cells * MC_SLICE_HASH_BYTES);
    for (size_t i = 0; i < cells; i++) x->n_known += known[i];
    return x;
}

mc_err_t mc_slice_index_serialize(const mc_slice_index_t *x, uint8_t **out, size_t *len, char *err) {
    mc_err_t rc = s_sodium(err);
    if (rc) return rc;
    const size_t n = s_file_bytes(x->cells);
    uint8_t *buf = malloc(n);
    if (!buf) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_slice_index_header_t h = {.version = MC_SLICE_INDEX_VERSION,
                                 .hash_bytes = MC_SLICE_HASH_BYTES,
                                 .fingerprint = x->src.fingerprint,
                                 .file_size = x->src.file_size,
                                 .mtime_ns = x->src.mtime_ns,
                                 .n_layer = x->src.n_layer,
                                 .n_expert = x->src.n_expert};
    memcpy(h.magic, MC_SLICE_INDEX_MAGIC, sizeof h.magic);
    memcpy(buf, &h, sizeof h);
    memcpy(buf + S_HDR, x->known, x->cells);
    memcpy(buf + S_HDR + x->cells, x->hashes, x->cells * MC_SLICE_HASH_BYTES);
    crypto_generichash(buf + n - S_SUM, S_SUM, buf, n - S_SUM, NULL, 0);
    *out = buf;
    *len = n;
    return MC_OK;
}

// --- files -------------------------------------------------------------------------------

// What differs between the file an index was made for and the one we have.
static const char *s_stale_why(const mc_slice_source_t *have, const mc_slice_source_t *want) {
    if (have->n_layer != want->n_layer || have->n_expert != want->n_expert) return "made for a model of another shape";
    if (have->fingerprint != want->fingerprint) return "made for another model header";
    if (have->file_size != want->file_size) return "made for a file of another size";
    return "the model was modified after it";
}

mc_err_t mc_slice_index_load(const char *path, const mc_slice_source_t *want, mc_slice_index_t **out, char *err) {
    char *buf;
    size_t n;
    mc_err_t rc = mc_file_read(path, S_MAX_FILE, &buf, &n, err);
    if (rc) return rc;
    char sub[MC_ERR_LEN];
    mc_slice_index_t *x = mc_slice_index_parse(buf, n, sub);
    free(buf);
    if (!x) return mc_err_set(err, MC_ERR_FORMAT, "%s: %s", path, sub);
    if (!mc_slice_source_equal(&x->src, want)) {
        mc_err_set(err, MC_ERR_RANGE, "%s is stale (%s)", path, s_stale_why(&x->src, want));
        mc_slice_index_destroy(&x);
        return MC_ERR_RANGE;
    }
    *out = x;
    return MC_OK;
}

mc_err_t mc_slice_index_save(const mc_slice_index_t *x, const char *path, char *err) {
    uint8_t *buf;
    size_t n;
    mc_err_t rc = mc_slice_index_serialize(x, &buf, &n, err);
    if (rc) return rc;
    size_t tlen = strlen(path) + 16;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(buf);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, tlen, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = mc_err_set(err, MC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp), free(buf);
        return rc;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    // Anyone who may read the model may read its hashes; synced before the
    // rename so a crash never leaves the final name on unwritten data.
    if (done != n || fchmod(fd, 0644) != 0 || fsync(fd) != 0)
        rc = mc_err_set(err, MC_ERR_IO, "cannot write %s: %s", tmp, done != n && errno == 0 ? "short write" : strerror(errno));
    if (close(fd) != 0 && rc == MC_OK) rc = mc_err_set(err, MC_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (rc == MC_OK && rename(tmp, path) != 0)
        rc = mc_err_set(err, MC_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp), free(buf);
    return rc;
}

// --- where an index lives ------------------------------------------------------------------

// The cache folder (see the header), or NULL when there is none.
static char *s_cache_dir(const char *given) {
    if (given) return *given ? strdup(given) : NULL;
    const char *dir = getenv("MC_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char buf[PATH_MAX];
    int n;
    if (dir && *dir) n = snprintf(buf, sizeof buf, "%s", dir);
    else if (xdg && *xdg) n = snprintf(buf, sizeof buf, "%s/moe-cluster", xdg);
    else if (home && *home) n = snprintf(buf, sizeof buf, "%s/.cache/moe-cluster", home);
    else return NULL;
    return n > 0 && (size_t)n < sizeof buf ? strdup(buf) : NULL;
}

// 16 hex digits of a BLAKE2b of p[0..n).
static void s_digest_hex(const void *p, size_t n, char out[17]) {
    uint8_t d[8];
    crypto_generichash(d, sizeof d, p, n, NULL, 0);
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

// x->cache: DIR/NAME-P-S.mcidx (see the header); x->cache_prefix covers NAME-P-.
static mc_err_t s_cache_name(mc_slice_index_t *x, const char *given_dir) {
    if (!(x->cache_dir = s_cache_dir(given_dir))) return MC_OK;
    char abs[PATH_MAX], p[17], s[17];
    const char *where = realpath(x->model_path, abs) ? abs : x->model_path;
    s_digest_hex(where, strlen(where), p);
    uint8_t id[24];
    s_put64(id, x->src.file_size);
    s_put64(id + 8, (uint64_t)x->src.mtime_ns);
    s_put64(id + 16, x->src.fingerprint);
    s_digest_hex(id, sizeof id, s);
    const char *slash = strrchr(x->model_path, '/');
    const char *name = slash ? slash + 1 : x->model_path;
    size_t cap = strlen(x->cache_dir) + 160;
    if (!(x->cache = malloc(cap))) return MC_ERR_NOMEM;
    int dir_len = snprintf(x->cache, cap, "%s/", x->cache_dir);
    int pre = snprintf(x->cache + dir_len, cap - (size_t)dir_len, "%.100s-%s-", name, p);
    snprintf(x->cache + dir_len + pre, cap - (size_t)(dir_len + pre), "%s.mcidx", s);
    x->cache_prefix = (size_t)pre;
    return MC_OK;
}

// Try one place: an index for this very file there is adopted.
static void s_try_load(mc_slice_index_t *x, const char *path) {
    if (!path || x->path) return;
    char why[MC_ERR_LEN];
    mc_slice_index_t *got = NULL;
    if (mc_slice_index_load(path, &x->src, &got, why) != MC_OK) {
        // A missing file is the normal case; anything else is worth a word.
        if (access(path, F_OK) == 0 && !x->note[0]) snprintf(x->note, sizeof x->note, "ignored %.240s", why);
        return;
    }
    s_adopt(x, got);
    mc_slice_index_destroy(&got);
    x->path = strdup(path);
}

mc_slice_index_t *mc_slice_index_open(const mc_model_t *m, const char *model_path, const char *cache_dir, char *err) {
    mc_slice_source_t src;
    if (mc_slice_source(m, model_path, &src, err)) return NULL;
    mc_slice_index_t *x = mc_slice_index_new(&src, err);
    if (!x) return NULL;
    size_t n = strlen(model_path);
    if (!(x->model_path = strdup(model_path)) || !(x->beside = malloc(n + 7)) || s_cache_name(x, cache_dir)) {
        mc_slice_index_destroy(&x);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(x->beside, n + 7, "%s.mcidx", model_path);
    s_try_load(x, x->beside);
    s_try_load(x, x->cache);
    return x;
}

// A folder we may write to: its mode grants writing to someone (a folder
// made read-only is respected even by root) and access() agrees.
static bool s_writable_dir(const char *file) {
    const char *slash = strrchr(file, '/');
    char dir[PATH_MAX];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == file) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - file), file);
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0222) && access(dir, W_OK) == 0;
}

// mkdir -p of the cache folder.
static bool s_mkdirs(const char *dir) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return false;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        const char c = *p;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return false;
        *p = c;
        if (!c) break;
    }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

// Entries of the cache folder for the same model path but an older file.
static void s_prune_cache(const mc_slice_index_t *x) {
    const char *ours = x->cache + strlen(x->cache_dir) + 1;
    DIR *d = opendir(x->cache_dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len != strlen(ours) || strncmp(de->d_name, ours, x->cache_prefix) || !strcmp(de->d_name, ours) ||
            strcmp(de->d_name + len - 6, ".mcidx"))
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", x->cache_dir, de->d_name) < (int)sizeof path) unlink(path);
    }
    closedir(d);
}

// Save to path, first taking in what a valid file already there knows.
static mc_err_t s_save_merged(mc_slice_index_t *x, const char *path, char *err) {
    mc_slice_index_t *there = NULL;
    if (mc_slice_index_load(path, &x->src, &there, NULL) == MC_OK) {
        s_adopt(x, there);
        mc_slice_index_destroy(&there);
    }
    mc_err_t rc = mc_slice_index_save(x, path, err);
    if (rc) return rc;
    if (!x->path || strcmp(x->path, path)) {
        free(x->path);
        if (!(x->path = strdup(path))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    return MC_OK;
}

static void s_save(mc_slice_index_t *x, const mc_model_t *m, mc_slice_stats_t *st) {
    mc_slice_source_t now;
    char why[MC_ERR_LEN] = "";
    if (mc_slice_source(m, x->model_path, &now, why) || !mc_slice_source_equal(&now, &x->src)) {
        snprintf(st->note, sizeof st->note, "not saved: %s changed since it was opened", x->model_path);
        return;
    }
    char beside_why[MC_ERR_LEN] = "its folder is not writable";
    if (s_writable_dir(x->beside) && s_save_merged(x, x->beside, beside_why) == MC_OK) {
        st->saved = x->path;
        return;
    }
    if (!x->cache) {
        snprintf(st->note, sizeof st->note, "kept in memory only: not beside the model (%.100s), and no cache folder",
                 beside_why);
        return;
    }
    if (!s_mkdirs(x->cache_dir)) snprintf(why, sizeof why, "cannot create %s: %s", x->cache_dir, strerror(errno));
    else if (s_save_merged(x, x->cache, why) == MC_OK) {
        s_prune_cache(x);
        st->saved = x->path;
        return;
    }
    snprintf(st->note, sizeof st->note, "kept in memory only: not beside the model (%.80s), not in the cache (%.100s)",
             beside_why, why);
}

mc_err_t mc_slice_index_ensure(mc_slice_index_t *x, const mc_model_t *m, const uint8_t *held, mc_pool_t *pool,
                               bool release, mc_slice_stats_t *st, char *err) {
    mc_slice_stats_t s;
    mc_err_t rc = mc_slice_index_fill(x, m, held, pool, release, &s, err);
    if (rc) return rc;
    if (s.slices && x->model_path) s_save(x, m, &s);
    if (st) *st = s;
    return MC_OK;
}
