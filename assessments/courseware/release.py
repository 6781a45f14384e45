"""Build an assignment's release: the learners' version, made by nbgrader in the notebook environment.

``build_release`` (hub side) runs this module in the notebook environment, where nbgrader lives:

    python -m assessments.courseware.release SOURCE_DIR RELEASE_DIR COURSE ASSIGNMENT [DATA_FILE ...]

The data files (the catalogue's ``data`` list, kept once in courses/data/) go beside the notebook,
so the learner finds them there after fetching, and the grader too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the checkout (or site-packages)


class ReleaseError(ValueError):
    """nbgrader could not build the release; the message carries its reason."""


def build_release(notebook_python: str, a, dest: Path) -> None:
    """The learners' version of assignment `a` (courses.catalogue.Assignment) into dest, which must not exist."""
    build = subprocess.run(
        [notebook_python, "-m", "assessments.courseware.release", str(a.folder), str(dest), a.course_id, a.id,
         *map(str, a.data_files)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1",
             "PATH": f"{Path(notebook_python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    if build.returncode != 0:
        raise ReleaseError(f"building the release of {a.course_id}/{a.id} failed: "
                           f"{(build.stderr or build.stdout).strip()[-1200:]}")


def stage_source(source: Path, data: Iterable[Path], dest: Path) -> None:
    """The assignment as nbgrader's source/<assignment>: its folder, with its data files beside the notebook."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in data:
        if (dest / path.name).exists():
            sys.exit(f"{source} has its own {path.name}; the course data file {path} would replace it")
        shutil.copy(path, dest / path.name)


def build(source: Path, release: Path, course: str, assignment: str, data: Iterable[Path] = ()) -> None:
    with tempfile.TemporaryDirectory(prefix="academy-release-") as tmp:
        root = Path(tmp)
        (root / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = {course!r}\nc.CourseDirectory.root = {str(root)!r}\n")
        stage_source(source, data, root / "source" / assignment)
        exe = Path(sys.executable).with_name("nbgrader")
        gen = subprocess.run([str(exe), "generate_assignment", assignment, "--force"], cwd=root,
                             capture_output=True, text=True)
        if gen.returncode != 0:
            sys.exit(f"nbgrader generate_assignment failed:\n{gen.stderr.strip()[-2000:]}")
        shutil.copytree(root / "release" / assignment, release)


if __name__ == "__main__":
    src, dst, course, assignment, *data_files = sys.argv[1:]
    build(Path(src), Path(dst), course, assignment, [Path(f) for f in data_files])
