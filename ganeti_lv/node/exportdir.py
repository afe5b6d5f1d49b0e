"""Export directories on a node, handled over SSH (node-local, never the master's disk).

Layout in ``<export_dir>``: ``<instance>/`` is a complete export (config.ini,
manifest.json, disk images; an export Ganeti wrote has config.ini and its
dumps only); ``<instance>.new/`` an export being written;
``<instance>.old/`` the previous export during the publish step.
A directory named as an instance that holds no config.ini is no export (an
export dir shared with other files, or a mistaken one): it is never
replaced nor removed.

Publishing (``finalize``) writes config.ini and the manifest last, syncs,
then: rename ``<instance>`` to ``<instance>.old``, rename ``<instance>.new``
to ``<instance>``, sync the directory, delete ``.old``. A crash leaves either
the previous export or the new one in place; ``prepare``, ``abort`` and
``remove`` first restore an ``.old`` that lost its successor.

Each script on an export (prepare, publish, abort, remove, remove the
leftovers) holds ``<export_dir>/.<instance>.lock`` (``flock``) while it
runs: a publish whose answer was lost may still run on the node when the
master's clean-up of the failed export starts, and the two must not mix
their renames. The lock files stay (one small file per instance name).

Removing renames the export (and a previous one put aside) to
``<instance>.new`` before deleting it, so a removal cut short leaves a
stale leftover, never an export listed as complete, or put back, with
files missing.

The rename of ``.new`` into place is the export's commit point: a failure
before it publishes nothing (``abort`` then puts the previous export back),
and from it on the export is complete and visible, so what fails after it
(syncing the directory, deleting ``.old``) is reported, not fatal
(``PublishedExport.left``).
"""

from __future__ import annotations

import shlex

from ganeti_lv.errors import ECODE_INVAL, NodeError
from ganeti_lv.exportinfo import CONFIG_FILE, MANIFEST_FILE, export_dir_owner
from ganeti_lv.hypervisor.export_types import (
    ExportData,
    ExportEntry,
    ExportFile,
    PublishedExport,
)
from ganeti_lv.names import instance_name_problem
from ganeti_lv.node.transport import Runner

_RECOVER = """
if [ -d "$D.old" ] && [ ! -d "$D" ]; then mv -- "$D.old" "$D"; fi
rm -rf -- "$D.old"
"""

# "$D" when present must be an export: what else is there is left alone
_ONLY_AN_EXPORT = f"""
if [ -d "$D" ] && [ ! -f "$D"/{CONFIG_FILE} ]; then
  echo "$D holds no export (no {CONFIG_FILE}): left as it is; move or remove it by hand" >&2
  exit 1
fi
"""


def lock_file(export_dir: str, name: str) -> str:
    """The file the scripts on export ``name`` hold while they run (module docstring)."""
    return f"{export_dir}/.{name}.lock"


def _dirs(export_dir: str, name: str) -> str:
    """The scripts' start: stop at the first error, ``$E`` and ``$D`` set, the export's
    lock held (once the export dir exists: one that does not has nothing to mix up)."""
    problem = instance_name_problem(name)
    if problem is not None:
        raise NodeError(problem, ecode=ECODE_INVAL)
    lock = shlex.quote(lock_file(export_dir, name))
    return (
        f'set -e\nE={shlex.quote(export_dir)}\nD="$E"/{shlex.quote(name)}\n'
        f'if [ -d "$E" ]; then exec 9>{lock}; flock 9; fi\n'
    )


def _run(runner: Runner, node: str, script: str, what: str, stdin: bytes | None = None) -> str:
    res = runner.run(["sh", "-c", script], input=stdin, check=False, timeout=120)
    if res.exit_status != 0:
        raise NodeError(f"{what} on {node} failed: {res.output.strip()[-1000:]}", node)
    return res.stdout


def prepare(runner: Runner, node: str, export_dir: str, name: str) -> str:
    """Create an empty ``<name>.new`` (removing a stale one); return its path.

    NodeError, before anything is copied, when ``<name>`` holds no export.
    """
    script = _dirs(export_dir, name) + _RECOVER + _ONLY_AN_EXPORT
    script += 'mkdir -p -- "$E"\nrm -rf -- "$D.new"\n'
    script += 'mkdir -- "$D.new"\necho "$D.new"\n'
    return _run(runner, node, script, "Preparing the export directory").strip()


