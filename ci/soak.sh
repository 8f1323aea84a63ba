#!/usr/bin/env bash
# The night with faults: a campaign runs for DURATION while a fault injector beside it kills
# QEMU, stalls it (SIGSTOP: the agent connection goes quiet until hotfuzz gives up on it),
# fills the report store's disk for a while, and kill -9's hotfuzz and starts it again.
# Then it checks what an unattended night must not do, and prints the figures:
#   - no harness crash (a panic, or an exit nobody asked for),
#   - every report on disk before a fault still there and complete afterwards,
#   - every corpus entry intact (none lost over a kill -9, none quarantined),
#   - infrastructure failures counted, never filed as kernel bugs,
#   - no process and no VM directory left behind.
#
#   ci/soak.sh DURATION [hotfuzz fuzz flags...]     e.g. ci/soak.sh 2h, ci/soak.sh 4m (CI)
#
# Work directory, store and logs under ${SOAK_DIR:-/tmp/hotfuzz-soak} (the store on a small
# tmpfs when mounting one is allowed; otherwise the disk-full fault is skipped and said so).
# HOTFUZZ=path picks the binary (default: the release build, built if needed). FAULT_EVERY
# (seconds, default 30) is the mean time between faults. Exit status 0 when every check held.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
[ $# -ge 1 ] || { echo "usage: $0 DURATION [hotfuzz fuzz flags...]" >&2; exit 2; }
duration=$1
shift
secs=$(awk -v d="$duration" 'BEGIN {
  n = d + 0; u = substr(d, length(d)); m = (u == "h") ? 3600 : (u == "m") ? 60 : 1; print n * m }')
out=${SOAK_DIR:-/tmp/hotfuzz-soak}
every=${FAULT_EVERY:-30}
if [ -z "${HOTFUZZ:-}" ]; then
  cargo build --release -q -p hotfuzz || exit 2
  HOTFUZZ=$PWD/target/release/hotfuzz
fi

mountpoint -q "$out/reports" 2>/dev/null && umount "$out/reports"
rm -rf "$out"
mkdir -p "$out/reports" "$out/tmp" "$out/snap"
disk_fault=1
if ! mount -t tmpfs -o size=48m,mode=0700 tmpfs "$out/reports" 2>/dev/null; then
  disk_fault=0
  echo "soak: cannot mount a tmpfs for the store: the disk-full fault is skipped"
fi
work=$out/work
export TMPDIR=$out/tmp

declare -A faults=([qemu_kill]=0 [qemu_stall]=0 [disk_full]=0 [harness_kill]=0)
crashes=0 starts=0 lost_reports=0 lost_entries=0 hpid=
seen_pids=$out/pids
: >"$seen_pids"
: >"$out/snap/corpus"

start_harness() {
  starts=$((starts + 1))
  HOTFUZZ_LOG=info,syzlang_parser=off "$HOTFUZZ" fuzz --duration forever --workdir "$work" \
    --reports "$out/reports" --bugzoo warn_reonline "$@" \
    >"$out/harness.$starts.out" 2>"$out/harness.$starts.err" &
  hpid=$!
}

# Every process below hotfuzz, remembered so that the end can check none survived.
remember_descendants() {
  local frontier=("$hpid") p c
  while [ ${#frontier[@]} -gt 0 ]; do
    p=${frontier[0]}
    frontier=("${frontier[@]:1}")
    for c in $(pgrep -P "$p" 2>/dev/null); do
      echo "$c $(cat /proc/"$c"/comm 2>/dev/null)" >>"$seen_pids"
      frontier+=("$c")
    done
  done
}

# The reports complete on disk now: their directories and the files each must have.
snapshot_reports() {
  for m in "$out"/reports/*/meta.yaml; do
    [ -f "$m" ] || continue
    local d=${m%/meta.yaml}
    [ -s "$d/report.txt" ] && [ -s "$d/excerpt.log" ] && echo "${d##*/}"
  done | sort -u >>"$out/snap/reports"
  sort -u -o "$out/snap/reports" "$out/snap/reports"
}

# The corpus entries on disk now (LibAFL's `.NAME.prog` lock files are not entries), added
# to every entry seen so far: each of them must still be there when the soak ends.
corpus_entries() {
  find "$work/corpus" "$work/corpus.resume" -maxdepth 1 -name '*.prog' ! -name '.*' \
    -printf '%f\n' 2>/dev/null | sort -u
}
snapshot_corpus() {
  corpus_entries >>"$out/snap/corpus"
  sort -u -o "$out/snap/corpus" "$out/snap/corpus"
}

# hotfuzz ended without being told to: a crash.
check_alive() {
  if ! kill -0 "$hpid" 2>/dev/null; then
    wait "$hpid"
    echo "soak: hotfuzz exited on its own (status $?; see $out/harness.$starts.err)"
    crashes=$((crashes + 1))
    start_harness "$@"
  fi
}

qemu_of_harness() { pgrep -P "$hpid" 2>/dev/null | while read -r c; do
  [[ "$(cat /proc/"$c"/comm 2>/dev/null)" == qemu* ]] && echo "$c"; done | head -n 1; }

start_harness "$@"
end=$(($(date +%s) + secs))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep $((every / 2 + RANDOM % (every + 1)))
  check_alive "$@"
  remember_descendants
  snapshot_reports
  snapshot_corpus
  case $((RANDOM % 4)) in
    0)
      q=$(qemu_of_harness)
      [ -n "$q" ] && kill -9 "$q" && faults[qemu_kill]=$((faults[qemu_kill] + 1))
      ;;
    1)
      q=$(qemu_of_harness)
      if [ -n "$q" ]; then
        kill -STOP "$q" && faults[qemu_stall]=$((faults[qemu_stall] + 1))
        sleep 40
        kill -CONT "$q" 2>/dev/null
      fi
      ;;
    2)
      if [ "$disk_fault" = 1 ]; then
        head -c 64M /dev/zero >"$out/reports/.filler" 2>/dev/null
        faults[disk_full]=$((faults[disk_full] + 1))
        sleep 45
        rm -f "$out/reports/.filler"
      fi
      ;;
    3)
      snapshot_corpus
      kill -9 "$hpid"
      wait "$hpid" 2>/dev/null
      faults[harness_kill]=$((faults[harness_kill] + 1))
      sleep 2
      start_harness "$@"
      ;;
  esac
