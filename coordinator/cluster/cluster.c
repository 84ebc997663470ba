/*
 * cluster: placement tables, per-layer routing, dispatch and gathering,
 * the lost-node fallback, and statistics. Connections live in link.c.
 */
#include "cluster.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "dtype.h"
#include "expert_file.h"
#include "log.h"
#include "moe.h"
#include "slice_index.h"
#include "transfer.h"
#include "wire.h"

// Links are ticked (heartbeats, probes) at most this often during a run.
#define MC_CLUSTER_TICK_MS 100.0

// One request row: a token and a run of its choices, all computed by one
// holder (a node or the coordinator) and summed there.
//
// Why runs and not "every choice of the token this holder has": the result
// must be the bits one machine computes, which adds a token's k weighted
// expert outputs in choice order, starting from zero. A holder's sum of choices
// 0..m-1 is exactly that order's first m steps; any other set of choices
// summed apart would regroup the additions (with k = 8 spread over nodes,
// that changes the last bits). So a token's leading run on one holder
// travels as one row, and every later choice as a row of its own, which the
// coordinator adds in choice order (for Mixtral's k = 2 that is exactly one
// row per holder, as before).
typedef struct {
    uint32_t n_rows;
    uint32_t *row_of;   // (n_rows) token of each row
    int32_t *experts;   // (n_rows, k) the run's choices, -1 elsewhere
    float *weights;     // (n_rows, k) the token's weights
    float *xg;          // (n_rows, dim) gathered inputs
    float *out;         // (n_rows, dim) the holder's weighted sums
} s_rows_t;

// A node's request for one group of rows (mc_experts_begin's g).
typedef struct {
    s_rows_t req;       // the group's current layer's rows for this node
    mc_wire_enc_t wire; // encoding of enc
    uint8_t *enc;       // (n_rows, row bytes) encoded inputs, as sent
    bool pending;       // its answer is awaited
    uint64_t id;        // the link's id of that request
} s_slot_t;

// One node: its connection, its placement and each group's request.
typedef struct {
    const mc_cluster_node_t *cfg;
    mc_link_t *link;
    uint8_t *held;      // (n_layer, n_expert) pairs placed on this node

    s_slot_t slot[MC_EXPERTS_GROUPS];

    // A staged placement change (mc_cluster_request): the node's entry in
    // the staged config (NULL: it leaves at the switch), its staged pairs,
    // and held | want, which it is given to hold until the switch.
    const mc_cluster_node_t *scfg;
    uint8_t *want, *uni;
    bool added;         // joins with the change: holds nothing until the switch
} s_node_t;

// One group of rows between begin and finish (experts.h: the split form);
// a plain compute is group 0 begun and finished at once. Its buffers grow
// on first use, so a cluster never pipelined holds one group's.
typedef struct {
    uint32_t cap_tok;        // tokens the buffers hold (rows: cap_tok * k); nodes' slots as many
    s_rows_t local;          // the coordinator's own runs
    int32_t *choice_dest;    // (cap_tok, k) holder whose row starts at this choice (n_nodes: local), -1: none
    uint32_t *slot_row;      // (cap_tok, k) that row
    float *round;            // (cap_tok * k, dim) a lost node's result on its way through the result encoding
    bool open;               // begun, not finished
    uint32_t layer, n;       // of the open step
    float *out;              // (n, dim) where finish writes (the caller's)
} s_group_t;

struct mc_cluster {
    mc_experts_t experts; // the expert step it is (mc_cluster_experts)
    const mc_cluster_config_t *cfg;
    const mc_model_t *m;
    void *zctx;
    s_node_t *nodes;
    size_t n_nodes;
    mc_moe_t *moe;      // local experts (and the share of lost nodes)
    mc_pool_t *pool;    // the engine's threads (borrowed)
    mc_wire_limits_t lim;
    mc_slice_index_t *slices; // the model's slice hashes; known for every pair a node holds
    uint8_t *types;           // (n_layer, n_expert, 3) each pair's gate, up and down tensor types
    uint8_t *info;            // the model's metadata for nodes without the file (NULL: none can join)
    size_t info_len;
    mc_transfer_t *transfer;  // serves those nodes their slices
    char self[MC_WIRE_NAME_MAX + 1]; // our name in Hello
    mc_keypair_t keys;       // CURVE, when the file names a secret key
    bool have_keys;
    uint64_t session;   // carried by every placement
    uint32_t k;
    s_group_t grp[MC_EXPERTS_GROUPS]; // the groups of rows (one unless the engine pipelines)
    int *hold;               // (k) holder of each choice of the token being assigned
    uint32_t *rr;            // (n_layer, n_expert) round-robin cursor over replicas
    mc_wire_enc_t *auto_enc; // (n_layer, n_expert) what `wire: auto` sends for each expert
    zmq_pollitem_t *items;   // (2 n_nodes) poll set of the pending requests: data sockets and monitors
    s_node_t **who;          // (2 n_nodes) node of each poll item
    double last_tick;
    // Stats readers run on other threads: every change to links' counters,
    // liveness and placements happens under mu, as do reads.
    pthread_mutex_t mu;
    FILE *log;
    // Live changes: a config posted by any thread (request, under mu), taken
    // up by the engine's thread between passes as the staged one; every
    // config ever taken (the nodes' names point into them) until destroy.
    mc_cluster_config_t *request;
    const mc_cluster_config_t *staged;
    double staged_at;
    uint64_t switches;
    char note[MC_ERR_LEN + 64]; // the last change's outcome, for /v1/cluster
    mc_cluster_config_t **owned;
    size_t n_owned;
};

static void s_stage_abort(mc_cluster_t *c, const char *why);
static bool s_rows_alloc(s_rows_t *r, size_t rows, size_t k, size_t dim);
static void s_node_free(s_node_t *nd);
static const mc_experts_ops_t s_experts_ops; // the expert step's calls (defined with it below)
static_assert(MC_LINK_RTT_BUCKETS == MC_EXPERTS_RTT_BUCKETS, "a node's histogram is the link's");

// --- set-up ---------------------------------------------------------------------------

// A dense layer has no experts: its cells are held by no node, whatever
// the placement says.
static void s_fill_held(const mc_cluster_t *c, const mc_cluster_node_t *n, uint8_t *held) {
    const mc_hparams_t *hp = &c->m->hp;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++)
            held[(size_t)l * hp->n_expert + e] = mc_model_layer_moe(c->m, l) && mc_cluster_node_holds(n, l, e);
}

// What node nd is to hold now: its placement, or while a change is staged,
// that and its staged pairs together.
static const uint8_t *s_probe_held(const s_node_t *nd) { return nd->uni ? nd->uni : nd->held; }

// A wire other than auto and f32 is exact only for the experts whose
// kernels take its values: say so at start when the file has others (the
// tokens may then differ from one machine's), and for f16/bf16 results.
static void s_warn_lossy(const mc_cluster_t *c) {
    const mc_wire_enc_t w = c->cfg->wire;
    if (w == MC_WIRE_AUTO || w == MC_WIRE_F32) return;
    const mc_hparams_t *hp = &c->m->hp;
    size_t lossy = 0, first = SIZE_MAX;
    for (size_t i = 0; i < (size_t)hp->n_layer * hp->n_expert; i++)
        if (c->auto_enc[i] != w) lossy++, first = first == SIZE_MAX ? i : first;
    if (lossy) {
        const mc_expert_t *ex = &c->m->layers[first / hp->n_expert].experts[first % hp->n_expert];
        mc_log_status(c->log, "moe-coordinator",
                      "warning: wire %s is lossy for %zu of the file's %zu experts (for example layer %zu expert %zu: "
                      "%s weights take %s rows): results will differ from one machine's; wire: auto is exact and "
                      "as compact",
                      mc_wire_enc_name(w), lossy, (size_t)hp->n_layer * hp->n_expert, first / hp->n_expert,
                      first % hp->n_expert, mc_dtype_name(ex->gate.type), mc_wire_enc_name(c->auto_enc[first]));
    }
    if (w == MC_WIRE_F16 || w == MC_WIRE_BF16)
        mc_log_status(c->log, "moe-coordinator",
                      "warning: wire %s sends results back as %s too, which rounds them: results will differ from one "
                      "machine's",
                      mc_wire_enc_name(w), mc_wire_enc_name(w));
}

// Every node's handshake at once: wait until each is ready, refused, or
// silent for timeout_ms (a node still loading its share, reporting
// progress, is waited for). A node that refused for good (another model,
// protocol version or key) fails the start: that is a mistake in the
// cluster file or on the node, better said now. A node that is down does
// not: its share is computed here until it joins (probed every retry_ms).
static mc_err_t s_join_all(mc_cluster_t *c, char *err) {
    for (size_t i = 0; i < c->n_nodes; i++) mc_link_start(c->nodes[i].link);
    for (;;) {
        bool settled = true;
        int n_items = 0;
        for (size_t i = 0; i < c->n_nodes; i++) {
            mc_link_t *l = c->nodes[i].link;
            mc_link_tick(l, s_probe_held(&c->nodes[i]));
            if (mc_link_settled(l) || mc_link_fetching(l)) continue;
            settled = false;
            c->items[n_items++] = (zmq_pollitem_t){mc_link_socket(l), 0, ZMQ_POLLIN, 0};
        }
        if (settled) break;
        // The monitors need no poll: a failed handshake shows up within the
        // next pass, 20 ms later at most.
        zmq_poll(c->items, n_items, 20);
    }
    size_t ready = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        const char *why = mc_link_refusal(c->nodes[i].link);
        if (why) return mc_err_set(err, mc_err_code(why, MC_ERR_NET), "%s", why);
        ready += mc_link_alive(c->nodes[i].link);
        // A node fetching its experts joins when it has them all, checked.
        if (mc_link_fetching(c->nodes[i].link))
            mc_log_status(c->log, "moe-coordinator",
                          "node %s is fetching its experts (%.1f MiB): they are computed here until it has them all",
                          c->nodes[i].cfg->name, mc_link_stats(c->nodes[i].link)->fetch_total / 1048576.0);
    }
    if (ready < c->n_nodes)
        mc_log_status(c->log, "moe-coordinator", "%zu of %zu nodes ready; the others' experts are computed here until they join",
                      ready, c->n_nodes);
    return MC_OK;
}

