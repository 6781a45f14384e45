"""What the service (and the pages built on it) read: one learner's records, one course's cohort.

Everything here reads the derived tables of models.py, aggregated in SQL where it spans a
cohort; who may see what is decided by the caller (service.py). Course membership comes from
the gradebook's enrolment (assessments.exchange.store.Store), passed in as plain values.
"""

from __future__ import annotations

import sqlalchemy as sa

from .models import assignments, gpu_usage, learner_assignments, learner_courses, track_completions

STATUSES = ("not_started", "fetched", "submitted", "graded", "feedback")
FILTERS = ("all", "behind", "not_started")


def status(row: dict | None) -> str:
    """Where a learner is in an assignment, from the times of what happened (latest step wins)."""
    if row is None:
        return "not_started"
    if row["submitted_at"] is not None and (row["graded_at"] is None or row["submitted_at"] > row["graded_at"]):
        return "submitted"                      # waiting for (re)grading
    if row["graded_at"] is not None:
        return "feedback" if row["feedback_at"] is not None and row["feedback_at"] >= row["graded_at"] else "graded"
    return "fetched" if row["fetched_at"] is not None else "not_started"


def _hours(seconds: float | None) -> float:
    return round((seconds or 0.0) / 3600, 4)


def course_assignments(conn: sa.Connection, courses: list[str]) -> dict[str, list[dict]]:
    """Each course's assignments, released ones first in release order."""
    if not courses:
        return {}
    a = assignments.c
    out: dict[str, list[dict]] = {c: [] for c in courses}
    for row in conn.execute(sa.select(assignments).where(a.course.in_(courses)).order_by(
            a.course, a.released_at.is_(None), a.released_at, a.assignment)).mappings():
        out[row["course"]].append(dict(row))
    return out


def _item(spec: dict, row: dict | None, now: float) -> dict:
    """One assignment as a learner sees it."""
    due, submitted = spec["due_at"], row["submitted_at"] if row else None
    return {"assignment": spec["assignment"], "status": status(row), "released_at": spec["released_at"],
            "due_at": due, "max_score": (row or {}).get("max_score") or spec["max_score"],
            "score": row["score"] if row else None, "submissions": row["submissions"] if row else 0,
            "fetched_at": row["fetched_at"] if row else None, "submitted_at": submitted,
            "graded_at": row["graded_at"] if row else None, "feedback_at": row["feedback_at"] if row else None,
            "late": bool(due is not None and submitted is not None and submitted > due),
            "behind": bool(due is not None and due < now and submitted is None)}


def learner_records(conn: sa.Connection, user: str, roles: dict[str, str], now: float,
                    only_courses: set[str] | None = None) -> dict:
    """A learner's courses, assignments, scores, deadlines and GPU hours.

    `roles` is their enrolment (course -> role); `only_courses` limits the answer (a trainer's view),
    None shows everything, GPU time outside any course and completed tracks included.
    """
    la, lc, gu = learner_assignments.c, learner_courses.c, gpu_usage.c
    items: dict[str, dict[str, dict]] = {}
    for row in conn.execute(sa.select(learner_assignments).where(la.user == user)).mappings():
        items.setdefault(row["course"], {})[row["assignment"]] = dict(row)
    summaries = {r["course"]: dict(r)
                 for r in conn.execute(sa.select(learner_courses).where(lc.user == user)).mappings()}
    gpu = {r.course: r for r in conn.execute(sa.select(gu.course, gu.sessions, gu.gpu_seconds).where(gu.user == user))}
    courses = set(roles) | set(items) | set(summaries) | (set(gpu) - {""})
    if only_courses is not None:
        courses &= only_courses
    specs = course_assignments(conn, sorted(courses))
    out = []
    for course in sorted(courses):
        mine = items.get(course, {})
        listed = specs.get(course, [])
        known = {s["assignment"] for s in listed}
        # An assignment the learner touched whose release is unknown still shows.
        listed += [{"assignment": a, "released_at": None, "due_at": None, "max_score": None}
                   for a in sorted(set(mine) - known)]
        summary = summaries.get(course, {})
        usage = gpu.get(course)
        out.append({"course": course, "role": roles.get(course), "completed_at": summary.get("completed_at"),
                    "last_activity_at": summary.get("last_activity_at"),
                    "submitted": summary.get("submitted", 0), "graded": summary.get("graded", 0),
                    "score": summary.get("score", 0.0), "max_score": summary.get("max_score", 0.0),
                    "sessions": usage.sessions if usage else 0, "gpu_hours": _hours(usage.gpu_seconds if usage else 0),
                    "assignments": [_item(spec, mine.get(spec["assignment"]), now) for spec in listed]})
    record = {"user": user, "courses": out}
    if only_courses is None:
        record["gpu_hours"] = _hours(sum(r.gpu_seconds for r in gpu.values()))
        record["gpu_hours_outside_courses"] = _hours(gpu[""].gpu_seconds if "" in gpu else 0)
        record["tracks"] = [{"track": r.track, "completed_at": r.completed_at} for r in conn.execute(
            sa.select(track_completions.c.track, track_completions.c.completed_at)
            .where(track_completions.c.user == user).order_by(track_completions.c.track))]
    else:
        record["gpu_hours"] = round(sum(c["gpu_hours"] for c in out), 4)
    return record


