#!/usr/bin/env bash
# Builds a Debian 12 box for the Vagrant cluster (vagrant-libvirt provider)
# from Debian's packages, so the nodes need no network beyond the cluster's:
#
# - a root file system made by mmdebstrap from the Debian mirror apt on this
#   machine already uses, with a kernel, sshd, sudo, systemd-networkd (DHCP on
#   the first interface, vagrant's management network) and every package the
#   provisioning scripts install (read from ../provision/*.sh);
# - the `vagrant` user with Vagrant's insecure public key (taken from the
#   installed vagrant package) and passwordless sudo;
# - ganeti_lv's Python dependencies as wheels in /var/cache/ganeti-lv/wheels,
#   already installed in /opt/ganeti_lv-venv, and /etc/pip.conf pointing pip
#   there (no index), so provisioning installs ganeti_lv offline;
# - the kernel package under the test guest's cache directory, so the
#   provisioning builds the test guest without downloading it;
# - qemu from bookworm-backports (--qemu backports, the default): Debian 12's
#   qemu 7.2 loses guest memory writes in live migrations under TCG (see
#   "Guest safety under TCG migration" in the top README), and nodes without
#   KVM run their guests under TCG; --qemu system keeps Debian 12's qemu;
# - GRUB (BIOS) on an MBR disk, the file system written with mke2fs -d and
#   GRUB's images with grub_mbr.py: no loop mount, no device mapper;
# - packed as box.img (sparse, compressed qcow2) + metadata.json + Vagrantfile
#   and added with `vagrant box add --name NAME` (pack.sh packs it).
#
# Usage (as root): vagrant/box/build.sh [--name NAME] [--out DIR]
#   [--size GIB] [--qemu backports|system] [--no-add] [--keep-rootfs]
#   vagrant/box/build.sh [--qemu ...] --print-packages   (the package list,
#   as given to apt: NAME or NAME/SUITE; nothing built)
# See vagrant/README.md, "Building the box".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PROVISION_DIR="${PROVISION_DIR:-$HERE/../provision}"
NAME=ganeti-lv/bookworm
OUT="$HERE/out"
SIZE_GIB=20
ADD=1
KEEP_ROOTFS=0
SUITE=bookworm
QEMU=backports
PRINT_PACKAGES=0
SOURCES=/etc/apt/sources.list.d/debian.sources
GRUB_DIR=/usr/lib/grub/i386-pc
WHEEL_DIR=/var/cache/ganeti-lv/wheels
VENV=/opt/ganeti_lv-venv
GUEST_DEBS=/srv/ganeti-lv/test-guest/debs # as in provision/common.sh
SYSTEM_PYTHON=/usr/bin/python3            # the same Python as in the box

# What a Vagrant node needs besides the provisioning's packages.
BASE_PACKAGES=(
  systemd-sysv udev dbus linux-image-amd64 initramfs-tools openssh-server sudo
  passwd netbase iproute2 ca-certificates less
)

log() { echo ">>> $*" >&2; }
die() {
  echo "build.sh: $*" >&2
  exit 1
}

