/*
 * gguf_writer: GGUF v3 serialization.
 *
 * Each key/value pair is serialized into one growing byte buffer the moment it
 * is added, and each tensor gets its aligned offset in the data section when
 * it is declared, so writing is a single forward pass: header, key/values,
 * tensor table, zero padding, then every tensor (filled by the caller into one
 * scratch buffer the size of the largest tensor) followed by zero padding up
 * to the alignment, as llama.cpp writes them.
 *
 * The key "general.alignment" belongs to the writer: it is emitted when the
 * alignment given to mc_gguf_writer_new() differs from the default, and a
 * caller adding it directly gets MC_ERR_ARG (a second value could contradict
 * the layout actually written).
 */
#include "gguf_writer.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"

#define MC_GGUF_VERSION 3u
#define MC_GGUF_ALIGNMENT_KEY "general.alignment"
// llama.cpp rejects tensor names of GGML_MAX_NAME (64) bytes or more.
#define MC_GGUF_MAX_NAME 63
// The GGUF spec limits keys to 65535 bytes.
#define MC_GGUF_MAX_KEY 65535

// Open-addressing set of owned NUL-terminated strings (keys, tensor names):
// files may declare tens of thousands of tensors, so no quadratic look-ups.
typedef struct {
    char **slot; // cap entries, NULL when empty
    size_t cap;  // 0 or a power of two
    size_t n;
} s_strset_t;

typedef struct {
    const char *name; // owned by the writer's name set
    uint32_t n_dims;
    uint64_t ne[MC_GGUF_MAX_DIMS]; // unused dims are 1
    mc_dtype_t type;
    uint64_t size;   // bytes
    uint64_t offset; // within the data section, a multiple of the alignment
} s_tensor_t;

struct mc_gguf_writer {
    uint32_t alignment;
    uint8_t *kv; // serialized key/value pairs, back to back
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    s_strset_t keys;
    s_tensor_t *tensors;
    size_t n_tensors, tensors_cap;
    s_strset_t names;
    uint64_t data_size; // bytes of the data section including padding
};

// Where the serialized file goes: a stream or a preallocated buffer.
typedef struct {
    FILE *f;
    uint8_t *mem;
    size_t cap;
    uint64_t pos; // bytes written so far
} s_sink_t;

static uint64_t s_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static size_t s_strset_find(const s_strset_t *set, const char *s) {
    size_t mask = set->cap - 1, i = (size_t)s_hash(s) & mask;
    while (set->slot[i] && strcmp(set->slot[i], s) != 0) i = (i + 1) & mask;
    return i;
}

static bool s_strset_has(const s_strset_t *set, const char *s) {
    return set->cap && set->slot[s_strset_find(set, s)] != NULL;
}

// Make room for one more entry (load factor <= 1/2); false when out of memory.
static bool s_strset_reserve(s_strset_t *set) {
    if (set->cap && (set->n + 1) * 2 <= set->cap) return true;
    size_t cap = set->cap ? set->cap * 2 : 64;
    if (cap < set->cap) return false;
    char **slot = calloc(cap, sizeof *slot);
    if (!slot) return false;
    s_strset_t grown = {slot, cap, set->n};
    for (size_t i = 0; i < set->cap; i++)
        if (set->slot[i]) slot[s_strset_find(&grown, set->slot[i])] = set->slot[i];
    free(set->slot);
    *set = grown;
    return true;
}

// Insert a copy of s (caller checked it is absent); the copy, or NULL when out of memory.
static const char *s_strset_add(s_strset_t *set, const char *s) {
    if (!s_strset_reserve(set)) return NULL;
    char *copy = strdup(s);
    if (!copy) return NULL;
    set->slot[s_strset_find(set, s)] = copy;
    set->n++;
    return copy;
}

static void s_strset_free(s_strset_t *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
    free(set->slot);
    *set = (s_strset_t){0};
}

static uint64_t s_pad(uint64_t n, uint32_t alignment) {
    return (alignment - n % alignment) % alignment;
}

