"""Where ganeti_lv keeps its files inside the master's data dir."""

from __future__ import annotations

import os

DEFAULT_DATA_DIR = "/var/lib/ganeti-lv"
DATA_DIR_ENV = "GANETI_LV_DATA_DIR"


def data_dir(explicit: str | None = None) -> str:
    """The data dir: ``explicit``, else $GANETI_LV_DATA_DIR, else the default."""
    return explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def config_file(ddir: str) -> str:
    """The cluster configuration file."""
    return os.path.join(ddir, "config.json")


def locks_dir(ddir: str) -> str:
    """Directory of the lock files (one per level and name)."""
    return os.path.join(ddir, "locks")


def reservations_dir(ddir: str) -> str:
    """Space reserved on the nodes by the exports running (``ganeti_lv.reservations``)."""
    return os.path.join(ddir, "reservations")


def jobs_dir(ddir: str) -> str:
    """Directory of the job log (one file per job)."""
    return os.path.join(ddir, "jobs")


def ssh_dir(ddir: str) -> str:
    """Directory with the cluster SSH key and known_hosts."""
    return os.path.join(ddir, "ssh")


def ssh_key_file(ddir: str) -> str:
    """The cluster's private SSH key (its .pub beside it)."""
    return os.path.join(ssh_dir(ddir), "id_cluster")


def known_hosts_file(ddir: str) -> str:
    """The cluster's known_hosts: every node's confirmed host key."""
    return os.path.join(ssh_dir(ddir), "known_hosts")


def masterd_socket(ddir: str) -> str:
    """The master daemon's Unix socket (jobs are submitted there when it runs)."""
    return os.path.join(ddir, "masterd.sock")


def masterd_pidfile(ddir: str) -> str:
    """The master daemon's pid file."""
    return os.path.join(ddir, "masterd.pid")


def masterd_lock(ddir: str) -> str:
    """The lock file held by the running master daemon."""
    return os.path.join(ddir, "masterd.lock")


def masterd_log(ddir: str) -> str:
    """The master daemon's log file."""
    return os.path.join(ddir, "masterd.log")


def rapi_cert_file(ddir: str) -> str:
    """The remote API's TLS certificate and private key (one PEM file, as Ganeti's rapi.pem)."""
    return os.path.join(ddir, "rapi.pem")


def rapi_users_file(ddir: str) -> str:
    """The remote API's users file (Ganeti's format: ``user password [write]``)."""
    return os.path.join(ddir, "rapi", "users")


def ca_cert_file(ddir: str) -> str:
    """The cluster CA's certificate (every node and the master trust it)."""
    return os.path.join(ddir, "pki", "cacert.pem")


def ca_key_file(ddir: str) -> str:
    """The cluster CA's private key (0600; only the master has it)."""
    return os.path.join(ddir, "pki", "private", "cakey.pem")


def libvirt_pki_dir(ddir: str) -> str:
    """The master's libvirt client credentials under libvirt's names (a ``pkipath``)."""
    return os.path.join(ddir, "pki", "libvirt")