// A first start's hashing, in the log every few seconds.
typedef struct {
    const mc_cluster_t *c;
    uint64_t total;
    double t0, logged;
} s_hash_log_t;

static void s_hash_progress(void *ctx, uint64_t done) {
    s_hash_log_t *h = ctx;
    const double now = mc_clock_ms();
    if (now - h->logged < 5000.0 || done >= h->total) return;
    h->logged = now;
    const double rate = done / ((now - h->t0) / 1e3);
    mc_log_status(h->c->log, "moe-coordinator", "hashing: %.2f of %.2f GiB (about %.0f s left)", done / 1073741824.0,
                  h->total / 1073741824.0, rate > 0 ? (h->total - done) / rate : 0.0);
}

// The slice hashes of every pair a node is to hold (want: a table per node,
// back to back; NULL: their current placements), from the model's index
// (slice_index.h): loaded, or hashed here once (and saved) for the pairs
// not known yet. Pages hashed here are dropped again: the coordinator does
// not multiply the nodes' experts.
static mc_err_t s_hash_slices(mc_cluster_t *c, const uint8_t *want, char *err) {
    const size_t cells = (size_t)c->m->hp.n_layer * c->m->hp.n_expert;
    uint8_t *any = calloc(cells + 1, 1);
    if (!any) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_nodes; i++) {
        const uint8_t *held = want ? want + i * cells : c->nodes[i].held;
        for (size_t j = 0; j < cells; j++) any[j] |= held[j];
    }
    mc_slice_stats_t st;
    s_hash_log_t hl = {c, mc_slice_index_todo_bytes(c->slices, c->m, any), mc_clock_ms(), mc_clock_ms()};
    if (hl.total) {
        mc_log_status(c->log, "moe-coordinator",
                      "hashing the weights placed on nodes once (%.2f GiB; kept in an index beside the model or in the "
                      "cache folder, so later starts skip this)",
                      hl.total / 1073741824.0);
        const mc_model_progress_t progress = {s_hash_progress, &hl};
        mc_slice_index_set_progress(c->slices, &progress);
    }
    mc_err_t rc = mc_slice_index_ensure(c->slices, c->m, any, c->pool, true, &st, err);
    mc_slice_index_set_progress(c->slices, NULL);
    free(any);
    if (rc || !st.slices) return rc;
    const double gib = st.bytes / 1073741824.0;
    mc_log_status(c->log, "moe-coordinator",
                  "hashed the weights of %u (layer, expert) pairs placed on nodes: %.2f GiB in %.1f s (%.2f GiB/s)%s%s%s%s",
                  st.slices, gib, st.seconds, gib / (st.seconds > 0 ? st.seconds : 1e-9), st.saved ? "; saved to " : "",
                  st.saved ? st.saved : "", st.note[0] ? "; " : "", st.note);
    return MC_OK;
}

// Node nd of cfg (ncfg, one of cfg's nodes): its placement table and its
// link (not started).
static mc_err_t s_node_init(mc_cluster_t *c, s_node_t *nd, const mc_cluster_config_t *cfg, const mc_cluster_node_t *ncfg,
                            char *err) {
    const mc_hparams_t *hp = &c->m->hp;
    nd->cfg = ncfg;
    if (nd->cfg->public_key[0] && !c->have_keys)
        return mc_err_set(err, MC_ERR_ARG, "%s: node %s has a public_key: the file needs the coordinator's secret_key too",
                          cfg->path ? cfg->path : "cluster", nd->cfg->name);
    if (!nd->cfg->public_key[0] && !strncmp(nd->cfg->endpoint, "tcp://", 6) &&
        strncmp(nd->cfg->endpoint, "tcp://127.", 10) && strncmp(nd->cfg->endpoint, "tcp://localhost:", 16) &&
        strncmp(nd->cfg->endpoint, "tcp://[::1]:", 12))
        mc_log_status(c->log, "moe-coordinator",
                      "warning: traffic to node %s (%s) is not encrypted and the node not authenticated (no "
                      "public_key in the cluster file)",
                      nd->cfg->name, nd->cfg->endpoint);
    if (!(nd->held = calloc((size_t)hp->n_layer * hp->n_expert, 1))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    s_fill_held(c, nd->cfg, nd->held);
    const mc_link_params_t lp = {.name = nd->cfg->name,
                                 .endpoint = nd->cfg->endpoint,
                                 .self = c->self,
                                 .session = c->session,
                                 .fingerprint = mc_model_fingerprint(c->m),
                                 .hashes = mc_slice_index_table(c->slices),
                                 .types = c->types,
                                 .model_info = c->info,
                                 .model_info_len = c->info_len,
                                 .lim = &c->lim,
                                 .timeout_ms = cfg->timeout_ms,
                                 .retry_ms = cfg->retry_ms,
                                 .heartbeat_ms = cfg->heartbeat_ms,
                                 .load_timeout_ms = cfg->load_timeout_ms,
                                 .dead_ms = cfg->dead_ms,
                                 .slow_ms = cfg->slow_ms,
                                 .log = c->log,
                                 .server_key = nd->cfg->public_key[0] ? nd->cfg->public_key : NULL,
                                 .keys = &c->keys};
    if (!(nd->link = mc_link_new(c->zctx, &lp, err))) return mc_err_code(err, MC_ERR_NET);
    return MC_OK;
}

mc_cluster_t *mc_cluster_new(const mc_cluster_config_t *cfg, const mc_model_t *m, mc_matmul_t *mm, FILE *log,
                             char *err) {
    const mc_hparams_t *hp = &m->hp;
    if (mc_cluster_config_check(cfg, hp->n_layer, hp->n_expert, err) != MC_OK) return NULL;
    if (cfg->wire != MC_WIRE_AUTO && mc_wire_row_bytes(cfg->wire, hp->dim) == 0) {
        mc_err_set(err, MC_ERR_ARG, "%s: wire %s cannot carry rows of %u values", cfg->path ? cfg->path : "cluster",
                   mc_wire_enc_name(cfg->wire), hp->dim);
        return NULL;
    }
    mc_cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->experts.ops = &s_experts_ops;
    c->cfg = cfg;
    c->m = m;
    c->log = log;
    c->k = hp->n_expert_used;
    c->lim = mc_wire_limits(m);
    c->zctx = zmq_ctx_new();
    c->moe = mc_moe_new(mm);
    c->pool = mm ? mc_matmul_pool(mm) : NULL;
    c->nodes = calloc(cfg->n_nodes, sizeof *c->nodes);
    c->rr = calloc((size_t)hp->n_layer * hp->n_expert, sizeof *c->rr);
    c->auto_enc = calloc((size_t)hp->n_layer * hp->n_expert, sizeof *c->auto_enc);
    c->items = calloc(2 * cfg->n_nodes, sizeof *c->items); // a data socket and a monitor each
    c->who = calloc(2 * cfg->n_nodes, sizeof *c->who);
    if (!c->zctx || !c->moe || !c->nodes || !c->rr || !c->auto_enc || !c->items || !c->who) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) c->auto_enc[(size_t)l * hp->n_expert + e] = mc_wire_auto_enc(m, l, e);
    s_warn_lossy(c);
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0) host[0] = 0;
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (*p < 0x21 || *p > 0x7e) *p = '_';
    snprintf(c->self, sizeof c->self, "moe-coordinator@%.48s", host[0] ? host : "?");
    if (getrandom(&c->session, sizeof c->session, 0) != (ssize_t)sizeof c->session) c->session = (uint64_t)mc_clock_us();
    if (cfg->secret_key_resolved) {
        if (mc_keys_load_secret(cfg->secret_key_resolved, &c->keys, err)) goto fail;
        c->have_keys = true;
    }
    if (m->path) c->slices = mc_slice_index_open(m, m->path, NULL, err);
    else // a model bound from memory: its index lives in memory too
        c->slices = mc_slice_index_new(
            &(mc_slice_source_t){mc_model_fingerprint(m), mc_gguf_size(m->gguf), 0, hp->n_layer, hp->n_expert}, err);
    if (!c->slices) goto fail;
    if (mc_slice_index_note(c->slices)[0])
        mc_log_status(log, "moe-coordinator", "slice index: %s", mc_slice_index_note(c->slices));
    // What a node without the model file needs: each pair's tensor types
    // and the model's metadata; and the thread that sends them slices.
    if (!(c->types = malloc((size_t)hp->n_layer * hp->n_expert * 3 + 1))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            mc_dtype_t t[3];
            mc_expert_file_types(m, l, e, t);
            for (int j = 0; j < 3; j++) c->types[((size_t)l * hp->n_expert + e) * 3 + (size_t)j] = (uint8_t)t[j];
        }
    char ierr[MC_ERR_LEN];
    if (mc_expert_file_info(m, &c->info, &c->info_len, ierr))
        mc_log_status(log, "moe-coordinator", "nodes without a model file cannot join: %s", ierr);
    c->n_nodes = cfg->n_nodes;
    mc_transfer_node_t *tn = calloc(c->n_nodes + 1, sizeof *tn);
    if (!tn) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < c->n_nodes; i++)
        tn[i] = (mc_transfer_node_t){cfg->nodes[i].name, cfg->nodes[i].endpoint,
                                     cfg->nodes[i].public_key[0] ? cfg->nodes[i].public_key : NULL};
    const mc_transfer_params_t tp = {.zctx = c->zctx, .m = m, .lim = &c->lim, .session = c->session,
                                     .mbps = cfg->transfer_mbps, .keys = &c->keys, .log = log, .nodes = tn,
                                     .n_nodes = c->n_nodes};
    // Keys first: a node with a public_key needs ours (checked below).
    bool keys_ok = true;
    for (size_t i = 0; i < c->n_nodes; i++) keys_ok &= !cfg->nodes[i].public_key[0] || c->have_keys;
    if (keys_ok && !(c->transfer = mc_transfer_new(&tp, err))) {
        free(tn);
        goto fail;
    }
    free(tn);
    for (size_t i = 0; i < c->n_nodes; i++)
        if (s_node_init(c, &c->nodes[i], cfg, &cfg->nodes[i], err)) goto fail;
    if (s_hash_slices(c, NULL, err) || s_join_all(c, err)) goto fail;
    c->last_tick = mc_clock_ms();
    return c;
