#!/usr/bin/env bash
# Discovery across hosts: network namespaces on a bridge, each "host" with
# its own D-Bus system bus and Avahi daemon (private: a dbus-daemon on a
# socket in the work folder, an avahi-daemon in its own mount namespace
# with a tmpfs over /run, so nothing of the machine's own is used or
# touched). mDNS stays on the test bridge. Hosts: c (the coordinator and
# node-b, which its cluster file names), a (node-a, whose key the file's
# discover_keys lists) and s (a stranger node whose key it does not).
#
#   1. both nodes announce (moe-expert --announce); moe-coordinator
#      --discover on c lists both, each with its endpoint and public key;
#   2. a server on c with `discover: true` adds node-a while serving (the
#      same staged change as POST /v1/cluster/nodes): it shows in
#      /v1/cluster, alive, serves requests, and 8 seeded answers are the
#      ones a single machine gives;
#   3. the stranger is logged and not added.
#
# Needs root (ip netns, mounts), iproute2, curl, util-linux's unshare,
# dbus-daemon and avahi-daemon (deploy/setup.sh --test installs the last
# two). Skipped with a message otherwise (exit 77), except that with
# MC_REQUIRE_SANDBOX=1 (deploy/test.sh) a missing daemon fails, and in CI
# (CI=true, which runs as root) so does not being root.
#
#   tests/net/discover.sh FIXTURES_DIR     (ctest; MC_BIN_DIR: the build folder)
#
# MC_DISCOVER_KEEP=1 keeps the work folder (every log) and prints its path.
set -euo pipefail
net_name=tests/net/discover.sh net_keep_var=MC_DISCOVER_KEEP
. "$(dirname "$0")/lib.sh"
bin=${MC_BIN_DIR:?MC_BIN_DIR must name the build folder}
fx=${MC_FIXTURES:-${1:-}}
if [ "$(id -u)" != 0 ]; then
  [ "${CI:-}" = true ] && { echo "tests/net/discover.sh: FAILED: CI runs as root, this is not"; exit 1; }
  net_skip "needs root for ip netns and mounts (CI runs as root)"
fi
command -v ip >/dev/null || net_need "needs ip (iproute2)"
command -v curl >/dev/null || net_need "needs curl"
command -v unshare >/dev/null || net_need "needs unshare (util-linux)"
command -v dbus-daemon >/dev/null || net_need "needs dbus-daemon (deploy/setup.sh --test installs it)"
avahi=$(command -v avahi-daemon || echo /usr/sbin/avahi-daemon)
[ -x "$avahi" ] || net_need "needs avahi-daemon (deploy/setup.sh --test installs it)"
net_model "$fx"

tag="d$$"
net_begin
work=$net_work

# --- hosts: a bridge, and per host a bus and an Avahi daemon -------------------------
hub="$tag-hub"
net_hub "$hub"
declare -A addr=([c]=10.79.0.1 [a]=10.79.0.11 [s]=10.79.0.50)
for h in c a s; do
  ns="$tag-$h"
  net_host "$ns"
  ip link add "v$tag$h" netns "$ns" type veth peer name "p$tag$h" netns "$hub"
  net_plug "$ns" "v$tag$h" "${addr[$h]}" "$hub" "p$tag$h"

  d="$work/host-$h"
  mkdir -p "$d"
  # A system bus of its own: anyone may own names and call anything (it
  # only carries this host's Avahi daemon and its clients).
  cat >"$d/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=$d/bus</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
XML
  # Not --fork: a child of this shell, killed and reaped by cleanup.
  dbus-daemon --config-file="$d/bus.conf" --nofork >"$work/bus-$h.log" 2>&1 &
  net_pids+=($!)
  for _ in $(seq 100); do [ -S "$d/bus" ] && break; sleep 0.05; done # a socket: not net_wait_for
  [ -S "$d/bus" ] || net_fail "dbus-daemon on $h did not start"
  cat >"$d/avahi.conf" <<INI
[server]
host-name=$tag-$h
use-ipv4=yes
use-ipv6=no
allow-interfaces=v$tag$h
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
INI
  # avahi-daemon keeps its pid file and socket in /run/avahi-daemon: a
  # tmpfs over /run in its own mount namespace keeps them apart.
  DBUS_SYSTEM_BUS_ADDRESS="unix:path=$d/bus" ip netns exec "$ns" unshare -m --propagation private sh -c \
    "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec '$avahi' -f '$d/avahi.conf' --no-drop-root --no-chroot --no-rlimits" \
    >"$work/avahi-$h.log" 2>&1 &
  net_pids+=($!)
done
for h in c a s; do
  net_wait_for 'Server startup complete' "$work/avahi-$h.log" || net_fail "avahi-daemon on $h did not start"
done
# A command in host h's namespace, on its bus: env and ip exec it, so the
# pid of a `... &` is the program's own (cleanup kills it).
declare -A on
for h in c a s; do on[$h]="env DBUS_SYSTEM_BUS_ADDRESS=unix:path=$work/host-$h/bus ip netns exec $tag-$h"; done
[[ "$work" != *" "* ]] || net_fail "the work folder's path has a space: $work"

