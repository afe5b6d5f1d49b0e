"""Run a hooks directory on a node over SSH (the node side of Ganeti's hooks).

A small POSIX sh program is sent to the node on stdin (``sh -s``); it needs
only sh and coreutils (``timeout``, ``base64``, ``mktemp``, ``od``, ``tr``),
which every Debian node has. It follows Ganeti's runner (doc/hooks.rst):

- the visible entries of ``hooks_dir`` in byte order (``LC_ALL=C``); a
  missing directory means no hooks;
- only regular, executable files whose name matches ``^[a-zA-Z0-9_-]+$`` run;
  everything else (directories, non-executables, ``x.sh``) is reported SKIP;
- a script must start with ``#!`` (or be an ELF program): one without is
  reported FAIL with "Exec format error" and not run, as Ganeti's runner
  (which executes it directly) does; a shell would otherwise run it itself;
- each script runs in / with no arguments, stdin from /dev/null, stdout and
  stderr combined, and the environment reset to exactly ``env`` (``env -i``);
- fix over Ganeti: a per-script timeout. coreutils ``timeout`` runs the
  script in its own process group and signals the whole group (TERM, KILL
  after a grace period); the runner then SIGKILLs whatever is left of the
  group. A timed-out script is reported FAIL with a note in its output.
  The whole run has a limit too (every listed script at its longest, and
  some more; ten scripts' when the directory could not be listed): a script
  that outlives its kill (stuck in uninterruptible I/O on a hung mount)
  fails the node's run instead of holding the job forever, and the runner,
  stopped then, removes its temporary files.

Before it starts anything, the master lists ``hooks_dir`` over the node's
open SFTP session: when the directory is missing or has no visible entry
(the usual case), there is nothing to run, and no process is started on the
node for it. Any other answer (entries, an SFTP error) goes to the runner.

Each result travels back as one line ``HOOK <base64 name> <status> <bytes of
output> <base64 of its last MAX_OUTPUT bytes>`` and the program ends with
``END``, so arbitrary output cannot break the parsing, a truncated answer is
detected, and a chatty script's output is cut on the node, not after it
crossed the network into the master's memory.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import shlex

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, HooksFailure, NodeError, NodeUnreachable
from ganeti_lv.node.transport import HookScriptResult, NodeTransport

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
KILL_GRACE = 2
# Longest output kept per script (the tail, in bytes): job logs stay readable.
MAX_OUTPUT = 64 * 1024
# the whole run's limit beyond its scripts': each script's start and report, and the runner's
SCRIPT_SLACK = 5
RUN_SLACK = 30
# what the limit assumes when the directory could not be listed (the runner lists it)
UNLISTED_ENTRIES = 10
_END = "END"
_RECORD = "HOOK"
_STATUSES = (constants.HKR_SUCCESS, constants.HKR_FAIL, constants.HKR_SKIP)

# The node-side program. {dir}, {timeout}, {grace}, {keep} and {envargs} are
# filled in with shell-quoted values by ``build_runner_script``.
_RUNNER = r"""
LC_ALL=C
export LC_ALL
hooks_dir={dir}
hook_timeout={timeout}
kill_grace={grace}
emit() {{
  printf 'HOOK %s %s %s %s\n' "$(printf '%s' "$1" | base64 -w0)" "$2" \
    "$(wc -c < "$3" | tr -d ' ')" "$(tail -c {keep} "$3" | base64 -w0)"
}}
if [ ! -d "$hooks_dir" ]; then
  echo END
  exit 0
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 143' TERM HUP
cd / || exit 1
for path in "$hooks_dir"/*; do
  [ -e "$path" ] || [ -L "$path" ] || continue
  name=${{path##*/}}
  : > "$tmp/out"
  case $name in
    *[!A-Za-z0-9_-]*) emit "$name" SKIP "$tmp/out"; continue ;;
  esac
  if [ ! -f "$path" ] || [ ! -x "$path" ]; then
    emit "$name" SKIP "$tmp/out"
    continue
  fi
  case $(od -An -tx1 -N4 "$path" | tr -d ' \n') in
    2321*|7f454c46) ;;
    *)
      printf 'Hook script execution error: %s: Exec format error (no #! line)\n' \
        "$path" > "$tmp/out"
      emit "$name" FAIL "$tmp/out"
      continue ;;
  esac
  : > "$tmp/tmsg"
  timeout -v -k "$kill_grace" "$hook_timeout" \
    sh -c 'o=$1; shift; exec "$@" </dev/null >"$o" 2>&1' hook "$tmp/out" \
    env -i {envargs} "$path" </dev/null >/dev/null 2>"$tmp/tmsg" &
  tpid=$!
  wait "$tpid"
  rc=$?
  status=FAIL
  if grep -q 'sending signal' "$tmp/tmsg"; then
    # the group may outlive the script (a child ignoring TERM); no "--":
    # dash's kill would read it as a process id
    kill -KILL "-$tpid" 2>/dev/null
    printf '\n[hook timed out after %s seconds; its process group was killed]\n' \
      "$hook_timeout" >> "$tmp/out"
  elif [ "$rc" -eq 0 ]; then
    status=SUCCESS
  else
    cat "$tmp/tmsg" >> "$tmp/out"
  fi
  emit "$name" "$status" "$tmp/out"
