/*
 * cache: the folder of experts-only files, laying out a placement's file,
 * copying and fetching its slices, the state file that lets a fill resume,
 * and eviction.
 */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "expert_file.h"
#include "gguf_writer.h"
#include "log.h"
#include "slice_index.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the cache's state file assumes a little-endian host"
#endif

#define S_STATE_MAGIC "MCFILL1\0" // 8 bytes
#define S_STATE_HEAD 24           // magic, slices (u64), file bytes (u64)
#define S_STATE_REC 40            // hash, bytes in place (u64)
#define S_MAX_TRIES 3             // a slice whose hash keeps failing ends the fill

struct mc_cache {
    char *dir;
    uint64_t cap;
    uint32_t chunk;
    FILE *log;
    char who[96];
};

// One slice of the file being filled.
typedef struct {
    uint32_t layer, expert;
    size_t cell;
    mc_dtype_t types[3];
    uint8_t hash[MC_SLICE_HASH_BYTES];
    uint32_t parts;                    // 3, or 6 with the family's expert biases (expert_file.h)
    uint64_t part_off[MC_EXPERT_FILE_PARTS_MAX], part_len[MC_EXPERT_FILE_PARTS_MAX]; // in the file
    uint64_t bytes;                    // their sum
    uint64_t done;                     // bytes in place, a prefix
    bool local;                        // copied from the current file (checked there)
    uint32_t tries;                    // hash failures
} s_slice_t;

struct mc_cache_fill {
    mc_cache_t *c;
    const mc_model_t *cur;
    mc_hparams_t hp;
    uint64_t fp;
    bool in_place;
    s_slice_t *s;
    size_t n;
    char path[PATH_MAX], part[PATH_MAX + 8], state[PATH_MAX + 8];
    int fd, sfd;
    // Fetching, in slice order: answers go to slice at (its done), asks
    // go out from (ask, ask_off).
    size_t at, ask;
    uint64_t ask_off;
    uint32_t outstanding;
    mc_slice_hasher_t *h; // of slice `at`, fed up to its done
    uint64_t fetched, to_fetch, resumed;
    uint64_t asked; // bytes asked for (fetched + outstanding)
};

// --- the folder -------------------------------------------------------------------------

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

mc_cache_t *mc_cache_new(const mc_cache_params_t *p, char *err) {
    if (!p->dir || !*p->dir) {
        mc_err_set(err, MC_ERR_ARG, "a cache needs a folder");
        return NULL;
    }
    if (p->chunk_bytes < 4096 || p->chunk_bytes > MC_WIRE_CHUNK_MAX) {
        mc_err_set(err, MC_ERR_ARG, "fetch chunks of %u bytes: expected 4 KiB .. %u", p->chunk_bytes, MC_WIRE_CHUNK_MAX);
        return NULL;
    }
    if (!s_mkdirs(p->dir) || access(p->dir, W_OK) != 0) {
        mc_err_set(err, MC_ERR_IO, "cache folder %s: cannot create or write it: %s", p->dir, strerror(errno));
        return NULL;
    }
    mc_cache_t *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(p->dir))) {
        free(c);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->cap = p->cap_bytes;
    c->chunk = p->chunk_bytes;
    c->log = p->log;
    snprintf(c->who, sizeof c->who, "%s", p->who ? p->who : "moe-expert");
    return c;
}

void mc_cache_destroy(mc_cache_t **pc) {
    if (!pc || !*pc) return;
    free((*pc)->dir);
    free(*pc);
    *pc = NULL;
}

const char *mc_cache_dir(const mc_cache_t *c) { return c->dir; }

static void s_own_path(const mc_cache_t *c, uint64_t fp, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%016llx.gguf", c->dir, (unsigned long long)fp);
}

