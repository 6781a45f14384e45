"""Build an assignment's release: the learners' version, made by nbgrader in the notebook environment.

``build_release`` (hub side) runs this module in the notebook environment, where nbgrader lives:

    python -m assessments.courseware.release SOURCE_DIR RELEASE_DIR COURSE ASSIGNMENT
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the checkout (or site-packages)


class ReleaseError(ValueError):
    """nbgrader could not build the release; the message carries its reason."""


def build_release(notebook_python: str, a, dest: Path) -> None:
    """The learners' version of assignment `a` (courses.catalogue.Assignment) into dest, which must not exist."""
    build = subprocess.run(
        [notebook_python, "-m", "assessments.courseware.release", str(a.folder), str(dest), a.course_id, a.id],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1",
             "PATH": f"{Path(notebook_python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    if build.returncode != 0:
        raise ReleaseError(f"building the release of {a.course_id}/{a.id} failed: "
                           f"{(build.stderr or build.stdout).strip()[-1200:]}")


def build(source: Path, release: Path, course: str, assignment: str) -> None:
    with tempfile.TemporaryDirectory(prefix="academy-release-") as tmp:
        root = Path(tmp)
        (root / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = {course!r}\nc.CourseDirectory.root = {str(root)!r}\n")
        shutil.copytree(source, root / "source" / assignment)
        exe = Path(sys.executable).with_name("nbgrader")
        gen = subprocess.run([str(exe), "generate_assignment", assignment, "--force"], cwd=root,
                             capture_output=True, text=True)
        if gen.returncode != 0:
            sys.exit(f"nbgrader generate_assignment failed:\n{gen.stderr.strip()[-2000:]}")
        shutil.copytree(root / "release" / assignment, release)


if __name__ == "__main__":
    src, dst, course, assignment = sys.argv[1:5]
    build(Path(src), Path(dst), course, assignment)
