# Shared by the benchmark scripts (sourced, not run): the benchmark model,
# two loopback nodes, and the medians of moe-bench's JSON lines.
#
# bench_model TYPE      sets $model to the cached benchmark model of TYPE,
#                       generating it once (needs $b, the build folder)
# bench_nodes NAME T    starts NAME-1 and NAME-2 (moe-expert --threads T on
#                       $model), sets ${endpoints[@]}; logs in $work; stopped
#                       on exit with everything else in ${pids[@]}
# bench_link_up D NAME T  two network namespaces, $nsc (the coordinator's) and
#                       $nsn (the nodes'), joined by tests/net/linkemu with D
#                       ms each way; NAME-1 and NAME-2 (moe-expert --threads
#                       T) in $nsn and $work/cluster.yaml naming them (experts
#                       0-3 and 4-7); run the coordinator side with
#                       `ip netns exec "$nsc" ...`. Needs root and a build of
#                       linkemu. The namespaces go on exit at the latest.
# bench_link_down       stops those nodes and the link, deletes the namespaces
# field KEY, median     a JSON line's number; the median of lines on stdin

bench_model() {
  local lower
  lower=$(echo "$1" | tr 'A-Z' 'a-z')
  model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
  [ -f "$model" ] || "$b/moe-bench" --type "$1" -p 4 -n 4 --reps 1 >/dev/null
}

work=$(mktemp -d)
pids=()
bench_nss=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${bench_nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
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

bench_link_up() {
  local tag="bl$$" i
  nsc="$tag-c" nsn="$tag-n"
  ip netns add "$nsc"; ip netns add "$nsn"
  bench_nss+=("$nsc" "$nsn")
  ip -n "$nsc" link set lo up; ip -n "$nsn" link set lo up
  "$b/linkemu" "a$tag" "b$tag" "$1,0,0" "$1,0,0" >"$work/emu.out" 2>"$work/emu.log" &
  link_emu=$!
  pids+=("$link_emu")
  for _ in $(seq 100); do grep -q ready "$work/emu.out" && break; sleep 0.05; done
  ip link set "a$tag" netns "$nsc"; ip link set "b$tag" netns "$nsn"
  ip -n "$nsc" addr add 10.78.0.1/24 dev "a$tag"; ip -n "$nsc" link set "a$tag" up
  ip -n "$nsn" addr add 10.78.0.2/24 dev "b$tag"; ip -n "$nsn" link set "b$tag" up
  link_nodes=()
  for i in 1 2; do
    ip netns exec "$nsn" "$b/moe-expert" --model "$model" --listen "tcp://10.78.0.2:555$i" --name "$2-$i" \
      --threads "$3" >"$work/node$i.out" 2>"$work/node$i.log" &
    link_nodes+=("$!")
    pids+=("$!")
  done
  for i in 1 2; do
    for _ in $(seq 300); do grep -q 'listening on' "$work/node$i.out" 2>/dev/null && break; sleep 0.1; done
  done
  cat >"$work/cluster.yaml" <<YAML
model: $model
wire: auto
nodes:
  - name: $2-1
    endpoint: tcp://10.78.0.2:5551
    experts: 0-3
  - name: $2-2
    endpoint: tcp://10.78.0.2:5552
    experts: 4-7
YAML
}

bench_link_down() {
  kill "${link_nodes[@]}" "$link_emu" 2>/dev/null || true
  wait "${link_nodes[@]}" "$link_emu" 2>/dev/null || true
  ip netns del "$nsc"; ip netns del "$nsn"
  bench_nss=()
}
