/*
 * cluster_config: parser, checker and writer of the cluster file.
 *
 * The parser walks libyaml's event stream with the schema in hand instead of
 * loading a document tree: each key is looked up as soon as it is read and
 * its value must be of the expected kind, so an error is reported at the
 * exact mark where it happens, nothing deeper than the schema is ever
 * entered, and memory stays proportional to what was accepted. One event is
 * alive at a time (s_parser_t.ev), which keeps event ownership in one place.
 */
#include "cluster_config.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "file.h"
#include "keys.h"

enum {
    S_EXPERT_WORDS = MC_CLUSTER_MAX_EXPERTS / 64,
    S_LAYER_WORDS = MC_CLUSTER_MAX_LAYERS / 64,
    S_QUOTE_MAX = 40, // bytes of user text repeated in a message
    S_MAX_ID = 65535, // larger numbers are refused before any set limit applies
    S_MAX_HOLDS = 4096, // (layers, experts) blocks of one node
    S_IPC_MAX = 107,  // sun_path holds 108 bytes with the NUL
};

// --- small text helpers ---------------------------------------------------

// snprintf-style append: *len counts every byte asked for, buf keeps what
// fits (always NUL-terminated when cap > 0).
__attribute__((format(printf, 4, 5))) static void s_appendf(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    size_t at = *len;
    va_list ap;
    va_start(ap, fmt);
    int n = at < cap ? vsnprintf(buf + at, cap - at, fmt, ap) : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

// text[0..n) made safe to repeat inside a one-line message: control bytes
// become '?', and long text is cut (on a UTF-8 boundary) with "...".
static const char *s_quote_n(const char *text, size_t n, char *buf, size_t cap) {
    assert(cap > S_QUOTE_MAX + 3);
    bool cut = n > S_QUOTE_MAX;
    if (cut) {
        n = S_QUOTE_MAX;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[i];
        buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    strcpy(buf + n, cut ? "..." : "");
    return buf;
}

static const char *s_quote(const char *text, char *buf, size_t cap) { return s_quote_n(text, strlen(text), buf, cap); }

static bool s_is_space(char ch) { return ch == ' ' || ch == '\t'; }
static bool s_is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static bool s_is_alnum(char ch) { return s_is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }

// Decimal number in [a, b) (spaces around allowed) into *v; values above
// limit come back as limit + 1, so no hostile length can overflow.
static bool s_parse_number(const char *a, const char *b, uint32_t limit, uint32_t *v) {
    while (a < b && s_is_space(*a)) a++;
    while (b > a && s_is_space(b[-1])) b--;
    if (a == b) return false;
    uint32_t x = 0;
    for (; a < b; a++) {
        if (!s_is_digit(*a)) return false;
        x = x * 10 + (uint32_t)(*a - '0');
        if (x > limit) x = limit + 1;
    }
    *v = x;
    return true;
}

// --- id sets --------------------------------------------------------------

static bool s_bit(const uint64_t *bits, uint32_t i) { return bits[i / 64] >> (i % 64) & 1; }

static bool s_bits_full(const uint64_t *bits, size_t words) {
    for (size_t w = 0; w < words; w++)
        if (bits[w] != UINT64_MAX) return false;
    return true;
}

static bool s_bits_empty(const uint64_t *bits, size_t words) {
    for (size_t w = 0; w < words; w++)
        if (bits[w]) return false;
    return true;
}

static uint32_t s_bits_count(const uint64_t *bits, size_t words) {
    uint32_t n = 0;
    for (size_t w = 0; w < words; w++) n += (uint32_t)__builtin_popcountll(bits[w]);
    return n;
}

static size_t s_bits_format(const uint64_t *bits, uint32_t nbits, char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = '\0';
    for (uint32_t i = 0; i < nbits; i++) {
        if (!s_bit(bits, i)) continue;
        uint32_t j = i;
        while (j + 1 < nbits && s_bit(bits, j + 1)) j++;
        const char *sep = len ? "," : "";
        if (i == j) s_appendf(buf, cap, &len, "%s%" PRIu32, sep, i);
        else s_appendf(buf, cap, &len, "%s%" PRIu32 "-%" PRIu32, sep, i, j);
        i = j;
    }
    return len;
}

// The set for a message: cut with "..." when it does not fit.
static const char *s_bits_brief(const uint64_t *bits, uint32_t nbits, char *buf, size_t cap) {
    assert(cap > 4);
    if (s_bits_format(bits, nbits, buf, cap) >= cap) strcpy(buf + cap - 4, "...");
    return buf;
}

// Add the ids of a comma list of numbers and ranges ("0-3, 6") to bits, which
// holds ids below max. `what` names an id in messages ("expert"). On failure
// a message without location goes to msg (MC_ERR_LEN bytes).
static bool s_ids_add(const char *text, const char *what, uint32_t max, uint64_t *bits, char *msg) {
    char q[S_QUOTE_MAX + 4];
    for (const char *p = text;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && s_is_space(*a)) a++;
        while (b > a && s_is_space(b[-1])) b--;
        size_t n = (size_t)(b - a);
        if (n == 0) {
            mc_err_set(msg, MC_ERR_FORMAT, "empty item in %s list '%s'", what, s_quote(text, q, sizeof q));
            return false;
        }
        if ((n == 3 && !memcmp(a, "all", 3)) || (n == 4 && !memcmp(a, "none", 4))) {
            mc_err_set(msg, MC_ERR_FORMAT, "'%.*s' must stand alone, not inside a list of %s ids", (int)n, a, what);
            return false;
        }
        const char *dash = memchr(a, '-', n);
        uint32_t lo, hi;
        if (dash) {
            if (!s_parse_number(a, dash, S_MAX_ID, &lo) || !s_parse_number(dash + 1, b, S_MAX_ID, &hi) || lo > hi) {
                mc_err_set(msg, MC_ERR_FORMAT, "bad %s range '%s'", what, s_quote_n(a, n, q, sizeof q));
                return false;
            }
        } else if (!s_parse_number(a, b, S_MAX_ID, &lo)) {
            mc_err_set(msg, MC_ERR_FORMAT, "bad %s id '%s'", what, s_quote_n(a, n, q, sizeof q));
            return false;
        } else {
            hi = lo;
        }
        if (hi >= max) {
            mc_err_set(msg, MC_ERR_FORMAT, "%s %s '%s' is too large (cluster files support %s ids up to %" PRIu32 ")",
                       what, dash ? "range" : "id", s_quote_n(a, n, q, sizeof q), what, max - 1);
            return false;
        }
        for (uint32_t i = lo; i <= hi; i++) bits[i / 64] |= (uint64_t)1 << (i % 64);
        if (!*end) return true;
        p = end + 1;
    }
}

// A whole set written as one string: a list, "all" or "none".
static bool s_set_parse(const char *text, const char *what, uint32_t max, uint64_t *bits, char *msg) {
    const size_t words = max / 64;
    const char *a = text, *b = text + strlen(text);
    while (a < b && s_is_space(*a)) a++;
    while (b > a && s_is_space(b[-1])) b--;
    memset(bits, 0, words * sizeof *bits);
    if (b - a == 3 && !memcmp(a, "all", 3)) {
        memset(bits, 0xff, words * sizeof *bits);
        return true;
    }
    if (b - a == 4 && !memcmp(a, "none", 4)) return true;
    if (a == b) {
        mc_err_set(msg, MC_ERR_FORMAT, "empty %s set (write none for no %ss)", what, what);
        return false;
    }
    return s_ids_add(text, what, max, bits, msg);
}

mc_err_t mc_expert_set_parse(const char *text, mc_expert_set_t *out, char *err) {
    mc_expert_set_t s;
    char msg[MC_ERR_LEN];
    if (!text || !out) return mc_err_set(err, MC_ERR_ARG, "expert set: NULL argument");
    if (!s_set_parse(text, "expert", MC_CLUSTER_MAX_EXPERTS, s.bits, msg))
        return mc_err_set(err, MC_ERR_FORMAT, "%s", msg);
    *out = s;
    return MC_OK;
}

mc_err_t mc_layer_set_parse(const char *text, mc_layer_set_t *out, char *err) {
    mc_layer_set_t s;
    char msg[MC_ERR_LEN];
    if (!text || !out) return mc_err_set(err, MC_ERR_ARG, "layer set: NULL argument");
    if (!s_set_parse(text, "layer", MC_CLUSTER_MAX_LAYERS, s.bits, msg))
        return mc_err_set(err, MC_ERR_FORMAT, "%s", msg);
    *out = s;
    return MC_OK;
}

bool mc_expert_set_has(const mc_expert_set_t *s, uint32_t expert) {
    return expert < MC_CLUSTER_MAX_EXPERTS && s_bit(s->bits, expert);
}

bool mc_layer_set_has(const mc_layer_set_t *s, uint32_t layer) {
    return layer < MC_CLUSTER_MAX_LAYERS && s_bit(s->bits, layer);
}

size_t mc_expert_set_format(const mc_expert_set_t *s, char *buf, size_t cap) {
    return s_bits_format(s->bits, MC_CLUSTER_MAX_EXPERTS, buf, cap);
}

size_t mc_layer_set_format(const mc_layer_set_t *s, char *buf, size_t cap) {
    return s_bits_format(s->bits, MC_CLUSTER_MAX_LAYERS, buf, cap);
}

bool mc_cluster_node_holds(const mc_cluster_node_t *n, uint32_t layer, uint32_t expert) {
    if (!n->n_holds) return mc_layer_set_has(&n->layers, layer) && mc_expert_set_has(&n->experts, expert);
    for (size_t i = 0; i < n->n_holds; i++)
        if (mc_layer_set_has(&n->holds[i].layers, layer) && mc_expert_set_has(&n->holds[i].experts, expert)) return true;
    return false;
}

bool mc_cluster_config_local_holds(const mc_cluster_config_t *c, uint32_t layer, uint32_t expert) {
    if (!c->n_local_holds)
        return mc_layer_set_has(&c->local_layers, layer) && mc_expert_set_has(&c->local_experts, expert);
    for (size_t i = 0; i < c->n_local_holds; i++)
        if (mc_layer_set_has(&c->local_holds[i].layers, layer) && mc_expert_set_has(&c->local_holds[i].experts, expert))
            return true;
    return false;
}

// --- config values (shared by the parser and the builder) --------------------

static bool s_check_name(const mc_cluster_config_t *c, const char *name, char *msg) {
    char q[S_QUOTE_MAX + 4];
    size_t n = strlen(name);
    if (n == 0 || n > MC_CLUSTER_MAX_NAME) {
        mc_err_set(msg, MC_ERR_FORMAT, "node name '%s' must be 1 to %d characters long", s_quote(name, q, sizeof q),
                   MC_CLUSTER_MAX_NAME);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!s_is_alnum(name[i]) && name[i] != '.' && name[i] != '_' && name[i] != '-') {
            mc_err_set(msg, MC_ERR_FORMAT, "node name '%s' may only contain letters, digits, '.', '_' and '-'",
                       s_quote(name, q, sizeof q));
            return false;
        }
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (strcmp(c->nodes[i].name, name)) continue;
        if (c->nodes[i].at.line)
            mc_err_set(msg, MC_ERR_FORMAT, "duplicate node name '%s' (first at line %" PRIu32 ")", name,
                       c->nodes[i].at.line);
        else mc_err_set(msg, MC_ERR_FORMAT, "duplicate node name '%s'", name);
        return false;
    }
    return true;
}

