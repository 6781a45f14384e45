"""A learner, in a real browser: log in, choose a GPU profile on the spawn form, land in JupyterLab."""

import re
import subprocess

import pytest

from ..conftest import ARTIFACTS
from ..support import live_jobs, squeue, wait_for
from ..unit.test_session_timer import shown_seconds_left

pytestmark = pytest.mark.integration


def log_in(page, hub, name, password):
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")


def test_learner_starts_a_gpu_session_from_the_spawn_form(hub, page, demo_credentials, login):
    ARTIFACTS.mkdir(exist_ok=True)
    log_in(page, hub, "learner1", demo_credentials["learner1"])
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    # Only the learner's profiles are offered; the trainers' two-GPU profile is not.
    assert page.locator('input[name="profile"]').count() == 3
    assert page.locator("#profile-gpu-h200-2").count() == 0
    page.check("#profile-gpu-h200-1")
    # Choosing the GPU profile bounds the walltime to its 120-minute maximum.
    assert page.get_attribute("#walltime", "max") == "120"
    page.fill("#walltime", "15")
    page.screenshot(path=str(ARTIFACTS / "spawn-form.png"), full_page=True)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/learner1/lab.*"), timeout=120_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    (job,) = live_jobs("learner1")
    assert job["time_limit"] == "15:00" and "gpu:h200:1" in job["gres"]
    # The status bar shows the time left of this Slurm job's walltime.
    timer = page.locator("#academy-session-timer")
    page.wait_for_function("document.getElementById('academy-session-timer').textContent.startsWith('Session: ')")
    assert 13 * 60 <= shown_seconds_left(timer.text_content()) <= 15 * 60, timer.text_content()
    assert f"Slurm job {job['id']}" in timer.get_attribute("title")
    page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
    # A learner's JupyterLab has no trainer tools (nbgrader's Create Assignment, Formgrader).
    assert page.get_by_text("Create Assignment").count() == 0
    assert page.get_by_text("Formgrader").count() == 0
    login("learner1")  # registers the session for clean-up by the fixture


def test_a_refused_walltime_is_explained_on_the_page(hub, page, demo_credentials):
    log_in(page, hub, "learner2", demo_credentials["learner2"])
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.check("#profile-cpu-small")
    # The browser's own bound would stop 9999; a crafted request must meet the server's.
    page.eval_on_selector("#walltime", "el => { el.removeAttribute('max'); el.value = '9999'; }")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state()
    assert "Walltime 9999 min is outside 1 to 240 minutes allowed for profile 'cpu-small'" in page.content()
    page.screenshot(path=str(ARTIFACTS / "spawn-refused.png"))
    assert live_jobs("learner2") == []


def test_the_pending_page_says_why_the_session_waits_and_follows_it_to_jupyterlab(hub, page, demo_credentials, login):
    # Someone else holds all four GPUs (an operator: no learner's or trainer's QOS allows four).
    blocker = subprocess.run(["sbatch", "--parsable", "--partition=gpu", "--gres=gpu:h200:4",
                              "--time=5", "--mem=1G", "--output=/dev/null", "--wrap=sleep 300"],
                             capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    try:
        wait_for(lambda: squeue("--jobs", blocker)[0]["state"] == "RUNNING", 20, what="the blocking job to run")
        log_in(page, hub, "learner2", demo_credentials["learner2"])
        page.wait_for_url(re.compile(r".*/hub/spawn.*"))
        page.check("#profile-gpu-h200-1")
        page.fill("#walltime", "10")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(re.compile(r".*/hub/spawn-pending/learner2.*"))
        # The page's progress message tells the learner why, and where they stand.
        page.wait_for_function("(document.getElementById('progress-message') || {}).textContent"
                               "?.includes('is waiting in the Slurm queue: all the resources')", timeout=60_000)
        text = page.locator("#progress-message").inner_text()
        assert "all the resources this profile needs are in use" in text and "Position 1 of 1 in partition gpu" in text
        page.screenshot(path=str(ARTIFACTS / "spawn-pending.png"), full_page=True)
    finally:
        subprocess.run(["scancel", blocker], check=False)
    # The GPUs free up: the same page follows the start through to JupyterLab.
    page.wait_for_url(re.compile(r".*/user/learner2/lab.*"), timeout=120_000)
    login("learner2")  # registers the session for clean-up by the fixture
