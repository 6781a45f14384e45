"""Releasing feedback: render each graded submission's feedback (hidden tests and solutions removed) for its learner."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from ..gradebook import tables as gb
from .store import ROOT, Store, StoreError


def feedback_path(store: Store, course: str, student: str, assignment: str, notebook: str) -> Path:
    return store.course_dir(course, "feedback", student, assignment, Path(notebook).stem + ".html")


def release(store: Store, course: str, assignment: str, title: str) -> int:
    """Render feedback for every learner's graded (latest) submission; returns how many learners get it."""
    with store.engine.connect() as conn:
        pub = gb.publication(conn, course, assignment)
        if pub is None:
            raise StoreError(f"{course}/{assignment} is not published")
        jobs, students = [], set()
        for sub in gb.latest_submissions(conn, course, assignment):
            res = conn.execute(sa.select(gb.results).where(gb.results.c.submission_id == sub["id"])).mappings().first()
            if res is None or res["error"]:
                continue
            for nb in json.loads(res["detail"])["notebooks"]:
                graded = store.course_dir(course, "grading", res["batch"], "graded", sub["id"], nb["notebook"])
                jobs.append({"graded": str(graded), "release": str(store.course_dir(course, "release", assignment,
                                                                                    nb["notebook"])),
                             "source": str(store.course_dir(course, "source", assignment, nb["notebook"])),
                             "result": nb, "title": title,
                             "html": str(feedback_path(store, course, sub["student"], assignment, nb["notebook"]))})
                students.add(sub["student"])
    if not jobs:
        raise StoreError(f"nothing to release: no submission of {course}/{assignment} has been graded yet")
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=store.root, delete=False) as f:
        json.dump(jobs, f)
    try:
        proc = subprocess.run([store.notebook_python, "-m", "assessments.grading.feedback", f.name], cwd=ROOT,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1"})
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise StoreError(f"rendering feedback failed: {proc.stderr.strip()[-1200:]}")
    released_at = time.time()
    with store.engine.begin() as conn:
        conn.execute(sa.update(gb.publications).where(
            gb.publications.c.course == course, gb.publications.c.assignment == assignment
        ).values(feedback_released_at=released_at))
    store.events.feedback_released(course, assignment, sorted(students), released_at)
    return len(students)


def feedback_for(store: Store, course: str, assignment: str, student: str) -> dict[str, str] | None:
    """The learner's released feedback, by notebook; None before release."""
    with store.engine.connect() as conn:
        pub = gb.publication(conn, course, assignment)
    if pub is None or not pub["feedback_released_at"]:
        return None
    folder = store.course_dir(course, "feedback", student, assignment)
    return {p.name: p.read_text() for p in sorted(folder.glob("*.html"))} if folder.exists() else {}
