#!/usr/bin/env bash
# Runs one browser/client test (a node script of this folder) against a real
# server: `moe-coordinator --demo --serve --port 0` (two moe-expert nodes on
# loopback, a generated model in a throw-away cache), its port read from the
# "serving ... on http://127.0.0.1:PORT/" line, MC_URL set for the script.
# For cors.mjs a free port for the script's own page server is chosen first
# (MC_PAGE_PORT) and the server allows only http://localhost:MC_PAGE_PORT.
#
#   tests/web/run.sh openai_client.mjs      (ctest runs each; MC_BIN_DIR: the build folder)
#
# Without node, chromium or the npm packages at their pinned versions
# (deploy/setup.sh --test installs them; deps.mjs checks) the test is
# skipped (exit 77), or fails when MC_REQUIRE_WEB=1 (deploy/test.sh, CI).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${MC_BIN_DIR:?MC_BIN_DIR must name the build folder}
script=$1
shift
missing=""
command -v node >/dev/null || missing="node"
if command -v node >/dev/null; then
  stale=$(node "$here/deps.mjs") || missing="$missing npm packages: $stale (npm ci in tests/web)"
fi
case "$script" in dashboard.mjs | cors.mjs) [ -x /usr/bin/chromium ] || missing="$missing /usr/bin/chromium" ;; esac
if [ -n "$missing" ]; then
  echo "tests/web/$script: missing $missing (bash deploy/setup.sh --test installs them)"
  [ "${MC_REQUIRE_WEB:-0}" = 1 ] && exit 1
  exit 77
fi
work=$(mktemp -d)
log="$work/server.log"
extra=()
if [ "$script" = cors.mjs ]; then
  MC_PAGE_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  export MC_PAGE_PORT
  extra=(--cors-origin "http://localhost:$MC_PAGE_PORT")
fi
MC_CACHE_DIR="$work" "$bin/moe-coordinator" --demo --serve --port 0 --threads 1 "${extra[@]}" "$@" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=""
for _ in $(seq 300); do
  port=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$log" | head -n 1 | sed 's/.*:\([0-9]*\)\//\1/' || true)
  [ -n "$port" ] && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "tests/web: the server did not start"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$log"; echo "tests/web: no serving line within 30 s"; exit 1; }
status=0
MC_URL="http://127.0.0.1:$port" node "$here/$script" || status=$?
[ $status -eq 0 ] || { echo "--- server log ---"; cat "$log"; }
exit $status
