"""Ganeti's remote API (RAPI v2) in the master daemon, for Ganeti's ops tooling.

Ganeti's own client (``ganeti.rapi.client.GanetiRapiClient``) and the tools
built on it talk to ``gnt-lv-masterd --rapi`` as they talk to Ganeti's
``ganeti-rapi``: JSON over HTTPS (port 5080), HTTP Basic authentication
against a users file in Ganeti's format, Ganeti's resource names,
parameters, response shapes and error shape. Every change is a job of the
daemon, the same job ``gnt-lv job list`` shows.

- ``httperrors``: the HTTP errors and their JSON body (code, message, explain);
- ``users``: the users file (plain and ``{HA1}`` passwords, ``write``), read
  only when no other user can read it, reloaded when it changes;
- ``certs``: the self-signed certificate ``cluster init`` creates, its fingerprint;
- ``params``: query arguments and request bodies, checked, into opcodes;
- ``queries``: nodes, instances and the cluster in Ganeti's fields;
- ``jobfields``: jobs of the job log in Ganeti's job fields, waiting for changes;
- ``resources``: the resources (paths, methods, access);
- ``server``: the WSGI application and the HTTPS server (cheroot).
"""
