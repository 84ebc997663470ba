#!/usr/bin/env bash
# Speculative decoding measured (not part of the test suite: timings).
#
# 1. End to end (moe-bench --corpus C --speculate K): every passage of each
#    corpus generated -n tokens through the scheduler without and with
#    speculation, alternating, greedy and with seeded sampling, on one
#    machine (one), through two loopback nodes (cluster: experts 0-3 and
#    4-7, --node-threads each) and through the link emulator (link: the
#    coordinator and the nodes in two network namespaces joined by
#    tests/net/linkemu with --delay ms each way). moe-bench fails, and so
#    does this script, if a run with speculation gives other token ids than
#    without. The table has the medians, the ratio on/off, the guesses kept
#    and the tokens per step; then the issue's targets, met or not.
#    The benchmark model has random weights: it never repeats its input, and
#    its answers hardly repeat themselves, whatever the corpus. So the first
#    corpus runs once more with --repeat-penalty R (--stand-in R, default
#    0.8; "" for none), which favours the last 64 tokens: the answers fall
#    into loops the drafts find, a stand-in for a model that repeats.
# 2. The cost of verifying K guesses (--cost "0 2 4 8"): a generation step
#    that also verifies K guesses, all rejected (moe-bench --verify K), on
#    one machine and through the loopback cluster; a step that keeps a
#    guesses yields 1 + a tokens, so speculating pays when (1 + a) >
#    cost(K) / cost(0): the break-even kept guesses per step are printed.
#
#   deploy/bench-speculate.sh [--type Q4_0] [--reps 3] [--threads 2] [--node-threads 1]
#        [--k 8] [-n 64] [--passages N] [--setups "one cluster link"] [--delay 1] [--stand-in 0.8]
#        [--corpora "deploy/corpus/repetitive.txt deploy/corpus/routing.txt"] [--cost "0 2 4 8"]
#
# --passages N: the first N passages of each corpus only (a quicker run);
# --cost "": no verification cost; --setups without link: no root needed.
# Needs a build in build/ (and linkemu for link, root for its namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
type=Q4_0 reps=3 threads=2 node_threads=1 k=8 ng=64 passages=0 setups="one cluster link" delay=1
corpora="deploy/corpus/repetitive.txt deploy/corpus/routing.txt" cost_ks="0 2 4 8" stand_in=0.8
while [ $# -gt 0 ]; do
  case "$1" in
    --type) type=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --node-threads) node_threads=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    --passages) passages=$2; shift 2 ;;
    --setups) setups=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --corpora) corpora=$2; shift 2 ;;
    --cost) cost_ks=$2; shift 2 ;;
    --stand-in) stand_in=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) sed -n '2,32p' "$0" >&2; exit 2 ;;
  esac
done
b=$PWD/build
need="moe-bench moe-expert"
case " $setups " in *" link "*)
  need="$need linkemu"
  [ "$(id -u)" = 0 ] || { echo "the link setup needs root (ip netns, TAP devices); --setups \"one cluster\" does not" >&2; exit 2; } ;;
esac
for x in $need; do [ -x "$b/$x" ] || { echo "no $b/$x: build first" >&2; exit 2; }; done
. deploy/bench-lib.sh # $work, pids, field, median, bench_model, bench_nodes, bench_link_up/down
bench_model "$type"
cpu=$(lscpu | sed -n 's/^Model name: *//p')

# The corpora, cut to their first --passages passages (blank lines between);
# a name per run: the corpus's, and the stand-in's (the first corpus with
# the repetition penalty, its flags in $work/NAME.flags).
names=()
for c in $corpora; do
  name=$(basename "$c" .txt)
  names+=("$name")
  : >"$work/$name.flags"
  if [ "$passages" -gt 0 ]; then
    awk -v n="$passages" 'BEGIN {RS = ""; ORS = "\n\n"} NR <= n' "$c" >"$work/$name.txt"
  else
    cp "$c" "$work/$name.txt"
  fi
