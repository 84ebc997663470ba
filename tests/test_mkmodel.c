/*
 * test_mkmodel: generated models open with the GGUF reader and hold the
 * Mixtral metadata, tensors and vocabulary the engine expects; weights are
 * Gaussian with the documented scales, identical across types (up to
 * quantization), layouts and runs; bad parameters are refused by name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "gguf.h"
#include "mkmodel.h"
#include "quant.h"
#include "testutil.h"
#include "tokenizer.h"

#define S_BASE_PIECES 416 // 3 control + 256 bytes + 157 single characters

typedef struct {
    char dir[256];
    char path[8][320];
    int n;
} s_tmp_t;

static int s_setup(void **state) {
    s_tmp_t *t = calloc(1, sizeof *t);
    if (!t || !mc_test_tmpdir(t->dir, sizeof t->dir)) return -1;
    *state = t;
    return 0;
}

static int s_teardown(void **state) {
    s_tmp_t *t = *state;
    for (int i = 0; i < t->n; i++) unlink(t->path[i]);
    rmdir(t->dir);
    free(t);
    return 0;
}

// Write p into the test's folder and open it.
static mc_gguf_t *s_make(s_tmp_t *t, const mc_mkmodel_params_t *p, const char **path_out) {
    assert_true(t->n < 8);
    char path[sizeof t->path[0]];
    snprintf(path, sizeof path, "%s/m%d.gguf", t->dir, t->n);
    memcpy(t->path[t->n++], path, sizeof path);
    char err[MC_ERR_LEN] = "";
    mc_err_t rc = mc_mkmodel_write(p, path, err);
    if (rc != MC_OK) fail_msg("mc_mkmodel_write: %s", err);
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) fail_msg("mc_gguf_open: %s", err);
    if (path_out) *path_out = t->path[t->n - 1];
    return g;
}

static void s_expect_u(const mc_gguf_t *g, const char *key, uint64_t want) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    if (!v) fail_msg("missing key %s", key);
    assert_int_equal(v->type, MC_GGUF_U32); // like llama.cpp's files
    uint64_t u = 0;
    assert_true(mc_gguf_get_u64(g, key, &u));
    assert_int_equal(u, want);
}

static void s_expect_s(const mc_gguf_t *g, const char *key, const char *want) {
    mc_gguf_str_t s;
    if (!mc_gguf_get_str(g, key, &s)) fail_msg("missing string key %s", key);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static void s_expect_f32(const mc_gguf_t *g, const char *key, float want) {
    const mc_gguf_value_t *v = mc_gguf_find(g, key);
    if (!v) fail_msg("missing key %s", key);
    assert_int_equal(v->type, MC_GGUF_F32);
    assert_true(v->f == (double)want);
}

static void s_expect_metadata(const mc_gguf_t *g, const mc_mkmodel_params_t *p, uint32_t file_type) {
    s_expect_s(g, "general.architecture", "llama");
    s_expect_s(g, "general.name", "moe-mkmodel random");
    s_expect_u(g, "llama.block_count", p->n_layer);
    s_expect_u(g, "llama.context_length", p->ctx_len);
    s_expect_u(g, "llama.embedding_length", p->dim);
    s_expect_u(g, "llama.feed_forward_length", p->ffn);
    s_expect_u(g, "llama.attention.head_count", p->n_head);
    s_expect_u(g, "llama.attention.head_count_kv", p->n_head_kv);
    s_expect_u(g, "llama.rope.dimension_count", p->dim / p->n_head);
    s_expect_f32(g, "llama.rope.freq_base", p->rope_base);
    s_expect_f32(g, "llama.attention.layer_norm_rms_epsilon", p->rms_eps);
    s_expect_u(g, "llama.expert_count", p->n_expert);
    s_expect_u(g, "llama.expert_used_count", p->n_expert_used);
    s_expect_u(g, "general.file_type", file_type);
    s_expect_u(g, "llama.vocab_size", p->n_vocab);
    s_expect_s(g, "tokenizer.ggml.model", "llama");
    s_expect_u(g, "tokenizer.ggml.bos_token_id", 1);
    s_expect_u(g, "tokenizer.ggml.eos_token_id", 2);
    s_expect_u(g, "tokenizer.ggml.unknown_token_id", 0);
    bool b = false;
    assert_true(mc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) && b);
    assert_true(mc_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) && !b);
    assert_null(mc_gguf_find(g, "general.alignment"));
    assert_int_equal(mc_gguf_version(g), 3);
}

static void s_expect_tensor(const mc_gguf_t *g, const char *name, mc_dtype_t type, uint32_t n_dims,
                            uint64_t ne0, uint64_t ne1, uint64_t ne2) {
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    if (!t) fail_msg("missing tensor %s", name);
    if (t->type != type) fail_msg("%s: type %s, want %s", name, mc_dtype_name(t->type), mc_dtype_name(type));
    assert_int_equal(t->n_dims, n_dims);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    assert_int_equal(t->ne[2], ne2);
    assert_int_equal(t->offset % 32, 0);
}

// Every tensor with the right name, shape and type, in llama.cpp's order.
static void s_expect_tensors(const mc_gguf_t *g, const mc_mkmodel_params_t *p) {
    const mc_dtype_t t = p->type, f = MC_DTYPE_F32;
    const uint64_t d = p->dim, kv = (uint64_t)p->n_head_kv * (p->dim / p->n_head);
    size_t per_layer = 7 + 3 * (size_t)(p->legacy_layout ? p->n_expert : 1);
    assert_int_equal(mc_gguf_tensor_count(g), 3 + p->n_layer * per_layer);
    s_expect_tensor(g, "token_embd.weight", t, 2, d, p->n_vocab, 1);
    s_expect_tensor(g, "output_norm.weight", f, 1, d, 1, 1);
    s_expect_tensor(g, "output.weight", t, 2, d, p->n_vocab, 1);
    assert_string_equal(mc_gguf_tensor_at(g, 0)->name, "token_embd.weight");
    assert_string_equal(mc_gguf_tensor_at(g, mc_gguf_tensor_count(g) - 1)->name, "output.weight");
    char name[96];
    for (uint32_t l = 0; l < p->n_layer; l++) {
        snprintf(name, sizeof name, "blk.%u.attn_norm.weight", l);
        s_expect_tensor(g, name, f, 1, d, 1, 1);
        assert_string_equal(mc_gguf_tensor_at(g, 1 + l * per_layer)->name, name);
        snprintf(name, sizeof name, "blk.%u.attn_q.weight", l);
        s_expect_tensor(g, name, t, 2, d, d, 1);
        snprintf(name, sizeof name, "blk.%u.attn_k.weight", l);
        s_expect_tensor(g, name, t, 2, d, kv, 1);
        snprintf(name, sizeof name, "blk.%u.attn_v.weight", l);
        s_expect_tensor(g, name, t, 2, d, kv, 1);
        snprintf(name, sizeof name, "blk.%u.attn_output.weight", l);
        s_expect_tensor(g, name, t, 2, d, d, 1);
        snprintf(name, sizeof name, "blk.%u.ffn_norm.weight", l);
        s_expect_tensor(g, name, f, 1, d, 1, 1);
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", l);
        s_expect_tensor(g, name, f, 2, d, p->n_expert, 1);
        assert_string_equal(mc_gguf_tensor_at(g, 7 + l * per_layer)->name, name);
        if (!p->legacy_layout) {
            snprintf(name, sizeof name, "blk.%u.ffn_gate_exps.weight", l);
            s_expect_tensor(g, name, t, 3, d, p->ffn, p->n_expert);
            snprintf(name, sizeof name, "blk.%u.ffn_up_exps.weight", l);
            s_expect_tensor(g, name, t, 3, d, p->ffn, p->n_expert);
            snprintf(name, sizeof name, "blk.%u.ffn_down_exps.weight", l);
            s_expect_tensor(g, name, t, 3, p->ffn, d, p->n_expert);
            continue;
        }
        for (uint32_t e = 0; e < p->n_expert; e++) {
            snprintf(name, sizeof name, "blk.%u.ffn_gate.%u.weight", l, e);
            s_expect_tensor(g, name, t, 2, d, p->ffn, 1);
            snprintf(name, sizeof name, "blk.%u.ffn_up.%u.weight", l, e);
            s_expect_tensor(g, name, t, 2, d, p->ffn, 1);
            snprintf(name, sizeof name, "blk.%u.ffn_down.%u.weight", l, e);
            s_expect_tensor(g, name, t, 2, p->ffn, d, 1);
        }
    }
}

typedef struct {
    const char *s;
    uint64_t len;
    int32_t id;
} s_piece_t;

static int s_piece_cmp(const void *a, const void *b) {
    const s_piece_t *x = a, *y = b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static int32_t s_piece_find(const s_piece_t *sorted, size_t n, const char *s, uint64_t len) {
    s_piece_t key = {s, len, -1};
    const s_piece_t *hit = bsearch(&key, sorted, n, sizeof key, s_piece_cmp);
    return hit ? hit->id : -1;
}

// Vocabulary: special and byte tokens where the engine looks for them,
// unique pieces, merge scores decreasing, and every merged piece the
// concatenation of two pieces that come before it (so BPE can reach it).
static void s_expect_vocab(const mc_gguf_t *g, uint32_t n_vocab) {
    const mc_gguf_value_t *tok = mc_gguf_find(g, "tokenizer.ggml.tokens");
    const mc_gguf_value_t *sc = mc_gguf_find(g, "tokenizer.ggml.scores");
    const mc_gguf_value_t *ty = mc_gguf_find(g, "tokenizer.ggml.token_type");
    assert_non_null(tok);
    assert_non_null(sc);
    assert_non_null(ty);
    assert_int_equal(tok->arr.elem_type, MC_GGUF_STRING);
    assert_int_equal(sc->arr.elem_type, MC_GGUF_F32);
    assert_int_equal(ty->arr.elem_type, MC_GGUF_I32);
    assert_int_equal(tok->arr.count, n_vocab);
    assert_int_equal(sc->arr.count, n_vocab);
    assert_int_equal(ty->arr.count, n_vocab);
    const mc_gguf_str_t *pc = tok->arr.strings;
    int64_t type;
    double score, prev_score = 0.0, min_char_score = INFINITY, max_char_score = -INFINITY;

    const char *special[3] = {"<unk>", "<s>", "</s>"};
    const int64_t special_type[3] = {2, 3, 3};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pc[i].len, strlen(special[i]));
        assert_memory_equal(pc[i].ptr, special[i], pc[i].len);
        assert_true(mc_gguf_arr_i64(ty, (uint64_t)i, &type));
        assert_int_equal(type, special_type[i]);
    }
    for (int b = 0; b < 256; b++) {
        char want[8];
        snprintf(want, sizeof want, "<0x%02X>", b);
        assert_int_equal(pc[3 + b].len, 6);
        assert_memory_equal(pc[3 + b].ptr, want, 6);
        assert_true(mc_gguf_arr_i64(ty, 3 + (uint64_t)b, &type));
        assert_int_equal(type, 6);
    }
    assert_int_equal(pc[259].len, 3);
    assert_memory_equal(pc[259].ptr, "\xE2\x96\x81", 3);

    s_piece_t *sorted = malloc(n_vocab * sizeof *sorted);
    assert_non_null(sorted);
    for (uint32_t i = 0; i < n_vocab; i++) sorted[i] = (s_piece_t){pc[i].ptr, pc[i].len, (int32_t)i};
    qsort(sorted, n_vocab, sizeof *sorted, s_piece_cmp);
    for (uint32_t i = 1; i < n_vocab; i++) assert_int_not_equal(s_piece_cmp(&sorted[i - 1], &sorted[i]), 0);

    for (uint32_t i = 259; i < n_vocab; i++) {
        assert_true(mc_gguf_arr_i64(ty, i, &type));
        assert_int_equal(type, 1);
        assert_true(mc_gguf_arr_f64(sc, i, &score));
        if (i < S_BASE_PIECES) { // single characters
            assert_true(pc[i].len >= 1 && pc[i].len <= 3);
            if (score < min_char_score) min_char_score = score;
            if (score > max_char_score) max_char_score = score;
            continue;
        }
        if (i > S_BASE_PIECES) assert_true(score < prev_score);
        prev_score = score;
        bool reachable = false;
        for (uint64_t cut = 1; cut < pc[i].len && !reachable; cut++) {
            if ((pc[i].ptr[cut] & 0xC0) == 0x80) continue; // inside a UTF-8 character
            int32_t a = s_piece_find(sorted, n_vocab, pc[i].ptr, cut);
            int32_t b = s_piece_find(sorted, n_vocab, pc[i].ptr + cut, pc[i].len - cut);
            reachable = a >= 259 && b >= 259 && (uint32_t)a < i && (uint32_t)b < i;
        }
        if (!reachable) fail_msg("piece %u '%.*s' is not two earlier pieces", i, (int)pc[i].len, pc[i].ptr);
    }
    if (n_vocab > S_BASE_PIECES) assert_true(max_char_score < prev_score); // below every merge
    assert_true(min_char_score <= max_char_score);
    if (n_vocab >= 512) { // BPE training on English gives the usual first pieces
        assert_true(s_piece_find(sorted, n_vocab, "\xE2\x96\x81" "the", 6) >= S_BASE_PIECES);
        assert_true(s_piece_find(sorted, n_vocab, "\xE2\x96\x81" "and", 6) >= S_BASE_PIECES);
    }
    free(sorted);
}

static const float *s_f32_data(const mc_gguf_t *g, const char *name, uint64_t *n) {
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
    assert_non_null(t);
    assert_int_equal(t->type, MC_DTYPE_F32);
    *n = t->n_elems;
    return (const float *)t->data;
}

// Mean and standard deviation, and for Gaussian shape the share within one
// standard deviation (0.683) and the kurtosis (3; a uniform gives 1.8).
static void s_moments(const float *x, uint64_t n, double *mean, double *sd, double *within, double *kurt) {
    double s = 0, s2 = 0, s4 = 0, in = 0;
    for (uint64_t i = 0; i < n; i++) s += x[i];
    *mean = s / (double)n;
    for (uint64_t i = 0; i < n; i++) {
        double d = x[i] - *mean;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    *sd = sqrt(s2 / (double)n);
    for (uint64_t i = 0; i < n; i++) in += fabs(x[i] - *mean) < *sd;
    *within = in / (double)n;
    *kurt = s4 / (double)n / (*sd * *sd * *sd * *sd);
}

static void test_default_model(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    assert_int_equal(p.dim, 64);
    assert_int_equal(p.n_vocab, 512);
    assert_int_equal(p.type, MC_DTYPE_F32);
    char err[MC_ERR_LEN] = "";
    assert_int_equal(mc_mkmodel_check(&p, err), MC_OK);
    mc_gguf_t *g = s_make(*state, &p, NULL);
    s_expect_metadata(g, &p, 0);
    s_expect_tensors(g, &p);
    s_expect_vocab(g, p.n_vocab);

    uint64_t n;
    double mean, sd, within, kurt;
    const float *x = s_f32_data(g, "token_embd.weight", &n);
    s_moments(x, n, &mean, &sd, &within, &kurt);
    assert_true(fabs(mean) < 0.03 && fabs(sd - 1.0) < 0.03);
    assert_true(fabs(within - 0.6827) < 0.015 && fabs(kurt - 3.0) < 0.15);
    x = s_f32_data(g, "blk.1.ffn_up_exps.weight", &n);
    s_moments(x, n, &mean, &sd, &within, &kurt);
    assert_true(fabs(sd - 1.0 / 8.0) < 0.005 && fabs(within - 0.6827) < 0.01);
    x = s_f32_data(g, "blk.0.ffn_down_exps.weight", &n);
    s_moments(x, n, &mean, &sd, &within, &kurt);
    assert_true(fabs(sd - 1.0 / sqrt(128.0)) < 0.004);
    x = s_f32_data(g, "blk.0.ffn_gate_inp.weight", &n);
    s_moments(x, n, &mean, &sd, &within, &kurt);
    assert_true(fabs(sd - 1.0 / 8.0) < 0.015);
    // Norm weights 1 + 0.1 N(0,1): all five norms pooled.
    float norms[5 * 64];
    const char *norm_names[5] = {"blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.1.attn_norm.weight",
                                 "blk.1.ffn_norm.weight", "output_norm.weight"};
    for (int i = 0; i < 5; i++) {
        x = s_f32_data(g, norm_names[i], &n);
        assert_int_equal(n, 64);
        memcpy(norms + 64 * i, x, sizeof(float) * 64);
    }
    s_moments(norms, 5 * 64, &mean, &sd, &within, &kurt);
    assert_true(fabs(mean - 1.0) < 0.02 && fabs(sd - 0.1) < 0.015);
    // Different roles draw different numbers.
    const float *q = s_f32_data(g, "blk.0.attn_q.weight", &n);
    const float *o = s_f32_data(g, "blk.0.attn_output.weight", &n);
    assert_memory_not_equal(q, o, 64 * sizeof(float));
    mc_gguf_destroy(&g);
}

static void test_vocab_32000(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.n_vocab = 32000;
    p.n_layer = 1;
    p.type = MC_DTYPE_Q8_0; // keeps the embedding small
    mc_gguf_t *g = s_make(*state, &p, NULL);
    s_expect_metadata(g, &p, 7);
    s_expect_tensors(g, &p);
    s_expect_vocab(g, p.n_vocab);
    mc_gguf_destroy(&g);
    p.n_vocab = S_BASE_PIECES; // the smallest: no merges at all
    g = s_make(*state, &p, NULL);
    s_expect_vocab(g, p.n_vocab);
    mc_gguf_destroy(&g);
}

// Each matrix of a typed model is the F32 model's matrix (same seed)
// quantized row by row; norms and router are the same F32 numbers.
static void s_expect_quantized_from(const mc_gguf_t *typed, const mc_gguf_t *f32, mc_dtype_t type) {
    for (size_t i = 0; i < mc_gguf_tensor_count(f32); i++) {
        const mc_gguf_tensor_t *a = mc_gguf_tensor_at(f32, i);
        const mc_gguf_tensor_t *b = mc_gguf_tensor_find(typed, a->name);
        assert_non_null(b);
        bool is_f32 = strstr(a->name, "_norm.") || strstr(a->name, "ffn_gate_inp");
        assert_int_equal(b->type, is_f32 ? MC_DTYPE_F32 : type);
        if (is_f32) {
            assert_memory_equal(a->data, b->data, a->size);
            continue;
        }
        uint64_t rows = a->n_elems / a->ne[0];
        size_t row_bytes = mc_dtype_row_bytes(type, a->ne[0]);
        assert_int_equal(b->size, rows * row_bytes);
        uint8_t *q = malloc(row_bytes);
        assert_non_null(q);
        for (uint64_t r = 0; r < rows; r++) {
            const float *src = (const float *)a->data + r * a->ne[0];
            assert_int_equal(mc_quant_quantize_row(type, src, q, (int64_t)a->ne[0]), MC_OK);
            if (memcmp(q, b->data + r * row_bytes, row_bytes))
                fail_msg("%s row %llu differs from the quantized F32 row", a->name, (unsigned long long)r);
        }
        free(q);
    }
}

static void test_types(void **state) {
    const struct {
        mc_dtype_t type;
        uint32_t file_type;
    } cases[] = {
        {MC_DTYPE_F16, 1}, {MC_DTYPE_Q8_0, 7}, {MC_DTYPE_Q4_0, 2}, {MC_DTYPE_Q4_K, 15}, {MC_DTYPE_BF16, 32},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mc_mkmodel_params_t p = mc_mkmodel_params_default();
        p.n_layer = 1;
        p.n_expert = 4;
        p.seed = 77;
        if (cases[c].type == MC_DTYPE_Q4_K) { // K-quant rows are multiples of 256
            p.dim = 256;
            p.ffn = 256;
            p.n_vocab = S_BASE_PIECES;
        }
        mc_gguf_t *f32 = s_make(*state, &p, NULL);
        p.type = cases[c].type;
        mc_gguf_t *g = s_make(*state, &p, NULL);
        s_expect_metadata(g, &p, cases[c].file_type);
        s_expect_tensors(g, &p);
        s_expect_quantized_from(g, f32, p.type);
        mc_gguf_destroy(&g);
        mc_gguf_destroy(&f32);
        s_tmp_t *t = *state;
        for (; t->n > 0; t->n--) unlink(t->path[t->n - 1]);
    }
}

static void test_deterministic(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q4_0;
    const char *a, *b, *c;
    mc_gguf_t *ga = s_make(*state, &p, &a);
    mc_gguf_t *gb = s_make(*state, &p, &b);
    p.seed = 2;
    mc_gguf_t *gc = s_make(*state, &p, &c);
    size_t la, lb, lc;
    uint8_t *fa = mc_test_read_file(a, &la), *fb = mc_test_read_file(b, &lb), *fc = mc_test_read_file(c, &lc);
    assert_true(fa && fb && fc);
    assert_int_equal(la, lb);
    assert_memory_equal(fa, fb, la);
    // Another seed: same layout and vocabulary, other weights.
    assert_int_equal(la, lc);
    uint64_t data = mc_gguf_data_offset(ga);
    assert_int_equal(mc_gguf_data_offset(gc), data);
    assert_memory_equal(fa, fc, data);
    const mc_gguf_tensor_t *ta = mc_gguf_tensor_find(ga, "token_embd.weight");
    const mc_gguf_tensor_t *tc = mc_gguf_tensor_find(gc, "token_embd.weight");
    assert_memory_not_equal(ta->data, tc->data, ta->size);
    free(fa);
    free(fb);
    free(fc);
    mc_gguf_destroy(&ga);
    mc_gguf_destroy(&gb);
    mc_gguf_destroy(&gc);
}

static void test_merged_equals_legacy(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.type = MC_DTYPE_Q4_0;
    p.seed = 1234;
    mc_gguf_t *m = s_make(*state, &p, NULL);
    p.legacy_layout = true;
    mc_gguf_t *l = s_make(*state, &p, NULL);
    s_expect_tensors(l, &p);
    assert_null(mc_gguf_tensor_find(l, "blk.0.ffn_gate_exps.weight"));
    const char *roles[3] = {"gate", "up", "down"};
    char name[96];
    for (uint32_t layer = 0; layer < p.n_layer; layer++) {
        for (int r = 0; r < 3; r++) {
            snprintf(name, sizeof name, "blk.%u.ffn_%s_exps.weight", layer, roles[r]);
            const mc_gguf_tensor_t *mt = mc_gguf_tensor_find(m, name);
            assert_non_null(mt);
            size_t part = mc_dtype_row_bytes(mt->type, mt->ne[0]) * mt->ne[1];
            assert_int_equal(mt->size, part * p.n_expert);
            for (uint32_t e = 0; e < p.n_expert; e++) {
                snprintf(name, sizeof name, "blk.%u.ffn_%s.%u.weight", layer, roles[r], e);
                const mc_gguf_tensor_t *lt = mc_gguf_tensor_find(l, name);
                assert_non_null(lt);
                assert_int_equal(lt->size, part);
                assert_memory_equal(mt->data + e * part, lt->data, part);
            }
            // Experts differ from each other.
            assert_memory_not_equal(mt->data, mt->data + part, part);
        }
    }
    // Everything else is identical too.
    for (size_t i = 0; i < mc_gguf_tensor_count(m); i++) {
        const mc_gguf_tensor_t *mt = mc_gguf_tensor_at(m, i);
        if (strstr(mt->name, "_exps.")) continue;
        const mc_gguf_tensor_t *lt = mc_gguf_tensor_find(l, mt->name);
        assert_non_null(lt);
        assert_int_equal(lt->size, mt->size);
        assert_memory_equal(lt->data, mt->data, mt->size);
    }
    mc_gguf_destroy(&m);
    mc_gguf_destroy(&l);
}

// --router-skew scales router row e by skew^(-e/(n-1)) and touches nothing else.
static void test_router_skew(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    mc_gguf_t *plain = s_make(*state, &p, NULL);
    p.router_skew = 8.0f;
    mc_gguf_t *skew = s_make(*state, &p, NULL);
    for (size_t i = 0; i < mc_gguf_tensor_count(plain); i++) {
        const mc_gguf_tensor_t *a = mc_gguf_tensor_at(plain, i), *b = mc_gguf_tensor_find(skew, a->name);
        assert_non_null(b);
        assert_int_equal(a->size, b->size);
        if (!strstr(a->name, "ffn_gate_inp")) {
            assert_memory_equal(a->data, b->data, a->size);
            continue;
        }
        const float *x = (const float *)a->data, *y = (const float *)b->data;
        for (uint32_t e = 0; e < p.n_expert; e++) {
            const float scale = powf(8.0f, -(float)e / (float)(p.n_expert - 1));
            for (uint32_t d = 0; d < p.dim; d++) assert_true(y[e * p.dim + d] == x[e * p.dim + d] * scale);
        }
    }
    mc_gguf_destroy(&plain);
    mc_gguf_destroy(&skew);
    char err[MC_ERR_LEN];
    p.router_skew = 0.5f;
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "router_skew"));
}

// Qwen2-MoE: the shared expert's four tensors per layer (its gate's weights
// one F32 vector), q/k/v biases, its width in the metadata (default 4 x ffn);
// the same file for the same seed.
// GLM-4.5: the keys llama.cpp's glm4moe loader reads, a dense first layer,
// the MoE layers' selection bias and ungated shared expert, and the
// next-token-prediction layer after the evaluated ones.
static void test_glm4moe(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_GLM4MOE, p.ffn = 32, p.ffn_shexp = 32, p.n_layer = 3, p.n_dense_lead = 1, p.n_nextn = 1, p.rope_dim = 8;
    p.n_group = 4, p.n_group_used = 2, p.expert_weights_scale = 2.5f;
    const char *a;
    mc_gguf_t *g = s_make(*state, &p, &a);
    static const struct {
        const char *key;
        uint64_t v;
    } keys[] = {
        {"glm4moe.block_count", 4}, {"glm4moe.nextn_predict_layers", 1}, {"glm4moe.leading_dense_block_count", 1},
        {"glm4moe.feed_forward_length", 128}, {"glm4moe.expert_feed_forward_length", 32},
        {"glm4moe.expert_shared_count", 1}, {"glm4moe.expert_gating_func", 2}, {"glm4moe.expert_group_count", 4},
        {"glm4moe.expert_group_used_count", 2}, {"glm4moe.rope.dimension_count", 8},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint64_t v = 0;
        if (!mc_gguf_get_u64(g, keys[i].key, &v) || v != keys[i].v)
            fail_msg("%s = %llu, expected %llu", keys[i].key, (unsigned long long)v, (unsigned long long)keys[i].v);
    }
    double f = 0;
    bool norm = false;
    assert_true(mc_gguf_get_f64(g, "glm4moe.expert_weights_scale", &f) && f == 2.5);
    assert_true(mc_gguf_get_bool(g, "glm4moe.expert_weights_norm", &norm) && norm);
    static const char *const present[] = {"blk.0.ffn_gate.weight", "blk.0.ffn_down.weight", "blk.0.post_attention_norm.weight",
                                          "blk.1.exp_probs_b.bias", "blk.1.ffn_gate_shexp.weight", "blk.2.ffn_gate_exps.weight",
                                          "blk.3.ffn_gate_exps.weight", "blk.3.nextn.eh_proj.weight", "blk.3.nextn.enorm.weight",
                                          "blk.3.nextn.hnorm.weight", "blk.1.attn_q.bias"};
    static const char *const absent[] = {"blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_exps.weight", "blk.0.ffn_norm.weight",
                                         "blk.1.ffn_gate_inp_shexp.weight", "blk.1.attn_q_norm.weight", "blk.4.attn_q.weight"};
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++)
        if (!mc_gguf_tensor_find(g, present[i])) fail_msg("%s is missing", present[i]);
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        if (mc_gguf_tensor_find(g, absent[i])) fail_msg("%s is there", absent[i]);
    const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, "blk.3.nextn.eh_proj.weight");
    assert_true(t->ne[0] == 128 && t->ne[1] == 64);
    mc_gguf_destroy(&g);
}

// --moe-step: interleave_moe_layer_step written (only when above 1, and no
// leading_dense_block_count where the family's files do not carry it),
// each dense layer one FFN of ffn_dense with feed_forward_length saying it,
// each MoE layer its router, experts and shared expert; a count and step
// that leave no MoE layer refused.
static void test_moe_step(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE, p.ffn = 32, p.ffn_dense = 96, p.n_layer = 4, p.moe_step = 2;
    const char *a;
    mc_gguf_t *g = s_make(*state, &p, &a);
    uint64_t v = 0;
    assert_true(mc_gguf_get_u64(g, "qwen2moe.interleave_moe_layer_step", &v) && v == 2);
    assert_true(mc_gguf_get_u64(g, "qwen2moe.feed_forward_length", &v) && v == 96);
    assert_false(mc_gguf_get_u64(g, "qwen2moe.leading_dense_block_count", &v));
    char name[64];
    for (uint32_t l = 0; l < 4; l++) {
        const bool moe = l % 2 == 1;
        snprintf(name, sizeof name, "blk.%u.ffn_gate.weight", l);
        const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, name);
        assert_true(moe ? t == NULL : t != NULL && t->ne[1] == 96);
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", l);
        assert_int_equal(mc_gguf_tensor_find(g, name) != NULL, moe);
        snprintf(name, sizeof name, "blk.%u.ffn_up_exps.weight", l);
        assert_int_equal(mc_gguf_tensor_find(g, name) != NULL, moe);
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp_shexp.weight", l);
        assert_int_equal(mc_gguf_tensor_find(g, name) != NULL, moe);
    }
    mc_gguf_destroy(&g);
    // Step 1 and no leading layers: neither key, every layer MoE.
    p.moe_step = 1;
    g = s_make(*state, &p, &a);
    assert_false(mc_gguf_get_u64(g, "qwen2moe.interleave_moe_layer_step", &v));
    assert_non_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate_inp.weight"));
    mc_gguf_destroy(&g);
    // DeepSeek-V2 says both with its latent attention's keys.
    p.arch = MC_ARCH_DEEPSEEK2, p.n_layer = 6, p.n_dense_lead = 1, p.moe_step = 3, p.head_dim = 48, p.rope_dim = 16;
    g = s_make(*state, &p, &a);
    assert_true(mc_gguf_get_u64(g, "deepseek2.interleave_moe_layer_step", &v) && v == 3);
    assert_true(mc_gguf_get_u64(g, "deepseek2.leading_dense_block_count", &v) && v == 1);
    for (uint32_t l = 0; l < 6; l++) {
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", l);
        assert_int_equal(mc_gguf_tensor_find(g, name) != NULL, l == 2 || l == 5);
    }
    mc_gguf_destroy(&g);
    char err[MC_ERR_LEN];
    p.n_dense_lead = 3, p.n_layer = 5; // layer 5 would be the first MoE one
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "must leave a MoE layer"));
    // Families without dense layers ignore it.
    p.arch = MC_ARCH_QWEN3MOE, p.head_dim = 0, p.rope_dim = 0;
    g = s_make(*state, &p, &a);
    assert_false(mc_gguf_get_u64(g, "qwen3moe.interleave_moe_layer_step", &v));
    assert_non_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate_inp.weight"));
    mc_gguf_destroy(&g);
}

// gpt-oss files carry the harmony tokens as control tokens, so chat picks
// its format and stops at <|return|> and <|call|>; other families do not.
static void test_gptoss_harmony_tokens(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_GPTOSS;
    p.ffn = 32, p.n_expert = 16, p.n_expert_used = 4, p.n_layer = 2, p.head_dim = 32, p.n_swa = 8;
    char err[MC_ERR_LEN];
    for (int k = 0; k < 2; k++) {
        if (k) p.arch = MC_ARCH_QWEN3MOE, p.n_swa = 0;
        mc_gguf_t *g = s_make(*state, &p, NULL);
        mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
        if (!t) fail_msg("%s", err);
        assert_int_equal(mc_tokenizer_n_vocab(t), p.n_vocab);
        static const char *const marks[] = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>",
                                            "<|return|>", "<|call|>", "<|constrain|>"};
        char piece[64];
        for (size_t i = 0; i < sizeof marks / sizeof *marks; i++) {
            const int32_t id = mc_tokenizer_find(t, marks[i], strlen(marks[i]));
            if (k) { // qwen3moe: none
                assert_true(id < 0);
                continue;
            }
            if (id < 0) fail_msg("%s is not a token", marks[i]);
            assert_int_equal(mc_tokenizer_token_bytes(t, id, piece, sizeof piece), 0); // a control token
        }
        mc_chat_style_t st;
        assert_int_equal(mc_chat_style_choose(g, t, NULL, &st, err), MC_OK);
        assert_int_equal(st, k ? MC_CHAT_STYLE_CHATML : MC_CHAT_STYLE_HARMONY);
        int32_t end[MC_CHAT_MAX_END];
        const size_t n_end = mc_chat_end_ids(t, end);
        bool ret = false;
        for (size_t i = 0; i < n_end; i++) ret |= end[i] == mc_tokenizer_find(t, "<|return|>", 10);
        assert_true(ret == (k == 0));
        mc_tokenizer_destroy(&t);
        mc_gguf_destroy(&g);
    }
}

static void test_qwen2moe(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_QWEN2MOE, p.type = MC_DTYPE_Q8_0, p.ffn = 32;
    const char *a, *b;
    mc_gguf_t *g = s_make(*state, &p, &a);
    uint64_t v = 0;
    assert_true(mc_gguf_get_u64(g, "qwen2moe.expert_shared_feed_forward_length", &v));
    assert_int_equal(v, 128);
    assert_true(mc_gguf_get_u64(g, "qwen2moe.expert_feed_forward_length", &v));
    assert_int_equal(v, 32);
    static const struct {
        const char *name;
        uint32_t n_dims;
        uint64_t ne0, ne1;
        mc_dtype_t type;
    } want[] = {
        {"blk.1.ffn_gate_inp_shexp.weight", 1, 64, 1, MC_DTYPE_F32}, {"blk.1.ffn_gate_shexp.weight", 2, 64, 128, MC_DTYPE_Q8_0},
        {"blk.1.ffn_up_shexp.weight", 2, 64, 128, MC_DTYPE_Q8_0},    {"blk.1.ffn_down_shexp.weight", 2, 128, 64, MC_DTYPE_Q8_0},
        {"blk.1.attn_q.bias", 1, 64, 1, MC_DTYPE_F32},               {"blk.1.attn_k.bias", 1, 32, 1, MC_DTYPE_F32},
        {"blk.1.attn_v.bias", 1, 32, 1, MC_DTYPE_F32},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, want[i].name);
        if (!t) fail_msg("%s is missing", want[i].name);
        assert_int_equal(t->n_dims, want[i].n_dims);
        assert_int_equal(t->ne[0], want[i].ne0);
        if (want[i].n_dims == 2) assert_int_equal(t->ne[1], want[i].ne1);
        assert_int_equal(t->type, want[i].type);
    }
    assert_null(mc_gguf_tensor_find(g, "blk.0.attn_q_norm.weight"));
    mc_gguf_t *g2 = s_make(*state, &p, &b);
    size_t la, lb;
    uint8_t *fa = mc_test_read_file(a, &la), *fb = mc_test_read_file(b, &lb);
    assert_true(fa && fb && la == lb);
    assert_memory_equal(fa, fb, la);
    free(fa), free(fb);
    mc_gguf_destroy(&g2);
    mc_gguf_destroy(&g);
    // The other families have none of it.
    p.arch = MC_ARCH_QWEN3MOE;
    g = s_make(*state, &p, &a);
    assert_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate_shexp.weight"));
    assert_null(mc_gguf_tensor_find(g, "blk.0.attn_q.bias"));
    assert_false(mc_gguf_get_u64(g, "qwen3moe.expert_shared_feed_forward_length", &v));
    mc_gguf_destroy(&g);
}

// DeepSeek-V2: latent attention's tensors and keys as llama.cpp's converter
// writes them (per-head k_b / v_b stacks, the cached row as one shared
// head), shared experts counted in expert widths without a gate, YaRN keys;
// shapes the latent cannot take are refused.
static void test_deepseek2(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.type = MC_DTYPE_Q8_0, p.ffn = 32;
    p.head_dim = 48, p.rope_dim = 16, p.head_dim_v = 32, p.kv_lora_rank = 64;
    p.yarn_factor = 4, p.yarn_mscale_all_dim = 0.5f;
    const char *a;
    mc_gguf_t *g = s_make(*state, &p, &a);
    static const struct {
        const char *key;
        uint64_t v;
    } keys[] = {
        {"deepseek2.attention.head_count_kv", 1},     {"deepseek2.attention.key_length", 80},
        {"deepseek2.attention.value_length", 64},     {"deepseek2.attention.key_length_mla", 48},
        {"deepseek2.attention.value_length_mla", 32}, {"deepseek2.attention.kv_lora_rank", 64},
        {"deepseek2.attention.q_lora_rank", 0},       {"deepseek2.rope.dimension_count", 16},
        {"deepseek2.expert_shared_count", 2},         {"deepseek2.leading_dense_block_count", 0},
        {"deepseek2.rope.scaling.original_context_length", 512},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint64_t v = 99;
        if (!mc_gguf_get_u64(g, keys[i].key, &v) || v != keys[i].v) fail_msg("%s = %llu", keys[i].key, (unsigned long long)v);
    }
    double f = 0;
    assert_true(mc_gguf_get_f64(g, "deepseek2.rope.scaling.factor", &f) && f == 4.0);
    assert_true(mc_gguf_get_f64(g, "deepseek2.rope.scaling.yarn_log_multiplier", &f) && fabs(f - 0.05) < 1e-7);
    static const struct {
        const char *name;
        uint64_t ne0, ne1, ne2;
    } want[] = {
        {"blk.1.attn_q.weight", 64, 192, 1},  {"blk.1.attn_kv_a_mqa.weight", 64, 80, 1},
        {"blk.1.attn_kv_a_norm.weight", 64, 1, 1}, {"blk.1.attn_k_b.weight", 32, 64, 4},
        {"blk.1.attn_v_b.weight", 64, 32, 4}, {"blk.1.attn_output.weight", 128, 64, 1},
        {"blk.1.ffn_gate_shexp.weight", 64, 64, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const mc_gguf_tensor_t *t = mc_gguf_tensor_find(g, want[i].name);
        if (!t) fail_msg("%s is missing", want[i].name);
        assert_int_equal(t->ne[0], want[i].ne0), assert_int_equal(t->ne[1], want[i].ne1);
        assert_int_equal(t->ne[2], want[i].ne2);
    }
    assert_null(mc_gguf_tensor_find(g, "blk.0.attn_k.weight"));
    assert_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate_inp_shexp.weight"));
    mc_gguf_destroy(&g);
    char err[MC_ERR_LEN];
    p.rope_dim = 48;
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "rope_dim (48)"));
    p.rope_dim = 16, p.kv_lora_rank = 48; // not a whole number of Q8_0 blocks
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "kv_lora_rank (48)"));
    p.kv_lora_rank = 64, p.ffn = 64, p.ffn_shexp = 96; // Q8_0 blocks, but one and a half experts
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "multiple of ffn"));
}

// DeepSeek-V3's shape: V2's files say none of V3's keys (their bytes stay
// as they were); with gating, the bias, dense and next-token-prediction
// layers, the keys and tensors llama.cpp's deepseek2 loader reads.
static void test_deepseek2v3(void **state) {
    mc_mkmodel_params_t p = mc_mkmodel_params_default();
    p.arch = MC_ARCH_DEEPSEEK2, p.ffn = 32, p.head_dim = 48, p.rope_dim = 16, p.kv_lora_rank = 64;
    const char *a;
    mc_gguf_t *g = s_make(*state, &p, &a);
    assert_null(mc_gguf_find(g, "deepseek2.expert_gating_func"));
    assert_null(mc_gguf_find(g, "deepseek2.expert_weights_norm"));
    assert_null(mc_gguf_find(g, "deepseek2.nextn_predict_layers"));
    assert_null(mc_gguf_tensor_find(g, "blk.1.exp_probs_b.bias"));
    mc_gguf_destroy(&g);
    p.n_layer = 3, p.n_dense_lead = 1, p.ffn_dense = 64, p.n_nextn = 1, p.n_group = 4, p.n_group_used = 2;
    p.gating = MC_GATING_SIGMOID, p.expert_bias = true;
    g = s_make(*state, &p, &a);
    static const struct {
        const char *key;
        uint64_t v;
    } keys[] = {
        {"deepseek2.block_count", 4},        {"deepseek2.nextn_predict_layers", 1},
        {"deepseek2.leading_dense_block_count", 1}, {"deepseek2.feed_forward_length", 64},
        {"deepseek2.expert_gating_func", 2}, {"deepseek2.expert_group_count", 4},
        {"deepseek2.expert_group_used_count", 2},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint64_t v = 99;
        if (!mc_gguf_get_u64(g, keys[i].key, &v) || v != keys[i].v) fail_msg("%s = %llu", keys[i].key, (unsigned long long)v);
    }
    bool norm = false;
    assert_true(mc_gguf_get_bool(g, "deepseek2.expert_weights_norm", &norm) && norm);
    assert_non_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate.weight"));
    assert_null(mc_gguf_tensor_find(g, "blk.0.exp_probs_b.bias"));
    assert_null(mc_gguf_tensor_find(g, "blk.0.ffn_gate_shexp.weight"));
    for (int l = 1; l < 4; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.exp_probs_b.bias", l);
        assert_non_null(mc_gguf_tensor_find(g, name));
    }
    assert_non_null(mc_gguf_tensor_find(g, "blk.3.nextn.eh_proj.weight"));
    mc_gguf_destroy(&g);
    char err[MC_ERR_LEN];
    p.arch = MC_ARCH_LLAMA; // Mixtral's graph fixes the softmax and has no bias
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "gating"));
    p.gating = 0;
    assert_int_equal(mc_mkmodel_check(&p, err), MC_ERR_ARG);
    assert_non_null(strstr(err, "no selection bias"));
}

static void test_bad_params(void **state) {
    struct {
        const char *field; // must appear in the message
        mc_mkmodel_params_t p;
    } bad[28];
    size_t n = 0;
    const mc_mkmodel_params_t d = mc_mkmodel_params_default();
#define S_BAD(name, stmt)                                                                          \
    do {                                                                                           \
        mc_mkmodel_params_t p_ = d;                                                                \
        stmt;                                                                                      \
        bad[n].field = name;                                                                       \
        bad[n++].p = p_;                                                                           \
    } while (0)
    S_BAD("dim", p_.dim = 0);
    S_BAD("ffn", p_.ffn = 0);
    S_BAD("n_layer", p_.n_layer = 0);
    S_BAD("n_head", p_.n_head = 0);
    S_BAD("n_head_kv", p_.n_head_kv = 0);
    S_BAD("n_expert", p_.n_expert = 0);
    S_BAD("n_expert_used", p_.n_expert_used = 0);
    S_BAD("ctx_len", p_.ctx_len = 0);
    S_BAD("n_head", p_.n_head = 5);                       // does not divide 64
    S_BAD("head dimension", (p_.n_head = 64, p_.n_head_kv = 1)); // head_dim 1
    S_BAD("n_head_kv", p_.n_head_kv = 3);
    S_BAD("n_expert_used", p_.n_expert_used = 9);
    S_BAD("n_expert", (p_.n_expert = 257, p_.n_expert_used = 2));
    S_BAD("n_vocab", p_.n_vocab = 300);
    S_BAD("n_vocab", p_.n_vocab = (1u << 20) + 1);
    S_BAD("dim", p_.type = MC_DTYPE_Q4_K);                 // 64 % 256
    S_BAD("ffn", (p_.type = MC_DTYPE_Q4_K, p_.dim = 256)); // ffn 128 % 256
    S_BAD("ffn", (p_.type = MC_DTYPE_Q8_0, p_.ffn = 48));
    S_BAD("type", p_.type = MC_DTYPE_Q8_K);
    S_BAD("type", p_.type = (mc_dtype_t)99);
    S_BAD("rope_base", p_.rope_base = 0.0f);
    S_BAD("rope_base", p_.rope_base = NAN);
    S_BAD("rms_eps", p_.rms_eps = -1e-5f);
    S_BAD("rms_eps", p_.rms_eps = INFINITY);
    S_BAD("ffn_shexp", (p_.arch = MC_ARCH_QWEN2MOE, p_.type = MC_DTYPE_Q8_0, p_.ffn_shexp = 48));
    S_BAD("ffn_shexp", (p_.arch = MC_ARCH_QWEN2MOE, p_.ffn_shexp = MC_MK_MAX_DIM + 1));
#undef S_BAD
    s_tmp_t *t = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/bad.gguf", t->dir);
    for (size_t i = 0; i < n; i++) {
        char err[MC_ERR_LEN] = "";
        assert_int_equal(mc_mkmodel_check(&bad[i].p, err), MC_ERR_ARG);
        if (!strstr(err, bad[i].field))
            fail_msg("case %zu: message '%s' does not name '%s'", i, err, bad[i].field);
        err[0] = '\0';
        assert_int_equal(mc_mkmodel_write(&bad[i].p, path, err), MC_ERR_ARG);
        assert_non_null(strstr(err, bad[i].field));
        assert_int_equal(access(path, F_OK), -1); // nothing written
    }
    // An unwritable path is an I/O error.
    char err[MC_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/no-such-dir/m.gguf", t->dir);
    assert_int_equal(mc_mkmodel_write(&d, path, err), MC_ERR_IO);
    assert_non_null(strstr(err, "no-such-dir"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_model, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_vocab_32000, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_types, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_deterministic, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_merged_equals_legacy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_router_skew, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_qwen2moe, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_moe_step, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_deepseek2, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_deepseek2v3, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_glm4moe, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_gptoss_harmony_tokens, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_params, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
