/*
 * transfer: the thread serving slices to nodes without a model file, its
 * rate cap, and its per-node counters.
 */
#include "transfer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "clock.h"
#include "expert_file.h"
#include "log.h"

#define S_OPEN_MS 1000.0   // FetchOpen this often
#define S_POLL_MS 20
#define S_LOG_MS 5000.0    // a fetching node's progress in the log this often
#define S_IDLE_MS 3000.0   // no request for this long: not fetching
#define S_RATE_WINDOW 2.0  // seconds the rate is measured over

typedef struct {
    char *name;         // owned
    void *sock;
    mc_transfer_stats_t st;
    double last_req, logged, t_start;
    uint64_t start_bytes;          // bytes when this fetch started
    double win_t;                  // the rate's window
    uint64_t win_bytes;
    double opened;                 // FetchOpen last sent (0: never got through)
} s_node_t;

// A node to add (its strings owned) or, with remove, to take away.
typedef struct {
    char *name, *endpoint, *server_key;
    bool remove;
} s_op_t;

struct mc_transfer {
    mc_transfer_params_t p;
    s_node_t *nodes;    // changed by the thread only, under mu (readers of the counters look them up)
    size_t n;
    s_op_t *ops;        // queued by mc_transfer_add/remove (under mu), applied by the thread
    size_t n_ops;
    pthread_t thread;
    bool started;
    atomic_int stop;
    pthread_mutex_t mu; // the counters
    double next_free;   // the rate cap: when the next byte may go (ms)
    uint8_t *buf;       // (MC_WIRE_CHUNK_MAX) a chunk being assembled
};

// Bytes [off, off + n) of the slice of (layer, e): its parts back to back
// (gate, up and down, then their biases where the family has them), as
// slice_index.h hashes them, copied into out.
static void s_slice_copy(const mc_model_t *m, uint32_t layer, uint32_t e, uint64_t off, size_t n, uint8_t *out) {
    for (uint32_t j = 0; j < mc_expert_file_parts(&m->hp) && n; j++) {
        uint64_t len;
        const uint8_t *p = mc_expert_file_part(m, layer, e, j, &len);
        if (off >= len) {
            off -= len;
            continue;
        }
        const size_t k = (size_t)(len - off) < n ? (size_t)(len - off) : n;
        memcpy(out, p + off, k);
        out += k, n -= k, off = 0;
    }
}

static void s_free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

// True when the message went (a node that is gone asks again). The packed
// buffer is handed to ZeroMQ as it is: a chunk is not copied once more.
static bool s_send(void *sock, const mc_wire_msg_t *msg) {
    uint8_t *buf;
    size_t len;
    char err[MC_ERR_LEN];
    if (mc_wire_encode(msg, &buf, &len, err)) return false;
    zmq_msg_t zm;
    if (zmq_msg_init_data(&zm, buf, len, s_free_buf, NULL) != 0) {
        free(buf);
        return false;
    }
    if (zmq_msg_send(&zm, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&zm); // frees buf
        return false;
    }
    return true;
}

// The cap: wait until n more bytes may go.
static void s_pace(mc_transfer_t *t, size_t n) {
    if (t->p.mbps <= 0) return;
    const double now = mc_clock_ms();
    if (t->next_free < now) t->next_free = now;
    const double wait = t->next_free - now;
    t->next_free += (double)n * 8.0 / (t->p.mbps * 1e6) * 1e3;
    if (wait > 0) {
        struct timespec ts = {(time_t)(wait / 1e3), (long)(fmod(wait, 1e3) * 1e6)};
        nanosleep(&ts, NULL);
    }
}

