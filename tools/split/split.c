/*
 * split: writing each node's experts-only file and its slice index.
 */
#include "split.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster_config.h"
#include "expert_file.h"
#include "gguf_writer.h"
#include "log.h"
#include "pool.h"
#include "slice_index.h"

mc_split_params_t mc_split_params_default(void) { return (mc_split_params_t){.threads = 2}; }

typedef struct {
    const mc_model_t *m;
    const uint32_t *pairs; // (n, 2) layer, expert
    uint32_t parts;        // tensors per expert (expert_file.h)
} s_fill_t;

// Tensor i is part i % parts (gate, up, down, then their biases) of pair
// i / parts, copied as it is.
static mc_err_t s_fill(void *ctx, size_t index, void *dst, size_t size, char *err) {
    const s_fill_t *f = ctx;
    const uint32_t *p = f->pairs + 2 * (index / f->parts);
    uint64_t len;
    const uint8_t *src = mc_expert_file_part(f->m, p[0], p[1], (uint32_t)(index % f->parts), &len);
    if (len != size) return mc_err_set(err, MC_ERR_FORMAT, "tensor of %zu bytes, the model's has %llu", size,
                                       (unsigned long long)len);
    memcpy(dst, src, size);
    return MC_OK;
}

mc_err_t mc_split_write(const mc_model_t *m, const uint8_t *held, const char *path, int threads, char *err) {
    const mc_hparams_t *hp = &m->hp;
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    uint32_t *pairs = malloc(cells * 2 * sizeof *pairs + 1);
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    mc_err_t rc = pairs && w ? MC_OK : mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) rc = mc_expert_file_meta(m->gguf, mc_model_fingerprint(m), w, err);
    size_t n = 0;
    for (size_t i = 0; !rc && i < cells; i++) {
        const uint32_t l = (uint32_t)(i / hp->n_expert), e = (uint32_t)(i % hp->n_expert);
        if (!held[i] || !mc_model_has_expert(m, l, e)) continue; // a dense layer's cells have no tensors
        mc_dtype_t t[3];
        mc_expert_file_types(m, l, e, t);
        rc = mc_expert_file_add(w, hp, l, e, t, err);
        pairs[2 * n] = l, pairs[2 * n + 1] = e, n++;
    }
    s_fill_t f = {m, pairs, mc_expert_file_parts(hp)};
    if (!rc) rc = mc_gguf_writer_write_file(w, path, s_fill, &f, err);
    mc_gguf_writer_destroy(&w);
    free(pairs);
    if (rc) return rc;
    // The index beside it: the node starts without hashing what it holds.
    char sub[MC_ERR_LEN];
    mc_model_t *part = mc_model_open_node(path, sub);
    if (!part) return mc_err_set(err, MC_ERR_FORMAT, "%s does not read back: %s", path, sub);
    mc_pool_t *pool = mc_pool_new(threads > 0 ? threads : 1);
    mc_slice_index_t *x = pool ? mc_slice_index_open(part, path, "", sub) : NULL;
    mc_slice_stats_t st;
    if (!x) rc = mc_err_set(err, MC_ERR_NOMEM, "%s: slice index: %s", path, pool ? sub : "out of memory");
    else if ((rc = mc_slice_index_ensure(x, part, held, pool, true, &st, sub)))
        mc_err_set(err, rc, "%s: hashing: %s", path, sub);
    else if (!st.saved && st.slices)
        rc = mc_err_set(err, MC_ERR_IO, "%s: its slice index was not written (%s)", path, st.note);
    mc_slice_index_destroy(&x);
    mc_pool_destroy(&pool);
    mc_model_destroy(&part);
    return rc;
}

mc_err_t mc_split_run(const mc_split_params_t *p, char *err) {
    char sub[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(p->model, err);
    if (!m) return MC_ERR_FORMAT;
    mc_cluster_config_t *cfg = mc_cluster_config_load(p->cluster, err);
    mc_err_t rc = cfg ? mc_cluster_config_check(cfg, m->hp.n_layer, m->hp.n_expert, err) : MC_ERR_FORMAT;
    if (!rc && mkdir(p->outdir, 0755) != 0 && errno != EEXIST)
        rc = mc_err_set(err, MC_ERR_IO, "cannot create %s: %s", p->outdir, strerror(errno));
    const size_t cells = (size_t)m->hp.n_layer * m->hp.n_expert;
    uint8_t *held = rc ? NULL : malloc(cells + 1);
    if (!rc && !held) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < cfg->n_nodes; i++) {
        const mc_cluster_node_t *nd = &cfg->nodes[i];
        uint64_t bytes = 0;
        size_t count = 0;
        for (size_t c = 0; c < cells; c++) {
            const uint32_t l = (uint32_t)(c / m->hp.n_expert), e = (uint32_t)(c % m->hp.n_expert);
            held[c] = mc_model_has_expert(m, l, e) && mc_cluster_node_holds(nd, l, e); // a dense layer has none
            if (held[c]) bytes += mc_model_expert_bytes(m, l, e), count++;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.gguf", p->outdir, nd->name);
        if ((rc = mc_split_write(m, held, path, p->threads, sub))) {
            mc_err_set(err, rc, "node %s: %s", nd->name, sub);
            break;
        }
        mc_log_status(p->log, "moe-split", "%s: node %s, %zu experts (%.1f MiB), and its slice index", path, nd->name, count,
                      bytes / 1048576.0);
    }
    free(held);
    mc_cluster_config_destroy(&cfg);
    mc_model_destroy(&m);
    return rc;
}
