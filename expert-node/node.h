/*
 * node: the serving logic of moe-expert, as a library so tests can run a node
 * in a thread and main.c stays a thin wrapper.
 *
 * A node maps the whole model file but only holds (touches, keeps resident)
 * the experts a coordinator assigns to it, then answers expert requests on
 * a ZeroMQ ROUTER socket: per row, the weighted sum of the listed experts'
 * outputs, the same bits the coordinator would compute locally. Messages
 * are handled one at a time (each product uses every compute thread); a
 * message that fails validation gets an ErrorReply and the node keeps
 * serving.
 *
 * A placement carries the coordinator's hash of every expert it names
 * (slice_index.h): the node compares them with its own file's and refuses
 * the placement, naming the first expert that differs, when its file holds
 * other weights. Its hashes come from the slice index beside the model (or
 * in the cache folder), or are computed for the placed experts when a
 * placement first names them (the time it takes to read them once) and
 * saved there.
 *
 * A node without a model file (cache_dir) answers a coordinator whose model
 * it does not hold with Hello's cache flag; the coordinator then sends the
 * model's metadata (ModelInfo). For a placement it hashes the placed
 * slices its cache file has (once per file opened), asks the coordinator's
 * transfer socket (FetchOpen says which peer that is) for the ones it lacks
 * in chunks, a few in flight at a time, and answers Progress meanwhile;
 * only when every slice is in its new cache file and checked against the
 * placement's hash does it map the file and answer Ready (cache.h). A new
 * placement while fetching replaces the fetch (its bytes stay on disk and
 * are resumed when the same file is laid out again).
 *
 * A placement belongs to the coordinator session that made it for as long
 * as that coordinator is heard from at least once per lease (any message
 * counts; coordinators send a heartbeat every second): while it lasts, a
 * different placement from another session is refused, the same placement
 * is acknowledged, and the owner may change it. After the lease, the next
 * coordinator's placement is accepted.
 *
 * With a memory limit (--mem-limit) the held experts go through an expert
 * store (common/expert_store.h): a placement reads experts up to the limit,
 * the others are read from the file when a request needs them (and with
 * --mem-prefetch ahead, from the transitions between the layers of its own
 * requests); a read that
 * fails answers that request with an ErrorReply, which makes the
 * coordinator compute the share itself.
 *
 * Status lines (time stamped, one per event) go to the params' log: a
 * coordinator connecting, experts hashed, a placement accepted (with the
 * resident memory after it) or refused and why, the owner lost, and the
 * counts served at shutdown.
 */
#ifndef MC_NODE_H
#define MC_NODE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef struct {
    const char *model;  // GGUF file: a whole model or an experts-only file (moe-split); or
    const char *cache_dir; // no model file: experts fetched from the coordinator into this
                           // folder (cache.h); exactly one of model and cache_dir
    uint32_t cache_mb;     // bound of the cache folder in MiB; 0: none
    uint32_t fetch_chunk_kib; // bytes asked for per request while fetching (KiB)
    const char *listen; // ZeroMQ endpoint to bind, e.g. tcp://*:5555 or tcp://127.0.0.1:*
                        // (NULL: no socket, only mc_node_handle)
    const char *name;   // reported to coordinators; NULL: the host name
    int threads;        // compute threads
    uint32_t lease_ms;  // how long a silent coordinator keeps its placement
    const char *secret_key;      // CURVE secret key file (guard.h); NULL: no encryption
    const char *authorized_keys; // coordinators' public keys, one per line (with secret_key)
    FILE *log;          // status lines (see above); NULL: quiet. Open until mc_node_destroy: with
                        // CURVE the key check thread logs refusals as long as the socket is bound,
                        // after mc_node_run has returned too
    bool profile;       // --profile: measure this machine for moe-plan and exit (profile.h)
    uint32_t mem_limit_mb; // --mem-limit: the held experts' resident bytes at most (expert_store.h); 0: all resident
    bool mem_prefetch;     // --mem-prefetch: read ahead what the transitions between its requests' layers predict
    bool announce;         // --announce: publish _moe-expert._tcp over mDNS (main.c, discovery.h)
} mc_node_params_t;

// Three of the coordinators' 1 s heartbeats.
#define MC_NODE_DEFAULT_LEASE_MS 3000u

// Threads: online CPUs, at most 8; lease MC_NODE_DEFAULT_LEASE_MS; everything
// else NULL.
mc_node_params_t mc_node_params_default(void);

// Parse the moe-expert command line into p (strings borrowed from argv);
// *help is set for --help. MC_ERR_ARG with a one-line message otherwise.
mc_err_t mc_node_parse_args(int argc, char **argv, mc_node_params_t *p, bool *help, char *err);

// Print --help (every flag with its default) to f.
void mc_node_usage(FILE *f);

typedef struct mc_node mc_node_t;

// Open the model and bind the socket (ready to serve). NULL on failure.
mc_node_t *mc_node_new(const mc_node_params_t *p, char *err);
void mc_node_destroy(mc_node_t **n);

// The endpoint actually bound (a tcp://host:* wildcard resolved to its port).
const char *mc_node_endpoint(const mc_node_t *n);

// The name it reports to coordinators (--name, or the host name).
const char *mc_node_name(const mc_node_t *n);

// Bytes of slices fetched from coordinators since the node started (a node
// without a model file); readable from any thread.
uint64_t mc_node_fetched_bytes(const mc_node_t *n);

// Handle one message as if it had come from peer (its routing id, at most
// 256 bytes) and encode the reply, if it gets one, into *reply (malloc'd;
// NULL when the message is dropped). The serving loop runs the same code
// for every message it receives; tests and fuzzers call this directly (not
// while mc_node_run serves the same node).
mc_err_t mc_node_handle(mc_node_t *n, const void *peer, size_t peer_len, const void *msg, size_t len, uint8_t **reply,
                        size_t *reply_len, char *err);

// Serve until *stop becomes non-zero (checked at least every 100 ms; a
// signal handler may set it to the signal's number, which the last status
// line names: atomic_int is lock-free, see node.c). Returns MC_OK then, or
// MC_ERR_NET if the socket fails.
mc_err_t mc_node_run(mc_node_t *n, const atomic_int *stop, char *err);

#endif