fail:
    mc_cluster_destroy(&c);
    return NULL;
}

static void s_rows_free(s_rows_t *r) {
    free(r->row_of), free(r->experts), free(r->weights), free(r->xg), free(r->out);
    memset(r, 0, sizeof *r);
}

static bool s_rows_alloc(s_rows_t *r, size_t rows, size_t k, size_t dim) {
    s_rows_free(r);
    r->row_of = malloc(rows * sizeof(uint32_t));
    r->experts = malloc(rows * k * sizeof(int32_t));
    r->weights = malloc(rows * k * sizeof(float));
    r->xg = malloc(rows * dim * sizeof(float));
    r->out = malloc(rows * dim * sizeof(float));
    return r->row_of && r->experts && r->weights && r->xg && r->out;
}

static void s_node_free(s_node_t *nd) {
    mc_link_destroy(&nd->link);
    free(nd->held), free(nd->want), free(nd->uni);
    for (size_t g = 0; g < MC_EXPERTS_GROUPS; g++) free(nd->slot[g].enc), s_rows_free(&nd->slot[g].req);
}

static void s_group_free(s_group_t *gr) {
    s_rows_free(&gr->local);
    free(gr->choice_dest), free(gr->slot_row), free(gr->round);
    memset(gr, 0, sizeof *gr);
}

void mc_cluster_destroy(mc_cluster_t **pc) {
    if (!pc || !*pc) return;
    mc_cluster_t *c = *pc;
    mc_transfer_destroy(&c->transfer);
    free(c->types), free(c->info);
    for (size_t i = 0; c->nodes && i < c->n_nodes; i++) s_node_free(&c->nodes[i]);
    free(c->nodes), free(c->rr), free(c->auto_enc), free(c->items), free(c->who);
    for (size_t g = 0; g < MC_EXPERTS_GROUPS; g++) s_group_free(&c->grp[g]);
    free(c->hold);
    mc_slice_index_destroy(&c->slices);
    mc_moe_destroy(&c->moe);
    mc_cluster_config_destroy(&c->request);
    for (size_t i = 0; i < c->n_owned; i++) mc_cluster_config_destroy(&c->owned[i]);
    free(c->owned);
    if (c->zctx) zmq_ctx_term(c->zctx);
    explicit_bzero(&c->keys, sizeof c->keys);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *pc = NULL;
}

// Node nd's slot for group g, sized for cap_tok tokens (a node added by a
// live change gets the groups' current sizes).
static bool s_slot_alloc(const mc_cluster_t *c, s_slot_t *sl, uint32_t cap_tok) {
    const size_t rows = (size_t)cap_tok * c->k, rb = mc_wire_row_bytes(MC_WIRE_F32, c->m->hp.dim);
    free(sl->enc);
    sl->enc = malloc(rows * rb);
    return sl->enc && s_rows_alloc(&sl->req, rows, c->k, c->m->hp.dim);
}

static mc_err_t s_reserve(mc_cluster_t *c, s_group_t *gr, uint32_t n) {
    if (!c->hold && !(c->hold = malloc(c->k * sizeof(int)))) return MC_ERR_NOMEM;
    if (n <= gr->cap_tok) return MC_OK;
    // A holder gets at most one row per choice; f32 rows are the widest
    // encoding (auto may pick any per request).
    const size_t dim = c->m->hp.dim, k = c->k, rows = (size_t)n * k, rb = mc_wire_row_bytes(MC_WIRE_F32, c->m->hp.dim);
    const size_t g = (size_t)(gr - c->grp);
    gr->cap_tok = 0;
    free(gr->choice_dest), free(gr->slot_row), free(gr->round);
    gr->choice_dest = malloc(rows * sizeof(int32_t));
    gr->slot_row = malloc(rows * sizeof(uint32_t));
    gr->round = malloc(rows * rb);
    if (!gr->choice_dest || !gr->slot_row || !gr->round || !s_rows_alloc(&gr->local, rows, k, dim))
        return MC_ERR_NOMEM;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (!s_slot_alloc(c, &c->nodes[i].slot[g], n)) return MC_ERR_NOMEM;
    gr->cap_tok = n;
    return MC_OK;
}

// Whether any group is between begin and finish (a placement then must not
// switch under it).
static bool s_any_open(const mc_cluster_t *c) {
    for (size_t g = 0; g < MC_EXPERTS_GROUPS; g++)
        if (c->grp[g].open) return true;
    return false;
}

// Whether any group's request to nd is in flight.
static bool s_node_busy(const s_node_t *nd) {
    for (size_t g = 0; g < MC_EXPERTS_GROUPS; g++)
        if (nd->slot[g].pending) return true;
    return false;
}

// --- one layer ---------------------------------------------------------------------

// Which holder computes expert e of layer l for the next row: -1 for the
// coordinator's own experts, else a node index. Rows of one expert are
// spread over its live replicas in turn; when every holder is lost, the
// first one keeps the choice and the coordinator computes it as that node
// would have (s_fallback).
static int s_holder(mc_cluster_t *c, uint32_t layer, uint32_t e) {
    const mc_hparams_t *hp = &c->m->hp;
    if (mc_cluster_config_local_holds(c->cfg, layer, e)) return -1;
    size_t idx = (size_t)layer * hp->n_expert + e, n_live = 0;
    int first = -1;
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (!c->nodes[i].held[idx]) continue;
        if (first < 0) first = (int)i;
        n_live += mc_link_alive(c->nodes[i].link);
    }
    if (n_live == 0) return first;
    size_t pick = c->rr[idx]++ % n_live;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].held[idx] && mc_link_alive(c->nodes[i].link) && pick-- == 0) return (int)i;
    return first;
}

// A new row of r: token t's choices [j0, j1) (see s_rows_t).
static uint32_t s_rows_add(s_rows_t *r, uint32_t k, uint32_t dim, uint32_t t, const float *x, const int32_t *experts,
                           const float *weights, uint32_t j0, uint32_t j1) {
    const uint32_t row = r->n_rows++;
    r->row_of[row] = t;
    for (uint32_t j = 0; j < k; j++)
        r->experts[(size_t)row * k + j] = j >= j0 && j < j1 ? experts[(size_t)t * k + j] : -1;
    memcpy(r->weights + (size_t)row * k, weights + (size_t)t * k, k * sizeof(float));
    memcpy(r->xg + (size_t)row * dim, x + (size_t)t * dim, dim * sizeof(float));
    return row;
}

// Step 1: every choice of group g to its holder, in runs (s_rows_t); one
// request per node, the coordinator's runs in the group's local rows.
static void s_assign_holders(mc_cluster_t *c, size_t g, uint32_t layer, const float *x, uint32_t n,
                             const int32_t *experts, const float *weights) {
    const uint32_t dim = c->m->hp.dim, k = c->k;
    s_group_t *gr = &c->grp[g];
    enum { NONE = -2 }; // an empty choice; -1 is the coordinator
    for (size_t i = 0; i < c->n_nodes; i++) c->nodes[i].slot[g].req.n_rows = 0;
    gr->local.n_rows = 0;
    int *h = c->hold;
    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t j = 0; j < k; j++) {
            int32_t e = experts[(size_t)t * k + j];
            h[j] = e < 0 ? NONE : s_holder(c, layer, (uint32_t)e);
            gr->choice_dest[(size_t)t * k + j] = -1;
        }
        uint32_t lead = 1; // the leading run: choices 0..lead-1 on one holder
        while (h[0] != NONE && lead < k && h[lead] == h[0]) lead++;
        for (uint32_t j = 0; j < k;) {
            if (h[j] == NONE) {
                j++;
                continue;
            }
            const uint32_t end = j == 0 ? lead : j + 1;
            s_rows_t *r = h[j] < 0 ? &gr->local : &c->nodes[h[j]].slot[g].req;
            gr->slot_row[(size_t)t * k + j] = s_rows_add(r, k, dim, t, x, experts, weights, j, end);
            gr->choice_dest[(size_t)t * k + j] = h[j] < 0 ? (int32_t)c->n_nodes : h[j];
            j = end;
        }
    }
}

// The encoding of a request: the configured one, or under `wire: auto`
// the blocks its experts' kernels take (f32 if they disagree).
static mc_wire_enc_t s_request_enc(const mc_cluster_t *c, const s_rows_t *req, uint32_t layer) {
    if (c->cfg->wire != MC_WIRE_AUTO) return c->cfg->wire;
    const mc_wire_enc_t *ae = c->auto_enc + (size_t)layer * c->m->hp.n_expert;
    int found = -1;
    for (size_t s = 0; s < (size_t)req->n_rows * c->k; s++) {
        int32_t e = req->experts[s];
        if (e < 0) continue;
        if (found < 0) found = (int)ae[e];
        else if (found != (int)ae[e]) return MC_WIRE_F32;
    }
    return found < 0 ? MC_WIRE_F32 : (mc_wire_enc_t)found;
}

