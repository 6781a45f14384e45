#!/usr/bin/python3
"""A lightweight stand-in for jupyterhub-singleuser, used only by scheduler_load.py.

Fifty JupyterLab servers do not fit on a two-core machine next to two hubs, and the
benchmark measures the hub's *polling* of Slurm, not the session. This stand-in listens
where a real server would and answers every GET with 200, so the hub's readiness check
and proxy route work. Both hubs run this same file:

- stock batchspawner: ``srun batchspawner-singleuser <this file> ...`` (run_path executes it
  inside batchspawner-singleuser's Python after the port was reported);
- ours: ``python -I <this file> --academy-report-port ...``, as the batch script runs the
  project's entry point (the stand-in env names this file ``academy-singleuser``); like the entry
  point, it listens on a port of its own choosing and reports it to the hub itself.

Standard library only, but for ours' port report and end report, which are the project's own
(``spawners.launcher.report_port`` and ``spawners.singleuser.report_end``, installed in the
notebook env): on SIGTERM ours tells the hub it is ending, as the entry point does.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

REPORT_PORT_FLAG = "--academy-report-port"  # spawners/singleuser.py


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"started": True, "standin": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def address() -> tuple[str, int]:
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    host, port = url.hostname or "127.0.0.1", url.port or 0
    for arg in sys.argv[1:]:
        if arg.startswith("--port="):
            port = int(arg.split("=", 1)[1])
    if REPORT_PORT_FLAG in sys.argv:
        port = 0  # ours: any free port, reported below
    elif not port:
        raise SystemExit("standin_server: no port in $JUPYTERHUB_SERVICE_URL or --port=")
    return host, port


def on_sigterm(*_) -> None:
    if REPORT_PORT_FLAG in sys.argv:  # ours: as spawners/singleuser.py's server does on SIGTERM
        from spawners.singleuser import report_end

        report_end(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    sys.exit(0)


def main() -> None:
    server = ThreadingHTTPServer(address(), Handler)
    if REPORT_PORT_FLAG in sys.argv:
        # The project's own report client (the notebook env has it; stock's env never gets here).
        from spawners.launcher import report_port

        report_port(server.server_address[1])
    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"standin_server listening on {server.server_address}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