static void s_serve(mc_transfer_t *t, s_node_t *nd, const mc_wire_msg_t *msg) {
    const mc_wire_slice_request_t *q = &msg->u.slice_request;
    const uint64_t bytes = mc_model_expert_bytes(t->p.m, q->layer, q->expert);
    mc_wire_msg_t r = {.request_id = msg->request_id};
    if (q->offset >= bytes || q->length > bytes - q->offset) {
        r.kind = MC_WIRE_MSG_ERROR;
        r.u.error.code = MC_ERR_RANGE;
        snprintf(r.u.error.message, sizeof r.u.error.message,
                 "slice of expert %u of layer %u has %llu bytes: no %u bytes at %llu", q->expert, q->layer,
                 (unsigned long long)bytes, q->length, (unsigned long long)q->offset);
        s_send(nd->sock, &r);
        return;
    }
    const double t_req = mc_clock_ms();
    s_pace(t, q->length);
    s_slice_copy(t->p.m, q->layer, q->expert, q->offset, q->length, t->buf);
    r.kind = MC_WIRE_MSG_SLICE_DATA;
    r.u.slice_data = (mc_wire_slice_data_t){q->layer, q->expert, q->offset, t->buf, q->length};
    s_send(nd->sock, &r);
    const double now = mc_clock_ms();
    pthread_mutex_lock(&t->mu);
    if (!nd->st.active) {
        nd->t_start = nd->win_t = t_req, nd->logged = now;
        nd->start_bytes = nd->st.bytes;
        nd->win_bytes = 0;
        mc_log_status(t->p.log, "moe-coordinator", "node %s is fetching its experts: %.1f MiB", nd->name,
                      (q->length + q->remaining) / 1048576.0);
    }
    nd->st.active = true;
    nd->st.bytes += q->length;
    nd->st.remaining = q->remaining;
    nd->last_req = now;
    nd->win_bytes += q->length;
    if (now - nd->win_t >= S_RATE_WINDOW * 1e3) {
        nd->st.rate = nd->win_bytes / ((now - nd->win_t) / 1e3);
        nd->win_t = now, nd->win_bytes = 0;
    } else if (nd->st.rate == 0 && now > nd->t_start) {
        nd->st.rate = (nd->st.bytes - nd->start_bytes) / ((now - nd->t_start) / 1e3);
    }
    nd->st.eta_s = nd->st.rate > 0 ? nd->st.remaining / nd->st.rate : 0;
    const bool done = q->remaining == 0;
    if (done || now - nd->logged >= S_LOG_MS) {
        const double secs = (now - nd->t_start) / 1e3, sent = (double)(nd->st.bytes - nd->start_bytes);
        if (done)
            mc_log_status(t->p.log, "moe-coordinator", "node %s fetched %.1f MiB of experts in %.1f s (%.1f MiB/s)",
                          nd->name, sent / 1048576.0, secs, sent / 1048576.0 / (secs > 0 ? secs : 1e-9));
        else
            mc_log_status(t->p.log, "moe-coordinator",
                          "node %s fetching its experts: %.1f MiB sent, %.1f MiB to go (%.1f MiB/s, about %.0f s left)",
                          nd->name, sent / 1048576.0, nd->st.remaining / 1048576.0, nd->st.rate / 1048576.0, nd->st.eta_s);
        nd->logged = now;
    }
    if (done) nd->st.active = false, nd->st.rate = 0, nd->st.eta_s = 0;
    pthread_mutex_unlock(&t->mu);
}

// A DEALER to the node's endpoint: only whole connections take messages
// (no FetchOpen piled up for a node that is down); answers are small.
static void *s_socket(const mc_transfer_t *t, const mc_transfer_node_t *nd, char *err) {
    void *s = zmq_socket(t->p.zctx, ZMQ_DEALER);
    int zero = 0, one = 1, ipv6 = 1, timeout = 1000;
    int64_t max_msg = 65536;
    if (!s || zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) || zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout) || zmq_setsockopt(s, ZMQ_IPV6, &ipv6, sizeof ipv6) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) ||
        (nd->server_key && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, nd->server_key, MC_KEY_TEXT) ||
                            zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, t->p.keys->pub, MC_KEY_TEXT) ||
                            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, t->p.keys->sec, MC_KEY_TEXT))) ||
        zmq_connect(s, nd->endpoint)) {
        mc_err_set(err, MC_ERR_NET, "node %s: transfer socket to %s: %s", nd->name, nd->endpoint,
                   zmq_strerror(zmq_errno()));
        if (s) zmq_close(s);
        return NULL;
    }
    return s;
}

