/*
 * link: socket set-up, handshake, request/answer bookkeeping, heartbeats and
 * the probe that brings a lost node back.
 */
#include "link.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "log.h"

const double mc_link_rtt_bounds[MC_LINK_RTT_BUCKETS] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000};

// How far a lost node is on its way back (see mc_link_tick).
typedef enum { S_PROBE_IDLE, S_PROBE_HELLO, S_PROBE_ASSIGN } s_probe_t;

struct mc_link {
    mc_link_params_t p;
    void *zctx, *sock;
    bool alive;
    uint64_t next_id;
    // The one request in flight.
    bool pending;
    uint64_t pending_id;
    uint32_t pending_rows;
    double t_sent;
    // Liveness between requests.
    double last_heard, last_sent; // ms, mc_clock_ms
    bool hb_pending;
    double hb_sent;
    // While lost: the probe.
    s_probe_t probe;
    uint64_t probe_id;
    double probe_until; // when the probe in flight is given up
    double retry_at;    // when the next probe may start
    bool warned;        // why a probe failed was logged (once per loss)
    mc_link_stats_t st;
};

// --- sending and receiving -----------------------------------------------------

static mc_err_t s_send(mc_link_t *l, const mc_wire_msg_t *msg, char *err) {
    uint8_t *buf;
    size_t len;
    mc_err_t rc = mc_wire_encode(msg, &buf, &len, err);
    if (rc) return rc;
    int n = zmq_send(l->sock, buf, len, 0);
    free(buf);
    if (n < 0)
        return mc_err_set(err, MC_ERR_NET, "node %s (%s): send failed: %s", l->p.name, l->p.endpoint,
                          zmq_strerror(zmq_errno()));
    l->st.bytes_sent += len;
    l->last_sent = mc_clock_ms();
    return MC_OK;
}

// One queued message, decoded; MC_ERR_TIMEOUT when none is queued.
static mc_err_t s_recv(mc_link_t *l, mc_wire_msg_t *msg, char *err) {
    zmq_msg_t zm;
    zmq_msg_init(&zm);
    if (zmq_msg_recv(&zm, l->sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&zm);
        if (e == EAGAIN) return MC_ERR_TIMEOUT;
        return mc_err_set(err, MC_ERR_NET, "node %s: receive failed: %s", l->p.name, zmq_strerror(e));
    }
    l->st.bytes_recv += zmq_msg_size(&zm);
    l->last_heard = mc_clock_ms();
    char sub[MC_ERR_LEN];
    mc_err_t rc = mc_wire_decode(l->p.lim, zmq_msg_data(&zm), zmq_msg_size(&zm), msg, NULL, sub);
    zmq_msg_close(&zm);
    if (rc) return mc_err_set(err, rc, "node %s sent a bad message: %s", l->p.name, sub);
    return MC_OK;
}

// What a node's ErrorReply says, without the "node NAME: " it leads with
// when NAME is ours for it: our own message names the node already.
static const char *s_node_said(const mc_link_t *l, const char *msg) {
    const size_t n = strlen(l->p.name);
    if (!strncmp(msg, "node ", 5) && !strncmp(msg + 5, l->p.name, n) && !strncmp(msg + 5 + n, ": ", 2))
        return msg + 5 + n + 2;
    return msg;
}

// Wait up to timeout_ms for the answer to request id (what: for messages).
// An ErrorReply is returned as an error.
static mc_err_t s_await(mc_link_t *l, uint64_t id, const char *what, mc_wire_msg_t *msg, char *err) {
    const double deadline = mc_clock_ms() + l->p.timeout_ms;
    for (;;) {
        mc_err_t rc = s_recv(l, msg, err);
        if (rc == MC_OK && msg->request_id == id) break;
        if (rc == MC_OK) {
            mc_wire_msg_free(msg); // a heartbeat's answer or a stale reply
            continue;
        }
        if (rc != MC_ERR_TIMEOUT) return rc;
        const double left = deadline - mc_clock_ms();
        zmq_pollitem_t it = {l->sock, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&it, 1, (long)ceil(left)) == 0)
            return mc_err_set(err, MC_ERR_TIMEOUT, "node %s (%s) did not answer the %s within %u ms", l->p.name,
                              l->p.endpoint, what, l->p.timeout_ms);
    }
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the %s: %s", l->p.name, l->p.endpoint, what,
                   s_node_said(l, msg->u.error.message));
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    return MC_OK;
}

