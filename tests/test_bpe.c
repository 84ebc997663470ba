/*
 * test_bpe: byte-level BPE (bpe.h and the tokenizer's "gpt2" kind).
 *
 * The vocabularies are trained here from the built-in corpus (hermetic), and
 * must give exactly the ids llama.cpp gave for the same vocabularies in
 * tests/fixtures/bpe_tokenizer_golden.json (47 strings x the "qwen2" and
 * "olmo" pre-tokenizers) and bpe_pretok_golden.json (71 strings x "glm4",
 * "deepseek-llm", "deepseek-v3" and "gpt-4o"); deploy/make-bpe-golden.sh
 * made both.
 * Around that:
 * the byte mapping, pre-token splits that pin down the regex choices,
 * trainer determinism, control and user-defined pieces, invalid UTF-8,
 * streaming decode, long inputs, hostile GGUF metadata, and the load time of
 * a vocabulary as large as Qwen's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpe.h"
#include "bpe_train.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "testutil.h"
#include "tokenizer.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define GOLDEN_N_VOCAB 1536 // as deploy/make-bpe-golden.sh
#define RC "\xef\xbf\xbd"   // U+FFFD

#if defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLOW_BUILD 1
#endif
#endif
#ifndef SLOW_BUILD
// Under an emulator (qemu: the test runner's MC_RUN_PREFIX) too.
#define SLOW_BUILD (getenv("MC_RUN_PREFIX") != NULL)
#endif

/* ---- helpers ---- */

// This thread's CPU time: waits for a core on a loaded machine do not count.
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool valid_utf8(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp, need;
        if (u[i] < 0x80) { i++; continue; }
        if ((u[i] & 0xe0) == 0xc0) { need = 1; cp = u[i] & 0x1f; }
        else if ((u[i] & 0xf0) == 0xe0) { need = 2; cp = u[i] & 0x0f; }
        else if ((u[i] & 0xf8) == 0xf0) { need = 3; cp = u[i] & 0x07; }
        else return false;
        if (n - i <= need) return false;
        for (uint32_t k = 1; k <= need; k++) {
            if ((u[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (u[i + k] & 0x3f);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += need + 1;
    }
    return true;
}

static mc_bpe_vocab_t *train(const char *pre, uint32_t n_vocab) {
    mc_bpe_train_params_t p = mc_bpe_train_params_default();
    p.pre = pre;
    p.n_vocab = n_vocab;
    char err[MC_ERR_LEN] = "";
    mc_bpe_vocab_t *v = mc_bpe_train(NULL, 0, &p, err);
    if (!v) fail_msg("train %s: %s", pre, err);
    return v;
}

static mc_err_t no_data(void *ctx, size_t index, void *dst, size_t size, char *err) {
    (void)ctx, (void)dst, (void)size;
    return mc_err_set(err, MC_ERR_ARG, "unexpected tensor %zu", index);
}

// Parse a GGUF image and build a tokenizer from it; the image is freed
// before the tokenizer is used. NULL with err when the tokenizer refuses it.
static mc_tokenizer_t *tok_from_image(uint8_t *buf, size_t len, char *err) {
    char gerr[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_parse(buf, len, gerr);
    if (!g) fail_msg("test GGUF does not parse: %s", gerr);
    err[0] = '\0';
    mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
    mc_gguf_destroy(&g);
    free(buf);
    return t;
}

static void image(mc_gguf_writer_t *w, uint8_t **buf, size_t *len) {
    char err[MC_ERR_LEN] = "";
    if (mc_gguf_writer_write_mem(w, no_data, NULL, buf, len, err) != MC_OK) fail_msg("write GGUF: %s", err);
    mc_gguf_writer_destroy(&w);
}

// The vocabulary as a GGUF file (written and read back in memory), with the
// Qwen-style special ids.
static mc_tokenizer_t *tok_from_vocab(const mc_bpe_vocab_t *v) {
    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    char err[MC_ERR_LEN] = "";
    assert_non_null(w);
    assert_int_equal(mc_gguf_writer_add_str(w, "general.architecture", "qwen3moe"), MC_OK);
    if (mc_bpe_vocab_to_gguf(v, w, err) != MC_OK) fail_msg("%s", err);
    assert_int_equal(mc_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->endoftext_id), MC_OK);
    assert_int_equal(mc_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->im_end_id), MC_OK);
    uint8_t *buf;
    size_t len;
    image(w, &buf, &len);
    mc_tokenizer_t *t = tok_from_image(buf, len, err);
    if (!t) fail_msg("tokenizer: %s", err);
    return t;
}

static int32_t *encode(const mc_tokenizer_t *t, const char *text, size_t len, size_t *n) {
    size_t cap = mc_tokenizer_max_tokens(len);
    int32_t *ids = malloc(cap * sizeof(*ids));
    assert_non_null(ids);
    char err[MC_ERR_LEN] = "";
    if (mc_tokenizer_encode(t, text, len, false, ids, cap, n, err) != MC_OK) fail_msg("encode: %s", err);
    assert_true(*n <= len);
    return ids;
}

// The bytes the pieces of ids stand for, concatenated (no UTF-8 repair).
static char *piece_bytes(const mc_tokenizer_t *t, const int32_t *ids, size_t n, size_t *out_len) {
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        assert_non_null(mc_tokenizer_piece(t, ids[i], &len));
        cap += len;
    }
    char *out = malloc(cap);
    assert_non_null(out);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = mc_tokenizer_piece(t, ids[i], &len);
        w += mc_bpe_piece_to_bytes(p, len, out + w);
    }
    *out_len = w;
    return out;
}

// Decode token by token; every chunk must be valid UTF-8 on its own.
static char *stream_decode(const mc_tokenizer_t *t, const int32_t *ids, size_t n) {
    size_t step = mc_detok_max_bytes(t);
    char *all = malloc((n + 1) * step + 1), *chunk = malloc(step);
    assert_non_null(all);
    assert_non_null(chunk);
    size_t len = 0;
    mc_detok_t d;
    mc_detok_init(&d, true); // a SentencePiece flag: byte-level BPE must ignore it
    for (size_t i = 0; i <= n; i++) {
        size_t w = i < n ? mc_detok_push(t, &d, ids[i], chunk, step) : mc_detok_flush(&d, chunk, step);
        assert_true(w <= step);
        if (!valid_utf8(chunk, w)) fail_msg("chunk %zu is not valid UTF-8 on its own", i);
        memcpy(all + len, chunk, w);
        len += w;
    }
    all[len] = '\0';
    free(chunk);
    return all;
}

typedef struct {
    char *items[64];
    size_t n;
} words_t;

static mc_err_t collect(void *ctx, const char *word, size_t len, char *err) {
    (void)err;
    words_t *w = ctx;
    assert_true(w->n < N_OF(w->items));
    w->items[w->n] = malloc(len + 1);
    assert_non_null(w->items[w->n]);
    memcpy(w->items[w->n], word, len);
    w->items[w->n++][len] = '\0';
    return MC_OK;
}

