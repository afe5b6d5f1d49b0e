"""The master's services around the processor: jobs, the master daemon and its protocol.

- ``jobs``: the job log (one JSON file per job of one or more opcodes);
- ``runner``: runs a recorded job's opcodes in order through the processor
  (in the daemon, or in the caller's process when no daemon runs);
- ``protocol``: the daemon's protocol (versioned JSON messages: submit,
  records, the end of a job, cancel, queries), imported by both sides;
- ``daemon``: ``gnt-lv-masterd``, which runs jobs with the node connections open;
- ``client``: the one client of the protocol (``gnt-lv`` and ``ganeti_lv.Client``);
- ``daemonize``: detaching a daemon process.
"""
