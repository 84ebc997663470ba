/*
 * node: socket loop, handshake, placement (which experts are resident) and
 * expert computation for moe-expert.
 */
#include "node.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cache.h"
#include "clock.h"
#include "expert_file.h"
#include "expert_store.h"
#include "guard.h"
#include "flags.h"
#include "kernel.h"
#include "log.h"
#include "matmul.h"
#include "model.h"
#include "moe.h"
#include "parse.h"
#include "pool.h"
#include "slice_index.h"
#include "wire.h"

// A signal handler may only touch lock-free atomics (or volatile sig_atomic_t);
// an atomic_int also works for a test thread stopping an in-process node.
static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag must be lock-free");

#define MC_NODE_POLL_MS 100
#define MC_NODE_SEND_TIMEOUT_MS 1000
#define MC_NODE_PING_MS 250 // transport PINGs: twice within a coordinator's smallest dead_ms (see s_bind)
#define MC_NODE_ID_MAX 256 // ZeroMQ routing ids are at most 255 bytes
#define MC_NODE_FETCH_WINDOW 8       // slice requests in flight while fetching
#define MC_NODE_FETCH_STALL_MS 5000  // no chunk for this long: ask again (the coordinator may have restarted)
// A node without a model file learns the model's shape after its socket
// is bound: its message cap is set for the largest models it takes.
#define MC_NODE_CACHE_MAX_DIM 8192
#define MC_NODE_CACHE_MAX_K 16

struct mc_node {
    mc_model_t *model;
    mc_pool_t *pool;
    mc_matmul_t *mm;
    mc_moe_t *moe;
    void *zctx, *sock;
    mc_guard_t *guard;    // CURVE and the key check; NULL: open (loopback use)
    char name[MC_WIRE_NAME_MAX + 1];
    char endpoint[256];
    int threads;
    uint64_t fingerprint;
    mc_slice_index_t *slices; // this file's slice hashes: loaded, or hashed as placements name them
    mc_wire_limits_t lim; // lim.held points at held
    uint8_t *held;        // (n_layer, n_expert) current placement
    bool repacked;        // mc_model_repack ran for held
    uint64_t mem_limit;   // --mem-limit in bytes; 0: every held expert resident
    mc_expert_store_t *store; // the held experts within mem_limit (attached to model); NULL without a limit
    bool mem_prefetch;    // --mem-prefetch
    // Owner of the placement: its session, the routing id it last spoke
    // from, when it was last heard from, and whether its lease ran out.
    uint8_t owner[MC_NODE_ID_MAX];
    size_t owner_len; // 0: no owner
    uint64_t owner_session;
    uint64_t owner_seen_ms;
    bool owner_lost;
    char owner_name[MC_WIRE_NAME_MAX + 1];
    char owner_addr[64]; // where it spoke from ("10.0.0.5")
    uint32_t lease_ms;
    // The last coordinator to say hello: names the sender of a placement.
    uint8_t hello_id[MC_NODE_ID_MAX];
    size_t hello_id_len;
    char hello_name[MC_WIRE_NAME_MAX + 1];
    mc_wire_stats_t stats;
    FILE *log;
    char who[MC_WIRE_NAME_MAX + 16]; // "moe-expert NAME", the prefix of status lines
    // No model file (--cache-dir): the cache, and the coordinator's metadata
    // n->model is bound to until a cache file is.
    mc_cache_t *cache;
    uint8_t *info_buf;
    uint8_t *verified;    // (n_layer, n_expert, MC_CACHE_KNOWN_BYTES) hashes of n->model's file's slices
    uint32_t chunk;
    // A placement being fetched: who sent it, which, and how far it is.
    mc_cache_fill_t *fill;
    uint8_t fill_peer[MC_NODE_ID_MAX];
    size_t fill_peer_len;
    char fill_addr[64];
    uint64_t fill_request_id, fill_session;
    uint8_t *fill_held;   // (n_layer, n_expert)
    double fill_t0, fill_sent_ms, fill_heard_ms;
    uint64_t fill_next_id, fill_min_id; // our SliceRequest ids; answers below min are stale
    // The coordinator's transfer socket (FetchOpen) and what came from it.
    uint8_t fetch_peer[MC_NODE_ID_MAX];
    size_t fetch_peer_len;
    uint64_t fetch_session;
    atomic_uint_least64_t fetched_bytes;
    // mc_node_handle: replies are kept here instead of sent.
    bool capture;
    uint8_t *captured;
    size_t captured_len;
};

// Who sent a message: its ROUTER routing id and, over TCP, its address.
typedef struct {
    const uint8_t *id;
    size_t len;
    const char *addr; // "10.0.0.5", or "a local peer"
} s_peer_t;

#define S_ROW(name, arg, kind, field) name, arg, kind, offsetof(mc_node_params_t, field)
static const mc_flag_t s_flags[] = {
    {S_ROW("--model", "FILE", MC_FLAG_STRING, model),
     .help = "GGUF model: the coordinator's file, or this node's file from\n"
             "moe-split (this or --cache-dir)"},
    {S_ROW("--cache-dir", "DIR", MC_FLAG_STRING, cache_dir),
     .help = "no model file: fetch the experts a coordinator places here from\n"
             "it and keep them in this folder (restarts fetch nothing)"},
    {S_ROW("--cache-mb", "MIB", MC_FLAG_U32, cache_mb), 0, 0, 16777216,
     .help = "bound of the cache folder; other models' files are evicted\n"
             "to stay within it, a larger placement is refused (0: none)"},
    {S_ROW("--fetch-chunk-kib", "KIB", MC_FLAG_U32, fetch_chunk_kib), 1024, 4, 4096,
     .help = "bytes asked for per request while fetching (a restart\n"
             "resumes from the last whole chunk)"},
    {S_ROW("--listen", "ENDPOINT", MC_FLAG_STRING, listen), .help = "ZeroMQ endpoint to bind, e.g. tcp://*:5555 (required)"},
    {S_ROW("--threads", "N", MC_FLAG_INT, threads), MC_FLAG_DEF_THREADS, 1, 512, .help = "compute threads"},
    {S_ROW("--name", "NAME", MC_FLAG_STRING, name), .help = "name reported to coordinators (default: host name)"},
    {S_ROW("--lease-ms", "MS", MC_FLAG_U32, lease_ms), MC_NODE_DEFAULT_LEASE_MS, 100, 3600000,
     .help = "a placement belongs to its coordinator while it is heard from\n"
             "at least this often (coordinators send a heartbeat every\n"
             "second); a different placement from another coordinator is\n"
             "refused until then, and accepted after"},
    {S_ROW("--secret-key", "FILE", MC_FLAG_STRING, secret_key),
     .help = "this node's CURVE secret key (moe-keygen): traffic is encrypted, and\n"
             "with --authorized-keys only the coordinators it lists may connect"},
    {S_ROW("--authorized-keys", "FILE", MC_FLAG_STRING, authorized_keys),
     .help = "coordinators' public keys, one per line; others are refused and\n"
             "logged. Without both flags anyone who reaches the port can use the\n"
             "node: fine on 127.0.0.1, warned about on any other address"},
    {S_ROW("--mem-limit", "MB", MC_FLAG_U32, mem_limit_mb), 0, 0, 16777216,
     .help = "keep at most MB MiB of the held experts in memory and read the\n"
             "others from the model file when a request needs them; 0: every held\n"
             "expert resident"},
    {S_ROW("--mem-prefetch", NULL, MC_FLAG_SWITCH, mem_prefetch),
     .help = "with --mem-limit: read ahead the experts the layer-to-layer transitions\n"
             "of its own requests predict (off: reads only what a request needs)"},
    {S_ROW("--announce", NULL, MC_FLAG_SWITCH, announce),
     .help = "announce this node on the local network (mDNS/DNS-SD service\n"
             "_moe-expert._tcp through the Avahi daemon) with its name, port and\n"
             "public key, for moe-coordinator --discover and cluster files with\n"
             "discover: true; needs a tcp:// --listen that is not loopback"},
    {S_ROW("--profile", NULL, MC_FLAG_SWITCH, profile),
     .help = "measure this machine with the model (memory, one expert's step for\n"
             "1..32 rows) and print it as a node entry for moe-plan; then exit\n"
             "(the coordinator's entry: moe-coordinator --profile)"},
};
#undef S_ROW
#define S_N_FLAGS (sizeof s_flags / sizeof s_flags[0])

mc_node_params_t mc_node_params_default(void) {
    mc_node_params_t p = {0};
    mc_flags_init(s_flags, S_N_FLAGS, &p);
    return p;
}

