"""AcademySlurmSpawner's start, poll and stop against a scripted Slurm (tests/unit/scripted_slurm.py),
in seconds: the same user-visible outcomes as the real-Slurm fault tests in
tests/integration/test_faults.py (messages, states, which Slurm commands ran and how often).

The spawner is built as the hub builds it (a JupyterHub ``User`` over an in-memory hub database
holding the session's API token), with its own ``slurm_bin_dir`` pointing at the fakes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time
from datetime import timedelta

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User

from traitlets import TraitError
from traitlets.config import Config

from spawners import session_account
from spawners.job_monitor import JobMonitor
from spawners.slurm_spawner import AcademySlurmSpawner, SessionError

from .scripted_slurm import GuardedSlurmClient, ScriptedSlurm

# The batch script and the log path need a real home directory: the test runs as its own user.
LEARNER = pwd.getpwuid(os.getuid()).pw_name
HOME = pwd.getpwuid(os.getuid()).pw_dir
NODE, NODE_ADDRESS, PORT = "gpu-node-1", "10.0.0.7", 8888
PROFILES = [
    {"key": "gpu", "display": "One H200 GPU", "partition": "gpu", "gres": "gpu:h200:1", "cpus": 4, "memory": "8G",
     "walltime_default": "00:30:00", "walltime_max": "01:00:00", "groups": ["learners"]},
    {"key": "cpu-small", "display": "CPU session", "partition": "cpu", "cpus": 1, "memory": "2G",
     "walltime_default": "00:30:00", "walltime_max": "01:00:00", "groups": ["learners"]},
]
log = logging.getLogger("tests.spawner_scripted")


class ScriptedSpawner(AcademySlurmSpawner):
    """The production spawner; only its Slurm client is guarded so sudo is the fake in bin_dir."""

    @property
    def slurm(self):
        return GuardedSlurmClient(timeout_s=self.slurm_timeout, bin_dir=self.slurm_bin_dir)


@pytest.fixture
def scripted_slurm(tmp_path, monkeypatch):
    """Fake sbatch/squeue/scancel/sudo, first on PATH, and a fresh shared job monitor that uses them."""
    slurm = ScriptedSlurm(tmp_path)
    monkeypatch.setenv("PATH", f"{slurm.bin_dir}:{os.environ.get('PATH', '')}")
    monitor = JobMonitor(GuardedSlurmClient(timeout_s=10, bin_dir=str(slurm.bin_dir)), interval=30, max_interval=120)
    monkeypatch.setattr(JobMonitor, "_shared", monitor)
    return slurm


@pytest.fixture
def hub_db():
    """An in-memory hub database with the learner (in group 'learners') and its default server."""
    db = orm.new_session_factory("sqlite://")()
    db.add(orm.OAuthClient(identifier="jupyterhub"))
    orm_user = orm.User(name=LEARNER)
    group = orm.Group(name="learners")
    orm_user.groups.append(group)
    db.add_all([orm_user, group, orm.Spawner(user=orm_user, name="")])
    db.commit()
    yield db
    db.close()


@pytest.fixture
def spawner(scripted_slurm, hub_db):
    """The learner's spawner as the hub makes it, holding its server's API token, asking for 15 min of 'gpu'."""
    orm_user = hub_db.query(orm.User).one()
    user = User(orm_user, {"hub": Hub(), "db": hub_db})
    events = []
    spawner = user._new_spawner(
        "", spawner_class=ScriptedSpawner, profiles=PROFILES, slurm_bin_dir=str(scripted_slurm.bin_dir),
        slurm_timeout=10, startup_poll_interval=0.1, node_hosts={NODE: NODE_ADDRESS}, log=log,
        session_event_hook=lambda sp, kind, fields: events.append((kind, fields)),
    )
    spawner.user_options = {"profile": "gpu", "walltime": 15}
    spawner.api_token = orm_user.new_api_token(note="Server at /user/%s/" % LEARNER, scopes=[])
    spawner.events = events
    return spawner


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def start_running_session(spawner, slurm) -> tuple[str, int]:
    """start() while Slurm runs the job at once on NODE, and the server reports PORT once it runs."""
    slurm.update(submit_as={"state": "RUNNING", "node": NODE, "reason": "None"})
    starting = asyncio.ensure_future(spawner.start())
    await wait_until(lambda: spawner.ip == NODE_ADDRESS or starting.done(), 5, "the job seen running")
    assert spawner.accept_port_report(PORT)
    return await asyncio.wait_for(starting, 5)


def token_row(spawner, token: str | None = None):
    """The hub's row of the session's API token (``token``: a value kept from before clear_state forgot it)."""
    return orm.APIToken.find(spawner.db, token or spawner.api_token)


def script_lines(call) -> list[str]:
    return call["stdin"].splitlines()


def gaps(calls) -> list[float]:
    """Seconds between one call and the next."""
    return [b["at"] - a["at"] for a, b in zip(calls, calls[1:])]


def test_start_submits_the_profile_as_the_learner_and_returns_where_the_server_listens(spawner, scripted_slurm):
    ip, port = asyncio.run(start_running_session(spawner, scripted_slurm))

    assert (ip, port) == (NODE_ADDRESS, PORT)
    (wrapped,) = [c for c in scripted_slurm.calls("sudo") if "sbatch" in " ".join(c["argv"])]
    assert wrapped["argv"] == ["sudo", "-E", "-u", LEARNER, "--", f"{scripted_slurm.bin_dir}/sbatch", "--parsable"]
    (submitted,) = scripted_slurm.calls("sbatch")
    assert submitted["user"] == LEARNER
    lines = script_lines(submitted)
    for expected in ["#SBATCH --job-name=academy-nb-" + LEARNER, "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:h200:1",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "#SBATCH --time=00:15:00",
                     "#SBATCH --export=ALL", f"#SBATCH --comment=academy:{LEARNER}:default",
                     f"#SBATCH --output={HOME}/.academy/logs/session-%j.log"]:
        assert expected in lines, f"{expected!r} not in the batch script:\n{submitted['stdin']}"
    # The token reaches the job through sbatch's environment, never through the script.
    assert spawner.api_token not in submitted["stdin"]
    assert "JUPYTERHUB_API_TOKEN" in wrapped["env"]

    assert spawner.job_id == "101" and spawner.get_state()["job_id"] == "101"
    assert spawner.session_started
    assert [(kind, fields["profile"], fields["gpus"]) for kind, fields in spawner.events] == [("session_started", "gpu", 1)]
    # The session's hub token now expires with the walltime (15 min) plus the margin (5 min).
    expires_in = token_row(spawner).expires_at - orm.APIToken.now()
    assert timedelta(minutes=19) < expires_in <= timedelta(minutes=20)
    assert not spawner.accept_port_report(9999), "a port report after the start must be refused"
    assert scripted_slurm.calls("scancel") == []


def test_a_job_pending_past_the_timeout_is_cancelled_with_the_reason_and_a_smaller_profile(spawner, scripted_slurm):
    spawner.pending_timeout = 0.6
    scripted_slurm.update(submit_as={"state": "PENDING", "node": "", "reason": "Resources"})

    t0 = time.monotonic()
    with pytest.raises(SessionError) as failed:
        asyncio.run(spawner.start())
    waited = time.monotonic() - t0

    assert 0.6 <= waited < 5
    assert failed.value.status_code == 503
    message = failed.value.message
    assert "job 101 was cancelled (nothing is left running)" in message, message
    assert "Why: all the resources this profile needs are in use. Try a smaller profile or a shorter session." in message
    assert "The profile 'CPU session' could start now" in message, message
    assert [c["argv"] for c in scripted_slurm.calls("scancel")] == [["scancel", "101"]]
    assert scripted_slurm.job_state("101") == "CANCELLED"
    # The smaller profile was only asked about (--test-only), as the learner; one job was submitted.
    probes = [c for c in scripted_slurm.calls("sbatch") if "--test-only" in c["argv"]]
    assert probes and all(c["user"] == LEARNER and "#SBATCH --partition=cpu" in script_lines(c) for c in probes)
    assert len(scripted_slurm.calls("sbatch")) == len(probes) + 1


def test_a_job_that_dies_before_reporting_its_port_fails_the_start_at_once_with_its_log(spawner, scripted_slurm):
    scripted_slurm.update(submit_as={"state": "RUNNING", "node": NODE, "reason": "None"},
                          log_tail="Traceback (most recent call last):\n"
                                   "ImportError: libcudart.so.12: cannot open shared object file\n")

    async def go():
        starting = asyncio.ensure_future(spawner.start())
        await wait_until(lambda: spawner.ip == NODE_ADDRESS or starting.done(), 5, "the job seen running")
        scripted_slurm.set_job("101", "FAILED", NODE)
        t0 = time.monotonic()
        with pytest.raises(SessionError) as failed:
            await asyncio.wait_for(starting, 5)
        return failed.value.message, time.monotonic() - t0

    message, elapsed = asyncio.run(go())

    assert elapsed < 2, f"the failure took {elapsed:.1f} s to surface"
    assert message.startswith("Your session's Slurm job 101 ended (failed) before its server reported a port. "
                              "Last lines of its log:\n"), message
    assert message.endswith("ImportError: libcudart.so.12: cannot open shared object file"), message
    tails = [c["argv"] for c in scripted_slurm.calls("sudo") if "tail" in c["argv"]]
    assert tails == [["sudo", "-u", LEARNER, "--", "tail", "-n", "20", f"{HOME}/.academy/logs/session-101.log"]]
    assert not spawner.accept_port_report(PORT), "a failed start must not take a late port report"


def test_a_running_session_whose_job_is_requeued_ends_and_its_job_is_cancelled(spawner, scripted_slurm, caplog):
    caplog.set_level(logging.INFO, logger=log.name)

    async def go():
        await start_running_session(spawner, scripted_slurm)
        await spawner.monitor.refresh()
        alive = await spawner.poll()
        scripted_slurm.set_job("101", "REQUEUED", "", "BeginTime")
        await spawner.monitor.refresh()  # the monitor's next round
        return alive, await spawner.poll()

    alive, ended = asyncio.run(go())

    assert alive is None
    assert ended == 1
    assert spawner.end_reason == "requeued"
    assert [c["argv"] for c in scripted_slurm.calls("scancel")] == [["scancel", "101"]]
    assert scripted_slurm.job_state("101") == "CANCELLED"
    assert spawner.job_id == "" and not spawner.get_state().get("job_id")
    assert "Job 101 of %s was requeued (REQUEUED); cancelling it" % LEARNER in caplog.text


def test_a_suspended_session_is_kept(spawner, scripted_slurm):
    async def go():
        await start_running_session(spawner, scripted_slurm)
        scripted_slurm.set_job("101", "SUSPENDED", NODE)
        await spawner.monitor.refresh()
        return await spawner.poll()

    assert asyncio.run(go()) is None
    assert spawner.job_id == "101"
    assert scripted_slurm.calls("scancel") == []


def test_a_preempted_session_is_seen_as_ended_and_its_hub_token_revoked(spawner, scripted_slurm, caplog):
    caplog.set_level(logging.INFO, logger=log.name)

    async def go():
        await start_running_session(spawner, scripted_slurm)
        assert token_row(spawner) is not None
        scripted_slurm.set_job("101", "PREEMPTED", NODE)
        await spawner.monitor.refresh()
        return await spawner.poll()

    token = spawner.api_token  # clear_state forgets it: look the row up by the value
    status = asyncio.run(go())

    assert status == 1
    assert spawner.end_reason == "preempted"
    assert "ended: PREEMPTED" in caplog.text
    assert token_row(spawner, token) is None, "the session's hub token must be revoked when its job ends"
    assert spawner.job_id == "" and not spawner.get_state().get("job_id")
    assert spawner.monitor.latest("101") is None
    assert scripted_slurm.calls("scancel") == []  # Slurm already ended it


def test_stop_retries_a_failing_scancel_with_backoff_until_slurm_takes_it(spawner, scripted_slurm, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    spawner.cancel_backoff = 0.25

    async def go():
        await start_running_session(spawner, scripted_slurm)
        scripted_slurm.update(scancel_failures=2)
        return await asyncio.wait_for(spawner.stop(), 5)

    assert asyncio.run(go()) is None
    scancels = scripted_slurm.calls("scancel")
    assert [c["argv"] for c in scancels] == [["scancel", "101"]] * 3
    first, second = gaps(scancels)
    assert first >= 0.25 and second >= 0.5, f"waits between attempts: {first:.2f} s, {second:.2f} s"
    assert caplog.text.count("scancel 101 failed") == 2
    assert scripted_slurm.job_state("101") == "CANCELLED"
    assert token_row(spawner) is None, "stop revokes the session's hub token"
    assert [kind for kind, _ in spawner.events] == ["session_started", "session_stopped"]


def test_stop_with_scancel_always_failing_returns_and_leaves_the_job_to_the_reaper(spawner, scripted_slurm, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    spawner.cancel_attempts, spawner.cancel_backoff = 3, 0.25

    async def go():
        await start_running_session(spawner, scripted_slurm)
        scripted_slurm.update(scancel_failures=-1)
        await asyncio.wait_for(spawner.stop(), 5)
        return time.time()

    stopped_at = asyncio.run(go())
    scancels = scripted_slurm.calls("scancel")
    assert [c["argv"] for c in scancels] == [["scancel", "101"]] * 3
    first, second = gaps(scancels)
    assert first >= 0.25 and second >= 0.5, f"waits between attempts: {first:.2f} s, {second:.2f} s"
    assert stopped_at - scancels[-1]["at"] < 0.5, "no wait after the last attempt"
    assert caplog.text.count("scancel 101 failed") == 3
    assert f"Job 101 of {LEARNER} could not be cancelled now; the reaper will retry" in caplog.text
    assert scripted_slurm.job_state("101") == "RUNNING"
    # What the reaper finds it by: the platform's tag in the job's comment.
    (submitted,) = scripted_slurm.calls("sbatch")
    assert f"#SBATCH --comment=academy:{LEARNER}:default" in script_lines(submitted)
    assert spawner.monitor.latest("101") is None


@pytest.mark.parametrize("setting,value", [
    ("batch_submit_cmd", "sudo -E -u {username} /opt/slurm/bin/sbatch --parsable"),
    ("batch_query_cmd", "/opt/wrap/squeue -h -j {job_id} -o '%T %B'"),
    ("batch_cancel_cmd", "/opt/slurm/bin/scancel {job_id}"),
])
def test_a_site_setting_batchspawners_slurm_commands_is_told_to_set_slurm_bin_dir(setting, value):
    config = Config({"SlurmSpawner": {setting: value}})  # as a jupyterhub_config.py would set it
    with pytest.raises(TraitError) as refused:
        AcademySlurmSpawner(config=config)
    message = str(refused.value)
    assert f"AcademySlurmSpawner.{setting} is set to {value!r}, but this spawner does not use batchspawner's" in message
    assert "it runs sbatch, squeue and scancel itself, without a shell; set slurm.bin_dir (where they are)" in message


def test_batchspawners_settings_left_at_their_defaults_are_accepted():
    stock = AcademySlurmSpawner.class_traits()
    config = Config({"SlurmSpawner": {name: stock[name].default() for name in
                                      ("batch_submit_cmd", "batch_query_cmd", "batch_cancel_cmd", "req_qos")}})
    assert AcademySlurmSpawner(config=config).batch_submit_cmd == "sbatch --parsable"


POLICY_ACCOUNTS = {"parent": "academy", "own_work": "academy-own", "course_prefix": "academy-", "qos_prefix": "academy-",
                   "max_submit_per_user": 50}
NO_QOS = "sbatch: error: Batch job submission failed: Invalid qos specification"


@pytest.mark.parametrize("refusal, ensured", [(NO_QOS, True), (
    "sbatch: error: Batch job submission failed: Invalid partition name specified", False)])
def test_a_submission_refused_for_want_of_an_association_makes_it_and_submits_again(
        spawner, scripted_slurm, monkeypatch, refusal, ensured):
    made = []

    async def ensure_association(accounts, policy, user, request, allowed, every_profile, manage_qos=True):
        made.append((user, policy.account_for(request.course), [p.key for p in allowed], manage_qos))

    monkeypatch.setattr(session_account, "ensure_association", ensure_association)
    spawner.slurm_accounts = POLICY_ACCOUNTS
    scripted_slurm.update(sbatch_refusals=[refusal])
    if ensured:
        asyncio.run(start_running_session(spawner, scripted_slurm))
        assert made == [(LEARNER, "academy-own", [p.key for p in spawner.allowed_profiles()], True)]
        first, second = scripted_slurm.calls("sbatch")
        assert "#SBATCH --qos=academy-gpu" in script_lines(second) and first["stdin"] == second["stdin"]
    else:   # any other refusal is the learner's answer, and nothing is made in Slurm's accounting
        with pytest.raises(SessionError, match="Invalid partition name"):
            asyncio.run(spawner.start())
        assert made == [] and len(scripted_slurm.calls("sbatch")) == 1


def test_an_end_noted_while_the_hub_stops_the_session_is_left_to_that_stop(spawner, scripted_slurm):
    """The hub stops a session (User.stop) while its end is being followed (the server's SIGTERM
    report, or Slurm's epilog note): one stop, no poll callbacks. Found in CI: the follow ran the
    callbacks, a second User.stop raced the first, and the first one's late clean-up then removed
    the learner's next server while it started."""
    user = spawner.user
    user.spawners[""] = spawner
    fired = []

    async def go():
        await start_running_session(spawner, scripted_slurm)
        spawner.add_poll_callback(lambda: fired.append("user_stopped"))
        assert spawner.accept_end_report()          # the end is being followed ...
        following = spawner._following_end
        stopping = asyncio.ensure_future(user.stop(""))   # ... when the learner presses stop
        await wait_until(lambda: spawner._stop_pending, 5, "the hub's stop under way")
        assert not spawner.accept_end_report(source="Slurm's epilog"), "a note during the stop starts no follow"
        await asyncio.wait_for(stopping, 5)
        return await asyncio.wait_for(following, 5)

    assert asyncio.run(go()) is False, "the follow leaves the end to the hub's stop"
    assert fired == [], "no poll callback: the hub would run a second stop"
    assert scripted_slurm.job_state("101") == "CANCELLED"
    assert [kind for kind, _ in spawner.events] == ["session_started", "session_stopped"]
    assert "" not in user.spawners and spawner.job_id == ""


def test_an_end_note_arriving_once_the_hub_is_stopping_starts_no_follow(spawner, scripted_slurm):
    async def go():
        await start_running_session(spawner, scripted_slurm)
        spawner._stop_pending = True   # what User.stop sets before it polls and stops
        return spawner.accept_end_report(source="Slurm's epilog")

    assert asyncio.run(go()) is False
    assert spawner._following_end is None