// A fresh DEALER socket, replacing any old one (and with it any reply still
// on its way to the old one).
static mc_err_t s_open(mc_link_t *l, char *err) {
    if (l->sock) zmq_close(l->sock);
    l->sock = zmq_socket(l->zctx, ZMQ_DEALER);
    if (!l->sock) return mc_err_set(err, MC_ERR_NET, "node %s: no socket: %s", l->p.name, zmq_strerror(zmq_errno()));
    int zero = 0, timeout = (int)l->p.timeout_ms;
    int64_t max_msg = mc_wire_max_msg_bytes(l->p.lim);
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(l->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(l->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (l->p.server_key &&
        (zmq_setsockopt(l->sock, ZMQ_CURVE_SERVERKEY, l->p.server_key, MC_KEY_TEXT) ||
         zmq_setsockopt(l->sock, ZMQ_CURVE_PUBLICKEY, l->p.keys->pub, MC_KEY_TEXT) ||
         zmq_setsockopt(l->sock, ZMQ_CURVE_SECRETKEY, l->p.keys->sec, MC_KEY_TEXT)))
        return mc_err_set(err, MC_ERR_NET, "node %s: CURVE options: %s", l->p.name, zmq_strerror(zmq_errno()));
    if (zmq_connect(l->sock, l->p.endpoint) != 0)
        return mc_err_set(err, MC_ERR_NET, "node %s: cannot connect to %s: %s", l->p.name, l->p.endpoint,
                          zmq_strerror(zmq_errno()));
    l->pending = l->hb_pending = false;
    return MC_OK;
}

// --- handshake ----------------------------------------------------------------------

static mc_err_t s_send_hello(mc_link_t *l, uint64_t *id, char *err) {
    mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_HELLO, .request_id = ++l->next_id};
    msg.u.hello.version = MC_WIRE_VERSION;
    msg.u.hello.fingerprint = l->p.fingerprint;
    msg.u.hello.session_id = l->p.session;
    snprintf(msg.u.hello.name, sizeof msg.u.hello.name, "%s", l->p.self);
    *id = msg.request_id;
    return s_send(l, &msg, err);
}

static mc_err_t s_send_assign(mc_link_t *l, const uint8_t *held, uint64_t *id, char *err) {
    // The hashes of the held pairs, in the order the placement lists them.
    const size_t cells = (size_t)l->p.lim->n_layer * l->p.lim->n_expert;
    uint8_t *hashes = malloc(cells * MC_WIRE_HASH_BYTES + 1);
    if (!hashes) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0, n = 0; i < cells; i++)
        if (held[i]) memcpy(hashes + n++ * MC_WIRE_HASH_BYTES, l->p.hashes + i * MC_WIRE_HASH_BYTES, MC_WIRE_HASH_BYTES);
    mc_wire_msg_t as = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = ++l->next_id};
    as.u.assign = (mc_wire_assign_t){l->p.session, l->p.lim->n_layer, l->p.lim->n_expert, (uint8_t *)held, hashes};
    *id = as.request_id;
    mc_err_t rc = s_send(l, &as, err);
    free(hashes);
    return rc;
}

// The node's answer to our Hello (freed here): same protocol, same model.
static mc_err_t s_check_hello(mc_link_t *l, mc_wire_msg_t *msg, char *err) {
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the handshake: %s", l->p.name, l->p.endpoint,
                   s_node_said(l, msg->u.error.message));
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    bool ok = msg->kind == MC_WIRE_MSG_HELLO;
    uint32_t version = msg->u.hello.version;
    uint64_t fp = msg->u.hello.fingerprint;
    mc_wire_msg_free(msg);
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the handshake with something else", l->p.name);
    if (version != MC_WIRE_VERSION)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "node %s (%s) speaks protocol version %u, we speak %u", l->p.name,
                          l->p.endpoint, version, MC_WIRE_VERSION);
    if (fp != l->p.fingerprint)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "node %s (%s) serves another model (fingerprint %016llx, ours %016llx): start it with the "
                          "same GGUF file",
                          l->p.name, l->p.endpoint, (unsigned long long)fp, (unsigned long long)l->p.fingerprint);
    return MC_OK;
}

