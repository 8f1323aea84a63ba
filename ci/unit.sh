#!/usr/bin/env bash
# The tests that need no guest (seconds, not minutes): unit tests, the fuzzing loop against
# a fake target, minimization against fake oracles, the report parser's golden logs, the
# layering rule and the command line without guests. ci/test.sh runs these and everything
# that boots guests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p hotfuzz-vm --lib
cargo test -p hotfuzz-executor
cargo test -p hotfuzz --lib --bins \
  --test fuzz_fake --test minimize --test layering \
  --test report_golden --test report_big_log --test report_cli \
  --test prog_cli --test vm_cli --test syzkaller_golden