void mc_node_usage(FILE *f) {
    fprintf(f, "usage: moe-expert (--model FILE | --cache-dir DIR [--cache-mb MIB]) --listen ENDPOINT [--threads N]\n"
               "                  [--name NAME] [--lease-ms MS] [--mem-limit MB [--mem-prefetch]]\n"
               "                  [--secret-key FILE --authorized-keys FILE] [--announce]\n"
               "\n"
               "Serves the experts a moe-coordinator assigns to this machine. Status lines (who\n"
               "connected, what it holds, what it refused and why) go to stderr; the first stdout\n"
               "line says where it listens.\n"
               "\n");
    mc_flags_usage(f, s_flags, S_N_FLAGS, 22, NULL);
}

mc_err_t mc_node_parse_args(int argc, char **argv, mc_node_params_t *p, bool *help, char *err) {
    mc_node_params_t o = *p;
    mc_err_t rc = mc_flags_parse(s_flags, S_N_FLAGS, argc, argv, &o, help, NULL, err);
    if (rc || *help) return rc;
    if (o.profile && !o.model) return mc_err_set(err, MC_ERR_ARG, "--profile needs --model");
    if (!o.model == !o.cache_dir) return mc_err_set(err, MC_ERR_ARG, "give --model or --cache-dir, one of them (see --help)");
    if (!o.listen && !o.profile) return mc_err_set(err, MC_ERR_ARG, "--listen is required (see --help)");
    if (o.mem_prefetch && !o.mem_limit_mb) return mc_err_set(err, MC_ERR_ARG, "--mem-prefetch goes with --mem-limit");
    if (!o.secret_key != !o.authorized_keys)
        return mc_err_set(err, MC_ERR_ARG, "--secret-key and --authorized-keys go together");
    if (o.announce && o.listen) {
        const char *h = strncmp(o.listen, "tcp://", 6) ? NULL : o.listen + 6;
        if (!h || !strncmp(h, "127.", 4) || !strncmp(h, "localhost:", 10) || !strncmp(h, "[::1]:", 6))
            return mc_err_set(err, MC_ERR_ARG, "--announce needs a tcp:// --listen other machines can reach (not %s)",
                              o.listen);
    }
    *p = o;
    return MC_OK;
}

// --- lifetime ---------------------------------------------------------------------

static mc_err_t s_set_name(mc_node_t *n, const char *name, char *err) {
    char host[256];
    if (!name) {
        if (gethostname(host, sizeof host) != 0) return mc_err_set(err, MC_ERR_IO, "cannot read the host name");
        host[sizeof host - 1] = 0;
        name = host;
    }
    size_t len = strlen(name);
    if (len == 0 || len > MC_WIRE_NAME_MAX)
        return mc_err_set(err, MC_ERR_ARG, "node name must have 1..%d characters", MC_WIRE_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x21 || name[i] > 0x7e) return mc_err_set(err, MC_ERR_ARG, "node name '%s' must be printable ASCII without spaces", name);
    memcpy(n->name, name, len + 1);
    return MC_OK;
}

// An endpoint other machines can reach: tcp on anything but loopback.
static bool s_exposed(const char *endpoint) {
    if (strncmp(endpoint, "tcp://", 6)) return false;
    const char *h = endpoint + 6;
    return strncmp(h, "127.", 4) && strncmp(h, "localhost:", 10) && strncmp(h, "[::1]:", 6);
}

// The host of a tcp:// endpoint ("*", an IPv4 address, [an IPv6 address],
// an interface or a host name), without the port.
static bool s_host(const char *endpoint, char *host, size_t cap) {
    if (strncmp(endpoint, "tcp://", 6)) return false;
    const char *h = endpoint + 6, *colon = strrchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= cap) return false;
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = 0;
    return true;
}

static bool s_ipv4(const char *host) {
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1;
}

// ZeroMQ binds addresses and interface names but looks up no host names
// (tcp://localhost:5555 failed with "No such device"). A name is bound on
// each address it resolves to, all on one port, so a coordinator reaches the
// node whichever one it picks (localhost: 127.0.0.1 and ::1); addresses this
// machine does not have are passed over. The endpoint reported keeps the name.
static mc_err_t s_bind_name(mc_node_t *n, const char *endpoint, const char *host, char *err) {
    char port[16];
    snprintf(port, sizeof port, "%s", strrchr(endpoint, ':') + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai) return mc_err_set(err, MC_ERR_NET, "cannot listen on %s: %s", endpoint, gai_strerror(gai));
    mc_err_t rc = MC_OK;
    int bound = 0, last_errno = ENODEV;
    for (struct addrinfo *ai = res; ai && !rc; ai = ai->ai_next) {
        bool seen = false; // hosts files may list an address twice
        for (struct addrinfo *b = res; b != ai && !seen; b = b->ai_next)
            seen = b->ai_addrlen == ai->ai_addrlen && !memcmp(b->ai_addr, ai->ai_addr, ai->ai_addrlen);
        char addr[NI_MAXHOST], one[sizeof n->endpoint];
        if (seen || getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST)) continue;
        snprintf(one, sizeof one, ai->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", addr, port);
        if (zmq_bind(n->sock, one) != 0) {
            last_errno = zmq_errno();
            if (last_errno != EADDRNOTAVAIL && last_errno != ENODEV && last_errno != EAFNOSUPPORT)
                rc = mc_err_set(err, MC_ERR_NET, "cannot listen on %s (%s): %s", endpoint, one, zmq_strerror(last_errno));
            continue;
        }
        // A port left to the system ("*" or 0) is the first address's for the others.
        size_t len = sizeof one;
        if (bound++ == 0 && zmq_getsockopt(n->sock, ZMQ_LAST_ENDPOINT, one, &len) == 0)
            snprintf(port, sizeof port, "%s", strrchr(one, ':') + 1);
    }
    freeaddrinfo(res);
    if (!rc && !bound) rc = mc_err_set(err, MC_ERR_NET, "cannot listen on %s: %s", endpoint, zmq_strerror(last_errno));
    if (!rc && snprintf(n->endpoint, sizeof n->endpoint, "tcp://%s:%s", host, port) >= (int)sizeof n->endpoint)
        rc = mc_err_set(err, MC_ERR_ARG, "cannot listen on %s: too long", endpoint);
    return rc;
}

