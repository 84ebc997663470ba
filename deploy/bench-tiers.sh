#!/usr/bin/env bash
# More model than memory: generation speed with the expert budget at 50% and
# 25% of the experts against the unlimited run, warm (page cache kept) and
# cold (the file dropped from the page cache first, expert reads kept out of
# it: every miss reads the disk), per read-ahead predictor; optionally
# llama.cpp's llama-bench on the same file, capped by a memory cgroup to the
# peak RSS moe-bench had at each budget (not part of the test suite: timings).
#
#   deploy/bench-tiers.sh [--model FILE] [--threads 2] [-n 64] [--reps 3]
#                         [--pcts "50 25"] [--prefetch "none router transitions"]
#                         [--llamacpp DIR] [--out FILE.jsonl]
#
# Without --model: a generated model four times the benchmark model (16
# layers x 16 experts of the benchmark shape, Q4_0, router skew 4: uneven
# routing as real models have), about 1.6 GB, in the cache folder. Cold runs
# and the cgroup need root (drop_caches, /sys/fs/cgroup). Decoding only
# (-p 1): every step is one token, as when chatting.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 ng=64 reps=3 model="" llama="" out="" pcts="50 25" prefetches="none router transitions"
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --pcts) pcts=$2; shift 2 ;;
    --prefetch) prefetches=$2; shift 2 ;;
    --llamacpp) llama=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
b=build
[ -x $b/moe-bench ] || { echo "build first: bash deploy/build.sh build" >&2; exit 2; }
cache=${MC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-cluster}
mkdir -p "$cache"
if [ -z "$model" ]; then
  model=$cache/tiers-1024x3584x16x16-q4_0-skew4.gguf
  [ -f "$model" ] || $b/moe-mkmodel -o "$model" --bench-model --layers 16 --experts 16 --router-skew 4 >&2
fi
out=${out:-$(mktemp /tmp/bench-tiers.XXXXXX.jsonl)}
: > "$out"
root=0; [ "$(id -u)" = 0 ] && root=1
drop() { sync; [ $root = 1 ] && echo 3 > /proc/sys/vm/drop_caches || true; }

run() { # label, moe-bench flags...
  local label=$1; shift
  local line
  line=$($b/moe-bench --model "$model" --threads "$threads" -p 1 -n "$ng" --reps "$reps" --bw-mib 256 --json "$@")
  echo "{\"label\":\"$label\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"bench\":$line}" >> "$out"
  echo "$label: $line" >&2
}

run unlimited-warm
experts_mb=$(tail -1 "$out" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bench"]["experts_mb"]))')
for pct in $pcts; do
  mb=$((experts_mb * pct / 100))
  for pf in $prefetches; do
    run "p$pct-warm-$pf" --mem-limit $mb --mem-prefetch "$pf"
    drop
    run "p$pct-cold-$pf" --mem-limit $mb --mem-prefetch "$pf" --cold
  done
done

# cgroup CAP_BYTES cmd...: cmd in a fresh memory cgroup capped at CAP_BYTES
# (v1 memory.limit_in_bytes, else v2 memory.max); page cache counts in it.
cgroup() {
  local cap=$1 cg; shift
  if [ -d /sys/fs/cgroup/memory ]; then
    cg=/sys/fs/cgroup/memory/mc-bench-tiers-$$; mkdir -p $cg; echo "$cap" > $cg/memory.limit_in_bytes
  else
    cg=/sys/fs/cgroup/mc-bench-tiers-$$; mkdir -p $cg; echo "$cap" > $cg/memory.max
  fi
  local rc=0
  bash -c 'echo $$ > "$0/cgroup.procs"; shift; exec "$@"' "$cg" _ "$@" || rc=$?
  rmdir $cg 2>/dev/null || true
  return $rc
}

if [ -n "$llama" ]; then
  lb=$llama/build/bin/llama-bench
  [ -x "$lb" ] || { echo "no $lb" >&2; exit 2; }
  lrun() { # label, memory cap in bytes (0: none)
    local label=$1 cap=$2 line
    local cmd=("$lb" -m "$model" -p 0 -n "$ng" -t "$threads" -r "$reps" -o json)
    if [ "$cap" = 0 ]; then line=$("${cmd[@]}" 2>/dev/null) || line=""
    else line=$(cgroup "$cap" "${cmd[@]}" 2>/dev/null) || line=""; fi
    line=$(echo "$line" | python3 -c 'import json,sys
try:
    d = json.load(sys.stdin)[0]; print(json.dumps({"tg_tok_s": d["avg_ts"], "stddev": d["stddev_ts"]}))
except Exception: print(json.dumps({"tg_tok_s": 0, "failed": "killed or no output (out of memory in the cgroup?)"}))')
    echo "{\"label\":\"$label\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"llama\":$line}" >> "$out"
    echo "$label: $line" >&2
  }
  lrun llama-unlimited 0
  for pct in $pcts; do
    # Both capped to the total memory moe-bench needed at this budget (its
    # peak RSS and 64 MiB for the page cache's pages in flight), cold.
    mb=$((experts_mb * pct / 100))
    cap=$(python3 -c "
import json
for l in open('$out'):
    d = json.loads(l)
    if d['label'] == 'p$pct-warm-${prefetches%% *}': print(int((d['bench']['peak_rss_mb'] + 64) * 1048576))")
    drop
    line=$(cgroup "$cap" $b/moe-bench --model "$model" --threads "$threads" -p 1 -n "$ng" --reps "$reps" --bw-mib 256 \
      --json --mem-limit $mb)
    echo "{\"label\":\"p$pct-capped-ours\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"bench\":$line}" >> "$out"
    echo "p$pct-capped-ours: $line" >&2
    drop
    lrun "llama-p$pct-capped" "$cap"
  done
fi

python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = next(r["bench"]["tg_tok_s"] for r in rows if r["label"] == "unlimited-warm")
print("| run | tok/s | vs unlimited | hit rate | MiB read/token | stall ms/token | router hit | transitions hit | peak RSS MiB | load |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "bench" in r:
        b = r["bench"]
        toks = (b["reps"] + 1) * b["tg_tokens"] + (b["reps"] + 1) * b["pp_tokens"]
        print("| %s | %.2f | %.2f | %s | %s | %s | %s | %s | %.0f | %s |" % (
            r["label"], b["tg_tok_s"], b["tg_tok_s"] / base,
            "%.1f%%" % (100 * b["hit_rate"]) if "hit_rate" in b else "",
            "%.1f" % (b["mb_read"] / toks) if "mb_read" in b else "",
            "%.1f" % b["stall_ms_per_token"] if "stall_ms_per_token" in b else "",
            "%.1f%%" % (100 * b["pred_router_hit"]) if "pred_router_hit" in b else "",
            "%.1f%%" % (100 * b["pred_transitions_hit"]) if "pred_transitions_hit" in b else "",
            b["peak_rss_mb"], r["load"]))
    else:
        l = r["llama"]
        print("| %s | %.2f | %.2f | | | | | | %s | %s |" % (r["label"], l["tg_tok_s"], l["tg_tok_s"] / base,
              l.get("failed", ""), r["load"]))
EOF
echo "raw results: $out" >&2
