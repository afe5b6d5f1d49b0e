#!/usr/bin/env bash
# Installs what ganeti_lv and its local cluster need on Debian 12 (as root):
# Debian packages, a virtual environment in .venv and the package itself.
# Sourced by demo.sh and test.sh; safe to run again (it skips what is there).
# Every step is checked explicitly: a caller's `source setup.sh || exit 1`
# turns `set -e` off for everything sourced, so it cannot be relied on here.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

APT_PACKAGES=(
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  openssh-server openssh-client busybox-static cpio libvirt-dev pkg-config
  gcc python3-dev python3-venv iproute2 zerofree e2fsprogs zstd gzip procps
  util-linux kmod
  python3-ganeti-rapi  # Ganeti's own RAPI client: the remote API tests drive it
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo ">>> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # a fresh machine's daily apt run may hold apt's locks for a while: wait for them
  # (the package lists' lock: tried again for 10 minutes; dpkg's: apt waits itself)
  updated=0
  for _ in $(seq 60); do
    if apt-get update -qq; then updated=1; break; fi
    sleep 10
  done
  if [ "$updated" -ne 1 ] ||
    ! apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "setup: installing the Debian packages failed" >&2
    return 1 2>/dev/null || exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo ">>> creating virtual environment in $VENV"
  if ! python3 -m venv "$VENV"; then
    echo "setup: creating the virtual environment failed" >&2
    return 1 2>/dev/null || exit 1
  fi
  "$VENV/bin/pip" install -q --upgrade pip 2>/dev/null || true
fi
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo ">>> installing ganeti_lv and its dependencies"
  # compat: the checkout goes on sys.path through a plain .pth entry; the
  # default import hook costs every gnt-lv start some 20 ms
  if ! out=$("$VENV/bin/pip" install -q -e "$ROOT[test]" --config-settings editable_mode=compat 2>&1) \
    || ! "$VENV/bin/python" -c 'import ganeti_lv.cli.main, libvirt, paramiko, tenacity, rich, cheroot, werkzeug, pytest' \
    || [ ! -x "$VENV/bin/ruff" ] || [ ! -x "$VENV/bin/mypy" ]; then
    printf '%s\n' "${out:-}" >&2
    echo "setup: installing ganeti_lv and its dependencies into $VENV failed" >&2
    return 1 2>/dev/null || exit 1
  fi
  printf '%s\n' "$out" | grep -v -e '^WARNING: Location' -e '^$' || true
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
