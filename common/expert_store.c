/*
 * expert_store: the pool (buffers mapped within the budget, reused for
 * experts of one size), eviction, pread and repacking on arrival, the
 * reader thread, and the transition predictor.
 */
#include "expert_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "kernel.h"
#include "quant.h"

#define S_ALIGN 64
#define S_SCRATCH_BYTES (1u << 20)  // a repacked matrix is read through this many bytes at a time
#define S_AGE_EVERY 4096            // LFU: uses are halved after this many acquires
#define S_HOT_EVERY 1024
#define S_SLOTS 3                   // predictions kept per source (see pred)            // HOT without counts: the hot set is chosen again after this many

enum { S_ABSENT, S_LOADING, S_READY };
enum { S_Q_NONE, S_Q_PREFETCH, S_Q_WANT };

typedef struct {
    uint8_t *buf;    // the pool buffer while loading or resident
    uint64_t bytes;  // mc_expert_store_slot_bytes
    uint8_t state, queued, managed, hot, prefetched, ahead;
    uint32_t pins;
    uint32_t freq;   // LFU
    uint64_t last;   // tick of the last use (or arrival)
    uint64_t count;  // acquires ever (the HOT set without counts)
    uint32_t res_at; // place in res[] while it has a buffer
} s_entry_t;

typedef struct {
    uint8_t *p;
    uint64_t bytes;
} s_buf_t;

struct mc_expert_store {
    const mc_model_t *m;
    mc_expert_store_params_t p;
    char *path;
    int fd;
    bool repack[MC_DTYPE_ID_LIMIT]; // by dtype id: repacked on arrival (the type has an 8-row layout that mm's kernel reads)
    bool hot_fixed; // the hot set came from counts given at creation
    uint32_t n_layer, n_expert;
    size_t cells;
    s_entry_t *ent;
    uint32_t *res; // cells with a buffer (loading or resident)
    size_t n_res;
    uint64_t used; // bytes mapped: buffers of resident, loading and free entries
    s_buf_t *free_bufs;
    size_t n_free;
    uint64_t tick, layer_tick, acquires;
    size_t n_loading;
    // The reader: misses of the current layer first (want), then the
    // prediction for the next (prefetch). Each ring holds at most n_expert
    // cells and is emptied when a new batch is queued.
    uint32_t *want_q, *pre_q;
    size_t want_head, want_n, pre_head, pre_n;
    pthread_t thr;
    bool thr_started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    uint8_t *scratch[2]; // [0] the computing thread's, [1] the reader's
    size_t scratch_bytes;
    // Observation and prediction.
    int64_t cur_layer, prev_layer;
    uint8_t *cur_set, *prev_set; // (n_expert)
    uint16_t *trans;             // (n_layer - 1, n_expert, n_expert): layer l's e followed by l+1's e'
    // Each source's predictions, kept by layer mod S_SLOTS: layer l is
    // scored when l+1 is observed, and by then the router has guessed for
    // l+1 and l+2 (its hook runs before a layer's step).
    uint8_t *pred[MC_STORE_N_PRED][S_SLOTS];
    int64_t pred_layer[MC_STORE_N_PRED][S_SLOTS];
    uint32_t *order; // (cells) scratch for choosing the hot set, or (n_expert) a prediction
    mc_expert_store_stats_t st;
};

mc_expert_store_params_t mc_expert_store_params_default(void) {
    return (mc_expert_store_params_t){
        .policy = MC_STORE_LFU, .hot_percent = 50, .repack = true, .prefetch = false,
        .prefetch_from = MC_STORE_PRED_TRANSITIONS};
}

static uint64_t s_round(uint64_t b) { return (b + S_ALIGN - 1) / S_ALIGN * S_ALIGN; }

uint64_t mc_expert_store_slot_bytes(const mc_model_t *m, uint32_t layer, uint32_t e) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    return s_round(mc_matrix_bytes(&x->gate)) + s_round(mc_matrix_bytes(&x->up)) + s_round(mc_matrix_bytes(&x->down));
}

uint64_t mc_expert_store_min_bytes(const mc_model_t *m, const uint8_t *managed) {
    uint64_t most = 0;
    for (size_t i = 0; i < (size_t)m->hp.n_layer * m->hp.n_expert; i++) {
        if (managed && !managed[i]) continue;
        const uint64_t b = mc_expert_store_slot_bytes(m, (uint32_t)(i / m->hp.n_expert), (uint32_t)(i % m->hp.n_expert));
        if (b > most) most = b;
    }
    return most;
}

