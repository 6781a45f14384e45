"""GPU notebook sessions end to end: real hub, real proxy, real Slurm, real kernels."""

from __future__ import annotations

import html
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from hub import hub_process

from ..assessment_support import academy
from ..support import live_jobs, run_in_kernel, squeue, wait_for

pytestmark = pytest.mark.integration


def wait_no_live_jobs(user: str, timeout: float = 30) -> list[dict]:
    wait_for(lambda: not live_jobs(user), timeout, what=f"no live job of {user}")
    return live_jobs(user)


def test_spawn_form_offers_only_the_profiles_the_groups_allow(login):
    learner_form = login("learner1").spawn_form()
    assert 'value="gpu-h200-1"' in learner_form and 'value="cpu-small"' in learner_form
    assert 'value="gpu-h200-2"' not in learner_form  # trainers only
    trainer_form = login("trainer1").spawn_form()
    assert 'value="gpu-h200-2"' in trainer_form
    # The walltime field is bounded by the selected profile's maximum (cpu-small: 4 h).
    assert 'max="240"' in learner_form


@pytest.fixture
def hostile_dotfiles():
    """learner1's ~/.bashrc and ~/.local try to change the session's environment."""
    home = Path(pwd.getpwnam("learner1").pw_dir)
    fake_torch = home / ".local/lib/python3.11/site-packages/torch"
    bashrc = home / ".bashrc"
    saved = bashrc.read_bytes() if bashrc.exists() else None
    fake_torch.mkdir(parents=True, exist_ok=True)
    (fake_torch / "__init__.py").write_text("__version__ = 'shadowed-by-learner'\n")
    bashrc.write_text("export ACADEMY_BASHRC_RAN=yes\nexport PATH=/nowhere:$PATH\n")
    subprocess.run(["chown", "-R", "learner1:learner1", str(home / ".local"), str(bashrc)], check=True)
    yield
    shutil.rmtree(home / ".local")
    if saved is None:
        bashrc.unlink()
    else:
        bashrc.write_bytes(saved)


def gpu_hours(hub, user, course: str | None = None) -> float:
    """The GPU-hours the progress service has recorded for this user, in all or in one course
    (other tests may have added some)."""
    me = requests.get(f"{hub.url}/services/academy-progress/api/me",
                      headers={"Authorization": f"token {user.token}"}, timeout=30).json()
    if course is None:
        return me["gpu_hours"]
    return next((c["gpu_hours"] for c in me["courses"] if c["course"] == course), 0.0)


@pytest.fixture
def in_course_hpc101(hub, login):
    """learner1 enrolled in hpc-101 through the CLI, and the hub's group following it."""
    out = academy(hub, "enrol", "hpc-101", "learner1")
    assert out.returncode == 0, out.stderr
    admin = login("admin")
    assert wait_for(lambda: "learner1" in admin.api("GET", "/groups/hpc-101-learners").json().get("users", []), 30)
    return "hpc-101"


def test_spawn_form_offers_the_learners_courses_and_refuses_others(hub, login, in_course_hpc101):
    learner = login("learner1")
    form = learner.spawn_form()
    groups = login("admin").api("GET", "/users/learner1").json()["groups"]
    # Exactly the courses of learner1's hub groups, then "none"; hpc-101 among them.
    offered = re.findall(r'<option value="([^"]*)"', form)
    assert offered == sorted({g.rsplit("-", 1)[0] for g in groups if g.endswith(("-learners", "-trainers"))}) + [""]
    assert "hpc-101" in offered and "None: my own work" in form
    r = learner.submit_spawn_form(profile="cpu-small", walltime="10", course="hpc-201-not-mine")
    assert r.status_code == 400
    page = html.unescape(r.text)
    assert "Course 'hpc-201-not-mine' is not one of your courses; choose one of: " in page
    assert "Traceback" not in page
    assert learner.server() is None and live_jobs("learner1") == []  # nothing was submitted