# --- keys and nodes -----------------------------------------------------------------
keys="$work/keys"
for k in coordinator node-a node-b stranger; do "$bin/moe-keygen" "$keys" "$k" >/dev/null; done
start_node() { # host, name, listen, extra args...
  local h=$1 name=$2 listen=$3
  shift 3
  ${on[$h]} "$bin/moe-expert" --model "$model" --listen "$listen" --name "$name" --threads 1 \
    --secret-key "$keys/$name.key" --authorized-keys "$keys/coordinator.pub" "$@" \
    >"$work/$name.out" 2>>"$work/$name.log" &
  net_pids+=($!)
  net_wait_for 'listening on' "$work/$name.out" || net_fail "node $name did not start"
}
start_node a node-a "tcp://${addr[a]}:5555" --announce
start_node s stranger "tcp://${addr[s]}:5555" --announce
start_node c node-b "tcp://127.0.0.1:5556"
for n in node-a stranger; do
  for _ in $(seq 200); do grep -q "announce: _moe-expert._tcp '$n'" "$work/$n.log" && break; sleep 0.05; done
  grep -q "announce: _moe-expert._tcp '$n'" "$work/$n.log" || net_fail "$n did not announce"
done

# 1. --discover lists both, with their keys
${on[c]} "$bin/moe-coordinator" --discover --discover-timeout 3 >"$work/discover.txt" 2>"$work/discover.log" ||
  net_fail "--discover: $(cat "$work/discover.log")"
for n in node-a stranger; do
  h=${n#node-}
  [ "$n" = stranger ] && h=s
  grep -qF "$n" "$work/discover.txt" || net_fail "--discover did not list $n: $(cat "$work/discover.txt")"
  line=$(grep -F "$n " "$work/discover.txt")
  [[ "$line" == *"tcp://${addr[$h]}:5555"* ]] || net_fail "--discover: $n's endpoint: $line"
  [[ "$line" == *"$(cat "$keys/$n.pub")"* ]] || net_fail "--discover: $n's key: $line"
done
grep -q '^2 nodes announced' "$work/discover.txt" || net_fail "--discover: $(cat "$work/discover.txt")"
net_ok "--discover lists node-a and the stranger with their endpoints and public keys"

# 2. a server with discover: true adds node-a while serving
cat >"$work/cluster.yaml" <<YAML
model: $model
secret_key: $keys/coordinator.key
retry_ms: 200
heartbeat_ms: 200
nodes:
  - name: node-b
    endpoint: tcp://127.0.0.1:5556
    experts: all
    public_key: "$(cat "$keys/node-b.pub")"
discover: true
discover_keys:
  - "$(cat "$keys/node-a.pub")"
discover_experts: all
YAML
ask() { # host or "", port, i, out
  local body
  body="{\"messages\":[{\"role\":\"user\",\"content\":\"Story number $3, please.\"}],\"max_tokens\":200,\"temperature\":0.8,\"seed\":$((900 + $3))}"
  ${1:+${on[$1]}} curl -sf -m 120 -H 'Content-Type: application/json' -d "$body" \
    "http://127.0.0.1:$2/v1/chat/completions" | sed -E 's/"id":"[^"]*",//; s/"created":[0-9]+,//' >"$4"
}
ask8() { # host, port, prefix
  local apids=()
  for i in $(seq 8); do
    ask "$1" "$2" "$i" "$work/$3-$i.json" &
    apids+=($!)
  done
  for p in "${apids[@]}"; do wait "$p" || return 1; done
}
net_serve "$work/refserve.log" "$bin/moe-coordinator" --model "$model"
refport=$(net_port_of "$work/refserve.log") || net_fail "reference server"
ask8 "" "$refport" want || net_fail "reference answers"
net_serve "$work/serve.log" ${on[c]} "$bin/moe-coordinator" --cluster "$work/cluster.yaml"
port=$(net_port_of "$work/serve.log") || net_fail "cluster server"
cluster() { ${on[c]} curl -sf "http://127.0.0.1:$port/v1/cluster" | tr -d ' \n'; }
for _ in $(seq 300); do
  cluster | grep -q "\"name\":\"node-a\",\"endpoint\":\"tcp://${addr[a]}:5555\",\"alive\":true" && break
  sleep 0.1
done
cluster | grep -q "\"name\":\"node-a\",\"endpoint\":\"tcp://${addr[a]}:5555\",\"alive\":true" ||
  net_fail "node-a did not join: $(cluster)"
grep -q "discover: node node-a at tcp://${addr[a]}:5555 (key .*) joins" "$work/serve.log" || net_fail "no log line for node-a's joining"
ask8 c "$port" got || net_fail "answers with node-a"
for i in $(seq 8); do
  [ -s "$work/want-$i.json" ] && cmp -s "$work/want-$i.json" "$work/got-$i.json" || net_fail "answer $i differs from one machine's"
done
req=$(cluster | sed -nE 's/.*"name":"node-a","endpoint":[^}]*"transfer":\{[^}]*\},"requests":([0-9]+).*/\1/p')
[ "${req:-0}" -gt 0 ] || net_fail "node-a served no requests ($req): $(cluster)"
net_ok "discover: true: node-a joined while serving, served $req requests; 8 seeded answers identical to one machine's"

# 3. the stranger: logged, not added
for _ in $(seq 100); do grep -q 'discover: node stranger' "$work/serve.log" && break; sleep 0.1; done
grep -q "discover: node stranger at tcp://${addr[s]}:5555 announced itself: its key .* is not in discover_keys: not added" \
  "$work/serve.log" || net_fail "the stranger was not logged as refused"
cluster | grep -q '"name":"stranger"' && net_fail "the stranger was added: $(cluster)"
net_ok "the stranger's announcement: logged, not added"
