/*
 * plan: the machines file, the trace-replay simulator, the planner and its
 * report. See plan.h for the model of time.
 */
#include "plan.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "file.h"
#include "parse.h"

#define S_MIB (1024.0 * 1024.0)
#define S_MAX_MS 1e7           // any time in the file: at most ~3 hours
#define S_MAX_MEMORY_MB 1e9    // a petabyte
#define S_MAX_BANDWIDTH 1e7    // megabits per second
#define S_MAX_THREADS 4096u
#define S_MAX_DISK_MB_S 1e6    // 10^6 bytes per second: a terabyte a second
#define S_MAX_DISK_MS 1e4      // a cold read's latency
#define S_REQ_HEADER 64        // bytes of a request or result besides its rows
#define S_DEFAULT_EVALS 20000u
#define S_DEFAULT_SEARCH_STEPS 256u
#define S_MIN_GAIN 0.002       // a search move must win this fraction of its layer's time
#define S_DEFAULT_REQUEST_MS 0.25 // measured on a 2-core loopback cluster (README, Placement)

// --- the machines file ----------------------------------------------------------------

typedef struct {
    const char *name;
    yaml_document_t *doc;
    char *err;
} s_file_t;

static mc_err_t s_fail(const s_file_t *f, const yaml_node_t *n, const char *fmt, ...) {
    char msg[MC_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
        return mc_err_set(f->err, MC_ERR_FORMAT, "%s:%zu:%zu: %s", f->name, n->start_mark.line + 1,
                          n->start_mark.column + 1, msg);
    return mc_err_set(f->err, MC_ERR_FORMAT, "%s: %s", f->name, msg);
}

static yaml_node_t *s_node(const s_file_t *f, int id) { return yaml_document_get_node(f->doc, id); }

// A mapping of at most max distinct scalar keys (a hostile file could
// otherwise make the duplicate check quadratic).
static mc_err_t s_mapping(const s_file_t *f, const yaml_node_t *n, size_t max, const char *what) {
    if (!n || n->type != YAML_MAPPING_NODE) return s_fail(f, n, "%s must be a mapping", what);
    const size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count > max) return s_fail(f, n, "%s has more than %zu keys", what, max);
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *k = s_node(f, n->data.mapping.pairs.start[i].key);
        if (!k || k->type != YAML_SCALAR_NODE) return s_fail(f, k ? k : n, "keys of %s must be names", what);
        for (size_t j = 0; j < i; j++) {
            const yaml_node_t *q = s_node(f, n->data.mapping.pairs.start[j].key);
            if (!strcmp((const char *)q->data.scalar.value, (const char *)k->data.scalar.value))
                return s_fail(f, k, "'%s' is given twice in %s", (const char *)k->data.scalar.value, what);
        }
    }
    return MC_OK;
}

static mc_err_t s_text(const s_file_t *f, const yaml_node_t *n, const char *key, const char **out) {
    if (!n || n->type != YAML_SCALAR_NODE) return s_fail(f, n, "'%s' must be a single value", key);
    *out = (const char *)n->data.scalar.value;
    return MC_OK;
}

static mc_err_t s_number(const s_file_t *f, const yaml_node_t *n, const char *key, double lo, double hi,
                         double *out) {
    const char *t = "";
    char msg[MC_ERR_LEN];
    mc_err_t rc = s_text(f, n, key, &t);
    if (!rc && mc_parse_f64(key, t, lo, hi, out, msg)) rc = s_fail(f, n, "%s", msg);
    return rc;
}

static mc_err_t s_count(const s_file_t *f, const yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi,
                        uint64_t *out) {
    const char *t = "";
    char msg[MC_ERR_LEN];
    uint64_t v;
    mc_err_t rc = s_text(f, n, key, &t);
    if (!rc && mc_parse_u64(key, t, hi, &v, msg)) rc = s_fail(f, n, "%s", msg);
    if (!rc && v < lo) rc = s_fail(f, n, "'%s' must be at least %llu", key, (unsigned long long)lo);
    if (!rc) *out = v;
    return rc;
}

static mc_err_t s_name(const s_file_t *f, const yaml_node_t *n, const char *key, size_t max, bool z85, char *out) {
    const char *t = "";
    mc_err_t rc = s_text(f, n, key, &t);
    if (rc) return rc;
    const size_t len = strlen(t);
    if (len == 0 || len > max) return s_fail(f, n, "'%s' must have 1..%zu characters", key, max);
    for (const char *p = t; *p; p++) {
        const bool ok = z85 ? (*p > 0x20 && *p < 0x7f)
                            : ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                               *p == '.' || *p == '_' || *p == '-');
        if (!ok) return s_fail(f, n, "'%s' has a character that is not allowed: '%s'", key, t);
    }
    memcpy(out, t, len + 1);
    return MC_OK;
}

// One `experts:` entry: {types: [A, B, C], bytes: N, ms: [[rows, ms], ...]}.
static mc_err_t s_curve(const s_file_t *f, const yaml_node_t *n, mc_plan_curve_t *c) {
    if (!n || n->type != YAML_MAPPING_NODE) return s_fail(f, n, "an 'experts' entry must be a mapping of types and ms");
    mc_err_t drc = s_mapping(f, n, 8, "an 'experts' entry");
    if (drc) return drc;
    bool have_types = false, have_ms = false;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = s_node(f, p->key), *v = s_node(f, p->value);
        const char *key = "";
        mc_err_t rc = s_text(f, k, "key", &key);
        if (rc) return rc;
        if (!strcmp(key, "bytes")) {
            uint64_t b;
            if ((rc = s_count(f, v, key, 0, UINT64_MAX, &b))) return rc;
        } else if (!strcmp(key, "types")) {
            if (!v || v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top - v->data.sequence.items.start != 3)
                return s_fail(f, v, "'types' must list three weight types: gate, up, down");
            for (int i = 0; i < 3; i++) {
                const char *t = "";
                const yaml_node_t *item = s_node(f, v->data.sequence.items.start[i]);
                if ((rc = s_text(f, item, "types", &t))) return rc;
                if (!mc_dtype_from_name(t, &c->types[i])) return s_fail(f, item, "'%s' is not a weight type", t);
            }
            have_types = true;
        } else if (!strcmp(key, "ms")) {
            if (!v || v->type != YAML_SEQUENCE_NODE) return s_fail(f, v, "'ms' must be a list of [rows, ms] pairs");
            c->n = 0;
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                const yaml_node_t *pair = s_node(f, *it);
                if (!pair || pair->type != YAML_SEQUENCE_NODE ||
                    pair->data.sequence.items.top - pair->data.sequence.items.start != 2)
                    return s_fail(f, pair, "each item of 'ms' must be a [rows, ms] pair");
                if (c->n == MC_PLAN_MAX_POINTS) return s_fail(f, pair, "'ms' has more than %d pairs", MC_PLAN_MAX_POINTS);
                uint64_t rows;
                double ms;
                if ((rc = s_count(f, s_node(f, pair->data.sequence.items.start[0]), "rows", 1, 1u << 20, &rows)) ||
                    (rc = s_number(f, s_node(f, pair->data.sequence.items.start[1]), "ms", 0, S_MAX_MS, &ms)))
                    return rc;
                if (c->n && rows <= c->rows[c->n - 1]) return s_fail(f, pair, "the rows of 'ms' must increase");
                c->rows[c->n] = (uint32_t)rows;
                c->ms[c->n++] = ms;
            }
            if (c->n == 0) return s_fail(f, v, "'ms' is empty");
            have_ms = true;
        } else {
            return s_fail(f, k, "unknown key '%s' in an 'experts' entry (expected types, bytes, ms)", key);
        }
    }
    if (!have_types || !have_ms) return s_fail(f, n, "an 'experts' entry needs 'types' and 'ms'");
    return MC_OK;
}

typedef struct {
    double latency_ms, bandwidth_mbps, request_ms;
} s_network_t;

