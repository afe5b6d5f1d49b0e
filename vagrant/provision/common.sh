#!/usr/bin/env bash
# Settings shared by the provisioning scripts of the Vagrant cluster.
# Sourced by the other scripts; the Vagrantfile passes NODE_NAME, NODE_ADDRESS,
# MASTER_NAME, MASTER_ADDRESS, SUBNET_CIDR, HOSTS_LINES, DOMAIN_TYPE,
# CLUSTER_NAME, TEST_TIMEOUT_SCALE and SRC_DIR in the environment.

: "${SRC_DIR:=/opt/ganeti_lv}"
: "${TEST_TIMEOUT_SCALE:=1}"
: "${DOMAIN_TYPE:=kvm}"
: "${CLUSTER_NAME:=vagrant-cluster}"

VENV=/opt/ganeti_lv-venv
GNT_LV="$VENV/bin/gnt-lv"
DATA_DIR=/var/lib/ganeti-lv
FILE_STORAGE_DIR=/srv/ganeti-lv/file-storage
SHARED_STORAGE_DIR=/srv/ganeti-lv/shared-file-storage
EXPORT_DIR=/srv/ganeti-lv/export
HOOKS_DIR=/etc/ganeti-lv/hooks
GUEST_DIR=/srv/ganeti-lv/test-guest
BRIDGE=gnt-br0
LIBVIRT_TLS_PORT=16514
CA_CERT="$SRC_DIR/vagrant/.cluster/cacert.pem"
CA_KEY="$SRC_DIR/vagrant/.cluster/cakey.pem"
CLUSTER_JSON=/root/cluster.json
export DEBIAN_FRONTEND=noninteractive

log() {
  echo ">>> [$NODE_NAME] $*"
}

# libvirt URI of a node as seen from the master and from the other nodes:
# TLS, with the cluster's certificates (the master's client certificate is
# found by gnt-lv itself, each node's libvirtd uses its own).
libvirt_uri() {
  echo "qemu+tls://$1/system"
}

# Run a command on another node with the cluster key. Its stdin is not the
# caller's (-n): in a `while read` loop ssh would swallow the lines still to read.
on_node() {
  local host="$1"
  shift
  ssh -n -o BatchMode=yes -o ConnectTimeout=10 -i /root/.ssh/id_cluster "root@$host" "$@"
}

# Fail unless directory $1 on this node is the master's (the NFS share):
# a file made here must show there. Leaves nothing behind.
check_shared_storage() {
  local dir="$1" probe
  probe="$(mktemp "$dir/.shared-probe-$NODE_NAME.XXXXXX")" || return 1
  if on_node "$MASTER_ADDRESS" test -e "$probe"; then
    rm -f "$probe"
    return 0
  fi
  rm -f "$probe"
  echo "$dir on $NODE_NAME is not $MASTER_NAME's: is the NFS share mounted there?" >&2
  return 1
}
