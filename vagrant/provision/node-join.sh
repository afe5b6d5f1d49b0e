#!/usr/bin/env bash
# On every node but the master: exchange SSH host keys with the nodes
# already up, copy the test guest from the master, and join the cluster
# (`gnt-lv node add` run on the master with this node's host key).
set -euo pipefail
# shellcheck source=common.sh
source "${SRC_DIR:-/opt/ganeti_lv}/vagrant/provision/common.sh"

my_key="$(awk '{print $1" "$2}' /etc/ssh/ssh_host_ed25519_key.pub)"
my_line="$NODE_NAME,$NODE_ADDRESS $my_key"

add_known_host() {
  # $1: known_hosts line "name,address type base64"
  local hosts="${1%% *}"
  sed -i "\\#^$hosts #d" /root/.ssh/known_hosts
  echo "$1" >>/root/.ssh/known_hosts
}

add_known_host "$my_line"
# Host keys of the nodes already up, read on the isolated cluster network
# (nodes are brought up in order, so every earlier node exists).
while read -r address name _; do
  [ -n "$address" ] || continue
  [ "$name" = "$NODE_NAME" ] && continue
  if key="$(ssh-keyscan -T 5 -t ed25519 "$address" 2>/dev/null | awk '{print $2" "$3}')" \
    && [ -n "$key" ]; then
    add_known_host "$name,$address $key"
    log "trusting $name's host key; telling $name about ours"
    on_node "$address" "sed -i '\\#^$NODE_NAME,$NODE_ADDRESS #d' /root/.ssh/known_hosts;" \
      "echo '$my_line' >>/root/.ssh/known_hosts"
  fi
done <<<"$HOSTS_LINES"

# sharedfile disks: what this node writes to the shared storage, the master sees
log "checking that $SHARED_STORAGE_DIR is $MASTER_NAME's"
check_shared_storage "$SHARED_STORAGE_DIR"

log "copying the test guest from $MASTER_NAME"
install -d -m 755 "$GUEST_DIR"
rsync -a --exclude debs/ -e "ssh -i /root/.ssh/id_cluster" \
  "root@$MASTER_ADDRESS:$GUEST_DIR/" "$GUEST_DIR/"

uri="$(libvirt_uri "$NODE_ADDRESS")"
join=(--address "$NODE_ADDRESS" --libvirt-uri "$uri" --peer-uri "$uri"
  --migration-address "$NODE_ADDRESS" --host-key "'$my_key'" "$NODE_NAME")
# the list is read whole first: with pipefail, a grep -q that stops at its match
# can fail the pipeline (the writer gets SIGPIPE)
members="$(on_node "$MASTER_ADDRESS" "$GNT_LV" node list --no-headers -o name 2>/dev/null || true)"
if ! grep -qx "$NODE_NAME" <<<"$members"; then
  log "joining the cluster on $MASTER_NAME"
  on_node "$MASTER_ADDRESS" "$GNT_LV" node add "${join[@]}"
elif on_node "$MASTER_ADDRESS" grep -qF "'$my_key'" "$DATA_DIR/ssh/known_hosts"; then
  log "already a member of the cluster"
else
  # rebuilt (`vagrant destroy` and `up`): a new host key, and certificates
  # from the cluster CA to be issued again
  log "a member of the cluster with another host key: adding it again (--readd)"
  on_node "$MASTER_ADDRESS" "$GNT_LV" node add --readd "${join[@]}"
fi

on_node "$MASTER_ADDRESS" "$VENV/bin/python" "$SRC_DIR/vagrant/provision/cluster_json.py" \
  --data-dir "$DATA_DIR" --guest-dir "$GUEST_DIR" --out "$CLUSTER_JSON" \
  --timeout-scale "$TEST_TIMEOUT_SCALE"