static void s_op_free(s_op_t *op) { free(op->name), free(op->endpoint), free(op->server_key); }

// The nodes added and removed since the last pass (on the thread: it owns
// the sockets).
static void s_apply_ops(mc_transfer_t *t) {
    pthread_mutex_lock(&t->mu);
    s_op_t *ops = t->ops;
    size_t n_ops = t->n_ops;
    t->ops = NULL, t->n_ops = 0;
    pthread_mutex_unlock(&t->mu);
    for (size_t k = 0; k < n_ops; k++) {
        s_op_t *op = &ops[k];
        pthread_mutex_lock(&t->mu);
        for (size_t i = 0; i < t->n; i++) {
            if (strcmp(t->nodes[i].name, op->name)) continue;
            zmq_close(t->nodes[i].sock);
            free(t->nodes[i].name);
            t->nodes[i] = t->nodes[--t->n];
            break;
        }
        pthread_mutex_unlock(&t->mu);
        if (!op->remove) {
            char err[MC_ERR_LEN];
            const mc_transfer_node_t nd = {op->name, op->endpoint, op->server_key};
            void *sock = s_socket(t, &nd, err);
            if (!sock) MC_LOGW("%s", err);
            pthread_mutex_lock(&t->mu);
            s_node_t *grown = sock ? realloc(t->nodes, (t->n + 1) * sizeof *grown) : NULL;
            if (grown) {
                t->nodes = grown;
                t->nodes[t->n++] = (s_node_t){.name = op->name, .sock = sock};
                op->name = NULL;
            } else if (sock) {
                zmq_close(sock);
            }
            pthread_mutex_unlock(&t->mu);
        }
        s_op_free(op);
    }
    free(ops);
}

static void *s_main(void *arg) {
    mc_transfer_t *t = arg;
    zmq_pollitem_t *items = NULL;
    size_t n_items = 0;
    double swept = 0;
    while (!atomic_load(&t->stop)) {
        s_apply_ops(t);
        if (n_items < t->n + 1) {
            zmq_pollitem_t *grown = realloc(items, (t->n + 1) * sizeof *items);
            if (!grown) break;
            items = grown, n_items = t->n + 1;
        }
        const double now = mc_clock_ms();
        // Until a node's connection takes it, FetchOpen is tried at every
        // pass; then once a second (a node that restarted hears it again).
        mc_wire_msg_t o = {.kind = MC_WIRE_MSG_FETCH_OPEN, .u.fetch_open = t->p.session};
        for (size_t i = 0; i < t->n; i++)
            if (!t->nodes[i].opened || now - t->nodes[i].opened >= S_OPEN_MS)
                t->nodes[i].opened = s_send(t->nodes[i].sock, &o) ? now : 0;
        if (now - swept >= S_OPEN_MS) {
            swept = now;
            pthread_mutex_lock(&t->mu);
            for (size_t i = 0; i < t->n; i++) // a fetch that stopped (the node restarted, or was placed anew)
                if (t->nodes[i].st.active && now - t->nodes[i].last_req > S_IDLE_MS)
                    t->nodes[i].st.active = false, t->nodes[i].st.rate = 0, t->nodes[i].st.eta_s = 0;
            pthread_mutex_unlock(&t->mu);
        }
        for (size_t i = 0; i < t->n; i++) items[i] = (zmq_pollitem_t){t->nodes[i].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, (int)t->n, S_POLL_MS) <= 0) continue;
        for (size_t i = 0; i < t->n && !atomic_load(&t->stop); i++) {
            for (int budget = 64; budget-- > 0 && !atomic_load(&t->stop);) {
                zmq_msg_t zm;
                zmq_msg_init(&zm);
                if (zmq_msg_recv(&zm, t->nodes[i].sock, ZMQ_DONTWAIT) < 0) {
                    zmq_msg_close(&zm);
                    break;
                }
                mc_wire_msg_t msg;
                char err[MC_ERR_LEN];
                mc_err_t rc = mc_wire_decode(t->p.lim, zmq_msg_data(&zm), zmq_msg_size(&zm), &msg, NULL, err);
                zmq_msg_close(&zm);
                if (rc) {
                    MC_LOGW("node %s's transfer socket: %s", t->nodes[i].name, err);
                    continue;
                }
                if (msg.kind == MC_WIRE_MSG_SLICE_REQUEST) s_serve(t, &t->nodes[i], &msg);
                else if (msg.kind == MC_WIRE_MSG_ERROR) MC_LOGW("node %s (transfer): %s", t->nodes[i].name, msg.u.error.message);
                mc_wire_msg_free(&msg);
            }
        }
    }
    free(items);
    return NULL;
}

