"""The hooks runner's program run by the local /bin/sh on real script files.

No SSH: the program ``run_hooks_via_ssh`` sends to a node is run here as
the node runs it, and its choice of what runs, in which order and what is
skipped is compared with Ganeti's rule (utils.RunParts): the visible names
(no leading dot) in sorted order; a name matching ``^[a-zA-Z0-9_-]+$`` that
is a regular file (symlinks followed) with an executable bit runs, every
other visible entry is reported skipped with no output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ganeti_lv import constants
from ganeti_lv.node.hooks_runner import build_runner_script, parse_runner_output

GANETI_NAME_MASK = re.compile(r"^[a-zA-Z0-9_-]+$")


def _run_locally(hooks_dir: Path, env: dict[str, str]) -> list[tuple[str, str, str]]:
    program = build_runner_script(str(hooks_dir), env, timeout=10)
    done = subprocess.run(
        ["/bin/sh", "-s"],
        input=program.encode(),
        capture_output=True,
        env={"LC_ALL": "C", "PATH": constants.HOOKS_PATH},
        check=True,
        timeout=60,
    )
    results = parse_runner_output(done.stdout.decode(), hooks_dir.name)
    return [(r.script.split("/", 1)[1], r.status, r.output) for r in results]


def _ganeti_choice(hooks_dir: Path) -> list[tuple[str, str]]:
    """What Ganeti's runner does with each entry: RUN or SKIP, in its order."""
    out = []
    for name in sorted(n for n in os.listdir(hooks_dir) if not n.startswith(".")):
        path = hooks_dir / name
        runs = bool(GANETI_NAME_MASK.match(name)) and path.is_file() and os.access(path, os.X_OK)
        out.append((name, "RUN" if runs else constants.HKR_SKIP))
    return out


def test_what_runs_in_which_order_and_what_is_skipped_is_ganetis(tmp_path: Path) -> None:
    hooks_dir = tmp_path / "instance-add-pre.d"
    hooks_dir.mkdir()
    record = tmp_path / "ran"

    def script(name: str, mode: int = 0o755) -> None:
        path = hooks_dir / name
        path.write_text(f"#!/bin/sh\necho '{name}' >> {record}\necho ok\n")
        path.chmod(mode)

    for name in ("b-2", "a_1", "10-x", "Z9", "-dash", "9", "_u"):
        script(name)
    for name in ("x.sh", "with space", "tilde~", "café", ".hidden", ".10-dot"):
        script(name)
    script("20-noexec", mode=0o644)
    script("21-owner-exec", mode=0o744)
    (hooks_dir / "30-dir").mkdir()
    (hooks_dir / "40-link").symlink_to(hooks_dir / "10-x")
    (hooks_dir / "41-dangling").symlink_to(hooks_dir / "nowhere")
    (hooks_dir / "42-dirlink").symlink_to(hooks_dir / "30-dir")
    os.mkfifo(hooks_dir / "50-fifo")

    results = _run_locally(hooks_dir, {"PATH": constants.HOOKS_PATH})

    expected = _ganeti_choice(hooks_dir)
    assert [name for name, _status, _output in results] == [name for name, _ in expected]
    for (name, status, output), (_, choice) in zip(results, expected, strict=True):
        if choice == constants.HKR_SKIP:
            assert (name, status, output) == (name, constants.HKR_SKIP, "")
        else:
            assert (name, status, output) == (name, constants.HKR_SUCCESS, "ok\n")
    ran = record.read_text().split("\n")[:-1]
    assert ran == [name if name != "40-link" else "10-x" for name, c in expected if c == "RUN"]
    # the rule's edges, said plainly
    skipped = {name for name, status, _ in results if status == constants.HKR_SKIP}
    assert skipped == {
        "x.sh",
        "with space",
        "tilde~",
        "café",
        "20-noexec",
        "30-dir",
        "41-dangling",
        "42-dirlink",
        "50-fifo",
    }
    assert not any(name.startswith(".") for name, _, _ in results)


def test_only_hidden_entries_or_no_directory_give_no_results(tmp_path: Path) -> None:
    hooks_dir = tmp_path / "instance-add-post.d"
    assert _run_locally(hooks_dir, {}) == []
    hooks_dir.mkdir()
    (hooks_dir / ".hidden").write_text("#!/bin/sh\nexit 1\n")
    (hooks_dir / ".hidden").chmod(0o755)
    assert _run_locally(hooks_dir, {}) == []


def _exec_directly(path: Path) -> str:
    """What executing ``path`` itself gives (Ganeti runs each script so): RUN or FAIL."""
    try:
        subprocess.run([str(path)], env={}, capture_output=True, timeout=30, check=False)
    except OSError:
        return constants.HKR_FAIL
    return "RUN"


def test_a_script_without_a_hash_bang_line_fails_unrun_as_a_direct_exec_does(
    tmp_path: Path,
) -> None:
    hooks_dir = tmp_path / "instance-migrate-pre.d"
    hooks_dir.mkdir()
    record = tmp_path / "ran"
    entries = {
        "10-no-hash-bang": f"echo 10 >> {record}\n",
        "20-empty": "",
        "30-hash-bang": f"#!/bin/sh\necho 30 >> {record}\n",
        "40-hash-bang-no-space": f"#!/bin/sh -e\necho 40 >> {record}\n",
    }
    for name, body in entries.items():
        (hooks_dir / name).write_text(body)
        (hooks_dir / name).chmod(0o755)
    (hooks_dir / "50-elf").symlink_to(shutil.which("true") or "/bin/true")

    results = {name: (status, output) for name, status, output in _run_locally(hooks_dir, {})}
    assert record.read_text() == "30\n40\n"  # the two without #! never ran

    for name in (*entries, "50-elf"):
        want = _exec_directly(hooks_dir / name)
        got = results[name][0]
        assert (name, got) == (name, constants.HKR_SUCCESS if want == "RUN" else want)
    for name in ("10-no-hash-bang", "20-empty"):
        status, output = results[name]
        assert status == constants.HKR_FAIL
        assert output == (
            f"Hook script execution error: {hooks_dir / name}: Exec format error (no #! line)\n"
        )
