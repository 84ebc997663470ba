# Shared by the benchmark scripts (sourced, not run): the benchmark model,
# two loopback nodes, and the medians of moe-bench's JSON lines.
#
# bench_model TYPE      sets $model to the cached benchmark model of TYPE,
#                       generating it once (needs $b, the build folder)
# bench_nodes NAME T    starts NAME-1 and NAME-2 (moe-expert --threads T on
#                       $model), sets ${endpoints[@]}; logs in $work; stopped
#                       on exit with everything else in ${pids[@]}
# field KEY, median     a JSON line's number; the median of lines on stdin

bench_model() {
  local lower
  lower=$(echo "$1" | tr 'A-Z' 'a-z')
  model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
  [ -f "$model" ] || "$b/moe-bench" --type "$1" -p 4 -n 4 --reps 1 >/dev/null
}

work=$(mktemp -d)
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap bench_cleanup EXIT

bench_nodes() {
  local i
  endpoints=()
  for i in 1 2; do
    "$b/moe-expert" --model "$model" --listen 'tcp://127.0.0.1:*' --name "$1-$i" --threads "$2" \
      >"$work/node$i.out" 2>"$work/node$i.log" &
    pids+=($!)
  done
  for i in 1 2; do
    for _ in $(seq 200); do grep -q 'listening on' "$work/node$i.out" 2>/dev/null && break; sleep 0.1; done
    endpoints+=("$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/node$i.out")")
  done
}

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
