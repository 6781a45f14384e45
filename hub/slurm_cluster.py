"""The embedded one-node Slurm cluster: config files, fake GPUs, and munge/slurmctld/slurmd.

Idempotent: ``ensure_running`` leaves a healthy cluster alone, rewrites the config only
when it changed (restarting the daemons then), and says exactly what stands in the way
(a port taken, a daemon that will not start) with the log lines that explain it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates" / "slurm"
RUN_DIR = Path("/run/academy-slurm")
MUNGE_SOCKET_DIR = Path("/run/munge")
FAKE_GPU_PREFIX = "/dev/academy-gpu"
DAEMON_LOGS = ("slurmctld.log", "slurmd.log")   # in slurm.log_dir (slurm.conf.j2)
LOG_MODE = 0o640


class ClusterError(RuntimeError):
    """The embedded cluster could not be brought up; the message says why and what to do."""


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def _render(name: str, **values) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name).render(**values)


def render_slurm_conf(cfg: dict) -> str:
    s = cfg["slurm"]
    return _render(
        "slurm.conf.j2",
        cluster_name=s["cluster_name"], node_name=node_name(), node_addr="127.0.0.1",
        ctld_port=s["ctld_port"], slurmd_port=s["slurmd_port"], state_dir=s["state_dir"],
        run_dir=str(RUN_DIR), log_dir=cfg["slurm"]["log_dir"], cpus=s["node_cpus"],
        memory_mb=s["node_memory_mb"], gpu_type=s["gpu_type"], gpus=s["gpus"], partitions=s["partitions"],
    )


def render_gres_conf(cfg: dict) -> str:
    s = cfg["slurm"]
    if not s["gpus"]:
        return "# no GPUs declared\n"
    # File= must name character devices; /dev/null's major/minor stand in for a GPU.
    files = f"{FAKE_GPU_PREFIX}[0-{s['gpus'] - 1}]" if s["gpus"] > 1 else f"{FAKE_GPU_PREFIX}0"
    return (
        "# Written by `academy up`: fake GPUs for the embedded cluster (character devices, no hardware).\n"
        f"NodeName={node_name()} Name=gpu Type={s['gpu_type']} File={files}\n"
    )


def ensure_fake_gpus(count: int) -> None:
    for i in range(count):
        path = f"{FAKE_GPU_PREFIX}{i}"
        if os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode):
            continue
        if os.path.lexists(path):
            os.remove(path)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # atomic: a daemon never reads half a file
    return True


def ensure_config(cfg: dict) -> bool:
    """Write slurm.conf and gres.conf; True if either changed."""
    s = cfg["slurm"]
    conf_dir = Path(s["conf_dir"])
    for d in (Path(s["state_dir"]) / "ctld", Path(s["state_dir"]) / "d", RUN_DIR, Path(cfg["slurm"]["log_dir"])):
        d.mkdir(parents=True, exist_ok=True)
    ensure_fake_gpus(s["gpus"])
    restrict_daemon_logs(Path(cfg["slurm"]["log_dir"]))
    changed = _write_if_changed(conf_dir / "slurm.conf", render_slurm_conf(cfg))
    changed |= _write_if_changed(conf_dir / "gres.conf", render_gres_conf(cfg))
    return changed


def restrict_daemon_logs(log_dir: Path) -> list[Path]:
    """Make slurmctld's and slurmd's logs no more readable than LOG_MODE; returns those changed.

    The daemons create them 0600 themselves; a log left by an older setup (or copied in) may be
    world-readable, and it names every job, user and node.
    """
    changed = []
    for name in DAEMON_LOGS:
        path = log_dir / name
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & ~LOG_MODE:
            os.chmod(path, mode & LOG_MODE)
            changed.append(path)
    return changed


def _run(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def munge_ok() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=5)
        return cred.returncode == 0 and _run_input(["unmunge"], cred.stdout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run_input(argv: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=5)


def controller_ok() -> bool:
    try:
        out = _run(["scontrol", "ping"], timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in out


def node_state() -> str:
    try:
        out = _run(["sinfo", "--noheader", "--Node", "--format=%T", "--nodes", node_name()], timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(predicate, timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def start_munge() -> None:
    if munge_ok():
        return
    if shutil.which("munged") is None:
        raise ClusterError("munged is not installed: run `./academy up` (it installs munge) or `apt-get install munge`")
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        _run(["mungekey", "--create"])  # Debian's package makes one; a bare image may not
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    result = _run(["runuser", "-u", "munge", "--", "munged"])
    if not _wait(munge_ok, 10):
        raise ClusterError(f"munged did not start (exit {result.returncode}): {result.stderr.strip()}")


def start_controller(cfg: dict) -> None:
    if controller_ok():
        return
    port = cfg["slurm"]["ctld_port"]
    if port_in_use(port):
        raise ClusterError(
            f"port {port} (slurmctld) is taken by another program: stop it, or set slurm.ctld_port in "
            "/etc/academy/config.yaml to a free port"
        )
    result = _run(["slurmctld"])
    if not _wait(controller_ok, 20):
        log = Path(cfg["slurm"]["log_dir"]) / "slurmctld.log"
        raise ClusterError(f"slurmctld did not start (exit {result.returncode}); last lines of {log}:\n{_log_tail(log)}")


def start_node(cfg: dict) -> None:
    if _pid_alive(RUN_DIR / "slurmd.pid") is None:
        port = cfg["slurm"]["slurmd_port"]
        if port_in_use(port):
            raise ClusterError(
                f"port {port} (slurmd) is taken by another program: stop it, or set slurm.slurmd_port in "
                "/etc/academy/config.yaml to a free port"
            )
        result = _run(["slurmd"])
        if result.returncode != 0:
            log = Path(cfg["slurm"]["log_dir"]) / "slurmd.log"
            raise ClusterError(f"slurmd did not start (exit {result.returncode}); last lines of {log}:\n{_log_tail(log)}")

    def ready() -> bool:
        state = node_state()
        if state.startswith(("down", "drain")):
            _run(["scontrol", "update", f"nodename={node_name()}", "state=resume"])
        return state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")

    if not _wait(ready, 30, 0.5):
        log = Path(cfg["slurm"]["log_dir"]) / "slurmd.log"
        raise ClusterError(
            f"node {node_name()} is '{node_state() or 'unknown'}', not ready; last lines of {log}:\n{_log_tail(log)}"
        )


def stop(cfg: dict | None = None, munge: bool = True) -> list[str]:
    """Stop the daemons this module starts; returns what it stopped."""
    stopped = []
    for name, pid_file in (("slurmd", RUN_DIR / "slurmd.pid"), ("slurmctld", RUN_DIR / "slurmctld.pid"),
                           ("munged", MUNGE_SOCKET_DIR / "munged.pid")):
        if name == "munged" and not munge:
            continue
        pid = _pid_alive(pid_file)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: _pid_alive(pid_file) != pid, 15)
        stopped.append(name)
    return stopped


def ensure_running(cfg: dict) -> str:
    """Bring the embedded cluster up (idempotent); returns a one-line summary."""
    if os.geteuid() != 0:
        raise ClusterError("the embedded Slurm cluster needs root to start its daemons: run `sudo ./academy up`")
    for tool in ("slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None:
            raise ClusterError(f"{tool} is not installed: run `./academy up` (it installs slurm-wlm) "
                               "or `apt-get install slurm-wlm`")
    changed = ensure_config(cfg)
    if changed and (controller_ok() or _pid_alive(RUN_DIR / "slurmd.pid")):
        stop(cfg, munge=False)  # node shape changed: daemons must re-read it from scratch
    start_munge()
    start_controller(cfg)
    start_node(cfg)
    s = cfg["slurm"]
    parts = ", ".join(p["name"] for p in s["partitions"])
    return f"Slurm cluster '{s['cluster_name']}' up: node {node_name()}, partitions {parts}, {s['gpus']} x gpu:{s['gpu_type']}"
