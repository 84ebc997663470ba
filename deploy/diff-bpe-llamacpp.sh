#!/usr/bin/env bash
# Differential check of our byte-level BPE tokenizer against llama.cpp's, on
# random strings (beyond the fixed golden file): words in many scripts,
# contractions in both cases, digits, every kind of whitespace, emoji with
# ZWJ and modifiers, combining marks, control characters and literal special
# tokens, tildes, punctuation runs, full-width forms, strung together at
# random. For the vocabularies of deploy/make-bpe-golden.sh (every pre type,
# or those in $PRES), each also with user-defined pieces (matched in text
# before pre-tokenization, as Qwen3's "<think>").
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp deploy/diff-bpe-llamacpp.sh [N [SEED [MAX_PARTS]]]
#
# N strings (default 20000) of up to MAX_PARTS parts (default 12). Needs
# LLAMA_CPP_DIR/build/bin/libllama.so, a C++ compiler and python3. Not run by
# CI. Exits non-zero when any string's ids differ.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout built in build/}"
n=${1:-20000}
seed=${2:-1}
parts=${3:-12}
build=${BUILD_DIR:-build}
lib="$LLAMA_CPP_DIR/build/bin"
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bpe_vocab_gguf bpe_tokenize -j2 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# llama.cpp's side: the same records through llama_tokenize (no BOS, special
# tokens not parsed), one line of ids per string.
cat >"$tmp/llama_ids.cpp" <<'CPP'
#include "llama.h"
#include <cstdio>
#include <vector>
static void quiet(ggml_log_level, const char *, void *) {}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model *m = llama_model_load_from_file(argv[1], mp);
    FILE *f = fopen(argv[2], "rb");
    if (!m || !f) return 1;
    const llama_vocab *v = llama_model_get_vocab(m);
    unsigned char head[4];
    std::vector<char> text;
    std::vector<llama_token> ids;
    while (fread(head, 1, 4, f) == 4) {
        size_t len = head[0] | head[1] << 8 | head[2] << 16 | (size_t)head[3] << 24;
        text.resize(len + 1);
        if (fread(text.data(), 1, len, f) != len) return 1;
        ids.resize(len + 8);
        int k = llama_tokenize(v, text.data(), (int)len, ids.data(), (int)ids.size(), false, false);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    llama_model_free(m);
    return 0;
}
CPP
${CXX:-c++} -O2 -std=c++17 -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" "$tmp/llama_ids.cpp" \
  -L"$lib" -lllama -Wl,-rpath,"$lib" -o "$tmp/llama_ids"

python3 - "$tmp/strings.bin" "$n" "$seed" "$parts" <<'PY'
import random, struct, sys
path, n, seed, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(seed)
bits = ["the", " the", "The", "experts", " experts", "'s", "'S", "'t", "'RE", "'ve", "'m", "'LL", "'d", "'x",
        "''", "\u0120", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\u0085", "\u00a0", "\u3000",
        "\u2028", "\u180e", "\u200b", "\u200d", "1", "23", "456", "7890", "\u0663", "\u216b", "\u00bd", "...",
        "!?", "(", ")", "{", "}", "<|im_start|>", "<think>", "</think>", "<s>", "-", "\u00e9", "\u00fc", "\u00df",
        "\u00c7a", "\u0153", "\u00f1", "\u4e2d\u6587", "\u4f60\u597d", "\u3002", "\uff0c", "\u30c6\u30b9\u30c8",
        "\u3072\u3089\u304c\u306a", "\ud55c\uad6d\uc5b4", "\u041f\u0440\u0438\u0432\u0435\u0442", "\u043c\u0438\u0440",
        "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1", "\u0645\u0631\u062d\u0628\u0627", "\u0928\u092e\u0938\u094d\u0924\u0947",
        "\U0001f600", "\U0001f680", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\u2764\ufe0f", "\U0001f98a", "\u0301", "e\u0301", "\ufb01", "\uff46\uff55\uff4c\uff4c",
        "\U0001d518\U0001d52b", "\x00", "\x07", "\x1f", "\x7f", "$", "\u20ac", "#include", "def ", "return",
        "0x1F", "1e-5", "a", "b", "x", "Z", "~", "~~", "~a", "12345678", "3.14159", "\u2003", "\u3001",
        "\uff01\uff1f", "\u2018", "\u201c", "\u212a", "\u01c5", "\u0800", "\u1680", "\u05d0", "\u0e01",
        "\u3042\u30a2", "\u9fa6", "\uac00", "`", "^", "|", "@", "\\", ".\n", "!!!", "\u00b5"]
with open(path, "wb") as out:
    for _ in range(n):
        b = "".join(random.choice(bits) for _ in range(random.randint(0, parts))).encode("utf-8")
        out.write(struct.pack("<I", len(b)) + b)
PY

status=0
for pre in ${PRES:-qwen2 olmo glm4 deepseek-llm deepseek-v3 gpt-4o}; do
  for user in none pieces; do
    extra=()
    [ "$user" = pieces ] && extra=("<think>" "</think>" "<tool_call>" "<thi" $'nk>\n' "the experts")
    "$build/bpe_vocab_gguf" "$pre" 1536 "$tmp/v.gguf" "${extra[@]}" 2>/dev/null
    "$build/bpe_tokenize" "$tmp/v.gguf" "$tmp/strings.bin" >"$tmp/ours.txt"
    "$tmp/llama_ids" "$tmp/v.gguf" "$tmp/strings.bin" >"$tmp/theirs.txt"
    differ=$(diff "$tmp/ours.txt" "$tmp/theirs.txt" | grep -c '^<' || true)
    echo "$pre, user-defined pieces: $user: $n strings, $differ differ"
    if [ "$differ" -ne 0 ]; then
      status=1
      diff "$tmp/ours.txt" "$tmp/theirs.txt" | head -6
    fi
  done
done
exit $status
