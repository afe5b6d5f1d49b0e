#!/usr/bin/env bash
# One bounded run of the cluster test suite against the Vagrant cluster:
#
#   1. `vagrant up --no-parallel` (the settings come from the environment,
#      GANETI_LV_VAGRANT_*, as for vagrant itself);
#   2. checks that libvirtd on every node listens on TLS only (port 16514 on
#      the node's cluster address, nothing on 16509) and that
#      `gnt-lv cluster verify` finds nothing on the master;
#   3. the given cluster test files (or "FILE -k EXPR" selections), one pytest
#      run each on the master with GANETI_LV_TEST_CLUSTER=/root/cluster.json,
#      each bounded by the time left (interrupted like a ^C at its limit, so
#      the outcomes of the tests that ran are kept and the instances removed);
#   4. each node's mounts, free space and libvirt logs (node-logs.log), then
#      `vagrant destroy -f`, whatever happened before (also on an error or
#      a signal), and a check that the host's libvirt has no domain, network
#      or volume of the cluster left (the box's base volume stays).
#
# Every step's output and duration go to the output directory: steps.tsv
# (step, seconds, result), one log per step, the pytest runs' JUnit files and
# tests.tsv (file, test, outcome, seconds).
#
# Usage: vagrant/run-cluster-tests.sh [--out DIR] [--budget SECONDS] \
#          [--reserve SECONDS] SELECTION...
#   SELECTION: a file under tests/cluster, optionally followed by pytest
#   arguments in the same word: "test_migrate_shared.py -k live_migration".
#   --budget: the whole run's limit (default 2700 s); the tests stop early
#   enough to leave --reserve seconds (default 480) for what follows them:
#   the last results' copy (60 s at most), the node logs (90 s) and the
#   destroy (330 s).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/.runs/$(date -u +%Y%m%dT%H%M%SZ)"
BUDGET=2700
RESERVE=480
MIN_TEST_SECONDS=180
# how long an interrupted pytest on the master gets for its teardown
INTERRUPT_GRACE=60
REMOTE_RESULTS=/root/cluster-test-results
SELECTIONS=()

die() {
  echo "run-cluster-tests.sh: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --reserve) RESERVE="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) SELECTIONS+=("$1"); shift ;;
  esac