// tcp://HOST:PORT where HOST is a name, an IPv4 address or a bracketed IPv6
// address; the coordinator connects, so wildcards make no sense.
static bool s_tcp_ok(const char *hp) {
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp) return false;
    uint32_t port;
    if (!s_parse_number(colon + 1, colon + strlen(colon), 65535, &port) || port < 1 || port > 65535) return false;
    if (hp[0] == '[') {
        if (colon[-1] != ']' || colon - hp < 3) return false;
        for (const char *p = hp + 1; p < colon - 1; p++)
            if (!s_is_alnum(*p) && *p != ':' && *p != '.') return false;
        return true;
    }
    for (const char *p = hp; p < colon; p++)
        if (!s_is_alnum(*p) && *p != '.' && *p != '-' && *p != '_') return false;
    return true;
}

static bool s_check_endpoint(const mc_cluster_config_t *c, const char *ep, char *msg) {
    char q[S_QUOTE_MAX + 4];
    size_t n = strlen(ep);
    if (n > MC_CLUSTER_MAX_ENDPOINT) {
        mc_err_set(msg, MC_ERR_FORMAT, "endpoint '%s' is longer than %d bytes", s_quote(ep, q, sizeof q),
                   MC_CLUSTER_MAX_ENDPOINT);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)ep[i];
        if (ch <= ' ' || ch == 0x7f) {
            mc_err_set(msg, MC_ERR_FORMAT, "endpoint '%s' contains a space or control character",
                       s_quote(ep, q, sizeof q));
            return false;
        }
    }
    bool ok;
    if (!strncmp(ep, "tcp://", 6)) {
        ok = s_tcp_ok(ep + 6);
        if (!ok)
            mc_err_set(msg, MC_ERR_FORMAT, "bad endpoint '%s' (expected tcp://HOST:PORT with PORT 1 to 65535)",
                       s_quote(ep, q, sizeof q));
    } else if (!strncmp(ep, "ipc://", 6)) {
        ok = n > 6 && n - 6 <= S_IPC_MAX;
        if (!ok)
            mc_err_set(msg, MC_ERR_FORMAT, "bad endpoint '%s' (expected ipc://PATH, PATH 1 to %d bytes)",
                       s_quote(ep, q, sizeof q), S_IPC_MAX);
    } else if (!strncmp(ep, "inproc://", 9)) {
        ok = n > 9;
        if (!ok) mc_err_set(msg, MC_ERR_FORMAT, "bad endpoint '%s' (expected inproc://NAME)", s_quote(ep, q, sizeof q));
    } else {
        ok = false;
        mc_err_set(msg, MC_ERR_FORMAT, "endpoint '%s' must start with tcp://, ipc:// or inproc://",
                   s_quote(ep, q, sizeof q));
    }
    for (size_t i = 0; ok && i < c->n_nodes; i++) {
        if (strcmp(c->nodes[i].endpoint, ep)) continue;
        mc_err_set(msg, MC_ERR_FORMAT, "duplicate endpoint '%s' (already used by node '%s')", s_quote(ep, q, sizeof q),
                   c->nodes[i].name);
        ok = false;
    }
    return ok;
}

// A path as written (*as) and relative to the cluster file's folder (*resolved).
static bool s_set_path(const mc_cluster_config_t *c, char **as, char **resolved, const char *model, const char *what,
                       char *msg) {
    size_t n = strlen(model);
    if (n == 0 || n > MC_CLUSTER_MAX_PATH) {
        mc_err_set(msg, MC_ERR_FORMAT, "the %s path must be 1 to %d bytes long", what, MC_CLUSTER_MAX_PATH);
        return false;
    }
    // Relative paths are relative to the folder of the cluster file, so the
    // file works whatever the current directory of the coordinator.
    const char *slash = c->path ? strrchr(c->path, '/') : NULL;
    size_t dir = model[0] != '/' && slash ? (size_t)(slash - c->path) + 1 : 0;
    char *m = malloc(n + 1), *r = malloc(dir + n + 1);
    if (!m || !r) {
        free(m);
        free(r);
        mc_err_set(msg, MC_ERR_NOMEM, "out of memory");
        return false;
    }
    memcpy(m, model, n + 1);
    memcpy(r, c->path ? c->path : "", dir);
    memcpy(r + dir, model, n + 1);
    free(*as);
    free(*resolved);
    *as = m;
    *resolved = r;
    return true;
}

static bool s_set_model(mc_cluster_config_t *c, const char *model, char *msg) {
    return s_set_path(c, &c->model, &c->model_resolved, model, "model", msg);
}

// Append a node whose strings the config now owns. The array always has room
// for the next power of two, so no capacity needs to be stored.
static bool s_append_node(mc_cluster_config_t *c, const mc_cluster_node_t *n) {
    assert(c->n_nodes < MC_CLUSTER_MAX_NODES);
    size_t k = c->n_nodes;
    if ((k & (k - 1)) == 0) {
        mc_cluster_node_t *p = realloc(c->nodes, (k ? 2 * k : 1) * sizeof *p);
        if (!p) return false;
        c->nodes = p;
    }
    c->nodes[c->n_nodes++] = *n;
    return true;
}

mc_cluster_config_t *mc_cluster_config_new(void) {
    mc_cluster_config_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->wire = MC_WIRE_AUTO;
    c->timeout_ms = MC_CLUSTER_DEFAULT_TIMEOUT_MS;
    c->retry_ms = MC_CLUSTER_DEFAULT_RETRY_MS;
    c->heartbeat_ms = MC_CLUSTER_DEFAULT_HEARTBEAT_MS;
    c->load_timeout_ms = 0;
    c->dead_ms = MC_CLUSTER_DEFAULT_DEAD_MS;
    c->slow_ms = MC_CLUSTER_DEFAULT_SLOW_MS;
    memset(c->local_layers.bits, 0xff, sizeof c->local_layers.bits);
    memset(c->discover_layers.bits, 0xff, sizeof c->discover_layers.bits);
    return c;
}

void mc_cluster_config_destroy(mc_cluster_config_t **pc) {
    if (!pc || !*pc) return;
    mc_cluster_config_t *c = *pc;
    for (size_t i = 0; i < c->n_nodes; i++) {
        free(c->nodes[i].name);
        free(c->nodes[i].endpoint);
        free(c->nodes[i].holds);
    }
    free(c->nodes);
    free(c->local_holds);
    free(c->discover_keys);
    free(c->path);
    free(c->model);
    free(c->model_resolved);
    free(c->secret_key);
    free(c->secret_key_resolved);
    free(c->rebalance.machines);
    free(c->rebalance.machines_resolved);
    free(c);
    *pc = NULL;
}

mc_err_t mc_cluster_config_remove_node(mc_cluster_config_t *c, size_t i, char *err) {
    if (i >= c->n_nodes) return mc_err_set(err, MC_ERR_ARG, "no node %zu (the config has %zu)", i, c->n_nodes);
    free(c->nodes[i].name);
    free(c->nodes[i].endpoint);
    free(c->nodes[i].holds);
    memmove(c->nodes + i, c->nodes + i + 1, (c->n_nodes - i - 1) * sizeof *c->nodes);
    c->n_nodes--;
    return MC_OK;
}

mc_cluster_config_t *mc_cluster_config_clone(const mc_cluster_config_t *c, char *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    mc_err_t rc = mc_cluster_config_write(c, f, err);
    if (fclose(f) != 0 && !rc) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_cluster_config_t *copy = rc ? NULL : mc_cluster_config_parse(buf, len, c->path, err);
    free(buf);
    return copy;
}

mc_err_t mc_cluster_config_add_node(mc_cluster_config_t *c, const char *name, const char *endpoint,
                                    const mc_expert_set_t *experts, const mc_layer_set_t *layers, char *err) {
    char msg[MC_ERR_LEN];
    if (!c || !name || !endpoint) return mc_err_set(err, MC_ERR_ARG, "add node: NULL argument");
    if (c->n_nodes == MC_CLUSTER_MAX_NODES)
        return mc_err_set(err, MC_ERR_ARG, "too many nodes (at most %d)", MC_CLUSTER_MAX_NODES);
    if (!s_check_name(c, name, msg) || !s_check_endpoint(c, endpoint, msg))
        return mc_err_set(err, MC_ERR_ARG, "%s", msg);
    mc_cluster_node_t n = {.name = strdup(name), .endpoint = strdup(endpoint)};
    if (experts) n.experts = *experts;
    else memset(n.experts.bits, 0xff, sizeof n.experts.bits);
    if (layers) n.layers = *layers;
    else memset(n.layers.bits, 0xff, sizeof n.layers.bits);
    if (!n.name || !n.endpoint || !s_append_node(c, &n)) {
        free(n.name);
        free(n.endpoint);
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    }
    return MC_OK;
}

