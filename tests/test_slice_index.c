/*
 * test_slice_index: the content hashes of expert slices and their index
 * file. A hash covers exactly its slice (a flipped weight byte changes that
 * slice's hash and no other; the layout does not matter); an index is
 * computed once, saved beside the model (or in the cache folder, or kept in
 * memory) and loaded on the next open, for every pair or only those asked
 * for; truncated, damaged, stale and hand-crafted bad index files are
 * refused by the parser or ignored and recomputed, never trusted.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "mkmodel.h"
#include "model.h"
#include "pool.h"
#include "slice_index.h"
#include "testutil.h"

#define NL 2
#define NE 8
#define H MC_SLICE_HASH_BYTES

static char s_dir[256];

static int s_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

// A generated model (2 layers x 8 experts) at DIR/sub/name, sub created.
static const char *s_write_model(const char *sub, const char *name, bool legacy, uint64_t seed, char *path, size_t cap) {
    char err[MC_ERR_LEN], dir[400];
    snprintf(dir, sizeof dir, "%s/%.64s", s_dir, sub);
    mkdir(dir, 0755);
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.legacy_layout = legacy, p.seed = seed;
    snprintf(path, cap, "%s/%.64s", dir, name);
    if (mc_mkmodel_write(&p, path, err) != MC_OK) fail_msg("mkmodel: %s", err);
    return path;
}

static mc_model_t *s_open(const char *path) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(path, err);
    if (!m) fail_msg("%s", err);
    return m;
}

static void s_write_file(const char *path, const uint8_t *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

// Copy src to dst with byte `at` flipped.
static void s_copy_flipped(const char *src, const char *dst, size_t at) {
    size_t len;
    uint8_t *b = mc_test_read_file(src, &len);
    assert_non_null(b);
    assert_true(at < len);
    b[at] ^= 0x01;
    s_write_file(dst, b, len);
    free(b);
}

// Every hash of m, computed on its own.
static void s_all_hashes(const mc_model_t *m, uint8_t *out) {
    for (uint32_t l = 0; l < m->hp.n_layer; l++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++)
            assert_int_equal(mc_slice_hash(m, l, e, out + ((size_t)l * m->hp.n_expert + e) * H), MC_OK);
}

static mc_slice_index_t *s_index(const mc_model_t *m, const char *cache_dir) {
    char err[MC_ERR_LEN];
    mc_slice_index_t *x = mc_slice_index_open(m, m->path, cache_dir, err);
    if (!x) fail_msg("open: %s", err);
    return x;
}

static bool s_exists(const char *path) { return access(path, F_OK) == 0; }

// --- hashes ---------------------------------------------------------------------------------

static void test_hash_each_slice(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("each", "m.gguf", false, 1, path, sizeof path));
    uint8_t want[NL * NE * H];
    s_all_hashes(m, want);
    // Random weights: every slice different.
    for (int i = 0; i < NL * NE; i++)
        for (int j = 0; j < i; j++) assert_memory_not_equal(want + i * H, want + j * H, H);
    uint8_t h[H];
    assert_int_equal(mc_slice_hash(m, NL, 0, h), MC_ERR_RANGE);
    assert_int_equal(mc_slice_hash(m, 0, NE, h), MC_ERR_RANGE);
    // The hash is BLAKE2b-256 of the 36-byte descriptor and the three matrices.
    const mc_expert_t *x = &m->layers[1].experts[3];
    uint8_t desc[36];
    const mc_matrix_t *w[3] = {&x->gate, &x->up, &x->down};
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, H);
    for (int i = 0; i < 3; i++) {
        uint32_t v[3] = {(uint32_t)w[i]->type, w[i]->n_in, w[i]->n_out};
        memcpy(desc + 12 * i, v, sizeof v);
    }
    crypto_generichash_update(&st, desc, sizeof desc);
    for (int i = 0; i < 3; i++) crypto_generichash_update(&st, w[i]->data, (size_t)w[i]->n_out * w[i]->row_bytes);
    crypto_generichash_final(&st, h, H);
    assert_memory_equal(h, want + (1 * NE + 3) * H, H);

    // A fill of everything, on this thread and on a pool, gives the same table.
    mc_slice_source_t src;
    assert_int_equal(mc_slice_source(m, path, &src, err), MC_OK);
    mc_slice_index_t *a = mc_slice_index_new(&src, err), *b = mc_slice_index_new(&src, err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(mc_slice_index_known(a), 0);
    assert_null(mc_slice_index_hash(a, 0, 0));
    mc_pool_t *pool = mc_pool_new(2);
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_fill(a, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE);
    assert_true(s.bytes == (uint64_t)NL * NE * 3 * 64 * 128 * 4);
    assert_int_equal(mc_slice_index_fill(b, m, NULL, pool, false, NULL, err), MC_OK);
    assert_int_equal(mc_slice_index_known(a), NL * NE);
    assert_memory_equal(mc_slice_index_table(a), want, sizeof want);
    assert_memory_equal(mc_slice_index_table(b), want, sizeof want);
    assert_memory_equal(mc_slice_index_hash(a, 1, 7), want + (NE + 7) * H, H);
    assert_null(mc_slice_index_hash(a, NL, 0));
    // Nothing left to do the second time.
    assert_int_equal(mc_slice_index_fill(a, m, NULL, pool, false, &s, err), MC_OK);
    assert_int_equal(s.slices, 0);
    // Another model's index is refused.
    mc_slice_source_t other = src;
    other.fingerprint ^= 1;
    mc_slice_index_t *c = mc_slice_index_new(&other, err);
    assert_int_equal(mc_slice_index_fill(c, m, NULL, NULL, false, NULL, err), MC_ERR_ARG);
    assert_int_equal(mc_slice_index_known(c), 0);
    mc_slice_index_destroy(&c);
    mc_slice_index_destroy(&a);
    mc_slice_index_destroy(&a);
    mc_slice_index_destroy(&b);
    mc_pool_destroy(&pool);
    mc_model_destroy(&m);
}

// The merged and legacy layouts of one seed hold the same weights: same
// slice hashes, though the headers (and fingerprints) differ.
static void test_layouts_hash_alike(void **state) {
    (void)state;
    char a[512], b[512];
    mc_model_t *merged = s_open(s_write_model("layouts", "merged.gguf", false, 7, a, sizeof a));
    mc_model_t *legacy = s_open(s_write_model("layouts", "legacy.gguf", true, 7, b, sizeof b));
    assert_true(legacy->legacy_experts);
    assert_true(mc_model_fingerprint(merged) != mc_model_fingerprint(legacy));
    uint8_t hm[NL * NE * H], hl[NL * NE * H];
    s_all_hashes(merged, hm);
    s_all_hashes(legacy, hl);
    assert_memory_equal(hm, hl, sizeof hm);
    mc_model_destroy(&merged);
    mc_model_destroy(&legacy);
}

// One flipped weight byte: the same header (fingerprint), exactly one slice
// hash changed. A byte of an attention matrix changes none (a node never
// multiplies it).
static void test_flipped_byte_changes_its_slice(void **state) {
    (void)state;
    char path[512], flip[600], attn[600];
    mc_model_t *m = s_open(s_write_model("flip", "m.gguf", false, 3, path, sizeof path));
    const uint8_t *base = mc_gguf_base(m->gguf);
    const mc_expert_t *x = &m->layers[1].experts[5];
    snprintf(flip, sizeof flip, "%s/flip/flipped.gguf", s_dir);
    s_copy_flipped(path, flip, (size_t)(x->down.data - base) + 1000);
    snprintf(attn, sizeof attn, "%s/flip/attn.gguf", s_dir);
    s_copy_flipped(path, attn, (size_t)(m->layers[0].wq.data - base) + 5);
    mc_model_t *f = s_open(flip), *a = s_open(attn);
    assert_true(mc_model_fingerprint(f) == mc_model_fingerprint(m));
    uint8_t hm[NL * NE * H], hf[NL * NE * H], ha[NL * NE * H];
    s_all_hashes(m, hm);
    s_all_hashes(f, hf);
    s_all_hashes(a, ha);
    for (uint32_t i = 0; i < NL * NE; i++) {
        if (i == 1 * NE + 5) assert_memory_not_equal(hm + i * H, hf + i * H, H);
        else assert_memory_equal(hm + i * H, hf + i * H, H);
    }
    assert_memory_equal(hm, ha, sizeof hm);
    mc_model_destroy(&m);
    mc_model_destroy(&f);
    mc_model_destroy(&a);
}

// --- files ----------------------------------------------------------------------------------

// Computed once, saved beside the model, loaded on the next open.
static void test_saved_beside_and_loaded(void **state) {
    (void)state;
    char path[512], beside[600], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("beside", "m.gguf", false, 1, path, sizeof path));
    snprintf(beside, sizeof beside, "%s.mcidx", path);
    char cache[600];
    snprintf(cache, sizeof cache, "%s/beside-cache", s_dir);
    mc_slice_index_t *x = s_index(m, cache);
    assert_int_equal(mc_slice_index_known(x), 0);
    assert_null(mc_slice_index_path(x));
    assert_string_equal(mc_slice_index_note(x), "");
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE);
    assert_non_null(s.saved);
    assert_string_equal(s.saved, beside);
    assert_string_equal(mc_slice_index_path(x), beside);
    assert_false(s_exists(cache)); // beside was writable: the cache folder is not even made
    uint8_t want[NL * NE * H];
    s_all_hashes(m, want);
    mc_slice_index_destroy(&x);

    x = s_index(m, cache);
    assert_int_equal(mc_slice_index_known(x), NL * NE);
    assert_string_equal(mc_slice_index_path(x), beside);
    assert_memory_equal(mc_slice_index_table(x), want, sizeof want);
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, 0);
    assert_null(s.saved);
    // The file parses back to the bytes it holds, and save writes them again.
    size_t len;
    uint8_t *file = mc_test_read_file(beside, &len), *again;
    size_t again_len;
    mc_slice_index_t *p = mc_slice_index_parse(file, len, err);
    assert_non_null(p);
    assert_int_equal(mc_slice_index_serialize(p, &again, &again_len, err), MC_OK);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, file, len);
    assert_int_equal(len, 48 + NL * NE * 33 + 32);
    free(file), free(again);
    mc_slice_index_destroy(&p);
    mc_slice_index_destroy(&x);
    mc_model_destroy(&m);
}

// Only the pairs asked for are hashed (a node with a share of the experts);
// the rest come later, and what was saved is kept.
static void test_subset(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("subset", "m.gguf", false, 2, path, sizeof path));
    uint8_t want[NL * NE * H], held[NL * NE] = {0};
    s_all_hashes(m, want);
    held[1] = held[NE + 7] = 1;
    mc_slice_index_t *x = s_index(m, "");
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_ensure(x, m, held, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, 2);
    assert_true(s.bytes == 2ull * 3 * 64 * 128 * 4);
    assert_non_null(s.saved);
    assert_int_equal(mc_slice_index_known(x), 2);
    assert_memory_equal(mc_slice_index_hash(x, 0, 1), want + 1 * H, H);
    assert_memory_equal(mc_slice_index_hash(x, 1, 7), want + (NE + 7) * H, H);
    assert_null(mc_slice_index_hash(x, 0, 0));
    static const uint8_t zero[H];
    assert_memory_equal(mc_slice_index_table(x), zero, H); // unknown: zero in the table
    mc_slice_index_destroy(&x);

    x = s_index(m, "");
    assert_int_equal(mc_slice_index_known(x), 2);
    held[2] = 1;
    assert_int_equal(mc_slice_index_ensure(x, m, held, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, 1);
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE - 3);
    assert_memory_equal(mc_slice_index_table(x), want, sizeof want);
    mc_slice_index_destroy(&x);
    mc_model_destroy(&m);
}

// Damaged index files: ignored with a note, recomputed, replaced.
static void s_expect_recomputed(const mc_model_t *m, const char *beside, const char *note, const uint8_t *want) {
    char err[MC_ERR_LEN];
    mc_slice_index_t *x = s_index(m, "");
    assert_int_equal(mc_slice_index_known(x), 0);
    assert_null(mc_slice_index_path(x));
    if (!strstr(mc_slice_index_note(x), note)) fail_msg("note '%s' lacks '%s'", mc_slice_index_note(x), note);
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE);
    assert_non_null(s.saved);
    assert_memory_equal(mc_slice_index_table(x), want, (size_t)NL * NE * H);
    mc_slice_index_destroy(&x);
    x = s_index(m, ""); // the replacement is good
    assert_int_equal(mc_slice_index_known(x), NL * NE);
    assert_string_equal(mc_slice_index_path(x), beside);
    mc_slice_index_destroy(&x);
}

static void test_bad_files_recomputed(void **state) {
    (void)state;
    char path[512], beside[600], other[512], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("bad", "m.gguf", false, 4, path, sizeof path));
    snprintf(beside, sizeof beside, "%s.mcidx", path);
    uint8_t want[NL * NE * H];
    s_all_hashes(m, want);
    mc_slice_index_t *x = s_index(m, "");
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, NULL, err), MC_OK);
    mc_slice_index_destroy(&x);
    size_t len;
    uint8_t *good = mc_test_read_file(beside, &len);
    assert_non_null(good);

    // Truncated.
    s_write_file(beside, good, len - 10);
    s_expect_recomputed(m, beside, "expected", want);
    // One hash byte flipped: the checksum catches it.
    uint8_t *bad = malloc(len);
    memcpy(bad, good, len);
    bad[48 + NL * NE + 5 * H + 3] ^= 0x80;
    s_write_file(beside, bad, len);
    s_expect_recomputed(m, beside, "checksum mismatch", want);
    // Not an index at all.
    s_write_file(beside, (const uint8_t *)"hello", 5);
    s_expect_recomputed(m, beside, "too short", want);
    // Another model's index, valid in itself.
    mc_mkmodel_params_t op = mc_mkmodel_params_default();
    op.ctx_len = 4096; // another header, the same shape
    snprintf(other, sizeof other, "%s/bad/o.gguf", s_dir);
    assert_int_equal(mc_mkmodel_write(&op, other, err), MC_OK);
    mc_model_t *o = s_open(other);
    mc_slice_index_t *ox = s_index(o, "");
    assert_int_equal(mc_slice_index_ensure(ox, o, NULL, NULL, false, NULL, err), MC_OK);
    mc_slice_index_destroy(&ox);
    mc_model_destroy(&o);
    size_t olen;
    uint8_t *ob = mc_test_read_file(strcat(other, ".mcidx"), &olen);
    s_write_file(beside, ob, olen);
    free(ob);
    s_expect_recomputed(m, beside, "stale (made for another model header)", want);
    // Stale: the model was rewritten after the index was made (the same
    // bytes here, a new modification time).
    mc_model_destroy(&m);
    s_write_file(beside, good, len);
    struct timespec t[2] = {{0, UTIME_OMIT}, {1700000000, 5}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
    m = s_open(path);
    s_expect_recomputed(m, beside, "stale (the model was modified after it)", want);
    free(bad), free(good);
    mc_model_destroy(&m);
}

// Recompute the checksum of an index file's bytes after an edit.
static void s_reseal(uint8_t *b, size_t len) { crypto_generichash(b + len - 32, 32, b, len - 32, NULL, 0); }

static void s_expect_parse_error(const uint8_t *b, size_t len, const char *want) {
    char err[MC_ERR_LEN] = "";
    mc_slice_index_t *x = mc_slice_index_parse(b, len, err);
    if (x) fail_msg("parsed an index that should fail with '%s'", want);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
}

// Hand-crafted headers and bodies (resealed, so the check past the checksum
// is what refuses them).
static void test_bad_headers_refused(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const mc_slice_source_t src = {0x1234, 5000, 42, 3, 4};
    mc_slice_index_t *x = mc_slice_index_new(&src, err);
    uint8_t *good, *b;
    size_t len;
    assert_int_equal(mc_slice_index_serialize(x, &good, &len, err), MC_OK);
    assert_int_equal(len, 48 + 12 * 33 + 32);
    mc_slice_index_destroy(&x);
    b = malloc(len + 1);
#define EDIT(field, value)                                                                                             \
    do {                                                                                                               \
        memcpy(b, good, len);                                                                                          \
        mc_slice_index_header_t h;                                                                                     \
        memcpy(&h, b, sizeof h);                                                                                       \
        h.field = value;                                                                                               \
        memcpy(b, &h, sizeof h);                                                                                       \
        s_reseal(b, len);                                                                                              \
    } while (0)
    EDIT(magic[0], 'X');
    s_expect_parse_error(b, len, "bad magic");
    EDIT(version, MC_SLICE_INDEX_VERSION + 1);
    s_expect_parse_error(b, len, "version 3");
    // Version 1's GPT-OSS hashes left the biases out: recomputed, not read.
    EDIT(version, 1);
    s_expect_parse_error(b, len, "version 1");
    EDIT(hash_bytes, 16);
    s_expect_parse_error(b, len, "16-byte hashes");
    EDIT(n_layer, 0);
    s_expect_parse_error(b, len, "0 layers x 4 experts");
    EDIT(n_layer, 1025);
    s_expect_parse_error(b, len, "1025 layers");
    EDIT(n_expert, 0);
    s_expect_parse_error(b, len, "3 layers x 0 experts");
    EDIT(n_expert, 257);
    s_expect_parse_error(b, len, "257 experts");
    // The shape must match the length exactly.
    EDIT(n_expert, 5);
    s_expect_parse_error(b, len, "expected 575 for 3 x 5 slices");
    EDIT(n_layer, 0xFFFFFFFFu);
    s_expect_parse_error(b, len, "4294967295 layers");
#undef EDIT
    memcpy(b, good, len);
    s_expect_parse_error(b, len - 1, "expected");
    s_expect_parse_error(b, 79, "too short");
    s_expect_parse_error(b, 0, "too short");
    b[len] = 0;
    s_reseal(b, len); // len + 1 bytes with a valid checksum over the first len - 32: still the wrong length
    s_expect_parse_error(b, len + 1, "expected");
    memcpy(b, good, len);
    b[48 + 3] = 2; // a known flag must be 0 or 1
    s_reseal(b, len);
    s_expect_parse_error(b, len, "known flag 2 of slice 3");
    memcpy(b, good, len);
    b[48 + 12 + 7 * H] = 9; // an unknown slice carries no hash
    s_reseal(b, len);
    s_expect_parse_error(b, len, "slice 7 is not known but has a hash");
    memcpy(b, good, len);
    b[20] ^= 1; // the fingerprint, without resealing
    s_expect_parse_error(b, len, "checksum mismatch");
    // The untouched bytes parse.
    x = mc_slice_index_parse(good, len, err);
    assert_non_null(x);
    assert_true(mc_slice_source_equal(mc_slice_index_source(x), &src));
    mc_slice_index_destroy(&x);
    // A shape no model has cannot even be made.
    mc_slice_source_t big = src;
    big.n_layer = 1025;
    assert_null(mc_slice_index_new(&big, err));
    free(b), free(good);
}

// A read-only model folder: the index goes to the cache folder under a name
// keyed by path, size, mtime and fingerprint; an older entry for the same
// path is removed when the model changes. No cache folder: memory only.
static void test_cache_folder_and_memory_only(void **state) {
    (void)state;
    char path[512], dir[600], cache[600], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("ro", "m.gguf", false, 6, path, sizeof path));
    snprintf(dir, sizeof dir, "%s/ro", s_dir);
    snprintf(cache, sizeof cache, "%s/cache/moe-cluster", s_dir);
    assert_int_equal(chmod(dir, 0555), 0); // read-only even for root (the mode bits are respected)
    mc_slice_index_t *x = s_index(m, cache);
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_non_null(s.saved);
    assert_int_equal(strncmp(s.saved, cache, strlen(cache)), 0);
    assert_false(s_exists(strcat(strcpy(err, path), ".mcidx")));
    const char *name = s.saved + strlen(cache) + 1;
    assert_int_equal(strncmp(name, "m.gguf-", 7), 0);
    assert_int_equal(strlen(name), 7 + 16 + 1 + 16 + 6);
    char first[700];
    snprintf(first, sizeof first, "%s", s.saved);
    mc_slice_index_destroy(&x);
    x = s_index(m, cache);
    assert_int_equal(mc_slice_index_known(x), NL * NE);
    assert_string_equal(mc_slice_index_path(x), first);
    mc_slice_index_destroy(&x);

    // The model is rewritten (new mtime): a new entry, the old one gone.
    mc_model_destroy(&m);
    struct timespec t[2] = {{0, UTIME_OMIT}, {1600000000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
    m = s_open(path);
    x = s_index(m, cache);
    assert_int_equal(mc_slice_index_known(x), 0);
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_non_null(s.saved);
    assert_string_not_equal(s.saved, first);
    assert_false(s_exists(first));
    int entries = 0;
    DIR *d = opendir(cache);
    for (struct dirent *de; (de = readdir(d));) entries += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 1);
    mc_slice_index_destroy(&x);

    // No cache folder either: memory only, said so.
    x = s_index(m, "");
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE);
    assert_null(s.saved);
    assert_null(mc_slice_index_path(x));
    assert_non_null(strstr(s.note, "kept in memory only"));
    mc_slice_index_destroy(&x);
    assert_int_equal(chmod(dir, 0755), 0);
    mc_model_destroy(&m);
}

// A model removed (or replaced) after it was opened: its index is not saved
// anywhere, since it could not describe the file now at that path.
static void test_changed_model_not_saved(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    mc_model_t *m = s_open(s_write_model("gone", "m.gguf", false, 1, path, sizeof path));
    mc_slice_index_t *x = s_index(m, "");
    assert_int_equal(unlink(path), 0);
    mc_slice_stats_t s;
    assert_int_equal(mc_slice_index_ensure(x, m, NULL, NULL, false, &s, err), MC_OK);
    assert_int_equal(s.slices, NL * NE);
    assert_null(s.saved);
    assert_non_null(strstr(s.note, "changed since it was opened"));
    strcat(path, ".mcidx");
    assert_false(s_exists(path));
    mc_slice_index_destroy(&x);
    mc_model_destroy(&m);
}

// Hashing speed on the largest fixture (printed, not asserted): a first
// pass reads the file, then one and two threads on pages in memory.
static void test_throughput(void **state) {
    (void)state;
    char path[512], err[MC_ERR_LEN];
    if (!mc_test_fixture("small-q4_k_m.gguf", path, sizeof path) || access(path, R_OK) != 0) skip();
    mc_model_t *m = s_open(path);
    mc_slice_source_t src;
    assert_int_equal(mc_slice_source(m, path, &src, err), MC_OK);
    mc_pool_t *pool = mc_pool_new(2);
    for (int pass = 0; pass < 3; pass++) {
        const int threads = pass < 2 ? 1 : 2;
        mc_slice_index_t *x = mc_slice_index_new(&src, err);
        mc_slice_stats_t s;
        assert_int_equal(mc_slice_index_fill(x, m, NULL, threads == 1 ? NULL : pool, false, &s, err), MC_OK);
        assert_int_equal(s.slices, m->hp.n_layer * m->hp.n_expert);
        printf("[slice_index] %s: %u slices, %.1f MiB in %.1f ms on %d thread%s%s: %.2f GiB/s\n", "small-q4_k_m",
               s.slices, s.bytes / 1048576.0, s.seconds * 1e3, threads, threads == 1 ? "" : "s",
               pass ? "" : " (first read)", s.bytes / 1073741824.0 / (s.seconds > 0 ? s.seconds : 1e-9));
        mc_slice_index_destroy(&x);
    }
    mc_pool_destroy(&pool);
    mc_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_each_slice),
        cmocka_unit_test(test_layouts_hash_alike),
        cmocka_unit_test(test_flipped_byte_changes_its_slice),
        cmocka_unit_test(test_saved_beside_and_loaded),
        cmocka_unit_test(test_subset),
        cmocka_unit_test(test_bad_files_recomputed),
        cmocka_unit_test(test_bad_headers_refused),
        cmocka_unit_test(test_cache_folder_and_memory_only),
        cmocka_unit_test(test_changed_model_not_saved),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