// Compute a lost node's share of group g here as the node would have: from
// the bytes sent to it (a lossy wire loses the same bits either way),
// through the same expert step, and its result through the result
// encoding.
static mc_err_t s_fallback(mc_cluster_t *c, s_node_t *nd, size_t g, char *err) {
    const uint32_t dim = c->m->hp.dim, layer = c->grp[g].layer;
    s_slot_t *sl = &nd->slot[g];
    sl->pending = false;
    const mc_moe_rows_t rows = {mc_wire_enc_dtype(sl->wire), sl->enc, mc_wire_row_bytes(sl->wire, dim)};
    mc_err_t rc = mc_moe_compute_rows(c->moe, c->m, layer, &rows, sl->req.n_rows, sl->req.experts, sl->req.weights,
                                      c->k, sl->req.out, err);
    const mc_wire_enc_t renc = mc_wire_result_enc(c->cfg->wire);
    if (rc || renc == MC_WIRE_F32) return rc;
    mc_wire_rows_encode(renc, sl->req.out, sl->req.n_rows, dim, c->grp[g].round);
    mc_wire_rows_decode(renc, c->grp[g].round, sl->req.n_rows, dim, sl->req.out);
    return MC_OK;
}

// nd is lost (why: a full sentence for the log): its share of group g is
// computed here (another group's pending share, when its turn comes:
// s_collect finds the link no longer alive).
static mc_err_t s_lose(mc_cluster_t *c, s_node_t *nd, size_t g, const char *why, char *err) {
    pthread_mutex_lock(&c->mu);
    mc_link_lose(nd->link, why);
    pthread_mutex_unlock(&c->mu);
    return s_fallback(c, nd, g, err);
}

// Step 2: encode and send every node's request of group g; a lost node's
// share is computed here at once.
static mc_err_t s_send_all(mc_cluster_t *c, size_t g, char *err) {
    const uint32_t dim = c->m->hp.dim, layer = c->grp[g].layer;
    mc_err_t rc;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        s_slot_t *sl = &nd->slot[g];
        sl->pending = false;
        if (!sl->req.n_rows) continue;
        sl->wire = s_request_enc(c, &sl->req, layer);
        mc_wire_rows_encode(sl->wire, sl->req.xg, sl->req.n_rows, dim, sl->enc);
        // Lost, joining, or sitting out after a slow answer: computed here.
        if (!mc_link_alive(nd->link) || mc_link_benched(nd->link)) {
            if ((rc = s_fallback(c, nd, g, err))) return rc;
            continue;
        }
        mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_REQUEST};
        msg.u.request = (mc_wire_request_t){.layer = layer,
                                            .enc = sl->wire,
                                            .n_rows = sl->req.n_rows,
                                            .dim = dim,
                                            .rows = sl->enc,
                                            .rows_len = sl->req.n_rows * mc_wire_row_bytes(sl->wire, dim),
                                            .k = c->k,
                                            .experts = sl->req.experts,
                                            .weights = sl->req.weights,
                                            .res_enc = mc_wire_result_enc(c->cfg->wire)};
        char why[MC_ERR_LEN];
        pthread_mutex_lock(&c->mu);
        rc = mc_link_request(nd->link, &msg, sl->req.n_rows, why);
        pthread_mutex_unlock(&c->mu);
        if (rc == MC_OK) sl->pending = true, sl->id = msg.request_id;
        else if ((rc = s_lose(c, nd, g, why, err))) return rc;
    }
    return MC_OK;
}

// nd's answer to its pending request of group g, into that slot's out.
static mc_err_t s_take_result(mc_cluster_t *c, s_node_t *nd, s_slot_t *sl, const mc_wire_msg_t *msg, char *err) {
    const uint32_t dim = c->m->hp.dim;
    const char *name = nd->cfg->name;
    sl->pending = false; // answered: wrongly or not, the link waits no more
    if (msg->kind == MC_WIRE_MSG_ERROR)
        return mc_err_set(err, MC_ERR_NET, "node %s failed a request: %s", name, msg->u.error.message);
    if (msg->kind != MC_WIRE_MSG_RESULT || msg->u.result.n_rows != sl->req.n_rows || msg->u.result.dim != dim)
        return mc_err_set(err, MC_ERR_NET, "node %s answered with a result of the wrong shape", name);
    if (msg->u.result.enc != mc_wire_result_enc(c->cfg->wire))
        return mc_err_set(err, MC_ERR_NET, "node %s answered in %s, not %s", name, mc_wire_enc_name(msg->u.result.enc),
                          mc_wire_enc_name(mc_wire_result_enc(c->cfg->wire)));
    mc_wire_rows_decode(msg->u.result.enc, msg->u.result.rows, sl->req.n_rows, dim, sl->req.out);
    mc_link_add_compute(nd->link, msg->u.result.compute_us);
    mc_link_set_store(nd->link, &msg->u.result.store);
    return MC_OK;
}

// Housekeeping for every link without a request in flight.
static void s_tick_idle(mc_cluster_t *c) {
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_nodes; i++)
        if (!s_node_busy(&c->nodes[i])) mc_link_tick(c->nodes[i].link, s_probe_held(&c->nodes[i]));
    pthread_mutex_unlock(&c->mu);
    c->last_tick = mc_clock_ms();
}

// nd's request of group g passed its wait limit: slow (its share computed
// here, the node benched for a while) or, without a usual time to judge
// by, lost.
static mc_err_t s_give_up(mc_cluster_t *c, s_node_t *nd, size_t g, bool slow, double limit, char *err) {
    char why[MC_ERR_LEN];
    const uint32_t layer = c->grp[g].layer;
    if (!slow) {
        snprintf(why, sizeof why, "node %s (%s) did not answer layer %u within %.0f ms", nd->cfg->name,
                 nd->cfg->endpoint, layer, limit);
        return s_lose(c, nd, g, why, err);
    }
    snprintf(why, sizeof why, "node %s (%s) is slow: layer %u unanswered after %.0f ms", nd->cfg->name,
             nd->cfg->endpoint, layer, limit);
    pthread_mutex_lock(&c->mu);
    mc_link_abandon(nd->link, nd->slot[g].id);
    mc_link_bench(nd->link, why);
    pthread_mutex_unlock(&c->mu);
    return s_fallback(c, nd, g, err);
}

// Step 4: wait for every pending answer of group g. Each request has its
// own limit (mc_link_wait_limit_ms: the node's usual time, or
// timeout_ms); a connection that drops (the monitor says so) ends that
// node's wait at once, so any number of dead nodes cost one detection time
// together, not a timeout each. Another group's answers arriving meanwhile
// are taken into their slots, and its requests' limits are watched too: a
// node answers in the order sent, so ours may wait behind one of theirs.
static mc_err_t s_collect(mc_cluster_t *c, size_t g, char *err) {
    char why[MC_ERR_LEN];
    mc_err_t rc;
    for (;;) {
        int n_items = 0;
        double wait = INFINITY;
        for (size_t i = 0; i < c->n_nodes; i++) {
            s_node_t *nd = &c->nodes[i];
            for (size_t h = 0; h < MC_EXPERTS_GROUPS; h++) {
                s_slot_t *sl = &nd->slot[h];
                if (!sl->pending) continue;
                // Lost through its monitor (or lost and back since: the
                // request died with the old connection).
                if (!mc_link_alive(nd->link) || !mc_link_pending(nd->link, sl->id)) {
                    if ((rc = s_fallback(c, nd, h, err))) return rc;
                    continue;
                }
                bool slow;
                const double limit = mc_link_wait_limit_ms(nd->link, sl->id, &slow),
                             left = limit - mc_link_waited_ms(nd->link, sl->id);
                if (left <= 0) {
                    if ((rc = s_give_up(c, nd, h, slow, limit, err))) return rc;
                    continue;
                }
                if (left < wait) wait = left;
            }
            if (!nd->slot[g].pending) continue;
            c->items[n_items] = (zmq_pollitem_t){mc_link_socket(nd->link), 0, ZMQ_POLLIN, 0};
            c->who[n_items++] = nd;
            c->items[n_items] = (zmq_pollitem_t){mc_link_monitor(nd->link), 0, ZMQ_POLLIN, 0};
            c->who[n_items++] = nd;
        }
        if (!n_items) return MC_OK;
        // The nodes not waited for still hear from us (heartbeats keep their
        // lease: a slow node must not make a healthy one drop us), and lost
        // ones are probed.
        if (mc_clock_ms() - c->last_tick >= MC_CLUSTER_TICK_MS) s_tick_idle(c);
        if (wait > MC_CLUSTER_TICK_MS) wait = MC_CLUSTER_TICK_MS;
        int ready = zmq_poll(c->items, n_items, (long)ceil(wait));
        if (ready < 0 && zmq_errno() == EINTR) continue;
        if (ready <= 0) continue; // a limit passed: the next pass gives up on it
        for (int i = 0; i < n_items; i++) {
            if (!(c->items[i].revents & ZMQ_POLLIN)) continue;
            s_node_t *nd = c->who[i];
            if (!nd->slot[g].pending) continue;
            pthread_mutex_lock(&c->mu);
            if (c->items[i].socket == mc_link_monitor(nd->link)) { // may lose it: the next pass computes its share
                mc_link_events(nd->link);
                pthread_mutex_unlock(&c->mu);
                continue;
            }
            // Every answer that has arrived, into the slot it answers.
            size_t bad = MC_EXPERTS_GROUPS;
            for (;;) {
                mc_wire_msg_t msg;
                bool got;
                if ((rc = mc_link_receive(nd->link, &msg, &got, why))) {
                    bad = g; // unreadable: the node is lost with the group waited for
                    break;
                }
                if (!got) break;
                size_t h = 0;
                while (h < MC_EXPERTS_GROUPS && !(nd->slot[h].pending && nd->slot[h].id == msg.request_id)) h++;
                if (h < MC_EXPERTS_GROUPS && (rc = s_take_result(c, nd, &nd->slot[h], &msg, why))) bad = h;
                mc_wire_msg_free(&msg);
                if (bad < MC_EXPERTS_GROUPS) break;
            }
            pthread_mutex_unlock(&c->mu);
            // A wrong answer is treated like silence: a node restarted within
            // the timeout has lost its placement and refuses the request, and
            // the run must not end for that. The probe hands it its
            // placement again.
            if (bad < MC_EXPERTS_GROUPS && (rc = s_lose(c, nd, bad, why, err))) return rc;
        }
    }
}

