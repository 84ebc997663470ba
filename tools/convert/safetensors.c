/*
 * safetensors: the header is parsed with cJSON over exactly the N bytes the
 * file declares (never past them), then every entry is checked before any
 * pointer into the data section is formed. Integers arrive as JSON numbers,
 * i.e. doubles: only non-negative whole numbers up to 2^53 are taken, so no
 * value is ever rounded silently. Names are indexed in an open-addressing
 * table (models have tens of thousands of tensors; duplicates must be found
 * without a quadratic scan).
 */
#include "safetensors.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

#define S_MAX_TENSORS (1u << 20)
#define S_MAX_INDEX_BYTES (64u * 1024u * 1024u)
#define S_MAX_SHARDS 1024u // DeepSeek-V3 has 163
#define S_MAX_EXACT 9007199254740992.0 // 2^53: every whole number up to it is a double
#define S_PATH_MAX 4096

// --- name index ---------------------------------------------------------------

// Slots hold item index + 1 (0: empty); names come from the owner's items.
typedef struct {
    size_t *slot;
    size_t cap; // a power of two, at least twice the item count
} s_index_t;

typedef const char *(*s_name_fn)(const void *owner, size_t i);

static uint64_t s_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool s_index_init(s_index_t *ix, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->slot = calloc(cap, sizeof *ix->slot);
    ix->cap = cap;
    return ix->slot != NULL;
}

// Slot of name: where it is, or the empty slot where it would go.
static size_t s_index_slot(const s_index_t *ix, const void *owner, s_name_fn name_at, const char *name) {
    size_t mask = ix->cap - 1, i = (size_t)s_hash(name) & mask;
    while (ix->slot[i] && strcmp(name_at(owner, ix->slot[i] - 1), name) != 0) i = (i + 1) & mask;
    return i;
}

// Add item i; false (and *dup = the earlier item) when its name is taken.
static bool s_index_add(s_index_t *ix, const void *owner, s_name_fn name_at, size_t i, size_t *dup) {
    size_t s = s_index_slot(ix, owner, name_at, name_at(owner, i));
    if (ix->slot[s]) {
        *dup = ix->slot[s] - 1;
        return false;
    }
    ix->slot[s] = i + 1;
    return true;
}

static size_t s_index_find(const s_index_t *ix, const void *owner, s_name_fn name_at, const char *name) {
    if (!ix->slot) return SIZE_MAX;
    size_t s = s_index_slot(ix, owner, name_at, name);
    return ix->slot[s] ? ix->slot[s] - 1 : SIZE_MAX;
}

// --- one file -------------------------------------------------------------------

struct mc_safetensors {
    const uint8_t *base;
    size_t size;
    bool mapped; // base came from mmap in mc_safetensors_open
    mc_safetensors_tensor_t *tensors;
    size_t n;
    s_index_t index;
};

static const char *s_file_name_at(const void *owner, size_t i) {
    return ((const mc_safetensors_t *)owner)->tensors[i].name;
}

size_t mc_safetensors_dtype_size(mc_dtype_t t) {
    if (t == MC_SAFETENSORS_U8) return 1;
    switch (t) {
    case MC_DTYPE_F32: return 4;
    case MC_DTYPE_F16:
    case MC_DTYPE_BF16: return 2;
    default: return 0;
    }
}

// The dtype strings of the format; only the first four are supported.
static const struct {
    const char *name;
    mc_dtype_t type;
    bool ok;
} s_dtypes[] = {
    {"F32", MC_DTYPE_F32, true},   {"F16", MC_DTYPE_F16, true},   {"BF16", MC_DTYPE_BF16, true},
    {"U8", MC_SAFETENSORS_U8, true},
    {"F64", MC_DTYPE_F32, false},  {"I64", MC_DTYPE_F32, false},  {"I32", MC_DTYPE_F32, false},
    {"I16", MC_DTYPE_F32, false},  {"I8", MC_DTYPE_F32, false},   {"U64", MC_DTYPE_F32, false},
    {"U32", MC_DTYPE_F32, false},  {"U16", MC_DTYPE_F32, false},
    {"BOOL", MC_DTYPE_F32, false}, {"F8_E4M3", MC_DTYPE_F32, false}, {"F8_E5M2", MC_DTYPE_F32, false},
};

