"""The pages in-process (stand-in hub): what each role sees, what each refusal and bad input says.

The same pages in a real browser through the real hub: tests/e2e/test_progress_pages.py.
"""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from assessments.progress import queries
from assessments.progress.completion import Programme
from courses.catalogue import load_catalogue

from .eventgen import T0, event_id
from .pagesupport import Service, graded, released


def cohort_events():
    now = time.time()
    return [
        released("llm-101", "tokenization", due=now - 86400),       # past due
        released("llm-101", "attention", due=now + 7 * 86400, at=T0 + 60),
        *graded("learner1", "llm-101", "tokenization", 9.0),
        {"id": event_id("p", 1), "type": "assignment_fetched", "user": "learner1", "course": "llm-101",
         "assignment": "attention", "occurred_at": T0 + 7200},
        {"id": event_id("p", 2), "type": "session_stopped", "user": "learner1", "course": "llm-101", "occurred_at": T0,
         "payload": {"session": "academy-41", "profile": "gpu-h200-1", "gpus": 2, "duration_s": 5400.0}},
    ]


def row(html: str, attr: str, value: str) -> str:
    found = re.search(rf'<tr data-{attr}="{re.escape(value)}"[^>]*>(.*?)</tr>', html, re.S)
    assert found, f"no row {attr}={value}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def message(html: str) -> str:
    return re.search(r'<p class="message">(.*?)</p>', html, re.S).group(1)


def test_a_learner_sees_status_scores_deadlines_gpu_hours_and_what_to_do_next(svc):
    svc.send(cohort_events())
    for path in ("", "me"):
        r = svc.get(path, "t-learner1")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    html = r.text
    assert "My progress" in html
    tok = row(html, "assignment", "tokenization")
    assert "graded" in tok and "9 / 10" in tok and "UTC" in tok
    assert "fetched" in row(html, "assignment", "attention")
    # Next: the unsubmitted released assignment with the earliest deadline.
    nxt = re.search(r'<section class="card next" id="next">(.*?)</section>', html, re.S).group(1)
    assert "<strong>attention</strong>" in nxt and "fetched, not submitted" in nxt
    assert re.search(r"GPU-hours used: <strong>3.00</strong>", html)       # 2 GPUs x 1.5 h
    assert "GPU-hours 3.00 of a budget of 2.5" in html                     # llm-101's, per learner
    assert 'data-track="llm-engineering"' in html and "not passed yet" in html
    assert "learner2" not in html


def test_a_learner_cannot_open_another_learners_page_or_a_cohort(svc):
    svc.send(cohort_events())
    r = svc.get("users/learner1", "t-learner2")
    assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    assert message(r.text) == ("learner2 may not see learner1&#39;s progress: only learner1, an admin, or a trainer "
                               "of one of learner1&#39;s courses may")
    for path in ("courses/llm-101", "courses/llm-101/cohort.csv"):    # as if there were no such course
        r = svc.get(path, "t-learner1")
        assert r.status_code == 404 and "Content-Disposition" not in r.headers
        assert message(r.text) == "no such course, or you are not one of its trainers"
    assert svc.get("courses/hpc-101", "t-trainer1").status_code == 404      # not their course
    assert svc.get("users/learner1", "t-learner1").status_code == 200


def test_without_signing_in_a_page_sends_the_browser_to_the_hub(svc):
    r = svc.get("courses/llm-101")
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
    assert svc.get("api/me").status_code == 403                              # the API never redirects
    r = svc.get("me", "t-outsider")       # signed in, without access to the service: said, not looped
    assert r.status_code == 403 and "may not use academy-progress" in message(r.text)


def test_a_trainer_sees_the_cohort_with_plots_and_filters(svc):
    svc.send(cohort_events())
    r = svc.get("courses/llm-101", "t-trainer1")
    assert r.status_code == 200
    html = r.text
    counts = re.sub(r"<[^>]+>|\s+", " ", re.search(r'<p class="counts" id="counts">(.*?)</p>', html, re.S).group(1))
    assert re.sub(r" +", " ", counts).strip() == "2 learners 1 behind 1 not started 0 passed"
    # Three server-drawn plots, inline SVG, with their text readable.
    assert html.count("<svg") == 3 and "<script" not in html
    assert "Completion funnel" in html and "Score distribution (1 learners with a grade)" in html
    assert "submitted one or more" in html
    assert "learner1" in row(html, "learner", "learner1") and "9 / 10" in row(html, "learner", "learner1")
    assert "not started" in row(html, "learner", "learner2")
    # GPU budgets: the course's use against its budget, each learner's against theirs
    budget = " ".join(re.sub(r"<[^>]+>", " ", re.search(r'id="gpu-budget">(.*?)</p>', html, re.S).group(1)).split())
    assert budget == "GPU-hours used by the course: 3.00 of its budget of 100 each learner may use 2.5"
    assert re.search(r'data-learner="learner1".*?<td class="num gpu over-budget"\s+'
                     r'title="120% of the learner\'s GPU budget">3.00</td>', html, re.S)
    assert re.search(r'data-learner="learner2".*?<td class="num gpu"\s+title="0%', html, re.S)
    behind = svc.get("courses/llm-101?filter=behind", "t-trainer1").text
    assert 'data-learner="learner2"' in behind and 'data-learner="learner1"' not in behind
    started = svc.get("courses/llm-101?filter=not_started", "t-trainer1").text
    assert re.findall(r'data-learner="([^"]+)"', started) == ["learner2"]
    group = svc.get("courses/llm-101?group=workshop-a", "t-trainer1").text
    assert re.findall(r'data-learner="([^"]+)"', group) == ["learner2"]      # trainer1 is in it, not a learner
    assert "1 learners in group <strong>workshop-a</strong>" in group
    assert '<option selected>workshop-a</option>' in group
    assert svc.get("courses/llm-101", "t-admin").status_code == 200


