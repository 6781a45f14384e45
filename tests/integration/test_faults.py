"""Faults a hub and its Slurm meet in the real world, each injected for real on the one-node cluster.

Slurm commands misbehave through wrappers in a directory the hub is pointed at (slurm.bin_dir):
each wrapper runs the real command unless a mode file tells it to fail, print nothing or hang.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from hub import slurm_cluster
from hub.configurer import platform_tag

from ..support import (HubUser, LogMark, hub_answers, live_jobs, progress_gpu_hours, run_in_kernel, sacct_gpu_hours,
                       session_token, squeue, wait_for)

pytestmark = pytest.mark.integration

WRAPPER = """#!/bin/bash
# Fault injector for {tool}: the mode file says ok | fail | empty | hang | fail-N (fail N more times).
echo "$(date +%s.%N) $(id -un) $*" >> "{modes}/{tool}.calls"
mode=$(cat "{modes}/{tool}" 2>/dev/null || echo ok)
case "$mode" in
  fail) echo "{tool}: error: injected failure" >&2; exit 1 ;;
  fail-*) n=${{mode#fail-}}; echo "fail-$((n - 1))" > "{modes}/{tool}"; [ "$n" -le 1 ] && echo ok > "{modes}/{tool}"
          echo "{tool}: error: injected failure" >&2; exit 1 ;;
  empty) exit 0 ;;
  hang) sleep 300 ;;
esac
exec /usr/bin/{tool} "$@"
"""


class SlurmFaults:
    """A directory of Slurm command wrappers (a site's slurm.bin_dir holds them all) and their mode files."""

    def __init__(self):
        # Learners run sbatch from here through sudo, so the tree must be traversable by them.
        self.root = Path(tempfile.mkdtemp(prefix="academy-faults-", dir="/tmp"))
        self.bin, self.modes = self.root / "bin", self.root / "modes"
        self.bin.mkdir()
        self.modes.mkdir()
        for tool in ("sbatch", "squeue", "scancel", "sacct", "sacctmgr", "sinfo"):
            path = self.bin / tool
            path.write_text(WRAPPER.format(tool=tool, modes=self.modes))
            path.chmod(0o755)
        for d in (self.root, self.bin, self.modes):
            d.chmod(0o755)

    def set(self, tool: str, mode: str) -> None:
        (self.modes / tool).write_text(mode + "\n")

    def calls(self, tool: str, since: float = 0.0) -> list[str]:
        """Invocations of a tool (time, user, arguments) after a unix time."""
        path = self.modes / f"{tool}.calls"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line for line in lines if float(line.split()[0]) >= since]


@pytest.fixture
def faults():
    f = SlurmFaults()
    yield f
    subprocess.run(["rm", "-rf", str(f.root)], check=False)


def fast_hub(make_hub, faults: SlurmFaults | None = None, progress: dict | None = None, **sessions):
    overrides = {
        "hub": {"poll_interval": 1},
        "sessions": {"monitor_interval": 1, "reaper_interval": 2, "reaper_grace": 0, **sessions},
        "slurm": {"command_timeout": 5, **({"bin_dir": str(faults.bin)} if faults else {})},
        **({"progress": progress} if progress else {}),
    }
    return make_hub(overrides)


def start_session(hub, demo_credentials, name="learner1", profile="cpu-small", walltime=10) -> tuple[HubUser, dict]:
    user = HubUser(hub, name, demo_credentials[name])
    r = user.api("POST", f"/users/{name}/server", json={"profile": profile, "walltime": walltime})
    assert r.status_code in (201, 202), r.text
    user.wait_ready()
    (job,) = live_jobs(name)
    return user, job


def reachable(hub, user: HubUser) -> bool:
    r = requests.get(f"{hub.url}/user/{user.name}/api/status", headers={"Authorization": f"token {user.token}"},
                     timeout=10)
    return r.status_code == 200