static void s_tick(mc_cluster_t *c) {
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_nodes; i++) mc_link_tick(c->nodes[i].link, s_probe_held(&c->nodes[i]));
    pthread_mutex_unlock(&c->mu);
    c->last_tick = mc_clock_ms();
}


// --- live changes: staging and the switch ----------------------------------------------

static s_node_t *s_find(mc_cluster_t *c, const char *name) {
    for (size_t i = 0; i < c->n_nodes; i++)
        if (!strcmp(c->nodes[i].cfg->name, name)) return &c->nodes[i];
    return NULL;
}

static bool s_keep(mc_cluster_t *c, mc_cluster_config_t *cfg) {
    mc_cluster_config_t **grown = realloc(c->owned, (c->n_owned + 1) * sizeof *grown);
    if (!grown) return false;
    c->owned = grown;
    c->owned[c->n_owned++] = cfg;
    return true;
}

// Why cfg cannot follow the running one (NULL: it can), checked under mu.
static mc_err_t s_check_change(mc_cluster_t *c, const mc_cluster_config_t *cfg, char *err) {
    const mc_hparams_t *hp = &c->m->hp;
    mc_err_t rc = mc_cluster_config_check(cfg, hp->n_layer, hp->n_expert, err);
    if (rc) return rc;
    if (cfg->wire != c->cfg->wire)
        return mc_err_set(err, MC_ERR_ARG, "the wire is %s, not %s: changing it takes a restart",
                          mc_wire_enc_name(c->cfg->wire), mc_wire_enc_name(cfg->wire));
    const char *ka = c->cfg->secret_key_resolved, *kb = cfg->secret_key_resolved;
    const char *wa = c->cfg->secret_key, *wb = cfg->secret_key; // as written: a body has no folder of its own
    if (((ka == NULL) != (kb == NULL) || (ka && strcmp(ka, kb))) && !(wa && wb && !strcmp(wa, wb)))
        return mc_err_set(err, MC_ERR_ARG, "the coordinator's secret_key differs: changing it takes a restart");
    for (size_t j = 0; j < cfg->n_nodes; j++) {
        const mc_cluster_node_t *n = &cfg->nodes[j];
        if (n->public_key[0] && !c->have_keys)
            return mc_err_set(err, MC_ERR_ARG, "node %s has a public_key, but the coordinator runs without a secret_key",
                              n->name);
        for (size_t i = 0; i < c->n_nodes; i++) {
            const mc_cluster_node_t *o = c->nodes[i].cfg;
            const bool same_name = !strcmp(o->name, n->name), same_ep = !strcmp(o->endpoint, n->endpoint);
            if (same_name && (!same_ep || strcmp(o->public_key, n->public_key)))
                return mc_err_set(err, MC_ERR_ARG, "node %s is at %s%s: remove it first to add it at %s", n->name,
                                  o->endpoint, strcmp(o->public_key, n->public_key) ? " with another public_key" : "",
                                  n->endpoint);
            if (!same_name && same_ep)
                return mc_err_set(err, MC_ERR_ARG, "%s is node %s's endpoint, not %s's", n->endpoint, o->name, n->name);
        }
    }
    return MC_OK;
}

mc_err_t mc_cluster_request(mc_cluster_t *c, mc_cluster_config_t **pcfg, char *err) {
    mc_cluster_config_t *cfg = *pcfg;
    pthread_mutex_lock(&c->mu);
    mc_err_t rc = MC_OK;
    if (c->request || c->staged)
        rc = mc_err_set(err, MC_ERR_BUSY, "a placement change is already staged: wait until it is switched (GET /v1/cluster)");
    else if (!(rc = s_check_change(c, cfg, err))) {
        c->request = cfg;
        *pcfg = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

const mc_cluster_config_t *mc_cluster_config_latest(mc_cluster_t *c, bool *staging) {
    pthread_mutex_lock(&c->mu);
    const mc_cluster_config_t *cfg = c->request ? c->request : c->staged ? c->staged : c->cfg;
    if (staging) *staging = c->request || c->staged;
    pthread_mutex_unlock(&c->mu);
    return cfg;
}

// Ask alive node nd for what it is to hold (s_probe_held) unless it holds it.
static void s_stage_send(mc_cluster_t *c, s_node_t *nd) {
    const size_t cells = (size_t)c->m->hp.n_layer * c->m->hp.n_expert;
    const uint8_t *target = s_probe_held(nd), *placed = mc_link_placed(nd->link);
    if (!mc_link_alive(nd->link) || (placed && !memcmp(placed, target, cells))) return;
    char why[MC_ERR_LEN];
    pthread_mutex_lock(&c->mu); // it may lose the link, which the stats readers see
    const mc_err_t rc = mc_link_stage(nd->link, target, why);
    pthread_mutex_unlock(&c->mu);
    if (rc) MC_LOGW("%s", why);
}

// Take up the posted config: the staged pairs of every node, new nodes'
// links started, the holders that gain pairs sent held | staged (they keep
// serving meanwhile). On failure the config is dropped, note says why.
static void s_stage_begin(mc_cluster_t *c, mc_cluster_config_t *cfg) {
    const size_t cells = (size_t)c->m->hp.n_layer * c->m->hp.n_expert;
    char err[MC_ERR_LEN];
    if (!s_keep(c, cfg)) {
        mc_cluster_config_destroy(&cfg);
        snprintf(c->note, sizeof c->note, "out of memory");
        return;
    }
    // Every pair any node of cfg will hold is hashed first (once per model).
    size_t n_new = 0;
    for (size_t j = 0; j < cfg->n_nodes; j++) n_new += !s_find(c, cfg->nodes[j].name);
    uint8_t *want = calloc((c->n_nodes + n_new) * cells + 1, 1);
    if (!want) {
        snprintf(c->note, sizeof c->note, "out of memory");
        return;
    }
    for (size_t j = 0, a = 0; j < cfg->n_nodes; j++) {
        s_node_t *nd = s_find(c, cfg->nodes[j].name);
        const size_t row = nd ? (size_t)(nd - c->nodes) : c->n_nodes + a++;
        s_fill_held(c, &cfg->nodes[j], want + row * cells);
    }
    // s_hash_slices reads one table per current node (a cluster always has
    // one): the new ones' pairs are folded into the first row's copy.
    uint8_t *any = calloc(c->n_nodes * cells + 1, 1);
    if (!any) {
        free(want);
        snprintf(c->note, sizeof c->note, "out of memory");
        return;
    }
    memcpy(any, want, c->n_nodes * cells);
    for (size_t r = c->n_nodes; r < c->n_nodes + n_new; r++)
        for (size_t x = 0; x < cells; x++) any[x] |= want[r * cells + x];
    mc_err_t rc = s_hash_slices(c, any, err);
    free(any);
    if (rc) {
        free(want);
        snprintf(c->note, sizeof c->note, "the change was dropped: %s", err);
        mc_log_status(c->log, "moe-coordinator", "placement change dropped: %s", err);
        return;
    }
    pthread_mutex_lock(&c->mu);
    const size_t n_old = c->n_nodes, total = n_old + n_new;
    s_node_t *grown = realloc(c->nodes, total * sizeof *grown);
    zmq_pollitem_t *items = grown ? realloc(c->items, 2 * total * sizeof *items) : NULL;
    if (items) c->items = items;
    s_node_t **who = items ? realloc(c->who, 2 * total * sizeof *who) : NULL;
    if (who) c->who = who;
    if (grown) c->nodes = grown;
    bool ok = grown && items && who;
    for (size_t i = 0; ok && i < n_old; i++) {
        s_node_t *nd = &c->nodes[i];
        nd->scfg = NULL;
        for (size_t j = 0; j < cfg->n_nodes; j++)
            if (!strcmp(cfg->nodes[j].name, nd->cfg->name)) nd->scfg = &cfg->nodes[j];
        ok = (nd->want = malloc(cells + 1)) && (nd->uni = malloc(cells + 1));
        if (!ok) break;
        memcpy(nd->want, want + i * cells, cells);
        for (size_t x = 0; x < cells; x++) nd->uni[x] = nd->held[x] | nd->want[x];
    }
    // The new nodes: holding nothing until the switch, joining now.
    for (size_t j = 0, a = 0; ok && j < cfg->n_nodes; j++) {
        if (s_find(c, cfg->nodes[j].name)) continue;
        s_node_t *nd = &c->nodes[n_old + a];
        memset(nd, 0, sizeof *nd);
        nd->added = true;
        ok = !s_node_init(c, nd, cfg, &cfg->nodes[j], err) && (nd->want = malloc(cells + 1)) &&
             (nd->uni = malloc(cells + 1));
        for (size_t g = 0; ok && g < MC_EXPERTS_GROUPS; g++)
            ok = !c->grp[g].cap_tok || s_slot_alloc(c, &nd->slot[g], c->grp[g].cap_tok);
        c->n_nodes = n_old + ++a; // from here it is freed with the others
        if (!ok) break;
        memset(nd->held, 0, cells);
        memcpy(nd->want, want + (n_old + a - 1) * cells, cells);
        memcpy(nd->uni, nd->want, cells);
        nd->scfg = nd->cfg;
        const mc_transfer_node_t tn = {nd->cfg->name, nd->cfg->endpoint, nd->cfg->public_key[0] ? nd->cfg->public_key : NULL};
        if (c->transfer && mc_transfer_add(c->transfer, &tn, err)) ok = false;
        else mc_link_start(nd->link);
    }
    free(want);
    if (ok) {
        c->staged = cfg;
        c->staged_at = mc_clock_ms();
        snprintf(c->note, sizeof c->note, "staged");
    }
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        c->staged = cfg; // what s_stage_abort undoes
        s_stage_abort(c, err[0] ? err : "out of memory");
        return;
    }
    size_t gain = 0, join = 0, leave = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        join += nd->added, leave += !nd->scfg;
        if (!nd->added && memcmp(nd->uni, nd->held, cells)) gain++;
        if (!nd->added) s_stage_send(c, nd);
    }
    mc_log_status(c->log, "moe-coordinator",
                  "placement change staged (%s): %zu node%s joining, %zu leaving, %zu taking more experts; the current "
                  "placement serves until they have them",
                  cfg->path ? cfg->path : "in code", join, join == 1 ? "" : "s", leave, gain);
}

