#!/usr/bin/env bash
# Installs the Debian 12 packages hotfuzz needs to build and to run guests. As root it runs
# apt-get itself; otherwise it prints the exact command and fails.
set -euo pipefail

PKGS=(
  # building hotfuzz (libssh2 and OpenSSL bindings)
  build-essential pkg-config libssl-dev zlib1g-dev ca-certificates
  # guests
  qemu-system-x86 qemu-system-ppc busybox-static dropbear-bin
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "ci/setup.sh: installing ${missing[*]}"
    # A mirror that is mid-sync fails one index; apt keeps the rest, so go on.
    apt-get update || echo "ci/setup.sh: apt-get update reported errors; continuing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "hotfuzz needs packages; run:"
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "hotfuzz needs Rust (cargo 1.85 or newer): https://rustup.rs" >&2
  exit 1
fi
