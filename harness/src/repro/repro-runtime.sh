# The runtime of a hotfuzz repro.sh (appended to the generated settings; see script.rs).
# It boots the guest with hotfuzz's exact QEMU arguments, runs the programs one after another
# with the executor's host-side driver (the same code hotfuzz runs programs with: guest
# operations by the executor in the guest, host operations over QMP), and checks the console
# for the bug.
#
# The settings define: TITLE, DETECT (array of grep -E patterns that must all match the
# console after the program started), QEMU_ARGS (array; @DIR@ and @INITRD@ are filled in),
# VMEM, PORTS, NUMA, PROGRAM_JSONS (array, in order), and the defaults of QEMU, KERNEL,
# INITRD, EXECUTOR,
# RUNS, TIMEOUT, SETTLE, REPRO_LOGS.
# shellcheck shell=bash
# shellcheck disable=SC2154

DIR=
QEMU_PID=
LOG_OUT=

say() {
  printf '%s\n' "$*"
  if [[ -n $LOG_OUT ]]; then printf '%s\n' "$*" >>"$LOG_OUT"; fi
}

die() {
  say "repro.sh: $*" >&2
  exit 2
}

need() {
  command -v -- "$1" >/dev/null 2>&1 || die "needs $1 ($2)"
}

stop_guest() {
  if [[ -n $QEMU_PID ]]; then
    kill -KILL "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
  fi
  QEMU_PID=
}

cleanup() {
  stop_guest
  if [[ -n $DIR ]]; then rm -rf -- "$DIR"; fi
}

# boot LOGS: starts QEMU with the console in LOGS/console.log.
boot() {
  local logs=$1 a args=()
  for a in "${QEMU_ARGS[@]}"; do
    a=${a//@DIR@/$DIR}
    a=${a//@INITRD@/$INITRD}
    a=${a//@KERNEL@/$KERNEL}
    args+=("$a")
  done
  rm -f -- "$DIR/qmp.sock" "$DIR/agent.sock"
  if ((PDEATHSIG)); then
    setpriv --pdeathsig KILL -- "$QEMU" "${args[@]}" </dev/null >"$logs/console.log" 2>"$logs/qemu.log" &
  else
    "$QEMU" "${args[@]}" </dev/null >"$logs/console.log" 2>"$logs/qemu.log" &
  fi
  QEMU_PID=$!
}

# check LOGS MARK: 0 when every DETECT pattern matches the console after line MARK.
check() {
  local logs=$1 mark=$2 re
  for re in "${DETECT[@]}"; do
    tail -n +"$((mark + 1))" -- "$logs/console.log" | grep -Eq -- "$re" || return 1
  done
  return 0
}

# one_run N: 0 reproduced, 1 not, 2 the run could not happen.
one_run() {
  local n=$1 logs mark st waited i out
  logs=$LOG_ROOT/run$n
  mkdir -p -- "$logs" || return 2
  say "=== run $n of $RUNS (logs: $logs)"
  boot "$logs"
  mark=
  for ((i = 0; i < ${#PROGRAM_JSONS[@]}; i++)); do
    out=$logs/program$((i + 1)).log
    ((${#PROGRAM_JSONS[@]} > 1)) && say "  program $((i + 1)) of ${#PROGRAM_JSONS[@]}"
    # The driver waits for the guest's agent (the guest is booting), then runs the program.
    "$EXECUTOR" drive --agent "$DIR/agent.sock" --qmp "$DIR/qmp.sock" --program "$DIR/program$i.json" \
      ${VMEM:+--vmem "$VMEM"} --ports "$PORTS" ${NUMA:+--numa} --ready-timeout "$TIMEOUT" \
      >"$out" 2>&1 &
    local drv=$!
    if [[ -z $mark ]]; then
      # Everything the console printed before the first program's first operation is the boot.
      while kill -0 "$drv" 2>/dev/null && ! grep -qs '^\[t[0-9]*\] #' "$out"; do
        sleep 0.05
      done
      mark=$(wc -l <"$logs/console.log")
    fi
    wait "$drv"
    st=$?
    sed 's/^/  /' "$out"
    [[ -f $LOG_OUT ]] && sed 's/^/  /' "$out" >>"$LOG_OUT"
    if ((st == 2)); then
      stop_guest
      return 2
    fi
  done
  # Let the kernel finish what it prints (a hung task is only reported after its timeout).
  waited=0
  while ((waited < SETTLE * 10)) && ! check "$logs" "$mark"; do
    kill -0 "$QEMU_PID" 2>/dev/null || break
    sleep 0.1
    waited=$((waited + 1))
  done
  if check "$logs" "$mark"; then
    stop_guest
    say "REPRODUCED: $TITLE"
    return 0
  fi
  stop_guest
  say "not reproduced in run $n (console: $logs/console.log)"
  return 1
}

main() {
  local n st crashes=0 runs=0
  ((BASH_VERSINFO[0] >= 4)) || die "needs bash 4 or newer"
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds, not '$TIMEOUT'"
  [[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a number of seconds, not '$SETTLE'"
  command -v -- "$QEMU" >/dev/null 2>&1 || die "QEMU binary $QEMU not found (set QEMU=/path/to/qemu-system-...)"
  [[ -f $KERNEL && -r $KERNEL ]] || die "kernel $KERNEL not found (set KERNEL=/path/to/the/kernel)"
  [[ -f $INITRD && -r $INITRD ]] || die "guest image $INITRD not found (set INITRD=/path/to/image.cpio)"
  [[ -x $EXECUTOR ]] || die "hotfuzz-executor $EXECUTOR not found (set EXECUTOR=/path/to/hotfuzz-executor)"
  need grep "grep"
  need mktemp "coreutils"
  PDEATHSIG=0
  if setpriv --help 2>&1 | grep -q -- --pdeathsig; then PDEATHSIG=1; fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/repro.XXXXXX") || die "cannot create a temporary directory"
  chmod 700 -- "$DIR"
  local i
  for ((i = 0; i < ${#PROGRAM_JSONS[@]}; i++)); do
    printf '%s\n' "${PROGRAM_JSONS[i]}" >"$DIR/program$i.json"
  done
  LOG_ROOT=$REPRO_LOGS/$(date +%Y%m%d-%H%M%S)-$$
  mkdir -p -- "$LOG_ROOT" || die "cannot create $LOG_ROOT"
  LOG_OUT=$LOG_ROOT/output.log
  : >"$LOG_OUT"
  say "repro.sh: $TITLE"
  say "kernel $KERNEL, guest image $INITRD, $RUNS run(s), logs in $LOG_ROOT"
  for ((n = 1; n <= RUNS; n++)); do
    one_run "$n"
    st=$?
    case $st in
    0)
      crashes=$((crashes + 1))
      runs=$((runs + 1))
      ;;
    1) runs=$((runs + 1)) ;;
    *)
      say "run $n: the guest could not run the program"
      ((crashes > 0)) && break
      exit 2
      ;;
    esac
  done
  say "reproduced in $crashes/$runs runs: $TITLE"
  ((crashes > 0)) && exit 0
  exit 1
}

main "$@"