static void s_put(mc_gguf_writer_t *w, const void *p, size_t n) {
    assert(w->kv_len + n <= w->kv_cap);
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

static void s_put_u32(mc_gguf_writer_t *w, uint32_t v) { s_put(w, &v, 4); }
static void s_put_u64(mc_gguf_writer_t *w, uint64_t v) { s_put(w, &v, 8); }

static void s_put_str(mc_gguf_writer_t *w, const char *s, size_t len) {
    s_put_u64(w, len);
    s_put(w, s, len);
}

// Validate key, reserve room for the key, the value type and payload bytes,
// record the key and write the first two. On failure nothing observable
// changes, so a rejected add leaves the writer as it was.
static mc_err_t s_kv_begin(mc_gguf_writer_t *w, const char *key, mc_gguf_vtype_t vtype,
                           size_t payload, bool internal) {
    assert(w && key);
    size_t klen = strlen(key);
    if (klen == 0 || klen > MC_GGUF_MAX_KEY) return MC_ERR_ARG;
    if (!internal && !strcmp(key, MC_GGUF_ALIGNMENT_KEY)) return MC_ERR_ARG;
    if (s_strset_has(&w->keys, key)) return MC_ERR_ARG;
    size_t need;
    if (__builtin_add_overflow(payload, 8 + klen + 4, &need) ||
        __builtin_add_overflow(need, w->kv_len, &need))
        return MC_ERR_ARG;
    if (need > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 1024;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        uint8_t *kv = realloc(w->kv, cap);
        if (!kv) return MC_ERR_NOMEM;
        w->kv = kv;
        w->kv_cap = cap;
    }
    if (!s_strset_add(&w->keys, key)) return MC_ERR_NOMEM;
    w->n_kv++;
    s_put_str(w, key, klen);
    s_put_u32(w, vtype);
    return MC_OK;
}

static mc_err_t s_add_scalar(mc_gguf_writer_t *w, const char *key, mc_gguf_vtype_t vtype,
                             const void *v, size_t size, bool internal) {
    mc_err_t rc = s_kv_begin(w, key, vtype, size, internal);
    if (rc == MC_OK) s_put(w, v, size);
    return rc;
}

mc_gguf_writer_t *mc_gguf_writer_new(uint32_t alignment) {
    if (alignment == 0) alignment = MC_GGUF_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1)) return NULL;
    mc_gguf_writer_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = alignment;
    if (alignment != MC_GGUF_DEFAULT_ALIGNMENT &&
        s_add_scalar(w, MC_GGUF_ALIGNMENT_KEY, MC_GGUF_U32, &alignment, 4, true) != MC_OK)
        mc_gguf_writer_destroy(&w);
    return w;
}

void mc_gguf_writer_destroy(mc_gguf_writer_t **w) {
    if (!w || !*w) return;
    free((*w)->kv);
    free((*w)->tensors);
    s_strset_free(&(*w)->keys);
    s_strset_free(&(*w)->names);
    free(*w);
    *w = NULL;
}

mc_err_t mc_gguf_writer_add_u32(mc_gguf_writer_t *w, const char *key, uint32_t v) {
    return s_add_scalar(w, key, MC_GGUF_U32, &v, 4, false);
}

mc_err_t mc_gguf_writer_add_i32(mc_gguf_writer_t *w, const char *key, int32_t v) {
    return s_add_scalar(w, key, MC_GGUF_I32, &v, 4, false);
}

mc_err_t mc_gguf_writer_add_u64(mc_gguf_writer_t *w, const char *key, uint64_t v) {
    return s_add_scalar(w, key, MC_GGUF_U64, &v, 8, false);
}

mc_err_t mc_gguf_writer_add_f32(mc_gguf_writer_t *w, const char *key, float v) {
    return s_add_scalar(w, key, MC_GGUF_F32, &v, 4, false);
}

mc_err_t mc_gguf_writer_add_bool(mc_gguf_writer_t *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return s_add_scalar(w, key, MC_GGUF_BOOL, &b, 1, false);
}

