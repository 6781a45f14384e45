"""Build an assignment's release with nbgrader, in the notebook environment.

    python -m assessments.courseware.release SOURCE_DIR RELEASE_DIR COURSE ASSIGNMENT
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


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
