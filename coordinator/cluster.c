/*
 * cluster: connection set-up, placement, per-layer dispatch and gathering,
 * dead-node fallback and statistics.
 */
#include "cluster.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "moe.h"
#include "wire.h"

// How far a dead node is on its way back (see s_revive).
typedef enum { S_PROBE_IDLE, S_PROBE_HELLO, S_PROBE_ASSIGN } s_probe_t;

typedef struct {
    const mc_cluster_node_t *cfg;
    void *sock;
    bool alive;
    s_probe_t probe;      // while dead: the probe in flight
    uint64_t probe_id;    // its request id
    double probe_until;   // when it is given up
    double retry_at;      // when the next probe may start
    bool probe_warned;    // the reason it failed was logged (once per death)
    uint32_t deaths, rejoins;
    uint8_t *held;      // (n_layer, n_expert) pairs placed on this node

    // The current layer's request.
    uint32_t n_rows;
    uint32_t *row_of;   // (n_rows) index of each request row in the batch
    int32_t *experts;   // (n_rows, k) this node's slots, -1 elsewhere
    float *weights;     // (n_rows, k)
    float *xg;          // (n_rows, dim) gathered inputs
    mc_wire_enc_t wire; // encoding of enc
    uint8_t *enc;       // (n_rows, row bytes) encoded inputs
    float *partial;     // (n_rows, dim) the node's weighted sums
    uint64_t req_id;
    bool pending;
    double t_sent;

    uint64_t requests, rows, bytes_sent, bytes_recv, compute_us;
    double *rtt;        // milliseconds of every answered request
    size_t n_rtt, cap_rtt;
} s_node_t;

struct mc_cluster {
    const mc_cluster_config_t *cfg;
    const mc_model_t *m;
    void *zctx;
    s_node_t *nodes;
    size_t n_nodes;
    mc_moe_t *moe;      // local experts (and fallback for dead nodes)
    mc_pool_t *pool;    // the engine's threads (borrowed)
    mc_wire_limits_t lim;
    uint64_t next_id;
    uint64_t session;   // sent with every placement
    uint32_t cap_rows;  // rows the per-node buffers hold
    uint32_t k;
    int32_t *local_experts; // (cap_rows, k)
    uint32_t *rr;       // (n_layer, n_expert) round-robin cursor over replicas
    mc_wire_enc_t *auto_enc; // (n_layer, n_expert) what `wire: auto` sends for each expert
    float *round;       // (cap_rows, dim) a lost node's result on its way through the result encoding
    zmq_pollitem_t *items; // (n_nodes) poll set of the pending requests
    s_node_t **who;        // (n_nodes) node of each poll item
    FILE *log;
};

static double s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static mc_err_t s_send(s_node_t *nd, const mc_wire_msg_t *msg, char *err) {
    uint8_t *buf;
    size_t len;
    mc_err_t rc = mc_wire_encode(msg, &buf, &len, err);
    if (rc) return rc;
    int n = zmq_send(nd->sock, buf, len, 0);
    free(buf);
    if (n < 0)
        return mc_err_set(err, MC_ERR_NET, "node %s (%s): send failed: %s", nd->cfg->name, nd->cfg->endpoint,
                          zmq_strerror(zmq_errno()));
    nd->bytes_sent += len;
    return MC_OK;
}

// Receive and decode one message from nd (the socket is readable).
static mc_err_t s_recv(mc_cluster_t *c, s_node_t *nd, mc_wire_msg_t *msg, char *err) {
    zmq_msg_t zm;
    zmq_msg_init(&zm);
    if (zmq_msg_recv(&zm, nd->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&zm);
        return mc_err_set(err, MC_ERR_NET, "node %s: receive failed: %s", nd->cfg->name, zmq_strerror(zmq_errno()));
    }
    nd->bytes_recv += zmq_msg_size(&zm);
    char sub[MC_ERR_LEN];
    mc_err_t rc = mc_wire_decode(&c->lim, zmq_msg_data(&zm), zmq_msg_size(&zm), msg, NULL, sub);
    zmq_msg_close(&zm);
    if (rc) return mc_err_set(err, rc, "node %s sent a bad message: %s", nd->cfg->name, sub);
    return MC_OK;
}

