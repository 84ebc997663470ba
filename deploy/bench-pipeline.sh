#!/usr/bin/env bash
# Pipelined passes through the cluster (--pipeline) against unpipelined ones,
# over an emulated link (not part of the test suite: timings). The
# coordinator and two moe-expert nodes (experts 0-3 and 4-7, --node-threads
# each) run in two network namespaces joined by tests/net/linkemu with DELAY
# ms each way (the kernel here may lack netem); for every delay, stream
# count and repetition, `moe-bench --cluster --batch STREAMS` runs without and
# with --pipeline, alternating, and the medians are printed with their
# ratio. Needs root (ip netns, TAP devices) and a build in build/.
#
#   deploy/bench-pipeline.sh [--reps 5] [--type Q4_0] [--delays "1 5"] [--streams "8 32"]
#                            [--threads 2] [--node-threads 1] [-p 8] [-n 16]
#
# 2026-12-07, 2-core AMD EPYC at load 7 (docs/PERFORMANCE.md): 0.92x at 1 ms
# and 8 streams, 1.02x at 1 ms and 32, 1.09x at 5 ms and 8, 1.22x at 5 ms and
# 32; --pipeline stays off by default.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=5 type=Q4_0 delays="1 5" counts="8 32" threads=2 node_threads=1 np=8 ng=16
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --delays) delays=$2; shift 2 ;;
    --streams) counts=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --node-threads) node_threads=$2; shift 2 ;;
    -p) np=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root for ip netns and TAP devices" >&2; exit 2; }
b=$PWD/build
for x in moe-bench moe-expert linkemu; do [ -x "$b/$x" ] || { echo "no $b/$x: build first" >&2; exit 2; }; done
. deploy/bench-lib.sh # $work, pids, field, median, bench_model, bench_link_up/down
bench_model "$type"

run() { # delay streams mode
  local flag=
  [ "$3" = pipe ] && flag=--pipeline
  ip netns exec "$nsc" "$b/moe-bench" --cluster "$work/cluster.yaml" --threads "$threads" --batch "$2" \
    -p "$np" -n "$ng" --reps 1 --json $flag 2>>"$work/bench.log" >>"$work/d$1-s$2-$3.json"
}

for d in $delays; do
  bench_link_up "$d" pipe "$node_threads"
  echo "delay $d ms each way" >&2
  run "$d" 1 plain # warm-up: the nodes' pages, the links' usual times
  for r in $(seq "$reps"); do
    for c in $counts; do
      run "$d" "$c" plain
      run "$d" "$c" pipe
    done
    echo "delay $d: run $r of $reps done" >&2
  done
  bench_link_down
done

printf '%-9s %-8s %14s %14s %14s %14s %8s\n' delay streams "plain pp t/s" "pipe pp t/s" "plain gen t/s" \
  "pipe gen t/s" "gen x"
for d in $delays; do
  for c in $counts; do
    p0=$(field pp_tok_s <"$work/d$d-s$c-plain.json" | median)
    p1=$(field pp_tok_s <"$work/d$d-s$c-pipe.json" | median)
    g0=$(field tg_tok_s <"$work/d$d-s$c-plain.json" | median)
    g1=$(field tg_tok_s <"$work/d$d-s$c-pipe.json" | median)
    # Pairwise ratio per run (runs alternate), then the median.
    x=$(paste <(field tg_tok_s <"$work/d$d-s$c-pipe.json") <(field tg_tok_s <"$work/d$d-s$c-plain.json") |
      awk '{print $1 / $2}' | median)
    printf '%-9s %-8s %14.1f %14.1f %14.1f %14.1f %8.3f\n' "$d ms" "$c" "$p0" "$p1" "$g0" "$g1" "$x"
  done
done
echo "($type benchmark model, -p $np -n $ng per stream; coordinator --threads $threads, 2 nodes x" \
  "$node_threads threads; linkemu, no jitter or loss; medians of $reps; $(lscpu | sed -n 's/^Model name: *//p'))"
