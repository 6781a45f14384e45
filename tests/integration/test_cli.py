"""The README's run command as an operator meets it: idempotent, and clear when it cannot proceed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
import yaml

from hub import slurm_cluster

from ..support import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def academy(*args: str, config: Path | None = None, as_background_job: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if config is not None:
        env["ACADEMY_CONFIG"] = str(config)
    argv = [str(ROOT / "academy"), *args]
    # A shell's background job (`nohup academy up &`) starts with SIGINT and SIGQUIT ignored.
    background = (lambda: [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)]) \
        if as_background_job else None
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd="/", preexec_fn=background)


def ignores_sigint(pid: int) -> bool:
    mask = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def write_config(tmp_path: Path, **hub) -> Path:
    """A hub on its own ports and state; Slurm left as it is (manage: false)."""
    hub_port = free_port()
    base = {"port": free_port(), "hub_port": hub_port, "hub_connect_url": f"http://127.0.0.1:{hub_port}",
            "proxy_api_port": free_port(),
            "state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"hub": {**base, **hub}, "slurm": {"manage": False},
                                    "assessments": {"root": str(tmp_path / "courses"), "exchange_port": free_port()},
                                    "progress": {"port": free_port()}}))
    return path


def test_up_twice_then_down(tmp_path, slurm_cluster_up, demo_credentials):
    config = write_config(tmp_path)
    port = yaml.safe_load(config.read_text())["hub"]["port"]
    first = academy("up", config=config, as_background_job=True)
    try:
        assert first.returncode == 0, first.stderr
        assert f"open http://127.0.0.1:{port}/" in first.stdout
        # The demo logins printed are the ones that work.
        assert re.search(rf"learner1\s+{re.escape(demo_credentials['learner1'])}\s+learners", first.stdout)
        # The demo cohort is in every course, and the courses' assignments are out.
        assert "publishing 19 demo assignment(s) of the catalogue" in first.stdout
        members = academy("members", "llm-101", config=config)
        assert members.stdout.splitlines() == ["trainers: trainer1", "learners: learner1, learner2"]
        # The hub started its services: the exchange answers behind the proxy (asking for a login).
        r = requests.get(f"http://127.0.0.1:{port}/services/academy-exchange/api/assignments",
                         allow_redirects=False, timeout=10)
        assert r.status_code in (302, 403), r.status_code
        assert f"Learner progress:    http://127.0.0.1:{port}/services/academy-progress/" in first.stdout
        pid = re.search(r"JupyterHub started \(pid (\d+)\)", first.stdout).group(1)
        # The hub runs ahead of sessions for the CPU (they share this machine), as does its proxy:
        # by nice, and by their sessions' (autogroups') nice, which is what ranks them against
        # Slurm jobs, each a session of its own, where the kernel shares CPU by session first.
        proxy = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        assert "configurable-http-proxy" in Path(f"/proc/{proxy}/cmdline").read_text()
        for process in (int(pid), proxy):
            assert os.getpriority(os.PRIO_PROCESS, process) == -15
            if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
                assert Path(f"/proc/{process}/autogroup").read_text().split()[-2:] == ["nice", "-15"]
        # Started as a background job, yet the hub's services can be interrupted: JupyterHub stops
        # them with SIGINT first, and `academy down` below must leave nothing running.
        services = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[1:]]
        # Each of the hub's services, named by its command line: exchange, progress, workshops,
        # reaper and idle culler.
        commands = sorted(Path(f"/proc/{s}/cmdline").read_text() for s in services)
        for module in ("assessments.exchange.service", "assessments.progress.service",
                       "hub.workshops.service", "jupyterhub_idle_culler"):
            assert sum(module in c for c in commands) == 1, (module, commands)
        assert len(services) == 5, commands
        assert [s for s in services if ignores_sigint(s)] == []
        second = academy("up", config=config)
        assert second.returncode == 0, second.stderr
        assert f"JupyterHub already running (pid {pid})" in second.stdout
        assert requests.get(f"http://127.0.0.1:{port}/hub/api/").status_code == 200
    finally:
        down = academy("down", config=config)
    assert down.returncode == 0, down.stderr
    assert "JupyterHub stopped" in down.stdout
    for process in [int(pid), proxy, *services]:
        assert not Path(f"/proc/{process}").exists() or "zombie" in Path(f"/proc/{process}/status").read_text(), process
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/hub/api/", timeout=5)


def test_up_says_which_port_is_taken(tmp_path, slurm_cluster_up):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = write_config(tmp_path, port=taken)
        result = academy("up", config=config)
    assert result.returncode == 1
    assert f"port {taken} (hub.port) is taken by another program: stop it, or set hub.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_as_a_normal_user_says_to_use_sudo():
    # The checkout may sit in a folder other users cannot enter; the root check is the
    # script's first step, so a world-readable copy of it shows what a normal user meets.
    folder = Path(tempfile.mkdtemp(prefix="academy-nobody-", dir="/tmp"))
    folder.chmod(0o755)
    shutil.copy(ROOT / "academy", folder / "academy")
    result = subprocess.run(["sudo", "-u", "nobody", str(folder / "academy"), "up"], capture_output=True, text=True,
                            timeout=60, cwd="/")
    shutil.rmtree(folder)
    assert result.returncode == 1
    assert "needs root" in result.stderr and "sudo" in result.stderr


def test_a_bad_profile_stops_academy_and_the_hub_with_the_key_named(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"profiles": [{
        "key": "gpu-big", "display": "Big", "partition": "gpu", "gres": "gpu:h200:1 --exclusive", "cpus": 4,
        "memory": "16G", "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]}]}))
    result = academy("up", config=config)
    assert result.returncode == 2
    # The file that set the key is named too (there may be drop-ins beside it).
    assert f"invalid configuration: {config}: config key profiles[0] (gpu-big): key 'gres'" in result.stderr
    # The hub itself refuses to start on it, before listening on anything.
    hub = subprocess.run([str(Path(os.sys.executable).with_name("jupyterhub")), "-f", str(ROOT / "hub" / "jupyterhub_config.py")],
                         capture_output=True, text=True, env={**os.environ, "ACADEMY_CONFIG": str(config)},
                         cwd=tmp_path, timeout=60)
    assert hub.returncode == 2
    assert f"academy: invalid configuration: {config}: config key profiles[0] (gpu-big): key 'gres'" in hub.stderr


def test_bringing_slurm_up_again_leaves_the_running_daemons_alone(base_config, slurm_cluster_up):
    pids = {name: (slurm_cluster.RUN_DIR / f"{name}.pid").read_text() for name in ("slurmctld", "slurmd")}
    slurm_cluster.ensure_running(base_config)
    assert {name: (slurm_cluster.RUN_DIR / f"{name}.pid").read_text() for name in pids} == pids
    assert slurm_cluster.node_state() in ("idle", "mixed", "allocated")


def test_course_build_and_publish(tmp_path):
    config = write_config(tmp_path)
    built = academy("course", "build", "llm-101", "--out", str(tmp_path / "releases"), config=config)
    assert built.returncode == 0, built.stderr
    for assignment in ("tokenization", "attention", "tiny-gpt"):
        notebook = tmp_path / "releases" / "llm-101" / assignment / f"{assignment}.ipynb"
        text = notebook.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text and "YOUR CODE HERE" in text
        assert f"built llm-101/{assignment} -> {notebook.parent}" in built.stdout
    published = academy("course", "publish", "llm-101", config=config)
    assert published.returncode == 0, published.stderr
    assert re.findall(r"published llm-101/([a-z-]+) \(\d+ points\), due \d{4}-\d\d-\d\d", published.stdout) == [
        "tokenization", "attention", "tiny-gpt"]
    missing = academy("course", "publish", "no-such-course", config=config)
    assert missing.returncode == 2 and "no course no-such-course; the catalogue has: hpc-101" in missing.stderr