// The node's answer to its placement (freed here); how: "ready", "is back".
static mc_err_t s_check_ready(mc_link_t *l, mc_wire_msg_t *msg, const char *how, char *err) {
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the placement: %s", l->p.name, l->p.endpoint,
                   s_node_said(l, msg->u.error.message));
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    bool ok = msg->kind == MC_WIRE_MSG_READY;
    mc_wire_ready_t ready = msg->u.ready;
    mc_wire_msg_free(msg);
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the placement with something else", l->p.name);
    mc_log_status(l->p.log, "moe-coordinator", "node %s (%s) %s: %u (layer, expert) pairs, resident memory %.1f MiB",
                  l->p.name, l->p.endpoint, how, ready.n_pairs, ready.resident_bytes / 1048576.0);
    return MC_OK;
}

static void s_set_alive(mc_link_t *l) {
    l->alive = true;
    l->probe = S_PROBE_IDLE;
    l->last_heard = mc_clock_ms();
    l->hb_pending = false;
}

// --- lifetime -------------------------------------------------------------------------

mc_link_t *mc_link_new(void *zctx, const mc_link_params_t *p, char *err) {
    mc_link_t *l = calloc(1, sizeof *l);
    if (!l) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    l->p = *p;
    l->zctx = zctx;
    if (s_open(l, err)) mc_link_destroy(&l);
    return l;
}

void mc_link_destroy(mc_link_t **pl) {
    if (!pl || !*pl) return;
    if ((*pl)->sock) zmq_close((*pl)->sock);
    free(*pl);
    *pl = NULL;
}

mc_err_t mc_link_connect(mc_link_t *l, const uint8_t *held, char *err) {
    mc_wire_msg_t msg;
    uint64_t id;
    mc_err_t rc;
    if ((rc = s_send_hello(l, &id, err)) || (rc = s_await(l, id, "handshake", &msg, err)) ||
        (rc = s_check_hello(l, &msg, err)))
        return rc;
    if ((rc = s_send_assign(l, held, &id, err)) || (rc = s_await(l, id, "placement", &msg, err)) ||
        (rc = s_check_ready(l, &msg, "ready", err)))
        return rc;
    s_set_alive(l);
    return MC_OK;
}

mc_err_t mc_link_place(mc_link_t *l, const uint8_t *held, char *err) {
    mc_wire_msg_t msg;
    uint64_t id;
    mc_err_t rc;
    if ((rc = s_send_assign(l, held, &id, err)) || (rc = s_await(l, id, "new placement", &msg, err)) ||
        (rc = s_check_ready(l, &msg, "placed anew", err))) {
        mc_link_lose(l, err);
        return rc;
    }
    return MC_OK;
}

bool mc_link_alive(const mc_link_t *l) { return l->alive; }
const char *mc_link_name(const mc_link_t *l) { return l->p.name; }
const char *mc_link_endpoint(const mc_link_t *l) { return l->p.endpoint; }
void *mc_link_socket(mc_link_t *l) { return l->sock; }
const mc_link_stats_t *mc_link_stats(const mc_link_t *l) { return &l->st; }
void mc_link_add_compute(mc_link_t *l, uint64_t us) { l->st.compute_us += us; }
double mc_link_waited_ms(const mc_link_t *l) { return mc_clock_ms() - l->t_sent; }

// --- requests -------------------------------------------------------------------------

mc_err_t mc_link_request(mc_link_t *l, mc_wire_msg_t *msg, uint32_t rows, char *err) {
    msg->request_id = ++l->next_id;
    l->st.requests++;
    l->st.rows += rows;
    mc_err_t rc = s_send(l, msg, err);
    if (rc) return rc;
    l->pending = true;
    l->pending_id = msg->request_id;
    l->pending_rows = rows;
    l->t_sent = l->last_sent;
    return MC_OK;
}

static void s_rtt_add(mc_link_t *l, double ms) {
    size_t b = 0;
    while (b < MC_LINK_RTT_BUCKETS && ms > mc_link_rtt_bounds[b]) b++;
    l->st.rtt_hist[b]++;
    l->st.rtt_ring[l->st.rtt_count % MC_LINK_RTT_RING] = ms;
    l->st.rtt_count++;
    l->st.rtt_sum_ms += ms;
}

mc_err_t mc_link_receive(mc_link_t *l, mc_wire_msg_t *msg, bool *got, char *err) {
    *got = false;
    for (;;) {
        mc_err_t rc = s_recv(l, msg, err);
        if (rc == MC_ERR_TIMEOUT) return MC_OK;
        if (rc) return rc;
        if (l->pending && msg->request_id == l->pending_id) {
            l->pending = false;
            s_rtt_add(l, mc_clock_ms() - l->t_sent);
            *got = true;
            return MC_OK;
        }
        mc_wire_msg_free(msg);
    }
}