def cohort(conn: sa.Connection, course: str, learners: list[str], now: float, *, limit: int = 100,
           offset: int = 0, only: str = "all") -> dict:
    """A course's learners (enrolled, from the gradebook), one row each with their status per assignment.

    The whole cohort is summarised from per-learner and per-assignment counters kept at ingestion and
    one index-only grouped scan (who submitted which past-due assignment); per-assignment details
    are read for the requested page only. `only`: all, behind (a past deadline without a
    submission) or not_started (no activity at all). Learners are sorted by name.
    """
    la, lc, gu = learner_assignments.c, learner_courses.c, gpu_usage.c
    specs = course_assignments(conn, [course])[course]
    past_due = [s["assignment"] for s in specs if s["due_at"] is not None and s["due_at"] < now]
    started = dict(conn.execute(sa.select(lc.user, lc.completed_at).where(lc.course == course)).all())
    done_due = {}
    if past_due:
        # Driven by a VALUES list, so each deadline is one range of the partial index (SQLite would
        # otherwise scan the whole course for `assignment IN (...)` to get rows grouped by user).
        due = sa.values(sa.column("assignment", la.assignment.type), name="due").data([(a,) for a in past_due]).cte()
        done_due = dict(conn.execute(
            sa.select(la.user, sa.func.count()).select_from(due.join(learner_assignments, sa.and_(
                la.course == course, la.assignment == due.c.assignment, la.submitted_at.is_not(None))))
            .group_by(la.user)).all())
    everyone = sorted(set(learners))
    behind = {u for u in everyone if done_due.get(u, 0) < len(past_due)}
    counts = {"learners": len(everyone), "not_started": len(set(everyone) - started.keys()),
              "behind": len(behind), "completed": sum(started.get(u) is not None for u in everyone)}
    # the whole course's, against its budget (everyone charged to it, trainers too)
    course_gpu_hours = _hours(conn.execute(sa.select(sa.func.sum(gu.gpu_seconds)).where(gu.course == course)).scalar())
    if only == "behind":
        everyone = [u for u in everyone if u in behind]
    elif only == "not_started":
        everyone = [u for u in everyone if u not in started]
    total, names = len(everyone), everyone[offset:offset + limit]
    summaries, gpu = {}, {}
    if names:
        summaries = {r.user: r for r in conn.execute(
            sa.select(lc.user, lc.submitted, lc.graded, lc.score, lc.max_score, lc.last_activity_at, lc.completed_at)
            .where(lc.course == course, lc.user.in_(names))).all()}
        gpu = dict(conn.execute(
            sa.select(gu.user, gu.gpu_seconds).where(gu.course == course, gu.user.in_(names))).all())
    page = []
    for user in names:
        s = summaries.get(user)
        page.append({"user": user, "started": s is not None, "behind": len(past_due) - done_due.get(user, 0),
                     "submitted": s.submitted if s else 0, "graded": s.graded if s else 0,
                     "score": s.score if s else 0.0, "max_score": s.max_score if s else 0.0,
                     "gpu_hours": _hours(gpu.get(user)), "last_activity_at": s.last_activity_at if s else None,
                     "completed_at": s.completed_at if s else None})
    cells: dict[str, dict[str, dict]] = {}
    names = [r["user"] for r in page if r["started"]]
    for i in range(0, len(names), 500):
        for row in conn.execute(sa.select(learner_assignments).where(
                la.course == course, la.user.in_(names[i:i + 500]))).mappings():
            cells.setdefault(row["user"], {})[row["assignment"]] = dict(row)
    for r in page:
        mine = cells.get(r["user"], {})
        r["assignments"] = {s["assignment"]: _cell(s, mine.get(s["assignment"]), now) for s in specs}
    return {"course": course, "assignments": _assignment_stats(specs), "counts": counts, "gpu_hours": course_gpu_hours,
            "total": total, "offset": offset, "limit": limit, "filter": only, "learners": page}


def _cell(spec: dict, row: dict | None, now: float) -> dict:
    item = _item(spec, row, now)
    return {k: item[k] for k in ("status", "score", "submitted_at", "late", "behind")}


