"""The gradebook's tables (SQLAlchemy Core) and the queries on grades: publications, submissions,
results, hand grades, enrolment.

The schema is changed only through a migration (migrations/, run by db.py). Every time stored
here is the server's clock, as epoch seconds.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

metadata = sa.MetaData()

publications = sa.Table(
    "publications", metadata,
    sa.Column("course", sa.String(64), primary_key=True),
    sa.Column("assignment", sa.String(64), primary_key=True),
    sa.Column("released_at", sa.Float, nullable=False),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("points", sa.Float, nullable=False),
    sa.Column("notebooks", sa.Text, nullable=False),        # JSON list of file names
    sa.Column("feedback_released_at", sa.Float),
)

submissions = sa.Table(
    "submissions", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("course", sa.String(64), nullable=False),
    sa.Column("assignment", sa.String(64), nullable=False),
    sa.Column("student", sa.String(32), nullable=False),
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Column("late_s", sa.Float, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Index("ix_submissions_course_assignment_student", "course", "assignment", "student"),
)

# The stored submissions of the last hour, for the hourly limit. Apart from `submissions` because
# retention deletes old rows there, which would hand a learner their allowance back.
recent_submissions = sa.Table(
    "recent_submissions", metadata,
    sa.Column("submission_id", sa.String(40), primary_key=True),
    sa.Column("course", sa.String(64), nullable=False),
    sa.Column("assignment", sa.String(64), nullable=False),
    sa.Column("student", sa.String(32), nullable=False),
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Index("ix_recent_submissions_course_assignment_student", "course", "assignment", "student"),
)

results = sa.Table(
    "results", metadata,
    sa.Column("submission_id", sa.String(40), sa.ForeignKey("submissions.id"), primary_key=True),
    sa.Column("batch", sa.String(40), nullable=False),
    sa.Column("score", sa.Float),                  # None: the grader failed (error holds why)
    sa.Column("max_score", sa.Float),
    sa.Column("penalty", sa.Float, nullable=False, default=0.0),
    sa.Column("final_score", sa.Float),
    sa.Column("needs_manual", sa.Boolean, nullable=False, default=False),
    sa.Column("notes", sa.Text, nullable=False, default="[]"),   # JSON list, for the trainer
    sa.Column("detail", sa.Text, nullable=False, default="{}"),  # JSON: per notebook and cell
    sa.Column("error", sa.Text),
    sa.Column("graded_at", sa.Float, nullable=False),
)


enrolments = sa.Table(
    "enrolments", metadata,
    sa.Column("course", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),     # "learner" or "trainer"
    sa.Column("enrolled_at", sa.Float, nullable=False),
)


# One row per enrolment change, in order: what follows enrolment (the hub's course groups) reads
# the changes since the last id it saw, instead of comparing everything every few seconds.
enrolment_changes = sa.Table(
    "enrolment_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("course", sa.String(64), nullable=False),
    sa.Column("user", sa.String(32), nullable=False),
    sa.Column("changed_at", sa.Float, nullable=False),
)


manual_grades = sa.Table(
    "manual_grades", metadata,
    sa.Column("submission_id", sa.String(40), sa.ForeignKey("submissions.id"), primary_key=True),
    sa.Column("grade_id", sa.String(100), primary_key=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("grader", sa.String(32), nullable=False),
    sa.Column("graded_at", sa.Float, nullable=False),
)


def publication(conn, course: str, assignment: str) -> dict | None:
    row = conn.execute(sa.select(publications).where(
        publications.c.course == course, publications.c.assignment == assignment)).mappings().first()
    return dict(row) if row else None


def latest_submissions(conn, course: str, assignment: str) -> list[dict]:
    """Each learner's last submission of an assignment (the one that counts)."""
    rows = conn.execute(sa.select(submissions).where(
        submissions.c.course == course, submissions.c.assignment == assignment
    ).order_by(submissions.c.student, submissions.c.submitted_at.desc())).mappings().all()
    latest: dict[str, dict] = {}
    for row in rows:
        latest.setdefault(row["student"], dict(row))
    return list(latest.values())