static mc_err_t s_machine(const s_file_t *f, const yaml_node_t *n, bool coordinator, const s_network_t *net,
                          mc_plan_machine_t *m) {
    if (n && n->type == YAML_SEQUENCE_NODE && coordinator) { // pasted `moe-expert --profile` output: one item
        if (n->data.sequence.items.top - n->data.sequence.items.start != 1)
            return s_fail(f, n, "'coordinator' must be one machine");
        n = s_node(f, n->data.sequence.items.start[0]);
    }
    if (!n || n->type != YAML_MAPPING_NODE)
        return s_fail(f, n, "a machine must be a mapping (name, memory_mb, experts, ...)");
    mc_err_t drc = s_mapping(f, n, 32, coordinator ? "the coordinator" : "a node");
    if (drc) return drc;
    memset(m, 0, sizeof *m);
    m->coordinator = coordinator;
    m->latency_ms = coordinator ? 0 : net->latency_ms;
    m->bandwidth_mbps = net->bandwidth_mbps;
    bool have[6] = {false}, have_rate = false, have_lat = false, have_tier = false;
    const yaml_node_t *tier_at = NULL;
    mc_err_t rc = MC_OK;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top && !rc; p++) {
        const yaml_node_t *k = s_node(f, p->key), *v = s_node(f, p->value);
        const char *key = "";
        uint64_t u;
        if ((rc = s_text(f, k, "key", &key))) break;
        if (!strcmp(key, "name")) rc = s_name(f, v, key, MC_CLUSTER_MAX_NAME, false, m->name), have[0] = true;
        else if (!strcmp(key, "host")) rc = s_name(f, v, key, MC_CLUSTER_MAX_NAME, false, m->host);
        else if (!strcmp(key, "endpoint") && !coordinator)
            rc = s_name(f, v, key, MC_CLUSTER_MAX_ENDPOINT, true, m->endpoint), have[1] = true;
        else if (!strcmp(key, "public_key") && !coordinator) {
            rc = s_name(f, v, key, 40, true, m->public_key);
            if (!rc && strlen(m->public_key) != 40) rc = s_fail(f, v, "'public_key' must be 40 Z85 characters");
        } else if (!strcmp(key, "memory_mb")) rc = s_number(f, v, key, 0, S_MAX_MEMORY_MB, &m->memory_mb), have[2] = true;
        else if (!strcmp(key, "total_mb")) {
            double t;
            rc = s_number(f, v, key, 0, S_MAX_MEMORY_MB, &t);
        } else if (!strcmp(key, "threads")) {
            if (!(rc = s_count(f, v, key, 1, S_MAX_THREADS, &u))) m->threads = (uint32_t)u;
            have[3] = true;
        } else if (!strcmp(key, "cores")) {
            if (!(rc = s_count(f, v, key, 1, S_MAX_THREADS, &u))) m->cores = (uint32_t)u;
        } else if (!strcmp(key, "latency_ms") && !coordinator) rc = s_number(f, v, key, 0, S_MAX_MS, &m->latency_ms);
        else if (!strcmp(key, "bandwidth_mbps")) rc = s_number(f, v, key, 1e-3, S_MAX_BANDWIDTH, &m->bandwidth_mbps);
        else if (!strcmp(key, "layer_ms_1")) rc = s_number(f, v, key, 0, S_MAX_MS, &m->layer_ms_1), have[4] |= coordinator;
        else if (!strcmp(key, "layer_ms_8")) rc = s_number(f, v, key, 0, S_MAX_MS, &m->layer_ms_8);
        else if (!strcmp(key, "head_ms_1")) rc = s_number(f, v, key, 0, S_MAX_MS, &m->head_ms_1), have[5] |= coordinator;
        else if (!strcmp(key, "head_ms_8")) rc = s_number(f, v, key, 0, S_MAX_MS, &m->head_ms_8);
        else if (!strcmp(key, "local_scale")) rc = s_number(f, v, key, 0.1, 10, &m->local_scale);
        else if (!strcmp(key, "disk_read_mb_s"))
            rc = s_number(f, v, key, 1e-3, S_MAX_DISK_MB_S, &m->disk_mb_s), have_rate = true;
        else if (!strcmp(key, "disk_latency_ms"))
            rc = s_number(f, v, key, 0, S_MAX_DISK_MS, &m->disk_latency_ms), have_lat = true;
        else if (!strcmp(key, "disk_tier")) {
            const char *t = "";
            if (!(rc = s_text(f, v, key, &t))) {
                if (!strcmp(t, "true")) m->disk_tier = true;
                else if (!strcmp(t, "false")) m->disk_tier = false;
                else rc = s_fail(f, v, "'disk_tier' must be true or false, found '%s'", t);
            }
            have_tier = true, tier_at = v;
        } else if (!strcmp(key, "experts")) {
            if (!v || v->type != YAML_SEQUENCE_NODE) rc = s_fail(f, v, "'experts' must be a list of measured curves");
            for (yaml_node_item_t *it = !rc ? v->data.sequence.items.start : NULL;
                 !rc && it && it < v->data.sequence.items.top; it++) {
                if (m->n_curves == MC_PLAN_MAX_CURVES)
                    rc = s_fail(f, s_node(f, *it), "more than %d 'experts' curves", MC_PLAN_MAX_CURVES);
                else rc = s_curve(f, s_node(f, *it), &m->curves[m->n_curves++]);
            }
        } else {
            rc = s_fail(f, k, "unknown key '%s' in %s (expected name, %smemory_mb, threads, experts, host, cores, "
                              "%sbandwidth_mbps, disk_read_mb_s, disk_latency_ms, disk_tier%s)",
                        key, coordinator ? "the coordinator" : "a node", coordinator ? "" : "endpoint, public_key, ",
                        coordinator ? "" : "latency_ms, ", coordinator ? ", layer_ms_1, layer_ms_8, head_ms_1, head_ms_8, local_scale" : "");
        }
    }
    if (rc) return rc;
    static const char *const need[6] = {"name", "endpoint", "memory_mb", "threads", "layer_ms_1", "head_ms_1"};
    for (int i = 0; i < 6; i++) {
        if (i == 1 && coordinator) continue;
        if (i >= 4 && !coordinator) continue;
        if (!have[i]) return s_fail(f, n, "%s %s needs '%s'", coordinator ? "the coordinator" : "node", m->name[0] ? m->name : "", need[i]);
    }
    if (m->n_curves == 0) return s_fail(f, n, "machine %s has no 'experts' curves (run moe-expert --profile on it)", m->name);
    // The disk: both figures or neither; the tier needs them.
    if (have_rate != have_lat)
        return s_fail(f, n, "machine %s gives '%s' without '%s' (moe-expert --profile prints both)", m->name,
                      have_rate ? "disk_read_mb_s" : "disk_latency_ms", have_rate ? "disk_latency_ms" : "disk_read_mb_s");
    if (have_tier && m->disk_tier && !have_rate)
        return s_fail(f, tier_at, "machine %s: 'disk_tier: true' needs disk_read_mb_s and disk_latency_ms", m->name);
    if (!have_tier) m->disk_tier = have_rate;
    if (!m->host[0]) memcpy(m->host, m->name, sizeof m->host);
    if (!m->cores) m->cores = m->threads;
    if (!coordinator || m->local_scale <= 0) m->local_scale = 1;
    if (coordinator) {
        if (m->layer_ms_8 <= 0) m->layer_ms_8 = 8 * m->layer_ms_1;
        if (m->head_ms_8 <= 0) m->head_ms_8 = 8 * m->head_ms_1;
    }
    return MC_OK;
}

// Aliases are refused before the document is built: a file is a tree.
static mc_err_t s_refuse_aliases(const char *buf, size_t len, const char *name, char *err) {
    yaml_parser_t ps;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&ps)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&ps, (const unsigned char *)buf, len);
    mc_err_t rc = MC_OK;
    int depth = 0;
    for (bool done = false; !done && !rc;) {
        if (!yaml_parser_parse(&ps, &ev)) {
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s:%zu:%zu: %s", name, ps.problem_mark.line + 1,
                            ps.problem_mark.column + 1, ps.problem ? ps.problem : "bad YAML");
            break;
        }
        if (ev.type == YAML_ALIAS_EVENT)
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s:%zu:%zu: aliases are not allowed", name, ev.start_mark.line + 1,
                            ev.start_mark.column + 1);
        if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) depth++;
        if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) depth--;
        if (depth > 8)
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s:%zu:%zu: nested deeper than a machines file goes", name,
                            ev.start_mark.line + 1, ev.start_mark.column + 1);
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&ps);
    return rc;
}

mc_err_t mc_plan_machines_parse(const char *buf, size_t len, const char *name, mc_plan_machines_t *out, char *err) {
    if (!name) name = "<input>";
    if (len > MC_PLAN_MAX_FILE_BYTES)
        return mc_err_set(err, MC_ERR_FORMAT, "%s: larger than %u bytes", name, MC_PLAN_MAX_FILE_BYTES);
    mc_err_t rc = s_refuse_aliases(buf, len, name, err);
    if (rc) return rc;
    yaml_parser_t ps;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&ps)) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&ps, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&ps, &doc)) {
        rc = mc_err_set(err, MC_ERR_FORMAT, "%s: %s", name, ps.problem ? ps.problem : "bad YAML");
        yaml_parser_delete(&ps);
        return rc;
    }
    yaml_parser_delete(&ps);
    s_file_t f = {name, &doc, err};
    mc_plan_machines_t ms = {0};
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    const yaml_node_t *coord = NULL, *nodes = NULL;
    s_network_t net = {0.2, 1000, S_DEFAULT_REQUEST_MS};
    if (!root || root->type != YAML_MAPPING_NODE) rc = s_fail(&f, root, "the file must be a mapping of coordinator and nodes");
    else rc = s_mapping(&f, root, 8, "the file");
    for (yaml_node_pair_t *p = rc ? NULL : root->data.mapping.pairs.start; p && p < root->data.mapping.pairs.top && !rc;
         p++) {
        const yaml_node_t *k = s_node(&f, p->key), *v = s_node(&f, p->value);
        const char *key = "";
        if ((rc = s_text(&f, k, "key", &key))) break;
        if (!strcmp(key, "coordinator")) coord = v;
        else if (!strcmp(key, "nodes")) nodes = v;
        else if (!strcmp(key, "network")) {
            if (!v || v->type != YAML_MAPPING_NODE) {
                rc = s_fail(&f, v, "'network' must be a mapping of latency_ms and bandwidth_mbps");
                break;
            }
            if ((rc = s_mapping(&f, v, 8, "'network'"))) break;
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top && !rc; q++) {
                const yaml_node_t *nk = s_node(&f, q->key), *nv = s_node(&f, q->value);
                const char *nkey = "";
                if ((rc = s_text(&f, nk, "key", &nkey))) break;
                if (!strcmp(nkey, "latency_ms")) rc = s_number(&f, nv, nkey, 0, S_MAX_MS, &net.latency_ms);
                else if (!strcmp(nkey, "bandwidth_mbps")) rc = s_number(&f, nv, nkey, 1e-3, S_MAX_BANDWIDTH, &net.bandwidth_mbps);
                else if (!strcmp(nkey, "request_ms")) rc = s_number(&f, nv, nkey, 0, S_MAX_MS, &net.request_ms);
                else rc = s_fail(&f, nk, "unknown key '%s' in 'network' (expected latency_ms, bandwidth_mbps, request_ms)", nkey);
            }
        } else {
            rc = s_fail(&f, k, "unknown key '%s' (expected network, coordinator, nodes)", key);
        }
    }
    if (!rc && !coord) rc = s_fail(&f, root, "no 'coordinator'");
    if (!rc && (!nodes || nodes->type != YAML_SEQUENCE_NODE || nodes->data.sequence.items.top == nodes->data.sequence.items.start))
        rc = s_fail(&f, nodes ? nodes : root, "'nodes' must list at least one node");
    if (!rc) {
        const size_t n = 1 + (size_t)(nodes->data.sequence.items.top - nodes->data.sequence.items.start);
        if (n > MC_PLAN_MAX_MACHINES) rc = s_fail(&f, nodes, "more than %d machines", MC_PLAN_MAX_MACHINES);
        else if (!(ms.m = calloc(n, sizeof *ms.m))) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        else ms.n = n;
    }
    ms.request_ms = net.request_ms;
    if (!rc) rc = s_machine(&f, coord, true, &net, &ms.m[0]);
    for (size_t i = 1; !rc && i < ms.n; i++) {
        rc = s_machine(&f, s_node(&f, nodes->data.sequence.items.start[i - 1]), false, &net, &ms.m[i]);
        for (size_t j = 0; !rc && j < i; j++) {
            if (!strcmp(ms.m[i].name, ms.m[j].name))
                rc = s_fail(&f, s_node(&f, nodes->data.sequence.items.start[i - 1]), "two machines are called '%s'",
                            ms.m[i].name);
            else if (j && !strcmp(ms.m[i].endpoint, ms.m[j].endpoint))
                rc = s_fail(&f, s_node(&f, nodes->data.sequence.items.start[i - 1]), "nodes %s and %s share endpoint %s",
                            ms.m[j].name, ms.m[i].name, ms.m[i].endpoint);
        }
    }
    // Endpoints and keys as a cluster file takes them (checked now, not after a search).
    mc_cluster_config_t *probe = rc ? NULL : mc_cluster_config_new();
    if (!rc && !probe) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 1; !rc && i < ms.n; i++) {
        char msg[MC_ERR_LEN];
        if (mc_cluster_config_add_node(probe, ms.m[i].name, ms.m[i].endpoint, NULL, NULL, msg) ||
            (ms.m[i].public_key[0] && mc_cluster_config_set_node_key(probe, i - 1, ms.m[i].public_key, msg)))
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: node %s: %s", name, ms.m[i].name, msg);
    }
    mc_cluster_config_destroy(&probe);
    // Machines on one host must agree on its cores.
    for (size_t i = 0; !rc && i < ms.n; i++)
        for (size_t j = 0; !rc && j < i; j++)
            if (!strcmp(ms.m[i].host, ms.m[j].host) && ms.m[i].cores != ms.m[j].cores)
                rc = mc_err_set(err, MC_ERR_FORMAT, "%s: %s and %s share host %s but say %u and %u cores", name,
                                ms.m[j].name, ms.m[i].name, ms.m[i].host, ms.m[j].cores, ms.m[i].cores);
    yaml_document_delete(&doc);
    if (rc) {
        free(ms.m);
        return rc;
    }
    *out = ms;
    return MC_OK;
}