@pytest.mark.parametrize("query, status, says", [
    ("filter=late", 400, "filter &#39;late&#39; is not accepted; accepted: all, behind, not_started"),
    ("page=0", 400, "page &#39;0&#39; is not accepted; expected a whole number from 1"),
    ("page=two", 400, "page &#39;two&#39; is not accepted; expected a whole number from 1"),
    ("page=3", 404, "page 3 does not exist: this selection has 2 learners, 1 page(s) of 100"),
    ("group=no%20such", 400, "group &#39;no such&#39; is not a hub group name"),
    ("group=workshop-b", 404, "there is no hub group named &#39;workshop-b&#39;"),
    ("group=forbidden", 503, "the service&#39;s role needs the scope read:groups"),
])
def test_bad_cohort_queries_get_a_page_that_says_what_is_accepted(svc, query, status, says):
    r = svc.get(f"courses/llm-101?{query}", "t-trainer1")
    assert r.status_code == status and says in message(r.text)
    assert "Traceback" not in r.text


def test_unknown_courses_users_and_paths_are_404_pages(svc):
    r = svc.get("courses/no-such-course", "t-admin")
    assert r.status_code == 404 and "there is no course &#39;no-such-course&#39;" in message(r.text)
    r = svc.get("users/nobody", "t-admin")
    assert r.status_code == 404 and "nobody has no enrolment and no progress records here" in message(r.text)
    r = svc.get("courses/Bad_Name", "t-admin")
    assert r.status_code == 404 and "there is nothing at" in message(r.text)
    assert svc.get("api/nothing", "t-admin").json()["status"] == 404


def test_the_cohort_csv_is_the_selection_on_every_page_with_safe_cells(svc):
    svc.send(cohort_events())
    r = svc.get("courses/llm-101/cohort.csv", "t-trainer1")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.headers["Content-Disposition"] == 'attachment; filename="llm-101-cohort.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["learner"] for x in rows] == ["learner1", "learner2"]
    one = rows[0]
    assert (one["submitted"], one["score"], one["max_score"], one["score_percent"], one["gpu_hours"],
            one["gpu_hours_budget"]) == ("1", "9", "10", "90", "3", "2.5")
    assert (one["tokenization status"], one["tokenization score"], one["attention status"]) == \
        ("graded", "9", "fetched")
    assert rows[1]["started"] == "no" and rows[1]["behind"] == "1"
    behind = svc.get("courses/llm-101/cohort.csv?filter=behind&group=everyone", "t-trainer1")
    assert behind.headers["Content-Disposition"] == 'attachment; filename="llm-101-everyone-behind-cohort.csv"'
    assert [x["learner"] for x in csv.DictReader(io.StringIO(behind.text))] == ["learner2"]


def test_the_cohort_pages_100_learners_at_a_time(tmp_path):
    learners = [f"l{i:03d}" for i in range(250)]
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'progress.sqlite'}",
                  enrolment=[("llm-101", u, "learner") for u in learners] + [("llm-101", "trainer1", "trainer")])
    try:
        svc.send([released("llm-101", "tokenization")] + [e for u in learners[::2] for e in
                                                          graded(u, "llm-101", "tokenization", 5.0)])
        third = svc.get("courses/llm-101?page=3", "t-trainer1").text
        assert re.findall(r'data-learner="([^"]+)"', third) == learners[200:]
        assert "Learners 201–250 of 250" in third and 'rel="prev" href="?page=2"' in third
        assert 'rel="next"' not in third
        assert svc.get("courses/llm-101?page=4", "t-trainer1").status_code == 404
        rows = list(csv.DictReader(io.StringIO(svc.get("courses/llm-101/cohort.csv", "t-trainer1").text)))
        assert len(rows) == 250 and sum(r["tokenization status"] == "graded" for r in rows) == 125
    finally:
        svc.close()


def test_the_plots_count_the_selected_learners_only(svc):
    # learner9 has records but is not enrolled (left the course): counted nowhere.
    svc.send(cohort_events() + graded("learner9", "llm-101", "attention", 2.0, tag="gone"))
    with svc.engine.connect() as conn:
        data = queries.cohort_plot_data(conn, "llm-101", ["learner1", "learner2"])
        alone = queries.cohort_plot_data(conn, "llm-101", ["learner2"])          # a group without learner1
    assert data["funnel"] == (("enrolled", 2), ("started", 1), ("submitted one or more", 1),
                              ("submitted all 2 released", 0), ("passed the course", 0))
    assert data["histogram"] == (0,) * 9 + (1,)                                  # learner1: 9 of 10
    assert data["assignments"] == (("tokenization", 90, 50), ("attention", None, 0))
    assert alone["funnel"][1:] == (("started", 0), ("submitted one or more", 0), ("submitted all 2 released", 0),
                                   ("passed the course", 0))
    assert alone["histogram"] == (0,) * 10 and alone["assignments"] == (("tokenization", None, 0),
                                                                          ("attention", None, 0))


def test_the_programme_follows_the_catalogue():
    programme = Programme.from_catalogue(load_catalogue())
    assert programme.tracks == {"hpc-engineering": ("hpc-101", "hpc-201", "hpc-301"),
                                "llm-engineering": ("llm-101", "llm-201", "llm-301")}
    assert programme.courses["llm-101"] == ("tokenization", "attention", "tiny-gpt")
    assert programme.track_title("llm-engineering") == "LLM engineering"
    assert (programme.course_budget("llm-101"), programme.learner_budget("llm-101")) == (200, 6)
    assert programme.learner_budget("hpc-101") is None
