#!/usr/bin/env bash
# On the master (node1): export the shared file storage over NFS to the
# cluster network, so every node sees the same sharedfile images.
set -euo pipefail
# shellcheck source=common.sh
source "${SRC_DIR:-/opt/ganeti_lv}/vagrant/provision/common.sh"

log "NFS export of $SHARED_STORAGE_DIR to $SUBNET_CIDR"
apt-get install -y -qq --no-install-recommends nfs-kernel-server >/dev/null
install -d -m 755 "$SHARED_STORAGE_DIR"
line="$SHARED_STORAGE_DIR $SUBNET_CIDR(rw,sync,no_subtree_check,no_root_squash)"
sed -i "\\#^$SHARED_STORAGE_DIR #d" /etc/exports
echo "$line" >>/etc/exports
systemctl enable --now nfs-server
exportfs -ra