mc_err_t mc_cluster_config_set_secret_key(mc_cluster_config_t *c, const char *path, char *err) {
    char msg[MC_ERR_LEN];
    if (!s_set_path(c, &c->secret_key, &c->secret_key_resolved, path, "secret key", msg))
        return mc_err_set(err, MC_ERR_ARG, "%s", msg);
    return MC_OK;
}

// The rebalance block's values, checked (msg says what is wrong).
static bool s_check_rebalance(uint32_t every_s, double min_gain, uint32_t window, double tolerance, char *msg) {
    if (every_s < MC_CLUSTER_MIN_REBALANCE_S || every_s > MC_CLUSTER_MAX_REBALANCE_S)
        return mc_err_set(msg, MC_ERR_FORMAT, "'every_s' in 'rebalance' must be a number of seconds from %u to %u",
                          MC_CLUSTER_MIN_REBALANCE_S, MC_CLUSTER_MAX_REBALANCE_S), false;
    if (!(min_gain >= 0 && min_gain < 10))
        return mc_err_set(msg, MC_ERR_FORMAT, "'min_gain' in 'rebalance' must be at least 0 and below 10 (0.10: 10%% faster)"),
               false;
    if (window < MC_CLUSTER_MIN_REBALANCE_WINDOW || window > MC_CLUSTER_MAX_REBALANCE_WINDOW)
        return mc_err_set(msg, MC_ERR_FORMAT, "'window' in 'rebalance' must be a number of decode steps from %u to %u",
                          MC_CLUSTER_MIN_REBALANCE_WINDOW, MC_CLUSTER_MAX_REBALANCE_WINDOW), false;
    if (!(tolerance >= 0 && tolerance <= 1))
        return mc_err_set(msg, MC_ERR_FORMAT, "'tolerance' in 'rebalance' must be a share from 0 to 1 (0.05: 5%%)"), false;
    return true;
}

mc_err_t mc_cluster_config_set_rebalance(mc_cluster_config_t *c, uint32_t every_s, double min_gain,
                                         const char *machines, uint32_t window, double tolerance, char *err) {
    char msg[MC_ERR_LEN];
    if (!c || !machines) return mc_err_set(err, MC_ERR_ARG, "set rebalance: NULL argument");
    if (!s_check_rebalance(every_s, min_gain, window, tolerance, msg) ||
        !s_set_path(c, &c->rebalance.machines, &c->rebalance.machines_resolved, machines, "machines", msg))
        return mc_err_set(err, MC_ERR_ARG, "%s", msg);
    c->rebalance.on = true;
    c->rebalance.every_s = every_s, c->rebalance.min_gain = min_gain;
    c->rebalance.window = window, c->rebalance.tolerance = tolerance;
    return MC_OK;
}

mc_err_t mc_cluster_config_set_node_key(mc_cluster_config_t *c, size_t i, const char *public_key, char *err) {
    char msg[MC_ERR_LEN];
    if (i >= c->n_nodes) return mc_err_set(err, MC_ERR_ARG, "no node %zu", i);
    if (mc_keys_parse(public_key, strlen(public_key), c->nodes[i].public_key, msg))
        return mc_err_set(err, MC_ERR_ARG, "node %s: %s", c->nodes[i].name, msg);
    return MC_OK;
}

static mc_err_t s_add_hold(mc_cluster_hold_t **holds, size_t *n_holds, const char *who, const mc_layer_set_t *layers,
                           const mc_expert_set_t *experts, char *err) {
    if (!layers || !experts) return mc_err_set(err, MC_ERR_ARG, "add hold: NULL argument");
    if (*n_holds == S_MAX_HOLDS) return mc_err_set(err, MC_ERR_ARG, "%s: more than %d blocks", who, S_MAX_HOLDS);
    mc_cluster_hold_t *h = realloc(*holds, (*n_holds + 1) * sizeof *h);
    if (!h) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    *holds = h;
    h[(*n_holds)++] = (mc_cluster_hold_t){*layers, *experts, {0, 0}};
    return MC_OK;
}

mc_err_t mc_cluster_config_add_hold(mc_cluster_config_t *c, size_t i, const mc_layer_set_t *layers,
                                    const mc_expert_set_t *experts, char *err) {
    if (!c || i >= c->n_nodes) return mc_err_set(err, MC_ERR_ARG, "no node %zu", i);
    char who[MC_CLUSTER_MAX_NAME + 8];
    snprintf(who, sizeof who, "node %s", c->nodes[i].name);
    return s_add_hold(&c->nodes[i].holds, &c->nodes[i].n_holds, who, layers, experts, err);
}

mc_err_t mc_cluster_config_add_local_hold(mc_cluster_config_t *c, const mc_layer_set_t *layers,
                                          const mc_expert_set_t *experts, char *err) {
    if (!c) return mc_err_set(err, MC_ERR_ARG, "add hold: NULL config");
    return s_add_hold(&c->local_holds, &c->n_local_holds, "local", layers, experts, err);
}

mc_err_t mc_cluster_config_set_model(mc_cluster_config_t *c, const char *model, char *err) {
    char msg[MC_ERR_LEN];
    if (!c || !model) return mc_err_set(err, MC_ERR_ARG, "set model: NULL argument");
    if (!s_set_model(c, model, msg)) return mc_err_set(err, MC_ERR_ARG, "%s", msg);
    return MC_OK;
}

// --- parser ---------------------------------------------------------------

typedef struct {
    yaml_parser_t yp;
    yaml_event_t ev; // the current event, owned while have_ev
    bool have_ev;
    const char *buf; // the input, to place reader errors (which carry an offset only)
    size_t len;
    const char *file; // name used in messages
    char *err;
    mc_cluster_config_t *c;
} s_parser_t;

enum {
    S_ROOT_MODEL,
    S_ROOT_WIRE,
    S_ROOT_TIMEOUT,
    S_ROOT_RETRY,
    S_ROOT_HEARTBEAT,
    S_ROOT_LOAD_TIMEOUT,
    S_ROOT_DEAD,
    S_ROOT_SLOW,
    S_ROOT_TRANSFER,
    S_ROOT_SECRET,
    S_ROOT_NODES,
    S_ROOT_LOCAL,
    S_ROOT_REBALANCE,
    S_ROOT_DISCOVER,
    S_ROOT_DISCOVER_KEYS,
    S_ROOT_DISCOVER_EXPERTS,
    S_ROOT_DISCOVER_LAYERS,
    S_ROOT_N
};
static const char *const s_root_keys[S_ROOT_N] = {"model",    "wire",    "timeout_ms", "retry_ms", "heartbeat_ms",
                                                  "load_timeout_ms", "dead_ms", "slow_ms", "transfer_mbps", "secret_key",
                                                  "nodes", "local", "rebalance", "discover",
                                                  "discover_keys", "discover_experts", "discover_layers"};

// The millisecond settings: key, bounds, and what 0 means where allowed
// (NULL: 0 is below the minimum). One row each instead of a parser apiece.
typedef struct {
    int key;
    uint32_t min, max;
    const char *zero; // "never", "no bound", ...
    size_t offset;    // of the uint32_t field in mc_cluster_config_t
    const char *unit; // NULL: milliseconds
} s_ms_key_t;

static const s_ms_key_t s_ms_keys[] = {
    {S_ROOT_TIMEOUT, 1, MC_CLUSTER_MAX_TIMEOUT_MS, NULL, offsetof(mc_cluster_config_t, timeout_ms), NULL},
    {S_ROOT_RETRY, 0, MC_CLUSTER_MAX_TIMEOUT_MS, "never", offsetof(mc_cluster_config_t, retry_ms), NULL},
    {S_ROOT_HEARTBEAT, 0, MC_CLUSTER_MAX_TIMEOUT_MS, "never", offsetof(mc_cluster_config_t, heartbeat_ms), NULL},
    {S_ROOT_LOAD_TIMEOUT, 0, MC_CLUSTER_MAX_LOAD_MS, "no bound while the node reports progress",
     offsetof(mc_cluster_config_t, load_timeout_ms), NULL},
    {S_ROOT_DEAD, MC_CLUSTER_MIN_DEAD_MS, MC_CLUSTER_MAX_TIMEOUT_MS, "off", offsetof(mc_cluster_config_t, dead_ms), NULL},
    {S_ROOT_SLOW, 0, MC_CLUSTER_MAX_TIMEOUT_MS, "never", offsetof(mc_cluster_config_t, slow_ms), NULL},
    {S_ROOT_TRANSFER, 0, MC_CLUSTER_MAX_TRANSFER_MBPS, "no cap", offsetof(mc_cluster_config_t, transfer_mbps), "Mbit/s"},
};
#define S_N_MS_KEYS (sizeof s_ms_keys / sizeof s_ms_keys[0])

enum { S_NODE_NAME, S_NODE_ENDPOINT, S_NODE_EXPERTS, S_NODE_LAYERS, S_NODE_KEY, S_NODE_HOLDS, S_NODE_MEM, S_NODE_N };
static const char *const s_node_keys[S_NODE_N] = {"name",       "endpoint", "experts",     "layers",
                                                  "public_key", "holds",    "mem_limit_mb"};
enum { S_HOLD_LAYERS, S_HOLD_EXPERTS, S_HOLD_N };
static const char *const s_hold_keys[S_HOLD_N] = {"layers", "experts"};


enum { S_REB_EVERY, S_REB_GAIN, S_REB_MACHINES, S_REB_WINDOW, S_REB_TOLERANCE, S_REB_N };
static const char *const s_reb_keys[S_REB_N] = {"every_s", "min_gain", "machines", "window", "tolerance"};

enum { S_LOCAL_EXPERTS, S_LOCAL_LAYERS, S_LOCAL_HOLDS, S_LOCAL_N };
static const char *const s_local_keys[S_LOCAL_N] = {"experts", "layers", "holds"};