static mc_err_t s_bind(mc_node_t *n, const mc_node_params_t *p, char *err) {
    const char *endpoint = p->listen;
    if (!(n->zctx = zmq_ctx_new()) || !(n->sock = zmq_socket(n->zctx, ZMQ_ROUTER)))
        return mc_err_set(err, MC_ERR_NET, "cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
    // The key check runs before the socket can take a connection.
    if (p->secret_key) {
        if (!(n->guard = mc_guard_new(n->zctx, p->secret_key, p->authorized_keys, n->log, n->who, err)))
            return mc_err_code(err, MC_ERR_ARG);
        mc_err_t rc = mc_guard_protect(n->guard, n->sock, err);
        if (rc) return rc;
    } else if (s_exposed(endpoint)) {
        mc_log_status(n->log, n->who,
                      "warning: listening on %s without --secret-key/--authorized-keys: anyone who can reach this "
                      "port can send it work and read the activations it is sent",
                      endpoint);
    }
    // Oversized messages must be refused by ZeroMQ before they are buffered,
    // so the cap is set before the socket can receive anything.
    int64_t max = mc_wire_max_msg_bytes(&n->lim);
    if (n->cache) {
        const mc_wire_limits_t big = {MC_SLICE_INDEX_MAX_LAYERS, MC_SLICE_INDEX_MAX_EXPERTS, MC_NODE_CACHE_MAX_DIM,
                                      MC_WIRE_MAX_ROWS, MC_NODE_CACHE_MAX_K, NULL, 0};
        max = mc_wire_max_msg_bytes(&big);
    }
    int linger = 0, sndtimeo = MC_NODE_SEND_TIMEOUT_MS;
    // Transport heartbeats: ZeroMQ's I/O thread PINGs every coordinator
    // while this thread computes or a long request is still arriving, which
    // is how a coordinator tells a busy node from a dead one (its dead_ms).
    // A node never drops a coordinator for silence (timeout 0): the lease
    // decides what silence means here.
    int ping_ivl = MC_NODE_PING_MS, no_timeout = 0;
    size_t len = sizeof n->endpoint;
    if (zmq_setsockopt(n->sock, ZMQ_MAXMSGSIZE, &max, sizeof max) || zmq_setsockopt(n->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(n->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) ||
        zmq_setsockopt(n->sock, ZMQ_HEARTBEAT_IVL, &ping_ivl, sizeof ping_ivl) ||
        zmq_setsockopt(n->sock, ZMQ_HEARTBEAT_TIMEOUT, &no_timeout, sizeof no_timeout))
        return mc_err_set(err, MC_ERR_NET, "socket options: %s", zmq_strerror(zmq_errno()));
    // IPv6 needs ZMQ_IPV6, and the socket then takes both families ("*" is
    // [::], IPv4 clients included). An IPv4 address or an interface name
    // keeps a plain IPv4 socket: bound and reported exactly as before (not as
    // [::ffff:a.b.c.d], not on the interface's IPv6 address).
    char host[256];
    bool named = false;
    int ipv6 = 1;
    if (s_host(endpoint, host, sizeof host) && host[0] != '[' && strcmp(host, "*")) {
        if (s_ipv4(host) || if_nametoindex(host)) ipv6 = 0;
        else named = true;
    }
    if (zmq_setsockopt(n->sock, ZMQ_IPV6, &ipv6, sizeof ipv6))
        return mc_err_set(err, MC_ERR_NET, "socket options: %s", zmq_strerror(zmq_errno()));
    if (named) return s_bind_name(n, endpoint, host, err);
    if (zmq_bind(n->sock, endpoint) != 0)
        return mc_err_set(err, MC_ERR_NET, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
    if (zmq_getsockopt(n->sock, ZMQ_LAST_ENDPOINT, n->endpoint, &len) != 0)
        return mc_err_set(err, MC_ERR_NET, "cannot read the bound endpoint: %s", zmq_strerror(zmq_errno()));
    return MC_OK;
}

// Make m (owned from now on) the node's model: its shape sets the limits
// of what it accepts; nothing of the old one is held any more. info: the
// buffer m's metadata lives in (a model learnt from a coordinator), or NULL.
static mc_err_t s_set_model(mc_node_t *n, mc_model_t *m, uint8_t *info, char *err) {
    const size_t cells = (size_t)m->hp.n_layer * m->hp.n_expert;
    uint8_t *held = calloc(cells + 1, 1), *verified = calloc(cells * MC_CACHE_KNOWN_BYTES + 1, 1);
    if (!held || !verified) {
        free(held), free(verified), free(info);
        mc_model_destroy(&m);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (n->model) n->model->store = NULL;
    mc_expert_store_destroy(&n->store); // it reads the old model's file
    mc_model_destroy(&n->model);
    free(n->info_buf), free(n->held), free(n->verified);
    n->model = m, n->info_buf = info, n->held = held, n->verified = verified;
    n->repacked = false;
    n->fingerprint = mc_model_fingerprint(m);
    n->lim = mc_wire_limits(m);
    n->lim.held = n->held;
    return MC_OK;
}

mc_node_t *mc_node_new(const mc_node_params_t *p, char *err) {
    if ((!p->model && !p->cache_dir) || p->threads < 1) {
        mc_err_set(err, MC_ERR_ARG, "a node needs a model or a cache folder, and at least one thread");
        return NULL;
    }
    mc_node_t *n = calloc(1, sizeof *n);
    if (!n) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    n->threads = p->threads;
    n->lease_ms = p->lease_ms;
    n->log = p->log;
    if (s_set_name(n, p->name, err) != MC_OK) {
        mc_node_destroy(&n);
        return NULL;
    }
    snprintf(n->who, sizeof n->who, "moe-expert %s", n->name);
    if (p->cache_dir) {
        const mc_cache_params_t cp = {p->cache_dir, (uint64_t)p->cache_mb << 20,
                                      (p->fetch_chunk_kib ? p->fetch_chunk_kib : 1024) * 1024u, p->log, n->who};
        if (!(n->cache = mc_cache_new(&cp, err))) {
            mc_node_destroy(&n);
            return NULL;
        }
        n->chunk = cp.chunk_bytes;
    } else {
        mc_model_t *m = mc_model_open_node(p->model, err);
        if (!m || s_set_model(n, m, NULL, err) || !(n->slices = mc_slice_index_open(n->model, p->model, NULL, err))) {
            mc_node_destroy(&n);
            return NULL;
        }
    }
    if (!(n->pool = mc_pool_new(p->threads)) || !(n->mm = mc_matmul_new(n->pool, mc_kernel_best_isa())) ||
        !(n->moe = mc_moe_new(n->mm))) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        mc_node_destroy(&n);
        return NULL;
    }
    n->mem_limit = (uint64_t)p->mem_limit_mb << 20;
    n->mem_prefetch = p->mem_prefetch;
    const uint64_t least = n->model ? mc_expert_store_min_bytes(n->model, NULL) : 0; // a cache's: at placement
    if (n->mem_limit && n->mem_limit < least) {
        mc_err_set(err, MC_ERR_ARG, "--mem-limit %u MiB is below one expert of %s (%.1f MiB): the least is %llu",
                   p->mem_limit_mb, p->model, least / 1048576.0, (unsigned long long)((least + 1048575) >> 20));
        mc_node_destroy(&n);
        return NULL;
    }
    if (p->listen && s_bind(n, p, err) != MC_OK) {
        mc_node_destroy(&n);
        return NULL;
    }
    if (n->cache) {
        mc_log_status(n->log, n->who,
                      "serving on %s without a model file: experts fetched from the coordinator into %s%s (threads %d, "
                      "lease %u ms)%s%s",
                      p->listen ? n->endpoint : "no socket", p->cache_dir, p->cache_mb ? "" : ", unbounded", n->threads,
                      n->lease_ms, n->guard ? "; CURVE on, public key " : "", n->guard ? mc_guard_public_key(n->guard) : "");
        return n;
    }
    const mc_hparams_t *hp = &n->model->hp;
    mc_log_status(n->log, n->who,
                  "serving %s%s on %s (%u layers x %u experts, fingerprint %016llx, threads %d, lease %u ms)%s%s", p->model,
                  n->model->experts_only ? " (experts-only)" : "", p->listen ? n->endpoint : "no socket", hp->n_layer,
                  hp->n_expert, (unsigned long long)n->fingerprint, n->threads, n->lease_ms,
                  n->guard ? "; CURVE on, public key " : "", n->guard ? mc_guard_public_key(n->guard) : "");
    if (mc_slice_index_path(n->slices))
        mc_log_status(n->log, n->who, "slice hashes of %zu of %u experts loaded from %s", mc_slice_index_known(n->slices),
                      hp->n_layer * hp->n_expert, mc_slice_index_path(n->slices));
    if (mc_slice_index_note(n->slices)[0]) mc_log_status(n->log, n->who, "slice index: %s", mc_slice_index_note(n->slices));
    return n;
}

void mc_node_destroy(mc_node_t **pn) {
    if (!pn || !*pn) return;
    mc_node_t *n = *pn;
    // The socket goes before its key check: never a moment without one.
    if (n->sock) zmq_close(n->sock);
    mc_guard_destroy(&n->guard);
    if (n->zctx) zmq_ctx_term(n->zctx);
    mc_moe_destroy(&n->moe);
    if (n->model) n->model->store = NULL;
    mc_expert_store_destroy(&n->store);
    mc_matmul_destroy(&n->mm);
    mc_pool_destroy(&n->pool);
    mc_slice_index_destroy(&n->slices);
    mc_cache_fill_destroy(&n->fill);
    mc_cache_destroy(&n->cache);
    mc_model_destroy(&n->model);
    free(n->held), free(n->verified), free(n->info_buf), free(n->fill_held);
    free(n);
    *pn = NULL;
}

const char *mc_node_endpoint(const mc_node_t *n) { return n->endpoint; }

const char *mc_node_name(const mc_node_t *n) { return n->name; }

uint64_t mc_node_fetched_bytes(const mc_node_t *n) { return atomic_load(&((mc_node_t *)n)->fetched_bytes); }

// --- replies ----------------------------------------------------------------------

static void s_free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void s_send(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *reply) {
    uint8_t *buf;
    size_t len;
    char err[MC_ERR_LEN];
    if (mc_wire_encode(reply, &buf, &len, err) != MC_OK) {
        MC_LOGE("cannot encode a %s reply: %s", mc_wire_kind_name(reply->kind), err);
        return;
    }
    if (n->capture) { // the last reply is kept (a placement's Progress comes before its Ready)
        free(n->captured);
        n->captured = buf, n->captured_len = len;
        n->stats.bytes_out += len;
        return;
    }
    zmq_msg_t body;
    zmq_msg_init_data(&body, buf, len, s_free_buf, NULL);
    // A ROUTER drops messages for peers that are gone or not reading, so a
    // vanished coordinator never blocks the node.
    if (zmq_send(n->sock, id->id, id->len, ZMQ_SNDMORE) < 0 || zmq_msg_send(&body, n->sock, 0) < 0) {
        MC_LOGW("reply not sent: %s", zmq_strerror(zmq_errno()));
        zmq_msg_close(&body);
        return;
    }
    n->stats.bytes_out += len;
}

static void s_send_error(mc_node_t *n, const s_peer_t *id, uint64_t request_id, mc_err_t code, const char *msg) {
    mc_wire_msg_t r = {.kind = MC_WIRE_MSG_ERROR, .request_id = request_id};
    r.u.error.code = code;
    // Messages lead with the node name so a coordinator can pass them on as they are.
    int w = snprintf(r.u.error.message, sizeof r.u.error.message, "node %s: ", n->name);
    snprintf(r.u.error.message + w, sizeof r.u.error.message - (size_t)w, "%s", msg);
    n->stats.errors++;
    s_send(n, id, &r);
}

// --- placement --------------------------------------------------------------------

static uint64_t s_resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2) resident = 0;
    fclose(f);
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

// Apply madvise advice to the whole pages covering a matrix; WILLNEED also
// reads one byte per page so the share is resident when Ready is sent.
static uint64_t s_advise(const mc_matrix_t *w, int advice) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (size_t)mc_matrix_bytes(w);
    uintptr_t start = (uintptr_t)w->data / page * page;
    uintptr_t end = ((uintptr_t)w->data + bytes + page - 1) / page * page;
    if (madvise((void *)start, end - start, advice) != 0) MC_LOGW("madvise: %s", strerror(errno));
    if (advice == MADV_WILLNEED) {
        volatile uint8_t sink = 0;
        for (size_t off = 0; off < bytes; off += page) sink ^= w->data[off];
        sink ^= w->data[bytes - 1];
        (void)sink;
    }
    return bytes;
}

// Loading a placement: progress goes to the coordinator that sent it (a
// Progress answer to its Assign, at most every S_PROGRESS_MS), so its wait
// is bounded by loading that stalls, not by how long loading takes.
#define S_PROGRESS_MS 250.0

typedef struct {
    mc_node_t *n;
    const s_peer_t *id;
    uint64_t request_id;
    uint64_t base;  // bytes done before the current phase
    uint64_t total; // bytes to hash (experts not hashed yet) and to load (the held experts)
    double sent_ms;
} s_load_t;

// done: bytes of the current phase (ld->base before it).
static void s_load_report(s_load_t *ld, uint64_t done, bool force) {
    const double now = mc_clock_ms();
    if (!force && now - ld->sent_ms < S_PROGRESS_MS) return;
    done += ld->base;
    if (done > ld->total) done = ld->total;
    mc_wire_msg_t p = {.kind = MC_WIRE_MSG_PROGRESS, .request_id = ld->request_id};
    p.u.progress = (mc_wire_progress_t){done, ld->total, 0, 0};
    s_send(ld->n, ld->id, &p);
    ld->sent_ms = now;
}

// mc_model_progress_t of the hashing and repacking phases.
static void s_load_step(void *ctx, uint64_t done) { s_load_report(ctx, done, false); }


// Weight bytes of the experts held in want.
static uint64_t s_held_bytes(const mc_node_t *n, const uint8_t *want) {
    const mc_hparams_t *hp = &n->model->hp;
    uint64_t bytes = 0;
    for (size_t i = 0; i < (size_t)hp->n_layer * hp->n_expert; i++)
        if (want[i]) bytes += mc_model_expert_bytes(n->model, (uint32_t)(i / hp->n_expert), (uint32_t)(i % hp->n_expert));
    return bytes;
}

// --memory limit: the held experts through an expert store ------------------------

// A store for the new held set within --mem-limit (replacing the last
// placement's); without one (it could not be made) every held expert stays
// resident as without a limit.
static void s_budget_place(mc_node_t *n) {
    n->model->store = NULL;
    mc_expert_store_destroy(&n->store);
    mc_expert_store_params_t sp = mc_expert_store_params_default();
    sp.budget_bytes = n->mem_limit;
    sp.managed = n->held;
    sp.prefetch = n->mem_prefetch;
    char err[MC_ERR_LEN];
    if (!(n->store = mc_expert_store_new(n->model, n->mm, &sp, err)))
        mc_log_status(n->log, n->who, "no memory limit for this placement (%s): every held expert stays resident", err);
    n->model->store = n->store;
}

// Read held experts up to the limit now, so the first requests find them.
static void s_budget_warm(mc_node_t *n, s_load_t *ld) {
    char err[MC_ERR_LEN];
    const uint64_t t0 = mc_clock_us();
    const mc_model_progress_t progress = {s_load_step, ld};
    if (mc_expert_store_warm(n->store, &progress, err) != MC_OK)
        mc_log_status(n->log, n->who, "reading experts in: %s (requests that need them will fail)", err);
    mc_expert_store_stats_t st;
    mc_expert_store_stats(n->store, &st);
    mc_log_status(n->log, n->who, "memory limit %.0f MiB: %u of %u held experts read in %.0f ms, the rest read when used",
                  n->mem_limit / 1048576.0, st.resident, st.managed, (mc_clock_us() - t0) / 1000.0);
}

// Make `want` the held set and return its pair count (and in *layers_out
// the layers it spans, in *bytes_out its weight bytes).
//
// Order matters for memory: experts no longer held are released first;
// then the held Q4_0 matrices are repacked, each read once from the file
// and its pages released right after; only the matrices served from the
// file's rows are touched to make them resident. Touching a repacked
// matrix's rows would bring its file pages back beside the packed copy (a
// node's memory doubled at every repeated placement that way). A placement
// repeated as it is keeps the repacking it has and touches nothing new.
static uint32_t s_place(mc_node_t *n, const uint8_t *want, s_load_t *ld, uint32_t *layers_out, uint64_t *bytes_out) {
    const mc_hparams_t *hp = &n->model->hp;
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    const bool same = !memcmp(want, n->held, cells);
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            const mc_expert_t *ex = &n->model->layers[l].experts[e];
            size_t i = (size_t)l * hp->n_expert + e;
            if (n->held[i] && !want[i])
                s_advise(&ex->gate, MADV_DONTNEED), s_advise(&ex->up, MADV_DONTNEED), s_advise(&ex->down, MADV_DONTNEED);
        }
    uint64_t bytes = 0;
    uint32_t pairs = 0, layers = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        uint32_t before = pairs;
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            if (!want[(size_t)l * hp->n_expert + e]) continue;
            bytes += mc_model_expert_bytes(n->model, l, e);
            pairs++;
        }
        layers += pairs > before;
    }
    memcpy(n->held, want, cells);
    if (n->mem_limit && (!same || !n->store)) s_budget_place(n);
    // The held experts' Q4_0 rows in the kernels' interleaved layout (only
    // these: a node never multiplies anything else).
    if (!same || !n->repacked) {
        char rerr[MC_ERR_LEN];
        const uint64_t t0 = mc_clock_us();
        const mc_model_progress_t progress = {s_load_step, ld};
        if (mc_model_repack_progress(n->model, n->mm, false, n->held, &progress, rerr) != MC_OK)
            mc_log_status(n->log, n->who, "weights not repacked (%s): products read the file's rows", rerr);
        else if (n->model->packed_bytes)
            mc_log_status(n->log, n->who, "repacked %.1f MiB of Q4_0 expert weights in %.0f ms",
                          n->model->packed_bytes / 1048576.0, (mc_clock_us() - t0) / 1000.0);
        n->repacked = true;
    }
    // What repacking read: the packed matrices' rows.
    uint64_t done = 0;
    for (size_t i = 0; i < cells; i++) {
        if (!n->held[i]) continue;
        const mc_expert_t *ex = &n->model->layers[i / hp->n_expert].experts[i % hp->n_expert];
        const mc_matrix_t *ws[3] = {&ex->gate, &ex->up, &ex->down};
        for (int j = 0; j < 3; j++)
            if (ws[j]->packed) done += mc_matrix_bytes(ws[j]);
    }
    for (size_t i = 0; i < cells && n->store; i++) // the store reads its experts, up to the limit
        if (n->held[i]) done += mc_model_expert_bytes(n->model, (uint32_t)(i / hp->n_expert), (uint32_t)(i % hp->n_expert));
    if (n->store) s_budget_warm(n, ld);
    for (size_t i = 0; i < cells && !n->store; i++) {
        if (!n->held[i]) continue;
        const mc_expert_t *ex = &n->model->layers[i / hp->n_expert].experts[i % hp->n_expert];
        const mc_matrix_t *ws[3] = {&ex->gate, &ex->up, &ex->down};
        for (int j = 0; j < 3; j++) {
            if (ws[j]->packed) continue;
            done += s_advise(ws[j], MADV_WILLNEED);
            s_load_report(ld, done, false);
        }
    }
    *layers_out = layers;
    *bytes_out = bytes;
    return pairs;
}

