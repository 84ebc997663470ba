/*
 * gguf: GGUF v2/v3 reader.
 *
 * One forward pass over the header builds the key/value list and the tensor
 * table. Strings and numeric arrays point into the caller's buffer; what the
 * reader does allocate (NUL-terminated key and name copies, string tables,
 * nested array items) comes from a bump arena released in one go. Every
 * count and length is compared with the bytes that remain BEFORE anything is
 * allocated for it, so whatever a hostile header claims, we allocate at most
 * a small multiple (about 10x) of the file size. Keys and
 * tensor names are hashed, so duplicate checks and look-ups stay O(1) even
 * for legacy Mixtral files with about a thousand tensors.
 */
#include "gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

enum {
    S_HEADER_BYTES = 24,     // magic, version, n_tensors, n_kv
    S_MIN_KV_BYTES = 13,     // empty key (8) + value type (4) + smallest value (1)
    S_MIN_TENSOR_BYTES = 32, // empty name (8) + n_dims (4) + one ne (8) + type (4) + offset (8)
    S_MIN_ARRAY_BYTES = 12,  // element type (4) + count (8)
    S_MIN_STRING_BYTES = 8,  // length only
    S_MAX_DEPTH = 8,         // arrays inside arrays; bounds the parser's recursion
    S_CHUNK_BYTES = 64 * 1024,
};

// Bytes of one element of each fixed-size value type (0: variable size).
static const uint8_t s_vtype_bytes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct s_chunk {
    struct s_chunk *next;
    size_t used, cap;   // bytes of data
    max_align_t data[]; // cap bytes
} s_chunk_t;

// Open-addressing hash index from a NUL-terminated name to its position.
typedef struct {
    const char *name; // NULL: empty slot
    size_t index;
} s_slot_t;

typedef struct {
    s_slot_t *slots;
    size_t mask; // slot count - 1 (a power of two)
} s_index_t;

struct mc_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped; // base came from mmap in mc_gguf_open
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    mc_gguf_kv_t *kvs; // n_kv, in file order
    size_t n_kv;
    mc_gguf_tensor_t *tensors; // n_tensors, in file order
    size_t n_tensors;
    s_index_t kv_index, tensor_index;
    s_chunk_t *arena;
};

// Cursor over the buffer being parsed; err receives the first failure.
typedef struct {
    mc_gguf_t *g;
    const uint8_t *p;
    size_t len, pos;
    char *err;
} s_parser_t;

// --- arena -------------------------------------------------------------

static void *s_alloc(mc_gguf_t *g, size_t n) {
    const size_t a = alignof(max_align_t);
    if (n > SIZE_MAX - sizeof(s_chunk_t) - a) return NULL;
    n = (n + a - 1) & ~(a - 1);
    s_chunk_t *c = g->arena;
    if (c && c->cap - c->used >= n) {
        void *p = (unsigned char *)c->data + c->used;
        c->used += n;
        return p;
    }
    // A large request gets a chunk of its own linked behind the current one,
    // so the free tail of the current chunk stays usable for small strings.
    bool own = n > S_CHUNK_BYTES / 4;
    size_t cap = own ? n : S_CHUNK_BYTES;
    s_chunk_t *nc = malloc(sizeof *nc + cap);
    if (!nc) return NULL;
    nc->cap = cap;
    nc->used = n;
    if (own && c) {
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        g->arena = nc;
    }
    return nc->data;
}

static void *s_alloc_array(mc_gguf_t *g, uint64_t count, size_t elem) {
    if (count > SIZE_MAX / elem) return NULL;
    return s_alloc(g, (size_t)count * elem);
}

static char *s_strdup(mc_gguf_t *g, mc_gguf_str_t s) {
    char *c = s_alloc(g, (size_t)s.len + 1); // len <= buffer size, so +1 cannot wrap
    if (!c) return NULL;
    memcpy(c, s.ptr, (size_t)s.len);
    c[s.len] = '\0';
    return c;
}

