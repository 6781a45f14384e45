"""The assessment flow through the real hub, the exchange service and a Slurm grading array:
enrol, publish, fetch, submit (owner-checked), autograde, feedback without hidden tests, gradebook."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pwd
import re
import shutil
import time
import urllib.parse

import nbformat
import pytest
import requests

from assessments.grading.feedback import hidden_lines

from ..assessment_support import (ASSIGNMENT, COURSE, NOTEBOOK, SOURCE, academy, b64, enrol_and_publish, exchange,
                                  solved)
from ..support import wait_for


@pytest.fixture(scope="module")
def course(hub, tmp_path_factory):
    enrol_and_publish(hub)  # learner1, learner2; trainer1 as trainer
    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster.write_text("username,role\nadmin,trainer\nlearner1,learner\nno-such-user,learner\nlearner2,dean\n")
    out = academy(hub, "roster", COURSE, str(roster))
    assert out.returncode == 1  # some rows were rejected, and the report says which and why
    assert "enrolled 1, already enrolled 1, rejected 2" in out.stdout
    assert "line 4: no account named 'no-such-user'" in out.stdout
    assert "line 5: role 'dean' is not one of: learner, trainer" in out.stdout
    out = academy(hub, "members", COURSE)
    assert out.stdout.splitlines() == ["trainers: admin, trainer1", "learners: learner1, learner2"]
    out = academy(hub, "publish", COURSE, ASSIGNMENT)  # publishing again keeps the deadline
    assert out.returncode == 0, out.stderr
    assert re.search(r"published llm-101/tokenization \(12 points\), due \d{4}-\d\d-\d\d", out.stdout)
    return COURSE


def test_learners_fetch_submit_get_graded_and_read_feedback_without_hidden_tests(hub, login, course):
    learner1, learner2, trainer = login("learner1"), login("learner2"), login("trainer1")

    listing = exchange(hub, learner1, "GET", "assignments").json()["assignments"]
    assert [(a["course"], a["assignment"], a["role"]) for a in listing] == [(COURSE, ASSIGNMENT, "learner")]

    files = exchange(hub, learner1, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files").json()["files"]
    release = base64.b64decode(files[NOTEBOOK]).decode()
    assert "BEGIN HIDDEN TESTS" not in release and "BEGIN SOLUTION" not in release
    hidden = hidden_lines(nbformat.read(SOURCE, as_version=4))
    assert hidden and not any(line in release for line in hidden)

    # A submission claiming to be another learner's is refused, and nothing is stored.
    r = exchange(hub, learner1, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"student": "learner2", "files": {NOTEBOOK: b64(solved(release))}})
    assert r.status_code == 403 and "may not submit as 'learner2'" in r.json()["message"]
    r = exchange(hub, learner2, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions")
    assert r.json()["submissions"] == []
    # A file name that tries to leave the submission folder is refused.
    r = exchange(hub, learner1, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"files": {"../../x.ipynb": b64(release)}})
    assert r.status_code == 403 and "file name '../../x.ipynb' is not allowed" in r.json()["message"]

    before = time.time()
    r = exchange(hub, learner1, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"student": "learner1", "files": {NOTEBOOK: b64(solved(release))}, "submitted_at": 0})
    assert r.status_code == 201, r.text
    stamped = r.json()
    assert stamped["student"] == "learner1" and before - 1 <= stamped["submitted_at"] <= time.time() + 1
    assert stamped["late_s"] == 0
    r = exchange(hub, learner2, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"files": {NOTEBOOK: b64(release)}})
    assert r.status_code == 201, r.text

    # Only a trainer of the course grades; the grading runs as a Slurm array, followed to the end.
    r = exchange(hub, learner1, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={})
    assert r.status_code == 404     # trainers only: to anyone else, as if there were no such course
    r = exchange(hub, trainer, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={})
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["total"] == 2
    seen = []

    def done():
        seen.append(exchange(hub, trainer, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde/{batch['batch']}").json())
        return seen[-1]["done"]
    wait_for(done, 300, 1, what="the grading batch to end")
    progress = seen[-1]
    assert any(p["running"] > 0 or p["graded"] > 0 for p in seen), seen
    scores = {r["student"]: (r["score"], r["max_score"], r["error"]) for r in progress["results"]}
    # 10 autograded points; the 2-point written answer waits for a trainer.
    assert scores == {"learner1": (10.0, 12.0, None), "learner2": (0.0, 12.0, None)}

    # Feedback only once released; it shows the verdicts and none of the hidden tests.
    r = exchange(hub, learner1, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback")
    assert r.status_code == 404 and "has not been released yet" in r.json()["message"]
    out = academy(hub, "feedback", COURSE, ASSIGNMENT)
    assert out.returncode == 0 and "released to 2 learner(s)" in out.stdout, out.stderr
    html = exchange(hub, learner1, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback").json()["files"]
    page = html["tokenization.html"]
    assert "Score: 10 of 10 autograded points" in page and "Tests passed: 3 of 3 points" in page
    assert "HIDDEN TESTS" not in page and not [line for line in hidden if line in page]
    blank = exchange(hub, learner2, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback").json()["files"]
    assert "Tests failed: 0 of 3 points" in blank["tokenization.html"]
    assert not [line for line in hidden if line in blank["tokenization.html"]]

    # The gradebook: trainers only, CSV a spreadsheet opens safely.
    assert exchange(hub, learner1, "GET", f"courses/{COURSE}/gradebook.csv").status_code == 404
    r = exchange(hub, trainer, "GET", f"courses/{COURSE}/gradebook.csv")
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert (rows["learner1"]["final_score"], rows["learner1"]["max_score"], rows["learner1"]["status"]) == ("10", "12", "graded")
    assert rows["learner2"]["final_score"] == "0" and rows["learner1"]["needs_manual_grading"] == "yes"
    # The learner's progress record followed, through the outbox: fetched, submitted, graded, feedback.
    def progress_item():
        me = requests.get(f"{hub.url}/services/academy-progress/api/me",
                          headers={"Authorization": f"token {learner1.token}"}, timeout=30).json()
        items = [a for c in me.get("courses", []) if c["course"] == COURSE for a in c["assignments"]]
        return items[0] if items else {}

    assert wait_for(lambda: progress_item().get("feedback_at") is not None, 30), progress_item()
    item = progress_item()
    assert (item["assignment"], item["score"], item["max_score"]) == (ASSIGNMENT, 10.0, 12.0)
    assert item["fetched_at"] and item["submitted_at"] and item["graded_at"] and not item["late"]
    stats = exchange(hub, trainer, "GET", f"courses/{COURSE}/statistics").json()["assignments"]
    assert stats == [{"assignment": ASSIGNMENT, "enrolled": 2, "submitted": 2, "graded": 2, "max_score": 12.0,
                      "mean": 5.0, "median": 5.0, "min": 0.0, "max": 10.0, "stdev": 7.07}]


def test_course_boundaries_and_unenrolment(hub, login, course):
    learner1, learner2 = login("learner1"), login("learner2")
    # A learner of one course sees nothing of another (other tests may enrol learner1 elsewhere).
    academy(hub, "unenrol", "hpc-201", "learner1")
    r = exchange(hub, learner1, "GET", "courses/hpc-201/assignments/gpu-fundamentals/files")
    assert r.status_code == 404 and r.json()["message"] == "no such course, or you are not enrolled in it"
    assert exchange(hub, learner1, "GET", "courses/hpc-201/gradebook.csv").status_code == 404
    # Unenrolling ends access at once.
    assert exchange(hub, learner2, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files").status_code == 200
    out = academy(hub, "unenrol", COURSE, "learner2")
    assert out.returncode == 0 and "learner2: removed from llm-101" in out.stdout
    r = exchange(hub, learner2, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files")
    assert r.status_code == 404
    assert exchange(hub, learner2, "GET", "assignments").json()["assignments"] == []
    # The hub's groups follow: learner2 leaves llm-101-learners, and comes back when enrolled again.
    admin = login("admin")

    def members(group: str) -> set[str]:
        r = admin.api("GET", f"/groups/{group}")
        return set(r.json()["users"]) if r.status_code == 200 else set()

    assert wait_for(lambda: members(f"{COURSE}-learners") == {"learner1"}, 20), members(f"{COURSE}-learners")
    assert members(f"{COURSE}-trainers") == {"trainer1", "admin"}
    out = academy(hub, "enrol", COURSE, "learner2")
    assert out.returncode == 0
    assert wait_for(lambda: members(f"{COURSE}-learners") == {"learner1", "learner2"}, 20)
    # No hub token, no exchange.
    r = requests.get(f"{hub.url}/services/academy-exchange/api/assignments", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403)


def test_jupyterlab_assignments_tab_fetches_submits_and_gets_feedback_through_the_exchange(hub, login, course):
    """nbgrader's own Assignments extension in a real session, speaking to the exchange over HTTP."""
    learner, trainer = login("learner2"), login("trainer1")
    local_copy = os.path.join(pwd.getpwnam("learner2").pw_dir, COURSE)
    shutil.rmtree(local_copy, ignore_errors=True)  # a fetched copy from an earlier run on this machine
    r = learner.submit_spawn_form(profile="cpu-small", walltime="20")
    assert r.status_code == 302, r.text
    learner.wait_ready()
    api = f"{hub.url}/user/learner2"
    auth = {"Authorization": f"token {learner.token}"}

    listed = requests.get(f"{api}/assignments", params={"course_id": COURSE}, headers=auth, timeout=60).json()
    assert listed["success"], listed
    # Released (not yet fetched here), and the earlier submission made through the API.
    assert sorted((a["assignment_id"], a["status"]) for a in listed["value"]) == [
        (ASSIGNMENT, "released"), (ASSIGNMENT, "submitted")]
    fetched = requests.post(f"{api}/assignments/fetch", data={"course_id": COURSE, "assignment_id": ASSIGNMENT},
                            headers=auth, timeout=60).json()
    assert sorted((a["assignment_id"], a["status"]) for a in fetched["value"]) == [
        (ASSIGNMENT, "fetched"), (ASSIGNMENT, "submitted")]
    local = requests.get(f"{api}/api/contents/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}", headers=auth, timeout=30).json()
    assert local["type"] == "notebook" and "BEGIN HIDDEN TESTS" not in json.dumps(local["content"])

    before = time.time()
    submitted = requests.post(f"{api}/assignments/submit", data={"course_id": COURSE, "assignment_id": ASSIGNMENT},
                              headers=auth, timeout=60).json()
    assert submitted["success"], submitted
    mine = exchange(hub, learner, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions").json()["submissions"]
    assert mine[-1]["submitted_at"] >= before - 1  # stamped by the server, under the session's owner

    r = exchange(hub, trainer, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={})
    assert r.status_code == 202, r.text
    batch = r.json()["batch"]
    progress = wait_for(lambda: (p := exchange(hub, trainer, "GET",
                                              f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde/{batch}").json())
                        ["done"] and p, 300, 1, what="the regrade to end")
    assert [(r["student"], r["score"]) for r in progress["results"]] == [("learner2", 0.0)]
    assert academy(hub, "feedback", COURSE, ASSIGNMENT).returncode == 0

    after = requests.post(f"{api}/assignments/fetch_feedback", data={"course_id": COURSE, "assignment_id": ASSIGNMENT},
                          headers=auth, timeout=60).json()
    (entry,) = [a for a in after["value"] if a["status"] == "submitted"]
    last = entry["submissions"][-1]
    assert last["has_local_feedback"], entry
    # nbgrader's handler gives the folder relative to the server's root (the learner's home).
    folder = os.path.relpath(last["local_feedback_path"], pwd.getpwnam("learner2").pw_dir) \
        if os.path.isabs(last["local_feedback_path"]) else last["local_feedback_path"]
    html = requests.get(f"{api}/files/{urllib.parse.quote(folder)}/tokenization.html", headers=auth, timeout=30)
    assert html.status_code == 200 and "Tests failed: 0 of 3 points" in html.text
    learner.stop_server()
    shutil.rmtree(local_copy, ignore_errors=True)


def test_a_course_published_while_the_services_run_is_live_at_once(hub, login):
    """A trainer adds a course file and publishes: the running exchange serves its assignment and
    the running progress service its cohort page, with no restart (they follow the course files)."""
    from courses.catalogue import COURSES_DIR, NOTEBOOKS_DIR

    import yaml
    course_file, notebooks = COURSES_DIR / "live-101.yaml", NOTEBOOKS_DIR / "live-101"
    data = yaml.safe_load((COURSES_DIR / "hpc-101.yaml").read_text())
    first = data["assignments"][0]
    learner1, trainer1 = login("learner1"), login("trainer1")
    try:
        course_file.write_text(yaml.safe_dump({**data, "id": "live-101", "title": "A course published live"}))
        notebooks.symlink_to("hpc-101")              # its notebooks: hpc-101's, under the new id
        for args in (("enrol", "live-101", "learner1"), ("enrol", "live-101", "trainer1", "--trainer"),
                     ("publish", "live-101", first["id"])):
            out = academy(hub, *args)
            assert out.returncode == 0, out.stderr
        listed = exchange(hub, learner1, "GET", "assignments").json()["assignments"]
        assert ("live-101", first["id"]) in {(a["course"], a["assignment"]) for a in listed}
        files = exchange(hub, learner1, "GET", f"courses/live-101/assignments/{first['id']}/files")
        assert files.status_code == 200 and first["notebook"] in files.json()["files"]
        page = requests.get(f"{hub.url}/services/academy-progress/courses/live-101",
                            headers={"Authorization": f"token {trainer1.token}"}, timeout=30)
        assert page.status_code == 200 and "A course published live" in page.text
    finally:
        for user in ("learner1", "trainer1"):
            academy(hub, "unenrol", "live-101", user)
        course_file.unlink(missing_ok=True)
        if notebooks.is_symlink():
            notebooks.unlink()
