#!/usr/bin/env bash
# What speculative decoding costs and where it pays: the time of a
# generation step that also verifies K guessed tokens (moe-bench --verify K,
# all guesses rejected), on one machine and through a loopback cluster of two
# nodes (experts 0-3 and 4-7), runs alternating so noise hits every setup
# alike. A step that keeps a guesses yields 1 + a tokens, so speculating pays
# when (1 + a) > cost(K) / cost(0): the break-even kept guesses per step are
# printed for each K.
#
#   deploy/bench-speculate.sh [--type Q4_0] [--reps 3] [--threads 2] [--node-threads 1] [K...]
#
# K: guesses per step (default: 0 2 4 8). Not part of the test suite
# (timings); needs a build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
type=Q4_0 reps=3 threads=2 node_threads=1 ks=()
while [ $# -gt 0 ]; do
  case "$1" in
    --type) type=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --node-threads) node_threads=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) ks+=("$1"); shift ;;
  esac
done
[ ${#ks[@]} -gt 0 ] || ks=(0 2 4 8)
b=build
. deploy/bench-lib.sh
bench_model "$type"
bench_nodes spec "$node_threads"
cat >"$work/cluster.yaml" <<YAML
model: $model
nodes:
  - name: spec-1
    endpoint: ${endpoints[0]}
    experts: 0-3
  - name: spec-2
    endpoint: ${endpoints[1]}
    experts: 4-7
YAML
for r in $(seq "$reps"); do
  for k in "${ks[@]}"; do
    "$b/moe-bench" --model "$model" --threads "$threads" -p 16 -n 64 --verify "$k" --reps 1 --json 2>/dev/null \
      >>"$work/one-$k.json"
    "$b/moe-bench" --cluster "$work/cluster.yaml" --threads "$threads" -p 16 -n 64 --verify "$k" --reps 1 --json \
      2>/dev/null >>"$work/cluster-$k.json"
  done
  echo "run $r of $reps done" >&2
done
printf '%-8s %4s %12s %12s %16s\n' setup K "steps/s" "step cost" "break-even kept"
for setup in one cluster; do
  base=$(field tg_tok_s <"$work/$setup-${ks[0]}.json" | median)
  for k in "${ks[@]}"; do
    tg=$(field tg_tok_s <"$work/$setup-$k.json" | median)
    # Pairwise per run against the first K, then the median.
    cost=$(paste <(field tg_tok_s <"$work/$setup-${ks[0]}.json") <(field tg_tok_s <"$work/$setup-$k.json") |
      awk '{print $1 / $2}' | median)
    printf '%-8s %4s %12.1f %12.2f %16.2f\n' "$setup" "$k" "$tg" "$cost" "$(awk -v c="$cost" 'BEGIN {print c - 1}')"
  done
done
echo "($type benchmark model, coordinator --threads $threads, 2 nodes x --threads $node_threads on loopback;" \
  "one sequence, medians of $reps alternating runs; step cost relative to K=${ks[0]})"