// --- hash index ---------------------------------------------------------

static uint64_t s_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325u; // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3u;
    return h;
}

static bool s_index_init(s_index_t *ix, size_t n) {
    size_t cap = 16;
    while (cap / 2 < n) { // keep the load factor at or below one half
        if (cap > SIZE_MAX / 2 / sizeof(s_slot_t)) return false;
        cap *= 2;
    }
    ix->slots = calloc(cap, sizeof(s_slot_t));
    ix->mask = cap - 1;
    return ix->slots != NULL;
}

// Position of name, or SIZE_MAX when absent.
static size_t s_index_find(const s_index_t *ix, const char *name) {
    if (!ix->slots) return SIZE_MAX;
    for (size_t i = (size_t)s_hash(name) & ix->mask;; i = (i + 1) & ix->mask) {
        const s_slot_t *s = &ix->slots[i];
        if (!s->name) return SIZE_MAX;
        if (!strcmp(s->name, name)) return s->index;
    }
}

// Adds name -> index; false when the name is already present.
static bool s_index_add(s_index_t *ix, const char *name, size_t index) {
    for (size_t i = (size_t)s_hash(name) & ix->mask;; i = (i + 1) & ix->mask) {
        s_slot_t *s = &ix->slots[i];
        if (!s->name) {
            s->name = name;
            s->index = index;
            return true;
        }
        if (!strcmp(s->name, name)) return false;
    }
}

// --- reading primitives --------------------------------------------------

