"""Feedback a learner may see: their graded notebook with every hidden test taken out.

nbgrader's feedback shows hidden test cells whole (jupyter/nbgrader#1363). Here a cell with
hidden tests shows the released (visible) part of its source and only its verdict, none of its
outputs (a failed hidden assert's traceback quotes the hidden line, and its message may name
the expected value). Every remaining output is then scrubbed of any hidden line, in case the
learner's own code printed one it caught while the tests ran, and of any line of the trainer's
hidden tests or solutions (scrub_source_lines).

    python -m assessments.grading.feedback JOBS.json
    JOBS.json: [{"graded": path, "release": path, "source": path, "result": {...notebook result...},
                 "html": out path, "title": str}, ...]
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import sys
from pathlib import Path

import nbformat

from .notebook_merge import grade_id, nbgrader_meta

HIDDEN_BLOCK = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)
REDACTED = "[hidden test removed]"
# What nbgrader takes out of the release: hidden tests, solutions, mark schemes (markers included).
SECRET_BLOCK = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS|### BEGIN SOLUTION.*?### END SOLUTION"
                          r"|=== BEGIN MARK SCHEME ===.*?=== END MARK SCHEME ===", re.S)
REDACTED_LINE = "[line of the trainer's notebook removed]"
MIN_SECRET_LEN = 4  # shorter lines ("i", "out", "])") say nothing and would blot out ordinary output
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TAG = re.compile(r"<[^>]*>")
TAG_NAME = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^>]*>")
GUTTER = re.compile(r"^(?:-*>\s*)?\d+\s")  # IPython's traceback context: "----> 4 line", "      3 line"


def hidden_lines(nb) -> list[str]:
    """Lines only the hidden tests hold (a line the learner also sees, such as ``else:``, is not secret)."""
    lines = set()
    visible = "\n".join(HIDDEN_BLOCK.sub("", c.source) for c in nb.cells)
    for cell in nb.cells:
        for block in HIDDEN_BLOCK.findall(cell.source if cell.cell_type == "code" else ""):
            for line in block.splitlines()[1:-1]:
                line = line.strip()
                if len(line) >= 6 and not line.startswith("#") and line not in visible:
                    lines.add(line)
    return sorted(lines, key=len, reverse=True)


def _scrub(value, lines: list[str]):
    if isinstance(value, str):
        for line in lines:
            if line in value:
                value = value.replace(line, REDACTED)
        return value
    if isinstance(value, list):
        return [_scrub(v, lines) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, lines) for k, v in value.items()}
    return value


def scrub_source_lines(cells: list, source, release) -> list:
    """Replace, in the cells' outputs and in the sources that came from the trainer, every line that
    reads as a line of the source's hidden tests or solutions.

    Why: a hidden test cell loses its outputs, but a learner's later cell may print what the
    kernel kept of it (``print(In[7])``, a caught traceback, a frame's source), markers and
    comments included, and a test may print a reference answer; the substring scrub above skips
    comments and markers. A line is compared as a person reads it: stripped, without terminal
    colours, traceback gutters ("----> 4 ") or HTML tags. Lines too short or with no letter or
    digit are left (they would blot out ordinary output and say nothing), and so are lines of
    the learner's release, which the learner already has. The learner's own cells (answers,
    extra cells) keep their sources: the learner wrote them, and blotting a line would tell
    them it matches the solution.
    """
    released = {line.strip() for c in release.cells for line in c.source.splitlines()}
    secrets = set()
    for cell in source.cells:
        whole = nbgrader_meta(cell).get("solution") and not SECRET_BLOCK.search(cell.source)
        for block in [cell.source] if whole else SECRET_BLOCK.findall(cell.source):
            secrets.update(line.strip() for line in block.splitlines())
    secrets = {s for s in secrets - released if len(s) >= MIN_SECRET_LEN and any(ch.isalnum() for ch in s)}

    def reads_as_secret(line: str) -> bool:
        plain = ANSI.sub("", line).strip()
        untagged = html.unescape(TAG.sub("", plain)).strip()
        return any(text in secrets or GUTTER.sub("", text).strip() in secrets for text in (plain, untagged))

    def redacted(line: str, markup: bool) -> str:
        # In HTML the line's tags stay (bare, without attributes), so the page keeps its structure.
        tags = TAG_NAME.findall(line) if markup else []
        return ("".join(f"<{n}>" for c, n in tags if not c) + REDACTED_LINE + "".join(f"</{n}>" for c, n in tags if c)
                + line[len(line.rstrip("\r\n")):])

    def scrub(value, markup=False):
        if isinstance(value, str):
            return "".join(redacted(line, markup) if reads_as_secret(line) else line
                           for line in value.splitlines(keepends=True))
        if isinstance(value, list):
            return [scrub(v, markup) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v, markup or k == "text/html") for k, v in value.items()}
        return value

    out = []
    for cell in cells:
        cell = copy.deepcopy(cell)
        if "outputs" in cell:
            cell.outputs = [nbformat.from_dict(scrub(o)) for o in cell.outputs]
        if grade_id(cell) and not nbgrader_meta(cell).get("solution"):  # a cell of the trainer's notebook
            cell.source = scrub(cell.source)
        out.append(cell)
    return out


def feedback_notebook(graded, release, source, result: dict, title: str):
    lines = hidden_lines(graded)
    released = {grade_id(c): c for c in release.cells if grade_id(c)}
    cells_by_id = {c["grade_id"]: c for c in result["cells"]}
    nb = copy.deepcopy(graded)
    out_cells = []
    for cell in nb.cells:
        gid = grade_id(cell)
        verdict = cells_by_id.get(gid)
        if cell.cell_type == "code" and HIDDEN_BLOCK.search(cell.source):
            cell.source = released[gid].source if gid in released else HIDDEN_BLOCK.sub("", cell.source)
            cell.outputs = []
        else:
            cell = nbformat.from_dict(_scrub(cell, lines))
        if verdict and verdict["kind"] == "test" and cell.cell_type == "code":
            word = "passed" if verdict["status"] == "ok" else {
                "error": "failed", "timeout": "ran out of time", "kernel died": "did not finish (the kernel died)",
                "not run": "did not run"}.get(verdict["status"], "failed")
            cell.outputs.append(nbformat.v4.new_output(
                "stream", name="stdout", text=f"Tests {word}: {verdict['score']:g} of {verdict['points']:g} points\n"))
        out_cells.append(cell)
    notes = "".join(f"\n- {n}" for n in result.get("notes", []))
    head = (f"# Feedback: {title}\n\n**Score: {result['score']:g} of "
            f"{sum(c['points'] for c in result['cells'] if c['kind'] == 'test'):g} autograded points**"
            + (" (plus points a trainer grades by hand)" if result.get("needs_manual") else "")
            + (f"\n\nNotes from the grader:{notes}" if notes else ""))
    nb.cells = [nbformat.v4.new_markdown_cell(head), *scrub_source_lines(out_cells, source, release)]
    return nb


def render(nb) -> str:
    from nbconvert import HTMLExporter  # notebook environment only

    exporter = HTMLExporter(template_name="lab")
    html, _ = exporter.from_notebook_node(nb)
    return html


def main(argv: list[str] | None = None) -> int:
    jobs = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    for job in jobs:
        graded = nbformat.read(job["graded"], as_version=4)
        release = nbformat.read(job["release"], as_version=4)
        source = nbformat.read(job["source"], as_version=4)
        page = render(feedback_notebook(graded, release, source, job["result"], job["title"]))
        out = Path(job["html"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(page)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