// Undo a staged change (why: for the log and /v1/cluster): new nodes
// released, the others asked to hold their current placement again.
static void s_stage_abort(mc_cluster_t *c, const char *why) {
    pthread_mutex_lock(&c->mu);
    size_t kept = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        if (nd->added) {
            if (c->transfer) mc_transfer_remove(c->transfer, nd->cfg->name);
            s_node_free(nd);
            continue;
        }
        free(nd->want), free(nd->uni);
        nd->want = nd->uni = NULL, nd->scfg = NULL;
        c->nodes[kept++] = *nd;
    }
    c->n_nodes = kept;
    c->staged = NULL;
    snprintf(c->note, sizeof c->note, "the change was dropped: %s", why);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < c->n_nodes; i++) s_stage_send(c, &c->nodes[i]);
    mc_log_status(c->log, "moe-coordinator", "placement change dropped, the current one stays: %s", why);
}

// Whether every holder that gains pairs has them: alive nodes have answered
// Ready to held | staged, new nodes are in (or their first attempt failed:
// a node that is down is not waited for, its share is computed here). A
// refusal drops the change (why).
static bool s_stage_ready(mc_cluster_t *c, const char **why) {
    const size_t cells = (size_t)c->m->hp.n_layer * c->m->hp.n_expert;
    bool ready = true;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        if (!nd->scfg) continue; // leaving: serves until the switch
        const char *refusal;
        if (mc_link_alive(nd->link)) {
            const uint8_t *placed = mc_link_placed(nd->link);
            if (placed && !memcmp(placed, nd->uni, cells)) continue;
            if (mc_link_stage_state(nd->link, &refusal) == MC_LINK_STAGE_FAILED) {
                *why = refusal;
                return false;
            }
            if (mc_link_stage_state(nd->link, NULL) != MC_LINK_STAGE_SENT) s_stage_send(c, nd);
            ready = false;
        } else if (mc_link_fetching(nd->link) || (nd->added && !mc_link_settled(nd->link))) {
            ready = false;
        } else if (nd->added && mc_link_refusal(nd->link)) {
            *why = mc_link_refusal(nd->link);
            return false;
        }
    }
    return ready;
}

// Between two passes: the staged placement becomes the current one for
// every sequence at once; leaving nodes are released, and the holders that
// lose pairs are asked to drop them (they hold what they keep meanwhile).
static void s_stage_switch(mc_cluster_t *c) {
    const size_t cells = (size_t)c->m->hp.n_layer * c->m->hp.n_expert;
    const mc_cluster_config_t *cfg = c->staged;
    pthread_mutex_lock(&c->mu);
    // In the staged file's order, the leaving ones freed.
    s_node_t *order = calloc(cfg->n_nodes + 1, sizeof *order);
    if (!order) { // keep staging; the next pass tries again
        pthread_mutex_unlock(&c->mu);
        return;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        if (!nd->scfg) {
            mc_log_status(c->log, "moe-coordinator", "node %s (%s) leaves the cluster", nd->cfg->name, nd->cfg->endpoint);
            if (c->transfer) mc_transfer_remove(c->transfer, nd->cfg->name);
            s_node_free(nd);
            continue;
        }
        memcpy(nd->held, nd->want, cells);
        nd->cfg = nd->scfg;
        nd->scfg = NULL, nd->added = false;
        order[nd->cfg - cfg->nodes] = *nd;
    }
    memcpy(c->nodes, order, cfg->n_nodes * sizeof *order);
    free(order);
    c->n_nodes = cfg->n_nodes;
    c->cfg = cfg;
    c->staged = NULL;
    c->switches++;
    const double secs = (mc_clock_ms() - c->staged_at) / 1e3;
    snprintf(c->note, sizeof c->note, "switched after %.1f s of staging", secs);
    pthread_mutex_unlock(&c->mu);
    // uni is what each holds until it has dropped the rest (s_probe_held
    // then gives held).
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        free(nd->want), free(nd->uni);
        nd->want = nd->uni = NULL;
        s_stage_send(c, nd);
    }
    mc_log_status(c->log, "moe-coordinator", "placement switched between two steps (%s, staged for %.1f s), %zu nodes",
                  cfg->path ? cfg->path : "in code", secs, c->n_nodes);
}

// Move a change along (the engine's thread, between two passes only).
static void s_stage_pump(mc_cluster_t *c) {
    if (!c->staged) {
        pthread_mutex_lock(&c->mu);
        mc_cluster_config_t *cfg = c->request;
        c->request = NULL;
        pthread_mutex_unlock(&c->mu);
        if (!cfg) return;
        s_stage_begin(c, cfg);
        if (!c->staged) return;
    }
    const char *why = NULL;
    if (s_stage_ready(c, &why)) s_stage_switch(c);
    else if (why) {
        char buf[MC_ERR_LEN];
        snprintf(buf, sizeof buf, "%s", why);
        s_stage_abort(c, buf);
    }
}

// Steps 1-3 for group g (experts.h: begin): the rows assigned, the nodes'
// requests sent, the coordinator's own experts computed while they work.
static mc_err_t s_begin(mc_experts_t *xs, uint32_t g, uint32_t layer, const float *x, uint32_t n,
                        const int32_t *experts, const float *weights, uint32_t k, float *out, char *err) {
    mc_cluster_t *c = (mc_cluster_t *)xs;
    if (g >= MC_EXPERTS_GROUPS || c->grp[g].open)
        return mc_err_set(err, MC_ERR_ARG, "cluster: expert step group %u out of range or open already", g);
    if (k != c->k) return mc_err_set(err, MC_ERR_ARG, "cluster: %u experts per token, expected %u", k, c->k);
    if ((uint64_t)n * k > c->lim.max_rows)
        return mc_err_set(err, MC_ERR_RANGE, "cluster: %u tokens x %u experts exceed %u rows per request", n, k,
                          c->lim.max_rows);
    // A pass starts at layer 0: the one place a staged placement switches,
    // so no pass sees half of one (nor a group still out under the old one).
    if (layer == 0 && !s_any_open(c)) s_stage_pump(c);
    s_group_t *gr = &c->grp[g];
    if (s_reserve(c, gr, n)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    // (A link with another group's request out waits on that, not on a tick.)
    if (mc_clock_ms() - c->last_tick >= MC_CLUSTER_TICK_MS) s_tick_idle(c);
    gr->layer = layer, gr->n = n, gr->out = out;
    s_assign_holders(c, g, layer, x, n, experts, weights);
    mc_err_t rc = s_send_all(c, g, err);
    // Step 3: the coordinator's own experts, while the nodes work.
    const s_rows_t *lr = &gr->local;
    if (!rc && lr->n_rows)
        rc = mc_moe_compute(c->moe, c->m, layer, lr->xg, lr->n_rows, lr->experts, lr->weights, k, gr->local.out, err);
    if (rc) { // what was sent is forgotten: its answers are dropped when they come
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < c->n_nodes; i++)
            if (c->nodes[i].slot[g].pending) mc_link_abandon(c->nodes[i].link, c->nodes[i].slot[g].id);
        pthread_mutex_unlock(&c->mu);
        for (size_t i = 0; i < c->n_nodes; i++) c->nodes[i].slot[g].pending = false;
        return rc;
    }
    gr->open = true;
    return MC_OK;
}

// Steps 4-5 for group g (experts.h: finish).
static mc_err_t s_finish(mc_experts_t *xs, uint32_t g, char *err) {
    mc_cluster_t *c = (mc_cluster_t *)xs;
    if (g >= MC_EXPERTS_GROUPS || !c->grp[g].open)
        return mc_err_set(err, MC_ERR_ARG, "cluster: expert step group %u is not open", g);
    s_group_t *gr = &c->grp[g];
    gr->open = false;
    const uint32_t dim = c->m->hp.dim, k = c->k;
    // Waiting on the network: our idle threads must not spin on cores the
    // nodes may share (all of them, on one machine).
    if (c->pool) mc_pool_rest(c->pool);
    mc_err_t rc = s_collect(c, g, err);
    if (rc) { // the other slots of this group are forgotten as in s_begin
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < c->n_nodes; i++)
            if (c->nodes[i].slot[g].pending) mc_link_abandon(c->nodes[i].link, c->nodes[i].slot[g].id);
        pthread_mutex_unlock(&c->mu);
        for (size_t i = 0; i < c->n_nodes; i++) c->nodes[i].slot[g].pending = false;
        return rc;
    }
    // Step 5: each token's rows added in choice order from zero, as one
    // machine adds its k expert outputs (s_rows_t): a row's sum does not
    // depend on which group it was in or what else the group held.
    for (uint32_t t = 0; t < gr->n; t++) {
        float *o = gr->out + (size_t)t * dim;
        memset(o, 0, dim * sizeof(float));
        for (uint32_t j = 0; j < k; j++) {
            const int32_t d = gr->choice_dest[(size_t)t * k + j];
            if (d < 0) continue;
            const s_rows_t *r = (size_t)d == c->n_nodes ? &gr->local : &c->nodes[d].slot[g].req;
            const float *p = r->out + (size_t)gr->slot_row[(size_t)t * k + j] * dim;
            for (uint32_t i = 0; i < dim; i++) o[i] += p[i];
        }
    }
    return MC_OK;
}

