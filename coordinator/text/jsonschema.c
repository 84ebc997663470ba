/*
 * jsonschema: the compiler (cJSON tree -> a table of nodes) and the
 * automaton (a set of frame stacks fed one byte at a time).
 *
 * A node is what one value must be: an object (its properties, which are
 * required, what other keys may hold), an array (items, bounds), a string
 * (length bounds), a number or integer, a set of literal texts (enum,
 * const, boolean, null) or a list of alternatives (anyOf, type lists, and
 * "any value"). Nodes refer to each other by index, so "any value" is one
 * node whose object and array alternatives contain itself.
 *
 * A frame is a value being read: its node, its kind and where it is inside
 * it. Objects, arrays and strings end on a byte of their own; numbers and
 * literals end when a byte cannot continue them, and that byte is fed again
 * to the frame below. The bottom frame is the document: prefix, value,
 * suffix. A byte that starts a value of an anyOf node forks the stack, one
 * copy per alternative; the copies that cannot take the byte die at once.
 */
#include "jsonschema.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N_OBJECT = 1, N_ARRAY, N_STRING, N_NUMBER, N_INTEGER, N_LITERALS, N_ANYOF };

#define S_NONE UINT32_MAX   // no bound / no node
#define S_ADDITIONAL 0xFFFF // frame.cur: an additional key's value
#define S_MAX_ALTS 16       // alternatives of one anyOf node (flattened)

typedef struct {
    uint8_t kind;
    uint32_t first, n;      // object: props; literals: lits; anyOf: alts
    uint64_t required;      // object: property bits
    uint32_t additional;    // object: node of other keys' values, S_NONE: none allowed
    uint32_t items;         // array: node of the items
    uint32_t min, max, sat; // array items / string code points (max S_NONE: unbounded); sat: where counting stops
} s_node_t;

typedef struct {
    uint32_t off, len; // the name as JSON text without the quotes, in pool
    uint32_t node;
} s_prop_t;

typedef struct {
    uint32_t off, len; // in pool
} s_lit_t;

struct mc_jschema {
    s_node_t *nodes;
    uint32_t n_nodes, cap_nodes;
    s_prop_t *props;
    uint32_t n_props, cap_props;
    s_lit_t *lits;
    uint32_t n_lits, cap_lits;
    uint32_t *alts;
    uint32_t n_alts, cap_alts;
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t root;
    uint32_t any; // "any value", S_NONE until needed
};

// --- building the tables -----------------------------------------------------------

static bool s_grow(void **p, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return true;
    uint32_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return false;
    *p = q, *cap = c;
    return true;
}

static uint32_t s_node_add(mc_jschema_t *s, uint8_t kind, char *err) {
    if (s->n_nodes >= MC_JS_MAX_NODES) {
        mc_err_set(err, MC_ERR_ARG, "the schema is too large (more than %d nodes)", MC_JS_MAX_NODES);
        return S_NONE;
    }
    if (!s_grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes + 1, sizeof *s->nodes)) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return S_NONE;
    }
    s_node_t *n = &s->nodes[s->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->additional = n->items = S_NONE;
    n->max = S_NONE;
    return s->n_nodes++;
}

static bool s_pool_add(mc_jschema_t *s, const char *txt, size_t len, uint32_t *off) {
    if (len > MC_JS_MAX_SCHEMA || s->pool_len + len > MC_JS_MAX_SCHEMA * 4) return false;
    if (s->pool_len + len > s->pool_cap) {
        size_t c = s->pool_cap ? s->pool_cap : 256;
        while (c < s->pool_len + len) c *= 2;
        char *p = realloc(s->pool, c);
        if (!p) return false;
        s->pool = p, s->pool_cap = c;
    }
    memcpy(s->pool + s->pool_len, txt, len);
    *off = (uint32_t)s->pool_len;
    s->pool_len += len;
    return true;
}

// A literals node over texts[0..n).
static uint32_t s_literals(mc_jschema_t *s, char **texts, uint32_t n, char *err) {
    const uint32_t id = s_node_add(s, N_LITERALS, err);
    if (id == S_NONE) return S_NONE;
    if (!s_grow((void **)&s->lits, &s->cap_lits, s->n_lits + n, sizeof *s->lits)) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return S_NONE;
    }
    s->nodes[id].first = s->n_lits, s->nodes[id].n = n;
    for (uint32_t i = 0; i < n; i++) {
        const size_t len = strlen(texts[i]);
        uint32_t off;
        if (len >= UINT16_MAX || !s_pool_add(s, texts[i], len, &off)) {
            mc_err_set(err, MC_ERR_ARG, "an enum or const value is too long");
            return S_NONE;
        }
        s->lits[s->n_lits++] = (s_lit_t){off, (uint32_t)len};
    }
    return id;
}

static uint32_t s_literal1(mc_jschema_t *s, const char *a, const char *b, char *err) {
    char *t[2] = {(char *)a, (char *)b};
    return s_literals(s, t, b ? 2 : 1, err);
}

