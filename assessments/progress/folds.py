"""How newly recorded events change the derived tables of models.py (called by events.ingest).

Each fold reads the rows a batch touches, applies the events in Python with order-independent
rules (earliest, latest, count; ties broken by value or event id), and writes the rows back in
one upsert per table; sums across rows are recomputed in SQL for the keys touched. The caller
holds the write lock (db.write_transaction), so nothing changes between the read and the write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import assignments, gpu_usage, learner_assignments, learner_courses, sessions, track_completions

if TYPE_CHECKING:
    from .events import Event

LEARNER_ITEM_TYPES = {"assignment_fetched", "assignment_submitted", "assignment_autograded", "score_recorded",
                      "feedback_released"}


def apply(conn: sa.Connection, new: list[Event]) -> None:
    """Fold newly recorded events into the derived tables."""
    if not new:
        return
    _fold_assignments(conn, new)
    _fold_learner_assignments(conn, [e for e in new if e.type in LEARNER_ITEM_TYPES])
    _fold_learner_courses(conn, new)
    _fold_sessions(conn, [e for e in new if e.type.startswith("session_")])
    _fold_tracks(conn, [e for e in new if e.type == "track_completed"])


def insert(conn: sa.Connection, table: sa.Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = insert(conn, table)
    keys = [c.name for c in table.primary_key]
    conn.execute(stmt.on_conflict_do_update(
        index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}), rows)


def _existing(conn: sa.Connection, table: sa.Table, keys: Iterable[tuple], chunk: int = 300) -> dict[tuple, dict]:
    """Rows of `table` by primary key, for the keys given."""
    pk = list(table.primary_key)
    keys, found = list(keys), {}
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        where = pk[0].in_([k[0] for k in part]) if len(pk) == 1 else sa.tuple_(*pk).in_(part)
        for row in conn.execute(sa.select(table).where(where)).mappings():
            found[tuple(row[c.name] for c in pk)] = dict(row)
    return found


def _min(a, b):
    return b if a is None else a if b is None else min(a, b)


def _max(a, b):
    return b if a is None else a if b is None else max(a, b)


def _fold_assignments(conn: sa.Connection, new: list[Event]) -> None:
    keys = {(e.course, e.assignment) for e in new if e.type == "assignment_released" or e.type in LEARNER_ITEM_TYPES}
    if not keys:
        return
    rows = _existing(conn, assignments, keys)
    changed = {}
    for key in keys - rows.keys():     # placeholder until (or unless) its release arrives
        changed[key] = rows[key] = {"course": key[0], "assignment": key[1], "released_at": None,
                                    "release_event_at": None, "due_at": None, "max_score": None, "fetched": 0,
                                    "submitted": 0, "graded": 0, "feedback": 0, "score_sum": 0.0}
    for e in new:
        if e.type != "assignment_released":
            continue
        row = changed[(e.course, e.assignment)] = rows[(e.course, e.assignment)]
        row["released_at"] = _min(row["released_at"], e.occurred_at)
        # The latest release's deadline and points count (ties: the larger, so order never matters).
        candidate = (e.occurred_at, e.payload["due_at"], e.payload["max_score"])
        if row["release_event_at"] is None or candidate > (row["release_event_at"], row["due_at"], row["max_score"]):
            row["release_event_at"], row["due_at"], row["max_score"] = candidate
    _upsert(conn, assignments, list(changed.values()))


def _fold_learner_assignments(conn: sa.Connection, new: list[Event]) -> None:
    if not new:
        return
    rows = _existing(conn, learner_assignments, {(e.course, e.user, e.assignment) for e in new})
    before = {key: dict(row) for key, row in rows.items()}
    for e in new:
        key = (e.course, e.user, e.assignment)
        row = rows.setdefault(key, {"course": e.course, "user": e.user, "assignment": e.assignment,
                                    "fetched_at": None, "submitted_at": None, "submissions": 0, "graded_at": None,
                                    "grade_event": None, "score": None, "max_score": None, "feedback_at": None,
                                    "last_event_at": e.occurred_at})
        t = e.occurred_at
        row["last_event_at"] = max(row["last_event_at"], t)
        if e.type == "assignment_fetched":
            row["fetched_at"] = _min(row["fetched_at"], t)
        elif e.type == "assignment_submitted":
            row["submitted_at"] = _max(row["submitted_at"], t)
            row["submissions"] += 1
        elif e.type in ("assignment_autograded", "score_recorded"):
            # The latest grade counts, whether the grader's or a trainer's (ties: highest event id).
            if row["graded_at"] is None or (t, e.id) > (row["graded_at"], row["grade_event"]):
                row.update(graded_at=t, grade_event=e.id, score=e.payload["score"], max_score=e.payload["max_score"])
        elif e.type == "feedback_released":
            row["feedback_at"] = _max(row["feedback_at"], t)
    _upsert(conn, learner_assignments, list(rows.values()))
    # The assignment's counters move by what changed in its learners' rows.
    deltas: dict[tuple, dict] = {}
    for key, row in rows.items():
        old = before.get(key, {})
        d = deltas.setdefault((key[0], key[2]), dict.fromkeys(("fetched", "submitted", "graded", "feedback"), 0))
        d.setdefault("score_sum", 0.0)
        for counter, column in (("fetched", "fetched_at"), ("submitted", "submitted_at"), ("graded", "graded_at"),
                                ("feedback", "feedback_at")):
            d[counter] += (row[column] is not None) - (old.get(column) is not None)
        d["score_sum"] += (row["score"] or 0.0) - (old.get("score") or 0.0)
    a = assignments.c
    conn.execute(sa.update(assignments).where(a.course == sa.bindparam("k_course"),
                                              a.assignment == sa.bindparam("k_assignment")).values(
        {name: a[name] + sa.bindparam(f"d_{name}") for name in ("fetched", "submitted", "graded", "feedback",
                                                                 "score_sum")}),
        [{"k_course": c, "k_assignment": asg, **{f"d_{k}": v for k, v in d.items()}}
         for (c, asg), d in deltas.items()])


def _fold_learner_courses(conn: sa.Connection, new: list[Event]) -> None:
    mine = [e for e in new if e.user and e.course]
    if not mine:
        return
    keys = {(e.course, e.user) for e in mine}
    rows = _existing(conn, learner_courses, keys)
    for key in keys - rows.keys():
        rows[key] = {"course": key[0], "user": key[1], "last_activity_at": None, "completed_at": None}
    for e in mine:
        row = rows[(e.course, e.user)]
        row["last_activity_at"] = _max(row["last_activity_at"], e.occurred_at)
        if e.type == "course_completed":
            row["completed_at"] = _min(row["completed_at"], e.occurred_at)
    la = learner_assignments.c
    sums = {}
    keys = list(keys)
    for i in range(0, len(keys), 300):
        sums.update({(r.course, r.user): r for r in conn.execute(
            sa.select(la.course, la.user, sa.func.count(la.fetched_at).label("fetched"),
                      sa.func.count(la.submitted_at).label("submitted"), sa.func.count(la.graded_at).label("graded"),
                      sa.func.coalesce(sa.func.sum(la.score), 0.0).label("score"),
                      sa.func.coalesce(sa.func.sum(la.max_score), 0.0).label("max_score"))
            .where(sa.tuple_(la.course, la.user).in_(keys[i:i + 300])).group_by(la.course, la.user))})
    for key, row in rows.items():
        s = sums.get(key)
        row.update(fetched=s.fetched if s else 0, submitted=s.submitted if s else 0, graded=s.graded if s else 0,
                   score=float(s.score) if s else 0.0, max_score=float(s.max_score) if s else 0.0)
    _upsert(conn, learner_courses, list(rows.values()))


def _fold_sessions(conn: sa.Connection, new: list[Event]) -> None:
    if not new:
        return
    rows = _existing(conn, sessions, {(e.payload["session"],) for e in new})
    usage_keys = {(r["user"], r["course"]) for r in rows.values()}
    for e in new:
        p, key = e.payload, (e.payload["session"],)
        row = rows.get(key)
        described = {"user": e.user, "course": e.course or "", "profile": p["profile"], "gpus": p["gpus"]}
        if row is None:
            row = rows[key] = {"session": p["session"], **described, "started_at": None, "stopped_at": None,
                               "duration_s": None, "gpu_seconds": 0.0, "end_state": None, "accounted": False}
        if e.type == "session_accounted":
            # Slurm's own account of the job (sacct) wins over the spawner's, whatever came first.
            row.update(described, started_at=p["started_at"], stopped_at=p["ended_at"], duration_s=p["duration_s"],
                       gpu_seconds=p["gpus"] * p["duration_s"], end_state=p["state"], accounted=True)
        elif row["accounted"]:
            pass
        elif e.type == "session_started":
            row["started_at"] = _min(row["started_at"], e.occurred_at)
        elif row["stopped_at"] is None or (e.occurred_at, p["duration_s"]) > (row["stopped_at"], row["duration_s"]):
            # The (latest) stop is what counts: its own account of the session's GPUs and length.
            row.update(described, stopped_at=e.occurred_at, duration_s=p["duration_s"],
                       gpu_seconds=p["gpus"] * p["duration_s"])
        usage_keys.add((row["user"], row["course"]))
    _upsert(conn, sessions, list(rows.values()))
    s = sessions.c
    keys = list(usage_keys)
    totals = {}
    for i in range(0, len(keys), 300):
        totals.update({(r.user, r.course): r for r in conn.execute(
            sa.select(s.user, s.course, sa.func.count(s.stopped_at).label("n"),
                      sa.func.coalesce(sa.func.sum(s.gpu_seconds), 0.0).label("gpu_seconds"))
            .where(sa.tuple_(s.user, s.course).in_(keys[i:i + 300])).group_by(s.user, s.course))})
    _upsert(conn, gpu_usage, [{"user": u, "course": c, "sessions": totals[(u, c)].n if (u, c) in totals else 0,
                               "gpu_seconds": float(totals[(u, c)].gpu_seconds) if (u, c) in totals else 0.0}
                              for u, c in keys])


def _fold_tracks(conn: sa.Connection, new: list[Event]) -> None:
    if not new:
        return
    rows = _existing(conn, track_completions, {(e.user, e.payload["track"]) for e in new})
    for e in new:
        key = (e.user, e.payload["track"])
        row = rows.setdefault(key, {"user": key[0], "track": key[1], "completed_at": e.occurred_at})
        row["completed_at"] = min(row["completed_at"], e.occurred_at)
    _upsert(conn, track_completions, list(rows.values()))
