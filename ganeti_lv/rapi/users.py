"""The remote API's users file, in Ganeti's format.

One user per line: ``name password [options]``, fields separated by
whitespace, options separated by commas; ``write`` lets the user make
changes (every PUT, POST and DELETE), without it the user may only read;
``read`` (or ``write``) is needed for the resources Ganeti keeps to such
users (an instance's console).
Empty lines and lines starting with ``#`` are ignored, so are lines with
fewer than two fields. A password is either plain (``{CLEARTEXT}secret``,
or ``secret`` when it does not start with ``{``) or Ganeti's ``{HA1}``
hash: the hex MD5 of ``name:Ganeti Remote API:password`` (RFC 2617's H(A1),
e.g. ``echo -n 'jack:Ganeti Remote API:abc123' | md5sum``). Scheme prefixes
are not case sensitive.

The file holds secrets, so it is used only when no other user can read it
or change it: a file readable or writable by others, writable by its group,
or owned by neither root nor the daemon's user is refused with a clear error
(``UsersFileError``). The daemon reads it again whenever it changes
(``UsersFile``), so ``gnt-lv rapi add-user`` takes effect at once.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
import threading
from dataclasses import dataclass, field

from ganeti_lv.config import write_file_atomically
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ConfigurationError,
    OpPrereqError,
)
from ganeti_lv.rapi.httperrors import AUTH_REALM

ACCESS_WRITE = "write"
ACCESS_READ = "read"
SCHEME_CLEARTEXT = "{CLEARTEXT}"
SCHEME_HA1 = "{HA1}"
# others may neither read nor write it; its group may not write it
_UNSAFE_BITS = stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP


class UsersFileError(ConfigurationError):
    """The users file cannot be used (unsafe permissions, unreadable)."""

    ecode = ECODE_ENVIRON


@dataclass(frozen=True)
class User:
    """One user of the users file: name, password as written, options."""

    name: str
    password: str
    options: tuple[str, ...] = ()

    @property
    def can_write(self) -> bool:
        """True when the user may make changes (option ``write``)."""
        return ACCESS_WRITE in self.options


@dataclass
class UsersTable:
    """The users of a users file, and the numbers of the lines that were skipped."""

    users: dict[str, User] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def ha1(name: str, password: str, realm: str = AUTH_REALM) -> str:
    """Ganeti's H(A1) of a password: hex MD5 of ``name:realm:password``."""
    digest = f"{name}:{realm}:{password}".encode()
    return hashlib.md5(digest, usedforsecurity=False).hexdigest()


def parse_users(text: str) -> UsersTable:
    """The users of a users file's text (see the module docstring)."""
    table = UsersTable()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            table.skipped.append(number)
            continue
        options: tuple[str, ...] = ()
        if len(parts) == 3:
            options = tuple(opt.strip() for opt in parts[2].split(",") if opt.strip())
        table.users[parts[0]] = User(parts[0], parts[1], options)
    return table


def password_ok(user: User, password: str, realm: str = AUTH_REALM) -> bool:
    """True when ``password`` is the user's (plain or {HA1}); an unknown scheme never is."""
    expected = user.password
    if not expected.startswith("{"):
        expected = SCHEME_CLEARTEXT + expected
    end = expected.find("}", 1)
    if end <= 1:
        return False
    scheme, value = expected[: end + 1].upper(), expected[end + 1 :]
    if scheme == SCHEME_CLEARTEXT:
        return hmac.compare_digest(value.encode(), password.encode())
    if scheme == SCHEME_HA1:
        return hmac.compare_digest(value.lower().encode(), ha1(user.name, password, realm).encode())
    return False


