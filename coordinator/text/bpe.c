/*
 * bpe: the byte-level BPE pre-tokenizer and encoder (the vocabulary trainer
 * is bpe_train.c).
 *
 * Behaviour is that of llama.cpp's "gpt2" tokenizer (checked id for id by
 * tests/fixtures/bpe_tokenizer_golden.json and bpe_pretok_golden.json);
 * where it differs or llama.cpp leaves something undefined:
 *  - The regexes are llama.cpp's for the pre type (for DeepSeek a sequence,
 *    each splitting the pieces of the one before), with \s spelled
 *    \p{White_Space}: llama.cpp (like Hugging Face's Rust regex) means the
 *    Unicode White_Space property, while PCRE2's UCP \s also matches U+180E.
 *    Letters and numbers come from PCRE2's Unicode tables, which may be an
 *    older Unicode version than llama.cpp's: characters assigned since then
 *    are split as symbols rather than letters.
 *  - Bytes that are not valid UTF-8 are matched as U+FFFD, as llama.cpp does,
 *    but the byte itself is kept (llama.cpp encodes the three bytes of U+FFFD
 *    instead), so every input round-trips through its tokens.
 *  - Merges run on token ids, not strings: each merge names existing pieces
 *    (checked when loading), so a pair of ids has a rank exactly when the
 *    pair of strings does. A merge whose result is not a text piece (normal
 *    or user-defined) is ignored, so plain text never yields control tokens;
 *    a byte whose piece is missing is an error rather than silently dropped.
 *  - Duplicate piece strings resolve to the highest id, as in llama.cpp (the
 *    caller's lookup decides; see tokenizer.c).
 *
 * The encoder keeps each pre-token as a linked list of symbols and a binary
 * min-heap of candidate merges keyed by (rank, left position); a candidate is
 * recognised as stale when popped because one of its symbols has changed.
 * A pre-token of n bytes costs O(n log n).
 */
#include "bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap.h"
#include "tokenizer.h"

#define MC_BPE_MAX_MERGES (1u << 24)        // far above any real vocabulary
#define MC_BPE_MAX_PIECE 1024u              // bytes, as the tokenizer allows

static const char s_replacement[3] = {'\xef', '\xbf', '\xbd'}; // U+FFFD

/* ---- byte mapping ---- */

// GPT-2 keeps the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF as
// themselves and numbers the other 68 (0x00..0x20, 0x7F..0xA0, 0xAD) from
// U+0100 up, so every byte becomes a visible character.
static bool s_byte_printable(uint32_t b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

uint32_t mc_bpe_byte_cp(uint8_t b) {
    if (s_byte_printable(b)) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xa0) return 0x100 + 0x21 + (uint32_t)(b - 0x7f);
    return 0x100 + 0x21 + 0x22; // 0xAD, the last of the 68
}

int mc_bpe_cp_byte(uint32_t cp) {
    if (cp < 0x100) return s_byte_printable(cp) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0x121 + 0x7f);
    if (cp == 0x143) return 0xad;
    return -1;
}

size_t mc_bpe_bytes_to_piece(const uint8_t *bytes, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = mc_bpe_byte_cp(bytes[i]);
        if (cp < 0x80) {
            out[w++] = (char)cp;
        } else { // all mapped code points are below U+0800
            out[w++] = (char)(0xc0 | (cp >> 6));
            out[w++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return w;
}

/* ---- UTF-8 ---- */

// Length of the valid UTF-8 character at s[0..n) (n > 0), or 0 when s does
// not start with one (overlong forms, surrogates and code points above
// U+10FFFF are invalid, as for PCRE2). *cp receives the code point.
static uint32_t s_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    uint32_t need, c;
    if (b >= 0xc2 && b <= 0xdf) need = 2, c = b & 0x1fu;
    else if (b >= 0xe0 && b <= 0xef) need = 3, c = b & 0x0fu;
    else if (b >= 0xf0 && b <= 0xf4) need = 4, c = b & 0x07u;
    else return 0;
    if (n < need) return 0;
    for (uint32_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3fu);
    }
    if ((need == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (need == 4 && (c < 0x10000 || c > 0x10ffff)))
        return 0;
    *cp = c;
    return need;
}

size_t mc_bpe_piece_to_bytes(const char *piece, size_t len, char *out) {
    const uint8_t *u = (const uint8_t *)piece;
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        uint32_t n = s_utf8_decode(u + i, len - i, &cp);
        int b = n ? mc_bpe_cp_byte(cp) : -1;
        if (b >= 0) {
            out[w++] = (char)b;
        } else { // not part of the mapping: the text itself (one byte if invalid)
            if (n == 0) n = 1;
            memcpy(out + w, piece + i, n);
            w += n;
        }
        i += n;
    }
    return w;
}

