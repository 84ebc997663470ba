/*
 * guard: who may talk to a node.
 *
 * With a secret key and an authorized-keys file, the node's socket speaks
 * CURVE (ZeroMQ's encryption and authentication): traffic is encrypted, and
 * a ZAP handler (ZeroMQ's authentication protocol, RFC 27, over an inproc
 * socket in its own thread) admits a coordinator only when its public key
 * is in the file. A stranger's handshake is refused and logged, before any
 * of its bytes reach the node's code; connections that fail the handshake
 * for other reasons (no CURVE at all, a wrong server key) are logged from
 * the socket's monitor events.
 */
#ifndef MC_GUARD_H
#define MC_GUARD_H

#include <stdio.h>

#include "error.h"
#include "keys.h"

typedef struct mc_guard mc_guard_t;

// Load the node's secret key and the authorized keys, and start the ZAP
// handler on zctx. who prefixes the log lines (log may be NULL).
mc_guard_t *mc_guard_new(void *zctx, const char *secret_key_path, const char *authorized_keys_path, FILE *log,
                         const char *who, char *err);

// Make sock a CURVE server checked by this guard (before it binds), and
// watch its failed handshakes.
mc_err_t mc_guard_protect(mc_guard_t *g, void *sock, char *err);

// The node's public key (what coordinators put in their cluster file).
const char *mc_guard_public_key(const mc_guard_t *g);

// Stop the thread and close the guard's sockets (call before closing the
// protected socket and terminating the context).
void mc_guard_destroy(mc_guard_t **g);

#endif