// The one-shot form: group 0 begun and finished at once.
static mc_err_t s_compute(mc_experts_t *xs, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                          const float *weights, uint32_t k, float *out, char *err) {
    mc_err_t rc = s_begin(xs, 0, layer, x, n, experts, weights, k, out, err);
    return rc ? rc : s_finish(xs, 0, err);
}

// --- the expert step ----------------------------------------------------------------

static void s_experts_tick(mc_experts_t *x) {
    s_tick((mc_cluster_t *)x);
    s_stage_pump((mc_cluster_t *)x);
}

static void s_experts_destroy(mc_experts_t *x) {
    mc_cluster_t *c = (mc_cluster_t *)x;
    mc_cluster_destroy(&c);
}

static size_t s_experts_n_nodes(const mc_experts_t *x) { return mc_cluster_n_nodes((const mc_cluster_t *)x); }

static void s_experts_node_stats(const mc_experts_t *x, size_t i, mc_experts_node_stats_t *out) {
    mc_cluster_node_stats((const mc_cluster_t *)x, i, out);
}

static char *s_experts_stats_json(const mc_experts_t *x, const uint64_t *counts) {
    cJSON *root = mc_cluster_stats_json((const mc_cluster_t *)x, counts);
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

static void s_experts_print_stats(const mc_experts_t *x, const uint64_t *counts, FILE *f) {
    mc_cluster_print_stats((const mc_cluster_t *)x, counts, f);
}

static const mc_experts_ops_t s_experts_ops = {.compute = s_compute,
                                               .begin = s_begin,
                                               .finish = s_finish,
                                               .tick = s_experts_tick,
                                               .destroy = s_experts_destroy,
                                               .n_nodes = s_experts_n_nodes,
                                               .node_stats = s_experts_node_stats,
                                               .stats_json = s_experts_stats_json,
                                               .print_stats = s_experts_print_stats};

mc_experts_t *mc_cluster_experts(mc_cluster_t *c) { return &c->experts; }

mc_cluster_t *mc_cluster_of(mc_experts_t *x) { return x && x->ops == &s_experts_ops ? (mc_cluster_t *)x : NULL; }

// --- placement changes ------------------------------------------------------------------

mc_err_t mc_cluster_place(mc_cluster_t *c, const mc_cluster_config_t *cfg, char *err) {
    const mc_hparams_t *hp = &c->m->hp;
    if (mc_cluster_config_check(cfg, hp->n_layer, hp->n_expert, err)) return MC_ERR_ARG;
    if (cfg->n_nodes != c->n_nodes)
        return mc_err_set(err, MC_ERR_ARG, "a new placement must list the same %zu nodes, not %zu", c->n_nodes,
                          cfg->n_nodes);
    for (size_t i = 0; i < c->n_nodes; i++)
        if (strcmp(cfg->nodes[i].name, c->nodes[i].cfg->name) || strcmp(cfg->nodes[i].endpoint, c->nodes[i].cfg->endpoint))
            return mc_err_set(err, MC_ERR_ARG, "a new placement must list the same nodes in the same order: node %zu is %s "
                                               "(%s), not %s (%s)",
                              i + 1, c->nodes[i].cfg->name, c->nodes[i].cfg->endpoint, cfg->nodes[i].name,
                              cfg->nodes[i].endpoint);
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    uint8_t *want = malloc(c->n_nodes * cells + 1);
    if (!want) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_nodes; i++) s_fill_held(c, &cfg->nodes[i], want + i * cells);
    bool staging = c->staged != NULL;
    pthread_mutex_lock(&c->mu);
    staging |= c->request != NULL;
    pthread_mutex_unlock(&c->mu);
    mc_err_t rc = staging ? mc_err_set(err, MC_ERR_BUSY, "a placement change is staged") : s_hash_slices(c, want, err);
    if (rc) {
        free(want);
        return rc;
    }
    size_t done = 0;
    pthread_mutex_lock(&c->mu);
    for (; done < c->n_nodes; done++) {
        s_node_t *nd = &c->nodes[done];
        s_fill_held(c, &cfg->nodes[done], want + done * cells);
        if (!memcmp(want + done * cells, nd->held, cells) || !mc_link_alive(nd->link)) continue;
        if ((rc = mc_link_place(nd->link, want + done * cells, err))) break;
    }
    if (rc) { // put back what was switched
        for (size_t i = 0; i < done; i++)
            if (memcmp(want + i * cells, c->nodes[i].held, cells) && mc_link_alive(c->nodes[i].link))
                mc_link_place(c->nodes[i].link, c->nodes[i].held, NULL);
    } else {
        for (size_t i = 0; i < c->n_nodes; i++) {
            memcpy(c->nodes[i].held, want + i * cells, cells);
            c->nodes[i].cfg = &cfg->nodes[i];
        }
        c->cfg = cfg;
    }
    pthread_mutex_unlock(&c->mu);
    free(want);
    return rc;
}

// --- statistics -------------------------------------------------------------------------

size_t mc_cluster_n_nodes(const mc_cluster_t *c) {
    mc_cluster_t *mc = (mc_cluster_t *)c;
    pthread_mutex_lock(&mc->mu);
    const size_t n = c->n_nodes;
    pthread_mutex_unlock(&mc->mu);
    return n;
}

const mc_cluster_config_t *mc_cluster_config(const mc_cluster_t *c) {
    mc_cluster_t *mc = (mc_cluster_t *)c;
    pthread_mutex_lock(&mc->mu);
    const mc_cluster_config_t *cfg = c->cfg;
    pthread_mutex_unlock(&mc->mu);
    return cfg;
}

bool mc_cluster_holds(const mc_cluster_t *c, size_t i, uint32_t layer, uint32_t e) {
    mc_cluster_t *mc = (mc_cluster_t *)c; // the lock, not the placement, changes
    pthread_mutex_lock(&mc->mu);
    bool h = i < c->n_nodes && c->nodes[i].held[(size_t)layer * c->m->hp.n_expert + e];
    pthread_mutex_unlock(&mc->mu);
    return h;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void mc_cluster_node_stats(const mc_cluster_t *c, size_t i, mc_cluster_node_stats_t *out) {
    mc_cluster_t *mc = (mc_cluster_t *)c;
    pthread_mutex_lock(&mc->mu);
    if (i >= c->n_nodes) { // it left since the caller counted
        pthread_mutex_unlock(&mc->mu);
        *out = (mc_cluster_node_stats_t){.name = "", .endpoint = "", .rtt_bounds_ms = mc_link_rtt_bounds};
        return;
    }
    const s_node_t *nd = &c->nodes[i];
    const mc_link_stats_t *st = mc_link_stats(nd->link);
    *out = (mc_cluster_node_stats_t){.name = nd->cfg->name,
                                     .endpoint = nd->cfg->endpoint,
                                     .alive = mc_link_alive(nd->link),
                                     .requests = st->requests,
                                     .rows = st->rows,
                                     .bytes_sent = st->bytes_sent,
                                     .bytes_recv = st->bytes_recv,
                                     .compute_ms = st->compute_us / 1e3,
                                     .deaths = st->deaths,
                                     .rejoins = st->rejoins,
                                     .slow = st->slow,
                                     .benched = mc_link_benched(nd->link),
                                     .hedged = st->hedged,
                                     .load_done = st->load_done,
                                     .load_total = st->load_total,
                                     .rtt_bounds_ms = mc_link_rtt_bounds,
                                     .rtt_count = st->rtt_count,
                                     .rtt_sum_ms = st->rtt_sum_ms};
    memcpy(out->rtt_hist, st->rtt_hist, sizeof out->rtt_hist);
    if (st->store.has) {
        const mc_wire_store_stats_t *ws = &st->store;
        out->has_store = true;
        out->store.budget_bytes = ws->budget_bytes, out->store.used_bytes = ws->used_bytes;
        out->store.hits = ws->hits, out->store.misses = ws->misses, out->store.bytes_read = ws->bytes_read;
        out->store.stall_us = ws->stall_us, out->store.prefetched = ws->prefetched;
        out->store.prefetch_used = ws->prefetch_used, out->store.errors = ws->errors;
    }
    const size_t n = st->rtt_count < MC_LINK_RTT_RING ? st->rtt_count : MC_LINK_RTT_RING;
    double *ring = n ? malloc(n * sizeof *ring) : NULL;
    if (ring) memcpy(ring, st->rtt_ring, n * sizeof *ring);
    pthread_mutex_unlock(&mc->mu);
    out->fetch_done = st->fetch_done, out->fetch_total = st->fetch_total;
    if (c->transfer) {
        mc_transfer_stats_t ts;
        mc_transfer_stats(c->transfer, out->name, &ts);
        out->transfer_bytes = ts.bytes, out->transfer_remaining = ts.remaining;
        out->transfer_rate = ts.rate, out->transfer_eta_s = ts.eta_s, out->transfer_active = ts.active;
    }
    if (st->rtt_count) out->rtt_mean_ms = out->rtt_sum_ms / (double)out->rtt_count;
    if (!ring) return; // quantiles are best effort
    qsort(ring, n, sizeof *ring, s_cmp_double);
    out->rtt_p50_ms = ring[(n - 1) / 2];
    out->rtt_p99_ms = ring[(size_t)((double)(n - 1) * 0.99)];
    free(ring);
}

void mc_cluster_print_stats(const mc_cluster_t *c, const uint64_t *counts, FILE *f) {
    fprintf(f, "%-16s %-28s %5s %6s %6s %9s %9s %11s %11s %9s %9s %9s %11s\n", "node", "endpoint", "alive", "lost", "slow",
            "requests", "rows", "sent", "received", "rtt mean", "rtt p50", "rtt p99", "compute");
    for (size_t i = 0, nn = mc_cluster_n_nodes(c); i < nn; i++) {
        mc_cluster_node_stats_t s;
        mc_cluster_node_stats(c, i, &s);
        fprintf(f, "%-16s %-28s %5s %6u %6u %9llu %9llu %9.2fMB %9.2fMB %7.2fms %7.2fms %7.2fms %9.1fms\n", s.name,
                s.endpoint, s.alive ? "yes" : "NO", s.deaths, s.slow, (unsigned long long)s.requests, (unsigned long long)s.rows,
                s.bytes_sent / 1e6, s.bytes_recv / 1e6, s.rtt_mean_ms, s.rtt_p50_ms, s.rtt_p99_ms, s.compute_ms);
    }
    const mc_hparams_t *hp = &c->m->hp;
    fprintf(f, "rows routed to each expert, per layer:\n");
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        fprintf(f, "  layer %3u:", l);
        for (uint32_t e = 0; e < hp->n_expert; e++)
            fprintf(f, " %llu", (unsigned long long)counts[(size_t)l * hp->n_expert + e]);
        fputc('\n', f);
    }
}