uint64_t mc_expert_store_total_bytes(const mc_model_t *m, const uint8_t *managed) {
    uint64_t sum = 0;
    for (size_t i = 0; i < (size_t)m->hp.n_layer * m->hp.n_expert; i++)
        if (!managed || managed[i])
            sum += mc_expert_store_slot_bytes(m, (uint32_t)(i / m->hp.n_expert), (uint32_t)(i % m->hp.n_expert));
    return sum;
}

static bool s_repackable(const mc_expert_store_t *st, const mc_matrix_t *w) {
    return (uint32_t)w->type < MC_DTYPE_ID_LIMIT && st->repack[w->type] && w->n_out >= MC_Q4_0X8_ROWS &&
           w->n_in % mc_dtype_traits(w->type)->block_elems == 0;
}

// --- the pool -------------------------------------------------------------------------

static void s_res_add(mc_expert_store_t *st, uint32_t cell) {
    st->ent[cell].res_at = (uint32_t)st->n_res;
    st->res[st->n_res++] = cell;
}

static void s_res_remove(mc_expert_store_t *st, uint32_t cell) {
    const uint32_t at = st->ent[cell].res_at, last = st->res[--st->n_res];
    st->res[at] = last;
    st->ent[last].res_at = at;
}

// The entry's buffer back to the free list (the entry is then absent).
static void s_drop(mc_expert_store_t *st, uint32_t cell) {
    s_entry_t *e = &st->ent[cell];
    st->free_bufs[st->n_free++] = (s_buf_t){e->buf, e->bytes};
    s_res_remove(st, cell);
    e->buf = NULL;
    e->state = S_ABSENT;
    e->prefetched = 0;
}

// Which resident, unpinned expert leaves (UINT32_MAX: none). Experts the
// current layer uses or has read ahead for the next (touched since the
// layer began) go only when nothing older can, and never for a read ahead;
// the hot set goes last. Among the rest the policy picks.
static uint32_t s_victim(const mc_expert_store_t *st, bool ahead) {
    uint32_t best[3] = {UINT32_MAX, UINT32_MAX, UINT32_MAX}; // old, recent, hot
    for (size_t i = 0; i < st->n_res; i++) {
        const uint32_t c = st->res[i];
        const s_entry_t *e = &st->ent[c];
        if (e->state != S_READY || e->pins) continue;
        const bool recent = e->last >= st->layer_tick;
        if (ahead && recent) continue;
        const int k = st->p.policy == MC_STORE_HOT && e->hot ? 2 : recent ? 1 : 0;
        if (best[k] == UINT32_MAX) {
            best[k] = c;
            continue;
        }
        const s_entry_t *b = &st->ent[best[k]];
        const bool better = st->p.policy == MC_STORE_LFU ? e->freq < b->freq || (e->freq == b->freq && e->last < b->last)
                                                          : e->last < b->last;
        if (better) best[k] = c;
    }
    if (best[0] != UINT32_MAX || ahead) return best[0];
    return best[1] != UINT32_MAX ? best[1] : best[2];
}

// A buffer of bytes within the budget, evicting as needed; NULL when
// everything resident is pinned (or, ahead, touched by this layer) or the
// system has no memory. Under mu.
static uint8_t *s_alloc(mc_expert_store_t *st, uint64_t bytes, bool ahead) {
    for (;;) {
        for (size_t i = 0; i < st->n_free; i++)
            if (st->free_bufs[i].bytes == bytes) {
                uint8_t *p = st->free_bufs[i].p;
                st->free_bufs[i] = st->free_bufs[--st->n_free];
                return p;
            }
        if (st->used + bytes <= st->p.budget_bytes) {
            void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return NULL;
            st->used += bytes;
            return p;
        }
        if (st->n_free) { // buffers of other sizes go first
            const s_buf_t b = st->free_bufs[--st->n_free];
            munmap(b.p, b.bytes);
            st->used -= b.bytes;
            continue;
        }
        const uint32_t v = s_victim(st, ahead);
        if (v == UINT32_MAX) return NULL;
        if (st->ent[v].prefetched) st->st.prefetch_wasted++;
        st->st.evictions++;
        s_drop(st, v);
    }
}

// --- reading ----------------------------------------------------------------------------

static mc_err_t s_pread(const mc_expert_store_t *st, uint8_t *dst, size_t n, uint64_t off, uint32_t layer, uint32_t e,
                        char *err) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pread(st->fd, dst + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return mc_err_set(err, MC_ERR_IO, "%s: cannot read expert %u of layer %u at offset %llu: %s", st->path, e,
                              layer, (unsigned long long)(off + done), strerror(errno));
        if (r == 0)
            return mc_err_set(err, MC_ERR_IO,
                              "%s: short read of expert %u of layer %u at offset %llu: %zu of %zu bytes (the file was "
                              "truncated or replaced)",
                              st->path, e, layer, (unsigned long long)off, done, n);
        done += (size_t)r;
    }
    return MC_OK;
}