// Split text and compare with the NULL-terminated list of expected words.
static void assert_split(const mc_bpe_pre_t *p, const char *text, const char *const *want) {
    words_t w = {0};
    char err[MC_ERR_LEN] = "";
    if (mc_bpe_pre_split(p, text, strlen(text), collect, &w, err) != MC_OK) fail_msg("split: %s", err);
    size_t n_want = 0;
    while (want[n_want]) n_want++;
    bool same = w.n == n_want;
    for (size_t i = 0; same && i < n_want; i++) same = strcmp(w.items[i], want[i]) == 0;
    if (!same) {
        char got[1024] = "";
        for (size_t i = 0; i < w.n; i++) snprintf(got + strlen(got), sizeof(got) - strlen(got), "[%s]", w.items[i]);
        fail_msg("%s: '%s' split as %s", mc_bpe_pre_name(p), text, got);
    }
    for (size_t i = 0; i < w.n; i++) free(w.items[i]);
}

static mc_bpe_pre_t *pre_new(const char *name) {
    char err[MC_ERR_LEN] = "";
    mc_bpe_pre_t *p = mc_bpe_pre_new(name, strlen(name), err);
    if (!p) fail_msg("pre %s: %s", name, err);
    return p;
}

/* ---- byte mapping ---- */

static void test_byte_map(void **state) {
    (void)state;
    // GPT-2's table: printable bytes are themselves, the rest from U+0100 on.
    assert_int_equal(mc_bpe_byte_cp('!'), '!');
    assert_int_equal(mc_bpe_byte_cp(0x00), 0x100);
    assert_int_equal(mc_bpe_byte_cp(' '), 0x120);  // "Ġ"
    assert_int_equal(mc_bpe_byte_cp('\n'), 0x10a); // "Ċ"
    assert_int_equal(mc_bpe_byte_cp(0x7f), 0x121);
    assert_int_equal(mc_bpe_byte_cp(0xa0), 0x142);
    assert_int_equal(mc_bpe_byte_cp(0xad), 0x143);
    assert_int_equal(mc_bpe_byte_cp(0xae), 0xae);
    assert_int_equal(mc_bpe_cp_byte(0x144), -1);
    assert_int_equal(mc_bpe_cp_byte(0x20), -1); // a space is never a byte-level character
    assert_int_equal(mc_bpe_cp_byte(0xad), -1);
    bool seen[0x144] = {false};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = mc_bpe_byte_cp((uint8_t)b);
        assert_true(cp < 0x144 && !seen[cp]);
        seen[cp] = true;
        assert_int_equal(mc_bpe_cp_byte(cp), b);
    }
    uint8_t all[256];
    for (int b = 0; b < 256; b++) all[b] = (uint8_t)b;
    char piece[512], back[512];
    size_t n = mc_bpe_bytes_to_piece(all, 256, piece);
    assert_true(n <= 512 && valid_utf8(piece, n));
    assert_int_equal(mc_bpe_piece_to_bytes(piece, n, back), 256);
    assert_memory_equal(back, all, 256);
    assert_int_equal(mc_bpe_bytes_to_piece((const uint8_t *)" a\n", 3, piece), 5);
    assert_memory_equal(piece, "\xc4\xa0" "a" "\xc4\x8a", 5);
    // Characters outside the mapping pass through as text.
    assert_int_equal(mc_bpe_piece_to_bytes("\xe2\x82\xac" "a", 4, back), 4);
    assert_memory_equal(back, "\xe2\x82\xac" "a", 4);
}

/* ---- pre-tokenizer ---- */

#define SPLIT(p, text, ...) assert_split(p, text, (const char *const[]){__VA_ARGS__, NULL})

static void test_pre_qwen2(void **state) {
    (void)state;
    mc_bpe_pre_t *p = pre_new("qwen2");
    assert_string_equal(mc_bpe_pre_name(p), "qwen2");
    SPLIT(p, "Hello world", "Hello", " world");
    SPLIT(p, "12345", "1", "2", "3", "4", "5");                       // digits one by one
    SPLIT(p, "I'M here, it's", "I", "'M", " here", ",", " it", "'s"); // contractions in any case
    SPLIT(p, "a   b", "a", "  ", " b");                               // \s+(?!\S), then " b"
    SPLIT(p, "x  \n\n  y", "x", "  \n\n", " ", " y");                 // \s*[\r\n]+
    SPLIT(p, "end  ", "end", "  ");
    SPLIT(p, "(x)", "(x", ")");                                       // one non-letter may lead a word
    SPLIT(p, "a...\n\nb", "a", "...\n\n", "b");                       // punctuation takes its newlines
    SPLIT(p, "\tfoo", "\tfoo");
    SPLIT(p, "€5", "€", "5");
    SPLIT(p, "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87", "caf\xc3\xa9", " \xe4\xb8\xad\xe6\x96\x87");
    // \s is the White_Space property, as llama.cpp has it: U+0085 is a
    // space, U+180E (PCRE2's \s would say yes) and U+200B are not.
    SPLIT(p, "a\xc2\x85\xc2\x85" "b", "a", "\xc2\x85", "\xc2\x85" "b");
    SPLIT(p, "a\xe1\xa0\x8e" "b", "a", "\xe1\xa0\x8e" "b");
    SPLIT(p, "a\xe2\x80\x8b" "b", "a", "\xe2\x80\x8b" "b");
    // Invalid UTF-8 is matched as U+FFFD (a symbol) but kept as the byte.
    SPLIT(p, "a\xff" "b", "a", "\xff" "b");
    SPLIT(p, "\xe2\x82", "\xe2\x82");
    mc_bpe_pre_destroy(&p);
    assert_null(p);
    mc_bpe_pre_destroy(&p);
}

static void test_pre_gpt2(void **state) {
    (void)state;
    const char *names[] = {"olmo", "gpt-2"};
    for (size_t i = 0; i < N_OF(names); i++) {
        mc_bpe_pre_t *p = pre_new(names[i]);
        assert_string_equal(mc_bpe_pre_name(p), names[i]);
        SPLIT(p, "Hello world", "Hello", " world");
        SPLIT(p, "12345 678", "12345", " 678");                          // digit runs stay whole
        SPLIT(p, "I'M here, it's", "I", "'", "M", " here", ",", " it", "'s"); // contractions: lower case only
        SPLIT(p, "a   b", "a", "  ", " b");
        SPLIT(p, "x\n\ny", "x", "\n", "\n", "y"); // no \s*[\r\n]+ here: \s+(?!\S), then \s+
        SPLIT(p, "(x)", "(", "x", ")");
        SPLIT(p, " !!", " !!");
        mc_bpe_pre_destroy(&p);
    }
}

static void test_pre_glm4(void **state) {
    (void)state;
    mc_bpe_pre_t *p = pre_new("glm4");
    assert_string_equal(mc_bpe_pre_name(p), "glm4");
    SPLIT(p, "12345 67", "123", "45", " ", "67"); // Qwen2's pattern with digits in threes
    SPLIT(p, "I'M here, it's", "I", "'M", " here", ",", " it", "'s");
    SPLIT(p, "(x)", "(x", ")");
    mc_bpe_pre_destroy(&p);
}

