"""Every assignment of both tracks, checked as `academy course validate` checks it (CI runs them all):
the solution autogrades to full marks within its runtime budget, the released notebook runs
without crashing the grader and scores zero, hidden tests and solutions are absent from the release.
And the checker itself catches the mistakes trainers make."""

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

CFG = load()
PYTHON = os.path.join(CFG["notebook_env"], "bin", "python")
CATALOGUE = load_catalogue(profiles={p["key"] for p in CFG["profiles"]})
ASSIGNMENTS = [a for c in CATALOGUE.values() for a in c.assignments]


@pytest.fixture(scope="module")
def reports(request):
    """The checks of the assignments this run selected (-k), two at a time: the notebooks use one
    torch thread, the machine has two cores."""
    selected = list(dict.fromkeys(item.callspec.params["assignment"] for item in request.session.items
                                  if item.module is request.module and "assignment" in getattr(
                                      getattr(item, "callspec", None), "params", {})))
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(selected, pool.map(lambda a: check_assignment(a, PYTHON), selected)))


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[f"{a.course_id}/{a.id}" for a in ASSIGNMENTS])
def test_assignment_validates(assignment, reports):
    report = reports[assignment]
    assert report.problems == []
    solution, blank = report.scores["solution"], report.scores["blank"]
    assert solution["auto_max"] > 0 and solution["auto_score"] == solution["auto_max"]
    assert blank["auto_score"] == 0
    assert report.solution_s <= assignment.runtime_budget_s


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