static const char *s_dtype_str(mc_dtype_t t) {
    for (size_t i = 0; i < sizeof s_dtypes / sizeof s_dtypes[0]; i++)
        if (s_dtypes[i].ok && s_dtypes[i].type == t) return s_dtypes[i].name;
    return NULL;
}

// A JSON number that is a whole number in 0..2^53.
static bool s_json_u64(const cJSON *v, uint64_t *out, bool *negative) {
    *negative = false;
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (d < 0) {
        *negative = true;
        return false;
    }
    if (!(d <= S_MAX_EXACT) || (double)(uint64_t)d != d) return false;
    *out = (uint64_t)d;
    return true;
}

// Validate one tensor entry of the header into *t (name set by the caller).
static mc_err_t s_parse_entry(const cJSON *e, uint64_t data_size, mc_safetensors_tensor_t *t, char *err) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: entry '%.80s' is not an object", name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dtype || !shape || !offs)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s' lacks '%s'", name,
                          !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype))
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': dtype is not a string", name);
    bool known = false;
    for (size_t i = 0; i < sizeof s_dtypes / sizeof s_dtypes[0]; i++) {
        if (strcmp(dtype->valuestring, s_dtypes[i].name) != 0) continue;
        known = true;
        if (!s_dtypes[i].ok)
            return mc_err_set(err, MC_ERR_UNSUPPORTED,
                              "safetensors: tensor '%.80s' has dtype %s, which is not supported (BF16, F16, F32 and U8 are)",
                              name, s_dtypes[i].name);
        t->dtype = s_dtypes[i].type;
    }
    if (!known)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s' has an unknown dtype '%.32s'", name,
                          dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': shape is not an array", name);
    uint64_t n_elems = 1;
    uint32_t nd = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        if (nd == MC_SAFETENSORS_MAX_DIMS)
            return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s' has more than %u dimensions", name,
                              MC_SAFETENSORS_MAX_DIMS);
        uint64_t v;
        bool neg;
        if (!s_json_u64(d, &v, &neg))
            return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': dimension %u is %s", name, nd,
                              neg ? "negative" : "not a whole number in range");
        // Checked against the data section below; the cap keeps the product in 64 bits.
        if (v != 0 && n_elems > (UINT64_MAX / 8) / v)
            return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': element count overflows", name);
        n_elems *= v;
        t->shape[nd++] = v;
    }
    t->n_dims = nd;
    t->n_elems = n_elems;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': data_offsets is not a pair [begin, end]",
                          name);
    uint64_t begin, end;
    bool neg0, neg1;
    if (!s_json_u64(cJSON_GetArrayItem(offs, 0), &begin, &neg0) ||
        !s_json_u64(cJSON_GetArrayItem(offs, 1), &end, &neg1))
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s': data_offsets are not whole numbers in range",
                          name);
    if (begin > end || end > data_size)
        return mc_err_set(err, MC_ERR_FORMAT,
                          "safetensors: tensor '%.80s': data_offsets [%llu, %llu] outside the data section (%llu bytes)",
                          name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
    uint64_t size = n_elems * mc_safetensors_dtype_size(t->dtype);
    if (end - begin != size)
        return mc_err_set(err, MC_ERR_FORMAT,
                          "safetensors: tensor '%.80s': data_offsets span %llu bytes but its shape and dtype need %llu",
                          name, (unsigned long long)(end - begin), (unsigned long long)size);
    t->offset = begin;
    t->size = size;
    return MC_OK;
}

typedef struct {
    uint64_t begin, end;
    size_t i;
} s_span_t;

static int s_span_cmp(const void *a, const void *b) {
    const s_span_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static mc_err_t s_check_overlap(const mc_safetensors_t *st, char *err) {
    if (st->n < 2) return MC_OK;
    s_span_t *s = malloc(st->n * sizeof *s);
    if (!s) return mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    size_t m = 0;
    for (size_t i = 0; i < st->n; i++)
        if (st->tensors[i].size) // empty tensors take no bytes and overlap nothing
            s[m++] = (s_span_t){st->tensors[i].offset, st->tensors[i].offset + st->tensors[i].size, i};
    qsort(s, m, sizeof *s, s_span_cmp);
    mc_err_t rc = MC_OK;
    for (size_t k = 1; k < m && rc == MC_OK; k++)
        if (s[k].begin < s[k - 1].end)
            rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensors '%.80s' and '%.80s' overlap in the data section",
                            st->tensors[s[k - 1].i].name, st->tensors[s[k].i].name);
    free(s);
    return rc;
}