// GPT-OSS's o200k pattern as llama.cpp rewrites it: splits that follow from
// the pattern by hand (test_golden_pretok holds the ids to llama.cpp's).
static void test_pre_gpt4o(void **state) {
    (void)state;
    mc_bpe_pre_t *p = pre_new("gpt-4o");
    assert_string_equal(mc_bpe_pre_name(p), "gpt-4o");
    SPLIT(p, "Hello World", "Hello", " World");
    SPLIT(p, "helloWorld HELLOworld", "hello", "World", " HELLOworld"); // a case change up to low starts a word
    SPLIT(p, "I'M here, it's", "I'M", " here", ",", " it's");          // contractions in either case
    SPLIT(p, "12345 67", "123", "45", " ", "67");                       // digits in threes
    SPLIT(p, "a/b;\n\ny", "a", "/b", ";\n\n", "y");                    // symbols take trailing newlines
    SPLIT(p, "x //\n", "x", " //\n");
    SPLIT(p, "\xc3\x89" "clair", "\xc3\x89" "clair"); // a non-ASCII letter is both cases
    SPLIT(p, "a   b", "a", "  ", " b");
    mc_bpe_pre_destroy(&p);
}

static void test_pre_deepseek(void **state) {
    (void)state;
    mc_bpe_pre_t *p = pre_new("deepseek-llm");
    assert_string_equal(mc_bpe_pre_name(p), "deepseek-llm");
    SPLIT(p, "12345 67", "12345", " ", "67");                                  // \p{N}+, last
    SPLIT(p, "I'M here, it's", "I", "'", "M", " here", ",", " it", "'", "s");  // no contractions
    SPLIT(p, "x\n\ny", "x", "\n", "\n", "y");                                  // [\r\n] first, one by one
    SPLIT(p, "a  \n  ", "a", "  ", "\n", "  ");                                // \s+$ within a piece
    SPLIT(p, "ok \xf0\x9f\x98\x80  ", "ok", " \xf0\x9f\x98\x80", "  "); // \s+$ parts an emoji from its spaces
    SPLIT(p, "(x)", "(", "x", ")");
    // U+3000 is white space, never part of the punctuation or CJK ranges.
    SPLIT(p, "\xe4\xb8\xad\xe3\x80\x80\xe6\x96\x87", "\xe4\xb8\xad", "\xe3\x80\x80", "\xe6\x96\x87");
    // Han, then the ideographic full stop, then kana (in the U+0800.. range).
    SPLIT(p, "\xe6\xb7\xb1\xe5\xba\xa6\xe3\x80\x82\xe3\x81\xb2\xe3\x82\xab", "\xe6\xb7\xb1\xe5\xba\xa6", "\xe3\x80\x82",
          "\xe3\x81\xb2\xe3\x82\xab");
    mc_bpe_pre_destroy(&p);

    p = pre_new("deepseek-v3");
    assert_string_equal(mc_bpe_pre_name(p), "deepseek-v3");
    SPLIT(p, "12345 67", "123", "45", " ", "67"); // \p{N}{1,3} first
    SPLIT(p, "x\xe4\xb8\xad\xe6\x96\x87" "abc", "x", "\xe4\xb8\xad\xe6\x96\x87", "abc"); // Han before letters
    SPLIT(p, "I'M here, it's", "I", "'M", " here", ",", " it", "'s");
    SPLIT(p, "x\n\ny", "x", "\n\n", "y");
    SPLIT(p, "(x)", "(x", ")");
    // llama.cpp's \p{S} leaves out '~': "~~" is no match, "~" may lead a word.
    SPLIT(p, "a~~~b ~\xc3\xa9", "a", "~~", "~b", " ", "~\xc3\xa9");
    SPLIT(p, "\xe6\xb7\xb1\xe5\xba\xa6\xe3\x80\x82\xe3\x81\xb2\xe3\x82\xab", "\xe6\xb7\xb1\xe5\xba\xa6", "\xe3\x80\x82",
          "\xe3\x81\xb2\xe3\x82\xab");
    mc_bpe_pre_destroy(&p);
}

static void test_pre_unknown(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    assert_null(mc_bpe_pre_new("llama3", 6, err));
    assert_non_null(strstr(err, "\"llama3\""));
    assert_non_null(strstr(err, "qwen2"));
    assert_non_null(strstr(err, "olmo"));
    assert_null(mc_bpe_pre_new("qwen2x", 6, err));
    assert_null(mc_bpe_pre_new("qwen", 4, err));
    assert_null(mc_bpe_pre_new(NULL, 0, err));
}

static uint32_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

// Whatever the bytes, the words tile the input exactly.
static mc_err_t tile(void *ctx, const char *word, size_t len, char *err) {
    (void)err;
    char **at = ctx;
    assert_true(len > 0);
    assert_ptr_equal(word, *at);
    *at += len;
    return MC_OK;
}

static void test_pre_tiles_random_bytes(void **state) {
    (void)state;
    const char *names[] = {"qwen2", "olmo", "glm4", "deepseek-llm", "deepseek-v3", "gpt-4o"};
    static const char alphabet[] = "ab Z9'\n\r\t.,\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xff\x80\xc2\x85";
    uint64_t seed = 42;
    char text[256];
    for (size_t k = 0; k < N_OF(names); k++) {
        mc_bpe_pre_t *p = pre_new(names[k]);
        for (int round = 0; round < 500; round++) {
            size_t len = lcg(&seed) % sizeof(text);
            for (size_t i = 0; i < len; i++)
                text[i] = round % 2 ? (char)lcg(&seed) : alphabet[lcg(&seed) % (sizeof(alphabet) - 1)];
            char *at = text, err[MC_ERR_LEN] = "";
            if (mc_bpe_pre_split(p, text, len, tile, &at, err) != MC_OK) fail_msg("split: %s", err);
            assert_ptr_equal(at, text + len);
        }
        mc_bpe_pre_destroy(&p);
    }
}

/* ---- trainer ---- */

static void test_train_layout(void **state) {
    (void)state;
    mc_bpe_vocab_t *v = train("qwen2", 600), *again = train("qwen2", 600);
    assert_int_equal(v->n_tokens, 600);
    assert_int_equal(v->n_merges, 600 - 256 - 3); // this corpus never rebuilds a string
    assert_string_equal(v->pre, "qwen2");
    // The bytes in GPT-2's order: by the code point that stands for them.
    assert_string_equal(v->tokens[0], "!");
    assert_string_equal(v->tokens[93], "~");
    assert_string_equal(v->tokens[94], "\xc2\xa1");  // U+00A1
    assert_string_equal(v->tokens[188], "\xc4\x80"); // U+0100, byte 0x00
    assert_string_equal(v->tokens[220], "\xc4\xa0"); // "Ġ", the space
    assert_string_equal(v->tokens[255], "\xc5\x83"); // U+0143, byte 0xAD
    for (uint32_t i = 0; i < 256; i++) {
        uint8_t b;
        assert_int_equal(mc_bpe_piece_to_bytes(v->tokens[i], v->token_lens[i], (char *)&b), 1);
        assert_int_equal(v->token_types[i], MC_TOKEN_NORMAL);
    }
    // The control tokens come last.
    assert_int_equal(v->endoftext_id, 597);
    assert_int_equal(v->im_start_id, 598);
    assert_int_equal(v->im_end_id, 599);
    assert_string_equal(v->tokens[597], "<|endoftext|>");
    assert_string_equal(v->tokens[598], "<|im_start|>");
    assert_string_equal(v->tokens[599], "<|im_end|>");
    for (int i = 597; i < 600; i++) assert_int_equal(v->token_types[i], MC_TOKEN_CONTROL);
    // Merge k made token 256 + k, from two earlier tokens.
    for (uint32_t k = 0; k < v->n_merges; k++) {
        const char *m = v->merges[k], *sp = strchr(m, ' ');
        assert_non_null(sp);
        assert_int_equal(strlen(m), v->merge_lens[k]);
        size_t l = (size_t)(sp - m), r = strlen(sp + 1);
        const char *made = v->tokens[256 + k];
        assert_int_equal(strlen(made), l + r);
        assert_memory_equal(made, m, l);
        assert_memory_equal(made + l, sp + 1, r);
    }
    // The most frequent pair of this corpus comes first.
    assert_string_equal(v->merges[0], "e r");
    // Deterministic: the same again, byte for byte.
    assert_int_equal(again->n_tokens, v->n_tokens);
    assert_int_equal(again->n_merges, v->n_merges);
    for (uint32_t i = 0; i < v->n_tokens; i++) assert_string_equal(again->tokens[i], v->tokens[i]);
    for (uint32_t i = 0; i < v->n_merges; i++) assert_string_equal(again->merges[i], v->merges[i]);
    mc_bpe_vocab_destroy(&again);
    mc_bpe_vocab_destroy(&v);
    assert_null(v);
    mc_bpe_vocab_destroy(&v);
}

