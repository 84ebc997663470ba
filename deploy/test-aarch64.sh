#!/usr/bin/env bash
# The engine's test suite cross-built for aarch64 and run under qemu-user,
# twice: on an emulated CPU with the dot-product extension (qemu "max": the
# NEON_DOTPROD kernels, as on a Raspberry Pi 5) and on a Cortex-A72 without
# it (the baseline NEON kernels, as on a Raspberry Pi 4). The golden tests
# thereby check both kernel sets against the same reference numbers as the
# x86 build. Emulation says nothing about speed. Builds into build-aarch64/
# (or $1). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --aarch64
dir=${1:-build-aarch64}
cmake -S . -B "$dir" -DCMAKE_TOOLCHAIN_FILE=deploy/aarch64-toolchain.cmake \
  -DMC_ENGINE_ONLY=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$dir" -j2
for cpu in max cortex-a72; do
  echo "== aarch64 tests under qemu -cpu $cpu" >&2
  (cd "$dir" && QEMU_CPU=$cpu ctest --output-on-failure -j2)
done