static mc_cluster_mark_t s_mark(yaml_mark_t m) {
    // The input is at most MC_CLUSTER_MAX_FILE_BYTES, so these fit.
    return (mc_cluster_mark_t){(uint32_t)m.line + 1, (uint32_t)m.column + 1};
}

static mc_cluster_mark_t s_here(const s_parser_t *ps) { return s_mark(ps->ev.start_mark); }

// Report "file:line:col: message" and return false, so call sites can write
// `return s_fail(...)`.
__attribute__((format(printf, 3, 4))) static bool s_fail(s_parser_t *ps, mc_cluster_mark_t at, const char *fmt, ...) {
    if (ps->err) {
        char msg[MC_ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        mc_err_set(ps->err, MC_ERR_FORMAT, "%s:%" PRIu32 ":%" PRIu32 ": %s", ps->file, at.line, at.col, msg);
    }
    return false;
}

// libyaml's reader reports a byte offset; turn it into a line and a column
// counted in characters, as libyaml's marks are.
static mc_cluster_mark_t s_offset_mark(const s_parser_t *ps, size_t offset) {
    mc_cluster_mark_t m = {1, 1};
    if (offset > ps->len) offset = ps->len;
    for (size_t i = 0; i < offset; i++) {
        unsigned char ch = (unsigned char)ps->buf[i];
        if (ch == '\n') m.line++, m.col = 1;
        else if ((ch & 0xC0) != 0x80) m.col++;
    }
    return m;
}

static bool s_yaml_error(s_parser_t *ps) {
    const yaml_parser_t *y = &ps->yp;
    const char *problem = y->problem ? y->problem : "invalid YAML";
    if (y->error == YAML_MEMORY_ERROR) return s_fail(ps, (mc_cluster_mark_t){1, 1}, "out of memory");
    if (y->error == YAML_READER_ERROR) {
        mc_cluster_mark_t at = s_offset_mark(ps, y->problem_offset);
        if (y->problem_value >= 0) return s_fail(ps, at, "%s (0x%x)", problem, (unsigned)y->problem_value);
        return s_fail(ps, at, "%s", problem);
    }
    mc_cluster_mark_t at = s_mark(y->problem_mark);
    if (y->context) {
        mc_cluster_mark_t ctx = s_mark(y->context_mark);
        return s_fail(ps, at, "%s (%s at line %" PRIu32 ", column %" PRIu32 ")", problem, y->context, ctx.line,
                      ctx.col);
    }
    return s_fail(ps, at, "%s", problem);
}

// Advance to the next event, refusing what no cluster file needs.
static bool s_next(s_parser_t *ps) {
    if (ps->have_ev) {
        yaml_event_delete(&ps->ev);
        ps->have_ev = false;
    }
    if (!yaml_parser_parse(&ps->yp, &ps->ev)) return s_yaml_error(ps);
    ps->have_ev = true;
    const yaml_event_t *e = &ps->ev;
    // An alias can make a tiny file stand for an exponentially large tree.
    if (e->type == YAML_ALIAS_EVENT) return s_fail(ps, s_here(ps), "aliases are not supported");
    // Double-quoted "\0" yields a NUL that C strings would silently cut at.
    if (e->type == YAML_SCALAR_EVENT && strlen((const char *)e->data.scalar.value) != e->data.scalar.length)
        return s_fail(ps, s_here(ps), "NUL characters are not allowed");
    return true;
}

static const char *s_text(const s_parser_t *ps) { return (const char *)ps->ev.data.scalar.value; }

// A plain empty, ~ or null scalar: YAML's way of writing no value.
static bool s_is_null(const s_parser_t *ps) {
    const yaml_event_t *e = &ps->ev;
    if (e->type != YAML_SCALAR_EVENT || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *t = s_text(ps);
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

// The current event for "expected X, found Y" messages.
static const char *s_found(const s_parser_t *ps, char *buf, size_t cap) {
    char q[S_QUOTE_MAX + 4];
    switch (ps->ev.type) {
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_SCALAR_EVENT:
        if (s_is_null(ps)) return "no value";
        snprintf(buf, cap, "'%s'", s_quote(s_text(ps), q, sizeof q));
        return buf;
    default: return "the end of a collection";
    }
}

// The current event is a key of a mapping whose keys are names[n]; returns
// its index, or -1 after reporting a non-string, unknown or repeated key. at[]
// records where each key was seen; `in` places the mapping (" in node 'x'").
static int s_key(s_parser_t *ps, const char *const *names, int n, mc_cluster_mark_t *at, const char *in) {
    char q[S_QUOTE_MAX + 4], f[S_QUOTE_MAX + 8];
    if (ps->ev.type != YAML_SCALAR_EVENT) {
        s_fail(ps, s_here(ps), "expected a key%s, found %s", in, s_found(ps, f, sizeof f));
        return -1;
    }
    const char *k = s_text(ps);
    for (int i = 0; i < n; i++) {
        if (strcmp(k, names[i])) continue;
        if (at[i].line) {
            s_fail(ps, s_here(ps), "duplicate key '%s'%s (first at line %" PRIu32 ")", k, in, at[i].line);
            return -1;
        }
        at[i] = s_here(ps);
        return i;
    }
    char expected[256];
    size_t len = 0;
    for (int i = 0; i < n; i++) s_appendf(expected, sizeof expected, &len, "%s%s", i ? ", " : "", names[i]);
    s_fail(ps, s_here(ps), "unknown key '%s'%s (expected %s)", s_quote(k, q, sizeof q), in, expected);
    return -1;
}

// The current event must be a scalar with a value (for key `key`).
static bool s_string(s_parser_t *ps, const char *key) {
    char f[S_QUOTE_MAX + 8];
    if (ps->ev.type == YAML_SCALAR_EVENT && !s_is_null(ps)) return true;
    if (s_is_null(ps)) return s_fail(ps, s_here(ps), "'%s' has no value", key);
    return s_fail(ps, s_here(ps), "'%s' must be a single value, found %s", key, s_found(ps, f, sizeof f));
}

// The current event starts an id set: one string or a sequence of numbers
// and ranges. `what` names one id ("expert") for messages.
static bool s_parse_set(s_parser_t *ps, const char *key, const char *what, uint32_t max, uint64_t *bits,
                        mc_cluster_mark_t *at) {
    char msg[MC_ERR_LEN], f[S_QUOTE_MAX + 8];
    *at = s_here(ps);
    if (ps->ev.type == YAML_SCALAR_EVENT && !s_is_null(ps)) {
        if (!s_set_parse(s_text(ps), what, max, bits, msg)) return s_fail(ps, s_here(ps), "%s", msg);
        return true;
    }
    if (ps->ev.type != YAML_SEQUENCE_START_EVENT)
        return s_fail(ps, s_here(ps), "'%s' must be %s ids such as 0-3, [1, 5], all or none; found %s", key, what,
                      s_found(ps, f, sizeof f));
    memset(bits, 0, max / 64 * sizeof *bits);
    for (;;) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_SEQUENCE_END_EVENT) return true;
        if (ps->ev.type != YAML_SCALAR_EVENT || s_is_null(ps))
            return s_fail(ps, s_here(ps), "items of '%s' must be %s ids or ranges, found %s", key, what,
                          s_found(ps, f, sizeof f));
        if (!s_ids_add(s_text(ps), what, max, bits, msg)) return s_fail(ps, s_here(ps), "%s", msg);
    }
}

// `holds:`: a sequence of {layers, experts} mappings (each default all).
static bool s_parse_holds(s_parser_t *ps, mc_cluster_hold_t **holds, size_t *n_holds, const char *in) {
    char f[S_QUOTE_MAX + 8];
    if (ps->ev.type != YAML_SEQUENCE_START_EVENT)
        return s_fail(ps, s_here(ps), "'holds'%s must be a sequence of {layers, experts}, found %s", in,
                      s_found(ps, f, sizeof f));
    const mc_cluster_mark_t start = s_here(ps);
    for (;;) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_SEQUENCE_END_EVENT) {
            // Without blocks a node would fall back to its default sets (all).
            if (*n_holds == 0)
                return s_fail(ps, start, "'holds'%s is empty: list at least one block ({layers: none, experts: none} "
                                         "holds nothing)", in);
            break;
        }
        if (ps->ev.type != YAML_MAPPING_START_EVENT)
            return s_fail(ps, s_here(ps), "items of 'holds'%s must be mappings of layers and experts, found %s", in,
                          s_found(ps, f, sizeof f));
        if (*n_holds == S_MAX_HOLDS) return s_fail(ps, s_here(ps), "'holds'%s has more than %d blocks", in, S_MAX_HOLDS);
        if ((*n_holds & (*n_holds - 1)) == 0) { // room for the next power of two
            mc_cluster_hold_t *h = realloc(*holds, (*n_holds ? 2 * *n_holds : 1) * sizeof *h);
            if (!h) return s_fail(ps, s_here(ps), "out of memory");
            *holds = h;
        }
        mc_cluster_hold_t *h = &(*holds)[(*n_holds)++];
        h->at = s_here(ps);
        memset(h->layers.bits, 0xff, sizeof h->layers.bits);
        memset(h->experts.bits, 0xff, sizeof h->experts.bits);
        mc_cluster_mark_t at[S_HOLD_N] = {{0, 0}}, unused;
        for (;;) {
            if (!s_next(ps)) return false;
            if (ps->ev.type == YAML_MAPPING_END_EVENT) break;
            int k = s_key(ps, s_hold_keys, S_HOLD_N, at, " in a 'holds' block");
            if (k < 0 || !s_next(ps)) return false;
            bool ok = k == S_HOLD_LAYERS
                          ? s_parse_set(ps, "layers", "layer", MC_CLUSTER_MAX_LAYERS, h->layers.bits, &unused)
                          : s_parse_set(ps, "experts", "expert", MC_CLUSTER_MAX_EXPERTS, h->experts.bits, &unused);
            if (!ok) return false;
        }
    }
    return true;
}