static void test_train_limits(void **state) {
    (void)state;
    char err[MC_ERR_LEN] = "";
    mc_bpe_train_params_t p = mc_bpe_train_params_default();
    assert_int_equal(p.n_vocab, 1024);
    assert_string_equal(p.pre, "qwen2");
    p.n_vocab = 258;
    assert_null(mc_bpe_train(NULL, 0, &p, err));
    assert_non_null(strstr(err, "258"));
    p.n_vocab = 1024;
    p.pre = "llama3";
    assert_null(mc_bpe_train(NULL, 0, &p, err));
    assert_non_null(strstr(err, "llama3"));
    assert_null(mc_bpe_train(NULL, 0, NULL, err));

    // A tiny corpus runs out of pairs: fewer tokens than asked for.
    p = mc_bpe_train_params_default();
    const char text[] = "abab abab";
    mc_bpe_vocab_t *v = mc_bpe_train(text, sizeof(text) - 1, &p, err);
    assert_non_null(v);
    // Words "abab" and "Ġabab": "a b" (4 times), "ab ab" (twice), "Ġ abab".
    assert_int_equal(v->n_merges, 3);
    assert_int_equal(v->n_tokens, 256 + 3 + 3);
    assert_string_equal(v->merges[0], "a b");
    assert_string_equal(v->merges[1], "ab ab");
    assert_string_equal(v->merges[2], "\xc4\xa0 abab");
    mc_bpe_vocab_destroy(&v);
    // min_frequency 2: only pairs seen twice.
    p.min_frequency = 2;
    v = mc_bpe_train(text, sizeof(text) - 1, &p, err);
    assert_non_null(v);
    assert_int_equal(v->n_merges, 2);
    mc_bpe_vocab_destroy(&v);
    // A corpus spelling a control token never teaches it: pre-tokens split
    // "<|" and "|>" from the letters.
    const char ctl[] = "<|im_end|> <|im_end|> <|im_end|><|im_end|>";
    p.min_frequency = 1;
    v = mc_bpe_train(ctl, sizeof(ctl) - 1, &p, err);
    assert_non_null(v);
    for (uint32_t i = 0; i < v->n_tokens; i++)
        if (strcmp(v->tokens[i], "<|im_end|>") == 0) assert_int_equal(i, v->im_end_id);
    assert_string_equal(v->merges[0], "< |"); // "<|" occurs most often
    mc_bpe_vocab_destroy(&v);
}

/* ---- exactness against llama.cpp ---- */

static cJSON *golden(const char *path, int n_strings) {
    size_t len;
    uint8_t *text = mc_test_read_file(path, &len);
    if (!text) fail_msg("cannot read %s", path);
    cJSON *root = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    if (!cJSON_IsObject(root)) fail_msg("%s is not a JSON object", path);
    const cJSON *voc = cJSON_GetObjectItem(root, "vocabulary");
    assert_int_equal(cJSON_GetObjectItem(voc, "n_vocab")->valueint, GOLDEN_N_VOCAB);
    assert_int_equal(cJSON_GetObjectItem(voc, "min_frequency")->valueint, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "strings")), n_strings);
    return root;
}

// Train each pre type's vocabulary and check every string of the golden
// file path (n_strings of them) id for id, and its decoding.
static void check_golden(const char *path, int n_strings, const char *const *pres, size_t n_pres) {
    cJSON *root = golden(path, n_strings);
    const cJSON *strings = cJSON_GetObjectItem(root, "strings");
    int matched = 0;
    for (size_t k = 0; k < n_pres; k++) {
        mc_bpe_vocab_t *v = train(pres[k], GOLDEN_N_VOCAB);
        mc_tokenizer_t *t = tok_from_vocab(v);
        assert_int_equal(mc_tokenizer_kind(t), MC_TOKENIZER_BPE);
        assert_int_equal(mc_tokenizer_n_vocab(t), GOLDEN_N_VOCAB);
        assert_false(mc_tokenizer_add_bos(t)); // byte-level default
        for (int i = 0; i < cJSON_GetArraySize(strings); i++) {
            const cJSON *e = cJSON_GetArrayItem(strings, i);
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(e, "name"));
            const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(e, "text"));
            const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "ids"), pres[k]);
            assert_non_null(name);
            assert_non_null(text);
            assert_true(cJSON_IsArray(want));
            size_t n;
            int32_t *ids = encode(t, text, strlen(text), &n);
            if ((int)n != cJSON_GetArraySize(want))
                fail_msg("%s/%s: %zu ids, llama.cpp has %d", pres[k], name, n, cJSON_GetArraySize(want));
            for (size_t j = 0; j < n; j++) {
                int w = cJSON_GetArrayItem(want, (int)j)->valueint;
                if (ids[j] != w) fail_msg("%s/%s: id %zu is %d, llama.cpp has %d", pres[k], name, j, (int)ids[j], w);
            }
            char *dec = mc_tokenizer_decode(t, ids, n), *streamed = stream_decode(t, ids, n);
            assert_non_null(dec);
            if (strcmp(dec, text) != 0) fail_msg("%s/%s: decoded '%s'", pres[k], name, dec);
            assert_string_equal(streamed, text);
            free(dec);
            free(streamed);
            free(ids);
            matched++;
        }
        mc_tokenizer_destroy(&t);
        mc_bpe_vocab_destroy(&v);
    }
    print_message("llama.cpp ids matched for %d strings (%d x %zu pre-tokenizers)\n", matched, n_strings, n_pres);
    assert_int_equal(matched, n_strings * (int)n_pres);
    cJSON_Delete(root);
}

static void test_golden(void **state) {
    (void)state;
    const char *pres[] = {"qwen2", "olmo"};
    check_golden(MC_BPE_GOLDEN, 47, pres, N_OF(pres));
}

// The pre types made of several patterns (DeepSeek), with digit runs
// (GLM-4.5) or case changes splitting words (GPT-OSS's o200k), on the shared
// strings and 24 more aimed at their differences.
static void test_golden_pretok(void **state) {
    (void)state;
    const char *pres[] = {"glm4", "deepseek-llm", "deepseek-v3", "gpt-4o"};
    check_golden(MC_BPE_PRETOK_GOLDEN, 71, pres, N_OF(pres));
}

