#!/usr/bin/env bash
# Packs a qcow2 disk image as a vagrant-libvirt box: a tar of box.img,
# metadata.json (provider, format, virtual size in GiB) and a Vagrantfile.
#
# Usage: vagrant/box/pack.sh IMAGE.qcow2 OUT.box
# The image is moved into the box (hard link or copy), not left beside it.
set -euo pipefail

[ $# -eq 2 ] || {
  echo "usage: $0 IMAGE.qcow2 OUT.box" >&2
  exit 2
}
IMAGE="$1"
BOXFILE="$2"
[ -f "$IMAGE" ] || {
  echo "pack.sh: $IMAGE: no such file" >&2
  exit 1
}
info="$(qemu-img info --output=json "$IMAGE")"
format="$(sed -n 's/^ *"format": "\([^"]*\)".*/\1/p' <<<"$info" | head -n1)"
bytes="$(sed -n 's/^ *"virtual-size": \([0-9]*\).*/\1/p' <<<"$info" | head -n1)"
if [ "$format" != qcow2 ] || [ -z "$bytes" ]; then
  echo "pack.sh: $IMAGE is not a qcow2 image (format: ${format:-unknown})" >&2
  exit 1
fi
gib=$(((bytes + (1 << 30) - 1) >> 30)) # vagrant-libvirt sizes volumes in GiB

stage="$(mktemp -d "$(dirname "$BOXFILE")/pack.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
ln "$IMAGE" "$stage/box.img" 2>/dev/null || cp --sparse=always "$IMAGE" "$stage/box.img"
printf '{\n  "provider": "libvirt",\n  "format": "qcow2",\n  "virtual_size": %d\n}\n' \
  "$gib" >"$stage/metadata.json"
cat >"$stage/Vagrantfile" <<'VF'
# Debian 12 for the ganeti_lv Vagrant cluster (built by vagrant/box/build.sh).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
VF
tar -C "$stage" -cf "$BOXFILE.tmp" metadata.json Vagrantfile box.img
mv "$BOXFILE.tmp" "$BOXFILE"
rm -f "$IMAGE"