// The current event starts the mapping of node number index (0-based).
static bool s_parse_node(s_parser_t *ps, size_t index) {
    mc_cluster_config_t *c = ps->c;
    char msg[MC_ERR_LEN], in[MC_CLUSTER_MAX_NAME + 16];
    mc_cluster_node_t n = {.at = s_here(ps)};
    memset(n.experts.bits, 0xff, sizeof n.experts.bits);
    memset(n.layers.bits, 0xff, sizeof n.layers.bits);
    if (c->n_nodes == MC_CLUSTER_MAX_NODES)
        return s_fail(ps, n.at, "too many nodes (at most %d)", MC_CLUSTER_MAX_NODES);
    // Until its name is read, a node is known by its position.
    snprintf(in, sizeof in, " in node #%zu", index + 1);
    mc_cluster_mark_t at[S_NODE_N] = {{0, 0}};
    bool ok = true;
    while (ok && s_next(ps) && ps->ev.type != YAML_MAPPING_END_EVENT) {
        int k = s_key(ps, s_node_keys, S_NODE_N, at, in);
        ok = k >= 0 && s_next(ps);
        if (!ok) break;
        switch (k) {
        case S_NODE_NAME:
            ok = s_string(ps, "name") && (s_check_name(c, s_text(ps), msg) || s_fail(ps, s_here(ps), "%s", msg));
            if (ok && !(n.name = strdup(s_text(ps)))) ok = s_fail(ps, s_here(ps), "out of memory");
            if (ok) snprintf(in, sizeof in, " in node '%s'", n.name);
            break;
        case S_NODE_ENDPOINT:
            ok =
                s_string(ps, "endpoint") && (s_check_endpoint(c, s_text(ps), msg) || s_fail(ps, s_here(ps), "%s", msg));
            if (ok && !(n.endpoint = strdup(s_text(ps)))) ok = s_fail(ps, s_here(ps), "out of memory");
            break;
        case S_NODE_EXPERTS:
            ok = s_parse_set(ps, "experts", "expert", MC_CLUSTER_MAX_EXPERTS, n.experts.bits, &n.experts_at);
            break;
        case S_NODE_LAYERS:
            ok = s_parse_set(ps, "layers", "layer", MC_CLUSTER_MAX_LAYERS, n.layers.bits, &n.layers_at);
            break;
        case S_NODE_HOLDS: ok = s_parse_holds(ps, &n.holds, &n.n_holds, in); break;
        case S_NODE_MEM: {
            char q[S_QUOTE_MAX + 4];
            const char *t = s_string(ps, "mem_limit_mb") ? s_text(ps) : NULL;
            ok = t && ((s_parse_number(t, t + strlen(t), MC_CLUSTER_MAX_MEM_MB, &n.mem_limit_mb) &&
                        n.mem_limit_mb <= MC_CLUSTER_MAX_MEM_MB) ||
                       s_fail(ps, s_here(ps), "'mem_limit_mb'%s must be a number of MiB from 0 (no limit) to %u, found '%s'",
                              in, MC_CLUSTER_MAX_MEM_MB, s_quote(t, q, sizeof q)));
            break;
        }
        case S_NODE_KEY:
            ok = s_string(ps, "public_key") &&
                 (!mc_keys_parse(s_text(ps), strlen(s_text(ps)), n.public_key, msg) ||
                  s_fail(ps, s_here(ps), "'public_key'%s: %s (the node's .pub file from moe-keygen)", in, msg));
            break;
        }
    }
    // The loop also ends when s_next failed: the error is already reported.
    ok = ok && ps->have_ev && ps->ev.type == YAML_MAPPING_END_EVENT;
    if (ok && !n.name) ok = s_fail(ps, n.at, "missing key 'name'%s", in);
    if (ok && !n.endpoint) ok = s_fail(ps, n.at, "missing key 'endpoint'%s", in);
    if (ok && n.n_holds && (at[S_NODE_EXPERTS].line || at[S_NODE_LAYERS].line))
        ok = s_fail(ps, at[S_NODE_HOLDS], "'holds'%s replaces 'experts' and 'layers': give one or the other", in);
    if (ok && !s_append_node(c, &n)) ok = s_fail(ps, n.at, "out of memory");
    if (!ok) {
        free(n.name);
        free(n.endpoint);
        free(n.holds);
    }
    return ok;
}

static bool s_parse_nodes(s_parser_t *ps) {
    char f[S_QUOTE_MAX + 8];
    mc_cluster_mark_t start = s_here(ps);
    if (ps->ev.type != YAML_SEQUENCE_START_EVENT)
        return s_fail(ps, start, "'nodes' must be a sequence of nodes, found %s", s_found(ps, f, sizeof f));
    for (size_t i = 0;; i++) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_SEQUENCE_END_EVENT) break;
        if (ps->ev.type != YAML_MAPPING_START_EVENT)
            return s_fail(ps, s_here(ps), "each node must be a mapping of name, endpoint, experts, layers, public_key, holds, mem_limit_mb; found %s",
                          s_found(ps, f, sizeof f));
        if (!s_parse_node(ps, i)) return false;
    }
    if (ps->c->n_nodes == 0) return s_fail(ps, start, "'nodes' is empty: list at least one node");
    return true;
}

static bool s_parse_local(s_parser_t *ps) {
    mc_cluster_config_t *c = ps->c;
    char f[S_QUOTE_MAX + 8];
    if (s_is_null(ps)) return true; // "local:" with everything under it commented out
    if (ps->ev.type != YAML_MAPPING_START_EVENT)
        return s_fail(ps, s_here(ps), "'local' must be a mapping of experts and layers, found %s",
                      s_found(ps, f, sizeof f));
    mc_cluster_mark_t at[S_LOCAL_N] = {{0, 0}};
    for (;;) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_MAPPING_END_EVENT) return true;
        int k = s_key(ps, s_local_keys, S_LOCAL_N, at, " in 'local'");
        if (k < 0 || !s_next(ps)) return false;
        bool ok = k == S_LOCAL_EXPERTS  ? s_parse_set(ps, "experts", "expert", MC_CLUSTER_MAX_EXPERTS,
                                                      c->local_experts.bits, &c->local_experts_at)
                  : k == S_LOCAL_LAYERS ? s_parse_set(ps, "layers", "layer", MC_CLUSTER_MAX_LAYERS,
                                                      c->local_layers.bits, &c->local_layers_at)
                                        : (c->local_holds_at = at[S_LOCAL_HOLDS],
                                           s_parse_holds(ps, &c->local_holds, &c->n_local_holds, " in 'local'"));
        if (!ok) return false;
        if (c->n_local_holds && (at[S_LOCAL_EXPERTS].line || at[S_LOCAL_LAYERS].line))
            return s_fail(ps, at[S_LOCAL_HOLDS].line ? at[S_LOCAL_HOLDS] : s_here(ps),
                          "'holds' in 'local' replaces 'experts' and 'layers': give one or the other");
    }
}

// A real number in [lo, hi] (hi itself refused when !hi_ok), strictly
// decimal: no hex, inf or nan.
static bool s_parse_real(const char *t, double lo, double hi, bool hi_ok, double *out) {
    if (!*t || strspn(t, "0123456789.eE+-") != strlen(t) || strlen(t) > 32) return false;
    char *end;
    errno = 0;
    const double v = strtod(t, &end);
    if (*end || errno || !(v >= lo) || v > hi || (!hi_ok && v == hi)) return false;
    *out = v;
    return true;
}

// `rebalance:` {every_s, min_gain, machines, window?, tolerance?}.
static bool s_parse_rebalance(s_parser_t *ps) {
    mc_cluster_config_t *c = ps->c;
    mc_cluster_rebalance_t *r = &c->rebalance;
    char f[S_QUOTE_MAX + 8], q[S_QUOTE_MAX + 4], msg[MC_ERR_LEN];
    const mc_cluster_mark_t start = s_here(ps);
    if (ps->ev.type != YAML_MAPPING_START_EVENT)
        return s_fail(ps, start, "'rebalance' must be a mapping of every_s, min_gain, machines, window, tolerance; found %s",
                      s_found(ps, f, sizeof f));
    mc_cluster_mark_t at[S_REB_N] = {{0, 0}};
    r->window = MC_CLUSTER_DEFAULT_REBALANCE_WINDOW, r->tolerance = 0.05;
    for (;;) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_MAPPING_END_EVENT) break;
        const int k = s_key(ps, s_reb_keys, S_REB_N, at, " in 'rebalance'");
        if (k < 0 || !s_next(ps) || !s_string(ps, s_reb_keys[k])) return false;
        const char *t = s_text(ps);
        bool ok = true;
        switch (k) {
        case S_REB_EVERY:
            ok = s_parse_number(t, t + strlen(t), MC_CLUSTER_MAX_REBALANCE_S, &r->every_s) &&
                 r->every_s >= MC_CLUSTER_MIN_REBALANCE_S && r->every_s <= MC_CLUSTER_MAX_REBALANCE_S;
            if (!ok)
                return s_fail(ps, s_here(ps), "'every_s' in 'rebalance' must be a number of seconds from %u to %u, found '%s'",
                              MC_CLUSTER_MIN_REBALANCE_S, MC_CLUSTER_MAX_REBALANCE_S, s_quote(t, q, sizeof q));
            break;
        case S_REB_GAIN:
            if (!s_parse_real(t, 0, 10, false, &r->min_gain))
                return s_fail(ps, s_here(ps), "'min_gain' in 'rebalance' must be a number at least 0 and below 10 (0.10: "
                                              "a plan predicted 10%% faster), found '%s'", s_quote(t, q, sizeof q));
            break;
        case S_REB_MACHINES:
            if (!s_set_path(c, &r->machines, &r->machines_resolved, t, "machines", msg))
                return s_fail(ps, s_here(ps), "%s", msg);
            break;
        case S_REB_WINDOW:
            ok = s_parse_number(t, t + strlen(t), MC_CLUSTER_MAX_REBALANCE_WINDOW, &r->window) &&
                 r->window >= MC_CLUSTER_MIN_REBALANCE_WINDOW && r->window <= MC_CLUSTER_MAX_REBALANCE_WINDOW;
            if (!ok)
                return s_fail(ps, s_here(ps), "'window' in 'rebalance' must be a number of decode steps from %u to %u, found '%s'",
                              MC_CLUSTER_MIN_REBALANCE_WINDOW, MC_CLUSTER_MAX_REBALANCE_WINDOW, s_quote(t, q, sizeof q));
            break;
        case S_REB_TOLERANCE:
            if (!s_parse_real(t, 0, 1, true, &r->tolerance))
                return s_fail(ps, s_here(ps), "'tolerance' in 'rebalance' must be a share from 0 to 1 (0.05: 5%%), found '%s'",
                              s_quote(t, q, sizeof q));
            break;
        }
    }
    if (!at[S_REB_EVERY].line) return s_fail(ps, start, "missing key 'every_s' in 'rebalance'");
    if (!at[S_REB_GAIN].line) return s_fail(ps, start, "missing key 'min_gain' in 'rebalance'");
    if (!at[S_REB_MACHINES].line)
        return s_fail(ps, start, "missing key 'machines' in 'rebalance' (the planner's machines file, as moe-plan --machines takes)");
    r->on = true;
    return true;
}