// Node i's part in a staged change: "stage" (none, joining, loading,
// ready, leaving) and its staged pairs (staged_experts, per layer).
static void s_stage_json(const mc_cluster_t *c, size_t i, cJSON *o) {
    mc_cluster_t *mc = (mc_cluster_t *)c;
    const mc_hparams_t *hp = &c->m->hp;
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    pthread_mutex_lock(&mc->mu);
    const char *stage = "none";
    if (i < c->n_nodes && c->staged) {
        const s_node_t *nd = &c->nodes[i];
        const uint8_t *placed = mc_link_placed(nd->link);
        if (!nd->scfg) stage = "leaving";
        else if (!mc_link_alive(nd->link)) stage = nd->added ? "joining" : "down";
        else if (placed && nd->uni && !memcmp(placed, nd->uni, cells)) stage = "ready";
        else stage = "loading";
        if (nd->want) {
            cJSON *sw = cJSON_AddArrayToObject(o, "staged_experts");
            for (uint32_t l = 0; l < hp->n_layer; l++) {
                cJSON *row = cJSON_CreateArray();
                for (uint32_t e = 0; e < hp->n_expert; e++)
                    if (nd->want[(size_t)l * hp->n_expert + e]) cJSON_AddItemToArray(row, cJSON_CreateNumber(e));
                cJSON_AddItemToArray(sw, row);
            }
        }
    }
    cJSON_AddStringToObject(o, "stage", stage);
    pthread_mutex_unlock(&mc->mu);
}

// The placement's state: a change staged (since when, its source), the
// switches so far, the last change's outcome.
static void s_placement_json(const mc_cluster_t *c, cJSON *root) {
    mc_cluster_t *mc = (mc_cluster_t *)c;
    pthread_mutex_lock(&mc->mu);
    cJSON *p = cJSON_AddObjectToObject(root, "placement");
    const mc_cluster_config_t *sc = c->staged ? c->staged : c->request;
    cJSON_AddStringToObject(p, "state", c->staged ? "staging" : c->request ? "requested" : "steady");
    cJSON_AddStringToObject(p, "source", c->cfg->path ? c->cfg->path : "");
    if (sc) {
        cJSON_AddStringToObject(p, "staged_source", sc->path ? sc->path : "");
        cJSON_AddNumberToObject(p, "staged_for_s", c->staged ? (mc_clock_ms() - c->staged_at) / 1e3 : 0.0);
        cJSON *names = cJSON_AddArrayToObject(p, "staged_nodes");
        for (size_t j = 0; j < sc->n_nodes; j++) cJSON_AddItemToArray(names, cJSON_CreateString(sc->nodes[j].name));
    }
    cJSON_AddNumberToObject(p, "switches", (double)c->switches);
    cJSON_AddStringToObject(p, "last_change", c->note);
    pthread_mutex_unlock(&mc->mu);
}

cJSON *mc_cluster_stats_json(const mc_cluster_t *c, const uint64_t *counts) {
    const mc_hparams_t *hp = &c->m->hp;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON *nodes = cJSON_AddArrayToObject(root, "nodes");
    cJSON_AddStringToObject(root, "wire", mc_wire_enc_name(mc_cluster_config(c)->wire));
    cJSON_AddNumberToObject(root, "layers", hp->n_layer);
    cJSON_AddNumberToObject(root, "experts", hp->n_expert);
    for (size_t i = 0, nn = mc_cluster_n_nodes(c); i < nn; i++) {
        mc_cluster_node_stats_t s;
        mc_cluster_node_stats(c, i, &s);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", s.name);
        cJSON_AddStringToObject(o, "endpoint", s.endpoint);
        cJSON_AddBoolToObject(o, "alive", s.alive);
        cJSON_AddNumberToObject(o, "times_lost", s.deaths);
        cJSON_AddNumberToObject(o, "times_back", s.rejoins);
        cJSON_AddNumberToObject(o, "times_slow", s.slow);
        cJSON_AddBoolToObject(o, "benched", s.benched);
        cJSON_AddNumberToObject(o, "requests_computed_here", (double)s.hedged);
        cJSON_AddNumberToObject(o, "loading_done_bytes", (double)s.load_done);
        cJSON_AddNumberToObject(o, "loading_total_bytes", (double)s.load_total);
        // Slices sent to a node without a model file (moe-expert --cache-dir).
        cJSON *tr = cJSON_AddObjectToObject(o, "transfer");
        cJSON_AddBoolToObject(tr, "active", s.transfer_active);
        cJSON_AddNumberToObject(tr, "sent_bytes", (double)s.transfer_bytes);
        cJSON_AddNumberToObject(tr, "remaining_bytes", (double)s.transfer_remaining);
        cJSON_AddNumberToObject(tr, "bytes_per_s", s.transfer_rate);
        cJSON_AddNumberToObject(tr, "eta_s", s.transfer_eta_s);
        cJSON_AddNumberToObject(tr, "node_fetched_bytes", (double)s.fetch_done);
        cJSON_AddNumberToObject(tr, "node_fetch_total_bytes", (double)s.fetch_total);
        cJSON_AddNumberToObject(o, "requests", (double)s.requests);
        cJSON_AddNumberToObject(o, "rows", (double)s.rows);
        cJSON_AddNumberToObject(o, "bytes_sent", (double)s.bytes_sent);
        cJSON_AddNumberToObject(o, "bytes_received", (double)s.bytes_recv);
        cJSON_AddNumberToObject(o, "rtt_mean_ms", s.rtt_mean_ms);
        cJSON_AddNumberToObject(o, "rtt_p50_ms", s.rtt_p50_ms);
        cJSON_AddNumberToObject(o, "rtt_p99_ms", s.rtt_p99_ms);
        cJSON_AddNumberToObject(o, "compute_ms", s.compute_ms);
        if (s.has_store) { // the node's expert store (moe-expert --mem-limit)
            cJSON *so = cJSON_AddObjectToObject(o, "expert_store");
            cJSON_AddNumberToObject(so, "budget_bytes", (double)s.store.budget_bytes);
            cJSON_AddNumberToObject(so, "used_bytes", (double)s.store.used_bytes);
            cJSON_AddNumberToObject(so, "hits", (double)s.store.hits);
            cJSON_AddNumberToObject(so, "misses", (double)s.store.misses);
            cJSON_AddNumberToObject(so, "read_bytes", (double)s.store.bytes_read);
            cJSON_AddNumberToObject(so, "stall_ms", s.store.stall_us / 1e3);
            cJSON_AddNumberToObject(so, "prefetched", (double)s.store.prefetched);
            cJSON_AddNumberToObject(so, "prefetch_used", (double)s.store.prefetch_used);
            cJSON_AddNumberToObject(so, "read_errors", (double)s.store.errors);
        }
        cJSON *held = cJSON_AddArrayToObject(o, "experts");
        for (uint32_t l = 0; l < hp->n_layer; l++) {
            cJSON *row = cJSON_CreateArray();
            for (uint32_t e = 0; e < hp->n_expert; e++)
                if (mc_cluster_holds(c, i, l, e)) cJSON_AddItemToArray(row, cJSON_CreateNumber(e));
            cJSON_AddItemToArray(held, row);
        }
        s_stage_json(c, i, o);
        cJSON_AddItemToArray(nodes, o);
    }
    s_placement_json(c, root);
    cJSON *local = cJSON_AddArrayToObject(root, "local_experts");
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cJSON *row = cJSON_CreateArray();
        for (uint32_t e = 0; e < hp->n_expert; e++)
            if (mc_cluster_config_local_holds(mc_cluster_config(c), l, e)) cJSON_AddItemToArray(row, cJSON_CreateNumber(e));
        cJSON_AddItemToArray(local, row);
    }
    if (counts) {
        cJSON *layers = cJSON_AddArrayToObject(root, "rows_per_expert");
        for (uint32_t l = 0; l < hp->n_layer; l++) {
            cJSON *row = cJSON_CreateArray();
            for (uint32_t e = 0; e < hp->n_expert; e++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)counts[(size_t)l * hp->n_expert + e]));
            cJSON_AddItemToArray(layers, row);
        }
    }
    return root;
}

mc_err_t mc_cluster_write_stats_json(const mc_cluster_t *c, const uint64_t *counts, const char *path, char *err) {
    cJSON *root = mc_cluster_stats_json(c, counts);
    char *txt = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!txt) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    bool ok = f && fputs(txt, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    cJSON_free(txt);
    return ok ? MC_OK : mc_err_set(err, MC_ERR_IO, "%s: cannot write the stats", path);
}