// Writes the message and returns false. Only the text matters: parse
// reports failure as NULL, so no error code is kept.
__attribute__((format(printf, 2, 3))) static bool s_fail(s_parser_t *ps, const char *fmt, ...) {
    if (ps->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->err, MC_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return false;
}

static size_t s_left(const s_parser_t *ps) {
    return ps->len - ps->pos;
}

// Points *out at the next n bytes; what/field name the datum for the message.
static bool s_take(s_parser_t *ps, size_t n, const char *what, const char *field, const uint8_t **out) {
    if (s_left(ps) < n)
        return s_fail(ps, "%s: %s truncated at byte %zu (file is %zu bytes)", what, field, ps->pos, ps->len);
    *out = ps->p + ps->pos;
    ps->pos += n;
    return true;
}

static bool s_u32(s_parser_t *ps, const char *what, const char *field, uint32_t *out) {
    const uint8_t *b = NULL;
    if (!s_take(ps, 4, what, field, &b)) return false;
    memcpy(out, b, 4);
    return true;
}

static bool s_u64(s_parser_t *ps, const char *what, const char *field, uint64_t *out) {
    const uint8_t *b = NULL;
    if (!s_take(ps, 8, what, field, &b)) return false;
    memcpy(out, b, 8);
    return true;
}

static bool s_str(s_parser_t *ps, const char *what, const char *field, mc_gguf_str_t *out) {
    uint64_t n;
    const uint8_t *b = NULL;
    if (!s_u64(ps, what, field, &n)) return false;
    if (n > s_left(ps))
        return s_fail(ps, "%s: %s length %" PRIu64 " exceeds the file (%zu bytes left at byte %zu)", what, field, n,
                      s_left(ps), ps->pos);
    s_take(ps, (size_t)n, what, field, &b);
    out->ptr = (const char *)b;
    out->len = n;
    return true;
}

// Decodes one element of a fixed-size (non-string, non-array) type.
static void s_decode(mc_gguf_vtype_t t, const uint8_t *b, mc_gguf_value_t *v) {
    assert(s_vtype_bytes[t] > 0);
    uint64_t raw = 0;
    memcpy(&raw, b, s_vtype_bytes[t]); // little-endian host: the low bytes
    v->type = t;
    switch (t) {
    case MC_GGUF_BOOL: v->u = raw != 0; break;
    case MC_GGUF_I8:
    case MC_GGUF_I16:
    case MC_GGUF_I32: {
        // Sign-extend by flipping and subtracting the sign bit, which avoids
        // implementation-defined unsigned-to-signed conversions.
        int64_t sign = (int64_t)1 << (8 * s_vtype_bytes[t] - 1);
        v->i = (int64_t)(raw ^ (uint64_t)sign) - sign;
    } break;
    case MC_GGUF_I64: memcpy(&v->i, b, 8); break;
    case MC_GGUF_F32: {
        float f;
        memcpy(&f, b, 4);
        v->f = f;
    } break;
    case MC_GGUF_F64: memcpy(&v->f, b, 8); break;
    default: v->u = raw; break; // U8, U16, U32, U64
    }
}

// --- values ---------------------------------------------------------------

static bool s_array(s_parser_t *ps, const char *what, int depth, mc_gguf_value_t *v) {
    uint32_t et;
    uint64_t count;
    if (depth > S_MAX_DEPTH) return s_fail(ps, "%s: arrays nested deeper than %d levels", what, S_MAX_DEPTH);
    if (!s_u32(ps, what, "array element type", &et) || !s_u64(ps, what, "array count", &count)) return false;
    if (et > MC_GGUF_F64) return s_fail(ps, "%s: unknown array element type %u", what, et);
    size_t min = et == MC_GGUF_STRING  ? S_MIN_STRING_BYTES
                 : et == MC_GGUF_ARRAY ? S_MIN_ARRAY_BYTES
                                       : s_vtype_bytes[et];
    // Bounding count by what the file could hold also bounds the allocations below.
    if (count > s_left(ps) / min)
        return s_fail(ps, "%s: array count %" PRIu64 " exceeds the file (%zu bytes left at byte %zu)", what, count,
                      s_left(ps), ps->pos);
    memset(v, 0, sizeof *v);
    v->type = MC_GGUF_ARRAY;
    v->arr.elem_type = (mc_gguf_vtype_t)et;
    v->arr.count = count;
    if (count == 0) return true;
    if (et == MC_GGUF_STRING) {
        mc_gguf_str_t *s = s_alloc_array(ps->g, count, sizeof *s);
        if (!s) return s_fail(ps, "out of memory");
        for (uint64_t i = 0; i < count; i++)
            if (!s_str(ps, what, "array string", &s[i])) return false;
        v->arr.strings = s;
    } else if (et == MC_GGUF_ARRAY) {
        mc_gguf_value_t *items = s_alloc_array(ps->g, count, sizeof *items);
        if (!items) return s_fail(ps, "out of memory");
        for (uint64_t i = 0; i < count; i++)
            if (!s_array(ps, what, depth + 1, &items[i])) return false;
        v->arr.items = items;
    } else {
        v->arr.data = ps->p + ps->pos;
        ps->pos += (size_t)count * min; // fits: count <= left / min
    }
    return true;
}

static bool s_value(s_parser_t *ps, const char *what, uint32_t type, mc_gguf_value_t *v) {
    if (type > MC_GGUF_F64) return s_fail(ps, "%s: unknown value type %u", what, type);
    if (type == MC_GGUF_ARRAY) return s_array(ps, what, 1, v);
    if (type == MC_GGUF_STRING) {
        v->type = MC_GGUF_STRING;
        return s_str(ps, what, "string", &v->str);
    }
    const uint8_t *b = NULL;
    if (!s_take(ps, s_vtype_bytes[type], what, "value", &b)) return false;
    s_decode((mc_gguf_vtype_t)type, b, v);
    return true;
}

// --- header sections ------------------------------------------------------

static bool s_parse_kvs(s_parser_t *ps, uint64_t n_kv) {
    mc_gguf_t *g = ps->g;
    char what[MC_ERR_LEN];
    if (n_kv > s_left(ps) / S_MIN_KV_BYTES)
        return s_fail(ps, "n_kv %" PRIu64 " exceeds the file (%zu bytes left)", n_kv, s_left(ps));
    if (n_kv == 0) return true;
    g->kvs = malloc((size_t)n_kv * sizeof *g->kvs); // n_kv <= len / 13: no overflow
    if (!g->kvs || !s_index_init(&g->kv_index, (size_t)n_kv)) return s_fail(ps, "out of memory");
    for (size_t i = 0; i < n_kv; i++) {
        mc_gguf_kv_t *kv = &g->kvs[i];
        mc_gguf_str_t key;
        uint32_t type;
        snprintf(what, sizeof what, "kv %zu", i);
        if (!s_str(ps, what, "key", &key)) return false;
        if (memchr(key.ptr, 0, (size_t)key.len)) return s_fail(ps, "kv %zu: key contains a NUL byte", i);
        if (!(kv->key = s_strdup(g, key))) return s_fail(ps, "out of memory");
        snprintf(what, sizeof what, "kv '%s'", kv->key);
        if (!s_index_add(&g->kv_index, kv->key, i)) return s_fail(ps, "%s: duplicate key", what);
        g->n_kv = i + 1;
        if (!s_u32(ps, what, "value type", &type) || !s_value(ps, what, type, &kv->value)) return false;
    }
    return true;
}

static bool s_parse_alignment(s_parser_t *ps) {
    const mc_gguf_value_t *v = mc_gguf_find(ps->g, "general.alignment");
    ps->g->alignment = MC_GGUF_DEFAULT_ALIGNMENT;
    if (!v) return true;
    if (v->type != MC_GGUF_U32)
        return s_fail(ps, "general.alignment has type %s, must be u32", mc_gguf_vtype_name(v->type));
    if (v->u == 0 || (v->u & (v->u - 1)))
        return s_fail(ps, "general.alignment %" PRIu64 " is not a power of two", v->u);
    ps->g->alignment = (uint32_t)v->u;
    return true;
}

static void s_shape_str(char *buf, size_t cap, const uint64_t *ne, uint32_t n_dims) {
    size_t n = (size_t)snprintf(buf, cap, "{");
    for (uint32_t d = 0; d < n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRIu64, d ? ", " : "", ne[d]);
    if (n < cap) snprintf(buf + n, cap - n, "}");
}

static bool s_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

// Shape, type and size of one tensor; the offset is checked once the data
// section's start is known.
static bool s_check_tensor(s_parser_t *ps, const char *what, mc_gguf_tensor_t *t) {
    char shape[96];
    s_shape_str(shape, sizeof shape, t->ne, t->n_dims);
    const mc_dtype_traits_t *tr = mc_dtype_traits(t->type);
    if (!tr) return s_fail(ps, "%s: unknown type id %u", what, (unsigned)t->type);
    if (!tr->weight)
        return s_fail(ps, "%s: type %s (id %u) is for activations only, not weights", what, tr->name,
                      (unsigned)t->type);
    // ggml keeps element counts in int64_t, so that is our ceiling too.
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (!s_mul_u64(n, t->ne[d], &n) || n > INT64_MAX)
            return s_fail(ps, "%s: shape %s has too many elements", what, shape);
    t->n_elems = n;
    if (t->ne[0] % tr->block_elems)
        return s_fail(ps, "%s: ne[0] = %" PRIu64 " is not a multiple of the %s block size %u", what, t->ne[0], tr->name,
                      tr->block_elems);
    uint64_t row, size;
    if (!s_mul_u64(t->ne[0] / tr->block_elems, tr->block_bytes, &row) || !s_mul_u64(row, n / t->ne[0], &size))
        return s_fail(ps, "%s: byte size of %s shape %s overflows", what, tr->name, shape);
    t->size = size;
    return true;
}

static bool s_parse_tensor_infos(s_parser_t *ps, uint64_t n_tensors) {
    mc_gguf_t *g = ps->g;
    char what[MC_ERR_LEN];
    if (n_tensors > s_left(ps) / S_MIN_TENSOR_BYTES)
        return s_fail(ps, "n_tensors %" PRIu64 " exceeds the file (%zu bytes left)", n_tensors, s_left(ps));
    if (n_tensors == 0) return true;
    g->tensors = malloc((size_t)n_tensors * sizeof *g->tensors); // n_tensors <= len / 32
    if (!g->tensors || !s_index_init(&g->tensor_index, (size_t)n_tensors)) return s_fail(ps, "out of memory");
    for (size_t i = 0; i < n_tensors; i++) {
        mc_gguf_tensor_t *t = &g->tensors[i];
        mc_gguf_str_t name;
        uint32_t type;
        memset(t, 0, sizeof *t);
        snprintf(what, sizeof what, "tensor %zu", i);
        if (!s_str(ps, what, "name", &name)) return false;
        if (memchr(name.ptr, 0, (size_t)name.len)) return s_fail(ps, "tensor %zu: name contains a NUL byte", i);
        if (!(t->name = s_strdup(g, name))) return s_fail(ps, "out of memory");
        snprintf(what, sizeof what, "tensor '%s'", t->name);
        if (!s_index_add(&g->tensor_index, t->name, i)) return s_fail(ps, "%s: duplicate tensor name", what);
        g->n_tensors = i + 1;
        if (!s_u32(ps, what, "n_dims", &t->n_dims)) return false;
        if (t->n_dims < 1 || t->n_dims > MC_GGUF_MAX_DIMS)
            return s_fail(ps, "%s: n_dims %u is not in 1..%d", what, t->n_dims, MC_GGUF_MAX_DIMS);
        for (uint32_t d = 0; d < MC_GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d >= t->n_dims) continue;
            if (!s_u64(ps, what, "ne", &t->ne[d])) return false;
            // ggml tolerates empty tensors, but no model weight is empty and
            // a zero would make every later size computation degenerate.
            if (t->ne[d] == 0) return s_fail(ps, "%s: ne[%u] is 0", what, d);
        }
        if (!s_u32(ps, what, "type", &type) || !s_u64(ps, what, "offset", &t->offset)) return false;
        t->type = (mc_dtype_t)type;
        if (!s_check_tensor(ps, what, t)) return false;
    }
    return true;
}

