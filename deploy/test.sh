#!/usr/bin/env bash
# Quick start (b): the whole test suite. Builds (installing missing packages
# first), runs every ctest executable, then rebuilds with ASan+UBSan and runs
# them all again, runs the fuzz targets briefly, and the aarch64 tests under
# qemu. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# The server's real clients (the openai npm package, headless Chromium) and
# the units' filter test (libseccomp, systemd-analyze): installed here, so
# their tests run rather than skip.
bash deploy/setup.sh --test
export MC_REQUIRE_WEB=1 MC_REQUIRE_SANDBOX=1
bash deploy/build.sh build
(cd build && ctest --output-on-failure -j2)
bash deploy/build.sh build-asan -DMC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j2)
# The parsers of untrusted bytes (GGUF, wire, cluster files) under libFuzzer:
# a fixed-seed run of each, the same inputs every time (deploy/fuzz.sh).
bash deploy/fuzz.sh --smoke
# The NEON kernels, cross-built for aarch64 and run under qemu (with and
# without the dot-product instructions): the same tests, the same bits. On an
# aarch64 machine (a Pi) the native builds above already ran them.
if [ "$(uname -m)" != aarch64 ]; then
  bash deploy/test-aarch64.sh
fi
