"""Every assignment of both tracks, checked as `academy course validate` checks it (CI runs them all),
graded by the platform's own grader in its sandbox with a grading job's limits: the solution gets
full marks within its runtime budget, the released notebook runs
without crashing the grader and scores zero, hidden tests and solutions are absent from the release.
Answers that get the right numbers by the wrong method (tests/courses/wrong_methods) are graded in
the same run and score zero where they cut the corner. And the checker itself catches the
mistakes trainers make."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from assessments.courseware.validate import ROOT, check_assignment
from courses.catalogue import load_catalogue
from hub.config import load

from .wrong_methods import variants, wrong_methods, write_variant

CFG = load()
PYTHON = os.path.join(CFG["notebook_env"], "bin", "python")
CATALOGUE = load_catalogue(profiles={p["key"] for p in CFG["profiles"]})
ASSIGNMENTS = [a for c in CATALOGUE.values() for a in c.assignments]


def autograded_cells(assignment) -> set[str]:
    nb = nbformat.read(assignment.folder / assignment.notebook, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}


@pytest.fixture(scope="module")
def reports(request, tmp_path_factory):
    """The checks of the assignments this run selected (-k), two at a time: the notebooks use one
    torch thread, the machine has two cores. Each check also grades the assignment's wrong-method
    notebooks ("wrong-1", ...), written into a private temporary folder (they hold hidden tests)."""
    selected = list(dict.fromkeys(item.callspec.params["assignment"] for item in request.session.items
                                  if item.module is request.module and "assignment" in getattr(
                                      getattr(item, "callspec", None), "params", {})))
    folder = tmp_path_factory.mktemp("wrong-methods")
    os.chmod(folder, 0o700)

    def run(a):
        also = {}
        for i, group in enumerate(variants(wrong_methods(a.course_id, a.id)), 1):
            path = folder / f"{a.course_id}-{a.id}-wrong-{i}.ipynb"
            write_variant(a.folder / a.notebook, group, path)
            also[f"wrong-{i}"] = path
        return check_assignment(a, PYTHON, also=also)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(selected, pool.map(run, selected)))


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[f"{a.course_id}/{a.id}" for a in ASSIGNMENTS])
def test_assignment_validates(assignment, reports):
    report = reports[assignment]
    assert report.problems == []
    solution, blank = report.scores["solution"], report.scores["blank"]
    assert solution["auto_max"] > 0 and solution["auto_score"] == solution["auto_max"]
    assert blank["auto_score"] == 0
    assert report.solution_s <= assignment.runtime_budget_s


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[f"{a.course_id}/{a.id}" for a in ASSIGNMENTS])
def test_every_autograded_cell_has_a_wrong_method_answer(assignment):
    caught = {cell for m in wrong_methods(assignment.course_id, assignment.id) for cell in m.zero_on}
    missing = sorted(autograded_cells(assignment) - caught)
    assert missing == [], f"no wrong-method answer in tests/courses/wrong_methods for: {', '.join(missing)}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[f"{a.course_id}/{a.id}" for a in ASSIGNMENTS])
def test_wrong_method_answers_score_zero_where_they_cut_the_corner(assignment, reports):
    """Each wrong-method notebook: zero on the cells its answers name, full marks on all others
    (so the zero comes from the test that checks the method, not from a notebook broken elsewhere)."""
    groups = variants(wrong_methods(assignment.course_id, assignment.id))
    assert groups, "no wrong-method answers for this assignment"
    scores = reports[assignment].scores
    for i, group in enumerate(groups, 1):
        cells = scores[f"wrong-{i}"]["cells"]
        zero = {cell for m in group for cell in m.zero_on}
        expected = {name: (0 if name in zero else full) for name, (_, full) in cells.items()}
        got = {name: score for name, (score, _) in cells.items()}
        assert got == expected, f"wrong-{i}: " + "; ".join(f"{m.cell}: {m.why}" for m in group)


def graded(source, grade_id, points=None, solution=False, grade=False, locked=False, cell=new_code_cell):
    meta = {"grade": grade, "solution": solution, "locked": locked, "task": False, "grade_id": grade_id,
            "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return cell(source, metadata={"nbgrader": meta})


def good_cells():
    return [
        new_markdown_cell("# Squares"),
        graded("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION", "square", solution=True),
        graded("assert square(3) == 9\n### BEGIN HIDDEN TESTS\nassert square(-2) == 4\n### END HIDDEN TESTS",
               "test_square", points=2, grade=True, locked=True),
    ]


def run_checker(tmp_path: Path, cells, points=2) -> list[str]:
    folder = tmp_path / "squares"
    folder.mkdir()
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, folder / "squares.ipynb")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}"}
    out = subprocess.run([PYTHON, "-m", "assessments.courseware.check", str(folder), "squares.ipynb", "demo",
                          "squares", str(points), "60"], capture_output=True, text=True, env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])["problems"]


def test_checker_accepts_a_sound_notebook(tmp_path):
    assert run_checker(tmp_path, good_cells()) == []


def test_checker_names_what_is_wrong(tmp_path):
    cells = good_cells()
    # A test that passes without the learner's work, no hidden test, and saved outputs.
    cells.append(graded("assert True", "test_free", points=1, grade=True, locked=True))
    cells[1].outputs = [nbformat.v4.new_output("stream", text="leftover\n")]
    cells[1].execution_count = 3
    problems = run_checker(tmp_path, cells, points=5)
    text = "\n".join(problems)
    assert "demo/squares/squares.ipynb: cell 3 (test_free) is an autograded test cell without hidden tests" in text
    assert "cell 1 (square) has saved outputs" in text
    assert "notebook points total 3, but the catalogue says 5" in text
    assert "the blank release scores points in: test_free" in text


def test_checker_finds_a_secret_and_a_duplicate_id(tmp_path):
    cells = good_cells()
    cells.insert(1, new_code_cell('api_token = "0123456789abcdef0123"'))
    cells.append(graded("x = 1", "square", solution=True))
    problems = "\n".join(run_checker(tmp_path, cells))
    assert "cell 1 contains what looks like a hard-coded credential" in problems
    assert "repeats grade_id 'square'" in problems
