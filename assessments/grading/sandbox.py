"""The sandbox a learner's kernel runs in: namespaces, its own uid, a cgroup, resource limits.

Built from bubblewrap (Debian's ``bubblewrap``) and util-linux (prlimit, setpriv); the grading
job runs as root so that it can build namespaces, create a cgroup and drop to the sandbox uid.
What the kernel gets:

- its own mount namespace holding only what a notebook needs to run: the system (``/usr``,
  ``/etc``, ``/sys``) and the notebook environment read-only, its own work directory, and empty
  private ``/tmp``, ``/var/tmp`` and ``/dev/shm``. Homes, ``/root``, ``/var`` (the platform's
  state, logs, spool, other sandboxes' directories), ``/run`` (munge's socket), ``/opt`` beyond
  the notebook environment, ``/etc/academy`` and any checkout are not there at all: an allow-list,
  so a path nobody thought of is hidden too;
- its own PID namespace (it sees only its own processes; when its first process ends, the kernel
  ends every other one), network namespace (a loopback, nothing else), IPC and UTS namespaces;
- a memory and a pids cgroup of its own (cgroup v1, under the grading job's own cgroup), so
  memory is capped whatever form it takes (heap, mappings, files in its tmpfs), and RLIMIT_DATA
  on top to turn most bombs into a MemoryError rather than the OOM killer;
- a uid of its own, unused by any account (no passwd entry is needed), so RLIMIT_NPROC counts
  only its processes and clean-up can kill everything it left behind.

What it wrote outside its work directory lives in the namespace's tmpfs and is gone when the
kernel ends; the work directory is removed after grading.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Far above any account's uid (Debian allocates users from 1000, systemd's dynamic users sit
# at 61184-65519, container ranges at 100000+).
SANDBOX_UID_BASE = 1_900_000_000
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the kernel's process needs above RLIMIT_DATA (its code, the interpreter's mappings, the
# tmpfs files it writes): the cgroup's limit is the data limit plus this.
CGROUP_HEADROOM = 512 << 20
# Read-only system paths the kernel sees (merged-/usr symlinks like /bin -> usr/bin are kept as links).
SYSTEM_PATHS = ["/usr", "/etc", "/sys", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
# Hidden even inside /etc: the platform's config may name database URLs with passwords.
HIDDEN_IN_ETC = ["/etc/academy", "/etc/munge"]
# The sandbox's own name must resolve, to its loopback (its only network): torchrun --standalone,
# Gloo and MPI look their host up by name, and without this wait on DNS until they time out.
SANDBOX_HOSTNAME = "sandbox"
HOSTS_FILE = Path("/run/academy-sandbox/hosts")
SANDBOX_HOSTS = (f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n"
                 f"::1\tlocalhost ip6-localhost ip6-loopback {SANDBOX_HOSTNAME}\n")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 3 << 30      # RLIMIT_DATA; the cgroup caps data + CGROUP_HEADROOM of every kind
    processes: int = 64              # RLIMIT_NPROC for the sandbox uid and the pids cgroup: a fork bomb stops here
    file_bytes: int = 64 << 20       # RLIMIT_FSIZE: no file written bigger than this
    open_files: int = 256
    cpu_seconds: int = 900           # RLIMIT_CPU: a backstop; cell timeouts come first


def sandbox_uid(job_id: int, slot: int) -> int:
    """A uid no other running sandbox has: one per (grading job, submission slot)."""
    return SANDBOX_UID_BASE + (job_id % 1_000_000) * 100 + slot % 100


class Cgroup:
    """A memory and a pids cgroup (v1) for one sandbox, below the cgroups this process is in.

    Below, not beside: a grading job that Slurm confines (task/cgroup) keeps its own limit over
    its sandboxes, and the sandbox's memory counts towards the job's.
    """

    CONTROLLERS = ("memory", "pids")

    def __init__(self, name: str):
        self.dirs = {c: _own_cgroup_dir(c) / name for c in self.CONTROLLERS}

    def create(self, limits: Limits) -> None:
        for d in self.dirs.values():
            d.mkdir(exist_ok=True)
        memory = str(limits.memory_bytes + CGROUP_HEADROOM)
        (self.dirs["memory"] / "memory.limit_in_bytes").write_text(memory)
        swap = self.dirs["memory"] / "memory.memsw.limit_in_bytes"  # only with swap accounting on
        if swap.exists():
            swap.write_text(memory)
        (self.dirs["pids"] / "pids.max").write_text(str(limits.processes))

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup."""
        try:
            fields = dict(line.split() for line in (self.dirs["memory"] / "memory.oom_control").read_text().splitlines())
            return int(fields.get("oom_kill", 0))
        except (OSError, ValueError):
            return 0

    def remove(self, within_s: float = 10) -> None:
        """Remove the cgroups (empty once everything in them has been killed and reaped)."""
        deadline = time.monotonic() + within_s
        for d in self.dirs.values():
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cgroup {d} still holds processes after {within_s:.0f} s")
                    time.sleep(0.05)


