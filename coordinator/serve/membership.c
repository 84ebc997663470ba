/*
 * membership: the cluster's live-change endpoints and SIGHUP (membership.h).
 */
#include "membership.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "cluster.h"
#include "cluster_config.h"

bool mc_membership_path(const char *url) { return mc_membership_allow(url) != NULL || !strncmp(url, "/v1/cluster/", 12); }

const char *mc_membership_allow(const char *url) {
    if (!strcmp(url, "/v1/cluster/nodes")) return "POST, OPTIONS";
    if (!strncmp(url, "/v1/cluster/nodes/", 18) && url[18]) return "DELETE, OPTIONS";
    if (!strcmp(url, "/v1/cluster/placement")) return "PUT, OPTIONS";
    return NULL;
}

// 400 (or the code's status) with err's text.
static struct cJSON *s_fail(mc_api_error_t *e, mc_err_t code, const char *err) {
    const int status = code == MC_ERR_BUSY ? 409 : code == MC_ERR_NOMEM ? 500 : 400;
    mc_api_error(e, status, status == 500 ? "server_error" : "invalid_request_error", NULL, NULL, "%s", err);
    return NULL;
}

// Hand cfg to the cluster; the 202 answer.
static struct cJSON *s_stage(mc_cluster_t *c, mc_cluster_config_t *cfg, int *status, mc_api_error_t *e) {
    char err[MC_ERR_LEN];
    mc_err_t rc = mc_cluster_request(c, &cfg, err);
    if (rc) {
        mc_cluster_config_destroy(&cfg);
        return s_fail(e, rc, err);
    }
    cJSON *root = cJSON_CreateObject();
    if (!root) return s_fail(e, MC_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(root, "status", "staged");
    cJSON_AddStringToObject(root, "message",
                            "the new holders load their experts while the current placement serves; GET /v1/cluster "
                            "shows the progress");
    const mc_cluster_config_t *now = mc_cluster_config_latest(c, NULL);
    cJSON *names = cJSON_AddArrayToObject(root, "nodes");
    for (size_t i = 0; i < now->n_nodes; i++) cJSON_AddItemToArray(names, cJSON_CreateString(now->nodes[i].name));
    *status = 202;
    return root;
}

// An id set from JSON: "0-3, 6" (as in cluster files), a number, or an
// array of numbers and such strings; absent: none.
static mc_err_t s_ids(const cJSON *v, const char *key, char *text, size_t cap, char *err) {
    if (!v) return snprintf(text, cap, "none"), MC_OK;
    if (cJSON_IsString(v)) {
        if (strlen(v->valuestring) >= cap) return mc_err_set(err, MC_ERR_ARG, "\"%s\" is too long", key);
        return snprintf(text, cap, "%s", v->valuestring), MC_OK;
    }
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble < 0 || v->valuedouble >= 1e6 || v->valuedouble != (double)(long)v->valuedouble)
            return mc_err_set(err, MC_ERR_ARG, "\"%s\" must be whole numbers", key);
        return snprintf(text, cap, "%ld", (long)v->valuedouble), MC_OK;
    }
    if (!cJSON_IsArray(v)) return mc_err_set(err, MC_ERR_ARG, "\"%s\" must be an id set: \"0-3, 6\" or [0, 1, \"4-7\"]", key);
    size_t at = 0;
    text[0] = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        char one[64];
        if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1e6 && it->valuedouble == (double)(long)it->valuedouble)
            snprintf(one, sizeof one, "%ld", (long)it->valuedouble);
        else if (cJSON_IsString(it) && strlen(it->valuestring) < sizeof one)
            snprintf(one, sizeof one, "%s", it->valuestring);
        else
            return mc_err_set(err, MC_ERR_ARG, "\"%s\" holds an item that is not an id or a range", key);
        const int n = snprintf(text + at, cap - at, "%s%s", at ? "," : "", one);
        if (n < 0 || (size_t)n >= cap - at) return mc_err_set(err, MC_ERR_ARG, "\"%s\" is too long", key);
        at += (size_t)n;
    }
    if (!at) snprintf(text, cap, "none");
    return MC_OK;
}