// `discover_keys:`: a sequence of Z85 public keys (or one key alone).
static bool s_parse_discover_keys(s_parser_t *ps) {
    mc_cluster_config_t *c = ps->c;
    char msg[MC_ERR_LEN], f[S_QUOTE_MAX + 8];
    const bool one = ps->ev.type == YAML_SCALAR_EVENT && !s_is_null(ps);
    if (!one && ps->ev.type != YAML_SEQUENCE_START_EVENT)
        return s_fail(ps, s_here(ps), "'discover_keys' must be a list of public keys (the nodes' .pub), found %s",
                      s_found(ps, f, sizeof f));
    for (;;) {
        if (!one && !s_next(ps)) return false;
        if (!one && ps->ev.type == YAML_SEQUENCE_END_EVENT) return true;
        if (ps->ev.type != YAML_SCALAR_EVENT || s_is_null(ps))
            return s_fail(ps, s_here(ps), "items of 'discover_keys' must be public keys, found %s", s_found(ps, f, sizeof f));
        if (c->n_discover_keys == MC_CLUSTER_MAX_NODES)
            return s_fail(ps, s_here(ps), "'discover_keys' lists more than %d keys", MC_CLUSTER_MAX_NODES);
        char key[MC_KEY_TEXT + 1];
        if (mc_keys_parse(s_text(ps), strlen(s_text(ps)), key, msg))
            return s_fail(ps, s_here(ps), "'discover_keys': %s (the nodes' .pub files from moe-keygen)", msg);
        char(*grown)[41] = realloc(c->discover_keys, (c->n_discover_keys + 1) * sizeof *grown);
        if (!grown) return s_fail(ps, s_here(ps), "out of memory");
        c->discover_keys = grown;
        memcpy(c->discover_keys[c->n_discover_keys++], key, sizeof key);
        if (one) return true;
    }
}

bool mc_cluster_config_discover_allows(const mc_cluster_config_t *c, const char *key) {
    if (!key || !key[0]) return false;
    for (size_t i = 0; i < c->n_discover_keys; i++)
        if (!strcmp(c->discover_keys[i], key)) return true;
    return false;
}

// The current event starts the top-level mapping.
// A millisecond setting (s_ms_keys row of key k).
static bool s_parse_ms(s_parser_t *ps, int k) {
    const s_ms_key_t *row = NULL;
    for (size_t i = 0; i < S_N_MS_KEYS; i++)
        if (s_ms_keys[i].key == k) row = &s_ms_keys[i];
    assert(row);
    const char *name = s_root_keys[k], *unit = row->unit ? row->unit : "milliseconds";
    char q[S_QUOTE_MAX + 4];
    uint32_t v;
    if (!s_string(ps, name)) return false;
    const char *t = s_text(ps);
    const bool zero_ok = row->zero != NULL;
    if (!s_parse_number(t, t + strlen(t), row->max, &v) || (v < row->min && !(v == 0 && zero_ok)) || v > row->max) {
        if (zero_ok && row->min <= 1)
            return s_fail(ps, s_here(ps), "'%s' must be a number of %s from 0 (%s) to %u, found '%s'", name, unit,
                          row->zero, row->max, s_quote(t, q, sizeof q));
        if (zero_ok)
            return s_fail(ps, s_here(ps), "'%s' must be 0 (%s) or a number of %s from %u to %u, found '%s'", name,
                          row->zero, unit, row->min, row->max, s_quote(t, q, sizeof q));
        return s_fail(ps, s_here(ps), "'%s' must be a number of %s from %u to %u, found '%s'", name, unit, row->min,
                      row->max, s_quote(t, q, sizeof q));
    }
    memcpy((char *)ps->c + row->offset, &v, sizeof v);
    return true;
}

static bool s_parse_root(s_parser_t *ps) {
    mc_cluster_config_t *c = ps->c;
    char msg[MC_ERR_LEN], q[S_QUOTE_MAX + 4];
    mc_cluster_mark_t start = s_here(ps);
    mc_cluster_mark_t at[S_ROOT_N] = {{0, 0}};
    for (;;) {
        if (!s_next(ps)) return false;
        if (ps->ev.type == YAML_MAPPING_END_EVENT) break;
        int k = s_key(ps, s_root_keys, S_ROOT_N, at, "");
        if (k < 0 || !s_next(ps)) return false;
        bool ok = true;
        switch (k) {
        case S_ROOT_MODEL:
            ok = s_string(ps, "model") && (s_set_model(c, s_text(ps), msg) || s_fail(ps, s_here(ps), "%s", msg));
            break;
        case S_ROOT_WIRE:
            ok = s_string(ps, "wire");
            if (ok && !mc_wire_enc_from_name(s_text(ps), &c->wire))
                ok = s_fail(ps, s_here(ps), "unknown wire encoding '%s' (expected auto, f32, f16, bf16, q8_0, q8_1 or q8_k)",
                            s_quote(s_text(ps), q, sizeof q));
            break;
        case S_ROOT_TIMEOUT:
        case S_ROOT_RETRY:
        case S_ROOT_HEARTBEAT:
        case S_ROOT_LOAD_TIMEOUT:
        case S_ROOT_DEAD:
        case S_ROOT_SLOW:
        case S_ROOT_TRANSFER: ok = s_parse_ms(ps, k); break;
        case S_ROOT_SECRET:
            ok = s_string(ps, "secret_key") &&
                 (s_set_path(c, &c->secret_key, &c->secret_key_resolved, s_text(ps), "secret key", msg) ||
                  s_fail(ps, s_here(ps), "%s", msg));
            break;
        case S_ROOT_NODES: ok = s_parse_nodes(ps); break;
        case S_ROOT_LOCAL: ok = s_parse_local(ps); break;
        case S_ROOT_REBALANCE: ok = s_parse_rebalance(ps); break;
        case S_ROOT_DISCOVER:
            ok = s_string(ps, "discover");
            if (ok && strcmp(s_text(ps), "true") && strcmp(s_text(ps), "false"))
                ok = s_fail(ps, s_here(ps), "'discover' must be true or false, found '%s'", s_quote(s_text(ps), q, sizeof q));
            c->discover = ok && !strcmp(s_text(ps), "true");
            break;
        case S_ROOT_DISCOVER_KEYS: ok = s_parse_discover_keys(ps); break;
        case S_ROOT_DISCOVER_EXPERTS: {
            mc_cluster_mark_t m;
            ok = s_parse_set(ps, "discover_experts", "expert", MC_CLUSTER_MAX_EXPERTS, c->discover_experts.bits, &m);
            break;
        }
        case S_ROOT_DISCOVER_LAYERS: {
            mc_cluster_mark_t m;
            ok = s_parse_set(ps, "discover_layers", "layer", MC_CLUSTER_MAX_LAYERS, c->discover_layers.bits, &m);
            break;
        }
        }
        if (!ok) return false;
    }
    if (!at[S_ROOT_NODES].line) return s_fail(ps, start, "missing key 'nodes' (the list of expert nodes)");
    // An announcement is only a claim: anyone on the network can make one.
    // What keeps a stranger out is CURVE: the coordinator talks to an
    // announced node only as the key it announced, which only the holder
    // of the matching secret key can answer to.
    if (c->discover && (!c->secret_key || !c->n_discover_keys))
        return s_fail(ps, at[S_ROOT_DISCOVER],
                      "'discover: true' needs 'secret_key' and 'discover_keys': only announced nodes whose key is "
                      "listed may join, and CURVE makes them prove they hold it");
    return true;
}

static bool s_parse_stream(s_parser_t *ps) {
    char f[S_QUOTE_MAX + 8];
    if (!s_next(ps) || !s_next(ps)) return false; // stream start, then document start
    if (ps->ev.type == YAML_STREAM_END_EVENT)
        return s_fail(ps, s_here(ps), "the file is empty (expected a mapping with at least 'nodes')");
    if (!s_next(ps)) return false;
    if (ps->ev.type != YAML_MAPPING_START_EVENT)
        // Not every key: the list outgrew an error message.
        return s_fail(ps, s_here(ps), "the file must be a mapping of model, nodes, local and the other keys "
                      "docs/CLUSTER.md lists; found %s",
                      s_found(ps, f, sizeof f));
    if (!s_parse_root(ps) || !s_next(ps) || !s_next(ps)) return false; // root, document end
    if (ps->ev.type != YAML_STREAM_END_EVENT) return s_fail(ps, s_here(ps), "only one YAML document is allowed");
    return true;
}