// Wait for the reply to request id from nd, up to the cluster timeout.
static mc_err_t s_await(mc_cluster_t *c, s_node_t *nd, uint64_t id, const char *what, mc_wire_msg_t *msg, char *err) {
    double deadline = s_now_ms() + c->cfg->timeout_ms;
    for (;;) {
        double left = deadline - s_now_ms();
        zmq_pollitem_t it = {nd->sock, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&it, 1, (long)ceil(left)) == 0)
            return mc_err_set(err, MC_ERR_TIMEOUT, "node %s (%s) did not answer the %s within %u ms", nd->cfg->name,
                              nd->cfg->endpoint, what, c->cfg->timeout_ms);
        mc_err_t rc = s_recv(c, nd, msg, err);
        if (rc) return rc;
        if (msg->request_id == id) break;
        mc_wire_msg_free(msg); // a stale reply from before: skip it
    }
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, msg->u.error.code ? msg->u.error.code : MC_ERR_NET, "node %s (%s) refused the %s: %s",
                   nd->cfg->name, nd->cfg->endpoint, what, msg->u.error.message);
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    return MC_OK;
}

// A fresh DEALER socket to nd, replacing any old one (and with it any
// reply still on its way to the old one).
static mc_err_t s_open(mc_cluster_t *c, s_node_t *nd, char *err) {
    if (nd->sock) zmq_close(nd->sock);
    nd->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!nd->sock) return mc_err_set(err, MC_ERR_NET, "node %s: no socket: %s", nd->cfg->name, zmq_strerror(zmq_errno()));
    int zero = 0, timeout = (int)c->cfg->timeout_ms;
    int64_t max_msg = mc_wire_max_msg_bytes(&c->lim);
    zmq_setsockopt(nd->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(nd->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(nd->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (zmq_connect(nd->sock, nd->cfg->endpoint) != 0)
        return mc_err_set(err, MC_ERR_NET, "node %s: cannot connect to %s: %s", nd->cfg->name, nd->cfg->endpoint,
                          zmq_strerror(zmq_errno()));
    return MC_OK;
}

// Send our Hello to nd; its request id in *id.
static mc_err_t s_send_hello(mc_cluster_t *c, s_node_t *nd, uint64_t *id, char *err) {
    mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_HELLO, .request_id = ++c->next_id};
    msg.u.hello.version = MC_WIRE_VERSION;
    msg.u.hello.fingerprint = mc_model_fingerprint(c->m);
    snprintf(msg.u.hello.name, sizeof msg.u.hello.name, "coordinator");
    *id = msg.request_id;
    return s_send(nd, &msg, err);
}

// Send nd its placement; the request id in *id.
static mc_err_t s_send_assign(mc_cluster_t *c, s_node_t *nd, uint64_t *id, char *err) {
    const mc_hparams_t *hp = &c->m->hp;
    mc_wire_msg_t as = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = ++c->next_id};
    as.u.assign = (mc_wire_assign_t){c->session, hp->n_layer, hp->n_expert, nd->held};
    *id = as.request_id;
    return s_send(nd, &as, err);
}

// Check nd's answer to our Hello (frees msg): same protocol, same model.
static mc_err_t s_check_hello(mc_cluster_t *c, s_node_t *nd, mc_wire_msg_t *msg, char *err) {
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the handshake: %s", nd->cfg->name, nd->cfg->endpoint,
                   msg->u.error.message);
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    bool ok = msg->kind == MC_WIRE_MSG_HELLO;
    uint32_t version = msg->u.hello.version;
    uint64_t fp = msg->u.hello.fingerprint;
    mc_wire_msg_free(msg);
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the handshake with something else", nd->cfg->name);
    if (version != MC_WIRE_VERSION)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "node %s (%s) speaks protocol version %u, we speak %u", nd->cfg->name,
                          nd->cfg->endpoint, version, MC_WIRE_VERSION);
    if (fp != mc_model_fingerprint(c->m))
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "node %s (%s) serves another model (fingerprint %016llx, ours %016llx): start it with the "
                          "same GGUF file",
                          nd->cfg->name, nd->cfg->endpoint, (unsigned long long)fp,
                          (unsigned long long)mc_model_fingerprint(c->m));
    return MC_OK;
}