// Places every tensor once the data section's start is known.
static bool s_place_tensors(s_parser_t *ps) {
    mc_gguf_t *g = ps->g;
    uint64_t avail = g->data_offset < ps->len ? ps->len - g->data_offset : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        mc_gguf_tensor_t *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return s_fail(ps, "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %u", t->name,
                          t->offset, g->alignment);
        if (t->offset > avail || t->size > avail - t->offset)
            return s_fail(ps,
                          "tensor '%s': offset %" PRIu64 " + size %" PRIu64
                          " is beyond the end of the file (%zu bytes, data section at byte %" PRIu64 ")",
                          t->name, t->offset, t->size, ps->len, g->data_offset);
        t->data = ps->p + g->data_offset + t->offset;
    }
    return true;
}

static uint32_t s_bswap32(uint32_t v) {
    return (v >> 24) | ((v >> 8) & 0xFF00u) | ((v << 8) & 0xFF0000u) | (v << 24);
}

static bool s_parse_header(s_parser_t *ps, uint64_t *n_tensors, uint64_t *n_kv) {
    uint32_t magic, version;
    if (ps->len >= 4) {
        memcpy(&magic, ps->p, 4);
        if (magic != MC_GGUF_MAGIC) return s_fail(ps, "bad magic 0x%08x (not a GGUF file)", magic);
    }
    if (ps->len < S_HEADER_BYTES)
        return s_fail(ps, "file is %zu bytes, too small for a GGUF header (%d bytes)", ps->len, S_HEADER_BYTES);
    ps->pos = 4;
    s_u32(ps, "header", "version", &version);
    if (version != 2 && version != 3) {
        uint32_t swapped = s_bswap32(version);
        if (swapped == 2 || swapped == 3)
            return s_fail(ps, "unsupported GGUF version %u: a big-endian version %u file (only little-endian is read)",
                          version, swapped);
        return s_fail(ps, "unsupported GGUF version %u (only versions 2 and 3 are read)", version);
    }
    ps->g->version = version;
    s_u64(ps, "header", "n_tensors", n_tensors);
    s_u64(ps, "header", "n_kv", n_kv);
    return true;
}