mc_err_t mc_plan_machines_load(const char *path, mc_plan_machines_t *out, char *err) {
    char *buf;
    size_t len;
    mc_err_t rc = mc_file_read(path, MC_PLAN_MAX_FILE_BYTES, &buf, &len, err);
    if (rc) return rc;
    rc = mc_plan_machines_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}

void mc_plan_machines_free(mc_plan_machines_t *ms) {
    if (!ms) return;
    free(ms->m);
    ms->m = NULL;
    ms->n = 0;
}

mc_err_t mc_plan_machines_as_run(const mc_plan_machines_t *ms, const mc_cluster_config_t *c, uint32_t coord_limit_mb,
                                 mc_plan_machines_t *out, char *err) {
    mc_plan_machines_t r = *ms;
    if (!(r.m = malloc((ms->n ? ms->n : 1) * sizeof *r.m))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    memcpy(r.m, ms->m, ms->n * sizeof *r.m);
    for (size_t j = 0; j < r.n; j++) r.m[j].disk_tier = false, r.m[j].mem_limit_mb = 0;
    if (coord_limit_mb && r.n) r.m[0].mem_limit_mb = coord_limit_mb, r.m[0].disk_tier = ms->m[0].disk_tier;
    for (size_t i = 0; i < c->n_nodes; i++)
        for (size_t j = 1; j < r.n; j++)
            if (!strcmp(r.m[j].name, c->nodes[i].name) && c->nodes[i].mem_limit_mb)
                r.m[j].mem_limit_mb = c->nodes[i].mem_limit_mb, r.m[j].disk_tier = ms->m[j].disk_tier;
    *out = r;
    return MC_OK;
}

// --- the model --------------------------------------------------------------------------

static uint64_t s_matrix_bytes(const mc_matrix_t *w) { return (uint64_t)w->n_out * w->row_bytes; }

mc_err_t mc_plan_shape_from_model(const mc_model_t *m, mc_plan_shape_t *out, char *err) {
    const mc_hparams_t *hp = &m->hp;
    mc_plan_shape_t s = {hp->n_layer, hp->n_expert, hp->n_expert_used, hp->dim, NULL, NULL, NULL, 0, NULL};
    const size_t cells = (size_t)hp->n_layer * hp->n_expert;
    s.types = malloc(cells * 3 * sizeof *s.types);
    s.bytes = malloc(cells * sizeof *s.bytes);
    s.auto_enc = malloc(cells * sizeof *s.auto_enc);
    s.moe = malloc(hp->n_layer);
    if (!s.types || !s.bytes || !s.auto_enc || !s.moe) {
        mc_plan_shape_free(&s);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    uint64_t experts = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) s.moe[l] = mc_model_layer_moe(m, l);
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            const size_t i = (size_t)l * hp->n_expert + e;
            mc_expert_t x;
            if (mc_model_expert(m, l, e, &x)) {
                mc_plan_shape_free(&s);
                return mc_err_set(err, MC_ERR_FORMAT, "the model has no expert %u of layer %u", e, l);
            }
            s.types[3 * i] = x.gate.type, s.types[3 * i + 1] = x.up.type, s.types[3 * i + 2] = x.down.type;
            s.bytes[i] = s_matrix_bytes(&x.gate) + s_matrix_bytes(&x.up) + s_matrix_bytes(&x.down);
            s.auto_enc[i] = mc_wire_auto_enc(m, l, e);
            experts += s.bytes[i];
        }
    const uint64_t file = mc_gguf_size(m->gguf);
    s.other_bytes = file > experts ? file - experts : 0;
    *out = s;
    return MC_OK;
}

void mc_plan_shape_free(mc_plan_shape_t *s) {
    if (!s) return;
    free(s->types), free(s->bytes), free(s->auto_enc), free(s->moe);
    s->types = NULL, s->bytes = NULL, s->auto_enc = NULL, s->moe = NULL;
}

// --- placements ------------------------------------------------------------------------

mc_err_t mc_plan_placement_new(mc_plan_placement_t *p, size_t n_machines, uint32_t n_layer, uint32_t n_expert,
                               char *err) {
    p->held = calloc(n_machines * n_layer * n_expert + 1, 1);
    if (!p->held) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    p->n_machines = n_machines, p->n_layer = n_layer, p->n_expert = n_expert;
    return MC_OK;
}

void mc_plan_placement_free(mc_plan_placement_t *p) {
    if (!p) return;
    free(p->held);
    p->held = NULL;
}

static inline uint8_t *s_held(const mc_plan_placement_t *p, size_t i, uint32_t l, uint32_t e) {
    return &p->held[(i * p->n_layer + l) * p->n_expert + e];
}

mc_err_t mc_plan_placement_from_config(const mc_cluster_config_t *c, const mc_plan_machines_t *ms,
                                       const mc_plan_shape_t *s, mc_plan_placement_t *out, char *err) {
    if (mc_cluster_config_check(c, s->n_layer, s->n_expert, err)) return MC_ERR_ARG;
    mc_plan_placement_t p;
    mc_err_t rc = mc_plan_placement_new(&p, ms->n, s->n_layer, s->n_expert, err);
    if (rc) return rc;
    for (uint32_t l = 0; l < s->n_layer; l++)
        for (uint32_t e = 0; e < s->n_expert; e++) *s_held(&p, 0, l, e) = mc_cluster_config_local_holds(c, l, e);
    for (size_t i = 0; i < c->n_nodes && !rc; i++) {
        size_t j = 1;
        while (j < ms->n && strcmp(ms->m[j].name, c->nodes[i].name)) j++;
        if (j == ms->n) {
            rc = mc_err_set(err, MC_ERR_ARG, "%s: node %s is not in the machines file", c->path ? c->path : "cluster",
                            c->nodes[i].name);
            break;
        }
        for (uint32_t l = 0; l < s->n_layer; l++)
            for (uint32_t e = 0; e < s->n_expert; e++) *s_held(&p, j, l, e) |= mc_cluster_node_holds(&c->nodes[i], l, e);
    }
    if (rc) {
        mc_plan_placement_free(&p);
        return rc;
    }
    *out = p;
    return MC_OK;
}

mc_err_t mc_plan_placement_to_config(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const char *model,
                                     mc_wire_enc_t wire, mc_cluster_config_t **out, char *err) {
    if (p->n_machines != ms->n || p->n_expert > MC_CLUSTER_MAX_EXPERTS || p->n_layer > MC_CLUSTER_MAX_LAYERS)
        return mc_err_set(err, MC_ERR_ARG, "the placement is not of these machines, or too large for a cluster file");
    mc_cluster_config_t *c = mc_cluster_config_new();
    if (!c) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    c->wire = wire;
    mc_err_t rc = model ? mc_cluster_config_set_model(c, model, err) : MC_OK;
    memset(c->local_experts.bits, 0, sizeof c->local_experts.bits);
    for (size_t i = 0; i < p->n_machines && !rc; i++) {
        if (i) {
            mc_expert_set_t none = {{0}};
            rc = mc_cluster_config_add_node(c, ms->m[i].name, ms->m[i].endpoint, &none, NULL, err);
            if (!rc && ms->m[i].public_key[0]) rc = mc_cluster_config_set_node_key(c, i - 1, ms->m[i].public_key, err);
        }
        // Blocks of consecutive layers holding the same experts.
        for (uint32_t l = 0; l < p->n_layer && !rc;) {
            mc_expert_set_t es = {{0}};
            for (uint32_t e = 0; e < p->n_expert; e++)
                if (*s_held(p, i, l, e)) es.bits[e / 64] |= 1ull << (e % 64);
            uint32_t end = l + 1;
            while (end < p->n_layer && !memcmp(s_held(p, i, end, 0), s_held(p, i, l, 0), p->n_expert)) end++;
            mc_layer_set_t ls = {{0}};
            for (uint32_t x = l; x < end; x++) ls.bits[x / 64] |= 1ull << (x % 64);
            bool empty = true;
            for (size_t w = 0; w < sizeof es.bits / sizeof es.bits[0]; w++) empty &= !es.bits[w];
            if (!empty)
                rc = i ? mc_cluster_config_add_hold(c, i - 1, &ls, &es, err) : mc_cluster_config_add_local_hold(c, &ls, &es, err);
            l = end;
        }
        // A node holding nothing keeps an explicit empty block (a node
        // without blocks would hold its default sets: everything).
        if (!rc && i && c->nodes[i - 1].n_holds == 0) {
            mc_layer_set_t none_l = {{0}};
            mc_expert_set_t none_e = {{0}};
            rc = mc_cluster_config_add_hold(c, i - 1, &none_l, &none_e, err);
        }
    }
    if (!rc) rc = mc_cluster_config_check(c, p->n_layer, p->n_expert, err);
    if (rc) {
        mc_cluster_config_destroy(&c);
        return rc;
    }
    *out = c;
    return MC_OK;
}

mc_err_t mc_plan_naive(const mc_plan_machines_t *ms, const mc_plan_shape_t *s, mc_plan_placement_t *out, char *err) {
    const size_t nodes = ms->n - 1;
    if (nodes == 0 || nodes > s->n_expert)
        return mc_err_set(err, MC_ERR_ARG, "an equal split needs 1..%u nodes, not %zu", s->n_expert, nodes);
    mc_err_t rc = mc_plan_placement_new(out, ms->n, s->n_layer, s->n_expert, err);
    if (rc) return rc;
    for (size_t i = 0; i < nodes; i++) {
        const uint32_t a = (uint32_t)(i * s->n_expert / nodes), b = (uint32_t)((i + 1) * s->n_expert / nodes);
        for (uint32_t l = 0; l < s->n_layer; l++)
            for (uint32_t e = a; e < b; e++) *s_held(out, i + 1, l, e) = 1;
    }
    return MC_OK;
}

// --- memory -----------------------------------------------------------------------------