static mc_err_t s_check_metadata(const cJSON *m, char *err) {
    if (!cJSON_IsObject(m)) return mc_err_set(err, MC_ERR_FORMAT, "safetensors: __metadata__ is not an object");
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        if (!cJSON_IsString(v))
            return mc_err_set(err, MC_ERR_FORMAT, "safetensors: __metadata__ value '%.80s' is not a string",
                              v->string ? v->string : "");
    }
    return MC_OK;
}

static mc_err_t s_parse_header(mc_safetensors_t *st, char *err) {
    const uint8_t *buf = st->base;
    size_t len = st->size;
    if (len < 8)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: file of %zu bytes is too short for the header length",
                          len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > len - 8)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: header length %llu goes beyond the file (%zu bytes)",
                          (unsigned long long)n, len);
    if (n > MC_SAFETENSORS_MAX_HEADER)
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: header length %llu is over the %u-byte limit",
                          (unsigned long long)n, MC_SAFETENSORS_MAX_HEADER);
    if (n < 2 || buf[8] != '{')
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: the header is not a JSON object");
    const char *json = (const char *)buf + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + n ? (size_t)(end - json) : 0;
        return mc_err_set(err, MC_ERR_FORMAT, "safetensors: the header is not valid JSON (near byte %zu of %llu)", at,
                          (unsigned long long)n);
    }
    mc_err_t rc = MC_OK;
    // The format pads the header with spaces up to its declared length.
    for (const char *p = end; p && p < json + n && rc == MC_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: text after the JSON header object");
    if (rc == MC_OK && !cJSON_IsObject(root))
        rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: the header is not a JSON object");
    size_t count = 0;
    const cJSON *e;
    if (rc == MC_OK) {
        cJSON_ArrayForEach(e, root) count++;
        if (count > S_MAX_TENSORS)
            rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: more than %u header entries", S_MAX_TENSORS);
    }
    if (rc == MC_OK) {
        st->tensors = calloc(count ? count : 1, sizeof *st->tensors);
        if (!st->tensors || !s_index_init(&st->index, count))
            rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    }
    const uint64_t data_start = 8 + n, data_size = len - data_start;
    bool seen_meta = false;
    for (e = root ? root->child : NULL; e && rc == MC_OK; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (seen_meta) rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: __metadata__ appears twice");
            else rc = s_check_metadata(e, err);
            seen_meta = true;
            continue;
        }
        mc_safetensors_tensor_t *t = &st->tensors[st->n];
        t->name = strdup(e->string);
        if (!t->name) {
            rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
            break;
        }
        st->n++; // from here the name is freed with the object
        rc = s_parse_entry(e, data_size, t, err);
        size_t dup;
        if (rc == MC_OK && !s_index_add(&st->index, st, s_file_name_at, st->n - 1, &dup))
            rc = mc_err_set(err, MC_ERR_FORMAT, "safetensors: tensor '%.80s' appears twice in the header", t->name);
        t->data = buf + data_start + t->offset;
    }
    cJSON_Delete(root);
    if (rc == MC_OK) rc = s_check_overlap(st, err);
    return rc;
}

mc_safetensors_t *mc_safetensors_parse(const void *buf, size_t len, char *err) {
    mc_safetensors_t *st = calloc(1, sizeof *st);
    if (!st) {
        mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
        return NULL;
    }
    st->base = buf;
    st->size = len;
    if (!buf && len) {
        mc_err_set(err, MC_ERR_ARG, "safetensors: no buffer");
        free(st);
        return NULL;
    }
    if (s_parse_header(st, err) != MC_OK) mc_safetensors_destroy(&st);
    return st;
}

mc_safetensors_t *mc_safetensors_open(const char *path, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    mc_err_t rc = MC_OK;
    if (fstat(fd, &sb) != 0) rc = mc_err_set(err, MC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) rc = mc_err_set(err, MC_ERR_IO, "%s: not a regular file", path);
    else if (sb.st_size <= 0) rc = mc_err_set(err, MC_ERR_FORMAT, "%s: empty file (not a safetensors file)", path);
    else if ((uint64_t)sb.st_size > SIZE_MAX) rc = mc_err_set(err, MC_ERR_IO, "%s: file too large to map", path);
    if (rc != MC_OK) {
        close(fd);
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        mc_err_set(err, MC_ERR_IO, "%s: cannot map: %s", path, strerror(map_errno));
        return NULL;
    }
    char perr[MC_ERR_LEN] = "";
    mc_safetensors_t *st = mc_safetensors_parse(map, size, perr);
    if (!st) {
        mc_err_set(err, MC_ERR_FORMAT, "%s: %s", path, perr);
        munmap(map, size);
        return NULL;
    }
    st->mapped = true;
    return st;
}