// Check nd's answer to its placement (frees msg) and say it is ready.
static mc_err_t s_check_ready(mc_cluster_t *c, s_node_t *nd, mc_wire_msg_t *msg, const char *how, char *err) {
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the placement: %s", nd->cfg->name, nd->cfg->endpoint,
                   msg->u.error.message);
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    bool ok = msg->kind == MC_WIRE_MSG_READY;
    mc_wire_ready_t ready = msg->u.ready;
    mc_wire_msg_free(msg);
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the placement with something else", nd->cfg->name);
    if (c->log) {
        char ex[128];
        mc_expert_set_format(&nd->cfg->experts, ex, sizeof ex);
        fprintf(c->log, "cluster: node %s (%s) %s: experts %s, %u (layer, expert) pairs, resident %.1f MiB\n",
                nd->cfg->name, nd->cfg->endpoint, how, ex, ready.n_pairs, ready.resident_bytes / 1048576.0);
    }
    return MC_OK;
}

static mc_err_t s_handshake(mc_cluster_t *c, s_node_t *nd, char *err) {
    mc_wire_msg_t msg;
    uint64_t id;
    mc_err_t rc;
    if ((rc = s_send_hello(c, nd, &id, err)) || (rc = s_await(c, nd, id, "handshake", &msg, err)) ||
        (rc = s_check_hello(c, nd, &msg, err)))
        return rc;
    if ((rc = s_send_assign(c, nd, &id, err)) || (rc = s_await(c, nd, id, "placement", &msg, err))) return rc;
    return s_check_ready(c, nd, &msg, "ready", err);
}

static void s_node_free(s_node_t *nd) {
    if (nd->sock) zmq_close(nd->sock);
    free(nd->held), free(nd->row_of), free(nd->experts), free(nd->weights), free(nd->xg), free(nd->enc);
    free(nd->partial), free(nd->rtt);
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
    c->items = calloc(cfg->n_nodes, sizeof *c->items);
    c->who = calloc(cfg->n_nodes, sizeof *c->who);
    if (!c->zctx || !c->moe || !c->nodes || !c->rr || !c->auto_enc || !c->items || !c->who) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) c->auto_enc[(size_t)l * hp->n_expert + e] = mc_wire_auto_enc(m, l, e);
    c->n_nodes = cfg->n_nodes;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        nd->cfg = &cfg->nodes[i];
        nd->alive = true;
        nd->held = calloc((size_t)hp->n_layer * hp->n_expert, 1);
        if (!nd->held) {
            mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t l = 0; l < hp->n_layer; l++)
            for (uint32_t e = 0; e < hp->n_expert; e++)
                nd->held[(size_t)l * hp->n_expert + e] = mc_cluster_node_holds(nd->cfg, l, e);
        if (s_open(c, nd, err)) goto fail;
    }
    if (getrandom(&c->session, sizeof c->session, 0) != (ssize_t)sizeof c->session) c->session = (uint64_t)s_now_ms();
    for (size_t i = 0; i < c->n_nodes; i++)
        if (s_handshake(c, &c->nodes[i], err)) goto fail;
    return c;
fail:
    mc_cluster_destroy(&c);
    return NULL;
}