done
[[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || die "--budget must be a whole number of seconds"
[[ "$RESERVE" =~ ^[1-9][0-9]*$ ]] || die "--reserve must be a whole number of seconds"
[ "${#SELECTIONS[@]}" -gt 0 ] || die "name at least one test file (see --help)"
for sel in "${SELECTIONS[@]}"; do
  file="${sel%% *}"
  [ -f "$HERE/../tests/cluster/$file" ] || die "no test file tests/cluster/$file"
done

mkdir -p "$OUT"
START=$SECONDS
: >"$OUT/steps.tsv"
printf 'file\ttest\toutcome\tseconds\n' >"$OUT/tests.tsv"
cd "$HERE" || exit 2

log() { echo ">>> [$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
left() { echo $((BUDGET - (SECONDS - START))); }
# at most $1 seconds, and never into the time kept for the destroy
bounded() {
  local most=$(($(left) - RESERVE))
  echo $((most < $1 ? most : $1))
}

# step NAME LIMIT COMMAND...: run with a time limit (COMMAND may be a
# function of this script), its output time-stamped in NAME.log; record its time
step() {
  local name="$1" limit="$2" t0=$SECONDS rc
  shift 2
  if [ "$limit" -le 0 ]; then
    log "$name: no time left"
    printf '%s\t0\tnot run\n' "$name" >>"$OUT/steps.tsv"
    return 124
  fi
  log "$name (limit ${limit}s)"
  # In the background, waited for: bash runs a trap only between commands,
  # and `wait` returns at once on a signal, where a foreground step would
  # hold the trap until its end.
  timeout -k 30 "$limit" bash -c '"$@"' step "$@" \
    > >(awk '{ print strftime("%H:%M:%S"), $0; fflush() }' >"$OUT/$name.log") 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" >>"$OUT/steps.tsv"
  log "$name: exit $rc after $((SECONDS - t0))s"
  return "$rc"
}

on_master() {
  vagrant ssh node1 -c "sudo -i sh -c $(printf '%q' "$1")"
}

nodes() {
  vagrant status --machine-readable 2>/dev/null | awk -F, '$3 == "state" {print $2}' | sort -u
}

# JUnit file -> "file<TAB>test<TAB>outcome<TAB>seconds" lines
junit_times() {
  python3 - "$1" "$2" <<'PY'
import sys
import xml.etree.ElementTree as ET

path, name = sys.argv[1], sys.argv[2]
for case in ET.parse(path).getroot().iter("testcase"):
    kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    outcome = kinds[0] if kinds else "passed"
    test = case.get("name")
    if test is None:  # pytest's entry for the test a ^C stopped
        test, outcome = "(running at the limit)", "interrupted"
    print(f"{name}\t{test}\t{outcome}\t{float(case.get('time', 0)):.1f}")
PY
}

destroyed=0
booted=0
# the run's outcome: 1 when a check or a test failed, a selection did not
# run, or something of the cluster was left behind
failed=0
left_behind=0
destroy() {
  local status=$?
  [ "$destroyed" = 1 ] && return
  destroyed=1
  if [ "$booted" = 1 ]; then
    step node-logs 60 node_logs || log "node logs incomplete: see $OUT/node-logs.log"
  fi
  step destroy 300 vagrant destroy -f
  leftovers
  log "done in $((SECONDS - START))s; results in $OUT"
  if [ "$status" -eq 0 ] && [ "$left_behind" = 1 ]; then
    exit 1
  fi
}
# A signal stops the running step (timeout passes it on to the step's
# command and kills it 30 s later if it is still there), then the destroy.
STEP_PID=
interrupted() {
  log "interrupted"
  if [ -n "$STEP_PID" ]; then
    kill -TERM "$STEP_PID" 2>/dev/null
    wait "$STEP_PID" 2>/dev/null
    STEP_PID=
  fi
  exit 130
}
trap destroy EXIT
trap interrupted INT TERM HUP

# The host's libvirt after the destroy: nothing of the cluster may be left.
leftovers() {
  local uri=qemu:///system bad=0
  {
    echo "# virsh list --all"; virsh -c "$uri" list --all --name
    echo "# virsh net-list --all"; virsh -c "$uri" net-list --all --name
    echo "# virsh vol-list default"; virsh -c "$uri" vol-list default
  } >"$OUT/leftovers.txt" 2>&1
  # each list read whole before grep -q (with pipefail, a grep that stops at its
  # match can fail the pipeline and hide what is left)
  if grep -q '^vagrant_node' <<<"$(virsh -c "$uri" list --all --name)"; then bad=1; fi
  if grep -qx 'ganeti-lv-cluster' <<<"$(virsh -c "$uri" net-list --all --name)"; then bad=1; fi
  if grep -q 'vagrant_node' <<<"$(virsh -c "$uri" vol-list default)"; then bad=1; fi
  printf 'leftovers\t0\t%s\n' "$bad" >>"$OUT/steps.tsv"
  left_behind="$bad"
  if [ "$bad" = 1 ]; then log "LEFT BEHIND: see $OUT/leftovers.txt"; else log "nothing left"; fi
}

# libvirtd on a node: TLS on the node's cluster address, no TCP listener.
check_tls_only() {
  local node address listeners rc=0
  for node in $(nodes); do
    # the node's cluster address, as the provisioning wrote it
    address="$(vagrant ssh "$node" -c "awk '/# ganeti-lv cluster\$/ && \$2 == \"$node\" {print \$1}' /etc/hosts" | tr -d '\r')"
    listeners="$(vagrant ssh "$node" -c 'sudo ss -Hltn' | tr -d '\r' | awk '{print $4}')"
    echo "$node ($address): $(echo "$listeners" | tr '\n' ' ')"
    if ! echo "$listeners" | grep -qx "$address:16514"; then
      echo "$node: libvirtd does not listen on $address:16514"
      rc=1
    fi
    if echo "$listeners" | grep -Eq ':16509$'; then
      echo "$node: a TCP listener on 16509"
      rc=1
    fi
    if echo "$listeners" | grep -Ev "^$address:" | grep -Eq ':16514$'; then
      echo "$node: TLS listener on another address"
      rc=1
    fi
  done
  return "$rc"
}

# pytest on the master for one selection, bounded there too (the ssh
# session's end does not stop it): SIGINT at the limit, as a ^C, so pytest
# tears its fixtures down (the test instances go) and still writes the JUnit
# file of the tests that ran; SIGKILL $INTERRUPT_GRACE seconds later. The
# JUnit file is copied here.
run_selection() {
  local sel="$1" tag="$2" limit="$3"
  local cmd="mkdir -p $REMOTE_RESULTS && cd /opt/ganeti_lv && \
GANETI_LV_TEST_CLUSTER=/root/cluster.json \
timeout -s INT -k $INTERRUPT_GRACE $((limit - 40 - INTERRUPT_GRACE)) \
/opt/ganeti_lv-venv/bin/pytest -p no:cacheprovider -rA --durations=0 \
--junitxml=$REMOTE_RESULTS/$tag.xml tests/cluster/$sel"
  step "tests-$tag" "$limit" on_master "$cmd"
  local rc=$? rows
  timeout 60 bash -c 'on_master "$1"' _ "cat $REMOTE_RESULTS/$tag.xml" >"$OUT/$tag.xml" 2>/dev/null
  if rows="$(junit_times "$OUT/$tag.xml" "${sel%% *}" 2>/dev/null)" && [ -n "$rows" ]; then
    printf '%s\n' "$rows" >>"$OUT/tests.tsv"
    # a test that failed, erred or was stopped at the limit fails the run
    if printf '%s\n' "$rows" | awk -F'\t' '$3 ~ /^(failure|error|interrupted)$/ {bad = 1}
        END {exit !bad}'; then
      [ "$rc" -ne 0 ] || rc=1
    fi
  else
    log "no results for $sel"
    [ "$rc" -ne 0 ] || rc=1
  fi
  return "$rc"
}

# What each node saw, kept for after the destroy: its mounts and free space,
# libvirt's logs of the test guests and of libvirtd.
node_logs() {
  local node what="findmnt -t nfs,nfs4; exportfs -v; df -h / /srv/ganeti-lv/*/"
  what+="; tail -n 100 /var/log/libvirt/qemu/*.log; journalctl -u libvirtd --no-pager -n 200"
  for node in $(nodes); do
    echo "=== $node"
    vagrant ssh "$node" -c "sudo sh -c '$what'"
  done
}

export -f on_master nodes check_tls_only node_logs

if ! step up "$(($(left) - RESERVE))" vagrant up --no-parallel; then
  log "vagrant up failed: see $OUT/up.log"
  exit 1
fi
booted=1
if ! step tls-only "$(bounded 120)" check_tls_only; then
  log "TLS check failed: see $OUT/tls-only.log"
  failed=1
fi
if ! step verify "$(bounded 300)" on_master \
  "qemu-system-x86_64 --version && gnt-lv node list && gnt-lv cluster verify"; then
  log "cluster verify failed: see $OUT/verify.log"
  failed=1
fi

n=0
for sel in "${SELECTIONS[@]}"; do
  n=$((n + 1))
  tag="$(printf '%02d-%s' "$n" "$(echo "$sel" | tr -c 'A-Za-z0-9_.\n-' '_' | cut -c1-60)")"
  limit="$(bounded "$BUDGET")"
  if [ "$limit" -lt "$MIN_TEST_SECONDS" ]; then
    log "no time left for $sel"
    printf 'tests-%s\t0\tnot run\n' "$tag" >>"$OUT/steps.tsv"
    failed=1
    continue
  fi
  run_selection "$sel" "$tag" "$limit" || failed=1
done
exit "$failed"
