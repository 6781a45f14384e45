"""A trainer, in a real browser: the course gradebook, grading a written answer, the CSV download."""

import base64
import re

import pytest
import requests

from ..assessment_support import ASSIGNMENT, COURSE, NOTEBOOK, academy, b64, enrol_and_publish, exchange, solved
from ..conftest import ARTIFACTS
from ..support import HubUser
from .test_spawn_page import log_in

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graded(hub, demo_credentials):
    enrol_and_publish(hub)
    learner = HubUser(hub, "learner1", demo_credentials["learner1"])
    files = exchange(hub, learner, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files").json()["files"]
    release = base64.b64decode(files[NOTEBOOK]).decode()
    r = exchange(hub, learner, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"files": {NOTEBOOK: b64(solved(release))}})
    assert r.status_code == 201, r.text
    out = academy(hub, "grade", COURSE, ASSIGNMENT)
    assert out.returncode == 0, out.stderr
    # The CLI shows the array's progress, then each learner's result.
    assert re.search(r"grading \d+ submission\(s\) of llm-101/tokenization: Slurm job \d+", out.stdout)
    assert re.search(r"\] \d+/\d+ graded", out.stdout) and re.search(r"learner1\s+10/12", out.stdout), out.stdout
    return r.json()["id"]


def test_trainer_grades_a_written_answer_in_the_gradebook(hub, page, demo_credentials, graded):
    ARTIFACTS.mkdir(exist_ok=True)
    log_in(page, hub, "trainer1", demo_credentials["trainer1"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    page.goto(f"{hub.url}/services/academy-exchange/courses/{COURSE}")  # signs in through the hub (OAuth)
    row = page.locator('tr[data-student="learner1"]')
    assert row.locator("td.final").inner_text().strip() == "10 / 12"
    assert "grade 1 answer(s)" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "trainer-gradebook.png"), full_page=True)

    row.get_by_role("link", name=re.compile("grade 1 answer")).click()
    page.wait_for_url(re.compile(rf".*/courses/{COURSE}/submissions/{graded}"))
    assert page.locator(".answer").count() == 1 and page.locator(".answer").inner_text().strip()
    page.fill('input[name="score"]', "3")  # more than the answer is worth
    page.click("button[type=submit]")
    assert "must be from 0 to 2, not 3" in page.locator(".flash.error").inner_text()
    page.fill('input[name="score"]', "2")
    page.fill('input[name="comment"]', "Clear argument, with numbers.")
    page.click("button[type=submit]")
    assert "saved written-vocab: 2 points" in page.locator(".flash.ok").inner_text()
    page.screenshot(path=str(ARTIFACTS / "trainer-manual-grade.png"), full_page=True)

    page.goto(f"{hub.url}/services/academy-exchange/courses/{COURSE}")
    assert page.locator('tr[data-student="learner1"] td.final').inner_text().strip() == "12 / 12"
    with page.expect_download() as download:
        page.click("text=Download the gradebook (CSV)")
    csv_text = open(download.value.path()).read()
    assert "learner1,tokenization,graded" in csv_text and ",2,0,12,12,no," in csv_text


def test_a_learner_cannot_open_the_gradebook(hub, page, demo_credentials, graded):
    log_in(page, hub, "learner1", demo_credentials["learner1"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    response = page.goto(f"{hub.url}/services/academy-exchange/courses/{COURSE}")
    assert response.status == 404      # as if there were no such course
    assert "no such course, or you are not one of its trainers" in page.content()
    # Nor can anyone without signing in through the hub.
    r = requests.get(f"{hub.url}/services/academy-exchange/courses/{COURSE}", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
