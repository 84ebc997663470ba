#!/usr/bin/env bash
# Configures and builds moe-cluster into build/ (or $1 with extra CMake
# arguments after it), installing missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j2
