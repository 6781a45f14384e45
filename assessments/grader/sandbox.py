"""The sandbox a learner's kernel runs in: its own uid, no network, resource limits.

Built from util-linux (unshare, prlimit, setpriv), which every Slurm node has; the grading job
runs as root so that it can enter a fresh network namespace and drop to the sandbox uid. Each
sandbox gets a uid of its own, unused by any account (no passwd entry is needed), so that
RLIMIT_NPROC counts only its processes and clean-up can kill everything it left behind.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 3 << 30      # RLIMIT_DATA: heap and private mappings (CUDA's reservations are not)
    processes: int = 64              # RLIMIT_NPROC for the sandbox uid: a fork bomb stops here
    file_bytes: int = 64 << 20       # RLIMIT_FSIZE: no file written bigger than this
    open_files: int = 256
    cpu_seconds: int = 900           # RLIMIT_CPU: a backstop; cell timeouts come first


def sandbox_uid(job_id: int, slot: int) -> int:
    """A uid no other running sandbox has: one per (grading job, submission slot)."""
    return SANDBOX_UID_BASE + (job_id % 1_000_000) * 100 + slot % 100


def wrapper_argv(uid: int, limits: Limits) -> list[str]:
    """What goes before the kernel's own command line."""
    return [
        "unshare", "--net", "--",  # a network namespace of its own: a loopback that is down, nothing else
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
        # `python -m ipykernel_launcher` must find the real one, not a submitted file of that name.
        "PYTHONSAFEPATH": "1",
        "OMP_NUM_THREADS": str(cpus), "MKL_NUM_THREADS": str(cpus),
    }
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs Slurm gave this grading job
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def make_workdir(parent: Path, uid: int, files: dict[str, bytes]) -> Path:
    """A fresh directory only the sandbox uid (and root) can enter, holding the files the notebook reads."""
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o711)  # others may enter their own directory, never list the parent
    for ancestor in parent.resolve().parents:
        if not os.stat(ancestor).st_mode & 0o001:
            raise RuntimeError(f"work_root {parent} is out of the sandbox's reach: {ancestor} is not "
                               "searchable by other users (chmod o+x it, or choose another work_root)")
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


def kill_everything_of(uid: int, within_s: float = 10) -> int:
    """SIGKILL every process the sandbox uid still has (a forked child, a daemon); how many there were."""
    killed = 0
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _uid_of(p) == uid]
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
    for tool in ("unshare", "prlimit", "setpriv"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"the grading sandbox needs {tool} (util-linux) on every grading node")
    if os.geteuid() != 0:
        raise RuntimeError("the grading job must run as root to build the sandbox (it drops to a sandbox uid)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise RuntimeError(f"cannot make a network namespace on this node: {probe.stderr.strip()}")