// An anyOf node over alts[0..n) (anyOf alternatives spliced in).
static uint32_t s_anyof(mc_jschema_t *s, const uint32_t *alts, uint32_t n, char *err) {
    uint32_t flat[S_MAX_ALTS], m = 0;
    for (uint32_t i = 0; i < n; i++) {
        const s_node_t *a = &s->nodes[alts[i]];
        const uint32_t k = a->kind == N_ANYOF ? a->n : 1;
        if (m + k > S_MAX_ALTS) {
            mc_err_set(err, MC_ERR_ARG, "anyOf (or a list of types) with more than %d alternatives", S_MAX_ALTS);
            return S_NONE;
        }
        for (uint32_t j = 0; j < k; j++) flat[m++] = a->kind == N_ANYOF ? s->alts[a->first + j] : alts[i];
    }
    const uint32_t id = s_node_add(s, N_ANYOF, err);
    if (id == S_NONE) return S_NONE;
    if (!s_grow((void **)&s->alts, &s->cap_alts, s->n_alts + m, sizeof *s->alts)) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return S_NONE;
    }
    s->nodes[id].first = s->n_alts, s->nodes[id].n = m;
    memcpy(s->alts + s->n_alts, flat, m * sizeof *flat);
    s->n_alts += m;
    return id;
}

// "Any JSON value": an anyOf of an object and an array of any values, a
// string, a number, true/false and null.
static uint32_t s_any(mc_jschema_t *s, char *err) {
    if (s->any != S_NONE) return s->any;
    uint32_t alts[6];
    if ((alts[0] = s_node_add(s, N_OBJECT, err)) == S_NONE || (alts[1] = s_node_add(s, N_ARRAY, err)) == S_NONE ||
        (alts[2] = s_node_add(s, N_STRING, err)) == S_NONE || (alts[3] = s_node_add(s, N_NUMBER, err)) == S_NONE ||
        (alts[4] = s_literal1(s, "true", "false", err)) == S_NONE || (alts[5] = s_literal1(s, "null", NULL, err)) == S_NONE)
        return S_NONE;
    const uint32_t any = s_anyof(s, alts, 6, err);
    if (any == S_NONE) return S_NONE;
    s->nodes[alts[0]].additional = any;
    s->nodes[alts[1]].items = any;
    return s->any = any;
}

// --- the compiler ------------------------------------------------------------------

static const char *const s_keywords[] = {"type",     "enum",     "const",     "properties", "required",
                                         "additionalProperties", "items", "anyOf", "minItems", "maxItems",
                                         "minLength", "maxLength"};
static const char *const s_annotations[] = {"title", "description", "$schema", "$id", "default", "examples", "$comment"};

static bool s_listed(const char *k, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return true;
    return false;
}

static uint32_t s_compile(mc_jschema_t *s, const cJSON *j, uint32_t depth, char *err);

// A non-negative whole number keyword into *out (absent: untouched).
static bool s_bound(const cJSON *j, const char *key, uint32_t *out, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) return true;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 1e9 || floor(v->valuedouble) != v->valuedouble) {
        mc_err_set(err, MC_ERR_ARG, "'%s' must be a whole number from 0 to 1000000000", key);
        return false;
    }
    *out = (uint32_t)v->valuedouble;
    return true;
}

static bool s_bounds(const cJSON *j, const char *kmin, const char *kmax, s_node_t *n, char *err) {
    uint32_t lo = 0, hi = S_NONE;
    if (!s_bound(j, kmin, &lo, err) || !s_bound(j, kmax, &hi, err)) return false;
    if (hi != S_NONE && lo > hi) {
        mc_err_set(err, MC_ERR_ARG, "'%s' (%u) is above '%s' (%u): no value satisfies the schema", kmin, lo, kmax, hi);
        return false;
    }
    n->min = lo, n->max = hi, n->sat = hi != S_NONE ? hi : lo;
    return true;
}