def test_learner_gets_a_gpu_session_through_slurm(hub, learner, login, hostile_dotfiles, in_course_hpc101):
    hours_before = gpu_hours(hub, learner)
    course_hours_before = gpu_hours(hub, learner, "hpc-101")
    r = learner.submit_spawn_form(profile="gpu-h200-1", walltime="20", course="hpc-101")
    assert r.status_code == 302, r.text
    learner.wait_ready()

    (job,) = live_jobs("learner1")
    assert job["user"] == "learner1"  # the job runs as the learner, not as the hub
    assert (job["state"], job["partition"], job["time_limit"]) == ("RUNNING", "gpu", "20:00")
    assert "gpu:h200:1" in job["gres"]

    out = run_in_kernel(hub, "learner1", learner.token, (
        "import os, pwd, torch\n"
        "print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))\n"
        "print('user=' + pwd.getpwuid(os.getuid()).pw_name)\n"
        "print('torch=' + torch.__version__)\n"
        "print('job=' + os.environ['SLURM_JOB_ID'])\n"
        "print('bashrc=' + os.environ.get('ACADEMY_BASHRC_RAN', 'no'))\n"
        "print('env_writable=' + str(os.access(os.path.dirname(torch.__file__), os.W_OK)))\n"
        "print('peer_home=' + str(os.access(pwd.getpwnam('learner2').pw_dir, os.R_OK)))\n"
        "import ipywidgets, nbgrader\n"
        "print('widgets=' + ipywidgets.__version__)\n"
    ))
    lines = dict(line.split("=", 1) for line in out.strip().splitlines())
    assert lines["CVD"] == "0"  # one GRES allocated, and Slurm told the job which
    assert lines["user"] == "learner1"
    assert lines["torch"].startswith("2.13.0")
    assert lines["job"] == job["id"]
    # Neither ~/.bashrc nor a package in ~/.local changed the session; its environment is read-only.
    assert lines["bashrc"] == "no"
    assert lines["env_writable"] == "False"
    assert lines["widgets"] == "8.1.9"
    assert lines["peer_home"] == "False"  # another learner's files are out of reach
    extensions = requests.get(f"{hub.url}/user/learner1/lab/api/extensions",
                              headers={"Authorization": f"token {learner.token}"}).json()
    assert {"jupyter-nbgrader", "jupyter-widgets-jupyterlab-manager", "academy-session-timer"} <= {
        e["name"] for e in extensions}
    # Learners get nbgrader's Assignments tab, not the trainers' formgrader; the session is lean:
    # no Notebook 7 UI and no language-server proxy (both only cost start-up time).
    for path in ("formgrader", "tree", "lsp/status"):
        r = requests.get(f"{hub.url}/user/learner1/{path}", headers={"Authorization": f"token {learner.token}"})
        assert r.status_code == 404, path
    r = requests.get(f"{hub.url}/user/learner1/assignments", params={"course_id": "llm-101"},
                     headers={"Authorization": f"token {learner.token}"})
    assert r.status_code == 200 and r.json()["success"]
    # The session knows when its walltime ends (the status bar counts down to it).
    session = requests.get(f"{hub.url}/user/learner1/academy/session",
                           headers={"Authorization": f"token {learner.token}"}).json()
    assert session["job_id"] == job["id"]
    assert abs(session["walltime_end"] - session["now"] - 20 * 60) < 90

    # Another learner can neither use the server's API nor its page.
    other = login("learner2")
    r = requests.get(f"{hub.url}/user/learner1/api/contents", headers={"Authorization": f"token {other.token}"})
    assert r.status_code == 403
    page = other.http.get(f"{hub.url}/user/learner1/lab")
    assert page.status_code == 403 or "/user/learner2" in page.url

    # No token in the batch script, the job's visible fields, or the hub's log.
    token = run_in_kernel(hub, "learner1", learner.token, "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    assert len(token) >= 32
    script = subprocess.run(["scontrol", "write", "batch_script", job["id"], "-"], capture_output=True, text=True).stdout
    assert "#SBATCH --gres=gpu:h200:1" in script
    shown = subprocess.run(["scontrol", "show", "job", "-dd", job["id"]], capture_output=True, text=True).stdout
    assert f"JobId={job['id']}" in shown
    job_log = (Path(pwd.getpwnam("learner1").pw_dir) / f".academy/logs/session-{job['id']}.log").read_text()
    assert f"academy: job {job['id']}" in job_log and "CUDA_VISIBLE_DEVICES=0" in job_log
    # nbgrader's server side loaded when the Assignments list was first asked for, not at start.
    assert "nbgrader's assignment list and validation load on first use" in job_log
    # The server in the job held its own port and reported it: no launcher process in between.
    port = re.search(rf"Session job {job['id']} of learner1 is at [^:]+:(\d+)", hub.log).group(1)
    assert f"serving on 127.0.0.1:{port}, reported to the hub" in job_log
    assert "academy-singleuser --academy-report-port" in script and "spawners.launcher" not in script
    slurm_logs = "".join((Path(hub.cfg["slurm"]["log_dir"]) / f).read_text(errors="replace")
                         for f in ("slurmctld.log", "slurmd.log"))
    for where, text in (("batch script", script), ("scontrol show job", shown), ("hub log", hub.log),
                        ("job log", job_log), ("Slurm logs", slurm_logs)):
        assert token not in text, f"server token visible in the {where}"

    learner.stop_server()
    assert wait_no_live_jobs("learner1") == []  # no orphaned job
    # The session reached the learner's progress record: one GPU for its whole duration.
    wait_for(lambda: gpu_hours(hub, learner) != hours_before, 30, what="the session's GPU-hours in the progress record")
    assert 0 < gpu_hours(hub, learner) - hours_before < 0.1, (hours_before, gpu_hours(hub, learner))
    # ... counted for the course chosen on the spawn form (the trainer's cohort page sums these).
    added = gpu_hours(hub, learner, "hpc-101") - course_hours_before
    assert added == pytest.approx(gpu_hours(hub, learner) - hours_before, abs=1e-3) and added > 0


def test_hub_database_commits_through_a_write_ahead_log(hub, learner):
    # One fsync per commit instead of several (hub/hub_db.py); the mode is stored in the file.
    db = Path(hub.cfg["hub"]["state_dir"]) / "jupyterhub.sqlite"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert learner.api("GET", "/users/learner1").status_code == 200  # and the hub works on it


def test_hub_freezes_its_start_up_heap_out_of_full_collections(hub):
    # hub/hub_gc.py: once JupyterHub has started, not at config load (nothing would be frozen yet)
    text = hub_process.log_file(hub.cfg).read_text()
    found = re.search(r"JupyterHub is now running.*?academy: (\d+) objects from the hub's start-up frozen", text, re.S)
    assert found, "the hub did not log its start-up heap frozen after it started"
    assert int(found.group(1)) > 100_000   # JupyterHub, SQLAlchemy, tornado and the platform, imported


def test_two_gpu_profile_gets_two_devices(hub, login):
    trainer = login("trainer1")
    r = trainer.api("POST", "/users/trainer1/server", json={"profile": "gpu-h200-2", "walltime": 10})
    assert r.status_code in (201, 202), r.text
    trainer.wait_ready()
    out = run_in_kernel(hub, "trainer1", trainer.token, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
    assert out.strip() == "0,1"
    (job,) = live_jobs("trainer1")
    assert "gpu:h200:2" in job["gres"] and job["time_limit"] == "10:00"
    trainer.stop_server()
    assert wait_no_live_jobs("trainer1") == []


def test_port_report_cannot_set_spawner_attributes(hub, learner):
    learner.submit_spawn_form(profile="cpu-small", walltime="10")
    learner.wait_ready()
    marker = f"/tmp/academy-pwned-{uuid.uuid4().hex}"
    # The attack from inside the learner's own session, with the server's own token.
    code = f"""
import json, os, urllib.request, urllib.error
api, token = os.environ['JUPYTERHUB_API_URL'], os.environ['JUPYTERHUB_API_TOKEN']
def post(path, body):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method='POST',
                                 headers={{'Authorization': 'token ' + token}})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
print('stock', post('/batchspawner', {{'exec_prefix': 'touch {marker};', 'port': 1}}))
print('extra', post('/academy/port', {{'port': 2000, 'exec_prefix': 'touch {marker};'}}))
print('type', post('/academy/port', {{'port': '2000; touch {marker}'}}))
print('late', post('/academy/port', {{'port': 2000}}))
"""
    out = run_in_kernel(hub, "learner1", learner.token, code)
    codes = dict(line.split() for line in out.strip().splitlines())
    assert codes == {"stock": "404", "extra": "400", "type": "400", "late": "409"}
    # A learner's ordinary API token is not the server's token either.
    r = requests.post(f"{hub.url}/hub/api/academy/port", json={"port": 2000},
                      headers={"Authorization": f"token {learner.token}"})
    assert r.status_code == 403
    # The server still answers on its real port, and stopping it polls Slurm: no command ran.
    assert requests.get(f"{hub.url}/user/learner1/api/status",
                        headers={"Authorization": f"token {learner.token}"}).status_code == 200
    learner.stop_server()
    assert not os.path.exists(marker)
    assert "touch" not in hub.log  # no command of the attempts reached anything the hub ran or logged


@pytest.mark.parametrize("body,message", [
    ({"profile": "gpu-h200-2"}, "Profile 'gpu-h200-2' is not available to you"),
    ({"profile": "gpu-h200-1", "walltime": 500}, "Walltime 500 min is outside 1 to 120 minutes"),
    ({"profile": "gpu-h200-1", "walltime": "30\n#SBATCH --gres=gpu:h200:4"}, "whole number of minutes"),
    ({"profile": "gpu-h200-1", "gres": "gpu:h200:4"}, "Unknown option(s) 'gres'"),
    ({"profile": "gpu-h200-1", "exec_prefix": "touch /tmp/x;"}, "Unknown option(s) 'exec_prefix'"),
])
def test_bad_options_get_400_and_nothing_reaches_slurm(hub, login, body, message):
    learner = login("learner2")
    before = {j["id"] for j in squeue("--user", "learner2")}
    r = learner.api("POST", "/users/learner2/server", json=body)
    assert r.status_code == 400
    assert message in r.json()["message"]
    assert learner.server() is None
    assert {j["id"] for j in squeue("--user", "learner2")} == before


def test_bad_form_post_shows_the_message_on_the_page(login):
    learner = login("learner2")
    r = learner.submit_spawn_form(profile="gpu-h200-1", walltime="9999")
    assert r.status_code == 400
    assert "Walltime 9999 min is outside 1 to 120 minutes" in r.text
    assert learner.server() is None


def test_slurm_refusal_reaches_the_learner_and_leaves_no_job(login):
    learner = login("learner2")
    r = learner.api("POST", "/users/learner2/server", json={"profile": "broken-reservation"})
    assert r.status_code == 503
    assert "Slurm refused the session" in r.json()["message"]
    assert "reservation" in r.json()["message"].lower()
    assert learner.server() is None
    assert live_jobs("learner2") == []


def form_view(learner, profile: str) -> str:
    """What the spawn form says of the cluster under a profile, as text."""
    m = re.search(rf'id="view-{profile}">(.*?)</small>', learner.spawn_form(), re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) if m else ""


def test_the_form_shows_free_gpus_and_whether_a_profile_starts_now(make_hub, demo_credentials):
    from ..support import HubUser

    hub = make_hub({"sessions": {"cluster_view_interval": 1}, "slurm": {"cluster_name": "view15"}})
    learner = HubUser(hub, "learner1", demo_credentials["learner1"])
    wait_for(lambda: form_view(learner, "gpu-h200-1") == "4 of 4 GPUs free · starts now", 20,
             what="an idle cluster on the form")
    assert form_view(learner, "cpu-small") == "starts now"
    hold = ["sbatch", "--parsable", "--partition=gpu", "--gres=gpu:h200:4", "--time=5", "--mem=1G",
            "--output=/dev/null", "--wrap=sleep 300"]   # an operator's jobs: all four GPUs, then one waiting
    running = subprocess.run(hold, capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    waiting = ""
    try:
        wait_for(lambda: squeue("--jobs", running)[0]["state"] == "RUNNING", 20)
        waiting = subprocess.run(hold, capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
        wait_for(lambda: form_view(learner, "gpu-h200-1") == "0 of 4 GPUs free · queued behind 1 waiting job", 20,
                 what="the held GPUs and the waiting job on the form")
        assert form_view(learner, "cpu-small") == "starts now"
    finally:
        subprocess.run(["scancel", running, *([waiting] if waiting else [])], check=False)
    wait_for(lambda: form_view(learner, "gpu-h200-1") == "4 of 4 GPUs free · starts now", 30,
             what="the freed GPUs on the form")


def form_text(learner, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:li|div)>', learner.spawn_form(), re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) if m else ""


def test_the_form_shows_the_gpu_budget_left_and_refuses_a_session_it_cannot_cover(make_hub, demo_credentials):
    """The budget the gradebook put on learner1's llm-101 association (the catalogue's 6 GPU-hours),
    as Slurm counts it: lowered by an operator to 2.5 GPU-hours, with 2 of them held by the
    learner's own running job, the form says 0.5 are left, names the learner's job that Slurm holds,
    and refuses (form and REST API) a session the budget cannot cover, with the numbers."""
    from spawners.slurm_accounts import SlurmAccounts

    from ..support import HubUser

    hub = make_hub({"sessions": {"cluster_view_interval": 1}, "slurm": {"cluster_name": "budget15"}})
    academy(hub, "enrol", "llm-101", "learner1")
    learner = HubUser(hub, "learner1", demo_credentials["learner1"])
    accounts, account = SlurmAccounts(), "academy-llm-101"

    def association():
        return accounts.associations(["learner1"]).get(("learner1", account))
    wait_for(lambda: association() and association().gpu_minutes == 360, 30,
             what="the catalogue's 6 GPU-hours on learner1's llm-101 association")
    current = association()
    accounts.set_association("learner1", account, sorted(current.qos), current.default_qos, current, 150)
    subprocess.run(["sacctmgr", "-i", "modify", "user", "where", "name=learner1", f"account={account}", "set",
                    "RawUsage=0"], capture_output=True, check=True)   # what earlier tests used: not this test's
    own = ["runuser", "-u", "learner1", "--", "sbatch", "--parsable", "-A", account, "--qos=academy-gpu-h200-1",
           "-p", "gpu", "--gres=gpu:h200:1", "--mem=1G", "--output=/dev/null", "--wrap=sleep 600"]
    jobs = []
    try:
        jobs.append(subprocess.run([*own, "-t", "120"], capture_output=True, text=True, check=True, cwd="/tmp")
                    .stdout.strip())
        wait_for(lambda: squeue("--jobs", jobs[0])[0]["state"] == "RUNNING", 30, what="learner1's own GPU job")
        jobs.append(subprocess.run([*own, "-t", "10"], capture_output=True, text=True, check=True, cwd="/tmp")
                    .stdout.strip())                    # over the profile's one GPU at a time: held by the QOS
        budget = wait_for(lambda: form_text(learner, "budget-llm-101"), 20, what="llm-101's budget on the form")
        assert re.fullmatch(r"GPU budget of llm-101: 0\.5 of 2\.5 GPU-hours left for you; "
                            r"the course has [0-9.]+ of 200\.0 GPU-hours left", budget), budget
        held = wait_for(lambda: form_text(learner, "academy-held-jobs"), 20, what="the held job on the form")
        assert f"job {jobs[1]} (wrap): you already use as many GPUs as you may" in held

        r = learner.submit_spawn_form(profile="gpu-h200-1", course="llm-101", walltime="60")
        page = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", r.text)).split())
        assert "Not started: A 60-minute session with 1 GPU may use 1.0 GPU-hours, and your GPU budget for " \
               "llm-101 has 0.5 left" in page
        longest = re.search(r"Choose a session of at most (\d+) minutes, or a profile without GPUs\.", page)
        # 150 GPU-minutes less the running job's 120 (used so far + reserved): Slurm rounds each part
        # to whole minutes on its own (used down, reserved from the time left), so the sum may be a
        # minute off either way, and a slow machine may see a few minutes fewer than 30
        assert longest and 25 <= int(longest.group(1)) <= 31, page
        api = learner.api("POST", "/users/learner1/server", json={"profile": "gpu-h200-1", "course": "llm-101",
                                                                  "walltime": "60"})
        assert api.status_code == 403 and "your GPU budget for llm-101 has 0.5 left" in api.json()["message"]
        assert learner.server() is None
        assert sorted(j["id"] for j in live_jobs("learner1")) == sorted(jobs)   # nothing was submitted
    finally:
        subprocess.run(["scancel", *jobs], check=False)
        accounts.set_association("learner1", account, sorted(current.qos), current.default_qos, gpu_minutes=360)
