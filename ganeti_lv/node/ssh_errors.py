"""The one place where paramiko's and the socket's errors become ganeti_lv errors.

- connect refused, timed out, host unreachable, auth failure -> ``NodeUnreachable``
- unknown or changed host key                                -> ``HostKeyError``
- SFTP and channel failures                                  -> ``NodeError``

``RejectUnknownPolicy`` is paramiko's ``RejectPolicy`` keeping the key a node
offered, for the error that names it.
"""

from __future__ import annotations

import socket
from typing import NoReturn

import paramiko

from ganeti_lv import retry
from ganeti_lv.errors import ECODE_NOENT, HostKeyError, NodeError, NodeUnreachable
from ganeti_lv.node.known_hosts import key_fingerprint


class _UnknownHostKey(paramiko.SSHException):
    """Raised by the reject policy; carries the offered key for the message."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname = hostname
        self.key = key


class RejectUnknownPolicy(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, keeping the offered key for the error message."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise _UnknownHostKey(hostname, key)


def _fingerprint(key: paramiko.PKey) -> str:
    return key_fingerprint(f"{key.get_name()} {key.get_base64()}")


def endpoint(host: str, port: int) -> str:
    return f"{host}:{port}"


def map_error(err: BaseException, host: str, port: int, action: str, node: str | None) -> NodeError:
    """Turn a paramiko/socket exception into the matching ganeti_lv error."""
    where = endpoint(host, port)
    if isinstance(err, NodeError):
        return err
    if isinstance(err, _UnknownHostKey):
        return HostKeyError(
            f"Host key of {where} is not in the cluster's known_hosts: "
            f"{err.key.get_name()} {_fingerprint(err.key)}; refusing to connect",
            node,
        )
    if isinstance(err, paramiko.BadHostKeyException):
        return HostKeyError(
            f"Host key of {where} has CHANGED: offered {err.key.get_name()} "
            f"{_fingerprint(err.key)}, known_hosts has {err.expected_key.get_name()} "
            f"{_fingerprint(err.expected_key)}; refusing to connect",
            node,
        )
    if isinstance(err, paramiko.AuthenticationException):
        return retry.not_retried(
            NodeUnreachable(f"SSH authentication to {where} failed: {err}", node)
        )
    if isinstance(err, FileNotFoundError | paramiko.sftp.SFTPError) and action.startswith("sftp"):
        ecode = ECODE_NOENT if isinstance(err, FileNotFoundError) else None
        return NodeError(f"{action} on {where} failed: {err}", node, ecode=ecode)
    if isinstance(err, socket.timeout | TimeoutError):
        # a node that did not answer within the timeout is down or cut off,
        # not restarting (that is refused at once): trying again only waits longer
        return retry.not_retried(NodeUnreachable(f"{action} to {where} timed out", node))
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError | ConnectionError):
        return NodeUnreachable(f"{action} to {where} failed: {err}", node)
    if isinstance(err, socket.gaierror):
        return NodeUnreachable(f"{action}: cannot resolve {host}: {err}", node)
    if isinstance(err, paramiko.SSHException | EOFError) and action == "connect":
        return NodeUnreachable(f"SSH {action} to {where} failed: {err or type(err).__name__}", node)
    if isinstance(err, OSError) and action == "connect":
        return NodeUnreachable(f"{action} to {where} failed: {err}", node)
    return NodeError(f"SSH {action} on {where} failed: {err or type(err).__name__}", node)