static uint32_t s_object(mc_jschema_t *s, const cJSON *j, uint32_t depth, char *err) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(j, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "required");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(j, "additionalProperties");
    if (props && !cJSON_IsObject(props))
        return mc_err_set(err, MC_ERR_ARG, "'properties' must be an object"), S_NONE;
    if (req && !cJSON_IsArray(req)) return mc_err_set(err, MC_ERR_ARG, "'required' must be an array of strings"), S_NONE;
    uint32_t additional = S_NONE;
    if (!add || cJSON_IsTrue(add)) {
        if ((additional = s_any(s, err)) == S_NONE) return S_NONE;
    } else if (cJSON_IsObject(add)) {
        if ((additional = s_compile(s, add, depth + 1, err)) == S_NONE) return S_NONE;
    } else if (!cJSON_IsFalse(add)) {
        return mc_err_set(err, MC_ERR_ARG, "'additionalProperties' must be true, false or a schema"), S_NONE;
    }
    // Names and value nodes first (compiling them adds nodes and props), then
    // this node's props in one run.
    const char *names[MC_JS_MAX_PROPS];
    uint32_t nodes[MC_JS_MAX_PROPS], n = 0;
    uint64_t required = 0;
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        if (n == MC_JS_MAX_PROPS)
            return mc_err_set(err, MC_ERR_ARG, "more than %d properties in one object", MC_JS_MAX_PROPS), S_NONE;
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(names[i], p->string))
                return mc_err_set(err, MC_ERR_ARG, "property '%.64s' is named twice", p->string), S_NONE;
        names[n] = p->string;
        if ((nodes[n++] = s_compile(s, p, depth + 1, err)) == S_NONE) return S_NONE;
    }
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r)) return mc_err_set(err, MC_ERR_ARG, "'required' must be an array of strings"), S_NONE;
        uint32_t i = 0;
        while (i < n && strcmp(names[i], r->valuestring)) i++;
        if (i == n) { // required but not described: any value, if others are allowed
            if (additional == S_NONE)
                return mc_err_set(err, MC_ERR_ARG,
                                  "required property '%.64s' is not in 'properties' and additionalProperties is false",
                                  r->valuestring),
                       S_NONE;
            if (n == MC_JS_MAX_PROPS)
                return mc_err_set(err, MC_ERR_ARG, "more than %d properties in one object", MC_JS_MAX_PROPS), S_NONE;
            names[n] = r->valuestring, nodes[n++] = additional;
        }
        required |= 1ull << i;
    }
    const uint32_t id = s_node_add(s, N_OBJECT, err);
    if (id == S_NONE) return S_NONE;
    if (!s_grow((void **)&s->props, &s->cap_props, s->n_props + n, sizeof *s->props))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory"), S_NONE;
    s->nodes[id].first = s->n_props, s->nodes[id].n = n;
    s->nodes[id].required = required, s->nodes[id].additional = additional;
    for (uint32_t i = 0; i < n; i++) {
        cJSON *str = cJSON_CreateString(names[i]);
        char *txt = str ? cJSON_PrintUnformatted(str) : NULL;
        cJSON_Delete(str);
        uint32_t off = 0;
        const size_t len = txt ? strlen(txt) : 0;
        const bool ok = txt && len >= 2 && len - 2 < UINT16_MAX && s_pool_add(s, txt + 1, len - 2, &off);
        free(txt);
        if (!ok) return mc_err_set(err, MC_ERR_ARG, "property name too long (or out of memory)"), S_NONE;
        s->props[s->n_props++] = (s_prop_t){off, (uint32_t)(len - 2), nodes[i]};
    }
    return id;
}

static bool s_type_is(const cJSON *v, const char *type) {
    if (!strcmp(type, "object")) return cJSON_IsObject(v);
    if (!strcmp(type, "array")) return cJSON_IsArray(v);
    if (!strcmp(type, "string")) return cJSON_IsString(v);
    if (!strcmp(type, "number")) return cJSON_IsNumber(v);
    if (!strcmp(type, "integer")) return cJSON_IsNumber(v) && floor(v->valuedouble) == v->valuedouble;
    if (!strcmp(type, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(type, "null")) return cJSON_IsNull(v);
    return false;
}

// One value of type `type` (NULL: whichever the keywords describe, else any).
static uint32_t s_typed(mc_jschema_t *s, const cJSON *j, const char *type, uint32_t depth, char *err) {
    if (!type) {
        if (cJSON_GetObjectItemCaseSensitive(j, "properties") || cJSON_GetObjectItemCaseSensitive(j, "required") ||
            cJSON_GetObjectItemCaseSensitive(j, "additionalProperties"))
            type = "object";
        else if (cJSON_GetObjectItemCaseSensitive(j, "items") || cJSON_GetObjectItemCaseSensitive(j, "minItems") ||
                 cJSON_GetObjectItemCaseSensitive(j, "maxItems"))
            type = "array";
        else if (cJSON_GetObjectItemCaseSensitive(j, "minLength") || cJSON_GetObjectItemCaseSensitive(j, "maxLength"))
            type = "string";
        else
            return s_any(s, err);
    }
    if (!strcmp(type, "object")) return s_object(s, j, depth, err);
    if (!strcmp(type, "array")) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
        uint32_t it;
        if (items && !cJSON_IsObject(items) && !cJSON_IsBool(items))
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "'items' must be one schema (tuple forms are not supported)"),
                   S_NONE;
        if ((it = items ? s_compile(s, items, depth + 1, err) : s_any(s, err)) == S_NONE) return S_NONE;
        const uint32_t id = s_node_add(s, N_ARRAY, err);
        if (id == S_NONE || !s_bounds(j, "minItems", "maxItems", &s->nodes[id], err)) return S_NONE;
        s->nodes[id].items = it;
        return id;
    }
    if (!strcmp(type, "string")) {
        const uint32_t id = s_node_add(s, N_STRING, err);
        if (id == S_NONE || !s_bounds(j, "minLength", "maxLength", &s->nodes[id], err)) return S_NONE;
        return id;
    }
    if (!strcmp(type, "number")) return s_node_add(s, N_NUMBER, err);
    if (!strcmp(type, "integer")) return s_node_add(s, N_INTEGER, err);
    if (!strcmp(type, "boolean")) return s_literal1(s, "true", "false", err);
    if (!strcmp(type, "null")) return s_literal1(s, "null", NULL, err);
    return mc_err_set(err, MC_ERR_UNSUPPORTED, "type '%.40s' is not supported", type), S_NONE;
}