// --- public ---------------------------------------------------------------

mc_gguf_t *mc_gguf_parse(const void *buf, size_t len, char *err) {
    assert(buf || len == 0);
    mc_gguf_t *g = calloc(1, sizeof *g);
    if (!g) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    g->base = buf;
    g->size = len;
    s_parser_t ps = {.g = g, .p = buf, .len = len, .pos = 0, .err = err};
    uint64_t n_tensors, n_kv;
    if (!s_parse_header(&ps, &n_tensors, &n_kv) || !s_parse_kvs(&ps, n_kv) || !s_parse_alignment(&ps) ||
        !s_parse_tensor_infos(&ps, n_tensors))
        goto fail;
    // Rounding up cannot wrap: pos <= len < 2^63 in any real address space.
    // A file without tensors may omit the padding, so data_offset can then
    // exceed the size; nothing is read there.
    g->data_offset = ((uint64_t)ps.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (!s_place_tensors(&ps)) goto fail;
    return g;
fail:
    mc_gguf_destroy(&g);
    return NULL;
}

mc_gguf_t *mc_gguf_open(const char *path, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > SIZE_MAX) {
        if (!S_ISREG(st.st_mode))
            mc_err_set(err, MC_ERR_IO, "%s: not a regular file", path);
        else if (st.st_size <= 0)
            mc_err_set(err, MC_ERR_FORMAT, "%s: empty file (not a GGUF file)", path);
        else
            mc_err_set(err, MC_ERR_IO, "%s: file too large to map", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); // the mapping keeps the file alive
    if (map == MAP_FAILED) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot map: %s", path, strerror(map_errno));
        return NULL;
    }
    char perr[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_parse(map, size, perr);
    if (!g) {
        munmap(map, size);
        mc_err_set(err, MC_ERR_FORMAT, "%s: %s", path, perr);
        return NULL;
    }
    g->mapped = true;
    return g;
}

void mc_gguf_destroy(mc_gguf_t **pg) {
    if (!pg || !*pg) return;
    mc_gguf_t *g = *pg;
    if (g->mapped) munmap((void *)(uintptr_t)g->base, g->size);
    while (g->arena) {
        s_chunk_t *next = g->arena->next;
        free(g->arena);
        g->arena = next;
    }
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g->kvs);
    free(g->tensors);
    free(g);
    *pg = NULL;
}

