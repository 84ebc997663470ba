#!/usr/bin/env bash
# moe-bench against llama.cpp's llama-bench on the same GGUF files, same
# thread count, runs alternating (not part of the test suite: timings).
#
#   LLAMA_CPP_DIR=../llama.cpp deploy/bench-vs-llamacpp.sh [--reps 5] [--threads 2] [-p 64[,512...]] [-n 64] [--isa avx2] [TYPE...]
#
# LLAMA_CPP_DIR is a llama.cpp checkout built with cmake (build/bin/llama-bench
# and build/bin/llama-quantize). -p takes a comma-separated list of prompt
# lengths (generation is timed with the first). --isa avx2 runs both engines
# on AVX2 only: MC_ISA=avx2 for moe-bench, and for llama-bench the CPU backend
# of a second build, $LLAMA_CPP_DIR/build-avx2/bin/libggml-cpu.so (configured
# with -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
# -DGGML_F16C=ON -DBUILD_SHARED_LIBS=ON, target ggml-cpu), put first on
# LD_LIBRARY_PATH (llama-bench's RUNPATH yields to it). TYPE: Q4_0 Q8_0 (generated directly by
# moe-mkmodel --bench-model) and K-quant mixes Q4_K_M Q5_K_M Q6_K (made by
# llama-quantize from an F16 benchmark model); default: Q4_0 Q8_0 Q4_K_M Q6_K.
# Prints per type the medians and the median of the per-pair ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=5 threads=2 nps=64 ng=64 isa= types=()
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -p) nps=$2; shift 2 ;;
    --isa) isa=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) types+=("$1"); shift ;;
  esac
done
[ ${#types[@]} -gt 0 ] || types=(Q4_0 Q8_0 Q4_K_M Q6_K)
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout built with cmake}"
lb=$LLAMA_CPP_DIR/build/bin/llama-bench
lq=$LLAMA_CPP_DIR/build/bin/llama-quantize
[ -x "$lb" ] || { echo "no $lb" >&2; exit 2; }
IFS=, read -r -a plist <<<"$nps"
moe_env=() ll_env=()
case "$isa" in
  "") ;;
  avx2)
    [ -f "$LLAMA_CPP_DIR/build-avx2/bin/libggml-cpu.so" ] || { echo "no $LLAMA_CPP_DIR/build-avx2/bin/libggml-cpu.so (see --help)" >&2; exit 2; }
    moe_env=(MC_ISA=avx2) ll_env=(LD_LIBRARY_PATH="$LLAMA_CPP_DIR/build-avx2/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}") ;;
  *) echo "--isa: only avx2 (default: each engine's best)" >&2; exit 2 ;;
esac
b=build
cache=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}
mkdir -p "$cache"
model_of() {
  local t=$1 lower f
  lower=$(echo "$t" | tr 'A-Z' 'a-z')
  f=$cache/bench-1024x3584x8-$lower.gguf
  if [ ! -f "$f" ]; then
    case "$t" in
      *_K_*|Q6_K|Q5_K|Q4_K|Q3_K|Q2_K)
        local f16=$cache/bench-1024x3584x8-f16.gguf
        [ -f "$f16" ] || "$b/moe-mkmodel" --bench-model --type F16 -o "$f16" >/dev/null
        "$lq" "$f16" "$f" "$t" >/dev/null 2>&1 ;;
      *) "$b/moe-mkmodel" --bench-model --type "$t" -o "$f" >/dev/null ;;
    esac
  fi
  echo "$f"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
for t in "${types[@]}"; do model_of "$t" >/dev/null; done
for r in $(seq "$reps"); do
  for t in "${types[@]}"; do
    f=$(model_of "$t")
    for i in "${!plist[@]}"; do
      np=${plist[$i]} n=1
      [ "$i" = 0 ] && n=$ng
      j=$(env "${moe_env[@]}" "$b/moe-bench" --model "$f" --threads "$threads" -p "$np" -n "$n" --reps 1 --bw-mib 256 --json 2>/dev/null)
      echo "$j" | field pp_tok_s >>"$work/$t.moe.pp$np"
      [ "$i" = 0 ] && echo "$j" | field tg_tok_s >>"$work/$t.moe.tg"
    done
    env "${ll_env[@]}" "$lb" -m "$f" -p "$nps" -n "$ng" -t "$threads" -r 1 -o jsonl 2>/dev/null >"$work/l.jsonl"
    for np in "${plist[@]}"; do
      grep "\"n_prompt\": *$np, *\"n_gen\": *0" "$work/l.jsonl" | sed -n 's/.*"avg_ts": *\([0-9.]*\).*/\1/p' >>"$work/$t.ll.pp$np"
    done
    grep "\"n_prompt\": *0, *\"n_gen\": *$ng" "$work/l.jsonl" | sed -n 's/.*"avg_ts": *\([0-9.]*\).*/\1/p' >>"$work/$t.ll.tg"
  done
  echo "run $r of $reps done" >&2
done
ratio() { paste "$1" "$2" | awk '{print $1 / $2}' | median; }
printf '%-8s' type
for np in "${plist[@]}"; do printf ' %10s %10s %7s' "moe pp$np" "llama pp" ratio; done
printf ' %10s %10s %7s\n' "moe tg$ng" "llama tg" ratio
for t in "${types[@]}"; do
  printf '%-8s' "$t"
  for np in "${plist[@]}"; do
    printf ' %10.1f %10.1f %7.2f' "$(median <"$work/$t.moe.pp$np")" "$(median <"$work/$t.ll.pp$np")" \
      "$(ratio "$work/$t.moe.pp$np" "$work/$t.ll.pp$np")"
  done
  printf ' %10.1f %10.1f %7.2f\n' "$(median <"$work/$t.moe.tg")" "$(median <"$work/$t.ll.tg")" "$(ratio "$work/$t.moe.tg" "$work/$t.ll.tg")"
done
echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), ${isa:-best ISA of each engine}, $threads threads," \
  "benchmark model, medians of $reps alternating runs; ratio = median of per-pair moe/llama.cpp)"