done
check_alive "$@"
remember_descendants
snapshot_reports
snapshot_corpus
kill -INT "$hpid"
for _ in $(seq 1 120); do kill -0 "$hpid" 2>/dev/null || break; sleep 1; done
if kill -0 "$hpid" 2>/dev/null; then
  echo "soak: hotfuzz did not stop within 2 minutes of SIGINT"
  crashes=$((crashes + 1))
  kill -9 "$hpid"
fi
wait "$hpid"
status=$?
[ "$status" -eq 0 ] || { echo "soak: the last hotfuzz exited with $status"; crashes=$((crashes + 1)); }
sleep 3

panics=$(cat "$out"/harness.*.err | grep -c 'panicked at' || true)
crashes=$((crashes + panics))
while read -r d; do
  [ -n "$d" ] || continue
  if ! [ -s "$out/reports/$d/meta.yaml" ] || ! [ -s "$out/reports/$d/report.txt" ]; then
    echo "soak: report $d lost or incomplete"
    lost_reports=$((lost_reports + 1))
  fi
done <"$out/snap/reports"
# A stopped campaign has put every resumed entry back into its corpus.
lost_entries=$(comm -23 "$out/snap/corpus" <(corpus_entries) | wc -l)
seen_entries=$(wc -l <"$out/snap/corpus")
quarantined=$(find "$work/corpus.quarantine" -maxdepth 1 -type f 2>/dev/null | wc -l)
lost_entries=$((lost_entries + quarantined))
infra_filed=$(grep -lE '^title: .*(QEMU|lost|infrastructure|no output|silen)' "$out"/reports/*/meta.yaml 2>/dev/null | wc -l)
left_procs=$(sort -u "$seen_pids" | while read -r p c; do
  [ -d "/proc/$p" ] && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$c" ] &&
    ! grep -q '^State:.Z' "/proc/$p/status" 2>/dev/null && echo "$p $c"; done | wc -l)
left_dirs=$(find "$out/tmp" "$work/vms" -maxdepth 1 -name 'hotfuzz-vm-*' 2>/dev/null | wc -l)
left_new=$(find "$out/reports" -maxdepth 1 -name '.new-*' 2>/dev/null | wc -l)
last=$(tail -n 1 "$work/stats.jsonl" 2>/dev/null)
num() { sed -nE "s/.*\"$1\":([0-9]+).*/\1/p" <<<"$last"; }
reports_kept=$(find "$out/reports" -mindepth 1 -maxdepth 1 -type d ! -name '.*' 2>/dev/null | wc -l)

echo "soak: $duration, $starts starts of hotfuzz"
echo "  faults: qemu killed ${faults[qemu_kill]}, qemu stalled ${faults[qemu_stall]}," \
  "disk full ${faults[disk_full]}, hotfuzz kill -9 ${faults[harness_kill]}"
echo "  reports kept $reports_kept (lost $lost_reports), corpus entries seen $seen_entries," \
  "lost $lost_entries (quarantined $quarantined), harness crashes $crashes"
echo "  last stats: execs $(num execs), infra failures $(num infra_errors)," \
  "unfiled $(num unfiled), filing failures $(num filing_failures)"
echo "  infrastructure failures filed as bugs $infra_filed, processes left $left_procs," \
  "VM directories left $left_dirs, .new-* left $left_new"
mountpoint -q "$out/reports" && { cp -a "$out/reports" "$out/reports.kept"; umount "$out/reports"; }
[ "$lost_reports" -eq 0 ] && [ "$lost_entries" -eq 0 ] && [ "$crashes" -eq 0 ] &&
  [ "$infra_filed" -eq 0 ] && [ "$left_procs" -eq 0 ] && [ "$left_dirs" -eq 0 ] &&
  [ "$left_new" -eq 0 ]
