/*
 * test_tokenizer: SentencePiece BPE encoding and decoding.
 *
 * With the fixtures: the real Mixtral vocabulary read from tiny-f32.gguf must
 * reproduce SentencePiece's ids and decoded text for all strings of
 * tokenizer_golden.json, the Mixtral chat-format ids of FORMATS.md, and
 * streaming decode must match whole decode chunk by chunk. Without fixtures:
 * small hand-built vocabularies pin down tie-breaking, the exclusion of
 * control/byte pieces from merges, byte fallback, the decode rules, and the
 * validation of hostile GGUF metadata (built in memory here).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "testutil.h"
#include "tokenizer.h"

#define SP "\xe2\x96\x81" // U+2581, SentencePiece's space
#define RC "\xef\xbf\xbd" // U+FFFD

/* ---- helpers ---- */

// Strict UTF-8 check (no overlongs, surrogates or code points > U+10FFFF).
static bool valid_utf8(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp, need;
        if (u[i] < 0x80) { i++; continue; }
        if ((u[i] & 0xe0) == 0xc0) { need = 1; cp = u[i] & 0x1f; }
        else if ((u[i] & 0xf0) == 0xe0) { need = 2; cp = u[i] & 0x0f; }
        else if ((u[i] & 0xf8) == 0xf0) { need = 3; cp = u[i] & 0x07; }
        else return false;
        if (n - i <= need) return false; // truncated
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

// This thread's CPU time: a loaded machine's waits for a core do not count,
// so the bound below catches quadratic work, not a busy neighbour.
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Encode into a fresh buffer sized by mc_tokenizer_max_tokens; fails the test on error.
static int32_t *encode(const mc_tokenizer_t *t, const char *text, size_t len, bool bos, size_t *n) {
    size_t cap = mc_tokenizer_max_tokens(len);
    int32_t *ids = malloc(cap * sizeof(*ids));
    assert_non_null(ids);
    char err[MC_ERR_LEN] = "";
    mc_err_t rc = mc_tokenizer_encode(t, text, len, bos, ids, cap, n, err);
    if (rc != MC_OK) fail_msg("encode failed: %s", err);
    assert_true(*n <= cap);
    return ids;
}

static void assert_ids(const mc_tokenizer_t *t, const char *text, const int32_t *want, size_t n_want) {
    size_t n;
    int32_t *ids = encode(t, text, strlen(text), false, &n);
    if (n != n_want) fail_msg("'%s': %zu ids, want %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%s': id %zu is %d, want %d", text, i, (int)ids[i], (int)want[i]);
    free(ids);
}

// Id of a piece found by a linear scan (independent of the tokenizer's hash map).
static int32_t piece_id(const mc_tokenizer_t *t, const char *piece) {
    for (uint32_t i = 0; i < mc_tokenizer_n_vocab(t); i++) {
        size_t len;
        const char *p = mc_tokenizer_piece(t, (int32_t)i, &len);
        if (len == strlen(piece) && memcmp(p, piece, len) == 0) return (int32_t)i;
    }
    fail_msg("piece '%s' not in vocabulary", piece);
    return -1;
}

// Decode token by token; every chunk must be valid UTF-8 on its own. Returns the concatenation.
static char *stream_decode(const mc_tokenizer_t *t, const int32_t *ids, size_t n) {
    size_t step = mc_detok_max_bytes(t);
    char *all = malloc((n + 1) * step + 1), *chunk = malloc(step);
    assert_non_null(all);
    assert_non_null(chunk);
    size_t len = 0;
    mc_detok_t d;
    mc_detok_init(&d, true);
    for (size_t i = 0; i <= n; i++) {
        size_t w = i < n ? mc_detok_push(t, &d, ids[i], chunk, step) : mc_detok_flush(&d, chunk, step);
        assert_true(w <= step);
        if (!valid_utf8(chunk, w)) fail_msg("chunk %zu is not valid UTF-8 on its own", i);
        memcpy(all + len, chunk, w);
        len += w;
    }
    assert_int_equal(d.n_pending, 0);
    all[len] = '\0';
    free(chunk);
    return all;
}

/* ---- fixture: the Mixtral vocabulary ---- */

// The tokenizer of tiny-f32.gguf, built and then used after the GGUF is gone.
// NULL when the fixtures are absent (the caller skips).
static mc_tokenizer_t *fixture_tokenizer(void) {
    char path[512], err[MC_ERR_LEN] = "";
    if (!mc_test_fixture("tiny-f32.gguf", path, sizeof(path))) return NULL;
    mc_gguf_t *g = mc_gguf_open(path, err);
    if (!g) fail_msg("open %s: %s", path, err);
    mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
    mc_gguf_destroy(&g);
    if (!t) fail_msg("tokenizer from %s: %s", path, err);
    return t;
}

static cJSON *fixture_golden(void) {
    char path[512];
    if (!mc_test_fixture("tokenizer_golden.json", path, sizeof(path))) return NULL;
    size_t len;
    uint8_t *text = mc_test_read_file(path, &len);
    if (!text) fail_msg("cannot read %s", path);
    cJSON *root = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    if (!cJSON_IsArray(root)) fail_msg("%s is not a JSON array", path);
    assert_int_equal(cJSON_GetArraySize(root), 47);
    return root;
}

typedef struct {
    const char *name, *text, *decoded;
    int32_t *ids;
    size_t n_ids;
    const cJSON *pieces;
} golden_t;

static golden_t golden_at(const cJSON *root, int i) {
    const cJSON *e = cJSON_GetArrayItem(root, i);
    golden_t g = {0};
    g.name = cJSON_GetStringValue(cJSON_GetObjectItem(e, "name"));
    g.text = cJSON_GetStringValue(cJSON_GetObjectItem(e, "text"));
    g.decoded = cJSON_GetStringValue(cJSON_GetObjectItem(e, "decoded"));
    g.pieces = cJSON_GetObjectItem(e, "pieces");
    const cJSON *ids = cJSON_GetObjectItem(e, "ids");
    assert_non_null(g.name);
    assert_non_null(g.text);
    assert_non_null(g.decoded);
    assert_true(cJSON_IsArray(ids) && cJSON_IsArray(g.pieces));
    g.n_ids = (size_t)cJSON_GetArraySize(ids);
    assert_int_equal(cJSON_GetArraySize(g.pieces), (int)g.n_ids);
    g.ids = malloc((g.n_ids + 1) * sizeof(int32_t));
    assert_non_null(g.ids);
    for (size_t k = 0; k < g.n_ids; k++) g.ids[k] = (int32_t)cJSON_GetArrayItem(ids, (int)k)->valueint;
    return g;
}

static void test_fixture_metadata(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    assert_int_equal(mc_tokenizer_n_vocab(t), 32000);
    assert_int_equal(mc_tokenizer_bos(t), 1);
    assert_int_equal(mc_tokenizer_eos(t), 2);
    assert_true(mc_tokenizer_add_bos(t));
    size_t len;
    assert_string_equal(mc_tokenizer_piece(t, 1, &len), "<s>");
    assert_int_equal(len, 3);
    assert_string_equal(mc_tokenizer_piece(t, 3 + 0x41, NULL), "<0x41>");
    assert_null(mc_tokenizer_piece(t, 32000, NULL));
    assert_null(mc_tokenizer_piece(t, -1, NULL));
    mc_tokenizer_destroy(&t);
    assert_null(t);
    mc_tokenizer_destroy(&t); // safe twice
}

static void test_golden_encode_decode(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    cJSON *root = fixture_golden();
    for (int i = 0; i < cJSON_GetArraySize(root); i++) {
        golden_t g = golden_at(root, i);
        size_t n;
        int32_t *ids = encode(t, g.text, strlen(g.text), false, &n);
        if (n != g.n_ids) fail_msg("%s: %zu ids, want %zu", g.name, n, g.n_ids);
        for (size_t k = 0; k < n; k++) {
            if (ids[k] != g.ids[k]) fail_msg("%s: id %zu is %d, want %d", g.name, k, (int)ids[k], (int)g.ids[k]);
            const char *want = cJSON_GetStringValue(cJSON_GetArrayItem(g.pieces, (int)k));
            assert_non_null(want);
            assert_string_equal(mc_tokenizer_piece(t, ids[k], NULL), want);
        }
        char *dec = mc_tokenizer_decode(t, g.ids, g.n_ids);
        assert_non_null(dec);
        if (strcmp(dec, g.decoded) != 0) fail_msg("%s: decoded '%s', want '%s'", g.name, dec, g.decoded);
        free(dec);
        free(ids);

        // With BOS: the same ids after id 1, and BOS decodes to nothing.
        ids = encode(t, g.text, strlen(g.text), true, &n);
        assert_int_equal(n, g.n_ids + 1);
        assert_int_equal(ids[0], 1);
        assert_memory_equal(ids + 1, g.ids, g.n_ids * sizeof(int32_t));
        dec = mc_tokenizer_decode(t, ids, n);
        assert_non_null(dec);
        assert_string_equal(dec, g.decoded);
        free(dec);
        free(ids);
        free(g.ids);
    }
    cJSON_Delete(root);
    mc_tokenizer_destroy(&t);
}

static void test_golden_streaming(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    cJSON *root = fixture_golden();
    for (int i = 0; i < cJSON_GetArraySize(root); i++) {
        golden_t g = golden_at(root, i);
        char *whole = mc_tokenizer_decode(t, g.ids, g.n_ids);
        char *streamed = stream_decode(t, g.ids, g.n_ids);
        assert_non_null(whole);
        if (strcmp(whole, streamed) != 0) fail_msg("%s: streamed '%s' != whole '%s'", g.name, streamed, whole);
        free(whole);
        free(streamed);
        free(g.ids);
    }
    cJSON_Delete(root);
    mc_tokenizer_destroy(&t);
}

// Appends sp(text) to ids (each part gets its own dummy-prefix space).
static size_t append_sp(const mc_tokenizer_t *t, const char *text, int32_t *ids, size_t n) {
    size_t k;
    int32_t *part = encode(t, text, strlen(text), false, &k);
    memcpy(ids + n, part, k * sizeof(int32_t));
    free(part);
    return n + k;
}

static void test_chat_format(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    int32_t ids[64];
    size_t n = 0;
    ids[n++] = mc_tokenizer_bos(t);
    n = append_sp(t, "[INST] a [/INST]", ids, n);
    n = append_sp(t, "b", ids, n);
    ids[n++] = mc_tokenizer_eos(t);
    n = append_sp(t, "[INST] c [/INST]", ids, n);
    n = append_sp(t, "d", ids, n);
    ids[n++] = mc_tokenizer_eos(t);
    const int32_t want[] = {1, 733, 16289, 28793, 264, 733, 28748, 16289, 28793, 287, 2,
                            733, 16289, 28793, 277, 733, 28748, 16289, 28793, 281, 2};
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    assert_memory_equal(ids, want, sizeof(want));

    n = 0;
    ids[n++] = mc_tokenizer_bos(t);
    n = append_sp(t, "[INST] SYSTEM\n\na [/INST]", ids, n);
    const int32_t want_sys[] = {1, 733, 16289, 28793, 17121, 22526, 13, 13, 28708, 733, 28748, 16289, 28793};
    assert_int_equal(n, sizeof(want_sys) / sizeof(want_sys[0]));
    assert_memory_equal(ids, want_sys, sizeof(want_sys));
    mc_tokenizer_destroy(&t);
}

static void test_invalid_utf8_input(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    const int32_t space = piece_id(t, SP), a = piece_id(t, SP "a");
    const int32_t xff = piece_id(t, "<0xFF>"), xfe = piece_id(t, "<0xFE>");
    const int32_t xe2 = piece_id(t, "<0xE2>"), x96 = piece_id(t, "<0x96>"), x80 = piece_id(t, "<0x80>");

    // Each invalid byte is a symbol of its own and becomes its byte token.
    assert_ids(t, "\xff\xfe", (const int32_t[]){space, xff, xfe}, 3);
    assert_ids(t, "a\xe2\x96", (const int32_t[]){a, xe2, x96}, 3);        // truncated 3-byte sequence
    assert_ids(t, "a\xe2\x96" "a", (const int32_t[]){a, xe2, x96, piece_id(t, "a")}, 4);
    assert_ids(t, "\x80", (const int32_t[]){space, x80}, 2);               // lone continuation byte

    // Decoding maps each byte outside a valid sequence to one U+FFFD, as
    // SentencePiece does, so invalid input does not round-trip byte-exactly.
    const struct { const char *text, *want; } cases[] = {
        {"\xff\xfe", RC RC},
        {"a\xe2\x96", "a" RC RC},
        {"a\xe2\x96" "a", "a" RC RC "a"},
        {"\xed\xa0\x80", RC RC RC},          // surrogate
        {"\xe0\x80\xaf", RC RC RC},          // overlong
        {"\xf4\x90\x80\x80", RC RC RC RC},   // above U+10FFFF
        {"x\xf0\x9f\x98", "x" RC RC RC},     // truncated 4-byte sequence
        {"\xc3\xa9t\xc3", "\xc3\xa9t" RC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        int32_t *ids = encode(t, cases[i].text, strlen(cases[i].text), false, &n);
        char *whole = mc_tokenizer_decode(t, ids, n), *streamed = stream_decode(t, ids, n);
        assert_non_null(whole);
        assert_string_equal(whole, cases[i].want);
        assert_string_equal(streamed, cases[i].want);
        free(whole);
        free(streamed);
        free(ids);
    }
    mc_tokenizer_destroy(&t);
}

static void test_long_input(void **state) {
    (void)state;
    mc_tokenizer_t *t = fixture_tokenizer();
    if (!t) skip();
    cJSON *root = fixture_golden();
    // About 200 KB: every golden string in turn, then long runs of one letter
    // and of spaces (the worst cases for a naive merge loop).
    size_t cap = 300 * 1024, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int round = 0; len < 150 * 1024; round++) {
        for (int i = 0; i < cJSON_GetArraySize(root); i++) {
            const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(root, i), "text"));
            size_t l = strlen(s);
            memcpy(text + len, s, l);
            len += l;
            text[len++] = (round + i) % 3 ? ' ' : '\n';
        }
    }
    memset(text + len, 'A', 25 * 1024);
    len += 25 * 1024;
    memset(text + len, ' ', 25 * 1024);
    len += 25 * 1024;
    memcpy(text + len, "end", 4);
    len += 3;

    size_t n;
    double t0 = now_s();
    int32_t *ids = encode(t, text, len, true, &n);
    double dt = now_s() - t0;
    // Quadratic merging would take minutes; under an emulator (qemu: the
    // test runner's MC_RUN_PREFIX) everything is about ten times slower.
    const double limit = getenv("MC_RUN_PREFIX") ? 10.0 : 1.0;
    if (dt > limit) fail_msg("encoding %zu bytes took %.2f s of CPU (limit %.0f s)", len, dt, limit);
    assert_true(n > 1000 && n < len);
    char *dec = mc_tokenizer_decode(t, ids, n);
    assert_non_null(dec);
    assert_int_equal(strlen(dec), len);
    assert_memory_equal(dec, text, len);
    free(dec);
    free(ids);
    free(text);
    cJSON_Delete(root);
    mc_tokenizer_destroy(&t);
}