void mc_safetensors_destroy(mc_safetensors_t **pst) {
    if (!pst || !*pst) return;
    mc_safetensors_t *st = *pst;
    for (size_t i = 0; i < st->n; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    free(st->index.slot);
    if (st->mapped) munmap((void *)st->base, st->size);
    free(st);
    *pst = NULL;
}

size_t mc_safetensors_count(const mc_safetensors_t *st) { return st->n; }

const mc_safetensors_tensor_t *mc_safetensors_at(const mc_safetensors_t *st, size_t i) {
    return i < st->n ? &st->tensors[i] : NULL;
}

const mc_safetensors_tensor_t *mc_safetensors_find(const mc_safetensors_t *st, const char *name) {
    size_t i = s_index_find(&st->index, st, s_file_name_at, name);
    return i == SIZE_MAX ? NULL : &st->tensors[i];
}

// --- writing ------------------------------------------------------------------------

static mc_err_t s_write_all(FILE *f, const void *p, size_t n, const char *path, char *err) {
    if (n && fwrite(p, 1, n, f) != n) return mc_err_set(err, MC_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return MC_OK;
}

mc_err_t mc_safetensors_write(const char *path, const mc_safetensors_desc_t *tensors, size_t n,
                              const char *const *meta_kv, size_t n_meta, char *err) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    mc_err_t rc = MC_OK;
    uint64_t *sizes = calloc(n ? n : 1, sizeof *sizes);
    if (!sizes) rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    if (rc == MC_OK && n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta_kv[2 * i], meta_kv[2 * i + 1])) m = NULL;
        if (!m) rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n && rc == MC_OK; i++) {
        const mc_safetensors_desc_t *t = &tensors[i];
        const char *ds = s_dtype_str(t->dtype);
        if (!ds || t->n_dims > MC_SAFETENSORS_MAX_DIMS || !t->name) {
            rc = mc_err_set(err, MC_ERR_ARG, "safetensors: tensor %zu: bad dtype, rank or name", i);
            break;
        }
        uint64_t ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) ne *= t->shape[d];
        sizes[i] = ne * mc_safetensors_dtype_size(t->dtype);
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        bool ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", ds);
        for (uint32_t d = 0; ok && d < t->n_dims; d++)
            ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        ok = ok && cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off)) &&
             cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + sizes[i])));
        if (!ok) rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
        off += sizes[i];
    }
    char *json = rc == MC_OK ? cJSON_PrintUnformatted(root) : NULL;
    if (rc == MC_OK && !json) rc = mc_err_set(err, MC_ERR_NOMEM, "safetensors: out of memory");
    cJSON_Delete(root);
    FILE *f = NULL;
    if (rc == MC_OK && !(f = fopen(path, "wb")))
        rc = mc_err_set(err, MC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (rc == MC_OK) {
        // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
        size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
        uint8_t hl[8];
        for (int i = 0; i < 8; i++) hl[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        rc = s_write_all(f, hl, 8, path, err);
        if (rc == MC_OK) rc = s_write_all(f, json, jl, path, err);
        for (size_t i = jl; i < padded && rc == MC_OK; i++) rc = s_write_all(f, " ", 1, path, err);
        for (size_t i = 0; i < n && rc == MC_OK; i++) rc = s_write_all(f, tensors[i].data, sizes[i], path, err);
    }
    if (f && fclose(f) != 0 && rc == MC_OK) rc = mc_err_set(err, MC_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    free(json);
    free(sizes);
    return rc;
}

// --- a model folder -----------------------------------------------------------------

struct mc_safetensors_dir {
    mc_safetensors_t **shards;
    size_t n_shards;
    const mc_safetensors_tensor_t **all; // every tensor of every shard
    size_t *shard_of;                    // the shard each came from
    size_t n;
    s_index_t index;
};

static const char *s_dir_name_at(const void *owner, size_t i) {
    return ((const mc_safetensors_dir_t *)owner)->all[i]->name;
}

static mc_err_t s_join(char *out, const char *dir, const char *name, char *err) {
    int k = snprintf(out, S_PATH_MAX, "%s/%s", dir, name);
    if (k < 0 || k >= S_PATH_MAX) return mc_err_set(err, MC_ERR_ARG, "%s/%s: path too long", dir, name);
    return MC_OK;
}

// A plain file name inside the folder: no separator, no parent or self link.
static bool s_plain_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255 || !strcmp(s, ".") || !strcmp(s, "..")) return false;
    return !strchr(s, '/') && !strchr(s, '\\');
}

