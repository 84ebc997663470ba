#!/usr/bin/env bash
# The README's Qwen3-30B-A3B cluster file ("Memory per node: Qwen3-30B-A3B
# Q4_K_M on 8 GB boxes") runs as written on a generated model of that shape:
# 48 layers of 128 experts, 8 used (tiny dims, Q4_0), saved under the file
# name the cluster file gives. The YAML block is taken from the README itself;
# only its endpoints become the loopback ports of three real moe-expert
# processes. moe-coordinator --cluster must give the tokens of a one-machine
# run: the README's --prompt form (same text), and evaluated ids with
# --dump-logits (same ids, logits equal to the bit).
#
#   tests/readme_cluster.sh README.md      (ctest; MC_BIN_DIR: the build folder)
#
# Skipped (exit 77) only when a binary is missing. Every wait is bounded (a
# node's announcement 20 s, a coordinator run 30 s), well inside ctest's
# timeout, and the nodes are stopped on every way out.
set -euo pipefail
bin=${MC_BIN_DIR:?MC_BIN_DIR must name the build folder}
readme=${1:?usage: tests/readme_cluster.sh README.md}
for b in moe-mkmodel moe-expert moe-coordinator; do
  [ -x "$bin/$b" ] || { echo "tests/readme_cluster.sh: skipped: $bin/$b is missing"; exit 77; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    # moe-expert stops on SIGTERM; one that does not within 5 s is killed.
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP # through the EXIT trap
fail() {
  echo "FAILED: $*"
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}

# The cluster file: the first yaml block after the section's heading.
awk '/^### Memory per node: Qwen3-30B-A3B/ {s = 1; next}
     s == 1 && /^```yaml/ {s = 2; next}
     s == 2 && /^```/ {exit}
     s == 2 {print}' "$readme" >"$work/readme.yaml"
[ -s "$work/readme.yaml" ] || fail "no yaml block under '### Memory per node: Qwen3-30B-A3B' in $readme"
model=$(sed -n 's/^model: *\([^ #]*\).*/\1/p' "$work/readme.yaml")
mapfile -t names < <(grep -o 'name: *[^,}]*' "$work/readme.yaml" | sed 's/name: *//')
mapfile -t endpoints < <(grep -o 'tcp://[^"]*' "$work/readme.yaml")
[ -n "$model" ] && [ ${#names[@]} = 3 ] && [ ${#endpoints[@]} = 3 ] ||
  fail "expected a model and three nodes with endpoints in the README's block: $(cat "$work/readme.yaml")"

"$bin/moe-mkmodel" -o "$work/$model" --arch qwen3moe --layers 48 --experts 128 --experts-used 8 \
  --dim 32 --ffn 32 --heads 4 --kv-heads 2 --type Q4_0 >/dev/null

# Three nodes on free loopback ports; each announces its endpoint on stdout.
cp "$work/readme.yaml" "$work/cluster.yaml"
for i in 0 1 2; do
  "$bin/moe-expert" --model "$work/$model" --listen 'tcp://127.0.0.1:*' --name "${names[$i]}" --threads 1 \
    >"$work/node$i.out" 2>"$work/node$i.log" &
  pids+=($!)
done
for i in 0 1 2; do
  ep=""
  for _ in $(seq 200); do
    ep=$(sed -n 's/^moe-expert: listening on \(tcp:[^ ]*\).*/\1/p' "$work/node$i.out")
    [ -n "$ep" ] && break
    kill -0 "${pids[$i]}" 2>/dev/null || fail "node ${names[$i]} exited"
    sleep 0.1
  done
  [ -n "$ep" ] || fail "node ${names[$i]} did not announce its endpoint within 20 s"
  sed -i "s|${endpoints[$i]}|$ep|" "$work/cluster.yaml"
done
echo "cluster file (the README's, endpoints on loopback):"
cat "$work/cluster.yaml"

run() { # label, then moe-coordinator arguments
  local label=$1
  shift
  timeout 30 "$bin/moe-coordinator" "$@" --threads 1 >"$work/$label.out" 2>"$work/$label.log" ||
    fail "moe-coordinator $* exited with $?"
}

# The README's command with a short greedy generation.
run prompt-local --model "$work/$model" --prompt "Hello" -n 8 --temp 0
run prompt-cluster --cluster "$work/cluster.yaml" --prompt "Hello" -n 8 --temp 0
[ -s "$work/prompt-local.out" ] || fail "--prompt: one machine wrote nothing"
cmp -s "$work/prompt-local.out" "$work/prompt-cluster.out" ||
  fail "--prompt: the cluster wrote '$(cat "$work/prompt-cluster.out")', one machine '$(cat "$work/prompt-local.out")'"

# The same as token ids: every position's logits and the 8 generated ids.
ids=1,300,17,42,259,100,7,480
run ids-local --model "$work/$model" --token-ids $ids --dump-logits "$work/local.f32" -n 8 --temp 0
run ids-cluster --cluster "$work/cluster.yaml" --token-ids $ids --dump-logits "$work/cluster.f32" -n 8 --temp 0
local_ids=$(tail -n 1 "$work/ids-local.out")
cluster_ids=$(tail -n 1 "$work/ids-cluster.out")
[ -n "$local_ids" ] && [ "$local_ids" = "$cluster_ids" ] ||
  fail "generated ids: cluster '$cluster_ids', one machine '$local_ids'"
cmp -s "$work/local.f32" "$work/cluster.f32" || fail "the cluster's logits differ from one machine's"
for i in 0 1 2; do
  grep -q "placement .* accepted" "$work/node$i.log" || fail "node ${names[$i]} never accepted a placement"
done
echo "ok: the README's Qwen3-30B-A3B cluster file (48 layers x 128 experts, 3 nodes): tokens '$cluster_ids', logits equal to one machine's"