/* ---- pre-tokenizer ---- */

// The regexes llama.cpp uses for each pre type, with \s as \p{White_Space}
// (see the top of the file). Qwen2 splits digits one by one and lets one
// non-letter lead a word; GPT-2's is the original pattern.
#define WS "\\p{White_Space}"
static const char s_re_qwen2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|" WS "*[\\r\\n]+"
    "|" WS "+(?!\\P{White_Space})"
    "|" WS "+";
static const char s_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d"
    "| ?\\p{L}+"
    "| ?\\p{N}+"
    "| ?[^" WS "\\p{L}\\p{N}]+"
    "|" WS "+(?!\\P{White_Space})"
    "|" WS "+";

// GLM-4.5 ("glm4") is Llama 3's pattern: Qwen2's with digits in runs of up
// to three.
static const char s_re_glm4[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|" WS "*[\\r\\n]+"
    "|" WS "+(?!\\P{White_Space})"
    "|" WS "+";

// DeepSeek's patterns form a sequence (see mc_bpe_pre_split). llama.cpp runs
// them with std::regex, which needs two adjustments to be reproduced here:
//  - A pattern without \p{..} runs on the code points with every non-ASCII
//    white space replaced by U+000B, so literal ranges never match white
//    space: U+3000 is dropped from deepseek-llm's punctuation range, and its
//    CJK range U+0800..U+4E00, which spans several spaces, is guarded by a
//    look-ahead.
//  - A pattern with \p{..} runs on a "collapsed" text where each ASCII
//    category is spelled out by hand, and that spelling leaves '~' out of
//    \p{S}: '~' counts as neither punctuation nor symbol.
static const char s_re_dsllm_1[] = "[\\r\\n]";
static const char s_re_dsllm_2[] =
    WS "?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}"
    "\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}"
    "\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}"
    "\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}"
    "\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}"
    "\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}"
    "\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}"
    "\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+";
static const char s_re_dsllm_3[] = WS "?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3001}-\\x{3002}]+";
static const char s_re_dsllm_4[] = WS "+$";
static const char s_re_dsllm_5[] = "(?:(?!" WS ")[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}])+";
static const char s_re_dsllm_6[] = "\\p{N}+";

// GPT-OSS's o200k ("gpt-4o"), as llama.cpp runs it: its rewriting of the
// tokenizer.json pattern, where a word is a run of letters other than a-z
// followed by a run of letters other than A-Z (or the other way round),
// with an optional contraction (either case), one leading non-letter,
// digits in runs of up to three, and symbol runs that may end in newlines
// or slashes. Combining marks are not letters here (llama.cpp's rewriting
// drops the original's \p{M}).
#define UP_ "(?:(?=\\p{L})[^a-z])"
#define LO_ "(?:(?=\\p{L})[^A-Z])"
#define CONTR_ "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
static const char s_re_gpt4o[] =
    "[^\\r\\n\\p{L}\\p{N}]?" UP_ "*" LO_ "+" CONTR_
    "|[^\\r\\n\\p{L}\\p{N}]?" UP_ "+" LO_ "*" CONTR_
    "|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*"
    "|" WS "*[\\r\\n]+"
    "|" WS "+(?!\\P{White_Space})"
    "|" WS "+";
#undef UP_
#undef LO_
#undef CONTR_

#define PS_ "(?:(?!~)[\\p{P}\\p{S}])" // llama.cpp's [\p{P}\p{S}], without '~'
static const char s_re_dsv3_1[] = "\\p{N}{1,3}";
static const char s_re_dsv3_2[] = "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+";
static const char s_re_dsv3_3[] =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|(?:~|[^\\r\\n\\p{L}\\p{P}\\p{S}])?[\\p{L}\\p{M}]+"
    "| ?" PS_ "+[\\r\\n]*"
    "|" WS "*[\\r\\n]+"
    "|" WS "+(?!\\P{White_Space})"
    "|" WS "+";
#undef PS_
#undef WS

#define MC_BPE_MAX_REGEX 6

static const struct {
    const char *name;   // tokenizer.ggml.pre
    const char *canon;  // what mc_bpe_pre_name reports
    const char *regex[MC_BPE_MAX_REGEX + 1]; // applied in turn, NULL-terminated
} s_pre_kinds[] = {
    {"qwen2", "qwen2", {s_re_qwen2, NULL}},
    {"olmo", "olmo", {s_re_gpt2, NULL}},
    {"gpt-2", "gpt-2", {s_re_gpt2, NULL}},
    {"glm4", "glm4", {s_re_glm4, NULL}},
    {"deepseek-llm", "deepseek-llm",
     {s_re_dsllm_1, s_re_dsllm_2, s_re_dsllm_3, s_re_dsllm_4, s_re_dsllm_5, s_re_dsllm_6, NULL}},
    {"deepseek-v3", "deepseek-v3", {s_re_dsv3_1, s_re_dsv3_2, s_re_dsv3_3, NULL}},
    {"gpt-4o", "gpt-4o", {s_re_gpt4o, NULL}},
};

struct mc_bpe_pre {
    const char *name;
    size_t n_code;
    pcre2_code *code[MC_BPE_MAX_REGEX];
};

mc_bpe_pre_t *mc_bpe_pre_new(const char *name, size_t len, char *err) {
    if (!name && len > 0) {
        mc_err_set(err, MC_ERR_ARG, "bpe: no pre-tokenizer name");
        return NULL;
    }
    size_t k = 0, n_kinds = sizeof(s_pre_kinds) / sizeof(s_pre_kinds[0]);
    while (k < n_kinds && !(strlen(s_pre_kinds[k].name) == len && memcmp(s_pre_kinds[k].name, name, len) == 0)) k++;
    if (k == n_kinds) {
        mc_err_set(err, MC_ERR_UNSUPPORTED, "bpe: pre-tokenizer \"%.*s\" is not supported (supported: %s)",
                   (int)(len > 32 ? 32 : len), name ? name : "", MC_BPE_PRE_NAMES);
        return NULL;
    }
    mc_bpe_pre_t *p = calloc(1, sizeof(*p));
    if (!p) {
        mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
        return NULL;
    }
    p->name = s_pre_kinds[k].canon;
    for (const char *const *re = s_pre_kinds[k].regex; *re; re++) {
        int code;
        PCRE2_SIZE at;
        // DOLLAR_ENDONLY: '$' means the end of the piece, as in std::regex,
        // not also "before a final newline".
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)*re, PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &at, NULL);
        if (!c) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(code, msg, sizeof(msg));
            mc_err_set(err, MC_ERR_UNSUPPORTED, "bpe: PCRE2 cannot compile the %s pattern %zu at %zu: %s", p->name,
                       p->n_code + 1, (size_t)at, (const char *)msg);
            mc_bpe_pre_destroy(&p);
            return NULL;
        }
        // Without JIT (not built in, or no executable memory) matching still
        // works through the interpreter, only slower.
        (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
        p->code[p->n_code++] = c;
    }
    return p;
}