void mc_plan_budgets(const mc_plan_machines_t *ms, const mc_plan_shape_t *s, uint64_t *budget) {
    for (size_t i = 0; i < ms->n; i++) {
        double b = ms->m[i].memory_mb * S_MIB;
        const double reserve = fmax(0.05 * b, 64 * S_MIB);
        b -= reserve;
        if (i == 0) b -= (double)s->other_bytes;
        budget[i] = b > 0 ? (uint64_t)b : 0;
    }
}

static uint64_t s_used(const mc_plan_placement_t *p, const mc_plan_shape_t *s, size_t i) {
    uint64_t used = 0;
    for (uint32_t l = 0; l < p->n_layer; l++)
        for (uint32_t e = 0; e < p->n_expert; e++)
            if (*s_held(p, i, l, e)) used += s->bytes[(size_t)l * s->n_expert + e];
    return used;
}

mc_err_t mc_plan_check_memory(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const mc_plan_shape_t *s,
                              char *err) {
    if (p->n_machines != ms->n) return mc_err_set(err, MC_ERR_ARG, "the placement is not of these machines");
    uint64_t *budget = malloc(ms->n * sizeof *budget);
    if (!budget) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_plan_budgets(ms, s, budget);
    mc_err_t rc = MC_OK;
    for (size_t i = 0; i < ms->n && !rc; i++) {
        const uint64_t used = s_used(p, s, i);
        if (used <= budget[i]) continue;
        if (!ms->m[i].disk_tier) {
            rc = mc_err_set(err, MC_ERR_RANGE, "%s would hold %.1f MiB of experts but has room for %.1f MiB",
                            ms->m[i].name, used / S_MIB, budget[i] / S_MIB);
            continue;
        }
        // The disk tier: the rest is read from its disk, but its --mem-limit
        // (the budget's whole MiB) must hold the largest of them.
        uint64_t most = 0;
        for (uint32_t l = 0; l < p->n_layer; l++)
            for (uint32_t e = 0; e < p->n_expert; e++)
                if (*s_held(p, i, l, e) && s->bytes[(size_t)l * s->n_expert + e] > most)
                    most = s->bytes[(size_t)l * s->n_expert + e];
        const uint64_t room = ms->m[i].mem_limit_mb ? (uint64_t)ms->m[i].mem_limit_mb << 20 : budget[i] >> 20 << 20;
        if (most > room)
            rc = mc_err_set(err, MC_ERR_RANGE,
                            "%s would read experts of %.1f MiB from its disk but its memory budget is %.0f MiB",
                            ms->m[i].name, most / S_MIB, (double)(room >> 20));
    }
    free(budget);
    return rc;
}

// --- the simulator -----------------------------------------------------------------------

mc_plan_sim_params_t mc_plan_sim_params_default(void) {
    return (mc_plan_sim_params_t){.batch = 1, .wire = MC_WIRE_AUTO, .max_steps = 0};
}

// ms for r rows on curve c: linear between measured points, through the
// origin below the first, along the last segment beyond the last.
static double s_curve_ms(const mc_plan_curve_t *c, double r) {
    if (r <= 0) return 0;
    if (c->n == 1 || r <= c->rows[0]) return c->ms[0] * r / c->rows[0];
    uint32_t i = 1;
    while (i + 1 < c->n && r > c->rows[i]) i++;
    const double x0 = c->rows[i - 1], x1 = c->rows[i];
    const double v = c->ms[i - 1] + (c->ms[i] - c->ms[i - 1]) * (r - x0) / (x1 - x0);
    return v > 0 ? v : 0;
}

static double s_line(double at1, double at8, double rows) {
    const double slope = (at8 - at1) / 7.0;
    const double v = at1 + slope * (rows - 1);
    return v > 0 ? v : 0;
}

static bool s_rank(const double *k1, const uint64_t *k2, size_t n, size_t *order);

// Everything the replay needs, resolved once.
typedef struct {
    const mc_plan_shape_t *s;
    const mc_plan_machines_t *ms;
    const mc_routing_stats_t *st;
    const mc_plan_sim_params_t *sp;
    uint32_t steps;
    const mc_plan_curve_t **curve; // (n_machines, n_layer, n_expert) the curve of each expert's types (NULL: none)
    size_t *host;                  // (n_machines) index of the first machine on its host
    size_t *out_bytes;             // (n_layer, n_expert) request bytes per row for that expert's encoding
    size_t back_bytes;             // result bytes per row
    // The disk tier: which held experts are resident (s_resident).
    uint64_t *count;  // (n_layer, n_expert) uses in the whole trace
    uint32_t *hot;    // (cells) the cells by count, most first, then by index: the store's hot order
    uint64_t *budget; // (n_machines) mc_plan_budgets
    uint8_t *res;     // (n_machines, n_layer, n_expert) resident when held (read from disk when not)
    uint8_t *over;    // (n_machines) a disk-tier machine holding more than its budget: reads happen
    double *read_ms;  // (n_machines) this step's reads
    uint32_t *uses, *misses; // (n_machines) this step's distinct experts, and those read
    // scratch
    uint32_t *rr;     // (n_expert) round-robin cursor, per layer replay
    uint32_t *n_hold; // (n_expert) this layer's holders of each expert (0 when local)
    uint16_t *hold;   // (n_expert, n_machines) their machine indices, in file order
    uint32_t *cnt;    // (n_machines, n_expert) choices per machine and expert
    uint32_t *rows;   // (n_machines) rows (tokens) per machine
    uint32_t *last;   // (n_machines) last token counted in rows
    size_t *enc_b;    // (n_machines) request row bytes of this step (max over its experts)
    double *work, *start, *end, *rate; // (n_machines) the processor-sharing jobs
} s_sim_t;

static void s_sim_free(s_sim_t *x) {
    free(x->count), free(x->hot), free(x->budget), free(x->res), free(x->over), free(x->read_ms), free(x->uses);
    free(x->misses);
    free(x->curve), free(x->host), free(x->out_bytes), free(x->rr), free(x->n_hold), free(x->hold), free(x->cnt);
    free(x->rows), free(x->last);
    free(x->enc_b), free(x->work), free(x->start), free(x->end), free(x->rate);
    memset(x, 0, sizeof *x);
}