void mc_cluster_destroy(mc_cluster_t **pc) {
    if (!pc || !*pc) return;
    mc_cluster_t *c = *pc;
    for (size_t i = 0; c->nodes && i < c->n_nodes; i++) s_node_free(&c->nodes[i]);
    free(c->nodes);
    free(c->rr);
    free(c->auto_enc);
    free(c->round);
    free(c->items);
    free(c->who);
    free(c->local_experts);
    mc_moe_destroy(&c->moe);
    if (c->zctx) zmq_ctx_term(c->zctx);
    free(c);
    *pc = NULL;
}

static mc_err_t s_reserve(mc_cluster_t *c, uint32_t n) {
    if (n <= c->cap_rows) return MC_OK;
    // f32 rows are the widest encoding (auto may pick any per request).
    const size_t dim = c->m->hp.dim, k = c->k, rb = mc_wire_row_bytes(MC_WIRE_F32, c->m->hp.dim);
    free(c->local_experts), free(c->round);
    c->local_experts = malloc((size_t)n * k * sizeof(int32_t));
    c->round = malloc((size_t)n * rb);
    if (!c->local_experts || !c->round) return MC_ERR_NOMEM;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        free(nd->row_of), free(nd->experts), free(nd->weights), free(nd->xg), free(nd->enc), free(nd->partial);
        nd->row_of = malloc(n * sizeof(uint32_t));
        nd->experts = malloc(n * k * sizeof(int32_t));
        nd->weights = malloc(n * k * sizeof(float));
        nd->xg = malloc(n * dim * sizeof(float));
        nd->enc = malloc(n * rb);
        nd->partial = malloc(n * dim * sizeof(float));
        if (!nd->row_of || !nd->experts || !nd->weights || !nd->xg || !nd->enc || !nd->partial) {
            c->cap_rows = 0;
            return MC_ERR_NOMEM;
        }
    }
    c->cap_rows = n;
    return MC_OK;
}

// Which holder computes slot (t, j): -1 for the coordinator's own experts,
// else a node index. Rows of one expert are spread over its live replicas
// in turn; when every holder is lost, the first one keeps the slot and the
// coordinator computes it as that node would have (s_fallback).
static int s_holder(mc_cluster_t *c, uint32_t layer, uint32_t e) {
    const mc_hparams_t *hp = &c->m->hp;
    if (mc_cluster_config_local_holds(c->cfg, layer, e)) return -1;
    size_t idx = (size_t)layer * hp->n_expert + e, n_live = 0;
    int first = -1;
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (!c->nodes[i].held[idx]) continue;
        if (first < 0) first = (int)i;
        n_live += c->nodes[i].alive;
    }
    if (n_live == 0) return first;
    size_t pick = c->rr[idx]++ % n_live;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].alive && c->nodes[i].held[idx] && pick-- == 0) return (int)i;
    return first;
}

static void s_rtt_add(s_node_t *nd, double ms) {
    if (nd->n_rtt == nd->cap_rtt) {
        size_t cap = nd->cap_rtt ? 2 * nd->cap_rtt : 256;
        double *r = realloc(nd->rtt, cap * sizeof *r);
        if (!r) return; // statistics are best effort
        nd->rtt = r;
        nd->cap_rtt = cap;
    }
    nd->rtt[nd->n_rtt++] = ms;
}

// Accept the result of nd's pending request into nd->partial.
static mc_err_t s_take_result(mc_cluster_t *c, s_node_t *nd, mc_wire_msg_t *msg, char *err) {
    const uint32_t dim = c->m->hp.dim;
    if (msg->kind == MC_WIRE_MSG_ERROR)
        return mc_err_set(err, MC_ERR_NET, "node %s failed a request: %s", nd->cfg->name, msg->u.error.message);
    if (msg->kind != MC_WIRE_MSG_RESULT || msg->u.result.n_rows != nd->n_rows || msg->u.result.dim != dim)
        return mc_err_set(err, MC_ERR_NET, "node %s answered with a result of the wrong shape", nd->cfg->name);
    if (msg->u.result.enc != mc_wire_result_enc(c->cfg->wire))
        return mc_err_set(err, MC_ERR_NET, "node %s answered in %s, not %s", nd->cfg->name,
                          mc_wire_enc_name(msg->u.result.enc), mc_wire_enc_name(mc_wire_result_enc(c->cfg->wire)));
    mc_wire_rows_decode(msg->u.result.enc, msg->u.result.rows, nd->n_rows, dim, nd->partial);
    nd->compute_us += msg->u.result.compute_us;
    s_rtt_add(nd, s_now_ms() - nd->t_sent);
    nd->pending = false;
    return MC_OK;
}

