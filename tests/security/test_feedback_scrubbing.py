"""No line of the trainer's hidden tests or solutions reaches a learner through feedback (issue #13).

A hidden test cell loses its outputs in feedback, but the kernel keeps what ran: a learner's
later cell can print ``In`` (every cell's source, markers and comments included), show it as
HTML, or raise a traceback through a frame it caught in the hidden tests, whose context lines
IPython prints with colours and a gutter. Each is tried here: once for real, graded by Slurm
and released through the exchange; once on a graded notebook built in code, for the forms an
output can take.
"""

from __future__ import annotations

import base64
import html
import re
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from assessments.grading.feedback import REDACTED_LINE, feedback_notebook

from ..assessment_support import ASSIGNMENT, COURSE, NOTEBOOK, SOURCE, academy, b64, enrol_and_publish, exchange
from ..support import HubUser

BLOCK = re.compile(r"### BEGIN (HIDDEN TESTS|SOLUTION).*?### END \1", re.S)
GUTTER = re.compile(r"^(?:-*>\s*)?\d+\s")


def secret_lines(source, release) -> set[str]:
    """What the learner must never read: the lines of the source's hidden-test and solution regions,
    markers included, but for blank or punctuation-only lines, very short ones, and the release's own."""
    released = {line.strip() for c in release.cells for line in c.source.splitlines()}
    lines = {line.strip() for c in source.cells for block in BLOCK.finditer(c.source)
             for line in block.group(0).splitlines()}
    return {s for s in lines - released if len(s) >= 4 and any(ch.isalnum() for ch in s)}


def lines_read(text: str) -> set[str]:
    """The lines of a page or an output as a person reads them: no tags, no colours, no traceback gutter."""
    text = html.unescape(re.sub(r"<[^>]*>", "", re.sub(r"\x1b\[[0-9;]*m", "", text)))
    return {GUTTER.sub("", line.strip()).strip() for line in text.splitlines()} | \
        {line.strip() for line in text.splitlines()}


# --- for real: graded by Slurm, released through the exchange ------------------------------------

# A correct get_pair_counts (not the trainer's lines) that keeps each caller's frame, so a later
# cell can raise a traceback through the hidden tests' frame.
SPY_ANSWER = '''import sys
from collections import Counter as _Counter
_callers = []
def get_pair_counts(ids):
    _callers.append(sys._getframe(1))
    return dict(_Counter(zip(ids, ids[1:])))'''

LEAK_CELL = '''import html as _html, types as _types
from IPython.display import HTML as _HTML, display as _display
print("\\n".join(In))
_display(_HTML("<pre>" + _html.escape("\\n".join(In)) + "</pre>"))
print(__import__("base64").b64decode({solution!r}).decode())  # a reference answer, from wherever it came
_f = _callers[-1]
raise RuntimeError("leak").with_traceback(_types.TracebackType(None, _f, _f.f_lasti, _f.f_lineno))'''


@pytest.fixture
def course_hub(make_hub):
    """A hub with its own course store: llm-101 with tokenization published, learner1 and learner2
    enrolled, trainer1 its trainer (a Slurm tag of its own: its reaper leaves other hubs' jobs)."""
    hub = make_hub({"slurm": {"cluster_name": "sec13fb"}})
    enrol_and_publish(hub)
    return hub