// One matrix's bytes at dst in the pool's layout: repacked groups of 8 rows
// then the raw tail rows (the same bytes as the raw rows, so data + r *
// row_bytes is still row r for the tail), or the raw rows.
static mc_err_t s_read_matrix(const mc_expert_store_t *st, const mc_matrix_t *w, uint8_t *dst, uint8_t *scratch,
                              uint32_t layer, uint32_t e, char *err) {
    const uint64_t off = (uint64_t)(w->data - mc_gguf_base(st->m->gguf));
    if (!s_repackable(st, w)) {
        // The copy is what gets multiplied: its MXFP4 scales are checked
        // here, on every read (the file may change under a running process).
        const mc_err_t rc = s_pread(st, dst, (size_t)mc_matrix_bytes(w), off, layer, e, err);
        return rc ? rc : mc_model_matrix_check(st->m, w, dst, err);
    }
    const uint32_t groups = w->n_out / MC_Q4_0X8_ROWS;
    const size_t group_raw = (size_t)MC_Q4_0X8_ROWS * w->row_bytes;
    size_t per = st->scratch_bytes / group_raw;
    if (per == 0) per = 1;
    for (uint32_t g = 0; g < groups;) {
        const uint32_t cnt = groups - g < per ? groups - g : (uint32_t)per;
        mc_err_t rc = s_pread(st, scratch, cnt * group_raw, off + (uint64_t)g * group_raw, layer, e, err);
        if (rc) return rc;
        for (uint32_t i = 0; i < cnt; i++)
            mc_kernel_repack8(w->type, scratch + i * group_raw, w->row_bytes, w->n_in, dst + (size_t)(g + i) * group_raw);
        g += cnt;
    }
    const size_t tail = (size_t)(w->n_out - groups * MC_Q4_0X8_ROWS) * w->row_bytes;
    return tail ? s_pread(st, dst + groups * group_raw, tail, off + groups * group_raw, layer, e, err) : MC_OK;
}

// What the store reads of an expert: its matrices (biases, where the family
// has them, stay with the model's layer: a few KB, always resident).
static uint64_t s_weight_bytes(const mc_model_t *m, uint32_t layer, uint32_t e) {
    const mc_expert_t *x = &m->layers[layer].experts[e];
    return mc_matrix_bytes(&x->gate) + mc_matrix_bytes(&x->up) + mc_matrix_bytes(&x->down);
}

static mc_err_t s_read(mc_expert_store_t *st, uint32_t cell, uint8_t *buf, uint8_t *scratch, char *err) {
    const uint32_t layer = cell / st->n_expert, e = cell % st->n_expert;
    const mc_expert_t *x = &st->m->layers[layer].experts[e];
    const mc_matrix_t *ws[3] = {&x->gate, &x->up, &x->down};
    const uint64_t t0 = mc_clock_us();
    uint64_t at = 0;
    for (int i = 0; i < 3; i++) {
        mc_err_t rc = s_read_matrix(st, ws[i], buf + at, scratch, layer, e, err);
        if (rc) return rc;
        at += s_round(mc_matrix_bytes(ws[i]));
        if (st->p.uncached) // advice only
            (void)posix_fadvise(st->fd, (off_t)(ws[i]->data - mc_gguf_base(st->m->gguf)), (off_t)mc_matrix_bytes(ws[i]),
                                POSIX_FADV_DONTNEED);
    }
    pthread_mutex_lock(&st->mu);
    st->st.reads++;
    st->st.bytes_read += s_weight_bytes(st->m, layer, e);
    st->st.read_us += mc_clock_us() - t0;
    pthread_mutex_unlock(&st->mu);
    return MC_OK;
}

// Read cell's expert into buf (allocated for it by the caller) with mu
// held on entry and on return; mu is let go during the read itself, so
// other threads see the cell LOADING meanwhile. On failure the cell is
// dropped and counted; either way waiters on cv_done are woken.
static mc_err_t s_load(mc_expert_store_t *st, uint32_t cell, uint8_t *buf, uint8_t *scratch, char *err) {
    s_entry_t *x = &st->ent[cell];
    x->buf = buf;
    x->state = S_LOADING;
    s_res_add(st, cell);
    st->n_loading++;
    pthread_mutex_unlock(&st->mu);
    const mc_err_t rc = s_read(st, cell, buf, scratch, err);
    pthread_mutex_lock(&st->mu);
    st->n_loading--;
    if (rc) {
        st->st.errors++;
        s_drop(st, cell);
    } else {
        x->state = S_READY;
    }
    pthread_cond_broadcast(&st->cv_done);
    return rc;
}


