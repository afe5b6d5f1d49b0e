"""Node operations: everything an LU does on a node goes through here.

``base.NodeOps`` is the interface the LUs call (through
``node.transport.node_call``), declared once; ``base.NodeSession`` is the
work begun ahead for one job. ``libvirt`` implements them on libvirt-python
and SSH, ``fake`` and ``fake_export`` in memory for unit tests.
``migration_types`` and ``export_types`` are the plain values exchanged with
the LUs, ``migration_policy`` the pure convergence policy of a migration.
"""