# Publishing, in sh with coreutils (starting python3 costs a tenth of a second
# on a busy node). stdin: the manifest ($1 bytes, read exactly by dd), then
# config.ini. ``sync FILE...`` fsyncs each file or directory named.
_PUBLISH = (
    _ONLY_AN_EXPORT
    + """
[ -d "$D.new" ] || { echo "no export in progress: $D.new" >&2; exit 1; }
N="$D.new"
M="$N"/MANIFEST
C="$N"/CONFIG
if [ "$1" -gt 0 ]; then
  dd of="$M.tmp" bs="$1" count=1 iflag=fullblock status=none
else
  : > "$M.tmp"
fi
[ "$(wc -c < "$M.tmp")" -eq "$1" ] || { echo "manifest truncated in transfer" >&2; exit 1; }
cat > "$C.tmp"
sync -- "$M.tmp" "$C.tmp"
mv -f -- "$M.tmp" "$M"
mv -f -- "$C.tmp" "$C"
sync -- "$N"/* "$N"
if [ -d "$D" ]; then
  rm -rf -- "$D.old"
  mv -- "$D" "$D.old"
fi
mv -- "$N" "$D"
echo "PUBLISHED $D"
set +e
left() { printf 'LEFT %s\n' "$(printf '%s' "$*" | tr '\n' ' ')"; }
out=$(sync -- "$E" 2>&1) || left "$E not synced after the rename (it may not survive a crash): $out"
out=$(rm -rf -- "$D.old" 2>&1) || left "the previous export $D.old not removed: $out"
exit 0
"""
)


def finalize(
    runner: Runner, node: str, export_dir: str, name: str, config_text: str, manifest_text: str
) -> PublishedExport:
    """Write config.ini and the manifest into ``.new`` and publish it atomically.

    Every file of the export and both directories are fsynced (the files
    themselves, not the whole filesystem) before and after the renames.
    NodeError when it failed before the rename into place (nothing was
    published); once the export is in place, what failed after is in
    ``left`` (see the module docstring).
    """
    manifest = manifest_text.encode()
    script = _dirs(export_dir, name) + _PUBLISH.replace("MANIFEST", MANIFEST_FILE).replace(
        "CONFIG", CONFIG_FILE
    )
    res = runner.run(
        ["sh", "-c", script, "sh", str(len(manifest))],
        input=manifest + config_text.encode(),
        check=False,
        timeout=120,
    )
    lines = res.stdout.splitlines()
    path = next((ln.removeprefix("PUBLISHED ") for ln in lines if ln.startswith("PUBLISHED ")), "")
    if not path:
        raise NodeError(
            f"Publishing the export on {node} failed: {res.output.strip()[-1000:]}", node
        )
    left = [ln.removeprefix("LEFT ") for ln in lines if ln.startswith("LEFT ")]
    if res.exit_status != 0:  # ended (killed?) after the rename
        left.append(f"publishing ended with exit status {res.exit_status} after the rename")
    return PublishedExport(path, left)


def abort(runner: Runner, node: str, export_dir: str, name: str) -> None:
    """Remove ``<name>.new``; the complete export (if any) is untouched.

    A previous export that a publish which failed before its rename into
    place had renamed aside (``.old`` without ``<name>``) is put back.
    """
    script = _dirs(export_dir, name) + _RECOVER + 'rm -rf -- "$D.new"\n'
    _run(runner, node, script, "Removing .new")


def remove(runner: Runner, node: str, export_dir: str, name: str) -> bool:
    """Remove the export and its leftovers; True if a complete export existed.

    NodeError, and nothing removed, when ``<name>`` holds no export.
    """
    script = _dirs(export_dir, name) + _ONLY_AN_EXPORT + _REMOVE
    return _run(runner, node, script, "Removing the export").strip() == "1"


_REMOVE = """
found=0
rm -rf -- "$D.new"
for d in "$D.old" "$D"; do  # the complete export last: kept if this is cut short
  if [ -d "$d" ]; then found=1; mv -- "$d" "$D.new"; rm -rf -- "$D.new"; fi
done
echo $found
"""


