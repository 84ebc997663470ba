/*
 * matmul: activation conversion and row-block scheduling over the pool.
 */
#include "matmul.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "quant.h"

// Output rows per scheduling unit: a multiple of 16 floats (one 64-byte cache
// line) so two threads never write the same line of y.
#define MC_MM_BLOCK 16

// Kernels resolved once per matmul object: mc_kernel_get checks the CPU,
// and on a virtual machine cpuid traps to the hypervisor (it cost 13% of a
// decode step when looked up per product).
#define MC_MM_TYPES MC_DTYPE_ID_LIMIT

struct mc_matmul {
    mc_pool_t *pool;
    mc_isa_t isa;
    const mc_kernel_t *kernels[MC_MM_TYPES]; // by weight type; NULL: not a weight type
    uint8_t *work; // converted activations
    size_t work_cap;
};

// One product's share of a job: its row blocks are numbered from first.
typedef struct {
    const mc_kernel_t *k;
    const mc_matrix_t *w;
    const uint8_t *xa;
    size_t xa_stride;
    uint32_t n_tok;
    float *y;
    uint32_t n_blocks, block_rows, first;
} s_part_t;

// Several independent products scheduled as one pool run: the threads take
// row blocks across all of them, so a decode step pays one barrier for q, k
// and v together, or for the gate and up products of every expert.
#define MC_MM_MAX_PARTS 16

typedef struct {
    s_part_t parts[MC_MM_MAX_PARTS];
    size_t n_parts;
    uint32_t total;
    atomic_uint next; // next block to take
} s_job_t;

// Activation rows to convert: one entry per distinct input of a job.
typedef struct {
    const mc_kernel_t *k;
    const float *x;
    uint32_t n_in;
    uint8_t *xa;
    size_t xa_stride;
    uint32_t n_tok;
} s_conv_t;

typedef struct {
    const s_conv_t *convs;
    size_t n_convs;
    uint32_t total; // rows over all convs
} s_convs_t;

mc_matmul_t *mc_matmul_new(mc_pool_t *pool, mc_isa_t isa) {
    if (!pool) return NULL;
    mc_matmul_t *mm = calloc(1, sizeof *mm);
    if (!mm) return NULL;
    mm->pool = pool;
    mm->isa = isa == MC_ISA_BEST ? mc_kernel_best_isa() : isa;
    for (uint32_t t = 0; t < MC_MM_TYPES; t++) mm->kernels[t] = mc_kernel_get((mc_dtype_t)t, mm->isa);
    return mm;
}

void mc_matmul_destroy(mc_matmul_t **pmm) {
    if (!pmm || !*pmm) return;
    free((*pmm)->work);
    free(*pmm);
    *pmm = NULL;
}

mc_pool_t *mc_matmul_pool(const mc_matmul_t *mm) { return mm->pool; }
mc_isa_t mc_matmul_isa(const mc_matmul_t *mm) { return mm->isa; }

const mc_kernel_t *mc_matmul_kernel(const mc_matmul_t *mm, mc_dtype_t t) {
    return (uint32_t)t < MC_MM_TYPES ? mm->kernels[t] : NULL;
}

// Row r of all the job's inputs, counted across them in order.
static void s_convert_task(void *arg, int ith, int nth) {
    const s_convs_t *cs = arg;
    size_t i = 0;
    uint32_t first = 0;
    for (uint32_t r = (uint32_t)ith; r < cs->total; r += (uint32_t)nth) {
        while (r >= first + cs->convs[i].n_tok) first += cs->convs[i++].n_tok;
        const s_conv_t *c = &cs->convs[i];
        const uint32_t t = r - first;
        mc_kernel_act_row(c->k, c->x + (size_t)t * c->n_in, c->xa + (size_t)t * c->xa_stride, c->n_in);
    }
}

// Below this many values, converting costs less than a pool pass (a decode
// step's few rows of a few thousand values each).
#define MC_MM_CONVERT_SERIAL 16384

