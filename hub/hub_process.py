"""Start and stop the JupyterHub process (which starts configurable-http-proxy itself)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from spawners.hub_api import HubAPI, HubAPIError

from .slurm_cluster import port_in_use

CONFIG_FILE = Path(__file__).with_name("jupyterhub_config.py")
HUB_NICE = -15  # the hub's CPU priority over sessions on a shared machine (see start, raise_session_priority)
# The hub's log (and its services', who write to the same file) names users, jobs and paths:
# root and the file's group only, never the world.
LOG_MODE = 0o640


class HubError(RuntimeError):
    """The hub could not be started or stopped; the message says why and what to do."""


def pid_file(cfg: dict) -> Path:
    return Path(cfg["hub"]["state_dir"]) / "jupyterhub.pid"


def log_file(cfg: dict) -> Path:
    return Path(cfg["hub"]["log_dir"]) / "jupyterhub.log"


def open_log(path: Path):
    """The log for appending (binary): created LOG_MODE, an existing one made no more readable than that."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & ~LOG_MODE:
        os.fchmod(fd, mode & LOG_MODE)
    return os.fdopen(fd, "ab")


def running_pid(cfg: dict) -> int | None:
    try:
        pid = int(pid_file(cfg).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def local_url(cfg: dict) -> str:
    """The proxy's address as seen from this machine (for checks, not for users)."""
    ip = cfg["hub"]["ip"]
    return f"http://{'127.0.0.1' if ip in ('0.0.0.0', '') else ip}:{cfg['hub']['port']}/"


def public_url(cfg: dict) -> str:
    """The address users open: hub.public_url (e.g. the TLS reverse proxy's), else the proxy's own."""
    configured = cfg["hub"].get("public_url", "")
    if configured:
        return configured.rstrip("/") + "/"
    ip = cfg["hub"]["ip"]
    return f"http://{socket.getfqdn() if ip in ('0.0.0.0', '') else ip}:{cfg['hub']['port']}/"


def is_up(cfg: dict) -> bool:
    """Whether the hub answers at its API's root (which needs no token) through the proxy."""
    try:
        HubAPI(local_url(cfg) + "hub/api", "", timeout=3).request("GET", "/")
    except HubAPIError:
        return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(cfg: dict, config_env: dict[str, str] | None = None, timeout: float = 90) -> int:
    """Start the hub in the background; return its pid. Idempotent."""
    pid = running_pid(cfg)
    if pid is not None:
        return pid
    for key in ("port", "hub_port", "proxy_api_port"):
        port = cfg["hub"][key]
        if port_in_use(port):
            raise HubError(
                f"port {port} (hub.{key}) is taken by another program: stop it, or set hub.{key} "
                "in /etc/academy/config.yaml to a free port"
            )
    state, logs = Path(cfg["hub"]["state_dir"]), Path(cfg["hub"]["log_dir"])
    state.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)  # cookie secret, database, credentials
    exe = Path(sys.executable).with_name("jupyterhub")
    env = {**os.environ, **(config_env or {})}
    # The hub and its proxy answer every learner's clicks; where sessions share the hub's machine
    # (the embedded one-node cluster), a burst of starting servers must not make them slow to
    # answer. Sessions run at slurmd's priority (PropagatePrioProcess=0), the hub above.
    argv = ["nice", "-n", str(HUB_NICE), str(exe), "-f", str(CONFIG_FILE)] if os.geteuid() == 0 else \
        [str(exe), "-f", str(CONFIG_FILE)]
    with open_log(log_file(cfg)) as log:
        proc = subprocess.Popen(
            argv, cwd=state, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True, preexec_fn=_default_interrupt,
        )
    if os.geteuid() == 0:
        raise_session_priority(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HubError(f"JupyterHub exited ({proc.returncode}); last lines of {log_file(cfg)}:\n{_tail(log_file(cfg))}")
        if is_up(cfg):
            return proc.pid
        time.sleep(0.5)
    proc.terminate()
    raise HubError(f"JupyterHub did not answer within {timeout:.0f} s; see {log_file(cfg)}:\n{_tail(log_file(cfg))}")


def _default_interrupt() -> None:
    """In the hub's process, before exec: SIGINT back to its default action.

    A shell starts background commands (`nohup academy up &`, a CI script's `&`) with SIGINT
    ignored, and an ignored signal stays ignored across exec. JupyterHub starts its services
    before it installs its own handlers, so they inherited the ignore, and it stops them with
    SIGINT first: each took 15 s to stop, `academy down` gave up on the hub after 60 s and
    left the proxy and the services running.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def raise_session_priority(pid: int) -> bool:
    """Give the hub's session (hub, proxy, services) HUB_NICE against other sessions; True if set.

    With the kernel's autogroup scheduling (Debian's default), CPU is shared between *sessions*
    first and a process's nice only counts inside its own session. Every Slurm job is a session
    of its own, so 30 starting servers took 30/31 of the CPU whatever the hub's nice was: the
    session's own priority (/proc/<pid>/autogroup) is the one that ranks the hub above them.
    """
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(HUB_NICE))
    except OSError:
        return False  # no autogroup (kernel without it, or turned off): nice alone applies
    return True


def stop(cfg: dict, timeout: float = 60) -> bool:
    """Stop the hub (it stops the sessions it runs and its proxy); True if one was running."""
    pid = running_pid(cfg)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    # A hub this process started stays a zombie (and answers kill 0) until it is reaped.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: `academy down` from another shell
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