// The matrices of a resident entry.
static void s_view(const mc_expert_store_t *st, uint32_t cell, mc_expert_t *out) {
    const mc_expert_t *x = &st->m->layers[cell / st->n_expert].experts[cell % st->n_expert];
    const mc_matrix_t *src[3] = {&x->gate, &x->up, &x->down};
    mc_matrix_t *dst[3] = {&out->gate, &out->up, &out->down};
    const uint8_t *buf = st->ent[cell].buf;
    uint64_t at = 0;
    for (int i = 0; i < 3; i++) {
        *dst[i] = *src[i];
        dst[i]->data = buf + at;
        dst[i]->packed = s_repackable(st, src[i]) ? buf + at : NULL;
        at += s_round(mc_matrix_bytes(src[i]));
    }
}

// --- the reader -------------------------------------------------------------------------

static bool s_pop(mc_expert_store_t *st, uint32_t *cell, uint8_t *kind) {
    while (st->want_n) {
        const uint32_t c = st->want_q[st->want_head++];
        st->want_n--;
        if (st->ent[c].queued == S_Q_WANT) return *cell = c, *kind = S_Q_WANT, true;
    }
    while (st->pre_n) {
        const uint32_t c = st->pre_q[st->pre_head++];
        st->pre_n--;
        if (st->ent[c].queued == S_Q_PREFETCH) return *cell = c, *kind = S_Q_PREFETCH, true;
    }
    return false;
}

