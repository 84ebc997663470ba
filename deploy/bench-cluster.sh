#!/usr/bin/env bash
# The loopback cluster against one machine, per wire encoding: two moe-expert
# nodes on this machine (experts 0-3 and 4-7), the coordinator with
# --threads, runs alternating so noise hits every setup alike.
#
#   deploy/bench-cluster.sh [--type Q4_0] [--reps 5] [--node-threads 2] [--threads 2] [WIRE...]
#
# WIRE: auto f32 q8_0 ... (default: f32 auto q8_0). For each, per run:
# `moe-bench --cluster` (-p 64 -n 64, 1 timed repetition) and, once, the
# bytes on the wire per generated token from `moe-coordinator --stats-json`
# over 128 greedy tokens. Prints the medians and the ratio to one machine.
# Not part of the test suite (timings); needs a build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
type=Q4_0 reps=5 node_threads=2 threads=2 wires=()
while [ $# -gt 0 ]; do
  case "$1" in
    --type) type=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --node-threads) node_threads=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) wires+=("$1"); shift ;;
  esac
done
[ ${#wires[@]} -gt 0 ] || wires=(f32 auto q8_0)
b=build
. deploy/bench-lib.sh
bench_model "$type"
bench_nodes bench "$node_threads"
for w in "${wires[@]}"; do
  cat >"$work/$w.yaml" <<YAML
model: $model
wire: $w
nodes:
  - name: bench-1
    endpoint: ${endpoints[0]}
    experts: 0-3
  - name: bench-2
    endpoint: ${endpoints[1]}
    experts: 4-7
YAML
done
for r in $(seq "$reps"); do
  "$b/moe-bench" --model "$model" --threads "$threads" -p 64 -n 64 --reps 1 --json 2>/dev/null >>"$work/single.json"
  for w in "${wires[@]}"; do
    "$b/moe-bench" --cluster "$work/$w.yaml" --threads "$threads" -p 64 -n 64 --reps 1 --json 2>/dev/null >>"$work/$w.json"
  done
  echo "run $r of $reps done" >&2
done
printf '%-8s %12s %12s %10s %14s %14s\n' setup "prompt tok/s" "gen tok/s" "gen ratio" "bytes out/tok" "bytes in/tok"
pp1=$(field pp_tok_s <"$work/single.json" | median)
tg1=$(field tg_tok_s <"$work/single.json" | median)
printf '%-8s %12.1f %12.1f %10s %14s %14s\n' one "$pp1" "$tg1" 1.00 - -
for w in "${wires[@]}"; do
  pp=$(field pp_tok_s <"$work/$w.json" | median)
  tg=$(field tg_tok_s <"$work/$w.json" | median)
  # Pairwise ratio per run, then the median.
  ratio=$(paste <(field tg_tok_s <"$work/$w.json") <(field tg_tok_s <"$work/single.json") | awk '{print $1 / $2}' | median)
  "$b/moe-coordinator" --cluster "$work/$w.yaml" --token-ids 1 -n 128 --temp 0 --threads "$threads" \
    --stats-json "$work/$w.stats" >/dev/null 2>&1
  sum() { grep -o "\"$1\":[[:space:]]*[0-9]*" "$work/$w.stats" | grep -o '[0-9]*$' | awk '{s += $1} END {print s / 129}'; }
  printf '%-8s %12.1f %12.1f %10.2f %14.0f %14.0f\n' "$w" "$pp" "$tg" "$ratio" "$(sum bytes_sent)" "$(sum bytes_received)"
done
echo "($type benchmark model, coordinator --threads $threads, 2 nodes x --threads $node_threads on loopback;" \
  "medians of $reps alternating runs; bytes over 1 prompt + 128 generated tokens)"