// enum / const: the values (of the allowed types) as compact JSON texts.
static uint32_t s_enum(mc_jschema_t *s, const cJSON *j, const cJSON *types, char *err) {
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(j, "enum"), *co = cJSON_GetObjectItemCaseSensitive(j, "const");
    if (en && co) return mc_err_set(err, MC_ERR_UNSUPPORTED, "'enum' together with 'const' is not supported"), S_NONE;
    if (en && (!cJSON_IsArray(en) || !en->child))
        return mc_err_set(err, MC_ERR_ARG, "'enum' must be a non-empty array"), S_NONE;
    char *texts[MC_JS_MAX_ENUM];
    uint32_t n = 0, id = S_NONE;
    bool ok = true;
    for (const cJSON *v = en ? en->child : co; v && ok; v = en ? v->next : NULL) {
        bool typed = !types;
        for (const cJSON *t = types; t && !typed; t = t->next) typed = s_type_is(v, t->valuestring);
        if (!typed) continue;
        if (n == MC_JS_MAX_ENUM) {
            mc_err_set(err, MC_ERR_ARG, "more than %d enum values", MC_JS_MAX_ENUM);
            ok = false;
            break;
        }
        if (!(texts[n] = cJSON_PrintUnformatted(v))) {
            mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            ok = false;
            break;
        }
        n++;
    }
    if (ok && !n) mc_err_set(err, MC_ERR_ARG, "no value of '%s' has the schema's type", en ? "enum" : "const");
    if (ok && n) id = s_literals(s, texts, n, err);
    for (uint32_t i = 0; i < n; i++) free(texts[i]);
    return id;
}

static uint32_t s_compile(mc_jschema_t *s, const cJSON *j, uint32_t depth, char *err) {
    if (depth > MC_JS_MAX_DEPTH - 4)
        return mc_err_set(err, MC_ERR_ARG, "the schema nests more than %d levels", MC_JS_MAX_DEPTH - 4), S_NONE;
    if (cJSON_IsTrue(j)) return s_any(s, err);
    if (cJSON_IsFalse(j)) return mc_err_set(err, MC_ERR_ARG, "a 'false' schema accepts nothing"), S_NONE;
    if (!cJSON_IsObject(j)) return mc_err_set(err, MC_ERR_ARG, "a schema must be an object"), S_NONE;
    for (const cJSON *k = j->child; k; k = k->next)
        if (!s_listed(k->string, s_keywords, sizeof s_keywords / sizeof *s_keywords) &&
            !s_listed(k->string, s_annotations, sizeof s_annotations / sizeof *s_annotations))
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "JSON Schema keyword '%.64s' is not supported", k->string), S_NONE;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *anyof = cJSON_GetObjectItemCaseSensitive(j, "anyOf");
    if (anyof) {
        if (!cJSON_IsArray(anyof) || !anyof->child)
            return mc_err_set(err, MC_ERR_ARG, "'anyOf' must be a non-empty array of schemas"), S_NONE;
        for (const cJSON *k = j->child; k; k = k->next)
            if (strcmp(k->string, "anyOf") && !s_listed(k->string, s_annotations, sizeof s_annotations / sizeof *s_annotations))
                return mc_err_set(err, MC_ERR_UNSUPPORTED, "'anyOf' beside '%.64s' is not supported (put it in each alternative)",
                                  k->string),
                       S_NONE;
        uint32_t alts[S_MAX_ALTS], n = 0;
        for (const cJSON *a = anyof->child; a; a = a->next) {
            if (n == S_MAX_ALTS)
                return mc_err_set(err, MC_ERR_ARG, "anyOf with more than %d alternatives", S_MAX_ALTS), S_NONE;
            if ((alts[n++] = s_compile(s, a, depth, err)) == S_NONE) return S_NONE;
        }
        return n == 1 ? alts[0] : s_anyof(s, alts, n, err);
    }
    const cJSON *types = NULL; // the list of type names (NULL: any)
    if (type) {
        if (cJSON_IsString(type)) {
            types = type;
        } else if (cJSON_IsArray(type) && type->child) {
            types = type->child;
            for (const cJSON *t = types; t; t = t->next)
                if (!cJSON_IsString(t)) return mc_err_set(err, MC_ERR_ARG, "'type' must be a string or a list of strings"), S_NONE;
        } else {
            return mc_err_set(err, MC_ERR_ARG, "'type' must be a string or a non-empty list of strings"), S_NONE;
        }
        for (const cJSON *t = types; t; t = t == type ? NULL : t->next) {
            static const char *const known[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
            if (!s_listed(t->valuestring, known, 7))
                return mc_err_set(err, MC_ERR_UNSUPPORTED, "type '%.40s' is not supported", t->valuestring), S_NONE;
        }
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "enum") || cJSON_GetObjectItemCaseSensitive(j, "const")) {
        if (types == type && type) { // one type: a list of one for s_type_is
            cJSON tmp = *type;
            tmp.next = NULL;
            return s_enum(s, j, &tmp, err);
        }
        return s_enum(s, j, types, err);
    }
    if (!types) return s_typed(s, j, NULL, depth, err);
    if (types == type) return s_typed(s, j, type->valuestring, depth, err);
    uint32_t alts[S_MAX_ALTS], n = 0;
    for (const cJSON *t = types; t; t = t->next) {
        if (n == S_MAX_ALTS) return mc_err_set(err, MC_ERR_ARG, "too many types"), S_NONE;
        if ((alts[n++] = s_typed(s, j, t->valuestring, depth, err)) == S_NONE) return S_NONE;
    }
    return n == 1 ? alts[0] : s_anyof(s, alts, n, err);
}

