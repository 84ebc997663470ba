/*
 * gguf: reader for GGUF model files, versions 2 and 3.
 *
 * mc_gguf_parse() indexes a byte buffer that the caller keeps alive (the
 * metadata and tensor data are not copied; strings and arrays point into the
 * buffer); mc_gguf_open() maps a file read-only and parses it. Every count,
 * length, offset and shape is treated as hostile and checked against the
 * buffer before use, so a damaged or malicious file yields a clear error
 * message rather than a crash.
 *
 * Host byte order must be little-endian (x86-64, aarch64), like the files.
 */
#ifndef MC_GGUF_H
#define MC_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define MC_GGUF_MAGIC 0x46554747u // "GGUF" read as a little-endian u32
#define MC_GGUF_DEFAULT_ALIGNMENT 32u
#define MC_GGUF_MAX_DIMS 4

typedef enum {
    MC_GGUF_U8 = 0,
    MC_GGUF_I8 = 1,
    MC_GGUF_U16 = 2,
    MC_GGUF_I16 = 3,
    MC_GGUF_U32 = 4,
    MC_GGUF_I32 = 5,
    MC_GGUF_F32 = 6,
    MC_GGUF_BOOL = 7,
    MC_GGUF_STRING = 8,
    MC_GGUF_ARRAY = 9,
    MC_GGUF_U64 = 10,
    MC_GGUF_I64 = 11,
    MC_GGUF_F64 = 12,
} mc_gguf_vtype_t;

typedef struct mc_gguf_value mc_gguf_value_t;

// A length-delimited string inside the buffer (not NUL-terminated).
typedef struct {
    const char *ptr;
    uint64_t len;
} mc_gguf_str_t;

struct mc_gguf_value {
    mc_gguf_vtype_t type;
    union {
        uint64_t u;        // U8, U16, U32, U64, BOOL (0/1)
        int64_t i;         // I8, I16, I32, I64
        double f;          // F32, F64
        mc_gguf_str_t str; // STRING
        struct {
            mc_gguf_vtype_t elem_type;
            uint64_t count;
            const void *data;             // numeric/bool elements: packed LE values in the buffer
            const mc_gguf_str_t *strings; // STRING elements: count entries, else NULL
            const mc_gguf_value_t *items; // ARRAY elements (nested): count entries, else NULL
        } arr;
    };
};

typedef struct {
    const char *key; // NUL-terminated copy owned by mc_gguf_t
    mc_gguf_value_t value;
} mc_gguf_kv_t;

typedef struct {
    const char *name; // NUL-terminated copy owned by mc_gguf_t
    uint32_t n_dims;
    uint64_t ne[MC_GGUF_MAX_DIMS]; // ne[0] contiguous; unused dims are 1
    mc_dtype_t type;
    uint64_t offset;     // relative to the data section
    uint64_t n_elems;    // product of ne
    uint64_t size;       // bytes
    const uint8_t *data; // buffer + data_offset + offset
} mc_gguf_tensor_t;

typedef struct mc_gguf mc_gguf_t;

// Index buf[0..len). The buffer must outlive the result. NULL on failure
// with a message in err (MC_ERR_LEN bytes, may be NULL).
mc_gguf_t *mc_gguf_parse(const void *buf, size_t len, char *err);

// Map path read-only and parse it; the mapping is owned by the result.
mc_gguf_t *mc_gguf_open(const char *path, char *err);

// Unmap (if opened) and free; sets *g to NULL; safe on NULL or twice.
void mc_gguf_destroy(mc_gguf_t **g);

uint32_t mc_gguf_version(const mc_gguf_t *g);
uint32_t mc_gguf_alignment(const mc_gguf_t *g);
uint64_t mc_gguf_data_offset(const mc_gguf_t *g); // start of the tensor data section
const uint8_t *mc_gguf_base(const mc_gguf_t *g);  // start of the buffer / mapping
size_t mc_gguf_size(const mc_gguf_t *g);          // bytes of the buffer / mapping
bool mc_gguf_mapped(const mc_gguf_t *g);          // the buffer is mc_gguf_open's read-only file mapping

size_t mc_gguf_kv_count(const mc_gguf_t *g);
const mc_gguf_kv_t *mc_gguf_kv_at(const mc_gguf_t *g, size_t i);
const mc_gguf_value_t *mc_gguf_find(const mc_gguf_t *g, const char *key); // NULL if absent

size_t mc_gguf_tensor_count(const mc_gguf_t *g);
const mc_gguf_tensor_t *mc_gguf_tensor_at(const mc_gguf_t *g, size_t i);
const mc_gguf_tensor_t *mc_gguf_tensor_find(const mc_gguf_t *g, const char *name);

// Typed look-ups. Each returns false (and leaves *out untouched) when the key
// is absent or its value cannot represent the request: get_u64 accepts any
// integer type holding a non-negative value (and BOOL); get_i64 any integer
// that fits; get_f64 any integer or float; get_str only STRING; get_bool BOOL
// or an integer 0/1.
bool mc_gguf_get_u64(const mc_gguf_t *g, const char *key, uint64_t *out);
bool mc_gguf_get_i64(const mc_gguf_t *g, const char *key, int64_t *out);
bool mc_gguf_get_f64(const mc_gguf_t *g, const char *key, double *out);
bool mc_gguf_get_bool(const mc_gguf_t *g, const char *key, bool *out);
bool mc_gguf_get_str(const mc_gguf_t *g, const char *key, mc_gguf_str_t *out);

// Element i of a numeric array value as double / int64; false when v is not
// an array, i is out of range or the element type is not numeric.
bool mc_gguf_arr_f64(const mc_gguf_value_t *v, uint64_t i, double *out);
bool mc_gguf_arr_i64(const mc_gguf_value_t *v, uint64_t i, int64_t *out);

// Name of a value type ("u32", "string", "array"...).
const char *mc_gguf_vtype_name(uint32_t t);

#endif
