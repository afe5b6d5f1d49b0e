"""The master's services around the processor: the job log, the master daemon and its client.

- ``jobs``: the job log (one JSON file per opcode run);
- ``daemon``: ``gnt-lv-masterd``, which runs jobs with the node connections open;
- ``client``: the client of the daemon's protocol;
- ``daemonize``: detaching a daemon process.
"""