def late_penalty(late_s: float, max_score: float, per_day: float, grace_s: float) -> float:
    """Points lost: a fraction of the maximum per started day past the grace period, capped at all of it."""
    if late_s <= grace_s or per_day <= 0:
        return 0.0
    days = int((late_s - grace_s) // 86400) + 1
    return min(max_score, round(max_score * per_day * days, 4))


def record_result(conn, submission: dict, batch: str, result: dict, per_day: float, grace_s: float) -> None:
    error = result.get("error")
    score = None if error else float(result["score"])
    max_score = None if error else float(result["max_score"])
    penalty = 0.0 if error else late_penalty(submission["late_s"], max_score, per_day, grace_s)
    notes = [] if error else [f"{nb['notebook']}: {note}" for nb in result["notebooks"] for note in nb["notes"]]
    notes = ([] if error else list(result.get("notes", []))) + notes
    if penalty:
        notes.append(f"submitted {submission['late_s'] / 3600:.1f} h after the deadline: {penalty:g} points off")
    row = {
        "submission_id": submission["id"], "batch": batch, "score": score, "max_score": max_score,
        "penalty": penalty, "final_score": None if error else max(0.0, score - penalty),
        "needs_manual": bool(not error and any(nb["needs_manual"] for nb in result["notebooks"])),
        "notes": json.dumps(notes), "error": error,
        "detail": json.dumps({"notebooks": [] if error else result["notebooks"],
                              "seconds": result.get("seconds")}), "graded_at": time.time(),
    }
    conn.execute(sa.delete(results).where(results.c.submission_id == submission["id"]))
    conn.execute(sa.insert(results).values(**row))


def gradebook_rows(conn, course: str) -> list[dict]:
    """One row per learner and assignment: their counted (latest) submission and its result."""
    rows = []
    for pub in conn.execute(sa.select(publications).where(publications.c.course == course)
                            .order_by(publications.c.released_at)).mappings():
        for sub in sorted(latest_submissions(conn, course, pub["assignment"]), key=lambda s: s["student"]):
            res = conn.execute(sa.select(results).where(results.c.submission_id == sub["id"])).mappings().first()
            manual = manual_scores(conn, sub["id"])
            pending = [c["grade_id"] for c in manual_cells(res) if c["grade_id"] not in manual]
            scored = res is not None and res["score"] is not None
            rows.append({"student": sub["student"], "assignment": pub["assignment"], "submission": sub["id"],
                         "submitted_at": sub["submitted_at"], "late_s": sub["late_s"],
                         "score": res["score"] if res else None, "manual_score": sum(manual.values()),
                         "penalty": res["penalty"] if res else None,
                         # what counts: autograded + trainer-graded points, less any late penalty
                         "final_score": max(0.0, res["score"] + sum(manual.values()) - res["penalty"]) if scored else None,
                         "max_score": res["max_score"] if scored else pub["points"],
                         "needs_manual": bool(pending), "manual_pending": pending,
                         "notes": json.loads(res["notes"]) if res else [],
                         "status": ("error" if res and res["error"] else "graded" if res else "submitted")})
    return rows


def manual_cells(result_row) -> list[dict]:
    """The cells of a graded submission that a trainer scores by hand."""
    if result_row is None or result_row["error"]:
        return []
    return [dict(c, notebook=nb["notebook"]) for nb in json.loads(result_row["detail"])["notebooks"]
            for c in nb["cells"] if c["kind"] == "manual"]


def manual_scores(conn, submission_id: str) -> dict[str, float]:
    return {r.grade_id: r.score for r in conn.execute(
        sa.select(manual_grades.c.grade_id, manual_grades.c.score).where(manual_grades.c.submission_id == submission_id))}


class GradeError(ValueError):
    """A manual grade that cannot be recorded; the message says what is accepted."""


def record_manual_grade(conn, submission_id: str, grade_id: str, score_text: str, comment: str, grader: str) -> float:
    res = conn.execute(sa.select(results).where(results.c.submission_id == submission_id)).mappings().first()
    cells = {c["grade_id"]: c for c in manual_cells(res)}
    if grade_id not in cells:
        raise GradeError(f"{grade_id!r} is not a hand-graded cell of this submission; it has: "
                         f"{', '.join(cells) or 'none'}")
    points = float(cells[grade_id]["points"])
    try:
        score = float(score_text)
    except (TypeError, ValueError):
        raise GradeError(f"the score for {grade_id} must be a number from 0 to {points:g}, not {score_text!r}")
    if not 0 <= score <= points or score != score:
        raise GradeError(f"the score for {grade_id} must be from 0 to {points:g}, not {score:g}")
    conn.execute(sa.delete(manual_grades).where(manual_grades.c.submission_id == submission_id,
                                                manual_grades.c.grade_id == grade_id))
    conn.execute(sa.insert(manual_grades).values(submission_id=submission_id, grade_id=grade_id, score=score,
                                                 comment=comment[:5000], grader=grader, graded_at=time.time()))
    return score


def counted_score(conn, submission_id: str) -> float:
    """What a submission scores now: autograded plus hand-graded points, less the late penalty."""
    res = conn.execute(sa.select(results).where(results.c.submission_id == submission_id)).mappings().first()
    if res is None or res["score"] is None:
        return 0.0
    return max(0.0, res["score"] + sum(manual_scores(conn, submission_id).values()) - res["penalty"])


def find_submission(conn, submission_id: str) -> dict | None:
    row = conn.execute(sa.select(submissions).where(submissions.c.id == submission_id)).mappings().first()
    return dict(row) if row else None


def find_graded_submission(conn, course: str, submission_id: str) -> tuple[dict, dict, dict] | None:
    """(submission, result, {grade_id: hand grade}) of a graded submission of `course`; None when
    there is no such submission in that course, or it has no result, or its grading failed."""
    sub = find_submission(conn, submission_id)
    res = conn.execute(sa.select(results).where(results.c.submission_id == submission_id)).mappings().first()
    if sub is None or sub["course"] != course or res is None or res["error"]:
        return None
    grades = {r.grade_id: r for r in conn.execute(
        sa.select(manual_grades).where(manual_grades.c.submission_id == submission_id))}
    return sub, dict(res), grades


def grading_by_course(conn) -> list[dict]:
    """Per course: results recorded (graded, failed) and the grading time of each (the task's
    seconds, kept in the result's detail), for the exchange's metrics."""
    out: dict[str, dict] = {}
    query = sa.select(submissions.c.course, results.c.score, results.c.detail).join(
        submissions, submissions.c.id == results.c.submission_id)
    for course, score, detail in conn.execute(query):
        row = out.setdefault(course, {"course": course, "graded": 0, "failed": 0, "seconds": []})
        row["graded" if score is not None else "failed"] += 1
        seconds = json.loads(detail or "{}").get("seconds")
        if isinstance(seconds, (int, float)):
            row["seconds"].append(float(seconds))
    return sorted(out.values(), key=lambda r: r["course"])
