"""The course store and gradebook without Slurm: enrolment, submissions, lateness, roster, CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import stat

import pytest

from assessments.gradebook import export, roster, tables as gb
from assessments.gradebook.db import open_gradebook
from assessments.exchange.store import Store, StoreError, SubmissionRejected

NOW = 1_800_000_000.0
ESSAY = {"grade_id": "essay", "kind": "manual", "points": 2.0, "score": None, "status": "ok", "hidden": False,
         "error": ""}
DAY = 86400


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "courses", open_gradebook(f"sqlite:///{tmp_path / 'gb.sqlite'}"), "/nonexistent/python",
              late_penalty_per_day=0.1, late_grace_s=300)
    s.root.mkdir(mode=0o700)
    with s.engine.begin() as conn:
        conn.execute(gb.publications.insert().values(course="llm-101", assignment="attention", released_at=NOW,
                                                     due_at=NOW + 7 * DAY, points=10, notebooks='["attention.ipynb"]'))
    s.enrolment.add("llm-101", "learner1")
    s.enrolment.add("llm-101", "learner2")
    s.enrolment.add("llm-101", "trainer1", "trainer")
    return s


def test_a_submission_is_stamped_by_the_server_and_stored_root_only(store):
    row = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"{}"}, now=NOW + DAY)
    assert (row["student"], row["submitted_at"], row["late_s"]) == ("learner1", NOW + DAY, 0.0)
    folder = store.course_dir("llm-101", "submissions", "learner1", "attention", row["id"])
    assert (folder / "attention.ipynb").read_bytes() == b"{}"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and stat.S_IMODE(os.stat(store.root).st_mode) == 0o700


@pytest.mark.parametrize("kwargs, message", [
    ({"user": "learner1", "claimed_student": "learner2"}, "learner1 may not submit as 'learner2'"),
    ({"user": "trainer1"}, "trainer1 is not a learner of llm-101"),
    ({"user": "learner1", "assignment": "lora"}, "llm-101/lora is not published"),
    ({"user": "learner1", "files": {"../../etc/x.ipynb": b"{}"}}, "file name '../../etc/x.ipynb' is not allowed"),
    ({"user": "learner1", "files": {".bashrc": b""}}, "file name '.bashrc' is not allowed"),
    ({"user": "learner1", "files": {}}, "the submission holds no files"),
])
def test_bad_submissions_are_rejected_and_nothing_is_stored(store, kwargs, message):
    args = {"course": "llm-101", "assignment": "attention", "files": {"attention.ipynb": b"{}"}, **kwargs}
    with pytest.raises(SubmissionRejected, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        store.submit(args["course"], args["assignment"], args["user"], args["files"],
                     claimed_student=args.get("claimed_student"), now=NOW)
    assert store.submissions_of("llm-101", args["assignment"], args["user"]) == []
    assert not list(store.root.rglob("*.ipynb"))


def test_lateness_and_penalty_come_from_the_servers_clock(store):
    due = NOW + 7 * DAY
    on_time = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"{}"}, now=due + 200)
    late = store.submit("llm-101", "attention", "learner2", {"attention.ipynb": b"{}"}, now=due + DAY + 3600)
    assert on_time["late_s"] == 200 and late["late_s"] == DAY + 3600
    assert gb.late_penalty(200, 10, 0.1, 300) == 0                 # inside the grace period
    assert gb.late_penalty(DAY + 3600, 10, 0.1, 300) == 2.0        # two started days
    assert gb.late_penalty(30 * DAY, 10, 0.1, 300) == 10           # never more than everything
    result = {"submission": late["id"], "score": 8.0, "max_score": 10.0, "notes": [],
              "notebooks": [{"notebook": "attention.ipynb", "score": 8.0, "max_score": 10.0, "needs_manual": False,
                             "notes": [], "cells": []}]}
    with store.engine.begin() as conn:
        gb.record_result(conn, late, "batch1", result, 0.1, 300)
        (row,) = [r for r in gb.gradebook_rows(conn, "llm-101") if r["student"] == "learner2"]
    assert (row["score"], row["penalty"], row["final_score"]) == (8.0, 2.0, 6.0)
    assert row["notes"] == ["submitted 25.0 h after the deadline: 2 points off"]


def test_the_latest_submission_counts(store):
    store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"1"}, now=NOW + 1)
    second = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"2"}, now=NOW + 2)
    with store.engine.connect() as conn:
        assert [s["id"] for s in gb.latest_submissions(conn, "llm-101", "attention")] == [second["id"]]


def test_unenrolled_learners_can_no_longer_submit(store):
    assert store.enrolment.remove("llm-101", "learner2")
    with pytest.raises(SubmissionRejected, match="learner2 is not a learner of llm-101"):
        store.submit("llm-101", "attention", "learner2", {"attention.ipynb": b"{}"}, now=NOW)
    assert store.enrolment.find_members("llm-101") == ["learner1", "trainer1"]


def test_roster_import_reports_every_row_it_could_not_take(store):
    text = ("username,role\n"
            "learner1,learner\n"          # already enrolled
            "admin,trainer\n"             # new
            "Robert'); DROP TABLE--,\n"   # not a user name
            "ghost,learner\n"             # no such account
            "admin,learner\n"             # twice
            "trainer1,owner\n")           # no such role
    report = roster.import_roster(store, "llm-101", text)
    assert report.added == ["admin"] and report.unchanged == ["learner1"]
    assert report.rejected == [
        "line 4: \"Robert'); DROP TABLE--\" is not a valid user name (lower-case letters, digits, '_' and '-')",
        "line 5: no account named 'ghost' on this system: create it (or add it to the directory) first",
        "line 6: admin appears twice; the first row counts",
        "line 7: role 'owner' is not one of: learner, trainer",
    ]
    assert store.enrolment.find_role("llm-101", "admin") == "trainer" and store.enrolment.find_role("llm-101", "trainer1") == "trainer"
    with pytest.raises(StoreError, match="needs a header row with a 'username' column"):
        roster.import_roster(store, "llm-101", "learner1\nlearner2\n")


def test_gradebook_csv_never_hands_a_spreadsheet_a_formula(store):
    sub = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"{}"}, now=NOW)
    result = {"submission": sub["id"], "score": 3.0, "max_score": 10.0, "notes": [],
              "notebooks": [{"notebook": "attention.ipynb", "score": 3.0, "max_score": 10.0, "needs_manual": True,
                             "notes": ['=HYPERLINK("http://evil.example","x")'], "cells": [ESSAY]}]}
    with store.engine.begin() as conn:
        gb.record_result(conn, sub, "batch1", result, 0.1, 300)
    rows = list(csv.DictReader(io.StringIO(export.gradebook_csv(store, "llm-101"))))
    assert rows[0]["student"] == "learner1" and rows[0]["final_score"] == "3"
    assert rows[0]["notes"] == 'attention.ipynb: =HYPERLINK("http://evil.example","x")'  # text, not a formula
    assert [export.formula_safe(v) for v in ("=1+1", "+1", "-2", "@SUM(A1)", "3")] == ["'=1+1", "'+1", "'-2", "'@SUM(A1)", "3"]
    assert rows[0]["needs_manual_grading"] == "yes"
    stats = export.statistics_by_assignment(store, "llm-101")
    assert stats[0]["graded"] == 1 and stats[0]["mean"] == 3.0 and stats[0]["enrolled"] == 2
    assert json.loads(json.dumps(stats))  # plain data, ready for the API


def test_trainers_grade_written_answers_within_their_points(store):
    sub = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"{}"}, now=NOW)
    result = {"submission": sub["id"], "score": 7.0, "max_score": 10.0, "notes": [],
              "notebooks": [{"notebook": "attention.ipynb", "score": 7.0, "max_score": 10.0, "needs_manual": True,
                             "notes": [], "cells": [ESSAY]}]}
    with store.engine.begin() as conn:
        gb.record_result(conn, sub, "batch1", result, 0.1, 300)
        for bad, message in (("3", "must be from 0 to 2, not 3"), ("two", "must be a number from 0 to 2, not 'two'"),
                             ("nan", "must be from 0 to 2, not nan")):
            with pytest.raises(gb.GradeError, match=message):
                gb.record_manual_grade(conn, sub["id"], "essay", bad, "", "trainer1")
        with pytest.raises(gb.GradeError, match="'test-x' is not a hand-graded cell of this submission; it has: essay"):
            gb.record_manual_grade(conn, sub["id"], "test-x", "1", "", "trainer1")
        (row,) = gb.gradebook_rows(conn, "llm-101")
        assert (row["final_score"], row["manual_pending"]) == (7.0, ["essay"])
        gb.record_manual_grade(conn, sub["id"], "essay", "1.5", "clear, but no numbers", "trainer1")
        (row,) = gb.gradebook_rows(conn, "llm-101")
    assert (row["score"], row["manual_score"], row["final_score"], row["needs_manual"]) == (7.0, 1.5, 8.5, False)


def test_grading_metrics_count_results_and_time_per_course(store):
    """What the exchange's /metrics says of grading, from the gradebook: results by outcome, and
    the grading time the tasks measured (academy_grading_seconds)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from assessments.service.metrics import grading_families

    graded = store.submit("llm-101", "attention", "learner1", {"attention.ipynb": b"{}"}, now=NOW)
    broken = store.submit("llm-101", "attention", "learner2", {"attention.ipynb": b"{}"}, now=NOW)
    with store.engine.begin() as conn:
        gb.record_result(conn, graded, "batch1", {"submission": graded["id"], "score": 7.0, "max_score": 10.0,
                                                  "notes": [], "notebooks": [], "seconds": 42.5}, 0.1, 300)
        gb.record_result(conn, broken, "batch1", {"submission": broken["id"], "error": "the kernel died",
                                                  "seconds": 3.0}, 0.1, 300)
    registry = CollectorRegistry()
    registry.register(type("C", (), {"collect": lambda self: grading_families(store.read(gb.grading_by_course))})())
    text = generate_latest(registry).decode()
    assert 'academy_grading_results{course="llm-101",outcome="graded"} 1.0' in text
    assert 'academy_grading_results{course="llm-101",outcome="failed"} 1.0' in text
    assert 'academy_grading_seconds_bucket{course="llm-101",le="5.0"} 1.0' in text       # the failed one, 3 s
    assert 'academy_grading_seconds_bucket{course="llm-101",le="60.0"} 2.0' in text
    assert 'academy_grading_seconds_count{course="llm-101"} 2.0' in text
    assert 'academy_grading_seconds_sum{course="llm-101"} 45.5' in text
