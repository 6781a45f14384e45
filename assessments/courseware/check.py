"""Check one nbgrader source notebook the way a trainer's release will meet it.

Runs in the *notebook* environment (it needs nbgrader), in a scratch nbgrader course:
1. the source notebook: valid, python3 kernel, no outputs, no secrets, sound nbgrader metadata
   (unique grade ids, points on every graded cell, a hidden test in every autograded cell,
   total points equal to the catalogue's);
2. ``nbgrader generate_assignment``: the release holds no solution and no hidden test;
3. the solution (full marks, within the runtime budget) and the blank release (no crash, zero on
   every autograded cell) graded by the platform's own grader (assessments.grading), in its
   sandbox, with the settings a grading job gets: the way learners' submissions will be graded
   (no network, so no Slurm; a uid of its own; the memory and process limits). Needs root.
Prints one JSON object: {"problems": [...], "solution_s": float, "scores": {...}}.
Further submissions (``--also NAME=NOTEBOOK``: e.g. answers that take a shortcut the tests must
catch) are graded beside the solution in the same scratch course; their scores are reported, and
judging them is the caller's business.
Every problem names the notebook and, where it applies, the cell.
The notebook meets the data files the catalogue declares for COURSE_ID/ASSIGNMENT_ID beside it, as
in a release (a notebook outside the catalogue gets none).

    python -m assessments.courseware.check NOTEBOOK_DIR NOTEBOOK_NAME COURSE_ID ASSIGNMENT_ID POINTS BUDGET_S \
        [--also NAME=NOTEBOOK ...] [--cell-timeout S] [--cpus N] [--memory-bytes B] [--processes N]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .release import stage_source

SECRET_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), "a Hugging Face token"),
    (re.compile(r"\bghp_[A-Za-z0-9]{30,}\b"), "a GitHub token"),
    (re.compile(r"(?i)(api[_-]?token|password|secret)\s*=\s*['\"][^'\"]{12,}['\"]"), "a hard-coded credential"),
]
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SOLUTION_BEGIN = "### BEGIN SOLUTION"


def cell_name(index: int, cell) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" ({grade_id})" if grade_id else "")


def check_source(nb, where: str, points: float) -> list[str]:
    problems = []
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{where}: kernelspec must be python3, not {nb.metadata.get('kernelspec', {}).get('name')!r}")
    ids, total = set(), 0.0
    for i, cell in enumerate(nb.cells):
        name = cell_name(i, cell)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            problems.append(f"{where}: {name} has saved outputs; clear them before committing")
        for pattern, what in SECRET_PATTERNS:
            if pattern.search(cell.source):
                problems.append(f"{where}: {name} contains what looks like {what}")
        meta = cell.get("metadata", {}).get("nbgrader")
        if not meta:
            continue
        grade_id = meta.get("grade_id")
        if not grade_id:
            problems.append(f"{where}: {name} has nbgrader metadata but no grade_id")
        elif grade_id in ids:
            problems.append(f"{where}: {name} repeats grade_id {grade_id!r}")
        ids.add(grade_id)
        if meta.get("grade"):
            if not isinstance(meta.get("points"), (int, float)) or meta["points"] <= 0:
                problems.append(f"{where}: {name} is graded but has no positive points")
            else:
                total += meta["points"]
        autograded_test = meta.get("grade") and not meta.get("solution") and cell.cell_type == "code"
        if autograded_test and HIDDEN_BEGIN not in cell.source:
            problems.append(f"{where}: {name} is an autograded test cell without hidden tests ({HIDDEN_BEGIN})")
        if autograded_test and not meta.get("locked"):
            problems.append(f"{where}: {name} is an autograded test cell that is not locked")
        if meta.get("solution") and cell.cell_type == "code" and SOLUTION_BEGIN not in cell.source:
            problems.append(f"{where}: {name} is a solution cell without '{SOLUTION_BEGIN}'")
    if abs(total - points) > 1e-9:
        problems.append(f"{where}: notebook points total {total:g}, but the catalogue says {points:g}")
    return problems


def check_release(nb, where: str) -> list[str]:
    problems = []
    for i, cell in enumerate(nb.cells):
        for marker, what in ((HIDDEN_BEGIN, "hidden tests"), (SOLUTION_BEGIN, "a solution")):
            if marker in cell.source:
                problems.append(f"{where} (release): {cell_name(i, cell)} still contains {what}")
    return problems


def nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("nbgrader")
    return subprocess.run([str(exe), *args, "--force"], cwd=root, capture_output=True, text=True)


@dataclass(frozen=True)
class GradingSettings:
    """What a grading job gives each submission (assessments.grading.batch): the caller passes the
    platform's configuration; the defaults are its defaults."""
    cell_timeout: int = 120
    cpus: int = 1
    memory_bytes: int = 3 << 30
    processes: int = 64


