"""Slurm itself enforces the platform's rules on a learner's own `sbatch` (a notebook terminal),
with the real slurmctld, slurmdbd and MariaDB of the embedded cluster, and cgroups.

learner1 is in `learners` (profiles cpu-small and gpu-h200-1), trainer1 in `trainers` (also the
two-GPU gpu-h200-2). Everything is submitted as the user, as their terminal would.
"""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path

import pytest

from assessments.gradebook.db import open_gradebook
from assessments.gradebook.enrolment import Enrolment
from assessments.gradebook.slurm_associations import CourseAssociations
from courses.catalogue import GpuBudget
from hub import slurm_cluster
from spawners.queue_hints import explain_reason
from spawners.slurm_accounts import SlurmAccounts

from ..support import wait_for

pytestmark = pytest.mark.integration

QOS1, QOS2 = "academy-gpu-h200-1", "academy-gpu-h200-2"


@pytest.fixture(scope="module")
def users(base_config, slurm_cluster_up, demo_credentials):
    """The demo users' own-work associations, as `academy up` makes them."""
    slurm_cluster.apply_policy(base_config, base_config["demo"]["users"])
    return base_config["demo"]["users"]


def sbatch(user: str, *args: str, test_only: bool = True, script: str = "sleep 1") -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", "sbatch", "--parsable", *(["--test-only"] if test_only else []),
                           *args, "--wrap", script], capture_output=True, text=True, cwd="/tmp", timeout=60)


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, f"Slurm accepted it: {result.stdout} {result.stderr}"
    return result.stderr


def job_fields(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True).stdout
    return out.strip().split(" ")[0] if out.strip() else ""


def run_job(user: str, *args: str, script: str, timeout: float = 60) -> tuple[str, str]:
    """Submit as `user`, wait for the end; (final state in sacct, the job's output)."""
    out = Path(f"/tmp/academy-policy-{user}-{time.monotonic_ns()}.out")
    result = sbatch(user, f"--output={out}", "--time=2", *args, test_only=False, script=script)
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip().split(";")[0]
    final = ("COMPLETED", "FAILED", "OUT_OF_MEMORY", "CANCELLED", "TIMEOUT")
    state = wait_for(lambda: (sacct_state(job) if sacct_state(job).startswith(final) else ""), 90,
                     what=f"job {job} to end")
    text = out.read_text() if out.exists() else ""
    out.unlink(missing_ok=True)
    return state, text


def test_a_learner_cannot_use_the_operators_partition(users):
    # the try that cancelled another learner's GPU session within 4 s before Slurm knew better
    assert "User's group not permitted to use this partition" in refusal(
        sbatch("learner1", "-p", "urgent", "--gres=gpu:h200:4"))


def test_a_learner_gets_no_more_than_their_profiles_allow(users):
    assert "accounting/QOS policy" in refusal(sbatch("learner1", "-p", "gpu", "--gres=gpu:h200:4"))
    assert "accounting/QOS policy" in refusal(sbatch("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:2"))
    # over the profile's walltime (2 h), memory (16G) and cores (4)
    for over in (["-t", "04:00:00"], ["--mem=32G"], ["-c", "8"]):
        assert "accounting/QOS policy" in refusal(sbatch("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:1", *over))
    # the trainers-only profile's QOS, Slurm's unlimited `normal`, another account
    assert "Invalid qos specification" in refusal(sbatch("learner1", "-p", "gpu", "-q", QOS2, "--gres=gpu:h200:2"))
    assert "Invalid qos specification" in refusal(sbatch("learner1", "-q", "normal"))
    assert "Invalid account" in refusal(sbatch("learner1", "-A", "root"))
    # what the form allows, Slurm allows: a one-GPU job in the profile's bounds, a small CPU job
    ok = sbatch("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:1", "-t", "30", "--mem=8G", "-c", "4")
    assert ok.returncode == 0, ok.stderr
    assert sbatch("learner1", "--mem=1G").returncode == 0


def test_a_trainer_may_use_the_trainers_profile(users):
    ok = sbatch("trainer1", "-p", "gpu", "-q", QOS2, "--gres=gpu:h200:2", "-t", "30")
    assert ok.returncode == 0, ok.stderr


