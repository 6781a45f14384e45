"""Helpers the tests share (and the benchmarks): a hub user with browser cookies, squeue, kernel execution,
the new part of a log, a free port."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import websocket

from hub import hub_process


_PORTS = iter(random.Random(os.getpid()).sample(range(20000, 32000), 12000))


def free_port() -> int:
    """A port no one listens on, below the kernel's ephemeral range (32768+).

    Port 0 would hand out an ephemeral port, the same pool every outgoing connection and every
    session launcher draws from: by the time the hub binds it, one of them may hold it (seen in CI).
    """
    for port in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in 20000-32000")


class LogMark:
    """The part of a log file written after this mark was made (what changed, not what was true)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_text(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


@dataclass
class Hub:
    url: str
    cfg: dict
    config_file: Path

    @property
    def log(self) -> str:
        return hub_process.log_file(self.cfg).read_text(errors="replace")

    def log_mark(self) -> LogMark:
        """From here on: what the hub logs after this moment."""
        return LogMark(hub_process.log_file(self.cfg))


def wait_for(check, timeout: float, interval: float = 0.5, what: str = ""):
    """The first truthy value of check() within TIMEOUT seconds; past it, an AssertionError that says
    what was awaited (the one wait of the tests: none carries on silently past its deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"still waiting after {timeout:g} s for {what or getattr(check, '__name__', check)}"
                                 f" (last answer: {value!r})")
        time.sleep(interval)


class HubUser:
    """A person logged in through the hub's login form, with their browser cookies.

    HUB needs only ``url`` (and ``log`` for a failed start's message): the benchmarks log their
    users in with this class too. TIMEOUT bounds every request (None: wait as long as it takes).
    """

    def __init__(self, hub: Hub, name: str, password: str, timeout: float | None = None):
        self.hub, self.name, self.timeout = hub, name, timeout
        self.http = requests.Session()
        self.http.get(f"{hub.url}/hub/login", timeout=timeout)
        # No redirects: after login JupyterHub sends the browser to /hub/spawn, and a hub without a
        # spawn form (stock batchspawner) starts the server right there, before the test asks it to.
        r = self.http.post(f"{hub.url}/hub/login", timeout=timeout, allow_redirects=False,
                           data={"username": name, "password": password, "_xsrf": self.http.cookies.get("_xsrf")})
        location = r.headers.get("Location", "/hub/login")
        assert r.status_code == 302 and "/hub/login" not in location, \
            f"{name} could not log in: {r.status_code} {location}"
        # The hub's pages carry the XSRF token the API wants.
        home = self.http.get(f"{hub.url}/hub/home", timeout=timeout)
        self.xsrf = re.search(r'xsrf_token: "([^"]+)"', home.text).group(1)
        self._token = None

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", headers={"X-XSRFToken": self.xsrf}, **kwargs)

    def spawn_form(self) -> str:
        return self.http.get(f"{self.hub.url}/hub/spawn").text

    def submit_spawn_form(self, **fields) -> requests.Response:
        return self.http.post(f"{self.hub.url}/hub/spawn/{self.name}", data={**fields, "_xsrf": self.xsrf},
                              headers={"X-XSRFToken": self.xsrf}, allow_redirects=False)

    @property
    def token(self) -> str:
        if self._token is None:
            r = self.api("POST", f"/users/{self.name}/tokens", json={"note": "tests"})
            assert r.status_code == 201, r.text
            self._token = r.json()["token"]
        return self._token

    def server(self) -> dict | None:
        r = self.api("GET", f"/users/{self.name}")
        r.raise_for_status()  # an error is not "no server"
        return (r.json().get("servers") or {}).get("")

    def wait_ready(self, timeout: float = 120) -> dict:
        def ready():
            server = self.server()
            if server is None:
                raise AssertionError(f"{self.name}'s server stopped while starting; hub log:\n{self.hub.log[-3000:]}")
            return server if server.get("ready") else None
        return wait_for(ready, timeout, what=f"{self.name}'s server to be ready")

    def progress_messages(self, timeout: float = 120) -> list[dict]:
        """The spawn's progress events, as the pending page shows them, until it ends."""
        events = []
        with self.api("GET", f"/users/{self.name}/server/progress", stream=True, timeout=timeout) as r:
            if r.status_code != 200:
                return [{"failed": True, "message": f"progress: {r.status_code} {r.text[:200]}"}]
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    events.append(event)
                    if event.get("ready") or event.get("failed"):
                        break
        return events

    def stop_server(self) -> None:
        r = self.api("DELETE", f"/users/{self.name}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: self.server() is None, 60, what=f"{self.name}'s server to stop")


def squeue(*args: str) -> list[dict]:
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i|%u|%T|%P|%l|%b|%j", *args],
                         capture_output=True, text=True, check=True).stdout
    keys = ["id", "user", "state", "partition", "time_limit", "gres", "name"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


def live_jobs(user: str) -> list[dict]:
    return [j for j in squeue("--user", user) if j["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")]


def run_in_kernel(hub: Hub, user: str, token: str, code: str, timeout: float = 60) -> str:
    """Execute code in a new kernel of the user's server, through the proxy; return its stdout."""
    headers = {"Authorization": f"token {token}"}
    base = f"{hub.url}/user/{user}/api/kernels"
    kernel = requests.post(base, headers=headers, json={"name": "python3"}, timeout=30)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + f"/{kernel_id}/channels", header=[f"Authorization: token {token}"],
        timeout=timeout,
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("kernel error: " + "\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError("kernel did not finish in time")
    finally:
        ws.close()
        requests.delete(f"{base}/{kernel_id}", headers=headers, timeout=30)


class FakeHub:
    """The hub's API as a starting session's server sees it: version check, activity, port report.

    ``port_answer`` is the status the port report gets (201 accepted, 409 the hub gave up).
    """

    def __init__(self, port_answer: int = 201):
        self.reports: list[tuple[dict, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("X-JupyterHub-Version", "6.1.1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - the server's version check
                self._answer(200, {"version": "6.1.1"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/hub/api/academy/port":
                    hub.reports.append((body, self.headers.get("Authorization", "")))
                    self._answer(port_answer, {"port": body.get("port")} if port_answer == 201 else
                                 {"message": "This server is not waiting for a port report."})
                else:  # activity
                    self._answer(200, {})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def session_token(hub: Hub, user: "HubUser") -> str:
    """The token the hub gave a session, as its server holds it (from the job's environment)."""
    token = run_in_kernel(hub, user.name, user.token, "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    assert len(token) >= 32
    return token


def hub_answers(hub: Hub, token: str) -> int:
    """The hub's status code for GET /hub/api/user with TOKEN: 200 while it lives."""
    return requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10).status_code


def sacct_gpu_hours(job: str) -> float:
    """The job's GPU-hours as Slurm's accounting has them: gres/gpu of AllocTRES times ElapsedRaw."""
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job, "-o", "ElapsedRaw,AllocTRES"], capture_output=True,
                         text=True).stdout.strip()
    elapsed, tres = out.split("|")
    gpus = next((int(v) for k, _, v in (t.partition("=") for t in tres.split(",")) if k == "gres/gpu"), 0)
    return gpus * int(elapsed) / 3600


def progress_gpu_hours(hub, user: "HubUser") -> float:
    me = requests.get(f"{hub.url}/services/academy-progress/api/me", headers={"Authorization": f"token {user.token}"},
                      timeout=30).json()
    return me["gpu_hours"]