// The experts-only files of the folder: calls fn for each *.gguf with its
// model fingerprint and stat.
static void s_each_file(const mc_cache_t *c, void (*fn)(void *ctx, const char *path, uint64_t fp, const struct stat *st),
                        void *ctx) {
    DIR *d = opendir(c->dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        const size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".gguf")) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", c->dir, de->d_name) >= (int)sizeof path) continue;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        mc_gguf_t *g = mc_gguf_open(path, NULL);
        uint64_t fp = 0;
        if (g && mc_gguf_get_u64(g, MC_MODEL_SOURCE_KEY, &fp)) fn(ctx, path, fp, &st);
        mc_gguf_destroy(&g);
    }
    closedir(d);
}

typedef struct {
    uint64_t fp;
    char best[PATH_MAX];
    int64_t best_mtime;
} s_find_t;

static void s_find_one(void *ctx, const char *path, uint64_t fp, const struct stat *st) {
    s_find_t *f = ctx;
    const int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    if (fp != f->fp || (f->best[0] && mt <= f->best_mtime)) return;
    snprintf(f->best, sizeof f->best, "%s", path);
    f->best_mtime = mt;
}

mc_model_t *mc_cache_find(mc_cache_t *c, uint64_t fp) {
    char own[PATH_MAX], err[MC_ERR_LEN];
    s_own_path(c, fp, own, sizeof own);
    s_find_t f = {.fp = fp};
    if (access(own, R_OK) == 0) snprintf(f.best, sizeof f.best, "%s", own);
    else s_each_file(c, s_find_one, &f);
    if (!f.best[0]) return NULL;
    mc_model_t *m = mc_model_open_node(f.best, err);
    if (!m) mc_log_status(c->log, c->who, "cache: passed over %s: %s", f.best, err);
    else if (!m->experts_only || mc_model_fingerprint(m) != fp) mc_model_destroy(&m);
    return m;
}

// --- writing ----------------------------------------------------------------------------

static mc_err_t s_pwrite(int fd, const void *p, size_t n, uint64_t off, const char *path, char *err) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return mc_err_set(err, MC_ERR_IO, "cannot write %s: %s", path, w < 0 ? strerror(errno) : "disk full");
        b += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return MC_OK;
}

static bool s_pread(int fd, void *p, size_t n, uint64_t off) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        b += r, n -= (size_t)r, off += (uint64_t)r;
    }
    return true;
}

// Bytes [from, from + n) of slice s's stream (its parts back to back):
// written from buf (write) or read into it.
static mc_err_t s_stream(mc_cache_fill_t *f, const s_slice_t *s, uint64_t from, void *buf, size_t n, bool write,
                         char *err) {
    uint8_t *b = buf;
    for (uint32_t j = 0; j < s->parts && n; j++) {
        if (from >= s->part_len[j]) {
            from -= s->part_len[j];
            continue;
        }
        const size_t k = (size_t)(s->part_len[j] - from) < n ? (size_t)(s->part_len[j] - from) : n;
        if (write) {
            mc_err_t rc = s_pwrite(f->fd, b, k, s->part_off[j] + from, f->part, err);
            if (rc) return rc;
        } else if (!s_pread(f->fd, b, k, s->part_off[j] + from)) {
            return mc_err_set(err, MC_ERR_IO, "cannot read %s", f->part);
        }
        b += k, n -= k, from = 0;
    }
    return MC_OK;
}

static void s_state_put(mc_cache_fill_t *f, size_t i) {
    char err[MC_ERR_LEN];
    if (f->sfd >= 0 && s_pwrite(f->sfd, &f->s[i].done, 8, S_STATE_HEAD + (uint64_t)i * S_STATE_REC + 32, f->state, err))
        mc_log_status(f->c->log, f->c->who, "cache: %s (a restart fetches this fill again)", err);
}