mc_err_t mc_gguf_writer_add_str(mc_gguf_writer_t *w, const char *key, const char *v) {
    assert(v);
    size_t len = strlen(v);
    mc_err_t rc = s_kv_begin(w, key, MC_GGUF_STRING, 8 + len, false);
    if (rc == MC_OK) s_put_str(w, v, len);
    return rc;
}

mc_err_t mc_gguf_writer_add_arr_str(mc_gguf_writer_t *w, const char *key, const char *const *v,
                                    const size_t *lens, size_t n) {
    assert(v || n == 0);
    size_t payload = 4 + 8;
    for (size_t i = 0; i < n; i++) {
        assert(v[i]);
        size_t len = lens ? lens[i] : strlen(v[i]);
        if (__builtin_add_overflow(payload, 8 + len, &payload)) return MC_ERR_ARG;
    }
    mc_err_t rc = s_kv_begin(w, key, MC_GGUF_ARRAY, payload, false);
    if (rc != MC_OK) return rc;
    s_put_u32(w, MC_GGUF_STRING);
    s_put_u64(w, n);
    for (size_t i = 0; i < n; i++) s_put_str(w, v[i], lens ? lens[i] : strlen(v[i]));
    return MC_OK;
}

static mc_err_t s_add_arr_num(mc_gguf_writer_t *w, const char *key, mc_gguf_vtype_t elem,
                              const void *v, size_t n) {
    assert(v || n == 0);
    size_t bytes;
    if (__builtin_mul_overflow(n, (size_t)4, &bytes) || bytes > SIZE_MAX - 12) return MC_ERR_ARG;
    mc_err_t rc = s_kv_begin(w, key, MC_GGUF_ARRAY, 4 + 8 + bytes, false);
    if (rc != MC_OK) return rc;
    s_put_u32(w, elem);
    s_put_u64(w, n);
    if (bytes) s_put(w, v, bytes);
    return MC_OK;
}

mc_err_t mc_gguf_writer_add_arr_f32(mc_gguf_writer_t *w, const char *key, const float *v, size_t n) {
    return s_add_arr_num(w, key, MC_GGUF_F32, v, n);
}

mc_err_t mc_gguf_writer_add_arr_i32(mc_gguf_writer_t *w, const char *key, const int32_t *v, size_t n) {
    return s_add_arr_num(w, key, MC_GGUF_I32, v, n);
}

