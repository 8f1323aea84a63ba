# shellcheck shell=bash
# Shared by the ci/ scripts: install Debian packages as root, or print the command.
# usage: ensure_packages SCRIPT_NAME PKG...
ensure_packages() {
  local who=$1
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "$who: installing ${missing[*]}"
    # A mirror that is mid-sync fails one index; apt keeps the rest, so go on.
    apt-get update || echo "$who: apt-get update reported errors; continuing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    # Installing can remove a package that was there: a machine with QEMU 10 from
    # bookworm-backports loses qemu-utils when qemu-system-x86 7.2 comes in (they conflict).
    # Install whatever is missing now, once, with the versions that fit together.
    local gone=()
    for p in "$@"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || gone+=("$p")
    done
    if [ ${#gone[@]} -ne 0 ]; then
      echo "$who: installing ${gone[*]} again (removed by the install above)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${gone[@]}"
    fi
  else
    echo "hotfuzz needs packages; run:"
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    return 1
  fi
}