def test_pending_at_timeout_is_cancelled_with_the_reason_and_a_smaller_profile(make_hub, demo_credentials):
    hub = fast_hub(make_hub, pending_timeout=15)
    # Someone else holds all four GPUs (an operator: no learner's or trainer's QOS allows four).
    blocker = subprocess.run(["sbatch", "--parsable", "--partition=gpu",
                              "--gres=gpu:h200:4", "--time=5", "--mem=1G", "--output=/dev/null",
                              "--wrap=sleep 300"],
                             capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    try:
        assert wait_for(lambda: squeue("--jobs", blocker)[0]["state"] == "RUNNING", 20)
        learner = HubUser(hub, "learner1", demo_credentials["learner1"])
        r = learner.api("POST", "/users/learner1/server", json={"profile": "gpu-h200-1", "walltime": 10})
        assert r.status_code == 202, r.text
        messages = [e.get("message", "") for e in learner.progress_messages(timeout=90)]
    finally:
        subprocess.run(["scancel", blocker], check=False)
    waiting = [m for m in messages if "is waiting in the Slurm queue" in m]
    assert waiting, messages
    assert any("all the resources this profile needs are in use" in m and "Position 1 of 1 in partition gpu" in m
               for m in waiting), waiting
    assert any("could start now" in m and "CPU session" in m for m in waiting), waiting
    final = messages[-1]
    assert "waited" in final and "was cancelled (nothing is left running)" in final, final
    assert "Try a smaller profile or a shorter session" in final
    assert learner.server() is None
    assert live_jobs("learner1") == []


def test_job_that_dies_before_reporting_its_port_fails_fast_with_its_log(make_hub, demo_credentials):
    env = Path(tempfile.mkdtemp(prefix="academy-broken-env-", dir="/tmp"))
    (env / "bin").mkdir()
    python = env / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'ImportError: libcudart.so.12: cannot open shared object file' >&2\nexit 3\n")
    for path in (env, env / "bin", python):
        path.chmod(0o755)
    hub = make_hub({"notebook_env": str(env), "hub": {"poll_interval": 1}, "sessions": {"monitor_interval": 1}})
    learner = HubUser(hub, "learner2", demo_credentials["learner2"])
    t0 = time.monotonic()
    r = learner.api("POST", "/users/learner2/server", json={"profile": "cpu-small"})
    if r.status_code == 202:
        message = learner.progress_messages(timeout=60)[-1]["message"]
    else:
        message = r.json()["message"]
    elapsed = time.monotonic() - t0
    assert elapsed < 20, f"the failure took {elapsed:.0f} s to surface"
    assert "ended (" in message and "Last lines of its log" in message, message
    assert "libcudart.so.12: cannot open shared object file" in message
    assert learner.server() is None and live_jobs("learner2") == []


# What the job monitor (spawners/job_monitor.py) logs when a query fails and when one works again.
SLURM_SILENT = "Slurm did not answer"
SLURM_BACK = "Slurm answers again"


def failed_rounds(mark: LogMark) -> int:
    return mark.new_text().count(SLURM_SILENT)


@pytest.mark.parametrize("mode", ["fail", "empty", "hang"])
def test_squeue_failing_never_ends_a_live_session_and_what_changed_meanwhile_is_seen_after(
        make_hub, demo_credentials, faults, mode):
    hub = fast_hub(make_hub, faults)
    learner, job = start_session(hub, demo_credentials)
    other, other_job = start_session(hub, demo_credentials, name="learner2")
    fault = hub.log_mark()
    faults.set("squeue", mode)
    # Rounds of the monitor (and the hub's polls, 1 s apart) fail while squeue misbehaves.
    wait_for(lambda: failed_rounds(fault) >= 3, 60, what=f"three failed squeue rounds ({mode})")
    assert learner.server()["ready"] and reachable(hub, learner)
    assert squeue("--jobs", job["id"])[0]["state"] == "RUNNING"  # the real Slurm still runs it
    # One session ends behind the hub's back: without an answer from Slurm, the hub cannot know.
    subprocess.run(["scancel", other_job["id"]], check=True)  # the real scancel, not the hub's wrappers
    assert wait_for(lambda: squeue("--jobs", other_job["id"])[0]["state"] not in ("RUNNING", "COMPLETING"), 20)
    seen = failed_rounds(fault)
    wait_for(lambda: failed_rounds(fault) > seen, 30, what="a failed squeue round after the scancel")
    assert other.server() is not None  # no answer is not an answer
    recovery = hub.log_mark()
    faults.set("squeue", "ok")
    wait_for(lambda: SLURM_BACK in recovery.new_text(), 30, what=f"the monitor's '{SLURM_BACK}' in the hub log")
    # The first answers after the fault: the ended job is seen as ended, the live one as live.
    wait_for(lambda: other.server() is None, 20, what="learner2's session, cancelled during the fault, to end")
    assert f"Job {other_job['id']} of learner2 ended:" in recovery.new_text()
    assert learner.server()["ready"] and reachable(hub, learner)
    assert f"Job {job['id']} of learner1 ended" not in recovery.new_text()
    learner.stop_server()
    wait_for(lambda: live_jobs("learner1") == [], 30, what="learner1's job to be cancelled")


def test_scancel_failures_are_retried_until_the_job_is_gone(make_hub, demo_credentials, faults):
    hub = fast_hub(make_hub, faults)
    learner, job = start_session(hub, demo_credentials)
    faults.set("scancel", "fail-2")  # the first two attempts fail, the third works
    learner.stop_server()
    assert wait_for(lambda: live_jobs("learner1") == [], 30)
    assert hub.log.count(f"scancel {job['id']} failed") == 2
    # scancel down for good: the hub lets go of the session, the reaper cancels the job later.
    learner, job = start_session(hub, demo_credentials)
    faults.set("scancel", "fail")
    learner.stop_server()
    assert live_jobs("learner1") != []
    assert "could not be cancelled now; the reaper will retry" in hub.log
    faults.set("scancel", "ok")
    assert wait_for(lambda: live_jobs("learner1") == [], 30), "the reaper did not cancel the job"


def test_reaper_cancels_platform_jobs_without_a_hub_record_and_leaves_others(make_hub, demo_credentials):
    hub = fast_hub(make_hub)
    submit = ["sudo", "-u", "learner2", "sbatch", "--parsable", "--time=5", "--output=/dev/null", "--wrap=sleep 300"]
    # a session of another hub on the same cluster (hub.instance empty: the only hub's tag), submitted
    # first: the reaper's round that sees the orphan sees it too
    assert platform_tag(hub.cfg) != "academy-academy"
    other_hubs = subprocess.run([*submit, "--comment=academy-academy:learner2:default"], capture_output=True,
                                text=True, check=True, cwd="/tmp").stdout.strip()
    orphan = subprocess.run([*submit, f"--comment={platform_tag(hub.cfg)}:learner2:default"], capture_output=True,
                            text=True, check=True, cwd="/tmp").stdout.strip()
    unrelated = subprocess.run(submit, capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    try:
        assert wait_for(lambda: squeue("--jobs", orphan)[0]["state"] not in ("PENDING", "RUNNING", "COMPLETING"), 20)
        assert squeue("--jobs", orphan)[0]["state"] == "CANCELLED"
        assert squeue("--jobs", unrelated)[0]["state"] in ("PENDING", "RUNNING")
        assert squeue("--jobs", other_hubs)[0]["state"] in ("PENDING", "RUNNING")
        assert f"job {orphan}" in hub.log and "has no hub record" in hub.log
        assert f"job {other_hubs}" not in hub.log
    finally:
        subprocess.run(["scancel", orphan, unrelated, other_hubs], check=False)


def test_every_session_job_has_a_walltime(make_hub, demo_credentials):
    hub = fast_hub(make_hub)
    start_session(hub, demo_credentials)
    out = subprocess.run(["squeue", "--noheader", "--format=%k|%l"], capture_output=True, text=True).stdout
    limits = [line.split("|")[1] for line in out.splitlines() if line.startswith("academy-")]
    assert limits and "UNLIMITED" not in limits


def test_suspended_session_is_kept_and_requeued_one_is_ended(make_hub, demo_credentials):
    hub = fast_hub(make_hub)
    learner, job = start_session(hub, demo_credentials)
    subprocess.run(["scontrol", "suspend", job["id"]], check=True)
    try:
        assert wait_for(lambda: squeue("--jobs", job["id"])[0]["state"] == "SUSPENDED", 10)
        time.sleep(5)
        assert learner.server() is not None  # suspended is not ended
    finally:
        subprocess.run(["scontrol", "resume", job["id"]], check=True)
    assert wait_for(lambda: reachable(hub, learner), 20)
    # Requeued: the server process is gone; the hub ends the session and cancels the job.
    subprocess.run(["scontrol", "requeue", job["id"]], check=True)
    assert wait_for(lambda: learner.server() is None, 20)
    assert wait_for(lambda: live_jobs("learner1") == [], 20)
    assert "was requeued" in hub.log


def test_preempted_session_is_seen_as_ended(make_hub, demo_credentials):
    hub = fast_hub(make_hub)
    learner, job = start_session(hub, demo_credentials, profile="gpu-h200-1")
    urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--gres=gpu:h200:4", "--time=2",
                             "--output=/dev/null", "--wrap=sleep 60"], capture_output=True, text=True, check=True,
                            cwd="/tmp").stdout.strip()
    try:
        assert wait_for(lambda: learner.server() is None, 30)
        assert squeue("--jobs", job["id"])[0]["state"] == "PREEMPTED"
        assert "ended: PREEMPTED" in hub.log
    finally:
        subprocess.run(["scancel", urgent], check=False)