mc_err_t mc_gguf_writer_add_value(mc_gguf_writer_t *w, const char *key, const mc_gguf_value_t *v) {
    switch (v->type) {
    case MC_GGUF_U8: case MC_GGUF_I8: case MC_GGUF_BOOL: {
        const uint8_t b = (uint8_t)(v->type == MC_GGUF_I8 ? (uint64_t)v->i : v->u);
        return s_add_scalar(w, key, v->type, &b, 1, false);
    }
    case MC_GGUF_U16: case MC_GGUF_I16: {
        const uint16_t h = (uint16_t)(v->type == MC_GGUF_I16 ? (uint64_t)v->i : v->u);
        return s_add_scalar(w, key, v->type, &h, 2, false);
    }
    case MC_GGUF_U32: case MC_GGUF_I32: {
        const uint32_t x = (uint32_t)(v->type == MC_GGUF_I32 ? (uint64_t)v->i : v->u);
        return s_add_scalar(w, key, v->type, &x, 4, false);
    }
    case MC_GGUF_U64: case MC_GGUF_I64: {
        const uint64_t x = v->type == MC_GGUF_I64 ? (uint64_t)v->i : v->u;
        return s_add_scalar(w, key, v->type, &x, 8, false);
    }
    case MC_GGUF_F32: {
        const float f = (float)v->f;
        return s_add_scalar(w, key, v->type, &f, 4, false);
    }
    case MC_GGUF_F64: return s_add_scalar(w, key, v->type, &v->f, 8, false);
    case MC_GGUF_STRING: {
        mc_err_t rc = s_kv_begin(w, key, MC_GGUF_STRING, 8 + (size_t)v->str.len, false);
        if (rc == MC_OK) s_put_str(w, v->str.ptr, (size_t)v->str.len);
        return rc;
    }
    case MC_GGUF_ARRAY: break;
    default: return MC_ERR_UNSUPPORTED;
    }
    const uint64_t n = v->arr.count;
    size_t payload = 4 + 8;
    if (v->arr.elem_type == MC_GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++)
            if (__builtin_add_overflow(payload, 8 + (size_t)v->arr.strings[i].len, &payload)) return MC_ERR_ARG;
    } else {
        static const uint8_t size[] = {[MC_GGUF_U8] = 1, [MC_GGUF_I8] = 1, [MC_GGUF_U16] = 2, [MC_GGUF_I16] = 2,
                                       [MC_GGUF_U32] = 4, [MC_GGUF_I32] = 4, [MC_GGUF_F32] = 4, [MC_GGUF_BOOL] = 1,
                                       [MC_GGUF_U64] = 8, [MC_GGUF_I64] = 8, [MC_GGUF_F64] = 8};
        const unsigned t = v->arr.elem_type;
        if (t >= sizeof size || !size[t]) return MC_ERR_UNSUPPORTED; // arrays of arrays
        size_t bytes;
        if (__builtin_mul_overflow((size_t)n, (size_t)size[t], &bytes) ||
            __builtin_add_overflow(payload, bytes, &payload))
            return MC_ERR_ARG;
        mc_err_t rc = s_kv_begin(w, key, MC_GGUF_ARRAY, payload, false);
        if (rc != MC_OK) return rc;
        s_put_u32(w, t);
        s_put_u64(w, n);
        if (bytes) s_put(w, v->arr.data, bytes); // packed little-endian, as in the file read
        return MC_OK;
    }
    mc_err_t rc = s_kv_begin(w, key, MC_GGUF_ARRAY, payload, false);
    if (rc != MC_OK) return rc;
    s_put_u32(w, MC_GGUF_STRING);
    s_put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) s_put_str(w, v->arr.strings[i].ptr, (size_t)v->arr.strings[i].len);
    return MC_OK;
}

mc_err_t mc_gguf_writer_add_tensor(mc_gguf_writer_t *w, const char *name, mc_dtype_t type,
                                   uint32_t n_dims, const uint64_t *ne) {
    assert(w && name && ne);
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > MC_GGUF_MAX_NAME) return MC_ERR_ARG;
    if (n_dims < 1 || n_dims > MC_GGUF_MAX_DIMS) return MC_ERR_ARG;
    const mc_dtype_traits_t *tr = mc_dtype_traits(type);
    if (!tr || !tr->weight) return MC_ERR_ARG;
    if (ne[0] % tr->block_elems) return MC_ERR_ARG;
    s_tensor_t t = {.n_dims = n_dims, .type = type, .ne = {1, 1, 1, 1}};
    uint64_t n_elems = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] == 0 || __builtin_mul_overflow(n_elems, ne[i], &n_elems)) return MC_ERR_ARG;
        t.ne[i] = ne[i];
    }
    // ggml counts elements in int64_t, and the padded size must fit the offsets.
    if (n_elems > INT64_MAX || __builtin_mul_overflow(n_elems / tr->block_elems,
                                                      (uint64_t)tr->block_bytes, &t.size))
        return MC_ERR_ARG;
    uint64_t end;
    if (__builtin_add_overflow(w->data_size, t.size, &end) ||
        __builtin_add_overflow(end, s_pad(end, w->alignment), &end) || end > INT64_MAX)
        return MC_ERR_ARG;
    if (s_strset_has(&w->names, name)) return MC_ERR_ARG;
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        s_tensor_t *ts = reallocarray(w->tensors, cap, sizeof *ts);
        if (!ts) return MC_ERR_NOMEM;
        w->tensors = ts;
        w->tensors_cap = cap;
    }
    t.name = s_strset_add(&w->names, name);
    if (!t.name) return MC_ERR_NOMEM;
    t.offset = w->data_size;
    w->data_size = end;
    w->tensors[w->n_tensors++] = t;
    return MC_OK;
}