static mc_err_t s_dir_add_shard(mc_safetensors_dir_t *d, const char *dir, const char *file, char *err) {
    char path[S_PATH_MAX];
    mc_err_t rc = s_join(path, dir, file, err);
    if (rc) return rc;
    mc_safetensors_t **sh = realloc(d->shards, (d->n_shards + 1) * sizeof *sh);
    if (!sh) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    d->shards = sh;
    d->shards[d->n_shards] = mc_safetensors_open(path, err);
    if (!d->shards[d->n_shards]) return mc_err_code(err, MC_ERR_FORMAT);
    d->n_shards++;
    return MC_OK;
}

// Index all tensors of all shards; a name in two shards is an error.
static mc_err_t s_dir_index(mc_safetensors_dir_t *d, char *err) {
    size_t total = 0;
    for (size_t s = 0; s < d->n_shards; s++) total += mc_safetensors_count(d->shards[s]);
    d->all = malloc((total ? total : 1) * sizeof *d->all);
    d->shard_of = malloc((total ? total : 1) * sizeof *d->shard_of);
    if (!d->all || !d->shard_of || !s_index_init(&d->index, total))
        return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    for (size_t s = 0; s < d->n_shards; s++) {
        for (size_t i = 0; i < mc_safetensors_count(d->shards[s]); i++) {
            d->all[d->n] = mc_safetensors_at(d->shards[s], i);
            d->shard_of[d->n] = s;
            size_t dup;
            if (!s_index_add(&d->index, d, s_dir_name_at, d->n, &dup))
                return mc_err_set(err, MC_ERR_FORMAT, "tensor '%.80s' is in two shard files", d->all[d->n]->name);
            d->n++;
        }
    }
    return MC_OK;
}

static mc_err_t s_dir_from_index(mc_safetensors_dir_t *d, const char *dir, const char *index_path, char *err) {
    char *text = NULL;
    size_t len = 0;
    mc_err_t rc = mc_file_read(index_path, S_MAX_INDEX_BYTES, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root || !cJSON_IsObject(root) || !cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return mc_err_set(err, MC_ERR_FORMAT, "%s: not a JSON object with a \"weight_map\" object", index_path);
    }
    // Shard files in order of first mention, and each entry's shard number
    // (entries come grouped by shard in practice: the last match is tried first).
    const char **files = NULL;
    size_t n_files = 0, n_entries = 0, last = 0, *entry_file = NULL, cap_entries = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (n_entries == cap_entries) {
            size_t cap = cap_entries ? 2 * cap_entries : 1024;
            size_t *ef = realloc(entry_file, cap * sizeof *ef);
            if (!ef) {
                rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
                break;
            }
            entry_file = ef;
            cap_entries = cap;
        }
        n_entries++;
        if (!cJSON_IsString(e)) {
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: weight_map entry '%.80s' is not a file name", index_path, e->string);
            break;
        }
        if (!s_plain_name(e->valuestring)) {
            rc = mc_err_set(err, MC_ERR_FORMAT,
                            "%s: shard '%.80s' (for '%.80s') is not a plain file name in the model folder", index_path,
                            e->valuestring, e->string);
            break;
        }
        size_t f = last < n_files && !strcmp(files[last], e->valuestring) ? last : 0;
        while (f < n_files && strcmp(files[f], e->valuestring) != 0) f++;
        entry_file[n_entries - 1] = last = f;
        if (f < n_files) continue;
        if (n_files == S_MAX_SHARDS) {
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: more than %u shard files", index_path, S_MAX_SHARDS);
            break;
        }
        const char **nf = realloc(files, (n_files + 1) * sizeof *nf);
        if (!nf) {
            rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
            break;
        }
        files = nf;
        files[n_files++] = e->valuestring;
    }
    if (rc == MC_OK && n_entries == 0) rc = mc_err_set(err, MC_ERR_FORMAT, "%s: the weight_map is empty", index_path);
    for (size_t f = 0; f < n_files && rc == MC_OK; f++) rc = s_dir_add_shard(d, dir, files[f], err);
    if (rc == MC_OK) rc = s_dir_index(d, err);
    // Every entry names the shard that holds it, and each tensor is named once:
    // with unique names that makes the index and the shards agree exactly.
    bool *listed = rc == MC_OK ? calloc(d->n ? d->n : 1, sizeof *listed) : NULL;
    if (rc == MC_OK && !listed) rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (e = map->child; e && rc == MC_OK; e = e->next, k++) {
        size_t i = mc_safetensors_dir_find(d, e->string), f = entry_file[k];
        if (i == SIZE_MAX)
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: tensor '%.80s' is not in its shard '%.80s'", index_path, e->string,
                            e->valuestring);
        else if (d->shard_of[i] != f)
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: tensor '%.80s' is listed in '%.80s' but stored in '%.80s'",
                            index_path, e->string, e->valuestring, files[d->shard_of[i]]);
        else if (listed[i])
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: tensor '%.80s' is listed twice", index_path, e->string);
        else
            listed[i] = true;
    }
    for (size_t i = 0; i < d->n && rc == MC_OK; i++)
        if (!listed[i])
            rc = mc_err_set(err, MC_ERR_FORMAT, "%s: tensor '%.80s' of shard '%.80s' is not in the weight_map",
                            index_path, d->all[i]->name, files[d->shard_of[i]]);
    free(listed);
    free(entry_file);
    free(files);
    cJSON_Delete(root);
    return rc;
}

