"""The local multi-node test cluster (``gnt-lv-devcluster up|down|status``).

Python API for tests and benchmarks::

    from ganeti_lv.devcluster.cluster import DevCluster, wait_console

    dc = DevCluster("/var/tmp/my-cluster")
    info = dc.up(nodes=3, subnet="10.250.7.0/24")   # idempotent; returns cluster.json
    dc.node_exec("node2", ["ls", "/srv/ganeti-lv/export"])
    dc.virsh("node1", "list", "--all")
    dc.kill_daemon("node2", "libvirtd"); dc.start_daemon("node2", "libvirtd")
    dc.cut_link("node3"); dc.restore_link("node3")
    dc.down()

The test guest (kernel + initramfs and its console protocol) lives in
:mod:`ganeti_lv.devcluster.guest`; an existing cluster described by a
cluster.json is wrapped by :class:`ganeti_lv.devcluster.external.ExternalCluster`.
The qemu the nodes run (on Debian 12 the bookworm-backports one, whose TCG
migration keeps guest memory intact) comes from
:mod:`ganeti_lv.devcluster.emulator` (``dc.up(qemu="system")`` keeps the
machine's).
"""
