#!/usr/bin/env bash
# Provisions one node of the Vagrant cluster: packages, name resolution,
# ganeti_lv itself, libvirtd (TLS on the private address only, client
# certificates of the cluster CA verified; first certificates from the CA
# the Vagrantfile made), qemu (TLS migration streams verified), the guest
# bridge, sshd with the cluster key and node-local directories.
# Safe to run again (vagrant provision).
set -euo pipefail
# shellcheck source=common.sh
source "${SRC_DIR:-/opt/ganeti_lv}/vagrant/provision/common.sh"

install_packages() {
  log "installing packages"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
    openssh-server openssh-client busybox-static cpio libvirt-dev pkg-config \
    gcc python3-dev python3-venv iproute2 zstd gzip procps util-linux kmod \
    e2fsprogs zerofree rsync >/dev/null
}

configure_hosts() {
  log "name resolution for the cluster network"
  local hosts="${HOSTS_FILE:-/etc/hosts}"
  # vagrant maps the host name to a loopback address (127.0.2.1 with
  # Debian's vagrant 2.3.4; the box itself names 127.0.1.1); a node must
  # resolve its own name to its private address or peer-to-peer migration
  # URIs break.
  awk -v name="$NODE_NAME" '
    $1 == "127.0.1.1" || / # ganeti-lv cluster$/ { next }
    $1 ~ /^127\./ { for (i = 2; i <= NF; i++) if ($i == name) next }
    { print }' "$hosts" >"$hosts.ganeti-lv"
  cat "$hosts.ganeti-lv" >"$hosts"
  rm -f "$hosts.ganeti-lv"
  while IFS= read -r line; do
    [ -n "$line" ] && echo "$line # ganeti-lv cluster" >>"$hosts"
  done <<<"$HOSTS_LINES"
}

configure_libvirt() {
  log "configuring libvirtd and qemu"
  local conf=/etc/libvirt/libvirtd.conf
  # TLS only: the node's first certificates from the cluster CA (node add
  # replaces them) and the settings that verify every client's certificate.
  "$VENV/bin/python" "$SRC_DIR/vagrant/provision/node_tls.py" \
    --ca-cert "$CA_CERT" --ca-key "$CA_KEY" --cluster-name "$CLUSTER_NAME" \
    --node-name "$NODE_NAME" --address "$NODE_ADDRESS"
  # Distinct host uuids: the same uuid makes libvirt refuse a migration
  # with "Attempt to migrate guest to the same host".
  if ! grep -q '^host_uuid' "$conf"; then
    echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >>"$conf"
  fi
  local qconf=/etc/libvirt/qemu.conf
  sed -i -e '/^migration_address[[:space:]]*=/d' -e '/^migration_host[[:space:]]*=/d' \
    -e '/^dynamic_ownership[[:space:]]*=/d' -e '/^remember_owner[[:space:]]*=/d' \
    -e '/^user[[:space:]]*=/d' -e '/^group[[:space:]]*=/d' \
    -e '/^security_driver[[:space:]]*=/d' -e '/^migrate_tls_x509_verify[[:space:]]*=/d' "$qconf"
  # Images are created over SSH as root and live on NFS for sharedfile:
  # keep ownership as it is, as the local test cluster does.
  cat >>"$qconf" <<CONF
migration_address = "$NODE_ADDRESS"
migration_host = "$NODE_ADDRESS"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
migrate_tls_x509_verify = 1
CONF
  # Debian's libvirtd is socket-activated: the TLS listener is a socket
  # unit, bound here to the private address only; no TCP listener at all.
  rm -f /etc/systemd/system/libvirtd-tcp.socket.d/ganeti-lv.conf
  mkdir -p /etc/systemd/system/libvirtd-tls.socket.d
  cat >/etc/systemd/system/libvirtd-tls.socket.d/ganeti-lv.conf <<UNIT
[Socket]
ListenStream=
ListenStream=$NODE_ADDRESS:$LIBVIRT_TLS_PORT
# bound before the network has the address (at boot): no EADDRNOTAVAIL
FreeBind=yes
UNIT
  systemctl daemon-reload
  systemctl stop libvirtd.service libvirtd.socket libvirtd-ro.socket \
    libvirtd-admin.socket libvirtd-tcp.socket libvirtd-tls.socket 2>/dev/null || true
  systemctl disable libvirtd-tcp.socket 2>/dev/null || true
  systemctl enable --now libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
    libvirtd-tls.socket
  # virtlogd is not restarted: running guests would lose their console logs
  systemctl enable --now virtlogd.service
  systemctl start libvirtd.service
  virsh -c qemu:///system domcapabilities >/dev/null
}

