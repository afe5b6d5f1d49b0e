"""What runs on, or talks to, a node outside libvirt.

- ``ssh``: the SSH transport to the nodes (paramiko);
- ``diskcopy`` and ``diskcopy_helper``: the node-to-node disk copy engine and
  its node-side helper;
- ``exportdir``: export directories on a node;
- ``hooks_runner``: running a hooks directory on a node.
"""