def test_a_user_without_an_association_can_submit_nothing(users, tmp_path):
    subprocess.run(["useradd", "--create-home", "academy-stranger"], capture_output=True)
    try:
        assert "Invalid account" in refusal(sbatch("academy-stranger", "--mem=100M"))
    finally:
        subprocess.run(["userdel", "--remove", "academy-stranger"], capture_output=True)


def test_a_job_over_its_memory_ends_out_of_memory(users):
    state, _ = run_job("learner1", "--mem=100M",
                       script="python3 -c 'x = bytearray(400 * 2**20); print(\"survived\")'")
    assert state == "OUT_OF_MEMORY"


def test_a_job_uses_only_its_cores(users):
    state, text = run_job("learner1", "-c", "1", "--mem=100M",
                          script="nproc; grep Cpus_allowed_list /proc/self/status")
    assert state == "COMPLETED", text
    lines = text.split("\n")
    assert lines[0] == "1", text
    assert len(lines[1].split()[-1].split(",")) == 1 and "-" not in lines[1].split()[-1], text


OPEN_EVERY_GPU = """python3 - <<'PY'
import errno, glob
for path in sorted(glob.glob("/dev/academy-gpu*")):
    try:
        open(path).close()
        print(path, "opened")
    except OSError as e:
        print(path, errno.errorcode[e.errno])
PY"""


def test_a_one_gpu_job_can_open_only_its_own_gpu(users, base_config):
    state, text = run_job("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:1", "--mem=200M", script=OPEN_EVERY_GPU)
    assert state == "COMPLETED", text
    results = dict(line.split() for line in text.strip().splitlines())
    assert len(results) == base_config["slurm"]["gpus"], text
    # its own: the devices cgroup lets it through, and no driver answers (a stand-in GPU); the others: denied
    assert sorted(results.values()) == ["ENXIO"] + ["EPERM"] * (len(results) - 1), text
    assert errno.ENXIO != errno.EPERM


def test_learners_see_only_their_own_jobs(users, base_config):
    job = sbatch("learner1", "--mem=100M", "-t", "2", test_only=False, script="sleep 60").stdout.strip().split(";")[0]
    try:
        wait_for(lambda: job_fields(job).get("JobState") in ("RUNNING", "PENDING"), 20)
        mine = subprocess.run(["runuser", "-u", "learner1", "--", "squeue", "-h", "-o", "%i"], capture_output=True,
                              text=True).stdout.split()
        theirs = subprocess.run(["runuser", "-u", "learner2", "--", "squeue", "-h", "-o", "%i"], capture_output=True,
                                text=True).stdout.split()
        assert job in mine and job not in theirs
        seen = subprocess.run(["runuser", "-u", "learner2", "--", "sacct", "-n", "-X", "-a", "-o", "JobID"],
                              capture_output=True, text=True).stdout.split()
        assert job not in seen
    finally:
        subprocess.run(["scancel", job])
    # nor in the notes Slurm's epilog leaves for the hub (every ended job's id)
    notes = Path(slurm_cluster.end_notices_dir(base_config))
    assert notes.is_dir()
    listing = subprocess.run(["runuser", "-u", "learner2", "--", "ls", str(notes)], capture_output=True, text=True)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing


class GroupsOnly:
    """The one thing the association sync asks the hub: its users and their groups."""

    def __init__(self, groups: dict[str, list[str]]):
        self.groups = groups

    def items(self, path: str):
        assert path == "/users"
        return [{"name": n, "groups": g} for n, g in self.groups.items()]