uint32_t mc_gguf_version(const mc_gguf_t *g) {
    return g->version;
}

uint32_t mc_gguf_alignment(const mc_gguf_t *g) {
    return g->alignment;
}

uint64_t mc_gguf_data_offset(const mc_gguf_t *g) {
    return g->data_offset;
}

bool mc_gguf_mapped(const mc_gguf_t *g) {
    return g->mapped;
}

const uint8_t *mc_gguf_base(const mc_gguf_t *g) {
    return g->base;
}

size_t mc_gguf_size(const mc_gguf_t *g) {
    return g->size;
}

size_t mc_gguf_kv_count(const mc_gguf_t *g) {
    return g->n_kv;
}

const mc_gguf_kv_t *mc_gguf_kv_at(const mc_gguf_t *g, size_t i) {
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const mc_gguf_value_t *mc_gguf_find(const mc_gguf_t *g, const char *key) {
    assert(key);
    size_t i = s_index_find(&g->kv_index, key);
    return i == SIZE_MAX ? NULL : &g->kvs[i].value;
}

size_t mc_gguf_tensor_count(const mc_gguf_t *g) {
    return g->n_tensors;
}

const mc_gguf_tensor_t *mc_gguf_tensor_at(const mc_gguf_t *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const mc_gguf_tensor_t *mc_gguf_tensor_find(const mc_gguf_t *g, const char *name) {
    assert(name);
    size_t i = s_index_find(&g->tensor_index, name);
    return i == SIZE_MAX ? NULL : &g->tensors[i];
}

// --- typed look-ups ---------------------------------------------------------

static bool s_is_uint(mc_gguf_vtype_t t) {
    return t == MC_GGUF_U8 || t == MC_GGUF_U16 || t == MC_GGUF_U32 || t == MC_GGUF_U64;
}

static bool s_is_sint(mc_gguf_vtype_t t) {
    return t == MC_GGUF_I8 || t == MC_GGUF_I16 || t == MC_GGUF_I32 || t == MC_GGUF_I64;
}

static bool s_is_float(mc_gguf_vtype_t t) {
    return t == MC_GGUF_F32 || t == MC_GGUF_F64;
}

static bool s_as_u64(const mc_gguf_value_t *v, uint64_t *out) {
    if (s_is_uint(v->type) || v->type == MC_GGUF_BOOL) {
        *out = v->u;
        return true;
    }
    if (s_is_sint(v->type) && v->i >= 0) {
        *out = (uint64_t)v->i;
        return true;
    }
    return false;
}

static bool s_as_i64(const mc_gguf_value_t *v, int64_t *out) {
    if (s_is_uint(v->type) && v->u <= INT64_MAX) {
        *out = (int64_t)v->u;
        return true;
    }
    if (s_is_sint(v->type)) {
        *out = v->i;
        return true;
    }
    return false;
}

static bool s_as_f64(const mc_gguf_value_t *v, double *out) {
    if (s_is_uint(v->type))
        *out = (double)v->u;
    else if (s_is_sint(v->type))
        *out = (double)v->i;
    else if (s_is_float(v->type))
        *out = v->f;
    else
        return false;
    return true;
}

bool mc_gguf_get_u64(const mc_gguf_t *g, const char *key, uint64_t *out) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    return v && s_as_u64(v, out);
}

bool mc_gguf_get_i64(const mc_gguf_t *g, const char *key, int64_t *out) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    return v && s_as_i64(v, out);
}

