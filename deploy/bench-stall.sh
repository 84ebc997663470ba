#!/usr/bin/env bash
# A node that stalls: generation through two loopback nodes (experts 0-3 and
# 4-7) while node 2 is frozen (SIGSTOP) for FROZEN seconds of every
# FROZEN+AWAKE, against the same run with no stall. Three setups, each run
# REPS times, alternating:
#   clean     no stall
#   stalled   the stall, the cluster file's defaults (dead_ms, slow_ms)
#   timeouts  the stall, dead_ms: 0 and slow_ms: 0 (only timeout_ms notices
#             anything: the rules before dead_ms and slow_ms existed)
# Prints generation tok/s per run, the medians, and whether every run's text
# equals the clean run's (greedy). Not part of the test suite (timings);
# needs a build in build/.
#
#   deploy/bench-stall.sh [--type Q4_0] [--reps 3] [-n 128] [--frozen 4.5] [--awake 0.2]
set -euo pipefail
cd "$(dirname "$0")/.."
type=Q4_0 reps=3 n=128 frozen=4.5 awake=0.2
while [ $# -gt 0 ]; do
  case "$1" in
    --type) type=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    --frozen) frozen=$2; shift 2 ;;
    --awake) awake=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
b=build
lower=$(echo "$type" | tr 'A-Z' 'a-z')
model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
[ -f "$model" ] || "$b/moe-bench" --type "$type" -p 4 -n 4 --reps 1 >/dev/null
work=$(mktemp -d)
pids=() staller=
cleanup() {
  [ -n "$staller" ] && kill "$staller" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
eps=()
for i in 1 2; do
  "$b/moe-expert" --model "$model" --listen 'tcp://127.0.0.1:*' --name "node-$i" --threads 1 \
    >"$work/node$i.out" 2>"$work/node$i.log" &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 100); do grep -q listening "$work/node$i.out" 2>/dev/null && break; sleep 0.1; done
  eps+=("$(sed -n 's/.*listening on \(tcp:[^ ]*\).*/\1/p' "$work/node$i.out" | head -1)")
done
write_cfg() { # $1 file, $2 extra settings
  printf 'model: %s\n%snodes:\n  - {name: node-1, endpoint: "%s", experts: 0-3}\n  - {name: node-2, endpoint: "%s", experts: 4-7}\n' \
    "$model" "$2" "${eps[0]}" "${eps[1]}" >"$1"
}
write_cfg "$work/defaults.yaml" ""
write_cfg "$work/timeouts.yaml" $'dead_ms: 0\nslow_ms: 0\n'
run() { # $1 setup, $2 rep
  local cfg=defaults
  [ "$1" = timeouts ] && cfg=timeouts
  if [ "$1" != clean ]; then
    (while true; do kill -STOP "${pids[1]}"; sleep "$frozen"; kill -CONT "${pids[1]}"; sleep "$awake"; done) &
    staller=$!
  fi
  "$b/moe-coordinator" --cluster "$work/$cfg.yaml" --threads 2 --prompt "The history of the" -n "$n" --temp 0 \
    >"$work/$1-$2.txt" 2>"$work/$1-$2.log" || true
  if [ -n "$staller" ]; then kill "$staller"; wait "$staller" 2>/dev/null || true; staller=; kill -CONT "${pids[1]}"; fi
  sed -n 's/.*generation: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p' "$work/$1-$2.log"
  sleep 1 # the node wakes up, answers its coordinator's Release
}
declare -A speeds
for r in $(seq "$reps"); do
  for s in clean stalled timeouts; do
    v=$(run "$s" "$r")
    speeds[$s]+="$v "
    same=yes
    cmp -s "$work/clean-1.txt" "$work/$s-$r.txt" 2>/dev/null || same=NO
    echo "$s run $r: ${v:-?} tok/s, text as clean: $same"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}'; }
echo "medians (generation tok/s, $n tokens, node 2 frozen ${frozen}s of every $(echo "$frozen + $awake" | bc)s):"
for s in clean stalled timeouts; do echo "  $s: $(echo "${speeds[$s]}" | median)"; done
