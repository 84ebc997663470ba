# shellcheck shell=bash disable=SC2154
# Shared by the tests that put a cluster into network namespaces
# (tests/net/multihost.sh, tests/net/discover.sh); sourced, not run.
#
# It gives them one way to say what happened (skip with exit 77, fail with
# the tails of every log, ok), to find the tiny-f32 fixture, to keep a work
# folder with every process they start and every namespace they add (all
# gone at exit, whatever the exit), and to build the "hosts": a hub
# namespace with a bridge, a namespace per host, a link from each host to
# the bridge. The caller sets `net_name` (its name in messages) and
# `net_keep_var` (the variable that keeps the work folder) first.

# --- outcomes ----------------------------------------------------------------------
net_skip() { echo "$net_name: skipped: $*"; exit 77; }
# A prerequisite that is missing: skipped, or failed where MC_REQUIRE_SANDBOX=1.
net_need() {
  if [ "${MC_REQUIRE_SANDBOX:-0}" = 1 ]; then echo "$net_name: FAILED: $* (MC_REQUIRE_SANDBOX=1)"; exit 1; fi
  net_skip "$*"
}
net_fail() {
  echo "FAILED ($(date +%T.%3N)): $*"
  for f in "$net_work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done
  exit 1
}
net_ok() { echo "ok: $*"; }

# model: the absolute path of the tiny-f32 fixture in folder $1 (cluster
# files resolve relative paths from their own folder); skipped without it,
# failed with MC_REQUIRE_FIXTURES=1. (Not echoed: a skip inside $(...)
# would lose its message.)
net_model() {
  model="$1/tiny-f32.gguf"
  if [ ! -f "$model" ]; then
    [ "${MC_REQUIRE_FIXTURES:-0}" = 1 ] && { echo "fixtures missing: $model"; exit 1; }
    net_skip "no fixtures at $1"
  fi
  model="$(cd "$1" && pwd)/tiny-f32.gguf"
}

# --- the work folder and what is cleaned up ------------------------------------------
# net_work: the folder; net_pids: processes started (killed at exit);
# net_nss: namespaces added (deleted at exit).
net_begin() {
  net_work=$(mktemp -d)
  net_pids=()
  net_nss=()
  trap net_cleanup EXIT
}
net_cleanup() {
  for p in "${net_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${net_nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  if [ "${!net_keep_var:-0}" = 1 ]; then echo "work folder kept: $net_work"; else rm -rf "$net_work"; fi
}

# --- hosts ------------------------------------------------------------------------------
# The hub namespace $1 with a bridge br0, up.
net_hub() {
  ip netns add "$1"
  net_nss+=("$1")
  ip -n "$1" link add br0 type bridge
  ip -n "$1" link set br0 up
}
# A host namespace $1 with its loopback up.
net_host() {
  ip netns add "$1"
  net_nss+=("$1")
  ip -n "$1" link set lo up
}
# Joins host namespace $1 (device $2 there, address $3/24) to the bridge of
# hub $4 (device $5 there); both devices are already in their namespaces.
net_plug() {
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" link set "$2" up
  ip -n "$4" link set "$5" master br0
  ip -n "$4" link set "$5" up
}

# --- processes ----------------------------------------------------------------------
# Waits (5 s at most) for pattern $1 in file $2: 0 when it came.
net_wait_for() {
  for _ in $(seq 100); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
# An HTTP server from the command given, started in this shell (so cleanup
# finds it), stderr into log $1; net_port_of reads its port from that log.
net_serve() { # log, command...
  local log=$1
  shift
  "$@" --serve --port 0 --parallel 8 --threads 2 2>"$log" &
  net_pids+=($!)
}
net_port_of() {
  for _ in $(seq 200); do
    p=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$1" | head -n 1 | sed 's/.*:\([0-9]*\)\//\1/' || true)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.05
  done
  return 1
}