// nd stopped answering: route around it, and try it again after retry_ms.
static void s_mark_dead(mc_cluster_t *c, s_node_t *nd) {
    nd->alive = false;
    nd->deaths++;
    nd->probe = S_PROBE_IDLE;
    nd->probe_warned = false;
    nd->retry_at = s_now_ms() + c->cfg->retry_ms;
}

static void s_probe_failed(mc_cluster_t *c, s_node_t *nd, const char *why) {
    // A node that is still unplugged times out every retry: say nothing. A
    // node that answers wrongly (another model, a placement it refuses) is
    // worth one line per death.
    if (why && !nd->probe_warned) {
        MC_LOGW("%s", why);
        nd->probe_warned = true;
    }
    nd->probe = S_PROBE_IDLE;
    nd->retry_at = s_now_ms() + c->cfg->retry_ms;
}

// One step of a dead node's way back, never blocking the layer in progress:
// every retry_ms a fresh connection says hello; a node that answers with our
// protocol version and model gets its placement again (the same session, so
// a node that still holds it agrees at once) and takes work from the first
// layer after its Ready arrives.
static void s_revive(mc_cluster_t *c, s_node_t *nd) {
    char err[MC_ERR_LEN];
    double now = s_now_ms();
    if (nd->probe == S_PROBE_IDLE) {
        if (now < nd->retry_at) return;
        if (s_open(c, nd, err) || s_send_hello(c, nd, &nd->probe_id, err)) {
            s_probe_failed(c, nd, err);
            return;
        }
        nd->probe = S_PROBE_HELLO;
        nd->probe_until = now + c->cfg->timeout_ms;
        return;
    }
    zmq_pollitem_t it = {nd->sock, 0, ZMQ_POLLIN, 0};
    while (zmq_poll(&it, 1, 0) > 0) {
        mc_wire_msg_t msg;
        if (s_recv(c, nd, &msg, err)) {
            s_probe_failed(c, nd, err);
            return;
        }
        if (msg.request_id != nd->probe_id) {
            mc_wire_msg_free(&msg);
            continue;
        }
        if (nd->probe == S_PROBE_HELLO) {
            if (s_check_hello(c, nd, &msg, err) || s_send_assign(c, nd, &nd->probe_id, err)) {
                s_probe_failed(c, nd, err);
                return;
            }
            nd->probe = S_PROBE_ASSIGN;
            nd->probe_until = s_now_ms() + c->cfg->timeout_ms;
            continue;
        }
        if (s_check_ready(c, nd, &msg, "is back", err)) {
            s_probe_failed(c, nd, err);
            return;
        }
        if (!c->log) MC_LOGI("node %s (%s) is back", nd->cfg->name, nd->cfg->endpoint);
        nd->alive = true;
        nd->rejoins++;
        nd->probe = S_PROBE_IDLE;
        return;
    }
    if (now > nd->probe_until) s_probe_failed(c, nd, NULL);
}

// Compute a lost node's slots here as the node would have: from the bytes
// sent to it (a lossy wire loses the same bits either way), through the same
// expert step, and its result through the result encoding.
static mc_err_t s_fallback(mc_cluster_t *c, s_node_t *nd, uint32_t layer, char *err) {
    const uint32_t dim = c->m->hp.dim;
    nd->pending = false;
    const mc_moe_rows_t rows = {mc_wire_enc_dtype(nd->wire), nd->enc, mc_wire_row_bytes(nd->wire, dim)};
    mc_err_t rc = mc_moe_compute_rows(c->moe, c->m, layer, &rows, nd->n_rows, nd->experts, nd->weights, c->k,
                                      nd->partial, err);
    const mc_wire_enc_t renc = mc_wire_result_enc(c->cfg->wire);
    if (rc || renc == MC_WIRE_F32) return rc;
    mc_wire_rows_encode(renc, nd->partial, nd->n_rows, dim, c->round);
    mc_wire_rows_decode(renc, c->round, nd->n_rows, dim, nd->partial);
    return MC_OK;
}

