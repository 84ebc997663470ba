#!/usr/bin/env bash
# The placement tools against measurement, on this machine (not part of the
# test suite: timings). A benchmark-size model whose router favours the low
# experts (moe-mkmodel --router-skew), a loopback cluster of unequal nodes
# sharing the machine with the coordinator, profiles from
# moe-coordinator/moe-expert --profile, a routing trace from moe-bench
# --routing-stats and the node latencies from a run's stats. Then, for
# several placements (moe-plan's, the naive equal split, ...), the
# simulator's prediction against moe-bench --cluster --batch B, alternating,
# medians of REPS.
#
#   deploy/plan-check.sh [--shape shared|pinned] [--isa ISA] [--batch 8] [--reps 3] [--skew 12]
#                        [--node-mb 400] [--coord-mb 300] [--keep DIR]
#
# Shapes (the machines the processes stand for):
#   shared  one host: the coordinator (2 threads), `slow` (1 thread) and
#           `fast` (2 threads) all share the machine's cores (default);
#   pinned  two hosts of one core each, pinned with taskset: the coordinator
#           (1 thread) alone on core 0; `slow` (1 thread, scalar kernels: a
#           small board) and `fast` (1 thread) sharing core 1. Needs 2 cores.
# --isa runs every process with MC_ISA=ISA (e.g. avx2 on a CPU that has
# AVX-VNNI or AVX-512: the kernels of an AVX2-only host).
#
# `local` and `fastonly` ignore the coordinator's memory cap: they are there
# to check the simulator on placements of another shape.
set -euo pipefail
cd "$(dirname "$0")/.."
batch=8 reps=3 skew=12 node_mb=400 coord_mb=300 keep= shape=shared isa=
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) shape=$2; shift 2 ;;
    --isa) isa=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --skew) skew=$2; shift 2 ;;
    --node-mb) node_mb=$2; shift 2 ;;
    --coord-mb) coord_mb=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
  esac
done
[ -n "$isa" ] && export MC_ISA=$isa
# Per process: its cores (taskset), threads, host and the host's cores.
case "$shape" in
  shared)
    on_coord=() coord_thr=2 coord_host=local coord_cores=$(nproc)
    on_slow=() slow_thr=1 slow_env=() node_host=local node_cores=$(nproc)
    on_fast=() fast_thr=2 ;;
  pinned)
    [ "$(nproc)" -ge 2 ] || { echo "plan-check: --shape pinned needs 2 cores" >&2; exit 2; }
    on_coord=(taskset -c 0) coord_thr=1 coord_host=a coord_cores=1
    on_slow=(taskset -c 1) slow_thr=1 slow_env=(env MC_ISA=scalar) node_host=b node_cores=1
    on_fast=(taskset -c 1) fast_thr=1 ;;
  *) echo "plan-check: unknown shape $shape" >&2; exit 2 ;;
