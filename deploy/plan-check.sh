#!/usr/bin/env bash
# The placement tools against measurement, on this machine (not part of the
# test suite: timings). A benchmark-size model whose router favours the low
# experts (moe-mkmodel --router-skew), a loopback cluster of unequal nodes
# (`slow`: 1 thread, `fast`: 2 threads) sharing the machine with the
# coordinator, profiles from moe-coordinator/moe-expert --profile, a routing
# trace from moe-bench --routing-stats and the node latencies from a run's stats. Then,
# for several placements (moe-plan's, the naive equal split, ...), the
# simulator's prediction against moe-bench --cluster --batch B, alternating,
# medians of REPS.
#
#   deploy/plan-check.sh [--batch 8] [--reps 3] [--skew 12] [--node-mb 400] [--coord-mb 300] [--keep DIR]
#
# `local` and `fastonly` ignore the coordinator's memory cap: they are there
# to check the simulator on placements of another shape.
set -euo pipefail
cd "$(dirname "$0")/.."
batch=8 reps=3 skew=12 node_mb=400 coord_mb=300 keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) batch=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --skew) skew=$2; shift 2 ;;
    --node-mb) node_mb=$2; shift 2 ;;
    --coord-mb) coord_mb=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
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
"$b/moe-coordinator" --profile --model "$model" --threads 2 --name coord >coord.prof
"$b/moe-expert" --profile --model "$model" --threads 1 --name slow >slow.prof
"$b/moe-expert" --profile --model "$model" --threads 2 --name fast >fast.prof
"$b/moe-bench" --model "$model" --threads 2 -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 \
  --routing-stats trace.json >/dev/null

for n in slow:1 fast:2; do
  "$b/moe-expert" --model "$model" --listen 'tcp://127.0.0.1:*' --name "${n%:*}" --threads "${n#*:}" --lease-ms 200 \
    >"${n%:*}.out" 2>"${n%:*}.log" &
  pids+=($!)
done
for n in slow fast; do
  for _ in $(seq 200); do grep -q 'listening on' "$n.out" 2>/dev/null && break; sleep 0.1; done
  declare "ep_$n=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$n.out")"
done

# The machines file: the profiles as written, the nodes' endpoints, one host
# of 2 cores, and memory caps so that no machine holds everything.
{
  echo "network: {latency_ms: 0.3, bandwidth_mbps: 20000}"
  echo "coordinator:"
  sed -e 's/^/  /' -e "s/^\(    memory_mb:\).*/\1 $coord_mb/" coord.prof
  echo "    host: local"
  echo "    cores: 2"
  echo "nodes:"
  for n in slow fast; do
    ep=ep_$n
    sed -e 's/^/  /' -e "s/^\(    memory_mb:\).*/\1 $node_mb/" $n.prof
    echo "    endpoint: ${!ep}"
    echo "    host: local"
    echo "    cores: 2"
  done
} >machines.yaml

plan() { "$b/moe-plan" --model "$model" --routing trace.json --machines machines.yaml --batch "$batch" "$@"; }
plan --naive -o naive.yaml >/dev/null
# Node latencies (round trip less compute, at this batch) from a short run.
"$b/moe-bench" --cluster naive.yaml --threads 2 -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 \
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
    "$b/moe-bench" --cluster $p.yaml --threads 2 -p 16 -n 64 --batch "$batch" --reps 1 --bw-mib 64 --json 2>/dev/null |
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
  "(batch $batch, skew $skew, nodes: slow 1 thread, fast 2 threads, coordinator 2 threads, all on one $(nproc)-core machine)"
echo "the plan:"
plan --stats stats.json --compare naive.yaml -o /dev/null | sed 's/^/  /'