static mc_jschema_t *s_new(void) {
    mc_jschema_t *s = calloc(1, sizeof *s);
    if (s) s->any = s->root = S_NONE;
    return s;
}

mc_jschema_t *mc_jschema_compile(const char *json, size_t len, char *err) {
    if (!json || len > MC_JS_MAX_SCHEMA) {
        mc_err_set(err, MC_ERR_ARG, "the schema is missing or longer than %u bytes", MC_JS_MAX_SCHEMA);
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(json, len, &end, false);
    while (j && end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (!j || end != json + len) {
        cJSON_Delete(j);
        mc_err_set(err, MC_ERR_FORMAT, "the schema is not one JSON value");
        return NULL;
    }
    mc_jschema_t *s = s_new();
    if (!s) {
        cJSON_Delete(j);
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->root = s_compile(s, j, 0, err);
    cJSON_Delete(j);
    if (s->root == S_NONE) mc_jschema_destroy(&s);
    return s;
}

mc_jschema_t *mc_jschema_any_object(char *err) {
    mc_jschema_t *s = s_new();
    if (!s) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    const uint32_t any = s_any(s, err);
    if (any == S_NONE) {
        mc_jschema_destroy(&s);
        return NULL;
    }
    s->root = s->alts[s->nodes[any].first]; // its object alternative
    return s;
}

void mc_jschema_destroy(mc_jschema_t **ps) {
    if (!ps || !*ps) return;
    mc_jschema_t *s = *ps;
    free(s->nodes), free(s->props), free(s->lits), free(s->alts), free(s->pool);
    free(s);
    *ps = NULL;
}

// --- the automaton -------------------------------------------------------------------

enum { F_ROOT = 1, F_OBJ, F_KEY, F_ARR, F_STR, F_NUM, F_LIT };
enum { R_PREFIX, R_VALUE, R_SUFFIX, R_END };
enum { O_FIRST, O_IN_KEY, O_KEY_DONE, O_COLON, O_IN_VALUE, O_AFTER_VALUE, O_COMMA };
enum { A_FIRST, A_IN_VALUE, A_AFTER_VALUE, A_COMMA };
enum { S_BODY, S_ESC, S_U0, S_UD, S_U1, S_U2, S_U3 };
enum { U_START, U_MINUS, U_ZERO, U_INT, U_DOT, U_FRAC, U_E, U_ESIGN, U_EXP };

static void s_emit(mc_jsm_state_t *out, const mc_jsm_stack_t *s) {
    const size_t bytes = s->depth * sizeof(mc_jsm_frame_t);
    for (uint32_t i = 0; i < out->n; i++)
        if (out->a[i].depth == s->depth && !memcmp(out->a[i].f, s->f, bytes)) return;
    if (out->n == MC_JS_MAX_ALT) return; // dropped: what is left still only leads to valid documents
    out->a[out->n].depth = s->depth;
    memcpy(out->a[out->n].f, s->f, bytes);
    out->n++;
}

static void s_stack_copy(mc_jsm_stack_t *d, const mc_jsm_stack_t *s) {
    d->depth = s->depth;
    memcpy(d->f, s->f, s->depth * sizeof(mc_jsm_frame_t));
}

static mc_jsm_frame_t *s_push(mc_jsm_stack_t *s, uint32_t node, uint8_t kind, uint8_t phase) {
    mc_jsm_frame_t *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->node = (uint16_t)node, f->kind = kind, f->phase = phase;
    return f;
}

// The frame on top was popped: the one below goes on after its value.
static void s_child_done(const mc_jsm_t *m, mc_jsm_stack_t *s) {
    mc_jsm_frame_t *f = &s->f[s->depth - 1];
    f->ws = 0;
    switch (f->kind) {
    case F_ROOT:
        f->phase = m->n_suffix ? R_SUFFIX : R_END;
        f->count = 0;
        break;
    case F_OBJ: f->phase = O_AFTER_VALUE; break;
    case F_ARR: {
        const s_node_t *n = &m->schema->nodes[f->node];
        f->phase = A_AFTER_VALUE;
        if (n->max != S_NONE || f->count < n->sat) f->count++;
        break;
    }
    default: break;
    }
}

static void s_feed(const mc_jsm_t *m, mc_jsm_stack_t *s, uint8_t c, mc_jsm_state_t *out);

// Start a value of node with byte c.
static void s_value(const mc_jsm_t *m, mc_jsm_stack_t *s, uint32_t node, uint8_t c, mc_jsm_state_t *out) {
    const s_node_t *n = &m->schema->nodes[node];
    switch (n->kind) {
    case N_ANYOF:
        for (uint32_t i = 0; i < n->n; i++) {
            mc_jsm_stack_t t;
            s_stack_copy(&t, s);
            s_value(m, &t, m->schema->alts[n->first + i], c, out);
        }
        return;
    case N_OBJECT:
        if (c != '{' || s->depth + 2 > MC_JS_MAX_DEPTH) return;
        s_push(s, node, F_OBJ, O_FIRST);
        s_emit(out, s);
        return;
    case N_ARRAY:
        if (c != '[' || s->depth + 2 > MC_JS_MAX_DEPTH) return;
        s_push(s, node, F_ARR, A_FIRST);
        s_emit(out, s);
        return;
    case N_STRING:
        if (c != '"' || s->depth + 1 > MC_JS_MAX_DEPTH) return;
        s_push(s, node, F_STR, S_BODY);
        s_emit(out, s);
        return;
    case N_NUMBER:
    case N_INTEGER:
        if (c != '-' && (c < '0' || c > '9')) return;
        if (s->depth + 1 > MC_JS_MAX_DEPTH) return;
        s_push(s, node, F_NUM, U_START);
        s_feed(m, s, c, out);
        return;
    case N_LITERALS: {
        if (s->depth + 1 > MC_JS_MAX_DEPTH) return;
        mc_jsm_frame_t *f = s_push(s, node, F_LIT, 0);
        f->bits = n->n == 64 ? UINT64_MAX : (1ull << n->n) - 1;
        s_feed(m, s, c, out);
        return;
    }
    default: return;
    }
}

static bool s_is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t'; }
static bool s_is_hex(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// One byte of string content outside escapes (not '"' or '\\'): UTF-8
// checked across bytes; *starts: it begins a character.
static bool s_utf8(mc_jsm_frame_t *f, uint8_t c, bool *starts) {
    if (f->u8left) {
        *starts = false;
        if (c < f->u8lo || c > f->u8hi) return false;
        f->u8left--, f->u8lo = 0x80, f->u8hi = 0xBF;
        return true;
    }
    *starts = true;
    if (c < 0x20) return false;
    if (c < 0x80) return true;
    uint8_t left, lo = 0x80, hi = 0xBF;
    if (c < 0xC2) return false;
    else if (c < 0xE0) left = 1;
    else if (c == 0xE0) left = 2, lo = 0xA0;
    else if (c == 0xED) left = 2, hi = 0x9F;
    else if (c < 0xF0) left = 2;
    else if (c == 0xF0) left = 3, lo = 0x90;
    else if (c < 0xF4) left = 3;
    else if (c == 0xF4) left = 3, hi = 0x8F;
    else return false;
    f->u8left = left, f->u8lo = lo, f->u8hi = hi;
    return true;
}

static bool s_can_key(const s_node_t *n, const mc_jsm_frame_t *f) {
    const uint64_t all = n->n == 64 ? UINT64_MAX : (1ull << n->n) - 1;
    return n->additional != S_NONE || (all & ~f->bits);
}

static void s_key_start(mc_jsm_stack_t *s, const s_node_t *n) {
    mc_jsm_frame_t *o = &s->f[s->depth - 1];
    o->phase = O_IN_KEY;
    mc_jsm_frame_t *k = s_push(s, o->node, F_KEY, n->additional != S_NONE);
    k->bits = n->n == 64 ? UINT64_MAX : (1ull << n->n) - 1;
    if (n->additional == S_NONE) k->bits &= ~o->bits;
}

// Pop the top frame (it took its last byte) and keep the stack.
static void s_pop_emit(const mc_jsm_t *m, mc_jsm_stack_t *s, mc_jsm_state_t *out) {
    s->depth--;
    s_child_done(m, s);
    s_emit(out, s);
}

static void s_feed(const mc_jsm_t *m, mc_jsm_stack_t *s, uint8_t c, mc_jsm_state_t *out) {
    const mc_jschema_t *sc = m->schema;
    for (;;) {
        mc_jsm_frame_t *f = &s->f[s->depth - 1];
        const s_node_t *n = &sc->nodes[f->node];
        switch (f->kind) {
        case F_ROOT:
            if (f->phase == R_PREFIX) {
                if (m->prefix[f->count] != c) return;
                if (++f->count == m->n_prefix) f->phase = R_VALUE, f->count = 0;
                s_emit(out, s);
            } else if (f->phase == R_VALUE) {
                s_value(m, s, sc->root, c, out);
            } else if (f->phase == R_SUFFIX) {
                if (m->suffix[f->count] != c) return;
                if (++f->count == m->n_suffix) f->phase = R_END, f->count = 0;
                s_emit(out, s);
            }
            return;
        case F_OBJ:
            if (s_is_ws(c)) {
                if (f->ws >= MC_JS_MAX_WS) return;
                f->ws++;
                s_emit(out, s);
                return;
            }
            f->ws = 0;
            switch (f->phase) {
            case O_FIRST:
            case O_AFTER_VALUE:
                if (c == '}' && !(n->required & ~f->bits)) {
                    s_pop_emit(m, s, out);
                } else if (c == '"' && f->phase == O_FIRST && s_can_key(n, f)) {
                    s_key_start(s, n);
                    s_emit(out, s);
                } else if (c == ',' && f->phase == O_AFTER_VALUE && s_can_key(n, f)) {
                    f->phase = O_COMMA;
                    s_emit(out, s);
                }
                return;
            case O_COMMA:
                if (c != '"') return;
                s_key_start(s, n);
                s_emit(out, s);
                return;
            case O_KEY_DONE:
                if (c != ':') return;
                f->phase = O_COLON;
                s_emit(out, s);
                return;
            case O_COLON:
                f->phase = O_IN_VALUE;
                s_value(m, s, f->cur == S_ADDITIONAL ? n->additional : sc->props[n->first + f->cur].node, c, out);
                return;
            default: return;
            }
        case F_KEY: {
            mc_jsm_frame_t *o = &s->f[s->depth - 2];
            uint64_t alive = 0;
            for (uint64_t b = f->bits; b; b &= b - 1) {
                const uint32_t i = (uint32_t)__builtin_ctzll(b);
                const s_prop_t *p = &sc->props[n->first + i];
                if (p->len > f->pos && (uint8_t)sc->pool[p->off + f->pos] == c) alive |= 1ull << i;
            }
            // A quote no name continues with (names are escaped: theirs follow a backslash) ends the key.
            if (c == '"' && !alive && !f->u8left) {
                uint32_t cur = S_ADDITIONAL;
                for (uint32_t i = 0; i < n->n; i++)
                    if ((f->bits >> i & 1) && sc->props[n->first + i].len == f->pos) cur = i;
                if (cur == S_ADDITIONAL ? !f->phase : (o->bits >> cur & 1)) return; // no such key / said already
                if (cur != S_ADDITIONAL) o->bits |= 1ull << cur;
                s->depth--;
                o->phase = O_KEY_DONE, o->cur = (uint16_t)cur, o->ws = 0;
                s_emit(out, s);
                return;
            }
            bool starts;
            if (f->phase && (c == '\\' || c == '"' || !s_utf8(f, c, &starts))) f->phase = 0;
            if (!alive && !f->phase) return;
            f->bits = alive;
            if (f->pos < UINT16_MAX) f->pos++;
            if (!f->phase) f->u8left = 0, f->u8lo = f->u8hi = 0; // a name's own bytes are valid UTF-8
            s_emit(out, s);
            return;
        }
        case F_ARR:
            if (s_is_ws(c)) {
                if (f->ws >= MC_JS_MAX_WS) return;
                f->ws++;
                s_emit(out, s);
                return;
            }
            f->ws = 0;
            if (f->phase == A_FIRST || f->phase == A_AFTER_VALUE) {
                if (c == ']' && f->count >= n->min) {
                    s_pop_emit(m, s, out);
                    return;
                }
                if (f->phase == A_AFTER_VALUE) {
                    if (c == ',' && f->count < n->max) {
                        f->phase = A_COMMA;
                        s_emit(out, s);
                    }
                    return;
                }
                if (n->max == 0) return;
            } else if (f->phase != A_COMMA) {
                return;
            }
            f->phase = A_IN_VALUE;
            s_value(m, s, n->items, c, out);
            return;
        case F_STR:
            switch (f->phase) {
            case S_BODY: {
                if (f->u8left) {
                    bool starts;
                    if (s_utf8(f, c, &starts)) s_emit(out, s);
                    return;
                }
                if (c == '"') {
                    if (f->count >= n->min) s_pop_emit(m, s, out);
                    return;
                }
                if (n->max != S_NONE && f->count >= n->max) return;
                bool starts;
                if (c == '\\') f->phase = S_ESC;
                else if (!s_utf8(f, c, &starts)) return;
                if (f->count < n->sat) f->count++;
                s_emit(out, s);
                return;
            }
            case S_ESC:
                if (c == 'u') f->phase = S_U0;
                else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
                    f->phase = S_BODY;
                else return;
                s_emit(out, s);
                return;
            case S_U0:
                if (!s_is_hex(c)) return;
                f->phase = c == 'd' || c == 'D' ? S_UD : S_U1;
                s_emit(out, s);
                return;
            case S_UD: // no surrogates: \uD800..\uDFFF
                if (c < '0' || c > '7') return;
                f->phase = S_U2;
                s_emit(out, s);
                return;
            default:
                if (!s_is_hex(c)) return;
                f->phase = f->phase == S_U3 ? S_BODY : f->phase + 1;
                s_emit(out, s);
                return;
            }
        case F_NUM: {
            const bool digit = c >= '0' && c <= '9', real = n->kind == N_NUMBER;
            bool end = false;
            switch (f->phase) {
            case U_START:
            case U_MINUS:
                if (c == '-' && f->phase == U_START) f->phase = U_MINUS;
                else if (c == '0') f->phase = U_ZERO;
                else if (digit) f->phase = U_INT, f->count = 1;
                else return;
                break;
            case U_ZERO:
            case U_INT:
                if (digit && f->phase == U_INT && f->count < MC_JS_MAX_DIGITS) f->count++;
                else if (real && c == '.') f->phase = U_DOT, f->count = 0;
                else if (real && (c == 'e' || c == 'E')) f->phase = U_E, f->count = 0;
                else end = true;
                break;
            case U_DOT:
                if (!digit) return;
                f->phase = U_FRAC, f->count = 1;
                break;
            case U_FRAC:
                if (digit && f->count < MC_JS_MAX_DIGITS) f->count++;
                else if (c == 'e' || c == 'E') f->phase = U_E, f->count = 0;
                else end = true;
                break;
            case U_E:
            case U_ESIGN:
                if ((c == '+' || c == '-') && f->phase == U_E) f->phase = U_ESIGN;
                else if (digit) f->phase = U_EXP, f->count = 1;
                else return;
                break;
            case U_EXP:
                if (digit && f->count < 2) f->count++;
                else end = true;
                break;
            default: return;
            }
            if (!end) {
                s_emit(out, s);
                return;
            }
            s->depth--; // the byte belongs to what follows the number
            s_child_done(m, s);
            continue;
        }
        case F_LIT: {
            uint64_t alive = 0;
            bool whole = false;
            for (uint64_t b = f->bits; b; b &= b - 1) {
                const uint32_t i = (uint32_t)__builtin_ctzll(b);
                const s_lit_t *l = &sc->lits[n->first + i];
                if (l->len == f->pos) whole = true;
                else if ((uint8_t)sc->pool[l->off + f->pos] == c) alive |= 1ull << i;
            }
            if (alive) {
                f->bits = alive;
                f->pos++;
                s_emit(out, s);
                return;
            }
            if (!whole) return;
            s->depth--;
            s_child_done(m, s);
            continue;
        }
        default: return;
        }
    }
}

void mc_jsm_start(const mc_jsm_t *m, mc_jsm_state_t *st) {
    st->n = 1;
    st->a[0].depth = 0;
    s_push(&st->a[0], 0, F_ROOT, m->n_prefix ? R_PREFIX : R_VALUE);
}

bool mc_jsm_step(const mc_jsm_t *m, const mc_jsm_state_t *in, uint8_t c, mc_jsm_state_t *out) {
    out->n = 0;
    for (uint32_t i = 0; i < in->n; i++) {
        mc_jsm_stack_t t;
        s_stack_copy(&t, &in->a[i]);
        s_feed(m, &t, c, out);
    }
    return out->n > 0;
}

bool mc_jsm_accepting(const mc_jsm_t *m, const mc_jsm_state_t *st) {
    for (uint32_t i = 0; i < st->n; i++) {
        mc_jsm_stack_t t;
        s_stack_copy(&t, &st->a[i]);
        for (;;) {
            const mc_jsm_frame_t *f = &t.f[t.depth - 1];
            bool ends = false;
            if (f->kind == F_ROOT) {
                if (f->phase == R_END) return true;
                break;
            } else if (f->kind == F_NUM) {
                ends = f->phase == U_ZERO || f->phase == U_INT || f->phase == U_FRAC || f->phase == U_EXP;
            } else if (f->kind == F_LIT) {
                const s_node_t *n = &m->schema->nodes[f->node];
                for (uint64_t b = f->bits; b && !ends; b &= b - 1)
                    ends = m->schema->lits[n->first + (uint32_t)__builtin_ctzll(b)].len == f->pos;
            }
            if (!ends) break;
            t.depth--;
            s_child_done(m, &t);
        }
    }
    return false;
}

bool mc_jsm_done(const mc_jsm_state_t *st) {
    for (uint32_t i = 0; i < st->n; i++)
        if (st->a[i].depth != 1 || st->a[i].f[0].phase != R_END) return false;
    return st->n > 0;
}

int mc_jsm_string_state(const mc_jsm_t *m, const mc_jsm_state_t *st, uint32_t *room) {
    if (st->n != 1) return -1;
    const mc_jsm_frame_t *f = &st->a[0].f[st->a[0].depth - 1];
    if (f->kind != F_STR || f->phase != S_BODY) return -1;
    const s_node_t *n = &m->schema->nodes[f->node];
    *room = n->max == S_NONE ? UINT32_MAX : n->max - f->count;
    switch (f->u8left) {
    case 0: return 0;
    case 1: return 1;
    case 2: return f->u8lo == 0xA0 ? 3 : f->u8hi == 0x9F ? 4 : 2;
    default: return f->u8lo == 0x90 ? 6 : f->u8hi == 0x8F ? 7 : 5;
    }
}

void mc_jsm_copy(mc_jsm_state_t *out, const mc_jsm_state_t *in) {
    out->n = in->n;
    for (uint32_t i = 0; i < in->n; i++) s_stack_copy(&out->a[i], &in->a[i]);
}

size_t mc_jsm_serialize(const mc_jsm_state_t *st, uint8_t *buf) {
    size_t w = 0;
    buf[w++] = (uint8_t)st->n;
    for (uint32_t i = 0; i < st->n; i++) {
        buf[w++] = (uint8_t)st->a[i].depth;
        const size_t b = st->a[i].depth * sizeof(mc_jsm_frame_t);
        memcpy(buf + w, st->a[i].f, b);
        w += b;
    }
    return w;
}