static void s_convert_run(mc_matmul_t *mm, const s_conv_t *convs, size_t n) {
    s_convs_t cs = {convs, n, 0};
    uint64_t values = 0;
    for (size_t i = 0; i < n; i++) {
        cs.total += convs[i].n_tok;
        values += (uint64_t)convs[i].n_tok * convs[i].n_in;
    }
    if (values <= MC_MM_CONVERT_SERIAL)
        s_convert_task(&cs, 0, 1);
    else
        mc_pool_run(mm->pool, s_convert_task, &cs);
}

// Rows r0 .. r1 (multiples of 8) of a matrix with an 8-row kernel (Q4_0,
// Q8_0, Q4_K, Q5_K, Q6_K): one group of 8 rows at a time, against every token in tiles
// of up to 4. The group (8 rows, at most a few tens of KB) stays in L1 while
// all tokens pass over it. Repacked groups when the matrix has them (a group
// is the 8 rows' bytes rearranged: 8 * row_bytes), else the raw rows (the
// kernel reads them itself: the same bits).
static void s_run_packed(const s_part_t *p, uint32_t r0, uint32_t r1) {
    const mc_matrix_t *w = p->w;
    const size_t group_bytes = (size_t)MC_Q4_0X8_ROWS * w->row_bytes;
    const size_t rb = w->packed ? 0 : w->row_bytes;
    for (uint32_t r = r0; r < r1; r += MC_Q4_0X8_ROWS) {
        const uint8_t *w8 = w->packed ? w->packed + (size_t)(r / MC_Q4_0X8_ROWS) * group_bytes
                                      : w->data + (size_t)r * w->row_bytes;
        for (uint32_t t = 0; t < p->n_tok; t += 4) {
            const int na = p->n_tok - t < 4 ? (int)(p->n_tok - t) : 4;
            const void *xa[4];
            for (int c = 0; c < na; c++) xa[c] = p->xa + (size_t)(t + (uint32_t)c) * p->xa_stride;
            p->k->dot8(w->n_in, p->y + (size_t)t * w->n_out + r, w->n_out, w8, rb, xa, na);
        }
    }
}

static void s_run_block(const s_part_t *p, uint32_t b) {
    const mc_matrix_t *w = p->w;
    const int64_t n_in = w->n_in;
    uint32_t r0 = b * p->block_rows;
    uint32_t r1 = r0 + p->block_rows < w->n_out ? r0 + p->block_rows : w->n_out;
    // Types with an 8-row kernel by groups of 8 rows first, repacked or raw (block_rows is a
    // multiple of 8, so a block's rows start a group; one row at a time the
    // whole-block order's float adds form one slow chain per row), then the
    // rows beyond the last full group by the dots below: the same bits.
    if (p->k->dot8) {
        const uint32_t packed_end = w->n_out / MC_Q4_0X8_ROWS * MC_Q4_0X8_ROWS;
        const uint32_t end = r1 < packed_end ? r1 : packed_end;
        if (r0 < end) {
            s_run_packed(p, r0, end);
            r0 = end;
        }
    }
    // Token-outer, row-inner: the block's weight rows (a few KB) stay in
    // cache while every token of a batch is multiplied with them, and dot4
    // unpacks each weight block once for four tokens.
    uint32_t t = 0;
    if (p->k->dot4)
        for (; t + 4 <= p->n_tok; t += 4) {
            const void *xa[4];
            for (int c = 0; c < 4; c++) xa[c] = p->xa + (size_t)(t + c) * p->xa_stride;
            for (uint32_t r = r0; r < r1; r++) {
                float s[4];
                p->k->dot4(n_in, s, w->data + (size_t)r * w->row_bytes, xa);
                for (int c = 0; c < 4; c++) p->y[(size_t)(t + c) * w->n_out + r] = s[c];
            }
        }
    for (; t < p->n_tok; t++) {
        const uint8_t *xa = p->xa + (size_t)t * p->xa_stride;
        float *yt = p->y + (size_t)t * w->n_out;
        for (uint32_t r = r0; r < r1; r++) p->k->dot(n_in, &yt[r], w->data + (size_t)r * w->row_bytes, xa);
    }
}

static void s_matmul_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    s_job_t *j = arg;
    size_t part = 0;
    for (;;) {
        uint32_t b = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (b >= j->total) break;
        // Blocks are taken in increasing order: the part only moves forward.
        while (b >= j->parts[part].first + j->parts[part].n_blocks) part++;
        s_run_block(&j->parts[part], b - j->parts[part].first);
    }
}