mc_cluster_config_t *mc_cluster_config_parse(const char *buf, size_t len, const char *filename, char *err) {
    const char *file = filename ? filename : "<input>";
    if (!buf && len) {
        mc_err_set(err, MC_ERR_ARG, "%s: NULL buffer", file);
        return NULL;
    }
    if (len > MC_CLUSTER_MAX_FILE_BYTES) {
        mc_err_set(err, MC_ERR_FORMAT, "%s: the file is larger than %u bytes", file, MC_CLUSTER_MAX_FILE_BYTES);
        return NULL;
    }
    mc_cluster_config_t *c = mc_cluster_config_new();
    if (!c || (filename && !(c->path = strdup(filename)))) {
        mc_cluster_config_destroy(&c);
        mc_err_set(err, MC_ERR_NOMEM, "%s: out of memory", file);
        return NULL;
    }
    s_parser_t ps = {.buf = buf ? buf : "", .len = len, .file = file, .err = err, .c = c};
    if (!yaml_parser_initialize(&ps.yp)) {
        mc_cluster_config_destroy(&c);
        mc_err_set(err, MC_ERR_NOMEM, "%s: out of memory", file);
        return NULL;
    }
    yaml_parser_set_input_string(&ps.yp, (const unsigned char *)ps.buf, len);
    // Fixed to UTF-8 so reader offsets are byte offsets into buf.
    yaml_parser_set_encoding(&ps.yp, YAML_UTF8_ENCODING);
    bool ok = s_parse_stream(&ps);
    if (ps.have_ev) yaml_event_delete(&ps.ev);
    yaml_parser_delete(&ps.yp);
    if (!ok) mc_cluster_config_destroy(&c);
    return c;
}

mc_cluster_config_t *mc_cluster_config_load(const char *path, char *err) {
    if (!path) {
        mc_err_set(err, MC_ERR_ARG, "cluster file: NULL path");
        return NULL;
    }
    char *buf;
    size_t len;
    if (mc_file_read(path, MC_CLUSTER_MAX_FILE_BYTES, &buf, &len, err)) return NULL;
    mc_cluster_config_t *c = mc_cluster_config_parse(buf, len, path, err);
    free(buf);
    return c;
}

// --- check against a model ------------------------------------------------

// "file:line:col: " (or less, for configs not read from a file).
static const char *s_where(const mc_cluster_config_t *c, mc_cluster_mark_t at, char *buf, size_t cap) {
    if (at.line) snprintf(buf, cap, "%s:%" PRIu32 ":%" PRIu32 ": ", c->path ? c->path : "<input>", at.line, at.col);
    else if (c->path) snprintf(buf, cap, "%s: ", c->path);
    else buf[0] = '\0';
    return buf;
}

// Ids of a set at or beyond the model's count n, unless the set is all.
static mc_err_t s_check_beyond(const mc_cluster_config_t *c, const uint64_t *bits, uint32_t max, uint32_t n,
                               const char *what, const char *who, mc_cluster_mark_t at, char *err) {
    const size_t words = max / 64;
    if (s_bits_full(bits, words)) return MC_OK;
    uint64_t extra[S_LAYER_WORDS] = {0};
    memcpy(extra, bits, words * sizeof *bits);
    for (uint32_t i = 0; i < n; i++) extra[i / 64] &= ~((uint64_t)1 << (i % 64));
    if (s_bits_empty(extra, words)) return MC_OK;
    char where[MC_ERR_LEN], list[64], ids[32];
    const bool many = s_bits_count(extra, words) > 1;
    s_bits_brief(extra, max, list, sizeof list);
    if (n == 1) snprintf(ids, sizeof ids, "id 0");
    else snprintf(ids, sizeof ids, "ids 0-%" PRIu32, n - 1);
    return mc_err_set(err, MC_ERR_RANGE, "%s%s has %s%s %s, but the model has %" PRIu32 " %s%s (%s)",
                      s_where(c, at, where, sizeof where), who, what, many ? "s" : "", list, n, what, n > 1 ? "s" : "",
                      ids);
}

// Add to held the experts of layer l in holds[0..n), or when n is 0 in the
// plain (layers, experts) pair.
static void s_held_in(const mc_cluster_hold_t *holds, size_t n, const mc_layer_set_t *layers,
                      const mc_expert_set_t *experts, uint32_t l, uint64_t *held) {
    if (!n) {
        if (mc_layer_set_has(layers, l))
            for (size_t w = 0; w < S_EXPERT_WORDS; w++) held[w] |= experts->bits[w];
        return;
    }
    for (size_t h = 0; h < n; h++)
        if (mc_layer_set_has(&holds[h].layers, l))
            for (size_t w = 0; w < S_EXPERT_WORDS; w++) held[w] |= holds[h].experts.bits[w];
}

// Experts of layer l (among those in mask) that no node and not local hold.
static void s_missing(const mc_cluster_config_t *c, uint32_t l, const uint64_t *mask, uint64_t *miss) {
    uint64_t held[S_EXPERT_WORDS] = {0};
    for (size_t i = 0; i < c->n_nodes; i++) {
        const mc_cluster_node_t *n = &c->nodes[i];
        s_held_in(n->holds, n->n_holds, &n->layers, &n->experts, l, held);
    }
    s_held_in(c->local_holds, c->n_local_holds, &c->local_layers, &c->local_experts, l, held);
    for (size_t w = 0; w < S_EXPERT_WORDS; w++) miss[w] = mask[w] & ~held[w];
}

// Append "layers a-b experts X" for one run of layers missing the same set,
// or "..." once the message is full; false when nothing more fits.
static bool s_append_group(char *msg, size_t *len, bool first, uint32_t a, uint32_t b, const uint64_t *miss) {
    static const char more[] = "; ...";
    char set[MC_ERR_LEN], group[MC_ERR_LEN];
    s_bits_brief(miss, MC_CLUSTER_MAX_EXPERTS, set, sizeof set);
    const bool many = s_bits_count(miss, S_EXPERT_WORDS) > 1;
    size_t glen = 0;
    s_appendf(group, sizeof group, &glen, "%s", first ? "" : "; ");
    if (a == b) s_appendf(group, sizeof group, &glen, "layer %" PRIu32, a);
    else s_appendf(group, sizeof group, &glen, "layers %" PRIu32 "-%" PRIu32, a, b);
    s_appendf(group, sizeof group, &glen, " expert%s %s", many ? "s" : "", set);
    if (*len + glen < MC_ERR_LEN - (sizeof more - 1)) {
        s_appendf(msg, MC_ERR_LEN, len, "%s", group);
        return true;
    }
    s_appendf(msg, MC_ERR_LEN, len, "%s", first ? "..." : more);
    return false;
}

static mc_err_t s_check_coverage(const mc_cluster_config_t *c, uint32_t n_layer, uint32_t n_expert, char *err) {
    uint64_t mask[S_EXPERT_WORDS] = {0}, miss[S_EXPERT_WORDS];
    for (uint32_t e = 0; e < n_expert; e++) mask[e / 64] |= (uint64_t)1 << (e % 64);
    uint64_t total = 0;
    for (uint32_t l = 0; l < n_layer; l++) {
        s_missing(c, l, mask, miss);
        total += s_bits_count(miss, S_EXPERT_WORDS);
    }
    if (!total) return MC_OK;

    char msg[MC_ERR_LEN];
    size_t len = 0;
    s_appendf(msg, sizeof msg, &len,
              "%s%s%" PRIu64 " (layer, expert) pair%s not held by any node or local: ", c->path ? c->path : "",
              c->path ? ": " : "", total, total > 1 ? "s are" : " is");
    // Second pass: runs of consecutive layers missing the same experts.
    uint64_t run[S_EXPERT_WORDS] = {0};
    uint32_t run_start = 0;
    bool in_run = false, first = true;
    for (uint32_t l = 0; l <= n_layer; l++) {
        if (l < n_layer) s_missing(c, l, mask, miss);
        else memset(miss, 0, sizeof miss);
        if (in_run && (l == n_layer || memcmp(miss, run, sizeof run))) {
            if (!s_append_group(msg, &len, first, run_start, l - 1, run)) break;
            in_run = first = false;
        }
        if (l < n_layer && !in_run && !s_bits_empty(miss, S_EXPERT_WORDS)) {
            memcpy(run, miss, sizeof run);
            run_start = l;
            in_run = true;
        }
    }
    return mc_err_set(err, MC_ERR_FORMAT, "%s", msg);
}

mc_err_t mc_cluster_config_check(const mc_cluster_config_t *c, uint32_t n_layer, uint32_t n_expert, char *err) {
    if (!c) return mc_err_set(err, MC_ERR_ARG, "cluster check: NULL config");
    if (n_layer == 0 || n_expert == 0)
        return mc_err_set(err, MC_ERR_ARG, "cluster check: the model has %" PRIu32 " layers and %" PRIu32 " experts",
                          n_layer, n_expert);
    if (n_expert > MC_CLUSTER_MAX_EXPERTS || n_layer > MC_CLUSTER_MAX_LAYERS)
        return mc_err_set(err, MC_ERR_UNSUPPORTED,
                          "the model has %" PRIu32 " layers and %" PRIu32
                          " experts; cluster files describe at most %d layers and %d experts",
                          n_layer, n_expert, MC_CLUSTER_MAX_LAYERS, MC_CLUSTER_MAX_EXPERTS);
    char who[MC_CLUSTER_MAX_NAME + 8];
    mc_err_t rc = MC_OK;
    for (size_t i = 0; i < c->n_nodes && rc == MC_OK; i++) {
        const mc_cluster_node_t *n = &c->nodes[i];
        snprintf(who, sizeof who, "node '%s'", n->name);
        if (!n->n_holds) {
            rc = s_check_beyond(c, n->experts.bits, MC_CLUSTER_MAX_EXPERTS, n_expert, "expert", who, n->experts_at, err);
            if (rc == MC_OK)
                rc = s_check_beyond(c, n->layers.bits, MC_CLUSTER_MAX_LAYERS, n_layer, "layer", who, n->layers_at, err);
        }
        for (size_t h = 0; h < n->n_holds && rc == MC_OK; h++) {
            rc = s_check_beyond(c, n->holds[h].experts.bits, MC_CLUSTER_MAX_EXPERTS, n_expert, "expert", who,
                                n->holds[h].at, err);
            if (rc == MC_OK)
                rc = s_check_beyond(c, n->holds[h].layers.bits, MC_CLUSTER_MAX_LAYERS, n_layer, "layer", who,
                                    n->holds[h].at, err);
        }
    }
    if (rc == MC_OK && !c->n_local_holds)
        rc = s_check_beyond(c, c->local_experts.bits, MC_CLUSTER_MAX_EXPERTS, n_expert, "expert", "local",
                            c->local_experts_at, err);
    if (rc == MC_OK && !c->n_local_holds)
        rc = s_check_beyond(c, c->local_layers.bits, MC_CLUSTER_MAX_LAYERS, n_layer, "layer", "local",
                            c->local_layers_at, err);
    for (size_t h = 0; h < c->n_local_holds && rc == MC_OK; h++) {
        rc = s_check_beyond(c, c->local_holds[h].experts.bits, MC_CLUSTER_MAX_EXPERTS, n_expert, "expert", "local",
                            c->local_holds[h].at, err);
        if (rc == MC_OK)
            rc = s_check_beyond(c, c->local_holds[h].layers.bits, MC_CLUSTER_MAX_LAYERS, n_layer, "layer", "local",
                                c->local_holds[h].at, err);
    }
    return rc == MC_OK ? s_check_coverage(c, n_layer, n_expert, err) : rc;
}

