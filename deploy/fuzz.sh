#!/usr/bin/env bash
# libFuzzer runs over every parser of untrusted bytes: GGUF files (with the
# tokenizer and model binding behind the reader), text through the byte-level
# BPE tokenizer and its trainer, wire messages (alone, and handled by a live
# node with a small model), cluster files, moe-plan's machines files and
# routing statistics, safetensors files (moe-convert's input), slice index
# files (kept beside models), and OpenAI request bodies (with both chat
# formats behind the parser). Builds the targets with clang, ASan and UBSan
# into build-fuzz/, starts each corpus from valid inputs (tiny generated
# models, one message of each kind, example cluster files, request bodies),
# then fuzzes.
#
#   deploy/fuzz.sh            each target for 60 s (or $MC_FUZZ_SECONDS)
#   deploy/fuzz.sh --smoke    a fixed-seed, fixed-length run of each target:
#                             the same inputs on every run (deploy/test.sh)
#
# Corpora live in build-fuzz/corpus/<target>; a crashing input is written
# to build-fuzz/crash-<target>-* and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-timed}
case "$mode" in timed | --smoke) ;; *) echo "usage: deploy/fuzz.sh [--smoke]" >&2; exit 2 ;; esac
bash deploy/setup.sh --fuzz
dir=build-fuzz
CC=clang cmake -S . -B "$dir" -DMC_FUZZ=ON -DMC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" >/dev/null
cmake --build "$dir" -j2 >/dev/null

corpus="$dir/corpus"
mkdir -p "$corpus/fuzz_gguf" "$corpus/fuzz_bpe" "$corpus/fuzz_wire" "$corpus/fuzz_node" "$corpus/fuzz_cluster_config" \
  "$corpus/fuzz_plan" "$corpus/fuzz_safetensors" "$corpus/fuzz_slice_index" "$corpus/fuzz_api" "$corpus/fuzz_schema" \
  "$corpus/fuzz_discovery"
# Seeds, rewritten every run (the fuzzers add their finds beside them).
tiny=(--dim 32 --ffn 32 --layers 1 --heads 2 --kv-heads 1 --experts 2 --experts-used 1 --vocab 416)
"$dir/moe-mkmodel" -o "$corpus/fuzz_gguf/seed-q4_0.gguf" "${tiny[@]}" --type Q4_0 >/dev/null
"$dir/moe-mkmodel" -o "$corpus/fuzz_gguf/seed-f16-legacy.gguf" "${tiny[@]}" --type F16 --legacy >/dev/null
"$dir/moe-mkmodel" -o "$corpus/fuzz_gguf/seed-qwen2moe.gguf" "${tiny[@]}" --arch qwen2moe --ffn-shexp 32 --type Q4_0 >/dev/null
"$dir/moe-mkmodel" -o "$corpus/fuzz_gguf/seed-deepseek2.gguf" "${tiny[@]}" --arch deepseek2 --head-dim 48 --rope-dim 16 \
  --kv-lora-rank 32 --q-lora-rank 32 --yarn-factor 4 --type Q4_0 >/dev/null
"$dir/moe-mkmodel" -o "$corpus/fuzz_gguf/seed-glm4moe.gguf" "${tiny[@]}" --arch glm4moe --layers 2 --dense-layers 1 --nextn 1 \
  --experts 4 --groups 2 --groups-used 1 --rope-dim 8 --type Q4_0 >/dev/null
for t in fuzz_wire fuzz_node fuzz_safetensors fuzz_slice_index fuzz_api fuzz_discovery; do
  MC_FUZZ_SEEDS="$corpus/$t" "$dir/$t" -runs=0 "$corpus/$t" >/dev/null 2>&1
done
cat >"$corpus/fuzz_cluster_config/seed-full.yaml" <<'YAML'
model: models/m.gguf
secret_key: keys/desk.key
wire: q8_0
timeout_ms: 5000
retry_ms: 2000
load_timeout_ms: 60000
dead_ms: 1500
slow_ms: 250
nodes:
  - name: pi-1
    endpoint: tcp://10.0.0.11:5555
    experts: 0-1
  - name: pi-2
    endpoint: tcp://10.0.0.12:5555
    experts: [2, 3]
    layers: 0-1
  - name: old-pc
    endpoint: tcp://10.0.0.20:5555
    experts: "2-7"
  - name: planned
    endpoint: tcp://10.0.0.30:5555
    public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    holds:
      - {layers: 0-1, experts: [0, 3]}
      - layers: 2-3
        experts: 5-7