# Only the leftovers: an ``.old`` beside a complete export is removed, one
# that lost its successor is the export and is restored (as _RECOVER); an
# ``.new`` is removed (its export is locked out by the instance lock).
_REMOVE_STALE = """
if [ -d "$D.old" ]; then
  if [ -d "$D" ]; then rm -rf -- "$D.old"; echo "removed $D.old"
  else mv -- "$D.old" "$D"; echo "restored $D"; fi
fi
if [ -d "$D.new" ]; then rm -rf -- "$D.new"; echo "removed $D.new"; fi
"""


def remove_stale(runner: Runner, node: str, export_dir: str, name: str) -> list[str]:
    """Remove ``<name>.new`` (and a superfluous ``.old``), never the complete export.

    Returns what was done, one line each ("removed PATH", "restored PATH").
    """
    script = _dirs(export_dir, name) + _REMOVE_STALE
    out = _run(runner, node, script, "Removing the incomplete export")
    return [line for line in out.splitlines() if line.strip()]


_LIST = r"""
E="$1"
[ -d "$E" ] || exit 0
for d in "$E"/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  ts=$(sed -n 's/^timestamp *= *//p' "$d/config.ini" 2>/dev/null | head -n1)
  complete=0
  [ -f "$d/config.ini" ] && complete=1
  kind=ganeti
  [ -f "$d/manifest.json" ] && kind=ganeti_lv
  echo "$(basename "$d") $complete ${ts:-0} $kind"
done
"""


def list_exports(runner: Runner, node: str, export_dir: str) -> list[ExportEntry]:
    """Every directory of the export dir: complete exports and stale leftovers.

    An export is complete when its config.ini is there; one with a
    manifest.json beside it is ganeti_lv's, one without is Ganeti's.
    """
    res = runner.run(["sh", "-c", _LIST, "sh", export_dir], check=False, timeout=60)
    if res.exit_status != 0:
        raise NodeError(f"Listing exports on {node} failed: {res.output.strip()}", node)
    out = res.stdout
    entries = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        dirname, complete, ts, kind = parts
        name, stale = export_dir_owner(dirname)
        entries.append(
            ExportEntry(
                instance=name,
                node=node,
                path=f"{export_dir}/{dirname}",
                complete=complete == "1" and not stale,
                timestamp=int(ts) if ts.isdigit() else 0,
                stale=stale,
                kind=kind,
            )
        )
    return entries


# Reading an export: config.ini, NUL, "M" and manifest.json (nothing if none), NUL, then
# one line per regular file of the directory (symbolic links are not
# followed): size, the first HEAD_BYTES bytes in hex ("-" if empty), name.
HEAD_BYTES = 512  # a tar header's magic is at 257
_READ = r"""
D="$1"
[ -d "$D" ] || { echo "No export directory $D" >&2; exit 1; }
[ -f "$D/config.ini" ] || { echo "No complete export in $D (no config.ini)" >&2; exit 1; }
cat "$D/config.ini"
printf "\0"
if [ -f "$D/manifest.json" ]; then printf M; cat "$D/manifest.json"; fi
printf "\0"
for f in "$D"/* "$D"/.[!.]*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  h=$(od -An -v -tx1 -N"$2" "$f" | tr -d ' \n')
  printf '%s %s %s\n' "$(stat -c %s "$f")" "${h:--}" "${f##*/}"
done
"""


def read(runner: Runner, node: str, path: str) -> ExportData:
    """config.ini, manifest.json (if any) and the files of the export in ``path``."""
    res = runner.run(["sh", "-c", _READ, "sh", path, str(HEAD_BYTES)], check=False, timeout=120)
    if res.exit_status != 0:
        raise NodeError(
            f"Reading the export in {path} on {node} failed: {res.output.strip()[-1000:]}", node
        )
    config_text, _, rest = res.stdout.partition("\0")
    manifest_part, _, listing = rest.partition("\0")
    manifest_text = manifest_part[1:] if manifest_part.startswith("M") else None
    files: dict[str, ExportFile] = {}
    for line in listing.splitlines():
        size, head, name = (line.split(" ", 2) + ["", ""])[:3]
        if size.isdigit() and name:
            files[name] = ExportFile(name, int(size), "" if head == "-" else head)
    return ExportData(node, path, config_text, manifest_text, files)
