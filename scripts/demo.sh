#!/usr/bin/env bash
# The main job: bring up a local 3-node cluster (network namespaces running
# real libvirtd, qemu and sshd), create and start an instance, live-migrate it
# to another node and export it live to a third node, showing progress.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
source "$ROOT/scripts/setup.sh"
DIR="${GANETI_LV_DEMO_DIR:-/var/tmp/ganeti-lv-demo}"
INSTANCE="${GANETI_LV_DEMO_INSTANCE:-demo1}"

echo ">>> bringing up the local cluster in $DIR"
gnt-lv-devcluster up --nodes 3 --dir "$DIR"
export GANETI_LV_DATA_DIR="$DIR/data"
echo ">>> starting the master daemon (gnt-lv hands its jobs to it)"
if ! out=$(gnt-lv-masterd 2>&1); then
  case "$out" in
    *"already runs"*) echo "    (it runs already)" ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
KERNEL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["guest"]["kernel"])' "$DIR/cluster.json")
INITRD=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["guest"]["initrd"])' "$DIR/cluster.json")

# Where the instance's serial console log on node $1 is (host path) and its
# size now: the log is appended to across boots, so the wait below reads only
# what this boot writes.
console_at() {
  python3 - "$DIR" "$1" "$INSTANCE" <<'PY'
import sys
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.guest import console_size
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path

directory, node, name = sys.argv[1:]
log = DevCluster(directory).host_path(node, console_log_path(name))
print(log, console_size(log))
PY
}

# A step that fails, Ctrl-C, a closed terminal or a kill end the demo: its
# guest, which dirties memory, is shut down then too, so that nothing busy is
# left beside the test suite. (A signal's trap exits, so the EXIT trap runs.)
DONE=no
stop_guest_unless_done() {
  local rc=$?
  trap '' HUP INT TERM  # a second Ctrl-C must not cut this short
  [ "$DONE" = yes ] && return 0
  if gnt-lv instance info "$INSTANCE" >/dev/null 2>&1; then
    echo ">>> the demo did not finish (exit $rc): shutting $INSTANCE down" >&2 || true
    # a session of its own: a second Ctrl-C would ask its job to stop
    setsid -w gnt-lv instance shutdown "$INSTANCE" >&2 || true
  fi
}
trap stop_guest_unless_done EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

BOOTING=yes
if ! gnt-lv instance info "$INSTANCE" >/dev/null 2>&1; then
  PRIMARY=node1
  where=$(console_at "$PRIMARY")
  echo ">>> creating instance $INSTANCE on $PRIMARY"
  gnt-lv instance add -t file --disk 0:size=256M -n "$PRIMARY" -B memory=128M,vcpus=1 \
    -H "kernel_path=$KERNEL,initrd_path=$INITRD,kernel_args='console=ttyS0 seed=$INSTANCE patmb=16 dirtymb=32 writepat=1'" \
    "$INSTANCE"
else
  PRIMARY=$(gnt-lv instance list --no-headers -o pnode "$INSTANCE")
  where=$(console_at "$PRIMARY")
  if [ "$(gnt-lv instance list --no-headers -o status "$INSTANCE")" = running ]; then
    BOOTING=no
  else
    echo ">>> starting $INSTANCE (an earlier run left it stopped)"
    gnt-lv instance startup "$INSTANCE"
  fi
fi
read -r LOG SINCE <<<"$where"
gnt-lv instance list

if [ "$BOOTING" = yes ]; then
  echo ">>> waiting for $INSTANCE to boot (its serial console on $PRIMARY)"
  python3 - "$LOG" "$SINCE" <<'PY'
import sys

from ganeti_lv.devcluster.guest import read_console, wait_console

log, since = sys.argv[1], int(sys.argv[2])
wait_console(log, r"GUEST-READY", timeout=180, start=since)
for line in read_console(log, since).splitlines():
    if line.startswith("GUEST: PATTERN"):
        print("   ", line.strip())
PY
else
  echo ">>> $INSTANCE runs already on $PRIMARY"
fi
TARGET=node2; [ "$PRIMARY" = node2 ] && TARGET=node1
EXPORT_NODE=node3

echo ">>> live-migrating $INSTANCE from $PRIMARY to $TARGET"
gnt-lv instance migrate -f -n "$TARGET" "$INSTANCE"
gnt-lv instance list

echo ">>> exporting $INSTANCE live to $EXPORT_NODE"
gnt-lv backup export --noshutdown -n "$EXPORT_NODE" "$INSTANCE"
gnt-lv backup list --node "$EXPORT_NODE"
# The guest is stopped so that nothing busy is left beside the test suite (the
# machine runs at most two guests under TCG at once); the cluster stays up.
echo ">>> shutting $INSTANCE down (nothing busy left behind)"
gnt-lv instance shutdown "$INSTANCE"
DONE=yes
echo ">>> done. The cluster and its master daemon keep running; start the guest again with:"
echo "    GANETI_LV_DATA_DIR=$DIR/data $ROOT/.venv/bin/gnt-lv instance startup $INSTANCE"
echo "  and stop everything with:"
echo "    $ROOT/.venv/bin/gnt-lv-devcluster down --dir $DIR"
