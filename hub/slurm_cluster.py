"""The embedded Slurm cluster: config files, fake GPUs, and munge/slurmctld/slurmd.

One node on this machine's loopback (the default), or, with ``slurm.nodes`` above 1, a try-out
of a site's layout: each node in its own network namespace with its own address and slurmd
(hub/cluster_network.py), the controller and the hub on the service address.

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

from . import cluster_network
from .cluster_network import Node

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


def compute_nodes(cfg: dict) -> list[Node]:
    """The cluster's nodes: this machine on its loopback, or the namespaces of a multi-host try-out."""
    if cluster_network.multi_host(cfg):
        return cluster_network.nodes(cfg)
    s = cfg["slurm"]
    return [Node(node_name(), "127.0.0.1", s["gpu_type"], (0, s["gpus"] - 1))]


def render_slurm_conf(cfg: dict, cgroups: bool | None = None) -> str:
    s = cfg["slurm"]
    multi = cluster_network.multi_host(cfg)
    service = cluster_network.service_address(cfg) if multi else "127.0.0.1"
    nodes = compute_nodes(cfg)
    return _render(
        "slurm.conf.j2",
        cluster_name=s["cluster_name"], ctld_name=node_name(), ctld_addr=service, multi_host=multi,
        dbd_host=service if multi else "localhost", nodes=nodes, node_list=",".join(n.name for n in nodes),
        ctld_port=s["ctld_port"], slurmd_port=s["slurmd_port"], dbd_port=s["dbd_port"], state_dir=s["state_dir"],
        run_dir=str(RUN_DIR), log_dir=cfg["slurm"]["log_dir"], cpus=s["node_cpus"],
        memory_mb=s["node_memory_mb"], gpus=s["gpus"], partitions=s["partitions"],
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
    if not cfg["slurm"]["gpus"]:
        return "# no GPUs declared\n"
    # File= must name character devices, one per GPU and none shared with anything else (each
    # node its own minors): the devices cgroup then lets a job open only its own (ensure_fake_gpus).
    lines = ["# Written by `academy up`: fake GPUs for the embedded cluster (character devices, no hardware).\n"]
    for n in compute_nodes(cfg):
        first, last = n.gpu_files
        files = f"{FAKE_GPU_PREFIX}[{first}-{last}]" if last > first else f"{FAKE_GPU_PREFIX}{first}"
        lines.append(f"NodeName={n.name} Name=gpu Type={n.gpu_type} File={files}\n")
    return "".join(lines)


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
    # Those of a larger layout before (more nodes, more GPUs) go: no job may find a GPU that no
    # node declares, which the devices cgroup would not stop it opening.
    for path in Path(FAKE_GPU_PREFIX).parent.glob(Path(FAKE_GPU_PREFIX).name + "*"):
        index = path.name[len(Path(FAKE_GPU_PREFIX).name):]
        if index.isdigit() and int(index) >= count:
            path.unlink()


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
    ensure_fake_gpus(s["gpus"] * len(compute_nodes(cfg)))
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
    for path in [log_dir / name for name in DAEMON_LOGS] + sorted(log_dir.glob("slurmd-*.log")):
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


def node_state(name: str = "") -> str:
    try:
        out = _run(["sinfo", "--noheader", "--Node", "--format=%T", "--nodes", name or node_name()], timeout=10).stdout
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


def _require_free_port(cfg: dict, key: str, daemon: str) -> None:
    port = cfg["slurm"][key]
    if port_in_use(port):
        raise ClusterError(f"port {port} ({daemon}) is taken by another program: stop it, or set slurm.{key} in "
                           "/etc/academy/config.yaml to a free port")


def start_controller(cfg: dict) -> None:
    if controller_ok():
        return
    _require_free_port(cfg, "ctld_port", "slurmctld")
    result = _run(["slurmctld"])
    if not _wait(controller_ok, 20):
        log = Path(cfg["slurm"]["log_dir"]) / "slurmctld.log"
        raise ClusterError(f"slurmctld did not start (exit {result.returncode}); last lines of {log}:\n{_log_tail(log)}")


def slurmd_pid_file(cfg: dict, node: Node) -> Path:
    return RUN_DIR / (f"slurmd-{node.name}.pid" if cluster_network.multi_host(cfg) else "slurmd.pid")


def slurmd_log(cfg: dict, node: Node) -> Path:
    return Path(cfg["slurm"]["log_dir"]) / (f"slurmd-{node.name}.log" if cluster_network.multi_host(cfg) else "slurmd.log")


def start_nodes(cfg: dict) -> None:
    """A slurmd per node (in its namespace where the cluster has several: ensure_running wired
    those first), then each node ready."""
    multi = cluster_network.multi_host(cfg)
    nodes = compute_nodes(cfg)
    for node in nodes:
        if _pid_alive(slurmd_pid_file(cfg, node)) is not None:
            continue
        if multi:
            (Path(cfg["slurm"]["state_dir"]) / "d" / node.name).mkdir(parents=True, exist_ok=True)
            result = _run(cluster_network.in_node(node, ["slurmd", "-N", node.name]))
        else:
            _require_free_port(cfg, "slurmd_port", "slurmd")   # a node's namespace has its ports to itself
            result = _run(["slurmd"])
        if result.returncode != 0:
            log = slurmd_log(cfg, node)
            raise ClusterError(f"slurmd of node {node.name} did not start (exit {result.returncode}); "
                               f"last lines of {log}:\n{_log_tail(log)}")
    for node in nodes:
        def ready() -> bool:
            state = node_state(node.name)
            if state.startswith(("down", "drain")):
                _run(["scontrol", "update", f"nodename={node.name}", "state=resume"])
            return state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")

        if not _wait(ready, 30, 0.5):
            log = slurmd_log(cfg, node)
            raise ClusterError(f"node {node.name} is '{node_state(node.name) or 'unknown'}', not ready; "
                               f"last lines of {log}:\n{_log_tail(log)}")


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

    # Every slurmd, of either layout: a change of layout stops the old one's daemons.
    daemons = [("slurmd", p) for p in sorted(RUN_DIR.glob("slurmd*.pid"))]
    daemons.append(("slurmctld", RUN_DIR / "slurmctld.pid"))
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
    if changed and (controller_ok() or any(_pid_alive(p) for p in RUN_DIR.glob("slurmd*.pid"))):
        stop(cfg, munge=False, accounting=False)  # node shape changed: daemons must re-read it from scratch
    if cluster_network.multi_host(cfg):
        cluster_network.ensure(cfg)   # first: the daemons and the commands reach each other on its addresses
    start_munge()
    slurm_accounting.ensure_running(cfg)
    start_controller(cfg)
    start_nodes(cfg)
    apply_policy(cfg)  # after slurmctld has registered the gres/gpu TRES that the QOS limits count
    s = cfg["slurm"]
    parts = ", ".join(p["name"] for p in s["partitions"])
    missing = [name for name, ok in cgroup_controllers().items() if not ok]
    limits = ("memory, cores and GPU devices enforced by cgroups" if not missing else
              f"NOT enforced: memory, cores and GPU devices (no writable cgroup v1 controller {', '.join(missing)})")
    nodes = "; ".join(f"node {n.name} at {n.address}, {s['gpus']} x gpu:{n.gpu_type}" for n in compute_nodes(cfg))
    return (f"Slurm cluster '{s['cluster_name']}' up: {nodes}; partitions {parts}, "
            f"accounting by slurmdbd; {limits}")


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
