/*
 * link: the coordinator's connection to one expert node.
 *
 * A DEALER socket to the node's endpoint, the handshake (Hello: protocol
 * version and model fingerprint; then the node's placement with the hashes
 * of the weights it names, answered by Progress while the node loads and
 * Ready when it is done), request ids, and the node's liveness:
 *
 *   joining --(Hello answered, placement loaded: Ready)-->  alive
 *
 * A node without a model file answers Hello with its cache flag and
 * another fingerprint: it is sent the model's metadata (ModelInfo) and
 * answers Hello again; while it then fetches its slices (from the cluster's
 * transfer socket, transfer.h) its Progress says how far it is.
 *   alive   --(connection dropped or transport silent for dead_ms, a
 *              request or heartbeat unanswered for timeout_ms, a send that
 *              fails, a wrong answer: mc_link_lose)-->  lost
 *   lost    --(every retry_ms a probe on a fresh socket: Hello,
 *              placement, Ready; never blocking the caller)-->  alive
 *
 * A new link starts as a probe (mc_link_start), so the coordinator can wait
 * for all of its nodes at once and serve without the ones that are down.
 *
 * Three clocks watch a node, each for what it can tell:
 * - transport heartbeats (ZeroMQ's ZMTP PING, sent and answered by the I/O
 *   threads on both ends, so a node busy computing still answers): silence
 *   for dead_ms, or the TCP connection closing (a killed process), loses
 *   the node at once. The socket monitor reports it, with the cause of a
 *   failed handshake (a key the node refuses, a mechanism mismatch), which
 *   is named in the error rather than left to look like a dead host.
 * - the application heartbeat every heartbeat_ms on an idle link: keeps the
 *   node's lease on its placement (a node frees a placement whose
 *   coordinator is silent) and notices a node that stopped answering.
 * - per request: a node usually answers in about `overhead + rows *
 *   per_row` (moving averages of its own round trips and reported compute
 *   time). One that takes more than max(slow_ms, 4 x that) is slow: the
 *   caller computes its share itself (mc_link_abandon) and the node sits
 *   out (mc_link_bench) for a while that doubles each time it happens again
 *   (1 s, 2 s, ... 60 s); it keeps its lease and its heartbeats and then
 *   gets work again on probation. Without enough history (the first 8
 *   answers) or with slow_ms 0, timeout_ms is the limit.
 *
 * With the node's public key (and ours), the socket speaks CURVE: the
 * traffic is encrypted, and only that node can answer.
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
    uint32_t slow;    // times it was benched for a slow answer
    uint64_t hedged;  // requests whose share was computed by the caller instead
    uint64_t load_done, load_total; // bytes of the placement being loaded (both 0 when none)
    uint64_t fetch_done, fetch_total; // of those, fetched from us by a node without a model file
    uint64_t rtt_hist[MC_LINK_RTT_BUCKETS + 1];
    double rtt_sum_ms;
    uint64_t rtt_count;
    double rtt_ring[MC_LINK_RTT_RING]; // the last min(rtt_count, RING) round trips
    mc_wire_store_stats_t store;        // the node's expert store, as its last result told (has: under a limit)
} mc_link_stats_t;

typedef struct {
    const char *name;             // for messages (borrowed)
    const char *endpoint;         // tcp://host:port ... (borrowed)
    const char *self;             // the coordinator's name in Hello
    uint64_t session;             // carried by Hello and every placement
    uint64_t fingerprint;         // of the coordinator's model
    const uint8_t *hashes;        // (n_layer, n_expert, MC_WIRE_HASH_BYTES) its slice hashes, at least of
                                  // every pair a placement names: sent with it (borrowed)
    const uint8_t *types;         // (n_layer, n_expert, 3) tensor types of each pair's gate, up and down:
                                  // sent with a placement (borrowed; NULL: not sent)
    const uint8_t *model_info;    // the model's metadata (mc_expert_file_info) for a node without the
    size_t model_info_len;        // model file (borrowed; NULL: such nodes are refused)
    const mc_wire_limits_t *lim;  // what a node may answer (borrowed)
    uint32_t timeout_ms;          // answer within this, or the node is lost
    uint32_t retry_ms;            // probe a lost node this often; 0: never
    uint32_t heartbeat_ms;        // an idle live node hears from us this often; 0: never
    uint32_t load_timeout_ms;     // loading a placement in all; 0: while progress comes every timeout_ms
    uint32_t dead_ms;             // transport silence that loses the node; 0: no transport heartbeats
    uint32_t slow_ms;             // floor of the slow-answer limit; 0: never benched
    FILE *log;                    // "node X ... ready / is back / loading" lines; NULL: quiet
    const char *server_key;       // the node's CURVE public key (Z85); NULL: no encryption
    const mc_keypair_t *keys;     // ours, with server_key (borrowed)
} mc_link_params_t;

typedef struct mc_link mc_link_t;

// Socket set up and connecting (ZeroMQ connects in the background); not yet
// alive. zctx and p's strings are borrowed. NULL on failure with err.
mc_link_t *mc_link_new(void *zctx, const mc_link_params_t *p, char *err);

// Release the node (when alive, or given its placement and still loading or
// fetching it: it may take another coordinator at once), then close. Safe
// twice.
void mc_link_destroy(mc_link_t **l);

// Start the handshake now (a probe: mc_link_tick moves it along); until it
// ends the link is joining.
void mc_link_start(mc_link_t *l);

// Whether the handshake begun by mc_link_start (or the latest probe) is
// over: the node is alive, or the attempt failed (mc_link_refusal says why
// when the node refused, rather than stayed silent).
bool mc_link_settled(const mc_link_t *l);

// Why the node refused the last handshake in a way that waiting will not
// mend (another model or protocol version, a key it does not accept, a
// placement it cannot serve); NULL when it did not. A node leased to
// another coordinator is not such a refusal: it is retried. The text is an
// error buffer: mc_err_code gives the refusal's code.
const char *mc_link_refusal(const mc_link_t *l);

// A new placement for a live node (it answers Progress while it loads, then
// Ready, or refuses it: a node leased by another live coordinator does).
// Blocking; on failure the link is lost.
mc_err_t mc_link_place(mc_link_t *l, const uint8_t *held, char *err);

// A staged placement (cluster.h: mc_cluster_request): sent to a live node
// without waiting, while it keeps serving the one it has. Its Progress and
// Ready (or refusal) are read along with everything else (mc_link_receive,
// mc_link_tick); mc_link_stage_state says how far it is. On a send failure
// the link is lost (the probe then hands the node the caller's placement).
typedef enum { MC_LINK_STAGE_NONE, MC_LINK_STAGE_SENT, MC_LINK_STAGE_DONE, MC_LINK_STAGE_FAILED } mc_link_stage_t;
mc_err_t mc_link_stage(mc_link_t *l, const uint8_t *held, char *err);
// why: the node's refusal when FAILED ("" otherwise).
mc_link_stage_t mc_link_stage_state(const mc_link_t *l, const char **why);
// The placement the node last answered Ready to (through a probe,
// mc_link_place or mc_link_stage): (n_layer, n_expert) flags; NULL: none yet.
const uint8_t *mc_link_placed(const mc_link_t *l);
bool mc_link_alive(const mc_link_t *l);

// Joining, and the node is fetching experts from us (a node without a
// model file): its share is computed here meanwhile, and starting up need
// not wait for it.
bool mc_link_fetching(const mc_link_t *l);

// Alive but sitting out after a slow answer (mc_link_bench): no work for now.
bool mc_link_benched(const mc_link_t *l);

// Requests a link holds in flight at once: one per group of rows of a
// pipelined pass (cluster.h), answered by the node in the order sent.
#define MC_LINK_MAX_PENDING 2

// Send msg (its request_id is assigned here, the caller keeps it to tell
// the answers apart) as one of the link's pending requests. MC_ERR_NET when
// it cannot be sent (the caller then loses it), MC_ERR_BUSY when
// MC_LINK_MAX_PENDING are in flight already (nothing sent).
mc_err_t mc_link_request(mc_link_t *l, mc_wire_msg_t *msg, uint32_t rows, char *err);

// Whether request id is still awaited (false once answered, abandoned or
// the node lost).
bool mc_link_pending(const mc_link_t *l, uint64_t id);

// The data socket to poll (ZMQ_POLLIN) while a request is pending, and the
// monitor socket whose events (mc_link_events) may end the wait early.
void *mc_link_socket(mc_link_t *l);
void *mc_link_monitor(mc_link_t *l);

// Read the monitor's events: a dropped connection of a live node loses it
// (why: the cause, logged), a failed handshake is remembered for the probe's
// message. Never blocks.
void mc_link_events(mc_link_t *l);

// Read what has arrived. *got is set when it holds the answer of one of the
// pending requests (msg->request_id says which; decoded into msg, to free
// with mc_wire_msg_free; its round trip counted); anything else (a
// heartbeat's answer, a stale reply) is dropped. An answer the decoder
// refuses is an error (err says why).
mc_err_t mc_link_receive(mc_link_t *l, mc_wire_msg_t *msg, bool *got, char *err);

// Milliseconds pending request id may wait before the caller gives up on
// it: the slow limit when the node has history, else timeout_ms. *slow is
// set when passing it means "slow" (bench and abandon) rather than "lost".
double mc_link_wait_limit_ms(const mc_link_t *l, uint64_t id, bool *slow);

// Milliseconds pending request id has waited: since it was sent, or, queued
// behind an earlier request, since that one was answered (the node works
// on one at a time, so its own time starts then). 0 when not pending.
double mc_link_waited_ms(const mc_link_t *l, uint64_t id);

// Forget pending request id (its answer will be dropped when it comes):
// the caller computed its share itself.
void mc_link_abandon(mc_link_t *l, uint64_t id);

// The node answered too slowly (why: for the log): no work for the bench
// time, which doubles each time (reset by a run of normal answers).
void mc_link_bench(mc_link_t *l, const char *why);

// The node stopped answering or answered wrongly: log why (once per
// loss), count it, and start probing after retry_ms.
void mc_link_lose(mc_link_t *l, const char *why);

// Housekeeping between requests, never blocking: read monitor events, drain
// replies, send a heartbeat to an idle live node, lose one whose heartbeat
// went unanswered, and move a joining or lost node's probe along (held: its
// placement).
void mc_link_tick(mc_link_t *l, const uint8_t *held);

// Counters since the link was made (read by the owner; see above).
const mc_link_stats_t *mc_link_stats(const mc_link_t *l);

// The node's own compute time for the answer just taken (ExpertResult).
void mc_link_add_compute(mc_link_t *l, uint64_t us);
// The expert store counters an answer carried (kept as the latest).
void mc_link_set_store(mc_link_t *l, const mc_wire_store_stats_t *store);

#endif
