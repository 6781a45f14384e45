"""spawners.launcher: how a server command other than the project's entry point gets its port.

The launcher is a real process here, with a real (tiny) server under it and a hub stand-in that
records the port report; only the server is a stand-in for JupyterLab.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..support import FakeHub

ROOT = Path(__file__).resolve().parents[2]

# Listens on --port=N (as jupyterhub-singleuser would); with a marker path in $FAIL_ONCE it
# exits 1 the first time, as a server that lost its port to another one does.
TINY_SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
marker = os.environ.get("FAIL_ONCE")
if marker and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit("port already in use")
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=")[1])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"tiny")
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def start_launcher(tmp_path: Path, hub: FakeHub, **extra_env: str) -> subprocess.Popen:
    server = tmp_path / "tiny_server.py"
    server.write_text(TINY_SERVER)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "JUPYTERHUB_API_URL": hub.url,
           "JUPYTERHUB_API_TOKEN": "s" * 40, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/user/learner1/",
           **extra_env}
    return subprocess.Popen([sys.executable, "-m", "spawners.launcher", "--", sys.executable, str(server)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_report(hub: FakeHub, proc: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not hub.reports and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.reports, f"no port report (launcher exit {proc.poll()})"
    return hub.reports[0][0]["port"]


def answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except requests.ConnectionError:
        return False


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)  # what Slurm sends at the end of a job
    return proc.communicate(timeout=30)[0]


def test_launcher_reports_the_port_its_server_listens_on(tmp_path):
    hub = FakeHub()
    proc = start_launcher(tmp_path, hub)
    try:
        port = wait_report(hub, proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "tiny"
        assert hub.reports[0] == ({"port": port}, "token " + "s" * 40)
    finally:
        out = stop(proc)
    assert f"server listening on 127.0.0.1:{port}" in out
    assert not answers(port), "SIGTERM to the launcher must reach its server"


def test_launcher_tries_another_port_when_the_server_cannot_start(tmp_path):
    hub = FakeHub()
    proc = start_launcher(tmp_path, hub, FAIL_ONCE=str(tmp_path / "failed-once"))
    try:
        port = wait_report(hub, proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "tiny"
    finally:
        out = stop(proc)
    assert "attempt 1 of 5" in out and len(hub.reports) == 1


def test_launcher_stops_its_server_when_the_hub_refuses_the_port(tmp_path):
    hub = FakeHub(port_answer=409)
    proc = start_launcher(tmp_path, hub)
    out = proc.communicate(timeout=30)[0]
    port = hub.reports[0][0]["port"]
    assert proc.returncode != 0
    assert "the hub refused the port report: 409" in out
    assert not answers(port)