def _own_cgroup_dir(controller: str) -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    raise RuntimeError(f"this node has no cgroup v1 '{controller}' controller: the grading sandbox needs the "
                       "memory and pids controllers of cgroup v1 (see README, 'What a grading node needs')")


def mount_argv(workdir: Path, notebook_env: str) -> list[str]:
    """bubblewrap's arguments: the namespaces and the kernel's whole view of the file system."""
    # --die-with-parent: the sandbox ends with the grader that started it. So ipykernel's own
    # watch on its parent goes (JPY_PARENT_PID): in a PID namespace its parent is never that pid.
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            "--hostname", SANDBOX_HOSTNAME, "--unsetenv", "JPY_PARENT_PID"]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in HIDDEN_IN_ETC:
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
    argv += ["--ro-bind", str(_hosts_file()), "/etc/hosts"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):  # empty, private, gone with the namespace
        argv += ["--perms", "1777", "--tmpfs", scratch]
    # The GPUs Slurm gave the job: the devices themselves (Slurm's device cgroup already limits which).
    for dev in sorted(glob.glob("/dev/nvidia*")):
        argv += ["--dev-bind", dev, dev]
    made: set[str] = {"/tmp", "/var/tmp", "/dev/shm"}
    for target in (notebook_env, str(workdir)):
        argv += _searchable_parents(target, made)
    argv += ["--ro-bind", notebook_env, notebook_env, "--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    return argv


def _hosts_file() -> Path:
    """The sandbox's /etc/hosts, written once per boot (never in the work root, which holds only
    the work directories and is empty after grading)."""
    path = HOSTS_FILE
    path.parent.mkdir(mode=0o755, exist_ok=True)
    if not path.exists() or path.read_text() != SANDBOX_HOSTS:
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(SANDBOX_HOSTS)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


def _searchable_parents(path: str, made: set[str]) -> list[str]:
    """Make the folders above a bound path searchable: bwrap creates missing ones 0700, root's only.
    Folders inside the read-only system paths are the real ones, with their real modes."""
    argv = []
    for parent in reversed(Path(path).parents[:-1]):  # from the top, without "/"
        p = str(parent)
        if p in made or any(p == m or p.startswith(m + "/") for m in SYSTEM_PATHS):
            continue
        argv += ["--perms", "0755", "--dir", p]
        made.add(p)
    return argv


def wrapper_argv(uid: int, limits: Limits, workdir: Path, cgroup: Cgroup,
                 notebook_env: str = sys.prefix) -> list[str]:
    """What goes before the kernel's own command line.

    sh puts itself into the sandbox's cgroups and becomes bwrap (exec), so every process of the
    sandbox starts inside them. SIGINT is ignored from there on: jupyter_client interrupts a cell
    by signalling the whole process group, and bwrap's monitor, which holds the namespace, would
    die of it (ipykernel installs its own SIGINT handler while it runs a cell, so interrupts still work).
    """
    enter = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; trap "" INT; exec "$@"'
    return [
        "/bin/sh", "-c", enter, "sh", *cgroup.procs_files, "--",
        *mount_argv(workdir, notebook_env), "--",
        "prlimit", f"--nproc={limits.processes}", f"--data={limits.memory_bytes}",
        f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}", "--core=0",
        f"--cpu={limits.cpu_seconds}", "--",
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--inh-caps=-all", "--bounding-set=-all", "--",
    ]


