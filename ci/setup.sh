#!/usr/bin/env bash
# Installs the Debian 12 packages hotfuzz needs to build and to run guests. As root it runs
# apt-get itself; otherwise it prints the exact command and fails. libxml2-utils (xmllint) and
# chromium are for the nightly tests: the JUnit file is checked against its schema and the
# night's HTML page is rendered headless.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_packages ci/setup.sh \
  build-essential pkg-config libssl-dev zlib1g-dev ca-certificates \
  qemu-system-x86 qemu-system-ppc busybox-static dropbear-bin \
  openssh-client cpio qemu-utils shellcheck \
  git make bc flex bison libelf-dev ccache xz-utils gcc-powerpc64le-linux-gnu \
  libxml2-utils chromium

if ! command -v cargo >/dev/null 2>&1; then
  echo "hotfuzz needs Rust (cargo 1.93.1 or newer; LibAFL 0.16 needs it): https://rustup.rs" >&2
  exit 1
fi