// ---- output ----

static mc_err_t s_sink_put(s_sink_t *s, const void *p, size_t n, char *err) {
    if (n == 0) return MC_OK;
    if (s->f) {
        if (fwrite(p, 1, n, s->f) != n)
            return mc_err_set(err, MC_ERR_IO, "gguf write failed: %s", strerror(errno));
    } else {
        assert(s->pos + n <= s->cap);
        memcpy(s->mem + s->pos, p, n);
    }
    s->pos += n;
    return MC_OK;
}

static mc_err_t s_sink_u32(s_sink_t *s, uint32_t v, char *err) { return s_sink_put(s, &v, 4, err); }
static mc_err_t s_sink_u64(s_sink_t *s, uint64_t v, char *err) { return s_sink_put(s, &v, 8, err); }

static mc_err_t s_sink_pad(s_sink_t *s, uint32_t alignment, char *err) {
    static const uint8_t zeros[4096];
    uint64_t n = s_pad(s->pos, alignment);
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        mc_err_t rc = s_sink_put(s, zeros, k, err);
        if (rc != MC_OK) return rc;
        n -= k;
    }
    return MC_OK;
}

// Bytes before the data section (header, key/values, tensor table, padding).
static uint64_t s_data_start(const mc_gguf_writer_t *w) {
    uint64_t n = 4 + 4 + 8 + 8 + w->kv_len;
    for (size_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8 * (uint64_t)w->tensors[i].n_dims + 4 + 8;
    return n + s_pad(n, w->alignment);
}

// The header, metadata, tensor table and padding (everything before the data).
static mc_err_t s_write_head(const mc_gguf_writer_t *w, s_sink_t *s, uint64_t *max_size, char *err) {
    mc_err_t rc;
    if ((rc = s_sink_u32(s, MC_GGUF_MAGIC, err)) || (rc = s_sink_u32(s, MC_GGUF_VERSION, err)) ||
        (rc = s_sink_u64(s, w->n_tensors, err)) || (rc = s_sink_u64(s, w->n_kv, err)) ||
        (rc = s_sink_put(s, w->kv, w->kv_len, err)))
        return rc;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const s_tensor_t *t = &w->tensors[i];
        size_t nlen = strlen(t->name);
        if ((rc = s_sink_u64(s, nlen, err)) || (rc = s_sink_put(s, t->name, nlen, err)) ||
            (rc = s_sink_u32(s, t->n_dims, err)) ||
            (rc = s_sink_put(s, t->ne, 8 * (size_t)t->n_dims, err)) ||
            (rc = s_sink_u32(s, t->type, err)) || (rc = s_sink_u64(s, t->offset, err)))
            return rc;
        if (t->size > *max_size) *max_size = t->size;
    }
    return s_sink_pad(s, w->alignment, err);
}

uint64_t mc_gguf_writer_file_bytes(const mc_gguf_writer_t *w) { return s_data_start(w) + w->data_size; }

uint64_t mc_gguf_writer_tensor_offset(const mc_gguf_writer_t *w, size_t index) {
    assert(index < w->n_tensors);
    return s_data_start(w) + w->tensors[index].offset;
}

mc_err_t mc_gguf_writer_header(const mc_gguf_writer_t *w, uint8_t **out, size_t *len, char *err) {
    const uint64_t n = s_data_start(w);
    if (n > SIZE_MAX) return mc_err_set(err, MC_ERR_NOMEM, "gguf header of %llu bytes", (unsigned long long)n);
    s_sink_t s = {.mem = malloc(n ? (size_t)n : 1), .cap = (size_t)n};
    if (!s.mem) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    uint64_t max_size = 0;
    mc_err_t rc = s_write_head(w, &s, &max_size, err);
    if (rc) {
        free(s.mem);
        return rc;
    }
    assert(s.pos == n);
    *out = s.mem;
    *len = (size_t)n;
    return MC_OK;
}

