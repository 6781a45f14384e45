"""What the benchmarks share: the machine, the benchmark's Unix users, the two hubs, a learner.

ANCHOR: stock batchspawner 1.3.0 ``SlurmSpawner`` with default settings
(benchmarks/anchor_jupyterhub_config.py), session env /opt/academy/venv-anchor.
OURS: the academy hub as the project configures it (hub/jupyterhub_config.py via
hub.hub_process.start), with a benchmark override YAML (ports, state dir, users, timeouts).

Both run on the same JupyterHub (the hub venv's), the same Slurm and the same machine, never
at the same time. Needs root (PAM logins of real users, sudo to them, scancel of their jobs).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from hub import config as academy_config  # noqa: E402
from hub import hub_process, slurm_cluster  # noqa: E402
from spawners.hub_api import HubAPI, HubAPIError  # noqa: E402
from tests.support import HubUser, free_port  # noqa: E402 - the tests' own helpers, not copies

RESULTS = BENCH_DIR / "results"
ANCHOR_CONFIG = BENCH_DIR / "anchor_jupyterhub_config.py"
ANCHOR_ENV = Path("/opt/academy/venv-anchor")
NOTEBOOK_ENV = Path("/opt/academy/venv-notebook")
HUB_BIN = Path(sys.executable).with_name("jupyterhub")
SLURMCTLD_LOG = Path("/var/log/academy/slurmctld.log")
SLURMD_LOG = Path("/var/log/academy/slurmd.log")
USER_PREFIX = "bench"
# Other hubs on this machine (the project's tests) tag their jobs "academy-academy"; their
# reapers cancel tagged jobs they do not know. A tag of our own keeps the two apart.
BENCH_CLUSTER_TAG = "bench"
BENCH_PROFILE = {
    "key": "bench-1cpu", "display": "Benchmark: 1 core, 1 GB", "partition": "cpu", "cpus": 1,
    "memory": "1G", "walltime_default": "01:00:00", "walltime_max": "04:00:00", "groups": ["bench"],
}
BENCH_GPU_PROFILE = {
    "key": "bench-1gpu", "display": "Benchmark: 1 GPU, 1 core, 1 GB", "partition": "gpu", "gres": "gpu:h200:1",
    "cpus": 1, "memory": "1G", "walltime_default": "00:30:00", "walltime_max": "01:00:00", "groups": ["bench"],
}


class Interrupted(KeyboardInterrupt):
    pass


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C, so every finally block (hub stop, scancel) runs."""
    def _raise(signum, _frame):
        raise Interrupted(f"signal {signum}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)


ANCHOR_PACKAGES = ["jupyterhub==6.1.1", "jupyterlab==4.6.6", "jupyter-server==2.21.1", "ipywidgets==8.1.9",
                   "nbgrader==0.9.6", "batchspawner==1.3.0"]


def ensure_anchor_env() -> None:
    """The anchor's session env: stock packages as pip installs them (rfc3987-syntax included),
    batchspawner for `batchspawner-singleuser`; readable and executable by the learners."""
    if (ANCHOR_ENV / "bin" / "batchspawner-singleuser").exists():
        return
    log(f"making the anchor's session env {ANCHOR_ENV} (once) ...")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(ANCHOR_ENV)], check=True)
    subprocess.run([str(ANCHOR_ENV / "bin" / "pip"), "install", "-q", *ANCHOR_PACKAGES], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(ANCHOR_ENV)], check=True)


def require_root() -> None:
    """Root, the academy's session env, and the anchor's (made here if missing)."""
    if os.geteuid() != 0:
        raise SystemExit("benchmarks need root (PAM logins of real users, sudo, scancel): run them as root")
    if not (NOTEBOOK_ENV / "bin" / "jupyterhub-singleuser").exists():
        raise SystemExit(f"{NOTEBOOK_ENV} is missing: run `./academy up` (or `./academy prepare`) first")
    ensure_anchor_env()


# -- machine and results --------------------------------------------------------------------

