"""A small cluster's configuration for tests on the fake nodes."""

from __future__ import annotations

from ganeti_lv import constants
from ganeti_lv.objects import Cluster, ConfigData, Disk, Instance, Nic, Node

NODES = ("node1.example.com", "node2.example.com", "node3.example.com")


def small_cluster(instances: dict[str, str], tags: tuple[str, ...] = ()) -> ConfigData:
    """Three online nodes (node1 the master) and ``instances`` (name -> disk
    template), each marked up on node1 with one 1 GiB disk and one NIC on br0."""
    cluster = Cluster(name="cluster.example.com", master_node=NODES[0])
    nodes = {
        name: Node(name=name, address=f"10.250.0.{idx + 1}", libvirt_uri="test:///default")
        for idx, name in enumerate(NODES)
    }
    made = {
        name: Instance(
            name=name,
            primary_node=NODES[0],
            disk_template=template,
            disks=[Disk(size=1024)],
            nics=[Nic(mac=f"aa:00:00:00:00:0{idx}", link="br0")],
            admin_state=constants.ADMINST_UP,
            tags=list(tags),
        )
        for idx, (name, template) in enumerate(instances.items())
    }
    return ConfigData(cluster=cluster, nodes=nodes, instances=made)