/* ---- encoding and decoding ---- */

static void test_control_tokens_stay_text(void **state) {
    (void)state;
    mc_bpe_vocab_t *v = train("qwen2", GOLDEN_N_VOCAB);
    mc_tokenizer_t *t = tok_from_vocab(v);
    assert_int_equal(mc_tokenizer_bos(t), v->endoftext_id);
    assert_int_equal(mc_tokenizer_eos(t), v->im_end_id);
    assert_int_equal(mc_tokenizer_find(t, "<|im_start|>", 12), v->im_start_id);
    assert_int_equal(mc_tokenizer_find(t, "<|im_end|>", 10), v->im_end_id);
    assert_int_equal(mc_tokenizer_find(t, "<|endoftext|>", 13), v->endoftext_id);
    assert_int_equal(mc_tokenizer_find(t, "\xc4\xa0", 2), 220);
    assert_int_equal(mc_tokenizer_find(t, "<|im_start", 10), -1);
    assert_int_equal(mc_tokenizer_find(t, "", 0), -1);

    const char text[] = "<|im_start|>user\nhi<|im_end|><|endoftext|>";
    size_t n;
    int32_t *ids = encode(t, text, sizeof(text) - 1, &n);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] < v->endoftext_id);
    char *dec = mc_tokenizer_decode(t, ids, n);
    assert_string_equal(dec, text);
    free(dec);
    free(ids);

    // Placed by id, control tokens decode to nothing; text around them stays.
    size_t k;
    int32_t *hi = encode(t, "hi", 2, &k);
    int32_t seq[8] = {v->im_start_id};
    memcpy(seq + 1, hi, k * sizeof(int32_t));
    seq[1 + k] = v->im_end_id;
    dec = mc_tokenizer_decode(t, seq, k + 2);
    assert_string_equal(dec, "hi");
    free(dec);
    free(hi);
    // With BOS asked for: <|endoftext|> first.
    int32_t ids2[16];
    char err[MC_ERR_LEN];
    assert_int_equal(mc_tokenizer_encode(t, "hi", 2, true, ids2, 16, &n, err), MC_OK);
    assert_int_equal(ids2[0], v->endoftext_id);
    assert_int_equal(n, k + 1);
    mc_tokenizer_destroy(&t);
    mc_bpe_vocab_destroy(&v);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    mc_bpe_vocab_t *v = train("qwen2", GOLDEN_N_VOCAB);
    mc_tokenizer_t *t = tok_from_vocab(v);
    const struct {
        const char *text, *decoded;
    } cases[] = {
        {"\xff\xfe", RC RC},
        {"a\xe2\x96", "a" RC RC},
        {"a\xe2\x96" "a", "a" RC RC "a"},
        {"\xed\xa0\x80", RC RC RC},        // surrogate
        {"\xc0\xaf x", RC RC " x"},        // overlong
        {"\xf4\x90\x80\x80", RC RC RC RC}, // above U+10FFFF
        {"x\xf0\x9f\x98", "x" RC RC RC},   // truncated emoji
        {"caf\xc3\xa9\xc3", "caf\xc3\xa9" RC},
        {"\x80the experts\x80", RC "the experts" RC},
    };
    for (size_t i = 0; i < N_OF(cases); i++) {
        size_t len = strlen(cases[i].text), n, back_len;
        int32_t *ids = encode(t, cases[i].text, len, &n);
        // The pieces hold the input's bytes exactly...
        char *back = piece_bytes(t, ids, n, &back_len);
        assert_int_equal(back_len, len);
        assert_memory_equal(back, cases[i].text, len);
        // ...while decoded text is always valid UTF-8.
        char *dec = mc_tokenizer_decode(t, ids, n), *streamed = stream_decode(t, ids, n);
        assert_string_equal(dec, cases[i].decoded);
        assert_string_equal(streamed, cases[i].decoded);
        free(back);
        free(dec);
        free(streamed);
        free(ids);
    }
    // Random bytes: never a failure, always the same bytes back.
    uint64_t seed = 7;
    char text[300];
    for (int round = 0; round < 300; round++) {
        size_t len = lcg(&seed) % sizeof(text), n, back_len;
        for (size_t i = 0; i < len; i++) text[i] = (char)lcg(&seed);
        int32_t *ids = encode(t, text, len, &n);
        char *back = piece_bytes(t, ids, n, &back_len);
        assert_int_equal(back_len, len);
        assert_memory_equal(back, text, len);
        char *streamed = stream_decode(t, ids, n);
        free(streamed);
        free(back);
        free(ids);
    }
    mc_tokenizer_destroy(&t);
    mc_bpe_vocab_destroy(&v);
}

static void test_streaming_hold_back(void **state) {
    (void)state;
    mc_bpe_vocab_t *v = train("qwen2", GOLDEN_N_VOCAB);
    mc_tokenizer_t *t = tok_from_vocab(v);
    // A fox emoji is not in the corpus: the emoji prefix F0 9F is (every
    // emoji there starts with it), then the last two bytes alone. Nothing
    // comes out until the character is whole.
    const char fox[] = "\xf0\x9f\xa6\x8a";
    size_t n;
    int32_t *ids = encode(t, fox, 4, &n);
    assert_int_equal(n, 3);
    assert_string_equal(mc_tokenizer_piece(t, ids[0], NULL), "\xc3\xb0\xc5\x81"); // "ðŁ"
    size_t step = mc_detok_max_bytes(t);
    char *out = malloc(step);
    assert_non_null(out);
    mc_detok_t d;
    mc_detok_init(&d, true);
    assert_int_equal(mc_detok_push(t, &d, ids[0], out, step), 0);
    // A control token in between writes nothing and keeps what is held back.
    assert_int_equal(mc_detok_push(t, &d, v->im_end_id, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, -5, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, (int32_t)v->n_tokens, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, ids[1], out, step), 0);
    assert_int_equal(d.n_pending, 3);
    assert_int_equal(mc_detok_push(t, &d, ids[2], out, step), 4);
    assert_memory_equal(out, fox, 4);
    // Too small a buffer: nothing consumed.
    assert_int_equal(mc_detok_push(t, &d, ids[0], out, 2), 0);
    assert_int_equal(d.n_pending, 0);
    // An unfinished sequence at the end becomes U+FFFD per byte.
    assert_int_equal(mc_detok_push(t, &d, ids[0], out, step), 0);
    assert_int_equal(mc_detok_flush(&d, out, step), 6);
    assert_memory_equal(out, RC RC, 6);
    // One token's raw bytes: the first two of the fox (half a character),
    // as logprobs report them; a control token has none.
    char raw[MC_TOKENIZER_MAX_PIECE];
    assert_int_equal(mc_tokenizer_token_bytes(t, ids[0], raw, sizeof raw), 2);
    assert_memory_equal(raw, fox, 2);
    assert_int_equal(mc_tokenizer_token_bytes(t, v->im_end_id, raw, sizeof raw), 0);
    // A leading space is kept (no SentencePiece stripping).
    free(ids);
    ids = encode(t, " the", 4, &n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t got = mc_tokenizer_token_bytes(t, ids[i], raw, sizeof raw);
        assert_true(total + got <= 4);
        assert_memory_equal(raw, " the" + total, got);
        total += got;
    }
    assert_int_equal(total, 4);
    char *dec = mc_tokenizer_decode(t, ids, n);
    assert_string_equal(dec, " the");
    free(dec);
    free(ids);
    free(out);
    mc_tokenizer_destroy(&t);
    mc_bpe_vocab_destroy(&v);
}

