#!/usr/bin/env bash
# A node without a model file becoming ready: the benchmark model
# (moe-bench's, dim 1024 x ffn 3584, 8 layers of 8 experts, Q4_0 unless
# --type), half of its experts (0-3 of every layer) placed on one node that
# starts with an empty --cache-dir, against copying the same bytes (that
# node's moe-split file) with cp, and with cat through a TCP connection on
# the same link. REPS runs of each, alternating; prints each run and the
# medians:
#   node      start of moe-expert to its Ready (hello, metadata, fetching,
#             checking every slice's hash, writing the cache file, mapping
#             and repacking it), MiB/s of the share
#   fetch     the transfer alone as the node logs it (chunks received,
#             hashed and written in place, the file synced), MiB/s
#   cp        cp of the node's moe-split file (page cache warm), MiB/s
#   tcp       cat FILE > /dev/tcp/127.0.0.1/PORT into a python3 receiver
#             writing a file, MiB/s
#   ratio     node MiB/s over the faster of cp and tcp
# and the hashing speed (BLAKE2b of every slice, once per model file) from
# the coordinator's first start. Not part of the test suite (timings); needs
# a build in build/ and python3.
#
#   deploy/bench-distrib.sh [--type Q4_0] [--reps 3] [--mbps 0] [--chunk-kib 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
type=Q4_0 reps=3 mbps=0 chunk=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --type) type=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --mbps) mbps=$2; shift 2 ;;
    --chunk-kib) chunk=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
b=$PWD/build
lower=$(echo "$type" | tr 'A-Z' 'a-z')
model=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}/bench-1024x3584x8-$lower.gguf
[ -f "$model" ] || "$b/moe-bench" --type "$type" -p 4 -n 4 --reps 1 >/dev/null
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
cat >"$work/cluster.yaml" <<YAML
model: $model
retry_ms: 100
transfer_mbps: $mbps
nodes:
  - name: half
    endpoint: tcp://127.0.0.1:$port
    experts: 0-3
local:
  experts: 4-7
YAML

# The hashes once per model file: the coordinator's first start hashes the
# placed slices (the index is then kept beside the model).
rm -f "$model.mcidx"
"$b/moe-split" "$model" "$work/cluster.yaml" "$work/split" 2>/dev/null
share=$(stat -c %s "$work/split/half.gguf")
"$b/moe-coordinator" --model "$model" --cluster "$work/cluster.yaml" --serve --port 0 --threads 1 \
  2>"$work/coord.log" >/dev/null &
coord=$!
pids+=($coord)
for _ in $(seq 600); do grep -q 'on http://' "$work/coord.log" && break; sleep 0.1; done
hash_line=$(grep -o 'hashed the weights of .*GiB/s)' "$work/coord.log" | head -n 1 || true)

ms_of() { # "2026-12-07 04:26:12.456" -> ms since the epoch
  python3 -c 'import sys,datetime; print(int(datetime.datetime.strptime(sys.argv[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()*1000))' "$1"
}
now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }

receiver() { # port file: accept one connection, write what comes
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
with open(sys.argv[2], "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b: break
        f.write(b)
PY
}

node_rates=() fetch_rates=() cp_rates=() tcp_rates=()
rate() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / 1048576 / (int(sys.argv[2]) / 1000)))" "$1" "$2"; }
cat "$work/split/half.gguf" >/dev/null # the copies read from the page cache, as the coordinator does
for r in $(seq "$reps"); do
  # The node, from an empty cache to Ready.
  rm -rf "$work/cache"
  "$b/moe-expert" --cache-dir "$work/cache" --listen "tcp://127.0.0.1:$port" --name half --threads 2 \
    --fetch-chunk-kib "$chunk" >/dev/null 2>"$work/node.log" &
  node=$!
  for _ in $(seq 3000); do grep -q 'placement of session .* accepted' "$work/node.log" && break; sleep 0.02; done
  kill $node; wait $node 2>/dev/null || true
  t0=$(ms_of "$(head -n 1 "$work/node.log" | cut -c1-23)")
  t1=$(ms_of "$(grep 'placement of session .* accepted' "$work/node.log" | head -n 1 | cut -c1-23)")
  node_rates+=("$(rate "$share" $((t1 - t0)))")
  fetch_rates+=("$(sed -n 's/.*fetched .* in .* s (\([0-9.]*\) MiB\/s).*/\1/p' "$work/node.log" | head -n 1)")
  # cp of the same bytes.
  rm -f "$work/copy.gguf"
  a=$(now_ms); cp "$work/split/half.gguf" "$work/copy.gguf"; sync -f "$work/copy.gguf" 2>/dev/null || true; z=$(now_ms)
  cp_rates+=("$(rate "$share" $((z - a)))")
  # cat through a loopback TCP connection into a file.
  tport=$((port + 1))
  rm -f "$work/tcp.gguf"
  receiver "$tport" "$work/tcp.gguf" >"$work/recv.out" &
  recv=$!
  for _ in $(seq 100); do grep -q ready "$work/recv.out" 2>/dev/null && break; sleep 0.02; done
  a=$(now_ms); cat "$work/split/half.gguf" >"/dev/tcp/127.0.0.1/$tport"; wait $recv; z=$(now_ms)
  tcp_rates+=("$(rate "$share" $((z - a)))")
  cmp -s "$work/tcp.gguf" "$work/split/half.gguf" || { echo "the TCP copy differs" >&2; exit 1; }
  echo "run $r: node ${node_rates[-1]} MiB/s (fetch ${fetch_rates[-1]}), cp ${cp_rates[-1]} MiB/s, tcp ${tcp_rates[-1]} MiB/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mn=$(median "${node_rates[@]}") mf=$(median "${fetch_rates[@]}") mc=$(median "${cp_rates[@]}") mt=$(median "${tcp_rates[@]}")
best=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$mc" "$mt")
echo "share: $((share / 1048576)) MiB ($type, experts 0-3 of 8 in every layer), transfer cap ${mbps} Mbit/s (0: none)"
echo "median of $reps: node $mn MiB/s (fetch $mf), cp $mc MiB/s, tcp $mt MiB/s; ratio $(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$mn" "$best")"
echo "fetch alone over the faster copy: $(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$mf" "$best")"
echo "load average during the runs: $(cut -d' ' -f1-3 /proc/loadavg) (2-core machines shared with other work: see PERFORMANCE.md)"
echo "coordinator's first start: ${hash_line:-no hashing line}"
