#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages moe-cluster needs to build and test.
# Does nothing when they are all present; uses sudo when not run as root.
# With --aarch64 it also installs what the aarch64 cross build and its qemu
# test run need (deploy/test-aarch64.sh): the cross compiler, qemu-user, and
# the arm64 builds of the test libraries through Debian multiarch. With
# --fuzz, clang and the libFuzzer runtime (deploy/fuzz.sh).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-dev libyaml-dev libcmocka-dev libcjson-dev libmicrohttpd-dev
)

# --- optional groups: aarch64 cross build, tests under qemu (--aarch64);
# --- clang and its libFuzzer runtime for deploy/fuzz.sh (--fuzz) ------------
aarch64=0
case "${1:-}" in
  "") ;;
  --aarch64) aarch64=1 ;;
  --fuzz) packages+=(clang libclang-rt-dev) ;;
  *) echo "usage: deploy/setup.sh [--aarch64 | --fuzz]" >&2; exit 2 ;;
esac
if [ "$aarch64" -eq 1 ]; then
  packages+=(
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    libc6:arm64 libcmocka-dev:arm64 libcjson-dev:arm64
  )
fi
# -----------------------------------------------------------------------------

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for fully installed packages.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
