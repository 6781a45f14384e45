"""An independent account of what the derived tables must hold, computed from `events` alone.

Written separately from assessments.progress.events (plain loops over all events, not folds
over batches), so a test comparing the two catches a fold that drops, doubles or mis-orders.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import sqlalchemy as sa

from assessments.progress import models

ITEM = {"assignment_fetched", "assignment_submitted", "assignment_autograded", "score_recorded", "feedback_released"}


def expected_tables(events: list) -> dict[str, dict[tuple, dict]]:
    by = defaultdict(list)
    for e in events:
        by[e.type].append(e)
    la: dict[tuple, dict] = {}
    for e in events:
        if e.type in ITEM:
            la.setdefault((e.course, e.user, e.assignment), []).append(e)
    items = {}
    for key, evs in la.items():
        grades = [e for e in evs if e.type in ("assignment_autograded", "score_recorded")]
        best = max(grades, key=lambda e: (e.occurred_at, e.id)) if grades else None
        times = lambda kind: [e.occurred_at for e in evs if e.type == kind]  # noqa: E731
        items[key] = {"fetched_at": min(times("assignment_fetched"), default=None),
                      "submitted_at": max(times("assignment_submitted"), default=None),
                      "submissions": len(times("assignment_submitted")),
                      "graded_at": best.occurred_at if best else None, "grade_event": best.id if best else None,
                      "score": best.payload["score"] if best else None,
                      "max_score": best.payload["max_score"] if best else None,
                      "feedback_at": max(times("feedback_released"), default=None),
                      "last_event_at": max(e.occurred_at for e in evs)}
    assignments = {}
    for key in {(e.course, e.assignment) for e in by["assignment_released"]} | {(c, a) for c, _, a in items}:
        releases = [e for e in by["assignment_released"] if (e.course, e.assignment) == key]
        latest = max(((e.occurred_at, e.payload["due_at"], e.payload["max_score"]) for e in releases), default=None)
        mine = [v for (c, _, a), v in items.items() if (c, a) == key]
        assignments[key] = {"released_at": min((e.occurred_at for e in releases), default=None),
                            "release_event_at": latest[0] if latest else None,
                            "due_at": latest[1] if latest else None, "max_score": latest[2] if latest else None,
                            **{n: sum(v[f"{n}_at"] is not None for v in mine)
                               for n in ("fetched", "submitted", "graded", "feedback")},
                            "score_sum": sum(v["score"] or 0.0 for v in mine)}
    courses = {}
    for key in {(e.course, e.user) for e in events if e.user and e.course}:
        mine = [e for e in events if (e.course, e.user) == key]
        rows = [v for (c, u, _), v in items.items() if (c, u) == key]
        courses[key] = {"fetched": sum(v["fetched_at"] is not None for v in rows),
                        "submitted": sum(v["submitted_at"] is not None for v in rows),
                        "graded": sum(v["graded_at"] is not None for v in rows),
                        "score": sum(v["score"] or 0.0 for v in rows),
                        "max_score": sum(v["max_score"] or 0.0 for v in rows),
                        "last_activity_at": max(e.occurred_at for e in mine),
                        "completed_at": min((e.occurred_at for e in mine if e.type == "course_completed"),
                                            default=None)}
    sessions, usage = {}, defaultdict(lambda: {"sessions": 0, "gpu_seconds": 0.0})
    for sid in {e.payload["session"] for e in by["session_started"] + by["session_stopped"]}:
        starts = [e for e in by["session_started"] if e.payload["session"] == sid]
        stops = [e for e in by["session_stopped"] if e.payload["session"] == sid]
        last = max(stops, key=lambda e: (e.occurred_at, e.payload["duration_s"])) if stops else None
        row = {"started_at": min((e.occurred_at for e in starts), default=None),
               "stopped_at": last.occurred_at if last else None,
               "duration_s": last.payload["duration_s"] if last else None,
               "gpu_seconds": last.payload["gpus"] * last.payload["duration_s"] if last else 0.0}
        if last:
            row.update(user=last.user, course=last.course or "", gpus=last.payload["gpus"])
            usage[(last.user, last.course or "")]["sessions"] += 1
            usage[(last.user, last.course or "")]["gpu_seconds"] += row["gpu_seconds"]
        sessions[(sid,)] = row
    tracks = {}
    for e in by["track_completed"]:
        key = (e.user, e.payload["track"])
        first = tracks.get(key, {"completed_at": e.occurred_at})["completed_at"]
        tracks[key] = {"completed_at": min(first, e.occurred_at)}
    return {"learner_assignments": items, "assignments": assignments, "learner_courses": courses,
            "sessions": sessions, "gpu_usage": dict(usage), "track_completions": tracks}


def assert_consistent(conn: sa.Connection) -> int:
    """The database is sound and every derived row is exactly what its events imply; the event count."""
    if conn.dialect.name == "sqlite":
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    from assessments.progress.events import Event
    rows = conn.execute(sa.select(models.events)).all()
    evs = [Event(r.id, r.type, r.occurred_at, r.user, r.course, r.assignment, r.payload) for r in rows]
    expected = expected_tables(evs)
    for table in models.DERIVED:
        pk = [c.name for c in table.primary_key]
        actual = {tuple(r[k] for k in pk): dict(r) for r in conn.execute(sa.select(table)).mappings()}
        want = expected[table.name]
        if table.name == "gpu_usage":       # rows for sessions not yet stopped hold zeros
            for key, row in actual.items():
                if key not in want:
                    assert (row["sessions"], row["gpu_seconds"]) == (0, 0.0), (table.name, key, row)
            actual = {k: v for k, v in actual.items() if k in want}
        assert set(actual) == set(want), f"{table.name}: keys differ: {set(actual) ^ set(want)}"
        for key, values in want.items():
            for column, value in values.items():
                got = actual[key][column]
                assert got == (pytest.approx(value) if isinstance(value, float) else value), \
                    f"{table.name} {key} {column}: {got!r} != {value!r}"
    return len(evs)


def snapshot(conn: sa.Connection) -> dict[str, list]:
    """Every derived table's rows, sorted: to compare two databases or two moments.

    Floats are rounded: sums added up in another order differ in their last bits.
    """
    def clean(row):
        return tuple(round(v, 6) if isinstance(v, float) else v for v in row)
    return {t.name: sorted((clean(r) for r in conn.execute(sa.select(t)).all()), key=repr) for t in models.DERIVED}