bool mc_gguf_get_f64(const mc_gguf_t *g, const char *key, double *out) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    return v && s_as_f64(v, out);
}

bool mc_gguf_get_bool(const mc_gguf_t *g, const char *key, bool *out) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    uint64_t u;
    if (!v || !s_as_u64(v, &u) || u > 1) return false;
    *out = u == 1;
    return true;
}

bool mc_gguf_get_str(const mc_gguf_t *g, const char *key, mc_gguf_str_t *out) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    if (!v || v->type != MC_GGUF_STRING) return false;
    *out = v->str;
    return true;
}

// Element i of a numeric (non-bool) array, decoded as a scalar value.
static bool s_arr_elem(const mc_gguf_value_t *v, uint64_t i, mc_gguf_value_t *e) {
    if (!v || v->type != MC_GGUF_ARRAY || i >= v->arr.count) return false;
    mc_gguf_vtype_t t = v->arr.elem_type;
    if (!s_is_uint(t) && !s_is_sint(t) && !s_is_float(t)) return false;
    s_decode(t, (const uint8_t *)v->arr.data + i * s_vtype_bytes[t], e);
    return true;
}

bool mc_gguf_arr_f64(const mc_gguf_value_t *v, uint64_t i, double *out) {
    mc_gguf_value_t e;
    return s_arr_elem(v, i, &e) && s_as_f64(&e, out);
}

// Float elements are refused: like mc_gguf_get_i64, only integers that fit.
bool mc_gguf_arr_i64(const mc_gguf_value_t *v, uint64_t i, int64_t *out) {
    mc_gguf_value_t e;
    return s_arr_elem(v, i, &e) && s_as_i64(&e, out);
}

const char *mc_gguf_vtype_name(uint32_t t) {
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}
