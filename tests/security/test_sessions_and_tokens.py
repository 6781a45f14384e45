"""A session's hub token dies with its session; a link cannot start a session; cookies are SameSite.

Through a real hub and the real one-node Slurm (issue #13); a walltime's end is checked in
tests/integration/test_faults.py::test_walltime_end_is_seen_within_one_poll. Each hub here has a
Slurm tag of its own (slurm.cluster_name), so its reaper, and the clean-up after the test, touch
only the jobs these tests started, not those of other hubs running beside them.
"""

from __future__ import annotations

import html
import os
import signal
import subprocess
from datetime import datetime, timezone

import pytest
import requests

from hub import hub_process
from hub.configurer import platform_tag
from assessments.exchange.service import AUTH_CACHE_S
from spawners.slurm_spawner import QUERY_SPAWN_REFUSED

from ..support import HubUser, hub_answers, progress_gpu_hours, sacct_gpu_hours, session_token, squeue, wait_for

pytestmark = pytest.mark.integration

CLUSTER_TAG = "sec13"  # platform tag academy-sec13
MARGIN_S = 300  # AcademySlurmSpawner.token_expiry_margin (default)
ALL_GPUS = {"key": "gpu-all", "display": "All four GPUs (tests)", "partition": "gpu", "gres": "gpu:h200:4",
            "cpus": 1, "memory": "1G", "walltime_default": "00:10:00", "walltime_max": "00:20:00",
            "groups": ["learners"]}


@pytest.fixture
def fast_hub(make_hub, base_config):
    """A hub that notices a job's end within about two seconds (hub poll and squeue round: 1 s each)."""
    return make_hub({
        "profiles": [*base_config["profiles"], ALL_GPUS],
        "hub": {"poll_interval": 1},
        "sessions": {"monitor_interval": 1, "reaper_interval": 2, "reaper_grace": 0},
        "slurm": {"command_timeout": 5, "cluster_name": CLUSTER_TAG},
        "progress": {"accounting_interval": 1},
    })


def our_live_jobs(hub, user: str) -> list[str]:
    """Live jobs of USER that this hub submitted (other hubs may run sessions for the same demo users)."""
    out = subprocess.run(["squeue", "--noheader", "--user", user, "--format=%i|%T|%k"], capture_output=True,
                         text=True, check=True).stdout
    tag = platform_tag(hub.cfg) + ":"
    return [line.split("|")[0] for line in out.splitlines()
            if line.split("|")[2].startswith(tag) and line.split("|")[1] in ("PENDING", "RUNNING", "CONFIGURING")]


def start_session(hub, demo_credentials, name="learner1", profile="cpu-small", walltime=10) -> tuple[HubUser, str]:
    user = HubUser(hub, name, demo_credentials[name])
    r = user.api("POST", f"/users/{name}/server", json={"profile": profile, "walltime": walltime})
    assert r.status_code in (201, 202), r.text
    user.wait_ready()
    (job,) = our_live_jobs(hub, name)
    return user, job


def exchange_answers(hub, token: str) -> int:
    r = requests.get(f"{hub.url}/services/academy-exchange/api/assignments", headers={"Authorization": f"token {token}"},
                     timeout=10, allow_redirects=False)
    return r.status_code


def server_tokens(user: HubUser) -> list[dict]:
    """The user's tokens that belong to their server: its API token and the OAuth tokens of its client."""
    r = user.api("GET", f"/users/{user.name}/tokens")
    assert r.status_code == 200, r.text
    return [t for t in r.json()["api_tokens"]
            if (t.get("note") or "").startswith(f"Server at /user/{user.name}/") or
            (t.get("oauth_client") or "").startswith(f"Server at /user/{user.name}/")]


def assert_revoked(hub, user: HubUser, token: str) -> None:
    assert hub_answers(hub, token) in (401, 403)
    # The exchange reuses the hub's answer about a token for AUTH_CACHE_S at most.
    assert wait_for(lambda: exchange_answers(hub, token) in (302, 401, 403), AUTH_CACHE_S + 5)
    assert server_tokens(user) == []