static void *s_reader(void *arg) {
    mc_expert_store_t *st = arg;
    char err[MC_ERR_LEN];
    pthread_mutex_lock(&st->mu);
    while (!st->stop) {
        uint32_t cell;
        uint8_t kind;
        if (!s_pop(st, &cell, &kind)) {
            pthread_cond_wait(&st->cv_work, &st->mu);
            continue;
        }
        s_entry_t *e = &st->ent[cell];
        e->queued = S_Q_NONE;
        if (e->state != S_ABSENT) continue;
        uint8_t *buf = s_alloc(st, e->bytes, kind == S_Q_PREFETCH);
        if (!buf) continue; // no room now: the step reads it itself if it needs it
        if (s_load(st, cell, buf, st->scratch[1], err) == MC_OK) {
            e->last = ++st->tick;
            if (kind == S_Q_PREFETCH) e->prefetched = 1, st->st.prefetched++;
        }
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

// --- the hot set --------------------------------------------------------------------------

typedef struct {
    uint64_t count;
    uint32_t cell;
} s_ranked_t;

static int s_by_count(const void *a, const void *b) {
    const s_ranked_t *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->cell < y->cell ? -1 : x->cell > y->cell;
}

// The most-routed managed experts filling hot_percent of the budget. Under mu.
static void s_choose_hot(mc_expert_store_t *st, const uint64_t *counts) {
    s_ranked_t *r = malloc(st->cells * sizeof *r);
    if (!r) return; // the previous hot set stays
    size_t n = 0;
    for (size_t i = 0; i < st->cells; i++) {
        st->ent[i].hot = 0;
        if (st->ent[i].managed) r[n++] = (s_ranked_t){counts ? counts[i] : st->ent[i].count, (uint32_t)i};
    }
    qsort(r, n, sizeof *r, s_by_count);
    const uint64_t room = st->p.budget_bytes / 100 * st->p.hot_percent;
    uint64_t taken = 0;
    for (size_t i = 0; i < n && r[i].count; i++) {
        s_entry_t *e = &st->ent[r[i].cell];
        if (taken + e->bytes > room) break;
        e->hot = 1;
        taken += e->bytes;
    }
    free(r);
}

// --- lifetime --------------------------------------------------------------------------------

mc_expert_store_t *mc_expert_store_new(const mc_model_t *m, const mc_matmul_t *mm, const mc_expert_store_params_t *p,
                                       char *err) {
    if (!m->path || !mc_gguf_mapped(m->gguf)) {
        mc_err_set(err, MC_ERR_ARG, "an expert store reads the model's file: open the model with mc_model_open");
        return NULL;
    }
    if (p->policy > MC_STORE_HOT || p->prefetch_from >= MC_STORE_N_PRED ||
        (p->policy == MC_STORE_HOT && (p->hot_percent < 1 || p->hot_percent > 90))) {
        mc_err_set(err, MC_ERR_ARG, "expert store: bad policy, predictor or hot share");
        return NULL;
    }
    const uint64_t least = mc_expert_store_min_bytes(m, p->managed);
    if (p->budget_bytes < least) {
        mc_err_set(err, MC_ERR_ARG, "a memory limit of %.1f MiB is below one expert (%.1f MiB): the least is %llu MiB",
                   p->budget_bytes / 1048576.0, least / 1048576.0, (unsigned long long)((least + 1048575) >> 20));
        return NULL;
    }
    mc_expert_store_t *st = calloc(1, sizeof *st);
    if (!st) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    st->m = m;
    st->p = *p;
    st->p.managed = NULL;
    st->p.ahead = NULL;
    st->p.hot_counts = NULL;
    st->fd = -1;
    st->n_layer = m->hp.n_layer, st->n_expert = m->hp.n_expert;
    st->cells = (size_t)st->n_layer * st->n_expert;
    st->cur_layer = st->prev_layer = -1;
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        for (int j = 0; j < S_SLOTS; j++) st->pred_layer[i][j] = -1;
    for (uint32_t t = 0; t < MC_DTYPE_ID_LIMIT; t++) {
        const mc_kernel_t *k = mc_matmul_kernel(mm, (mc_dtype_t)t);
        st->repack[t] = p->repack && mc_kernel_repacks((mc_dtype_t)t) && k && k->dot8;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv_work, NULL);
    pthread_cond_init(&st->cv_done, NULL);
    size_t most_row = 0;
    st->ent = calloc(st->cells, sizeof *st->ent);
    st->res = calloc(st->cells, sizeof *st->res);
    st->free_bufs = calloc(st->cells, sizeof *st->free_bufs);
    st->want_q = calloc(st->n_expert, sizeof *st->want_q);
    st->pre_q = calloc(st->n_expert, sizeof *st->pre_q);
    st->cur_set = calloc(st->n_expert, 1);
    st->prev_set = calloc(st->n_expert, 1);
    bool preds = true;
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        for (int j = 0; j < S_SLOTS; j++) preds &= (st->pred[i][j] = calloc(st->n_expert, 1)) != NULL;
    st->order = calloc(st->n_expert, sizeof *st->order);
    if (st->n_layer > 1) st->trans = calloc((size_t)(st->n_layer - 1) * st->n_expert * st->n_expert, sizeof *st->trans);
    st->path = strdup(m->path);
    bool ok = st->ent && st->res && st->free_bufs && st->want_q && st->pre_q && st->cur_set && st->prev_set &&
              preds && st->order && (st->n_layer == 1 || st->trans) && st->path;
    for (size_t i = 0; ok && i < st->cells; i++) {
        s_entry_t *e = &st->ent[i];
        const mc_expert_t *xe = &m->layers[i / st->n_expert].experts[i % st->n_expert];
        // An experts-only file lacks some experts (NULL data): never read through here.
        e->managed = (!p->managed || p->managed[i]) && xe->gate.data && xe->up.data && xe->down.data;
        e->ahead = !p->ahead || p->ahead[i];
        e->bytes = mc_expert_store_slot_bytes(m, (uint32_t)(i / st->n_expert), (uint32_t)(i % st->n_expert));
        if (!e->managed) continue;
        st->st.managed++;
        const mc_expert_t *x = &m->layers[i / st->n_expert].experts[i % st->n_expert];
        const size_t rb[3] = {x->gate.row_bytes, x->up.row_bytes, x->down.row_bytes};
        for (int j = 0; j < 3; j++) most_row = rb[j] > most_row ? rb[j] : most_row;
    }
    st->scratch_bytes = S_SCRATCH_BYTES > MC_Q4_0X8_ROWS * most_row ? S_SCRATCH_BYTES : MC_Q4_0X8_ROWS * most_row;
    for (int i = 0; ok && i < 2; i++) ok = (st->scratch[i] = malloc(st->scratch_bytes)) != NULL;
    if (!ok) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st->fd = open(st->path, O_RDONLY | O_CLOEXEC)) < 0) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot open for reading experts: %s", st->path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0 || (uint64_t)sb.st_size != mc_gguf_size(m->gguf)) {
        mc_err_set(err, MC_ERR_IO, "%s is no longer the file that was opened (%lld bytes, %zu mapped)", st->path,
                   (long long)sb.st_size, mc_gguf_size(m->gguf));
        goto fail;
    }
    if (p->policy == MC_STORE_HOT && p->hot_counts) s_choose_hot(st, p->hot_counts), st->hot_fixed = true;
    st->st.budget_bytes = p->budget_bytes;
    if (pthread_create(&st->thr, NULL, s_reader, st) != 0) {
        mc_err_set(err, MC_ERR_NOMEM, "cannot start the expert reader thread");
        goto fail;
    }
    st->thr_started = true;
    return st;