def platform_grade(root: Path, assignment: str, notebook: str, submissions: dict[str, Path], budget_s: float,
                   settings: GradingSettings) -> dict[str, dict]:
    """Each submission (name: its folder) graded by the platform's grader in its sandbox, as a grading
    job grades it: {name: scores} or {name: {"error": ...}} where the grader itself failed."""
    from assessments.grading import sandbox
    from assessments.grading.task import grade_submission

    sandbox.check_tools()
    batch = root / "batch"
    (batch / "graded").mkdir(parents=True, exist_ok=True)
    per_sub_s = budget_s * 2 + 60
    manifest = {"source_dir": str(root / "source" / assignment), "release_dir": str(root / "release" / assignment),
                "notebooks": [notebook], "work_root": str(root / "work"), "batch_dir": str(batch),
                "cell_timeout": settings.cell_timeout, "total_timeout": budget_s * 2, "cpus": settings.cpus,
                "limits": {"memory_bytes": settings.memory_bytes, "processes": settings.processes,
                           "cpu_seconds": int(per_sub_s * 2)}}
    out = {}
    for slot, (name, folder) in enumerate(submissions.items()):
        t0 = time.monotonic()
        try:
            # sandbox uids of this process's own (two checks may run side by side)
            result = grade_submission(manifest, {"id": name, "student": "learner", "dir": str(folder)}, slot,
                                      os.getpid())
        except Exception as e:  # noqa: BLE001 - reported as the check's problem, with what the grader said
            out[name] = {"error": f"{type(e).__name__}: {str(e)[-800:]}"}
            continue
        tests = [c for nb in result["notebooks"] for c in nb["cells"] if c["kind"] == "test"]
        out[name] = {
            "auto_score": sum(c["score"] for c in tests),
            "auto_max": sum(c["points"] for c in tests),
            "nonzero_cells": [c["grade_id"] for c in tests if c["score"] > 0],
            "short_cells": [c["grade_id"] for c in tests if c["score"] < c["points"]],
            "cells": {c["grade_id"]: [c["score"], c["points"]] for c in tests},
            "errors": {c["grade_id"]: c["error"][-300:] for c in tests if c["status"] != "ok"},
            "notes": result["notes"] + [n for nb in result["notebooks"] for n in nb["notes"]],
            "seconds": round(time.monotonic() - t0, 1),
        }
    return out


def declared_data(course: str, assignment: str) -> tuple[Path, ...]:
    """The data files the catalogue puts beside this assignment's notebook (none outside the catalogue)."""
    from courses.catalogue import find_assignment

    a = find_assignment(course, assignment)
    return a.data_files if a else ()


