"""``academy course validate``: check every assignment of the catalogue, with progress shown.

Each notebook is checked by assessments.courseware.check in the notebook environment (where
nbgrader and torch live), one at a time so that runtime budgets mean what they say on a
2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from courses.catalogue import Assignment, Course

ROOT = Path(__file__).resolve().parents[2]   # the checkout (or site-packages)


@dataclass
class AssignmentReport:
    assignment: Assignment
    problems: list[str] = field(default_factory=list)
    solution_s: float | None = None
    scores: dict = field(default_factory=dict)


def grading_args(a: Assignment, cfg: dict | None = None) -> list[str]:
    """The checker's grading settings: what a grading job of this assignment gives each submission."""
    from assessments.grading.batch import sandbox_settings
    from hub.config import load
    from spawners.profiles import parse_profiles

    cfg = cfg or load()
    profile = next(p for p in parse_profiles(cfg["profiles"]) if p.key == a.profile)
    settings = sandbox_settings(cfg, profile)
    return [f"--cell-timeout={settings['cell_timeout']}", f"--cpus={settings['cpus']}",
            f"--memory-bytes={settings['memory_bytes']}", f"--processes={settings['processes']}"]


def check_assignment(a: Assignment, notebook_python: str, timeout_s: float | None = None,
                     also: dict[str, Path] | None = None) -> AssignmentReport:
    """Run the checker for one assignment in the notebook environment, graded as a grading job
    grades (as root: the grader's sandbox); ``also`` grades further submissions (name: notebook)
    beside the solution."""
    # nbgrader runs alembic and jupyter from PATH: the notebook environment's must come first.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg",
           "PATH": f"{os.path.dirname(notebook_python)}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    argv = [notebook_python, "-m", "assessments.courseware.check", str(a.folder), a.notebook, a.course_id, a.id,
            str(a.points), str(a.runtime_budget_s), *grading_args(a)]
    for name, path in (also or {}).items():
        argv += ["--also", f"{name}={path}"]
    limit = timeout_s or (a.runtime_budget_s * (4 + 2 * len(also or {})) + 120)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return AssignmentReport(a, [f"{a.course_id}/{a.id}: the check did not finish within {limit:.0f} s"])
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        return AssignmentReport(a, [f"{a.course_id}/{a.id}: the checker failed: {tail}"])
    return AssignmentReport(a, data["problems"], data["solution_s"], data["scores"])


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def validate(courses: list[Course], notebook_python: str, out=sys.stdout) -> list[AssignmentReport]:
    assignments = [a for c in courses for a in c.assignments]
    reports = []
    t0 = time.monotonic()
    for i, a in enumerate(assignments):
        print(f"{progress_bar(i, len(assignments))} checking {a.course_id}/{a.id} ...", file=out, flush=True)
        report = check_assignment(a, notebook_python)
        reports.append(report)
        verdict = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
        took = f"{report.solution_s:.0f} s" if report.solution_s is not None else "-"
        print(f"{progress_bar(i + 1, len(assignments))} {a.course_id}/{a.id}: {verdict} (solution graded in {took})",
              file=out, flush=True)
        for problem in report.problems:
            print(f"    - {problem}", file=out, flush=True)
    print(f"checked {len(assignments)} assignment(s) of {len(courses)} course(s) in {time.monotonic() - t0:.0f} s",
          file=out, flush=True)
    return reports