fail:
    mc_expert_store_destroy(&st);
    return NULL;
}

void mc_expert_store_destroy(mc_expert_store_t **pst) {
    if (!pst || !*pst) return;
    mc_expert_store_t *st = *pst;
    if (st->thr_started) {
        pthread_mutex_lock(&st->mu);
        st->stop = true;
        pthread_cond_broadcast(&st->cv_work);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->thr, NULL);
    }
    for (size_t i = 0; st->ent && i < st->cells; i++)
        if (st->ent[i].buf) munmap(st->ent[i].buf, st->ent[i].bytes);
    for (size_t i = 0; i < st->n_free; i++) munmap(st->free_bufs[i].p, st->free_bufs[i].bytes);
    if (st->fd >= 0) close(st->fd);
    free(st->ent), free(st->res), free(st->free_bufs), free(st->want_q), free(st->pre_q);
    free(st->cur_set), free(st->prev_set), free(st->order), free(st->trans);
    free(st->scratch[0]), free(st->scratch[1]), free(st->path);
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        for (int j = 0; j < S_SLOTS; j++) free(st->pred[i][j]);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv_work);
    pthread_cond_destroy(&st->cv_done);
    free(st);
    *pst = NULL;
}

bool mc_expert_store_manages(const mc_expert_store_t *st, uint32_t layer, uint32_t e) {
    return st && layer < st->n_layer && e < st->n_expert && st->ent[(size_t)layer * st->n_expert + e].managed;
}

// --- the computing thread -----------------------------------------------------------------

mc_err_t mc_expert_store_acquire(mc_expert_store_t *st, uint32_t layer, uint32_t e, mc_expert_t *out, char *err) {
    if (!mc_expert_store_manages(st, layer, e))
        return mc_err_set(err, MC_ERR_RANGE, "expert %u of layer %u is not kept by this expert store", e, layer);
    const uint32_t cell = layer * st->n_expert + e;
    s_entry_t *x = &st->ent[cell];
    uint64_t t0 = 0;
    pthread_mutex_lock(&st->mu);
    while (x->state != S_READY) {
        if (!t0) t0 = mc_clock_us();
        if (x->state == S_LOADING) { // the reader has it
            pthread_cond_wait(&st->cv_done, &st->mu);
            continue;
        }
        x->queued = S_Q_NONE; // read here, not by the reader
        uint8_t *buf = s_alloc(st, x->bytes, false);
        if (!buf) {
            if (st->n_loading) { // room comes back when the reader's reads land
                pthread_cond_wait(&st->cv_done, &st->mu);
                continue;
            }
            st->st.stall_us += mc_clock_us() - t0;
            pthread_mutex_unlock(&st->mu);
            return mc_err_set(err, MC_ERR_BUSY, "no room for expert %u of layer %u: every resident expert is in use",
                              e, layer);
        }
        const mc_err_t rc = s_load(st, cell, buf, st->scratch[0], err);
        if (rc) {
            st->st.stall_us += mc_clock_us() - t0;
            pthread_mutex_unlock(&st->mu);
            return rc;
        }
    }
    if (t0) st->st.misses++, st->st.stall_us += mc_clock_us() - t0;
    else st->st.hits++;
    if (x->prefetched) st->st.prefetch_used++, x->prefetched = 0;
    x->pins++;
    x->last = ++st->tick;
    x->freq++;
    x->count++;
    st->acquires++;
    if (st->p.policy == MC_STORE_LFU && st->acquires % S_AGE_EVERY == 0)
        for (size_t i = 0; i < st->cells; i++) st->ent[i].freq /= 2;
    if (st->p.policy == MC_STORE_HOT && !st->hot_fixed && st->acquires % S_HOT_EVERY == 0) s_choose_hot(st, NULL);
    s_view(st, cell, out);
    pthread_mutex_unlock(&st->mu);
    return MC_OK;
}

void mc_expert_store_release(mc_expert_store_t *st, uint32_t layer, uint32_t e) {
    if (!mc_expert_store_manages(st, layer, e)) return;
    pthread_mutex_lock(&st->mu);
    s_entry_t *x = &st->ent[(size_t)layer * st->n_expert + e];
    if (x->pins) x->pins--;
    pthread_mutex_unlock(&st->mu);
}

// --- observation and prediction -------------------------------------------------------------