def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem_kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
    return {
        "cpu_model": models[0].strip() if models else platform.processor(),
        "cores": len(re.findall(r"^processor\s*:", cpuinfo, re.M)),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "slurm": subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip(),
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- Unix users -----------------------------------------------------------------------------

def bench_users(n: int) -> list[str]:
    return [f"{USER_PREFIX}{i:02d}" for i in range(1, n + 1)]


def ensure_users(n: int) -> dict[str, str]:
    """bench01..benchNN as real Unix users with fresh random passwords (PAM logs them in)."""
    creds = {}
    for name in bench_users(n):
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        creds[name] = secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input="".join(f"{u}:{p}\n" for u, p in creds.items()), text=True, check=True)
    # Their Slurm associations (own work, the benchmark profile's QOS), as an operator makes them for
    # any cluster user: stock batchspawner's sbatch needs one as much as ours does.
    cfg = academy_config.load()
    cfg = {**cfg, "profiles": [*cfg["profiles"], BENCH_PROFILE, BENCH_GPU_PROFILE]}
    slurm_cluster.apply_policy(cfg)   # the benchmark profile's QOS
    slurm_cluster.apply_policy(cfg, {u: ["bench"] for u in creds})
    return creds


def user_jobs(users: list[str]) -> list[str]:
    if not users:
        return []
    out = subprocess.run(["squeue", "--noheader", "--format=%i", f"--user={','.join(users)}"],
                         capture_output=True, text=True).stdout
    return out.split()


def cancel_user_jobs(users: list[str], wait_s: float = 90) -> None:
    """scancel every job of the benchmark's users and wait until Slurm has none left."""
    for user in users:
        subprocess.run(["scancel", f"--user={user}"], capture_output=True)
    deadline = time.monotonic() + wait_s
    while user_jobs(users) and time.monotonic() < deadline:
        time.sleep(1)
    left = user_jobs(users)
    if left:
        log(f"warning: jobs still in Slurm after scancel: {left}")


# -- the two hubs ---------------------------------------------------------------------------

def _is_up(url: str) -> bool:
    try:
        HubAPI(url + "/hub/api", "", timeout=3).request("GET", "/")
    except HubAPIError:
        return False
    return True


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


class BenchHub:
    kind = ""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.port, self.hub_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def pid(self) -> int | None:
        raise NotImplementedError

    def cpu_seconds(self) -> dict[str, float] | None:
        """CPU time of the hub process: its own, and of the children it has waited for (sudo, squeue...)."""
        pid = self.pid()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
        return {"hub_s": round(utime + stime, 2), "children_s": round(cutime + cstime, 2)}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class OursHub(BenchHub):
    """The academy hub exactly as the project configures it, on free ports, own state dir."""

    kind = "ours"

    def __init__(self, root: Path, users: dict[str, list[str]], profiles: list[dict] | None = None,
                 start_timeout: int = 300, http_timeout: int = 120, extra: dict | None = None):
        super().__init__(root)
        overrides: dict = {
            "hub": {"port": self.port, "hub_port": self.hub_port, "hub_connect_url": f"http://127.0.0.1:{self.hub_port}",
                    "proxy_api_port": self.proxy_api_port, "state_dir": str(self.state),
                    "log_dir": str(root / "log"), "start_timeout": start_timeout, "http_timeout": http_timeout},
            "slurm": {"cluster_name": BENCH_CLUSTER_TAG},
            "demo": {"users": users},
        }
        if profiles is not None:
            overrides["profiles"] = profiles
        self.overrides = academy_config.merge(overrides, extra or {})
        self.config_file = root / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(self.overrides))
        self.cfg = academy_config.load(self.config_file)

    @property
    def log_path(self) -> Path:
        return hub_process.log_file(self.cfg)

    def pid(self) -> int | None:
        return hub_process.running_pid(self.cfg)

    def start(self) -> None:
        # PYTHONPATH: the hub imports hub/ and spawners/ from this checkout, whichever checkout the
        # hub venv's editable install points to (CI runs on this machine re-point it).
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
        hub_process.start(self.cfg, config_env={"ACADEMY_CONFIG": str(self.config_file), "PYTHONPATH": pythonpath})

    def stop(self) -> None:
        try:
            hub_process.stop(self.cfg)
        finally:
            _kill_pidfile(self.state / "jupyterhub-proxy.pid")


class AnchorHub(BenchHub):
    """Stock batchspawner SlurmSpawner (benchmarks/anchor_jupyterhub_config.py)."""

    kind = "anchor"

    def __init__(self, root: Path, users: list[str], start_timeout: int = 300, http_timeout: int = 120,
                 session_cmd: str = "", squeue: str = ""):
        super().__init__(root)
        self.env = {
            "BENCH_STATE_DIR": str(self.state), "BENCH_PORT": str(self.port), "BENCH_HUB_PORT": str(self.hub_port),
            "BENCH_PROXY_API_PORT": str(self.proxy_api_port), "BENCH_USERS": ",".join(users),
            "BENCH_START_TIMEOUT": str(start_timeout), "BENCH_HTTP_TIMEOUT": str(http_timeout),
            "BENCH_ANCHOR_ENV": str(ANCHOR_ENV), "BENCH_SESSION_CMD": session_cmd, "BENCH_SQUEUE": squeue,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "jupyterhub.log"

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 90) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([str(HUB_BIN), "-f", str(ANCHOR_CONFIG)], cwd=self.state, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.env}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anchor hub exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            if _is_up(self.url):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"anchor hub did not answer in {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 90) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the hub stops its servers (stock cleanup_servers) and its proxy
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _kill_pidfile(self.state / "jupyterhub-proxy.pid")