def test_enrolment_gives_a_course_association_and_unenrolment_ends_it(users, base_config, tmp_path):
    course = "policy-test-101"
    account = f"academy-{course}"
    enrolment = Enrolment(open_gradebook(f"sqlite:///{tmp_path / 'gradebook.sqlite'}"))
    associations = CourseAssociations.from_config(base_config)
    hub = GroupsOnly({"learner1": ["learners"]})
    enrolment.add(course, "learner1", "learner")
    changed = associations.sync(hub, enrolment, {course})
    assert changed["set"] == [("learner1", account)]
    assoc = SlurmAccounts().associations(["learner1"])[("learner1", account)]
    assert assoc.qos == {"academy-cpu-small", QOS1} and assoc.default_qos == "academy-cpu-small"
    assert sbatch("learner1", "-A", account, "--mem=100M").returncode == 0

    running = sbatch("learner1", "-A", account, "--mem=100M", "-t", "5", test_only=False, script="sleep 300")
    job = running.stdout.strip().split(";")[0]
    wait_for(lambda: job_fields(job).get("JobState") == "RUNNING", 30)
    enrolment.remove(course, "learner1")
    assert associations.sync(hub, enrolment, {course})["removed"] == [("learner1", account)]
    assert ("learner1", account) not in SlurmAccounts().associations(["learner1"])
    assert "Invalid account" in refusal(sbatch("learner1", "-A", account, "--mem=100M"))
    assert sacct_state(job).startswith("CANCELLED")   # their job on the course's account ended with it
    # nothing more to do, and another gradebook's people are not this one's to remove
    assert associations.sync(hub, enrolment, {course}) == {"set": [], "removed": [], "budgets": []}


def test_an_enrolment_made_while_a_sync_runs_keeps_its_association(users, base_config, tmp_path):
    """A workshop's creation enrols its seats and adds their associations while the exchange's sync
    may be half-way through a round that read the enrolment before them: the round must not end them."""
    course = "race-test-101"
    account = f"academy-{course}"
    enrolment = Enrolment(open_gradebook(f"sqlite:///{tmp_path / 'gradebook.sqlite'}"))
    associations = CourseAssociations.from_config(base_config)
    hub = GroupsOnly({"learner1": ["learners"], "learner2": ["learners"]})
    enrolment.add(course, "learner1", "learner")
    assert associations.sync(hub, enrolment, {course})["set"] == [("learner1", account)]   # the course's account made
    read_accounts = associations.accounts.accounts

    def meanwhile():   # after the round read what is wanted: learner2 is enrolled and given their association
        enrolment.add(course, "learner2", "learner")
        associations.accounts.set_association("learner2", account, ["academy-cpu-small"], "academy-cpu-small", None)
        associations.accounts.accounts = read_accounts
        return read_accounts()

    associations.accounts.accounts = meanwhile
    try:
        changed = associations.sync(hub, enrolment, {course})
        assert changed["removed"] == []
        assert ("learner2", account) in SlurmAccounts().associations(["learner2"])
        assert sbatch("learner2", "-A", account, "--mem=100M").returncode == 0
        assert associations.sync(hub, enrolment, {course})["set"] == [("learner2", account)]   # its QOS as the course says
    finally:
        for learner in ("learner1", "learner2"):
            enrolment.remove(course, learner)
        associations.sync(hub, enrolment, {course})
        subprocess.run(["sacctmgr", "-i", "delete", "account", account], capture_output=True, check=False)


def test_a_workshop_seats_association_is_left_to_the_workshop(users, base_config, tmp_path):
    """A pooled workshop account is enrolled in the course, but its association (with the workshop
    profile's QOS) is the workshop's: the sync neither rewrites nor ends it, nor cancels its session."""
    from hub.workshops.model import is_pooled_account

    course, seat = "seat-test-101", "ws-synctest-01"
    account = f"academy-{course}"
    subprocess.run(["useradd", "-M", seat], capture_output=True)
    enrolment = Enrolment(open_gradebook(f"sqlite:///{tmp_path / 'gradebook.sqlite'}"))
    associations = CourseAssociations.from_config(base_config)
    assert associations.workshop_seat is is_pooled_account
    hub = GroupsOnly({"learner1": ["learners"], seat: ["workshop-synctest", f"{course}-learners"]})
    try:
        enrolment.add(course, "learner1", "learner")
        enrolment.add(course, seat, "learner")
        associations.sync(hub, enrolment, {course})          # the course's account made
        associations.accounts.set_association(seat, account, ["academy-cpu-small"], "academy-cpu-small", None)
        changed = associations.sync(hub, enrolment, {course})
        assert (seat, account) not in changed["removed"] and (seat, account) not in changed["set"]
        assert SlurmAccounts().associations([seat])[(seat, account)].qos == {"academy-cpu-small"}
    finally:
        enrolment.remove(course, "learner1")
        enrolment.remove(course, seat)
        associations.sync(hub, enrolment, {course})
        subprocess.run(["sacctmgr", "-i", "delete", "user", seat], capture_output=True)
        subprocess.run(["sacctmgr", "-i", "delete", "account", account], capture_output=True, check=False)
        subprocess.run(["userdel", seat], capture_output=True)


