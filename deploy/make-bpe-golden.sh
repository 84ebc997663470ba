#!/usr/bin/env bash
# Regenerates tests/fixtures/bpe_tokenizer_golden.json: the ids llama.cpp's
# tokenizer gives for every string of the shared tokenizer_golden.json, with
# byte-level BPE vocabularies that our trainer (mc_bpe_train on the built-in
# corpus) makes for the "qwen2" and "olmo" pre-tokenizers. test_bpe trains the
# same vocabularies again and must reproduce every id.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp deploy/make-bpe-golden.sh
#
# LLAMA_CPP_DIR must hold a build of llama-tokenize in build/bin. Not run by
# CI; run it again whenever the corpus, the trainer or N_VOCAB changes. Uses
# the build in $BUILD_DIR (default build/) and the shared fixtures in
# $MC_FIXTURES (default ../shared/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout with build/bin/llama-tokenize}"
build=${BUILD_DIR:-build}
fixtures=${MC_FIXTURES:-../shared/fixtures}
n_vocab=1536 # keep in step with test_bpe.c (GOLDEN_N_VOCAB)
tokenize="$LLAMA_CPP_DIR/build/bin/llama-tokenize"
[ -x "$tokenize" ] || { echo "make-bpe-golden: no $tokenize" >&2; exit 1; }
[ -f "$fixtures/tokenizer_golden.json" ] || { echo "make-bpe-golden: no $fixtures/tokenizer_golden.json" >&2; exit 1; }

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bpe_vocab_gguf -j2 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for pre in qwen2 olmo; do
  "$build/bpe_vocab_gguf" "$pre" "$n_vocab" "$tmp/$pre.gguf"
done
commit=$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD 2>/dev/null || echo unknown)

LD_LIBRARY_PATH="$LLAMA_CPP_DIR/build/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
python3 - "$fixtures/tokenizer_golden.json" "$tokenize" "$tmp" "$commit" "$n_vocab" \
  >"$tmp/out.json" <<'PY'
import json, subprocess, sys
src, tokenize, tmp, commit, n_vocab = sys.argv[1:6]
strings = json.load(open(src, encoding="utf-8"))
out = []
for e in strings:
    path = f"{tmp}/text.txt"
    with open(path, "wb") as f:
        f.write(e["text"].encode("utf-8"))
    ids = {}
    for pre in ("qwen2", "olmo"):
        # -f reads the file verbatim; --no-escape keeps backslashes as text.
        r = subprocess.run([tokenize, "-m", f"{tmp}/{pre}.gguf", "-f", path, "--ids", "--no-bos",
                            "--no-parse-special", "--no-escape", "--log-disable"],
                           capture_output=True, check=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith("[")][-1]
        ids[pre] = json.loads(line)
    out.append({"name": e["name"], "text": e["text"], "ids": ids})
doc = {
    "source": "llama.cpp llama-tokenize -f TEXT --ids --no-bos --no-parse-special --no-escape",
    "llama_cpp_commit": commit,
    "vocabulary": {"trainer": "mc_bpe_train", "corpus": "built-in (tools/mkmodel/bpe_corpus.c)",
                   "n_vocab": int(n_vocab), "min_frequency": 1,
                   "architecture": "qwen3moe", "pre": ["qwen2", "olmo"]},
    "strings": out,
}
# One string per line keeps diffs readable.
lines = [json.dumps(s, ensure_ascii=False) for s in out]
head = json.dumps({k: v for k, v in doc.items() if k != "strings"}, ensure_ascii=False)[:-1]
print(head + ', "strings": [\n' + ",\n".join(lines) + "\n]}")
PY
mv "$tmp/out.json" tests/fixtures/bpe_tokenizer_golden.json
echo "make-bpe-golden: wrote tests/fixtures/bpe_tokenizer_golden.json (llama.cpp $commit)" >&2
