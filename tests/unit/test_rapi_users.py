"""The remote API's users file: Ganeti's format, {HA1} passwords, permissions, editing."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from ganeti_lv.errors import ECODE_EXISTS, ECODE_INVAL, ECODE_NOENT, OpPrereqError
from ganeti_lv.rapi import users

# rapi.rst's example users file
EXAMPLE = """\
# Give Jack and Fred read-only access
jack abc123
fred {cleartext}foo555

# Give write access to an imaginary instance creation script
autocreator xyz789 write

# Hashed password for Jessica
jessica {HA1}7046452df2cbb530877058712cf17bd4 write
lonely
   spaced   {CLEARTEXT}pw   read , write
"""


def _openssl_md5(text: str) -> str:
    """MD5 as the rapi.rst example computes it (``openssl md5``), not with hashlib."""
    out = subprocess.run(
        ["openssl", "md5", "-r"], input=text.encode(), capture_output=True, check=True
    ).stdout
    return out.decode().split()[0]


def test_parse_ganetis_example() -> None:
    table = users.parse_users(EXAMPLE)
    assert sorted(table.users) == ["autocreator", "fred", "jack", "jessica", "spaced"]
    assert table.skipped == [10]  # "lonely": fewer than two fields
    assert not table.users["jack"].can_write and table.users["autocreator"].can_write
    assert table.users["spaced"].options == ("read", "write")
    assert table.users["jessica"].password == "{HA1}7046452df2cbb530877058712cf17bd4"


def test_plain_passwords() -> None:
    table = users.parse_users(EXAMPLE)
    assert users.password_ok(table.users["jack"], "abc123")
    assert not users.password_ok(table.users["jack"], "abc1234")
    assert users.password_ok(table.users["fred"], "foo555")  # {cleartext}, any case
    assert not users.password_ok(table.users["fred"], "{cleartext}foo555")
    assert users.password_ok(table.users["spaced"], "pw")


def test_ha1_is_ganetis_digest() -> None:
    expected = _openssl_md5("jack:Ganeti Remote API:abc123")
    assert users.ha1("jack", "abc123") == expected
    for scheme in ("{HA1}", "{ha1}", "{Ha1}"):
        for digest in (expected, expected.upper()):
            user = users.User("jack", scheme + digest)
            assert users.password_ok(user, "abc123")
            assert not users.password_ok(user, "abc124")
    # the name is part of the digest: another user with the same hash does not match
    assert not users.password_ok(users.User("fred", "{HA1}" + expected), "abc123")


def test_unknown_or_broken_schemes_never_match() -> None:
    for stored in ("{SHA}abc", "{}abc", "{abc", "{X}"):
        assert not users.password_ok(users.User("jack", stored), "abc")
        assert not users.password_ok(users.User("jack", stored), stored)


def _write(path: Any, text: str, mode: int) -> str:
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o620, 0o666])
def test_unsafe_permissions_are_refused(tmp_path: Any, mode: int) -> None:
    path = _write(tmp_path / "users", "jack abc123\n", mode)
    with pytest.raises(users.UsersFileError, match=f"mode {mode:04o}") as err:
        users.read_users(path)
    assert "chmod 600" in str(err.value)
    with pytest.raises(users.UsersFileError):
        users.UsersFile(path).lookup("jack")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_private_files_are_read(tmp_path: Any, mode: int) -> None:
    path = _write(tmp_path / "users", "jack abc123\n", mode)
    found = users.read_users(path)
    assert found is not None and list(found[0].users) == ["jack"]


def test_a_file_of_another_owner_is_refused(tmp_path: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = _write(tmp_path / "users", "jack abc123\n", 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(users.UsersFileError, match="uid 65534"):
        users.read_users(path)


def test_users_file_follows_changes(tmp_path: Any) -> None:
    path = str(tmp_path / "users")
    uf = users.UsersFile(path)
    assert uf.lookup("jack") is None  # no file: no users
    _write(tmp_path / "users", "jack abc123\n", 0o600)
    assert uf.lookup("jack") == users.User("jack", "abc123")
    _write(tmp_path / "users", "jack abc123 write\nfred foo\n", 0o600)
    jack = uf.lookup("jack")
    assert jack is not None and jack.can_write and uf.lookup("fred") is not None
    os.chmod(path, 0o644)
    with pytest.raises(users.UsersFileError):
        uf.lookup("jack")
    os.chmod(path, 0o600)
    assert uf.lookup("fred") == users.User("fred", "foo")


def test_add_list_remove_keep_comments_and_hash_by_default(tmp_path: Any) -> None:
    path = str(tmp_path / "rapi" / "users")
    users.add_user(path, users.user_line("jack", "abc123", write=True))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    with open(path, encoding="utf-8") as fobj:
        text = fobj.read()
    assert text == f"jack {{HA1}}{users.ha1('jack', 'abc123')} write\n"
    assert "abc123" not in text
    with open(path, "a", encoding="utf-8") as fobj:
        fobj.write("# a comment\n")
    users.add_user(path, users.user_line("fred", "foo 555", write=False))
    with pytest.raises(OpPrereqError) as err:
        users.add_user(path, users.user_line("fred", "x", write=False))
    assert err.value.ecode == ECODE_EXISTS
    users.add_user(path, users.user_line("fred", "bar", write=True, plain=True), replace=True)
    listed = users.list_users(path)
    assert [(u.name, u.can_write) for u in listed] == [("fred", True), ("jack", True)]
    assert users.password_ok(listed[0], "bar") and users.password_ok(listed[1], "abc123")
    users.remove_user(path, "jack")
    with pytest.raises(OpPrereqError) as err:
        users.remove_user(path, "jack")
    assert err.value.ecode == ECODE_NOENT
    with open(path, encoding="utf-8") as fobj:
        assert fobj.read() == "# a comment\nfred {CLEARTEXT}bar write\n"


def test_editing_refuses_bad_names_passwords_and_an_unsafe_file(tmp_path: Any) -> None:
    for name in ("", "#jack", "ja:ck", "ja ck"):
        with pytest.raises(OpPrereqError) as err:
            users.user_line(name, "pw", write=False)
        assert err.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError):
        users.user_line("jack", "", write=False)
    with pytest.raises(OpPrereqError, match="whitespace"):
        users.user_line("jack", "a b", write=False, plain=True)
    path = _write(tmp_path / "users", "jack abc123\n", 0o644)
    with pytest.raises(users.UsersFileError):
        users.add_user(path, users.user_line("fred", "x", write=False))
    with open(path, encoding="utf-8") as fobj:
        assert fobj.read() == "jack abc123\n"
