/*
 * test_gguf_writer: files written by gguf_writer parse back (with the reader
 * in common/gguf.c) to exactly the metadata, shapes and bytes put in, with
 * aligned offsets and zero padding; invalid declarations are rejected;
 * write_file replaces the target atomically and cleans up after failures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "testutil.h"

// Tensor bytes: a pattern that differs per tensor and per byte.
static uint8_t s_pattern(size_t index, size_t i) { return (uint8_t)(index * 31 + i * 7 + 1); }

static mc_err_t s_fill_pattern(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)err;
    size_t *calls = ctx;
    assert_int_equal(index, *calls); // tensors are filled once each, in order
    (*calls)++;
    for (size_t i = 0; i < size; i++) ((uint8_t *)dst)[i] = s_pattern(index, i);
    return MC_OK;
}

typedef struct {
    const char *name;
    mc_dtype_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t size;
} s_tdesc_t;

static const s_tdesc_t s_tensors[] = {
    {"a.f32", MC_DTYPE_F32, 1, {5, 1, 1, 1}, 20},
    {"b.f16", MC_DTYPE_F16, 2, {4, 3, 1, 1}, 24},
    {"c.q8_0", MC_DTYPE_Q8_0, 2, {64, 2, 1, 1}, 4 * 34},
    {"d.q4_k", MC_DTYPE_Q4_K, 3, {256, 1, 2, 1}, 2 * 144},
    {"e.bf16", MC_DTYPE_BF16, 4, {2, 2, 2, 3}, 48},
    {"f.q4_0", MC_DTYPE_Q4_0, 2, {32, 3, 1, 1}, 3 * 18},
};
#define S_N_TENSORS (sizeof s_tensors / sizeof s_tensors[0])

static const char *const s_strs[] = {"alpha", "", ("\xE2\x96\x81" "caf\xC3\xA9"), "ab\0cd"};
static const size_t s_str_lens[] = {5, 0, 8, 5}; // the last one holds a NUL byte
static const float s_f32s[] = {0.5f, -1.25f, 3e38f};
static const int32_t s_i32s[] = {-7, 0, 2147483647};

// A writer holding one key of every kind the writer supports and s_tensors.
static mc_gguf_writer_t *s_make(uint32_t alignment) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(alignment);
    assert_non_null(w);
    assert_int_equal(mc_gguf_writer_add_str(w, "general.architecture", "llama"), MC_OK);
    assert_int_equal(mc_gguf_writer_add_u32(w, "k.u32", 4000000000u), MC_OK);
    assert_int_equal(mc_gguf_writer_add_i32(w, "k.i32", -123456), MC_OK);
    assert_int_equal(mc_gguf_writer_add_u64(w, "k.u64", 0x123456789ABCDEFull), MC_OK);
    assert_int_equal(mc_gguf_writer_add_f32(w, "k.f32", 1e-5f), MC_OK);
    assert_int_equal(mc_gguf_writer_add_bool(w, "k.true", true), MC_OK);
    assert_int_equal(mc_gguf_writer_add_bool(w, "k.false", false), MC_OK);
    assert_int_equal(mc_gguf_writer_add_str(w, "k.empty", ""), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_str(w, "k.strs", s_strs, s_str_lens, 4), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_str(w, "k.strs_nul", s_strs, NULL, 3), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_f32(w, "k.f32s", s_f32s, 3), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_i32(w, "k.i32s", s_i32s, 3), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_i32(w, "k.none", NULL, 0), MC_OK);
    for (size_t i = 0; i < S_N_TENSORS; i++)
        assert_int_equal(mc_gguf_writer_add_tensor(w, s_tensors[i].name, s_tensors[i].type,
                                                   s_tensors[i].n_dims, s_tensors[i].ne),
                         MC_OK);
    return w;
}

static void s_expect_str(mc_gguf_str_t s, const char *want, size_t len) {
    assert_int_equal(s.len, len);
    assert_memory_equal(s.ptr, want, len);
}

// Check everything s_make() declared, plus alignment and padding.
static void s_check_parsed(const mc_gguf_t *g, uint32_t alignment, size_t n_kv_extra) {
    assert_int_equal(mc_gguf_version(g), 3);
    assert_int_equal(mc_gguf_alignment(g), alignment);
    assert_int_equal(mc_gguf_kv_count(g), 13 + n_kv_extra);
    assert_string_equal(mc_gguf_kv_at(g, 0 + n_kv_extra)->key, "general.architecture");

    mc_gguf_str_t s;
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    assert_true(mc_gguf_get_str(g, "general.architecture", &s));
    s_expect_str(s, "llama", 5);
    assert_int_equal(mc_gguf_find(g, "k.u32")->type, MC_GGUF_U32);
    assert_true(mc_gguf_get_u64(g, "k.u32", &u));
    assert_int_equal(u, 4000000000u);
    assert_int_equal(mc_gguf_find(g, "k.i32")->type, MC_GGUF_I32);
    assert_true(mc_gguf_get_i64(g, "k.i32", &i));
    assert_int_equal(i, -123456);
    assert_int_equal(mc_gguf_find(g, "k.u64")->type, MC_GGUF_U64);
    assert_true(mc_gguf_get_u64(g, "k.u64", &u));
    assert_int_equal(u, 0x123456789ABCDEFull);
    assert_int_equal(mc_gguf_find(g, "k.f32")->type, MC_GGUF_F32);
    assert_true(mc_gguf_get_f64(g, "k.f32", &f));
    assert_true(f == (double)1e-5f);
    assert_int_equal(mc_gguf_find(g, "k.true")->type, MC_GGUF_BOOL);
    assert_true(mc_gguf_get_bool(g, "k.true", &b) && b);
    assert_true(mc_gguf_get_bool(g, "k.false", &b) && !b);
    assert_true(mc_gguf_get_str(g, "k.empty", &s));
    assert_int_equal(s.len, 0);

    const mc_gguf_value_t *v = mc_gguf_find(g, "k.strs");
    assert_non_null(v);
    assert_int_equal(v->type, MC_GGUF_ARRAY);
    assert_int_equal(v->arr.elem_type, MC_GGUF_STRING);
    assert_int_equal(v->arr.count, 4);
    for (size_t k = 0; k < 4; k++) s_expect_str(v->arr.strings[k], s_strs[k], s_str_lens[k]);
    v = mc_gguf_find(g, "k.strs_nul");
    assert_int_equal(v->arr.count, 3);
    for (size_t k = 0; k < 3; k++) s_expect_str(v->arr.strings[k], s_strs[k], strlen(s_strs[k]));
    v = mc_gguf_find(g, "k.f32s");
    assert_int_equal(v->arr.elem_type, MC_GGUF_F32);
    assert_int_equal(v->arr.count, 3);
    for (uint64_t k = 0; k < 3; k++) {
        assert_true(mc_gguf_arr_f64(v, k, &f));
        assert_true(f == (double)s_f32s[k]);
    }
    v = mc_gguf_find(g, "k.i32s");
    assert_int_equal(v->arr.elem_type, MC_GGUF_I32);
    for (uint64_t k = 0; k < 3; k++) {
        assert_true(mc_gguf_arr_i64(v, k, &i));
        assert_int_equal(i, s_i32s[k]);
    }
    v = mc_gguf_find(g, "k.none");
    assert_int_equal(v->type, MC_GGUF_ARRAY);
    assert_int_equal(v->arr.count, 0);

    const uint8_t *base = mc_gguf_base(g);
    uint64_t data = mc_gguf_data_offset(g);
    assert_int_equal(data % alignment, 0);
    assert_int_equal(mc_gguf_tensor_count(g), S_N_TENSORS);
    uint64_t expect_off = 0;
    for (size_t k = 0; k < S_N_TENSORS; k++) {
        const s_tdesc_t *d = &s_tensors[k];
        const mc_gguf_tensor_t *t = mc_gguf_tensor_at(g, k);
        assert_string_equal(t->name, d->name);
        assert_ptr_equal(mc_gguf_tensor_find(g, d->name), t);
        assert_int_equal(t->type, d->type);
        assert_int_equal(t->n_dims, d->n_dims);
        for (int j = 0; j < 4; j++) assert_int_equal(t->ne[j], d->ne[j]);
        assert_int_equal(t->size, d->size);
        assert_int_equal(t->offset % alignment, 0);
        assert_int_equal(t->offset, expect_off); // packed: only the padding in between
        assert_ptr_equal(t->data, base + data + t->offset);
        for (size_t j = 0; j < t->size; j++) assert_int_equal(t->data[j], s_pattern(k, j));
        uint64_t end = t->offset + t->size;
        expect_off = (end + alignment - 1) / alignment * alignment;
        for (uint64_t j = end; j < expect_off; j++) assert_int_equal(base[data + j], 0);
    }
    assert_int_equal(mc_gguf_size(g), data + expect_off); // the last tensor is padded too
}

static void test_roundtrip_mem(void **state) {
    (void)state;
    mc_gguf_writer_t *w = s_make(0);
    uint8_t *buf = NULL;
    size_t len = 0, calls = 0;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &buf, &len, err), MC_OK);
    assert_int_equal(calls, S_N_TENSORS);
    assert_memory_equal(buf, "GGUF", 4);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    assert_null(mc_gguf_find(g, "general.alignment")); // default alignment: no key, like llama.cpp
    s_check_parsed(g, 32, 0);
    mc_gguf_destroy(&g);

    // Writing again gives the same bytes.
    uint8_t *buf2 = NULL;
    size_t len2 = 0;
    calls = 0;
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &buf2, &len2, err), MC_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf2);
    free(buf);
    mc_gguf_writer_destroy(&w);
    assert_null(w);
    mc_gguf_writer_destroy(&w); // safe twice
}

static void test_alignment_64(void **state) {
    (void)state;
    assert_null(mc_gguf_writer_new(48)); // not a power of two
    mc_gguf_writer_t *w = s_make(64);
    uint8_t *buf = NULL;
    size_t len = 0, calls = 0;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &buf, &len, err), MC_OK);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    uint64_t a = 0;
    assert_int_equal(mc_gguf_find(g, "general.alignment")->type, MC_GGUF_U32);
    assert_true(mc_gguf_get_u64(g, "general.alignment", &a));
    assert_int_equal(a, 64);
    assert_string_equal(mc_gguf_kv_at(g, 0)->key, "general.alignment");
    s_check_parsed(g, 64, 1);
    mc_gguf_destroy(&g);
    free(buf);
    mc_gguf_writer_destroy(&w);
}

static void test_duplicates_rejected(void **state) {
    (void)state;
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    const uint64_t ne[2] = {32, 2};
    assert_int_equal(mc_gguf_writer_add_u32(w, "a.key", 1), MC_OK);
    assert_int_equal(mc_gguf_writer_add_u32(w, "a.key", 2), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_str(w, "a.key", "x"), MC_ERR_ARG); // any value type
    assert_int_equal(mc_gguf_writer_add_arr_f32(w, "a.key", s_f32s, 3), MC_ERR_ARG);
    // The writer owns general.alignment (set through mc_gguf_writer_new).
    assert_int_equal(mc_gguf_writer_add_u32(w, "general.alignment", 32), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_u32(w, "", 1), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "t", MC_DTYPE_Q8_0, 2, ne), MC_OK);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "t", MC_DTYPE_Q8_0, 2, ne), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "t", MC_DTYPE_F32, 1, ne), MC_ERR_ARG);
    // Keys and tensor names are separate namespaces.
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a.key", MC_DTYPE_F32, 1, ne), MC_OK);

    // Rejected adds leave no trace in the file.
    uint8_t *buf = NULL;
    size_t len = 0, calls = 0;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &buf, &len, err), MC_OK);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    assert_int_equal(mc_gguf_kv_count(g), 1);
    uint64_t u = 0;
    assert_true(mc_gguf_get_u64(g, "a.key", &u));
    assert_int_equal(u, 1);
    assert_int_equal(mc_gguf_tensor_count(g), 2);
    assert_int_equal(mc_gguf_tensor_find(g, "t")->type, MC_DTYPE_Q8_0);
    mc_gguf_destroy(&g);
    free(buf);
    mc_gguf_writer_destroy(&w);
}

static void test_bad_tensors_rejected(void **state) {
    (void)state;
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    const uint64_t ok[4] = {64, 2, 1, 1};
    const uint64_t zero[2] = {64, 0};
    const uint64_t odd[2] = {33, 2};
    const uint64_t huge[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    const uint64_t big[2] = {1ull << 62, 2}; // elements fit in u64, bytes do not
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = '\0';
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 0, ok), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 5, ok), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 2, zero), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_Q4_0, 2, odd), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_Q4_K, 2, ok), MC_ERR_ARG); // 64 % 256
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 3, huge), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 2, big), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", (mc_dtype_t)99, 2, ok), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_Q8_K, 1, (uint64_t[]){256}), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "", MC_DTYPE_F32, 2, ok), MC_ERR_ARG);
    assert_int_equal(mc_gguf_writer_add_tensor(w, long_name, MC_DTYPE_F32, 2, ok), MC_ERR_ARG);
    long_name[63] = '\0'; // 63 bytes: the longest name llama.cpp accepts
    assert_int_equal(mc_gguf_writer_add_tensor(w, long_name, MC_DTYPE_F32, 2, ok), MC_OK);
    assert_int_equal(mc_gguf_writer_add_tensor(w, "a", MC_DTYPE_F32, 4, ok), MC_OK);
    mc_gguf_writer_destroy(&w);
}

typedef struct {
    size_t fail_at;
} s_fail_ctx_t;

static mc_err_t s_fill_failing(void *ctx, size_t index, void *dst, size_t size, char *err) {
    const s_fail_ctx_t *c = ctx;
    if (index == c->fail_at) return mc_err_set(err, MC_ERR_RANGE, "synthetic failure");
    memset(dst, 0xAB, size);
    return MC_OK;
}

static size_t s_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_write_file(void **state) {
    (void)state;
    char dir[256], path[512];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    mc_gguf_writer_t *w = s_make(0);
    char err[MC_ERR_LEN] = "";
    size_t calls = 0;
    assert_int_equal(mc_gguf_writer_write_file(w, path, s_fill_pattern, &calls, err), MC_OK);
    assert_int_equal(s_count_entries(dir), 1); // no temporary file left behind
    mc_gguf_t *g = mc_gguf_open(path, err);
    assert_non_null(g);
    s_check_parsed(g, 32, 0);
    mc_gguf_destroy(&g);

    // Identical to the in-memory serialization.
    uint8_t *mem = NULL;
    size_t mem_len = 0, file_len = 0;
    calls = 0;
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &mem, &mem_len, err), MC_OK);
    uint8_t *file = mc_test_read_file(path, &file_len);
    assert_non_null(file);
    assert_int_equal(file_len, mem_len);
    assert_memory_equal(file, mem, mem_len);
    free(file);

    // A failing fill leaves the existing file untouched and no temporary behind.
    s_fail_ctx_t fc = {3};
    err[0] = '\0';
    assert_int_equal(mc_gguf_writer_write_file(w, path, s_fill_failing, &fc, err), MC_ERR_RANGE);
    assert_non_null(strstr(err, "synthetic failure"));
    assert_non_null(strstr(err, s_tensors[3].name));
    assert_int_equal(s_count_entries(dir), 1);
    file = mc_test_read_file(path, &file_len);
    assert_int_equal(file_len, mem_len);
    assert_memory_equal(file, mem, mem_len);
    free(file);

    // write_mem reports the same failure and leaves the outputs alone.
    uint8_t *untouched = (uint8_t *)"x";
    size_t untouched_len = 7;
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_failing, &fc, &untouched, &untouched_len, err),
                     MC_ERR_RANGE);
    assert_string_equal((const char *)untouched, "x");
    assert_int_equal(untouched_len, 7);

    // An unwritable destination is an I/O error with the path in the message.
    char bad[600];
    snprintf(bad, sizeof bad, "%s/missing-dir/model.gguf", dir);
    calls = 0;
    assert_int_equal(mc_gguf_writer_write_file(w, bad, s_fill_pattern, &calls, err), MC_ERR_IO);
    assert_non_null(strstr(err, "missing-dir"));

    free(mem);
    mc_gguf_writer_destroy(&w);
    unlink(path);
    rmdir(dir);
}

// A file with no tensors and no metadata is still a valid GGUF.
static void test_empty(void **state) {
    (void)state;
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    uint8_t *buf = NULL;
    size_t len = 0, calls = 0;
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_gguf_writer_write_mem(w, s_fill_pattern, &calls, &buf, &len, err), MC_OK);
    assert_int_equal(len, 32); // 24-byte header padded to the alignment
    assert_int_equal(calls, 0);
    for (size_t i = 24; i < 32; i++) assert_int_equal(buf[i], 0);
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    assert_int_equal(mc_gguf_kv_count(g), 0);
    assert_int_equal(mc_gguf_tensor_count(g), 0);
    mc_gguf_destroy(&g);
    free(buf);
    mc_gguf_writer_destroy(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_mem),       cmocka_unit_test(test_alignment_64),
        cmocka_unit_test(test_duplicates_rejected), cmocka_unit_test(test_bad_tensors_rejected),
        cmocka_unit_test(test_write_file),          cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