def prepare_run(n_users: int, prefix: str) -> tuple[dict[str, str], list[str], Path]:
    """What every benchmark does first: root, signal handlers, its users (no job left), a state root;
    (credentials, user names, root)."""
    require_root()
    install_signal_handlers()
    creds = ensure_users(n_users)
    users = bench_users(n_users)
    cancel_user_jobs(users)
    root = make_root(prefix)
    log(f"state and logs under {root}")
    return creds, users, root


def in_threads(fn, items) -> None:
    """fn(item) for every item at once, each in a thread; returns when all have."""
    threads = [threading.Thread(target=fn, args=(item,), daemon=True) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def make_root(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"academy-bench-{prefix}-"))
    os.chmod(root, 0o755)
    return root


# -- a learner --------------------------------------------------------------------------------

class Learner(HubUser):
    """A benchmark user, logged in as the tests log theirs in, with what the benchmarks time."""

    def __init__(self, hub: "BenchHub", name: str, password: str):
        super().__init__(hub, name, password, timeout=60)
        self.token  # noqa: B018 - made now, outside any timed window

    def spawn_outcome(self, timeout: float) -> tuple[bool, str]:
        """Follow the hub's spawn progress stream until it says ready or failed: (ready, message).

        This is what a learner's browser does after pressing start: the spawn-pending page's
        EventSource reads GET /hub/api/users/<name>/server/progress (server-sent events).
        """
        events = self.progress_messages(timeout)
        last = events[-1] if events else {}
        if last.get("ready") or last.get("failed"):
            return bool(last.get("ready")), last.get("message", "")
        return False, "the progress stream ended without ready or failed"

    def start(self, body: dict | None = None) -> requests.Response:
        return self.api("POST", f"/users/{self.name}/server", json=body or {}, timeout=600)

    def status_through_proxy(self, timeout: float = 30) -> requests.Response:
        return requests.get(f"{self.hub.url}/user/{self.name}/api/status",
                            headers={"Authorization": f"token {self.token}"}, timeout=timeout)

    def stop(self, timeout: float = 90) -> bool:
        """Ask the hub to stop the server; whether it is gone within TIMEOUT (errors are not fatal here)."""
        try:
            self.api("DELETE", f"/users/{self.name}/server", timeout=timeout)
        except requests.RequestException:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.server() is None:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.5)
        return False


def login_all(hub: BenchHub, creds: dict[str, str], names: list[str]) -> dict[str, Learner]:
    return {name: Learner(hub, name, creds[name]) for name in names}


# -- logs -------------------------------------------------------------------------------------

_HUB_TS = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
_SLURM_TS = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\]")


def first_time(text: str, pattern: str, slurm: bool = False) -> float | None:
    """Epoch time of the first log line matching the regex ``pattern``."""
    rx = re.compile(pattern)
    for line in text.splitlines():
        if rx.search(line):
            m = (_SLURM_TS if slurm else _HUB_TS).match(line)
            if m:
                fmt = "%Y-%m-%dT%H:%M:%S.%f" if slurm else "%Y-%m-%d %H:%M:%S.%f"
                return _dt.datetime.strptime(m.group(1), fmt).timestamp()
    return None


