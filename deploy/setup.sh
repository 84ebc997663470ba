#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages moe-cluster needs to build and test.
# Does nothing when they are all present; uses sudo when not run as root.
# With --aarch64 it also installs what the aarch64 cross build and its qemu
# test run need (deploy/test-aarch64.sh): the cross compiler, qemu-user, and
# the arm64 builds of the test libraries through Debian multiarch. With
# --fuzz, clang and the libFuzzer runtime (deploy/fuzz.sh). With --test,
# what the server's real-client tests use (tests/web): Chromium, Node.js
# when the machine has none, and the pinned npm packages (npm ci); and what
# the systemd units' test uses (tests/sandbox): libseccomp-dev for its filter
# tool, and systemd for systemd-analyze's tables of system-call groups (the
# package only; nothing here makes systemd PID 1 or starts it); and what
# the discovery test uses (tests/net/discover.sh): avahi-daemon and
# dbus-daemon, which it runs privately in network namespaces (on a machine
# with an init system, installing avahi-daemon also starts it, as on any
# Debian desktop: moe-expert --announce and moe-coordinator --discover need
# it running).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-dev libyaml-dev libcmocka-dev libcjson-dev libmicrohttpd-dev
  libpcre2-dev libsodium-dev libavahi-client-dev
)

# --- optional groups: aarch64 cross build, tests under qemu (--aarch64);
# --- clang and its libFuzzer runtime for deploy/fuzz.sh (--fuzz) ------------
aarch64=0
web=0
case "${1:-}" in
  "") ;;
  --aarch64) aarch64=1 ;;
  --fuzz) packages+=(clang libclang-rt-dev) ;;
  --test)
    web=1
    packages+=(chromium libseccomp-dev systemd avahi-daemon dbus-daemon)
    command -v node >/dev/null || packages+=(nodejs npm)
    ;;
  *) echo "usage: deploy/setup.sh [--aarch64 | --fuzz | --test]" >&2; exit 2 ;;
esac
if [ "$aarch64" -eq 1 ]; then
  packages+=(
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    libc6:arm64 libcmocka-dev:arm64 libcjson-dev:arm64 libpcre2-dev:arm64
  )
fi
# -----------------------------------------------------------------------------

# The npm packages of tests/web, exactly as package-lock.json pins them.
web_packages() {
  [ "$web" -eq 1 ] || return 0
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/web"
  if ! node "$dir/deps.mjs" >/dev/null 2>&1; then
    echo "deploy/setup.sh: npm ci in tests/web" >&2
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for fully installed packages.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  web_packages
  exit 0
fi

echo "deploy/setup.sh: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deploy/setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
# The :arm64 packages come from the arm64 archive, which apt only reads once
# dpkg knows the architecture (the apt-get update below then fetches it).
if [ "$aarch64" -eq 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo[@]}" dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
web_packages
