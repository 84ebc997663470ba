/*
 * discovery: expert nodes announced on the local network with mDNS/DNS-SD
 * (through the Avahi daemon's client library), and the coordinator's side
 * that finds them.
 *
 * A node started with --announce publishes the service type
 * _moe-expert._tcp on every interface, with its port and these TXT
 * records:
 *
 *   v=1                 the announcement's version (others are not read)
 *   name=pi-1           the node's name ([A-Za-z0-9._-], 1..64 bytes)
 *   key=<40 Z85 chars>  its CURVE public key, when it has one
 *   cache=1             it has no model file (--cache-dir): its experts are
 *                       fetched from the coordinator
 *
 * A browser resolves every announcement of that type to an IPv4 address,
 * port and TXT records and checks them all (mc_discovery_node_parse: an
 * announcement is bytes from anyone on the network): a record that is
 * malformed, too long, repeated or of another version makes the whole
 * announcement ignored, with a log line. Unknown keys are skipped (room for
 * later records).
 *
 * An announcement proves nothing: anyone can announce any name and any
 * key. It is a hint where to connect; who may join is the cluster file's
 * decision (discover_keys), and CURVE is what makes a node prove it holds
 * the key it announced (cluster_config.h, membership.h).
 *
 * Avahi runs its own thread (its threaded poll) per announcer or browser;
 * the browser hands what it finds to the caller through a bounded queue
 * inside it (mc_browse_next), so nothing found is shared otherwise.
 */
#ifndef MC_DISCOVERY_H
#define MC_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster_config.h"
#include "error.h"
#include "keys.h"

#define MC_DISCOVERY_TYPE "_moe-expert._tcp"
#define MC_DISCOVERY_VERSION "1"
#define MC_DISCOVERY_MAX_TXT 32  // records read per announcement at most
#define MC_DISCOVERY_TXT_LEN 256 // a TXT record's bytes at most, with a NUL (DNS: 255)
#define MC_DISCOVERY_QUEUE 64    // announcements a browser keeps until they are taken

// One announced node, checked.
typedef struct {
    char name[MC_CLUSTER_MAX_NAME + 1];
    char address[16];                        // dotted IPv4
    uint16_t port;                           // 1..65535
    char endpoint[MC_CLUSTER_MAX_ENDPOINT];  // tcp://address:port
    char public_key[MC_KEY_TEXT + 1];        // "" when it announced none
    bool cache;                              // no model file
} mc_discovery_node_t;

// The TXT records for a node called name (public_key NULL or "": none),
// each NUL-terminated into txt; *n of them. MC_ERR_ARG for a name or key
// that mc_discovery_node_parse would refuse.
mc_err_t mc_discovery_txt_make(const char *name, const char *public_key, bool cache,
                               char txt[][MC_DISCOVERY_TXT_LEN], size_t *n, char *err);

// An announcement as resolved: the address in text, the port, and n_txt TXT
// records (txt[i][0..len[i]), not NUL-terminated). out is written only on
// success; MC_ERR_FORMAT naming what is wrong otherwise.
mc_err_t mc_discovery_node_parse(const char *address, uint32_t port, const uint8_t *const *txt, const size_t *len,
                                 size_t n_txt, mc_discovery_node_t *out, char *err);

// --- announcing (moe-expert --announce) -------------------------------------

typedef struct {
    const char *name;       // the node's name (also the service's, changed by Avahi on a clash)
    uint16_t port;          // where it listens
    const char *public_key; // Z85; NULL: none
    bool cache;
    FILE *log;              // status lines; NULL: quiet
} mc_announce_params_t;

typedef struct mc_announce mc_announce_t;

// Start announcing. Waits for the Avahi daemon if the system bus is there
// but the daemon is not yet (and announces again after it restarts); NULL
// when there is no system bus to reach it by, or the params are bad.
mc_announce_t *mc_announce_new(const mc_announce_params_t *p, char *err);
void mc_announce_destroy(mc_announce_t **a);

// --- browsing (moe-coordinator --discover, cluster files with discover) -----

typedef struct mc_browse mc_browse_t;

// Start browsing. wait: keep waiting for the daemon when it is not running
// (and browse again after it restarts); otherwise no daemon is an error
// (MC_ERR_NET). No system bus at all is an error either way.
mc_browse_t *mc_browse_new(FILE *log, bool wait, char *err);
void mc_browse_destroy(mc_browse_t **b);

// The next announcement found (each resolution once, in the order found),
// waiting up to timeout_ms: *got false when none came by then. MC_ERR_NET
// when the client failed (the daemon went away without wait).
mc_err_t mc_browse_next(mc_browse_t *b, uint32_t timeout_ms, mc_discovery_node_t *out, bool *got, char *err);

// moe-coordinator --discover: browse for timeout_ms and print a table of
// the nodes found (each name and endpoint once) to out; log gets what was
// ignored. MC_ERR_NET when the daemon cannot be reached.
mc_err_t mc_discovery_list(uint32_t timeout_ms, FILE *out, FILE *log, char *err);

#endif