static struct cJSON *s_add(mc_cluster_t *c, const char *body, size_t len, int *status, mc_api_error_t *e) {
    char err[MC_ERR_LEN];
    if (memchr(body, 0, len)) return s_fail(e, MC_ERR_ARG, "the body holds a NUL byte");
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return s_fail(e, MC_ERR_ARG, "the body must be a JSON object: {\"name\", \"endpoint\", \"public_key\"?, "
                                     "\"experts\"?, \"layers\"?}");
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name"),
                *ep = cJSON_GetObjectItemCaseSensitive(root, "endpoint"),
                *key = cJSON_GetObjectItemCaseSensitive(root, "public_key");
    char ex_text[1024], ly_text[1024];
    mc_expert_set_t ex;
    mc_layer_set_t ly;
    mc_err_t rc = MC_OK;
    if (!cJSON_IsString(name) || !cJSON_IsString(ep))
        rc = mc_err_set(err, MC_ERR_ARG, "\"name\" and \"endpoint\" are required strings");
    else if (key && !cJSON_IsString(key))
        rc = mc_err_set(err, MC_ERR_ARG, "\"public_key\" must be a string (the node's .pub: 40 characters of Z85)");
    else if (!(rc = s_ids(cJSON_GetObjectItemCaseSensitive(root, "experts"), "experts", ex_text, sizeof ex_text, err)) &&
             !(rc = s_ids(cJSON_GetObjectItemCaseSensitive(root, "layers"), "layers", ly_text, sizeof ly_text, err))) {
        if (!cJSON_GetObjectItemCaseSensitive(root, "layers")) snprintf(ly_text, sizeof ly_text, "all");
        if ((rc = mc_expert_set_parse(ex_text, &ex, err)) == MC_OK) rc = mc_layer_set_parse(ly_text, &ly, err);
    }
    mc_cluster_config_t *cfg = NULL;
    if (!rc) {
        const mc_cluster_config_t *now = mc_cluster_config_latest(c, NULL);
        for (size_t i = 0; i < now->n_nodes && !rc; i++)
            if (!strcmp(now->nodes[i].name, name->valuestring))
                rc = mc_err_set(err, MC_ERR_ARG, "node %s is in the cluster already (at %s)", now->nodes[i].name,
                                now->nodes[i].endpoint);
        if (!rc && !(cfg = mc_cluster_config_clone(now, err))) rc = mc_err_code(err, MC_ERR_NOMEM);
    }
    if (!rc && !(rc = mc_cluster_config_add_node(cfg, name->valuestring, ep->valuestring, &ex, &ly, err)) && key)
        rc = mc_cluster_config_set_node_key(cfg, cfg->n_nodes - 1, key->valuestring, err);
    cJSON_Delete(root);
    if (rc) {
        mc_cluster_config_destroy(&cfg);
        return s_fail(e, rc, err);
    }
    return s_stage(c, cfg, status, e);
}

static struct cJSON *s_remove(mc_cluster_t *c, const char *name, int *status, mc_api_error_t *e) {
    char err[MC_ERR_LEN];
    const mc_cluster_config_t *now = mc_cluster_config_latest(c, NULL);
    size_t i = 0;
    while (i < now->n_nodes && strcmp(now->nodes[i].name, name)) i++;
    if (i == now->n_nodes) {
        mc_api_error(e, 404, "invalid_request_error", NULL, "node_not_found", "no node named '%.100s' in the cluster", name);
        return NULL;
    }
    if (now->n_nodes == 1) return s_fail(e, MC_ERR_ARG, "the last node cannot leave: a cluster file needs a node");
    mc_cluster_config_t *cfg = mc_cluster_config_clone(now, err);
    if (!cfg) return s_fail(e, mc_err_code(err, MC_ERR_NOMEM), err);
    mc_cluster_config_remove_node(cfg, i, err);
    return s_stage(c, cfg, status, e);
}

static struct cJSON *s_place(mc_cluster_t *c, const char *body, size_t len, int *status, mc_api_error_t *e) {
    char err[MC_ERR_LEN];
    if (!len) return s_fail(e, MC_ERR_ARG, "the body must be a cluster file (YAML), as moe-plan writes");
    mc_cluster_config_t *cfg = mc_cluster_config_parse(body, len, "placement", err);
    if (!cfg) return s_fail(e, MC_ERR_ARG, err);
    return s_stage(c, cfg, status, e);
}

