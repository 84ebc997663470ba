#!/usr/bin/env bash
# The batching curve (not part of the test suite): aggregate generation speed
# with 1, 2, 4, 8, 16 and 32 concurrent streams, each one request of
# MAX_TOKENS tokens, all started together, through the server on one machine
# and through a 2-node loopback cluster; alternating, medians of REPS.
#
#   deploy/bench-batch.sh [--reps 3] [--type Q4_0] [--max-tokens 64] [--streams "1 8 32"]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=3 type=Q4_0 max_tokens=64 counts="1 2 4 8 16 32"
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --streams) counts=$2; shift 2 ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
  esac
done
lower=$(echo "$type" | tr 'A-Z' 'a-z')
model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
[ -f "$model" ] || build/moe-bench --type "$type" -p 4 -n 4 --reps 1 >/dev/null
work=$(mktemp -d)
source deploy/cluster-up.sh
trap 'server_down; cluster_down; rm -rf "$work"' EXIT
max=0
for c in $counts; do [ "$c" -gt "$max" ] && max=$c; done
cluster_up "$model" 2 2 "$work"
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
for setup in one cluster; do
  : >"$work/$setup.tsv"
done
for r in $(seq "$reps"); do
  for setup in one cluster; do
    if [ $setup = one ]; then server_up "$work/s.log" --model "$model" --parallel "$max" --threads 2 --ctx 512
    else server_up "$work/s.log" --cluster "$cluster_file" --parallel "$max" --threads 2 --ctx 512; fi
    node deploy/load.mjs --url "http://127.0.0.1:$server_port" --streams 1 --rounds 1 --max-tokens 8 --json >/dev/null # warm-up
    for c in $counts; do
      tps=$(node deploy/load.mjs --url "http://127.0.0.1:$server_port" --streams "$c" --rounds 1 \
        --max-tokens "$max_tokens" --json | field tokens_per_s)
      printf '%s\t%s\n' "$c" "$tps" >>"$work/$setup.tsv"
    done
    server_down
  done
  echo "run $r of $reps done" >&2
done
printf '%-8s %16s %10s %16s %10s\n' streams "one machine t/s" "x 1 stream" "cluster t/s" "x 1 stream"
one1=$(awk -v c=1 '$1 == c {print $2}' "$work/one.tsv" | median)
cl1=$(awk -v c=1 '$1 == c {print $2}' "$work/cluster.tsv" | median)
for c in $counts; do
  o=$(awk -v c="$c" '$1 == c {print $2}' "$work/one.tsv" | median)
  k=$(awk -v c="$c" '$1 == c {print $2}' "$work/cluster.tsv" | median)
  printf '%-8s %16.1f %10.2f %16.1f %10.2f\n' "$c" "$o" "$(echo "$o $one1" | awk '{print $1 / $2}')" "$k" \
    "$(echo "$k $cl1" | awk '{print $1 / $2}')"
done
echo "($type benchmark model; each stream one request of $max_tokens tokens, all started together; server --threads 2;" \
  "cluster: 2 loopback nodes x 2 threads; medians of $reps)"