def daemon_log(daemon: str, path: Path) -> Path:
    """The log file a running Slurm daemon writes, even if its path was deleted under it
    (a CI run on this machine may wipe /var/log/academy while the daemons keep running)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != daemon:
                continue
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(str(path)):
                    return fd
        except OSError:
            continue
    return path


def slurm_job_events(ctld: str, slurmd: str, job_id: str) -> dict[str, float | None]:
    j = re.escape(job_id)
    return {
        "slurm_submit_rpc": first_time(ctld, rf"_slurm_rpc_submit_batch_job: JobId={j}\b", slurm=True),
        # the main scheduler logs "sched: Allocate JobId=N", the backfill one "_start_job: Started JobId=N"
        "slurm_allocated": first_time(ctld, rf"(Allocate|Started) JobId={j}\b", slurm=True),
        "slurmd_launch": first_time(slurmd, rf"Launching batch job {j}\b", slurm=True),
    }


# -- bare server starts (the CPU floor) -------------------------------------------------------

def bare_server_floor(env: Path, users: list[str], timeout: float = 300) -> dict:
    """Start one bare `jupyter server` per user at once (no hub, no Slurm); time until all answer."""
    import pwd

    procs, ports, token = [], [], secrets.token_hex(16)
    t0 = time.monotonic()
    try:
        for user in users:
            pw = pwd.getpwnam(user)
            port = free_port()
            cmd = [str(env / "bin" / "jupyter-server"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={pw.pw_dir}"]
            proc_env = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
                        "PATH": f"{env}/bin:/usr/local/bin:/usr/bin:/bin"}
            procs.append(subprocess.Popen(cmd, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=pw.pw_dir,
                                          env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            ports.append(port)
        answered: dict[int, float] = {}
        deadline = t0 + timeout
        while len(answered) < len(ports) and time.monotonic() < deadline:
            for port in ports:
                if port in answered:
                    continue
                try:
                    r = requests.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"},
                                     timeout=5)
                    if r.status_code == 200:
                        answered[port] = time.monotonic() - t0
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        times = sorted(answered.values())
        return {"env": str(env), "servers": len(users), "answered": len(times),
                "all_answered_s": round(times[-1], 2) if len(times) == len(users) else None,
                "median_s": median(times), "first_s": round(times[0], 2) if times else None}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# -- the stand-in session environment (scheduler_load) ---------------------------------------

def make_standin_env(root: Path) -> tuple[Path, Path]:
    """(notebook_env for ours, the stand-in server executable shared by both hubs).

    ``<root>/standin-env/bin/python`` runs the real session env's Python;
    ``bin/academy-singleuser`` (what ours' spawner runs) is standin_server.py, and so is the
    returned executable that stock runs.
    """
    env = root / "standin-env"
    (env / "bin").mkdir(parents=True, exist_ok=True)
    python = env / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {NOTEBOOK_ENV}/bin/python "$@"\n')
    server = env / "bin" / "academy-singleuser"
    shutil.copy(BENCH_DIR / "standin_server.py", server)
    for p in (python, server):
        p.chmod(0o755)
    for d in (env, env / "bin"):
        d.chmod(0o755)
    return env, server


def make_counting_slurm_bin(root: Path) -> tuple[Path, Path]:
    """A directory of Slurm command wrappers that log each call and exec the real one (slurm.bin_dir: all of them)."""
    bindir = root / "slurm-bin"
    bindir.mkdir(parents=True, exist_ok=True)
    calls = root / "slurm-calls.log"
    calls.touch()
    calls.chmod(0o666)  # stock batchspawner runs squeue as the learner (sudo -E -u)
    for name in ("sbatch", "squeue", "scancel", "sacct", "sacctmgr", "sinfo"):
        real = shutil.which(name, path="/usr/bin:/bin") or f"/usr/bin/{name}"
        w = bindir / name
        w.write_text(f'#!/bin/bash\necho "$EPOCHREALTIME $UID {name} $*" >> {calls}\nexec {real} "$@"\n')
        w.chmod(0o755)
    bindir.chmod(0o755)
    return bindir, calls


def count_calls(calls: Path, command: str, t_from: float, t_to: float) -> int:
    n = 0
    for line in calls.read_text(errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[2] == command:
            try:
                t = float(parts[0].replace(",", "."))
            except ValueError:
                continue
            if t_from <= t < t_to:
                n += 1
    return n


def sdiag_counts() -> dict[str, dict[str, int]]:
    """RPC counts from sdiag: {'by_type': {...}, 'by_user': {...}} (cumulative since its last reset)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True).stdout
    result: dict[str, dict[str, int]] = {"by_type": {}, "by_user": {}}
    section = None
    for line in out.splitlines():
        if "statistics by message type" in line:
            section = "by_type"
        elif "statistics by user" in line:
            section = "by_user"
        elif section and line.strip() and not line.startswith(("\t", " ")):
            section = None
        elif section:
            m = re.match(r"\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
            if m:
                result[section][m.group(1)] = int(m.group(2))
    return result


def sdiag_diff(before: dict, after: dict) -> dict[str, dict[str, int]]:
    diff = {}
    for section in ("by_type", "by_user"):
        d = {k: v - before[section].get(k, 0) for k, v in after[section].items()}
        diff[section] = {k: v for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}
    return diff