def test_sessions_survive_a_hub_restart_and_ended_ones_are_seen(make_hub, demo_credentials):
    from hub import hub_process

    hub = fast_hub(make_hub)
    learner, job = start_session(hub, demo_credentials)
    other, other_job = start_session(hub, demo_credentials, name="learner2")
    hub_process.stop(hub.cfg)
    assert squeue("--jobs", job["id"])[0]["state"] == "RUNNING"  # the hub going away ends nothing
    subprocess.run(["scancel", other_job["id"]], check=True)  # one session ends while the hub is down
    hub_process.start(hub.cfg, config_env={"ACADEMY_CONFIG": str(hub.config_file)})
    learner = HubUser(hub, "learner1", demo_credentials["learner1"])
    assert learner.server()["ready"]
    out = run_in_kernel(hub, "learner1", learner.token, "import os; print(os.environ['SLURM_JOB_ID'])")
    assert out.strip() == job["id"]
    other = HubUser(hub, "learner2", demo_credentials["learner2"])
    assert wait_for(lambda: other.server() is None, 20)
    learner.stop_server()


def test_controller_down_keeps_sessions_and_fails_new_starts_clearly_until_it_is_back(
        make_hub, demo_credentials, base_config):
    hub = fast_hub(make_hub)
    learner, job = start_session(hub, demo_credentials)
    ctld_pid = int((slurm_cluster.RUN_DIR / "slurmctld.pid").read_text())
    outage = hub.log_mark()
    os.kill(ctld_pid, 15)
    try:
        assert wait_for(lambda: not slurm_cluster.controller_ok(), 20)
        t0 = time.monotonic()
        assert requests.get(f"{hub.url}/hub/api/", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 1.0  # the hub stays responsive
        wait_for(lambda: failed_rounds(outage) >= 2, 60, what="two squeue rounds failing on the stopped controller")
        assert learner.server()["ready"] and reachable(hub, learner)
        other = HubUser(hub, "learner2", demo_credentials["learner2"])
        t0 = time.monotonic()
        r = other.api("POST", "/users/learner2/server", json={"profile": "cpu-small"})
        message = r.json()["message"] if r.status_code != 202 else other.progress_messages(60)[-1]["message"]
        assert time.monotonic() - t0 < 30
        assert "The scheduler (Slurm's controller) is not answering" in message
        assert "Sessions already running are not affected" in message
        assert other.server() is None
    finally:
        restart = hub.log_mark()
        slurm_cluster.start_controller(base_config)
    assert wait_for(slurm_cluster.controller_ok, 20)
    wait_for(lambda: SLURM_BACK in restart.new_text(), 30, what=f"the monitor's '{SLURM_BACK}' in the hub log")
    # Back: the session that lived through it is still there, and a start refused during it works now.
    assert learner.server()["ready"] and reachable(hub, learner)
    assert f"Job {job['id']} of learner1 ended" not in restart.new_text()
    _, other_job = start_session(hub, demo_credentials, name="learner2")
    assert squeue("--jobs", other_job["id"])[0]["state"] == "RUNNING"
    learner.stop_server()
    other.stop_server()


def test_walltime_end_is_seen_within_one_poll(make_hub, demo_credentials):
    hub = fast_hub(make_hub, progress={"accounting_interval": 1})
    learner, job = start_session(hub, demo_credentials, profile="gpu-h200-1", walltime=1)
    token = session_token(hub, learner)
    assert hub_answers(hub, token) == 200
    before = progress_gpu_hours(hub, learner)
    assert wait_for(lambda: squeue("--jobs", job["id"])[0]["state"] not in ("RUNNING", "COMPLETING"), 150, 1)
    ended = time.monotonic()
    assert squeue("--jobs", job["id"])[0]["state"] == "TIMEOUT"
    assert wait_for(lambda: learner.server() is None, 10, 0.2)
    # one hub poll (1 s) plus one monitor round (1 s), with room for a busy machine
    assert time.monotonic() - ended < 6
    # and the session's hub token died with it (tests/security/test_sessions_and_tokens.py: scancel, preemption)
    assert hub_answers(hub, token) in (401, 403)
    # its GPU-hours are Slurm's: one GPU for the job's elapsed time in sacct (the whole minute)
    want = round(before + sacct_gpu_hours(job["id"]), 4)
    assert wait_for(lambda: abs(progress_gpu_hours(hub, learner) - want) < 1e-3, 20, what=f"{want} GPU-hours")


def test_two_sessions_on_one_node_get_their_own_ports(make_hub, demo_credentials):
    hub = fast_hub(make_hub)
    a, job_a = start_session(hub, demo_credentials, name="learner1")
    b, job_b = start_session(hub, demo_credentials, name="learner2")
    assert job_a["id"] != job_b["id"]
    who = {u.name: run_in_kernel(hub, u.name, u.token, "import getpass; print(getpass.getuser())").strip()
           for u in (a, b)}
    assert who == {"learner1": "learner1", "learner2": "learner2"}
    ports = {line.split(":")[-1] for line in hub.log.splitlines() if "Session job" in line}
    assert len(ports) == 2
    a.stop_server()
    b.stop_server()


def test_one_squeue_per_round_serves_every_session(make_hub, demo_credentials, faults):
    hub = fast_hub(make_hub, faults)
    users = [start_session(hub, demo_credentials, name=name)[0] for name in ("learner1", "learner2", "trainer1")]
    since = time.time()
    time.sleep(10)  # the hub polls each of the 3 sessions every second
    calls = [line for line in faults.calls("squeue", since) if "--jobs=" in line]  # the reaper's are others
    # one batched call per monitor round (1 s, jitter 20%), not one per session per poll (30)
    assert 5 <= len(calls) <= 14, calls
    assert all(" root " in line for line in calls)  # as the hub: no sudo per poll
    batched = [line for line in calls if "--jobs=" in line and line.split("--jobs=")[1].split()[0].count(",") == 2]
    assert batched, calls
    for user in users:
        user.stop_server()


def test_profile_max_age_ends_old_sessions(make_hub, demo_credentials, base_config):
    profiles = [dict(p, max_age=15) if p["key"] == "cpu-small" else p for p in base_config["profiles"]]
    hub = make_hub({"profiles": profiles, "hub": {"poll_interval": 1},
                    "sessions": {"monitor_interval": 1, "reaper_interval": 2, "reaper_grace": 0}})
    learner, job = start_session(hub, demo_credentials, walltime=30)
    assert wait_for(lambda: learner.server() is None, 45)
    assert wait_for(lambda: live_jobs("learner1") == [], 20)
    assert "older than its profile's 15 s: stopping" in hub.log