mc_transfer_t *mc_transfer_new(const mc_transfer_params_t *p, char *err) {
    mc_transfer_t *t = calloc(1, sizeof *t);
    if (!t) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->p = *p;
    t->p.nodes = NULL;
    t->n = p->n_nodes;
    pthread_mutex_init(&t->mu, NULL);
    t->nodes = calloc(t->n + 1, sizeof *t->nodes);
    t->buf = malloc(MC_WIRE_CHUNK_MAX);
    if (!t->nodes || !t->buf) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        mc_transfer_destroy(&t);
        return NULL;
    }
    for (size_t i = 0; i < t->n; i++) {
        const mc_transfer_node_t *nd = &p->nodes[i];
        t->nodes[i].name = strdup(nd->name);
        if (!t->nodes[i].name || !(t->nodes[i].sock = s_socket(t, nd, err))) {
            if (!t->nodes[i].name) mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            mc_transfer_destroy(&t);
            return NULL;
        }
    }
    if (pthread_create(&t->thread, NULL, s_main, t) != 0) {
        mc_err_set(err, MC_ERR_NOMEM, "cannot start the transfer thread");
        mc_transfer_destroy(&t);
        return NULL;
    }
    t->started = true;
    return t;
}

void mc_transfer_destroy(mc_transfer_t **pt) {
    if (!pt || !*pt) return;
    mc_transfer_t *t = *pt;
    atomic_store(&t->stop, 1);
    if (t->started) pthread_join(t->thread, NULL);
    for (size_t i = 0; t->nodes && i < t->n; i++) {
        if (t->nodes[i].sock) zmq_close(t->nodes[i].sock);
        free(t->nodes[i].name);
    }
    for (size_t k = 0; k < t->n_ops; k++) s_op_free(&t->ops[k]);
    free(t->ops);
    free(t->nodes), free(t->buf);
    pthread_mutex_destroy(&t->mu);
    free(t);
    *pt = NULL;
}

bool mc_transfer_stats(mc_transfer_t *t, const char *name, mc_transfer_stats_t *out) {
    bool found = false;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n && !found; i++)
        if (!strcmp(t->nodes[i].name, name)) *out = t->nodes[i].st, found = true;
    pthread_mutex_unlock(&t->mu);
    if (!found) memset(out, 0, sizeof *out);
    return found;
}

static mc_err_t s_queue(mc_transfer_t *t, const mc_transfer_node_t *nd, bool remove, char *err) {
    s_op_t op = {strdup(nd->name), nd->endpoint ? strdup(nd->endpoint) : NULL,
                 nd->server_key ? strdup(nd->server_key) : NULL, remove};
    pthread_mutex_lock(&t->mu);
    s_op_t *grown = op.name && (remove || op.endpoint) && (!nd->server_key || op.server_key)
                        ? realloc(t->ops, (t->n_ops + 1) * sizeof *grown)
                        : NULL;
    if (grown) t->ops = grown, t->ops[t->n_ops++] = op;
    pthread_mutex_unlock(&t->mu);
    if (grown) return MC_OK;
    s_op_free(&op);
    return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
}

mc_err_t mc_transfer_add(mc_transfer_t *t, const mc_transfer_node_t *nd, char *err) { return s_queue(t, nd, false, err); }

void mc_transfer_remove(mc_transfer_t *t, const char *name) {
    const mc_transfer_node_t nd = {name, NULL, NULL};
    (void)s_queue(t, &nd, true, NULL);
}