// Name and address of the coordinator behind peer id, for status lines.
static void s_peer_text(const mc_node_t *n, const s_peer_t *id, char *buf, size_t cap) {
    bool named = n->hello_id_len == id->len && !memcmp(n->hello_id, id->id, id->len);
    snprintf(buf, cap, "%s%s%s", named ? n->hello_name : "", named ? " at " : "", id->addr);
}

// The placement's hashes against this file's own slices: those not known
// yet are hashed now (only the placed ones: a node serving a share never
// reads the rest), on the compute threads, and the index saved for the
// next start. MC_OK when all match, else why in msg.
static mc_err_t s_check_slices(mc_node_t *n, const mc_wire_assign_t *a, s_load_t *ld, char *msg, size_t cap) {
    mc_slice_stats_t st;
    char err[MC_ERR_LEN];
    const mc_model_progress_t progress = {s_load_step, ld};
    mc_slice_index_set_progress(n->slices, &progress);
    mc_err_t rc = mc_slice_index_ensure(n->slices, n->model, a->held, n->pool, false, &st, err);
    mc_slice_index_set_progress(n->slices, NULL);
    if (rc) {
        snprintf(msg, cap, "cannot hash its experts' weights: %.200s", err);
        return rc;
    }
    if (st.slices) {
        const double gib = st.bytes / 1073741824.0;
        mc_log_status(n->log, n->who, "hashed the weights of %u expert%s (%.1f MiB) in %.0f ms (%.2f GiB/s)%s%s%s%s",
                      st.slices, st.slices == 1 ? "" : "s", st.bytes / 1048576.0, st.seconds * 1e3,
                      gib / (st.seconds > 0 ? st.seconds : 1e-9), st.saved ? "; saved to " : "", st.saved ? st.saved : "",
                      st.note[0] ? "; " : "", st.note);
    }
    const uint8_t *mine = mc_slice_index_table(n->slices);
    const size_t cells = (size_t)a->n_layer * a->n_expert;
    size_t pairs = 0, differ = 0, cell = 0, at = 0; // the first mismatch: its cell, its place in the message
    for (size_t i = 0; i < cells; i++) {
        if (!a->held[i]) continue;
        if (memcmp(mine + i * MC_SLICE_HASH_BYTES, a->hashes + pairs * MC_WIRE_HASH_BYTES, MC_SLICE_HASH_BYTES) &&
            !differ++)
            cell = i, at = pairs;
        pairs++;
    }
    if (!differ) return MC_OK;
    const uint32_t layer = (uint32_t)(cell / a->n_expert), e = (uint32_t)(cell % a->n_expert);
    char here[17], there[17];
    for (int b = 0; b < 8; b++) {
        snprintf(here + 2 * b, 3, "%02x", mine[cell * MC_SLICE_HASH_BYTES + b]);
        snprintf(there + 2 * b, 3, "%02x", a->hashes[at * MC_WIRE_HASH_BYTES + b]);
    }
    mc_log_status(n->log, n->who, "expert %u of layer %u of %s: slice hash %s... here, %s... at the coordinator", e,
                  layer, n->model->path ? n->model->path : "the model", here, there);
    snprintf(msg, cap,
             "its model file differs from the coordinator's: expert %u of layer %u has other weights (%zu of the %zu "
             "experts placed %s); start this node with the coordinator's GGUF file",
             e, layer, differ, pairs, differ == 1 ? "differs" : "differ");
    return MC_ERR_ARG;
}

