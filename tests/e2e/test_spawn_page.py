"""A learner, in a real browser: log in, choose a GPU profile on the spawn form, land in JupyterLab."""

import re

import pytest

from ..conftest import ARTIFACTS
from ..support import live_jobs

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
    page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
    (job,) = live_jobs("learner1")
    assert job["time_limit"] == "15:00" and "gpu:h200:1" in job["gres"]
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