def test_gpu_budgets_from_the_catalogue_are_kept_by_slurm(users, base_config, tmp_path):
    """The catalogue's budgets become GrpTRESMins on the course account and each learner's
    association; Slurm refuses a job its learner's budget cannot cover, and holds one the course's
    remaining budget cannot cover beside what is running, with a reason the platform puts in words."""
    course = "budget-test-101"
    account = f"academy-{course}"
    budgets = {course: GpuBudget(course_gpu_hours=0.75, learner_gpu_hours=0.5)}   # 45 and 30 GPU-minutes
    enrolment = Enrolment(open_gradebook(f"sqlite:///{tmp_path / 'gradebook.sqlite'}"))
    associations = CourseAssociations.from_config(base_config, lambda: budgets)
    hub = GroupsOnly({"learner1": ["learners"], "learner2": ["learners"]})
    for learner in ("learner1", "learner2"):
        enrolment.add(course, learner, "learner")
    gpu = ["-A", account, f"--qos={QOS1}", "-p", "gpu", "--gres=gpu:h200:1", "--mem=1G"]
    jobs = []
    try:
        assert associations.sync(hub, enrolment, {course})["budgets"] == [account]
        accounts = SlurmAccounts()
        assert accounts.account_gpu_minutes()[account] == 45
        assert {u: a.gpu_minutes for (u, acct), a in accounts.associations(["learner1", "learner2"]).items()
                if acct == account} == {"learner1": 30, "learner2": 30}

        assert "AssocGrpGRESMinutes" in refusal(sbatch("learner1", *gpu, "-t", "40"))   # over their own 30
        first = sbatch("learner1", *gpu, "-t", "30", test_only=False, script="sleep 300")
        jobs.append(first.stdout.strip().split(";")[0])
        wait_for(lambda: job_fields(jobs[0]).get("JobState") == "RUNNING", 30, what="learner1's GPU job to start")
        # learner2's 20 minutes fit their own 30, not the course's 45 beside learner1's 30
        second = sbatch("learner2", *gpu, "-t", "20", test_only=False, script="sleep 300")
        jobs.append(second.stdout.strip().split(";")[0])
        reason = wait_for(lambda: job_fields(jobs[1]).get("Reason") == "AssocGrpGRESMinutes"
                          and job_fields(jobs[1])["Reason"], 30, what="learner2's job held for the course's budget")
        assert job_fields(jobs[1])["JobState"] == "PENDING"
        assert "GPU-hour budget" in explain_reason(reason)[0]

        budgets[course] = GpuBudget(course_gpu_hours=2)           # the trainer raised it: no per-learner limit
        assert associations.sync(hub, enrolment, {course})["budgets"] == [account]
        assert accounts.associations(["learner2"])[("learner2", account)].gpu_minutes is None
        wait_for(lambda: job_fields(jobs[1]).get("JobState") == "RUNNING", 60, what="learner2's job to start")
    finally:
        subprocess.run(["scancel", *jobs], check=False)
        for learner in ("learner1", "learner2"):
            enrolment.remove(course, learner)
        associations.sync(hub, enrolment, {course})
        subprocess.run(["sacctmgr", "-i", "delete", "account", account], capture_output=True, check=False)


