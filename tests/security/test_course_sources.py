"""No file a learner can read holds a course's solutions or hidden tests (issue #13).

The walk (tests/security/leak_walk.py) reads every regular file a user can open and looks for
the lines of every source notebook's solution and hidden-test regions. Its control: run as root
over the checkout, it finds every course notebook; run over a learner's release, it finds none.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from courses.catalogue import NOTEBOOKS_DIR, load_catalogue

from . import leak_walk

ROOT = Path(__file__).resolve().parents[2]


def course_fingerprints() -> dict[str, list[int]]:
    notebooks = {str(p.relative_to(NOTEBOOKS_DIR)): json.loads(p.read_text()) for p in NOTEBOOKS_DIR.rglob("*.ipynb")
                 if ".ipynb_checkpoints" not in p.parts}
    return leak_walk.fingerprints(notebooks)


def catalogue_notebooks() -> set[str]:
    return {str(a.path.relative_to(NOTEBOOKS_DIR)) for c in load_catalogue().values() for a in c.assignments}


def walk_as(user: str, roots: list[str], prints: dict[str, list[int]]) -> dict:
    """The walk as USER, its source on stdin: nothing of this (private) checkout is needed to run it."""
    proc = subprocess.run(["/usr/sbin/runuser", "-u", user, "--", "/usr/bin/python3", "-", *roots],
                          stdin=open(leak_walk.__file__), capture_output=True, text=True, timeout=900, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "LEAK_FINGERPRINTS": json.dumps(prints)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_the_walk_finds_every_course_notebook_in_the_sources_and_none_in_a_release(tmp_path, base_config):
    prints = course_fingerprints()
    assert set(prints) == catalogue_notebooks() and all(len(p) >= 10 for p in prints.values())
    found = leak_walk.scan([str(NOTEBOOKS_DIR)], prints)
    assert {f["notebook"] for f in found["findings"]} == set(prints)
    # What a learner fetches: nbgrader's release keeps the rest of the notebook, none of the regions.
    from assessments.courseware.release import build_release
    a = load_catalogue()["llm-101"].assignments[0]
    build_release(os.path.join(base_config["notebook_env"], "bin", "python"), a, tmp_path / "release")
    released = leak_walk.scan([str(tmp_path / "release")], prints)
    assert released["scanned"] >= 1 and released["findings"] == []


def test_the_checkout_holding_the_sources_is_private_to_its_owner():
    # `academy prepare` (run before the tests) makes it so, whoever cloned it.
    assert stat.S_IMODE(ROOT.stat().st_mode) & 0o077 == 0


def test_the_notebook_environment_carries_no_course_notebook(base_config):
    env = Path(base_config["notebook_env"])
    assert not [p for p in env.rglob("*.ipynb") if "courses" in p.parts]
    records = list(env.glob("lib/python3*/site-packages/ai_factory_academy-*.dist-info/RECORD"))
    assert records and not any("courses/notebooks" in r.read_text() for r in records)
    assert leak_walk.scan([str(env)], course_fingerprints())["findings"] == []


@pytest.mark.integration
def test_a_learner_reads_no_solution_or_hidden_test_anywhere_on_the_machine(demo_credentials):
    prints = course_fingerprints()
    walked = walk_as("learner1", ["/"], prints)
    assert walked["scanned"] > 10_000  # it did read the machine: the system, both environments, its home
    assert walked["findings"] == []
