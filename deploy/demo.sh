#!/usr/bin/env bash
# Quick start (a): install what is missing, build, and run the cluster demo:
# moe-coordinator --demo makes (once, cached in ~/.cache/moe-cluster) a small
# random-weight Mixtral-shaped model, starts two moe-expert nodes on free
# loopback ports with half of the experts each, generates text through them,
# prints per-node statistics and stops the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build.sh build
./build/moe-coordinator --demo "$@"