void mc_bpe_pre_destroy(mc_bpe_pre_t **p) {
    if (!p || !*p) return;
    for (size_t i = 0; i < (*p)->n_code; i++) pcre2_code_free((*p)->code[i]);
    free(*p);
    *p = NULL;
}

const char *mc_bpe_pre_name(const mc_bpe_pre_t *p) { return p->name; }

// Where the subject the regex sees comes from: the text itself, or, for
// text with invalid UTF-8, a copy with U+FFFD per bad byte and a map back.
typedef struct {
    const char *text;   // original
    const char *subj;   // what the regex matches
    size_t subj_len;
    uint32_t *src;      // NULL: subj == text; else original offset of each subj byte, [subj_len + 1]
} s_subject_t;

static size_t s_src(const s_subject_t *s, size_t off) { return s->src ? s->src[off] : off; }

static mc_err_t s_emit(const s_subject_t *s, size_t from, size_t to, mc_bpe_word_fn fn, void *ctx, char *err) {
    size_t a = s_src(s, from), b = s_src(s, to);
    return b > a ? fn(ctx, s->text + a, b - a, err) : MC_OK;
}

static mc_err_t s_pcre2_error(int rc, char *err) {
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    mc_err_t code = rc == PCRE2_ERROR_NOMEMORY ? MC_ERR_NOMEM : MC_ERR_RANGE;
    return mc_err_set(err, code, "bpe: pre-tokenizer match failed: %s", (const char *)msg);
}