// Layer cur_layer is done: its predictions scored, its transitions from
// the layer before learned. Under mu.
static void s_finish_layer(mc_expert_store_t *st) {
    if (st->cur_layer < 0) return;
    const uint32_t ne = st->n_expert;
    uint32_t actual = 0;
    for (uint32_t e = 0; e < ne; e++) actual += st->cur_set[e];
    const int slot = (int)(st->cur_layer % S_SLOTS);
    for (int s = 0; s < MC_STORE_N_PRED; s++) {
        if (st->pred_layer[s][slot] != st->cur_layer) continue;
        const uint8_t *p = st->pred[s][slot];
        uint32_t predicted = 0, correct = 0;
        for (uint32_t e = 0; e < ne; e++) predicted += p[e], correct += p[e] && st->cur_set[e];
        st->st.pred[s].predicted += predicted, st->st.pred[s].correct += correct, st->st.pred[s].actual += actual;
        st->pred_layer[s][slot] = -1;
    }
    if (st->trans && st->prev_layer >= 0 && st->prev_layer + 1 == st->cur_layer) {
        uint16_t *t = st->trans + (size_t)st->prev_layer * ne * ne;
        for (uint32_t a = 0; a < ne; a++) {
            if (!st->prev_set[a]) continue;
            uint16_t *row = t + (size_t)a * ne;
            bool full = false;
            for (uint32_t b = 0; b < ne; b++) full |= st->cur_set[b] && row[b] == UINT16_MAX;
            for (uint32_t b = 0; full && b < ne; b++) row[b] /= 2; // old history weighs half
            for (uint32_t b = 0; b < ne; b++) row[b] += st->cur_set[b];
        }
    }
    memcpy(st->prev_set, st->cur_set, ne);
    st->prev_layer = st->cur_layer;
}

// Record src's prediction for layer and queue its reads when src drives
// the prefetch. Under mu.
static void s_note_pred(mc_expert_store_t *st, mc_store_pred_t src, uint32_t layer, const uint32_t *experts, uint32_t n) {
    uint8_t *p = st->pred[src][layer % S_SLOTS];
    memset(p, 0, st->n_expert);
    for (uint32_t i = 0; i < n; i++)
        if (experts[i] < st->n_expert) p[experts[i]] = 1;
    st->pred_layer[src][layer % S_SLOTS] = layer;
    if (!st->p.prefetch || src != st->p.prefetch_from) return;
    // A new prediction replaces the reads still queued from the last one.
    while (st->pre_n) {
        const uint32_t c = st->pre_q[st->pre_head++];
        st->pre_n--;
        if (st->ent[c].queued == S_Q_PREFETCH) st->ent[c].queued = S_Q_NONE;
    }
    st->pre_head = 0;
    for (uint32_t i = 0; i < n && st->pre_n < st->n_expert; i++) {
        if (experts[i] >= st->n_expert) continue;
        const uint32_t c = layer * st->n_expert + experts[i];
        s_entry_t *x = &st->ent[c];
        if (!x->managed || !x->ahead || x->state != S_ABSENT || x->queued != S_Q_NONE) continue;
        x->queued = S_Q_PREFETCH;
        st->pre_q[st->pre_n++] = c;
    }
    if (st->pre_n) pthread_cond_signal(&st->cv_work);
}

void mc_expert_store_observe(mc_expert_store_t *st, uint32_t layer, const uint32_t *experts, uint32_t n) {
    if (!st || layer >= st->n_layer) return;
    const uint32_t ne = st->n_expert;
    pthread_mutex_lock(&st->mu);
    if ((int64_t)layer != st->cur_layer) {
        s_finish_layer(st);
        st->cur_layer = layer;
        memset(st->cur_set, 0, ne);
        st->layer_tick = st->tick + 1;
        st->st.steps++;
    }
    // This step's misses to the reader (up to half the budget: the step
    // itself reads the rest as it goes, and turns take what fits).
    while (st->want_n) {
        const uint32_t c = st->want_q[st->want_head++];
        st->want_n--;
        if (st->ent[c].queued == S_Q_WANT) st->ent[c].queued = S_Q_NONE;
    }
    st->want_head = 0;
    uint64_t queued_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (experts[i] >= ne) continue;
        const uint32_t c = layer * ne + experts[i];
        s_entry_t *x = &st->ent[c];
        if (!x->managed) continue;
        st->cur_set[experts[i]] = 1;
        x->last = ++st->tick; // in use this layer: not for a read ahead to take
        if (x->state != S_ABSENT || queued_bytes + x->bytes > st->p.budget_bytes / 2) continue;
        x->queued = S_Q_WANT;
        st->want_q[st->want_n++] = c;
        queued_bytes += x->bytes;
    }
    if (st->want_n) pthread_cond_signal(&st->cv_work);
    // The next layer from the transitions seen: as many experts as this
    // one uses, the most frequent followers of its experts.
    if (layer + 1 < st->n_layer && st->trans) {
        const uint16_t *t = st->trans + (size_t)layer * ne * ne;
        uint32_t want = 0, got = 0;
        for (uint32_t e = 0; e < ne; e++) want += st->cur_set[e];
        uint64_t score[256];
        for (uint32_t b = 0; b < ne; b++) {
            score[b] = 0;
            for (uint32_t a = 0; a < ne; a++)
                if (st->cur_set[a]) score[b] += t[(size_t)a * ne + b];
        }
        while (got < want) {
            uint32_t best = ne;
            for (uint32_t b = 0; b < ne; b++)
                if (score[b] && (best == ne || score[b] > score[best])) best = b;
            if (best == ne) break;
            st->order[got++] = best;
            score[best] = 0;
        }
        s_note_pred(st, MC_STORE_PRED_TRANSITIONS, layer + 1, st->order, got);
    }
    pthread_mutex_unlock(&st->mu);
}

