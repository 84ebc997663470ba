#!/usr/bin/env bash
# The systemd units of deploy/systemd, as far as a machine without systemd as
# PID 1 can run them: each binary started from its unit's own ExecStart= line
# (/usr/local/bin and /etc/moe-cluster moved into a scratch folder, the
# ${MOE_*} settings filled in) under the system-call filters its unit asks
# for (tests/sandbox/unitseccomp: SystemCallFilter=, RestrictAddressFamilies=,
# RestrictRealtime=, ... with systemd's groups from `systemd-analyze
# syscall-filter`). On a generated model, with CURVE keys as the units use:
#
#   1. moe-expert (its unit): starts without a model file, listens, fetches
#      its experts from the coordinator into its cache folder, and serves
#      the runs below;
#   2. moe-coordinator (its unit's filters) --cluster --prompt through that
#      node: the same text as the model alone;
#   3. moe-coordinator (its unit's ExecStart=, --serve) through the node:
#      answers a chat completion;
#   4. both stop cleanly on SIGTERM (exit 0), still under their filters.
#
# The binaries run as the user running the test (not the units' User=), and
# only the filters are emulated: not the units' file-system namespaces or
# capabilities. A unit whose filters kill a binary fails here (exit 159: SIGSYS, a system
# call SystemCallFilter= forbids; 134: an abort, e.g. a socket family
# RestrictAddressFamilies= refuses). Needs the unitseccomp tool (built when
# libseccomp-dev is installed) and systemd-analyze (package systemd), both
# installed by deploy/setup.sh --test; skipped without them (exit 77), or
# failed with MC_REQUIRE_SANDBOX=1 (deploy/test.sh).
#
#   tests/sandbox/units.sh    (ctest; MC_BIN_DIR: the build folder; MC_UNIT_DIR:
#                              other units to check, default deploy/systemd)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${MC_BIN_DIR:?MC_BIN_DIR must name the build folder}
units=${MC_UNIT_DIR:-$here/../../deploy/systemd}
missing=""
[ -x "$bin/unitseccomp" ] || missing="$bin/unitseccomp (built when libseccomp-dev is installed)"
command -v systemd-analyze >/dev/null || missing="$missing systemd-analyze (package systemd)"
if [ -n "$missing" ]; then
  echo "tests/sandbox/units.sh: missing $missing (bash deploy/setup.sh --test installs them)"
  [ "${MC_REQUIRE_SANDBOX:-0}" = 1 ] && exit 1
  exit 77
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAILED: $*"
  for f in "$work"/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}
ok() { echo "ok: $*"; }
# Why a process ended, in the terms of the filters.
status_text() {
  case $1 in
    159) echo "exit 159: killed by SIGSYS, a system call its unit's SystemCallFilter= forbids (strace -f shows which)" ;;
    134) echo "exit 134: aborted (a refused socket family or scheduling call makes libzmq assert)" ;;
    124) echo "exit 124: still running after 30 s" ;;
    137) echo "exit 137: killed, still running 10 s after SIGTERM" ;;
    *) echo "exit $1" ;;
  esac
}

systemd-analyze syscall-filter >"$work/groups" 2>/dev/null || fail "systemd-analyze syscall-filter"