# --- tokens --------------------------------------------------------------------------------------

def test_session_token_expires_with_the_walltime_and_dies_when_the_job_is_scancelled(fast_hub, demo_credentials):
    learner, job = start_session(fast_hub, demo_credentials, walltime=10)
    token = session_token(fast_hub, learner)
    assert hub_answers(fast_hub, token) == 200
    assert exchange_answers(fast_hub, token) == 200  # the exchange has seen it, and keeps the hub's answer
    # The learner's browser opens JupyterLab: the hub gives the server's OAuth client a token too.
    assert learner.http.get(f"{fast_hub.url}/user/{learner.name}/lab", timeout=60).status_code == 200
    tokens = server_tokens(learner)
    assert len(tokens) >= 2 and any(t["oauth_client"].startswith("Server at") for t in tokens), tokens
    [api_token] = [t for t in tokens if (t.get("note") or "").startswith("Server at")]
    assert api_token["expires_at"], "the session's token never expires"
    left = (datetime.fromisoformat(api_token["expires_at"]) - datetime.now(timezone.utc)).total_seconds()
    # The 10 minutes asked for (from the job's start, a few seconds ago) plus the margin: within
    # the profile's maximum walltime plus the margin.
    assert 10 * 60 < left <= 10 * 60 + MARGIN_S, left

    subprocess.run(["scancel", job], check=True)  # behind the hub's back
    assert wait_for(lambda: learner.server() is None, 20)
    assert_revoked(fast_hub, learner, token)


def test_session_token_dies_when_the_job_is_preempted(fast_hub, demo_credentials):
    # The session holds every GPU, so the urgent job can preempt no one else's.
    learner, job = start_session(fast_hub, demo_credentials, profile="gpu-all")
    token = session_token(fast_hub, learner)
    assert hub_answers(fast_hub, token) == 200
    before = progress_gpu_hours(fast_hub, learner)
    urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--gres=gpu:h200:1", "--time=2",
                             "--output=/dev/null", "--wrap=sleep 60"], capture_output=True, text=True, check=True,
                            cwd="/tmp").stdout.strip()
    try:
        assert wait_for(lambda: learner.server() is None, 30)
        assert squeue("--jobs", job)[0]["state"] == "PREEMPTED"
        assert_revoked(fast_hub, learner, token)
        # the session's GPU-hours are Slurm's, up to the preemption
        want = round(before + sacct_gpu_hours(job), 4)
        assert wait_for(lambda: abs(progress_gpu_hours(fast_hub, learner) - want) < 1e-3, 20, what=f"{want} GPU-hours")
    finally:
        subprocess.run(["scancel", urgent], check=False)


