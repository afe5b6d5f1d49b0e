"""Parsing helpers of the CLI and units: sizes, key=value lists, indexed specs, tables."""

from __future__ import annotations

import pytest

from ganeti_lv.cli import common
from ganeti_lv.cli.main import build_parser
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.units import coerce_beparams, parse_bool, parse_size


@pytest.mark.parametrize(
    ("text", "mib"),
    [("512", 512), ("512M", 512), ("1G", 1024), ("1g", 1024), ("1.5G", 1536), ("2GiB", 2048),
     ("1T", 1048576), ("1024K", 1), ("1K", 1), (64, 64), (".5G", 512), ("2.G", 2048),
     ("10mb", 10)],
)  # fmt: skip
def test_parse_size(text: object, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize(
    "text",
    ["", "G", "1X", "-1", "1 G B", "ten", True, None, -5, "9" * 400 + "T", "512B", "5ib", "."],
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(OpPrereqError) as info:
        parse_size(text)
    assert info.value.ecode == ECODE_INVAL


def test_kv_list_values_with_equals_and_quotes() -> None:
    parsed = common.parse_kv_list(
        'kernel_args="console=ttyS0 seed=x patmb=16",cpu_type=qemu64,acpi'
    )
    assert parsed == {
        "kernel_args": "console=ttyS0 seed=x patmb=16",
        "cpu_type": "qemu64",
        "acpi": "yes",
    }
    assert common.parse_kv_list("kernel_args=a=b c=d") == {"kernel_args": "a=b c=d"}
    assert common.parse_kv_list(r"x=a\,b,no_acpi") == {"x": "a,b", "acpi": "no"}
    assert common.parse_kv_list("x='it''s'") == {"x": "its"}
    # Ganeti's "-key": back to the default
    assert common.parse_kv_list("-kernel_args,acpi") == {"kernel_args": None, "acpi": "yes"}
    with pytest.raises(OpPrereqError, match="'-link' .* has no meaning in --net"):
        common.collect_indexed(["0:-link"], "--net")


@pytest.mark.parametrize("text", ['x="open', "x=1,x=2", "=v", "a=b\\"])
def test_kv_list_rejects(text: str) -> None:
    with pytest.raises(OpPrereqError):
        common.parse_kv_list(text)


def test_hvparams_in_ganetis_form_with_the_kvm_hypervisor() -> None:
    # Ganeti's -H is HYPERVISOR:key=value,...; "kvm" alone gives no parameters
    assert common.parse_hvparams("kvm:kernel_path=/x,no_acpi") == {
        "kernel_path": "/x",
        "acpi": "no",
    }
    assert common.parse_hvparams("kvm") == common.parse_hvparams("kvm:") == {}
    # the plain form stays, a ':' in a value included
    assert common.parse_hvparams("kernel_args=console=ttyS0:x,acpi") == {
        "kernel_args": "console=ttyS0:x",
        "acpi": "yes",
    }
    assert common.parse_hvparams("kernel_args='a:b'") == {"kernel_args": "a:b"}


@pytest.mark.parametrize("text", ["xen-pvm:kernel_path=/x", "lxc", "fake:", "bhyve:acpi"])
def test_hvparams_of_another_hypervisor_refused(text: str) -> None:
    with pytest.raises(OpPrereqError, match="runs kvm only") as err:
        common.parse_hvparams(text)
    assert err.value.ecode == ECODE_INVAL


def test_indexed_specs() -> None:
    assert common.collect_indexed(["1:size=2G", "0:size=1G,mode=ro"], "--disk") == [
        {"size": "1G", "mode": "ro"},
        {"size": "2G"},
    ]
    assert common.collect_indexed(["0"], "--net") == [{}]
    for bad in (["x:size=1"], ["0:size=1", "0:size=2"], ["2:size=1"], ["-1:size=1"]):
        with pytest.raises(OpPrereqError):
            common.collect_indexed(bad, "--disk")


def test_beparams_memory_alias_and_bools() -> None:
    defaults = {"maxmem": 128, "minmem": 128, "vcpus": 1, "auto_balance": True}
    assert coerce_beparams({"memory": "1G", "auto_balance": "no"}, defaults) == {
        "maxmem": 1024,
        "minmem": 1024,
        "auto_balance": False,
    }
    with pytest.raises(OpPrereqError, match="cannot be combined"):
        coerce_beparams({"memory": "1G", "maxmem": "2G"}, defaults)
    with pytest.raises(OpPrereqError, match="at least 1"):
        coerce_beparams({"vcpus": "0"}, defaults)
    assert parse_bool("Yes") is True
    with pytest.raises(OpPrereqError):
        parse_bool("perhaps")


def test_format_table() -> None:
    rows = [["a", 1, True, ["x", "y"]], ["bbb", None, False, []]]
    assert common.format_table(["N", "C", "B", "L"], rows) == [
        "N   C B L",
        "a   1 Y x,y",
        "bbb - N",
    ]
    assert common.format_table(["N", "C"], [["a", 1]], separator=":", no_headers=True) == ["a:1"]


def test_parse_fields() -> None:
    known = ("name", "status", "pnode")
    assert common.parse_fields(None, ("name",), known) == ["name"]
    assert common.parse_fields("+status", ("name",), known) == ["name", "status"]
    with pytest.raises(OpPrereqError, match="Unknown output field"):
        common.parse_fields("name,bogus", ("name",), known)


def test_extension_modules_can_add_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module's register(registry) can extend an existing group and add a new one."""
    import types

    from ganeti_lv.cli import main as main_mod

    ext = types.ModuleType("ext")

    def register(registry: common.CommandRegistry) -> None:
        registry.command("instance", "frobnicate", lambda o, e: 0, help="x")
        registry.command("xgroup", "list", lambda o, e: 0, help="y")

    ext.register = register  # type: ignore[attr-defined]
    original = main_mod._command_modules
    monkeypatch.setattr(main_mod, "_command_modules", lambda: [*original(), ext])
    parser = build_parser()
    opts = parser.parse_args(["instance", "frobnicate"])
    assert opts.group == "instance" and opts.command == "frobnicate"
    assert parser.parse_args(["xgroup", "list"]).command == "list"
    # the core commands are still there
    assert parser.parse_args(["instance", "list"]).command == "list"


def test_rich_table_on_terminals() -> None:
    text = common.render_rich_table(["Node", "MFree"], [["node1", 100], ["n2", None]])
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 3
    assert "Node" in lines[0] and "MFree" in lines[0]
    assert lines[1].split() == ["node1", "100"] and lines[2].split() == ["n2", "-"]
    # values are shown as they are, never read as rich markup
    text = common.render_rich_table(["Args"], [["console=ttyS0 [quiet] [/]"]])
    assert "console=ttyS0 [quiet] [/]" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["nosuch", "list"],  # no such group
        ["instance", "nosuch"],  # no such command
        ["instance", "migrate", "--no-such-option", "web1"],
        ["instance", "migrate"],  # missing argument
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "gnt-lv" in capsys.readouterr().err


def test_an_unknown_group_names_every_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nosuch", "list"])
    err = capsys.readouterr().err
    for group in ("cluster", "node", "instance", "job", "backup", "debug"):
        assert group in err


def test_group_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["instance", "-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("add", "list", "migrate", "failover", "remove"):
        assert command in out


def test_every_group_is_described_in_the_top_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-h"])
    out = capsys.readouterr().out
    listed = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    groups = [line.split() for line in listed.splitlines() if line.startswith("    ")]
    assert [words[0] for words in groups] == [
        "cluster", "node", "instance", "job", "backup", "debug", "rapi"
    ]  # fmt: skip
    assert all(len(words) > 1 for words in groups), groups  # each with its help


def test_an_abbreviated_option_still_parses() -> None:
    """``--data /d`` (argparse's abbreviation of --data-dir)."""
    opts = build_parser().parse_args(["--data", "/d", "instance", "list"])
    assert (opts.data_dir, opts.group, opts.command) == ("/d", "instance", "list")
    opts = build_parser().parse_args(["--data", "instance", "node", "list"])
    assert (opts.data_dir, opts.group, opts.command) == ("instance", "node", "list")


def test_parse_size_notes_what_it_rounds_up() -> None:
    notes: list[str] = []
    assert parse_size("0.5M", "size of disk 0", notes) == 1
    assert parse_size("1.5G", "size of disk 1", notes) == 1536
    assert parse_size(" 3K ", "x", notes) == 1
    assert notes == [
        "size of disk 0 0.5M is not a whole number of MiB: rounded up to 1 MiB",
        "x 3K is not a whole number of MiB: rounded up to 1 MiB",
    ]
