"""Feedback a learner may see: their graded notebook with every hidden test taken out.

nbgrader's feedback shows hidden test cells whole (jupyter/nbgrader#1363). Here a cell with
hidden tests shows the released (visible) part of its source and only its verdict, none of its
outputs (a failed hidden assert's traceback quotes the hidden line, and its message may name
the expected value). Every remaining output is then scrubbed of any hidden line, in case the
learner's own code printed one it caught while the tests ran.

    python -m assessments.grader.feedback JOBS.json
    JOBS.json: [{"graded": path, "release": path, "result": {...notebook result...}, "html": out path,
                 "title": str}, ...]
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

import nbformat

from .notebook_merge import grade_id

HIDDEN_BLOCK = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)
REDACTED = "[hidden test removed]"


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


def feedback_notebook(graded, release, result: dict, title: str):
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
    nb.cells = [nbformat.v4.new_markdown_cell(head), *out_cells]
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
        html = render(feedback_notebook(graded, release, job["result"], job["title"]))
        out = Path(job["html"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(html)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