// Split subject bytes [from, to) with pattern `level` and hand each piece to
// the next pattern, the last one's pieces to fn. This is llama.cpp's
// sequence: every pattern searches each piece of the previous one on its
// own (the piece end is the subject end, so '$' and look-aheads stop there),
// and both its matches and the stretches between them are pieces.
static mc_err_t s_split_range(const mc_bpe_pre_t *p, pcre2_match_data *const *md, size_t level, const s_subject_t *s,
                              size_t from, size_t to, mc_bpe_word_fn fn, void *ctx, char *err) {
    if (level == p->n_code) return s_emit(s, from, to, fn, ctx, err);
    const PCRE2_SPTR subj = (PCRE2_SPTR)s->subj;
    pcre2_code *code = p->code[level];
    size_t done = from; // subject bytes already handed out
    mc_err_t rc = MC_OK;
    while (done < to && rc == MC_OK) {
        // The subject was validated once; letting PCRE2 re-check it on every
        // call would make the split quadratic.
        int m = pcre2_match(code, subj, to, done, PCRE2_NO_UTF_CHECK, md[level], NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT) // the interpreter keeps its backtracking on the heap
            m = pcre2_match(code, subj, to, done, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md[level], NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            rc = s_pcre2_error(m, err);
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md[level]);
        size_t start = ov[0], end = ov[1];
        if (end <= start) { // no pattern here matches empty; be safe and step one character
            if (start >= to) break;
            uint32_t cp, n = s_utf8_decode((const uint8_t *)s->subj + start, to - start, &cp);
            end = start + (n ? n : 1);
        }
        // Text no alternative matched becomes a piece of its own, as in llama.cpp.
        if (start > done) rc = s_split_range(p, md, level + 1, s, done, start, fn, ctx, err);
        if (rc == MC_OK) rc = s_split_range(p, md, level + 1, s, start, end, fn, ctx, err);
        done = end;
    }
    if (rc == MC_OK && done < to) rc = s_split_range(p, md, level + 1, s, done, to, fn, ctx, err);
    return rc;
}

static mc_err_t s_split_subject(const mc_bpe_pre_t *p, const s_subject_t *s, mc_bpe_word_fn fn, void *ctx, char *err) {
    pcre2_match_data *md[MC_BPE_MAX_REGEX] = {NULL};
    mc_err_t rc = MC_OK;
    for (size_t i = 0; i < p->n_code && rc == MC_OK; i++) {
        md[i] = pcre2_match_data_create_from_pattern(p->code[i], NULL);
        if (!md[i]) rc = mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
    }
    if (rc == MC_OK) rc = s_split_range(p, md, 0, s, 0, s->subj_len, fn, ctx, err);
    for (size_t i = 0; i < p->n_code; i++) pcre2_match_data_free(md[i]);
    return rc;
}