def kernel_env(workdir: Path, learner: str, cpus: int) -> dict[str, str]:
    """The kernel's whole environment: what a learner's session would have, nothing that says 'grading'."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir), "USER": learner, "LOGNAME": learner, "LANG": "C.UTF-8",
        "TMPDIR": str(workdir / "tmp"), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(workdir / ".config" / "matplotlib"),
        "IPYTHONDIR": str(workdir / ".ipython"), "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": str(cpus), "MKL_NUM_THREADS": str(cpus),
    }
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs Slurm gave this grading job
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def make_workdir(parent: Path, uid: int, files: dict[str, bytes]) -> Path:
    """A fresh directory only the sandbox uid (and root) can enter, holding the files the notebook reads."""
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o700)  # the sandbox sees its own directory only (bound into its namespace), never this one
    workdir = parent / f"sandbox-{uid}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700)
    (workdir / "tmp").mkdir(mode=0o700)
    for name, data in files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in [workdir, *workdir.rglob("*")]:
        os.lchown(path, uid, uid)
    return workdir


def processes_of(uid: int) -> list[int]:
    """The live processes (not zombies) whose real uid is ``uid``."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _uid_of(p) == uid]


# Helpers Python's multiprocessing starts once and keeps for the kernel's lifetime (torch.multiprocessing's
# spawn, a Pool): part of the kernel, as in a session, not something the notebook left running.
KERNEL_HELPERS = (b"from multiprocessing.resource_tracker import main", b"from multiprocessing.forkserver import main")


def lingering_of(uid: int) -> list[int]:
    """The sandbox uid's processes besides multiprocessing's own helpers."""
    def helper(pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return any(h in cmdline for h in KERNEL_HELPERS)
    return [pid for pid in processes_of(uid) if not helper(pid)]


def kill_everything_of(uid: int, within_s: float = 10) -> int:
    """SIGKILL every process the sandbox uid still has (a forked child, a daemon); how many there were."""
    killed = 0
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = processes_of(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    # Still there after repeated SIGKILLs: a fork bomb outrunning us. setpriv-less pkill is no
    # better; report it so the trainer's note says so.
    raise RuntimeError(f"processes of sandbox uid {uid} survived {within_s:.0f} s of SIGKILL")


def _uid_of(proc: Path) -> int | None:
    """The real uid of a live process; None for zombies (dead, waiting for their parent to reap them)."""
    try:
        fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            return None
        return int(fields["Uid"].split()[0])
    except (OSError, ValueError, KeyError, IndexError):
        return None


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def check_tools() -> None:
    """Everything a grading node needs for the sandbox, or an error that says what is missing."""
    for tool, package in (("bwrap", "bubblewrap"), ("prlimit", "util-linux"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"the grading sandbox needs {tool} ({package}) on every grading node")
    if os.geteuid() != 0:
        raise RuntimeError("the grading job must run as root to build the sandbox (it drops to a sandbox uid)")
    for controller in Cgroup.CONTROLLERS:
        d = _own_cgroup_dir(controller)
        if not os.access(d, os.W_OK):
            raise RuntimeError(f"cannot create cgroups under {d}: the grading sandbox needs a writable cgroup v1 "
                               f"'{controller}' controller")
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise RuntimeError(f"cannot make the sandbox's namespaces on this node: {probe.stderr.strip()}")
