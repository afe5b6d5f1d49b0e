"""Sizes of files and free space on a node, asked with the node's shell.

The checks before an export (``stat_files``, ``free_space``) run the node's
``stat`` (coreutils or busybox) from ``sh``: a few milliseconds, where
starting python3 costs a tenth of a second on a busy node. The figures
are those of os.stat (symlinks followed) and os.statvfs (``f_bavail``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ganeti_lv.errors import NodeError, RemoteCommandError
from ganeti_lv.node.transport import Runner

_STAT_SCRIPT = r"""
for p do
  if [ -e "$p" ]; then stat -L -c 'Y %s %b %B' -- "$p" || exit 1; else echo N; fi
done
"""
# A path that does not exist yet (a fresh export dir) is measured at its
# nearest existing parent, like the helper's ``free_bytes``.
_DF_SCRIPT = r"""
p=$1
while [ ! -e "$p" ]; do
  case $p in
    */*) p=${p%/*}; [ -n "$p" ] || p=/ ;;
    *) p=. ;;
  esac
done
exec stat -L -f -c '%a %S' -- "$p"
"""


# Allocated bytes under each directory, as ``du`` counts them (0 when missing).
_DU_SCRIPT = r"""
for p do
  n=$(du -s -B1 -- "$p" 2>/dev/null | cut -f1)
  echo "${n:-0}"
done
"""


def _run_script(
    runner: Runner, node: str, script: str, args: Sequence[str], timeout: float
) -> list[str]:
    """Output lines of ``sh -c script sh args...`` on a node; NodeError if it failed.

    The scripts only read (stat, df): one that ended without an exit status
    (-1: the session or the connection went away under it) is asked once more.
    """
    argv = ["sh", "-c", script, "sh", *args]
    result = runner.run(argv, timeout=timeout, check=False)
    if result.exit_status == -1:
        result = runner.run(argv, timeout=timeout, check=False)
    if result.exit_status != 0:
        raise RemoteCommandError(
            f"stat on {node} failed (exit {result.exit_status}): {result.stderr.strip()}",
            node,
            result.exit_status,
            result.output,
        )
    return result.stdout.splitlines()


def _bad_output(node: str, lines: list[str]) -> NodeError:
    return NodeError(f"unexpected output of stat on {node}: {' | '.join(lines)[:200]!r}", node)


def stat_files(
    runner: Runner, node: str, paths: Sequence[str], timeout: float = 60
) -> list[dict[str, Any]]:
    """[{path, exists, size, allocated}] of files on a node (symlinks followed)."""
    lines = _run_script(runner, node, _STAT_SCRIPT, paths, timeout)
    if len(lines) != len(paths):
        raise _bad_output(node, lines)
    out: list[dict[str, Any]] = []
    for path, line in zip(paths, lines, strict=True):
        fields = line.split()
        if fields == ["N"]:
            out.append({"path": path, "exists": False, "size": 0, "allocated": 0})
        elif len(fields) == 4 and fields[0] == "Y" and all(f.isdigit() for f in fields[1:]):
            size, blocks, unit = (int(f) for f in fields[1:])
            out.append({"path": path, "exists": True, "size": size, "allocated": blocks * unit})
        else:
            raise _bad_output(node, lines)
    return out


def free_space(runner: Runner, node: str, path: str, timeout: float = 60) -> int:
    """Bytes free (to non-root users, like statvfs f_bavail) on the filesystem of ``path``."""
    lines = _run_script(runner, node, _DF_SCRIPT, [path], timeout)
    fields = lines[0].split() if len(lines) == 1 else []
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        raise _bad_output(node, lines)
    return int(fields[0]) * int(fields[1])


def dir_usage(runner: Runner, node: str, paths: Sequence[str], timeout: float = 60) -> list[int]:
    """Bytes allocated under each directory of ``paths`` on a node (0 for a missing one)."""
    if not paths:
        return []
    lines = _run_script(runner, node, _DU_SCRIPT, paths, timeout)
    if len(lines) != len(paths) or not all(line.strip().isdigit() for line in lines):
        raise _bad_output(node, lines)
    return [int(line) for line in lines]
