/*
 * link: socket set-up, handshake (with the node's loading progress),
 * request/answer bookkeeping, transport and application heartbeats, the
 * slow-answer bench, and the probe that brings a lost node back.
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

// Answers before a node's usual time is trusted for the slow limit.
#define S_HISTORY 8
// A slow answer is one over this many times the usual time (and over slow_ms).
#define S_SLOW_FACTOR 4.0
// Bench times: the first, the cap, and the run of normal answers that
// resets it to the first.
#define S_BENCH_FIRST_MS 1000.0
#define S_BENCH_MAX_MS 60000.0
#define S_BENCH_RESET 32
// A loading node's progress is logged at most this often.
#define S_PROGRESS_LOG_MS 5000.0
// A node leased to another coordinator is asked again this soon while we start.
#define S_BUSY_RETRY_MS 250.0
// How long a Release may take to leave before the socket closes.
#define S_RELEASE_LINGER_MS 250

// How far a joining or lost node is on its way in (see mc_link_tick).
typedef enum { S_PROBE_IDLE, S_PROBE_HELLO, S_PROBE_INFO, S_PROBE_ASSIGN } s_probe_t;

// A request in flight.
typedef struct {
    uint64_t id;
    uint32_t rows;
    double t_sent; // when its clock started (s_pending_drop)
} s_pend_t;

struct mc_link {
    mc_link_params_t p;
    void *zctx, *sock, *mon;
    unsigned mon_gen; // monitor endpoints are unique per socket opened
    bool alive;
    bool ever_alive; // "ready" the first time, "is back" after
    uint64_t next_id;
    // The requests in flight, in the order sent (the node answers in it):
    // id, rows and when its clock started (s_pending_drop).
    s_pend_t pend[MC_LINK_MAX_PENDING];
    uint32_t n_pending;
    double last_rtt_ms; // of the answer just taken, for mc_link_add_compute
    uint32_t last_rows;
    // The node's usual time: moving averages over its answers.
    uint64_t n_answers;
    double over_ms;    // round trip minus the node's compute
    double row_ms;     // the node's compute per row
    // The slow-answer bench.
    double bench_until, bench_ms;
    uint32_t good_run;
    // Liveness between requests.
    double last_heard, last_sent; // ms, mc_clock_ms
    bool hb_pending;
    double hb_sent;
    // Handshakes: the probe while joining or lost.
    s_probe_t probe;
    uint64_t probe_id;
    double probe_until;  // when the probe in flight is given up
    double load_started; // when its placement was sent
    double load_logged;
    double retry_at;     // when the next probe may start
    double start_until;  // mc_link_start's window: a busy node is asked again within it
    bool settled;        // the latest probe ended (alive or failed)
    bool warned;         // why a probe failed was logged (once per loss)
    bool absent_said;    // "did not answer: computing its experts here" was logged
    bool name_said;      // a node answering under another name was logged
    char refusal[MC_ERR_LEN]; // "" or why the node refused (mc_link_refusal)
    char hs_why[MC_ERR_LEN];  // "" or why the transport handshake failed (monitor)
    bool hs_ok;               // the current socket completed a transport handshake
    bool dropped;             // the current socket's connection closed (a probe then ends at once)
    // Placements: the last one sent, the last one the node answered Ready
    // to (placed_ok: there is one), and a staged one in flight (mc_link_stage).
    uint8_t *sent, *placed;
    bool placed_ok;
    uint64_t stage_id;
    mc_link_stage_t stage;
    char stage_why[MC_ERR_LEN];
    mc_link_stats_t st;
};

// --- sockets ----------------------------------------------------------------------

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

static void s_close(mc_link_t *l) {
    if (l->sock && l->mon) zmq_socket_monitor(l->sock, NULL, 0);
    if (l->mon) zmq_close(l->mon);
    if (l->sock) zmq_close(l->sock);
    l->mon = l->sock = NULL;
}

// The monitor of a fresh socket: connections dropped and handshakes failed
// are what tell a dead node or a key mistake from a slow one.
static mc_err_t s_monitor(mc_link_t *l, char *err) {
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://mc-link-monitor-%p-%u", (void *)l, ++l->mon_gen);
    const int events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int zero = 0;
    if (zmq_socket_monitor(l->sock, ep, events) != 0 || !(l->mon = zmq_socket(l->zctx, ZMQ_PAIR)) ||
        zmq_setsockopt(l->mon, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_connect(l->mon, ep) != 0)
        return mc_err_set(err, MC_ERR_NET, "node %s: socket monitor: %s", l->p.name, zmq_strerror(zmq_errno()));
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

// A fresh DEALER socket, replacing any old one (and with it any reply still
// on its way to the old one).
static mc_err_t s_open(mc_link_t *l, char *err) {
    s_close(l);
    l->hs_ok = false;
    l->dropped = false;
    l->hs_why[0] = 0;
    l->sock = zmq_socket(l->zctx, ZMQ_DEALER);
    if (!l->sock) return mc_err_set(err, MC_ERR_NET, "node %s: no socket: %s", l->p.name, zmq_strerror(zmq_errno()));
    int zero = 0, timeout = (int)l->p.timeout_ms;
    int64_t max_msg = mc_wire_max_msg_bytes(l->p.lim);
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(l->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(l->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (l->p.dead_ms) {
        // PINGs four times per dead_ms; silence (no message, not even the
        // node's own PINGs, which its I/O thread sends while the node
        // computes or receives a long request) for dead_ms drops the
        // connection, which the monitor reports.
        int ivl = (int)l->p.dead_ms / 4, dead = (int)l->p.dead_ms;
        zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_TIMEOUT, &dead, sizeof dead);
    }
    // IPv6 nodes ([::1], names with IPv6 addresses) need ZMQ_IPV6; IPv4
    // ones are reached as before (ZeroMQ falls back to IPv4 sockets on a
    // machine without IPv6).
    int ipv6 = 1;
    zmq_setsockopt(l->sock, ZMQ_IPV6, &ipv6, sizeof ipv6);
    if (l->p.server_key &&
        (zmq_setsockopt(l->sock, ZMQ_CURVE_SERVERKEY, l->p.server_key, MC_KEY_TEXT) ||
         zmq_setsockopt(l->sock, ZMQ_CURVE_PUBLICKEY, l->p.keys->pub, MC_KEY_TEXT) ||
         zmq_setsockopt(l->sock, ZMQ_CURVE_SECRETKEY, l->p.keys->sec, MC_KEY_TEXT)))
        return mc_err_set(err, MC_ERR_NET, "node %s: CURVE options: %s", l->p.name, zmq_strerror(zmq_errno()));
    mc_err_t rc = s_monitor(l, err);
    if (rc) return rc;
    if (zmq_connect(l->sock, l->p.endpoint) != 0)
        return mc_err_set(err, MC_ERR_NET, "node %s: cannot connect to %s: %s", l->p.name, l->p.endpoint,
                          zmq_strerror(zmq_errno()));
    l->n_pending = 0, l->hb_pending = false;
    return MC_OK;
}

// What a failed transport handshake means for the operator.
static void s_handshake_failed(mc_link_t *l, uint16_t event, uint32_t value) {
    const char *name = l->p.name, *ep = l->p.endpoint;
    char *w = l->hs_why;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        snprintf(w, MC_ERR_LEN,
                 "node %s (%s) refused our key (ZAP status %u): add the coordinator's public key (the .pub of the "
                 "cluster file's secret_key) to the node's --authorized-keys file",
                 name, ep, value);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        snprintf(w, MC_ERR_LEN,
                 l->p.server_key ? "node %s (%s) does not speak CURVE, but the cluster file gives it a public_key: start "
                                   "it with --secret-key and --authorized-keys, or remove the public_key"
                                 : "node %s (%s) requires CURVE keys: give it a public_key (its .pub) in the cluster "
                                   "file and the coordinator a secret_key",
                 name, ep);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        snprintf(w, MC_ERR_LEN,
                 "node %s (%s) failed the %s handshake (ZeroMQ protocol error 0x%x)%s", name, ep,
                 l->p.server_key ? "CURVE" : "ZeroMQ", value,
                 l->p.server_key ? ": check that its public_key in the cluster file is that node's .pub" : "");
    else
        snprintf(w, MC_ERR_LEN, "node %s (%s) failed the %s handshake%s", name, ep, l->p.server_key ? "CURVE" : "ZeroMQ",
                 l->p.server_key ? ": check that its public_key in the cluster file is that node's .pub and that it "
                                   "authorizes our key"
                                 : ": if it runs with --secret-key it requires CURVE keys: give it a public_key (its "
                                   ".pub) in the cluster file and the coordinator a secret_key");
}

void mc_link_events(mc_link_t *l) {
    for (;;) {
        zmq_msg_t head, addr;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, l->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return;
        }
        // Two frames: 2 bytes of event, 4 of value; then the endpoint.
        zmq_msg_init(&addr);
        if (zmq_msg_more(&head)) zmq_msg_recv(&addr, l->mon, 0);
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&head) >= 6) {
            memcpy(&event, zmq_msg_data(&head), 2);
            memcpy(&value, (const uint8_t *)zmq_msg_data(&head) + 2, 4);
        }
        zmq_msg_close(&head);
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            l->hs_ok = true;
            l->hs_why[0] = 0;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            // Before a handshake succeeded: the node closed it on us, which
            // a CURVE server does with a key it cannot use.
            if (!l->hs_ok && l->p.server_key && !l->hs_why[0])
                s_handshake_failed(l, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0);
            l->hs_ok = false;
            l->dropped = true;
            if (l->alive) {
                char why[MC_ERR_LEN];
                snprintf(why, sizeof why, "node %s (%s): connection lost (closed, or silent for %u ms)", l->p.name,
                         l->p.endpoint, l->p.dead_ms);
                mc_link_lose(l, why);
            }
        } else if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
            s_handshake_failed(l, event, value);
        }
    }
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
    uint8_t *types = NULL;
    if (l->p.types && (types = malloc(cells * 3 + 1)))
        for (size_t i = 0, n = 0; i < cells; i++)
            if (held[i]) memcpy(types + 3 * n++, l->p.types + 3 * i, 3);
    mc_wire_msg_t as = {.kind = MC_WIRE_MSG_ASSIGN, .request_id = ++l->next_id};
    as.u.assign = (mc_wire_assign_t){l->p.session, l->p.lim->n_layer, l->p.lim->n_expert, (uint8_t *)held, hashes, types};
    *id = as.request_id;
    mc_err_t rc = s_send(l, &as, err);
    if (rc == MC_OK) {
        l->load_started = l->load_logged = mc_clock_ms();
        memcpy(l->sent, held, cells);
    }
    free(hashes), free(types);
    return rc;
}

static mc_err_t s_send_info(mc_link_t *l, uint64_t *id, char *err) {
    mc_wire_msg_t msg = {.kind = MC_WIRE_MSG_MODEL_INFO, .request_id = ++l->next_id};
    msg.u.model_info = (mc_wire_model_info_t){l->p.fingerprint, l->p.model_info, l->p.model_info_len};
    *id = msg.request_id;
    return s_send(l, &msg, err);
}

// The node's answer to our Hello (freed here): same protocol, same model.
// Every failure here is a refusal waiting will not mend.
static mc_err_t s_check_hello(mc_link_t *l, mc_wire_msg_t *msg, bool *needs_info, char *err) {
    *needs_info = false;
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        mc_err_set(err, MC_ERR_NET, "node %s (%s) refused the handshake: %s", l->p.name, l->p.endpoint,
                   s_node_said(l, msg->u.error.message));
        mc_wire_msg_free(msg);
        return MC_ERR_NET;
    }
    bool ok = msg->kind == MC_WIRE_MSG_HELLO;
    uint32_t version = msg->u.hello.version;
    uint64_t fp = msg->u.hello.fingerprint;
    const bool cache = ok && msg->u.hello.cache;
    char name[MC_WIRE_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s", ok ? msg->u.hello.name : "");
    mc_wire_msg_free(msg);
    // Names are not enforced (a node without --name reports its host name),
    // but two endpoints swapped in the cluster file show up here.
    if (ok && strcmp(name, l->p.name) && !l->name_said) {
        mc_log_status(l->p.log, "moe-coordinator",
                      "warning: the cluster file's node %s at %s calls itself '%s': check the endpoint (or start the "
                      "node with --name %s)",
                      l->p.name, l->p.endpoint, name, l->p.name);
        l->name_said = true;
    }
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the handshake with something else", l->p.name);
    if (version != MC_WIRE_VERSION)
        return mc_err_set(err, MC_ERR_UNSUPPORTED, "node %s (%s) speaks protocol version %u, we speak %u", l->p.name,
                          l->p.endpoint, version, MC_WIRE_VERSION);
    if (fp != l->p.fingerprint && cache && l->p.model_info) {
        *needs_info = true; // a node without a model file, that holds none of ours yet
        return MC_OK;
    }
    if (fp != l->p.fingerprint)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "node %s (%s) serves another model (fingerprint %016llx, ours %016llx): start it with the "
                          "same GGUF file",
                          l->p.name, l->p.endpoint, (unsigned long long)fp, (unsigned long long)l->p.fingerprint);
    return MC_OK;
}

// The node's answer to its placement (freed here); how: "ready", "is back".
// A refusal keeps the node's code (checked by mc_wire_decode): MC_ERR_BUSY
// when it is leased to another coordinator, else why it cannot serve it.
static mc_err_t s_check_ready(mc_link_t *l, mc_wire_msg_t *msg, const char *how, char *err) {
    if (msg->kind == MC_WIRE_MSG_ERROR) {
        const mc_err_t code = msg->u.error.code;
        mc_err_set(err, code, "node %s (%s) refused the placement: %s", l->p.name, l->p.endpoint,
                   s_node_said(l, msg->u.error.message));
        mc_wire_msg_free(msg);
        return code;
    }
    bool ok = msg->kind == MC_WIRE_MSG_READY;
    mc_wire_ready_t ready = msg->u.ready;
    mc_wire_msg_free(msg);
    if (!ok) return mc_err_set(err, MC_ERR_NET, "node %s answered the placement with something else", l->p.name);
    mc_log_status(l->p.log, "moe-coordinator",
                  "node %s (%s) %s: %u (layer, expert) pairs, resident memory %.1f MiB, loaded in %.1f s", l->p.name,
                  l->p.endpoint, how, ready.n_pairs, ready.resident_bytes / 1048576.0,
                  (mc_clock_ms() - l->load_started) / 1e3);
    return MC_OK;
}

// A Progress answer to the placement in flight: the wait starts again
// (within load_timeout_ms when set). False when loading has taken too long.
static bool s_progress(mc_link_t *l, const mc_wire_msg_t *msg, double *until) {
    const double now = mc_clock_ms();
    l->st.load_done = msg->u.progress.done_bytes;
    l->st.load_total = msg->u.progress.total_bytes;
    l->st.fetch_done = msg->u.progress.fetch_done;
    l->st.fetch_total = msg->u.progress.fetch_total;
    if (now - l->load_logged >= S_PROGRESS_LOG_MS) {
        const double secs = (now - l->load_started) / 1e3, done = (double)l->st.load_done;
        const double rate = secs > 0 ? done / secs : 0, left = (double)l->st.load_total - done;
        mc_log_status(l->p.log, "moe-coordinator", "node %s %s its experts: %.1f of %.1f MiB (%.0f MiB/s, about %.0f s left)",
                      l->p.name, l->st.fetch_total ? "fetching" : "loading", done / 1048576.0,
                      l->st.load_total / 1048576.0, rate / 1048576.0, rate > 0 ? left / rate : 0.0);
        l->load_logged = now;
    }
    *until = now + l->p.timeout_ms;
    if (l->p.load_timeout_ms) {
        const double cap = l->load_started + l->p.load_timeout_ms;
        if (*until > cap) *until = cap;
    }
    return now <= *until;
}

static void s_set_alive(mc_link_t *l) {
    memcpy(l->placed, l->sent, (size_t)l->p.lim->n_layer * l->p.lim->n_expert);
    l->placed_ok = true;
    l->stage = MC_LINK_STAGE_NONE;
    l->alive = true;
    l->probe = S_PROBE_IDLE;
    l->settled = true;
    l->refusal[0] = 0;
    l->last_heard = mc_clock_ms();
    l->hb_pending = false;
    l->st.load_done = l->st.load_total = l->st.fetch_done = l->st.fetch_total = 0;
    if (l->ever_alive) l->st.rejoins++;
    l->ever_alive = true;
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
    l->bench_ms = S_BENCH_FIRST_MS;
    const size_t cells = (size_t)p->lim->n_layer * p->lim->n_expert;
    if (!(l->sent = calloc(cells + 1, 1)) || !(l->placed = calloc(cells + 1, 1))) {
        free(l->sent), free(l->placed), free(l);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    l->retry_at = INFINITY; // probes start with mc_link_start
    if (s_open(l, err)) mc_link_destroy(&l);
    return l;
}

void mc_link_destroy(mc_link_t **pl) {
    if (!pl || !*pl) return;
    mc_link_t *l = *pl;
    // Alive, or given its placement and still loading or fetching it (the
    // node took the lease with the placement): either way it is ours to
    // release.
    if (l->sock && (l->alive || l->probe == S_PROBE_ASSIGN)) {
        // Best effort: the node's lease ends now instead of a lease later.
        int linger = S_RELEASE_LINGER_MS;
        zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
        mc_wire_msg_t rel = {.kind = MC_WIRE_MSG_RELEASE, .request_id = ++l->next_id};
        rel.u.release = l->p.session;
        char err[MC_ERR_LEN];
        (void)s_send(l, &rel, err);
    }
    s_close(l);
    free(l->sent), free(l->placed);
    free(l);
    *pl = NULL;
}

void mc_link_start(mc_link_t *l) {
    l->settled = false;
    l->probe = S_PROBE_IDLE;
    l->retry_at = mc_clock_ms();
    l->start_until = l->retry_at + l->p.timeout_ms;
}

bool mc_link_settled(const mc_link_t *l) { return l->settled; }
const char *mc_link_refusal(const mc_link_t *l) { return l->refusal[0] ? l->refusal : NULL; }

// Wait up to the answer to request id (what: for messages), with the
// placement's Progress extending the wait. An ErrorReply is returned as an
// error.
static mc_err_t s_await(mc_link_t *l, uint64_t id, const char *what, mc_wire_msg_t *msg, char *err) {
    double deadline = mc_clock_ms() + l->p.timeout_ms;
    for (;;) {
        mc_err_t rc = s_recv(l, msg, err);
        if (rc == MC_OK && msg->request_id == id && msg->kind == MC_WIRE_MSG_PROGRESS) {
            const bool more = s_progress(l, msg, &deadline);
            mc_wire_msg_free(msg);
            if (!more)
                return mc_err_set(err, MC_ERR_TIMEOUT, "node %s (%s) did not load the %s within load_timeout_ms %u",
                                  l->p.name, l->p.endpoint, what, l->p.load_timeout_ms);
            continue;
        }
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
    memcpy(l->placed, held, (size_t)l->p.lim->n_layer * l->p.lim->n_expert);
    l->placed_ok = true;
    l->st.load_done = l->st.load_total = 0;
    return MC_OK;
}

mc_err_t mc_link_stage(mc_link_t *l, const uint8_t *held, char *err) {
    if (!l->alive) return mc_err_set(err, MC_ERR_NET, "node %s is not connected", l->p.name);
    mc_err_t rc = s_send_assign(l, held, &l->stage_id, err);
    if (rc) {
        mc_link_lose(l, err);
        return rc;
    }
    l->stage = MC_LINK_STAGE_SENT;
    l->stage_why[0] = 0;
    return MC_OK;
}

mc_link_stage_t mc_link_stage_state(const mc_link_t *l, const char **why) {
    if (why) *why = l->stage_why;
    return l->stage;
}

const uint8_t *mc_link_placed(const mc_link_t *l) { return l->placed_ok ? l->placed : NULL; }

// An answer to the staged placement in flight (consumed here: true):
// Progress counts, Ready makes it the node's placement, a refusal is kept
// for mc_link_stage_state (the node keeps serving the one it had).
static bool s_stage_answer(mc_link_t *l, mc_wire_msg_t *msg) {
    if (l->stage != MC_LINK_STAGE_SENT || msg->request_id != l->stage_id) return false;
    if (msg->kind == MC_WIRE_MSG_PROGRESS) {
        double until;
        (void)s_progress(l, msg, &until);
        mc_wire_msg_free(msg);
        return true;
    }
    char err[MC_ERR_LEN];
    if (s_check_ready(l, msg, "placed anew", err)) {
        snprintf(l->stage_why, sizeof l->stage_why, "%s", err);
        l->stage = MC_LINK_STAGE_FAILED;
    } else {
        memcpy(l->placed, l->sent, (size_t)l->p.lim->n_layer * l->p.lim->n_expert);
        l->placed_ok = true;
        l->stage = MC_LINK_STAGE_DONE;
    }
    l->st.load_done = l->st.load_total = l->st.fetch_done = l->st.fetch_total = 0;
    return true;
}

bool mc_link_alive(const mc_link_t *l) { return l->alive; }
bool mc_link_fetching(const mc_link_t *l) { return !l->alive && l->probe == S_PROBE_ASSIGN && l->st.fetch_total > 0; }
bool mc_link_benched(const mc_link_t *l) { return l->alive && mc_clock_ms() < l->bench_until; }
void *mc_link_socket(mc_link_t *l) { return l->sock; }
void *mc_link_monitor(mc_link_t *l) { return l->mon; }
const mc_link_stats_t *mc_link_stats(const mc_link_t *l) { return &l->st; }

// Index of pending request id in l->pend, -1: none.
static int s_pending_find(const mc_link_t *l, uint64_t id) {
    for (uint32_t i = 0; i < l->n_pending; i++)
        if (l->pend[i].id == id) return (int)i;
    return -1;
}

// Request i is answered or abandoned. A request queued behind it starts its
// clock now at the latest: the node takes one at a time, and counting the
// wait behind the earlier one would make it look slow (and skew the usual
// time the slow limit is judged by).
static void s_pending_drop(mc_link_t *l, int i) {
    const double now = mc_clock_ms();
    for (uint32_t j = (uint32_t)i; j + 1 < l->n_pending; j++) l->pend[j] = l->pend[j + 1];
    l->n_pending--;
    if (i == 0 && l->n_pending && l->pend[0].t_sent < now) l->pend[0].t_sent = now;
}

bool mc_link_pending(const mc_link_t *l, uint64_t id) { return s_pending_find(l, id) >= 0; }

double mc_link_waited_ms(const mc_link_t *l, uint64_t id) {
    const int i = s_pending_find(l, id);
    if (i < 0) return 0;
    // Behind an earlier request its own time has not started.
    return i == 0 ? mc_clock_ms() - l->pend[0].t_sent : 0;
}

// --- requests -------------------------------------------------------------------------

mc_err_t mc_link_request(mc_link_t *l, mc_wire_msg_t *msg, uint32_t rows, char *err) {
    if (l->n_pending == MC_LINK_MAX_PENDING)
        return mc_err_set(err, MC_ERR_BUSY, "node %s has %d requests in flight already", l->p.name,
                          MC_LINK_MAX_PENDING);
    msg->request_id = ++l->next_id;
    l->st.requests++;
    l->st.rows += rows;
    mc_err_t rc = s_send(l, msg, err);
    if (rc) return rc;
    l->pend[l->n_pending++] = (s_pend_t){msg->request_id, rows, l->last_sent};
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
        const int i = s_pending_find(l, msg->request_id);
        if (i >= 0) {
            l->last_rtt_ms = mc_clock_ms() - l->pend[i].t_sent;
            l->last_rows = l->pend[i].rows;
            s_pending_drop(l, i);
            s_rtt_add(l, l->last_rtt_ms);
            *got = true;
            return MC_OK;
        }
        if (s_stage_answer(l, msg)) continue;
        mc_wire_msg_free(msg);
    }
}

void mc_link_set_store(mc_link_t *l, const mc_wire_store_stats_t *store) {
    if (store->has) l->st.store = *store;
}

void mc_link_add_compute(mc_link_t *l, uint64_t us) {
    l->st.compute_us += us;
    // The node's usual time: the first answers averaged, then a moving
    // average that follows a node whose speed changes for good.
    const double compute = us / 1e3, rows = l->last_rows ? l->last_rows : 1;
    const double over = l->last_rtt_ms > compute ? l->last_rtt_ms - compute : 0, per_row = compute / rows;
    l->n_answers++;
    const double a = l->n_answers <= S_HISTORY ? 1.0 / (double)l->n_answers : 0.1;
    l->over_ms += a * (over - l->over_ms);
    l->row_ms += a * (per_row - l->row_ms);
    if (++l->good_run >= S_BENCH_RESET) l->bench_ms = S_BENCH_FIRST_MS;
}

double mc_link_wait_limit_ms(const mc_link_t *l, uint64_t id, bool *slow) {
    const int i = s_pending_find(l, id);
    if (l->p.slow_ms && l->n_answers >= S_HISTORY) {
        const double usual = l->over_ms + l->row_ms * (i >= 0 ? l->pend[i].rows : 0), limit = S_SLOW_FACTOR * usual;
        *slow = true;
        return limit > l->p.slow_ms ? limit : l->p.slow_ms;
    }
    *slow = false;
    return l->p.timeout_ms;
}

void mc_link_abandon(mc_link_t *l, uint64_t id) {
    const int i = s_pending_find(l, id);
    if (i < 0) return;
    s_pending_drop(l, i);
    l->st.hedged++;
}

void mc_link_bench(mc_link_t *l, const char *why) {
    l->bench_until = mc_clock_ms() + l->bench_ms;
    l->st.slow++;
    l->good_run = 0;
    MC_LOGW("%s: computing its experts here for %.0f s, then trying it again", why, l->bench_ms / 1e3);
    l->bench_ms = l->bench_ms * 2 > S_BENCH_MAX_MS ? S_BENCH_MAX_MS : l->bench_ms * 2;
}

void mc_link_lose(mc_link_t *l, const char *why) {
    if (!l->alive) return;
    l->alive = false;
    l->n_pending = 0, l->hb_pending = false;
    l->stage = MC_LINK_STAGE_NONE; // the probe hands it the caller's placement
    l->st.deaths++;
    l->probe = S_PROBE_IDLE;
    l->warned = false;
    l->retry_at = l->p.retry_ms ? mc_clock_ms() + l->p.retry_ms : INFINITY;
    MC_LOGW("%s: computing its experts here until it is back", why);
}

// --- probes ---------------------------------------------------------------------------

static void s_probe_failed(mc_link_t *l, mc_err_t code, const char *why) {
    // Silence with a handshake the transport saw fail: that failure is the
    // cause (a key the node refuses looks like silence otherwise).
    char buf[MC_ERR_LEN];
    if (!why && l->hs_why[0]) {
        snprintf(buf, sizeof buf, "%s", l->hs_why);
        why = buf;
        code = MC_ERR_NET;
    }
    // A node that is still unplugged times out every retry: say nothing. A
    // node that answers wrongly (another model, a placement it refuses) is
    // worth one line per loss.
    if (why && !l->warned) {
        MC_LOGW("%s", why);
        l->warned = true;
    }
    // The refusal keeps its code (common/error.h) for mc_cluster_new's caller.
    mc_err_set(l->refusal, code, "%s", why && code != MC_ERR_BUSY && code != MC_ERR_TIMEOUT ? why : "");
    l->probe = S_PROBE_IDLE;
    l->st.load_done = l->st.load_total = l->st.fetch_done = l->st.fetch_total = 0;
    const double now = mc_clock_ms();
    if (code == MC_ERR_BUSY && now + S_BUSY_RETRY_MS < l->start_until) {
        // Leased to a coordinator that just exited without a Release (or
        // crashed): its lease runs out within seconds; ask again soon.
        l->retry_at = now + S_BUSY_RETRY_MS;
        return;
    }
    l->settled = true;
    l->retry_at = l->p.retry_ms ? now + l->p.retry_ms : INFINITY;
}

// One step of a joining or lost node's way in: every retry_ms a fresh
// connection says hello; a node that answers with our protocol version and
// model gets its placement (the same session, so a node that still holds it
// agrees at once), reports its loading, and takes work from the first layer
// after its Ready arrives.
static void s_probe(mc_link_t *l, const uint8_t *held) {
    char err[MC_ERR_LEN];
    const double now = mc_clock_ms();
    mc_err_t rc;
    if (l->probe == S_PROBE_IDLE) {
        if (now < l->retry_at) return;
        l->settled = false;
        if ((rc = s_open(l, err)) || (rc = s_send_hello(l, &l->probe_id, err))) {
            s_probe_failed(l, MC_ERR_NET, err);
            return;
        }
        l->probe = S_PROBE_HELLO;
        l->probe_until = now + l->p.timeout_ms;
        return;
    }
    mc_link_events(l);
    if (l->probe == S_PROBE_HELLO && l->hs_why[0]) { // no answer will come: say why now
        s_probe_failed(l, MC_ERR_NET, NULL);
        return;
    }
    if (l->dropped && !l->hs_why[0]) { // the node went away mid-handshake (killed while fetching, say)
        s_probe_failed(l, MC_ERR_TIMEOUT, NULL);
        return;
    }
    for (;;) {
        mc_wire_msg_t msg;
        rc = s_recv(l, &msg, err);
        if (rc == MC_ERR_TIMEOUT) break;
        if (rc) {
            s_probe_failed(l, rc, err);
            return;
        }
        if (msg.request_id != l->probe_id) {
            mc_wire_msg_free(&msg);
            continue;
        }
        if (l->probe == S_PROBE_HELLO || l->probe == S_PROBE_INFO) {
            bool needs_info;
            if ((rc = s_check_hello(l, &msg, &needs_info, err))) {
                s_probe_failed(l, rc, err);
                return;
            }
            if (needs_info && l->probe == S_PROBE_INFO) { // it took our metadata and still has another model
                snprintf(err, sizeof err, "node %s (%s) did not take the model's metadata", l->p.name, l->p.endpoint);
                s_probe_failed(l, MC_ERR_NET, err);
                return;
            }
            if (needs_info) {
                if ((rc = s_send_info(l, &l->probe_id, err))) {
                    s_probe_failed(l, rc, err);
                    return;
                }
                l->probe = S_PROBE_INFO;
                l->probe_until = mc_clock_ms() + l->p.timeout_ms;
                continue;
            }
            if ((rc = s_send_assign(l, held, &l->probe_id, err))) {
                s_probe_failed(l, rc, err);
                return;
            }
            l->probe = S_PROBE_ASSIGN;
            l->probe_until = mc_clock_ms() + l->p.timeout_ms;
            continue;
        }
        if (msg.kind == MC_WIRE_MSG_PROGRESS) {
            const bool more = s_progress(l, &msg, &l->probe_until);
            mc_wire_msg_free(&msg);
            if (!more) {
                snprintf(err, sizeof err, "node %s (%s) did not load its experts within load_timeout_ms %u", l->p.name,
                         l->p.endpoint, l->p.load_timeout_ms);
                s_probe_failed(l, MC_ERR_TIMEOUT, err);
                return;
            }
            continue;
        }
        if ((rc = s_check_ready(l, &msg, l->ever_alive ? "is back" : "ready", err))) {
            s_probe_failed(l, rc, err);
            return;
        }
        s_set_alive(l);
        return;
    }
    if (mc_clock_ms() > l->probe_until) {
        if (l->probe == S_PROBE_HELLO && !l->hs_why[0] && !l->ever_alive && !l->absent_said) {
            // Said once: a node that is not there at all when we start.
            MC_LOGW("node %s (%s) did not answer within %u ms: computing its experts here until it joins%s", l->p.name,
                    l->p.endpoint, l->p.timeout_ms, l->p.retry_ms ? "" : " (never: retry_ms is 0)");
            l->absent_said = true;
        }
        // A node that took our Hello and then fell silent is worth a line
        // (once per loss): without it a join that keeps failing there
        // looks like no attempt at all. The retry is a fresh connection.
        const bool step = l->probe == S_PROBE_INFO || l->probe == S_PROBE_ASSIGN;
        if (step) {
            char again[64] = " (not again: retry_ms is 0)";
            if (l->p.retry_ms) snprintf(again, sizeof again, ": asking again in %u ms", l->p.retry_ms);
            if (l->probe == S_PROBE_INFO)
                snprintf(err, sizeof err, "node %s (%s) answered the handshake but not the model's metadata within %u ms%s",
                         l->p.name, l->p.endpoint, l->p.timeout_ms, again);
            else if (l->p.load_timeout_ms && mc_clock_ms() >= l->load_started + l->p.load_timeout_ms)
                snprintf(err, sizeof err, "node %s (%s) did not load its experts within load_timeout_ms %u%s", l->p.name,
                         l->p.endpoint, l->p.load_timeout_ms, again);
            else
                snprintf(err, sizeof err, "node %s (%s) said nothing of its placement for %u ms%s", l->p.name,
                         l->p.endpoint, l->p.timeout_ms, again);
        }
        s_probe_failed(l, MC_ERR_TIMEOUT, step ? err : NULL);
    }
}

void mc_link_tick(mc_link_t *l, const uint8_t *held) {
    if (!l->alive) {
        s_probe(l, held);
        return;
    }
    mc_link_events(l);
    if (!l->alive || l->n_pending) return; // the requests' own waits cover it
    char err[MC_ERR_LEN];
    for (;;) { // drain: heartbeat answers, stale replies
        mc_wire_msg_t msg;
        mc_err_t rc = s_recv(l, &msg, err);
        if (rc == MC_ERR_TIMEOUT) break;
        if (rc) {
            mc_link_lose(l, err);
            return;
        }
        if (!s_stage_answer(l, &msg)) mc_wire_msg_free(&msg);
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