configure_bridge() {
  log "guest bridge $BRIDGE"
  cat >/etc/systemd/system/ganeti-lv-bridge.service <<UNIT
[Unit]
Description=ganeti_lv guest bridge $BRIDGE
Before=libvirtd.service
After=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip link show $BRIDGE >/dev/null 2>&1 || ip link add $BRIDGE type bridge; ip link set $BRIDGE up'
ExecStop=/sbin/ip link del $BRIDGE

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now ganeti-lv-bridge.service
}

configure_ssh() {
  log "sshd and the cluster key"
  local key="$SRC_DIR/vagrant/.cluster/id_cluster"
  if [ ! -s "$key" ]; then
    echo "cluster key $key missing (the Vagrantfile trigger creates it)" >&2
    exit 1
  fi
  install -d -m 700 /root/.ssh
  install -m 600 "$key" /root/.ssh/id_cluster
  install -m 644 "$key.pub" /root/.ssh/id_cluster.pub
  touch /root/.ssh/authorized_keys /root/.ssh/known_hosts
  chmod 600 /root/.ssh/authorized_keys
  grep -qxF "$(cat "$key.pub")" /root/.ssh/authorized_keys || cat "$key.pub" >>/root/.ssh/authorized_keys
  # Nodes reach each other with the cluster key (as in Ganeti).
  cat >/root/.ssh/config <<CONF
Host node* $(echo "$SUBNET_CIDR" | cut -d. -f1-3).*
  IdentityFile /root/.ssh/id_cluster
  User root
CONF
  chmod 600 /root/.ssh/config
  sed -i '/^#\?PermitRootLogin/d' /etc/ssh/sshd_config
  echo "PermitRootLogin prohibit-password" >>/etc/ssh/sshd_config
  # The master runs a node's commands, file transfers and disk copies as sessions
  # of one connection (a new connection past the limit): room for busy jobs
  install -d -m 755 /etc/ssh/sshd_config.d
  printf 'MaxSessions 100\nMaxStartups 100:30:200\n' >/etc/ssh/sshd_config.d/ganeti-lv.conf
  systemctl enable --now ssh
  systemctl reload ssh
}

create_directories() {
  log "node-local directories"
  install -d -m 755 "$FILE_STORAGE_DIR" "$SHARED_STORAGE_DIR" "$EXPORT_DIR" "$GUEST_DIR"
  local hpath
  for hpath in instance-migrate instance-export; do
    install -d -m 755 "$HOOKS_DIR/$hpath-pre.d" "$HOOKS_DIR/$hpath-post.d"
  done
}

install_ganeti_lv() {
  log "installing ganeti_lv into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e "$SRC_DIR[test]"
  ln -sf "$VENV/bin/gnt-lv" /usr/local/bin/gnt-lv
}

check_kvm() {
  if [ "$DOMAIN_TYPE" = kvm ] && [ ! -c /dev/kvm ]; then
    echo "no /dev/kvm in $NODE_NAME: nested KVM is off on the host" \
      "(enable it, or set GANETI_LV_VAGRANT_DOMAIN_TYPE=qemu)" >&2
    exit 1
  fi
}

install_packages
configure_hosts
check_kvm
install_ganeti_lv
configure_libvirt
configure_bridge
configure_ssh
create_directories
log "node provisioned"