// The sender of an accepted placement owns it (unless it is the same
// placement another live session owns: that one keeps it).
static void s_take_owner(mc_node_t *n, const s_peer_t *id, uint64_t session, uint64_t now_ms) {
    memcpy(n->owner, id->id, id->len);
    n->owner_len = id->len, n->owner_session = session, n->owner_seen_ms = now_ms, n->owner_lost = false;
    bool named = n->hello_id_len == id->len && !memcmp(n->hello_id, id->id, id->len);
    snprintf(n->owner_name, sizeof n->owner_name, "%s", named ? n->hello_name : "?");
    snprintf(n->owner_addr, sizeof n->owner_addr, "%s", id->addr);
}

// An experts-only --model file must hold every expert placed.
static mc_err_t s_check_covered(mc_node_t *n, const mc_wire_assign_t *a, char *msg, size_t cap) {
    const uint32_t ne = n->model->hp.n_expert;
    size_t missing = 0, pairs = 0, first = 0;
    for (size_t i = 0; i < (size_t)n->model->hp.n_layer * ne; i++) {
        if (!a->held[i]) continue;
        pairs++;
        if (!mc_model_has_expert(n->model, (uint32_t)(i / ne), (uint32_t)(i % ne)) && !missing++) first = i;
    }
    if (!missing) return MC_OK;
    snprintf(msg, cap,
             "its experts-only file lacks expert %zu of layer %zu, which the placement names (%zu of %zu placed "
             "missing): split the model for this cluster file (moe-split), or use --cache-dir",
             first % ne, first / ne, missing, pairs);
    return MC_ERR_ARG;
}

// The peer that sent the placement being fetched.
static s_peer_t s_fill_peer(const mc_node_t *n) { return (s_peer_t){n->fill_peer, n->fill_peer_len, n->fill_addr}; }

static void s_fill_report(mc_node_t *n, bool force) {
    const double now = mc_clock_ms();
    if (!n->fill || (!force && now - n->fill_sent_ms < S_PROGRESS_MS)) return;
    uint64_t done, total;
    mc_cache_fill_progress(n->fill, &done, &total, NULL);
    mc_wire_msg_t p = {.kind = MC_WIRE_MSG_PROGRESS, .request_id = n->fill_request_id};
    p.u.progress = (mc_wire_progress_t){done, total, done, total};
    const s_peer_t peer = s_fill_peer(n);
    s_send(n, &peer, &p);
    n->fill_sent_ms = now;
}

static void s_fill_fail(mc_node_t *n, mc_err_t code, const char *why) {
    const s_peer_t peer = s_fill_peer(n);
    mc_log_status(n->log, n->who, "placement of session %016llx not served: %s", (unsigned long long)n->fill_session, why);
    s_send_error(n, &peer, n->fill_request_id, code, why);
    mc_cache_fill_destroy(&n->fill);
}

static void s_ready(mc_node_t *n, const s_peer_t *id, uint64_t request_id, uint64_t session, const uint8_t *held,
                    s_load_t *ld, double t0, const char *peer);

// Every slice is in place: bind the new file (its placed slices all
// checked), load the placement and answer Ready.
static void s_fill_complete(mc_node_t *n) {
    char err[MC_ERR_LEN];
    mc_model_t *nm = NULL;
    uint64_t done, total, resumed;
    mc_cache_fill_progress(n->fill, &done, &total, &resumed);
    if (mc_cache_fill_finish(n->fill, &nm, err)) {
        s_fill_fail(n, MC_ERR_IO, err);
        return;
    }
    if (nm && s_set_model(n, nm, NULL, err)) {
        mc_cache_fill_destroy(&n->fill);
        const s_peer_t peer = s_fill_peer(n);
        s_send_error(n, &peer, n->fill_request_id, MC_ERR_NOMEM, err);
        return;
    }
    // Every placed slice of the file now open was checked on its way in.
    mc_cache_fill_known(n->fill, n->verified);
    mc_cache_fill_destroy(&n->fill);
    const double secs = (mc_clock_ms() - n->fill_t0) / 1e3;
    if (total)
        mc_log_status(n->log, n->who, "fetched %.1f MiB of experts in %.1f s (%.1f MiB/s)%s; cache file %s", done / 1048576.0,
                      secs, done / 1048576.0 / (secs > 0 ? secs : 1e-9), resumed ? " after resuming" : "",
                      n->model->path ? n->model->path : "");
    const s_peer_t peer = s_fill_peer(n);
    s_load_t ld = {.n = n, .id = &peer, .request_id = n->fill_request_id};
    char who[MC_WIRE_NAME_MAX + 64];
    s_peer_text(n, &peer, who, sizeof who);
    s_ready(n, &peer, n->fill_request_id, n->fill_session, n->fill_held, &ld, n->fill_t0, who);
}

// Ask the coordinator's transfer socket for chunks, a window at a time.
static void s_fill_pump(mc_node_t *n) {
    if (!n->fill || !n->fetch_peer_len || n->fetch_session != n->fill_session) return;
    const double now = mc_clock_ms();
    if (mc_cache_fill_outstanding(n->fill) && now - n->fill_heard_ms > MC_NODE_FETCH_STALL_MS) {
        // Nothing for a while: the coordinator's transfer socket may be new
        // (it restarted); what was asked is asked again.
        mc_cache_fill_rewind(n->fill);
        n->fill_min_id = n->fill_next_id + 1;
    }
    const s_peer_t fp = {n->fetch_peer, n->fetch_peer_len, "the coordinator's transfer socket"};
    mc_wire_msg_t q = {.kind = MC_WIRE_MSG_SLICE_REQUEST};
    while (mc_cache_fill_outstanding(n->fill) < MC_NODE_FETCH_WINDOW && mc_cache_fill_next(n->fill, &q.u.slice_request)) {
        if (!mc_cache_fill_outstanding(n->fill) || mc_cache_fill_outstanding(n->fill) == 1) n->fill_heard_ms = now;
        q.request_id = ++n->fill_next_id;
        s_send(n, &fp, &q);
    }
}