// --- writer ---------------------------------------------------------------

// A YAML double-quoted string: backslash and quote escaped, control bytes as
// \xNN (which YAML reads back as the same code point, hence the same byte);
// UTF-8 passes through.
static void s_write_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\x%02x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

// "key: all", "key: none" or "key: 0-3,6"; false only when out of memory
// (write failures show up in ferror).
static bool s_write_set(FILE *f, const char *key, const uint64_t *bits, uint32_t max, const char *indent) {
    const size_t words = max / 64;
    if (s_bits_full(bits, words)) {
        fprintf(f, "%s%s: all\n", indent, key);
        return true;
    }
    if (s_bits_empty(bits, words)) {
        fprintf(f, "%s%s: none\n", indent, key);
        return true;
    }
    size_t len = s_bits_format(bits, max, NULL, 0);
    char *text = malloc(len + 1);
    if (!text) return false;
    s_bits_format(bits, max, text, len + 1);
    fprintf(f, "%s%s: %s\n", indent, key, text);
    free(text);
    return true;
}

static bool s_dup2(char **as, char **resolved, const char *a, const char *r) {
    free(*as), free(*resolved);
    *as = a ? strdup(a) : NULL, *resolved = r ? strdup(r) : NULL;
    return (!a || *as) && (!r || *resolved);
}

mc_err_t mc_cluster_config_copy_settings(mc_cluster_config_t *dst, const mc_cluster_config_t *src, char *err) {
    if (!dst || !src) return mc_err_set(err, MC_ERR_ARG, "copy settings: NULL argument");
    dst->wire = src->wire;
    for (size_t i = 0; i < S_N_MS_KEYS; i++)
        memcpy((char *)dst + s_ms_keys[i].offset, (const char *)src + s_ms_keys[i].offset, sizeof(uint32_t));
    mc_cluster_rebalance_t r = dst->rebalance;
    const mc_cluster_rebalance_t *sr = &src->rebalance;
    const bool ok = s_dup2(&dst->model, &dst->model_resolved, src->model, src->model_resolved) &&
                    s_dup2(&dst->secret_key, &dst->secret_key_resolved, src->secret_key, src->secret_key_resolved) &&
                    s_dup2(&r.machines, &r.machines_resolved, sr->machines, sr->machines_resolved);
    r.on = sr->on, r.every_s = sr->every_s, r.min_gain = sr->min_gain, r.window = sr->window, r.tolerance = sr->tolerance;
    dst->rebalance = r;
    if (!ok || (src->path && !dst->path && !(dst->path = strdup(src->path))))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    return MC_OK;
}

mc_err_t mc_cluster_config_write(const mc_cluster_config_t *c, FILE *f, char *err) {
    if (!c || !f) return mc_err_set(err, MC_ERR_ARG, "cluster write: NULL argument");
    if (!c->n_nodes) return mc_err_set(err, MC_ERR_ARG, "cluster write: a cluster needs at least one node");
    if ((unsigned)c->wire >= MC_WIRE_N_ENC && c->wire != MC_WIRE_AUTO)
        return mc_err_set(err, MC_ERR_ARG, "cluster write: bad wire encoding %d", (int)c->wire);
    if (c->timeout_ms < 1 || c->timeout_ms > MC_CLUSTER_MAX_TIMEOUT_MS)
        return mc_err_set(err, MC_ERR_ARG, "cluster write: timeout_ms %" PRIu32 " is outside 1..%u", c->timeout_ms,
                          MC_CLUSTER_MAX_TIMEOUT_MS);
    for (size_t i = 0; i < S_N_MS_KEYS; i++) {
        uint32_t v;
        memcpy(&v, (const char *)c + s_ms_keys[i].offset, sizeof v);
        if ((v < s_ms_keys[i].min && !(v == 0 && s_ms_keys[i].zero)) || v > s_ms_keys[i].max)
            return mc_err_set(err, MC_ERR_ARG, "cluster write: %s %" PRIu32 " is outside %u..%u",
                              s_root_keys[s_ms_keys[i].key], v, s_ms_keys[i].min, s_ms_keys[i].max);
    }
    bool ok = true;
    if (c->model) {
        fputs("model: ", f);
        s_write_quoted(f, c->model);
        fputc('\n', f);
    }
    if (c->secret_key) {
        fputs("secret_key: ", f);
        s_write_quoted(f, c->secret_key);
        fputc('\n', f);
    }
    fprintf(f, "wire: %s\n", mc_wire_enc_name(c->wire));
    for (size_t i = 0; i < S_N_MS_KEYS; i++) {
        uint32_t v;
        memcpy(&v, (const char *)c + s_ms_keys[i].offset, sizeof v);
        fprintf(f, "%s: %" PRIu32 "\n", s_root_keys[s_ms_keys[i].key], v);
    }
    if (c->rebalance.on) {
        const mc_cluster_rebalance_t *r = &c->rebalance;
        char msg[MC_ERR_LEN];
        if (!r->machines || !s_check_rebalance(r->every_s, r->min_gain, r->window, r->tolerance, msg))
            return mc_err_set(err, MC_ERR_ARG, "cluster write: %s", r->machines ? msg : "rebalance without machines");
        // %.17g: the value parses back to the same double.
        fprintf(f, "rebalance:\n  every_s: %" PRIu32 "\n  min_gain: %.17g\n  window: %" PRIu32 "\n  tolerance: %.17g\n"
                   "  machines: ", r->every_s, r->min_gain, r->window, r->tolerance);
        s_write_quoted(f, r->machines);
        fputc('\n', f);
    }
    fputs("nodes:\n", f);
    for (size_t i = 0; ok && i < c->n_nodes; i++) {
        const mc_cluster_node_t *n = &c->nodes[i];
        fputs("  - name: ", f);
        s_write_quoted(f, n->name);
        fputs("\n    endpoint: ", f);
        s_write_quoted(f, n->endpoint);
        fputc('\n', f);
        if (n->mem_limit_mb) fprintf(f, "    mem_limit_mb: %u\n", n->mem_limit_mb);
        if (n->public_key[0]) {
            fputs("    public_key: ", f);
            s_write_quoted(f, n->public_key);
            fputc('\n', f);
        }
        if (n->n_holds) {
            fputs("    holds:\n", f);
            for (size_t h = 0; ok && h < n->n_holds; h++)
                ok = s_write_set(f, "- layers", n->holds[h].layers.bits, MC_CLUSTER_MAX_LAYERS, "      ") &&
                     s_write_set(f, "experts", n->holds[h].experts.bits, MC_CLUSTER_MAX_EXPERTS, "        ");
        } else {
            ok = s_write_set(f, "experts", n->experts.bits, MC_CLUSTER_MAX_EXPERTS, "    ") &&
                 s_write_set(f, "layers", n->layers.bits, MC_CLUSTER_MAX_LAYERS, "    ");
        }
    }
    fputs("local:\n", f);
    if (c->n_local_holds) {
        fputs("  holds:\n", f);
        for (size_t h = 0; ok && h < c->n_local_holds; h++)
            ok = s_write_set(f, "- layers", c->local_holds[h].layers.bits, MC_CLUSTER_MAX_LAYERS, "    ") &&
                 s_write_set(f, "experts", c->local_holds[h].experts.bits, MC_CLUSTER_MAX_EXPERTS, "      ");
    } else {
        ok = ok && s_write_set(f, "experts", c->local_experts.bits, MC_CLUSTER_MAX_EXPERTS, "  ") &&
             s_write_set(f, "layers", c->local_layers.bits, MC_CLUSTER_MAX_LAYERS, "  ");
    }
    if (c->discover || c->n_discover_keys) {
        fprintf(f, "discover: %s\n", c->discover ? "true" : "false");
        if (c->n_discover_keys) fputs("discover_keys:\n", f);
        for (size_t i = 0; i < c->n_discover_keys; i++) {
            fputs("  - ", f);
            s_write_quoted(f, c->discover_keys[i]);
            fputc('\n', f);
        }
        ok = ok && s_write_set(f, "discover_experts", c->discover_experts.bits, MC_CLUSTER_MAX_EXPERTS, "") &&
             s_write_set(f, "discover_layers", c->discover_layers.bits, MC_CLUSTER_MAX_LAYERS, "");
    }
    if (!ok) return mc_err_set(err, MC_ERR_NOMEM, "cluster write: out of memory");
    if (fflush(f) != 0 || ferror(f)) return mc_err_set(err, MC_ERR_IO, "cluster write: %s", strerror(errno));
    return MC_OK;
}