local:
  experts: none
discover: true
discover_keys:
  - "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
discover_experts: 0-3
discover_layers: all
YAML
printf 'model: m.gguf\nnodes:\n  - name: a\n    endpoint: tcp://127.0.0.1:1\nlocal:\n  experts: all\n  layers: 0-3\n' \
  >"$corpus/fuzz_cluster_config/seed-min.yaml"
printf '0-3, 6' >"$corpus/fuzz_cluster_config/seed-set.txt"
cat >"$corpus/fuzz_plan/seed-machines.yaml" <<'YAML'
network: {latency_ms: 0.4, bandwidth_mbps: 940, request_ms: 0.25}
coordinator:
  - name: desk
    memory_mb: 900
    threads: 2
    experts:
      - types: [Q4_0, Q4_0, Q4_0]
        bytes: 6193152
        ms: [[1, 0.3], [2, 0.5], [4, 0.7], [8, 1.3]]
    layer_ms_1: 0.09
    head_ms_1: 0.9
    layer_ms_8: 0.45
    head_ms_8: 3.9
    local_scale: 1.05
nodes:
  - name: pi-1
    endpoint: tcp://10.0.0.11:5555
    public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    host: pi-1
    cores: 4
    memory_mb: 7000
    threads: 4
    latency_ms: 0.6
    experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 1.2], [32, 20]]}]
YAML
printf '{"format":"moe-cluster routing statistics 1","layers":2,"experts":4,"experts_per_token":2,"tokens":3,%s' \
  '"rows":[[2,1,2,1],[1,2,1,2]],"pairs":[[[0,1,1],[0,2,2]],[[1,3,2],[2,3,1]]],"kept":[[1,0,1,0],[0,1,0,1]],"follow":[[2,1,2,1],[1,2,1,2]],"trace":["00020103","00020103","02000301"]}' \
  >"$corpus/fuzz_plan/seed-routing.json"

# fuzz_bpe: the first byte picks qwen2 text, olmo text or a corpus to train on.
printf '\000\000Hello, world! 12 caf\303\251 \344\270\255\346\226\207 <|im_start|>\n\n  x' >"$corpus/fuzz_bpe/seed-qwen2.txt"
printf "\001\000It's 2025 \360\237\230\200\377 the end   " >"$corpus/fuzz_bpe/seed-olmo.txt"
printf '\002\040abab abab, the the theta 123 123' >"$corpus/fuzz_bpe/seed-train.txt"

# fuzz_schema: a JSON Schema, a NUL byte, a document for its automaton.
printf '{"type":"object","properties":{"a":{"type":"array","items":{"enum":["x",1,null]},"maxItems":3},"b":{"anyOf":[{"type":"integer"},{"type":"string","maxLength":4}]}},"required":["a"],"additionalProperties":false}\000{"a": ["x",1], "b":"caf\303\251"}' \
  >"$corpus/fuzz_schema/seed-object.txt"
printf '{}\000[1,{"k":-2.5e3,"s":"\\u00e9\\n"},true,null]' >"$corpus/fuzz_schema/seed-any.txt"

status=0
for t in fuzz_gguf fuzz_bpe fuzz_schema fuzz_wire fuzz_node fuzz_cluster_config fuzz_plan fuzz_safetensors fuzz_slice_index fuzz_api fuzz_discovery; do
  # Models are the biggest inputs: room for the seeds, not for 1 MB files.
  opts=(-timeout=10 -rss_limit_mb=4096 -max_len=40000 -artifact_prefix="$dir/crash-$t-" -print_final_stats=1)
  if [ "$mode" = --smoke ]; then
    # Fixed seed and count, corpus = the seeds only: the same run every time.
    runs=200000
    [ "$t" = fuzz_gguf ] && runs=60000
    [ "$t" = fuzz_bpe ] && runs=30000
    scratch=$(mktemp -d)
    cp "$corpus/$t"/seed-* "$scratch"/
    echo "== $t: $runs fixed-seed runs" >&2
    "$dir/$t" "${opts[@]}" -seed=1 -runs="$runs" "$scratch" >"$dir/$t.log" 2>&1 || status=1
    rm -rf "$scratch"
  else
    secs=${MC_FUZZ_SECONDS:-60}
    echo "== $t: $secs s" >&2
    "$dir/$t" "${opts[@]}" -max_total_time="$secs" "$corpus/$t" >"$dir/$t.log" 2>&1 || status=1
  fi
  tail -n 12 "$dir/$t.log" | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-" >&2 || true
done
exit $status