static void s_fill_start(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m, const char *peer, bool take,
                         uint64_t now_ms) {
    const mc_wire_assign_t *a = &m->u.assign;
    char why[MC_ERR_LEN];
    if (!a->types) {
        snprintf(why, sizeof why, "the placement has no tensor types, which a node without a model file needs: the "
                                  "coordinator is of an older release");
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s",
                      (unsigned long long)a->session_id, peer, why);
        s_send_error(n, id, m->request_id, MC_ERR_UNSUPPORTED, why);
        return;
    }
    if (n->fill) {
        mc_log_status(n->log, n->who, "a new placement replaces the one being fetched (its bytes stay in the cache)");
        mc_cache_fill_destroy(&n->fill);
    }
    const size_t cells = (size_t)n->lim.n_layer * n->lim.n_expert;
    uint8_t *held = malloc(cells + 1);
    if (!held) {
        s_send_error(n, id, m->request_id, MC_ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(held, a->held, cells);
    free(n->fill_held);
    n->fill_held = held;
    memcpy(n->fill_peer, id->id, id->len);
    n->fill_peer_len = id->len;
    snprintf(n->fill_addr, sizeof n->fill_addr, "%s", id->addr);
    n->fill_request_id = m->request_id, n->fill_session = a->session_id;
    n->fill_t0 = mc_clock_ms();
    // Hashing what the cache has, told as loading progress.
    s_load_t ld = {.n = n, .id = id, .request_id = m->request_id};
    for (size_t i = 0, p = 0; i < cells; i++)
        if (a->held[i]) {
            const mc_dtype_t t[3] = {a->types[3 * p], a->types[3 * p + 1], a->types[3 * p + 2]};
            ld.total += mc_expert_file_slice_bytes(&n->model->hp, t);
            p++;
        }
    s_load_report(&ld, 0, true);
    const mc_model_progress_t progress = {s_load_step, &ld};
    const mc_cache_want_t want = {a->held, a->hashes, a->types};
    if (!(n->fill = mc_cache_fill_new(n->cache, n->model, &want, n->verified, &progress, why))) {
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s",
                      (unsigned long long)a->session_id, peer, why);
        s_send_error(n, id, m->request_id, MC_ERR_ARG, why);
        return;
    }
    if (take) s_take_owner(n, id, a->session_id, now_ms);
    if (mc_cache_fill_done(n->fill)) {
        s_fill_complete(n);
        return;
    }
    uint64_t done, total, resumed;
    mc_cache_fill_progress(n->fill, &done, &total, &resumed);
    char res[64] = "";
    if (resumed) snprintf(res, sizeof res, " (resuming: %.1f MiB already here)", resumed / 1048576.0);
    mc_log_status(n->log, n->who, "fetching %.1f MiB of experts from coordinator %s%s", total / 1048576.0, peer, res);
    n->fill_min_id = n->fill_next_id + 1;
    n->fill_heard_ms = mc_clock_ms();
    s_fill_report(n, true);
    s_fill_pump(n);
}

static void s_on_fetch_open(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    const bool changed = n->fetch_peer_len != id->len || memcmp(n->fetch_peer, id->id, id->len) ||
                         n->fetch_session != m->u.fetch_open;
    memcpy(n->fetch_peer, id->id, id->len);
    n->fetch_peer_len = id->len;
    n->fetch_session = m->u.fetch_open;
    // The owner's transfer socket speaks for it while the fetch keeps its
    // data socket quiet.
    if (n->owner_len && n->owner_session == n->fetch_session) n->owner_seen_ms = mc_clock_us() / 1000;
    if (changed && n->fill && n->fill_session == n->fetch_session) {
        mc_cache_fill_rewind(n->fill);
        n->fill_min_id = n->fill_next_id + 1;
    }
    s_fill_pump(n);
}

static void s_on_slice_data(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    if (!n->fill || id->len != n->fetch_peer_len || memcmp(id->id, n->fetch_peer, id->len) || m->request_id < n->fill_min_id)
        return; // stale: an earlier fetch's, or asked for again since
    char err[MC_ERR_LEN];
    mc_err_t rc = mc_cache_fill_put(n->fill, &m->u.slice_data, err);
    n->fill_heard_ms = mc_clock_ms();
    if (n->owner_len && n->owner_session == n->fill_session) n->owner_seen_ms = mc_clock_us() / 1000;
    if (rc == MC_OK) {
        atomic_fetch_add(&n->fetched_bytes, m->u.slice_data.len);
        if (mc_cache_fill_done(n->fill)) {
            s_fill_complete(n);
            return;
        }
    } else if (rc == MC_ERR_IO) {
        s_fill_fail(n, MC_ERR_IO, err);
        return;
    } else {
        mc_log_status(n->log, n->who, "fetch: %s", err);
        if (rc == MC_ERR_FORMAT) mc_cache_fill_rewind(n->fill);
        n->fill_min_id = n->fill_next_id + 1;
    }
    s_fill_report(n, false);
    s_fill_pump(n);
}

static void s_on_assign(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    const mc_wire_assign_t *a = &m->u.assign;
    size_t cells = (size_t)n->lim.n_layer * n->lim.n_expert, id_len = id->len;
    uint64_t now_ms = mc_clock_us() / 1000;
    char peer[MC_WIRE_NAME_MAX + 64];
    s_peer_text(n, id, peer, sizeof peer);
    bool same = !memcmp(a->held, n->held, cells);
    bool active = n->owner_len && now_ms - n->owner_seen_ms < n->lease_ms;
    // A placement belongs to a session, not to a socket: a coordinator that
    // reconnects (after losing this node for a while) keeps it.
    bool mine = n->owner_len && n->owner_session == a->session_id;
    if (!same && active && !mine) {
        char msg[MC_ERR_LEN];
        snprintf(msg, sizeof msg, "already serving a different placement for coordinator session %016llx (heard from %llu ms ago); "
                 "the same placement is accepted", (unsigned long long)n->owner_session, (unsigned long long)(now_ms - n->owner_seen_ms));
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s", (unsigned long long)a->session_id,
                      peer, msg);
        s_send_error(n, id, m->request_id, MC_ERR_BUSY, msg);
        return;
    }
    if (n->cache) {
        s_fill_start(n, id, m, peer, !active || mine, now_ms);
        return;
    }
    char why[MC_ERR_LEN];
    mc_err_t rc;
    if (n->model->experts_only && (rc = s_check_covered(n, a, why, sizeof why))) {
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s", (unsigned long long)a->session_id,
                      peer, why);
        s_send_error(n, id, m->request_id, rc, why);
        return;
    }
    // Loading, told to the coordinator as it goes: hashing the experts not
    // hashed before, then repacking and reading in the held ones.
    s_load_t ld = {.n = n, .id = id, .request_id = m->request_id};
    const double t0 = mc_clock_ms();
    const uint64_t to_hash = mc_slice_index_todo_bytes(n->slices, n->model, a->held);
    ld.total = to_hash + s_held_bytes(n, a->held);
    s_load_report(&ld, 0, true);
    rc = s_check_slices(n, a, &ld, why, sizeof why);
    if (rc) {
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s", (unsigned long long)a->session_id,
                      peer, why);
        s_send_error(n, id, m->request_id, rc, why);
        return;
    }
    if (!active || mine) s_take_owner(n, id, a->session_id, now_ms);
    (void)id_len;
    ld.base = to_hash;
    s_ready(n, id, m->request_id, a->session_id, a->held, &ld, t0, peer);
}

// The MXFP4 scales of the held experts a node multiplies from the mapping
// (no --mem-limit: loading reads them all in anyway); a store checks the
// experts it reads itself (expert_store.h).
static mc_err_t s_check_share(const mc_node_t *n, const uint8_t *held, char *why) {
    const mc_hparams_t *hp = &n->model->hp;
    for (uint32_t l = 0; l < hp->n_layer && !n->mem_limit; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            if (!held[(size_t)l * hp->n_expert + e]) continue;
            const mc_err_t rc = mc_model_expert_check(n->model, l, e, why);
            if (rc) return rc;
        }
    return MC_OK;
}

// Load the placement held (its slices checked) and answer Ready; refuse
// it when a held expert is damaged.
static void s_ready(mc_node_t *n, const s_peer_t *id, uint64_t request_id, uint64_t session, const uint8_t *held,
                    s_load_t *ld, double t0, const char *peer) {
    char why[MC_ERR_LEN];
    const mc_err_t rc = s_check_share(n, held, why);
    if (rc) {
        mc_log_status(n->log, n->who, "refused the placement of session %016llx from %s: %s", (unsigned long long)session,
                      peer, why);
        s_send_error(n, id, request_id, rc, why);
        return;
    }
    uint32_t layers;
    uint64_t bytes;
    uint32_t pairs = s_place(n, held, ld, &layers, &bytes);
    const uint64_t resident = s_resident_bytes();
    mc_log_status(n->log, n->who,
                  "placement of session %016llx from %s accepted: %u expert%s in %u layer%s (%.1f MiB of weights, "
                  "loaded in %.1f s), resident memory %.1f MiB",
                  (unsigned long long)session, peer, pairs, pairs == 1 ? "" : "s", layers, layers == 1 ? "" : "s",
                  bytes / 1048576.0, (mc_clock_ms() - t0) / 1e3, resident / 1048576.0);
    mc_wire_msg_t r = {.kind = MC_WIRE_MSG_READY, .request_id = request_id};
    r.u.ready = (mc_wire_ready_t){.resident_bytes = resident, .n_pairs = pairs};
    s_send(n, id, &r);
}