# Packages named in `apt-get install` commands of the provisioning scripts
# (continuation lines joined; options, redirections and variables dropped).
provision_packages() {
  local f
  for f in "$PROVISION_DIR"/*.sh; do
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$f"
  done | grep -E '(^|[[:space:]])apt-get[[:space:]]+install([[:space:]]|$)' \
    | sed -E 's/.*apt-get[[:space:]]+install//' | tr ' \t' '\n\n' \
    | grep -E '^[a-z0-9][a-z0-9.+-]+$' | sort -u
}

# qemu's packages taken from $SUITE-backports with --qemu backports (the
# same versions as the local cluster's, ganeti_lv.devcluster.emulator);
# their libraries come from $SUITE itself.
BACKPORTED=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils seabios)

all_packages() {
  local pkg
  {
    printf '%s\n' "${BASE_PACKAGES[@]}"
    provision_packages
    if [ "$QEMU" = backports ]; then printf '%s\n' "${BACKPORTED[@]}"; fi
  } | sort -u | while read -r pkg; do
    if [ "$QEMU" = backports ] && [[ " ${BACKPORTED[*]} " == *" $pkg "* ]]; then
      echo "$pkg/$SUITE-backports"
    else
      echo "$pkg"
    fi
  done
}

# The apt sources of the box: the host's ($SOURCES, deb822) and, for
# --qemu backports, $SUITE-backports from the same mirror with the same key.
box_sources() {
  cat "$SOURCES"
  if [ "$QEMU" = backports ]; then
    local uri key
    uri="$(awk '$1 == "URIs:" {print $2; exit}' "$SOURCES")"
    key="$(awk '$1 == "Signed-By:" {print $2; exit}' "$SOURCES")"
    [ -n "$uri" ] || die "no URIs: line in $SOURCES"
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\n' "$uri" "$SUITE"
    [ -z "$key" ] || printf 'Signed-By: %s\n' "$key"
  fi
}

vagrant_public_key() {
  local key
  for key in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
    /usr/share/vagrant/keys/vagrant.pub; do
    [ -s "$key" ] && {
      echo "$key"
      return
    }
  done
  die "Vagrant's insecure public key not found (apt-get install vagrant)"
}

# Runs as mmdebstrap's customize hook (mmdebstrap mounts /proc, /sys and
# /dev in the root file system for it and takes them down afterwards).
customize() {
ROOTFS="$1"
WORK="$BOX_WORK"
ROOT_UUID="$BOX_ROOT_UUID"
PUBKEY="$BOX_PUBKEY"

log "configuring the system"
echo vagrant >"$ROOTFS/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvagrant\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  >"$ROOTFS/etc/hosts"
: >"$ROOTFS/etc/machine-id" # generated on first boot: distinct per node
rm -f "$ROOTFS/var/lib/dbus/machine-id" "$ROOTFS/etc/resolv.conf"
echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" >"$ROOTFS/etc/fstab"

# Networking: DHCP on the first interface (vagrant's management network);
# vagrant writes the private network's configuration itself (networkd).
cat >"$ROOTFS/etc/systemd/network/90-management.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1

# SSH host keys are made on each node's first boot, not shared by all.
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
cat >"$ROOTFS/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys on first boot
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
EOF
in_root systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
echo 'UseDNS no' >"$ROOTFS/etc/ssh/sshd_config.d/vagrant.conf"

# The vagrant user: insecure key (vagrant replaces it on first `up`),
# passwordless sudo.
in_root useradd --create-home --shell /bin/bash --user-group vagrant
install -d -m 700 -o 1000 -g 1000 "$ROOTFS/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$PUBKEY" "$ROOTFS/home/vagrant/.ssh/authorized_keys"
[ "$(in_root id -u vagrant)" = 1000 ] || die "vagrant's uid is not 1000"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$ROOTFS/etc/sudoers.d/vagrant"
chmod 440 "$ROOTFS/etc/sudoers.d/vagrant"
in_root passwd --lock root >/dev/null

# Python: the wheels, a virtual environment with them, pip without an index.
log "installing the wheels into $VENV"
mkdir -p "$ROOTFS$WHEEL_DIR"
cp "$WORK/wheels"/*.whl "$ROOTFS$WHEEL_DIR/"
cp "$WORK/requirements.txt" "$ROOTFS$WHEEL_DIR/requirements.txt"
printf '[global]\nno-index = true\nfind-links = %s\n' "$WHEEL_DIR" >"$ROOTFS/etc/pip.conf"
in_root python3 -m venv "$VENV"
in_root "$VENV/bin/pip" install -q -r "$WHEEL_DIR/requirements.txt"
rm -rf "$ROOTFS/root/.cache"

# Boot loader: GRUB's modules and configuration inside the file system.
log "boot loader"
KVER="$(basename "$(ls -d "$ROOTFS"/lib/modules/*)")"
[ -f "$ROOTFS/boot/vmlinuz-$KVER" ] && [ -f "$ROOTFS/boot/initrd.img-$KVER" ] \
  || die "kernel $KVER or its initrd missing in the root file system"
mkdir -p "$ROOTFS/boot/grub/i386-pc"
cp "$GRUB_DIR"/*.mod "$GRUB_DIR"/*.lst "$ROOTFS/boot/grub/i386-pc/"
cat >"$ROOTFS/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
menuentry "Debian GNU/Linux ($KVER)" {
  insmod part_msdos
  insmod ext2
  search --no-floppy --fs-uuid --set=root $ROOT_UUID
  linux /boot/vmlinuz-$KVER root=UUID=$ROOT_UUID ro net.ifnames=0 console=tty0 console=ttyS0,115200
  initrd /boot/initrd.img-$KVER
}
EOF
rm -rf "$ROOTFS"/var/log/*.log \
  "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*
}

in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$ROOTFS" "$@"; }

if [ "${1:-}" = --customize ]; then
  customize "$2"
  exit 0
fi

while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --size) SIZE_GIB="$2"; shift 2 ;;
    --no-add) ADD=0; shift ;;
    --keep-rootfs) KEEP_ROOTFS=1; shift ;;
    --qemu) QEMU="${2:-}"; shift 2 || shift ;;
    --print-packages) PRINT_PACKAGES=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case "$QEMU" in
  backports | system) ;;
  *) die "--qemu must be backports or system, not '$QEMU'" ;;
esac
if [ "$PRINT_PACKAGES" = 1 ]; then
  all_packages
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and chroot)"
[[ "$SIZE_GIB" =~ ^[1-9][0-9]*$ ]] || die "--size must be a whole number of GiB"
for tool in mmdebstrap mke2fs sfdisk qemu-img grub-mkimage; do
  command -v "$tool" >/dev/null || die "$tool missing (apt-get install mmdebstrap e2fsprogs fdisk qemu-utils grub-pc-bin)"
done
[ -x "$SYSTEM_PYTHON" ] || die "$SYSTEM_PYTHON missing"
PUBKEY="$(vagrant_public_key)"

mkdir -p "$OUT"
WORK="$(mktemp -d "$OUT/work.XXXXXX")"
# Nothing may stay mounted in the root file system (it is about to be
# copied or removed): unmount what mmdebstrap left, or stop.
check_no_mounts() {
  local mnt
  while read -r mnt; do
    umount "$mnt" || umount --lazy "$mnt" || die "cannot unmount $mnt"
  done < <(awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r)
  if awk -v w="$WORK/" 'index($2, w) == 1 {found=1} END {exit !found}' /proc/mounts; then
    die "file systems still mounted under $WORK"
  fi
}
cleanup() {
  check_no_mounts
  if [ "$KEEP_ROOTFS" = 1 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

# --- Python wheels, built on this machine with the box's Python version ------
log "building wheels of ganeti_lv's dependencies"
"$SYSTEM_PYTHON" -m venv "$WORK/wheel-venv"
"$WORK/wheel-venv/bin/pip" -q install --upgrade pip
mkdir -p "$WORK/wheels"
# the build requirements as pyproject.toml pins them (the newest setuptools may be
# outside that range, and provisioning installs offline from these wheels)
mapfile -t BUILD_REQUIRES < <("$SYSTEM_PYTHON" -c \
  'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"], sep="\n")' \
  "$REPO/pyproject.toml")
"$WORK/wheel-venv/bin/pip" -q wheel --wheel-dir "$WORK/wheels" "$REPO[test]" pip wheel "${BUILD_REQUIRES[@]}"
rm -f "$WORK/wheels"/ganeti_lv-*.whl # provisioning installs it from the synced tree
# The requirements exactly as built, for installing them in the box.
(cd "$WORK/wheels" && ls -- *.whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/') >"$WORK/requirements.txt"

# --- root file system ----------------------------------------------------------
ROOT_UUID="$(cat /proc/sys/kernel/random/uuid)"
export BOX_WORK="$WORK" BOX_ROOT_UUID="$ROOT_UUID" BOX_PUBKEY="$PUBKEY"
mapfile -t PACKAGES < <(all_packages)
[ -s "$SOURCES" ] || die "$SOURCES missing: it names the Debian mirror to use"
box_sources >"$WORK/apt.sources"
log "root file system: ${#PACKAGES[@]} packages (qemu: $QEMU) from $SOURCES"
mmdebstrap --variant=apt --mode=root --format=directory \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --include="$(
    IFS=,
    echo "${PACKAGES[*]}"
  )" \
  --customize-hook='mkdir -p "$1'"$GUEST_DEBS"'" && cp "$1"/var/cache/apt/archives/linux-image-[0-9]*.deb "$1'"$GUEST_DEBS"'"/' \
  --customize-hook="\"$HERE/build.sh\" --customize \"\$1\"" \
  "$SUITE" "$ROOTFS" "$WORK/apt.sources"
check_no_mounts

# --- disk image ------------------------------------------------------------
log "disk image ($SIZE_GIB GiB, sparse)"
DISK="$WORK/disk.raw"
truncate -s "${SIZE_GIB}G" "$DISK"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$DISK"
# The partition starts at 1 MiB and fills the disk.
mke2fs -q -t ext4 -L root -U "$ROOT_UUID" -E offset=1048576 -d "$ROOTFS" \
  "$DISK" "$((SIZE_GIB * 1024 * 1024 - 1024))k"
grub-mkimage -O i386-pc -d "$GRUB_DIR" -o "$WORK/core.img" \
  -p "(hd0,msdos1)/boot/grub" biosdisk part_msdos ext2
"$SYSTEM_PYTHON" "$HERE/grub_mbr.py" "$DISK" "$GRUB_DIR/boot.img" "$WORK/core.img"

log "packing the box"
qemu-img convert -c -O qcow2 "$DISK" "$WORK/box.img"
rm -f "$DISK"
BOXFILE="$OUT/$(echo "$NAME" | tr '/' '-').box"
"$HERE/pack.sh" "$WORK/box.img" "$BOXFILE"
log "box file: $BOXFILE ($(du -h "$BOXFILE" | cut -f1))"

if [ "$ADD" = 1 ]; then
  vagrant box add --force --name "$NAME" "$BOXFILE"
  log "added as $NAME: GANETI_LV_VAGRANT_BOX=$NAME vagrant up ..."
fi
