/*
 * test_safetensors: the safetensors reader on files assembled in the test
 * (one and several tensors, the three float types and U8, metadata, padding, empty
 * and scalar tensors, the writer's output), on hostile headers (short files,
 * header lengths past the end, truncated and non-object JSON, missing and
 * malformed fields, negative, fractional, huge and overflowing shapes, data
 * offsets out of range, inverted, mismatched or overlapping, duplicate names,
 * unsupported dtypes, every truncation and random corruption), and the model
 * folder reader (single file, shards with an index, and indexes that point
 * outside the folder, at missing or wrong shards, or leave tensors out).
 * Buffers are exact-size allocations so AddressSanitizer sees any overread.
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

#include "error.h"
#include "rng.h"
#include "safetensors.h"
#include "testutil.h"

// A file image: 8-byte length, header text, data bytes (pattern i * 7 + 1).
static uint8_t *s_image(const char *header, size_t data_len, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static void s_expect_fail(const char *header, size_t data_len, const char *needle) {
    size_t len;
    uint8_t *b = s_image(header, data_len, &len);
    char err[MC_ERR_LEN] = "";
    mc_safetensors_t *st = mc_safetensors_parse(b, len, err);
    if (st) fail_msg("parse of '%s' succeeded; expected an error containing '%s'", header, needle);
    if (!strstr(err, needle)) fail_msg("error '%s' (header '%s') does not contain '%s'", err, header, needle);
    free(b);
}

static mc_safetensors_t *s_parse_ok(const char *header, size_t data_len, uint8_t **buf) {
    size_t len;
    *buf = s_image(header, data_len, &len);
    char err[MC_ERR_LEN] = "";
    mc_safetensors_t *st = mc_safetensors_parse(*buf, len, err);
    if (!st) fail_msg("parse of '%s' failed: %s", header, err);
    return st;
}

// --- good files ------------------------------------------------------------------

static void test_one_tensor(void **state) {
    (void)state;
    uint8_t *b;
    mc_safetensors_t *st = s_parse_ok("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, &b);
    assert_int_equal(mc_safetensors_count(st), 1);
    const mc_safetensors_tensor_t *t = mc_safetensors_find(st, "w");
    assert_non_null(t);
    assert_ptr_equal(t, mc_safetensors_at(st, 0));
    assert_null(mc_safetensors_at(st, 1));
    assert_null(mc_safetensors_find(st, "v"));
    assert_int_equal(t->dtype, MC_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->n_elems, 6);
    assert_int_equal(t->size, 24);
    const size_t hl = strlen("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}");
    assert_ptr_equal(t->data, b + 8 + hl);
    mc_safetensors_destroy(&st);
    assert_null(st);
    mc_safetensors_destroy(&st); // twice is fine
    free(b);
}

static void test_several_tensors(void **state) {
    (void)state;
    // Not in offset order, with metadata, all three dtypes, a scalar and an
    // empty tensor, and space padding after the object.
    const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]},"
                    "\"a\":{\"dtype\":\"F16\",\"shape\":[2,2,2],\"data_offsets\":[0,16]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[28,28]}}      ";
    uint8_t *b;
    mc_safetensors_t *st = s_parse_ok(h, 28, &b);
    assert_int_equal(mc_safetensors_count(st), 4);
    assert_string_equal(mc_safetensors_at(st, 0)->name, "b"); // header order
    const mc_safetensors_tensor_t *a = mc_safetensors_find(st, "a"), *bb = mc_safetensors_find(st, "b");
    const mc_safetensors_tensor_t *s = mc_safetensors_find(st, "s"), *e = mc_safetensors_find(st, "e");
    assert_non_null(a);
    assert_non_null(bb);
    assert_non_null(s);
    assert_non_null(e);
    assert_null(mc_safetensors_find(st, "__metadata__"));
    assert_int_equal(a->dtype, MC_DTYPE_F16);
    assert_int_equal(a->n_dims, 3);
    assert_int_equal(a->n_elems, 8);
    assert_int_equal(bb->dtype, MC_DTYPE_BF16);
    assert_int_equal(bb->offset, 16);
    assert_int_equal(bb->data[0], (uint8_t)(16 * 7 + 1));
    assert_int_equal(s->n_dims, 0);
    assert_int_equal(s->n_elems, 1);
    assert_int_equal(e->n_elems, 0);
    assert_int_equal(e->size, 0);
    mc_safetensors_destroy(&st);
    free(b);
}

static void test_write_read(void **state) {
    (void)state;
    char dir[512], path[600];
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    const float f[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    const uint16_t h[3] = {0x3C00, 0xC000, 0x7BFF}, bf[2] = {0x3F80, 0x4049};
    // U8: GPT-OSS's MXFP4 blocks (4 dims) and scales, one byte an element.
    const uint8_t u8[2 * 1 * 1 * 3] = {0x10, 0x32, 0x54, 0xFF, 0x00, 0x7F};
    const uint64_t s0[2] = {2, 3}, s1[1] = {3}, s2[2] = {1, 2}, s3[4] = {2, 1, 1, 3};
    const mc_safetensors_desc_t d[4] = {{"model.f", MC_DTYPE_F32, 2, s0, f},
                                        {"h \"quoted\"", MC_DTYPE_F16, 1, s1, h},
                                        {"bf", MC_DTYPE_BF16, 2, s2, bf},
                                        {"experts.gate_up_proj_blocks", MC_SAFETENSORS_U8, 4, s3, u8}};
    const char *meta[2] = {"format", "pt"};
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_safetensors_write(path, d, 4, meta, 1, err), MC_OK);
    mc_safetensors_t *st = mc_safetensors_open(path, err);
    if (!st) fail_msg("%s", err);
    assert_int_equal(mc_safetensors_count(st), 4);
    assert_int_equal(mc_safetensors_find(st, "experts.gate_up_proj_blocks")->size, 6);
    for (int i = 0; i < 4; i++) {
        const mc_safetensors_tensor_t *t = mc_safetensors_find(st, d[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, d[i].dtype);
        assert_int_equal(t->n_dims, d[i].n_dims);
        assert_memory_equal(t->data, d[i].data, t->size);
    }
    mc_safetensors_destroy(&st);
    // The header is padded so the data section starts 8-byte aligned.
    size_t len;
    uint8_t *raw = mc_test_read_file(path, &len);
    assert_non_null(raw);
    uint64_t hl = 0;
    memcpy(&hl, raw, 8);
    assert_int_equal(hl % 8, 0);
    free(raw);
    // Opening what is not there, a folder, or an empty file fails cleanly.
    assert_null(mc_safetensors_open("/nonexistent/x.safetensors", err));
    assert_non_null(strstr(err, "cannot open"));
    assert_null(mc_safetensors_open(dir, err));
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fclose(fp);
    assert_null(mc_safetensors_open(path, err));
    assert_non_null(strstr(err, "empty"));
    mc_test_rmtree(dir);
}

// --- hostile files ------------------------------------------------------------------

static void test_bad_lengths(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    for (size_t n = 0; n < 8; n++) {
        uint8_t *b = malloc(n ? n : 1);
        memset(b, 0, n ? n : 1);
        assert_null(mc_safetensors_parse(b, n, err));
        assert_non_null(strstr(err, "too short"));
        free(b);
    }
    // Header length beyond the file, including values that overflow 8 + N.
    const uint64_t lens[] = {100, UINT64_MAX, UINT64_MAX - 7, (uint64_t)1 << 63};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t *b = malloc(16);
        memcpy(b, &lens[i], 8);
        memcpy(b + 8, "{}      ", 8);
        assert_null(mc_safetensors_parse(b, 16, err));
        assert_non_null(strstr(err, "beyond the file"));
        free(b);
    }
    // A zero-length header is not a JSON object.
    uint8_t *b = calloc(1, 8);
    assert_null(mc_safetensors_parse(b, 8, err));
    assert_non_null(strstr(err, "not a JSON object"));
    free(b);
    assert_null(mc_safetensors_parse(NULL, 0, err));
}

static void test_bad_json(void **state) {
    (void)state;
    s_expect_fail("[1,2]", 0, "not a JSON object");
    s_expect_fail("\"x\"", 0, "not a JSON object");
    s_expect_fail("42", 0, "not a JSON object");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "not valid JSON");
    s_expect_fail("{\"w\":", 0, "not valid JSON");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\"", 0, "not valid JSON");
    s_expect_fail("{} x", 0, "text after");
    s_expect_fail("{}{}", 0, "text after");
    s_expect_fail("{\"w\":3}", 0, "not an object");
    // Every truncation of a good header is rejected (the declared length
    // is patched to the truncated text, so the JSON itself is cut).
    const char *good = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    for (size_t cut = 0; cut < strlen(good); cut++) {
        char h[256];
        snprintf(h, sizeof h, "%.*s", (int)cut, good);
        size_t len;
        uint8_t *b = s_image(h, 4, &len);
        char err[MC_ERR_LEN] = "";
        mc_safetensors_t *st = mc_safetensors_parse(b, len, err);
        if (st) fail_msg("truncated header '%s' parsed", h);
        free(b);
    }
}

static void test_bad_fields(void **state) {
    (void)state;
    s_expect_fail("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "lacks 'dtype'");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "lacks 'shape'");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "lacks 'data_offsets'");
    s_expect_fail("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "shape is not an array");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "not a pair");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "not a pair");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0}}}", 4, "not a pair");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", 4, "not whole numbers");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "not whole numbers");
    s_expect_fail("{\"__metadata__\":[1],\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "__metadata__ is not an object");
    s_expect_fail("{\"__metadata__\":{\"a\":1}}", 0, "__metadata__ value 'a' is not a string");
    s_expect_fail("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice");
}

static void test_bad_shapes(void **state) {
    (void)state;
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,4]}}", 4, "dimension 0 is negative");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12, "dimension 1 is not a whole");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e30],\"data_offsets\":[0,4]}}", 4, "not a whole number in range");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],\"data_offsets\":[0,4]}}", 4,
                  "not a whole number in range");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "not a whole number");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4,
                  "overflows");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                  "more than 8 dimensions");
    // A huge but representable shape is caught by the size check.
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4]}}", 4,
                  "need 4000000000000");
}

static void test_bad_offsets(void **state) {
    (void)state;
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside the data section");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "outside the data section");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,9007199254740992]}}", 4,
                  "outside the data section");
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "need 8");
    s_expect_fail("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "need 4");
    s_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12, "overlap");
    s_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                  "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
                  12, "overlap");
    // Two names on the same bytes are an overlap too; empty tensors overlap nothing.
    s_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                  4, "overlap");
    uint8_t *b;
    mc_safetensors_t *st = s_parse_ok("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]}}",
                                      4, &b);
    mc_safetensors_destroy(&st);
    free(b);
}

static void test_bad_names_types(void **state) {
    (void)state;
    s_expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "'w' appears twice");
    s_expect_fail("{\"tok\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'tok' has dtype I64, which is not supported");
    s_expect_fail("{\"q\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "dtype I8, which is not supported");
    s_expect_fail("{\"u\":{\"dtype\":\"U8\",\"shape\":[3,2],\"data_offsets\":[0,5]}}", 5, "need 6");
    s_expect_fail("{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "F8_E4M3");
    s_expect_fail("{\"q\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype 'Q4'");
    s_expect_fail("{\"q\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
}

// Every prefix of a good file, and random corruption of it: errors, never crashes.
static void test_truncation_and_corruption(void **state) {
    (void)state;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"x\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                    "\"y\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]}}";
    size_t len;
    uint8_t *good = s_image(h, 24, &len);
    char err[MC_ERR_LEN];
    for (size_t n = 0; n < len; n++) {
        uint8_t *b = malloc(n ? n : 1);
        memcpy(b, good, n);
        mc_safetensors_t *st = mc_safetensors_parse(b, n, err);
        if (st) fail_msg("prefix of %zu of %zu bytes parsed", n, len);
        free(b);
    }
    mc_rng_t rng;
    mc_rng_seed(&rng, 7);
    size_t parsed = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *b = malloc(len);
        memcpy(b, good, len);
        int flips = 1 + (int)(mc_rng_next(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(mc_rng_next(&rng) % len);
            b[at] = (uint8_t)mc_rng_next(&rng);
        }
        mc_safetensors_t *st = mc_safetensors_parse(b, len, err);
        if (st) {
            parsed++;
            for (size_t i = 0; i < mc_safetensors_count(st); i++) {
                const mc_safetensors_tensor_t *t = mc_safetensors_at(st, i);
                assert_true(t->data >= b + 8 && t->data + t->size <= b + len);
                assert_ptr_equal(mc_safetensors_find(st, t->name), t);
            }
            mc_safetensors_destroy(&st);
        }
        free(b);
    }
    assert_true(parsed > 0); // flips in the data section leave the file valid
    free(good);
}

// --- model folders -----------------------------------------------------------------

static void s_write_text(const char *dir, const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void s_write_st(const char *dir, const char *name, const char *const *tensors, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    static const float data[4] = {1, 2, 3, 4};
    static const uint64_t shape[1] = {4};
    mc_safetensors_desc_t d[8];
    for (size_t i = 0; i < n; i++) d[i] = (mc_safetensors_desc_t){tensors[i], MC_DTYPE_F32, 1, shape, data};
    char err[MC_ERR_LEN];
    assert_int_equal(mc_safetensors_write(path, d, n, NULL, 0, err), MC_OK);
}

static void s_dir_fail(const char *dir, const char *needle) {
    char err[MC_ERR_LEN] = "";
    mc_safetensors_dir_t *d = mc_safetensors_dir_open(dir, err);
    if (d) fail_msg("folder opened; expected an error containing '%s'", needle);
    if (!strstr(err, needle)) fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_dir(void **state) {
    (void)state;
    char dir[512], err[MC_ERR_LEN] = "";
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    s_dir_fail(dir, "no model.safetensors.index.json or model.safetensors");

    const char *one[2] = {"a", "b"};
    s_write_st(dir, "model.safetensors", one, 2);
    mc_safetensors_dir_t *d = mc_safetensors_dir_open(dir, err);
    if (!d) fail_msg("%s", err);
    assert_int_equal(mc_safetensors_dir_count(d), 2);
    assert_int_equal(mc_safetensors_dir_shards(d), 1);
    assert_int_equal(mc_safetensors_dir_find(d, "b"), 1);
    assert_int_equal(mc_safetensors_dir_find(d, "c"), SIZE_MAX);
    mc_safetensors_dir_destroy(&d);
    assert_null(d);

    // Shards with an index take precedence over model.safetensors.
    const char *s1[2] = {"x.0", "x.1"}, *s2[1] = {"x.2"};
    s_write_st(dir, "m-1.safetensors", s1, 2);
    s_write_st(dir, "m-2.safetensors", s2, 1);
    s_write_text(dir, "model.safetensors.index.json",
                 "{\"metadata\":{\"total_size\":48},\"weight_map\":{\"x.0\":\"m-1.safetensors\","
                 "\"x.2\":\"m-2.safetensors\",\"x.1\":\"m-1.safetensors\"}}");
    d = mc_safetensors_dir_open(dir, err);
    if (!d) fail_msg("%s", err);
    assert_int_equal(mc_safetensors_dir_count(d), 3);
    assert_int_equal(mc_safetensors_dir_shards(d), 2);
    for (int i = 0; i < 3; i++) {
        char n[16];
        snprintf(n, sizeof n, "x.%d", i);
        size_t k = mc_safetensors_dir_find(d, n);
        assert_true(k < 3);
        assert_string_equal(mc_safetensors_dir_at(d, k)->name, n);
    }
    assert_null(mc_safetensors_dir_at(d, 3));
    mc_safetensors_dir_destroy(&d);

    // Hostile or inconsistent indexes.
    static const struct {
        const char *index, *needle;
    } bad[] = {
        {"{\"weight_map\":{\"x.0\":\"../m-1.safetensors\"}}", "not a plain file name"},
        {"{\"weight_map\":{\"x.0\":\"/etc/passwd\"}}", "not a plain file name"},
        {"{\"weight_map\":{\"x.0\":\"sub/m-1.safetensors\"}}", "not a plain file name"},
        {"{\"weight_map\":{\"x.0\":\"..\"}}", "not a plain file name"},
        {"{\"weight_map\":{\"x.0\":\"\"}}", "not a plain file name"},
        {"{\"weight_map\":{\"x.0\":3}}", "is not a file name"},
        {"{\"weight_map\":[]}", "weight_map"},
        {"[]", "weight_map"},
        {"{\"weight_map\":{}}", "empty"},
        {"{\"weight_map\":{\"x.0\":\"m-3.safetensors\"}}", "cannot open"},
        {"{\"weight_map\":{\"x.0\":\"m-2.safetensors\",\"x.1\":\"m-1.safetensors\",\"x.2\":\"m-2.safetensors\"}}",
         "listed in 'm-2.safetensors' but stored in 'm-1.safetensors'"},
        {"{\"weight_map\":{\"x.0\":\"m-1.safetensors\",\"x.2\":\"m-2.safetensors\"}}", "'x.1' of shard"},
        {"{\"weight_map\":{\"x.0\":\"m-1.safetensors\",\"x.1\":\"m-1.safetensors\",\"x.2\":\"m-2.safetensors\","
         "\"x.1\":\"m-1.safetensors\"}}",
         "listed twice"},
        {"{\"weight_map\":{\"x.0\":\"m-1.safetensors\",\"x.1\":\"m-1.safetensors\",\"x.9\":\"m-2.safetensors\"}}",
         "'x.9' is not in its shard"},
        {"{\"weight_map\":", "weight_map"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_write_text(dir, "model.safetensors.index.json", bad[i].index);
        s_dir_fail(dir, bad[i].needle);
    }
    // A name in two shards.
    const char *dup[1] = {"x.0"};
    s_write_st(dir, "m-2.safetensors", dup, 1);
    s_write_text(dir, "model.safetensors.index.json",
                 "{\"weight_map\":{\"x.0\":\"m-1.safetensors\",\"x.1\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\"}}");
    s_dir_fail(dir, "in two shard files");
    // A shard that is not a safetensors file names itself.
    s_write_text(dir, "m-2.safetensors", "not a safetensors file");
    s_dir_fail(dir, "m-2.safetensors: safetensors: header length");
    mc_test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_tensor),
        cmocka_unit_test(test_several_tensors),
        cmocka_unit_test(test_write_read),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_bad_names_types),
        cmocka_unit_test(test_truncation_and_corruption),
        cmocka_unit_test(test_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
