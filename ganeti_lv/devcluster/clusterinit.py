"""Creating the ganeti_lv cluster on top of the local nodes.

node1 becomes the master through ``bootstrap.init_cluster``; the other nodes
join with ``OpNodeAdd`` (their host key confirmed by the harness, which
generated it). While no LU handles ``OpNodeAdd`` the node is recorded
directly in the configuration, the way the LU would.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ganeti_lv import paths
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.objects import Node


def master_uri(cl: lay.ClusterLayout, node: lay.NodeLayout, transport: str) -> str:
    """The URI of the node's libvirtd from the master's side (the host): over TLS with
    the master's client certificate."""
    uri = node.libvirt_uri(transport)
    if transport == lay.TRANSPORT_TLS:
        uri += f"?pkipath={paths.libvirt_pki_dir(cl.data_dir)}"
    return uri


def node_object(node: lay.NodeLayout, memory_cap: int | None, transport: str) -> Node:
    """The ganeti_lv Node of a local cluster node (URIs without the master's pkipath:
    the node operations add it)."""
    return Node(
        name=node.name,
        address=node.address,
        libvirt_uri=node.libvirt_uri(transport),
        peer_uri=node.libvirt_uri(transport),
        migration_address=node.address,
        ssh_port=22,
        memory_cap=memory_cap,
    )


def cluster_fields(domain_type: str) -> dict[str, object]:
    """Cluster settings of a local cluster."""
    return {
        "domain_type": domain_type,
        "shared_storage_unsafe_ok": True,
        "default_bridge": lay.NODE_BRIDGE,
        "hooks_base_dir": lay.HOOKS_BASE_DIR,
        "export_dir": lay.EXPORT_DIR,
        "file_storage_dir": lay.FILE_STORAGE_DIR,
        "shared_file_storage_dir": lay.SHARED_FILE_STORAGE_DIR,
    }


def _node_add_available() -> bool:
    """True when an LU handles OpNodeAdd."""
    import ganeti_lv.cmdlib  # noqa: F401  (fills the registry)
    from ganeti_lv.cmdlib.base import LU_REGISTRY
    from ganeti_lv.opcodes import OpNodeAdd

    return OpNodeAdd in LU_REGISTRY


def add_node(data_dir: str, node: Node, host_key: str) -> None:
    """Add ``node`` to the cluster in ``data_dir`` with its confirmed host key."""
    from ganeti_lv.opcodes import OpNodeAdd

    if _node_add_available():
        from ganeti_lv.client import Client

        op = OpNodeAdd(
            node_name=node.name,
            primary_ip=node.address,
            ssh_port=node.ssh_port,
            libvirt_uri=node.libvirt_uri,
            peer_uri=node.peer_uri,
            migration_address=node.migration_address,
            host_key=host_key,
            memory_cap=node.memory_cap,
        )
        with Client(data_dir=data_dir) as client:
            client.submit(op)
        return
    from ganeti_lv import bootstrap
    from ganeti_lv.config import ConfigStore

    bootstrap.record_node_host_key(paths.known_hosts_file(data_dir), node, host_key)
    ConfigStore(data_dir).add_node(node)


def _master_certificates(data_dir: str, master: str) -> None:
    """The master node's certificates from the cluster, as ``gnt-lv cluster init`` gives them."""
    from ganeti_lv.client import Client
    from ganeti_lv.opcodes import OpClusterRenewCrypto

    with Client(data_dir=data_dir) as client:
        client.submit(OpClusterRenewCrypto(new_node_certificates=True, node_names=[master]))


def ensure_cluster(
    cl: lay.ClusterLayout,
    host_keys: dict[str, str],
    domain_type: str,
    memory_caps: dict[str, int],
    feedback_fn: Callable[[str], None],
    transport: str,
) -> None:
    """Create the ganeti_lv cluster (node1 master) and add the nodes it lacks.

    Over TLS the cluster takes the harness's CA, which signed the nodes'
    first certificates; the master node then gets certificates the cluster
    issues (as ``gnt-lv cluster init`` gives them), the other nodes at ``node add``.
    """
    from ganeti_lv import bootstrap
    from ganeti_lv.config import ConfigStore

    data_dir = cl.data_dir
    master = cl.nodes[0]
    if not os.path.exists(paths.config_file(data_dir)):
        feedback_fn(f"initialising the ganeti_lv cluster in {data_dir}")
        ca_cert, ca_key = cl.ca_files if transport == lay.TRANSPORT_TLS else (None, None)
        bootstrap.init_cluster(
            data_dir,
            cluster_name=cl.cluster_name,
            master=node_object(master, memory_caps.get(master.name), transport),
            master_host_key=host_keys[master.name],
            ssh_key_file=cl.key_file,
            ca_cert_file=ca_cert,
            ca_key_file=ca_key,
            **cluster_fields(domain_type),
        )
        _master_certificates(data_dir, master.name)
    store = ConfigStore(data_dir)
    have = set(store.node_names())
    for name, cap in memory_caps.items():
        current = store.get_node(name)
        if current is not None and current.memory_cap != cap:
            feedback_fn(f"setting the memory cap of {name} to {cap} MiB")
            current.memory_cap = cap
            store.update_node(current)
    for node in cl.nodes[1:]:
        if node.name not in have:
            feedback_fn(f"adding {node.name} to the cluster")
            add_node(
                data_dir,
                node_object(node, memory_caps.get(node.name), transport),
                host_keys[node.name],
            )
