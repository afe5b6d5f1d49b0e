#!/usr/bin/env bash
# On every other node: mount the master's shared file storage at the same path.
set -euo pipefail
# shellcheck source=common.sh
source "${SRC_DIR:-/opt/ganeti_lv}/vagrant/provision/common.sh"

log "mounting $MASTER_NAME:$SHARED_STORAGE_DIR"
apt-get install -y -qq --no-install-recommends nfs-common >/dev/null
install -d -m 755 "$SHARED_STORAGE_DIR"
sed -i "\\#[[:space:]]$SHARED_STORAGE_DIR[[:space:]]#d" /etc/fstab
echo "$MASTER_ADDRESS:$SHARED_STORAGE_DIR $SHARED_STORAGE_DIR nfs hard,_netdev 0 0" >>/etc/fstab
mountpoint -q "$SHARED_STORAGE_DIR" || mount "$SHARED_STORAGE_DIR"
