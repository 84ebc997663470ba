#!/usr/bin/env bash
# Quick start (a): install what is missing, build, and run the demo: a
# random-weight Mixtral-shaped model made by moe-mkmodel (cached in
# build/demo/), generating text on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build.sh build
mkdir -p build/demo
model=build/demo/demo-q8_0.gguf
if [ ! -f "$model" ]; then
  ./build/moe-mkmodel -o "$model" --dim 256 --ffn 512 --layers 4 --heads 8 --kv-heads 4 \
    --experts 8 --experts-used 2 --vocab 2000 --type Q8_0 --seed 7
fi
echo "--- demo: random weights, so the text is gibberish; the point is the machinery ---" >&2
./build/moe-coordinator --model "$model" --prompt "The quick brown fox" -n 48 --seed 42 --threads 2
