/*
 * guard: CURVE server options, the ZAP handler thread, handshake-failure
 * monitoring.
 */
#include "guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01" // fixed by ZeroMQ
#define S_POLL_MS 100

struct mc_guard {
    void *zctx;
    void *zap;      // REP bound to the ZAP endpoint
    void *monitor;  // PAIR connected to the protected socket's monitor (NULL until protect)
    char monitor_endpoint[64];
    mc_keypair_t kp;
    mc_keyring_t ring;
    FILE *log;
    char who[96];
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu; // the monitor socket appears while the thread runs
};

// One ZAP request: the frames of RFC 27, and the reply.
static void s_zap_one(mc_guard_t *g) {
    zmq_msg_t f[7];
    int n = 0;
    bool more = true;
    while (more && n < 7) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], g->zap, 0) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n++]);
    }
    while (more) { // a malformed request: drain it
        zmq_msg_t x;
        zmq_msg_init(&x);
        more = zmq_msg_recv(&x, g->zap, 0) >= 0 && zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    // version, request id, domain, address, identity, mechanism, key
    bool ok = n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
              zmq_msg_size(&f[6]) == MC_KEY_BYTES && mc_keyring_has(&g->ring, zmq_msg_data(&f[6]));
    char addr[64] = "?", key[MC_KEY_TEXT + 1] = "?";
    if (n >= 4) snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&f[3]), (const char *)zmq_msg_data(&f[3]));
    if (n == 7 && zmq_msg_size(&f[6]) == MC_KEY_BYTES) zmq_z85_encode(key, zmq_msg_data(&f[6]), MC_KEY_BYTES);
    if (!ok)
        mc_log_status(g->log, g->who, "refused a connection from %s: its key %s is not an authorized coordinator's",
                      addr, key);
    if (n >= 2) {
        const char *code = ok ? "200" : "400", *text = ok ? "OK" : "key not authorized";
        zmq_send(g->zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(g->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        zmq_send(g->zap, code, 3, ZMQ_SNDMORE);
        zmq_send(g->zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(g->zap, key, ok ? strlen(key) : 0, ZMQ_SNDMORE); // user id: the key
        zmq_send(g->zap, "", 0, 0);
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

// One monitor event (two frames: event and value, then the endpoint).
static void s_event(mc_guard_t *g) {
    zmq_msg_t a, b;
    zmq_msg_init(&a), zmq_msg_init(&b);
    if (zmq_msg_recv(&a, g->monitor, 0) >= 0 && zmq_msg_more(&a) && zmq_msg_recv(&b, g->monitor, 0) >= 0 &&
        zmq_msg_size(&a) >= 6) {
        uint16_t ev;
        memcpy(&ev, zmq_msg_data(&a), 2);
        // A refused key was logged by the ZAP handler already.
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            mc_log_status(g->log, g->who,
                          "a connection on %.*s failed the CURVE handshake (a peer without this node's public key, or "
                          "without CURVE): refused",
                          (int)zmq_msg_size(&b), (const char *)zmq_msg_data(&b));
    }
    zmq_msg_close(&a), zmq_msg_close(&b);
}

static void *s_main(void *arg) {
    mc_guard_t *g = arg;
    while (!atomic_load(&g->stop)) {
        pthread_mutex_lock(&g->mu);
        void *mon = g->monitor;
        pthread_mutex_unlock(&g->mu);
        zmq_pollitem_t it[2] = {{g->zap, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        int r = zmq_poll(it, mon ? 2 : 1, S_POLL_MS);
        if (r < 0) {
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (it[0].revents & ZMQ_POLLIN) s_zap_one(g);
        if (mon && (it[1].revents & ZMQ_POLLIN)) s_event(g);
    }
    return NULL;
}

mc_guard_t *mc_guard_new(void *zctx, const char *secret_key_path, const char *authorized_keys_path, FILE *log,
                         const char *who, char *err) {
    mc_guard_t *g = calloc(1, sizeof *g);
    if (!g) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->zctx = zctx, g->log = log;
    snprintf(g->who, sizeof g->who, "%s", who);
    if (mc_keys_load_secret(secret_key_path, &g->kp, err) || mc_keyring_load(authorized_keys_path, &g->ring, err))
        goto fail;
    int linger = 0;
    if (!(g->zap = zmq_socket(zctx, ZMQ_REP)) || zmq_setsockopt(g->zap, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(g->zap, S_ZAP_ENDPOINT)) {
        mc_err_set(err, MC_ERR_NET, "cannot start the key check: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&g->thread, NULL, s_main, g)) {
        mc_err_set(err, MC_ERR_NOMEM, "cannot start the key check thread");
        goto fail;
    }
    g->started = true;
    return g;
fail:
    mc_guard_destroy(&g);
    return NULL;
}

mc_err_t mc_guard_protect(mc_guard_t *g, void *sock, char *err) {
    int server = 1, linger = 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &server, sizeof server) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, g->kp.sec, MC_KEY_TEXT) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "moe-cluster", 11))
        return mc_err_set(err, MC_ERR_NET, "CURVE options: %s", zmq_strerror(zmq_errno()));
    snprintf(g->monitor_endpoint, sizeof g->monitor_endpoint, "inproc://mc-guard-%p", (void *)g);
    void *mon = zmq_socket(g->zctx, ZMQ_PAIR);
    if (!mon || zmq_socket_monitor(sock, g->monitor_endpoint,
                                   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) ||
        zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(mon, g->monitor_endpoint)) {
        if (mon) zmq_close(mon);
        return mc_err_set(err, MC_ERR_NET, "cannot watch handshakes: %s", zmq_strerror(zmq_errno()));
    }
    pthread_mutex_lock(&g->mu);
    g->monitor = mon;
    pthread_mutex_unlock(&g->mu);
    return MC_OK;
}

const char *mc_guard_public_key(const mc_guard_t *g) { return g->kp.pub; }

void mc_guard_destroy(mc_guard_t **pg) {
    if (!pg || !*pg) return;
    mc_guard_t *g = *pg;
    if (g->started) {
        atomic_store(&g->stop, true);
        pthread_join(g->thread, NULL);
    }
    if (g->monitor) zmq_close(g->monitor);
    if (g->zap) zmq_close(g->zap);
    mc_keyring_free(&g->ring);
    explicit_bzero(&g->kp, sizeof g->kp); // the secret key does not outlive the guard
    pthread_mutex_destroy(&g->mu);
    free(g);
    *pg = NULL;
}
