"""Single-user launcher: runs inside the Slurm job, starts the server, then reports its port.

Unlike ``batchspawner-singleuser`` it reports the port only once the server is *listening*,
so the hub never proxies to a port another session grabbed first: if the bind fails the
launcher picks another port and tries again. The report carries nothing but the port.

The project's own entry point (``academy-singleuser``, the spawner's default command) does this
itself, without a process around it (spawners/singleuser.py); the batch script uses the launcher
for any other server command an operator configures (``AcademySlurmSpawner.cmd``).

Standard library only: it is the first thing Python imports in the job, and it must not
depend on the hub's packages.

Usage: python -I -m spawners.launcher -- jupyterhub-singleuser [args...]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse, urlunparse

PORT_REPORT_PATH = "academy/port"
BIND_ATTEMPTS = 5
LISTEN_TIMEOUT_S = 120.0


def log(message: str) -> None:
    # Goes to the job's output file, which the hub shows when a start fails.
    print(f"academy-launcher: {message}", file=sys.stderr, flush=True)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def report_port(port: int) -> None:
    """Tell the hub the port; the hub accepts it only from this server's own token."""
    api_url = os.environ["JUPYTERHUB_API_URL"].rstrip("/")
    token = os.environ["JUPYTERHUB_API_TOKEN"]
    request = urllib.request.Request(
        f"{api_url}/{PORT_REPORT_PATH}",
        data=json.dumps({"port": port}).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(5):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status in (200, 201):
                    return
        except urllib.error.HTTPError as e:
            # A refusal is final (the hub no longer waits for this server); say why and stop.
            raise SystemExit(f"academy-launcher: the hub refused the port report: {e.code} {e.read()[:200]!r}")
        except OSError as e:
            log(f"hub not reachable yet ({e}); retrying")
        time.sleep(0.5 * (attempt + 1))
    raise SystemExit("academy-launcher: could not reach the hub to report the port")


def start_server(argv: list[str], host: str, port: int) -> subprocess.Popen:
    env = dict(os.environ)
    service_url = urlparse(env["JUPYTERHUB_SERVICE_URL"])
    env["JUPYTERHUB_SERVICE_URL"] = urlunparse(service_url._replace(netloc=f"{host}:{port}"))
    # port_retries=0: a taken port must fail here, not silently move to another port.
    return subprocess.Popen([*argv, f"--port={port}", "--ServerApp.port_retries=0"], env=env)


def wait_listening(proc: subprocess.Popen, host: str, port: int) -> bool:
    """True once the server accepts connections; False if it exited first."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if is_listening(host, port):
            return True
        time.sleep(0.05)
    proc.terminate()
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        log("usage: python -m spawners.launcher -- jupyterhub-singleuser [args...]")
        return 2
    host = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"]).hostname or "127.0.0.1"
    proc = None
    for attempt in range(BIND_ATTEMPTS):
        port = free_port(host)
        proc = start_server(argv, host, port)
        if wait_listening(proc, host, port):
            break
        log(f"server did not start on port {port} (exit {proc.returncode}); attempt {attempt + 1} of {BIND_ATTEMPTS}")
        proc = None
    if proc is None:
        log("giving up: the server never started listening")
        return 1

    def forward(signum, _frame):
        proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        report_port(port)
    except SystemExit:
        # Leave nothing behind in the job: without a reported port nobody can reach it.
        proc.terminate()
        proc.wait(timeout=30)
        raise
    log(f"server listening on {host}:{port}")
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