# The unit's ExecStart= as words: continuation lines joined, ${MOE_*} from
# the environment, /usr/local/bin and /etc/moe-cluster moved under $work.
exec_start() { # unit file -> one word per line
  local line
  line=$(sed -e '/^[[:space:]]*[#;]/d' "$1" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | sed -n 's/^ExecStart=//p')
  [ -n "$line" ] || { echo "FAILED: $1 has no ExecStart=" >&2; return 1; }
  line=${line//\/usr\/local\/bin\//$bin/}
  line=${line//\/etc\/moe-cluster\//$work/etc/}
  while [[ $line =~ \$\{(MOE_[A-Z_]+)\} ]]; do
    local name=${BASH_REMATCH[1]}
    [ -n "${!name:-}" ] || { echo "FAILED: $1 uses \${$name}, which this test does not set" >&2; return 1; }
    line=${line//\$\{$name\}/${!name}}
  done
  (set -f; printf '%s\n' $line) # words, as systemd splits them; no globbing of tcp://...:*
}
# Each ${MOE_*} a unit's ExecStart= uses is one its settings file, as the
# playbook writes it (deploy/ansible/templates), defines.
for unit in expert coordinator; do
  template="$here/../../deploy/ansible/templates/$unit.env.j2"
  for name in $(grep -o '\${MOE_[A-Z_]*}' "$units/moe-$unit.service" | tr -d '${}' | sort -u); do
    grep -q "^$name=" "$template" || fail "moe-$unit.service uses \${$name}, which $template does not write"
  done
done

# A unit's filters, then the command, which unitseccomp execs: a background
# job's $! is the binary itself, which the cleanup and the SIGTERM below reach.
expert_box=("$bin/unitseccomp" "$units/moe-expert.service" "$work/groups" --)
coord_box=("$bin/unitseccomp" "$units/moe-coordinator.service" "$work/groups" --)
# In the sanitizer build: LeakSanitizer stops the threads with ptrace, which
# the units forbid (@debug), and its killed helper would leave the process
# waiting forever. The rest of the suite looks for leaks.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# Ends a background process with SIGTERM (SIGKILL after 10 s); its exit
# status in $rc.
stop() { # pid
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$1" 2>/dev/null || true
  rc=0
  wait "$1" || rc=$?
}

# --- the machine as deploy/ansible/site.yml leaves it -----------------------------
mkdir -p "$work/etc/keys"
"$bin/moe-mkmodel" -o "$work/model.gguf" --seed 7 >/dev/null
"$bin/moe-keygen" "$work/etc/keys" node >/dev/null
"$bin/moe-keygen" "$work/etc/keys" coordinator >/dev/null
cp "$work/etc/keys/coordinator.pub" "$work/etc/authorized_keys"
echo "unit-test-key" >"$work/etc/api_key"

# --- 1. the node --------------------------------------------------------------------
mkdir -p "$work/cache"
export MOE_CACHE_DIR="$work/cache" MOE_CACHE_MB=0 MOE_LISTEN="tcp://127.0.0.1:*" MOE_NAME=unit-node MOE_THREADS=1
exec_start "$units/moe-expert.service" >"$work/expert.cmd" || exit 1
mapfile -t cmd <"$work/expert.cmd"
"${expert_box[@]}" "${cmd[@]}" >"$work/node.out" 2>"$work/node.log" &
node=$!
pids+=($node)
endpoint=""
for _ in $(seq 200); do
  endpoint=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/node.out")
  [ -n "$endpoint" ] && break
  if ! kill -0 $node 2>/dev/null; then
    rc=0
    wait $node || rc=$?
    fail "moe-expert under moe-expert.service's filters did not start: $(status_text $rc)"
  fi
  sleep 0.05
done
[ -n "$endpoint" ] || fail "moe-expert: no 'listening on' line within 10 s"
ok "moe-expert started from its unit's ExecStart= under its filters, listening on $endpoint"

cat >"$work/etc/cluster.yaml" <<YAML
model: $work/model.gguf
secret_key: $work/etc/keys/coordinator.key
timeout_ms: 5000
nodes:
  - name: unit-node
    endpoint: $endpoint
    experts: all
    public_key: "$(cat "$work/etc/keys/node.pub")"
local:
  experts: none
YAML

# --- 2. a coordinator run through it ------------------------------------------------
gen=(--prompt "The systemd unit" -n 24 --temp 0 --threads 1)
timeout 30 "$bin/moe-coordinator" --model "$work/model.gguf" "${gen[@]}" >"$work/want.txt" 2>"$work/want.log" ||
  fail "the model alone"
rc=0
timeout -k 1 30 "${coord_box[@]}" "$bin/moe-coordinator" --cluster "$work/etc/cluster.yaml" "${gen[@]}" \
  >"$work/got.txt" 2>"$work/prompt.log" || rc=$?
[ $rc = 0 ] || fail "moe-coordinator --prompt under moe-coordinator.service's filters: $(status_text $rc)"
cmp -s "$work/want.txt" "$work/got.txt" || fail "the cluster's text differs from the model's: $(cat "$work/got.txt")"
ok "moe-coordinator --cluster --prompt under its unit's filters: the model's text, through the node"

# --- 3. the coordinator's own unit: the server -------------------------------------
export MOE_HOST=127.0.0.1 MOE_PORT=0 MOE_PARALLEL=1 MOE_CTX=256
exec_start "$units/moe-coordinator.service" >"$work/coordinator.cmd" || exit 1
mapfile -t cmd <"$work/coordinator.cmd"
"${coord_box[@]}" "${cmd[@]}" >/dev/null 2>"$work/serve.log" &
server=$!
pids+=($server)
port=""
for _ in $(seq 200); do
  port=$(sed -n 's|.*on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/serve.log" | head -n 1)
  [ -n "$port" ] && break
  if ! kill -0 $server 2>/dev/null; then
    rc=0
    wait $server || rc=$?
    fail "moe-coordinator --serve under moe-coordinator.service's filters did not start: $(status_text $rc)"
  fi
  sleep 0.05
done
[ -n "$port" ] || fail "moe-coordinator --serve: no 'serving' line within 10 s"
# The node holds no model file: it has fetched its experts into its cache
# folder (written under its filters) before it serves.
for _ in $(seq 200); do
  grep -q 'placement of session .* accepted' "$work/node.log" && break
  sleep 0.05
done
grep -q 'placement of session .* accepted' "$work/node.log" ||
  fail "moe-expert did not fetch and load its experts under its filters"
ls "$work/cache/"*.gguf >/dev/null 2>&1 || fail "moe-expert wrote no cache file"
# Accepted is not yet in: the coordinator takes the node when its Ready
# arrives; until then it computes the node's experts itself, and the answer
# below would not go through the node. Wait for /health to count it.
alive=
for _ in $(seq 200); do
  exec 4<>"/dev/tcp/127.0.0.1/$port" || break
  printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&4
  alive=$(timeout 5 cat <&4 | tr -d ' \r\n' | grep -o '"nodes_alive":1' || true)
  exec 4<&-
  [ -n "$alive" ] && break
  sleep 0.05
done
[ -n "$alive" ] || fail "the coordinator (--serve) did not take the node in within 10 s"
body='{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}'
exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to the server on port $port"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer unit-test-key\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
  "${#body}" "$body" >&3
timeout 20 cat <&3 >"$work/answer.http" || true
exec 3<&-
head -n 1 "$work/answer.http" | grep -q ' 200 ' || fail "the server's answer: $(head -c 400 "$work/answer.http")"
grep -q '"chat.completion"' "$work/answer.http" || fail "not a chat completion: $(head -c 400 "$work/answer.http")"
ok "moe-coordinator from its unit's ExecStart= (--serve) under its filters: answered a chat completion through the node"

# --- 4. clean stops, still under the filters -----------------------------------------
for p in $server $node; do
  stop $p
  [ $rc = 0 ] || fail "pid $p on SIGTERM under its unit's filters: $(status_text $rc)"
done
pids=()
grep -q 'served [1-9]' "$work/node.log" || fail "moe-expert does not say it served anything"
ok "both stopped cleanly on SIGTERM under their filters"