# scancel: the session's server hears SIGTERM and tells the hub. SIGKILL of every process of the
# job: nothing can be told by the session; Slurm's EpilogSlurmctld notes the end for the hub.
def kill_job_processes(job: str) -> None:
    """SIGKILL to every process of the job (what the OOM killer or a crash does): `scancel --signal=KILL`
    would not do, Slurm cancels with SIGTERM first."""
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, check=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert pids, out
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Who may tell the hub first: after scancel the server's report and Slurm's epilog race (either
# is right); after a SIGKILL only Slurm can; a stop from the hub needs no telling.
ENDS = {"scancel": (lambda learner, job: subprocess.run(["scancel", job], check=True),
                    ("its server", "Slurm's epilog")),
        "sigkill": (lambda learner, job: kill_job_processes(job), ("Slurm's epilog",)),
        "hub-stop": (lambda learner, job: learner.stop_server(), ())}   # the learner's stop button


@pytest.mark.parametrize("how", ENDS)
def test_a_session_ended_behind_the_hubs_back_is_known_in_seconds_and_counted_by_slurm(how, make_hub, base_config,
                                                                                     demo_credentials):
    # The platform's defaults: the hub polls, and squeue runs, every 30 s; Slurm's accounting is read every second.
    hub = make_hub({"profiles": [*base_config["profiles"], ALL_GPUS], "slurm": {"cluster_name": "sec15"},
                    "progress": {"accounting_interval": 1}})
    learner, job = start_session(hub, demo_credentials, profile="gpu-all")
    token = session_token(hub, learner)
    before = progress_gpu_hours(hub, learner)
    mark = hub.log_mark()
    end, reporters = ENDS[how]
    end(learner, job)        # a learner in a terminal or at the stop button, an operator; the OOM killer
    # the hub heard of the end and confirmed it with Slurm at once, well before its 30 s poll
    assert wait_for(lambda: learner.server() is None, 15, what="the hub to show the server stopped")
    if reporters:
        log = mark.new_text()
        assert any(f"Session of learner1: end reported by {who} (job {job})" in log for who in reporters), log
    assert_revoked(hub, learner, token)
    # its GPU-hours are Slurm's: four GPUs times the job's elapsed time in sacct
    want = round(before + sacct_gpu_hours(job), 4)
    assert wait_for(lambda: abs(progress_gpu_hours(hub, learner) - want) < 1e-3, 20, what=f"{want} GPU-hours")


def test_session_token_dies_when_the_job_ended_while_the_hub_was_down(fast_hub, demo_credentials):
    learner, job = start_session(fast_hub, demo_credentials)
    token = session_token(fast_hub, learner)
    hub_process.stop(fast_hub.cfg)
    subprocess.run(["scancel", job], check=True)
    hub_process.start(fast_hub.cfg, config_env={"ACADEMY_CONFIG": str(fast_hub.config_file)})
    learner = HubUser(fast_hub, learner.name, demo_credentials[learner.name])
    assert wait_for(lambda: learner.server() is None, 20)
    assert_revoked(fast_hub, learner, token)


# --- no session from a link; SameSite cookies --------------------------------------------------

def test_a_link_with_spawn_options_starts_no_session_and_says_what_to_do(fast_hub, demo_credentials):
    learner = HubUser(fast_hub, "learner2", demo_credentials["learner2"])
    for link in ("/hub/spawn?opt-profile=cpu-small&opt-walltime=10&opt-course=",
                 "/hub/spawn/learner2?profile=cpu-small&walltime=10"):  # JupyterHub's older form of the same
        r = learner.http.get(f"{fast_hub.url}{link}", timeout=30)
        page = html.unescape(r.text)
        assert r.status_code == 400, (link, r.status_code, r.url)
        assert QUERY_SPAWN_REFUSED in page and 'name="profile"' in page  # the message, above the form
        assert learner.server() is None
        assert our_live_jobs(fast_hub, "learner2") == []
    # The form itself still starts one.
    r = learner.submit_spawn_form(profile="cpu-small", walltime="10", course="")
    assert r.status_code == 302, r.text
    learner.wait_ready()
    learner.stop_server()


def set_cookies(response: requests.Response) -> list[str]:
    return [c for r in (*response.history, response) for c in r.raw.headers.getlist("Set-Cookie")]


def test_cookies_of_the_hub_and_its_services_are_samesite(fast_hub, demo_credentials):
    http = requests.Session()
    seen = set_cookies(http.get(f"{fast_hub.url}/hub/login", timeout=30))
    r = http.post(f"{fast_hub.url}/hub/login", timeout=30,
                  data={"username": "learner2", "password": demo_credentials["learner2"],
                        "_xsrf": http.cookies.get("_xsrf")})
    assert r.status_code == 200 and "/hub/login" not in r.url
    seen += set_cookies(r)
    # A service's own sign-in (OAuth through the hub) sets its cookies too.
    seen += set_cookies(http.get(f"{fast_hub.url}/services/academy-exchange/courses/llm-101", timeout=30))
    names = {c.split("=", 1)[0] for c in seen}
    assert {"_xsrf", "jupyterhub-hub-login", "jupyterhub-session-id", "service-academy-exchange"} <= names, names
    # A deletion (empty value, expired) leaves nothing for a browser to send.
    checked = [c for c in seen if not c.split(";")[0].endswith('=""')]
    assert len(checked) >= 5
    assert [c for c in checked if "samesite=lax" not in c.lower() and "samesite=strict" not in c.lower()] == []