done
echo END
"""


def _validate_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if not ENV_KEY_RE.match(key):
            raise HooksFailure(f"Invalid hooks environment variable name {key!r}", ECODE_INVAL)
        if not isinstance(value, str) or "\0" in value:
            raise HooksFailure(
                f"Invalid value for hooks environment variable {key}: {value!r}", ECODE_INVAL
            )


def build_runner_script(hooks_dir: str, env: dict[str, str], timeout: float) -> str:
    """The sh program that runs ``hooks_dir`` on a node (see the module docstring)."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise HooksFailure(f"Hooks timeout must be a positive number, not {timeout}", ECODE_INVAL)
    _validate_env(env)
    envargs = " ".join(shlex.quote(f"{key}={value}") for key, value in sorted(env.items()))
    return _RUNNER.format(
        dir=shlex.quote(hooks_dir),
        timeout=shlex.quote(f"{timeout:g}"),
        grace=KILL_GRACE,
        keep=MAX_OUTPUT,
        envargs=envargs,
    )


def _b64(field: str) -> str:
    return base64.b64decode(field, validate=True).decode("utf-8", "replace")


def _with_cut(size: str, tail: str) -> str:
    """The output's tail, after a note of what was cut before it on the node."""
    cut = int(size) - MAX_OUTPUT
    return tail if cut <= 0 else f"[... {cut} bytes cut ...]\n" + tail


def parse_runner_output(stdout: str, subdir: str) -> list[HookScriptResult]:
    """Decode the runner's records; ``NodeError`` if the answer is garbled or cut."""
    results: list[HookScriptResult] = []
    ended = False
    for line in stdout.splitlines():
        if line == _END:
            ended = True
            break
        fields = line.split(" ")
        if (
            len(fields) != 5
            or fields[0] != _RECORD
            or fields[2] not in _STATUSES
            or not fields[3].isdigit()
        ):
            raise NodeError(f"Unexpected output from the hooks runner: {line[:200]!r}")
        try:
            name, tail = _b64(fields[1]), _b64(fields[4])
        except (binascii.Error, ValueError) as err:
            raise NodeError(f"Undecodable output from the hooks runner: {err}") from err
        script = f"{subdir}/{name}" if subdir else name
        results.append(HookScriptResult(script, fields[2], _with_cut(fields[3], tail)))
    if not ended:
        raise NodeError("The hooks runner's output was cut short (no END marker)")
    return results


def _visible_entries(ssh: NodeTransport, hooks_dir: str) -> int | None:
    """How many visible entries ``hooks_dir`` has (0 when it is missing), asked over
    SFTP; None when the listing failed (an unreadable directory: the runner looks
    and reports)."""
    try:
        names = ssh.listdir(hooks_dir, missing_ok=True)
    except NodeUnreachable:
        raise
    except NodeError:
        return None
    return sum(1 for name in names if not name.startswith("."))


def run_limit(entries: int, timeout: float) -> float:
    """Seconds the whole run of ``entries`` scripts of ``timeout`` each may take."""
    return entries * (timeout + KILL_GRACE + SCRIPT_SLACK) + RUN_SLACK


def run_hooks_via_ssh(
    ssh: NodeTransport,
    hooks_dir: str,
    env: dict[str, str],
    timeout: float = constants.HOOKS_DEFAULT_TIMEOUT,
) -> list[HookScriptResult]:
    """Run every hook script in ``hooks_dir`` on the node behind ``ssh``.

    Returns one ``HookScriptResult`` per directory entry, in run order; the
    ``script`` field is "<dir basename>/<name>" (e.g.
    "instance-migrate-pre.d/10-check"), as in Ganeti. ``timeout`` is per
    script. Connection problems raise ``NodeUnreachable``/``HostKeyError``, a
    failing runner or one past ``run_limit`` ``NodeError``; invalid env names or
    values ``HooksFailure``.
    """
    program = build_runner_script(hooks_dir, env, timeout)
    entries = _visible_entries(ssh, hooks_dir)
    if entries == 0:
        return []
    limit = run_limit(UNLISTED_ENTRIES if entries is None else entries, timeout)
    result = ssh.run("LC_ALL=C exec /bin/sh -s", input=program.encode(), check=False, timeout=limit)
    if result.exit_status != 0:
        raise NodeError(
            f"Hooks runner on {ssh.node_name} exited with status {result.exit_status}: "
            f"{result.stderr.strip()[-1000:]}",
            ssh.node_name,
        )
    subdir = hooks_dir.rstrip("/").rsplit("/", 1)[-1]
    try:
        return parse_runner_output(result.stdout, subdir)
    except NodeError as err:
        raise NodeError(f"{err.msg} (node {ssh.node_name})", ssh.node_name) from err
