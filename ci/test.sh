#!/usr/bin/env bash
# The test command: set-up, formatting and lint checks, then every test (unit tests and
# integration tests that boot real guests under TCG).
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh
shellcheck -S warning -x -P ci ci/*.sh harness/src/repro/repro-runtime.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# A short night with faults (QEMU killed and stopped, a full report disk, hotfuzz killed
# with -9 and started again) on the debug binary the tests built: nothing lost, nothing
# leaked, no infrastructure failure filed (see ci/soak.sh; long soaks are run by hand).
HOTFUZZ=$PWD/target/debug/hotfuzz FAULT_EVERY=20 ci/soak.sh 4m
