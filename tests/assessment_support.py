"""Helpers for tests of the assessment flow: the CLI, the exchange API, a solved submission."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import nbformat
import requests

COURSE, ASSIGNMENT, NOTEBOOK = "llm-101", "tokenization", "tokenization.ipynb"
SOURCE = os.path.join(os.path.dirname(__file__), "..", "courses", "notebooks", COURSE, ASSIGNMENT, NOTEBOOK)


def enrol_and_publish(hub) -> None:
    """The demo cohort in llm-101 (learner1, learner2; trainer1 as trainer) and its first assignment out."""
    for args in (("enrol", COURSE, "learner1", "learner2"), ("enrol", COURSE, "trainer1", "--trainer"),
                 ("publish", COURSE, ASSIGNMENT)):
        out = academy(hub, *args)
        assert out.returncode == 0, out.stderr


def academy(hub, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "academy"), *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "ACADEMY_CONFIG": str(hub.config_file)})


def exchange(hub, user, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/services/academy-exchange/api/{path}",
                            headers={"Authorization": f"token {user.token}"}, timeout=60, **kw)


def solved(release_text: str) -> str:
    """The released notebook with the learner's answers filled in from the trainer's solution."""
    release = nbformat.reads(release_text, as_version=4)
    source = nbformat.read(SOURCE, as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = "\n".join(line for line in answers[gid].splitlines()
                                    if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return nbformat.writes(release)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
