"""Gradebook export for trainers: one CSV row per learner and assignment, and per-assignment statistics."""

from __future__ import annotations

import csv
import io
import statistics
import time

from . import tables as gb
from ..exchange.store import Store

COLUMNS = ["student", "assignment", "status", "submitted_at", "late_hours", "score", "manual_score", "penalty",
           "final_score",
           "max_score", "needs_manual_grading", "notes"]


def formula_safe(value) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts with = + - @ as a formula: learner-controlled text never does.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def gradebook_csv(store: Store, course: str) -> str:
    with store.engine.connect() as conn:
        rows = gb.gradebook_rows(conn, course)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([formula_safe(v) for v in (
            r["student"], r["assignment"], r["status"],
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["submitted_at"])), f"{r['late_s'] / 3600:.2f}",
            _fmt(r["score"]), _fmt(r["manual_score"]), _fmt(r["penalty"]), _fmt(r["final_score"]), _fmt(r["max_score"]),
            "yes" if r["needs_manual"] else "no", " | ".join(r["notes"]))])
    return out.getvalue()


def _fmt(x) -> str:
    return "" if x is None else f"{x:g}"


def statistics_by_assignment(store: Store, course: str) -> list[dict]:
    with store.engine.connect() as conn:
        rows = gb.gradebook_rows(conn, course)
        pubs = {p["assignment"]: p for p in store.publications(course)}
    enrolled = len(store.enrolment.find_members(course, "learner"))
    stats = []
    for assignment in pubs:
        scores = [r["final_score"] for r in rows if r["assignment"] == assignment and r["final_score"] is not None]
        submitted = sum(1 for r in rows if r["assignment"] == assignment)
        stats.append({
            "assignment": assignment, "enrolled": enrolled, "submitted": submitted, "graded": len(scores),
            "max_score": pubs[assignment]["points"],
            "mean": round(statistics.fmean(scores), 2) if scores else None,
            "median": statistics.median(scores) if scores else None,
            "min": min(scores) if scores else None, "max": max(scores) if scores else None,
            "stdev": round(statistics.stdev(scores), 2) if len(scores) > 1 else None,
        })
    return stats