def check(folder: Path, notebook: str, course: str, assignment: str, points: float, budget_s: float,
          data: tuple[Path, ...] = (), also: dict[str, Path] | None = None,
          settings: GradingSettings = GradingSettings()) -> dict:
    where = f"{course}/{assignment}/{notebook}"
    problems: list[str] = []
    try:
        nb = nbformat.read(folder / notebook, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # any parse or schema error is the trainer's to fix
        return {"problems": [f"{where}: not a valid notebook: {e}"], "solution_s": None, "scores": {}}
    problems += check_source(nb, where, points)
    result = {"problems": problems, "solution_s": None, "scores": {}}
    with tempfile.TemporaryDirectory(prefix="academy-check-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o700)     # the source (solutions, hidden tests) is copied in here
        (root / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = {course!r}\nc.CourseDirectory.root = {str(root)!r}\n")
        missing = [str(p) for p in data if not p.is_file()]
        if missing:
            problems.append(f"{where}: the catalogue's data file(s) {', '.join(missing)} do not exist")
            return result
        stage_source(folder, data, root / "source" / assignment)
        gen = nbgrader(root, "generate_assignment", assignment)
        if gen.returncode != 0:
            problems.append(f"{where}: nbgrader generate_assignment failed: {gen.stderr.strip()[-800:]}")
            return result
        released = nbformat.read(root / "release" / assignment / notebook, as_version=4)
        problems += check_release(released, where)
        submissions = {"solution": root / "source" / assignment, "blank": root / "release" / assignment}
        for student, path in (also or {}).items():
            # the assignment's folder (data files included) with this submission's notebook in it
            shutil.copytree(root / "source" / assignment, root / "submitted" / student)
            shutil.copy(path, root / "submitted" / student / notebook)
            submissions[student] = root / "submitted" / student
        scores = platform_grade(root, assignment, notebook, submissions, budget_s, settings)
        for student, got in list(scores.items()):
            if "error" in got:
                problems.append(f"{where}: grading {student} failed: {got['error']}")
                del scores[student]
        result["scores"] = scores
        if "solution" in scores:
            result["solution_s"] = scores["solution"]["seconds"]
        sol, empty = scores.get("solution"), scores.get("blank")
        if sol is None:
            problems.append(f"{where}: the solution produced no grades")
        elif sol["short_cells"]:
            problems.append(f"{where}: the solution does not get full marks in: " + "; ".join(
                f"{cell} ({sol['errors'].get(cell) or 'no error'})" for cell in sol["short_cells"]))
        if empty is None:
            problems.append(f"{where}: the blank release produced no grades")
        elif empty["nonzero_cells"]:
            problems.append(f"{where}: the blank release scores points in: {', '.join(empty['nonzero_cells'])} "
                            "(those tests pass without the learner's work)")
        if result["solution_s"] is not None and result["solution_s"] > budget_s:
            problems.append(f"{where}: the solution took {result['solution_s']:.0f} s to grade, over its "
                            f"runtime budget of {budget_s:.0f} s")
        if sol is not None and sol["notes"]:
            problems.append(f"{where}: grading the solution noted: {'; '.join(sol['notes'])}")
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m assessments.courseware.check")
    for name in ("folder", "notebook", "course", "assignment", "points", "budget"):
        parser.add_argument(name)
    parser.add_argument("--also", action="append", default=[], metavar="NAME=NOTEBOOK",
                        help="another submission to grade beside the solution")
    parser.add_argument("--data", action="append", default=None, metavar="FILE",
                        help="a data file to put beside the notebook (default: what the catalogue declares)")
    defaults = GradingSettings()
    parser.add_argument("--cell-timeout", type=int, default=defaults.cell_timeout)
    parser.add_argument("--cpus", type=int, default=defaults.cpus)
    parser.add_argument("--memory-bytes", type=int, default=defaults.memory_bytes)
    parser.add_argument("--processes", type=int, default=defaults.processes)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    also = dict(item.split("=", 1) for item in args.also)
    data = tuple(Path(p) for p in args.data) if args.data is not None else declared_data(args.course, args.assignment)
    print(json.dumps(check(Path(args.folder), args.notebook, args.course, args.assignment, float(args.points),
                           float(args.budget), data, {name: Path(path) for name, path in also.items()},
                           GradingSettings(args.cell_timeout, args.cpus, args.memory_bytes, args.processes))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