def test_feedback_through_the_exchange_shows_no_line_of_hidden_tests_or_solutions(course_hub, demo_credentials):
    hub = course_hub
    learner = HubUser(hub, "learner1", demo_credentials["learner1"])
    trainer = HubUser(hub, "trainer1", demo_credentials["trainer1"])
    files = exchange(hub, learner, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files").json()["files"]
    release = nbformat.reads(base64.b64decode(files[NOTEBOOK]).decode(), as_version=4)
    source = nbformat.read(SOURCE, as_version=4)
    secrets = secret_lines(source, release)
    solution = "\n".join(line for c in source.cells for m in BLOCK.finditer(c.source) if m.group(1) == "SOLUTION"
                         for line in m.group(0).splitlines())
    assert "### BEGIN HIDDEN TESTS" in secrets and "### END SOLUTION" in secrets and len(secrets) > 50

    submission = nbformat.reads(nbformat.writes(release), as_version=4)
    [answer] = [c for c in submission.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "sol-get-pair-counts"]
    answer.source = SPY_ANSWER
    submission.cells.append(new_code_cell(LEAK_CELL.format(solution=b64(solution))))
    r = exchange(hub, learner, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                 json={"files": {NOTEBOOK: b64(nbformat.writes(submission))}})
    assert r.status_code == 201, r.text

    r = exchange(hub, trainer, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={})
    assert r.status_code == 202, r.text
    batch, deadline = r.json()["batch"], time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = exchange(hub, trainer, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde/{batch}").json()
        if progress["done"]:
            break
        time.sleep(1)
    assert progress["done"], progress
    [result] = [r for r in progress["results"] if r["student"] == "learner1"]
    assert result["error"] is None and result["score"] == 2.0, result  # get_pair_counts' tests, hidden ones too
    out = academy(hub, "feedback", COURSE, ASSIGNMENT)
    assert out.returncode == 0, out.stderr

    page = exchange(hub, learner, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback").json()["files"][
        NOTEBOOK.replace(".ipynb", ".html")]
    read = lines_read(page)
    # The leak cell ran: the release's own lines it printed are there, and so is its traceback.
    assert 'print("get_pair_counts: visible tests passed")' in read and "RuntimeError: leak" in read
    assert sorted(secrets & read) == []
    assert "HIDDEN TESTS" not in page and "BEGIN SOLUTION" not in page and "END SOLUTION" not in page
    assert REDACTED_LINE in read


# --- every form an output takes, on a graded notebook built in code ------------------------------

def nbgrader(cell, grade_id: str, **flags):
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": False, "locked": False, **flags}
    return cell


def assignment():
    """(source, release, graded notebook, result) of one answer and its test, as the grader leaves them."""
    source = new_notebook(cells=[
        nbgrader(new_code_cell("def area(r):\n    ### BEGIN SOLUTION\n    return 3.14159 * r * r  # pi r squared\n"
                               "    ### END SOLUTION"), "answer", solution=True),
        nbgrader(new_code_cell("assert area(1) > 3\n### BEGIN HIDDEN TESTS\n# the reference radius is secret\n"
                               "assert abs(area(2) - 12.566) < 1e-3\n### END HIDDEN TESTS"), "test", grade=True,
                 locked=True, points=1),
        nbgrader(new_markdown_cell("Explain.\n\n### BEGIN SOLUTION\nBecause the area grows with the square.\n"
                                   "### END SOLUTION"), "written", solution=True, grade=True, points=1),
    ])
    release = new_notebook(cells=[
        nbgrader(new_code_cell("def area(r):\n    # YOUR CODE HERE\n    raise NotImplementedError()"), "answer",
                 solution=True),
        nbgrader(new_code_cell("assert area(1) > 3"), "test", grade=True, locked=True, points=1),
        nbgrader(new_markdown_cell("Explain.\n\nYOUR ANSWER HERE"), "written", solution=True, grade=True, points=1),
    ])
    hidden_src = source.cells[1].source
    colour_tb = ["\x1b[31m---------------------------------------------------------------------------\x1b[39m",
                 "\x1b[36mCell\x1b[39m \x1b[32mIn[2]\x1b[39m\x1b[32m, line 4\x1b[39m\n"
                 "\x1b[32m      2\x1b[39m \x1b[38;5;66;03m### BEGIN HIDDEN TESTS\x1b[39;00m\n"
                 "\x1b[32m      3\x1b[39m \x1b[38;5;66;03m# the reference radius is secret\x1b[39;00m\n"
                 "\x1b[32m----> \x1b[39m\x1b[32m4\x1b[39m \x1b[38;5;28;01massert\x1b[39;00m abs(area(\x1b[32m2\x1b[39m)"
                 " - \x1b[32m12.566\x1b[39m) < \x1b[32m1e-3\x1b[39m\n",
                 "\x1b[31mAssertionError\x1b[39m: "]
    leak = new_code_cell("print(In[2]); print(SOLUTION); raise_saved()", execution_count=4, outputs=[
        new_output("stream", name="stdout", text=hidden_src + "\n    return 3.14159 * r * r  # pi r squared\nok\n"),
        new_output("display_data", data={"text/html": "<pre>" + html.escape(hidden_src) + "</pre>",
                                         "text/plain": "Because the area grows with the square."}),
        new_output("error", ename="AssertionError", evalue="", traceback=colour_tb),
    ])
    answer = nbgrader(new_code_cell("def area(r):\n    return 3.14159 * r * r  # pi r squared"), "answer",
                      solution=True)  # the learner's own answer, as it happens the trainer's line
    graded = new_notebook(cells=[answer, source.cells[1], leak, nbgrader(
        new_markdown_cell("Because the area grows with the square."), "written", solution=True, grade=True, points=1)])
    result = {"score": 1.0, "needs_manual": True, "notes": [],
              "cells": [{"grade_id": "test", "kind": "test", "status": "ok", "score": 1.0, "points": 1.0},
                        {"grade_id": "written", "kind": "manual", "status": "not run", "score": None, "points": 1.0}]}
    return source, release, graded, result


def output_text(output) -> str:
    return "\n".join([output.get("text", ""), *output.get("data", {}).values(), *output.get("traceback", [])])


def test_no_output_form_carries_a_line_of_hidden_tests_or_solutions():
    source, release, graded, result = assignment()
    secrets = secret_lines(source, release)
    assert {"### BEGIN HIDDEN TESTS", "# the reference radius is secret", "return 3.14159 * r * r  # pi r squared",
            "Because the area grows with the square."} <= secrets
    nb = feedback_notebook(graded, release, source, result, "Areas")
    leak = nb.cells[3]
    for output in leak.outputs:  # stream, HTML and plain text, a coloured traceback with its gutter
        assert REDACTED_LINE in output_text(output), output
        assert secrets & lines_read(output_text(output)) == set(), output
    # What the learner may read stays: the release's own line, a short one, the traceback's frame,
    # and the HTML's structure.
    stream, display, error = leak.outputs
    assert "assert area(1) > 3" in lines_read(stream.text) and "ok" in lines_read(stream.text)
    assert "Cell In[2], line 4" in lines_read(output_text(error))
    assert display.data["text/html"].startswith("<pre>") and display.data["text/html"].endswith("</pre>")
    # The learner's own cells keep their sources, even where they match the solution.
    assert nb.cells[1].source == graded.cells[0].source and nb.cells[4].source == graded.cells[3].source
    assert nb.cells[2].source == "assert area(1) > 3"  # the hidden test cell: its released part only