void mc_expert_store_predict(mc_expert_store_t *st, mc_store_pred_t src, uint32_t layer, const uint32_t *experts,
                             uint32_t n) {
    if (!st || src >= MC_STORE_N_PRED || layer >= st->n_layer) return;
    pthread_mutex_lock(&st->mu);
    s_note_pred(st, src, layer, experts, n);
    pthread_mutex_unlock(&st->mu);
}

mc_err_t mc_expert_store_warm(mc_expert_store_t *st, const mc_model_progress_t *progress, char *err) {
    uint64_t read = 0;
    for (uint32_t e = 0; e < st->n_expert; e++)
        for (uint32_t l = 0; l < st->n_layer; l++) {
            const uint32_t cell = l * st->n_expert + e;
            s_entry_t *x = &st->ent[cell];
            pthread_mutex_lock(&st->mu);
            if (!x->managed || x->state != S_ABSENT) {
                pthread_mutex_unlock(&st->mu);
                continue;
            }
            if (st->used + x->bytes > st->p.budget_bytes) { // full: warming never evicts
                pthread_mutex_unlock(&st->mu);
                return MC_OK;
            }
            uint8_t *buf = s_alloc(st, x->bytes, false);
            if (!buf) {
                pthread_mutex_unlock(&st->mu);
                return mc_err_set(err, MC_ERR_NOMEM, "out of memory for the expert pool");
            }
            const mc_err_t rc = s_load(st, cell, buf, st->scratch[0], err);
            if (rc == MC_OK) x->last = ++st->tick;
            pthread_mutex_unlock(&st->mu);
            if (rc) return rc;
            read += s_weight_bytes(st->m, l, e);
            if (progress) progress->fn(progress->ctx, read);
        }
    return MC_OK;
}

void mc_expert_store_stats(const mc_expert_store_t *st, mc_expert_store_stats_t *out) {
    mc_expert_store_t *w = (mc_expert_store_t *)st; // the lock only
    pthread_mutex_lock(&w->mu);
    *out = st->st;
    out->used_bytes = st->used;
    out->resident = 0;
    for (size_t i = 0; i < st->n_res; i++) out->resident += st->ent[st->res[i]].state == S_READY;
    pthread_mutex_unlock(&w->mu);
}

// --- names ---------------------------------------------------------------------------------

static const char *const s_policy_names[] = {"lru", "lfu", "hot"};
static const char *const s_pred_names[] = {"transitions", "router"};

const char *mc_store_policy_name(mc_store_policy_t p) { return p <= MC_STORE_HOT ? s_policy_names[p] : "?"; }
const char *mc_store_pred_name(mc_store_pred_t p) { return p < MC_STORE_N_PRED ? s_pred_names[p] : "?"; }

mc_err_t mc_store_policy_parse(const char *s, mc_store_policy_t *out) {
    for (int i = 0; i <= MC_STORE_HOT; i++)
        if (!strcmp(s, s_policy_names[i])) return *out = (mc_store_policy_t)i, MC_OK;
    return MC_ERR_ARG;
}

mc_err_t mc_store_pred_parse(const char *s, mc_store_pred_t *out) {
    for (int i = 0; i < MC_STORE_N_PRED; i++)
        if (!strcmp(s, s_pred_names[i])) return *out = (mc_store_pred_t)i, MC_OK;
    return MC_ERR_ARG;
}