// A new state file: every slice with its hash and done.
static mc_err_t s_state_new(mc_cache_fill_t *f, uint64_t file_bytes, char *err) {
    const size_t n = S_STATE_HEAD + f->n * S_STATE_REC;
    uint8_t *buf = calloc(n, 1);
    if (!buf) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    memcpy(buf, S_STATE_MAGIC, 8);
    const uint64_t count = f->n;
    memcpy(buf + 8, &count, 8);
    memcpy(buf + 16, &file_bytes, 8);
    for (size_t i = 0; i < f->n; i++) {
        memcpy(buf + S_STATE_HEAD + i * S_STATE_REC, f->s[i].hash, 32);
        memcpy(buf + S_STATE_HEAD + i * S_STATE_REC + 32, &f->s[i].done, 8);
    }
    f->sfd = open(f->state, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    mc_err_t rc = f->sfd < 0 ? mc_err_set(err, MC_ERR_IO, "cannot create %s: %s", f->state, strerror(errno))
                             : s_pwrite(f->sfd, buf, n, 0, f->state, err);
    free(buf);
    return rc;
}

// Resume an earlier fill of the same file: its .part holds the same header
// and size, its state the same slices. Sets every slice's done (whole
// chunks; what is claimed is hashed again before it counts).
static bool s_resume(mc_cache_fill_t *f, const uint8_t *head, size_t head_len, uint64_t file_bytes) {
    const size_t n = S_STATE_HEAD + f->n * S_STATE_REC;
    struct stat st;
    if (stat(f->part, &st) != 0 || (uint64_t)st.st_size != file_bytes) return false;
    int sfd = open(f->state, O_RDWR | O_CLOEXEC);
    if (sfd < 0) return false;
    uint8_t *buf = malloc(n + head_len + 1);
    struct stat sst;
    bool ok = buf && fstat(sfd, &sst) == 0 && (size_t)sst.st_size == n && s_pread(sfd, buf, n, 0);
    uint64_t count = 0, bytes = 0;
    if (ok) memcpy(&count, buf + 8, 8), memcpy(&bytes, buf + 16, 8);
    ok = ok && !memcmp(buf, S_STATE_MAGIC, 8) && count == f->n && bytes == file_bytes;
    for (size_t i = 0; ok && i < f->n; i++) ok = !memcmp(buf + S_STATE_HEAD + i * S_STATE_REC, f->s[i].hash, 32);
    int fd = ok ? open(f->part, O_RDWR | O_CLOEXEC) : -1;
    ok = ok && fd >= 0 && s_pread(fd, buf + n, head_len, 0) && !memcmp(buf + n, head, head_len);
    if (ok) {
        for (size_t i = 0; i < f->n; i++) {
            uint64_t done;
            memcpy(&done, buf + S_STATE_HEAD + i * S_STATE_REC + 32, 8);
            if (done > f->s[i].bytes) done = 0;
            if (done < f->s[i].bytes) done -= done % f->c->chunk; // whole chunks only
            f->s[i].done = done;
        }
        f->fd = fd, f->sfd = sfd;
    } else {
        if (fd >= 0) close(fd);
        close(sfd);
    }
    free(buf);
    return ok;
}

// Hash slice i as it stands in the file (done == bytes); false on a
// mismatch or a read error.
static bool s_check_in_file(mc_cache_fill_t *f, size_t i) {
    s_slice_t *s = &f->s[i];
    mc_slice_hasher_t *h = mc_slice_hasher_new(s->types, f->hp.dim, f->hp.ffn);
    uint8_t *buf = malloc(1u << 20);
    bool ok = h && buf;
    for (uint64_t at = 0; ok && at < s->bytes;) {
        const size_t k = s->bytes - at < (1u << 20) ? (size_t)(s->bytes - at) : (1u << 20);
        ok = s_stream(f, s, at, buf, k, false, NULL) == MC_OK;
        if (ok) mc_slice_hasher_update(h, buf, k);
        at += k;
    }
    uint8_t out[MC_SLICE_HASH_BYTES];
    if (ok) mc_slice_hasher_final(&h, out);
    mc_slice_hasher_destroy(&h);
    free(buf);
    return ok && !memcmp(out, s->hash, sizeof out);
}

static mc_err_t s_copy_local(mc_cache_fill_t *f, size_t i, char *err) {
    s_slice_t *s = &f->s[i];
    for (uint32_t j = 0; j < s->parts; j++) {
        uint64_t len;
        const uint8_t *p = mc_expert_file_part(f->cur, s->layer, s->expert, j, &len);
        mc_err_t rc = len == s->part_len[j] ? s_pwrite(f->fd, p, (size_t)len, s->part_off[j], f->part, err)
                                            : mc_err_set(err, MC_ERR_FORMAT, "expert %u of layer %u: a part of %llu bytes, "
                                                                             "%llu in the layout",
                                                         s->expert, s->layer, (unsigned long long)len,
                                                         (unsigned long long)s->part_len[j]);
        if (rc) return rc;
    }
    s->done = s->bytes;
    s_state_put(f, i);
    return MC_OK;
}

// The first slice from i on that still needs bytes from the coordinator.
static size_t s_next_fetch(const mc_cache_fill_t *f, size_t i) {
    while (i < f->n && (f->s[i].local || f->s[i].done == f->s[i].bytes)) i++;
    return i;
}

// Copying and checking what is already here can take a while on a slow
// disk: the coordinator hears that it goes on (its wait is bounded by
// progress, not by how long loading takes).
static mc_err_t s_layout(mc_cache_fill_t *f, const mc_model_progress_t *progress, uint64_t base, char *err) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    if (!w) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_err_t rc = mc_expert_file_meta(f->cur->gguf, f->fp, w, err);
    for (size_t i = 0; !rc && i < f->n; i++)
        rc = mc_expert_file_add(w, &f->hp, f->s[i].layer, f->s[i].expert, f->s[i].types, err);
    uint8_t *head = NULL;
    size_t head_len = 0;
    if (!rc) rc = mc_gguf_writer_header(w, &head, &head_len, err);
    const uint64_t file_bytes = rc ? 0 : mc_gguf_writer_file_bytes(w);
    for (size_t i = 0; !rc && i < f->n; i++) {
        s_slice_t *s = &f->s[i];
        for (uint32_t j = 0; j < s->parts; j++) {
            s->part_off[j] = mc_gguf_writer_tensor_offset(w, (size_t)s->parts * i + j);
            s->part_len[j] = mc_expert_file_part_bytes(&f->hp, s->types, j);
        }
    }
    mc_gguf_writer_destroy(&w);
    if (rc) return rc;
    if (f->c->cap && file_bytes > f->c->cap) {
        free(head);
        return mc_err_set(err, MC_ERR_RANGE, "the placement's experts take %.1f MiB, more than the cache's bound of %.1f MiB "
                                             "(--cache-mb)",
                          file_bytes / 1048576.0, f->c->cap / 1048576.0);
    }
    bool resumed = s_resume(f, head, head_len, file_bytes);
    if (!resumed) {
        for (size_t i = 0; i < f->n; i++) f->s[i].done = 0;
        f->fd = open(f->part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (f->fd < 0) rc = mc_err_set(err, MC_ERR_IO, "cannot create %s: %s", f->part, strerror(errno));
        else if (!(rc = s_pwrite(f->fd, head, head_len, 0, f->part, err)) && ftruncate(f->fd, (off_t)file_bytes) != 0)
            rc = mc_err_set(err, MC_ERR_IO, "cannot size %s: %s", f->part, strerror(errno));
        if (!rc) rc = s_state_new(f, file_bytes, err);
    }
    free(head);
    if (rc) return rc;
    uint64_t checked = 0, read = base;
    for (size_t i = 0; !rc && i < f->n; i++) {
        s_slice_t *s = &f->s[i];
        if (progress && (s->local || s->done == s->bytes)) progress->fn(progress->ctx, read += s->bytes);
        if (s->local) {
            rc = s_copy_local(f, i, err);
            continue;
        }
        if (s->done == s->bytes && !s_check_in_file(f, i)) s->done = 0, s_state_put(f, i);
        else if (s->done == s->bytes) checked++;
        f->resumed += s->done;
        f->to_fetch += s->bytes - s->done;
    }
    if (resumed)
        mc_log_status(f->c->log, f->c->who, "cache: resuming %s: %.1f MiB already in place (%llu whole slices), %.1f MiB to fetch",
                      f->part, f->resumed / 1048576.0, (unsigned long long)checked, f->to_fetch / 1048576.0);
    f->at = f->ask = s_next_fetch(f, 0);
    f->ask_off = f->ask < f->n ? f->s[f->ask].done : 0;
    return rc;
}

// --- the fill ---------------------------------------------------------------------------

mc_cache_fill_t *mc_cache_fill_new(mc_cache_t *c, const mc_model_t *cur, const mc_cache_want_t *want,
                                   uint8_t *known, const mc_model_progress_t *progress, char *err) {
    const mc_hparams_t *hp = &cur->hp;
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    mc_cache_fill_t *f = calloc(1, sizeof *f);
    if (!f) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    f->c = c, f->cur = cur, f->hp = *hp, f->fp = mc_model_fingerprint(cur), f->fd = f->sfd = -1;
    for (size_t i = 0; i < cells; i++) f->n += want->held[i] != 0;
    if (!(f->s = calloc(f->n + 1, sizeof *f->s))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        mc_cache_fill_destroy(&f);
        return NULL;
    }
    bool all_local = true;
    uint64_t hashed = 0;
    for (size_t i = 0, p = 0; i < cells; i++) {
        if (!want->held[i]) continue;
        s_slice_t *s = &f->s[p];
        s->cell = i, s->layer = (uint32_t)(i / hp->n_expert), s->expert = (uint32_t)(i % hp->n_expert);
        for (int j = 0; j < 3; j++) s->types[j] = (mc_dtype_t)want->types[3 * p + (size_t)j];
        memcpy(s->hash, want->hashes + p * MC_SLICE_HASH_BYTES, MC_SLICE_HASH_BYTES);
        s->parts = mc_expert_file_parts(hp);
        s->bytes = mc_expert_file_slice_bytes(hp, s->types);
        if (!s->bytes) {
            mc_err_set(err, MC_ERR_FORMAT, "expert %u of layer %u: tensor types that cannot hold its rows", s->expert,
                       s->layer);
            mc_cache_fill_destroy(&f);
            return NULL;
        }
        mc_dtype_t have[3];
        if (mc_model_has_expert(cur, s->layer, s->expert)) {
            mc_expert_file_types(cur, s->layer, s->expert, have);
            uint8_t *k = known + i * MC_CACHE_KNOWN_BYTES;
            if (!memcmp(have, s->types, sizeof have)) {
                // Hashed once per opened file: a flipped byte on disk is
                // found at the first placement after a start.
                if (!k[0] && mc_slice_hash(cur, s->layer, s->expert, k + 1) == MC_OK) {
                    k[0] = 1;
                    hashed += s->bytes;
                    if (progress) progress->fn(progress->ctx, hashed);
                }
                s->local = k[0] && !memcmp(k + 1, s->hash, MC_SLICE_HASH_BYTES);
                if (k[0] && !s->local)
                    mc_log_status(c->log, c->who,
                                  "cache: expert %u of layer %u in %s does not match the coordinator's hash: "
                                  "fetching it again",
                                  s->expert, s->layer, cur->path ? cur->path : "the cache");
            }
        }
        all_local &= s->local;
        p++;
    }
    s_own_path(c, f->fp, f->path, sizeof f->path);
    snprintf(f->part, sizeof f->part, "%s.part", f->path);
    snprintf(f->state, sizeof f->state, "%s.state", f->path);
    struct stat st;
    if (all_local && cur->path && stat(cur->path, &st) == 0 && (!c->cap || (uint64_t)st.st_size <= c->cap)) {
        f->in_place = true;
        return f;
    }
    if (s_layout(f, progress, hashed, err)) {
        mc_cache_fill_destroy(&f);
        return NULL;
    }
    return f;
}

void mc_cache_fill_destroy(mc_cache_fill_t **pf) {
    if (!pf || !*pf) return;
    mc_cache_fill_t *f = *pf;
    if (f->fd >= 0) close(f->fd);
    if (f->sfd >= 0) close(f->sfd);
    mc_slice_hasher_destroy(&f->h);
    free(f->s);
    free(f);
    *pf = NULL;
}

bool mc_cache_fill_in_place(const mc_cache_fill_t *f) { return f->in_place; }

void mc_cache_fill_known(const mc_cache_fill_t *f, uint8_t *known) {
    for (size_t i = 0; i < f->n; i++) {
        uint8_t *k = known + f->s[i].cell * MC_CACHE_KNOWN_BYTES;
        k[0] = 1;
        memcpy(k + 1, f->s[i].hash, MC_SLICE_HASH_BYTES);
    }
}
uint32_t mc_cache_fill_outstanding(const mc_cache_fill_t *f) { return f->outstanding; }
bool mc_cache_fill_done(const mc_cache_fill_t *f) { return f->in_place || f->at >= f->n; }

void mc_cache_fill_progress(const mc_cache_fill_t *f, uint64_t *done, uint64_t *total, uint64_t *resumed) {
    *done = f->fetched < f->to_fetch ? f->fetched : f->to_fetch;
    *total = f->to_fetch;
    if (resumed) *resumed = f->resumed;
}

bool mc_cache_fill_next(mc_cache_fill_t *f, mc_wire_slice_request_t *out) {
    if (f->in_place || f->ask >= f->n) return false;
    const s_slice_t *s = &f->s[f->ask];
    const uint64_t left = s->bytes - f->ask_off;
    const uint32_t len = left < f->c->chunk ? (uint32_t)left : f->c->chunk;
    f->asked += len;
    const uint64_t remaining = f->to_fetch > f->asked ? f->to_fetch - f->asked : 0;
    *out = (mc_wire_slice_request_t){s->layer, s->expert, f->ask_off, len, remaining};
    f->ask_off += len;
    if (f->ask_off == s->bytes) {
        f->ask = s_next_fetch(f, f->ask + 1);
        f->ask_off = f->ask < f->n ? f->s[f->ask].done : 0;
    }
    f->outstanding++;
    return true;
}

void mc_cache_fill_rewind(mc_cache_fill_t *f) {
    f->outstanding = 0;
    f->asked = f->fetched;
    f->ask = f->at;
    f->ask_off = f->ask < f->n ? f->s[f->ask].done : 0;
}

mc_err_t mc_cache_fill_put(mc_cache_fill_t *f, const mc_wire_slice_data_t *d, char *err) {
    if (f->in_place || f->at >= f->n || !f->outstanding)
        return mc_err_set(err, MC_ERR_FORMAT, "a slice chunk nobody asked for");
    s_slice_t *s = &f->s[f->at];
    const uint64_t left = s->bytes - s->done, want = left < f->c->chunk ? left : f->c->chunk;
    if (d->layer != s->layer || d->expert != s->expert || d->offset != s->done || d->len != want)
        return mc_err_set(err, MC_ERR_FORMAT,
                          "slice chunk of expert %u of layer %u at %llu (%zu bytes), expected expert %u of layer %u at "
                          "%llu (%llu bytes)",
                          d->expert, d->layer, (unsigned long long)d->offset, d->len, s->expert, s->layer,
                          (unsigned long long)s->done, (unsigned long long)want);
    mc_err_t rc;
    if (!f->h) {
        // The hash starts from the slice's beginning: bytes resumed from an
        // earlier fill are read back and hashed, not trusted.
        if (!(f->h = mc_slice_hasher_new(s->types, f->hp.dim, f->hp.ffn))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        uint8_t *buf = s->done ? malloc(1u << 20) : NULL;
        if (s->done && !buf) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        for (uint64_t at = 0; at < s->done;) {
            const size_t k = s->done - at < (1u << 20) ? (size_t)(s->done - at) : (1u << 20);
            if ((rc = s_stream(f, s, at, buf, k, false, err))) {
                free(buf);
                return rc;
            }
            mc_slice_hasher_update(f->h, buf, k);
            at += k;
        }
        free(buf);
    }
    if ((rc = s_stream(f, s, s->done, (void *)d->data, d->len, true, err))) return rc;
    mc_slice_hasher_update(f->h, d->data, d->len);
    s->done += d->len;
    f->fetched += d->len;
    f->outstanding--;
    s_state_put(f, f->at);
    if (s->done < s->bytes) return MC_OK;
    uint8_t got[MC_SLICE_HASH_BYTES];
    mc_slice_hasher_final(&f->h, got);
    if (memcmp(got, s->hash, sizeof got)) {
        // Fetched again from its start: the bytes of an earlier, interrupted
        // fill may have been damaged on disk (the fresh ones never are: the
        // connection checks them).
        s->done = 0;
        s_state_put(f, f->at);
        f->to_fetch += s->bytes;
        if (++s->tries >= S_MAX_TRIES)
            return mc_err_set(err, MC_ERR_IO, "expert %u of layer %u did not match the coordinator's hash %u times",
                              s->expert, s->layer, s->tries);
        mc_cache_fill_rewind(f);
        return mc_err_set(err, MC_ERR_RANGE, "expert %u of layer %u did not match the coordinator's hash: fetching it again",
                          s->expert, s->layer);
    }
    f->at = s_next_fetch(f, f->at + 1);
    return MC_OK;
}

// --- finishing -----------------------------------------------------------------------

typedef struct {
    const mc_cache_fill_t *f;
    const char *keep;
    uint64_t total;
    struct {
        char path[PATH_MAX];
        int64_t mtime;
        uint64_t bytes;
    } files[64];
    size_t n;
} s_evict_t;

static void s_evict_scan(void *ctx, const char *path, uint64_t fp, const struct stat *st) {
    s_evict_t *e = ctx;
    if (!strcmp(path, e->keep)) return;
    if (fp == e->f->fp) { // the same model's older files: merged into the new one
        unlink(path);
        mc_log_status(e->f->c->log, e->f->c->who, "cache: removed %s (its experts are in %s now)", path, e->keep);
        return;
    }
    e->total += (uint64_t)st->st_size;
    if (e->n < sizeof e->files / sizeof e->files[0]) {
        snprintf(e->files[e->n].path, sizeof e->files[e->n].path, "%s", path);
        e->files[e->n].mtime = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
        e->files[e->n].bytes = (uint64_t)st->st_size;
        e->n++;
    }
}

mc_err_t mc_cache_fill_finish(mc_cache_fill_t *f, mc_model_t **out, char *err) {
    *out = NULL;
    if (f->in_place) return MC_OK;
    if (!mc_cache_fill_done(f)) return mc_err_set(err, MC_ERR_ARG, "the fill is not done");
    if (fsync(f->fd) != 0) return mc_err_set(err, MC_ERR_IO, "cannot sync %s: %s", f->part, strerror(errno));
    close(f->fd), f->fd = -1;
    if (rename(f->part, f->path) != 0)
        return mc_err_set(err, MC_ERR_IO, "cannot rename %s to %s: %s", f->part, f->path, strerror(errno));
    if (f->sfd >= 0) close(f->sfd), f->sfd = -1;
    unlink(f->state);
    // Other models' files go, oldest first, while the folder is over its bound.
    struct stat st;
    s_evict_t *e = calloc(1, sizeof *e);
    if (e && stat(f->path, &st) == 0) {
        e->f = f, e->keep = f->path, e->total = (uint64_t)st.st_size;
        s_each_file(f->c, s_evict_scan, e);
        while (f->c->cap && e->total > f->c->cap && e->n) {
            size_t old = 0;
            for (size_t i = 1; i < e->n; i++)
                if (e->files[i].mtime < e->files[old].mtime) old = i;
            unlink(e->files[old].path);
            mc_log_status(f->c->log, f->c->who, "cache: evicted %s (%.1f MiB) to stay within %.1f MiB", e->files[old].path,
                          e->files[old].bytes / 1048576.0, f->c->cap / 1048576.0);
            e->total -= e->files[old].bytes;
            e->files[old] = e->files[--e->n];
        }
    }
    free(e);
    char sub[MC_ERR_LEN];
    if (!(*out = mc_model_open_node(f->path, sub))) return mc_err_set(err, MC_ERR_IO, "%s", sub);
    return MC_OK;
}