def test_slurm_check_reads_a_cluster_and_names_what_is_missing(users, base_config):
    from hub.slurm_check import check

    assert [f.what for f in check(base_config) if not f.ok] == []
    cpu_small, *gpu_profiles = base_config["profiles"]
    cfg = {**base_config, "profiles": [
        {**cpu_small, "cpus": 1},                                          # other limits than its QOS holds
        *gpu_profiles,
        {**gpu_profiles[0], "key": "gpu-check-test", "partition": "nope"},  # no QOS, no partition
    ]}
    before = subprocess.run(["sacctmgr", "-n", "-P", "show", "qos"], capture_output=True, text=True).stdout
    missing = {f.what.split(" (")[0]: f for f in check(cfg) if not f.ok}
    assert set(missing) == {"partition nope", "QOS academy-gpu-check-test", "QOS academy-cpu-small"}
    assert "sacctmgr add qos academy-gpu-check-test" in missing["QOS academy-gpu-check-test"].fix
    assert "MaxTRESPerJob: cpu=2,gres/gpu=0,mem=4G -> cpu=1,mem=4096M,gres/gpu=0" in \
        [f.what for f in check(cfg) if f.what.startswith("QOS academy-cpu-small")][0]
    after = subprocess.run(["sacctmgr", "-n", "-P", "show", "qos"], capture_output=True, text=True).stdout
    assert after == before   # it only reads


def test_gpu_hours_come_from_slurms_accounting_however_a_session_ends(users, tmp_path):
    from assessments.progress import db as progress_db
    from assessments.progress import events as ev
    from assessments.progress.models import gpu_usage, sessions
    from assessments.progress.outbox import stable_id
    from assessments.progress.slurm_usage import reconcile

    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'progress.sqlite'}"
    progress_db.upgrade(url)
    engine = progress_db.engine_for(url)
    finished = sbatch("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:1", "--mem=100M", "-t", "2",
                      test_only=False, script="sleep 3").stdout.strip()
    cancelled = sbatch("learner1", "-p", "gpu", "-q", QOS1, "--gres=gpu:h200:1", "--mem=100M", "-t", "2",
                       test_only=False, script="sleep 120").stdout.strip()

    def started(job: str) -> dict:   # what the spawner sends when the session's server is up
        return {"id": stable_id("session_started", job), "type": "session_started", "occurred_at": time.time(),
                "user": "learner1", "course": "hpc-101",
                "payload": {"session": f"academy-{job}", "profile": "gpu-h200-1", "gpus": 1}}

    with engine.begin() as conn:
        ev.ingest(conn, [started(finished), started(cancelled)])
    wait_for(lambda: job_fields(cancelled).get("JobState") == "RUNNING", 30)
    time.sleep(2)
    subprocess.run(["scancel", cancelled], check=True)   # behind the hub's back: no stop event ever comes
    wait_for(lambda: sacct_state(finished) == "COMPLETED" and sacct_state(cancelled).startswith("CANCELLED"), 60)
    assert reconcile(engine) == 2
    assert reconcile(engine) == 0   # accounted once

    with engine.connect() as conn:
        rows = {r.session: r for r in conn.execute(sa.select(sessions))}
        usage = conn.execute(sa.select(gpu_usage)).one()
    for job, state in ((finished, "completed"), (cancelled, "cancelled")):
        out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job, "-o", "ElapsedRaw,AllocTRES"], capture_output=True,
                             text=True).stdout.strip()
        elapsed, tres = out.split("|")
        row = rows[f"academy-{job}"]
        assert (row.end_state, row.accounted, row.duration_s) == (state, True, float(elapsed))
        assert "gres/gpu=1" in tres and row.gpu_seconds == float(elapsed) and row.stopped_at is not None
    assert (usage.user, usage.course, usage.sessions) == ("learner1", "hpc-101", 2)
    assert usage.gpu_seconds == sum(r.gpu_seconds for r in rows.values())
    # a late stop event of the spawner's own does not override Slurm's figures
    with engine.begin() as conn:
        ev.ingest(conn, [{"id": stable_id("session_stopped", finished), "type": "session_stopped",
                          "occurred_at": time.time(), "user": "learner1", "course": "hpc-101",
                          "payload": {"session": f"academy-{finished}", "profile": "gpu-h200-1", "gpus": 1,
                                      "duration_s": 9999.0}}])
        assert conn.execute(sa.select(sessions.c.gpu_seconds).where(
            sessions.c.session == f"academy-{finished}")).scalar() == rows[f"academy-{finished}"].gpu_seconds