static mc_err_t s_write(const mc_gguf_writer_t *w, s_sink_t *s, mc_gguf_fill_fn fill, void *ctx,
                        char *err) {
    uint64_t max_size = 0;
    mc_err_t rc = s_write_head(w, s, &max_size, err);
    if (rc) return rc;
    if (max_size > SIZE_MAX)
        return mc_err_set(err, MC_ERR_NOMEM, "gguf write: tensor of %llu bytes does not fit memory",
                          (unsigned long long)max_size);
    // calloc: bytes a misbehaving fill leaves unwritten are still deterministic.
    uint8_t *buf = calloc(max_size ? (size_t)max_size : 1, 1);
    if (!buf)
        return mc_err_set(err, MC_ERR_NOMEM, "gguf write: cannot allocate %llu bytes",
                          (unsigned long long)max_size);
    uint64_t data_start = s->pos;
    (void)data_start; // only read by the assert below
    for (size_t i = 0; i < w->n_tensors && rc == MC_OK; i++) {
        const s_tensor_t *t = &w->tensors[i];
        assert(s->pos == data_start + t->offset);
        char ferr[MC_ERR_LEN] = "";
        rc = fill(ctx, i, buf, (size_t)t->size, ferr);
        if (rc != MC_OK)
            mc_err_set(err, rc, "gguf write: tensor '%s': %s", t->name, ferr[0] ? ferr : mc_err_name(rc));
        else if ((rc = s_sink_put(s, buf, (size_t)t->size, err)) == MC_OK)
            rc = s_sink_pad(s, w->alignment, err);
    }
    free(buf);
    return rc;
}

mc_err_t mc_gguf_writer_write_mem(mc_gguf_writer_t *w, mc_gguf_fill_fn fill, void *ctx,
                                  uint8_t **out, size_t *out_len, char *err) {
    assert(w && fill && out && out_len);
    uint64_t total = s_data_start(w) + w->data_size; // data_size <= INT64_MAX, header small
    if (total > SIZE_MAX)
        return mc_err_set(err, MC_ERR_NOMEM, "gguf write: %llu bytes do not fit memory",
                          (unsigned long long)total);
    s_sink_t s = {.mem = malloc((size_t)total), .cap = (size_t)total};
    if (!s.mem)
        return mc_err_set(err, MC_ERR_NOMEM, "gguf write: cannot allocate %llu bytes",
                          (unsigned long long)total);
    mc_err_t rc = s_write(w, &s, fill, ctx, err);
    if (rc != MC_OK) {
        free(s.mem);
        return rc;
    }
    assert(s.pos == total);
    *out = s.mem;
    *out_len = (size_t)total;
    return MC_OK;
}

mc_err_t mc_gguf_writer_write_file(mc_gguf_writer_t *w, const char *path, mc_gguf_fill_fn fill,
                                   void *ctx, char *err) {
    assert(w && path && fill);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return mc_err_set(err, MC_ERR_NOMEM, "gguf write: out of memory");
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    s_sink_t s = {.f = fopen(tmp, "wb")};
    if (!s.f) {
        mc_err_t rc = mc_err_set(err, MC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    mc_err_t rc = s_write(w, &s, fill, ctx, err);
    // fsync before rename: otherwise a crash could leave the final name
    // pointing at a file whose data never reached the disk.
    if (rc == MC_OK && (fflush(s.f) != 0 || fsync(fileno(s.f)) != 0))
        rc = mc_err_set(err, MC_ERR_IO, "writing '%s' failed: %s", tmp, strerror(errno));
    if (fclose(s.f) != 0 && rc == MC_OK)
        rc = mc_err_set(err, MC_ERR_IO, "closing '%s' failed: %s", tmp, strerror(errno));
    if (rc == MC_OK && rename(tmp, path) != 0)
        rc = mc_err_set(err, MC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (rc != MC_OK) unlink(tmp);
    free(tmp);
    return rc;
}