static mc_err_t s_sim_init(s_sim_t *x, const mc_plan_shape_t *s, const mc_plan_machines_t *ms,
                           const mc_routing_stats_t *st, const mc_plan_sim_params_t *sp, char *err) {
    memset(x, 0, sizeof *x);
    if (st->n_layer != s->n_layer || st->n_expert != s->n_expert || st->k != s->k)
        return mc_err_set(err, MC_ERR_ARG, "the routing statistics are of %u layers x %u experts (%u used), the model %u x %u (%u)",
                          st->n_layer, st->n_expert, st->k, s->n_layer, s->n_expert, s->k);
    if (sp->batch == 0 || st->n_trace < sp->batch)
        return mc_err_set(err, MC_ERR_ARG, "the routing trace has %u tokens, fewer than a batch of %u", st->n_trace,
                          sp->batch);
    if (sp->wire != MC_WIRE_AUTO && mc_wire_row_bytes(sp->wire, s->dim) == 0)
        return mc_err_set(err, MC_ERR_ARG, "wire %s cannot carry rows of %u values", mc_wire_enc_name(sp->wire), s->dim);
    if (ms->n == 0 || ms->n > MC_PLAN_MAX_MACHINES)
        return mc_err_set(err, MC_ERR_ARG, "%zu machines (1..%d)", ms->n, MC_PLAN_MAX_MACHINES);
    x->s = s, x->ms = ms, x->st = st, x->sp = sp;
    x->steps = st->n_trace / sp->batch;
    if (sp->max_steps && x->steps > sp->max_steps) x->steps = sp->max_steps;
    const size_t n = ms->n, cells = (size_t)s->n_layer * s->n_expert;
    x->curve = calloc(n * cells, sizeof *x->curve);
    x->host = calloc(n, sizeof *x->host);
    x->out_bytes = calloc(cells, sizeof *x->out_bytes);
    x->rr = calloc(s->n_expert, sizeof *x->rr);
    x->n_hold = calloc(s->n_expert, sizeof *x->n_hold);
    x->hold = calloc((size_t)s->n_expert * n, sizeof *x->hold);
    x->cnt = calloc(n * s->n_expert, sizeof *x->cnt);
    x->rows = calloc(n, sizeof *x->rows);
    x->last = calloc(n, sizeof *x->last);
    x->enc_b = calloc(n, sizeof *x->enc_b);
    x->work = calloc(n, sizeof(double)), x->start = calloc(n, sizeof(double));
    x->end = calloc(n, sizeof(double)), x->rate = calloc(n, sizeof(double));
    x->count = calloc(cells, sizeof *x->count), x->hot = calloc(cells, sizeof *x->hot);
    x->budget = calloc(n, sizeof *x->budget), x->res = calloc(n * cells, 1), x->over = calloc(n, 1);
    x->read_ms = calloc(n, sizeof *x->read_ms), x->uses = calloc(n, sizeof *x->uses);
    x->misses = calloc(n, sizeof *x->misses);
    if (!x->count || !x->hot || !x->budget || !x->res || !x->over || !x->read_ms || !x->uses || !x->misses) {
        s_sim_free(x);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (!x->curve || !x->host || !x->out_bytes || !x->rr || !x->n_hold || !x->hold || !x->cnt || !x->rows || !x->last || !x->enc_b || !x->work ||
        !x->start || !x->end || !x->rate) {
        s_sim_free(x);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        size_t h = 0;
        while (strcmp(ms->m[h].host, ms->m[i].host)) h++;
        x->host[i] = h;
        for (size_t c = 0; c < cells; c++) {
            const mc_dtype_t *t = &s->types[3 * c];
            for (uint32_t j = 0; j < ms->m[i].n_curves; j++) {
                const mc_plan_curve_t *cv = &ms->m[i].curves[j];
                if (cv->types[0] == t[0] && cv->types[1] == t[1] && cv->types[2] == t[2]) x->curve[i * cells + c] = cv;
            }
        }
    }
    const size_t meta = (size_t)s->k * 8 + 8; // expert ids, weights and the row's index
    for (size_t c = 0; c < cells; c++) {
        const mc_wire_enc_t enc = sp->wire == MC_WIRE_AUTO ? s->auto_enc[c] : sp->wire;
        x->out_bytes[c] = mc_wire_row_bytes(enc, s->dim) + meta;
    }
    x->back_bytes = mc_wire_row_bytes(mc_wire_result_enc(sp->wire), s->dim);
    // The store's hot order: uses in the whole trace, most first, ties to
    // the lower cell (expert_store.c, s_choose_hot).
    for (size_t t = 0; t < st->n_trace; t++)
        for (uint32_t l = 0; l < s->n_layer; l++)
            for (uint32_t j = 0; j < s->k && (!s->moe || s->moe[l]); j++) {
                const uint32_t e = st->trace[(t * s->n_layer + l) * s->k + j];
                if (e < s->n_expert) x->count[(size_t)l * s->n_expert + e]++;
            }
    double *key = calloc(cells ? cells : 1, sizeof *key);
    size_t *order = malloc((cells ? cells : 1) * sizeof *order);
    bool ok = key && order;
    for (size_t c = 0; ok && c < cells; c++) key[c] = (double)x->count[c];
    ok = ok && s_rank(key, NULL, cells, order);
    for (size_t c = 0; ok && c < cells; c++) x->hot[c] = (uint32_t)order[c];
    free(key), free(order);
    if (!ok) {
        s_sim_free(x);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    mc_plan_budgets(ms, s, x->budget);
    return MC_OK;
}

// Machine i's resident experts under placement p: all it holds, unless it
// has the disk tier and holds more than its budget (or its mem_limit_mb);
// then the store's pinned hot set in its budget's whole MiB (what
// --mem-limit gets; or in mem_limit_mb): the held
// experts in the hot order until one does not fit, never one the trace does
// not use. Layers whose residency changed are flagged in changed (may be
// NULL).
static void s_resident(s_sim_t *x, const mc_plan_placement_t *p, size_t i, uint8_t *changed) {
    const mc_plan_shape_t *s = x->s;
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    uint8_t *res = x->res + i * cells;
    const uint8_t *held = p->held + i * cells;
    uint64_t used = 0;
    for (size_t c = 0; c < cells; c++) used += held[c] ? s->bytes[c] : 0;
    // Its resident bytes: the --mem-limit it runs under, else its budget's whole MiB.
    const uint64_t limit = (uint64_t)x->ms->m[i].mem_limit_mb << 20;
    x->over[i] = x->ms->m[i].disk_tier && used > (limit ? limit : x->budget[i]);
    const uint64_t room = limit ? limit : x->budget[i] >> 20 << 20;
    uint64_t taken = 0;
    bool full = !x->over[i];
    for (size_t o = 0; o < cells; o++) {
        const uint32_t c = x->hot[o];
        uint8_t r = held[c];
        if (r && !full) {
            if (x->count[c] == 0 || taken + s->bytes[c] > room) full = true;
            else taken += s->bytes[c];
        }
        if (r && x->over[i] && full) r = 0;
        if (changed && r != res[c]) changed[c / s->n_expert] = 1;
        res[c] = r;
    }
}

static void s_resident_all(s_sim_t *x, const mc_plan_placement_t *p) {
    for (size_t i = 0; i < p->n_machines; i++) s_resident(x, p, i, NULL);
}

// A read of b bytes from machine m's disk, ms.
static double s_read_ms(const mc_plan_machine_t *m, uint64_t b) {
    return m->disk_latency_ms + (m->disk_mb_s > 0 ? (double)b / (m->disk_mb_s * 1e3) : 0);
}

// Every pair held by someone, every held pair profiled on its machine.
static mc_err_t s_sim_check(const s_sim_t *x, const mc_plan_placement_t *p, char *err) {
    const mc_plan_shape_t *s = x->s;
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    for (uint32_t l = 0; l < s->n_layer; l++)
        for (uint32_t e = 0; e < s->n_expert; e++) {
            bool any = false;
            for (size_t i = 0; i < p->n_machines; i++) {
                if (!*s_held(p, i, l, e)) continue;
                any = true;
                if (!x->curve[i * cells + (size_t)l * s->n_expert + e]) {
                    const mc_dtype_t *t = &s->types[3 * ((size_t)l * s->n_expert + e)];
                    return mc_err_set(err, MC_ERR_ARG,
                                      "%s has no profile of experts of types [%s, %s, %s] (layer %u expert %u): run "
                                      "moe-expert --profile with this model there",
                                      x->ms->m[i].name, mc_dtype_name(t[0]), mc_dtype_name(t[1]), mc_dtype_name(t[2]), l, e);
                }
            }
            if (!any) return mc_err_set(err, MC_ERR_ARG, "layer %u expert %u is held by no machine", l, e);
        }
    return MC_OK;
}

// Processor sharing of the jobs with work > 0 (ms at full speed, from
// start[i]); fills end[i]. Jobs on one host advance at cores / threads of
// their speed while their threads outnumber its cores.
static void s_share(s_sim_t *x) {
    const mc_plan_machines_t *ms = x->ms;
    const size_t n = ms->n;
    double t = 0;
    double *left = x->rate; // reused: work left
    size_t active_left = 0;
    for (size_t i = 0; i < n; i++) {
        left[i] = x->work[i];
        x->end[i] = x->work[i] > 0 ? -1 : x->start[i];
        active_left += x->work[i] > 0;
    }
    // Every pass ends at an event (a start, or the job `who` finishing, which
    // is then finished whatever rounding left over), so there are at most 2n.
    for (size_t events = 0; active_left && events <= 2 * n; events++) {
        // Rates now: running jobs started by t and unfinished.
        double next = INFINITY;
        size_t who = SIZE_MAX; // the job whose finish is next (SIZE_MAX: a start is)
        for (size_t i = 0; i < n; i++)
            if (x->work[i] > 0 && x->end[i] < 0 && x->start[i] > t) next = fmin(next, x->start[i]);
        // The coordinator's own experts keep their cores: its pool spins
        // between the products of a burst, so processes beside it on its host
        // get only the cores its threads leave (measured: a node sharing the
        // coordinator's 2 cores answered only after the local experts were
        // done). Elsewhere the running jobs share a host's cores evenly.
        const bool coord_busy = x->work[0] > 0 && x->end[0] < 0 && x->start[0] <= t;
        double speed[MC_PLAN_MAX_MACHINES];
        for (size_t i = 0; i < n; i++) {
            speed[i] = 0;
            if (!(x->work[i] > 0 && x->end[i] < 0 && x->start[i] <= t)) continue;
            double cores = ms->m[i].cores, demand = 0;
            if (i == 0) {
                demand = ms->m[0].threads < cores ? ms->m[0].threads : cores;
            } else {
                if (coord_busy && x->host[i] == x->host[0]) {
                    const double taken = ms->m[0].threads < cores ? ms->m[0].threads : cores;
                    cores -= taken;
                }
                for (size_t j = 1; j < n; j++)
                    if (x->host[j] == x->host[i] && x->work[j] > 0 && x->end[j] < 0 && x->start[j] <= t)
                        demand += ms->m[j].threads < ms->m[j].cores ? ms->m[j].threads : ms->m[j].cores;
            }
            speed[i] = demand > cores ? cores / demand : 1.0;
            if (speed[i] <= 0) continue; // waits for the coordinator's cores
            const double fin = t + left[i] / speed[i];
            if (fin < next) next = fin, who = i;
        }
        const double dt = next > t ? next - t : 0;
        for (size_t i = 0; i < n; i++) {
            if (speed[i] <= 0) continue;
            left[i] -= dt * speed[i];
            if (i == who || left[i] <= 1e-12 * x->work[i] + 1e-15) {
                x->end[i] = next;
                active_left--;
            }
        }
        t = next;
    }
    for (size_t i = 0; i < n; i++) // not reached: the event bound above is exact
        if (x->end[i] < 0) x->end[i] = t;
}

// Replay layer l over the first x->steps steps; returns the layer's total
// expert-step time (ms) and adds per-machine figures to r when r is set.
static double s_sim_layer(s_sim_t *x, const mc_plan_placement_t *p, uint32_t l, mc_plan_sim_t *r) {
    const mc_plan_shape_t *s = x->s;
    const mc_plan_machines_t *ms = x->ms;
    const size_t n = ms->n, cells = (size_t)s->n_layer * s->n_expert;
    const uint32_t B = x->sp->batch, k = s->k, E = s->n_expert;
    memset(x->rr, 0, E * sizeof *x->rr);
    // Who computes each expert, resolved once per replay: the cluster's order,
    // local first, else the node replicas in turn.
    for (uint32_t e = 0; e < E; e++) {
        x->n_hold[e] = 0;
        if (*s_held(p, 0, l, e)) continue;
        for (size_t i = 1; i < n; i++)
            if (*s_held(p, i, l, e)) x->hold[(size_t)e * n + x->n_hold[e]++] = (uint16_t)i;
    }
    double total = 0;
    if (s->moe && !s->moe[l]) return 0; // a dense layer: no expert step (its FFN, the coordinator's, is not modelled)
    for (uint32_t step = 0; step < x->steps; step++) {
        memset(x->cnt, 0, n * E * sizeof *x->cnt);
        memset(x->rows, 0, n * sizeof *x->rows);
        memset(x->enc_b, 0, n * sizeof *x->enc_b);
        for (size_t i = 0; i < n; i++) x->last[i] = UINT32_MAX;
        for (uint32_t b = 0; b < B; b++) {
            const uint32_t tok = step * B + b;
            const uint8_t *sel = x->st->trace + ((size_t)tok * s->n_layer + l) * k;
            for (uint32_t j = 0; j < k; j++) {
                const uint32_t e = sel[j];
                if (e >= E) continue;
                size_t who = 0;
                if (!*s_held(p, 0, l, e)) {
                    if (!x->n_hold[e]) continue; // held by nobody: refused before
                    who = x->hold[(size_t)e * n + x->rr[e]++ % x->n_hold[e]];
                }
                x->cnt[who * E + e]++;
                if (x->last[who] != tok) x->last[who] = tok, x->rows[who]++;
                const size_t ob = x->out_bytes[(size_t)l * E + e];
                if (ob > x->enc_b[who]) x->enc_b[who] = ob;
            }
        }
        // Jobs: the coordinator's share from 0; each node's after its request
        // is through the coordinator's link (sent in file order). A machine
        // reading from its disk computes once its reads are in.
        double link_free = 0;
        for (size_t i = 0; i < n; i++) {
            double w = 0;
            x->read_ms[i] = 0, x->uses[i] = 0, x->misses[i] = 0;
            for (uint32_t e = 0; e < E; e++) {
                if (!x->cnt[i * E + e]) continue;
                w += s_curve_ms(x->curve[i * cells + (size_t)l * E + e], x->cnt[i * E + e]);
                x->uses[i]++;
                if (x->over[i] && !x->res[i * cells + (size_t)l * E + e])
                    x->misses[i]++, x->read_ms[i] += s_read_ms(&ms->m[i], s->bytes[(size_t)l * E + e]);
            }
            x->work[i] = w * ms->m[i].local_scale;
            x->start[i] = 0;
            if (x->over[i]) x->start[i] = x->read_ms[i];
            if (i == 0 || x->rows[i] == 0) continue;
            const double bw = fmin(ms->m[i].bandwidth_mbps, ms->m[0].bandwidth_mbps) * 1e3; // bits per ms
            const double out_b = (double)x->rows[i] * x->enc_b[i] + S_REQ_HEADER;
            link_free += out_b * 8 / bw + ms->request_ms / 2;
            x->start[i] = link_free + ms->m[i].latency_ms / 2;
            if (x->over[i]) x->start[i] += x->read_ms[i];
        }
        // A node on the coordinator's host while the coordinator's pool holds
        // every core there: not only its compute waits for the burst to end
        // (s_share) but its receiving too (the socket's thread, the request's
        // decoding), so its inbound half of the round trip starts then.
        // Measured on a 2-core loopback cluster: such a node's round trip less
        // compute grew from 0.76 to 1.25 ms when the coordinator computed
        // experts of the same layers.
        const double coord_cores = ms->m[0].threads < ms->m[0].cores ? ms->m[0].threads : ms->m[0].cores;
        if (x->work[0] > 0 && coord_cores >= ms->m[0].cores) {
            const double coord_end = x->start[0] + x->work[0];
            for (size_t i = 1; i < n; i++)
                if (x->rows[i] && x->host[i] == x->host[0])
                    x->start[i] = fmax(x->start[i], coord_end + ms->m[i].latency_ms / 2);
        }
        s_share(x);
        double t_layer = x->rows[0] ? x->end[0] : 0;
        for (size_t i = 1; i < n; i++) {
            if (x->rows[i] == 0) continue;
            const double bw = fmin(ms->m[i].bandwidth_mbps, ms->m[0].bandwidth_mbps) * 1e3;
            const double back_b = (double)x->rows[i] * x->back_bytes + S_REQ_HEADER;
            const double arrive = x->end[i] + ms->m[i].latency_ms / 2 + back_b * 8 / bw;
            t_layer = fmax(t_layer, arrive + ms->request_ms / 2);
            if (r) {
                r->requests[i] += 1;
                r->bytes[i] += (double)x->rows[i] * x->enc_b[i] + back_b + S_REQ_HEADER;
            }
        }
        if (r)
            for (size_t i = 0; i < n; i++) {
                r->busy_ms[i] += x->work[i];
                r->uses[i] += x->uses[i], r->misses[i] += x->misses[i], r->read_ms[i] += x->read_ms[i];
                for (uint32_t e = 0; e < E; e++) r->rows[i] += x->cnt[i * E + e];
            }
        total += t_layer;
    }
    return total;
}

void mc_plan_sim_free(mc_plan_sim_t *r) {
    if (!r) return;
    free(r->busy_ms), free(r->rows), free(r->requests), free(r->bytes), free(r->mem_mb), free(r->layer_ms);
    free(r->resident_mb), free(r->uses), free(r->misses), free(r->read_ms);
    memset(r, 0, sizeof *r);
}

mc_err_t mc_plan_resident(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                          const mc_plan_placement_t *p, uint8_t *res, char *err) {
    if (p->n_machines != ms->n || p->n_layer != s->n_layer || p->n_expert != s->n_expert)
        return mc_err_set(err, MC_ERR_ARG, "the placement is not of these machines and this model");
    s_sim_t x;
    const mc_plan_sim_params_t sp = mc_plan_sim_params_default();
    mc_err_t rc = s_sim_init(&x, s, ms, st, &sp, err);
    if (rc) return rc;
    s_resident_all(&x, p);
    memcpy(res, x.res, ms->n * s->n_layer * s->n_expert);
    s_sim_free(&x);
    return MC_OK;
}

static double s_attn_ms(const mc_plan_machine_t *c, uint32_t B) { return s_line(c->layer_ms_1, c->layer_ms_8, B); }
static double s_head_ms(const mc_plan_machine_t *c, uint32_t B) { return s_line(c->head_ms_1, c->head_ms_8, B); }

mc_err_t mc_plan_simulate(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                          const mc_plan_placement_t *p, const mc_plan_sim_params_t *sp, mc_plan_sim_t *out,
                          char *err) {
    if (p->n_machines != ms->n || p->n_layer != s->n_layer || p->n_expert != s->n_expert)
        return mc_err_set(err, MC_ERR_ARG, "the placement is not of these machines and this model");
    s_sim_t x;
    mc_err_t rc = s_sim_init(&x, s, ms, st, sp, err);
    if (rc) return rc;
    if ((rc = s_sim_check(&x, p, err))) {
        s_sim_free(&x);
        return rc;
    }
    const size_t n = ms->n;
    mc_plan_sim_t r = {0};
    r.busy_ms = calloc(n, sizeof(double)), r.rows = calloc(n, sizeof(double));
    r.requests = calloc(n, sizeof(double)), r.bytes = calloc(n, sizeof(double));
    r.mem_mb = calloc(n, sizeof(double)), r.layer_ms = calloc(s->n_layer, sizeof(double));
    r.resident_mb = calloc(n, sizeof(double)), r.uses = calloc(n, sizeof(double));
    r.misses = calloc(n, sizeof(double)), r.read_ms = calloc(n, sizeof(double));
    if (!r.busy_ms || !r.rows || !r.requests || !r.bytes || !r.mem_mb || !r.layer_ms || !r.resident_mb || !r.uses ||
        !r.misses || !r.read_ms) {
        mc_plan_sim_free(&r);
        s_sim_free(&x);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    s_resident_all(&x, p);
    double moe = 0;
    for (uint32_t l = 0; l < s->n_layer; l++) {
        r.layer_ms[l] = s_sim_layer(&x, p, l, &r) / x.steps;
        moe += r.layer_ms[l];
    }
    const double steps = x.steps;
    for (size_t i = 0; i < n; i++) {
        r.busy_ms[i] /= steps, r.rows[i] /= steps, r.requests[i] /= steps, r.bytes[i] /= steps;
        r.uses[i] /= steps, r.misses[i] /= steps, r.read_ms[i] /= steps;
        r.mem_mb[i] = s_used(p, s, i) / S_MIB;
        uint64_t res = 0;
        for (size_t c = 0; c < (size_t)s->n_layer * s->n_expert; c++)
            res += x.res[i * s->n_layer * s->n_expert + c] ? s->bytes[c] : 0;
        r.resident_mb[i] = res / S_MIB;
    }
    r.steps = x.steps;
    r.moe_ms = moe;
    r.attn_ms = s->n_layer * s_attn_ms(&ms->m[0], sp->batch);
    r.head_ms = s_head_ms(&ms->m[0], sp->batch);
    r.step_ms = r.attn_ms + r.moe_ms + r.head_ms;
    r.tok_s = r.step_ms > 0 ? sp->batch * 1e3 / r.step_ms : 0;
    s_sim_free(&x);
    *out = r;
    return MC_OK;
}

// --- the planner -------------------------------------------------------------------------

mc_plan_params_t mc_plan_params_default(void) {
    return (mc_plan_params_t){
        .sim = mc_plan_sim_params_default(), .local = true, .replicas = true, .min_gain = MC_PLAN_MIN_GAIN};
}

typedef struct {
    s_sim_t x;
    const mc_plan_params_t *pp;
    uint64_t *budget; // (n_machines)
    uint64_t *used;   // (n_machines)
    double *load;     // (n_layer, n_expert) expected choices per step
    uint32_t evals, max_evals;
    // The disk tier (the second try, when nothing fits the memory): machines
    // with it hold more than their budget. For the estimates, which of a
    // machine's experts are cold, as the store's hot set would leave them
    // when they arrive in the hot order (the greedy's order).
    bool tier;
    uint8_t *cold;      // (n_machines, n_layer, n_expert)
    uint64_t *res_used; // (n_machines) bytes of its resident ones
    uint8_t *full;      // (n_machines) one did not fit: the later ones are cold
    double *lt;         // (n_layer) each layer's simulated time (the search's)
    double *nt;         // (n_layer) scratch
    uint8_t *touched;   // (n_layer) layers whose residency a move changed
} s_planner_t;

static bool s_tier(const s_planner_t *pl, size_t i) { return pl->tier && pl->x.ms->m[i].disk_tier; }

static bool s_may_hold(const s_planner_t *pl, size_t i, uint32_t l, uint32_t e) {
    const mc_plan_shape_t *s = pl->x.s;
    if (i == 0 && !pl->pp->local) return false;
    if (!pl->x.curve[(i * s->n_layer + l) * s->n_expert + e]) return false;
    // The disk tier: any number, but its budget must hold the expert (the
    // least a --mem-limit can be).
    if (s_tier(pl, i)) return s->bytes[(size_t)l * s->n_expert + e] <= (pl->budget[i] >> 20 << 20);
    return pl->used[i] + s->bytes[(size_t)l * s->n_expert + e] <= pl->budget[i];
}

static void s_set(s_planner_t *pl, mc_plan_placement_t *p, size_t i, uint32_t l, uint32_t e, bool on) {
    uint8_t *h = s_held(p, i, l, e);
    if (*h == on) return;
    *h = on;
    const size_t c = (size_t)l * pl->x.s->n_expert + e;
    const uint64_t b = pl->x.s->bytes[c];
    pl->used[i] = on ? pl->used[i] + b : pl->used[i] - b;
    if (!s_tier(pl, i)) return;
    uint8_t *cold = &pl->cold[i * p->n_layer * p->n_expert + c];
    if (!on) {
        if (!*cold) pl->res_used[i] -= b;
        *cold = 0;
    } else if (!pl->full[i] && pl->x.count[c] && pl->res_used[i] + b <= (pl->budget[i] >> 20 << 20)) {
        pl->res_used[i] += b;
    } else {
        *cold = 1, pl->full[i] = 1;
    }
}

static uint32_t s_holders(const mc_plan_placement_t *p, uint32_t l, uint32_t e) {
    uint32_t h = 0;
    for (size_t i = 0; i < p->n_machines; i++) h += *s_held(p, i, l, e);
    return h;
}

// The analytic estimate of machine i's part of layer l: its link and its
// experts' steps at their expected loads, shared among replicas (a local
// copy takes every row).
static double s_estimate(const s_planner_t *pl, const mc_plan_placement_t *p, size_t i, uint32_t l) {
    const mc_plan_shape_t *s = pl->x.s;
    const mc_plan_machine_t *m = &pl->x.ms->m[i];
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    double t = 0, rows = 0;
    for (uint32_t e = 0; e < s->n_expert; e++) {
        if (!*s_held(p, i, l, e)) continue;
        double share = pl->load[(size_t)l * s->n_expert + e];
        if (i && *s_held(p, 0, l, e)) share = 0;
        else if (i) {
            uint32_t reps = 0;
            for (size_t j = 1; j < p->n_machines; j++) reps += *s_held(p, j, l, e);
            share /= reps;
        }
        t += s_curve_ms(pl->x.curve[i * cells + (size_t)l * s->n_expert + e], share);
        rows += share;
        // A cold expert: read when a step uses it (at least once among
        // `share` expected uses, as a Poisson count).
        if (pl->tier && pl->cold[i * cells + (size_t)l * s->n_expert + e])
            t += (1 - exp(-share)) * s_read_ms(m, s->bytes[(size_t)l * s->n_expert + e]);
    }
    if (i && rows > 0) {
        const double B = pl->pp->sim.batch;
        if (rows > B) rows = B;
        const double bw = fmin(m->bandwidth_mbps, pl->x.ms->m[0].bandwidth_mbps) * 1e3;
        t += m->latency_ms + pl->x.ms->request_ms +
             rows * (double)(pl->x.out_bytes[(size_t)l * s->n_expert] + pl->x.back_bytes) * 8 / bw;
    }
    // Machines sharing a host: their threads against its cores.
    return t * (m->threads > m->cores ? (double)m->threads / m->cores : 1.0);
}

static double s_estimate_layer(const s_planner_t *pl, const mc_plan_placement_t *p, uint32_t l) {
    double worst = 0;
    for (size_t i = 0; i < p->n_machines; i++) worst = fmax(worst, s_estimate(pl, p, i, l));
    return worst;
}

// Indices 0..n-1 ordered by key1 descending, then key2 descending, then
// index (deterministic): for the greedy order and the search order.
typedef struct {
    double k1, k2;
    size_t i;
} s_rank_t;

static int s_rank_cmp(const void *a, const void *b) {
    const s_rank_t *x = a, *y = b;
    if (x->k1 != y->k1) return x->k1 < y->k1 ? 1 : -1;
    if (x->k2 != y->k2) return x->k2 < y->k2 ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

// order[0..n) receives the ranking of (k1[i], k2[i] or 0). false: no memory.
static bool s_rank(const double *k1, const uint64_t *k2, size_t n, size_t *order) {
    s_rank_t *r = malloc((n ? n : 1) * sizeof *r);
    if (!r) return false;
    for (size_t i = 0; i < n; i++) r[i] = (s_rank_t){k1[i], k2 ? (double)k2[i] : 0, i};
    qsort(r, n, sizeof *r, s_rank_cmp);
    for (size_t i = 0; i < n; i++) order[i] = r[i].i;
    free(r);
    return true;
}

// Greedy start: every (layer, expert), heaviest first, to the machine where
// its layer's estimate grows least.
static mc_err_t s_greedy(s_planner_t *pl, mc_plan_placement_t *p, char *err) {
    const mc_plan_shape_t *s = pl->x.s;
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    // Heavier first; among equals, bigger first (they are the hard ones to fit).
    // With the disk tier, the store's hot order instead: a machine's first
    // experts are its resident ones.
    size_t *order = malloc(cells * sizeof *order);
    for (size_t c = 0; order && pl->tier && c < cells; c++) order[c] = pl->x.hot[c];
    if (!order || (!pl->tier && !s_rank(pl->load, s->bytes, cells, order))) {
        free(order);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    mc_err_t rc = MC_OK;
    for (size_t o = 0; o < cells && !rc; o++) {
        const uint32_t l = (uint32_t)(order[o] / s->n_expert), e = (uint32_t)(order[o] % s->n_expert);
        size_t best = SIZE_MAX;
        double best_t = INFINITY, best_own = INFINITY;
        for (size_t i = 0; i < p->n_machines; i++) {
            if (!s_may_hold(pl, i, l, e)) continue;
            s_set(pl, p, i, l, e, true);
            const double t = s_estimate_layer(pl, p, l), own = s_estimate(pl, p, i, l);
            s_set(pl, p, i, l, e, false);
            if (t < best_t - 1e-12 || (t <= best_t + 1e-12 && own < best_own)) best = i, best_t = t, best_own = own;
        }
        bool profiled = false;
        for (size_t i = 0; i < p->n_machines; i++)
            profiled |= (i || pl->pp->local) && pl->x.curve[(i * s->n_layer + l) * s->n_expert + e] != NULL;
        if (best == SIZE_MAX && !profiled) {
            const mc_dtype_t *t = &s->types[3 * order[o]];
            rc = mc_err_set(err, MC_ERR_ARG,
                            "no machine has a profile of experts of types [%s, %s, %s] (layer %u expert %u): run "
                            "moe-expert --profile with this model",
                            mc_dtype_name(t[0]), mc_dtype_name(t[1]), mc_dtype_name(t[2]), l, e);
        } else if (best == SIZE_MAX) {
            uint64_t total = 0, room = 0;
            for (size_t c = 0; c < cells; c++) total += s->bytes[c];
            for (size_t i = 0; i < p->n_machines; i++) room += (i || pl->pp->local) ? pl->budget[i] : 0;
            rc = mc_err_set(err, MC_ERR_RANGE,
                            "the experts do not fit: layer %u expert %u (%.1f MiB) has no machine with room left "
                            "(experts %.1f MiB in all, room for %.1f MiB across the machines)",
                            l, e, s->bytes[order[o]] / S_MIB, total / S_MIB, room / S_MIB);
        } else {
            s_set(pl, p, best, l, e, true);
        }
    }
    free(order);
    return rc;
}

// Replicas for the heaviest experts of each layer's bottleneck while they
// lower its estimate.
static void s_replicate(s_planner_t *pl, mc_plan_placement_t *p) {
    const mc_plan_shape_t *s = pl->x.s;
    for (uint32_t l = 0; l < s->n_layer; l++) {
        for (int round = 0; round < (int)(s->n_expert * p->n_machines); round++) {
            const double before = s_estimate_layer(pl, p, l);
            double best_t = before * (1 - S_MIN_GAIN);
            size_t best_i = SIZE_MAX;
            uint32_t best_e = 0;
            for (uint32_t e = 0; e < s->n_expert; e++) {
                if (*s_held(p, 0, l, e)) continue; // a local expert takes every row already
                for (size_t i = 1; i < p->n_machines; i++) {
                    if (*s_held(p, i, l, e) || !s_may_hold(pl, i, l, e)) continue;
                    s_set(pl, p, i, l, e, true);
                    const double t = s_estimate_layer(pl, p, l);
                    s_set(pl, p, i, l, e, false);
                    if (t < best_t) best_t = t, best_i = i, best_e = e;
                }
            }
            if (best_i == SIZE_MAX) break;
            s_set(pl, p, best_i, l, best_e, true);
        }
    }
}

static double s_eval(s_planner_t *pl, const mc_plan_placement_t *p, uint32_t l) {
    pl->evals++;
    return s_sim_layer(&pl->x, p, l, NULL);
}

// A move with the disk tier: the machines it touches have their resident
// sets chosen again, and every layer whose residency changed is replayed
// with l. Kept when their sum wins S_MIN_GAIN of l's time, else undone.
static bool s_try_tier(s_planner_t *pl, mc_plan_placement_t *p, uint32_t l, uint32_t e, size_t from, size_t to,
                       double *cur) {
    const uint32_t L = p->n_layer;
    if (from != SIZE_MAX) s_set(pl, p, from, l, e, false);
    if (to != SIZE_MAX) s_set(pl, p, to, l, e, true);
    memset(pl->touched, 0, L);
    pl->touched[l] = 1;
    if (from != SIZE_MAX) s_resident(&pl->x, p, from, pl->touched);
    if (to != SIZE_MAX) s_resident(&pl->x, p, to, pl->touched);
    double before = 0, after = 0;
    for (uint32_t t = 0; t < L; t++)
        if (pl->touched[t]) before += pl->lt[t], after += (pl->nt[t] = s_eval(pl, p, t));
    if (after < before - S_MIN_GAIN * pl->lt[l]) {
        for (uint32_t t = 0; t < L; t++)
            if (pl->touched[t]) pl->lt[t] = pl->nt[t];
        *cur = pl->lt[l];
        return true;
    }
    if (to != SIZE_MAX) s_set(pl, p, to, l, e, false);
    if (from != SIZE_MAX) s_set(pl, p, from, l, e, true);
    if (from != SIZE_MAX) s_resident(&pl->x, p, from, NULL);
    if (to != SIZE_MAX) s_resident(&pl->x, p, to, NULL);
    return false;
}

// Expert e of layer l leaves machine from and goes to machine to (SIZE_MAX:
// neither; a drop or a new replica). Kept when the simulator says it wins,
// else undone.
static bool s_try(s_planner_t *pl, mc_plan_placement_t *p, uint32_t l, uint32_t e, size_t from, size_t to,
                  double *cur) {
    if (pl->tier) return s_try_tier(pl, p, l, e, from, to, cur);
    if (from != SIZE_MAX) s_set(pl, p, from, l, e, false);
    if (to != SIZE_MAX) s_set(pl, p, to, l, e, true);
    const double t = s_eval(pl, p, l);
    if (t < *cur * (1 - S_MIN_GAIN)) {
        *cur = t;
        return true;
    }
    if (to != SIZE_MAX) s_set(pl, p, to, l, e, false);
    if (from != SIZE_MAX) s_set(pl, p, from, l, e, true);
    return false;
}

// Local search on layer l, every move scored by the simulator: drop a
// replica, move a pair to another machine, add a replica.
static void s_search_layer(s_planner_t *pl, mc_plan_placement_t *p, uint32_t l) {
    const mc_plan_shape_t *s = pl->x.s;
    const size_t n = p->n_machines;
    double cur = s_eval(pl, p, l);
    if (pl->tier) pl->lt[l] = cur;
    for (bool improved = true; improved && pl->evals < pl->max_evals;) {
        improved = false;
        for (uint32_t e = 0; e < s->n_expert && pl->evals < pl->max_evals; e++) {
            for (size_t a = 0; a < n; a++) {
                if (!*s_held(p, a, l, e)) continue;
                if (s_holders(p, l, e) > 1 && s_try(pl, p, l, e, a, SIZE_MAX, &cur)) {
                    improved = true;
                    continue;
                }
                for (size_t b = 0; b < n; b++) {
                    if (b == a || *s_held(p, b, l, e) || !s_may_hold(pl, b, l, e)) continue;
                    if (s_try(pl, p, l, e, a, b, &cur)) {
                        improved = true;
                        break;
                    }
                }
            }
            if (!pl->pp->replicas || *s_held(p, 0, l, e)) continue; // a local copy takes every row
            for (size_t b = 1; b < n; b++) {
                if (*s_held(p, b, l, e) || !s_may_hold(pl, b, l, e)) continue;
                if (s_try(pl, p, l, e, SIZE_MAX, b, &cur)) {
                    improved = true;
                    break;
                }
            }
        }
    }
}

// Search every layer, the slowest first, within the evaluation budget.
static void s_search(s_planner_t *pl, mc_plan_placement_t *p) {
    const uint32_t L = pl->x.s->n_layer;
    double *t = calloc(L ? L : 1, sizeof *t);
    size_t *order = calloc(L ? L : 1, sizeof *order);
    if (t && order) {
        if (pl->tier) s_resident_all(&pl->x, p);
        for (uint32_t l = 0; l < L; l++) t[l] = s_eval(pl, p, l);
        if (pl->tier) memcpy(pl->lt, t, L * sizeof *t);
        if (s_rank(t, NULL, L, order))
            for (uint32_t i = 0; i < L && pl->evals < pl->max_evals; i++) s_search_layer(pl, p, (uint32_t)order[i]);
    }
    free(t), free(order);
}

static double s_total(s_planner_t *pl, const mc_plan_placement_t *p) {
    if (pl->tier) s_resident_all(&pl->x, p);
    double sum = 0;
    for (uint32_t l = 0; l < p->n_layer; l++) sum += s_sim_layer(&pl->x, p, l, NULL);
    return sum;
}

// Does placement p fit: every machine within its budget, or with the disk
// tier (when planning with it) every expert it holds within its budget.
static bool s_fits(const s_planner_t *pl, const mc_plan_placement_t *p) {
    const mc_plan_shape_t *s = pl->x.s;
    for (size_t i = 0; i < p->n_machines; i++) {
        if (!s_tier(pl, i)) {
            if (pl->used[i] > pl->budget[i]) return false;
            continue;
        }
        for (uint32_t l = 0; l < s->n_layer; l++)
            for (uint32_t e = 0; e < s->n_expert; e++)
                if (*s_held(p, i, l, e) && !s_may_hold(pl, i, l, e)) return false;
    }
    return true;
}

// Both starts, searched: the greedy one into a (cleared), the naive split
// into b when it fits; *ta, *tb their totals (INFINITY: none). Returns the
// greedy start's error (MC_ERR_RANGE: it did not fit).
// The two starts, each searched: the greedy one into a (time ta), the naive
// split into b (tb; INFINITY when it does not fit or is not profiled, and
// then also *tn, the naive split's own time before the search).
static mc_err_t s_starts(s_planner_t *pl, mc_plan_placement_t *a, mc_plan_placement_t *b, double *ta, double *tb,
                         double *tn, char *err) {
    const mc_plan_shape_t *s = pl->x.s;
    const mc_plan_machines_t *ms = pl->x.ms;
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    memset(a->held, 0, ms->n * cells);
    memset(pl->used, 0, ms->n * sizeof *pl->used);
    if (pl->tier) {
        memset(pl->cold, 0, ms->n * cells);
        memset(pl->res_used, 0, ms->n * sizeof *pl->res_used);
        memset(pl->full, 0, ms->n);
    }
    pl->evals = 0;
    // The greedy start; when it cannot place everything (it goes by load, so
    // unequal expert sizes can leave memory in pieces) the naive start may.
    mc_err_t greedy_rc = s_greedy(pl, a, err);
    if (!greedy_rc && pl->pp->replicas) s_replicate(pl, a);
    if (!greedy_rc) s_search(pl, a);
    *ta = greedy_rc ? INFINITY : s_total(pl, a), *tb = *tn = INFINITY;
    // From the naive split too, when it fits and is profiled: the plan is
    // never predicted slower than it.
    char ignore[MC_ERR_LEN];
    mc_plan_placement_free(b);
    if (!mc_plan_naive(ms, s, b, ignore)) {
        memset(pl->used, 0, ms->n * sizeof *pl->used);
        for (size_t i = 0; i < ms->n; i++) pl->used[i] = s_used(b, s, i);
        if (!s_sim_check(&pl->x, b, ignore) && s_fits(pl, b)) {
            pl->evals = 0;
            *tn = s_total(pl, b);
            s_search(pl, b);
            *tb = s_total(pl, b);
        }
    }
    return greedy_rc;
}

mc_err_t mc_plan_make(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                      const mc_plan_params_t *pp, mc_plan_placement_t *out, char *err) {
    s_planner_t pl = {.pp = pp};
    mc_plan_sim_params_t sp = pp->sim;
    sp.max_steps = pp->search_steps ? pp->search_steps : S_DEFAULT_SEARCH_STEPS;
    mc_err_t rc = s_sim_init(&pl.x, s, ms, st, &sp, err);
    if (rc) return rc;
    pl.x.sp = &sp;
    pl.max_evals = pp->max_evals ? pp->max_evals : S_DEFAULT_EVALS;
    const size_t cells = (size_t)s->n_layer * s->n_expert;
    pl.budget = calloc(ms->n, sizeof *pl.budget);
    pl.used = calloc(ms->n, sizeof *pl.used);
    pl.load = calloc(cells, sizeof *pl.load);
    mc_plan_placement_t a = {0}, b = {0};
    if (!pl.budget || !pl.used || !pl.load) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc) {
        mc_plan_budgets(ms, s, pl.budget);
        const double tokens = st->tokens ? (double)st->tokens : 1;
        for (size_t c = 0; c < cells; c++) pl.load[c] = (double)st->rows[c] / tokens * sp.batch;
        rc = mc_plan_placement_new(&a, ms->n, s->n_layer, s->n_expert, err);
    }
    double ta = INFINITY, tb = INFINITY, tn = INFINITY;
    mc_err_t greedy_rc = rc ? rc : s_starts(&pl, &a, &b, &ta, &tb, &tn, err);
    // Nothing fits the memory: again with the disk tier, when some machine
    // that may hold experts has it.
    bool tier_ok = false;
    for (size_t i = 0; i < ms->n; i++) tier_ok |= ms->m[i].disk_tier && (i || pp->local);
    if (!rc && greedy_rc == MC_ERR_RANGE && tb == INFINITY && tier_ok) {
        pl.tier = true;
        pl.cold = calloc(ms->n * cells, 1);
        pl.res_used = calloc(ms->n, sizeof *pl.res_used);
        pl.full = calloc(ms->n, 1);
        pl.lt = calloc(s->n_layer, sizeof *pl.lt), pl.nt = calloc(s->n_layer, sizeof *pl.nt);
        pl.touched = calloc(s->n_layer, 1);
        if (!pl.cold || !pl.res_used || !pl.full || !pl.lt || !pl.nt || !pl.touched)
            rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        else greedy_rc = s_starts(&pl, &a, &b, &ta, &tb, &tn, err);
    }
    if (!rc && greedy_rc && tb == INFINITY) rc = greedy_rc; // neither start fits: greedy's message
    if (!rc) {
        if (tb < ta) {
            mc_plan_placement_free(&a);
            a = b;
            b.held = NULL;
        }
        // A gain the simulator cannot tell from its error: the naive split.
        // Gains are of whole steps (the coordinator's attention and head
        // included), as tokens per second see them.
        const double fixed = pl.x.steps * (s->n_layer * s_attn_ms(&ms->m[0], sp.batch) + s_head_ms(&ms->m[0], sp.batch));
        const double best = ta < tb ? ta : tb;
        if (tn < INFINITY && (best + fixed) * (1 + pp->min_gain) > tn + fixed) {
            mc_plan_placement_free(&a);
            rc = mc_plan_naive(ms, s, &a, err);
        }
    }
    if (!rc) {
        *out = a;
        a.held = NULL;
    }
    mc_plan_placement_free(&a);
    mc_plan_placement_free(&b);
    free(pl.budget), free(pl.used), free(pl.load);
    free(pl.cold), free(pl.res_used), free(pl.full), free(pl.lt), free(pl.nt), free(pl.touched);
    s_sim_free(&pl.x);
    return rc;
}

// --- the report ---------------------------------------------------------------------------

void mc_plan_report(FILE *f, const char *title, const mc_plan_placement_t *p, const mc_plan_machines_t *ms,
                    const mc_plan_shape_t *s, const mc_plan_sim_t *r) {
    assert(p->n_machines == ms->n); // a programmer's mistake: the report of another cluster
    fprintf(f, "%s: %.1f tok/s predicted, %.2f ms a step (attention %.2f, experts %.2f, head %.2f) over %u steps\n",
            title, r->tok_s, r->step_ms, r->attn_ms, r->moe_ms, r->head_ms, r->steps);
    bool tier = false;
    for (size_t i = 0; i < ms->n; i++) tier |= r->misses[i] > 0 || r->resident_mb[i] < r->mem_mb[i];
    fprintf(f, "  %-16s %-11s %7s %8s %12s %10s %9s %11s", "machine", "role", "experts", "replicas", "memory MiB",
            "choices/step", "busy", "KB/step");
    if (tier) fprintf(f, " %12s %6s %12s", "resident MiB", "hits", "read ms/step");
    fprintf(f, "\n");
    uint64_t *budget = malloc(ms->n * sizeof *budget);
    if (budget) mc_plan_budgets(ms, s, budget);
    for (size_t i = 0; i < ms->n; i++) {
        uint32_t held = 0, shared = 0;
        for (uint32_t l = 0; l < s->n_layer; l++)
            for (uint32_t e = 0; e < s->n_expert; e++)
                if (*s_held(p, i, l, e)) held++, shared += s_holders(p, l, e) > 1;
        char mem[48];
        snprintf(mem, sizeof mem, "%.0f/%.0f", r->mem_mb[i], budget ? budget[i] / S_MIB : 0.0);
        fprintf(f, "  %-16s %-11s %7u %8u %12s %10.1f %8.0f%% %11.1f", ms->m[i].name,
                i ? "node" : "coordinator", held, shared, mem, r->rows[i],
                r->step_ms > 0 ? 100 * r->busy_ms[i] / r->step_ms : 0.0, r->bytes[i] / 1e3);
        if (tier)
            fprintf(f, " %12.0f %5.1f%% %12.2f", r->resident_mb[i],
                    r->uses[i] > 0 ? 100 * (1 - r->misses[i] / r->uses[i]) : 100.0, r->read_ms[i]);
        fprintf(f, "\n");
    }
    free(budget);
}

uint32_t mc_plan_mem_limits(const mc_plan_placement_t *p, const mc_plan_machines_t *ms, const mc_plan_shape_t *s,
                            mc_cluster_config_t *c) {
    uint64_t budget[MC_PLAN_MAX_MACHINES];
    if (p->n_machines != ms->n || ms->n > MC_PLAN_MAX_MACHINES) return 0;
    mc_plan_budgets(ms, s, budget);
    uint32_t coord = 0;
    for (size_t i = 0; i < ms->n; i++) {
        if (!ms->m[i].disk_tier || s_used(p, s, i) <= budget[i]) continue;
        const uint32_t mb = (uint32_t)(budget[i] >> 20 < MC_CLUSTER_MAX_MEM_MB ? budget[i] >> 20 : MC_CLUSTER_MAX_MEM_MB);
        if (i == 0) coord = mb;
        else if (c)
            for (size_t j = 0; j < c->n_nodes; j++)
                if (!strcmp(c->nodes[j].name, ms->m[i].name)) c->nodes[j].mem_limit_mb = mb;
    }
    return coord;
}