/* ---- vocabularies given as arrays ---- */

typedef struct {
    mc_gguf_str_t pieces[300];
    int32_t types[300];
    mc_gguf_str_t merges[8];
    char bytes[256][3];
    uint32_t n, n_merges;
} small_t;

// The 256 byte pieces, then extra pieces and merges given as strings.
static void small_init(small_t *s) {
    memset(s, 0, sizeof(*s));
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        size_t n = mc_bpe_bytes_to_piece(&byte, 1, s->bytes[b]);
        s->pieces[b] = (mc_gguf_str_t){s->bytes[b], n};
        s->types[b] = MC_TOKEN_NORMAL;
    }
    s->n = 256;
}

static int32_t small_piece(small_t *s, const char *piece, int32_t type) {
    s->pieces[s->n] = (mc_gguf_str_t){piece, strlen(piece)};
    s->types[s->n] = type;
    return (int32_t)s->n++;
}

static void small_merge(small_t *s, const char *merge) { s->merges[s->n_merges++] = (mc_gguf_str_t){merge, strlen(merge)}; }

static mc_tokenizer_t *small_tok(const small_t *s, const char *pre, char *err) {
    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    p.kind = MC_TOKENIZER_BPE;
    p.n_vocab = s->n;
    p.pieces = s->pieces;
    p.types = s->types;
    p.merges = s->merges;
    p.n_merges = s->n_merges;
    p.pre = (mc_gguf_str_t){pre, strlen(pre)};
    err[0] = '\0';
    return mc_tokenizer_new(&p, err);
}

static void assert_ids(const mc_tokenizer_t *t, const char *text, const int32_t *want, size_t n_want) {
    size_t n;
    int32_t *ids = encode(t, text, strlen(text), &n);
    if (n != n_want) fail_msg("'%s': %zu ids, want %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%s': id %zu is %d, want %d", text, i, (int)ids[i], (int)want[i]);
    free(ids);
}

#define IDS(...) (const int32_t[]){__VA_ARGS__}, N_OF(((const int32_t[]){__VA_ARGS__}))

// Byte-level piece ids of a small_t: the byte itself for printable ASCII.
static int32_t B(char c) { return (uint8_t)c; }

static void test_merge_order(void **state) {
    (void)state;
    small_t s;
    small_init(&s);
    int32_t ab = small_piece(&s, "ab", MC_TOKEN_NORMAL), bc = small_piece(&s, "bc", MC_TOKEN_NORMAL);
    int32_t abc = small_piece(&s, "abc", MC_TOKEN_NORMAL), aa = small_piece(&s, "aa", MC_TOKEN_NORMAL);
    int32_t ctl = small_piece(&s, "cd", MC_TOKEN_CONTROL);
    small_merge(&s, "b c");  // rank 0: beats "a b"
    small_merge(&s, "a b");
    small_merge(&s, "ab c"); // never reached: "bc" is made first
    small_merge(&s, "a a");
    small_merge(&s, "c d");  // makes a control piece: ignored
    small_merge(&s, "b c");  // a repeated pair keeps rank 0
    char err[MC_ERR_LEN];
    mc_tokenizer_t *t = small_tok(&s, "gpt-2", err);
    if (!t) fail_msg("%s", err);
    assert_ids(t, "abc", IDS(B('a'), bc));
    assert_ids(t, "ab", IDS(ab));
    assert_ids(t, "aaa", IDS(aa, B('a')));         // ties: the leftmost pair
    assert_ids(t, "aaaaa", IDS(aa, aa, B('a')));
    assert_ids(t, "cd", IDS(B('c'), B('d')));      // never the control piece
    assert_ids(t, "ab ab", IDS(ab, B(' '), ab));   // merges stay inside pre-tokens (no "Ġ ab" merge)
    (void)abc;
    (void)ctl;
    mc_tokenizer_destroy(&t);
}

static void test_user_defined_pieces(void **state) {
    (void)state;
    small_t s;
    small_init(&s);
    int32_t think = small_piece(&s, "<think>", MC_TOKEN_USER);
    int32_t bcd = small_piece(&s, "bcd", MC_TOKEN_USER), xb = small_piece(&s, "xb", MC_TOKEN_USER);
    int32_t ctl = small_piece(&s, "<|im_start|>", MC_TOKEN_CONTROL);
    char err[MC_ERR_LEN];
    mc_tokenizer_t *t = small_tok(&s, "qwen2", err);
    if (!t) fail_msg("%s", err);
    assert_ids(t, "a<think>b", IDS(B('a'), think, B('b')));
    assert_ids(t, "<think><think>", IDS(think, think));
    // Longest first: "bcd" is cut out before "xb" is looked for.
    assert_ids(t, "xbcd", IDS(B('x'), bcd));
    assert_ids(t, "xbxb", IDS(xb, xb));
    // Control pieces are not matched in text.
    size_t n;
    int32_t *ids = encode(t, "<|im_start|>", 12, &n);
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ids[i], ctl);
    free(ids);
    // Decoding: user-defined pieces are their text.
    char *dec = mc_tokenizer_decode(t, (const int32_t[]){think, B('a'), ctl, xb}, 4);
    assert_string_equal(dec, "<think>axb");
    free(dec);
    mc_tokenizer_destroy(&t);
}

static void test_new_validation(void **state) {
    (void)state;
    const struct {
        const char *merge, *msg;
    } bad[] = {
        {"a", "is not \"left right\""},
        {"a ", "is not \"left right\""},
        {" a", "is not \"left right\""},
        {"a q", "not in the vocabulary"},   // "q" is a byte piece, "aq" is not a piece
        {"a \xe2\x82\xac", "not in the vocabulary"},
        {"zz b", "not in the vocabulary"},
    };
    for (size_t i = 0; i < N_OF(bad); i++) {
        small_t s;
        small_init(&s);
        small_piece(&s, "ab", MC_TOKEN_NORMAL);
        small_merge(&s, "a b");
        small_merge(&s, bad[i].merge);
        char err[MC_ERR_LEN];
        mc_tokenizer_t *t = small_tok(&s, "qwen2", err);
        if (t) fail_msg("merge '%s' accepted", bad[i].merge);
        if (!strstr(err, bad[i].msg)) fail_msg("merge '%s': error '%s' lacks '%s'", bad[i].merge, err, bad[i].msg);
        if (!strstr(err, "merge 1")) fail_msg("error '%s' does not name merge 1", err);
    }
    small_t s;
    small_init(&s);
    char err[MC_ERR_LEN];
    assert_null(small_tok(&s, "llama-bpe", err));
    assert_non_null(strstr(err, "llama-bpe"));
    assert_non_null(strstr(err, MC_BPE_PRE_NAMES));
    assert_null(small_tok(&s, "", err));
    // A missing byte piece fails when that byte is encoded, with a message.
    s.pieces[B('q')] = (mc_gguf_str_t){"\xe2\x82\xac", 3};
    mc_tokenizer_t *t = small_tok(&s, "qwen2", err);
    assert_non_null(t);
    int32_t ids[8];
    size_t n;
    assert_int_equal(mc_tokenizer_encode(t, "aq", 2, false, ids, 8, &n, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "0x71"));
    assert_int_equal(mc_tokenizer_encode(t, "ab", 2, false, ids, 1, &n, err), MC_ERR_RANGE);
    assert_int_equal(mc_tokenizer_encode(t, "ab", 2, false, ids, 2, &n, err), MC_OK);
    assert_int_equal(n, 2);
    mc_tokenizer_destroy(&t);
}