mc_err_t mc_bpe_pre_split(const mc_bpe_pre_t *p, const char *text, size_t len, mc_bpe_word_fn fn, void *ctx,
                          char *err) {
    if (!p || !fn || (!text && len > 0)) return mc_err_set(err, MC_ERR_ARG, "bpe: split called with NULL arguments");
    if (len > UINT32_MAX / 4) return mc_err_set(err, MC_ERR_RANGE, "bpe: text of %zu bytes is too long", len);
    const uint8_t *u = (const uint8_t *)text;
    size_t n_bad = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp, n = s_utf8_decode(u + i, len - i, &cp);
        if (n == 0) n_bad++, n = 1;
        i += n;
    }
    s_subject_t s = {text, text, len, NULL};
    if (n_bad == 0) return s_split_subject(p, &s, fn, ctx, err);

    size_t sub_len = len + 2 * n_bad;
    char *sub = malloc(sub_len);
    uint32_t *src = malloc((sub_len + 1) * sizeof(*src));
    mc_err_t rc;
    if (!sub || !src) {
        rc = mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory splitting %zu bytes", len);
    } else {
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cp, n = s_utf8_decode(u + i, len - i, &cp);
            if (n == 0) {
                memcpy(sub + o, s_replacement, sizeof(s_replacement));
                // Only match boundaries (character starts) are ever mapped back.
                for (size_t k = 0; k < sizeof(s_replacement); k++) src[o + k] = (uint32_t)i;
                o += sizeof(s_replacement);
                i++;
            } else {
                memcpy(sub + o, text + i, n);
                for (uint32_t k = 0; k < n; k++) src[o + k] = (uint32_t)(i + k);
                o += n;
                i += n;
            }
        }
        src[o] = (uint32_t)len;
        s.subj = sub;
        s.subj_len = o;
        s.src = src;
        rc = s_split_subject(p, &s, fn, ctx, err);
    }
    free(sub);
    free(src);
    return rc;
}

/* ---- merge table and encoder ---- */

typedef struct {
    uint32_t left, right; // token ids; left == UINT32_MAX marks an empty slot
    uint32_t rank;
    int32_t merged;
} s_merge_t;

typedef struct {
    int32_t id;
    uint32_t off, len; // text in the user arena
} s_user_t;

struct mc_bpe {
    mc_bpe_pre_t *pre;
    s_merge_t *merges; // open addressing on (left, right)
    size_t mask;
    int32_t byte_tok[256]; // id of the piece of each byte's character, -1 if none
    s_user_t *user;        // user-defined pieces, longest first (then lowest id)
    uint32_t n_user;
    char *user_arena;
};

static size_t s_pair_hash(uint32_t a, uint32_t b) {
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull; // splitmix64 finaliser
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return (size_t)x;
}

static const s_merge_t *s_merge_find(const mc_bpe_t *b, uint32_t left, uint32_t right) {
    for (size_t i = s_pair_hash(left, right) & b->mask;; i = (i + 1) & b->mask) {
        const s_merge_t *m = &b->merges[i];
        if (m->left == UINT32_MAX) return NULL;
        if (m->left == left && m->right == right) return m;
    }
}

static bool s_is_text_type(uint8_t ty) { return ty == MC_TOKEN_NORMAL || ty == MC_TOKEN_USER; }

void mc_bpe_destroy(mc_bpe_t **b) {
    if (!b || !*b) return;
    mc_bpe_pre_destroy(&(*b)->pre);
    free((*b)->merges);
    free((*b)->user);
    free((*b)->user_arena);
    free(*b);
    *b = NULL;
}

const mc_bpe_pre_t *mc_bpe_pre(const mc_bpe_t *b) { return b->pre; }

