/*
 * membership: the server's endpoints that change the cluster while it
 * serves, and SIGHUP's re-reading of the cluster file.
 *
 *   POST   /v1/cluster/nodes        {"name", "endpoint", "public_key"?, "experts"?, "layers"?}
 *                                   a node joins (holding experts x layers; none when absent)
 *   DELETE /v1/cluster/nodes/NAME   a node leaves (its pairs must be held by another holder)
 *   PUT    /v1/cluster/placement    a cluster file (YAML, as moe-plan writes it): the nodes to
 *                                   keep, add and drop and what each holds
 *
 * Each builds the whole next cluster file (from the latest one: staged, else
 * current) and hands it to mc_cluster_request, which checks it fully before
 * anything changes; the change is then staged and switched between two
 * passes (cluster.h). Answers: 202 with {"status": "staged", ...}; 400 naming
 * the problem (a bad body, an unknown node, ids beyond the model, pairs no
 * one holds, ...); 404 for an unknown node; 409 while another change is
 * staged or when the server runs without a cluster. The server authorizes
 * the caller first (its API key) and caps the body.
 */
#ifndef MC_MEMBERSHIP_H
#define MC_MEMBERSHIP_H

#include <stddef.h>

#include "api.h"
#include "discovery.h"
#include "error.h"
#include "experts.h"

struct cJSON;

// Whether url is one of the paths above (then mc_membership_handle answers it).
bool mc_membership_path(const char *url);

// The methods url takes ("POST", "DELETE", "PUT"; NULL: unknown path).
const char *mc_membership_allow(const char *url);

// Answer method on url with body[0..len): the 202 answer's JSON (the caller
// deletes it) and *status, or NULL with e filled.
struct cJSON *mc_membership_handle(mc_experts_t *x, const char *method, const char *url, const char *body, size_t len,
                                   int *status, mc_api_error_t *e);

// A node announced on the network (discovery.h), under a cluster file with
// `discover: true`: added (holding discover_experts x discover_layers) when
// its announced key is one of discover_keys, through the same staged change
// as POST /v1/cluster/nodes. MC_OK with *added false when it is a member
// already (its key, or its name and endpoint); MC_ERR_BUSY while another
// change is staged (offer it again later); MC_ERR_ARG naming why it is not
// added (no key, a key not listed, a name taken); a change the cluster
// refuses as for the endpoint. The coordinator's connection then demands
// the announced key (CURVE), so only its holder can serve as this node.
mc_err_t mc_membership_discovered(mc_experts_t *x, const mc_discovery_node_t *d, bool *added, char *err);

// The cluster file x's cluster runs from now (NULL: no cluster, or none).
const char *mc_membership_file(mc_experts_t *x);

// SIGHUP: read the cluster file at path again and stage it as a change
// (the same placement switches at once, changing nothing). err says what
// was wrong with the file or the change (MC_ERR_BUSY: one is staged).
mc_err_t mc_membership_reload(mc_experts_t *x, const char *path, char *err);

#endif
