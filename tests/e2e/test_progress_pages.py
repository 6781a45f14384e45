"""The progress pages in a real browser, through the real hub (its login, its OAuth, its proxy).

The data goes the real way: enrolment with the `academy` CLI, events spooled in an outbox and sent
to the service's api/events with the hub's own emitter token (scope custom:academy-progress:ingest),
so completion and the certificate are the service's own doing.
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import pytest
import requests

from assessments.progress.outbox import Outbox, stable_id

from ..assessment_support import academy
from ..conftest import ARTIFACTS
from .test_spawn_page import log_in

pytestmark = pytest.mark.integration
SERVICE = "/services/academy-progress/"
TRACK = {"llm-101": {"tokenization": 12, "attention": 12, "tiny-gpt": 11},
         "llm-201": {"compute-budgets": 12, "inference": 14, "lora": 11},
         "llm-301": {"memory-at-scale": 12, "flash-attention": 12, "serving": 13, "scaling-laws": 14}}


def event(kind, at, **fields):
    """An event with an id of its own (a rerun of the module replays it harmlessly)."""
    key = "/".join(str(fields.get(k, "")) for k in ("user", "course", "assignment"))
    return {"id": stable_id("e2e-progress", kind, key), "type": kind, "occurred_at": at, **fields}


def cohort_events(now: float) -> list[dict]:
    """learner1 passes every assignment of the LLM track (attention: 9 of 12); learner2 fetched one
    assignment and submitted nothing, with the first deadline past; learner1 used 1.5 GPU-hours."""
    out = []
    for c, (course, assignments) in enumerate(TRACK.items()):
        for i, (assignment, points) in enumerate(assignments.items()):
            released = now - 20 * 86400 + (3 * c + i) * 3600
            due = now - 86400 if (course, assignment) == ("llm-101", "tokenization") else now + (10 + i) * 86400
            item = {"course": course, "assignment": assignment}
            out.append(event("assignment_released", released, **item, payload={"due_at": due, "max_score": points}))
            out.append(event("assignment_submitted", released + 600, user="learner1", **item))
            score = 9 if assignment == "attention" else points
            out.append(event("assignment_autograded", released + 900, user="learner1", **item,
                             payload={"score": score, "max_score": points}))
    out.append(event("assignment_fetched", now - 3 * 86400, user="learner2", course="llm-101",
                     assignment="attention"))
    out.append(event("session_stopped", now - 86400, user="learner1", course="llm-101",
                     payload={"session": "e2e-progress-1", "profile": "gpu-h200-1", "gpus": 1, "duration_s": 5400.0}))
    return out


@pytest.fixture(scope="module")
def progress(hub, tmp_path_factory):
    for args in (("enrol", "llm-101", "learner1", "learner2"), ("enrol", "llm-201", "learner1", "learner2"),
                 ("enrol", "llm-301", "learner1", "learner2"),
                 ("enrol", "llm-101", "trainer1", "--trainer")):
        out = academy(hub, *args)
        assert out.returncode == 0, out.stderr
    token = Path(hub.cfg["hub"]["state_dir"], "progress-hub-events.token").read_text().strip()
    box = Outbox(tmp_path_factory.mktemp("progress-outbox"))
    box.emit_many(cohort_events(time.time()))
    result = box.flush(f"{hub.url}{SERVICE}api/events", token)
    assert (result.error, result.rejected, result.pending) == ("", 0, 0), result
    return hub


def text(locator) -> str:
    return re.sub(r"\s+", " ", locator.inner_text()).strip()


def test_a_learner_sees_their_progress_and_their_certificate(progress, page, demo_credentials):
    ARTIFACTS.mkdir(exist_ok=True)
    log_in(page, progress, "learner1", demo_credentials["learner1"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    page.goto(f"{progress.url}{SERVICE}")            # the service signs the browser in through the hub
    assert page.locator("h1").inner_text() == "My progress"
    attention = page.locator('#course-llm-101 tr[data-assignment="attention"]')
    assert text(attention.locator(".status")) == "graded" and text(attention.locator(".score")) == "9 / 12"
    assert "passed" in text(page.locator("#course-llm-101 h3"))
    assert text(page.locator("#gpu-hours")) == "GPU-hours used: 1.50"
    assert "Nothing is waiting" in text(page.locator("#next"))
    track = page.locator('#tracks tr[data-track="llm-engineering"]')
    assert all(f"{course} ✓ passed" in text(track) for course in TRACK)
    page.screenshot(path=str(ARTIFACTS / "progress-learner.png"), full_page=True)

    with page.expect_download() as download:
        track.get_by_role("link", name="PDF").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF-")
    track.get_by_role("link", name="certificate").click()
    page.wait_for_url(re.compile(rf".*{SERVICE}certificates/[0-9a-f]{{32}}$"))
    assert "Valid." in text(page.locator("#verdict"))
    assert (text(page.locator("#name")), text(page.locator("#track"))) == ("learner1", "LLM engineering")
    page.screenshot(path=str(ARTIFACTS / "progress-certificate.png"), full_page=True)
    # Verification needs no account: the employer's browser has none.
    public = requests.get(page.url, timeout=30)
    assert public.status_code == 200 and "Valid." in public.text and "LLM engineering" in public.text

    response = page.goto(f"{progress.url}{SERVICE}courses/llm-101")
    assert response.status == 404      # as if there were no such course
    assert text(page.locator(".message")) == "no such course, or you are not one of its trainers"
    assert page.goto(f"{progress.url}{SERVICE}users/learner2").status == 403


def test_learner2_sees_what_to_do_next(progress, page, demo_credentials):
    log_in(page, progress, "learner2", demo_credentials["learner2"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    page.goto(f"{progress.url}{SERVICE}me")
    nxt = text(page.locator("#next"))
    assert "tokenization in llm-101: overdue since" in nxt and "not fetched yet" in nxt
    assert "past deadline" in text(page.locator('#course-llm-101 tr[data-assignment="tokenization"]'))
    assert page.locator("#tracks a.certificate").count() == 0 and "not passed yet" in text(page.locator("#tracks"))


def test_a_trainer_sees_the_cohort_filters_it_and_downloads_the_csv(progress, page, demo_credentials):
    log_in(page, progress, "trainer1", demo_credentials["trainer1"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    page.goto(f"{progress.url}{SERVICE}courses/llm-101")
    counts = text(page.locator("#counts"))
    assert counts.startswith("2 learners") and "1 behind" in counts and "1 passed" in counts
    assert page.locator(".plots svg").count() == 3
    assert "Completion funnel" in text(page.locator("#funnel"))
    assert "learner1" in text(page.locator('tr[data-learner="learner1"]'))
    assert text(page.locator('tr[data-learner="learner1"] .score')) == "32 / 35"
    page.screenshot(path=str(ARTIFACTS / "progress-cohort.png"), full_page=True)

    page.select_option('select[name="filter"]', "behind")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*filter=behind.*"))
    assert page.locator("#cohort tbody tr").count() == 1
    assert text(page.locator("#cohort tbody tr td").first) == "learner2"

    with page.expect_download() as download:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert download.value.suggested_filename == "llm-101-behind-cohort.csv"
    assert [(r["learner"], r["behind"], r["tokenization status"]) for r in rows] == [("learner2", "1", "not_started")]

    # A hub group as filter (a workshop, an intake): the exchange keeps llm-101-learners in step
    # with enrolment, and the service reads it with its own token.
    response = page.goto(f"{progress.url}{SERVICE}courses/llm-101?group=llm-101-learners")
    assert response.status == 200 and page.locator("#cohort tbody tr").count() == 2

    response = page.goto(f"{progress.url}{SERVICE}courses/llm-101?page=0")
    assert response.status == 400 and "expected a whole number from 1" in text(page.locator(".message"))
