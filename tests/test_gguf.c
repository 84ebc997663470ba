/*
 * test_gguf: the GGUF reader on files assembled byte by byte in the test
 * (every value type, nested arrays, custom alignment, several tensor types,
 * versions 2 and 3), on the fixture models, and on hostile input: truncation
 * at every length, broken headers, impossible counts, lengths and shapes,
 * misplaced tensors, duplicates, bad alignment, and random byte corruption.
 * Hostile buffers are copied into allocations of their exact size so that
 * AddressSanitizer catches any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "testutil.h"

// --- byte builder -------------------------------------------------------

typedef struct {
    uint8_t *p;
    size_t len, cap;
} s_buf_t;

static void s_put(s_buf_t *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void s_u8(s_buf_t *b, uint8_t v) {
    s_put(b, &v, 1);
}
static void s_u16(s_buf_t *b, uint16_t v) {
    s_put(b, &v, 2);
}
static void s_u32(s_buf_t *b, uint32_t v) {
    s_put(b, &v, 4);
}
static void s_u64(s_buf_t *b, uint64_t v) {
    s_put(b, &v, 8);
}
static void s_f32(s_buf_t *b, float v) {
    s_put(b, &v, 4);
}
static void s_f64(s_buf_t *b, double v) {
    s_put(b, &v, 8);
}
static void s_strn(s_buf_t *b, const char *s, size_t n) {
    s_u64(b, n);
    s_put(b, s, n);
}
static void s_str(s_buf_t *b, const char *s) {
    s_strn(b, s, strlen(s));
}
static void s_pad(s_buf_t *b, uint32_t align) {
    while (b->len % align) s_u8(b, 0);
}
static void s_patch_u64(s_buf_t *b, size_t at, uint64_t v) {
    memcpy(b->p + at, &v, 8);
}

// A file under construction: metadata, tensor table and data section are
// built separately and framed by s_finish.
typedef struct {
    s_buf_t kv, ti, data;
    uint64_t n_kv, n_tensors;
    uint32_t align; // the data section (and each tensor) is padded to this
} s_file_t;

// Starts a key/value; the caller appends the value to f->kv.
static void s_kv(s_file_t *f, const char *key, uint32_t type) {
    s_str(&f->kv, key);
    s_u32(&f->kv, type);
    f->n_kv++;
}

static void s_info(s_file_t *f, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset) {
    s_str(&f->ti, name);
    s_u32(&f->ti, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) s_u64(&f->ti, ne[d]);
    s_u32(&f->ti, type);
    s_u64(&f->ti, offset);
    f->n_tensors++;
}

// Declares a tensor and appends `size` bytes of `fill` at the next aligned
// offset of the data section.
static void s_tensor(s_file_t *f, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, size_t size,
                     uint8_t fill) {
    s_pad(&f->data, f->align);
    s_info(f, name, n_dims, ne, type, f->data.len);
    for (size_t i = 0; i < size; i++) s_u8(&f->data, fill);
}

// No padding after the last tensor, so any truncation of the result is
// detectably short.
static s_buf_t s_finish(s_file_t *f, uint32_t version) {
    s_buf_t b = {0};
    s_u32(&b, MC_GGUF_MAGIC);
    s_u32(&b, version);
    s_u64(&b, f->n_tensors);
    s_u64(&b, f->n_kv);
    s_put(&b, f->kv.p, f->kv.len);
    s_put(&b, f->ti.p, f->ti.len);
    s_pad(&b, f->align);
    s_put(&b, f->data.p, f->data.len);
    free(f->kv.p);
    free(f->ti.p);
    free(f->data.p);
    memset(f, 0, sizeof *f);
    return b;
}

// Parses an exact-size copy of b; the result must be freed by the caller.
static mc_gguf_t *s_parse_copy(const uint8_t *p, size_t len, uint8_t **copy, char *err) {
    *copy = malloc(len ? len : 1);
    assert_non_null(*copy);
    if (len) memcpy(*copy, p, len);
    return mc_gguf_parse(*copy, len, err);
}

static void s_expect_fail(s_buf_t *b, const char *needle) {
    char err[MC_ERR_LEN] = "";
    uint8_t *copy;
    mc_gguf_t *g = s_parse_copy(b->p, b->len, &copy, err);
    if (g) fail_msg("parse succeeded; expected an error containing '%s'", needle);
    if (!strstr(err, needle)) fail_msg("error '%s' does not contain '%s'", err, needle);
    free(copy);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void s_expect_ok(s_buf_t *b) {
    char err[MC_ERR_LEN] = "";
    uint8_t *copy;
    mc_gguf_t *g = s_parse_copy(b->p, b->len, &copy, err);
    if (!g) fail_msg("parse failed: %s", err);
    mc_gguf_destroy(&g);
    free(copy);
    free(b->p);
    memset(b, 0, sizeof *b);
}

// --- a file with every value type -------------------------------------------

static const struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    mc_dtype_t type;
    size_t size; // bytes, worked out by hand from the block tables
} s_rich_tensors[] = {
    {"w.f32", 2, {4, 3}, MC_DTYPE_F32, 48},
    {"w.q8_0", 2, {64, 2}, MC_DTYPE_Q8_0, 136},
    {"w.q4_k", 3, {256, 1, 2}, MC_DTYPE_Q4_K, 288},
    {"w.q4_0", 4, {32, 2, 1, 3}, MC_DTYPE_Q4_0, 108},
    {"w.f16", 1, {5}, MC_DTYPE_F16, 10},
    {"w.q6_k", 2, {256, 1}, MC_DTYPE_Q6_K, 210},
};
#define S_N_RICH (sizeof s_rich_tensors / sizeof s_rich_tensors[0])

// align 0: no general.alignment key (the default 32 applies).
static s_buf_t s_rich_file(uint32_t version, uint32_t align) {
    s_file_t f = {.align = align ? align : MC_GGUF_DEFAULT_ALIGNMENT};
    s_kv(&f, "general.architecture", MC_GGUF_STRING), s_str(&f.kv, "llama");
    s_kv(&f, "t.u8", MC_GGUF_U8), s_u8(&f.kv, 200);
    s_kv(&f, "t.i8", MC_GGUF_I8), s_u8(&f.kv, (uint8_t)-5);
    s_kv(&f, "t.u16", MC_GGUF_U16), s_u16(&f.kv, 65000);
    s_kv(&f, "t.i16", MC_GGUF_I16), s_u16(&f.kv, (uint16_t)-30000);
    s_kv(&f, "t.u32", MC_GGUF_U32), s_u32(&f.kv, 4000000000u);
    s_kv(&f, "t.i32", MC_GGUF_I32), s_u32(&f.kv, (uint32_t)-2000000000);
    s_kv(&f, "t.f32", MC_GGUF_F32), s_f32(&f.kv, 1.5f);
    s_kv(&f, "t.bool", MC_GGUF_BOOL), s_u8(&f.kv, 1);
    s_kv(&f, "t.u64", MC_GGUF_U64), s_u64(&f.kv, UINT64_MAX);
    s_kv(&f, "t.i64", MC_GGUF_I64), s_u64(&f.kv, (uint64_t)INT64_MIN);
    s_kv(&f, "t.f64", MC_GGUF_F64), s_f64(&f.kv, -2.25);
    s_kv(&f, "t.one", MC_GGUF_U8), s_u8(&f.kv, 1);
    s_kv(&f, "t.str_nul", MC_GGUF_STRING), s_strn(&f.kv, "a\0b", 3);
    s_kv(&f, "", MC_GGUF_U8), s_u8(&f.kv, 7); // empty keys are legal, if odd
    s_kv(&f, "t.arr_u32", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 3);
    s_u32(&f.kv, 1), s_u32(&f.kv, 2), s_u32(&f.kv, 3);
    s_kv(&f, "t.arr_f32", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_F32), s_u64(&f.kv, 3);
    s_f32(&f.kv, 0.5f), s_f32(&f.kv, -1.0f), s_f32(&f.kv, 3.0f);
    s_kv(&f, "t.arr_i8", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_I8), s_u64(&f.kv, 2);
    s_u8(&f.kv, 0xFF), s_u8(&f.kv, 2);
    s_kv(&f, "t.arr_u64", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_U64), s_u64(&f.kv, 2);
    s_u64(&f.kv, UINT64_MAX), s_u64(&f.kv, 5);
    s_kv(&f, "t.arr_str", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_STRING), s_u64(&f.kv, 3);
    s_str(&f.kv, "<unk>"), s_str(&f.kv, ""), s_str(&f.kv, "h\xc3\xa9llo");
    // {u32 {1, 2}, u32 {}, array {u32 {9}}}: arrays of arrays, three levels deep.
    s_kv(&f, "t.arr_arr", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_ARRAY), s_u64(&f.kv, 3);
    s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 2), s_u32(&f.kv, 1), s_u32(&f.kv, 2);
    s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 0);
    s_u32(&f.kv, MC_GGUF_ARRAY), s_u64(&f.kv, 1), s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 1), s_u32(&f.kv, 9);
    s_kv(&f, "t.arr_empty", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_U64), s_u64(&f.kv, 0);
    s_kv(&f, "t.arr_bool", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_BOOL), s_u64(&f.kv, 2);
    s_u8(&f.kv, 1), s_u8(&f.kv, 0);
    if (align) s_kv(&f, "general.alignment", MC_GGUF_U32), s_u32(&f.kv, align);
    for (size_t i = 0; i < S_N_RICH; i++)
        s_tensor(&f, s_rich_tensors[i].name, s_rich_tensors[i].n_dims, s_rich_tensors[i].ne, s_rich_tensors[i].type,
                 s_rich_tensors[i].size, (uint8_t)(0xA0 + i));
    return s_finish(&f, version);
}

static void s_check_scalars(const mc_gguf_t *g) {
    uint64_t u = 42;
    int64_t i = 42;
    double d = 42;
    bool bo = false;
    mc_gguf_str_t s;

    assert_true(mc_gguf_get_u64(g, "t.u8", &u)), assert_int_equal(u, 200);
    assert_true(mc_gguf_get_u64(g, "t.u16", &u)), assert_int_equal(u, 65000);
    assert_true(mc_gguf_get_u64(g, "t.u32", &u)), assert_int_equal(u, 4000000000u);
    assert_true(mc_gguf_get_u64(g, "t.u64", &u)), assert_true(u == UINT64_MAX);
    assert_true(mc_gguf_get_u64(g, "t.bool", &u)), assert_int_equal(u, 1);
    u = 42;
    assert_false(mc_gguf_get_u64(g, "t.i8", &u)); // negative
    assert_false(mc_gguf_get_u64(g, "t.f32", &u));
    assert_false(mc_gguf_get_u64(g, "general.architecture", &u));
    assert_false(mc_gguf_get_u64(g, "no.such.key", &u));
    assert_int_equal(u, 42);

    assert_true(mc_gguf_get_i64(g, "t.i8", &i)), assert_int_equal(i, -5);
    assert_true(mc_gguf_get_i64(g, "t.i16", &i)), assert_int_equal(i, -30000);
    assert_true(mc_gguf_get_i64(g, "t.i32", &i)), assert_int_equal(i, -2000000000);
    assert_true(mc_gguf_get_i64(g, "t.i64", &i)), assert_true(i == INT64_MIN);
    assert_true(mc_gguf_get_i64(g, "t.u32", &i)), assert_int_equal(i, 4000000000);
    i = 42;
    assert_false(mc_gguf_get_i64(g, "t.u64", &i)); // does not fit
    assert_false(mc_gguf_get_i64(g, "t.bool", &i));
    assert_false(mc_gguf_get_i64(g, "t.f64", &i));
    assert_int_equal(i, 42);

    assert_true(mc_gguf_get_f64(g, "t.f32", &d)), assert_true(d == 1.5);
    assert_true(mc_gguf_get_f64(g, "t.f64", &d)), assert_true(d == -2.25);
    assert_true(mc_gguf_get_f64(g, "t.u16", &d)), assert_true(d == 65000.0);
    assert_true(mc_gguf_get_f64(g, "t.i8", &d)), assert_true(d == -5.0);
    d = 42;
    assert_false(mc_gguf_get_f64(g, "t.bool", &d));
    assert_false(mc_gguf_get_f64(g, "t.arr_f32", &d));
    assert_true(d == 42);

    assert_true(mc_gguf_get_bool(g, "t.bool", &bo)), assert_true(bo);
    bo = false;
    assert_true(mc_gguf_get_bool(g, "t.one", &bo)), assert_true(bo);
    assert_false(mc_gguf_get_bool(g, "t.u8", &bo)); // 200 is neither 0 nor 1
    assert_false(mc_gguf_get_bool(g, "t.i8", &bo));
    assert_false(mc_gguf_get_bool(g, "t.str_nul", &bo));

    assert_true(mc_gguf_get_str(g, "general.architecture", &s));
    assert_int_equal(s.len, 5), assert_memory_equal(s.ptr, "llama", 5);
    assert_true(mc_gguf_get_str(g, "t.str_nul", &s));
    assert_int_equal(s.len, 3), assert_memory_equal(s.ptr, "a\0b", 3);
    assert_false(mc_gguf_get_str(g, "t.u8", &s));
    assert_false(mc_gguf_get_str(g, "t.arr_str", &s));

    const mc_gguf_value_t *v = mc_gguf_find(g, "");
    assert_non_null(v), assert_int_equal(v->type, MC_GGUF_U8), assert_int_equal(v->u, 7);
    assert_int_equal(mc_gguf_find(g, "t.f32")->type, MC_GGUF_F32);
    assert_null(mc_gguf_find(g, "t.u"));
}

static void s_check_arrays(const mc_gguf_t *g) {
    double d;
    int64_t i;
    const mc_gguf_value_t *v = mc_gguf_find(g, "t.arr_u32");
    assert_non_null(v), assert_int_equal(v->type, MC_GGUF_ARRAY);
    assert_int_equal(v->arr.elem_type, MC_GGUF_U32), assert_int_equal(v->arr.count, 3);
    for (int k = 0; k < 3; k++) assert_true(mc_gguf_arr_i64(v, (uint64_t)k, &i)), assert_int_equal(i, k + 1);
    assert_true(mc_gguf_arr_f64(v, 1, &d)), assert_true(d == 2.0);
    assert_false(mc_gguf_arr_i64(v, 3, &i));

    v = mc_gguf_find(g, "t.arr_f32");
    assert_true(mc_gguf_arr_f64(v, 0, &d)), assert_true(d == 0.5);
    assert_true(mc_gguf_arr_f64(v, 1, &d)), assert_true(d == -1.0);
    assert_true(mc_gguf_arr_f64(v, 2, &d)), assert_true(d == 3.0);
    assert_false(mc_gguf_arr_i64(v, 0, &i)); // floats are not integers

    v = mc_gguf_find(g, "t.arr_i8");
    assert_true(mc_gguf_arr_i64(v, 0, &i)), assert_int_equal(i, -1);
    assert_true(mc_gguf_arr_f64(v, 1, &d)), assert_true(d == 2.0);

    v = mc_gguf_find(g, "t.arr_u64");
    assert_false(mc_gguf_arr_i64(v, 0, &i)); // 2^64-1 does not fit
    assert_true(mc_gguf_arr_f64(v, 0, &d)), assert_true(d == 18446744073709551615.0);
    assert_true(mc_gguf_arr_i64(v, 1, &i)), assert_int_equal(i, 5);

    v = mc_gguf_find(g, "t.arr_str");
    assert_int_equal(v->arr.elem_type, MC_GGUF_STRING), assert_int_equal(v->arr.count, 3);
    assert_non_null(v->arr.strings), assert_null(v->arr.items);
    assert_int_equal(v->arr.strings[0].len, 5), assert_memory_equal(v->arr.strings[0].ptr, "<unk>", 5);
    assert_int_equal(v->arr.strings[1].len, 0);
    assert_int_equal(v->arr.strings[2].len, 6), assert_memory_equal(v->arr.strings[2].ptr, "h\xc3\xa9llo", 6);
    assert_false(mc_gguf_arr_f64(v, 0, &d));

    v = mc_gguf_find(g, "t.arr_arr");
    assert_int_equal(v->arr.elem_type, MC_GGUF_ARRAY), assert_int_equal(v->arr.count, 3);
    assert_non_null(v->arr.items), assert_null(v->arr.strings);
    const mc_gguf_value_t *it = v->arr.items;
    assert_int_equal(it[0].type, MC_GGUF_ARRAY), assert_int_equal(it[0].arr.elem_type, MC_GGUF_U32);
    assert_int_equal(it[0].arr.count, 2);
    assert_true(mc_gguf_arr_i64(&it[0], 0, &i)), assert_int_equal(i, 1);
    assert_true(mc_gguf_arr_i64(&it[0], 1, &i)), assert_int_equal(i, 2);
    assert_int_equal(it[1].arr.count, 0), assert_false(mc_gguf_arr_i64(&it[1], 0, &i));
    assert_int_equal(it[2].arr.elem_type, MC_GGUF_ARRAY), assert_int_equal(it[2].arr.count, 1);
    assert_true(mc_gguf_arr_i64(&it[2].arr.items[0], 0, &i)), assert_int_equal(i, 9);
    assert_false(mc_gguf_arr_i64(v, 0, &i)); // not numeric

    v = mc_gguf_find(g, "t.arr_empty");
    assert_int_equal(v->arr.count, 0), assert_false(mc_gguf_arr_f64(v, 0, &d));

    v = mc_gguf_find(g, "t.arr_bool");
    assert_int_equal(v->arr.elem_type, MC_GGUF_BOOL), assert_int_equal(v->arr.count, 2);
    assert_int_equal(((const uint8_t *)v->arr.data)[0], 1), assert_int_equal(((const uint8_t *)v->arr.data)[1], 0);

    assert_false(mc_gguf_arr_f64(mc_gguf_find(g, "t.u8"), 0, &d)); // not an array
    assert_false(mc_gguf_arr_f64(NULL, 0, &d));
}

static void s_check_rich(const mc_gguf_t *g, const uint8_t *buf, size_t len, uint32_t version, uint32_t align) {
    assert_int_equal(mc_gguf_version(g), version);
    assert_int_equal(mc_gguf_alignment(g), align);
    assert_ptr_equal(mc_gguf_base(g), buf);
    assert_int_equal(mc_gguf_size(g), len);
    uint64_t data_off = mc_gguf_data_offset(g);
    assert_int_equal(data_off % align, 0);

    // The rich file carries general.alignment only for a non-default value.
    size_t n_kv = align == MC_GGUF_DEFAULT_ALIGNMENT ? 23 : 24;
    assert_int_equal(mc_gguf_kv_count(g), n_kv);
    assert_string_equal(mc_gguf_kv_at(g, 0)->key, "general.architecture");
    assert_string_equal(mc_gguf_kv_at(g, 14)->key, "");
    assert_string_equal(mc_gguf_kv_at(g, 22)->key, "t.arr_bool");
    assert_null(mc_gguf_kv_at(g, n_kv));
    for (size_t k = 0; k < n_kv; k++)
        assert_ptr_equal(mc_gguf_find(g, mc_gguf_kv_at(g, k)->key), &mc_gguf_kv_at(g, k)->value);
    s_check_scalars(g);
    s_check_arrays(g);

    assert_int_equal(mc_gguf_tensor_count(g), S_N_RICH);
    assert_null(mc_gguf_tensor_at(g, S_N_RICH));
    assert_null(mc_gguf_tensor_find(g, "w.missing"));
    for (size_t k = 0; k < S_N_RICH; k++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, k);
        uint64_t n = 1;
        assert_ptr_equal(mc_gguf_tensor_find(g, s_rich_tensors[k].name), t);
        assert_string_equal(t->name, s_rich_tensors[k].name);
        assert_int_equal(t->n_dims, s_rich_tensors[k].n_dims);
        for (uint32_t dim = 0; dim < MC_GGUF_MAX_DIMS; dim++) {
            uint64_t want = dim < t->n_dims ? s_rich_tensors[k].ne[dim] : 1;
            assert_int_equal(t->ne[dim], want);
            n *= want;
        }
        assert_int_equal(t->type, s_rich_tensors[k].type);
        assert_int_equal(t->n_elems, n);
        assert_int_equal(t->size, s_rich_tensors[k].size);
        assert_int_equal(t->offset % align, 0);
        assert_ptr_equal(t->data, buf + data_off + t->offset);
        assert_true(data_off + t->offset + t->size <= len);
        assert_int_equal(t->data[0], 0xA0 + k);
        assert_int_equal(t->data[t->size - 1], 0xA0 + k);
    }
    const mc_gguf_tensor_t *last = mc_gguf_tensor_at(g, S_N_RICH - 1);
    assert_int_equal(data_off + last->offset + last->size, len);
}

static void test_valid_v3_custom_alignment(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    s_buf_t b = s_rich_file(3, 64);
    mc_gguf_t *g = mc_gguf_parse(b.p, b.len, err);
    if (!g) fail_msg("%s", err);
    s_check_rich(g, b.p, b.len, 3, 64);
    mc_gguf_destroy(&g);
    assert_null(g);
    mc_gguf_destroy(&g); // safe twice
    mc_gguf_destroy(NULL);
    free(b.p);
}

static void test_valid_v2_default_alignment(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    s_buf_t b = s_rich_file(2, 0);
    mc_gguf_t *g = mc_gguf_parse(b.p, b.len, err);
    if (!g) fail_msg("%s", err);
    s_check_rich(g, b.p, b.len, 2, MC_GGUF_DEFAULT_ALIGNMENT);
    mc_gguf_destroy(&g);
    free(b.p);
}

static void test_vtype_names(void **state) {
    (void)state;
    assert_string_equal(mc_gguf_vtype_name(MC_GGUF_U32), "u32");
    assert_string_equal(mc_gguf_vtype_name(MC_GGUF_STRING), "string");
    assert_string_equal(mc_gguf_vtype_name(MC_GGUF_ARRAY), "array");
    assert_string_equal(mc_gguf_vtype_name(MC_GGUF_F64), "f64");
    assert_string_equal(mc_gguf_vtype_name(99), "unknown");
}

// --- fixtures ----------------------------------------------------------------

static void s_check_in_file(const mc_gguf_t *g) {
    const uint8_t *lo = mc_gguf_base(g), *hi = lo + mc_gguf_size(g);
    for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
        assert_true(t->data >= lo + mc_gguf_data_offset(g));
        assert_true(t->size <= (size_t)(hi - t->data));
        assert_int_equal(t->offset % mc_gguf_alignment(g), 0);
    }
}

static uint64_t s_u64_of(const mc_gguf_t *g, const char *key) {
    uint64_t v = UINT64_MAX;
    if (!mc_gguf_get_u64(g, key, &v)) fail_msg("key %s missing or not an unsigned integer", key);
    return v;
}

static void s_assert_str(const mc_gguf_t *g, const char *key, const char *want) {
    mc_gguf_str_t s;
    if (!mc_gguf_get_str(g, key, &s)) fail_msg("key %s missing or not a string", key);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static void s_assert_piece(const mc_gguf_value_t *tokens, uint64_t i, const char *want) {
    assert_int_equal(tokens->arr.strings[i].len, strlen(want));
    assert_memory_equal(tokens->arr.strings[i].ptr, want, strlen(want));
}

static void test_fixture_tiny_f32(void **state) {
    (void)state;
    char path[4096], err[MC_ERR_LEN] = "";
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof path)) skip();
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) fail_msg("%s", err);
    assert_int_equal(mc_gguf_version(g), 3);
    assert_int_equal(mc_gguf_alignment(g), 32);
    assert_int_equal(mc_gguf_size(g), 18779776);
    assert_null(mc_gguf_find(g, "general.alignment"));

    s_assert_str(g, "general.architecture", "llama");
    s_assert_str(g, "general.type", "model");
    s_assert_str(g, "general.name", "mixtral-oracle-tiny");
    s_assert_str(g, "tokenizer.ggml.model", "llama");
    s_assert_str(g, "tokenizer.ggml.pre", "default");
    assert_int_equal(s_u64_of(g, "llama.block_count"), 2);
    assert_int_equal(s_u64_of(g, "llama.context_length"), 32768);
    assert_int_equal(s_u64_of(g, "llama.embedding_length"), 64);
    assert_int_equal(s_u64_of(g, "llama.feed_forward_length"), 128);
    assert_int_equal(s_u64_of(g, "llama.attention.head_count"), 4);
    assert_int_equal(s_u64_of(g, "llama.attention.head_count_kv"), 2);
    assert_int_equal(s_u64_of(g, "llama.expert_count"), 8);
    assert_int_equal(s_u64_of(g, "llama.expert_used_count"), 2);
    assert_int_equal(s_u64_of(g, "general.file_type"), 0);
    assert_int_equal(s_u64_of(g, "llama.vocab_size"), 32000);
    assert_int_equal(s_u64_of(g, "llama.rope.dimension_count"), 16);
    assert_int_equal(s_u64_of(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(s_u64_of(g, "tokenizer.ggml.eos_token_id"), 2);
    assert_int_equal(s_u64_of(g, "tokenizer.ggml.unknown_token_id"), 0);
    assert_int_equal(mc_gguf_find(g, "llama.block_count")->type, MC_GGUF_U32);
    double d;
    assert_true(mc_gguf_get_f64(g, "llama.rope.freq_base", &d)), assert_true(d == 1e6);
    assert_int_equal(mc_gguf_find(g, "llama.rope.freq_base")->type, MC_GGUF_F32);
    assert_true(mc_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &d)), assert_true(d == (double)1e-5f);
    bool b = false;
    assert_true(mc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b)), assert_true(b);
    assert_true(mc_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b)), assert_false(b);
    assert_null(mc_gguf_find(g, "tokenizer.chat_template"));

    const mc_gguf_value_t *tokens = mc_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(tokens), assert_int_equal(tokens->type, MC_GGUF_ARRAY);
    assert_int_equal(tokens->arr.elem_type, MC_GGUF_STRING), assert_int_equal(tokens->arr.count, 32000);
    s_assert_piece(tokens, 0, "<unk>");
    s_assert_piece(tokens, 1, "<s>");
    s_assert_piece(tokens, 2, "</s>");
    s_assert_piece(tokens, 3, "<0x00>");
    s_assert_piece(tokens, 258, "<0xFF>");
    const mc_gguf_value_t *scores = mc_gguf_find(g, "tokenizer.ggml.scores");
    assert_int_equal(scores->arr.elem_type, MC_GGUF_F32), assert_int_equal(scores->arr.count, 32000);
    assert_true(mc_gguf_arr_f64(scores, 31999, &d));
    const mc_gguf_value_t *types = mc_gguf_find(g, "tokenizer.ggml.token_type");
    assert_int_equal(types->arr.elem_type, MC_GGUF_I32), assert_int_equal(types->arr.count, 32000);
    static const int64_t want_types[][2] = {{0, 2}, {1, 3}, {2, 3}, {3, 6}, {258, 6}, {259, 1}, {31999, 1}};
    for (size_t k = 0; k < sizeof want_types / sizeof want_types[0]; k++) {
        int64_t t;
        assert_true(mc_gguf_arr_i64(types, (uint64_t)want_types[k][0], &t));
        assert_int_equal(t, want_types[k][1]);
    }

    static const struct {
        const char *name;
        uint32_t n_dims;
        uint64_t ne[3];
    } want[] = {
        {"token_embd.weight", 2, {64, 32000}},
        {"output_norm.weight", 1, {64}},
        {"output.weight", 2, {64, 32000}},
        {"blk.0.attn_norm.weight", 1, {64}},
        {"blk.1.ffn_norm.weight", 1, {64}},
        {"blk.0.attn_q.weight", 2, {64, 64}},
        {"blk.1.attn_k.weight", 2, {64, 32}},
        {"blk.0.attn_v.weight", 2, {64, 32}},
        {"blk.1.attn_output.weight", 2, {64, 64}},
        {"blk.0.ffn_gate_inp.weight", 2, {64, 8}},
        {"blk.0.ffn_gate_exps.weight", 3, {64, 128, 8}},
        {"blk.1.ffn_up_exps.weight", 3, {64, 128, 8}},
        {"blk.1.ffn_down_exps.weight", 3, {128, 64, 8}},
    };
    assert_int_equal(mc_gguf_tensor_count(g), 23);
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, want[k].name);
        if (!t) fail_msg("tensor %s missing", want[k].name);
        assert_int_equal(t->n_dims, want[k].n_dims);
        for (uint32_t dim = 0; dim < want[k].n_dims; dim++) assert_int_equal(t->ne[dim], want[k].ne[dim]);
    }
    for (size_t k = 0; k < 23; k++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, k);
        assert_int_equal(t->type, MC_DTYPE_F32);
        assert_int_equal(t->size, t->n_elems * 4);
    }
    s_check_in_file(g);
    // The norm weights are 1 + 0.1 N(0,1): a sane float proves the pointer.
    float w;
    memcpy(&w, mc_gguf_tensor_find(g, "output_norm.weight")->data, 4);
    assert_true(w > 0.3f && w < 1.7f);
    mc_gguf_destroy(&g);
}

static void test_fixture_quantized(void **state) {
    (void)state;
    static const struct {
        const char *file;
        size_t bytes, n_tensors;
        const char *tensor[3];
        mc_dtype_t type[3];
    } want[] = {
        {"tiny-q8_0.gguf",
         5520544,
         23,
         {"blk.0.attn_q.weight", "blk.1.ffn_gate_inp.weight", "token_embd.weight"},
         {MC_DTYPE_Q8_0, MC_DTYPE_F32, MC_DTYPE_Q8_0}},
        {"tiny-q4_0.gguf",
         4291744,
         23,
         {"token_embd.weight", "blk.0.attn_k.weight", "blk.1.ffn_down_exps.weight"},
         {MC_DTYPE_Q4_0, MC_DTYPE_Q8_0, MC_DTYPE_Q4_0}},
        {"small-q4_k_m.gguf",
         20315296,
         43,
         {"blk.0.attn_output.weight", "blk.3.ffn_down_exps.weight", "blk.0.ffn_down_exps.weight"},
         {MC_DTYPE_Q5_K, MC_DTYPE_Q6_K, MC_DTYPE_Q4_K}},
    };
    char path[4096], err[MC_ERR_LEN] = "";
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        if (!mc_test_fixture(want[k].file, path, sizeof path)) skip();
        mc_gguf_t *g = mc_gguf_open(path, err);
        if (!g) fail_msg("%s", err);
        assert_int_equal(mc_gguf_size(g), want[k].bytes);
        assert_int_equal(mc_gguf_tensor_count(g), want[k].n_tensors);
        for (int j = 0; j < 3; j++) {
            const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, want[k].tensor[j]);
            if (!t) fail_msg("%s: tensor %s missing", want[k].file, want[k].tensor[j]);
            assert_int_equal(t->type, want[k].type[j]);
        }
        s_check_in_file(g);
        mc_gguf_destroy(&g);
    }
}

// --- opening files -------------------------------------------------------------

static void s_write(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void s_expect_open_fail(const char *path, const char *needle) {
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (g) fail_msg("%s opened; expected '%s'", path, needle);
    if (!strstr(err, path) || !strstr(err, needle)) fail_msg("error '%s' lacks the path or '%s'", err, needle);
}

static void test_open(void **state) {
    (void)state;
    char dir[512], path[600], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));

    snprintf(path, sizeof path, "%s/model.gguf", dir);
    s_buf_t b = s_rich_file(3, 64);
    s_write(path, b.p, b.len);
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) fail_msg("%s", err);
    s_check_rich(g, mc_gguf_base(g), b.len, 3, 64);
    assert_memory_equal(mc_gguf_base(g), b.p, b.len);
    mc_gguf_destroy(&g);
    mc_gguf_destroy(&g);
    free(b.p);
    unlink(path);

    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    s_expect_open_fail(path, "cannot open");
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    s_write(path, "", 0);
    s_expect_open_fail(path, "empty file");
    unlink(path);
    snprintf(path, sizeof path, "%s/text.gguf", dir);
    s_write(path, "hello world\n", 12);
    s_expect_open_fail(path, "bad magic");
    unlink(path);
    snprintf(path, sizeof path, "%s/short.gguf", dir);
    s_write(path, "GGUF\3\0\0\0\0\0", 10);
    s_expect_open_fail(path, "too small");
    unlink(path);
    s_expect_open_fail(dir, "not a regular file");
    rmdir(dir);
}

// --- hostile input ---------------------------------------------------------------

static void test_truncation_every_length(void **state) {
    (void)state;
    s_buf_t b = s_rich_file(3, 64);
    for (size_t n = 0; n < b.len; n++) {
        char err[MC_ERR_LEN] = "";
        uint8_t *copy;
        mc_gguf_t *g = s_parse_copy(b.p, n, &copy, err);
        if (g) fail_msg("a file truncated to %zu of %zu bytes parsed", n, b.len);
        if (!err[0]) fail_msg("no message for a file truncated to %zu bytes", n);
        free(copy);
    }
    s_expect_ok(&b);
}

static s_buf_t s_header_only(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    s_buf_t b = {0};
    s_u32(&b, MC_GGUF_MAGIC);
    s_u32(&b, version);
    s_u64(&b, n_tensors);
    s_u64(&b, n_kv);
    for (int i = 0; i < 64; i++) s_u8(&b, 0); // some room, far less than claimed
    return b;
}

static void test_bad_header(void **state) {
    (void)state;
    s_buf_t b = s_rich_file(3, 0);
    memcpy(b.p, "GGML", 4);
    s_expect_fail(&b, "bad magic 0x4c4d4747 (not a GGUF file)");
    b = s_rich_file(1, 0);
    s_expect_fail(&b, "unsupported GGUF version 1");
    b = s_rich_file(4, 0);
    s_expect_fail(&b, "unsupported GGUF version 4");
    b = s_rich_file(0x03000000u, 0);
    s_expect_fail(&b, "big-endian");
    b = s_header_only(3, 0, 0);
    b.len = 23;
    s_expect_fail(&b, "too small for a GGUF header");
    b = s_header_only(3, 0, 0); // an empty but valid file
    s_expect_ok(&b);
}

static void test_huge_counts(void **state) {
    (void)state;
    s_buf_t b = s_header_only(3, 0, (uint64_t)1 << 62);
    s_expect_fail(&b, "n_kv 4611686018427387904 exceeds the file");
    b = s_header_only(3, (uint64_t)1 << 40, 0);
    s_expect_fail(&b, "n_tensors 1099511627776 exceeds the file");
    b = s_header_only(3, UINT64_MAX, UINT64_MAX);
    s_expect_fail(&b, "exceeds the file");
    // A count small enough to pass the size bound but not backed by entries.
    s_file_t f = {.align = 1};
    s_kv(&f, "a", MC_GGUF_STRING), s_str(&f.kv, "a string long enough to leave room");
    s_kv(&f, "b", MC_GGUF_U8), s_u8(&f.kv, 1);
    b = s_finish(&f, 3);
    s_patch_u64(&b, 16, 3); // n_kv
    s_expect_fail(&b, "kv 2: key truncated at byte");
    b = s_header_only(2, 2, 0); // zeros: two tensors with empty names and no dims
    s_expect_fail(&b, "tensor '': n_dims 0 is not in 1..4");
}

static void test_huge_lengths(void **state) {
    (void)state;
    s_file_t f = {.align = 32};
    s_kv(&f, "ok", MC_GGUF_U8), s_u8(&f.kv, 1);
    s_u64(&f.kv, (uint64_t)1 << 63); // the next key's length
    f.n_kv++;
    s_buf_t b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 1: key length 9223372036854775808 exceeds the file");

    f = (s_file_t){.align = 32};
    s_kv(&f, "name", MC_GGUF_STRING), s_u64(&f.kv, UINT64_MAX);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'name': string length 18446744073709551615 exceeds the file");

    f = (s_file_t){.align = 1}; // no padding: the file ends one byte into the string
    s_kv(&f, "name", MC_GGUF_STRING), s_u64(&f.kv, 4), s_put(&f.kv, "abc", 3);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "string length 4 exceeds the file");

    f = (s_file_t){.align = 32};
    s_kv(&f, "arr", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, (uint64_t)1 << 61);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'arr': array count 2305843009213693952 exceeds the file");

    // 100 bytes of u32 room is 25 elements, not 26.
    f = (s_file_t){.align = 1};
    s_kv(&f, "arr", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 26);
    for (int i = 0; i < 100; i++) s_u8(&f.kv, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "array count 26 exceeds the file");

    // Strings need at least 8 bytes each even when empty.
    f = (s_file_t){.align = 1};
    s_kv(&f, "tokens", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_STRING), s_u64(&f.kv, 13);
    for (int i = 0; i < 12; i++) s_str(&f.kv, "");
    for (int i = 0; i < 7; i++) s_u8(&f.kv, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "array count 13 exceeds the file");

    f = (s_file_t){.align = 32};
    s_kv(&f, "tokens", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_STRING), s_u64(&f.kv, 2);
    s_str(&f.kv, "a"), s_u64(&f.kv, 1000), s_u64(&f.kv, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'tokens': array string length 1000 exceeds the file");

    f = (s_file_t){.align = 32};
    s_kv(&f, "nested", MC_GGUF_ARRAY), s_u32(&f.kv, MC_GGUF_ARRAY), s_u64(&f.kv, (uint64_t)1 << 60);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "array count 1152921504606846976 exceeds the file");

    f = (s_file_t){.align = 32};
    s_info(&f, "t", 1, (const uint64_t[]){8}, MC_DTYPE_F32, 0);
    s_u64(&f.ti, (uint64_t)1 << 50); // the second tensor's name length
    f.n_tensors++;
    b = s_finish(&f, 3);
    s_expect_fail(&b, "tensor 1: name length 1125899906842624 exceeds the file");
}

// An array value nested `levels` deep whose innermost array holds one u32 7.
static s_buf_t s_nested_file(int levels) {
    s_file_t f = {.align = 32};
    s_kv(&f, "deep", MC_GGUF_ARRAY);
    for (int i = 1; i < levels; i++) s_u32(&f.kv, MC_GGUF_ARRAY), s_u64(&f.kv, 1);
    s_u32(&f.kv, MC_GGUF_U32), s_u64(&f.kv, 1), s_u32(&f.kv, 7);
    return s_finish(&f, 3);
}

static void test_nesting_limit(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    s_buf_t b = s_nested_file(8);
    mc_gguf_t *g = mc_gguf_parse(b.p, b.len, err);
    if (!g) fail_msg("%s", err);
    const mc_gguf_value_t *v = mc_gguf_find(g, "deep");
    for (int i = 1; i < 8; i++) {
        assert_int_equal(v->arr.elem_type, MC_GGUF_ARRAY), assert_int_equal(v->arr.count, 1);
        v = &v->arr.items[0];
    }
    int64_t x;
    assert_true(mc_gguf_arr_i64(v, 0, &x)), assert_int_equal(x, 7);
    mc_gguf_destroy(&g);
    free(b.p);

    b = s_nested_file(9);
    s_expect_fail(&b, "kv 'deep': arrays nested deeper than 8 levels");
    b = s_nested_file(100000);
    s_expect_fail(&b, "nested deeper");
}

static void test_bad_values(void **state) {
    (void)state;
    s_file_t f = {.align = 32};
    s_kv(&f, "odd", 13), s_u64(&f.kv, 0);
    s_buf_t b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'odd': unknown value type 13");

    f = (s_file_t){.align = 32};
    s_kv(&f, "odd", MC_GGUF_ARRAY), s_u32(&f.kv, 0x80000000u), s_u64(&f.kv, 1), s_u64(&f.kv, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'odd': unknown array element type 2147483648");

    f = (s_file_t){.align = 32};
    s_strn(&f.kv, "a\0b", 3), s_u32(&f.kv, MC_GGUF_U8), s_u8(&f.kv, 0);
    f.n_kv = 1;
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 0: key contains a NUL byte");

    f = (s_file_t){.align = 32};
    s_kv(&f, "general.name", MC_GGUF_STRING), s_str(&f.kv, "a");
    s_kv(&f, "x", MC_GGUF_U8), s_u8(&f.kv, 0);
    s_kv(&f, "general.name", MC_GGUF_STRING), s_str(&f.kv, "b");
    b = s_finish(&f, 3);
    s_expect_fail(&b, "kv 'general.name': duplicate key");
}

// A file with one tensor declared as given and `data_bytes` of data.
static s_buf_t s_one_tensor(const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset,
                            size_t data_bytes) {
    s_file_t f = {.align = 32};
    s_info(&f, name, n_dims, ne, type, offset);
    for (size_t i = 0; i < data_bytes; i++) s_u8(&f.data, 0);
    return s_finish(&f, 3);
}

static void test_bad_tensors(void **state) {
    (void)state;
    const uint64_t ne5[5] = {32, 1, 1, 1, 1};
    s_buf_t b = s_one_tensor("t", 0, ne5, MC_DTYPE_F32, 0, 128);
    s_expect_fail(&b, "tensor 't': n_dims 0 is not in 1..4");
    b = s_one_tensor("t", 5, ne5, MC_DTYPE_F32, 0, 128);
    s_expect_fail(&b, "tensor 't': n_dims 5 is not in 1..4");
    b = s_one_tensor("t", 4, ne5, MC_DTYPE_F32, 0, 128); // positive control
    s_expect_ok(&b);

    b = s_one_tensor("t", 2, (const uint64_t[]){32, 0}, MC_DTYPE_F32, 0, 128);
    s_expect_fail(&b, "tensor 't': ne[1] is 0");
    b = s_one_tensor("t", 2, (const uint64_t[]){(uint64_t)1 << 40, (uint64_t)1 << 40}, MC_DTYPE_F32, 0, 128);
    s_expect_fail(&b, "shape {1099511627776, 1099511627776} has too many elements");
    b = s_one_tensor("t", 3, (const uint64_t[]){1u << 31, 1u << 31, 4}, MC_DTYPE_F16, 0, 128); // 2^64 exactly
    s_expect_fail(&b, "has too many elements");
    // 2^62 elements fit in int64, but 2^64 bytes of F32 do not fit in 64 bits.
    b = s_one_tensor("t", 2, (const uint64_t[]){(uint64_t)1 << 61, 2}, MC_DTYPE_F32, 0, 128);
    s_expect_fail(&b, "byte size of F32 shape {2305843009213693952, 2} overflows");
    b = s_one_tensor("t", 2, (const uint64_t[]){33, 2}, MC_DTYPE_Q4_0, 0, 128);
    s_expect_fail(&b, "ne[0] = 33 is not a multiple of the Q4_0 block size 32");
    b = s_one_tensor("t", 1, (const uint64_t[]){128}, MC_DTYPE_Q4_K, 0, 1024);
    s_expect_fail(&b, "not a multiple of the Q4_K block size 256");
    b = s_one_tensor("t", 1, ne5, 99, 0, 128);
    s_expect_fail(&b, "tensor 't': unknown type id 99");
    b = s_one_tensor("t", 1, (const uint64_t[]){256}, MC_DTYPE_Q8_K, 0, 512);
    s_expect_fail(&b, "type Q8_K (id 15) is for activations only");
    b = s_one_tensor("t", 1, ne5, MC_DTYPE_Q8_1, 0, 128);
    s_expect_fail(&b, "type Q8_1 (id 9) is for activations only");

    s_file_t f = {.align = 32};
    s_strn(&f.ti, "a\0b", 3), s_u32(&f.ti, 1), s_u64(&f.ti, 8), s_u32(&f.ti, MC_DTYPE_F32), s_u64(&f.ti, 0);
    f.n_tensors = 1;
    for (int i = 0; i < 32; i++) s_u8(&f.data, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "tensor 0: name contains a NUL byte");

    f = (s_file_t){.align = 32};
    s_tensor(&f, "blk.0.attn_q.weight", 1, ne5, MC_DTYPE_F32, 128, 0);
    s_tensor(&f, "blk.0.attn_k.weight", 1, ne5, MC_DTYPE_F32, 128, 0);
    s_tensor(&f, "blk.0.attn_q.weight", 1, ne5, MC_DTYPE_F32, 128, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "tensor 'blk.0.attn_q.weight': duplicate tensor name");
}

static void test_bad_offsets(void **state) {
    (void)state;
    const uint64_t ne[1] = {8}; // 32 bytes of F32
    s_buf_t b = s_one_tensor("w", 1, ne, MC_DTYPE_F32, 16, 64);
    s_expect_fail(&b, "tensor 'w': offset 16 is not a multiple of the alignment 32");
    b = s_one_tensor("w", 1, ne, MC_DTYPE_F32, 0, 31);
    s_expect_fail(&b, "tensor 'w': offset 0 + size 32 is beyond the end of the file");
    b = s_one_tensor("w", 1, ne, MC_DTYPE_F32, 32, 32);
    s_expect_fail(&b, "offset 32 + size 32 is beyond the end of the file");
    b = s_one_tensor("w", 1, ne, MC_DTYPE_F32, UINT64_MAX - 31, 32); // offset + size wraps
    s_expect_fail(&b, "is beyond the end of the file");
    b = s_one_tensor("w", 1, ne, MC_DTYPE_F32, 32, 64); // exactly at the end: fine
    s_expect_ok(&b);

    // A custom alignment governs the offsets too.
    s_file_t f = {.align = 64};
    s_kv(&f, "general.alignment", MC_GGUF_U32), s_u32(&f.kv, 64);
    s_info(&f, "w", 1, ne, MC_DTYPE_F32, 32);
    for (int i = 0; i < 64; i++) s_u8(&f.data, 0);
    b = s_finish(&f, 3);
    s_expect_fail(&b, "offset 32 is not a multiple of the alignment 64");
}

static s_buf_t s_alignment_file(uint32_t type, uint64_t value) {
    s_file_t f = {.align = 32};
    s_kv(&f, "general.alignment", type);
    if (type == MC_GGUF_STRING)
        s_str(&f.kv, "32");
    else if (type == MC_GGUF_U64)
        s_u64(&f.kv, value);
    else
        s_u32(&f.kv, (uint32_t)value);
    s_tensor(&f, "w", 1, (const uint64_t[]){8}, MC_DTYPE_F32, 32, 0);
    return s_finish(&f, 3);
}

static void test_bad_alignment(void **state) {
    (void)state;
    s_buf_t b = s_alignment_file(MC_GGUF_U32, 48);
    s_expect_fail(&b, "general.alignment 48 is not a power of two");
    b = s_alignment_file(MC_GGUF_U32, 0);
    s_expect_fail(&b, "general.alignment 0 is not a power of two");
    b = s_alignment_file(MC_GGUF_U64, 32);
    s_expect_fail(&b, "general.alignment has type u64, must be u32");
    b = s_alignment_file(MC_GGUF_I32, 32);
    s_expect_fail(&b, "general.alignment has type i32, must be u32");
    b = s_alignment_file(MC_GGUF_STRING, 0);
    s_expect_fail(&b, "general.alignment has type string, must be u32");
    b = s_alignment_file(MC_GGUF_U32, 32);
    s_expect_ok(&b);
}

// Reads everything a value exposes, so ASan sees any pointer outside the buffer.
static uint64_t s_walk(const mc_gguf_value_t *v) {
    uint64_t sum = 0;
    if (v->type == MC_GGUF_STRING) {
        for (uint64_t i = 0; i < v->str.len; i++) sum += (uint8_t)v->str.ptr[i];
    } else if (v->type == MC_GGUF_ARRAY) {
        for (uint64_t i = 0; i < v->arr.count; i++) {
            double d;
            if (v->arr.elem_type == MC_GGUF_STRING)
                for (uint64_t j = 0; j < v->arr.strings[i].len; j++) sum += (uint8_t)v->arr.strings[i].ptr[j];
            else if (v->arr.elem_type == MC_GGUF_ARRAY)
                sum += s_walk(&v->arr.items[i]);
            else if (mc_gguf_arr_f64(v, i, &d))
                sum++;
        }
    }
    return sum;
}

static uint64_t s_next(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17; // xorshift64
    return *x;
}

static void test_random_corruption(void **state) {
    (void)state;
    s_buf_t b = s_rich_file(3, 64);
    uint8_t *buf = malloc(b.len);
    assert_non_null(buf);
    uint64_t rng = 0x9E3779B97F4A7C15u;
    int parsed = 0, rejected = 0;
    uint64_t walked = 0; // a use of every byte read, so no read is optimised away
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(buf, b.p, b.len);
        int flips = 1 + (int)(s_next(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            // Half of the flips hit the header, where the interesting damage is.
            size_t span = s_next(&rng) % 2 ? b.len : b.len / 2;
            buf[s_next(&rng) % span] ^= (uint8_t)(1 + s_next(&rng) % 255);
        }
        char err[MC_ERR_LEN] = "";
        mc_gguf_t *g = mc_gguf_parse(buf, b.len, err);
        if (!g) {
            assert_true(err[0] != '\0');
            rejected++;
            continue;
        }
        parsed++;
        for (size_t i = 0; i < mc_gguf_kv_count(g); i++) walked += s_walk(&mc_gguf_kv_at(g, i)->value);
        for (size_t i = 0; i < mc_gguf_tensor_count(g); i++) {
            const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, i);
            assert_true(t->data >= buf && t->size <= (size_t)(buf + b.len - t->data));
            walked += t->data[0] + t->data[t->size - 1];
        }
        mc_gguf_destroy(&g);
    }
    // The fixed seed makes both outcomes occur; if either count is 0 the
    // loop is not exercising what it claims to.
    assert_true(parsed > 0 && rejected > 0);
    assert_true(walked > 0);
    free(buf);
    free(b.p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3_custom_alignment),
        cmocka_unit_test(test_valid_v2_default_alignment),
        cmocka_unit_test(test_vtype_names),
        cmocka_unit_test(test_fixture_tiny_f32),
        cmocka_unit_test(test_fixture_quantized),
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_truncation_every_length),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_huge_lengths),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_random_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
