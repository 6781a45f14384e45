"""The embedded one-node Slurm cluster: config files, fake GPUs, and munge/slurmctld/slurmd.

Idempotent: ``ensure_running`` leaves a healthy cluster alone, rewrites the config only
when it changed (restarting the daemons then), and says exactly what stands in the way
(a port taken, a daemon that will not start) with the log lines that explain it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from spawners.profiles import parse_profiles
from spawners.slurm_policy import Policy

TEMPLATES = Path(__file__).parent / "templates" / "slurm"
RUN_DIR = Path("/run/academy-slurm")
MUNGE_SOCKET_DIR = Path("/run/munge")
FAKE_GPU_PREFIX = "/dev/academy-gpu"
FAKE_GPU_MAJOR = 195            # NVIDIA's (Documentation/admin-guide/devices.txt)
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "cpuset", "devices", "freezer")   # task/cgroup and proctrack/cgroup
DAEMON_LOGS = ("slurmctld.log", "slurmd.log")   # in slurm.log_dir (slurm.conf.j2)
LOG_MODE = 0o640


class ClusterError(RuntimeError):
    """The embedded cluster could not be brought up; the message says why and what to do."""


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def _render(name: str, **values) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name).render(**values)


def cgroup_controllers(root: Path = CGROUP_ROOT) -> dict[str, bool]:
    """{controller: usable} for the cgroup v1 controllers Slurm's cgroup plugins need: mounted,
    and a child group can be made (a container may mount them read-only)."""
    usable = {}
    for name in CGROUP_CONTROLLERS:
        probe = root / name / f"academy-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
            usable[name] = True
        except OSError:
            usable[name] = False
    return usable


def cgroups_enforced(cfg: dict) -> bool:
    return all(cgroup_controllers().values())


def render_slurm_conf(cfg: dict, cgroups: bool | None = None) -> str:
    s = cfg["slurm"]
    return _render(
        "slurm.conf.j2",
        cluster_name=s["cluster_name"], node_name=node_name(), node_addr="127.0.0.1",
        ctld_port=s["ctld_port"], slurmd_port=s["slurmd_port"], dbd_port=s["dbd_port"], state_dir=s["state_dir"],
        run_dir=str(RUN_DIR), log_dir=cfg["slurm"]["log_dir"], cpus=s["node_cpus"],
        memory_mb=s["node_memory_mb"], gpu_type=s["gpu_type"], gpus=s["gpus"], partitions=s["partitions"],
        cgroups=cgroups_enforced(cfg) if cgroups is None else cgroups, operators_group=s["operators_group"],
        epilog_slurmctld=str(epilog_path(cfg)),
    )


def end_notices_dir(cfg: dict) -> str:
    """Where slurmctld notes each job's end for the hub: the config's, else the embedded cluster's own."""
    s = cfg["slurm"]
    return s["end_notices_dir"] or (str(RUN_DIR / "ended") if s["manage"] else "")


def epilog_path(cfg: dict) -> Path:
    return Path(cfg["slurm"]["state_dir"]) / "epilog_slurmctld.sh"


def render_gres_conf(cfg: dict) -> str:
    s = cfg["slurm"]
    if not s["gpus"]:
        return "# no GPUs declared\n"
    # File= must name character devices, one per GPU and none shared with anything else: the
    # devices cgroup then lets a job open only its own (see ensure_fake_gpus).
    files = f"{FAKE_GPU_PREFIX}[0-{s['gpus'] - 1}]" if s["gpus"] > 1 else f"{FAKE_GPU_PREFIX}0"
    return (
        "# Written by `academy up`: fake GPUs for the embedded cluster (character devices, no hardware).\n"
        f"NodeName={node_name()} Name=gpu Type={s['gpu_type']} File={files}\n"
    )