/* ---- hostile GGUF metadata ---- */

enum { H_OK, H_NO_MERGES, H_MERGES_I32, H_MERGES_STR, H_MERGE_UNKNOWN, H_MERGE_NO_SPACE, H_NO_PRE, H_PRE_U32,
       H_PRE_UNKNOWN, H_TYPES_STR, H_TYPES_SHORT, H_BAD_TYPE, H_EOS_RANGE, H_ADD_BOS_STR, H_MODEL_OTHER };

// A small byte-level vocabulary ("ab" = 256, "Ġab" = 257) as a GGUF image,
// spoiled as variant says.
static void hostile_image(int variant, uint8_t **buf, size_t *len) {
    static char bytes[256][3];
    const char *tokens[260];
    size_t lens[260];
    int32_t types[260];
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        lens[b] = mc_bpe_bytes_to_piece(&byte, 1, bytes[b]);
        tokens[b] = bytes[b];
        types[b] = MC_TOKEN_NORMAL;
    }
    tokens[256] = "ab", lens[256] = 2, types[256] = MC_TOKEN_NORMAL;
    tokens[257] = "\xc4\xa0" "ab", lens[257] = 4, types[257] = MC_TOKEN_NORMAL;
    tokens[258] = "<|endoftext|>", lens[258] = 13, types[258] = MC_TOKEN_CONTROL;
    const size_t n = 259;
    const char *merges[] = {"a b", "\xc4\xa0 ab", variant == H_MERGE_UNKNOWN ? "ab c" : "a c"};
    if (variant == H_MERGE_NO_SPACE) merges[2] = "abc";
    tokens[259] = "ac"; // present only when the third merge is "a c"
    lens[259] = 2;
    types[259] = MC_TOKEN_NORMAL;
    const size_t n_tok = variant == H_MERGE_UNKNOWN || variant == H_MERGE_NO_SPACE ? n : n + 1;

    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    assert_non_null(w);
    mc_gguf_writer_add_str(w, "general.architecture", "olmoe");
    mc_gguf_writer_add_str(w, "tokenizer.ggml.model", variant == H_MODEL_OTHER ? "bert" : "gpt2");
    if (variant == H_PRE_U32) mc_gguf_writer_add_u32(w, "tokenizer.ggml.pre", 2);
    else if (variant != H_NO_PRE) mc_gguf_writer_add_str(w, "tokenizer.ggml.pre", variant == H_PRE_UNKNOWN ? "tekken" : "olmo");
    mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, lens, n_tok);
    if (variant == H_TYPES_STR) {
        mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.token_type", tokens, lens, n_tok);
    } else {
        if (variant == H_BAD_TYPE) types[256] = 12;
        mc_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", types, variant == H_TYPES_SHORT ? n_tok - 1 : n_tok);
    }
    if (variant == H_MERGES_I32) mc_gguf_writer_add_arr_i32(w, "tokenizer.ggml.merges", types, 3);
    else if (variant == H_MERGES_STR) mc_gguf_writer_add_str(w, "tokenizer.ggml.merges", "a b");
    else if (variant != H_NO_MERGES) mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 3);
    mc_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", variant == H_EOS_RANGE ? 4000 : 258);
    if (variant == H_ADD_BOS_STR) mc_gguf_writer_add_str(w, "tokenizer.ggml.add_bos_token", "no");
    image(w, buf, len);
}

static void test_gguf_valid(void **state) {
    (void)state;
    uint8_t *buf;
    size_t len;
    char err[MC_ERR_LEN];
    hostile_image(H_OK, &buf, &len);
    mc_tokenizer_t *t = tok_from_image(buf, len, err);
    if (!t) fail_msg("%s", err);
    assert_int_equal(mc_tokenizer_kind(t), MC_TOKENIZER_BPE);
    assert_int_equal(mc_tokenizer_bos(t), -1);
    assert_int_equal(mc_tokenizer_eos(t), 258);
    assert_false(mc_tokenizer_add_bos(t));
    assert_ids(t, "ab ab ac", IDS(256, 257, B(' '), 259)); // bytes are at their own value here
    mc_tokenizer_destroy(&t);
}

static void test_gguf_hostile(void **state) {
    (void)state;
    const struct {
        int variant;
        const char *msg;
    } cases[] = {
        {H_NO_MERGES, "tokenizer.ggml.merges is missing"},
        {H_MERGES_I32, "tokenizer.ggml.merges is missing or not a string array"},
        {H_MERGES_STR, "tokenizer.ggml.merges is missing or not a string array"},
        {H_MERGE_UNKNOWN, "merge 2 (\"ab c\") names a merged piece that is not in the vocabulary"},
        {H_MERGE_NO_SPACE, "merge 2 (\"abc\") is not \"left right\""},
        {H_NO_PRE, "tokenizer.ggml.pre is missing"},
        {H_PRE_U32, "tokenizer.ggml.pre is missing or not a string"},
        {H_PRE_UNKNOWN, "pre-tokenizer \"tekken\" is not supported (supported: " MC_BPE_PRE_NAMES ")"},
        {H_TYPES_STR, "token_type is not a numeric array"},
        {H_TYPES_SHORT, "token_type has 259 entries for 260 tokens"},
        {H_BAD_TYPE, "unknown type 12"},
        {H_EOS_RANGE, "EOS id 4000 outside the vocabulary"},
        {H_ADD_BOS_STR, "add_bos_token is not a boolean"},
        {H_MODEL_OTHER, "model \"bert\" is not supported"},
    };
    for (size_t i = 0; i < N_OF(cases); i++) {
        uint8_t *buf;
        size_t len;
        char err[MC_ERR_LEN];
        hostile_image(cases[i].variant, &buf, &len);
        mc_tokenizer_t *t = tok_from_image(buf, len, err);
        if (t) fail_msg("case %zu accepted", i);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].msg);
    }
}