struct cJSON *mc_membership_handle(mc_experts_t *x, const char *method, const char *url, const char *body, size_t len,
                                   int *status, mc_api_error_t *e) {
    const char *allow = mc_membership_allow(url);
    if (!allow) {
        mc_api_error(e, 404, "invalid_request_error", NULL, "unknown_url", "unknown URL: %.20s %.100s", method, url);
        return NULL;
    }
    if (strncmp(allow, method, strlen(method)) || allow[strlen(method)] != ',') {
        mc_api_error(e, 405, "invalid_request_error", NULL, NULL, "%.100s takes %.*s, not %.20s", url,
                     (int)(strchr(allow, ',') - allow), allow, method);
        return NULL;
    }
    mc_cluster_t *c = mc_cluster_of(x);
    if (!c) {
        mc_api_error(e, 409, "invalid_request_error", NULL, NULL,
                     "this server computes every expert itself: start it with --cluster FILE to have nodes");
        return NULL;
    }
    if (!strcmp(method, "POST")) return s_add(c, body ? body : "", len, status, e);
    if (!strcmp(method, "DELETE")) return s_remove(c, url + 18, status, e);
    return s_place(c, body, len, status, e);
}

mc_err_t mc_membership_discovered(mc_experts_t *x, const mc_discovery_node_t *d, bool *added, char *err) {
    *added = false;
    mc_cluster_t *c = mc_cluster_of(x);
    if (!c) return mc_err_set(err, MC_ERR_ARG, "no cluster to join");
    const mc_cluster_config_t *now = mc_cluster_config_latest(c, NULL);
    if (!now->discover) return mc_err_set(err, MC_ERR_ARG, "the cluster file does not say 'discover: true'");
    // A member already (announcements repeat, and a node the file names may
    // announce itself too): nothing to do.
    for (size_t i = 0; i < now->n_nodes; i++)
        if ((d->public_key[0] && !strcmp(now->nodes[i].public_key, d->public_key)) ||
            (!strcmp(now->nodes[i].name, d->name) && !strcmp(now->nodes[i].endpoint, d->endpoint)))
            return MC_OK;
    if (!d->public_key[0])
        return mc_err_set(err, MC_ERR_ARG, "it announced no public key (moe-expert --secret-key): not added");
    if (!mc_cluster_config_discover_allows(now, d->public_key))
        return mc_err_set(err, MC_ERR_ARG, "its key %s is not in discover_keys: not added", d->public_key);
    for (size_t i = 0; i < now->n_nodes; i++)
        if (!strcmp(now->nodes[i].name, d->name))
            return mc_err_set(err, MC_ERR_ARG, "a node named %s is in the cluster already (at %s): not added", d->name,
                              now->nodes[i].endpoint);
    mc_cluster_config_t *cfg = mc_cluster_config_clone(now, err);
    if (!cfg) return mc_err_code(err, MC_ERR_NOMEM);
    mc_err_t rc = mc_cluster_config_add_node(cfg, d->name, d->endpoint, &now->discover_experts, &now->discover_layers, err);
    if (!rc) rc = mc_cluster_config_set_node_key(cfg, cfg->n_nodes - 1, d->public_key, err);
    if (!rc) rc = mc_cluster_request(c, &cfg, err);
    mc_cluster_config_destroy(&cfg);
    *added = rc == MC_OK;
    return rc;
}

const char *mc_membership_file(mc_experts_t *x) {
    mc_cluster_t *c = mc_cluster_of(x);
    return c ? mc_cluster_config(c)->path : NULL;
}

mc_err_t mc_membership_reload(mc_experts_t *x, const char *path, char *err) {
    mc_cluster_t *c = mc_cluster_of(x);
    if (!c) return mc_err_set(err, MC_ERR_ARG, "no cluster to re-read");
    if (!path) return mc_err_set(err, MC_ERR_ARG, "the cluster was not read from a file");
    mc_cluster_config_t *cfg = mc_cluster_config_load(path, err);
    if (!cfg) return mc_err_code(err, MC_ERR_FORMAT);
    mc_err_t rc = mc_cluster_request(c, &cfg, err);
    mc_cluster_config_destroy(&cfg);
    return rc;
}
