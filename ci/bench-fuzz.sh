#!/usr/bin/env bash
# Fuzzing benchmark (BENCHMARKS.md): runs short campaigns and prints, per run, executions per
# second, the time from start to the first report of each title, the wall-time breakdown,
# the time to the first program, and the guest boot and snapshot-restore costs.
#
#   ci/bench-fuzz.sh RUNS DURATION [hotfuzz fuzz flags...]
#   ci/bench-fuzz.sh 3 3m --bugzoo warn_reonline,stuck_offline --no-seeds
#
# Each run gets seed 1, 2, ... and a fresh work directory and report store under
# ${BENCH_DIR:-/tmp/hotfuzz-bench}. Uses the release binary (built if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=$1 duration=$2
shift 2
out=${BENCH_DIR:-/tmp/hotfuzz-bench}
cargo build --release -q -p hotfuzz
bin=target/release/hotfuzz
median() { sort -g | awk '{a[NR]=$1} END {if (NR) printf "%s", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
minmax() { sort -g | awk 'NR==1{min=$1} {max=$1} END {if (NR) printf "%s/%s", min, max}'; }
rm -rf "$out"
mkdir -p "$out"
: >"$out/rates" ; : >"$out/finds" ; : >"$out/restarts" ; : >"$out/resets"
for i in $(seq 1 "$runs"); do
  d="$out/run$i"
  start=$(date +%s.%N)
  HOTFUZZ_LOG=info,syzlang_parser=off "$bin" fuzz --duration "$duration" --seed "$i" --workdir "$d/work" \
    --reports "$d/reports" "$@" >"$d.out" 2>"$d.err" || true
  last=$(tail -n 1 "$d/work/stats.jsonl")
  execs=$(sed -E 's/.*"execs":([0-9]+).*/\1/' <<<"$last")
  elapsed=$(sed -E 's/.*"elapsed_s":([0-9]+).*/\1/' <<<"$last")
  rate=$(awk -v e="$execs" -v t="$elapsed" 'BEGIN {printf "%.3f", (t ? e / t : 0)}')
  echo "$rate" >>"$out/rates"
  for meta in "$d"/reports/*/meta.yaml; do
    [ -f "$meta" ] || continue
    t=$(sed -nE "s/^title: '?([^']*)'?$/\1/p" "$meta")
    first=$(sed -nE "s/^first_seen: '?([^']*)'?$/\1/p" "$meta")
    secs=$(awk -v a="$(date -d "$first" +%s)" -v b="$start" 'BEGIN {printf "%.0f", a - b}')
    printf '%s\t%s\n' "$t" "$secs" >>"$out/finds"
    echo "  run $i: first '$t' after ${secs}s"
  done
  sed -nE 's/.*ready for programs in ([0-9.]+)(m?s).*/\1 \2/p' "$d.err" |
    awk '{print ($2 == "ms") ? $1 / 1000 : $1}' >>"$out/restarts"
  sed -nE 's/.*restored in ([0-9.]+)(m?s).*/\1 \2/p' "$d.err" |
    awk '{print ($2 == "ms") ? $1 / 1000 : $1}' >>"$out/resets"
  echo "run $i: $execs execs in ${elapsed}s = $rate/s"
  grep -E '^  (time|first program|guests):' "$d.out" | sed "s/^ /  run $i:/" || true
done
echo "execs/s:        median $(median <"$out/rates")  min/max $(minmax <"$out/rates")  ($runs runs)"
cut -f1 "$out/finds" | sort -u | while IFS= read -r t; do
  awk -F'\t' -v t="$t" '$1 == t {print $2}' "$out/finds" >"$out/find"
  echo "first '$t' (s): median $(median <"$out/find")  min/max $(minmax <"$out/find")  (in $(wc -l <"$out/find") of $runs runs)"
done
echo "boot (s):       median $(median <"$out/restarts")  min/max $(minmax <"$out/restarts")  ($(wc -l <"$out/restarts") boots)"
echo "restore (s):    median $(median <"$out/resets")  min/max $(minmax <"$out/resets")  ($(wc -l <"$out/resets") restores)"
