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