esac
b=$PWD/build
if [ -n "$keep" ]; then mkdir -p "$keep"; work=$(cd "$keep" && pwd); else work=$(mktemp -d); fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT
cache=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}
mkdir -p "$cache"
model=$cache/bench-skew$skew-q4_0.gguf
[ -f "$model" ] || "$b/moe-mkmodel" --bench-model --router-skew "$skew" -o "$model" >/dev/null
cd "$work"
rm -f ./*.measured

echo "profiles and trace..." >&2
"${on_coord[@]}" "$b/moe-coordinator" --profile --model "$model" --threads $coord_thr --name coord >coord.prof
"${on_slow[@]}" "${slow_env[@]}" "$b/moe-expert" --profile --model "$model" --threads $slow_thr --name slow >slow.prof
"${on_fast[@]}" "$b/moe-expert" --profile --model "$model" --threads $fast_thr --name fast >fast.prof
"${on_coord[@]}" "$b/moe-bench" --model "$model" --threads $coord_thr -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 \
  --routing-stats trace.json >/dev/null

"${on_slow[@]}" "${slow_env[@]}" "$b/moe-expert" --model "$model" --listen 'tcp://127.0.0.1:*' --name slow \
  --threads $slow_thr --lease-ms 200 >slow.out 2>slow.log &
pids+=($!)
"${on_fast[@]}" "$b/moe-expert" --model "$model" --listen 'tcp://127.0.0.1:*' --name fast \
  --threads $fast_thr --lease-ms 200 >fast.out 2>fast.log &
pids+=($!)
for n in slow fast; do
  for _ in $(seq 200); do grep -q 'listening on' "$n.out" 2>/dev/null && break; sleep 0.1; done
  declare "ep_$n=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$n.out")"
done

# The machines file: the profiles as written, the nodes' endpoints, the
# hosts of the shape, and memory caps so that no machine holds everything.
{
  echo "network: {latency_ms: 0.3, bandwidth_mbps: 20000}"
  echo "coordinator:"
  sed -e 's/^/  /' -e "s/^\(    memory_mb:\).*/\1 $coord_mb/" coord.prof
  echo "    host: $coord_host"
  echo "    cores: $coord_cores"
  echo "nodes:"
  for n in slow fast; do
    ep=ep_$n
    sed -e 's/^/  /' -e "s/^\(    memory_mb:\).*/\1 $node_mb/" $n.prof
    echo "    endpoint: ${!ep}"
    echo "    host: $node_host"
    echo "    cores: $node_cores"
  done
} >machines.yaml

plan() { "$b/moe-plan" --model "$model" --routing trace.json --machines machines.yaml --batch "$batch" "$@"; }
plan --naive -o naive.yaml >/dev/null
# Node latencies (round trip less compute, at this batch) from a short run.
"${on_coord[@]}" "$b/moe-bench" --cluster naive.yaml --threads $coord_thr -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 \
  --stats-json stats.json >/dev/null 2>&1
sleep 0.3
plan --stats stats.json -o plan.yaml >/dev/null
plan --stats stats.json --no-local -o plan-nolocal.yaml >/dev/null
plan --stats stats.json --no-local --no-replicas -o plan-norep.yaml >/dev/null
cat >swapped.yaml <<YAML
model: $model
nodes:
  - {name: slow, endpoint: "$ep_slow", experts: 4-7}
  - {name: fast, endpoint: "$ep_fast", experts: 0-3}
YAML
cat >fastonly.yaml <<YAML
model: $model
nodes:
  - {name: slow, endpoint: "$ep_slow", holds: [{layers: none, experts: none}]}
  - {name: fast, endpoint: "$ep_fast", layers: 0-5}
local:
  layers: 6-7
  experts: all
YAML
cat >local.yaml <<YAML
model: $model
nodes:
  - {name: slow, endpoint: "$ep_slow", holds: [{layers: none, experts: none}]}
local:
  experts: all
YAML
placements="naive swapped plan plan-nolocal plan-norep fastonly local"
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
for r in $(seq "$reps"); do
  for p in $placements; do
    sleep 0.3 # the previous run's lease runs out
    : >>$p.measured
    "${on_coord[@]}" "$b/moe-bench" --cluster $p.yaml --threads $coord_thr -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 --json 2>/dev/null |
      field tg_tok_s >>$p.measured
  done
  echo "round $r of $reps done" >&2
done
printf '%-14s %14s %14s %8s\n' placement "predicted t/s" "measured t/s" error
for p in $placements; do
  pred=$(plan --stats stats.json --simulate $p.yaml | sed -n 's/^[^ ]*: \([0-9.]*\) tok\/s predicted.*/\1/p' | head -1)
  meas=$(median <$p.measured)
  printf '%-14s %14.1f %14.1f %+7.1f%%\n' "$p" "$pred" "$meas" "$(echo "$pred $meas" | awk '{print 100 * ($1 - $2) / $2}')"
done
plan_m=$(median <plan.measured)
naive_m=$(median <naive.measured)
echo "plan / naive measured: $(echo "$plan_m $naive_m" | awk '{printf "%.2f", $1 / $2}')x" \
  "(batch $batch, skew $skew, shape $shape${isa:+, MC_ISA=$isa}, on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores)"
echo "the plan:"
plan --stats stats.json --compare naive.yaml -o /dev/null | sed 's/^/  /'
