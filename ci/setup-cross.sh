#!/usr/bin/env bash
# Installs what it takes to build the ppc64le executor (for ppc64le powernv guests):
# Debian's powerpc64le cross gcc and libc, and Rust's powerpc64le-unknown-linux-gnu target.
# The x86_64 path never needs this. Rebuild hotfuzz afterwards (cargo build picks it up).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_packages ci/setup-cross.sh gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross
if ! rustup target list --installed 2>/dev/null | grep -qx powerpc64le-unknown-linux-gnu; then
  rustup target add powerpc64le-unknown-linux-gnu
fi
# The build script that looks for this toolchain does not rerun by itself when it appears.
touch "$(dirname "$0")/../harness/build.rs"
echo "ci/setup-cross.sh: ppc64le cross toolchain ready"