static int s_user_cmp(const void *a, const void *b) {
    const s_user_t *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static mc_err_t s_load_merges(mc_bpe_t *b, const mc_bpe_params_t *p, char *err) {
    size_t n_slots = 1;
    while (n_slots < (size_t)p->n_merges + p->n_merges / 2 + 1) n_slots *= 2;
    b->merges = malloc(n_slots * sizeof(*b->merges));
    if (!b->merges) return mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory for %u merges", p->n_merges);
    b->mask = n_slots - 1;
    for (size_t i = 0; i < n_slots; i++) b->merges[i].left = UINT32_MAX;

    char both[2 * MC_BPE_MAX_PIECE];
    for (uint32_t r = 0; r < p->n_merges; r++) {
        const mc_gguf_str_t *s = &p->merges[r];
        if (s->len > 0 && !s->ptr) return mc_err_set(err, MC_ERR_ARG, "bpe: merge %u has no text", r);
        // As llama.cpp: split at the first space after the first byte, so a
        // piece may start with a space (byte-level pieces never contain one).
        const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', (size_t)s->len - 1) : NULL;
        size_t l_len = sp ? (size_t)(sp - s->ptr) : 0, r_len = sp ? (size_t)s->len - l_len - 1 : 0;
        if (!sp || r_len == 0)
            return mc_err_set(err, MC_ERR_FORMAT, "bpe: merge %u (\"%.*s\") is not \"left right\"", r,
                              (int)(s->len > 40 ? 40 : s->len), s->ptr ? s->ptr : "");
        if (l_len > MC_BPE_MAX_PIECE || r_len > MC_BPE_MAX_PIECE)
            return mc_err_set(err, MC_ERR_FORMAT, "bpe: merge %u is %llu bytes long", r, (unsigned long long)s->len);
        int32_t li = p->lookup(p->lookup_ctx, s->ptr, l_len);
        int32_t ri = p->lookup(p->lookup_ctx, sp + 1, r_len);
        memcpy(both, s->ptr, l_len);
        memcpy(both + l_len, sp + 1, r_len);
        int32_t mi = p->lookup(p->lookup_ctx, both, l_len + r_len);
        if (li < 0 || ri < 0 || mi < 0)
            return mc_err_set(err, MC_ERR_FORMAT, "bpe: merge %u (\"%.*s\") names %s that is not in the vocabulary", r,
                              (int)(s->len > 40 ? 40 : s->len), s->ptr,
                              li < 0 || ri < 0 ? "a piece" : "a merged piece");
        if (!s_is_text_type(p->types[mi])) continue;
        size_t i = s_pair_hash((uint32_t)li, (uint32_t)ri) & b->mask;
        while (b->merges[i].left != UINT32_MAX && !(b->merges[i].left == (uint32_t)li && b->merges[i].right == (uint32_t)ri))
            i = (i + 1) & b->mask;
        if (b->merges[i].left == UINT32_MAX) // a repeated pair keeps its first (lowest) rank
            b->merges[i] = (s_merge_t){(uint32_t)li, (uint32_t)ri, r, mi};
    }
    return MC_OK;
}

static mc_err_t s_load_user(mc_bpe_t *b, const mc_bpe_params_t *p, char *err) {
    size_t bytes = 0;
    for (uint32_t i = 0; i < p->n_vocab; i++)
        if (p->types[i] == MC_TOKEN_USER && p->pieces[i].len > 0) {
            b->n_user++;
            bytes += (size_t)p->pieces[i].len;
        }
    if (b->n_user == 0) return MC_OK;
    b->user = malloc(b->n_user * sizeof(*b->user));
    b->user_arena = malloc(bytes);
    if (!b->user || !b->user_arena) return mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
    uint32_t k = 0;
    size_t off = 0;
    for (uint32_t i = 0; i < p->n_vocab; i++) {
        const mc_gguf_str_t *s = &p->pieces[i];
        if (p->types[i] != MC_TOKEN_USER || s->len == 0) continue;
        memcpy(b->user_arena + off, s->ptr, (size_t)s->len);
        b->user[k++] = (s_user_t){(int32_t)i, (uint32_t)off, (uint32_t)s->len};
        off += (size_t)s->len;
    }
    // llama.cpp splits the text at user-defined pieces longest first.
    qsort(b->user, b->n_user, sizeof(*b->user), s_user_cmp);
    return MC_OK;
}

mc_bpe_t *mc_bpe_new(const mc_bpe_params_t *p, char *err) {
    if (!p || !p->pieces || !p->types || !p->lookup || (p->n_merges > 0 && !p->merges)) {
        mc_err_set(err, MC_ERR_ARG, "bpe: missing parameters");
        return NULL;
    }
    if (p->n_merges > MC_BPE_MAX_MERGES) {
        mc_err_set(err, MC_ERR_FORMAT, "bpe: %u merges (at most %u)", p->n_merges, MC_BPE_MAX_MERGES);
        return NULL;
    }
    mc_bpe_t *b = calloc(1, sizeof(*b));
    if (!b) {
        mc_err_set(err, MC_ERR_NOMEM, "bpe: out of memory");
        return NULL;
    }
    if (!(b->pre = mc_bpe_pre_new(p->pre, p->pre_len, err)) || s_load_merges(b, p, err) != MC_OK ||
        s_load_user(b, p, err) != MC_OK) {
        mc_bpe_destroy(&b);
        return NULL;
    }
    for (int v = 0; v < 256; v++) {
        char piece[2];
        uint8_t byte = (uint8_t)v;
        size_t n = mc_bpe_bytes_to_piece(&byte, 1, piece);
        int32_t id = p->lookup(p->lookup_ctx, piece, n);
        b->byte_tok[v] = id >= 0 && s_is_text_type(p->types[id]) ? id : -1;
    }
    return b;
}

// A candidate merge of the symbols at positions left and right, valid while
// both still hold the ids they had when it was queued.
typedef struct {
    uint32_t rank;
    int32_t left, right;
    int32_t left_id, right_id, merged;
} s_cand_t;

// Growable work space of one mc_bpe_encode call.
typedef struct {
    const mc_bpe_t *b;
    int32_t *ids;
    size_t cap, n;
    int32_t *sym, *prev, *next; // per position of the current word
    size_t sym_cap;
    mc_heap_t heap; // of s_cand_t
} s_enc_t;

static bool s_cand_before(const void *pa, const void *pb) {
    const s_cand_t *a = pa, *b = pb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static bool s_try_pair(s_enc_t *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return true;
    const s_merge_t *m = s_merge_find(e->b, (uint32_t)e->sym[left], (uint32_t)e->sym[right]);
    if (!m) return true;
    return mc_heap_push(&e->heap, &(s_cand_t){m->rank, left, right, e->sym[left], e->sym[right], m->merged});
}

static mc_err_t s_put(s_enc_t *e, int32_t id, char *err) {
    if (e->n == e->cap) return mc_err_set(err, MC_ERR_RANGE, "tokenizer: id buffer too small");
    e->ids[e->n++] = id;
    return MC_OK;
}

// One pre-token: bytes to their pieces' ids, then merges by rank.
static mc_err_t s_encode_word(void *ctx, const char *word, size_t len, char *err) {
    s_enc_t *e = ctx;
    const uint8_t *u = (const uint8_t *)word;
    if (len > e->sym_cap) {
        size_t cap = len > 2 * e->sym_cap ? len : 2 * e->sym_cap;
        int32_t *sym = realloc(e->sym, cap * sizeof(int32_t));
        if (sym) e->sym = sym;
        int32_t *prev = sym ? realloc(e->prev, cap * sizeof(int32_t)) : NULL;
        if (prev) e->prev = prev;
        int32_t *next = prev ? realloc(e->next, cap * sizeof(int32_t)) : NULL;
        if (!next) return mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory encoding a %zu-byte word", len);
        e->next = next;
        e->sym_cap = cap;
    }
    for (size_t i = 0; i < len; i++) {
        int32_t id = e->b->byte_tok[u[i]];
        if (id < 0)
            return mc_err_set(err, MC_ERR_UNSUPPORTED, "tokenizer: byte 0x%02X has no piece in the vocabulary", u[i]);
        e->sym[i] = id;
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < len ? (int32_t)i + 1 : -1;
    }
    mc_heap_clear(&e->heap);
    for (size_t i = 0; i + 1 < len; i++)
        if (!s_try_pair(e, (int32_t)i, (int32_t)i + 1)) goto nomem;
    while (e->heap.n > 0) {
        s_cand_t c;
        mc_heap_pop(&e->heap, &c);
        if (e->sym[c.left] != c.left_id || e->sym[c.right] != c.right_id || e->next[c.left] != c.right)
            continue; // stale: a neighbour merged since this was queued
        e->sym[c.left] = c.merged;
        e->sym[c.right] = -1;
        e->next[c.left] = e->next[c.right];
        if (e->next[c.right] >= 0) e->prev[e->next[c.right]] = c.left;
        if (!s_try_pair(e, e->prev[c.left], c.left) || !s_try_pair(e, c.left, e->next[c.left])) goto nomem;
    }
    // Position 0 only ever absorbs its right neighbours, so it stays the head.
    for (int32_t k = len > 0 ? 0 : -1; k >= 0; k = e->next[k]) {
        mc_err_t rc = s_put(e, e->sym[k], err);
        if (rc != MC_OK) return rc;
    }
    return MC_OK;
nomem:
    return mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory encoding a %zu-byte word", len);
}

// A piece of the text: raw (id < 0) or a user-defined piece found in it.
typedef struct {
    size_t off, len;
    int32_t id;
} s_frag_t;

typedef struct {
    s_frag_t *v;
    size_t n, cap;
} s_frags_t;

static bool s_frag_add(s_frags_t *f, size_t off, size_t len, int32_t id) {
    if (len == 0) return true;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        s_frag_t *v = realloc(f->v, cap * sizeof(*v));
        if (!v) return false;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (s_frag_t){off, len, id};
    return true;
}

// Cut the raw fragments at each user-defined piece, the longest pieces
// first; a piece found stays whole even where a shorter one overlaps it.
static bool s_partition(const mc_bpe_t *b, const char *text, size_t len, s_frags_t *out) {
    s_frags_t cur = {0}, nxt = {0};
    if (!s_frag_add(&cur, 0, len, -1)) return false;
    for (uint32_t k = 0; k < b->n_user; k++) {
        const s_user_t *u = &b->user[k];
        const char *needle = b->user_arena + u->off;
        nxt.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            s_frag_t f = cur.v[i];
            if (f.id >= 0) {
                if (!s_frag_add(&nxt, f.off, f.len, f.id)) goto fail;
                continue;
            }
            size_t at = f.off, end = f.off + f.len;
            for (;;) {
                const char *hit = end - at >= u->len ? memmem(text + at, end - at, needle, u->len) : NULL;
                if (!hit) break;
                size_t h = (size_t)(hit - text);
                if (!s_frag_add(&nxt, at, h - at, -1) || !s_frag_add(&nxt, h, u->len, u->id)) goto fail;
                at = h + u->len;
            }
            if (!s_frag_add(&nxt, at, end - at, -1)) goto fail;
        }
        s_frags_t t = cur;
        cur = nxt;
        nxt = t;
    }
    free(nxt.v);
    *out = cur;
    return true;
fail:
    free(cur.v);
    free(nxt.v);
    return false;
}

mc_err_t mc_bpe_encode(const mc_bpe_t *b, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n_out,
                       char *err) {
    if (!b || !n_out || (!text && len > 0) || (!ids && cap > 0))
        return mc_err_set(err, MC_ERR_ARG, "tokenizer: encode called with NULL arguments");
    *n_out = 0;
    if (len == 0) return MC_OK;
    s_frags_t frags = {0};
    if (!s_partition(b, text, len, &frags))
        return mc_err_set(err, MC_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    s_enc_t e = {.b = b, .ids = ids, .cap = cap, .heap = mc_heap_make(sizeof(s_cand_t), s_cand_before)};
    mc_err_t rc = MC_OK;
    for (size_t i = 0; i < frags.n && rc == MC_OK; i++) {
        const s_frag_t *f = &frags.v[i];
        rc = f->id >= 0 ? s_put(&e, f->id, err) : mc_bpe_pre_split(b->pre, text + f->off, f->len, s_encode_word, &e, err);
    }
    if (rc == MC_OK) *n_out = e.n;
    free(frags.v);
    free(e.sym);
    free(e.prev);
    free(e.next);
    mc_heap_free(&e.heap);
    return rc;
}
