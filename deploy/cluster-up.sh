#!/usr/bin/env bash
# A loopback cluster for measurements: NODES moe-expert processes on free
# ports (experts split evenly) and a cluster file for them, in WORKDIR.
# Sourced by load-test.sh and bench-batch.sh:
#
#   source deploy/cluster-up.sh MODEL NODES NODE_THREADS WORKDIR
#   # -> $cluster_file, $node_pids (array); stop with cluster_down
cluster_up() {
  local model=$1 n=$2 threads=$3 dir=$4 i
  node_pids=()
  cluster_file="$dir/cluster.yaml"
  printf 'model: %s\nwire: auto\nnodes:\n' "$model" >"$cluster_file"
  for i in $(seq "$n"); do
    build/moe-expert --model "$model" --listen 'tcp://127.0.0.1:*' --name "node-$i" --threads "$threads" \
      >"$dir/node-$i.out" 2>"$dir/node-$i.log" &
    node_pids+=($!)
  done
  for i in $(seq "$n"); do
    for _ in $(seq 300); do grep -q 'listening on' "$dir/node-$i.out" 2>/dev/null && break; sleep 0.1; done
    local ep first last
    ep=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$dir/node-$i.out")
    first=$(((i - 1) * 8 / n)) last=$((i * 8 / n - 1))
    printf '  - name: node-%s\n    endpoint: %s\n    experts: %s-%s\n' "$i" "$ep" "$first" "$last" >>"$cluster_file"
  done
}
cluster_down() {
  local p
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${node_pids[@]}" 2>/dev/null || true
  node_pids=()
}
# A server in the background on a free port: $server_pid, $server_port.
server_up() { # log, args...
  local log=$1
  shift
  build/moe-coordinator "$@" --serve --port 0 2>"$log" &
  server_pid=$!
  server_port=""
  for _ in $(seq 600); do
    server_port=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$log" | head -n 1 | sed 's/.*:\([0-9]*\)\//\1/' || true)
    [ -n "$server_port" ] && return 0
    kill -0 $server_pid 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.1
  done
  return 1
}
server_down() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
