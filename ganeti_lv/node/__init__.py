"""What runs on, or talks to, a node outside libvirt.

- ``transport``: the result types (``NodeResult`` and ``node_call``,
  ``CommandResult``, ``HookScriptResult``) and the runner interface (run a
  command, stream one, put and get files) every node-side module uses;
- ``ssh``: the SSH transport to the nodes (paramiko), a ``NodeTransport``;
  ``ssh_channel``: a command's streams and end; ``ssh_errors``: paramiko's
  and the socket's errors as ganeti_lv's; ``tcpinfo``: does a node still
  answer; ``known_hosts``: the cluster's known_hosts file (no SSH library
  needed);
- ``diskcopy``: the node-to-node disk copy engine (copy plans, copies set
  up ahead); ``diskcopy_helper``: its node-side helper (the send, recv
  and checksum commands) and ``diskcopy_stream``: the helper's stream
  format and data path (both standard library only, shipped to the nodes as
  text); ``diskstat``: file sizes and free
  space asked with the node's shell; ``progress``: a copy's progress lines
  as Ganeti prints them;
- ``exportdir``: export directories on a node;
- ``hooks_runner``: running a hooks directory on a node.
"""