// The encoding of nd's request: the configured one, or under `wire: auto`
// the blocks its experts' kernels take (f32 if they disagree).
static mc_wire_enc_t s_request_enc(const mc_cluster_t *c, const s_node_t *nd, uint32_t layer) {
    if (c->cfg->wire != MC_WIRE_AUTO) return c->cfg->wire;
    const uint32_t ne = c->m->hp.n_expert;
    const mc_wire_enc_t *ae = c->auto_enc + (size_t)layer * ne;
    int found = -1;
    for (size_t s = 0; s < (size_t)nd->n_rows * c->k; s++) {
        int32_t e = nd->experts[s];
        if (e < 0) continue;
        if (found < 0) found = (int)ae[e];
        else if (found != (int)ae[e]) return MC_WIRE_F32;
    }
    return found < 0 ? MC_WIRE_F32 : (mc_wire_enc_t)found;
}

mc_err_t mc_cluster_moe(void *ctx, uint32_t layer, const float *x, uint32_t n, const int32_t *experts,
                        const float *weights, uint32_t k, float *out, char *err) {
    mc_cluster_t *c = ctx;
    const uint32_t dim = c->m->hp.dim;
    if (k != c->k) return mc_err_set(err, MC_ERR_ARG, "cluster: %u experts per token, expected %u", k, c->k);
    if (s_reserve(c, n)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_nodes; i++) {
        c->nodes[i].n_rows = 0;
        if (!c->nodes[i].alive && c->cfg->retry_ms) s_revive(c, &c->nodes[i]);
    }

    // Route every slot, building one request per node.
    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t j = 0; j < k; j++) c->local_experts[(size_t)t * k + j] = -1;
        for (uint32_t j = 0; j < k; j++) {
            int32_t e = experts[(size_t)t * k + j];
            int h = e < 0 ? -1 : s_holder(c, layer, (uint32_t)e);
            if (h < 0) {
                c->local_experts[(size_t)t * k + j] = e;
                continue;
            }
            s_node_t *nd = &c->nodes[h];
            if (nd->n_rows == 0 || nd->row_of[nd->n_rows - 1] != t) {
                uint32_t r = nd->n_rows++;
                nd->row_of[r] = t;
                for (uint32_t q = 0; q < k; q++) nd->experts[(size_t)r * k + q] = -1;
                memcpy(nd->xg + (size_t)r * dim, x + (size_t)t * dim, dim * sizeof(float));
                memcpy(nd->weights + (size_t)r * k, weights + (size_t)t * k, k * sizeof(float));
            }
            nd->experts[(size_t)(nd->n_rows - 1) * k + j] = e;
        }
    }

    // Send everything before computing or waiting for anything.
    mc_err_t rc;
    for (size_t i = 0; i < c->n_nodes; i++) {
        s_node_t *nd = &c->nodes[i];
        if (!nd->n_rows) continue;
        nd->wire = s_request_enc(c, nd, layer);
        mc_wire_rows_encode(nd->wire, nd->xg, nd->n_rows, dim, nd->enc);
        mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_REQUEST, .request_id = ++c->next_id};
        msg.u.request = (mc_wire_request_t){.layer = layer,
                                            .enc = nd->wire,
                                            .n_rows = nd->n_rows,
                                            .dim = dim,
                                            .rows = nd->enc,
                                            .rows_len = nd->n_rows * mc_wire_row_bytes(nd->wire, dim),
                                            .k = k,
                                            .experts = nd->experts,
                                            .weights = nd->weights,
                                            .res_enc = mc_wire_result_enc(c->cfg->wire)};
        if (!nd->alive) { // lost: computed here from the same bytes
            if ((rc = s_fallback(c, nd, layer, err))) return rc;
            continue;
        }
        nd->req_id = msg.request_id;
        nd->t_sent = s_now_ms();
        nd->requests++;
        nd->rows += nd->n_rows;
        if (s_send(nd, &msg, err) == MC_OK) {
            nd->pending = true;
            continue;
        }
        MC_LOGW("%s: computing its experts here until it is back", err);
        s_mark_dead(c, nd);
        if ((rc = s_fallback(c, nd, layer, err))) return rc;
    }

    // The coordinator's own experts, while the nodes work.
    if ((rc = mc_moe_compute(c->moe, c->m, layer, x, n, c->local_experts, weights, k, out, err))) return rc;

    // Waiting on the network: our idle threads must not spin on cores the
    // nodes may share (all of them, on one machine).
    if (c->pool) mc_pool_rest(c->pool);
    double deadline = s_now_ms() + c->cfg->timeout_ms;
    for (;;) {
        zmq_pollitem_t *items = c->items;
        s_node_t **who = c->who;
        int n_items = 0;
        for (size_t i = 0; i < c->n_nodes; i++)
            if (c->nodes[i].pending) {
                items[n_items] = (zmq_pollitem_t){c->nodes[i].sock, 0, ZMQ_POLLIN, 0};
                who[n_items++] = &c->nodes[i];
            }
        if (!n_items) break;
        double left = deadline - s_now_ms();
        int ready = left > 0 ? zmq_poll(items, n_items, (long)ceil(left)) : 0;
        if (ready <= 0) {
            for (int i = 0; i < n_items; i++) {
                MC_LOGW("node %s (%s) did not answer layer %u within %u ms: computing its experts here until it is "
                        "back",
                        who[i]->cfg->name, who[i]->cfg->endpoint, layer, c->cfg->timeout_ms);
                s_mark_dead(c, who[i]);
                if ((rc = s_fallback(c, who[i], layer, err))) return rc;
            }
            break;
        }
        for (int i = 0; i < n_items; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            mc_wire_msg_t msg;
            if ((rc = s_recv(c, who[i], &msg, err)) == MC_OK) {
                if (msg.request_id == who[i]->req_id) rc = s_take_result(c, who[i], &msg, err);
                mc_wire_msg_free(&msg); // anything else is a stale reply
            }
            if (rc) {
                // A wrong answer is treated like silence: a node restarted
                // within the timeout has lost its placement and refuses the
                // request, and the run must not end for that. The probe
                // hands it its placement again.
                MC_LOGW("%s: computing its experts here until it is back", err);
                s_mark_dead(c, who[i]);
                if ((rc = s_fallback(c, who[i], layer, err))) return rc;
            }
        }
    }

    // Fixed order: local partial sums first, then each node in file order.
    for (size_t i = 0; i < c->n_nodes; i++) {
        const s_node_t *nd = &c->nodes[i];
        for (uint32_t r = 0; r < nd->n_rows; r++) {
            float *o = out + (size_t)nd->row_of[r] * dim;
            const float *p = nd->partial + (size_t)r * dim;
            for (uint32_t d = 0; d < dim; d++) o[d] += p[d];
        }
    }
    return MC_OK;
}

