#!/usr/bin/env bash
# On the master (node1): build the test guest, create the ganeti_lv cluster
# with this node as master, and write the cluster description (cluster.json)
# the cluster test suite reads. The other nodes join in node-join.sh.
set -euo pipefail
# shellcheck source=common.sh
source "${SRC_DIR:-/opt/ganeti_lv}/vagrant/provision/common.sh"

host_key() {
  awk '{print $1" "$2}' /etc/ssh/ssh_host_ed25519_key.pub
}

log "building the test guest in $GUEST_DIR"
"$VENV/bin/python" -c 'import sys
from ganeti_lv.devcluster.guest import build_guest
image = build_guest(sys.argv[1], print)
print(image.kernel, image.initrd)' "$GUEST_DIR"

# The master reaches itself over SSH like any other node.
if ! grep -q "^$NODE_NAME,$NODE_ADDRESS " /root/.ssh/known_hosts; then
  echo "$NODE_NAME,$NODE_ADDRESS $(host_key)" >>/root/.ssh/known_hosts
fi

if [ -e "$DATA_DIR/config.json" ]; then
  log "cluster already initialised in $DATA_DIR"
else
  log "initialising cluster $CLUSTER_NAME (domain type $DOMAIN_TYPE)"
  GANETI_LV_DATA_DIR="$DATA_DIR" "$GNT_LV" cluster init \
    --master-name "$NODE_NAME" \
    --master-address "$NODE_ADDRESS" \
    --libvirt-uri "$(libvirt_uri "$NODE_ADDRESS")" \
    --peer-uri "$(libvirt_uri "$NODE_ADDRESS")" \
    --migration-address "$NODE_ADDRESS" \
    --master-host-key "$(host_key)" \
    --ssh-key-file /root/.ssh/id_cluster \
    --ca-cert "$CA_CERT" --ca-key "$CA_KEY" \
    --default-bridge "$BRIDGE" \
    --domain-type "$DOMAIN_TYPE" \
    --hooks-dir "$HOOKS_DIR" \
    --export-dir "$EXPORT_DIR" \
    --file-storage-dir "$FILE_STORAGE_DIR" \
    --shared-file-storage-dir "$SHARED_STORAGE_DIR" \
    "$CLUSTER_NAME"
fi
# The shared storage is an NFS export with sync writes and hard mounts:
# qemu flushes and hands the image over at the end of a migration, so the
# storage is coherent across nodes (the local test cluster says the same).
# Every time: a provision stopped right after the init must not skip it.
GANETI_LV_DATA_DIR="$DATA_DIR" "$GNT_LV" cluster modify --shared-storage-unsafe-ok yes

"$VENV/bin/python" "$SRC_DIR/vagrant/provision/cluster_json.py" \
  --data-dir "$DATA_DIR" --guest-dir "$GUEST_DIR" --out "$CLUSTER_JSON" \
  --timeout-scale "$TEST_TIMEOUT_SCALE"
log "cluster description in $CLUSTER_JSON"