// Add a product to a job, splitting its rows into blocks.
static void s_job_add(s_job_t *j, int nth, const mc_kernel_t *k, const mc_matrix_t *w, const void *xa,
                      uint32_t n_tok, float *y) {
    // Aim for several blocks per thread so a slow thread does not hold the
    // others up, but keep blocks a whole number of cache lines.
    uint32_t rows = w->n_out / (uint32_t)(4 * nth);
    rows = (rows + MC_MM_BLOCK - 1) / MC_MM_BLOCK * MC_MM_BLOCK;
    if (rows < MC_MM_BLOCK) rows = MC_MM_BLOCK;
    s_part_t *p = &j->parts[j->n_parts++];
    *p = (s_part_t){k, w, xa, mc_kernel_act_bytes(k, w->n_in), n_tok, y, (w->n_out + rows - 1) / rows, rows,
                    j->total};
    j->total += p->n_blocks;
}

static void s_job_run(mc_matmul_t *mm, s_job_t *j) {
    atomic_init(&j->next, 0);
    if (j->total == 1)
        s_matmul_task(j, 0, 1);
    else
        mc_pool_run(mm->pool, s_matmul_task, j);
}

mc_err_t mc_matmul_many(mc_matmul_t *mm, const mc_matmul_op_t *ops, size_t n_ops) {
    for (size_t first = 0; first < n_ops; first += MC_MM_MAX_PARTS) {
        size_t n = n_ops - first < MC_MM_MAX_PARTS ? n_ops - first : MC_MM_MAX_PARTS;
        // Products with the same input and kernel (an expert's gate and up)
        // share its converted rows: conv[i] is op i's entry in convs.
        // Ops with converted rows (xa) need no entry: conv[i] is then n.
        s_conv_t convs[MC_MM_MAX_PARTS];
        size_t conv[MC_MM_MAX_PARTS], off[MC_MM_MAX_PARTS], n_convs = 0, need = 0;
        for (size_t i = 0; i < n; i++) {
            const mc_matmul_op_t *op = &ops[first + i];
            const mc_kernel_t *k = mc_matmul_kernel(mm, op->w->type);
            if (!k) return MC_ERR_UNSUPPORTED;
            if (op->xa) {
                conv[i] = n;
                continue;
            }
            size_t c = 0;
            while (c < n_convs && !(convs[c].k == k && convs[c].x == op->x && convs[c].n_in == op->w->n_in &&
                                    convs[c].n_tok == op->n_tok))
                c++;
            if (c == n_convs) {
                const size_t stride = mc_kernel_act_bytes(k, op->w->n_in);
                convs[n_convs] = (s_conv_t){k, op->x, op->w->n_in, NULL, stride, op->n_tok};
                off[n_convs++] = need; // work may move: pointers once it has its size
                need += stride * op->n_tok;
            }
            conv[i] = c;
        }
        if (need > mm->work_cap) {
            uint8_t *nw = realloc(mm->work, need);
            if (!nw) return MC_ERR_NOMEM;
            mm->work = nw;
            mm->work_cap = need;
        }
        for (size_t c = 0; c < n_convs; c++) convs[c].xa = mm->work + off[c];
        s_convert_run(mm, convs, n_convs);
        s_job_t j = {.n_parts = 0};
        for (size_t i = 0; i < n; i++) {
            const mc_matmul_op_t *op = &ops[first + i];
            if (conv[i] == n)
                s_job_add(&j, mc_pool_threads(mm->pool), mc_matmul_kernel(mm, op->w->type), op->w, op->xa, op->n_tok,
                          op->y);
            else
                s_job_add(&j, mc_pool_threads(mm->pool), convs[conv[i]].k, op->w, convs[conv[i]].xa, op->n_tok, op->y);
        }
        s_job_run(mm, &j);
    }
    return MC_OK;
}

mc_err_t mc_matmul_f32(mc_matmul_t *mm, const mc_matrix_t *w, const float *x, uint32_t n_tok, float *y) {
    mc_matmul_op_t op = {w, x, n_tok, y, NULL};
    return mc_matmul_many(mm, &op, 1);
}