/* ---- hand-built vocabularies ---- */

typedef struct {
    const char *piece;
    float score;
    int32_t type;
} entry_t;

static mc_tokenizer_t *hand_tokenizer(const entry_t *e, size_t n, int32_t unk, char *err) {
    mc_gguf_str_t *pieces = malloc(n * sizeof(*pieces));
    float *scores = malloc(n * sizeof(float));
    int32_t *types = malloc(n * sizeof(int32_t));
    assert_true(pieces && scores && types);
    for (size_t i = 0; i < n; i++) {
        pieces[i] = (mc_gguf_str_t){e[i].piece, strlen(e[i].piece)};
        scores[i] = e[i].score;
        types[i] = e[i].type;
    }
    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    p.n_vocab = (uint32_t)n;
    p.pieces = pieces;
    p.scores = scores;
    p.types = types;
    p.bos_id = 1;
    p.eos_id = 2;
    p.unk_id = unk;
    p.add_bos = true;
    mc_tokenizer_t *t = mc_tokenizer_new(&p, err);
    // The tokenizer keeps copies: scribble over and free the inputs.
    for (size_t i = 0; i < n; i++) pieces[i] = (mc_gguf_str_t){"zz", 2};
    free(pieces);
    free(scores);
    free(types);
    return t;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define NORMAL MC_TOKEN_NORMAL
#define CONTROL MC_TOKEN_CONTROL
#define BYTE MC_TOKEN_BYTE

static const entry_t s_small[] = {
    {"<unk>", 0, MC_TOKEN_UNKNOWN}, // 0
    {"<s>", 0, CONTROL},            // 1
    {"</s>", 0, CONTROL},           // 2
    {SP, -1, NORMAL},               // 3
    {"a", -2, NORMAL},              // 4
    {"b", -2, NORMAL},              // 5
    {"ab", -5, NORMAL},             // 6
    {"ba", -5, NORMAL},             // 7
    {"aa", -5, NORMAL},             // 8
    {SP "b", -9, NORMAL},           // 9
    {"<0x62>", 0, BYTE},            // 10: 'b' as a byte, never produced for text
    {"<0xC3>", 0, BYTE},            // 11: byte pieces at arbitrary ids
    {"<0x0A>", 0, BYTE},            // 12
    {SP SP, -3, NORMAL},            // 13
};

static mc_tokenizer_t *small_tokenizer(void) {
    char err[MC_ERR_LEN] = "";
    mc_tokenizer_t *t = hand_tokenizer(s_small, N_OF(s_small), 0, err);
    if (!t) fail_msg("small vocabulary: %s", err);
    return t;
}

static void test_merge_ties_leftmost(void **state) {
    (void)state;
    mc_tokenizer_t *t = small_tokenizer();
    // "aba": "ab" and "ba" have equal scores; the leftmost pair merges first.
    assert_ids(t, "aba", (const int32_t[]){3, 6, 4}, 3);
    assert_ids(t, "aaaa", (const int32_t[]){3, 8, 8}, 3);
    assert_ids(t, "aaa", (const int32_t[]){3, 8, 4}, 3);
    // " b" (score -9) loses to the pair "ba" (-5), which loses to "  " (-3).
    assert_ids(t, "ba", (const int32_t[]){3, 7}, 2);
    assert_ids(t, " ba", (const int32_t[]){13, 7}, 2);
    mc_tokenizer_destroy(&t);

    // Scores decide before position: make "ba" better than "ab".
    entry_t v[N_OF(s_small)];
    memcpy(v, s_small, sizeof(v));
    v[7].score = -4;
    char err[MC_ERR_LEN];
    t = hand_tokenizer(v, N_OF(v), 0, err);
    assert_non_null(t);
    assert_ids(t, "aba", (const int32_t[]){3, 4, 7}, 3);
    mc_tokenizer_destroy(&t);
}

static void test_byte_fallback(void **state) {
    (void)state;
    mc_tokenizer_t *t = small_tokenizer();
    // 'b' has a normal piece, so its byte piece <0x62> is never used for it;
    // "é" = C3 A9 is no piece: <0xC3> exists (id 11), <0xA9> does not -> unk.
    assert_ids(t, "b\xc3\xa9\n", (const int32_t[]){9, 11, 0, 12}, 4);
    // Text that spells a control or byte piece stays text.
    assert_ids(t, "<s>", (const int32_t[]){3, 0, 0, 0}, 4); // '<' 's' '>' are not pieces here
    mc_tokenizer_destroy(&t);

    // Without an unknown token a byte that has no piece cannot be encoded.
    char err[MC_ERR_LEN] = "";
    t = hand_tokenizer(s_small, N_OF(s_small), -1, err);
    assert_non_null(t);
    int32_t ids[16];
    size_t n = 99;
    assert_int_equal(mc_tokenizer_encode(t, "\xc3\xa9", 2, false, ids, 16, &n, err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "0xA9"));
    assert_int_equal(n, 99); // untouched on failure
    mc_tokenizer_destroy(&t);

    // An invalid byte is a symbol of its own even when it looks like the start
    // of a truncated sequence: here 96 is (oddly) a normal piece by itself.
    static const entry_t v[] = {
        {"<unk>", 0, MC_TOKEN_UNKNOWN}, {"<s>", 0, CONTROL}, {"</s>", 0, CONTROL}, {SP, -1, NORMAL},
        {"\x96", -1, NORMAL},
    };
    t = hand_tokenizer(v, N_OF(v), 0, err);
    assert_non_null(t);
    assert_ids(t, "\xe2\x96", (const int32_t[]){3, 0, 4}, 3);
    mc_tokenizer_destroy(&t);
}

static void test_control_and_byte_pieces_not_merged(void **state) {
    (void)state;
    static const entry_t v[] = {
        {"<unk>", 0, MC_TOKEN_UNKNOWN}, // 0
        {"<s>", 0, CONTROL},            // 1
        {"</s>", 0, CONTROL},           // 2
        {SP, -1, NORMAL},               // 3
        {"<", -2, NORMAL},              // 4
        {"s", -2, NORMAL},              // 5
        {">", -2, NORMAL},              // 6
        {"<s", -3, NORMAL},             // 7
        {"0", -2, NORMAL},              // 8
        {"x", -2, NORMAL},              // 9
        {"4", -2, NORMAL},              // 10
        {"1", -2, NORMAL},              // 11
        {"<0", -3, NORMAL},             // 12
        {"<0x", -3, NORMAL},            // 13
        {"<0x4", -3, NORMAL},           // 14
        {"1>", -3, NORMAL},             // 15
        {"<0x41>", 0, BYTE},            // 16
        {"~", 0, CONTROL},              // 17: a one-character control piece
        {"<0x7E>", 0, BYTE},            // 18
        {"<u", -3, NORMAL},             // 19
        {"u", -2, NORMAL},              // 20
        {"n", -2, NORMAL},              // 21
        {"k", -2, NORMAL},              // 22
        {"<un", -3, NORMAL},            // 23
        {"<unk", -3, NORMAL},           // 24
        {"MC", 0, MC_TOKEN_USER},       // 25
        {"M", -2, NORMAL},              // 26
        {"C", -2, NORMAL},              // 27
    };
    char err[MC_ERR_LEN] = "";
    mc_tokenizer_t *t = hand_tokenizer(v, N_OF(v), 0, err);
    if (!t) fail_msg("%s", err);
    assert_ids(t, "<s>", (const int32_t[]){3, 7, 6}, 3);
    assert_ids(t, "<0x41>", (const int32_t[]){3, 14, 15}, 3);
    assert_ids(t, "<unk>", (const int32_t[]){3, 24, 6}, 3);
    assert_ids(t, "~", (const int32_t[]){3, 18}, 2); // not the control piece: its byte
    assert_ids(t, "MC", (const int32_t[]){3, 25}, 2); // user pieces are merge targets
    mc_tokenizer_destroy(&t);
}

static void test_encode_arguments(void **state) {
    (void)state;
    mc_tokenizer_t *t = small_tokenizer();
    int32_t ids[8];
    size_t n = 99;
    char err[MC_ERR_LEN] = "";
    // Empty text: nothing, not even the dummy prefix; BOS alone when asked.
    assert_int_equal(mc_tokenizer_encode(t, "", 0, false, ids, 8, &n, err), MC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(mc_tokenizer_encode(t, NULL, 0, true, ids, 8, &n, err), MC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    // Too small an id buffer.
    n = 99;
    assert_int_equal(mc_tokenizer_encode(t, "abab", 4, true, ids, 2, &n, err), MC_ERR_RANGE);
    assert_int_equal(n, 99);
    assert_int_equal(mc_tokenizer_encode(t, "a", 1, true, ids, 0, &n, err), MC_ERR_RANGE);
    assert_int_equal(mc_tokenizer_encode(t, NULL, 3, false, ids, 8, &n, err), MC_ERR_ARG);
    assert_true(mc_tokenizer_max_tokens(0) >= 1);
    assert_int_equal(mc_tokenizer_max_tokens(SIZE_MAX), SIZE_MAX); // saturates
    mc_tokenizer_destroy(&t);

    // The bound holds in the worst case, where every character falls back to
    // bytes: each space (U+2581 once normalized) costs three tokens.
    static const entry_t v[] = {{"<unk>", 0, MC_TOKEN_UNKNOWN}, {"<s>", 0, CONTROL}, {"</s>", 0, CONTROL}};
    t = hand_tokenizer(v, N_OF(v), 0, err);
    assert_non_null(t);
    const char *text = "   ";
    size_t cap = mc_tokenizer_max_tokens(strlen(text));
    int32_t *big = malloc(cap * sizeof(int32_t));
    assert_non_null(big);
    assert_int_equal(mc_tokenizer_encode(t, text, strlen(text), true, big, cap, &n, err), MC_OK);
    assert_int_equal(n, 1 + 4 * 3);
    free(big);
    mc_tokenizer_destroy(&t);

    // A vocabulary without BOS cannot add one.
    mc_gguf_str_t pieces[] = {{"a", 1}};
    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    p.n_vocab = 1;
    p.pieces = pieces;
    t = mc_tokenizer_new(&p, err);
    assert_non_null(t);
    assert_false(mc_tokenizer_add_bos(t));
    assert_int_equal(mc_tokenizer_encode(t, "a", 1, true, ids, 8, &n, err), MC_ERR_ARG);
    assert_int_equal(mc_tokenizer_encode(t, "aa", 2, false, ids, 8, &n, err), MC_ERR_UNSUPPORTED);
    mc_tokenizer_destroy(&t);
}

static char *decode_str(const mc_tokenizer_t *t, const int32_t *ids, size_t n) {
    char *s = mc_tokenizer_decode(t, ids, n);
    assert_non_null(s);
    return s;
}

#define ASSERT_DECODE(t, want, ...)                                        \
    do {                                                                   \
        const int32_t ids_[] = {__VA_ARGS__};                              \
        char *got_ = decode_str(t, ids_, N_OF(ids_));                      \
        assert_string_equal(got_, want);                                   \
        char *str_ = stream_decode(t, ids_, N_OF(ids_));                   \
        assert_string_equal(str_, want);                                   \
        free(got_);                                                        \
        free(str_);                                                        \
    } while (0)

static void test_decode_rules(void **state) {
    (void)state;
    mc_tokenizer_t *t = small_tokenizer();
    ASSERT_DECODE(t, "ab", 3, 6);              // one leading space stripped
    ASSERT_DECODE(t, " ab", 13, 6);            // only one
    ASSERT_DECODE(t, "ab", 1, 3, 6, 2);        // control tokens print nothing and keep the strip pending
    ASSERT_DECODE(t, "ab", 0, 3, 6);           // so does <unk> (llama.cpp, not SentencePiece's " \u2047 ")
    ASSERT_DECODE(t, "a b", 4, 9);             // later spaces stay
    ASSERT_DECODE(t, "b b", 10, 9);            // a byte token first: nothing to strip later
    ASSERT_DECODE(t, "\n b", 12, 9);
    ASSERT_DECODE(t, "b", 99999, -5, 9);       // out-of-range ids print nothing
    ASSERT_DECODE(t, RC " b", 11, 9);          // incomplete sequence cut by a text piece
    ASSERT_DECODE(t, RC "b", 11, 2, 10);       // ... or by a control token
    ASSERT_DECODE(t, RC RC, 11, 11);           // C3 C3: the first is invalid, the second cut off
    char *empty = decode_str(t, NULL, 0);
    assert_string_equal(empty, "");
    free(empty);
    mc_tokenizer_destroy(&t);
}

// One token's raw bytes (what logprobs report): a byte token its byte (even
// half a character), U+2581 a space wherever it is, control and unknown
// tokens nothing, a too-small buffer nothing.
static void test_token_bytes(void **state) {
    (void)state;
    mc_tokenizer_t *t = small_tokenizer();
    char b[MC_TOKENIZER_MAX_PIECE];
    assert_int_equal(mc_tokenizer_token_bytes(t, 9, b, sizeof b), 2);
    assert_memory_equal(b, " b", 2);
    assert_int_equal(mc_tokenizer_token_bytes(t, 13, b, sizeof b), 2);
    assert_memory_equal(b, "  ", 2);
    assert_int_equal(mc_tokenizer_token_bytes(t, 11, b, sizeof b), 1);
    assert_int_equal((unsigned char)b[0], 0xC3);
    assert_int_equal(mc_tokenizer_token_bytes(t, 6, b, sizeof b), 2);
    assert_memory_equal(b, "ab", 2);
    assert_int_equal(mc_tokenizer_token_bytes(t, 1, b, sizeof b), 0); // <s>
    assert_int_equal(mc_tokenizer_token_bytes(t, 0, b, sizeof b), 0); // <unk>
    assert_int_equal(mc_tokenizer_token_bytes(t, -1, b, sizeof b), 0);
    assert_int_equal(mc_tokenizer_token_bytes(t, 99999, b, sizeof b), 0);
    assert_int_equal(mc_tokenizer_token_bytes(t, 6, b, 1), 0);
    mc_tokenizer_destroy(&t);
}

static void test_streaming_hold_back(void **state) {
    (void)state;
    static const entry_t v[] = {
        {"<unk>", 0, MC_TOKEN_UNKNOWN}, {"<s>", 0, CONTROL}, {"</s>", 0, CONTROL},
        {"<0xE2>", 0, BYTE}, {"<0x96>", 0, BYTE}, {"<0x81>", 0, BYTE}, {"<0xFF>", 0, BYTE}, // 3..6
        {SP "x", -1, NORMAL}, // 7
    };
    char err[MC_ERR_LEN] = "";
    mc_tokenizer_t *t = hand_tokenizer(v, N_OF(v), 0, err);
    assert_non_null(t);
    size_t step = mc_detok_max_bytes(t);
    assert_true(step >= 3 * (2 + 3)); // longest piece "▁x" plus held-back bytes
    char out[64];
    mc_detok_t d;
    mc_detok_init(&d, false);
    assert_int_equal(mc_detok_push(t, &d, 3, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, 4, out, step), 0);
    assert_int_equal(d.n_pending, 2);
    assert_int_equal(mc_detok_push(t, &d, 5, out, step), 3);
    assert_memory_equal(out, SP, 3);

    // Too small a buffer consumes nothing.
    assert_int_equal(mc_detok_push(t, &d, 3, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, 7, out, 8), 0);
    assert_int_equal(d.n_pending, 1);
    assert_int_equal(mc_detok_push(t, &d, 7, out, step), 5);
    assert_memory_equal(out, RC " x", 5);

    // A byte that can never start a character is replaced at once.
    assert_int_equal(mc_detok_push(t, &d, 6, out, step), 3);
    assert_memory_equal(out, RC, 3);

    // Flush: one U+FFFD per held-back byte.
    assert_int_equal(mc_detok_push(t, &d, 3, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, 4, out, step), 0);
    assert_int_equal(mc_detok_flush(&d, out, 5), 0);
    assert_int_equal(mc_detok_flush(&d, out, 6), 6);
    assert_memory_equal(out, RC RC, 6);
    assert_int_equal(mc_detok_flush(&d, out, 0), 0);

    // With strip_space the stream drops the first piece's leading space.
    mc_detok_init(&d, true);
    assert_int_equal(mc_detok_push(t, &d, 1, out, step), 0);
    assert_int_equal(mc_detok_push(t, &d, 7, out, step), 1);
    assert_memory_equal(out, "x", 1);
    assert_int_equal(mc_detok_push(t, &d, 7, out, step), 2);
    assert_memory_equal(out, " x", 2);
    mc_tokenizer_destroy(&t);
}

static void test_new_validation(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    const struct {
        entry_t e[2];
        int32_t unk;
        const char *msg;
    } bad[] = {
        {{{"a", 0, NORMAL}, {"b", 0, 9}}, -1, "type"},
        {{{"a", 0, NORMAL}, {"<0xZZ>", 0, BYTE}}, -1, "byte piece"},
        {{{"a", 0, NORMAL}, {"<0x4>", 0, BYTE}}, -1, "byte piece"},
        {{{"a", 0, NORMAL}, {"b", NAN, NORMAL}}, -1, "NaN"},
        {{{"a", 0, NORMAL}, {"b", 0, NORMAL}}, 2, "unknown-token"},
        {{{"a", 0, NORMAL}, {"b", 0, NORMAL}}, -2, "unknown-token"},
    };
    for (size_t i = 0; i < N_OF(bad); i++) {
        err[0] = '\0';
        mc_tokenizer_params_t p = mc_tokenizer_params_default();
        mc_gguf_str_t pieces[2];
        float scores[2];
        int32_t types[2];
        for (int k = 0; k < 2; k++) {
            pieces[k] = (mc_gguf_str_t){bad[i].e[k].piece, strlen(bad[i].e[k].piece)};
            scores[k] = bad[i].e[k].score;
            types[k] = bad[i].e[k].type;
        }
        p.n_vocab = 2;
        p.pieces = pieces;
        p.scores = scores;
        p.types = types;
        p.unk_id = bad[i].unk;
        assert_null(mc_tokenizer_new(&p, err));
        if (!strstr(err, bad[i].msg)) fail_msg("case %zu: error '%s' lacks '%s'", i, err, bad[i].msg);
    }

    mc_tokenizer_params_t p = mc_tokenizer_params_default();
    assert_null(mc_tokenizer_new(&p, err)); // empty vocabulary
    assert_null(mc_tokenizer_new(NULL, err));
    mc_gguf_str_t pieces[3] = {{SP "a", 4}, {"b", 1}, {SP "a", 4}};
    p.pieces = pieces;
    p.n_vocab = 3;
    p.bos_id = 3;
    assert_null(mc_tokenizer_new(&p, err));
    assert_non_null(strstr(err, "BOS"));
    p.bos_id = -1;
    p.add_bos = true;
    assert_null(mc_tokenizer_new(&p, err));
    p.add_bos = false;
    char *huge = malloc(5000);
    assert_non_null(huge);
    memset(huge, 'q', 5000);
    pieces[1] = (mc_gguf_str_t){huge, 5000};
    assert_null(mc_tokenizer_new(&p, err));
    pieces[1] = (mc_gguf_str_t){NULL, 3};
    assert_null(mc_tokenizer_new(&p, err));
    free(huge);

    // A duplicate piece is accepted; the text maps to the lowest id.
    pieces[1] = (mc_gguf_str_t){"b", 1};
    mc_tokenizer_t *t = mc_tokenizer_new(&p, err);
    assert_non_null(t);
    assert_ids(t, "a", (const int32_t[]){0}, 1);
    mc_tokenizer_destroy(&t);
}

/* ---- GGUF metadata, built in memory ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
    uint64_t n_kv;
} gb_t;

static void gb_put(gb_t *g, const void *p, size_t n) {
    if (g->n + n > g->cap) {
        g->cap = 2 * (g->n + n) + 64;
        g->b = realloc(g->b, g->cap);
        assert_non_null(g->b);
    }
    memcpy(g->b + g->n, p, n);
    g->n += n;
}
static void gb_u32(gb_t *g, uint32_t v) { gb_put(g, &v, 4); }
static void gb_u64(gb_t *g, uint64_t v) { gb_put(g, &v, 8); }
static void gb_str(gb_t *g, const char *s) {
    gb_u64(g, strlen(s));
    gb_put(g, s, strlen(s));
}
static void gb_key(gb_t *g, const char *key, uint32_t type) {
    gb_str(g, key);
    gb_u32(g, type);
    g->n_kv++;
}
static void kv_str(gb_t *g, const char *key, const char *v) {
    gb_key(g, key, MC_GGUF_STRING);
    gb_str(g, v);
}
static void kv_u32(gb_t *g, const char *key, uint32_t v) {
    gb_key(g, key, MC_GGUF_U32);
    gb_u32(g, v);
}
static void kv_u8(gb_t *g, const char *key, uint8_t v) {
    gb_key(g, key, MC_GGUF_U8);
    gb_put(g, &v, 1);
}
static void kv_i64(gb_t *g, const char *key, int64_t v) {
    gb_key(g, key, MC_GGUF_I64);
    gb_put(g, &v, 8);
}
static void kv_bool(gb_t *g, const char *key, bool v) {
    gb_key(g, key, MC_GGUF_BOOL);
    uint8_t b = v;
    gb_put(g, &b, 1);
}
static void kv_arr_str(gb_t *g, const char *key, const char *const *v, size_t n) {
    gb_key(g, key, MC_GGUF_ARRAY);
    gb_u32(g, MC_GGUF_STRING);
    gb_u64(g, n);
    for (size_t i = 0; i < n; i++) gb_str(g, v[i]);
}
static void kv_arr_f32(gb_t *g, const char *key, const float *v, size_t n) {
    gb_key(g, key, MC_GGUF_ARRAY);
    gb_u32(g, MC_GGUF_F32);
    gb_u64(g, n);
    gb_put(g, v, 4 * n);
}
static void kv_arr_i32(gb_t *g, const char *key, const int32_t *v, size_t n) {
    gb_key(g, key, MC_GGUF_ARRAY);
    gb_u32(g, MC_GGUF_I32);
    gb_u64(g, n);
    gb_put(g, v, 4 * n);
}

// Parse the collected key/values as a GGUF v3 file without tensors and build
// a tokenizer from it (the file buffer is freed before the tokenizer is used).
static mc_tokenizer_t *gb_tokenizer(gb_t *body, char *err) {
    gb_t f = {0};
    gb_u32(&f, MC_GGUF_MAGIC);
    gb_u32(&f, 3);
    gb_u64(&f, 0);
    gb_u64(&f, body->n_kv);
    gb_put(&f, body->b, body->n);
    while (f.n % 32) gb_put(&f, "", 1);
    free(body->b);
    *body = (gb_t){0};
    char gerr[MC_ERR_LEN] = "";
    mc_gguf_t *g = mc_gguf_parse(f.b, f.n, gerr);
    if (!g) fail_msg("test GGUF does not parse: %s", gerr);
    err[0] = '\0';
    mc_tokenizer_t *t = mc_tokenizer_new_from_gguf(g, err);
    mc_gguf_destroy(&g);
    free(f.b);
    return t;
}

static const char *const s_gg_tokens[] = {"<unk>", "<s>", "</s>", "<0x0A>", SP, "a", SP "a"};
static const float s_gg_scores[] = {0, 0, 0, 0, -1, -2, -3};
static const int32_t s_gg_types[] = {2, 3, 3, 6, 1, 1, 1};
#define GG_N N_OF(s_gg_tokens)

// What to leave out or spoil in the test file.
enum { GG_OK, GG_MODEL_GPT2, GG_MODEL_BERT, GG_NO_MODEL, GG_NO_TOKENS, GG_TOKENS_NOT_STR, GG_SCORES_SHORT, GG_TYPES_LONG,
       GG_TYPES_STR, GG_BAD_TYPE, GG_BOS_RANGE, GG_BOS_STR, GG_ADD_BOS_STR, GG_MINIMAL, GG_NO_TOKENS_ARR0 };

static mc_tokenizer_t *gg_build(int variant, char *err) {
    gb_t g = {0};
    kv_str(&g, "general.architecture", "llama");
    if (variant != GG_NO_MODEL)
        kv_str(&g, "tokenizer.ggml.model",
               variant == GG_MODEL_GPT2 ? "gpt2" : variant == GG_MODEL_BERT ? "bert" : "llama");
    if (variant == GG_TOKENS_NOT_STR) kv_arr_i32(&g, "tokenizer.ggml.tokens", s_gg_types, GG_N);
    else if (variant == GG_NO_TOKENS_ARR0) kv_arr_str(&g, "tokenizer.ggml.tokens", s_gg_tokens, 0);
    else if (variant != GG_NO_TOKENS) kv_arr_str(&g, "tokenizer.ggml.tokens", s_gg_tokens, GG_N);
    if (variant == GG_MINIMAL) return gb_tokenizer(&g, err);

    kv_arr_f32(&g, "tokenizer.ggml.scores", s_gg_scores, variant == GG_SCORES_SHORT ? GG_N - 1 : GG_N);
    if (variant == GG_TYPES_STR) {
        kv_arr_str(&g, "tokenizer.ggml.token_type", s_gg_tokens, GG_N);
    } else if (variant == GG_TYPES_LONG || variant == GG_BAD_TYPE) {
        int32_t types[GG_N + 1];
        memcpy(types, s_gg_types, sizeof(s_gg_types));
        types[GG_N] = 1;
        if (variant == GG_BAD_TYPE) types[5] = 7;
        kv_arr_i32(&g, "tokenizer.ggml.token_type", types, variant == GG_TYPES_LONG ? GG_N + 1 : GG_N);
    } else {
        kv_arr_i32(&g, "tokenizer.ggml.token_type", s_gg_types, GG_N);
    }
    if (variant == GG_BOS_STR) kv_str(&g, "tokenizer.ggml.bos_token_id", "1");
    else kv_u8(&g, "tokenizer.ggml.bos_token_id", variant == GG_BOS_RANGE ? GG_N : 1);
    kv_i64(&g, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(&g, "tokenizer.ggml.unknown_token_id", 0);
    if (variant == GG_ADD_BOS_STR) kv_str(&g, "tokenizer.ggml.add_bos_token", "yes");
    else kv_bool(&g, "tokenizer.ggml.add_bos_token", false);
    return gb_tokenizer(&g, err);
}

static void test_gguf_valid(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    mc_tokenizer_t *t = gg_build(GG_OK, err);
    if (!t) fail_msg("%s", err);
    assert_int_equal(mc_tokenizer_n_vocab(t), GG_N);
    assert_int_equal(mc_tokenizer_bos(t), 1);
    assert_int_equal(mc_tokenizer_eos(t), 2);
    assert_false(mc_tokenizer_add_bos(t));
    assert_ids(t, "a\na", (const int32_t[]){6, 3, 5}, 3);
    ASSERT_DECODE(t, "a\na", 1, 6, 3, 5, 2);
    mc_tokenizer_destroy(&t);

    // No scores, no types, no ids: all pieces normal with score 0 (ties go
    // left), no BOS and so no add_bos.
    t = gg_build(GG_MINIMAL, err);
    if (!t) fail_msg("%s", err);
    assert_int_equal(mc_tokenizer_bos(t), -1);
    assert_false(mc_tokenizer_add_bos(t));
    assert_ids(t, "a a", (const int32_t[]){6, 6}, 2);
    assert_ids(t, "\n", (const int32_t[]){4, 3}, 2); // byte pieces are found by their text
    mc_tokenizer_destroy(&t);
}

static void test_gguf_hostile(void **state) {
    (void)state;
    const struct {
        int variant;
        const char *msg;
    } cases[] = {
        // A SentencePiece vocabulary labelled byte-level BPE has no merges.
        {GG_MODEL_GPT2, "tokenizer.ggml.merges is missing"},
        {GG_MODEL_BERT, "model \"bert\" is not supported (only \"llama\", SentencePiece BPE, and \"gpt2\""},
        {GG_NO_MODEL, "tokenizer.ggml.model"},
        {GG_NO_TOKENS, "tokens"},       {GG_TOKENS_NOT_STR, "tokens"},
        {GG_NO_TOKENS_ARR0, "0 tokens"}, {GG_SCORES_SHORT, "scores has 6 entries for 7"},
        {GG_TYPES_LONG, "token_type"},  {GG_TYPES_STR, "token_type"},
        {GG_BAD_TYPE, "type 7"},        {GG_BOS_RANGE, "BOS"},
        {GG_BOS_STR, "bos_token_id"},   {GG_ADD_BOS_STR, "add_bos_token"},
    };
    for (size_t i = 0; i < N_OF(cases); i++) {
        char err[MC_ERR_LEN];
        mc_tokenizer_t *t = gg_build(cases[i].variant, err);
        if (t) fail_msg("case %zu accepted", i);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].msg);
    }
    char err[MC_ERR_LEN];
    assert_null(mc_tokenizer_new_from_gguf(NULL, err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_metadata),
        cmocka_unit_test(test_golden_encode_decode),
        cmocka_unit_test(test_golden_streaming),
        cmocka_unit_test(test_chat_format),
        cmocka_unit_test(test_invalid_utf8_input),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test(test_merge_ties_leftmost),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_control_and_byte_pieces_not_merged),
        cmocka_unit_test(test_encode_arguments),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_streaming_hold_back),
        cmocka_unit_test(test_token_bytes),
        cmocka_unit_test(test_new_validation),
        cmocka_unit_test(test_gguf_valid),
        cmocka_unit_test(test_gguf_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