size_t mc_cluster_n_nodes(const mc_cluster_t *c) { return c->n_nodes; }

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void mc_cluster_node_stats(const mc_cluster_t *c, size_t i, mc_cluster_node_stats_t *out) {
    const s_node_t *nd = &c->nodes[i];
    *out = (mc_cluster_node_stats_t){nd->cfg->name, nd->cfg->endpoint, nd->alive, nd->requests, nd->rows,
                                     nd->bytes_sent, nd->bytes_recv, 0, 0, 0, nd->compute_us / 1e3,
                                     nd->deaths, nd->rejoins};
    if (!nd->n_rtt) return;
    double *v = malloc(nd->n_rtt * sizeof *v);
    if (!v) return;
    memcpy(v, nd->rtt, nd->n_rtt * sizeof *v);
    qsort(v, nd->n_rtt, sizeof *v, s_cmp_double);
    double sum = 0;
    for (size_t j = 0; j < nd->n_rtt; j++) sum += v[j];
    out->rtt_mean_ms = sum / nd->n_rtt;
    out->rtt_p50_ms = v[(nd->n_rtt - 1) / 2];
    out->rtt_p99_ms = v[(size_t)((nd->n_rtt - 1) * 0.99)];
    free(v);
}

void mc_cluster_print_stats(const mc_cluster_t *c, const uint64_t *counts, FILE *f) {
    fprintf(f, "%-16s %-28s %5s %6s %9s %9s %11s %11s %9s %9s %9s %11s\n", "node", "endpoint", "alive", "lost",
            "requests", "rows", "sent", "received", "rtt mean", "rtt p50", "rtt p99", "compute");
    for (size_t i = 0; i < c->n_nodes; i++) {
        mc_cluster_node_stats_t s;
        mc_cluster_node_stats(c, i, &s);
        fprintf(f, "%-16s %-28s %5s %6u %9llu %9llu %9.2fMB %9.2fMB %7.2fms %7.2fms %7.2fms %9.1fms\n", s.name,
                s.endpoint, s.alive ? "yes" : "NO", s.deaths, (unsigned long long)s.requests, (unsigned long long)s.rows, s.bytes_sent / 1e6,
                s.bytes_recv / 1e6, s.rtt_mean_ms, s.rtt_p50_ms, s.rtt_p99_ms, s.compute_ms);
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

mc_err_t mc_cluster_write_stats_json(const mc_cluster_t *c, const uint64_t *counts, const char *path, char *err) {
    const mc_hparams_t *hp = &c->m->hp;
    cJSON *root = cJSON_CreateObject(), *nodes = cJSON_AddArrayToObject(root, "nodes");
    cJSON *layers = cJSON_AddArrayToObject(root, "rows_per_expert");
    cJSON_AddStringToObject(root, "wire", mc_wire_enc_name(c->cfg->wire));
    for (size_t i = 0; i < c->n_nodes; i++) {
        mc_cluster_node_stats_t s;
        mc_cluster_node_stats(c, i, &s);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", s.name);
        cJSON_AddStringToObject(o, "endpoint", s.endpoint);
        cJSON_AddBoolToObject(o, "alive", s.alive);
        cJSON_AddNumberToObject(o, "times_lost", s.deaths);
        cJSON_AddNumberToObject(o, "times_back", s.rejoins);
        cJSON_AddNumberToObject(o, "requests", (double)s.requests);
        cJSON_AddNumberToObject(o, "rows", (double)s.rows);
        cJSON_AddNumberToObject(o, "bytes_sent", (double)s.bytes_sent);
        cJSON_AddNumberToObject(o, "bytes_received", (double)s.bytes_recv);
        cJSON_AddNumberToObject(o, "rtt_mean_ms", s.rtt_mean_ms);
        cJSON_AddNumberToObject(o, "rtt_p50_ms", s.rtt_p50_ms);
        cJSON_AddNumberToObject(o, "rtt_p99_ms", s.rtt_p99_ms);
        cJSON_AddNumberToObject(o, "compute_ms", s.compute_ms);
        cJSON_AddItemToArray(nodes, o);
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cJSON *row = cJSON_CreateArray();
        for (uint32_t e = 0; e < hp->n_expert; e++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)counts[(size_t)l * hp->n_expert + e]));
        cJSON_AddItemToArray(layers, row);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    bool ok = f && fputs(txt, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    cJSON_free(txt);
    return ok ? MC_OK : mc_err_set(err, MC_ERR_IO, "%s: cannot write the stats", path);
}