done
if [ -n "$stand_in" ]; then
  name="${names[0]}-rp$stand_in"
  cp "$work/${names[0]}.txt" "$work/$name.txt"
  echo "--repeat-penalty $stand_in" >"$work/$name.flags"
  names+=("$name")
fi

# One end-to-end run: setup, run name, then where it runs (a prefix such
# as "ip netns exec NS") and extra flags.
e2e() {
  local setup=$1 name=$2 pre=$3
  shift 3
  # shellcheck disable=SC2046 # the flags file holds words
  if ! $pre "$b/moe-bench" --model "$model" --threads "$threads" --corpus "$work/$name.txt" --speculate "$k" \
    -n "$ng" --reps "$reps" --json $(cat "$work/$name.flags") "$@" >>"$work/e2e-$setup-$name.json" \
    2>"$work/e2e.log"; then
    echo "FAILED: $setup, $name:" >&2
    tail -n 5 "$work/e2e.log" >&2
    exit 1
  fi
  echo "$setup $name done" >&2
}

cluster_yaml() { # the loopback nodes' cluster file
  cat >"$work/loop.yaml" <<YAML
model: $model
nodes:
  - name: spec-1
    endpoint: ${endpoints[0]}
    experts: 0-3
  - name: spec-2
    endpoint: ${endpoints[1]}
    experts: 4-7
YAML
}

loop_up=false
for setup in $setups; do
  for name in "${names[@]}"; do
    case $setup in
      one) e2e one "$name" "" ;;
      cluster)
        if ! $loop_up; then bench_nodes spec "$node_threads"; cluster_yaml; loop_up=true; fi
        e2e cluster "$name" "" --cluster "$work/loop.yaml" ;;
      link)
        bench_link_up "$delay" spec "$node_threads"
        e2e link "$name" "ip netns exec $nsc" --cluster "$work/cluster.yaml"
        bench_link_down ;;
      *) echo "unknown setup $setup (one, cluster, link)" >&2; exit 2 ;;
    esac
  done
done

# The verification cost, runs alternating so noise hits every setup alike.
if [ -n "$cost_ks" ]; then
  $loop_up || { bench_nodes spec "$node_threads"; cluster_yaml; loop_up=true; }
  read -r -a ks <<<"$cost_ks"
  for r in $(seq "$reps"); do
    for kk in "${ks[@]}"; do
      "$b/moe-bench" --model "$model" --threads "$threads" -p 16 -n 64 --verify "$kk" --reps 1 --json 2>/dev/null \
        >>"$work/one-$kk.json"
      "$b/moe-bench" --cluster "$work/loop.yaml" --threads "$threads" -p 16 -n 64 --verify "$kk" --reps 1 --json \
        2>/dev/null >>"$work/cluster-$kk.json"
    done
    echo "verification cost: run $r of $reps done" >&2
  done
fi

echo
echo "== speculative decoding end to end: moe-bench --corpus C --speculate $k, $ng tokens a prompt =="
printf '%-8s %-18s %-7s %10s %10s %7s %7s %10s %9s %7s\n' setup corpus way "off tok/s" "on tok/s" on/off "kept %" \
  kept/step tok/step "cpu x"
for setup in $setups; do
  for name in "${names[@]}"; do
    f="$work/e2e-$setup-$name.json"
    for way in greedy seeded; do
      printf '%-8s %-18s %-7s %10.1f %10.1f %6.3fx %6.1f%% %10.2f %9.2f %6.3fx\n' "$setup" "$name" "$way" \
        "$(field ${way}_off_tok_s <"$f")" "$(field ${way}_on_tok_s <"$f")" "$(field ${way}_ratio <"$f")" \
        "$(awk -v a="$(field ${way}_accept_rate <"$f")" 'BEGIN {print 100 * a}')" \
        "$(field ${way}_kept_per_step <"$f")" "$(field ${way}_tokens_per_step <"$f")" \
        "$(awk -v a="$(field ${way}_off_cpu_ms <"$f")" -v b="$(field ${way}_on_cpu_ms <"$f")" \
          'BEGIN {print (b > 0) ? a / b : 0}')"
    done
  done