def check_safe(path: str, st: os.stat_result) -> None:
    """UsersFileError unless only its owner (root or this process's user) may read it."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & _UNSAFE_BITS:
        raise UsersFileError(
            f"The remote API users file {path} has mode {mode:04o}: others may read or change"
            f" it; refusing it (make it private: chmod 600 {path})"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise UsersFileError(
            f"The remote API users file {path} belongs to uid {st.st_uid}, not to this"
            f" daemon's user; refusing it (chown it to uid {os.geteuid()})"
        )


def read_users(path: str) -> tuple[UsersTable, os.stat_result] | None:
    """The users file's table and the stat of what was read; None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        raise UsersFileError(f"Cannot read the remote API users file {path}: {err}") from err
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fobj:
        st = os.fstat(fobj.fileno())
        check_safe(path, st)
        return parse_users(fobj.read()), st


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class UsersFile:
    """The users file as the daemon uses it: read again whenever it changed.

    ``lookup`` raises ``UsersFileError`` while the file is unsafe; a missing
    file means no users (every request is refused).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._table = UsersTable()
        self._error: UsersFileError | None = None

    def lookup(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        with self._lock:
            self._refresh()
            if self._error is not None:
                raise self._error
            return self._table.users.get(name)

    def load(self) -> UsersTable:
        """Read the file now (the daemon's start); UsersFileError when it is unsafe."""
        with self._lock:
            self._stamp = None
            self._refresh()
            if self._error is not None:
                raise self._error
            return self._table

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._table, self._error = None, UsersTable(), None
            return
        except OSError as err:
            self._stamp, self._table = None, UsersTable()
            self._error = UsersFileError(f"Cannot read the remote API users file: {err}")
            return
        if self._stamp == _stamp(st):
            return
        try:
            found = read_users(self.path)
        except UsersFileError as err:
            self._stamp, self._table, self._error = None, UsersTable(), err
            return
        if found is None:
            self._stamp, self._table, self._error = None, UsersTable(), None
        else:
            self._table, read_st = found
            self._stamp, self._error = _stamp(read_st), None


# ------------------------------------------------------------------ editing (gnt-lv rapi)


def check_name(name: str) -> None:
    """OpPrereqError unless ``name`` can be a user of the users file and of Basic auth."""
    if not name or name.startswith("#") or ":" in name or any(c.isspace() for c in name):
        raise OpPrereqError(
            f"Invalid user name {name!r}: it must not be empty, start with '#', or contain"
            " ':' or whitespace",
            ECODE_INVAL,
        )


def user_line(
    name: str, password: str, write: bool, plain: bool = False, read: bool = False
) -> str:
    """A users file line for a new user: the {HA1} hash, or with ``plain`` the password;
    the options ``write`` and ``read`` (Ganeti's: the resources that need either, an
    instance's console) as asked."""
    check_name(name)
    if not password:
        raise OpPrereqError("The password must not be empty", ECODE_INVAL)
    if plain:
        if any(c.isspace() for c in password):
            raise OpPrereqError(
                "A password kept in plain text cannot contain whitespace", ECODE_INVAL
            )
        stored = SCHEME_CLEARTEXT + password
    else:
        stored = SCHEME_HA1 + ha1(name, password)
    options = [opt for opt, given in ((ACCESS_WRITE, write), (ACCESS_READ, read)) if given]
    return f"{name} {stored}" + (f" {','.join(options)}" if options else "")


def _lines_of(path: str) -> list[str]:
    found = read_users(path)  # refuses an unsafe file before anything is changed
    if found is None:
        return []
    with open(path, encoding="utf-8", errors="replace") as fobj:
        return fobj.read().splitlines()


def _is_line_of(line: str, name: str) -> bool:
    parts = line.split(None, 1)
    return bool(parts) and parts[0] == name and not line.lstrip().startswith("#")


def _write(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    text = "".join(f"{line}\n" for line in lines)
    write_file_atomically(path, text.encode(), mode=0o600)


def add_user(path: str, line: str, replace: bool = False) -> None:
    """Add the user of ``line`` (``user_line``); OpPrereqError if it exists (unless ``replace``)."""
    name = line.split(None, 1)[0]
    lines = _lines_of(path)
    existing = [num for num, text in enumerate(lines) if _is_line_of(text, name)]
    if existing and not replace:
        raise OpPrereqError(f"User '{name}' already exists in {path}", ECODE_EXISTS)
    lines = [text for num, text in enumerate(lines) if num not in existing]
    _write(path, [*lines, line])


def remove_user(path: str, name: str) -> None:
    """Remove user ``name``; OpPrereqError when there is no such user."""
    lines = _lines_of(path)
    kept = [text for text in lines if not _is_line_of(text, name)]
    if len(kept) == len(lines):
        raise OpPrereqError(f"No user '{name}' in {path}", ECODE_NOENT)
    _write(path, kept)


def list_users(path: str) -> list[User]:
    """The users of the file, by name (none when there is no file)."""
    found = read_users(path)
    if found is None:
        return []
    return [found[0].users[name] for name in sorted(found[0].users)]