// --- expert computation -------------------------------------------------------------

static void s_on_request(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    const mc_wire_request_t *r = &m->u.request;
    uint64_t t0 = mc_clock_us();
    const mc_wire_enc_t enc = r->res_enc;
    size_t count = (size_t)r->n_rows * r->dim, rb = mc_wire_row_bytes(enc, r->dim);
    float *out = malloc(count * sizeof(float));
    uint8_t *packed = enc == MC_WIRE_F32 ? (uint8_t *)out : malloc(rb * r->n_rows);
    char err[MC_ERR_LEN];
    mc_err_t rc = MC_OK;
    if (!out || !packed) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory for %u rows", r->n_rows);
    else {
        // The rows go in as they arrived: blocks of the experts' activation
        // type straight into the products, anything else through f32. The
        // coordinator's fallback makes the same call on the same bytes.
        const mc_moe_rows_t rows = {mc_wire_enc_dtype(r->enc), r->rows, mc_wire_row_bytes(r->enc, r->dim)};
        rc = mc_moe_compute_rows(n->moe, n->model, r->layer, &rows, r->n_rows, r->experts, r->weights, r->k, out, err);
    }
    if (rc) {
        s_send_error(n, id, m->request_id, rc, err);
    } else {
        if (enc != MC_WIRE_F32) mc_wire_rows_encode(enc, out, r->n_rows, r->dim, packed);
        uint64_t us = mc_clock_us() - t0;
        mc_wire_msg_t res = {.kind = MC_WIRE_MSG_RESULT, .request_id = m->request_id};
        res.u.result = (mc_wire_result_t){r->n_rows, r->dim, enc, packed, rb * r->n_rows, us, {0}};
        if (n->store) {
            mc_expert_store_stats_t ss;
            mc_expert_store_stats(n->store, &ss);
            res.u.result.store = (mc_wire_store_stats_t){true,          ss.budget_bytes, ss.used_bytes,
                                                         ss.hits,       ss.misses,       ss.bytes_read,
                                                         ss.stall_us,   ss.prefetched,   ss.prefetch_used,
                                                         ss.errors};
        }
        n->stats.requests++, n->stats.rows += r->n_rows, n->stats.compute_us += us;
        s_send(n, id, &res);
    }
    if (packed != (uint8_t *)out) free(packed);
    free(out);
    // The next request is at least a round trip away: idle workers must not
    // spin on cores the coordinator or other nodes may share.
    mc_pool_rest(n->pool);
}

static uint64_t s_total_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

static void s_hello_reply(mc_node_t *n, const s_peer_t *id, uint64_t request_id) {
    mc_wire_msg_t r = {.kind = MC_WIRE_MSG_HELLO, .request_id = request_id};
    r.u.hello = (mc_wire_hello_t){.version = MC_WIRE_VERSION, .fingerprint = n->fingerprint, .threads = (uint32_t)n->threads,
                                  .memory_bytes = s_total_memory(), .cache = n->cache != NULL};
    memcpy(r.u.hello.name, n->name, sizeof n->name);
    s_send(n, id, &r);
}

// A live owner of another session holds a placement here (a node without
// a model file then keeps its model): true with why in msg.
static bool s_other_owner(const mc_node_t *n, uint64_t session, char *msg, size_t cap) {
    const uint64_t now_ms = mc_clock_us() / 1000;
    if (!n->owner_len || now_ms - n->owner_seen_ms >= n->lease_ms || n->owner_session == session) return false;
    snprintf(msg, cap, "serving model %016llx for coordinator session %016llx (heard from %llu ms ago)",
             (unsigned long long)n->fingerprint, (unsigned long long)n->owner_session,
             (unsigned long long)(now_ms - n->owner_seen_ms));
    return true;
}

static void s_on_hello(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    const mc_wire_hello_t *h = &m->u.hello;
    char msg[MC_ERR_LEN];
    if (h->version != MC_WIRE_VERSION) {
        snprintf(msg, sizeof msg, "speaks protocol version %d, the coordinator (%s) version %u: use the same release on every machine",
                 MC_WIRE_VERSION, h->name, h->version);
        mc_log_status(n->log, n->who, "refused coordinator %s at %s: it %s", h->name, id->addr, msg);
        s_send_error(n, id, m->request_id, MC_ERR_UNSUPPORTED, msg);
        return;
    }
    if (n->cache && h->fingerprint != n->fingerprint) {
        // Another model than the one held: its file from the cache if there
        // is one, else the coordinator is told (cache flag) and sends its
        // metadata; either way not while another model's owner is live.
        if (s_other_owner(n, h->session_id, msg, sizeof msg)) {
            mc_log_status(n->log, n->who, "refused coordinator %s at %s: %s", h->name, id->addr, msg);
            s_send_error(n, id, m->request_id, MC_ERR_BUSY, msg);
            return;
        }
        mc_model_t *cm = mc_cache_find(n->cache, h->fingerprint);
        if (cm) {
            char err[MC_ERR_LEN];
            mc_cache_fill_destroy(&n->fill);
            if (s_set_model(n, cm, NULL, err)) {
                s_send_error(n, id, m->request_id, MC_ERR_NOMEM, err);
                return;
            }
            mc_log_status(n->log, n->who, "cache: model %016llx from %s", (unsigned long long)n->fingerprint,
                          n->model->path);
        }
    }
    if (h->fingerprint != n->fingerprint && !n->cache) {
        snprintf(msg, sizeof msg, "model fingerprint mismatch: node has %016llx, the coordinator (%s) has %016llx (not the same model file)",
                 (unsigned long long)n->fingerprint, h->name, (unsigned long long)h->fingerprint);
        mc_log_status(n->log, n->who, "refused coordinator %s at %s: %s", h->name, id->addr, msg);
        s_send_error(n, id, m->request_id, MC_ERR_ARG, msg);
        return;
    }
    memcpy(n->hello_id, id->id, id->len);
    n->hello_id_len = id->len;
    snprintf(n->hello_name, sizeof n->hello_name, "%s", h->name);
    mc_log_status(n->log, n->who, "coordinator %s at %s connected (session %016llx)", h->name, id->addr,
                  (unsigned long long)h->session_id);
    s_hello_reply(n, id, m->request_id);
}

