"""Drives Ganeti's own RAPI client (``ganeti.rapi.client``) for the tests.

Run with Debian's Python (``/usr/bin/python3``), where Debian's
``python3-ganeti-rapi`` package puts the client, never with the project's
virtual environment: ``/usr/bin/python3 rapi_driver.py < program.json``.
The program is a JSON object::

    {"host": "127.0.0.1", "port": 5080, "user": "jack", "password": "...",
     "cafile": "/path/rapi.pem" or null,
     "calls": [["GetVersion", [], {}],
               ["MigrateInstance", ["web1"], {"target_node": "node2"}],
               {"parallel": 20, "call": ["GetInstances", [], {"bulk": true}]},
               ["_SendRequest", ["PUT", "/2/instances/web1/migrate", null, {"x": 1}], {}]]}

and the answer, on stdout, one JSON object per call in order:
``{"ok": <result>}`` or ``{"error": {"class", "msg", "code"}}`` (a
``parallel`` call answers ``{"parallel": [<answer>, ...]}``). With a
``cafile`` the client checks the server's certificate against it (the
certificate pinned), without one it does not check (Ganeti's default).
"""

import json
import sys
import threading

import pycurl
from ganeti.rapi import client


def _call(rapi, call):
    name, args, kwargs = call
    try:
        return {"ok": getattr(rapi, name)(*args, **kwargs)}
    except client.Error as err:
        return {
            "error": {
                "class": type(err).__name__,
                "msg": str(err),
                "code": getattr(err, "code", None),
            }
        }


def _parallel(rapi_factory, count, call):
    answers = [None] * count

    def run(idx):
        answers[idx] = _call(rapi_factory(), call)

    threads = [threading.Thread(target=run, args=(idx,)) for idx in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"parallel": answers}


@client.UsesRapiClient
def main():
    program = json.load(sys.stdin)
    # proxy "": straight to the daemon, whatever proxy the environment names
    if program.get("cafile"):
        config = client.GenericCurlConfig(cafile=program["cafile"], verify_hostname=False, proxy="")
    else:

        def config(curl, _logger):
            curl.setopt(pycurl.PROXY, "")

    def factory():
        return client.GanetiRapiClient(
            program["host"],
            port=program["port"],
            username=program.get("user"),
            password=program.get("password"),
            curl_config_fn=config,
        )

    rapi = factory()
    for call in program["calls"]:
        if isinstance(call, dict):
            answer = _parallel(factory, call["parallel"], call["call"])
        else:
            answer = _call(rapi, call)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
