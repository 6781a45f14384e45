"""Build the notebook that grading runs, from the trainer's source and a learner's submission.

A submission is untrusted data. Only the learner's answers (nbgrader *solution* cells, matched
by grade id and cell type) and the learner's own extra cells are taken from it; every test and
locked cell, every point value and the kernelspec come from the trainer's source, hidden tests
included. Whatever the learner changed of those is reported to the trainer, never obeyed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import nbformat

NO_ANSWER_CODE = "# (no answer was submitted for this cell)\nraise NotImplementedError()"
NO_ANSWER_TEXT = "(no answer was submitted for this cell)"


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id(cell) -> str | None:
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def _normal(source) -> str:
    text = source if isinstance(source, str) else "".join(source or [])
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


@dataclass
class GradedCell:
    grade_id: str
    points: float
    kind: str            # "test" (autograded), "manual" (a trainer scores it)
    hidden: bool         # has hidden tests: never shown in feedback


@dataclass
class MergeResult:
    notebook: nbformat.NotebookNode
    graded: list[GradedCell]
    notes: list[str] = field(default_factory=list)


def graded_cells(source: nbformat.NotebookNode) -> list[GradedCell]:
    cells = []
    for cell in source.cells:
        meta = nbgrader_meta(cell)
        if not meta.get("grade") and not meta.get("task"):
            continue
        kind = "test" if (cell.cell_type == "code" and not meta.get("solution") and not meta.get("task")) else "manual"
        cells.append(GradedCell(grade_id(cell), float(meta.get("points", 0)), kind,
                                "### BEGIN HIDDEN TESTS" in _normal(cell.source)))
    return cells


def merge(source: nbformat.NotebookNode, release: nbformat.NotebookNode,
          submitted: nbformat.NotebookNode) -> MergeResult:
    """The notebook to grade: the source's cells in the source's order, the learner's answers in them."""
    notes: list[str] = []
    released = {grade_id(c): c for c in release.cells if grade_id(c)}
    theirs, extras = _learner_cells(submitted, [grade_id(c) for c in source.cells if grade_id(c)], notes)
    cells = list(extras.get(None, []))
    for cell in source.cells:
        gid = grade_id(cell)
        if gid is None:
            continue  # ungraded, unlocked cells of the source reach the learner as release cells (kept above)
        cells.append(_graded_cell(cell, theirs.get(gid), released.get(gid), notes))
        cells.extend(extras.get(gid, []))

    kernel = submitted.metadata.get("kernelspec", {}).get("name")
    if kernel != source.metadata.get("kernelspec", {}).get("name"):
        notes.append(f"the notebook asked for kernel {kernel!r}: it ran on the assignment's "
                     f"{source.metadata.get('kernelspec', {}).get('name')!r}")
    nb = nbformat.v4.new_notebook(metadata=copy.deepcopy(source.metadata))
    nb.cells = cells
    return MergeResult(nb, graded_cells(source), notes)


def _learner_cells(submitted: nbformat.NotebookNode, source_ids: list[str], notes: list[str]):
    """The learner's cells by grade id (first copy wins), and the learner's own cells, each kept after
    the graded cell it followed in the submission ({grade id or None (at the top): [cells]})."""
    theirs: dict[str, nbformat.NotebookNode] = {}
    extras: dict[str | None, list] = {}
    previous: str | None = None
    for cell in submitted.cells:
        gid = grade_id(cell)
        if gid in source_ids and gid not in theirs:
            theirs[gid] = cell
            previous = gid
            continue
        if gid in source_ids:
            notes.append(f"cell {gid!r} appears more than once: the first copy is graded, later copies ran as the "
                         "learner's own cells")
        elif gid is not None:
            notes.append(f"cell {gid!r} is not in the assignment: it ran as the learner's own cell, ungraded")
        own = copy.deepcopy(cell)
        own.metadata.pop("nbgrader", None)
        if own.cell_type == "code":
            own.outputs, own.execution_count = [], None
        extras.setdefault(previous, []).append(own)
    return theirs, extras


def _graded_cell(cell, mine, released, notes: list[str]):
    """The source's cell as it is graded: with the learner's answer where one belongs, else the original."""
    gid, meta = grade_id(cell), nbgrader_meta(cell)
    ours = copy.deepcopy(cell)
    if ours.cell_type == "code":
        ours.outputs, ours.execution_count = [], None
    if mine is None:
        notes.append(f"cell {gid!r} was deleted: the original was restored"
                     + (", and its answer scores nothing" if meta.get("solution") else ""))
        if meta.get("solution"):
            ours.source = NO_ANSWER_CODE if ours.cell_type == "code" else NO_ANSWER_TEXT
        return ours
    if mine.cell_type != cell.cell_type:
        notes.append(f"cell {gid!r} was changed from {cell.cell_type} to {mine.cell_type}: the original type was "
                     "restored" + (", and its answer scores nothing" if meta.get("solution") else ""))
        if meta.get("solution"):
            ours.source = NO_ANSWER_CODE if ours.cell_type == "code" else NO_ANSWER_TEXT
    elif meta.get("solution"):
        ours.source = mine.source  # the learner's answer, under the source's metadata
    elif released is not None and _normal(mine.source) not in (_normal(released.source), _normal(cell.source)):
        notes.append(f"{'test' if meta.get('grade') else 'locked'} cell {gid!r} was edited: the original ran")
    their_points = nbgrader_meta(mine).get("points")
    if meta.get("grade") and their_points is not None and their_points != meta.get("points"):
        notes.append(f"cell {gid!r} claims {their_points} points: it is worth {meta.get('points')}")
    if nbgrader_meta(mine).get("grade") and not meta.get("grade"):
        notes.append(f"cell {gid!r} was marked as graded: it is not, and scores nothing")
    return ours
