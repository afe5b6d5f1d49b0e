"""Node operations: everything an LU does on a node goes through here.

``base.NodeOps`` is the facade the LUs call; ``libvirt`` implements it on
libvirt-python and SSH, ``fake`` in memory for unit tests.
"""