done
echo "(token ids identical with and without speculation in every run: moe-bench checks it and would have failed;"
echo " tok/s: generated tokens after the first over their time, each corpus summed; medians of $reps repetitions,"
echo " off and on alternating per prompt; on/off: median of the repetitions' ratios; kept %: guesses kept of"
echo " proposed; kept/step: guesses kept per generation step; tok/step: tokens per step, 1 without speculation;"
echo " cpu x: the coordinator's CPU time per token off / on (medians), which pauses and other load move far less"
echo " than tok/s, but without the nodes' work and the waits on the wire: on one machine the whole cost)"
[ -z "$stand_in" ] || echo "(${names[0]}-rp$stand_in: ${names[0]} with --repeat-penalty $stand_in in both ways, which" \
  "favours the last 64 tokens: random weights then loop, a stand-in for a model that repeats; the other rows:" \
  "what the random-weight model does by itself)"

# The issue's targets (greedy: what repeats is the model's own greedy output;
# the 1.5x on every corpus but routing, the stand-in included).
echo
echo "== targets =="
echo "(an on/off away from 1 where kept/step is near 0 is the host's noise, not speculation: see cpu x)"
verdict() { awk -v x="$1" -v t="$2" 'BEGIN {print (x >= t) ? "met" : "NOT met"}'; }
for setup in $setups; do
  for name in "${names[@]}"; do
    f="$work/e2e-$setup-$name.json"
    case $name in
      routing)
        for way in greedy seeded; do
          x=$(field ${way}_ratio <"$f")
          echo "$setup, routing, $way: on/off ${x}x >= 0.95: $(verdict "$x" 0.95)"
        done ;;
      *)
        x=$(field greedy_ratio <"$f")
        echo "$setup, $name, greedy: on/off ${x}x >= 1.5: $(verdict "$x" 1.5)" ;;
    esac
  done
done
if [[ " $setups " == *" one "* && " $setups " == *" cluster "* ]]; then
  for name in "${names[@]}"; do
    x=$(awk -v c="$(field greedy_on_tok_s <"$work/e2e-cluster-$name.json")" \
      -v o="$(field greedy_on_tok_s <"$work/e2e-one-$name.json")" 'BEGIN {printf "%.3f", c / o}')
    echo "cluster / one with speculation, $name, greedy: ${x}x >= 0.9: $(verdict "$x" 0.9)"
  done
fi

if [ -n "$cost_ks" ]; then
  echo
  echo "== verification cost: a step verifying K rejected guesses (moe-bench -p 16 -n 64 --verify K) =="
  printf '%-8s %4s %12s %12s %16s\n' setup K "steps/s" "step cost" "break-even kept"
  for setup in one cluster; do
    for kk in "${ks[@]}"; do
      tg=$(field tg_tok_s <"$work/$setup-$kk.json" | median)
      # Pairwise per run against the first K, then the median.
      c=$(paste <(field tg_tok_s <"$work/$setup-${ks[0]}.json") <(field tg_tok_s <"$work/$setup-$kk.json") |
        awk '{print $1 / $2}' | median)
      printf '%-8s %4s %12.1f %12.2f %16.2f\n' "$setup" "$kk" "$tg" "$c" "$(awk -v c="$c" 'BEGIN {print c - 1}')"
    done
  done
  echo "(step cost relative to K=${ks[0]}; medians of $reps alternating runs)"
fi
echo
echo "($type benchmark model (random weights); coordinator --threads $threads; nodes: 2 x --threads $node_threads," \
  "experts 0-3 and 4-7; link: linkemu $delay ms each way, no jitter or loss; $cpu)"