// A coordinator's metadata for a node without its model: bound as a model
// without experts (its shape, its fingerprint) until a placement's file is.
static void s_on_model_info(mc_node_t *n, const s_peer_t *id, const mc_wire_msg_t *m) {
    const mc_wire_model_info_t *mi = &m->u.model_info;
    char msg[MC_ERR_LEN], sub[MC_ERR_LEN];
    if (!n->cache) {
        s_send_error(n, id, m->request_id, MC_ERR_UNSUPPORTED, "this node serves its own model file (--model)");
        return;
    }
    if (s_other_owner(n, 0, msg, sizeof msg)) {
        s_send_error(n, id, m->request_id, MC_ERR_BUSY, msg);
        return;
    }
    uint8_t *buf = malloc(mi->len);
    if (!buf) {
        s_send_error(n, id, m->request_id, MC_ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(buf, mi->gguf, mi->len);
    mc_gguf_t *g = mc_gguf_parse(buf, mi->len, sub);
    mc_model_t *nm = g ? mc_model_new_experts(&g, sub) : NULL;
    mc_gguf_destroy(&g);
    mc_err_t rc = MC_OK;
    if (!nm) rc = mc_err_set(msg, MC_ERR_FORMAT, "the model's metadata does not bind: %.200s", sub);
    else if (mc_model_fingerprint(nm) != mi->fingerprint)
        rc = mc_err_set(msg, MC_ERR_FORMAT, "the model's metadata is of model %016llx, not %016llx",
                        (unsigned long long)mc_model_fingerprint(nm), (unsigned long long)mi->fingerprint);
    else if (nm->hp.dim > MC_NODE_CACHE_MAX_DIM || nm->hp.n_expert_used > MC_NODE_CACHE_MAX_K)
        rc = mc_err_set(msg, MC_ERR_UNSUPPORTED,
                        "a model of dim %u with %u experts per token is beyond what a node without a model file takes "
                        "(dim %d, %d): give this node the model file (--model)",
                        nm->hp.dim, nm->hp.n_expert_used, MC_NODE_CACHE_MAX_DIM, MC_NODE_CACHE_MAX_K);
    if (rc) {
        mc_model_destroy(&nm);
        free(buf);
        mc_log_status(n->log, n->who, "refused the model of coordinator at %s: %s", id->addr, msg);
        s_send_error(n, id, m->request_id, rc, msg);
        return;
    }
    mc_cache_fill_destroy(&n->fill);
    if (s_set_model(n, nm, buf, sub)) {
        s_send_error(n, id, m->request_id, MC_ERR_NOMEM, sub);
        return;
    }
    const mc_hparams_t *hp = &n->model->hp;
    mc_log_status(n->log, n->who, "model %016llx (%s, %u layers x %u experts) from the coordinator at %s: nothing of it cached yet",
                  (unsigned long long)n->fingerprint, hp->arch->name, hp->n_layer, hp->n_expert, id->addr);
    s_hello_reply(n, id, m->request_id);
}

// --- loop -------------------------------------------------------------------------

static void s_handle(mc_node_t *n, const s_peer_t *id, const void *body, size_t len) {
    mc_wire_msg_t m;
    uint64_t bad_id = 0;
    char err[MC_ERR_LEN];
    n->stats.bytes_in += len;
    mc_err_t rc = mc_wire_decode(&n->lim, body, len, &m, &bad_id, err);
    if (rc == MC_ERR_NET) {
        n->stats.errors++;
        MC_LOGW("node %s: dropped a message from %s: %s", n->name, id->addr, err);
        return;
    }
    if (rc) {
        s_send_error(n, id, bad_id, rc, err);
        return;
    }
    size_t id_len = id->len;
    if (n->owner_len == id_len && !memcmp(n->owner, id->id, id_len)) n->owner_seen_ms = mc_clock_us() / 1000;
    mc_wire_msg_t r = {.request_id = m.request_id};
    switch (m.kind) {
    case MC_WIRE_MSG_HELLO: s_on_hello(n, id, &m); break;
    case MC_WIRE_MSG_ASSIGN: s_on_assign(n, id, &m); break;
    case MC_WIRE_MSG_REQUEST: s_on_request(n, id, &m); break;
    case MC_WIRE_MSG_MODEL_INFO: s_on_model_info(n, id, &m); break;
    case MC_WIRE_MSG_FETCH_OPEN: s_on_fetch_open(n, id, &m); break;
    case MC_WIRE_MSG_SLICE_DATA: s_on_slice_data(n, id, &m); break;
    case MC_WIRE_MSG_HEARTBEAT:
        r.kind = MC_WIRE_MSG_HEARTBEAT, r.u.heartbeat = m.u.heartbeat;
        s_send(n, id, &r);
        break;
    case MC_WIRE_MSG_STATS_REQUEST:
        r.kind = MC_WIRE_MSG_STATS, r.u.stats = n->stats;
        s_send(n, id, &r);
        break;
    case MC_WIRE_MSG_RELEASE: // no answer: the coordinator is closing its socket
        if (n->owner_len && n->owner_session == m.u.release) {
            mc_log_status(n->log, n->who,
                          "coordinator %s (session %016llx) at %s released its placement on exit; another coordinator "
                          "may now place experts here",
                          n->owner_name, (unsigned long long)n->owner_session, id->addr);
            n->owner_len = 0;
            n->owner_lost = false;
        }
        // A coordinator that exits while this node fetches from it: the
        // fetch ends here (its bytes stay in the cache, so the next
        // coordinator's placement resumes from them) and its transfer
        // socket is forgotten.
        if (n->fill && n->fill_session == m.u.release) {
            mc_log_status(n->log, n->who, "the fetch for session %016llx stopped: its coordinator exited (the bytes "
                          "fetched stay in the cache)", (unsigned long long)m.u.release);
            mc_cache_fill_destroy(&n->fill);
        }
        if (n->fetch_session == m.u.release) n->fetch_peer_len = 0, n->fetch_session = 0;
        break;
    case MC_WIRE_MSG_ERROR: // never answer an error: two peers could bounce them forever
        n->stats.errors++;
        MC_LOGW("node %s: peer at %s reported: %s", n->name, id->addr, m.u.error.message);
        break;
    default:
        snprintf(err, sizeof err, "a node does not accept %s messages", mc_wire_kind_name(m.kind));
        s_send_error(n, id, m.request_id, MC_ERR_UNSUPPORTED, err);
        break;
    }
    mc_wire_msg_free(&m);
}

// Receive and handle one message if one is queued; false when none is.
static bool s_serve_one(mc_node_t *n) {
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, n->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return false;
    }
    // A coordinator's DEALER sends one frame per message (ZeroMQ routing ids
    // are at most 255 bytes). The frames of a multi-part message arrive
    // together, so draining them cannot block.
    int parts = 0;
    bool more = zmq_msg_more(&id);
    zmq_msg_init(&body);
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, n->sock, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (++parts == 1) zmq_msg_move(&body, &part);
        zmq_msg_close(&part);
    }
    if (parts == 1 && zmq_msg_size(&id) <= MC_NODE_ID_MAX) {
        const char *addr = zmq_msg_gets(&body, "Peer-Address");
        const s_peer_t peer = {zmq_msg_data(&id), zmq_msg_size(&id), addr ? addr : "a local peer"};
        s_handle(n, &peer, zmq_msg_data(&body), zmq_msg_size(&body));
    } else {
        n->stats.errors++;
        MC_LOGW("node %s: dropped a message of %d frames", n->name, parts);
    }
    zmq_msg_close(&body);
    zmq_msg_close(&id);
    return true;
}

mc_err_t mc_node_handle(mc_node_t *n, const void *peer, size_t peer_len, const void *msg, size_t len, uint8_t **reply,
                        size_t *reply_len, char *err) {
    if (peer_len > MC_NODE_ID_MAX)
        return mc_err_set(err, MC_ERR_ARG, "peer id of %zu bytes (at most %d)", peer_len, MC_NODE_ID_MAX);
    const s_peer_t id = {peer, peer_len, "a direct caller"};
    n->capture = true;
    n->captured = NULL, n->captured_len = 0;
    s_handle(n, &id, msg, len);
    n->capture = false;
    *reply = n->captured, *reply_len = n->captured_len;
    n->captured = NULL;
    return MC_OK;
}

// The owner's lease ran out: say so once (its placement stays in place and
// keeps serving whoever asks for it, until another coordinator changes it).
static void s_check_lease(mc_node_t *n) {
    if (!n->owner_len || n->owner_lost) return;
    const uint64_t silent = mc_clock_us() / 1000 - n->owner_seen_ms;
    if (silent < n->lease_ms) return;
    n->owner_lost = true;
    mc_log_status(n->log, n->who,
                  "lost coordinator %s at %s (session %016llx): silent for %llu ms; another coordinator may now place "
                  "experts here",
                  n->owner_name, n->owner_addr, (unsigned long long)n->owner_session, (unsigned long long)silent);
}

mc_err_t mc_node_run(mc_node_t *n, const atomic_int *stop, char *err) {
    if (!n->sock) return mc_err_set(err, MC_ERR_ARG, "node %s has no socket (made without an endpoint)", n->name);
    zmq_pollitem_t item = {.socket = n->sock, .events = ZMQ_POLLIN};
    mc_err_t rc = MC_OK;
    while (!atomic_load(stop)) {
        int ready = zmq_poll(&item, 1, MC_NODE_POLL_MS);
        if (ready < 0 && zmq_errno() != EINTR) {
            rc = mc_err_set(err, MC_ERR_NET, "poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        while (ready > 0 && !atomic_load(stop) && s_serve_one(n)) {}
        s_check_lease(n);
        s_fill_pump(n);
        s_fill_report(n, false);
    }
    const mc_wire_stats_t *st = &n->stats;
    if (n->store) {
        mc_expert_store_stats_t ss;
        mc_expert_store_stats(n->store, &ss);
        mc_log_status(n->log, n->who,
                      "memory limit %.0f MiB: %llu hits, %llu misses, %.1f MiB read in %llu reads, %.1f ms stalled, "
                      "%llu read ahead (%llu used), %llu read errors",
                      n->mem_limit / 1048576.0, (unsigned long long)ss.hits, (unsigned long long)ss.misses,
                      ss.bytes_read / 1048576.0, (unsigned long long)ss.reads, ss.stall_us / 1e3,
                      (unsigned long long)ss.prefetched, (unsigned long long)ss.prefetch_used,
                      (unsigned long long)ss.errors);
    }
    const int why = atomic_load(stop);
    const char *sig = why == SIGTERM ? " on SIGTERM" : why == SIGINT ? " on SIGINT" : why == SIGHUP ? " on SIGHUP" : "";
    mc_log_status(n->log, n->who,
                  "stopping%s%s: served %llu requests (%llu rows, %.1f ms of compute), %.2f MB in, %.2f MB out, "
                  "%llu messages refused or dropped",
                  sig, rc ? " after a socket error" : "", (unsigned long long)st->requests, (unsigned long long)st->rows,
                  st->compute_us / 1e3, st->bytes_in / 1e6, st->bytes_out / 1e6, (unsigned long long)st->errors);
    return rc;
}
