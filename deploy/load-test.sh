#!/usr/bin/env bash
# The server under load (not part of the test suite): STREAMS concurrent
# streamed chats for SECONDS through moe-coordinator --serve and a loopback
# cluster of NODES moe-expert processes, on the benchmark model. Reports
# answers, errors, tokens/s, time to first token, and every process's
# resident memory over time (to see it stay flat after warm-up).
#
#   deploy/load-test.sh [--streams 64] [--seconds 600] [--nodes 3] [--type Q4_0] [--max-tokens 128]
set -euo pipefail
cd "$(dirname "$0")/.."
streams=64 seconds=600 nodes=3 type=Q4_0 max_tokens=128
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
lower=$(echo "$type" | tr 'A-Z' 'a-z')
model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
[ -f "$model" ] || build/moe-bench --type "$type" -p 4 -n 4 --reps 1 >/dev/null
work=$(mktemp -d)
source deploy/cluster-up.sh
trap 'server_down; cluster_down; rm -rf "$work"' EXIT
cluster_up "$model" "$nodes" 1 "$work"
server_up "$work/server.log" --cluster "$cluster_file" --parallel "$streams" --threads 2 --ctx 1024
echo "load: $streams streams for $seconds s, $nodes nodes, $type benchmark model, port $server_port" >&2
node deploy/load.mjs --url "http://127.0.0.1:$server_port" --streams "$streams" --seconds "$seconds" \
  --max-tokens "$max_tokens" --pids "$server_pid,$(IFS=,; echo "${node_pids[*]}")" --every 30
