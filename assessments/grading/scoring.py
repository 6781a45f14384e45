"""Scores from what the kernel replied: a test cell earns its points only if it ran and succeeded."""

from __future__ import annotations

from .execute import Execution
from .notebook_merge import MergeResult, grade_id

STATUS_NOTE = {
    "error": "failed",
    "timeout": "ran over its time limit",
    "kernel died": "was running when the kernel died (a crash, the memory limit or os._exit)",
    "not run": "did not run",
}


def score(notebook_name: str, merged: MergeResult, run: Execution) -> dict:
    index_of = {grade_id(c): i for i, c in enumerate(run.notebook.cells) if grade_id(c)}
    cells, notes = [], list(merged.notes)
    total = max_total = 0.0
    for g in merged.graded:
        index = index_of.get(g.grade_id)
        status = run.cells[index].status if index in run.cells else "not run"
        if g.kind == "test":
            earned = g.points if status == "ok" and run.tampered_at is None else 0.0
            total += earned
        else:
            earned = None  # a trainer grades it in the gradebook
        max_total += g.points
        cells.append({"grade_id": g.grade_id, "kind": g.kind, "points": g.points, "score": earned,
                      "status": status, "hidden": g.hidden,
                      "error": run.cells[index].error if index in run.cells else ""})
    if run.tampered_at is not None:
        notes.append(f"the kernel reported success for a check that must fail, before cell "
                     f"{_name(run, run.tampered_at)}: the learner's code changed how failures are reported, "
                     "so no test of this notebook counts")
    if run.kernel_died_at is not None:
        notes.append(f"the kernel died in cell {_name(run, run.kernel_died_at)}: the tests after it scored 0")
    for index in run.timed_out_at:
        notes.append(f"cell {_name(run, index)} ran over its time limit and was interrupted")
    if run.deadline_hit_at is not None:
        notes.append(f"grading ran out of time at cell {_name(run, run.deadline_hit_at)}: the rest did not run")
    if run.output_truncated:
        notes.append("output was truncated: a cell printed more than the grader keeps")
    return {"notebook": notebook_name, "score": total, "max_score": max_total,
            "needs_manual": any(c["kind"] == "manual" for c in cells), "cells": cells, "notes": notes,
            "seconds": round(run.seconds, 2)}


def _name(run: Execution, index: int) -> str:
    gid = grade_id(run.notebook.cells[index])
    return f"{index + 1}" + (f" ({gid})" if gid else "")
