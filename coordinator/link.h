/*
 * link: the coordinator's connection to one expert node.
 *
 * A DEALER socket to the node's endpoint, the handshake (Hello: protocol
 * version and model fingerprint; then the node's placement with the hashes
 * of the weights it names, answered by Ready), request ids, and the node's
 * liveness:
 *
 *   alive  --(a request or heartbeat unanswered for timeout_ms, a send that
 *             fails, or a wrong answer: mc_link_lose)-->  lost
 *   lost   --(every retry_ms mc_link_tick probes on a fresh socket: Hello,
 *             placement, Ready; never blocking the caller)-->  alive
 *
 * An idle live link sends a heartbeat every heartbeat interval: it keeps the
 * node's lease on its placement (a node frees a placement whose coordinator
 * is silent) and notices a node that died between requests. Every message
 * received counts as a sign of life.
 *
 * With the node's public key (and ours), the socket speaks CURVE: the
 * traffic is encrypted, and only that node can answer; a node that does not
 * know our key refuses the handshake, which looks like silence here.
 *
 * Messages go out one at a time from the caller's thread; the link is not
 * thread-safe. Counters (mc_link_stats_t) are plain fields the owner reads
 * under its own lock.
 */
#ifndef MC_LINK_H
#define MC_LINK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "keys.h"
#include "wire.h"

// Round trips kept for quantiles (the most recent ones); the histogram
// counts every one.
#define MC_LINK_RTT_RING 4096
// Upper bounds (ms) of the round-trip histogram's buckets; a last one
// counts everything above.
#define MC_LINK_RTT_BUCKETS 12
extern const double mc_link_rtt_bounds[MC_LINK_RTT_BUCKETS];

typedef struct {
    uint64_t requests, rows, bytes_sent, bytes_recv, compute_us;
    uint32_t deaths, rejoins;
    uint64_t rtt_hist[MC_LINK_RTT_BUCKETS + 1];
    double rtt_sum_ms;
    uint64_t rtt_count;
    double rtt_ring[MC_LINK_RTT_RING]; // the last min(rtt_count, RING) round trips
} mc_link_stats_t;

typedef struct {
    const char *name;             // for messages (borrowed)
    const char *endpoint;         // tcp://host:port ... (borrowed)
    const char *self;             // the coordinator's name in Hello
    uint64_t session;             // carried by Hello and every placement
    uint64_t fingerprint;         // of the coordinator's model
    const uint8_t *hashes;        // (n_layer, n_expert, MC_WIRE_HASH_BYTES) its slice hashes, at least of
                                  // every pair a placement names: sent with it (borrowed)
    const mc_wire_limits_t *lim;  // what a node may answer (borrowed)
    uint32_t timeout_ms;          // answer within this, or the node is lost
    uint32_t retry_ms;            // probe a lost node this often; 0: never
    uint32_t heartbeat_ms;        // an idle live node hears from us this often; 0: never
    FILE *log;                    // "node X ... ready / is back" lines; NULL: quiet
    const char *server_key;       // the node's CURVE public key (Z85); NULL: no encryption
    const mc_keypair_t *keys;     // ours, with server_key (borrowed)
} mc_link_params_t;

typedef struct mc_link mc_link_t;

// Socket set up and connecting (ZeroMQ connects in the background); not yet
// alive. zctx and p's strings are borrowed. NULL on failure with err.
mc_link_t *mc_link_new(void *zctx, const mc_link_params_t *p, char *err);
void mc_link_destroy(mc_link_t **l);

// The handshake, waiting for each answer up to timeout_ms: the node's
// placement is held, (n_layer, n_expert) bytes, borrowed until the next
// call that takes one. The link is alive on success.
mc_err_t mc_link_connect(mc_link_t *l, const uint8_t *held, char *err);

// A new placement for a live node (it answers Ready, or refuses it: a node
// leased by another live coordinator does). Blocking, like connect; on
// failure the link is lost.
mc_err_t mc_link_place(mc_link_t *l, const uint8_t *held, char *err);

bool mc_link_alive(const mc_link_t *l);
const char *mc_link_name(const mc_link_t *l);
const char *mc_link_endpoint(const mc_link_t *l);

// Send msg (its request_id is assigned here) as the link's one pending
// request. MC_ERR_NET when it cannot be sent (the caller then loses it).
mc_err_t mc_link_request(mc_link_t *l, mc_wire_msg_t *msg, uint32_t rows, char *err);

// The socket to poll (ZMQ_POLLIN) while a request is pending.
void *mc_link_socket(mc_link_t *l);

// Read what has arrived. *got is set when it holds the pending request's
// answer (decoded into msg, to free with mc_wire_msg_free; its round trip
// counted); anything else (a heartbeat's answer, a stale reply) is
// dropped. An answer the decoder refuses is an error (err says why).
mc_err_t mc_link_receive(mc_link_t *l, mc_wire_msg_t *msg, bool *got, char *err);

// Milliseconds since the pending request was sent.
double mc_link_waited_ms(const mc_link_t *l);

// The node stopped answering or answered wrongly: log why (once per
// loss), count it, and start probing after retry_ms.
void mc_link_lose(mc_link_t *l, const char *why);

// Housekeeping between requests, never blocking: drain replies, send a
// heartbeat to an idle live node, lose one whose heartbeat went unanswered,
// and move a lost node's probe along (held: its placement).
void mc_link_tick(mc_link_t *l, const uint8_t *held);

// Counters since the link was made (read by the owner; see above).
const mc_link_stats_t *mc_link_stats(const mc_link_t *l);

// The node's own compute time for the answer just taken (ExpertResult).
void mc_link_add_compute(mc_link_t *l, uint64_t us);

#endif
