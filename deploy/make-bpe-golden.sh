#!/usr/bin/env bash
# Regenerates the golden ids of test_bpe: the ids llama.cpp's tokenizer gives
# with byte-level BPE vocabularies that our trainer (mc_bpe_train on the
# built-in corpus) makes for each pre-tokenizer. test_bpe trains the same
# vocabularies again and must reproduce every id.
#  - tests/fixtures/bpe_tokenizer_golden.json: "qwen2" and "olmo", every
#    string of the shared tokenizer_golden.json.
#  - tests/fixtures/bpe_pretok_golden.json: "glm4", "deepseek-llm",
#    "deepseek-v3" and "gpt-4o" (GPT-OSS's o200k), the same strings and the
#    EXTRA ones below, which hit where those pre-tokenizers differ (digit runs, CJK, kana, Hangul,
#    punctuation runs, '~', full-width forms, newlines, contractions, emoji,
#    white space before the end, CJK next to Latin, case changes inside a
#    word, symbol runs ending in newlines or slashes).
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp deploy/make-bpe-golden.sh
#
# LLAMA_CPP_DIR must hold a build of libllama in build/bin; the ids come from
# deploy/llamacpp/bpe_ids.c, compiled against it here. Not run by CI; run it
# again whenever the corpus, the trainer or N_VOCAB changes. Uses the build
# in $BUILD_DIR (default build/) and the shared fixtures in $MC_FIXTURES
# (default ../shared/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout with libllama in build/bin}"
build=${BUILD_DIR:-build}
fixtures=${MC_FIXTURES:-../shared/fixtures}
n_vocab=1536 # keep in step with test_bpe.c (GOLDEN_N_VOCAB)
lib="$LLAMA_CPP_DIR/build/bin"
[ -f "$lib/libllama.so" ] || { echo "make-bpe-golden: no $lib/libllama.so" >&2; exit 1; }
[ -f "$fixtures/tokenizer_golden.json" ] || { echo "make-bpe-golden: no $fixtures/tokenizer_golden.json" >&2; exit 1; }

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bpe_vocab_gguf -j2 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CC:-gcc} -O2 -o "$tmp/llama-bpe-ids" deploy/llamacpp/bpe_ids.c -I"$LLAMA_CPP_DIR/include" \
  -I"$LLAMA_CPP_DIR/ggml/include" -L"$lib" -lllama -lggml -lggml-base -Wl,-rpath,"$lib"
pres="qwen2 olmo glm4 deepseek-llm deepseek-v3 gpt-4o"
for pre in $pres; do
  "$build/bpe_vocab_gguf" "$pre" "$n_vocab" "$tmp/$pre.gguf"
done
commit=$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD 2>/dev/null || echo unknown)

python3 - "$fixtures/tokenizer_golden.json" "$tmp" "$commit" "$n_vocab" <<'PY'
import json, struct, subprocess, sys
src, tmp, commit, n_vocab = sys.argv[1:5]
shared = [(e["name"], e["text"]) for e in json.load(open(src, encoding="utf-8"))]
EXTRA = [
    ("digits_long", "1234567890 12 345 6789012"),
    ("digits_mixed", "v2.5-turbo costs $1,299.99 (x3)"),
    ("digits_arabic_indic", "\u0661\u0662\u0663\u0664 and \u00bd\u2153"),
    ("cjk_han", "\u6df1\u5ea6\u6c42\u7d22\u6a21\u578b\u3002\u6211\u4eec\u662f"),
    ("cjk_kana", "\u3053\u3093\u306b\u3061\u306f\u30c6\u30b9\u30c8\u6f22\u5b57"),
    ("hangul", "\ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8"),
    ("cjk_punct", "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u201c\u5f15\u7528\u201d\u3001\u3000\u5b8c"),
    ("fullwidth", "\uff21\uff22\uff23\uff41\uff42\uff43\uff11\uff12\uff13\uff1f"),
    ("punct_runs", "Wait...!!! ?? ---- ((x)) [[y]] {{z}} ;;"),
    ("tilde", "~~ a~b ~x ~\u00e9 ~~~ ~1"),
    ("symbols", "a+b=c^d|e`f$g<h>i @j #k \\l _m"),
    ("newlines", "one\ntwo\r\nthree\n\n\nfour \n \n five\r\r"),
    ("contractions", "I'm you're he'll we'd they've it's CAN'T I'LL"),
    ("emoji", "ok \U0001f600\U0001f680 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f"),
    ("marks", "e\u0301t\u00e9 na\u0308ive \u0928\u092e\u0938\u094d\u0924\u0947"),
    ("greek_cyrillic", "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1 \u041f\u0440\u0438\u0432\u0435\u0442 \u212a\u2126 \u01c5"),
    ("trailing_space", "end with spaces   "),
    ("trailing_newline_space", "line\n  "),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u1680e\u2028f\u0085g"),
    ("code", "def f(x):\n    return x**2  # sq\n\tif x>=10: pass"),
    ("emoji_trailing_space", "ok \U0001f600  "),
    ("cjk_latin_mixed", "x\u4e2d\u6587 \u65e5\u672cabc \u3072\u3089AI"),
    ("case_runs", "camelCase HTTPServer XMLHttpRequest iPhone McDONALD'S \u00c9COLE\u00e9cole \u0394\u03b4 a\u0301B"),
    ("slashes", "a/b//c http://x.y/z?q=1 ../..// ;\n\n */\r\n -->\n"),
]
strings = shared + EXTRA

# Every text once per vocabulary through llama.cpp.
with open(f"{tmp}/texts.bin", "wb") as f:
    for _, text in strings:
        b = text.encode("utf-8")
        f.write(struct.pack("<I", len(b)) + b)
ids = {}
for pre in ("qwen2", "olmo", "glm4", "deepseek-llm", "deepseek-v3", "gpt-4o"):
    r = subprocess.run([f"{tmp}/llama-bpe-ids", f"{tmp}/{pre}.gguf", f"{tmp}/texts.bin"],
                       capture_output=True, check=True, text=True)
    lines = r.stdout.split("\n")[:-1]
    assert len(lines) == len(strings), (pre, len(lines))
    ids[pre] = [[int(x) for x in l.split()] for l in lines]

def write(path, pres, rows):
    out = [{"name": rows[i][0], "text": rows[i][1], "ids": {p: ids[p][i] for p in pres}} for i in range(len(rows))]
    head = {
        "source": "llama.cpp llama_tokenize (deploy/llamacpp/bpe_ids.c): no BOS, special tokens not parsed",
        "llama_cpp_commit": commit,
        "vocabulary": {"trainer": "mc_bpe_train", "corpus": "built-in (common/bpe_corpus.c)",
                       "n_vocab": int(n_vocab), "min_frequency": 1,
                       "architecture": "qwen3moe", "pre": list(pres)},
    }
    # One string per line keeps diffs readable.
    lines = [json.dumps(s, ensure_ascii=False) for s in out]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "strings": [\n' + ",\n".join(lines) + "\n]}\n")

write(f"{tmp}/old.json", ("qwen2", "olmo"), shared)
write(f"{tmp}/new.json", ("glm4", "deepseek-llm", "deepseek-v3", "gpt-4o"), strings)
PY
mv "$tmp/old.json" tests/fixtures/bpe_tokenizer_golden.json
mv "$tmp/new.json" tests/fixtures/bpe_pretok_golden.json
echo "make-bpe-golden: wrote tests/fixtures/bpe_tokenizer_golden.json and bpe_pretok_golden.json (llama.cpp $commit)" >&2
