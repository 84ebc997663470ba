#!/usr/bin/env bash
# Regenerates tests/fixtures/arch: small random-weight Qwen3-MoE, OLMoE,
# Qwen2-MoE, DeepSeek-V2/V3, GLM-4.5 and GPT-OSS models written by moe-mkmodel, and llama.cpp's logits, token ids and greedy
# continuations for them (deploy/llamacpp/ref.c). Not run by CI; needs a
# llama.cpp build: LLAMA_CPP_DIR (default ../llama.cpp-new) with build/bin
# holding libllama. tests/fixtures/README.md says which commit made the files
# in the repository.
#   usage: LLAMA_CPP_DIR=/path/to/llama.cpp deploy/make-arch-fixtures.sh [BUILD_DIR [NAME...]]
# NAMEs (default: all) pick the models to remake.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
llama=$(cd "${LLAMA_CPP_DIR:-../llama.cpp-new}" && pwd)
build=${1:-build}
shift || true
out=tests/fixtures/arch
mk="$build/moe-mkmodel"
[ -x "$mk" ] || { echo "build moe-mkmodel first (cmake --build $build)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -o "$tmp/llama-ref" deploy/llamacpp/ref.c -I"$llama/include" -I"$llama/ggml/include" \
  -L"$llama/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama/build/bin"

# name: mkmodel flags. Qwen3-MoE: 128 experts, 8 used, heads wider than
# dim/heads (32 vs 16), per-head q/k norms. OLMoE: 64 experts, 8 used, q/k
# norms over the whole projection, no renormalisation of the top-8 weights.
# Qwen2-MoE: 60 experts, 4 used (Qwen1.5-MoE-A2.7B's counts), not
# renormalised, a shared expert 4x as wide with its sigmoid gate, q/k/v biases.
# DeepSeek-V2 (V2-Lite's shape, small): multi-head latent attention with a
# 64-wide latent, query heads of 32 + 16 RoPE dims, value heads of 32, YaRN
# (factor 4 from 512, mscale_all_dim 0.707), 16 experts, 4 used, not
# renormalised but scaled by 1.5, 2 shared experts (ungated), 3 layers.
# deepseek2-qlora: V2's compressed query (attn_q_a, its norm, attn_q_b),
# a 32-wide latent, plain RoPE (no scaling), 2 layers.
# GLM-4.5: a leading dense layer (FFN 64), sigmoid scores with a selection
# bias, 16 experts in 4 groups (2 kept), top-4 renormalised and scaled by
# 2.5, one ungated shared expert, heads of 32 with RoPE on the first 16
# values, q/k/v biases, a trailing next-token-prediction layer (skipped).
# deepseek2v3 (DeepSeek-V3/R1's shape, small): latent attention with V3's
# compressed query (32) and a 32-wide latent, YaRN (factor 4 from 512,
# mscale_all_dim 1), a leading dense layer (FFN 64), sigmoid scores with a
# selection bias, 16 experts in 4 groups (2 kept), top-4 renormalised and
# scaled by 2.5, one shared expert, a trailing next-token-prediction layer.
# gptoss-f32 (GPT-OSS's shape, small): heads of 32 (4 query, 2 key/value)
# wider than dim/heads, attention sinks, a sliding window of 8 on layers 0
# and 2 and full attention on layer 1, q/k/v and output biases, a router
# bias, 16 experts, 4 used, weighed by a softmax over the chosen logits,
# expert biases with the clamped SwiGLU, YaRN (factor 4 from 512).
# gptoss-mxfp4: the same with MXFP4 experts (the other matrices F32).
declare -A models=(
  [qwen3moe-f32]="--arch qwen3moe --dim 64 --heads 4 --kv-heads 2 --head-dim 32 --experts 128 --experts-used 8 --ffn 16 --layers 2 --vocab 1024 --seed 3001"
  [olmoe-f32]="--arch olmoe --dim 64 --heads 4 --kv-heads 4 --experts 64 --experts-used 8 --ffn 32 --layers 2 --vocab 1024 --seed 3002"
  [qwen2moe-f32]="--arch qwen2moe --dim 64 --heads 4 --kv-heads 2 --experts 60 --experts-used 4 --ffn 16 --ffn-shexp 64 --layers 2 --vocab 1024 --seed 3003"
  [deepseek2-qlora-f32]="--arch deepseek2 --dim 64 --heads 4 --head-dim 48 --rope-dim 16 --head-dim-v 32 --kv-lora-rank 32 --q-lora-rank 32 --experts 16 --experts-used 4 --ffn 16 --layers 2 --vocab 1024 --seed 3005"
  [deepseek2-f32]="--arch deepseek2 --dim 64 --heads 4 --head-dim 48 --rope-dim 16 --head-dim-v 32 --kv-lora-rank 64 --experts 16 --experts-used 4 --ffn 16 --ffn-shexp 32 --layers 3 --vocab 1024 --yarn-factor 4 --yarn-orig-ctx 512 --yarn-mscale-all-dim 0.707 --weights-scale 1.5 --seed 3004"
  [deepseek2v3-f32]="--arch deepseek2 --dim 64 --heads 4 --head-dim 48 --rope-dim 16 --head-dim-v 32 --kv-lora-rank 32 --q-lora-rank 32 --experts 16 --experts-used 4 --groups 4 --groups-used 2 --gating sigmoid --selection-bias --weights-scale 2.5 --ffn 16 --ffn-shexp 16 --dense-layers 1 --ffn-dense 64 --nextn 1 --layers 3 --vocab 1024 --yarn-factor 4 --yarn-orig-ctx 512 --yarn-mscale-all-dim 1 --seed 3006"
  [gptoss-f32]="--arch gpt-oss --dim 64 --heads 4 --kv-heads 2 --head-dim 32 --experts 16 --experts-used 4 --ffn 32 --layers 3 --vocab 1024 --swa 8 --yarn-factor 4 --yarn-orig-ctx 512 --seed 3007"
  [gptoss-mxfp4]="--arch gpt-oss --dim 64 --heads 4 --kv-heads 2 --head-dim 32 --experts 16 --experts-used 4 --ffn 32 --layers 3 --vocab 1024 --swa 8 --yarn-factor 4 --yarn-orig-ctx 512 --type MXFP4 --seed 3007"
  [glm4moe-f32]="--arch glm4moe --dim 64 --heads 4 --kv-heads 2 --head-dim 32 --rope-dim 16 --experts 16 --experts-used 4 --groups 4 --groups-used 2 --weights-scale 2.5 --ffn 16 --ffn-shexp 16 --dense-layers 1 --ffn-dense 64 --nextn 1 --layers 3 --vocab 1024 --seed 3004"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${!models[@]}")
prompts=(p0_fox p1_fr p2_code p3_chat)
mkdir -p "$out"
for name in "${names[@]}"; do
  [ -n "${models[$name]:-}" ] || { echo "no model '$name'" >&2; exit 2; }
  # shellcheck disable=SC2086
  "$mk" -o "$out/$name.gguf" ${models[$name]} >/dev/null
  mkdir -p "$out/$name"
  for p in "${prompts[@]}"; do
    cp "$out/prompts/$p.txt" "$tmp/$p.txt"
    "$tmp/llama-ref" "$out/$name.gguf" "$tmp/$p.txt" "$out/$name/$p" 16 2>"$tmp/log" ||
      { cat "$tmp/log" >&2; exit 1; }
  done
  echo "$name: $(sha256sum "$out/$name.gguf" | cut -c1-16) $(du -h "$out/$name.gguf" | cut -f1)"
done
echo "llama.cpp $(git -C "$llama" rev-parse HEAD)"