void mc_link_lose(mc_link_t *l, const char *why) {
    if (!l->alive) return;
    l->alive = false;
    l->pending = l->hb_pending = false;
    l->st.deaths++;
    l->probe = S_PROBE_IDLE;
    l->warned = false;
    l->retry_at = mc_clock_ms() + l->p.retry_ms;
    MC_LOGW("%s: computing its experts here until it is back", why);
}

static void s_probe_failed(mc_link_t *l, const char *why) {
    // A node that is still unplugged times out every retry: say nothing. A
    // node that answers wrongly (another model, a placement it refuses) is
    // worth one line per loss.
    if (why && !l->warned) {
        MC_LOGW("%s", why);
        l->warned = true;
    }
    l->probe = S_PROBE_IDLE;
    l->retry_at = mc_clock_ms() + l->p.retry_ms;
}

// One step of a lost node's way back: every retry_ms a fresh connection says
// hello; a node that answers with our protocol version and model gets its
// placement again (the same session, so a node that still holds it agrees
// at once) and takes work from the first layer after its Ready arrives.
static void s_probe(mc_link_t *l, const uint8_t *held) {
    char err[MC_ERR_LEN];
    const double now = mc_clock_ms();
    if (l->probe == S_PROBE_IDLE) {
        if (!l->p.retry_ms || now < l->retry_at) return;
        if (s_open(l, err) || s_send_hello(l, &l->probe_id, err)) {
            s_probe_failed(l, err);
            return;
        }
        l->probe = S_PROBE_HELLO;
        l->probe_until = now + l->p.timeout_ms;
        return;
    }
    for (;;) {
        mc_wire_msg_t msg;
        mc_err_t rc = s_recv(l, &msg, err);
        if (rc == MC_ERR_TIMEOUT) break;
        if (rc) {
            s_probe_failed(l, err);
            return;
        }
        if (msg.request_id != l->probe_id) {
            mc_wire_msg_free(&msg);
            continue;
        }
        if (l->probe == S_PROBE_HELLO) {
            if (s_check_hello(l, &msg, err) || s_send_assign(l, held, &l->probe_id, err)) {
                s_probe_failed(l, err);
                return;
            }
            l->probe = S_PROBE_ASSIGN;
            l->probe_until = mc_clock_ms() + l->p.timeout_ms;
            continue;
        }
        if (s_check_ready(l, &msg, "is back", err)) {
            s_probe_failed(l, err);
            return;
        }
        s_set_alive(l);
        l->st.rejoins++;
        return;
    }
    if (now > l->probe_until) s_probe_failed(l, NULL);
}

void mc_link_tick(mc_link_t *l, const uint8_t *held) {
    if (!l->alive) {
        s_probe(l, held);
        return;
    }
    if (l->pending) return; // the request's own wait covers it
    char err[MC_ERR_LEN];
    for (;;) { // drain: heartbeat answers, stale replies
        mc_wire_msg_t msg;
        mc_err_t rc = s_recv(l, &msg, err);
        if (rc == MC_ERR_TIMEOUT) break;
        if (rc) {
            mc_link_lose(l, err);
            return;
        }
        mc_wire_msg_free(&msg);
    }
    const double now = mc_clock_ms();
    if (l->hb_pending && l->last_heard >= l->hb_sent) l->hb_pending = false;
    if (l->hb_pending && now - l->hb_sent > l->p.timeout_ms) {
        snprintf(err, sizeof err, "node %s (%s) did not answer a heartbeat within %u ms", l->p.name, l->p.endpoint,
                 l->p.timeout_ms);
        mc_link_lose(l, err);
        return;
    }
    if (!l->hb_pending && l->p.heartbeat_ms && now - l->last_sent >= l->p.heartbeat_ms) {
        mc_wire_msg_t hb = {.kind = MC_WIRE_MSG_HEARTBEAT, .request_id = ++l->next_id};
        hb.u.heartbeat = hb.request_id;
        if (s_send(l, &hb, err)) {
            mc_link_lose(l, err);
            return;
        }
        l->hb_pending = true;
        l->hb_sent = l->last_sent;
    }
}