def ensure_fake_gpus(count: int) -> None:
    """Stand-in GPUs: character devices with NVIDIA's major number and the GPU's index as minor,
    as /dev/nvidiaN are. No driver answers them: opening one the job was given fails with ENXIO
    (no such device), one it was not given with EPERM (the devices cgroup)."""
    for i in range(count):
        path = f"{FAKE_GPU_PREFIX}{i}"
        want = os.makedev(FAKE_GPU_MAJOR, i)
        if os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode) and os.stat(path).st_rdev == want:
            continue
        if os.path.lexists(path):
            os.remove(path)
        os.mknod(path, 0o666 | stat.S_IFCHR, want)


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
    changed |= _write_if_changed(conf_dir / "cgroup.conf", _render("cgroup.conf.j2"))
    notices = Path(end_notices_dir(cfg))
    notices.mkdir(parents=True, exist_ok=True)
    os.chmod(notices, 0o700)   # job ids of everyone's ended jobs: PrivateData hides them from learners, so must this
    _write_if_changed(epilog_path(cfg), _render("epilog_slurmctld.sh.j2", notices_dir=shlex.quote(str(notices))), 0o755)
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


def _stop_pid(pid_file: Path, timeout: float = 15) -> bool:
    pid = _pid_alive(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: _pid_alive(pid_file) != pid, timeout)
    return True


def stop(cfg: dict | None = None, munge: bool = True, accounting: bool = True) -> list[str]:
    """Stop the daemons this module starts, the controller before its accounting (it reports
    its last jobs to slurmdbd), munge last; returns what it stopped."""
    from . import slurm_accounting

    daemons = [("slurmd", RUN_DIR / "slurmd.pid"), ("slurmctld", RUN_DIR / "slurmctld.pid")]
    if accounting:
        daemons += [("slurmdbd", slurm_accounting.DBD_PID), ("mariadb", slurm_accounting.MARIADB_PID)]
    if munge:
        daemons.append(("munged", MUNGE_SOCKET_DIR / "munged.pid"))
    return [name for name, pid_file in daemons if _stop_pid(pid_file, 30 if name == "mariadb" else 15)]


def ensure_running(cfg: dict) -> str:
    """Bring the embedded cluster up (idempotent); returns a one-line summary."""
    if os.geteuid() != 0:
        raise ClusterError("the embedded Slurm cluster needs root to start its daemons: run `sudo ./academy up`")
    for tool in ("slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None:
            raise ClusterError(f"{tool} is not installed: run `./academy up` (it installs slurm-wlm) "
                               "or `apt-get install slurm-wlm`")
    from . import slurm_accounting  # it uses this module's helpers

    changed = ensure_config(cfg)
    if changed and (controller_ok() or _pid_alive(RUN_DIR / "slurmd.pid")):
        stop(cfg, munge=False, accounting=False)  # node shape changed: daemons must re-read it from scratch
    start_munge()
    slurm_accounting.ensure_running(cfg)
    start_controller(cfg)
    start_node(cfg)
    apply_policy(cfg)  # after slurmctld has registered the gres/gpu TRES that the QOS limits count
    s = cfg["slurm"]
    parts = ", ".join(p["name"] for p in s["partitions"])
    missing = [name for name, ok in cgroup_controllers().items() if not ok]
    limits = ("memory, cores and GPU devices enforced by cgroups" if not missing else
              f"NOT enforced: memory, cores and GPU devices (no writable cgroup v1 controller {', '.join(missing)})")
    return (f"Slurm cluster '{s['cluster_name']}' up: node {node_name()}, partitions {parts}, "
            f"{s['gpus']} x gpu:{s['gpu_type']}, accounting by slurmdbd; {limits}")


def apply_policy(cfg: dict, users: dict[str, list[str]] | None = None) -> None:
    """The platform's QOS and accounts in the embedded cluster's accounting, or the own-work
    association of each of `users` ({name: hub groups}) (idempotent)."""
    from spawners.slurm_accounts import AccountingError, SlurmAccounts
    from spawners.slurm_policy import apply_base, ensure_user

    accounts = SlurmAccounts(cfg["slurm"]["bin_dir"], cfg["slurm"]["command_timeout"])
    policy, profiles = Policy.from_config(cfg), parse_profiles(cfg["profiles"])
    try:
        if users is None:
            apply_base(accounts, policy, profiles)
            return
        current = accounts.associations(sorted(users))
        for name, groups in users.items():
            ensure_user(accounts, policy, name, policy.qos_for_groups(profiles, groups), policy.own_account, current)
    except AccountingError as e:
        raise ClusterError(f"could not set up the platform's accounts and QOS: {e}") from e
