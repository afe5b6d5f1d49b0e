"""A real OpenSSH sshd on 127.0.0.1 for tests.

``LocalSshd(workdir)`` generates a host key and a client key, writes an
sshd_config (random free port, keys and pid file in ``workdir``), starts
``/usr/sbin/sshd -D`` as a child process and stops it by PID (a guardian
stops it if the test process dies first, see guardian.py). Use the
``local_sshd`` session fixture from tests/conftest.py, or the class directly
for a private server (e.g. one with a different host key).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any

try:
    from tests.support.guardian import Guardian, terminate_if_same
except ImportError:  # tests/ itself is on sys.path (pytest's rootdir insertion)
    from support.guardian import Guardian, terminate_if_same  # type: ignore[no-redef]

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PRIVSEP_DIR = "/run/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sshd_available() -> bool:
    """True if sshd and ssh-keygen exist and we are root (needed for sshd)."""
    return os.path.exists(SSHD) and os.path.exists(SSH_KEYGEN) and os.geteuid() == 0


def _keygen(path: str, keytype: str = "ed25519") -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", keytype, "-N", "", "-C", "ganeti-lv-test", "-f", path],
        check=True,
        stdout=subprocess.DEVNULL,
    )


class LocalSshd:
    """One sshd instance on loopback; see the module docstring."""

    def __init__(self, workdir: str, client_key: str | None = None, max_sessions: int = 64) -> None:
        self.workdir = workdir
        self.max_sessions = max_sessions  # sessions on one connection (Debian's default: 10)
        self.host = "127.0.0.1"
        self.port = 0
        self.user = "root"
        self.host_key = os.path.join(workdir, "ssh_host_ed25519_key")
        self.key_file = client_key or os.path.join(workdir, "id_client")
        self.authorized_keys = os.path.join(workdir, "authorized_keys")
        self.known_hosts_file = os.path.join(workdir, "known_hosts")
        self.config_file = os.path.join(workdir, "sshd_config")
        self.pid_file = os.path.join(workdir, "sshd.pid")
        self.log_file = os.path.join(workdir, "sshd.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._guardian: Guardian | None = None

    @property
    def host_key_line(self) -> str:
        """The server's public host key as "<type> <base64>"."""
        with open(self.host_key + ".pub") as fh:
            return " ".join(fh.read().split()[:2])

    def _write_config(self) -> None:
        config = f"""\
ListenAddress {self.host}
Port {self.port}
HostKey {self.host_key}
AuthorizedKeysFile {self.authorized_keys}
PidFile {self.pid_file}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitUserEnvironment no
AcceptEnv none
PrintMotd no
MaxSessions {self.max_sessions}
MaxStartups 64
LogLevel ERROR
Subsystem sftp internal-sftp
"""
        with open(self.config_file, "w") as fh:
            fh.write(config)

    def start(self, timeout: float = 10.0) -> LocalSshd:
        """Create keys and config, start sshd and wait until it accepts connections."""
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        if not os.path.exists(self.host_key):
            _keygen(self.host_key)
        if not os.path.exists(self.key_file):
            _keygen(self.key_file)
        shutil.copyfile(self.key_file + ".pub", self.authorized_keys)
        self.port = free_port()
        self._write_config()
        with open(self.known_hosts_file, "w") as fh:
            fh.write(f"[{self.host}]:{self.port} {self.host_key_line}\n")
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", self.config_file],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self._guardian = Guardian(terminate_if_same(self.proc.pid))
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()  # reaped already: the guardian goes, it has nothing to stop
                raise RuntimeError(f"sshd exited with {code}: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sshd did not start listening: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        """sshd's log so far."""
        try:
            with open(self.log_file, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop sshd by its PID (the child we started) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._guardian is not None:
            self._guardian.release()
            self._guardian = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``SshClient`` connecting to this server."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "known_hosts_file": self.known_hosts_file,
            "connect_timeout": 5.0,
        }

    def client(self, **overrides: Any) -> Any:
        """An ``SshClient`` for this server (overrides replace client_kwargs)."""
        from ganeti_lv.node.ssh import SshClient

        kwargs = self.client_kwargs()
        kwargs.update(overrides)
        return SshClient(**kwargs)

    def __enter__(self) -> LocalSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