mc_safetensors_dir_t *mc_safetensors_dir_open(const char *dir, char *err) {
    mc_safetensors_dir_t *d = calloc(1, sizeof *d);
    if (!d) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char path[S_PATH_MAX];
    mc_err_t rc = s_join(path, dir, "model.safetensors.index.json", err);
    struct stat sb;
    if (rc == MC_OK && stat(path, &sb) == 0) {
        rc = s_dir_from_index(d, dir, path, err);
    } else if (rc == MC_OK) {
        rc = s_join(path, dir, "model.safetensors", err);
        if (rc == MC_OK && stat(path, &sb) != 0)
            rc = mc_err_set(err, MC_ERR_IO, "%s: no model.safetensors.index.json or model.safetensors", dir);
        if (rc == MC_OK) rc = s_dir_add_shard(d, dir, "model.safetensors", err);
        if (rc == MC_OK) rc = s_dir_index(d, err);
    }
    if (rc != MC_OK) mc_safetensors_dir_destroy(&d);
    return d;
}

void mc_safetensors_dir_destroy(mc_safetensors_dir_t **pd) {
    if (!pd || !*pd) return;
    mc_safetensors_dir_t *d = *pd;
    for (size_t s = 0; s < d->n_shards; s++) mc_safetensors_destroy(&d->shards[s]);
    free(d->shards);
    free(d->all);
    free(d->shard_of);
    free(d->index.slot);
    free(d);
    *pd = NULL;
}

size_t mc_safetensors_dir_count(const mc_safetensors_dir_t *d) { return d->n; }

const mc_safetensors_tensor_t *mc_safetensors_dir_at(const mc_safetensors_dir_t *d, size_t i) {
    return i < d->n ? d->all[i] : NULL;
}

size_t mc_safetensors_dir_find(const mc_safetensors_dir_t *d, const char *name) {
    return s_index_find(&d->index, d, s_dir_name_at, name);
}

size_t mc_safetensors_dir_shards(const mc_safetensors_dir_t *d) { return d->n_shards; }

void mc_safetensors_dir_release(const mc_safetensors_dir_t *d, size_t i) {
    if (i >= d->n) return;
    const mc_safetensors_t *st = d->shards[d->shard_of[i]];
    const mc_safetensors_tensor_t *t = d->all[i];
    if (!st->mapped || !t->size) return;
    // Whole pages around the tensor: a page shared with a neighbour is only
    // read again from the file when the neighbour is used.
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), base = (uintptr_t)st->base;
    uintptr_t lo = (uintptr_t)t->data & ~(page - 1), hi = ((uintptr_t)t->data + t->size + page - 1) & ~(page - 1);
    if (lo < base) lo = base;
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); // advice only: failure changes nothing
}