def _assignment_stats(specs: list[dict]) -> list[dict]:
    """Per assignment, over every learner with records in the course: how many reached each step."""
    return [{"assignment": s["assignment"], "released_at": s["released_at"], "due_at": s["due_at"],
             "max_score": s["max_score"], "fetched": s["fetched"], "submitted": s["submitted"],
             "graded": s["graded"], "feedback": s["feedback"],
             "mean_score": round(s["score_sum"] / s["graded"], 4) if s["graded"] else None} for s in specs]


# --- the cohort page's plots and the learner page's next step -----------------------------------

HISTOGRAM_BINS = 10


def _selection(conn: sa.Connection, course: str, learners: list[str]) -> tuple[str, list[str]]:
    """How to restrict a course's rows to `learners` cheaply: ("in", them), or ("not_in", the others
    with records, usually few: learners who left), whichever list is shorter."""
    lc = learner_courses.c
    known = set(conn.execute(sa.select(lc.user).where(lc.course == course)).scalars())
    wanted = set(learners)
    others = known - wanted
    return ("not_in", sorted(others)) if len(others) < len(wanted & known) else ("in", sorted(wanted & known))


def _restrict(column, how: str, users: list[str]):
    if how == "in":
        return column.in_(users)
    return column.not_in(users) if users else sa.true()


def cohort_plot_data(conn: sa.Connection, course: str, learners: list[str]) -> dict:
    """What the cohort page plots, for these learners (the enrolled, or a group of them), aggregated in SQL.

    funnel: (step, learners) from enrolled to passed; histogram: learners per 10% bin of their
    score so far (points of graded assignments); assignments: (assignment, mean score % of the
    graded, submitted % of the learners).
    """
    lc, la = learner_courses.c, learner_assignments.c
    how, users = _selection(conn, course, learners)
    where = (lc.course == course, _restrict(lc.user, how, users))
    specs = course_assignments(conn, [course])[course]
    released = sum(s["released_at"] is not None for s in specs)
    row = conn.execute(sa.select(
        sa.func.count(), sa.func.count(sa.case((lc.submitted > 0, 1))),
        sa.func.count(sa.case((sa.and_(lc.submitted >= released, released > 0), 1))),
        sa.func.count(lc.completed_at)).where(*where)).one()
    enrolled = len(set(learners))
    funnel = (("enrolled", enrolled), ("started", row[0]), ("submitted one or more", row[1]),
              (f"submitted all {released} released", row[2]), ("passed the course", row[3]))
    bin_ = sa.cast(sa.func.min(lc.score * HISTOGRAM_BINS / lc.max_score, HISTOGRAM_BINS - 1), sa.Integer)
    counts = [0] * HISTOGRAM_BINS
    for b, n in conn.execute(sa.select(bin_.label("bin"), sa.func.count()).where(
            *where, lc.graded > 0, lc.max_score > 0).group_by("bin")):
        counts[max(0, min(HISTOGRAM_BINS - 1, int(b)))] += n
    # Per assignment: the counters kept at ingestion, less (or, for a small group: only) the rows of `users`.
    per = {s["assignment"]: [s["submitted"], s["graded"], s["score_sum"]] for s in specs}
    if how == "in" or users:
        sign = 1 if how == "in" else -1
        if how == "in":
            per = {a: [0, 0, 0.0] for a in per}
        for i in range(0, len(users), 500):
            for r in conn.execute(sa.select(la.assignment, sa.func.count(la.submitted_at), sa.func.count(la.graded_at),
                                            sa.func.coalesce(sa.func.sum(la.score), 0.0))
                                  .where(la.course == course, la.user.in_(users[i:i + 500])).group_by(la.assignment)):
                if r[0] in per:
                    for k in range(3):
                        per[r[0]][k] += sign * r[k + 1]
    assignments = []
    for s in specs:
        submitted, graded, total = per[s["assignment"]]
        # Whole percents: what a bar can show, and one regrade among thousands does not redraw the plot.
        mean = round(100 * total / graded / s["max_score"]) if graded > 0 and s["max_score"] else None
        assignments.append((s["assignment"], mean, round(100 * submitted / enrolled) if enrolled else 0))
    return {"funnel": funnel, "histogram": tuple(counts), "assignments": tuple(assignments)}


def next_step(record: dict, now: float) -> dict | None:
    """The learner's next unsubmitted released assignment, earliest deadline first (overdue ones lead)."""
    todo = [{"course": c["course"], **a} for c in record["courses"] if c["role"] in (None, "learner")
            for a in c["assignments"] if a["released_at"] is not None and a["status"] in ("not_started", "fetched")]
    if not todo:
        return None
    first = min(todo, key=lambda a: (a["due_at"] is None, a["due_at"] or 0, a["course"], a["assignment"]))
    return {**first, "overdue": first["due_at"] is not None and first["due_at"] < now}
