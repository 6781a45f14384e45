"""Answers that reach the right numbers by the wrong method, which the hidden tests must catch.

A learner who calls the library function the exercise asks them to write, times without
synchronising the device, "distributes" training that never communicates or fits by averaging
gets zero on that exercise. Each course has a module here (``llm_101.py`` for llm-101; or several,
``llm_101__<anything>.py``, merged) with ``WRONG_METHODS = {assignment_id: [WrongMethod(...), ...]}``. Every autograded cell of every
assignment is caught by at least one of them (test_course_material checks that coverage).

The wrong answers of one assignment are put into as few notebooks as can hold them (one per
solution cell replaced), each graded by nbgrader beside the solution. A notebook must score zero
on every cell its wrong answers name in ``zero_on`` and full marks on every other cell: a wrong
answer that only fails because another one broke the notebook proves nothing, and one that
breaks an unrelated exercise is a test that is unfair to its neighbours. Where a wrong answer
must change what later cells see (a forbidden call patched by a later test, say), ``separate=True``
grades it in a notebook of its own (each notebook is one more run of the assignment in CI).
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import nbformat


@dataclass(frozen=True)
class WrongMethod:
    cell: str                 # grade_id of the solution cell the learner fills
    zero_on: tuple[str, ...]  # grade_ids of the autograded cells that must give 0 points
    why: str                  # the shortcut, in a few words
    source: str               # the learner's whole answer for that cell
    separate: bool = False    # graded in a notebook of its own


def wrong_methods(course_id: str, assignment_id: str) -> list[WrongMethod]:
    stem = course_id.replace("-", "_")
    found: list[WrongMethod] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name == stem or info.name.startswith(stem + "__"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found += getattr(module, "WRONG_METHODS", {}).get(assignment_id, [])
    return found


def variants(methods: list[WrongMethod]) -> list[list[WrongMethod]]:
    """Group wrong answers into notebooks: at most one answer per solution cell in each."""
    groups: list[list[WrongMethod]] = []
    for m in methods:
        if m.separate:
            groups.append([m])
            continue
        for g in groups:
            if not g[0].separate and all(other.cell != m.cell for other in g):
                g.append(m)
                break
        else:
            groups.append([m])
    return groups


def write_variant(source: Path, group: list[WrongMethod], dest: Path) -> None:
    """The source notebook with each named solution cell replaced by the wrong answer."""
    nb = nbformat.read(source, as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    out = copy.deepcopy(nb)
    for m in group:
        cell = by_id.get(m.cell)
        if cell is None or not cell.metadata["nbgrader"].get("solution"):
            raise ValueError(f"{source.name}: no solution cell {m.cell!r} to answer ({m.why})")
        index = nb.cells.index(cell)
        out.cells[index].source = m.source
    nbformat.write(out, dest)