// A merge count far beyond the file: the reader refuses it before the tokenizer sees it.
static void test_gguf_huge_count(void **state) {
    (void)state;
    uint8_t *buf;
    size_t len;
    hostile_image(H_OK, &buf, &len);
    static const char key[] = "tokenizer.ggml.merges";
    uint8_t *at = NULL;
    for (size_t i = 0; i + sizeof(key) - 1 <= len && !at; i++)
        if (memcmp(buf + i, key, sizeof(key) - 1) == 0) at = buf + i + sizeof(key) - 1;
    assert_non_null(at);
    // key, then u32 type (array), u32 element type (string), u64 count
    uint64_t huge = (uint64_t)1 << 40;
    memcpy(at + 8, &huge, 8);
    char err[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    mc_tokenizer_t *t = g ? mc_tokenizer_new_from_gguf(g, err) : NULL;
    assert_null(t);
    assert_true(strlen(err) > 0);
    mc_gguf_destroy(&g);
    free(buf);
}

/* ---- size and speed ---- */

static void test_long_input(void **state) {
    (void)state;
    mc_bpe_vocab_t *v = train("qwen2", GOLDEN_N_VOCAB);
    mc_tokenizer_t *t = tok_from_vocab(v);
    size_t corpus_len;
    const char *corpus = mc_bpe_corpus(&corpus_len);
    // 10 KB of mixed text, then long runs of one letter, of spaces and of
    // newlines (the worst cases for a naive merge loop or regex).
    const size_t run = SLOW_BUILD ? 50000 : 200000;
    size_t len = 2 * corpus_len + 3 * run;
    char *text = malloc(len + 1);
    assert_non_null(text);
    memcpy(text, corpus, corpus_len);
    memcpy(text + corpus_len, corpus, corpus_len);
    memset(text + 2 * corpus_len, 'a', run);
    memset(text + 2 * corpus_len + run, ' ', run);
    memset(text + 2 * corpus_len + 2 * run, '\n', run);
    text[len] = '\0';

    double t0 = now_s();
    size_t n10;
    int32_t *ids = encode(t, text, 10 * 1024, &n10);
    double t10k = now_s() - t0;
    free(ids);
    t0 = now_s();
    size_t n;
    ids = encode(t, text, len, &n);
    double tall = now_s() - t0;
    print_message("encode: 10 KB in %.2f ms (%zu ids); %zu bytes with long runs in %.1f ms\n", 1e3 * t10k, n10, len,
                  1e3 * tall);
    // Loose bounds (a loaded machine, qemu) that still catch anything
    // quadratic: that would take minutes here.
    assert_true(t10k < (SLOW_BUILD ? 1.0 : 0.2));
    assert_true(tall < (SLOW_BUILD ? 20.0 : 5.0));
    char *dec = mc_tokenizer_decode(t, ids, n);
    assert_non_null(dec);
    assert_string_equal(dec, text);
    free(dec);
    free(ids);
    free(text);
    mc_tokenizer_destroy(&t);
    mc_bpe_vocab_destroy(&v);
}

// A vocabulary the size of Qwen2/Qwen3's (151,646 pieces, 151,387 merges),
// made up: the 256 bytes, the 4,096 pairs of 64 ASCII characters, then
// triples, and control pieces up to the full count.
static void test_load_qwen_sized(void **state) {
    (void)state;
    enum { N_TOKENS = 151646, N_MERGES = 151387, N_CHARS = 64 };
    char **tokens = malloc(N_TOKENS * sizeof(char *)), **merges = malloc(N_MERGES * sizeof(char *));
    int32_t *types = malloc(N_TOKENS * sizeof(int32_t));
    char *arena = malloc((size_t)N_TOKENS * 16 + (size_t)N_MERGES * 8);
    assert_true(tokens && merges && types && arena);
    char *o = arena;
    size_t n_tok = 0, n_merges = 0;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        tokens[n_tok] = o;
        o += mc_bpe_bytes_to_piece(&byte, 1, o);
        *o++ = '\0';
        types[n_tok++] = MC_TOKEN_NORMAL;
    }
    for (int x = 0; x < N_CHARS; x++)
        for (int y = 0; y < N_CHARS; y++) {
            tokens[n_tok] = o, types[n_tok++] = MC_TOKEN_NORMAL;
            o += sprintf(o, "%c%c", '0' + x, '0' + y) + 1;
            merges[n_merges] = o;
            o += sprintf(o, "%c %c", '0' + x, '0' + y) + 1;
            n_merges++;
        }
    for (int xy = 0; xy < N_CHARS * N_CHARS && n_merges < N_MERGES; xy++)
        for (int z = 0; z < N_CHARS && n_merges < N_MERGES; z++) {
            int x = xy / N_CHARS, y = xy % N_CHARS;
            tokens[n_tok] = o, types[n_tok++] = MC_TOKEN_NORMAL;
            o += sprintf(o, "%c%c%c", '0' + x, '0' + y, '0' + z) + 1;
            merges[n_merges] = o;
            o += sprintf(o, "%c%c %c", '0' + x, '0' + y, '0' + z) + 1;
            n_merges++;
        }
    while (n_tok < N_TOKENS) {
        tokens[n_tok] = o, types[n_tok++] = MC_TOKEN_CONTROL;
        o += sprintf(o, "<|extra_%zu|>", n_tok) + 1;
    }
    assert_int_equal(n_merges, N_MERGES);

    mc_gguf_writer_t *w = mc_gguf_writer_new(0);
    assert_non_null(w);
    assert_int_equal(mc_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"), MC_OK);
    assert_int_equal(mc_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2"), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, NULL, n_tok), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", types, n_tok), MC_OK);
    assert_int_equal(mc_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, n_merges),
                     MC_OK);
    uint8_t *buf;
    size_t len;
    image(w, &buf, &len);
    free(tokens);
    free(merges);
    free(types);
    free(arena);

    char err[MC_ERR_LEN] = "";
    double t0 = now_s();
    mc_gguf_t *g = mc_gguf_parse(buf, len, err);
    assert_non_null(g);
    double t_parse = now_s() - t0;
    mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
    double t_load = now_s() - t0;
    if (!t) fail_msg("%s", err);
    mc_gguf_destroy(&g);
    free(buf);
    print_message("%d pieces, %d merges: GGUF parse %.0f ms, parse + tokenizer %.0f ms\n", N_TOKENS, N_MERGES,
                  1e3 * t_parse, 1e3 * t_load);
    assert_true(t_load < (SLOW_BUILD ? 10.0 : 2.0)); // measured: ~20 ms (x86-64, -O2)
    assert_int_equal(mc_tokenizer_n_vocab(t), N_TOKENS);
    // "ABC": AB (the lower pair rank) first, then the triple. "ABCD": AB,
    // then CD (pairs rank below triples), and no merge joins two pairs.
    int32_t abc = mc_tokenizer_find(t, "ABC", 3), ab = mc_tokenizer_find(t, "AB", 2), cd = mc_tokenizer_find(t, "CD", 2);
    assert_true(abc > 256 && ab > 256 && cd > 256);
    assert_ids(t, "ABC", IDS(abc));
    assert_ids(t, "ABCD", IDS(ab, cd));
    mc_tokenizer_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_map),
        cmocka_unit_test(test_pre_qwen2),
        cmocka_unit_test(test_pre_glm4),
        cmocka_unit_test(test_pre_gpt4o),
        cmocka_unit_test(test_pre_deepseek),
        cmocka_unit_test(test_pre_gpt2),
        cmocka_unit_test(test_pre_unknown),
        cmocka_unit_test(test_pre_tiles_random_bytes),
        cmocka_unit_test(test_train_layout),
        cmocka_unit_test(test_train_limits),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_golden_pretok),
        cmocka_unit_test(test_control_tokens_stay_text),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_streaming_hold_back),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_user_defined_pieces),
        cmocka_unit_test(test_new_validation),
        cmocka_unit_test(test_gguf_valid),
        cmocka_unit_test(test_gguf_hostile),
        cmocka_unit_test(test_gguf_huge_count),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test(test_load_qwen_sized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
